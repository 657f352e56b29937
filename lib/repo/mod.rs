//! The repository (format 2, see `doc/format.md`): packs of OpenPGP
//! messages under a directory or an S3 prefix (see [`crate::storage`]),
//! with the same layout in both.
//!
//! ```text
//! repo/
//!   bk-repo.json        format, repository id, recipient fingerprints
//!   keys/id-key.pgp     the id key, encrypted to the recipients
//!   packs/ab/abcd…      packs of blobs (see [`pack`])
//!   snapshots/<UTC time>-<nonce><tag>.pgp   snapshot roots (see [`catalogue`])
//!   inventory/<UTC time>-<rand>.ndjson   stored size and ciphertext BLAKE3
//!                                        of every pack written
//!   locks/
//! ```
//!
//! Every file becomes visible only once it is complete and durable (a
//! temporary name renamed into place, or a completed S3 upload), so a crash
//! never leaves a half-written object or snapshot under a real name.

pub mod authkey;
pub mod blobs;
pub mod catalogue;
pub mod certify;
pub mod chunker;
pub mod id;
pub mod idkey;
pub mod index;
pub mod inventory;
pub mod lock;
pub mod objects;
pub mod pack;
pub mod packer;
pub mod prune;
pub mod retention;
pub mod snapshot_name;
pub mod snapshots;
pub mod trailer;
pub mod trust;

use std::io::{self, BufWriter, Write};
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{io_cause, Error, Result};
use crate::storage::location::{self, Location};
use crate::storage::s3::S3Options;
use crate::storage::{Commit, Finished, KeyReader, Storage, Upload};

/// The repository format this build reads and writes.
pub const FORMAT: u32 = 2;

/// The key of the public configuration.
const CONFIG_KEY: &str = "bk-repo.json";

/// The most of `bk-repo.json` that is read (it holds a few hundred bytes,
/// plus 41 per recipient).
const CONFIG_LIMIT: u64 = 1 << 20;

/// The most of `keys/id-key.pgp` that is read (32 bytes encrypted to each
/// recipient: about 600 bytes per RSA-4096 recipient).
pub const ID_KEY_LIMIT: u64 = 1 << 20;

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
    store: Arc<dyn Storage>,
    location: Location,
    config: RepoConfig,
}

/// Where a repository is and how to reach it: what `--repo` and the S3
/// options name, before anything is read.
#[derive(Debug, Clone)]
pub struct RepoHandle {
    /// The storage.
    pub store: Arc<dyn Storage>,
    /// The location as given.
    pub location: Location,
}

impl RepoHandle {
    /// The storage `--repo` names (no request is made yet).
    pub fn new(location: &Location, s3: &S3Options) -> Result<RepoHandle> {
        Ok(RepoHandle {
            store: location::open(location, s3)?,
            location: location.clone(),
        })
    }

    /// Whether a repository exists there (its `bk-repo.json` does).
    pub fn exists(&self) -> Result<bool> {
        self.store
            .stat(CONFIG_KEY)
            .map(|s| s.is_some())
            .map_err(|e| repo_err(&*self.store, CONFIG_KEY, &e))
    }
}

/// A repository error naming `key` in `store`.
pub fn repo_err(store: &dyn Storage, key: &str, e: &io::Error) -> Error {
    Error::repo(format!("{}: {}", store.describe(key), io_cause(e)))
}

impl Repo {
    /// Opens an existing repository and checks its format version.
    pub fn open_handle(handle: RepoHandle) -> Result<Repo> {
        let RepoHandle { store, location } = handle;
        let shown = store.describe(CONFIG_KEY);
        let text = match store.read(CONFIG_KEY, CONFIG_LIMIT) {
            Ok(Some(t)) => t,
            Ok(None) => {
                // A storage that cannot even list (a missing bucket, say)
                // says why; otherwise there is simply no repository.
                if let Err(e) = store.list("") {
                    return Err(repo_err(&*store, "", &e));
                }
                return Err(Error::repo(format!(
                    "{location}: not a bk repository (no bk-repo.json); create one with `bk-seal --init`"
                )));
            }
            Err(e) => return Err(Error::repo(format!("{shown}: {}", io_cause(&e)))),
        };
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| Error::repo(format!("{shown}: not valid JSON: {e}")))?;
        match value.get("format").and_then(|f| f.as_u64()) {
            Some(f) if f == u64::from(FORMAT) => {}
            Some(1) => {
                return Err(Error::repo(format!(
                    "{location}: repository format 1 (one object file per content) is not supported by this bk (it reads format {FORMAT})"
                ))
                .hint("its files can still be recovered with gpg alone: see doc/recovery-format-1.md"))
            }
            Some(f) => {
                return Err(Error::repo(format!(
                    "{location}: repository format {f} is not supported by this bk (it reads format {FORMAT})"
                )))
            }
            None => return Err(Error::repo(format!("{shown}: no repository format version"))),
        }
        let config: RepoConfig =
            serde_json::from_value(value).map_err(|e| Error::repo(format!("{shown}: {e}")))?;
        if config.id.is_empty() || !config.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::repo(format!(
                "{shown}: repository id {:?} is not hex",
                config.id
            )));
        }
        Ok(Repo {
            store,
            location,
            config,
        })
    }

    /// The directories a new repository starts with.
    const LAYOUT: [&str; 4] = ["packs", "snapshots", "keys", "locks"];

    /// Checks that a repository can be created where `handle` points: there
    /// is nothing there yet, or an empty directory or prefix. Creates
    /// nothing, so that `bk-seal --init` can check everything else before
    /// anything is made.
    pub fn check_creatable(handle: &RepoHandle) -> Result<()> {
        let store = &*handle.store;
        let not_empty = match handle.location.as_dir() {
            // Any entry counts here, hidden ones too (a listing leaves
            // those out).
            Some(dir) => match std::fs::read_dir(dir) {
                Ok(mut entries) => Ok(entries.next().is_some()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
            None => store.list("").map(|entries| !entries.is_empty()),
        }
        .map_err(|e| repo_err(store, "", &e))?;
        if not_empty {
            return Err(Error::repo(format!(
                "{}: not empty and not a bk repository; refusing to create one there",
                handle.location
            )));
        }
        Ok(())
    }

    /// A new random repository id (it names the local id key file, so
    /// `bk-seal --init` picks it before anything is created).
    pub fn new_id() -> String {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        hex::encode(id)
    }

    /// Creates a new repository with the id `id` and the given id key
    /// (already encrypted to the recipients as `encrypted_id_key`). Refuses
    /// a non-empty directory or prefix that is not a repository. If it
    /// fails part way, it removes what it made: either there is a whole
    /// repository afterwards, or nothing (bk-repo.json is written last, so
    /// a crash leaves no repository that claims to be one).
    pub fn create(
        handle: RepoHandle,
        id: String,
        recipients: &[String],
        id_key_check: String,
        encrypted_id_key: &[u8],
    ) -> Result<Repo> {
        Repo::check_creatable(&handle)?;
        let RepoHandle { store, location } = handle;
        let config = RepoConfig {
            format: FORMAT,
            id,
            recipients: recipients.to_vec(),
            id_key_check,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let made_root = location.as_dir().is_some_and(|d| !d.exists());
        let repo = Repo {
            store,
            location,
            config,
        };
        let result = (|| {
            if let Some(dir) = repo.location.as_dir() {
                for sub in Self::LAYOUT {
                    let p = dir.join(sub);
                    std::fs::create_dir_all(&p).map_err(|e| repo_err(&*repo.store, sub, &e))?;
                }
            }
            repo.write_atomic("keys/id-key.pgp", |w| w.write_all(encrypted_id_key))?;
            let json = serde_json::to_vec_pretty(&repo.config).unwrap_or_default();
            repo.write_atomic(CONFIG_KEY, |w| {
                w.write_all(&json)?;
                w.write_all(b"\n")
            })
        })();
        if let Err(e) = result {
            repo.undo_create(made_root);
            return Err(e);
        }
        Ok(repo)
    }

    /// Removes what a failed [`Repo::create`] made (the place was empty
    /// or absent before, so all of it is ours). Best effort.
    fn undo_create(&self, made_root: bool) {
        match self.location.as_dir() {
            Some(dir) => {
                let _ = std::fs::remove_file(dir.join(CONFIG_KEY));
                for sub in Self::LAYOUT {
                    let _ = std::fs::remove_dir_all(dir.join(sub));
                }
                if made_root {
                    let _ = std::fs::remove_dir(dir);
                }
            }
            None => {
                let _ = self.store.delete(CONFIG_KEY);
                let _ = self.store.delete("keys/id-key.pgp");
            }
        }
    }

    /// The storage the repository lives in.
    pub fn store(&self) -> &dyn Storage {
        &*self.store
    }

    /// The storage, shared (for locks held beyond this borrow).
    pub fn store_arc(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.store)
    }

    /// Where the repository is, as the user named it.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The public configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The repository id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// A repository error naming `key`.
    pub fn error(&self, key: &str, e: &io::Error) -> Error {
        repo_err(&*self.store, key, e)
    }

    /// An error while writing `key`: on a local directory that is a local
    /// I/O problem (a full disk, exit 6), on remote storage a repository
    /// problem (exit 5).
    pub fn write_error(&self, key: &str, e: io::Error) -> Error {
        match self.location.as_dir() {
            Some(_) => Error::io(std::path::Path::new(&self.store.describe(key)), e),
            None => self.error(key, &e),
        }
    }

    /// The key of a snapshot by name.
    pub fn snapshot_key(&self, name: &str) -> String {
        format!("snapshots/{name}")
    }

    /// Streams a key's bytes; a missing key is a repository error naming
    /// `what`.
    pub fn open_key(&self, key: &str, what: &str) -> Result<KeyReader> {
        match self.store.open(key) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Error::repo(format!("{what}: missing from the repository"))),
            Err(e) => Err(self.key_error(key, what, &e)),
        }
    }

    /// Reads a small key whole (at most `limit` bytes: more is an error);
    /// a missing key is a repository error naming `what`.
    pub fn read_key(&self, key: &str, what: &str, limit: u64) -> Result<Vec<u8>> {
        match self.store.read(key, limit) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(Error::repo(format!("{what}: missing from the repository"))),
            Err(e) => Err(self.key_error(key, what, &e)),
        }
    }

    /// A repository error reading `key` (shown as `what`), naming where
    /// it is when `what` does not already.
    fn key_error(&self, key: &str, what: &str, e: &io::Error) -> Error {
        let shown = self.store.describe(key);
        if what.contains(&shown) {
            Error::repo(format!("{what}: {}", io_cause(e)))
        } else {
            Error::repo(format!("{what} ({shown}): {}", io_cause(e)))
        }
    }

    /// Writes `fill`'s bytes to `upload`; returns the finished upload, its
    /// size and the hex BLAKE3 of the bytes written. Failures of the output
    /// are told apart from failures of `fill`'s input.
    pub(super) fn fill(
        &self,
        key: &str,
        upload: Box<dyn Upload>,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(Finished, u64, String), StoreError> {
        let mut out = TrackedWriter {
            inner: BufWriter::with_capacity(256 << 10, upload),
            error: None,
            written: 0,
            hasher: blake3::Hasher::new(),
        };
        if let Err(e) = fill(&mut out) {
            return Err(match out.error.take() {
                Some(we) => StoreError::Write(self.write_error(key, we)),
                None => StoreError::Fill(e),
            });
        }
        let written = out.written;
        let blake3 = out.hasher.finalize().to_hex().to_string();
        let upload = out
            .inner
            .into_inner()
            .map_err(|e| StoreError::Write(self.write_error(key, e.into_error())))?;
        let finished = upload
            .finish()
            .map_err(|e| StoreError::Write(self.write_error(key, e)))?;
        Ok((finished, written, blake3))
    }

    /// Writes a key atomically: readers see the old state or all of the new
    /// bytes, never part of them, and they are durable when this returns.
    pub fn write_atomic(
        &self,
        key: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<()> {
        self.put(key, fill, Commit::Replace)
    }

    /// [`Repo::write_atomic`] with a choice of [`Commit`] mode.
    pub fn put(
        &self,
        key: &str,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        mode: Commit,
    ) -> Result<()> {
        let upload = self
            .store
            .create(key)
            .map_err(|e| self.write_error(key, e))?;
        let (finished, _, _) = self
            .fill(key, upload, fill)
            .map_err(StoreError::into_error)?;
        self.store
            .commit(vec![finished], mode)
            .map_err(|e| self.write_error(key, e))?;
        Ok(())
    }

    /// Snapshot file names, in the storage's listing order (see
    /// [`snapshot_name::oldest_first`] for time order).
    pub fn snapshots(&self) -> Result<Vec<String>> {
        let entries = self
            .store
            .list("snapshots")
            .map_err(|e| self.error("snapshots", &e))?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_dir && e.name.ends_with(".pgp"))
            .map(|e| e.name)
            .collect())
    }

    /// Resolves a full snapshot name or a unique prefix of one ("latest"
    /// is [`trust::Trust::find_snapshot`]'s: it needs the names' times
    /// and tags).
    pub fn find_snapshot(&self, wanted: &str) -> Result<String> {
        let names = self.snapshots()?;
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
            StoreError::Fill(e) => Error::io(std::path::Path::new("(input)"), e),
            StoreError::Write(e) => e,
        }
    }
}

/// A writer that remembers its own I/O error, so a failed encryption can be
/// blamed on the output (disk full) rather than on the input, and hashes
/// what it writes (for the object inventory) so nothing is read back.
/// BLAKE3, not SHA-256: it only has to catch accidents in storage, and at
/// four times the speed it costs a tenth of a large file's sealing
/// instead of a third of its hashing.
struct TrackedWriter<W: Write> {
    inner: W,
    error: Option<io::Error>,
    written: u64,
    hasher: blake3::Hasher,
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

/// Refuses recipients the repository was not made for: objects encrypted
/// to them could not be read with the repository's keys.
pub fn check_recipients(repo: &Repo, recipients: &crate::crypto::Recipients) -> Result<()> {
    let known = &repo.config().recipients;
    for fp in recipients.fingerprints() {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(fp)) {
            return Err(Error::key(format!(
                "recipient {fp} is not a recipient of repository {} (it lists {})",
                repo.location(),
                known.join(", ")
            )));
        }
    }
    Ok(())
}
