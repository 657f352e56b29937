//! The sandbox of the restore, hostile-repository and fault tests: a
//! directory repository, its own HOME, XDG directories and GnuPG home, one
//! throwaway key made by the real gpg ([`keys`]), runners for the programs,
//! and the backup pipeline run one stage at a time (scan, hash, seal, index
//! write) so tests can interfere between stages or run a stage as nobody.
//!
//! It is simpler than [`super::Sandbox`] (one key, no S3, raw
//! `std::process::Command`s); tests use one or the other:
//! `use common::stepwise::*;`.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use bk::record::Record;
use tempfile::TempDir;

// Not every test binary uses every one of these.
#[allow(unused_imports)]
pub use super::{
    forged_root_parts, have_root, pack_header, records, restored, sha256_hex, stderr, BlobAt,
    FAULTS, IO, NOBODY, OK, PARTIAL, REPO,
};

/// A key pair exported by gpg once per test binary.
pub struct Keys {
    _dir: TempDir,
    pub public: PathBuf,
    pub secret: PathBuf,
    pub fingerprint: String,
    /// The GnuPG home holding the key (for encrypting with gpg itself).
    pub gnupghome: PathBuf,
}

/// Runs gpg in `home` and returns its stdout; panics with its stderr.
pub fn gpg(home: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .env("HOME", home)
        .args(["--batch", "--no-tty", "--quiet"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run gpg (install gnupg)");
    assert!(
        out.status.success(),
        "gpg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The test key (Ed25519 + Curve25519 encryption subkey, no passphrase).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("bk-keys-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("gnupg");
        fs::create_dir(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        let q = ["--pinentry-mode", "loopback", "--passphrase", ""];
        let mut a = q.to_vec();
        a.extend([
            "--quick-gen-key",
            "bk restore test <t@example.invalid>",
            "future-default",
            "default",
            "never",
        ]);
        gpg(&home, &a);
        let listing = String::from_utf8(gpg(&home, &["--with-colons", "--list-keys"])).unwrap();
        let fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned();
        let public = dir.path().join("public.asc");
        let secret = dir.path().join("secret.asc");
        fs::write(&public, gpg(&home, &["--export", "--armor"])).unwrap();
        let mut a = q.to_vec();
        a.extend(["--export-secret-keys", "--armor"]);
        fs::write(&secret, gpg(&home, &a)).unwrap();
        // Readable by the unprivileged user of the non-root tests.
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &home)
            .args(["--kill", "gpg-agent"])
            .status();
        Keys {
            _dir: dir,
            public,
            secret,
            fingerprint,
            gnupghome: home,
        }
    })
}

/// One test's private world: HOME, XDG directories, a repository path.
pub struct Sandbox {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub home: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("bk-test-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        Sandbox {
            repo: dir.path().join("repo"),
            home,
            dir,
        }
    }

    /// A path inside the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command for program `name` (a bk binary) with the sandbox's
    /// environment and no BK_* variables from outside.
    pub fn cmd(&self, name: &str) -> Command {
        self.cmd_with(Command::new(bin(name)))
    }

    /// Like [`Sandbox::cmd`], run as nobody:nogroup through `setpriv`.
    pub fn cmd_as_nobody(&self, name: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin(name));
        self.cmd_with(c)
    }

    fn cmd_with(&self, mut c: Command) -> Command {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("BK_") {
                c.env_remove(k);
            }
        }
        c.env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join("data"))
            .env("XDG_CACHE_HOME", self.home.join("cache"))
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("GNUPGHOME", self.home.join("gnupg"))
            .env("BK_CONFIG", "/dev/null");
        c
    }

    /// `bk-scan PATH`.
    pub fn scan(&self, src: &Path) -> Output {
        run(self.cmd("bk-scan").arg(src), b"")
    }

    /// `bk-hash -j 2`.
    pub fn hash(&self, records: &[u8]) -> Output {
        run(self.cmd("bk-hash").args(["-j", "2"]), records)
    }

    /// `bk-seal --init` into the sandbox repository.
    pub fn seal(&self, records: &[u8]) -> Output {
        run(&mut self.seal_cmd(), records)
    }

    /// The bk-seal command line (for tests that need to kill it).
    pub fn seal_cmd(&self) -> Command {
        let mut c = self.cmd("bk-seal");
        c.arg("--init")
            .arg("--repo")
            .arg(&self.repo)
            .arg("-r")
            .arg(&keys().public);
        c
    }

    /// `bk-index write`.
    pub fn index_write(&self, records: &[u8]) -> Output {
        run(
            self.cmd("bk-index")
                .args(["write", "--repo"])
                .arg(&self.repo)
                .arg("-r")
                .arg(&keys().public),
            records,
        )
    }

    /// `bk-index show latest`, expecting success.
    pub fn show_latest(&self) -> Vec<u8> {
        let out = run(
            self.cmd("bk-index")
                .args(["show", "latest", "--repo"])
                .arg(&self.repo)
                .arg("--key")
                .arg(&keys().secret),
            b"",
        );
        ok(&out, "bk-index show");
        out.stdout
    }

    /// `bk-verify --read-data` on `records`.
    pub fn verify(&self, records: &[u8]) -> Output {
        run(
            self.cmd("bk-verify")
                .args(["--read-data", "--repo"])
                .arg(&self.repo)
                .arg("--key")
                .arg(&keys().secret),
            records,
        )
    }

    /// `bk-open --to DEST` with `records` on stdin: each root goes to
    /// [`restored`]`(DEST, ROOT)`, records without a root to `DEST/PATH`.
    pub fn restore(&self, records: &[u8], dest: &Path) -> Output {
        run(&mut self.restore_cmd(self.cmd("bk-open"), dest), records)
    }

    /// Adds the restore arguments to a bk-open command.
    pub fn restore_cmd(&self, mut c: Command, dest: &Path) -> Command {
        c.arg("--repo")
            .arg(&self.repo)
            .arg("--key")
            .arg(&keys().secret)
            .arg("--to")
            .arg(dest);
        c
    }

    /// `bk-open --object ID` (plaintext on stdout).
    pub fn open_object(&self, id: &str) -> Output {
        run(
            self.cmd("bk-open")
                .arg("--repo")
                .arg(&self.repo)
                .arg("--key")
                .arg(&keys().secret)
                .args(["--object", id]),
            b"",
        )
    }

    /// Scan, hash, seal (creating the repository) and index `src`,
    /// expecting every stage to succeed; returns the sealed records.
    pub fn backup(&self, src: &Path) -> Vec<u8> {
        let scanned = self.scan(src);
        ok(&scanned, "bk-scan");
        let hashed = self.hash(&scanned.stdout);
        ok(&hashed, "bk-hash");
        let sealed = self.seal(&hashed.stdout);
        ok(&sealed, "bk-seal");
        ok(&self.index_write(&sealed.stdout), "bk-index write");
        sealed.stdout
    }

    /// Every pack file under its real name: `packs/ab/<id>` → size.
    pub fn pack_files(&self) -> std::collections::BTreeMap<String, u64> {
        super::pack_files_in(&self.repo)
    }

    /// Every blob of every pack, from the packs' headers read with the
    /// local id key: id → each place it is stored.
    pub fn blobs(&self) -> std::collections::BTreeMap<String, Vec<super::BlobAt>> {
        super::blobs_in(&self.repo, &self.home.join("data"))
    }

    /// Where blob `id` is; panics unless exactly one pack holds it.
    #[track_caller]
    pub fn blob_at(&self, id: &str) -> super::BlobAt {
        let places = self.blobs().remove(id).unwrap_or_default();
        assert_eq!(places.len(), 1, "blob {id} stored {places:?}");
        places.into_iter().next().unwrap()
    }

    /// The repository id, from `bk-repo.json`.
    pub fn repo_id(&self) -> String {
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(self.repo.join("bk-repo.json")).unwrap()).unwrap();
        config["id"].as_str().unwrap().to_owned()
    }

    /// The id key `bk-seal --init` saved for the repository.
    pub fn id_key(&self) -> bk::repo::idkey::IdKey {
        super::local_id_key(&self.home.join("data"), &self.repo_id())
    }

    /// The keys of the repository's packs (from the local id key).
    pub fn pack_keys(&self) -> bk::repo::pack::PackKeys {
        bk::repo::pack::PackKeys::derive(&self.id_key(), &self.repo_id())
    }

    /// The plaintext of a snapshot root whose records are `records`, its
    /// piece stored in a pack of its own (see [`super::forged_root_parts`]).
    pub fn forged_root(&self, records: &[u8], host: &str) -> Vec<u8> {
        let (id, message, root) =
            super::forged_root_parts(&self.id_key(), &keys().public, records, host);
        self.write_pack(&[(&id, records.len() as u64, &message)]);
        root
    }

    /// The OpenPGP message of blob `id`, taken out of its pack.
    pub fn blob_message(&self, id: &str) -> Vec<u8> {
        let at = self.blob_at(id);
        let pack = fs::read(self.repo.join(&at.pack)).unwrap();
        super::blob_message_in(&self.pack_keys(), &at, &pack)
    }

    /// Writes a pack under the repository's keys holding `blobs` (id,
    /// plaintext size, OpenPGP message); returns its path.
    pub fn write_pack(&self, blobs: &[(&str, u64, &[u8])]) -> PathBuf {
        let (rel, bytes) = super::make_pack(&self.pack_keys(), blobs);
        let path = self.repo.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }

    /// Temporary files left in the repository (names starting with '.').
    pub fn repo_temp_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.repo, &mut |p| {
            if p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            {
                out.push(p.to_path_buf());
            }
        });
        out
    }
}

/// Calls `f` on every entry under `dir` (not following symlinks).
pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        f(&p);
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, f);
        }
    }
}

/// Path of a bk binary built for these tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    exe.parent().unwrap().parent().unwrap().join(name)
}

/// Runs `cmd` with `input` on stdin (written from a thread, so a program
/// that writes a lot before reading cannot deadlock).
pub fn run(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Panics unless `out` is a success, showing its stderr.
pub fn ok(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The exit code (panics on death by signal).
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

/// Records back to NDJSON.
pub fn ndjson(recs: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in recs {
        out.extend(r.to_line());
        out.push(b'\n');
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Changes the owner of `path` (not following symlinks).
pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// Sets the mtime of `path` (not following symlinks) to `ns`.
pub fn set_mtime(path: &Path, ns: i64) {
    bk::record::meta::set_times(path, ns).unwrap();
}

/// `chown -R nobody:nogroup`.
pub fn chown_nobody(dir: &Path) {
    lchown(dir, NOBODY, NOBODY);
    walk(dir, &mut |p| lchown(p, NOBODY, NOBODY));
}

/// Runs `rsync -aHAXn --itemize-changes SRC/ DEST/` and returns what it
/// printed (nothing when DEST is an exact copy of SRC).
pub fn rsync_differences(src: &Path, dest: &Path) -> String {
    let mut s = src.as_os_str().to_owned();
    s.push("/");
    let mut d = dest.as_os_str().to_owned();
    d.push("/");
    let out = Command::new("rsync")
        .args(["-aHAXn", "--itemize-changes"])
        .arg(&s)
        .arg(&d)
        .output()
        .expect("run rsync (install rsync)");
    assert!(
        out.status.success(),
        "rsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Number of 512-byte blocks allocated to `path`.
pub fn blocks(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().blocks()
}

/// A temporary mount (tmpfs of `size`) unmounted on drop.
pub struct Mount(pub PathBuf);

impl Mount {
    pub fn tmpfs(at: &Path, size: &str) -> Mount {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("tmpfs")
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs on {} failed", at.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `OsStr` from bytes.
pub fn os(b: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(b)
}
