//! `bk-index repair`: salvages packs whose blobs are damaged in place.
//!
//! A blob is found by id, so while a damaged copy stays in the index every
//! backup deduplicates against it and the content is never stored again.
//! Repair decrypts every blob of the packs it is given and checks each
//! against its id; a pack with damaged blobs has its sound ones copied (as
//! ciphertext, under a new pack keystream) into new packs, made durable,
//! and is then deleted. The damaged blobs are then simply missing: the
//! next backup of the same files stores them again, under the same ids,
//! and every older snapshot that names them is whole again.
//!
//! A blob is called damaged only after its bytes were read in full: a read
//! that fails (a storage or network error) stops repair before anything is
//! deleted, so a passing fault never drops a sound blob.

use std::io::{self, Read, Write};

use serde::Serialize;

use crate::cli::IndexRepairArgs;
use crate::crypto::SecretKeys;
use crate::error::{Error, Result};
use crate::record;
use crate::repo::authkey::AuthKeys;
use crate::repo::blobs::Blobs;
use crate::repo::id::{ObjectId, PackId};
use crate::repo::index::Location;
use crate::repo::packer::{Packer, DEFAULT_PACK_SIZE};
use crate::stages::index::lifecycle::exclusive_lock;

const PROGRAM: &str = "bk-index repair";

/// What repair does with one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Action {
    /// Every blob is sound: left as it is.
    Keep,
    /// Its sound blobs are copied into new packs, then it is deleted.
    Rewrite,
    /// No blob in it is sound: deleted.
    Delete,
}

/// One damaged blob.
#[derive(Debug, Serialize)]
struct Damaged {
    blob: String,
    detail: String,
}

/// What repair found in one pack, printed as a JSON line on stdout.
#[derive(Debug, Serialize)]
struct PackReport {
    pack: String,
    blobs: u64,
    sound: u64,
    damaged: Vec<Damaged>,
    action: Action,
    dry_run: bool,
}

/// A pack's blobs as the local index lists them, in offset order.
struct Listed {
    pack: PackId,
    blobs: Vec<(ObjectId, Location)>,
}

/// `bk-index repair`.
pub fn repair(args: IndexRepairArgs) -> Result<i32> {
    let packs = parse_packs(&args.packs)?;
    let repo = args.repo.open()?;
    let key = args.secret.require(PROGRAM)?;
    let id_key = crate::repo::certify::held_id_key(&repo, &key)?;
    let _lock = exclusive_lock(
        &repo,
        args.dry_run,
        PROGRAM,
        args.wait.wait,
        &AuthKeys::derive(&id_key, repo.id()).lock_key(),
    )?;
    let (blobs, _) = Blobs::open(&repo, &id_key, &[])?;
    let listed = list_blobs(&blobs, &packs)?;

    // 1. Check every blob; nothing is written yet.
    let mut reports = Vec::new();
    let mut sound: Vec<Vec<bool>> = Vec::new();
    for l in &listed {
        let mut flags = Vec::with_capacity(l.blobs.len());
        let mut damaged = Vec::new();
        read_blobs(&blobs, l, |id, loc, message| {
            match check(&blobs, &key, id, loc, &message) {
                Ok(()) => flags.push(true),
                Err(e) => {
                    crate::say!("{PROGRAM}: {e}");
                    flags.push(false);
                    damaged.push(Damaged {
                        blob: id.to_string(),
                        detail: e.to_string(),
                    });
                }
            }
            Ok(())
        })?;
        let good = flags.iter().filter(|&&s| s).count() as u64;
        let action = if damaged.is_empty() {
            Action::Keep
        } else if good == 0 {
            Action::Delete
        } else {
            Action::Rewrite
        };
        reports.push(PackReport {
            pack: l.pack.to_string(),
            blobs: l.blobs.len() as u64,
            sound: good,
            damaged,
            action,
            dry_run: args.dry_run,
        });
        sound.push(flags);
    }

    // 2. Copy the sound blobs of packs to rewrite, checked again as they
    // are copied (the bytes copied are the bytes checked), into packs made
    // durable before any pack is deleted.
    let mut written = Vec::new();
    let mut copied = 0u64;
    if !args.dry_run && reports.iter().any(|r| r.action == Action::Rewrite) {
        let copier = Packer::copier(&repo, blobs.pack_keys(), DEFAULT_PACK_SIZE);
        for ((l, r), flags) in listed.iter().zip(&reports).zip(&sound) {
            if r.action != Action::Rewrite {
                continue;
            }
            let mut n = 0;
            read_blobs(&blobs, l, |id, loc, message| {
                let keep = flags[n];
                n += 1;
                if !keep {
                    return Ok(());
                }
                check(&blobs, &key, id, loc, &message).map_err(|e| {
                    e.context(format!(
                        "{PROGRAM} stopped, nothing deleted: the blob was sound when first read"
                    ))
                })?;
                copier
                    .store_raw(*id, loc.size, message)
                    .map_err(|e| e.into_error().context(format!("{PROGRAM}, copying a blob")))?;
                copied += 1;
                Ok(())
            })?;
        }
        written = copier.finish()?;
    }

    // 3. Delete the damaged packs, the inventory told first (as prune).
    let doomed: Vec<PackId> = if args.dry_run {
        Vec::new()
    } else {
        listed
            .iter()
            .zip(&reports)
            .filter(|(_, r)| r.action != Action::Keep)
            .map(|(l, _)| l.pack)
            .collect()
    };
    crate::repo::inventory::append_removed_packs(&repo, &doomed)?;
    for pack in &doomed {
        let key = pack.key();
        repo.store()
            .delete(&key)
            .map_err(|e| repo.error(&key, &e).context(PROGRAM))?;
    }
    if !doomed.is_empty() {
        // The local index learns of the change now; if this fails, the
        // next program to open it does.
        let _ = Blobs::open(&repo, &id_key, &written);
    }

    let mut out = io::stdout().lock();
    for r in &reports {
        serde_json::to_writer(&mut out, r)
            .map_err(io::Error::other)
            .and_then(|_| writeln!(out))
            .map_err(record::stdout_error)?;
    }
    out.flush().map_err(record::stdout_error)?;
    let damaged: usize = reports.iter().map(|r| r.damaged.len()).sum();
    let checked: u64 = reports.iter().map(|r| r.blobs).sum();
    if damaged == 0 {
        crate::say!(
            "{PROGRAM}: {checked} blobs in {} packs checked, none damaged: nothing to do",
            reports.len()
        );
    } else if args.dry_run {
        crate::say!(
            "{PROGRAM}: {checked} blobs in {} packs checked, {damaged} damaged; would delete {} packs, copying their sound blobs into new packs first (dry run: nothing changed)",
            reports.len(),
            reports.iter().filter(|r| r.action != Action::Keep).count()
        );
    } else {
        crate::say!(
            "{PROGRAM}: {checked} blobs in {} packs checked; dropped {damaged} damaged blobs, copied {copied} sound ones into {} new packs, deleted {} packs. Back up the same files again to store the dropped blobs again (every snapshot that names them is then whole), then run `bk-verify --read-data`",
            reports.len(),
            written.len(),
            doomed.len()
        );
    }
    Ok(0)
}

/// Pack ids as given: the id, or the pack's key in the repository
/// (`packs/ab/<id>`), as bk-verify and errors name them.
fn parse_packs(given: &[String]) -> Result<Vec<PackId>> {
    let mut packs = Vec::new();
    for text in given {
        let id = text
            .strip_prefix("packs/")
            .and_then(PackId::from_key)
            .map_or_else(|| PackId::parse(text), Ok)
            .map_err(|e| {
                Error::usage(e.to_string())
                    .hint("give pack ids as bk-verify names them (64 hex digits)")
            })?;
        if !packs.contains(&id) {
            packs.push(id);
        }
    }
    Ok(packs)
}

/// The blobs the local index lists in each pack; a pack it lists none in
/// stops repair before anything is read.
fn list_blobs(blobs: &Blobs, packs: &[PackId]) -> Result<Vec<Listed>> {
    let mut listed: Vec<Listed> = packs
        .iter()
        .map(|&pack| Listed {
            pack,
            blobs: Vec::new(),
        })
        .collect();
    blobs
        .index()
        .for_each(&mut |id, loc| {
            if let Some(l) = listed.iter_mut().find(|l| l.pack == loc.pack) {
                l.blobs.push((id, loc));
            }
        })
        .map_err(|e| Error::io(&crate::repo::index::cache_dir(blobs.repo().id()), e))?;
    for l in &mut listed {
        if l.blobs.is_empty() {
            return Err(Error::repo(format!(
                "pack {} holds no blob this repository's index knows of (it is not stored, not a pack of this repository, or its header cannot be read): nothing repaired",
                l.pack
            ))
            .hint("`bk-verify --inventory` tells which packs are stored and whole"));
        }
        l.blobs.sort_by_key(|(_, loc)| loc.offset);
    }
    Ok(listed)
}

/// Reads each blob of `l` in full (one ranged read for the pack, the pack
/// keystream removed) and hands it to `f`. A read that fails stops here,
/// naming the pack: it says nothing of the blob's soundness.
fn read_blobs(
    blobs: &Blobs,
    l: &Listed,
    mut f: impl FnMut(&ObjectId, &Location, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let Some(start) = l.blobs.first().map(|(_, loc)| loc.offset) else {
        return Ok(());
    };
    let end = l
        .blobs
        .iter()
        .map(|(_, loc)| loc.offset + loc.length)
        .max()
        .unwrap_or(start);
    let repo = blobs.repo();
    let key = l.pack.key();
    let stop = |why: String| {
        Error::repo(format!(
            "pack {}: {why} ({PROGRAM} stopped, nothing deleted)",
            repo.store().describe(&key)
        ))
    };
    let mut r = blobs.open_run(&l.pack, start, end - start, &|| format!("pack {}", l.pack))?;
    let mut at = start;
    for (id, loc) in &l.blobs {
        if loc.offset < at {
            return Err(stop(format!(
                "blob {id} overlaps the blob before it in the index"
            )));
        }
        io::copy(&mut (&mut r).take(loc.offset - at), &mut io::sink())
            .map_err(|e| stop(crate::error::io_cause(&e)))?;
        let mut message = Vec::with_capacity(loc.length.min(64 << 20) as usize);
        (&mut r)
            .take(loc.length)
            .read_to_end(&mut message)
            .map_err(|e| stop(crate::error::io_cause(&e)))?;
        if message.len() as u64 != loc.length {
            return Err(stop("shorter than its header says".into()));
        }
        at = loc.offset + loc.length;
        f(id, loc, message)?;
    }
    Ok(())
}

/// Whether one blob, read in full, decrypts and is the content its id
/// names.
fn check(
    blobs: &Blobs,
    key: &SecretKeys,
    id: &ObjectId,
    loc: &Location,
    message: &[u8],
) -> Result<()> {
    blobs
        .decrypt_from(message, id, loc, key, &mut io::sink(), "(check)")
        .map(|_| ())
}
