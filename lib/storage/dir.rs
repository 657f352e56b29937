//! The directory backend: keys are files under the repository directory.
//!
//! Every file is written under a temporary name (`.tmp-<rand>`) in its
//! final directory and renamed into place only after its bytes are durable
//! (one `syncfs` per batch, an fsync per file where that is unavailable), so
//! a crash never leaves a half-written file under a real name.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Commit, Entry, Finished, KeyReader, Stat, Storage, Upload};
use crate::sys::fs::{create_private_file, sync_dir};

/// Prefix of temporary files; never a valid object or snapshot name.
pub const TMP_PREFIX: &str = ".tmp-";

/// A repository directory.
#[derive(Debug)]
pub struct DirStorage {
    root: PathBuf,
    shown: String,
    /// The repository directory, open once it exists: lookups of keys
    /// relative to it skip walking the root's path again for every object
    /// (a re-run looks up every object it names, twice).
    root_dir: std::sync::OnceLock<std::os::fd::OwnedFd>,
}

impl DirStorage {
    /// The storage rooted at `root` (which need not exist yet).
    pub fn new(root: &Path) -> DirStorage {
        DirStorage {
            root: root.to_path_buf(),
            shown: root.display().to_string(),
            root_dir: std::sync::OnceLock::new(),
        }
    }

    /// Where `key` is found by the `*at` system calls: relative to the open
    /// repository directory, or by its full path while there is none.
    fn at<'k>(&self, key: &'k str) -> (Option<std::os::fd::RawFd>, std::borrow::Cow<'k, Path>) {
        match self.root_dir().filter(|_| !key.is_empty()) {
            Some(dir) => (Some(dir), std::borrow::Cow::Borrowed(Path::new(key))),
            None => (None, std::borrow::Cow::Owned(self.path(key))),
        }
    }

    /// The open repository directory; `None` while it does not exist (or
    /// cannot be opened: then keys are looked up by their full path).
    fn root_dir(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::{AsRawFd, OwnedFd};
        if let Some(fd) = self.root_dir.get() {
            return Some(fd.as_raw_fd());
        }
        let dir = File::open(&self.root).ok()?;
        if !dir.metadata().ok()?.is_dir() {
            return None;
        }
        Some(self.root_dir.get_or_init(|| OwnedFd::from(dir)).as_raw_fd())
    }

    /// Opens `key` for reading if it is a regular file (following
    /// symlinks), with its size then; `None` if it does not exist. Anything
    /// else where a key should be (a FIFO, whose open or read would wait
    /// for a writer forever; a device such as `/dev/zero`, which has no
    /// end; a directory) is an error naming what it is. The type is looked
    /// at before opening (opening a device can have effects of its own)
    /// and again on the open file, which is opened non-blocking so that a
    /// FIFO put there in between cannot block the open either.
    fn open_regular(&self, key: &str) -> io::Result<Option<(File, u64)>> {
        use std::os::unix::fs::MetadataExt;
        if self.stat(key)?.is_none() {
            return Ok(None);
        }
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(self.path(key))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(not_regular(meta.mode()));
        }
        clear_nonblock(&file)?;
        Ok(Some((file, meta.len())))
    }

    fn path(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(key)
        }
    }

    /// Flushes the repository's whole file system; false where `syncfs`
    /// is not available.
    fn syncfs(&self) -> bool {
        File::open(&self.root)
            .and_then(|d| {
                use std::os::fd::AsRawFd;
                nix::unistd::syncfs(d.as_raw_fd()).map_err(io::Error::from)
            })
            .is_ok()
    }
}

impl Storage for DirStorage {
    fn location(&self) -> &str {
        &self.shown
    }

    fn describe(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn stat(&self, key: &str) -> io::Result<Option<Stat>> {
        use nix::sys::stat::{fstatat, SFlag};
        let (dir, path) = self.at(key);
        match fstatat(dir, path.as_ref(), nix::fcntl::AtFlags::empty()) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG => {
                Ok(Some(Stat {
                    size: st.st_size as u64,
                    modified: modified_time(st.st_mtime, st.st_mtime_nsec),
                }))
            }
            Ok(st) => Err(not_regular(st.st_mode)),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn open(&self, key: &str) -> io::Result<Option<KeyReader>> {
        let Some((file, size)) = self.open_regular(key)? else {
            return Ok(None);
        };
        let buffer = (size as usize).clamp(8 << 10, 256 << 10);
        Ok(Some(KeyReader(Box::new(BufReader::with_capacity(
            buffer,
            io::Read::take(file, size),
        )))))
    }

    fn open_range(&self, key: &str, offset: u64, len: u64) -> io::Result<Option<KeyReader>> {
        use std::io::{Read, Seek};
        let Some((mut file, size)) = self.open_regular(key)? else {
            return Ok(None);
        };
        let start = offset.min(size);
        file.seek(io::SeekFrom::Start(start))?;
        let len = len.min(size - start);
        let buffer = (len as usize).clamp(4 << 10, 256 << 10);
        Ok(Some(KeyReader(Box::new(BufReader::with_capacity(
            buffer,
            file.take(len),
        )))))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        Ok(list_dir(&self.path(dir))?
            .into_iter()
            .filter(|e| !e.name.starts_with('.'))
            .collect())
    }

    fn create(&self, key: &str) -> io::Result<Box<dyn Upload>> {
        let dest = self.path(key);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        let (tmp, file) = match create_private_file(&dir, TMP_PREFIX) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                create_private_file(&dir, TMP_PREFIX)?
            }
            Err(e) => return Err(e),
        };
        Ok(Box::new(DirUpload {
            key: key.to_owned(),
            tmp,
            out: Some(BufWriter::with_capacity(256 << 10, file)),
            written: 0,
        }))
    }

    fn commit(&self, batch: Vec<Finished>, mode: Commit) -> io::Result<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // One file: its own fsync is cheaper than flushing the file system.
        let synced = batch.len() > 1 && self.syncfs();
        if !synced {
            for f in &batch {
                if let Some(StagedFile(tmp)) = f.staged_ref() {
                    File::open(tmp).and_then(|f| f.sync_all())?;
                }
            }
        }
        let mut dirs = BTreeSet::new();
        let mut created = Vec::with_capacity(batch.len());
        for mut f in batch {
            let Some(mut staged) = f.take_staged::<StagedFile>() else {
                created.push(true);
                continue;
            };
            let dest = self.path(&f.key);
            // On an error, dropping `staged` removes the temporary file.
            created.push(match mode {
                Commit::KeepExisting => rename_noreplace(&staged.0, &dest)?,
                Commit::Replace => fs::rename(&staged.0, &dest).map(|_| true)?,
            });
            // Renamed (or, for a key kept, removed): nothing left to remove.
            staged.0 = PathBuf::new();
            if let Some(d) = dest.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        // The renames must be durable too: one more syncfs covers every
        // directory at once; where that is not available, fsync each.
        if !(synced && self.syncfs()) {
            for d in dirs {
                sync_dir(&d)?;
            }
        }
        Ok(created)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn touch(&self, key: &str) {
        use nix::sys::stat::{utimensat, UtimensatFlags};
        use nix::sys::time::TimeSpec;
        let (dir, path) = self.at(key);
        let _ = utimensat(
            dir,
            path.as_ref(),
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::UTIME_NOW,
            UtimensatFlags::FollowSymlink,
        );
    }

    fn append(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let fresh_dir = !dir.exists();
        fs::create_dir_all(&dir)?;
        let new_file = !path.exists();
        // Never through a symlink, never blocking on a FIFO put there.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            use std::os::unix::fs::MetadataExt;
            return Err(not_regular(meta.mode()));
        }
        clear_nonblock(&file)?;
        // Whole lines or nothing: a write cut short (a full disk) or not
        // made durable is cut off again, so the file never ends in part of
        // a line. Shrinking a file frees space, so this works on a full
        // disk too.
        let before = meta.len();
        if let Err(e) = file.write_all(bytes).and_then(|_| file.sync_data()) {
            let _ = file.set_len(before).and_then(|_| file.sync_data());
            return Err(e);
        }
        if new_file {
            sync_dir(&dir)?;
        }
        if fresh_dir {
            sync_dir(dir.parent().unwrap_or(&self.root))?;
        }
        Ok(true)
    }

    fn leftovers(&self, dir: &str) -> io::Result<Vec<Entry>> {
        Ok(list_dir(&self.path(dir))?
            .into_iter()
            .filter(|e| !e.is_dir && e.name.starts_with(TMP_PREFIX))
            .collect())
    }
}

/// Clears `O_NONBLOCK` on a file opened with it to be safe from FIFOs
/// (regular files ignore it today; reads and writes are then the ordinary
/// blocking ones whatever the file system).
fn clear_nonblock(file: &File) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let flags = fcntl(file.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// The error for a key that is not a regular file, saying what it is.
fn not_regular(mode: u32) -> io::Error {
    use nix::sys::stat::SFlag;
    let what = match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "of an unknown type",
    };
    io::Error::other(format!("not a regular file ({what}); refusing to read it"))
}

/// Every entry of a directory with its metadata, sorted by name; a missing
/// directory is empty. Names that are not UTF-8 are never bk's and are
/// left out.
fn list_dir(dir: &Path) -> io::Result<Vec<Entry>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let meta = match fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            // Removed between the listing and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // A symlink to a regular file is listed with that file's size, as
        // reading it follows the link (never into a directory: a walk
        // does not descend through links).
        let target = meta
            .file_type()
            .is_symlink()
            .then(|| fs::metadata(entry.path()).ok())
            .flatten()
            .filter(|m| m.is_file());
        let size = match &target {
            Some(t) => t.len(),
            None if meta.is_file() => meta.len(),
            None => 0,
        };
        out.push(Entry {
            name,
            is_dir: meta.is_dir(),
            stat: Stat {
                size,
                modified: meta.modified().ok(),
            },
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A file being written under a temporary name.
struct DirUpload {
    key: String,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
}

impl Write for DirUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.out {
            Some(w) => w.write(buf)?,
            None => return Err(io::Error::other("upload already finished")),
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Upload for DirUpload {
    fn finish(mut self: Box<Self>) -> io::Result<Finished> {
        if let Some(w) = self.out.take() {
            let file = w.into_inner().map_err(|e| e.into_error())?;
            if self.written >= EARLY_WRITEBACK_FROM {
                start_writeback(&file);
            }
        }
        Ok(Finished::staged(
            std::mem::take(&mut self.key),
            StagedFile(std::mem::take(&mut self.tmp)),
        ))
    }
}

/// A finished upload's temporary file, removed if it is dropped before
/// [`DirStorage`] renames it into place.
struct StagedFile(PathBuf);

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

impl Drop for DirUpload {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Files at least this large start going to disk as soon as they are
/// written.
const EARLY_WRITEBACK_FROM: u64 = 1 << 20;

/// Asks the kernel to start writing `file`'s dirty pages now, without
/// waiting for them. A batch is made durable by one `syncfs` at its end;
/// left to the kernel's own timing, the chunks of a large backup are still
/// being written then, and that `syncfs` keeps the run waiting with the
/// cores idle. Small files are left alone: one writeback each would cost more than
/// the batched one. Best effort: durability still comes from the `syncfs`.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps
    // open for the duration of the call; it changes no memory of ours.
    unsafe {
        nix::libc::sync_file_range(file.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// A file's modification time from `stat` fields; `None` if it does not
/// fit a `SystemTime`.
fn modified_time(secs: i64, nanos: i64) -> Option<std::time::SystemTime> {
    use std::time::{Duration, UNIX_EPOCH};
    let nanos = u32::try_from(nanos).ok()?;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::new(secs.unsigned_abs(), 0))?
            .checked_add(Duration::from_nanos(u64::from(nanos)))
    }
}

/// Renames `from` to `to` unless `to` exists, in which case `from` is
/// removed: two writers of the same object both succeed and the first one's
/// bytes stay. Uses `renameat2(RENAME_NOREPLACE)`, falling back to
/// link+unlink and, where neither works, to a plain rename. Returns whether
/// `to` is now `from`'s file.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => return Ok(true),
        Err(Errno::EEXIST) => return fs::remove_file(from).map(|_| false),
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) | Err(Errno::EOPNOTSUPP) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from).map(|_| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::remove_file(from).map(|_| false),
        Err(_) => fs::rename(from, to).map(|_| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_finds_keys_of_a_directory_made_after_the_storage() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("repo");
        let store = DirStorage::new(&root);
        assert!(store.stat("objects/ab/x.pgp").unwrap().is_none());
        fs::create_dir_all(root.join("objects/ab")).unwrap();
        fs::write(root.join("objects/ab/x.pgp"), b"12345").unwrap();
        let stat = store.stat("objects/ab/x.pgp").unwrap().unwrap();
        assert_eq!(stat.size, 5);
        let meta = fs::metadata(root.join("objects/ab/x.pgp")).unwrap();
        assert_eq!(stat.modified, Some(meta.modified().unwrap()));
        assert!(store.stat("objects/ab/y.pgp").unwrap().is_none());
        let err = store.stat("objects/ab").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn only_regular_files_are_opened_and_reads_are_bounded() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("repo");
        fs::create_dir_all(root.join("locks")).unwrap();
        nix::unistd::mkfifo(&root.join("locks/fifo.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("locks/zero.json")).unwrap();
        fs::create_dir(root.join("locks/dir.json")).unwrap();
        fs::write(root.join("locks/ok.json"), b"{}").unwrap();
        fs::write(root.join("locks/big.json"), vec![b' '; 100]).unwrap();
        let store = DirStorage::new(&root);
        for (key, what) in [
            ("locks/fifo.json", "a FIFO"),
            ("locks/zero.json", "a character device"),
            ("locks/dir.json", "a directory"),
        ] {
            let err = store
                .open(key)
                .err()
                .unwrap_or_else(|| panic!("{key} opened"));
            assert!(
                err.to_string()
                    .contains(&format!("not a regular file ({what})")),
                "{key}: {err}"
            );
            assert!(store.read(key, 1 << 10).is_err(), "{key}");
        }
        assert_eq!(store.read("locks/ok.json", 2).unwrap().unwrap(), b"{}");
        assert!(store.read("locks/missing.json", 2).unwrap().is_none());
        let err = store.read("locks/big.json", 99).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(
            store.read("locks/big.json", 100).unwrap().unwrap().len(),
            100
        );
    }

    #[test]
    fn touch_changes_the_time_of_the_key_not_of_a_file_in_the_working_directory() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("repo");
        fs::create_dir_all(&root).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let key = root.join("k");
        fs::write(&key, b"x").unwrap();
        File::options()
            .write(true)
            .open(&key)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let store = DirStorage::new(&root);
        store.touch("k");
        assert!(fs::metadata(&key).unwrap().modified().unwrap() > old);
    }
}
