//! The local plaintext copy of the latest snapshot of each source root in a
//! repository, so that a re-run can reuse hashes and objects of unchanged
//! files without reading them and without the secret key.
//!
//! Files live under `$XDG_CACHE_HOME/bk/<repo id>/latest/<root hash>.ndjson`
//! (mode 0600, directory 0700): they hold file names and hashes, which are
//! private, so they never leave this machine. Each ends with a MAC line
//! (see [`crate::repo::trailer`]) under a key derived from the id key and bound
//! to the root, and is read only after that MAC checks out: a damaged or
//! edited cache is reported once and ignored (every file of that root is
//! then read), never trusted.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::repo::authkey::{AuthKeys, CacheMac};
use crate::repo::trailer;

/// Directory of the cached snapshots of one repository.
pub fn dir(repo_id: &str) -> PathBuf {
    crate::sys::paths::cache_home()
        .join("bk")
        .join(repo_id)
        .join("latest")
}

/// The cache file for one root.
pub fn path_for_root(repo_id: &str, root: &[u8]) -> PathBuf {
    let digest = hex::encode(Sha256::digest(root));
    dir(repo_id).join(format!("{}.ndjson", &digest[..32]))
}

/// The record lines of the cached snapshot for `root`, once its MAC has
/// checked out: `None` if there is no cache for the root, or (after one
/// message on stderr) if it is damaged or was edited.
pub fn open(repo_id: &str, root: &[u8], keys: &AuthKeys) -> Option<BufReader<std::io::Take<File>>> {
    let path = path_for_root(repo_id, root);
    let mut file = File::open(&path).ok()?;
    match verified_len(&mut file, keys.cache_mac(root)) {
        Ok(Some(len)) => Some(BufReader::with_capacity(256 << 10, file.take(len))),
        Ok(None) => {
            crate::say!(
                "bk-hash: the reuse cache {} is damaged or was edited (its MAC does not match): ignoring it, so every file of {} is read",
                path.display(),
                String::from_utf8_lossy(root)
            );
            None
        }
        Err(e) => {
            crate::say!(
                "bk-hash: cannot read the reuse cache {}: {}; every file of {} is read",
                path.display(),
                crate::error::io_cause(&e),
                String::from_utf8_lossy(root)
            );
            None
        }
    }
}

/// Checks the MAC line at the end of `file` against everything before it;
/// the length of what it covers if it matches, with the file rewound.
fn verified_len(file: &mut File, mut mac: CacheMac) -> std::io::Result<Option<u64>> {
    let size = file.metadata()?.len();
    let tail = trailer::Of::Cache.line_len() as u64;
    let Some(len) = size.checked_sub(tail) else {
        return Ok(None);
    };
    let mut body = (&mut *file).take(len);
    let mut buf = vec![0u8; 256 << 10];
    let mut read = 0u64;
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        mac.update(&buf[..n]);
        read += n as u64;
    }
    let mut last = Vec::with_capacity(tail as usize);
    (&mut *file).take(tail).read_to_end(&mut last)?;
    if read != len || !trailer::parse(trailer::Of::Cache, &last).is_some_and(|m| mac.matches(m)) {
        return Ok(None);
    }
    file.rewind()?;
    Ok(Some(len))
}

/// Writes the cache files of one snapshot, one root at a time (records
/// arrive sorted by root), each under a temporary name until `commit`.
pub struct CacheWriter {
    repo_id: String,
    keys: AuthKeys,
    current: Option<Current>,
    done: Vec<(PathBuf, PathBuf)>,
    failed: bool,
}

/// The cache file of the root being written.
struct Current {
    root: Vec<u8>,
    tmp: PathBuf,
    out: BufWriter<File>,
    mac: CacheMac,
}

impl CacheWriter {
    /// A writer for the repository's cache, authenticated with `keys`;
    /// failures only disable caching.
    pub fn new(repo_id: &str, keys: &AuthKeys) -> Self {
        CacheWriter {
            repo_id: repo_id.to_owned(),
            keys: keys.clone(),
            current: None,
            done: Vec::new(),
            failed: false,
        }
    }

    /// Appends one record line (no newline) for `root`.
    pub fn add(&mut self, root: &[u8], line: &[u8]) {
        if self.failed {
            return;
        }
        if self.current.as_ref().map(|c| c.root.as_slice()) != Some(root) {
            if let Err(()) = self.close_current().and_then(|_| self.start(root)) {
                self.failed = true;
                return;
            }
        }
        if let Some(c) = &mut self.current {
            c.mac.update(line);
            c.mac.update(b"\n");
            if c.out
                .write_all(line)
                .and_then(|_| c.out.write_all(b"\n"))
                .is_err()
            {
                self.failed = true;
            }
        }
    }

    fn start(&mut self, root: &[u8]) -> Result<(), ()> {
        let final_path = path_for_root(&self.repo_id, root);
        let dir = final_path.parent().map(Path::to_path_buf).ok_or(())?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|_| ())?;
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), self.done.len()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|_| ())?;
        self.current = Some(Current {
            root: root.to_vec(),
            tmp,
            out: BufWriter::with_capacity(256 << 10, file),
            mac: self.keys.cache_mac(root),
        });
        self.done.push((PathBuf::new(), final_path));
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), ()> {
        if let Some(Current {
            tmp, mut out, mac, ..
        }) = self.current.take()
        {
            // The temporary name goes on the list first, so that a failure
            // below still removes the file.
            if let Some(last) = self.done.last_mut() {
                last.0 = tmp;
            }
            out.write_all(&trailer::line(trailer::Of::Cache, &mac.finish()))
                .and_then(|_| out.flush())
                .map_err(|_| ())?;
        }
        Ok(())
    }

    /// Gives every written cache file its real name (after the snapshot
    /// itself was committed).
    pub fn commit(mut self) {
        self.settle();
    }

    /// Drops every temporary file (the snapshot was not written).
    pub fn abort(mut self) {
        self.failed = true;
        self.settle();
    }

    fn settle(&mut self) {
        if self.close_current().is_err() {
            self.failed = true;
        }
        for (tmp, final_path) in std::mem::take(&mut self.done) {
            if self.failed {
                let _ = fs::remove_file(&tmp);
            } else {
                let _ = replace(&tmp, &final_path);
            }
        }
    }
}

/// Puts `new` in the place of `old`: an atomic swap, then the old file is
/// removed. A plain rename over an existing file is the same to readers,
/// but ext4 then allocates and starts writing back the new file inside the
/// rename (its `auto_da_alloc` guard for programs that forget to fsync),
/// which every run would wait for at its very end. The cache needs no such
/// guard: a cache file cut short by a crash only ends reuse
/// at its first bad line. Falls back to a rename where there is nothing to
/// swap with or the file system cannot swap.
fn replace(new: &Path, old: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, new, None, old, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => fs::remove_file(new),
        Err(_) => fs::rename(new, old),
    }
}

impl Drop for CacheWriter {
    /// A writer dropped without `commit` (an error ended the run) leaves no
    /// temporary files behind.
    fn drop(&mut self) {
        if self.current.is_some() || !self.done.is_empty() {
            self.failed = true;
            self.settle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_swaps_in_the_new_file_and_removes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (new, old) = (dir.path().join(".tmp-1"), dir.path().join("root.ndjson"));
        fs::write(&old, "old\n").unwrap();
        fs::write(&new, "new\n").unwrap();
        replace(&new, &old).unwrap();
        assert_eq!(fs::read_to_string(&old).unwrap(), "new\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["root.ndjson"]);
    }

    #[test]
    fn replace_renames_when_there_is_no_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let (new, old) = (dir.path().join(".tmp-1"), dir.path().join("root.ndjson"));
        fs::write(&new, "first\n").unwrap();
        replace(&new, &old).unwrap();
        assert_eq!(fs::read_to_string(&old).unwrap(), "first\n");
        assert!(!new.exists());
    }
}
