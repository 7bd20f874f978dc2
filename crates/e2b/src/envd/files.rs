//! envd's plain-HTTP file transfer: `GET /files` (download) and `POST /files` (upload).
//!
//! Why this module exists: E2B's SDKs read and write whole files over these two routes
//! rather than over Connect (e2b-compat.md §2.2), and `download_url`/`upload_url` hand out
//! signed URLs to them that work without the access token. The bytes are moved by
//! `quantbox envd-fs read|write` run inside the sandbox as the requesting user
//! ([`crate::inside`], started through [`super::filesystem::Inside`]): a download streams
//! the process's stdout into the response body (gzip-compressed when the client accepts
//! it), an upload is handed to the process's stdin.
//!
//! Access: with a valid `X-Access-Token` (checked by `authorize`), or else with a valid,
//! unexpired URL signature for the same path, operation and user (401 otherwise). The
//! `username` query parameter, when given, is the user the operation runs as.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read as _, Write as _};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use quantbox_sandbox::ExecUser;
use serde::Deserialize;
use serde_json::{Value, json};

use super::filesystem::{Failure, Inside};
use super::{Call, Envd, eq_constant_time, http_error, parse_user, url_signature};
use crate::inside::{Answer, EntryInfo, Op, ReadHeader};

/// Largest upload accepted, after gzip decoding too: 1 GiB. The whole body is held in
/// memory (it goes to the in-sandbox writer as its stdin), so this bounds the server's
/// memory per upload; axum's default limit (2 MB) is raised to it for this route.
pub const UPLOAD_LIMIT: usize = 1 << 30;

/// How long one download or upload may take inside the sandbox. A download is also
/// stopped when its client goes away.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// `GET /files` and `POST /files`, with the raised body limit.
pub fn routes() -> Router<Envd> {
    Router::new().route(
        "/files",
        get(download)
            .post(upload)
            .layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
    )
}

#[derive(Deserialize, Default)]
struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<String>,
}

/// Checks the URL signature when the access token was not given, and picks the user.
#[allow(clippy::result_large_err)]
fn authorize(call: &Call, q: &FilesQuery, operation: &str) -> Result<ExecUser, Response> {
    if !call.token_ok {
        let Some(signature) = q.signature.as_deref() else {
            return Err(http_error(
                401,
                "missing signature query parameter: give X-Access-Token or a signed URL",
            ));
        };
        let expiration = match q.signature_expiration.as_deref() {
            None => None,
            Some(s) => match s.trim().parse::<i64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    return Err(http_error(
                        400,
                        format!("signature_expiration {s:?} is not a unix time in seconds"),
                    ));
                }
            },
        };
        let want = url_signature(
            q.path.as_deref().unwrap_or(""),
            operation,
            q.username.as_deref().unwrap_or(""),
            &call.access_token,
            expiration,
        );
        if !eq_constant_time(&want, signature) {
            return Err(http_error(401, "invalid signature"));
        }
        if let Some(exp) = expiration
            && exp < quantbox_sandbox::Timestamp::now().unix_ms() / 1000
        {
            return Err(http_error(401, "signature is already expired"));
        }
    }
    match q.username.as_deref() {
        None | Some("") => Ok(call.user),
        Some(name) => parse_user(name).ok_or_else(|| {
            http_error(
                401,
                format!(
                    "error looking up user '{name}': this sandbox has the users \"user\" and \"root\""
                ),
            )
        }),
    }
}

#[allow(clippy::result_large_err)]
fn query(
    q: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<FilesQuery, Response> {
    q.map(|Query(q)| q)
        .map_err(|e| http_error(400, format!("invalid query: {e}")))
}

/// What `Accept-Encoding` lets the download be: gzip (`true`) or as is (`false`); an
/// error when it names only encodings other than gzip and identity.
fn accept_gzip(headers: &HeaderMap) -> Result<bool, String> {
    let Some(v) = headers.get(header::ACCEPT_ENCODING) else {
        return Ok(false);
    };
    let v = v
        .to_str()
        .map_err(|_| "unreadable Accept-Encoding".to_owned())?;
    if v.trim().is_empty() {
        return Ok(false);
    }
    let mut listed: Vec<(String, f32)> = v
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let mut it = part.split(';');
            let name = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .find_map(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .or_else(|| p.strip_prefix("Q="))
                        .and_then(|q| q.trim().parse::<f32>().ok())
                })
                .unwrap_or(1.0);
            (name, q)
        })
        .collect();
    listed.sort_by(|a, b| b.1.total_cmp(&a.1));
    let identity_refused = listed
        .iter()
        .any(|(n, q)| (n == "identity" || n == "*") && *q == 0.0)
        && !listed.iter().any(|(n, q)| n == "identity" && *q > 0.0);
    for (name, q) in &listed {
        if *q == 0.0 {
            continue;
        }
        match name.as_str() {
            "gzip" | "x-gzip" => return Ok(true),
            "identity" => return Ok(false),
            "*" => return Ok(identity_refused),
            _ => {}
        }
    }
    Err(format!(
        "no acceptable encoding in Accept-Encoding {v:?}: supported are gzip and identity"
    ))
}

/// `GET /files?path=`: the file's bytes as they are read inside the sandbox.
async fn download(
    State(envd): State<Envd>,
    axum::Extension(call): axum::Extension<Call>,
    headers: HeaderMap,
    q: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let user = match authorize(&call, &q, "read") {
        Ok(u) => u,
        Err(r) => return r,
    };
    let gzip = match accept_gzip(&headers) {
        Ok(g) => g,
        Err(msg) => return http_error(406, msg),
    };
    let op = Op::Read {
        path: q.path.unwrap_or_default(),
    };
    let mut run = Inside::start(
        &envd,
        &call.sandbox_id,
        user,
        &op,
        None,
        TRANSFER_TIMEOUT,
        true,
    );
    let Some((line, rest)) = run.first_line().await else {
        run.kill();
        let f = run
            .wait(&[])
            .await
            .err()
            .unwrap_or_else(|| Failure::Broken("the read ended before its header".into()));
        return f.http();
    };
    match serde_json::from_slice::<Answer<ReadHeader>>(&line) {
        Ok(Answer::Ok(_)) => {}
        Ok(Answer::Error(e)) => return Failure::Fs(e).http(),
        Err(e) => {
            return Failure::Broken(format!("unreadable answer from inside the sandbox: {e}"))
                .http();
        }
    }
    let body = Body::from_stream(body_stream(run, rest, gzip));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::VARY,
        header::HeaderValue::from_static("Accept-Encoding"),
    );
    if gzip {
        h.insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    resp
}

/// The download body: the process's stdout after its header, gzip-compressed or not.
/// A process that fails part way ends the body with an error (the client sees a cut
/// transfer, never a short file that looks whole); a client that leaves kills it.
fn body_stream(
    run: Inside,
    first: Bytes,
    gzip: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    struct St {
        run: Inside,
        first: Option<Bytes>,
        gz: Option<flate2::write::GzEncoder<Vec<u8>>>,
        over: bool,
    }
    let st = St {
        run,
        first: Some(first),
        gz: gzip.then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())),
        over: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.over {
                return None;
            }
            let chunk = match st.first.take() {
                Some(c) => Some(c),
                None => st.run.recv().await,
            };
            match chunk {
                Some(c) if c.is_empty() => continue,
                Some(c) => match &mut st.gz {
                    None => return Some((Ok(c), st)),
                    Some(gz) => {
                        if let Err(e) = gz.write_all(&c) {
                            st.over = true;
                            return Some((Err(e), st));
                        }
                        let out = std::mem::take(gz.get_mut());
                        if out.is_empty() {
                            continue;
                        }
                        return Some((Ok(Bytes::from(out)), st));
                    }
                },
                None => {
                    st.over = true;
                    if let Err(f) = st.run.wait(&[]).await {
                        let msg = f.message();
                        return Some((Err(std::io::Error::other(msg)), st));
                    }
                    return match st.gz.take() {
                        None => None,
                        Some(gz) => match gz.finish() {
                            Ok(tail) => Some((Ok(Bytes::from(tail)), st)),
                            Err(e) => Some((Err(e), st)),
                        },
                    };
                }
            }
        }
    })
}

/// `X-Metadata-<key>: <value>` headers: keys lowercased, values printable ASCII.
#[allow(clippy::result_large_err)]
fn metadata(headers: &HeaderMap) -> Result<BTreeMap<String, String>, Response> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("x-metadata-") else {
            continue;
        };
        if key.is_empty() {
            return Err(http_error(
                400,
                "empty metadata key in an X-Metadata- header",
            ));
        }
        let v = value
            .to_str()
            .ok()
            .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or_else(|| {
                http_error(
                    400,
                    format!("metadata value of {key:?} must be printable US-ASCII"),
                )
            })?;
        out.insert(key.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Decodes a gzip request body (`Content-Encoding: gzip`), within [`UPLOAD_LIMIT`].
#[allow(clippy::result_large_err)]
fn gunzip(body: &[u8]) -> Result<Vec<u8>, Response> {
    let mut out = Vec::new();
    let mut d = flate2::read::MultiGzDecoder::new(body).take(UPLOAD_LIMIT as u64 + 1);
    d.read_to_end(&mut out)
        .map_err(|e| http_error(400, format!("error decompressing request body: {e}")))?;
    if out.len() > UPLOAD_LIMIT {
        return Err(too_large());
    }
    Ok(out)
}

fn too_large() -> Response {
    http_error(
        413,
        format!("the upload is larger than {} MiB", UPLOAD_LIMIT >> 20),
    )
}

/// Writes one file inside the sandbox; its `{"path", "name", "type": "file"}` answer.
async fn write_one(
    envd: &Envd,
    call: &Call,
    user: ExecUser,
    path: String,
    data: Vec<u8>,
    meta: &BTreeMap<String, String>,
) -> Result<Value, Response> {
    let op = Op::Write {
        path,
        metadata: meta.clone(),
    };
    let e: EntryInfo = Inside::run(
        envd,
        &call.sandbox_id,
        user,
        &op,
        Some(data),
        TRANSFER_TIMEOUT,
    )
    .await
    .map_err(|f| f.http())?;
    let mut v = json!({"path": e.path, "name": e.name, "type": "file"});
    if !e.metadata.is_empty() {
        v["metadata"] = json!(e.metadata);
    }
    Ok(v)
}

/// `POST /files`: multipart/form-data (each `file` part is a file; its filename is the
/// target path unless `path` is given) or application/octet-stream (needs `path`);
/// `Content-Encoding: gzip` is decoded. Answers the written files.
async fn upload(
    State(envd): State<Envd>,
    axum::Extension(call): axum::Extension<Call>,
    q: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let user = match authorize(&call, &q, "write") {
        Ok(u) => u,
        Err(r) => return r,
    };
    let headers = req.headers();
    let meta = match metadata(headers) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str()) {
        None => false,
        Some(Ok(v)) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => false,
            "gzip" | "x-gzip" => true,
            other => {
                return http_error(
                    400,
                    format!("unsupported Content-Encoding: {other}, supported: gzip"),
                );
            }
        },
        Some(Err(_)) => return http_error(400, "unreadable Content-Encoding"),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_multipart = media.starts_with("multipart/");
    if media != "application/octet-stream" && !is_multipart {
        return http_error(
            400,
            format!(
                "unsupported content type: {content_type:?}, expected multipart/form-data or application/octet-stream"
            ),
        );
    }
    if !is_multipart && q.path.is_none() {
        return http_error(400, "path query parameter is required for raw body upload");
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, UPLOAD_LIMIT).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let bytes = if gzip {
        match gunzip(&bytes) {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        bytes.to_vec()
    };
    let mut written = Vec::new();
    if !is_multipart {
        let path = q.path.clone().unwrap_or_default();
        match write_one(&envd, &call, user, path, bytes, &meta).await {
            Ok(v) => written.push(v),
            Err(r) => return r,
        }
        return axum::Json(written).into_response();
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut form = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => return http_error(400, format!("error parsing multipart form: {e}")),
    };
    // Home of the user, to see two parts aimed at the same file before writing either.
    let home = match user {
        ExecUser::Root => "/root",
        ExecUser::User => "/home/user",
    };
    let mut seen = HashSet::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return http_error(400, format!("error reading form: {e}")),
        };
        if field.name() != Some("file") {
            continue;
        }
        let path = match (&q.path, field.file_name()) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) if !f.is_empty() => f.to_owned(),
            _ => {
                return http_error(
                    400,
                    "a file part has no filename and no path query parameter names its target",
                );
            }
        };
        let key = crate::inside::resolve_path(&path, std::path::Path::new(home))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| path.clone());
        if !seen.insert(key.clone()) {
            return http_error(
                400,
                format!(
                    "you cannot upload multiple files to the same path '{key}' in one upload request"
                ),
            );
        }
        let data = match field.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return http_error(400, format!("error reading form: {e}")),
        };
        match write_one(&envd, &call, user, path, data, &meta).await {
            Ok(v) => written.push(v),
            Err(r) => return r,
        }
    }
    axum::Json(written).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(v: &str) -> Result<bool, String> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
        accept_gzip(&h)
    }

    #[test]
    fn accept_encoding_picks_gzip_identity_or_nothing() {
        assert_eq!(accept_gzip(&HeaderMap::new()), Ok(false));
        assert_eq!(ae("gzip"), Ok(true));
        assert_eq!(ae("gzip, deflate, br"), Ok(true));
        assert_eq!(ae("br;q=1.0, gzip;q=0.5"), Ok(true));
        assert_eq!(ae("identity"), Ok(false));
        assert_eq!(ae("identity, gzip;q=0.1"), Ok(false));
        assert_eq!(ae("gzip;q=0, identity"), Ok(false));
        assert_eq!(ae("*"), Ok(false));
        assert_eq!(ae("*, identity;q=0"), Ok(true));
        assert!(ae("br").is_err());
        assert!(ae("deflate, zstd").is_err());
        assert!(ae("gzip;q=0").is_err());
    }

    #[test]
    fn signatures_are_checked_for_path_operation_user_and_expiry() {
        let token = "t0k";
        let call = Call {
            sandbox_id: quantbox_sandbox::SandboxId::parse("abcdefghij0123456789").unwrap(),
            user: ExecUser::User,
            token_ok: false,
            access_token: token.into(),
        };
        let q =
            |path: &str, user: Option<&str>, sig: Option<String>, exp: Option<i64>| FilesQuery {
                path: Some(path.into()),
                username: user.map(str::to_owned),
                signature: sig,
                signature_expiration: exp.map(|e| e.to_string()),
            };
        let status = |r: Result<ExecUser, Response>| r.map_err(|r| r.status().as_u16());
        let good = url_signature("/f", "read", "", token, None);
        assert_eq!(
            status(authorize(
                &call,
                &q("/f", None, Some(good.clone()), None),
                "read"
            )),
            Ok(ExecUser::User)
        );
        assert_eq!(
            status(authorize(
                &call,
                &q("/f", None, Some(good.clone()), None),
                "write"
            )),
            Err(401)
        );
        assert_eq!(
            status(authorize(&call, &q("/g", None, Some(good), None), "read")),
            Err(401)
        );
        assert_eq!(
            status(authorize(&call, &q("/f", None, None, None), "read")),
            Err(401)
        );
        let root = url_signature("/f", "read", "root", token, None);
        assert_eq!(
            status(authorize(
                &call,
                &q("/f", Some("root"), Some(root), None),
                "read"
            )),
            Ok(ExecUser::Root)
        );
        let later = quantbox_sandbox::Timestamp::now().unix_ms() / 1000 + 60;
        let s = url_signature("/f", "read", "", token, Some(later));
        assert_eq!(
            status(authorize(
                &call,
                &q("/f", None, Some(s), Some(later)),
                "read"
            )),
            Ok(ExecUser::User)
        );
        let s = url_signature("/f", "read", "", token, Some(1000));
        assert_eq!(
            status(authorize(
                &call,
                &q("/f", None, Some(s), Some(1000)),
                "read"
            )),
            Err(401)
        );
        let with_token = Call {
            token_ok: true,
            ..call
        };
        assert_eq!(
            status(authorize(
                &with_token,
                &q("/f", Some("nobody"), None, None),
                "read"
            )),
            Err(401)
        );
        assert_eq!(
            status(authorize(
                &with_token,
                &q("/f", Some(""), None, None),
                "read"
            )),
            Ok(ExecUser::User)
        );
    }
}
