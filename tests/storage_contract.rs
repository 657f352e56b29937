//! The `bk::storage::Storage` contract, checked once for every backend (as
//! restic's internal/backend/test/suite.go does): each check is a function
//! of a [`Backend`], run against a fresh `DirStorage` in a temporary
//! directory and against a fresh `S3Storage` on a moto server of its own
//! (tests/common/s3.rs). `contract!(name)` makes the tests `name::dir` and
//! `name::s3`.
//!
//! Keys are seeded and checked through the medium itself too (files
//! written with `std::fs`, objects with the test's own curl client), so a
//! backend that wrote and read consistently wrong bytes would still fail.
//! Where S3 differs from the directory as lib/storage/s3.rs documents it
//! (an upload is visible once finished, commit cannot keep an existing
//! key, append and touch are not supported) the S3 test asserts what that
//! code documents.

mod common;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, SystemTime};

use bk::storage::dir::{DirStorage, TMP_PREFIX};
use bk::storage::s3::{S3Options, S3Storage, PART_SIZE};
use bk::storage::{Commit, Stat, Storage};
use common::{
    pseudo_random, sha256_hex, unique_bucket, S3Server, TEST_ACCESS_KEY, TEST_REGION,
    TEST_SECRET_KEY,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The key prefix of every S3 backend (a repository below the bucket root).
const S3_PREFIX: &str = "pre/fix";

/// Where a backend keeps its keys, for the test's own look at them.
enum Medium {
    Dir { _tmp: TempDir, root: PathBuf },
    S3 { server: S3Server, bucket: String },
}

/// A fresh, empty storage and the medium under it.
struct Backend {
    store: Box<dyn Storage>,
    medium: Medium,
}

/// S3Storage takes its credentials from the environment, as bk does:
/// set them once, before the first S3 backend of this process.
fn s3_credentials() {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| {
        std::env::remove_var("AWS_SESSION_TOKEN");
        std::env::set_var("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

impl Backend {
    /// A directory storage whose root does not exist yet.
    fn dir() -> Backend {
        let tmp = tempfile::Builder::new()
            .prefix("bk-contract-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("repo");
        Backend {
            store: Box::new(DirStorage::new(&root)),
            medium: Medium::Dir { _tmp: tmp, root },
        }
    }

    /// An S3 storage under [`S3_PREFIX`] of an empty bucket.
    fn s3() -> Backend {
        s3_credentials();
        let bucket = unique_bucket("contract");
        let server = S3Server::start(&[&bucket]);
        let opts = S3Options {
            endpoint: Some(server.endpoint()),
            region: Some(TEST_REGION.into()),
            path_style: true,
        };
        let store = S3Storage::new(&bucket, S3_PREFIX, &opts).expect("S3Storage::new");
        Backend {
            store: Box::new(store),
            medium: Medium::S3 { server, bucket },
        }
    }

    fn s(&self) -> &dyn Storage {
        &*self.store
    }

    fn is_dir(&self) -> bool {
        matches!(self.medium, Medium::Dir { .. })
    }

    /// The directory backend's root (panics for S3).
    fn root(&self) -> &Path {
        match &self.medium {
            Medium::Dir { root, .. } => root,
            Medium::S3 { .. } => panic!("not a directory backend"),
        }
    }

    fn s3_key(key: &str) -> String {
        format!("{S3_PREFIX}/{key}")
    }

    /// Stores `bytes` under `key` behind the backend's back.
    fn put_raw(&self, key: &str, bytes: &[u8]) {
        match &self.medium {
            Medium::Dir { root, .. } => {
                let p = root.join(key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, bytes).unwrap();
            }
            Medium::S3 { server, bucket } => server.put(bucket, &Self::s3_key(key), bytes),
        }
    }

    /// The bytes under `key`, read behind the backend's back.
    fn get_raw(&self, key: &str) -> Option<Vec<u8>> {
        match &self.medium {
            Medium::Dir { root, .. } => match std::fs::read(root.join(key)) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => panic!("read {key}: {e}"),
            },
            Medium::S3 { server, bucket } => server.get(bucket, &Self::s3_key(key)),
        }
    }

    /// Everything stored (temporary files included): key → size.
    fn raw_keys(&self) -> BTreeMap<String, u64> {
        match &self.medium {
            Medium::Dir { root, .. } => {
                let mut out = BTreeMap::new();
                fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        return;
                    };
                    for e in entries.flatten() {
                        let meta = std::fs::symlink_metadata(e.path()).unwrap();
                        if meta.is_dir() {
                            go(root, &e.path(), out);
                        } else {
                            let rel = e.path().strip_prefix(root).unwrap().to_owned();
                            out.insert(rel.to_str().unwrap().to_owned(), meta.len());
                        }
                    }
                }
                go(root, root, &mut out);
                out
            }
            Medium::S3 { server, bucket } => {
                let prefix = format!("{S3_PREFIX}/");
                server
                    .list(bucket, &prefix)
                    .into_iter()
                    .map(|o| (o.key[prefix.len()..].to_owned(), o.size))
                    .collect()
            }
        }
    }

    /// Writes `bytes` through `create`, finishes and commits (Replace).
    fn store(&self, key: &str, bytes: &[u8]) {
        let mut up = self.s().create(key).unwrap();
        up.write_all(bytes).unwrap();
        let f = up.finish().unwrap();
        assert_eq!(self.s().commit(vec![f], Commit::Replace).unwrap(), [true]);
    }
}

/// `(name, is_dir, size)` of each entry of `list(dir)`.
fn listing(s: &dyn Storage, dir: &str) -> Vec<(String, bool, u64)> {
    s.list(dir)
        .unwrap_or_else(|e| panic!("list {dir:?}: {e}"))
        .into_iter()
        .map(|e| (e.name, e.is_dir, e.stat.size))
        .collect()
}

fn walked(s: &dyn Storage, dir: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    s.walk(dir, &mut |rel, st: Stat| {
        assert!(
            out.insert(rel.to_owned(), st.size).is_none(),
            "walk gave {rel} twice"
        );
    })
    .unwrap_or_else(|e| panic!("walk {dir:?}: {e}"));
    out
}

fn read_all(s: &dyn Storage, key: &str) -> Option<Vec<u8>> {
    let mut r = s.open(key).unwrap_or_else(|e| panic!("open {key}: {e}"))?;
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).unwrap();
    Some(buf)
}

fn size_of(s: &dyn Storage, key: &str) -> Option<u64> {
    s.stat(key)
        .unwrap_or_else(|e| panic!("stat {key}: {e}"))
        .map(|st| st.size)
}

/// An empty [`listing`].
const NO_ENTRIES: [(String, bool, u64); 0] = [];

fn e(name: &str, is_dir: bool, size: u64) -> (String, bool, u64) {
    (name.to_owned(), is_dir, size)
}

fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Runs each check against both backends.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn dir() {
                    super::$name(&super::Backend::dir());
                }
                #[test]
                fn s3() {
                    super::$name(&super::Backend::s3());
                }
            }
        )*
    };
}

contract!(
    stat_gives_none_for_missing_keys_and_the_size_of_present_ones,
    open_and_read_give_the_whole_key,
    read_refuses_a_key_larger_than_its_limit_and_takes_an_equal_one,
    a_multi_mib_key_streams_through_create_and_open,
    list_gives_sorted_names_marks_directories_and_leaves_out_temporary_files,
    walk_finds_nested_keys_with_their_sizes,
    an_upload_is_invisible_until_committed,
    a_dropped_upload_leaves_nothing_under_its_key,
    keep_existing_and_replace_commits,
    a_batch_commit_makes_every_upload_visible,
    delete_removes_a_key_and_a_missing_key_is_no_error,
    append_creates_and_appends_whole_or_says_it_cannot,
    describe_and_location_name_the_repository,
    touch_sets_the_modification_time_where_the_storage_can,
    leftovers_are_the_temporary_files_of_interrupted_writers,
);

fn stat_gives_none_for_missing_keys_and_the_size_of_present_ones(b: &Backend) {
    let s = b.s();
    assert!(s.stat("objects/ab/k").unwrap().is_none(), "empty storage");
    b.put_raw("objects/ab/k", b"12345");
    b.put_raw("empty", b"");
    let st = s.stat("objects/ab/k").unwrap().expect("present key");
    assert_eq!(st.size, 5);
    let modified = st.modified.expect("a modification time");
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_else(|e| e.duration());
    assert!(age < Duration::from_secs(300), "modified {modified:?}");
    assert_eq!(size_of(s, "empty"), Some(0));
    assert_eq!(size_of(s, "objects/ab/other"), None);
    assert_eq!(size_of(s, "nowhere/at/all"), None);
}

fn open_and_read_give_the_whole_key(b: &Backend) {
    let s = b.s();
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    b.put_raw("snapshots/a", &every_byte);
    b.put_raw("snapshots/empty", b"");
    assert_eq!(read_all(s, "snapshots/a").unwrap(), every_byte);
    assert_eq!(read_all(s, "snapshots/empty").unwrap(), b"");
    assert!(s.open("snapshots/missing").unwrap().is_none());
    assert!(s.open("no/such/dir").unwrap().is_none());
    assert_eq!(s.read("snapshots/a", 1 << 20).unwrap().unwrap(), every_byte);
    assert_eq!(s.read("snapshots/empty", 0).unwrap().unwrap(), b"");
    assert!(s.read("snapshots/missing", 10).unwrap().is_none());
}

fn read_refuses_a_key_larger_than_its_limit_and_takes_an_equal_one(b: &Backend) {
    let s = b.s();
    let data = pseudo_random(7, 100);
    b.put_raw("locks/big.json", &data);
    let err = s.read("locks/big.json", 99).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert_eq!(s.read("locks/big.json", 100).unwrap().unwrap(), data);
    assert_eq!(s.read("locks/big.json", 101).unwrap().unwrap(), data);
    let err = s.read("locks/big.json", 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

fn a_multi_mib_key_streams_through_create_and_open(b: &Backend) {
    let s = b.s();
    // More than two S3 parts, and not a multiple of anything.
    let data = pseudo_random(42, 2 * PART_SIZE + 3 * (1 << 20) + 12_345);
    let mut up = s.create("objects/bi/big").unwrap();
    for piece in data.chunks(1_000_003) {
        up.write_all(piece).unwrap();
    }
    let f = up.finish().unwrap();
    assert_eq!(f.key, "objects/bi/big");
    assert_eq!(s.commit(vec![f], Commit::KeepExisting).unwrap(), [true]);
    assert_eq!(size_of(s, "objects/bi/big"), Some(data.len() as u64));

    let mut r = s.open("objects/bi/big").unwrap().expect("stored");
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
    assert_eq!(total, data.len() as u64);
    assert_eq!(hex::encode(hash.finalize()), sha256_hex(&data));
    assert_eq!(
        sha256_hex(&b.get_raw("objects/bi/big").unwrap()),
        sha256_hex(&data)
    );
    assert_eq!(b.raw_keys(), map(&[("objects/bi/big", data.len() as u64)]));
}

fn list_gives_sorted_names_marks_directories_and_leaves_out_temporary_files(b: &Backend) {
    let s = b.s();
    assert_eq!(listing(s, ""), NO_ENTRIES, "empty storage");
    for (key, len) in [
        ("d/b", 2),
        ("d/a", 1),
        ("d/B1", 5),
        ("d/c/x", 3),
        ("d/e/f/g", 1),
        ("top", 4),
    ] {
        b.put_raw(key, &vec![b'x'; len]);
    }
    // An upload in progress under d/: a temporary file for a directory.
    let mut pending = s.create("d/pending").unwrap();
    pending.write_all(b"not yet").unwrap();
    pending.flush().unwrap();
    if b.is_dir() {
        assert!(
            b.raw_keys()
                .keys()
                .any(|k| k.starts_with(&format!("d/{TMP_PREFIX}"))),
            "the pending upload should have a temporary file: {:?}",
            b.raw_keys()
        );
    }
    assert_eq!(
        listing(s, "d"),
        [
            e("B1", false, 5),
            e("a", false, 1),
            e("b", false, 2),
            e("c", true, 0),
            e("e", true, 0),
        ]
    );
    assert_eq!(listing(s, ""), [e("d", true, 0), e("top", false, 4)]);
    assert_eq!(listing(s, "d/c"), [e("x", false, 3)]);
    assert_eq!(listing(s, "d/e"), [e("f", true, 0)]);
    assert_eq!(listing(s, "missing"), NO_ENTRIES);
    assert_eq!(listing(s, "d/missing/deeper"), NO_ENTRIES);
    drop(pending);
    assert_eq!(listing(s, "d").len(), 5);
}

fn walk_finds_nested_keys_with_their_sizes(b: &Backend) {
    let s = b.s();
    assert_eq!(walked(s, "objects"), map(&[]), "empty storage");
    for (key, len) in [
        ("objects/ab/1", 1),
        ("objects/ab/22", 2),
        ("objects/cd/ef/333", 3),
        ("objects/top", 4),
        ("other/x", 5),
        ("objectsx", 6),
    ] {
        b.put_raw(key, &vec![b'x'; len]);
    }
    let mut pending = s.create("objects/ab/pending").unwrap();
    pending.write_all(b"not yet").unwrap();
    pending.flush().unwrap();
    assert_eq!(
        walked(s, "objects"),
        map(&[("ab/1", 1), ("ab/22", 2), ("cd/ef/333", 3), ("top", 4)])
    );
    assert_eq!(walked(s, "objects/cd"), map(&[("ef/333", 3)]));
    assert_eq!(walked(s, "missing"), map(&[]));
    drop(pending);
}

/// `walk("")`: every key of the storage (`dir` is a key prefix "or \"\"
/// for the root", as `list` documents it; the trait's default `walk`,
/// which `DirStorage` uses, takes it so).
fn walk_of_the_root_finds_every_key(b: &Backend) {
    b.put_raw("objects/ab/1", b"1");
    b.put_raw("top", b"22");
    assert_eq!(walked(b.s(), ""), map(&[("objects/ab/1", 1), ("top", 2)]));
}

contract!(walk_of_the_root_finds_every_key);

fn an_upload_is_invisible_until_committed(b: &Backend) {
    let s = b.s();
    let data = b"a snapshot".to_vec();
    let mut up = s.create("snapshots/s1").unwrap();
    up.write_all(&data).unwrap();
    up.flush().unwrap();
    assert!(s.stat("snapshots/s1").unwrap().is_none());
    assert!(s.open("snapshots/s1").unwrap().is_none());
    assert_eq!(listing(s, "snapshots"), NO_ENTRIES);
    assert_eq!(b.get_raw("snapshots/s1"), None);

    let f = up.finish().unwrap();
    assert_eq!(f.key, "snapshots/s1");
    if b.is_dir() {
        assert!(s.stat("snapshots/s1").unwrap().is_none());
        assert_eq!(listing(s, "snapshots"), NO_ENTRIES);
        assert_eq!(b.get_raw("snapshots/s1"), None);
    } else {
        // s3.rs: "an S3 upload is visible once finished already".
        assert_eq!(size_of(s, "snapshots/s1"), Some(data.len() as u64));
    }

    assert_eq!(s.commit(vec![f], Commit::KeepExisting).unwrap(), [true]);
    assert_eq!(size_of(s, "snapshots/s1"), Some(data.len() as u64));
    assert_eq!(read_all(s, "snapshots/s1").unwrap(), data);
    assert_eq!(listing(s, "snapshots"), [e("s1", false, 10)]);
    assert_eq!(b.raw_keys(), map(&[("snapshots/s1", 10)]));

    // An empty upload is a key of zero bytes.
    let f = s.create("snapshots/empty").unwrap().finish().unwrap();
    assert_eq!(s.commit(vec![f], Commit::Replace).unwrap(), [true]);
    assert_eq!(size_of(s, "snapshots/empty"), Some(0));
    assert_eq!(read_all(s, "snapshots/empty").unwrap(), b"");
}

fn a_dropped_upload_leaves_nothing_under_its_key(b: &Backend) {
    let s = b.s();
    // Unfinished: small, and large enough that S3 has sent parts of it.
    let mut small = s.create("x/unfinished").unwrap();
    small.write_all(b"abc").unwrap();
    small.flush().unwrap();
    drop(small);
    let mut large = s.create("x/large").unwrap();
    large
        .write_all(&pseudo_random(3, PART_SIZE + (1 << 20)))
        .unwrap();
    large.flush().unwrap();
    drop(large);
    assert_eq!(size_of(s, "x/unfinished"), None);
    assert_eq!(size_of(s, "x/large"), None);
    assert_eq!(listing(s, "x"), NO_ENTRIES);
    assert_eq!(s.leftovers("x").unwrap().len(), 0);
    assert_eq!(b.raw_keys(), map(&[]), "nothing stored, no temporary file");

    // Finished but never committed.
    let mut up = s.create("x/finished").unwrap();
    up.write_all(b"finished").unwrap();
    let f = up.finish().unwrap();
    drop(f);
    if b.is_dir() {
        assert_eq!(size_of(s, "x/finished"), None);
        assert_eq!(listing(s, "x"), NO_ENTRIES);
        assert_eq!(s.leftovers("x").unwrap().len(), 0);
        assert_eq!(b.raw_keys(), map(&[]), "no temporary file left");
    } else {
        // s3.rs: a finished upload is complete and visible (no rename).
        assert_eq!(b.get_raw("x/finished").unwrap(), b"finished");
        assert_eq!(b.raw_keys(), map(&[("x/finished", 8)]));
    }
}

fn keep_existing_and_replace_commits(b: &Backend) {
    let s = b.s();
    b.store("objects/ke/k", b"first");
    let mut up = s.create("objects/ke/k").unwrap();
    up.write_all(b"second!!").unwrap();
    let f = up.finish().unwrap();
    let created = s.commit(vec![f], Commit::KeepExisting).unwrap();
    if b.is_dir() {
        assert_eq!(created, [false], "the key existed and was kept");
        assert_eq!(read_all(s, "objects/ke/k").unwrap(), b"first");
    } else {
        // s3.rs commit: "Finished uploads are already complete, durable
        // and visible": the second upload replaced the key, and commit
        // says true for every upload.
        assert_eq!(created, [true]);
        assert_eq!(read_all(s, "objects/ke/k").unwrap(), b"second!!");
    }

    b.store("locks/l.json", b"old");
    let mut up = s.create("locks/l.json").unwrap();
    up.write_all(b"newer").unwrap();
    let f = up.finish().unwrap();
    assert_eq!(s.commit(vec![f], Commit::Replace).unwrap(), [true]);
    assert_eq!(read_all(s, "locks/l.json").unwrap(), b"newer");
    assert_eq!(b.get_raw("locks/l.json").unwrap(), b"newer");
    let want_k = if b.is_dir() { 5 } else { 8 };
    assert_eq!(
        b.raw_keys(),
        map(&[("locks/l.json", 5), ("objects/ke/k", want_k)]),
        "no temporary files left"
    );
}

fn a_batch_commit_makes_every_upload_visible(b: &Backend) {
    let s = b.s();
    assert_eq!(
        s.commit(Vec::new(), Commit::KeepExisting).unwrap(),
        Vec::<bool>::new()
    );
    b.store("objects/cc/3", b"existing");
    let keys = [
        "objects/aa/1",
        "objects/bb/2",
        "snapshots/new",
        "objects/cc/3",
    ];
    let mut batch = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut up = s.create(key).unwrap();
        up.write_all(format!("content {i}").as_bytes()).unwrap();
        batch.push(up.finish().unwrap());
    }
    let created = s.commit(batch, Commit::KeepExisting).unwrap();
    let kept = b.is_dir();
    assert_eq!(created, [true, true, true, !kept]);
    for (i, key) in keys.iter().take(3).enumerate() {
        let want = format!("content {i}").into_bytes();
        assert_eq!(read_all(s, key).unwrap(), want, "{key}");
        assert_eq!(b.get_raw(key).unwrap(), want, "{key}");
    }
    let want3: &[u8] = if kept { b"existing" } else { b"content 3" };
    assert_eq!(read_all(s, "objects/cc/3").unwrap(), want3);
    assert_eq!(b.raw_keys().len(), 4, "{:?}", b.raw_keys());
}

fn delete_removes_a_key_and_a_missing_key_is_no_error(b: &Backend) {
    let s = b.s();
    b.put_raw("locks/a", b"a");
    b.put_raw("locks/b", b"b");
    s.delete("locks/a").unwrap();
    assert_eq!(size_of(s, "locks/a"), None);
    assert_eq!(b.get_raw("locks/a"), None);
    s.delete("locks/a").unwrap();
    s.delete("never/was/here").unwrap();
    assert_eq!(b.raw_keys(), map(&[("locks/b", 1)]));
    assert_eq!(listing(s, "locks"), [e("b", false, 1)]);
}

fn append_creates_and_appends_whole_or_says_it_cannot(b: &Backend) {
    let s = b.s();
    let first = s.append("inventory/log", b"line 1\n").unwrap();
    if b.is_dir() {
        assert!(first);
        assert!(s.append("inventory/log", b"line 2\n").unwrap());
        assert_eq!(read_all(s, "inventory/log").unwrap(), b"line 1\nline 2\n");
        assert_eq!(b.get_raw("inventory/log").unwrap(), b"line 1\nline 2\n");
        assert_eq!(size_of(s, "inventory/log"), Some(14));
    } else {
        // s3.rs: S3 cannot append; callers then write new keys.
        assert!(!first);
        assert_eq!(size_of(s, "inventory/log"), None);
        assert_eq!(b.raw_keys(), map(&[]));
    }
}

fn describe_and_location_name_the_repository(b: &Backend) {
    let s = b.s();
    match &b.medium {
        Medium::Dir { root, .. } => {
            let shown = root.display().to_string();
            assert_eq!(s.location(), shown);
            assert_eq!(s.describe(""), shown);
            assert_eq!(s.describe("objects/ab/x"), format!("{shown}/objects/ab/x"));
            assert!(!s.is_remote());
        }
        Medium::S3 { bucket, .. } => {
            let shown = format!("s3://{bucket}/{S3_PREFIX}");
            assert_eq!(s.location(), shown);
            assert_eq!(s.describe(""), shown);
            assert_eq!(s.describe("objects/ab/x"), format!("{shown}/objects/ab/x"));
            assert!(s.is_remote());
        }
    }
}

fn touch_sets_the_modification_time_where_the_storage_can(b: &Backend) {
    let s = b.s();
    s.touch("locks/missing");
    assert_eq!(size_of(s, "locks/missing"), None, "touch creates nothing");
    b.put_raw("locks/t", b"t");
    if b.is_dir() {
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(b.root().join("locks/t"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(s.stat("locks/t").unwrap().unwrap().modified, Some(old));
        s.touch("locks/t");
        let now = s.stat("locks/t").unwrap().unwrap().modified.unwrap();
        assert!(
            now > old + Duration::from_secs(86_400 * 365),
            "touched: {now:?}"
        );
    } else {
        // s3.rs: S3 cannot change Last-Modified without a copy; no-op.
        let before = s.stat("locks/t").unwrap().unwrap().modified;
        std::thread::sleep(Duration::from_millis(1100));
        s.touch("locks/t");
        assert_eq!(s.stat("locks/t").unwrap().unwrap().modified, before);
    }
    assert_eq!(read_all(s, "locks/t").unwrap(), b"t");
}

fn leftovers_are_the_temporary_files_of_interrupted_writers(b: &Backend) {
    let s = b.s();
    assert_eq!(s.leftovers("objects/ab").unwrap().len(), 0, "missing dir");
    b.put_raw("objects/ab/real", b"real");
    if b.is_dir() {
        b.put_raw(&format!("objects/ab/{TMP_PREFIX}abandoned"), b"half");
        let left: Vec<_> = s
            .leftovers("objects/ab")
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir, e.stat.size))
            .collect();
        assert_eq!(left, [e(&format!("{TMP_PREFIX}abandoned"), false, 4)]);
        assert_eq!(listing(s, "objects/ab"), [e("real", false, 4)]);
        assert_eq!(walked(s, "objects"), map(&[("ab/real", 4)]));
    } else {
        // S3 writers leave no temporary keys (an aborted upload is gone).
        assert_eq!(s.leftovers("objects/ab").unwrap().len(), 0);
    }
}

// ---------------------------------------------------------------------------
// The directory backend only.

/// Runs `f` on another thread; panics if it takes longer than 20 s.
fn at_once<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return within 20 s (hangs?)"))
}

#[test]
fn dir_a_key_that_is_a_directory_or_a_fifo_is_an_error_at_once() {
    let b = Backend::dir();
    let root = b.root().to_path_buf();
    std::fs::create_dir_all(root.join("locks/dir.json")).unwrap();
    nix::unistd::mkfifo(
        &root.join("locks/fifo.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for (key, what) in [
        ("locks/dir.json", "a directory"),
        ("locks/fifo.json", "a FIFO"),
    ] {
        let want = format!("not a regular file ({what})");
        let store = std::sync::Arc::new(DirStorage::new(&root));
        let s = store.clone();
        let err = at_once("stat", move || s.stat(key).map(|_| ())).unwrap_err();
        assert!(err.to_string().contains(&want), "stat {key}: {err}");
        let s = store.clone();
        let err = at_once("open", move || s.open(key).map(|_| ())).unwrap_err();
        assert!(err.to_string().contains(&want), "open {key}: {err}");
        let s = store.clone();
        let err = at_once("read", move || s.read(key, 1 << 20).map(|_| ())).unwrap_err();
        assert!(err.to_string().contains(&want), "read {key}: {err}");
        let s = store.clone();
        let res = at_once("append", move || s.append(key, b"x\n"));
        assert!(res.is_err(), "append {key}: {res:?}");
    }
    // Nothing was written through the FIFO or into the directory.
    assert_eq!(
        std::fs::read_dir(root.join("locks/dir.json"))
            .unwrap()
            .count(),
        0
    );
}
