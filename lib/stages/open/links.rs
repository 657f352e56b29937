//! Which records of one inode become hard links of each other. bk-verify
//! runs the same check as restore, so that it reports exactly the records
//! restore copies instead of linking; it is a module of its own because it
//! is shared and holds none of the restorer's state.

use std::collections::HashMap;

use crate::record::{Kind, Record};

/// How many hard-linked inodes may wait for their other links at once;
/// beyond that further links are restored as separate copies (with a
/// note), so that hostile `nlink` values cannot grow memory without bound.
pub const MAX_PENDING_LINKS: usize = 100_000;

/// The records of one inode that may share it when restored: those of one
/// group (one root) whose kind, size and sha256 agree with the first record
/// of the inode seen. Both restore and verify use it, so verify reports
/// exactly the records restore will not link. `T` is what the caller
/// remembers of the first record; at most [`MAX_PENDING_LINKS`] inodes wait
/// at once.
#[derive(Debug)]
pub struct LinkCheck<K, T> {
    firsts: HashMap<K, FirstOfInode<T>>,
}

#[derive(Debug)]
struct FirstOfInode<T> {
    size: u64,
    sha256: Option<String>,
    /// Links still expected.
    left: u64,
    data: T,
}

/// How a record relates to the first record of its inode.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkMatch<'a, T> {
    /// No record of this inode waits (the first, or past the limit).
    First,
    /// The first record's content agrees: a link of it.
    Same(&'a T),
    /// Same device and inode, other size or sha256: not the same file.
    Differs(&'a T),
}

impl<K: std::hash::Hash + Eq, T> Default for LinkCheck<K, T> {
    fn default() -> Self {
        LinkCheck {
            firsts: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq, T> LinkCheck<K, T> {
    /// Whether a file record with more than one link (`key`: its group,
    /// device and inode) is a link of the first record seen of its inode.
    pub fn find(&self, key: &K, rec: &Record) -> LinkMatch<'_, T> {
        match self.firsts.get(key) {
            None => LinkMatch::First,
            Some(f) if rec.kind == Kind::File && f.size == rec.size && f.sha256 == rec.sha256 => {
                LinkMatch::Same(&f.data)
            }
            Some(f) => LinkMatch::Differs(&f.data),
        }
    }

    /// Remembers `rec` as the first record of its inode, with `nlink - 1`
    /// links to come. Returns false (and remembers nothing) when
    /// [`MAX_PENDING_LINKS`] inodes already wait.
    pub fn remember(&mut self, key: K, rec: &Record, data: T) -> bool {
        if self.firsts.len() >= MAX_PENDING_LINKS && !self.firsts.contains_key(&key) {
            return false;
        }
        self.firsts.insert(
            key,
            FirstOfInode {
                size: rec.size,
                sha256: rec.sha256.clone(),
                left: rec.nlink.saturating_sub(1),
                data,
            },
        );
        true
    }

    /// One more link of `key` is done; the inode is forgotten after its last.
    pub fn linked(&mut self, key: &K) {
        if let Some(f) = self.firsts.get_mut(key) {
            f.left = f.left.saturating_sub(1);
            if f.left == 0 {
                self.firsts.remove(key);
            }
        }
    }

    /// Forgets the first record of `key`.
    pub fn forget(&mut self, key: &K) {
        self.firsts.remove(key);
    }

    /// Forgets every inode (a new snapshot begins).
    pub fn clear(&mut self) {
        self.firsts.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn only_records_that_agree_are_links() {
        let file = |size: u64, sha: &str| {
            let mut r = Record::new(Kind::File, Path::new("f"));
            r.size = size;
            r.sha256 = Some(sha.into());
            r.nlink = 3;
            r
        };
        let mut links: LinkCheck<(usize, u64, u64), &str> = LinkCheck::default();
        let key = (0, 1, 2);
        let first = file(5, "aa");
        assert_eq!(links.find(&key, &first), LinkMatch::First);
        assert!(links.remember(key, &first, "first"));
        assert_eq!(links.find(&key, &file(5, "aa")), LinkMatch::Same(&"first"));
        assert_eq!(
            links.find(&key, &file(5, "bb")),
            LinkMatch::Differs(&"first")
        );
        assert_eq!(
            links.find(&key, &file(6, "aa")),
            LinkMatch::Differs(&"first")
        );
        let mut dir = file(5, "aa");
        dir.kind = Kind::Dir;
        assert_eq!(links.find(&key, &dir), LinkMatch::Differs(&"first"));
        assert_eq!(
            links.find(&(1, 1, 2), &first),
            LinkMatch::First,
            "other group"
        );
        // Forgotten after its last link (nlink 3: two more).
        links.linked(&key);
        assert!(matches!(links.find(&key, &first), LinkMatch::Same(_)));
        links.linked(&key);
        assert_eq!(links.find(&key, &first), LinkMatch::First);
    }
}
