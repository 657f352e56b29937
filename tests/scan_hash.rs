//! End-to-end tests of bk-scan and bk-hash, run as the real programs on
//! trees generated in temporary directories.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use assert_cmd::Command;
use bk::record::{Kind, Record};
use common::{mtime_ns, records, sha256_hex, BAD_INPUT, PARTIAL, USAGE};
use predicates::prelude::*;

fn bin(name: &str) -> Command {
    let mut cmd = Command::cargo_bin(name).unwrap();
    // Keep a developer's config file out of the tests.
    cmd.env("BK_CONFIG", "/dev/null").env_remove("BK_EXCLUDE");
    cmd
}

/// Scans `args`, expecting success; returns stdout and the records.
fn scan_ok(args: &[&OsStr]) -> (Vec<u8>, Vec<Record>) {
    let out = bin("bk-scan")
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let recs = records(&out);
    (out, recs)
}

fn by_path(recs: &[Record]) -> BTreeMap<OsString, Record> {
    recs.iter()
        .map(|r| (r.path_os().unwrap(), r.clone()))
        .collect()
}

fn paths(recs: &[Record]) -> Vec<String> {
    recs.iter().map(|r| r.path.clone()).collect()
}

/// A tree with every kind of entry bk-scan must get right.
fn odd_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/b/c/deep.txt"), b"deep").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("data.bin"), b"some bytes").unwrap();
    symlink("a/b/c/deep.txt", root.join("link")).unwrap();
    symlink("a", root.join("dirlink")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::write(root.join("with space\nand newline"), b"odd").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"caf\xe9")), b"latin1").unwrap();
}

#[test]
fn scan_records_every_kind_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    odd_tree(root);
    let (_, recs) = scan_ok(&[root.as_os_str()]);

    // Root first as ".", then each directory's entries in byte order of
    // their names; the symlinked directory is not descended into.
    let expected = [
        ".",
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/deep.txt",
        "caf\u{fffd}",
        "data.bin",
        "dirlink",
        "empty",
        "fifo",
        "link",
        "with space\nand newline",
    ];
    assert_eq!(paths(&recs), expected);
    for rec in &recs {
        assert_eq!(rec.root_os().unwrap().as_deref(), Some(root.as_os_str()));
    }

    let map = by_path(&recs);
    let kind = |p: &[u8]| map[OsStr::from_bytes(p)].kind;
    assert_eq!(kind(b"."), Kind::Dir);
    assert_eq!(kind(b"a/b"), Kind::Dir);
    assert_eq!(kind(b"empty"), Kind::File);
    assert_eq!(kind(b"fifo"), Kind::Fifo);
    assert_eq!(kind(b"dirlink"), Kind::Symlink);

    // Every record's stat fields are the entry's own (lstat, not stat).
    for (path, rec) in &map {
        let meta = fs::symlink_metadata(root.join(path)).unwrap();
        assert_eq!(rec.size, meta.size(), "{path:?}");
        assert_eq!(rec.mode, meta.mode(), "{path:?}");
        assert_eq!(rec.mtime_ns, mtime_ns(&root.join(path)), "{path:?}");
        assert_eq!(rec.ino, meta.ino(), "{path:?}");
        assert_eq!((rec.uid, rec.gid), (meta.uid(), meta.gid()), "{path:?}");
        assert_eq!(rec.nlink, meta.nlink(), "{path:?}");
    }
    assert_eq!(map[OsStr::new("empty")].size, 0);
    assert_eq!(map[OsStr::new("data.bin")].size, 10);

    // The symlink is recorded, not followed.
    let link = &map[OsStr::new("link")];
    assert_eq!(link.kind, Kind::Symlink);
    assert_eq!(link.target.as_deref(), Some("a/b/c/deep.txt"));
    assert_eq!(link.size, "a/b/c/deep.txt".len() as u64);
    assert_eq!(link.mode & 0o170000, 0o120000);
    assert_eq!(map[OsStr::new("dirlink")].target.as_deref(), Some("a"));

    // The non-UTF-8 name survives byte for byte.
    let latin = &map[OsStr::from_bytes(b"caf\xe9")];
    assert!(latin.path_b64.is_some());
    assert_eq!(latin.size, 6);
    assert!(map.contains_key(OsStr::new("with space\nand newline")));
}

#[test]
fn single_file_path_is_recorded_under_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("only");
    fs::write(&file, b"x").unwrap();
    let (_, recs) = scan_ok(&[file.as_os_str()]);
    assert_eq!(paths(&recs), ["only"]);
    assert_eq!(
        recs[0].root_os().unwrap().as_deref(),
        Some(dir.path().as_os_str())
    );
}

#[test]
fn bkignore_and_exclude_leave_out_exactly_their_matches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("build")).unwrap();
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join(".bkignore"), "*.log\nbuild/\n").unwrap();
    fs::write(root.join("sub/.bkignore"), "secret\n").unwrap();
    for f in [
        "keep.txt",
        "x.log",
        "build/out",
        "a.tmp",
        "secret",
        "sub/y.log",
        "sub/secret",
        "sub/b.tmp",
        "sub/keep2",
        "sub/cache",
    ] {
        fs::write(root.join(f), f).unwrap();
    }
    let (_, recs) = scan_ok(&[
        root.as_os_str(),
        OsStr::new("--exclude"),
        OsStr::new("*.tmp"),
        OsStr::new("-e"),
        OsStr::new("/sub/cache"),
    ]);
    assert_eq!(
        paths(&recs),
        [
            ".",
            ".bkignore",
            "keep.txt",
            "secret",
            "sub",
            "sub/.bkignore",
            "sub/keep2"
        ]
    );
}

#[test]
fn gitignore_is_honoured_only_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join(".git/info")).unwrap();
    fs::write(root.join(".gitignore"), "ignored.txt\n").unwrap();
    fs::write(root.join(".git/info/exclude"), "excluded.txt\n").unwrap();
    fs::write(root.join("ignored.txt"), "").unwrap();
    fs::write(root.join("excluded.txt"), "").unwrap();
    fs::write(root.join("kept.txt"), "").unwrap();

    let (_, recs) = scan_ok(&[root.as_os_str()]);
    let all = paths(&recs);
    assert!(all.contains(&"ignored.txt".to_owned()), "{all:?}");
    assert!(all.contains(&"excluded.txt".to_owned()), "{all:?}");

    let (_, recs) = scan_ok(&[root.as_os_str(), OsStr::new("--gitignore")]);
    let some = paths(&recs);
    assert!(!some.contains(&"ignored.txt".to_owned()), "{some:?}");
    assert!(!some.contains(&"excluded.txt".to_owned()), "{some:?}");
    assert!(some.contains(&"kept.txt".to_owned()), "{some:?}");
    assert!(some.contains(&".gitignore".to_owned()), "{some:?}");
}

#[test]
fn missing_path_is_reported_and_partial() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    bin("bk-scan")
        .arg(&missing)
        .arg(dir.path())
        .assert()
        .code(PARTIAL)
        .stdout(predicate::str::contains(r#""path":".""#))
        .stderr(format!(
            "bk-scan: {}: no such file or directory\n",
            missing.display()
        ));
    // Nothing at all could be scanned: not a partial backup but a bad
    // command line.
    // Its begin record says so: no end record follows.
    bin("bk-scan")
        .arg(&missing)
        .assert()
        .code(USAGE)
        .stdout("{\"bk\":\"begin\",\"v\":1}\n");
}

#[test]
fn unreadable_directory_is_reported_and_the_rest_scanned() {
    if nix::unistd::geteuid().is_root() {
        eprintln!("skipped: root can read everything");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(dir.path().join("open"), b"").unwrap();
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let out = bin("bk-scan")
        .arg(dir.path())
        .assert()
        .code(PARTIAL)
        .stderr(format!(
            "bk-scan: {}: permission denied\n",
            locked.display()
        ))
        .get_output()
        .stdout
        .clone();
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    assert_eq!(paths(&records(&out)), [".", "locked", "open"]);
}

/// Runs bk-hash on `input` with `args`, returning (exit code, stdout, stderr).
fn hash(input: &[u8], args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = bin("bk-hash")
        .args(args)
        .write_stdin(input)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sorted_lines(out: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    lines.sort();
    lines
}

#[test]
fn hash_adds_sha256_of_each_file_and_passes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    odd_tree(root);
    let big: Vec<u8> = (0..(300 << 10)).map(|i: u32| (i * 7 % 256) as u8).collect();
    fs::write(root.join("big"), &big).unwrap();
    let (scanned, scan_recs) = scan_ok(&[root.as_os_str()]);

    let (code, out1, err) = hash(&scanned, &["-j", "1"]);
    assert_eq!(code, 0, "{err}");
    let (code, out4, err) = hash(&scanned, &["-j", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sorted_lines(&out1), sorted_lines(&out4));

    let hashed = by_path(&records(&out4));
    assert_eq!(hashed.len(), scan_recs.len());
    for rec in &scan_recs {
        let path = rec.path_os().unwrap();
        let got = &hashed[&path];
        if rec.kind == Kind::File {
            let content = fs::read(root.join(&path)).unwrap();
            assert_eq!(
                got.sha256.as_deref(),
                Some(&*sha256_hex(&content)),
                "{path:?}"
            );
            let mut without = got.clone();
            without.sha256 = None;
            assert_eq!(&without, rec, "only sha256 is added");
        } else {
            assert_eq!(got, rec, "{path:?} passes through unchanged");
        }
    }
    assert_eq!(
        hashed[OsStr::new("empty")].sha256.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
}

#[test]
fn vanished_and_changed_files_are_reported_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for f in ["gone", "grown", "kept"] {
        fs::write(root.join(f), f).unwrap();
    }
    let (scanned, _) = scan_ok(&[root.as_os_str()]);
    fs::remove_file(root.join("gone")).unwrap();
    fs::write(root.join("grown"), "grown and more").unwrap();

    let (code, out, err) = hash(&scanned, &["-j", "2"]);
    assert_eq!(code, PARTIAL, "{err}");
    let gone = root.join("gone");
    let grown = root.join("grown");
    assert!(
        err.contains(&format!(
            "bk-hash: {}: vanished since scan\n",
            gone.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "bk-hash: {}: changed since scan (size 5 → 14)\n",
            grown.display()
        )),
        "{err}"
    );
    let hashed = by_path(&records(&out));
    let names: Vec<_> = hashed.keys().cloned().collect();
    assert_eq!(names, [OsString::from("."), OsString::from("kept")]);
    assert_eq!(hashed[OsStr::new("kept")].sha256, Some(sha256_hex(b"kept")));
}

#[test]
fn malformed_line_stops_with_status_3() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), "f").unwrap();
    let (scanned, _) = scan_ok(&[dir.path().join("f").as_os_str()]);
    // The record alone, without the begin and end records around it.
    let scanned: Vec<u8> = scanned
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"{\"bk\""))
        .flatten()
        .copied()
        .collect();
    let mut input = scanned.clone();
    input.extend_from_slice(b"{\"v\":1,\"kind\":\n");
    input.extend_from_slice(&scanned);
    let (code, out, err) = hash(&input, &[]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert!(
        err.starts_with("bk-hash: stdin line 2: malformed record"),
        "{err}"
    );
    assert_eq!(without_summary(&err).lines().count(), 1, "{err}");
    // The record before the bad line may be out; none after it.
    assert!(records(&out).len() <= 1);
}

#[test]
fn file_record_without_root_is_bad_input() {
    let input = b"{\"v\":1,\"kind\":\"dir\",\"path\":\"d\"}\n{\"v\":1,\"kind\":\"file\",\"path\":\"f\",\"size\":1}\n";
    let (code, _, err) = hash(input, &["-j", "1"]);
    assert_eq!(code, BAD_INPUT, "{err}");
    assert_eq!(
        without_summary(&err),
        "bk-hash: stdin line 2: file record \"f\" has no root\n"
    );
}

/// Stderr without bk-hash's final summary line ("… files seen, …").
fn without_summary(err: &str) -> String {
    err.lines()
        .filter(|l| !l.contains(" files seen, "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn unknown_fields_survive_scan_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), "content").unwrap();
    let (scanned, _) = scan_ok(&[dir.path().as_os_str()]);
    let mut input = Vec::new();
    for line in scanned.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut v: serde_json::Value = serde_json::from_slice(line).unwrap();
        v["note"] = serde_json::json!({"by": "a script", "n": [1, 2]});
        input.extend(serde_json::to_vec(&v).unwrap());
        input.push(b'\n');
    }
    let (code, out, err) = hash(&input, &[]);
    assert_eq!(code, 0, "{err}");
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    for rec in recs {
        assert_eq!(
            rec.extra.get("note"),
            Some(&serde_json::json!({"by": "a script", "n": [1, 2]}))
        );
    }
}

#[test]
fn sealed_records_pass_through_without_reading_the_file() {
    let line = br#"{"v":1,"kind":"file","root":"/nonexistent","path":"f","size":3,"sha256":"abc","objects":[{"id":"00","size":3}]}"#;
    let mut input = line.to_vec();
    input.push(b'\n');
    let (code, out, err) = hash(&input, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(records(&out), records(&input));
}

#[test]
fn help_texts_name_options_and_exit_statuses() {
    bin("bk-scan")
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Usage: bk-scan"))
        .stdout(predicate::str::contains("--one-file-system"))
        .stdout(predicate::str::contains("24  partial"));
    bin("bk-hash")
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Usage: bk-hash"))
        .stdout(predicate::str::contains("--jobs <N>"))
        .stdout(predicate::str::contains(
            "3   malformed or incomplete input",
        ));
}

#[test]
fn a_path_given_twice_is_scanned_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("docs");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("a"), b"a").unwrap();
    let slash = root.join("");
    let dotted = dir.path().join("./docs/.");
    let out = bin("bk-scan")
        .args([root.as_os_str(), slash.as_os_str(), dotted.as_os_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&out.stdout);
    assert_eq!(paths(&recs), [".", "a"], "each entry once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("given more than once; scanned once").count(),
        2,
        "{err}"
    );
}
