//! `bk-verify --inventory`: every pack file re-hashed against the
//! inventory on the stage workers, without any key (see
//! [`crate::repo::inventory`] for what the inventory holds and why).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{exit, Error, Result};
use crate::record;
use crate::repo::id::PackId;
use crate::repo::inventory::{self, Problem, ProblemKind};
use crate::repo::Repo;
use crate::stream::pipeline::{self, Job};

/// One pack file to re-hash.
struct PackFile<'a> {
    id: &'a PackId,
    size: u64,
}

impl Job for PackFile<'_> {
    fn bytes(&self) -> u64 {
        self.size
    }
}

/// Every pack at hand at once (they come from a listing), so that
/// batches fill up.
struct Listed<I>(I);

impl<'a, I: Iterator<Item = &'a (PackId, u64)>> Iterator for Listed<I> {
    type Item = Result<PackFile<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .next()
            .map(|(id, size)| Ok(PackFile { id, size: *size }))
    }
}

impl<'a, I: Iterator<Item = &'a (PackId, u64)>> pipeline::Source<PackFile<'a>> for Listed<I> {
    fn next_ready(&self) -> bool {
        true
    }
}

/// Re-hashes every pack file against the inventory, with `jobs`
/// workers. Problems (`missing`, `size`, `bitrot`) are printed as records
/// and make the exit status 1; a pack file that cannot be opened
/// (`unreadable`: not a regular file, say a FIFO) is a repository problem,
/// exit 5, once every pack is checked; packs the inventory does not know
/// (`uninventoried`) are printed as warnings only.
pub fn run(repo: &Repo, jobs: usize) -> Result<i32> {
    let Some(inventory) = inventory::load(repo)? else {
        return Err(Error::repo(format!(
            "{}: no pack inventory (inventory/): nothing was stored yet, or the inventory \
             was removed, so there is nothing to check packs against",
            repo.location()
        ))
        .hint("new packs are inventoried from the next bk-seal on"));
    };
    let files = inventory::pack_files(repo)?;
    let mut out = record::stdout_records();
    let (mut faults, mut warnings, mut unreadable) = (0u64, 0u64, 0u64);
    let mut report = |r: &Problem| -> Result<()> {
        match r.problem {
            ProblemKind::Uninventoried => warnings += 1,
            _ => faults += 1,
        }
        if r.problem == ProblemKind::Unreadable {
            unreadable += 1;
            crate::say!("bk-verify: {}", r.detail);
        }
        let value =
            serde_json::to_value(r).map_err(|e| record::stdout_error(io::Error::other(e)))?;
        out.write_value(&value).map_err(record::stdout_error)
    };
    // Packs the inventory names and the listing does not, printed as they
    // are found rather than gathered: an inventory may name any number.
    for p in inventory::missing(&inventory, &files) {
        report(&p)?;
    }
    let bytes = AtomicU64::new(0);
    let mut found = Vec::new();
    pipeline::run(
        "bk-verify",
        jobs,
        pipeline::batch_for(repo.store().is_remote()),
        || Listed(files.iter()),
        |obj: PackFile<'_>| {
            Ok(inventory::check_pack(
                repo,
                obj.id,
                obj.size,
                inventory.get(obj.id),
                &bytes,
            ))
        },
        |p: &Problem| p.detail.len() + 128,
        |p| {
            found.extend(p);
            Ok(())
        },
    )?;
    found.sort_by(|a: &Problem, b: &Problem| a.pack.cmp(&b.pack));
    for r in &found {
        report(r)?;
    }
    out.flush().map_err(record::stdout_error)?;
    crate::say!(
        "bk-verify: inventory: {} packs in the inventory, {} pack files re-hashed ({} bytes): {faults} problems, {warnings} packs not in the inventory",
        inventory::live(&inventory),
        files.len(),
        bytes.load(Ordering::Relaxed)
    );
    Ok(if unreadable > 0 {
        exit::REPO
    } else if faults > 0 {
        exit::FAULTS
    } else {
        exit::OK
    })
}
