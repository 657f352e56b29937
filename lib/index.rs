//! bk-index: the catalogue. `write` turns a sealed record stream into one
//! compressed, encrypted snapshot; `list` shows the snapshots; `show`
//! decrypts one back to records or CSV.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::cli::{
    IndexCli, IndexCommand, IndexListArgs, IndexShowArgs, IndexWriteArgs, SecretKeyArgs,
};
use crate::crypto::{PassphraseSource, Recipients, SecretKeys};
use crate::error::{Error, Result};
use crate::extsort::{ExternalSorter, SortItem, Sorted};
use crate::record::{self, Kind, Record};
use crate::repo::{check_object_id, ObjectSizes, Repo};
use crate::signature::{Policy, SnapshotSigner};
use crate::snapcache::CacheWriter;

/// Runs bk-index; returns the exit status.
pub fn run(cli: IndexCli) -> Result<i32> {
    match cli.command {
        IndexCommand::Write(args) => write(args),
        IndexCommand::List(args) => list(args),
        IndexCommand::Show(args) => show(args),
        IndexCommand::Forget(args) => crate::lifecycle::forget(args),
        IndexCommand::Prune(args) => crate::lifecycle::prune(args),
        IndexCommand::Unlock(args) => crate::lifecycle::unlock(args),
    }
}

/// What `list` shows without decrypting a snapshot; kept in the local
/// cache by `write`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Snapshot file name.
    pub name: String,
    /// Creation time (RFC 3339), from the name.
    pub time: String,
    /// Host that made it, from the name.
    pub host: String,
    /// File records.
    pub files: u64,
    /// All records.
    pub entries: u64,
    /// Sum of file sizes.
    pub bytes: u64,
}

impl Summary {
    fn add(&mut self, rec: &Record) {
        self.entries += 1;
        if rec.kind == Kind::File {
            self.files += 1;
            self.bytes += rec.size;
        }
    }
}

/// Loads the secret key named by the arguments, if any.
pub fn load_secret(args: &SecretKeyArgs) -> Result<Option<SecretKeys>> {
    args.key
        .as_ref()
        .map(|k| {
            SecretKeys::load(
                k,
                &PassphraseSource {
                    file: args.passphrase_file.clone(),
                },
            )
        })
        .transpose()
}

/// Loads the secret key, which this command cannot do without.
pub fn require_secret(args: &SecretKeyArgs, why: &str) -> Result<SecretKeys> {
    load_secret(args)?.ok_or_else(|| {
        Error::usage(format!(
            "{why} needs a secret key: give --key SECRET (or BK_KEY)"
        ))
    })
}

fn write(args: IndexWriteArgs) -> Result<i32> {
    let recipients = Recipients::load(&args.recipients.recipients)?;
    // Load (and unlock) the signing key before reading any input, so a
    // wrong passphrase fails early.
    let sign_key = args
        .sign_key
        .as_ref()
        .map(|k| {
            let keys = SecretKeys::load(
                k,
                &PassphraseSource {
                    file: args.passphrase_file.clone(),
                },
            )?;
            SnapshotSigner::from_secret(&keys)
        })
        .transpose()?;
    // Read everything first: in `bk-seal --init … | bk-index write` the
    // repository only exists once bk-seal is under way, and the snapshot
    // may only be written once bk-seal has finished (EOF) anyway. Records
    // beyond a memory limit are sorted in runs on disk.
    // Lock before reading stdin: in `bk-seal | bk-index write` both start
    // together, so the shared lock covers the whole pipeline with no gap.
    let handle = crate::repo::RepoHandle::from_arg(&args.repo)?;
    let early_lock = crate::lock::lock_if_repo_exists(&handle, "bk-index write", args.wait.wait)?;
    let tmp_err = |e| Error::io(&std::env::temp_dir(), e);
    let mut sorter = ExternalSorter::default();
    let mut object_refs = 0usize;
    for rec in record::stdin_records() {
        let rec = rec?;
        object_refs += rec.objects.as_ref().map_or(0, Vec::len);
        let root = rec
            .root_os()?
            .map(|r| r.as_bytes().to_vec())
            .unwrap_or_default();
        let path = rec.path_os()?.as_bytes().to_vec();
        sorter
            .push(SortItem {
                root,
                path,
                line: rec.to_line(),
            })
            .map_err(tmp_err)?;
    }
    if sorter.is_empty() {
        return Err(Error::bad_input(
            "no records on stdin: not writing an empty snapshot (did an earlier stage of the pipeline fail?)",
        ));
    }
    let repo = Repo::open_handle(handle)?;
    let _lock = match early_lock {
        Some(lock) => lock,
        None => crate::lock::RepoLock::acquire(
            repo.store_arc(),
            crate::lock::LockKind::Shared,
            "bk-index write",
            args.wait.wait,
        )?,
    };
    crate::seal::check_recipients(&repo, &recipients)?;
    let sorted = sorter.finish().map_err(tmp_err)?;

    let host = crate::host::file_safe(&args.host.unwrap_or_else(crate::host::this_host));
    let now = SystemTime::now();
    let mut rnd = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut rnd);
    // Microseconds keep two runs in one second in the order they ran.
    let stamp = humantime::format_rfc3339_micros(now)
        .to_string()
        .replace(['-', ':'], "");
    let name = format!("{stamp}-{host}-{}.pgp", hex::encode(rnd));
    let mut lines = SnapshotLines {
        stored: ObjectSizes::new(&repo, object_refs > LIST_OBJECTS_ABOVE)?,
        sorted,
        repo: &repo,
        summary: Summary {
            name: name.clone(),
            time: humantime::format_rfc3339_micros(now).to_string(),
            host,
            ..Summary::default()
        },
        cache: CacheWriter::new(repo.id()),
        failure: None,
        buf: Vec::new(),
        pos: 0,
    };
    let written = repo.write_atomic(&repo.snapshot_key(&name), |w| {
        recipients.encrypt_signed(
            &mut lines,
            w,
            true,
            sign_key.as_ref().map(SnapshotSigner::as_signing_key),
        )
    });
    let SnapshotLines {
        summary,
        cache,
        failure,
        ..
    } = lines;
    if let Some(e) = failure {
        cache.abort();
        return Err(e);
    }
    if let Err(e) = written {
        cache.abort();
        return Err(e.context(format!("writing snapshot {name}")));
    }
    cache.commit();
    save_summary(&repo, &summary);
    let mut out = io::stdout().lock();
    writeln!(out, "{name}")
        .and_then(|_| out.flush())
        .map_err(record::stdout_error)?;
    let signed = sign_key
        .as_ref()
        .map(|k| format!(", signed by {}", k.fingerprint()))
        .unwrap_or_default();
    eprintln!(
        "bk-index: wrote snapshot {name}: {} entries, {} files, {} bytes{signed}",
        summary.entries, summary.files, summary.bytes
    );
    Ok(0)
}

/// Above this many object references, remote storage is listed rather
/// than asked object by object (a listing page holds 1,000 keys).
const LIST_OBJECTS_ABOVE: usize = 256;

/// A snapshot may only name objects that are already in the repository.
fn check_sealed(repo: &Repo, stored: &ObjectSizes, rec: &Record) -> Result<()> {
    if rec.kind != Kind::File {
        return Ok(());
    }
    let shown = rec.display_path();
    let objects = rec.objects.as_ref().ok_or_else(|| {
        Error::bad_input(format!(
            "{shown}: file record has no objects; pipe it through bk-seal first (no snapshot written)"
        ))
    })?;
    for obj in objects {
        check_object_id(&obj.id).map_err(|e| e.context(&shown))?;
        if stored.get(repo, &obj.id)?.is_none() {
            return Err(Error::repo(format!(
                "{shown}: object {} is not in the repository (no snapshot written)",
                obj.id
            )));
        }
    }
    Ok(())
}

/// The sorted records as NDJSON bytes for the encoder: each record is
/// checked (its objects must exist), counted, and copied to the local
/// snapshot cache on the way. A failure is kept in `failure` and ends the
/// stream with an error, so no snapshot is committed.
struct SnapshotLines<'a> {
    sorted: Sorted,
    repo: &'a Repo,
    stored: ObjectSizes,
    summary: Summary,
    cache: CacheWriter,
    failure: Option<Error>,
    buf: Vec<u8>,
    pos: usize,
}

impl SnapshotLines<'_> {
    fn next_line(&mut self) -> Result<Option<()>> {
        let Some(item) = self.sorted.next() else {
            return Ok(None);
        };
        let item = item.map_err(|e| Error::io(&std::env::temp_dir(), e))?;
        let rec = Record::from_line(&item.line, 0)?;
        check_sealed(self.repo, &self.stored, &rec)?;
        self.summary.add(&rec);
        self.cache.add(&item.root, &item.line);
        self.buf = item.line;
        self.buf.push(b'\n');
        self.pos = 0;
        Ok(Some(()))
    }
}

impl Read for SnapshotLines<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.next_line() {
                Ok(Some(())) => {}
                Ok(None) => return Ok(0),
                Err(e) => {
                    self.failure = Some(e);
                    return Err(io::Error::other("snapshot input failed"));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The running program's name for warnings (`bk-index`, `bk-open`…).
fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "bk".into())
}

/// The local cache file of a snapshot's summary (what `list` shows
/// without decrypting it).
pub fn summary_path(repo: &Repo, name: &str) -> PathBuf {
    crate::paths::cache_home()
        .join("bk")
        .join(repo.id())
        .join("summaries")
        .join(format!("{name}.json"))
}

/// Saves a summary in the local cache; a cache that cannot be written only
/// costs a decryption later, so failures are ignored.
fn save_summary(repo: &Repo, summary: &Summary) {
    let path = summary_path(repo, &summary.name);
    let made = path
        .parent()
        .is_some_and(|dir| fs::create_dir_all(dir).is_ok());
    if made {
        if let Ok(json) = serde_json::to_vec(summary) {
            let _ = fs::write(path, json);
        }
    }
}

fn load_summary(repo: &Repo, name: &str) -> Option<Summary> {
    let data = fs::read(summary_path(repo, name)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Time and host parsed from a snapshot name
/// (`20261124T031500.123456Z-host-0a1b2c3d.pgp`).
fn name_parts(name: &str) -> (String, String) {
    let stem = name.strip_suffix(".pgp").unwrap_or(name);
    let Some((stamp, rest)) = stem.split_once('-') else {
        return (String::new(), String::new());
    };
    let time = match (stamp.get(0..8), stamp.get(9..15), stamp.get(15..)) {
        (Some(d), Some(t), Some(frac)) if stamp.get(8..9) == Some("T") => format!(
            "{}-{}-{}T{}:{}:{}{}",
            &d[0..4],
            &d[4..6],
            &d[6..8],
            &t[0..2],
            &t[2..4],
            &t[4..6],
            frac
        ),
        _ => String::new(),
    };
    let host = rest
        .rsplit_once('-')
        .map_or_else(String::new, |(h, _)| h.to_owned());
    (time, host)
}

fn list(args: IndexListArgs) -> Result<i32> {
    let repo = Repo::open(&args.repo)?;
    let secret = load_secret(&args.secret)?;
    let policy = Policy::load(&args.signers.signer, args.signers.require_signature)?;
    let mut out = io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:<44} {:<20} {:<16} {:>9} {:>15}",
            "SNAPSHOT", "TIME", "HOST", "FILES", "BYTES"
        )
        .map_err(record::stdout_error)?;
    }
    for name in repo.snapshots()? {
        let (time, host) = name_parts(&name);
        let summary = match (load_summary(&repo, &name), &secret) {
            (Some(s), _) => Some(s),
            (None, Some(key)) => {
                let mut s = summarize(&repo, key, &name, &policy)?;
                s.time = time.clone();
                s.host = host.clone();
                save_summary(&repo, &s);
                Some(s)
            }
            (None, None) => None,
        };
        let line = if args.json {
            let mut v = serde_json::json!({"name": name, "time": time, "host": host});
            if let Some(s) = &summary {
                v["files"] = s.files.into();
                v["entries"] = s.entries.into();
                v["bytes"] = s.bytes.into();
            }
            v.to_string()
        } else {
            let (files, bytes) = summary.as_ref().map_or(("-".into(), "-".into()), |s| {
                (s.files.to_string(), s.bytes.to_string())
            });
            format!("{name:<51} {time:<27} {host:<16} {files:>9} {bytes:>15}")
        };
        writeln!(out, "{line}").map_err(record::stdout_error)?;
    }
    out.flush().map_err(record::stdout_error)?;
    Ok(0)
}

/// Counts a snapshot's files and bytes by decrypting it.
fn summarize(repo: &Repo, key: &SecretKeys, name: &str, policy: &Policy) -> Result<Summary> {
    let spool = decrypt_snapshot(repo, key, name, policy)?;
    let mut summary = Summary {
        name: name.to_owned(),
        ..Summary::default()
    };
    for rec in record::RecordReader::new(BufReader::new(spool)) {
        let rec = rec.map_err(|e| Error::repo(format!("snapshot {name}: {e}")))?;
        summary.add(&rec);
    }
    Ok(summary)
}

/// Decrypts a snapshot fully into an anonymous temporary file, so nothing
/// is trusted before the message's integrity check, and its signature
/// (checked against `policy`, see [`crate::signature`]), have passed at its
/// end.
pub fn decrypt_snapshot(
    repo: &Repo,
    key: &SecretKeys,
    name: &str,
    policy: &Policy,
) -> Result<fs::File> {
    let what = format!("snapshot {name}");
    let input = repo.open_key(&repo.snapshot_key(name), &what)?;
    let mut msg = key.decrypt(input, &what)?;
    let mut spool = tempfile::tempfile().map_err(|e| Error::io(&std::env::temp_dir(), e))?;
    crate::crypto::copy_plaintext(&mut msg, &what, &mut spool, &std::env::temp_dir())?;
    let status = policy.status(&msg);
    policy.enforce(&program_name(), name, &status)?;
    spool
        .rewind()
        .map_err(|e| Error::io(&std::env::temp_dir(), e))?;
    Ok(spool)
}

fn show(args: IndexShowArgs) -> Result<i32> {
    let repo = Repo::open(&args.repo)?;
    let key = require_secret(&args.secret, "bk-index show")?;
    let policy = Policy::load(&args.signers.signer, args.signers.require_signature)?;
    let name = repo.find_snapshot(&args.snapshot)?;
    let spool = decrypt_snapshot(&repo, &key, &name, &policy)?;
    if args.csv {
        return write_csv(&name, spool);
    }
    let mut input = BufReader::with_capacity(256 << 10, spool);
    let mut out = io::BufWriter::with_capacity(256 << 10, io::stdout().lock());
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(&std::env::temp_dir(), e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        // Refuse a snapshot that is not a record stream rather than pass
        // garbage on to bk-open.
        Record::from_line(line.trim_ascii(), line_no)
            .map_err(|e| Error::repo(format!("snapshot {name}: {e}")))?;
        out.write_all(&line).map_err(record::stdout_error)?;
    }
    out.flush().map_err(record::stdout_error)?;
    Ok(0)
}

/// Header of `show --csv`.
const CSV_HEADER: [&str; 13] = [
    "path", "kind", "size", "mtime", "mode", "user", "group", "uid", "gid", "target", "sha256",
    "objects", "root",
];

fn write_csv(name: &str, spool: fs::File) -> Result<i32> {
    let mut csv = csv::Writer::from_writer(io::stdout().lock());
    let csv_err = |e: csv::Error| match e.into_kind() {
        csv::ErrorKind::Io(io) => record::stdout_error(io),
        other => Error::io(
            &PathBuf::from("stdout"),
            io::Error::other(format!("{other:?}")),
        ),
    };
    csv.write_record(CSV_HEADER).map_err(csv_err)?;
    for rec in record::RecordReader::new(BufReader::new(spool)) {
        let rec = rec.map_err(|e| Error::repo(format!("snapshot {name}: {e}")))?;
        let objects = rec
            .objects
            .as_ref()
            .map(|o| {
                o.iter()
                    .map(|o| o.id.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let row = [
            rec.path.clone(),
            rec.kind.as_str().to_owned(),
            rec.size.to_string(),
            iso_time(rec.mtime_ns),
            format!("{:04o}", rec.mode & 0o7777),
            rec.user.clone().unwrap_or_default(),
            rec.group.clone().unwrap_or_default(),
            rec.uid.to_string(),
            rec.gid.to_string(),
            rec.target.clone().unwrap_or_default(),
            rec.sha256.clone().unwrap_or_default(),
            objects,
            rec.root.clone().unwrap_or_default(),
        ];
        csv.write_record(&row).map_err(csv_err)?;
    }
    csv.flush().map_err(record::stdout_error)?;
    Ok(0)
}

/// ISO-8601 UTC time with nanoseconds from nanoseconds since the epoch.
pub fn iso_time(ns: i64) -> String {
    let t = if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    };
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_parts_parse_time_and_host() {
        let (t, h) = name_parts("20261124T031500.123456Z-my-host.lan-0a1b2c3d.pgp");
        assert_eq!(t, "2026-11-24T03:15:00.123456Z");
        assert_eq!(h, "my-host.lan");
    }

    #[test]
    fn host_is_sanitized() {
        assert_eq!(crate::host::file_safe("a b/c"), "a_b_c");
    }

    #[test]
    fn iso_time_has_nanoseconds() {
        assert_eq!(
            iso_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
    }
}
