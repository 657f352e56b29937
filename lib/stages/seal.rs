//! bk-seal: store every content not yet in the repository as an encrypted
//! object and add the object ids to the records.
//!
//! Small files become one object each; files above `--chunk-threshold` are
//! cut into content-defined chunks (FastCDC), each its own object, so an
//! edit in a large file stores only the chunks around it. A record that
//! already carries objects (reused by `bk-hash --reuse`) passes through
//! unread when all of them are present.
//!
//! Objects are blobs in packs (see [`crate::repo::packer`]): each is
//! encrypted on the thread that reads it, compressed first when it looks
//! compressible, and appended to an open pack; a full pack is made durable
//! and visible by a committer thread. Records go out as soon as they are
//! sealed; the end record goes out only after every pack is durable, and
//! `bk-index write` commits nothing without it (or, for an unchecked
//! stream, without finding every object in the repository), so a snapshot
//! never names a blob that is not durable.
//!
//! A checked input (one that starts with a begin record, see
//! [`crate::record`]) makes a checked output: a begin record first, and an
//! end record last, written only after every record and the last batch
//! commit, and only if the run finished (exit status 0 or 24) and the
//! input had its end records. A full disk, a lost repository, or an input
//! cut short therefore never leaves an end record for `bk-index write`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crate::cli::SealCli;
use crate::crypto::blob::looks_compressible;
use crate::crypto::Recipients;
use crate::error::{Error, Kind as ErrorKind, Result};
use crate::record::{self, ChunkHash, Kind, ObjectRef, Record};
use crate::repo::blobs::Blobs;
use crate::repo::chunker::Chunker;
use crate::repo::id::ObjectId;
use crate::repo::id::PackId;
use crate::repo::idkey::{self, IdKey};
use crate::repo::objects::REUSE_TOUCH_AFTER;
use crate::repo::packer::Packer;
use crate::repo::{Repo, StoreError};
use crate::stream::progress::Progress;
use crate::sys::source::{open_source, HashingReader};
use crate::sys::sync::lock;

pub use crate::repo::chunker::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};

/// Files up to this size are read whole into memory and compressed there
/// when they look compressible; larger ones (up to the chunk threshold)
/// are encrypted as they are read, without compression.
const IN_MEMORY_MAX: u64 = 4 << 20;

/// Everything the sealing workers share.
struct Sealer {
    repo: Repo,
    /// The repository's blobs, for deduplication.
    blobs: Blobs,
    /// Where new blobs go.
    packer: Packer,
    /// Blobs this run stored, with their stored length, and (as `None`)
    /// those a worker is storing right now.
    new_blobs: Mutex<HashMap<ObjectId, Option<u64>>>,
    /// Signalled whenever a worker is done storing a blob (or gave up).
    new_blob_done: Condvar,
    /// Packs of reused blobs whose age was looked at this run.
    touched: Mutex<HashSet<PackId>>,
    id_key: IdKey,
    chunk_threshold: u64,
    files: AtomicU64,
    reused: AtomicU64,
    read_bytes: AtomicU64,
    new_objects: AtomicU64,
    compressed: AtomicU64,
    pause: crate::stream::pause::Pause,
    /// Files being cut into chunks at once: at most one per chunk worker.
    chunking: Turns,
}

/// Runs bk-seal; returns the exit status.
pub fn run(cli: SealCli) -> Result<i32> {
    let started = std::time::Instant::now();
    let jobs = cli.jobs.count();
    let remote = cli.repo.repo.as_dir().is_none();
    if remote {
        // Many threads (record workers for the round trips, the S3
        // client's), bound by the network rather than the allocator. Set
        // before any of them starts.
        crate::sys::alloc::limit_arenas(1);
    }
    let recipients = Recipients::load(&cli.recipients.recipients)?;
    let repo = open_or_init(&cli, &recipients)?;
    // Shared lock for the whole run: no prune can run while it stores or
    // reuses objects (see `crate::stages::index::lifecycle`).
    let _lock = crate::repo::lock::RepoLock::acquire(
        repo.store_arc(),
        crate::repo::lock::LockKind::Shared,
        "bk-seal",
        cli.wait.wait,
    )?;
    crate::repo::check_recipients(&repo, &recipients)?;
    let id_key = load_id_key(&cli, &repo)?;
    let (blobs, _) = Blobs::open(&repo, &id_key, &[])?;
    let packer = Packer::new(&repo, blobs.pack_keys(), &recipients, cli.pack_size);
    let sealer = Sealer {
        repo,
        blobs,
        packer,
        new_blobs: Mutex::new(HashMap::new()),
        new_blob_done: Condvar::new(),
        touched: Mutex::new(HashSet::new()),
        id_key,
        chunk_threshold: cli.chunk.chunk_threshold,
        files: AtomicU64::new(0),
        reused: AtomicU64::new(0),
        read_bytes: AtomicU64::new(0),
        new_objects: AtomicU64::new(0),
        compressed: AtomicU64::new(0),
        pause: crate::stream::pause::Pause::new("bk-seal", cli.pause.pause_file.as_deref()),
        chunking: Turns::new(jobs),
    };
    let mut out = record::stdout_records();
    let mut input = record::stdin_records().checking(record::Check::Stage("bk-seal"));
    let checked = input.is_checked();
    if checked {
        out.write_begin().map_err(record::stdout_error)?;
    }
    let mut progress = Progress::new(cli.progress.show(), "bk-seal");
    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<ChunkJob>(jobs);
    let outcome = std::thread::scope(|scope| {
        // The chunk pool: hashes, and encrypts when new, the chunks of
        // large files, so that one huge file keeps every core busy.
        for _ in 0..jobs {
            let rx = chunk_rx.clone();
            let sealer = &sealer;
            scope.spawn(move || {
                for job in rx {
                    let _ = job
                        .reply
                        .send(sealer.store_chunk(&job.data, job.expect.as_deref()));
                }
            });
        }
        drop(chunk_rx);
        let chunk_tx = chunk_tx;
        seal_stream(&sealer, input, jobs, &chunk_tx, &mut out, &mut progress)
    });
    // Every pack durable before the end record (also after a failure:
    // what was stored stays, and the next run finds it).
    let written = sealer.packer.finish();
    let outcome = outcome?;
    let written = written?;
    let stored: u64 = written.iter().map(|w| w.stored).sum();
    // The packs written here go into the local index without being read
    // back (best effort: the next run reads their headers otherwise).
    if !written.is_empty() {
        let _ = Blobs::open(&sealer.repo, &sealer.id_key, &written);
    }
    let code = outcome.exit_code();
    if checked && crate::error::exit::finished(code) {
        out.write_end().map_err(record::stdout_error)?;
    }
    out.flush().map_err(record::stdout_error)?;
    progress.finish();
    crate::say!(
        "bk-seal: {} files seen, {} reused, {} new objects added ({} compressed), {} packs ({} bytes stored), {} bytes read, {:.1}s",
        sealer.files.load(Ordering::Relaxed),
        sealer.reused.load(Ordering::Relaxed),
        sealer.new_objects.load(Ordering::Relaxed),
        sealer.compressed.load(Ordering::Relaxed),
        written.len(),
        stored,
        sealer.read_bytes.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}

/// Seals the records of `input` with `jobs` workers, writing each in
/// input order as soon as it is sealed.
fn seal_stream(
    sealer: &Sealer,
    input: record::RecordReader<io::BufReader<record::StdinFd>>,
    jobs: usize,
    chunk_tx: &crossbeam_channel::Sender<ChunkJob>,
    out: &mut record::RecordWriter<io::Stdout>,
    progress: &mut Progress,
) -> Result<crate::error::Outcome> {
    crate::stream::pipeline::run(
        "bk-seal",
        jobs,
        crate::stream::pipeline::batch_for(false),
        move || input,
        |rec| {
            sealer.pause.wait();
            // A file that vanished or a malformed record spoils one
            // record; a repository or disk that fails spoils the run.
            sealer
                .seal(rec, chunk_tx)
                .map(|rec| {
                    let file_size = (rec.kind == Kind::File).then_some(rec.size);
                    let mut line = rec.to_line();
                    line.shrink_to_fit();
                    Some((line, file_size))
                })
                .map_err(|e| match e.kind() {
                    ErrorKind::Partial | ErrorKind::BadInput => e,
                    _ => e.fatal(),
                })
        },
        |(line, _): &(Vec<u8>, Option<u64>)| crate::stream::reorder::line_weight(line),
        |output: Option<(Vec<u8>, Option<u64>)>| {
            let Some((line, file_size)) = output else {
                // Nothing ready: what is written goes on down the pipe.
                return out.flush().map_err(record::stdout_error);
            };
            if let Some(size) = file_size {
                progress.add(1, size);
            }
            out.write_line(&line).map_err(record::stdout_error)
        },
    )
}

/// One chunk of a large file for the chunk pool to hash and, when new,
/// encrypt and write.
struct ChunkJob {
    data: Vec<u8>,
    /// The chunk's SHA-256 as bk-hash found it, when it did.
    expect: Option<String>,
    reply: crossbeam_channel::Sender<Result<ChunkDone, StoreError>>,
}

/// A chunk the pool has dealt with: its object.
struct ChunkDone {
    object: ObjectRef,
}

/// Chunks of one file being encrypted at once (bounds memory per file).
const CHUNKS_IN_FLIGHT: usize = 3;

/// Opens the repository, creating it first with `--init` when it does not
/// exist yet (a new id key is made and saved locally). Everything that can
/// be checked is checked before anything is made (the place is empty, the
/// id key file is new and can be written, the key encrypts to the
/// recipients), and a failure while creating removes what was made: either
/// there is a whole repository with its local id key afterwards, or
/// neither.
fn open_or_init(cli: &SealCli, recipients: &Recipients) -> Result<Repo> {
    let handle = cli.repo.handle()?;
    if !cli.init || handle.exists()? {
        return Repo::open_handle(handle);
    }
    Repo::check_creatable(&handle)?;
    // With --key the new repository is certified at once: the key must
    // unlock and be able to sign before anything is made.
    let certifier = cli
        .secret
        .load()?
        .map(|secret| {
            crate::crypto::signature::SnapshotSigner::from_secret(&secret)?;
            Ok::<_, Error>(secret)
        })
        .transpose()?;
    let id = Repo::new_id();
    let path = cli
        .id_key
        .clone()
        .unwrap_or_else(|| idkey::default_path(&id));
    idkey::check_new_local(&path, cli.id_key.is_some())?;
    let key = IdKey::generate();
    let encrypted = idkey::encrypt(&key, recipients)?;
    idkey::save_local(&key, &path)?;
    let created = Repo::create(
        handle,
        id,
        recipients.fingerprints(),
        key.check_value(),
        &encrypted,
    );
    let repo = match created {
        Ok(repo) => repo,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    crate::say!(
        "bk-seal: created repository {} (id {}); its id key is saved in {} (keep it private; the repository holds it only encrypted), check value {}",
        repo.location(),
        repo.id(),
        path.display(),
        key.check_value()
    );
    match &certifier {
        Some(secret) => {
            let cert = crate::repo::certify::certify(&repo, secret, &key)?;
            crate::say!(
                "bk-seal: certified the id key with {} ({}): a machine with only your secret key can authenticate this repository's snapshots",
                secret.describe(),
                repo.store().describe(&cert)
            );
        }
        None => crate::say!(
            "bk-seal: once, where your secret key is, run `bk-index certify --repo {} --key SECRET`: until then only this machine can tell your snapshots from forged ones",
            repo.location()
        ),
    }
    Ok(repo)
}

/// The id key: the local file, or recovered with the secret key.
fn load_id_key(cli: &SealCli, repo: &Repo) -> Result<IdKey> {
    let local = cli
        .id_key
        .clone()
        .unwrap_or_else(|| idkey::default_path(repo.id()));
    let secret = if local.exists() {
        None
    } else {
        cli.secret.load()?
    };
    idkey::for_repo(repo, Some(&local), secret.as_ref())
}

impl Sealer {
    /// Adds `objects` to a file record, storing the content if needed.
    fn seal(
        &self,
        mut rec: Record,
        chunk_tx: &crossbeam_channel::Sender<ChunkJob>,
    ) -> Result<Record> {
        if rec.kind != Kind::File {
            return Ok(rec);
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        let shown = rec.display_path();
        let mut sha = rec.sha256.clone().ok_or_else(|| {
            Error::bad_input(format!("{shown}: file record has no sha256"))
                .hint("pipe the records through bk-hash first")
        })?;
        if !self.objects_agree(&rec, &sha) {
            crate::say!(
                "bk-seal: {shown}: its objects do not match its size and sha256 (a damaged reuse cache, or an edited record): reading the file again"
            );
            rec.objects = None;
            sha = self.rehash(&rec)?;
            rec.sha256 = Some(sha.clone());
        }
        // The chunk hashes are bk-hash's word to bk-seal, not for the
        // snapshot.
        let chunks = rec.chunks.take();
        if self.objects_present(&rec)? {
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(rec);
        }
        let objects = if rec.size > self.chunk_threshold {
            let _turn = self.chunking.enter();
            match chunks {
                Some(chunks) => self.store_hashed_chunks(&rec, &chunks, &shown, chunk_tx)?,
                None => self.store_chunked(&rec, &sha, &shown, chunk_tx)?,
            }
        } else {
            self.store_whole(&rec, &sha, &shown)?
        };
        rec.objects = Some(objects);
        Ok(rec)
    }

    /// Whether the objects a record arrives with (reused by bk-hash) can
    /// be its content: their sizes add up to the file's, and a single
    /// object's id is the one its sha256 gives. A record without objects
    /// agrees trivially.
    fn objects_agree(&self, rec: &Record, sha: &str) -> bool {
        let Some(objects) = rec.objects.as_ref() else {
            return true;
        };
        let total = objects.iter().try_fold(0u64, |t, o| t.checked_add(o.size));
        if total != Some(rec.size) || (objects.is_empty() && rec.size > 0) {
            return false;
        }
        match objects.as_slice() {
            [one] => self.id_key.id_matches(sha, &one.id),
            _ => true,
        }
    }

    /// Hashes the file again, for a record whose hash cannot be trusted.
    fn rehash(&self, rec: &Record) -> Result<String> {
        let path = rec.source_path()?;
        let mut buf = vec![0u8; 128 << 10];
        let hashed = crate::stages::hash::hash_file(
            &path,
            rec.size,
            false,
            &mut buf,
            &std::sync::atomic::AtomicBool::new(false),
        )?;
        self.read_bytes.fetch_add(rec.size, Ordering::Relaxed);
        Ok(hashed.sha256)
    }

    /// Whether the record already names objects that are all in the
    /// repository with the sizes it says (a file reused by bk-hash).
    fn objects_present(&self, rec: &Record) -> Result<bool> {
        let Some(objects) = rec.objects.as_ref().filter(|o| !o.is_empty()) else {
            return Ok(false);
        };
        for obj in objects {
            let Ok(id) = ObjectId::parse(&obj.id) else {
                return Ok(false);
            };
            match self.known(&id)? {
                Some(size) if obj.stored.is_none_or(|s| s == size) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// One object for the whole file, checked against the record's size
    /// and sha256 as it is read.
    fn store_whole(&self, rec: &Record, sha: &str, shown: &str) -> Result<Vec<ObjectRef>> {
        let id = self.id_key.object_id(sha).map_err(|e| e.context(shown))?;
        if let Some(stored) = self.known(&id)? {
            return Ok(vec![obj_ref(id, rec.size, Some(stored))]);
        }
        let length = self.store_once(id, || self.read_and_store(id, rec, sha, shown))?;
        Ok(vec![obj_ref(id, rec.size, Some(length))])
    }

    /// Reads the file of `rec` (checking it against its size and sha256)
    /// and stores it as blob `id`; returns the stored length.
    fn read_and_store(&self, id: ObjectId, rec: &Record, sha: &str, shown: &str) -> Result<u64> {
        let file = open_source(&rec.source_path()?, shown)?;
        let mut reader = HashingReader::new(io::BufReader::with_capacity(256 << 10, file));
        let check = |reader: &HashingReader<_>| {
            if reader.count() != rec.size || reader.hex_digest() != sha {
                return Err(io::Error::other(ContentChanged));
            }
            Ok(())
        };
        let result = if rec.size <= IN_MEMORY_MAX {
            // Read whole (and checked) first: compressed if it looks
            // compressible.
            let mut data = Vec::with_capacity(rec.size as usize);
            let read =
                io::Read::read_to_end(&mut io::Read::take(&mut reader, rec.size + 1), &mut data)
                    .and_then(|_| check(&reader));
            match read {
                Ok(()) => {
                    let compress = looks_compressible(&data);
                    self.packer.store(id, rec.size, |session| {
                        let sealed = session.seal(&data, compress)?;
                        if compress && (sealed.len() as u64) < rec.size {
                            self.compressed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(sealed)
                    })
                }
                Err(e) => Err(StoreError::Fill(e)),
            }
        } else {
            self.packer.store(id, rec.size, |session| {
                let sealed = session.seal_stream(&mut reader, rec.size)?;
                check(&reader)?;
                Ok(sealed)
            })
        };
        self.read_bytes.fetch_add(reader.count(), Ordering::Relaxed);
        let (_, entry) = result.map_err(|e| store_error(e, shown))?;
        Ok(entry.length)
    }

    /// Content-defined chunks, each its own object, for a record without
    /// bk-hash's chunk list: the whole file is read and the whole-file hash
    /// checked at the end (chunks stored before a mismatch are sound
    /// objects of the content read, only the record is refused).
    fn store_chunked(
        &self,
        rec: &Record,
        sha: &str,
        shown: &str,
        chunk_tx: &crossbeam_channel::Sender<ChunkJob>,
    ) -> Result<Vec<ObjectRef>> {
        let file = open_source(&rec.source_path()?, shown)?;
        let mut reader = HashingReader::new(file);
        let mut in_flight = InFlight::new(shown);
        for chunk in Chunker::new(&mut reader) {
            let data = chunk.map_err(|e| unreadable(shown, &e))?;
            in_flight.push(send_chunk(chunk_tx, data, None)?)?;
        }
        let objects = in_flight.finish()?;
        let count = reader.count();
        self.read_bytes.fetch_add(count, Ordering::Relaxed);
        if count != rec.size || reader.hex_digest() != sha {
            return Err(changed_since_hashed(shown, "size or sha256 differs"));
        }
        Ok(objects)
    }

    /// Chunks bk-hash cut and hashed: only those the repository lacks are
    /// read (each checked against its hash in the pool), so an edit in a
    /// large file costs reading the edited chunks, not the file.
    fn store_hashed_chunks(
        &self,
        rec: &Record,
        chunks: &[ChunkHash],
        shown: &str,
        chunk_tx: &crossbeam_channel::Sender<ChunkJob>,
    ) -> Result<Vec<ObjectRef>> {
        check_chunk_list(chunks, rec.size, shown)?;
        let mut file = None;
        let mut offset = 0;
        let mut in_flight = InFlight::new(shown);
        for chunk in chunks {
            let id = self
                .id_key
                .object_id(&chunk.sha256)
                .map_err(|e| e.context(shown))?;
            let slot = match self.known(&id)? {
                Some(stored) => Slot::Done(ChunkDone {
                    object: obj_ref(id, chunk.size, Some(stored)),
                }),
                None => {
                    let source = match &mut file {
                        Some(source) => source,
                        None => file.insert(open_source(&rec.source_path()?, shown)?),
                    };
                    let data = read_chunk(source, offset, chunk.size, shown)?;
                    self.read_bytes.fetch_add(chunk.size, Ordering::Relaxed);
                    send_chunk(chunk_tx, data, Some(chunk.sha256.clone()))?
                }
            };
            in_flight.push(slot)?;
            offset += chunk.size;
        }
        in_flight.finish()
    }

    /// The chunk pool's work on one chunk: its id (from its SHA-256), and
    /// its object, stored unless the repository or this run has it.
    /// With `expect`, a chunk whose hash differs is refused: its file
    /// changed since bk-hash read it.
    fn store_chunk(&self, data: &[u8], expect: Option<&str>) -> Result<ChunkDone, StoreError> {
        let chunk_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data));
        if expect.is_some_and(|e| e != chunk_sha) {
            return Err(StoreError::Fill(io::Error::other(ContentChanged)));
        }
        let id = self
            .id_key
            .object_id(&chunk_sha)
            .map_err(StoreError::Write)?;
        let size = data.len() as u64;
        if let Some(stored) = self.known(&id).map_err(StoreError::Write)? {
            return Ok(ChunkDone {
                object: obj_ref(id, size, Some(stored)),
            });
        }
        let length = self.store_once(id, || {
            let compress = looks_compressible(data);
            let (_, entry) = self.packer.store(id, size, |session| {
                let sealed = session.seal(data, compress)?;
                if compress && (sealed.len() as u64) < size {
                    self.compressed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(sealed)
            })?;
            Ok(entry.length)
        })?;
        Ok(ChunkDone {
            object: obj_ref(id, size, Some(length)),
        })
    }

    /// The stored length of blob `id` if the repository or this run has
    /// it. A blob reused from a pack last modified more than
    /// [`REUSE_TOUCH_AFTER`] ago gets its pack's time set to now (once per
    /// pack and run), so that `bk-index prune`'s grace period protects it
    /// until the records naming it are in a snapshot (best effort).
    fn known(&self, id: &ObjectId) -> Result<Option<u64>> {
        if let Some(&Some(len)) = lock(&self.new_blobs).get(id) {
            return Ok(Some(len));
        }
        let Some(loc) = self.blobs.locate(id)? else {
            return Ok(None);
        };
        if lock(&self.touched).insert(loc.pack) {
            let key = loc.pack.key();
            let old = self
                .repo
                .store()
                .stat(&key)
                .ok()
                .flatten()
                .and_then(|s| s.modified)
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > REUSE_TOUCH_AFTER);
            if old {
                self.repo.store().touch(&key);
            }
        }
        Ok(Some(loc.length))
    }

    /// Runs `store`, which stores blob `id` (not in the repository) and
    /// returns its stored length, unless this run has stored that blob
    /// already. While another worker stores it, this one waits and takes
    /// its length (or, if that worker gives up, stores it itself). So a
    /// content that comes twice in one run (copies of a file, a chunk that
    /// two files share) is stored once, as it is across runs.
    fn store_once<E>(
        &self,
        id: ObjectId,
        store: impl FnOnce() -> std::result::Result<u64, E>,
    ) -> std::result::Result<u64, E> {
        {
            let mut blobs = lock(&self.new_blobs);
            loop {
                match blobs.get(&id) {
                    Some(&Some(len)) => return Ok(len),
                    Some(None) => {
                        blobs = self
                            .new_blob_done
                            .wait(blobs)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    None => {
                        blobs.insert(id, None);
                        break;
                    }
                }
            }
        }
        // Given up unless stored (also if `store` panics, so that no
        // worker waits for it for ever).
        let mut claim = Claim {
            sealer: self,
            id,
            stored: None,
        };
        let len = store()?;
        claim.stored = Some(len);
        self.new_objects.fetch_add(1, Ordering::Relaxed);
        Ok(len)
    }
}

/// A blob a worker is storing (see [`Sealer::store_once`]): when dropped,
/// its length is recorded, or the claim is given up, and the workers
/// waiting for it are woken.
struct Claim<'a> {
    sealer: &'a Sealer,
    id: ObjectId,
    stored: Option<u64>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        {
            let mut blobs = lock(&self.sealer.new_blobs);
            match self.stored {
                Some(len) => {
                    blobs.insert(self.id, Some(len));
                }
                None => {
                    blobs.remove(&self.id);
                }
            }
        }
        self.sealer.new_blob_done.notify_all();
    }
}

/// Lets at most `n` threads at a time through. A file being cut into
/// chunks holds a chunk of up to [`CHUNK_MAX`] bytes waiting for the pool
/// (and, without bk-hash's chunk list, its chunker's buffer), so the pool's
/// size, not the number of record workers (four per core on remote
/// storage, for the round trips of small files), should bound how many
/// files are cut at once: more would not be faster, the pool being the
/// bottleneck.
struct Turns {
    taken: crossbeam_channel::Sender<()>,
    given_back: crossbeam_channel::Receiver<()>,
}

impl Turns {
    fn new(n: usize) -> Turns {
        let (taken, given_back) = crossbeam_channel::bounded(n.max(1));
        Turns { taken, given_back }
    }

    /// Waits for a turn, which lasts until the returned guard is dropped.
    fn enter(&self) -> Turn<'_> {
        // Both ends live in `self`, so the send cannot fail.
        let _ = self.taken.send(());
        Turn(self)
    }
}

/// A turn through [`Turns`], given back when dropped.
struct Turn<'a>(&'a Turns);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let _ = self.0.given_back.try_recv();
    }
}

/// The pool's answer on one chunk.
type ChunkReply = crossbeam_channel::Receiver<Result<ChunkDone, StoreError>>;

/// Hands one chunk to the pool.
fn send_chunk(
    chunk_tx: &crossbeam_channel::Sender<ChunkJob>,
    data: Vec<u8>,
    expect: Option<String>,
) -> Result<Slot> {
    let (reply, result) = crossbeam_channel::bounded(1);
    chunk_tx
        .send(ChunkJob {
            data,
            expect,
            reply,
        })
        .map_err(|_| Error::fault("chunk pool stopped"))?;
    Ok(Slot::Sent(result))
}

/// One chunk of a file, in file order: known already, or with the pool.
enum Slot {
    Done(ChunkDone),
    Sent(ChunkReply),
}

/// The chunks of one file on their way to becoming its object list, at
/// most [`CHUNKS_IN_FLIGHT`] of them with the pool at once.
struct InFlight<'a> {
    shown: &'a str,
    slots: std::collections::VecDeque<Slot>,
    objects: Vec<ObjectRef>,
}

impl<'a> InFlight<'a> {
    fn new(shown: &'a str) -> Self {
        InFlight {
            shown,
            slots: Default::default(),
            objects: Vec::new(),
        }
    }

    /// Adds the next chunk, first waiting for the oldest when too many are
    /// with the pool.
    fn push(&mut self, slot: Slot) -> Result<()> {
        self.slots.push_back(slot);
        while self.slots.len() > CHUNKS_IN_FLIGHT {
            self.take_oldest()?;
        }
        Ok(())
    }

    fn take_oldest(&mut self) -> Result<()> {
        let done = match self.slots.pop_front() {
            Some(Slot::Done(done)) => done,
            Some(Slot::Sent(result)) => result
                .recv()
                .map_err(|_| Error::fault("chunk pool stopped"))?
                .map_err(|e| store_error(e, self.shown))?,
            None => return Ok(()),
        };
        self.objects.push(done.object);
        Ok(())
    }

    /// The file's objects in order.
    fn finish(mut self) -> Result<Vec<ObjectRef>> {
        while !self.slots.is_empty() {
            self.take_oldest()?;
        }
        Ok(self.objects)
    }
}

/// Checks bk-hash's chunk list before trusting it with reads: sizes that
/// add up to the file's and fit a chunk.
fn check_chunk_list(chunks: &[ChunkHash], size: u64, shown: &str) -> Result<()> {
    let fits = |c: &ChunkHash| c.size > 0 && c.size <= u64::from(CHUNK_MAX);
    let total = chunks.iter().try_fold(0u64, |t, c| t.checked_add(c.size));
    if !chunks.iter().all(fits) || total != Some(size) {
        return Err(Error::bad_input(format!(
            "{shown}: its \"chunks\" do not add up to its size in chunks of at most {CHUNK_MAX} bytes"
        )));
    }
    Ok(())
}

/// Reads one chunk of a source file (into fresh capacity: no zeroing pass
/// over memory that the read overwrites anyway).
fn read_chunk(file: &mut std::fs::File, offset: u64, size: u64, shown: &str) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut data = Vec::with_capacity(size as usize);
    let read = file
        .seek(SeekFrom::Start(offset))
        .and_then(|_| file.take(size).read_to_end(&mut data));
    match read {
        Ok(n) if n as u64 == size => Ok(data),
        Ok(_) => Err(changed_since_hashed(shown, "shorter now")),
        Err(e) => Err(unreadable(shown, &e)),
    }
}

fn obj_ref(id: ObjectId, size: u64, stored: Option<u64>) -> ObjectRef {
    ObjectRef {
        id: id.to_string(),
        size,
        stored,
    }
}

/// The cause a fill closure gives when the file's content is not the one
/// bk-hash hashed, told apart from read errors by its type.
#[derive(Debug)]
struct ContentChanged;

impl std::fmt::Display for ContentChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("content changed while reading")
    }
}

impl std::error::Error for ContentChanged {}

/// The error for a failed object write: a changed or unreadable source is
/// "partial", a failing repository is reported as such.
fn store_error(err: StoreError, shown: &str) -> Error {
    match err {
        StoreError::Fill(e) if e.get_ref().is_some_and(|c| c.is::<ContentChanged>()) => {
            changed_since_hashed(shown, "size or sha256 differs")
        }
        StoreError::Fill(e) => unreadable(shown, &e),
        StoreError::Write(e) => e.context(format!("storing {shown}")),
    }
}

/// The error for a source file that could not be read: that file is left
/// out (exit 24), the run goes on.
fn unreadable(shown: &str, err: &io::Error) -> Error {
    Error::partial(format!(
        "{shown}: {}; not stored",
        crate::error::io_cause(err)
    ))
}

/// The error for a source file whose content is not what bk-hash hashed:
/// that file is left out (exit 24), the run goes on.
fn changed_since_hashed(shown: &str, how: &str) -> Error {
    Error::partial(format!(
        "{shown}: changed since it was hashed ({how}); not stored"
    ))
}
