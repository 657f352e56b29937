//! A pipeline that died commits no snapshot (issue 14, item 2). Every
//! stream a bk stage writes starts with `{"bk":"begin","v":1}` and, only
//! if the stage finished, ends with `{"bk":"end","v":1}`; bk-hash and
//! bk-seal pass on an end only when their input had one, and bk-index
//! write refuses (exit 3) a stream that began but did not end: no
//! snapshot, `latest` and the local reuse cache untouched. Records typed
//! by hand (no begin record) still make a snapshot, with a note.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What bk-index write says when it refuses a stream cut short.
const REFUSED: &str = "the record stream ended before its end record: a stage before bk-index write stopped early (killed, disk full, lost server…); no snapshot written";

/// `n` small files of `size` bytes in 20 directories under `dir`.
fn small_files(dir: &Path, n: u64, size: usize) {
    for i in 0..n {
        write_file(
            &dir.join(format!("d{:02}/f{i:05}", i % 20)),
            &pseudo_random(1000 + i, size),
            0o644,
        );
    }
}

/// What a refused run must leave as it was: the snapshots, what `latest`
/// shows, and the local reuse cache (every file and its bytes).
#[derive(Debug, PartialEq)]
struct Committed {
    snapshots: BTreeSet<String>,
    latest: Vec<u8>,
    cache: BTreeMap<PathBuf, Vec<u8>>,
}

fn committed(sb: &Sandbox) -> Committed {
    let cache = sb.reuse_cache_files();
    assert!(
        !cache.is_empty(),
        "no reuse cache in {}",
        sb.snapshot_cache_dir().display()
    );
    Committed {
        snapshots: sb.snapshot_names(),
        latest: sb.show_latest(),
        cache,
    }
}

#[track_caller]
fn assert_nothing_committed(sb: &Sandbox, before: &Committed, what: &str) {
    let now = committed(sb);
    assert_eq!(
        now.snapshots, before.snapshots,
        "{what}: the snapshots changed"
    );
    assert!(now.latest == before.latest, "{what}: `latest` changed");
    assert!(now.cache == before.cache, "{what}: the reuse cache changed");
}

#[track_caller]
fn assert_refused(out: &Output, what: &str) {
    assert_code(out, 3, what);
    let err = stderr(out);
    assert!(err.contains(REFUSED), "{what}: {err}");
}

/// `bk-index write --repo R -r PUB` reading from `stdin`.
fn index_cmd(sb: &Sandbox, stdin: Stdio) -> Command {
    let mut cmd = sb.command("bk-index");
    cmd.arg("write")
        .args(sb.seal_args())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `bk-seal --repo R -r PUB -j 2 --pack-size 64K` reading from `stdin`,
/// its output piped: small packs, so that some are committed (and
/// visible) long before the run ends.
fn seal_cmd(sb: &Sandbox, stdin: Stdio) -> Command {
    let mut cmd = sb.command("bk-seal");
    cmd.args(sb.seal_args())
        .args(["-j", "2", "--pack-size", "64K"])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` at most a minute (then kills it and fails).
fn wait(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{what} still running after a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// The lines of a stream, without the trailing newline of each.
fn lines(ndjson: &[u8]) -> Vec<&[u8]> {
    ndjson
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

/// `ndjson` without its last line (a checked stream without its end).
fn without_last_line(ndjson: &[u8]) -> Vec<u8> {
    let all = lines(ndjson);
    let mut out = Vec::new();
    for l in &all[..all.len() - 1] {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// A sandbox with one complete snapshot of a small tree (so there is a
/// `latest` and a reuse cache to keep), and a bigger tree to back up.
fn with_first_backup(files: u64) -> (Sandbox, PathBuf) {
    let sb = Sandbox::new();
    let first = sb.path("first");
    small_files(&first, 5, 100);
    sb.backup(&first);
    let src = sb.path("src");
    small_files(&src, files, 1500);
    (sb, src)
}

#[test]
fn seal_killed_mid_stream_commits_nothing() {
    let (sb, src) = with_first_backup(5000);
    let before = committed(&sb);
    let (_, hashed) = sb.scan_hash(&src);
    let input = sb.path("hashed.ndjson");
    fs::write(&input, &hashed).unwrap();
    let packs = sb.pack_files().len();
    let blobs = sb.blob_ids().len();

    let mut seal = seal_cmd(&sb, Stdio::from(fs::File::open(&input).unwrap()))
        .spawn()
        .unwrap();
    let index = index_cmd(&sb, Stdio::from(seal.stdout.take().unwrap()))
        .spawn()
        .unwrap();
    // Killed once 20 packs (about 800 objects) are committed and their
    // records have had a moment to go on to bk-index write.
    let start = Instant::now();
    while sb.pack_files().len() < packs + 20 {
        assert!(
            seal.try_wait().unwrap().is_none(),
            "bk-seal finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no object stored"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    seal.kill().unwrap();
    let seal = seal.wait_with_output().unwrap();
    assert_eq!(
        seal.status.signal(),
        Some(9),
        "bk-seal: {}",
        describe(&seal)
    );
    let stored = sb.blob_ids().len() - blobs;
    let index = wait(index, "bk-index write");
    eprintln!(
        "bk-seal killed with {stored} of 5000 objects stored; bk-index write: {}",
        describe(&index)
    );
    assert!(stored > 0 && stored < 5000, "killed too late");
    assert_refused(&index, "bk-index write after bk-seal was killed");
    assert!(index.stdout.is_empty(), "{}", describe(&index));
    assert_nothing_committed(&sb, &before, "bk-seal killed");

    // The next run completes.
    let sealed = sb.seal(&hashed);
    assert_ok(&sealed, "bk-seal rerun");
    sb.index_write(&sealed.stdout);
}

#[test]
fn hash_killed_mid_stream_fails_every_later_stage() {
    let (sb, src) = with_first_backup(400);
    let before = committed(&sb);
    let packs = files_under(&sb.repo.join("packs")).len();
    let scan = sb.run("bk-scan", &args![&src], b"");
    assert_ok(&scan, "bk-scan");
    let scanned = lines(&scan.stdout);

    // bk-hash | bk-seal | bk-index write; bk-hash gets the first half of
    // bk-scan's stream, and is killed while it waits for the rest.
    let mut hash = sb.command("bk-hash");
    hash.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut hash = hash.spawn().unwrap();
    let mut feed = hash.stdin.take().unwrap();
    let mut seal = seal_cmd(&sb, Stdio::from(hash.stdout.take().unwrap()))
        .spawn()
        .unwrap();
    let index = index_cmd(&sb, Stdio::from(seal.stdout.take().unwrap()))
        .spawn()
        .unwrap();
    for l in &scanned[..scanned.len() / 2] {
        feed.write_all(l).unwrap();
        feed.write_all(b"\n").unwrap();
    }
    feed.flush().unwrap();
    // bk-hash has handed records on once bk-seal writes a pack for them
    // (under its temporary name first).
    let start = Instant::now();
    while files_under(&sb.repo.join("packs")).len() == packs {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "bk-seal wrote no object"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    hash.kill().unwrap();
    let hash = hash.wait_with_output().unwrap();
    drop(feed);
    assert_eq!(
        hash.status.signal(),
        Some(9),
        "bk-hash: {}",
        describe(&hash)
    );
    let seal = wait(seal, "bk-seal");
    let index = wait(index, "bk-index write");
    eprintln!(
        "bk-hash killed; bk-seal: {}\nbk-index write: {}",
        describe(&seal),
        describe(&index)
    );
    assert_code(&seal, 3, "bk-seal after bk-hash was killed");
    assert!(
        stderr(&seal).contains(
            "bk-seal: the input ended before its end record: the stage before bk-seal stopped early (killed or failed); not writing an end record"
        ),
        "{}",
        describe(&seal)
    );
    assert_refused(&index, "bk-index write after bk-hash was killed");
    assert_nothing_committed(&sb, &before, "bk-hash killed");
}

#[test]
fn a_stream_that_begins_but_does_not_end_is_refused_at_every_stage() {
    let (sb, src) = with_first_backup(30);
    let run = sb.backup_with(&src, &[], &[]);
    let Backup {
        scan,
        hashed,
        sealed,
        ..
    } = run.backup;
    let before = committed(&sb);

    let cut = |s: &[u8]| without_last_line(s);
    let expect_end = |what: &str, out: &Output| {
        assert_code(out, 3, what);
        let err = stderr(out);
        let program = what.split(' ').next().unwrap();
        assert!(
            err.contains(&format!(
                "{program}: the input ended before its end record: the stage before {program} stopped early (killed or failed); not writing an end record"
            )),
            "{what}: {err}"
        );
        let all = lines(&out.stdout);
        assert_eq!(
            all[0],
            &BEGIN[..BEGIN.len() - 1],
            "{what}: {}",
            describe(out)
        );
        assert!(
            all.iter().all(|l| *l != &END[..END.len() - 1]),
            "{what} wrote an end record: {}",
            describe(out)
        );
        assert_eq!(
            parse_records(&out.stdout).len(),
            lines(&scan).len() - 2,
            "{what} still handed every record on"
        );
    };
    let hash_out = sb.run("bk-hash", &[], &cut(&scan));
    expect_end("bk-hash with bk-scan's stream cut short", &hash_out);
    let seal_out = sb.run("bk-seal", &sb.seal_args(), &cut(&hashed));
    expect_end("bk-seal with bk-hash's stream cut short", &seal_out);
    // What the two stages wrote goes on being refused downstream.
    let seal_out = sb.run("bk-seal", &sb.seal_args(), &hash_out.stdout);
    assert_code(&seal_out, 3, "bk-seal after bk-hash failed");
    let index = sb.index_write_with(&seal_out.stdout, &[]);
    assert_refused(&index, "bk-index write after bk-hash failed");
    let index = sb.index_write_with(&cut(&sealed), &[]);
    assert_refused(&index, "bk-index write of bk-seal's stream cut short");
    // Cut in the middle of a line, as a killed writer leaves it.
    let half = &sealed[..sealed.len() - 40];
    let index = sb.index_write_with(half, &[]);
    assert_refused(&index, "bk-index write of a stream cut mid-line");
    // Two streams, the second cut short.
    let index = sb.index_write_with(&[&sealed[..], &cut(&sealed)].concat(), &[]);
    assert_refused(&index, "bk-index write of a whole and a cut stream");
    assert_nothing_committed(&sb, &before, "streams cut short");

    // Records after the end, or more ends than begins: malformed.
    let one_record = lines(&sealed)[1];
    let after_end = [&sealed[..], one_record, b"\n"].concat();
    let two_ends = [&sealed[..], END].concat();
    for (what, input) in [
        ("a record after the end", &after_end),
        ("two ends", &two_ends),
    ] {
        let index = sb.index_write_with(input, &[]);
        assert_code(&index, 3, what);
        let err = stderr(&index);
        assert!(
            err.contains("a record after the end record")
                || err.contains("an end record without its begin"),
            "{what}: {err}"
        );
    }
    let hash_out = sb.run("bk-hash", &[], &[&scan[..], END].concat());
    assert_code(&hash_out, 3, "bk-hash with two end records");
    assert!(
        !lines(&hash_out.stdout).contains(&&END[..END.len() - 1]),
        "bk-hash passed an end on after a malformed input"
    );
    assert_nothing_committed(&sb, &before, "malformed streams");

    // Each stage's whole stream: a begin record, the records, an end.
    for (what, stream) in [
        ("bk-scan", &scan),
        ("bk-hash", &hashed),
        ("bk-seal", &sealed),
    ] {
        let all = lines(stream);
        assert_eq!(all[0], &BEGIN[..BEGIN.len() - 1], "{what}'s first line");
        assert_eq!(
            all[all.len() - 1],
            &END[..END.len() - 1],
            "{what}'s last line"
        );
        assert_eq!(
            parse_records(stream).len(),
            all.len() - 2,
            "{what}: the control records are the only lines that are not records"
        );
    }
}

#[test]
fn records_typed_by_hand_still_make_a_snapshot() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    write_file(&src.join("a.txt"), b"typed by hand", 0o644);
    write_file(&src.join("b.txt"), b"and this one", 0o600);
    let root = src.to_str().unwrap();
    let typed = format!(
        "{{\"v\":1,\"kind\":\"dir\",\"root\":\"{root}\",\"path\":\".\",\"mode\":16877}}\n\
         {{\"v\":1,\"kind\":\"file\",\"root\":\"{root}\",\"path\":\"a.txt\",\"size\":13,\"mode\":33188}}\n\
         {{\"v\":1, \"kind\":\"file\", \"root\":\"{root}\", \"path\":\"b.txt\", \"size\":12, \"mode\":33152}}\n"
    );
    let hashed = sb.run("bk-hash", &[], typed.as_bytes());
    assert_ok(&hashed, "bk-hash of typed records");
    let mut a = sb.seal_args();
    a.push("--init".into());
    let sealed = sb.run("bk-seal", &a, &hashed.stdout);
    assert_ok(&sealed, "bk-seal of typed records");
    for (what, out) in [("bk-hash", &hashed), ("bk-seal", &sealed)] {
        assert!(
            !contains(&out.stdout, b"\"bk\""),
            "{what} wrote control records for an unchecked input: {}",
            describe(out)
        );
        assert_eq!(parse_records(&out.stdout).len(), 3, "{what}");
    }
    let index = sb.index_write_with(&sealed.stdout, &[]);
    assert_ok(&index, "bk-index write of typed records");
    let err = stderr(&index);
    assert!(
        err.contains("bk-index: note: the input did not start with a begin record")
            && err.contains("could not be checked"),
        "{err}"
    );
    assert_eq!(
        err.matches("note: the input did not start").count(),
        1,
        "one note, not one per record: {err}"
    );
    assert_eq!(sb.snapshot_names().len(), 1);
    let shown = sb.show_latest();
    assert_eq!(parse_records(&shown).len(), 3);
    assert!(
        !contains(&shown, b"\"bk\""),
        "bk-index show printed control records"
    );

    // The records as `bk-index show` prints them (unchecked) are a
    // snapshot again; so are those a jq filter made of a checked stream,
    // with the control records kept (checked, no note) or not.
    let index = sb.index_write_with(&shown, &[]);
    assert_ok(&index, "bk-index write of bk-index show's records");
    let run = sb.backup_with(&src, &[], &[]);
    let jq = |filter: &str| {
        let mut cmd = Command::new("jq");
        cmd.args(["-c", filter]);
        let out = run_command(cmd, &run.backup.sealed, DEFAULT_TIMEOUT);
        assert_ok(&out, &format!("jq {filter} (install jq)"));
        out.stdout
    };
    let kept = jq("select(.bk or (.size > 12))");
    assert!(kept.starts_with(BEGIN) && kept.ends_with(END));
    let index = sb.index_write_with(&kept, &[]);
    assert_ok(&index, "bk-index write after jq kept the control records");
    assert!(
        !stderr(&index).contains("note: the input"),
        "{}",
        describe(&index)
    );
    let dropped = jq("select(.size > 12)");
    let index = sb.index_write_with(&dropped, &[]);
    assert_ok(
        &index,
        "bk-index write after jq dropped the control records",
    );
    assert!(
        stderr(&index).contains("note: the input"),
        "{}",
        describe(&index)
    );
    assert_eq!(sb.snapshot_names().len(), 5);
}

#[test]
fn two_complete_streams_one_after_the_other_make_one_snapshot() {
    let sb = Sandbox::new();
    let (a, b) = (sb.path("a"), sb.path("b"));
    small_files(&a, 10, 300);
    small_files(&b, 12, 300);
    write_file(&sb.path("x/x"), b"x", 0o644);
    sb.backup(&sb.path("x"));
    let mut sealed = Vec::new();
    for tree in [&a, &b] {
        let (_, hashed) = sb.scan_hash(tree);
        let out = sb.seal(&hashed);
        assert_ok(&out, "bk-seal");
        sealed.extend_from_slice(&out.stdout);
    }
    let snapshots = sb.snapshot_names();
    let index = sb.index_write_with(&sealed, &[]);
    assert_ok(&index, "bk-index write of two streams");
    assert!(
        !stderr(&index).contains("note: the input"),
        "{}",
        describe(&index)
    );
    let new: Vec<String> = sb
        .snapshot_names()
        .difference(&snapshots)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let shown = sb.show(new[0].trim_end_matches(".pgp"), &[]);
    assert_ok(&shown, "bk-index show");
    let recs = parse_records(&shown.stdout);
    let roots: BTreeSet<&str> = recs.iter().map(|r| r["root"].as_str().unwrap()).collect();
    assert_eq!(roots.len(), 2, "{roots:?}");
    assert_eq!(recs.iter().filter(|r| r["kind"] == "file").count(), 22);
    // The same two through bk-hash and bk-seal as one stream.
    let (sa, _) = sb.scan_hash(&a);
    let (sb_scan, _) = sb.scan_hash(&b);
    let both = sb.run("bk-hash", &[], &[sa, sb_scan].concat());
    assert_ok(&both, "bk-hash of two scans");
    let all = lines(&both.stdout);
    assert_eq!(all[0], &BEGIN[..BEGIN.len() - 1]);
    assert_eq!(all[all.len() - 1], &END[..END.len() - 1]);
    assert_eq!(
        all.iter().filter(|l| l.starts_with(b"{\"bk\"")).count(),
        2,
        "one begin and one end of its own"
    );
    let sealed = sb.seal(&both.stdout);
    assert_ok(&sealed, "bk-seal of two scans");
    sb.index_write(&sealed.stdout);
}

#[test]
fn the_same_stream_given_twice_is_refused_not_written_with_duplicates() {
    let sb = Sandbox::new();
    let a = sb.path("a");
    small_files(&a, 10, 300);
    let backup = sb.backup(&a);
    let before = sb.snapshot_names();
    let twice = [&backup.sealed[..], &backup.sealed[..]].concat();
    let index = sb.index_write_with(&twice, &[]);
    assert_code(&index, 3, "bk-index write of one stream given twice");
    let err = stderr(&index);
    assert!(
        err.contains("two records of root") && err.contains("no snapshot written"),
        "{err}"
    );
    assert_eq!(sb.snapshot_names(), before, "no snapshot was written");
}
