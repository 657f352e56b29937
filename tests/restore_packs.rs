//! Restore is pack-aware: the blobs of many small files are read pack by
//! pack, neighbouring blobs with one request (one ranged GET on S3), and
//! decrypted with one public-key operation per pack, on several threads.
//! A bad blob in the middle of such a read, or a pack gone, costs only the
//! files whose content it holds.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::BufReader;
use std::path::Path;

use bk::crypto::{PassphraseSource, SecretKeys};
use bk::error::Result;
use bk::record::{Kind, Record, RecordReader};
use bk::repo::blobs::Blobs;
use bk::repo::id::{ObjectId, PackId};
use bk::repo::index::Location;
use bk::repo::{Repo, RepoHandle};
use bk::stages::open::restore::{restore, Layout};
use bk::storage::location::Location as RepoLocation;
use bk::storage::s3::S3Options;
use common::*;

/// `n` small files (0.1–3 KiB, incompressible) in a few directories.
fn small_files(root: &Path, n: usize) {
    for i in 0..n {
        let p = root.join(format!("d{:02}/f{i:04}", i % 7));
        write_file(
            &p,
            &pseudo_random(9000 + i as u64, 100 + i * 53 % 3000),
            0o644,
        );
        set_mtime_ns(&p, T0 + i as i64 * 1_000_000_007);
    }
}

/// Backs up `src` with packs of at most `pack_size`.
fn backup(sb: &Sandbox, src: &Path, pack_size: &str) {
    let (_, hashed) = sb.scan_hash(src);
    let mut a = sb.seal_args();
    a.extend(["--init".into(), "--pack-size".into(), pack_size.into()]);
    let sealed = sb.run("bk-seal", &a, &hashed);
    assert_ok(&sealed, "bk-seal");
    sb.index_write(&sealed.stdout);
}

/// The tree restored at `to` is `src` without the files `gone` (paths
/// relative to `src`), and no temporary file is left.
#[track_caller]
fn assert_restored_but(src: &Path, to: &Path, gone: &BTreeSet<Vec<u8>>) {
    let mut expected = read_tree(src);
    expected.retain(|path, _| !gone.contains(path));
    assert_same_tree(&expected, &read_tree(&restored(to, src)));
    for path in files_under(to) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with(".bk-restore"), "left behind: {path:?}");
    }
}

#[test]
fn small_files_are_decrypted_with_one_public_key_operation_per_pack() {
    let sb = Sandbox::new();
    // The library reads its index cache and id key where the programs do.
    std::env::set_var("XDG_CACHE_HOME", &sb.cache_home);
    std::env::set_var("XDG_DATA_HOME", &sb.data_home);
    let src = sb.path("src");
    small_files(&src, 400);
    backup(&sb, &src, "64K");
    let records: Vec<u8> = sb.show_latest();

    let handle = RepoHandle::new(
        &RepoLocation::parse(sb.repo.as_os_str()).unwrap(),
        &S3Options::default(),
    )
    .unwrap();
    let repo = Repo::open_handle(handle).unwrap();
    let pass = PassphraseSource {
        file: sb.passphrase_file.clone(),
    };
    let key = SecretKeys::load(&sb.sec_key, &pass).unwrap();
    let id_key = bk::repo::idkey::recover(&repo, &key).unwrap();
    let (blobs, _) = Blobs::open(&repo, &id_key, &[]).unwrap();

    let parsed: Vec<Record> = RecordReader::new(BufReader::new(&records[..]))
        .collect::<Result<_>>()
        .unwrap();
    // Each file's path (relative to `src`), blob and where it lies.
    let mut files: Vec<(Vec<u8>, ObjectId, Location)> = Vec::new();
    for rec in parsed.iter().filter(|r| r.kind == Kind::File) {
        for obj in rec.objects.iter().flatten() {
            let id = ObjectId::parse(&obj.id).unwrap();
            let loc = blobs.locate(&id).unwrap().unwrap();
            files.push((rec.path.clone().into_bytes(), id, loc));
        }
    }
    let packs: BTreeSet<PackId> = files.iter().map(|f| f.2.pack).collect();
    assert!(packs.len() >= 8, "the files lie in {} packs", packs.len());

    let to = sb.path("out");
    let outcome = restore(
        &blobs,
        &key,
        &to,
        &Layout::Full,
        4,
        parsed.iter().cloned().map(Ok),
    )
    .unwrap();
    assert_eq!(outcome.exit_code(), 0);
    assert_same_tree(&read_tree(&src), &read_tree(&restored(&to, &src)));
    assert_eq!(
        blobs.public_key_operations(),
        packs.len() as u64,
        "one public-key operation per pack, with four workers"
    );
    drop(blobs);

    // One blob spoilt in the middle of its pack (a bit of its encrypted
    // data flipped): its file is not restored and is named with the blob,
    // every neighbour read with it in the same request is.
    let by_pack = |pack: &PackId| {
        let mut in_pack: Vec<&(Vec<u8>, ObjectId, Location)> =
            files.iter().filter(|f| f.2.pack == *pack).collect();
        in_pack.sort_by_key(|f| f.2.offset);
        in_pack
    };
    let first_pack = by_pack(packs.first().unwrap());
    let (victim, victim_id, loc) = first_pack
        .iter()
        .skip(first_pack.len() / 3)
        .find(|f| f.2.length > 1000)
        .copied()
        .unwrap();
    let pack_file = sb.repo.join(loc.pack.key());
    let mut bytes = fs::read(&pack_file).unwrap();
    bytes[(loc.offset + loc.length / 2) as usize] ^= 0x55;
    fs::write(&pack_file, &bytes).unwrap();
    let to = sb.path("spoilt");
    let out = sb.restore(&records, &to);
    assert_code(&out, REPO, "bk-open with a spoilt blob");
    let err = stderr(&out);
    let victim_name = String::from_utf8_lossy(victim);
    assert!(
        err.contains(&*victim_name) && err.contains(&victim_id.to_string()),
        "the error names the file and its blob: {err}"
    );
    assert_eq!(err.matches(" blob ").count(), 1, "one blob is bad: {err}");
    assert_restored_but(&src, &to, &BTreeSet::from([victim.clone()]));

    // A pack gone: the files whose content it held are named and missing,
    // the others restored.
    let last = packs.last().unwrap();
    fs::remove_file(sb.repo.join(last.key())).unwrap();
    let lost: BTreeSet<Vec<u8>> = by_pack(last).iter().map(|f| f.0.clone()).collect();
    let to = sb.path("pack-gone");
    let out = sb.restore(&records, &to);
    assert_code(&out, REPO, "bk-open with a pack gone");
    let err = stderr(&out);
    for path in &lost {
        let name = String::from_utf8_lossy(path);
        assert!(err.contains(&*name), "{name} is named: {err}");
    }
    let mut gone = lost.clone();
    gone.insert(victim.clone());
    assert_restored_but(&src, &to, &gone);
}

#[test]
fn small_files_are_read_from_s3_with_a_few_ranged_gets() {
    let sb = Sandbox::s3();
    let src = sb.path("src");
    small_files(&src, 300);
    backup(&sb, &src, "16M");
    let records = sb.show_latest();
    let server = &sb.s3_repo().server;
    let pack_gets = || {
        server
            .request_lines()
            .iter()
            .filter(|l| l.starts_with("GET ") && l.contains("/packs/"))
            .count()
    };
    let before = pack_gets();
    let to = sb.path("out");
    let out = sb.restore(&records, &to);
    assert_ok(&out, "bk-open");
    assert_same_tree(&read_tree(&src), &read_tree(&restored(&to, &src)));
    let gets = pack_gets() - before;
    // One pack: a request per batch of files, not one per file.
    assert!(
        (1..=4).contains(&gets),
        "{gets} GETs of packs to restore 300 files"
    );
}
