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
    let host = bk::sys::host::this_host();
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
    let host = bk::sys::host::this_host();
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
    // What to do comes on a line of its own.
    assert!(
        err.lines()
            .any(|l| l == "bk-seal: hint: try again later, or give --wait DURATION"),
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
    let host = bk::sys::host::this_host();
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
    let host = bk::sys::host::this_host();
    let me = std::process::id();
    let started = bk::repo::lock::process_start(me).expect("/proc on Linux");
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

/// Objects stored by a backup that has not written its snapshot yet: a
/// prune with `--grace 0s` that ignored that backup's lock would delete
/// them. Returns the sealed records.
fn sealed_not_indexed(sb: &Sandbox) -> Vec<u8> {
    let tree = sb.fresh_dir("tree2");
    for i in 0..30 {
        write_file(
            &tree.join(format!("n{i:02}.txt")),
            format!("new content {i}").as_bytes(),
            0o644,
        );
    }
    let (_, hashed) = sb.scan_hash(&tree);
    let out = seal_with(sb, &hashed, &[]);
    assert_ok(&out, "bk-seal of the second tree");
    out.stdout
}

fn prune(sb: &Sandbox) -> std::process::Output {
    let mut a = args!["prune", "--grace", "0s"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    sb.run("bk-index", &a, b"")
}

/// Every blob of the repository (contents and catalogue pieces).
fn objects(sb: &Sandbox) -> std::collections::BTreeSet<String> {
    sb.blob_ids()
}

/// A lock written in another PID namespace (a container sharing the host
/// name, `unshare -p`, systemd's private PIDs) names a pid that means
/// nothing here, even if no process has it here; so does a lock of a bk
/// that did not record its boot and namespace. Such a lock is live until
/// it goes 30 minutes without a refresh: prune refuses (exit 11), deletes
/// nothing, and unlock keeps it.
#[test]
fn a_lock_of_another_pid_namespace_is_live_until_it_goes_unrefreshed() {
    let (sb, _) = setup();
    let _sealed = sealed_not_indexed(&sb);
    let stored = objects(&sb);
    let host = bk::sys::host::this_host();
    let (boot, _) = boot_and_pid_ns();
    let dead = dead_pid();
    let plant = |when: SystemTime, fields: &[(&str, &str)]| {
        let path = write_lock(&sb.repo, "shared", "bk-seal", &host, dead, when);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for (k, v) in fields {
            if v.is_empty() {
                json.as_object_mut().unwrap().remove(*k);
            } else {
                json[*k] = (*v).into();
            }
        }
        std::fs::write(&path, json.to_string()).unwrap();
        let ns = when
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        set_mtime_ns(&path, ns);
        path
    };
    let started = format!("{boot}:12345");
    let other_ns: &[(&str, &str)] = &[("pid_ns", "pid:[4026599999]"), ("started", &started)];
    let legacy: &[(&str, &str)] = &[("pid_ns", ""), ("boot_id", "")];
    for (what, fields) in [
        ("another PID namespace", other_ns),
        ("a lock without boot id and namespace", legacy),
    ] {
        let lock = plant(SystemTime::now(), fields);
        let out = prune(&sb);
        assert_code(&out, 11, &format!("prune beside a lock of {what}"));
        assert!(
            stderr(&out).contains(&format!(
                "is locked by bk-seal (shared lock) on host {host} pid {dead}"
            )),
            "{what}: {}",
            describe(&out)
        );
        assert_eq!(objects(&sb), stored, "{what}: prune deleted objects");
        let out = unlock(&sb, &[]);
        assert_ok(&out, "bk-index unlock");
        assert!(out.stdout.is_empty(), "{what}: unlock removed a live lock");
        assert!(
            stderr(&out).contains("kept live lock"),
            "{}",
            describe(&out)
        );
        assert!(lock.exists());
        std::fs::remove_file(&lock).unwrap();

        // Silent for 31 minutes: stale, and prune goes ahead.
        let lock = plant(SystemTime::now() - Duration::from_secs(31 * 60), fields);
        let out = unlock(&sb, &[]);
        assert_ok(&out, "bk-index unlock of a silent lock");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains(lock.file_name().unwrap().to_str().unwrap())
                && text.contains("not refreshed for 31m"),
            "{what}: {text}"
        );
        assert!(!lock.exists());
    }
    // The same dead pid recorded in our own boot and namespace: stale.
    let ours = plant(SystemTime::now(), &[("started", &started)]);
    let out = prune(&sb);
    assert_ok(&out, "prune beside a dead lock of our own namespace");
    assert!(
        stderr(&out).contains(&format!("process {dead} is not running on this host")),
        "{}",
        describe(&out)
    );
    assert!(objects(&sb).len() < stored.len(), "prune deleted nothing");
    std::fs::remove_file(&ours).unwrap();
}

/// Whether `unshare -p -f --mount-proc` works here (root, Linux). In CI
/// (root) it must; elsewhere the test is skipped, saying so.
fn can_unshare(test: &str) -> bool {
    let works = std::process::Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works || std::env::var_os("CI").is_none(),
        "{test}: unshare -p -f --mount-proc fails, and CI runs as root"
    );
    if !works {
        eprintln!("SKIPPED {test}: unshare -p -f --mount-proc does not work here (needs root)");
    }
    works
}

/// A real backup in another PID namespace (`unshare -p`, as in a container
/// with the same host name): while its `bk-index write` waits for its
/// records, holding its shared lock, a prune outside refuses (exit 11) and
/// deletes none of the objects the backup has stored; the backup then
/// completes and its snapshot verifies.
#[test]
fn a_backup_in_another_pid_namespace_holds_off_prune() {
    if !can_unshare("a_backup_in_another_pid_namespace_holds_off_prune") {
        return;
    }
    let (sb, _) = setup();
    let sealed = sealed_not_indexed(&sb);
    let stored = objects(&sb);
    let mut cmd = sb.command("unshare");
    cmd.args(["-p", "-f", "--mount-proc"])
        .arg(assert_cmd::cargo::cargo_bin("bk-index"))
        .arg("write")
        .args(sb.seal_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while lock_files(&sb.repo).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bk-index write in the namespace took no lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = prune(&sb);
    let refused = out.status.code() == Some(11);
    let after = objects(&sb);
    // Let the backup finish either way, then judge.
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, &sealed).unwrap();
    drop(input);
    let written = child.wait_with_output().unwrap();
    assert!(
        refused,
        "prune beside a backup in another PID namespace: expected exit 11: {}",
        describe(&out)
    );
    assert_eq!(after, stored, "prune deleted objects of the running backup");
    assert_ok(&written, "bk-index write in the namespace");
    let mut show = args!["show", "latest"];
    show.extend(sb.repo_args());
    show.extend(sb.key_args());
    let shown = sb.run("bk-index", &show, b"");
    assert_ok(&shown, "bk-index show latest");
    let v = sb.verify(&shown.stdout, &args!["--read-data", "--key", &sb.sec_key]);
    assert_ok(&v, "bk-verify --read-data of the backup's snapshot");
}
