//! The catalogue of a snapshot deduplicates (issue 16): an unchanged
//! re-run adds only a small root, a changed file adds a few pieces, and
//! `bk-index show` gives back exactly the sorted records; writing a
//! million records stays bounded in memory.

mod common;

use std::cmp::Ordering;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::packs::*;
use common::*;

/// The record lines of an NDJSON stream, control records left out.
fn record_lines(ndjson: &[u8]) -> Vec<Vec<u8>> {
    ndjson
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"{\"bk\":"))
        .map(<[u8]>::to_vec)
        .collect()
}

/// bk's record order: root bytewise, then path component by component.
fn bk_order(a: &serde_json::Value, b: &serde_json::Value) -> Ordering {
    let (ar, br) = (a["root"].as_str().unwrap(), b["root"].as_str().unwrap());
    let (ap, bp) = (a["path"].as_str().unwrap(), b["path"].as_str().unwrap());
    ar.as_bytes().cmp(br.as_bytes()).then_with(|| {
        ap.as_bytes()
            .split(|&c| c == b'/')
            .cmp(bp.as_bytes().split(|&c| c == b'/'))
    })
}

/// A tree of `dirs` directories of `per_dir` small files each (unique
/// contents of a few dozen bytes).
fn make_wide_tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("dir-{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            let name = dir.join(format!("file-{f:03}.txt"));
            fs::write(&name, format!("file {f} of directory {d}\n")).unwrap();
            set_mtime_ns(&name, T0 + (d * per_dir + f) as i64 * 1_000_003);
        }
    }
}

/// One incremental backup (`bk-hash --reuse auto`): the sealed records,
/// the snapshot name and the catalogue's pieces (all, new).
fn backup_incremental(sb: &Sandbox, tree: &Path) -> (Vec<u8>, String, u64, u64) {
    let scan = sb.run("bk-scan", &args![tree], b"");
    assert_ok(&scan, "bk-scan");
    let hashed = sb.run("bk-hash", &sb.reuse_auto_args(), &scan.stdout);
    assert_ok(&hashed, "bk-hash --reuse auto");
    let mut a = sb.seal_args();
    if !sb.repo_exists() {
        a.push("--init".into());
    }
    let sealed = sb.run("bk-seal", &a, &hashed.stdout);
    assert_ok(&sealed, "bk-seal");
    let (name, pieces, new) = write_snapshot(sb, &sealed.stdout, &[]);
    (sealed.stdout, name, pieces, new)
}

#[test]
#[ignore = "slow: backs up and restores a tree of 50,000 files three times"]
fn the_catalogue_deduplicates_and_shows_the_sorted_records() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("tree");
    let started = Instant::now();
    make_wide_tree(&tree, 250, 199);
    let entries = 250 * 199 + 250 + 1;
    eprintln!(
        "MEASURED made {entries} entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let (_, first, pieces, new) = backup_incremental(&sb, &tree);
    eprintln!(
        "MEASURED full backup of {entries} entries: {:.1} s, catalogue in {pieces} pieces ({new} new), repository {} bytes",
        started.elapsed().as_secs_f64(),
        repo_bytes(&sb)
    );
    assert!(
        pieces >= 4,
        "{entries} records should make several pieces, made {pieces}"
    );
    assert_eq!(new, pieces, "a first backup stores every piece");

    // An unchanged re-run adds only its root.
    let before = repo_bytes(&sb);
    let started = Instant::now();
    let (_, second, pieces2, new2) = backup_incremental(&sb, &tree);
    let added = repo_bytes(&sb) - before;
    eprintln!(
        "MEASURED unchanged re-run: {:.1} s, {added} bytes added, catalogue in {pieces2} pieces ({new2} new)",
        started.elapsed().as_secs_f64()
    );
    assert_ne!(first, second);
    assert_eq!((pieces2, new2), (pieces, 0), "the same pieces, none new");
    assert!(added <= 16 * KIB, "an unchanged re-run added {added} bytes");

    // One changed file: a few new pieces, and the snapshot is right.
    let changed = tree.join("dir-123/file-100.txt");
    fs::write(&changed, b"file 100 of directory 123, edited\n").unwrap();
    set_mtime_ns(&changed, T0 - 5_000_000_007);
    let before = repo_bytes(&sb);
    let (sealed, third, pieces3, new3) = backup_incremental(&sb, &tree);
    let added = repo_bytes(&sb) - before;
    eprintln!(
        "MEASURED one file changed: {added} bytes added, catalogue in {pieces3} pieces ({new3} new)"
    );
    assert!(
        (1..=3).contains(&new3),
        "one changed file should add 1 to 3 pieces, added {new3} of {pieces3}"
    );

    // bk-index show gives back the sealed records, sorted.
    let shown = sb.show(&third, &[]);
    assert_ok(&shown, "bk-index show");
    let shown_lines = record_lines(&shown.stdout);
    let mut sealed_lines = record_lines(&sealed);
    assert_eq!(
        shown_lines.len(),
        entries,
        "bk-index show: one line per entry"
    );
    let parsed: Vec<serde_json::Value> = shown_lines
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    for (n, w) in parsed.windows(2).enumerate() {
        assert_eq!(
            bk_order(&w[0], &w[1]),
            Ordering::Less,
            "bk-index show, lines {} and {}: out of order",
            n + 1,
            n + 2
        );
    }
    let mut shown_sorted = shown_lines.clone();
    shown_sorted.sort();
    sealed_lines.sort();
    assert!(
        shown_sorted == sealed_lines,
        "bk-index show does not print the sealed records"
    );
    let started = Instant::now();
    assert_restores(&sb, &third, &tree);
    eprintln!(
        "MEASURED restore of {entries} entries: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Records in the million-record test.
const N: u64 = 1_000_000;

#[test]
#[ignore = "slow: writes a snapshot of a million records, twice"]
fn writing_a_million_records_stays_bounded_in_memory() {
    const LIMIT_KIB: u64 = 64 * 1024;
    let timeout = Duration::from_secs(1800);
    let sb = Sandbox::new();
    // One real file, sealed: every file record of the million names its
    // object.
    let tree = sb.fresh_dir("tree");
    write_file(&tree.join("real.txt"), b"the one real content\n", 0o644);
    let first = sb.backup(&tree);
    let real = find_record(&first.records(), b"real.txt").clone();

    // The million, far from sorted order (k * STRIDE mod N visits each j
    // once).
    const STRIDE: u64 = 611_953;
    let input = sb.path("input.ndjson");
    {
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&input).unwrap());
        for k in 0..N {
            let j = k * STRIDE % N;
            let t = T0 + j as i64 * 1_000_003;
            let mut rec = serde_json::json!({
                "v": 1, "root": "/srv/million", "path": format!("d{:03}/s{:02}/e{j}", j % 1000, (j / 1000) % 50),
                "uid": 1000, "gid": 1000, "mtime_ns": t, "ctime_ns": t, "ino": j + 10, "dev": 2049,
            });
            if j.is_multiple_of(4) {
                for k in ["kind", "size", "mode", "nlink", "sha256", "objects"] {
                    rec[k] = real[k].clone();
                }
            } else {
                rec["kind"] = "dir".into();
                rec["size"] = 4096.into();
                rec["mode"] = 0o40755.into();
                rec["nlink"] = 2.into();
            }
            serde_json::to_writer(&mut out, &rec).unwrap();
            out.write_all(b"\n").unwrap();
        }
        out.flush().unwrap();
    }
    eprintln!(
        "{N} records, {} MiB of NDJSON",
        fs::metadata(&input).unwrap().len() / MIB
    );
    let mut a = args!["write"];
    a.extend(sb.seal_args());
    let mut pieces = Vec::new();
    for run in 1..=2 {
        let before = repo_bytes(&sb);
        let name_file = sb.path(format!("name-{run}.txt"));
        let started = Instant::now();
        let (out, kib) = sb.run_measured_files("bk-index", &a, &input, &name_file, timeout);
        assert_ok(
            &out,
            &format!("bk-index write of a million records, run {run}"),
        );
        let added = repo_bytes(&sb) - before;
        let (n, new) = catalogue_pieces(&stderr(&out));
        eprintln!(
            "MEASURED bk-index write run {run} of {N} records: peak RSS {kib} KiB, {:.1} s, catalogue in {n} pieces ({new} new), {added} bytes added",
            started.elapsed().as_secs_f64()
        );
        assert!(
            kib < LIMIT_KIB,
            "run {run}: peak RSS {kib} KiB >= {LIMIT_KIB} KiB"
        );
        pieces.push((n, new, added));
    }
    assert_eq!(pieces[0].0, pieces[0].1, "run 1 stores every piece");
    assert_eq!(pieces[1].1, 0, "run 2 of the same records stores no piece");
    // Run 2 adds only its root, which lists every piece, uncompressed (so
    // that its padding hides its size): a piece line is 92 bytes or less
    // (`{"piece":"<64 hex>","size":<at most 7 digits>}`), plus the
    // header, the MAC line and at most 4 KiB of padding.
    let (n, _, added) = pieces[1];
    assert!(
        added <= 8 * KIB + 92 * n,
        "run 2 added {added} bytes for a root of {n} pieces"
    );
    // The snapshot holds every record, sorted.
    let shown = sb.path("shown.ndjson");
    let empty = sb.path("empty");
    fs::write(&empty, b"").unwrap();
    let mut s = args!["show", "latest"];
    s.extend(sb.repo_args());
    s.extend(sb.key_args());
    let (out, kib) = sb.run_measured_files("bk-index", &s, &empty, &shown, timeout);
    assert_ok(&out, "bk-index show");
    eprintln!("MEASURED bk-index show of {N} records: peak RSS {kib} KiB");
    let mut lines = 0u64;
    let mut prev: Option<serde_json::Value> = None;
    for line in BufReader::with_capacity(1 << 20, fs::File::open(&shown).unwrap()).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some(p) = &prev {
            assert_eq!(
                bk_order(p, &v),
                Ordering::Less,
                "line {lines}: out of order"
            );
        }
        prev = Some(v);
        lines += 1;
    }
    assert_eq!(lines, N, "bk-index show printed {lines} records");
}
