//! Certifying the repository's id key with your own OpenPGP key, once.
//!
//! Snapshots carry a MAC under a key derived from the id key (see
//! [`crate::repo::authkey`]). A backing-up host holds the id key in a local file
//! and trusts it. A machine that has only your secret key (a new laptop
//! after the old one was lost) reads the id key from `keys/id-key.pgp`,
//! which anyone holding your public key could have replaced with one of
//! their own, together with snapshots MACed under it. The certification
//! closes that gap: `keys/certified-by-<FINGERPRINT>.sig` is a detached
//! OpenPGP signature, made by your key, over a short statement that names
//! the repository id and the id key's check value (a public MAC of the id
//! key, also in `bk-repo.json`). Only your secret key can make it; a reader
//! with your key checks it before trusting the id key it decrypted.

use std::io::Write;

use crate::crypto::signature::{sign_detached, Certifiers, SnapshotSigner};
use crate::crypto::SecretKeys;
use crate::error::{Error, Result};
use crate::repo::idkey::{self, IdKey};
use crate::repo::Repo;

/// Largest certification file read (a signature is a few hundred bytes).
const MAX_CERT_BYTES: u64 = 64 << 10;

/// The statement a certification signs.
pub fn statement(repo_id: &str, id_key_check: &str) -> Vec<u8> {
    format!(
        "bk repository id key certification v1\nrepository: {repo_id}\nid key check: {id_key_check}\n"
    )
    .into_bytes()
}

/// Where the certification by the key with this primary fingerprint lives.
pub fn key_for(fingerprint: &str) -> String {
    format!("keys/certified-by-{fingerprint}.sig")
}

/// Signs the statement for `id_key` with `secret` and stores it; returns
/// the key it was stored under.
pub fn certify(repo: &Repo, secret: &SecretKeys, id_key: &IdKey) -> Result<String> {
    let signer = SnapshotSigner::from_secret(secret)?;
    let sig = sign_detached(&signer, &statement(repo.id(), &id_key.check_value()))?;
    let fingerprint = crate::crypto::fingerprint_hex(secret.signed_key().primary_key.public_key());
    let key = key_for(&fingerprint);
    repo.write_atomic(&key, |w: &mut dyn Write| w.write_all(&sig))
        .map_err(|e| e.context("storing the certification"))?;
    Ok(key)
}

/// Whether one of `certifiers` certified `id_key` for this repository:
/// the fingerprint that did, or why none did.
pub fn check(
    repo: &Repo,
    id_key: &IdKey,
    certifiers: &Certifiers,
) -> std::result::Result<String, String> {
    let wanted = statement(repo.id(), &id_key.check_value());
    let mut failures = Vec::new();
    let mut looked = Vec::new();
    for fingerprint in certifiers.fingerprints() {
        let key = key_for(fingerprint);
        looked.push(fingerprint.to_owned());
        let bytes = match repo.store().read(&key, MAX_CERT_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                failures.push(format!("{key}: {}", crate::error::io_cause(&e)));
                continue;
            }
        };
        match certifiers.verify_detached(fingerprint, &bytes, &wanted) {
            Ok(()) => return Ok(fingerprint.to_owned()),
            Err(why) => failures.push(format!("{key}: {why}")),
        }
    }
    if failures.is_empty() {
        Err(format!(
            "the repository's id key is not certified by your key {} (no {})",
            looked.join(" or "),
            looked
                .iter()
                .map(|f| key_for(f))
                .collect::<Vec<_>>()
                .join(" or ")
        ))
    } else {
        Err(format!(
            "the repository's id key is not certified by your key: {} (the id key or the certification was replaced)",
            failures.join("; ")
        ))
    }
}

/// The id key the repository holds, decrypted with `secret`, after checking
/// it against the check value in `bk-repo.json`.
pub fn held_id_key(repo: &Repo, secret: &SecretKeys) -> Result<IdKey> {
    let id_key = idkey::recover(repo, secret)?;
    if id_key.check_value() != repo.config().id_key_check {
        return Err(Error::repo(format!(
            "{} does not match the id key check value in {}: the repository's keys were tampered with",
            repo.store().describe("keys/id-key.pgp"),
            repo.store().describe("bk-repo.json")
        )));
    }
    Ok(id_key)
}
