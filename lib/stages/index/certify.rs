//! `bk-index certify`: certify the repository's id key with your own key,
//! once (see [`crate::repo::certify`]).

use std::io::Write;

use crate::cli::IndexCertifyArgs;
use crate::error::{Error, Result};
use crate::repo::certify::{certify, held_id_key};
use crate::repo::idkey;

/// `bk-index certify`: checks the repository's id key against this
/// machine's copy where there is one, then certifies it.
pub fn run(args: IndexCertifyArgs) -> Result<i32> {
    const PROGRAM: &str = "bk-index certify";
    let repo = args.repo.open()?;
    let secret = args.secret.require(PROGRAM)?;
    let id_key = held_id_key(&repo, &secret)?;
    let local_path = args
        .id_key
        .clone()
        .unwrap_or_else(|| idkey::default_path(repo.id()));
    match idkey::load_local(&local_path)? {
        Some(local) if local.check_value() != id_key.check_value() => {
            return Err(Error::repo(format!(
                "the id key in {} differs from this machine's id key file {}: the repository's keys were replaced, or the file belongs to another repository; not certifying",
                repo.store().describe("keys/id-key.pgp"),
                local_path.display()
            )))
        }
        Some(_) => {}
        None => crate::say!(
            "{PROGRAM}: no id key file of this repository on this machine to compare with ({}): certifying the id key the repository holds now, check value {}; it should be the one `bk-seal --init` printed",
            local_path.display(),
            id_key.check_value()
        ),
    }
    let key = certify(&repo, &secret, &id_key)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{key}")
        .and_then(|_| out.flush())
        .map_err(crate::record::stdout_error)?;
    crate::say!(
        "{PROGRAM}: certified the id key of repository {} (check value {}) with key {}: {}; a machine with only your secret key can now tell your snapshots from forged ones",
        repo.location(),
        id_key.check_value(),
        secret.describe(),
        repo.store().describe(&key)
    );
    Ok(0)
}
