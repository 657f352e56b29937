//! Blobs: the OpenPGP messages packs hold (see [`crate::repo::pack`]).
//!
//! The blobs of one pack share a session key, whose public-key-encrypted
//! copies (PKESK packets) are made once per pack and put in front of every
//! blob: each blob stays a complete message that `gpg --decrypt` reads on
//! its own, while writing a pack costs one public-key operation per
//! recipient and reading one costs one, however many blobs it holds
//! ([`SessionCache`]). A blob's content is compressed (OpenPGP ZLIB, which
//! GnuPG 2.2 reads) when a cheap test says it is worth it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::{self, BufRead, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pgp::composed::{Esk, Message, PlainSessionKey, RawSessionKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::{
    DataMode, LiteralDataHeader, PacketHeader, PacketTrait, SymEncryptedProtectedData,
};
use pgp::ser::Serialize;
use pgp::types::{CompressionAlgorithm, DecryptionKey, EskType, Password, PkeskVersion, Tag};

use super::{pgp_to_io, Recipients, SecretKeys};
use crate::error::{Error, Result};

/// ZLIB level of compressed blobs: zlib-rs level 2 keeps nine tenths of
/// level 6's savings on text at twice its speed.
pub const COMPRESSION_LEVEL: u32 = 2;

/// Bytes at the start of a content that the compressibility test looks at.
const SAMPLE: usize = 16 << 10;

/// A content is stored compressed only when that saves at least this
/// fraction (in 1/64ths): 2/64 ≈ 3 %.
const MIN_SAVING_64THS: usize = 2;

/// The session key of one pack, with its PKESK packets serialised once.
#[derive(Clone)]
pub struct BlobSession {
    key: RawSessionKey,
    esk: Arc<Vec<u8>>,
}

impl Debug for BlobSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobSession(..)")
    }
}

impl Recipients {
    /// A fresh session key for one pack, encrypted to every recipient.
    pub fn blob_session(&self) -> io::Result<BlobSession> {
        let shared = self.new_session(&mut rand::thread_rng())?;
        Ok(BlobSession {
            key: shared.key,
            esk: shared.esk_packets,
        })
    }
}

/// Whether a content that starts with `sample` looks compressible: the
/// byte entropy of its first [`SAMPLE`] bytes is below 7.5 bits. Already
/// compressed or encrypted data (JPEG, zip, gzip, random) is above, text
/// and executables well below; the test costs a pass over 16 KiB, against
/// the megabytes per second compression would waste on such data.
pub fn looks_compressible(sample: &[u8]) -> bool {
    let sample = &sample[..sample.len().min(SAMPLE)];
    if sample.len() < 64 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in sample {
        counts[b as usize] += 1;
    }
    let n = sample.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    // A short sample cannot show its full entropy (at most log2(n)).
    bits < 7.5_f64.min(n.log2() - 0.5)
}

impl BlobSession {
    /// The PKESK packets every blob of this session starts with.
    pub fn esk_packets(&self) -> &[u8] {
        &self.esk
    }

    /// Encrypts `data` as one blob, ZLIB-compressed when `compress` and
    /// that makes it smaller by a few per cent.
    ///
    /// Uncompressed, `data` is encrypted as it is read: the blob is the
    /// one copy made (building the literal packet and then the encrypted
    /// packet in memory took four copies of a chunk of up to 4 MiB at
    /// once, per worker).
    pub fn seal(&self, data: &[u8], compress: bool) -> io::Result<Vec<u8>> {
        if compress {
            let literal = literal_header(data.len())?;
            let packet = compressed_packet(&literal, data)?;
            let full = literal.len() + data.len();
            if packet.len() + full * MIN_SAVING_64THS / 64 < full {
                return self.encrypt(&packet);
            }
        }
        self.seal_stream(data, data.len() as u64)
    }

    /// Encrypts `input`, read to its end, as one blob without compression,
    /// streaming (for contents too large to hold twice in memory).
    pub fn seal_stream(&self, input: impl Read, size_hint: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(size_hint as usize + self.esk.len() + 64);
        out.extend_from_slice(&self.esk);
        let mut rng = rand::thread_rng();
        let mut builder = pgp::composed::MessageBuilder::from_reader("", input)
            .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        builder
            .set_session_key(self.key.clone())
            .map_err(pgp_to_io)?;
        builder
            .partial_chunk_size(super::partial_chunk(Some(size_hint)))
            .map_err(pgp_to_io)?;
        builder.to_writer(&mut rng, &mut out).map_err(pgp_to_io)?;
        Ok(out)
    }

    /// PKESKs, then the SEIPD v1 packet of `plaintext` (serialised packets).
    fn encrypt(&self, plaintext: &[u8]) -> io::Result<Vec<u8>> {
        let packet = SymEncryptedProtectedData::encrypt_seipdv1(
            rand::thread_rng(),
            SymmetricKeyAlgorithm::AES256,
            self.key.as_ref(),
            plaintext,
        )
        .map_err(pgp_to_io)?;
        let mut out = Vec::with_capacity(self.esk.len() + plaintext.len() + 64);
        out.extend_from_slice(&self.esk);
        packet.to_writer_with_header(&mut out).map_err(pgp_to_io)?;
        Ok(out)
    }
}

/// The packet header and literal-data header of a binary literal packet
/// of `len` bytes, with no file name and a zero date.
fn literal_header(len: usize) -> io::Result<Vec<u8>> {
    let header = LiteralDataHeader::new(DataMode::Binary);
    let body = u32::try_from(header.write_len() + len)
        .map_err(|_| io::Error::other("a blob of 4 GiB or more"))?;
    let mut out = Vec::with_capacity(16);
    PacketHeader::new_fixed(Tag::LiteralData, body)
        .to_writer(&mut out)
        .map_err(pgp_to_io)?;
    header.to_writer(&mut out).map_err(pgp_to_io)?;
    Ok(out)
}

/// A compressed-data packet (ZLIB) holding the literal packet
/// `literal ‖ data`.
fn compressed_packet(literal: &[u8], data: &[u8]) -> io::Result<Vec<u8>> {
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(data.len() / 3 + 64),
        flate2::Compression::new(COMPRESSION_LEVEL),
    );
    z.write_all(literal)?;
    z.write_all(data)?;
    let zlib = z.finish()?;
    // The packet: its header (rPGP's encoding of the length), the
    // algorithm octet, the ZLIB stream.
    let len =
        u32::try_from(zlib.len() + 1).map_err(|_| io::Error::other("a blob of 4 GiB or more"))?;
    let mut out = Vec::with_capacity(zlib.len() + 8);
    PacketHeader::new_fixed(Tag::CompressedData, len)
        .to_writer(&mut out)
        .map_err(pgp_to_io)?;
    out.push(u8::from(CompressionAlgorithm::ZLIB));
    out.extend_from_slice(&zlib);
    Ok(out)
}

/// An unencrypted OpenPGP message holding `data` ZLIB-compressed (what a
/// pack header is: the pack keystream already hides it, and `gpg
/// --decrypt` prints it).
pub fn compressed_message(data: &[u8]) -> io::Result<Vec<u8>> {
    compressed_packet(&literal_header(data.len())?, data)
}

/// The content of an unencrypted (compressed or literal) OpenPGP message,
/// refusing more than `limit` bytes of it.
pub fn read_compressed_message(bytes: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    let (msg, _) = Message::from_reader(io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let mut msg = match msg {
        m @ Message::Compressed { .. } => m.decompress().map_err(|e| e.to_string())?,
        m @ Message::Literal { .. } => m,
        _ => return Err("not a compressed OpenPGP message".into()),
    };
    let mut out = Vec::new();
    (&mut msg)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > limit {
        return Err(format!("more than {limit} bytes of content"));
    }
    Ok(out)
}

/// Session keys already recovered, by the PKESK packets they came from:
/// the blobs of a pack carry the same packets, so a restore decrypts one
/// of them per pack with the secret key and every other blob with the
/// key found here. Threads that meet a pack's packets at the same time
/// wait for the first of them to recover its key rather than each doing
/// the public-key operation.
#[derive(Default)]
pub struct SessionCache {
    keys: Mutex<HashMap<Vec<u8>, Arc<Slot>>>,
    recovered: AtomicU64,
}

/// One session key, recovered by whoever holds its lock first.
type Slot = Mutex<Option<PlainSessionKey>>;

impl Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCache(..)")
    }
}

/// Session keys kept at most (one per pack being read; a few KiB).
const CACHED_SESSIONS: usize = 4096;

impl SessionCache {
    /// How many session keys were recovered with a secret key: the
    /// public-key operations made, one per pack read when the cache works.
    pub fn recovered(&self) -> u64 {
        self.recovered.load(Ordering::Relaxed)
    }

    /// The session key of the PKESK packets `esk`, recovered with
    /// `recover` only when no earlier call has it.
    fn key_for(
        &self,
        esk: Vec<u8>,
        recover: impl FnOnce() -> Result<PlainSessionKey>,
    ) -> Result<PlainSessionKey> {
        let slot = {
            let mut keys = crate::sys::sync::lock(&self.keys);
            if keys.len() >= CACHED_SESSIONS && !keys.contains_key(&esk) {
                keys.clear();
            }
            Arc::clone(keys.entry(esk).or_default())
        };
        let mut slot = crate::sys::sync::lock(&slot);
        if let Some(key) = slot.as_ref() {
            return Ok(key.clone());
        }
        let key = recover()?;
        self.recovered.fetch_add(1, Ordering::Relaxed);
        *slot = Some(key.clone());
        Ok(key)
    }
}

impl SecretKeys {
    /// Decrypts one blob like [`SecretKeys::decrypt`], taking its session
    /// key from `cache` when a blob with the same PKESK packets was
    /// decrypted before (and putting it there otherwise).
    pub fn decrypt_blob<'a, R>(
        &self,
        input: R,
        what: &str,
        cache: &SessionCache,
    ) -> Result<Message<'a>>
    where
        R: BufRead + Debug + Send + 'a,
    {
        let corrupt = |e: pgp::errors::Error| {
            Error::repo(format!("{what}: not a valid OpenPGP message ({e})"))
        };
        let (msg, _) = Message::from_reader(input).map_err(corrupt)?;
        let Message::Encrypted { esk, .. } = &msg else {
            return Err(Error::repo(format!(
                "{what}: not an encrypted OpenPGP message; refusing it"
            )));
        };
        let mut esk_bytes = Vec::new();
        for e in esk {
            e.to_writer(&mut esk_bytes).map_err(corrupt)?;
        }
        let key = cache.key_for(esk_bytes, || self.session_key(esk, what))?;
        let ring = pgp::composed::TheRing {
            session_keys: vec![key],
            decrypt_options: pgp::composed::DecryptionOptions::new()
                .set_seipdv1_read_mode(pgp::types::Seipdv1ReadMode::Streaming),
            ..Default::default()
        };
        let (msg, _) = msg
            .decrypt_the_ring(ring, true)
            .map_err(|e| Error::repo(format!("{what}: cannot decrypt: {e}")))?;
        super::unwrap_plaintext(msg, &corrupt)
    }

    /// Whether one of the PKESK packets of `message` (a blob, read whole)
    /// names one of these keys: then a key error on it means the packet
    /// is damaged, not that the blob is encrypted to other keys only.
    pub fn is_recipient_of(&self, message: &[u8]) -> bool {
        let Ok((msg, _)) = Message::from_reader(message) else {
            return false;
        };
        let Message::Encrypted { esk, .. } = &msg else {
            return false;
        };
        esk.iter().any(|e| {
            let Esk::PublicKeyEncryptedSessionKey(p) = e else {
                return false;
            };
            self.keys().iter().any(|key| {
                p.match_identity(key.primary_key.public_key())
                    || key
                        .secret_subkeys
                        .iter()
                        .any(|sub| p.match_identity(sub.key.public_key()))
            })
        })
    }

    /// The session key of a message, from the first of its PKESK packets
    /// that one of these keys decrypts.
    fn session_key(&self, esk: &[Esk], what: &str) -> Result<PlainSessionKey> {
        let empty = Password::empty();
        let mut recipients = Vec::new();
        for e in esk {
            let Esk::PublicKeyEncryptedSessionKey(p) = e else {
                continue;
            };
            if let Ok(id) = p.id() {
                recipients.push(format!("0x{}", hex::encode_upper(id)));
            }
            if p.version() != PkeskVersion::V3 {
                continue;
            }
            let Ok(values) = p.values() else {
                continue;
            };
            for key in self.keys() {
                for sub in &key.secret_subkeys {
                    if p.match_identity(sub.key.public_key()) {
                        if let Ok(Ok(sk)) = sub.key.decrypt(&empty, values, EskType::V3_4) {
                            return Ok(sk);
                        }
                    }
                }
                if p.match_identity(key.primary_key.public_key()) {
                    if let Ok(Ok(sk)) = key.primary_key.decrypt(&empty, values, EskType::V3_4) {
                        return Ok(sk);
                    }
                }
            }
        }
        Err(Error::key(format!(
            "{what}: cannot be decrypted with secret key {} (it is encrypted to {})",
            self.describe(),
            recipients.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_looks_compressible_and_random_bytes_do_not() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(400);
        assert!(looks_compressible(text.as_bytes()));
        // Seeded, so the test is the same on every run: a short random
        // sample now and then shows less entropy than the threshold by
        // chance (harmless: that blob is only tried with compression).
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(16);
        let mut random = vec![0u8; 20000];
        rand::RngCore::fill_bytes(&mut rng, &mut random);
        assert!(!looks_compressible(&random));
        let mut short_hits = 0;
        for _ in 0..1000 {
            rand::RngCore::fill_bytes(&mut rng, &mut random[..100]);
            short_hits += usize::from(looks_compressible(&random[..100]));
        }
        assert!(
            short_hits < 50,
            "{short_hits} of 1000 random 100-byte samples look compressible"
        );
        assert!(!looks_compressible(b"tiny"));
    }

    #[test]
    fn threads_meeting_one_pack_recover_its_session_key_once() {
        let cache = SessionCache::default();
        let key = || PlainSessionKey::V5 {
            key: vec![7u8; 32].into(),
        };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for pack in [b"pack one".to_vec(), b"pack two".to_vec()] {
                        cache
                            .key_for(pack, || {
                                std::thread::sleep(std::time::Duration::from_millis(20));
                                Ok(key())
                            })
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(cache.recovered(), 2, "one public-key operation per pack");
        let failed = cache.key_for(b"pack three".to_vec(), || Err(Error::key("no key")));
        assert!(failed.is_err());
        cache.key_for(b"pack three".to_vec(), || Ok(key())).unwrap();
        assert_eq!(cache.recovered(), 3, "a failed recovery is tried again");
    }

    #[test]
    fn compressed_messages_round_trip_and_are_bounded() {
        let data = b"{\"id\":1}\n".repeat(1000);
        let msg = compressed_message(&data).unwrap();
        assert!(msg.len() < data.len() / 4);
        assert_eq!(read_compressed_message(&msg, 1 << 20).unwrap(), data);
        assert!(read_compressed_message(&msg, 100).is_err());
        assert!(read_compressed_message(b"not openpgp", 100).is_err());
    }
}
