//! The record (schema 1): one JSON object per line describing one file-system
//! entry, flowing between the programs.
//!
//! Known fields are typed; every other field is kept in `extra` and written
//! back untouched, so any stage can be replaced by a script that adds its own
//! fields. Names that are not valid UTF-8 are carried losslessly in
//! `path_b64`/`target_b64`/`root_b64` (base64 of the raw bytes), with a
//! lossy `path` kept beside them for display and `jq` filters.

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

/// Reads records, one per line, from a buffered reader; blank lines are
/// skipped. Each error names the line.
pub struct RecordReader<R> {
    input: R,
    line_no: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> RecordReader<R> {
    /// Wraps `input`.
    pub fn new(input: R) -> Self {
        RecordReader {
            input,
            line_no: 0,
            buf: Vec::new(),
        }
    }

    /// The number of the line read last.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }
}

impl<R: Peek> RecordReader<R> {
    /// Whether the next line is already buffered, so that reading it will
    /// not wait on the input: a stage hands on what it has gathered before
    /// it might wait.
    pub fn next_ready(&self) -> bool {
        self.input.buffered().contains(&b'\n')
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
            StdinFd::Dup(f) => f.read(buf),
            StdinFd::Std(s) => s.read(buf),
        }
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            self.buf.clear();
            let mut limited = io::Read::take(&mut self.input, MAX_LINE as u64 + 1);
            match limited.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    return Some(Err(Error::new(
                        crate::error::Kind::Io,
                        format!("reading stdin: {}", crate::error::io_cause(&e)),
                    )))
                }
            }
            self.line_no += 1;
            if self.buf.len() > MAX_LINE {
                return Some(Err(Error::bad_input(format!(
                    "stdin line {}: malformed record: line longer than {MAX_LINE} bytes",
                    self.line_no
                ))));
            }
            let line = self.buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            return Some(Record::from_line(line, self.line_no));
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
    }
}
