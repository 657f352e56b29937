//! A hostile repository: snapshots written by someone who knows only the
//! public key, and packs damaged, swapped or replaced. Restore must write
//! nothing outside `--to`, refuse (and name) every bad entry, detect every
//! tampered object (by its pack's header, its integrity check or its
//! SHA-256), and stay within bounded memory on absurd input.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bk::record::{Kind, Record};
use common::stepwise::*;

/// Backs up a few small files and returns the sandbox and sealed records
/// by path.
fn small_backup(files: &[(&str, Vec<u8>)]) -> (Sandbox, BTreeMap<String, Record>) {
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    for (name, data) in files {
        fs::write(src.join(name), data).unwrap();
    }
    let sealed = sb.backup(&src);
    let by_path = records(&sealed)
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    (sb, by_path)
}

/// A copy of `rec` at another path, without a root (as in the other
/// hand-made records here, so that they all restore to `DEST/PATH`).
fn at(rec: &Record, path: &str) -> Record {
    let mut r = rec.clone();
    r.path = path.into();
    r.path_b64 = None;
    r.root = None;
    r.root_b64 = None;
    r
}

fn dir_rec(path: &str) -> Record {
    let mut r = Record::new(Kind::Dir, Path::new(path));
    r.mode = 0o40755;
    r
}

fn symlink_rec(path: &str, target: &Path) -> Record {
    let mut r = Record::new(Kind::Symlink, Path::new(path));
    r.set_target(target.as_os_str());
    r.mode = 0o120777;
    r
}

/// Every entry under `dir` with its kind, size, mtime and content.
fn snapshot_of(dir: &Path) -> Vec<(PathBuf, u32, u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    walk(dir, &mut |p| {
        let m = fs::symlink_metadata(p).unwrap();
        let data = if m.is_file() {
            fs::read(p).unwrap()
        } else {
            Vec::new()
        };
        out.push((p.to_path_buf(), m.mode(), m.len(), m.mtime_nsec(), data));
    });
    out.sort();
    out
}

/// The name an attacker gives a planted snapshot, to be the latest (of
/// the shape bk gives names, with a tag no backing-up host made).
const EVIL: &str = "99991231T235959.999999Z-0e0110000000000000000000.pgp";

/// `bk-index show NAME` with `extra` options.
fn show(sb: &Sandbox, name: &str, extra: &[&str]) -> std::process::Output {
    run(
        sb.cmd("bk-index")
            .args(["show", name, "--repo"])
            .arg(&sb.repo)
            .arg("--key")
            .arg(&keys().secret)
            .args(extra),
        b"",
    )
}

/// Writes `recs` as a snapshot the way an attacker would: its root
/// encrypted with plain gpg to the repository's public key, named to be
/// the latest. Its piece is stored as only a backing-up host could (see
/// [`forged_root_parts`]): what is refused is the root.
fn plant_snapshot(sb: &Sandbox, recs: &[Record]) {
    let plain = sb.path("evil.root");
    fs::write(&plain, sb.forged_root(&ndjson(recs), "evil")).unwrap();
    let name = sb.repo.join("snapshots").join(EVIL);
    let k = keys();
    gpg(
        &k.gnupghome,
        &[
            "--trust-model",
            "always",
            "-r",
            &k.fingerprint,
            "--output",
            name.to_str().unwrap(),
            "--encrypt",
            plain.to_str().unwrap(),
        ],
    );
}

#[test]
fn hostile_paths_write_nothing_outside_and_each_is_refused() {
    let (sb, recs) = small_backup(&[("a", b"content a".to_vec()), ("b", b"bbb".to_vec())]);
    let file = &recs["a"];
    let outside = sb.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("sentinel"), b"untouched").unwrap();
    let before = snapshot_of(&outside);

    let mut abs = at(file, "");
    abs.set_path(&outside.join("abs"));
    let mut b64 = at(file, "innocent");
    b64.path_b64 = Some(B64.encode(b"../outside/b64"));
    let mut hl = at(file, "hl1");
    hl.nlink = 2;
    hl.ino = 777;
    hl.dev = 1;
    let mut hl2 = at(&hl, "hl2");
    hl2.path = "hl2".into();
    let mut root_link = symlink_rec(".", &outside);
    root_link.path = ".".into();
    let mut nul = at(file, "x");
    nul.path_b64 = Some(B64.encode(b"a\0b"));
    let evil = vec![
        abs,                                              // absolute
        at(file, "../outside/dotdot"),                    // ..
        at(file, "x/../../outside/dotdot2"),              // .. inside
        b64,                                              // .. in raw bytes
        nul,                                              // NUL byte
        root_link,                                        // root as symlink
        symlink_rec("esc", &outside),                     // a symlink out...
        at(file, "esc/through"),                          // ...written through
        dir_rec("esc/sub"),                               // ...made a dir in
        symlink_rec("rel-esc", Path::new("../outside")),  // relative symlink out
        at(file, "rel-esc/x"),                            // written through
        dir_rec("d"),                                     // a directory...
        at(file, "d/f"),                                  //
        symlink_rec("d", &outside),                       // ...replaced by a symlink
        at(file, "d/g"),                                  // lands in the real d
        at(file, "dup"),                                  // duplicate paths
        at(&recs["b"], "dup"),                            //
        at(file, "f"),                                    // a file...
        at(file, "f/x"),                                  // ...used as a directory
        hl,                                               // hard link, first name
        symlink_rec("victim", &outside.join("sentinel")), // symlink to a victim...
        at(file, "zz"),                                   //
        symlink_rec("hl1", &outside.join("sentinel")),    // first name swapped later
        at(file, "victim"),                               // ...replaced, not followed
        hl2,                                              // must not link the symlink
    ];
    plant_snapshot(&sb, &evil);
    // Snapshots are authenticated: the planted one is refused by name and
    // "latest" passes it by.
    let refused = show(&sb, EVIL, &[]);
    assert_eq!(code(&refused), REPO, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("not authenticated"),
        "{}",
        stderr(&refused)
    );
    assert_ne!(records(&sb.show_latest()).len(), evil.len());
    // A user who opts out still gets a safe restore.
    let out = show(&sb, EVIL, &["--allow-unauthenticated"]);
    ok(&out, "bk-index show --allow-unauthenticated");
    let shown = out.stdout;
    assert_eq!(
        records(&shown).len(),
        evil.len(),
        "bk-index show passes records on"
    );

    let dest = sb.path("dest");
    let out = sb.restore(&shown, &dest);
    let err = stderr(&out);
    eprintln!("{err}");
    assert_eq!(code(&out), FAULTS, "{err}");
    assert_eq!(
        snapshot_of(&outside),
        before,
        "something was written outside --to"
    );

    let refused = [
        ("/outside/abs", "absolute path"),
        ("../outside/dotdot", "'..'"),
        ("x/../../outside/dotdot2", "'..'"),
        ("\"../outside/b64\"", "'..'"),
        ("\"a\\0b\"", "NUL"),
        ("\".\"", "the root entry is a symlink"),
        ("esc/through", "is a symlink"),
        ("esc/sub", "is a symlink"),
        ("rel-esc/x", "is a symlink"),
        ("\"d\"", "a directory is in the way"),
        ("\"dup\"", "duplicate path"),
        ("f/x", "is not a directory"),
    ];
    for (path, why) in refused {
        assert!(
            err.lines()
                .any(|l| l.contains("refusing") && l.contains(path) && l.contains(why)),
            "no refusal of {path} ({why}) in:\n{err}"
        );
    }
    assert_eq!(err.matches("refusing").count(), refused.len(), "{err}");

    // What was restored is inside, and right.
    assert_eq!(fs::read(dest.join("d/g")).unwrap(), b"content a");
    assert_eq!(fs::read(dest.join("dup")).unwrap(), b"content a");
    assert!(fs::symlink_metadata(dest.join("victim")).unwrap().is_file());
    let hl2 = fs::symlink_metadata(dest.join("hl2")).unwrap();
    assert!(hl2.is_file(), "hl2 must be a copy, not a link to a symlink");
    assert_eq!(fs::read(dest.join("hl2")).unwrap(), b"content a");
    assert!(fs::symlink_metadata(dest.join("esc")).unwrap().is_symlink());
}

/// Backs up `files` with one blob per pack (one worker, 64K packs, and
/// every file larger than that), so that what is done to a pack is done
/// to one file; returns the sandbox and the sealed records by path.
fn backup_one_blob_per_pack(files: &[(&str, Vec<u8>)]) -> (Sandbox, BTreeMap<String, Record>) {
    let sb = Sandbox::new();
    let src = sb.path("src");
    fs::create_dir(&src).unwrap();
    for (name, data) in files {
        assert!(data.len() > 64 << 10, "{name} is smaller than a pack");
        fs::write(src.join(name), data).unwrap();
    }
    let scanned = sb.scan(&src);
    ok(&scanned, "bk-scan");
    let hashed = sb.hash(&scanned.stdout);
    ok(&hashed, "bk-hash");
    let sealed = run(
        sb.seal_cmd().args(["-j", "1", "--pack-size", "64K"]),
        &hashed.stdout,
    );
    ok(&sealed, "bk-seal");
    ok(&sb.index_write(&sealed.stdout), "bk-index write");
    let by_path: BTreeMap<String, Record> = records(&sealed.stdout)
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    let keys = sb.pack_keys();
    for (name, _) in files {
        let id = &by_path[*name].objects.as_ref().unwrap()[0].id;
        let at = sb.blob_at(id);
        let pack = fs::read(sb.repo.join(&at.pack)).unwrap();
        assert_eq!(
            pack_header(&keys, &at.pack, &pack).len(),
            1,
            "{name}'s pack holds {name} alone"
        );
    }
    (sb, by_path)
}

#[test]
fn tampered_objects_are_detected_named_and_never_left_in_place() {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("swap-a", noise(10, 100_000)),
        ("swap-b", noise(11, 80_000)),
        ("truncated", noise(12, 300_000)),
        ("flipped", noise(13, 200_000)),
        ("replaced", noise(14, 70_000)),
        ("missing", noise(15, 66_000)),
        ("good", noise(16, 70_000)),
    ];
    let (sb, recs) = backup_one_blob_per_pack(&files);
    let obj = |path: &str| recs[path].objects.as_ref().unwrap()[0].id.clone();
    // Where each blob is, before anything is damaged.
    let blobs = sb.blobs();
    let at = |path: &str| blobs[&obj(path)][0].clone();
    let pack_of = |path: &str| sb.repo.join(at(path).pack);
    // Swap two packs: each now sits under a name whose keys it was not
    // made with.
    let (a, b) = (pack_of("swap-a"), pack_of("swap-b"));
    let tmp = sb.path("swap.tmp");
    fs::rename(&a, &tmp).unwrap();
    fs::rename(&b, &a).unwrap();
    fs::rename(&tmp, &b).unwrap();
    // Truncate one pack, flip a byte inside another's blob.
    let t = pack_of("truncated");
    let len = fs::metadata(&t).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let flipped = at("flipped");
    let p = sb.repo.join(&flipped.pack);
    let mut data = fs::read(&p).unwrap();
    data[(flipped.offset + flipped.length / 2) as usize] ^= 0x40;
    fs::write(&p, data).unwrap();
    // Replace one with a pack listing its id but holding a valid OpenPGP
    // message of other content, made with nothing but the public key (the
    // pack itself takes the id key: the worst a backing-up host gone wrong
    // could do).
    let k = keys();
    let other = sb.path("other");
    fs::write(&other, b"attacker's content").unwrap();
    let message = sb.path("other.pgp");
    let (ms, os_) = (message.to_str().unwrap(), other.to_str().unwrap());
    gpg(
        &k.gnupghome,
        &[
            "--trust-model",
            "always",
            "-r",
            &k.fingerprint,
            "-o",
            ms,
            "-e",
            os_,
        ],
    );
    fs::remove_file(pack_of("replaced")).unwrap();
    sb.write_pack(&[(&obj("replaced"), 18, &fs::read(&message).unwrap())]);
    fs::remove_file(pack_of("missing")).unwrap();

    // Earlier versions of the files are already in the target (in the
    // root's place).
    let to = sb.path("dest");
    let dest = restored(&to, &sb.path("src"));
    fs::create_dir_all(&dest).unwrap();
    for (name, _) in &files {
        fs::write(dest.join(name), b"old version").unwrap();
    }
    let shown = sb.show_latest();
    let out = sb.restore(&shown, &to);
    let err = stderr(&out);
    assert_eq!(code(&out), REPO, "{err}");
    // A pack whose header does not decrypt under its name is named, and
    // its blob is not used.
    for name in ["swap-a", "swap-b", "truncated"] {
        let pack = pack_of(name);
        let pack = pack.file_name().unwrap().to_str().unwrap();
        assert!(
            err.lines()
                .any(|l| l.contains(pack) && l.contains("its blobs are not used")),
            "{name}: its pack {pack} is not named:\n{err}"
        );
    }
    for (name, data) in &files {
        let now = fs::read(dest.join(name)).unwrap();
        if *name == "good" {
            assert_eq!(&now, data);
            continue;
        }
        assert_eq!(now, b"old version", "{name}: bad content put in place");
        let id = obj(name);
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("/src/{name}\"")) && l.contains(&id)),
            "{name}: no error naming the path and object {id}:\n{err}"
        );
    }
    let mut temps = Vec::new();
    walk(&dest, &mut |p| {
        if p.file_name()
            .unwrap()
            .as_bytes()
            .starts_with(b".bk-restore")
        {
            temps.push(p.to_path_buf());
        }
    });
    assert!(temps.is_empty(), "temporary files left: {temps:?}");

    // bk-verify --read-data finds every one of them too.
    let out = sb.verify(&shown);
    assert_eq!(code(&out), FAULTS, "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    for (name, _) in files.iter().filter(|(n, _)| *n != "good") {
        assert!(
            report.contains(&format!("\"path\":\"{name}\"")),
            "{name}: {report}"
        );
    }
}

#[test]
fn absurd_records_are_errors_not_panics() {
    let (sb, recs) = small_backup(&[("a", b"content a".to_vec())]);
    let file = &recs["a"];
    let mut huge = at(file, "huge");
    huge.size = 1 << 62;
    let mut huge_obj = at(file, "huge-object");
    huge_obj.objects.as_mut().unwrap()[0].size = u64::MAX;
    let mut weird = at(file, "weird");
    weird.mtime_ns = i64::MIN;
    weird.mode = u32::MAX;
    weird.nlink = u64::MAX;
    weird.uid = u32::MAX;
    let mut dev = Record::new(Kind::Char, Path::new("dev"));
    dev.rdev = Some(u64::MAX);
    let mut bad_b64 = at(file, "bad-xattr");
    bad_b64.xattrs.insert("user.x".into(), "***".into());
    let mut no_sha = at(file, "no-sha");
    no_sha.sha256 = None;
    let mut bad_id = at(file, "bad-id");
    bad_id.objects.as_mut().unwrap()[0].id = "../../../../etc/passwd".into();
    let deep = "d/".repeat(2000) + "f";
    let very_long = "e".repeat(100) + &"/e".repeat(5000);
    let input = ndjson(&[
        huge,
        huge_obj,
        weird,
        dev,
        bad_b64,
        no_sha,
        bad_id,
        at(file, &deep),
        at(file, &very_long),
    ]);
    let mut input = input;
    input.extend_from_slice(b"{\"v\":1,\"kind\":\"file\",\"path\":\n");
    let dest = sb.path("dest");
    let out = sb.restore(&input, &dest);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    // The most severe error wins: a repository problem (5) over the
    // malformed last line (3) and the refusals (1).
    assert_eq!(code(&out), REPO, "{err}");
    assert!(err.contains("\"huge\""), "{err}");
    assert!(err.contains("\"huge-object\""), "{err}");
    assert!(err.contains("\"no-sha\""), "{err}");
    assert!(err.contains("not 64 lower-case hex"), "{err}");
    assert!(err.contains("path longer than 4095 bytes"), "{err}");
    assert!(err.contains("malformed record"), "{err}");
    assert!(!dest.join("huge").exists());
    // The weird but harmless record is restored as far as it makes sense.
    assert_eq!(fs::read(dest.join("weird")).unwrap(), b"content a");
}

/// Max RSS of a command in KiB, measured by GNU time.
fn max_rss_kib(sb: &Sandbox, dest: &Path, input: &[u8]) -> (u64, std::process::Output) {
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "maxrss=%M"]).arg(bin("bk-open"));
    let mut c = sb.restore_cmd(c, dest);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BK_") {
            c.env_remove(k);
        }
    }
    let out = run(c.env("BK_CONFIG", "/dev/null"), input);
    let err = stderr(&out);
    let rss = err
        .lines()
        .filter_map(|l| l.strip_prefix("maxrss="))
        .next_back()
        .unwrap_or_else(|| panic!("no maxrss from /usr/bin/time (install time): {err}"))
        .trim()
        .parse()
        .unwrap();
    (rss, out)
}

#[test]
fn many_records_restore_in_bounded_memory() {
    let (sb, _) = small_backup(&[("a", b"a".to_vec())]);
    // 8,000 directories, each with a 3 KB xattr and a 64 KB unknown field
    // (passed through by every stage), and a fifo in some: their records
    // would take 500+ MB if all were kept to the end.
    let value = B64.encode(noise(5, 3000));
    let bulk = serde_json::Value::String("x".repeat(64 << 10));
    let mut input = Vec::new();
    let mut n = 0;
    for i in 0..80 {
        let top = format!("t{i:03}");
        let mut d = dir_rec(&top);
        d.xattrs.insert("user.big".into(), value.clone());
        input.extend(d.to_line());
        input.push(b'\n');
        for j in 0..100 {
            let sub = format!("{top}/s{j:03}");
            let mut d = dir_rec(&sub);
            d.xattrs.insert("user.big".into(), value.clone());
            d.mtime_ns = 1_000_000_000 * (j as i64 + 1);
            d.extra.insert("comment".into(), bulk.clone());
            input.extend(d.to_line());
            input.push(b'\n');
            if j % 10 == 5 {
                let mut f = Record::new(Kind::Fifo, Path::new(&format!("{sub}/p")));
                f.mode = 0o10644;
                input.extend(f.to_line());
                input.push(b'\n');
            }
            n += 1;
        }
    }
    let dest = sb.path("dest");
    let (rss, out) = max_rss_kib(&sb, &dest, &input);
    assert_eq!(code(&out), OK, "{}", stderr(&out));
    eprintln!("bk-open: {rss} KiB max RSS for {n} directories");
    assert!(
        rss < 48 * 1024,
        "bk-open used {rss} KiB for {n} directories"
    );
    // And the directory times are right despite the fifos made in them.
    let m = fs::metadata(dest.join("t042/s045")).unwrap();
    assert_eq!(m.mtime(), 46);
    let big = xattr::get(dest.join("t079/s099"), "user.big").unwrap();
    assert_eq!(big, Some(noise(5, 3000)));
}
