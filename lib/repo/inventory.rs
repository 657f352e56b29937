//! The object inventory: a keyless record of what the repository holds.
//!
//! Whenever objects are committed, one line per new object is appended to
//! `inventory/<UTC time>-<rand>.ndjson` (one file per process):
//!
//! ```text
//! {"id":"<object id>","stored":<bytes>,"blake3":"<hex BLAKE3 of the object file>"}
//! ```
//!
//! (Lines with `"sha256"` in place of `"blake3"` are checked with
//! SHA-256.) These are public facts: the id is already the file's name,
//! `stored` its size, and the hash is over the ciphertext (random session
//! keys make it unrelated to the plaintext). So `bk-verify --inventory`
//! can re-hash every object file and detect bit rot, truncation or loss on the storage side
//! without any key. It detects accidents, not a malicious operator, who
//! could rewrite the inventory too (the secret-key checks catch that).
//!
//! A line `{"id":…,"removed":true}` withdraws an object (for tools that
//! delete objects); later lines win.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use serde::Serialize;

use crate::error::{io_cause, Error, Result};
use crate::repo::id::ObjectId;
use crate::repo::Repo;
use crate::storage::{self, Commit};

/// The inventory directory of a repository.
const DIR: &str = "inventory";

/// This process's inventory file name stem, chosen once.
fn file_stem() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut rnd = [0u8; 4];
        rand::thread_rng().fill_bytes(&mut rnd);
        let stamp = humantime::format_rfc3339_micros(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        format!("{stamp}-{}", hex::encode(rnd))
    })
}

/// Appends `(id, stored bytes, hex BLAKE3)` lines to this process's
/// inventory file and makes them durable.
pub fn append(repo: &Repo, entries: &[(ObjectId, u64, &str)]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut text = Vec::new();
    for (id, stored, hash) in entries {
        let line = json!({"id": id.to_string(), "stored": stored, "blake3": hash});
        text.extend_from_slice(line.to_string().as_bytes());
        text.push(b'\n');
    }
    write_lines(repo, &text)
}

/// Appends the line of one pack (`{"pack","stored","blake3"}`) to this
/// process's inventory file and makes it durable.
pub fn append_pack(
    repo: &Repo,
    id: &crate::repo::id::PackId,
    stored: u64,
    blake3: &str,
) -> Result<()> {
    let line = json!({"pack": id.to_string(), "stored": stored, "blake3": blake3});
    let mut text = line.to_string().into_bytes();
    text.push(b'\n');
    write_lines(repo, &text)
}

/// Records that prune deleted these packs, so the keyless check does not
/// report them missing.
pub fn append_removed_packs(repo: &Repo, ids: &[crate::repo::id::PackId]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut text = Vec::new();
    for id in ids {
        text.extend_from_slice(
            json!({"pack": id.to_string(), "removed": true})
                .to_string()
                .as_bytes(),
        );
        text.push(b'\n');
    }
    write_lines(repo, &text)
}

/// Records that prune deleted these objects, so the keyless check does not
/// report them missing.
pub fn append_removed(repo: &Repo, ids: &[String]) -> Result<()> {
    // A repository written before the inventory existed gets none here
    // either: a partial inventory would make every other object look
    // uninventoried.
    let has_inventory = || repo.store().list(DIR).is_ok_and(|e| !e.is_empty());
    if ids.is_empty() || !has_inventory() {
        return Ok(());
    }
    let mut text = Vec::new();
    for id in ids {
        text.extend_from_slice(json!({"id": id, "removed": true}).to_string().as_bytes());
        text.push(b'\n');
    }
    write_lines(repo, &text)
}

/// Appends lines to this process's inventory file and makes them durable,
/// whole lines or none; where the storage cannot append (S3), each call
/// writes a new file. A failure on a local directory (a full disk) is a
/// local I/O error (exit 6), on remote storage a repository error.
fn write_lines(repo: &Repo, text: &[u8]) -> Result<()> {
    /// Files written so far, and whether appending to the current one failed.
    struct Writing {
        seq: u64,
        append_failed: bool,
    }
    static WRITING: Mutex<Writing> = Mutex::new(Writing {
        seq: 0,
        append_failed: false,
    });
    let mut w = crate::sys::sync::lock(&WRITING);
    let store = repo.store();
    // After a failed append the file may end in part of a line (where the
    // storage could not cut it off again): later lines go to a new file.
    let key = if w.append_failed {
        storage::join(DIR, &format!("{}-{:06}.ndjson", file_stem(), w.seq))
    } else {
        storage::join(DIR, &format!("{}.ndjson", file_stem()))
    };
    match store.append(&key, text) {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => {
            w.append_failed = true;
            w.seq += 1;
            return Err(repo.write_error(&key, e));
        }
    }
    w.seq += 1;
    let key = storage::join(DIR, &format!("{}-{:06}.ndjson", file_stem(), w.seq));
    repo.put(&key, |out| out.write_all(text), Commit::Replace)
}

/// The longest inventory line read (a line is about 170 bytes).
const MAX_LINE: u64 = 4096;

/// Every object the inventory holds, by id.
pub type Inventory = BTreeMap<String, Entry>;

/// What the inventory says about one object.
#[derive(Debug, Clone)]
pub struct Entry {
    stored: u64,
    hash: FileHash,
}

/// The hash of an object file the inventory holds, with its algorithm.
#[derive(Debug, Clone)]
enum FileHash {
    Blake3(String),
    /// Lines written before the inventory used BLAKE3.
    Sha256(String),
}

impl FileHash {
    fn hex(&self) -> &str {
        match self {
            FileHash::Blake3(h) | FileHash::Sha256(h) => h,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            FileHash::Blake3(_) => "BLAKE3",
            FileHash::Sha256(_) => "SHA-256",
        }
    }
}

/// Hashes a stream the way one inventory entry was made.
enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(Sha256),
}

impl Hasher {
    fn for_entry(hash: &FileHash) -> Hasher {
        match hash {
            FileHash::Blake3(_) => Hasher::Blake3(Box::default()),
            FileHash::Sha256(_) => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn hex(self) -> String {
        match self {
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

/// Reads every inventory file: `None` if the repository has none at all.
pub fn load(repo: &Repo) -> Result<Option<Inventory>> {
    let files: Vec<String> = repo
        .store()
        .list(DIR)
        .map_err(|e| repo.error(DIR, &e))?
        .into_iter()
        .filter(|e| !e.is_dir && e.name.ends_with(".ndjson"))
        .map(|e| storage::join(DIR, &e.name))
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for file in files {
        let shown = repo.store().describe(&file);
        let mut reader = repo.open_key(&file, &shown)?;
        let mut line = Vec::new();
        for n in 1u64.. {
            line.clear();
            let got = (&mut reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| repo.error(&file, &e))?;
            if got == 0 {
                break;
            }
            let bad = |why: &str| Error::repo(format!("{shown} line {n}: {why}"));
            let complete = line.last() == Some(&b'\n');
            if !complete && line.len() as u64 > MAX_LINE {
                return Err(bad(&format!("longer than {MAX_LINE} bytes")));
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            let parsed = serde_json::from_slice::<Value>(&line);
            // The last line without its end of line, unreadable: a write
            // that a crash, or a full disk under an older bk, cut short.
            // Its objects were stored, so they only show as uninventoried.
            if !complete && parsed.is_err() {
                crate::say!(
                    "bk-verify: {shown}: ignoring its torn last line (line {n}, {} bytes without an end of line, left by an interrupted write); the objects it named count as not in the inventory",
                    line.len()
                );
                break;
            }
            let v: Value = parsed.map_err(|e| bad(&e.to_string()))?;
            let id = v["id"].as_str().ok_or_else(|| bad("no \"id\""))?;
            if v["removed"].as_bool() == Some(true) {
                map.remove(id);
                continue;
            }
            let stored = v["stored"].as_u64().ok_or_else(|| bad("no \"stored\""))?;
            let hash = match (v["blake3"].as_str(), v["sha256"].as_str()) {
                (Some(h), _) => FileHash::Blake3(h.to_owned()),
                (None, Some(h)) => FileHash::Sha256(h.to_owned()),
                (None, None) => return Err(bad("no \"blake3\" (or \"sha256\")")),
            };
            map.insert(id.to_owned(), Entry { stored, hash });
        }
    }
    Ok(Some(map))
}

/// Every object under `objects/` (two levels), as (id, stored size).
pub fn object_files(repo: &Repo) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    repo.for_each_object(&mut |id, size| out.push((id.to_string(), size)))?;
    out.sort();
    Ok(out)
}

/// The objects the inventory holds and nothing holds any more: an
/// inventory entry whose object file is not in `on_disk`.
pub fn missing<'a>(
    inventory: &'a Inventory,
    on_disk: &'a BTreeMap<&str, u64>,
) -> impl Iterator<Item = Problem> + 'a {
    inventory
        .iter()
        .filter(|(id, _)| !on_disk.contains_key(id.as_str()))
        .map(|(id, e)| {
            Problem::new(
                ProblemKind::Missing,
                id,
                format!(
                    "object {id} is in the inventory ({} bytes) but not in the repository",
                    e.stored
                ),
            )
        })
}

/// What `bk-verify --inventory` finds wrong with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// In the inventory, not in the repository (or not an object name).
    Missing,
    /// Not the stored size the inventory says.
    Size,
    /// Not the bytes the inventory hashed, or a read error.
    Bitrot,
    /// Not a regular file, or it cannot be opened: a repository problem.
    Unreadable,
    /// Stored, but not in the inventory: a warning only.
    Uninventoried,
}

/// One problem record, as printed.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// What kind of problem.
    pub problem: ProblemKind,
    /// The object id.
    pub object: String,
    /// What is wrong, for people.
    pub detail: String,
}

impl Problem {
    fn new(problem: ProblemKind, object: &str, detail: String) -> Problem {
        Problem {
            problem,
            object: object.to_owned(),
            detail,
        }
    }
}

/// Re-hashes one object file against what the inventory says of it
/// (`want`, `None` if nothing), adding the bytes read to `bytes`; returns
/// its problem, if any.
pub fn check_object(
    repo: &Repo,
    id: &str,
    want: Option<&Entry>,
    bytes: &AtomicU64,
) -> Option<Problem> {
    let Some(want) = want else {
        return Some(Problem::new(ProblemKind::Uninventoried, id, format!("object {id} is not in the inventory (stored before the inventory existed, or by an interrupted run); warning only")));
    };
    let problem = |kind: ProblemKind, detail: String| Some(Problem::new(kind, id, detail));
    let Ok(key) = ObjectId::parse(id).map(|id| id.key()) else {
        return problem(
            ProblemKind::Missing,
            format!("object {id}: not an object id"),
        );
    };
    let mut file = match repo.store().open(&key) {
        Ok(Some(f)) => f,
        Ok(None) => return problem(ProblemKind::Missing, format!("object {id}: missing")),
        // Not a regular file (a FIFO, a device), or unreadable: named, and
        // the run ends as a repository problem (exit 5).
        Err(e) => {
            return problem(
                ProblemKind::Unreadable,
                format!(
                    "object {id}: {}: {}",
                    repo.store().describe(&key),
                    io_cause(&e)
                ),
            )
        }
    };
    let mut hasher = Hasher::for_entry(&want.hash);
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                hasher.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return problem(
                    ProblemKind::Bitrot,
                    format!("object {id}: read error: {}", io_cause(&e)),
                )
            }
        }
    }
    bytes.fetch_add(n, Ordering::Relaxed);
    if n != want.stored {
        return problem(
            ProblemKind::Size,
            format!(
                "object {id} has {n} bytes, the inventory says {}",
                want.stored
            ),
        );
    }
    let got = hasher.hex();
    if got != want.hash.hex() {
        return problem(
            ProblemKind::Bitrot,
            format!(
                "object {id}: {} {got} differs from the inventory's {} (corrupted in storage)",
                want.hash.name(),
                want.hash.hex()
            ),
        );
    }
    None
}
