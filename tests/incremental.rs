//! Incremental runs: `bk-hash --reuse` takes the hash and objects of
//! unchanged files from the local copy of the latest snapshot (or a saved
//! `bk-index show`), so a re-run of an unchanged tree reads no content and
//! needs no secret key; changed, renamed and deleted files are noticed, and
//! reused objects that are gone from the repository are stored again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The unprivileged user the no-change re-run runs as (`nobody`).
const NOBODY: u32 = 65534;

/// Makes `dirs` directories (0755) holding `per_dir` files each (0600) of
/// 1–200 pseudo-random bytes; returns the file count.
fn make_small_files(root: &Path, dirs: usize, per_dir: usize, seed: u64) -> usize {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let sizes = pseudo_random(seed, dirs * per_dir);
    let data = pseudo_random(seed ^ 0x5eed, dirs * per_dir * 200 + 8);
    let mut n = 0;
    for d in 0..dirs {
        let mut dir = root.join(format!("d{d:03}"));
        if d.is_multiple_of(3) {
            dir.push("deep");
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .unwrap();
        for f in 0..per_dir {
            let size = 1 + usize::from(sizes[n]) % 200;
            let p = dir.join(format!("f{f:04}.dat"));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
            file.write_all(&data[n * 200..n * 200 + size]).unwrap();
            n += 1;
        }
    }
    for e in entries_under(root) {
        let p = root.join(e);
        if p.is_dir() {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    n
}

fn file_records(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["kind"] == "file").collect()
}

/// Records of a snapshot keyed by path.
fn snapshot_by_path(sb: &Sandbox, snapshot: &str) -> BTreeMap<Vec<u8>, Value> {
    let out = sb.show(snapshot, &[]);
    assert_ok(&out, &format!("bk-index show {snapshot}"));
    by_path(&parse_records(&out.stdout))
}

fn lines_matching(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

fn chown_nobody(paths: &[&Path]) {
    let mut cmd = std::process::Command::new("chown");
    cmd.arg("-R").arg(format!("{NOBODY}:{NOBODY}"));
    cmd.args(paths);
    let out = run_command(cmd, b"", DEFAULT_TIMEOUT);
    assert_ok(&out, "chown -R nobody");
}

#[test]
fn unchanged_rerun_reads_no_content_and_needs_no_secret_key() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!(
            "SKIPPED unchanged_rerun_reads_no_content_and_needs_no_secret_key: it must run as \
             root (it makes the files unreadable to the user that re-runs the backup); CI runs \
             as root"
        );
        return;
    }
    let started = std::time::Instant::now();
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let mut n_files = make_small_files(&tree, 100, 200, 11);
    assert_eq!(n_files, 20_000);
    // A few more that a reuse could trip on: empty files, a file big
    // enough to be chunked, names whose byte order differs from their
    // component order, a non-UTF-8 name.
    for (rel, len) in [
        ("x/empty", 0),
        ("x-y/empty too", 0),
        ("x.y/chunked.bin", 9 << 20),
        ("x y/é.txt", 10),
        ("x0/a", 3),
    ] {
        write_pseudo_random_file(&tree.join(rel), len, len);
    }
    write_file(&tree.join(raw(b"x/caf\xe9")), b"latin-1", 0o600);
    for e in entries_under(&tree) {
        let p = tree.join(e);
        let mode = if p.is_dir() { 0o755 } else { 0o600 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    n_files += 6;

    // First backup, as root.
    eprintln!("tree made: {:.1} s", started.elapsed().as_secs_f64());
    let first = sb.backup(&tree);
    eprintln!(
        "first backup done: {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        summary_line(&first.seal_stderr, "bk-seal:")
    );
    let chunked = find_record(&first.records(), b"x.y/chunked.bin").clone();
    assert!(
        object_ids(&chunked).len() > 1,
        "the 9 MiB file should be chunked: {chunked}"
    );
    let objects_before = sb.pack_files();
    let blobs_before = sb.content_blob_ids().len();
    assert!(
        blobs_before > 19_000,
        "first backup stored {blobs_before} objects for 20,000 small files",
    );

    // Hand the repository, the XDG directories (id key, snapshot cache)
    // to nobody; the tree stays root's, its files 0600.
    let id_key = sb
        .data_home
        .join("bk")
        .join(format!("{}.idkey", sb.repo_id()));
    assert!(
        id_key.is_file(),
        "local id key {} missing",
        id_key.display()
    );
    chown_nobody(&[&sb.repo, &sb.home, &id_key]);
    let sec = fs::metadata(&sb.sec_key).unwrap();
    assert_eq!(
        (sec.uid(), sec.mode() & 0o777),
        (0, 0o600),
        "the secret key file must stay unreadable to nobody"
    );

    let scan = sb.run_as(NOBODY, NOBODY, "bk-scan", &args![&tree], b"");
    assert_ok(&scan, "bk-scan as nobody");
    assert_eq!(
        file_records(&parse_records(&scan.stdout)).len(),
        n_files,
        "bk-scan as nobody"
    );

    // The premise: nobody cannot read these files, so a run that tried to
    // read any of them would fail.
    let unreadable = sb.run_as(NOBODY, NOBODY, "bk-hash", &[], &scan.stdout);
    assert_code(&unreadable, 24, "bk-hash without --reuse as nobody");
    assert_eq!(
        lines_matching(&stderr(&unreadable), "permission denied"),
        n_files,
        "bk-hash without --reuse as nobody should fail on every file: {}",
        summary_line(&stderr(&unreadable), "bk-hash:")
    );

    // The re-run, entirely as nobody, with no secret key anywhere.
    let hashed = sb.run_as(
        NOBODY,
        NOBODY,
        "bk-hash",
        &sb.reuse_auto_args(),
        &scan.stdout,
    );
    assert_ok(&hashed, "bk-hash --reuse auto as nobody");
    let hash_err = stderr(&hashed);
    assert_eq!(
        summary_number(&hash_err, "bk-hash:", "files seen"),
        n_files as u64
    );
    assert_eq!(
        summary_number(&hash_err, "bk-hash:", "reused unread"),
        n_files as u64
    );
    assert_eq!(summary_number(&hash_err, "bk-hash:", "hashed"), 0);
    assert_eq!(summary_number(&hash_err, "bk-hash:", "bytes read"), 0);

    let sealed = sb.run_as(NOBODY, NOBODY, "bk-seal", &sb.seal_args(), &hashed.stdout);
    assert_ok(&sealed, "bk-seal as nobody");
    let seal_err = stderr(&sealed);
    assert_eq!(
        summary_number(&seal_err, "bk-seal:", "reused"),
        n_files as u64
    );
    assert_eq!(
        summary_number(&seal_err, "bk-seal:", "new objects added"),
        0
    );
    assert_eq!(summary_number(&seal_err, "bk-seal:", "bytes read"), 0);

    let mut a = args!["write"];
    a.extend(sb.seal_args());
    let written = sb.run_as(NOBODY, NOBODY, "bk-index", &a, &sealed.stdout);
    assert_ok(&written, "bk-index write as nobody");
    let second = String::from_utf8(written.stdout).unwrap().trim().to_owned();
    eprintln!(
        "re-run as nobody done: {:.1} s ({}; {})",
        started.elapsed().as_secs_f64(),
        summary_line(&hash_err, "bk-hash:"),
        summary_line(&seal_err, "bk-seal:")
    );

    assert_eq!(
        sb.pack_files(),
        objects_before,
        "the no-change re-run changed the packs (it adds only its root)"
    );
    assert_eq!(
        sb.snapshot_names(),
        BTreeSet::from([first.snapshot.clone(), second.clone()]),
        "snapshots after the re-run"
    );
    let old = snapshot_by_path(&sb, &first.snapshot);
    let new = snapshot_by_path(&sb, &second);
    assert_eq!(old.len(), new.len(), "record count of the two snapshots");
    assert_eq!(
        old.keys().collect::<Vec<_>>(),
        new.keys().collect::<Vec<_>>(),
        "paths of the two snapshots"
    );
    let mut differ = Vec::new();
    for (p, o) in &old {
        let n = &new[p];
        if o != n {
            differ.push(format!(
                "{}:\n  old {o}\n  new {n}",
                String::from_utf8_lossy(p)
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} records differ between the two snapshots, e.g. {}",
        differ.len(),
        differ
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        file_records(&new.values().cloned().collect::<Vec<_>>()).len(),
        n_files
    );
}

#[test]
fn snapshot_cache_is_private_and_holds_the_snapshot() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    make_small_files(&tree, 4, 10, 5);
    sb.backup(&tree);
    let dir = sb.snapshot_cache_dir();
    let meta = fs::metadata(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert_eq!(meta.mode() & 0o777, 0o700, "mode of {}", dir.display());
    let files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one cache file for one root: {files:?}");
    let f = &files[0];
    assert!(
        f.extension().is_some_and(|e| e == "ndjson"),
        "cache file name {}",
        f.display()
    );
    assert_eq!(
        fs::metadata(f).unwrap().mode() & 0o777,
        0o600,
        "mode of {}",
        f.display()
    );
    assert_eq!(
        without_mac_line(&fs::read(f).unwrap(), "cache"),
        sb.show_latest(),
        "the cache file should hold exactly the latest snapshot's records, then its MAC"
    );
}

#[test]
fn reuse_from_a_saved_record_file_reads_nothing() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let n = make_small_files(&tree, 10, 30, 21);
    sb.backup(&tree);
    let saved = sb.path("previous.ndjson");
    fs::write(&saved, sb.show_latest()).unwrap();
    // Only the saved file may serve: drop the local snapshot cache.
    fs::remove_dir_all(sb.snapshot_cache_dir()).unwrap();
    let objects_before = sb.pack_files();

    let run = sb.backup_with(&tree, &args!["--reuse", &saved], &[]);
    assert_eq!(
        run.hash_count("files seen"),
        n as u64,
        "{}",
        run.hash_stderr
    );
    assert_eq!(
        run.hash_count("reused unread"),
        n as u64,
        "{}",
        run.hash_stderr
    );
    assert_eq!(run.hash_count("hashed"), 0, "{}", run.hash_stderr);
    assert_eq!(run.hash_count("bytes read"), 0, "{}", run.hash_stderr);
    assert_eq!(run.seal_count("reused"), n as u64, "{}", run.seal_stderr);
    assert_eq!(run.seal_count("new objects added"), 0);
    assert_eq!(sb.pack_files(), objects_before, "no pack added or changed");

    // The reused hashes are the files' real hashes.
    let old = by_path(&parse_records(&fs::read(&saved).unwrap()));
    for rec in file_records(&run.backup.records()) {
        let p = rec_path(rec);
        assert_eq!(rec["sha256"], old[&p]["sha256"]);
        assert_eq!(rec["objects"], old[&p]["objects"]);
        let data = fs::read(tree.join(raw(&p))).unwrap();
        assert_eq!(rec["sha256"].as_str(), Some(sha256_hex(&data).as_str()));
    }

    // Without a cache, `--reuse auto` reuses nothing and hashes everything.
    fs::remove_dir_all(sb.snapshot_cache_dir()).unwrap();
    let run = sb.backup_with(&tree, &sb.reuse_auto_args(), &[]);
    assert_eq!(run.hash_count("reused unread"), 0, "{}", run.hash_stderr);
    assert_eq!(run.hash_count("hashed"), n as u64, "{}", run.hash_stderr);
}

#[test]
fn changed_renamed_and_deleted_files_are_noticed() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    let n = 40;
    for i in 0..n {
        write_file(
            &tree.join(format!("sub/f{i:02}.bin")),
            &pseudo_random(100 + i, 1000 + i as usize),
            0o644,
        );
    }
    let changed = tree.join("sub/f07.bin");
    let renamed_from = tree.join("sub/f13.bin");
    let renamed_to = tree.join("moved-f13.bin");
    let deleted = tree.join("sub/f21.bin");
    let first = sb.backup(&tree);
    let first_recs = first.records();
    let objects_before = sb.content_blob_ids();

    // Rewrite f07 with other bytes of the same size and put its mtime
    // back: only the ctime tells the change.
    let old_meta = fs::metadata(&changed).unwrap();
    let old_mtime = mtime_ns(&changed);
    let new_content = pseudo_random(999, old_meta.len() as usize);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&changed, &new_content).unwrap();
    set_mtime_ns(&changed, old_mtime);
    let new_meta = fs::metadata(&changed).unwrap();
    assert_eq!(
        (new_meta.len(), new_meta.ino(), mtime_ns(&changed)),
        (old_meta.len(), old_meta.ino(), old_mtime),
        "test premise: same size, inode and mtime"
    );
    assert_ne!(
        (new_meta.ctime(), new_meta.ctime_nsec()),
        (old_meta.ctime(), old_meta.ctime_nsec()),
        "test premise: the ctime moved"
    );
    fs::rename(&renamed_from, &renamed_to).unwrap();
    fs::remove_file(&deleted).unwrap();

    let run = sb.backup_with(&tree, &sb.reuse_auto_args(), &[]);
    assert_eq!(run.hash_count("files seen"), n - 1, "{}", run.hash_stderr);
    assert_eq!(
        run.hash_count("reused unread"),
        n - 3,
        "{}",
        run.hash_stderr
    );
    assert_eq!(
        run.hash_count("hashed"),
        2,
        "only the changed and the renamed file should be read: {}",
        run.hash_stderr
    );
    assert_eq!(
        run.hash_count("bytes read"),
        new_meta.len() + fs::metadata(&renamed_to).unwrap().len(),
        "{}",
        run.hash_stderr
    );
    assert_eq!(
        run.seal_count("new objects added"),
        1,
        "{}",
        run.seal_stderr
    );

    let snap = by_path(&parse_records(&sb.show_latest()));
    let rec = &snap[b"sub/f07.bin".as_slice()];
    assert_eq!(
        rec["sha256"].as_str(),
        Some(sha256_hex(&new_content).as_str()),
        "the rewritten file (same size and mtime) must get its new hash"
    );
    let new_objects: BTreeSet<String> = sb
        .content_blob_ids()
        .difference(&objects_before)
        .cloned()
        .collect();
    assert_eq!(
        new_objects,
        object_ids(rec).into_iter().collect(),
        "the only new object is the rewritten file's"
    );
    let out = sb.open_object(&object_ids(rec)[0]);
    assert_ok(&out, "bk-open --object of the rewritten file");
    assert_eq!(out.stdout, new_content);

    let moved = &snap[b"moved-f13.bin".as_slice()];
    let was = find_record(&first_recs, b"sub/f13.bin");
    assert_eq!(moved["sha256"], was["sha256"]);
    assert_eq!(
        object_ids(moved),
        object_ids(was),
        "renamed file is deduplicated"
    );
    assert!(!snap.contains_key(b"sub/f13.bin".as_slice()));
    assert!(
        !snap.contains_key(b"sub/f21.bin".as_slice()),
        "the deleted file is still in the new snapshot"
    );
    assert_eq!(
        snap.values().filter(|r| r["kind"] == "file").count() as u64,
        n - 1
    );

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&sb.show_latest(), &dest);
    assert_ok(&out, "bk-open --to");
    assert_same_tree(&read_tree(&tree), &read_tree(&restored(&dest, &tree)));
}

#[test]
fn reuse_is_refused_when_an_object_is_gone() {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    let n = make_small_files(&tree, 5, 20, 31) as u64;
    // One file big enough to be unique for sure.
    write_file(&tree.join("unique.bin"), &pseudo_random(4242, 5000), 0o644);
    let first = sb.backup(&tree);
    let rec = find_record(&first.records(), b"unique.bin").clone();
    let ids = object_ids(&rec);
    assert_eq!(ids.len(), 1);
    let blobs_before = sb.content_blob_ids();
    sb.drop_blob(&ids[0]);

    // The premise: the first snapshot now has a fault.
    let mut verify_args = args!["--read-data"];
    verify_args.extend(sb.key_args());
    let out = sb.verify(&sb.show_latest(), &verify_args);
    assert_code(&out, 1, "bk-verify of a snapshot with a deleted object");

    let run = sb.backup_with(&tree, &sb.reuse_auto_args(), &[]);
    assert_eq!(run.seal_count("reused"), n, "{}", run.seal_stderr);
    assert_eq!(
        run.seal_count("new objects added"),
        1,
        "bk-seal must store the missing object again: {}",
        run.seal_stderr
    );
    assert!(
        sb.blob_ids().contains(&ids[0]),
        "{} was not stored again",
        ids[0]
    );
    assert_eq!(sb.content_blob_ids(), blobs_before);
    assert!(sb.blobs().values().all(|places| places.len() == 1));
    assert!(leftover_tmp_packs(&sb.repo).is_empty());
    let rec2 = find_record(&run.backup.records(), b"unique.bin").clone();
    assert_eq!(object_ids(&rec2), ids);

    let out = sb.verify(&sb.show_latest(), &verify_args);
    assert_ok(&out, "bk-verify --read-data of the re-run's snapshot");
    assert!(
        stderr(&out).contains(": 0 problems"),
        "bk-verify: {}",
        stderr(&out)
    );
    let out = sb.open_object(&ids[0]);
    assert_ok(&out, "bk-open --object of the re-stored object");
    assert_eq!(out.stdout, pseudo_random(4242, 5000));
}
