//! The shape every record-processing stage shares: one thread parses stdin,
//! `jobs` workers process records in parallel, and the calling thread
//! writes results, all joined by bounded channels so memory holds only the
//! records in flight and a slow consumer back-pressures the whole chain.

use crossbeam_channel::bounded;

use crate::error::{Error, Outcome, Result};
use crate::record::Record;
use crate::reorder::{Reorder, REORDER_BUDGET};

/// How many records may wait in each queue per worker.
const QUEUE_PER_WORKER: usize = 16;

enum Msg<O> {
    /// The result of input number `.0`: an output, or none.
    Out(u64, Option<O>),
    ItemError(u64, Error),
    InputError(Error),
}

/// Runs `work` over every record from `input` on `jobs` threads and hands
/// each result to `sink` on the calling thread, in input order as far as
/// the reorder budget allows (`weight` estimates an output's bytes; see
/// [`crate::reorder`]).
///
/// A per-record error from `work` is reported on stderr and the run goes
/// on, unless it is [fatal](Error::is_fatal): then it stops everything and
/// is returned; a malformed input stops reading (records already read are still
/// finished) and is reported; an error from `sink` (the output went away)
/// stops everything and is returned. The returned [`Outcome`] holds the
/// exit status earned by the reported errors.
pub fn run<It, O, F, S>(
    program: &str,
    jobs: usize,
    input: impl FnOnce() -> It + Send,
    work: F,
    weight: fn(&O) -> usize,
    mut sink: S,
) -> Result<Outcome>
where
    It: Iterator<Item = Result<Record>>,
    O: Send,
    F: Fn(Record) -> Result<Option<O>> + Sync,
    S: FnMut(O) -> Result<()>,
{
    let jobs = jobs.max(1);
    let (in_tx, in_rx) = bounded::<(u64, Record)>(jobs * QUEUE_PER_WORKER);
    let (out_tx, out_rx) = bounded::<Msg<O>>(jobs * QUEUE_PER_WORKER);
    let mut outcome = Outcome::default();
    let mut sink_error = None;
    std::thread::scope(|scope| {
        let reader_out = out_tx.clone();
        scope.spawn(move || {
            for (seq, item) in (0u64..).zip(input()) {
                match item {
                    Ok(rec) => {
                        if in_tx.send((seq, rec)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = reader_out.send(Msg::InputError(e));
                        return;
                    }
                }
            }
        });
        for _ in 0..jobs {
            let in_rx = in_rx.clone();
            let out_tx = out_tx.clone();
            let work = &work;
            scope.spawn(move || {
                for (seq, rec) in in_rx {
                    let msg = match work(rec) {
                        Ok(o) => Msg::Out(seq, o),
                        Err(e) => Msg::ItemError(seq, e),
                    };
                    if out_tx.send(msg).is_err() {
                        return;
                    }
                }
            });
        }
        drop(in_rx);
        drop(out_tx);
        let mut order = Reorder::new(REORDER_BUDGET);
        let mut ready = Vec::new();
        for msg in &out_rx {
            match msg {
                Msg::Out(seq, o) => {
                    let w = o.as_ref().map_or(0, weight);
                    order.push(seq, o, w, &mut ready);
                }
                Msg::ItemError(_, e) if e.is_fatal() => {
                    sink_error = Some(e);
                    break;
                }
                Msg::ItemError(seq, e) => {
                    outcome.report(program, &e);
                    order.push(seq, None, 0, &mut ready);
                }
                Msg::InputError(e) => outcome.report(program, &e),
            }
            if let Err(e) = ready.drain(..).try_for_each(&mut sink) {
                sink_error = Some(e);
                break;
            }
        }
        if sink_error.is_none() {
            if let Err(e) = order.drain().try_for_each(&mut sink) {
                sink_error = Some(e);
            }
        }
        // Dropping the receiver makes every worker and the reader stop.
        drop(out_rx);
    });
    match sink_error {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}
