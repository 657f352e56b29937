//! The record (schema 1): one JSON object per line describing one file-system
//! entry, flowing between the programs.
//!
//! Known fields are typed; every other field is kept in `extra` and written
//! back untouched, so any stage can be replaced by a script that adds its own
//! fields. Names that are not valid UTF-8 are carried losslessly in
//! `path_b64`/`target_b64`/`root_b64` (base64 of the raw bytes), with a
//! lossy `path` kept beside them for display and `jq` filters.
//!
//! # Control records
//!
//! A stream that a bk stage produces starts with a begin record and, only
//! if the stage finished, ends with an end record, one line each:
//! `{"bk":"begin","v":1}` … `{"bk":"end","v":1}`. They have no `kind` or
//! `path`, so they can never be taken for an entry. The [`RecordReader`]
//! is the one place that recognises them: it never hands them on as
//! records, and with [`Check::Stage`] or [`Check::Index`] it checks them.
//! A stream whose first line is a begin record is *checked*: every begin
//! needs its end (concatenated streams hold several pairs), records come
//! only between a begin and its end, and an input that ends before its end
//! record is an error, because the stage that wrote it stopped early
//! (killed, or failed). A stream whose first line is not a begin record
//! (typed by hand, made by `jq`) is *unchecked*: it is read as before.

pub mod extsort;
pub mod meta;
pub mod order;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The only record schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest input line accepted (xattrs and paths are bounded by the kernel
/// well below this); a longer line is malformed input, not a reason to eat
/// all memory.
pub const MAX_LINE: usize = 16 << 20;

/// The kind of file-system entry a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (with `target`).
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device (with `rdev`).
    Char,
    /// Block device (with `rdev`).
    Block,
    /// Unix socket (recorded, never restored).
    Socket,
}

impl Kind {
    /// The name used in records and CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Socket => "socket",
        }
    }
}

/// One stored object: a whole file's content or one chunk of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Object id: hex HMAC-SHA256(id key, sha256(content)).
    pub id: String,
    /// Plaintext bytes in this object.
    pub size: u64,
    /// Bytes the object occupies in the repository (the OpenPGP message),
    /// so `bk-verify` can check sizes without a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<u64>,
}

/// One content-defined chunk of a large file as bk-hash read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHash {
    /// Hex SHA-256 of the chunk.
    pub sha256: String,
    /// Bytes in the chunk.
    pub size: u64,
}

/// One file-system entry, as streamed between the programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version (1).
    pub v: u32,
    /// What the entry is.
    pub kind: Kind,
    /// The scanned root this path is relative to (display form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The root's raw bytes, base64, when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_b64: Option<String>,
    /// Path relative to the root (display form; lossy if `path_b64` is set).
    pub path: String,
    /// The path's raw bytes, base64, when it is not valid UTF-8; wins over
    /// `path` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    /// Symlink target (display form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Symlink target raw bytes, base64, when not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_b64: Option<String>,
    /// Size in bytes (st_size).
    #[serde(default)]
    pub size: u64,
    /// st_mode: file type and permission bits.
    #[serde(default)]
    pub mode: u32,
    /// Owner id.
    #[serde(default)]
    pub uid: u32,
    /// Group id.
    #[serde(default)]
    pub gid: u32,
    /// Owner name, when known on the scanning machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name, when known on the scanning machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Modification time, nanoseconds since the epoch.
    #[serde(default)]
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    #[serde(default)]
    pub ctime_ns: i64,
    /// Inode number.
    #[serde(default)]
    pub ino: u64,
    /// Device the entry lives on.
    #[serde(default)]
    pub dev: u64,
    /// Device number for char and block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Hard link count.
    #[serde(default)]
    pub nlink: u64,
    /// Extended attributes: name → base64 value (ACLs travel here too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// Hex SHA-256 of the whole content (files only; added by bk-hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The SHA-256 and size of each content-defined chunk of a large file,
    /// in order (added by bk-hash while it hashes the file, so that bk-seal
    /// reads only the chunks the repository lacks; bk-seal removes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<ChunkHash>>,
    /// The objects holding the content, in order (added by bk-seal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<ObjectRef>>,
    /// Every field this build does not know, passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Record {
    /// An empty record of `kind` for `rel_path`, to be filled in by bk-scan.
    pub fn new(kind: Kind, rel_path: &Path) -> Self {
        let mut rec = Record {
            v: SCHEMA_VERSION,
            kind,
            root: None,
            root_b64: None,
            path: String::new(),
            path_b64: None,
            target: None,
            target_b64: None,
            size: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 0,
            dev: 0,
            rdev: None,
            nlink: 0,
            xattrs: BTreeMap::new(),
            sha256: None,
            chunks: None,
            objects: None,
            extra: Map::new(),
        };
        rec.set_path(rel_path);
        rec
    }

    /// The relative path as raw bytes (from `path_b64` when present).
    pub fn path_os(&self) -> Result<OsString> {
        decode_name(&self.path, self.path_b64.as_deref(), "path_b64")
    }

    /// Sets the relative path, using `path_b64` when it is not UTF-8.
    pub fn set_path(&mut self, p: &Path) {
        (self.path, self.path_b64) = encode_name(p.as_os_str());
    }

    /// The root as raw bytes, if the record names one.
    pub fn root_os(&self) -> Result<Option<OsString>> {
        match (&self.root, &self.root_b64) {
            (None, None) => Ok(None),
            (r, b) => decode_name(r.as_deref().unwrap_or(""), b.as_deref(), "root_b64").map(Some),
        }
    }

    /// Sets the root, using `root_b64` when it is not UTF-8.
    pub fn set_root(&mut self, p: &Path) {
        let (s, b) = encode_name(p.as_os_str());
        self.root = Some(s);
        self.root_b64 = b;
    }

    /// The symlink target as raw bytes, if any.
    pub fn target_os(&self) -> Result<Option<OsString>> {
        match (&self.target, &self.target_b64) {
            (None, None) => Ok(None),
            (t, b) => decode_name(t.as_deref().unwrap_or(""), b.as_deref(), "target_b64").map(Some),
        }
    }

    /// Sets the symlink target, using `target_b64` when it is not UTF-8.
    pub fn set_target(&mut self, t: &OsStr) {
        let (s, b) = encode_name(t);
        self.target = Some(s);
        self.target_b64 = b;
    }

    /// Where this entry lives on the scanned machine: the root joined with
    /// the path (path "." is the root itself).
    pub fn source_path(&self) -> Result<PathBuf> {
        let root = self.root_os()?.ok_or_else(|| {
            Error::bad_input(format!("{}: record has no root", self.display_path()))
        })?;
        let rel = self.path_os()?;
        let mut full = PathBuf::from(root);
        if rel != "." {
            full.push(rel);
        }
        Ok(full)
    }

    /// The path for messages: the display form, quoted when odd.
    pub fn display_path(&self) -> String {
        format!("{:?}", self.path)
    }

    /// Parses one line; the error names the line number and the cause.
    pub fn from_line(line: &[u8], line_no: u64) -> Result<Record> {
        let rec: Record = serde_json::from_slice(line).map_err(|e| {
            Error::bad_input(format!("stdin line {line_no}: malformed record: {e}"))
        })?;
        if rec.v != SCHEMA_VERSION {
            return Err(Error::bad_input(format!(
                "stdin line {line_no}: record schema version {} is not supported (this bk reads version {SCHEMA_VERSION})",
                rec.v
            )));
        }
        rec.path_os()
            .map_err(|e| e.context(format!("stdin line {line_no}")))?;
        Ok(rec)
    }

    /// Serialises the record as one JSON line (no newline).
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Encodes a name as (display string, base64 of raw bytes if not UTF-8).
fn encode_name(name: &OsStr) -> (String, Option<String>) {
    match name.to_str() {
        Some(s) => (s.to_owned(), None),
        None => (
            name.to_string_lossy().into_owned(),
            Some(B64.encode(name.as_bytes())),
        ),
    }
}

/// Decodes a name from its base64 form when present, else the string.
fn decode_name(s: &str, b64: Option<&str>, field: &str) -> Result<OsString> {
    match b64 {
        Some(b) => B64
            .decode(b)
            .map(OsString::from_vec)
            .map_err(|e| Error::bad_input(format!("{field} is not valid base64: {e}"))),
        None => Ok(OsString::from(s)),
    }
}

/// The begin record: the first line of a stream a bk stage writes.
pub const BEGIN_LINE: &[u8] = br#"{"bk":"begin","v":1}"#;

/// The end record: the last line of a stream whose stage finished.
pub const END_LINE: &[u8] = br#"{"bk":"end","v":1}"#;

/// How the control records bk writes start (records start with `{"v"`).
const CONTROL_PREFIX: &[u8] = br#"{"bk""#;

/// The only control record version this build reads and writes.
const CONTROL_VERSION: u32 = 1;

/// What a [`RecordReader`] does with control records (see the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Skip them: readers of streams whose completeness is not theirs to
    /// judge (bk-open, bk-verify, `bk-hash --reuse FILE`, snapshots).
    Ignore,
    /// Check them, as the stage named here (bk-hash, bk-seal) that passes
    /// the stream on: an input cut short is an error, and the stage then
    /// writes no end record of its own.
    Stage(&'static str),
    /// Check them, as bk-index write: an input cut short is an error, and
    /// no snapshot is written.
    Index,
}

impl Check {
    /// The error for a checked input that ended before its end record.
    fn cut_short(self) -> Error {
        let program = match self {
            Check::Index => {
                return Error::bad_input(
                    "the record stream ended before its end record: a stage before bk-index \
write stopped early (killed, disk full, lost server…); no snapshot written",
                )
            }
            Check::Stage(program) => program,
            Check::Ignore => "this stage",
        };
        Error::bad_input(format!(
            "the input ended before its end record: the stage before {program} stopped early \
(killed or failed); not writing an end record"
        ))
    }
}

/// One line of input, parsed but not yet checked against the stream.
/// (Not boxed: nearly every line is a record, moved on at once, as the
/// `Result<Record>` it becomes is.)
#[allow(clippy::large_enum_variant)]
enum Line {
    Record(Record),
    Begin,
    End,
    /// A control record this build does not know (a reader that ignores
    /// control records skips it too).
    OtherControl(Error),
    /// A line that is neither; `cut` if it was the input's last and had no
    /// newline (a writer killed in the middle of it).
    Bad {
        err: Error,
        cut: bool,
    },
}

/// The fields of a control record. A line with `kind` or `path` is never
/// one (it is a record, perhaps a malformed one).
#[derive(Deserialize)]
struct ControlLine {
    bk: String,
    #[serde(default)]
    v: Option<u32>,
    #[serde(default)]
    kind: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    path: Option<serde::de::IgnoredAny>,
}

/// Reads records, one per line, from a buffered reader; blank lines are
/// skipped and control records are recognised (see the module
/// documentation), never returned. Each error names the line.
pub struct RecordReader<R> {
    input: R,
    line_no: u64,
    buf: Vec<u8>,
    check: Check,
    /// Whether the stream began with a begin record; `None` until its
    /// first line has been read.
    checked: Option<bool>,
    /// Begin records not yet matched by their end record.
    open: u64,
    /// The first line, read ahead by [`RecordReader::is_checked`].
    ahead: Option<Line>,
    /// The input's end has been dealt with.
    ended: bool,
}

impl<R: BufRead> RecordReader<R> {
    /// Wraps `input`; control records are skipped ([`Check::Ignore`]).
    pub fn new(input: R) -> Self {
        RecordReader {
            input,
            line_no: 0,
            buf: Vec::new(),
            check: Check::Ignore,
            checked: None,
            open: 0,
            ahead: None,
            ended: false,
        }
    }

    /// The same reader, checking control records as `check` says.
    pub fn checking(mut self, check: Check) -> Self {
        self.check = check;
        self
    }

    /// The number of the line read last.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Whether the input is checked: its first line is a begin record.
    /// Reads that line if it has not been read yet (a stage asks before it
    /// writes anything, to know whether to write a begin record itself).
    pub fn is_checked(&mut self) -> bool {
        if self.checked.is_none() {
            match self.read_line() {
                Some(Line::Begin) => {
                    self.checked = Some(true);
                    self.open = 1;
                }
                line => {
                    self.checked = Some(false);
                    self.ahead = line;
                }
            }
        }
        self.checked == Some(true)
    }

    /// Reads and parses the next non-blank line; `None` at the end.
    fn read_line(&mut self) -> Option<Line> {
        loop {
            self.buf.clear();
            let mut limited = io::Read::take(&mut self.input, MAX_LINE as u64 + 1);
            match limited.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    return Some(Line::Bad {
                        err: Error::new(
                            crate::error::Kind::Io,
                            format!("reading stdin: {}", crate::error::io_cause(&e)),
                        ),
                        cut: false,
                    })
                }
            }
            self.line_no += 1;
            if self.buf.len() > MAX_LINE {
                return Some(Line::Bad {
                    err: Error::bad_input(format!(
                        "stdin line {}: malformed record: line longer than {MAX_LINE} bytes",
                        self.line_no
                    )),
                    cut: false,
                });
            }
            let cut = self.buf.last() != Some(&b'\n');
            let line = self.buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            return Some(match Record::from_line(line, self.line_no) {
                Ok(rec) => Line::Record(rec),
                Err(err) => match parse_control(line, self.line_no) {
                    Some(Ok(line)) => line,
                    Some(Err(err)) => Line::OtherControl(err),
                    None => Line::Bad { err, cut },
                },
            });
        }
    }
}

/// The control record on `line`, if it is one (`None`: it is not).
fn parse_control(line: &[u8], line_no: u64) -> Option<Result<Line>> {
    let control: ControlLine = serde_json::from_slice(line).ok()?;
    if control.kind.is_some() || control.path.is_some() {
        return None;
    }
    if control.v != Some(CONTROL_VERSION) {
        return Some(Err(Error::bad_input(format!(
            "stdin line {line_no}: control record version {} is not supported (this bk reads version {CONTROL_VERSION})",
            control.v.map_or("(none)".to_owned(), |v| v.to_string())
        ))));
    }
    Some(match control.bk.as_str() {
        "begin" => Ok(Line::Begin),
        "end" => Ok(Line::End),
        other => Err(Error::bad_input(format!(
            "stdin line {line_no}: unknown control record {other:?} (this bk knows \"begin\" and \"end\")"
        ))),
    })
}

impl<R: Peek> RecordReader<R> {
    /// Whether the next line is already buffered, so that reading it will
    /// not wait on the input: a stage hands on what it has gathered before
    /// it might wait.
    ///
    /// A control record as bk writes it (`{"bk":…`) is looked past: reading
    /// it yields no record, and the stage would wait behind it (an input
    /// whose end record has come while the writer keeps the pipe open).
    pub fn next_ready(&self) -> bool {
        if self.ahead.is_some() {
            return true;
        }
        let mut rest = self.input.buffered();
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if !rest[..nl].trim_ascii_start().starts_with(CONTROL_PREFIX) {
                return true;
            }
            rest = &rest[nl + 1..];
        }
        false
    }
}

/// Input whose buffered, not yet consumed bytes can be seen without
/// reading more.
pub trait Peek: BufRead {
    /// The bytes buffered.
    fn buffered(&self) -> &[u8];
}

impl<R: io::Read> Peek for io::BufReader<R> {
    fn buffered(&self) -> &[u8] {
        self.buffer()
    }
}

impl Peek for &[u8] {
    fn buffered(&self) -> &[u8] {
        self
    }
}

impl<T: AsRef<[u8]>> Peek for io::Cursor<T> {
    fn buffered(&self) -> &[u8] {
        let all = self.get_ref().as_ref();
        &all[(self.position() as usize).min(all.len())..]
    }
}

/// Standard input read through a duplicate of its descriptor, unbuffered,
/// so that the [`RecordReader`]'s own buffer is the only one and can be
/// seen (std's is private). Where the descriptor cannot be duplicated,
/// std's stdin.
pub enum StdinFd {
    Dup(std::fs::File),
    Std(io::Stdin),
}

impl io::Read for StdinFd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StdinFd::Dup(f) => {
                wait_for_input(f);
                if STOP_READING.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(0);
                }
                f.read(buf)
            }
            StdinFd::Std(s) => s.read(buf),
        }
    }
}

/// Set once a stage's output is gone (see [`stop_reading_stdin`]).
static STOP_READING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every read of stdin from now on end as if at the end of input, so
/// that a stage whose output went away (`| head`) is not kept waiting by a
/// reader thread blocked on a pipe that the program before keeps open.
pub fn stop_reading_stdin() {
    STOP_READING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Waits until `f` has input (or its end, or an error), looking every
/// tenth of a second whether reading should stop instead.
fn wait_for_input(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    let mut fds = [nix::libc::pollfd {
        fd: f.as_raw_fd(),
        events: nix::libc::POLLIN,
        revents: 0,
    }];
    while !STOP_READING.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: `fds` is one valid pollfd for the duration of the call.
        let n = unsafe { nix::libc::poll(fds.as_mut_ptr(), 1, 100) };
        if n != 0 {
            // Ready, hung up, or poll failed (the read then tells why).
            return;
        }
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        let checking = self.check != Check::Ignore;
        loop {
            let line = match self.ahead.take() {
                Some(line) => Some(line),
                None => self.read_line(),
            };
            let Some(line) = line else {
                if checking && self.open > 0 && !self.ended {
                    self.ended = true;
                    return Some(Err(self.check.cut_short()));
                }
                return None;
            };
            let first = self.checked.is_none();
            if first {
                self.checked = Some(matches!(line, Line::Begin));
            }
            match line {
                Line::Record(rec) => {
                    if checking && self.checked == Some(true) && self.open == 0 {
                        return Some(Err(Error::bad_input(format!(
                            "stdin line {}: a record after the end record of its stream (records come between a begin record and its end record)",
                            self.line_no
                        ))));
                    }
                    return Some(Ok(rec));
                }
                Line::Begin => self.open += 1,
                Line::End if self.open > 0 => self.open -= 1,
                Line::End if checking => {
                    return Some(Err(Error::bad_input(format!(
                        "stdin line {}: an end record without its begin record (more end records than begin records)",
                        self.line_no
                    ))))
                }
                Line::End => {}
                Line::OtherControl(err) if checking => return Some(Err(err)),
                Line::OtherControl(_) => {}
                // The last line of a checked input, cut in the middle: the
                // stage writing it was stopped.
                Line::Bad { cut: true, .. } if checking && self.open > 0 => {
                    self.ended = true;
                    return Some(Err(self.check.cut_short()));
                }
                Line::Bad { err, .. } => return Some(Err(err)),
            }
        }
    }
}

/// Writes records as NDJSON. A closed pipe downstream (`| head`) is
/// reported as [`io::ErrorKind::BrokenPipe`] so the caller can stop quietly.
pub struct RecordWriter<W: Write> {
    out: io::BufWriter<W>,
}

impl<W: Write> RecordWriter<W> {
    /// Wraps `out` with a buffer.
    pub fn new(out: W) -> Self {
        RecordWriter {
            out: io::BufWriter::with_capacity(64 << 10, out),
        }
    }

    /// Writes one record and a newline.
    pub fn write(&mut self, rec: &Record) -> io::Result<()> {
        self.out.write_all(&rec.to_line())?;
        self.out.write_all(b"\n")
    }

    /// Writes one record already serialised with [`Record::to_line`].
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }

    /// Writes the begin record (the first line of a checked stream).
    pub fn write_begin(&mut self) -> io::Result<()> {
        self.write_line(BEGIN_LINE)
    }

    /// Writes the end record (the last line of a checked stream, written
    /// only by a stage that finished).
    pub fn write_end(&mut self) -> io::Result<()> {
        self.write_line(END_LINE)
    }

    /// Writes one arbitrary JSON value as a line (result records of bk-verify).
    pub fn write_value(&mut self, value: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// Flushes the buffer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Records on stdin, through a buffer whose contents can be seen (see
/// [`RecordReader::next_ready`]).
pub fn stdin_records() -> RecordReader<io::BufReader<StdinFd>> {
    use std::os::fd::AsFd;
    let stdin = io::stdin();
    let input = match stdin.as_fd().try_clone_to_owned() {
        Ok(fd) => StdinFd::Dup(std::fs::File::from(fd)),
        Err(_) => StdinFd::Std(stdin),
    };
    RecordReader::new(io::BufReader::with_capacity(STDIN_BUFFER, input))
}

/// Bytes of stdin read at once.
const STDIN_BUFFER: usize = 64 << 10;

/// A record writer on stdout.
pub fn stdout_records() -> RecordWriter<io::Stdout> {
    RecordWriter::new(io::stdout())
}

/// The error for a failed write to stdout; a broken pipe is not worth more
/// than a quiet exit, anything else is an I/O error.
pub fn stdout_error(err: io::Error) -> Error {
    Error::io(&PathBuf::from("stdout"), err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_path_round_trips() {
        let raw = OsStr::from_bytes(b"dir/caf\xe9 \n x");
        let rec = Record::new(Kind::File, Path::new(raw));
        assert!(rec.path_b64.is_some());
        let line = rec.to_line();
        let back = Record::from_line(&line, 1).unwrap();
        assert_eq!(back.path_os().unwrap(), raw);
    }

    #[test]
    fn unknown_fields_pass_through() {
        let line = br#"{"v":1,"kind":"file","path":"a","size":1,"mine":{"x":[1,2]}}"#;
        let rec = Record::from_line(line, 1).unwrap();
        let out = String::from_utf8(rec.to_line()).unwrap();
        assert!(out.contains(r#""mine":{"x":[1,2]}"#), "{out}");
    }

    #[test]
    fn malformed_line_names_line() {
        let err = Record::from_line(b"{not json", 7).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("stdin line 7: malformed record"));
        assert_eq!(err.exit_code(), crate::error::exit::BAD_INPUT);
    }

    const DIR: &str = r#"{"v":1,"kind":"dir","path":"a"}"#;
    const BEGIN: &str = r#"{"bk":"begin","v":1}"#;
    const END: &str = r#"{"bk":"end","v":1}"#;

    /// What a checking reader makes of `lines` (joined by newlines, with a
    /// final newline unless `cut`): whether it is checked, the paths read,
    /// and the first error.
    fn read_checked(lines: &[&str], cut: bool) -> (bool, Vec<String>, Option<Error>) {
        let mut input = lines.join("\n");
        if !cut {
            input.push('\n');
        }
        let mut reader = RecordReader::new(input.as_bytes()).checking(Check::Stage("bk-test"));
        let checked = reader.is_checked();
        let mut paths = Vec::new();
        for item in reader {
            match item {
                Ok(rec) => paths.push(rec.path),
                Err(e) => return (checked, paths, Some(e)),
            }
        }
        (checked, paths, None)
    }

    #[test]
    fn control_records_frame_a_checked_stream_and_are_never_records() {
        let (checked, paths, err) = read_checked(&[BEGIN, DIR, DIR, END], false);
        assert!(checked);
        assert_eq!(paths, ["a", "a"]);
        assert!(err.is_none(), "{err:?}");
        // Two streams one after the other, and nested pairs.
        let (_, paths, err) = read_checked(&[BEGIN, DIR, END, BEGIN, DIR, END], false);
        assert_eq!((paths.len(), err.is_none()), (2, true));
        let (_, _, err) = read_checked(&[BEGIN, BEGIN, DIR, END, END], false);
        assert!(err.is_none(), "{err:?}");
        // Spaces and unknown fields are still a control record.
        let (checked, paths, err) = read_checked(
            &[r#"{ "bk": "begin", "v": 1, "by": "me" }"#, DIR, END],
            false,
        );
        assert!(checked && err.is_none(), "{err:?}");
        assert_eq!(paths, ["a"]);
        // A record with a "bk" field is a record.
        let odd = r#"{"v":1,"kind":"dir","path":"b","bk":"end"}"#;
        let (_, paths, err) = read_checked(&[BEGIN, odd, END], false);
        assert_eq!((paths, err.is_none()), (vec!["b".to_owned()], true));
    }

    #[test]
    fn a_checked_stream_cut_short_is_an_error_after_its_records() {
        for (lines, cut) in [
            (&[BEGIN, DIR][..], false),
            (&[BEGIN, DIR, r#"{"v":1,"kind":"dir","pa"#][..], true),
            (&[BEGIN, DIR, END, BEGIN, DIR][..], false),
            (&[BEGIN, BEGIN, DIR, END][..], false),
            (&[BEGIN, DIR, r#"{"bk":"end""#][..], true),
        ] {
            let (checked, paths, err) = read_checked(lines, cut);
            assert!(checked);
            assert!(!paths.is_empty(), "the records before come first");
            let err = err.unwrap_or_else(|| panic!("{lines:?} was accepted"));
            assert_eq!(err.exit_code(), crate::error::exit::BAD_INPUT);
            assert_eq!(
                err.to_string(),
                "the input ended before its end record: the stage before bk-test stopped early (killed or failed); not writing an end record"
            );
        }
    }

    #[test]
    fn records_outside_their_pair_and_stray_ends_are_malformed() {
        let (_, paths, err) = read_checked(&[BEGIN, DIR, END, DIR], false);
        assert_eq!(paths.len(), 1);
        let err = err.unwrap().to_string();
        assert!(
            err.starts_with("stdin line 4: a record after the end record"),
            "{err}"
        );
        let (_, _, err) = read_checked(&[BEGIN, DIR, END, END], false);
        let err = err.unwrap().to_string();
        assert!(
            err.starts_with("stdin line 4: an end record without its begin"),
            "{err}"
        );
        for bad in [
            r#"{"bk":"middle","v":1}"#,
            r#"{"bk":"begin","v":2}"#,
            r#"{"bk":"begin"}"#,
        ] {
            let (_, _, err) = read_checked(&[BEGIN, bad, DIR, END], false);
            let err = err.unwrap_or_else(|| panic!("{bad} was accepted"));
            assert_eq!(err.exit_code(), crate::error::exit::BAD_INPUT, "{err}");
            assert!(err.to_string().starts_with("stdin line 2: "), "{err}");
        }
    }

    #[test]
    fn an_unchecked_stream_reads_as_before() {
        let (checked, paths, err) = read_checked(&[DIR, DIR], false);
        assert!(!checked);
        assert_eq!((paths.len(), err.is_none()), (2, true));
        // Its last line without a newline is a record like any other.
        let (_, paths, err) = read_checked(&[DIR, DIR], true);
        assert_eq!((paths.len(), err.is_none()), (2, true));
        let (_, _, err) = read_checked(&[DIR, "{oops"], true);
        assert!(err
            .unwrap()
            .to_string()
            .starts_with("stdin line 2: malformed record"));
        // An empty input is unchecked.
        let (checked, paths, err) = read_checked(&[], true);
        assert!(!checked && paths.is_empty() && err.is_none());
        // A checked stream inside it must still be whole.
        let (_, paths, err) = read_checked(&[DIR, BEGIN, DIR, END, DIR], false);
        assert_eq!((paths.len(), err.is_none()), (3, true));
        let (_, _, err) = read_checked(&[DIR, BEGIN, DIR], false);
        assert!(err
            .unwrap()
            .to_string()
            .starts_with("the input ended before"));
    }

    #[test]
    fn readers_that_ignore_control_records_skip_them() {
        let input = [BEGIN, DIR, END, END, DIR, BEGIN, r#"{"bk":"what","v":9}"#].join("\n");
        let recs: Vec<Record> = RecordReader::new(input.as_bytes())
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(recs.len(), 2);
    }

    #[test]
    fn the_first_line_read_ahead_is_still_read_and_ready() {
        let input = format!("{DIR}\n{DIR}\n");
        let mut reader =
            RecordReader::new(io::BufReader::new(input.as_bytes())).checking(Check::Index);
        assert!(!reader.is_checked());
        assert!(reader.next_ready());
        assert_eq!(reader.by_ref().count(), 2);
        let mut out = RecordWriter::new(Vec::new());
        out.write_begin().unwrap();
        out.write_end().unwrap();
        let written = out.out.into_inner().unwrap();
        assert_eq!(written, format!("{BEGIN}\n{END}\n").as_bytes());
        let err = read_checked_index(&written[..BEGIN.len() + 1]);
        assert_eq!(
            err,
            "the record stream ended before its end record: a stage before bk-index write stopped early (killed, disk full, lost server…); no snapshot written"
        );
    }

    fn read_checked_index(input: &[u8]) -> String {
        RecordReader::new(input)
            .checking(Check::Index)
            .find_map(|r| r.err())
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn next_ready_tells_whether_a_whole_line_is_buffered() {
        let a = br#"{"v":1,"kind":"dir","path":"a"}"#;
        let input = [&a[..], b"\n", &a[..], b"\n", &a[..4]].concat();
        let mut reader = RecordReader::new(io::BufReader::with_capacity(1 << 10, &input[..]));
        assert!(!reader.next_ready(), "nothing read from the input yet");
        assert!(reader.next().unwrap().is_ok());
        assert!(reader.next_ready(), "the second line is in the buffer");
        assert!(reader.next().unwrap().is_ok());
        assert!(!reader.next_ready(), "only part of a line is left");
        // An end record buffered is no record at hand.
        let input = [BEGIN, "\n", DIR, "\n", END, "\n"].concat();
        let mut reader = RecordReader::new(input.as_bytes());
        assert!(reader.next().unwrap().is_ok());
        assert!(!reader.next_ready(), "only the end record is left");
        let input = [DIR, "\n", END, "\n", DIR, "\n"].concat();
        let mut reader = RecordReader::new(input.as_bytes());
        assert!(reader.next().unwrap().is_ok());
        assert!(reader.next_ready(), "a record after the end record");
    }
}
