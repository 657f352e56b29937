//! Local file helpers for everything bk writes under a temporary name.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Creates a new, empty file readable only by its owner in `dir`, named
/// `prefix` and random hex digits, never following or reusing an existing
/// entry. Used for everything bk writes under a temporary name.
pub fn create_private_file(dir: &Path, prefix: &str) -> io::Result<(PathBuf, File)> {
    loop {
        let mut rnd = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut rnd);
        let path = dir.join(format!("{prefix}{}", hex::encode(rnd)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// fsyncs a directory so that renames inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
