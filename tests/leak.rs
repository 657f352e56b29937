//! The repository reveals no file name, no content and no plaintext hash:
//! scan every byte and every name the storage operator can see.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;
use sha2::{Digest, Sha256};

const ROOT_NAME: &str = "quixotic-source-root";
const NAMES: &[&str] = &[
    "secret-tax-return-2025.pdf",
    "medical-records-hidden-dir",
    "love-letter-to-zelda.txt",
    "passwords-backup-kdbx",
    "diary entry with spaces.md",
];
const MARKERS: &[&str] = &[
    "CONFIDENTIAL-ACCOUNT-NUMBER-8472-1093-5561",
    "Zelda, I have loved you since the spring of 2019",
    "hunter2-the-password-nobody-should-see",
];

fn leak_tree(root: &Path) {
    let big: Vec<u8> = MARKERS[0].repeat(5000).into_bytes();
    write_file(&root.join(NAMES[0]), &big, 0o600);
    write_file(
        &root.join(NAMES[1]).join(NAMES[2]),
        format!("{}\n", MARKERS[1]).as_bytes(),
        0o600,
    );
    write_file(
        &root.join(NAMES[1]).join(NAMES[3]),
        format!("{}\n{}\n", MARKERS[2], MARKERS[2]).as_bytes(),
        0o600,
    );
    write_file(&root.join(NAMES[4]), &pseudo_random(41, 70_000), 0o644);
}

/// Every regular file and directory in the repository: (relative path, bytes).
fn repo_files(repo: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    files_under(repo)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(repo.join(&p)).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn repository_reveals_no_names_contents_or_hashes() {
    let sb = Sandbox::new();
    let src = sb.path(ROOT_NAME);
    leak_tree(&src);
    let b = sb.backup(&src);
    let records = b.records();

    // The secrets really were backed up (so the search below means something).
    let shown = sb.show_latest();
    for name in NAMES {
        assert!(
            contains(&shown, name.as_bytes()),
            "{name} not in the snapshot"
        );
    }
    let mut file_hashes = Vec::new();
    for rec in records.iter().filter(|r| r["kind"] == "file") {
        let rel = String::from_utf8(rec_path(rec)).unwrap();
        let content = fs::read(src.join(&rel)).unwrap();
        let hex = rec["sha256"].as_str().expect("sha256").to_owned();
        assert_eq!(hex, sha256_hex(&content));
        file_hashes.push((rel, hex));
    }
    assert_eq!(file_hashes.len(), 4);

    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    needles.push(("root name".into(), ROOT_NAME.as_bytes().to_vec()));
    for n in NAMES {
        needles.push((format!("name {n:?}"), n.as_bytes().to_vec()));
    }
    for m in MARKERS {
        needles.push((format!("content {m:?}"), m.as_bytes().to_vec()));
        // Any 16-byte window of the content would do; take the head.
        needles.push((
            format!("content head of {m:?}"),
            m.as_bytes()[..16].to_vec(),
        ));
    }
    for (rel, hex) in &file_hashes {
        needles.push((format!("sha256 hex of {rel}"), hex.as_bytes().to_vec()));
        needles.push((
            format!("upper-case sha256 hex of {rel}"),
            hex.to_uppercase().into_bytes(),
        ));
        needles.push((format!("raw sha256 of {rel}"), hex::decode(hex).unwrap()));
    }

    // The local id key (the secret behind the object ids): neither in the
    // repository nor in what bk-seal printed.
    let key_files = files_under(&sb.data_home.join("bk"));
    assert_eq!(key_files.len(), 1, "local id key files: {key_files:?}");
    let key_text = fs::read_to_string(sb.data_home.join("bk").join(key_files.first().unwrap()))
        .unwrap()
        .trim()
        .to_owned();
    assert!(key_text.len() >= 32, "id key file is suspiciously short");
    for (what, out) in [
        ("stdout", &b.sealed),
        ("stderr", &b.seal_stderr.as_bytes().to_vec()),
    ] {
        assert!(
            !contains(out, key_text.as_bytes()),
            "bk-seal printed the local id key on {what}"
        );
    }
    needles.push(("local id key".into(), key_text.as_bytes().to_vec()));
    if let Ok(raw) = hex::decode(&key_text) {
        needles.push(("local id key (raw bytes)".into(), raw));
    }

    let files = repo_files(&sb.repo);
    assert!(files.len() >= 6, "repository files: {:?}", files.len());
    let mut leaks = Vec::new();
    for (path, bytes) in &files {
        for (what, needle) in &needles {
            if contains(bytes, needle) {
                leaks.push(format!("{what} appears inside {}", path.display()));
            }
        }
    }
    // Names in the repository (files and directories).
    for entry in entries_under(&sb.repo) {
        let name = entry.to_string_lossy().to_lowercase();
        for (what, needle) in &needles {
            if let Ok(n) = std::str::from_utf8(needle) {
                if name.contains(&n.to_lowercase()) {
                    leaks.push(format!("{what} appears in the repository name {entry:?}"));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "the repository leaks:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn object_ids_are_keyed_not_plain_hashes() {
    let sb = Sandbox::new();
    let src = sb.path(ROOT_NAME);
    leak_tree(&src);
    let b = sb.backup(&src);
    for rec in b.records().iter().filter(|r| r["kind"] == "file") {
        let hex = rec["sha256"].as_str().unwrap();
        let digest = hex::decode(hex).unwrap();
        let rel = String::from_utf8(rec_path(rec)).unwrap();
        let content = fs::read(src.join(&rel)).unwrap();
        let guesses = [
            hex.to_owned(),
            hex::encode(Sha256::digest(&digest)),
            hex::encode(Sha256::digest(hex.as_bytes())),
            hex::encode(Sha256::digest(Sha256::digest(&content))),
        ];
        for id in object_ids(rec) {
            assert!(
                !guesses.contains(&id),
                "object id {id} of {rel} is an unkeyed hash of the content"
            );
        }
    }
}

#[test]
fn object_ids_differ_between_repositories() {
    let one = Sandbox::new();
    let two = Sandbox::new();
    let ids = |sb: &Sandbox| -> BTreeSet<String> {
        let src = sb.path(ROOT_NAME);
        leak_tree(&src);
        sb.backup(&src)
            .records()
            .iter()
            .flat_map(object_ids)
            .collect()
    };
    let a = ids(&one);
    let b = ids(&two);
    assert!(!a.is_empty());
    assert!(
        a.is_disjoint(&b),
        "two repositories with their own id keys gave the same object ids: {:?}",
        a.intersection(&b).collect::<Vec<_>>()
    );
}
