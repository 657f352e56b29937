//! The MAC line that ends a snapshot's plaintext and each local reuse cache
//! file: `{"bk":"snapshot","v":1,"mac":"<64 hex digits>"}` (or `"cache"`).
//!
//! It has a fixed length, so a reader tells it from the records by holding
//! back only that many bytes, and it has no `path` or `kind`, so `jq`
//! filters over a snapshot that `gpg --decrypt` printed pass it by. The MAC
//! covers every byte before it (see [`crate::repo::authkey`]).

use std::io::{self, Write};

use crate::repo::authkey::StreamMac;

/// What a trailer closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    /// A snapshot's record stream.
    Snapshot,
    /// A local reuse cache file.
    Cache,
}

impl Of {
    fn name(self) -> &'static str {
        match self {
            Of::Snapshot => "snapshot",
            Of::Cache => "cache",
        }
    }

    /// Bytes of the trailer line, newline included.
    pub fn line_len(self) -> usize {
        line(self, &"0".repeat(64)).len()
    }
}

/// The trailer line (with its newline) carrying `mac_hex`.
pub fn line(of: Of, mac_hex: &str) -> Vec<u8> {
    format!(
        "{{\"bk\":\"{}\",\"v\":1,\"mac\":\"{mac_hex}\"}}\n",
        of.name()
    )
    .into_bytes()
}

/// The MAC a trailer line carries, if `bytes` is one.
pub fn parse(of: Of, bytes: &[u8]) -> Option<&str> {
    let prefix = format!("{{\"bk\":\"{}\",\"v\":1,\"mac\":\"", of.name());
    let rest = bytes.strip_prefix(prefix.as_bytes())?;
    let mac = rest.strip_suffix(b"\"}\n")?;
    (mac.len() == 64 && mac.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| std::str::from_utf8(mac).ok())
        .flatten()
}

/// What the end of a snapshot's plaintext held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A trailer whose MAC verifies.
    Valid,
    /// A trailer whose MAC does not verify.
    Invalid,
    /// A trailer, not checked (no key to check it with).
    Unchecked,
    /// No trailer: the last line is a record.
    Missing,
}

/// Passes a snapshot's plaintext on to `out`, all but a final trailer
/// line, which it holds back and checks against `mac` (fed with every
/// byte passed on).
pub struct Splitter<W: Write> {
    out: W,
    mac: Option<StreamMac>,
    tail: Vec<u8>,
    keep: usize,
}

impl<W: Write> Splitter<W> {
    /// A splitter writing records to `out`.
    pub fn new(out: W, mac: Option<StreamMac>) -> Self {
        let keep = Of::Snapshot.line_len();
        Splitter {
            out,
            mac,
            tail: Vec::with_capacity(2 * keep + (256 << 10)),
            keep,
        }
    }

    /// The writer the records go to.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn pass(&mut self, upto: usize) -> io::Result<()> {
        let bytes = &self.tail[..upto];
        self.out.write_all(bytes)?;
        if let Some(mac) = &mut self.mac {
            mac.update(bytes);
        }
        self.tail.drain(..upto);
        Ok(())
    }

    /// The writer, once [`Splitter::finish`] has run.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Ends the stream: what the held-back bytes were. Bytes that are not
    /// a trailer are passed on first.
    pub fn finish(&mut self) -> io::Result<Found> {
        let found = match parse(Of::Snapshot, &self.tail) {
            Some(tag) => match self.mac.take() {
                Some(mac) => {
                    if mac.matches(tag) {
                        Found::Valid
                    } else {
                        Found::Invalid
                    }
                }
                None => Found::Unchecked,
            },
            None => {
                self.pass(self.tail.len())?;
                Found::Missing
            }
        };
        self.out.flush()?;
        Ok(found)
    }
}

impl<W: Write> Write for Splitter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tail.extend_from_slice(buf);
        if self.tail.len() > self.keep {
            self.pass(self.tail.len() - self.keep)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::authkey::AuthKeys;
    use crate::repo::idkey::IdKey;

    fn keys() -> AuthKeys {
        AuthKeys::derive(&IdKey::from_bytes([3u8; 32]), "aa")
    }

    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut mac = keys().snapshot_mac("n");
        mac.update(body);
        [body, &line(Of::Snapshot, &mac.finish())].concat()
    }

    fn split(data: &[u8], piece: usize, key: Option<&AuthKeys>) -> (Found, Vec<u8>) {
        let mut s = Splitter::new(Vec::new(), key.map(|k| k.snapshot_mac("n")));
        for p in data.chunks(piece.max(1)) {
            s.write_all(p).unwrap();
        }
        let found = s.finish().unwrap();
        (found, s.into_inner())
    }

    #[test]
    fn a_trailer_is_held_back_and_checked_in_any_write_sizes() {
        let body = b"{\"a\":1}\n{\"b\":2}\n".repeat(40);
        let data = sealed(&body);
        for piece in [1, 7, 64, 65, 1000, data.len()] {
            assert_eq!(
                split(&data, piece, Some(&keys())),
                (Found::Valid, body.clone())
            );
        }
        assert_eq!(split(&data, 5, None), (Found::Unchecked, body.clone()));
    }

    #[test]
    fn altered_bytes_or_another_name_fail() {
        let body = b"{\"a\":1}\n".to_vec();
        let mut data = sealed(&body);
        data[3] ^= 1;
        assert_eq!(split(&data, 3, Some(&keys())).0, Found::Invalid);
        let data = sealed(&body);
        let mut s = Splitter::new(Vec::new(), Some(keys().snapshot_mac("other")));
        s.write_all(&data).unwrap();
        assert_eq!(s.finish().unwrap(), Found::Invalid);
    }

    #[test]
    fn without_a_trailer_every_byte_is_passed_on() {
        for body in [&b""[..], b"{}\n", &b"{\"path\":\"x\"}\n".repeat(30)] {
            assert_eq!(
                split(body, 4, Some(&keys())),
                (Found::Missing, body.to_vec())
            );
        }
    }

    #[test]
    fn trailer_lines_have_one_length_and_parse_back() {
        let l = line(Of::Cache, &"ab".repeat(32));
        assert_eq!(l.len(), Of::Cache.line_len());
        assert_eq!(parse(Of::Cache, &l), Some("ab".repeat(32).as_str()));
        assert_eq!(parse(Of::Snapshot, &l), None);
        assert_eq!(parse(Of::Cache, &line(Of::Cache, &"AB".repeat(32))), None);
    }
}
