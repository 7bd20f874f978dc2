//! E2B's control plane served over quantbox's sandboxes (`quantbox_e2b::server`), spoken
//! to over HTTP as E2B's SDKs do: auth by `X-API-Key`, create (v1 and v2 with their
//! default timeouts), details, the v2 list with metadata filter and paging, timeouts,
//! pause and connect (200 vs 201), kill, E2B's error shape and statuses. Sandboxes made this way are ordinary quantbox
//! sandboxes.

mod common;

use common::{Engine, require_root};
use serde_json::{Value, json};

const KEY: &str = "e2b_53ae1fed82754c17ad8077fbc8bcdd90";

fn secs_between(a: &Value, b: &Value) -> i64 {
    let t = |v: &Value| {
        quantbox_sandbox::Timestamp::parse_rfc3339(v.as_str().unwrap())
            .unwrap()
            .unix_ms()
    };
    (t(b) - t(a)) / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_over_local_sandboxes() {
    if !require_root("the_control_plane_over_local_sandboxes") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let router = quantbox_e2b::server::control_router(
        e.app().ops.clone(),
        quantbox_e2b::server::ApiKeys::Only(vec![KEY.into()]),
        std::sync::Arc::new(quantbox_e2b::envd::AccessTokens::from_secret([7; 32])),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    let call = |method: &str, path: &str, body: Option<Value>, key: Option<&str>| {
        let mut r = http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{base}{path}"),
        );
        if let Some(k) = key {
            r = r.header("X-API-KEY", k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                headers,
            )
        }
    };

    assert_eq!(call("GET", "/health", None, None).await.0, 204);
    let (st, body, _) = call(
        "POST",
        "/v2/sandboxes",
        Some(json!({"templateID": "base"})),
        None,
    )
    .await;
    assert_eq!((st, body["code"].as_i64()), (401, Some(401)), "{body}");
    let (st, body, _) = call("GET", "/v2/sandboxes", None, Some("e2b_wrong")).await;
    assert_eq!(st, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("API key"));

    let new = json!({"templateID": "base", "metadata": {"suite": "e2b"}, "envVars": {"A": "1"}});
    let (st, a, _) = call("POST", "/v2/sandboxes", Some(new.clone()), Some(KEY)).await;
    assert_eq!(st, 201, "{a}");
    let a_id = a["sandboxID"].as_str().unwrap().to_owned();
    assert_eq!(a_id.len(), 20);
    assert_eq!(a["templateID"], "base");
    assert!(
        a["clientID"].is_string() && a["envdVersion"].is_string(),
        "{a}"
    );
    let (st, d, _) = call("GET", &format!("/sandboxes/{a_id}"), None, Some(KEY)).await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["state"], "running");
    assert_eq!(d["metadata"]["suite"], "e2b");
    assert_eq!(
        secs_between(&d["startedAt"], &d["endAt"]),
        300,
        "v2's default: {d}"
    );
    // An ordinary quantbox sandbox: the tools see it, with E2B's environment.
    assert_eq!(e.ok(&a_id, "echo $A").await.trim(), "1");
    let listed = e
        .call("list_e2b_sandboxes", json!({"metadata": {"suite": "e2b"}}))
        .await
        .unwrap();
    assert_eq!(listed["total_count"], 1);

    // v1 create: default timeout 15 s.
    let (st, b, _) = call("POST", "/sandboxes", Some(new), Some(KEY)).await;
    assert_eq!(st, 201, "{b}");
    let b_id = b["sandboxID"].as_str().unwrap().to_owned();
    let (_, d, _) = call("GET", &format!("/sandboxes/{b_id}"), None, Some(KEY)).await;
    assert_eq!(secs_between(&d["startedAt"], &d["endAt"]), 15, "{d}");

    // The list: metadata filter, newest first, pages of one.
    let (st, page1, h1) = call(
        "GET",
        "/v2/sandboxes?metadata=suite%3De2b&limit=1",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(st, 200, "{page1}");
    assert_eq!(page1.as_array().unwrap().len(), 1);
    assert_eq!(page1[0]["sandboxID"], b_id.as_str());
    let token = h1
        .get("x-next-token")
        .expect("a next page")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(h1.get("x-total-running").unwrap(), "2");
    let (_, page2, h2) = call(
        "GET",
        &format!("/v2/sandboxes?metadata=suite%3De2b&limit=1&nextToken={token}"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(page2[0]["sandboxID"], a_id.as_str());
    assert!(h2.get("x-next-token").is_none());
    let (_, none, _) = call(
        "GET",
        "/v2/sandboxes?metadata=suite%3Dother",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(none, json!([]));
    // Oldest first on request; started after a time; by template.
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["sandboxID"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, asc, _) = call(
        "GET",
        "/v2/sandboxes?metadata=suite%3De2b&order=asc",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(ids(&asc), [a_id.clone(), b_id.clone()], "{asc}");
    let (_, d_b, _) = call("GET", &format!("/sandboxes/{b_id}"), None, Some(KEY)).await;
    let after = d_b["startedAt"].as_str().unwrap().replace(':', "%3A");
    let (st, later, _) = call(
        "GET",
        &format!("/v2/sandboxes?metadata=suite%3De2b&startedAfter={after}"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!((st, ids(&later)), (200, vec![b_id.clone()]), "{later}");
    let (_, by_template, _) = call(
        "GET",
        "/v2/sandboxes?metadata=suite%3De2b&template=base",
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(ids(&by_template).len(), 2, "{by_template}");
    let (st, body, _) = call("POST", &format!("/sandboxes/{a_id}/fork"), None, Some(KEY)).await;
    assert_eq!((st, body["code"].as_i64()), (404, Some(404)), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not part of"),
        "{body}"
    );
    let (_, other, _) = call("GET", "/v2/sandboxes?template=nosuch", None, Some(KEY)).await;
    assert_eq!(other, json!([]));
    for (q, field) in [
        ("limit=0", "limit"),
        ("state=sleeping", "state"),
        ("order=sideways", "order"),
        ("startedAfter=yesterday", "startedAfter"),
    ] {
        let (st, body, _) = call("GET", &format!("/v2/sandboxes?{q}"), None, Some(KEY)).await;
        assert_eq!((st, body["code"].as_i64()), (400, Some(400)), "{q}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{q}: {body}"
        );
    }

    // Idempotency-Key: the same create again is the first one's answer, not a second
    // sandbox; another body under the key is refused; a malformed key too.
    let idem = |key: &str, body: Value| {
        let r = http
            .post(format!("{base}/v2/sandboxes"))
            .header("X-API-KEY", KEY)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let replayed = resp.headers().get("idempotent-replayed").is_some();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            (status, v, replayed)
        }
    };
    let once = json!({"templateID": "base", "metadata": {"suite": "idem"}});
    let (st1, first, replayed1) = idem("create-7f3a", once.clone()).await;
    let (st2, again, replayed2) = idem("create-7f3a", once.clone()).await;
    assert_eq!((st1, replayed1), (201, false), "{first}");
    assert_eq!((st2, replayed2), (201, true), "{again}");
    assert_eq!(first["sandboxID"], again["sandboxID"]);
    let made = e
        .call("list_e2b_sandboxes", json!({"metadata": {"suite": "idem"}}))
        .await
        .unwrap();
    assert_eq!(made["total_count"], 1, "one sandbox for one key: {made}");
    let (st, v, _) = idem("create-7f3a", json!({"templateID": "base"})).await;
    assert_eq!(
        (st, v["error_code"].as_str()),
        (409, Some("idempotency_request_mismatch")),
        "{v}"
    );
    let (st, v, _) = idem("Not A Key", once.clone()).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("Idempotency-Key"),
        "{v}"
    );
    e.terminate(first["sandboxID"].as_str().unwrap()).await;

    // Timeouts: end = now + timeout; not zero.
    let (st, _, _) = call(
        "POST",
        &format!("/sandboxes/{a_id}/timeout"),
        Some(json!({"timeout": 60})),
        Some(KEY),
    )
    .await;
    assert_eq!(st, 204);
    let (_, d, _) = call("GET", &format!("/sandboxes/{a_id}"), None, Some(KEY)).await;
    let left = secs_between(
        &json!(quantbox_sandbox::Timestamp::now().to_rfc3339()),
        &d["endAt"],
    );
    assert!((58..=60).contains(&left), "{left} s left: {d}");
    let (st, body, _) = call(
        "POST",
        &format!("/sandboxes/{a_id}/timeout"),
        Some(json!({"timeout": 0})),
        Some(KEY),
    )
    .await;
    assert_eq!((st, body["code"].as_i64()), (400, Some(400)), "{body}");

    // Pause, then connect: 201 when it was resumed, 200 when it ran; never shortened.
    let (st, _, _) = call("POST", &format!("/sandboxes/{a_id}/pause"), None, Some(KEY)).await;
    assert_eq!(st, 204);
    let (_, d, _) = call("GET", &format!("/sandboxes/{a_id}"), None, Some(KEY)).await;
    assert_eq!(d["state"], "paused", "{d}");
    let (st, body, _) = call("POST", &format!("/sandboxes/{a_id}/pause"), None, Some(KEY)).await;
    assert_eq!(st, 409, "{body}");
    let (st, c, _) = call(
        "POST",
        &format!("/v2/sandboxes/{a_id}/connect"),
        Some(json!({"timeout": 120})),
        Some(KEY),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["sandboxID"], a_id.as_str());
    let (_, d, _) = call("GET", &format!("/sandboxes/{a_id}"), None, Some(KEY)).await;
    assert_eq!(d["state"], "running", "{d}");
    let (st, _, _) = call(
        "POST",
        &format!("/sandboxes/{a_id}/connect"),
        Some(json!({"timeout": 30})),
        Some(KEY),
    )
    .await;
    assert_eq!(st, 200);
    let (_, d, _) = call("GET", &format!("/sandboxes/{a_id}"), None, Some(KEY)).await;
    let left = secs_between(
        &json!(quantbox_sandbox::Timestamp::now().to_rfc3339()),
        &d["endAt"],
    );
    assert!(
        (115..=120).contains(&left),
        "connect shortened the lifetime to {left} s: {d}"
    );
    assert_eq!(e.ok(&a_id, "echo back").await.trim(), "back");
    let (st, _, _) = call(
        "POST",
        &format!("/sandboxes/{a_id}/connect"),
        None,
        Some(KEY),
    )
    .await;
    assert_eq!(st, 400, "v1 connect needs its body");
    let (st, _, _) = call(
        "POST",
        "/v2/sandboxes/aaaaaaaaaaaaaaaaaaaa/connect",
        Some(json!({"timeout": 10})),
        Some(KEY),
    )
    .await;
    assert_eq!(st, 404);

    // Errors in E2B's shape.
    let (st, body, _) = call(
        "POST",
        "/v2/sandboxes",
        Some(json!({"templateID": "no-such-template"})),
        Some(KEY),
    )
    .await;
    assert_eq!(st, 404, "{body}");
    let (st, _, _) = call(
        "POST",
        "/v2/sandboxes",
        Some(json!({"template": "base"})),
        Some(KEY),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _, _) = call("GET", "/sandboxes/aaaaaaaaaaaaaaaaaaaa", None, Some(KEY)).await;
    assert_eq!(st, 404);

    // Kill: 204, then 404 (the SDK reads that as "already gone").
    for id in [&a_id, &b_id] {
        let (st, _, _) = call("DELETE", &format!("/sandboxes/{id}"), None, Some(KEY)).await;
        assert_eq!(st, 204);
    }
    let (st, body, _) = call("DELETE", &format!("/sandboxes/{a_id}"), None, Some(KEY)).await;
    assert_eq!((st, body["code"].as_i64()), (404, Some(404)), "{body}");
    let (st, _, _) = call("GET", &format!("/sandboxes/{a_id}"), None, Some(KEY)).await;
    assert_eq!(st, 404);
    server.abort();
    e.shutdown().await;
}
