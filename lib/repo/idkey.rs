//! The repository id key: object ids are HMAC-SHA256(id key, sha256), so
//! they are deterministic (dedup and resume need no state) while the
//! storage operator cannot test whether you hold a known file.
//!
//! The backing-up machine keeps the key in a local file (0600, hex); the
//! repository keeps it only encrypted to the recipients
//! (`keys/id-key.pgp`), from which a machine with the secret key recovers it.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{Recipients, SecretKeys};
use crate::error::{io_cause, Error, Result};
use crate::repo::id::ObjectId;
use crate::repo::Repo;

/// The 32-byte secret that keys object ids, with its HMAC state prepared
/// once (an id is computed or checked for every file of every run).
#[derive(Clone)]
pub struct IdKey {
    key: Zeroizing<[u8; 32]>,
    hmac: Hmac<Sha256>,
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// A fresh random key.
    pub fn generate() -> IdKey {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        IdKey::new(k)
    }

    /// A key with these bytes (tests and derivations).
    pub fn from_bytes(bytes: [u8; 32]) -> IdKey {
        IdKey::new(Zeroizing::new(bytes))
    }

    fn new(key: Zeroizing<[u8; 32]>) -> IdKey {
        // HMAC accepts keys of any length, so this cannot fail.
        let hmac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        IdKey { key, hmac }
    }

    /// The key's bytes, for deriving the keys that authenticate snapshots
    /// and caches ([`crate::repo::authkey`]); never written anywhere in clear but
    /// the local key file.
    pub(crate) fn secret_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    fn mac(&self, data: &[u8]) -> String {
        let mut mac = self.hmac.clone();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `id_hex` is the object id of a content with this hex
    /// SHA-256 (false if either is not 64 hex digits).
    pub fn id_matches(&self, sha256_hex: &str, id_hex: &str) -> bool {
        let (mut digest, mut id) = ([0u8; 32], [0u8; 32]);
        if hex::decode_to_slice(sha256_hex, &mut digest).is_err()
            || hex::decode_to_slice(id_hex, &mut id).is_err()
        {
            return false;
        }
        let mut mac = self.hmac.clone();
        mac.update(&digest);
        mac.verify_slice(&id).is_ok()
    }

    /// Whether `id` is the object id of a content whose SHA-256 is
    /// `digest` (the check of every blob read, without hex on the way).
    pub fn digest_matches(&self, digest: &[u8; 32], id: &ObjectId) -> bool {
        let mut mac = self.hmac.clone();
        mac.update(digest);
        mac.verify_slice(id.as_bytes()).is_ok()
    }

    /// The object id of a content with this hex SHA-256.
    pub fn object_id(&self, sha256_hex: &str) -> Result<ObjectId> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(sha256_hex, &mut digest)
            .map_err(|_| Error::bad_input(format!("sha256 {sha256_hex:?} is not 64 hex digits")))?;
        let mut mac = self.hmac.clone();
        mac.update(&digest);
        Ok(ObjectId::from_bytes(mac.finalize().into_bytes().into()))
    }

    /// The public check value stored in bk-repo.json.
    pub fn check_value(&self) -> String {
        self.mac(b"bk id key check")
    }

    fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_ref()))
    }

    fn from_hex(text: &str) -> Option<IdKey> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).ok()?);
        let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(IdKey::from_bytes(arr))
    }
}

/// Default local key file for a repository id.
pub fn default_path(repo_id: &str) -> PathBuf {
    crate::sys::paths::data_home()
        .join("bk")
        .join(format!("{repo_id}.idkey"))
}

/// Saves the key to `path` with mode 0600, creating parent directories
/// (0700). Refuses to overwrite an existing file.
pub fn save_local(key: &IdKey, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
    }
    use std::os::unix::fs::DirBuilderExt;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(key.to_hex().as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Checks, before a repository is created, that a new id key can be saved
/// at `path`: nothing is there yet (not even a dangling symlink). `explicit`:
/// the path was given with `--id-key`, so an existing file there is a
/// command-line problem (exit 2).
pub fn check_new_local(path: &Path, explicit: bool) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(_) => {
            let msg = format!(
                "id key file {} already exists; bk-seal --init makes a new repository with a new id key and never overwrites a key file: give --id-key a path that does not exist yet (or, to back up into the repository that key belongs to, leave out --init)",
                path.display()
            );
            Err(if explicit {
                Error::usage(msg)
            } else {
                Error::new(crate::error::Kind::Io, msg)
            })
        }
    }
}

/// Loads the local key file, or `None` if it does not exist.
pub fn load_local(path: &Path) -> Result<Option<IdKey>> {
    let mut text = Zeroizing::new(String::new());
    match fs::File::open(path) {
        Ok(mut f) => f
            .read_to_string(&mut text)
            .map_err(|e| Error::key(format!("id key file {}: {}", path.display(), io_cause(&e))))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::key(format!(
                "id key file {}: {}",
                path.display(),
                io_cause(&e)
            )))
        }
    };
    IdKey::from_hex(&text)
        .map(Some)
        .ok_or_else(|| Error::key(format!("id key file {}: not 64 hex digits", path.display())))
}

/// Encrypts the key for `keys/id-key.pgp`.
pub fn encrypt(key: &IdKey, recipients: &Recipients) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    recipients
        .encrypt(&key.key[..], &mut out, false)
        .map_err(|e| Error::key(format!("encrypting the id key: {e}")))?;
    Ok(out)
}

/// Decrypts `keys/id-key.pgp` from the repository.
pub fn recover(repo: &Repo, secret: &SecretKeys) -> Result<IdKey> {
    let what = "keys/id-key.pgp";
    let encrypted = repo.read_key(what, what, crate::repo::ID_KEY_LIMIT)?;
    let mut msg = secret.decrypt(std::io::Cursor::new(encrypted), what)?;
    let mut bytes = Zeroizing::new(Vec::new());
    msg.read_to_end(&mut bytes).map_err(|e| {
        Error::repo(format!(
            "keys/id-key.pgp: {}",
            crate::crypto::read_error_cause(&e)
        ))
    })?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::repo("keys/id-key.pgp: does not hold a 32-byte key"))?;
    Ok(IdKey::from_bytes(arr))
}

/// Checks, before any real work, that `secret` can read this repository
/// (it decrypts the id key, which is encrypted to every recipient), so a
/// wrong key is one clear key error rather than a fault on every object.
pub fn check_secret(repo: &Repo, secret: &SecretKeys) -> Result<()> {
    recover(repo, secret).map(|_| ())
}

/// Finds the id key for `repo`: the local file (`explicit` or the default
/// path), else recovered with `secret` and saved locally. Checks it against
/// the repository's check value.
pub fn for_repo(
    repo: &Repo,
    explicit: Option<&Path>,
    secret: Option<&SecretKeys>,
) -> Result<IdKey> {
    let path = explicit.map_or_else(|| default_path(repo.id()), Path::to_path_buf);
    let key = match load_local(&path)? {
        Some(k) => k,
        None => match secret {
            Some(s) => {
                let k = recover(repo, s)?;
                save_local(&k, &path)?;
                crate::say!("bk: recovered the repository id key into {}", path.display());
                k
            }
            None => {
                return Err(Error::key(format!(
                    "no id key for repository {} at {}: give --key SECRET once to recover it from the repository, or --id-key FILE",
                    repo.id(),
                    path.display()
                )))
            }
        },
    };
    check_belongs(key, repo, &path)
}

/// `key`, if it is the id key of `repo` (its check value matches); `path`
/// names the file it came from in the error.
pub fn check_belongs(key: IdKey, repo: &Repo, path: &Path) -> Result<IdKey> {
    if key.check_value() != repo.config().id_key_check {
        return Err(Error::key(format!(
            "id key file {} does not belong to repository {} (check value differs)",
            path.display(),
            repo.id()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_matches_only_the_id_of_that_sha256() {
        let key = IdKey::from_bytes([9u8; 32]);
        let sha = "ab".repeat(32);
        let id = key.object_id(&sha).unwrap().to_string();
        assert!(key.id_matches(&sha, &id));
        assert!(!key.id_matches(&"ac".repeat(32), &id));
        assert!(!IdKey::from_bytes([8u8; 32]).id_matches(&sha, &id));
        assert!(!key.id_matches(&sha, &id[..62]));
        assert!(!key.id_matches("zz", &id));
        assert_eq!(
            key.check_value(),
            IdKey::from_bytes([9u8; 32]).check_value()
        );
    }
}
