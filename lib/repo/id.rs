//! Typed ids, parsed once where they come in (a record, a listing), so
//! no code below slices or trusts a string from a repository or stdin.

use crate::error::{Error, Result};

/// An object (blob) id: 32 bytes (HMAC-SHA256 of the content's SHA-256
/// under the id key), written as 64 lower-case hex digits. Made only by
/// parsing, by the id key or from a pack header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

impl ObjectId {
    /// Parses 64 lower-case hex digits; anything else is a repository
    /// error naming (the start of) the text.
    pub fn parse(text: &str) -> Result<ObjectId> {
        let mut raw = [0u8; 32];
        let lower_hex =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if lower_hex && hex::decode_to_slice(text, &mut raw).is_ok() {
            return Ok(ObjectId(raw));
        }
        Err(Error::repo(format!(
            "object id {:?} is not 64 lower-case hex digits",
            text.chars().take(80).collect::<String>()
        )))
    }

    /// The id of these 32 bytes.
    pub fn from_bytes(raw: [u8; 32]) -> ObjectId {
        ObjectId(raw)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A pack id: 32 random bytes, written as 64 lower-case hex digits, the
/// pack's file name under `packs/<first byte>/`. Made at random, by
/// parsing, or from a listing, so a key built from one never names a path
/// outside `packs/`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId([u8; 32]);

impl PackId {
    /// A new random pack id.
    pub fn random() -> PackId {
        let mut raw = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        PackId(raw)
    }

    /// The id of these 32 bytes.
    pub fn from_bytes(raw: [u8; 32]) -> PackId {
        PackId(raw)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 lower-case hex digits.
    pub fn parse(text: &str) -> Result<PackId> {
        ObjectId::parse(text).map(|id| PackId(id.0)).map_err(|_| {
            Error::repo(format!(
                "pack id {:?} is not 64 lower-case hex digits",
                text.chars().take(80).collect::<String>()
            ))
        })
    }

    /// The storage key of the pack: `packs/<first byte>/<id>`.
    pub fn key(&self) -> String {
        format!("packs/{:02x}/{self}", self.0[0])
    }

    /// The id a key below `packs/` names (`ab/<id>`), if it is one in its
    /// right sub-directory.
    pub fn from_key(rel: &str) -> Option<PackId> {
        let (sub, name) = rel.split_once('/')?;
        let id = PackId::parse(name).ok()?;
        (format!("{:02x}", id.0[0]) == sub).then_some(id)
    }
}

impl std::fmt::Display for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackId({self})")
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// Serializes an id (or anything shown as text) as its text: for serde's
/// `serialize_with` on fields of reports printed as JSON.
pub fn as_text<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_parsed_once_and_packs_name_only_their_key() {
        let hex = "0a".repeat(32);
        let id = ObjectId::parse(&hex).unwrap();
        assert_eq!(id.to_string(), hex);
        assert_eq!(id.as_bytes(), &[0x0a; 32]);
        let pack = PackId::parse(&hex).unwrap();
        assert_eq!(pack.key(), format!("packs/0a/{hex}"));
        for bad in [
            "0A".repeat(32),
            "0a".repeat(31),
            format!("{}zz", "0a".repeat(31)),
            format!("../{}", "0a".repeat(31)),
            format!("{}é", "0a".repeat(31)),
            String::new(),
        ] {
            let e = ObjectId::parse(&bad).unwrap_err();
            assert!(
                e.to_string().contains("is not 64 lower-case hex digits"),
                "{e}"
            );
            assert_eq!(e.exit_code(), crate::error::exit::REPO);
        }
        assert!(PackId::parse(&format!("../{}", "0a".repeat(31))).is_err());
        assert_eq!(PackId::from_key(&format!("0a/{hex}")), Some(pack));
        assert_eq!(PackId::from_key(&format!("0b/{hex}")), None);
        assert_eq!(PackId::from_key(&format!("0/{hex}")), None);
        assert_eq!(PackId::from_key(&hex), None);
    }
}
