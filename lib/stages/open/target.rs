//! Where restore sets an entry's metadata: a path, never following a final
//! symlink, or a file still open from writing its content, which needs no
//! path lookup at all (a restored file's temporary file gets its owner,
//! extended attributes, mode and times this way before it is renamed).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::stat::futimens;
use xattr::FileExt;

use crate::record::meta;

/// An entry whose owner, extended attributes, mode and times are set.
pub(crate) trait Target {
    fn set_owner(&self, uid: u32, gid: u32) -> io::Result<()>;
    fn set_xattr(&self, name: &str, value: &[u8]) -> io::Result<()>;
    fn remove_xattr(&self, name: &str) -> io::Result<()>;
    fn set_mode(&self, mode: u32) -> io::Result<()>;
    fn set_mtime(&self, mtime_ns: i64) -> io::Result<()>;
}

impl Target for Path {
    fn set_owner(&self, uid: u32, gid: u32) -> io::Result<()> {
        meta::set_owner(self, uid, gid)
    }

    fn set_xattr(&self, name: &str, value: &[u8]) -> io::Result<()> {
        xattr::set(self, name, value)
    }

    fn remove_xattr(&self, name: &str) -> io::Result<()> {
        xattr::remove(self, name)
    }

    fn set_mode(&self, mode: u32) -> io::Result<()> {
        meta::set_mode(self, mode)
    }

    fn set_mtime(&self, mtime_ns: i64) -> io::Result<()> {
        meta::set_times(self, mtime_ns)
    }
}

impl Target for File {
    fn set_owner(&self, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::fchown(self, Some(uid), Some(gid))
    }

    fn set_xattr(&self, name: &str, value: &[u8]) -> io::Result<()> {
        FileExt::set_xattr(self, name, value)
    }

    fn remove_xattr(&self, name: &str) -> io::Result<()> {
        FileExt::remove_xattr(self, name)
    }

    fn set_mode(&self, mode: u32) -> io::Result<()> {
        self.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
    }

    fn set_mtime(&self, mtime_ns: i64) -> io::Result<()> {
        let t = meta::timespec(mtime_ns);
        futimens(self.as_raw_fd(), &t, &t).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn open_files_and_paths_get_the_same_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let file = File::create(&a).unwrap();
        std::fs::write(&b, b"").unwrap();
        let mtime = 1_600_000_000_123_456_789;
        file.set_mode(0o640).unwrap();
        file.set_mtime(mtime).unwrap();
        b.as_path().set_mode(0o640).unwrap();
        b.as_path().set_mtime(mtime).unwrap();
        for p in [&a, &b] {
            let m = std::fs::metadata(p).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o640);
            assert_eq!(meta::time_ns(m.mtime(), m.mtime_nsec()), mtime);
        }
    }
}
