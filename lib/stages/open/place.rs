//! Where a restored file is made and how it gets its real name: a private
//! temporary file next to its destination, and once its content is
//! written and checked, its owner, extended attributes, mode and times
//! (set through the open file, with no path lookup), then a rename onto
//! the destination. The workers do this for the files they fill, so the
//! file-system work of many small files is spread over every core.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::guards::TempPath;
use super::target::Target;

/// What a file gets before its real name, and that name.
#[derive(Debug)]
pub(crate) struct Placing {
    /// The directory it is made in (the destination's).
    pub(crate) dir: PathBuf,
    pub(crate) dest: PathBuf,
    /// Owner and group, set only when running as root.
    pub(crate) owner: Option<(u32, u32)>,
    /// Extended attributes (ACLs included), decoded.
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
    /// Inherited ACLs to remove.
    pub(crate) strip: Vec<&'static str>,
    pub(crate) mode: u32,
    pub(crate) mtime_ns: i64,
}

/// Metadata that could not be set: the file is restored all the same, and
/// the restorer reports it.
#[derive(Debug)]
pub(crate) struct MetaFault {
    /// "owner", "mode", "times", or the name of an extended attribute.
    pub(crate) what: Meta,
    pub(crate) err: io::Error,
}

/// Which piece of metadata a [`MetaFault`] is about.
#[derive(Debug)]
pub(crate) enum Meta {
    Owner,
    Xattr(String),
    Mode,
    Times,
}

/// Why a file did not get its name.
#[derive(Debug)]
pub(crate) enum NameError {
    /// A directory is at the destination.
    DirInTheWay,
    /// The rename failed.
    Io(io::Error),
}

/// Makes the temporary file that `placing`'s content is written into.
pub(crate) fn create(placing: &Placing) -> io::Result<(TempPath, File)> {
    TempPath::create(&placing.dir)
}

/// Sets `placing`'s metadata on the written and checked `file`, then
/// renames its temporary file onto the destination. Returns the metadata
/// that could not be set.
pub(crate) fn place(
    tmp: TempPath,
    file: File,
    placing: &Placing,
) -> Result<Vec<MetaFault>, NameError> {
    let faults = set_meta(&file, placing);
    drop(file);
    rename(&tmp.0, &placing.dest)?;
    tmp.keep();
    Ok(faults)
}

/// Owner, extended attributes, mode and times, in that order: a change of
/// owner clears set-id bits, and every change before the times moves the
/// ctime, not the mtime.
fn set_meta(file: &File, p: &Placing) -> Vec<MetaFault> {
    let mut faults = Vec::new();
    let mut check = |what: Meta, r: io::Result<()>| {
        if let Err(err) = r {
            faults.push(MetaFault { what, err });
        }
    };
    if let Some((uid, gid)) = p.owner {
        check(Meta::Owner, file.set_owner(uid, gid));
    }
    for (name, value) in &p.xattrs {
        check(Meta::Xattr(name.clone()), file.set_xattr(name, value));
    }
    for name in &p.strip {
        let _ = file.remove_xattr(name);
    }
    check(Meta::Mode, file.set_mode(p.mode));
    check(Meta::Times, file.set_mtime(p.mtime_ns));
    faults
}

/// Renames `from` onto `dest`, which may be a file or symlink (replaced)
/// but not a directory.
fn rename(from: &Path, dest: &Path) -> Result<(), NameError> {
    std::fs::rename(from, dest).map_err(|e| match e.raw_os_error() {
        Some(libc::EISDIR) => NameError::DirInTheWay,
        _ => NameError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::record::meta;

    fn placing(dir: &Path, name: &str) -> Placing {
        Placing {
            dir: dir.to_path_buf(),
            dest: dir.join(name),
            owner: None,
            xattrs: vec![("user.bk-test".into(), b"v".to_vec())],
            strip: vec![],
            mode: 0o640,
            mtime_ns: 1_600_000_000_123_456_789,
        }
    }

    #[test]
    fn files_get_their_metadata_then_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = placing(dir.path(), "f");
        let (tmp, mut file) = create(&p).unwrap();
        file.write_all(b"content").unwrap();
        let faults = place(tmp, file, &p).unwrap();
        // Some file systems (tmpfs before 6.6) take no user xattrs.
        assert!(
            faults.iter().all(|f| matches!(f.what, Meta::Xattr(_))),
            "{faults:?}"
        );
        assert_eq!(fs::read(&p.dest).unwrap(), b"content");
        let m = fs::metadata(&p.dest).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(meta::time_ns(m.mtime(), m.mtime_nsec()), p.mtime_ns);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"], "no temporary file left");
    }

    #[test]
    fn a_directory_in_the_way_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = placing(dir.path(), "d");
        fs::create_dir(&p.dest).unwrap();
        fs::write(p.dest.join("inside"), b"x").unwrap();
        let (tmp, file) = create(&p).unwrap();
        assert!(matches!(place(tmp, file, &p), Err(NameError::DirInTheWay)));
        assert!(p.dest.join("inside").exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
