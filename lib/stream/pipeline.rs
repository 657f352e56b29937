//! The shape every record-processing stage shares: one thread parses stdin,
//! `jobs` workers process records in parallel, and the calling thread
//! writes results, all joined by bounded channels so memory holds only the
//! records in flight and a slow consumer back-pressures the whole chain.
//!
//! Records travel in batches: on a re-run most records need a single
//! `stat`, and a channel message (with the wake-ups behind it) per record
//! cost more than that. A batch is handed on as soon as the input would
//! make the reader wait, so a record never waits for others that have not
//! arrived; and a file with much to read closes its batch, so that large
//! files still spread over the workers.

use crossbeam_channel::{bounded, Receiver, TryRecvError};

use crate::error::{Error, Outcome, Result};
use crate::record::{Kind, Peek, Record, RecordReader};
use crate::stream::reorder::{Reorder, REORDER_BUDGET};

/// How many batches of input may wait per worker.
const QUEUE_PER_WORKER: usize = 4;

/// How many batches of results may wait per worker. More than the input
/// side: the sink stops now and then for tens of milliseconds (bk-seal's
/// batch commit: a `syncfs`, then 2,000 renames), and the workers should
/// go on meanwhile rather than wait for room.
const RESULTS_PER_WORKER: usize = 32;

/// Records in one batch at most.
pub const BATCH_RECORDS: usize = 64;

/// File bytes one batch holds at most (past it, the batch is handed on).
const BATCH_FILE_BYTES: u64 = 1 << 20;

/// What [`run`]'s workers work on: records, or anything else a stage
/// hands out (object ids to re-hash).
pub trait Job: Send {
    /// The content working on it may read, which closes a batch early (a
    /// file's size).
    fn bytes(&self) -> u64;
}

impl Job for Record {
    fn bytes(&self) -> u64 {
        file_bytes(self)
    }
}

/// Jobs for [`run`]: an iterator that can tell whether its next job is at
/// hand.
pub trait Source<T = Record>: Iterator<Item = Result<T>> {
    /// Whether the next job can be had without waiting on input.
    fn next_ready(&self) -> bool;
}

impl<R: Peek> Source for RecordReader<R> {
    fn next_ready(&self) -> bool {
        RecordReader::next_ready(self)
    }
}

impl<T, S: Source<T> + ?Sized> Source<T> for Box<S> {
    fn next_ready(&self) -> bool {
        (**self).next_ready()
    }
}

/// Any iterator of jobs as a [`Source`] that hands on every job at once.
pub struct Unbatched<I>(pub I);

impl<T, I: Iterator<Item = Result<T>>> Iterator for Unbatched<I> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        self.0.next()
    }
}

impl<T, I: Iterator<Item = Result<T>>> Source<T> for Unbatched<I> {
    fn next_ready(&self) -> bool {
        false
    }
}

/// Records per batch for a stage storing into or reading from a
/// repository: 1 where each record waits on a network round trip
/// (`remote`, so that they overlap), [`BATCH_RECORDS`] on a local
/// directory.
pub fn batch_for(remote: bool) -> usize {
    if remote {
        1
    } else {
        BATCH_RECORDS
    }
}

/// The next message from `rx`, calling `idle` first when none is ready
/// (the moment to flush buffered output before waiting); `None` once every
/// sender is gone.
fn recv_or_idle<T>(rx: &Receiver<T>, idle: impl FnOnce() -> Result<()>) -> Result<Option<T>> {
    match rx.try_recv() {
        Ok(msg) => Ok(Some(msg)),
        Err(TryRecvError::Disconnected) => Ok(None),
        Err(TryRecvError::Empty) => {
            idle()?;
            Ok(rx.recv().ok())
        }
    }
}

/// The content a record may make a worker read: a file's size.
pub fn file_bytes(rec: &Record) -> u64 {
    if rec.kind == Kind::File {
        rec.size
    } else {
        0
    }
}

/// Gathers records into batches for the workers.
struct Batcher<T> {
    batch: Vec<T>,
    file_bytes: u64,
    max_records: usize,
}

impl<T> Batcher<T> {
    /// An empty batcher for batches of at most `max_records` records.
    fn new(max_records: usize) -> Self {
        Batcher {
            batch: Vec::new(),
            file_bytes: 0,
            max_records: max_records.max(1),
        }
    }

    /// Adds `item` (for a record of [`file_bytes`] `bytes`); returns the
    /// batch when it should be handed on: it is full, or holds much file
    /// content, or the next record is not at hand (`more_ready` false).
    fn add(&mut self, item: T, bytes: u64, more_ready: bool) -> Option<Vec<T>> {
        self.file_bytes = self.file_bytes.saturating_add(bytes);
        self.batch.push(item);
        let full = self.batch.len() >= self.max_records || self.file_bytes >= BATCH_FILE_BYTES;
        (full || !more_ready).then(|| self.take()).flatten()
    }

    /// What is gathered, if anything.
    fn take(&mut self) -> Option<Vec<T>> {
        self.file_bytes = 0;
        (!self.batch.is_empty()).then(|| std::mem::take(&mut self.batch))
    }
}

enum Msg<O> {
    /// The result of input number `.0`: an output, or none.
    Out(u64, Option<O>),
    ItemError(u64, Error),
    InputError(Error),
}

/// Runs `work` over every record from `input` on `jobs` threads (handing
/// each up to `batch` records at once: 1 where each record waits on a
/// network round trip, so that they overlap) and hands
/// each result to `sink` on the calling thread, in input order as far as
/// the reorder budget allows (`weight` estimates an output's bytes; see
/// [`crate::stream::reorder`]). `sink` is also handed `None` whenever no result is
/// ready and the stage is about to wait: the moment to flush buffered
/// output, so that the next program works on it meanwhile (a large file
/// being hashed must not keep the records before it from bk-seal).
///
/// A per-record error from `work` is reported on stderr and the run goes
/// on, unless it is [fatal](Error::is_fatal): then it stops everything and
/// is returned; a malformed input stops reading (records already read are still
/// finished) and is reported; an error from `sink` (the output went away)
/// stops everything and is returned. The returned [`Outcome`] holds the
/// exit status earned by the reported errors.
pub fn run<T, It, O, F, S>(
    program: &str,
    jobs: usize,
    batch: usize,
    input: impl FnOnce() -> It + Send,
    work: F,
    weight: fn(&O) -> usize,
    mut sink: S,
) -> Result<Outcome>
where
    T: Job,
    It: Source<T>,
    O: Send,
    F: Fn(T) -> Result<Option<O>> + Sync,
    S: FnMut(Option<O>) -> Result<()>,
{
    let jobs = jobs.max(1);
    let (in_tx, in_rx) = bounded::<Vec<(u64, T)>>(jobs * QUEUE_PER_WORKER);
    let (out_tx, out_rx) = bounded::<Vec<Msg<O>>>(jobs * RESULTS_PER_WORKER);
    let mut outcome = Outcome::default();
    let mut sink_error = None;
    std::thread::scope(|scope| {
        let reader_out = out_tx.clone();
        scope.spawn(move || {
            let mut source = input();
            let mut batcher = Batcher::new(batch);
            let mut seq = 0u64;
            while let Some(item) = source.next() {
                let rec = match item {
                    Ok(rec) => rec,
                    Err(e) => {
                        // The records before the bad line are still done.
                        if let Some(batch) = batcher.take() {
                            let _ = in_tx.send(batch);
                        }
                        let _ = reader_out.send(vec![Msg::InputError(e)]);
                        return;
                    }
                };
                let bytes = rec.bytes();
                if let Some(batch) = batcher.add((seq, rec), bytes, source.next_ready()) {
                    if in_tx.send(batch).is_err() {
                        return;
                    }
                }
                seq += 1;
            }
            if let Some(batch) = batcher.take() {
                let _ = in_tx.send(batch);
            }
        });
        for _ in 0..jobs {
            let in_rx = in_rx.clone();
            let out_tx = out_tx.clone();
            let work = &work;
            scope.spawn(move || {
                for batch in in_rx {
                    let mut msgs = Vec::with_capacity(batch.len());
                    for (seq, rec) in batch {
                        // What is done goes out before a job with much
                        // to read holds it back.
                        if rec.bytes() >= BATCH_FILE_BYTES
                            && !msgs.is_empty()
                            && out_tx.send(std::mem::take(&mut msgs)).is_err()
                        {
                            return;
                        }
                        match work(rec) {
                            Ok(o) => msgs.push(Msg::Out(seq, o)),
                            Err(e) => {
                                let fatal = e.is_fatal();
                                msgs.push(Msg::ItemError(seq, e));
                                if fatal {
                                    break;
                                }
                            }
                        }
                    }
                    if out_tx.send(msgs).is_err() {
                        return;
                    }
                }
            });
        }
        drop(in_rx);
        drop(out_tx);
        let mut order = Reorder::new(REORDER_BUDGET);
        let mut ready = Vec::new();
        'receiving: loop {
            let msgs = match recv_or_idle(&out_rx, || sink(None)) {
                Ok(Some(msgs)) => msgs,
                Ok(None) => break,
                Err(e) => {
                    sink_error = Some(e);
                    break;
                }
            };
            for msg in msgs {
                match msg {
                    Msg::Out(seq, o) => {
                        let w = o.as_ref().map_or(0, weight);
                        order.push(seq, o, w, &mut ready);
                    }
                    Msg::ItemError(_, e) if e.is_fatal() => {
                        sink_error = Some(e);
                        break 'receiving;
                    }
                    Msg::ItemError(seq, e) => {
                        outcome.report(program, &e);
                        order.push(seq, None, 0, &mut ready);
                    }
                    Msg::InputError(e) => outcome.report(program, &e),
                }
                if let Err(e) = ready.drain(..).try_for_each(|o| sink(Some(o))) {
                    sink_error = Some(e);
                    break 'receiving;
                }
            }
        }
        if sink_error.is_none() {
            if let Err(e) = order.drain().try_for_each(|o| sink(Some(o))) {
                sink_error = Some(e);
            }
        }
        // Dropping the receiver makes every worker and the reader stop; a
        // reader blocked on stdin stops at its next look.
        if sink_error.is_some() {
            crate::record::stop_reading_stdin();
        }
        drop(out_rx);
    });
    match sink_error {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::path::Path;

    fn file(size: u64) -> Record {
        let mut rec = Record::new(Kind::File, Path::new("f"));
        rec.size = size;
        rec
    }

    #[test]
    fn a_batch_goes_when_full_heavy_or_before_a_wait() {
        let mut b = Batcher::new(3);
        assert!(b.add(1, 10, true).is_none());
        assert!(b.add(2, 10, true).is_none());
        assert_eq!(b.add(3, 10, true), Some(vec![1, 2, 3]), "full");
        assert!(b.add(4, 10, true).is_none());
        assert_eq!(
            b.add(5, BATCH_FILE_BYTES, true),
            Some(vec![4, 5]),
            "much to read"
        );
        assert_eq!(b.add(6, 10, false), Some(vec![6]), "the next would wait");
        assert!(b.add(7, 10, true).is_none());
        assert_eq!(b.take(), Some(vec![7]));
        assert_eq!(b.take(), None);
        assert_eq!(file_bytes(&file(5)), 5);
        assert_eq!(file_bytes(&Record::new(Kind::Dir, Path::new("d"))), 0);
    }

    /// `n` file records, sized 0 to n-1, as NDJSON.
    fn lines(n: u64) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let mut line = file(i).to_line();
                line.push(b'\n');
                line
            })
            .collect()
    }

    /// Records from a byte stream through `jobs` workers in batches of
    /// `batch`: every record comes out once, in input order.
    fn through(jobs: usize, batch: usize, n: u64) -> Vec<u64> {
        let input = lines(n);
        let mut out = Vec::new();
        let outcome = run(
            "test",
            jobs,
            batch,
            || RecordReader::new(io::BufReader::with_capacity(4096, &input[..])),
            |rec| Ok(Some(rec.size)),
            |_| 8,
            |size| {
                out.extend(size);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(outcome.exit_code(), 0);
        out
    }

    #[test]
    fn every_record_comes_out_once_in_order() {
        let want: Vec<u64> = (0..5000).collect();
        for (jobs, batch) in [(1, 1), (3, 1), (3, BATCH_RECORDS), (2, 7)] {
            assert_eq!(
                through(jobs, batch, 5000),
                want,
                "{jobs} jobs, batches of {batch}"
            );
        }
    }

    #[test]
    fn a_fatal_error_stops_the_run_and_is_returned() {
        let input = lines(1000);
        let mut seen = 0;
        let err = run(
            "test",
            2,
            BATCH_RECORDS,
            || RecordReader::new(&input[..]),
            |rec| {
                if rec.size == 500 {
                    Err(Error::repo("the disk is gone").fatal())
                } else {
                    Ok(Some(rec.size))
                }
            },
            |_| 8,
            |size: Option<u64>| {
                if let Some(size) = size {
                    assert!(size < 500, "nothing after the failed record: {size}");
                    seen += 1;
                }
                Ok(())
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("the disk is gone"), "{err}");
        assert!(seen <= 500);
    }
}
