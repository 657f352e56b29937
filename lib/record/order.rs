//! The one order of records bk uses everywhere: by root, then by path
//! component by component ("." first). It is the order a sorted depth-first
//! walk produces (`a`, `a/x`, `a.txt`), so bk-scan's output, snapshots and
//! the local snapshot cache line up and can be merged as streams.

use std::cmp::Ordering;

/// Compares two relative paths (raw bytes) component by component; the
/// root "." sorts before everything.
pub fn cmp_paths(a: &[u8], b: &[u8]) -> Ordering {
    match (a == b".", b == b".") {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/')),
    }
}

/// Compares (root, path) pairs: root bytewise, then path by components.
pub fn cmp_entries(a_root: &[u8], a_path: &[u8], b_root: &[u8], b_path: &[u8]) -> Ordering {
    a_root.cmp(b_root).then_with(|| cmp_paths(a_path, b_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order() {
        let mut v: Vec<&[u8]> = vec![b"a.txt", b"a/x", b"a", b".", b"b", b"a/x/y", b"a-b"];
        v.sort_by(|a, b| cmp_paths(a, b));
        let want: Vec<&[u8]> = vec![b".", b"a", b"a/x", b"a/x/y", b"a-b", b"a.txt", b"b"];
        assert_eq!(v, want);
    }
}
