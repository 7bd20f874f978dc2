//! The quantbox binary. Re-executed with the hidden argument `__sandbox-init`, it is a
//! sandbox's init instead: that check runs before anything else, so init starts
//! single-threaded.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == quantbox_sandbox_local::init::INIT_ARG)
    {
        quantbox_sandbox_local::init::main();
    }
    quantbox::cli::main()
}
