//! The local cache of snapshot summaries: what `bk-index list` shows
//! without decrypting a snapshot, saved by `bk-index write`.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::record::{Kind, Record};
use crate::repo::snapshot_name::SnapshotName;
use crate::repo::Repo;

/// What `list` shows without decrypting a snapshot; kept in the local
/// cache by `write`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Snapshot file name.
    pub name: String,
    /// Creation time (RFC 3339), from the name.
    pub time: String,
    /// Host that made it, from its root.
    pub host: String,
    /// File records.
    pub files: u64,
    /// All records.
    pub entries: u64,
    /// Sum of file sizes.
    pub bytes: u64,
}

impl Summary {
    /// An empty summary of the snapshot `name` (its time from the name),
    /// made on `host`.
    pub fn named(name: &str, host: &str) -> Summary {
        let parsed = SnapshotName::parse(name);
        Summary {
            name: name.to_owned(),
            time: parsed
                .as_ref()
                .map_or_else(String::new, |p| p.time().to_owned()),
            host: host.to_owned(),
            ..Summary::default()
        }
    }

    /// The summary a snapshot's root gives.
    pub fn of_root(name: &str, header: &crate::repo::catalogue::RootHeader) -> Summary {
        Summary {
            files: header.files,
            entries: header.records,
            bytes: header.bytes,
            ..Summary::named(name, &header.host)
        }
    }

    pub fn add(&mut self, rec: &Record) {
        self.entries += 1;
        if rec.kind == Kind::File {
            self.files += 1;
            self.bytes += rec.size;
        }
    }
}

/// The local cache file of a snapshot's summary (what `list` shows
/// without decrypting it).
pub fn summary_path(repo: &Repo, name: &str) -> PathBuf {
    crate::sys::paths::cache_home()
        .join("bk")
        .join(repo.id())
        .join("summaries")
        .join(format!("{name}.json"))
}

/// Saves a summary in the local cache; a cache that cannot be written only
/// costs a decryption later, so failures are ignored.
pub fn save_summary(repo: &Repo, summary: &Summary) {
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

/// A saved summary, if there is a readable one.
pub fn load_summary(repo: &Repo, name: &str) -> Option<Summary> {
    let data = fs::read(summary_path(repo, name)).ok()?;
    serde_json::from_slice(&data).ok()
}
