//! envd's file side served over quantbox's sandboxes (`quantbox_e2b::envd` files and
//! filesystem), spoken to over real HTTP exactly as E2B's SDKs speak it: `GET`/`POST
//! /files` (multipart, octet-stream, gzip both ways, signed URLs) and the
//! `filesystem.Filesystem` Connect service (unary JSON, the `WatchDir` stream, polling
//! watchers). Every operation runs inside the sandbox as the requesting user, so the
//! sandbox's permissions hold and symlinks resolve inside it.

mod common;

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use common::{Engine, eventually, require_root};
use quantbox_e2b::connect;
use quantbox_e2b::envd::{AccessTokens, Envd, url_signature};
use serde_json::{Value, json};

/// base64("user:") and base64("root:"): `Authorization: Basic` as the SDKs send it.
const BASIC_USER: &str = "Basic dXNlcjo=";
const BASIC_ROOT: &str = "Basic cm9vdDo=";

struct Envd2 {
    http: reqwest::Client,
    base: String,
    tokens: Arc<AccessTokens>,
}

impl Envd2 {
    /// A request to sandbox `id`'s envd with its routing headers and, when `token`, its
    /// access token.
    fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        id: &str,
        token: bool,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", "49983");
        if token {
            r = r.header("X-Access-Token", self.tokens.for_sandbox(id));
        }
        r
    }

    /// A unary `filesystem.Filesystem` call as `auth` (an `Authorization` value).
    async fn rpc(&self, id: &str, method: &str, body: Value, auth: Option<&str>) -> (u16, Value) {
        let mut r = self
            .req(
                reqwest::Method::POST,
                &format!("/filesystem.Filesystem/{method}"),
                id,
                true,
            )
            .header("Content-Type", "application/json")
            .header("Connect-Protocol-Version", "1")
            .header("Connect-Timeout-Ms", "30000")
            .body(body.to_string());
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        status_json(r).await
    }

    /// `GET /files` with the token; (status, headers, body).
    async fn download(
        &self,
        id: &str,
        query: &[(&str, &str)],
        accept: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut r = self.req(reqwest::Method::GET, &files_url(query), id, true);
        if let Some(a) = accept {
            r = r.header("Accept-Encoding", a);
        }
        let resp = r.send().await.unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        (status, headers, resp.bytes().await.unwrap().to_vec())
    }

    /// `POST /files` as application/octet-stream.
    async fn upload(
        &self,
        id: &str,
        query: &[(&str, &str)],
        data: Vec<u8>,
        gzip: bool,
    ) -> (u16, Value) {
        let mut r = self
            .req(reqwest::Method::POST, &files_url(query), id, true)
            .header("Content-Type", "application/octet-stream");
        let body = if gzip {
            r = r.header("Content-Encoding", "gzip");
            gz(&data)
        } else {
            data
        };
        status_json(r.body(body)).await
    }

    /// `POST /files` as multipart/form-data with `(field, filename, data)` parts.
    async fn upload_multipart(
        &self,
        id: &str,
        query: &[(&str, &str)],
        parts: &[(&str, &str, &[u8])],
    ) -> (u16, Value) {
        let boundary = "qbtestboundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (field, filename, data) in parts {
            write!(
                body,
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .unwrap();
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        write!(body, "--{boundary}--\r\n").unwrap();
        status_json(
            self.req(reqwest::Method::POST, &files_url(query), id, true)
                .header(
                    "Content-Type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body),
        )
        .await
    }

    /// Starts a `WatchDir` stream; returns the open response.
    async fn watch_dir(&self, id: &str, body: Value, timeout_ms: Option<u64>) -> reqwest::Response {
        let mut r = self
            .req(
                reqwest::Method::POST,
                "/filesystem.Filesystem/WatchDir",
                id,
                true,
            )
            .header("Content-Type", "application/connect+json")
            .header("Connect-Protocol-Version", "1")
            .header("Authorization", BASIC_USER)
            .header("Keepalive-Ping-Interval", "1")
            .body(connect::encode_message(&body).unwrap());
        if let Some(t) = timeout_ms {
            r = r.header("Connect-Timeout-Ms", t.to_string());
        }
        r.send().await.unwrap()
    }
}

/// `/files?` with the query, percent-encoded.
/// Sends a request: (HTTP status, the body as JSON, or as a string when it is not JSON).
async fn status_json(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn files_url<K: AsRef<str>, V: AsRef<str>>(query: &[(K, V)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k.as_ref()), enc(v.as_ref())))
        .collect();
    format!("/files?{}", q.join("&"))
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Reads stream messages until `stop` says so; returns all of them (the end-of-stream
/// message, if reached, as `{"__end": ...}`).
async fn read_stream(
    resp: &mut reqwest::Response,
    dec: &mut connect::Decoder,
    seen: &mut Vec<Value>,
    stop: impl Fn(&[Value]) -> bool,
) {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while let Some(env) = dec.next().unwrap() {
            if env.is_end_stream() {
                seen.push(json!({"__end": serde_json::from_slice::<Value>(&env.payload).unwrap()}));
            } else {
                seen.push(serde_json::from_slice(&env.payload).unwrap());
            }
        }
        if stop(seen) {
            return;
        }
        let chunk = tokio::time::timeout_at(until, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("stream timed out; saw {seen:?}"))
            .unwrap();
        match chunk {
            Some(c) => dec.push(&c),
            None => {
                assert!(stop(seen), "the stream ended early; saw {seen:?}");
                return;
            }
        }
    }
}

/// A shell line counting the sandbox's `quantbox envd-fs <op>` processes.
fn count_processes_cmd(op: &str) -> String {
    // `[x]yz` keeps the grep itself out of the count.
    let (first, rest) = op.split_at(1);
    format!(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c 'envd-fs [{first}]{rest}' || true"
    )
}

fn count_watch_processes_cmd() -> String {
    count_processes_cmd("watch")
}

async fn serve(e: &Engine) -> (Envd2, Envd) {
    let tokens = Arc::new(AccessTokens::from_secret([7; 32]));
    let envd = Envd::new(e.app().ops.clone(), tokens.clone());
    let router = quantbox_e2b::envd::router(envd.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (
        Envd2 {
            http: reqwest::Client::new(),
            base,
            tokens,
        },
        envd,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_over_http_as_the_sdks_move_them() {
    if !require_root("files_move_over_http_as_the_sdks_move_them") {
        return;
    }
    let e = Engine::start().await;
    let (c, _envd) = serve(&e).await;
    let id = e.create(json!({"memory_mb": 256})).await;
    let other = e.create(json!({})).await;

    // Octet-stream upload, relative path: under the user's home, owned by the user.
    let (st, body) = c
        .upload(&id, &[("path", "up/a.txt")], b"hello".to_vec(), false)
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        json!([{"path": "/home/user/up/a.txt", "name": "a.txt", "type": "file"}])
    );
    assert_eq!(e.ok(&id, "cat /home/user/up/a.txt").await, "hello");
    assert_eq!(
        e.ok(&id, "stat -c %U:%G /home/user/up/a.txt").await.trim(),
        "user:user"
    );

    // Multipart: two files named by their filenames, a field that is not `file` ignored.
    let (st, body) = c
        .upload_multipart(
            &id,
            &[],
            &[
                ("file", "/home/user/m/one", b"first"),
                ("other", "/home/user/m/ignored", b"x"),
                ("file", "m/two", b"second"),
            ],
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        json!([
            {"path": "/home/user/m/one", "name": "one", "type": "file"},
            {"path": "/home/user/m/two", "name": "two", "type": "file"}
        ])
    );
    assert_eq!(
        e.ok(&id, "cat m/one; echo; cat m/two; echo; ls m").await,
        "first\nsecond\none\ntwo\n"
    );
    // Multipart with `path`: the part goes there; two parts to one path are refused.
    let (st, body) = c
        .upload_multipart(&id, &[("path", "~/m/named")], &[("file", "whatever", b"3")])
        .await;
    assert_eq!(
        (st, body[0]["path"].as_str()),
        (200, Some("/home/user/m/named")),
        "{body}"
    );
    let (st, body) = c
        .upload_multipart(
            &id,
            &[],
            &[("file", "m/dup", b"1"), ("file", "/home/user/m/dup", b"2")],
        )
        .await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("same path"),
        "{body}"
    );

    // Gzip upload is decoded.
    let (st, body) = c
        .upload(
            &id,
            &[("path", "/home/user/gz.txt")],
            b"zipped text".to_vec(),
            true,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(e.ok(&id, "cat /home/user/gz.txt").await, "zipped text");

    // Download, plain and gzip; an encoding that cannot be served is 406.
    let (st, h, got) = c.download(&id, &[("path", "up/a.txt")], None).await;
    assert_eq!((st, got.as_slice()), (200, &b"hello"[..]));
    assert_eq!(h["content-type"], "application/octet-stream");
    assert!(h.get("content-encoding").is_none());
    let (st, h, got) = c
        .download(&id, &[("path", "/home/user/gz.txt")], Some("gzip"))
        .await;
    assert_eq!(st, 200);
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(gunzip(&got), b"zipped text");
    let (st, _, got) = c.download(&id, &[("path", "up/a.txt")], Some("br")).await;
    assert_eq!(st, 406, "{}", String::from_utf8_lossy(&got));

    // 1.5 MiB round trip, byte-exact, both ways and gzip.
    let big: Vec<u8> = (0..1_572_864u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (st, body) = c
        .upload(&id, &[("path", "big.bin")], big.clone(), false)
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(e.ok(&id, "wc -c < big.bin").await.trim(), "1572864");
    let (st, _, got) = c.download(&id, &[("path", "big.bin")], None).await;
    assert_eq!(st, 200);
    assert!(
        got == big,
        "the download differs from the upload ({} bytes)",
        got.len()
    );
    let (st, _, got) = c
        .download(&id, &[("path", "big.bin")], Some("gzip, deflate"))
        .await;
    assert_eq!(st, 200);
    assert!(gunzip(&got) == big, "the gzip download differs");
    let (st, body) = c
        .upload(&id, &[("path", "big2.bin")], big.clone(), true)
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        e.ok(&id, "cmp big.bin big2.bin && echo same").await.trim(),
        "same"
    );
    // Multipart past axum's default body limit (2 MB).
    let three: Vec<u8> = big.iter().chain(big.iter()).copied().collect();
    let (st, body) = c
        .upload_multipart(&id, &[("path", "big3.bin")], &[("file", "x", &three)])
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(e.ok(&id, "wc -c < big3.bin").await.trim(), "3145728");

    // A slow reader holds the reading process back (the server does not buffer the
    // file): 24 MiB, read a little, paused, then read to the end byte-exact.
    let huge: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let (st, body) = c
        .upload(&id, &[("path", "huge.bin")], huge.clone(), false)
        .await;
    assert_eq!(st, 200, "{body}");
    let mut resp = c
        .req(
            reqwest::Method::GET,
            &files_url(&[("path", "huge.bin")]),
            &id,
            true,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut got = resp.chunk().await.unwrap().unwrap().to_vec();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        e.ok(&id, &count_processes_cmd("read")).await.trim(),
        "1",
        "the reader waits for the client"
    );
    while let Some(c) = resp.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(
        got == huge,
        "the slow download differs ({} bytes)",
        got.len()
    );
    // A client that leaves part way stops the reader.
    let mut resp = c
        .req(
            reqwest::Method::GET,
            &files_url(&[("path", "huge.bin")]),
            &id,
            true,
        )
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap().unwrap();
    drop(resp);
    let mut left = String::new();
    for _ in 0..100 {
        left = e.ok(&id, &count_processes_cmd("read")).await;
        if left.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left.trim(),
        "0",
        "the reader is killed when the client leaves"
    );
    e.ok(&id, "rm huge.bin").await;

    // Bad inputs.
    let (st, _, got) = c.download(&id, &[("path", "/home/user/up")], None).await;
    let err: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!((st, err["code"].as_i64()), (400, Some(400)), "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("is a directory"),
        "{err}"
    );
    let (st, _, got) = c.download(&id, &[("path", "nope.txt")], None).await;
    assert_eq!(st, 404, "{}", String::from_utf8_lossy(&got));
    let (st, body) = c.upload(&id, &[], b"x".to_vec(), false).await;
    assert_eq!(st, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("path"), "{body}");
    let resp = c
        .req(
            reqwest::Method::POST,
            &files_url(&[("path", "x")]),
            &id,
            true,
        )
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = c
        .req(
            reqwest::Method::POST,
            &files_url(&[("path", "x")]),
            &id,
            true,
        )
        .header("Content-Type", "application/octet-stream")
        .header("Content-Encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let (st, body) = c.upload(&id, &[("path", "up")], b"x".to_vec(), false).await;
    assert_eq!(st, 400, "a directory is not overwritten: {body}");

    // Signed URLs stand in for the token: good, wrong, missing, expired; for upload too.
    let token = c.tokens.for_sandbox(&id);
    let signed = |path: &str, op: &str, exp: Option<i64>| url_signature(path, op, "", &token, exp);
    let get_signed = |q: Vec<(&'static str, String)>| {
        let r = c.req(reqwest::Method::GET, &files_url(&q), &id, false);
        async move {
            let resp = r.send().await.unwrap();
            (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
        }
    };
    let (st, got) = get_signed(vec![
        ("path", "up/a.txt".into()),
        ("signature", signed("up/a.txt", "read", None)),
    ])
    .await;
    assert_eq!((st, got.as_slice()), (200, &b"hello"[..]));
    let (st, _) = get_signed(vec![
        ("path", "up/a.txt".into()),
        ("signature", signed("other", "read", None)),
    ])
    .await;
    assert_eq!(st, 401);
    let (st, _) = get_signed(vec![
        ("path", "up/a.txt".into()),
        ("signature", signed("up/a.txt", "write", None)),
    ])
    .await;
    assert_eq!(st, 401);
    let (st, _) = get_signed(vec![("path", "up/a.txt".into())]).await;
    assert_eq!(st, 401);
    let later = quantbox_sandbox::Timestamp::now().unix_ms() / 1000 + 300;
    let (st, _) = get_signed(vec![
        ("path", "up/a.txt".into()),
        ("signature", signed("up/a.txt", "read", Some(later))),
        ("signature_expiration", later.to_string()),
    ])
    .await;
    assert_eq!(st, 200);
    let (st, _) = get_signed(vec![
        ("path", "up/a.txt".into()),
        ("signature", signed("up/a.txt", "read", Some(1_000))),
        ("signature_expiration", "1000".into()),
    ])
    .await;
    assert_eq!(st, 401, "expired");
    let resp = c
        .req(
            reqwest::Method::POST,
            &files_url(&[
                ("path", "signed.txt".to_owned()),
                ("signature", signed("signed.txt", "write", None)),
            ]),
            &id,
            false,
        )
        .header("Content-Type", "application/octet-stream")
        .body("by signature")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(e.ok(&id, "cat signed.txt").await, "by signature");

    // Tokens: missing on an RPC, wrong, or another sandbox's: 401.
    let resp = c
        .req(
            reqwest::Method::POST,
            "/filesystem.Filesystem/Stat",
            &id,
            false,
        )
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = c
        .req(
            reqwest::Method::GET,
            &files_url(&[("path", "up/a.txt")]),
            &id,
            false,
        )
        .header("X-Access-Token", "0".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = c
        .req(
            reqwest::Method::GET,
            &files_url(&[("path", "up/a.txt")]),
            &id,
            false,
        )
        .header("X-Access-Token", c.tokens.for_sandbox(&other))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // An unknown user is 401 too.
    let (st, _, _) = c
        .download(&id, &[("path", "up/a.txt"), ("username", "mallory")], None)
        .await;
    assert_eq!(st, 401);

    // The sandbox's permissions hold: root's private file is not the user's to read.
    e.ok_as(&id, "echo secret > /home/user/private; chmod 600 /home/user/private; chown root:root /home/user/private", "root")
        .await;
    let (st, _, got) = c.download(&id, &[("path", "private")], None).await;
    let err: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(st, 403, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{err}"
    );
    let (st, _, got) = c
        .download(
            &id,
            &[("path", "/home/user/private"), ("username", "root")],
            None,
        )
        .await;
    assert_eq!((st, got.as_slice()), (200, &b"secret\n"[..]));
    let (st, body) = c
        .upload(&id, &[("path", "/etc/passwd")], b"owned".to_vec(), false)
        .await;
    assert_eq!(st, 403, "{body}");
    assert!(
        e.ok(&id, "cat /etc/passwd").await.contains("root:"),
        "untouched"
    );

    // Symlinks resolve inside the sandbox: the sandbox's /etc/hostname, not the host's,
    // and a write through a link to /etc is the user's to make (so refused).
    e.ok(&id, "ln -s /etc/hostname ~/hn; ln -s /etc ~/etclink")
        .await;
    let (st, _, got) = c.download(&id, &[("path", "hn")], None).await;
    assert_eq!(st, 200);
    let inside = e.ok(&id, "cat /etc/hostname").await;
    assert_eq!(String::from_utf8_lossy(&got), inside);
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert_ne!(inside, host, "the sandbox's hostname file is its own");
    let (st, body) = c
        .upload(&id, &[("path", "etclink/evil")], b"x".to_vec(), false)
        .await;
    assert_eq!(st, 403, "{body}");
    assert!(!std::path::Path::new("/etc/evil").exists());

    // No space left: 507 (envd's status), the old file kept.
    let df = e
        .ok(&id, "dd if=/dev/zero of=/dev/shm/fill bs=1M count=100 2>/dev/null; df -k /dev/shm | tail -1")
        .await;
    assert!(df.contains("100%"), "/dev/shm is full: {df}");
    let (st, body) = c
        .upload(
            &id,
            &[("path", "/dev/shm/more")],
            vec![7u8; 256 * 1024],
            false,
        )
        .await;
    assert_eq!(st, 507, "{body}");
    assert_eq!(body["code"], 507);
    assert_eq!(
        e.ok(&id, "ls -A /dev/shm").await,
        "fill\n",
        "no temporary file left"
    );
    e.ok(&id, "rm /dev/shm/fill").await;

    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filesystem_service_lists_moves_and_watches() {
    if !require_root("the_filesystem_service_lists_moves_and_watches") {
        return;
    }
    let e = Engine::start().await;
    let (c, envd) = serve(&e).await;
    let id = e.create(json!({})).await;
    let other = e.create(json!({})).await;

    // MakeDir: made with parents; again → already_exists (the SDK's False).
    let (st, body) = c
        .rpc(&id, "MakeDir", json!({"path": "w/deep"}), Some(BASIC_USER))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(body["entry"]["path"], "/home/user/w/deep");
    assert_eq!(body["entry"]["owner"], "user");
    let (st, body) = c
        .rpc(&id, "MakeDir", json!({"path": "/home/user/w"}), None)
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (409, Some("already_exists")),
        "{body}"
    );

    e.ok(
        &id,
        "printf 12345 > ~/w/f.txt; ln -s /home/user/w/f.txt ~/w/link",
    )
    .await;

    // Stat: the protobuf JSON mapping (int64 as a string, enum names, RFC 3339).
    let (st, body) = c
        .rpc(&id, "Stat", json!({"path": "~/w/f.txt"}), Some(BASIC_USER))
        .await;
    assert_eq!(st, 200, "{body}");
    let f = &body["entry"];
    assert_eq!(f["name"], "f.txt");
    assert_eq!(f["type"], "FILE_TYPE_FILE");
    assert_eq!(f["size"], "5");
    assert_eq!(f["mode"], 0o644);
    assert_eq!(f["permissions"], "-rw-r--r--");
    assert_eq!(
        (f["owner"].as_str(), f["group"].as_str()),
        (Some("user"), Some("user"))
    );
    assert!(
        quantbox_sandbox::Timestamp::parse_rfc3339(f["modifiedTime"].as_str().unwrap()).is_some()
    );
    assert!(f.get("symlinkTarget").is_none());
    let (_, body) = c.rpc(&id, "Stat", json!({"path": "w/link"}), None).await;
    let l = &body["entry"];
    assert_eq!(
        (l["type"].as_str(), l["isSymlink"].as_bool()),
        (Some("FILE_TYPE_SYMLINK"), Some(true))
    );
    assert_eq!(l["symlinkTarget"], "/home/user/w/f.txt");
    let (st, body) = c.rpc(&id, "Stat", json!({"path": "w/none"}), None).await;
    assert_eq!(
        (st, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // ListDir with depth, proto names accepted, default values left out.
    let (st, body) = c
        .rpc(&id, "ListDir", json!({"path": "w", "depth": 1}), None)
        .await;
    assert_eq!(st, 200, "{body}");
    let names = |b: &Value| -> Vec<String> {
        b["entries"].as_array().map_or(vec![], |a| {
            a.iter()
                .map(|e| e["path"].as_str().unwrap().to_owned())
                .collect()
        })
    };
    assert_eq!(
        names(&body),
        [
            "/home/user/w/deep",
            "/home/user/w/f.txt",
            "/home/user/w/link"
        ]
    );
    let (_, body) = c
        .rpc(
            &id,
            "ListDir",
            json!({"path": "/home/user", "depth": "2"}),
            None,
        )
        .await;
    assert!(
        names(&body).contains(&"/home/user/w/deep".to_owned()),
        "{body}"
    );
    let (st, body) = c.rpc(&id, "ListDir", json!({"path": "w/deep"}), None).await;
    assert_eq!((st, &body), (200, &json!({})), "an empty list is left out");
    let (st, body) = c
        .rpc(&id, "ListDir", json!({"path": "w/f.txt"}), None)
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );

    // Users: root may list /root, the user may not; an unknown user is unauthenticated.
    let (st, body) = c
        .rpc(&id, "ListDir", json!({"path": "/root"}), Some(BASIC_USER))
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (403, Some("permission_denied")),
        "{body}"
    );
    let (st, body) = c
        .rpc(&id, "ListDir", json!({"path": "/root"}), Some(BASIC_ROOT))
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = c
        .rpc(
            &id,
            "Stat",
            json!({"path": "~"}),
            Some("Basic bWFsbG9yeTo="),
        )
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );

    // Move: parents made, the entry at its new place; a missing source is not_found.
    let (st, body) = c
        .rpc(
            &id,
            "Move",
            json!({"source": "w/f.txt", "destination": "w/moved/g.txt"}),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["entry"]["path"], "/home/user/w/moved/g.txt");
    assert_eq!(e.ok(&id, "cat ~/w/moved/g.txt").await, "12345");
    let (st, body) = c
        .rpc(
            &id,
            "Move",
            json!({"source": "w/f.txt", "destination": "w/x"}),
            None,
        )
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // Remove: a symlink goes, never its target; a tree goes whole.
    e.ok(
        &id,
        "mkdir -p ~/keep && echo k > ~/keep/k && ln -s /home/user/keep ~/w/keeplink",
    )
    .await;
    let (st, body) = c.rpc(&id, "Remove", json!({"path": "w"}), None).await;
    assert_eq!((st, &body), (200, &json!({})));
    assert_eq!(
        e.ok(&id, "cat ~/keep/k; test -e ~/w || echo gone").await,
        "k\ngone\n"
    );

    // Bad requests.
    let resp = c
        .req(
            reqwest::Method::POST,
            "/filesystem.Filesystem/Stat",
            &id,
            true,
        )
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], "invalid_argument");
    let (st, body) = c.rpc(&id, "ListDir", json!({"depth": -1}), None).await;
    assert_eq!(st, 400, "{body}");

    // WatchDir: start first, then events for what happens afterwards; the watch process
    // goes when the client does.
    e.ok(&id, "mkdir -p ~/wd").await;
    let mut resp = c
        .watch_dir(
            &id,
            json!({"path": "/home/user/wd", "recursive": false}),
            None,
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/connect+json");
    let mut dec = connect::Decoder::new();
    let mut seen = Vec::new();
    read_stream(&mut resp, &mut dec, &mut seen, |s| !s.is_empty()).await;
    assert_eq!(seen[0], json!({"start": {}}));
    e.sh(&id, "echo x > /home/user/wd/a").await;
    read_stream(&mut resp, &mut dec, &mut seen, |s| {
        s.iter()
            .any(|m| m["filesystem"]["type"] == "EVENT_TYPE_WRITE")
    })
    .await;
    let fs_events: Vec<&Value> = seen
        .iter()
        .filter(|m| m.get("filesystem").is_some())
        .collect();
    assert_eq!(
        fs_events[0]["filesystem"],
        json!({"name": "a", "type": "EVENT_TYPE_CREATE"})
    );
    // Keepalives come at the asked interval (1 s here).
    read_stream(&mut resp, &mut dec, &mut seen, |s| {
        s.iter().any(|m| m.get("keepalive").is_some())
    })
    .await;
    assert_eq!(e.ok(&id, &count_watch_processes_cmd()).await.trim(), "1");
    drop(resp);
    let mut left = String::new();
    for _ in 0..100 {
        left = e.ok(&id, &count_watch_processes_cmd()).await;
        if left.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left.trim(),
        "0",
        "the watch process is killed when the client leaves"
    );

    // The deadline ends the stream with deadline_exceeded and the process with it.
    let mut resp = c
        .watch_dir(
            &id,
            json!({"path": "wd", "include_entry": true}),
            Some(1500),
        )
        .await;
    let mut dec = connect::Decoder::new();
    let mut seen = Vec::new();
    read_stream(&mut resp, &mut dec, &mut seen, |s| !s.is_empty()).await;
    e.sh(&id, "echo y > /home/user/wd/b").await;
    read_stream(&mut resp, &mut dec, &mut seen, |s| {
        s.iter().any(|m| m.get("__end").is_some())
    })
    .await;
    let b = seen
        .iter()
        .find(|m| m["filesystem"]["name"] == "b")
        .unwrap_or_else(|| panic!("no event for b: {seen:?}"));
    assert_eq!(
        b["filesystem"]["entry"]["path"], "/home/user/wd/b",
        "include_entry (snake case) honoured"
    );
    let end = &seen.last().unwrap()["__end"];
    assert_eq!(end["error"]["code"], "deadline_exceeded", "{end}");
    let mut left = String::new();
    for _ in 0..100 {
        left = e.ok(&id, &count_watch_processes_cmd()).await;
        if left.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left.trim(),
        "0",
        "the watch process is killed at the deadline"
    );

    // A watch that cannot start is a plain Connect error.
    let resp = c
        .watch_dir(&id, json!({"path": "/home/user/nowhere"}), None)
        .await;
    assert_eq!(resp.status().as_u16(), 404);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], "not_found");

    // Polling watchers: events between polls, recursive into new directories; removed
    // on RemoveWatcher; another sandbox cannot read them.
    let (st, body) = c
        .rpc(
            &id,
            "CreateWatcher",
            json!({"path": "wd", "recursive": true}),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let wid = body["watcherId"].as_str().unwrap().to_owned();
    e.sh(
        &id,
        "mkdir /home/user/wd/sub && sleep 0.3 && echo z > /home/user/wd/sub/c",
    )
    .await;
    let mut events: Vec<Value> = Vec::new();
    for _ in 0..100 {
        let (st, body) = c
            .rpc(&id, "GetWatcherEvents", json!({"watcherId": wid}), None)
            .await;
        assert_eq!(st, 200, "{body}");
        events.extend(body["events"].as_array().cloned().unwrap_or_default());
        if events
            .iter()
            .any(|e| e["name"] == "sub/c" && e["type"] == "EVENT_TYPE_WRITE")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pairs: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        pairs.contains(&("sub".into(), "EVENT_TYPE_CREATE".into())),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&("sub/c".into(), "EVENT_TYPE_CREATE".into())),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&("sub/c".into(), "EVENT_TYPE_WRITE".into())),
        "{pairs:?}"
    );
    let (st, _) = c
        .rpc(&other, "GetWatcherEvents", json!({"watcher_id": wid}), None)
        .await;
    assert_eq!(st, 404, "another sandbox's watcher is not found");
    let (st, body) = c
        .rpc(&id, "RemoveWatcher", json!({"watcher_id": wid}), None)
        .await;
    assert_eq!((st, &body), (200, &json!({})));
    let (st, _) = c
        .rpc(&id, "GetWatcherEvents", json!({"watcherId": wid}), None)
        .await;
    assert_eq!(st, 404);
    let mut left = String::new();
    for _ in 0..100 {
        left = e.ok(&id, &count_watch_processes_cmd()).await;
        if left.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left.trim(), "0", "RemoveWatcher stops the process");

    // A sandbox that stops takes its watchers with it.
    let (st, body) = c
        .rpc(&other, "CreateWatcher", json!({"path": "~"}), None)
        .await;
    assert_eq!(st, 200, "{body}");
    let other_sid = quantbox_sandbox::SandboxId::parse(&other).unwrap();
    assert_eq!(envd.watchers.count(&other_sid), 1);
    e.terminate(&other).await;
    assert!(
        eventually(Duration::from_secs(15), || envd.watchers.count(&other_sid)
            == 0)
        .await,
        "the stopped sandbox's watcher is gone"
    );

    e.shutdown().await;
}
