//! bk-index write on a directory repository writes the snapshot while the
//! records still arrive (a small window restores their order). These tests
//! push it past that window: a record that arrives too late must still
//! end up in its sorted place, and a failure after part of the snapshot
//! was written must leave no snapshot and no temporary file behind.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// More records than the window holds on this machine (512 per core).
fn past_the_window() -> usize {
    512 * std::thread::available_parallelism().map_or(2, |n| n.get().max(2)) + 700
}

/// A backed-up tree of `dirs` empty directories and one file; returns the
/// sandbox and the records of its snapshot (sorted, as bk-index wrote them).
fn many_records(dirs: usize) -> (Sandbox, Vec<Value>) {
    let sb = Sandbox::new();
    let src = sb.path("src");
    for i in 0..dirs {
        fs::create_dir_all(src.join(format!("d{i:06}"))).unwrap();
    }
    write_file(&src.join("0-file.txt"), b"the one file\n", 0o644);
    sb.backup(&src);
    let sorted = parse_records(&sb.show_latest());
    assert_eq!(sorted.len(), dirs + 2, "records of the first snapshot");
    (sb, sorted)
}

/// Asserts that snapshot `name` holds exactly `expected`, in order; names
/// the first difference rather than printing thousands of records.
fn assert_snapshot_holds(sb: &Sandbox, name: &str, expected: &[Value], what: &str) {
    let shown = parse_records(&sb.show(name, &[]).stdout);
    assert_eq!(shown.len(), expected.len(), "{what}: number of records");
    if let Some(i) = (0..shown.len()).find(|&i| shown[i] != expected[i]) {
        panic!(
            "{what}: record {i} differs:\n  got      {}\n  expected {}",
            shown[i], expected[i]
        );
    }
}

/// Every name under `snapshots/`, hidden temporary files included.
fn snapshot_dir_entries(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn write_args(sb: &Sandbox) -> Vec<OsString> {
    let mut a = args!["write"];
    a.extend(sb.seal_args());
    a
}

#[test]
fn a_record_arriving_after_the_window_still_lands_in_its_sorted_place() {
    let (sb, records) = many_records(past_the_window());
    // The first directory record arrives last: by then the records before
    // it have long been written out.
    let first_dir = records
        .iter()
        .position(|r| r["path"] == "d000000")
        .expect("record of d000000");
    let mut shuffled = records.clone();
    let late = shuffled.remove(first_dir);
    shuffled.push(late);
    let before = sb.snapshot_names();
    let out = sb.run("bk-index", &write_args(&sb), &to_ndjson(&shuffled));
    assert_ok(&out, "bk-index write of a late record");
    let name = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let after = sb.snapshot_names();
    assert_eq!(after.len(), before.len() + 1, "one new snapshot: {after:?}");
    assert!(after.contains(&name), "{name} not in {after:?}");
    assert!(
        !snapshot_dir_entries(&sb.repo)
            .iter()
            .any(|n| n.starts_with('.')),
        "a temporary file was left in snapshots/: {:?}",
        snapshot_dir_entries(&sb.repo)
    );
    assert_snapshot_holds(&sb, &name, &records, "snapshot with a late record");
}

#[test]
fn in_order_records_give_the_same_snapshot_as_shuffled_ones() {
    let (sb, records) = many_records(past_the_window());
    let mut reversed = records.clone();
    reversed.reverse();
    for (what, input) in [("in order", &records), ("reversed", &reversed)] {
        let out = sb.run("bk-index", &write_args(&sb), &to_ndjson(input));
        assert_ok(&out, what);
        let name = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert_snapshot_holds(&sb, &name, &records, what);
    }
}

#[test]
fn a_missing_object_found_mid_stream_leaves_no_snapshot() {
    let (sb, records) = many_records(past_the_window());
    let mut bad = records.clone();
    let file = bad
        .iter_mut()
        .find(|r| r["kind"] == "file")
        .expect("the file record");
    let absent = "ab".repeat(32);
    file["objects"][0]["id"] = Value::from(absent.clone());
    let before = snapshot_dir_entries(&sb.repo);
    let out = sb.run("bk-index", &write_args(&sb), &to_ndjson(&bad));
    assert_code(&out, 5, "bk-index write naming an absent object");
    let err = stderr(&out);
    assert!(
        err.contains(&absent) && err.contains("0-file.txt") && err.contains("no snapshot written"),
        "stderr should name the object and the file: {err}"
    );
    assert_eq!(
        snapshot_dir_entries(&sb.repo),
        before,
        "snapshots/ changed (a snapshot or a temporary file was left)"
    );
}

#[test]
fn a_malformed_record_after_the_window_leaves_no_snapshot() {
    let (sb, records) = many_records(past_the_window());
    let mut input = to_ndjson(&records);
    input.extend_from_slice(b"{\"v\":1,\"kind\":\"file\",\"path\":\n");
    let before = snapshot_dir_entries(&sb.repo);
    let cache_before = files_under(&sb.cache_home);
    let out = sb.run("bk-index", &write_args(&sb), &input);
    assert_code(&out, 3, "bk-index write with a malformed last line");
    let line = records.len() + 1;
    assert!(
        stderr(&out).contains(&format!("line {line}")),
        "stderr should name line {line}: {}",
        stderr(&out)
    );
    assert_eq!(
        snapshot_dir_entries(&sb.repo),
        before,
        "snapshots/ changed (a snapshot or a temporary file was left)"
    );
    assert_eq!(
        files_under(&sb.cache_home),
        cache_before,
        "the local snapshot cache changed"
    );
}

/// The paths of `ndjson`'s records, in the order they come.
fn paths_in_order(ndjson: &[u8]) -> Vec<String> {
    parse_records(ndjson)
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn hash_and_seal_keep_input_order_behind_a_slow_large_file() {
    // A large file first (hashing and chunking it takes a while) and many
    // small ones after it: the workers finish the small ones first, and
    // both stages must still write the records in the order they came.
    let sb = Sandbox::new();
    let src = sb.path("src");
    write_file(&src.join("a-large.bin"), &pseudo_random(7, 48 << 20), 0o644);
    for i in 0..600 {
        write_file(
            &src.join(format!("b{i:04}.txt")),
            format!("small {i}\n").as_bytes(),
            0o644,
        );
    }
    let (scan, hashed) = sb.scan_hash(&src);
    let order = paths_in_order(&scan);
    assert_eq!(order.len(), 602, "bk-scan records");
    assert_eq!(paths_in_order(&hashed), order, "bk-hash output order");
    let jobs = args!["-j", "4"];
    let hashed4 = sb.run("bk-hash", &jobs, &scan);
    assert_ok(&hashed4, "bk-hash -j 4");
    assert_eq!(paths_in_order(&hashed4.stdout), order, "bk-hash -j 4 order");
    let mut seal = sb.seal_args();
    seal.extend(args!["--init", "-j", "4", "--chunk-threshold", "1M"]);
    let sealed = sb.run("bk-seal", &seal, &hashed);
    assert_ok(&sealed, "bk-seal");
    assert_eq!(
        paths_in_order(&sealed.stdout),
        order,
        "bk-seal output order"
    );
    let large = find_record(&parse_records(&sealed.stdout), b"a-large.bin").clone();
    assert!(
        object_ids(&large).len() > 2,
        "the large file should be chunked: {large}"
    );
}

#[test]
fn scan_walks_its_roots_in_snapshot_order_whatever_the_argument_order() {
    let sb = Sandbox::new();
    for dir in ["b-root", "a-root"] {
        write_file(&sb.path(dir).join("f.txt"), dir.as_bytes(), 0o644);
    }
    let out = sb.run("bk-scan", &args![sb.path("b-root"), sb.path("a-root")], b"");
    assert_ok(&out, "bk-scan b-root a-root");
    let roots: Vec<String> = parse_records(&out.stdout)
        .iter()
        .map(|r| r["root"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut sorted = roots.clone();
    sorted.sort();
    assert_eq!(
        roots, sorted,
        "records grouped by root, roots in byte order"
    );
    assert!(roots[0].ends_with("a-root"), "a-root first: {roots:?}");
}
