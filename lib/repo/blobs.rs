//! Reading blobs: find one in the local index, read its byte range from
//! its pack, remove the pack keystream, decrypt the OpenPGP message (one
//! public-key operation per pack, see [`SessionCache`]) and check the
//! plaintext against the blob's id.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::crypto::blob::SessionCache;
use crate::crypto::{copy_plaintext, SecretKeys};
use crate::error::{io_cause, Error, Result};
use crate::repo::id::ObjectId;
use crate::repo::idkey::IdKey;
use crate::repo::index::{Index, Location, SyncReport};
use crate::repo::pack::{self, PackKeys, WrittenPack};
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
        let (index, report) = Index::sync(repo, &keys, known)?;
        Ok((
            Blobs {
                repo: repo.clone(),
                id_key: id_key.clone(),
                keys,
                index,
                sessions: SessionCache::default(),
            },
            report,
        ))
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

    /// Where blob `id` is; a repository error naming it (and `what`) if the
    /// repository does not have it.
    pub fn require(&self, id: &ObjectId, what: &str) -> Result<Location> {
        self.locate(id)?.ok_or_else(|| {
            Error::repo(format!(
                "{what}: blob {id} is not in the repository (no pack holds it)"
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
        let what = format!("blob {id} (pack {})", loc.pack);
        let input = pack::open_range(
            self.repo.store(),
            &loc.pack,
            &self.keys,
            loc.offset,
            loc.length,
        )
        .map_err(|e| Error::repo(format!("{what}: {}", io_cause(&e))))?
        .ok_or_else(|| Error::repo(format!("{what}: its pack is missing from the repository")))?;
        let mut msg = secret.decrypt_blob(
            io::BufReader::with_capacity(64 << 10, input),
            &what,
            &self.sessions,
        )?;
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
        let sha = hex::encode(hashing.hasher.finalize());
        if !self.id_key.id_matches(&sha, &id.to_string()) {
            return Err(Error::repo(format!(
                "{what}: its content is not the one its id names (swapped or forged)"
            )));
        }
        Ok(n)
    }

    /// [`Blobs::read_at`] after finding the blob.
    pub fn read(
        &self,
        id: &ObjectId,
        secret: &SecretKeys,
        out: &mut dyn Write,
        out_name: &str,
    ) -> Result<u64> {
        let loc = self.require(id, &format!("blob {id}"))?;
        self.read_at(id, &loc, secret, out, out_name)
    }
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
