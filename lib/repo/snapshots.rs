//! Reading snapshots: decrypted whole into a temporary file and judged
//! (MAC line, signature) before a single record is used.

use std::fs;
use std::io::{self, Seek, Write};

use crate::crypto::SecretKeys;
use crate::error::{Error, Result};
use crate::record;
use crate::repo::trailer::Splitter;
use crate::repo::trust::Trust;
use crate::repo::Repo;

/// Decrypts a snapshot fully into an anonymous temporary file and judges
/// it (see [`crate::repo::trust`]) before anything is used: its MAC line, which
/// the file does not get, and its signature, both at the message's end,
/// after its integrity check. Lines are bounded by [`record::MAX_LINE`].
pub fn decrypt_snapshot(
    repo: &Repo,
    key: &SecretKeys,
    name: &str,
    trust: &Trust,
) -> Result<fs::File> {
    let what = format!("snapshot {name}");
    let tmp = std::env::temp_dir();
    let input = repo.open_key(&repo.snapshot_key(name), &what)?;
    let mut msg = key.decrypt(input, &what)?;
    let spool = tempfile::tempfile().map_err(|e| Error::io(&tmp, e))?;
    let mut split = Splitter::new(
        LineBound::new(spool),
        trust.keys().map(|k| k.snapshot_mac(name)),
    );
    let copied = crate::crypto::copy_plaintext(&mut msg, &what, &mut split, &tmp);
    if split.get_ref().too_long {
        return Err(LineBound::too_long(&what));
    }
    copied?;
    let found = split.finish();
    if split.get_ref().too_long {
        return Err(LineBound::too_long(&what));
    }
    let found = found.map_err(|e| Error::io(&tmp, e))?;
    let status = trust.signature_status(&msg);
    trust.judge(&crate::say::program_name(), name, &found, &status)?;
    let mut spool = split.into_inner().out;
    spool.rewind().map_err(|e| Error::io(&tmp, e))?;
    Ok(spool)
}

/// A writer that refuses a line longer than [`record::MAX_LINE`], so a
/// forged snapshot of one endless line cannot take the memory of whoever
/// reads it line by line.
struct LineBound {
    out: fs::File,
    /// Bytes of the line not yet ended.
    line: usize,
    too_long: bool,
}

impl LineBound {
    fn new(out: fs::File) -> Self {
        LineBound {
            out,
            line: 0,
            too_long: false,
        }
    }

    /// The error for a snapshot whose line was too long.
    fn too_long(what: &str) -> Error {
        Error::repo(format!(
            "{what}: a line longer than {} bytes: not a record stream; refusing it",
            record::MAX_LINE
        ))
    }
}

impl Write for LineBound {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut pieces = buf.split(|&b| b == b'\n');
        let mut current = self.line + pieces.next().map_or(0, <[u8]>::len);
        for piece in pieces {
            self.too_long |= current > record::MAX_LINE;
            current = piece.len();
        }
        self.too_long |= current > record::MAX_LINE;
        if self.too_long {
            return Err(io::Error::other("snapshot line too long"));
        }
        self.out.write_all(buf)?;
        self.line = current;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
