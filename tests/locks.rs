//! Repository locks: lock files in `repo/locks/`, shared for backups and
//! exclusive for forget/prune; stale locks (dead process, or silent for 30
//! minutes on another host) are ignored and removed by `bk-index unlock`;
//! `--wait` waits for a lock to be released.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// A sandbox with a repository and the hashed records of a small tree.
fn setup() -> (Sandbox, Vec<u8>) {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("f.txt"), b"locked content", 0o644);
    let backup = sb.backup(&tree);
    (sb, backup.hashed)
}

fn seal_with(sb: &Sandbox, hashed: &[u8], extra: &[&str]) -> std::process::Output {
    let mut a = sb.seal_args();
    a.extend(extra.iter().map(std::ffi::OsString::from));
    sb.run("bk-seal", &a, hashed)
}

fn unlock(sb: &Sandbox, extra: &[&str]) -> std::process::Output {
    let mut a = args!["unlock"];
    a.extend(sb.repo_args());
    a.extend(extra.iter().map(std::ffi::OsString::from));
    sb.run("bk-index", &a, b"")
}

#[test]
fn stale_locks_are_ignored_with_a_warning_and_removed_by_unlock() {
    let (sb, hashed) = setup();
    let host = bk::host::this_host();
    let dead = write_lock(
        &sb.repo,
        "exclusive",
        "bk-index prune",
        &host,
        dead_pid(),
        SystemTime::now(),
    );
    let silent = write_lock(
        &sb.repo,
        "exclusive",
        "bk-index prune",
        "far-away-host",
        4242,
        SystemTime::now() - Duration::from_secs(31 * 60),
    );
    let remote_live = write_lock(
        &sb.repo,
        "shared",
        "bk-seal",
        "far-away-host",
        4243,
        SystemTime::now(),
    );

    let out = seal_with(&sb, &hashed, &[]);
    assert_ok(&out, "bk-seal beside stale locks");
    let err = stderr(&out);
    assert!(
        err.contains("ignoring stale lock") && err.contains("is not running on this host"),
        "{err}"
    );
    assert!(err.contains("not refreshed for 31m"), "{err}");
    assert!(err.contains("bk-index unlock"), "{err}");
    // bk-seal removed only its own lock.
    assert_eq!(lock_files(&sb.repo).len(), 3);

    let out = unlock(&sb, &[]);
    assert_ok(&out, "bk-index unlock");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains(dead.file_name().unwrap().to_str().unwrap()),
        "{text}"
    );
    assert!(
        text.contains(silent.file_name().unwrap().to_str().unwrap()),
        "{text}"
    );
    assert!(
        stderr(&out).contains("kept live lock"),
        "{}",
        describe(&out)
    );
    assert!(!dead.exists() && !silent.exists() && remote_live.exists());

    let out = unlock(&sb, &["--all"]);
    assert_ok(&out, "bk-index unlock --all");
    assert!(String::from_utf8_lossy(&out.stdout).contains("live, removed with --all"));
    assert!(lock_files(&sb.repo).is_empty());
}

#[test]
fn a_live_exclusive_lock_blocks_backups() {
    let (sb, hashed) = setup();
    let host = bk::host::this_host();
    // This test process is alive: its lock is live.
    let lock = write_lock(
        &sb.repo,
        "exclusive",
        "bk-index prune",
        &host,
        std::process::id(),
        SystemTime::now(),
    );
    let out = seal_with(&sb, &hashed, &[]);
    assert_code(&out, 11, "bk-seal under an exclusive lock");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "is locked by bk-index prune (exclusive lock) on host {host} pid {}",
            std::process::id()
        )),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "bk-seal wrote records while locked out"
    );

    let mut a = args!["write"];
    a.extend(sb.seal_args());
    let out = sb.run("bk-index", &a, b"");
    assert_code(&out, 11, "bk-index write under an exclusive lock");

    // Another host's fresh lock is live too.
    std::fs::remove_file(&lock).unwrap();
    write_lock(
        &sb.repo,
        "exclusive",
        "bk-index forget",
        "far-away-host",
        1,
        SystemTime::now(),
    );
    let out = seal_with(&sb, &hashed, &[]);
    assert_code(&out, 11, "bk-seal under another host's lock");
    assert!(stderr(&out).contains("bk-index forget (exclusive lock) on host far-away-host"));
}

#[test]
fn wait_succeeds_once_the_lock_is_released() {
    let (sb, hashed) = setup();
    let host = bk::host::this_host();
    let lock = write_lock(
        &sb.repo,
        "exclusive",
        "bk-index prune",
        &host,
        std::process::id(),
        SystemTime::now(),
    );

    // --wait runs out: the error says how long it waited.
    let start = Instant::now();
    let out = seal_with(&sb, &hashed, &["--wait", "1s"]);
    assert_code(&out, 11, "bk-seal --wait 1s");
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(stderr(&out).contains("(waited 1s)"), "{}", describe(&out));

    // Released after a second: the waiting bk-seal goes ahead.
    let mut cmd = sb.command("bk-seal");
    cmd.args(sb.seal_args())
        .args(["--wait", "30s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, &hashed).unwrap();
    drop(input);
    std::thread::sleep(Duration::from_secs(1));
    std::fs::remove_file(&lock).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out, "bk-seal --wait 30s");
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        parse_records(&out.stdout).len(),
        parse_records(&hashed).len()
    );
    assert!(lock_files(&sb.repo).is_empty());
}

#[test]
fn a_killed_run_leaves_a_stale_lock_that_the_next_run_detects() {
    let (sb, hashed) = setup();
    let mut cmd = sb.command("bk-seal");
    cmd.args(sb.seal_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while lock_files(&sb.repo).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bk-seal took no lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let left = lock_files(&sb.repo);
    assert_eq!(left.len(), 1);
    assert!(left
        .iter()
        .next()
        .unwrap()
        .to_string_lossy()
        .starts_with("shared-"));

    // A prune would be blocked by a live shared lock; this one is stale.
    let mut a = args!["prune", "--dry-run"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    assert_ok(&sb.run("bk-index", &a, b""), "prune --dry-run");
    let mut a = args!["prune"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    let out = sb.run("bk-index", &a, b"");
    assert_ok(&out, "prune beside a stale lock");
    assert!(
        stderr(&out).contains("ignoring stale lock"),
        "{}",
        describe(&out)
    );

    let out = seal_with(&sb, &hashed, &[]);
    assert_ok(&out, "bk-seal after a killed run");
    let out = unlock(&sb, &[]);
    assert_ok(&out, "unlock");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stale: process"));
    assert!(lock_files(&sb.repo).is_empty());
}

#[test]
fn init_pipeline_creates_and_locks_the_repository() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("f.txt"), b"first run", 0o644);
    let (_, hashed) = sb.scan_hash(&tree);
    let hashed_file = sb.path("hashed.ndjson");
    std::fs::write(&hashed_file, &hashed).unwrap();
    let seal = assert_cmd::cargo::cargo_bin("bk-seal");
    let index = assert_cmd::cargo::cargo_bin("bk-index");
    let script = format!(
        "set -o pipefail; '{}' --init --repo '{r}' -r '{k}' < '{h}' | '{}' write --repo '{r}' -r '{k}'",
        seal.display(),
        index.display(),
        r = sb.repo.display(),
        k = sb.pub_key.display(),
        h = hashed_file.display()
    );
    let mut cmd = sb.command("bash");
    cmd.args(["-c", &script]);
    let out = run_command(cmd, b"", DEFAULT_TIMEOUT);
    assert_ok(&out, "bk-seal --init | bk-index write");
    assert_eq!(sb.snapshot_names().len(), 1);
    assert!(lock_files(&sb.repo).is_empty(), "locks left behind");
    let shown = sb.show_latest();
    assert_eq!(parse_records(&shown).len(), parse_records(&hashed).len());
}

/// A lock whose pid now belongs to another process (pids are reused, e.g.
/// after a reboot) is stale: its holder's start time no longer matches. The
/// same pid with the holder's own start time keeps the lock live.
#[test]
fn a_lock_whose_pid_was_reused_is_stale() {
    let (sb, hashed) = setup();
    let host = bk::host::this_host();
    let me = std::process::id();
    let started = bk::lock::process_start(me).expect("/proc on Linux");
    let plant = |started: &str| {
        let path = write_lock(
            &sb.repo,
            "exclusive",
            "bk-index prune",
            &host,
            me,
            SystemTime::now(),
        );
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json["started"] = started.into();
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };

    let own = plant(&started);
    let out = seal_with(&sb, &hashed, &[]);
    assert_code(&out, 11, "bk-seal under a live lock with its start time");
    std::fs::remove_file(&own).unwrap();

    let (boot, ticks) = started.split_once(':').unwrap();
    let reused = plant(&format!("{boot}:{}", ticks.parse::<u64>().unwrap() + 7));
    let out = seal_with(&sb, &hashed, &[]);
    assert_ok(&out, "bk-seal beside a lock whose pid was reused");
    let err = stderr(&out);
    assert!(
        err.contains("ignoring stale lock")
            && err.contains(&format!(
                "process {me} on this host is not the one that took the lock (pid reused)"
            )),
        "{err}"
    );
    let out = unlock(&sb, &[]);
    assert_ok(&out, "bk-index unlock");
    assert!(!reused.exists(), "unlock removed the reused-pid lock");
}
