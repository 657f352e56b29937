//! `bk-index write`: a sealed record stream becomes one sorted, compressed,
//! encrypted (optionally signed) snapshot in the repository.
//!
//! Records arrive sorted: bk-scan walks in snapshot order, and bk-hash and
//! bk-seal keep input order (within a memory budget, see
//! [`crate::stream::reorder`]). So on a directory the snapshot is compressed and
//! encrypted *while* the records arrive, through a small window that also
//! absorbs local disorder (hand-made or merged streams), and what is left
//! after the last record is the end of the message. A record that arrives
//! behind one already written (roots given out of order, a stage's reorder
//! budget exceeded) ends that attempt: the partial snapshot is dropped, never
//! committed, and everything is sorted first, as on remote storage, where
//! the snapshot is always written after the last record (an upload cannot
//! be left half-way as cheaply as a temporary file).

use std::cell::{OnceCell, RefCell};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::SystemTime;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::cli::IndexWriteArgs;
use crate::crypto::signature::SnapshotSigner;
use crate::crypto::{PassphraseSource, Recipients, SecretKeys};
use crate::error::{Error, Result};
use crate::local::snapcache::CacheWriter;
use crate::local::summaries::{save_summary, Summary};
use crate::record::extsort::{ExternalSorter, SortItem, Sorted};
use crate::record::{self, Kind, Record};
use crate::repo::authkey::{AuthKeys, StreamMac};
use crate::repo::id::ObjectId;
use crate::repo::lock::{LockKind, RepoLock};
use crate::repo::objects::ObjectSizes;
use crate::repo::snapshot_name::SnapshotName;
use crate::repo::trailer;
use crate::repo::{Repo, RepoHandle};

const PROGRAM: &str = "bk-index write";

/// Records held back per core to restore their order before the snapshot
/// is streamed: enough for the records in flight in a stage that does not
/// keep order (two queues of 16 per worker, one worker per core); what the
/// window still holds at the end is written after the last record, so it
/// is kept small.
const WINDOW_RECORDS_PER_CORE: usize = 512;

/// Bytes of record lines held back at most, whatever their number.
const WINDOW_BYTES: usize = 8 << 20;

/// Above this many object references, remote storage is listed rather
/// than asked object by object (a listing page holds 1,000 keys).
const LIST_OBJECTS_ABOVE: usize = 256;

/// Runs `bk-index write`; returns the exit status.
pub fn write(args: IndexWriteArgs) -> Result<i32> {
    let recipients = Recipients::load(&args.recipients.recipients)?;
    // Load (and unlock) the signing key before reading any input, so a
    // wrong passphrase fails early.
    let signer = args
        .sign_key
        .as_ref()
        .map(|k| {
            let keys = SecretKeys::load(
                k,
                &PassphraseSource {
                    file: args.passphrase_file.clone(),
                },
            )?;
            SnapshotSigner::from_secret(&keys)
        })
        .transpose()?;
    // Lock before reading stdin: in `bk-seal | bk-index write` both start
    // together, so the shared lock covers the whole pipeline with no gap.
    // In `bk-seal --init … | bk-index write` the repository only exists
    // once bk-seal is under way: then it is opened at the first record.
    let handle = args.repo.handle()?;
    let lock = crate::repo::lock::lock_if_repo_exists(&handle, PROGRAM, args.wait.wait)?;
    let target = Target {
        handle: RefCell::new(Some(handle)),
        repo: OnceCell::new(),
        keys: OnceCell::new(),
        id_key: args.id_key.clone(),
        lock: RefCell::new(lock),
        wait: args.wait.wait,
    };
    let host = crate::sys::host::file_safe(&args.host.unwrap_or_else(crate::sys::host::this_host));
    let maker = Maker {
        recipients: &recipients,
        signer: signer.as_ref(),
        host: &host,
        time: args.time,
    };
    let written = std::thread::scope(|scope| collect(scope, &target, maker))?;
    report(&written, signer.as_ref())
}

/// The repository, opened once it exists, the keys its snapshots are
/// authenticated with, and the lock that covers the run (only the main
/// thread touches it; the encoder gets the `Repo`).
struct Target {
    handle: RefCell<Option<RepoHandle>>,
    repo: OnceCell<Repo>,
    keys: OnceCell<AuthKeys>,
    id_key: Option<std::path::PathBuf>,
    lock: RefCell<Option<RepoLock>>,
    wait: std::time::Duration,
}

impl Target {
    /// The open repository; `None` while it does not exist yet.
    fn repo_if_exists(&self) -> Result<Option<&Repo>> {
        if self.repo.get().is_none() {
            let exists = match self.handle.borrow().as_ref() {
                Some(handle) => handle.exists()?,
                None => false,
            };
            if !exists {
                return Ok(None);
            }
            self.open()?;
        }
        Ok(self.repo.get())
    }

    /// The open repository, or the error that says why it cannot be.
    fn repo(&self) -> Result<&Repo> {
        self.open()?;
        self.repo
            .get()
            .ok_or_else(|| Error::repo("the repository could not be opened"))
    }

    /// The keys of the open repository.
    fn keys(&self) -> Result<&AuthKeys> {
        self.keys
            .get()
            .ok_or_else(|| Error::repo("the repository could not be opened"))
    }

    fn open(&self) -> Result<()> {
        let Some(handle) = self.handle.borrow_mut().take() else {
            return Ok(());
        };
        let repo = Repo::open_handle(handle)?;
        let keys = load_keys(&repo, self.id_key.as_deref())?;
        let _ = self.keys.set(keys);
        let mut lock = self.lock.borrow_mut();
        if lock.is_none() {
            *lock = Some(RepoLock::acquire(
                repo.store_arc(),
                LockKind::Shared,
                PROGRAM,
                self.wait,
            )?);
        }
        let _ = self.repo.set(repo);
        Ok(())
    }
}

/// The keys that authenticate the snapshot and the reuse cache, from this
/// machine's id key file (the one bk-seal uses).
fn load_keys(repo: &Repo, explicit: Option<&std::path::Path>) -> Result<AuthKeys> {
    let path = explicit.map_or_else(|| crate::repo::idkey::default_path(repo.id()), Into::into);
    let key = crate::repo::idkey::load_local(&path)?.ok_or_else(|| {
        Error::key(format!(
            "no id key for repository {} at {}: it authenticates the snapshot",
            repo.id(),
            path.display()
        ))
        .hint("give --id-key FILE (or BK_ID_KEY), the file bk-seal uses")
    })?;
    if key.check_value() != repo.config().id_key_check {
        return Err(Error::key(format!(
            "id key file {} does not belong to repository {} (check value differs)",
            path.display(),
            repo.id()
        )));
    }
    Ok(AuthKeys::derive(&key, repo.id()))
}

/// How this run's snapshot is made: the keys it is encrypted to, the key
/// that signs it, if any, and the host and time named in it.
#[derive(Clone, Copy)]
struct Maker<'a> {
    recipients: &'a Recipients,
    signer: Option<&'a SnapshotSigner>,
    host: &'a str,
    time: Option<SystemTime>,
}

/// A snapshot committed to the repository.
struct Written<'a> {
    repo: &'a Repo,
    summary: Summary,
}

/// Reads every record from stdin and writes the snapshot: streamed while
/// the records come in order, else sorted first. A checked input (see
/// [`crate::record`]) that ends before its end record, because a stage
/// before stopped early, fails here: the partial snapshot and its cache
/// are dropped, nothing is committed. An unchecked one is written, with a
/// note that its completeness could not be checked.
fn collect<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    target: &'env Target,
    maker: Maker<'env>,
) -> Result<Written<'env>> {
    let mut stream: Option<SnapshotStream<'scope, 'env>> = None;
    let mut tried = false;
    let mut sorter = ExternalSorter::default();
    let mut records = 0usize;
    let mut object_refs = 0usize;
    let mut input = record::stdin_records().checking(record::Check::Index);
    for rec in &mut input {
        let rec = rec?;
        records += 1;
        object_refs += rec.objects.as_ref().map_or(0, Vec::len);
        let item = sort_item(&rec)?;
        if !tried {
            tried = true;
            stream = start_stream(scope, target, maker)?;
        }
        match stream.as_mut() {
            Some(s) => {
                if let Some(behind) = s.offer(item, rec)? {
                    let Some(s) = stream.take() else {
                        unreachable!("stream checked above")
                    };
                    sorter = s.abandon()?;
                    sorter.push(behind).map_err(tmp_err)?;
                }
            }
            None => sorter.push(item).map_err(tmp_err)?,
        }
    }
    if records == 0 {
        return Err(Error::bad_input(
            "no records on stdin: not writing an empty snapshot (did an earlier stage of the pipeline fail?)",
        ));
    }
    if !input.is_checked() {
        crate::say!(
            "bk-index: note: the input did not start with a begin record (typed by hand, or filtered by jq?), so whether every stage before {PROGRAM} finished could not be checked"
        );
    }
    if let Some(s) = stream {
        return s.finish();
    }
    let repo = target.repo()?;
    crate::repo::check_recipients(repo, maker.recipients)?;
    let sorted = sorter.finish().map_err(tmp_err)?;
    write_sorted(repo, target.keys()?, sorted, object_refs, maker)
}

/// The stream is tried on a directory repository that exists by the first
/// record and takes these recipients; otherwise (`None`) records are
/// sorted first and the checks report at the end, as they always did.
fn start_stream<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    target: &'env Target,
    maker: Maker<'env>,
) -> Result<Option<SnapshotStream<'scope, 'env>>> {
    let Some(repo) = target.repo_if_exists()? else {
        return Ok(None);
    };
    if repo.store().is_remote() || crate::repo::check_recipients(repo, maker.recipients).is_err() {
        return Ok(None);
    }
    Ok(Some(SnapshotStream::start(
        scope,
        repo,
        target.keys()?,
        maker,
    )?))
}

fn tmp_err(e: io::Error) -> Error {
    Error::io(&std::env::temp_dir(), e)
}

fn sort_item(rec: &Record) -> Result<SortItem> {
    Ok(SortItem {
        root: rec
            .root_os()?
            .map(|r| r.as_bytes().to_vec())
            .unwrap_or_default(),
        path: rec.path_os()?.as_bytes().to_vec(),
        line: rec.to_line(),
    })
}

/// What every record of a snapshot goes through, in order, on its way in:
/// the check that its objects are stored, the counts, the MAC that ends
/// the snapshot, and the local plaintext copy that `bk-hash --reuse`
/// reads next time.
struct Catalogue {
    stored: ObjectSizes,
    /// Root and path of the record taken last: records come sorted, so a
    /// duplicate is the next one.
    last: Option<(Vec<u8>, Vec<u8>)>,
    summary: Summary,
    mac: Option<StreamMac>,
    cache: CacheWriter,
}

impl Catalogue {
    fn new(repo: &Repo, keys: &AuthKeys, maker: Maker, list_objects: bool) -> Result<Catalogue> {
        // Microseconds in the name keep two runs in one second in order.
        let name = SnapshotName::new(maker.time.unwrap_or_else(SystemTime::now), maker.host, keys);
        Ok(Catalogue {
            stored: ObjectSizes::new(repo, list_objects)?,
            last: None,
            mac: Some(keys.snapshot_mac(name.as_str())),
            summary: Summary::named(name.as_str()),
            cache: CacheWriter::new(repo.id(), keys),
        })
    }

    /// Takes one record on its way into the snapshot (`item.line`, which
    /// the snapshot gets followed by a newline).
    fn add(&mut self, repo: &Repo, item: &SortItem, rec: &Record) -> Result<()> {
        if self
            .last
            .as_ref()
            .is_some_and(|(root, path)| *root == item.root && *path == item.path)
        {
            return Err(Error::bad_input(format!(
                "{}: two records of root {} (no snapshot written; was a stream given twice?)",
                rec.display_path(),
                String::from_utf8_lossy(&item.root)
            )));
        }
        match &mut self.last {
            Some((root, path)) => {
                root.clone_from(&item.root);
                path.clone_from(&item.path);
            }
            None => self.last = Some((item.root.clone(), item.path.clone())),
        }
        check_sealed(repo, &self.stored, rec)?;
        self.summary.add(rec);
        if let Some(mac) = &mut self.mac {
            mac.update(&item.line);
            mac.update(b"\n");
        }
        self.cache.add(&item.root, &item.line);
        Ok(())
    }

    /// The line that ends the snapshot: the MAC of everything before it.
    fn trailer(&mut self) -> Vec<u8> {
        let mac = self.mac.take().map(StreamMac::finish).unwrap_or_default();
        trailer::line(trailer::Of::Snapshot, &mac)
    }

    /// Keeps the local copy once the snapshot is committed, or drops it.
    fn close(self, committed: bool) -> Summary {
        if committed {
            self.cache.commit();
        } else {
            self.cache.abort();
        }
        self.summary
    }
}

/// A snapshot may only name objects that are already in the repository.
fn check_sealed(repo: &Repo, stored: &ObjectSizes, rec: &Record) -> Result<()> {
    if rec.kind != Kind::File {
        return Ok(());
    }
    let shown = rec.display_path();
    let objects = rec.objects.as_ref().ok_or_else(|| {
        Error::bad_input(format!(
            "{shown}: file record has no objects (no snapshot written)"
        ))
        .hint("pipe the records through bk-seal first")
    })?;
    crate::repo::objects::check_objects_cover_size(rec.size, objects)
        .map_err(|why| Error::bad_input(format!("{shown}: {why} (no snapshot written)")))?;
    for obj in objects {
        let id = ObjectId::parse(&obj.id).map_err(|e| e.context(&shown))?;
        if stored.get(repo, &id)?.is_none() {
            return Err(Error::repo(format!(
                "{shown}: object {} is not in the repository (no snapshot written)",
                obj.id
            )));
        }
    }
    Ok(())
}

/// Encrypts `input` as the snapshot `name`, committed only if `input` ends
/// cleanly.
fn encrypt_snapshot(repo: &Repo, name: &str, input: impl Read, maker: Maker) -> Result<()> {
    repo.write_atomic(&repo.snapshot_key(name), |w: &mut dyn Write| {
        maker.recipients.encrypt_signed(
            input,
            w,
            true,
            maker.signer.map(SnapshotSigner::as_signing_key),
        )
    })
    .map_err(|e| e.context(format!("writing snapshot {name}")))
}

/// Writes the snapshot from records already sorted (after the last one
/// arrived).
fn write_sorted<'env>(
    repo: &'env Repo,
    keys: &AuthKeys,
    sorted: Sorted,
    object_refs: usize,
    maker: Maker,
) -> Result<Written<'env>> {
    let mut lines = SortedLines {
        catalogue: Catalogue::new(repo, keys, maker, object_refs > LIST_OBJECTS_ABOVE)?,
        sorted,
        repo,
        failure: None,
        buf: Vec::new(),
        pos: 0,
    };
    let name = lines.catalogue.summary.name.clone();
    let written = encrypt_snapshot(repo, &name, &mut lines, maker);
    let SortedLines {
        catalogue, failure, ..
    } = lines;
    let written = match failure {
        Some(e) => Err(e),
        None => written,
    };
    let summary = catalogue.close(written.is_ok());
    written.map(|()| Written { repo, summary })
}

/// The sorted records as NDJSON bytes for the encoder, each through the
/// [`Catalogue`] on the way. A failure is kept in `failure` and ends the
/// stream with an error, so no snapshot is committed.
struct SortedLines<'a> {
    catalogue: Catalogue,
    sorted: Sorted,
    repo: &'a Repo,
    failure: Option<Error>,
    buf: Vec<u8>,
    pos: usize,
}

impl SortedLines<'_> {
    fn next_line(&mut self) -> Result<Option<()>> {
        let Some(item) = self.sorted.next() else {
            if self.catalogue.mac.is_none() {
                return Ok(None);
            }
            self.buf = self.catalogue.trailer();
            self.pos = 0;
            return Ok(Some(()));
        };
        let item = item.map_err(tmp_err)?;
        let rec = Record::from_line(&item.line, 0)?;
        self.catalogue.add(self.repo, &item, &rec)?;
        self.buf = item.line;
        self.buf.push(b'\n');
        self.pos = 0;
        Ok(Some(()))
    }
}

impl Read for SortedLines<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.next_line() {
                Ok(Some(())) => {}
                Ok(None) => return Ok(0),
                Err(e) => {
                    self.failure = Some(e);
                    return Err(io::Error::other("snapshot input failed"));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A record waiting in the window, ordered by root and path.
struct Pending {
    item: SortItem,
    rec: Record,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed, so that the max-heap yields the smallest record first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.item.cmp_key(&self.item)
    }
}

/// What the encoder thread reads: batches of record lines, then the end.
enum Line {
    Records(Vec<u8>),
    End,
}

/// Record lines are handed to the encoder in batches of about this many
/// bytes (one channel message per line cost a thread wake-up each).
const BATCH_BYTES: usize = 64 << 10;

/// The snapshot being written while records still arrive.
struct SnapshotStream<'scope, 'env> {
    repo: &'env Repo,
    window: BinaryHeap<Pending>,
    window_bytes: usize,
    window_records: usize,
    /// Root and path of the last record written: nothing smaller may come.
    last: Option<SortItem>,
    catalogue: Catalogue,
    /// Every record written so far, for the sort if the stream is abandoned.
    written: ExternalSorter,
    /// Lines not yet handed to the encoder.
    batch: Vec<u8>,
    lines: Option<Sender<Line>>,
    encoder: Option<ScopedJoinHandle<'scope, Result<()>>>,
}

impl<'scope, 'env> SnapshotStream<'scope, 'env> {
    fn start(
        scope: &'scope Scope<'scope, 'env>,
        repo: &'env Repo,
        keys: &AuthKeys,
        maker: Maker<'env>,
    ) -> Result<Self> {
        let catalogue = Catalogue::new(repo, keys, maker, false)?;
        let name = catalogue.summary.name.clone();
        let (tx, rx) = bounded::<Line>(8);
        let encoder = scope.spawn(move || {
            let input = ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
                ended: false,
            };
            encrypt_snapshot(repo, &name, input, maker)
        });
        Ok(SnapshotStream {
            repo,
            window: BinaryHeap::new(),
            window_bytes: 0,
            window_records: WINDOW_RECORDS_PER_CORE
                * std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            last: None,
            catalogue,
            written: ExternalSorter::default(),
            batch: Vec::with_capacity(BATCH_BYTES + 4096),
            lines: Some(tx),
            encoder: Some(encoder),
        })
    }

    /// Takes one record; gives it back if it sorts before a record already
    /// written (then the stream must be abandoned).
    fn offer(&mut self, item: SortItem, rec: Record) -> Result<Option<SortItem>> {
        if self
            .last
            .as_ref()
            .is_some_and(|last| item.cmp_key(last) == Ordering::Less)
        {
            return Ok(Some(item));
        }
        self.window_bytes += item.line.len();
        self.window.push(Pending { item, rec });
        while self.window.len() > self.window_records || self.window_bytes > WINDOW_BYTES {
            self.emit_smallest()?;
        }
        Ok(None)
    }

    fn emit_smallest(&mut self) -> Result<()> {
        let Some(Pending { item, rec }) = self.window.pop() else {
            return Ok(());
        };
        self.window_bytes -= item.line.len();
        self.catalogue.add(self.repo, &item, &rec)?;
        self.batch.extend_from_slice(&item.line);
        self.batch.push(b'\n');
        if self.batch.len() >= BATCH_BYTES {
            self.send_batch()?;
        }
        self.last = Some(SortItem {
            root: item.root.clone(),
            path: item.path.clone(),
            line: Vec::new(),
        });
        self.written.push(item).map_err(tmp_err)
    }

    /// Hands the lines gathered so far to the encoder.
    fn send_batch(&mut self) -> Result<()> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_BYTES + 4096));
        let sent = self
            .lines
            .as_ref()
            .is_some_and(|tx| tx.send(Line::Records(batch)).is_ok());
        if !sent {
            // The encoder stopped: its error says why.
            return Err(self
                .join_encoder()
                .err()
                .unwrap_or_else(|| tmp_err(io::Error::other("the snapshot encoder stopped"))));
        }
        Ok(())
    }

    fn join_encoder(&mut self) -> Result<()> {
        self.lines = None;
        match self.encoder.take().map(ScopedJoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }

    /// Writes the rest in order and commits the snapshot.
    fn finish(mut self) -> Result<Written<'env>> {
        let emitted = (|| {
            while !self.window.is_empty() {
                self.emit_smallest()?;
            }
            let trailer = self.catalogue.trailer();
            self.batch.extend_from_slice(&trailer);
            self.send_batch()?;
            if let Some(tx) = &self.lines {
                // A failed send means the encoder stopped; join says why.
                let _ = tx.send(Line::End);
            }
            self.join_encoder()
        })();
        let summary = self.catalogue.close(emitted.is_ok());
        emitted.map(|()| Written {
            repo: self.repo,
            summary,
        })
    }

    /// Drops the partial snapshot (never committed) and returns every
    /// record taken so far, for sorting.
    fn abandon(mut self) -> Result<ExternalSorter> {
        // Without an end marker the encoder's input fails, so the
        // temporary file is removed rather than committed.
        let _ = self.join_encoder();
        self.catalogue.close(false);
        let mut sorter = self.written;
        for pending in self.window.into_vec() {
            sorter.push(pending.item).map_err(tmp_err)?;
        }
        Ok(sorter)
    }
}

/// The encoder's input: lines from the channel until the end marker; a
/// channel closed before it is an error, so nothing is committed.
struct ChannelReader {
    rx: Receiver<Line>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Line::Records(line)) => {
                    self.buf = line;
                    self.pos = 0;
                }
                Ok(Line::End) => {
                    self.ended = true;
                    return Ok(0);
                }
                Err(_) => return Err(io::Error::other("snapshot input ended early")),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Saves the summary for `list`, prints the name on stdout and a line on
/// stderr.
fn report(written: &Written, signer: Option<&SnapshotSigner>) -> Result<i32> {
    let summary = &written.summary;
    save_summary(written.repo, summary);
    let mut out = io::stdout().lock();
    writeln!(out, "{}", summary.name)
        .and_then(|_| out.flush())
        .map_err(record::stdout_error)?;
    let signed = signer
        .map(|k| format!(", signed by {}", k.fingerprint()))
        .unwrap_or_default();
    crate::say!(
        "bk-index: wrote snapshot {}: {} entries, {} files, {} bytes{signed}",
        summary.name,
        summary.entries,
        summary.files,
        summary.bytes
    );
    let certified = written.repo.store().list("keys").is_ok_and(|keys| {
        keys.iter()
            .any(|k| k.name.starts_with("certified-by-") && k.name.ends_with(".sig"))
    });
    if !certified {
        crate::say!(
            "bk-index: note: the repository's id key is not certified yet, so a machine with only your secret key could not tell your snapshots from forged ones: run `bk-index certify --repo {} --key SECRET` once where your secret key is",
            written.repo.location()
        );
    }
    Ok(0)
}
