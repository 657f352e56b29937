//! Helpers for the tests of the format-2 promises (issue 16):
//! tests/packs.rs, tests/catalogue.rs, tests/prune_repack.rs and
//! tests/pack_crash.rs. They look at a repository the way bk itself does
//! (the local id key, pack headers read with the library) and the way its
//! storage operator does (file names, sizes, bytes).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Output;

use bk::repo::id::PackId;
use bk::repo::idkey::IdKey;
use bk::repo::pack::{self, BlobEntry, PackKeys};
use bk::storage::dir::DirStorage;

use super::*;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// This machine's id key of the sandbox's repository (the local file
/// `bk-seal --init` saved in `$XDG_DATA_HOME/bk/<repo id>.idkey`).
pub fn id_key(sb: &Sandbox) -> IdKey {
    let path = sb
        .data_home
        .join("bk")
        .join(format!("{}.idkey", sb.repo_id()));
    bk::repo::idkey::load_local(&path)
        .unwrap_or_else(|e| panic!("id key {}: {e}", path.display()))
        .unwrap_or_else(|| panic!("no id key at {}", path.display()))
}

/// The pack keys of the sandbox's repository.
pub fn pack_keys(sb: &Sandbox) -> PackKeys {
    PackKeys::derive(&id_key(sb), &sb.repo_id())
}

/// Every pack of the repository (either backend) with its stored size.
pub fn packs(sb: &Sandbox) -> BTreeMap<PackId, u64> {
    sb.repo_files("packs")
        .into_iter()
        .filter_map(|(rel, size)| PackId::from_key(&rel).map(|id| (id, size)))
        .collect()
}

/// Total bytes of every file of the repository (either backend).
pub fn repo_bytes(sb: &Sandbox) -> u64 {
    sb.repo_files("").values().sum()
}

/// The directory storage of a sandbox's repository (a directory one).
#[track_caller]
pub fn dir_store(sb: &Sandbox) -> DirStorage {
    assert!(sb.s3.is_none(), "a directory repository is needed here");
    DirStorage::new(&sb.repo)
}

/// The blobs of every pack, as their headers (read and MAC-checked with
/// the library) list them.
pub fn pack_headers(sb: &Sandbox) -> BTreeMap<PackId, (u64, Vec<BlobEntry>)> {
    let store = dir_store(sb);
    let keys = pack_keys(sb);
    packs(sb)
        .into_iter()
        .map(|(id, size)| {
            let entries = pack::read_header(&store, &id, size, &keys)
                .unwrap_or_else(|e| panic!("header of pack {id}: {e}"));
            (id, (size, entries))
        })
        .collect()
}

/// Where blob `id` (hex) is: its pack and header entry.
pub fn find_blob(
    headers: &BTreeMap<PackId, (u64, Vec<BlobEntry>)>,
    id: &str,
) -> Option<(PackId, BlobEntry)> {
    headers.iter().find_map(|(pack, (_, entries))| {
        entries
            .iter()
            .find(|e| e.id.to_string() == id)
            .map(|e| (*pack, *e))
    })
}

/// The bytes of one blob (an OpenPGP message), taken out of its pack with
/// the library's ranged, decrypting read.
pub fn blob_bytes(sb: &Sandbox, pack_id: &PackId, entry: &BlobEntry) -> Vec<u8> {
    let store = dir_store(sb);
    let mut r = pack::open_range(&store, pack_id, &pack_keys(sb), entry.offset, entry.length)
        .unwrap_or_else(|e| panic!("pack {pack_id}: {e}"))
        .unwrap_or_else(|| panic!("pack {pack_id} is gone"));
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out.len() as u64, entry.length, "blob bytes read");
    out
}

/// `bk-index write` of sealed records (`extra` arguments added): the
/// snapshot's name and the numbers of `catalogue in N pieces (M new)`.
pub fn write_snapshot(sb: &Sandbox, sealed: &[u8], extra: &[OsString]) -> (String, u64, u64) {
    let out = sb.index_write_with(sealed, extra);
    assert_ok(&out, "bk-index write");
    let name = String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_owned();
    let (pieces, new) = catalogue_pieces(&stderr(&out));
    (name, pieces, new)
}

/// N and M of `catalogue in N pieces (M new)` in bk-index write's stderr.
pub fn catalogue_pieces(err: &str) -> (u64, u64) {
    let line = summary_line(err, "bk-index: wrote snapshot");
    let after = line
        .split_once("catalogue in ")
        .unwrap_or_else(|| panic!("no catalogue count in {line:?}"))
        .1;
    let mut words = after
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty());
    let n = words.next().and_then(|w| w.parse().ok());
    let m = words.next().and_then(|w| w.parse().ok());
    match (n, m) {
        (Some(n), Some(m)) if after.contains(" pieces (") && after.contains(" new)") => (n, m),
        _ => panic!("cannot read the catalogue count in {line:?}"),
    }
}

/// bk-scan | bk-hash | bk-seal (`seal_extra` added) of `tree`: the sealed
/// records and bk-seal's stderr.
pub fn seal_tree(sb: &Sandbox, tree: &Path, seal_extra: &[OsString]) -> (Vec<u8>, String) {
    let (_, hashed) = sb.scan_hash(tree);
    let mut a = sb.seal_args();
    if !sb.repo_exists() {
        a.push("--init".into());
    }
    a.extend(seal_extra.iter().cloned());
    let out = sb.run("bk-seal", &a, &hashed);
    assert_ok(&out, "bk-seal");
    (out.stdout.clone(), stderr(&out))
}

/// `bk-verify --read-data --key …` of snapshot `name`; panics unless it is
/// clean.
#[track_caller]
pub fn assert_verifies(sb: &Sandbox, name: &str) {
    let shown = sb.show(name, &[]);
    assert_ok(&shown, &format!("bk-index show {name}"));
    let mut a = args!["--read-data"];
    a.extend(sb.key_args());
    let out = sb.verify(&shown.stdout, &a);
    assert_ok(&out, &format!("bk-verify --read-data of {name}"));
    assert!(
        out.stdout.is_empty(),
        "bk-verify --read-data of {name} reported problems: {}",
        describe(&out)
    );
}

/// Restores snapshot `name` and asserts it gives `tree` back (content,
/// modes, file mtimes).
#[track_caller]
pub fn assert_restores(sb: &Sandbox, name: &str, tree: &Path) {
    let shown = sb.show(name, &[]);
    assert_ok(&shown, &format!("bk-index show {name}"));
    let dest = sb.path(format!("restore-{}", &name[..name.len().min(40)]));
    if dest.exists() {
        fs::remove_dir_all(&dest).unwrap();
    }
    fs::create_dir(&dest).unwrap();
    assert_ok(&sb.restore(&shown.stdout, &dest), "bk-open");
    assert_same_tree(&read_tree(tree), &read_tree(&restored(&dest, tree)));
    fs::remove_dir_all(&dest).unwrap();
}

/// Runs a bk program with `args` (no stdin).
pub fn run(sb: &Sandbox, program: &str, a: &[OsString]) -> Output {
    sb.run(program, a, b"")
}

/// `bk-index prune --repo R --key … extra`.
pub fn prune(sb: &Sandbox, extra: &[&str]) -> Output {
    let mut a = args!["prune"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    a.extend(extra.iter().map(OsString::from));
    sb.run("bk-index", &a, b"")
}

/// `bk-index forget --repo R --key … extra`.
pub fn forget(sb: &Sandbox, extra: &[&str]) -> Output {
    let mut a = args!["forget"];
    a.extend(sb.repo_args());
    a.extend(sb.key_args());
    a.extend(extra.iter().map(OsString::from));
    sb.run("bk-index", &a, b"")
}

/// Text of a line-structured file: `n` lines of words and numbers (well
/// compressible, as source code or logs are), `len` bytes.
pub fn text_of(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut out = Vec::with_capacity(len + 100);
    let mut state = seed;
    let mut n = 0u64;
    while out.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let w = words[(state >> 60) as usize];
        let v = (state >> 32) % 10_000;
        out.extend_from_slice(format!("{n:06} {w} value={v} seed={seed}\n").as_bytes());
        n += 1;
    }
    out.truncate(len);
    out
}
