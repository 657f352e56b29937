//! Pack files: many blobs (each a complete OpenPGP message) stored
//! together, so the storage operator sees only pack counts, sizes and
//! times (see `doc/format.md`).
//!
//! ```text
//! plaintext = blob_1 ‖ … ‖ blob_n ‖ header ‖ footer
//! stored    = plaintext XOR AES-256-CTR(pack key, counter from 0)
//! ```
//!
//! The header is an OpenPGP compressed message holding one JSON line per
//! blob (`{"id","offset","length","size"}`); the footer is 88 ASCII bytes
//! `bk-pack 2 <header length, 12 digits> <HMAC-SHA256 of the header>\n`.
//! The pack key and the header's MAC key are derived from the repository
//! id key (HKDF-SHA256, the repository id as salt, `bk pack v2 <pack id>`
//! as info), so only backing-up hosts (and whoever holds the secret key,
//! which decrypts the id key) can find blob boundaries; any byte range
//! decrypts on its own (the counter of byte `o` is `o / 16`), which is
//! what ranged reads and repacking need.

use std::io::{self, BufRead, Read, Write};

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::repo::id::{ObjectId, PackId};
use crate::repo::idkey::IdKey;
use crate::storage::Storage;

/// Bytes of the footer at the end of every pack.
pub const FOOTER_LEN: u64 = 88;

/// Bytes read from the end of a pack to find its header.
const TAIL_READ: u64 = 256 << 10;

/// The most a header may take (a pack of 16 MiB of tiny blobs has a header
/// of a few MiB); a larger claim is refused before anything is read.
pub const HEADER_LIMIT: u64 = 256 << 20;

/// The most JSON a header may decompress to per byte of pack data: an
/// entry is at most 200 bytes and a blob at least 40, so anything beyond
/// this is not a header bk wrote.
const HEADER_EXPANSION: u64 = 8;

/// Derives the key of every pack of one repository.
#[derive(Clone)]
pub struct PackKeys {
    hkdf: Hkdf<Sha256>,
}

impl std::fmt::Debug for PackKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackKeys(..)")
    }
}

impl PackKeys {
    /// The pack keys of repository `repo_id` under its id key.
    pub fn derive(id_key: &IdKey, repo_id: &str) -> PackKeys {
        PackKeys {
            hkdf: Hkdf::<Sha256>::new(Some(repo_id.as_bytes()), id_key.secret_bytes()),
        }
    }

    /// The keys of one pack.
    pub fn pack(&self, id: &PackId) -> PackKey {
        let mut okm = Zeroizing::new([0u8; 64]);
        self.hkdf
            .expand(format!("bk pack v2 {id}").as_bytes(), okm.as_mut())
            .unwrap_or_else(|_| unreachable!("64 bytes is a valid HKDF length"));
        let mut ctr = Zeroizing::new([0u8; 32]);
        let mut mac = Zeroizing::new([0u8; 32]);
        ctr.copy_from_slice(&okm[..32]);
        mac.copy_from_slice(&okm[32..]);
        PackKey { ctr, mac }
    }
}

/// The keys of one pack: its AES-256-CTR key and its header's MAC key.
#[derive(Clone)]
pub struct PackKey {
    ctr: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for PackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackKey(..)")
    }
}

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

impl PackKey {
    /// The keystream positioned at byte `offset` of the pack.
    pub fn cipher_at(&self, offset: u64) -> PackCipher {
        let mut c = Aes256Ctr::new(self.ctr.as_ref().into(), &[0u8; 16].into());
        c.seek(offset);
        PackCipher(c)
    }

    /// The MAC of a header.
    fn header_mac(&self, header: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.mac.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(header);
        mac
    }
}

/// The pack keystream at some position: XORing it encrypts and decrypts.
pub struct PackCipher(Aes256Ctr);

impl PackCipher {
    /// Encrypts or decrypts `buf` in place and moves on by its length.
    pub fn apply(&mut self, buf: &mut [u8]) {
        self.0.apply_keystream(buf);
    }
}

/// Where one blob lies in its pack, as the pack's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// The blob's id (its content's keyed hash).
    #[serde(with = "id_hex")]
    pub id: ObjectId,
    /// Offset of its first byte in the pack.
    pub offset: u64,
    /// Bytes of the OpenPGP message.
    pub length: u64,
    /// Bytes of plaintext it holds.
    pub size: u64,
}

mod id_hex {
    use super::ObjectId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ObjectId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A pack being written: blobs go in one after the other, already
/// encrypted as OpenPGP messages, and leave through the pack keystream.
pub struct PackBuilder<W: Write> {
    id: PackId,
    key: PackKey,
    cipher: PackCipher,
    out: W,
    len: u64,
    entries: Vec<BlobEntry>,
    hasher: blake3::Hasher,
}

/// A pack written whole: what the inventory and the local index learn.
#[derive(Debug, Clone)]
pub struct WrittenPack {
    /// Its id.
    pub id: PackId,
    /// Its blobs, in pack order.
    pub entries: Vec<BlobEntry>,
    /// Bytes stored.
    pub stored: u64,
    /// Hex BLAKE3 of the stored bytes (for the keyless inventory check).
    pub blake3: String,
}

impl<W: Write> PackBuilder<W> {
    /// Starts pack `id` on `out`.
    pub fn new(id: PackId, keys: &PackKeys, out: W) -> Self {
        let key = keys.pack(&id);
        PackBuilder {
            id,
            cipher: key.cipher_at(0),
            key,
            out,
            len: 0,
            entries: Vec::new(),
            hasher: blake3::Hasher::new(),
        }
    }

    /// The pack's id.
    pub fn id(&self) -> &PackId {
        &self.id
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no blob is in it yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Blobs in it so far.
    pub fn entries(&self) -> &[BlobEntry] {
        &self.entries
    }

    fn put(&mut self, bytes: &mut [u8]) -> io::Result<()> {
        self.cipher.apply(bytes);
        self.hasher.update(bytes);
        self.out.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Appends one blob (a complete OpenPGP message, encrypted here in
    /// place) holding `size` bytes of plaintext.
    pub fn add(&mut self, id: ObjectId, size: u64, message: &mut [u8]) -> io::Result<BlobEntry> {
        let entry = BlobEntry {
            id,
            offset: self.len,
            length: message.len() as u64,
            size,
        };
        self.put(message)?;
        self.entries.push(entry);
        Ok(entry)
    }

    /// Writes the header and footer; returns the output and what was
    /// written.
    pub fn finish(mut self) -> io::Result<(W, WrittenPack)> {
        let mut header = encode_header(&self.entries)?;
        let mac = hex::encode(self.key.header_mac(&header).finalize().into_bytes());
        let mut footer = format!("bk-pack 2 {:012} {mac}\n", header.len()).into_bytes();
        debug_assert_eq!(footer.len() as u64, FOOTER_LEN);
        self.put(&mut header)?;
        self.put(&mut footer)?;
        self.out.flush()?;
        let written = WrittenPack {
            id: self.id,
            entries: self.entries,
            stored: self.len,
            blake3: self.hasher.finalize().to_hex().to_string(),
        };
        Ok((self.out, written))
    }
}

/// The header's bytes: JSON lines in an OpenPGP compressed message (which
/// `gpg --decrypt` prints).
fn encode_header(entries: &[BlobEntry]) -> io::Result<Vec<u8>> {
    let mut json = Vec::with_capacity(entries.len() * 130);
    for e in entries {
        serde_json::to_writer(&mut json, e).map_err(io::Error::other)?;
        json.push(b'\n');
    }
    crate::crypto::blob::compressed_message(&json)
}

/// Why a pack's header could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// The storage failed (or the pack is gone).
    Io(io::Error),
    /// The bytes are not a header bk wrote under this key: a damaged or
    /// forged pack, or one of another repository.
    Invalid(String),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Io(e) => write!(f, "{}", crate::error::io_cause(e)),
            HeaderError::Invalid(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        HeaderError::Io(e)
    }
}

/// Reads `len` bytes of pack `key` from `offset`, decrypted.
fn read_plain(
    store: &dyn Storage,
    id: &PackId,
    key: &PackKey,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, HeaderError> {
    let reader = store
        .open_range(&id.key(), offset, len)?
        .ok_or_else(|| HeaderError::Io(io::Error::new(io::ErrorKind::NotFound, "pack is gone")))?;
    let mut buf = Vec::with_capacity(len as usize);
    reader.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(HeaderError::Invalid(format!(
            "shorter than its listing says ({} bytes missing)",
            len - buf.len() as u64
        )));
    }
    key.cipher_at(offset).apply(&mut buf);
    Ok(buf)
}

/// Reads and checks the header of pack `id`, `size` bytes long: its MAC,
/// and blobs that lie one after the other inside the data part.
pub fn read_header(
    store: &dyn Storage,
    id: &PackId,
    size: u64,
    keys: &PackKeys,
) -> Result<Vec<BlobEntry>, HeaderError> {
    let key = keys.pack(id);
    if size < FOOTER_LEN {
        // A key that is not a regular file (a FIFO, a device) is listed
        // without a size: opening it lets the storage refuse it and say
        // what it is, rather than call it a short pack.
        store.open_range(&id.key(), 0, 0)?;
        return Err(HeaderError::Invalid(format!(
            "{size} bytes: too short to be a pack"
        )));
    }
    // One read of the pack's tail usually holds the footer and the whole
    // header (a second one fetches the rest of a larger header).
    let tail_len = size.min(TAIL_READ);
    let tail = read_plain(store, id, &key, size - tail_len, tail_len)?;
    let footer = &tail[tail.len() - FOOTER_LEN as usize..];
    let (header_len, mac) = parse_footer(footer).ok_or_else(|| {
        HeaderError::Invalid(
            "its footer does not decrypt under this repository's key (a damaged or foreign pack)"
                .into(),
        )
    })?;
    let data_len = size - FOOTER_LEN;
    if header_len > data_len || header_len > HEADER_LIMIT {
        return Err(HeaderError::Invalid(format!(
            "its footer claims a header of {header_len} bytes in a pack of {size}"
        )));
    }
    let data_len = data_len - header_len;
    let in_tail = tail_len - FOOTER_LEN;
    let header = if header_len <= in_tail {
        let start = (in_tail - header_len) as usize;
        tail[start..start + header_len as usize].to_vec()
    } else {
        read_plain(store, id, &key, data_len, header_len)?
    };
    if key.header_mac(&header).verify_slice(&mac).is_err() {
        return Err(HeaderError::Invalid(
            "its header does not match its MAC (damaged or altered)".into(),
        ));
    }
    let limit = data_len
        .saturating_mul(HEADER_EXPANSION)
        .saturating_add(1 << 16);
    let json = crate::crypto::blob::read_compressed_message(&header, limit)
        .map_err(|e| HeaderError::Invalid(format!("its header: {e}")))?;
    parse_entries(&json, data_len).map_err(HeaderError::Invalid)
}

/// The header length and MAC of a footer, if it is one.
fn parse_footer(footer: &[u8]) -> Option<(u64, [u8; 32])> {
    let text = std::str::from_utf8(footer).ok()?;
    let rest = text.strip_prefix("bk-pack 2 ")?.strip_suffix('\n')?;
    let (len, mac_hex) = rest.split_once(' ')?;
    if len.len() != 12 || !len.bytes().all(|b| b.is_ascii_digit()) || mac_hex.len() != 64 {
        return None;
    }
    let mut mac = [0u8; 32];
    hex::decode_to_slice(mac_hex, &mut mac).ok()?;
    Some((len.parse().ok()?, mac))
}

/// The entries of a header's JSON, checked to lie one after the other
/// within the first `data_len` bytes.
fn parse_entries(json: &[u8], data_len: u64) -> Result<Vec<BlobEntry>, String> {
    let mut entries: Vec<BlobEntry> = Vec::new();
    let mut next = 0u64;
    for (n, line) in json.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let e: BlobEntry = serde_json::from_slice(line)
            .map_err(|err| format!("its header, line {}: {err}", n + 1))?;
        let end = e.offset.checked_add(e.length);
        if e.offset < next || e.length == 0 || end.is_none_or(|end| end > data_len) {
            return Err(format!(
                "its header, line {}: a blob at {}+{} outside the pack's data or over another",
                n + 1,
                e.offset,
                e.length
            ));
        }
        next = e.offset + e.length;
        entries.push(e);
    }
    Ok(entries)
}

/// Streams bytes `offset..offset+len` of pack `id`, decrypted: one blob,
/// or a run of neighbouring blobs read in one request.
pub fn open_range(
    store: &dyn Storage,
    id: &PackId,
    keys: &PackKeys,
    offset: u64,
    len: u64,
) -> io::Result<Option<RangeReader>> {
    let Some(inner) = store.open_range(&id.key(), offset, len)? else {
        return Ok(None);
    };
    Ok(Some(RangeReader {
        inner: inner.take(len),
        cipher: keys.pack(id).cipher_at(offset),
        buf: vec![0u8; 64 << 10].into_boxed_slice(),
        pos: 0,
        end: 0,
    }))
}

/// A decrypting reader over a byte range of a pack.
pub struct RangeReader {
    inner: io::Take<crate::storage::KeyReader>,
    cipher: PackCipher,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RangeReader")
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for RangeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end {
            let n = loop {
                match self.inner.read(&mut self.buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            self.cipher.apply(&mut self.buf[..n]);
            self.pos = 0;
            self.end = n;
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> PackKeys {
        PackKeys::derive(&IdKey::from_bytes([3u8; 32]), "00ff")
    }

    #[test]
    fn the_keystream_of_any_range_is_the_one_of_the_whole() {
        let k = keys().pack(&PackId::from_bytes([1u8; 32]));
        let mut whole = vec![0u8; 1000];
        k.cipher_at(0).apply(&mut whole);
        for start in [0usize, 1, 15, 16, 17, 500, 999] {
            let mut part = vec![0u8; 1000 - start];
            k.cipher_at(start as u64).apply(&mut part);
            assert_eq!(part, whole[start..], "from {start}");
        }
        let other = keys().pack(&PackId::from_bytes([2u8; 32]));
        let mut theirs = vec![0u8; 1000];
        other.cipher_at(0).apply(&mut theirs);
        assert_ne!(theirs, whole, "each pack has its own key");
    }

    #[test]
    fn footers_parse_only_when_well_formed() {
        let mac = "ab".repeat(32);
        let good = format!("bk-pack 2 {:012} {mac}\n", 1234);
        assert_eq!(good.len() as u64, FOOTER_LEN);
        assert_eq!(parse_footer(good.as_bytes()).map(|f| f.0), Some(1234));
        assert!(parse_footer(good.replace("2 ", "3 ").as_bytes()).is_none());
        assert!(parse_footer(&good.as_bytes()[1..]).is_none());
        assert!(parse_footer(format!("bk-pack 2 {:012} {mac}\n", "-1").as_bytes()).is_none());
    }

    #[test]
    fn entries_must_lie_one_after_the_other_inside_the_data() {
        let id = "cd".repeat(32);
        let line = |o: u64, l: u64| {
            format!("{{\"id\":\"{id}\",\"offset\":{o},\"length\":{l},\"size\":1}}\n")
        };
        let ok = format!("{}{}", line(0, 10), line(10, 5));
        assert_eq!(parse_entries(ok.as_bytes(), 15).unwrap().len(), 2);
        assert!(parse_entries(ok.as_bytes(), 14).is_err(), "past the data");
        let overlap = format!("{}{}", line(0, 10), line(9, 5));
        assert!(parse_entries(overlap.as_bytes(), 100).is_err());
        assert!(parse_entries(line(0, 0).as_bytes(), 100).is_err());
        assert!(parse_entries(line(u64::MAX, 2).as_bytes(), u64::MAX).is_err());
        assert!(parse_entries(b"{\"id\":\"zz\"}\n", 100).is_err());
    }
}
