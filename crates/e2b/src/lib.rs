//! E2B compatibility for quantbox, both directions (`docs/e2b.md`):
//!
//! - **serving** E2B's API over quantbox's own sandboxes, so E2B's SDKs work unchanged
//!   against `quantbox serve` ([`router`]): [`server`] is the control plane (create, list,
//!   details, timeouts, pause/connect, kill, metrics, logs) and [`envd`] the in-sandbox
//!   daemon's HTTP endpoints and Connect services (processes, files), both thin front ends
//!   over the operations layer and the one sandbox manager; [`inside`] is the part of the
//!   file service that runs inside a sandbox (`quantbox envd-fs`);
//! - **calling** E2B's cloud: [`client`] speaks the v2 control plane and envd as E2B's SDKs
//!   do (settings from `E2B_*`, retries, idempotent creates, E2B's errors), and
//!   [`provider`] is provider `e2b` over it.
//!
//! Shared by both: [`connect`] (the Connect protocol with the JSON codec), [`model`] (the
//! control plane's bodies with E2B's names, defaults and paging rules) and [`ids`] (E2B's
//! ids, hosts, routing headers and key forms).

pub mod client;
pub mod connect;
pub mod envd;
pub mod ids;
pub mod inside;
pub mod model;
pub mod provider;
pub mod server;

/// Everything quantbox serves on its E2B port: envd for requests routed to a sandbox (an
/// `E2b-Sandbox-Id` header or a `{port}-{sandboxID}.{domain}` host), the control plane
/// for the rest. `wrap` is applied to both (e.g. a latency layer that reads the matched
/// route).
pub fn router(
    ops: quantbox_ops::Ops,
    api_keys: server::ApiKeys,
    tokens: std::sync::Arc<envd::AccessTokens>,
    wrap: impl Fn(axum::Router) -> axum::Router,
) -> axum::Router {
    use tower::ServiceExt as _;
    let envd = wrap(envd::router(envd::Envd::new(ops.clone(), tokens.clone())));
    let control = wrap(server::control_router(ops, api_keys, tokens));
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let to_envd = envd::sandbox_of(req.headers()).is_some();
        let svc = if to_envd {
            envd.clone()
        } else {
            control.clone()
        };
        async move { svc.oneshot(req).await }
    })
}
