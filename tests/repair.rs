//! `bk-index repair`: a blob damaged in place inside a pack (one byte of
//! its ciphertext flipped, the pack's size and header intact) is found by
//! `bk-verify --read-data`, which names its pack; repair keeps the pack's
//! sound blobs and drops the damaged one, and the next backup of the same
//! files stores it again, so that the older snapshot naming it verifies
//! and restores again, on this host and on one with an empty cache.
//! Without repair, every later backup would deduplicate against the
//! broken copy forever.

mod common;

use std::ffi::OsString;
use std::fs;

use common::packs::*;
use common::*;
use serde_json::Value;

const FILES: usize = 6;

/// A tree of small files, all in one pack; returns the tree.
fn small_tree(sb: &Sandbox) -> std::path::PathBuf {
    let tree = sb.path("tree");
    for i in 0..FILES {
        write_file(
            &tree.join(format!("f{i}.bin")),
            &pseudo_random(i as u64 + 10, 5_000 + 3_000 * i),
            0o644,
        );
    }
    tree
}

fn repair(sb: &Sandbox, extra: &[&str]) -> std::process::Output {
    let mut a = args!["repair"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    a.extend(extra.iter().map(OsString::from));
    sb.run("bk-index", &a, b"")
}

fn read_data(sb: &Sandbox, shown: &[u8]) -> std::process::Output {
    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    sb.verify(shown, &a)
}

fn a_damaged_blob_is_dropped_by_repair_and_stored_again_by_the_next_backup(sb: Sandbox) {
    let tree = small_tree(&sb);
    let first = sb.backup(&tree).snapshot;
    let shown = sb.show_latest();
    let victim = object_ids(find_record(&parse_records(&shown), b"f2.bin"))[0].clone();
    let at = sb.blob_at(&victim);
    let pack = pack_id_of(&at.pack).to_string();
    let before = sb.blobs();
    let in_pack: Vec<String> = before
        .iter()
        .filter(|(_, places)| places.iter().any(|p| p.pack == at.pack))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        in_pack.len() >= 2,
        "the test needs the victim's pack to hold other blobs too: {in_pack:?}"
    );
    sb.corrupt_blob(&victim);
    let damaged_pack = sb.read_repo_file(&at.pack).unwrap();

    // bk-verify names the blob and its pack, and says what to run.
    let out = read_data(&sb, &shown);
    assert_code(&out, 1, "bk-verify --read-data of a damaged blob");
    let problems = parse_records(&out.stdout);
    assert_eq!(problems.len(), 1, "{}", describe(&out));
    assert_eq!(problems[0]["problem"], "decrypt");
    assert_eq!(problems[0]["object"], victim.as_str());
    assert_eq!(problems[0]["pack"], pack.as_str());
    assert!(
        stderr(&out).contains("bk-index repair"),
        "{}",
        describe(&out)
    );

    // Without repair, a backup deduplicates against the broken copy.
    let again = sb.backup(&tree).snapshot;
    assert_code(
        &read_data(&sb, &sb.show(&again, &[]).stdout),
        1,
        "a backup made before repair",
    );

    // A dry run checks and changes nothing.
    let out = repair(&sb, &["--dry-run", &pack]);
    assert_ok(&out, "bk-index repair --dry-run");
    let reports = parse_records(&out.stdout);
    assert_eq!(reports.len(), 1, "{}", describe(&out));
    assert_eq!(reports[0]["action"], "rewrite");
    assert_eq!(reports[0]["damaged"][0]["blob"], victim.as_str());
    assert_eq!(
        sb.read_repo_file(&at.pack).as_deref(),
        Some(&damaged_pack[..])
    );

    // Repair: the pack goes, its sound blobs are elsewhere, the damaged
    // one is missing.
    let out = repair(&sb, &[&at.pack]);
    assert_ok(&out, "bk-index repair");
    let report: &Value = &parse_records(&out.stdout)[0];
    assert_eq!(report["pack"], pack.as_str());
    assert_eq!(report["blobs"].as_u64(), Some(in_pack.len() as u64));
    assert_eq!(report["sound"].as_u64(), Some(in_pack.len() as u64 - 1));
    assert_eq!(report["damaged"].as_array().map(Vec::len), Some(1));
    assert_eq!(report["action"], "rewrite");
    assert!(
        sb.read_repo_file(&at.pack).is_none(),
        "the damaged pack is deleted"
    );
    let after = sb.blobs();
    for id in &in_pack {
        if *id == victim {
            assert!(!after.contains_key(id), "the damaged blob is dropped");
        } else {
            assert!(after.contains_key(id), "sound blob {id} was lost");
        }
    }
    let out = read_data(&sb, &shown);
    assert_code(&out, 1, "bk-verify after repair, before a backup");
    assert_eq!(parse_records(&out.stdout)[0]["problem"], "missing");

    // The next backup stores the content again; every snapshot, the one
    // from before the damage included, verifies and restores.
    let last = sb.backup(&tree).snapshot;
    assert!(sb.blobs().contains_key(&victim), "the blob is stored again");
    for name in [&first, &again, &last] {
        assert_verifies(&sb, name);
    }
    assert_restores(&sb, &first, &tree);

    // So does a host that never saw the damaged pack (an empty cache).
    let cache = sb.path("other-cache");
    fs::create_dir_all(&cache).unwrap();
    let shown_first = sb.show(&first, &[]).stdout;
    let mut a = args!["--read-data"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    let out = sb.run_env(
        "bk-verify",
        &a,
        &shown_first,
        &[("XDG_CACHE_HOME", cache.as_os_str())],
    );
    assert_ok(&out, "bk-verify --read-data with an empty cache");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

backend_tests!(a_damaged_blob_is_dropped_by_repair_and_stored_again_by_the_next_backup);

#[test]
fn repair_leaves_a_sound_pack_alone_and_refuses_what_is_not_a_pack() {
    let sb = Sandbox::new();
    let tree = small_tree(&sb);
    sb.backup(&tree);
    let files = sb.pack_files();
    let rel = files.keys().next().unwrap().clone();
    let bytes = sb.read_repo_file(&rel).unwrap();

    let out = repair(&sb, &[pack_id_of(&rel).to_string().as_str()]);
    assert_ok(&out, "bk-index repair of a sound pack");
    let report = &parse_records(&out.stdout)[0];
    assert_eq!(report["action"], "keep");
    assert_eq!(report["damaged"].as_array().map(Vec::len), Some(0));
    assert!(stderr(&out).contains("none damaged"), "{}", describe(&out));
    assert_eq!(sb.pack_files(), files);
    assert_eq!(sb.read_repo_file(&rel).unwrap(), bytes);

    // Not a pack id: a usage error naming it.
    let out = repair(&sb, &["../../etc/passwd"]);
    assert_code(&out, 2, "bk-index repair with a bad pack id");
    assert!(stderr(&out).contains("etc/passwd"), "{}", describe(&out));
    // A pack id no pack has (repaired or pruned before): gone, nothing
    // touched, the other packs given still checked.
    let ghost = "ab".repeat(32);
    let out = repair(&sb, &[&ghost, &rel]);
    assert_ok(&out, "bk-index repair of a pack that is gone");
    let reports = parse_records(&out.stdout);
    assert_eq!(reports.len(), 2, "{}", describe(&out));
    assert_eq!(reports[0]["pack"], ghost.as_str());
    assert_eq!(reports[0]["action"], "gone");
    assert_eq!(reports[1]["action"], "keep");
    // A file under a pack's name that is no pack of this repository: a
    // repository error naming it, nothing touched.
    let stray = format!("packs/ab/{ghost}");
    sb.write_repo_file(&stray, &pseudo_random(7, 5000));
    let out = repair(&sb, &[&ghost]);
    assert_code(&out, 5, "bk-index repair of a stray file");
    assert!(stderr(&out).contains(&ghost), "{}", describe(&out));
    assert_eq!(sb.read_repo_file(&stray), Some(pseudo_random(7, 5000)));
    sb.remove_repo_file(&stray);
    assert_eq!(sb.pack_files(), files);
}
