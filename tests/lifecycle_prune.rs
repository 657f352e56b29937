//! Keeping a repository for years: `bk-index forget` on snapshots with
//! synthetic times, `bk-index prune` (bytes really freed, restores still
//! clean), and prune's safety against a backup running at the same time
//! (two processes) or sealed in one run and indexed in another.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `bk-index write --host HOST --time STAMP` of sealed records (STAMP as
/// `20250101T080000`); the snapshot's name.
fn write_as(sb: &Sandbox, sealed: &[u8], host: &str, stamp: &str) -> String {
    let time = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    let mut a = args!["write", "--host", host, "--time", time];
    a.extend(sb.seal_args());
    let out = sb.run("bk-index", &a, sealed);
    assert_ok(&out, "bk-index write --host");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `bk-index forget …` (with `--key` when `with_key`).
fn forget(sb: &Sandbox, extra: &[&str], with_key: bool) -> std::process::Output {
    let mut a = args!["forget"];
    a.extend(sb.repo_args());
    if with_key {
        a.extend(sb.key_args());
    }
    a.extend(extra.iter().map(OsString::from));
    sb.run("bk-index", &a, b"")
}

/// Runs `bk-index prune --key … extra`.
fn prune(sb: &Sandbox, extra: &[&str]) -> std::process::Output {
    let mut a = args!["prune"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    a.extend(extra.iter().map(OsString::from));
    sb.run("bk-index", &a, b"")
}

/// The JSON summary prune prints with `--json`.
fn prune_report(out: &std::process::Output) -> Value {
    serde_json::from_slice(out.stdout.trim_ascii())
        .unwrap_or_else(|e| panic!("prune --json printed no JSON ({e}): {}", describe(out)))
}

/// Time stamps of the snapshots now in the repository, with their hosts
/// (`alpha 20250101T080000`): the time from the name, the host from the
/// root, as `bk-index list` shows them.
fn stamps(sb: &Sandbox) -> BTreeSet<String> {
    let mut a = args!["list", "--json"];
    a.extend(sb.repo_args());
    let out = sb.run("bk-index", &a, b"");
    assert_ok(&out, "bk-index list --json");
    let rows = parse_records(&out.stdout);
    assert_eq!(rows.len(), sb.snapshot_names().len(), "{}", describe(&out));
    rows.iter()
        .map(|r| {
            let (stamp, _) = r["name"].as_str().unwrap().split_once('.').unwrap();
            format!("{} {stamp}", r["host"].as_str().unwrap())
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn forget_applies_policies_per_host_and_roots() {
    let sb = Sandbox::new();
    let t1 = sb.fresh_dir("one");
    write_file(&t1.join("a.txt"), b"tree one", 0o644);
    let t2 = sb.fresh_dir("two");
    write_file(&t2.join("b.txt"), b"tree two", 0o644);
    let first = sb.backup(&t1);
    std::fs::remove_file(sb.repo.join("snapshots").join(&first.snapshot)).unwrap();
    let (_, hashed2) = sb.scan_hash(&t2);
    let sealed2 = sb.seal(&hashed2);
    assert_ok(&sealed2, "bk-seal two");

    // Group A: host alpha, root one. Group B: host beta, root one.
    // Group C: host alpha, root two.
    let plan: [(&[u8], &str, &str); 10] = [
        (&first.sealed, "alpha", "20241215T100000"), // a0 Sun W50, Dec
        (&first.sealed, "alpha", "20250101T080000"), // a1 Wed W01
        (&first.sealed, "alpha", "20250101T200000"), // a2 Wed W01
        (&first.sealed, "alpha", "20250102T100000"), // a3 Thu W01
        (&first.sealed, "alpha", "20250106T100000"), // a4 Mon W02
        (&first.sealed, "alpha", "20250113T100000"), // a5 Mon W03
        (&first.sealed, "alpha", "20250201T100000"), // a6 Sat W05, Feb
        (&first.sealed, "beta", "20250301T100000"),  // b1
        (&sealed2.stdout, "alpha", "20250101T090000"), // c1
        (&sealed2.stdout, "alpha", "20250601T090000"), // c2
    ];
    for (sealed, host, stamp) in plan {
        write_as(&sb, sealed, host, stamp);
    }
    let all = stamps(&sb);
    assert_eq!(all.len(), 10, "{all:?}");

    // No keep option: refused, nothing removed.
    let out = forget(&sb, &[], true);
    assert_code(&out, 2, "forget without a policy");
    assert!(
        stderr(&out).contains("no keep option"),
        "{}",
        describe(&out)
    );

    // Dry run: prints what would go and why, removes nothing.
    let out = forget(
        &sb,
        &[
            "--keep-daily",
            "2",
            "--keep-weekly",
            "3",
            "--keep-monthly",
            "3",
            "--dry-run",
        ],
        true,
    );
    assert_ok(&out, "forget --dry-run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(stamps(&sb), all, "dry run removed snapshots:\n{text}");
    assert_eq!(text.lines().count(), 10, "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("would remove:"))
            .count(),
        3,
        "{text}"
    );
    let a6 = text
        .lines()
        .find(|l| l.contains("20250201T100000"))
        .unwrap();
    assert!(
        a6.starts_with("keep:")
            && a6.contains("daily 2025-02-01")
            && a6.contains("weekly 2025-W05")
            && a6.contains("monthly 2025-02"),
        "{a6}"
    );
    let a0 = text.lines().find(|l| l.contains("20241215T")).unwrap();
    assert!(a0.contains("(monthly 2024-12)"), "{a0}");

    // The same for real: a1, a2, a3 go; groups B and C keep theirs.
    let out = forget(
        &sb,
        &[
            "--keep-daily",
            "2",
            "--keep-weekly",
            "3",
            "--keep-monthly",
            "3",
            "--json",
        ],
        true,
    );
    assert_ok(&out, "forget");
    let lines = parse_records(&out.stdout);
    let removed: BTreeSet<String> = lines
        .iter()
        .filter(|l| l["action"] == "remove")
        .map(|l| l["time"].as_str().unwrap()[..16].to_owned())
        .collect();
    assert_eq!(
        removed,
        set(&["2025-01-01T08:00", "2025-01-01T20:00", "2025-01-02T10:00"])
    );
    let c1 = lines
        .iter()
        .find(|l| l["time"].as_str().unwrap().starts_with("2025-01-01T09"))
        .unwrap();
    assert_eq!(c1["roots"][0], t2.to_str().unwrap(), "{c1}");
    assert_eq!(c1["action"], "keep");
    let expected_left = set(&[
        "alpha 20241215T100000",
        "alpha 20250106T100000",
        "alpha 20250113T100000",
        "alpha 20250201T100000",
        "beta 20250301T100000",
        "alpha 20250101T090000",
        "alpha 20250601T090000",
    ]);
    assert_eq!(stamps(&sb), expected_left);

    // keep-within is relative to the newest of each group: in A (newest
    // 02-01) only 01-13 is within 20 days; in C (newest 06-01) c1 is not.
    let out = forget(&sb, &["--keep-within", "20d"], true);
    assert_ok(&out, "forget --keep-within");
    assert_eq!(
        stamps(&sb),
        set(&[
            "alpha 20250113T100000",
            "alpha 20250201T100000",
            "beta 20250301T100000",
            "alpha 20250601T090000",
        ])
    );

    // Without --key, a backing-up host reads the roots with its id key:
    // the same groups by host and roots, so keep-last 1 keeps the newest
    // of each of the three.
    let out = forget(&sb, &["--keep-last", "1", "-n"], false);
    assert_ok(&out, "forget without --key");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let kept: Vec<&str> = text.lines().filter(|l| l.starts_with("keep:")).collect();
    assert_eq!(kept.len(), 3, "{text}");
    for stamp in ["20250201T100000", "20250301T100000", "20250601T090000"] {
        assert!(kept.iter().any(|l| l.contains(stamp)), "{stamp}: {text}");
    }
    let err = stderr(&out);
    assert!(
        err.contains("host beta, roots ") && err.contains("host alpha, roots "),
        "{err}"
    );

    // With neither the id key nor --key, the snapshots cannot be told from
    // forged ones: refused; allowed unauthenticated, they cannot be
    // grouped either and all count as one group.
    let id_key = sb
        .data_home
        .join("bk")
        .join(format!("{}.idkey", sb.repo_id()));
    let aside = sb.path("id-key-aside");
    std::fs::rename(&id_key, &aside).unwrap();
    let out = forget(&sb, &["--keep-last", "1", "-n"], false);
    assert_code(&out, 5, "forget with no key at all");
    assert!(
        stderr(&out).contains("forgetting nothing"),
        "{}",
        describe(&out)
    );
    let out = forget(
        &sb,
        &["--keep-last", "1", "-n", "--allow-unauthenticated"],
        false,
    );
    assert_ok(&out, "forget --allow-unauthenticated with no key at all");
    assert!(
        stderr(&out).contains("all count as one group"),
        "{}",
        describe(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let kept: Vec<&str> = text.lines().filter(|l| l.starts_with("keep:")).collect();
    assert_eq!(kept.len(), 1, "{text}");
    assert!(kept[0].contains("20250601T090000"), "{text}");
    std::fs::rename(&aside, &id_key).unwrap();
    assert_eq!(stamps(&sb).len(), 4, "dry run removed something");

    // --host limits forget to one host's snapshots.
    let out = forget(&sb, &["--keep-last", "1", "--host", "alpha"], true);
    assert_ok(&out, "forget --host alpha");
    assert_eq!(
        stamps(&sb),
        set(&[
            "alpha 20250201T100000",
            "beta 20250301T100000",
            "alpha 20250601T090000",
        ])
    );
}

/// Backs up `tree` with one bk-seal worker, so that the run's contents
/// go into one pack (two workers may each open one).
fn backup_one_pack(sb: &Sandbox, tree: &Path) -> Backup {
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

/// Object ids named by sealed records.
fn ids(sealed: &[u8]) -> BTreeSet<String> {
    parse_records(sealed).iter().flat_map(object_ids).collect()
}

/// Writes `n` random files of `size` bytes named `prefix-i` under `dir`.
fn fill(dir: &Path, prefix: &str, n: usize, size: usize, seed: u64) {
    for i in 0..n {
        write_file(
            &dir.join(format!("{prefix}-{i}.bin")),
            &pseudo_random(seed + i as u64, size),
            0o644,
        );
    }
}

fn remove_matching(dir: &Path, prefix: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with(prefix) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// The pack holding blob `id`.
fn pack_of(sb: &Sandbox, id: &str) -> String {
    sb.blob_at(id).pack
}

/// The plan lines `--verbose-plan` prints, by pack.
fn plan_by_pack(out: &std::process::Output) -> std::collections::BTreeMap<String, Value> {
    parse_records(&out.stdout)
        .into_iter()
        .filter(|l| l.get("action").is_some())
        .map(|l| {
            let id = l["pack"].as_str().unwrap();
            (format!("packs/{}/{id}", &id[..2]), l)
        })
        .collect()
}

#[test]
fn prune_frees_the_objects_of_forgotten_snapshots() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("common.txt"), b"in both backups", 0o644);
    fill(&tree, "a", 6, 200 << 10, 100);
    let a = backup_one_pack(&sb, &tree);
    let a_pieces: BTreeSet<String> = sb.snapshot_pieces(&a.snapshot).into_iter().collect();
    remove_matching(&tree, "a-");
    fill(&tree, "b", 4, 150 << 10, 200);
    let b = backup_one_pack(&sb, &tree);
    let (a_ids, b_ids) = (ids(&a.sealed), ids(&b.sealed));
    let a_only: BTreeSet<&String> = a_ids.difference(&b_ids).collect();
    assert_eq!(a_only.len(), 6);
    let blobs = sb.blobs();
    let a_only_bytes: u64 = a_only.iter().map(|id| blobs[*id][0].length).sum();
    // A's contents share a pack with common.txt, which B uses too; A's
    // catalogue pieces have a pack of their own.
    let a_pack = pack_of(&sb, &a_ids.iter().next().unwrap().clone());
    assert!(a_ids.iter().all(|id| pack_of(&sb, id) == a_pack));
    let a_pieces_pack = pack_of(&sb, a_pieces.iter().next().unwrap());
    let packs = sb.pack_files();

    // Leftover temporary files: one old, one fresh.
    let old_tmp = sb.repo.join("packs/00/.tmp-0123456789abcdef");
    let new_tmp = sb.repo.join("packs/00/.tmp-fedcba9876543210");
    write_file(&old_tmp, &[7u8; 1000], 0o600);
    write_file(&new_tmp, &[7u8; 1000], 0o600);
    set_mtime_ns(&old_tmp, T0);

    let out = forget(&sb, &["--keep-last", "1"], true);
    assert_ok(&out, "forget --keep-last 1");
    assert_eq!(sb.snapshot_names(), set(&[&b.snapshot]));

    // Default grace (24h): every pack is fresh, nothing goes but the old
    // temporary file.
    let out = prune(&sb, &["--json"]);
    assert_ok(&out, "prune");
    let r = prune_report(&out);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["packs_repacked"], 0, "{r}");
    assert_eq!(r["packs_within_grace"], 2, "{r}");
    assert_eq!(r["tmp_deleted"], 1, "{r}");
    assert!(!old_tmp.exists() && new_tmp.exists());
    std::fs::remove_file(&new_tmp).unwrap();
    assert_eq!(sb.pack_files(), packs);

    // Dry run with no grace: the plan, pack by pack, and nothing deleted.
    let before_bytes = du_bytes(&sb.repo);
    let out = prune(&sb, &["--grace", "0s", "--dry-run", "--verbose-plan"]);
    assert_ok(&out, "prune --dry-run --verbose-plan");
    let plan = plan_by_pack(&out);
    assert_eq!(
        plan.keys().cloned().collect::<BTreeSet<_>>(),
        packs.keys().cloned().collect::<BTreeSet<_>>(),
        "one plan line per pack"
    );
    for (pack, line) in &plan {
        let want = if *pack == a_pack {
            // common.txt is used, A's six files (almost all of it) not.
            "repack"
        } else if *pack == a_pieces_pack {
            "delete"
        } else {
            "keep"
        };
        assert_eq!(line["action"], want, "{pack}: {line}");
        assert_eq!(line["size"], packs[pack], "{line}");
    }
    assert_eq!(plan[&a_pack]["used_blobs"], 1, "{}", plan[&a_pack]);
    assert_eq!(plan[&a_pack]["unused_blobs"], 6, "{}", plan[&a_pack]);
    assert_eq!(
        plan[&a_pack]["unused_bytes"], a_only_bytes,
        "{}",
        plan[&a_pack]
    );
    assert!(
        stderr(&out).contains("would delete 1 packs with nothing used and repacked 1"),
        "{}",
        describe(&out)
    );
    // Allowed to keep all of a pack unused, prune only deletes.
    let out = prune(
        &sb,
        &[
            "--grace",
            "0s",
            "--dry-run",
            "--verbose-plan",
            "--max-unused",
            "100",
        ],
    );
    assert_ok(&out, "prune --dry-run --max-unused 100");
    assert_eq!(plan_by_pack(&out)[&a_pack]["action"], "keep");
    assert_eq!(sb.pack_files(), packs, "a dry run changed the packs");
    assert_eq!(du_bytes(&sb.repo), before_bytes);

    // For real.
    let out = prune(&sb, &["--grace", "0s", "--json"]);
    assert_ok(&out, "prune --grace 0s");
    let r = prune_report(&out);
    let after_bytes = du_bytes(&sb.repo);
    eprintln!(
        "MEASURED prune: {r}; A's plaintext {} bytes; repository {before_bytes} -> {after_bytes} bytes (du -sb)",
        6 * (200 << 10)
    );
    assert_eq!(r["packs_deleted"], 1, "{r}");
    assert_eq!(r["packs_repacked"], 1, "{r}");
    assert_eq!(r["blobs_copied"], 1, "{r}");
    assert_eq!(r["packs_written"], 1, "{r}");
    assert_eq!(r["missing_referenced"], 0, "{r}");
    let after = sb.blobs();
    for id in a_only.iter().copied().chain(&a_pieces) {
        assert!(!after.contains_key(id), "A's blob {id} survived");
    }
    for id in &b_ids {
        assert!(after.contains_key(id), "B's blob {id} was deleted");
    }
    assert!(after.values().all(|places| places.len() == 1));
    assert!(!sb.pack_files().contains_key(&a_pack));
    // The repository shrinks by about A's contents (prune also appends a
    // line per deleted pack to the inventory).
    let shrunk = before_bytes - after_bytes;
    assert!(
        shrunk + 4096 >= a_only_bytes && shrunk < a_only_bytes + (64 << 10),
        "du shrank by {shrunk}, A's contents were {a_only_bytes} bytes"
    );
    assert!(shrunk as f64 >= 0.99 * (6 * (200 << 10)) as f64);
    // What prune says it freed: the two packs, less the new one.
    let now = sb.pack_files();
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

    // B is intact: restores byte for byte and verifies with --read-data.
    let shown = sb.show_latest();
    let dest = sb.fresh_dir("restore");
    assert_ok(&sb.restore(&shown, &dest), "restore B");
    let diffs = diff_trees(
        &read_tree(&tree),
        &read_tree(&restored(&dest, &tree)),
        Compare {
            perm: true,
            file_mtime: true,
            dir_mtime: false,
        },
    );
    assert!(diffs.is_empty(), "{diffs:#?}");
    let mut v = args!["--read-data"];
    v.extend(sb.key_args());
    assert_ok(&sb.verify(&shown, &v), "bk-verify --read-data after prune");

    // A second prune finds nothing to do.
    let r = prune_report(&prune(&sb, &["--grace", "0s", "--json"]));
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(r["packs_repacked"], 0, "{r}");
}

#[test]
fn prune_stops_on_a_snapshot_it_cannot_read() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    fill(&tree, "a", 2, 1000, 1);
    let a = sb.backup(&tree);
    // Unreferenced blobs, and a snapshot that is not OpenPGP.
    let packs_before = sb.pack_files();
    std::fs::remove_file(sb.repo.join("snapshots").join(&a.snapshot)).unwrap();
    std::fs::write(
        sb.repo
            .join("snapshots/20250101T000000.000000Z-000000000000000000000000.pgp"),
        b"not a snapshot",
    )
    .unwrap();
    let out = prune(&sb, &["--grace", "0s"]);
    assert_code(&out, 5, "prune with a broken snapshot");
    assert!(
        stderr(&out).contains("nothing deleted") && stderr(&out).contains("20250101T000000"),
        "{}",
        describe(&out)
    );
    assert_eq!(sb.pack_files(), packs_before);
    assert!(lock_files(&sb.repo).is_empty(), "prune left its lock");
}

/// A tree backed up as A (+ x.bin, only in A), then as B; A's snapshot is
/// forgotten so A's and x's blobs (one pack) and A's catalogue pieces
/// (another) are unreferenced. x is a third of its pack.
fn repo_with_forgotten_snapshot(sb: &Sandbox) -> (PathBuf, BTreeSet<String>, String) {
    let tree = sb.fresh_dir("tree");
    fill(&tree, "a", 4, 100 << 10, 10);
    write_file(&tree.join("x.bin"), &pseudo_random(99, 200 << 10), 0o644);
    let a = backup_one_pack(sb, &tree);
    let a_rec = a.records();
    let x_id = object_ids(find_record(&a_rec, b"x.bin"))[0].clone();
    assert!(ids(&a.sealed)
        .iter()
        .all(|id| pack_of(sb, id) == pack_of(sb, &x_id)));
    remove_matching(&tree, "a-");
    std::fs::remove_file(tree.join("x.bin")).unwrap();
    fill(&tree, "b", 2, 100 << 10, 20);
    sb.backup(&tree);
    assert_ok(&forget(sb, &["--keep-last", "1"], true), "forget A");
    // A comes back (a backup will reuse its unreferenced objects).
    remove_matching(&tree, "b-");
    fill(&tree, "a", 4, 100 << 10, 10);
    let mut a_ids = ids(&a.sealed);
    a_ids.remove(&x_id);
    (tree, a_ids, x_id)
}

#[test]
fn prune_waits_for_a_running_backup_and_deletes_nothing_it_needs() {
    let sb = Sandbox::new();
    let (tree, a_ids, x_id) = repo_with_forgotten_snapshot(&sb);
    write_file(&tree.join("new.bin"), &pseudo_random(7, 80 << 10), 0o644);
    let (_, hashed) = sb.scan_hash(&tree);
    let lines: Vec<&[u8]> = hashed.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.len() >= 6);

    // The backup starts and is held open in the middle of its input.
    let backup = sb.hold_backup_open(&hashed);

    // Prune without --wait refuses at once, naming the holder.
    let out = prune(&sb, &["--grace", "0s"]);
    assert_code(&out, 11, "prune during a backup");
    let err = stderr(&out);
    assert!(
        err.contains("is locked by bk-seal") || err.contains("is locked by bk-index write"),
        "{err}"
    );
    assert!(
        err.contains("(shared lock) on host") && err.contains("--wait"),
        "{err}"
    );

    // Prune with --wait (and no grace at all) waits for the backup.
    let mut a = args!["prune", "--grace", "0s", "--wait", "60s", "--json"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    let mut pr = sb.command("bk-index");
    pr.args(&a).stdout(Stdio::piped()).stderr(Stdio::piped());
    let packs_before = sb.pack_files();
    let pruner = pr.spawn().expect("start prune --wait");
    std::thread::sleep(Duration::from_millis(1500));
    let pruner_running = pruner.id();
    assert!(
        Path::new(&format!("/proc/{pruner_running}")).exists(),
        "prune --wait should still be waiting"
    );
    let packs_now = sb.pack_files();
    for pack in packs_before.keys() {
        assert!(
            packs_now.contains_key(pack),
            "prune deleted {pack} during the backup"
        );
    }

    // The backup finishes.
    let (_, snapshot) = backup.finish();
    let backup_done = Instant::now();

    let pruned = pruner.wait_with_output().unwrap();
    let prune_done = Instant::now();
    assert_ok(&pruned, "prune --wait");
    assert!(prune_done >= backup_done);
    let r = prune_report(&pruned);
    eprintln!("MEASURED concurrent prune: {r}");
    // Only x.bin's blob (in no remaining snapshot) went from its pack: A's
    // blobs, which the backup reused, were copied into a new pack. A's
    // old catalogue pieces went with their pack.
    assert_eq!(r["packs_repacked"], 1, "{r}");
    assert_eq!(r["blobs_copied"], a_ids.len(), "{r}");
    assert_eq!(r["packs_deleted"], 1, "{r}");
    let blobs = sb.blobs();
    assert!(!blobs.contains_key(&x_id), "x.bin's blob survived");
    for id in &a_ids {
        assert!(blobs.contains_key(id), "prune deleted reused object {id}");
    }
    let shown = sb.show(&snapshot, &[]);
    assert_ok(&shown, "show the concurrent backup");
    let mut v = args!["--read-data"];
    v.extend(sb.key_args());
    let verified = sb.verify(&shown.stdout, &v);
    assert_ok(&verified, "bk-verify --read-data of the concurrent backup");
    assert!(lock_files(&sb.repo).is_empty(), "locks left behind");
}

#[test]
fn records_sealed_in_one_run_survive_prune_until_indexed() {
    let sb = Sandbox::new();
    let (tree, a_ids, x_id) = repo_with_forgotten_snapshot(&sb);
    // Every pack is two days old; A's and x's (and A's pieces') are
    // unreferenced.
    let two_days_ago = (std::time::SystemTime::now() - Duration::from_secs(2 * 86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    for pack in sb.pack_files().keys() {
        set_mtime_ns(&sb.repo.join(pack), two_days_ago);
    }
    let a_pack = pack_of(&sb, &x_id);

    // `bk-seal > file` reuses A's blobs (and refreshes their pack's mtime) …
    let (_, hashed) = sb.scan_hash(&tree);
    let sealed = sb.seal(&hashed);
    assert_ok(&sealed, "bk-seal > file");
    assert!(
        stderr(&sealed).contains("0 new objects"),
        "{}",
        describe(&sealed)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let age = now - mtime_ns(&sb.repo.join(&a_pack));
    assert!(
        age < 3_600_000_000_000,
        "the pack of the reused blobs was not refreshed"
    );

    // … prune with the default grace runs in the gap: A's pack (x in it
    // too) is within the grace period, A's old pieces go …
    let out = prune(&sb, &["--json"]);
    assert_ok(&out, "prune in the gap");
    let r = prune_report(&out);
    assert_eq!(r["packs_deleted"], 1, "{r}");
    assert_eq!(r["packs_repacked"], 0, "{r}");
    assert_eq!(r["packs_within_grace"], 1, "{r}");
    let blobs = sb.blobs();
    for id in a_ids.iter().chain([&x_id]) {
        assert!(blobs.contains_key(id), "prune deleted sealed blob {id}");
    }

    // … `bk-index write < file` later succeeds and verifies clean …
    let snapshot = sb.index_write(&sealed.stdout);
    let shown = sb.show(&snapshot, &[]);
    assert_ok(&shown, "show");
    let mut v = args!["--read-data"];
    v.extend(sb.key_args());
    assert_ok(&sb.verify(&shown.stdout, &v), "verify --read-data");

    // … and once the grace period is over, x goes and A stays.
    let out = prune(&sb, &["--grace", "0s", "--json"]);
    assert_ok(&out, "prune --grace 0s");
    let r = prune_report(&out);
    assert_eq!(r["packs_repacked"], 1, "{r}");
    let blobs = sb.blobs();
    assert!(!blobs.contains_key(&x_id), "the unreused blob should go");
    for id in &a_ids {
        assert!(blobs.contains_key(id), "prune deleted indexed blob {id}");
    }
    assert_ok(
        &sb.verify(&shown.stdout, &v),
        "verify --read-data after prune",
    );
}
