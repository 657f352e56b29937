//! bk-index: the catalogue. `write` turns a sealed record stream into one
//! compressed, encrypted snapshot; `list` shows the snapshots; `show`
//! decrypts one back to records or CSV.

pub mod certify;
pub mod lifecycle;
pub mod repair;
pub mod write;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use crate::cli::{IndexCli, IndexCommand, IndexListArgs, IndexShowArgs};
use crate::crypto::Decryptor;
use crate::error::{Error, Result};
use crate::local::summaries::{load_summary, save_summary, Summary};
use crate::record::{self, Record};
use crate::repo::blobs::Blobs;
use crate::repo::snapshot_name::SnapshotName;
use crate::repo::snapshots::{decrypt_snapshot, read_root};
use crate::repo::trust::{NameCheck, Trust};
use crate::repo::Repo;

/// Runs bk-index; returns the exit status.
pub fn run(cli: IndexCli) -> Result<i32> {
    match cli.command {
        IndexCommand::Write(args) => write::write(args),
        IndexCommand::List(args) => list(args),
        IndexCommand::Show(args) => show(args),
        IndexCommand::Forget(args) => lifecycle::forget(args),
        IndexCommand::Prune(args) => lifecycle::prune(args),
        IndexCommand::Repair(args) => repair::repair(args),
        IndexCommand::Unlock(args) => lifecycle::unlock(args),
        IndexCommand::Certify(args) => crate::stages::index::certify::run(args),
    }
}

fn list(args: IndexListArgs) -> Result<i32> {
    const PROGRAM: &str = "bk-index list";
    let repo = args.repo.open()?;
    let secret = args.secret.load()?;
    let trust = Trust::establish(&repo, secret.as_ref(), &args.trust.options())?;
    if trust.keys().is_none() && secret.is_none() && !trust.allows_unauthenticated() {
        return Err(Error::repo(format!(
            "cannot tell your snapshots from forged ones: {}",
            trust.basis()
        ))
        .hint("run this on a backing-up host of the repository, or give --key SECRET (after `bk-index certify` once), or --allow-unauthenticated to list every snapshot unchecked"));
    }
    // Roots are readable with the id key's passphrase (a backing-up host)
    // or the secret key.
    let dec = match (trust.keys(), &secret) {
        (Some(k), _) => Some(Decryptor::Passphrase(k.root_passphrase())),
        (None, Some(s)) => Some(Decryptor::Secret(s)),
        (None, None) => None,
    };
    let mut rows = Vec::new();
    let mut refused = 0u64;
    for name in crate::repo::snapshot_name::oldest_first(repo.snapshots()?) {
        let named = trust.check_name(&name);
        if let NameCheck::NotAuthentic(why) = named {
            if !trust.allows_unauthenticated() {
                crate::say!("{PROGRAM}: refusing snapshot {name}: {why}");
                refused += 1;
                continue;
            }
        }
        let mut unreadable = false;
        let summary = match (load_summary(&repo, &name), &dec) {
            (Some(s), _) if named == NameCheck::Authentic => Some(s),
            (_, Some(dec)) => match summarize(&repo, dec, &name, &trust) {
                Ok(s) => {
                    save_summary(&repo, &s);
                    Some(s)
                }
                // Listing every snapshot was asked for: one whose root
                // cannot be read is listed too, without its host and
                // counts, and never as authenticated.
                Err(e)
                    if e.kind() == crate::error::Kind::Repo && trust.allows_unauthenticated() =>
                {
                    crate::say!("{PROGRAM}: warning: snapshot {name}: {e}; listed without its host and counts (--allow-unauthenticated)");
                    unreadable = true;
                    None
                }
                Err(e) if e.kind() == crate::error::Kind::Repo => {
                    crate::say!("{PROGRAM}: refusing snapshot {name}: {e}");
                    refused += 1;
                    continue;
                }
                Err(e) => return Err(e),
            },
            (cached, None) => cached,
        };
        let authenticated = !unreadable
            && (named == NameCheck::Authentic
                || (named == NameCheck::Unchecked && summary.is_some() && secret.is_some()));
        rows.push(Row {
            parsed: SnapshotName::parse(&name),
            name,
            summary,
            authenticated,
        });
    }
    write_list(&rows, args.json, trust.allows_unauthenticated())?;
    if refused > 0 {
        return Err(Error::repo(format!(
            "{refused} snapshots refused (see above): nobody holding this repository's id key made them, so anyone holding your public key could have; they are not listed (--allow-unauthenticated lists them)"
        )));
    }
    Ok(0)
}

/// One line of `list`.
struct Row {
    name: String,
    parsed: Option<SnapshotName>,
    summary: Option<Summary>,
    authenticated: bool,
}

/// Prints the rows as a table whose columns fit the widest value, or as
/// JSON lines.
fn write_list(rows: &[Row], json: bool, show_auth: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    let time_of = |r: &Row| r.parsed.as_ref().map_or("", |p| p.time()).to_owned();
    let host_of = |r: &Row| {
        r.summary
            .as_ref()
            .map_or("", |s| s.host.as_str())
            .to_owned()
    };
    let mut text = String::new();
    if json {
        for r in rows {
            let mut v = serde_json::json!({"name": r.name, "time": time_of(r), "host": host_of(r), "authenticated": r.authenticated});
            if let Some(s) = &r.summary {
                v["files"] = s.files.into();
                v["entries"] = s.entries.into();
                v["bytes"] = s.bytes.into();
            }
            text.push_str(&v.to_string());
            text.push('\n');
        }
    } else {
        let width = |head: &str, f: &dyn Fn(&Row) -> String| {
            rows.iter()
                .map(|r| f(r).len())
                .max()
                .unwrap_or(0)
                .max(head.len())
        };
        let nw = width("SNAPSHOT", &|r| r.name.clone());
        let tw = width("TIME", &time_of);
        let hw = width("HOST", &host_of);
        let count = |r: &Row, f: fn(&Summary) -> u64| {
            r.summary
                .as_ref()
                .map_or_else(|| "-".to_owned(), |s| f(s).to_string())
        };
        let line = |n: &str, t: &str, h: &str, files: &str, bytes: &str, auth: &str| {
            let row = format!("{n:<nw$}  {t:<tw$}  {h:<hw$}  {files:>9}  {bytes:>15}");
            if show_auth {
                format!("{row}  {auth}\n")
            } else {
                format!("{row}\n")
            }
        };
        text.push_str(&line(
            "SNAPSHOT",
            "TIME",
            "HOST",
            "FILES",
            "BYTES",
            "AUTHENTICATED",
        ));
        for r in rows {
            text.push_str(&line(
                &r.name,
                &time_of(r),
                &host_of(r),
                &count(r, |s| s.files),
                &count(r, |s| s.bytes),
                if r.authenticated { "yes" } else { "NO" },
            ));
        }
    }
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(record::stdout_error)
}

/// A snapshot's host and counts, from its root.
fn summarize(repo: &Repo, dec: &Decryptor, name: &str, trust: &Trust) -> Result<Summary> {
    let root = read_root(repo, dec, name, trust)?;
    Ok(Summary::of_root(name, &root.header))
}

fn show(args: IndexShowArgs) -> Result<i32> {
    let repo = args.repo.open()?;
    let key = args.secret.require("bk-index show")?;
    let trust = Trust::establish(&repo, Some(&key), &args.trust.options())?;
    let name = trust.find_snapshot("bk-index show", &repo, &args.snapshot)?;
    let (blobs, _) = Blobs::open(&repo, trust.read_key(&repo)?, &[])?;
    let spool = decrypt_snapshot(&blobs, &key, &name, &trust)?;
    if args.csv {
        return write_csv(&name, spool);
    }
    let mut input = BufReader::with_capacity(256 << 10, spool);
    let mut out = io::BufWriter::with_capacity(256 << 10, io::stdout().lock());
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = (&mut input)
            .take(record::MAX_LINE as u64 + 2)
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
    fn iso_time_has_nanoseconds() {
        assert_eq!(
            iso_time(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
    }
}
