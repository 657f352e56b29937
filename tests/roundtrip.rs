//! Back up a tree and restore it: every entry must come back byte for byte
//! with its kind, permission bits, symlink target and mtime.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// The records `bk-index show` printed must be exactly the records
/// `bk-seal` printed (same JSON values), sorted by path.
fn assert_show_matches_sealed(shown: &[u8], sealed: &[Value]) {
    let shown = parse_records(shown);
    let paths: Vec<Vec<u8>> = shown.iter().map(rec_path).collect();
    let display: Vec<&str> = shown.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert!(
        paths.is_sorted() || display.is_sorted(),
        "bk-index show output is not sorted by path: {display:?}"
    );
    assert_eq!(
        shown.len(),
        sealed.len(),
        "bk-index show printed {} records, bk-seal printed {}",
        shown.len(),
        sealed.len()
    );
    let shown_map = by_path(&shown);
    for rec in sealed {
        let p = rec_path(rec);
        match shown_map.get(&p) {
            Some(s) => assert_eq!(s, rec, "the snapshot changed the record"),
            None => panic!("sealed record {rec} missing from bk-index show"),
        }
    }
}

fn roundtrip_rich_tree_restores_every_entry(sb: Sandbox) {
    let src = sb.path("src");
    make_rich_tree(&src);
    let expected = read_tree(&src);

    let (scan, hashed) = sb.scan_hash(&src);

    // bk-scan: the root as ".", one record per entry, non-UTF-8 names
    // carried losslessly.
    let scanned = parse_records(&scan);
    let root = find_record(&scanned, b".");
    assert_eq!(root["kind"], "dir", "root record: {root}");
    let scanned_paths: BTreeSet<Vec<u8>> = scanned.iter().map(rec_path).collect();
    let tree_paths: BTreeSet<Vec<u8>> = expected.keys().cloned().collect();
    assert_eq!(
        scanned_paths.len(),
        scanned.len(),
        "bk-scan printed a path twice"
    );
    assert_eq!(
        scanned_paths
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect::<Vec<_>>(),
        tree_paths
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect::<Vec<_>>(),
        "bk-scan paths differ from the tree"
    );
    assert_eq!(scanned_paths, tree_paths, "raw (non-UTF-8) paths differ");

    // bk-hash: the SHA-256 of every regular file's content.
    let hashed_recs = parse_records(&hashed);
    for (p, e) in &expected {
        if let Some(content) = &e.content {
            let rec = find_record(&hashed_recs, p);
            assert_eq!(
                rec["sha256"].as_str(),
                Some(sha256_hex(content).as_str()),
                "sha256 of {:?}",
                String::from_utf8_lossy(p)
            );
        }
    }

    let sealed = sb.seal(&hashed);
    assert_ok(&sealed, "bk-seal --init");
    let sealed = parse_records(&sealed.stdout);
    assert_eq!(
        sealed.len(),
        hashed_recs.len(),
        "bk-seal printed every record"
    );
    sb.index_write(&to_ndjson(&sealed));

    // The snapshot holds exactly the sealed records.
    let shown = sb.show_latest();
    assert_show_matches_sealed(&shown, &sealed);

    // Restore everything and compare.
    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&shown, &dest);
    assert_ok(&out, "bk-open --to");
    assert_same_tree(&expected, &read_tree(&restored(&dest, &src)));
}

fn small_tree(root: &Path) {
    write_file(&root.join("docs/letters/note.txt"), b"dear diary\n", 0o640);
    write_file(&root.join("docs/letters/other.txt"), b"other\n", 0o644);
    write_file(
        &root.join("docs/report.bin"),
        &pseudo_random(11, 300_000),
        0o600,
    );
    write_file(&root.join("top.txt"), b"top\n", 0o644);
    for (i, f) in [
        "docs/letters/note.txt",
        "docs/letters/other.txt",
        "docs/report.bin",
        "top.txt",
    ]
    .iter()
    .enumerate()
    {
        set_mtime_ns(&root.join(f), T0 + 17 * i as i64 + 1);
    }
}

fn restore_subset_filtered_from_index_show(sb: Sandbox) {
    let src = sb.path("src");
    small_tree(&src);
    sb.backup(&src);

    let all = parse_records(&sb.show_latest());
    let wanted = b"docs/letters/note.txt";
    let subset: Vec<&Value> = all.iter().filter(|r| rec_path(r) == wanted).collect();
    assert_eq!(subset.len(), 1, "bk-index show should list {wanted:?} once");

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&to_ndjson(subset), &dest);
    assert_ok(&out, "bk-open --to with one record");

    // In the root's place: DEST/<src without its leading '/'>/docs/…
    let back = restored(&dest, &src);
    let files = files_under(&dest);
    assert_eq!(
        files,
        BTreeSet::from([back
            .strip_prefix(&dest)
            .unwrap()
            .join("docs/letters/note.txt")]),
        "only the selected file should be restored"
    );
    let extra: Vec<PathBuf> = entries_under(&back)
        .into_iter()
        .filter(|p| {
            ![
                Path::new("docs"),
                Path::new("docs/letters"),
                Path::new("docs/letters/note.txt"),
            ]
            .contains(&p.as_path())
        })
        .collect();
    assert!(extra.is_empty(), "unexpected entries restored: {extra:?}");
    let got = back.join("docs/letters/note.txt");
    let want = src.join("docs/letters/note.txt");
    assert_eq!(fs::read(&got).unwrap(), fs::read(&want).unwrap());
    assert_eq!(
        fs::metadata(&got).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert_eq!(mtime_ns(&got), mtime_ns(&want));
}

fn restore_sets_directory_modes_and_mtimes(sb: Sandbox) {
    let src = sb.path("src");
    small_tree(&src);
    fs::create_dir(src.join("empty")).unwrap();
    for (i, d) in ["docs/letters", "docs", "empty", "."].iter().enumerate() {
        set_mtime_ns(&src.join(d), T0 - 1_000_000_007 * (i as i64 + 1));
    }
    fs::set_permissions(src.join("docs/letters"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(src.join("empty"), fs::Permissions::from_mode(0o751)).unwrap();
    let expected = read_tree(&src);
    sb.backup(&src);

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&sb.show_latest(), &dest);
    assert_ok(&out, "bk-open --to");
    let diffs = diff_trees(
        &expected,
        &read_tree(&restored(&dest, &src)),
        Compare {
            perm: true,
            file_mtime: true,
            dir_mtime: true,
        },
    );
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn init_creates_repository_layout_and_private_id_key() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    small_tree(&src);
    assert!(!sb.repo.exists());
    let b = sb.backup(&src);

    let meta: Value =
        serde_json::from_slice(&fs::read(sb.repo.join("bk-repo.json")).unwrap()).unwrap();
    assert_eq!(meta["format"], 2, "bk-repo.json: {meta}");
    assert!(sb.repo.join("keys/id-key.pgp").is_file());
    assert!(sb.repo.join("snapshots").is_dir());

    // Contents live in packs at packs/<first two hex>/<64 hex id>.
    let packs = sb.pack_files();
    assert!(!packs.is_empty(), "no packs written");
    for rel in packs.keys() {
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 3, "pack path {rel:?}");
        assert_eq!(parts[2].len(), 64, "pack id {rel:?}");
        assert!(
            parts[2]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "pack id {rel:?} is not lower-case hex"
        );
        assert_eq!(
            parts[1],
            &parts[2][..2],
            "pack {rel:?} is in the wrong directory"
        );
    }
    // Every object named by a record is a blob of a pack, with its stored
    // size; no object id shows in any name in the repository.
    let blobs = sb.blobs();
    let names: Vec<String> = files_under(&sb.repo)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    for rec in b.records() {
        for obj in rec["objects"].as_array().into_iter().flatten() {
            let id = obj["id"].as_str().unwrap();
            let places = blobs
                .get(id)
                .unwrap_or_else(|| panic!("object {id} of {rec} is in no pack"));
            assert_eq!(
                obj["stored"].as_u64(),
                Some(places[0].length),
                "stored size of {id}"
            );
            assert!(
                names.iter().all(|n| !n.contains(id)),
                "object id {id} is visible in the repository's names"
            );
        }
    }
    // The snapshot's name: time, nonce and tag, no host.
    let host = bk::sys::host::this_host();
    let (stamp, rest) = b.snapshot.split_once('-').unwrap();
    assert!(stamp.ends_with('Z') && stamp.len() == 23, "{}", b.snapshot);
    assert_eq!(rest.len(), 24 + 4, "{}", b.snapshot);
    assert!(!b.snapshot.contains(&host), "{}", b.snapshot);

    // The local id key: under $XDG_DATA_HOME/bk/, mode 0600, named on stderr.
    let key_dir = sb.data_home.join("bk");
    let keys = files_under(&key_dir);
    assert_eq!(keys.len(), 1, "files under {}: {keys:?}", key_dir.display());
    let key_file = key_dir.join(keys.iter().next().unwrap());
    let mode = fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode of {}", key_file.display());
    assert!(
        b.seal_stderr.contains(key_file.to_str().unwrap()),
        "bk-seal --init should name {} on stderr, said: {}",
        key_file.display(),
        b.seal_stderr
    );
}

fn index_show_csv_lists_every_entry(sb: Sandbox) {
    let src = sb.path("src");
    small_tree(&src);
    let odd = "a, \"quoted\"\nname.txt";
    write_file(&src.join(odd), b"csv quoting\n", 0o644);
    let b = sb.backup(&src);
    let records = b.records();

    let out = sb.show("latest", &["--csv"]);
    assert_ok(&out, "bk-index show --csv");
    let mut rdr = csv::Reader::from_reader(out.stdout.as_slice());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_owned).collect();
    for col in ["path", "kind", "size", "mtime", "mode", "sha256", "objects"] {
        assert!(
            header.iter().any(|h| h == col),
            "CSV header {header:?} lacks {col}"
        );
    }
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), records.len(), "one CSV row per record");
    for rec in &records {
        let path = rec["path"].as_str().unwrap();
        let row = rows
            .iter()
            .find(|r| &r[col("path")] == path)
            .unwrap_or_else(|| panic!("no CSV row for {path:?}"));
        assert_eq!(
            &row[col("kind")],
            rec["kind"].as_str().unwrap(),
            "kind of {path:?}"
        );
        if rec["kind"] == "file" {
            assert_eq!(
                row[col("size")].parse::<u64>().ok(),
                rec["size"].as_u64(),
                "size of {path:?}"
            );
            assert_eq!(&row[col("sha256")], rec["sha256"].as_str().unwrap());
            for id in object_ids(rec) {
                assert!(row[col("objects")].contains(&id), "objects of {path:?}");
            }
        }
    }
}

fn open_object_writes_plaintext_to_stdout(sb: Sandbox) {
    let src = sb.path("src");
    small_tree(&src);
    let b = sb.backup(&src);
    let records = b.records();
    for name in ["docs/report.bin", "top.txt"] {
        let rec = find_record(&records, name.as_bytes());
        let want = fs::read(src.join(name)).unwrap();
        let objs = rec["objects"].as_array().expect("objects");
        assert!(!objs.is_empty(), "{name} has no objects");
        let total: u64 = objs.iter().map(|o| o["size"].as_u64().unwrap()).sum();
        assert_eq!(total, want.len() as u64, "object sizes of {name}");
        let mut got = Vec::new();
        for id in object_ids(rec) {
            let out = sb.open_object(&id);
            assert_ok(&out, "bk-open --object");
            got.extend_from_slice(&out.stdout);
        }
        assert!(got == want, "bk-open --object of {name}: plaintext differs");
    }
}

fn verify_clean_backup_reports_nothing(sb: Sandbox) {
    let src = sb.path("src");
    small_tree(&src);
    sb.backup(&src);
    let shown = sb.show_latest();

    let out = sb.verify(&shown, &[]);
    assert_code(&out, 0, "bk-verify of a sound repository");
    assert!(
        out.stdout.is_empty(),
        "no problem records expected: {}",
        describe(&out)
    );
    assert!(
        !out.stderr.is_empty(),
        "bk-verify prints a summary on stderr"
    );

    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    let out = sb.verify(&shown, &a);
    assert_code(&out, 0, "bk-verify --read-data of a sound repository");
    assert!(
        out.stdout.is_empty(),
        "no problem records expected: {}",
        describe(&out)
    );
}

/// An object that disappeared from the repository (its pack, on a disk or
/// in a bucket, rewritten without it) is reported by name, with the path
/// that needs it, and exit 1.
fn verify_reports_an_object_missing_from_the_repository(sb: Sandbox) {
    let src = sb.path("src");
    small_tree(&src);
    sb.backup(&src);
    let shown = sb.show_latest();
    let records = parse_records(&shown);
    let (path, id) = records
        .iter()
        .find_map(|r| {
            let ids = object_ids(r);
            Some((r["path"].as_str()?.to_owned(), ids.first()?.clone()))
        })
        .expect("a file with an object");
    sb.drop_blob(&id);

    let out = sb.verify(&shown, &[]);
    assert_code(&out, 1, "bk-verify with an object removed");
    let problems = parse_records(&out.stdout);
    assert_eq!(
        problems.len(),
        1,
        "exactly one problem record expected: {}",
        describe(&out)
    );
    assert_eq!(problems[0]["problem"], "missing", "{}", describe(&out));
    assert_eq!(problems[0]["object"], id.as_str(), "{}", describe(&out));
    assert_eq!(problems[0]["path"], path.as_str(), "{}", describe(&out));
}

fn restore_and_compare(sb: &Sandbox, env: &[(&str, &std::ffi::OsStr)], src: &Path, shown: &[u8]) {
    let expected = read_tree(src);
    let dest = sb.fresh_dir("restore");
    let out = sb.run_env("bk-open", &args!["--to", &dest], shown, env);
    assert_ok(&out, "bk-open --to");
    assert_same_tree(&expected, &read_tree(&restored(&dest, src)));
}

/// `BK_REPO`, `BK_RECIPIENT` and `BK_KEY` stand for the options.
#[test]
fn pipeline_configured_by_environment_variables() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    small_tree(&src);
    let (_, hashed) = sb.scan_hash(&src);
    let env = [
        ("BK_REPO", sb.repo.as_os_str()),
        ("BK_RECIPIENT", sb.pub_key.as_os_str()),
        ("BK_KEY", sb.sec_key.as_os_str()),
    ];
    let sealed = sb.run_env("bk-seal", &args!["--init"], &hashed, &env);
    assert_ok(&sealed, "bk-seal configured by environment");
    let out = sb.run_env("bk-index", &args!["write"], &sealed.stdout, &env);
    assert_ok(&out, "bk-index write configured by environment");
    let shown = sb.run_env("bk-index", &args!["show"], b"", &env);
    assert_ok(&shown, "bk-index show configured by environment");
    assert_eq!(
        parse_records(&shown.stdout).len(),
        parse_records(&hashed).len()
    );
    restore_and_compare(&sb, &env, &src, &shown.stdout);
}

/// `$XDG_CONFIG_HOME/bk/config.toml` stands for the options.
#[test]
fn pipeline_configured_by_config_file() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    small_tree(&src);
    let dir = sb.config_home.join("bk");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("config.toml"),
        format!(
            "repo = \"{}\"\nrecipient = [\"{}\"]\nkey = \"{}\"\n",
            sb.repo.display(),
            sb.pub_key.display(),
            sb.sec_key.display()
        ),
    )
    .unwrap();
    let (_, hashed) = sb.scan_hash(&src);
    let sealed = sb.run("bk-seal", &args!["--init"], &hashed);
    assert_ok(&sealed, "bk-seal configured by config file");
    let out = sb.run("bk-index", &args!["write"], &sealed.stdout);
    assert_ok(&out, "bk-index write configured by config file");
    let shown = sb.run("bk-index", &args!["show", "latest"], b"");
    assert_ok(&shown, "bk-index show configured by config file");
    assert_eq!(
        parse_records(&shown.stdout).len(),
        parse_records(&hashed).len()
    );
    restore_and_compare(&sb, &[], &src, &shown.stdout);
}

/// Records sharing dev+ino are restored as hard links.
#[test]
fn hard_links_are_restored_as_links() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let src = sb.path("src");
    write_file(&src.join("orig.txt"), b"linked content\n", 0o640);
    fs::create_dir(src.join("other dir")).unwrap();
    fs::hard_link(src.join("orig.txt"), src.join("other dir/alias.txt")).unwrap();
    write_file(&src.join("single.txt"), b"linked content\n", 0o640);
    sb.backup(&src);

    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&sb.show_latest(), &dest);
    assert_ok(&out, "bk-open --to");
    let dest = restored(&dest, &src);
    let a = fs::metadata(dest.join("orig.txt")).unwrap();
    let b = fs::metadata(dest.join("other dir/alias.txt")).unwrap();
    let c = fs::metadata(dest.join("single.txt")).unwrap();
    assert_eq!(
        fs::read(dest.join("other dir/alias.txt")).unwrap(),
        b"linked content\n"
    );
    assert_eq!(
        a.ino(),
        b.ino(),
        "orig.txt and alias.txt should be one inode"
    );
    assert_eq!(a.nlink(), 2);
    assert_ne!(
        a.ino(),
        c.ino(),
        "single.txt has the same content but is not a link"
    );
    assert_eq!(c.nlink(), 1);
}

/// The pipeline as a user types it: real pipes, every stage running at
/// once, `--init` in the same pipeline as `bk-index write`, then a restore
/// pipeline.
#[test]
fn shell_pipeline_backs_up_and_restores() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    small_tree(&src);
    make_symlink(Path::new("top.txt"), &src.join("top-link"));
    let expected = read_tree(&src);
    let dest = sb.fresh_dir("restore");
    let bin_dir = assert_cmd::cargo::cargo_bin("bk-scan")
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = r#"set -euo pipefail
bk-scan "$SRC" | bk-hash | bk-seal --init | bk-index write > "$SNAP"
bk-index show latest | bk-open --to "$DEST"
"#;
    let mut cmd = sb.command("bash");
    cmd.arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("SRC", &src)
        .env("DEST", &dest)
        .env("SNAP", sb.path("snapshot-name.txt"))
        .env("BK_REPO", &sb.repo)
        .env("BK_RECIPIENT", &sb.pub_key)
        .env("BK_KEY", &sb.sec_key);
    let out = run_command(cmd, b"", DEFAULT_TIMEOUT);
    assert_ok(&out, "the shell pipeline");
    let name = fs::read_to_string(sb.path("snapshot-name.txt")).unwrap();
    assert_eq!(sb.snapshot_names().len(), 1, "snapshot printed: {name:?}");
    assert_same_tree(&expected, &read_tree(&restored(&dest, &src)));
}

// Each of these runs once per backend (a directory, and S3 on moto).
/// `bk-seal --init` checks everything before it creates anything: an
/// `--id-key` file that exists already (or cannot be made) is a clear
/// error, and no repository (not even a half-made one that the next run
/// rejects) is left behind; the same command with a new path then works.
fn init_checks_the_id_key_path_before_creating_anything(sb: Sandbox) {
    let src = sb.path("src");
    small_tree(&src);
    let (_, hashed) = sb.scan_hash(&src);
    let init = |id_key: &Path| {
        let mut a = sb.seal_args();
        a.extend(args!["--init", "--id-key", id_key]);
        sb.run("bk-seal", &a, &hashed)
    };
    let nothing_made = |what: &str| {
        assert!(
            !sb.repo_exists() && sb.repo_files("").is_empty(),
            "{what}: left a repository behind: {:?}",
            sb.repo_files("")
        );
        if sb.backend() == Backend::Dir {
            assert!(!sb.repo.exists(), "{what}: made {}", sb.repo.display());
        }
    };

    let existing = sb.path("existing.idkey");
    fs::write(&existing, b"something else\n").unwrap();
    let out = init(&existing);
    assert_code(&out, 2, "bk-seal --init --id-key EXISTING_FILE");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "id key file {} already exists",
            existing.display()
        )),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "records went out: {}",
        describe(&out)
    );
    assert_eq!(fs::read(&existing).unwrap(), b"something else\n");
    nothing_made("an existing --id-key file");

    // A key file that cannot be made (its directory is a file).
    let blocked = sb.path("existing.idkey/new.idkey");
    let out = init(&blocked);
    assert_code(&out, 6, "bk-seal --init --id-key UNWRITABLE");
    assert!(
        stderr(&out).contains("existing.idkey"),
        "{}",
        describe(&out)
    );
    nothing_made("an --id-key that cannot be written");

    // A new path: the repository is made, and the next run uses the key.
    let fresh = sb.path("keys-dir/fresh.idkey");
    let out = init(&fresh);
    assert_ok(&out, "bk-seal --init --id-key NEW_FILE");
    assert!(sb.repo_exists() && fresh.is_file());
    let mut a = sb.seal_args();
    a.extend(args!["--id-key", &fresh]);
    let again = sb.run("bk-seal", &a, &hashed);
    assert_ok(&again, "bk-seal with the new id key");
    let out = sb.index_write_with(&again.stdout, &args!["--id-key", &fresh]);
    assert_ok(&out, "bk-index write with the new id key");
}

backend_tests!(
    init_checks_the_id_key_path_before_creating_anything,
    roundtrip_rich_tree_restores_every_entry,
    restore_subset_filtered_from_index_show,
    restore_sets_directory_modes_and_mtimes,
    index_show_csv_lists_every_entry,
    open_object_writes_plaintext_to_stdout,
    verify_clean_backup_reports_nothing,
    verify_reports_an_object_missing_from_the_repository,
);
