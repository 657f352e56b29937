//! Keys derived from the repository id key that authenticate what a
//! backing-up host writes: snapshot names, snapshot contents, and the local
//! reuse cache; and the key that seals lock files, so that the storage
//! operator cannot read who holds a lock.
//!
//! Every backing-up host holds the id key (it names objects); the storage
//! operator never does: the repository keeps it only encrypted to the
//! recipients, and public keys cannot decrypt it. So a MAC under a key
//! derived from it shows that a backing-up host made the thing, not someone
//! who holds only the public key and write access. Each use gets its own
//! key (HKDF-SHA256, the repository id as salt, one label per use), so no
//! derived key reveals the id key or another derived key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::repo::idkey::IdKey;

/// Bytes of a snapshot name's tag (hex in the name: twice as many digits).
pub const NAME_TAG_BYTES: usize = 8;

/// The keys a backing-up host authenticates its output with.
#[derive(Clone)]
pub struct AuthKeys {
    name: Zeroizing<[u8; 32]>,
    snapshot: Zeroizing<[u8; 32]>,
    cache: Zeroizing<[u8; 32]>,
    root: Zeroizing<[u8; 32]>,
    lock: LockKey,
}

impl std::fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKeys(..)")
    }
}

impl AuthKeys {
    /// Derives the keys of repository `repo_id` from its id key.
    pub fn derive(id_key: &IdKey, repo_id: &str) -> AuthKeys {
        let hk = Hkdf::<Sha256>::new(Some(repo_id.as_bytes()), id_key.secret_bytes());
        let expand = |label: &[u8]| {
            let mut out = Zeroizing::new([0u8; 32]);
            // 32 bytes is far below HKDF-SHA256's limit of 8,160.
            hk.expand(label, out.as_mut())
                .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF length"));
            out
        };
        AuthKeys {
            name: expand(b"bk snapshot name v1"),
            snapshot: expand(b"bk snapshot content v1"),
            cache: expand(b"bk reuse cache v1"),
            root: expand(b"bk snapshot root v2"),
            lock: LockKey(expand(b"bk lock v2")),
        }
    }

    /// The tag of a snapshot name's stem (`<time>-<nonce>`), in hex.
    pub fn name_tag(&self, stem: &str) -> String {
        let mut mac = hmac(&self.name);
        mac.update(stem.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..NAME_TAG_BYTES])
    }

    /// Whether `tag_hex` is the tag of `stem` (compared in constant time).
    pub fn name_tag_matches(&self, stem: &str, tag_hex: &str) -> bool {
        let Some(tag) = decode_hex(tag_hex).filter(|t| t.len() == NAME_TAG_BYTES) else {
            return false;
        };
        let mut mac = hmac(&self.name);
        mac.update(stem.as_bytes());
        mac.verify_truncated_left(&tag).is_ok()
    }

    /// A MAC over the content of the snapshot `name`, fed as it is written
    /// or read.
    pub fn snapshot_mac(&self, name: &str) -> StreamMac {
        let mut mac = hmac(&self.snapshot);
        mac.update(b"bk snapshot v1\n");
        mac.update(name.as_bytes());
        mac.update(b"\n");
        StreamMac(mac)
    }

    /// The passphrase snapshot roots are encrypted to besides the
    /// recipients, so that backing-up hosts read them (hex of a derived
    /// key: `gpg --passphrase` takes it as it is).
    pub fn root_passphrase(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.root.as_ref()))
    }

    /// The key lock files are sealed with: every holder of the id key can
    /// read who holds a lock, the storage operator cannot.
    pub fn lock_key(&self) -> LockKey {
        self.lock.clone()
    }

    /// A MAC over the local reuse cache file of `root` (keyed BLAKE3: the
    /// cache is read in full before every run that reuses it, so speed
    /// matters more than what `openssl` can check).
    pub fn cache_mac(&self, root: &[u8]) -> CacheMac {
        let mut h = blake3::Hasher::new_keyed(&self.cache);
        h.update(&(root.len() as u64).to_le_bytes());
        h.update(root);
        CacheMac(h)
    }
}

/// Bytes of an AES-GCM nonce (96 bits, random for every message).
pub const LOCK_NONCE_BYTES: usize = 12;

/// An AES-256-GCM key for lock files: lock files carry the holder's host
/// name, pid and program, which the storage operator must not learn, and a
/// holder must be able to tell its repository's locks from forged ones.
#[derive(Clone)]
pub struct LockKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockKey(..)")
    }
}

impl LockKey {
    /// A random key that no one else holds, for a holder that has no id
    /// key (`bk-index forget` with neither): its lock still conflicts by
    /// its name and ages by its modification time, while nobody can read
    /// it.
    pub fn ephemeral() -> LockKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        LockKey(key)
    }

    /// Encrypts and authenticates `plain`, bound to `name` (the lock file's
    /// name, so that a body cannot be moved to another file): a random
    /// nonce followed by the ciphertext and its tag.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; LOCK_NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            .unwrap_or_else(|_| unreachable!("AES-GCM encrypts any message this short"));
        let mut out = Vec::with_capacity(nonce.len() + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of what [`LockKey::seal`] made for `name` under this
    /// key; `None` for anything else (another key or name, damage,
    /// forgery).
    pub fn open(&self, name: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < LOCK_NONCE_BYTES {
            return None;
        }
        let (nonce, body) = sealed.split_at(LOCK_NONCE_BYTES);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: name.as_bytes(),
                },
            )
            .ok()
            .map(Zeroizing::new)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.as_ref()))
    }
}

fn hmac(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode(text).ok()
}

/// An HMAC-SHA256 being fed a stream of bytes.
#[derive(Clone)]
pub struct StreamMac(Hmac<Sha256>);

impl StreamMac {
    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The MAC in hex.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize().into_bytes())
    }

    /// Whether `mac_hex` is the MAC of what was fed (constant time).
    pub fn matches(self, mac_hex: &str) -> bool {
        match decode_hex(mac_hex) {
            Some(tag) if tag.len() == 32 => self.0.verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

/// A keyed BLAKE3 being fed a cache file.
#[derive(Clone)]
pub struct CacheMac(blake3::Hasher);

impl CacheMac {
    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The MAC in hex.
    pub fn finish(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }

    /// Whether `mac_hex` is the MAC of what was fed (constant time).
    pub fn matches(&self, mac_hex: &str) -> bool {
        blake3::Hash::from_hex(mac_hex).is_ok_and(|h| h == self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(repo: &str) -> AuthKeys {
        AuthKeys::derive(&IdKey::from_bytes([7u8; 32]), repo)
    }

    #[test]
    fn tags_depend_on_the_key_the_repository_and_the_stem() {
        let a = keys("aa");
        let tag = a.name_tag("20261201T000000Z-h-01020304");
        assert_eq!(tag.len(), 2 * NAME_TAG_BYTES);
        assert!(a.name_tag_matches("20261201T000000Z-h-01020304", &tag));
        assert!(!a.name_tag_matches("20261201T000000Z-h-01020305", &tag));
        assert!(!keys("ab").name_tag_matches("20261201T000000Z-h-01020304", &tag));
        let other = AuthKeys::derive(&IdKey::from_bytes([8u8; 32]), "aa");
        assert!(!other.name_tag_matches("20261201T000000Z-h-01020304", &tag));
        assert!(!a.name_tag_matches("20261201T000000Z-h-01020304", &tag.to_uppercase()));
        assert!(!a.name_tag_matches("20261201T000000Z-h-01020304", "zz"));
    }

    #[test]
    fn snapshot_macs_bind_the_name_and_every_byte() {
        let k = keys("aa");
        let mut m = k.snapshot_mac("n1");
        m.update(b"line 1\nline 2\n");
        let mac = m.finish();
        let check = |name: &str, body: &[&[u8]]| {
            let mut m = k.snapshot_mac(name);
            for b in body {
                m.update(b);
            }
            m.matches(&mac)
        };
        assert!(
            check("n1", &[b"line 1\n", b"line 2\n"]),
            "split feeding is the same"
        );
        assert!(!check("n2", &[b"line 1\nline 2\n"]));
        assert!(!check("n1", &[b"line 1\nline 3\n"]));
        assert!(!check("n1", &[b"line 1\n"]));
    }

    #[test]
    fn lock_bodies_open_only_under_their_key_and_name() {
        let k = keys("aa").lock_key();
        let sealed = k.seal("shared-01.lock", b"who holds it");
        assert_eq!(sealed.len(), LOCK_NONCE_BYTES + b"who holds it".len() + 16);
        assert_eq!(
            k.open("shared-01.lock", &sealed)
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"who holds it"[..])
        );
        assert_ne!(
            sealed,
            k.seal("shared-01.lock", b"who holds it"),
            "fresh nonce"
        );
        assert!(k.open("exclusive-01.lock", &sealed).is_none(), "other name");
        assert!(keys("ab")
            .lock_key()
            .open("shared-01.lock", &sealed)
            .is_none());
        assert!(LockKey::ephemeral()
            .open("shared-01.lock", &sealed)
            .is_none());
        let mut damaged = sealed.clone();
        damaged[LOCK_NONCE_BYTES] ^= 1;
        assert!(k.open("shared-01.lock", &damaged).is_none());
        assert!(k.open("shared-01.lock", &sealed[..5]).is_none());
        assert!(k.open("shared-01.lock", b"").is_none());
    }

    #[test]
    fn cache_macs_bind_the_root() {
        let k = keys("aa");
        let mut a = k.cache_mac(b"/home");
        a.update(b"x");
        let mut b = k.cache_mac(b"/hom");
        b.update(b"ex");
        assert_ne!(a.finish(), b.finish());
        assert!(a.matches(&a.finish()));
        assert!(!a.matches(&b.finish()));
    }
}
