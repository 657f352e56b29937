//! Repository locks: plain files in `repo/locks/`, so they work wherever the
//! repository does (a local disk, an NFS or SMB share, a cloud-drive mount),
//! not only where `flock` does.
//!
//! Each holder writes one file, `<shared|exclusive>-<host>-<pid>-<rand>.json`,
//! holding `{kind, host, pid, program, time, refreshed}`. Backups
//! (`bk-seal`, `bk-index write`) take **shared** locks, which coexist;
//! `bk-index forget` and `prune` take an **exclusive** one, which coexists
//! with nothing.
//!
//! Acquiring: write our own file first, then list the others. If a live
//! conflicting lock is there, remove ours, sleep a little (with jitter) and
//! try again until `--wait` runs out. Because everyone writes before they
//! look, two contenders can never both miss each other: at worst both back
//! off and retry.
//!
//! A live holder rewrites its `refreshed` time every few minutes from a
//! background thread. A lock is **stale** when its process is not running
//! on this host (same host name, no such pid), or, for other hosts, when it
//! has not been refreshed for [`STALE_AFTER`]. Stale locks are ignored with
//! a warning; `bk-index unlock` removes them.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{io_cause, Error, Result};
use crate::repo::{sync_dir, TMP_PREFIX};

/// A lock of another host that has not been refreshed for this long is
/// stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

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
}

/// One lock file found in `locks/`.
#[derive(Debug, Clone)]
pub struct LockEntry {
    /// The file.
    pub path: PathBuf,
    /// Its kind (from the content, else from the file name).
    pub kind: LockKind,
    /// Its content, if it could be read.
    pub info: Option<LockInfo>,
    /// Why it is stale, if it is.
    pub stale: Option<String>,
    /// Age of the lock's `time` (or the file's mtime).
    pub age: Duration,
}

impl LockEntry {
    /// "bk-index prune on host H pid P since T" for messages.
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
                "an unreadable {} lock file {}",
                self.kind.as_str(),
                self.path.display()
            ),
        }
    }
}

/// A held lock; released (its file removed) when dropped.
#[derive(Debug)]
pub struct RepoLock {
    path: PathBuf,
    stop: Arc<(Mutex<bool>, Condvar)>,
    refresher: Option<JoinHandle<()>>,
}

impl RepoLock {
    /// Takes a lock of `kind` on the repository at `root` for `program`,
    /// retrying until `wait` has passed. Stale locks are ignored with a
    /// warning on stderr. A lock still held by someone else when `wait`
    /// runs out is an error naming the holder (exit status 11).
    pub fn acquire(root: &Path, kind: LockKind, program: &str, wait: Duration) -> Result<RepoLock> {
        let dir = root.join("locks");
        fs::create_dir_all(&dir).map_err(|e| repo_io(&dir, e))?;
        let started = std::time::Instant::now();
        let host = crate::host::this_host();
        let pid = std::process::id();
        let mut warned = std::collections::BTreeSet::new();
        loop {
            let now = rfc3339(SystemTime::now());
            let info = LockInfo {
                kind,
                host: host.clone(),
                pid,
                program: program.to_owned(),
                time: now.clone(),
                refreshed: now,
            };
            let mut rnd = [0u8; 4];
            rand::thread_rng().fill_bytes(&mut rnd);
            let name = format!(
                "{}-{}-{pid}-{}.json",
                kind.as_str(),
                crate::host::file_safe(&host),
                hex::encode(rnd)
            );
            let path = dir.join(&name);
            write_lock_file(&dir, &path, &info, false)?;
            let others = list_locks(root)?;
            let mut conflict: Option<LockEntry> = None;
            for other in others.into_iter().filter(|o| o.path != path) {
                if let Some(why) = &other.stale {
                    if warned.insert(other.path.clone()) {
                        eprintln!(
                            "{program}: ignoring stale lock {} ({}: {why}); `bk-index unlock --repo {}` removes it",
                            other.path.display(),
                            other.describe(),
                            root.display()
                        );
                    }
                    continue;
                }
                if kind.conflicts_with(other.kind) {
                    conflict = Some(other);
                    break;
                }
            }
            let Some(holder) = conflict else {
                return Ok(RepoLock::start(path, info));
            };
            let _ = fs::remove_file(&path);
            let waited = started.elapsed();
            let young = holder.age < CONTENDER_WINDOW;
            if waited >= wait && !(young && waited < wait + CONTENDER_WINDOW * 2) {
                return Err(Error::locked(format!(
                    "repository {} is locked by {}{}; try again later{}",
                    root.display(),
                    holder.describe(),
                    if wait.is_zero() {
                        String::new()
                    } else {
                        format!(" (waited {})", humantime::format_duration(round_secs(wait)))
                    },
                    if wait.is_zero() {
                        ", or give --wait DURATION"
                    } else {
                        ""
                    }
                )));
            }
            // Exclusive contenders back off longer, so that a waiting prune
            // never keeps a starting backup out for long.
            let (lo, hi) = match kind {
                LockKind::Shared => (50, 250),
                LockKind::Exclusive => (300, 1200),
            };
            let nap = Duration::from_millis(rand::thread_rng().gen_range(lo..hi));
            let left = (wait + CONTENDER_WINDOW * 2).saturating_sub(waited);
            std::thread::sleep(nap.min(left.max(Duration::from_millis(10))));
        }
    }

    /// Starts the refresher thread for a lock just taken.
    fn start(path: PathBuf, info: LockInfo) -> RepoLock {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let refresher = {
            let stop = Arc::clone(&stop);
            let path = path.clone();
            std::thread::Builder::new()
                .name("lock-refresh".into())
                .spawn(move || refresh_loop(&path, info, &stop))
                .ok()
        };
        RepoLock {
            path,
            stop,
            refresher,
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        {
            let (flag, cv) = &*self.stop;
            *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let _ = fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = sync_dir(dir);
        }
    }
}

/// A shared lock for `bk-index write`, taken at once if the repository
/// exists; `None` if it does not exist yet. Then it is being created by
/// this very pipeline's `bk-seal --init`, which holds its own shared lock
/// while it stores objects; the caller locks once its input has ended. A
/// repository that new has no snapshot and no object older than prune's
/// grace period, so nothing of it can be pruned in between.
pub fn lock_if_repo_exists(root: &Path, program: &str, wait: Duration) -> Result<Option<RepoLock>> {
    if !root.join("bk-repo.json").exists() {
        return Ok(None);
    }
    RepoLock::acquire(root, LockKind::Shared, program, wait).map(Some)
}

/// Rewrites `refreshed` every [`REFRESH_EVERY`] until told to stop.
fn refresh_loop(path: &Path, mut info: LockInfo, stop: &(Mutex<bool>, Condvar)) {
    let (flag, cv) = stop;
    let mut stopped = flag.lock().unwrap_or_else(|p| p.into_inner());
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
        if let Some(dir) = path.parent() {
            if let Err(e) = write_lock_file(dir, path, &info, true) {
                eprintln!("{}: cannot refresh lock: {e}", info.program);
            }
        }
    }
}

/// Writes a lock file atomically: a temporary file, fsynced, then renamed
/// to `path` (which must not exist unless `replace`), then the directory
/// fsynced. Readers therefore never see a half-written lock.
fn write_lock_file(dir: &Path, path: &Path, info: &LockInfo, replace: bool) -> Result<()> {
    let mut rnd = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut rnd);
    let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(rnd)));
    let json = serde_json::to_vec_pretty(info).unwrap_or_default();
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        if !replace && path.exists() {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| repo_io(path, e))
}

/// Every lock file in the repository, each with its staleness judged.
pub fn list_locks(root: &Path) -> Result<Vec<LockEntry>> {
    let dir = root.join("locks");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(repo_io(&dir, e)),
    };
    let host = crate::host::this_host();
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| repo_io(&dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let kind = if name.starts_with("exclusive-") {
            LockKind::Exclusive
        } else if name.starts_with("shared-") {
            LockKind::Shared
        } else {
            continue;
        };
        let path = entry.path();
        let mtime = match fs::metadata(&path) {
            Ok(m) => m.modified().unwrap_or(now),
            // Released between the listing and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(repo_io(&path, e)),
        };
        let info: Option<LockInfo> = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        out.push(judge(path, kind, info, mtime, now, &host));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Decides whether a lock is stale.
fn judge(
    path: PathBuf,
    kind: LockKind,
    info: Option<LockInfo>,
    mtime: SystemTime,
    now: SystemTime,
    host: &str,
) -> LockEntry {
    let parse = |t: &str| humantime::parse_rfc3339(t).ok();
    let (taken, refreshed) = match &info {
        Some(i) => (
            parse(&i.time).unwrap_or(mtime),
            parse(&i.refreshed).unwrap_or(mtime).max(mtime),
        ),
        None => (mtime, mtime),
    };
    let age = now.duration_since(taken).unwrap_or_default();
    let silent = now.duration_since(refreshed).unwrap_or_default();
    let stale = match &info {
        Some(i) if i.host == host && i.pid != std::process::id() && !pid_alive(i.pid) => {
            Some(format!("process {} is not running on this host", i.pid))
        }
        _ if silent > STALE_AFTER => Some(format!(
            "not refreshed for {}",
            humantime::format_duration(round_secs(silent))
        )),
        _ => None,
    };
    LockEntry {
        path,
        kind: info.as_ref().map_or(kind, |i| i.kind),
        info,
        stale,
        age,
    }
}

/// Removes stale locks (every lock with `all`); returns the removed ones.
pub fn unlock(root: &Path, all: bool) -> Result<(Vec<LockEntry>, Vec<LockEntry>)> {
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for lock in list_locks(root)? {
        if all || lock.stale.is_some() {
            match fs::remove_file(&lock.path) {
                Ok(()) => removed.push(lock),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(repo_io(&lock.path, e)),
            }
        } else {
            kept.push(lock);
        }
    }
    let dir = root.join("locks");
    if !removed.is_empty() {
        sync_dir(&dir).map_err(|e| repo_io(&dir, e))?;
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

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

fn repo_io(path: &Path, e: io::Error) -> Error {
    Error::repo(format!("{}: {}", path.display(), io_cause(&e)))
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
        }
    }

    #[test]
    fn dead_pid_on_this_host_is_stale() {
        let now = SystemTime::now();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let e = judge(
            "x".into(),
            LockKind::Exclusive,
            Some(info(&crate::host::this_host(), pid, now)),
            now,
            now,
            &crate::host::this_host(),
        );
        assert!(e.stale.unwrap().contains("not running"));
    }

    #[test]
    fn live_and_remote_locks() {
        let now = SystemTime::now();
        let me = std::process::id();
        let parent = nix::unistd::getppid().as_raw() as u32;
        let e = judge(
            "x".into(),
            LockKind::Exclusive,
            Some(info(&crate::host::this_host(), parent, now)),
            now,
            now,
            &crate::host::this_host(),
        );
        assert!(e.stale.is_none(), "{:?}", e.stale);
        let old = now - Duration::from_secs(31 * 60);
        let e = judge(
            "x".into(),
            LockKind::Exclusive,
            Some(info("elsewhere", me, old)),
            old,
            now,
            &crate::host::this_host(),
        );
        assert!(e.stale.unwrap().contains("not refreshed"));
        let recent = now - Duration::from_secs(60);
        let e = judge(
            "x".into(),
            LockKind::Exclusive,
            Some(info("elsewhere", 1, recent)),
            recent,
            now,
            &crate::host::this_host(),
        );
        assert!(e.stale.is_none());
    }

    #[test]
    fn shared_locks_coexist_exclusive_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = RepoLock::acquire(dir.path(), LockKind::Shared, "a", Duration::ZERO).unwrap();
        let b = RepoLock::acquire(dir.path(), LockKind::Shared, "b", Duration::ZERO).unwrap();
        let err =
            RepoLock::acquire(dir.path(), LockKind::Exclusive, "c", Duration::ZERO).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::LOCKED);
        assert!(err.to_string().contains("is locked by"), "{err}");
        drop(a);
        drop(b);
        assert!(list_locks(dir.path()).unwrap().is_empty());
        let c = RepoLock::acquire(dir.path(), LockKind::Exclusive, "c", Duration::ZERO).unwrap();
        let err = RepoLock::acquire(dir.path(), LockKind::Shared, "d", Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("c (exclusive lock)"), "{err}");
        drop(c);
    }
}
