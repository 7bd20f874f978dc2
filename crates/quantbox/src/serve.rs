//! `quantbox serve` and `quantbox mcp`: start the engine and put the front ends on it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::middleware;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::app::{App, EngineConfig};
use crate::mcp::McpServer;
use crate::rest::{self, RestState};

fn api_key() -> Option<String> {
    std::env::var("QUANTBOX_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
}

pub async fn serve(listen: SocketAddr, cfg: EngineConfig) -> Result<()> {
    let key = api_key();
    if !listen.ip().is_loopback() && key.is_none() {
        bail!(
            "--listen {listen} is reachable beyond this machine: set QUANTBOX_API_KEY so that REST and MCP require it (or listen on 127.0.0.1)"
        );
    }
    let stop_signal = stop_signal();
    // Listen first: a taken or unusable address fails before any sandbox is started.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("listening on {listen}"))?;
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
    println!(
        "quantbox {} serving on http://{addr} (REST /api/v1, MCP /mcp, Prometheus /metrics); data in {}",
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
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving HTTP");
    // Whatever ended the serving, the warm pool is drained.
    app.stop().await;
    served
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
