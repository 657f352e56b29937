//! Restoring a record stream into a directory, refusing anything that would
//! write outside it, and checking every byte against the record's SHA-256
//! before a file gets its real name.
//!
//! # Safety against hostile records
//!
//! A snapshot may have been written by anyone holding the public key, so
//! every record is treated as hostile:
//!
//! - paths are checked bytewise ([`safe_relative`]): no absolute paths, no
//!   `..`, `.` or empty components, no NUL, no over-long names;
//! - parent directories are created one component at a time, refusing any
//!   component that is a symlink or not a directory, so an earlier record
//!   cannot plant a symlink that a later one writes through;
//! - an existing directory is never replaced (a symlink record for the path
//!   of a directory is refused), and an adjacent duplicate path is refused;
//! - metadata is set with calls that never follow a final symlink;
//! - a file is written under a temporary name in its directory and renamed
//!   only after its size and SHA-256 match the record, so a swapped,
//!   truncated or corrupt object never leaves content under the real name.
//!
//! # Directory metadata and bounded memory
//!
//! A directory's mode, ACLs and times are applied once nothing more can be
//! created in it, so that creating its entries does not change its mtime,
//! a read-only mode does not block them and its default ACL is not
//! inherited by them. Snapshots are sorted bytewise by path, where the
//! entries of `dir` come after `dir.txt` (`.` < `/`), and bk-scan's own
//! output is in tree order; in both orders a directory can only receive
//! more entries while the current path starts with the directory's path
//! followed by a byte `<= b'/'`. Open directories are therefore always
//! prefixes of the current path: a short stack, whatever the number of
//! records. Input in any other order (bk-hash emits records as they finish)
//! is still restored correctly: an entry created in a directory that was
//! already finished keeps that directory's times and mode (and strips an
//! inherited ACL the record does not have), at the cost of a few system
//! calls. Hard links remember the first path of each inode until all its
//! links are restored, up to [`MAX_PENDING_LINKS`] inodes.
//!
//! # Content, in parallel and in record order
//!
//! A file's temporary file is made in record order, then its content is
//! left to a few worker threads ([`super::fetch`]): small files are
//! gathered into batches whose blobs are read pack by pack, neighbouring
//! blobs with one request, and each blob is decrypted once (one public-key
//! operation per pack). Finished files come back in record order
//! ([`super::window`]) and only then get their metadata and real name; a
//! finished directory's metadata waits in the same queue, after the files
//! before it. A bounded number of files is in flight. Whatever might
//! depend on a file still in flight (a record for the same path, a parent
//! path that is not a directory this run made, a hard link, an entry in a
//! directory already finished) first waits for every file in flight, and
//! then goes on as if restoring one file at a time.
//!
//! # Roots
//!
//! A stream may hold several roots (`bk-scan ~/docs /etc`). Each record is
//! restored at `DIR/<root without its leading '/'>/<path>`, so roots never
//! mix, and the root record (".") gives its metadata to `DIR/<root>`;
//! directories above a root are made with plain defaults. A record without
//! a root (a hand-made stream) goes to `DIR/<path>`, and so does every
//! record of root `/`. With [`Layout::Root`] only the records of one root
//! are restored, straight into `DIR`. A root whose text is not a safe
//! relative path once its leading '/' is taken off (`..`, `.`, NUL) is
//! refused once, with all its records.
//!
//! Where the places of two roots overlap (`/usr` and `/usr/share`, or a
//! root listed twice: a second "." record starts a new pass of it), a
//! record of one that lands inside the place of another is refused if its
//! destination was restored by this run (its ctime is not older than the
//! run): one root's entry never replaces what another put there. This
//! needs only per-root state (the roots are few), never a set of restored
//! paths. Hard links join only records of one pass of one
//! root whose size and sha256 agree with the first record of the inode
//! ([`LinkCheck`]); the others are restored as separate files.
//!
//! # Exit status
//!
//! Refused entries and metadata that could not be set are faults (1); a
//! missing, swapped or corrupt object is a repository error (5); a full
//! disk (6) stops the restore. As a non-root user, owners and devices are
//! left out with a note and do not fail the run.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use nix::sys::stat::{Mode, SFlag};

use super::fetch::{self, Failure, Object, Source};
use super::guards::{ParentGuard, TempPath};
use super::place::{Meta, NameError, Placing};
use super::safety::root_place;
use super::target::Target;
use super::window::{Filling, Ready, Window};
use crate::crypto::SecretKeys;
use crate::error::{io_cause, Error, Outcome, Result};
use crate::record::meta;
use crate::record::{Kind, Record};
use crate::repo::blobs::Blobs;
use crate::repo::id::ObjectId;

// Restore's public face stays here, wherever the code lives: bk-open,
// bk-verify and the property tests name these paths.
pub use super::links::{LinkCheck, LinkMatch, MAX_PENDING_LINKS};
pub use super::safety::{safe_relative, MAX_NAME, MAX_PATH};

const PROGRAM: &str = "bk-open";

/// Largest value the kernel accepts for one extended attribute.
const MAX_XATTR_VALUE: usize = 64 << 10;

/// How many roots (passes of a root, see [`Roots`]) one restore keeps
/// apart; records of further roots are refused with one message, so that
/// a hostile stream naming a new root on every line cannot grow memory
/// without bound.
pub const MAX_ROOTS: usize = 10_000;

/// Where the records go under the target directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Every root in its own place: `DIR/<root without '/'>/<path>`.
    Full,
    /// Only the records of this root, straight into `DIR` (`DIR/<path>`);
    /// the records of other roots are skipped and counted.
    Root(PathBuf),
}

/// Restores every record from `records` under `to` (created if needed),
/// with `workers` threads filling files. Per-entry failures are reported
/// and counted; the returned outcome gives the exit status. A full disk
/// stops the restore early.
pub fn restore(
    repo: &Blobs,
    key: &SecretKeys,
    to: &Path,
    layout: &Layout,
    workers: usize,
    records: impl Iterator<Item = Result<Record>>,
) -> Result<Outcome> {
    fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let base = fs::canonicalize(to).map_err(|e| Error::io(to, e))?;
    let src = Source {
        blobs: repo,
        secret: key,
    };
    let workers = workers.max(1);
    std::thread::scope(|s| {
        let (job_tx, job_rx) = crossbeam_channel::bounded(2 * workers);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for _ in 0..workers {
            let (jobs, done) = (job_rx.clone(), done_tx.clone());
            s.spawn(move || fetch::work(src, jobs, done));
        }
        let window = Window::new(job_tx, done_rx, repo.repo().store().is_remote());
        let mut r = Restorer::new(repo, base, layout, window);
        for rec in records {
            let rec = match rec {
                Ok(rec) => rec,
                Err(e) => {
                    r.outcome.report(PROGRAM, &e);
                    break;
                }
            };
            if let Err(e) = r.restore_one(rec) {
                r.outcome.report(PROGRAM, &e);
            }
            if r.stop_if_full() {
                break;
            }
        }
        r.finish();
        Ok(std::mem::take(&mut r.outcome))
    })
}

/// A root as bk-scan records it, compared lexically: `.` components and
/// repeated or trailing slashes do not count (`/a/./b/` is `/a/b`).
fn tidy_root(root: &OsStr) -> PathBuf {
    Path::new(root).components().collect()
}

/// Whether a directory at `dir` can still receive entries when the stream
/// has reached `path` (sorted bytewise or in tree order): `path` is `dir`
/// itself, inside it, or a name that sorts between `dir` and `dir/…`
/// (`dir.txt`, `dir b/…`).
pub fn still_open(dir: &[u8], path: &[u8]) -> bool {
    path.starts_with(dir) && path.get(dir.len()).is_none_or(|&b| b <= b'/')
}

/// What is applied to a directory once its entries are all restored.
#[derive(Debug)]
struct DirMeta {
    /// The record's name, for messages.
    shown: String,
    mode: u32,
    mtime_ns: i64,
    /// POSIX ACL attributes (name, raw value): they must not be inherited
    /// by the directory's entries, so they wait too.
    acls: Vec<(&'static str, Vec<u8>)>,
}

/// A directory that may still receive entries: its path is the first `len`
/// bytes of the current path; `meta` is `None` for a directory created only
/// as a parent (no record for it yet).
#[derive(Debug)]
struct OpenDir {
    len: usize,
    meta: Option<DirMeta>,
}

/// The first restored path of an inode with several links.
#[derive(Debug)]
struct FirstLink {
    path: PathBuf,
    /// The record's name, for messages.
    shown: String,
    /// The restored file's own device and inode, to check it is still the
    /// file at `path` before linking to it.
    dev: u64,
    ino: u64,
}

/// Hard links are looked up by (pass of a root, recorded device, inode).
type LinkKey = (usize, u64, u64);

/// One pass of one root: the records of a root between one of its "."
/// records and the next (a root listed twice makes two passes).
#[derive(Debug)]
struct RootPass {
    /// The root's raw bytes (`None`: records without a root).
    root: Option<OsString>,
    /// Where its records go, relative to the target; the reason when the
    /// root is refused.
    place: std::result::Result<Vec<u8>, String>,
    had_dot: bool,
    /// Records not restored because the root was refused.
    refused: u64,
}

/// Every root (pass) of the stream seen so far, and where each goes.
#[derive(Debug, Default)]
struct Roots {
    passes: Vec<RootPass>,
    /// The latest pass of each root.
    by_root: HashMap<OsString, usize>,
    no_root: Option<usize>,
    /// The last root looked up and its pass (records come root by root).
    last: Option<(Option<OsString>, usize)>,
    /// The passes by place (bytes relative to the target).
    places: HashMap<Vec<u8>, Vec<usize>>,
    /// `place_len[n]`: some place is `n` bytes long.
    place_len: Vec<bool>,
    /// With [`Layout::Root`]: the root to restore, its records' count, the
    /// records of other roots skipped and the first few of those roots.
    only: Option<PathBuf>,
    skipped: u64,
    others: Vec<Option<OsString>>,
    /// Records refused because there were more than [`MAX_ROOTS`] roots.
    over_limit: u64,
}

/// What a non-root restore had to leave out, summarised at the end.
#[derive(Debug, Default)]
struct Notes {
    owners: u64,
    devices: u64,
    xattrs: u64,
    links_copied: u64,
    /// Records sharing an inode with another whose content differs.
    links_differ: u64,
}

/// What [`Restorer::link_to_first`] did.
enum Linked {
    /// Linked (or failed trying).
    Done(Result<()>),
    /// No link to make: restore the content, and remember it for the
    /// inode's other links.
    First,
    /// The inode's first record has other content: restore this one's, as
    /// a file of its own.
    Differs,
}

/// What waits in the window: a file the workers are making, or a
/// finished directory's metadata.
type Waiting = Window<Box<PendingFile>, (PathBuf, DirMeta)>;

/// What the restorer keeps of a file the workers are making, to report
/// what becomes of it.
struct PendingFile {
    dest: PathBuf,
    /// `dest` relative to the target, as [`Restorer::pending`] knows it.
    rel: Vec<u8>,
    rec: Record,
    shown: String,
    first_of_inode: bool,
}

struct Restorer<'a> {
    blobs: &'a Blobs,
    base: PathBuf,
    as_root: bool,
    euid: u32,
    egid: u32,
    /// The base directory has a default ACL, which every created entry
    /// inherits: strip ACLs that records do not have.
    base_default_acl: bool,
    /// Path (bytes) of the last record that passed the path checks; every
    /// open directory is a prefix of it.
    prev: Vec<u8>,
    /// Open directories, shortest first.
    open: Vec<OpenDir>,
    /// The root record ("."), applied to the base directory at the end.
    root: Option<DirMeta>,
    roots: Roots,
    /// The pass of the record being restored.
    pass: usize,
    links: LinkCheck<LinkKey, FirstLink>,
    /// The status-change time (seconds, nanoseconds) of a file made in the
    /// target as the restore began: whatever this run restores or touches
    /// has a ctime at least this, what was there before an earlier one.
    started: (i64, i64),
    notes: Notes,
    outcome: Outcome,
    disk_full: bool,
    said_full: bool,
    window: Waiting,
    /// Where the files in the window go (relative to the target).
    pending: HashSet<Vec<u8>>,
}

/// The refusal error for a record.
fn refuse(shown: &str, why: impl std::fmt::Display) -> Error {
    Error::fault(format!("refusing {shown}: {why}"))
}

impl<'a> Restorer<'a> {
    fn new(blobs: &'a Blobs, base: PathBuf, layout: &Layout, window: Waiting) -> Self {
        let base_default_acl = matches!(xattr::get(&base, meta::ACL_XATTRS[1]), Ok(Some(_)));
        let started = run_start(&base);
        Restorer {
            started,
            blobs,
            base,
            as_root: nix::unistd::geteuid().is_root(),
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            base_default_acl,
            prev: Vec::new(),
            open: Vec::new(),
            root: None,
            roots: Roots {
                only: match layout {
                    Layout::Full => None,
                    Layout::Root(r) => Some(tidy_root(r.as_os_str())),
                },
                ..Roots::default()
            },
            pass: 0,
            links: LinkCheck::default(),
            notes: Notes::default(),
            outcome: Outcome::default(),
            disk_full: false,
            said_full: false,
            window,
            pending: HashSet::new(),
        }
    }

    /// Restores one record.
    fn restore_one(&mut self, rec: Record) -> Result<()> {
        self.retire_ready();
        let raw = rec.path_os()?;
        let root = rec.root_os()?;
        // The raw bytes, quoted: `path` may say anything when `path_b64` is
        // set. With a root, the record's full path on the scanned machine.
        let shown = shown_name(root.as_deref(), &raw);
        let Some(pass) = self.pass_for(root, raw.as_bytes() == b".") else {
            return Ok(());
        };
        let rel = safe_relative(&raw).map_err(|why| refuse(&shown, why))?;
        self.pass = pass;
        let Ok(place) = &self.roots.passes[pass].place else {
            self.roots.passes[pass].refused += 1;
            return Ok(());
        };
        // The destination relative to the target: place/path.
        let mut bytes = place.clone();
        if let Some(rel) = &rel {
            if !bytes.is_empty() {
                bytes.push(b'/');
            }
            bytes.extend_from_slice(rel.as_os_str().as_bytes());
            if bytes.len() > MAX_PATH {
                return Err(refuse(
                    &shown,
                    format!("its place under the target is longer than {MAX_PATH} bytes"),
                ));
            }
        }
        if self.pending.contains(&bytes) {
            // A record for a path whose file is still in flight: it must
            // find that file in place, as if restored one at a time.
            self.drain();
        }
        self.refuse_collision(&bytes, &shown)?;
        if bytes.is_empty() {
            return self.restore_root(&rec, &shown);
        }
        if rec.kind != Kind::Dir && rel.is_none() {
            return Err(refuse(
                &shown,
                format!("the root entry is a {}, not a directory", rec.kind.as_str()),
            ));
        }
        if bytes == self.prev {
            return Err(refuse(&shown, "duplicate path (restored just before)"));
        }
        self.close_dirs(&bytes);
        self.prev = bytes;
        let rel = PathBuf::from(OsStr::from_bytes(&self.prev));
        let guard = self.make_parents(&shown)?;
        let strip_acls = guard.is_some() || self.base_default_acl;
        let dest = self.base.join(&rel);
        let result = match rec.kind {
            Kind::Dir => self.restore_dir(&dest, &rec, &shown, strip_acls),
            Kind::File => {
                let alone = guard.is_some();
                self.restore_file(dest, rec, shown, strip_acls, alone)
            }
            Kind::Symlink => self.restore_symlink(&dest, &rec, &shown),
            Kind::Fifo | Kind::Char | Kind::Block => {
                self.restore_special(&dest, &rec, &shown, strip_acls)
            }
            Kind::Socket => Ok(()),
        };
        drop(guard);
        result
    }

    /// The pass of a record of `root` (`dot`: the record is the root's
    /// "."), starting a new one for a root not seen before or for a second
    /// "." of a root. `None`: the record is not restored (another root than
    /// `--root`'s, or past [`MAX_ROOTS`]), already counted.
    fn pass_for(&mut self, root: Option<OsString>, dot: bool) -> Option<usize> {
        let known = match &self.roots.last {
            Some((last, pass)) if *last == root => Some(*pass),
            _ => match &root {
                Some(r) => self.roots.by_root.get(r).copied(),
                None => self.roots.no_root,
            },
        };
        let pass = match known {
            Some(p) if !(dot && self.roots.passes[p].had_dot) => {
                if self.roots.last.as_ref().is_none_or(|(l, _)| *l != root) {
                    self.roots.last = Some((root, p));
                }
                p
            }
            Some(_) => self.new_pass(root)?,
            None if self.wanted(root.as_deref()) => self.new_pass(root)?,
            None => {
                self.roots.skipped += 1;
                return None;
            }
        };
        if dot {
            self.roots.passes[pass].had_dot = true;
        }
        Some(pass)
    }

    /// Whether the records of `root` are restored at all (all are, unless
    /// `--root` names another root).
    fn wanted(&mut self, root: Option<&OsStr>) -> bool {
        let Some(only) = &self.roots.only else {
            return true;
        };
        if root.is_some_and(|r| tidy_root(r) == *only) {
            return true;
        }
        let r = &mut self.roots;
        if r.others.len() < 5 && !r.others.iter().any(|o| o.as_deref() == root) {
            r.others.push(root.map(OsStr::to_owned));
        }
        false
    }

    /// Starts a new pass of `root`: works out its place (refusing the root
    /// once, with a message, if it is unsafe) and registers it.
    fn new_pass(&mut self, root: Option<OsString>) -> Option<usize> {
        if self.roots.passes.len() >= MAX_ROOTS {
            self.roots.over_limit += 1;
            if self.roots.over_limit == 1 {
                self.fault(format!("refusing root {:?} and every further new root: the stream has more than {MAX_ROOTS} roots (restore it in parts, e.g. one --root at a time)", root.as_deref().unwrap_or_default()));
            }
            return None;
        }
        let place = match (&root, &self.roots.only) {
            (_, Some(_)) | (None, None) => Ok(Vec::new()),
            (Some(r), None) => root_place(r),
        };
        let id = self.roots.passes.len();
        match &place {
            Ok(place) => {
                self.roots.places.entry(place.clone()).or_default().push(id);
                if self.roots.place_len.len() <= place.len() {
                    self.roots.place_len.resize(place.len() + 1, false);
                }
                self.roots.place_len[place.len()] = true;
            }
            Err(why) => {
                let r = root.as_deref().unwrap_or_default();
                self.fault(format!("refusing root {r:?}: {why}; none of its records is restored (restore it alone with --root {r:?} --to DIR)"));
            }
        }
        match &root {
            Some(r) => {
                self.roots.by_root.insert(r.clone(), id);
            }
            None => self.roots.no_root = Some(id),
        }
        self.roots.last = Some((root.clone(), id));
        self.roots.passes.push(RootPass {
            root,
            place,
            had_dot: false,
            refused: 0,
        });
        Some(id)
    }

    /// Refuses a record whose destination (`bytes`, relative to the
    /// target) lies in the place of another root or pass of this stream
    /// and was restored (or touched) by this run: the roots overlap there,
    /// and what the other put there is not replaced. What was there before
    /// the run (its ctime is older than [`Restorer::started`]) is replaced
    /// as by any restore. Costs nothing while the stream has one root.
    fn refuse_collision(&self, bytes: &[u8], shown: &str) -> Result<()> {
        let roots = &self.roots;
        if roots.passes.len() < 2 {
            return Ok(());
        }
        let mine = self.pass;
        let mut other = None;
        let ends = bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .chain([0, bytes.len()]);
        for end in ends {
            if !roots.place_len.get(end).copied().unwrap_or(false) {
                continue;
            }
            if let Some(passes) = roots.places.get(&bytes[..end]) {
                if let Some(&p) = passes.iter().find(|&&p| p != mine) {
                    if other.is_none_or(|(len, _)| end >= len) {
                        other = Some((end, p));
                    }
                }
            }
        }
        let Some((_, other)) = other else {
            return Ok(());
        };
        let dest = if bytes.is_empty() {
            self.base.clone()
        } else {
            self.base.join(OsStr::from_bytes(bytes))
        };
        match fs::symlink_metadata(&dest) {
            Ok(m) if (m.ctime(), m.ctime_nsec()) >= self.started => {}
            _ => return Ok(()),
        }
        let place = if bytes.is_empty() {
            "the target itself".to_owned()
        } else {
            format!("{:?}", OsStr::from_bytes(bytes))
        };
        let (this_root, other_root) = (&roots.passes[mine].root, &roots.passes[other].root);
        let why = if this_root == other_root {
            match this_root {
                Some(r) => format!("the stream lists root {r:?} more than once, and this restore already put {place} there; not replaced"),
                None => format!("the stream lists records without a root more than once, and this restore already put {place} there; not replaced"),
            }
        } else {
            let name = |r: &Option<OsString>| match r {
                Some(r) => format!("root {r:?}"),
                None => "the records without a root".to_owned(),
            };
            format!(
                "this restore already put {place} there, in the place of {} (the roots overlap); not replaced",
                name(other_root)
            )
        };
        Err(refuse(shown, why))
    }

    /// The root record: its metadata goes on the target directory itself,
    /// the mode, ACLs and times at the very end.
    fn restore_root(&mut self, rec: &Record, shown: &str) -> Result<()> {
        if rec.kind != Kind::Dir {
            return Err(refuse(
                shown,
                format!("the root entry is a {}, not a directory", rec.kind.as_str()),
            ));
        }
        if self.root.is_some() {
            return Err(refuse(shown, "duplicate root entry"));
        }
        let base = self.base.clone();
        self.apply_owner(base.as_path(), rec, shown);
        self.apply_xattrs(base.as_path(), rec, shown, false, self.base_default_acl);
        self.root = Some(self.dir_meta(rec, shown));
        Ok(())
    }

    /// Finishes every open directory that `path` shows to be complete,
    /// deepest first.
    fn close_dirs(&mut self, path: &[u8]) {
        while let Some(top) = self.open.last() {
            if still_open(&self.prev[..top.len], path) {
                break;
            }
            if let Some(dir) = self.open.pop() {
                self.finish_dir(dir);
            }
        }
    }

    /// Applies a finished directory's ACLs, mode and times, once the files
    /// in flight before it have their names.
    fn finish_dir(&mut self, dir: OpenDir) {
        let Some(meta) = dir.meta else {
            return;
        };
        let path = self.base.join(OsStr::from_bytes(&self.prev[..dir.len]));
        if self.window.is_empty() {
            self.apply_dir_meta(&path, &meta);
        } else {
            self.window.push_marker((path, meta));
        }
    }

    /// Whether the directory whose path is the first `len` bytes of the
    /// current path is open (the root always is).
    fn is_open(&self, len: usize) -> bool {
        len == 0 || self.open.iter().any(|d| d.len == len)
    }

    /// The directory at the first `len` bytes of the current path.
    fn prefix_path(&self, len: usize) -> PathBuf {
        if len == 0 {
            self.base.clone()
        } else {
            self.base.join(OsStr::from_bytes(&self.prev[..len]))
        }
    }

    /// Creates missing parent directories of the current path, refusing to
    /// go through anything that is not a real directory (a symlink planted
    /// by an earlier record, for instance). Returns a guard for the
    /// directory that gets a new entry when that directory was already
    /// finished (input out of order), to keep its times and mode.
    fn make_parents(&mut self, shown: &str) -> Result<Option<ParentGuard>> {
        let path = self.prev.clone();
        let slashes = || path.iter().enumerate().filter(|(_, &b)| b == b'/');
        if !slashes().all(|(end, _)| self.is_open(end)) {
            // A parent to look at, make, or guard: with nothing in flight,
            // which might be a file in the way or a directory's times.
            self.drain();
        }
        let mut guard = None;
        // `parent` is the length of the directory being entered (0: root);
        // each '/' ends the path of the next directory on the way.
        let mut parent = 0;
        for end in slashes().map(|(i, _)| i) {
            if self.is_open(end) {
                // Made or checked by this restore, and never replaced since
                // (a directory is never removed): no need to look again.
                parent = end;
                continue;
            }
            let cur = self.base.join(OsStr::from_bytes(&path[..end]));
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refuse(shown, format!("{} is a symlink", cur.display())))
                }
                Ok(_) => {
                    return Err(refuse(
                        shown,
                        format!("{} is not a directory", cur.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if guard.is_none() && !self.is_open(parent) {
                        guard = ParentGuard::new(self.prefix_path(parent), self.as_root);
                    }
                    fs::create_dir(&cur).map_err(|e| self.io_error(&cur, e))?;
                    self.open.push(OpenDir {
                        len: end,
                        meta: None,
                    });
                }
                Err(e) => return Err(self.io_error(&cur, e)),
            }
            parent = end;
        }
        let parent_len = parent;
        if guard.is_none() && !self.is_open(parent_len) {
            guard = ParentGuard::new(self.prefix_path(parent_len), self.as_root);
        }
        Ok(guard)
    }

    fn restore_dir(&mut self, dest: &Path, rec: &Record, shown: &str, strip: bool) -> Result<()> {
        let len = self.prev.len();
        if let Some(top) = self.open.last() {
            if top.len == len {
                if top.meta.is_some() {
                    return Err(refuse(shown, "duplicate path (directory already restored)"));
                }
                // Created earlier as a parent; now its record has come.
                let meta = self.dir_meta(rec, shown);
                self.apply_owner(dest, rec, shown);
                self.apply_xattrs(dest, rec, shown, false, strip);
                if let Some(top) = self.open.last_mut() {
                    top.meta = Some(meta);
                }
                return Ok(());
            }
        }
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove_non_dir(dest, shown)?;
                fs::create_dir(dest).map_err(|e| self.io_error(dest, e))?;
            }
            Err(_) => fs::create_dir(dest).map_err(|e| self.io_error(dest, e))?,
        }
        self.apply_owner(dest, rec, shown);
        self.apply_xattrs(dest, rec, shown, false, strip);
        let meta = self.dir_meta(rec, shown);
        self.open.push(OpenDir {
            len,
            meta: Some(meta),
        });
        Ok(())
    }

    /// Hands a file to the workers, which make it, metadata and name
    /// included; what became of it is reported in [`Restorer::finish_file`].
    /// `alone`: wait for it (its directory was finished, and a guard keeps
    /// its times).
    fn restore_file(
        &mut self,
        dest: PathBuf,
        rec: Record,
        shown: String,
        strip: bool,
        alone: bool,
    ) -> Result<()> {
        let mut first_of_inode = rec.nlink > 1;
        if first_of_inode {
            // Its first link may be in flight.
            self.drain();
            match self.link_to_first(&dest, &rec, &shown) {
                Linked::Done(done) => return done,
                Linked::First => {}
                Linked::Differs => first_of_inode = false,
            }
        }
        let sha = rec
            .sha256
            .as_deref()
            .ok_or_else(|| refuse(&shown, "file record has no sha256 to check against"))?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(sha, &mut sha256).map_err(|_| {
            Error::repo(format!(
                "{shown}: the record's sha256 {sha:?} is not 64 hex digits; not restored"
            ))
        })?;
        let objects = rec
            .objects
            .as_deref()
            .ok_or_else(|| refuse(&shown, "file record has no objects"))?;
        let objects = self.locate(objects).map_err(|e| e.context(&shown))?;
        let placing = self.placing(&dest, &rec, &shown, strip);
        while self.window.is_full() {
            self.retire_next();
        }
        let rel = self.prev.clone();
        self.pending.insert(rel.clone());
        let size = rec.size;
        let pending = PendingFile {
            dest,
            rel,
            rec,
            shown,
            first_of_inode,
        };
        self.window
            .push_file(placing, size, sha256, objects, Box::new(pending));
        if alone || first_of_inode {
            self.drain();
        }
        Ok(())
    }

    /// Where a file goes and the metadata it gets there (what
    /// [`Restorer::apply_meta`] sets on other entries); a non-root user's
    /// owners and xattrs that cannot be decoded are counted or reported
    /// here.
    fn placing(&mut self, dest: &Path, rec: &Record, shown: &str, strip: bool) -> Placing {
        let owner = if self.as_root {
            Some((rec.uid, rec.gid))
        } else {
            self.apply_owner(dest, rec, shown);
            None
        };
        let mut xattrs = Vec::with_capacity(rec.xattrs.len());
        for (name, value) in &rec.xattrs {
            if let Some(value) = self.decode_xattr(shown, name, value) {
                xattrs.push((name.clone(), value));
            }
        }
        let strip = match strip {
            true => meta::ACL_XATTRS
                .into_iter()
                .filter(|name| !rec.xattrs.contains_key(*name))
                .collect(),
            false => Vec::new(),
        };
        Placing {
            dir: dest.parent().unwrap_or(&self.base).to_path_buf(),
            dest: dest.to_path_buf(),
            owner,
            xattrs,
            strip,
            mode: rec.mode,
            mtime_ns: rec.mtime_ns,
        }
    }

    /// Where each object of a file is.
    fn locate(&self, objects: &[crate::record::ObjectRef]) -> Result<Vec<Object>> {
        objects
            .iter()
            .map(|obj| {
                let id = ObjectId::parse(&obj.id)?;
                let loc = self.blobs.require(&id, None)?;
                Ok(Object {
                    id,
                    loc,
                    size: obj.size,
                })
            })
            .collect()
    }

    /// Hands back every entry of the window that is ready, without waiting.
    fn retire_ready(&mut self) {
        while let Some(ready) = self.window.pop_ready() {
            self.retire(ready);
        }
    }

    /// Waits for the oldest entry of the window and hands it back.
    fn retire_next(&mut self) {
        if let Some(ready) = self.window.pop_wait() {
            self.retire(ready);
        }
    }

    /// Waits for every entry of the window.
    fn drain(&mut self) {
        while !self.window.is_empty() {
            self.retire_next();
        }
    }

    fn retire(&mut self, ready: Ready<Box<PendingFile>, (PathBuf, DirMeta)>) {
        match ready {
            Ready::Marker((path, meta)) => self.apply_dir_meta(&path, &meta),
            Ready::File(pending, result) => {
                self.pending.remove(&pending.rel);
                if let Err(e) = self.finish_file(*pending, result) {
                    self.outcome.report(PROGRAM, &e);
                }
            }
        }
    }

    /// Reports what became of a file the workers made: metadata that could
    /// not be set, or why it was not restored (nothing is left under its
    /// name then, nor any temporary file).
    fn finish_file(&mut self, p: PendingFile, filled: Filling) -> Result<()> {
        let PendingFile {
            dest,
            rec,
            shown,
            first_of_inode,
            ..
        } = p;
        let faults = match filled {
            Ok(faults) => faults,
            Err(Failure::Blob(e)) => return Err(e.context(&shown)),
            Err(Failure::Size { id, got, want }) => {
                return Err(Error::repo(format!(
                    "{shown}: object {id} holds {got} bytes, the record says {want}: swapped, truncated or corrupt object; not restored"
                )))
            }
            Err(Failure::Content { count }) => {
                let ids: Vec<&str> = rec
                    .objects
                    .iter()
                    .flatten()
                    .map(|o| o.id.as_str())
                    .collect();
                return Err(Error::repo(format!(
                    "{shown}: content of object {} ({count} bytes) does not match the record's sha256 and size ({} bytes): swapped or corrupt object; not restored",
                    ids.join(", "),
                    rec.size
                )));
            }
            Err(Failure::Name(NameError::DirInTheWay)) => {
                return Err(refuse(&shown, "a directory is in the way"))
            }
            Err(Failure::Create(_) | Failure::Write(_)) if self.disk_full => {
                // One full-disk error is enough: the restore stops.
                self.outcome.note(crate::error::Kind::Io);
                return Ok(());
            }
            Err(Failure::Create(e)) => {
                let dir = dest.parent().unwrap_or(&self.base).to_path_buf();
                return Err(self.io_error(&dir, e));
            }
            Err(Failure::Write(e) | Failure::Name(NameError::Io(e))) => {
                return Err(self.io_error(&dest, e).context(&shown))
            }
        };
        for f in faults {
            match f.what {
                Meta::Owner => self.meta_fault(&shown, "owner", &f.err),
                Meta::Xattr(name) => self.xattr_failed(&shown, &name, &f.err),
                Meta::Mode => self.meta_fault(&shown, "mode", &f.err),
                Meta::Times => self.meta_fault(&shown, "times", &f.err),
            }
        }
        if first_of_inode {
            self.remember_link(&dest, &rec, &shown);
        }
        Ok(())
    }

    /// Links `dest` to the first restored path of its inode (in this pass
    /// of this root), if there is one, it is still the file restored there,
    /// and its record has this record's size and sha256.
    fn link_to_first(&mut self, dest: &Path, rec: &Record, shown: &str) -> Linked {
        let id = (self.pass, rec.dev, rec.ino);
        let first = match self.links.find(&id, rec) {
            LinkMatch::First => return Linked::First,
            LinkMatch::Differs(first) => {
                crate::say!("{PROGRAM}: note: {shown} has the device and inode of {} but another size or sha256 (not the same file: replaced while it was backed up?); restored as a separate file", first.shown);
                self.notes.links_differ += 1;
                return Linked::Differs;
            }
            LinkMatch::Same(first) => first,
        };
        let same = fs::symlink_metadata(&first.path)
            .is_ok_and(|m| m.is_file() && m.dev() == first.dev && m.ino() == first.ino);
        if !same || first.path == dest {
            self.links.forget(&id);
            return Linked::First;
        }
        let from = first.path.clone();
        if let Err(e) = remove_non_dir(dest, shown) {
            return Linked::Done(Err(e));
        }
        if let Err(e) = fs::hard_link(&from, dest) {
            return Linked::Done(Err(self.io_error(dest, e).context(shown)));
        }
        self.links.linked(&id);
        Linked::Done(Ok(()))
    }

    /// Remembers a restored file whose inode has more links to come.
    fn remember_link(&mut self, dest: &Path, rec: &Record, shown: &str) {
        let Ok(m) = fs::symlink_metadata(dest) else {
            return;
        };
        let first = FirstLink {
            path: dest.to_path_buf(),
            shown: shown.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
        };
        if !self
            .links
            .remember((self.pass, rec.dev, rec.ino), rec, first)
        {
            self.notes.links_copied += 1;
            if self.notes.links_copied == 1 {
                crate::say!("{PROGRAM}: more than {MAX_PENDING_LINKS} hard-linked files wait for their other links; further links are restored as separate copies");
            }
        }
    }

    fn restore_symlink(&mut self, dest: &Path, rec: &Record, shown: &str) -> Result<()> {
        let target = rec
            .target_os()?
            .ok_or_else(|| refuse(shown, "symlink record has no target"))?;
        if target.is_empty() || target.as_bytes().contains(&0) {
            return Err(refuse(shown, "symlink target is empty or contains NUL"));
        }
        remove_non_dir(dest, shown)?;
        std::os::unix::fs::symlink(&target, dest).map_err(|e| self.io_error(dest, e))?;
        self.apply_meta(dest, rec, shown, false);
        Ok(())
    }

    fn restore_special(
        &mut self,
        dest: &Path,
        rec: &Record,
        shown: &str,
        strip: bool,
    ) -> Result<()> {
        let kind = match rec.kind {
            Kind::Fifo => SFlag::S_IFIFO,
            Kind::Char => SFlag::S_IFCHR,
            _ => SFlag::S_IFBLK,
        };
        if kind != SFlag::S_IFIFO && !self.as_root {
            self.notes.devices += 1;
            if self.notes.devices == 1 {
                crate::say!("{PROGRAM}: {shown}: device not restored (making devices needs root); further devices are counted at the end");
            }
            return Ok(());
        }
        remove_non_dir(dest, shown)?;
        let perm = Mode::from_bits_truncate(rec.mode & 0o777);
        nix::sys::stat::mknod(dest, kind, perm, rec.rdev.unwrap_or(0))
            .map_err(|e| self.io_error(dest, io::Error::from(e)))?;
        self.apply_meta(dest, rec, shown, strip);
        Ok(())
    }

    /// Owner, xattrs, mode and times of a non-directory.
    fn apply_meta<T: Target + ?Sized>(
        &mut self,
        target: &T,
        rec: &Record,
        shown: &str,
        strip: bool,
    ) {
        let is_link = rec.kind == Kind::Symlink;
        self.apply_owner(target, rec, shown);
        self.apply_xattrs(target, rec, shown, true, strip && !is_link);
        if !is_link {
            if let Err(e) = target.set_mode(rec.mode) {
                self.meta_fault(shown, "mode", &e);
            }
        }
        if let Err(e) = target.set_mtime(rec.mtime_ns) {
            self.meta_fault(shown, "times", &e);
        }
    }

    /// The part of a directory's metadata applied when it is finished.
    fn apply_dir_meta(&mut self, path: &Path, dm: &DirMeta) {
        let shown = dm.shown.as_str();
        for (name, value) in &dm.acls {
            if let Err(e) = xattr::set(path, name, value) {
                self.xattr_failed(shown, name, &e);
            }
        }
        if let Err(e) = meta::set_mode(path, dm.mode) {
            self.meta_fault(shown, "mode", &e);
        }
        if let Err(e) = meta::set_times(path, dm.mtime_ns) {
            self.meta_fault(shown, "times", &e);
        }
    }

    /// What a directory record leaves for later, with its ACLs decoded.
    fn dir_meta(&mut self, rec: &Record, shown: &str) -> DirMeta {
        let mut acls = Vec::new();
        for name in meta::ACL_XATTRS {
            if let Some(value) = rec.xattrs.get(name) {
                if let Some(value) = self.decode_xattr(shown, name, value) {
                    acls.push((name, value));
                }
            }
        }
        DirMeta {
            shown: shown.to_owned(),
            mode: rec.mode,
            mtime_ns: rec.mtime_ns,
            acls,
        }
    }

    /// Sets the recorded owner as root; as anyone else counts the entries
    /// that keep the restoring user's own ids.
    fn apply_owner<T: Target + ?Sized>(&mut self, target: &T, rec: &Record, shown: &str) {
        if self.as_root {
            if let Err(e) = target.set_owner(rec.uid, rec.gid) {
                self.meta_fault(shown, "owner", &e);
            }
        } else if rec.uid != self.euid || rec.gid != self.egid {
            self.notes.owners += 1;
            if self.notes.owners == 1 {
                crate::say!("{PROGRAM}: not running as root: entries get your own user and group, not the recorded owners (first: {shown}, owner {}:{})", rec.uid, rec.gid);
            }
        }
    }

    /// Sets the record's extended attributes (ACLs too when `with_acls`);
    /// with `strip`, removes ACLs the entry inherited but the record lacks.
    fn apply_xattrs<T: Target + ?Sized>(
        &mut self,
        target: &T,
        rec: &Record,
        shown: &str,
        with_acls: bool,
        strip: bool,
    ) {
        for (name, value) in &rec.xattrs {
            if !with_acls && meta::is_acl(name) {
                continue;
            }
            let Some(value) = self.decode_xattr(shown, name, value) else {
                continue;
            };
            if let Err(e) = target.set_xattr(name, &value) {
                self.xattr_failed(shown, name, &e);
            }
        }
        if strip {
            // Inherited ACLs: gone unless the record has them (a directory
            // gets its own ACLs only when it is finished).
            for name in meta::ACL_XATTRS {
                if !with_acls || !rec.xattrs.contains_key(name) {
                    let _ = target.remove_xattr(name);
                }
            }
        }
    }

    /// Decodes one xattr value, reporting a bad or oversized one.
    fn decode_xattr(&mut self, shown: &str, name: &str, value: &str) -> Option<Vec<u8>> {
        if value.len() > MAX_XATTR_VALUE * 4 / 3 + 4 {
            self.fault(format!(
                "{shown}: xattr {name}: value larger than {MAX_XATTR_VALUE} bytes; not set"
            ));
            return None;
        }
        match B64.decode(value) {
            Ok(v) => Some(v),
            Err(_) => {
                self.fault(format!(
                    "{shown}: xattr {name}: value is not base64; not set"
                ));
                None
            }
        }
    }

    /// An xattr that could not be set: expected for a non-root user outside
    /// the `user.` namespace (counted), a fault otherwise.
    fn xattr_failed(&mut self, shown: &str, name: &str, e: &io::Error) {
        let denied = e.kind() == io::ErrorKind::PermissionDenied;
        if !self.as_root && denied && !name.starts_with("user.") && !meta::is_acl(name) {
            self.notes.xattrs += 1;
            if self.notes.xattrs == 1 {
                crate::say!("{PROGRAM}: {shown}: xattr {name} not set (needs root); further ones are counted at the end");
            }
            return;
        }
        self.fault(format!("{shown}: cannot set xattr {name}: {}", io_cause(e)));
    }

    /// Metadata that could not be set: a fault.
    fn meta_fault(&mut self, shown: &str, what: &str, e: &io::Error) {
        self.fault(format!("{shown}: cannot set {what}: {}", io_cause(e)));
    }

    fn fault(&mut self, msg: String) {
        self.outcome.report(PROGRAM, &Error::fault(msg));
    }

    /// Whether the target file system is full, which stops the restore
    /// (said once).
    fn stop_if_full(&mut self) -> bool {
        if self.disk_full && !self.said_full {
            self.said_full = true;
            crate::say!("{PROGRAM}: stopping: the target file system is full; later records were not restored");
        }
        self.disk_full
    }

    /// An I/O error on `path`; a full disk stops the restore.
    fn io_error(&mut self, path: &Path, e: io::Error) -> Error {
        if matches!(
            e.raw_os_error(),
            Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
        ) {
            self.disk_full = true;
        }
        Error::io(path, e)
    }

    /// Finishes every open directory, then the root, and prints what a
    /// non-root restore left out.
    fn finish(&mut self) {
        self.drain();
        self.stop_if_full();
        while let Some(dir) = self.open.pop() {
            self.finish_dir(dir);
        }
        if let Some(root) = self.root.take() {
            let base = self.base.clone();
            self.apply_dir_meta(&base, &root);
        }
        self.report_roots();
        let n = &self.notes;
        if n.owners > 0 {
            crate::say!("{PROGRAM}: note: {} entries keep your user and group instead of the recorded owners (restore as root to set them)", n.owners);
        }
        if n.devices > 0 {
            crate::say!(
                "{PROGRAM}: note: {} devices not restored (restore as root to make them)",
                n.devices
            );
        }
        if n.xattrs > 0 {
            crate::say!("{PROGRAM}: note: {} extended attributes outside the user namespace not set (restore as root to set them)", n.xattrs);
        }
        if n.links_copied > 0 {
            crate::say!(
                "{PROGRAM}: note: {} hard links restored as separate copies",
                n.links_copied
            );
        }
        if n.links_differ > 1 {
            crate::say!("{PROGRAM}: note: {} records share a device and inode with a record of other content; each was restored as a separate file", n.links_differ);
        }
        if self.outcome.exit_code() != 0 && self.outcome.errors > 0 {
            crate::say!("{PROGRAM}: {} problems", self.outcome.errors);
        }
    }
}

impl Restorer<'_> {
    /// What the roots of the stream left out: records of refused roots,
    /// of roots past the limit, and of other roots than `--root`'s.
    fn report_roots(&mut self) {
        let refused: Vec<(Option<OsString>, u64)> = self
            .roots
            .passes
            .iter()
            .filter(|p| p.place.is_err() && p.refused > 0)
            .map(|p| (p.root.clone(), p.refused))
            .collect();
        for (root, n) in refused {
            crate::say!(
                "{PROGRAM}: root {:?}: {n} records not restored (the root was refused)",
                root.unwrap_or_default()
            );
        }
        if self.roots.over_limit > 0 {
            crate::say!(
                "{PROGRAM}: {} records of roots past the first {MAX_ROOTS} not restored",
                self.roots.over_limit
            );
        }
        let Some(only) = &self.roots.only else {
            return;
        };
        let others = self
            .roots
            .others
            .iter()
            .map(|r| match r {
                Some(r) => format!("{r:?}"),
                None => "records without a root".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        if self.roots.passes.is_empty() {
            let seen = if others.is_empty() {
                "the stream has no records".to_owned()
            } else {
                format!("the stream's roots: {others}")
            };
            let msg =
                format!("--root {only:?}: no record has this root; nothing restored ({seen})");
            self.fault(msg);
        } else if self.roots.skipped > 0 {
            crate::say!(
                "{PROGRAM}: note: {} records of other roots than {only:?} skipped ({others}{})",
                self.roots.skipped,
                if self.roots.others.len() >= 5 {
                    ", …"
                } else {
                    ""
                }
            );
        }
    }
}

/// The start of this run by the clock the file system stamps entries
/// with: the ctime of a file made (and removed) in `base` once that clock
/// has ticked past the ctime of a first such file. The clock is coarse (a
/// few milliseconds), so an entry an earlier run wrote in the same tick
/// would otherwise look as new as this run's own. If no file can be made,
/// the current time less a second.
fn run_start(base: &Path) -> (i64, i64) {
    let probe = || -> Option<(i64, i64)> {
        let (tmp, file) = TempPath::create(base).ok()?;
        let m = file.metadata().ok()?;
        drop(tmp);
        Some((m.ctime(), m.ctime_nsec()))
    };
    if let Some(first) = probe() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
        loop {
            match probe() {
                Some(now) if now > first => return now,
                Some(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                _ => break,
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() as i64 - 1, i64::from(now.subsec_nanos()))
}

/// A record's name for messages: its path on the scanned machine (root,
/// '/', path; the root alone for "."), or its path when it has no root;
/// raw bytes, quoted.
fn shown_name(root: Option<&OsStr>, path: &OsStr) -> String {
    let Some(root) = root else {
        return format!("{path:?}");
    };
    if path.as_bytes() == b"." {
        return format!("{root:?}");
    }
    let mut full = root.as_bytes().to_vec();
    if !full.ends_with(b"/") {
        full.push(b'/');
    }
    full.extend_from_slice(path.as_bytes());
    format!("{:?}", OsStr::from_bytes(&full))
}

/// Removes whatever non-directory is at `dest` (never following it).
fn remove_non_dir(dest: &Path, shown: &str) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Err(refuse(shown, "a directory is in the way")),
        Ok(_) => fs::remove_file(dest).map_err(|e| Error::io(dest, e)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_stay_open_in_both_orders() {
        // Bytewise order: dir, dir.txt, dir/x; tree order: dir, dir/x, dir.txt.
        assert!(still_open(b"dir", b"dir.txt"));
        assert!(still_open(b"dir", b"dir/x"));
        assert!(still_open(b"dir", b"dir b/x"));
        assert!(still_open(b"dir", b"dir"));
        assert!(!still_open(b"dir", b"dir2"));
        assert!(!still_open(b"dir", b"dis"));
        assert!(!still_open(b"dir/sub", b"dir.txt"));
        assert!(!still_open(b"dir", b"di"));
    }

    #[test]
    fn roots_are_compared_and_named_as_scanned() {
        assert_eq!(tidy_root(OsStr::new("/a/./b/")), PathBuf::from("/a/b"));
        assert_eq!(
            shown_name(Some(OsStr::new("/etc")), OsStr::new("x")),
            "\"/etc/x\""
        );
        assert_eq!(shown_name(Some(OsStr::new("/")), OsStr::new("x")), "\"/x\"");
        assert_eq!(
            shown_name(Some(OsStr::new("/etc")), OsStr::new(".")),
            "\"/etc\""
        );
        assert_eq!(shown_name(None, OsStr::new("x")), "\"x\"");
    }
}
