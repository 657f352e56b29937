//! Deduplication: one blob per unique content, nothing new for an
//! unchanged tree (not even a pack), and the snapshots of every run listed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

const COPIES: usize = 30;

/// 30 paths with one content (in assorted directories) and 3 others.
fn dup_tree(root: &Path) -> Vec<String> {
    let same = pseudo_random(21, 100_000);
    let mut dup_paths = Vec::new();
    for i in 0..COPIES {
        let rel = match i % 3 {
            0 => format!("copy-{i}.bin"),
            1 => format!("a/copy {i}.bin"),
            _ => format!("a/b/c/copy-{i}"),
        };
        write_file(&root.join(&rel), &same, 0o644);
        dup_paths.push(rel);
    }
    for (i, name) in ["unique-1", "a/unique-2", "a/b/unique-3"]
        .iter()
        .enumerate()
    {
        write_file(
            &root.join(name),
            &pseudo_random(100 + i as u64, 50_000),
            0o644,
        );
    }
    dup_paths
}

/// Every pack file's bytes, by its path in the repository.
fn pack_bytes(sb: &Sandbox) -> BTreeMap<String, Vec<u8>> {
    sb.pack_files()
        .into_keys()
        .map(|rel| {
            let bytes = sb
                .read_repo_file(&rel)
                .unwrap_or_else(|| panic!("{rel} vanished"));
            (rel, bytes)
        })
        .collect()
}

fn all_ids(records: &[Value]) -> BTreeSet<String> {
    records.iter().flat_map(object_ids).collect()
}

/// Panics unless every blob of the repository is stored once.
fn each_blob_stored_once(sb: &Sandbox) {
    for (id, places) in sb.blobs() {
        assert_eq!(places.len(), 1, "blob {id} is stored more than once");
    }
}

fn identical_contents_are_stored_once(sb: Sandbox) {
    let src = sb.path("src");
    let dups = dup_tree(&src);
    let b = sb.backup(&src);
    let records = b.records();

    let first = object_ids(find_record(&records, dups[0].as_bytes()));
    assert!(!first.is_empty(), "{} has no objects", dups[0]);
    for p in &dups {
        assert_eq!(
            object_ids(find_record(&records, p.as_bytes())),
            first,
            "{p} should share the objects of {}",
            dups[0]
        );
    }
    let mut unique_objects = BTreeSet::new();
    for name in ["unique-1", "a/unique-2", "a/b/unique-3"] {
        let ids = object_ids(find_record(&records, name.as_bytes()));
        unique_objects.extend(ids.iter().cloned());
        assert!(!ids.is_empty(), "{name} has no objects");
        assert!(
            ids.iter().all(|id| !first.contains(id)),
            "{name} shares an object with the duplicates"
        );
    }
    // The repository holds exactly the referenced contents, each once:
    // the 30 copies cost one content's worth.
    let ids = all_ids(&records);
    assert_eq!(
        sb.content_blob_ids(),
        ids,
        "content blobs should be exactly the objects the records name"
    );
    each_blob_stored_once(&sb);
    let dup_objects = first.iter().collect::<BTreeSet<_>>().len();
    assert_eq!(
        ids.len(),
        dup_objects + unique_objects.len(),
        "{COPIES} identical files should cost one content's objects"
    );
    assert_eq!(
        summary_number(&b.seal_stderr, "bk-seal:", "new objects added"),
        ids.len() as u64,
        "{}",
        b.seal_stderr
    );
    // 250 kB of incompressible contents (30 copies would be 3 MB).
    let stored = sb.packs_bytes();
    assert!(
        stored < 400_000,
        "{COPIES} identical files took {stored} bytes of packs"
    );
}

fn second_backup_of_unchanged_tree_adds_no_object(sb: Sandbox) {
    let src = sb.path("src");
    dup_tree(&src);
    let b1 = sb.backup(&src);
    let before = pack_bytes(&sb);
    assert!(!before.is_empty());

    // The contents and the catalogue's pieces are all there already: the
    // run adds its snapshot's root and no pack.
    let b2 = sb.backup(&src);
    let after = pack_bytes(&sb);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the second backup changed the set of pack files"
    );
    for (p, bytes) in &before {
        assert!(after[p] == *bytes, "pack {p} was rewritten");
    }
    assert!(
        b2.seal_stderr.contains("0 new objects added"),
        "{}",
        b2.seal_stderr
    );
    assert_eq!(all_ids(&b1.records()), all_ids(&b2.records()));
    assert_eq!(
        sb.snapshot_pieces(&b1.snapshot),
        sb.snapshot_pieces(&b2.snapshot),
        "an unchanged tree gives the same catalogue pieces"
    );

    // Two snapshots, both listed.
    assert_ne!(b1.snapshot, b2.snapshot, "each run writes its own snapshot");
    assert_eq!(
        sb.snapshot_names(),
        BTreeSet::from([b1.snapshot.clone(), b2.snapshot.clone()])
    );
    let mut a = args!["list"];
    a.extend(sb.repo_args());
    let out = sb.run("bk-index", &a, b"");
    assert_ok(&out, "bk-index list");
    let listing = String::from_utf8_lossy(&out.stdout);
    for name in [&b1.snapshot, &b2.snapshot] {
        let stem = name.trim_end_matches(".pgp");
        assert!(
            listing.contains(stem),
            "bk-index list lacks {stem}:\n{listing}"
        );
    }
    a.push("--json".into());
    let out = sb.run("bk-index", &a, b"");
    assert_ok(&out, "bk-index list --json");
    assert_eq!(parse_records(&out.stdout).len(), 2, "{}", describe(&out));
}

fn new_content_adds_exactly_one_object_and_old_snapshot_is_kept(sb: Sandbox) {
    let src = sb.path("src");
    dup_tree(&src);
    let b1 = sb.backup(&src);
    let before = sb.content_blob_ids();
    let packs_before = pack_bytes(&sb);

    write_file(&src.join("a/new-file.txt"), b"brand new content\n", 0o644);
    let b2 = sb.backup(&src);
    let after = sb.content_blob_ids();
    let added: Vec<&String> = after.difference(&before).collect();
    let new_ids = object_ids(find_record(&b2.records(), b"a/new-file.txt"));
    assert_eq!(new_ids.len(), 1, "a small file is one object");
    assert_eq!(added, vec![&new_ids[0]]);
    assert!(before.is_subset(&after), "an object disappeared");
    each_blob_stored_once(&sb);
    let packs_after = pack_bytes(&sb);
    for (p, bytes) in &packs_before {
        assert!(packs_after.get(p) == Some(bytes), "pack {p} changed");
    }
    // The new blob and the catalogue's new piece(s): small.
    let grown: u64 = packs_after
        .iter()
        .filter(|(p, _)| !packs_before.contains_key(*p))
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert!(grown < 16 << 10, "one small new file added {grown} bytes");

    // The first snapshot still reads back without the new file.
    let first = sb.show(b1.snapshot.trim_end_matches(".pgp"), &[]);
    assert_ok(&first, "bk-index show <first snapshot>");
    let first = parse_records(&first.stdout);
    assert_eq!(first.len(), b1.records().len());
    assert!(!first.iter().any(|r| rec_path(r) == b"a/new-file.txt"));
    let second = sb.show(b2.snapshot.trim_end_matches(".pgp"), &[]);
    assert_ok(&second, "bk-index show <second snapshot>");
    let second = parse_records(&second.stdout);
    assert!(second.iter().any(|r| rec_path(r) == b"a/new-file.txt"));
}

/// "latest" must be the snapshot written last, also when several runs
/// happen within one second (scripts, retries).
fn latest_is_the_snapshot_written_last(sb: Sandbox) {
    let src = sb.path("src");
    write_file(&src.join("f.txt"), b"one\n", 0o644);
    let b = sb.backup(&src);
    let mut wrong = Vec::new();
    for run in 0..10 {
        // Each snapshot gets a distinguishable record stream: an extra
        // field that every stage passes through.
        let mut recs = b.records();
        recs[0]["test_run"] = Value::from(run);
        let name = sb.index_write(&to_ndjson(&recs));
        let latest = parse_records(&sb.show_latest());
        let got = latest.iter().find_map(|r| r.get("test_run").cloned());
        if got != Some(Value::from(run)) {
            wrong.push(format!(
                "after writing run {run} ({name}), latest showed run {got:?}; snapshots: {:?}",
                sb.snapshot_names()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn lost_local_id_key_is_recovered_with_the_secret_key(sb: Sandbox) {
    let src = sb.path("src");
    dup_tree(&src);
    let b1 = sb.backup(&src);
    let before = pack_bytes(&sb);
    let blobs = sb.blobs();

    // A new machine: no local id key, no local index of the packs (it is
    // built again from the packs' headers, with the recovered key).
    fs::remove_dir_all(sb.data_home.join("bk")).unwrap();
    fs::remove_dir_all(sb.cache_home.join("bk")).unwrap();
    let (_, hashed) = sb.scan_hash(&src);
    let mut a = sb.seal_args();
    a.extend(sb.key_args());
    let out = sb.run("bk-seal", &a, &hashed);
    assert_ok(&out, "bk-seal --key after losing the local id key");
    assert_eq!(
        all_ids(&parse_records(&out.stdout)),
        all_ids(&b1.records()),
        "the recovered id key must give the same object ids"
    );
    assert!(
        stderr(&out).contains("0 new objects added"),
        "{}",
        stderr(&out)
    );
    assert!(pack_bytes(&sb) == before, "no pack may be added or changed");
    assert_eq!(sb.blobs(), blobs, "no object may be duplicated");
}

/// A second host backs up into the same repository with only the public
/// key and the id key it was given (no secret key, no index cache of its
/// own): what the first host stored is found in the packs and not stored
/// again, and only its own new content is.
fn another_host_with_only_the_id_key_stores_only_what_is_new(sb: Sandbox) {
    let src = sb.path("src");
    dup_tree(&src);
    sb.backup(&src);
    let before = pack_bytes(&sb);
    let blobs = sb.blobs();

    // Host B: its own copy of the tree under another path, one new file,
    // the id key handed over as a file (host A keeps its own, which the
    // harness reads), nothing in its cache.
    let other = sb.path("host-b/src");
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&other)
        .status()
        .unwrap();
    assert!(cp.success());
    write_file(&other.join("only-on-b.txt"), b"written on host b\n", 0o644);
    let key_dir = sb.data_home.join("bk");
    let idkey = fs::read_dir(&key_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "idkey"))
        .expect("host A's id key file");
    let handed = sb.path("host-b/id-key");
    fs::copy(&idkey, &handed).unwrap();
    fs::remove_dir_all(sb.cache_home.join("bk")).unwrap();

    let (_, hashed) = sb.scan_hash(&other);
    let mut a = sb.seal_args();
    a.extend(args!["--id-key", &handed]);
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal on host B");
    assert!(
        stderr(&sealed).contains("1 new objects added"),
        "{}",
        stderr(&sealed)
    );
    let mut a = args!["write", "--host", "host-b", "--id-key", &handed];
    a.extend(sb.seal_args());
    let written = sb.run("bk-index", &a, &sealed.stdout);
    assert_ok(&written, "bk-index write on host B");

    // Every pack of host A is still there, unchanged; every blob of A is
    // stored once; B added its file's blob and its catalogue.
    let after = pack_bytes(&sb);
    for (p, bytes) in &before {
        assert!(after.get(p) == Some(bytes), "pack {p} changed or went");
    }
    let now = sb.blobs();
    for (id, places) in &now {
        assert_eq!(places.len(), 1, "blob {id} stored {} times", places.len());
    }
    assert!(blobs.keys().all(|id| now.contains_key(id)));
    let new_file = find_record(&parse_records(&sealed.stdout), b"only-on-b.txt").clone();
    for id in object_ids(&new_file) {
        assert!(!blobs.contains_key(&id), "the new file's blob was there");
        assert!(now.contains_key(&id), "the new file's blob is stored");
    }
}

// Each of these runs once per backend (a directory, and S3 on moto).
backend_tests!(
    identical_contents_are_stored_once,
    second_backup_of_unchanged_tree_adds_no_object,
    new_content_adds_exactly_one_object_and_old_snapshot_is_kept,
    latest_is_the_snapshot_written_last,
    lost_local_id_key_is_recovered_with_the_secret_key,
    another_host_with_only_the_id_key_stores_only_what_is_new,
);
