//! `quantbox serve` and `quantbox mcp`: start the engine and put the front ends on it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::middleware;
use axum::serve::ListenerExt as _;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use quantbox_e2b::envd::AccessTokens;
use quantbox_e2b::server::ApiKeys;

use crate::app::{App, EngineConfig};
use crate::mcp::McpServer;
use crate::rest::{self, RestState};

fn api_key() -> Option<String> {
    std::env::var("QUANTBOX_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
}

/// The keys E2B's control plane accepts: `QUANTBOX_E2B_API_KEY` (comma-separated) if set,
/// else `QUANTBOX_API_KEY`, else — on loopback only — any key of E2B's form.
fn e2b_api_keys(listen: SocketAddr, quantbox_key: Option<&String>) -> Result<ApiKeys> {
    let keys: Vec<String> = std::env::var("QUANTBOX_E2B_API_KEY")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !keys.is_empty() {
        return Ok(ApiKeys::Only(keys));
    }
    if let Some(k) = quantbox_key {
        return Ok(ApiKeys::Only(vec![k.clone()]));
    }
    if !listen.ip().is_loopback() {
        bail!(
            "--e2b-listen {listen} is reachable beyond this machine: set QUANTBOX_E2B_API_KEY (or QUANTBOX_API_KEY) so that E2B's API requires it (or listen on 127.0.0.1, or `off`)"
        );
    }
    Ok(ApiKeys::AnyWellFormed)
}

pub async fn serve(
    listen: SocketAddr,
    e2b_listen: Option<SocketAddr>,
    cfg: EngineConfig,
) -> Result<()> {
    let key = api_key();
    if !listen.ip().is_loopback() && key.is_none() {
        bail!(
            "--listen {listen} is reachable beyond this machine: set QUANTBOX_API_KEY so that REST and MCP require it (or listen on 127.0.0.1)"
        );
    }
    let e2b_keys = match e2b_listen {
        Some(a) => {
            let keys = e2b_api_keys(a, key.as_ref())?;
            // The secret envd access tokens derive from; made once per data directory.
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
            let path = cfg.data_dir.join("e2b-token.key");
            let tokens = AccessTokens::load_or_create(&path)
                .with_context(|| format!("reading the envd token secret {}", path.display()))?;
            Some((keys, tokens))
        }
        None => None,
    };
    let stop_signal = stop_signal();
    // Listen first: a taken or unusable address fails before any sandbox is started.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("listening on {listen}"))?;
    let e2b_listener = match e2b_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("listening on {a} (--e2b-listen; `off` disables it)"))?;
            let local = l
                .local_addr()
                .with_context(|| format!("listening on {a}"))?;
            Some((l, local))
        }
        None => None,
    };
    let app = App::open(&cfg).await?;
    let shutdown = CancellationToken::new();
    let mut mcp_cfg =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    if !listen.ip().is_loopback() {
        // Clients reach a public listener under names we cannot know; the API key is
        // what protects it.
        mcp_cfg = mcp_cfg.disable_allowed_hosts();
    }
    let ops = app.ops.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(McpServer::new(ops.clone(), "http")),
        Arc::new(LocalSessionManager::default()),
        mcp_cfg,
    );
    let key = Arc::new(key);
    let router = rest::router(RestState {
        ops: app.ops.clone(),
    })
    .nest_service("/mcp", mcp);
    let router =
        rest::timed(router, &app.ops).layer(middleware::from_fn(move |headers, req, next| {
            rest::require_key(key.clone(), headers, req, next)
        }));
    // One write for every line: a client that reads the first line and closes the pipe
    // never makes a later print fail.
    let mut e2b_line = String::new();
    let e2b_served = match (e2b_listener, e2b_keys) {
        (Some((l, local)), Some((keys, tokens))) => {
            let ops = app.ops.clone();
            let router = quantbox_e2b::router(app.ops.clone(), keys, Arc::new(tokens), |r| {
                rest::timed(r, &ops)
            });
            e2b_line = format!(
                "quantbox E2B API on http://{local} (set E2B_API_URL and E2B_SANDBOX_URL to it for E2B's SDKs)\n"
            );
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(l.tap_io(no_delay), router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        _ => None,
    };
    print!(
        "quantbox {} serving on http://{addr} (REST /api/v1, MCP /mcp, Prometheus /metrics); data in {}\n{e2b_line}",
        env!("CARGO_PKG_VERSION"),
        app.data_dir.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop_signal.await;
        tracing::info!(
            "stopping; running sandboxes keep running and are adopted at the next start"
        );
        stop.cancel();
    });
    let until = shutdown.clone();
    let served = axum::serve(listener.tap_io(no_delay), router)
        .with_graceful_shutdown(async move { until.cancelled().await })
        .await
        .context("serving HTTP");
    // Streams still open on the E2B port (command output) end with the engine.
    shutdown.cancel();
    if let Some(t) = e2b_served {
        t.abort();
    }
    // Whatever ended the serving, the warm pool is drained.
    app.stop().await;
    served
}

/// Small responses and stream messages leave at once: without it, a request answered in
/// pieces (a command's streamed output) waits out the peer's delayed ACK (40 ms).
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY: {e}");
    }
}

/// Installs the SIGTERM and SIGINT handlers at once and returns what completes on the
/// first of them. Installed before the engine starts: a signal that comes early (while
/// the warm pool fills, say) then stops the server cleanly instead of killing it with a
/// sandbox half made.
fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}

/// MCP over stdin/stdout. Nothing but the protocol is written to stdout.
pub async fn mcp_stdio(cfg: EngineConfig) -> Result<()> {
    let stop_signal = stop_signal();
    let app = App::open(&cfg).await?;
    let session = async {
        let service = McpServer::new(app.ops.clone(), "stdio")
            .serve(rmcp::transport::stdio())
            .await
            .context("starting MCP over stdio")?;
        service.waiting().await.context("serving MCP over stdio")?;
        anyhow::Ok(())
    };
    let served = tokio::select! {
        r = session => r,
        () = stop_signal => {
            tracing::info!("stopping; running sandboxes keep running and are adopted at the next start");
            Ok(())
        }
    };
    // Whatever ended the session (its end, a client gone before initializing, a signal),
    // the warm pool is drained.
    app.stop().await;
    served
}
