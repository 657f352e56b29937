//! Where a restored file's bytes go: a writer that hashes and counts
//! them, leaves all-zero blocks as holes and uses `O_DIRECT` for large
//! files, fed inline or from a second thread. Kept apart from the restorer
//! because none of it knows about records.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// Block size for hole detection: an all-zero block of this size is
/// skipped (left as a hole) instead of written.
const SPARSE_BLOCK: usize = 4096;

/// Bytes gathered before writing; a multiple of [`SPARSE_BLOCK`].
const SPARSE_BUF: usize = 256 << 10;

/// Writes a restored file, hashing and counting everything, and leaving
/// all-zero blocks as holes where the file system allows. Its own write
/// errors are remembered, to be reported as errors on the target (a full
/// disk) rather than on the object being read.
///
/// A large file is written with `O_DIRECT` where the file system takes it:
/// restoring a big tree then does not push everything else out of the page
/// cache, and the kernel does not copy every byte into it, which makes large
/// files faster to write.
/// The unaligned end of the file, or a file system that refuses direct
/// writes, falls back to ordinary writes.
pub(crate) struct SparseWriter {
    file: File,
    buf: AlignedBuf,
    /// File offset of the buffer's first byte.
    pos: u64,
    hasher: Sha256,
    count: u64,
    error: Option<io::Error>,
    /// Whether `file` has `O_DIRECT` set.
    direct: bool,
    /// Where the last write ended: the file's length, unless a hole ends it.
    end: u64,
}

/// Alignment of buffers, file offsets and lengths for `O_DIRECT` (the
/// logical block size of common disks is 512 or 4096).
const DIRECT_ALIGN: usize = 4096;

/// A [`SPARSE_BUF`]-byte buffer whose start is [`DIRECT_ALIGN`]-aligned,
/// as `O_DIRECT` writes need. Only the bytes before the aligned start are
/// initialised up front: every small file restored gets one of these, and
/// zeroing 256 KiB each time would be a memory pass per file for nothing.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let mut storage = Vec::<u8>::with_capacity(SPARSE_BUF + DIRECT_ALIGN);
        let start = storage.as_ptr().align_offset(DIRECT_ALIGN);
        storage.resize(start, 0);
        AlignedBuf { storage, start }
    }

    fn len(&self) -> usize {
        self.storage.len() - self.start
    }

    fn filled(&self) -> &[u8] {
        &self.storage[self.start..]
    }

    /// Appends as much of `data` as fits; returns how much did. (The
    /// capacity holds the aligned start plus [`SPARSE_BUF`], so this never
    /// reallocates and the start stays aligned.)
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(SPARSE_BUF - self.len());
        self.storage.extend_from_slice(&data[..n]);
        n
    }

    fn clear(&mut self) {
        self.storage.truncate(self.start);
    }
}

impl SparseWriter {
    /// A writer into `file`, trying `O_DIRECT` when `direct` is asked for.
    fn new(file: File, direct: bool) -> Self {
        let direct = direct && set_direct(&file, true).is_ok();
        SparseWriter {
            file,
            buf: AlignedBuf::new(),
            pos: 0,
            hasher: Sha256::new(),
            count: 0,
            error: None,
            direct,
            end: 0,
        }
    }

    /// Writes the buffer at its offset, skipping all-zero blocks.
    fn write_buf(&mut self) -> io::Result<()> {
        let mut run: Option<usize> = None;
        let len = self.buf.len();
        let blocks = len.div_ceil(SPARSE_BLOCK);
        for i in 0..=blocks {
            let start = i * SPARSE_BLOCK;
            let data = (i < blocks).then(|| {
                let end = (start + SPARSE_BLOCK).min(len);
                &self.buf.filled()[start..end]
            });
            let zero = data.is_none_or(|b| b.iter().all(|&x| x == 0));
            match (zero, run) {
                (false, None) => run = Some(start),
                (true, Some(from)) => {
                    self.write_run(from, start.min(len))?;
                    run = None;
                }
                _ => {}
            }
        }
        self.pos += len as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes `buf[from..to]` at its place in the file: directly when the
    /// run is aligned and the file system takes it, else through the page
    /// cache (from then on).
    fn write_run(&mut self, from: usize, to: usize) -> io::Result<()> {
        let at = self.pos + from as u64;
        if self.direct && !(to - from).is_multiple_of(DIRECT_ALIGN) {
            self.direct = false;
            set_direct(&self.file, false)?;
        }
        let data = &self.buf.filled()[from..to];
        match self.file.write_all_at(data, at) {
            // Some file systems take the flag but not the writes (EINVAL
            // from a FUSE mount, say): write through the page cache, where
            // a real error (a full disk) shows again and is reported.
            Err(_) if self.direct => {
                self.direct = false;
                set_direct(&self.file, false)?;
                self.file.write_all_at(data, at)?;
            }
            other => other?,
        }
        self.end = at + data.len() as u64;
        Ok(())
    }

    /// Writes what is left, sets the final length where a hole ends the
    /// file, and returns the byte count, SHA-256 and the file.
    fn finish(mut self) -> io::Result<Finished> {
        self.write_buf()?;
        if self.end != self.count {
            self.file.set_len(self.count)?;
        }
        Ok(Finished {
            count: self.count,
            sha256: self.hasher.finalize().into(),
            file: self.file,
        })
    }
}

/// A file whose content is all written.
pub(crate) struct Finished {
    pub(crate) count: u64,
    pub(crate) sha256: [u8; 32],
    pub(crate) file: File,
}

/// Writes `data` as the whole content of the new, empty `file`, leaving
/// all-zero blocks as holes: the restore of a small file, whose plaintext
/// is in memory and already checked.
pub(crate) fn write_whole(file: &File, data: &[u8]) -> io::Result<()> {
    let mut run: Option<usize> = None;
    let mut end = 0;
    let blocks = data.len().div_ceil(SPARSE_BLOCK);
    for i in 0..=blocks {
        let start = (i * SPARSE_BLOCK).min(data.len());
        let zero = i == blocks
            || data[start..(start + SPARSE_BLOCK).min(data.len())]
                .iter()
                .all(|&x| x == 0);
        match (zero, run) {
            (false, None) => run = Some(start),
            (true, Some(from)) => {
                file.write_all_at(&data[from..start], from as u64)?;
                end = start;
                run = None;
            }
            _ => {}
        }
    }
    if end != data.len() {
        file.set_len(data.len() as u64)?;
    }
    Ok(())
}

/// Sets or clears `O_DIRECT` on an open file.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_DIRECT
    } else {
        flags - OFlag::O_DIRECT
    };
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(())
}

impl Write for SparseWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.buf.push(data);
        self.hasher.update(&data[..n]);
        self.count += n as u64;
        if self.buf.len() == SPARSE_BUF {
            if let Err(e) = self.write_buf() {
                self.error = Some(copy_error(&e));
                return Err(e);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Files at least this large are hashed and written on a second thread
/// while the first decrypts (below it, a thread costs more than it saves).
const OFFLOAD_FROM: u64 = 4 << 20;

/// Buffers in flight to the writing thread.
const OFFLOAD_QUEUE: usize = 4;

/// Where a restored file's bytes go: straight into a [`SparseWriter`], or,
/// for a large file, through a small bounded queue to a thread running it,
/// so that decryption and hashing plus writing use two cores.
pub(crate) enum FileSink {
    Inline(SparseWriter),
    Offloaded(Offload),
}

impl FileSink {
    pub(crate) fn new(file: File, size: u64) -> FileSink {
        if size < OFFLOAD_FROM {
            return FileSink::Inline(SparseWriter::new(file, false));
        }
        FileSink::Offloaded(Offload::start(file))
    }

    /// The write error that stopped the sink, if any (a full disk).
    pub(crate) fn take_error(&mut self) -> Option<io::Error> {
        match self {
            FileSink::Inline(w) => w.error.take(),
            FileSink::Offloaded(o) => o.error.take(),
        }
    }

    /// Writes what is left; returns the byte count, SHA-256 and the file.
    pub(crate) fn finish(self) -> io::Result<Finished> {
        match self {
            FileSink::Inline(w) => w.finish(),
            FileSink::Offloaded(o) => o.finish(),
        }
    }
}

impl Write for FileSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            FileSink::Inline(w) => w.write(data),
            FileSink::Offloaded(o) => o.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sending side of a [`SparseWriter`] on its own thread.
pub(crate) struct Offload {
    tx: Option<crossbeam_channel::Sender<Vec<u8>>>,
    recycle: crossbeam_channel::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    count: u64,
    worker: Option<std::thread::JoinHandle<io::Result<Finished>>>,
    error: Option<io::Error>,
}

impl Offload {
    fn start(file: File) -> Offload {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(OFFLOAD_QUEUE);
        let (recycle_tx, recycle) = crossbeam_channel::bounded::<Vec<u8>>(OFFLOAD_QUEUE + 1);
        let worker = std::thread::spawn(move || {
            let mut w = SparseWriter::new(file, true);
            for mut chunk in rx {
                w.write_all(&chunk)?;
                chunk.clear();
                let _ = recycle_tx.try_send(chunk);
            }
            w.finish()
        });
        Offload {
            tx: Some(tx),
            recycle,
            buf: Vec::with_capacity(SPARSE_BUF),
            count: 0,
            worker: Some(worker),
            error: None,
        }
    }

    /// Hands the full buffer to the writing thread; if that thread has
    /// stopped on an error, returns (and remembers) that error.
    fn send(&mut self) -> io::Result<()> {
        let next = self
            .recycle
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(SPARSE_BUF));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(full).is_ok());
        if sent {
            return Ok(());
        }
        let e = match self.join() {
            Err(e) => e,
            Ok(_) => io::Error::other("restore writer stopped"),
        };
        self.error = Some(copy_error(&e));
        Err(e)
    }

    fn join(&mut self) -> io::Result<Finished> {
        self.tx = None;
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("restore writer thread panicked")),
            None => Err(io::Error::other("restore writer already finished")),
        }
    }

    fn finish(mut self) -> io::Result<Finished> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl Write for Offload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(SPARSE_BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.count += n as u64;
        if self.buf.len() == SPARSE_BUF {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        if self.worker.is_some() {
            let _ = self.join();
        }
    }
}

/// A copy of an I/O error (they are not `Clone`), keeping the OS code.
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    use super::*;

    fn write_sparse(chunks: &[&[u8]], direct: bool) -> (tempfile::TempDir, PathBuf, u64, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let file = File::create(&p).unwrap();
        let mut w = SparseWriter::new(file, direct);
        for c in chunks {
            w.write_all(c).unwrap();
        }
        let done = w.finish().unwrap();
        (dir, p, done.count, hex::encode(done.sha256))
    }

    #[test]
    fn direct_writes_are_used_where_the_file_system_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let has_direct = |f: &File| {
            let flags = nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
            nix::fcntl::OFlag::from_bits_truncate(flags).contains(nix::fcntl::OFlag::O_DIRECT)
        };
        let w = SparseWriter::new(file.try_clone().unwrap(), true);
        assert_eq!(w.direct, has_direct(&file), "the flag is on the file");
        assert_eq!(w.buf.filled().as_ptr() as usize % DIRECT_ALIGN, 0);
        // An ordinary disk file system (the temporary directory here) takes it.
        if fs::read_to_string("/proc/mounts").is_ok_and(|m| m.contains(" / ext4 ")) {
            assert!(w.direct, "O_DIRECT on ext4");
        }
        drop(w);
        set_direct(&file, false).unwrap();
        let w = SparseWriter::new(file.try_clone().unwrap(), false);
        assert!(!w.direct && !has_direct(&file));
    }

    #[test]
    fn sparse_writer_keeps_content_and_leaves_holes() {
        let mut data = vec![0u8; 3 << 20];
        data[1 << 20] = 7;
        data[(3 << 20) - 1] = 9;
        let zeros_tail = vec![0u8; 100_000];
        let mut all = data.clone();
        all.extend_from_slice(&zeros_tail);
        for direct in [false, true] {
            let (_d, p, n, sha) =
                write_sparse(&[&data[..1000], &data[1000..], &zeros_tail], direct);
            assert_eq!(n, all.len() as u64);
            assert_eq!(sha, hex::encode(Sha256::digest(&all)));
            assert_eq!(fs::read(&p).unwrap(), all, "direct {direct}");
            // Two data blocks, the rest holes (if the file system does holes).
            let blocks = fs::metadata(&p).unwrap().blocks();
            assert!(blocks * 512 < 64 << 10, "{blocks} blocks allocated");
        }
    }

    #[test]
    fn whole_contents_are_written_exactly_with_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut holey = vec![0u8; 5 * SPARSE_BLOCK + 10];
        holey[SPARSE_BLOCK + 3] = 1;
        let mut tail = vec![5u8; 3 * SPARSE_BLOCK];
        tail.extend_from_slice(&[0u8; 2 * SPARSE_BLOCK]);
        let cases: [&[u8]; 6] = [
            b"",
            b"x",
            &[0u8; 100],
            &holey,
            &tail,
            &[9u8; 3 * SPARSE_BLOCK + 1],
        ];
        for (n, data) in cases.iter().enumerate() {
            let p = dir.path().join(format!("f{n}"));
            let file = File::create(&p).unwrap();
            write_whole(&file, data).unwrap();
            assert_eq!(&fs::read(&p).unwrap(), data, "case {n}");
        }
        let blocks = fs::metadata(dir.path().join("f3")).unwrap().blocks();
        assert!(
            blocks * 512 <= 2 * SPARSE_BLOCK as u64,
            "{blocks} blocks for one data block"
        );
    }

    #[test]
    fn sparse_writer_writes_odd_sizes_exactly() {
        for direct in [false, true] {
            for size in [
                0usize,
                1,
                4095,
                4096,
                4097,
                SPARSE_BUF + 3,
                3 * SPARSE_BUF + 5000,
            ] {
                let data: Vec<u8> = (0..size).map(|i| (i % 7 + 1) as u8).collect();
                let (_d, p, n, _) = write_sparse(&[&data], direct);
                assert_eq!(n, size as u64);
                assert_eq!(fs::read(&p).unwrap(), data, "size {size}, direct {direct}");
            }
        }
    }
}
