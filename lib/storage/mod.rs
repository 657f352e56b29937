//! Where a repository's files live: one small trait, [`Storage`], with a
//! local-directory backend ([`dir`]) and an S3 backend ([`s3`]).
//!
//! Everything above this module (objects, snapshots, locks, inventory,
//! prune) speaks in *keys*: `/`-separated names relative to the repository
//! root (`bk-repo.json`, `packs/ab/<id>`, `locks/<name>.json`). A backend
//! only stores, lists and deletes such keys; so the directory and the S3
//! repository share every other line of code and have the same layout (an
//! `aws s3 sync` or `rclone copy` of one is a valid copy of the other).
//!
//! Writes are atomic from a reader's point of view: [`Storage::create`]
//! returns an [`Upload`] whose bytes are invisible under the key until it
//! is finished and committed (a temporary file renamed into place, or an S3
//! PUT / multipart upload, which S3 shows only once it is complete).

use std::any::Any;
use std::fmt::Debug;
use std::io::{self, BufRead, Read, Write};
use std::time::SystemTime;

pub mod dir;
pub mod location;
pub mod s3;

/// A key's size and age.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// Bytes stored.
    pub size: u64,
    /// Last modification (a directory's mtime, S3's Last-Modified).
    pub modified: Option<SystemTime>,
}

/// One entry of a [`Storage::list`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// The last component of the key (no `/`).
    pub name: String,
    /// A sub-directory (an S3 common prefix) rather than a stored key.
    pub is_dir: bool,
    /// Size and age (zero and `None` for directories).
    pub stat: Stat,
}

/// Whether committing may replace an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Keep the existing key's bytes (content-addressed objects).
    KeepExisting,
    /// Replace it (lock refreshes); new unique names need no care.
    Replace,
}

/// A repository's storage. Errors are plain `io::Error`s with a kind
/// (`NotFound`, `PermissionDenied`, …) and a cause; callers add the key.
pub trait Storage: Debug + Send + Sync {
    /// The repository's location as the user wrote it (`/mnt/backup`,
    /// `s3://bucket/prefix`).
    fn location(&self) -> &str;

    /// A key as the user should see it in messages.
    fn describe(&self, key: &str) -> String {
        if key.is_empty() {
            return self.location().to_owned();
        }
        format!("{}/{key}", self.location().trim_end_matches('/'))
    }

    /// A key's size and age; `None` if it does not exist.
    fn stat(&self, key: &str) -> io::Result<Option<Stat>>;

    /// Streams a key's bytes; `None` if it does not exist. A directory
    /// backend opens only regular files (a FIFO, device or directory where
    /// a key should be is an error, never a read that blocks or has no
    /// end) and reads no more than the file held when it was opened.
    fn open(&self, key: &str) -> io::Result<Option<KeyReader>>;

    /// Streams `len` bytes of a key from `offset` on (a ranged GET on S3);
    /// `None` if the key does not exist. A key that ends before
    /// `offset + len` yields fewer bytes: callers check the count.
    fn open_range(&self, key: &str, offset: u64, len: u64) -> io::Result<Option<KeyReader>>;

    /// Reads a small key whole; `None` if it does not exist. A key longer
    /// than `limit` bytes is an error (`InvalidData`): nothing bk reads
    /// this way (bk-repo.json, a lock, the encrypted id key) is anywhere
    /// near that size, so the storage cannot make bk read without end.
    fn read(&self, key: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(r) = self.open(key)? else {
            return Ok(None);
        };
        read_capped(r, limit).map(Some)
    }

    /// The entries directly under `dir` (a key prefix without the trailing
    /// `/`, or "" for the root), sorted by name. Temporary files are left
    /// out; a missing directory is empty.
    fn list(&self, dir: &str) -> io::Result<Vec<Entry>>;

    /// Calls `f` with the key (relative to `dir`) and stat of every stored
    /// key below `dir`, at any depth, in no particular order; temporary
    /// files are left out. Streams: memory does not grow with the count.
    fn walk(&self, dir: &str, f: &mut dyn FnMut(&str, Stat)) -> io::Result<()> {
        fn go(
            store: &(impl Storage + ?Sized),
            dir: &str,
            rel: &str,
            f: &mut dyn FnMut(&str, Stat),
        ) -> io::Result<()> {
            for e in store.list(dir)? {
                let sub_rel = join(rel, &e.name);
                if e.is_dir {
                    go(store, &join(dir, &e.name), &sub_rel, f)?;
                } else {
                    f(&sub_rel, e.stat);
                }
            }
            Ok(())
        }
        go(self, dir, "", f)
    }

    /// Whether each request is a network round trip (so one listing beats
    /// many stats).
    fn is_remote(&self) -> bool {
        false
    }

    /// Starts writing `key`. Nothing is visible under `key` until the
    /// upload is finished and committed; dropping an unfinished upload
    /// discards its bytes.
    fn create(&self, key: &str) -> io::Result<Box<dyn Upload>>;

    /// Makes finished uploads durable and visible under their keys, as one
    /// batch (one `syncfs` for a directory). Returns, per upload, whether
    /// it created its key (false: the key existed and was kept).
    fn commit(&self, batch: Vec<Finished>, mode: Commit) -> io::Result<Vec<bool>>;

    /// Deletes a key; a key already gone is not an error.
    fn delete(&self, key: &str) -> io::Result<()>;

    /// Sets a key's modification time to now, best effort (where the
    /// storage cannot, prune's grace period does not get that extra
    /// protection; locks still apply).
    fn touch(&self, key: &str);

    /// Appends to `key`, creating it, and makes the bytes durable: all of
    /// them or, on an error (a full disk), none (what got in is cut off
    /// again, as far as the storage allows). `false` where the storage
    /// cannot append (callers then write new keys).
    fn append(&self, key: &str, bytes: &[u8]) -> io::Result<bool>;

    /// Temporary keys an interrupted writer left behind (a directory's
    /// `.tmp-*` files) under `dir`, for prune to remove after the grace
    /// period.
    fn leftovers(&self, dir: &str) -> io::Result<Vec<Entry>> {
        let _ = dir;
        Ok(Vec::new())
    }
}

/// A key's bytes being read (any buffered reader; `Debug` for the OpenPGP
/// parser).
pub struct KeyReader(pub Box<dyn BufRead + Send>);

impl Debug for KeyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyReader")
    }
}

impl io::Read for KeyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl BufRead for KeyReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.0.consume(n)
    }
}

/// An upload in progress: write the bytes, then [`Upload::finish`].
pub trait Upload: Write + Send {
    /// Ends the upload. The bytes are complete but need
    /// [`Storage::commit`] to be visible under the key (an S3 upload is
    /// visible once finished already: S3 has no rename).
    fn finish(self: Box<Self>) -> io::Result<Finished>;
}

/// A finished upload waiting for [`Storage::commit`], with whatever its
/// backend keeps until then (a directory's temporary file). Dropping it
/// uncommitted drops that too, which discards the bytes.
pub struct Finished {
    /// The key it is for.
    pub key: String,
    staged: Option<Box<dyn Any + Send>>,
}

impl Finished {
    /// An upload that is visible once finished (S3 has no rename).
    pub fn visible(key: String) -> Self {
        Finished { key, staged: None }
    }

    /// An upload whose backend keeps `staged` until it commits it.
    pub fn staged(key: String, staged: impl Any + Send) -> Self {
        Finished {
            key,
            staged: Some(Box::new(staged)),
        }
    }

    /// What the backend staged, if it is a `T`.
    pub fn staged_ref<T: Any>(&self) -> Option<&T> {
        self.staged.as_ref()?.downcast_ref()
    }

    /// Takes back what the backend staged, if it is a `T`.
    pub fn take_staged<T: Any>(&mut self) -> Option<T> {
        match self.staged.take()?.downcast::<T>() {
            Ok(t) => Some(*t),
            Err(other) => {
                self.staged = Some(other);
                None
            }
        }
    }
}

impl Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished")
            .field("key", &self.key)
            .field("staged", &self.staged.is_some())
            .finish()
    }
}

/// Reads `r` to its end, refusing (`InvalidData`) more than `limit` bytes.
pub fn read_capped(r: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes, far more than bk ever writes there"),
        ));
    }
    Ok(buf)
}

/// Joins a directory key and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}
