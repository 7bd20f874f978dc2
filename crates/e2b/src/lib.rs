//! E2B compatibility for quantbox.
//!
//! This crate will hold both directions of quantbox's E2B support (see
//! `shared/spec/e2b-compat.md`): the E2B client (provider `e2b`, running sandboxes in E2B's
//! cloud) and the E2B-compatible server routes (E2B's control-plane REST API and envd's
//! Connect-RPC services over quantbox's local sandboxes, so E2B's own SDKs work against
//! quantbox).
//!
//! What is here so far is the transport-free groundwork both need:
//! - [`connect`]: the Connect protocol with the JSON codec — codes and their HTTP statuses,
//!   unary error bodies, the streaming envelope encoder and an incremental decoder;
//! - [`model`]: the control plane's request and response bodies, with E2B's field names,
//!   defaults and paging rules;
//! - [`ids`]: E2B's conventions for sandbox ids, envd hosts and routing headers, API keys,
//!   idempotency keys and template references;
//! - [`server`]: the first control-plane routes over the operations layer (health, create
//!   v1/v2, details, lists with filters and paging, timeout, pause, connect, kill), not yet mounted by
//!   `quantbox serve`.
//!
//! Only [`server`] touches the network (as an axum router someone else serves).

pub mod connect;
pub mod ids;
pub mod model;
pub mod server;
