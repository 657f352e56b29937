//! Keeping a repository for years: `bk-index forget` (remove snapshots by a
//! retention policy), `bk-index prune` (delete or repack the packs of
//! objects no snapshot references, see [`crate::repo::prune`]) and
//! `bk-index unlock` (remove stale locks).
//!
//! Why prune never deletes an object a backup needs:
//!
//! 1. **Locks.** Prune holds the exclusive lock from before it lists the
//!    snapshots until its last deletion; `bk-seal` and `bk-index write`
//!    hold shared locks for their whole run, and `bk-index write` takes
//!    its lock before it reads its input. So in `bk-seal | bk-index write`
//!    a prune can run either wholly before the pipeline (then bk-seal sees
//!    what is missing and stores it again) or wholly after it (then the new
//!    snapshot is among those prune reads), never in between.
//! 2. **Grace period.** Records sealed in one run and written into a
//!    snapshot in another (`bk-seal > file`, later `bk-index write < file`)
//!    are not covered by one lock. Prune never touches a pack modified
//!    less than `--grace` ago (24 hours by default), and `bk-seal` sets
//!    the modification time of every pack holding an object it reuses to
//!    now when it is older than [`crate::repo::objects::REUSE_TOUCH_AFTER`] (12 h).
//!    So every object such a file names stays for at least 12 hours after
//!    bk-seal ended.
//! 3. **Complete reference set.** Prune reads every snapshot before it
//!    deletes anything; a snapshot it cannot decrypt or parse stops it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufReader, Write};
use std::time::{Duration, SystemTime};

use crate::cli::{IndexForgetArgs, IndexPruneArgs, IndexUnlockArgs};
use crate::crypto::{Decryptor, SecretKeys};
use crate::error::{Error, Result};
use crate::local::summaries::summary_path;
use crate::record::{self, RecordReader};
use crate::repo::authkey::{AuthKeys, LockKey};
use crate::repo::blobs::Blobs;
use crate::repo::id::{ObjectId, PackId};
use crate::repo::idkey;
use crate::repo::index::Location;
use crate::repo::lock::{LockKind, RepoLock};
use crate::repo::packer::{Packer, DEFAULT_PACK_SIZE};
use crate::repo::prune::{Action, PrunePlan};
use crate::repo::retention::Policy;
use crate::repo::snapshot_name::SnapshotName;
use crate::repo::snapshots::{decrypt_snapshot, read_root};
use crate::repo::trust::{NameCheck, Trust};
use crate::repo::Repo;
use crate::storage;

/// One snapshot as forget sees it.
struct Snap {
    name: String,
    time: Option<i64>,
    host: String,
    roots: Option<Vec<String>>,
    reasons: Vec<String>,
    /// Why forget leaves it alone without counting it, if it does.
    excluded: Option<String>,
}

/// `bk-index forget`.
pub fn forget(args: IndexForgetArgs) -> Result<i32> {
    let policy = Policy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args.keep_within,
    };
    if policy.is_empty() {
        return Err(Error::usage(
            "bk-index forget: no keep option given (--keep-last, --keep-hourly, --keep-daily, \
             --keep-weekly, --keep-monthly, --keep-yearly or --keep-within); refusing to remove \
             every snapshot",
        ));
    }
    let repo = args.repo.open()?;
    let secret = args.secret.load()?;
    let trust = Trust::establish(&repo, secret.as_ref(), &args.trust.options())?;
    if trust.keys().is_none() && secret.is_none() && !trust.allows_unauthenticated() {
        return Err(Error::repo(format!(
            "bk-index forget: cannot tell your snapshots from forged ones ({}), and a forged snapshot counted as kept could push yours out: forgetting nothing",
            trust.basis()
        ))
        .hint("run this on a backing-up host, give --key SECRET (after `bk-index certify` once), or --allow-unauthenticated"));
    }
    let lock_key = forget_lock_key(&repo, &trust);
    let _lock = exclusive_lock(
        &repo,
        args.dry_run,
        "bk-index forget",
        args.wait.wait,
        &lock_key,
    )?;
    // Roots are readable with the id key's passphrase (a backing-up host)
    // or the secret key.
    let dec = match (trust.keys(), &secret) {
        (Some(k), _) => Some(Decryptor::Passphrase(k.root_passphrase())),
        (None, Some(s)) => Some(Decryptor::Secret(s)),
        (None, None) => None,
    };
    if dec.is_none() {
        crate::say!(
            "bk-index forget: no id key and no --key: snapshots cannot be grouped by host and roots, so all count as one group"
        );
    }
    let mut snaps = Vec::new();
    for name in crate::repo::snapshot_name::oldest_first(repo.snapshots()?) {
        let parsed = SnapshotName::parse(&name);
        let mut excluded = match trust.check_name(&name) {
            NameCheck::NotAuthentic(why) if !trust.allows_unauthenticated() => Some(why.to_owned()),
            _ => None,
        };
        let header = match (&dec, &excluded) {
            (Some(dec), None) => match read_root(&repo, dec, &name, &trust) {
                Ok(root) => Some(root.header),
                Err(e) if e.kind() == crate::error::Kind::Repo => {
                    excluded = Some(e.to_string());
                    None
                }
                Err(e) => return Err(e),
            },
            _ => None,
        };
        let host = header.as_ref().map_or_else(String::new, |h| h.host.clone());
        if args.host.as_ref().is_some_and(|h| *h != host) {
            continue;
        }
        if let Some(why) = &excluded {
            crate::say!("bk-index forget: leaving snapshot {name} alone, neither counted nor removed: {why}");
        }
        snaps.push(Snap {
            time: parsed.map(|p| p.micros()),
            name,
            host,
            roots: header.map(|h| h.roots),
            reasons: Vec::new(),
            excluded: excluded
                .map(|_| "not authenticated (never removed, never counted)".to_owned()),
        });
    }
    // Group by host and roots, then apply the policy to each group.
    let mut groups: BTreeMap<(String, Option<Vec<String>>), Vec<usize>> = BTreeMap::new();
    for (i, s) in snaps.iter_mut().enumerate() {
        if let Some(why) = s.excluded.take() {
            s.reasons.push(why);
            continue;
        }
        if s.time.is_none() {
            s.reasons.push("unrecognised name (never removed)".into());
            continue;
        }
        groups
            .entry((s.host.clone(), s.roots.clone()))
            .or_default()
            .push(i);
    }
    for ((host, roots), members) in &groups {
        let times: Vec<i64> = members
            .iter()
            .map(|&i| snaps[i].time.unwrap_or(0))
            .collect();
        let reasons = policy.apply(&times);
        let keep = reasons.iter().filter(|r| !r.is_empty()).count();
        for (&i, r) in members.iter().zip(reasons) {
            snaps[i].reasons = r;
        }
        crate::say!(
            "bk-index forget: host {host}{}: {} snapshots, keeping {keep}, {} {}",
            roots
                .as_ref()
                .map_or_else(String::new, |r| format!(", roots {}", r.join(" "))),
            members.len(),
            if args.dry_run {
                "would remove"
            } else {
                "removing"
            },
            members.len() - keep
        );
    }
    let mut out = io::stdout().lock();
    let (mut kept, mut removed) = (0u64, 0u64);
    for s in &snaps {
        let keep = !s.reasons.is_empty();
        let action = match (keep, args.dry_run) {
            (true, _) => "keep",
            (false, true) => "would remove",
            (false, false) => "remove",
        };
        let line = if args.json {
            serde_json::json!({
                "name": s.name,
                "host": s.host,
                "time": s.time.map(micros_rfc3339),
                "roots": s.roots,
                "action": action,
                "reasons": s.reasons,
            })
            .to_string()
        } else if keep {
            format!("keep:   {}  ({})", s.name, s.reasons.join(", "))
        } else {
            format!("{action}: {}", s.name)
        };
        writeln!(out, "{line}").map_err(record::stdout_error)?;
        if keep {
            kept += 1;
            continue;
        }
        removed += 1;
        if !args.dry_run {
            let key = repo.snapshot_key(&s.name);
            repo.store()
                .delete(&key)
                .map_err(|e| repo.error(&key, &e).context("removing snapshot"))?;
            let _ = fs::remove_file(summary_path(&repo, &s.name));
        }
    }
    out.flush().map_err(record::stdout_error)?;
    crate::say!(
        "bk-index forget: {kept} snapshots kept, {removed} {}",
        if args.dry_run {
            "would be removed (dry run: nothing removed)"
        } else if removed > 0 {
            "removed; run `bk-index prune` to delete the objects only they used"
        } else {
            "removed"
        }
    );
    Ok(0)
}

fn micros_rfc3339(us: i64) -> String {
    let t = if us >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    };
    humantime::format_rfc3339_micros(t).to_string()
}

/// What prune found and did.
#[derive(Debug, Default, serde::Serialize)]
struct PruneReport {
    snapshots: u64,
    referenced: u64,
    packs: u64,
    packs_deleted: u64,
    packs_repacked: u64,
    packs_written: u64,
    blobs_copied: u64,
    bytes_freed: u64,
    packs_kept: u64,
    bytes_kept: u64,
    unused_bytes_kept: u64,
    packs_within_grace: u64,
    tmp_deleted: u64,
    tmp_bytes_freed: u64,
    missing_referenced: u64,
    dry_run: bool,
    grace_seconds: u64,
    max_unused_percent: f64,
}

/// `bk-index prune`.
pub fn prune(args: IndexPruneArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    let repo = args.repo.open()?;
    let key = args.secret.require("bk-index prune")?;
    // The id key before the lock, which is sealed with a key derived from it.
    let id_key = crate::repo::certify::held_id_key(&repo, &key)?;
    let _lock = exclusive_lock(
        &repo,
        args.dry_run,
        "bk-index prune",
        args.wait.wait,
        &AuthKeys::derive(&id_key, repo.id()).lock_key(),
    )?;
    let (blobs, _) = Blobs::open(&repo, &id_key, &[])?;
    let mut report = PruneReport {
        dry_run: args.dry_run,
        grace_seconds: args.grace.as_secs(),
        max_unused_percent: args.max_unused,
        ..PruneReport::default()
    };
    // 1. Every blob any snapshot references (its pieces and its records'
    // objects); any failure stops here, before anything is deleted.
    let mut referenced: HashSet<ObjectId> = HashSet::new();
    for name in repo.snapshots()? {
        collect_references(&blobs, &key, &name, &mut referenced)
            .map_err(|e| e.context("bk-index prune stopped, nothing deleted"))?;
        report.snapshots += 1;
    }
    report.referenced = referenced.len() as u64;
    // 2. The plan.
    let now = SystemTime::now();
    let store = repo.store();
    let mut modified: HashMap<PackId, SystemTime> = HashMap::new();
    store
        .walk("packs", &mut |rel, stat| {
            if let (Some(id), Some(m)) = (PackId::from_key(rel), stat.modified) {
                modified.insert(id, m);
            }
        })
        .map_err(|e| repo.error("packs", &e))?;
    let plan = PrunePlan::make(
        blobs.index(),
        &referenced,
        &modified,
        now,
        args.grace,
        args.max_unused / 100.0,
    )
    .map_err(|e| Error::io(&crate::repo::index::cache_dir(repo.id()), e))?;
    drop(referenced);
    report.packs = plan.packs.len() as u64;
    report.missing_referenced = plan.missing;
    for p in &plan.packs {
        match p.action {
            Action::Delete => {
                report.packs_deleted += 1;
                report.bytes_freed += p.size;
            }
            // What a repack frees: all but the blobs copied (until the
            // copies are written and their size known).
            Action::Repack => {
                report.packs_repacked += 1;
                report.bytes_freed += p.size - p.used_bytes.min(p.size);
            }
            Action::Keep | Action::KeepRecent => {
                report.packs_kept += 1;
                report.bytes_kept += p.size;
                report.unused_bytes_kept += p.unused_bytes;
                if p.action == Action::KeepRecent {
                    report.packs_within_grace += 1;
                }
            }
        }
    }
    report.blobs_copied = plan.copies.len() as u64;
    if args.verbose_plan {
        let mut out = io::stdout().lock();
        for p in &plan.packs {
            serde_json::to_writer(&mut out, p)
                .map_err(io::Error::other)
                .and_then(|_| writeln!(out))
                .map_err(record::stdout_error)?;
        }
    }
    // 3. New packs for the blobs kept from repacked packs, durable before
    // any old pack is deleted.
    let mut new_packs = Vec::new();
    if !args.dry_run && !plan.copies.is_empty() {
        let copier = Packer::copier(&repo, blobs.pack_keys(), DEFAULT_PACK_SIZE);
        copy_blobs(&blobs, &copier, &plan.copies)?;
        new_packs = copier.finish()?;
        let copied: u64 = plan.copies.iter().map(|(_, l)| l.length).sum();
        let written: u64 = new_packs.iter().map(|w| w.stored).sum();
        report.bytes_freed = (report.bytes_freed + copied).saturating_sub(written);
    }
    report.packs_written = new_packs.len() as u64;
    // 4. Delete what the plan says (the inventory told first).
    let doomed: Vec<PackId> = if args.dry_run {
        Vec::new()
    } else {
        plan.with(Action::Delete)
            .chain(plan.with(Action::Repack))
            .map(|p| p.pack)
            .collect()
    };
    delete_packs(&repo, &doomed, "bk-index prune")?;
    // 5. Temporary files of interrupted writes.
    let leftovers = |dir: &str| store.leftovers(dir).map_err(|e| repo.error(dir, &e));
    let mut tmp_dirs = vec!["snapshots".to_owned()];
    for sub in store.list("packs").map_err(|e| repo.error("packs", &e))? {
        if sub.is_dir {
            tmp_dirs.push(storage::join("packs", &sub.name));
        }
    }
    for dir in &tmp_dirs {
        for tmp in leftovers(dir)? {
            if age(tmp.stat.modified, now) >= args.grace {
                report.tmp_deleted += 1;
                report.tmp_bytes_freed += tmp.stat.size;
                if !args.dry_run {
                    let key = storage::join(dir, &tmp.name);
                    store
                        .delete(&key)
                        .map_err(|e| repo.error(&key, &e).context("bk-index prune"))?;
                }
            }
        }
    }
    if !args.dry_run {
        let _ = Blobs::open(&repo, &id_key, &new_packs);
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    crate::say!(
        "bk-index prune: {} snapshots reference {} blobs in {} packs; {verb} {} packs with nothing used and repacked {} (copying {} blobs into {} new packs), freeing {} bytes, and {} temporary files ({} bytes); kept {} packs ({} bytes, {} of them unused), {} of them younger than the grace period {}; {:.1}s",
        report.snapshots,
        report.referenced,
        report.packs,
        report.packs_deleted,
        report.packs_repacked,
        report.blobs_copied,
        report.packs_written,
        report.bytes_freed,
        report.tmp_deleted,
        report.tmp_bytes_freed,
        report.packs_kept,
        report.bytes_kept,
        report.unused_bytes_kept,
        report.packs_within_grace,
        humantime::format_duration(args.grace),
        started.elapsed().as_secs_f64()
    );
    if report.missing_referenced > 0 {
        crate::say!(
            "bk-index prune: warning: {} referenced blobs are in no pack of the repository; run bk-verify",
            report.missing_referenced
        );
    }
    if args.json {
        let mut out = io::stdout().lock();
        serde_json::to_writer(&mut out, &report)
            .map_err(io::Error::other)
            .and_then(|_| writeln!(out))
            .and_then(|_| out.flush())
            .map_err(record::stdout_error)?;
    }
    Ok(0)
}

/// Copies the blobs of `copies` (grouped by pack, in offset order) into
/// `copier`: each old pack is read once, from its first copied blob to its
/// last, the blobs between skipped; nothing is decrypted but the pack
/// keystream.
fn copy_blobs(blobs: &Blobs, copier: &Packer, copies: &[(ObjectId, Location)]) -> Result<()> {
    for run in copies.chunk_by(|a, b| a.1.pack == b.1.pack) {
        blobs
            .read_run(run, |id, loc, message| {
                copier
                    .store_raw(*id, loc.size, message)
                    .map_err(|e| e.into_error().context("bk-index prune, copying a blob"))?;
                Ok(())
            })
            .map_err(|e| e.context("bk-index prune stopped, nothing deleted"))?;
    }
    Ok(())
}

/// Adds the ids of every blob a snapshot references (its pieces and its
/// records' objects) to `set`.
fn collect_references(
    blobs: &Blobs,
    key: &SecretKeys,
    name: &str,
    set: &mut HashSet<ObjectId>,
) -> Result<()> {
    // Every snapshot counts, trusted or not: prune keeps what any names.
    let trust = Trust::everything();
    let root = read_root(blobs.repo(), &Decryptor::Secret(key), name, &trust)?;
    for p in &root.pieces {
        set.insert(ObjectId::parse(&p.piece).map_err(|e| e.context(format!("snapshot {name}")))?);
    }
    let spool = decrypt_snapshot(blobs, key, name, &trust)?;
    for rec in RecordReader::new(BufReader::new(spool)) {
        let rec = rec.map_err(|e| Error::repo(format!("snapshot {name}: {e}")))?;
        for obj in rec.objects.iter().flatten() {
            let id = ObjectId::parse(&obj.id).map_err(|e| e.context(format!("snapshot {name}")))?;
            set.insert(id);
        }
    }
    Ok(())
}

/// Deletes `packs`, the inventory told first: a run killed among its
/// deletions then leaves packs the inventory calls removed, which the
/// next prune deletes again, never packs it lists that are gone, which
/// `bk-verify --inventory` would report as lost for good.
pub(crate) fn delete_packs(repo: &Repo, packs: &[PackId], program: &str) -> Result<()> {
    crate::repo::inventory::append_removed_packs(repo, packs)?;
    for pack in packs {
        let key = pack.key();
        repo.store()
            .delete(&key)
            .map_err(|e| repo.error(&key, &e).context(program))?;
    }
    Ok(())
}

/// The exclusive lock forget and prune hold while they delete, sealed
/// with `lock_key`; a dry run, which deletes nothing, takes none.
pub(crate) fn exclusive_lock(
    repo: &Repo,
    dry_run: bool,
    program: &str,
    wait: Duration,
    lock_key: &LockKey,
) -> Result<Option<RepoLock>> {
    if dry_run {
        return Ok(None);
    }
    RepoLock::acquire(
        repo.store_arc(),
        LockKind::Exclusive,
        program,
        wait,
        lock_key,
    )
    .map(Some)
}

/// The key forget's lock is sealed with: the one derived from the id key
/// it reads packs with (this machine's, or the repository's decrypted with
/// `--key`). Forget may run with neither (`--allow-unauthenticated`); its
/// lock is then sealed under a one-off key: it still conflicts by its name
/// and ages by its modification time, and nobody can read it.
fn forget_lock_key(repo: &Repo, trust: &Trust) -> LockKey {
    match trust.read_key(repo) {
        Ok(id_key) => AuthKeys::derive(id_key, repo.id()).lock_key(),
        Err(_) => LockKey::ephemeral(),
    }
}

/// How long ago a key was last modified (zero if in the future or
/// unknown).
fn age(modified: Option<SystemTime>, now: SystemTime) -> Duration {
    modified
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or_default()
}

/// The key unlock reads lock files with: derived from this machine's id
/// key, if it has one that belongs to the repository. Unlock needs none
/// (without it, locks are judged by their modification times), so a
/// missing, unreadable or foreign key file is only noted.
fn unlock_key(repo: &Repo, explicit: Option<&std::path::Path>) -> Option<LockKey> {
    let path = explicit.map_or_else(|| idkey::default_path(repo.id()), Into::into);
    let note = |why: String| {
        crate::say!(
            "bk-index unlock: {why}: the details of locks cannot be read, and a lock is stale only when its file has not been modified for 30 minutes"
        );
    };
    match idkey::load_local(&path) {
        Ok(Some(key)) if key.check_value() == repo.config().id_key_check => {
            Some(AuthKeys::derive(&key, repo.id()).lock_key())
        }
        Ok(Some(_)) => {
            note(format!(
                "id key file {} does not belong to repository {}",
                path.display(),
                repo.id()
            ));
            None
        }
        Ok(None) => {
            note(format!(
                "no id key for repository {} at {}",
                repo.id(),
                path.display()
            ));
            None
        }
        Err(e) => {
            note(e.to_string());
            None
        }
    }
}

/// `bk-index unlock`.
pub fn unlock(args: IndexUnlockArgs) -> Result<i32> {
    let repo = args.repo.open()?;
    let lock_key = unlock_key(&repo, args.id_key.as_deref());
    let (removed, kept) = crate::repo::lock::unlock(repo.store(), args.all, lock_key.as_ref())?;
    let mut out = io::stdout().lock();
    for lock in &removed {
        let why = lock.stale.as_deref().map_or_else(
            || "live, removed with --all".to_owned(),
            |w| format!("stale: {w}"),
        );
        writeln!(out, "removed {}: {} ({why})", lock.shown, lock.describe())
            .map_err(record::stdout_error)?;
    }
    out.flush().map_err(record::stdout_error)?;
    for lock in &kept {
        crate::say!(
            "bk-index unlock: kept live lock {}: {} (remove it with --all only if that program is not running)",
            lock.shown,
            lock.describe()
        );
    }
    crate::say!(
        "bk-index unlock: removed {} locks, {} live locks kept",
        removed.len(),
        kept.len()
    );
    Ok(0)
}
