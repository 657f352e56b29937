//! Sorting a record stream of any length in bounded memory: records are
//! buffered up to a byte limit, sorted, spilled to temporary files as runs,
//! and merged back. A stream that fits in the buffer never touches disk.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

use crate::record::order::cmp_entries;

/// Bytes of records held in memory before a run is spilled.
const DEFAULT_LIMIT: usize = 32 << 20;

/// One record ready to sort: its root and path (raw bytes) and its
/// serialised JSON line (without newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortItem {
    /// Root bytes.
    pub root: Vec<u8>,
    /// Relative path bytes.
    pub path: Vec<u8>,
    /// The record as one JSON line.
    pub line: Vec<u8>,
}

impl SortItem {
    /// The snapshot order: by root, then path (see [`crate::record::order`]).
    pub fn cmp_key(&self, other: &Self) -> Ordering {
        cmp_entries(&self.root, &self.path, &other.root, &other.path)
    }

    /// Bytes it takes in memory: what its buffers hold, not only what
    /// they use (a line serialised into a growing `Vec` may hold up to
    /// twice its length), plus its place in the buffer.
    fn weight(&self) -> usize {
        self.root.capacity() + self.path.capacity() + self.line.capacity() + 96
    }
}

/// Collects items, spilling sorted runs to anonymous temporary files.
pub struct ExternalSorter {
    buf: Vec<SortItem>,
    buf_bytes: usize,
    limit: usize,
    runs: Vec<File>,
}

impl Default for ExternalSorter {
    fn default() -> Self {
        Self::with_limit(DEFAULT_LIMIT)
    }
}

impl ExternalSorter {
    /// A sorter that spills once `limit` bytes are buffered.
    pub fn with_limit(limit: usize) -> Self {
        ExternalSorter {
            buf: Vec::new(),
            buf_bytes: 0,
            limit,
            runs: Vec::new(),
        }
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.runs.is_empty()
    }

    /// Adds one item.
    pub fn push(&mut self, item: SortItem) -> io::Result<()> {
        self.buf_bytes += item.weight();
        self.buf.push(item);
        if self.buf_bytes >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buf.sort_by(SortItem::cmp_key);
        let mut file = tempfile::tempfile()?;
        {
            let mut w = BufWriter::with_capacity(256 << 10, &mut file);
            for item in self.buf.drain(..) {
                for part in [&item.root, &item.path, &item.line] {
                    w.write_all(&(part.len() as u64).to_le_bytes())?;
                    w.write_all(part)?;
                }
            }
            w.flush()?;
        }
        file.rewind()?;
        self.runs.push(file);
        self.buf_bytes = 0;
        self.buf.shrink_to(1024);
        Ok(())
    }

    /// All items in order.
    pub fn finish(mut self) -> io::Result<Sorted> {
        if self.runs.is_empty() {
            self.buf.sort_by(SortItem::cmp_key);
            return Ok(Sorted::Memory(self.buf.into_iter()));
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        let mut readers: Vec<BufReader<File>> = self
            .runs
            .into_iter()
            .map(|f| BufReader::with_capacity(64 << 10, f))
            .collect();
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(item) = read_item(r)? {
                heap.push(HeapEntry { item, run: i });
            }
        }
        Ok(Sorted::Merge { readers, heap })
    }
}

/// The sorted items, from memory or merged from runs.
pub enum Sorted {
    /// Everything fitted in memory.
    Memory(std::vec::IntoIter<SortItem>),
    /// A k-way merge of spilled runs.
    Merge {
        /// One reader per run.
        readers: Vec<BufReader<File>>,
        /// The smallest unread item of each run.
        heap: BinaryHeap<HeapEntry>,
    },
}

impl Iterator for Sorted {
    type Item = io::Result<SortItem>;

    fn next(&mut self) -> Option<io::Result<SortItem>> {
        match self {
            Sorted::Memory(it) => it.next().map(Ok),
            Sorted::Merge { readers, heap } => {
                let HeapEntry { item, run } = heap.pop()?;
                match read_item(&mut readers[run]) {
                    Ok(Some(next)) => heap.push(HeapEntry { item: next, run }),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                Some(Ok(item))
            }
        }
    }
}

/// An item in the merge heap (reversed so the heap yields the smallest).
pub struct HeapEntry {
    item: SortItem,
    run: usize,
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for HeapEntry {}

impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .item
            .cmp_key(&self.item)
            .then_with(|| other.run.cmp(&self.run))
    }
}

fn read_part(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 8];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u64::from_le_bytes(len) as usize;
    let mut part = vec![0u8; len];
    r.read_exact(&mut part)?;
    Ok(Some(part))
}

fn read_item(r: &mut impl Read) -> io::Result<Option<SortItem>> {
    let Some(root) = read_part(r)? else {
        return Ok(None);
    };
    let truncated = || io::Error::new(io::ErrorKind::UnexpectedEof, "truncated sort run");
    let path = read_part(r)?.ok_or_else(truncated)?;
    let line = read_part(r)?.ok_or_else(truncated)?;
    Ok(Some(SortItem { root, path, line }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(root: &str, path: &str) -> SortItem {
        SortItem {
            root: root.into(),
            path: path.into(),
            line: format!("{root}|{path}").into_bytes(),
        }
    }

    #[test]
    fn spilled_runs_merge_in_order() {
        let mut s = ExternalSorter::with_limit(500);
        let mut want = Vec::new();
        for i in (0..300).rev() {
            let it = item(
                if i % 2 == 0 { "/r1" } else { "/r0" },
                &format!("d{}/f{i}", i % 7),
            );
            want.push(it.clone());
            s.push(it).unwrap();
        }
        assert!(s.runs.len() > 3);
        want.sort_by(SortItem::cmp_key);
        let got: Vec<SortItem> = s.finish().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(got, want);
    }
}
