//! Reusing the hash and objects of unchanged files from an earlier
//! snapshot, without reading them.
//!
//! A file is unchanged when its size, mtime, ctime, inode and device all
//! equal the earlier record's (ctime cannot be set by a program, so a
//! rewrite that restores the mtime is still noticed). The earlier records
//! are read as a stream alongside the input: both are in bk's record order
//! (see [`crate::record::order`]), so memory stays flat however large the tree.
//! Input records that arrive out of order are simply hashed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::record::order::cmp_paths;
use crate::record::{Kind, Record, RecordReader};

/// Where earlier records come from.
#[derive(Debug, Clone)]
pub enum ReuseSource {
    /// The local cache of the latest snapshot of each root in a repository.
    Cache {
        /// Repository id.
        repo_id: String,
        /// The keys its MAC lines are checked with.
        keys: crate::repo::authkey::AuthKeys,
    },
    /// One plaintext record file (e.g. saved `bk-index show` output).
    File(PathBuf),
    /// No earlier records (a repository that does not exist yet).
    Nothing,
}

impl ReuseSource {
    /// Parses `--reuse`: "auto" needs the repository, and this machine's
    /// id key (`id_key`, else the default file) to check the cache with.
    pub fn from_arg(
        arg: &str,
        repo: Option<&crate::storage::location::Location>,
        s3: &crate::storage::s3::S3Options,
        id_key: Option<&std::path::Path>,
    ) -> Result<ReuseSource> {
        if arg == "auto" {
            let repo = repo.ok_or_else(|| {
                Error::usage("--reuse auto needs --repo DIR (or BK_REPO) to find its cache")
            })?;
            let handle = crate::repo::RepoHandle::new(repo, s3)?;
            // On the very first run (`bk-seal --init` later in the same
            // pipeline) there is no repository and nothing to reuse yet.
            if !handle.exists()? {
                return Ok(ReuseSource::Nothing);
            }
            let repo = crate::repo::Repo::open_handle(handle)?;
            let path =
                id_key.map_or_else(|| crate::repo::idkey::default_path(repo.id()), Into::into);
            let key = match crate::repo::idkey::load_local(&path)? {
                Some(k) if k.check_value() == repo.config().id_key_check => k,
                found => {
                    crate::say!(
                        "bk-hash: --reuse auto: {} {}, which checks the reuse cache: every file is read (give --id-key FILE, the one bk-seal uses)",
                        path.display(),
                        if found.is_some() { "does not hold this repository's id key" } else { "does not exist" }
                    );
                    return Ok(ReuseSource::Nothing);
                }
            };
            return Ok(ReuseSource::Cache {
                keys: crate::repo::authkey::AuthKeys::derive(&key, repo.id()),
                repo_id: repo.id().to_owned(),
            });
        }
        let path = PathBuf::from(arg);
        if !path.is_file() {
            return Err(Error::usage(format!(
                "--reuse {arg}: no such record file (give a file of records or \"auto\")"
            )));
        }
        Ok(ReuseSource::File(path))
    }

    fn open(&self, root: &[u8]) -> Option<RecordReader<Box<dyn BufRead + Send>>> {
        let reader: Box<dyn BufRead + Send> = match self {
            ReuseSource::Cache { repo_id, keys } => {
                Box::new(crate::local::snapcache::open(repo_id, root, keys)?)
            }
            ReuseSource::File(path) => {
                Box::new(BufReader::with_capacity(256 << 10, File::open(path).ok()?))
            }
            ReuseSource::Nothing => return None,
        };
        Some(RecordReader::new(reader))
    }
}

/// One cursor per root over the earlier records of that root.
struct Cursor {
    reader: Option<RecordReader<Box<dyn BufRead + Send>>>,
    root: Vec<u8>,
    current: Option<(Vec<u8>, Record)>,
}

impl Cursor {
    /// Moves to the first earlier record whose path is not before `path`.
    fn seek(&mut self, path: &[u8]) -> Option<&Record> {
        loop {
            if let Some((p, _)) = &self.current {
                match cmp_paths(p, path) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return self.current.as_ref().map(|c| &c.1),
                    std::cmp::Ordering::Greater => return None,
                }
            }
            self.current = self.next_of_root();
            self.current.as_ref()?;
        }
    }

    /// The next earlier record of this cursor's root (a record file may
    /// hold several roots; a bad line ends reuse for the root).
    fn next_of_root(&mut self) -> Option<(Vec<u8>, Record)> {
        let reader = self.reader.as_mut()?;
        for rec in reader.by_ref() {
            let Ok(rec) = rec else {
                break;
            };
            let root = rec.root_os().ok().flatten();
            if root.as_ref().map(|r| r.as_bytes()) != Some(self.root.as_slice()) {
                continue;
            }
            if let Ok(p) = rec.path_os() {
                return Some((p.as_bytes().to_vec(), rec));
            }
        }
        self.reader = None;
        None
    }
}

/// Looks up earlier records for a stream of new ones.
pub struct Reuser {
    source: ReuseSource,
    cursors: HashMap<Vec<u8>, Cursor>,
    /// Files whose hash and objects were reused.
    pub reused: u64,
}

impl Reuser {
    /// A reuser over `source`.
    pub fn new(source: ReuseSource) -> Self {
        Reuser {
            source,
            cursors: HashMap::new(),
            reused: 0,
        }
    }

    /// Copies `sha256` and `objects` from the earlier record of the same
    /// unchanged file, if there is one. Returns whether it did.
    pub fn apply(&mut self, rec: &mut Record) -> bool {
        if rec.kind != Kind::File || rec.sha256.is_some() {
            return false;
        }
        let (Ok(Some(root)), Ok(path)) = (rec.root_os(), rec.path_os()) else {
            return false;
        };
        let root = root.as_bytes().to_vec();
        let source = &self.source;
        let cursor = self.cursors.entry(root.clone()).or_insert_with(|| Cursor {
            reader: source.open(&root),
            root,
            current: None,
        });
        let Some(old) = cursor.seek(path.as_bytes()) else {
            return false;
        };
        let unchanged = old.kind == Kind::File
            && old.size == rec.size
            && old.mtime_ns == rec.mtime_ns
            && old.ctime_ns == rec.ctime_ns
            && old.ino == rec.ino
            && old.dev == rec.dev
            && old.sha256.is_some()
            && old.objects.as_ref().is_some_and(|o| !o.is_empty());
        if !unchanged {
            return false;
        }
        rec.sha256.clone_from(&old.sha256);
        rec.objects.clone_from(&old.objects);
        self.reused += 1;
        true
    }
}
