//! The shared `main` of every program: config, parsing, exit status.

use clap::Parser;

use crate::error::{exit, Kind, Result};

/// Loads the config file into the environment, parses the command line as
/// `C`, runs `run`, prints any error on stderr and exits with its
/// documented status. `run` returns the exit status of a run that went on
/// after per-entry errors.
pub fn main_with<C: Parser>(program: &str, run: impl FnOnce(C) -> Result<i32>) -> ! {
    crate::sys::alloc::tune();
    if let Err(e) = crate::cli::config::load_into_env(program) {
        crate::say!("{program}: {e}");
        std::process::exit(exit::USAGE);
    }
    let cli = C::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) if e.kind() == Kind::BrokenPipe => e.exit_code(),
        Err(e) => {
            crate::error::report(program, &e);
            e.exit_code()
        }
    };
    std::process::exit(code)
}
