//! bk-open: decrypt one object to stdout, or restore a record stream.

mod fetch;
mod guards;
mod links;
mod place;
mod plan;
pub mod restore;
mod safety;
mod sinks;
mod target;
mod window;

use std::io::{self, Write};

use crate::cli::OpenCli;
use crate::error::{Error, Result};
use crate::record;
use crate::repo::blobs::Blobs;

/// Runs bk-open; returns the exit status.
pub fn run(cli: OpenCli) -> Result<i32> {
    let repo = cli.repo.open()?;
    let key = cli.secret.require("bk-open")?;
    crate::repo::idkey::check_secret(&repo, &key)?;
    let trust = crate::repo::trust::Trust::establish(&repo, Some(&key), &cli.trust.options())?;
    let (blobs, _) = Blobs::open(&repo, trust.read_key(&repo)?, &[])?;
    if let Some(id) = &cli.object {
        let mut out = io::stdout().lock();
        let id = crate::repo::id::ObjectId::parse(id)?;
        blobs.read(&id, &key, &mut out, "stdout")?;
        out.flush().map_err(record::stdout_error)?;
        return Ok(0);
    }
    let to = cli
        .to
        .as_ref()
        .ok_or_else(|| Error::usage("give --object ID or --to DIR"))?;
    let layout = match &cli.root {
        Some(root) => crate::stages::open::restore::Layout::Root(root.clone()),
        None => crate::stages::open::restore::Layout::Full,
    };
    let workers = match cli.jobs.jobs.filter(|&n| n > 0) {
        Some(n) => n,
        // Reading from remote storage mostly waits for answers.
        None if repo.store().is_remote() => 4 * cli.jobs.count(),
        None => cli.jobs.count(),
    };
    let outcome = match &cli.snapshot {
        // Straight from the repository: the snapshot is decrypted and its
        // signature checked in full before the first record is restored.
        Some(wanted) => {
            let name = trust.find_snapshot("bk-open", &repo, wanted)?;
            let spool = crate::repo::snapshots::decrypt_snapshot(&blobs, &key, &name, &trust)?;
            let records = record::RecordReader::new(io::BufReader::with_capacity(256 << 10, spool))
                .map(|r| r.map_err(|e| Error::repo(format!("snapshot {name}: {e}"))));
            crate::stages::open::restore::restore(&blobs, &key, to, &layout, workers, records)?
        }
        None => crate::stages::open::restore::restore(
            &blobs,
            &key,
            to,
            &layout,
            workers,
            record::stdin_records(),
        )?,
    };
    Ok(outcome.exit_code())
}
