//! bk-verify: check records against the repository. Every object must
//! exist with the size the record says; with `--read-data` every file is
//! decrypted and re-hashed. One JSON result per problem goes to stdout.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cli::VerifyCli;
use crate::crypto::SecretKeys;
use crate::error::{exit, Kind as ErrorKind, Result};
use crate::index::require_secret;
use crate::open::decrypt_object;
use crate::record::{self, Kind, Record};
use crate::repo::{check_object_id, Repo};

/// A problem found with one record.
#[derive(Debug, Clone)]
struct Problem {
    problem: &'static str,
    object: Option<String>,
    detail: String,
}

struct Verifier {
    repo: Repo,
    key: Option<SecretKeys>,
    /// Result of checking each object id once (None = fine).
    seen_objects: Mutex<HashMap<String, Option<Problem>>>,
    /// Contents (sha256) already read back in full.
    seen_contents: Mutex<HashMap<String, Option<Problem>>>,
    records: AtomicU64,
    objects: AtomicU64,
    bytes_read: AtomicU64,
}

/// Runs bk-verify; returns the exit status.
pub fn run(cli: VerifyCli) -> Result<i32> {
    let repo = Repo::open(&cli.repo.repo)?;
    let key = if cli.read_data {
        let key = require_secret(&cli.secret, "bk-verify --read-data")?;
        crate::idkey::check_secret(&repo, &key)?;
        Some(key)
    } else {
        None
    };
    let v = Verifier {
        repo,
        key,
        seen_objects: Mutex::new(HashMap::new()),
        seen_contents: Mutex::new(HashMap::new()),
        records: AtomicU64::new(0),
        objects: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
    };
    let mut out = record::stdout_records();
    let mut problems = 0u64;
    let mut outcome = crate::pipeline::run(
        "bk-verify",
        cli.jobs.count(),
        record::stdin_records,
        |rec| Ok(Some(v.check(&rec))),
        |results: Vec<Value>| {
            for r in &results {
                problems += 1;
                out.write_value(r).map_err(record::stdout_error)?;
            }
            Ok(())
        },
    )?;
    out.flush().map_err(record::stdout_error)?;
    let mut summary = format!(
        "bk-verify: {} records, {} objects checked",
        v.records.load(Ordering::Relaxed),
        v.objects.load(Ordering::Relaxed)
    );
    if cli.read_data {
        summary += &format!(
            ", {} bytes decrypted and re-hashed",
            v.bytes_read.load(Ordering::Relaxed)
        );
    }
    summary += &format!(": {problems} problems");
    eprintln!("{summary}");
    if problems > 0 {
        outcome.note(ErrorKind::Fault);
    }
    let code = outcome.exit_code();
    Ok(if code == exit::OK && problems > 0 {
        exit::FAULTS
    } else {
        code
    })
}

impl Verifier {
    /// Checks one record; returns its result records (empty when fine).
    fn check(&self, rec: &Record) -> Vec<Value> {
        self.records.fetch_add(1, Ordering::Relaxed);
        if rec.kind != Kind::File {
            return Vec::new();
        }
        let problems = self.check_file(rec);
        problems
            .into_iter()
            .map(|p| {
                let mut v = json!({
                    "problem": p.problem,
                    "path": rec.path,
                    "object": p.object,
                    "detail": p.detail,
                });
                if let Some(b) = &rec.path_b64 {
                    v["path_b64"] = b.clone().into();
                }
                v
            })
            .collect()
    }

    fn check_file(&self, rec: &Record) -> Vec<Problem> {
        let Some(objects) = &rec.objects else {
            return vec![Problem {
                problem: "missing",
                object: None,
                detail: "file record has no objects".into(),
            }];
        };
        let mut problems = Vec::new();
        for obj in objects {
            if let Some(p) = self.check_object(&obj.id, obj.stored) {
                problems.push(p);
            }
        }
        if problems.is_empty() {
            if let Some(key) = &self.key {
                if let Some(p) = self.check_content(key, rec) {
                    problems.push(p);
                }
            }
        }
        problems
    }

    /// Presence and stored size of one object, checked once per id.
    fn check_object(&self, id: &str, stored: Option<u64>) -> Option<Problem> {
        let cache_key = format!("{id}:{stored:?}");
        if let Some(done) = lock(&self.seen_objects).get(&cache_key) {
            return done.clone();
        }
        self.objects.fetch_add(1, Ordering::Relaxed);
        let problem = if let Err(e) = check_object_id(id) {
            Some(Problem {
                problem: "missing",
                object: Some(id.to_owned()),
                detail: e.to_string(),
            })
        } else {
            match self.repo.object_size(id) {
                Ok(None) => Some(Problem {
                    problem: "missing",
                    object: Some(id.to_owned()),
                    detail: format!("object {id} is missing from the repository"),
                }),
                Ok(Some(size)) => match stored {
                    Some(want) if want != size => Some(Problem {
                        problem: "size",
                        object: Some(id.to_owned()),
                        detail: format!("object {id} has {size} bytes, the record says {want}"),
                    }),
                    _ => None,
                },
                Err(e) => Some(Problem {
                    problem: "missing",
                    object: Some(id.to_owned()),
                    detail: e.to_string(),
                }),
            }
        };
        remember(&self.seen_objects, cache_key, problem.clone());
        problem
    }

    /// Decrypts all objects of a file and compares size and sha256.
    fn check_content(&self, key: &SecretKeys, rec: &Record) -> Option<Problem> {
        let objects = rec.objects.as_deref().unwrap_or_default();
        let ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
        let cache_key = format!("{}:{}", rec.sha256.as_deref().unwrap_or(""), ids.join(","));
        if let Some(done) = lock(&self.seen_contents).get(&cache_key) {
            return done.clone();
        }
        let mut sink = HashSink {
            hasher: Sha256::new(),
            count: 0,
        };
        let mut problem = None;
        for id in &ids {
            if let Err(e) = decrypt_object(&self.repo, key, id, &mut sink) {
                problem = Some(Problem {
                    problem: "decrypt",
                    object: Some((*id).to_owned()),
                    detail: e.to_string(),
                });
                break;
            }
        }
        self.bytes_read.fetch_add(sink.count, Ordering::Relaxed);
        if problem.is_none() {
            let digest = hex::encode(sink.hasher.finalize());
            if sink.count != rec.size || Some(digest.as_str()) != rec.sha256.as_deref() {
                problem = Some(Problem {
                    problem: "hash",
                    object: Some(ids.join(" ")),
                    detail: format!(
                        "content has {} bytes and sha256 {digest}; the record says {} bytes and {}",
                        sink.count,
                        rec.size,
                        rec.sha256.as_deref().unwrap_or("no sha256")
                    ),
                });
            }
        }
        remember(&self.seen_contents, cache_key, problem.clone());
        problem
    }
}

/// Entries a result cache may hold before it is emptied: the caches only
/// save repeated work on duplicate contents, so memory stays bounded however
/// many objects a stream names.
const CACHE_LIMIT: usize = 100_000;

/// Remembers a result, emptying the cache first when it is full.
fn remember(cache: &Mutex<HashMap<String, Option<Problem>>>, key: String, value: Option<Problem>) {
    let mut map = lock(cache);
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.insert(key, value);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A writer that only hashes and counts.
struct HashSink {
    hasher: Sha256,
    count: u64,
}

impl io::Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.count += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
