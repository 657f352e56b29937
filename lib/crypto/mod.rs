//! OpenPGP with the `pgp` crate: loading keys, choosing encryption subkeys,
//! streaming encryption and decryption.
//!
//! Everything bk stores is a standard OpenPGP message that GnuPG 2.2 reads:
//! v4 keys, SEIPD v1 with AES-256, an empty literal file name and a zero
//! date. Decryption runs in the `pgp` crate's streaming mode, which
//! releases plaintext before the integrity check at the end; callers must
//! therefore write to a temporary place and give the result its real name
//! only after the whole message (and bk's own SHA-256) checked out.

pub mod blob;
pub mod signature;

use std::fmt::Debug;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgp::composed::{
    DecryptionOptions, Deserializable, Esk, Message, MessageBuilder, SignedPublicKey,
    SignedSecretKey, TheRing,
};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{PublicKey, PublicKeyEncryptedSessionKey, PublicSubkey, Signature};
use pgp::types::{CompressionAlgorithm, KeyDetails, Password, Seipdv1ReadMode};

use crate::error::{Error, Result};

/// Size of the partial-length packets in the messages bk writes.
const PARTIAL_CHUNK: u32 = 1 << 20;

/// One key that can receive an encrypted session key.
#[derive(Debug, Clone)]
enum EncryptionTarget {
    Subkey(PublicSubkey),
    Primary(PublicKey),
}

/// The public keys a repository's objects and snapshots are encrypted to.
#[derive(Debug, Clone)]
pub struct Recipients {
    targets: Vec<EncryptionTarget>,
    fingerprints: Vec<String>,
    /// The session key shared by a run of objects (see
    /// [`Recipients::encrypt_object`]).
    session: std::sync::Arc<std::sync::Mutex<Option<SharedSession>>>,
}

/// A session key with its public-key-encrypted copies already serialised
/// (the PKESK packets), reused for up to [`SESSION_USES`] objects.
#[derive(Debug)]
pub(crate) struct SharedSession {
    pub(crate) key: pgp::composed::RawSessionKey,
    pub(crate) esk_packets: std::sync::Arc<Vec<u8>>,
    uses_left: u32,
}

/// How many objects share one session key before a fresh one is made.
const SESSION_USES: u32 = 4096;

impl Recipients {
    /// Loads every key file and picks each key's valid encryption subkeys.
    pub fn load(files: &[PathBuf]) -> Result<Recipients> {
        if files.is_empty() {
            return Err(Error::usage(
                "no recipient: give --recipient KEY (or BK_RECIPIENT)",
            ));
        }
        let mut targets = Vec::new();
        let mut fingerprints = Vec::new();
        for file in files {
            let key = load_public_key(file)?;
            let found = encryption_targets(&key, SystemTime::now());
            if found.is_empty() {
                return Err(Error::key(format!(
                    "{}: key {} has no valid encryption subkey (expired, revoked, or sign-only)",
                    file.display(),
                    fingerprint_hex(&key)
                )));
            }
            targets.extend(found);
            fingerprints.push(fingerprint_hex(&key));
        }
        Ok(Recipients {
            targets,
            fingerprints,
            session: Default::default(),
        })
    }

    /// Upper-case hex fingerprints of the primary keys, as gpg prints them.
    pub fn fingerprints(&self) -> &[String] {
        &self.fingerprints
    }

    /// Encrypts everything `input` yields into one OpenPGP message on `out`
    /// (SEIPD v1, AES-256, to every recipient), optionally ZLIB-compressed.
    /// Errors from `input` or `out` surface as `io::Error`s inside the
    /// returned error; callers that need to tell them apart wrap the two
    /// ends (see [`crate::stages::seal`]).
    pub fn encrypt<R: Read, W: Write>(&self, input: R, out: W, compress: bool) -> io::Result<()> {
        self.encrypt_full(input, out, compress, None, None)
    }

    /// Like [`Recipients::encrypt`], and with `signer` also signs the
    /// plaintext inside the encryption (a one-pass signature, SHA-256), so
    /// that `gpg --decrypt` reports who signed it.
    pub fn encrypt_signed<R: Read, W: Write>(
        &self,
        input: R,
        out: W,
        compress: bool,
        signer: Option<&dyn pgp::types::SigningKey>,
    ) -> io::Result<()> {
        self.encrypt_full(input, out, compress, None, signer)
    }

    /// Encrypts one object like [`Recipients::encrypt`] (packet buffers
    /// sized to `size_hint`), but with a
    /// session key shared by up to [`SESSION_USES`] objects of this run, so
    /// the public-key step (an X25519 or RSA operation per recipient, the
    /// main cost of a small file) is done once per batch instead of once
    /// per object. Each object is still a complete, standard OpenPGP
    /// message (its own PKESK packets, then SEIPD v1 with a fresh random
    /// prefix, which is what makes CFB safe under one key); gpg reads it
    /// alone. The storage operator can see which objects share a key, i.e.
    /// were written by the same run, which object times already show.
    pub fn encrypt_object<R: Read, W: Write>(
        &self,
        input: R,
        mut out: W,
        size_hint: Option<u64>,
    ) -> io::Result<()> {
        let mut rng = rand::thread_rng();
        let (key, esk_packets) = {
            let mut guard = crate::sys::sync::lock(&self.session);
            let fresh = guard.as_ref().is_none_or(|s| s.uses_left == 0);
            if fresh {
                *guard = Some(self.new_session(&mut rng)?);
            }
            let Some(session) = guard.as_mut() else {
                return Err(io::Error::other("no session key"));
            };
            session.uses_left -= 1;
            (
                session.key.clone(),
                std::sync::Arc::clone(&session.esk_packets),
            )
        };
        out.write_all(&esk_packets)?;
        let chunk = partial_chunk(size_hint);
        let mut builder = MessageBuilder::from_reader("", input)
            .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        builder.set_session_key(key).map_err(pgp_to_io)?;
        builder.partial_chunk_size(chunk).map_err(pgp_to_io)?;
        builder.to_writer(&mut rng, out).map_err(pgp_to_io)
    }

    /// A new random session key and its PKESK packet for every target.
    pub(crate) fn new_session(&self, rng: &mut rand::rngs::ThreadRng) -> io::Result<SharedSession> {
        use pgp::ser::Serialize;
        let alg = SymmetricKeyAlgorithm::AES256;
        let key = alg.new_session_key(&mut *rng);
        let mut packets = Vec::new();
        for target in &self.targets {
            let pkesk = match target {
                EncryptionTarget::Subkey(k) => {
                    PublicKeyEncryptedSessionKey::from_session_key_v3(&mut *rng, &key, alg, k)
                }
                EncryptionTarget::Primary(k) => {
                    PublicKeyEncryptedSessionKey::from_session_key_v3(&mut *rng, &key, alg, k)
                }
            }
            .map_err(pgp_to_io)?;
            Esk::PublicKeyEncryptedSessionKey(pkesk)
                .to_writer(&mut packets)
                .map_err(pgp_to_io)?;
        }
        Ok(SharedSession {
            key,
            esk_packets: std::sync::Arc::new(packets),
            uses_left: SESSION_USES,
        })
    }

    /// Like [`Recipients::encrypt_signed`] (compressed), and readable
    /// with `passphrase` too (a symmetric-key ESK packet: a snapshot root
    /// is read by backing-up hosts, which hold a passphrase derived from
    /// the id key but no secret key).
    ///
    /// The public-key ESK packets come first: gpg tries a message's ESK
    /// packets in order and asks for the passphrase of a symmetric one
    /// before it tries the secret keys it holds (with `--batch
    /// --passphrase` it fails on it and exits 2 after decrypting), so a
    /// root that started with its symmetric ESK could not be read with
    /// `gpg --decrypt` alone. The `pgp` crate writes symmetric ESKs
    /// first, so the root is made in memory (it is small) and reordered.
    pub fn encrypt_root<R: Read, W: Write>(
        &self,
        input: R,
        mut out: W,
        signer: Option<&dyn pgp::types::SigningKey>,
        passphrase: &str,
    ) -> io::Result<()> {
        let mut message = Vec::new();
        self.encrypt_inner(input, &mut message, true, None, signer, Some(passphrase))?;
        out.write_all(&public_key_esks_first(message))
    }

    fn encrypt_full<R: Read, W: Write>(
        &self,
        input: R,
        out: W,
        compress: bool,
        size_hint: Option<u64>,
        signer: Option<&dyn pgp::types::SigningKey>,
    ) -> io::Result<()> {
        self.encrypt_inner(input, out, compress, size_hint, signer, None)
    }

    fn encrypt_inner<R: Read, W: Write>(
        &self,
        input: R,
        out: W,
        compress: bool,
        size_hint: Option<u64>,
        signer: Option<&dyn pgp::types::SigningKey>,
        passphrase: Option<&str>,
    ) -> io::Result<()> {
        let chunk = partial_chunk(size_hint);
        let mut rng = rand::thread_rng();
        let mut builder = MessageBuilder::from_reader("", input)
            .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        for target in &self.targets {
            let res = match target {
                EncryptionTarget::Subkey(k) => builder.encrypt_to_key(&mut rng, k),
                EncryptionTarget::Primary(k) => builder.encrypt_to_key(&mut rng, k),
            };
            res.map_err(pgp_to_io)?;
        }
        if let Some(pass) = passphrase {
            // The passphrase is 256 random bits: the S2K needs no work
            // factor (the least iteration count, 1,024 bytes).
            let s2k = pgp::types::StringToKey::new_iterated(
                &mut rng,
                pgp::crypto::hash::HashAlgorithm::Sha256,
                0,
            );
            builder
                .encrypt_with_password(s2k, &Password::from(pass))
                .map_err(pgp_to_io)?;
        }
        if compress {
            builder.compression(CompressionAlgorithm::ZLIB);
        }
        if let Some(key) = signer {
            builder.sign(
                key,
                Password::empty(),
                pgp::crypto::hash::HashAlgorithm::Sha256,
            );
        }
        builder.partial_chunk_size(chunk).map_err(pgp_to_io)?;
        builder.to_writer(&mut rng, out).map_err(pgp_to_io)
    }
}

/// `message` with the public-key ESK packets (tag 1) among its leading
/// ESK packets moved before the symmetric-key ones (tag 3), each group in
/// its order; the rest of the message is untouched. A message whose
/// leading packets cannot be parsed is returned as it is.
fn public_key_esks_first(message: Vec<u8>) -> Vec<u8> {
    let mut public = Vec::new();
    let mut symmetric = Vec::new();
    let mut at = 0;
    while let Some((tag, len)) = packet_at(&message[at..]) {
        let packet = &message[at..at + len];
        match tag {
            1 => public.extend_from_slice(packet),
            3 => symmetric.extend_from_slice(packet),
            _ => break,
        }
        at += len;
    }
    if public.is_empty() || symmetric.is_empty() {
        return message;
    }
    let mut out = Vec::with_capacity(message.len());
    out.extend_from_slice(&public);
    out.extend_from_slice(&symmetric);
    out.extend_from_slice(&message[at..]);
    out
}

/// The tag and whole length (header included) of the OpenPGP packet at
/// the start of `bytes`, if it has a definite length that fits in `bytes`
/// (ESK packets always do; a partial or indeterminate length is `None`).
fn packet_at(bytes: &[u8]) -> Option<(u8, usize)> {
    let first = *bytes.first()?;
    let (tag, header, body) = match first & 0xC0 {
        // New format: tag in the low six bits, then a one, two or five
        // byte length.
        0xC0 => {
            let l0 = usize::from(*bytes.get(1)?);
            match l0 {
                0..=191 => (first & 0x3F, 2, l0),
                192..=223 => (
                    first & 0x3F,
                    3,
                    ((l0 - 192) << 8) + usize::from(*bytes.get(2)?) + 192,
                ),
                255 => {
                    let b: [u8; 4] = bytes.get(2..6)?.try_into().ok()?;
                    (first & 0x3F, 6, u32::from_be_bytes(b) as usize)
                }
                _ => return None,
            }
        }
        // Old format: tag in bits 5-2, length type in bits 1-0.
        0x80 => {
            let tag = (first >> 2) & 0x0F;
            match first & 0x03 {
                0 => (tag, 2, usize::from(*bytes.get(1)?)),
                1 => {
                    let b: [u8; 2] = bytes.get(1..3)?.try_into().ok()?;
                    (tag, 3, usize::from(u16::from_be_bytes(b)))
                }
                2 => {
                    let b: [u8; 4] = bytes.get(1..5)?.try_into().ok()?;
                    (tag, 5, u32::from_be_bytes(b) as usize)
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let len = header + body;
    (len <= bytes.len()).then_some((tag, len))
}

/// Partial-packet size for an input of about `size_hint` bytes: small
/// inputs get small buffers (the encoder zeroes a whole buffer per message).
pub(crate) fn partial_chunk(size_hint: Option<u64>) -> u32 {
    size_hint.map_or(PARTIAL_CHUNK, |n| {
        (n.saturating_add(64).next_power_of_two()).clamp(512, u64::from(PARTIAL_CHUNK)) as u32
    })
}

/// Turns a pgp error into an io::Error, keeping a wrapped io::Error intact
/// so that "disk full" stays recognisable.
pub(crate) fn pgp_to_io(err: pgp::errors::Error) -> io::Error {
    match err {
        pgp::errors::Error::IO { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// Upper-case hex fingerprint of a key.
pub fn fingerprint_hex(key: &impl KeyDetails) -> String {
    format!("{:X}", key.fingerprint())
}

/// Reads a public key (armored or binary). A secret key file is accepted
/// too and reduced to its public part.
pub fn load_public_key(file: &Path) -> Result<SignedPublicKey> {
    let data = read_key_file(file)?;
    match SignedPublicKey::from_reader_single(io::Cursor::new(&data)) {
        Ok((key, _)) => Ok(key),
        Err(_) => match SignedSecretKey::from_reader_single(io::Cursor::new(&data)) {
            Ok((key, _)) => Ok(key.to_public_key()),
            Err(e) => Err(Error::key(format!(
                "{}: not an OpenPGP public key: {e}",
                file.display()
            ))),
        },
    }
}

fn read_key_file(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).map_err(|e| {
        Error::key(format!(
            "key file {}: {}",
            file.display(),
            crate::error::io_cause(&e)
        ))
    })
}

/// Whether a key's self-signature marks it as expired at `now`.
pub(crate) fn expired(created: SystemTime, sig: &Signature, now: SystemTime) -> bool {
    match sig.key_expiration_time() {
        Some(d) if d.as_secs() > 0 => {
            created + std::time::Duration::from_secs(u64::from(d.as_secs())) <= now
        }
        _ => false,
    }
}

/// The newest signature of a list, by creation time.
pub(crate) fn newest(sigs: &[Signature]) -> Option<&Signature> {
    sigs.iter()
        .max_by_key(|s| s.created().map_or(0, |t| t.as_secs()))
}

/// The keys of `key` that may receive encrypted data now: subkeys whose
/// newest binding signature verifies, allows encryption, and is neither
/// expired nor revoked; the primary key only if it has no such subkey and
/// its own self-signature allows encryption.
fn encryption_targets(key: &SignedPublicKey, now: SystemTime) -> Vec<EncryptionTarget> {
    if !key.details.revocation_signatures.is_empty() {
        return Vec::new();
    }
    let primary_created: SystemTime = key.primary_key.created_at().into();
    let primary_sig = key
        .details
        .users
        .iter()
        .filter_map(|u| newest(&u.signatures))
        .max_by_key(|s| s.created().map_or(0, |t| t.as_secs()));
    if let Some(sig) = primary_sig {
        if expired(primary_created, sig, now) {
            return Vec::new();
        }
    }
    let mut out = Vec::new();
    for sub in &key.public_subkeys {
        let revoked = sub
            .signatures
            .iter()
            .any(|s| s.typ() == Some(pgp::packet::SignatureType::SubkeyRevocation));
        let bindings: Vec<Signature> = sub
            .signatures
            .iter()
            .filter(|s| s.typ() == Some(pgp::packet::SignatureType::SubkeyBinding))
            .cloned()
            .collect();
        let Some(binding) = newest(&bindings) else {
            continue;
        };
        let flags = binding.key_flags();
        let created: SystemTime = sub.key.created_at().into();
        if revoked
            || !(flags.encrypt_comms() || flags.encrypt_storage())
            || expired(created, binding, now)
            || binding
                .verify_subkey_binding(&key.primary_key, &sub.key)
                .is_err()
        {
            continue;
        }
        out.push(EncryptionTarget::Subkey(sub.key.clone()));
    }
    if out.is_empty() {
        if let Some(sig) = primary_sig {
            let flags = sig.key_flags();
            if flags.encrypt_comms() || flags.encrypt_storage() {
                out.push(EncryptionTarget::Primary(key.primary_key.clone()));
            }
        }
    }
    out
}

/// Where a passphrase comes from, in order: a file, `$BK_PASSPHRASE`, the
/// terminal.
#[derive(Debug, Clone, Default)]
pub struct PassphraseSource {
    /// File whose first line is the passphrase.
    pub file: Option<PathBuf>,
}

impl PassphraseSource {
    fn get(&self, key_desc: &str) -> Result<Password> {
        if let Some(file) = &self.file {
            let text = std::fs::read(file).map_err(|e| {
                Error::key(format!(
                    "passphrase file {}: {}",
                    file.display(),
                    crate::error::io_cause(&e)
                ))
            })?;
            let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            return Ok(Password::from(line));
        }
        if let Some(p) = std::env::var_os("BK_PASSPHRASE") {
            use std::os::unix::ffi::OsStrExt;
            return Ok(Password::from(p.as_bytes()));
        }
        match rpassword::prompt_password(format!("Passphrase for key {key_desc}: ")) {
            Ok(p) => Ok(Password::from(p)),
            Err(_) => Err(Error::key(format!(
                "secret key {key_desc} is passphrase-protected: give --passphrase-file FILE or set BK_PASSPHRASE (no terminal to ask)"
            ))),
        }
    }
}

/// Unlocked secret keys, ready to decrypt without asking again.
pub struct SecretKeys {
    keys: Vec<SignedSecretKey>,
    desc: String,
}

impl Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKeys({})", self.desc)
    }
}

impl SecretKeys {
    /// Loads a secret key file and unlocks it (asking for the passphrase
    /// only if the key is protected). A wrong passphrase is reported here,
    /// once, naming the key.
    pub fn load(file: &Path, pass: &PassphraseSource) -> Result<SecretKeys> {
        let data = read_key_file(file)?;
        let (mut key, _) =
            SignedSecretKey::from_reader_single(io::Cursor::new(&data)).map_err(|e| {
                Error::key(format!(
                    "{}: not an OpenPGP secret key: {e}",
                    file.display()
                ))
            })?;
        let desc = format!(
            "0x{} ({})",
            fingerprint_hex(key.primary_key.public_key()),
            file.display()
        );
        let locked = key.primary_key.secret_params().is_encrypted()
            || key
                .secret_subkeys
                .iter()
                .any(|k| k.key.secret_params().is_encrypted());
        if locked {
            let pw = pass.get(&desc)?;
            let wrong = || Error::key(format!("wrong passphrase for secret key {desc}"));
            for sub in &mut key.secret_subkeys {
                sub.key.remove_password(&pw).map_err(|_| wrong())?;
            }
            // A gpg key exported with only subkeys has a dummy primary; an
            // unusable primary is fine as long as the subkeys unlocked.
            if key.primary_key.remove_password(&pw).is_err() && key.secret_subkeys.is_empty() {
                return Err(wrong());
            }
        }
        Ok(SecretKeys {
            keys: vec![key],
            desc,
        })
    }

    /// The unlocked key (for signing with it, see [`crate::crypto::signature`]).
    pub fn signed_key(&self) -> &SignedSecretKey {
        &self.keys[0]
    }

    /// The key's description for messages: `0xFINGERPRINT (file)`.
    pub fn describe(&self) -> &str {
        &self.desc
    }

    /// Decrypts one OpenPGP message read from `input`, returning a reader
    /// of its plaintext. `what` names the message in errors ("object ab12…",
    /// "snapshot X"). The integrity check happens when the reader reaches
    /// the end: read it to EOF before trusting anything.
    pub fn decrypt<'a, R>(&self, input: R, what: &str) -> Result<Message<'a>>
    where
        R: BufRead + Debug + Send + 'a,
    {
        let corrupt = |e: pgp::errors::Error| {
            Error::repo(format!("{what}: not a valid OpenPGP message ({e})"))
        };
        let (msg, _) = Message::from_reader(input).map_err(corrupt)?;
        let recipients = match &msg {
            Message::Encrypted { esk, .. } => esk
                .iter()
                .filter_map(|e| match e {
                    Esk::PublicKeyEncryptedSessionKey(k) => {
                        k.id().ok().map(|id| format!("0x{}", hex::encode_upper(id)))
                    }
                    Esk::SymKeyEncryptedSessionKey(_) => None,
                })
                .collect::<Vec<_>>(),
            _ => {
                return Err(Error::repo(format!(
                    "{what}: not an encrypted OpenPGP message; refusing it"
                )))
            }
        };
        let empty = Password::empty();
        let ring = TheRing {
            secret_keys: self.keys.iter().collect(),
            key_passwords: vec![&empty],
            decrypt_options: DecryptionOptions::new()
                .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
            ..Default::default()
        };
        let (msg, _) = msg.decrypt_the_ring(ring, true).map_err(|e| match e {
            pgp::errors::Error::MissingKey => Error::key(format!(
                "{what}: cannot be decrypted with secret key {} (it is encrypted to {})",
                self.desc,
                recipients.join(", ")
            )),
            other => Error::repo(format!("{what}: cannot decrypt: {other}")),
        })?;
        unwrap_plaintext(msg, &corrupt)
    }

    /// The unlocked keys.
    pub(crate) fn keys(&self) -> &[SignedSecretKey] {
        &self.keys
    }
}

/// A decrypted message made ready to read its plaintext: decompressed
/// (also inside a signature).
pub(crate) fn unwrap_plaintext<'a>(
    msg: Message<'a>,
    corrupt: &dyn Fn(pgp::errors::Error) -> Error,
) -> Result<Message<'a>> {
    let mut msg = if msg.is_compressed() {
        msg.decompress().map_err(corrupt)?
    } else {
        msg
    };
    // A signed message may hold compressed data in turn (gpg --sign
    // --encrypt does that); decompressing a signed literal is a no-op.
    if msg.is_signed() {
        msg = msg.decompress().map_err(corrupt)?;
    }
    Ok(msg)
}

/// What decrypts a message: the secret keys, or (for snapshot roots) a
/// passphrase derived from the repository id key.
#[derive(Debug)]
pub enum Decryptor<'k> {
    /// The user's secret keys.
    Secret(&'k SecretKeys),
    /// A passphrase (hex of a key derived from the id key).
    Passphrase(zeroize::Zeroizing<String>),
}

impl Decryptor<'_> {
    /// Decrypts one message like [`SecretKeys::decrypt`].
    pub fn decrypt<'a, R>(&self, input: R, what: &str) -> Result<Message<'a>>
    where
        R: BufRead + Debug + Send + 'a,
    {
        let pass = match self {
            Decryptor::Secret(keys) => return keys.decrypt(input, what),
            Decryptor::Passphrase(p) => p,
        };
        let corrupt = |e: pgp::errors::Error| {
            Error::repo(format!("{what}: not a valid OpenPGP message ({e})"))
        };
        let (msg, _) = Message::from_reader(input).map_err(corrupt)?;
        if !msg.is_encrypted() {
            return Err(Error::repo(format!(
                "{what}: not an encrypted OpenPGP message; refusing it"
            )));
        }
        let password = Password::from(pass.as_str());
        let ring = TheRing {
            message_password: vec![&password],
            decrypt_options: DecryptionOptions::new()
                .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
            ..Default::default()
        };
        let (msg, _) = msg.decrypt_the_ring(ring, true).map_err(|e| match e {
            pgp::errors::Error::MissingKey => Error::repo(format!(
                "{what}: has no passphrase packet for this repository's id key (made by an older bk, or by someone else)"
            )),
            other => Error::repo(format!("{what}: cannot decrypt with the id key: {other}")),
        })?;
        unwrap_plaintext(msg, &corrupt)
    }
}

/// Copies the plaintext of a decrypted message (`what` names it) to `out`
/// (`out_name` names that in errors) and returns the byte count. A read
/// error is a repository problem (truncated message, failed integrity
/// check); a write error is a local I/O problem. `out` may have received
/// plaintext before a failure at the end of the message is detected.
pub fn copy_plaintext(
    msg: &mut dyn Read,
    what: &str,
    out: &mut dyn Write,
    out_name: &Path,
) -> Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match msg.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::repo(format!("{what}: {}", read_error_cause(&e)))),
        };
        out.write_all(&buf[..n])
            .map_err(|e| Error::io(out_name, e))?;
        total += n as u64;
    }
}

/// A human cause for an error met while reading decrypted plaintext: a
/// failed integrity check or a truncated message.
pub fn read_error_cause(err: &io::Error) -> String {
    let text = err.to_string();
    if err.kind() == io::ErrorKind::UnexpectedEof {
        "truncated (unexpected end of message)".into()
    } else if ["mdc", "modification detection", "hash"]
        .iter()
        .any(|w| text.to_ascii_lowercase().contains(w))
    {
        format!("integrity check failed (tampered or corrupt): {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new-format packet with tag `tag` and `body`.
    fn packet(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0xC0 | tag];
        match body.len() {
            n @ 0..=191 => p.push(n as u8),
            n @ 192..=8383 => {
                let n = n - 192;
                p.push((n >> 8) as u8 + 192);
                p.push(n as u8);
            }
            n => {
                p.push(255);
                p.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn public_key_esks_go_before_symmetric_ones_and_the_rest_stays() {
        let skesk = packet(3, &[3; 46]);
        let pkesk1 = packet(1, &[1; 94]);
        let pkesk2 = packet(1, &[2; 600]);
        // A SEIPD packet with a partial length (not parsed, kept as is).
        let data = [0xD2, 0xE9, 7, 7, 7, 7];
        let message = [&skesk[..], &pkesk1, &pkesk2, &data].concat();
        assert_eq!(
            public_key_esks_first(message),
            [&pkesk1[..], &pkesk2, &skesk, &data].concat()
        );
        let long = packet(1, &[9; 10_000]);
        let message = [&skesk[..], &long, &data].concat();
        assert_eq!(
            public_key_esks_first(message),
            [&long[..], &skesk, &data].concat()
        );
        // Old-format packets (tag 3 with a one-byte length, tag 1 with two).
        let old_skesk = [&[0x8C, 4][..], &[3; 4]].concat();
        let old_pkesk = [&[0x85, 0, 5][..], &[1; 5]].concat();
        let message = [&old_skesk[..], &old_pkesk, &data].concat();
        assert_eq!(
            public_key_esks_first(message),
            [&old_pkesk[..], &old_skesk, &data].concat()
        );
    }

    #[test]
    fn messages_it_cannot_parse_or_need_not_change_are_kept() {
        let skesk = packet(3, &[3; 46]);
        let pkesk = packet(1, &[1; 94]);
        let data = packet(18, &[5; 30]);
        for message in [
            [&pkesk[..], &skesk, &data].concat(),
            [&skesk[..], &data].concat(),
            [&skesk[..], &pkesk[..50]].concat(),
            Vec::new(),
            vec![0x00, 1, 2],
        ] {
            assert_eq!(public_key_esks_first(message.clone()), message);
        }
    }
}
