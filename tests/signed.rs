//! Signed snapshots: `bk-index write --sign-key` signs, and `bk-index show`,
//! `bk-verify --all-snapshots` and `bk-open --snapshot` check the signature
//! against `--signer`, refusing forged snapshots with `--require-signature`.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// A repository with one snapshot of a two-file tree, signed with the
/// sandbox's own key.
fn signed_repo(sb: &Sandbox) -> (PathBuf, String) {
    let tree = sb.path("tree");
    write_file(&tree.join("a.txt"), b"alpha\n", 0o644);
    write_file(&tree.join("b.bin"), &pseudo_random(5, 20_000), 0o600);
    let (_, hashed) = sb.scan_hash(&tree);
    let sealed = sb.seal(&hashed);
    assert_ok(&sealed, "bk-seal");
    let out = sb.index_write_with(&sealed.stdout, &args!["--sign-key", &sb.sec_key]);
    assert_ok(&out, "bk-index write --sign-key");
    assert!(
        stderr(&out).contains(&format!("signed by {}", sb.key.fingerprint)),
        "{}",
        describe(&out)
    );
    let name = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (tree, name)
}

fn strict(sb: &Sandbox) -> Vec<OsString> {
    args!["--signer", &sb.pub_key, "--require-signature"]
}

fn show(sb: &Sandbox, snapshot: &str, extra: &[OsString]) -> std::process::Output {
    let mut a = args!["show", snapshot];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    a.extend(extra.iter().cloned());
    sb.run("bk-index", &a, b"")
}

fn verify_all(sb: &Sandbox, extra: &[OsString]) -> std::process::Output {
    let mut a = sb.key_args();
    a.push("--all-snapshots".into());
    a.extend(extra.iter().cloned());
    sb.verify(b"", &a)
}

fn open_snapshot(sb: &Sandbox, name: &str, to: &Path, extra: &[OsString]) -> std::process::Output {
    let mut a = sb.repo_args();
    a.extend(sb.key_args());
    a.extend(args!["--snapshot", name, "--to", to]);
    a.extend(extra.iter().cloned());
    sb.run("bk-open", &a, b"")
}

/// Every way of reading the snapshot `name` refuses it with status 5 and a
/// message containing `why`, and restores nothing.
fn assert_refused(sb: &Sandbox, name: &str, why: &str) {
    let out = show(sb, name, &strict(sb));
    assert_code(&out, 5, "bk-index show --require-signature");
    assert!(
        out.stdout.is_empty(),
        "show printed records: {}",
        describe(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(name) && err.contains(why),
        "{}",
        describe(&out)
    );

    let out = verify_all(sb, &strict(sb));
    assert_code(&out, 5, "bk-verify --all-snapshots --require-signature");
    assert!(stderr(&out).contains(why), "{}", describe(&out));

    let to = sb.path(format!("restore-{}", name.len() + why.len()));
    let out = open_snapshot(sb, name, &to, &strict(sb));
    assert_code(&out, 5, "bk-open --snapshot --require-signature");
    assert!(stderr(&out).contains(why), "{}", describe(&out));
    assert!(
        !to.exists() || fs::read_dir(&to).unwrap().next().is_none(),
        "bk-open restored something from a refused snapshot"
    );
}

#[test]
fn genuine_signed_snapshot_passes_everywhere_and_gpg_says_good() {
    let sb = Sandbox::new();
    let (tree, name) = signed_repo(&sb);

    let out = show(&sb, &name, &strict(&sb));
    assert_ok(&out, "bk-index show --require-signature");
    assert!(!stderr(&out).contains("warning"), "{}", describe(&out));
    let records = parse_records(&out.stdout);
    assert_eq!(records.len(), 3, "{}", describe(&out));

    let out = verify_all(&sb, &strict(&sb));
    assert_ok(&out, "bk-verify --all-snapshots --require-signature");
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    let to = sb.path("restore");
    let out = open_snapshot(&sb, "latest", &to, &strict(&sb));
    assert_ok(&out, "bk-open --snapshot latest");
    let to = restored(&to, &tree);
    assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(
        fs::read(to.join("b.bin")).unwrap(),
        fs::read(tree.join("b.bin")).unwrap()
    );

    let mut a = args![
        "list",
        "--json",
        "--signer",
        &sb.pub_key,
        "--require-signature"
    ];
    a.extend(sb.repo_args());
    let out = sb.run("bk-index", &a, b"");
    assert_ok(&out, "bk-index list --require-signature");

    // GnuPG reads the same signature on the root, whose pieces hold the
    // records.
    sb.gpg_import_secret(sb.key);
    let out = sb.gpg_decrypt(&sb.repo.join("snapshots").join(&name), &[]);
    assert_ok(&out, "gpg --decrypt of a signed snapshot");
    let err = stderr(&out);
    assert!(err.contains("Good signature"), "gpg said: {err}");
    let mut shown = Vec::new();
    for line in root_pieces(&out.stdout) {
        let id = line["piece"].as_str().expect("a piece line");
        let piece = sb.path(format!("{id}.pgp"));
        sb.write_blob_message(id, &piece);
        let out = sb.gpg_decrypt(&piece, &[]);
        assert_ok(&out, &format!("gpg --decrypt of piece {id}"));
        shown.extend_from_slice(&out.stdout);
    }
    assert_eq!(parse_records(&shown), records);
}

#[test]
fn snapshot_forged_with_the_public_key_only_is_refused() {
    let sb = Sandbox::new();
    signed_repo(&sb);
    // The attacker knows the records (say, an old leak) and the public key:
    // he points a.txt at b.bin's object and encrypts the result to us.
    let mut records = parse_records(&show(&sb, "latest", &[]).stdout);
    let b_objects = find_record(&records, b"b.bin")["objects"].clone();
    let b_sha = find_record(&records, b"b.bin")["sha256"].clone();
    for r in records.iter_mut() {
        if r["path"] == "a.txt" {
            r["objects"] = b_objects.clone();
            r["sha256"] = b_sha.clone();
            r["size"] = Value::from(20_000);
        }
    }
    let root = sb.forged_root(&to_ndjson(&records), "attacker");
    let forged = sb.gpg_encrypt_as_attacker(&root, None);
    let name = sb.plant_snapshot(&forged);
    assert_refused(&sb, &name, "not signed");

    // Without --require-signature the missing signature is a warning, but
    // the snapshot carries no MAC of the repository either: refused unless
    // the user opts out.
    let out = show(&sb, &name, &args!["--signer", &sb.pub_key]);
    assert_code(
        &out,
        5,
        "bk-index show --signer (unsigned, unauthenticated snapshot)",
    );
    assert!(
        stderr(&out).contains(&format!("warning: snapshot {name} is not signed"))
            && stderr(&out).contains("is not authenticated"),
        "{}",
        describe(&out)
    );
    let out = show(&sb, &name, &[]);
    assert_code(&out, 5, "bk-index show without --signer");
    assert!(!stderr(&out).contains("signed"), "{}", describe(&out));
    let out = show(&sb, &name, &args!["--allow-unauthenticated"]);
    assert_ok(&out, "bk-index show --allow-unauthenticated");
    assert_eq!(parse_records(&out.stdout), records);

    // --require-signature without any signer cannot ever pass: usage error.
    let out = show(&sb, "latest", &args!["--require-signature"]);
    assert_code(&out, 2, "--require-signature without --signer");
    assert!(stderr(&out).contains("--signer"), "{}", describe(&out));
}

#[test]
fn snapshot_signed_by_another_key_is_refused() {
    let sb = Sandbox::new();
    let (_, genuine) = signed_repo(&sb);
    let other = key(KeyKind::Other);
    // Made with bk itself by the other key's owner, and with gpg.
    let plain = sb.forged_root(&show(&sb, &genuine, &[]).stdout, "other");
    let forged = sb.gpg_encrypt_as_attacker(&plain, Some(other));
    let name = sb.plant_snapshot(&forged);
    assert_refused(&sb, &name, "not among the --signer keys");
    let out = show(&sb, &name, &args!["--signer", &sb.pub_key]);
    assert_code(
        &out,
        5,
        "show --signer of a foreign-signed snapshot without a MAC",
    );
    assert!(
        stderr(&out).contains(&format!(
            "warning: snapshot {name} is signed by key {}",
            other.fingerprint
        )),
        "{}",
        describe(&out)
    );
    // Trusting the other key too makes it pass.
    let (other_pub, _) = sb.add_key(KeyKind::Other, "other");
    let mut trust_both = strict(&sb);
    trust_both.extend(args!["--signer", &other_pub]);
    assert_ok(&show(&sb, &name, &trust_both), "show with both signers");

    fs::remove_file(sb.repo.join("snapshots").join(&name)).unwrap();
    let (_, other_sec) = sb.add_key(KeyKind::Other, "other");
    let (_, hashed) = sb.scan_hash(&sb.path("tree"));
    let sealed = sb.seal(&hashed);
    let out = sb.index_write_with(&sealed.stdout, &args!["--sign-key", &other_sec]);
    assert_ok(&out, "bk-index write --sign-key other");
    let name = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_refused(&sb, &name, "not among the --signer keys");
}

#[test]
fn signature_that_does_not_verify_is_always_an_error() {
    use pgp::composed::{
        Deserializable, MessageBuilder, SignedPublicKey, SignedSecretKey, SubpacketConfig,
    };
    use pgp::crypto::{hash::HashAlgorithm, sym::SymmetricKeyAlgorithm};
    use pgp::packet::{Subpacket, SubpacketData};
    use pgp::types::{KeyDetails, Password, Timestamp};

    let sb = Sandbox::new();
    let (_, genuine) = signed_repo(&sb);
    let plain = sb.forged_root(&show(&sb, &genuine, &[]).stdout, "attacker");
    // The attacker signs with his own key but claims, in the signature's
    // issuer fingerprint, to be the genuine signer.
    let (me, _) = SignedPublicKey::from_armor_single(&sb.key.public[..]).unwrap();
    let (other, _) = SignedSecretKey::from_armor_single(&key(KeyKind::Other).secret[..]).unwrap();
    let mut rng = rand::thread_rng();
    let mut builder =
        MessageBuilder::from_bytes("", plain).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    builder
        .encrypt_to_key(&mut rng, &me.public_subkeys[0].key)
        .unwrap();
    let hashed = vec![
        Subpacket::regular(SubpacketData::IssuerFingerprint(me.fingerprint())).unwrap(),
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now())).unwrap(),
    ];
    builder.sign_with_subpackets(
        &other.primary_key,
        Password::empty(),
        HashAlgorithm::Sha256,
        SubpacketConfig::UserDefined {
            hashed,
            unhashed: vec![],
        },
    );
    let mut forged = Vec::new();
    builder.to_writer(&mut rng, &mut forged).unwrap();
    let name = sb.plant_snapshot(&forged);
    assert_refused(&sb, &name, "signature does not verify");
    // Even without --require-signature: a bad signature is never a warning.
    let out = show(
        &sb,
        &name,
        &args!["--signer", &sb.pub_key, "--allow-unauthenticated"],
    );
    assert_code(&out, 5, "show --signer of a badly signed snapshot");
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!("snapshot {name}: signature does not verify")),
        "{}",
        describe(&out)
    );
}
