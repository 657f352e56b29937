//! `bk-index prune` in format 2 (issue 16): packs partly used are
//! repacked, the repository shrinks by what only forgotten snapshots held
//! (as stored, compressed), what is kept restores and verifies; a backup
//! running beside prune loses nothing; prune killed at any moment leaves a
//! repository the next prune finishes and every kept snapshot verifies.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::packs::*;
use common::*;
use serde_json::Value;

/// The JSON summary prune prints with `--json` (the last line of stdout).
fn prune_report(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("prune --json printed no JSON ({e}): {}", describe(out)))
}

/// Object ids and stored sizes named by sealed records.
fn stored_objects(sealed: &[u8]) -> BTreeMap<String, u64> {
    parse_records(sealed)
        .iter()
        .flat_map(|r| {
            r.get("objects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_owned(),
                o["stored"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Every blob id some pack's header lists, with how many packs list it.
fn blobs_in_packs(sb: &Sandbox) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, (_, entries)) in pack_headers(sb) {
        for e in entries {
            *out.entry(e.id.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// Writes `n` files `prefix-i` under `dir`: text (compressible) for even
/// i, random for odd i, `size` bytes each.
fn fill(dir: &Path, prefix: &str, n: usize, size: usize, seed: u64) {
    for i in 0..n {
        let seed = seed + i as u64;
        let data = if i % 2 == 0 {
            text_of(seed, size)
        } else {
            pseudo_random(seed, size)
        };
        write_file(&dir.join(format!("{prefix}-{i}.dat")), &data, 0o644);
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

/// `bk-verify --inventory` (no key): the inventory matches the packs.
#[track_caller]
fn assert_inventory_clean(sb: &Sandbox) {
    let mut a = args!["--inventory"];
    a.extend(sb.repo_args());
    let out = sb.run("bk-verify", &a, b"");
    assert_ok(&out, "bk-verify --inventory");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}

/// A repository with snapshot A (shared files, A's own files) and B
/// (shared files, B's own files), then A forgotten: the pack of A's
/// backup is partly used (the shared files) and partly not (A's own).
/// Returns the tree (as B), B's snapshot, A's own objects (id → stored)
/// and the plaintext bytes of A's own files.
fn repo_with_a_forgotten(sb: &Sandbox) -> (PathBuf, String, BTreeMap<String, u64>, u64) {
    let tree = sb.fresh_dir("tree");
    fill(&tree, "shared", 6, 150 << 10, 10);
    fill(&tree, "a-own", 6, 200 << 10, 100);
    let a = sb.backup(&tree);
    remove_matching(&tree, "a-own");
    fill(&tree, "b-own", 4, 120 << 10, 200);
    let b = sb.backup(&tree);
    let (a_objects, b_objects) = (stored_objects(&a.sealed), stored_objects(&b.sealed));
    let a_own: BTreeMap<String, u64> = a_objects
        .into_iter()
        .filter(|(id, _)| !b_objects.contains_key(id))
        .collect();
    assert_eq!(a_own.len(), 6);
    let out = forget(sb, &["--keep-last", "1"]);
    assert_ok(&out, "forget --keep-last 1");
    assert_eq!(sb.snapshot_names(), BTreeSet::from([b.snapshot.clone()]));
    (tree, b.snapshot, a_own, 6 * (200 << 10))
}

#[test]
fn prune_repacks_and_frees_what_only_forgotten_snapshots_used() {
    let sb = Sandbox::new();
    let (tree, b, a_own, a_plain) = repo_with_a_forgotten(&sb);
    let a_stored: u64 = a_own.values().sum();
    assert!(
        a_stored < a_plain * 3 / 4,
        "A's text files should be stored compressed: {a_stored} of {a_plain} bytes"
    );

    // With the default grace everything is recent: nothing goes.
    let before = repo_bytes(&sb);
    let packs_before = packs(&sb);
    let out = prune(&sb, &["--max-unused", "0", "--json"]);
    assert_ok(&out, "prune with the default grace");
    let r = prune_report(&out);
    assert_eq!(
        (r["packs_deleted"].as_u64(), r["packs_repacked"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    assert!(r["packs_within_grace"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(packs(&sb), packs_before);

    // A dry run reports and touches nothing.
    let out = prune(
        &sb,
        &["--grace", "0s", "--max-unused", "0", "--dry-run", "--json"],
    );
    assert_ok(&out, "prune --dry-run");
    let dry = prune_report(&out);
    assert_eq!(packs(&sb), packs_before);
    assert_eq!(repo_bytes(&sb), before);

    let out = prune(
        &sb,
        &[
            "--grace",
            "0s",
            "--max-unused",
            "0",
            "--json",
            "--verbose-plan",
        ],
    );
    assert_ok(&out, "prune --grace 0s --max-unused 0");
    let r = prune_report(&out);
    let after = repo_bytes(&sb);
    let shrunk = before - after;
    eprintln!(
        "MEASURED prune: {r}; repository {before} -> {after} bytes; A's own files {a_plain} bytes, stored as {a_stored}"
    );
    let plan: Vec<Value> = parse_records(&out.stdout)
        .into_iter()
        .filter(|v| v.get("action").is_some())
        .collect();
    assert_eq!(plan.len(), packs_before.len(), "one plan line per pack");
    assert!(r["packs_repacked"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        r["packs_deleted"].as_u64().unwrap() >= 1,
        "A's catalogue pack: {r}"
    );
    assert_eq!(r["blobs_copied"], 6, "the shared files' blobs: {r}");
    assert_eq!(r["missing_referenced"], 0, "{r}");
    for k in ["packs_deleted", "packs_repacked", "blobs_copied"] {
        assert_eq!(dry[k], r[k], "the dry run's {k}");
    }
    // About A's own bytes as stored (plus A's catalogue and the headers
    // that listed A's blobs; less the inventory's new lines).
    assert!(
        shrunk + 2 * KIB >= a_stored && shrunk <= a_stored + 64 * KIB,
        "the repository shrank by {shrunk} bytes; A's own blobs were {a_stored}"
    );
    let left = blobs_in_packs(&sb);
    for id in a_own.keys() {
        assert!(!left.contains_key(id), "A's blob {id} is still in a pack");
    }
    assert!(
        left.values().all(|&n| n == 1),
        "a blob in two packs: {left:?}"
    );

    // B is whole.
    assert_restores(&sb, &b, &tree);
    assert_verifies(&sb, &b);
    assert_inventory_clean(&sb);

    // Nothing is left to do.
    let r = prune_report(&prune(
        &sb,
        &["--grace", "0s", "--max-unused", "0", "--json"],
    ));
    assert_eq!(
        (r["packs_deleted"].as_u64(), r["packs_repacked"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
}

#[test]
fn prune_beside_a_running_backup_waits_or_refuses_and_keeps_what_it_needs() {
    let sb = Sandbox::new();
    let (tree, _, a_own, _) = repo_with_a_forgotten(&sb);
    // A's own files come back: the backup reuses their blobs, which no
    // snapshot names any more.
    fill(&tree, "a-own", 6, 200 << 10, 100);
    write_file(&tree.join("new.dat"), &pseudo_random(7, 80 << 10), 0o644);
    let (_, hashed) = sb.scan_hash(&tree);
    let lines: Vec<&[u8]> = hashed.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.len() >= 10);
    let backup = sb.hold_backup_open(&hashed);

    // Without --wait prune refuses at once (exit 11), naming the holder.
    let packs_before = packs(&sb);
    let out = prune(&sb, &["--grace", "0s", "--max-unused", "0"]);
    assert_code(&out, 11, "prune during a backup");
    let err = stderr(&out);
    assert!(
        err.contains("is locked by bk-seal") || err.contains("is locked by bk-index write"),
        "{err}"
    );
    assert_eq!(packs(&sb), packs_before, "a refused prune changed packs");

    // With --wait it waits for the backup, then prunes around it.
    let mut a = args![
        "prune",
        "--grace",
        "0s",
        "--max-unused",
        "0",
        "--wait",
        "120s",
        "--json"
    ];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    let mut pr = sb.command("bk-index");
    pr.args(&a).stdout(Stdio::piped()).stderr(Stdio::piped());
    let pruner = pr.spawn().expect("start prune --wait");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        Path::new(&format!("/proc/{}", pruner.id())).exists(),
        "prune --wait should still be waiting"
    );
    assert_eq!(
        packs(&sb),
        packs_before,
        "prune touched packs during the backup"
    );
    let (seal, snapshot) = backup.finish();
    assert!(
        stderr(&seal).contains("1 new objects added"),
        "only new.dat is new: {}",
        describe(&seal)
    );
    let pruned = pruner.wait_with_output().unwrap();
    assert_ok(&pruned, "prune --wait");
    let r = prune_report(&pruned);
    eprintln!("MEASURED prune after the backup: {r}");
    assert_eq!(r["missing_referenced"], 0, "{r}");
    let left = blobs_in_packs(&sb);
    for id in a_own.keys() {
        assert!(left.contains_key(id), "prune deleted reused blob {id}");
    }
    assert_verifies(&sb, &snapshot);
    assert_restores(&sb, &snapshot, &tree);
    assert!(lock_files(&sb.repo).is_empty(), "locks left behind");
}

/// A small seeded generator (SplitMix64) for the kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn prune_killed_at_any_moment_leaves_a_repository_the_next_prune_finishes() {
    let seed = std::env::var("BK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("prune kill test: seed {seed} (BK_TEST_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    fill(&tree, "base", 4, 100 << 10, 1);
    sb.backup(&tree);
    // How long a prune with work to do takes: kills land anywhere in it.
    let mut window = Duration::from_millis(150);
    let prune_args = ["--grace", "0s", "--max-unused", "0", "--json"];
    let (mut repacked, mut deleted, mut mid_run) = (0, 0, 0);
    const ROUNDS: u64 = 8;
    for round in 1..=ROUNDS {
        // New files, and half of the last round's gone: once the snapshot
        // that last held them is forgotten, the pack they share with the
        // other half is partly used.
        fill(&tree, &format!("r{round}"), 6, 150 << 10, round * 1000);
        for i in [1, 3, 5] {
            let _ = std::fs::remove_file(tree.join(format!("r{}-{i}.dat", round - 1)));
        }
        sb.backup(&tree);
        assert_ok(&forget(&sb, &["--keep-last", "2"]), "forget --keep-last 2");

        // A prune killed with SIGKILL at a random moment.
        let delay = Duration::from_micros(rng.next() % (window.as_micros() as u64 + 1));
        let mut a = args!["prune"];
        a.extend(sb.repo_args());
        a.extend(sb.key_args());
        a.extend(prune_args.iter().map(OsString::from));
        let report = sb.path(format!("killed-prune-{round}.json"));
        let mut cmd = sb.command("bk-index");
        cmd.args(&a)
            .stdout(std::fs::File::create(&report).unwrap())
            .stderr(Stdio::null());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start prune");
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some((status, started.elapsed()));
            }
            if started.elapsed() >= delay {
                break None;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        let _ = child.kill();
        child.wait().unwrap();
        match finished {
            Some((status, took)) => {
                assert!(
                    status.success(),
                    "round {round}: the prune failed: {status}"
                );
                let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
                repacked += r["packs_repacked"].as_u64().unwrap();
                deleted += r["packs_deleted"].as_u64().unwrap();
                // Kill the next one within the time a whole prune takes.
                window = took;
                eprintln!(
                    "round {round}: the prune finished in {took:?}, before the kill at {delay:?}"
                );
            }
            None => {
                mid_run += 1;
                eprintln!("round {round}: prune killed after {delay:?}, mid-run");
            }
        }

        // The next prune finishes, and every kept snapshot is whole.
        let started = Instant::now();
        let out = prune(&sb, &prune_args);
        let took = started.elapsed();
        assert_ok(&out, &format!("round {round}: prune after the killed one"));
        let r = prune_report(&out);
        eprintln!("round {round}: the next prune took {took:?}: {r}");
        assert_eq!(r["missing_referenced"], 0, "round {round}: {r}");
        let (rp, dl) = (
            r["packs_repacked"].as_u64().unwrap(),
            r["packs_deleted"].as_u64().unwrap(),
        );
        if rp + dl > 0 {
            window = took;
        }
        repacked += rp;
        deleted += dl;
        let kept = sb.snapshot_names();
        assert_eq!(kept.len(), 2, "{kept:?}");
        for name in &kept {
            assert_verifies(&sb, name);
        }
        let left = blobs_in_packs(&sb);
        assert!(
            left.values().all(|&n| n == 1),
            "round {round}: a blob in two packs after a full prune"
        );
    }
    eprintln!(
        "MEASURED {mid_run} of {ROUNDS} prunes killed mid-run (seed {seed}); the prunes repacked {repacked} packs and deleted {deleted}"
    );
    assert!(
        repacked > 0 && deleted > 0,
        "the rounds should leave packs to repack and to delete"
    );
    assert_restores(&sb, sb.snapshot_names().last().unwrap(), &tree);
    assert_inventory_clean(&sb);
}
