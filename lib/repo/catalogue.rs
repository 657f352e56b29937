//! The catalogue of a snapshot: its sorted record stream, stored as
//! content-defined *pieces* (blobs of whole lines) plus a small *root*
//! (`snapshots/<name>`) that lists them.
//!
//! A piece ends after a line once it holds at least [`PIECE_MIN`] bytes and
//! the line's BLAKE3 hash has its low [`CUT_BITS`] bits zero, or once it
//! holds [`PIECE_MAX`] bytes. The cut points depend only on the lines
//! themselves (and the bytes since the last cut), so an unchanged tree
//! gives the same pieces again, which are then already stored, and a
//! changed file changes the one or two pieces around its record.
//!
//! The root is an OpenPGP message (encrypted to the recipients, and to a
//! passphrase derived from the id key, so backing-up hosts can list and
//! group snapshots without the secret key) holding:
//!
//! ```text
//! {"bk":"snapshot","v":2,"time":…,"host":…,"roots":[…],"records":N,"files":N,"bytes":N}
//! {"piece":"<blob id>","size":N}        one line per piece, in order
//! {"bk":"snapshot","v":1,"mac":"<hex>"} the MAC line (see crate::repo::trailer)
//! ```

use serde::{Deserialize, Serialize};

/// The fewest bytes a piece is cut at (unless the stream ends).
pub const PIECE_MIN: usize = 64 << 10;

/// The most bytes a piece holds before it is cut regardless (plus the line
/// that crosses it).
pub const PIECE_MAX: usize = 1 << 20;

/// A line ends a piece (beyond [`PIECE_MIN`]) with probability 2^-CUT_BITS:
/// with lines of about 400 bytes, pieces of about 260 KiB.
pub const CUT_BITS: u32 = 9;

/// Cuts a stream of lines into pieces.
#[derive(Debug, Default)]
pub struct PieceCutter {
    piece: Vec<u8>,
}

impl PieceCutter {
    /// A cutter with nothing in it.
    pub fn new() -> Self {
        PieceCutter::default()
    }

    /// Adds one line (without its newline, which is added here); returns
    /// the piece this line ends, if it ends one.
    pub fn push(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        self.piece.extend_from_slice(line);
        self.piece.push(b'\n');
        let long = self.piece.len() >= PIECE_MAX;
        let cut = self.piece.len() >= PIECE_MIN && {
            let h = blake3::hash(line);
            let low = u32::from_le_bytes([
                h.as_bytes()[0],
                h.as_bytes()[1],
                h.as_bytes()[2],
                h.as_bytes()[3],
            ]);
            low & ((1 << CUT_BITS) - 1) == 0
        };
        (long || cut).then(|| std::mem::take(&mut self.piece))
    }

    /// The last piece, if any bytes are left.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.piece.is_empty()).then_some(self.piece)
    }
}

/// The first line of a root: what the snapshot is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootHeader {
    /// Always "snapshot".
    pub bk: String,
    /// Root version: 2.
    pub v: u32,
    /// When it was made (RFC 3339, UTC, microseconds).
    pub time: String,
    /// The host that made it.
    pub host: String,
    /// The roots it holds, as the records name them (lossy for names that
    /// are not UTF-8).
    pub roots: Vec<String>,
    /// Records in it.
    pub records: u64,
    /// File records in it.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// One line per piece of a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRef {
    /// The piece's blob id.
    pub piece: String,
    /// Bytes in the piece.
    pub size: u64,
}

/// A root read back.
#[derive(Debug, Clone)]
pub struct Root {
    /// What the snapshot is.
    pub header: RootHeader,
    /// Its pieces, in order.
    pub pieces: Vec<PieceRef>,
}

/// The most pieces a root may list (a record stream of 1 TiB).
pub const MAX_PIECES: usize = 1 << 22;

impl Root {
    /// The root's lines (without the MAC line).
    pub fn to_lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.pieces.len() * 100);
        let _ = serde_json::to_writer(&mut out, &self.header);
        out.push(b'\n');
        for p in &self.pieces {
            let _ = serde_json::to_writer(&mut out, p);
            out.push(b'\n');
        }
        out
    }

    /// Parses a root's lines (the MAC line already split off); `Err` names
    /// what is wrong.
    pub fn parse(text: &[u8]) -> Result<Root, String> {
        let mut lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let first = lines.next().ok_or("empty")?;
        let header: RootHeader =
            serde_json::from_slice(first).map_err(|e| format!("its first line: {e}"))?;
        if header.bk != "snapshot" || header.v != 2 {
            return Err(format!(
                "not a format-2 snapshot root (\"bk\":{:?},\"v\":{})",
                header.bk, header.v
            ));
        }
        let mut pieces = Vec::new();
        for (n, line) in lines.enumerate() {
            if pieces.len() >= MAX_PIECES {
                return Err(format!("more than {MAX_PIECES} pieces"));
            }
            let p: PieceRef =
                serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 2))?;
            pieces.push(p);
        }
        Ok(Root { header, pieces })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, salt: &str) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"path\":\"dir/file-{i}{salt}\",\"size\":{},\"pad\":\"{}\"}}",
                    i * 7,
                    "x".repeat(300)
                )
            })
            .collect()
    }

    fn cut(lines: &[String]) -> Vec<Vec<u8>> {
        let mut c = PieceCutter::new();
        let mut out: Vec<Vec<u8>> = lines.iter().filter_map(|l| c.push(l.as_bytes())).collect();
        out.extend(c.finish());
        out
    }

    #[test]
    fn pieces_hold_whole_lines_and_concatenate_to_the_stream() {
        let ls = lines(5000, "");
        let pieces = cut(&ls);
        assert!(pieces.len() > 3, "{} pieces", pieces.len());
        let joined: Vec<u8> = pieces.concat();
        let expect: String = ls.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(joined, expect.as_bytes());
        for p in &pieces[..pieces.len() - 1] {
            assert!(p.len() >= PIECE_MIN && p.len() <= PIECE_MAX + 400);
            assert_eq!(p.last(), Some(&b'\n'));
        }
    }

    #[test]
    fn one_changed_line_changes_few_pieces() {
        let ls = lines(20000, "");
        let mut changed = ls.clone();
        changed[10000] = changed[10000].replace("\"size\":70000", "\"size\":70001");
        let a = cut(&ls);
        let b = cut(&changed);
        let new = b.iter().filter(|p| !a.contains(p)).count();
        assert!(
            (1..=2).contains(&new),
            "{new} of {} pieces changed",
            b.len()
        );
    }

    #[test]
    fn roots_round_trip_and_refuse_other_versions() {
        let root = Root {
            header: RootHeader {
                bk: "snapshot".into(),
                v: 2,
                time: "2026-12-07T00:00:00.000000Z".into(),
                host: "h".into(),
                roots: vec!["/etc".into()],
                records: 3,
                files: 2,
                bytes: 10,
            },
            pieces: vec![PieceRef {
                piece: "ab".repeat(32),
                size: 99,
            }],
        };
        let back = Root::parse(&root.to_lines()).unwrap();
        assert_eq!(back.header, root.header);
        assert_eq!(back.pieces, root.pieces);
        let v1 = root.to_lines().replace_first();
        assert!(Root::parse(&v1).is_err());
    }

    trait ReplaceFirst {
        fn replace_first(&self) -> Vec<u8>;
    }

    impl ReplaceFirst for Vec<u8> {
        fn replace_first(&self) -> Vec<u8> {
            String::from_utf8_lossy(self)
                .replacen("\"v\":2", "\"v\":1", 1)
                .into_bytes()
        }
    }
}
