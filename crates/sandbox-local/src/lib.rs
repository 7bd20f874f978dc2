//! The embedded `local` provider: each sandbox is a tree of processes in its own pid,
//! mount, network, uts, ipc, cgroup and user namespaces, on an overlayfs root, under a
//! cgroup's limits and a seccomp filter. See ARCHITECTURE.md for the whole picture.
//!
//! - [`provider`]: the server side ([`LocalProvider`]);
//! - [`init`]: the re-executed helper and the sandbox's pid 1;
//! - [`protocol`] / [`client`]: the control socket between them;
//! - [`cgroup`], [`seccomp`], [`template`]: limits, the syscall filter, template layers;
//! - [`sys`]: the raw syscalls.

pub mod cgroup;
mod client;
pub mod init;
pub mod protocol;
pub mod provider;
pub mod seccomp;
pub mod sys;
pub mod template;

pub use provider::{LocalConfig, LocalProvider};
