//! Snapshots of several roots (`bk-scan ~/docs /etc`), restored with the
//! real pipeline: each root in its own place under `--to`, or one root
//! straight into a directory with `--root`; overlapping roots never
//! replace each other's entries; unsafe roots are refused once. And hard
//! links: records that share a device and inode but not their content are
//! restored as separate files, and bk-verify reports them.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Everything: kind, content, symlink targets, modes, file and directory
/// times.
const ALL: Compare = Compare {
    perm: true,
    file_mtime: true,
    dir_mtime: true,
};

/// The restored copy of `src` under `dest` is `src`, byte for byte and in
/// its metadata (the root directory's own mode and times included).
#[track_caller]
fn assert_restored_as(src: &Path, restored_at: &Path) {
    let diffs = diff_trees(&read_tree(src), &read_tree(restored_at), ALL);
    assert!(
        diffs.is_empty(),
        "{} restored as {} differs:\n{}",
        src.display(),
        restored_at.display(),
        diffs.join("\n")
    );
}

/// A tree with `tag` in every file's content, and the same names as every
/// other tree made by this function.
fn tree_with(root: &Path, tag: &str, seed: i64) {
    write_file(
        &root.join("same.txt"),
        format!("{tag}: same name\n").as_bytes(),
        0o644,
    );
    write_file(
        &root.join("sub/conf.conf"),
        format!("{tag} = {seed}\n").repeat(50).as_bytes(),
        0o600,
    );
    write_file(&root.join(format!("only-{tag}.txt")), tag.as_bytes(), 0o640);
    write_file(
        &root.join("sub/deeper/leaf.bin"),
        &pseudo_random(seed as u64, 5000 + seed as usize),
        0o644,
    );
    for (i, p) in ["same.txt", "sub/conf.conf", "sub/deeper/leaf.bin"]
        .iter()
        .enumerate()
    {
        set_mtime_ns(&root.join(p), T0 + seed * 1_000_000_007 + i as i64);
    }
    fs::set_permissions(root.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
    for (i, d) in ["sub/deeper", "sub", "."].iter().enumerate() {
        set_mtime_ns(&root.join(d), T0 - seed * 3_000_000_011 - i as i64);
    }
    fs::set_permissions(
        root,
        fs::Permissions::from_mode(0o700 + seed as u32 % 8 * 0o10),
    )
    .unwrap();
}

/// `bk-open --repo R --key … EXTRA…` with `records` on stdin.
fn open(sb: &Sandbox, records: &[u8], extra: &[std::ffi::OsString]) -> std::process::Output {
    let mut a = sb.repo_args();
    a.extend(sb.key_args());
    a.extend(extra.iter().cloned());
    sb.run("bk-open", &a, records)
}

/// Item 1: `bk-scan DOCS ETC` where both roots hold `same.txt`,
/// `sub/conf.conf`…: each root is restored in its own place,
/// `DEST/<root without '/'>`, nothing is mixed or replaced, and the root
/// records give their metadata to those places. From a pipe and with
/// `--snapshot`, which go through the same code.
#[test]
fn two_roots_with_the_same_names_restore_each_in_its_own_place() {
    let sb = Sandbox::new();
    let docs = sb.path("roots/home-a/docs");
    let etc = sb.path("roots/etc");
    tree_with(&docs, "docs", 1);
    tree_with(&etc, "etc", 2);
    sb.backup_roots(&[&docs, &etc]);
    let shown = sb.show_latest();

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&shown, &dest);
    assert_ok(&out, "bk-open --to of a two-root snapshot");
    assert!(!stderr(&out).contains("refusing"), "{}", describe(&out));
    assert_restored_as(&docs, &restored(&dest, &docs));
    assert_restored_as(&etc, &restored(&dest, &etc));
    assert_eq!(
        fs::read(restored(&dest, &docs).join("same.txt")).unwrap(),
        b"docs: same name\n"
    );
    assert_eq!(
        fs::read(restored(&dest, &etc).join("same.txt")).unwrap(),
        b"etc: same name\n"
    );
    // Nothing lands in DEST itself but the directories leading to the
    // roots (made with plain defaults).
    let top: Vec<PathBuf> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let first = restored(&dest, &docs)
        .strip_prefix(&dest)
        .unwrap()
        .components()
        .next()
        .map(|c| dest.join(c))
        .unwrap();
    assert_eq!(top, vec![first.clone()], "entries directly in --to");
    assert!(fs::symlink_metadata(&first).unwrap().is_dir());

    // --snapshot: the same layout.
    let dest2 = sb.fresh_dir("restore-snapshot");
    let out = open(&sb, b"", &args!["--snapshot", "latest", "--to", &dest2]);
    assert_ok(&out, "bk-open --snapshot latest --to");
    assert_restored_as(&docs, &restored(&dest2, &docs));
    assert_restored_as(&etc, &restored(&dest2, &etc));
}

/// Item 1: `--root ROOT` restores one root of a multi-root snapshot
/// straight into `--to`, skipping (and counting, in one note) the others;
/// a root that is not in the stream is an error naming the roots that are.
#[test]
fn root_option_restores_one_root_straight_into_the_target() {
    let sb = Sandbox::new();
    let docs = sb.path("docs");
    let etc = sb.path("etc");
    tree_with(&docs, "docs", 3);
    tree_with(&etc, "etc", 4);
    sb.backup_roots(&[&docs, &etc]);
    let shown = sb.show_latest();
    let etc_records = parse_records(&shown)
        .iter()
        .filter(|r| r["root"] == etc.to_str().unwrap())
        .count();

    let dest = sb.fresh_dir("etc-back");
    let out = open(&sb, &shown, &args!["--root", &etc, "--to", &dest]);
    assert_ok(&out, "bk-open --root ETC --to");
    assert_restored_as(&etc, &dest);
    let err = stderr(&out);
    let docs_records = parse_records(&shown).len() - etc_records;
    assert!(
        err.contains(&format!("{docs_records} records of other roots"))
            && err.contains(&format!("{:?}", docs.to_str().unwrap())),
        "one note counting the records of the other root: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // The root as typed with a trailing slash is the same root.
    let dest = sb.fresh_dir("docs-back");
    let mut typed = docs.clone().into_os_string();
    typed.push("/");
    let out = open(
        &sb,
        b"",
        &args!["--snapshot", "latest", "--root", &typed, "--to", &dest],
    );
    assert_ok(&out, "bk-open --snapshot latest --root DOCS/ --to");
    assert_restored_as(&docs, &dest);

    let dest = sb.fresh_dir("nothing");
    let missing = sb.path("not-backed-up");
    let out = open(&sb, &shown, &args!["--root", &missing, "--to", &dest]);
    assert_code(&out, 1, "bk-open --root of a root not in the stream");
    let err = stderr(&out);
    assert!(
        err.contains("no record has this root")
            && err.contains(missing.to_str().unwrap())
            && err.contains(docs.to_str().unwrap())
            && err.contains(etc.to_str().unwrap()),
        "{err}"
    );
    assert!(entries_under(&dest).is_empty());
}

/// Item 1: roots whose places overlap. A root inside another (`P` and
/// `P/sub`), whose records claim other content for the same places, and
/// the same root given twice: every record that would replace an entry the
/// other root restored is refused and named (exit 1), and everything else
/// is restored.
#[test]
fn overlapping_roots_never_replace_each_other() {
    let sb = Sandbox::new();
    let outer = sb.path("p");
    let inner = outer.join("sub");
    tree_with(&outer, "outer", 5);
    // A tree with other content under the names of P/sub, plus a name P/sub
    // lacks; its records are given the root P/sub.
    let other = sb.path("other");
    write_file(
        &other.join("conf.conf"),
        b"not the outer tree's conf\n",
        0o666,
    );
    write_file(&other.join("new.txt"), b"only in the inner root\n", 0o644);
    set_mtime_ns(&other.join("new.txt"), T0 + 99);
    sb.backup_roots(&[&outer, &other]);
    let inner_str = inner.to_str().unwrap();
    let mut records: Vec<Value> = parse_records(&sb.show_latest())
        .into_iter()
        .map(|mut r| {
            if r["root"] == other.to_str().unwrap() {
                r["root"] = Value::from(inner_str);
            }
            r
        })
        .collect();
    // In snapshot order: by root, so P's records come first.
    records.sort_by(|a, b| a["root"].as_str().cmp(&b["root"].as_str()));

    // Twice into the same target: what the first restore left there is
    // replaced like any earlier content, and the same records are refused.
    let dest = sb.fresh_dir("restore");
    for round in ["first", "second"] {
        let out = sb.restore(&to_ndjson(&records), &dest);
        assert_code(&out, 1, &format!("{round} restore of overlapping roots"));
        let err = stderr(&out);
        for name in [String::new(), "/conf.conf".into()] {
            let shown = format!("\"{inner_str}{name}\"");
            assert!(
                err.lines().any(|l| l.contains("refusing")
                    && l.contains(&shown)
                    && l.contains("the roots overlap")
                    && l.contains(outer.to_str().unwrap())),
                "{round}: no refusal of {shown}: {err}"
            );
        }
        assert_eq!(err.matches("refusing").count(), 2, "{round}: {err}");
        // P is exactly P, plus the one new name of the inner root.
        let mut expected = read_tree(&outer);
        let new = read_tree(&other).remove(b"new.txt".as_slice()).unwrap();
        expected.insert(b"sub/new.txt".to_vec(), new);
        let diffs = diff_trees(&expected, &read_tree(&restored(&dest, &outer)), ALL);
        assert!(diffs.is_empty(), "{round}: {}", diffs.join("\n"));
    }

    // The same root twice (one sealed stream given twice, `cat s s`): the
    // second pass replaces nothing, and P is restored exactly.
    let once = sb.backup_roots(&[&outer]);
    let twice = [&once.sealed[..], &once.sealed[..]].concat();
    let dest = sb.fresh_dir("restore-twice");
    let out = sb.restore(&twice, &dest);
    assert_code(&out, 1, "restore of a root given twice");
    let err = stderr(&out);
    let per_pass = parse_records(&twice).len() / 2;
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("refusing") && l.contains("more than once"))
            .count(),
        per_pass,
        "each record of the second pass named once: {err}"
    );
    assert_restored_as(&outer, &restored(&dest, &outer));
}

/// Item 1: a root that is not a plain path once its '/' is gone (here one
/// with '..', as `bk-scan ../x` records it) is refused in one message, all
/// its records with it, and can still be restored alone with `--root`. A
/// root whose place runs through a symlink another root restored writes
/// nothing outside the target.
#[test]
fn unsafe_roots_are_refused_once_and_write_nothing_outside() {
    let sb = Sandbox::new();
    let good = sb.path("good");
    tree_with(&good, "good", 6);
    let real = sb.path("real");
    for i in 0..40 {
        write_file(
            &real.join(format!("f{i:02}")),
            format!("{i}\n").as_bytes(),
            0o644,
        );
    }
    let dotted = sb.path("good/../real");
    sb.backup_roots(&[&good, &dotted]);
    let shown = sb.show_latest();
    let real_str = fs::canonicalize(&real)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        parse_records(&shown)
            .iter()
            .any(|r| r["root"] == real_str.as_str()),
        "bk-scan resolves '..' in a root"
    );
    // A hand-made (or older) stream may still hold one.
    let dotted_str = dotted.to_str().unwrap();
    let mut recs = parse_records(&shown);
    for r in &mut recs {
        if r["root"] == real_str.as_str() {
            r["root"] = dotted_str.into();
        }
    }
    let shown = to_ndjson(&recs);

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&shown, &dest);
    assert_code(&out, 1, "restore with a root holding '..'");
    let err = stderr(&out);
    assert_eq!(err.matches("refusing").count(), 1, "one refusal: {err}");
    assert!(
        err.contains(&format!(
            "refusing root \"{dotted_str}\": root contains '..'"
        )) && err.contains("41 records not restored")
            && err.contains("--root"),
        "{err}"
    );
    assert_restored_as(&good, &restored(&dest, &good));
    assert_eq!(files_under(&dest).len(), files_under(&good).len());

    let alone = sb.fresh_dir("alone");
    let out = open(&sb, &shown, &args!["--root", &dotted, "--to", &alone]);
    assert_ok(&out, "bk-open --root ROOT-WITH-DOTDOT");
    assert_restored_as(&real, &alone);

    // Root A holds a symlink "link" to a directory outside; root A/link's
    // records must not be written through it.
    let outside = sb.fresh_dir("outside");
    let a = sb.path("a");
    fs::create_dir(&a).unwrap();
    make_symlink(&outside, &a.join("link"));
    let (_, hashed_a) = sb.scan_hash(&a);
    let mut records = parse_records(&hashed_a);
    let sealed_real = parse_records(&sb.show_latest());
    let file = sealed_real
        .iter()
        .find(|r| r["root"] == real_str.as_str() && r["kind"] == "file")
        .unwrap();
    let mut through = file.clone();
    through["root"] = Value::from(a.join("link").to_str().unwrap());
    through["path"] = Value::from("planted");
    records.push(through);
    let dest = sb.fresh_dir("restore-link");
    let out = sb.restore(&to_ndjson(&records), &dest);
    assert_code(&out, 1, "restore through another root's symlink");
    assert!(
        entries_under(&outside).is_empty(),
        "written outside: {:?}",
        entries_under(&outside)
    );
    assert!(
        stderr(&out).contains("is a symlink") && stderr(&out).contains("/link/planted\""),
        "{}",
        describe(&out)
    );
}

/// The records of `two` claim the device, inode and link count of `one`.
fn claim_same_inode(records: &mut [Value], one: &[u8], two: &[u8]) {
    let (dev, ino) = {
        let r = find_record(records, one);
        (r["dev"].clone(), r["ino"].clone())
    };
    for r in records.iter_mut() {
        let p = rec_path(r);
        if p == one || p == two {
            r["dev"] = dev.clone();
            r["ino"] = ino.clone();
            r["nlink"] = Value::from(2);
        }
    }
}

/// Item 4: a hard-linked pair replaced during a backup, the inode number
/// reused: the records of `one` and `two` share dev+ino but not their
/// content. Restore gives each its own content (not a link to the other)
/// and says so; a genuine pair is still linked; bk-verify --read-data
/// reports the mismatch as a warning record (exit 0).
#[test]
fn records_sharing_an_inode_with_other_content_are_not_linked() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    write_file(&src.join("one"), b"OLD-CONTENT\n", 0o644);
    write_file(
        &src.join("two"),
        b"NEW-CONTENT, what the record of two says\n",
        0o644,
    );
    write_file(&src.join("linked-a"), b"a genuine pair\n", 0o644);
    fs::hard_link(src.join("linked-a"), src.join("linked-b")).unwrap();
    sb.backup(&src);
    let mut records = parse_records(&sb.show_latest());
    claim_same_inode(&mut records, b"one", b"two");
    let forged = to_ndjson(&records);
    // The same records without their root, as a script might hand them
    // over: restored to DEST/PATH, and linked by the same rule.
    let rootless: Vec<Value> = records
        .iter()
        .cloned()
        .map(|mut r| {
            r.as_object_mut().unwrap().remove("root");
            r
        })
        .collect();

    for (input, dir, back) in [
        (to_ndjson(&rootless), "restore-rootless", None),
        (forged.clone(), "restore", Some(&src)),
    ] {
        let dest = sb.fresh_dir(dir);
        let out = sb.restore(&input, &dest);
        assert_ok(&out, "restore of records sharing an inode");
        let (back, one, two) = match back {
            Some(root) => (
                restored(&dest, root),
                format!("{}/one", root.display()),
                format!("{}/two", root.display()),
            ),
            None => (dest.clone(), "one".into(), "two".into()),
        };
        for name in ["one", "two"] {
            let rec = find_record(&records, name.as_bytes());
            assert_eq!(
                sha256_file(&back.join(name)),
                rec["sha256"].as_str().unwrap(),
                "{dir}: {name} has the content its record says"
            );
            assert_eq!(
                fs::read(back.join(name)).unwrap(),
                fs::read(src.join(name)).unwrap()
            );
        }
        for name in ["one", "two"] {
            assert_eq!(fs::metadata(back.join(name)).unwrap().nlink(), 1, "{name}");
        }
        let (m1, m2) = (
            fs::metadata(back.join("one")).unwrap(),
            fs::metadata(back.join("two")).unwrap(),
        );
        assert_ne!(m1.ino(), m2.ino(), "{dir}: one and two must not be linked");
        let err = stderr(&out);
        assert!(
            err.lines().any(|l| l.contains(&format!("{two:?}"))
                && l.contains(&format!("{one:?}"))
                && l.contains("separate file")),
            "{dir}: a note naming the pair: {err}"
        );
        let (a, b) = (
            fs::metadata(back.join("linked-a")).unwrap(),
            fs::metadata(back.join("linked-b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "{dir}: the genuine pair is still linked");
    }

    let mut v = args!["--read-data"];
    v.extend(sb.key_args());
    let out = sb.verify(&forged, &v);
    assert_code(&out, 0, "bk-verify --read-data: a mismatch is a warning");
    let problems = parse_records(&out.stdout);
    assert_eq!(problems.len(), 1, "{}", describe(&out));
    let p = &problems[0];
    assert_eq!(p["problem"], "hardlink-mismatch", "{p}");
    assert_eq!(p["path"], "two", "{p}");
    assert_eq!(p["other"], "one", "{p}");
    assert_eq!(p["root"], src.to_str().unwrap(), "{p}");
    assert!(p.get("object").is_some() && p["detail"].is_string(), "{p}");
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.contains("\"two\"")
            && l.contains("\"one\"")
            && l.contains("not the same file")),
        "{err}"
    );
    assert!(err.contains("1 hard-link mismatches"), "{err}");
}

/// Item 4: records of different roots are never linked to each other, even
/// with the same device, inode and content; bk-verify sees no mismatch.
#[test]
fn records_of_different_roots_are_never_linked() {
    let sb = Sandbox::new();
    let r1 = sb.path("r1");
    let r2 = sb.path("r2");
    write_file(&r1.join("f"), b"same content\n", 0o644);
    write_file(&r2.join("f"), b"same content\n", 0o644);
    sb.backup_roots(&[&r1, &r2]);
    let mut records = parse_records(&sb.show_latest());
    let (dev, ino) = {
        let r = records.iter().find(|r| r["path"] == "f").unwrap();
        (r["dev"].clone(), r["ino"].clone())
    };
    for r in records.iter_mut().filter(|r| r["path"] == "f") {
        r["dev"] = dev.clone();
        r["ino"] = ino.clone();
        r["nlink"] = Value::from(2);
    }
    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&to_ndjson(&records), &dest);
    assert_ok(&out, "restore");
    let m1 = fs::metadata(restored(&dest, &r1).join("f")).unwrap();
    let m2 = fs::metadata(restored(&dest, &r2).join("f")).unwrap();
    assert_ne!(m1.ino(), m2.ino(), "files of two roots linked");
    assert_eq!((m1.nlink(), m2.nlink()), (1, 1));
    let out = sb.verify(&to_ndjson(&records), &[]);
    assert_ok(&out, "bk-verify");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
}
