//! bk-hash: add the SHA-256 of each regular file's content to its record.
//!
//! It runs on the stage workers of [`crate::stream::pipeline`], so memory
//! stays flat however long the stream: one thread parses stdin (and applies
//! `--reuse`, in input order), `-j N` workers hash files, and the main
//! thread writes records in input order (within a memory budget, see
//! [`crate::stream::reorder`]). Records that need no hashing (not a file,
//! or already hashed and sealed, or reused) are handed on as they are.
//!
//! A file is checked against its record before and after it is read, and
//! any sign that it changed since the scan (gone, replaced by a symlink or
//! another kind of entry, different size, modified during the read) leaves
//! the record out with a message on stderr: a hash that does not belong to
//! the recorded file must never reach the snapshot. Such a run exits 24.
//!
//! A file above `--chunk-threshold` is also cut into content-defined chunks
//! while it is read (exactly as bk-seal cuts), and each chunk's SHA-256
//! goes into the record's `chunks`: bk-seal then reads only the chunks the
//! repository lacks, and checks each against its hash, instead of reading
//! and hashing the whole file a second time.
//!
//! A malformed input line, or a file record without a root to find the
//! file under, stops the run with exit status 3; nothing after that line is
//! emitted. So does a checked input (one that starts with a begin record,
//! see [`crate::record`]) that ends before its end record: the stage before
//! stopped early. Only a run that handed on every record (exit status 0 or
//! 24) of a complete checked input ends its own output with an end record.

pub mod reuse;

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::bounded;
use sha2::{Digest, Sha256};

use crate::cli::HashCli;
use crate::error::{exit, io_cause, Error, Result};
use crate::record::meta::shown;
use crate::record::{
    stdin_records, stdout_error, stdout_records, Check, ChunkHash, Kind, Peek, Record,
    RecordReader, RecordWriter,
};
use crate::repo::chunker::Chunker;
use crate::stages::hash::reuse::{ReuseSource, Reuser};
use crate::stream::pause::Pause;
use crate::stream::pipeline::{self, Job, Source, BATCH_RECORDS};
use crate::stream::progress::Progress;
use crate::stream::reorder::line_weight;
use crate::sys::source::HashingReader;

/// The program name in messages.
const PROGRAM: &str = "bk-hash";

/// Read buffer per worker: large enough that system calls are not the
/// cost, small enough to stay in cache.
const BUF_SIZE: usize = 128 << 10;

/// Runs bk-hash on stdin and stdout and returns the exit status.
pub fn run(cli: HashCli) -> Result<i32> {
    let started = std::time::Instant::now();
    let reuse = cli
        .reuse
        .as_deref()
        .map(|arg| {
            ReuseSource::from_arg(
                arg,
                cli.repo.as_ref(),
                &cli.s3.options(),
                cli.id_key.as_deref(),
            )
        })
        .transpose()?
        .map(Reuser::new);
    let stats = Arc::new(Stats::default());
    let mut progress = Progress::new(cli.progress.show(), PROGRAM);
    let pause = Arc::new(Pause::new(PROGRAM, cli.pause.pause_file.as_deref()));
    let settings = Settings {
        jobs: cli.jobs.count(),
        chunk_threshold: cli.chunk.chunk_threshold,
    };
    let code = hash_stream(
        settings,
        stdin_records().checking(Check::Stage(PROGRAM)),
        stdout_records(),
        reuse,
        Arc::clone(&stats),
        &mut progress,
        pause,
    )?;
    progress.finish();
    crate::say!(
        "{PROGRAM}: {} files seen, {} reused unread, {} hashed ({} bytes read), {:.1}s",
        stats.files.load(Ordering::Relaxed),
        stats.reused.load(Ordering::Relaxed),
        stats.hashed.load(Ordering::Relaxed),
        stats.bytes_read.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(code)
}

/// Counters for the final summary line.
#[derive(Debug, Default)]
pub struct Stats {
    /// File records seen.
    pub files: AtomicU64,
    /// Files whose hash and objects were reused without reading them.
    pub reused: AtomicU64,
    /// Files hashed.
    pub hashed: AtomicU64,
    /// Content bytes read.
    pub bytes_read: AtomicU64,
}

/// How bk-hash hashes.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Worker threads.
    pub jobs: usize,
    /// Files larger than this get their chunks hashed too (`--chunk-threshold`).
    pub chunk_threshold: u64,
}

/// One record for the workers, with the file to hash for it (`None`: not a
/// file, or already hashed and sealed, or reused; it is handed on as is).
struct HashJob {
    rec: Record,
    file: Option<PathBuf>,
}

impl Job for HashJob {
    fn bytes(&self) -> u64 {
        if self.file.is_some() {
            self.rec.size
        } else {
            0
        }
    }
}

/// The input as [`HashJob`]s: each record parsed, its reuse applied (the
/// earlier snapshot is walked in input order, so this happens here, in
/// order, and not on the workers) and the file it needs hashed found. A
/// file record that cannot be located is an input error, which stops the
/// pipeline's reading.
struct Jobs<R: Peek> {
    input: RecordReader<R>,
    reuse: Option<Reuser>,
    stats: Arc<Stats>,
}

impl<R: Peek> Iterator for Jobs<R> {
    type Item = Result<HashJob>;

    fn next(&mut self) -> Option<Result<HashJob>> {
        let mut rec = match self.input.next()? {
            Ok(rec) => rec,
            Err(e) => return Some(Err(e)),
        };
        if rec.kind == Kind::File {
            self.stats.files.fetch_add(1, Ordering::Relaxed);
            if self.reuse.as_mut().is_some_and(|r| r.apply(&mut rec)) {
                self.stats.reused.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(
            file_to_hash(&rec)
                .map(|file| HashJob { rec, file })
                .map_err(|e| e.context(format!("stdin line {}", self.input.line_no()))),
        )
    }
}

impl<R: Peek> Source<HashJob> for Jobs<R> {
    fn next_ready(&self) -> bool {
        self.input.next_ready()
    }
}

/// A record's line as the writer gets it, with the file size it counts
/// for progress.
struct Line {
    line: Vec<u8>,
    file_size: Option<u64>,
}

thread_local! {
    /// Each worker's read buffer.
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; BUF_SIZE]);
}

/// Hashes the records of `input` with `settings.jobs` workers (see
/// [`crate::stream::pipeline`]) and writes them to `out` in input order;
/// returns the exit status. Workers wait before each file while `pause`
/// says so, and stop reading once the output is gone.
///
/// A checked input (see [`crate::record`]) makes a checked output: a begin
/// record first, and an end record last if every record was handed on
/// (exit status 0 or 24) and the input had its end records.
pub fn hash_stream<R, W>(
    settings: Settings,
    mut input: RecordReader<R>,
    mut out: RecordWriter<W>,
    reuse: Option<Reuser>,
    stats: Arc<Stats>,
    progress: &mut Progress,
    pause: Arc<Pause>,
) -> Result<i32>
where
    R: Peek + Send + 'static,
    W: Write,
{
    let checked = input.is_checked();
    if checked {
        out.write_begin().map_err(stdout_error)?;
    }
    let stop = AtomicBool::new(false);
    let jobs = Jobs {
        input,
        reuse,
        stats: Arc::clone(&stats),
    };
    let work = |job: HashJob| -> Result<Option<Line>> {
        let HashJob { mut rec, file } = job;
        if let Some(file) = file {
            pause.wait();
            let chunked = rec.size > settings.chunk_threshold;
            let hashed =
                BUF.with_borrow_mut(|buf| hash_file(&file, rec.size, chunked, buf, &stop))?;
            stats.hashed.fetch_add(1, Ordering::Relaxed);
            stats.bytes_read.fetch_add(rec.size, Ordering::Relaxed);
            rec.sha256 = Some(hashed.sha256);
            rec.chunks = hashed.chunks;
        }
        let mut line = rec.to_line();
        line.shrink_to_fit();
        let file_size = (rec.kind == Kind::File).then_some(rec.size);
        Ok(Some(Line { line, file_size }))
    };
    let written = |line: Option<Line>| -> Result<()> {
        // Whenever nothing is ready, what is written goes on down the
        // pipe, so that bk-seal works on it while a large file is hashed.
        let result = match line {
            None => out.flush(),
            Some(Line { line, file_size }) => {
                if let Some(size) = file_size {
                    progress.add(1, size);
                }
                out.write_line(&line)
            }
        };
        result.map_err(|e| {
            // The reader of our output is gone: workers stop between reads.
            stop.store(true, Ordering::Relaxed);
            stdout_error(e)
        })
    };
    let outcome = pipeline::run(
        PROGRAM,
        settings.jobs,
        BATCH_RECORDS,
        move || jobs,
        work,
        |l: &Line| line_weight(&l.line),
        written,
    )?;
    let code = outcome.exit_code();
    if checked && exit::finished(code) {
        out.write_end().map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
    Ok(code)
}

/// Whether a record needs its content hashed: every file, except one that
/// already has both a hash and objects (sealed; reuse comes later).
pub fn needs_hash(rec: &Record) -> bool {
    rec.kind == Kind::File && !(rec.sha256.is_some() && rec.objects.is_some())
}

/// Where the file of a record that needs hashing is: its root joined with
/// its path (`"."` is the root itself). A file record without a root, or
/// with an absolute path, cannot be located and is bad input.
pub fn file_to_hash(rec: &Record) -> Result<Option<PathBuf>> {
    if !needs_hash(rec) {
        return Ok(None);
    }
    let Some(root) = rec.root_os()? else {
        return Err(Error::bad_input(format!(
            "file record {} has no root",
            rec.display_path()
        )));
    };
    let path = PathBuf::from(rec.path_os()?);
    if path.is_absolute() {
        return Err(Error::bad_input(format!(
            "file record {} has an absolute path",
            rec.display_path()
        )));
    }
    let root = PathBuf::from(root);
    Ok(Some(if path == Path::new(".") {
        root
    } else {
        root.join(path)
    }))
}

/// What hashing one file found.
#[derive(Debug)]
pub struct Hashed {
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// The content-defined chunks, when asked for.
    pub chunks: Option<Vec<ChunkHash>>,
}

/// Hashes the regular file at `path`, which the record says has `size`
/// bytes, and with `chunked` its content-defined chunks too (cut as bk-seal
/// cuts). Any sign that the file is not the one scanned, or changed while
/// being read, is a partial error naming it.
pub fn hash_file(
    path: &Path,
    size: u64,
    chunked: bool,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> Result<Hashed> {
    let file = open_nofollow(path).map_err(|e| open_error(path, &e))?;
    let before = file.metadata().map_err(|e| read_error(path, &e))?;
    if !before.is_file() {
        return Err(changed(path, "no longer a regular file"));
    }
    if before.len() != size {
        return Err(changed(path, &format!("size {size} → {}", before.len())));
    }
    // At most `size + 1` bytes: enough to notice the file grew without
    // following a file that keeps growing.
    let input = HashingReader::new((&file).take(size.saturating_add(1)));
    let (input, chunks) = if chunked {
        let (input, chunks) = hash_chunks(input, stop).map_err(|e| read_error(path, &e))?;
        (input, Some(chunks))
    } else {
        (
            drain(input, buf, stop).map_err(|e| read_error(path, &e))?,
            None,
        )
    };
    let read = input.count();
    if read != size {
        return Err(changed(
            path,
            &format!(
                "size {size}, but {read}{} bytes could be read",
                if read > size { "+" } else { "" }
            ),
        ));
    }
    let after = file.metadata().map_err(|e| read_error(path, &e))?;
    if modified(&before, &after) {
        return Err(changed(path, "modified while being read"));
    }
    Ok(Hashed {
        sha256: input.hex_digest(),
        chunks,
    })
}

/// Opens `path` for reading without following a final symlink, and without
/// blocking if it has become a FIFO or a device since the scan (the fstat
/// that follows finds that out).
fn open_nofollow(path: &Path) -> io::Result<File> {
    use nix::libc::{O_NOCTTY, O_NOFOLLOW, O_NONBLOCK};
    OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
        .open(path)
}

/// Reads `input` to its end through `buf`. Stops early, with an error,
/// when `stop` is set.
fn drain<R: Read>(mut input: R, buf: &mut [u8], stop: &AtomicBool) -> io::Result<R> {
    loop {
        check_stop(stop)?;
        match input.read(buf) {
            Ok(0) => return Ok(input),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads `input` to its end, cutting it into content-defined chunks and
/// hashing each. The chunk hashes are computed on a second thread while
/// this one reads, cuts and hashes the whole content, so that one large
/// file takes the time of one SHA-256 pass, not two. Stops early, with an
/// error, when `stop` is set.
fn hash_chunks<R: Read>(mut input: R, stop: &AtomicBool) -> io::Result<(R, Vec<ChunkHash>)> {
    let chunks = thread::scope(|scope| {
        let (to_hash, chunks_rx) = bounded::<Vec<u8>>(CHUNKS_QUEUED);
        let hasher = thread::Builder::new()
            .name("bk-hash-chunks".into())
            .spawn_scoped(scope, move || {
                chunks_rx
                    .iter()
                    .map(|chunk| ChunkHash {
                        sha256: hex::encode(Sha256::digest(&chunk)),
                        size: chunk.len() as u64,
                    })
                    .collect::<Vec<_>>()
            })?;
        let mut cut = || -> io::Result<()> {
            let mut chunker = Chunker::new(&mut input);
            while let Some(chunk) = chunker.next_slice()? {
                check_stop(stop)?;
                if to_hash.send(chunk.to_vec()).is_err() {
                    break;
                }
            }
            Ok(())
        };
        let cut = cut();
        drop(to_hash);
        let chunks = hasher
            .join()
            .map_err(|_| io::Error::other("the chunk hashing thread panicked"))?;
        cut.map(|()| chunks)
    })?;
    Ok((input, chunks))
}

/// Chunks waiting for the chunk hashing thread (each at most `CHUNK_MAX`).
const CHUNKS_QUEUED: usize = 2;

fn check_stop(stop: &AtomicBool) -> io::Result<()> {
    if stop.load(Ordering::Relaxed) {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
    }
    Ok(())
}

/// Whether the file's size or modification time moved between two fstats.
fn modified(before: &Metadata, after: &Metadata) -> bool {
    before.len() != after.len()
        || before.mtime() != after.mtime()
        || before.mtime_nsec() != after.mtime_nsec()
}

/// A file that is no longer what the scan recorded.
fn changed(path: &Path, how: &str) -> Error {
    Error::partial(format!("{}: changed since scan ({how})", shown(path)))
}

/// The error for a failed open: gone, now a symlink, or unreadable.
fn open_error(path: &Path, err: &io::Error) -> Error {
    match err.raw_os_error() {
        Some(nix::libc::ENOENT) | Some(nix::libc::ENOTDIR) => {
            Error::partial(format!("{}: vanished since scan", shown(path)))
        }
        Some(nix::libc::ELOOP) => changed(path, "now a symlink"),
        Some(nix::libc::ENXIO) => changed(path, "no longer a regular file"),
        _ => read_error(path, err),
    }
}

/// The error for a file that could not be read.
fn read_error(path: &Path, err: &io::Error) -> Error {
    Error::partial(format!("{}: {}", shown(path), io_cause(err)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn no_stop() -> AtomicBool {
        AtomicBool::new(false)
    }

    fn sha_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn hashes_content_larger_than_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..BUF_SIZE * 2 + 17).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let mut buf = vec![0; BUF_SIZE];
        let got = hash_file(&p, data.len() as u64, false, &mut buf, &no_stop())
            .unwrap()
            .sha256;
        assert_eq!(got, sha_hex(&data));
    }

    #[test]
    fn chunked_hash_lists_the_chunks_as_cut_for_objects() {
        use rand::{RngCore, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let mut data = vec![0u8; 6 << 20];
        rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut data);
        fs::write(&p, &data).unwrap();
        let mut buf = vec![0; BUF_SIZE];
        let hashed = hash_file(&p, data.len() as u64, true, &mut buf, &no_stop()).unwrap();
        assert_eq!(hashed.sha256, sha_hex(&data));
        let expected: Vec<ChunkHash> = Chunker::new(&data[..])
            .map(|c| {
                let c = c.unwrap();
                ChunkHash {
                    sha256: sha_hex(&c),
                    size: c.len() as u64,
                }
            })
            .collect();
        assert!(expected.len() >= 3, "{} chunks", expected.len());
        assert_eq!(hashed.chunks, Some(expected));
        // A file that grew since the scan is refused, chunked or not.
        let err = hash_file(&p, data.len() as u64 - 1, true, &mut buf, &no_stop()).unwrap_err();
        assert!(err.to_string().contains("changed since scan"), "{err}");
    }

    #[test]
    fn wrong_size_is_changed_and_missing_is_vanished() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        let mut buf = vec![0; 16];
        let err = hash_file(&p, 2, false, &mut buf, &no_stop()).unwrap_err();
        assert_eq!(err.exit_code(), exit::PARTIAL);
        assert!(
            err.to_string().contains("changed since scan (size 2 → 3)"),
            "{err}"
        );
        let err = hash_file(&dir.path().join("gone"), 2, false, &mut buf, &no_stop()).unwrap_err();
        assert!(
            err.to_string().ends_with("gone: vanished since scan"),
            "{err}"
        );
    }

    #[test]
    fn symlink_and_fifo_are_not_followed_or_blocked_on() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("t"), b"abc").unwrap();
        std::os::unix::fs::symlink("t", dir.path().join("l")).unwrap();
        let fifo = dir.path().join("p");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut buf = vec![0; 16];
        let err = hash_file(&dir.path().join("l"), 3, false, &mut buf, &no_stop()).unwrap_err();
        assert!(err.to_string().contains("now a symlink"), "{err}");
        let err = hash_file(&fifo, 0, false, &mut buf, &no_stop()).unwrap_err();
        assert!(
            err.to_string().contains("no longer a regular file"),
            "{err}"
        );
    }

    #[test]
    fn location_needs_a_root_and_a_relative_path() {
        let mut rec = Record::new(Kind::File, Path::new("a/b"));
        assert_eq!(file_to_hash(&rec).unwrap_err().exit_code(), exit::BAD_INPUT);
        rec.set_root(Path::new("/r"));
        assert_eq!(file_to_hash(&rec).unwrap(), Some(PathBuf::from("/r/a/b")));
        rec.set_path(Path::new("."));
        assert_eq!(file_to_hash(&rec).unwrap(), Some(PathBuf::from("/r")));
        rec.set_path(Path::new("/etc/passwd"));
        assert_eq!(file_to_hash(&rec).unwrap_err().exit_code(), exit::BAD_INPUT);
        // Directories and sealed files need no location at all.
        let dir = Record::new(Kind::Dir, Path::new("d"));
        assert_eq!(file_to_hash(&dir).unwrap(), None);
    }

    #[test]
    fn stream_stops_at_bad_line_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"x").unwrap();
        let root = dir.path().to_str().unwrap();
        let good = format!(r#"{{"v":1,"kind":"file","root":"{root}","path":"a","size":1}}"#);
        let input = format!("{good}\n{{oops\n{good}\n");
        let mut out = Vec::new();
        let code = hash_stream(
            Settings {
                jobs: 3,
                chunk_threshold: u64::MAX,
            },
            RecordReader::new(io::Cursor::new(input.into_bytes())),
            RecordWriter::new(&mut out),
            None,
            Arc::new(Stats::default()),
            &mut quiet(),
            Arc::default(),
        )
        .unwrap();
        assert_eq!(code, exit::BAD_INPUT);
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 1);
    }

    /// bk-hash of `input` with a checking reader: exit status and output.
    fn hash_checked(input: String) -> (i32, String) {
        let mut out = Vec::new();
        let code = hash_stream(
            Settings {
                jobs: 2,
                chunk_threshold: u64::MAX,
            },
            RecordReader::new(io::Cursor::new(input.into_bytes())).checking(Check::Stage(PROGRAM)),
            RecordWriter::new(&mut out),
            None,
            Arc::new(Stats::default()),
            &mut quiet(),
            Arc::default(),
        )
        .unwrap();
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_checked_input_makes_a_checked_output_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"x").unwrap();
        let root = dir.path().to_str().unwrap();
        let rec = format!(r#"{{"v":1,"kind":"file","root":"{root}","path":"a","size":1}}"#);
        let (begin, end) = (r#"{"bk":"begin","v":1}"#, r#"{"bk":"end","v":1}"#);
        let (code, out) = hash_checked(format!("{begin}\n{rec}\n{end}\n"));
        assert_eq!(code, 0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!((lines.len(), lines[0], lines[2]), (3, begin, end), "{out}");
        assert!(lines[1].contains(&sha_hex(b"x")), "{out}");
        // Cut short: the record goes on, the end does not.
        let (code, out) = hash_checked(format!("{begin}\n{rec}\n"));
        assert_eq!(code, exit::BAD_INPUT);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!((lines.len(), lines[0]), (2, begin), "{out}");
        // A file that vanished still ends the stream (exit 24).
        let gone = rec.replace(r#""path":"a""#, r#""path":"gone""#);
        let (code, out) = hash_checked(format!("{begin}\n{gone}\n{rec}\n{end}\n"));
        assert_eq!(code, exit::PARTIAL);
        assert_eq!(out.lines().last(), Some(end), "{out}");
        // Unchecked in, unchecked out.
        let (code, out) = hash_checked(format!("{rec}\n"));
        assert_eq!((code, out.lines().count()), (0, 1), "{out}");
    }

    fn quiet() -> Progress {
        Progress::new(crate::stream::progress::Show::Never, PROGRAM)
    }

    /// A writer whose reader has gone away, like stdout into `| head`.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn closed_output_stops_quietly() {
        let line = r#"{"v":1,"kind":"dir","path":"d"}"#;
        let input = format!("{line}\n").repeat(100_000);
        let err = hash_stream(
            Settings {
                jobs: 2,
                chunk_threshold: u64::MAX,
            },
            RecordReader::new(io::Cursor::new(input.into_bytes())),
            RecordWriter::new(ClosedPipe),
            None,
            Arc::new(Stats::default()),
            &mut quiet(),
            Arc::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::error::Kind::BrokenPipe);
    }
}
