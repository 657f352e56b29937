//! Format-1 objects: one OpenPGP message per unique content (or chunk)
//! under `objects/<first two hex digits>/<id>`, written unseen and
//! committed in batches, and their stored sizes. Format 2 keeps objects as
//! blobs in packs instead (see [`crate::repo::packer`] and
//! [`crate::repo::blobs`]); of this module it uses
//! [`check_objects_cover_size`] and [`REUSE_TOUCH_AFTER`], and the
//! object listing of the keyless inventory check.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Mutex;

use super::id::ObjectId;
use super::{Repo, StoreError};
use crate::crypto::{copy_plaintext, SecretKeys};
use crate::error::{io_cause, Error, Result};
use crate::storage::{Commit, Finished};

impl Repo {
    /// The stored size of an object, or `None` if it is absent.
    pub fn object_size(&self, id: &ObjectId) -> Result<Option<u64>> {
        self.store
            .stat(&id.key())
            .map(|s| s.map(|s| s.size))
            .map_err(|e| Error::repo(format!("object {id}: {}", io_cause(&e))))
    }

    /// The stored size of an object this run reuses (a dedup hit or a record
    /// passed through with its objects), or `None` if it is absent. An
    /// object last modified more than [`REUSE_TOUCH_AFTER`] ago gets its
    /// modification time set to now, so that `bk-index prune`'s grace period
    /// protects it until the records naming it are in a snapshot. The touch
    /// is best effort (storage that refuses it only loses that extra
    /// protection; locks still apply).
    pub fn reuse_object(&self, id: &ObjectId) -> Result<Option<u64>> {
        let key = id.key();
        let stat = self
            .store
            .stat(&key)
            .map_err(|e| Error::repo(format!("object {id}: {}", io_cause(&e))))?;
        Ok(stat.map(|s| {
            let old = s
                .modified
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > REUSE_TOUCH_AFTER);
            if old {
                self.store.touch(&key);
            }
            s.size
        }))
    }

    /// Calls `f` with the id and stored size of every object under
    /// `objects/` (names that are not an object id in its right
    /// sub-directory are skipped), in no particular order, streaming.
    pub fn for_each_object(&self, f: &mut dyn FnMut(ObjectId, u64)) -> Result<()> {
        self.store
            .walk("objects", &mut |rel, stat| {
                if let Some(id) = ObjectId::from_key(rel) {
                    f(id, stat.size);
                }
            })
            .map_err(|e| self.error("objects", &e))
    }

    /// Writes an object through `fill` so that no reader sees it yet: it
    /// gets its real name only in [`Repo::commit_objects`], which makes a
    /// whole batch durable at once. A crash before that leaves only
    /// temporary files (or, on S3, complete objects no snapshot names yet),
    /// never a half-written object under a real name.
    pub fn write_object_unsynced(
        &self,
        id: &ObjectId,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<PendingObject, StoreError> {
        let key = id.key();
        let upload = self
            .store
            .create(&key)
            .map_err(|e| StoreError::Write(self.write_error(&key, e)))?;
        let (finished, size, blake3) = self.fill(&key, upload, fill)?;
        Ok(PendingObject {
            id: *id,
            finished,
            size,
            blake3,
        })
    }

    /// Makes a batch of written objects durable and visible under their
    /// real names (keeping an existing object of the same id), and records
    /// the new ones in the object inventory (see [`crate::repo::inventory`]).
    /// Returns how many were new, their stored bytes, and the ids that
    /// were already stored by someone else (whose stored size may differ
    /// from the one written here).
    pub fn commit_objects(&self, batch: Vec<PendingObject>) -> Result<(u64, u64, Vec<ObjectId>)> {
        if batch.is_empty() {
            return Ok((0, 0, Vec::new()));
        }
        let mut facts = Vec::with_capacity(batch.len());
        let mut finished = Vec::with_capacity(batch.len());
        for p in batch {
            facts.push((p.id, p.size, p.blake3));
            finished.push(p.finished);
        }
        let created = self
            .store
            .commit(finished, Commit::KeepExisting)
            .map_err(|e| self.write_error("objects", e))?;
        let (mut new, mut bytes) = (0, 0);
        let mut inventory = Vec::new();
        let mut kept = Vec::new();
        for ((id, size, sha), created) in facts.iter().zip(created) {
            if created {
                new += 1;
                bytes += size;
                inventory.push((*id, *size, sha.as_str()));
            } else {
                kept.push(*id);
            }
        }
        crate::repo::inventory::append(self, &inventory)?;
        Ok((new, bytes, kept))
    }
}

/// Checks that the objects of a file record cover its content: their
/// plaintext sizes add up to the record's `size`, and a non-empty file
/// has at least one object. A record that fails this cannot be restored
/// (`"size":81234,"objects":[]` would restore as an empty file, or not at
/// all), so `bk-index write` and `bk-verify` should refuse it. The error
/// says what is wrong, for the caller to put after the record's path.
pub fn check_objects_cover_size(
    size: u64,
    objects: &[crate::record::ObjectRef],
) -> std::result::Result<(), String> {
    if size > 0 && objects.is_empty() {
        return Err(format!(
            "a file of {size} bytes with no objects (its content is nowhere in the repository)"
        ));
    }
    let total = objects
        .iter()
        .try_fold(0u64, |sum, o| sum.checked_add(o.size));
    match total {
        Some(total) if total == size => Ok(()),
        Some(total) => Err(format!(
            "its objects hold {total} bytes of content, the record says {size}"
        )),
        None => Err(format!(
            "its objects' sizes add up to more than 2^64 bytes, the record says {size}"
        )),
    }
}

/// Stored sizes of objects a run looks up many times (deduplication, the
/// checks of bk-index write and bk-verify). On remote storage, where each
/// stat is a round trip, they come from one listing of `objects/` (one
/// request per 1,000 objects on S3, about 50 bytes of memory per object),
/// kept up to date with [`ObjectSizes::insert`]; on a directory, from a
/// stat per lookup.
#[derive(Debug)]
pub struct ObjectSizes {
    listed: Option<Mutex<HashMap<ObjectId, u64>>>,
}

impl ObjectSizes {
    /// Lists `objects/` up front if the storage is remote and `worth_it`
    /// (the caller expects enough lookups to pay for the listing).
    pub fn new(repo: &Repo, worth_it: bool) -> Result<ObjectSizes> {
        if !(worth_it && repo.store().is_remote()) {
            return Ok(ObjectSizes { listed: None });
        }
        let mut sizes = HashMap::new();
        repo.for_each_object(&mut |id, size| {
            sizes.insert(id, size);
        })?;
        Ok(ObjectSizes {
            listed: Some(Mutex::new(sizes)),
        })
    }

    /// The stored size of an object, or `None` if it is absent.
    pub fn get(&self, repo: &Repo, id: &ObjectId) -> Result<Option<u64>> {
        match self.listed_size(id) {
            Some(size) => Ok(size),
            None => repo.object_size(id),
        }
    }

    /// [`ObjectSizes::get`] for an object this run reuses: without a
    /// listing, [`Repo::reuse_object`] (which refreshes an old object's
    /// time for prune's grace period).
    pub fn reuse(&self, repo: &Repo, id: &ObjectId) -> Result<Option<u64>> {
        match self.listed_size(id) {
            Some(size) => Ok(size),
            None => repo.reuse_object(id),
        }
    }

    /// Records an object this run stored.
    pub fn insert(&self, id: &ObjectId, size: u64) {
        if let Some(listed) = &self.listed {
            crate::sys::sync::lock(listed).insert(*id, size);
        }
    }

    /// From the listing: `Some(size if stored)`; `None` without one.
    fn listed_size(&self, id: &ObjectId) -> Option<Option<u64>> {
        let listed = self.listed.as_ref()?;
        Some(crate::sys::sync::lock(listed).get(id).copied())
    }
}

/// An object written but not yet visible, waiting for
/// [`Repo::commit_objects`]. Dropping it discards it.
#[derive(Debug)]
pub struct PendingObject {
    /// Object id.
    pub id: ObjectId,
    finished: Finished,
    /// Bytes written.
    pub size: u64,
    /// Hex BLAKE3 of the bytes written (the ciphertext), for the inventory.
    pub blake3: String,
}

/// A pack holding an object a run reuses gets a fresh modification time
/// when its own is older than this: half of `bk-index prune`'s default
/// grace period (24 h).
pub const REUSE_TOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Decrypts object `id` into `out` and returns the plaintext byte count.
/// A missing, truncated or tampered object is a repository error naming the
/// object; an error writing `out` is an I/O error. `out` may have received
/// plaintext before a failure at the end of the message is detected, so
/// callers must not trust it unless this returns `Ok`.
pub fn decrypt_object(
    repo: &Repo,
    key: &SecretKeys,
    id: &ObjectId,
    out: &mut dyn Write,
    out_name: &str,
) -> Result<u64> {
    let what = format!("object {id}");
    let input = repo.open_key(&id.key(), &what)?;
    let mut msg = key.decrypt(input, &what)?;
    copy_plaintext(&mut msg, &what, out, std::path::Path::new(out_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ObjectRef;

    fn obj(size: u64) -> ObjectRef {
        ObjectRef {
            id: "ab".repeat(32),
            size,
            stored: None,
        }
    }

    #[test]
    fn objects_must_cover_the_size_of_a_file() {
        assert_eq!(check_objects_cover_size(0, &[]), Ok(()));
        assert_eq!(check_objects_cover_size(5, &[obj(5)]), Ok(()));
        assert_eq!(
            check_objects_cover_size(3 << 20, &[obj(1 << 20), obj(2 << 20)]),
            Ok(())
        );
        // An empty file may name the object of the empty content.
        assert_eq!(check_objects_cover_size(0, &[obj(0)]), Ok(()));
        let e = check_objects_cover_size(81234, &[]).unwrap_err();
        assert!(e.contains("81234 bytes with no objects"), "{e}");
        let e = check_objects_cover_size(10, &[obj(4), obj(5)]).unwrap_err();
        assert!(e.contains("hold 9 bytes") && e.contains("says 10"), "{e}");
        let e = check_objects_cover_size(0, &[obj(1)]).unwrap_err();
        assert!(e.contains("hold 1 bytes"), "{e}");
        let e = check_objects_cover_size(1, &[obj(u64::MAX), obj(2)]).unwrap_err();
        assert!(e.contains("more than 2^64"), "{e}");
    }
}
