//! Progress on stderr: an indicatif line when stderr is a terminal (or
//! `--progress` asks for it), plain periodic lines when `--progress` is
//! given but stderr is a log file, nothing otherwise. Totals of a stream
//! are unknown in advance, so it shows counts, bytes and rate.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress display for one program.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: Option<Instant>,
    program: &'static str,
    files: u64,
    bytes: u64,
    started: Instant,
}

/// When progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Only when stderr is a terminal.
    Auto,
    /// Also on a log file (plain periodic lines).
    Always,
    /// Never.
    Never,
}

impl Progress {
    /// Progress of `program`, shown as `show` says.
    pub fn new(show: Show, program: &'static str) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let show = match show {
            Show::Auto => tty,
            Show::Always => true,
            Show::Never => false,
        };
        let bar = (show && tty).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            let style = ProgressStyle::with_template(
                "{spinner} {prefix}: {msg} {binary_bytes} ({binary_bytes_per_sec}) [{elapsed}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(program);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            plain: (show && !tty).then_some(now),
            program,
            files: 0,
            bytes: 0,
            started: now,
        }
    }

    /// Counts one more file of `bytes` bytes processed.
    pub fn add(&mut self, files: u64, bytes: u64) {
        self.files += files;
        self.bytes += bytes;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} files", self.files));
            bar.inc(bytes);
        }
        if let Some(last) = self.plain {
            if last.elapsed() >= Duration::from_secs(2) {
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                crate::say!(
                    "{}: {} files, {} ({}/s)",
                    self.program,
                    self.files,
                    HumanBytes(self.bytes),
                    HumanBytes((self.bytes as f64 / secs) as u64)
                );
                self.plain = Some(Instant::now());
            }
        }
    }

    /// Removes the progress line before the final summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
