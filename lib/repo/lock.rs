//! Repository locks: plain files in `repo/locks/`, so they work wherever the
//! repository does (a local disk, an NFS or SMB share, a cloud-drive mount,
//! an S3 bucket, which is strongly consistent for listings after writes),
//! not only where `flock` does.
//!
//! Each holder writes one file, `<shared|exclusive>-<random hex>.lock`.
//! Backups (`bk-seal`, `bk-index write`) take **shared** locks, which
//! coexist; `bk-index forget` and `prune` take an **exclusive** one, which
//! coexists with nothing. The kind is in the name, so every contender sees
//! a conflict from a listing alone.
//!
//! The body is a [`LockInfo`] (`{kind, host, pid, program, time,
//! refreshed, …}` as JSON, padded to a multiple of 1 KiB), sealed with
//! AES-256-GCM under a key derived from the repository's id key (see
//! [`LockKey`]) and bound to the file name. Every lock holder has the id
//! key; the storage operator does not, so it learns only each lock's kind
//! and times (the name, and the file's creation and modification times),
//! not who holds it, and cannot make a lock that bk reads as its own.
//!
//! Acquiring: write our own file first, then list the others. If a live
//! conflicting lock is there, remove ours, sleep a little (with jitter) and
//! try again until `--wait` runs out. Because everyone writes before they
//! look, two contenders can never both miss each other: at worst both back
//! off and retry.
//!
//! A live holder rewrites its file (with a new `refreshed` time) every few
//! minutes from a background thread. A lock whose body opens is **stale**
//! when it has not been refreshed for [`STALE_AFTER`], or when its process
//! is certainly gone: the lock was written on this host name, in this boot
//! (`boot_id`) and in this PID namespace (`pid_ns`), and no process has its
//! pid, or the one that has it started at another time (the pid was
//! reused). Only then does a pid mean the same process here as where the
//! lock was taken; a lock from a container or `unshare -p` sharing the host
//! name, from another machine of the same name, or from a bk that did not
//! record these, goes stale by its refresh time alone.
//!
//! A lock whose body does not open (sealed under another key, damaged,
//! forged, or read without the id key, as `bk-index unlock` may) is still a
//! lock of the kind its name says: it conflicts like any other and goes
//! stale when its file has not been modified for [`STALE_AFTER`] (a refresh
//! rewrites the file, so its modification time is its last refresh).
//! Stale locks are ignored with a warning; `bk-index unlock` removes them.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::authkey::LockKey;
use crate::repo::repo_err;
use crate::storage::{self, Commit, Storage};

/// The directory of lock files.
const LOCKS: &str = "locks";

/// A lock of another host that has not been refreshed for this long is
/// stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// The most of a lock file that is read (bk writes 1,052 bytes).
const LOCK_LIMIT: u64 = 64 << 10;

/// A lock's JSON is padded with spaces to a multiple of this many bytes
/// before it is sealed, so that the file's size does not tell the length
/// of the host or program name.
const LOCK_PAD: usize = 1024;

/// Random bytes in a lock file's name (hex in the name): enough that no
/// two holders ever pick the same name.
const NAME_RANDOM_BYTES: usize = 16;

/// The ending of the lock files bk writes. Any file whose name starts
/// with `shared-` or `exclusive-` counts as a lock, whatever it ends with,
/// so that a lock of an earlier bk still holds.
const LOCK_SUFFIX: &str = ".lock";

/// How often a live holder refreshes its lock file.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// A conflicting lock younger than this may be a contender that is about to
/// back off, so a caller whose `--wait` ran out looks once more before
/// giving up.
const CONTENDER_WINDOW: Duration = Duration::from_secs(2);

/// Shared (backups) or exclusive (forget, prune).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Many shared holders may run at once.
    Shared,
    /// One exclusive holder and nobody else.
    Exclusive,
}

impl LockKind {
    /// `shared` or `exclusive`, as in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        }
    }

    fn conflicts_with(self, other: LockKind) -> bool {
        self == LockKind::Exclusive || other == LockKind::Exclusive
    }

    /// The kind a lock file's name says, if it is a lock file's name.
    fn of_name(name: &str) -> Option<LockKind> {
        if name.starts_with("exclusive-") {
            Some(LockKind::Exclusive)
        } else if name.starts_with("shared-") {
            Some(LockKind::Shared)
        } else {
            None
        }
    }
}

/// What a lock file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// Shared or exclusive.
    pub kind: LockKind,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder on its host.
    pub pid: u32,
    /// The holding program (`bk-seal`, `bk-index prune`, …).
    pub program: String,
    /// When the lock was taken (RFC 3339).
    pub time: String,
    /// When the holder last showed it is alive (RFC 3339).
    pub refreshed: String,
    /// Which run of the process `pid` holds it: the boot id and the
    /// process start time (Linux `/proc`), so that a live process that
    /// only reuses the pid of a dead holder does not keep its lock alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// The holder's boot (`/proc/sys/kernel/random/boot_id`): a host name
    /// may be shared by two machines, a boot id is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's PID namespace (`readlink /proc/self/ns/pid`, e.g.
    /// `pid:[4026531836]`): its pid means that process only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
}

/// Where this process runs, as far as pids are concerned: its boot and
/// PID namespace (`None` where `/proc` does not say), read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidScope {
    /// This boot's id.
    pub boot_id: Option<String>,
    /// This process's PID namespace.
    pub pid_ns: Option<String>,
}

impl PidScope {
    /// This process's boot id and PID namespace.
    pub fn ours() -> &'static PidScope {
        static OURS: std::sync::OnceLock<PidScope> = std::sync::OnceLock::new();
        OURS.get_or_init(|| PidScope {
            boot_id: boot_id(),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .and_then(|p| p.to_str().map(str::to_owned))
                .filter(|p| p.starts_with("pid:[")),
        })
    }

    /// Whether a lock's pid can be looked up here: it was written in this
    /// very boot and PID namespace (both known), and our `/proc` shows our
    /// own namespace's processes.
    fn covers(&self, info: &LockInfo) -> bool {
        let known_equal =
            |a: &Option<String>, b: &Option<String>| a.is_some() && a.as_deref() == b.as_deref();
        known_equal(&self.boot_id, &info.boot_id)
            && known_equal(&self.pid_ns, &info.pid_ns)
            && proc_is_ours()
    }
}

/// This boot's id, from `/proc`.
fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// Whether `/proc` is mounted for our own PID namespace (after
/// `unshare -p` without `--mount-proc` it shows the parent's processes,
/// whose numbers differ from ours).
fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
        == Some(std::process::id())
}

/// One lock file found in `locks/`.
#[derive(Debug, Clone)]
pub struct LockEntry {
    /// Its key (`locks/<name>`).
    pub key: String,
    /// Where it is, for messages.
    pub shown: String,
    /// Its kind, from its file name (what every contender sees).
    pub kind: LockKind,
    /// Its content, if its body opened with the id key's lock key.
    pub info: Option<LockInfo>,
    /// Whether it was read with a key (so a body that did not open was
    /// sealed under another one), for messages.
    pub key_held: bool,
    /// The file's modification time: when it was last written.
    pub modified: SystemTime,
    /// Why it is stale, if it is.
    pub stale: Option<String>,
    /// Age of the lock's `time` (or the file's mtime).
    pub age: Duration,
}

impl LockEntry {
    /// "bk-index prune on host H pid P since T" for messages, or as much
    /// as can be said of a lock whose body does not open.
    pub fn describe(&self) -> String {
        match &self.info {
            Some(i) => format!(
                "{} ({} lock) on host {} pid {} since {}",
                i.program,
                i.kind.as_str(),
                i.host,
                i.pid,
                i.time
            ),
            None => format!(
                "a lock of another holder (its details cannot be read {} this repository's id key), {} lock, last written {}",
                if self.key_held { "with" } else { "without" },
                self.kind.as_str(),
                rfc3339(self.modified)
            ),
        }
    }
}

/// A held lock; released (its file removed) when dropped.
#[derive(Debug)]
pub struct RepoLock {
    store: Arc<dyn Storage>,
    key: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
}

impl RepoLock {
    /// Takes a lock of `kind` on the repository in `store` for `program`,
    /// its file sealed with `lock_key` (see [`AuthKeys::lock_key`]),
    /// retrying until `wait` has passed. Stale locks are ignored with a
    /// warning on stderr. A lock still held by someone else when `wait`
    /// runs out is an error naming the holder (exit status 11).
    ///
    /// [`AuthKeys::lock_key`]: crate::repo::authkey::AuthKeys::lock_key
    pub fn acquire(
        store: Arc<dyn Storage>,
        kind: LockKind,
        program: &str,
        wait: Duration,
        lock_key: &LockKey,
    ) -> Result<RepoLock> {
        let started = std::time::Instant::now();
        let mut info = our_info(kind, program);
        let mut warned = BTreeSet::new();
        loop {
            let now = rfc3339(SystemTime::now());
            info.time.clone_from(&now);
            info.refreshed = now;
            let name = new_lock_name(kind);
            let key = storage::join(LOCKS, &name);
            write_lock_file(&*store, &name, &info, lock_key, Commit::KeepExisting)?;
            let others = list_locks(&*store, Some(lock_key))?;
            let mine = |o: &LockEntry| o.key == key;
            let conflict = first_conflict(&*store, kind, program, others, mine, &mut warned);
            let Some(holder) = conflict else {
                return Ok(RepoLock::start(store, key, name, info, lock_key.clone()));
            };
            let _ = store.delete(&key);
            let waited = started.elapsed();
            let young = holder.age < CONTENDER_WINDOW;
            if waited >= wait && !(young && waited < wait + CONTENDER_WINDOW * 2) {
                return Err(locked_error(&*store, &holder, wait));
            }
            back_off(kind, waited, wait);
        }
    }

    /// Starts the refresher thread for a lock just taken.
    fn start(
        store: Arc<dyn Storage>,
        key: String,
        name: String,
        info: LockInfo,
        lock_key: LockKey,
    ) -> RepoLock {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let refresher = {
            let stop = Arc::clone(&stop);
            let store = Arc::clone(&store);
            std::thread::Builder::new()
                .name("lock-refresh".into())
                .spawn(move || refresh_loop(&*store, &name, info, &lock_key, &stop))
                .ok()
        };
        RepoLock {
            store,
            key,
            stop,
            refresher,
        }
    }

    /// The lock file's key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        {
            let (flag, cv) = &*self.stop;
            *crate::sys::sync::lock(flag) = true;
            cv.notify_all();
        }
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let _ = self.store.delete(&self.key);
    }
}

/// What this process's lock of `kind` for `program` says (its times are
/// set when it is written).
fn our_info(kind: LockKind, program: &str) -> LockInfo {
    let pid = std::process::id();
    let scope = PidScope::ours();
    LockInfo {
        kind,
        host: crate::sys::host::this_host(),
        pid,
        program: program.to_owned(),
        time: String::new(),
        refreshed: String::new(),
        started: process_start(pid),
        boot_id: scope.boot_id.clone(),
        pid_ns: scope.pid_ns.clone(),
    }
}

/// The first live lock among `others` (our own, `mine`, left out) that
/// conflicts with a lock of `kind`. Stale ones are ignored, each with one
/// warning (`warned` remembers which were named already).
fn first_conflict(
    store: &dyn Storage,
    kind: LockKind,
    program: &str,
    others: Vec<LockEntry>,
    mine: impl Fn(&LockEntry) -> bool,
    warned: &mut BTreeSet<String>,
) -> Option<LockEntry> {
    for other in others.into_iter().filter(|o| !mine(o)) {
        if let Some(why) = &other.stale {
            if warned.insert(other.key.clone()) {
                crate::say!(
                    "{program}: ignoring stale lock {} ({}: {why}); `bk-index unlock --repo {}` removes it",
                    other.shown,
                    other.describe(),
                    store.location()
                );
            }
            continue;
        }
        if kind.conflicts_with(other.kind) {
            return Some(other);
        }
    }
    None
}

/// The error of a caller that gave up waiting for `holder` (exit 11).
fn locked_error(store: &dyn Storage, holder: &LockEntry, wait: Duration) -> Error {
    let waited = if wait.is_zero() {
        String::new()
    } else {
        format!(" (waited {})", humantime::format_duration(round_secs(wait)))
    };
    Error::locked(format!(
        "repository {} is locked by {}{waited}",
        store.location(),
        holder.describe(),
    ))
    .hint(if wait.is_zero() {
        "try again later, or give --wait DURATION"
    } else {
        "try again later"
    })
}

/// Sleeps a little before the next try. Exclusive contenders back off
/// longer, so that a waiting prune never keeps a starting backup out for
/// long.
fn back_off(kind: LockKind, waited: Duration, wait: Duration) {
    let (lo, hi) = match kind {
        LockKind::Shared => (50, 250),
        LockKind::Exclusive => (300, 1200),
    };
    let nap = Duration::from_millis(rand::thread_rng().gen_range(lo..hi));
    let left = (wait + CONTENDER_WINDOW * 2).saturating_sub(waited);
    std::thread::sleep(nap.min(left.max(Duration::from_millis(10))));
}

/// A new lock file name, `<kind>-<random hex>.lock`: it tells the kind,
/// which every contender must see without reading the body, and nothing
/// about the holder.
pub fn new_lock_name(kind: LockKind) -> String {
    let mut rnd = [0u8; NAME_RANDOM_BYTES];
    rand::thread_rng().fill_bytes(&mut rnd);
    format!("{}-{}{LOCK_SUFFIX}", kind.as_str(), hex::encode(rnd))
}

/// The bytes of the lock file `name` holding `info`: its JSON padded to a
/// multiple of [`LOCK_PAD`] and sealed under `lock_key`, bound to `name`.
/// Public so that tests can plant a lock as another bk process would.
pub fn seal_lock(lock_key: &LockKey, name: &str, info: &LockInfo) -> Vec<u8> {
    let mut json = serde_json::to_vec(info).unwrap_or_default();
    let padded = json.len().div_ceil(LOCK_PAD).max(1) * LOCK_PAD;
    json.resize(padded, b' ');
    lock_key.seal(name, &json)
}

/// What the lock file `name` of `kind` holds, if its body opens under
/// `lock_key` and says that kind; `None` otherwise (another key, damage,
/// forgery).
fn open_lock(lock_key: &LockKey, name: &str, kind: LockKind, bytes: &[u8]) -> Option<LockInfo> {
    let plain = lock_key.open(name, bytes)?;
    let info: LockInfo = serde_json::from_slice(&plain).ok()?;
    (info.kind == kind).then_some(info)
}

/// Rewrites the lock file `name` with a new `refreshed` time every
/// [`REFRESH_EVERY`] until told to stop.
fn refresh_loop(
    store: &dyn Storage,
    name: &str,
    mut info: LockInfo,
    lock_key: &LockKey,
    stop: &(Mutex<bool>, Condvar),
) {
    let (flag, cv) = stop;
    let mut stopped = crate::sys::sync::lock(flag);
    loop {
        // Checked before every wait: a stop signalled before this thread
        // first waited must not be missed.
        if *stopped {
            return;
        }
        let (guard, _) = cv
            .wait_timeout(stopped, REFRESH_EVERY)
            .unwrap_or_else(|p| p.into_inner());
        stopped = guard;
        if *stopped {
            return;
        }
        info.refreshed = rfc3339(SystemTime::now());
        if let Err(e) = write_lock_file(store, name, &info, lock_key, Commit::Replace) {
            crate::say!("{}: cannot refresh lock: {e}", info.program);
        }
    }
}

/// Writes the lock file `name` atomically (readers never see a
/// half-written lock) and durably. A new lock keeps an existing file of
/// the same (random) name; a refresh replaces it.
fn write_lock_file(
    store: &dyn Storage,
    name: &str,
    info: &LockInfo,
    lock_key: &LockKey,
    mode: Commit,
) -> Result<()> {
    let key = storage::join(LOCKS, name);
    let bytes = seal_lock(lock_key, name, info);
    let result = store.create(&key).and_then(|mut up| {
        up.write_all(&bytes)?;
        let finished = up.finish()?;
        store.commit(vec![finished], mode)
    });
    match result {
        Ok(created) if mode == Commit::KeepExisting && created.first() == Some(&false) => Err(
            repo_err(store, &key, &io::Error::from(io::ErrorKind::AlreadyExists)),
        ),
        Ok(_) => Ok(()),
        Err(e) => Err(repo_err(store, &key, &e)),
    }
}

/// One lock file as read, before its staleness is judged.
struct Found {
    key: String,
    shown: String,
    kind: LockKind,
    info: Option<LockInfo>,
    key_held: bool,
    modified: SystemTime,
}

/// Every lock file in the repository, each with its staleness judged.
/// Bodies are opened with `lock_key`; without one (`bk-index unlock` on a
/// machine without the id key), or where a body does not open, a lock is
/// judged by its file's modification time.
pub fn list_locks(store: &dyn Storage, lock_key: Option<&LockKey>) -> Result<Vec<LockEntry>> {
    let entries = store.list(LOCKS).map_err(|e| repo_err(store, LOCKS, &e))?;
    let host = crate::sys::host::this_host();
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.name;
        if entry.is_dir || name.starts_with('.') {
            continue;
        }
        let Some(kind) = LockKind::of_name(&name) else {
            continue;
        };
        let key = storage::join(LOCKS, &name);
        // Read even without a key: whatever sits in `locks/` (a FIFO, a
        // device) is refused here as everywhere else.
        let bytes = match store.read(&key, LOCK_LIMIT) {
            Ok(Some(b)) => b,
            // Released between the listing and now.
            Ok(None) => continue,
            Err(e) => return Err(repo_err(store, &key, &e)),
        };
        let found = Found {
            info: lock_key.and_then(|k| open_lock(k, &name, kind, &bytes)),
            shown: store.describe(&key),
            key,
            kind,
            key_held: lock_key.is_some(),
            modified: entry.stat.modified.unwrap_or(now),
        };
        out.push(judge(found, now, &host, PidScope::ours()));
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Decides whether a lock is stale: by its process only where its pid
/// certainly means the same process here (see [`PidScope::covers`]),
/// otherwise by its refresh time alone; a lock whose body did not open,
/// by its file's modification time alone.
fn judge(found: Found, now: SystemTime, host: &str, scope: &PidScope) -> LockEntry {
    let Found {
        key,
        shown,
        kind,
        info,
        key_held,
        modified,
    } = found;
    let parse = |t: &str| humantime::parse_rfc3339(t).ok();
    let (taken, refreshed) = match &info {
        Some(i) => (
            parse(&i.time).unwrap_or(modified),
            parse(&i.refreshed).unwrap_or(modified).max(modified),
        ),
        None => (modified, modified),
    };
    let age = now.duration_since(taken).unwrap_or_default();
    let silent = now.duration_since(refreshed).unwrap_or_default();
    let here = |i: &LockInfo| i.host == host && i.pid != std::process::id() && scope.covers(i);
    let stale = match &info {
        Some(i) if here(i) && !pid_alive(i.pid) => Some(format!(
            "process {} is not running on this host (same boot and PID namespace)",
            i.pid
        )),
        Some(i) if here(i) && !same_process(i) => Some(format!(
            "process {} on this host is not the one that took the lock (pid reused)",
            i.pid
        )),
        _ if silent > STALE_AFTER => Some(format!(
            "not refreshed for {}{}",
            humantime::format_duration(round_secs(silent)),
            if info.is_none() {
                " (by its file's modification time)"
            } else {
                ""
            }
        )),
        _ => None,
    };
    LockEntry {
        key,
        shown,
        kind,
        info,
        key_held,
        modified,
        stale,
        age,
    }
}

/// Removes stale locks (every lock with `all`); returns the removed ones
/// and the kept ones. Bodies are read with `lock_key` if there is one, for
/// their details and their holders' pids; without one, staleness is judged
/// by modification times alone, so that a machine without the id key can
/// still clear a lock left behind.
pub fn unlock(
    store: &dyn Storage,
    all: bool,
    lock_key: Option<&LockKey>,
) -> Result<(Vec<LockEntry>, Vec<LockEntry>)> {
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for lock in list_locks(store, lock_key)? {
        if all || lock.stale.is_some() {
            store
                .delete(&lock.key)
                .map_err(|e| repo_err(store, &lock.key, &e))?;
            removed.push(lock);
        } else {
            kept.push(lock);
        }
    }
    Ok((removed, kept))
}

/// Whether a process with this pid runs on this machine (`kill(pid, 0)`:
/// "no permission" still means it exists).
pub fn pid_alive(pid: u32) -> bool {
    use nix::errno::Errno;
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Whether the live process `info.pid` is the one that wrote the lock:
/// same boot and start time. Unknown (an older lock file, or no `/proc`)
/// counts as the same, so a lock is never taken for stale on a guess.
fn same_process(info: &LockInfo) -> bool {
    match (&info.started, process_start(info.pid)) {
        (Some(then), Some(now)) => *then == now,
        _ => true,
    }
}

/// `<boot id>:<start time in clock ticks since boot>` of process `pid`,
/// from `/proc` (Linux); `None` where that cannot be read.
pub fn process_start(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    // Our own through /proc/self, right even where /proc is another PID
    // namespace's.
    let stat = if pid == std::process::id() {
        std::fs::read_to_string("/proc/self/stat").ok()?
    } else {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?
    };
    // Fields after the command name, which is in parentheses and may hold
    // spaces: the state is field 3 and the start time field 22.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start = after_name.split_whitespace().nth(22 - 3)?;
    start.parse::<u64>().ok()?;
    Some(format!("{}:{start}", boot.trim()))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(host: &str, pid: u32, refreshed: SystemTime) -> LockInfo {
        LockInfo {
            kind: LockKind::Exclusive,
            host: host.into(),
            pid,
            program: "t".into(),
            time: rfc3339(refreshed),
            refreshed: rfc3339(refreshed),
            started: None,
            boot_id: PidScope::ours().boot_id.clone(),
            pid_ns: PidScope::ours().pid_ns.clone(),
        }
    }

    /// Judges an exclusive lock holding `info` (if its body opened) whose
    /// file was last modified at `modified`.
    fn judge_at(
        info: Option<LockInfo>,
        modified: SystemTime,
        now: SystemTime,
        host: &str,
        scope: &PidScope,
    ) -> LockEntry {
        let found = Found {
            key: "x".into(),
            shown: "x".into(),
            kind: LockKind::Exclusive,
            info,
            key_held: true,
            modified,
        };
        judge(found, now, host, scope)
    }

    /// Judges `i` as seen from this process.
    fn judged(i: LockInfo, now: SystemTime) -> Option<String> {
        judge_at(
            Some(i),
            now,
            now,
            &crate::sys::host::this_host(),
            PidScope::ours(),
        )
        .stale
    }

    #[test]
    fn a_dead_pid_counts_only_in_our_own_boot_and_pid_namespace() {
        let now = SystemTime::now();
        let host = crate::sys::host::this_host();
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        assert!(PidScope::ours().boot_id.is_some() && PidScope::ours().pid_ns.is_some());
        // Ours: certainly dead.
        let why = judged(info(&host, dead, now), now).expect("dead here: stale");
        assert!(why.contains("is not running on this host"), "{why}");
        // Another PID namespace, another boot (a second machine of the same
        // name), or a lock that does not say (an older bk): the pid means
        // nothing here, so the lock is live while it is refreshed...
        let mut other_ns = info(&host, dead, now);
        other_ns.pid_ns = Some("pid:[4026599999]".into());
        let mut other_boot = info(&host, dead, now);
        other_boot.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
        let mut legacy = info(&host, dead, now);
        legacy.boot_id = None;
        legacy.pid_ns = None;
        let mut no_ns = info(&host, dead, now);
        no_ns.pid_ns = None;
        for (what, i) in [
            ("other PID namespace", other_ns),
            ("other boot", other_boot),
            ("no boot id or namespace", legacy),
            ("no namespace", no_ns),
        ] {
            assert_eq!(
                judged(i.clone(), now),
                None,
                "{what}: judged stale by its pid"
            );
            // ... and stale once it has not been refreshed for too long.
            let old = now - STALE_AFTER - Duration::from_secs(60);
            let mut silent = i;
            silent.time = rfc3339(old);
            silent.refreshed = rfc3339(old);
            let why = judge_at(Some(silent), old, now, &host, PidScope::ours())
                .stale
                .unwrap_or_else(|| panic!("{what}: silent for 31m but live"));
            assert!(why.contains("not refreshed for 31m"), "{what}: {why}");
        }
        // Our namespace, judged from a scope that does not know its own.
        let blind = PidScope {
            boot_id: PidScope::ours().boot_id.clone(),
            pid_ns: None,
        };
        let e = judge_at(Some(info(&host, dead, now)), now, now, &host, &blind);
        assert_eq!(e.stale, None);
    }

    #[test]
    fn live_pid_of_another_process_run_is_stale() {
        let now = SystemTime::now();
        let host = crate::sys::host::this_host();
        let parent = nix::unistd::getppid().as_raw() as u32;
        let started = process_start(parent).expect("/proc on Linux");
        let judged = |started: Option<String>| {
            let mut i = info(&host, parent, now);
            i.started = started;
            judged(i, now)
        };
        // The parent itself: live. An older lock without a start time: live.
        assert_eq!(judged(Some(started.clone())), None);
        assert_eq!(judged(None), None);
        // The same pid in an earlier run (other start time, or other boot).
        let (boot, ticks) = started.split_once(':').unwrap();
        let earlier = format!("{boot}:{}", ticks.parse::<u64>().unwrap() + 1);
        let other_boot = format!("00000000-0000-0000-0000-000000000000:{ticks}");
        for then in [earlier, other_boot] {
            let why = judged(Some(then.clone())).unwrap_or_else(|| panic!("{then}: live"));
            assert!(why.contains("not the one that took the lock"), "{why}");
        }
    }

    #[test]
    fn dead_pid_on_this_host_is_stale() {
        let now = SystemTime::now();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let stale = judged(info(&crate::sys::host::this_host(), pid, now), now);
        assert!(stale.unwrap().contains("not running"));
    }

    #[test]
    fn live_and_remote_locks() {
        let now = SystemTime::now();
        let me = std::process::id();
        let parent = nix::unistd::getppid().as_raw() as u32;
        let e = judge_at(
            Some(info(&crate::sys::host::this_host(), parent, now)),
            now,
            now,
            &crate::sys::host::this_host(),
            PidScope::ours(),
        );
        assert!(e.stale.is_none(), "{:?}", e.stale);
        let old = now - Duration::from_secs(31 * 60);
        let e = judge_at(
            Some(info("elsewhere", me, old)),
            old,
            now,
            &crate::sys::host::this_host(),
            PidScope::ours(),
        );
        assert!(e.stale.unwrap().contains("not refreshed"));
        let recent = now - Duration::from_secs(60);
        let e = judge_at(
            Some(info("elsewhere", 1, recent)),
            recent,
            now,
            &crate::sys::host::this_host(),
            PidScope::ours(),
        );
        assert!(e.stale.is_none());
    }

    fn dir_store() -> (tempfile::TempDir, Arc<dyn Storage>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Storage> = Arc::new(crate::storage::dir::DirStorage::new(dir.path()));
        (dir, store)
    }

    fn lock_key(seed: u8) -> LockKey {
        let id_key = crate::repo::idkey::IdKey::from_bytes([seed; 32]);
        crate::repo::authkey::AuthKeys::derive(&id_key, "aa").lock_key()
    }

    #[test]
    fn shared_locks_coexist_exclusive_do_not() {
        let (_dir, store) = dir_store();
        let k = lock_key(1);
        let lock = |kind, who| RepoLock::acquire(Arc::clone(&store), kind, who, Duration::ZERO, &k);
        let a = lock(LockKind::Shared, "a").unwrap();
        let b = lock(LockKind::Shared, "b").unwrap();
        let err = lock(LockKind::Exclusive, "c").unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::LOCKED);
        assert!(err.to_string().contains("is locked by"), "{err}");
        drop(a);
        drop(b);
        assert!(list_locks(&*store, Some(&k)).unwrap().is_empty());
        let c = lock(LockKind::Exclusive, "c").unwrap();
        let err = lock(LockKind::Shared, "d").unwrap_err();
        assert!(err.to_string().contains("c (exclusive lock)"), "{err}");
        drop(c);
    }

    #[test]
    fn a_lock_file_shows_only_its_kind() {
        let (dir, store) = dir_store();
        let k = lock_key(1);
        let held = RepoLock::acquire(
            Arc::clone(&store),
            LockKind::Exclusive,
            "bk-index prune",
            Duration::ZERO,
            &k,
        )
        .unwrap();
        let name = held.key().strip_prefix("locks/").unwrap().to_owned();
        let hex = name
            .strip_prefix("exclusive-")
            .and_then(|n| n.strip_suffix(".lock"))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(hex.len(), 2 * NAME_RANDOM_BYTES, "{name}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        let bytes = std::fs::read(dir.path().join(held.key())).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [
            crate::sys::host::this_host(),
            "bk-index prune".to_owned(),
            std::process::id().to_string(),
        ] {
            assert!(!text.contains(&secret), "{secret:?} readable");
        }
        // Read with the key, it says it all.
        let seen = list_locks(&*store, Some(&k)).unwrap();
        let info = seen[0].info.as_ref().expect("opens with its key");
        assert_eq!(info.program, "bk-index prune");
        assert_eq!(info.pid, std::process::id());
        // A host name of any length up to hundreds of bytes gives a file of
        // the same size.
        let mut short = info.clone();
        short.host = "h".into();
        let mut long = info.clone();
        long.host = "h".repeat(300);
        assert_eq!(
            seal_lock(&k, &name, &short).len(),
            seal_lock(&k, &name, &long).len()
        );
        assert_eq!(bytes.len(), seal_lock(&k, &name, &short).len());
    }

    /// Plants an exclusive lock file whose body does not open under
    /// `lock_key(1)`, modified at `when`.
    fn plant_unreadable(dir: &std::path::Path, body: &[u8], when: SystemTime) -> String {
        let name = new_lock_name(LockKind::Exclusive);
        let path = dir.join(LOCKS).join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        name
    }

    #[test]
    fn a_lock_that_does_not_open_conflicts_and_ages_by_its_mtime() {
        let (dir, store) = dir_store();
        let k = lock_key(1);
        let now = SystemTime::now();
        let foreign = info("elsewhere", 1, now);
        let name = new_lock_name(LockKind::Exclusive);
        let bodies: [(&str, Vec<u8>); 3] = [
            ("garbage", b"not a lock at all".to_vec()),
            ("another key", seal_lock(&lock_key(2), &name, &foreign)),
            ("another name", seal_lock(&k, &name, &foreign)),
        ];
        for (what, body) in bodies {
            let planted = plant_unreadable(dir.path(), &body, now);
            let err = RepoLock::acquire(
                Arc::clone(&store),
                LockKind::Shared,
                "b",
                Duration::ZERO,
                &k,
            )
            .unwrap_err();
            assert_eq!(err.exit_code(), crate::error::exit::LOCKED, "{what}");
            assert!(
                err.to_string().contains(
                    "a lock of another holder (its details cannot be read with this repository's id key), exclusive lock"
                ),
                "{what}: {err}"
            );
            let (removed, kept) = unlock(&*store, false, Some(&k)).unwrap();
            assert!(removed.is_empty() && kept.len() == 1, "{what}");
            std::fs::remove_file(dir.path().join(LOCKS).join(&planted)).unwrap();

            plant_unreadable(
                dir.path(),
                &body,
                now_minus(STALE_AFTER + Duration::from_secs(60)),
            );
            let taken = RepoLock::acquire(
                Arc::clone(&store),
                LockKind::Shared,
                "b",
                Duration::ZERO,
                &k,
            );
            drop(taken.unwrap_or_else(|e| panic!("{what}: {e}")));
            let (removed, kept) = unlock(&*store, false, Some(&k)).unwrap();
            assert!(kept.is_empty() && removed.len() == 1, "{what}");
            let why = removed[0].stale.as_deref().unwrap();
            assert!(
                why.starts_with("not refreshed for 31m")
                    && why.ends_with("(by its file's modification time)"),
                "{what}: {why}"
            );
        }
    }

    #[test]
    fn unlock_without_a_key_judges_by_mtime_alone() {
        let (dir, store) = dir_store();
        let k = lock_key(1);
        let held = RepoLock::acquire(
            Arc::clone(&store),
            LockKind::Shared,
            "a",
            Duration::ZERO,
            &k,
        )
        .unwrap();
        let old = now_minus(STALE_AFTER + Duration::from_secs(60));
        let silent = plant_unreadable(dir.path(), b"x", old);
        let (removed, kept) = unlock(&*store, false, None).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(removed[0].key.ends_with(&silent));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].key, held.key());
        assert!(
            kept[0].describe().contains(
                "a lock of another holder (its details cannot be read without this repository's id key), shared lock"
            ),
            "{}",
            kept[0].describe()
        );
        let (removed, kept) = unlock(&*store, true, None).unwrap();
        assert_eq!((removed.len(), kept.len()), (1, 0));
        drop(held);
    }

    fn now_minus(d: Duration) -> SystemTime {
        SystemTime::now() - d
    }
}
