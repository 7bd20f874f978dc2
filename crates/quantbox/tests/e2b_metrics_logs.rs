//! E2B's control plane, what it tells about a sandbox's work, spoken to over HTTP as
//! E2B's SDKs do: one sandbox's metrics (one reading per five seconds, start/end filter),
//! the latest metrics of many, the logs (v1 and v2: levels from the streams, cursor,
//! direction, level, search, limit), the legacy keep-alive (refreshes) and the deprecated
//! resume. Every figure is checked against what the sandbox did or was given; every bad
//! parameter is a 400 in E2B's error shape that names it.

mod common;

use std::time::{Duration, Instant};

use common::{Engine, require_root};
use serde_json::{Value, json};

const KEY: &str = "e2b_53ae1fed82754c17ad8077fbc8bcdd90";
const UNKNOWN: &str = "aaaaaaaaaaaaaaaaaaaa";

/// The control plane over `e`'s engine on 127.0.0.1: its base URL and the server task.
async fn serve(e: &Engine) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let router = quantbox_e2b::server::control_router(
        e.app().ops.clone(),
        quantbox_e2b::server::ApiKeys::Only(vec![KEY.into()]),
        std::sync::Arc::new(quantbox_e2b::envd::AccessTokens::from_secret([7; 32])),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    (base, server)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// `method path` with the API key and an optional JSON body (`Some(Value::Null)`:
    /// no body at all): (status, JSON body or null).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .header("X-API-KEY", KEY);
        if let Some(b) = body.filter(|b| !b.is_null()) {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// A GET that must answer 400 in E2B's shape with a message naming `param`.
    async fn bad(&self, path: &str, param: &str) {
        let (st, body) = self.get(path).await;
        assert_eq!(st, 400, "GET {path}: {body}");
        assert_eq!(body["code"], 400, "GET {path}: {body}");
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(msg.contains(param), "GET {path}: {msg:?} names no {param}");
    }

    /// Seconds the sandbox has left, from its details.
    async fn left_s(&self, id: &str) -> i64 {
        let (st, d) = self.get(&format!("/sandboxes/{id}")).await;
        assert_eq!(st, 200, "{d}");
        let end = quantbox_sandbox::Timestamp::parse_rfc3339(d["endAt"].as_str().unwrap()).unwrap();
        end.ms_since(quantbox_sandbox::Timestamp::now()) / 1000
    }
}

/// CPU time the sandbox's cgroup has used, ns, as the kernel counts it (cgroup v2's
/// `cpu.stat` or v1's `cpuacct.usage`).
fn kernel_cpu_ns(e: &Engine, id: &str) -> u64 {
    let cg = e
        .app()
        .local
        .cgroup(&quantbox_sandbox::SandboxId::parse(id).unwrap())
        .expect("the sandbox has a cgroup");
    for d in cg.dirs() {
        if let Ok(stat) = std::fs::read_to_string(d.join("cpu.stat"))
            && let Some(us) = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.parse::<u64>().ok())
        {
            return us * 1000;
        }
        if let Ok(ns) = std::fs::read_to_string(d.join("cpuacct.usage")) {
            return ns.trim().parse().unwrap();
        }
    }
    panic!("no CPU counter in {:?}", cg.dirs());
}

fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_a_busy_sandbox() {
    if !require_root("metrics_of_a_busy_sandbox") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let (base, server) = serve(&e).await;
    let c = Client {
        http: reqwest::Client::new(),
        base,
    };
    let id = e
        .create(json!({"cpu_count": 1, "memory_mb": 256, "timeout": 600}))
        .await;
    let limit_bytes = 256 * 1024 * 1024;

    // One core's worth of spinning for 7 s; then the history until a point taken after
    // the spinning ended (the sampler's next five-second step), so that every window the
    // spinning touched is closed. Each point's CPU is the average since the one before.
    // Two spinners, so that the sandbox still gets most of its one core on a host busy
    // with other work.
    let cpu_ns = || kernel_cpu_ns(&e, &id);
    let (t0, ns0) = (Instant::now(), cpu_ns());
    let spin = "timeout 7 sh -c 'while :; do :; done'";
    let burn = e.sh(&id, &format!("{spin} & {spin}; wait $!")).await;
    assert_eq!(burn["exit_code"], 124, "{burn}");
    let kernel_pct = (cpu_ns() - ns0) as f64 / 1e7 / t0.elapsed().as_secs_f64();
    let burn_end_ms = quantbox_sandbox::Timestamp::now().unix_ms();
    let at_ms = |p: &Value| {
        quantbox_sandbox::Timestamp::parse_rfc3339(p["timestamp"].as_str().unwrap())
            .unwrap()
            .unix_ms()
    };
    let mut points;
    loop {
        let (st, body) = c.get(&format!("/sandboxes/{id}/metrics")).await;
        assert_eq!(st, 200, "{body}");
        points = arr(&body).clone();
        let closed = points.last().is_some_and(|p| at_ms(p) >= burn_end_ms);
        if closed || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu: Vec<f64> = points
        .iter()
        .map(|p| p["cpuUsedPct"].as_f64().unwrap())
        .collect();
    eprintln!(
        "{} points after {:.1} s; cpuUsedPct {cpu:?} (the kernel: {kernel_pct:.1} % of a \
         core over the spinning); first {}",
        points.len(),
        t0.elapsed().as_secs_f64(),
        points[0]
    );
    assert!(
        cpu.iter().any(|&p| p > 50.0),
        "no reading above 50 % while a core spun for 7 s: {cpu:?}"
    );
    assert!(points.len() >= 2, "{points:?}");
    let mut last_ts: i64 = 0;
    for p in &points {
        // Every field E2B requires, with quantbox's readings.
        assert_eq!(p["cpuCount"], 1, "{p}");
        assert_eq!(p["memTotal"], limit_bytes, "memTotal is the limit: {p}");
        let used = p["memUsed"].as_i64().unwrap();
        assert!(used > 0 && used <= limit_bytes, "{p}");
        assert_eq!(p["memCache"], json!(0), "unknown, so 0: {p}");
        // diskTotal: the filesystem the writable layer lives on, as `df /` inside says.
        let fs = nix::sys::statvfs::statvfs(&e.app().data_dir).unwrap();
        assert_eq!(
            p["diskTotal"].as_u64(),
            Some(fs.blocks() * fs.fragment_size()),
            "{p}"
        );
        assert!(p["diskUsed"].as_i64().unwrap() >= 0, "{p}");
        // A point averages the cgroup's CPU counter over the 5 s since the previous one;
        // the first has only the sampler's last second, where a sampling tick delayed by
        // a loaded host (CI) skews the window by a tenth or two.
        let pct = p["cpuUsedPct"].as_f64().unwrap();
        let most = if last_ts == 0 { 150.0 } else { 110.0 };
        assert!((0.0..=most).contains(&pct), "{p}");
        let ts = p["timestampUnix"].as_i64().unwrap();
        let rfc =
            quantbox_sandbox::Timestamp::parse_rfc3339(p["timestamp"].as_str().unwrap()).unwrap();
        assert_eq!(rfc.unix_ms() / 1000, ts, "{p}");
        // Oldest first, one per five-second step of wall-clock time.
        assert!(
            last_ts == 0 || ts.div_euclid(5) > last_ts.div_euclid(5),
            "{last_ts} then {ts}"
        );
        last_ts = ts;
    }

    // start/end (unix seconds) filter on timestampUnix, both ends inclusive.
    let ts: Vec<i64> = points
        .iter()
        .map(|p| p["timestampUnix"].as_i64().unwrap())
        .collect();
    let mid = ts[ts.len() / 2];
    let (_, from) = c.get(&format!("/sandboxes/{id}/metrics?start={mid}")).await;
    let from: Vec<i64> = arr(&from)
        .iter()
        .map(|p| p["timestampUnix"].as_i64().unwrap())
        .collect();
    assert_eq!(from[0], mid, "{from:?}");
    assert!(from.iter().all(|&t| t >= mid), "{from:?}");
    let (_, until) = c.get(&format!("/sandboxes/{id}/metrics?end={mid}")).await;
    let until: Vec<i64> = arr(&until)
        .iter()
        .map(|p| p["timestampUnix"].as_i64().unwrap())
        .collect();
    assert_eq!(until, ts[..=ts.len() / 2].to_vec());
    let (_, one) = c
        .get(&format!("/sandboxes/{id}/metrics?start={mid}&end={mid}"))
        .await;
    assert_eq!(arr(&one).len(), 1, "{one}");
    assert_eq!(one[0]["timestampUnix"], mid);
    let (st, none) = c
        .get(&format!("/sandboxes/{id}/metrics?start={}", mid + 86_400))
        .await;
    assert_eq!((st, none), (200, json!([])));

    // Bad parameters name themselves; start after end is refused.
    c.bad(&format!("/sandboxes/{id}/metrics?start=soon"), "start")
        .await;
    c.bad(&format!("/sandboxes/{id}/metrics?end=-1"), "end")
        .await;
    c.bad(&format!("/sandboxes/{id}/metrics?start=20&end=10"), "start")
        .await;
    c.bad(&format!("/sandboxes/{id}/metrics?start=20&end=10"), "end")
        .await;
    // Unknown sandboxes are E2B's 404.
    for unknown in [UNKNOWN, "not-an-id"] {
        let (st, body) = c.get(&format!("/sandboxes/{unknown}/metrics")).await;
        assert_eq!((st, &body["code"]), (404, &json!(404)), "{body}");
    }

    // Many at once: the latest reading of each; unknown ids are left out.
    let (st, many) = c
        .get(&format!("/sandboxes/metrics?sandbox_ids={id},{UNKNOWN}"))
        .await;
    assert_eq!(st, 200, "{many}");
    let map = many["sandboxes"].as_object().unwrap();
    assert_eq!(map.keys().collect::<Vec<_>>(), vec![&id], "{many}");
    let latest = &map[&id];
    assert_eq!(latest["memTotal"], limit_bytes, "{latest}");
    assert_eq!(latest["cpuCount"], 1, "{latest}");
    assert!(
        latest["timestampUnix"].as_i64().unwrap() >= last_ts,
        "{latest}"
    );
    c.bad("/sandboxes/metrics", "sandbox_ids").await;
    c.bad(
        &format!("/sandboxes/metrics?sandbox_ids={id},{id}"),
        "unique",
    )
    .await;
    c.bad(
        &format!("/sandboxes/metrics?sandbox_ids={id},,{UNKNOWN}"),
        "empty",
    )
    .await;
    let ids101: Vec<String> = (0..101).map(|i| format!("{i:020}")).collect();
    c.bad(
        &format!("/sandboxes/metrics?sandbox_ids={}", ids101.join(",")),
        "100",
    )
    .await;
    let ids100 = &ids101[..100].join(",");
    let (st, body) = c
        .get(&format!("/sandboxes/metrics?sandbox_ids={ids100}"))
        .await;
    assert_eq!((st, body), (200, json!({"sandboxes": {}})));

    // Stopped: the history went with it; the bulk answer leaves it out.
    e.terminate(&id).await;
    let (st, body) = c.get(&format!("/sandboxes/{id}/metrics")).await;
    assert_eq!((st, body), (200, json!([])));
    let (_, many) = c.get(&format!("/sandboxes/metrics?sandbox_ids={id}")).await;
    assert_eq!(many, json!({"sandboxes": {}}));

    server.abort();
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_refreshes_and_resume() {
    if !require_root("logs_refreshes_and_resume") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let (base, server) = serve(&e).await;
    let c = Client {
        http: reqwest::Client::new(),
        base,
    };
    let id = e.create(json!({"timeout": 600})).await;
    // Two pipes: only time between the writes orders their lines.
    let out = e
        .sh(&id, "echo hello-log; sleep 0.05; echo oops-err >&2")
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");

    // v1: every stored line, oldest first, as lines and as entries.
    let (st, v1) = c.get(&format!("/sandboxes/{id}/logs")).await;
    assert_eq!(st, 200, "{v1}");
    let lines = arr(&v1["logs"]);
    let entries = arr(&v1["logEntries"]);
    assert_eq!(lines.len(), entries.len(), "{v1}");
    let find = |msg: &str| {
        entries
            .iter()
            .find(|x| x["message"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} in {v1}"))
            .clone()
    };
    let hello = find("hello-log");
    assert_eq!(hello["level"], "info", "{hello}");
    assert_eq!(
        hello["fields"],
        json!({"stream": "stdout", "sandboxID": id}),
        "{hello}"
    );
    let oops = find("oops-err");
    assert_eq!(oops["level"], "error", "{oops}");
    assert_eq!(oops["fields"]["stream"], "stderr", "{oops}");
    assert!(lines.iter().any(|l| l["line"] == "hello-log"), "{v1}");
    let events: Vec<&Value> = entries
        .iter()
        .filter(|x| x["fields"]["stream"] == "event")
        .collect();
    assert!(!events.is_empty(), "the sandbox's lifecycle events: {v1}");
    assert!(events.iter().all(|x| x["level"] == "info"), "{events:?}");
    let ms = |x: &Value| {
        quantbox_sandbox::Timestamp::parse_rfc3339(x["timestamp"].as_str().unwrap())
            .unwrap()
            .unix_ms()
    };
    let all_ms: Vec<i64> = entries.iter().map(ms).collect();
    assert!(all_ms.windows(2).all(|w| w[0] <= w[1]), "{all_ms:?}");
    let hello_ms = ms(&hello);
    let (_, later) = c
        .get(&format!("/sandboxes/{id}/logs?start={hello_ms}&limit=1"))
        .await;
    assert_eq!(arr(&later["logEntries"]).len(), 1, "{later}");
    assert!(ms(&later["logEntries"][0]) >= hello_ms, "{later}");
    assert_eq!(arr(&later["logs"]).len(), 1, "{later}");
    let (_, future) = c
        .get(&format!(
            "/sandboxes/{id}/logs?start={}",
            hello_ms + 86_400_000
        ))
        .await;
    assert_eq!(future, json!({"logs": [], "logEntries": []}));
    c.bad(&format!("/sandboxes/{id}/logs?limit=0"), "limit")
        .await;
    c.bad(&format!("/sandboxes/{id}/logs?limit=1001"), "limit")
        .await;
    c.bad(&format!("/sandboxes/{id}/logs?start=yesterday"), "start")
        .await;

    // v2: the same entries, forward by default.
    let v2 = |q: String| {
        let c = &c;
        let id = &id;
        async move {
            let (st, body) = c.get(&format!("/v2/sandboxes/{id}/logs{q}")).await;
            assert_eq!(st, 200, "{q}: {body}");
            arr(&body["logs"]).clone()
        }
    };
    let msgs = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|x| x["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let forward = v2(String::new()).await;
    assert_eq!(&forward, entries, "v2 and v1 agree");
    let errors = v2("?level=error".into()).await;
    assert_eq!(msgs(&errors), vec!["oops-err"]);
    assert_eq!(v2("?level=warn".into()).await, errors, "warn and above");
    assert_eq!(v2("?level=debug".into()).await, forward);
    assert_eq!(msgs(&v2("?search=hello".into()).await), vec!["hello-log"]);
    assert_eq!(
        v2("?search=HELLO".into()).await,
        Vec::<Value>::new(),
        "case-sensitive"
    );
    assert_eq!(v2("?limit=1".into()).await, forward[..1].to_vec());
    let backward = v2("?direction=backward".into()).await;
    let mut reversed = forward.clone();
    reversed.reverse();
    assert_eq!(backward, reversed, "newest first");
    assert_eq!(
        v2("?direction=backward&limit=1".into()).await,
        reversed[..1].to_vec()
    );
    let after = v2(format!("?cursor={hello_ms}")).await;
    assert!(!after.is_empty() && after.iter().all(|x| ms(x) >= hello_ms));
    assert!(after.iter().any(|x| x["message"] == "hello-log"));
    let before = v2(format!("?cursor={hello_ms}&direction=backward")).await;
    assert!(before.iter().all(|x| ms(x) <= hello_ms), "{before:?}");
    assert!(before.iter().any(|x| x["message"] == "hello-log"));
    assert!(
        before
            .iter()
            .all(|x| x["message"] != "oops-err" || ms(x) == hello_ms)
    );
    assert_eq!(
        msgs(&v2("?level=info&search=oops&direction=backward".into()).await),
        vec!["oops-err"]
    );
    let v2p = format!("/v2/sandboxes/{id}/logs");
    c.bad(&format!("{v2p}?direction=sideways"), "direction")
        .await;
    c.bad(&format!("{v2p}?level=fatal"), "level").await;
    c.bad(&format!("{v2p}?search={}", "x".repeat(257)), "search")
        .await;
    c.bad(&format!("{v2p}?limit=0"), "limit").await;
    c.bad(&format!("{v2p}?limit=5000"), "limit").await;
    c.bad(&format!("{v2p}?cursor=soon"), "cursor").await;
    assert_eq!(
        v2(format!("?search={}", "x".repeat(256))).await,
        Vec::<Value>::new()
    );
    for path in [
        format!("/sandboxes/{UNKNOWN}/logs"),
        format!("/v2/sandboxes/{UNKNOWN}/logs"),
        "/v2/sandboxes/bad-id/logs".to_owned(),
    ] {
        let (st, body) = c.get(&path).await;
        assert_eq!((st, &body["code"]), (404, &json!(404)), "{path}: {body}");
    }

    // Refreshes: at least `duration` more (15 s at the least), never shortened.
    let timeout_path = format!("/sandboxes/{id}/timeout");
    let refresh_path = format!("/sandboxes/{id}/refreshes");
    let resume_path = format!("/sandboxes/{id}/resume");
    let timeout = |t: i64| c.call("POST", &timeout_path, Some(json!({"timeout": t})));
    let refresh = |body: Value| c.call("POST", &refresh_path, Some(body));
    assert_eq!(timeout(20).await.0, 204);
    assert_eq!(refresh(json!({"duration": 60})).await.0, 204);
    let left = c.left_s(&id).await;
    assert!(
        (58..=60).contains(&left),
        "{left} s left after a 60 s refresh"
    );
    assert_eq!(refresh(json!({"duration": 30})).await.0, 204);
    let left = c.left_s(&id).await;
    assert!(
        (57..=60).contains(&left),
        "a refresh shortened it to {left} s"
    );
    assert_eq!(timeout(5).await.0, 204);
    assert_eq!(refresh(json!({"duration": 3})).await.0, 204);
    let left = c.left_s(&id).await;
    assert!(
        (13..=15).contains(&left),
        "3 s is raised to 15: {left} s left"
    );
    assert_eq!(timeout(5).await.0, 204);
    assert_eq!(refresh(Value::Null).await.0, 204, "the body is optional");
    let left = c.left_s(&id).await;
    assert!((13..=15).contains(&left), "no body is 15 s: {left} s left");
    assert_eq!(timeout(600).await.0, 204);
    for bad in [json!({"duration": 3601}), json!({"duration": -1})] {
        let (st, body) = refresh(bad.clone()).await;
        assert_eq!((st, &body["code"]), (400, &json!(400)), "{bad}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("duration"),
            "{body}"
        );
    }
    let (st, _) = refresh(json!("not an object")).await;
    assert_eq!(st, 400);
    let (st, _) = c
        .call(
            "POST",
            &format!("/sandboxes/{UNKNOWN}/refreshes"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 404);

    // Resume (deprecated): 409 while running; 201 with the Sandbox once paused.
    let resume = |body: Value| c.call("POST", &resume_path, Some(body));
    let (st, body) = resume(json!({"timeout": 30})).await;
    assert_eq!((st, &body["code"]), (409, &json!(409)), "{body}");
    assert_eq!(
        c.call("POST", &format!("/sandboxes/{id}/pause"), None)
            .await
            .0,
        204
    );
    let (st, body) = refresh(json!({"duration": 60})).await;
    assert_eq!(st, 404, "a paused sandbox is not kept alive: {body}");
    let (st, body) = resume(Value::Null).await;
    assert_eq!(st, 400, "resume needs its body: {body}");
    let (st, sb) = resume(json!({})).await;
    assert_eq!(st, 201, "{sb}");
    assert_eq!(sb["sandboxID"], id.as_str());
    assert!(
        sb["envdAccessToken"].is_string() && sb["clientID"].is_string(),
        "{sb}"
    );
    let (_, d) = c.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(d["state"], "running", "{d}");
    assert!(c.left_s(&id).await >= 14, "at least the default 15 s");
    assert_eq!(e.ok(&id, "echo back").await.trim(), "back");
    let (st, _) = c
        .call(
            "POST",
            &format!("/sandboxes/{UNKNOWN}/resume"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 404);

    // A stopped sandbox's logs still answer.
    e.terminate(&id).await;
    let (st, after) = c.get(&format!("/sandboxes/{id}/logs")).await;
    assert_eq!(st, 200, "{after}");
    assert!(
        arr(&after["logEntries"])
            .iter()
            .any(|x| x["message"] == "hello-log"),
        "{after}"
    );
    let stopped = v2("?direction=backward&limit=1".into()).await;
    assert_eq!(stopped[0]["fields"]["stream"], "event", "{stopped:?}");

    server.abort();
    e.shutdown().await;
}
