//! What prune does to each pack, decided before anything is touched: a
//! plan that is also the dry-run output and is tested without storage.
//!
//! A blob is *used* when some snapshot names it (the first copy of it in
//! the index; another copy is a duplicate, unused). A pack with no used
//! blob is deleted; a pack whose unused bytes exceed `max_unused` of it is
//! *repacked*: its used blobs are copied (as ciphertext, under a new pack
//! keystream) into new packs, which are made durable before the old pack
//! is deleted. Packs modified less than the grace period ago are never
//! touched: a backup that is still running, or whose records are not in a
//! snapshot yet, may need what they hold.

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::repo::id::{ObjectId, PackId};
use crate::repo::index::{Index, Location};

/// What happens to one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Left as it is.
    Keep,
    /// Left as it is, because it is younger than the grace period.
    KeepRecent,
    /// Deleted: nothing in it is used.
    Delete,
    /// Its used blobs are copied into new packs, then it is deleted.
    Repack,
}

/// How one pack is used.
#[derive(Debug, Clone, Serialize)]
pub struct PackUse {
    /// The pack.
    #[serde(serialize_with = "crate::repo::id::as_text")]
    pub pack: PackId,
    /// Its stored size.
    pub size: u64,
    /// Blobs some snapshot names (first copies).
    pub used_blobs: u64,
    /// Bytes of those blobs.
    pub used_bytes: u64,
    /// Other blobs (unreferenced, or duplicates).
    pub unused_blobs: u64,
    /// Bytes of those.
    pub unused_bytes: u64,
    /// How long ago it was last modified.
    pub age_seconds: u64,
    /// What prune does with it.
    pub action: Action,
}

/// The whole plan.
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// Every indexed pack, with its action.
    pub packs: Vec<PackUse>,
    /// The blobs to copy, grouped by pack, in offset order.
    pub copies: Vec<(ObjectId, Location)>,
    /// Referenced ids no pack holds.
    pub missing: u64,
}

impl PrunePlan {
    /// Plans prune for the blobs of `index`, `referenced` by the
    /// snapshots, packs last modified at `modified` (unknown: treated as
    /// new), at `now`.
    pub fn make(
        index: &Index,
        referenced: &HashSet<ObjectId>,
        modified: &HashMap<PackId, SystemTime>,
        now: SystemTime,
        grace: Duration,
        max_unused: f64,
    ) -> io::Result<PrunePlan> {
        let numbers: HashMap<PackId, usize> = index
            .packs()
            .iter()
            .enumerate()
            .map(|(n, p)| (p.id, n))
            .collect();
        let mut packs: Vec<PackUse> = index
            .packs()
            .iter()
            .map(|p| PackUse {
                pack: p.id,
                size: p.size,
                used_blobs: 0,
                used_bytes: 0,
                unused_blobs: 0,
                unused_bytes: 0,
                age_seconds: modified
                    .get(&p.id)
                    .and_then(|m| now.duration_since(*m).ok())
                    .map_or(0, |d| d.as_secs()),
                action: Action::Keep,
            })
            .collect();
        // Entries come sorted by id: the first of a referenced id is its
        // used copy.
        let mut last: Option<ObjectId> = None;
        let mut found = 0u64;
        let mut used: Vec<(ObjectId, Location)> = Vec::new();
        index.for_each(&mut |id, loc| {
            let Some(&n) = numbers.get(&loc.pack) else {
                return;
            };
            let first = last != Some(id);
            last = Some(id);
            let p = &mut packs[n];
            if first && referenced.contains(&id) {
                found += 1;
                p.used_blobs += 1;
                p.used_bytes += loc.length;
                used.push((id, loc));
            } else {
                p.unused_blobs += 1;
                p.unused_bytes += loc.length;
            }
        })?;
        for p in &mut packs {
            let recent = Duration::from_secs(p.age_seconds) < grace;
            p.action = if p.unused_blobs == 0 {
                Action::Keep
            } else if recent {
                Action::KeepRecent
            } else if p.used_blobs == 0 {
                Action::Delete
            } else if p.unused_bytes as f64 > max_unused * p.size as f64 {
                Action::Repack
            } else {
                Action::Keep
            };
        }
        let repack: HashSet<PackId> = packs
            .iter()
            .filter(|p| p.action == Action::Repack)
            .map(|p| p.pack)
            .collect();
        let mut copies: Vec<(ObjectId, Location)> = used
            .into_iter()
            .filter(|(_, loc)| repack.contains(&loc.pack))
            .collect();
        copies.sort_by_key(|(_, loc)| (loc.pack, loc.offset));
        Ok(PrunePlan {
            packs,
            copies,
            missing: (referenced.len() as u64).saturating_sub(found),
        })
    }

    /// Packs with this action.
    pub fn with(&self, action: Action) -> impl Iterator<Item = &PackUse> {
        self.packs.iter().filter(move |p| p.action == action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::index::PackInfo;
    use crate::repo::pack::BlobEntry;

    fn blob(id: u8, offset: u64, length: u64) -> BlobEntry {
        BlobEntry {
            id: ObjectId::from_bytes([id; 32]),
            offset,
            length,
            size: length,
        }
    }

    fn pack(n: u8, size: u64) -> PackInfo {
        PackInfo {
            id: PackId::from_bytes([n; 32]),
            size,
        }
    }

    #[test]
    fn packs_are_kept_deleted_or_repacked_by_use_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::from_packs(
            dir.path(),
            &[
                // 1: all used; 2: nothing used; 3: 1 of 4 used (repack);
                // 4: nothing used but recent; 5: 95 of 100 bytes used.
                (pack(1, 100), vec![blob(10, 0, 50), blob(11, 50, 50)]),
                (pack(2, 100), vec![blob(20, 0, 100)]),
                (
                    pack(3, 100),
                    vec![
                        blob(30, 0, 25),
                        blob(31, 25, 25),
                        blob(32, 50, 25),
                        blob(33, 75, 25),
                    ],
                ),
                (pack(4, 100), vec![blob(40, 0, 100)]),
                (pack(5, 100), vec![blob(50, 0, 95), blob(51, 95, 5)]),
            ],
        )
        .unwrap();
        let referenced: HashSet<ObjectId> = [10, 11, 31, 50, 99]
            .iter()
            .map(|&i| ObjectId::from_bytes([i; 32]))
            .collect();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let modified: HashMap<PackId, SystemTime> = (1..=5)
            .map(|n| {
                (
                    PackId::from_bytes([n; 32]),
                    if n == 4 { now } else { now - 2 * day },
                )
            })
            .collect();
        let plan = PrunePlan::make(&index, &referenced, &modified, now, day, 0.10).unwrap();
        let action = |n: u8| {
            plan.packs
                .iter()
                .find(|p| p.pack == PackId::from_bytes([n; 32]))
                .unwrap()
                .action
        };
        assert_eq!(action(1), Action::Keep);
        assert_eq!(action(2), Action::Delete);
        assert_eq!(action(3), Action::Repack);
        assert_eq!(action(4), Action::KeepRecent);
        assert_eq!(action(5), Action::Keep, "5 % unused is under 10 %");
        assert_eq!(plan.copies.len(), 1);
        assert_eq!(plan.copies[0].0, ObjectId::from_bytes([31; 32]));
        assert_eq!(plan.copies[0].1.offset, 25);
        assert_eq!(plan.missing, 1, "id 99 is in no pack");
        // A grace of zero takes pack 4 too.
        let plan =
            PrunePlan::make(&index, &referenced, &modified, now, Duration::ZERO, 0.10).unwrap();
        assert_eq!(plan.with(Action::Delete).count(), 2);
    }

    #[test]
    fn a_blob_in_two_packs_is_used_once() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::from_packs(
            dir.path(),
            &[
                (pack(1, 10), vec![blob(7, 0, 10)]),
                (pack(2, 10), vec![blob(7, 0, 10)]),
            ],
        )
        .unwrap();
        let referenced: HashSet<ObjectId> = [ObjectId::from_bytes([7; 32])].into();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let plan = PrunePlan::make(
            &index,
            &referenced,
            &HashMap::new(),
            now,
            Duration::ZERO,
            0.1,
        )
        .unwrap();
        let used: u64 = plan.packs.iter().map(|p| p.used_blobs).sum();
        assert_eq!(used, 1);
        assert_eq!(
            plan.with(Action::Delete).count(),
            1,
            "the duplicate's pack goes"
        );
    }
}
