//! The crash test of issue 14: the real pipeline
//! `bk-scan | bk-hash --reuse auto | bk-seal | bk-index write`, four
//! processes joined by pipes, has a randomly chosen stage killed (SIGKILL)
//! at a random moment, several times in a row, with the tree changing
//! between runs; then one run completes. No killed run may leave a
//! snapshot (or move `latest`, or touch the reuse cache); in the end
//! `latest` holds every file of the tree with its right sha256, and every
//! snapshot in the repository passes `bk-verify --read-data`.
//!
//! The seed is printed; `BK_CRASH_SEED=N` replays a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use common::*;

const STAGES: [&str; 4] = ["bk-scan", "bk-hash", "bk-seal", "bk-index write"];
const INDEX: usize = 3;

/// Killed runs in a row, and how many runs may be tried to get them: a
/// kill aimed at a moment after the stage has already finished makes a
/// complete run instead, which is checked as one.
const KILLED_RUNS: usize = 6;
const MAX_RUNS: usize = 4 * KILLED_RUNS;

/// Small files in the tree, and how many of them each run rewrites.
const FILES: u64 = 3000;
const CHANGED: u64 = 150;

/// One run of the pipeline: each stage's exit status and when it ended,
/// and which stage was killed (SIGKILL sent while it ran, and it died of
/// it), if any.
struct Ran {
    ended: Vec<(ExitStatus, Duration)>,
    killed: Option<usize>,
    logs: Vec<PathBuf>,
    snapshots: BTreeSet<String>,
}

impl Ran {
    fn describe(&self) -> String {
        let mut s = String::new();
        for (i, (status, at)) in self.ended.iter().enumerate() {
            let err = fs::read_to_string(&self.logs[i]).unwrap_or_default();
            s.push_str(&format!(
                "\n  {}: {status} after {:?}: {}",
                STAGES[i],
                at,
                err.trim().replace('\n', "\n    ")
            ));
        }
        s
    }
}

/// Runs the pipeline on `tree` (run number `n`); with `kill`, SIGKILLs
/// stage `.0` once `.1` has passed, if it is still running then.
fn run_pipeline(sb: &Sandbox, tree: &Path, n: usize, kill: Option<(usize, Duration)>) -> Ran {
    let logs: Vec<PathBuf> = (0..4).map(|i| sb.path(format!("run{n}-{i}.err"))).collect();
    let log = |i: usize| Stdio::from(fs::File::create(&logs[i]).unwrap());
    let mut children: Vec<Child> = Vec::new();
    let mut scan = sb.command("bk-scan");
    scan.arg(tree)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log(0));
    children.push(scan.spawn().expect("start bk-scan"));
    let mut hash = sb.command("bk-hash");
    hash.args(sb.reuse_auto_args()).args(["-j", "2"]);
    let mut seal = sb.command("bk-seal");
    seal.args(sb.seal_args()).args(["-j", "2"]);
    let mut index = sb.command("bk-index");
    index.arg("write").args(sb.seal_args());
    for (i, mut cmd) in [hash, seal, index].into_iter().enumerate() {
        let input = children[i].stdout.take().unwrap();
        cmd.stdin(Stdio::from(input)).stderr(log(i + 1));
        if i + 1 == INDEX {
            cmd.stdout(fs::File::create(sb.path(format!("run{n}-index.out"))).unwrap());
        } else {
            cmd.stdout(Stdio::piped());
        }
        children.push(cmd.spawn().expect("start a stage"));
    }
    let start = Instant::now();
    let mut ended: Vec<Option<(ExitStatus, Duration)>> = vec![None; 4];
    let mut sent = None;
    loop {
        for (i, child) in children.iter_mut().enumerate() {
            if ended[i].is_none() {
                if let Some(status) = child.try_wait().unwrap() {
                    ended[i] = Some((status, start.elapsed()));
                }
            }
        }
        if let Some((stage, at)) = kill {
            if sent.is_none() && start.elapsed() >= at {
                if ended[stage].is_none() {
                    children[stage].kill().unwrap();
                }
                sent = Some(stage);
            }
        }
        if ended.iter().all(Option::is_some) {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("run {n}: the pipeline did not finish within 120 s: {ended:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ended: Vec<(ExitStatus, Duration)> = ended.into_iter().map(Option::unwrap).collect();
    let killed = sent.filter(|&s| ended[s].0.signal() == Some(9));
    Ran {
        ended,
        killed,
        logs,
        snapshots: snapshots(sb),
    }
}

/// An exit status as `3` or `SIGKILL`.
fn exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(9)) => "SIGKILL".into(),
        _ => status.to_string(),
    }
}

/// Snapshot names in the repository (temporary files left out).
fn snapshots(sb: &Sandbox) -> BTreeSet<String> {
    sb.snapshot_names()
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// `latest` and the reuse cache, which a killed run must leave as they
/// were.
fn committed(sb: &Sandbox) -> (Vec<u8>, BTreeMap<PathBuf, Vec<u8>>) {
    (sb.show_latest(), sb.reuse_cache_files())
}

/// The regular files of `tree` (relative path → sha256 of the content).
fn tree_files(tree: &Path) -> BTreeMap<Vec<u8>, String> {
    use std::os::unix::ffi::OsStrExt;
    files_under(tree)
        .into_iter()
        .map(|rel| {
            let sha = sha256_hex(&fs::read(tree.join(&rel)).unwrap());
            (rel.as_os_str().as_bytes().to_vec(), sha)
        })
        .collect()
}

/// Asserts that snapshot `name` holds every file of `tree`, each with the
/// sha256 of its content now, and no other file.
#[track_caller]
fn assert_complete(sb: &Sandbox, name: &str, tree: &Path, what: &str) {
    let shown = sb.show(name, &[]);
    assert_ok(&shown, &format!("bk-index show {name}"));
    let recs = parse_records(&shown.stdout);
    let files: BTreeMap<Vec<u8>, String> = recs
        .iter()
        .filter(|r| r["kind"] == "file")
        .map(|r| {
            let sha = r["sha256"].as_str().unwrap_or_default().to_owned();
            (rec_path(r), sha)
        })
        .collect();
    let want = tree_files(tree);
    assert_eq!(
        files.len(),
        want.len(),
        "{what}: snapshot {name} has {} files, the tree {}",
        files.len(),
        want.len()
    );
    for (path, sha) in &want {
        assert_eq!(
            files.get(path),
            Some(sha),
            "{what}: snapshot {name}: {}",
            String::from_utf8_lossy(path)
        );
    }
}

/// `bk-index show NAME | bk-verify --read-data --key …`, two processes.
#[track_caller]
fn assert_verifies(sb: &Sandbox, name: &str) {
    let mut show = sb.command("bk-index");
    show.args(["show", name])
        .args(sb.repo_args())
        .args(sb.key_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut show = show.spawn().unwrap();
    let mut verify = sb.command("bk-verify");
    verify
        .arg("--read-data")
        .args(sb.repo_args())
        .args(sb.key_args())
        .stdin(Stdio::from(show.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let verify = verify.spawn().unwrap().wait_with_output().unwrap();
    let show = show.wait_with_output().unwrap();
    assert_ok(&show, &format!("bk-index show {name}"));
    assert_ok(
        &verify,
        &format!("bk-verify --read-data of snapshot {name}"),
    );
}

/// Rewrites `CHANGED` small files of the tree and one large (chunked)
/// file, so that every run has content to hash and seal.
fn change_tree(tree: &Path, rng: &mut StdRng) {
    for _ in 0..CHANGED {
        let i = rng.gen_range(0..FILES);
        let size = rng.gen_range(1..6000);
        write_file(
            &tree.join(format!("d{:02}/f{i:05}", i % 40)),
            &pseudo_random(rng.gen(), size),
            0o644,
        );
    }
    write_pseudo_random_file(&tree.join("big/changing.bin"), rng.gen(), 12 << 20);
}

#[test]
fn killing_a_random_stage_again_and_again_never_leaves_a_partial_snapshot() {
    let started = Instant::now();
    let seed = std::env::var("BK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("crash test seed {seed} (replay with BK_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    for i in 0..FILES {
        write_file(
            &tree.join(format!("d{:02}/f{i:05}", i % 40)),
            &pseudo_random(i, 1 + (i as usize * 37) % 6000),
            0o644,
        );
    }
    write_pseudo_random_file(&tree.join("big/steady.bin"), 1, 20 << 20);
    change_tree(&tree, &mut rng);

    // A first complete backup makes the repository, `latest` and the
    // reuse cache.
    let seal = sb.seal(b"");
    assert_ok(&seal, "bk-seal --init");
    let first = run_pipeline(&sb, &tree, 0, None);
    assert!(
        first.ended.iter().all(|(s, _)| s.success()),
        "the first backup failed (seed {seed}):{}",
        first.describe()
    );
    assert_eq!(first.snapshots.len(), 1);
    // A run that changes a little, timed: each stage is killed at a
    // random moment of the time it took to finish here.
    change_tree(&tree, &mut rng);
    let timed = run_pipeline(&sb, &tree, 1, None);
    assert!(
        timed.ended.iter().all(|(s, _)| s.success()),
        "the second backup failed (seed {seed}):{}",
        timed.describe()
    );
    let mut lifetimes: Vec<Duration> = timed.ended.iter().map(|(_, at)| *at).collect();
    eprintln!("stage lifetimes of an incremental run: {lifetimes:?}");
    let second = timed
        .snapshots
        .difference(&first.snapshots)
        .next()
        .expect("the second run's snapshot");
    assert_complete(&sb, second, &tree, "the second backup");

    let mut before = (timed.snapshots.clone(), committed(&sb));
    let mut killed_runs = 0;
    let mut n = 1;
    while killed_runs < KILLED_RUNS && n <= MAX_RUNS {
        n += 1;
        change_tree(&tree, &mut rng);
        let stage = rng.gen_range(0..STAGES.len());
        let at = lifetimes[stage].mul_f64(rng.gen_range(0.0..0.95));
        let ran = run_pipeline(&sb, &tree, n, Some((stage, at)));
        let new: Vec<&String> = ran.snapshots.difference(&before.0).collect();
        eprintln!(
            "run {n}: SIGKILL for {} at {at:?}: {}; exits {:?}; new snapshots {new:?}",
            STAGES[stage],
            if ran.killed.is_some() {
                "killed"
            } else {
                "it had finished"
            },
            ran.ended.iter().map(|(s, _)| exit(s)).collect::<Vec<_>>()
        );
        match ran.killed {
            // Killed after its end record was out (while it said its
            // summary or exited): what followed got the whole stream, and
            // a whole stream makes a complete snapshot.
            Some(killed) if killed < INDEX && ran.ended[INDEX].0.success() => {
                assert_eq!(new.len(), 1, "run {n}: {new:?}");
                assert_complete(&sb, new[0], &tree, &format!("run {n} (seed {seed})"));
            }
            Some(killed) if killed < INDEX => {
                killed_runs += 1;
                assert!(
                    new.is_empty(),
                    "run {n} (seed {seed}): {} was killed, yet a snapshot was written: {new:?}{}",
                    STAGES[killed],
                    ran.describe()
                );
                assert_eq!(
                    ran.ended[INDEX].0.code(),
                    Some(3),
                    "run {n} (seed {seed}): bk-index write after {} was killed:{}",
                    STAGES[killed],
                    ran.describe()
                );
                assert!(
                    committed(&sb) == before.1,
                    "run {n} (seed {seed}): `latest` or the reuse cache changed:{}",
                    ran.describe()
                );
            }
            Some(_) => {
                // bk-index write itself: it commits only what came whole,
                // so a snapshot it made before it died is complete.
                killed_runs += 1;
                assert!(new.len() <= 1, "{new:?}");
                if let Some(name) = new.first() {
                    assert_complete(&sb, name, &tree, &format!("run {n} (seed {seed})"));
                } else {
                    assert!(committed(&sb).0 == before.1 .0, "run {n}: `latest` changed");
                }
            }
            None => {
                // The stage had finished: a complete run.
                assert!(
                    ran.ended.iter().all(|(s, _)| s.success()),
                    "run {n} (seed {seed}) was not killed, yet failed:{}",
                    ran.describe()
                );
                assert_eq!(new.len(), 1, "run {n}: {new:?}");
                assert_complete(&sb, new[0], &tree, &format!("run {n} (seed {seed})"));
                // Later runs are often quicker than the timed one (warm
                // caches): aim the next kills within the quickest times.
                for (life, (_, at)) in lifetimes.iter_mut().zip(&ran.ended) {
                    *life = (*life).min(*at);
                }
            }
        }
        before = (ran.snapshots.clone(), committed(&sb));
    }
    assert!(
        killed_runs * 2 >= KILLED_RUNS,
        "only {killed_runs} of {} runs were killed before they finished (seed {seed})",
        n - 1
    );

    // One more run, left alone, completes.
    change_tree(&tree, &mut rng);
    let last = run_pipeline(&sb, &tree, n + 1, None);
    assert!(
        last.ended.iter().all(|(s, _)| s.success()),
        "the run after the crashes failed (seed {seed}):{}",
        last.describe()
    );
    let new: Vec<&String> = last.snapshots.difference(&before.0).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let list = sb.run(
        "bk-index",
        &[&args!["list", "--json"][..], &sb.repo_args()].concat(),
        b"",
    );
    assert_ok(&list, "bk-index list --json");
    let names: Vec<String> = parse_records(&list.stdout)
        .iter()
        .map(|v: &Value| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names.iter().cloned().collect::<BTreeSet<_>>(),
        last.snapshots,
        "bk-index list --json"
    );
    let latest = names.last().unwrap();
    assert_eq!(latest, new[0], "`latest` is the last run's snapshot");
    assert_complete(&sb, "latest", &tree, "latest");
    for name in &names {
        assert_verifies(&sb, name.trim_end_matches(".pgp"));
    }
    eprintln!(
        "{killed_runs} runs killed, {} snapshots, all verified, in {:?}",
        names.len(),
        started.elapsed()
    );
}
