//! A hostile storage operator against format 2's packs, the pack
//! inventory and the local blob index: packs cut short, grown, swapped for
//! a pack of another repository, given a footer that claims a huge header,
//! made a sparse 100 GiB file, a directory or a symlink, or altered in
//! place (same size) in their header or data; inventory lines that are
//! garbage, endless or name packs that do not exist; a damaged entry of
//! the local index. Every program must end quickly, without a panic, name
//! the pack and the cause, restore right bytes or nothing, delete no good
//! pack, and the next backup must store again what is lost, so that its
//! snapshot verifies with `--read-data` on any host.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::packs::*;
use common::*;
use serde_json::Value;

/// Far more than any run here needs: one still running then hangs.
const QUICK: Duration = Duration::from_secs(20);

const VICTIM: &str = "a-victim.bin";

/// A repository whose first pack holds the victim file's blob alone, and
/// what the tests compare against.
struct Fixture {
    sb: Sandbox,
    tree: PathBuf,
    /// The victim's blob id.
    victim: String,
    /// Its pack, as its path in the repository.
    pack: String,
    /// `bk-index show latest` of the snapshot.
    shown: Vec<u8>,
}

fn fixture() -> Fixture {
    let sb = Sandbox::new();
    let tree = sb.path("tree");
    // One worker and 64 KiB packs: each file over 64 KiB closes its pack.
    write_file(&tree.join(VICTIM), &pseudo_random(1, 100_000), 0o644);
    write_file(&tree.join("b-other.bin"), &pseudo_random(2, 90_000), 0o644);
    write_file(&tree.join("c-small.txt"), b"small and fine\n", 0o644);
    let (sealed, _) = seal_tree(&sb, &tree, &args!["-j", "1", "--pack-size", "64K"]);
    write_snapshot(&sb, &sealed, &[]);
    let shown = sb.show_latest();
    let victim = object_ids(find_record(&parse_records(&shown), VICTIM.as_bytes()))[0].clone();
    let pack = sb.blob_at(&victim).pack;
    let bytes = sb.read_repo_file(&pack).unwrap();
    assert_eq!(pack_header(&sb.pack_keys(), &pack, &bytes).len(), 1);
    Fixture {
        sb,
        tree,
        victim,
        pack,
        shown,
    }
}

/// One copy of the fixture's repository and of this host's local cache
/// (a warm index), damaged by a test.
struct World<'a> {
    f: &'a Fixture,
    repo: PathBuf,
    cache: PathBuf,
    name: String,
}

impl Fixture {
    fn world(&self, name: &str) -> World<'_> {
        let repo = self.sb.path(format!("repo-{name}"));
        let cache = self.sb.path(format!("cache-{name}"));
        for (from, to) in [(&self.sb.repo, &repo), (&self.sb.cache_home, &cache)] {
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(from)
                .arg(to)
                .status()
                .unwrap();
            assert!(st.success(), "cp -a {}", from.display());
        }
        World {
            f: self,
            repo,
            cache,
            name: name.to_owned(),
        }
    }

    fn pack_id(&self) -> String {
        self.pack.rsplit('/').next().unwrap().to_owned()
    }
}

impl World<'_> {
    fn pack_path(&self) -> PathBuf {
        self.repo.join(&self.f.pack)
    }

    /// Runs `program --repo REPO args…` with this world's cache (or
    /// `cache`), checked for speed and panics.
    fn run_with(&self, cache: &Path, program: &str, a: &[OsString], stdin: &[u8]) -> Output {
        let mut cmd = self.f.sb.command(program);
        cmd.env("XDG_CACHE_HOME", cache);
        if let [sub, ..] = a {
            if program == "bk-index" {
                cmd.arg(sub).arg("--repo").arg(&self.repo).args(&a[1..]);
            } else {
                cmd.arg("--repo").arg(&self.repo).args(a);
            }
        } else {
            cmd.arg("--repo").arg(&self.repo);
        }
        let out = run_command(cmd, stdin, QUICK);
        assert!(
            !stderr(&out).contains("panicked"),
            "{}: {program} {a:?} panicked: {}",
            self.name,
            stderr(&out)
        );
        out
    }

    fn run(&self, program: &str, a: &[OsString], stdin: &[u8]) -> Output {
        self.run_with(&self.cache, program, a, stdin)
    }

    fn with_key(&self, mut a: Vec<OsString>) -> Vec<OsString> {
        a.extend(self.f.sb.key_args());
        a
    }

    /// scan | hash | seal | bk-index write of the tree again: the new
    /// snapshot's name and bk-seal's stderr.
    fn backup(&self) -> (String, String) {
        let (_, hashed) = self.f.sb.scan_hash(&self.f.tree);
        let seal = self.run("bk-seal", &args!["-r", &self.f.sb.pub_key], &hashed);
        assert_ok(&seal, &format!("{}: bk-seal", self.name));
        let write = self.run(
            "bk-index",
            &args!["write", "-r", &self.f.sb.pub_key],
            &seal.stdout,
        );
        assert_ok(&write, &format!("{}: bk-index write", self.name));
        let name = String::from_utf8(write.stdout).unwrap().trim().to_owned();
        (name, stderr(&seal))
    }

    /// Show and `bk-verify --read-data` of snapshot `name` on a host with
    /// an empty cache (the index built from the packs' headers alone).
    fn verify_elsewhere(&self, name: &str) -> Output {
        let cache = self.f.sb.path(format!("fresh-cache-{}-{name}", self.name));
        let shown = self.run_with(&cache, "bk-index", &self.with_key(args!["show", name]), b"");
        assert_ok(&shown, &format!("{}: show {name} elsewhere", self.name));
        self.run_with(
            &cache,
            "bk-verify",
            &self.with_key(args!["--read-data"]),
            &shown.stdout,
        )
    }

    /// Restores the fixture's snapshot; returns bk-open's output and where
    /// the tree went.
    fn restore(&self) -> (Output, PathBuf) {
        let to = self.f.sb.path(format!("restore-{}", self.name));
        let out = self.run("bk-open", &self.with_key(args!["--to", &to]), &self.f.shown);
        (out, restored(&to, &self.f.tree))
    }

    fn packs(&self) -> BTreeSet<String> {
        pack_files_in(&self.repo).into_keys().collect()
    }
}

fn problems(out: &Output) -> Vec<Value> {
    parse_records(&out.stdout)
}

/// The next backup stores the victim (and only it) again, and its
/// snapshot passes `--read-data` on a host that knows nothing yet.
fn assert_next_backup_stores_the_victim_again(w: &World, what: &str) {
    let (name, seal_err) = w.backup();
    assert_eq!(
        summary_number(&seal_err, "bk-seal:", "new objects added"),
        1,
        "{what}: the victim is not stored again: {seal_err}"
    );
    let out = w.verify_elsewhere(&name);
    assert_ok(
        &out,
        &format!("{what}: verify --read-data of {name} elsewhere"),
    );
    assert!(out.stdout.is_empty(), "{what}: {}", describe(&out));
}

/// The tree's files but the victim are restored with their bytes, the
/// victim not at all.
fn assert_restored_but_victim(f: &Fixture, at: &Path, what: &str) {
    for name in ["b-other.bin", "c-small.txt"] {
        assert_eq!(
            fs::read(at.join(name)).ok(),
            fs::read(f.tree.join(name)).ok(),
            "{what}: {name}"
        );
    }
    assert!(!at.join(VICTIM).exists(), "{what}: the victim was restored");
}

/// What the storage does to the victim's pack.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Empty,
    Short,
    CutBy3,
    Grown,
    Foreign,
    Sparse100GiB,
    Directory,
}

fn damage(w: &World, d: Damage, foreign: &[u8]) {
    let p = w.pack_path();
    let len = fs::metadata(&p).unwrap().len();
    let set_len = |n: u64| {
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(n)
            .unwrap()
    };
    match d {
        Damage::Empty => set_len(0),
        Damage::Short => set_len(50),
        Damage::CutBy3 => set_len(len - 3),
        Damage::Grown => {
            let mut b = fs::read(&p).unwrap();
            b.extend_from_slice(&pseudo_random(9, 1000));
            fs::write(&p, b).unwrap();
        }
        Damage::Foreign => fs::write(&p, foreign).unwrap(),
        Damage::Sparse100GiB => set_len(100 << 30),
        Damage::Directory => {
            fs::remove_file(&p).unwrap();
            fs::create_dir(&p).unwrap();
            fs::write(p.join("x"), b"x").unwrap();
        }
    }
}

/// The pack of a file of `len` random bytes in a repository of its own.
fn foreign_pack(len: usize) -> Vec<u8> {
    let other = Sandbox::new();
    let tree = other.path("tree");
    write_file(&tree.join("x"), &pseudo_random(3, len), 0o644);
    other.backup(&tree);
    let packs = other.pack_files();
    let (rel, _) = packs
        .iter()
        .find(|(_, &size)| size > len as u64)
        .expect("the file's pack");
    other.read_repo_file(rel).unwrap()
}

#[test]
fn damaged_packs_are_named_refused_never_pruned_and_stored_again() {
    let f = fixture();
    // A pack of another repository (of another size), under the victim
    // pack's name.
    let foreign = foreign_pack(120_000);
    let cases = [
        (Damage::Empty, "0 bytes: too short to be a pack"),
        (Damage::Short, "50 bytes: too short to be a pack"),
        (Damage::CutBy3, "its footer does not decrypt"),
        (Damage::Grown, "its footer does not decrypt"),
        (Damage::Foreign, "its footer does not decrypt"),
        (Damage::Sparse100GiB, "its footer does not decrypt"),
        (Damage::Directory, ""),
    ];
    for (d, cause) in cases {
        let w = f.world(&format!("{d:?}"));
        let mut before = w.packs();
        before.remove(&f.pack);
        damage(&w, d, &foreign);
        let what = format!("{d:?}");
        let named = |out: &Output| {
            let err = stderr(out);
            assert!(
                cause.is_empty()
                    || err.lines().any(|l| l.contains(&f.pack_id())
                        && l.contains(cause)
                        && l.contains("its blobs are not used")),
                "{what}: no line naming pack {} and {cause:?}: {err}",
                f.pack_id()
            );
        };
        let show = w.run("bk-index", &w.with_key(args!["show", "latest"]), b"");
        assert_ok(&show, &what);
        named(&show);
        for extra in [args![], w.with_key(args!["--read-data"])] {
            let out = w.run("bk-verify", &extra, &f.shown);
            assert_code(&out, FAULTS, &what);
            named(&out);
            let p = problems(&out);
            assert!(
                p.len() == 1 && p[0]["problem"] == "missing" && p[0]["object"] == f.victim,
                "{what}: {}",
                describe(&out)
            );
        }
        let (out, at) = w.restore();
        assert_code(&out, REPO, &format!("{what}: restore"));
        assert!(
            stderr(&out)
                .lines()
                .any(|l| l.contains(VICTIM) && l.contains(&f.victim)),
            "{what}: {}",
            stderr(&out)
        );
        assert_restored_but_victim(&f, &at, &what);
        // The next backup stores the victim again; its snapshot verifies
        // on a host that knows nothing yet.
        assert_next_backup_stores_the_victim_again(&w, &what);
        // Prune deletes no pack: each is used, and the damaged one is not
        // its to judge.
        let out = w.run(
            "bk-index",
            &w.with_key(args!["prune", "--grace", "0s"]),
            b"",
        );
        assert_ok(&out, &format!("{what}: prune"));
        let after = w.packs();
        assert!(before.is_subset(&after), "{what}: prune deleted packs");
        assert!(
            fs::symlink_metadata(w.pack_path()).is_ok(),
            "{what}: the damaged pack is kept as evidence"
        );
    }
}

/// Flips the bits `mask` of byte `at` of `path`, keeping its size.
fn flip(path: &Path, at: u64, mask: u8) {
    let mut b = fs::read(path).unwrap();
    b[at as usize] ^= mask;
    fs::write(path, b).unwrap();
}

/// A pack altered in place, its size kept, is known to the backing-up
/// host's index by id and size. `bk-verify --read-data` there must still
/// find what any other host finds (its header no longer verifies, its
/// blob is missing), and a backup after that must store the blob again.
#[test]
fn a_pack_header_or_footer_altered_in_place_is_found_by_read_data_and_stored_again() {
    let f = fixture();
    let len = fs::metadata(f.sb.repo.join(&f.pack)).unwrap().len();
    let mut foreign = foreign_pack(100_000);
    foreign.resize(len as usize, 0);
    // A byte of the header; a hex digit of the footer's MAC; the first
    // digit of the footer's header length, a '0', made a '9' (the footer
    // is under AES-CTR: flipped bits decrypt flipped); a pack of another
    // repository, cut or padded to the same size.
    for (what, at, mask) in [
        ("header", len - 88 - 5, 0x01),
        ("footer MAC", len - 10, 0x01),
        ("footer claiming a huge header", len - 88 + 10, b'0' ^ b'9'),
        ("foreign pack", 0, 0),
    ] {
        let w = f.world(what);
        if mask == 0 {
            fs::write(w.pack_path(), &foreign).unwrap();
        } else {
            flip(&w.pack_path(), at, mask);
        }
        let out = w.run("bk-verify", &w.with_key(args!["--read-data"]), &f.shown);
        assert_code(&out, FAULTS, &format!("{what}: bk-verify --read-data"));
        assert!(
            stderr(&out)
                .lines()
                .any(|l| l.contains(&f.pack_id()) && l.contains("its blobs are not used")),
            "{what}: the pack is not named: {}",
            stderr(&out)
        );
        let p = problems(&out);
        assert!(
            p.len() == 1 && p[0]["object"] == f.victim,
            "{what}: {}",
            describe(&out)
        );
        assert_next_backup_stores_the_victim_again(&w, what);
    }
}

/// The entry of blob `id` in the local index file (`blobs.idx`): its
/// byte offset in the file.
fn index_entry(cache: &Path, repo_id: &str, id: &str) -> (PathBuf, usize) {
    let path = cache.join("bk").join(repo_id).join("index/blobs.idx");
    let b = fs::read(&path).unwrap();
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let (packs, count) = (u64_at(8) as usize, u64_at(16) as usize);
    let want = bk::repo::id::ObjectId::parse(id).unwrap();
    let start = 32 + packs * 40;
    let n = (0..count)
        .find(|n| b[start + n * 64..start + n * 64 + 32] == want.as_bytes()[..])
        .unwrap_or_else(|| panic!("{id} is not in {}", path.display()));
    (path, start + n * 64)
}

/// The local index is a cache: one bit flipped in the stored length of
/// one of its entries (a disk error) must not end up in a new snapshot's
/// records, nor make this host's restore fail while the repository is
/// whole ("a lost or damaged index is simply built again").
#[test]
fn a_damaged_local_index_entry_is_not_trusted() {
    let f = fixture();
    let w = f.world("index");
    let (idx, at) = index_entry(&w.cache, &f.sb.repo_id(), &f.victim);
    flip(&idx, (at + 48) as u64, 0x08);
    let (name, _) = w.backup();
    let out = w.verify_elsewhere(&name);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "a snapshot written with the damaged index does not verify elsewhere: {}",
        describe(&out)
    );
    let (out, at) = w.restore();
    assert_ok(&out, "restore with the damaged index");
    assert_eq!(
        fs::read(at.join(VICTIM)).unwrap(),
        fs::read(f.tree.join(VICTIM)).unwrap()
    );
}

/// A pack that is a symlink to a copy of itself elsewhere reads as that
/// copy (reads follow symlinks), for every reader alike; one to a file
/// that is not a pack is named and left out.
#[test]
fn a_pack_symlinked_elsewhere_reads_as_its_target() {
    let f = fixture();
    let w = f.world("symlink");
    let copy = f.sb.path("pack-copy-elsewhere");
    fs::rename(w.pack_path(), &copy).unwrap();
    make_symlink(&copy, &w.pack_path());
    let (out, at) = w.restore();
    assert_ok(&out, "restore through a symlinked pack");
    assert_eq!(
        fs::read(at.join(VICTIM)).unwrap(),
        fs::read(f.tree.join(VICTIM)).unwrap()
    );
    let out = w.run("bk-verify", &args!["--inventory"], b"");
    assert_ok(&out, "bk-verify --inventory");

    let w = f.world("symlink-elsewhere");
    let stranger = f.sb.path("not-a-pack");
    fs::write(&stranger, pseudo_random(5, 5000)).unwrap();
    fs::remove_file(w.pack_path()).unwrap();
    make_symlink(&stranger, &w.pack_path());
    let (out, at) = w.restore();
    assert_code(&out, REPO, "restore through a symlink to a stranger");
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.contains(&f.pack_id()) && l.contains("its footer does not decrypt")),
        "{}",
        stderr(&out)
    );
    assert_restored_but_victim(&f, &at, "symlink to a stranger");
    assert_eq!(fs::read(&stranger).unwrap(), pseudo_random(5, 5000));
}

/// `bk-verify --inventory` (no key) against a pack grown to a sparse
/// 100 GiB file: a size problem from the listing, not 100 GiB re-hashed.
/// Garbage, an endless line without newline and lines naming packs that
/// do not exist are each reported at once, naming the file and line.
#[test]
fn the_inventory_check_stays_quick_and_clear_on_hostile_input() {
    let f = fixture();
    let w = f.world("sparse");
    fs::OpenOptions::new()
        .write(true)
        .open(w.pack_path())
        .unwrap()
        .set_len(100 << 30)
        .unwrap();
    let out = w.run("bk-verify", &args!["--inventory"], b"");
    assert_code(&out, FAULTS, "bk-verify --inventory of a sparse pack");
    let p = problems(&out);
    assert!(
        p.len() == 1 && p[0]["problem"] == "size" && p[0]["pack"] == f.pack_id(),
        "{}",
        describe(&out)
    );

    let ghost = "ab".repeat(32);
    let inv = |name: &str, lines: &[u8]| {
        let w = f.world(name);
        let file = w
            .repo
            .join("inventory/20990101T000000.000000Z-0badf00d.ndjson");
        fs::write(&file, lines).unwrap();
        (w, file)
    };
    let (w, _) = inv(
        "ghost",
        format!(
            "{{\"pack\":\"{ghost}\",\"stored\":5,\"blake3\":\"{}\"}}\n",
            "cd".repeat(32)
        )
        .as_bytes(),
    );
    let out = w.run("bk-verify", &args!["--inventory"], b"");
    assert_code(&out, FAULTS, "an inventory naming a pack that is not there");
    let p = problems(&out);
    assert!(
        p.len() == 1 && p[0]["problem"] == "missing" && p[0]["pack"] == ghost,
        "{}",
        describe(&out)
    );
    for (name, lines, why) in [
        (
            "garbage",
            b"{\"pack\":1}\nnot json at all\n".to_vec(),
            "line 1",
        ),
        (
            "long",
            format!("{}\n", "x".repeat(1 << 20)).into_bytes(),
            "line 1: longer than",
        ),
        (
            "bad-id",
            format!(
                "{{\"pack\":\"../../x\",\"stored\":5,\"blake3\":\"{}\"}}\n",
                "cd".repeat(32)
            )
            .into_bytes(),
            "line 1: pack id",
        ),
        (
            "bad-hash",
            format!("{{\"pack\":\"{ghost}\",\"stored\":5,\"blake3\":\"cd\"}}\n").into_bytes(),
            "line 1: no \"blake3\" of 64 hex digits",
        ),
    ] {
        let (w, file) = inv(name, &lines);
        let out = w.run("bk-verify", &args!["--inventory"], b"");
        assert_code(&out, REPO, name);
        let shown = file.display().to_string();
        assert!(
            stderr(&out).contains(&format!("{shown} {why}")),
            "{name}: {}",
            stderr(&out)
        );
    }
    // A 1 GiB line without newline (sparse: nothing but NULs).
    let (w, file) = inv("endless", b"");
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let (out, kib) = f.sb.run_measured(
        "bk-verify",
        &args!["--repo", &w.repo, "--inventory"],
        b"",
        QUICK,
    );
    assert_code(&out, REPO, "an endless inventory line");
    assert!(stderr(&out).contains("longer than"), "{}", stderr(&out));
    assert!(
        kib < 64 << 10,
        "bk-verify took {kib} KiB for an endless line"
    );

    // 200,000 lines naming packs that do not exist (34 MB): each is
    // reported, in about 120 bytes of memory per pack named (the text of
    // ids, hashes and problems is not kept).
    const GHOSTS: usize = 200_000;
    let mut lines = Vec::with_capacity(GHOSTS * 170);
    for i in 0..GHOSTS {
        lines.extend_from_slice(
            format!(
                "{{\"pack\":\"{:064x}\",\"stored\":{i},\"blake3\":\"{}\"}}\n",
                i + 1,
                "ef".repeat(32)
            )
            .as_bytes(),
        );
    }
    let (w, _) = inv("ghosts", &lines);
    let (out, kib) = f.sb.run_measured(
        "bk-verify",
        &args!["--repo", &w.repo, "--inventory"],
        b"",
        QUICK,
    );
    assert_code(&out, FAULTS, "an inventory naming 200,000 missing packs");
    assert_eq!(problems(&out).len(), GHOSTS, "{}", stderr(&out));
    assert!(
        kib < 48 << 10,
        "bk-verify took {kib} KiB for {GHOSTS} inventory lines"
    );
}
