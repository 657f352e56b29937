//! bk-verify: check records against the repository. Every object must
//! exist with the size the record says; with `--read-data` every file is
//! decrypted and re-hashed. One JSON result per problem goes to stdout.
//!
//! Deep verification: `--all-snapshots` checks the records of every
//! snapshot (each signature checked against `--signer`) instead of stdin;
//! `--read-data-subset` decrypts only a part of the objects (see
//! [`Subset`]), each checked against its own id (the id is the HMAC of the
//! plaintext's SHA-256); `--orphans` lists objects no snapshot references.
//! `--inventory` is the keyless storage-side check ([`crate::repo::inventory`]).

pub mod inventory;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Seek as _;
use std::io::{self, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cli::VerifyCli;
use crate::crypto::SecretKeys;
use crate::error::{exit, Error, Kind as ErrorKind, Outcome, Result};
use crate::record::{self, Kind, Record};
use crate::repo::blobs::Blobs;
use crate::repo::id::{ObjectId, PackId};
use crate::repo::idkey::IdKey;
use crate::repo::snapshots::decrypt_snapshot_and_root;
use crate::repo::Repo;
use crate::sys::sync::lock;

/// A problem found with one record.
#[derive(Debug, Clone)]
struct Problem {
    problem: &'static str,
    object: Option<String>,
    detail: String,
}

/// One record for the workers, with what the reader knows of it: the
/// snapshot it came from (`--all-snapshots`) and, for a hard link whose
/// size or sha256 differs from the earlier record of its inode, what the
/// mismatch report says of that record.
struct Checked {
    rec: Record,
    snapshot: Option<Arc<str>>,
    link: Option<serde_json::Map<String, Value>>,
}

impl Checked {
    fn new(rec: Record, snapshot: Option<Arc<str>>) -> Checked {
        Checked {
            rec,
            snapshot,
            link: None,
        }
    }
}

impl crate::stream::pipeline::Job for Checked {
    fn bytes(&self) -> u64 {
        crate::stream::pipeline::file_bytes(&self.rec)
    }
}

/// The records of stdin, with no snapshot of their own.
struct FromStdin<R: record::Peek>(record::RecordReader<R>);

impl<R: record::Peek> Iterator for FromStdin<R> {
    type Item = Result<Checked>;

    fn next(&mut self) -> Option<Result<Checked>> {
        Some(self.0.next()?.map(|rec| Checked::new(rec, None)))
    }
}

impl<R: record::Peek> crate::stream::pipeline::Source<Checked> for FromStdin<R> {
    fn next_ready(&self) -> bool {
        self.0.next_ready()
    }
}

/// The problem name of a hard-link mismatch: a warning, like orphans.
const HARDLINK_MISMATCH: &str = "hardlink-mismatch";

/// Which objects `--read-data-subset` decrypts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// Part `n` (1-based) of `m`: objects whose id's first 8 hex digits,
    /// as a number, are `n - 1` modulo `m`.
    Part { n: u64, m: u64 },
    /// A fixed pseudo-random share: objects whose id's digits 8..16, as a
    /// number, modulo 10000 fall below `basis_points` (ids are HMAC
    /// outputs, so this is an even spread that is the same every run).
    Percent { basis_points: u64 },
}

impl Subset {
    /// Parses "N/M", "today/M" (N = days since 1970 modulo M, plus 1: a
    /// different part each day, every part once in M days) or "P%".
    pub fn parse(text: &str, days_since_epoch: u64) -> Result<Subset> {
        let bad = || {
            Error::usage(format!(
                "--read-data-subset {text:?}: give N/M (1 <= N <= M), today/M, or P% (0 < P <= 100)"
            ))
        };
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(Subset::Percent {
                basis_points: (p * 100.0).round() as u64,
            });
        }
        let (n, m) = text.split_once('/').ok_or_else(bad)?;
        let m: u64 = m.trim().parse().map_err(|_| bad())?;
        if m == 0 {
            return Err(bad());
        }
        let n = if n.trim() == "today" {
            days_since_epoch % m + 1
        } else {
            n.trim().parse().map_err(|_| bad())?
        };
        if n == 0 || n > m {
            return Err(bad());
        }
        Ok(Subset::Part { n, m })
    }

    /// Whether object `id` (checked hex) is in the subset.
    pub fn contains(&self, id: &str) -> bool {
        let num = |r: std::ops::Range<usize>| {
            id.get(r)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .unwrap_or(0)
        };
        match *self {
            Subset::Part { n, m } => num(0..8) % m == n - 1,
            Subset::Percent { basis_points } => num(8..16) % 10_000 < basis_points,
        }
    }
}

struct Verifier {
    repo: Repo,
    /// The repository's blobs, found through the local index.
    blobs: Blobs,
    key: Option<SecretKeys>,
    /// With `--read-data-subset`: the subset and the id key that checks
    /// each decrypted object against its id.
    subset: Option<(Subset, IdKey)>,
    /// With `--orphans`: every object id the records name.
    referenced: Option<Mutex<HashSet<[u8; 32]>>>,
    /// This machine's id key, when it has one: a single object's id must
    /// be the one the record's sha256 gives.
    id_key: Option<IdKey>,
    /// Result of checking each object id once (None = fine).
    seen_objects: Mutex<HashMap<String, Option<Problem>>>,
    /// Contents (sha256) already read back in full.
    seen_contents: Mutex<HashMap<String, Option<Problem>>>,
    /// `--read-data`: decrypt and re-hash every file.
    read_all: bool,
    records: AtomicU64,
    objects: AtomicU64,
    bytes_read: AtomicU64,
}

/// This machine's id key file of the repository (`explicit`, else the
/// default path), if there is one and it belongs to the repository.
fn local_id_key(repo: &Repo, explicit: Option<&std::path::Path>) -> Option<IdKey> {
    let path = explicit.map_or_else(|| crate::repo::idkey::default_path(repo.id()), Into::into);
    crate::repo::idkey::load_local(&path)
        .ok()
        .flatten()
        .filter(|k| k.check_value() == repo.config().id_key_check)
}

/// Runs bk-verify; returns the exit status.
pub fn run(cli: VerifyCli) -> Result<i32> {
    let repo = cli.repo.open()?;
    if cli.inventory {
        return inventory::run(&repo, cli.jobs.count());
    }
    let all_snapshots = cli.all_snapshots || cli.orphans;
    let subset = cli
        .read_data_subset
        .as_deref()
        .map(|t| Subset::parse(t, days_since_epoch()))
        .transpose()?;
    let needs_key = cli.read_data || subset.is_some() || all_snapshots;
    let key = if needs_key {
        let why = if all_snapshots {
            "bk-verify --all-snapshots/--orphans"
        } else {
            "bk-verify --read-data"
        };
        let key = cli.secret.require(why)?;
        crate::repo::idkey::check_secret(&repo, &key)?;
        Some(key)
    } else {
        None
    };
    let subset = match (subset, &key) {
        (Some(s), Some(k)) => Some((s, crate::repo::idkey::recover(&repo, k)?)),
        _ => None,
    };
    let (snapshots, trust) = match (&key, all_snapshots) {
        (Some(key), true) => (
            crate::repo::snapshot_name::oldest_first(repo.snapshots()?),
            crate::repo::trust::Trust::establish(&repo, Some(key), &cli.trust.options())?,
        ),
        _ => (Vec::new(), crate::repo::trust::Trust::everything()),
    };
    let snapshot_failed = Mutex::new(Outcome::default());
    let id_key = local_id_key(&repo, cli.trust.id_key.as_deref());
    let read_key = match (&id_key, &key) {
        (Some(k), _) => k.clone(),
        (None, Some(secret)) => crate::repo::idkey::recover(&repo, secret)?,
        // No check that needs the secret key, but no id key either: a
        // --key given recovers it (the secret key is only unlocked then).
        (None, None) => match cli.secret.load()? {
            Some(secret) => crate::repo::idkey::recover(&repo, &secret)?,
            None => {
                return Err(Error::key(format!(
                    "no id key for repository {}: the packs that hold its blobs are encrypted under keys derived from it",
                    repo.id()
                ))
                .hint("run this on a backing-up host, give --id-key FILE, or --key SECRET"))
            }
        },
    };
    // Reading every blob, check every pack's header again too: the local
    // index trusts a pack it knows by id and size, and one altered in place
    // (its header or footer damaged) would otherwise still be read from
    // here while any other host finds its blobs missing. A subset run,
    // made daily, does not: on S3 it would cost a request per pack.
    let (blobs, _) = if cli.read_data && subset.is_none() {
        Blobs::open_checked(&repo, &read_key)?
    } else {
        Blobs::open(&repo, &read_key, &[])?
    };
    let v = Verifier {
        blobs,
        repo,
        key,
        subset,
        referenced: cli.orphans.then(|| Mutex::new(HashSet::new())),
        id_key,
        seen_objects: Mutex::new(HashMap::new()),
        seen_contents: Mutex::new(HashMap::new()),
        read_all: cli.read_data,
        records: AtomicU64::new(0),
        objects: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
    };
    let mut out = record::stdout_records();
    let mut problems = 0u64;
    let v_ref = &v;
    let failed_ref = &snapshot_failed;
    let policy_ref = &trust;
    let mut mismatches = 0u64;
    let mut damaged_packs: BTreeSet<String> = BTreeSet::new();
    let input = move || -> Box<dyn crate::stream::pipeline::Source<Checked>> {
        let records: Box<dyn crate::stream::pipeline::Source<Checked>> = if all_snapshots {
            Box::new(crate::stream::pipeline::Unbatched(
                v_ref.all_snapshot_records(snapshots, policy_ref, failed_ref),
            ))
        } else {
            Box::new(FromStdin(record::stdin_records()))
        };
        Box::new(LinkChecked::new(records))
    };
    let mut outcome = crate::stream::pipeline::run(
        "bk-verify",
        cli.jobs.count(),
        crate::stream::pipeline::batch_for(v.repo.store().is_remote()),
        input,
        |job: Checked| Ok(Some(v.check(&job))),
        |results| results.len() * 256,
        |results: Option<Vec<Value>>| {
            let Some(results) = results else {
                return out.flush().map_err(record::stdout_error);
            };
            for r in &results {
                if r["problem"] == HARDLINK_MISMATCH {
                    mismatches += 1;
                } else {
                    problems += 1;
                }
                if let Some(pack) = r["pack"].as_str() {
                    damaged_packs.insert(pack.to_owned());
                }
                out.write_value(r).map_err(record::stdout_error)?;
            }
            Ok(())
        },
    )?;
    let failed = snapshot_failed
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut orphans = 0u64;
    if let Some(referenced) = &v.referenced {
        if failed.errors > 0 {
            crate::say!("bk-verify: orphans not listed: some snapshots could not be read, so objects only they reference would look orphaned");
        } else {
            let referenced = lock(referenced);
            let mut found: Vec<Value> = Vec::new();
            v.blobs
                .index()
                .for_each(&mut |id, loc| {
                    if !referenced.contains(id.as_bytes()) {
                        found.push(json!({
                            "problem": "orphan",
                            "object": id.to_string(),
                            "stored": loc.length,
                            "pack": loc.pack.to_string(),
                            "detail": format!("object {id} ({} bytes in pack {}) is referenced by no snapshot", loc.length, loc.pack),
                        }));
                    }
                })
                .map_err(|e| Error::io(&crate::repo::index::cache_dir(v.repo.id()), e))?;
            for value in &found {
                orphans += 1;
                out.write_value(value).map_err(record::stdout_error)?;
            }
        }
    }
    out.flush().map_err(record::stdout_error)?;
    if failed.errors > 0 {
        outcome.note(if failed.exit_code() == exit::KEY {
            ErrorKind::Key
        } else {
            ErrorKind::Repo
        });
    }
    let mut summary = format!(
        "bk-verify: {} records, {} objects checked",
        v.records.load(Ordering::Relaxed),
        v.objects.load(Ordering::Relaxed)
    );
    if all_snapshots {
        summary += &format!(" in {} snapshots", snapshot_count(&v.repo));
    }
    if cli.read_data || v.subset.is_some() {
        summary += &format!(
            ", {} bytes decrypted and re-hashed",
            v.bytes_read.load(Ordering::Relaxed)
        );
    }
    summary += &format!(": {problems} problems");
    if mismatches > 0 {
        summary += &format!(", {mismatches} hard-link mismatches (warnings)");
    }
    if cli.orphans {
        summary += &format!(", {orphans} orphaned objects");
    }
    crate::say!("{summary}");
    if !damaged_packs.is_empty() {
        crate::say!(
            "bk-verify: {} packs hold blobs that were found but could not be read back (each \"decrypt\" problem names its \"pack\"): if the cause is damage in storage, not a failed read, `bk-index repair --key SECRET PACK…` keeps their sound blobs and drops the damaged ones, and the next backup stores those again",
            damaged_packs.len()
        );
    }
    if cli.orphans_fail && orphans > 0 {
        problems += orphans;
    }
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

/// Days since 1970-01-01 (UTC), for `today/M`.
fn days_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

fn snapshot_count(repo: &Repo) -> usize {
    repo.snapshots().map_or(0, |s| s.len())
}

/// The 32 bytes of a hex object id (zeros for an id that is not one; such
/// ids are reported as problems anyway).
fn id_bytes(id: &str) -> [u8; 32] {
    ObjectId::parse(id).map_or([0; 32], |id| *id.as_bytes())
}

impl Verifier {
    /// The records of every snapshot in turn, each tagged with its
    /// snapshot's name. A snapshot that cannot be decrypted, is not
    /// authentic or is not a record stream is reported (and remembered in
    /// `failed`), and the others are still checked. Each snapshot is read
    /// twice from its decrypted spool, once to check that every line is a
    /// record and once to hand the records on, so memory does not grow
    /// with its size.
    fn all_snapshot_records<'a>(
        &'a self,
        names: Vec<String>,
        policy: &'a crate::repo::trust::Trust,
        failed: &'a Mutex<Outcome>,
    ) -> impl Iterator<Item = Result<Checked>> + 'a {
        names.into_iter().flat_map(move |name| {
            let none =
                || -> Box<dyn Iterator<Item = Result<Checked>>> { Box::new(std::iter::empty()) };
            let Some(key) = &self.key else {
                return none();
            };
            let tmp = std::env::temp_dir();
            let spool = decrypt_snapshot_and_root(&self.blobs, key, &name, policy).and_then(
                |(root, mut spool)| {
                    for r in record::RecordReader::new(BufReader::new(&spool)) {
                        r.map_err(|e| Error::repo(format!("snapshot {name}: {e}")))?;
                    }
                    spool.rewind().map_err(|e| Error::io(&tmp, e))?;
                    Ok((root, spool))
                },
            );
            match spool {
                Ok((root, spool)) => {
                    // The snapshot's pieces are blobs it references too.
                    if let Some(set) = &self.referenced {
                        let mut set = lock(set);
                        for p in &root.pieces {
                            set.insert(id_bytes(&p.piece));
                        }
                    }
                    let shared: Arc<str> = name.as_str().into();
                    Box::new(
                        record::RecordReader::new(BufReader::new(spool)).map(move |r| {
                            r.map_err(|e| Error::repo(format!("snapshot {name}: {e}")))
                                .map(|rec| Checked::new(rec, Some(Arc::clone(&shared))))
                        }),
                    )
                }
                Err(e) => {
                    lock(failed).report("bk-verify", &e);
                    none()
                }
            }
        })
    }

    /// Checks one record; returns its result records (empty when fine).
    fn check(&self, job: &Checked) -> Vec<Value> {
        let rec = &job.rec;
        self.records.fetch_add(1, Ordering::Relaxed);
        if rec.kind != Kind::File {
            return Vec::new();
        }
        let mut results = Vec::new();
        if let Some(link) = &job.link {
            let mut v = json!({
                "problem": HARDLINK_MISMATCH,
                "path": rec.path,
                "object": null,
            });
            if let Some(b) = &rec.path_b64 {
                v["path_b64"] = b.clone().into();
            }
            for (k, val) in link {
                v[k] = val.clone();
            }
            if let Some(s) = job.snapshot.as_deref() {
                v["snapshot"] = s.into();
            }
            results.push(v);
        }
        if let (Some(set), Some(objects)) = (&self.referenced, &rec.objects) {
            let mut set = lock(set);
            for o in objects {
                set.insert(id_bytes(&o.id));
            }
        }
        let problems = self.check_file(rec);
        results.extend(problems.into_iter().map(|p| {
            let mut v = json!({
                "problem": p.problem,
                "path": rec.path,
                "object": p.object,
                "detail": p.detail,
            });
            if let Some(b) = &rec.path_b64 {
                v["path_b64"] = b.clone().into();
            }
            if let Some(s) = job.snapshot.as_deref() {
                v["snapshot"] = s.into();
            }
            if let Some(pack) = self.damaged_pack(&p) {
                v["pack"] = pack.to_string().into();
            }
            v
        }));
        results
    }

    /// The problem of blob `id`, which could not be read back for `e`:
    /// `key` when the secret key cannot open it because none of its PKESK
    /// packets names that key (encrypted to other keys only: no damage),
    /// `decrypt` otherwise.
    fn unreadable(&self, key: &SecretKeys, id: &str, e: Error) -> Problem {
        let other_keys = e.kind() == ErrorKind::Key
            && ObjectId::parse(id)
                .and_then(|oid| self.blobs.message(&oid))
                .is_ok_and(|m| !key.is_recipient_of(&m));
        Problem {
            problem: if other_keys { "key" } else { "decrypt" },
            object: Some(id.to_owned()),
            detail: e.to_string(),
        }
    }

    /// The pack of a blob that was found but could not be read back (a
    /// "decrypt" problem): what `bk-index repair` is given.
    fn damaged_pack(&self, p: &Problem) -> Option<PackId> {
        if p.problem != "decrypt" {
            return None;
        }
        let id = ObjectId::parse(p.object.as_deref()?).ok()?;
        Some(self.blobs.locate(&id).ok()??.pack)
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
        if let Err(why) = crate::repo::objects::check_objects_cover_size(rec.size, objects) {
            problems.push(Problem {
                problem: "incomplete",
                object: None,
                detail: why,
            });
        }
        if let (Some(id_key), [one], Some(sha)) = (&self.id_key, objects.as_slice(), &rec.sha256) {
            if !id_key.id_matches(sha, &one.id) {
                problems.push(Problem {
                    problem: "wrong-id",
                    object: Some(one.id.clone()),
                    detail: "the object's id is not the one the record's sha256 gives (an edited record or a damaged reuse cache)".into(),
                });
            }
        }
        for obj in objects {
            if let Some(p) = self.check_object(&obj.id, obj.stored) {
                problems.push(p);
            }
        }
        if problems.is_empty() {
            if let (Some(key), Some((subset, id_key))) = (&self.key, &self.subset) {
                for obj in objects.iter().filter(|o| subset.contains(&o.id)) {
                    if let Some(p) = self.check_object_content(key, id_key, &obj.id, obj.size) {
                        problems.push(p);
                    }
                }
            } else if let (Some(key), true) = (&self.key, self.read_all) {
                if let Some(p) = self.check_content(key, rec) {
                    problems.push(p);
                }
            }
        }
        problems
    }

    /// Decrypts one object and checks it against its own id (HMAC of the
    /// plaintext's SHA-256) and the size the record gives; once per id.
    fn check_object_content(
        &self,
        key: &SecretKeys,
        id_key: &IdKey,
        id: &str,
        size: u64,
    ) -> Option<Problem> {
        let cache_key = format!("object:{id}:{size}");
        if let Some(done) = lock(&self.seen_contents).get(&cache_key) {
            return done.clone();
        }
        let mut sink = HashSink {
            hasher: Sha256::new(),
            count: 0,
        };
        let decrypted =
            ObjectId::parse(id).and_then(|oid| self.blobs.read(&oid, key, &mut sink, "(hash)"));
        let problem = match decrypted {
            Err(e) => Some(self.unreadable(key, id, e)),
            Ok(_) => {
                let digest = hex::encode(sink.hasher.finalize());
                let matches = id_key
                    .object_id(&digest)
                    .is_ok_and(|want| want.to_string() == id);
                (!matches || sink.count != size).then(|| Problem {
                    problem: "hash",
                    object: Some(id.to_owned()),
                    detail: format!(
                        "object {id} decrypts to {} bytes (the record says {size}) whose hash does{} match the object id",
                        sink.count,
                        if matches { "" } else { " not" }
                    ),
                })
            }
        };
        self.bytes_read.fetch_add(sink.count, Ordering::Relaxed);
        remember(&self.seen_contents, cache_key, problem.clone());
        problem
    }

    /// Presence and stored size of one object, checked once per id.
    fn check_object(&self, id: &str, stored: Option<u64>) -> Option<Problem> {
        let cache_key = format!("{id}:{stored:?}");
        if let Some(done) = lock(&self.seen_objects).get(&cache_key) {
            return done.clone();
        }
        self.objects.fetch_add(1, Ordering::Relaxed);
        let problem = match ObjectId::parse(id) {
            Err(e) => Some(Problem {
                problem: "missing",
                object: Some(id.to_owned()),
                detail: e.to_string(),
            }),
            Ok(oid) => match self.blobs.locate(&oid) {
                Ok(None) => Some(Problem {
                    problem: "missing",
                    object: Some(id.to_owned()),
                    detail: format!(
                        "object {id} is missing from the repository (no pack holds it)"
                    ),
                }),
                Ok(Some(loc)) => match stored {
                    Some(want) if want != loc.length => Some(Problem {
                        problem: "size",
                        object: Some(id.to_owned()),
                        detail: format!(
                            "object {id} has {} bytes in pack {}, the record says {want}",
                            loc.length, loc.pack
                        ),
                    }),
                    _ => None,
                },
                Err(e) => Some(Problem {
                    problem: "missing",
                    object: Some(id.to_owned()),
                    detail: e.to_string(),
                }),
            },
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
            let decrypted =
                ObjectId::parse(id).and_then(|oid| self.blobs.read(&oid, key, &mut sink, "(hash)"));
            if let Err(e) = decrypted {
                problem = Some(self.unreadable(key, id, e));
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

/// The first record seen of an inode with several links.
struct FirstRecord {
    path: String,
    path_b64: Option<String>,
}

/// The reader's side of the hard-link check: marks each file record that
/// shares root, device and inode with an earlier record of the same
/// snapshot but not its size or sha256 ([`crate::stages::open::restore::LinkCheck`], so
/// exactly the records bk-open restores as separate files instead of
/// links), and says so on stderr. Sequential, so "earlier" is input order;
/// at most [`crate::stages::open::restore::MAX_PENDING_LINKS`] inodes are remembered.
struct LinkChecked<S> {
    inner: S,
    links: crate::stages::open::restore::LinkCheck<
        (Option<std::ffi::OsString>, u64, u64),
        FirstRecord,
    >,
    snapshot: Option<Arc<str>>,
    full_noted: bool,
}

impl<S> LinkChecked<S> {
    fn new(inner: S) -> Self {
        LinkChecked {
            inner,
            links: Default::default(),
            snapshot: None,
            full_noted: false,
        }
    }

    fn mark(&mut self, job: &mut Checked) {
        if job.snapshot != self.snapshot {
            self.snapshot.clone_from(&job.snapshot);
            self.links.clear();
        }
        let rec = &job.rec;
        if rec.kind != Kind::File || rec.nlink < 2 {
            return;
        }
        let key = (rec.root_os().ok().flatten(), rec.dev, rec.ino);
        let found = match self.links.find(&key, rec) {
            crate::stages::open::restore::LinkMatch::First => None,
            crate::stages::open::restore::LinkMatch::Same(_) => {
                self.links.linked(&key);
                return;
            }
            crate::stages::open::restore::LinkMatch::Differs(first) => {
                Some((first.path.clone(), first.path_b64.clone()))
            }
        };
        let Some((other, other_b64)) = found else {
            let first = FirstRecord {
                path: rec.path.clone(),
                path_b64: rec.path_b64.clone(),
            };
            if !self.links.remember(key, rec, first) && !self.full_noted {
                self.full_noted = true;
                crate::say!("bk-verify: more than {} hard-linked files wait for their other links; further ones are not checked for a mismatch", crate::stages::open::restore::MAX_PENDING_LINKS);
            }
            return;
        };
        let detail = format!(
            "{:?} has the device and inode of {other:?} but another size or sha256: not the same file (bk-open restores it as a separate file)",
            rec.path
        );
        crate::say!("bk-verify: warning: {detail}");
        let mut link = serde_json::Map::new();
        link.insert("other".into(), other.into());
        link.insert("detail".into(), detail.into());
        if let Some(b) = other_b64 {
            link.insert("other_b64".into(), b.into());
        }
        if let Some(r) = &rec.root {
            link.insert("root".into(), r.clone().into());
        }
        job.link = Some(link);
    }
}

impl<S: crate::stream::pipeline::Source<Checked>> Iterator for LinkChecked<S> {
    type Item = Result<Checked>;

    fn next(&mut self) -> Option<Result<Checked>> {
        let mut item = self.inner.next()?;
        if let Ok(rec) = &mut item {
            self.mark(rec);
        }
        Some(item)
    }
}

impl<S: crate::stream::pipeline::Source<Checked>> crate::stream::pipeline::Source<Checked>
    for LinkChecked<S>
{
    fn next_ready(&self) -> bool {
        self.inner.next_ready()
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
