//! Metadata fidelity: back up a tree with every kind of entry and odd
//! metadata, restore it, and let rsync itself judge the copy:
//! `rsync -aHAXn --itemize-changes SRC/ RESTORED/` must print nothing.
//!
//! These tests need root (owners, devices, setpriv); CI runs as root.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use bk::record::Kind;
use common::stepwise::*;

/// A recognisable nanosecond timestamp: 2009-02-13 + `n` seconds.
fn t(n: i64) -> i64 {
    1_234_567_890_000_000_000 + n * 1_000_000_007 + 123_456_789
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn setfacl(args: &[&str], p: &Path) {
    let st = Command::new("setfacl")
        .args(args)
        .arg(p)
        .status()
        .expect("run setfacl (install acl)");
    assert!(st.success(), "setfacl {args:?} {}", p.display());
}

/// Every byte that may appear in a name, each in a name of its own, plus
/// names mixing them (invalid UTF-8, control characters, backslashes).
fn odd_names(dir: &Path) {
    fs::create_dir(dir).unwrap();
    for b in 1u8..=255 {
        if b == b'/' {
            continue;
        }
        let name = [b'n', b];
        fs::write(dir.join(os(&name)), [b]).unwrap();
        if b != b'.' {
            fs::write(dir.join(os(&[b])), b"single").unwrap();
        }
    }
    fs::write(dir.join(os(b"caf\xe9 \xff\xfe\\n\t\r\x1b[31m")), b"odd").unwrap();
    fs::write(dir.join(os(&[b'x'; 255])), b"longest name").unwrap();
    fs::write(dir.join(os(b"-rf --help")), b"dash").unwrap();
    fs::write(dir.join(os("\u{202e}txt.exe".as_bytes())), b"bidi").unwrap();
}

/// Builds the tree of the issue: owners, special mode bits, nanosecond
/// times everywhere (set last, parents after children), xattrs, ACLs, hard
/// links, symlinks, fifo, devices, empty dir and file, sparse file, odd
/// names, and sibling names that sort between a directory and its entries.
fn rich_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    // Owners and groups other than root.
    fs::create_dir_all(root.join("home/alice/docs")).unwrap();
    fs::write(root.join("home/alice/docs/tax.pdf"), noise(1, 70_000)).unwrap();
    fs::write(root.join("home/alice/.profile"), b"PATH=$PATH\n").unwrap();
    for p in ["home/alice", "home/alice/docs", "home/alice/docs/tax.pdf"] {
        lchown(&root.join(p), 1234, 2345);
    }
    lchown(&root.join("home/alice/.profile"), 1234, 0);
    // Modes, special bits included.
    fs::create_dir(root.join("modes")).unwrap();
    for (name, mode) in [
        ("suid", 0o4755),
        ("sgid", 0o2751),
        ("both", 0o6700),
        ("none", 0o000),
        ("ro", 0o444),
        ("exec", 0o711),
    ] {
        let p = root.join("modes").join(name);
        fs::write(&p, name).unwrap();
        lchown(&p, 0, 2345);
        chmod(&p, mode);
    }
    fs::create_dir(root.join("modes/sticky")).unwrap();
    chmod(&root.join("modes/sticky"), 0o1777);
    fs::create_dir(root.join("modes/setgid-dir")).unwrap();
    lchown(&root.join("modes/setgid-dir"), 1234, 2345);
    fs::write(root.join("modes/setgid-dir/inside"), b"in").unwrap();
    chmod(&root.join("modes/setgid-dir"), 0o2775);
    // A read-only directory with entries (needs its mode after them).
    fs::create_dir(root.join("modes/readonly")).unwrap();
    fs::write(root.join("modes/readonly/f"), b"f").unwrap();
    chmod(&root.join("modes/readonly"), 0o555);
    // xattrs and ACLs (access ACL on a file, access + default on a dir).
    fs::create_dir(root.join("attrs")).unwrap();
    let f = root.join("attrs/file");
    fs::write(&f, b"with attributes").unwrap();
    xattr::set(&f, "user.comment", b"hello").unwrap();
    xattr::set(&f, "user.binary", &[0, 1, 2, 255, b'\n']).unwrap();
    xattr::set(&f, "user.empty", b"").unwrap();
    xattr::set(&f, "trusted.bk-test", b"root only").unwrap();
    setfacl(&["-m", "u:1234:rw,g:2345:r"], &f);
    let d = root.join("attrs/acl-dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("plain"), b"no acl of its own").unwrap();
    setfacl(&["-m", "u:1234:rwx"], &d);
    setfacl(&["-d", "-m", "u:1234:rx,g:2345:rx"], &d);
    xattr::set(&d, "user.dir", b"on a directory").unwrap();
    // Hard links, three names across directories, and a pair.
    fs::create_dir(root.join("links")).unwrap();
    fs::write(root.join("links/a"), noise(2, 5000)).unwrap();
    fs::hard_link(root.join("links/a"), root.join("links/b")).unwrap();
    fs::hard_link(root.join("links/a"), root.join("home/alice/a-link")).unwrap();
    fs::write(root.join("links/p"), b"pair").unwrap();
    fs::hard_link(root.join("links/p"), root.join("links/q")).unwrap();
    // Symlinks: relative, absolute, dangling, to a directory, odd target.
    fs::create_dir(root.join("sym")).unwrap();
    symlink("../links/a", root.join("sym/rel")).unwrap();
    symlink("/etc/passwd", root.join("sym/abs")).unwrap();
    symlink("nowhere/at/all", root.join("sym/dangling")).unwrap();
    symlink("../home", root.join("sym/to-dir")).unwrap();
    symlink(os(b"caf\xe9\n"), root.join("sym/odd-target")).unwrap();
    lchown(&root.join("sym/rel"), 1234, 2345);
    // Special files.
    fs::create_dir(root.join("dev")).unwrap();
    nix::unistd::mkfifo(
        &root.join("dev/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .unwrap();
    let mknod = |name: &str, kind, major, minor| {
        nix::sys::stat::mknod(
            &root.join("dev").join(name),
            kind,
            nix::sys::stat::Mode::from_bits_truncate(0o640),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
    };
    mknod("null", nix::sys::stat::SFlag::S_IFCHR, 1, 3);
    mknod("loop-x", nix::sys::stat::SFlag::S_IFBLK, 7, 200);
    lchown(&root.join("dev/null"), 0, 2345);
    // Empty things.
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    fs::write(root.join("empty/file"), b"").unwrap();
    // A sparse file: 24 MiB with two islands of data and a hole at the end.
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(24 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"island one", 3 << 20).unwrap();
    sparse.write_all_at(&noise(3, 10_000), 10 << 20).unwrap();
    drop(sparse);
    // Names that sort between a directory and its entries.
    for name in ["dir", "dir b", "dir-x"] {
        fs::create_dir(root.join(name)).unwrap();
        fs::write(root.join(name).join("in"), name).unwrap();
    }
    fs::write(root.join("dir.txt"), b"beside dir").unwrap();
    odd_names(&root.join("names"));
    // Times last: every entry (symlinks too), then directories deepest first.
    let mut all = Vec::new();
    walk(root, &mut |p| all.push(p.to_path_buf()));
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, t(i as i64));
    }
    chmod(root, 0o750);
    lchown(root, 1234, 2345);
    set_mtime(root, t(-1));
}

#[test]
fn rich_tree_restores_exactly_as_rsync_sees_it() {
    if !have_root("rich_tree_restores_exactly_as_rsync_sees_it") {
        return;
    }
    let sb = Sandbox::new();
    let src = sb.path("src");
    rich_tree(&src);
    let sealed = sb.backup(&src);
    let shown = sb.show_latest();

    let out = sb.restore(&shown, &sb.path("restored"));
    assert_eq!(code(&out), OK, "restore: {}", stderr(&out));
    let dest = restored(&sb.path("restored"), &src);
    assert_eq!(rsync_differences(&src, &dest), "", "restored tree differs");

    // Sparse: the holes stay holes (data plus a little metadata).
    let restored_blocks = blocks(&dest.join("sparse"));
    assert!(
        restored_blocks * 512 < 256 << 10,
        "sparse file restored with {restored_blocks} blocks"
    );
    // Hard links are links, not copies.
    let a = fs::metadata(dest.join("links/a")).unwrap();
    assert_eq!(a.nlink(), 3);
    assert_eq!(
        a.ino(),
        fs::metadata(dest.join("home/alice/a-link")).unwrap().ino()
    );

    // Out-of-order input (bk-seal's own output, reversed: every entry
    // before its directory) gives the same tree.
    let mut recs = records(&sealed);
    recs.reverse();
    let dest2 = sb.path("restored-reversed");
    let out = sb.restore(&ndjson(&recs), &dest2);
    assert_eq!(code(&out), OK, "restore: {}", stderr(&out));
    assert_eq!(
        rsync_differences(&src, &restored(&dest2, &src)),
        "",
        "reversed restore differs"
    );
}

#[test]
fn restore_over_a_previous_restore_is_idempotent() {
    if !have_root("restore_over_a_previous_restore_is_idempotent") {
        return;
    }
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    fs::create_dir(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"content").unwrap();
    fs::write(src.join("g"), b"more").unwrap();
    symlink("d/f", src.join("l")).unwrap();
    set_mtime(&src.join("d/f"), t(1));
    set_mtime(&src.join("d"), t(2));
    sb.backup(&src);
    let shown = sb.show_latest();
    let dest = sb.path("restored");
    for _ in 0..2 {
        let out = sb.restore(&shown, &dest);
        assert_eq!(code(&out), OK, "restore: {}", stderr(&out));
        assert_eq!(rsync_differences(&src, &restored(&dest, &src)), "");
    }
}

#[test]
fn non_root_restore_keeps_what_it_can_and_says_what_it_could_not() {
    if !have_root("non_root_restore_keeps_what_it_can_and_says_what_it_could_not") {
        return;
    }
    let sb = Sandbox::new();
    let src = sb.path("src");
    rich_tree(&src);
    sb.backup(&src);
    let shown = sb.show_latest();
    let recs = records(&shown);
    // The unprivileged user needs to read the repository (its files are
    // private, 0600) and write DEST.
    chown_nobody(&sb.home);
    chown_nobody(&sb.repo);
    let dest = sb.path("restored");
    fs::create_dir(&dest).unwrap();
    lchown(&dest, NOBODY, NOBODY);
    let out = run(
        &mut sb.restore_cmd(sb.cmd_as_nobody("bk-open"), &dest),
        &shown,
    );
    let err = stderr(&out);
    assert_eq!(code(&out), OK, "non-root restore must not fail: {err}");
    assert!(err.contains("not running as root"), "{err}");
    assert!(err.contains("devices not restored"), "{err}");
    assert!(err.contains("xattr"), "trusted.* cannot be set: {err}");

    let dest = restored(&dest, &src);
    for rec in &recs {
        let rel = rec.path_os().unwrap();
        let p = if rel == "." {
            dest.clone()
        } else {
            dest.join(&rel)
        };
        let m = fs::symlink_metadata(&p);
        if matches!(rec.kind, Kind::Char | Kind::Block | Kind::Socket) {
            assert!(m.is_err(), "{rel:?}: device restored by non-root");
            continue;
        }
        let m = m.unwrap_or_else(|e| panic!("{rel:?} not restored: {e}"));
        assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "{rel:?}");
        assert_eq!(
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            rec.mtime_ns,
            "{rel:?}"
        );
        if rec.kind != Kind::Symlink {
            assert_eq!(m.mode() & 0o7777, rec.mode & 0o7777, "{rel:?} mode");
        }
        if rec.kind == Kind::File {
            assert_eq!(m.len(), rec.size, "{rel:?}");
        }
    }
    let f = dest.join("attrs/file");
    assert_eq!(
        xattr::get(&f, "user.binary").unwrap().unwrap(),
        [0, 1, 2, 255, b'\n']
    );
    assert!(xattr::get(&f, "system.posix_acl_access").unwrap().is_some());
    assert_eq!(fs::read(dest.join("links/b")).unwrap(), noise(2, 5000));
    assert_eq!(fs::metadata(dest.join("links/a")).unwrap().nlink(), 3);
}

#[test]
fn default_acls_are_not_inherited_whatever_the_order() {
    if !have_root("default_acls_are_not_inherited_whatever_the_order") {
        return;
    }
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    let acl = src.join("acl");
    fs::create_dir(&acl).unwrap();
    for name in ["early", "late"] {
        fs::write(acl.join(name), name).unwrap();
    }
    fs::create_dir(acl.join("late-dir")).unwrap();
    fs::write(src.join("zz"), b"after acl/").unwrap();
    setfacl(&["-d", "-m", "u:1234:rwx"], &acl);
    chmod(&acl, 0o555);
    set_mtime(&acl, t(5));
    let sealed = records(&sb.backup(&src));
    // `acl/late` and `acl/late-dir` come after the stream has left `acl`.
    let (late, rest): (Vec<_>, Vec<_>) = sealed
        .into_iter()
        .partition(|r| r.path.starts_with("acl/late"));
    let mut unsorted = rest;
    unsorted.extend(late);
    // And the target itself has a default ACL its entries would inherit.
    let dest = sb.path("restored");
    fs::create_dir(&dest).unwrap();
    setfacl(&["-d", "-m", "u:2345:r"], &dest);
    let out = sb.restore(&ndjson(&unsorted), &dest);
    assert_eq!(code(&out), OK, "restore: {}", stderr(&out));
    assert_eq!(
        rsync_differences(&src, &restored(&dest, &src)),
        "",
        "restored tree differs"
    );
}
