//! bk-index: the catalogue. `write` turns a sealed record stream into one
//! compressed, encrypted snapshot; `list` shows the snapshots; `show`
//! decrypts one back to records or CSV.

use std::fs;
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cli::{IndexCli, IndexCommand, IndexListArgs, IndexShowArgs, SecretKeyArgs};
use crate::crypto::{PassphraseSource, SecretKeys};
use crate::error::{Error, Result};
use crate::record::{self, Kind, Record};
use crate::repo::Repo;
use crate::signature::Policy;

/// Runs bk-index; returns the exit status.
pub fn run(cli: IndexCli) -> Result<i32> {
    match cli.command {
        IndexCommand::Write(args) => crate::snapwrite::write(args),
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
    pub(crate) fn add(&mut self, rec: &Record) {
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
pub(crate) fn save_summary(repo: &Repo, summary: &Summary) {
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
