//! `--pause-file PATH`: while the file exists, workers finish what they
//! hold and take nothing new; they resume when it is removed. Because the
//! stages are joined by bounded channels and pipes, a paused stage stops
//! reading, and the whole pipeline waits with it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often a paused worker looks at the pause file again.
const POLL: Duration = Duration::from_millis(500);

/// A pause file shared by a program's workers.
#[derive(Debug, Default)]
pub struct Pause {
    file: Option<PathBuf>,
    program: String,
    /// Whether "paused" has been printed and "resumed" not yet.
    announced: AtomicBool,
}

impl Pause {
    /// A pause controlled by `file` (none: never pauses).
    pub fn new(program: &str, file: Option<&Path>) -> Pause {
        Pause {
            file: file.map(Path::to_path_buf),
            program: program.to_owned(),
            announced: AtomicBool::new(false),
        }
    }

    /// Blocks while the pause file exists. The first worker to notice says
    /// "paused: PATH exists" on stderr, and "resumed" once it is gone.
    pub fn wait(&self) {
        let Some(file) = &self.file else { return };
        if !file.exists() {
            return;
        }
        if !self.announced.swap(true, Ordering::SeqCst) {
            crate::say!("{}: paused: {} exists", self.program, file.display());
        }
        while file.exists() {
            std::thread::sleep(POLL);
        }
        if self.announced.swap(false, Ordering::SeqCst) {
            crate::say!("{}: resumed", self.program);
        }
    }
}
