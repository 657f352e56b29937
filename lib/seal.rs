//! bk-seal: store every content not yet in the repository as an encrypted
//! object and add the object ids to the records.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cli::SealCli;
use crate::crypto::{PassphraseSource, Recipients, SecretKeys};
use crate::error::{Error, Result};
use crate::idkey::{self, IdKey};
use crate::record::{self, Kind, ObjectRef, Record};
use crate::repo::{self, Repo, StoreError};
use crate::source::{open_source, HashingReader};

/// Everything the sealing workers share.
struct Sealer {
    repo: Repo,
    recipients: Recipients,
    id_key: IdKey,
    touched_dirs: Mutex<BTreeSet<PathBuf>>,
    files: AtomicU64,
    new_objects: AtomicU64,
    new_bytes: AtomicU64,
    read_bytes: AtomicU64,
}

/// Runs bk-seal; returns the exit status.
pub fn run(cli: SealCli) -> Result<i32> {
    let started = std::time::Instant::now();
    let recipients = Recipients::load(&cli.recipients.recipients)?;
    let repo = open_or_init(&cli, &recipients)?;
    check_recipients(&repo, &recipients)?;
    let id_key = load_id_key(&cli, &repo)?;
    let sealer = Sealer {
        repo,
        recipients,
        id_key,
        touched_dirs: Mutex::new(BTreeSet::new()),
        files: AtomicU64::new(0),
        new_objects: AtomicU64::new(0),
        new_bytes: AtomicU64::new(0),
        read_bytes: AtomicU64::new(0),
    };
    let mut out = record::stdout_records();
    let outcome = crate::pipeline::run(
        "bk-seal",
        cli.jobs.count(),
        record::stdin_records,
        |rec| sealer.seal(rec).map(Some),
        |rec| out.write(&rec).map_err(record::stdout_error),
    )?;
    // Make the directory entries of new objects durable before the records
    // naming them reach a snapshot.
    let dirs = std::mem::take(
        &mut *sealer
            .touched_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for dir in dirs {
        repo::sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    out.flush().map_err(record::stdout_error)?;
    eprintln!(
        "bk-seal: {} files, {} new objects ({} bytes read, {} bytes stored), {:.1}s",
        sealer.files.load(Ordering::Relaxed),
        sealer.new_objects.load(Ordering::Relaxed),
        sealer.read_bytes.load(Ordering::Relaxed),
        sealer.new_bytes.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(outcome.exit_code())
}

/// Opens the repository, creating it first with `--init` when it does not
/// exist yet (a new id key is made and saved locally).
fn open_or_init(cli: &SealCli, recipients: &Recipients) -> Result<Repo> {
    let root = &cli.repo.repo;
    if !cli.init || root.join("bk-repo.json").exists() {
        return Repo::open(root);
    }
    let key = IdKey::generate();
    let encrypted = idkey::encrypt(&key, recipients)?;
    let repo = Repo::create(
        root,
        recipients.fingerprints(),
        key.check_value(),
        &encrypted,
    )?;
    let path = cli
        .id_key
        .clone()
        .unwrap_or_else(|| idkey::default_path(repo.id()));
    idkey::save_local(&key, &path)?;
    eprintln!(
        "bk-seal: created repository {} (id {}); its id key is saved in {} (keep it private; the repository holds it only encrypted)",
        root.display(),
        repo.id(),
        path.display()
    );
    Ok(repo)
}

/// Refuses recipients the repository was not made for: objects encrypted
/// to them could not be read with the repository's keys.
pub fn check_recipients(repo: &Repo, recipients: &Recipients) -> Result<()> {
    let known = &repo.config().recipients;
    for fp in recipients.fingerprints() {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(fp)) {
            return Err(Error::key(format!(
                "recipient {fp} is not a recipient of repository {} (it lists {})",
                repo.root().display(),
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// The id key: the local file, or recovered with the secret key.
fn load_id_key(cli: &SealCli, repo: &Repo) -> Result<IdKey> {
    let local = cli
        .id_key
        .clone()
        .unwrap_or_else(|| idkey::default_path(repo.id()));
    let secret = match (&cli.secret.key, local.exists()) {
        (Some(key), false) => Some(SecretKeys::load(
            key,
            &PassphraseSource {
                file: cli.secret.passphrase_file.clone(),
            },
        )?),
        _ => None,
    };
    idkey::for_repo(repo, Some(&local), secret.as_ref())
}

impl Sealer {
    /// Adds `objects` to a file record, storing the content if needed.
    fn seal(&self, mut rec: Record) -> Result<Record> {
        if rec.kind != Kind::File {
            return Ok(rec);
        }
        self.files.fetch_add(1, Ordering::Relaxed);
        let shown = rec.display_path();
        let sha = rec.sha256.clone().ok_or_else(|| {
            Error::bad_input(format!(
                "{shown}: file record has no sha256; pipe it through bk-hash first"
            ))
        })?;
        let id = self.id_key.object_id(&sha).map_err(|e| e.context(&shown))?;
        let stored = match self.repo.object_size(&id)? {
            Some(size) => size,
            None => self.store(&rec, &id, &sha, &shown)?,
        };
        rec.objects = Some(vec![ObjectRef {
            id,
            size: rec.size,
            stored: Some(stored),
        }]);
        Ok(rec)
    }

    /// Encrypts the file into a new object, checking while reading that the
    /// content still has the hash the record claims.
    fn store(&self, rec: &Record, id: &str, sha: &str, shown: &str) -> Result<u64> {
        let path = rec.source_path()?;
        let file = open_source(&path, shown)?;
        let mut reader = HashingReader::new(io::BufReader::with_capacity(256 << 10, file));
        let result = self.repo.store_object(id, |out| {
            self.recipients.encrypt(&mut reader, out, false)?;
            if reader.count() != rec.size || reader.hex_digest() != sha {
                return Err(io::Error::other(CHANGED));
            }
            Ok(())
        });
        self.read_bytes.fetch_add(reader.count(), Ordering::Relaxed);
        match result {
            Ok((stored, created)) => {
                if created {
                    self.new_objects.fetch_add(1, Ordering::Relaxed);
                    self.new_bytes.fetch_add(stored, Ordering::Relaxed);
                }
                let dir = self.repo.object_path(id);
                if let Some(parent) = dir.parent() {
                    self.touched_dirs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(parent.to_path_buf());
                }
                Ok(stored)
            }
            Err(StoreError::Fill(e)) if e.to_string() == CHANGED => Err(Error::partial(format!(
                "{shown}: changed since it was hashed (size or sha256 differs); not stored"
            ))),
            Err(StoreError::Fill(e)) => Err(Error::partial(format!(
                "{shown}: {}; not stored",
                crate::error::io_cause(&e)
            ))),
            Err(StoreError::Write(e)) => Err(e.context(format!("storing {shown}"))),
        }
    }
}

const CHANGED: &str = "content changed while reading";
