//! S3 repositories (`--repo s3://BUCKET/PREFIX`), end to end against a real
//! S3 server: moto's, started on a loopback port for each test by
//! `tests/common/s3_server.py` (see tests/common/s3.rs). The test reads
//! the bucket itself with curl, independently of bk.
//!
//! Besides these, the round-trip and dedup suites run every test against
//! both backends (`backend_tests!`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Every object id the records name, with the `stored` size they give.
fn stored_sizes(records: &[Value]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        for o in r
            .get("objects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = o["id"].as_str().expect("object id").to_owned();
            let stored = o["stored"]
                .as_u64()
                .unwrap_or_else(|| panic!("object without stored size in {r}"));
            out.insert(id, stored);
        }
    }
    out
}

/// `packs/` of the bucket as path → size, checking every key is
/// `packs/<first two hex>/<64 hex id>`: a reader must never see anything
/// else there (no temporary or partial names).
fn bucket_packs(sb: &Sandbox) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (rel, size) in sb.repo_files("packs") {
        let (dir, id) = rel
            .split_once('/')
            .unwrap_or_else(|| panic!("pack key packs/{rel} is not packs/xx/<id>"));
        assert!(
            id.len() == 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && dir == &id[..2],
            "packs/{rel} is not a complete pack's name (packs/<2 hex>/<64 hex>)"
        );
        out.insert(format!("packs/{rel}"), size);
    }
    out
}

/// The content blobs of the bucket (every blob but the snapshots'
/// pieces) as id → stored length, each stored once.
fn bucket_objects(sb: &Sandbox) -> BTreeMap<String, u64> {
    bucket_packs(sb);
    let blobs = sb.blobs();
    let pieces = sb.all_pieces();
    blobs
        .into_iter()
        .filter(|(id, _)| !pieces.contains(id))
        .map(|(id, places)| {
            assert_eq!(places.len(), 1, "blob {id} stored twice: {places:?}");
            (id, places[0].length)
        })
        .collect()
}

/// `bk-verify --read-data` of `records`: exit 0 and no problem record.
fn assert_verifies(sb: &Sandbox, records: &[u8], what: &str) {
    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    let out = sb.verify(records, &a);
    assert_code(&out, 0, &format!("bk-verify --read-data of {what}"));
    assert!(
        out.stdout.is_empty(),
        "bk-verify --read-data of {what} reported problems: {}",
        describe(&out)
    );
}

/// Restores `records` into a fresh directory `name` and compares it with
/// `expected`.
fn assert_restores(sb: &Sandbox, records: &[u8], name: &str, expected: &BTreeMap<Vec<u8>, Entry>) {
    let dest = sb.fresh_dir(name);
    let out = sb.restore(records, &dest);
    assert_ok(&out, &format!("bk-open --to {name}"));
    assert_same_tree(
        expected,
        &read_tree(&restored(&dest, &single_root(records))),
    );
}

/// `bk-index ARGS --repo R`.
fn index(sb: &Sandbox, sub: &[&str], with_key: bool) -> Output {
    let mut a: Vec<OsString> = sub.iter().map(OsString::from).collect();
    a.extend(sb.repo_args());
    if with_key {
        a.extend(sb.key_args());
    }
    sb.run("bk-index", &a, b"")
}

/// Many small files in nested directories, a symlink, an empty file.
fn small_files(root: &std::path::Path, n: usize, seed: u64) {
    for i in 0..n {
        let p = root.join(format!("small/d{:02}/f{i:04}.txt", i % 17));
        write_file(
            &p,
            &pseudo_random(seed + i as u64, 100 + i * 37 % 3000),
            0o644,
        );
        set_mtime_ns(&p, T0 + i as i64 * 1_000_000_007);
    }
    write_file(&root.join("small/empty"), b"", 0o600);
    make_symlink(
        std::path::Path::new("d00/f0000.txt"),
        &root.join("small/link"),
    );
}

/// The harness itself: moto starts, the bucket exists, and the test's own
/// client writes, lists, reads and deletes objects. Needs no bk S3 code.
#[test]
fn harness_serves_a_bucket_and_lists_it() {
    let bucket = unique_bucket("harness");
    let server = S3Server::start(&[&bucket]);
    assert!(server.list(&bucket, "").is_empty(), "a new bucket is empty");
    let big = pseudo_random(5, 3 * MIB as usize);
    server.put(&bucket, "p/objects/ab/one", b"first");
    server.put(&bucket, "p/objects/cd/two & more", &big);
    server.put(&bucket, "other/x", b"x");
    let listed = server.list(&bucket, "p/");
    let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(
        keys,
        vec![
            ("p/objects/ab/one", 5),
            ("p/objects/cd/two & more", big.len() as u64)
        ]
    );
    assert!(listed.iter().all(|o| o.last_modified.starts_with("20")));
    assert_eq!(
        server.get(&bucket, "p/objects/cd/two & more").as_deref(),
        Some(&big[..])
    );
    assert_eq!(server.get(&bucket, "p/nothing"), None);
    server.delete(&bucket, "p/objects/ab/one");
    assert_eq!(server.list(&bucket, "p/").len(), 1);

    // More than one page of listing (1000 keys a page).
    for i in 0..1005 {
        server.put(&bucket, &format!("many/{i:05}"), b"");
    }
    assert_eq!(server.list(&bucket, "many/").len(), 1005);

    // A restart keeps what was stored; a kill loses it (moto's memory).
    server.restart();
    assert_eq!(
        server.get(&bucket, "p/objects/cd/two & more").as_deref(),
        Some(&big[..]),
        "an object stored before the restart"
    );
    assert_eq!(server.list(&bucket, "many/").len(), 1005);
}

/// The sandbox's S3 helpers agree with what a directory sandbox sees.
#[test]
fn sandbox_helpers_read_and_write_the_bucket() {
    let sb = Sandbox::s3();
    let s3 = sb.s3_repo();
    assert!(sb.repo_url().to_str().unwrap().starts_with("s3://bk-repo-"));
    assert!(!sb.repo_exists());
    sb.write_repo_file("packs/ab/abcd", b"a pack");
    sb.write_repo_file("snapshots/s1.pgp", b"snap");
    assert_eq!(
        s3.server
            .get(&s3.bucket, "backups/bk/packs/ab/abcd")
            .as_deref(),
        Some(&b"a pack"[..])
    );
    assert_eq!(
        sb.pack_files(),
        BTreeMap::from([("packs/ab/abcd".to_owned(), 6)])
    );
    assert_eq!(sb.snapshot_names(), BTreeSet::from(["s1.pgp".to_owned()]));
    sb.remove_repo_file("packs/ab/abcd");
    assert!(sb.pack_files().is_empty());
}

#[test]
fn full_backup_on_s3_lists_shows_verifies_and_restores() {
    let sb = Sandbox::s3();
    let src = sb.path("src");
    small_files(&src, 400, 1000);
    write_pseudo_random_file(&src.join("big/twenty.bin"), 20, 20 * MIB);
    let first_tree = read_tree(&src);

    // 1. Default chunking: the 20 MiB file is cut into chunks.
    let b1 = sb.backup(&src);
    let recs1 = b1.records();
    let twenty = object_ids(find_record(&recs1, b"big/twenty.bin"));
    assert!(
        twenty.len() > 2,
        "a 20 MiB file above the 8 MiB threshold is chunked: {twenty:?}"
    );

    // The repository layout under the prefix is the directory layout.
    let all = sb.repo_files("");
    for want in ["bk-repo.json", "keys/id-key.pgp"] {
        assert!(all.contains_key(want), "{want} missing: {:?}", all.keys());
    }
    assert!(
        all.keys()
            .any(|k| k.starts_with("inventory/") && k.ends_with(".ndjson")),
        "no inventory/*.ndjson: {:?}",
        all.keys()
            .filter(|k| !k.starts_with("packs/"))
            .collect::<Vec<_>>()
    );
    let s3 = sb.s3_repo();
    let outside: Vec<String> = s3
        .server
        .list(&s3.bucket, "")
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.starts_with("backups/bk/"))
        .collect();
    assert!(outside.is_empty(), "keys outside the prefix: {outside:?}");
    assert_eq!(sb.snapshot_names(), BTreeSet::from([b1.snapshot.clone()]));

    // Every object the records name is a blob in the bucket with the size
    // the records give, and there is no other (but the catalogue's).
    let stored = stored_sizes(&recs1);
    assert_eq!(bucket_objects(&sb), stored, "bucket objects vs records");

    // 2. One object per file (a threshold above every file): the 20 MiB
    // file and a new 40 MiB one become single blobs larger than 16 MiB, in
    // packs larger than that (multipart uploads).
    write_pseudo_random_file(&src.join("big/forty.bin"), 40, 40 * MIB);
    let tree = read_tree(&src);
    let run2 = sb.backup_with(&src, &[], &args!["--chunk-threshold", "1G"]);
    let recs2 = run2.backup.records();
    let objects = bucket_objects(&sb);
    for (name, len) in [("big/forty.bin", 40 * MIB), ("big/twenty.bin", 20 * MIB)] {
        let rec = find_record(&recs2, name.as_bytes());
        let ids = object_ids(rec);
        assert_eq!(ids.len(), 1, "{name} with --chunk-threshold 1G: {rec}");
        let size = objects
            .get(&ids[0])
            .unwrap_or_else(|| panic!("object of {name} not in the bucket"));
        assert!(
            *size > len,
            "object of {name} is {size} bytes, less than its {len} plaintext bytes"
        );
        let pack = sb.blob_at(&ids[0]).pack;
        assert!(bucket_packs(&sb)[&pack] > *size, "{name}'s pack");
    }
    let mut all_stored = stored_sizes(&recs1);
    all_stored.extend(stored_sizes(&recs2));
    assert_eq!(
        objects, all_stored,
        "bucket objects vs records of both runs"
    );

    // bk-index list names both snapshots; show gives the records back.
    let out = index(&sb, &["list"], false);
    assert_ok(&out, "bk-index list");
    let listing = String::from_utf8_lossy(&out.stdout);
    for name in [&b1.snapshot, &run2.backup.snapshot] {
        assert!(
            listing.contains(name.trim_end_matches(".pgp")),
            "bk-index list lacks {name}:\n{listing}"
        );
    }
    let shown1 = sb.show(b1.snapshot.trim_end_matches(".pgp"), &[]);
    assert_ok(&shown1, "bk-index show <first>");
    assert_eq!(
        by_path(&parse_records(&shown1.stdout)),
        by_path(&recs1),
        "the first snapshot's records"
    );
    let shown2 = sb.show_latest();
    assert_eq!(
        by_path(&parse_records(&shown2)),
        by_path(&recs2),
        "the latest snapshot's records"
    );

    // Deep verification, and both snapshots restore exactly.
    assert_verifies(&sb, &shown1.stdout, "the first snapshot");
    assert_verifies(&sb, &shown2, "the latest snapshot");
    assert_restores(&sb, &shown1.stdout, "restore-1", &first_tree);
    assert_restores(&sb, &shown2, "restore-2", &tree);

    // The options work from the command line too, and BK_REPO names the
    // repository: bk-index list with no S3 environment but credentials.
    let mut cmd = sb.command("bk-index");
    cmd.env_remove("BK_S3_ENDPOINT")
        .env_remove("BK_S3_PATH_STYLE")
        .env("BK_REPO", sb.repo_url())
        .args([
            "list",
            "--s3-endpoint",
            &s3.server.endpoint(),
            "--s3-path-style",
        ]);
    let out = run_command(cmd, b"", DEFAULT_TIMEOUT);
    assert_ok(&out, "bk-index list with --s3-endpoint and BK_REPO");
    let again = String::from_utf8_lossy(&out.stdout);
    for name in [&b1.snapshot, &run2.backup.snapshot] {
        assert!(
            again.contains(name.trim_end_matches(".pgp")),
            "bk-index list (options, BK_REPO) lacks {name}:\n{again}"
        );
    }
}

#[test]
fn second_run_on_s3_adds_nothing_and_reuse_auto_reads_nothing() {
    let sb = Sandbox::s3();
    let src = sb.path("src");
    small_files(&src, 150, 2000);
    write_pseudo_random_file(&src.join("chunked.bin"), 9, 10 * MIB);
    let b1 = sb.backup(&src);
    let before = sb.s3_repo().files_under("packs");
    let n_objects = stored_sizes(&b1.records()).len();
    assert_eq!(bucket_objects(&sb).len(), n_objects);

    let run = sb.backup_with(&src, &sb.reuse_auto_args(), &[]);
    let files = parse_records(&run.backup.scan)
        .iter()
        .filter(|r| r["kind"] == "file")
        .count() as u64;
    assert_eq!(run.hash_count("hashed"), 0, "{}", run.hash_stderr);
    assert_eq!(run.hash_count("bytes read"), 0, "{}", run.hash_stderr);
    assert_eq!(run.hash_count("files seen"), files, "{}", run.hash_stderr);
    assert_eq!(
        run.hash_count("reused unread"),
        files,
        "{}",
        run.hash_stderr
    );
    assert_eq!(
        run.seal_count("new objects added"),
        0,
        "{}",
        run.seal_stderr
    );
    assert_eq!(
        sb.s3_repo().files_under("packs"),
        before,
        "the second run changed the packs in the bucket (it adds only its root)"
    );
    assert_eq!(sb.snapshot_names().len(), 2);
    assert_eq!(
        by_path(&parse_records(&sb.show_latest())),
        by_path(&b1.records()),
        "the second snapshot holds the same records"
    );
}

#[test]
fn gpg_decrypts_objects_and_snapshots_downloaded_from_the_bucket() {
    // The repository at the bucket's root (no prefix).
    let sb = Sandbox::s3_with_prefix("");
    assert!(!sb.repo_url().to_str().unwrap()[5..].contains('/'));
    let src = sb.path("src");
    let text = b"recover me with gpg alone\n".repeat(1000);
    write_file(&src.join("doc.txt"), &text, 0o644);
    write_pseudo_random_file(&src.join("chunked.bin"), 77, 9 * MIB);
    let b = sb.backup(&src);
    let s3 = sb.s3_repo();
    let root: BTreeSet<String> = s3
        .server
        .list(&s3.bucket, "")
        .into_iter()
        .filter_map(|o| o.key.split('/').next().map(str::to_owned))
        .collect();
    assert!(
        root.contains("bk-repo.json") && root.contains("packs") && root.contains("snapshots"),
        "the repository is at the bucket's root: {root:?}"
    );

    sb.gpg_import_secret(sb.key);
    let records = b.records();
    for (name, want) in [
        ("doc.txt", text.clone()),
        ("chunked.bin", fs::read(src.join("chunked.bin")).unwrap()),
    ] {
        let mut got = Vec::new();
        for id in object_ids(find_record(&records, name.as_bytes())) {
            // The blob's message, out of the pack downloaded from the
            // bucket (its keystream taken off with the id key).
            let file = sb.path(format!("dl-{id}.pgp"));
            sb.write_blob_message(&id, &file);
            let out = sb.gpg_decrypt(&file, &[]);
            assert_ok(&out, &format!("gpg --decrypt of object {id} of {name}"));
            got.extend_from_slice(&out.stdout);
        }
        assert!(
            got == want,
            "gpg's plaintext of {name} differs from the file"
        );
    }
    let snap = sb
        .read_repo_file(&format!("snapshots/{}", b.snapshot))
        .expect("snapshot in the bucket");
    let file = sb.path("snapshot.pgp");
    fs::write(&file, snap).unwrap();
    let out = sb.gpg_decrypt(&file, &[]);
    assert_ok(&out, "gpg --decrypt of the snapshot");
    // The root lists the pieces, which gpg decrypts to the records.
    let mut shown = Vec::new();
    for line in root_pieces(&out.stdout) {
        let id = line["piece"].as_str().expect("a piece line");
        let piece = sb.path(format!("dl-{id}.pgp"));
        sb.write_blob_message(id, &piece);
        let out = sb.gpg_decrypt(&piece, &[]);
        assert_ok(&out, &format!("gpg --decrypt of piece {id}"));
        shown.extend_from_slice(&out.stdout);
    }
    assert_eq!(by_path(&parse_records(&shown)), by_path(&records));
}

/// Backs up `tree` with one bk-seal worker, so that the run's contents
/// go into one pack.
fn backup_one_pack(sb: &Sandbox, tree: &std::path::Path) -> Backup {
    let (scan, hashed) = sb.scan_hash(tree);
    let mut a = sb.seal_args();
    a.extend(args!["-j", "1"]);
    if !sb.repo_exists() {
        a.push("--init".into());
    }
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal -j 1");
    let snapshot = sb.index_write(&sealed.stdout);
    Backup {
        scan,
        hashed,
        seal_stderr: stderr(&sealed),
        sealed: sealed.stdout,
        snapshot,
    }
}

#[test]
fn forget_and_prune_on_s3_delete_only_unreferenced_objects() {
    let sb = Sandbox::s3();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("common.txt"), b"in both backups", 0o644);
    for i in 0..6 {
        write_file(
            &tree.join(format!("a-{i}.bin")),
            &pseudo_random(300 + i, 200 << 10),
            0o644,
        );
    }
    let a = backup_one_pack(&sb, &tree);
    let a_pieces = sb.snapshot_pieces(&a.snapshot);
    for i in 0..6 {
        fs::remove_file(tree.join(format!("a-{i}.bin"))).unwrap();
    }
    for i in 0..4 {
        write_file(
            &tree.join(format!("b-{i}.bin")),
            &pseudo_random(400 + i, 150 << 10),
            0o644,
        );
    }
    let expected = read_tree(&tree);
    let b = backup_one_pack(&sb, &tree);
    let a_ids: BTreeSet<String> = stored_sizes(&a.records()).into_keys().collect();
    let b_ids: BTreeSet<String> = stored_sizes(&b.records()).into_keys().collect();
    let a_only: BTreeSet<&String> = a_ids.difference(&b_ids).collect();
    assert_eq!(a_only.len(), 6);
    // A's contents (and common.txt, which B uses too) are one pack, A's
    // catalogue pieces another.
    let a_pack = sb.blob_at(a_only.iter().next().unwrap()).pack;
    let a_pieces_pack = sb.blob_at(&a_pieces[0]).pack;
    let packs = bucket_packs(&sb);

    let out = index(&sb, &["forget", "--keep-last", "1"], true);
    assert_ok(&out, "bk-index forget --keep-last 1");
    assert_eq!(sb.snapshot_names(), BTreeSet::from([b.snapshot.clone()]));

    // Default grace (24 h): the packs are fresh, nothing goes.
    let out = index(&sb, &["prune", "--json"], true);
    assert_ok(&out, "bk-index prune");
    let r: Value = serde_json::from_slice(out.stdout.trim_ascii())
        .unwrap_or_else(|e| panic!("prune --json printed no JSON ({e}): {}", describe(&out)));
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["packs_repacked"], 0, "{r}");
    assert_eq!(r["packs_within_grace"], 2, "{r}");
    assert_eq!(bucket_packs(&sb), packs, "prune within grace changed packs");

    // No grace: A's pieces go with their pack, A's contents with theirs
    // (common.txt copied into a new pack first).
    let out = index(&sb, &["prune", "--grace", "0s", "--json"], true);
    assert_ok(&out, "bk-index prune --grace 0s");
    let r: Value = serde_json::from_slice(out.stdout.trim_ascii())
        .unwrap_or_else(|e| panic!("prune --json printed no JSON ({e}): {}", describe(&out)));
    assert_eq!(r["packs_deleted"], 1, "{r}");
    assert_eq!(r["packs_repacked"], 1, "{r}");
    assert_eq!(r["blobs_copied"], 1, "{r}");
    let now = bucket_packs(&sb);
    assert!(!now.contains_key(&a_pack) && !now.contains_key(&a_pieces_pack));
    let new: Vec<u64> = now
        .iter()
        .filter(|(p, _)| !packs.contains_key(*p))
        .map(|(_, size)| *size)
        .collect();
    assert_eq!(new.len(), 1, "{now:?}");
    assert_eq!(
        r["bytes_freed"],
        packs[&a_pack] + packs[&a_pieces_pack] - new[0],
        "{r}"
    );
    let left: BTreeSet<String> = bucket_objects(&sb).into_keys().collect();
    assert_eq!(left, b_ids, "objects left in the bucket = objects B needs");

    let shown = sb.show_latest();
    assert_verifies(&sb, &shown, "the snapshot kept");
    assert_restores(&sb, &shown, "restore", &expected);
}

/// A lock file as another bk process of this boot and PID namespace writes
/// it (sealed with the repository's lock key), into `locks/`.
fn put_lock(sb: &Sandbox, kind: &str, program: &str, host: &str, pid: u32) -> String {
    let info = lock_info(kind, program, host, pid, SystemTime::now());
    let name = bk::repo::lock::new_lock_name(info.kind);
    let rel = format!("locks/{name}");
    let bytes = bk::repo::lock::seal_lock(&repo_lock_key(sb), &name, &info);
    sb.write_repo_file(&rel, &bytes);
    rel
}

#[test]
fn locks_on_s3_block_prune_and_unlock_removes_them() {
    let sb = Sandbox::s3();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("f.txt"), b"locked content", 0o644);
    let b = sb.backup(&tree);
    assert!(
        sb.repo_files("locks").is_empty(),
        "a finished backup leaves no lock: {:?}",
        sb.repo_files("locks")
    );
    let host = bk::sys::host::this_host();
    let me = std::process::id();

    // A live backup (this test process is alive): prune must not run.
    let live = put_lock(&sb, "shared", "bk-seal", &host, me);
    let out = index(&sb, &["prune", "--grace", "0s"], true);
    assert_code(&out, 11, "bk-index prune beside a live shared lock");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "is locked by bk-seal (shared lock) on host {host} pid {me}"
        )) && err.contains(sb.repo_url().to_str().unwrap()),
        "{err}"
    );
    // A live exclusive lock blocks a backup.
    let excl = put_lock(&sb, "exclusive", "bk-index prune", "far-away-host", 7);
    let out = sb.run("bk-seal", &sb.seal_args(), &b.hashed);
    assert_code(&out, 11, "bk-seal beside a live exclusive lock");
    assert!(
        stderr(&out).contains("bk-index prune (exclusive lock) on host far-away-host pid 7"),
        "{}",
        describe(&out)
    );

    // A lock of a dead process on this host is stale: ignored with a
    // warning, and removed by unlock, which keeps the live ones.
    sb.remove_repo_file(&excl);
    let dead = put_lock(&sb, "exclusive", "bk-index prune", &host, dead_pid());
    let out = index(&sb, &["unlock"], false);
    assert_ok(&out, "bk-index unlock");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let dead_name = dead.trim_start_matches("locks/");
    assert!(printed.contains(dead_name), "unlock printed {printed:?}");
    let locks = sb.repo_files("locks");
    assert_eq!(
        locks.keys().cloned().collect::<Vec<_>>(),
        vec![live.trim_start_matches("locks/").to_owned()],
        "unlock removes the stale lock and keeps the live one"
    );
    // A forged lock (garbage under a lock file name) blocks like any
    // other while its Last-Modified time is recent, and unlock keeps it.
    sb.remove_repo_file(&live);
    let forged = format!(
        "locks/{}",
        bk::repo::lock::new_lock_name(bk::repo::lock::LockKind::Shared)
    );
    sb.write_repo_file(&forged, b"written by the storage operator");
    let out = index(&sb, &["prune", "--grace", "0s"], true);
    assert_code(&out, 11, "bk-index prune beside a forged lock");
    assert!(
        stderr(&out).contains(
            "is locked by a lock of another holder (its details cannot be read with this repository's id key), shared lock"
        ),
        "{}",
        describe(&out)
    );
    let out = index(&sb, &["unlock"], false);
    assert_ok(&out, "bk-index unlock beside a forged lock");
    assert!(out.stdout.is_empty(), "unlock removed a fresh forged lock");
    let out = index(&sb, &["unlock", "--all"], false);
    assert_ok(&out, "bk-index unlock --all");
    assert!(sb.repo_files("locks").is_empty(), "unlock --all left locks");

    // Unlocked, prune runs (and takes and releases its own lock).
    let out = index(&sb, &["prune", "--grace", "0s"], true);
    assert_ok(&out, "bk-index prune after unlock");
    assert!(sb.repo_files("locks").is_empty(), "prune left its lock");
    assert_verifies(&sb, &sb.show_latest(), "the snapshot");
}

/// Spawns `bk-seal ARGS` reading `input` (a file), stdout to `output`.
fn spawn_seal(
    sb: &Sandbox,
    extra: &[&str],
    input: &std::path::Path,
    output: &std::path::Path,
) -> Child {
    let mut cmd = sb.command("bk-seal");
    cmd.args(sb.seal_args())
        .args(extra)
        .stdin(fs::File::open(input).unwrap())
        .stdout(fs::File::create(output).unwrap())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn bk-seal")
}

/// Multipart uploads in progress in the sandbox's bucket.
fn uploads_in_progress(sb: &Sandbox) -> usize {
    let s3 = sb.s3_repo();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "-u", "test:test"])
        .arg(format!("{}/{}?uploads", s3.server.endpoint(), s3.bucket))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .matches("<Upload>")
        .count()
}

fn child_stderr(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

#[test]
fn seal_killed_mid_upload_leaves_no_half_object_and_the_rerun_completes() {
    let sb = Sandbox::s3();
    let src = sb.path("src");
    small_files(&src, 20, 3000);
    for i in 0..4 {
        write_pseudo_random_file(&src.join(format!("big-{i}.bin")), 500 + i, 48 * MIB);
    }
    let expected = read_tree(&src);
    sb.backup(&src.join("small"));
    let (_, hashed) = sb.scan_hash(&src);
    let input = sb.path("hashed.ndjson");
    fs::write(&input, &hashed).unwrap();

    // One big file at a time, each one 48 MiB blob closing its pack, which
    // is uploaded in parts; SIGKILL while an upload is in progress.
    let mut seal = spawn_seal(
        &sb,
        &["-j", "1", "--chunk-threshold", "1G"],
        &input,
        &sb.path("sealed-killed.ndjson"),
    );
    let start = Instant::now();
    let mut saw_upload = false;
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(status) = seal.try_wait().unwrap() {
            panic!(
                "bk-seal finished ({status}) before it could be killed mid-upload: {}",
                child_stderr(&mut seal)
            );
        }
        if uploads_in_progress(&sb) > 0 {
            saw_upload = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(saw_upload, "no multipart upload seen within 120 s");
    seal.kill().unwrap();
    seal.wait().unwrap();

    // Nothing under packs/ is partial: every name is a full pack id, every
    // pack there has its header, and every blob in it decrypts with gpg to
    // content whose object id bk-open accepts.
    let packs_after_kill = bucket_packs(&sb);
    let after_kill = bucket_objects(&sb);
    eprintln!(
        "killed bk-seal mid-upload with {} packs ({} objects) in the bucket, {} uploads in progress",
        packs_after_kill.len(),
        after_kill.len(),
        uploads_in_progress(&sb)
    );
    sb.gpg_import_secret(sb.key);
    for id in after_kill.keys() {
        let bytes = sb.blob_message(id);
        assert_eq!(bytes.len() as u64, after_kill[id]);
        let file = sb.path("obj.pgp");
        fs::write(&file, &bytes).unwrap();
        let out = sb.gpg_decrypt(&file, &[]);
        assert_ok(
            &out,
            &format!("gpg --decrypt of object {id} after the kill"),
        );
        let opened = sb.open_object(id);
        assert_ok(&opened, &format!("bk-open --object {id} after the kill"));
        assert!(
            opened.stdout == out.stdout,
            "bk-open and gpg disagree on {id}"
        );
    }

    // The rerun stores what is missing; everything verifies and restores.
    let sealed = sb.seal(&hashed);
    assert_ok(&sealed, "bk-seal rerun");
    sb.index_write(&sealed.stdout);
    let want = stored_sizes(&parse_records(&sealed.stdout));
    let objects = bucket_objects(&sb);
    for (id, size) in &want {
        assert_eq!(objects.get(id), Some(size), "object {id} after the rerun");
    }
    for (id, size) in &after_kill {
        assert_eq!(
            objects.get(id),
            Some(size),
            "object {id} stored before the kill changed"
        );
    }
    let packs = bucket_packs(&sb);
    for (pack, size) in &packs_after_kill {
        assert_eq!(packs.get(pack), Some(size), "{pack} changed");
    }
    let shown = sb.show_latest();
    assert_verifies(&sb, &shown, "the rerun's snapshot");
    assert_restores(&sb, &shown, "restore", &expected);
}

/// Waits for `child` up to `limit`; panics (after killing it) past that.
fn wait_for(
    child: &mut Child,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} still running {limit:?} after the server went away: {}",
                child_stderr(child)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tree for the server-fault tests: many small files and one chunked
/// big file, so a backup takes a while and stores many objects.
fn fault_tree(sb: &Sandbox) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = sb.path("src");
    small_files(&src, 2500, 4000);
    write_pseudo_random_file(&src.join("big.bin"), 8, 30 * MIB);
    // An earlier, complete snapshot.
    sb.backup(&src.join("small/d00"));
    let (_, hashed) = sb.scan_hash(&src);
    let input = sb.path("hashed.ndjson");
    fs::write(&input, &hashed).unwrap();
    (src, input)
}

/// A backup of [`fault_tree`] under way for the server-fault tests:
/// bk-seal, fed the first half of its input, has stored three packs and
/// waits for the rest ([`UnderWay::feed_rest`]), piped into bk-index write.
struct UnderWay {
    /// bk-seal's input (the hashed records), for a rerun.
    input: std::path::PathBuf,
    /// The source tree as it should be restored.
    expected: BTreeMap<Vec<u8>, Entry>,
    seal: Child,
    idx: Child,
    /// The second half of the input, not yet written to bk-seal.
    rest: Vec<u8>,
}

impl UnderWay {
    /// Writes the rest of the input to bk-seal from a thread and closes
    /// it (a bk-seal that failed meanwhile makes the writes fail, which
    /// is no matter).
    fn feed_rest(&mut self) -> std::thread::JoinHandle<()> {
        let mut stdin = self.seal.stdin.take().unwrap();
        let rest = std::mem::take(&mut self.rest);
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&rest);
        })
    }
}

fn backup_under_way(sb: &Sandbox) -> UnderWay {
    let (src, input) = fault_tree(sb);
    let expected = read_tree(&src);
    let before = sb.pack_files().len();
    let Pipeline {
        write: idx,
        mut seal,
    } = sb.spawn_pipeline(Stdio::piped(), &["-j", "2", "--pack-size", "1M"]);
    // Half the records, on whole lines; bk-seal then waits for more, so
    // the fault comes before its end whatever the machine's speed.
    let hashed = fs::read(&input).unwrap();
    let half = hashed[..hashed.len() / 2]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    {
        use std::io::Write;
        let stdin = seal.stdin.as_mut().unwrap();
        stdin.write_all(&hashed[..half]).unwrap();
        stdin.flush().unwrap();
    }
    wait_for_packs(sb, &mut seal, before + 2);
    UnderWay {
        input,
        expected,
        seal,
        idx,
        rest: hashed[half..].to_vec(),
    }
}

/// Shows snapshot `name`, checks that it verifies with `--read-data` and
/// restores to `expected`; returns its records.
fn assert_snapshot_sound(
    sb: &Sandbox,
    name: &str,
    what: &str,
    expected: &BTreeMap<Vec<u8>, Entry>,
) -> Vec<u8> {
    let shown = sb.show(name.trim_end_matches(".pgp"), &[]);
    assert_ok(&shown, &format!("bk-index show of {what}"));
    assert_verifies(sb, &shown.stdout, what);
    assert_restores(sb, &shown.stdout, "restore", expected);
    shown.stdout
}

/// Waits until the bucket holds more than `more_than` packs.
fn wait_for_packs(sb: &Sandbox, seal: &mut Child, more_than: usize) {
    let start = Instant::now();
    while sb.pack_files().len() <= more_than {
        if let Some(status) = seal.try_wait().unwrap() {
            panic!(
                "bk-seal ended ({status}) before the fault: {}",
                child_stderr(seal)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "bk-seal stored no pack within 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The S3 server dies mid-backup (SIGTERM: it stops serving at once and
/// saves what was completely stored, as a restarted server would still
/// have it) and stays down: the run fails with a repository error (5)
/// naming the repository, within the bounded retry time. Started again,
/// the rerun completes, and every byte verifies and restores.
#[test]
fn server_killed_mid_backup_then_restarted_the_rerun_completes() {
    let sb = Sandbox::s3();
    let mut under_way = backup_under_way(&sb);
    let snapshots = sb.snapshot_names();
    let server = &sb.s3_repo().server;
    server.stop();
    let feeder = under_way.feed_rest();
    let UnderWay {
        input,
        expected,
        mut seal,
        mut idx,
        ..
    } = under_way;
    let (status, took) = wait_for(&mut seal, Duration::from_secs(120), "bk-seal");
    feeder.join().unwrap();
    let seal_err = child_stderr(&mut seal);
    let (idx_status, _) = wait_for(&mut idx, Duration::from_secs(120), "bk-index write");
    let idx_err = child_stderr(&mut idx);
    eprintln!(
        "server down: bk-seal gave up after {took:?} with {status}: {}\nbk-index write: {idx_status}: {}",
        seal_err.trim(),
        idx_err.trim()
    );
    assert_eq!(
        status.code(),
        Some(5),
        "bk-seal with the server gone: expected exit 5, got {status}; stderr: {seal_err}"
    );
    let url = sb.repo_url().into_string().unwrap();
    assert!(
        seal_err.contains(&url) || seal_err.contains(&server.endpoint()),
        "the error names neither the repository {url} nor the endpoint: {seal_err}"
    );
    let lower = seal_err.to_lowercase();
    assert!(
        ["connect", "reach", "refused"]
            .iter()
            .any(|w| lower.contains(w)),
        "the error does not say the server could not be reached: {seal_err}"
    );
    assert!(
        took < Duration::from_secs(60),
        "bk-seal retried for {took:?}: should give up within about 30 s"
    );
    // bk-seal's stream had no end record: bk-index write refuses it before
    // it would even try the repository.
    assert_eq!(
        idx_status.code(),
        Some(3),
        "bk-index write of an interrupted run: {idx_status}; stderr: {idx_err}"
    );
    assert!(
        idx_err.contains("the record stream ended before its end record"),
        "{idx_err}"
    );

    server.restart();
    assert_eq!(
        sb.snapshot_names(),
        snapshots,
        "the interrupted run made a snapshot"
    );
    // Whatever snapshots exist are sound.
    for name in sb.snapshot_names() {
        let shown = sb.show(name.trim_end_matches(".pgp"), &[]);
        assert_ok(&shown, &format!("bk-index show {name}"));
        assert_verifies(&sb, &shown.stdout, &name);
    }
    let hashed = fs::read(&input).unwrap();
    let sealed = sb.seal(&hashed);
    assert_ok(&sealed, "bk-seal rerun after the restart");
    let name = sb.index_write(&sealed.stdout);
    let shown = assert_snapshot_sound(&sb, &name, "the rerun's snapshot", &expected);
    let objects = bucket_objects(&sb);
    for (id, size) in stored_sizes(&parse_records(&shown)) {
        assert_eq!(objects.get(&id), Some(&size), "object {id} after the rerun");
    }
}

/// A short outage (server down about two seconds, then back with its
/// data) is a transient error: retried, and the run completes.
#[test]
fn short_server_outage_is_retried_and_the_run_completes() {
    let sb = Sandbox::s3();
    let mut under_way = backup_under_way(&sb);
    let server = &sb.s3_repo().server;
    let down = Instant::now();
    server.stop();
    let feeder = under_way.feed_rest();
    std::thread::sleep(Duration::from_secs(1));
    server.restart();
    let UnderWay {
        expected,
        mut seal,
        mut idx,
        ..
    } = under_way;
    eprintln!("server was down for {:?}", down.elapsed());
    let (status, _) = wait_for(&mut seal, Duration::from_secs(300), "bk-seal");
    feeder.join().unwrap();
    let seal_err = child_stderr(&mut seal);
    let (idx_status, _) = wait_for(&mut idx, Duration::from_secs(120), "bk-index write");
    let idx_out = {
        let mut s = String::new();
        idx.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let idx_err = child_stderr(&mut idx);
    assert!(
        status.success(),
        "bk-seal across a short outage: {status}; stderr: {seal_err}"
    );
    assert!(
        idx_status.success(),
        "bk-index write across a short outage: {idx_status}; stderr: {idx_err}"
    );
    let name = idx_out.trim().rsplit('/').next().unwrap().to_owned();
    assert_snapshot_sound(&sb, &name, "the run across the outage", &expected);
}

/// Runs `program args` against an S3 repository with `env` overriding the
/// sandbox's S3 environment; returns the output and how long it took.
fn run_s3(
    sb: &Sandbox,
    program: &str,
    args: &[OsString],
    env: &[(&str, &str)],
) -> (Output, Duration) {
    let mut cmd = sb.command(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = run_command(cmd, b"", DEFAULT_TIMEOUT);
    (out, start.elapsed())
}

#[track_caller]
fn assert_repo_error(out: &Output, what: &str, url: &str, words: &[&str]) {
    assert_code(out, 5, what);
    let err = stderr(out);
    assert!(
        err.contains(url),
        "{what}: the error does not name {url}: {err}"
    );
    let lower = err.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "{what}: the error says none of {words:?}: {err}"
    );
}

#[test]
fn missing_bucket_is_a_repository_error_naming_the_bucket() {
    let sb = Sandbox::s3();
    let url = format!("s3://no-such-bucket-{}/bk", std::process::id());
    let a = args!["--init", "--repo", &url, "-r", &sb.pub_key];
    let (out, _) = run_s3(&sb, "bk-seal", &a, &[]);
    let hint = format!(
        "the bucket does not exist at {} (create it first; bk does not create buckets)",
        sb.s3_repo().server.endpoint()
    );
    assert_repo_error(
        &out,
        "bk-seal --init into a missing bucket",
        &url,
        &[&hint.to_lowercase()],
    );
    let (out, _) = run_s3(&sb, "bk-index", &args!["list", "--repo", &url], &[]);
    assert_repo_error(
        &out,
        "bk-index list of a missing bucket",
        &url,
        &[&hint.to_lowercase()],
    );

    // An existing bucket without a repository under the prefix.
    let (out, _) = run_s3(
        &sb,
        "bk-index",
        &args!["list", "--repo", sb.repo_url()],
        &[],
    );
    assert_code(&out, 5, "bk-index list of an empty prefix");
    assert!(
        stderr(&out).contains(sb.repo_url().to_str().unwrap()),
        "{}",
        describe(&out)
    );
}

#[test]
fn unreachable_endpoint_is_a_repository_error_within_bounded_time() {
    let sb = Sandbox::s3();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let url = sb.repo_url().into_string().unwrap();
    let (out, took) = run_s3(
        &sb,
        "bk-index",
        &args!["list", "--repo", &url],
        &[("BK_S3_ENDPOINT", &endpoint)],
    );
    eprintln!("bk-index list against a closed port gave up after {took:?}");
    let hint = format!("cannot reach the s3 endpoint {endpoint} (");
    assert_repo_error(&out, "bk-index list against a closed port", &url, &[&hint]);
    assert!(
        took < Duration::from_secs(60),
        "gave up only after {took:?}"
    );

    let mut a = sb.seal_args();
    a.push("--init".into());
    let (out, _) = run_s3(&sb, "bk-seal", &a, &[("BK_S3_ENDPOINT", &endpoint)]);
    assert_repo_error(&out, "bk-seal --init against a closed port", &url, &[&hint]);
}

#[test]
fn bad_credentials_are_a_repository_error() {
    // A server that checks credentials and signatures.
    let bucket = unique_bucket("auth");
    let server = S3Server::start_with_auth(&[&bucket]);
    let sb = Sandbox::new();
    let url = format!("s3://{bucket}/bk");
    let good = [
        ("BK_S3_ENDPOINT", server.endpoint()),
        ("BK_S3_PATH_STYLE", "true".to_owned()),
        ("AWS_REGION", TEST_REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", server.credentials.0.clone()),
        ("AWS_SECRET_ACCESS_KEY", server.credentials.1.clone()),
    ];
    // `over`: variables to replace; an empty value leaves one unset.
    let env = |over: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut e: Vec<(&'static str, String)> = good.to_vec();
        for (k, v) in over {
            e.retain(|(k2, _)| k2 != k);
            if !v.is_empty() {
                e.push((k, v.to_string()));
            }
        }
        e
    };
    let run = |program: &str, a: &[OsString], e: &[(&'static str, String)], input: &[u8]| {
        let mut cmd = sb.command(program);
        cmd.args(a);
        for (k, v) in e {
            cmd.env(k, v);
        }
        run_command(cmd, input, DEFAULT_TIMEOUT)
    };

    // The right credentials work (so the refusals below are about them).
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("f.txt"), b"authenticated", 0o644);
    let (_, hashed) = sb.scan_hash(&tree);
    let seal = args!["--init", "--repo", &url, "-r", &sb.pub_key];
    let out = run("bk-seal", &seal, &env(&[]), &hashed);
    assert_ok(&out, "bk-seal --init with the right credentials");

    let list = args!["list", "--repo", &url];
    let inventory = args!["--inventory", "--repo", &url];
    // The README's words, whole, with exit 5 (the hint used to be built and
    // then replaced by the bare "permission denied" on its way up).
    const DENIED: &str = "access denied: check the credentials (AWS_ACCESS_KEY_ID and \
        AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket's policy (";
    const NONE: &str = "no S3 credentials found: set AWS_ACCESS_KEY_ID and \
        AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials (";
    for (what, over, hint, code) in [
        (
            "a wrong secret key",
            vec![("AWS_SECRET_ACCESS_KEY", "wrong-secret")],
            DENIED,
            "SignatureDoesNotMatch",
        ),
        (
            "an unknown access key",
            vec![("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")],
            DENIED,
            "InvalidAccessKeyId",
        ),
        (
            "no credentials at all",
            vec![("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
            NONE,
            "credential",
        ),
    ] {
        for (program, a, input) in [
            ("bk-index", &list[..], &b""[..]),
            ("bk-seal", &seal[1..], &hashed[..]),
            ("bk-verify", &inventory[..], &b""[..]),
        ] {
            let out = run(program, a, &env(&over), input);
            let shown = format!("{program} with {what}");
            assert_code(&out, 5, &shown);
            let err = stderr(&out);
            assert!(
                err.contains(&format!("{url}/bk-repo.json: {hint}")) && err.contains(code),
                "{shown}: the error does not say {hint:?} … {code}: {err}"
            );
        }
    }
    let with_env = run("bk-index", &list, &env(&[]), b"");
    assert_ok(&with_env, "bk-index list with the right credentials");

    // The same keys from a named profile in a shared credentials file
    // (AWS_PROFILE), with none in the environment, work too.
    let creds = sb.path("aws-credentials-profile");
    fs::write(
        &creds,
        format!(
            "[backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            server.credentials.0, server.credentials.1
        ),
    )
    .unwrap();
    let creds = creds.to_str().unwrap();
    let from_profile = env(&[
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SHARED_CREDENTIALS_FILE", creds),
        ("AWS_PROFILE", "backup"),
    ]);
    let out = run("bk-index", &list, &from_profile, b"");
    assert_ok(&out, "bk-index list with credentials from AWS_PROFILE");
    assert_eq!(
        out.stdout, with_env.stdout,
        "bk-index list with a profile differs from the one with keys in the environment"
    );
    // And a profile holding a wrong secret is refused like one in the
    // environment (so the profile really is what was used).
    let wrong = sb.path("aws-credentials-wrong");
    fs::write(
        &wrong,
        format!(
            "[backup]\naws_access_key_id = {}\naws_secret_access_key = wrong\n",
            server.credentials.0
        ),
    )
    .unwrap();
    let mut from_wrong_profile = from_profile.clone();
    from_wrong_profile.retain(|(k, _)| *k != "AWS_SHARED_CREDENTIALS_FILE");
    from_wrong_profile.push((
        "AWS_SHARED_CREDENTIALS_FILE",
        wrong.to_str().unwrap().to_owned(),
    ));
    let out = run("bk-index", &list, &from_wrong_profile, b"");
    assert_repo_error(
        &out,
        "bk-index list with a wrong secret in the profile",
        &url,
        &["credential", "denied", "signature", "access key"],
    );
}

/// An endpoint given as an IP address (or as localhost) takes path-style
/// requests without `--s3-path-style`, as AWS's own clients do: a bucket
/// name in front of an IP address makes no host name ("request url is
/// invalid: invalid IPv4 address" before).
#[test]
fn an_ip_or_localhost_endpoint_needs_no_path_style_option() {
    let sb = Sandbox::s3();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("f.txt"), b"reached by its IP address", 0o644);
    let (_, hashed) = sb.scan_hash(&tree);
    let ip = sb.s3_repo().server.endpoint();
    assert!(ip.starts_with("http://127.0.0.1:"), "{ip}");
    let localhost = ip.replace("127.0.0.1", "localhost");
    let run = |program: &str, a: &[OsString], endpoint: &str, input: &[u8]| {
        let mut cmd = sb.command(program);
        cmd.args(a)
            .env_remove("BK_S3_PATH_STYLE")
            .env("BK_S3_ENDPOINT", endpoint);
        run_command(cmd, input, DEFAULT_TIMEOUT)
    };
    let mut seal = sb.seal_args();
    seal.push("--init".into());
    let sealed = run("bk-seal", &seal, &ip, &hashed);
    assert_ok(
        &sealed,
        "bk-seal --init with an IP endpoint and no --s3-path-style",
    );
    let mut write = args!["write"];
    write.extend(sb.seal_args());
    let written = run("bk-index", &write, &ip, &sealed.stdout);
    assert_ok(&written, "bk-index write with an IP endpoint");
    for endpoint in [&ip, &localhost] {
        let mut show = args!["show", "latest"];
        show.extend(sb.repo_args());
        show.extend(sb.key_args());
        let shown = run("bk-index", &show, endpoint, b"");
        assert_ok(&shown, &format!("bk-index show with endpoint {endpoint}"));
        assert_eq!(
            parse_records(&shown.stdout).len(),
            parse_records(&hashed).len(),
            "{endpoint}"
        );
        let mut verify = sb.repo_args();
        verify.push("--inventory".into());
        assert_ok(
            &run("bk-verify", &verify, endpoint, b""),
            &format!("bk-verify --inventory with endpoint {endpoint}"),
        );
    }
    // The packs really are in the bucket (path style reached it).
    assert!(!sb.pack_files().is_empty());
}
