//! `quantbox envd-fs`: the in-sandbox half of envd's file API.
//!
//! Why this exists: the server serves envd's file endpoints without touching a sandbox's
//! files from the host; it runs this hidden subcommand inside the sandbox (the binary is
//! bound read-only at `/run/quantbox/quantbox`), as the requesting user, through the
//! sandbox manager. All the work and the protocol are in `quantbox_e2b::inside`; this is
//! only the CLI glue. Like `quantbox agent`, it runs before any async runtime exists.

use std::process::ExitCode;

/// The raw arguments, passed on untouched (`<op> [flags] -- PATH...`; see
/// `quantbox_e2b::inside::Op`).
#[derive(clap::Args, Debug)]
pub struct EnvdFsArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

pub fn main(a: EnvdFsArgs) -> ExitCode {
    let code = quantbox_e2b::inside::main(&a.args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
