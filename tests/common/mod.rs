//! Shared helpers for the end-to-end tests: an isolated sandbox per test,
//! OpenPGP keys made by the real `gpg`, a runner for the six programs, the
//! backup pipeline, tree generators and tree comparison.
//!
//! Every test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Builds a `Vec<OsString>` from a mix of `&str`, `String`, `&Path`,
/// `PathBuf`…
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        ::std::vec::Vec::<::std::ffi::OsString>::from([$(::std::ffi::OsString::from($a)),*])
    };
}
#[allow(unused_imports)]
pub(crate) use args;

mod s3;
pub use s3::*;
pub mod packs;
pub mod stepwise;

/// How long one program may run before the test kills it and fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Exit statuses (lib/error.rs, README).
pub const OK: i32 = 0;
pub const FAULTS: i32 = 1;
pub const USAGE: i32 = 2;
pub const BAD_INPUT: i32 = 3;
pub const REPO: i32 = 5;
pub const IO: i32 = 6;
pub const PARTIAL: i32 = 24;

/// The user and group tests drop to for non-root runs.
pub const NOBODY: u32 = 65534;

/// Whether this test may use root powers (mount, mknod, chown, setpriv).
/// Not root: in CI that is a failure (CI runs as root, and a test that
/// silently passes would hide a gap); elsewhere the test is skipped with a
/// printed reason.
pub fn have_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: needs root, and CI must run as root"
    );
    eprintln!("SKIPPED {test}: needs root (CI runs it as root)");
    false
}

// ---------------------------------------------------------------------------
// Keys, made by the real gpg.

/// The kinds of test keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Ed25519 primary + Curve25519 encryption subkey (gpg `future-default`).
    Cv25519,
    /// RSA-3072 sign/certify primary + RSA-3072 encryption subkey.
    Rsa3072,
    /// Curve25519 like [`KeyKind::Cv25519`], protected by [`PASSPHRASE`].
    Protected,
    /// A second, unrelated Curve25519 key (the "wrong key").
    Other,
    /// Ed25519 primary made in 2020 with three Curve25519 encryption
    /// subkeys: the first expired, the second valid, the newest revoked.
    MixedSubkeys,
    /// Like [`KeyKind::MixedSubkeys`] without the valid subkey.
    NoUsableSubkey,
}

/// The passphrase of the [`KeyKind::Protected`] key (spaces on purpose).
pub const PASSPHRASE: &str = "correct horse battery staple 42";

/// One key pair, exported by gpg.
#[derive(Debug)]
pub struct KeyPair {
    pub kind: KeyKind,
    /// Armored public key.
    pub public: Vec<u8>,
    /// Armored secret key (protected with `passphrase` if any).
    pub secret: Vec<u8>,
    pub passphrase: Option<&'static str>,
    /// Fingerprint of the primary key (upper-case hex).
    pub fingerprint: String,
    /// Key ids (upper-case hex) of the subkeys usable for encryption.
    pub encryption_key_ids: Vec<String>,
    /// Key ids of encryption subkeys that are expired or revoked.
    pub unusable_key_ids: Vec<String>,
}

fn gpg_in(home: &Path, args: &[&str]) -> Output {
    gpg_in_with_input(home, args, b"")
}

fn gpg_in_with_input(home: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new("gpg");
    cmd.env("GNUPGHOME", home)
        .env("HOME", home)
        .args(["--batch", "--no-tty", "--quiet"])
        .args(args);
    let out = run_command(cmd, input, DEFAULT_TIMEOUT);
    assert!(
        out.status.success(),
        "gpg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn kill_agent(home: &Path) {
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home)
        .args(["--kill", "gpg-agent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// gpg's clock for keys that must look old: their 1-day subkeys expired.
const PAST: [&str; 2] = ["--faked-system-time", "20200101T000000!"];

fn generate_key(kind: KeyKind) -> KeyPair {
    let dir = tempfile::Builder::new()
        .prefix("bk-keygen-")
        .tempdir()
        .expect("tempdir");
    let home = dir.path().join("g");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    let pass = match kind {
        KeyKind::Protected => PASSPHRASE,
        _ => "",
    };
    let fd = "future-default";
    let (uid, algo, usage) = match kind {
        KeyKind::Cv25519 => ("bk test cv25519 <cv@example.invalid>", fd, "default"),
        KeyKind::Rsa3072 => ("bk test rsa <rsa@example.invalid>", "rsa3072", "sign,cert"),
        KeyKind::Protected => ("bk test protected <p@example.invalid>", fd, "default"),
        KeyKind::Other => ("bk test other <other@example.invalid>", fd, "default"),
        KeyKind::MixedSubkeys => (
            "bk test mixed <mixed@example.invalid>",
            "ed25519",
            "sign,cert",
        ),
        KeyKind::NoUsableSubkey => (
            "bk test unusable <nu@example.invalid>",
            "ed25519",
            "sign,cert",
        ),
    };
    let old = matches!(kind, KeyKind::MixedSubkeys | KeyKind::NoUsableSubkey);
    let gpg = |args: &[&str], past: bool| {
        let mut a: Vec<&str> = Vec::new();
        if past {
            a.extend(PAST);
        }
        a.extend(["--pinentry-mode", "loopback", "--passphrase", pass]);
        a.extend(args);
        gpg_in(&home, &a)
    };
    gpg(&["--quick-gen-key", uid, algo, usage, "never"], old);
    let colons =
        || String::from_utf8(gpg(&["--with-colons", "--list-keys"], false).stdout).unwrap();
    let listing = colons();
    let fingerprint = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .expect("fingerprint in gpg listing")
        .to_owned();
    let fpr = fingerprint.as_str();
    match kind {
        KeyKind::Rsa3072 => {
            gpg(&["--quick-add-key", fpr, "rsa3072", "encr", "never"], false);
        }
        KeyKind::MixedSubkeys | KeyKind::NoUsableSubkey => {
            // Subkey 1: expired long ago. Then (mixed only) subkey 2:
            // valid. Last: the newest subkey, revoked.
            gpg(&["--quick-add-key", fpr, "cv25519", "encr", "1d"], true);
            if kind == KeyKind::MixedSubkeys {
                gpg(&["--quick-add-key", fpr, "cv25519", "encr", "never"], false);
            }
            gpg(&["--quick-add-key", fpr, "cv25519", "encr", "never"], false);
            let last = if kind == KeyKind::MixedSubkeys { 3 } else { 2 };
            let script = format!("key {last}\nrevkey\ny\n0\n\ny\nsave\n");
            gpg_in_with_input(
                &home,
                &[
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    pass,
                    "--command-fd",
                    "0",
                    "--edit-key",
                    fpr,
                ],
                script.as_bytes(),
            );
        }
        _ => {}
    }
    let listing = colons();
    let subkeys = |valid: bool| {
        listing
            .lines()
            .filter(|l| l.starts_with("sub:"))
            .filter(|l| l.split(':').nth(11).is_some_and(|caps| caps.contains('e')))
            .filter(|l| {
                let validity = l.split(':').nth(1).unwrap_or("");
                valid != (validity == "e" || validity == "r")
            })
            .map(|l| l.split(':').nth(4).unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let encryption_key_ids = subkeys(true);
    let unusable_key_ids = subkeys(false);
    let (want_valid, want_unusable) = match kind {
        KeyKind::MixedSubkeys => (1, 2),
        KeyKind::NoUsableSubkey => (0, 2),
        _ => (1, 0),
    };
    assert_eq!(
        (encryption_key_ids.len(), unusable_key_ids.len()),
        (want_valid, want_unusable),
        "gpg listing: {listing}"
    );
    let public = gpg(&["--armor", "--export", fpr], false).stdout;
    let secret = gpg(&["--armor", "--export-secret-keys", fpr], false).stdout;
    assert!(public.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert!(secret.starts_with(b"-----BEGIN PGP PRIVATE KEY BLOCK-----"));
    kill_agent(&home);
    KeyPair {
        kind,
        public,
        secret,
        passphrase: (kind == KeyKind::Protected).then_some(PASSPHRASE),
        fingerprint,
        encryption_key_ids,
        unusable_key_ids,
    }
}

/// The test key of `kind`, generated once per test binary.
pub fn key(kind: KeyKind) -> &'static KeyPair {
    static CV: OnceLock<KeyPair> = OnceLock::new();
    static RSA: OnceLock<KeyPair> = OnceLock::new();
    static PROT: OnceLock<KeyPair> = OnceLock::new();
    static OTHER: OnceLock<KeyPair> = OnceLock::new();
    static MIXED: OnceLock<KeyPair> = OnceLock::new();
    static UNUSABLE: OnceLock<KeyPair> = OnceLock::new();
    let cell = match kind {
        KeyKind::Cv25519 => &CV,
        KeyKind::Rsa3072 => &RSA,
        KeyKind::Protected => &PROT,
        KeyKind::Other => &OTHER,
        KeyKind::MixedSubkeys => &MIXED,
        KeyKind::NoUsableSubkey => &UNUSABLE,
    };
    cell.get_or_init(|| generate_key(kind))
}

// ---------------------------------------------------------------------------
// Running programs.

/// Runs `cmd` with `stdin` fed from a thread, collecting stdout and stderr;
/// kills it (by its pid) and panics if it runs longer than `timeout`.
pub fn run_command(mut cmd: Command, stdin: &[u8], timeout: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let described = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let timed_out = AtomicBool::new(false);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            // A program may legitimately stop reading early (an error on
            // line 2): a broken pipe here is not the test's business.
            let _ = input.write_all(stdin);
        });
        let timed_out = &timed_out;
        s.spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                timed_out.store(true, Ordering::SeqCst);
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        let out = child.wait_with_output().expect("waiting for child");
        let _ = done_tx.send(());
        out
    });
    assert!(
        !timed_out.load(Ordering::SeqCst),
        "{described} did not finish within {timeout:?} and was killed; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `status 3; stderr: …` for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}; stderr: {}; stdout: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim_end(),
        truncate_for_display(&out.stdout)
    )
}

fn truncate_for_display(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned();
    if bytes.len() > 2000 {
        format!("{s}… ({} bytes)", bytes.len())
    } else {
        s
    }
}

/// Panics unless `out` succeeded.
#[track_caller]
pub fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", describe(out));
}

/// Panics unless `out` exited with `code`.
#[track_caller]
pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit status {code}, got {}",
        describe(out)
    );
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// Records.

/// Parses NDJSON into typed records with bk's own `RecordReader`,
/// panicking on a bad line (compare [`parse_records`], which gives JSON).
pub fn records(out: &[u8]) -> Vec<bk::record::Record> {
    bk::record::RecordReader::new(out)
        .collect::<Result<Vec<_>, _>>()
        .expect("valid records")
}

/// Parses NDJSON, panicking on a bad line. Control records (a stage's
/// `{"bk":"begin","v":1}` and `{"bk":"end","v":1}`) are left out, so
/// records rewritten with [`to_ndjson`] make an unchecked stream.
pub fn parse_records(ndjson: &[u8]) -> Vec<Value> {
    ndjson
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| {
            serde_json::from_slice::<Value>(l)
                .unwrap_or_else(|e| panic!("bad JSON line {:?}: {e}", String::from_utf8_lossy(l)))
        })
        .filter(|v| !is_control(v))
        .collect()
}

/// The records of a snapshot's (or reuse cache file's) plaintext as gpg
/// or the file gives it, without the MAC line that ends it
/// (`{"bk":"snapshot"|"cache","v":1,"mac":…}`); panics if that line is
/// missing.
#[track_caller]
pub fn without_mac_line<'a>(plain: &'a [u8], of: &str) -> &'a [u8] {
    let body = plain.strip_suffix(b"\n").unwrap_or(plain);
    let cut = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = String::from_utf8_lossy(&body[cut..]);
    let prefix = format!("{{\"bk\":\"{of}\",\"v\":1,\"mac\":\"");
    assert!(
        last.starts_with(&prefix) && last.len() == prefix.len() + 66,
        "the last line should be the {of} MAC line, is {last:?}"
    );
    &plain[..cut]
}

/// The piece lines (`{"piece":…,"size":…}`) of a snapshot root's
/// plaintext as gpg gives it: its header, pad and MAC lines left out.
#[track_caller]
pub fn root_pieces(plain: &[u8]) -> Vec<Value> {
    without_mac_line(plain, "snapshot")
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"{\"pad\":"))
        .skip(1)
        .map(|l| serde_json::from_slice(l).expect("a root line is JSON"))
        .collect()
}

/// Whether `v` is a control record (`{"bk":…}` without `kind` or `path`).
pub fn is_control(v: &Value) -> bool {
    v.get("bk").is_some() && v.get("kind").is_none() && v.get("path").is_none()
}

/// The begin and end records that frame a checked stream.
pub const BEGIN: &[u8] = b"{\"bk\":\"begin\",\"v\":1}\n";
pub const END: &[u8] = b"{\"bk\":\"end\",\"v\":1}\n";

/// `records` as a checked stream: a begin record, the lines, an end record.
pub fn framed(records: &[u8]) -> Vec<u8> {
    [BEGIN, records, END].concat()
}

/// Serialises records back to NDJSON.
pub fn to_ndjson<'a>(records: impl IntoIterator<Item = &'a Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).unwrap();
        out.push(b'\n');
    }
    out
}

/// The raw path bytes of a record (`path_b64` wins over `path`).
pub fn rec_path(rec: &Value) -> Vec<u8> {
    match rec.get("path_b64").and_then(Value::as_str) {
        Some(b) => B64.decode(b).expect("path_b64 is base64"),
        None => rec["path"]
            .as_str()
            .unwrap_or_else(|| panic!("record without path: {rec}"))
            .as_bytes()
            .to_vec(),
    }
}

/// Records keyed by raw path; panics on duplicates.
pub fn by_path(records: &[Value]) -> BTreeMap<Vec<u8>, Value> {
    let mut map = BTreeMap::new();
    for r in records {
        let p = rec_path(r);
        if let Some(old) = map.insert(p.clone(), r.clone()) {
            panic!(
                "two records for path {:?}: {old} and {r}",
                String::from_utf8_lossy(&p)
            );
        }
    }
    map
}

/// The record for `path` (raw bytes), panicking if absent.
pub fn find_record<'a>(records: &'a [Value], path: &[u8]) -> &'a Value {
    records
        .iter()
        .find(|r| rec_path(r) == path)
        .unwrap_or_else(|| {
            panic!(
                "no record for {:?} among {} records",
                String::from_utf8_lossy(path),
                records.len()
            )
        })
}

/// The object ids of a record, in order.
pub fn object_ids(rec: &Value) -> Vec<String> {
    rec.get("objects")
        .and_then(Value::as_array)
        .map(|objs| {
            objs.iter()
                .map(|o| {
                    o["id"]
                        .as_str()
                        .unwrap_or_else(|| panic!("object without id in {rec}"))
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

// ---------------------------------------------------------------------------
// The sandbox.

/// What one run of the backup pipeline printed.
#[derive(Debug, Clone)]
pub struct Backup {
    pub scan: Vec<u8>,
    pub hashed: Vec<u8>,
    pub sealed: Vec<u8>,
    /// stderr of bk-seal (the id-key path on `--init`).
    pub seal_stderr: String,
    /// The snapshot's file name under `repo/snapshots/`.
    pub snapshot: String,
}

impl Backup {
    /// The sealed records, parsed.
    pub fn records(&self) -> Vec<Value> {
        parse_records(&self.sealed)
    }
}

/// `bk-seal | bk-index write` under way (see [`Sandbox::spawn_pipeline`]).
pub struct Pipeline {
    pub seal: std::process::Child,
    pub write: std::process::Child,
}

/// A backup (`bk-seal | bk-index write`) held open in the middle of its
/// input, both of its shared locks taken: for tests that run something
/// beside a backup. [`HeldBackup::finish`] lets it end.
pub struct HeldBackup {
    pipeline: Pipeline,
    input: std::process::ChildStdin,
    rest: Vec<u8>,
}

impl Sandbox {
    /// Starts `bk-seal | bk-index write` on the hashed records `hashed`,
    /// feeds the first half of its lines, and waits until both stages hold
    /// their shared locks (a directory repository).
    pub fn hold_backup_open(&self, hashed: &[u8]) -> HeldBackup {
        let lines: Vec<&[u8]> = hashed.split_inclusive(|&b| b == b'\n').collect();
        let half: usize = lines[..lines.len() / 2].iter().map(|l| l.len()).sum();
        let mut pipeline = self.spawn_pipeline(Stdio::piped(), &[]);
        let mut input = pipeline.seal.stdin.take().unwrap();
        input.write_all(&hashed[..half]).unwrap();
        input.flush().unwrap();
        wait_until("both shared locks", Duration::from_secs(60), || {
            lock_files(&self.repo).len() == 2
        });
        HeldBackup {
            pipeline,
            input,
            rest: hashed[half..].to_vec(),
        }
    }
}

impl HeldBackup {
    /// Feeds the rest of the input and waits for both stages, checked for
    /// success: bk-seal's output and the snapshot's name.
    pub fn finish(mut self) -> (Output, String) {
        self.input.write_all(&self.rest).unwrap();
        drop(self.input);
        let seal = self.pipeline.seal.wait_with_output().unwrap();
        assert_ok(&seal, "bk-seal");
        let write = self.pipeline.write.wait_with_output().unwrap();
        assert_ok(&write, "bk-index write");
        let snapshot = String::from_utf8(write.stdout).unwrap().trim().to_owned();
        (seal, snapshot)
    }
}

/// Polls `cond` every 20 ms until it holds; fails the test, naming
/// `what`, once `limit` has passed.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One test's private world: a temporary directory holding HOME, the XDG
/// directories, GNUPGHOME, the key files and the repository.
pub struct Sandbox {
    dir: TempDir,
    pub base: PathBuf,
    pub home: PathBuf,
    pub data_home: PathBuf,
    pub cache_home: PathBuf,
    pub config_home: PathBuf,
    pub gnupghome: PathBuf,
    pub repo: PathBuf,
    pub key: &'static KeyPair,
    pub pub_key: PathBuf,
    pub sec_key: PathBuf,
    /// File holding the passphrase of a protected key.
    pub passphrase_file: Option<PathBuf>,
    /// Where the repository lives when it is not the directory `repo`:
    /// an S3 bucket on a moto server of this sandbox's own.
    pub s3: Option<S3Repo>,
}

/// Where a sandbox keeps its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The directory `Sandbox::repo`.
    Dir,
    /// `s3://BUCKET/PREFIX` on a moto server started for the sandbox.
    S3,
}

/// Runs one test body against each backend: `backend_tests!(a, b);` for
/// functions `fn a(sb: Sandbox)` makes the tests `a::dir` and `a::s3`.
#[allow(unused_macros)]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn dir() {
                    super::$name(super::Sandbox::on(super::Backend::Dir));
                }
                #[test]
                fn s3() {
                    super::$name(super::Sandbox::on(super::Backend::S3));
                }
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use backend_tests;

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A sandbox using the Curve25519 test key.
    pub fn new() -> Self {
        Self::with_key(KeyKind::Cv25519)
    }

    /// A sandbox using the test key of `kind`.
    pub fn with_key(kind: KeyKind) -> Self {
        let key = key(kind);
        let dir = tempfile::Builder::new()
            .prefix("bk-e2e-")
            .tempdir()
            .expect("tempdir");
        let base = dir.path().to_path_buf();
        let home = base.join("home");
        let gnupghome = base.join("gnupg");
        for d in [&home, &gnupghome] {
            fs::create_dir_all(d).unwrap();
        }
        fs::set_permissions(&gnupghome, fs::Permissions::from_mode(0o700)).unwrap();
        let keys = base.join("keys");
        fs::create_dir(&keys).unwrap();
        let (pub_key, sec_key) = write_key_files(key, &keys, "me");
        let passphrase_file = key.passphrase.map(|p| {
            let f = keys.join("passphrase.txt");
            fs::write(&f, format!("{p}\n")).unwrap();
            f
        });
        Sandbox {
            data_home: home.join(".local/share"),
            cache_home: home.join(".cache"),
            config_home: home.join(".config"),
            repo: base.join("repo"),
            dir,
            base,
            home,
            gnupghome,
            key,
            pub_key,
            sec_key,
            passphrase_file,
            s3: None,
        }
    }

    /// A sandbox whose repository is on `backend` (S3: under the prefix
    /// `backups/bk` of a fresh bucket).
    pub fn on(backend: Backend) -> Self {
        match backend {
            Backend::Dir => Self::new(),
            Backend::S3 => Self::s3(),
        }
    }

    /// A sandbox whose repository is `s3://BUCKET/backups/bk` on a moto
    /// server of its own.
    pub fn s3() -> Self {
        Self::s3_with_prefix("backups/bk")
    }

    /// Like [`Sandbox::s3`] with the repository under `prefix` (`""`: at
    /// the bucket's root).
    pub fn s3_with_prefix(prefix: &str) -> Self {
        let mut sb = Self::new();
        // Nothing may use the directory by mistake.
        sb.repo = sb.base.join("no-such-repo-the-repository-is-on-s3");
        sb.s3 = Some(S3Repo::new(prefix));
        sb
    }

    /// The sandbox's backend.
    pub fn backend(&self) -> Backend {
        if self.s3.is_some() {
            Backend::S3
        } else {
            Backend::Dir
        }
    }

    /// The S3 repository, panicking for a directory sandbox.
    #[track_caller]
    pub fn s3_repo(&self) -> &S3Repo {
        self.s3
            .as_ref()
            .expect("this helper needs an S3 sandbox (Sandbox::s3)")
    }

    /// What `--repo` names: the directory, or `s3://BUCKET/PREFIX`.
    pub fn repo_url(&self) -> OsString {
        match &self.s3 {
            Some(s3) => s3.url().into(),
            None => self.repo.clone().into_os_string(),
        }
    }

    /// The bytes of `rel` (a path inside the repository, e.g.
    /// `"bk-repo.json"`), or None if there is no such file.
    pub fn read_repo_file(&self, rel: &str) -> Option<Vec<u8>> {
        match &self.s3 {
            Some(s3) => s3.server.get(&s3.bucket, &s3.key(rel)),
            None => fs::read(self.repo.join(rel)).ok(),
        }
    }

    /// Writes `rel` inside the repository (creating directories).
    pub fn write_repo_file(&self, rel: &str, data: &[u8]) {
        match &self.s3 {
            Some(s3) => s3.server.put(&s3.bucket, &s3.key(rel), data),
            None => {
                let p = self.repo.join(rel);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            }
        }
    }

    /// Removes `rel` from the repository.
    pub fn remove_repo_file(&self, rel: &str) {
        match &self.s3 {
            Some(s3) => s3.server.delete(&s3.bucket, &s3.key(rel)),
            None => fs::remove_file(self.repo.join(rel)).unwrap(),
        }
    }

    /// Every file under the repository directory `rel` (`"packs"`,
    /// `"locks"`, `""` for all), relative to it, with its size.
    pub fn repo_files(&self, rel: &str) -> BTreeMap<String, u64> {
        match &self.s3 {
            Some(s3) => s3.files_under(rel),
            None => {
                let dir = self.repo.join(rel);
                // A file may go between the listing and its stat (a
                // temporary file renamed by a program still running).
                files_under(&dir)
                    .into_iter()
                    .filter_map(|p| {
                        let size = fs::metadata(dir.join(&p)).ok()?.len();
                        Some((p.to_string_lossy().into_owned(), size))
                    })
                    .collect()
            }
        }
    }

    /// Has the repository been created (`bk-repo.json` exists)?
    pub fn repo_exists(&self) -> bool {
        match &self.s3 {
            Some(_) => self.read_repo_file("bk-repo.json").is_some(),
            None => self.repo.exists(),
        }
    }

    /// A path inside the sandbox.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.base.join(rel)
    }

    /// Writes another key pair's files into the sandbox: (public, secret).
    pub fn add_key(&self, kind: KeyKind, name: &str) -> (PathBuf, PathBuf) {
        write_key_files(key(kind), &self.path("keys"), name)
    }

    /// A command for `program` (a bk program, or `gpg`/`/usr/bin/time`)
    /// with the sandbox's environment and no inherited `BK_*` variables.
    pub fn command(&self, program: &str) -> Command {
        let exe: PathBuf = if program.starts_with("bk-") {
            assert_cmd::cargo::cargo_bin(program)
        } else {
            PathBuf::from(program)
        };
        let mut cmd = Command::new(exe);
        self.apply_env(&mut cmd);
        cmd
    }

    fn apply_env(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars_os() {
            if k.as_bytes().starts_with(b"BK_") || k.as_bytes().starts_with(b"AWS_") {
                cmd.env_remove(&k);
            }
        }
        // Never ask a cloud metadata service for credentials (it is not on
        // this machine), and read no AWS profile files but the sandbox's.
        cmd.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.base.join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.base.join("aws-credentials"),
            );
        if let Some(s3) = &self.s3 {
            for (k, v) in s3.env() {
                cmd.env(k, v);
            }
        }
        cmd.env("HOME", &self.home)
            .env("XDG_DATA_HOME", &self.data_home)
            .env("XDG_CACHE_HOME", &self.cache_home)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env("GNUPGHOME", &self.gnupghome)
            .env("LC_ALL", "C")
            .current_dir(&self.base);
    }

    /// Runs a bk program with `args` and `stdin`.
    pub fn run(&self, program: &str, args: &[OsString], stdin: &[u8]) -> Output {
        self.run_env(program, args, stdin, &[])
    }

    /// Runs a bk program with extra environment variables.
    pub fn run_env(
        &self,
        program: &str,
        args: &[OsString],
        stdin: &[u8],
        env: &[(&str, &OsStr)],
    ) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_command(cmd, stdin, DEFAULT_TIMEOUT)
    }

    /// Runs a program under `/usr/bin/time -f %M` and returns its output
    /// and peak RSS in KiB. stdout goes to `stdout_file` when given.
    pub fn run_measured(
        &self,
        program: &str,
        args: &[OsString],
        stdin: &[u8],
        timeout: Duration,
    ) -> (Output, u64) {
        let time = Path::new("/usr/bin/time");
        assert!(
            time.exists(),
            "/usr/bin/time is missing: install the `time` package (the memory tests need it)"
        );
        let report = self.path(format!("rss-{program}-{}.txt", rand_suffix()));
        let mut cmd = self.command("/usr/bin/time");
        cmd.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&report)
            .arg(assert_cmd::cargo::cargo_bin(program))
            .args(args);
        let out = run_command(cmd, stdin, timeout);
        let text = fs::read_to_string(&report).expect("time report");
        let kib = text
            .lines()
            .rev()
            .find_map(|l| l.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no RSS figure in /usr/bin/time output {text:?}"));
        (out, kib)
    }

    /// Runs `gpg --batch` in the sandbox's GNUPGHOME.
    pub fn gpg(&self, args: &[OsString], stdin: &[u8]) -> Output {
        let mut cmd = self.command("gpg");
        cmd.args(["--batch", "--no-tty"]).args(args);
        run_command(cmd, stdin, DEFAULT_TIMEOUT)
    }

    /// Imports a secret key into the sandbox's gpg keyring.
    pub fn gpg_import_secret(&self, key: &KeyPair) {
        let pass = key.passphrase.unwrap_or("");
        let out = self.gpg(
            &args![
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                pass,
                "--import"
            ],
            &key.secret,
        );
        assert_ok(&out, "gpg --import");
    }

    /// `gpg --decrypt FILE` with the sandbox key (imported first).
    pub fn gpg_decrypt(&self, file: &Path, extra: &[&str]) -> Output {
        let pass = self.key.passphrase.unwrap_or("");
        let mut a = args!["--pinentry-mode", "loopback", "--passphrase", pass];
        a.extend(extra.iter().map(OsString::from));
        a.extend(args!["--decrypt", file]);
        self.gpg(&a, b"")
    }

    /// `--key SEC [--passphrase-file F]` for this sandbox's key.
    pub fn key_args(&self) -> Vec<OsString> {
        let mut a = args!["--key", &self.sec_key];
        if let Some(f) = &self.passphrase_file {
            a.extend(args!["--passphrase-file", f]);
        }
        a
    }

    /// `--repo R` (a directory or `s3://BUCKET/PREFIX`).
    pub fn repo_args(&self) -> Vec<OsString> {
        args!["--repo", self.repo_url()]
    }

    /// `--repo R -r PUB`.
    pub fn seal_args(&self) -> Vec<OsString> {
        args!["--repo", self.repo_url(), "-r", &self.pub_key]
    }

    /// bk-scan | bk-hash of `tree`: the hashed records.
    pub fn scan_hash(&self, tree: &Path) -> (Vec<u8>, Vec<u8>) {
        self.scan_hash_roots(&[tree])
    }

    /// bk-scan ROOT… | bk-hash: the scanned and the hashed records.
    pub fn scan_hash_roots(&self, roots: &[&Path]) -> (Vec<u8>, Vec<u8>) {
        let a: Vec<OsString> = roots.iter().map(OsString::from).collect();
        let scan = self.run("bk-scan", &a, b"");
        assert_ok(&scan, "bk-scan");
        let hashed = self.run("bk-hash", &[], &scan.stdout);
        assert_ok(&hashed, "bk-hash");
        (scan.stdout, hashed.stdout)
    }

    /// bk-seal of hashed records (with `--init` when the repository does
    /// not exist yet).
    pub fn seal(&self, hashed: &[u8]) -> Output {
        let mut a = self.seal_args();
        if !self.repo_exists() {
            a.push("--init".into());
        }
        self.run("bk-seal", &a, hashed)
    }

    /// bk-index write of sealed records; returns the snapshot's file name.
    pub fn index_write(&self, sealed: &[u8]) -> String {
        let mut a = args!["write"];
        a.extend(self.seal_args());
        let out = self.run("bk-index", &a, sealed);
        assert_ok(&out, "bk-index write");
        let printed = String::from_utf8(out.stdout).expect("snapshot name is UTF-8");
        let printed = printed.trim();
        assert_eq!(
            printed.lines().count(),
            1,
            "bk-index write should print one snapshot name, printed {printed:?}"
        );
        let name = Path::new(printed)
            .file_name()
            .unwrap_or_else(|| panic!("bk-index write printed {printed:?}"))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            name.ends_with(".pgp"),
            "snapshot name {name:?} should end in .pgp"
        );
        assert!(
            self.snapshot_names().contains(&name),
            "bk-index write printed {printed:?} but there is no snapshots/{name} in {:?}",
            self.repo_url()
        );
        name
    }

    /// bk-scan | bk-hash | bk-seal | bk-index write of `tree`, every stage
    /// checked for success.
    pub fn backup(&self, tree: &Path) -> Backup {
        self.backup_roots(&[tree])
    }

    /// Like [`Sandbox::backup`], of several roots in one snapshot.
    pub fn backup_roots(&self, roots: &[&Path]) -> Backup {
        let (scan, hashed) = self.scan_hash_roots(roots);
        let sealed = self.seal(&hashed);
        assert_ok(&sealed, "bk-seal");
        let snapshot = self.index_write(&sealed.stdout);
        let seal_stderr = stderr(&sealed);
        Backup {
            scan,
            hashed,
            sealed: sealed.stdout,
            seal_stderr,
            snapshot,
        }
    }

    /// `bk-index show SNAPSHOT --repo R --key …`.
    pub fn show(&self, snapshot: &str, extra: &[&str]) -> Output {
        let mut a = args!["show", snapshot];
        a.extend(self.repo_args());
        a.extend(self.key_args());
        a.extend(extra.iter().map(OsString::from));
        self.run("bk-index", &a, b"")
    }

    /// The NDJSON of `bk-index show latest`, checked for success.
    pub fn show_latest(&self) -> Vec<u8> {
        let out = self.show("latest", &[]);
        assert_ok(&out, "bk-index show latest");
        out.stdout
    }

    /// `bk-open --repo R --key … --to DIR` with `records` on stdin: each
    /// root goes to [`restored`]`(DIR, ROOT)`.
    pub fn restore(&self, records: &[u8], to: &Path) -> Output {
        let mut a = self.repo_args();
        a.extend(self.key_args());
        a.extend(args!["--to", to]);
        self.run("bk-open", &a, records)
    }

    /// `bk-open --repo R --key … --object ID`.
    pub fn open_object(&self, id: &str) -> Output {
        let mut a = self.repo_args();
        a.extend(self.key_args());
        a.extend(args!["--object", id]);
        self.run("bk-open", &a, b"")
    }

    /// `bk-verify --repo R [extra]` with `records` on stdin.
    pub fn verify(&self, records: &[u8], extra: &[OsString]) -> Output {
        let mut a = self.repo_args();
        a.extend(extra.iter().cloned());
        self.run("bk-verify", &a, records)
    }

    /// Starts `bk-seal | bk-index write` as two processes: bk-seal reads
    /// `stdin` (`Stdio::piped()` leaves it open for the test to feed) and
    /// gets `seal_extra` after the usual arguments; every output is piped.
    /// For tests that kill a stage or run something beside a backup.
    pub fn spawn_pipeline(&self, stdin: Stdio, seal_extra: &[&str]) -> Pipeline {
        let mut seal = self.command("bk-seal");
        seal.args(self.seal_args())
            .args(seal_extra)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut seal = seal.spawn().expect("start bk-seal");
        let mut write = self.command("bk-index");
        write
            .arg("write")
            .args(self.seal_args())
            .stdin(Stdio::from(seal.stdout.take().unwrap()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let write = write.spawn().expect("start bk-index write");
        Pipeline { seal, write }
    }

    /// Every pack file, as its path in the repository
    /// (`packs/ab/<64 hex>`), with its size (either backend; temporary
    /// files left out).
    pub fn pack_files(&self) -> BTreeMap<String, u64> {
        self.repo_files("packs")
            .into_iter()
            .filter(|(rel, _)| !rel.rsplit('/').next().unwrap_or("").starts_with('.'))
            .map(|(rel, size)| (format!("packs/{rel}"), size))
            .collect()
    }

    /// Bytes of all pack files: what the repository stores of contents
    /// (and of catalogue pieces).
    pub fn packs_bytes(&self) -> u64 {
        self.pack_files().values().sum()
    }

    /// The id key `bk-seal --init` saved for this repository.
    pub fn id_key(&self) -> bk::repo::idkey::IdKey {
        local_id_key(&self.data_home, &self.repo_id())
    }

    /// The keys of this repository's packs (from the local id key).
    pub fn pack_keys(&self) -> bk::repo::pack::PackKeys {
        bk::repo::pack::PackKeys::derive(&self.id_key(), &self.repo_id())
    }

    /// Every blob of every pack, read from the packs' headers with the
    /// local id key: id → each place it is stored (a blob stored twice is
    /// in two packs).
    pub fn blobs(&self) -> BTreeMap<String, Vec<BlobAt>> {
        let keys = self.pack_keys();
        blobs_of(
            &keys,
            self.pack_files().into_keys().map(|rel| {
                let bytes = self
                    .read_repo_file(&rel)
                    .unwrap_or_else(|| panic!("{rel} vanished"));
                (rel, bytes)
            }),
        )
    }

    /// The ids of every blob in the repository.
    pub fn blob_ids(&self) -> BTreeSet<String> {
        self.blobs().into_keys().collect()
    }

    /// Where blob `id` is; panics unless exactly one pack holds it.
    #[track_caller]
    pub fn blob_at(&self, id: &str) -> BlobAt {
        let mut all = self.blobs();
        match all.remove(id) {
            Some(places) if places.len() == 1 => places.into_iter().next().unwrap(),
            Some(places) => panic!("blob {id} is stored {} times: {places:?}", places.len()),
            None => panic!("blob {id} is in no pack"),
        }
    }

    /// The OpenPGP message of blob `id`, taken out of its pack (the pack
    /// keystream removed): what `gpg --decrypt` reads.
    #[track_caller]
    pub fn blob_message(&self, id: &str) -> Vec<u8> {
        let at = self.blob_at(id);
        let pack = self.read_repo_file(&at.pack).expect("the pack");
        blob_message_in(&self.pack_keys(), &at, &pack)
    }

    /// Writes the OpenPGP message of blob `id` to `path` (for gpg).
    pub fn write_blob_message(&self, id: &str, path: &Path) {
        fs::write(path, self.blob_message(id)).unwrap();
    }

    /// Flips the bits `mask` of byte `at` of the repository file `rel`.
    pub fn flip_repo_byte(&self, rel: &str, at: u64, mask: u8) {
        let mut bytes = self
            .read_repo_file(rel)
            .unwrap_or_else(|| panic!("no {rel}"));
        bytes[at as usize] ^= mask;
        self.write_repo_file(rel, &bytes);
    }

    /// Cuts the repository file `rel` to `len` bytes.
    pub fn truncate_repo_file(&self, rel: &str, len: u64) {
        let bytes = self
            .read_repo_file(rel)
            .unwrap_or_else(|| panic!("no {rel}"));
        self.write_repo_file(rel, &bytes[..len as usize]);
    }

    /// Flips a byte in the middle of blob `id`, in its pack: the pack's
    /// header still lists it, its OpenPGP message is damaged.
    pub fn corrupt_blob(&self, id: &str) {
        let at = self.blob_at(id);
        self.flip_repo_byte(&at.pack, at.offset + at.length / 2, 0x55);
    }

    /// Rewrites the pack that holds blob `id` without it, every other blob
    /// of the pack kept (as a faulty prune could): the blob is missing from
    /// the repository, nothing else is.
    pub fn drop_blob(&self, id: &str) {
        let at = self.blob_at(id);
        let pack = self.read_repo_file(&at.pack).unwrap();
        let keys = self.pack_keys();
        let others: Vec<(String, u64, Vec<u8>)> = pack_header(&keys, &at.pack, &pack)
            .into_iter()
            .filter(|(blob, _)| blob != id)
            .map(|(blob, b)| (blob, b.size, blob_message_in(&keys, &b, &pack)))
            .collect();
        if !others.is_empty() {
            let refs: Vec<(&str, u64, &[u8])> = others
                .iter()
                .map(|(b, size, m)| (b.as_str(), *size, m.as_slice()))
                .collect();
            self.write_pack(&refs);
        }
        self.remove_repo_file(&at.pack);
        assert!(!self.blobs().contains_key(id));
    }

    /// Writes a pack under the repository's keys holding `blobs` (id,
    /// plaintext size, OpenPGP message), as a backing-up host would;
    /// returns its path in the repository.
    pub fn write_pack(&self, blobs: &[(&str, u64, &[u8])]) -> String {
        let (rel, bytes) = make_pack(&self.pack_keys(), blobs);
        self.write_repo_file(&rel, &bytes);
        rel
    }

    /// The pieces (blob ids) the root of snapshot `name` lists, in order,
    /// decrypted with the secret key (its MAC and signature unchecked).
    pub fn snapshot_pieces(&self, name: &str) -> Vec<String> {
        let bytes = self
            .read_repo_file(&format!("snapshots/{name}"))
            .unwrap_or_else(|| panic!("no snapshot {name}"));
        let secret = bk::crypto::SecretKeys::load(
            &self.sec_key,
            &bk::crypto::PassphraseSource {
                file: self.passphrase_file.clone(),
            },
        )
        .expect("the secret key");
        let mut msg = bk::crypto::Decryptor::Secret(&secret)
            .decrypt(std::io::Cursor::new(bytes), name)
            .expect("the root decrypts");
        let mut plain = Vec::new();
        msg.read_to_end(&mut plain).expect("the root's plaintext");
        parse_records(without_mac_line(&plain, "snapshot"))
            .into_iter()
            .filter_map(|l| l.get("piece").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    /// The pieces of every snapshot.
    pub fn all_pieces(&self) -> BTreeSet<String> {
        self.snapshot_names()
            .iter()
            .flat_map(|n| self.snapshot_pieces(n))
            .collect()
    }

    /// The blobs that hold contents: every blob but the snapshots'
    /// pieces.
    pub fn content_blob_ids(&self) -> BTreeSet<String> {
        let pieces = self.all_pieces();
        self.blob_ids()
            .into_iter()
            .filter(|id| !pieces.contains(id))
            .collect()
    }

    /// The plaintext of a snapshot root (without its MAC line, which only
    /// a backing-up host can make) whose records are `records`: see
    /// [`forged_root_parts`]. The piece is stored in a pack of its own.
    pub fn forged_root(&self, records: &[u8], host: &str) -> Vec<u8> {
        let (id, message, root) = forged_root_parts(&self.id_key(), &self.pub_key, records, host);
        self.write_pack(&[(&id, records.len() as u64, &message)]);
        root
    }

    /// Snapshot file names under `snapshots/` (either backend).
    pub fn snapshot_names(&self) -> BTreeSet<String> {
        self.repo_files("snapshots").into_keys().collect()
    }

    /// A fresh empty directory inside the sandbox.
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let d = self.path(name);
        fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        d
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Stop a gpg-agent started for this GNUPGHOME, and make read-only
        // directories removable.
        if fs::read_dir(&self.gnupghome).is_ok_and(|mut d| d.next().is_some()) {
            kill_agent(&self.gnupghome);
        }
        make_writable(self.dir.path());
    }
}

fn make_writable(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(ft) = e.file_type() {
                if ft.is_dir() {
                    let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
                    make_writable(&e.path());
                }
            }
        }
    }
}

fn write_key_files(key: &KeyPair, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let p = dir.join(format!("{name}.pub.asc"));
    let s = dir.join(format!("{name}.sec.asc"));
    fs::write(&p, &key.public).unwrap();
    fs::write(&s, &key.secret).unwrap();
    fs::set_permissions(&s, fs::Permissions::from_mode(0o600)).unwrap();
    (p, s)
}

fn rand_suffix() -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}

/// Where `bk-open --to TO` restores the records of root `root` (as
/// bk-scan recorded it: absolute): `TO/<root without its leading '/'>`.
pub fn restored(to: &Path, root: &Path) -> PathBuf {
    to.join(root.strip_prefix("/").unwrap_or(root))
}

/// The one root the records of `ndjson` name (panics unless there is
/// exactly one): where they restore is [`restored`]`(TO, root)`.
pub fn single_root(ndjson: &[u8]) -> PathBuf {
    let roots: BTreeSet<String> = parse_records(ndjson)
        .iter()
        .map(|r| r["root"].as_str().expect("record has a root").to_owned())
        .collect();
    assert_eq!(roots.len(), 1, "records of one root expected: {roots:?}");
    PathBuf::from(roots.into_iter().next().unwrap())
}

/// Every regular file under `dir` (recursively), relative to it.
pub fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(root, &e.path(), out);
            } else if ft.is_file() {
                out.insert(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Every entry (files, dirs, links…) under `dir`, relative to it.
pub fn entries_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            out.insert(e.path().strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

// ---------------------------------------------------------------------------
// Tree generation.

/// Deterministic pseudo-random bytes (SplitMix64).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed;
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `Path` from raw bytes (names that are not UTF-8).
pub fn raw(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Writes `data` to `path` (creating parents) with permission `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Creates a symlink `path` → `target`.
pub fn make_symlink(target: &Path, path: &Path) {
    symlink(target, path).unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
}

/// Sets the mtime (and atime) of `path` to `ns` nanoseconds since the
/// epoch, without following a symlink.
pub fn set_mtime_ns(path: &Path, ns: i64) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let ts = TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    utimensat(None, path, &ts, &ts, UtimensatFlags::NoFollowSymlink)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", path.display()));
}

/// mtime in nanoseconds since the epoch, without following a symlink.
pub fn mtime_ns(path: &Path) -> i64 {
    let m = fs::symlink_metadata(path).unwrap();
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// A distinctive base time for test mtimes (with a nanosecond part).
pub const T0: i64 = 1_600_000_000_123_456_789;

/// Non-UTF-8 names used by the rich tree.
pub const LATIN1_FILE: &[u8] = b"caf\xe9-latin1.txt";
pub const BAD_DIR: &[u8] = b"dir-\xff\xfe";

/// Size of the big file of the rich tree.
pub const BIG: usize = 50 << 20;

/// Builds the tree the round-trip test backs up: nested directories, empty
/// files, a 50 MiB file, duplicates, symlinks (relative, dangling, to a
/// directory, with a non-UTF-8 target), names with spaces, a newline and
/// non-UTF-8 bytes, assorted modes and nanosecond mtimes.
pub fn make_rich_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    let dup = pseudo_random(7, 200_000);
    let p = |s: &str| PathBuf::from(s);
    let files: Vec<(PathBuf, Vec<u8>, u32)> = vec![
        (p("a.txt"), b"alpha\n".to_vec(), 0o644),
        (p("empty-1"), Vec::new(), 0o600),
        (p("sub/empty-2"), Vec::new(), 0o644),
        (
            p("sub/deeper/deepest/leaf.bin"),
            pseudo_random(1, 12_345),
            0o640,
        ),
        (p("big.bin"), pseudo_random(2, BIG), 0o644),
        (p("dup-1.dat"), dup.clone(), 0o644),
        (p("sub/dup-2.dat"), dup.clone(), 0o600),
        (p("sub/deeper/dup-3.dat"), dup, 0o644),
        (p("name with  spaces .txt"), b"spaces\n".to_vec(), 0o644),
        (p("line\nbreak.txt"), b"newline in name\n".to_vec(), 0o644),
        (
            raw(LATIN1_FILE).to_owned(),
            b"latin-1 name\n".to_vec(),
            0o644,
        ),
        (
            raw(BAD_DIR).join("inner.txt"),
            b"inside a non-UTF-8 dir\n".to_vec(),
            0o644,
        ),
        (p("exec.sh"), b"#!/bin/sh\necho hi\n".to_vec(), 0o755),
        (p("readonly.txt"), b"read only\n".to_vec(), 0o444),
        (p("sub/x y/z.txt"), pseudo_random(3, 4096), 0o664),
    ];
    for (i, (rel, data, mode)) in files.iter().enumerate() {
        let p = root.join(rel);
        write_file(&p, data, 0o644);
        set_mtime_ns(&p, T0 + (i as i64) * 1_000_003_001);
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    make_symlink(
        Path::new("sub/deeper/deepest/leaf.bin"),
        &root.join("link-rel"),
    );
    make_symlink(Path::new("../a.txt"), &root.join("sub/link-up"));
    make_symlink(Path::new("does/not/exist"), &root.join("dangling"));
    make_symlink(Path::new("sub"), &root.join("link-dir"));
    make_symlink(raw(LATIN1_FILE), &root.join("link-latin1"));
    fs::create_dir(root.join("empty-dir")).unwrap();
    for (rel, mode) in [
        ("sub/deeper/deepest", 0o755),
        ("sub/deeper", 0o700),
        ("sub/x y", 0o775),
        ("sub", 0o755),
        ("empty-dir", 0o711),
    ] {
        fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o750)).unwrap();
}

/// What a tree entry is, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a tree, for comparison.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u32,
    pub mtime_ns: i64,
    pub target: Option<OsString>,
    pub content: Option<Vec<u8>>,
}

/// Reads a whole tree (root included as "."), keyed by raw relative path.
pub fn read_tree(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    out.insert(b".".to_vec(), read_entry(root));
    for rel in entries_under(root) {
        let entry = read_entry(&root.join(&rel));
        out.insert(rel.into_os_string().into_vec(), entry);
    }
    out
}

fn read_entry(p: &Path) -> Entry {
    let m = fs::symlink_metadata(p).unwrap();
    let ft = m.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    Entry {
        perm: m.mode() & 0o7777,
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        target: ft
            .is_symlink()
            .then(|| fs::read_link(p).unwrap().into_os_string()),
        content: ft.is_file().then(|| fs::read(p).unwrap()),
        kind,
    }
}

/// What to compare besides kind, content and symlink targets.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    /// Permission bits of files and directories.
    pub perm: bool,
    /// mtimes (ns) of regular files.
    pub file_mtime: bool,
    /// mtimes (ns) of directories.
    pub dir_mtime: bool,
}

/// Every difference between two trees, one line each.
pub fn diff_trees(
    expected: &BTreeMap<Vec<u8>, Entry>,
    actual: &BTreeMap<Vec<u8>, Entry>,
    what: Compare,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let show = |p: &[u8]| format!("{:?}", String::from_utf8_lossy(p));
    for (p, e) in expected {
        let Some(a) = actual.get(p) else {
            diffs.push(format!("{}: missing from the restored tree", show(p)));
            continue;
        };
        if e.kind != a.kind {
            diffs.push(format!(
                "{}: kind {:?}, expected {:?}",
                show(p),
                a.kind,
                e.kind
            ));
            continue;
        }
        if what.perm && e.kind != EntryKind::Symlink && e.perm != a.perm {
            diffs.push(format!(
                "{}: mode {:o}, expected {:o}",
                show(p),
                a.perm,
                e.perm
            ));
        }
        if e.target != a.target {
            diffs.push(format!(
                "{}: symlink target {:?}, expected {:?}",
                show(p),
                a.target,
                e.target
            ));
        }
        if let (Some(ec), Some(ac)) = (&e.content, &a.content) {
            if ec != ac {
                let at = ec.iter().zip(ac.iter()).position(|(x, y)| x != y);
                diffs.push(format!(
                    "{}: content differs ({} bytes restored, {} expected, first difference at {:?})",
                    show(p),
                    ac.len(),
                    ec.len(),
                    at
                ));
            }
        }
        let check_mtime = match e.kind {
            EntryKind::File => what.file_mtime,
            EntryKind::Dir => what.dir_mtime,
            _ => false,
        };
        if check_mtime && e.mtime_ns != a.mtime_ns {
            diffs.push(format!(
                "{}: mtime {} ns, expected {} ns",
                show(p),
                a.mtime_ns,
                e.mtime_ns
            ));
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            diffs.push(format!("{}: restored but not in the source tree", show(p)));
        }
    }
    diffs
}

/// Asserts that `actual` matches `expected` in kind, content, symlink
/// target, permission bits and file mtimes, listing every difference.
pub fn assert_same_tree(expected: &BTreeMap<Vec<u8>, Entry>, actual: &BTreeMap<Vec<u8>, Entry>) {
    let diffs = diff_trees(
        expected,
        actual,
        Compare {
            perm: true,
            file_mtime: true,
            dir_mtime: false,
        },
    );
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

/// Edits `repo/bk-repo.json` (of the format this bk writes), setting
/// `format` to `version`.
pub fn set_repo_format(repo: &Path, version: u64) {
    let path = repo.join("bk-repo.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        v["format"],
        bk::repo::FORMAT,
        "bk-repo.json before editing: {v}"
    );
    v["format"] = Value::from(version);
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Signed snapshots, deep verify, pause.

impl Sandbox {
    /// `bk-index write --repo R -r PUB [extra]` of sealed records, unchecked.
    pub fn index_write_with(&self, sealed: &[u8], extra: &[OsString]) -> Output {
        let mut a = args!["write"];
        a.extend(self.seal_args());
        a.extend(extra.iter().cloned());
        self.run("bk-index", &a, sealed)
    }

    /// Puts `data` into the repository as a snapshot named to be the
    /// latest, as bk names them (time, nonce, tag) but with a tag no
    /// backing-up host made (an attacker's); returns the name.
    pub fn plant_snapshot(&self, data: &[u8]) -> String {
        let name = "29991231T235959.999999Z-0a77ac3e0000000000000000.pgp".to_owned();
        assert!(bk::repo::snapshot_name::SnapshotName::parse(&name).is_some());
        fs::write(self.repo.join("snapshots").join(&name), data).unwrap();
        name
    }

    /// `gpg --encrypt` of `plain` to the sandbox's public key, by someone
    /// who holds only that public key (a fresh keyring). `sign_with`, an
    /// armored secret key, also signs it.
    pub fn gpg_encrypt_as_attacker(&self, plain: &[u8], sign_with: Option<&KeyPair>) -> Vec<u8> {
        let home = self.path(format!("attacker-gnupg-{}", rand_suffix()));
        fs::create_dir(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        let run = |a: &[&str], input: &[u8]| {
            let mut cmd = Command::new("gpg");
            cmd.env("GNUPGHOME", &home)
                .args([
                    "--batch",
                    "--no-tty",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                ])
                .args(a);
            let out = run_command(cmd, input, DEFAULT_TIMEOUT);
            assert_ok(&out, &format!("attacker gpg {a:?}"));
            out.stdout
        };
        run(&["--import"], &self.key.public);
        let mut a = vec![
            "--trust-model",
            "always",
            "-r",
            self.key.fingerprint.as_str(),
        ];
        if let Some(k) = sign_with {
            run(&["--import"], &k.secret);
            a.extend(["-u", k.fingerprint.as_str(), "--sign"]);
        }
        a.push("--encrypt");
        let out = run(&a, plain);
        kill_agent(&home);
        out
    }
}

// Lifecycle: locks, forget, prune.

/// This machine's boot id and this process's PID namespace
/// (`pid:[4026531836]`), which a bk lock records beside its pid.
pub fn boot_and_pid_ns() -> (String, String) {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("/proc boot_id");
    let ns = fs::read_link("/proc/self/ns/pid").expect("/proc/self/ns/pid");
    (boot.trim().to_owned(), ns.to_str().unwrap().to_owned())
}

/// The key bk seals this sandbox repository's lock files with, derived
/// from this machine's id key as bk derives it.
pub fn repo_lock_key(sb: &Sandbox) -> bk::repo::authkey::LockKey {
    let repo_id = sb.repo_id();
    let path = sb.data_home.join("bk").join(format!("{repo_id}.idkey"));
    let id_key = bk::repo::idkey::load_local(&path)
        .unwrap_or_else(|e| panic!("id key {}: {e}", path.display()))
        .unwrap_or_else(|| panic!("no id key at {}", path.display()));
    bk::repo::authkey::AuthKeys::derive(&id_key, &repo_id).lock_key()
}

/// What a lock of another bk process of this boot and PID namespace
/// holds: `kind` is "shared" or "exclusive"; `time` is both its `time`
/// and `refreshed`.
pub fn lock_info(
    kind: &str,
    program: &str,
    host: &str,
    pid: u32,
    time: std::time::SystemTime,
) -> bk::repo::lock::LockInfo {
    let stamp = humantime::format_rfc3339_seconds(time).to_string();
    let (boot_id, pid_ns) = boot_and_pid_ns();
    bk::repo::lock::LockInfo {
        kind: serde_json::from_value(Value::from(kind)).expect("shared or exclusive"),
        host: host.into(),
        pid,
        program: program.into(),
        time: stamp.clone(),
        refreshed: stamp,
        started: None,
        boot_id: Some(boot_id),
        pid_ns: Some(pid_ns),
    }
}

/// Writes the lock file `locks/NAME` of `kind` holding `bytes` into the
/// sandbox's repository directory, modified at `time`. Returns its path.
pub fn plant_lock_file(
    sb: &Sandbox,
    kind: bk::repo::lock::LockKind,
    bytes: impl FnOnce(&str) -> Vec<u8>,
    time: std::time::SystemTime,
) -> PathBuf {
    let dir = sb.repo.join("locks");
    fs::create_dir_all(&dir).unwrap();
    let name = bk::repo::lock::new_lock_name(kind);
    let path = dir.join(&name);
    fs::write(&path, bytes(&name)).unwrap();
    let ns = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    set_mtime_ns(&path, ns);
    path
}

/// Writes `info` as a lock file into the sandbox's repository, sealed as
/// bk seals it, modified at `time`. Returns its path.
pub fn plant_lock(
    sb: &Sandbox,
    info: &bk::repo::lock::LockInfo,
    time: std::time::SystemTime,
) -> PathBuf {
    let key = repo_lock_key(sb);
    plant_lock_file(
        sb,
        info.kind,
        |name| bk::repo::lock::seal_lock(&key, name, info),
        time,
    )
}

/// Writes a lock file into the sandbox's repository as another bk process
/// of this boot and PID namespace would: `kind` is "shared" or
/// "exclusive"; `time` is both the lock's `time` and `refreshed` and the
/// file's mtime. Returns its path.
pub fn write_lock(
    sb: &Sandbox,
    kind: &str,
    program: &str,
    host: &str,
    pid: u32,
    time: std::time::SystemTime,
) -> PathBuf {
    plant_lock(sb, &lock_info(kind, program, host, pid, time), time)
}

/// The lock files now in `repo/locks/` (temporary files left out).
pub fn lock_files(repo: &Path) -> BTreeSet<PathBuf> {
    files_under(&repo.join("locks"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().starts_with('.'))
        .collect()
}

/// The pid of a process that has just exited (for stale-lock tests).
pub fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("run true");
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Apparent size of a directory tree in bytes (`du -sb`).
pub fn du_bytes(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(dir).output().expect("du");
    assert!(out.status.success(), "du -sb {}", dir.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output")
}

// ---------------------------------------------------------------------------
// Helpers for the incremental, chunking and scale tests.

/// Writes `len` bytes of deterministic pseudo-random data (SplitMix64, the
/// same stream as [`pseudo_random`]) to `path`, streamed in 1 MiB pieces so
/// files of any size cost no memory; returns the content's hex SHA-256.
pub fn write_pseudo_random_file(path: &Path, seed: u64, len: u64) -> String {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let file = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut h = Sha256::new();
    let mut state = seed;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            word.copy_from_slice(&z.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        h.update(&buf[..n]);
        out.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
    out.flush().unwrap();
    hex::encode(h.finalize())
}

/// The last line of `stderr` that starts with `prefix` (a program's
/// summary line, e.g. `"bk-hash:"` for `bk-hash: N files seen, …`).
pub fn summary_line<'a>(stderr: &'a str, prefix: &str) -> &'a str {
    stderr
        .lines()
        .rev()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in stderr: {stderr}"))
}

/// The number written just before `label` in the summary line of
/// `prefix`: `summary_number(err, "bk-hash:", "hashed")` is 3 for
/// `bk-hash: 5 files seen, 2 reused unread, 3 hashed (10 bytes read), 0.1s`.
pub fn summary_number(stderr: &str, prefix: &str, label: &str) -> u64 {
    let line = summary_line(stderr, prefix);
    for (i, _) in line.match_indices(label) {
        let after = line[i + label.len()..].chars().next();
        if after.is_some_and(|c| c.is_alphanumeric()) {
            continue;
        }
        let before = line[..i].trim_end();
        let digits: String = before
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !digits.is_empty() && before.len() < line[..i].len() {
            return digits.parse().unwrap();
        }
    }
    panic!("no number before {label:?} in summary line {line:?}")
}

/// Runs `cmd` with stdin read from the file `stdin` and stdout written to
/// the file `stdout` (for streams too big to hold in the test's memory);
/// stderr is collected. Kills it (by its pid) and panics after `timeout`.
pub fn run_command_files(
    mut cmd: Command,
    stdin: &Path,
    stdout: &Path,
    timeout: Duration,
) -> Output {
    let input = fs::File::open(stdin).unwrap_or_else(|e| panic!("open {}: {e}", stdin.display()));
    let output =
        fs::File::create(stdout).unwrap_or_else(|e| panic!("create {}: {e}", stdout.display()));
    cmd.stdin(input).stdout(output).stderr(Stdio::piped());
    let described = format!("{cmd:?}");
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    let pid = child.id();
    let timed_out = AtomicBool::new(false);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let out = std::thread::scope(|s| {
        let timed_out = &timed_out;
        s.spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                timed_out.store(true, Ordering::SeqCst);
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        let out = child.wait_with_output().expect("waiting for child");
        let _ = done_tx.send(());
        out
    });
    assert!(
        !timed_out.load(Ordering::SeqCst),
        "{described} did not finish within {timeout:?} and was killed; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Sandbox {
    /// Like [`Sandbox::run_measured`], with stdin read from the file
    /// `stdin` and stdout written to the file `stdout`: returns the output
    /// (stdout empty) and the peak RSS in KiB.
    pub fn run_measured_files(
        &self,
        program: &str,
        args: &[OsString],
        stdin: &Path,
        stdout: &Path,
        timeout: Duration,
    ) -> (Output, u64) {
        let time = Path::new("/usr/bin/time");
        assert!(
            time.exists(),
            "/usr/bin/time is missing: install the `time` package (the memory tests need it)"
        );
        let report = self.path(format!("rss-{program}-{}.txt", rand_suffix()));
        let mut cmd = self.command("/usr/bin/time");
        cmd.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&report)
            .arg(assert_cmd::cargo::cargo_bin(program))
            .args(args);
        let out = run_command_files(cmd, stdin, stdout, timeout);
        let text = fs::read_to_string(&report).expect("time report");
        let kib = text
            .lines()
            .rev()
            .find_map(|l| l.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no RSS figure in /usr/bin/time output {text:?}"));
        (out, kib)
    }

    /// A command running `program` as `uid`:`gid` with no supplementary
    /// groups (`setpriv --reuid --regid --clear-groups`), with the
    /// sandbox's environment. A bk program runs from a hard link (or copy)
    /// in the sandbox's `bin/`, so the other user can execute it wherever
    /// the build directory is. The sandbox directory itself is made
    /// traversable (0755); what lies inside keeps its own permissions.
    pub fn command_as(&self, uid: u32, gid: u32, program: &str) -> Command {
        fs::set_permissions(&self.base, fs::Permissions::from_mode(0o755)).unwrap();
        let exe: PathBuf = if program.starts_with("bk-") {
            let bin = self.base.join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
            let exe = bin.join(program);
            if !exe.exists() {
                let built = assert_cmd::cargo::cargo_bin(program);
                if fs::hard_link(&built, &exe).is_err() {
                    fs::copy(&built, &exe).unwrap_or_else(|e| {
                        panic!("copy {} to {}: {e}", built.display(), exe.display())
                    });
                }
                fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
            }
            exe
        } else {
            PathBuf::from(program)
        };
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(exe);
        self.apply_env(&mut cmd);
        cmd
    }

    /// Runs `program` with `args` and `stdin` as `uid`:`gid` (see
    /// [`Sandbox::command_as`]).
    pub fn run_as(
        &self,
        uid: u32,
        gid: u32,
        program: &str,
        args: &[OsString],
        stdin: &[u8],
    ) -> Output {
        let mut cmd = self.command_as(uid, gid, program);
        cmd.args(args);
        run_command(cmd, stdin, DEFAULT_TIMEOUT)
    }

    /// The repository id, from `bk-repo.json`.
    pub fn repo_id(&self) -> String {
        let json = self
            .read_repo_file("bk-repo.json")
            .unwrap_or_else(|| panic!("no bk-repo.json in {:?}", self.repo_url()));
        let v: Value = serde_json::from_slice(&json).unwrap();
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("bk-repo.json without id: {v}"))
            .to_owned()
    }

    /// The directory of the local plaintext copies of the latest snapshot
    /// of each root: `$XDG_CACHE_HOME/bk/<repo id>/latest`.
    pub fn snapshot_cache_dir(&self) -> PathBuf {
        self.cache_home
            .join("bk")
            .join(self.repo_id())
            .join("latest")
    }

    /// bk-scan | bk-hash `hash_args` | bk-seal `seal_args` | bk-index write
    /// of `tree` (an incremental run when `hash_args` has `--reuse`), every
    /// stage checked for success; the stderr of bk-hash and bk-seal are in
    /// [`Run`].
    pub fn backup_with(&self, tree: &Path, hash_args: &[OsString], seal_args: &[OsString]) -> Run {
        let scan = self.run("bk-scan", &args![tree], b"");
        assert_ok(&scan, "bk-scan");
        let hashed = self.run("bk-hash", hash_args, &scan.stdout);
        assert_ok(&hashed, "bk-hash");
        let mut a = self.seal_args();
        a.extend(seal_args.iter().cloned());
        let sealed = self.run("bk-seal", &a, &hashed.stdout);
        assert_ok(&sealed, "bk-seal");
        let snapshot = self.index_write(&sealed.stdout);
        let seal_stderr = stderr(&sealed);
        Run {
            hash_stderr: stderr(&hashed),
            seal_stderr: seal_stderr.clone(),
            backup: Backup {
                scan: scan.stdout,
                hashed: hashed.stdout,
                sealed: sealed.stdout,
                seal_stderr,
                snapshot,
            },
        }
    }

    /// Every file of the local reuse cache and its bytes (temporary files
    /// of a run in progress left out): what a refused run must leave as it
    /// was.
    pub fn reuse_cache_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let dir = self.snapshot_cache_dir();
        files_under(&dir)
            .into_iter()
            .filter(|p| !p.to_string_lossy().starts_with('.'))
            .map(|p| {
                let bytes = fs::read(dir.join(&p)).unwrap();
                (p, bytes)
            })
            .collect()
    }

    /// `--reuse auto --repo R`: the arguments of an incremental bk-hash.
    pub fn reuse_auto_args(&self) -> Vec<OsString> {
        args!["--reuse", "auto", "--repo", self.repo_url()]
    }
}

/// One run of [`Sandbox::backup_with`].
#[derive(Debug, Clone)]
pub struct Run {
    pub backup: Backup,
    pub hash_stderr: String,
    pub seal_stderr: String,
}

impl Run {
    /// A number from bk-hash's summary line (see [`summary_number`]).
    pub fn hash_count(&self, label: &str) -> u64 {
        summary_number(&self.hash_stderr, "bk-hash:", label)
    }

    /// A number from bk-seal's summary line (see [`summary_number`]).
    pub fn seal_count(&self, label: &str) -> u64 {
        summary_number(&self.seal_stderr, "bk-seal:", label)
    }
}

// ---------------------------------------------------------------------------
// Packs and blobs (repository format 2): contents are blobs (complete
// OpenPGP messages) in pack files under `packs/`, each pack XORed with a
// keystream derived from the id key and ending in an encrypted header that
// lists its blobs. These helpers read packs as a backing-up host can.

/// Where a blob is stored, as its pack's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobAt {
    /// The pack file's path in the repository (`packs/ab/<64 hex>`).
    pub pack: String,
    /// Offset of the blob's first byte in the pack.
    pub offset: u64,
    /// Bytes of the blob (its OpenPGP message).
    pub length: u64,
    /// Bytes of plaintext it holds.
    pub size: u64,
}

/// The id key that `bk-seal --init` saved for repository `repo_id` under
/// `data_home` (`$XDG_DATA_HOME`).
pub fn local_id_key(data_home: &Path, repo_id: &str) -> bk::repo::idkey::IdKey {
    let path = data_home.join("bk").join(format!("{repo_id}.idkey"));
    bk::repo::idkey::load_local(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .unwrap_or_else(|| panic!("no id key at {}", path.display()))
}

/// The pack id a pack file's path names.
#[track_caller]
pub fn pack_id_of(rel: &str) -> bk::repo::id::PackId {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    bk::repo::id::PackId::parse(name).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The blobs the header of pack `rel` lists, from its stored `bytes`;
/// panics on a pack that does not decrypt under `keys`.
#[track_caller]
pub fn pack_header(
    keys: &bk::repo::pack::PackKeys,
    rel: &str,
    bytes: &[u8],
) -> Vec<(String, BlobAt)> {
    let mut plain = bytes.to_vec();
    keys.pack(&pack_id_of(rel)).cipher_at(0).apply(&mut plain);
    let footer_len = bk::repo::pack::FOOTER_LEN as usize;
    assert!(plain.len() >= footer_len, "{rel}: too short for a pack");
    let footer = String::from_utf8_lossy(&plain[plain.len() - footer_len..]).into_owned();
    let header_len: usize = footer
        .strip_prefix("bk-pack 2 ")
        .and_then(|f| f.get(..12))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{rel}: footer {footer:?}"));
    let end = plain.len() - footer_len;
    let header = &plain[end - header_len..end];
    let json = bk::crypto::blob::read_compressed_message(header, 1 << 30)
        .unwrap_or_else(|e| panic!("{rel}: header: {e}"));
    parse_records(&json)
        .iter()
        .map(|e| {
            let n = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{rel}: {e}"));
            (
                e["id"].as_str().unwrap().to_owned(),
                BlobAt {
                    pack: rel.to_owned(),
                    offset: n("offset"),
                    length: n("length"),
                    size: n("size"),
                },
            )
        })
        .collect()
}

/// Every blob of `packs` (path, stored bytes): id → each place it is.
pub fn blobs_of(
    keys: &bk::repo::pack::PackKeys,
    packs: impl Iterator<Item = (String, Vec<u8>)>,
) -> BTreeMap<String, Vec<BlobAt>> {
    let mut out: BTreeMap<String, Vec<BlobAt>> = BTreeMap::new();
    for (rel, bytes) in packs {
        for (id, at) in pack_header(keys, &rel, &bytes) {
            out.entry(id).or_default().push(at);
        }
    }
    out
}

/// The OpenPGP message of the blob at `at`, from its pack's stored bytes.
pub fn blob_message_in(keys: &bk::repo::pack::PackKeys, at: &BlobAt, pack: &[u8]) -> Vec<u8> {
    let range = at.offset as usize..(at.offset + at.length) as usize;
    let mut message = pack[range].to_vec();
    keys.pack(&pack_id_of(&at.pack))
        .cipher_at(at.offset)
        .apply(&mut message);
    message
}

/// A new pack under `keys` holding `blobs` (id, plaintext size, OpenPGP
/// message): its path in the repository and its bytes.
pub fn make_pack(
    keys: &bk::repo::pack::PackKeys,
    blobs: &[(&str, u64, &[u8])],
) -> (String, Vec<u8>) {
    let id = bk::repo::id::PackId::random();
    let mut builder = bk::repo::pack::PackBuilder::new(id, keys, Vec::new());
    for (blob, size, message) in blobs {
        let blob = bk::repo::id::ObjectId::parse(blob).expect("blob id");
        builder.add(blob, *size, &mut message.to_vec()).unwrap();
    }
    let (bytes, _) = builder.finish().unwrap();
    (id.key(), bytes)
}

/// What a snapshot with the records `records` (NDJSON) is made of, for
/// tests of snapshots an attacker plants: one piece holding the records
/// (its blob id under `id_key`, and its OpenPGP message to the public key
/// in `recipient`), and the plaintext of a root listing it (a header line
/// and a piece line, without the MAC line that only a backing-up host can
/// make). Storing the piece takes the id key (a pack's keystream is
/// derived from it), which an attacker lacks: the tests store it as only a
/// backing-up host could, so that what they test is the root, which anyone
/// holding the public key can encrypt.
pub fn forged_root_parts(
    id_key: &bk::repo::idkey::IdKey,
    recipient: &Path,
    records: &[u8],
    host: &str,
) -> (String, Vec<u8>, Vec<u8>) {
    let id = id_key
        .object_id(&sha256_hex(records))
        .expect("piece id")
        .to_string();
    let recipients =
        bk::crypto::Recipients::load(&[recipient.to_path_buf()]).expect("the public key");
    let message = recipients
        .blob_session()
        .and_then(|s| s.seal(records, true))
        .expect("seal the piece");
    // Lines that are not records count as records of no kind.
    let parsed: Vec<Value> = records
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
        .collect();
    let files: Vec<&Value> = parsed.iter().filter(|r| r["kind"] == "file").collect();
    let bytes: u64 = files.iter().filter_map(|r| r["size"].as_u64()).sum();
    let roots: BTreeSet<&str> = parsed.iter().filter_map(|r| r["root"].as_str()).collect();
    let header = serde_json::json!({
        "bk": "snapshot", "v": 2, "time": "2999-12-31T23:59:59.999999Z", "host": host,
        "roots": roots, "records": parsed.len(), "files": files.len(), "bytes": bytes,
    });
    let line = serde_json::json!({"piece": id, "size": records.len()});
    let root = format!("{header}\n{line}\n").into_bytes();
    (id, message, root)
}

/// Pack files of a directory repository (`packs/ab/<id>` → size),
/// temporary files left out.
pub fn pack_files_in(repo: &Path) -> BTreeMap<String, u64> {
    files_under(&repo.join("packs"))
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"."))
        })
        .map(|p| {
            let size = fs::metadata(repo.join("packs").join(&p)).unwrap().len();
            (format!("packs/{}", p.display()), size)
        })
        .collect()
}

/// Every blob of a directory repository whose id key is under
/// `data_home`.
pub fn blobs_in(repo: &Path, data_home: &Path) -> BTreeMap<String, Vec<BlobAt>> {
    let config: Value =
        serde_json::from_slice(&fs::read(repo.join("bk-repo.json")).unwrap()).unwrap();
    let repo_id = config["id"].as_str().unwrap().to_owned();
    let keys = bk::repo::pack::PackKeys::derive(&local_id_key(data_home, &repo_id), &repo_id);
    blobs_of(
        &keys,
        pack_files_in(repo).into_keys().map(|rel| {
            let bytes = fs::read(repo.join(&rel)).unwrap();
            (rel, bytes)
        }),
    )
}

/// Temporary files (`.tmp-*`) left under `repo/packs`.
pub fn leftover_tmp_packs(repo: &Path) -> Vec<PathBuf> {
    files_under(&repo.join("packs"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b".tmp-"))
        })
        .collect()
}
