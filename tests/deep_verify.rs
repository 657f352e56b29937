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

/// The repository path of pack `id` (`packs/ab/<64 hex>`).
fn pack_rel(id: &str) -> String {
    format!("packs/{}/{id}", &id[..2])
}

#[test]
fn inventory_check_needs_no_key_and_finds_bitrot() {
    let sb = Sandbox::new();
    two_snapshots(&sb);
    let inv = files_under(&sb.repo.join("inventory"));
    // One file per process that committed packs: bk-seal's blobs and
    // bk-index write's catalogue pieces, in each of the two runs.
    assert_eq!(inv.len(), 4, "inventory files: {inv:?}");
    // Every line is public facts only: a pack's name, size and BLAKE3.
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
            assert_eq!(keys, BTreeSet::from(["pack", "stored", "blake3"]), "{line}");
            let id = line["pack"].as_str().unwrap().to_owned();
            let bytes = sb.read_repo_file(&pack_rel(&id)).expect("inventoried pack");
            assert_eq!(line["blake3"], blake3::hash(&bytes).to_hex().as_str());
            assert_eq!(line["stored"], bytes.len() as u64);
            ids.insert(pack_rel(&id));
        }
    }
    let on_disk: BTreeSet<String> = sb.pack_files().into_keys().collect();
    assert_eq!(ids, on_disk);

    // No key at all, not even HOME's.
    let out = sb.verify(b"", &args!["--inventory"]);
    assert_ok(&out, "bk-verify --inventory");
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    let mut packs = ids.into_iter();
    let rotten = packs.next().unwrap();
    let gone = packs.next().unwrap();
    let len = sb.read_repo_file(&rotten).unwrap().len() as u64;
    sb.flip_repo_byte(&rotten, len / 2, 0x40);
    sb.remove_repo_file(&gone);
    // A stray pack nobody inventoried: a warning only.
    let stray = pack_rel(&"f".repeat(64));
    sb.write_repo_file(&stray, b"stray");
    let out = sb.verify(b"", &args!["--inventory"]);
    assert_code(&out, 1, "bk-verify --inventory with bit rot");
    let found: BTreeSet<(String, String)> = problems(&out)
        .iter()
        .map(|p| {
            (
                p["problem"].as_str().unwrap().to_owned(),
                pack_rel(p["pack"].as_str().unwrap()),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("bitrot".to_owned(), rotten.clone()),
        ("missing".to_owned(), gone.clone()),
        ("uninventoried".to_owned(), stray.clone()),
    ]
    .into();
    assert_eq!(found, want, "{}", describe(&out));
    assert_eq!(problems(&out).len(), 3);
    let bitrot = problems(&out)
        .into_iter()
        .find(|p| p["problem"] == "bitrot")
        .unwrap();
    assert!(
        bitrot["detail"].as_str().unwrap().contains("BLAKE3"),
        "{bitrot}"
    );

    // Without an inventory the check cannot run: exit 5, said so.
    sb.remove_repo_file(&stray);
    fs::remove_dir_all(sb.repo.join("inventory")).unwrap();
    let out = sb.verify(b"", &args!["--inventory"]);
    assert_code(
        &out,
        5,
        "bk-verify --inventory on a repository without inventory",
    );
    assert!(
        stderr(&out).contains("no pack inventory"),
        "{}",
        describe(&out)
    );
}
