//! Scale: a million records and a 4 GiB file go through every program in
//! bounded memory (peak RSS measured with /usr/bin/time), and come back
//! exactly (slow: `--ignored`; CI runs them).

mod common;

use std::cmp::Ordering;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(1800);

/// The two tests run one after the other: their disk use adds up, and
/// the throughput printed should not be shared with the other test.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}
const MIB: u64 = 1 << 20;

/// Records in the million-record test.
const N: u64 = 1_000_000;
/// A multiplier coprime with N: emitting record `k * STRIDE % N` for
/// k = 0, 1, … visits every record once, far from sorted order.
const STRIDE: u64 = 611_953;

/// First path components: siblings whose byte order differs from their
/// component order ("a-b" < "a/…" < "a.b" bytewise, but "a" < "a-b" by
/// component), and a non-ASCII one.
const L1: [&str; 10] = ["a", "a-b", "a.b", "a0", "ab", "b", "b b", "c", "é", "z"];
const L3: [&str; 5] = ["x", "x y", "x-y", "x.y", "xy"];

/// The content every file record of the million refers to: one real,
/// sealed object.
struct Content {
    sha256: String,
    size: u64,
    objects: Value,
}

fn root_of(j: u64) -> &'static str {
    if j.is_multiple_of(3) {
        "/srv/bk-scale/r-b"
    } else {
        "/srv/bk-scale/r-a"
    }
}

fn is_file(j: u64) -> bool {
    j.is_multiple_of(4)
}

/// Record `j`: a path five components deep whose last component names
/// `j`; a file (sealed, referring to `content`) for every fourth, a
/// directory otherwise; `x_scale` is an unknown field that must survive.
fn record(j: u64, content: &Content) -> Value {
    let leaf = if is_file(j) {
        format!("f{j}.dat")
    } else {
        format!("n{j}")
    };
    let path = format!(
        "{}/s{}/{}/{:03}/{leaf}",
        L1[(j % 10) as usize],
        (j / 10) % 32,
        L3[((j / 320) % 5) as usize],
        (j / 1600) % 1000
    );
    let t = T0 + j as i64 * 1_000_003;
    let mut rec = json!({
        "v": 1, "root": root_of(j), "path": path,
        "uid": 1000, "gid": 1000, "user": "alice", "group": "staff",
        "mtime_ns": t, "ctime_ns": t + 7, "ino": 5_000_000 + j, "dev": 2049,
        "x_scale": j,
    });
    if is_file(j) {
        rec["kind"] = "file".into();
        rec["size"] = content.size.into();
        rec["mode"] = 0o100644.into();
        rec["nlink"] = 1.into();
        rec["sha256"] = content.sha256.clone().into();
        rec["objects"] = content.objects.clone();
    } else {
        rec["kind"] = "dir".into();
        rec["size"] = 4096.into();
        rec["mode"] = 0o40755.into();
        rec["nlink"] = 2.into();
    }
    rec
}

/// The `j` a record's path names (its last component, "n<j>" or "f<j>.dat").
fn index_of(path: &str) -> u64 {
    let leaf = path.rsplit('/').next().unwrap();
    let digits = leaf[1..].trim_end_matches(".dat");
    digits
        .parse()
        .unwrap_or_else(|_| panic!("unexpected path {path:?}"))
}

/// bk's record order: root bytewise, then path component by component.
fn cmp_entries(a_root: &str, a_path: &str, b_root: &str, b_path: &str) -> Ordering {
    a_root.as_bytes().cmp(b_root.as_bytes()).then_with(|| {
        a_path
            .as_bytes()
            .split(|&c| c == b'/')
            .cmp(b_path.as_bytes().split(|&c| c == b'/'))
    })
}

fn count_lines(path: &Path) -> u64 {
    let mut n = 0;
    for line in BufReader::with_capacity(1 << 20, fs::File::open(path).unwrap()).split(b'\n') {
        line.unwrap();
        n += 1;
    }
    n
}

fn check_rss(over: &mut Vec<String>, what: &str, kib: u64, limit_kib: u64) {
    eprintln!(
        "{what}: peak RSS {kib} KiB ({:.1} MiB)",
        kib as f64 / 1024.0
    );
    if kib >= limit_kib {
        over.push(format!("{what}: peak RSS {kib} KiB >= {limit_kib} KiB"));
    }
}

#[test]
#[ignore = "slow: streams a million records through every program"]
fn a_million_records_stream_through_in_bounded_memory() {
    const LIMIT_KIB: u64 = 128 * 1024;
    let _serial = one_at_a_time();
    let sb = Sandbox::new();

    // One real file, sealed, whose sha256 and objects every file record
    // of the million reuses.
    let tree = sb.path("tree");
    write_file(&tree.join("real.txt"), b"the one real content\n", 0o644);
    let first = sb.backup(&tree);
    let real = find_record(&first.records(), b"real.txt").clone();
    let content = Content {
        sha256: real["sha256"].as_str().unwrap().to_owned(),
        size: real["size"].as_u64().unwrap(),
        objects: real["objects"].clone(),
    };

    let input = sb.path("input.ndjson");
    {
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&input).unwrap());
        for k in 0..N {
            let j = k * STRIDE % N;
            serde_json::to_writer(&mut out, &record(j, &content)).unwrap();
            out.write_all(b"\n").unwrap();
        }
        out.flush().unwrap();
    }
    eprintln!(
        "{N} records, {} MiB of NDJSON",
        fs::metadata(&input).unwrap().len() / MIB
    );
    let files = N / 4;
    let mut over = Vec::new();

    let hashed = sb.path("hashed.ndjson");
    let started = Instant::now();
    let (out, kib) = sb.run_measured_files("bk-hash", &[], &input, &hashed, TIMEOUT);
    assert_ok(&out, "bk-hash");
    check_rss(
        &mut over,
        &format!("bk-hash ({:.1} s)", started.elapsed().as_secs_f64()),
        kib,
        LIMIT_KIB,
    );
    assert_eq!(
        summary_number(&stderr(&out), "bk-hash:", "files seen"),
        files
    );
    assert_eq!(summary_number(&stderr(&out), "bk-hash:", "hashed"), 0);
    assert_eq!(count_lines(&hashed), N, "bk-hash output lines");
    fs::remove_file(&input).unwrap();

    let sealed = sb.path("sealed.ndjson");
    let started = Instant::now();
    let (out, kib) = sb.run_measured_files("bk-seal", &sb.seal_args(), &hashed, &sealed, TIMEOUT);
    assert_ok(&out, "bk-seal");
    check_rss(
        &mut over,
        &format!("bk-seal ({:.1} s)", started.elapsed().as_secs_f64()),
        kib,
        LIMIT_KIB,
    );
    assert_eq!(summary_number(&stderr(&out), "bk-seal:", "reused"), files);
    assert_eq!(
        summary_number(&stderr(&out), "bk-seal:", "new objects added"),
        0
    );
    assert_eq!(count_lines(&sealed), N, "bk-seal output lines");
    fs::remove_file(&hashed).unwrap();

    let name_file = sb.path("snapshot-name.txt");
    let mut a = args!["write"];
    a.extend(sb.seal_args());
    let started = Instant::now();
    let (out, kib) = sb.run_measured_files("bk-index", &a, &sealed, &name_file, TIMEOUT);
    assert_ok(&out, "bk-index write");
    check_rss(
        &mut over,
        &format!("bk-index write ({:.1} s)", started.elapsed().as_secs_f64()),
        kib,
        LIMIT_KIB,
    );
    let name = fs::read_to_string(&name_file).unwrap().trim().to_owned();
    assert!(
        sb.repo.join("snapshots").join(&name).is_file(),
        "snapshot {name:?}"
    );
    fs::remove_file(&sealed).unwrap();

    let shown = sb.path("show.ndjson");
    let mut a = args!["show", &name];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    let empty = sb.path("empty");
    fs::write(&empty, b"").unwrap();
    let started = Instant::now();
    let (out, kib) = sb.run_measured_files("bk-index", &a, &empty, &shown, TIMEOUT);
    assert_ok(&out, "bk-index show");
    check_rss(
        &mut over,
        &format!("bk-index show ({:.1} s)", started.elapsed().as_secs_f64()),
        kib,
        LIMIT_KIB,
    );

    let problems = sb.path("problems.ndjson");
    let started = Instant::now();
    let (out, kib) =
        sb.run_measured_files("bk-verify", &sb.repo_args(), &shown, &problems, TIMEOUT);
    assert_ok(&out, "bk-verify");
    check_rss(
        &mut over,
        &format!("bk-verify ({:.1} s)", started.elapsed().as_secs_f64()),
        kib,
        LIMIT_KIB,
    );
    let verify_err = stderr(&out);
    assert!(
        verify_err.contains(&format!("bk-verify: {N} records"))
            && verify_err.contains(": 0 problems"),
        "bk-verify: {verify_err}"
    );
    assert_eq!(
        fs::metadata(&problems).unwrap().len(),
        0,
        "bk-verify problem records"
    );

    // The snapshot round-trips: every record once, unchanged, in bk's
    // order (root, then path component by component).
    let mut seen = vec![false; N as usize];
    let mut prev: Option<(String, String)> = None;
    let mut lines = 0u64;
    for line in BufReader::with_capacity(1 << 20, fs::File::open(&shown).unwrap()).lines() {
        let line = line.unwrap();
        lines += 1;
        let got: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("line {lines} of bk-index show: {e}: {line}"));
        let root = got["root"].as_str().unwrap().to_owned();
        let path = got["path"].as_str().unwrap().to_owned();
        let j = index_of(&path);
        assert!(
            j < N && !seen[j as usize],
            "line {lines}: record {j} twice or out of range"
        );
        seen[j as usize] = true;
        let want = record(j, &content);
        assert!(
            got == want,
            "line {lines}: record {j} changed:\n  got  {got}\n  want {want}"
        );
        if let Some((pr, pp)) = &prev {
            assert_eq!(
                cmp_entries(pr, pp, &root, &path),
                Ordering::Less,
                "line {lines}: ({root:?}, {path:?}) after ({pr:?}, {pp:?}) is out of order"
            );
        }
        prev = Some((root, path));
    }
    assert_eq!(lines, N, "bk-index show printed {lines} lines");
    assert!(seen.iter().all(|&s| s));

    // A re-scan of the same million entries (in walk order, without
    // sha256 and objects) reuses every file from the local snapshot cache
    // in bounded memory. None of these files exists, so a file that was
    // not reused would be reported as vanished (exit 24).
    let rescan = sb.path("rescan.ndjson");
    {
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&rescan).unwrap());
        for line in BufReader::with_capacity(1 << 20, fs::File::open(&shown).unwrap()).lines() {
            let mut rec: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let obj = rec.as_object_mut().unwrap();
            obj.remove("sha256");
            obj.remove("objects");
            serde_json::to_writer(&mut out, &rec).unwrap();
            out.write_all(b"\n").unwrap();
        }
        out.flush().unwrap();
    }
    fs::remove_file(&shown).unwrap();
    let rehashed = sb.path("rehashed.ndjson");
    let started = Instant::now();
    let (out, kib) = sb.run_measured_files(
        "bk-hash",
        &sb.reuse_auto_args(),
        &rescan,
        &rehashed,
        TIMEOUT,
    );
    assert_ok(&out, "bk-hash --reuse auto of the million");
    check_rss(
        &mut over,
        &format!(
            "bk-hash --reuse auto ({:.1} s)",
            started.elapsed().as_secs_f64()
        ),
        kib,
        LIMIT_KIB,
    );
    assert_eq!(
        summary_number(&stderr(&out), "bk-hash:", "reused unread"),
        files,
        "{}",
        stderr(&out)
    );
    assert_eq!(summary_number(&stderr(&out), "bk-hash:", "hashed"), 0);
    assert_eq!(count_lines(&rehashed), N, "bk-hash --reuse output lines");
    assert!(over.is_empty(), "{}", over.join("\n"));
}

#[test]
#[ignore = "slow: backs up and restores a 4 GiB file"]
fn four_gib_file_is_chunked_and_restored_in_bounded_memory() {
    const LIMIT_KIB: u64 = 64 * 1024;
    const LEN: u64 = 4 << 30;
    let _serial = one_at_a_time();
    let sb = Sandbox::new();
    let src = sb.path("src");
    let big = src.join("big.bin");
    let started = Instant::now();
    let want = write_pseudo_random_file(&big, 0xB16, LEN);
    eprintln!("wrote 4 GiB in {:.1} s", started.elapsed().as_secs_f64());
    let mut over = Vec::new();

    let (scan, kib) = sb.run_measured("bk-scan", &args![&src], b"", TIMEOUT);
    assert_ok(&scan, "bk-scan");
    check_rss(&mut over, "bk-scan", kib, LIMIT_KIB);

    let started = Instant::now();
    let (hashed, kib) = sb.run_measured("bk-hash", &[], &scan.stdout, TIMEOUT);
    let secs = started.elapsed().as_secs_f64();
    assert_ok(&hashed, "bk-hash");
    check_rss(
        &mut over,
        &format!("bk-hash ({:.0} MB/s)", LEN as f64 / 1e6 / secs),
        kib,
        LIMIT_KIB,
    );
    let rec = find_record(&parse_records(&hashed.stdout), b"big.bin").clone();
    assert_eq!(
        rec["sha256"].as_str(),
        Some(want.as_str()),
        "bk-hash of the 4 GiB file"
    );

    let mut a = sb.seal_args();
    a.push("--init".into());
    let started = Instant::now();
    let (sealed, kib) = sb.run_measured("bk-seal", &a, &hashed.stdout, TIMEOUT);
    let secs = started.elapsed().as_secs_f64();
    assert_ok(&sealed, "bk-seal");
    eprintln!(
        "bk-seal throughput: 4 GiB in {secs:.1} s = {:.0} MB/s ({})",
        LEN as f64 / 1e6 / secs,
        summary_line(&stderr(&sealed), "bk-seal:")
    );
    check_rss(&mut over, "bk-seal", kib, LIMIT_KIB);
    let rec = find_record(&parse_records(&sealed.stdout), b"big.bin").clone();
    let sizes: Vec<u64> = rec["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["size"].as_u64().unwrap())
        .collect();
    assert!(sizes.len() > 1, "the 4 GiB file should be chunked");
    assert_eq!(sizes.iter().sum::<u64>(), LEN);
    assert!(sizes
        .iter()
        .all(|&s| s <= u64::from(bk::stages::seal::CHUNK_MAX)));
    eprintln!("4 GiB file: {} chunks", sizes.len());

    let mut a = args!["write"];
    a.extend(sb.seal_args());
    let (written, kib) = sb.run_measured("bk-index", &a, &sealed.stdout, TIMEOUT);
    assert_ok(&written, "bk-index write");
    check_rss(&mut over, "bk-index write", kib, LIMIT_KIB);
    // Keep only one plaintext copy on disk at a time.
    fs::remove_file(&big).unwrap();

    let dest = sb.fresh_dir("restore");
    let mut a = sb.repo_args();
    a.extend(sb.key_args());
    a.extend(args!["--to", &dest]);
    let started = Instant::now();
    let (opened, kib) = sb.run_measured("bk-open", &a, &sb.show_latest(), TIMEOUT);
    let secs = started.elapsed().as_secs_f64();
    assert_ok(&opened, "bk-open --to");
    check_rss(
        &mut over,
        &format!("bk-open --to ({:.0} MB/s)", LEN as f64 / 1e6 / secs),
        kib,
        LIMIT_KIB,
    );
    let got = restored(&dest, &src).join("big.bin");
    assert_eq!(fs::metadata(&got).unwrap().len(), LEN);
    assert_eq!(sha256_file(&got), want, "restored content");
    fs::remove_file(&got).unwrap();
    fs::remove_dir_all(&sb.repo).unwrap();
    assert!(over.is_empty(), "{}", over.join("\n"));
}
