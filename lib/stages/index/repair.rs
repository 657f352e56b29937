//! `bk-index repair`: salvages packs whose blobs are damaged in place.
//!
//! A blob is found by id, so while a damaged copy stays in the index every
//! backup deduplicates against it and the content is never stored again.
//! Repair decrypts every blob of the packs it is given and checks each
//! against its id, and reads each pack's header again; a pack with damaged
//! blobs, or whose header no longer verifies, has its sound blobs copied
//! (as ciphertext, under a new pack keystream) into new packs, made
//! durable, and is then deleted. The damaged blobs are then simply
//! missing: the next backup of the same files stores them again, under the
//! same ids, and every older snapshot that names them is whole again.
//!
//! Nothing sound is dropped for a fault that is not damage:
//! - a blob is judged only after its bytes were read in full: a read that
//!   fails (a storage or network error) stops repair before anything is
//!   deleted;
//! - a blob the key cannot open is damaged only if one of its PKESK
//!   packets names that key; one encrypted to other keys only stops repair;
//! - every blob is read and checked twice, and one that checks otherwise
//!   the second time (storage that returns unstable bytes) stops repair.

use std::collections::HashMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::cli::IndexRepairArgs;
use crate::crypto::SecretKeys;
use crate::error::{Error, Kind, Result};
use crate::record;
use crate::repo::authkey::AuthKeys;
use crate::repo::blobs::Blobs;
use crate::repo::id::{ObjectId, PackId};
use crate::repo::index::Location;
use crate::repo::pack::{self, HeaderError};
use crate::repo::packer::{Packer, DEFAULT_PACK_SIZE};
use crate::stages::index::lifecycle::{delete_packs, exclusive_lock};

const PROGRAM: &str = "bk-index repair";

/// What repair does with one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Action {
    /// Every blob and the header are sound: left as it is.
    Keep,
    /// Its sound blobs are copied into new packs, then it is deleted.
    Rewrite,
    /// No blob in it is sound: deleted.
    Delete,
    /// Not in the repository any more (repaired or pruned before).
    Gone,
}

/// One damaged blob.
#[derive(Debug, Serialize)]
struct Damaged {
    #[serde(serialize_with = "crate::repo::id::as_text")]
    blob: ObjectId,
    detail: String,
}

/// What repair found in one pack, printed as a JSON line on stdout.
#[derive(Debug, Serialize)]
struct PackReport {
    pack: String,
    blobs: u64,
    sound: u64,
    damaged: Vec<Damaged>,
    /// What is wrong with its header, if it no longer verifies.
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<String>,
    action: Action,
    dry_run: bool,
}

/// A pack's blobs as the local index lists them, in offset order, and its
/// stored size.
struct Listed {
    pack: PackId,
    size: u64,
    blobs: Vec<(ObjectId, Location)>,
}

/// What one read of a blob says of it.
enum Verdict {
    Sound,
    Damaged(Error),
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
    let (listed, gone) = list_blobs(&blobs, &packs)?;
    let gone: Vec<PackReport> = gone
        .iter()
        .map(|pack| {
            crate::say!(
                "{PROGRAM}: pack {pack} is not in the repository any more (repaired or pruned before): nothing to do"
            );
            PackReport {
                pack: pack.to_string(),
                blobs: 0,
                sound: 0,
                damaged: Vec::new(),
                header: None,
                action: Action::Gone,
                dry_run: args.dry_run,
            }
        })
        .collect();

    // 1. Check every header and blob; nothing is written yet.
    let mut checked = Vec::with_capacity(listed.len());
    for l in &listed {
        let header = check_header(&blobs, l)?;
        if let Some(why) = &header {
            crate::say!("{PROGRAM}: pack {}: {why}", l.pack);
        }
        let mut damaged = Vec::new();
        read_blobs(&blobs, l, |id, loc, message| {
            if let Verdict::Damaged(e) = judge(&blobs, &key, id, loc, &message)? {
                crate::say!("{PROGRAM}: {e}");
                damaged.push(Damaged {
                    blob: *id,
                    detail: e.to_string(),
                });
            }
            Ok(())
        })?;
        let sound = (l.blobs.len() - damaged.len()) as u64;
        let action = if damaged.is_empty() && header.is_none() {
            Action::Keep
        } else if sound == 0 {
            Action::Delete
        } else {
            Action::Rewrite
        };
        checked.push(PackReport {
            pack: l.pack.to_string(),
            blobs: l.blobs.len() as u64,
            sound,
            damaged,
            header,
            action,
            dry_run: args.dry_run,
        });
    }

    // 2. Read every pack to change again: each blob must check as it did
    // (the bytes copied are the bytes checked); the sound ones are copied
    // into packs made durable before any pack is deleted.
    let mut written = Vec::new();
    let mut copied = 0u64;
    let changing = |r: &PackReport| matches!(r.action, Action::Rewrite | Action::Delete);
    if !args.dry_run && checked.iter().any(changing) {
        let copier = Packer::copier(&repo, blobs.pack_keys(), DEFAULT_PACK_SIZE);
        for (l, r) in listed.iter().zip(&checked) {
            if !changing(r) {
                continue;
            }
            read_blobs(&blobs, l, |id, loc, message| {
                let was_sound = !r.damaged.iter().any(|d| d.blob == *id);
                let sound = matches!(judge(&blobs, &key, id, loc, &message)?, Verdict::Sound);
                if sound != was_sound {
                    return Err(Error::repo(format!(
                        "blob {id} (pack {}) checked {} the first time and {} the second: the storage returns unstable bytes ({PROGRAM} stopped, nothing deleted)",
                        l.pack,
                        if was_sound { "sound" } else { "damaged" },
                        if sound { "sound" } else { "damaged" },
                    ))
                    .hint("run bk-index repair again later, or check the storage"));
                }
                if sound {
                    copier.store_raw(*id, loc.size, message).map_err(|e| {
                        e.into_error().context(format!("{PROGRAM}, copying a blob"))
                    })?;
                    copied += 1;
                }
                Ok(())
            })?;
        }
        written = copier.finish()?;
    }

    // 3. Delete the damaged packs.
    let doomed: Vec<PackId> = if args.dry_run {
        Vec::new()
    } else {
        listed
            .iter()
            .zip(&checked)
            .filter(|(_, r)| changing(r))
            .map(|(l, _)| l.pack)
            .collect()
    };
    delete_packs(&repo, &doomed, PROGRAM)?;
    if !doomed.is_empty() {
        // The local index learns of the change now; if this fails, the
        // next program to open it does.
        let _ = Blobs::open(&repo, &id_key, &written);
    }

    let mut out = io::stdout().lock();
    for r in gone.iter().chain(&checked) {
        serde_json::to_writer(&mut out, r)
            .map_err(io::Error::other)
            .and_then(|_| writeln!(out))
            .map_err(record::stdout_error)?;
    }
    out.flush().map_err(record::stdout_error)?;
    let damaged: usize = checked.iter().map(|r| r.damaged.len()).sum();
    let blob_count: u64 = checked.iter().map(|r| r.blobs).sum();
    let to_change = checked.iter().filter(|r| changing(r)).count();
    if to_change == 0 {
        crate::say!(
            "{PROGRAM}: {blob_count} blobs in {} packs checked, none damaged: nothing to do",
            listed.len()
        );
    } else if args.dry_run {
        crate::say!(
            "{PROGRAM}: {blob_count} blobs in {} packs checked, {damaged} damaged; would delete {to_change} packs, copying their sound blobs into new packs first (dry run: nothing changed)",
            listed.len()
        );
    } else {
        crate::say!(
            "{PROGRAM}: {blob_count} blobs in {} packs checked; dropped {damaged} damaged blobs, copied {copied} sound ones into {} new packs, deleted {} packs. Back up the same files again to store the dropped blobs again (every snapshot that names them is then whole), then run `bk-verify --read-data`",
            listed.len(),
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

/// The blobs the local index lists in each pack, and the packs that are
/// gone from the repository. A pack that is stored but of which the index
/// lists nothing stops repair before anything is read.
fn list_blobs(blobs: &Blobs, packs: &[PackId]) -> Result<(Vec<Listed>, Vec<PackId>)> {
    let sizes: HashMap<PackId, u64> = blobs
        .index()
        .packs()
        .iter()
        .map(|p| (p.id, p.size))
        .collect();
    let mut listed = Vec::new();
    let mut gone = Vec::new();
    let mut at: HashMap<PackId, usize> = HashMap::new();
    for &pack in packs {
        if let Some(&size) = sizes.get(&pack) {
            at.insert(pack, listed.len());
            listed.push(Listed {
                pack,
                size,
                blobs: Vec::new(),
            });
            continue;
        }
        let repo = blobs.repo();
        let key = pack.key();
        match repo.store().stat(&key) {
            Ok(None) => gone.push(pack),
            Ok(Some(_)) => {
                return Err(Error::repo(format!(
                    "pack {pack} is stored, but this host's index of the repository lists no blob in it (its header cannot be read, or it is not a pack of this repository): nothing repaired"
                ))
                .hint("`bk-verify --inventory` tells whether it is whole; a pack whose header is damaged holds nothing any host can find"))
            }
            Err(e) => return Err(repo.error(&key, &e).context(PROGRAM)),
        }
    }
    blobs
        .index()
        .for_each(&mut |id, loc| {
            if let Some(&n) = at.get(&loc.pack) {
                listed[n].blobs.push((id, loc));
            }
        })
        .map_err(|e| Error::io(&crate::repo::index::cache_dir(blobs.repo().id()), e))?;
    for l in &mut listed {
        l.blobs.sort_by_key(|(_, loc)| loc.offset);
        // Every blob is checked: one that starts inside the one before it
        // (which reading would skip) stops repair here.
        if let Some(w) = l
            .blobs
            .windows(2)
            .find(|w| w[1].1.offset < w[0].1.offset + w[0].1.length)
        {
            return Err(Error::repo(format!(
                "pack {}: blob {} overlaps the blob before it in the index ({PROGRAM} stopped, nothing deleted)",
                l.pack, w[1].0
            )));
        }
    }
    Ok((listed, gone))
}

/// Reads the header of a listed pack again: `None` if it verifies, what is
/// wrong with it if it does not. A read that fails stops repair.
fn check_header(blobs: &Blobs, l: &Listed) -> Result<Option<String>> {
    let repo = blobs.repo();
    match pack::read_header(repo.store(), &l.pack, l.size, blobs.pack_keys()) {
        Ok(_) => Ok(None),
        Err(HeaderError::Invalid(why)) => Ok(Some(format!("its header does not verify: {why}"))),
        Err(HeaderError::Io(e)) => Err(repo
            .error(&l.pack.key(), &e)
            .context(format!("{PROGRAM} stopped, nothing deleted"))),
    }
}

/// Reads each blob of `l` in full ([`Blobs::read_run`]) and hands it to
/// `f`. A read that fails stops repair, naming the pack: it says nothing
/// of the blob's soundness.
fn read_blobs(
    blobs: &Blobs,
    l: &Listed,
    f: impl FnMut(&ObjectId, &Location, Vec<u8>) -> Result<()>,
) -> Result<()> {
    blobs
        .read_run(&l.blobs, f)
        .map_err(|e| e.context(format!("{PROGRAM} stopped, nothing deleted")))
}

/// What one blob, read in full, is: sound (it decrypts and is the content
/// its id names) or damaged. A key error on a blob none of whose PKESK
/// packets names the key is no damage: it stops repair.
fn judge(
    blobs: &Blobs,
    key: &SecretKeys,
    id: &ObjectId,
    loc: &Location,
    message: &[u8],
) -> Result<Verdict> {
    match blobs.decrypt_from(message, id, loc, key, &mut io::sink(), "(check)") {
        Ok(_) => Ok(Verdict::Sound),
        Err(e) if e.kind() == Kind::Key && !key.is_recipient_of(message) => Err(e
            .context(format!("{PROGRAM} stopped, nothing deleted"))
            .hint("give --key a secret key every blob of the pack is encrypted to (bk-seal's -r)")),
        Err(e) => Ok(Verdict::Damaged(e)),
    }
}
