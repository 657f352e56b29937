//! `bk-index repair`. A blob damaged in place inside a pack (one byte of
//! its ciphertext flipped, the pack's size and header intact) is found by
//! `bk-verify --read-data`, which names its pack; repair keeps the pack's
//! sound blobs and drops the damaged one, and the next backup of the same
//! files stores it again, so that the older snapshot naming it verifies
//! and restores again, on this host and on one with an empty cache.
//! Without repair, every later backup would deduplicate against the
//! broken copy forever.
//!
//! Then attacks, by a hostile storage operator and a careless user: what
//! the user relies on is that repair never drops a sound blob (a key that
//! cannot open a blob, a failed read, a header damaged in place, a pack
//! already gone, repair killed or the server dying mid-run), never
//! deletes a pack before its sound blobs are durable elsewhere, and that
//! repair then a backup make every snapshot whole again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::packs::*;
use common::*;
use serde_json::Value;

fn repair(sb: &Sandbox, extra: &[&str]) -> Output {
    let mut a = args!["repair"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    a.extend(extra.iter().map(OsString::from));
    sb.run("bk-index", &a, b"")
}

fn repair_with_key(sb: &Sandbox, key: &Path, extra: &[&str]) -> Output {
    let mut a = args!["repair"];
    a.extend(sb.repo_args());
    a.extend(args!["--key", key]);
    a.extend(extra.iter().map(OsString::from));
    sb.run("bk-index", &a, b"")
}

fn read_data(sb: &Sandbox, shown: &[u8]) -> Output {
    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    sb.verify(shown, &a)
}

/// `n` random files of `len` bytes under `sb/name`.
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

fn random_tree(sb: &Sandbox, name: &str, n: usize, len: usize, seed: u64) -> PathBuf {
    let tree = sb.path(name);
    for i in 0..n {
        write_file(
            &tree.join(format!("f{i:02}.bin")),
            &pseudo_random(seed + i as u64, len + 97 * i),
            0o644,
        );
    }
    tree
}

/// The pack id (64 hex) of a repository path `packs/ab/<id>`.
fn pid(rel: &str) -> String {
    pack_id_of(rel).to_string()
}

/// Blob ids held by pack `rel`.
fn blobs_in_pack(sb: &Sandbox, rel: &str) -> BTreeSet<String> {
    sb.blobs()
        .into_iter()
        .filter(|(_, places)| places.iter().any(|p| p.pack == rel))
        .map(|(id, _)| id)
        .collect()
}

/// The content blob ids a snapshot's file records name.
fn content_ids(shown: &[u8]) -> BTreeSet<String> {
    parse_records(shown)
        .iter()
        .filter(|r| r.get("objects").is_some())
        .flat_map(object_ids)
        .collect()
}

/// A tree of six random files (seeded by `seed`), backed up, and the
/// first content blob of its snapshot: what a test damages.
struct Backed {
    tree: PathBuf,
    first: String,
    shown: Vec<u8>,
    victim: String,
    at: BlobAt,
}

fn backed(sb: &Sandbox, seed: u64) -> Backed {
    let tree = random_tree(sb, "tree", 6, 30_000, seed);
    let first = sb.backup(&tree).snapshot;
    let shown = sb.show_latest();
    let victim = content_ids(&shown).into_iter().next().unwrap();
    let at = sb.blob_at(&victim);
    Backed {
        tree,
        first,
        shown,
        victim,
        at,
    }
}

/// Backs `tree` up again; that snapshot and `first` must then verify
/// with `--read-data`.
#[track_caller]
fn assert_whole_after_a_backup(sb: &Sandbox, tree: &Path, first: &str) {
    let last = sb.backup(tree).snapshot;
    assert_verifies(sb, first);
    assert_verifies(sb, &last);
}

/// `bk-verify --read-data` of `shown` on another host: a cache of its
/// own, empty at first (`cache` names it in the sandbox); panics unless it
/// is clean.
#[track_caller]
fn assert_verifies_elsewhere(sb: &Sandbox, shown: &[u8], cache: &str, what: &str) {
    let cache = sb.path(cache);
    fs::create_dir_all(&cache).unwrap();
    let mut a = args!["--read-data"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    let out = sb.run_env(
        "bk-verify",
        &a,
        shown,
        &[("XDG_CACHE_HOME", cache.as_os_str())],
    );
    assert_ok(&out, what);
    assert!(out.stdout.is_empty(), "{what}: {}", describe(&out));
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
    let shown_first = sb.show(&first, &[]).stdout;
    assert_verifies_elsewhere(
        &sb,
        &shown_first,
        "other-cache",
        "bk-verify with an empty cache",
    );
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

// ---------------------------------------------------------------------------
// A careless user: the wrong (but valid) key.

/// A repository made for two recipients (me and a recovery key); one host
/// backs up to `me` only (its config names one recipient: accepted, a
/// subset of the repository's recipients). The owner later runs the
/// documented pipeline with the recovery key: bk-verify reports the blobs
/// it cannot decrypt as "decrypt" problems naming their pack, and repair,
/// given those packs with the recovery key, must not take "not encrypted
/// to this key" for damage.
#[test]
fn repair_with_a_key_the_pack_is_not_encrypted_to_deletes_nothing() {
    let sb = Sandbox::new();
    let (other_pub, other_sec) = sb.add_key(KeyKind::Other, "recovery");
    // Run 1: both recipients (creates the repository).
    let t1 = random_tree(&sb, "t1", 4, 20_000, 1);
    let (_, hashed) = sb.scan_hash(&t1);
    let mut a = sb.seal_args();
    a.extend(args!["-r", &other_pub, "--init"]);
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal, two recipients");
    let mut w = args!["write"];
    w.extend(sb.seal_args());
    w.extend(args!["-r", &other_pub]);
    assert_ok(&sb.run("bk-index", &w, &sealed.stdout), "bk-index write");
    let packs_1: BTreeSet<String> = sb.pack_files().into_keys().collect();

    // Run 2: the host's bk-seal is configured with `me` only.
    let t2 = random_tree(&sb, "t2", 4, 20_000, 50);
    let (_, hashed) = sb.scan_hash(&t2);
    let sealed = sb.run("bk-seal", &sb.seal_args(), &hashed);
    assert_ok(&sealed, "bk-seal, one of the two recipients");
    let out = sb.run("bk-index", &w, &sealed.stdout);
    assert_ok(&out, "bk-index write");
    let second = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let second = Path::new(&second)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let shown = sb.show(&second, &[]).stdout;
    let ids2 = content_ids(&shown);
    let packs_2: Vec<String> = sb
        .pack_files()
        .into_keys()
        .filter(|p| !packs_1.contains(p))
        .filter(|p| !blobs_in_pack(&sb, p).is_disjoint(&ids2))
        .collect();
    assert!(!packs_2.is_empty());
    let before = sb.pack_files();

    // The owner checks with the recovery key: bk-verify names the packs.
    let mut a = args!["--read-data", "--key", &other_sec];
    a.extend(sb.repo_args());
    let verified = sb.run("bk-verify", &a, &shown);
    eprintln!("bk-verify with the recovery key: {}", describe(&verified));
    let named: BTreeSet<String> = parse_records(&verified.stdout)
        .iter()
        .filter_map(|p| p.get("pack").and_then(Value::as_str).map(str::to_owned))
        .collect();
    eprintln!("packs bk-verify names: {named:?}");

    // Repair with the recovery key, of exactly those packs.
    let given: Vec<String> = packs_2.iter().map(|p| pid(p)).collect();
    let refs: Vec<&str> = given.iter().map(String::as_str).collect();
    let out = repair_with_key(&sb, &other_sec, &refs);
    eprintln!("repair with the recovery key: {}", describe(&out));
    // A blob none of whose PKESK packets names the key is no damage:
    // repair stops with a key error and deletes nothing.
    assert_eq!(
        sb.pack_files(),
        before,
        "repair with a key the blobs are not encrypted to changed the packs"
    );
    assert_code(&out, 4, "repair with a key the blobs are not encrypted to");
    assert!(
        stderr(&out).contains("nothing deleted"),
        "{}",
        describe(&out)
    );
    assert_restores(&sb, &second, &t2);
}

// ---------------------------------------------------------------------------
// Several packs, the same pack twice, a re-run.

/// Two damaged packs; the same pack given in both of its forms and twice.
/// One report line each; after repair and a backup everything verifies.
fn several_packs_and_the_same_pack_twice(sb: Sandbox) {
    let tree = random_tree(&sb, "tree", 16, 40_000, 7);
    let first = sb
        .backup_with(&tree, &[], &args!["--init", "--pack-size", "128K"])
        .backup
        .snapshot;
    let shown = sb.show_latest();
    let ids: Vec<String> = content_ids(&shown).into_iter().collect();
    // Two victims in two different packs.
    let a = ids[0].clone();
    let pa = sb.blob_at(&a).pack;
    let b = ids
        .iter()
        .find(|id| sb.blob_at(id).pack != pa)
        .unwrap()
        .clone();
    let pb = sb.blob_at(&b).pack;
    let sound: BTreeSet<String> = sb
        .blob_ids()
        .into_iter()
        .filter(|id| *id != a && *id != b)
        .collect();
    sb.corrupt_blob(&a);
    sb.corrupt_blob(&b);

    let out = repair(&sb, &[&pid(&pa), &pa, &pid(&pb), &pid(&pa), &pb]);
    assert_ok(&out, "repair of two packs given several times");
    let reports = parse_records(&out.stdout);
    assert_eq!(reports.len(), 2, "{}", describe(&out));
    for r in &reports {
        assert_eq!(r["action"], "rewrite", "{r}");
        assert_eq!(r["damaged"].as_array().unwrap().len(), 1, "{r}");
    }
    assert!(sb.read_repo_file(&pa).is_none() && sb.read_repo_file(&pb).is_none());
    let after = sb.blob_ids();
    for id in &sound {
        assert!(after.contains(id), "sound blob {id} lost");
    }
    assert!(!after.contains(&a) && !after.contains(&b));
    assert_whole_after_a_backup(&sb, &tree, &first);
    assert_restores(&sb, &first, &tree);
}

backend_tests!(several_packs_and_the_same_pack_twice);

/// The documented pipeline, run twice (the user was not sure the first one
/// went through; or it was killed after deleting the first of its packs):
/// the second run is given packs repair has already deleted, and other
/// packs still damaged. It must finish the job on the packs still there.
#[test]
fn a_second_run_given_packs_already_repaired_finishes_the_others() {
    let sb = Sandbox::new();
    let tree = random_tree(&sb, "tree", 16, 40_000, 70);
    let first = sb
        .backup_with(&tree, &[], &args!["--init", "--pack-size", "128K"])
        .backup
        .snapshot;
    let shown = sb.show_latest();
    let ids: Vec<String> = content_ids(&shown).into_iter().collect();
    let a = ids[0].clone();
    let pa = sb.blob_at(&a).pack;
    let b = ids
        .iter()
        .find(|id| sb.blob_at(id).pack != pa)
        .unwrap()
        .clone();
    let pb = sb.blob_at(&b).pack;
    sb.corrupt_blob(&a);
    sb.corrupt_blob(&b);

    // As a run killed after deleting its first pack leaves things: pa is
    // repaired and gone, pb is still there, damaged.
    assert_ok(&repair(&sb, &[&pid(&pa)]), "repair of the first pack");
    assert!(sb.read_repo_file(&pa).is_none());

    // The same command again, with both packs.
    let out = repair(&sb, &[&pid(&pa), &pid(&pb)]);
    eprintln!("second run: {}", describe(&out));
    // A pack already gone is reported as such; the others are repaired.
    assert_ok(&out, "a second run of the same command");
    assert_eq!(parse_records(&out.stdout)[0]["action"], "gone");
    assert!(
        sb.read_repo_file(&pb).is_none(),
        "the damaged pack still given was not repaired"
    );
    assert_whole_after_a_backup(&sb, &tree, &first);
}

// ---------------------------------------------------------------------------
// A blob stored twice.

/// The damaged blob also has a sound copy in another pack (two hosts
/// stored it at once): repair drops only the damaged copy and leaves the
/// other pack alone; the snapshot verifies at once, without a backup, on
/// this host and on one with an empty cache.
#[test]
fn a_damaged_blob_with_a_sound_copy_elsewhere() {
    let sb = Sandbox::new();
    let Backed {
        tree,
        first,
        shown,
        victim,
        at,
    } = backed(&sb, 300);
    let message = sb.blob_message(&victim);
    let copy = sb.write_pack(&[(&victim, at.size, &message)]);
    let copy_bytes = sb.read_repo_file(&copy).unwrap();
    // Damage the copy in the original pack only.
    sb.flip_repo_byte(&at.pack, at.offset + at.length / 2, 0x55);

    let out = repair(&sb, &[&pid(&at.pack)]);
    assert_ok(&out, "repair");
    let r = &parse_records(&out.stdout)[0];
    assert_eq!(r["action"], "rewrite", "{r}");
    assert_eq!(sb.read_repo_file(&copy).unwrap(), copy_bytes);
    assert!(sb.read_repo_file(&at.pack).is_none());
    assert_eq!(sb.blobs()[&victim].len(), 1);
    assert_verifies(&sb, &first);
    assert_restores(&sb, &first, &tree);

    assert_verifies_elsewhere(&sb, &shown, "other-cache", "bk-verify with an empty cache");

    // Repairing the sound copy's pack: kept as it is.
    let out = repair(&sb, &[&pid(&copy)]);
    assert_ok(&out, "repair of the sound copy");
    assert_eq!(parse_records(&out.stdout)[0]["action"], "keep");
    assert_eq!(sb.read_repo_file(&copy).unwrap(), copy_bytes);
}

// ---------------------------------------------------------------------------
// Catalogue pieces.

/// The damaged blob is a piece of the snapshot's catalogue: `bk-index
/// show` fails naming it and its pack; repair drops it; the next backup of
/// the same tree stores the piece again and the old snapshot shows,
/// verifies and restores.
#[test]
fn a_damaged_catalogue_piece_is_stored_again_by_the_next_write() {
    let sb = Sandbox::new();
    let tree = random_tree(&sb, "tree", 8, 10_000, 900);
    let first = sb.backup(&tree).snapshot;
    let pieces = sb.snapshot_pieces(&first);
    assert!(!pieces.is_empty());
    let piece = pieces[0].clone();
    let at = sb.blob_at(&piece);
    sb.corrupt_blob(&piece);

    let out = sb.show(&first, &[]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let err = stderr(&out);
    eprintln!("show of a damaged catalogue: {err}");
    assert!(err.contains(&pid(&at.pack)), "{err}");

    let out = repair(&sb, &[&pid(&at.pack)]);
    assert_ok(&out, "repair of the catalogue's pack");
    eprintln!("repair: {}", describe(&out));
    assert!(sb.read_repo_file(&at.pack).is_none());
    let out = sb.show(&first, &[]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    eprintln!("show after repair: {}", stderr(&out));

    // The next backup (plain, then incremental) writes its snapshot and
    // stores the piece again.
    let last = sb.backup(&tree).snapshot;
    assert!(sb.blob_ids().contains(&piece), "the piece is stored again");
    for name in [&first, &last] {
        assert_verifies(&sb, name);
    }
    assert_restores(&sb, &first, &tree);
}

/// The same, with the incremental backup the README recommends (bk-hash
/// --reuse auto): the reuse cache is local, so it does not need the
/// damaged catalogue; the content blob dropped by repair is stored again.
#[test]
fn an_incremental_backup_after_repair_stores_the_dropped_content_again() {
    let sb = Sandbox::new();
    let tree = random_tree(&sb, "tree", 8, 30_000, 1900);
    let reuse = sb.reuse_auto_args();
    let first = sb
        .backup_with(&tree, &reuse, &args!["--init"])
        .backup
        .snapshot;
    let shown = sb.show_latest();
    let victim = content_ids(&shown).into_iter().next().unwrap();
    let at = sb.blob_at(&victim);
    sb.corrupt_blob(&victim);
    assert_ok(&repair(&sb, &[&pid(&at.pack)]), "repair");
    assert!(!sb.blob_ids().contains(&victim));
    let last = sb.backup_with(&tree, &reuse, &[]).backup.snapshot;
    assert!(
        sb.blob_ids().contains(&victim),
        "the incremental backup did not store the dropped blob again"
    );
    assert_verifies(&sb, &first);
    assert_verifies(&sb, &last);
    assert_restores(&sb, &first, &tree);
}

// ---------------------------------------------------------------------------
// Locks.

/// Repair during a backup: refused at once (exit 11) without --wait,
/// nothing changed; with --wait it waits for the backup and then repairs.
#[test]
fn repair_during_a_backup_waits_or_refuses() {
    let sb = Sandbox::new();
    let Backed {
        tree,
        first,
        shown: _,
        victim,
        at,
    } = backed(&sb, 40);
    sb.corrupt_blob(&victim);
    let before = sb.pack_files();

    write_file(&tree.join("new.bin"), &pseudo_random(77, 50_000), 0o644);
    let (_, hashed) = sb.scan_hash(&tree);
    let backup = sb.hold_backup_open(&hashed);

    let out = repair(&sb, &[&pid(&at.pack)]);
    assert_code(&out, 11, "repair during a backup");
    assert!(stderr(&out).contains("--wait"), "{}", describe(&out));
    let now = sb.pack_files();
    for k in before.keys() {
        assert!(now.contains_key(k), "{k} deleted during a backup");
    }

    let mut a = args!["repair", "--wait", "60s"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    a.push(pid(&at.pack).into());
    let mut cmd = sb.command("bk-index");
    cmd.args(&a).stdout(Stdio::piped()).stderr(Stdio::piped());
    let waiting = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(sb.read_repo_file(&at.pack).is_some());
    backup.finish();
    let out = waiting.wait_with_output().unwrap();
    assert_ok(&out, "repair --wait");
    assert!(sb.read_repo_file(&at.pack).is_none());
    assert_whole_after_a_backup(&sb, &tree, &first);
}

// ---------------------------------------------------------------------------
// The other host.

/// A second host whose local index knew the damaged pack: after repair on
/// the first host, the second host's next backup (not the first host's)
/// stores the dropped blob again, and both hosts verify and restore.
#[test]
fn the_other_hosts_index_learns_of_the_repair() {
    let sb = Sandbox::new();
    let tree = random_tree(&sb, "tree", 6, 30_000, 4000);
    let first = sb.backup(&tree).snapshot;
    let shown = sb.show_latest();
    // Host 2: its own cache, the same id key (it backs up the same tree).
    let cache2 = sb.fresh_dir("cache2");
    let env2: [(&str, &std::ffi::OsStr); 1] = [("XDG_CACHE_HOME", cache2.as_os_str())];
    let mut a = args!["--read-data"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    assert_ok(&sb.run_env("bk-verify", &a, &shown, &env2), "host 2 verify");

    let victim = content_ids(&shown).into_iter().next().unwrap();
    let at = sb.blob_at(&victim);
    sb.corrupt_blob(&victim);
    assert_ok(&repair(&sb, &[&pid(&at.pack)]), "repair on host 1");

    // Host 2 backs up.
    let scan = sb.run_env("bk-scan", &args![&tree], b"", &env2);
    assert_ok(&scan, "scan");
    let hashed = sb.run_env("bk-hash", &[], &scan.stdout, &env2);
    let sealed = sb.run_env("bk-seal", &sb.seal_args(), &hashed.stdout, &env2);
    assert_ok(&sealed, "host 2 bk-seal");
    let mut w = args!["write"];
    w.extend(sb.seal_args());
    let out = sb.run_env("bk-index", &w, &sealed.stdout, &env2);
    assert_ok(&out, "host 2 bk-index write");
    assert!(sb.blob_ids().contains(&victim), "host 2 stored it again");
    assert_ok(&sb.run_env("bk-verify", &a, &shown, &env2), "host 2 verify");
    assert_verifies(&sb, &first);
    assert_restores(&sb, &first, &tree);
}

// ---------------------------------------------------------------------------
// A pack cut short, a damaged header.

/// A pack cut short (its header, at the end, lost): its blobs count as
/// absent, repair refuses it with a repository error that says so and
/// deletes nothing, and the next backup stores them again.
#[test]
fn a_pack_cut_short() {
    let sb = Sandbox::new();
    let Backed {
        tree,
        first,
        shown,
        victim: _,
        at,
    } = backed(&sb, 5000);
    let size = sb.read_repo_file(&at.pack).unwrap().len() as u64;
    sb.truncate_repo_file(&at.pack, size - 1000);
    let out = read_data(&sb, &shown);
    eprintln!("verify of a cut pack: {}", describe(&out));
    assert_code(&out, 1, "bk-verify of a cut pack");
    let out = repair(&sb, &[&pid(&at.pack)]);
    eprintln!("repair of a cut pack: {}", describe(&out));
    assert_code(&out, 5, "repair of a cut pack");
    assert!(stderr(&out).contains("header"), "{}", describe(&out));
    assert!(sb.read_repo_file(&at.pack).is_some());
    assert_whole_after_a_backup(&sb, &tree, &first);
}

/// A pack whose header (at its end) is damaged in place, its size kept.
/// This host's index still lists its blobs from before (it knows the pack
/// by id and size); another host's, or bk-verify --read-data's, finds the
/// header bad and leaves the pack out. Repair reads the whole pack: it
/// must not call it sound.
#[test]
fn a_pack_whose_header_is_damaged_in_place_is_not_called_sound() {
    let sb = Sandbox::new();
    let Backed {
        tree: _,
        first,
        shown,
        victim: _,
        at,
    } = backed(&sb, 6000);
    let size = sb.read_repo_file(&at.pack).unwrap().len() as u64;
    // A byte of the header (just before the 88-byte footer).
    sb.flip_repo_byte(&at.pack, size - 88 - 10, 0x20);
    let out = repair(&sb, &["--dry-run", &pid(&at.pack)]);
    eprintln!("repair --dry-run, header damaged: {}", describe(&out));
    // This host's index still knows the pack by id and size; repair reads
    // the header again, finds it damaged, and rewrites the pack: every
    // blob is sound, so every blob is kept, under a header that verifies.
    let reports = parse_records(&out.stdout);
    assert_ok(&out, "repair --dry-run of a pack whose header is damaged");
    assert_eq!(reports[0]["action"], "rewrite", "{}", describe(&out));
    assert!(reports[0]["header"].is_string(), "{}", describe(&out));
    let out = repair(&sb, &[&pid(&at.pack)]);
    assert_ok(&out, "repair of a pack whose header is damaged");
    assert!(sb.read_repo_file(&at.pack).is_none());
    // No backup needed: nothing was lost, on this host or an empty cache.
    assert_verifies(&sb, &first);
    assert_verifies_elsewhere(
        &sb,
        &shown,
        "other-cache",
        "bk-verify with an empty cache after the header repair",
    );
}

/// bk-verify with a key the blobs are not encrypted to (a key problem, not
/// damage): it must not name their packs for repair, nor suggest it.
#[test]
fn bk_verify_does_not_send_key_problems_to_repair() {
    let sb = Sandbox::new();
    let (other_pub, other_sec) = sb.add_key(KeyKind::Other, "recovery");
    let t1 = random_tree(&sb, "t1", 3, 20_000, 1);
    let (_, hashed) = sb.scan_hash(&t1);
    let mut a = sb.seal_args();
    a.extend(args!["-r", &other_pub, "--init"]);
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal");
    let mut w = args!["write"];
    w.extend(sb.seal_args());
    w.extend(args!["-r", &other_pub]);
    assert_ok(&sb.run("bk-index", &w, &sealed.stdout), "bk-index write");
    let t2 = random_tree(&sb, "t2", 3, 20_000, 50);
    let (_, hashed) = sb.scan_hash(&t2);
    let sealed = sb.run("bk-seal", &sb.seal_args(), &hashed);
    assert_ok(&sealed, "bk-seal, `me` only");
    assert_ok(&sb.run("bk-index", &w, &sealed.stdout), "bk-index write");
    let shown = sb.show_latest();
    let mut a = args!["--read-data", "--key", &other_sec];
    a.extend(sb.repo_args());
    let out = sb.run("bk-verify", &a, &shown);
    eprintln!("{}", describe(&out));
    assert_ne!(out.status.code(), Some(0));
    // A key problem is no damage: reported as "key", naming no pack, and
    // repair is not suggested.
    assert!(
        parse_records(&out.stdout)
            .iter()
            .all(|p| p["problem"] == "key"),
        "{}",
        describe(&out)
    );
    let named = parse_records(&out.stdout)
        .iter()
        .filter(|p| p.get("pack").is_some())
        .count();
    assert_eq!(named, 0, "key problems name packs for repair");
    assert!(
        !stderr(&out).contains("bk-index repair"),
        "{}",
        describe(&out)
    );
}

/// A blob stored in two packs, each with a damaged blob of its own:
/// repair of both copies the blob (once or twice) and every host still
/// finds every blob afterwards (an empty cache reads the new packs'
/// headers).
fn two_damaged_packs_sharing_a_sound_blob(sb: Sandbox) {
    let tree = random_tree(&sb, "tree", 6, 30_000, 8000);
    let first = sb.backup(&tree).snapshot;
    let shown = sb.show_latest();
    let ids: Vec<String> = content_ids(&shown).into_iter().collect();
    let (x, y, z) = (&ids[0], &ids[1], &ids[2]);
    let pa = sb.blob_at(x).pack;
    assert_eq!(sb.blob_at(y).pack, pa);
    let xm = sb.blob_message(x);
    let zm = sb.blob_message(z);
    let (xs, zs) = (sb.blob_at(x).size, sb.blob_at(z).size);
    let pb = sb.write_pack(&[(x, xs, &xm), (z, zs, &zm)]);
    // Damage y in A and z's copy in B.
    sb.corrupt_blob(y);
    let zb = sb.blobs()[z].iter().find(|p| p.pack == pb).unwrap().clone();
    sb.flip_repo_byte(&pb, zb.offset + zb.length / 2, 0x55);
    let out = repair(&sb, &[&pid(&pa), &pid(&pb)]);
    assert_ok(&out, "repair of both");
    eprintln!("{}", describe(&out));
    assert!(sb.read_repo_file(&pa).is_none() && sb.read_repo_file(&pb).is_none());
    let now = sb.blobs();
    assert!(now.contains_key(x) && now.contains_key(z) && !now.contains_key(y));
    let last = sb.backup(&tree).snapshot;
    for name in [&first, &last] {
        assert_verifies(&sb, name);
        let shown = sb.show(name, &[]).stdout;
        assert_verifies_elsewhere(&sb, &shown, "other-cache", "bk-verify with an empty cache");
    }
}

backend_tests!(two_damaged_packs_sharing_a_sound_blob);

// ---------------------------------------------------------------------------
// SIGKILL at random moments.

/// A small pseudo-random generator (the delays of the kills).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Again and again: a fresh run of files in several packs, one blob
/// damaged in each of three packs, repair of the three killed (SIGKILL)
/// at a random moment. After each kill every sound blob is in some pack;
/// a second repair of the damaged packs still there finishes the job; a
/// backup then makes the run's snapshot whole.
fn repair_killed_at_random_moments_loses_no_sound_blob(sb: Sandbox) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = Lcg(seed);
    let init = sb.fresh_dir("init");
    write_file(&init.join("x"), b"x", 0o644);
    sb.backup(&init);
    let mut snapshots = Vec::new();
    let mut limit = Duration::from_millis(400);
    let rounds = if sb.backend() == Backend::S3 { 5 } else { 10 };
    for n in 0..rounds {
        let tree = random_tree(&sb, &format!("run{n}"), 24, 60_000, 10_000 * (n + 1));
        let packs_before: BTreeSet<String> = sb.pack_files().into_keys().collect();
        let run = sb
            .backup_with(&tree, &[], &args!["--pack-size", "256K"])
            .backup
            .snapshot;
        let shown = sb.show(&run, &[]).stdout;
        let ids = content_ids(&shown);
        let all = sb.blobs();
        let mut by_pack: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in &ids {
            let p = all[id][0].pack.clone();
            if !packs_before.contains(&p) {
                by_pack.entry(p).or_default().push(id.clone());
            }
        }
        let targets: Vec<(String, String)> = by_pack
            .iter()
            .filter(|(_, v)| v.len() >= 2)
            .take(3)
            .map(|(p, v)| (p.clone(), v[0].clone()))
            .collect();
        assert_eq!(targets.len(), 3, "{by_pack:?}");
        for (_, id) in &targets {
            sb.corrupt_blob(id);
        }
        let damaged: BTreeSet<String> = targets.iter().map(|(_, id)| id.clone()).collect();
        let sound: BTreeSet<String> = sb
            .blob_ids()
            .into_iter()
            .filter(|id| !damaged.contains(id))
            .collect();
        let given: Vec<String> = targets.iter().map(|(p, _)| pid(p)).collect();

        let delay = Duration::from_micros(rng.next() % (limit.as_micros() as u64 + 1));
        let mut a = args!["repair"];
        a.extend(sb.repo_args());
        a.extend(sb.key_args());
        a.extend(given.iter().map(OsString::from));
        let mut cmd = sb.command("bk-index");
        cmd.args(&a).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let took = started.elapsed();
        eprintln!(
            "round {n}: killed after {delay:?} (limit {limit:?}): {:?}; stderr {}",
            out.status,
            stderr(&out)
        );
        if out.status.success() {
            // It finished before the kill: aim earlier next time.
            limit = took.mul_f32(0.9);
        }
        let now = sb.blob_ids();
        for id in &sound {
            assert!(
                now.contains(id),
                "round {n}: sound blob {id} lost by a repair killed after {delay:?}"
            );
        }
        // A second repair of the damaged packs still there.
        let left: Vec<String> = targets
            .iter()
            .filter(|(p, _)| sb.read_repo_file(p).is_some())
            .map(|(p, _)| pid(p))
            .collect();
        if !left.is_empty() {
            let refs: Vec<&str> = left.iter().map(String::as_str).collect();
            let out = repair(&sb, &refs);
            assert_ok(&out, &format!("round {n}: repair after a killed repair"));
        }
        let now = sb.blob_ids();
        for id in &sound {
            assert!(now.contains(id), "round {n}: sound blob {id} lost");
        }
        for id in &damaged {
            assert!(!now.contains(id), "round {n}: damaged blob {id} kept");
        }
        for (p, _) in &targets {
            assert!(sb.read_repo_file(p).is_none(), "round {n}: {p} kept");
        }
        sb.backup(&tree);
        snapshots.push((run, tree));
    }
    for (name, tree) in &snapshots {
        assert_verifies(&sb, name);
        assert_restores(&sb, name, tree);
    }
    if sb.backend() == Backend::Dir {
        let left = leftover_tmp_packs(&sb.repo);
        eprintln!("temporary packs left by killed repairs: {left:?}");
    }
}

backend_tests!(repair_killed_at_random_moments_loses_no_sound_blob);

// ---------------------------------------------------------------------------
// Memory.

/// Repair of packs holding 64 MiB of a large file (chunks), two of them
/// damaged: peak RSS under 64 MiB (the limit the other programs keep).
fn repair_of_large_packs_is_bounded_in_memory(sb: Sandbox) {
    let tree = sb.fresh_dir("tree");
    write_pseudo_random_file(&tree.join("big.bin"), 4242, 64 << 20);
    let first = sb.backup(&tree).snapshot;
    let shown = sb.show_latest();
    let ids: Vec<String> = object_ids(find_record(&parse_records(&shown), b"big.bin"));
    let all = sb.blobs();
    let mut packs: Vec<String> = ids.iter().map(|id| all[id][0].pack.clone()).collect();
    packs.sort();
    packs.dedup();
    eprintln!("{} chunks in {} packs", ids.len(), packs.len());
    let a = ids[1].clone();
    let b = ids
        .iter()
        .rev()
        .find(|id| all[*id][0].pack != all[&a][0].pack)
        .unwrap()
        .clone();
    sb.corrupt_blob(&a);
    sb.corrupt_blob(&b);
    let mut args = args!["repair"];
    args.extend(sb.repo_args());
    args.extend(sb.key_args());
    args.extend(packs.iter().map(|p| OsString::from(pid(p))));
    let (out, kib) = sb.run_measured("bk-index", &args, b"", Duration::from_secs(300));
    assert_ok(&out, "repair");
    eprintln!(
        "bk-index repair of {} packs: peak RSS {kib} KiB",
        packs.len()
    );
    assert!(kib < 64 << 10, "bk-index repair took {kib} KiB");
    sb.backup(&tree);
    assert_verifies(&sb, &first);
}

backend_tests!(repair_of_large_packs_is_bounded_in_memory);

// ---------------------------------------------------------------------------
// S3 going away mid-repair.

/// The S3 server stops (SIGTERM: requests in flight cut off) at a random
/// moment of a repair and comes back: whatever repair managed, every sound
/// blob is still stored, and a repair run again of the damaged packs left
/// finishes the job.
#[test]
fn s3_outage_during_repair_loses_no_sound_blob() {
    let sb = Sandbox::s3();
    let init = sb.fresh_dir("init");
    write_file(&init.join("x"), b"x", 0o644);
    sb.backup(&init);
    let mut rng = Lcg(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64);
    for n in 0..2u64 {
        let tree = random_tree(&sb, &format!("run{n}"), 24, 60_000, 777 * (n + 1));
        let before: BTreeSet<String> = sb.pack_files().into_keys().collect();
        sb.backup_with(&tree, &[], &args!["--pack-size", "256K"]);
        let all = sb.blobs();
        let mut by_pack: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, places) in &all {
            if !before.contains(&places[0].pack) {
                by_pack
                    .entry(places[0].pack.clone())
                    .or_default()
                    .push(id.clone());
            }
        }
        let targets: Vec<(String, String)> = by_pack
            .iter()
            .filter(|(_, v)| v.len() >= 2)
            .take(3)
            .map(|(p, v)| (p.clone(), v[0].clone()))
            .collect();
        for (_, id) in &targets {
            sb.corrupt_blob(id);
        }
        let damaged: BTreeSet<String> = targets.iter().map(|(_, id)| id.clone()).collect();
        let sound: BTreeSet<String> = sb
            .blob_ids()
            .into_iter()
            .filter(|id| !damaged.contains(id))
            .collect();
        let given: Vec<String> = targets.iter().map(|(p, _)| pid(p)).collect();
        let mut a = args!["repair"];
        a.extend(sb.repo_args());
        a.extend(sb.key_args());
        a.extend(given.iter().map(OsString::from));
        let mut cmd = sb.command("bk-index");
        cmd.args(&a).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let delay = Duration::from_millis(rng.next() % 150);
        std::thread::sleep(delay);
        sb.s3_repo().server.stop();
        let out = child.wait_with_output().unwrap();
        sb.s3_repo().server.restart();
        eprintln!(
            "round {n}: outage after {delay:?}: {:?} {}",
            out.status,
            stderr(&out).lines().last().unwrap_or("")
        );
        let now = sb.blob_ids();
        for id in &sound {
            assert!(now.contains(id), "round {n}: sound blob {id} lost");
        }
        let left: Vec<String> = targets
            .iter()
            .filter(|(p, _)| sb.read_repo_file(p).is_some())
            .map(|(p, _)| pid(p))
            .collect();
        if !left.is_empty() {
            let refs: Vec<&str> = left.iter().map(String::as_str).collect();
            assert_ok(&repair(&sb, &refs), "repair again");
        }
        let now = sb.blob_ids();
        for id in &sound {
            assert!(now.contains(id), "round {n}: sound blob {id} lost");
        }
        for id in &damaged {
            assert!(!now.contains(id), "round {n}: damaged {id} kept");
        }
    }
}
