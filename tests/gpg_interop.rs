//! Keys made by GnuPG work with bk, and everything bk stores is a standard
//! OpenPGP message that plain `gpg --decrypt` reads: snapshot roots as
//! they are, blobs (contents and catalogue pieces) once taken out of their
//! pack, whose keystream needs the id key.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn interop_tree(root: &Path) {
    write_file(&root.join("notes/plain.txt"), b"hello from bk\n", 0o644);
    write_file(
        &root.join("notes/key.bin"),
        &pseudo_random(31, 2 << 20),
        0o600,
    );
    write_file(&root.join("empty"), b"", 0o644);
    make_symlink(Path::new("notes/plain.txt"), &root.join("plain-link"));
    for (i, f) in ["notes/plain.txt", "notes/key.bin", "empty"]
        .iter()
        .enumerate()
    {
        set_mtime_ns(&root.join(f), T0 + 999 * i as i64);
    }
}

/// `gpg --batch --pinentry-mode loopback --passphrase P <extra> FILE`
/// (the sandbox's secret key must be imported).
fn gpg_with_key(sb: &Sandbox, extra: &[&str], file: &Path) -> std::process::Output {
    let mut a = args![
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        sb.key.passphrase.unwrap_or("")
    ];
    a.extend(extra.iter().map(OsString::from));
    a.push(file.into());
    sb.gpg(&a, b"")
}

/// The OpenPGP message of blob `id`, taken out of its pack, in a file.
fn blob_file(sb: &Sandbox, id: &str) -> PathBuf {
    let path = sb.path(format!("blob-{id}.pgp"));
    sb.write_blob_message(id, &path);
    path
}

/// `gpg --decrypt` of every object of every file record gives the file's
/// bytes (objects concatenated in order).
fn assert_gpg_reads_objects(sb: &Sandbox, records: &[Value], src: &Path) {
    sb.gpg_import_secret(sb.key);
    let mut checked = 0;
    for rec in records.iter().filter(|r| r["kind"] == "file") {
        let rel = String::from_utf8(rec_path(rec)).unwrap();
        let want = fs::read(src.join(&rel)).unwrap();
        let mut got = Vec::new();
        for id in object_ids(rec) {
            let out = gpg_with_key(sb, &["--decrypt"], &blob_file(sb, &id));
            assert_ok(&out, &format!("gpg --decrypt of object {id} ({rel})"));
            assert!(
                !stderr(&out).contains("not integrity protected"),
                "gpg: {}",
                stderr(&out)
            );
            got.extend_from_slice(&out.stdout);
        }
        assert!(
            got == want,
            "gpg --decrypt of the objects of {rel} differs from the file"
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} file records");
}

fn backup_restore_with(kind: KeyKind) {
    let sb = Sandbox::with_key(kind);
    let src = sb.path("src");
    interop_tree(&src);
    let expected = read_tree(&src);
    let b = sb.backup(&src);
    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&sb.show_latest(), &dest);
    assert_ok(&out, "bk-open --to");
    assert_same_tree(&expected, &read_tree(&restored(&dest, &src)));
    assert_gpg_reads_objects(&sb, &b.records(), &src);
}

#[test]
fn curve25519_key_from_gpg_backs_up_restores_and_gpg_decrypts_objects() {
    backup_restore_with(KeyKind::Cv25519);
}

#[test]
fn rsa3072_key_from_gpg_backs_up_restores_and_gpg_decrypts_objects() {
    backup_restore_with(KeyKind::Rsa3072);
}

#[test]
fn protected_key_with_passphrase_file() {
    // key_args() passes --passphrase-file for the protected key.
    backup_restore_with(KeyKind::Protected);
}

#[test]
fn protected_key_with_bk_passphrase_variable() {
    let sb = Sandbox::with_key(KeyKind::Protected);
    let src = sb.path("src");
    interop_tree(&src);
    let expected = read_tree(&src);
    sb.backup(&src);
    let env = [("BK_PASSPHRASE", std::ffi::OsStr::new(PASSPHRASE))];

    let mut a = args!["show", "latest"];
    a.extend(sb.repo_args());
    a.extend(args!["--key", &sb.sec_key]);
    let shown = sb.run_env("bk-index", &a, b"", &env);
    assert_ok(&shown, "bk-index show with BK_PASSPHRASE");

    let dest = sb.fresh_dir("restore");
    let mut a = sb.repo_args();
    a.extend(args!["--key", &sb.sec_key, "--to", &dest]);
    let out = sb.run_env("bk-open", &a, &shown.stdout, &env);
    assert_ok(&out, "bk-open --to with BK_PASSPHRASE");
    assert_same_tree(&expected, &read_tree(&restored(&dest, &src)));
}

#[test]
fn gpg_decrypts_snapshot_to_index_show_output() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    interop_tree(&src);
    let b = sb.backup(&src);
    let shown = sb.show_latest();
    assert!(!shown.is_empty());
    sb.gpg_import_secret(sb.key);
    let out = gpg_with_key(
        &sb,
        &["--decrypt"],
        &sb.repo.join("snapshots").join(&b.snapshot),
    );
    assert_ok(&out, "gpg --decrypt of the snapshot");
    // The root lists the pieces; gpg decrypts each, and in the root's
    // order they are what bk-index show prints.
    let mut records = Vec::new();
    let mut pieces = 0;
    for piece in root_pieces(&out.stdout) {
        let id = piece["piece"].as_str().expect("a piece line");
        let out = gpg_with_key(&sb, &["--decrypt"], &blob_file(&sb, id));
        assert_ok(&out, &format!("gpg --decrypt of piece {id}"));
        assert_eq!(piece["size"], out.stdout.len(), "{piece}");
        records.extend_from_slice(&out.stdout);
        pieces += 1;
    }
    assert!(pieces >= 1, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        records == shown,
        "gpg --decrypt of the snapshot's pieces:\n{}\nbk-index show latest:\n{}",
        String::from_utf8_lossy(&records),
        String::from_utf8_lossy(&shown)
    );
}

/// The blob of `notes/key.bin` (the first if chunked), in a file.
fn some_object(sb: &Sandbox, b: &Backup) -> PathBuf {
    let records = b.records();
    let ids = object_ids(find_record(&records, b"notes/key.bin"));
    blob_file(sb, &ids[0])
}

#[test]
fn objects_are_seipd_v1_aes256_to_the_encryption_subkey() {
    for kind in [KeyKind::Cv25519, KeyKind::Rsa3072] {
        let sb = Sandbox::with_key(kind);
        let src = sb.path("src");
        interop_tree(&src);
        let b = sb.backup(&src);
        let object = some_object(&sb, &b);
        sb.gpg_import_secret(sb.key);

        let out = gpg_with_key(&sb, &["--list-packets"], &object);
        assert_ok(&out, "gpg --list-packets");
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let subkey = &sb.key.encryption_key_ids[0];
        assert!(
            listing.contains(":pubkey enc packet: version 3, algo")
                && listing.contains(&format!("keyid {subkey}")),
            "{kind:?}: object should be encrypted to the encryption subkey {subkey}:\n{listing}"
        );
        assert!(
            listing.contains(":encrypted data packet:") && listing.contains("mdc_method: 2"),
            "{kind:?}: expected a SEIPD v1 packet with MDC:\n{listing}"
        );
        assert!(
            !listing.contains(":aead encrypted packet:"),
            "{kind:?}: AEAD packets are unreadable by GnuPG 2.2:\n{listing}"
        );
        assert!(
            listing.contains(":literal data packet:") && listing.contains("name=\"\""),
            "{kind:?}: literal packet should have an empty file name:\n{listing}"
        );

        let out = gpg_with_key(&sb, &["--show-session-key", "--decrypt"], &object);
        assert_ok(&out, "gpg --show-session-key --decrypt");
        let err = stderr(&out);
        assert!(
            err.contains("session key: '9:"),
            "{kind:?}: session key should be AES256 (algo 9): {err}"
        );
    }
}

#[test]
fn object_literal_packet_has_no_date() {
    let sb = Sandbox::new();
    let src = sb.path("src");
    interop_tree(&src);
    let b = sb.backup(&src);
    sb.gpg_import_secret(sb.key);
    let out = gpg_with_key(&sb, &["--list-packets"], &some_object(&sb, &b));
    assert_ok(&out, "gpg --list-packets");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.contains("created 0,"),
        "the literal packet should carry no date:\n{listing}"
    );
}

#[test]
fn two_recipients_can_each_restore() {
    let sb = Sandbox::new();
    let (other_pub, other_sec) = sb.add_key(KeyKind::Other, "other");
    let src = sb.path("src");
    interop_tree(&src);
    let expected = read_tree(&src);

    let (_, hashed) = sb.scan_hash(&src);
    let mut a = sb.seal_args();
    a.extend(args!["-r", &other_pub, "--init"]);
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal with two recipients");
    let mut a = args!["write"];
    a.extend(sb.seal_args());
    a.extend(args!["-r", &other_pub]);
    let out = sb.run("bk-index", &a, &sealed.stdout);
    assert_ok(&out, "bk-index write with two recipients");

    for (sec, name) in [(&sb.sec_key, "first"), (&other_sec, "second")] {
        let mut a = args!["show", "latest"];
        a.extend(sb.repo_args());
        a.extend(args!["--key", sec]);
        let shown = sb.run("bk-index", &a, b"");
        assert_ok(&shown, &format!("bk-index show with the {name} key"));
        let dest = sb.fresh_dir(&format!("restore-{name}"));
        let mut a = sb.repo_args();
        a.extend(args!["--key", sec, "--to", &dest]);
        let out = sb.run("bk-open", &a, &shown.stdout);
        assert_ok(&out, &format!("bk-open with the {name} key"));
        let diffs = diff_trees(
            &expected,
            &read_tree(&restored(&dest, &src)),
            Compare {
                perm: true,
                file_mtime: true,
                dir_mtime: false,
            },
        );
        assert!(
            diffs.is_empty(),
            "{name} key: restored tree differs:\n{}",
            diffs.join("\n")
        );
    }

    // gpg sees one public-key packet per recipient.
    let records = parse_records(&sealed.stdout);
    let id = &object_ids(find_record(&records, b"notes/plain.txt"))[0];
    let out = sb.gpg(&args!["--list-packets", blob_file(&sb, id)], b"");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    for k in [key(KeyKind::Cv25519), key(KeyKind::Other)] {
        assert!(
            listing.contains(&format!("keyid {}", k.encryption_key_ids[0])),
            "object not encrypted to {}:\n{listing}",
            k.encryption_key_ids[0]
        );
    }
}

/// A key whose first encryption subkey expired and whose newest one is
/// revoked: bk must encrypt to the one valid subkey only.
#[test]
fn encryption_uses_the_valid_subkey_not_expired_or_revoked_ones() {
    let sb = Sandbox::with_key(KeyKind::MixedSubkeys);
    let src = sb.path("src");
    interop_tree(&src);
    let expected = read_tree(&src);
    let b = sb.backup(&src);
    let valid = &sb.key.encryption_key_ids[0];
    let mut files: Vec<PathBuf> = object_ids(find_record(&b.records(), b"notes/key.bin"))
        .iter()
        .map(|id| blob_file(&sb, id))
        .collect();
    files.push(sb.repo.join("snapshots").join(&b.snapshot));
    for piece in sb.snapshot_pieces(&b.snapshot) {
        files.push(blob_file(&sb, &piece));
    }
    for file in &files {
        let out = sb.gpg(&args!["--list-packets", file], b"");
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            listing.contains(&format!("keyid {valid}")),
            "{} should be encrypted to the valid subkey {valid}:\n{listing}",
            file.display()
        );
        for bad in &sb.key.unusable_key_ids {
            assert!(
                !listing.contains(&format!("keyid {bad}")),
                "{} is encrypted to the expired or revoked subkey {bad}:\n{listing}",
                file.display()
            );
        }
    }
    let dest = sb.fresh_dir("restore");
    let out = sb.restore(&sb.show_latest(), &dest);
    assert_ok(&out, "bk-open --to");
    assert_same_tree(&expected, &read_tree(&restored(&dest, &src)));
}

#[test]
fn key_without_a_usable_encryption_subkey_is_refused() {
    let sb = Sandbox::new();
    let (bad_pub, _) = sb.add_key(KeyKind::NoUsableSubkey, "unusable");
    let src = sb.path("src");
    interop_tree(&src);
    let (_, hashed) = sb.scan_hash(&src);
    let out = sb.run(
        "bk-seal",
        &args!["--repo", &sb.repo, "-r", &bad_pub, "--init"],
        &hashed,
    );
    assert_code(
        &out,
        4,
        "bk-seal to a key whose encryption subkeys are expired or revoked",
    );
    let err = stderr(&out);
    let fpr = &key(KeyKind::NoUsableSubkey).fingerprint;
    assert!(
        err.contains(bad_pub.to_str().unwrap()) || err.to_uppercase().contains(&fpr[24..]),
        "stderr should name the key: {err}"
    );
    assert!(
        sb.pack_files().is_empty(),
        "packs were written for an unusable key"
    );
}
