//! The pack inventory: a keyless record of what the repository holds.
//!
//! Whenever a pack is committed, one line is appended to
//! `inventory/<UTC time>-<rand>.ndjson` (one file per process):
//!
//! ```text
//! {"pack":"<pack id>","stored":<bytes>,"blake3":"<hex BLAKE3 of the pack file>"}
//! ```
//!
//! These are public facts: the id is already the file's name,
//! `stored` its size, and the hash is over the stored bytes (encrypted
//! under keys the operator does not have). So `bk-verify --inventory` can
//! re-hash every pack and detect bit rot, truncation or loss on the
//! storage side without any key. It detects accidents, not a malicious
//! operator, who could rewrite the inventory too (the keyed checks catch
//! that).
//!
//! A line `{"pack":…,"removed":true}` says a pack is expected to be gone
//! (prune writes it just before it deletes one): its absence is then no
//! problem, while a pack still there (a prune killed before it deleted it)
//! is still checked against its hash.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use rand::RngCore;
use serde_json::{json, Value};

use serde::Serialize;

use crate::error::{io_cause, Error, Result};
use crate::repo::id::PackId;
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

/// Appends the line of one pack (`{"pack","stored","blake3"}`) to this
/// process's inventory file and makes it durable.
pub fn append_pack(repo: &Repo, id: &PackId, stored: u64, blake3: &str) -> Result<()> {
    let line = json!({"pack": id.to_string(), "stored": stored, "blake3": blake3});
    let mut text = line.to_string().into_bytes();
    text.push(b'\n');
    write_lines(repo, &text)
}

/// Records that prune is about to delete these packs, so the keyless
/// check does not report them missing, even if prune is killed midway.
pub fn append_removed_packs(repo: &Repo, ids: &[PackId]) -> Result<()> {
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

/// Every pack the inventory holds, by id: about 120 bytes of memory per
/// pack it names (ids and hashes parsed, not kept as text).
pub type Inventory = BTreeMap<PackId, Entry>;

/// What the inventory says about one pack.
#[derive(Debug, Clone)]
pub struct Entry {
    stored: u64,
    /// BLAKE3 of the pack file.
    blake3: [u8; 32],
    /// Prune meant to delete it: its absence is no problem.
    removed: bool,
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
    let mut map: Inventory = BTreeMap::new();
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
            // Its packs were stored, so they only show as uninventoried.
            if !complete && parsed.is_err() {
                crate::say!(
                    "bk-verify: {shown}: ignoring its torn last line (line {n}, {} bytes without an end of line, left by an interrupted write); the packs it named count as not in the inventory",
                    line.len()
                );
                break;
            }
            let v: Value = parsed.map_err(|e| bad(&e.to_string()))?;
            let id = v["pack"].as_str().ok_or_else(|| bad("no \"pack\""))?;
            let id = PackId::parse(id).map_err(|e| bad(&e.to_string()))?;
            if v["removed"].as_bool() == Some(true) {
                if let Some(e) = map.get_mut(&id) {
                    e.removed = true;
                }
                continue;
            }
            let stored = v["stored"].as_u64().ok_or_else(|| bad("no \"stored\""))?;
            let blake3 = v["blake3"]
                .as_str()
                .and_then(|h| <[u8; 32]>::try_from(hex::decode(h).ok()?).ok())
                .ok_or_else(|| bad("no \"blake3\" of 64 hex digits"))?;
            map.insert(
                id,
                Entry {
                    stored,
                    blake3,
                    removed: false,
                },
            );
        }
    }
    Ok(Some(map))
}

/// Every pack under `packs/`, as (id, stored size), sorted.
pub fn pack_files(repo: &Repo) -> Result<Vec<(PackId, u64)>> {
    let mut out = Vec::new();
    repo.store()
        .walk("packs", &mut |rel, stat| {
            if let Some(id) = PackId::from_key(rel) {
                out.push((id, stat.size));
            }
        })
        .map_err(|e| repo.error("packs", &e))?;
    out.sort();
    Ok(out)
}

/// The packs the inventory holds and nothing holds any more: an
/// inventory entry whose pack file is not in `on_disk`.
pub fn missing<'a>(
    inventory: &'a Inventory,
    on_disk: &'a [(PackId, u64)],
) -> impl Iterator<Item = Problem> + 'a {
    inventory
        .iter()
        .filter(|(id, e)| !e.removed && on_disk.binary_search_by(|(p, _)| p.cmp(id)).is_err())
        .map(|(id, e)| {
            Problem::new(
                ProblemKind::Missing,
                &id.to_string(),
                format!(
                    "pack {id} is in the inventory ({} bytes) but not in the repository",
                    e.stored
                ),
            )
        })
}

/// What `bk-verify --inventory` finds wrong with one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemKind {
    /// In the inventory, not in the repository (or not a pack name).
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
    /// The pack id.
    pub pack: String,
    /// What is wrong, for people.
    pub detail: String,
}

/// Packs the inventory expects to be there (not removed by prune).
pub fn live(inventory: &Inventory) -> usize {
    inventory.values().filter(|e| !e.removed).count()
}

impl Problem {
    fn new(problem: ProblemKind, pack: &str, detail: String) -> Problem {
        Problem {
            problem,
            pack: pack.to_owned(),
            detail,
        }
    }
}

/// Re-hashes one pack file, `listed` bytes long by the listing, against
/// what the inventory says of it (`want`, `None` if nothing), adding the
/// bytes read to `bytes`; returns its problem, if any. A pack whose listed
/// size is not the inventory's is a `size` problem at once: nothing of it
/// is read (it may be a sparse file of any size), and no more of any pack
/// is read than the inventory says it holds (and one byte).
pub fn check_pack(
    repo: &Repo,
    pack: &PackId,
    listed: u64,
    want: Option<&Entry>,
    bytes: &AtomicU64,
) -> Option<Problem> {
    let id = &pack.to_string();
    let Some(want) = want else {
        return Some(Problem::new(ProblemKind::Uninventoried, id, format!("pack {id} is not in the inventory (its inventory line was lost, e.g. to a full disk while it was written); warning only")));
    };
    let problem = |kind: ProblemKind, detail: String| Some(Problem::new(kind, id, detail));
    let wrong_size = |n: u64| {
        problem(
            ProblemKind::Size,
            format!(
                "pack {id} has {n} bytes, the inventory says {}",
                want.stored
            ),
        )
    };
    if listed != want.stored {
        return wrong_size(listed);
    }
    let key = pack.key();
    let mut file = match repo.store().open(&key) {
        Ok(Some(f)) => f.take(want.stored.saturating_add(1)),
        Ok(None) => return problem(ProblemKind::Missing, format!("pack {id}: missing")),
        // Not a regular file (a FIFO, a device), or unreadable: named, and
        // the run ends as a repository problem (exit 5).
        Err(e) => {
            return problem(
                ProblemKind::Unreadable,
                format!(
                    "pack {id}: {}: {}",
                    repo.store().describe(&key),
                    io_cause(&e)
                ),
            )
        }
    };
    let mut hasher = blake3::Hasher::new();
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
                    format!("pack {id}: read error: {}", io_cause(&e)),
                )
            }
        }
    }
    bytes.fetch_add(n, Ordering::Relaxed);
    if n != want.stored {
        return wrong_size(n);
    }
    let got = hasher.finalize();
    if *got.as_bytes() != want.blake3 {
        return problem(
            ProblemKind::Bitrot,
            format!(
                "pack {id}: BLAKE3 {} differs from the inventory's {} (corrupted in storage)",
                got.to_hex(),
                hex::encode(want.blake3)
            ),
        );
    }
    None
}
