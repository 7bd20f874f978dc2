//! envd's `process.Process` service and its gate, over real HTTP with the Connect JSON
//! wire format as E2B's SDKs write it: what the SDK suite does not reach — the access
//! token and user checks, keepalives, a stream's deadline that leaves the process running
//! (re-attached by pid and by tag), signals, client-streamed input, and every bad input
//! with its Connect code.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Engine, require_root};
use quantbox_e2b::connect::{Decoder, encode_envelope};
use quantbox_e2b::envd::AccessTokens;
use serde_json::{Value, json};

#[derive(Clone)]
struct Envd {
    base: String,
    tokens: Arc<AccessTokens>,
    http: reqwest::Client,
}

/// What a streaming call returned: HTTP status, the messages, the end-of-stream message.
struct Streamed {
    status: u16,
    messages: Vec<Value>,
    end: Option<Value>,
    /// Seconds after the request each message arrived.
    at: Vec<f64>,
}

impl Envd {
    /// Starts a process in the background; its whole stream is the task's result.
    fn start_bg(&self, id: &str, req: Value) -> tokio::task::JoinHandle<Streamed> {
        let (envd, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move { envd.stream(&id, "process.Process/Start", req, &[]).await })
    }

    /// A unary call on a process started in the background, made as soon as the process
    /// is known (until then it is `not_found`): (status, body).
    async fn once_listed(&self, id: &str, method: &str, body: Value) -> (u16, Value) {
        let token = self.tokens.for_sandbox(id);
        for _ in 0..200 {
            let (st, v) = self.unary(id, Some(&token), method, body.clone()).await;
            if st != 404 {
                return (st, v);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{method} {body}: the process never became known");
    }

    fn request(&self, id: &str, method: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/{method}", self.base))
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", "49983")
    }

    async fn unary(
        &self,
        id: &str,
        token: Option<&str>,
        method: &str,
        body: Value,
    ) -> (u16, Value) {
        let mut r = self
            .request(id, method)
            .header("Content-Type", "application/json")
            .header("Connect-Protocol-Version", "1")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.header("X-Access-Token", t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ok(&self, id: &str, method: &str, body: Value) -> Value {
        let (st, v) = self
            .unary(id, Some(&self.tokens.for_sandbox(id)), method, body)
            .await;
        assert_eq!(st, 200, "{method}: {v}");
        v
    }

    async fn stream(
        &self,
        id: &str,
        method: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Streamed {
        let payload = serde_json::to_vec(&body).unwrap();
        let mut r = self
            .request(id, method)
            .header("Content-Type", "application/connect+json")
            .header("X-Access-Token", self.tokens.for_sandbox(id))
            .body(encode_envelope(0, &payload));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let t0 = Instant::now();
        let mut resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let mut out = Streamed {
            status,
            messages: vec![],
            end: None,
            at: vec![],
        };
        if status != 200 {
            let text = resp.text().await.unwrap();
            out.end = serde_json::from_str(&text).ok();
            return out;
        }
        let mut dec = Decoder::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            dec.push(&chunk);
            while let Some(env) = dec.next().unwrap() {
                let v: Value = serde_json::from_slice(&env.payload).unwrap_or(Value::Null);
                if env.is_end_stream() {
                    out.end = Some(v);
                } else {
                    out.messages.push(v);
                    out.at.push(t0.elapsed().as_secs_f64());
                }
            }
        }
        dec.finish().unwrap();
        out
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn text_of(messages: &[Value], stream: &str) -> String {
    messages
        .iter()
        .filter_map(|m| m["event"]["data"][stream].as_str())
        .map(|s| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
        })
        .collect()
}

fn bash(cmd: &str) -> Value {
    json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}, "stdin": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envd_process_service_and_its_gate() {
    if !require_root("envd_process_service_and_its_gate") {
        return;
    }
    let e = Engine::start_with(|c| c.warm_pool = 0).await;
    let tokens = Arc::new(AccessTokens::from_secret([9; 32]));
    let router = quantbox_e2b::router(
        e.app().ops.clone(),
        quantbox_e2b::server::ApiKeys::Only(vec!["e2b_00".into()]),
        tokens.clone(),
        |r| r,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let envd = Envd {
        base: base.clone(),
        tokens: tokens.clone(),
        http: reqwest::Client::new(),
    };
    let a = e.create(json!({"env_vars": {"FROM_SANDBOX": "yes"}})).await;
    let b = e.create(json!({})).await;

    // --- the gate ---
    let (st, v) = envd
        .unary(&a, None, "process.Process/List", json!({}))
        .await;
    assert_eq!(st, 401, "no token: {v}");
    let (st, v) = envd
        .unary(
            &a,
            Some(&tokens.for_sandbox(&b)),
            "process.Process/List",
            json!({}),
        )
        .await;
    assert_eq!(st, 401, "b's token on a: {v}");
    assert_eq!(v["code"], 401);
    let ghost = "q".repeat(20);
    let (st, v) = envd
        .unary(
            &ghost,
            Some(&tokens.for_sandbox(&ghost)),
            "process.Process/List",
            json!({}),
        )
        .await;
    assert_eq!(st, 502, "unknown sandbox: {v}");
    assert!(
        v["message"].as_str().unwrap().contains("was not found"),
        "{v}"
    );
    let (st, _) = envd
        .unary("../etc", Some("x"), "process.Process/List", json!({}))
        .await;
    assert_eq!(st, 502);
    // /health needs no token; /envs does.
    let health = envd
        .http
        .get(format!("{base}/health"))
        .header("E2b-Sandbox-Id", &a)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 204);
    let envs = envd
        .http
        .get(format!("{base}/envs"))
        .header("E2b-Sandbox-Id", &a)
        .header("X-Access-Token", tokens.for_sandbox(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(envs.json::<Value>().await.unwrap()["FROM_SANDBOX"], "yes");
    // Users: Basic auth picks one; an unknown one is unauthenticated.
    let as_user = |user: &str| format!("Basic {}", b64(&format!("{user}:")));
    let s = envd
        .stream(
            &a,
            "process.Process/Start",
            bash("id -un"),
            &[("Authorization", &as_user("root"))],
        )
        .await;
    assert_eq!(text_of(&s.messages, "stdout"), "root\n");
    let s = envd
        .stream(&a, "process.Process/Start", bash("id -un"), &[])
        .await;
    assert_eq!(text_of(&s.messages, "stdout"), "user\n", "default user");
    let s = envd
        .stream(
            &a,
            "process.Process/Start",
            bash("id"),
            &[("Authorization", &as_user("mallory"))],
        )
        .await;
    assert_eq!(s.status, 401);
    assert_eq!(
        s.end.as_ref().unwrap()["code"],
        "unauthenticated",
        "{:?}",
        s.end
    );

    // --- a command's stream: start first, output, end with E2B's wording, then end-of-stream ---
    let s = envd
        .stream(
            &a,
            "process.Process/Start",
            bash("echo $FROM_SANDBOX; echo oops >&2; exit 4"),
            &[],
        )
        .await;
    assert_eq!(s.status, 200);
    assert!(
        s.messages[0]["event"]["start"]["pid"].as_u64().unwrap() > 1,
        "{:?}",
        s.messages
    );
    assert_eq!(text_of(&s.messages, "stdout"), "yes\n");
    assert_eq!(text_of(&s.messages, "stderr"), "oops\n");
    let end = &s.messages.last().unwrap()["event"]["end"];
    assert_eq!(
        end,
        &json!({"exitCode": 4, "exited": true, "status": "exit status 4"})
    );
    assert_eq!(s.end, Some(json!({})));
    let s = envd
        .stream(&a, "process.Process/Start", bash("true"), &[])
        .await;
    assert_eq!(
        s.messages.last().unwrap()["event"]["end"],
        json!({"exited": true, "status": "exit status 0"}),
        "exit code 0 is omitted"
    );

    // Keepalives at the asked interval while a command is quiet.
    let s = envd
        .stream(
            &a,
            "process.Process/Start",
            bash("sleep 2.5; echo done"),
            &[("Keepalive-Ping-Interval", "1")],
        )
        .await;
    let pings = s
        .messages
        .iter()
        .filter(|m| m["event"].get("keepalive").is_some())
        .count();
    // One a second for as long as the stream lasted (2.5 s and a loaded host's delay).
    let lasted = *s.at.last().unwrap();
    assert!(
        pings >= 2 && pings as f64 <= lasted + 0.5,
        "{pings} keepalives in {lasted:.1} s at 1 s: {:?}",
        s.messages
    );

    // --- the deadline ends the stream, not the process: re-attach by pid and by tag ---
    let mut req = bash("for i in 1 2 3 4 5 6 7 8; do echo n$i; sleep 0.4; done");
    req["tag"] = json!("ticker");
    let s = envd
        .stream(
            &a,
            "process.Process/Start",
            req,
            &[("Connect-Timeout-Ms", "700")],
        )
        .await;
    assert_eq!(
        s.end.as_ref().unwrap()["error"]["code"],
        "deadline_exceeded",
        "{:?}",
        s.end
    );
    let pid = s.messages[0]["event"]["start"]["pid"].as_u64().unwrap();
    // The process runs 3.2 s; its stream ended at the 0.7 s deadline.
    assert!(
        s.at.last().unwrap() < &2.5,
        "the stream outlived its deadline"
    );
    let listed = envd.ok(&a, "process.Process/List", json!({})).await;
    let entry = listed["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned();
    let entry = entry.unwrap_or_else(|| panic!("pid {pid} not listed: {listed}"));
    assert_eq!(entry["tag"], "ticker");
    assert_eq!(entry["config"]["cmd"], "/bin/bash");
    let again = envd
        .stream(
            &a,
            "process.Process/Connect",
            json!({"process": {"tag": "ticker"}}),
            &[],
        )
        .await;
    assert_eq!(again.messages[0]["event"]["start"]["pid"], pid);
    let out = text_of(&again.messages, "stdout");
    assert!(
        out.ends_with("n8\n") && !out.contains("n1\n"),
        "re-attached output: {out:?}"
    );
    assert_eq!(
        again.messages.last().unwrap()["event"]["end"]["exited"],
        true
    );
    let gone = envd
        .stream(
            &a,
            "process.Process/Connect",
            json!({"process": {"pid": pid}}),
            &[],
        )
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.end.unwrap()["code"], "not_found");

    // --- signals end a process with Go's wording ---
    let mut req = bash("sleep 60");
    req["tag"] = json!("sleeper");
    let waiter = envd.start_bg(&a, req);
    let (st, v) = envd
        .once_listed(
            &a,
            "process.Process/SendSignal",
            json!({"process": {"tag": "sleeper"}, "signal": "SIGNAL_SIGKILL"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let s = waiter.await.unwrap();
    let end = &s.messages.last().unwrap()["event"]["end"];
    assert_eq!(end["status"], "signal: killed", "{end}");
    assert_eq!(end["exitCode"], -1);

    // --- input: unary SendInput + CloseStdin, and client-streamed StreamInput ---
    let cat = json!({"process": {"cmd": "/bin/cat"}, "stdin": true, "tag": "cat1"});
    let waiter = envd.start_bg(&a, cat);
    let sel = json!({"tag": "cat1"});
    let (st, v) = envd
        .once_listed(
            &a,
            "process.Process/SendInput",
            json!({"process": sel, "input": {"stdin": b64("one\n")}}),
        )
        .await;
    assert_eq!(st, 200, "SendInput to cat: {v}");
    // StreamInput: start, two data messages, end-of-stream; one request.
    let mut body = Vec::new();
    for m in [
        json!({"start": {"process": sel}}),
        json!({"data": {"input": {"stdin": b64("two\n")}}}),
        json!({"keepalive": {}}),
        json!({"data": {"input": {"stdin": b64("three\n")}}}),
    ] {
        body.extend(encode_envelope(0, &serde_json::to_vec(&m).unwrap()));
    }
    body.extend(encode_envelope(2, b"{}"));
    let r = envd
        .request(&a, "process.Process/StreamInput")
        .header("Content-Type", "application/connect+json")
        .header("X-Access-Token", tokens.for_sandbox(&a))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bytes = r.bytes().await.unwrap();
    let mut dec = Decoder::new();
    dec.push(&bytes);
    let first = dec.next().unwrap().unwrap();
    let last = dec.next().unwrap().unwrap();
    assert!(!first.is_end_stream() && last.is_end_stream());
    assert_eq!(
        serde_json::from_slice::<Value>(&last.payload).unwrap(),
        json!({}),
        "no error"
    );
    envd.ok(&a, "process.Process/CloseStdin", json!({"process": sel}))
        .await;
    let s = waiter.await.unwrap();
    assert_eq!(text_of(&s.messages, "stdout"), "one\ntwo\nthree\n");
    assert_eq!(s.messages.last().unwrap()["event"]["end"]["exited"], true);

    // --- bad input, each with its Connect code ---
    let token_a = tokens.for_sandbox(&a);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "process.Process/SendInput",
            json!({"process": {"pid": 999999}, "input": {"stdin": "aA=="}}),
            404,
            "not_found",
        ),
        (
            "process.Process/SendInput",
            json!({"input": {"stdin": "aA=="}}),
            400,
            "invalid_argument",
        ),
        (
            "process.Process/SendInput",
            json!({"process": {"pid": 1}, "input": {"stdin": "%%%"}}),
            404,
            "not_found",
        ),
        (
            "process.Process/SendSignal",
            json!({"process": {"pid": 1}, "signal": "SIGNAL_SIGHUP"}),
            400,
            "invalid_argument",
        ),
        (
            "process.Process/SendSignal",
            json!({"process": {}, "signal": "SIGNAL_SIGKILL"}),
            400,
            "invalid_argument",
        ),
        (
            "process.Process/CloseStdin",
            json!({"process": {"tag": "nope"}}),
            404,
            "not_found",
        ),
        (
            "process.Process/Update",
            json!({"process": {"pid": 1}, "pty": {"size": {"cols": 80, "rows": 24}}}),
            404,
            "not_found",
        ),
        (
            "process.Process/List",
            json!("not an object"),
            400,
            "invalid_argument",
        ),
        ("process.Process/Fork", json!({}), 501, "unimplemented"),
    ];
    for (method, body, status, code) in cases {
        let (st, v) = envd.unary(&a, Some(&token_a), method, body.clone()).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (status, Some(code)),
            "{method} {body}: {v}"
        );
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method}: no message: {v}"
        );
    }
    // Start: no process, empty cmd, a terminal without a size or of size 0.
    for (body, status, code) in [
        (json!({}), 400, "invalid_argument"),
        (json!({"process": {"cmd": ""}}), 400, "invalid_argument"),
        (
            json!({"process": {"cmd": "/bin/bash"}, "pty": {}}),
            400,
            "invalid_argument",
        ),
        (
            json!({"process": {"cmd": "/bin/bash"}, "pty": {"size": {"cols": 0, "rows": 24}}}),
            400,
            "invalid_argument",
        ),
    ] {
        let s = envd
            .stream(&a, "process.Process/Start", body.clone(), &[])
            .await;
        assert_eq!(s.status, status, "{body}");
        assert_eq!(s.end.as_ref().unwrap()["code"], code, "{body}: {:?}", s.end);
    }
    // On a terminal: the size it was given, then the one Update sets; output as `pty`
    // data; input to the terminal, which is the process's stdin.
    let mut req = json!({
        "process": {"cmd": "/bin/bash", "args": ["-i"], "envs": {"PS1": "$ "}},
        "pty": {"size": {"cols": 100, "rows": 30}},
        "tag": "term",
    });
    req["stdin"] = json!(false);
    let waiter = envd.start_bg(&a, req);
    let term = json!({"tag": "term"});
    let (st, v) = envd
        .once_listed(
            &a,
            "process.Process/SendInput",
            json!({"process": term, "input": {"pty": b64("stty size; [ -t 0 ] && echo on-a-tty\n")}}),
        )
        .await;
    assert_eq!(st, 200, "typing into the terminal: {v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    envd.ok(
        &a,
        "process.Process/Update",
        json!({"process": term, "pty": {"size": {"cols": 132, "rows": 43}}}),
    )
    .await;
    envd.ok(
        &a,
        "process.Process/SendInput",
        json!({"process": term, "input": {"pty": b64("stty size; exit 7\n")}}),
    )
    .await;
    let s = waiter.await.unwrap();
    let screen = text_of(&s.messages, "pty");
    assert!(screen.contains("30 100\r\n"), "first size: {screen:?}");
    assert!(
        screen.contains("on-a-tty\r\n"),
        "stdin is a terminal: {screen:?}"
    );
    assert!(screen.contains("43 132\r\n"), "after Update: {screen:?}");
    assert_eq!(
        text_of(&s.messages, "stdout"),
        "",
        "a terminal's output is `pty` data"
    );
    assert_eq!(s.messages.last().unwrap()["event"]["end"]["exitCode"], 7);
    // Update of a process without a terminal.
    let mut req = bash("sleep 3");
    req["tag"] = json!("noterm");
    let waiter = envd.start_bg(&a, req);
    let (st, v) = envd
        .once_listed(
            &a,
            "process.Process/Update",
            json!({"process": {"tag": "noterm"}, "pty": {"size": {"cols": 80, "rows": 24}}}),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("failed_precondition")),
        "{v}"
    );
    envd.ok(
        &a,
        "process.Process/SendSignal",
        json!({"process": {"tag": "noterm"}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    waiter.await.unwrap();

    // A stdin-less process refuses input.
    let mut req = bash("sleep 3");
    req["tag"] = json!("nostdin");
    let waiter = envd.start_bg(&a, req);
    let (st, v) = envd
        .once_listed(
            &a,
            "process.Process/SendInput",
            json!({"process": {"tag": "nostdin"}, "input": {"stdin": "aA=="}}),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("failed_precondition")),
        "{v}"
    );
    envd.ok(
        &a,
        "process.Process/SendSignal",
        json!({"process": {"tag": "nostdin"}, "signal": "SIGNAL_SIGTERM"}),
    )
    .await;
    let s = waiter.await.unwrap();
    assert_eq!(
        s.messages.last().unwrap()["event"]["end"]["status"],
        "signal: terminated"
    );
    // Wrong content types and bodies.
    let r = envd
        .request(&a, "process.Process/List")
        .header("Content-Type", "application/proto")
        .header("X-Access-Token", &token_a)
        .body(vec![])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 501, "binary protobuf is not served");
    let r = envd
        .request(&a, "process.Process/Start")
        .header("Content-Type", "application/connect+json")
        .header("X-Access-Token", &token_a)
        .body(vec![0, 0, 0, 0, 50, b'{'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "a truncated envelope");

    // A paused sandbox answers 502, saying so; resumed, it answers again.
    e.app().ops.pause_sandbox(&b).await.unwrap();
    let (st, v) = envd
        .unary(
            &b,
            Some(&tokens.for_sandbox(&b)),
            "process.Process/List",
            json!({}),
        )
        .await;
    assert_eq!(st, 502, "{v}");
    assert!(v["message"].as_str().unwrap().contains("paused"), "{v}");
    e.app().ops.resume_sandbox(&b).await.unwrap();
    envd.ok(&b, "process.Process/List", json!({})).await;

    server.abort();
    e.shutdown().await;
}
