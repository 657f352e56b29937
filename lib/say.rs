//! Messages on stderr, each line in one write.
//!
//! `eprintln!` formats straight into stderr, which is unbuffered, so one
//! message becomes several `write` calls, and the messages of two programs
//! of one pipeline (which share the terminal or log file) interleave in the
//! middle of a line. [`say!`](crate::say) formats the whole line first and
//! writes it at once; a write of up to `PIPE_BUF` (4 KiB) bytes to a pipe
//! is atomic, and to a terminal or file it is not split by other writers
//! in practice.

use std::fmt::{self, Write as _};
use std::io::Write as _;

/// Prints one line on stderr in a single write.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say::line(format_args!($($arg)*))
    };
}

/// Writes `args` and a newline to stderr in one `write` (errors writing
/// stderr are ignored: there is nowhere left to report them).
pub fn line(args: fmt::Arguments<'_>) {
    let mut text = String::with_capacity(160);
    let _ = text.write_fmt(args);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// The running program's name for warnings (`bk-index`, `bk-open`…).
pub fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "bk".into())
}
