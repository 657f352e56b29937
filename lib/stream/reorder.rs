//! Putting the results of parallel workers back in input order, within a
//! memory budget.
//!
//! bk-hash and bk-seal work on several records at once, and a slow one (a
//! large file being hashed or chunked) would otherwise be overtaken by
//! thousands of quick ones. Keeping input order means bk-scan's sorted walk
//! reaches bk-index still sorted, so the snapshot can be written while the
//! records arrive (see [`crate::stages::index::write`]), and the output of a stage is
//! the same from one run to the next. Order is kept only within `budget`
//! (an estimate of the bytes the waiting results hold): past it the oldest
//! waiting results go out anyway, so a slow record never stalls the
//! workers or grows memory without bound; it then arrives late, which
//! every consumer tolerates.

use std::collections::BTreeMap;

/// Results waiting for the ones before them.
pub struct Reorder<T> {
    next: u64,
    pending: BTreeMap<u64, (Option<T>, usize)>,
    weight: usize,
    budget: usize,
}

impl<T> Reorder<T> {
    /// A reorder buffer holding results of at most about `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Reorder {
            next: 0,
            pending: BTreeMap::new(),
            weight: 0,
            budget,
        }
    }

    /// Takes the result of input number `seq` (numbered from 0, each
    /// exactly once; `None` for an input that gives no output) weighing
    /// about `weight` bytes, and appends to `ready`, in input order, every
    /// result that may now go out.
    pub fn push(&mut self, seq: u64, item: Option<T>, weight: usize, ready: &mut Vec<T>) {
        if seq < self.next {
            // Its place was given up to stay within the budget.
            ready.extend(item);
            return;
        }
        self.weight += weight;
        self.pending.insert(seq, (item, weight));
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next && self.weight <= self.budget {
                break;
            }
            let (seq, (item, weight)) = entry.remove_entry();
            self.weight -= weight;
            self.next = seq + 1;
            ready.extend(item);
        }
    }

    /// Everything still waiting, in input order (the inputs before them
    /// never gave a result: the run stopped).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.weight = 0;
        std::mem::take(&mut self.pending)
            .into_values()
            .filter_map(|(item, _)| item)
    }
}

/// About how many bytes a record holds in memory as a struct: the fixed
/// fields, its names and its objects. Stages hold records that wait as
/// serialised lines instead where they can (a third of the memory).
pub fn record_weight(rec: &crate::record::Record) -> usize {
    1024 + rec.path.len()
        + rec.root.as_ref().map_or(0, String::len)
        + rec.objects.as_ref().map_or(0, |o| o.len() * 160)
        + rec.xattrs.values().map(String::len).sum::<usize>()
}

/// About how many bytes a serialised record line holds in memory (with
/// the buffer's bookkeeping).
pub fn line_weight(line: &Vec<u8>) -> usize {
    line.capacity() + 128
}

/// The budget of each stage's reorder buffer: enough for the tens of
/// thousands of small records (as lines) that overtake one large file.
pub const REORDER_BUDGET: usize = 12 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn run(order: &[u64], budget: usize) -> Vec<u64> {
        let mut r = Reorder::new(budget);
        let mut out = Vec::new();
        for &seq in order {
            let item = (seq % 5 != 4).then_some(seq);
            r.push(seq, item, 10, &mut out);
        }
        out.extend(r.drain());
        out
    }

    #[test]
    fn results_come_out_in_input_order_without_the_empty_ones() {
        assert_eq!(run(&[2, 0, 1, 4, 3, 5], 1000), vec![0, 1, 2, 3, 5]);
    }

    #[test]
    fn past_the_budget_the_oldest_waiting_go_out_and_the_late_one_follows() {
        // 0 is slow: 1..=3 fill the budget (30 bytes), and 5 pushes them
        // out (1, then 2 and 3, which follow it in order); 0 goes out the
        // moment it comes; 5 and 6 wait for 4 until the end.
        assert_eq!(run(&[1, 2, 3, 5, 0, 6], 30), vec![1, 2, 3, 0, 5, 6]);
    }

    #[test]
    fn drain_gives_what_waited_in_order() {
        let mut r = Reorder::new(1000);
        let mut out = Vec::new();
        r.push(3, Some("c"), 1, &mut out);
        r.push(1, Some("a"), 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.drain().collect::<Vec<_>>(), vec!["a", "c"]);
    }
}
