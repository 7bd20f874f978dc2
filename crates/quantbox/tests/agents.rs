//! Trading agents in sandboxes (`run_e2b_agent`): a built-in momentum agent on AAPL
//! 2010–2012 stores its orders, fills and equity, and the three analytics tools report
//! on the run; a custom Python agent (examples/agents/sma_agent.py) whose output is
//! interleaved with garbage lines still lands whole, the garbage counted; an agent that
//! outlives its timeout or its memory ends `timed_out` / `failed` with the reason; bad
//! arguments are refused before anything runs.

mod common;

use common::{Engine, require_root};
use serde_json::{Value, json};

const SMA_AGENT: &str = include_str!("../../../examples/agents/sma_agent.py");

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn momentum_on_aapl_is_stored_and_reported_on() {
    if !require_root("momentum_on_aapl_is_stored_and_reported_on") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let id = e.create(json!({"name": "agent", "memory_mb": 256})).await;
    let r = e
        .call(
            "run_e2b_agent",
            json!({
                "sandbox_id": id,
                "agent_type": "momentum",
                "symbols": ["AAPL"],
                "strategy_params": {"lookback": 20, "start": "2010-01-01", "end": "2012-12-31", "strategy_name": "mom-aapl"},
                "use_gpu": true,
            }),
        )
        .await
        .unwrap();
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["strategy_name"], "mom-aapl");
    let res = &r["results"];
    assert_eq!(res["bars_processed"], 754, "{r}");
    assert_eq!(res["orders"], 74);
    assert_eq!(res["fills"], 74);
    assert_eq!(res["malformed_lines"], 0);
    assert!(
        (f(&res["final_equity"]) - 166_904.906_842_280_97).abs() < 1e-6,
        "{r}"
    );
    assert!(res["trades"].as_u64().unwrap() > 0);
    assert_eq!(r["gpu"]["used"], false);
    assert!(r["gpu"]["reason"].as_str().unwrap().contains("CPU"));
    assert_eq!(r["simulated"], true);

    // The analytics tools see the run.
    let rep = e
        .call(
            "performance_report",
            json!({"strategy": "mom-aapl", "period_days": 0, "include_benchmark": true}),
        )
        .await
        .unwrap();
    assert_eq!(rep["period"]["start"], "2010-01-05", "{rep}");
    assert!(
        (f(&rep["performance"]["total_return"]) - f(&res["total_return"])).abs() < 1e-9,
        "{rep}"
    );
    assert_eq!(rep["trades"]["total"], res["trades"]);
    assert!(rep["benchmark"]["beta"].is_number(), "{rep}");
    let x = e
        .call(
            "get_execution_analytics",
            json!({"time_period": "all", "strategy": "mom-aapl"}),
        )
        .await
        .unwrap();
    assert_eq!(x["orders"]["total"], 74, "{x}");
    assert_eq!(x["executions"], 74);
    assert_eq!(x["simulated"], "true");
    assert!(
        f(&x["slippage"]["avg_bps"]) > 0.0,
        "the paper broker charges slippage: {x}"
    );
    assert!(x["latency_ms"]["p50"].is_number());
    let h = e
        .call("monitor_strategy_health", json!({"strategy": "mom-aapl"}))
        .await
        .unwrap();
    assert!(h["health_score"].is_number(), "{h}");
    // 754 daily returns: the rolling Sharpe and the drawdown are measured.
    assert_ne!(
        h["checks"]["performance_stability"]["status"], "no_data",
        "{h}"
    );
    assert_ne!(h["checks"]["drawdown"]["status"], "no_data", "{h}");
    // A second run under the same name replaces the first.
    let again = e
        .call(
            "run_e2b_agent",
            json!({"sandbox_id": id, "agent_type": "buy_and_hold", "symbols": ["AAPL"],
                   "strategy_params": {"start": "2012-01-01", "end": "2012-12-31", "strategy_name": "mom-aapl"}}),
        )
        .await
        .unwrap();
    assert_eq!(again["status"], "completed", "{again}");
    let x = e
        .call(
            "get_execution_analytics",
            json!({"time_period": "all", "strategy": "mom-aapl"}),
        )
        .await
        .unwrap();
    assert_eq!(x["orders"]["total"], again["results"]["orders"], "{x}");
    e.terminate(&id).await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_python_agent_with_garbage_in_its_output() {
    if !require_root("a_custom_python_agent_with_garbage_in_its_output") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let id = e.create(json!({"name": "custom", "memory_mb": 256})).await;
    let w = e
        .call(
            "execute_e2b_process",
            json!({"sandbox_id": id, "command": "cat > /home/user/sma_agent.py", "stdin": SMA_AGENT}),
        )
        .await
        .unwrap();
    assert_eq!(w["exit_code"], 0, "{w}");
    // Garbage before, between (every 100th line) and in place of events.
    let command = "echo 'starting up'; echo '{\"v\":1,\"type\":\"nonsense\"}'; \
        /run/quantbox/quantbox agent bars --symbols \"$QUANTBOX_AGENT_SYMBOLS\" --start \"$QUANTBOX_AGENT_START\" --end \"$QUANTBOX_AGENT_END\" \
        | python3 /home/user/sma_agent.py | sed '0~100 a {not json'";
    let r = e
        .call(
            "run_e2b_agent",
            json!({"sandbox_id": id, "agent_type": "custom", "symbols": ["AAPL"],
                   "strategy_params": {"command": command, "fast": 10, "slow": 30,
                                       "start": "2010-01-01", "end": "2012-12-31", "strategy_name": "sma-py"}}),
        )
        .await
        .unwrap();
    assert_eq!(r["status"], "completed", "{r}");
    let res = &r["results"];
    assert_eq!(res["orders"], 24, "{r}");
    assert_eq!(res["fills"], 24);
    assert_eq!(res["bars_processed"], 754);
    // The agent prints 2 lines a bar, 3 per order (order, ack, fill) and `done`: 1581
    // lines, so sed adds 15 garbage lines to the 2 at the start.
    assert_eq!(
        res["malformed_lines"],
        2 + (2 * 754 + 3 * 24 + 1) / 100,
        "{r}"
    );
    assert!(
        r["stdout_tail"].as_str().unwrap().contains("not an event"),
        "{r}"
    );
    let x = e
        .call(
            "get_execution_analytics",
            json!({"time_period": "all", "strategy": "sma-py"}),
        )
        .await
        .unwrap();
    assert_eq!(x["orders"]["filled"], 24, "{x}");
    let rep = e
        .call(
            "performance_report",
            json!({"strategy": "sma-py", "period_days": 0}),
        )
        .await
        .unwrap();
    assert!(
        (f(&rep["performance"]["total_return"]) - f(&res["total_return"])).abs() < 1e-9,
        "{rep}"
    );
    e.terminate(&id).await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_overrun_end_with_the_reason_and_bad_arguments_are_refused() {
    if !require_root("agents_that_overrun_end_with_the_reason_and_bad_arguments_are_refused") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let id = e.create(json!({"name": "overrun", "memory_mb": 128})).await;
    let run = |params: Value| json!({"sandbox_id": id, "agent_type": "custom", "symbols": ["AAPL"], "strategy_params": params});
    let r = e
        .call(
            "run_e2b_agent",
            run(json!({"command": "sleep 30", "timeout": 2})),
        )
        .await
        .unwrap();
    assert_eq!(r["status"], "timed_out", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("timeout of 2 s"));
    let r = e
        .call(
            "run_e2b_agent",
            run(json!({"command": "python3 -c \"x = b'a' * (512 * 2**20)\""})),
        )
        .await
        .unwrap();
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("memory limit"),
        "{r}"
    );
    let r = e
        .call("run_e2b_agent", run(json!({"command": "echo hello"})))
        .await
        .unwrap();
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("without a `done` event"),
        "{r}"
    );
    assert_eq!(r["results"]["malformed_lines"], 1);

    for (args, field) in [
        (
            json!({"sandbox_id": id, "agent_type": "pairs", "symbols": ["AAPL"]}),
            "symbols",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "momentum", "symbols": ["NOPE"]}),
            "symbols[0]",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "momentum", "symbols": []}),
            "symbols",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "momentum", "symbols": ["AAPL", "AAPL"]}),
            "symbols[1]",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "momentum", "symbols": ["AAPL"], "strategy_params": {"start": "2030-01-01"}}),
            "strategy_params.start",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "momentum", "symbols": ["AAPL"], "strategy_params": {"lookback": "20"}}),
            "strategy_params",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "momentum", "symbols": ["AAPL"], "strategy_params": "[1]"}),
            "strategy_params",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "custom", "symbols": ["AAPL"]}),
            "strategy_params.command",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "scalper", "symbols": ["AAPL"]}),
            "agent_type",
        ),
        (
            json!({"sandbox_id": id, "agent_type": "momentum", "symbols": ["AAPL"], "use_gpu": "yes"}),
            "use_gpu",
        ),
    ] {
        let err = e
            .call("run_e2b_agent", args.clone())
            .await
            .expect_err(&args.to_string());
        assert_eq!(
            err.code.as_str(),
            "invalid_argument",
            "{args}: {}",
            err.message
        );
        assert!(err.message.starts_with(field), "{args}: {}", err.message);
    }
    let err = e
        .call("run_e2b_agent", json!({"sandbox_id": "aaaaaaaaaaaaaaaaaaaa", "agent_type": "momentum", "symbols": ["AAPL"]}))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "not_found");
    e.terminate(&id).await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_paper_run_over_rest_shows_progress_a_live_feed_and_stops() {
    if !require_root("a_background_paper_run_over_rest_shows_progress_a_live_feed_and_stops") {
        return;
    }
    let srv = common::Served::start("agents", &[("QUANTBOX_WARM_POOL", "0")]);
    let (st, sb) = srv
        .rest(
            "POST",
            "/api/v1/sandboxes",
            Some(json!({"name": "paper", "memory_mb": 256})),
        )
        .await;
    assert_eq!(st, 201, "{sb}");
    let id = sb["sandbox_id"].as_str().unwrap().to_owned();
    // 754 dates at 50 ms each: about 38 s if left alone.
    let t = std::time::Instant::now();
    let (st, run) = srv
        .rest(
            "POST",
            "/api/v1/agents/runs",
            Some(
                json!({"sandbox_id": id, "agent_type": "momentum", "symbols": ["AAPL"],
                        "strategy_params": {"mode": "paper", "pace_ms": 50, "start": "2010-01-01",
                                            "end": "2012-12-31", "strategy_name": "paper-mom"}}),
            ),
        )
        .await;
    assert_eq!(st, 202, "{run}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "the start waited for the run"
    );
    assert_eq!(run["status"], "running");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    // Progress arrives while it runs.
    let mut progressed = Value::Null;
    for _ in 0..100 {
        let (_, v) = srv
            .rest("GET", &format!("/api/v1/agents/runs/{run_id}"), None)
            .await;
        if v["progress"]["bars_processed"].as_u64().unwrap_or(0) >= 30 {
            progressed = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(progressed["status"], "running", "{progressed}");
    // The data feed is live: heartbeats within 3 expected intervals.
    let (_, h) = srv
        .rest("GET", "/api/v1/strategies/paper-mom/health", None)
        .await;
    assert_eq!(h["checks"]["data_feed"]["status"], "pass", "{h}");
    // Stop it: killed, what it did so far is kept.
    let (st, stopped) = srv
        .rest("DELETE", &format!("/api/v1/agents/runs/{run_id}"), None)
        .await;
    assert_eq!(st, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(stopped["result"]["reason"], "stopped on request");
    let bars = stopped["result"]["results"]["bars_processed"]
        .as_u64()
        .unwrap();
    assert!((30..754).contains(&bars), "{stopped}");
    // Stopping again says the same; an unknown run is not_found.
    let (st, again) = srv
        .rest("DELETE", &format!("/api/v1/agents/runs/{run_id}"), None)
        .await;
    assert_eq!((st, &again["status"]), (200, &json!("stopped")));
    let (st, _) = srv.rest("GET", "/api/v1/agents/runs/run_nope", None).await;
    assert_eq!(st, 404);
    let (_, list) = srv.rest("GET", "/api/v1/agents/runs", None).await;
    assert_eq!(list["runs"][0]["run_id"], run_id.as_str());
    // The feed has gone quiet: after 3 intervals (750 ms) the check fails.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (_, h) = srv
        .rest("GET", "/api/v1/strategies/paper-mom/health", None)
        .await;
    assert_eq!(h["checks"]["data_feed"]["status"], "fail", "{h}");
    // Bad arguments are refused at once, before anything starts.
    let (st, bad) = srv
        .rest(
            "POST",
            "/api/v1/agents/runs",
            Some(json!({"sandbox_id": id, "agent_type": "pairs", "symbols": ["AAPL"]})),
        )
        .await;
    assert_eq!(st, 400, "{bad}");
    let (st, _) = srv
        .rest(
            "DELETE",
            &format!("/api/v1/sandboxes/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(st, 200);
}

/// The ingestion path alone: the events of a real backtest, with garbage lines mixed
/// in, land as the same records a sandboxed run stores.
#[test]
fn ingestion_stores_a_backtests_events() {
    use quantbox_trading::{BrokerConfig, Strategy, TradingStore, backtest, market};
    let bundled = market::bundled().unwrap();
    let aapl = bundled.iter().find(|b| b.symbol == "AAPL").unwrap();
    let from = quantbox_trading::Day::parse("2010-01-01").unwrap();
    let to = quantbox_trading::Day::parse("2012-12-31").unwrap();
    let bars: Vec<_> = aapl
        .bars
        .iter()
        .filter(|b| b.day >= from && b.day <= to)
        .copied()
        .collect();
    let symbols = vec!["AAPL".to_owned()];
    let strategy = Strategy::new("momentum", &json!({}), &symbols).unwrap();
    let mut out = Vec::new();
    let mut n = 0u64;
    let summary = backtest::run(
        &[("AAPL".into(), bars)],
        &strategy,
        &BrokerConfig::default(),
        100_000.0,
        &mut |e| {
            n += 1;
            out.extend_from_slice(e.to_line().as_bytes());
            out.push(b'\n');
            if n.is_multiple_of(500) {
                out.extend_from_slice(b"garbage\n");
            }
        },
    )
    .unwrap();
    let store = quantbox_store::SqliteStore::open_in_memory().unwrap();
    let (events, malformed) = quantbox_ops::agents::ingest_output(&store, "ing", &out).unwrap();
    assert_eq!(events, n);
    assert_eq!(malformed, n / 500);
    let info = store.strategy("ing").unwrap().unwrap();
    assert_eq!(info.orders, summary.orders);
    assert_eq!(info.fills, summary.fills);
    let (_, equity) = store.series("ing").unwrap().unwrap();
    assert_eq!(equity.last().unwrap().value, summary.final_equity);
    assert!(info.trades > 0);
}
