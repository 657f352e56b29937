//! File-system metadata → record fields: `lstat` results, owner and group
//! names, symlink targets and extended attributes.
//!
//! Kept apart from the walk in [`crate::stages::scan`] so the conversion from a
//! `stat` to a record can be tested on its own and reused (bk-open compares
//! against it, a later `--reuse` in bk-hash compares stat fields), and the
//! way back: the few system calls bk-open uses to put a record's owner,
//! mode and times on a restored entry without following symlinks.

use std::collections::{BTreeMap, HashMap};
use std::fs::{FileType, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use nix::fcntl::AtFlags;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Group, Uid, User};

use crate::record::{Kind, Record};

/// The record kind for a file type, or `None` for a type bk cannot describe
/// (there is none on Linux, but other systems have doors and whiteouts).
pub fn kind_of(ft: FileType) -> Option<Kind> {
    if ft.is_file() {
        Some(Kind::File)
    } else if ft.is_dir() {
        Some(Kind::Dir)
    } else if ft.is_symlink() {
        Some(Kind::Symlink)
    } else if ft.is_fifo() {
        Some(Kind::Fifo)
    } else if ft.is_char_device() {
        Some(Kind::Char)
    } else if ft.is_block_device() {
        Some(Kind::Block)
    } else if ft.is_socket() {
        Some(Kind::Socket)
    } else {
        None
    }
}

/// Nanoseconds since the epoch from a `stat` time split in seconds and
/// nanoseconds; saturates instead of wrapping for times ~292 years away.
pub fn time_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Copies the `stat` fields of `meta` into `rec` (everything but names,
/// symlink target and xattrs, which need more system calls).
pub fn fill_stat(rec: &mut Record, meta: &Metadata) {
    rec.size = meta.size();
    rec.mode = meta.mode();
    rec.uid = meta.uid();
    rec.gid = meta.gid();
    rec.mtime_ns = time_ns(meta.mtime(), meta.mtime_nsec());
    rec.ctime_ns = time_ns(meta.ctime(), meta.ctime_nsec());
    rec.ino = meta.ino();
    rec.dev = meta.dev();
    rec.nlink = meta.nlink();
    rec.rdev = matches!(rec.kind, Kind::Char | Kind::Block).then(|| meta.rdev());
}

/// Caches owner and group names by id: a tree has few distinct owners, and
/// each `getpwuid_r` may go to NSS (LDAP, files) at real cost.
#[derive(Debug, Default)]
pub struct NameCache {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl NameCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The user name for `uid`, or `None` when the id has no name here (or
    /// the lookup failed: a missing name is not worth failing a backup).
    pub fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    /// The group name for `gid`, or `None` when unknown.
    pub fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                Group::from_gid(Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }

    /// Sets `user` and `group` on a record from its `uid` and `gid`.
    pub fn fill_names(&mut self, rec: &mut Record) {
        rec.user = self.user(rec.uid);
        rec.group = self.group(rec.gid);
    }
}

/// Extended attributes of one entry, read without following symlinks.
#[derive(Debug, Default)]
pub struct Xattrs {
    /// Name → base64 value, ready for the record.
    pub values: BTreeMap<String, String>,
    /// Attributes left out, each with the reason (for a warning).
    pub skipped: Vec<String>,
}

/// Reads every extended attribute of `path` (not following a final
/// symlink), POSIX ACLs included. A file system without xattr support gives
/// an empty set; an attribute removed between listing and reading is left
/// out silently; a name that is not UTF-8 cannot be a record key and is
/// listed in `skipped`.
pub fn read_xattrs(path: &Path) -> io::Result<Xattrs> {
    let mut out = Xattrs::default();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if xattrs_unsupported(&e) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        let Some(key) = name.to_str() else {
            out.skipped.push(format!(
                "extended attribute {:?} has a non-UTF-8 name",
                name
            ));
            continue;
        };
        match xattr::get(path, &name) {
            Ok(Some(value)) => {
                out.values.insert(key.to_owned(), B64.encode(value));
            }
            Ok(None) => {}
            Err(e) if xattrs_unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// True for the errors meaning "this file system (or this kind of entry)
/// has no extended attributes", which are not worth a warning.
fn xattrs_unsupported(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Unsupported
        || err.raw_os_error() == Some(nix::libc::ENOTSUP)
        || err.raw_os_error() == Some(nix::libc::EOPNOTSUPP)
}

/// The extended attributes that hold POSIX ACLs. They travel like any
/// other attribute, but a restore applies them to a directory only after
/// the directory's entries exist (a default ACL would otherwise be inherited
/// by every entry created in it).
pub const ACL_XATTRS: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

/// Whether `name` is one of the POSIX ACL attributes.
pub fn is_acl(name: &str) -> bool {
    ACL_XATTRS.contains(&name)
}

/// A record's `mtime_ns` as a `TimeSpec` (negative times included).
pub fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Sets the access and modification times of `path` to `mtime_ns`, never
/// following a final symlink (so a symlink gets its own times).
pub fn set_times(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let t = timespec(mtime_ns);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// Sets the owner and group of `path` by number, never following a final
/// symlink.
pub fn set_owner(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    fchownat(
        None,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

/// Sets the permission bits (setuid, setgid and sticky included) of
/// `path`, which must not be a symlink (chmod would follow it).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
}

/// A path for one-line messages: as is when it is printable UTF-8, else
/// quoted with escapes, so a name with a newline cannot split a message and
/// non-UTF-8 bytes stay visible.
pub fn shown(path: &Path) -> String {
    match path.to_str() {
        Some(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("{:?}", path.as_os_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn time_ns_combines_and_handles_negative_times() {
        assert_eq!(time_ns(1, 5), 1_000_000_005);
        assert_eq!(time_ns(-1, 500_000_000), -500_000_000);
        assert_eq!(time_ns(i64::MAX / 2, 0), i64::MAX);
    }

    #[test]
    fn fill_stat_matches_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mut rec = Record::new(Kind::File, Path::new("f"));
        fill_stat(&mut rec, &meta);
        assert_eq!(rec.size, 5);
        assert_eq!(rec.mode, meta.mode());
        assert_eq!(rec.ino, meta.ino());
        assert_eq!(rec.nlink, 1);
        assert_eq!(rec.rdev, None);
        assert_eq!(
            rec.mtime_ns,
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
        );
    }

    #[test]
    fn kind_of_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("l")).unwrap();
        let meta = std::fs::symlink_metadata(dir.path().join("l")).unwrap();
        assert_eq!(kind_of(meta.file_type()), Some(Kind::Symlink));
    }

    #[test]
    fn names_are_cached_and_root_is_known() {
        let mut names = NameCache::new();
        assert_eq!(names.user(0).as_deref(), Some("root"));
        assert_eq!(names.user(0).as_deref(), Some("root"));
        assert_eq!(names.users.len(), 1);
        // An id nobody has: no name, and no error either.
        assert_eq!(names.group(3_999_999_999), None);
    }

    #[test]
    fn shown_quotes_odd_names_only() {
        assert_eq!(shown(Path::new("a b/c")), "a b/c");
        assert_eq!(shown(Path::new("a\nb")), "\"a\\nb\"");
        assert_eq!(
            shown(Path::new(OsStr::from_bytes(b"caf\xe9"))),
            "\"caf\\xE9\""
        );
    }

    #[test]
    fn xattrs_are_read_or_silently_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        match xattr::set(&p, "user.bk", b"\x00\xff") {
            Ok(()) => {
                let x = read_xattrs(&p).unwrap();
                assert_eq!(x.values.get("user.bk").map(String::as_str), Some("AP8="));
            }
            // tmpfs without user xattrs: reading must still work.
            Err(_) => assert!(read_xattrs(&p).is_ok()),
        }
    }
}
