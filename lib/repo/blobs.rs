//! Reading blobs: find one in the local index, read its byte range from
//! its pack, remove the pack keystream, decrypt the OpenPGP message (one
//! public-key operation per pack, see [`SessionCache`]) and check the
//! plaintext against the blob's id.

use std::io::{self, BufRead, Read, Write};

use sha2::{Digest, Sha256};

use crate::crypto::blob::SessionCache;
use crate::crypto::{copy_plaintext, read_error_cause, SecretKeys};
use crate::error::{io_cause, Error, Result};
use crate::repo::id::{ObjectId, PackId};
use crate::repo::idkey::IdKey;
use crate::repo::index::{Index, Location, SyncReport};
use crate::repo::pack::{self, PackKeys, RangeReader, WrittenPack};
use crate::repo::Repo;

/// A repository's blobs, ready to be found and read.
#[derive(Debug)]
pub struct Blobs {
    repo: Repo,
    id_key: IdKey,
    keys: PackKeys,
    index: Index,
    sessions: SessionCache,
}

impl Blobs {
    /// Brings the local index of `repo` up to date (see [`Index::sync`])
    /// and opens it; `known` are packs this process wrote.
    pub fn open(repo: &Repo, id_key: &IdKey, known: &[WrittenPack]) -> Result<(Blobs, SyncReport)> {
        let keys = PackKeys::derive(id_key, repo.id());
        let synced = Index::sync(repo, &keys, known)?;
        Ok(Blobs::with(repo, id_key, keys, synced))
    }

    /// Like [`Blobs::open`], reading every pack's header again (see
    /// [`Index::sync_all`]).
    pub fn open_checked(repo: &Repo, id_key: &IdKey) -> Result<(Blobs, SyncReport)> {
        let keys = PackKeys::derive(id_key, repo.id());
        let synced = Index::sync_all(repo, &keys)?;
        Ok(Blobs::with(repo, id_key, keys, synced))
    }

    fn with(
        repo: &Repo,
        id_key: &IdKey,
        keys: PackKeys,
        (index, report): (Index, SyncReport),
    ) -> (Blobs, SyncReport) {
        let blobs = Blobs {
            repo: repo.clone(),
            id_key: id_key.clone(),
            keys,
            index,
            sessions: SessionCache::default(),
        };
        (blobs, report)
    }

    /// The repository.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// The pack keys.
    pub fn pack_keys(&self) -> &PackKeys {
        &self.keys
    }

    /// The id key.
    pub fn id_key(&self) -> &IdKey {
        &self.id_key
    }

    /// The local index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Where blob `id` is, if the repository has it.
    pub fn locate(&self, id: &ObjectId) -> Result<Option<Location>> {
        self.index.get(id).map_err(|e| {
            let dir = crate::repo::index::cache_dir(self.repo.id());
            Error::io(&dir, e)
        })
    }

    /// Where blob `id` is; a repository error naming it (after `what`,
    /// when given) if the repository does not have it.
    pub fn require(&self, id: &ObjectId, what: Option<&str>) -> Result<Location> {
        self.locate(id)?.ok_or_else(|| {
            let at = what.map(|w| format!("{w}: ")).unwrap_or_default();
            Error::repo(format!(
                "{at}blob {id} is not in the repository (no pack holds it)"
            ))
        })
    }

    /// Decrypts blob `id` at `loc` into `out` (named `out_name` in
    /// errors), checking that its plaintext is the content the id names;
    /// returns the plaintext byte count. `out` may have received bytes
    /// before a failure is found: trust it only on `Ok`.
    pub fn read_at(
        &self,
        id: &ObjectId,
        loc: &Location,
        secret: &SecretKeys,
        out: &mut dyn Write,
        out_name: &str,
    ) -> Result<u64> {
        let input = self.open_run(&loc.pack, loc.offset, loc.length, &|| blob_name(id, loc))?;
        let (n, _) = self.decrypt_from(input, id, loc, secret, out, out_name)?;
        Ok(n)
    }

    /// Bytes `offset..offset + len` of pack `pack`, the pack keystream
    /// removed: one blob, or a run of neighbouring blobs read with one
    /// request (one ranged GET on S3). `what` names them in errors.
    pub fn open_run(
        &self,
        pack: &PackId,
        offset: u64,
        len: u64,
        what: &dyn Fn() -> String,
    ) -> Result<RangeReader> {
        pack::open_range(self.repo.store(), pack, &self.keys, offset, len)
            .map_err(|e| Error::repo(format!("{}: {}", what(), io_cause(&e))))?
            .ok_or_else(|| {
                Error::repo(format!(
                    "{}: its pack is missing from the repository",
                    what()
                ))
            })
    }

    /// Decrypts blob `id` at `loc` from `input` (the blob's bytes and no
    /// more), streaming its plaintext into `out` (named `out_name` in
    /// errors), and checks that it is the content the id names; returns
    /// the byte count and SHA-256. `out` may have received bytes before a
    /// failure is found: trust it only on `Ok`.
    pub fn decrypt_from<'a, R>(
        &self,
        input: R,
        id: &ObjectId,
        loc: &Location,
        secret: &SecretKeys,
        out: &mut dyn Write,
        out_name: &str,
    ) -> Result<(u64, [u8; 32])>
    where
        R: BufRead + std::fmt::Debug + Send + 'a,
    {
        let what = blob_name(id, loc);
        let mut msg = secret.decrypt_blob(input, &what, &self.sessions)?;
        let mut hashing = HashingWriter {
            out,
            hasher: Sha256::new(),
        };
        let n = copy_plaintext(
            &mut msg,
            &what,
            &mut hashing,
            std::path::Path::new(out_name),
        )?;
        let digest: [u8; 32] = hashing.hasher.finalize().into();
        self.check(id, &digest, &what)?;
        Ok((n, digest))
    }

    /// Decrypts blob `id` at `loc` from `input` (the blob's bytes and no
    /// more) into `buf`, which is cleared first, and checks that it is the
    /// content the id names; returns its SHA-256. More than `limit` bytes
    /// of plaintext is an error: the caller holds it all in memory.
    pub fn decrypt_into<'a, R>(
        &self,
        input: R,
        id: &ObjectId,
        loc: &Location,
        secret: &SecretKeys,
        buf: &mut Vec<u8>,
        limit: u64,
    ) -> Result<[u8; 32]>
    where
        R: BufRead + std::fmt::Debug + Send + 'a,
    {
        let what = blob_name(id, loc);
        let msg = secret.decrypt_blob(input, &what, &self.sessions)?;
        buf.clear();
        msg.take(limit.saturating_add(1))
            .read_to_end(buf)
            .map_err(|e| Error::repo(format!("{what}: {}", read_error_cause(&e))))?;
        if buf.len() as u64 > limit {
            return Err(Error::repo(format!(
                "{what}: more than the {limit} bytes of plaintext its pack lists"
            )));
        }
        let digest: [u8; 32] = Sha256::digest(&buf[..]).into();
        self.check(id, &digest, &what)?;
        Ok(digest)
    }

    /// The OpenPGP message of blob `id`, read whole from its pack (the
    /// pack keystream removed), not decrypted.
    pub fn message(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let loc = self.require(id, None)?;
        let mut message = Vec::new();
        self.read_run(&[(*id, loc)], |_, _, m| {
            message = m;
            Ok(())
        })?;
        Ok(message)
    }

    /// Reads the blobs of `run` (all in one pack, in offset order) with one
    /// ranged read from the first to the last, the pack keystream removed,
    /// and hands each blob's whole OpenPGP message to `f`, not decrypted; a
    /// blob that starts inside the one before it is skipped. A read that
    /// fails, or a pack shorter than the run, is an error naming the pack,
    /// before `f` sees that blob: it says nothing of the blob itself.
    pub fn read_run(
        &self,
        run: &[(ObjectId, Location)],
        mut f: impl FnMut(&ObjectId, &Location, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let Some((_, first)) = run.first() else {
            return Ok(());
        };
        let (pack, start) = (first.pack, first.offset);
        let end = run
            .iter()
            .map(|(_, l)| l.offset + l.length)
            .max()
            .unwrap_or(start);
        let store = self.repo.store();
        let key = pack.key();
        let fail = |why: String| Error::repo(format!("pack {}: {why}", store.describe(&key)));
        let mut r = pack::open_range(store, &pack, &self.keys, start, end - start)
            .map_err(|e| fail(io_cause(&e)))?
            .ok_or_else(|| fail("missing from the repository".into()))?;
        let mut at = start;
        for (id, loc) in run {
            if loc.offset < at {
                continue;
            }
            io::copy(&mut (&mut r).take(loc.offset - at), &mut io::sink())
                .map_err(|e| fail(io_cause(&e)))?;
            let mut message = Vec::with_capacity(loc.length.min(64 << 20) as usize);
            (&mut r)
                .take(loc.length)
                .read_to_end(&mut message)
                .map_err(|e| fail(io_cause(&e)))?;
            if message.len() as u64 != loc.length {
                return Err(fail("shorter than its header says".into()));
            }
            at = loc.offset + loc.length;
            f(id, loc, message)?;
        }
        Ok(())
    }

    /// Public-key operations made so far to read blobs: one per pack
    /// whose blobs were read, however many of them.
    pub fn public_key_operations(&self) -> u64 {
        self.sessions.recovered()
    }

    /// Whether a plaintext with SHA-256 `digest` is the content `id` names.
    fn check(&self, id: &ObjectId, digest: &[u8; 32], what: &str) -> Result<()> {
        if self.id_key.digest_matches(digest, id) {
            return Ok(());
        }
        Err(Error::repo(format!(
            "{what}: its content is not the one its id names (swapped or forged)"
        )))
    }

    /// [`Blobs::read_at`] after finding the blob.
    pub fn read(
        &self,
        id: &ObjectId,
        secret: &SecretKeys,
        out: &mut dyn Write,
        out_name: &str,
    ) -> Result<u64> {
        let loc = self.require(id, None)?;
        self.read_at(id, &loc, secret, out, out_name)
    }
}

/// A blob as errors name it.
pub fn blob_name(id: &ObjectId, loc: &Location) -> String {
    format!("blob {id} (pack {})", loc.pack)
}

/// A writer that hashes what passes through it.
struct HashingWriter<'a> {
    out: &'a mut dyn Write,
    hasher: Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
