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
    #[serde(serialize_with = "ser_display")]
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

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
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
