//! Errors shared by every program, each mapped to a documented exit status.
//!
//! Every message names the thing that failed (a path, an object, a record
//! line, a key) and the cause, on one line, so scripts and people can act on
//! it without guessing; what to do about it is a separate hint. Code tells
//! errors apart by their kind, never by their text.

use std::path::Path;

/// Exit statuses, documented in the README and the man pages.
pub mod exit {
    /// Everything worked.
    pub const OK: i32 = 0;
    /// The run finished but found faults (bk-verify problems, entries that
    /// bk-open could not restore).
    pub const FAULTS: i32 = 1;
    /// Bad command line or configuration.
    pub const USAGE: i32 = 2;
    /// Malformed or incomplete input: a line that is not a record, or a
    /// checked stream that ended before its end record (a stage before
    /// stopped early), or records after it.
    pub const BAD_INPUT: i32 = 3;
    /// A key problem: unreadable key, wrong secret key, wrong passphrase,
    /// no usable encryption subkey.
    pub const KEY: i32 = 4;
    /// A repository problem: missing or unknown repository, missing or
    /// corrupt object or snapshot.
    pub const REPO: i32 = 5;
    /// A local I/O failure: disk full, permission denied on the output.
    pub const IO: i32 = 6;
    /// Partial: some source files vanished, changed or could not be read
    /// while everything else was stored (like rsync's 24).
    pub const PARTIAL: i32 = 24;
    /// The repository is locked by another run (like restic's 11): try
    /// again later or give `--wait`.
    pub const LOCKED: i32 = 11;
    /// The reader of our output went away, as if killed by SIGPIPE.
    pub const BROKEN_PIPE: i32 = 141;

    /// Whether a stage that ends with `code` finished its stream, so that it
    /// writes the end record: success, or partial (files that vanished or
    /// could not be read were left out, as a finished walk does).
    pub fn finished(code: i32) -> bool {
        code == OK || code == PARTIAL
    }
}

/// What went wrong, grouped by the exit status it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line or configuration.
    Usage,
    /// Malformed or incomplete input.
    BadInput,
    /// Key or passphrase problem.
    Key,
    /// Repository problem (missing, corrupt, unknown format).
    Repo,
    /// Local I/O problem.
    Io,
    /// A source file vanished, changed or was unreadable.
    Partial,
    /// A fault found while checking or restoring.
    Fault,
    /// The reader of our output went away (`| head`): stop quietly.
    BrokenPipe,
    /// The repository is locked by another run.
    Locked,
}

impl Kind {
    /// The documented exit status for this kind of error.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => exit::USAGE,
            Kind::BadInput => exit::BAD_INPUT,
            Kind::Key => exit::KEY,
            Kind::Repo => exit::REPO,
            Kind::Io => exit::IO,
            Kind::Partial => exit::PARTIAL,
            Kind::Fault => exit::FAULTS,
            Kind::BrokenPipe => exit::BROKEN_PIPE,
            Kind::Locked => exit::LOCKED,
        }
    }

    /// Severity used to pick one exit status when several errors happened:
    /// a partial backup is less severe than a broken repository.
    fn severity(self) -> u8 {
        match self {
            Kind::Partial => 1,
            Kind::Fault => 2,
            Kind::BadInput => 3,
            Kind::Io => 4,
            Kind::Repo => 5,
            Kind::Key => 6,
            Kind::Usage => 7,
            Kind::BrokenPipe => 8,
            Kind::Locked => 5,
        }
    }
}

/// One error: its kind (which gives the exit status), a message naming
/// the thing that failed, the chain of causes below it, and what the user
/// can do about it. Shown as `msg: cause: cause…` on one line, and the
/// hint on a line of its own (see [`report`]).
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    msg: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    hint: Option<String>,
    fatal: bool,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)?;
        // The cause shows its own causes (an `Error` below `context`); an
        // I/O error is shown by its short cause.
        match self.source.as_deref() {
            None => Ok(()),
            Some(c) => match c.downcast_ref::<std::io::Error>() {
                Some(io) => write!(f, ": {}", io_cause(io)),
                None => write!(f, ": {c}"),
            },
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Result with bk's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of the given kind with a message.
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
            source: None,
            hint: None,
            fatal: false,
        }
    }

    /// The same error with `cause` below it in the chain.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(cause));
        self
    }

    /// The same error with what the user can do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// What the user can do about it, if anything is known.
    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The same error, marked as ending the whole run rather than one
    /// record (the repository or the disk stopped working).
    pub fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }

    /// Whether this error ends the whole run.
    pub fn is_fatal(&self) -> bool {
        self.fatal
    }

    /// Bad command line or configuration.
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::new(Kind::Usage, msg)
    }

    /// Malformed or incomplete input.
    pub fn bad_input(msg: impl Into<String>) -> Self {
        Self::new(Kind::BadInput, msg)
    }

    /// Key problem.
    pub fn key(msg: impl Into<String>) -> Self {
        Self::new(Kind::Key, msg)
    }

    /// Repository problem.
    pub fn repo(msg: impl Into<String>) -> Self {
        Self::new(Kind::Repo, msg)
    }

    /// The repository is locked by another run.
    pub fn locked(msg: impl Into<String>) -> Self {
        Self::new(Kind::Locked, msg)
    }

    /// A fault found while checking or restoring.
    pub fn fault(msg: impl Into<String>) -> Self {
        Self::new(Kind::Fault, msg)
    }

    /// A source file that vanished, changed or could not be read.
    pub fn partial(msg: impl Into<String>) -> Self {
        Self::new(Kind::Partial, msg)
    }

    /// A local I/O error on `path`, with `err` as its cause; a full disk or
    /// a permission problem on the output is reported as such.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            return Self::new(Kind::BrokenPipe, "broken pipe");
        }
        let full = err.kind() == std::io::ErrorKind::StorageFull;
        let e = Self::new(Kind::Io, path.display().to_string()).caused_by(err);
        if full {
            e.hint("free some space there, then run it again")
        } else {
            e
        }
    }

    /// A copy of this error as it reads (kind, message with its causes,
    /// hint, fatality), for an error several threads must each report.
    pub fn duplicate(&self) -> Error {
        Error {
            kind: self.kind,
            msg: self.to_string(),
            source: None,
            hint: self.hint.clone(),
            fatal: self.fatal,
        }
    }

    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The documented exit status for this error.
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }

    /// The same error under more context ("while doing X: ..."): the
    /// context becomes the message and the error its cause; kind, hint and
    /// fatality stay.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        let kind = self.kind;
        let fatal = self.fatal;
        let hint = self.hint.take();
        Error {
            kind,
            msg: what.to_string(),
            source: Some(Box::new(self)),
            hint,
            fatal,
        }
    }
}

/// Prints `err` on stderr for `program`: the error and its causes on one
/// line, then what to do on a line of its own, each in one write.
pub fn report(program: &str, err: &Error) {
    crate::say!("{program}: {err}");
    if let Some(hint) = err.hint_text() {
        crate::say!("{program}: hint: {hint}");
    }
}

/// A message made for the user, carried inside an `io::Error` (a storage
/// backend's "access denied: check the credentials…"): [`io_cause`] shows
/// it whole, where it shows other errors of its kind by their kind alone
/// ("permission denied").
#[derive(Debug)]
pub struct Explained(pub String);

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Explained {}

/// A short, human cause for an I/O error (without the "(os error 2)" noise
/// for the common cases); an [`Explained`] error's whole message.
pub fn io_cause(err: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    if let Some(x) = err.get_ref().and_then(|e| e.downcast_ref::<Explained>()) {
        return x.0.clone();
    }
    match err.kind() {
        K::NotFound => "no such file or directory".into(),
        K::PermissionDenied => "permission denied".into(),
        K::StorageFull => "no space left on device".into(),
        K::AlreadyExists => "already exists".into(),
        K::UnexpectedEof => "unexpected end of file (truncated)".into(),
        K::NotADirectory => "not a directory".into(),
        K::IsADirectory => "is a directory".into(),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_kind_and_hint_and_chains_the_cause() {
        let e = Error::io(
            Path::new("/out/f"),
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        )
        .context("restoring a/b");
        assert_eq!(
            e.to_string(),
            "restoring a/b: /out/f: no space left on device"
        );
        assert_eq!(e.exit_code(), exit::IO);
        assert_eq!(
            e.hint_text(),
            Some("free some space there, then run it again")
        );
        let cause = std::error::Error::source(&e).expect("a cause");
        assert_eq!(cause.to_string(), "/out/f: no space left on device");
        let e = Error::locked("locked by x")
            .hint("try again later")
            .context("bk-seal");
        assert_eq!(e.to_string(), "bk-seal: locked by x");
        assert_eq!(
            (e.kind(), e.hint_text()),
            (Kind::Locked, Some("try again later"))
        );
        assert!(Error::repo("plain").hint_text().is_none());
    }

    #[test]
    fn io_cause_keeps_a_message_of_its_own() {
        use std::io::{Error as E, ErrorKind as K};
        assert_eq!(
            io_cause(&E::from_raw_os_error(nix::libc::EACCES)),
            "permission denied"
        );
        assert_eq!(io_cause(&E::from(K::NotFound)), "no such file or directory");
        // A wrapped OS error (the ignore crate's, say) by its kind...
        let wrapped = E::new(K::PermissionDenied, "IO error for operation on x: denied");
        assert_eq!(io_cause(&wrapped), "permission denied");
        // ... a message made for the user whole.
        let hint = Explained("access denied: check the credentials".into());
        assert_eq!(
            io_cause(&E::new(K::PermissionDenied, hint)),
            "access denied: check the credentials"
        );
    }
}

/// Collects the outcome of a run that goes on after per-entry errors, and
/// picks the exit status of the most severe one.
#[derive(Debug, Default)]
pub struct Outcome {
    worst: Option<Kind>,
    /// How many errors were reported.
    pub errors: u64,
}

impl Outcome {
    /// Reports `err` on stderr (prefixed with the program name) and
    /// remembers its severity.
    pub fn report(&mut self, program: &str, err: &Error) {
        report(program, err);
        self.note(err.kind());
    }

    /// Remembers an error kind without printing anything.
    pub fn note(&mut self, kind: Kind) {
        self.errors += 1;
        match self.worst {
            Some(w) if w.severity() >= kind.severity() => {}
            _ => self.worst = Some(kind),
        }
    }

    /// The exit status for the run so far.
    pub fn exit_code(&self) -> i32 {
        self.worst.map_or(exit::OK, Kind::exit_code)
    }
}
