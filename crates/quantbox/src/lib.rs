//! The quantbox application: wiring of the engine ([`app`]), the front ends ([`rest`],
//! [`mcp`], the CLI in [`cli`] with its `metrics` view in [`cli_metrics`] and its
//! trading verbs in [`cli_trading`]),
//! `serve`/`mcp` ([`serve`]) and `quantbox bench` ([`bench`]). `main.rs` only
//! dispatches to [`cli::main`] (or to a sandbox's init).

pub mod agent_cmd;
pub mod app;
pub mod bench;
pub mod bench_agents;
pub mod bench_analytics;
pub mod bench_e2b;
pub mod bench_metrics;
pub mod cli;
pub mod cli_metrics;
pub mod cli_trading;
pub mod envd_fs;
pub mod mcp;
pub mod rest;
pub mod serve;
pub mod tearsheet;
