//! Snapshots are authenticated by default: one made by someone who holds
//! only the public key (which is public) and write access to the
//! repository, or one altered or renamed, is refused by every reader; a
//! machine with nothing but the secret key checks them too once the key
//! certified the repository's id key; the local reuse cache is
//! authenticated the same way.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

/// A small tree with a setuid file in it, backed up once.
fn backed_up() -> (Sandbox, std::path::PathBuf, Backup) {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("src");
    write_file(&tree.join("a.txt"), b"alpha\n", 0o644);
    write_file(&tree.join("b.txt"), b"bravo\n", 0o600);
    let backup = sb.backup(&tree);
    (sb, tree, backup)
}

/// What an attacker who holds only the public key plants: a snapshot that
/// makes a setuid-root copy of a shell, dated far in the future so that it
/// would be "latest". Its root, encrypted with gpg to the public key, is
/// what the attacker writes; its piece is stored as only a backing-up host
/// could (see [`Sandbox::forged_root`]), so that what is refused is the
/// root, not an unreadable piece.
fn plant_forged(sb: &Sandbox, genuine: &[Value]) -> String {
    let mut records: Vec<Value> = genuine.to_vec();
    for r in &mut records {
        if r["path"] == "a.txt" {
            r["mode"] = Value::from(0o104755);
            r["uid"] = Value::from(0);
        }
    }
    let root = sb.forged_root(&to_ndjson(&records), "attacker");
    let forged = sb.gpg_encrypt_as_attacker(&root, None);
    sb.plant_snapshot(&forged)
}

fn index(sb: &Sandbox, sub: &str, extra: &[&str]) -> std::process::Output {
    let mut a = args![sub];
    a.extend(sb.repo_args());
    a.extend(extra.iter().map(std::ffi::OsString::from));
    sb.run("bk-index", &a, b"")
}

fn with_key(sb: &Sandbox, sub: &str, extra: &[&str]) -> std::process::Output {
    let mut a = args![sub];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    a.extend(extra.iter().map(std::ffi::OsString::from));
    sb.run("bk-index", &a, b"")
}

#[test]
fn a_snapshot_made_with_the_public_key_alone_is_refused_by_every_reader() {
    let (sb, _tree, backup) = backed_up();
    let forged = plant_forged(&sb, &backup.records());

    // list: the forged snapshot is not listed, is named on stderr, exit 5.
    let out = index(&sb, "list", &[]);
    assert_code(&out, 5, "bk-index list with a forged snapshot");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&backup.snapshot), "{listed}");
    assert!(!listed.contains(&forged), "{listed}");
    assert!(stderr(&out).contains(&forged), "{}", stderr(&out));
    let out = index(&sb, "list", &["--json"]);
    assert_code(&out, 5, "bk-index list --json");
    let rows = parse_records(&out.stdout);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["authenticated"], true);

    // "latest" is the newest authentic snapshot, not the forged one.
    let out = sb.show("latest", &[]);
    assert_ok(&out, "bk-index show latest");
    assert_eq!(parse_records(&out.stdout), backup.records());
    assert!(
        stderr(&out).contains(&forged),
        "a warning names the skipped snapshot"
    );

    // show, bk-open --snapshot and bk-verify --all-snapshots refuse it.
    let out = sb.show(&forged, &[]);
    assert_code(&out, 5, "bk-index show FORGED");
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("snapshot {forged} is not authenticated"))
            && err.contains("--allow-unauthenticated"),
        "{err}"
    );
    let to = sb.path("restore");
    let mut a = sb.repo_args();
    a.extend(sb.key_args());
    a.extend(args!["--snapshot", &forged, "--to", &to]);
    let out = sb.run("bk-open", &a, b"");
    assert_code(&out, 5, "bk-open --snapshot FORGED");
    assert!(
        files_under(&to).is_empty(),
        "nothing restored from a forged snapshot"
    );
    let mut a = args!["--all-snapshots"];
    a.extend(sb.key_args());
    let out = sb.verify(b"", &a);
    assert_code(&out, 5, "bk-verify --all-snapshots");
    assert!(stderr(&out).contains(&forged), "{}", stderr(&out));

    // forget never counts it as a kept backup and never removes it.
    let out = with_key(&sb, "forget", &["--keep-last", "1"]);
    assert_ok(&out, "bk-index forget --keep-last 1");
    let names = sb.snapshot_names();
    assert!(
        names.contains(&backup.snapshot),
        "the genuine snapshot is kept: {names:?}"
    );
    assert!(
        names.contains(&forged),
        "the forged one is left alone: {names:?}"
    );
    assert!(stderr(&out).contains(&forged), "{}", stderr(&out));

    // Opting out reads it, with a warning.
    let out = sb.show(&forged, &["--allow-unauthenticated"]);
    assert_ok(&out, "bk-index show FORGED --allow-unauthenticated");
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    let shown = parse_records(&out.stdout);
    assert_eq!(shown.len(), backup.records().len());
    assert_eq!(
        find_record(&shown, b"a.txt")["mode"],
        0o104755,
        "the forged records are what was read"
    );
}

#[test]
fn a_renamed_or_swapped_snapshot_is_refused() {
    let (sb, tree, first) = backed_up();
    write_file(&tree.join("c.txt"), b"charlie\n", 0o644);
    let second = sb.backup(&tree).snapshot;
    let dir = sb.repo.join("snapshots");

    // Renamed to a later time: the name's tag and the MAC both break.
    let later = first.snapshot.replacen("20", "29", 1);
    fs::copy(dir.join(&first.snapshot), dir.join(&later)).unwrap();
    let out = sb.show(&later, &[]);
    assert_code(&out, 5, "show of a renamed snapshot");
    assert!(
        stderr(&out).contains("its MAC does not verify"),
        "{}",
        stderr(&out)
    );
    let out = sb.show("latest", &[]);
    assert_ok(&out, "show latest");
    assert_eq!(
        parse_records(&out.stdout).len(),
        4,
        "latest is the second snapshot"
    );
    fs::remove_file(dir.join(&later)).unwrap();

    // The first snapshot's bytes under the second's name.
    fs::copy(dir.join(&first.snapshot), dir.join(&second)).unwrap();
    let out = sb.show(&second, &[]);
    assert_code(&out, 5, "show of a swapped snapshot");
    assert!(
        stderr(&out).contains("its MAC does not verify"),
        "{}",
        stderr(&out)
    );
    let out = sb.show(&first.snapshot, &[]);
    assert_ok(&out, "the untouched snapshot still reads");
}

#[test]
fn with_only_the_secret_key_snapshots_are_checked_once_the_key_certified_the_id_key() {
    let (sb, _tree, backup) = backed_up();
    let forged = plant_forged(&sb, &backup.records());
    // Everything but the repository and the secret key is lost.
    fs::remove_dir_all(&sb.data_home).unwrap();
    fs::remove_dir_all(&sb.cache_home).unwrap();

    let out = sb.show(&backup.snapshot, &[]);
    assert_code(&out, 5, "show before certifying");
    let err = stderr(&out);
    assert!(
        err.contains("bk-index certify") && err.contains("not certified"),
        "{err}"
    );
    let out = index(&sb, "list", &[]);
    assert_code(&out, 5, "list with neither an id key nor --key");
    assert!(
        stderr(&out).contains("--allow-unauthenticated"),
        "{}",
        stderr(&out)
    );

    let out = with_key(&sb, "certify", &[]);
    assert_ok(&out, "bk-index certify");
    let cert = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        cert.starts_with("keys/certified-by-") && cert.ends_with(".sig"),
        "{cert}"
    );
    assert!(sb.repo.join(&cert).is_file());

    let out = sb.show("latest", &[]);
    assert_ok(&out, "show latest after certifying");
    assert_eq!(parse_records(&out.stdout).len(), backup.records().len());
    assert_code(
        &sb.show(&forged, &[]),
        5,
        "the forged snapshot is still refused",
    );
    let out = with_key(&sb, "list", &[]);
    assert_code(&out, 5, "list --key with a forged snapshot");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&backup.snapshot));

    // gpg checks the certification too: it signs the repository id and the
    // id key's check value, which bk-repo.json holds.
    let config: Value =
        serde_json::from_slice(&fs::read(sb.repo.join("bk-repo.json")).unwrap()).unwrap();
    let statement = format!(
        "bk repository id key certification v1\nrepository: {}\nid key check: {}\n",
        config["id"].as_str().unwrap(),
        config["id_key_check"].as_str().unwrap()
    );
    let text = sb.path("statement.txt");
    fs::write(&text, statement).unwrap();
    sb.gpg(&args!["--import"], &sb.key.public);
    let out = sb.gpg(&args!["--verify", sb.repo.join(&cert), &text], b"");
    assert_ok(&out, "gpg --verify of the certification");
    fs::write(
        &text,
        "bk repository id key certification v1\nrepository: 00\n",
    )
    .unwrap();
    assert!(!sb
        .gpg(&args!["--verify", sb.repo.join(&cert), &text], b"")
        .status
        .success());
}

#[test]
fn an_id_key_replaced_by_the_storage_is_not_trusted() {
    let (sb, _tree, backup) = backed_up();
    let out = with_key(&sb, "certify", &[]);
    assert_ok(&out, "bk-index certify");
    // The attacker encrypts an id key of their own to the public key and
    // writes its check value into bk-repo.json.
    let own = [0x42u8; 32];
    let encrypted = sb.gpg_encrypt_as_attacker(&own, None);
    let local = fs::read_dir(sb.data_home.join("bk"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let saved = fs::read(&local).unwrap();
    fs::write(sb.repo.join("keys/id-key.pgp"), &encrypted).unwrap();
    let mut config: Value =
        serde_json::from_slice(&fs::read(sb.repo.join("bk-repo.json")).unwrap()).unwrap();
    config["id_key_check"] = Value::from(bk_check_value(&own));
    fs::write(sb.repo.join("bk-repo.json"), config.to_string()).unwrap();

    // The backing-up host's own id key no longer matches: say so.
    let out = sb.show(&backup.snapshot, &[]);
    assert_code(
        &out,
        4,
        "show with a local id key the repository no longer matches",
    );
    assert!(
        stderr(&out).contains("does not belong to repository"),
        "{}",
        stderr(&out)
    );
    // certify refuses to certify the replaced key.
    let out = with_key(&sb, "certify", &[]);
    assert_code(&out, 5, "certify of a replaced id key");
    assert!(
        stderr(&out).contains("differs from this machine's id key file"),
        "{}",
        stderr(&out)
    );
    // A machine with only the secret key finds the certification broken.
    fs::remove_file(&local).unwrap();
    let out = sb.show(&backup.snapshot, &[]);
    assert_code(&out, 5, "show with a replaced id key");
    assert!(stderr(&out).contains("not certified"), "{}", stderr(&out));
    drop(saved);
}

/// The check value bk-repo.json holds for an id key.
fn bk_check_value(key: &[u8; 32]) -> String {
    bk::repo::idkey::IdKey::from_bytes(*key).check_value()
}

#[test]
fn seal_init_with_the_secret_key_certifies_the_new_repository() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("src");
    write_file(&tree.join("f"), b"x", 0o644);
    let (_, hashed) = sb.scan_hash(&tree);
    let mut a = sb.seal_args();
    a.push("--init".into());
    a.extend(sb.key_args());
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal --init --key");
    assert!(
        stderr(&sealed).contains("certified the id key"),
        "{}",
        stderr(&sealed)
    );
    let name = sb.index_write(&sealed.stdout);
    fs::remove_dir_all(&sb.data_home).unwrap();
    let out = sb.show(&name, &[]);
    assert_ok(&out, "show with only the secret key");

    // Without --key, bk-seal --init says what to run.
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("src");
    write_file(&tree.join("f"), b"x", 0o644);
    let backup = sb.backup(&tree);
    assert!(
        backup.seal_stderr.contains("bk-index certify"),
        "{}",
        backup.seal_stderr
    );
}

#[test]
fn write_time_sets_the_snapshot_time_and_the_name_stays_authentic() {
    let (sb, _tree, backup) = backed_up();
    let out = sb.index_write_with(
        &backup.sealed,
        &args!["--time", "2020-02-29T12:34:56Z", "--host", "old-box"],
    );
    assert_ok(&out, "bk-index write --time");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // The host is in the root, not in the name.
    assert!(name.starts_with("20200229T123456.000000Z-"), "{name}");
    assert!(!name.contains("old-box"), "{name}");
    let out = index(&sb, "list", &["--json"]);
    assert_ok(&out, "list");
    let rows = parse_records(&out.stdout);
    let row = rows
        .iter()
        .find(|r| r["name"] == name.as_str())
        .expect("listed");
    assert_eq!(row["time"], "2020-02-29T12:34:56.000000Z");
    assert_eq!(row["host"], "old-box");
    assert_ok(&sb.show(&name, &[]), "show of the imported snapshot");
}

/// A snapshot's root decrypts with plain gpg (which tries the secret key
/// before the root's passphrase packet, so it neither asks for a
/// passphrase nor fails on one): its header, one line per piece, and its
/// MAC line last.
#[test]
fn the_snapshot_still_decrypts_with_gpg_and_ends_with_its_mac_line() {
    let (sb, _tree, backup) = backed_up();
    sb.gpg_import_secret(sb.key);
    let out = sb.gpg_decrypt(&sb.repo.join("snapshots").join(&backup.snapshot), &[]);
    assert_ok(&out, "gpg --decrypt of a snapshot");
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("{\"bk\":\"snapshot\",\"v\":1,\"mac\":\""),
        "{last}"
    );
    let lines: Vec<Value> = without_mac_line(text.as_bytes(), "snapshot")
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"{\"pad\":"))
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let header = &lines[0];
    assert_eq!(header["bk"], "snapshot", "{header}");
    assert_eq!(header["v"], 2, "{header}");
    assert_eq!(header["records"], backup.records().len(), "{header}");
    assert_eq!(header["files"], 2, "{header}");
    assert_eq!(header["bytes"], 12, "{header}");
    // The pieces are blobs of the repository that hold, in order, the
    // records `bk-index show` prints.
    let pieces = &lines[1..];
    assert!(!pieces.is_empty(), "{text}");
    let blobs = sb.blob_ids();
    for p in pieces {
        assert!(blobs.contains(p["piece"].as_str().unwrap()), "{p}");
    }
    let shown = sb.show(&backup.snapshot, &[]);
    assert_ok(&shown, "bk-index show");
    let total: u64 = pieces.iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert_eq!(total, shown.stdout.len() as u64, "{text}");
}

#[test]
fn odd_snapshot_names_do_not_crash_list() {
    let (sb, _tree, backup) = backed_up();
    let odd = "2026é124T031500.1Z-h-0a1b2c3d.pgp";
    fs::write(sb.repo.join("snapshots").join(odd), b"junk").unwrap();
    for extra in [&[][..], &["--json"][..]] {
        let out = index(&sb, "list", extra);
        assert_code(&out, 5, "list with an odd name");
        assert!(stderr(&out).contains(odd), "{}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&backup.snapshot));
    }
    let mut extra = vec!["--allow-unauthenticated", "--json"];
    let out = index(&sb, "list", &extra);
    assert_ok(&out, "list --allow-unauthenticated");
    let rows = parse_records(&out.stdout);
    let row = rows
        .iter()
        .find(|r| r["name"] == odd)
        .expect("odd name listed");
    assert_eq!(row["authenticated"], false);
    extra.pop();
    let out = index(&sb, "list", &extra);
    assert_ok(&out, "list --allow-unauthenticated, table");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let header = text.lines().next().unwrap();
    // Names that do not parse sort first (never "latest"); the real
    // snapshot's row shows whether the columns line up.
    assert!(text.lines().nth(1).unwrap().starts_with(odd), "{text}");
    let first = text
        .lines()
        .find(|l| l.starts_with(&backup.snapshot))
        .unwrap();
    // Columns line up: each header word starts where its column does.
    for (word, col) in [("TIME", 1), ("HOST", 2)] {
        let at = header.find(word).unwrap();
        assert!(
            first[at..].starts_with(first.split_whitespace().nth(col).unwrap()),
            "column {word} misaligned:\n{text}"
        );
    }
}

#[test]
fn a_snapshot_of_one_endless_line_is_refused_in_bounded_memory() {
    let (sb, _tree, _backup) = backed_up();
    let mut line = Vec::with_capacity(100 << 20);
    line.extend_from_slice(b"{\"v\":1,\"kind\":\"file\",\"path\":\"");
    line.resize(100 << 20, b'a');
    let show = |name: &str| {
        let mut a = args!["show", name, "--allow-unauthenticated"];
        a.extend(sb.repo_args());
        a.extend(sb.key_args());
        sb.run_measured("bk-index", &a, b"", std::time::Duration::from_secs(120))
    };

    // A root of one endless line, as anyone holding the public key can
    // write: refused once it is longer than any root.
    let forged = sb.gpg_encrypt_as_attacker(&line, None);
    let name = sb.plant_snapshot(&forged);
    let (out, kib) = show(&name);
    assert_code(&out, 5, "show of a 100 MiB root");
    assert!(
        stderr(&out).contains("not a snapshot root"),
        "{}",
        stderr(&out)
    );
    assert!(
        kib < 64 << 10,
        "bk-index show took {kib} KiB for a 100 MiB root"
    );

    // A root whose piece is one endless line: refused once the line is
    // longer than any record.
    let root = sb.forged_root(&line, "attacker");
    let forged = sb.gpg_encrypt_as_attacker(&root, None);
    let name = sb.plant_snapshot(&forged);
    let (out, kib) = show(&name);
    assert_code(&out, 5, "show of a 100 MiB line");
    assert!(
        stderr(&out).contains("a line longer than"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    assert!(
        kib < 64 << 10,
        "bk-index show took {kib} KiB for a 100 MiB line"
    );
}

/// The reuse cache of `tree`'s root: the single file under `latest/`.
fn cache_file(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.snapshot_cache_dir();
    let files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn a_damaged_reuse_cache_is_reported_once_and_ignored() {
    let sb = Sandbox::new();
    let tree = sb.fresh_dir("src");
    for i in 0..5 {
        write_file(
            &tree.join(format!("f{i}")),
            format!("content {i}\n").as_bytes(),
            0o644,
        );
    }
    let reuse = sb.reuse_auto_args();
    sb.backup(&tree);
    let second = sb.backup_with(&tree, &reuse, &[]);
    assert_eq!(
        second.hash_count("reused unread"),
        5,
        "{}",
        second.hash_stderr
    );

    // Flip one hex digit of one file's sha256 in the cache.
    let cache = cache_file(&sb);
    let text = fs::read_to_string(&cache).unwrap();
    let at = text.find("\"sha256\":\"").unwrap() + 10;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    fs::write(&cache, &bytes).unwrap();

    let third = sb.backup_with(&tree, &reuse, &[]);
    let err = &third.hash_stderr;
    assert_eq!(err.matches("is damaged or was edited").count(), 1, "{err}");
    assert_eq!(third.hash_count("reused unread"), 0, "{err}");
    // Every recorded hash is the content's, and the snapshot verifies.
    let shown = sb.show_latest();
    for rec in parse_records(&shown) {
        if rec["kind"] == "file" {
            let path = tree.join(rec["path"].as_str().unwrap());
            assert_eq!(rec["sha256"], sha256_file(&path).as_str(), "{rec}");
        }
    }
    let out = sb.verify(&shown, &{
        let mut a = args!["--read-data"];
        a.extend(sb.key_args());
        a
    });
    assert_ok(&out, "bk-verify --read-data");
    // The next run trusts the rewritten cache again.
    let fourth = sb.backup_with(&tree, &reuse, &[]);
    assert_eq!(
        fourth.hash_count("reused unread"),
        5,
        "{}",
        fourth.hash_stderr
    );
}

#[test]
fn bk_seal_reads_again_a_file_whose_reused_objects_do_not_match() {
    let (sb, tree, backup) = backed_up();
    let mut records = backup.records();
    let mut edited = 0;
    for r in &mut records {
        if r["path"] == "a.txt" {
            // A sha256 that is not the content's, with the old objects.
            r["sha256"] = Value::from(sha256_hex(b"something else"));
            edited += 1;
        }
        if r["path"] == "b.txt" {
            r["objects"] = Value::Array(Vec::new());
            edited += 1;
        }
    }
    assert_eq!(edited, 2);
    let out = sb.run("bk-seal", &sb.seal_args(), &to_ndjson(&records));
    assert_ok(&out, "bk-seal of edited records");
    let err = stderr(&out);
    assert_eq!(
        err.matches("do not match its size and sha256").count(),
        2,
        "{err}"
    );
    for rec in parse_records(&out.stdout) {
        if rec["kind"] == "file" {
            let path = tree.join(rec["path"].as_str().unwrap());
            assert_eq!(rec["sha256"], sha256_file(&path).as_str(), "{rec}");
            assert_eq!(object_ids(&rec).len(), 1, "{rec}");
        }
    }
    let name = sb.index_write(&out.stdout);
    let shown = sb.show(&name, &[]);
    assert_ok(&shown, "show");
    let to = sb.path("restore");
    assert_ok(&sb.restore(&shown.stdout, &to), "restore");
    let tree = fs::canonicalize(&tree).unwrap();
    assert_eq!(
        fs::read(restored(&to, &tree).join("a.txt")).unwrap(),
        b"alpha\n"
    );
    assert_eq!(
        fs::read(restored(&to, &tree).join("b.txt")).unwrap(),
        b"bravo\n"
    );
}
