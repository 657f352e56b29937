//! `bk-gen-docs [DIR]`: write the man pages (`DIR/man/`) and shell
//! completions (`DIR/completions/`) of every bk program. `make docs` runs it
//! on the source tree; `tests/docs_fresh.rs` checks the result is committed.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let dir = args
        .next()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    if args.next().is_some() || dir.to_str().is_some_and(|s| s.starts_with('-')) {
        eprintln!("usage: bk-gen-docs [DIR]");
        return ExitCode::from(2);
    }
    match bk::cli::docs::generate(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bk-gen-docs: {}: {e}", dir.display());
            ExitCode::from(6)
        }
    }
}
