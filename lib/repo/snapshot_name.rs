//! Snapshot names: `<UTC time>-<nonce><tag>.pgp`, for example
//! `20261201T031500.123456Z-0a1b2c3d5f9e8d7c6b5a4938.pgp`.
//!
//! The time comes first so that names sort by time (the newest is the
//! greatest), the nonce keeps two runs of one microsecond apart, and the
//! tag (a MAC of the rest under a key derived from the id key, see
//! [`crate::repo::authkey`]) tells a name a backing-up host chose from one
//! someone else put there. The host that made a snapshot is inside its
//! root, not in its name: the storage operator learns when snapshots were
//! made, not by whom. A name is parsed once, here, and checked character
//! by character: names come from a listing of untrusted storage.

use std::time::SystemTime;

use rand::RngCore;

use crate::repo::authkey::{AuthKeys, NAME_TAG_BYTES};

/// Hex digits of the nonce.
const NONCE_HEX: usize = 8;

/// One snapshot name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotName {
    text: String,
    micros: i64,
    rfc3339: String,
    /// Length of `<time>-<nonce>`, the part the tag covers.
    stem_len: usize,
    tag: String,
}

impl SnapshotName {
    /// A new name for a snapshot made at `time`, tagged with `keys`.
    pub fn new(time: SystemTime, keys: &AuthKeys) -> SnapshotName {
        let stamp = humantime::format_rfc3339_micros(time)
            .to_string()
            .replace(['-', ':'], "");
        let mut nonce = [0u8; NONCE_HEX / 2];
        rand::thread_rng().fill_bytes(&mut nonce);
        let stem = format!("{stamp}-{}", hex::encode(nonce));
        let tag = keys.name_tag(&stem);
        let text = format!("{stem}{tag}.pgp");
        SnapshotName::parse(&text)
            .unwrap_or_else(|| unreachable!("a name made here parses: {text}"))
    }

    /// Parses a name; `None` if it is not one bk makes.
    pub fn parse(name: &str) -> Option<SnapshotName> {
        if !name.is_ascii() {
            return None;
        }
        let stem = name.strip_suffix(".pgp")?;
        let (stamp, suffix) = stem.split_once('-')?;
        if suffix.len() != NONCE_HEX + 2 * NAME_TAG_BYTES
            || !suffix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let (micros, rfc3339) = parse_stamp(stamp)?;
        Some(SnapshotName {
            text: name.to_owned(),
            micros,
            rfc3339,
            stem_len: stem.len() - 2 * NAME_TAG_BYTES,
            tag: suffix[NONCE_HEX..].to_owned(),
        })
    }

    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// When the snapshot was made, in microseconds since the epoch (UTC).
    pub fn micros(&self) -> i64 {
        self.micros
    }

    /// When the snapshot was made, as RFC 3339 (`2026-12-01T03:15:00.123456Z`).
    pub fn time(&self) -> &str {
        &self.rfc3339
    }

    /// Whether a backing-up host with these keys chose this name.
    pub fn authentic(&self, keys: &AuthKeys) -> bool {
        keys.name_tag_matches(&self.text[..self.stem_len], &self.tag)
    }
}

impl std::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Sorts snapshot names by the time each carries (to the microsecond),
/// then by name, names that do not parse first: names may have 0 to 9 fraction digits, so
/// their byte order is not their time order (`…T110916Z` is older than
/// `…T110916.152802Z` but sorts after it), and "latest" is the last.
pub fn oldest_first(mut names: Vec<String>) -> Vec<String> {
    names.sort_by_cached_key(|n| {
        let micros = SnapshotName::parse(n).map(|p| p.micros());
        (micros, n.clone())
    });
    names
}

/// `20261124T031500.123456Z` → microseconds since the epoch and RFC 3339.
fn parse_stamp(stamp: &str) -> Option<(i64, String)> {
    let b = stamp.as_bytes();
    if b.len() < 16 || b[8] != b'T' || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(r)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let frac = &b[15..b.len() - 1];
    let micros = match frac.split_first() {
        None => 0,
        Some((b'.', f)) if !f.is_empty() && f.len() <= 9 && f.iter().all(u8::is_ascii_digit) => {
            let mut us = 0i64;
            for i in 0..6 {
                us = us * 10 + f.get(i).map_or(0, |c| i64::from(c - b'0'));
            }
            us
        }
        _ => return None,
    };
    let days = crate::sys::time::days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    let frac_text = std::str::from_utf8(frac).ok()?;
    let rfc3339 = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac_text}Z");
    Some((secs * 1_000_000 + micros, rfc3339))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::idkey::IdKey;

    #[test]
    fn snapshot_names_sort_by_their_time_not_their_bytes() {
        let tail = "-0badcafe0123456789abcdef.pgp";
        let names: Vec<String> = [
            "20261207T110916.152802Z",
            "20261207T110916Z",
            "20261207T110917Z",
            "20261207T110916.15280Z",
            "not-a-snapshot",
            "20261207T110916.000001Z",
        ]
        .iter()
        .map(|t| format!("{t}{tail}"))
        .collect();
        let names = oldest_first(names);
        let order: Vec<&str> = names
            .iter()
            .map(|n| n.strip_suffix(tail).unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "not-a-snapshot",
                "20261207T110916Z",
                "20261207T110916.000001Z",
                "20261207T110916.15280Z",
                "20261207T110916.152802Z",
                "20261207T110917Z",
            ]
        );
    }

    fn keys() -> AuthKeys {
        AuthKeys::derive(&IdKey::from_bytes([1u8; 32]), "ab")
    }

    #[test]
    fn new_names_parse_back_and_are_authentic() {
        let t = humantime::parse_rfc3339("2026-11-24T03:15:00.123456Z").unwrap();
        let name = SnapshotName::new(t, &keys());
        assert!(name.as_str().starts_with("20261124T031500.123456Z-"));
        assert_eq!(
            name.as_str().len(),
            "20261124T031500.123456Z-".len() + 24 + 4
        );
        assert_eq!(name.time(), "2026-11-24T03:15:00.123456Z");
        assert_eq!(name.micros(), 1_795_490_100_123_456);
        assert!(name.authentic(&keys()));
        let other = AuthKeys::derive(&IdKey::from_bytes([2u8; 32]), "ab");
        assert!(!name.authentic(&other));
    }

    #[test]
    fn a_changed_time_breaks_the_tag() {
        let t = humantime::parse_rfc3339("2026-11-24T03:15:00Z").unwrap();
        let name = SnapshotName::new(t, &keys());
        let forged = name.as_str().replacen("2026", "2099", 1);
        let parsed = SnapshotName::parse(&forged).unwrap();
        assert!(!parsed.authentic(&keys()), "{forged}");
    }

    #[test]
    fn odd_names_are_refused_without_panicking() {
        for bad in [
            "garbage.pgp",
            "20261324T031500.1Z-0a1b2c3d0011223344556677.pgp",
            "2026112xT031500Z-0a1b2c3d0011223344556677.pgp",
            "20261124T031500Z-0a1b2c3d.pgp",
            "20261124T031500.123456Z-my-host.lan-0a1b2c3d5f9e8d7c6b5a4938.pgp",
            "20261124T031500Z-0A1B2C3D0011223344556677.pgp",
            "20261124T031500Z-0a1b2c3d001122334455667.pgp",
            "2026é124T031500.1Z-0a1b2c3d0011223344556677.pgp",
            "é-é.pgp",
            "20261124T031500Z-0a1b2c3d0011223344556677",
        ] {
            assert!(SnapshotName::parse(bad).is_none(), "{bad}");
        }
    }
}
