//! `bk-index write`: a sealed record stream becomes one snapshot: its
//! records sorted, cut into content-defined pieces stored as blobs (see
//! [`crate::repo::catalogue`]), and a small root listing them.
//!
//! Records are sorted in bounded memory (runs spilled to temporary
//! files). Once the last record is in, and only if the stream had its end
//! record (or was never checked), every object a record names is looked up
//! in the repository, the pieces that are not stored yet are written into
//! a pack, and the root is written only after that pack is durable: a
//! snapshot never names a blob that is not. An unchanged tree gives the
//! same pieces as the last run, which are found and not stored again, so
//! such a run adds only its root.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::cli::IndexWriteArgs;
use crate::crypto::signature::SnapshotSigner;
use crate::crypto::{PassphraseSource, Recipients, SecretKeys};
use crate::error::{Error, Result};
use crate::local::snapcache::CacheWriter;
use crate::local::summaries::{save_summary, Summary};
use crate::record::extsort::{ExternalSorter, SortItem};
use crate::record::{self, Kind, Record};
use crate::repo::authkey::AuthKeys;
use crate::repo::blobs::Blobs;
use crate::repo::catalogue::{PieceCutter, PieceRef, Root, RootHeader};
use crate::repo::id::ObjectId;
use crate::repo::idkey::IdKey;
use crate::repo::lock::{LockKind, RepoLock};
use crate::repo::packer::{Packer, DEFAULT_PACK_SIZE};
use crate::repo::snapshot_name::SnapshotName;
use crate::repo::Repo;

const PROGRAM: &str = "bk-index write";

/// Runs `bk-index write`; returns the exit status.
pub fn write(args: IndexWriteArgs) -> Result<i32> {
    let recipients = Recipients::load(&args.recipients.recipients)?;
    // Load (and unlock) the signing key before reading any input, so a
    // wrong passphrase fails early.
    let signer = args
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
    // Lock before reading stdin: in `bk-seal | bk-index write` both start
    // together, so the shared lock covers the whole pipeline with no gap.
    // In `bk-seal --init … | bk-index write` the repository only exists
    // once bk-seal is under way: then it is locked after the last record.
    let handle = args.repo.handle()?;
    let early = if handle.exists()? {
        Some(open_and_lock(handle.clone(), &args)?)
    } else {
        None
    };
    let host = args
        .host
        .clone()
        .unwrap_or_else(crate::sys::host::this_host);
    let sorter = read_records()?;
    let Locked {
        repo,
        id_key,
        auth,
        lock,
    } = match early {
        Some(locked) => locked,
        None => open_and_lock(handle, &args)?,
    };
    crate::repo::check_recipients(&repo, &recipients)?;
    let (blobs, _) = Blobs::open(&repo, &id_key, &[])?;
    let time = args.time.unwrap_or_else(SystemTime::now);
    let name = SnapshotName::new(time, &auth);
    let packer = Packer::new(&repo, blobs.pack_keys(), &recipients, DEFAULT_PACK_SIZE);
    let mut cat = Catalogue {
        blobs: &blobs,
        packer: &packer,
        id_key: &id_key,
        stored_here: HashSet::new(),
        last: None,
        summary: Summary::named(name.as_str(), &host),
        roots: BTreeSet::new(),
        cache: CacheWriter::new(repo.id(), &auth),
        cutter: PieceCutter::new(),
        pieces: Vec::new(),
        new_pieces: 0,
    };
    let result = (|| {
        for item in sorter.finish().map_err(tmp_err)? {
            let item = item.map_err(tmp_err)?;
            cat.add(&item)?;
        }
        if let Some(piece) = std::mem::take(&mut cat.cutter).finish() {
            cat.store_piece(piece)?;
        }
        let written = packer.finish()?;
        Ok::<_, Error>(written)
    })();
    let Catalogue {
        summary,
        roots,
        cache,
        pieces,
        new_pieces,
        ..
    } = cat;
    let written = match result {
        Ok(w) => w,
        Err(e) => {
            cache.abort();
            return Err(e);
        }
    };
    let root = Root {
        header: RootHeader {
            bk: "snapshot".into(),
            v: 2,
            time: name.time().to_owned(),
            host: host.clone(),
            roots: roots.into_iter().collect(),
            records: summary.entries,
            files: summary.files,
            bytes: summary.bytes,
        },
        pieces,
    };
    if let Err(e) = crate::repo::snapshots::write_root(
        &repo,
        &auth,
        name.as_str(),
        &root,
        &recipients,
        signer.as_ref(),
    ) {
        cache.abort();
        return Err(e);
    }
    cache.commit();
    // The packs written here go into the local index without being read
    // back (best effort: the next run reads their headers otherwise).
    if !written.is_empty() {
        let _ = Blobs::open(&repo, &id_key, &written);
    }
    drop(lock);
    report(
        &repo,
        &summary,
        signer.as_ref(),
        root.pieces.len(),
        new_pieces,
    )
}

/// An open repository, its id key and the shared lock taken with it.
struct Locked {
    repo: Repo,
    id_key: IdKey,
    auth: AuthKeys,
    lock: RepoLock,
}

/// Opens the repository, loads this machine's id key and takes the shared
/// lock, sealed with a key derived from it (so the id key comes first).
/// A repository that does not exist when bk-index write starts is being
/// created by this very pipeline's `bk-seal --init`, which holds its own
/// shared lock while it stores objects; then this is called once the input
/// has ended. A repository that new has no snapshot and no object older
/// than prune's grace period, so nothing of it can be pruned in between.
fn open_and_lock(handle: crate::repo::RepoHandle, args: &IndexWriteArgs) -> Result<Locked> {
    let repo = Repo::open_handle(handle)?;
    let id_key = load_id_key(&repo, args.id_key.as_deref())?;
    let auth = AuthKeys::derive(&id_key, repo.id());
    let lock = RepoLock::acquire(
        repo.store_arc(),
        LockKind::Shared,
        PROGRAM,
        args.wait.wait,
        &auth.lock_key(),
    )?;
    Ok(Locked {
        repo,
        id_key,
        auth,
        lock,
    })
}

/// Reads every record from stdin into a sorter. A checked input (see
/// [`crate::record`]) that ends before its end record, because a stage
/// before stopped early, fails here, before anything is written. An
/// unchecked one is taken, with a note that its completeness could not be
/// checked.
fn read_records() -> Result<ExternalSorter> {
    let mut sorter = ExternalSorter::default();
    let mut records = 0u64;
    let mut input = record::stdin_records().checking(record::Check::Index);
    for rec in &mut input {
        let rec = rec?;
        records += 1;
        sorter.push(sort_item(&rec)?).map_err(tmp_err)?;
    }
    if records == 0 {
        return Err(Error::bad_input(
            "no records on stdin: not writing an empty snapshot (did an earlier stage of the pipeline fail?)",
        ));
    }
    if !input.is_checked() {
        crate::say!(
            "bk-index: note: the input did not start with a begin record (typed by hand, or filtered by jq?), so whether every stage before {PROGRAM} finished could not be checked"
        );
    }
    Ok(sorter)
}

/// This machine's id key (the one bk-seal uses): it names the pieces and
/// authenticates the snapshot and the reuse cache.
fn load_id_key(repo: &Repo, explicit: Option<&std::path::Path>) -> Result<IdKey> {
    let path = explicit.map_or_else(|| crate::repo::idkey::default_path(repo.id()), Into::into);
    let key = crate::repo::idkey::load_local(&path)?.ok_or_else(|| {
        Error::key(format!(
            "no id key for repository {} at {}: it names the catalogue's blobs and authenticates the snapshot",
            repo.id(),
            path.display()
        ))
        .hint("give --id-key FILE (or BK_ID_KEY), the file bk-seal uses")
    })?;
    crate::repo::idkey::check_belongs(key, repo, &path)
}

fn tmp_err(e: io::Error) -> Error {
    Error::io(&std::env::temp_dir(), e)
}

fn sort_item(rec: &Record) -> Result<SortItem> {
    Ok(SortItem {
        root: rec
            .root_os()?
            .map(|r| r.as_bytes().to_vec())
            .unwrap_or_default(),
        path: rec.path_os()?.as_bytes().to_vec(),
        line: rec.to_line(),
    })
}

/// What every record of a snapshot goes through, in order: the check
/// that its objects are stored, the counts, the local plaintext copy that
/// `bk-hash --reuse` reads next time, and the cutter that makes pieces.
struct Catalogue<'a> {
    blobs: &'a Blobs,
    packer: &'a Packer,
    id_key: &'a IdKey,
    /// Pieces stored by this run (a piece may come twice).
    stored_here: HashSet<ObjectId>,
    /// Root and path of the record taken last: records come sorted, so a
    /// duplicate is the next one.
    last: Option<(Vec<u8>, Vec<u8>)>,
    summary: Summary,
    roots: BTreeSet<String>,
    cache: CacheWriter,
    cutter: PieceCutter,
    pieces: Vec<PieceRef>,
    new_pieces: usize,
}

impl Catalogue<'_> {
    /// Takes one record on its way into the snapshot.
    fn add(&mut self, item: &SortItem) -> Result<()> {
        let rec = Record::from_line(&item.line, 0)
            .map_err(|e| e.context("a sorted record (temporary file)"))?;
        if self
            .last
            .as_ref()
            .is_some_and(|(root, path)| *root == item.root && *path == item.path)
        {
            return Err(Error::bad_input(format!(
                "{}: two records of root {} (no snapshot written; was a stream given twice?)",
                rec.display_path(),
                String::from_utf8_lossy(&item.root)
            )));
        }
        match &mut self.last {
            Some((root, path)) => {
                root.clone_from(&item.root);
                path.clone_from(&item.path);
            }
            None => self.last = Some((item.root.clone(), item.path.clone())),
        }
        check_sealed(self.blobs, &rec)?;
        self.summary.add(&rec);
        if self.roots.len() < 4096 {
            self.roots
                .insert(String::from_utf8_lossy(&item.root).into_owned());
        }
        self.cache.add(&item.root, &item.line);
        if let Some(piece) = self.cutter.push(&item.line) {
            self.store_piece(piece)?;
        }
        Ok(())
    }

    /// Stores one piece unless the repository (or this run) has it.
    fn store_piece(&mut self, piece: Vec<u8>) -> Result<()> {
        let sha = hex::encode(Sha256::digest(&piece));
        let id = self.id_key.object_id(&sha)?;
        let size = piece.len() as u64;
        if !self.stored_here.contains(&id) && self.blobs.locate(&id)?.is_none() {
            self.packer
                .store(id, size, |session| session.seal(&piece, true))
                .map_err(|e| e.into_error().context("storing a piece of the catalogue"))?;
            self.stored_here.insert(id);
            self.new_pieces += 1;
        }
        self.pieces.push(PieceRef {
            piece: id.to_string(),
            size,
        });
        Ok(())
    }
}

/// A snapshot may only name objects that are already in the repository.
fn check_sealed(blobs: &Blobs, rec: &Record) -> Result<()> {
    if rec.kind != Kind::File {
        return Ok(());
    }
    let shown = rec.display_path();
    let objects = rec.objects.as_ref().ok_or_else(|| {
        Error::bad_input(format!(
            "{shown}: file record has no objects (no snapshot written)"
        ))
        .hint("pipe the records through bk-seal first")
    })?;
    crate::repo::objects::check_objects_cover_size(rec.size, objects)
        .map_err(|why| Error::bad_input(format!("{shown}: {why} (no snapshot written)")))?;
    for obj in objects {
        let id = ObjectId::parse(&obj.id).map_err(|e| e.context(&shown))?;
        if blobs.locate(&id)?.is_none() {
            return Err(Error::repo(format!(
                "{shown}: object {} is not in the repository (no snapshot written)",
                obj.id
            )));
        }
    }
    Ok(())
}

/// Saves the summary for `list`, prints the name on stdout and a line on
/// stderr.
fn report(
    repo: &Repo,
    summary: &Summary,
    signer: Option<&SnapshotSigner>,
    pieces: usize,
    new_pieces: usize,
) -> Result<i32> {
    save_summary(repo, summary);
    let mut out = io::stdout().lock();
    writeln!(out, "{}", summary.name)
        .and_then(|_| out.flush())
        .map_err(record::stdout_error)?;
    let signed = signer
        .map(|k| format!(", signed by {}", k.fingerprint()))
        .unwrap_or_default();
    crate::say!(
        "bk-index: wrote snapshot {}: {} entries, {} files, {} bytes, catalogue in {pieces} pieces ({new_pieces} new){signed}",
        summary.name,
        summary.entries,
        summary.files,
        summary.bytes
    );
    let certified = repo.store().list("keys").is_ok_and(|keys| {
        keys.iter()
            .any(|k| k.name.starts_with("certified-by-") && k.name.ends_with(".sig"))
    });
    if !certified {
        crate::say!(
            "bk-index: note: the repository's id key is not certified yet, so a machine with only your secret key could not tell your snapshots from forged ones: run `bk-index certify --repo {} --key SECRET` once where your secret key is",
            repo.location()
        );
    }
    Ok(0)
}
