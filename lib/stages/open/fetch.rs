//! The workers that make restored files. Each takes a job: a run of
//! neighbouring blobs of one pack that small files need, or the blobs of
//! one large file in order. It reads each run with one request, decrypts
//! every blob (the session key of a pack is recovered once, whichever
//! worker meets it first), checks it against its id and the record,
//! writes it into a temporary file and gives that file its metadata and
//! real name ([`super::place`]). What became of each file goes back to the
//! restorer, which reports it in record order. Kept apart from the
//! restorer: none of it knows about records or path safety.

use std::collections::HashSet;
use std::io::{self, BufRead, Read};

use crossbeam_channel::{Receiver, Sender};

use super::place::{self, MetaFault, NameError, Placing};
use super::plan::{Piece, Run};
use super::sinks::{write_whole, FileSink};
use crate::crypto::SecretKeys;
use crate::error::{io_cause, Error};
use crate::repo::blobs::{blob_name, Blobs};
use crate::repo::id::ObjectId;
use crate::repo::index::Location;

/// The largest blob whose plaintext a worker holds in memory to write it
/// in one go; larger ones are streamed into their file.
pub(crate) const IN_MEMORY: u64 = 4 << 20;

/// One object of a file: a blob, where it is, and its size as the record
/// says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Object {
    pub(crate) id: ObjectId,
    pub(crate) loc: Location,
    pub(crate) size: u64,
}

/// A file to make: where it goes and what it gets, what the record says
/// its content is, and the objects that make it up.
#[derive(Debug)]
pub(crate) struct FileWork {
    /// The restorer's number for it.
    pub(crate) seq: u64,
    pub(crate) placing: Placing,
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
    pub(crate) objects: Vec<Object>,
}

impl FileWork {
    /// Whether it is one blob small enough to hold in memory: such files
    /// are read together with their neighbours in the pack.
    pub(crate) fn is_small(&self) -> bool {
        matches!(&self.objects[..], [o] if o.loc.size <= IN_MEMORY)
    }
}

/// Why a file was not restored.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Its temporary file could not be made (in the destination's
    /// directory).
    Create(io::Error),
    /// A blob could not be read or decrypted, or is not the content its
    /// id names (the error names the blob).
    Blob(Error),
    /// Object `id` holds `got` bytes where the record says `want`.
    Size { id: ObjectId, got: u64, want: u64 },
    /// The content, `count` bytes, is not the record's size and sha256.
    Content { count: u64 },
    /// Writing the file failed (a full disk).
    Write(io::Error),
    /// It could not get its name.
    Name(NameError),
}

/// What became of one file.
#[derive(Debug)]
pub(crate) struct Filled {
    pub(crate) seq: u64,
    /// Restored under its name, with the metadata that could not be set.
    pub(crate) result: Result<Vec<MetaFault>, Failure>,
}

/// What a worker does next.
#[derive(Debug)]
pub(crate) enum Job {
    /// Small files whose blobs lie in one run of one pack; the pieces'
    /// targets number `files`.
    Run { run: Run, files: Vec<FileWork> },
    /// One file, its blobs streamed in order, run by run.
    Stream { runs: Vec<Run>, file: FileWork },
}

impl Job {
    fn seqs(&self) -> Vec<u64> {
        match self {
            Job::Run { files, .. } => files.iter().map(|f| f.seq).collect(),
            Job::Stream { file, .. } => vec![file.seq],
        }
    }
}

/// Where the workers read blobs.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) blobs: &'a Blobs,
    pub(crate) secret: &'a SecretKeys,
}

/// A worker: does jobs until there are no more, sending what becomes of
/// each file to `done`.
pub(crate) fn work(src: Source<'_>, jobs: Receiver<Job>, done: Sender<Filled>) {
    let mut buf = Vec::new();
    for job in jobs {
        let seqs = job.seqs();
        let mut sent = HashSet::new();
        let mut send = |filled: Filled| {
            sent.insert(filled.seq);
            let _ = done.send(filled);
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
            Job::Run { run, files } => fill_run(src, run, files, &mut buf, &mut send),
            Job::Stream { runs, file } => {
                let seq = file.seq;
                send(Filled {
                    seq,
                    result: fill_stream(src, &runs, file),
                });
            }
        }));
        if ran.is_err() {
            // Whatever the panic left unfilled fails rather than waits.
            for seq in seqs.into_iter().filter(|s| !sent.contains(s)) {
                let _ = done.send(Filled {
                    seq,
                    result: Err(Failure::Blob(Error::repo("the restore worker failed"))),
                });
            }
            buf = Vec::new();
        }
    }
}

/// Fills the small files of one run: one request for the run, each blob
/// decrypted into memory once and written to every file that wants it.
/// If the run cannot be read through, the rest of its blobs are read one
/// by one, so each error names its own blob.
fn fill_run(
    src: Source<'_>,
    run: Run,
    files: Vec<FileWork>,
    buf: &mut Vec<u8>,
    send: &mut dyn FnMut(Filled),
) {
    let mut files: Vec<Option<FileWork>> = files.into_iter().map(Some).collect();
    let mut reader = src
        .blobs
        .open_run(&run.pack, run.offset, run.len, &String::new)
        .ok()
        .map(|r| Counted::new(r, run.offset));
    for piece in &run.pieces {
        let digest = match reader.as_mut() {
            Some(r) => match r.skip_to(piece.loc.offset) {
                Ok(()) => read_small(src, r, piece, buf),
                Err(_) => {
                    reader = None;
                    read_alone(src, piece, buf)
                }
            },
            None => read_alone(src, piece, buf),
        };
        for &t in &piece.targets {
            let Some(work) = files.get_mut(t).and_then(Option::take) else {
                continue;
            };
            let seq = work.seq;
            let result = match &digest {
                Err(e) => Err(Failure::Blob(copy_error(e))),
                Ok(digest) => make_small(&work, buf, digest),
            };
            send(Filled { seq, result });
        }
    }
}

/// Reads one small blob from a run.
fn read_small(
    src: Source<'_>,
    reader: &mut Counted<crate::repo::pack::RangeReader>,
    piece: &Piece,
    buf: &mut Vec<u8>,
) -> Result<[u8; 32], Error> {
    let input = reader.by_ref().take(piece.loc.length);
    src.blobs.decrypt_into(
        input,
        &piece.id,
        &piece.loc,
        src.secret,
        buf,
        piece.loc.size,
    )
}

/// Reads one small blob with a request of its own.
fn read_alone(src: Source<'_>, piece: &Piece, buf: &mut Vec<u8>) -> Result<[u8; 32], Error> {
    let (id, loc) = (&piece.id, &piece.loc);
    let input = src
        .blobs
        .open_run(&loc.pack, loc.offset, loc.length, &|| blob_name(id, loc))?;
    src.blobs
        .decrypt_into(input, id, loc, src.secret, buf, loc.size)
}

/// Checks a small file's only blob, in `plaintext`, against its record,
/// then makes the file.
fn make_small(
    work: &FileWork,
    plaintext: &[u8],
    digest: &[u8; 32],
) -> Result<Vec<MetaFault>, Failure> {
    let got = plaintext.len() as u64;
    let object = &work.objects[0];
    if got != object.size {
        return Err(Failure::Size {
            id: object.id,
            got,
            want: object.size,
        });
    }
    if got != work.size || *digest != work.sha256 {
        return Err(Failure::Content { count: got });
    }
    let (tmp, file) = place::create(&work.placing).map_err(Failure::Create)?;
    write_whole(&file, plaintext).map_err(Failure::Write)?;
    place::place(tmp, file, &work.placing).map_err(Failure::Name)
}

/// Makes one file blob by blob, streaming (hashing and writing on a
/// second thread when it is large).
fn fill_stream(src: Source<'_>, runs: &[Run], work: FileWork) -> Result<Vec<MetaFault>, Failure> {
    let (tmp, file) = place::create(&work.placing).map_err(Failure::Create)?;
    let mut sink = FileSink::new(file, work.size);
    let mut objects = work.objects.iter();
    for run in runs {
        let first = &run.pieces[0];
        let mut reader = src
            .blobs
            .open_run(&run.pack, run.offset, run.len, &|| {
                blob_name(&first.id, &first.loc)
            })
            .map(|r| Counted::new(r, run.offset))
            .map_err(Failure::Blob)?;
        for piece in &run.pieces {
            let want = objects.next().map_or(0, |o| o.size);
            reader.skip_to(piece.loc.offset).map_err(|e| {
                Failure::Blob(Error::repo(format!(
                    "{}: {}",
                    blob_name(&piece.id, &piece.loc),
                    io_cause(&e)
                )))
            })?;
            let input = reader.by_ref().take(piece.loc.length);
            let decrypted = src
                .blobs
                .decrypt_from(input, &piece.id, &piece.loc, src.secret, &mut sink, "");
            let got = match decrypted {
                Ok((got, _)) => got,
                Err(e) => {
                    return Err(match sink.take_error() {
                        Some(we) => Failure::Write(we),
                        None => Failure::Blob(e),
                    })
                }
            };
            if got != want {
                return Err(Failure::Size {
                    id: piece.id,
                    got,
                    want,
                });
            }
        }
    }
    let done = sink.finish().map_err(Failure::Write)?;
    if done.count != work.size || done.sha256 != work.sha256 {
        return Err(Failure::Content { count: done.count });
    }
    place::place(tmp, done.file, &work.placing).map_err(Failure::Name)
}

/// An error again, for a second file that wanted the same blob.
fn copy_error(e: &Error) -> Error {
    let copy = Error::new(e.kind(), e.to_string());
    match e.hint_text() {
        Some(h) => copy.hint(h),
        None => copy,
    }
}

/// A reader that knows its position in the pack, so a run's blobs are
/// found whatever each decryption left unread.
#[derive(Debug)]
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Counted<R> {
    fn new(inner: R, pos: u64) -> Self {
        Counted { inner, pos }
    }

    /// Reads and drops bytes up to pack offset `to`.
    fn skip_to(&mut self, to: u64) -> io::Result<()> {
        while self.pos < to {
            let avail = self.inner.fill_buf()?.len() as u64;
            if avail == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.consume(avail.min(to - self.pos) as usize);
        }
        if self.pos > to {
            return Err(io::Error::other("a blob overlaps the one before it"));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.pos += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_readers_skip_to_pack_offsets() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut r = Counted::new(io::Cursor::new(data), 1000);
        r.skip_to(1010).unwrap();
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        assert_eq!(two, [10, 11]);
        let mut rest = Vec::new();
        r.by_ref().take(5).read_to_end(&mut rest).unwrap();
        assert_eq!(r.pos, 1017);
        r.skip_to(1017).unwrap();
        assert!(r.skip_to(1016).is_err(), "never backwards");
        assert!(r.skip_to(1200).is_err(), "past the end");
    }
}
