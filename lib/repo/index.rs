//! The local index of a repository's blobs: where each blob is (pack,
//! offset, length), kept by each machine in its cache and brought up to
//! date from the packs' own headers (see [`crate::repo::pack`]).
//!
//! The repository holds no index file: every pack carries the list of its
//! blobs in its encrypted header, so a pack is indexed the moment it is
//! durable, a crashed run leaves nothing unindexed, and nothing but pack
//! counts and sizes is visible to the storage operator. [`Index::sync`]
//! lists `packs/`, reads the header of every pack it has not seen (one
//! ranged read each), forgets packs that are gone, and rewrites the cache
//! file:
//!
//! ```text
//! $XDG_CACHE_HOME/bk/<repo id>/index/blobs.idx
//!   "bkindex2" | packs u64 | blobs u64 | check 8
//!   packs × (id 32 | size u64)
//!   blobs × (id 32 | pack number u32 | 0 u32 | offset u64 | length u64 | size u64), sorted by id
//! ```
//!
//! `check` is the first 8 bytes of BLAKE3 over the first 24 bytes and the
//! BLAKE3 of everything after the head. Opening the file checks it (one
//! sequential read, about 30 ms for a million blobs), so a file a disk
//! error or a crash damaged is never trusted: what the index says goes
//! into snapshots (each blob's stored length) and decides what is not
//! stored again. A damaged file is said on stderr and built again from
//! the packs' headers.
//!
//! Lookups binary-search it on disk: memory holds the pack table (40 bytes
//! a pack) and one id per [`FENCE`] blobs (a quarter of a byte a blob),
//! not the blobs, so a million blobs cost about 300 KiB of memory. Merging
//! sorts new entries in runs of [`RUN_ENTRIES`] spilled to disk, so a first
//! sync of a large repository is bounded in memory too.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repo::id::{ObjectId, PackId};
use crate::repo::pack::{self, BlobEntry, HeaderError, PackKeys, WrittenPack};
use crate::repo::Repo;

const MAGIC: &[u8; 8] = b"bkindex2";
const HEAD: u64 = 32;
const PACK_LEN: u64 = 40;
const ENTRY_LEN: usize = 64;

/// Blobs per fence: one id of every this many stays in memory, and a
/// lookup reads one block of this many entries (8 KiB).
pub const FENCE: usize = 128;

/// Entries sorted in memory at once while merging (16 MiB).
pub const RUN_ENTRIES: usize = 256 << 10;

/// A pack the index knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Its id.
    pub id: PackId,
    /// Its stored size.
    pub size: u64,
}

/// Where a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The pack holding it.
    pub pack: PackId,
    /// Offset of the blob in the pack.
    pub offset: u64,
    /// Bytes of the blob (its OpenPGP message).
    pub length: u64,
    /// Bytes of plaintext it holds.
    pub size: u64,
}

/// One entry of the index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Raw {
    id: [u8; 32],
    pack: u32,
    offset: u64,
    length: u64,
    size: u64,
}

impl Raw {
    fn encode(&self, out: &mut [u8; ENTRY_LEN]) {
        out[..32].copy_from_slice(&self.id);
        out[32..36].copy_from_slice(&self.pack.to_le_bytes());
        out[36..40].copy_from_slice(&[0; 4]);
        out[40..48].copy_from_slice(&self.offset.to_le_bytes());
        out[48..56].copy_from_slice(&self.length.to_le_bytes());
        out[56..64].copy_from_slice(&self.size.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Raw {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        Raw {
            id,
            pack: u32::from_le_bytes(b[32..36].try_into().unwrap_or([0; 4])),
            offset: u64_at(40),
            length: u64_at(48),
            size: u64_at(56),
        }
    }

    fn key(&self) -> ([u8; 32], u32) {
        (self.id, self.pack)
    }
}

/// The index of one repository, open for lookups.
#[derive(Debug)]
pub struct Index {
    file: Option<File>,
    packs: Vec<PackInfo>,
    count: u64,
    fences: Vec<[u8; 32]>,
}

/// What a sync found.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncReport {
    /// Packs whose headers were read.
    pub read: usize,
    /// Packs that were gone.
    pub gone: usize,
    /// Packs whose headers could not be used (each named on stderr).
    pub unusable: usize,
}

impl Index {
    /// Brings the local index of `repo` up to date with its packs and
    /// opens it. Packs in `known` (written by this process) are taken as
    /// they are instead of reading their headers back. A pack whose header
    /// does not verify is named on stderr and left out (its blobs count
    /// as absent, so a backup stores them again).
    pub fn sync(
        repo: &Repo,
        keys: &PackKeys,
        known: &[WrittenPack],
    ) -> Result<(Index, SyncReport)> {
        Index::sync_with(repo, keys, known, false)
    }

    /// Like [`Index::sync`], but reads the header of every pack again,
    /// even of those the local index already knows by id and size: a pack
    /// whose bytes were altered in place (its size kept) is then found and
    /// left out, and a backup stores its blobs again. What `bk-verify
    /// --read-data` does, which reads every blob anyway.
    pub fn sync_all(repo: &Repo, keys: &PackKeys) -> Result<(Index, SyncReport)> {
        Index::sync_with(repo, keys, &[], true)
    }

    fn sync_with(
        repo: &Repo,
        keys: &PackKeys,
        known: &[WrittenPack],
        again: bool,
    ) -> Result<(Index, SyncReport)> {
        let dir = cache_dir(repo.id());
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(&lock_path, io::Error::from(e)))?;
        let path = dir.join("blobs.idx");
        remove_leftovers(&dir);
        let current = if again {
            Index::empty()
        } else {
            match Index::open_file(&path) {
                Ok(index) => index,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Index::empty(),
                Err(e) => {
                    crate::say!(
                        "{}: the local index {} cannot be used ({e}); building it again from the packs' headers",
                        crate::say::program_name(),
                        path.display()
                    );
                    Index::empty()
                }
            }
        };
        let mut listed: Vec<PackInfo> = Vec::new();
        repo.store()
            .walk("packs", &mut |rel, stat| {
                if let Some(id) = PackId::from_key(rel) {
                    listed.push(PackInfo {
                        id,
                        size: stat.size,
                    });
                }
            })
            .map_err(|e| repo.error("packs", &e))?;
        listed.sort_by_key(|p| p.id);
        listed.dedup_by_key(|p| p.id);
        let old: HashMap<PackId, (u32, u64)> = current
            .packs
            .iter()
            .enumerate()
            .map(|(n, p)| (p.id, (n as u32, p.size)))
            .collect();
        let fresh: Vec<PackInfo> = listed
            .iter()
            .filter(|p| old.get(&p.id).is_none_or(|&(_, size)| size != p.size))
            .copied()
            .collect();
        let kept = listed.len() - fresh.len();
        let mut report = SyncReport {
            gone: current.packs.len() - kept,
            ..SyncReport::default()
        };
        if fresh.is_empty() && report.gone == 0 && current.file.is_some() {
            return Ok((current, report));
        }
        let known: HashMap<PackId, &WrittenPack> = known.iter().map(|w| (w.id, w)).collect();
        // The new table: packs kept (in their old order), then the fresh
        // ones that could be read.
        let mut table: Vec<PackInfo> = Vec::with_capacity(listed.len());
        let mut renumber: HashMap<u32, u32> = HashMap::new();
        let listed_ids: HashMap<PackId, u64> = listed.iter().map(|p| (p.id, p.size)).collect();
        for (n, p) in current.packs.iter().enumerate() {
            if listed_ids.get(&p.id) == Some(&p.size) {
                renumber.insert(n as u32, table.len() as u32);
                table.push(*p);
            }
        }
        let mut spill = Spill::new(&dir);
        // Headers are read a few packs at a time (as many as read at once)
        // and their entries spilled before the next are read, so a first
        // sync of a large repository holds a few headers, not all of them.
        let threads = header_threads(repo);
        for (info, result) in fresh.chunks(threads).flat_map(|batch| {
            batch
                .iter()
                .zip(read_headers(repo, keys, batch, &known, threads))
        }) {
            match result {
                Ok(entries) => {
                    let number = table.len() as u32;
                    table.push(*info);
                    report.read += 1;
                    for e in entries {
                        spill.push(Raw {
                            id: *e.id.as_bytes(),
                            pack: number,
                            offset: e.offset,
                            length: e.length,
                            size: e.size,
                        })?;
                    }
                }
                Err(HeaderError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(HeaderError::Io(e)) => return Err(repo.error(&info.id.key(), &e)),
                Err(HeaderError::Invalid(why)) => {
                    report.unusable += 1;
                    crate::say!(
                        "{}: pack {}: {why}; its blobs are not used",
                        crate::say::program_name(),
                        repo.store().describe(&info.id.key())
                    );
                }
            }
        }
        let runs = spill.finish()?;
        let tmp = dir.join(format!("blobs.idx.tmp-{}", std::process::id()));
        let result = write_merged(&tmp, &table, &current, &renumber, runs);
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&tmp, e));
        }
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        let index = Index::open_written(&path).map_err(|e| Error::io(&path, e))?;
        Ok((index, report))
    }

    /// An index of these packs and their blobs, written to `dir` (tests
    /// of what reads an index, without storage).
    pub fn from_packs(dir: &Path, packs: &[(PackInfo, Vec<BlobEntry>)]) -> io::Result<Index> {
        let mut spill = Spill::new(dir);
        let table: Vec<PackInfo> = packs.iter().map(|(p, _)| *p).collect();
        for (n, (_, entries)) in packs.iter().enumerate() {
            for e in entries {
                spill
                    .push(Raw {
                        id: *e.id.as_bytes(),
                        pack: n as u32,
                        offset: e.offset,
                        length: e.length,
                        size: e.size,
                    })
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
        }
        let runs = spill
            .finish()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let path = dir.join("blobs.idx");
        write_merged(&path, &table, &Index::empty(), &HashMap::new(), runs)?;
        Index::open_written(&path)
    }

    fn empty() -> Index {
        Index {
            file: None,
            packs: Vec::new(),
            count: 0,
            fences: Vec::new(),
        }
    }

    /// Opens an index file, checking its check value first, and reads its
    /// pack table and fences.
    fn open_file(path: &Path) -> io::Result<Index> {
        Index::open_with(path, true)
    }

    /// Opens the index file this process has just written (its check
    /// value computed as it was written, so not read back to check).
    fn open_written(path: &Path) -> io::Result<Index> {
        Index::open_with(path, false)
    }

    fn open_with(path: &Path, check_value: bool) -> io::Result<Index> {
        let file = File::open(path)?;
        let mut head = [0u8; HEAD as usize];
        file.read_exact_at(&mut head, 0)?;
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
        let (packs, count) = (u64_at(8), u64_at(16));
        let len = file.metadata()?.len();
        let expect = HEAD
            .checked_add(packs.saturating_mul(PACK_LEN))
            .and_then(|n| n.checked_add(count.checked_mul(ENTRY_LEN as u64)?));
        if &head[..8] != MAGIC || expect != Some(len) || packs > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an index file of this bk",
            ));
        }
        if check_value {
            let mut body = blake3::Hasher::new();
            let mut r = BufReader::with_capacity(256 << 10, &file);
            io::Seek::seek(&mut r, io::SeekFrom::Start(HEAD))?;
            io::copy(&mut r, &mut body)?;
            if head[24..32] != check(&head, &body) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "its checksum does not match: it is damaged",
                ));
            }
        }
        let mut table = vec![0u8; (packs * PACK_LEN) as usize];
        file.read_exact_at(&mut table, HEAD)?;
        let packs: Vec<PackInfo> = table
            .chunks_exact(PACK_LEN as usize)
            .map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(&c[..32]);
                PackInfo {
                    id: PackId::from_bytes(id),
                    size: u64::from_le_bytes(c[32..40].try_into().unwrap_or([0; 8])),
                }
            })
            .collect();
        let mut index = Index {
            file: Some(file),
            packs,
            count,
            fences: Vec::new(),
        };
        let mut fences = Vec::with_capacity((count as usize).div_ceil(FENCE));
        let mut id = [0u8; 32];
        for n in (0..count).step_by(FENCE) {
            index.file()?.read_exact_at(&mut id, index.entry_at(n))?;
            fences.push(id);
        }
        index.fences = fences;
        Ok(index)
    }

    fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("the index is empty"))
    }

    fn entries_start(&self) -> u64 {
        HEAD + self.packs.len() as u64 * PACK_LEN
    }

    fn entry_at(&self, n: u64) -> u64 {
        self.entries_start() + n * ENTRY_LEN as u64
    }

    /// Blobs in the index (a blob stored twice counts twice).
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the index holds no blob.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The packs the index knows.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// Where blob `id` is, if the repository has it.
    pub fn get(&self, id: &ObjectId) -> io::Result<Option<Location>> {
        let key = id.as_bytes();
        // The last block whose first id is not greater than the key.
        let block = self.fences.partition_point(|f| f <= key);
        if block == 0 {
            return Ok(None);
        }
        let first = ((block - 1) * FENCE) as u64;
        let n = (self.count - first).min(FENCE as u64) as usize;
        let mut buf = vec![0u8; n * ENTRY_LEN];
        self.file()?.read_exact_at(&mut buf, self.entry_at(first))?;
        let entries: Vec<&[u8]> = buf.chunks_exact(ENTRY_LEN).collect();
        let at = entries.partition_point(|e| &e[..32] < key.as_slice());
        let Some(found) = entries.get(at).filter(|e| &e[..32] == key.as_slice()) else {
            return Ok(None);
        };
        let raw = Raw::decode(found);
        Ok(self.location(&raw))
    }

    fn location(&self, raw: &Raw) -> Option<Location> {
        let pack = self.packs.get(raw.pack as usize)?;
        Some(Location {
            pack: pack.id,
            offset: raw.offset,
            length: raw.length,
            size: raw.size,
        })
    }

    /// Calls `f` with every blob id and location, in id order (a blob
    /// stored in two packs comes twice), streaming.
    pub fn for_each(&self, f: &mut dyn FnMut(ObjectId, Location)) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut r = BufReader::with_capacity(256 << 10, file);
        io::Seek::seek(&mut r, io::SeekFrom::Start(self.entries_start()))?;
        let mut buf = [0u8; ENTRY_LEN];
        for _ in 0..self.count {
            r.read_exact(&mut buf)?;
            let raw = Raw::decode(&buf);
            if let Some(loc) = self.location(&raw) {
                f(ObjectId::from_bytes(raw.id), loc);
            }
        }
        Ok(())
    }
}

/// Removes the temporary files of a sync that was killed (the caller
/// holds the lock, so no sync is writing one now).
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .as_encoded_bytes()
            .starts_with(b"blobs.idx.tmp-")
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Where the local index of repository `repo_id` lives.
pub fn cache_dir(repo_id: &str) -> PathBuf {
    crate::sys::paths::cache_home()
        .join("bk")
        .join(repo_id)
        .join("index")
}

/// How many pack headers are read at once: on remote storage each is a
/// round trip, so many.
fn header_threads(repo: &Repo) -> usize {
    if repo.store().is_remote() {
        16
    } else {
        2
    }
}

/// The headers of `packs`, in their order: taken from `known` where this
/// process wrote the pack, else read (on remote storage by several
/// threads at once: each is a round trip).
fn read_headers(
    repo: &Repo,
    keys: &PackKeys,
    packs: &[PackInfo],
    known: &HashMap<PackId, &WrittenPack>,
    threads: usize,
) -> Vec<std::result::Result<Vec<BlobEntry>, HeaderError>> {
    let read = |p: &PackInfo| match known.get(&p.id) {
        Some(w) if w.stored == p.size => Ok(w.entries.clone()),
        _ => pack::read_header(repo.store(), &p.id, p.size, keys),
    };
    if packs.len() < 2 {
        return packs.iter().map(read).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<_>>> =
        packs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(packs.len()) {
            s.spawn(|| loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = packs.get(n) else { break };
                *crate::sys::sync::lock(&results[n]) = Some(read(p));
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(HeaderError::Invalid("not read".into())))
        })
        .collect()
}

/// New entries, sorted in runs of [`RUN_ENTRIES`] and spilled to
/// temporary files beside the index.
struct Spill {
    dir: PathBuf,
    buf: Vec<Raw>,
    runs: Vec<File>,
}

impl Spill {
    fn new(dir: &Path) -> Spill {
        Spill {
            dir: dir.to_path_buf(),
            buf: Vec::new(),
            runs: Vec::new(),
        }
    }

    fn push(&mut self, raw: Raw) -> Result<()> {
        self.buf.push(raw);
        if self.buf.len() >= RUN_ENTRIES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.buf.sort_unstable_by_key(Raw::key);
        let file = tempfile::tempfile_in(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let mut w = BufWriter::with_capacity(256 << 10, file);
        let mut enc = [0u8; ENTRY_LEN];
        for raw in self.buf.drain(..) {
            raw.encode(&mut enc);
            w.write_all(&enc).map_err(|e| Error::io(&self.dir, e))?;
        }
        let mut file = w
            .into_inner()
            .map_err(|e| Error::io(&self.dir, e.into_error()))?;
        io::Seek::rewind(&mut file).map_err(|e| Error::io(&self.dir, e))?;
        self.runs.push(file);
        Ok(())
    }

    /// The sorted runs: the last one stays in memory.
    fn finish(mut self) -> Result<Runs> {
        self.buf.sort_unstable_by_key(Raw::key);
        Ok(Runs {
            files: self.runs,
            last: self.buf,
        })
    }
}

/// Sorted runs of new entries.
struct Runs {
    files: Vec<File>,
    last: Vec<Raw>,
}

/// A sorted source of entries for the merge.
enum Source<'a> {
    Old {
        r: BufReader<&'a File>,
        left: u64,
        renumber: &'a HashMap<u32, u32>,
    },
    Run {
        r: BufReader<File>,
    },
    Mem(std::vec::IntoIter<Raw>),
}

impl Source<'_> {
    fn next(&mut self) -> io::Result<Option<Raw>> {
        let mut buf = [0u8; ENTRY_LEN];
        match self {
            Source::Old { r, left, renumber } => loop {
                if *left == 0 {
                    return Ok(None);
                }
                *left -= 1;
                r.read_exact(&mut buf)?;
                let mut raw = Raw::decode(&buf);
                if let Some(&n) = renumber.get(&raw.pack) {
                    raw.pack = n;
                    return Ok(Some(raw));
                }
            },
            Source::Run { r } => match r.read_exact(&mut buf) {
                Ok(()) => Ok(Some(Raw::decode(&buf))),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
                Err(e) => Err(e),
            },
            Source::Mem(it) => Ok(it.next()),
        }
    }
}

/// Writes the index file `path`: the pack table, then the entries of
/// `old` (renumbered, those of gone packs dropped) merged with `runs`.
fn write_merged(
    path: &Path,
    table: &[PackInfo],
    old: &Index,
    renumber: &HashMap<u32, u32>,
    runs: Runs,
) -> io::Result<()> {
    let mut sources: Vec<Source> = Vec::new();
    if let Some(file) = &old.file {
        let mut r = BufReader::with_capacity(256 << 10, file);
        io::Seek::seek(&mut r, io::SeekFrom::Start(old.entries_start()))?;
        sources.push(Source::Old {
            r,
            left: old.count,
            renumber,
        });
    }
    for f in runs.files {
        sources.push(Source::Run {
            r: BufReader::with_capacity(64 << 10, f),
        });
    }
    sources.push(Source::Mem(runs.last.into_iter()));
    let mut heads: Vec<Option<Raw>> = Vec::with_capacity(sources.len());
    for s in &mut sources {
        heads.push(s.next()?);
    }
    let file = File::create(path)?;
    let mut w = BufWriter::with_capacity(256 << 10, file);
    let mut head = [0u8; HEAD as usize];
    head[..8].copy_from_slice(MAGIC);
    head[8..16].copy_from_slice(&(table.len() as u64).to_le_bytes());
    w.write_all(&head)?;
    let mut body = blake3::Hasher::new();
    let mut put = |w: &mut BufWriter<File>, bytes: &[u8]| {
        body.update(bytes);
        w.write_all(bytes)
    };
    for p in table {
        put(&mut w, p.id.as_bytes())?;
        put(&mut w, &p.size.to_le_bytes())?;
    }
    let mut count = 0u64;
    let mut enc = [0u8; ENTRY_LEN];
    let mut last: Option<([u8; 32], u32)> = None;
    while let Some(i) = (0..heads.len())
        .filter(|&i| heads[i].is_some())
        .min_by_key(|&i| heads[i].map(|r| r.key()))
    {
        let Some(raw) = heads[i].take() else { break };
        heads[i] = sources[i].next()?;
        // One entry per blob and pack (a pack read again after its size
        // changed must not count twice).
        if last == Some(raw.key()) {
            continue;
        }
        last = Some(raw.key());
        raw.encode(&mut enc);
        put(&mut w, &enc)?;
        count += 1;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    head[16..24].copy_from_slice(&count.to_le_bytes());
    let sum = check(&head, &body);
    head[24..32].copy_from_slice(&sum);
    file.write_all_at(&head, 0)?;
    Ok(())
}

/// The check value of an index file: over its head's first 24 bytes
/// (magic and counts) and the BLAKE3 of its body.
fn check(head: &[u8; HEAD as usize], body: &blake3::Hasher) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(&head[..24]);
    h.update(body.finalize().as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, offset: u64, length: u64) -> BlobEntry {
        BlobEntry {
            id: ObjectId::from_bytes([id; 32]),
            offset,
            length,
            size: length * 2,
        }
    }

    #[test]
    fn a_damaged_index_file_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let pack = PackInfo {
            id: PackId::from_bytes([1; 32]),
            size: 100_000,
        };
        let entries: Vec<BlobEntry> = (0..200u8)
            .map(|i| entry(i, u64::from(i) * 10, 10))
            .collect();
        Index::from_packs(dir.path(), &[(pack, entries)]).unwrap();
        let path = dir.path().join("blobs.idx");
        let good = fs::read(&path).unwrap();
        assert!(Index::open_file(&path).is_ok());
        // One bit anywhere (a count, the pack table, an id, a length)
        // makes the file refused.
        for at in [9, 20, HEAD as usize + 3, good.len() - 100, good.len() - 12] {
            let mut bad = good.clone();
            bad[at] ^= 0x08;
            fs::write(&path, &bad).unwrap();
            let e = Index::open_file(&path).expect_err("a damaged index opened");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "byte {at}");
        }
    }

    #[test]
    fn lookups_find_every_blob_across_fences_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let a = PackInfo {
            id: PackId::from_bytes([1; 32]),
            size: 100_000,
        };
        let b = PackInfo {
            id: PackId::from_bytes([2; 32]),
            size: 50,
        };
        // Ids 0, 2, 4, … in pack a (more than one fence block), id 7 in both.
        let many: Vec<BlobEntry> = (0..=250u8)
            .step_by(2)
            .map(|i| entry(i, u64::from(i) * 10, 10))
            .collect();
        let index = Index::from_packs(
            dir.path(),
            &[(a, many.clone()), (b, vec![entry(7, 0, 5), entry(4, 5, 5)])],
        )
        .unwrap();
        assert_eq!(index.len(), many.len() as u64 + 2);
        for e in &many {
            let loc = index.get(&e.id).unwrap().unwrap();
            assert_eq!(
                (loc.offset, loc.length, loc.size),
                (e.offset, e.length, e.size)
            );
        }
        assert_eq!(
            index
                .get(&ObjectId::from_bytes([7; 32]))
                .unwrap()
                .unwrap()
                .pack,
            b.id
        );
        assert!(index.get(&ObjectId::from_bytes([9; 32])).unwrap().is_none());
        assert!(index
            .get(&ObjectId::from_bytes([255; 32]))
            .unwrap()
            .is_none());
        let mut seen = Vec::new();
        index.for_each(&mut |id, _| seen.push(id)).unwrap();
        assert_eq!(seen.len() as u64, index.len());
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "sorted by id");
    }

    #[test]
    fn entries_encode_and_decode() {
        let raw = Raw {
            id: [9u8; 32],
            pack: 7,
            offset: 1 << 40,
            length: 3,
            size: u64::MAX,
        };
        let mut enc = [0u8; ENTRY_LEN];
        raw.encode(&mut enc);
        assert_eq!(Raw::decode(&enc), raw);
    }
}
