//! The files a restore has handed to the workers and not yet finished,
//! and what waits for them, in record order. Small files are gathered
//! into batches; a batch is planned (see [`super::plan`]) into runs of
//! neighbouring blobs, one job each, and a large file is a job of its
//! own. Whatever order the workers finish in, entries come back in the
//! order they went in, so the restorer reports files and applies
//! directory metadata in record order, a directory's only once the files
//! before it have their names. The number of files in the window is
//! bounded, whatever the number of records.

use std::collections::{HashMap, VecDeque};

use crossbeam_channel::{Receiver, Sender};

use super::fetch::{Failure, FileWork, Filled, Job, Object};
use super::place::{MetaFault, Placing};
use super::plan::{self, Limits, Piece};

/// Small files gathered before a batch is planned.
const BATCH_FILES: usize = 256;

/// Bytes of blobs gathered before a batch is planned.
const BATCH_BYTES: u64 = 8 << 20;

/// Files in the window at most.
const MAX_FILES: usize = 4096;

/// How reads are joined on a local disk: a gap is cheap to read through
/// there, and runs stay short so that every worker gets some.
const LOCAL: Limits = Limits {
    gap: 256 << 10,
    span: 4 << 20,
};

/// How reads are joined on remote storage, where every request costs a
/// round trip.
const REMOTE: Limits = Limits {
    gap: 4 << 20,
    span: 16 << 20,
};

/// An entry handed back: a file and what became of it, or something that
/// only waited for the files before it.
pub(crate) enum Ready<F, M> {
    File(F, Filling),
    Marker(M),
}

/// What became of a file: restored (with the metadata that could not be
/// set), or not.
pub(crate) type Filling = Result<Vec<MetaFault>, Failure>;

/// Files being filled and markers, in the order they came: `F` is what
/// the caller keeps of a file, `M` of a marker.
pub(crate) struct Window<F, M> {
    /// Entries in order.
    entries: VecDeque<Entry<F, M>>,
    files: usize,
    max_files: usize,
    next_seq: u64,
    batch: Vec<FileWork>,
    batch_bytes: u64,
    limits: Limits,
    filled: HashMap<u64, Filling>,
    jobs: Sender<Job>,
    results: Receiver<Filled>,
}

/// One entry of a window: a file (by number) or a marker.
enum Entry<F, M> {
    File(u64, F),
    Marker(M),
}

impl<F, M> Window<F, M> {
    /// A window sending jobs to `jobs` and getting files back from
    /// `results`; `remote`: the repository is on remote storage.
    pub(crate) fn new(jobs: Sender<Job>, results: Receiver<Filled>, remote: bool) -> Self {
        Window {
            entries: VecDeque::new(),
            files: 0,
            max_files: MAX_FILES,
            next_seq: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            limits: if remote { REMOTE } else { LOCAL },
            filled: HashMap::new(),
            jobs,
            results,
        }
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether it holds as many files as it may: take one out before
    /// adding another.
    pub(crate) fn is_full(&self) -> bool {
        self.files >= self.max_files
    }

    /// Adds a file to make as `placing` says, to hold `size` bytes with
    /// SHA-256 `sha256`, made of `objects`.
    pub(crate) fn push_file(
        &mut self,
        placing: Placing,
        size: u64,
        sha256: [u8; 32],
        objects: Vec<Object>,
        payload: F,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry::File(seq, payload));
        self.files += 1;
        let work = FileWork {
            seq,
            placing,
            size,
            sha256,
            objects,
        };
        if !work.is_small() {
            let pieces = work
                .objects
                .iter()
                .map(|o| Piece {
                    id: o.id,
                    loc: o.loc,
                    targets: vec![0],
                })
                .collect();
            let runs = plan::in_order(pieces, &self.limits);
            self.send(Job::Stream { runs, file: work });
            return;
        }
        self.batch_bytes += work.objects[0].loc.length;
        self.batch.push(work);
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Adds an entry that is ready once every entry before it is.
    pub(crate) fn push_marker(&mut self, payload: M) {
        self.entries.push_back(Entry::Marker(payload));
    }

    /// The oldest entry, if it is ready, without waiting.
    pub(crate) fn pop_ready(&mut self) -> Option<Ready<F, M>> {
        while let Ok(f) = self.results.try_recv() {
            self.filled.insert(f.seq, f.result);
        }
        match self.entries.front()? {
            Entry::File(seq, _) if !self.filled.contains_key(seq) => None,
            _ => self.pop(),
        }
    }

    /// The oldest entry, waiting for it.
    pub(crate) fn pop_wait(&mut self) -> Option<Ready<F, M>> {
        let seq = match self.entries.front()? {
            Entry::File(seq, _) => *seq,
            Entry::Marker(_) => return self.pop(),
        };
        self.flush();
        while !self.filled.contains_key(&seq) {
            match self.results.recv() {
                Ok(f) => {
                    self.filled.insert(f.seq, f.result);
                }
                Err(_) => {
                    let lost = crate::error::Error::repo("the restore workers stopped");
                    self.filled.insert(seq, Err(Failure::Blob(lost)));
                }
            }
        }
        self.pop()
    }

    fn pop(&mut self) -> Option<Ready<F, M>> {
        match self.entries.pop_front()? {
            Entry::Marker(payload) => Some(Ready::Marker(payload)),
            Entry::File(seq, payload) => {
                self.files -= 1;
                let result = self.filled.remove(&seq)?;
                Some(Ready::File(payload, result))
            }
        }
    }

    /// Plans the gathered small files and hands their runs to the workers.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.batch_bytes = 0;
        let mut batch: Vec<Option<FileWork>> = std::mem::take(&mut self.batch)
            .into_iter()
            .map(Some)
            .collect();
        let wants = batch
            .iter()
            .enumerate()
            .filter_map(|(n, w)| w.as_ref().map(|w| (n, w.objects[0].id, w.objects[0].loc)))
            .collect();
        for mut run in plan::group(wants, &self.limits) {
            let mut files = Vec::new();
            for piece in &mut run.pieces {
                for t in &mut piece.targets {
                    *t = match batch.get_mut(*t).and_then(Option::take) {
                        Some(work) => {
                            files.push(work);
                            files.len() - 1
                        }
                        None => usize::MAX,
                    };
                }
            }
            self.send(Job::Run { run, files });
        }
    }

    fn send(&mut self, job: Job) {
        if let Err(e) = self.jobs.send(job) {
            // No worker is left: every file of the job fails.
            let files = match e.into_inner() {
                Job::Run { files, .. } => files,
                Job::Stream { file, .. } => vec![file],
            };
            for f in files {
                let lost = crate::error::Error::repo("the restore workers stopped");
                self.filled.insert(f.seq, Err(Failure::Blob(lost)));
            }
        }
    }
}
