//! Restoring a record stream into a directory, refusing anything that would
//! write outside it, and checking every byte against the record's SHA-256
//! before a file gets its real name.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::crypto::SecretKeys;
use crate::error::{io_cause, Error, Outcome, Result};
use crate::open::decrypt_object;
use crate::record::{Kind, Record};
use crate::repo::Repo;

const PROGRAM: &str = "bk-open";

/// Restores every record from `records` under `to` (created if needed).
/// Per-entry failures are reported and counted; the returned outcome gives
/// the exit status.
pub fn restore(
    repo: &Repo,
    key: &SecretKeys,
    to: &Path,
    records: impl Iterator<Item = Result<Record>>,
) -> Result<Outcome> {
    fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let base = fs::canonicalize(to).map_err(|e| Error::io(to, e))?;
    let mut r = Restorer {
        repo,
        key,
        base,
        as_root: nix::unistd::geteuid().is_root(),
        links: HashMap::new(),
        dirs: Vec::new(),
        outcome: Outcome::default(),
        warned_owner: false,
    };
    for rec in records {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                r.outcome.report(PROGRAM, &e);
                break;
            }
        };
        if let Err(e) = r.restore_one(&rec) {
            r.outcome.report(PROGRAM, &e);
        }
    }
    r.finish_dirs();
    Ok(r.outcome)
}

struct Restorer<'a> {
    repo: &'a Repo,
    key: &'a SecretKeys,
    base: PathBuf,
    as_root: bool,
    /// First restored path of each (dev, ino) with several links.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories whose metadata is applied last, after their children.
    dirs: Vec<(PathBuf, Record)>,
    outcome: Outcome,
    warned_owner: bool,
}

/// Checks a record path: relative, no `..`, no empty or `.` components
/// (except the root itself, "."). Returns `None` for the root.
pub fn safe_relative(path: &OsString) -> std::result::Result<Option<PathBuf>, String> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    if bytes == b"." {
        return Ok(None);
    }
    if bytes.is_empty() {
        return Err("empty path".into());
    }
    if bytes[0] == b'/' {
        return Err("absolute path".into());
    }
    if bytes.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    for comp in bytes.split(|&b| b == b'/') {
        match comp {
            b"" => return Err("path has an empty component".into()),
            b"." => return Err("path contains '.'".into()),
            b".." => return Err("path contains '..'".into()),
            _ => {}
        }
    }
    Ok(Some(PathBuf::from(path)))
}

impl Restorer<'_> {
    fn restore_one(&mut self, rec: &Record) -> Result<()> {
        let shown = rec.display_path();
        let raw = rec.path_os()?;
        let rel =
            safe_relative(&raw).map_err(|why| Error::fault(format!("refusing {shown}: {why}")))?;
        let Some(rel) = rel else {
            // The scanned root: its metadata goes on the target directory.
            if rec.kind == Kind::Dir {
                self.dirs.push((self.base.clone(), rec.clone()));
            }
            return Ok(());
        };
        self.make_parents(&rel, &shown)?;
        let dest = self.base.join(&rel);
        match rec.kind {
            Kind::Dir => self.restore_dir(&dest, rec, &shown),
            Kind::File => self.restore_file(&dest, rec, &shown),
            Kind::Symlink => self.restore_symlink(&dest, rec, &shown),
            Kind::Fifo | Kind::Char | Kind::Block => self.restore_special(&dest, rec, &shown),
            Kind::Socket => Ok(()),
        }
    }

    /// Creates missing parent directories of `rel`, refusing to go through
    /// anything that is not a real directory (a symlink planted by an
    /// earlier record, for instance).
    fn make_parents(&self, rel: &Path, shown: &str) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut cur = self.base.clone();
        for comp in parent.components() {
            cur.push(comp);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::fault(format!(
                        "refusing {shown}: {} is a symlink",
                        cur.display()
                    )))
                }
                Ok(_) => {
                    return Err(Error::fault(format!(
                        "refusing {shown}: {} is not a directory",
                        cur.display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(|e| Error::io(&cur, e))?;
                }
                Err(e) => return Err(Error::io(&cur, e)),
            }
        }
        Ok(())
    }

    fn restore_dir(&mut self, dest: &Path, rec: &Record, shown: &str) -> Result<()> {
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_non_dir(dest, shown)?;
                fs::create_dir(dest).map_err(|e| Error::io(dest, e))?;
            }
            Err(_) => fs::create_dir(dest).map_err(|e| Error::io(dest, e))?,
        }
        self.dirs.push((dest.to_path_buf(), rec.clone()));
        Ok(())
    }

    fn restore_file(&mut self, dest: &Path, rec: &Record, shown: &str) -> Result<()> {
        if rec.nlink > 1 {
            if let Some(first) = self.links.get(&(rec.dev, rec.ino)) {
                remove_non_dir(dest, shown)?;
                return fs::hard_link(first, dest).map_err(|e| Error::io(dest, e));
            }
        }
        let sha = rec.sha256.as_deref().ok_or_else(|| {
            Error::fault(format!(
                "refusing {shown}: file record has no sha256 to check against"
            ))
        })?;
        let objects = rec
            .objects
            .as_deref()
            .ok_or_else(|| Error::fault(format!("refusing {shown}: file record has no objects")))?;
        if let Ok(m) = fs::symlink_metadata(dest) {
            if m.is_dir() {
                return Err(Error::fault(format!(
                    "refusing {shown}: a directory is in the way"
                )));
            }
        }
        let dir = dest.parent().unwrap_or(&self.base);
        let tmp = TempPath::create(dir)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&tmp.0)
            .map_err(|e| Error::io(&tmp.0, e))?;
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(256 << 10, file),
            hasher: Sha256::new(),
            count: 0,
        };
        for obj in objects {
            decrypt_object(self.repo, self.key, &obj.id, &mut out).map_err(|e| e.context(shown))?;
        }
        out.inner.flush().map_err(|e| Error::io(dest, e))?;
        let count = out.count;
        let digest = hex::encode(out.hasher.finalize());
        if count != rec.size || digest != sha {
            let ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
            return Err(Error::repo(format!(
                "{shown}: content of object {} does not match the record's sha256 (swapped or corrupt object); not restored",
                ids.join(", ")
            )));
        }
        self.apply_meta(&tmp.0, rec, shown);
        fs::rename(&tmp.0, dest).map_err(|e| Error::io(dest, e))?;
        tmp.keep();
        if rec.nlink > 1 {
            self.links.insert((rec.dev, rec.ino), dest.to_path_buf());
        }
        Ok(())
    }

    fn restore_symlink(&mut self, dest: &Path, rec: &Record, shown: &str) -> Result<()> {
        let target = rec.target_os()?.ok_or_else(|| {
            Error::fault(format!("refusing {shown}: symlink record has no target"))
        })?;
        remove_non_dir(dest, shown)?;
        std::os::unix::fs::symlink(&target, dest).map_err(|e| Error::io(dest, e))?;
        self.apply_meta(dest, rec, shown);
        Ok(())
    }

    fn restore_special(&mut self, dest: &Path, rec: &Record, shown: &str) -> Result<()> {
        let kind = match rec.kind {
            Kind::Fifo => SFlag::S_IFIFO,
            Kind::Char => SFlag::S_IFCHR,
            _ => SFlag::S_IFBLK,
        };
        if kind != SFlag::S_IFIFO && !self.as_root {
            eprintln!("{PROGRAM}: {shown}: device not restored (needs root)");
            return Ok(());
        }
        remove_non_dir(dest, shown)?;
        let perm = Mode::from_bits_truncate(rec.mode & 0o7777);
        nix::sys::stat::mknod(dest, kind, perm, rec.rdev.unwrap_or(0))
            .map_err(|e| Error::io(dest, io::Error::from(e)))?;
        self.apply_meta(dest, rec, shown);
        Ok(())
    }

    /// Owner (as root), xattrs, mode and times. What cannot be set is said
    /// on stderr without failing the entry.
    fn apply_meta(&mut self, path: &Path, rec: &Record, shown: &str) {
        let is_link = rec.kind == Kind::Symlink;
        if self.as_root {
            if let Err(e) = fchownat(
                None,
                path,
                Some(Uid::from_raw(rec.uid)),
                Some(Gid::from_raw(rec.gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                eprintln!("{PROGRAM}: {shown}: cannot set owner: {e}");
            }
        } else if !self.warned_owner && (rec.uid != nix::unistd::getuid().as_raw()) {
            self.warned_owner = true;
            eprintln!("{PROGRAM}: not running as root: files get your own user and group, not the recorded owners");
        }
        for (name, value) in &rec.xattrs {
            let Ok(value) = B64.decode(value) else {
                eprintln!("{PROGRAM}: {shown}: xattr {name}: value is not base64; skipped");
                continue;
            };
            if let Err(e) = xattr::set(path, name, &value) {
                if !is_link {
                    eprintln!(
                        "{PROGRAM}: {shown}: cannot set xattr {name}: {}",
                        io_cause(&e)
                    );
                }
            }
        }
        if !is_link {
            let perm = fs::Permissions::from_mode(rec.mode & 0o7777);
            if let Err(e) = fs::set_permissions(path, perm) {
                eprintln!("{PROGRAM}: {shown}: cannot set mode: {}", io_cause(&e));
            }
        }
        let mtime = TimeSpec::new(
            rec.mtime_ns.div_euclid(1_000_000_000),
            rec.mtime_ns.rem_euclid(1_000_000_000),
        );
        if let Err(e) = utimensat(None, path, &mtime, &mtime, UtimensatFlags::NoFollowSymlink) {
            eprintln!("{PROGRAM}: {shown}: cannot set times: {e}");
        }
    }

    /// Applies directory metadata deepest first, so that setting a child's
    /// times does not disturb its parent's.
    fn finish_dirs(&mut self) {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (path, rec) in dirs {
            let shown = rec.display_path();
            self.apply_meta(&path, &rec, &shown);
        }
    }
}

/// Removes whatever non-directory is at `dest` (never following it).
fn remove_non_dir(dest: &Path, shown: &str) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Err(Error::fault(format!(
            "refusing {shown}: a directory is in the way"
        ))),
        Ok(_) => fs::remove_file(dest).map_err(|e| Error::io(dest, e)),
        Err(_) => Ok(()),
    }
}

/// A temporary file next to the destination, removed unless kept.
struct TempPath(PathBuf);

impl TempPath {
    fn create(dir: &Path) -> Result<TempPath> {
        loop {
            let mut rnd = [0u8; 8];
            rand::thread_rng().fill_bytes(&mut rnd);
            let path = dir.join(format!(".bk-restore-{}", hex::encode(rnd)));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(TempPath(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }

    fn keep(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// Hashes and counts what passes through to the file.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "",
            "a//b",
            "a/",
        ] {
            assert!(safe_relative(&OsString::from(bad)).is_err(), "{bad}");
        }
        assert_eq!(safe_relative(&OsString::from(".")).unwrap(), None);
        assert_eq!(
            safe_relative(&OsString::from("a/b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
    }
}
