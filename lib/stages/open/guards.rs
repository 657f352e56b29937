//! Guards that undo on drop what restoring an entry does on the way: a
//! finished parent directory's times and mode are put back, and a
//! temporary file that never got its real name is removed, whichever way
//! the restore of the entry ends.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::record::meta;

/// Keeps the times (and, for a non-root user, the mode) of a directory that
/// was already finished while an entry is created in it: taken when an
/// out-of-order record lands in it, put back on drop.
pub(crate) struct ParentGuard {
    path: PathBuf,
    atime: TimeSpec,
    mtime: TimeSpec,
    /// The mode to put back when write access had to be added.
    mode: Option<u32>,
}

impl ParentGuard {
    pub(crate) fn new(path: PathBuf, as_root: bool) -> Option<ParentGuard> {
        let m = fs::symlink_metadata(&path).ok().filter(|m| m.is_dir())?;
        let mut mode = None;
        if !as_root && m.mode() & 0o300 != 0o300 && meta::set_mode(&path, m.mode() | 0o300).is_ok()
        {
            mode = Some(m.mode());
        }
        Some(ParentGuard {
            atime: TimeSpec::new(m.atime(), m.atime_nsec()),
            mtime: TimeSpec::new(m.mtime(), m.mtime_nsec()),
            path,
            mode,
        })
    }
}

impl Drop for ParentGuard {
    fn drop(&mut self) {
        if let Some(mode) = self.mode {
            let _ = meta::set_mode(&self.path, mode);
        }
        let _ = utimensat(
            None,
            &self.path,
            &self.atime,
            &self.mtime,
            UtimensatFlags::NoFollowSymlink,
        );
    }
}

/// A temporary file next to the destination, removed unless kept.
pub(crate) struct TempPath(pub(crate) PathBuf);

impl TempPath {
    /// Creates a new, private, empty file in `dir` with a random name.
    pub(crate) fn create(dir: &Path) -> io::Result<(TempPath, File)> {
        let (path, file) = crate::sys::fs::create_private_file(dir, ".bk-restore-")?;
        Ok((TempPath(path), file))
    }

    pub(crate) fn keep(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}
