//! Reading and writing snapshots: a root (see [`crate::repo::catalogue`])
//! decrypted whole and judged (MAC line, signature) before anything in it
//! is used, then its pieces, each checked against its id.

use std::fs;
use std::io::{self, Seek, Write};

use crate::crypto::signature::SnapshotSigner;
use crate::crypto::{Decryptor, Recipients, SecretKeys};
use crate::error::{Error, Result};
use crate::record;
use crate::repo::authkey::AuthKeys;
use crate::repo::blobs::Blobs;
use crate::repo::catalogue::Root;
use crate::repo::id::ObjectId;
use crate::repo::trailer::{self, Splitter};
use crate::repo::trust::Trust;
use crate::repo::Repo;

/// The most of a root that is read (a root lists about 100 bytes per
/// piece of about 256 KiB: 40 MiB is a record stream of 100 GiB).
pub const ROOT_LIMIT: u64 = 40 << 20;

/// Decrypts the root of snapshot `name` and judges it (see
/// [`crate::repo::trust`]) before anything in it is used: its MAC line and
/// its signature, both at the message's end, after its integrity check.
pub fn read_root(repo: &Repo, dec: &Decryptor, name: &str, trust: &Trust) -> Result<Root> {
    let what = format!("snapshot {name}");
    let input = repo.open_key(&repo.snapshot_key(name), &what)?;
    let mut msg = dec.decrypt(input, &what)?;
    let mut split = Splitter::new(
        Bounded {
            // Room for the largest root at once: pages are only taken as
            // they are written, and the buffer never grows by copying
            // itself (which held the old and the new buffer at once: 80
            // MiB for a forged root of 40 MiB).
            out: Vec::with_capacity(ROOT_LIMIT as usize),
            too_long: false,
        },
        trust.keys().map(|k| k.snapshot_mac(name)),
    );
    let copied = crate::crypto::copy_plaintext(
        &mut msg,
        &what,
        &mut split,
        std::path::Path::new("(memory)"),
    );
    if split.get_ref().too_long {
        return Err(Error::repo(format!(
            "{what}: larger than {ROOT_LIMIT} bytes: not a snapshot root; refusing it"
        )));
    }
    copied?;
    let found = split
        .finish()
        .map_err(|e| Error::repo(format!("{what}: {e}")))?;
    let status = trust.signature_status(&msg);
    trust.judge(&crate::say::program_name(), name, &found, &status)?;
    let text = split.into_inner().out;
    Root::parse(&text).map_err(|why| Error::repo(format!("{what}: {why}")))
}

/// A memory buffer that refuses more than [`ROOT_LIMIT`] bytes.
struct Bounded {
    out: Vec<u8>,
    too_long: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() as u64 + buf.len() as u64 > ROOT_LIMIT {
            self.too_long = true;
            return Err(io::Error::other("snapshot root too long"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the record stream of `root` (its pieces, in order, each
/// checked against its id) to `out`.
pub fn write_records(
    blobs: &Blobs,
    secret: &SecretKeys,
    name: &str,
    root: &Root,
    out: &mut dyn Write,
    out_name: &str,
) -> Result<()> {
    for p in &root.pieces {
        let id = ObjectId::parse(&p.piece).map_err(|e| e.context(format!("snapshot {name}")))?;
        let loc = blobs.require(&id, Some(&format!("snapshot {name}")))?;
        let n = blobs.read_at(&id, &loc, secret, out, out_name)?;
        if n != p.size {
            return Err(Error::repo(format!(
                "snapshot {name}: piece {id} holds {n} bytes, its root says {}",
                p.size
            )));
        }
    }
    Ok(())
}

/// Decrypts a whole snapshot (root, then every piece) into an anonymous
/// temporary file of records, judged before anything is used. Lines are
/// bounded by [`record::MAX_LINE`].
pub fn decrypt_snapshot(
    blobs: &Blobs,
    key: &SecretKeys,
    name: &str,
    trust: &Trust,
) -> Result<fs::File> {
    decrypt_snapshot_and_root(blobs, key, name, trust).map(|(_, spool)| spool)
}

/// [`decrypt_snapshot`], with the root it read (for its pieces, which
/// are blobs the snapshot references too).
pub fn decrypt_snapshot_and_root(
    blobs: &Blobs,
    key: &SecretKeys,
    name: &str,
    trust: &Trust,
) -> Result<(Root, fs::File)> {
    let root = read_root(blobs.repo(), &Decryptor::Secret(key), name, trust)?;
    let tmp = std::env::temp_dir();
    let spool = tempfile::tempfile().map_err(|e| Error::io(&tmp, e))?;
    let mut bound = LineBound::new(spool);
    let written = write_records(blobs, key, name, &root, &mut bound, "(temporary file)");
    if bound.too_long {
        return Err(Error::repo(format!(
            "snapshot {name}: a line longer than {} bytes: not a record stream; refusing it",
            record::MAX_LINE
        )));
    }
    written?;
    let mut spool = bound.out;
    spool.rewind().map_err(|e| Error::io(&tmp, e))?;
    Ok((root, spool))
}

/// Encrypts and stores the root of snapshot `name`: to the recipients and
/// to the id key's root passphrase, signed with `signer` if given, its
/// MAC line last.
pub fn write_root(
    repo: &Repo,
    keys: &AuthKeys,
    name: &str,
    root: &Root,
    recipients: &Recipients,
    signer: Option<&SnapshotSigner>,
) -> Result<()> {
    let mac_len = trailer::Of::Snapshot.line_len();
    let mut text = root.to_lines(mac_len);
    let mut mac = keys.snapshot_mac(name);
    mac.update(&text);
    text.extend_from_slice(&trailer::line(trailer::Of::Snapshot, &mac.finish()));
    let pass = keys.root_passphrase();
    repo.write_atomic(&repo.snapshot_key(name), |w: &mut dyn Write| {
        recipients.encrypt_root(
            &text[..],
            w,
            signer.map(SnapshotSigner::as_signing_key),
            pass.as_str(),
        )
    })
    .map_err(|e| e.context(format!("writing snapshot {name}")))
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
