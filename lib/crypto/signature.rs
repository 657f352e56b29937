//! Signed snapshots.
//!
//! `bk-index write --sign-key SECRET` signs the snapshot's plaintext inside
//! the encryption (a one-pass signature with SHA-256, made by the key's
//! signing-capable subkey or primary key), so `gpg --decrypt` prints "Good
//! signature". Everything that reads a snapshot checks that signature
//! against the `--signer` public keys once the whole message has been read,
//! before any record is used, under this policy:
//!
//! | snapshot | without `--require-signature` | with it |
//! |---|---|---|
//! | signed by a signer, signature verifies | fine | fine |
//! | signature present but does not verify | error | error |
//! | signed by a key that is not a signer | warning | error |
//! | not signed | warning | error |
//!
//! Without any `--signer` (and without `--require-signature`) signatures are
//! not checked at all. Errors are repository problems (exit status 5): the
//! snapshot in the repository is not trustworthy.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgp::composed::{Deserializable, DetachedSignature, Message, SignedPublicKey};
use pgp::packet::{PublicKey, PublicSubkey, SecretKey, SecretSubkey, Signature, SignatureType};
use pgp::types::{KeyDetails, SigningKey, VerifyingKey};

use crate::crypto::{expired, fingerprint_hex, load_public_key, newest, SecretKeys};
use crate::error::{Error, Result};

/// The key that signs snapshots: a subkey allowed to sign, or the primary.
pub enum SnapshotSigner {
    /// A signing subkey (newest valid one).
    Subkey(SecretSubkey),
    /// The primary key.
    Primary(SecretKey),
}

impl SnapshotSigner {
    /// Picks the signing key of an unlocked secret key: its newest subkey
    /// whose binding allows signing and is neither expired nor revoked,
    /// else the primary key if its self-signature allows signing.
    pub fn from_secret(keys: &SecretKeys) -> Result<SnapshotSigner> {
        let key = keys.signed_key();
        let now = SystemTime::now();
        let mut best: Option<(&SecretSubkey, u32)> = None;
        for sub in &key.secret_subkeys {
            if sub
                .signatures
                .iter()
                .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
            {
                continue;
            }
            let Some(binding) = newest(&sub.signatures) else {
                continue;
            };
            let created: SystemTime = sub.key.created_at().into();
            if !binding.key_flags().sign() || expired(created, binding, now) {
                continue;
            }
            let t = sub.key.created_at().as_secs();
            if best.is_none_or(|(_, bt)| t > bt) {
                best = Some((&sub.key, t));
            }
        }
        if let Some((sub, _)) = best {
            return Ok(SnapshotSigner::Subkey(sub.clone()));
        }
        let primary_sig = key
            .details
            .users
            .iter()
            .filter_map(|u| newest(&u.signatures))
            .next();
        let can_sign = primary_sig.is_none_or(|s| s.key_flags().sign());
        if can_sign && !key.primary_key.secret_params().is_encrypted() {
            return Ok(SnapshotSigner::Primary(key.primary_key.clone()));
        }
        Err(Error::key(format!(
            "secret key {} has no usable signing key (no signing subkey, and the primary key cannot sign)",
            keys.describe()
        )))
    }

    /// The key as the `pgp` crate signs with it.
    pub fn as_signing_key(&self) -> &dyn SigningKey {
        match self {
            SnapshotSigner::Subkey(k) => k,
            SnapshotSigner::Primary(k) => k,
        }
    }

    /// Upper-case hex fingerprint of the key that signs.
    pub fn fingerprint(&self) -> String {
        match self {
            SnapshotSigner::Subkey(k) => fingerprint_hex(k),
            SnapshotSigner::Primary(k) => fingerprint_hex(k),
        }
    }
}

/// One key a signature may be verified with.
#[derive(Debug, Clone)]
enum Candidate {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

impl Candidate {
    fn fingerprint(&self) -> String {
        match self {
            Candidate::Primary(k) => fingerprint_hex(k),
            Candidate::Subkey(k) => fingerprint_hex(k),
        }
    }

    fn key_id(&self) -> String {
        match self {
            Candidate::Primary(k) => hex::encode_upper(k.legacy_key_id()),
            Candidate::Subkey(k) => hex::encode_upper(k.legacy_key_id()),
        }
    }

    fn verifier(&self) -> &dyn VerifyingKey {
        match self {
            Candidate::Primary(k) => k,
            Candidate::Subkey(k) => k,
        }
    }
}

/// One trusted signer: its primary fingerprint and the keys that may sign.
#[derive(Debug, Clone)]
struct Signer {
    fingerprint: String,
    candidates: Vec<Candidate>,
}

impl Signer {
    fn load(file: &Path) -> Result<Signer> {
        Ok(Signer::from_key(&load_public_key(file)?))
    }

    fn from_key(key: &SignedPublicKey) -> Signer {
        Signer {
            fingerprint: fingerprint_hex(key),
            candidates: candidates(key),
        }
    }

    /// Whether the detached signature `sig` is one of this signer's keys'
    /// over `data`.
    fn verifies(&self, sig: &Signature, data: &[u8]) -> bool {
        sig.typ() == Some(SignatureType::Binary)
            && self.candidates.iter().any(|c| {
                let named = sig
                    .issuer_fingerprint()
                    .iter()
                    .any(|f| format!("{f:X}") == c.fingerprint())
                    || sig
                        .issuer_key_id()
                        .iter()
                        .any(|k| hex::encode_upper(k) == c.key_id());
                named
                    && match c {
                        Candidate::Primary(k) => sig.verify(k, data).is_ok(),
                        Candidate::Subkey(k) => sig.verify(k, data).is_ok(),
                    }
            })
    }
}

/// The keys whose detached signatures a reader accepts: its own (the
/// public part of its secret key) and the `--signer` keys.
#[derive(Debug, Clone, Default)]
pub struct Certifiers {
    signers: Vec<Signer>,
}

impl Certifiers {
    /// The public part of `own`, then the policy's signers.
    pub fn new(own: Option<&SecretKeys>, policy: &Policy) -> Certifiers {
        let mut signers: Vec<Signer> = own
            .map(|k| Signer::from_key(&k.signed_key().to_public_key()))
            .into_iter()
            .collect();
        for s in &policy.signers {
            if !signers.iter().any(|o| o.fingerprint == s.fingerprint) {
                signers.push(s.clone());
            }
        }
        Certifiers { signers }
    }

    /// Upper-case primary fingerprints, in order.
    pub fn fingerprints(&self) -> impl Iterator<Item = &str> {
        self.signers.iter().map(|s| s.fingerprint.as_str())
    }

    /// Checks an armored detached signature over `data` by the key with
    /// primary fingerprint `fingerprint`; the error says why it fails.
    pub fn verify_detached(
        &self,
        fingerprint: &str,
        armored: &[u8],
        data: &[u8],
    ) -> std::result::Result<(), String> {
        let signer = self
            .signers
            .iter()
            .find(|s| s.fingerprint == fingerprint)
            .ok_or_else(|| format!("key {fingerprint} is not one of yours"))?;
        let (sig, _) = DetachedSignature::from_armor_single(std::io::Cursor::new(armored))
            .map_err(|e| format!("not an OpenPGP signature ({e})"))?;
        if signer.verifies(&sig.signature, data) {
            Ok(())
        } else {
            Err(format!(
                "the signature does not verify with key {fingerprint}"
            ))
        }
    }
}

/// An armored detached signature over `data` by `signer` (SHA-256).
pub fn sign_detached(signer: &SnapshotSigner, data: &[u8]) -> Result<Vec<u8>> {
    let mut rng = rand::thread_rng();
    let hash = pgp::crypto::hash::HashAlgorithm::Sha256;
    let pw = pgp::types::Password::empty();
    let sig = match signer {
        SnapshotSigner::Subkey(k) => {
            DetachedSignature::sign_binary_data(&mut rng, k, &pw, hash, data)
        }
        SnapshotSigner::Primary(k) => {
            DetachedSignature::sign_binary_data(&mut rng, k, &pw, hash, data)
        }
    }
    .and_then(|sig| sig.to_armored_bytes(Default::default()))
    .map_err(|e| Error::key(format!("signing with key {}: {e}", signer.fingerprint())))?;
    Ok(sig)
}

/// The primary key and every subkey whose binding verifies and allows
/// signing (expiry is not checked: an old snapshot stays verifiable).
fn candidates(key: &SignedPublicKey) -> Vec<Candidate> {
    let mut out = vec![Candidate::Primary(key.primary_key.clone())];
    for sub in &key.public_subkeys {
        let ok = sub.signatures.iter().any(|s| {
            s.typ() == Some(SignatureType::SubkeyBinding)
                && s.key_flags().sign()
                && s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok()
        });
        if ok {
            out.push(Candidate::Subkey(sub.key.clone()));
        }
    }
    out
}

/// What a snapshot's signature turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No signature at all.
    Unsigned,
    /// A valid signature by the signer with this primary fingerprint.
    Good(String),
    /// Signed, but by none of the signers (issuer as given in the
    /// signature).
    Unknown(String),
    /// The signature names a signer's key but does not verify.
    Bad(String),
}

/// Which snapshots are acceptable: the trusted signers, and whether an
/// unsigned or foreign-signed snapshot is an error.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    signers: Vec<Signer>,
    require: bool,
}

impl Policy {
    /// Loads the `--signer` keys; `--require-signature` without any signer
    /// is a usage error (nothing could ever pass).
    pub fn load(files: &[PathBuf], require: bool) -> Result<Policy> {
        if require && files.is_empty() {
            return Err(Error::usage(
                "--require-signature needs at least one --signer PUBLIC.asc (or BK_SIGNER)",
            ));
        }
        let signers = files
            .iter()
            .map(|f| Signer::load(f))
            .collect::<Result<Vec<_>>>()?;
        Ok(Policy { signers, require })
    }

    /// A policy that checks nothing.
    pub fn none() -> Policy {
        Policy::default()
    }

    /// Whether signatures are checked at all.
    pub fn active(&self) -> bool {
        !self.signers.is_empty()
    }

    /// The status of a message that has been read to its end.
    pub fn status(&self, msg: &Message<'_>) -> Status {
        let Message::Signed { reader, .. } = msg else {
            return Status::Unsigned;
        };
        let mut unknown = None;
        for i in 0..reader.num_signatures() {
            let Some(sig) = reader.signature(i) else {
                return Status::Bad("the signature packet is missing at the end".into());
            };
            let issuer = issuer(sig);
            let Some((signer, cand)) = self.find(sig) else {
                unknown.get_or_insert(issuer);
                continue;
            };
            if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
                return Status::Bad(format!("signature by {issuer} is not a data signature"));
            }
            return match msg.verify_nested_explicit(i, cand.verifier()) {
                Ok(_) => Status::Good(signer.fingerprint.clone()),
                Err(_) => Status::Bad(format!(
                    "signature by {} does not verify",
                    cand.fingerprint()
                )),
            };
        }
        match unknown {
            Some(i) => Status::Unknown(i),
            None => Status::Bad("signed message without a signature".into()),
        }
    }

    /// The signer key a signature names (by issuer fingerprint or key id).
    fn find(&self, sig: &Signature) -> Option<(&Signer, &Candidate)> {
        let fprs: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| format!("{f:X}"))
            .collect();
        let ids: Vec<String> = sig.issuer_key_id().iter().map(hex::encode_upper).collect();
        self.signers.iter().find_map(|s| {
            s.candidates
                .iter()
                .find(|c| fprs.contains(&c.fingerprint()) || ids.contains(&c.key_id()))
                .map(|c| (s, c))
        })
    }

    /// Applies the policy to the status of snapshot `name`: `Ok` to go on
    /// (after a warning on stderr from `program` where one is due), or the
    /// error that refuses the snapshot.
    pub fn enforce(&self, program: &str, name: &str, status: &Status) -> Result<()> {
        if !self.active() {
            return Ok(());
        }
        let refuse = |what: String| {
            Error::repo(format!(
                "snapshot {name}: {what}; refusing it (--require-signature)"
            ))
        };
        match status {
            Status::Good(_) => Ok(()),
            Status::Bad(why) => Err(Error::repo(format!(
                "snapshot {name}: signature does not verify ({why}); it was altered or forged"
            ))),
            Status::Unsigned if self.require => Err(refuse("not signed".into())),
            Status::Unknown(issuer) if self.require => Err(refuse(format!(
                "signed by {issuer}, which is not among the --signer keys"
            ))),
            Status::Unsigned => {
                crate::say!("{program}: warning: snapshot {name} is not signed");
                Ok(())
            }
            Status::Unknown(issuer) => {
                crate::say!(
                    "{program}: warning: snapshot {name} is signed by {issuer}, which is not among the --signer keys"
                );
                Ok(())
            }
        }
    }
}

/// How a signature names its issuer: fingerprint if present, else key id.
fn issuer(sig: &Signature) -> String {
    if let Some(f) = sig.issuer_fingerprint().first() {
        return format!("key {f:X}");
    }
    match sig.issuer_key_id().first() {
        Some(k) => format!("key 0x{}", hex::encode_upper(k)),
        None => "an unnamed key".into(),
    }
}
