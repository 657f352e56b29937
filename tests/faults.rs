//! Crashes and faults: bk-seal killed with SIGKILL mid-run, a full disk
//! under the repository and under a restore, files that vanish, change or
//! cannot be read during a backup.
//!
//! The full-disk tests mount a small tmpfs and the unreadable-file test
//! drops to nobody with setpriv: they need root (CI runs as root).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bk::record::Kind;
use common::stepwise::*;

/// Inode numbers of every pack under its real name, by its path.
fn pack_inodes(sb: &Sandbox) -> BTreeMap<String, u64> {
    sb.pack_files()
        .into_keys()
        .map(|rel| {
            let ino = fs::metadata(sb.repo.join(&rel)).unwrap().ino();
            (rel, ino)
        })
        .collect()
}

/// Every blob under a real name decrypts to its content (`bk-open
/// --object` checks it against its id); every pack under a real name has
/// a header (reading the headers panics otherwise). Returns the blob ids.
fn every_blob_opens(sb: &Sandbox) -> BTreeSet<String> {
    let blobs = sb.blobs();
    for (id, places) in &blobs {
        assert_eq!(places.len(), 1, "blob {id} stored twice: {places:?}");
        let out = sb.open_object(id);
        assert_eq!(code(&out), OK, "blob {id}: {}", stderr(&out));
    }
    blobs.into_keys().collect()
}

/// `bk-verify --orphans`: every blob is a record's object or a piece of
/// some snapshot's catalogue.
fn no_orphans(sb: &Sandbox) {
    let out = run(
        sb.cmd("bk-verify")
            .args(["--orphans", "--orphans-fail", "--repo"])
            .arg(&sb.repo)
            .arg("--key")
            .arg(&keys().secret),
        b"",
    );
    assert_eq!(
        code(&out),
        OK,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// Every object id the records name.
fn named_objects(recs: &[u8]) -> BTreeSet<String> {
    records(recs)
        .iter()
        .flat_map(|r| r.objects.iter().flatten().map(|o| o.id.clone()))
        .collect()
}

/// What bk-index write says when it refuses a stream cut short.
const REFUSED: &str = "the record stream ended before its end record: a stage before bk-index write stopped early (killed, disk full, lost server…); no snapshot written";

/// What a refused run must leave as it was: the snapshot names, what
/// `latest` shows, and the local reuse cache, file by file.
fn committed(sb: &Sandbox) -> (BTreeSet<String>, Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(sb.repo.join("bk-repo.json")).unwrap()).unwrap();
    let cache = sb
        .home
        .join("cache/bk")
        .join(config["id"].as_str().unwrap())
        .join("latest");
    let mut files = BTreeMap::new();
    walk(&cache, &mut |p| {
        if p.is_file() {
            files.insert(p.display().to_string(), fs::read(p).unwrap());
        }
    });
    assert!(!files.is_empty(), "no reuse cache in {}", cache.display());
    let names = fs::read_dir(sb.repo.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    (names, sb.show_latest(), files)
}

/// Every snapshot in the repository verifies with `--read-data`.
fn every_snapshot_verifies(sb: &Sandbox) {
    let names: Vec<String> = fs::read_dir(sb.repo.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    for name in names {
        let shown = run(
            sb.cmd("bk-index")
                .args(["show", &name, "--repo"])
                .arg(&sb.repo)
                .arg("--key")
                .arg(&keys().secret),
            b"",
        );
        ok(&shown, &format!("bk-index show {name}"));
        let v = sb.verify(&shown.stdout);
        assert_eq!(
            code(&v),
            OK,
            "snapshot {name} does not verify: {}{}",
            String::from_utf8_lossy(&v.stdout),
            stderr(&v)
        );
    }
}

/// Restores the latest snapshot and checks every file of `src` that the
/// snapshot lists has its exact content.
fn restore_matches(sb: &Sandbox, src: &Path, dest: &Path) -> usize {
    let shown = sb.show_latest();
    let out = sb.restore(&shown, dest);
    assert_eq!(code(&out), OK, "restore: {}", stderr(&out));
    let mut n = 0;
    let back = restored(dest, src);
    for rec in records(&shown).iter().filter(|r| r.kind == Kind::File) {
        let rel = rec.path_os().unwrap();
        assert_eq!(
            fs::read(back.join(&rel)).unwrap(),
            fs::read(src.join(&rel)).unwrap(),
            "{rel:?}"
        );
        n += 1;
    }
    n
}

#[test]
fn seal_killed_mid_run_leaves_no_partial_object_and_resumes() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    // Enough small files for several durability batches.
    for i in 0..6000u64 {
        let d = src.join(format!("d{:02}", i % 50));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i:05}")), noise(i, 1500)).unwrap();
    }
    // An earlier, complete snapshot of part of the tree.
    let first = src.join("d00");
    sb.backup(&first);
    let committed_before = committed(&sb);

    let scanned = sb.scan(&src);
    ok(&scanned, "bk-scan");
    let hashed = sb.hash(&scanned.stdout);
    ok(&hashed, "bk-hash");
    let input = sb.path("hashed.ndjson");
    fs::write(&input, &hashed.stdout).unwrap();
    let before = pack_inodes(&sb);
    let blobs_before = sb.blobs();

    // bk-seal | bk-index write, and SIGKILL for bk-seal once it has
    // committed packs of this run (small ones: about 40 files each).
    let mut seal = sb
        .seal_cmd()
        .args(["-j", "2", "--pack-size", "64K"])
        .stdin(fs::File::open(&input).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seal_out = seal.stdout.take().unwrap();
    let index = sb
        .cmd("bk-index")
        .args(["write", "--repo"])
        .arg(&sb.repo)
        .arg("-r")
        .arg(&keys().public)
        .stdin(seal_out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while sb.pack_files().len() < before.len() + 3 {
        assert!(
            seal.try_wait().unwrap().is_none(),
            "bk-seal finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no pack committed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    seal.kill().unwrap();
    let status = seal.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let index = index.wait_with_output().unwrap();
    let after_crash = pack_inodes(&sb);
    // Every pack under a real name is whole and every blob in it sound.
    let blobs_after_crash = every_blob_opens(&sb);
    let total = records(&hashed.stdout)
        .iter()
        .filter(|r| r.kind == Kind::File)
        .count();
    let stored_by_crash = blobs_after_crash.len() - blobs_before.len();
    assert!(
        stored_by_crash > 0,
        "no blob of the killed run was committed"
    );
    assert!(
        blobs_after_crash.len() < total,
        "killed too late: {} of {total} objects",
        blobs_after_crash.len()
    );
    eprintln!(
        "killed bk-seal with {stored_by_crash} new of {total} objects stored; bk-index write exited {:?}: {}",
        index.status.code(),
        stderr(&index).trim()
    );
    // bk-index write saw bk-seal's stream end without its end record: no
    // snapshot, `latest` and the reuse cache as they were.
    assert_eq!(code(&index), 3, "bk-index write: {}", stderr(&index));
    assert!(stderr(&index).contains(REFUSED), "{}", stderr(&index));
    assert!(index.stdout.is_empty());
    assert!(
        committed(&sb) == committed_before,
        "a killed run changed what is committed"
    );

    // What is indexed (the earlier snapshot) verifies, every object byte
    // included.
    every_snapshot_verifies(&sb);

    // A rerun stores only what is missing: packs already there are kept
    // (same inode), every blob is stored once, and every blob now is an
    // object the records name or a piece of a snapshot's catalogue.
    let resumed = sb.seal(&hashed.stdout);
    ok(&resumed, "bk-seal rerun");
    ok(&sb.index_write(&resumed.stdout), "bk-index write");
    let after = pack_inodes(&sb);
    for (rel, ino) in &after_crash {
        assert_eq!(after.get(rel), Some(ino), "pack {rel} was rewritten");
    }
    let named = named_objects(&resumed.stdout);
    let stored = every_blob_opens(&sb);
    assert!(named.is_subset(&stored), "an object named is not stored");
    no_orphans(&sb);
    let missing = total - blobs_after_crash.intersection(&named).count();
    let summary = stderr(&resumed);
    assert!(
        summary.contains(&format!("{missing} new objects")),
        "rerun must add exactly the {missing} missing objects: {summary}"
    );
    every_snapshot_verifies(&sb);
    let leftovers = sb.repo_temp_files();
    eprintln!(
        "temporary files left by the killed run: {}",
        leftovers.len()
    );
    let dest = sb.path("restored");
    assert_eq!(restore_matches(&sb, &src, &dest), total);
}

#[test]
fn full_disk_under_the_repository_is_a_clear_error_and_nothing_corrupt() {
    if !have_root("full_disk_under_the_repository_is_a_clear_error_and_nothing_corrupt") {
        return;
    }
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..24u64 {
        fs::write(src.join(format!("big{i:02}")), noise(100 + i, 512 << 10)).unwrap();
    }
    for i in 0..20u64 {
        fs::write(src.join(format!("small{i:02}")), noise(200 + i, 3000)).unwrap();
    }
    let _mount = Mount::tmpfs(&sb.repo, "8m");
    // An earlier, complete snapshot of two small files.
    let first = sb.path("first");
    fs::create_dir(&first).unwrap();
    fs::copy(src.join("small00"), first.join("small00")).unwrap();
    fs::copy(src.join("small01"), first.join("small01")).unwrap();
    sb.backup(&first);
    let before = committed(&sb);
    let scanned = sb.scan(&src);
    let hashed = sb.hash(&scanned.stdout);
    ok(&hashed, "bk-hash");
    let sealed = sb.seal(&hashed.stdout);
    let err = stderr(&sealed);
    assert_eq!(code(&sealed), IO, "bk-seal on a full disk: {err}");
    assert!(err.contains("no space left on device"), "{err}");
    let index = sb.index_write(&sealed.stdout);
    eprintln!(
        "bk-index write after the full disk: exit {:?} {}",
        index.status.code(),
        stderr(&index).trim()
    );
    // bk-seal's stream has no end record: nothing is committed.
    assert_eq!(code(&index), 3, "bk-index write: {}", stderr(&index));
    assert!(stderr(&index).contains(REFUSED), "{}", stderr(&index));
    assert!(
        committed(&sb) == before,
        "a failed run changed what is committed"
    );
    // No temporary file is left to fill the disk, every pack under a real
    // name is complete (the blobs of the first backup and of the packs
    // committed before the disk filled), and any snapshot verifies.
    assert_eq!(sb.repo_temp_files(), Vec::<std::path::PathBuf>::new());
    assert!(every_blob_opens(&sb).len() >= 3);
    every_snapshot_verifies(&sb);

    // With room again, the same run completes.
    let st = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&sb.repo)
        .status()
        .unwrap();
    assert!(st.success());
    let sealed = sb.seal(&hashed.stdout);
    ok(&sealed, "bk-seal with room");
    ok(&sb.index_write(&sealed.stdout), "bk-index write");
    assert_eq!(restore_matches(&sb, &src, &sb.path("restored")), 44);
}

/// A restore of `files` (name, content), backed up first, onto a 4 MiB
/// tmpfs: it must stop with exit 6 and "no space left on device".
struct FullDiskRestore {
    _mount: Mount,
    /// Kept for its directory (dropped after the unmount).
    _sb: Sandbox,
    src: std::path::PathBuf,
    dest: std::path::PathBuf,
    err: String,
}

fn restore_onto_full_disk(files: &[(String, Vec<u8>)]) -> FullDiskRestore {
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    for (name, data) in files {
        fs::write(src.join(name), data).unwrap();
    }
    sb.backup(&src);
    let dest = sb.path("dest");
    let mount = Mount::tmpfs(&dest, "4m");
    let out = sb.restore(&sb.show_latest(), &dest);
    let err = stderr(&out);
    assert_eq!(code(&out), IO, "{err}");
    assert!(err.contains("no space left on device"), "{err}");
    FullDiskRestore {
        _mount: mount,
        _sb: sb,
        src,
        dest,
        err,
    }
}

#[test]
fn full_disk_under_a_restore_stops_with_a_clear_error() {
    if !have_root("full_disk_under_a_restore_stops_with_a_clear_error") {
        return;
    }
    let files: Vec<_> = (0..12u64)
        .map(|i| (format!("f{i:02}"), noise(300 + i, 1 << 20)))
        .collect();
    let FullDiskRestore { src, dest, err, .. } = &restore_onto_full_disk(&files);
    assert!(err.contains("stopping"), "{err}");
    let mut complete = 0;
    walk(dest, &mut |p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".bk-restore"),
            "temporary file left: {name}"
        );
        if p.is_file() {
            assert_eq!(
                fs::read(p).unwrap(),
                fs::read(src.join(&name)).unwrap(),
                "{name}"
            );
            complete += 1;
        }
    });
    assert!(complete < 12, "the disk was not full after all");
}

/// A large file is restored with direct writes where the file system takes
/// them; a full disk must still be the same clear error, leaving nothing.
#[test]
fn full_disk_under_a_large_file_restore_stops_with_a_clear_error() {
    if !have_root("full_disk_under_a_large_file_restore_stops_with_a_clear_error") {
        return;
    }
    let restore = restore_onto_full_disk(&[("big".into(), noise(400, 6 << 20))]);
    // Only the directories of the root's place: no file, whole or partial.
    let mut left = Vec::new();
    walk(&restore.dest, &mut |p| {
        if !p.is_dir() {
            left.push(p.to_path_buf())
        }
    });
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn vanished_and_changed_files_are_reported_and_the_rest_is_good() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    for name in [
        "keep1",
        "keep2",
        "gone",
        "grows",
        "relinked",
        "late-change",
        "late-gone",
    ] {
        fs::write(src.join(name), noise(name.len() as u64, 20_000)).unwrap();
    }
    fs::create_dir(src.join("sub")).unwrap();
    fs::write(src.join("sub/keep3"), b"three").unwrap();
    let scanned = sb.scan(&src);
    ok(&scanned, "bk-scan");

    // Between scan and hash: one vanishes, one grows, one becomes a symlink.
    fs::remove_file(src.join("gone")).unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(src.join("grows"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"more").unwrap();
    fs::remove_file(src.join("relinked")).unwrap();
    std::os::unix::fs::symlink("keep1", src.join("relinked")).unwrap();
    let hashed = sb.hash(&scanned.stdout);
    let err = stderr(&hashed);
    assert_eq!(code(&hashed), PARTIAL, "{err}");
    assert!(err.contains("gone: vanished"), "{err}");
    assert!(err.contains("grows: changed since scan"), "{err}");
    assert!(
        err.contains("relinked: changed since scan (now a symlink)"),
        "{err}"
    );

    // Between hash and seal: same size, other bytes; and one vanishes.
    let lc = src.join("late-change");
    fs::write(&lc, noise(999, 20_000)).unwrap();
    fs::remove_file(src.join("late-gone")).unwrap();
    let sealed = sb.seal(&hashed.stdout);
    let err = stderr(&sealed);
    assert_eq!(code(&sealed), PARTIAL, "{err}");
    assert!(err.contains("late-change"), "{err}");
    assert!(err.contains("changed since it was hashed"), "{err}");
    assert!(err.contains("late-gone"), "{err}");
    ok(&sb.index_write(&sealed.stdout), "bk-index write");

    let shown = sb.show_latest();
    let files: BTreeSet<String> = records(&shown)
        .into_iter()
        .filter(|r| r.kind == Kind::File)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        files,
        ["keep1", "keep2", "sub/keep3"].map(String::from).into(),
        "only what was read intact is in the snapshot"
    );
    assert_eq!(restore_matches(&sb, &src, &sb.path("restored")), 3);
    assert_eq!(code(&sb.verify(&shown)), OK);
}

#[test]
fn file_written_while_being_read_is_not_stored() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("steady"), b"steady").unwrap();
    let busy = src.join("busy.log");
    fs::write(&busy, noise(7, 64 << 20)).unwrap();
    let scanned = sb.scan(&src);
    ok(&scanned, "bk-scan");
    // A writer rewriting bytes in place (same size) the whole time bk-hash
    // reads the file.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (Arc::clone(&stop), busy.clone());
        std::thread::spawn(move || {
            let f = fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.write_all_at(&i.to_le_bytes(), (i * 4096) % (64 << 20))
                    .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let hashed = sb.hash(&scanned.stdout);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let err = stderr(&hashed);
    assert_eq!(code(&hashed), PARTIAL, "{err}");
    assert!(err.contains("busy.log: changed since scan"), "{err}");
    let recs = records(&hashed.stdout);
    assert!(
        recs.iter().all(|r| r.path != "busy.log"),
        "busy.log was hashed"
    );
    assert!(recs
        .iter()
        .any(|r| r.path == "steady" && r.sha256.is_some()));
}

#[test]
fn unreadable_files_are_reported_and_the_run_is_partial() {
    if !have_root("unreadable_files_are_reported_and_the_run_is_partial") {
        return;
    }
    // Root reads everything, so the backup runs as nobody.
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("readable"), b"fine").unwrap();
    fs::write(src.join("private"), b"secret").unwrap();
    fs::create_dir(src.join("closed")).unwrap();
    fs::write(src.join("closed/inside"), b"hidden").unwrap();
    fs::create_dir(src.join("open")).unwrap();
    fs::write(src.join("open/also-readable"), b"also fine").unwrap();
    chown_nobody(&src);
    chown_nobody(&sb.home);
    fs::create_dir(&sb.repo).unwrap();
    chown_nobody(&sb.repo);
    for (p, mode) in [("private", 0o600), ("closed", 0o700)] {
        lchown(&src.join(p), 0, 0);
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }

    let scanned = run(sb.cmd_as_nobody("bk-scan").arg(&src), b"");
    let err = stderr(&scanned);
    assert_eq!(code(&scanned), PARTIAL, "{err}");
    assert!(err.contains("closed: permission denied"), "{err}");
    let hashed = run(&mut sb.cmd_as_nobody("bk-hash"), &scanned.stdout);
    let err = stderr(&hashed);
    assert_eq!(code(&hashed), PARTIAL, "{err}");
    assert!(err.contains("private: permission denied"), "{err}");
    let mut seal = sb.cmd_as_nobody("bk-seal");
    seal.arg("--init")
        .arg("--repo")
        .arg(&sb.repo)
        .arg("-r")
        .arg(&keys().public);
    let sealed = run(&mut seal, &hashed.stdout);
    ok(&sealed, "bk-seal as nobody");
    let mut index = sb.cmd_as_nobody("bk-index");
    index
        .args(["write", "--repo"])
        .arg(&sb.repo)
        .arg("-r")
        .arg(&keys().public);
    ok(&run(&mut index, &sealed.stdout), "bk-index write as nobody");
    let restored = sb.path("restored");
    assert_eq!(restore_matches(&sb, &src, &restored), 2);
    assert!(!restored.join("private").exists());
}

/// `bk-verify --inventory --repo R`.
fn verify_inventory(sb: &Sandbox) -> std::process::Output {
    run(
        sb.cmd("bk-verify")
            .args(["--inventory", "--repo"])
            .arg(&sb.repo),
        b"",
    )
}

/// The inventory fills its disk while bk-seal appends to it, after the
/// packs are committed: the append is whole lines or nothing, bk-seal
/// stops with exit 6 (a full local disk) naming the file, and once there
/// is room again `bk-verify --inventory` works (the packs of the lost
/// lines are only uninventoried). A torn last line left by a crash is one
/// warning naming its file, never fatal.
#[test]
fn full_disk_under_the_inventory_leaves_whole_lines_and_is_exit_6() {
    if !have_root("full_disk_under_the_inventory_leaves_whole_lines_and_is_exit_6") {
        return;
    }
    let sb = Sandbox::new();
    // An empty repository first, then a one-page file system for its
    // inventory alone: packs fit, their inventory lines (about 170 bytes
    // each, 10 KB for 60 packs of one file each) do not.
    ok(&sb.seal(b""), "bk-seal --init");
    let inventory = sb.repo.join("inventory");
    fs::create_dir(&inventory).unwrap();
    let _mount = Mount::tmpfs(&inventory, "4k");
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..60u64 {
        fs::write(src.join(format!("f{i:02}")), noise(300 + i, 70 << 10)).unwrap();
    }
    let scanned = sb.scan(&src);
    let hashed = sb.hash(&scanned.stdout);
    ok(&hashed, "bk-hash");
    let sealed = run(
        sb.seal_cmd().args(["--pack-size", "64K", "-j", "1"]),
        &hashed.stdout,
    );
    // Whole lines or nothing: no file ends inside a line.
    let mut files = 0;
    for f in fs::read_dir(&inventory).unwrap().flatten() {
        let text = fs::read(f.path()).unwrap();
        files += 1;
        assert!(
            text.is_empty() || text.ends_with(b"\n"),
            "{} ends in part of a line ({} bytes)",
            f.path().display(),
            text.len()
        );
    }
    assert!(files > 0, "bk-seal wrote no inventory file");
    let err = stderr(&sealed);
    assert_eq!(
        code(&sealed),
        IO,
        "bk-seal with a full disk under the inventory: {err}"
    );
    assert!(
        err.contains("no space left on device") && err.contains("inventory/"),
        "{err}"
    );

    // Room again: the keyless check works; the packs whose lines were cut
    // off are only warnings.
    let lines: usize = fs::read_dir(&inventory)
        .unwrap()
        .flatten()
        .map(|f| {
            let text = fs::read(f.path()).unwrap();
            text.iter().filter(|&&b| b == b'\n').count()
        })
        .sum();
    let uninventoried = sb.pack_files().len() - lines;
    assert!(uninventoried > 0, "every pack has its line");
    let summary = format!("0 problems, {uninventoried} packs not in the inventory");
    let st = Command::new("mount")
        .args(["-o", "remount,size=1m"])
        .arg(&inventory)
        .status()
        .unwrap();
    assert!(st.success());
    let v = verify_inventory(&sb);
    assert_eq!(code(&v), OK, "bk-verify --inventory: {}", stderr(&v));
    assert!(stderr(&v).contains(&summary), "{}", stderr(&v));

    // New packs are inventoried again; then a torn last line, as a crash
    // left it, in a file of its own.
    fs::write(src.join("new"), noise(999, 5000)).unwrap();
    let scanned = sb.scan(&src);
    let hashed = sb.hash(&scanned.stdout);
    ok(&sb.seal(&hashed.stdout), "bk-seal with room");
    let good = fs::read_dir(&inventory)
        .unwrap()
        .flatten()
        .map(|f| fs::read(f.path()).unwrap())
        .find(|t| !t.is_empty())
        .expect("an inventory line for the new pack");
    let mut torn = good.clone();
    torn.extend_from_slice(&good[..good.len() / 2]);
    let torn_file = inventory.join("20200101T000000.000000Z-0badf00d.ndjson");
    fs::write(&torn_file, &torn).unwrap();
    let v = verify_inventory(&sb);
    let err = stderr(&v);
    assert_eq!(
        code(&v),
        OK,
        "bk-verify --inventory beside a torn line: {err}"
    );
    let torn_name = torn_file.file_name().unwrap().to_str().unwrap();
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("torn")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains(torn_name), "{err}");
    assert!(err.contains(&summary), "{err}");
}
