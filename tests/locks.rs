//! Repository locks: lock files in `repo/locks/`, shared for backups and
//! exclusive for forget/prune; stale locks (dead process, or silent for 30
//! minutes on another host) are ignored and removed by `bk-index unlock`;
//! `--wait` waits for a lock to be released. Lock files are sealed under a
//! key derived from the id key: the storage operator reads only their kind
//! and times, and a lock that does not open (forged, or of another key)
//! still blocks until its file goes unmodified for 30 minutes.

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
        &sb,
        "exclusive",
        "bk-index prune",
        &host,
        dead_pid(),
        SystemTime::now(),
    );
    let silent = write_lock(
        &sb,
        "exclusive",
        "bk-index prune",
        "far-away-host",
        4242,
        SystemTime::now() - Duration::from_secs(31 * 60),
    );
    let remote_live = write_lock(
        &sb,
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
        &sb,
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
        &sb,
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
        &sb,
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
        let now = SystemTime::now();
        let mut info = lock_info("exclusive", "bk-index prune", &host, me, now);
        info.started = Some(started.to_owned());
        plant_lock(&sb, &info, now)
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
    // Sets the fields named (an empty value removes the field).
    let plant = |when: SystemTime, fields: &[(&str, &str)]| {
        let mut info = lock_info("shared", "bk-seal", &host, dead, when);
        for (k, v) in fields {
            let v = (!v.is_empty()).then(|| (*v).to_owned());
            match *k {
                "pid_ns" => info.pid_ns = v,
                "boot_id" => info.boot_id = v,
                "started" => info.started = v,
                other => panic!("no field {other} to set"),
            }
        }
        plant_lock(&sb, &info, when)
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

/// Waits until the sandbox's repository has a lock file; returns its path.
fn first_lock(sb: &Sandbox) -> std::path::PathBuf {
    let start = Instant::now();
    loop {
        if let Some(f) = lock_files(&sb.repo).into_iter().next() {
            return sb.repo.join("locks").join(f);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no lock taken");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a storage operator sees of a running backup's lock: its kind in
/// the name and random hex, and a body that names neither the host, nor
/// the program, nor the pid, nor the boot. With the id key, it says all.
#[test]
fn a_lock_file_reveals_neither_host_nor_program_nor_pid() {
    let (sb, _) = setup();
    let mut cmd = sb.command("bk-seal");
    cmd.args(sb.seal_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let path = first_lock(&sb);
    let bytes = std::fs::read(&path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let pid = child.id();
    drop(child.stdin.take());
    assert_ok(&child.wait_with_output().unwrap(), "bk-seal held open");

    let hex = name
        .strip_prefix("shared-")
        .and_then(|n| n.strip_suffix(".lock"))
        .unwrap_or_else(|| panic!("lock file name {name}"));
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    let host = bk::sys::host::this_host();
    let (boot, _) = boot_and_pid_ns();
    let text = String::from_utf8_lossy(&bytes);
    for (what, secret) in [
        ("host name", host.as_str()),
        ("program", "bk-seal"),
        ("pid", &pid.to_string()),
        ("boot id", &boot),
        ("JSON", "\"kind\""),
    ] {
        assert!(!text.contains(secret), "the lock file shows its {what}");
    }
    let info: bk::repo::lock::LockInfo = serde_json::from_slice(
        &repo_lock_key(&sb)
            .open(&name, &bytes)
            .expect("the lock opens with the repository's lock key"),
    )
    .unwrap();
    assert_eq!(
        (info.program.as_str(), info.host.as_str(), info.pid),
        ("bk-seal", host.as_str(), pid)
    );
}

/// Plants a lock of `kind` whose body does not open with the sandbox's
/// lock key, modified at `when`.
fn plant_unreadable(sb: &Sandbox, kind: &str, body: &Body, when: SystemTime) -> std::path::PathBuf {
    let info = lock_info(kind, "bk-seal", "far-away-host", 4711, when);
    let kind = info.kind;
    plant_lock_file(
        sb,
        kind,
        |name| match body {
            Body::Garbage => b"forged by whoever can write to the storage".to_vec(),
            Body::OtherRepository => {
                let key = bk::repo::authkey::AuthKeys::derive(
                    &bk::repo::idkey::IdKey::generate(),
                    &bk::repo::Repo::new_id(),
                )
                .lock_key();
                bk::repo::lock::seal_lock(&key, name, &info)
            }
        },
        when,
    )
}

/// A lock body that does not open with the repository's lock key.
enum Body {
    /// Bytes that were never sealed (forged, or damaged).
    Garbage,
    /// A lock as bk writes it, under another repository's key.
    OtherRepository,
}

const UNREADABLE: &str =
    "a lock of another holder (its details cannot be read with this repository's id key)";

/// A lock whose body does not open is a lock of the kind its name says:
/// a shared one blocks a prune (exit 11, nothing deleted) and lets a
/// backup run, an exclusive one blocks a backup, and unlock keeps both,
/// while their files are fresh. Once a file has not been modified for 30
/// minutes it is stale: prune goes ahead with a warning, and unlock
/// removes it.
fn unreadable_lock_blocks_until_its_mtime_is_old(body: Body) {
    let (sb, hashed) = setup();
    let _sealed = sealed_not_indexed(&sb);
    let stored = objects(&sb);
    let lock = plant_unreadable(&sb, "shared", &body, SystemTime::now());
    let out = prune(&sb);
    assert_code(&out, 11, "prune beside an unreadable shared lock");
    assert!(
        stderr(&out).contains(&format!("is locked by {UNREADABLE}, shared lock")),
        "{}",
        describe(&out)
    );
    assert_eq!(objects(&sb), stored, "prune deleted objects");
    assert_ok(
        &seal_with(&sb, &hashed, &[]),
        "bk-seal beside an unreadable shared lock",
    );
    let out = unlock(&sb, &[]);
    assert_ok(&out, "bk-index unlock");
    assert!(out.stdout.is_empty(), "unlock removed a fresh lock");
    let err = stderr(&out);
    assert!(
        err.contains("kept live lock")
            && err.contains(lock.file_name().unwrap().to_str().unwrap())
            && err.contains(UNREADABLE),
        "{err}"
    );

    let exclusive = plant_unreadable(&sb, "exclusive", &body, SystemTime::now());
    let out = seal_with(&sb, &hashed, &[]);
    assert_code(&out, 11, "bk-seal beside an unreadable exclusive lock");
    assert!(
        stderr(&out).contains(&format!("is locked by {UNREADABLE}, exclusive lock")),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(&exclusive).unwrap();

    // 29 minutes without a write: still live.
    let ns = |ago: u64| {
        (SystemTime::now() - Duration::from_secs(ago))
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    };
    set_mtime_ns(&lock, ns(29 * 60));
    assert_code(&prune(&sb), 11, "prune beside a lock written 29m ago");
    assert_eq!(objects(&sb), stored, "prune deleted objects");

    // 31 minutes: stale.
    set_mtime_ns(&lock, ns(31 * 60));
    let out = prune(&sb);
    assert_ok(&out, "prune beside a lock written 31m ago");
    let err = stderr(&out);
    assert!(
        err.contains("ignoring stale lock")
            && err.contains(UNREADABLE)
            && err.contains("not refreshed for 31m (by its file's modification time)"),
        "{err}"
    );
    assert!(objects(&sb).len() < stored.len(), "prune deleted nothing");
    let out = unlock(&sb, &[]);
    assert_ok(&out, "bk-index unlock of the stale lock");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(lock.file_name().unwrap().to_str().unwrap())
            && text.contains(UNREADABLE)
            && text.contains("stale: not refreshed for 31m"),
        "{text}"
    );
    assert!(lock_files(&sb.repo).is_empty());
}

#[test]
fn a_forged_lock_blocks_prune_until_its_mtime_is_old() {
    unreadable_lock_blocks_until_its_mtime_is_old(Body::Garbage);
}

#[test]
fn a_lock_of_another_repository_key_blocks_prune_until_its_mtime_is_old() {
    unreadable_lock_blocks_until_its_mtime_is_old(Body::OtherRepository);
}

/// `bk-index unlock` works without the id key: it cannot read who holds a
/// lock, so it removes only locks whose files have not been modified for
/// 30 minutes (a dead process's fresh lock stays until then), or every
/// lock with --all. With the id key it names the holders.
#[test]
fn unlock_without_the_id_key_goes_by_modification_times() {
    let (sb, _) = setup();
    let host = bk::sys::host::this_host();
    let now = SystemTime::now();
    let old = now - Duration::from_secs(31 * 60);
    let dead = write_lock(&sb, "exclusive", "bk-index prune", &host, dead_pid(), now);
    let silent = write_lock(&sb, "shared", "bk-seal", "far-away-host", 7, old);
    let live = write_lock(&sb, "shared", "bk-seal", "far-away-host", 8, now);
    let without_key = |extra: &[&str]| {
        let mut a = vec!["--id-key", "/nonexistent/id.key"];
        a.extend(extra);
        unlock(&sb, &a)
    };
    let out = without_key(&[]);
    assert_ok(&out, "bk-index unlock without the id key");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = stderr(&out);
    assert!(
        text.lines().count() == 1
            && text.contains(silent.file_name().unwrap().to_str().unwrap())
            && text.contains("without this repository's id key")
            && text.contains("stale: not refreshed for 31m"),
        "{text}"
    );
    assert!(
        err.contains("no id key for repository")
            && err.contains("removed 1 locks, 2 live locks kept"),
        "{err}"
    );
    assert!(dead.exists() && live.exists() && !silent.exists());

    // With the id key: the dead process's lock is known stale, by name.
    let out = unlock(&sb, &[]);
    assert_ok(&out, "bk-index unlock with the id key");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("bk-index prune (exclusive lock) on host {host}"))
            && text.contains("is not running on this host"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("kept live lock")
            && stderr(&out).contains("bk-seal (shared lock) on host far-away-host pid 8"),
        "{}",
        describe(&out)
    );
    assert!(!dead.exists() && live.exists());

    let out = without_key(&["--all"]);
    assert_ok(&out, "bk-index unlock --all without the id key");
    assert!(String::from_utf8_lossy(&out.stdout).contains("live, removed with --all"));
    assert!(lock_files(&sb.repo).is_empty());
}
