//! The repository (format 1): a plain directory of OpenPGP messages.
//!
//! ```text
//! repo/
//!   bk-repo.json        format, repository id, recipient fingerprints
//!   keys/id-key.pgp     the id key, encrypted to the recipients
//!   objects/ab/abcd…    one OpenPGP message per unique content
//!   snapshots/<UTC time>-<host>-<rand>.pgp
//!   inventory/<UTC time>-<rand>.ndjson   id, stored size and ciphertext SHA-256
//!                                        of every object bk-seal added
//!   locks/
//! ```
//!
//! Every file is written under a temporary name, fsynced and then given its
//! real name, so a crash never leaves a half-written object or snapshot
//! under a real name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{io_cause, Error, Result};

/// The repository format this build reads and writes.
pub const FORMAT: u32 = 1;

/// Prefix of temporary files; never a valid object or snapshot name.
pub const TMP_PREFIX: &str = ".tmp-";

/// The public facts in `bk-repo.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Repository format version.
    pub format: u32,
    /// Random repository id (hex), names the local id key and caches.
    pub id: String,
    /// Fingerprints of the recipients the repository was created for.
    pub recipients: Vec<String>,
    /// Hex HMAC-SHA256(id key, "bk id key check"): lets bk tell a wrong
    /// local id key from the right one without revealing the key.
    pub id_key_check: String,
    /// When the repository was created (RFC 3339).
    pub created: String,
}

/// An open repository.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
    config: RepoConfig,
}

impl Repo {
    /// Opens an existing repository and checks its format version.
    pub fn open(root: &Path) -> Result<Repo> {
        let cfg_path = root.join("bk-repo.json");
        let text = match fs::read(&cfg_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::repo(format!(
                    "{}: not a bk repository (no bk-repo.json); create one with `bk-seal --init`",
                    root.display()
                )))
            }
            Err(e) => {
                return Err(Error::repo(format!(
                    "{}: {}",
                    cfg_path.display(),
                    io_cause(&e)
                )))
            }
        };
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::repo(format!("{}: not valid JSON: {e}", cfg_path.display())))?;
        match value.get("format").and_then(|f| f.as_u64()) {
            Some(f) if f == u64::from(FORMAT) => {}
            Some(f) => {
                return Err(Error::repo(format!(
                "{}: repository format {f} is not supported by this bk (it reads format {FORMAT})",
                root.display()
            )))
            }
            None => {
                return Err(Error::repo(format!(
                    "{}: no repository format version",
                    cfg_path.display()
                )))
            }
        }
        let config: RepoConfig = serde_json::from_value(value)
            .map_err(|e| Error::repo(format!("{}: {e}", cfg_path.display())))?;
        if config.id.is_empty() || !config.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::repo(format!(
                "{}: repository id {:?} is not hex",
                cfg_path.display(),
                config.id
            )));
        }
        Ok(Repo {
            root: root.to_path_buf(),
            config,
        })
    }

    /// Creates a new repository with the given id key (already encrypted to
    /// the recipients as `encrypted_id_key`). Refuses a non-empty directory
    /// that is not a repository.
    pub fn create(
        root: &Path,
        recipients: &[String],
        id_key_check: String,
        encrypted_id_key: &[u8],
    ) -> Result<Repo> {
        let ioerr =
            |p: &Path, e: io::Error| Error::repo(format!("{}: {}", p.display(), io_cause(&e)));
        fs::create_dir_all(root).map_err(|e| ioerr(root, e))?;
        let not_empty = fs::read_dir(root)
            .map_err(|e| ioerr(root, e))?
            .next()
            .is_some();
        if not_empty {
            return Err(Error::repo(format!(
                "{}: directory is not empty and not a bk repository; refusing to create one there",
                root.display()
            )));
        }
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let config = RepoConfig {
            format: FORMAT,
            id: hex::encode(id),
            recipients: recipients.to_vec(),
            id_key_check,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        for dir in ["objects", "snapshots", "keys", "locks"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| ioerr(&p, e))?;
        }
        let repo = Repo {
            root: root.to_path_buf(),
            config,
        };
        repo.write_atomic(&repo.root.join("keys/id-key.pgp"), |w| {
            w.write_all(encrypted_id_key)
        })?;
        let json = serde_json::to_vec_pretty(&repo.config).unwrap_or_default();
        repo.write_atomic(&repo.root.join("bk-repo.json"), |w| {
            w.write_all(&json)?;
            w.write_all(b"\n")
        })?;
        sync_dir(&repo.root).map_err(|e| ioerr(&repo.root, e))?;
        Ok(repo)
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The public configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The repository id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Where an object with this id lives. The id must already be checked
    /// with [`check_object_id`].
    pub fn object_path(&self, id: &str) -> PathBuf {
        self.root.join("objects").join(&id[..2]).join(id)
    }

    /// The stored size of an object, or `None` if it is absent.
    pub fn object_size(&self, id: &str) -> Result<Option<u64>> {
        let path = self.object_path(id);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Err(Error::repo(format!("object {id}: not a regular file"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::repo(format!("object {id}: {}", io_cause(&e)))),
        }
    }

    /// The stored size of an object this run reuses (a dedup hit or a record
    /// passed through with its objects), or `None` if it is absent. An
    /// object last modified more than [`REUSE_TOUCH_AFTER`] ago gets its
    /// modification time set to now, so that `bk-index prune`'s grace period
    /// protects it until the records naming it are in a snapshot. The touch
    /// is best effort (a file system that refuses it only loses that extra
    /// protection; locks still apply).
    pub fn reuse_object(&self, id: &str) -> Result<Option<u64>> {
        let path = self.object_path(id);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                let old = m
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > REUSE_TOUCH_AFTER);
                if old {
                    touch(&path);
                }
                Ok(Some(m.len()))
            }
            Ok(_) => Err(Error::repo(format!("object {id}: not a regular file"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::repo(format!("object {id}: {}", io_cause(&e)))),
        }
    }

    /// Writes an object through `fill` under a temporary name in its final
    /// directory, without syncing: it gets its real name only in
    /// [`Repo::commit_objects`], after one `syncfs` made a whole batch
    /// durable. A crash before that leaves only temporary files, never a
    /// half-written object under a real name.
    pub fn write_object_unsynced(
        &self,
        id: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<PendingObject, StoreError> {
        let final_path = self.object_path(id);
        let dir = final_path.parent().unwrap_or(&self.root).to_path_buf();
        let mut tmp = match TempFile::create(&dir) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir).map_err(|e| StoreError::Write(Error::io(&dir, e)))?;
                TempFile::create(&dir).map_err(|e| StoreError::Write(Error::io(&dir, e)))?
            }
            Err(e) => return Err(StoreError::Write(Error::io(&dir, e))),
        };
        let (size, sha256) = tmp.fill(fill)?;
        let tmp_path = std::mem::take(&mut tmp.path);
        Ok(PendingObject {
            id: id.to_owned(),
            tmp: tmp_path,
            final_path,
            size,
            sha256,
        })
    }

    /// Makes a batch of written objects durable (one `syncfs` of the
    /// repository's file system, or an fsync per file where that fails),
    /// gives each its real name (keeping an existing object of the same id),
    /// syncs their directories, and records the new ones in the object
    /// inventory (see [`crate::inventory`]). Returns how many were new and
    /// their stored bytes.
    pub fn commit_objects(&self, batch: Vec<PendingObject>) -> Result<(u64, u64)> {
        if batch.is_empty() {
            return Ok((0, 0));
        }
        let synced = self.syncfs();
        if !synced {
            for p in &batch {
                File::open(&p.tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io(&p.tmp, e))?;
            }
        }
        let mut dirs = std::collections::BTreeSet::new();
        let (mut new, mut bytes) = (0, 0);
        let mut inventory = Vec::new();
        for p in batch {
            let created =
                rename_noreplace(&p.tmp, &p.final_path).map_err(|e| Error::io(&p.final_path, e))?;
            if created {
                new += 1;
                bytes += p.size;
                inventory.push((p.id.clone(), p.size, p.sha256.clone()));
            }
            if let Some(d) = p.final_path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        // The renames must be durable too: one more syncfs covers every
        // directory at once; where that is not available, fsync each.
        if !(synced && self.syncfs()) {
            for d in dirs {
                sync_dir(&d).map_err(|e| Error::io(&d, e))?;
            }
        }
        let lines: Vec<(&str, u64, &str)> = inventory
            .iter()
            .map(|(id, size, sha)| (id.as_str(), *size, sha.as_str()))
            .collect();
        crate::inventory::append(&self.root, &lines)?;
        Ok((new, bytes))
    }

    /// Flushes the repository's whole file system; false where `syncfs`
    /// is not available.
    fn syncfs(&self) -> bool {
        File::open(&self.root)
            .and_then(|d| {
                use std::os::fd::AsRawFd;
                nix::unistd::syncfs(d.as_raw_fd()).map_err(io::Error::from)
            })
            .is_ok()
    }

    /// Writes a file atomically (temp name, fsync, rename over).
    pub fn write_atomic(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        let tmp = TempFile::create(dir).map_err(|e| Error::io(dir, e))?;
        tmp.fill_and_rename(fill, path)
            .map_err(StoreError::into_error)?;
        sync_dir(dir).map_err(|e| Error::io(dir, e))
    }

    /// Snapshot file names, oldest first (names start with the UTC time).
    pub fn snapshots(&self) -> Result<Vec<String>> {
        let dir = self.root.join("snapshots");
        let mut names = Vec::new();
        let entries = fs::read_dir(&dir)
            .map_err(|e| Error::repo(format!("{}: {}", dir.display(), io_cause(&e))))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::repo(format!("{}: {}", dir.display(), io_cause(&e))))?;
            if let Some(name) = entry.file_name().to_str() {
                if name.ends_with(".pgp") && !name.starts_with('.') {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Resolves "latest", a full snapshot name or a unique prefix of one.
    pub fn find_snapshot(&self, wanted: &str) -> Result<String> {
        let names = self.snapshots()?;
        if wanted == "latest" {
            return names
                .last()
                .cloned()
                .ok_or_else(|| Error::repo(format!("{}: no snapshots yet", self.root.display())));
        }
        if names.iter().any(|n| n == wanted) {
            return Ok(wanted.to_owned());
        }
        let matches: Vec<&String> = names.iter().filter(|n| n.starts_with(wanted)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::repo(format!(
                "snapshot {wanted:?}: no such snapshot"
            ))),
            _ => Err(Error::repo(format!(
                "snapshot {wanted:?}: ambiguous, matches {} snapshots",
                matches.len()
            ))),
        }
    }

    /// Path of a snapshot file by name.
    pub fn snapshot_path(&self, name: &str) -> PathBuf {
        self.root.join("snapshots").join(name)
    }
}

/// Checks that an object id is 64 lower-case hex characters, so that it
/// can never name a path outside `objects/`.
pub fn check_object_id(id: &str) -> Result<()> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::repo(format!(
            "object id {:?} is not 64 lower-case hex digits",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// Why storing an object failed: the source (the closure's input) or the
/// write to the repository.
#[derive(Debug)]
pub enum StoreError {
    /// `fill` failed (its input went wrong); nothing was stored.
    Fill(io::Error),
    /// Writing, syncing or renaming in the repository failed.
    Write(Error),
}

impl StoreError {
    /// Converts to a plain error, treating fill failures as I/O errors.
    pub fn into_error(self) -> Error {
        match self {
            StoreError::Fill(e) => Error::io(Path::new("(input)"), e),
            StoreError::Write(e) => e,
        }
    }
}

/// An object written under a temporary name, waiting for
/// [`Repo::commit_objects`]. Dropping it removes the temporary file.
#[derive(Debug)]
pub struct PendingObject {
    /// Object id.
    pub id: String,
    tmp: PathBuf,
    final_path: PathBuf,
    /// Bytes written.
    pub size: u64,
    /// Hex SHA-256 of the bytes written (the ciphertext).
    pub sha256: String,
}

impl Drop for PendingObject {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() && self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A temporary file in the destination directory, removed unless committed.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn create(dir: &Path) -> io::Result<TempFile> {
        let (path, file) = create_private_file(dir, TMP_PREFIX)?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    /// Writes the content through `fill` and flushes it; returns its size
    /// and the hex SHA-256 of the bytes written. Failures of the output are
    /// told apart from failures of `fill`'s input.
    fn fill(
        &mut self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(u64, String), StoreError> {
        let Some(file) = self.file.take() else {
            return Err(StoreError::Write(Error::io(
                &self.path,
                io::Error::other("temporary file already used"),
            )));
        };
        let mut out = TrackedWriter {
            inner: BufWriter::with_capacity(256 << 10, file),
            error: None,
            written: 0,
            hasher: Sha256::new(),
        };
        if let Err(e) = fill(&mut out) {
            return Err(match out.error.take() {
                Some(we) => StoreError::Write(Error::io(&self.path, we)),
                None => StoreError::Fill(e),
            });
        }
        let written = out.written;
        let sha256 = hex::encode(out.hasher.finalize_reset());
        let file = out
            .inner
            .into_inner()
            .map_err(|e| StoreError::Write(Error::io(&self.path, e.into_error())))?;
        self.file = Some(file);
        Ok((written, sha256))
    }

    /// Fills, fsyncs and renames the file over `dest`.
    fn fill_and_rename(
        mut self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        dest: &Path,
    ) -> Result<(), StoreError> {
        self.fill(fill)?;
        let Some(file) = self.file.take() else {
            return Err(StoreError::Write(Error::io(
                &self.path,
                io::Error::other("temporary file already used"),
            )));
        };
        file.sync_all()
            .map_err(|e| StoreError::Write(Error::io(&self.path, e)))?;
        drop(file);
        fs::rename(&self.path, dest).map_err(|e| StoreError::Write(Error::io(dest, e)))?;
        // Renamed: nothing left to clean up.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A writer that remembers its own I/O error, so a failed encryption can be
/// blamed on the output (disk full) rather than on the input, and hashes
/// what it writes (for the object inventory) so nothing is read back.
struct TrackedWriter<W: Write> {
    inner: W,
    error: Option<io::Error>,
    written: u64,
    hasher: Sha256,
}

impl<W: Write> Write for TrackedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf).inspect_err(|e| {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        })?;
        self.written += n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
}

/// Renames `from` to `to` unless `to` exists, in which case `from` is
/// removed: two writers of the same object both succeed and the first one's
/// bytes stay. Uses `renameat2(RENAME_NOREPLACE)`, falling back to
/// link+unlink and, where neither works, to a plain rename. Returns whether
/// `to` is now `from`'s file.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => return Ok(true),
        Err(Errno::EEXIST) => return fs::remove_file(from).map(|_| false),
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) | Err(Errno::EOPNOTSUPP) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from).map(|_| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::remove_file(from).map(|_| false),
        Err(_) => fs::rename(from, to).map(|_| true),
    }
}

/// An object reused by a run gets a fresh modification time when its own is
/// older than this: half of `bk-index prune`'s default grace period (24 h).
pub const REUSE_TOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Sets a file's modification time to now, ignoring failure.
fn touch(path: &Path) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let _ = utimensat(
        None,
        path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::UTIME_NOW,
        UtimensatFlags::FollowSymlink,
    );
}

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
