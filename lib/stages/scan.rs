//! bk-scan: walk trees and print one metadata record per entry.
//!
//! The walk uses the `ignore` crate so that `.bkignore` files (gitignore
//! syntax), `--exclude` globs and, on request, `.gitignore` files leave
//! entries out, exactly as users know them from ripgrep and git. Symlinks
//! are never followed, hidden files are included, and each directory's
//! entries come in file-name order so two scans of an unchanged tree give
//! the same stream.
//!
//! Each record names its root (the PATH made absolute; a `..` in it is
//! resolved for the parent, symlinks are kept)
//! and a path relative to it; the root directory itself is the entry `"."`
//! so a restore can give the target directory the root's mode and times,
//! like `rsync SRC/ DST/`. A PATH that is not a directory (a file, or a
//! symlink, which is not followed) is recorded under its parent as root.
//!
//! Records are written as they are found, so memory does not grow with the
//! size of the tree.
//!
//! # Errors
//!
//! An entry that cannot be read (permission denied, vanished between
//! `readdir` and `lstat`, an unreadable directory) is reported on stderr as
//! `bk-scan: <path>: <cause>` and the walk goes on; the run then exits 24
//! (partial).
//!
//! A PATH that does not exist (or cannot be `lstat`ed) is reported the same
//! way and the other PATHs are still scanned, ending in 24 — this is what
//! rsync does with a missing source (its "partial transfer", 23). Unlike
//! rsync, when *no* PATH could be scanned at all the exit status is 2 (bad
//! command line): nothing was backed up, and a script must not mistake that
//! for a backup that merely missed a few files.
//!
//! `--exclude` globs and ignore files apply to the entries found under a
//! directory PATH, never to a PATH named on the command line itself.

use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use ignore::overrides::{Override, OverrideBuilder};
use ignore::{DirEntry, WalkBuilder};

use crate::cli::ScanCli;
use crate::error::{exit, io_cause, Error, Outcome, Result};
use crate::record::meta::{self, NameCache};
use crate::record::{stdout_error, stdout_records, Kind, Record, RecordWriter};

/// The program name in messages.
const PROGRAM: &str = "bk-scan";

/// The per-directory ignore file bk honours everywhere.
pub const IGNORE_FILE: &str = ".bkignore";

/// How to walk: the parts of the command line that shape the walk.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Globs (gitignore syntax) of entries to leave out.
    pub exclude: Vec<String>,
    /// Stay on the file system of each PATH.
    pub one_file_system: bool,
    /// Also honour `.gitignore` and `.git/info/exclude`.
    pub gitignore: bool,
}

impl From<&ScanCli> for ScanOptions {
    fn from(cli: &ScanCli) -> Self {
        ScanOptions {
            exclude: cli.exclude.clone(),
            one_file_system: cli.one_file_system,
            gitignore: cli.gitignore,
        }
    }
}

/// Runs bk-scan: scans every PATH to stdout and returns the exit status.
pub fn run(cli: ScanCli) -> Result<i32> {
    let opts = ScanOptions::from(&cli);
    check_excludes(&opts.exclude)?;
    let mut scanner = Scanner::new(opts, stdout_records())?;
    // Roots in snapshot order (bytewise), so the stream is sorted as a
    // whole and bk-index can write the snapshot as it arrives.
    let key = |p: &Path| {
        root_path(p)
            .map(|abs| abs.into_os_string().into_vec())
            .unwrap_or_default()
    };
    let mut paths: Vec<&PathBuf> = cli.paths.iter().collect();
    paths.sort_by_cached_key(|p| key(p));
    let mut last: Option<Vec<u8>> = None;
    for path in paths {
        // The same root twice would give every entry twice, which no
        // snapshot may hold: scan it once.
        let this = key(path);
        if last.as_ref() == Some(&this) && !this.is_empty() {
            crate::say!(
                "{PROGRAM}: note: {} given more than once; scanned once",
                path.display()
            );
            continue;
        }
        last = Some(this);
        scanner.scan_path(path)?;
    }
    scanner.finish()
}

/// Fails with a usage error on the first `--exclude` glob that does not
/// parse, before anything is written.
fn check_excludes(excludes: &[String]) -> Result<()> {
    overrides(Path::new("/"), excludes).map(drop)
}

/// The override matcher for `--exclude`: each glob is added with a `!`
/// prefix, which in the `ignore` crate marks an *exclusion*. With no
/// un-prefixed (whitelist) glob present, every entry no glob matches is
/// kept, so excluding `*.tmp` does not exclude everything else.
fn overrides(root: &Path, excludes: &[String]) -> Result<Override> {
    let mut builder = OverrideBuilder::new(root);
    for glob in excludes {
        builder
            .add(&format!("!{glob}"))
            .map_err(|e| Error::usage(format!("--exclude {glob:?}: {}", glob_cause(&e))))?;
    }
    builder
        .build()
        .map_err(|e| Error::usage(format!("--exclude: {e}")))
}

/// `path` with `.` components, repeated and trailing slashes removed
/// (lexically: `..` and symlinks are kept), so that `docs`, `docs/` and
/// `./docs/.` give records the same root.
fn tidy(path: &Path) -> PathBuf {
    path.components().collect()
}

/// The absolute, tidy path a PATH argument is recorded under. A `..` in it
/// (`bk-scan ../docs`) is resolved through the file system, as `cd` would
/// resolve it, for the parent only: a root must be a plain path for
/// restore to give it a place, and the entry itself, a symlink say, stays
/// what it is.
fn root_path(path: &Path) -> std::io::Result<PathBuf> {
    let abs = tidy(&std::path::absolute(path)?);
    if !abs
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Ok(abs);
    }
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(fs::canonicalize(parent)?.join(name)),
        _ => fs::canonicalize(&abs),
    }
}

/// The cause of a bad `--exclude` glob, without the `!` this program put
/// in front of it.
fn glob_cause(err: &ignore::Error) -> String {
    match err {
        ignore::Error::Glob { err, .. } => err.clone(),
        other => other.to_string(),
    }
}

/// Walks PATHs and writes their records, remembering the errors met.
pub struct Scanner<W: Write> {
    opts: ScanOptions,
    out: RecordWriter<W>,
    names: NameCache,
    outcome: Outcome,
    roots_scanned: usize,
}

impl<W: Write> Scanner<W> {
    /// A scanner writing records to `out`, after the begin record that
    /// makes the stream checked (see [`crate::record`]).
    pub fn new(opts: ScanOptions, mut out: RecordWriter<W>) -> Result<Self> {
        out.write_begin().map_err(stdout_error)?;
        Ok(Scanner {
            opts,
            out,
            names: NameCache::new(),
            outcome: Outcome::default(),
            roots_scanned: 0,
        })
    }

    /// Scans one PATH: a directory tree, or a single entry of another kind.
    /// Only a failure to write the output is returned as an error; problems
    /// with the PATH or its entries are reported and remembered.
    pub fn scan_path(&mut self, path: &Path) -> Result<()> {
        let abs = match root_path(path) {
            Ok(abs) => abs,
            Err(e) => {
                self.report_io(path, &e);
                return Ok(());
            }
        };
        let meta = match fs::symlink_metadata(&abs) {
            Ok(meta) => meta,
            Err(e) => {
                self.report_io(path, &e);
                return Ok(());
            }
        };
        self.roots_scanned += 1;
        if meta.is_dir() {
            self.scan_tree(&abs)
        } else {
            self.scan_single(&abs, &meta)
        }
    }

    /// Ends the stream with the end record if the walk finished (every
    /// entry found was written, even if some could not be read: exit 0 or
    /// 24), flushes the output and returns the exit status of the run.
    pub fn finish(mut self) -> Result<i32> {
        let code = if self.roots_scanned == 0 {
            exit::USAGE
        } else {
            self.outcome.exit_code()
        };
        if exit::finished(code) {
            self.out.write_end().map_err(stdout_error)?;
        }
        self.out.flush().map_err(stdout_error)?;
        Ok(code)
    }

    /// Records a non-directory PATH under its parent directory as root.
    fn scan_single(&mut self, abs: &Path, meta: &Metadata) -> Result<()> {
        let abs = tidy(abs);
        let (Some(root), Some(name)) = (abs.parent(), abs.file_name()) else {
            self.report(&abs, "has no parent directory to serve as root");
            return Ok(());
        };
        self.emit(root, Path::new(name), &abs, meta)
    }

    /// Walks the tree under the directory `dir` (as given, so that `link/`
    /// walks the directory a symlink points to, as in rsync), one record
    /// per entry that is not excluded.
    fn scan_tree(&mut self, dir: &Path) -> Result<()> {
        let root = tidy(dir);
        let walker = self.walk_builder(dir)?.build();
        for item in walker {
            match item {
                Ok(ent) => {
                    if let Some(err) = ent.error() {
                        self.report_walk_error(err);
                    }
                    self.scan_entry(dir, &root, &ent)?;
                }
                Err(err) => self.report_walk_error(&err),
            }
        }
        Ok(())
    }

    /// The walker for one root, configured from the options.
    fn walk_builder(&self, root: &Path) -> Result<WalkBuilder> {
        let mut builder = WalkBuilder::new(root);
        builder
            .follow_links(false)
            .hidden(false)
            .parents(false)
            .ignore(false)
            .git_global(false)
            .git_ignore(self.opts.gitignore)
            .git_exclude(self.opts.gitignore)
            .require_git(false)
            .add_custom_ignore_filename(IGNORE_FILE)
            .same_file_system(self.opts.one_file_system)
            .overrides(overrides(root, &self.opts.exclude)?)
            .sort_by_file_name(|a, b| a.cmp(b));
        Ok(builder)
    }

    /// Records one entry found by the walk of `dir`, under `root`.
    fn scan_entry(&mut self, dir: &Path, root: &Path, ent: &DirEntry) -> Result<()> {
        let full = ent.path();
        let rel = if ent.depth() == 0 {
            Path::new(".")
        } else {
            match full.strip_prefix(dir) {
                Ok(rel) => rel,
                Err(_) => {
                    self.report(full, "found outside its root by the walker");
                    return Ok(());
                }
            }
        };
        match fs::symlink_metadata(full) {
            Ok(meta) => self.emit(root, rel, full, &meta),
            Err(e) => {
                self.report_entry_io(full, &e);
                Ok(())
            }
        }
    }

    /// Builds the record for one entry and writes it; problems reading the
    /// entry are reported and the entry left out.
    fn emit(&mut self, root: &Path, rel: &Path, full: &Path, meta: &Metadata) -> Result<()> {
        match self.record(root, rel, full, meta) {
            Some(rec) => self.out.write(&rec).map_err(stdout_error),
            None => Ok(()),
        }
    }

    /// The full record of one entry, or `None` (reported) when the entry
    /// vanished or is of a kind bk cannot describe.
    fn record(&mut self, root: &Path, rel: &Path, full: &Path, meta: &Metadata) -> Option<Record> {
        let Some(kind) = meta::kind_of(meta.file_type()) else {
            self.report(full, "unsupported file type, left out");
            return None;
        };
        let mut rec = Record::new(kind, rel);
        rec.set_root(root);
        meta::fill_stat(&mut rec, meta);
        self.names.fill_names(&mut rec);
        if kind == Kind::Symlink {
            match fs::read_link(full) {
                Ok(target) => rec.set_target(target.as_os_str()),
                Err(e) => {
                    self.report_entry_io(full, &e);
                    return None;
                }
            }
        }
        match meta::read_xattrs(full) {
            Ok(x) => {
                for why in &x.skipped {
                    crate::say!("{PROGRAM}: warning: {}: {why}, left out", meta::shown(full));
                }
                rec.xattrs = x.values;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.report_entry_io(full, &e);
                return None;
            }
            // The entry is still worth backing up without its attributes;
            // the partial exit status says something is missing.
            Err(e) => self.report(
                full,
                &format!("reading extended attributes: {}", io_cause(&e)),
            ),
        }
        Some(rec)
    }

    /// Reports a problem with `path` and marks the run partial.
    fn report(&mut self, path: &Path, cause: &str) {
        let err = Error::partial(format!("{}: {cause}", meta::shown(path)));
        self.outcome.report(PROGRAM, &err);
    }

    /// Reports an I/O error on a PATH given on the command line.
    fn report_io(&mut self, path: &Path, err: &io::Error) {
        self.report(path, &io_cause(err));
    }

    /// Reports an I/O error on an entry found by the walk; "not found"
    /// there means it went away after its directory was read.
    fn report_entry_io(&mut self, path: &Path, err: &io::Error) {
        if err.kind() == io::ErrorKind::NotFound {
            self.report(path, "vanished during scan");
        } else {
            self.report_io(path, err);
        }
    }

    /// Reports every error a walker error holds, one line each.
    fn report_walk_error(&mut self, err: &ignore::Error) {
        let mut msgs = Vec::new();
        walk_messages(err, None, None, &mut msgs);
        for msg in msgs {
            self.outcome.report(PROGRAM, &Error::partial(msg));
        }
    }
}

/// Flattens a walker error (which nests paths, line numbers and lists of
/// errors) into one-line messages `<path>: [line N: ]<cause>`.
fn walk_messages(
    err: &ignore::Error,
    path: Option<&Path>,
    line: Option<u64>,
    out: &mut Vec<String>,
) {
    use ignore::Error as E;
    match err {
        E::Partial(errs) => {
            for e in errs {
                walk_messages(e, path, line, out);
            }
        }
        E::WithLineNumber { line, err } => walk_messages(err, path, Some(*line), out),
        E::WithPath { path, err } => walk_messages(err, Some(path), line, out),
        E::WithDepth { err, .. } => walk_messages(err, path, line, out),
        other => {
            let cause = match other {
                E::Io(e) if e.kind() == io::ErrorKind::NotFound => "vanished during scan".into(),
                E::Io(e) => io_cause(e),
                e => e.to_string(),
            };
            let mut msg = path.map_or_else(String::new, |p| format!("{}: ", meta::shown(p)));
            if let Some(n) = line {
                msg.push_str(&format!("line {n}: "));
            }
            msg.push_str(&cause);
            out.push(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `paths` with `opts` into a vector of records.
    fn scan_to_vec(paths: &[PathBuf], opts: ScanOptions) -> Result<(Vec<Record>, i32)> {
        check_excludes(&opts.exclude)?;
        let mut buf = Vec::new();
        let code = {
            let mut scanner = Scanner::new(opts, RecordWriter::new(&mut buf))?;
            for p in paths {
                scanner.scan_path(p)?;
            }
            scanner.finish()?
        };
        let recs = crate::record::RecordReader::new(&buf[..]).collect::<Result<Vec<_>>>()?;
        Ok((recs, code))
    }

    fn paths(recs: &[Record]) -> Vec<&str> {
        recs.iter().map(|r| r.path.as_str()).collect()
    }

    #[test]
    fn excluding_one_glob_keeps_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.tmp"), b"").unwrap();
        fs::write(dir.path().join("b.txt"), b"").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/c.tmp"), b"").unwrap();
        fs::write(dir.path().join("sub/d"), b"").unwrap();
        let opts = ScanOptions {
            exclude: vec!["*.tmp".into()],
            ..Default::default()
        };
        let (recs, code) = scan_to_vec(&[dir.path().to_owned()], opts).unwrap();
        assert_eq!(code, 0);
        assert_eq!(paths(&recs), [".", "b.txt", "sub", "sub/d"]);
    }

    #[test]
    fn bad_exclude_glob_is_a_usage_error() {
        let err = check_excludes(&["a[".into()]).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(err.to_string().contains("a["), "{err}");
    }

    #[test]
    fn missing_path_alone_is_usage_and_with_others_partial() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let (recs, code) =
            scan_to_vec(std::slice::from_ref(&missing), ScanOptions::default()).unwrap();
        assert!(recs.is_empty());
        assert_eq!(code, exit::USAGE);
        let (recs, code) =
            scan_to_vec(&[missing, dir.path().to_owned()], ScanOptions::default()).unwrap();
        assert_eq!(paths(&recs), ["."]);
        assert_eq!(code, exit::PARTIAL);
    }

    #[test]
    fn the_stream_has_a_begin_record_and_an_end_record_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"").unwrap();
        let scan = |paths: &[PathBuf]| {
            let mut buf = Vec::new();
            let mut scanner =
                Scanner::new(ScanOptions::default(), RecordWriter::new(&mut buf)).unwrap();
            for p in paths {
                scanner.scan_path(p).unwrap();
            }
            let code = scanner.finish().unwrap();
            (code, String::from_utf8(buf).unwrap())
        };
        let begin = std::str::from_utf8(crate::record::BEGIN_LINE).unwrap();
        let end = std::str::from_utf8(crate::record::END_LINE).unwrap();
        let (code, out) = scan(&[dir.path().to_owned()]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(code, 0);
        assert_eq!((lines.len(), lines[0], lines[3]), (4, begin, end), "{out}");
        // Partial (a missing PATH) is a finished walk; no PATH at all is not.
        let missing = dir.path().join("nope");
        let (code, out) = scan(&[missing.clone(), dir.path().to_owned()]);
        assert_eq!((code, out.lines().last()), (exit::PARTIAL, Some(end)));
        let (code, out) = scan(&[missing]);
        assert_eq!(
            (code, out.as_str()),
            (exit::USAGE, format!("{begin}\n").as_str())
        );
    }

    #[test]
    fn single_file_is_recorded_under_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"abc").unwrap();
        let (recs, code) = scan_to_vec(&[f], ScanOptions::default()).unwrap();
        assert_eq!(code, 0);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].path, "f");
        assert_eq!(
            recs[0].root_os().unwrap(),
            Some(dir.path().as_os_str().to_owned())
        );
        assert_eq!(recs[0].size, 3);
    }

    #[test]
    fn spellings_of_one_directory_give_one_root() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"").unwrap();
        let plain = dir.path().to_owned();
        for spelling in [plain.join(""), plain.join("."), plain.join("./")] {
            let (recs, code) =
                scan_to_vec(std::slice::from_ref(&spelling), ScanOptions::default()).unwrap();
            assert_eq!(code, 0);
            assert_eq!(paths(&recs), [".", "f"], "{spelling:?}");
            for rec in &recs {
                assert_eq!(rec.root.as_deref(), plain.to_str(), "{spelling:?}");
            }
        }
    }

    #[test]
    fn walk_messages_are_one_line_each() {
        let err = ignore::Error::WithPath {
            path: PathBuf::from("/r/.bkignore"),
            err: Box::new(ignore::Error::Partial(vec![
                ignore::Error::WithLineNumber {
                    line: 3,
                    err: Box::new(ignore::Error::Io(io::Error::other("bad"))),
                },
                ignore::Error::Io(io::Error::from(io::ErrorKind::PermissionDenied)),
            ])),
        };
        let mut msgs = Vec::new();
        walk_messages(&err, None, None, &mut msgs);
        assert_eq!(
            msgs,
            [
                "/r/.bkignore: line 3: bad",
                "/r/.bkignore: permission denied"
            ]
        );
    }
}
