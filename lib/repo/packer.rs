//! Writing blobs into packs from many threads at once.
//!
//! A thread that stores a blob takes a place in an open pack (a *ticket*:
//! the pack's session key), encrypts the blob with that key on its own,
//! and appends it to that pack: so the blobs of one pack share its
//! session key and no key is shared by two packs, while encryption runs
//! on every core. A pack that reaches the target size takes no new
//! tickets; once the last ticket holder has appended or given up, its
//! header and footer are written and it goes to the committer thread,
//! which makes it durable and visible under its real name (a directory:
//! fsync and rename; S3: one upload of the spooled file), then records
//! it in the inventory. [`Packer::finish`] does the same for the packs
//! still open and waits for every commit: a snapshot written after it
//! never names a blob that is not durable.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::crypto::blob::BlobSession;
use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::repo::id::{ObjectId, PackId};
use crate::repo::pack::{BlobEntry, PackBuilder, PackKeys, WrittenPack};
use crate::repo::{Repo, StoreError};
use crate::storage::{Commit, Upload};
use crate::sys::sync::lock;

/// Packs uploaded at once to remote storage. Each holds up to about two
/// and a half parts of `crate::storage::s3::PART_SIZE` in memory (one
/// gathering, one in flight), so this bounds bk-seal's memory on S3 as
/// much as its workers do.
const UPLOADS: usize = 2;

/// The default size a pack is closed at.
pub const DEFAULT_PACK_SIZE: u64 = 16 << 20;

/// Where a pack's bytes go while it is written: straight to its temporary
/// file in a repository directory, or to a local spool file that is
/// uploaded once the pack is complete (remote storage).
enum PackOut {
    Upload(Box<dyn Upload>),
    Spool(io::BufWriter<File>),
}

impl Write for PackOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            PackOut::Upload(u) => u.write(buf),
            PackOut::Spool(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            PackOut::Upload(u) => u.flush(),
            PackOut::Spool(f) => f.flush(),
        }
    }
}

/// One pack being filled.
struct Open {
    builder: PackBuilder<PackOut>,
    /// The pack's session key (none in a packer that only copies).
    session: Option<BlobSession>,
    /// Threads encrypting a blob for this pack.
    tickets: usize,
    /// Takes no more tickets.
    full: bool,
}

/// A complete pack on its way to the committer.
struct Done {
    out: PackOut,
    written: WrittenPack,
}

/// Stores blobs into packs, from any number of threads.
pub struct Packer {
    repo: Repo,
    keys: PackKeys,
    /// The keys new blobs are encrypted to; none in a packer that only
    /// copies blobs (prune).
    recipients: Option<Recipients>,
    target: u64,
    open: Mutex<Vec<Open>>,
    /// Held while a new pack is being opened, so that threads wanting a
    /// ticket at the same moment open one pack between them, not one each.
    opening: Mutex<()>,
    to_commit: Mutex<Option<Sender<Done>>>,
    committers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// What the committer thread reports back.
#[derive(Default)]
struct Shared {
    written: Mutex<Vec<WrittenPack>>,
    error: Mutex<Option<Error>>,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Packer")
    }
}

impl Packer {
    /// A packer writing packs of about `target` bytes into `repo`.
    pub fn new(repo: &Repo, keys: &PackKeys, recipients: &Recipients, target: u64) -> Packer {
        Packer::with(repo, keys, Some(recipients), target)
    }

    /// A packer that only copies blobs already encrypted (into packs
    /// without a session key of their own).
    pub fn copier(repo: &Repo, keys: &PackKeys, target: u64) -> Packer {
        Packer::with(repo, keys, None, target)
    }

    fn with(repo: &Repo, keys: &PackKeys, recipients: Option<&Recipients>, target: u64) -> Packer {
        // Remote storage: several uploads at once (each is a round trip
        // and a transfer); a directory: one thread renames and syncs.
        let threads = if repo.store().is_remote() { UPLOADS } else { 1 };
        let (tx, rx) = bounded::<Done>(threads);
        let shared = Arc::new(Shared::default());
        let committers = (0..threads)
            .map(|_| {
                let repo = repo.clone();
                let shared = Arc::clone(&shared);
                let rx = rx.clone();
                std::thread::spawn(move || commit_loop(&repo, &rx, &shared))
            })
            .collect();
        Packer {
            repo: repo.clone(),
            keys: keys.clone(),
            recipients: recipients.cloned(),
            target: target.max(1),
            open: Mutex::new(Vec::new()),
            opening: Mutex::new(()),
            to_commit: Mutex::new(Some(tx)),
            committers: Mutex::new(committers),
            shared,
        }
    }

    /// Stores one blob: `seal` encrypts it (on this thread) with the
    /// session key of the pack it goes to, and the ciphertext is appended
    /// there. Returns where it went; an error of `seal` comes back as
    /// [`StoreError::Fill`], one of the repository as
    /// [`StoreError::Write`].
    pub fn store(
        &self,
        id: ObjectId,
        size: u64,
        seal: impl FnOnce(&BlobSession) -> io::Result<Vec<u8>>,
    ) -> Result<(PackId, BlobEntry), StoreError> {
        if let Some(e) = self.failed() {
            return Err(StoreError::Write(e));
        }
        let (pack, session) = self.ticket().map_err(StoreError::Write)?;
        let sealed = match &session {
            Some(session) => seal(session),
            None => Err(io::Error::other("this packer only copies blobs")),
        };
        self.place(pack, id, size, sealed)
    }

    /// Copies one blob already encrypted (an OpenPGP message, as another
    /// pack held it) into a pack.
    pub fn store_raw(
        &self,
        id: ObjectId,
        size: u64,
        message: Vec<u8>,
    ) -> Result<(PackId, BlobEntry), StoreError> {
        if let Some(e) = self.failed() {
            return Err(StoreError::Write(e));
        }
        let (pack, _) = self.ticket().map_err(StoreError::Write)?;
        self.place(pack, id, size, Ok(message))
    }

    /// Appends a sealed blob to the pack of its ticket (or gives the
    /// ticket back on a failure), closing the pack once it is full and
    /// no ticket of it is out.
    fn place(
        &self,
        pack: PackId,
        id: ObjectId,
        size: u64,
        sealed: io::Result<Vec<u8>>,
    ) -> Result<(PackId, BlobEntry), StoreError> {
        let mut open = lock(&self.open);
        let Some(at) = open.iter().position(|o| *o.builder.id() == pack) else {
            return Err(StoreError::Write(Error::fault(
                "a pack went away while in use",
            )));
        };
        open[at].tickets -= 1;
        let result = match sealed {
            Ok(mut message) => open[at]
                .builder
                .add(id, size, &mut message)
                .map_err(|e| StoreError::Write(self.repo.write_error(&pack.key(), e))),
            Err(e) => Err(StoreError::Fill(e)),
        };
        if open[at].builder.len() >= self.target {
            open[at].full = true;
        }
        if open[at].full && open[at].tickets == 0 {
            let done = open.swap_remove(at);
            drop(open);
            self.close(done).map_err(StoreError::Write)?;
        }
        result.map(|entry| (pack, entry))
    }

    /// A place in an open pack that takes tickets, opening a new one if
    /// none does.
    fn ticket(&self) -> Result<(PackId, Option<BlobSession>)> {
        if let Some(ticket) = self.open_ticket() {
            return Ok(ticket);
        }
        // A new pack: its session key costs a public-key operation per
        // recipient, done outside the lock on the open packs. One thread
        // opens it; the others wanting a ticket meanwhile wait here and
        // then take one of it (otherwise every worker starting at once
        // would open a pack of its own, and a run would leave small packs
        // that tell how many blobs were stored in parallel).
        let _opening = lock(&self.opening);
        if let Some(ticket) = self.open_ticket() {
            return Ok(ticket);
        }
        let id = PackId::random();
        let session = self
            .recipients
            .as_ref()
            .map(Recipients::blob_session)
            .transpose()
            .map_err(|e| Error::key(format!("making a pack's session key: {e}")))?;
        let out = self.create(&id)?;
        let mut open = lock(&self.open);
        open.push(Open {
            builder: PackBuilder::new(id, &self.keys, out),
            session: session.clone(),
            tickets: 1,
            full: false,
        });
        Ok((id, session))
    }

    /// A ticket of the open pack that takes them, if there is one.
    fn open_ticket(&self) -> Option<(PackId, Option<BlobSession>)> {
        let mut open = lock(&self.open);
        let o = open.iter_mut().rev().find(|o| !o.full)?;
        o.tickets += 1;
        Some((*o.builder.id(), o.session.clone()))
    }

    fn create(&self, id: &PackId) -> Result<PackOut> {
        let key = id.key();
        if self.repo.store().is_remote() {
            let tmp = std::env::temp_dir();
            let file = tempfile::tempfile().map_err(|e| Error::io(&tmp, e))?;
            Ok(PackOut::Spool(io::BufWriter::with_capacity(
                256 << 10,
                file,
            )))
        } else {
            let upload = self
                .repo
                .store()
                .create(&key)
                .map_err(|e| self.repo.write_error(&key, e))?;
            Ok(PackOut::Upload(upload))
        }
    }

    /// Writes a pack's header and footer and hands it to the committer
    /// (an empty pack is dropped).
    fn close(&self, open: Open) -> Result<()> {
        if open.builder.is_empty() {
            return Ok(());
        }
        let key = open.builder.id().key();
        let (out, written) = open
            .builder
            .finish()
            .map_err(|e| self.repo.write_error(&key, e))?;
        let tx = lock(&self.to_commit).clone();
        match tx {
            Some(tx) if tx.send(Done { out, written }).is_ok() => Ok(()),
            _ => Err(self
                .failed()
                .unwrap_or_else(|| Error::fault("the pack committer stopped"))),
        }
    }

    /// The first error of the committer, if any.
    fn failed(&self) -> Option<Error> {
        lock(&self.shared.error).as_ref().map(Error::duplicate)
    }

    /// Closes every open pack, waits until all are durable, and returns
    /// every pack this packer wrote.
    pub fn finish(&self) -> Result<Vec<WrittenPack>> {
        let open: Vec<Open> = std::mem::take(&mut *lock(&self.open));
        let mut first = None;
        for o in open {
            if let Err(e) = self.close(o) {
                first.get_or_insert(e);
            }
        }
        drop(lock(&self.to_commit).take());
        for handle in std::mem::take(&mut *lock(&self.committers)) {
            let _ = handle.join();
        }
        if let Some(e) = first.or_else(|| self.failed()) {
            return Err(e);
        }
        Ok(std::mem::take(&mut *lock(&self.shared.written)))
    }

    /// Packs committed so far (bytes stored, count).
    pub fn committed(&self) -> (u64, usize) {
        let w = lock(&self.shared.written);
        (w.iter().map(|p| p.stored).sum(), w.len())
    }
}

impl Drop for Packer {
    fn drop(&mut self) {
        // Unfinished packs are dropped (their temporary files with them).
        lock(&self.open).clear();
        drop(lock(&self.to_commit).take());
        for handle in std::mem::take(&mut *lock(&self.committers)) {
            let _ = handle.join();
        }
    }
}

/// A committer thread: makes each complete pack durable and visible,
/// then records it in the inventory. After an error it drops what
/// follows (the run fails; nothing half-done becomes visible).
fn commit_loop(repo: &Repo, rx: &Receiver<Done>, shared: &Shared) {
    for done in rx {
        if lock(&shared.error).is_some() {
            continue;
        }
        match commit_one(repo, done.out, &done.written) {
            Ok(()) => lock(&shared.written).push(done.written),
            Err(e) => {
                lock(&shared.error).get_or_insert(e);
            }
        }
    }
}

fn commit_one(repo: &Repo, out: PackOut, written: &WrittenPack) -> Result<()> {
    let key = written.id.key();
    let store = repo.store();
    let finished = match out {
        PackOut::Upload(upload) => upload.finish().map_err(|e| repo.write_error(&key, e))?,
        PackOut::Spool(w) => {
            let mut file = w
                .into_inner()
                .map_err(|e| Error::io(&std::env::temp_dir(), e.into_error()))?;
            file.rewind()
                .map_err(|e| Error::io(&std::env::temp_dir(), e))?;
            let mut upload = store.create(&key).map_err(|e| repo.write_error(&key, e))?;
            io::copy(&mut file, &mut upload).map_err(|e| repo.write_error(&key, e))?;
            upload.finish().map_err(|e| repo.write_error(&key, e))?
        }
    };
    store
        .commit(vec![finished], Commit::KeepExisting)
        .map_err(|e| repo.write_error(&key, e))?;
    crate::repo::inventory::append_pack(repo, &written.id, written.stored, &written.blake3)
}
