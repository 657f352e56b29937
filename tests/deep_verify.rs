//! Deep verification: `--all-snapshots`, `--read-data-subset`, `--orphans`
//! and the keyless `--inventory` check.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// A repository with two snapshots of a tree of eight files; returns the
/// tree and the object ids of the files of the second snapshot.
fn two_snapshots(sb: &Sandbox) -> PathBuf {
    let tree = sb.path("tree");
    for i in 0..8u64 {
        write_file(
            &tree.join(format!("f{i}.bin")),
            &pseudo_random(i, 3000 + i as usize),
            0o644,
        );
    }
    sb.backup(&tree);
    write_file(&tree.join("later.txt"), b"added later\n", 0o644);
    sb.backup(&tree);
    tree
}

fn with_key(sb: &Sandbox, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut a = sb.key_args();
    a.extend(extra.iter().map(Into::into));
    a
}

/// Flips one byte in the middle of blob `id`.
fn corrupt(sb: &Sandbox, id: &str) {
    sb.corrupt_blob(id);
}

fn problems(out: &std::process::Output) -> Vec<Value> {
    parse_records(&out.stdout)
}

#[test]
fn all_snapshots_checks_every_snapshot_and_names_it() {
    let sb = Sandbox::new();
    two_snapshots(&sb);
    let out = sb.verify(b"", &with_key(&sb, &["--all-snapshots"]));
    assert_ok(&out, "bk-verify --all-snapshots");
    assert!(
        stderr(&out).contains("in 2 snapshots"),
        "{}",
        describe(&out)
    );
    // An object gone from its pack: both snapshots reference it, both are
    // named.
    let records = parse_records(&sb.show_latest());
    let id = object_ids(find_record(&records, b"f3.bin"))[0].clone();
    sb.drop_blob(&id);
    let out = sb.verify(b"", &with_key(&sb, &["--all-snapshots"]));
    assert_code(&out, 1, "bk-verify --all-snapshots with a missing object");
    let found = problems(&out);
    assert_eq!(found.len(), 2, "{}", describe(&out));
    let snaps: BTreeSet<String> = found
        .iter()
        .map(|p| {
            assert_eq!(p["problem"], "missing");
            assert_eq!(p["path"], "f3.bin");
            p["snapshot"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(snaps, sb.snapshot_names());
    assert!(
        found[0]["detail"].as_str().unwrap().contains(&id),
        "{}",
        describe(&out)
    );
    // Needs the key.
    let out = sb.verify(b"", &args!["--all-snapshots"]);
    assert_code(&out, 2, "--all-snapshots without --key");
}

#[test]
fn read_data_subset_parts_cover_every_object_once() {
    let sb = Sandbox::new();
    two_snapshots(&sb);
    let records = parse_records(&sb.show_latest());
    let victim = object_ids(find_record(&records, b"f5.bin"))[0].clone();
    corrupt(&sb, &victim);
    // Exactly one of the seven parts decrypts the corrupted object, and it
    // is the part its id says.
    let part = u64::from_str_radix(&victim[..8], 16).unwrap() % 7 + 1;
    let mut total_bytes = 0u64;
    for n in 1..=7u64 {
        let subset = format!("{n}/7");
        let out = sb.verify(
            &sb.show_latest(),
            &with_key(&sb, &["--read-data-subset", &subset]),
        );
        let found = problems(&out);
        if n == part {
            assert_code(&out, 1, &format!("--read-data-subset {subset}"));
            assert_eq!(found.len(), 1, "{}", describe(&out));
            assert_eq!(found[0]["object"], victim.as_str());
            assert_eq!(found[0]["path"], "f5.bin");
        } else {
            assert_ok(&out, &format!("--read-data-subset {subset}"));
            assert!(found.is_empty());
        }
        let err = stderr(&out);
        let bytes: u64 = err
            .split(", ")
            .find(|s| s.contains(" bytes decrypted and re-hashed"))
            .and_then(|s| s.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no byte count in {err}"));
        total_bytes += bytes;
    }
    // The parts together read every content once (the corrupt one fails
    // early, so count the others).
    let all: u64 = records
        .iter()
        .filter(|r| r["kind"] == "file" && r["path"] != "f5.bin")
        .map(|r| r["size"].as_u64().unwrap())
        .sum();
    assert!(
        total_bytes >= all,
        "parts read {total_bytes} bytes, the files have {all}"
    );

    // 100% finds it; today/7 is one of the parts; bad syntax is a usage error.
    let out = sb.verify(
        &sb.show_latest(),
        &with_key(&sb, &["--read-data-subset", "100%"]),
    );
    assert_code(&out, 1, "--read-data-subset 100%");
    let out = sb.verify(
        &sb.show_latest(),
        &with_key(&sb, &["--read-data-subset", "today/7"]),
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        describe(&out)
    );
    for bad in ["0/7", "8/7", "x", "0%", "101%", "1/0"] {
        let out = sb.verify(
            &sb.show_latest(),
            &with_key(&sb, &["--read-data-subset", bad]),
        );
        assert_code(&out, 2, &format!("--read-data-subset {bad}"));
    }
}

#[test]
fn orphans_are_listed_but_only_fail_on_request() {
    let sb = Sandbox::new();
    let tree = two_snapshots(&sb);
    // The snapshots' pieces (blobs of their record streams) are theirs.
    assert!(!sb.all_pieces().is_empty());
    let out = sb.verify(b"", &with_key(&sb, &["--orphans"]));
    assert_ok(&out, "bk-verify --orphans (none)");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    // Sealed but never indexed: an orphan.
    write_file(
        &tree.join("sealed-only.txt"),
        b"never in a snapshot\n",
        0o644,
    );
    let (_, hashed) = sb.scan_hash(&tree);
    let sealed = sb.seal(&hashed);
    assert_ok(&sealed, "bk-seal");
    let rec = find_record(&parse_records(&sealed.stdout), b"sealed-only.txt").clone();
    let orphan = object_ids(&rec)[0].clone();
    let out = sb.verify(b"", &with_key(&sb, &["--orphans"]));
    assert_ok(&out, "bk-verify --orphans");
    let found = problems(&out);
    assert_eq!(found.len(), 1, "{}", describe(&out));
    assert_eq!(found[0]["problem"], "orphan");
    assert_eq!(found[0]["object"], orphan.as_str());
    assert!(
        stderr(&out).contains("1 orphaned objects"),
        "{}",
        describe(&out)
    );
    let out = sb.verify(b"", &with_key(&sb, &["--orphans", "--orphans-fail"]));
    assert_code(&out, 1, "bk-verify --orphans --orphans-fail");

    // A forgotten snapshot's pieces are orphans once nothing else uses
    // them.
    let first = sb.snapshot_names().into_iter().next().unwrap();
    let pieces: BTreeSet<String> = sb.snapshot_pieces(&first).into_iter().collect();
    sb.remove_repo_file(&format!("snapshots/{first}"));
    let out = sb.verify(b"", &with_key(&sb, &["--orphans"]));
    assert_ok(&out, "bk-verify --orphans after a snapshot went");
    let found: BTreeSet<String> = problems(&out)
        .iter()
        .map(|p| p["object"].as_str().unwrap().to_owned())
        .collect();
    let mut want: BTreeSet<String> = pieces
        .iter()
        .filter(|p| !sb.all_pieces().contains(*p))
        .cloned()
        .collect();
    assert!(!want.is_empty(), "the first snapshot had pieces of its own");
    want.insert(orphan.clone());
    assert_eq!(found, want, "{}", describe(&out));
}

#[test]
fn inventory_check_needs_no_key_and_finds_bitrot() {
    let sb = Sandbox::new();
    two_snapshots(&sb);
    let inv = files_under(&sb.repo.join("inventory"));
    assert_eq!(inv.len(), 2, "one inventory file per bk-seal run: {inv:?}");
    // Every line is public facts only.
    let mut ids = BTreeSet::new();
    for f in &inv {
        let text = fs::read(sb.repo.join("inventory").join(f)).unwrap();
        for line in parse_records(&text) {
            let keys: BTreeSet<&str> = line
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(keys, BTreeSet::from(["id", "stored", "blake3"]), "{line}");
            let id = line["id"].as_str().unwrap().to_owned();
            let bytes = fs::read(sb.object_path(&id)).unwrap();
            assert_eq!(line["blake3"], blake3::hash(&bytes).to_hex().as_str());
            assert_eq!(line["stored"], bytes.len() as u64);
            ids.insert(id);
        }
    }
    let on_disk: BTreeSet<String> = sb
        .object_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids, on_disk);

    // No key at all, not even HOME's.
    let out = sb.verify(b"", &args!["--inventory"]);
    assert_ok(&out, "bk-verify --inventory");
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    let mut ids = ids.into_iter();
    let rotten = ids.next().unwrap();
    let gone = ids.next().unwrap();
    corrupt(&sb, &rotten);
    fs::remove_file(sb.object_path(&gone)).unwrap();
    // A stray object nobody inventoried: a warning only.
    let stray = "f".repeat(64);
    write_file(&sb.object_path(&stray), b"stray", 0o644);
    let out = sb.verify(b"", &args!["--inventory"]);
    assert_code(&out, 1, "bk-verify --inventory with bit rot");
    let found: Vec<(String, String)> = problems(&out)
        .iter()
        .map(|p| {
            (
                p["problem"].as_str().unwrap().to_owned(),
                p["object"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("bitrot".to_owned(), rotten.clone()),
        ("missing".to_owned(), gone.clone()),
        ("uninventoried".to_owned(), stray.clone()),
    ]
    .into();
    assert_eq!(
        found.iter().cloned().collect::<BTreeSet<_>>(),
        want,
        "{}",
        describe(&out)
    );
    assert_eq!(found.len(), 3);

    // The stray object alone does not fail the check.
    fs::remove_file(sb.object_path(&stray)).unwrap();
    fs::remove_dir_all(sb.repo.join("inventory")).unwrap();
    let out = sb.verify(b"", &args!["--inventory"]);
    assert_code(
        &out,
        5,
        "bk-verify --inventory on a repository without inventory",
    );
    assert!(
        stderr(&out).contains("no object inventory"),
        "{}",
        describe(&out)
    );
}

#[test]
fn inventory_lines_of_earlier_builds_with_sha256_are_still_checked() {
    let sb = Sandbox::new();
    two_snapshots(&sb);
    // Rewrite every line the way builds before the BLAKE3 inventory wrote
    // them: the ciphertext's SHA-256 under "sha256".
    let dir = sb.repo.join("inventory");
    let mut ids = Vec::new();
    for f in files_under(&dir) {
        let text = fs::read(dir.join(&f)).unwrap();
        let mut old = Vec::new();
        for line in parse_records(&text) {
            let id = line["id"].as_str().unwrap().to_owned();
            let bytes = fs::read(sb.object_path(&id)).unwrap();
            let legacy = serde_json::json!({
                "id": id, "stored": bytes.len(), "sha256": sha256_hex(&bytes)
            });
            old.extend_from_slice(legacy.to_string().as_bytes());
            old.push(b'\n');
            ids.push(id);
        }
        fs::write(dir.join(&f), old).unwrap();
    }
    let out = sb.verify(b"", &args!["--inventory"]);
    assert_ok(&out, "bk-verify --inventory on sha256 lines");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    corrupt(&sb, &ids[0]);
    let out = sb.verify(b"", &args!["--inventory"]);
    assert_code(&out, 1, "bk-verify --inventory, sha256 line, bit rot");
    let found = problems(&out);
    assert_eq!(found.len(), 1, "{}", describe(&out));
    assert_eq!(found[0]["problem"], "bitrot");
    assert_eq!(found[0]["object"], ids[0].as_str());
    assert!(
        found[0]["detail"].as_str().unwrap().contains("SHA-256"),
        "{}",
        describe(&out)
    );
}
