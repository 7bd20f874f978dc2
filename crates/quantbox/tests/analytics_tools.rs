//! The three analytics tools on imported data, through the operations layer every
//! front end uses: figures checked against values worked out by hand, and the edge cases
//! of the contract (one observation, constant returns, all losses, no trades, no
//! benchmark overlap, bad files that import nothing, unknown strategies and symbols).

mod common;

use common::{Engine, require_root};
use quantbox_ops::imports::{ImportKind, ImportRequest};
use serde_json::{Value, json};

async fn import(e: &Engine, kind: ImportKind, strategy: Option<&str>, text: &str) -> Value {
    let out = e
        .app()
        .ops
        .import(
            kind,
            ImportRequest {
                file: Some("test.csv".into()),
                text: text.into(),
                strategy: strategy.map(str::to_owned),
                ..ImportRequest::default()
            },
        )
        .await
        .unwrap_or_else(|err| panic!("import {kind:?}: {}", err.message));
    serde_json::to_value(out).unwrap()
}

async fn report(e: &Engine, args: Value) -> Value {
    e.call("performance_report", args).await.expect("report")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_on_imported_returns_and_trades() {
    if !require_root("a_report_on_imported_returns_and_trades") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    // +10 %, -10 %, +10 %: total 1.1 * 0.9 * 1.1 - 1 = 0.089; the drawdown is the -10 %
    // from the first day's peak (1.1 → 0.99).
    let out = import(
        &e,
        ImportKind::Returns,
        Some("hand"),
        "date,return\n2024-01-02,0.1\n2024-01-03,-0.1\n2024-01-04,0.1\n",
    )
    .await;
    assert_eq!(out["rows"], 3);
    import(
        &e,
        ImportKind::Trades,
        Some("hand"),
        "trade_id,symbol,side,quantity,entry_time,exit_time,entry_price,exit_price,pnl\n\
         t1,AAPL,buy,10,2024-01-02 15:00,2024-01-03 15:00,10,12,20\n\
         t2,AAPL,buy,10,2024-01-03 15:00,2024-01-04 15:00,12,11,-10\n\
         t3,AAPL,sell,5,2024-01-03 15:00,2024-01-04 15:00,11,11,0\n",
    )
    .await;
    let r = report(&e, json!({"strategy": "hand", "period_days": 0})).await;
    assert_eq!(r["period"]["observations"], 3);
    assert_eq!(r["period"]["start"], "2024-01-02");
    assert_eq!(r["period"]["end"], "2024-01-04");
    assert!(
        close(f(&r["performance"]["total_return"]), 1.1 * 0.9 * 1.1 - 1.0),
        "{r}"
    );
    assert!(
        close(f(&r["performance"]["max_drawdown"]), 0.99 / 1.1 - 1.0),
        "{r}"
    );
    // Trades: 1 winner, 1 loser, 1 breakeven; win rate 1/3; profit factor 20 / 10.
    assert_eq!(r["trades"]["total"], 3);
    assert_eq!(r["trades"]["breakeven"], 1);
    assert!(close(f(&r["performance"]["win_rate"]), 1.0 / 3.0));
    assert!(close(f(&r["performance"]["profit_factor"]), 2.0));
    assert!(close(f(&r["trades"]["average_loss"]), -10.0));
    assert_eq!(r["compute"]["device"], "cpu");
    assert!(r.get("benchmark").is_none());
    // use_gpu: still the CPU, and it says why.
    let g = report(
        &e,
        json!({"strategy": "hand", "period_days": 0, "use_gpu": true}),
    )
    .await;
    assert_eq!(g["compute"]["device"], "cpu");
    assert_eq!(g["compute"]["gpu_requested"], true);
    assert!(
        g["compute"]["note"]
            .as_str()
            .unwrap()
            .contains("no GPU code path")
    );
    // period_days: the last 1 calendar day is the last return only.
    let last = report(&e, json!({"strategy": "hand", "period_days": 1})).await;
    assert_eq!(last["period"]["observations"], 1);
    assert!(close(f(&last["performance"]["total_return"]), 0.1));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cases_give_nulls_with_reasons_never_nan() {
    if !require_root("edge_cases_give_nulls_with_reasons_never_nan") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    // One observation: figures that need more are null, each with its reason.
    import(
        &e,
        ImportKind::Returns,
        Some("one"),
        "date,return\n2024-01-02,0.01\n",
    )
    .await;
    let r = report(&e, json!({"strategy": "one", "period_days": 0})).await;
    assert!(r["risk"]["volatility"].is_null());
    assert!(
        r["reasons"]["risk.volatility"]
            .as_str()
            .unwrap()
            .contains("at least")
    );
    assert!(r["performance"]["sharpe_ratio"].is_null());
    assert!(
        r["reasons"]["performance.win_rate"].is_string(),
        "no trades: {r}"
    );
    // Constant returns: Sharpe would be +inf: null with the reason.
    let constant: String = (1..=20)
        .map(|d| format!("2024-02-{d:02},0.001\n"))
        .collect();
    import(
        &e,
        ImportKind::Returns,
        Some("flat"),
        &format!("date,return\n{constant}"),
    )
    .await;
    let r = report(&e, json!({"strategy": "flat", "period_days": 0})).await;
    assert!(r["performance"]["sharpe_ratio"].is_null(), "{r}");
    assert!(
        r["reasons"]["performance.sharpe_ratio"]
            .as_str()
            .unwrap()
            .contains("constant")
    );
    // All losses: total return below 0, the drawdown is the whole path.
    let losses: String = (1..=10)
        .map(|d| format!("2024-03-{d:02},-0.01\n"))
        .collect();
    import(
        &e,
        ImportKind::Returns,
        Some("down"),
        &format!("date,return\n{losses}"),
    )
    .await;
    let r = report(&e, json!({"strategy": "down", "period_days": 0})).await;
    assert!(close(
        f(&r["performance"]["total_return"]),
        0.99f64.powi(10) - 1.0
    ));
    assert!(close(
        f(&r["performance"]["max_drawdown"]),
        0.99f64.powi(10) - 1.0
    ));
    assert!(r["performance"]["calmar_ratio"].is_number());
    // No benchmark overlap: the bundled S&P 500 ends in 2018.
    let r = report(
        &e,
        json!({"strategy": "down", "period_days": 0, "include_benchmark": true}),
    )
    .await;
    assert_eq!(r["benchmark"]["symbol"], "SPX");
    assert!(r["benchmark"]["beta"].is_null(), "{r}");
    assert!(r["reasons"]["benchmark.beta"].is_string());
    // Every null figure says why (a NaN serialised as null would not), and the text
    // holds no NaN.
    for s in ["one", "flat", "down"] {
        let text = e
            .app()
            .ops
            .call_text(
                "performance_report",
                json!({"strategy": s, "period_days": 0, "include_benchmark": true}),
            )
            .await
            .unwrap();
        assert!(!text.contains("NaN"), "{text}");
        let r: Value = serde_json::from_str(&text).unwrap();
        for section in ["performance", "risk", "trades", "benchmark"] {
            for (k, v) in r[section].as_object().unwrap() {
                if v.is_null() {
                    let path = format!("{section}.{k}");
                    assert!(
                        r["reasons"][&path].is_string(),
                        "{s}: {path} is null without a reason: {text}"
                    );
                }
            }
        }
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_import_nothing_and_bad_arguments_name_the_field() {
    if !require_root("bad_files_import_nothing_and_bad_arguments_name_the_field") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    import(
        &e,
        ImportKind::Returns,
        Some("s"),
        "date,return\n2024-01-02,0.01\n2024-01-03,0.02\n",
    )
    .await;
    let ops = &e.app().ops;
    for (text, needle) in [
        ("date,return\n2024-01-05,0.01\n2024-01-04,0.02\n", "line 3"),
        ("date,return\n2024-01-05,0.01\n2024-01-05,0.02\n", "line 3"),
        ("date,return\n2024-01-05,0.01\n2024-02-30,0.02\n", "line 3"),
        ("date,return\n2024-01-05,NaN\n", "line 2"),
        ("date,return\n2024-01-05,-1.5\n", "line 2"),
        ("day,value,return\n", "no data"),
    ] {
        let err = ops
            .import(
                ImportKind::Returns,
                ImportRequest {
                    text: text.into(),
                    strategy: Some("s".into()),
                    ..ImportRequest::default()
                },
            )
            .await
            .expect_err(text);
        assert_eq!(err.code.as_str(), "invalid_argument");
        assert!(
            err.message.contains(needle) || err.message.contains("data"),
            "{text}: {}",
            err.message
        );
        assert!(
            err.message.contains("nothing was imported"),
            "{}",
            err.message
        );
    }
    // The earlier import is intact.
    let r = report(&e, json!({"strategy": "s", "period_days": 0})).await;
    assert_eq!(r["period"]["observations"], 2);
    // Fills of orders that do not exist: refused, nothing written.
    let err = ops
        .import(
            ImportKind::Fills,
            ImportRequest {
                text: "order_id,time,quantity,price\nnope,2024-01-02 10:00,1,10\n".into(),
                strategy: Some("s".into()),
                ..ImportRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.message.contains("has no order `nope`"),
        "{}",
        err.message
    );

    for (tool, args, field) in [
        ("performance_report", json!({}), "strategy"),
        (
            "performance_report",
            json!({"strategy": "s", "period_days": -1}),
            "period_days",
        ),
        (
            "performance_report",
            json!({"strategy": "s", "period_days": "30"}),
            "period_days",
        ),
        (
            "performance_report",
            json!({"strategy": "s", "periods_per_year": 0}),
            "periods_per_year",
        ),
        (
            "performance_report",
            json!({"strategy": "s", "risk_free_rate": 2}),
            "risk_free_rate",
        ),
        (
            "performance_report",
            json!({"strategy": "bad name"}),
            "strategy",
        ),
        (
            "performance_report",
            json!({"strategy": "s", "benchmark": "NOPE"}),
            "benchmark",
        ),
        (
            "performance_report",
            json!({"strategy": "s", "use_gpu": "yes"}),
            "use_gpu",
        ),
        (
            "get_execution_analytics",
            json!({"time_period": "2d"}),
            "time_period",
        ),
        (
            "get_execution_analytics",
            json!({"strategy": ""}),
            "strategy",
        ),
        ("monitor_strategy_health", json!({}), "strategy"),
        (
            "monitor_strategy_health",
            json!({"strategy": 5}),
            "strategy",
        ),
    ] {
        let err = e
            .call(tool, args.clone())
            .await
            .expect_err(&args.to_string());
        assert_eq!(
            err.code.as_str(),
            "invalid_argument",
            "{tool} {args}: {}",
            err.message
        );
        assert!(
            err.message.starts_with(field),
            "{tool} {args}: {}",
            err.message
        );
    }
    for tool in ["performance_report", "monitor_strategy_health"] {
        let err = e
            .call(tool, json!({"strategy": "nobody"}))
            .await
            .unwrap_err();
        assert_eq!(err.code.as_str(), "not_found", "{tool}");
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_analytics_and_health_from_imported_orders() {
    if !require_root("execution_analytics_and_health_from_imported_orders") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    // Four orders: o1 filled in two fills (buy at arrival 100: fills 100.10 and 100.20 →
    // 10 and 20 bps of cost), o2 rejected, o3 partially filled (sell, arrival 50, fill
    // 49.95 → 10 bps of cost), o4 filled exactly at arrival (0 bps). Acks after 5, 7, 9
    // and 11 ms.
    let orders = "order_id,symbol,side,quantity,order_type,arrival_price,submit_time,ack_time,state,reject_reason\n\
        o1,AAPL,buy,100,market,100,2024-01-02 14:30:00.000,2024-01-02 14:30:00.005,filled,\n\
        o2,AAPL,buy,50,market,100,2024-01-02 14:31:00.000,2024-01-02 14:31:00.007,rejected,insufficient cash\n\
        o3,MSFT,sell,40,market,50,2024-01-02 14:32:00.000,2024-01-02 14:32:00.009,partially_filled,\n\
        o4,MSFT,buy,10,market,50,2024-01-02 14:33:00.000,2024-01-02 14:33:00.011,filled,\n";
    let fills = "order_id,time,quantity,price,fee\n\
        o1,2024-01-02 14:30:01,50,100.10,1\n\
        o1,2024-01-02 14:30:02,50,100.20,1\n\
        o3,2024-01-02 14:32:01,20,49.95,0.5\n\
        o4,2024-01-02 14:33:01,10,50,0.1\n";
    import(&e, ImportKind::Orders, Some("ex"), orders).await;
    import(&e, ImportKind::Fills, Some("ex"), fills).await;
    let x = e
        .call(
            "get_execution_analytics",
            json!({"time_period": "all", "strategy": "ex"}),
        )
        .await
        .unwrap();
    assert_eq!(x["orders"]["total"], 4);
    assert_eq!(x["orders"]["filled"], 2);
    assert_eq!(x["orders"]["rejected"], 1);
    assert_eq!(x["orders"]["partially_filled"], 1);
    assert_eq!(x["executions"], 4);
    assert_eq!(x["partial_fills"], 1);
    assert_eq!(x["failures"], 1);
    // By quantity: (100 + 20 + 10) / (100 + 50 + 40 + 10); by orders: 2 / 4.
    assert!(
        close(f(&x["fill_rate"]["by_quantity"]), 130.0 / 200.0),
        "{x}"
    );
    assert!(close(f(&x["fill_rate"]["by_orders"]), 0.5));
    let bps = [10.0, 20.0, 10.0, 0.0];
    let mean = bps.iter().sum::<f64>() / 4.0;
    assert!((f(&x["slippage"]["avg_bps"]) - mean).abs() < 1e-6, "{x}");
    assert!((f(&x["slippage"]["max_bps"]) - 20.0).abs() < 1e-6);
    assert_eq!(x["slippage"]["adverse_count"], 3);
    assert_eq!(x["slippage"]["zero_count"], 1);
    // Nearest rank over 5, 7, 9, 11: p50 = 7, p95 = p99 = 11.
    assert_eq!(x["latency_ms"]["p50"], 7);
    assert_eq!(x["latency_ms"]["p95"], 11);
    assert_eq!(x["latency_ms"]["max"], 11);
    assert_eq!(x["reject_reasons"]["insufficient cash"], 1);
    assert_eq!(x["simulated"], "false");
    // 24 h ending now holds none of 2024's orders: zero counts, null averages, a note.
    let empty = e
        .call("get_execution_analytics", json!({"strategy": "ex"}))
        .await
        .unwrap();
    assert_eq!(empty["time_period"], "24h");
    assert_eq!(empty["orders"]["total"], 0);
    assert!(empty["slippage"]["avg_bps"].is_null());
    assert!(
        empty["note"]
            .as_str()
            .unwrap()
            .contains("time_period `all`"),
        "{empty}"
    );
    // Health: fill rate by orders 50 % < 90 % and mean slippage 10 bps (not above 10):
    // execution fails on the fill rate only (-10); no returns, no feed: those are no_data.
    let h = e
        .call("monitor_strategy_health", json!({"strategy": "ex"}))
        .await
        .unwrap();
    assert_eq!(h["checks"]["execution_quality"]["status"], "fail", "{h}");
    assert_eq!(h["checks"]["performance_stability"]["status"], "no_data");
    assert_eq!(h["checks"]["data_feed"]["status"], "no_data");
    assert_eq!(h["health_score"], 90, "{h}");
    assert_eq!(h["status"], "healthy");
    assert!(
        h["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["check"] == "execution_quality" && a["severity"] == "warning")
    );
    e.shutdown().await;
}
