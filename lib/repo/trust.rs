//! Which snapshots a reader trusts, and why.
//!
//! Your public key is public, so anyone who can write to the repository can
//! encrypt a snapshot to it. bk therefore trusts a snapshot only when it
//! can tell that a backing-up host of this repository made it:
//!
//! - its plaintext ends with a MAC (see [`crate::repo::trailer`]) under a key
//!   derived from the repository's id key, over its name and every record,
//!   and the MAC verifies; or
//! - it carries a good signature by one of the `--signer` keys.
//!
//! The id key comes from this machine's id key file (a backing-up host made
//! or recovered it), or, on a machine that has only your secret key, from
//! `keys/id-key.pgp`, trusted only when your key certified it (see
//! [`crate::repo::certify`]). Snapshot names carry a tag under another derived
//! key, so that `list`, `forget` and "latest" see which names a backing-up
//! host chose without decrypting anything.
//!
//! A snapshot that cannot be trusted is refused (a repository problem,
//! exit 5) unless the user opts out with `--allow-unauthenticated`.

use std::path::PathBuf;

use crate::crypto::signature::{Certifiers, Policy, Status};
use crate::crypto::SecretKeys;
use crate::error::{Error, Result};
use crate::repo::authkey::AuthKeys;
use crate::repo::certify;
use crate::repo::idkey;
use crate::repo::snapshot_name::SnapshotName;
use crate::repo::trailer::Found;
use crate::repo::Repo;

/// What the command line asks of a reader (no clap types below here).
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    /// This machine's id key file for the repository, if not the default.
    pub id_key: Option<PathBuf>,
    /// Read snapshots that cannot be authenticated, with a warning.
    pub allow_unauthenticated: bool,
    /// Public keys whose snapshot signatures are checked.
    pub signers: Vec<PathBuf>,
    /// Refuse snapshots not signed by a signer.
    pub require_signature: bool,
}

/// What a name says about who chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameCheck {
    /// A backing-up host chose it.
    Authentic,
    /// Nobody with the id key chose it; the reason.
    NotAuthentic(&'static str),
    /// There is no key to tell.
    Unchecked,
}

/// How a reader decides which snapshots to trust.
pub struct Trust {
    keys: Option<AuthKeys>,
    /// The id key packs are read with: this machine's, or the
    /// repository's decrypted with the secret key (trusted or not).
    read_key: Option<idkey::IdKey>,
    /// Where the keys come from, or why there are none.
    basis: String,
    policy: Policy,
    allow: bool,
    quiet: bool,
}

impl Trust {
    /// Finds the keys to check snapshots with: this machine's id key file,
    /// else (with `secret`) the repository's id key if your key or a
    /// `--signer` certified it.
    pub fn establish(
        repo: &Repo,
        secret: Option<&SecretKeys>,
        opts: &TrustOptions,
    ) -> Result<Trust> {
        let policy = Policy::load(&opts.signers, opts.require_signature)?;
        let path = opts
            .id_key
            .clone()
            .unwrap_or_else(|| idkey::default_path(repo.id()));
        let mut read_key = None;
        let (keys, basis) = match idkey::load_local(&path)? {
            Some(key) => {
                if key.check_value() != repo.config().id_key_check {
                    return Err(Error::key(format!(
                        "id key file {} does not belong to repository {} (check value differs): give the right --id-key FILE, or move that file away if the repository was made anew",
                        path.display(),
                        repo.id()
                    )));
                }
                let keys = AuthKeys::derive(&key, repo.id());
                read_key = Some(key);
                (Some(keys), format!("the id key in {}", path.display()))
            }
            None => match secret {
                Some(secret) => {
                    let key = certify::held_id_key(repo, secret)?;
                    let checked =
                        certify::check(repo, &key, &Certifiers::new(Some(secret), &policy));
                    let derived = AuthKeys::derive(&key, repo.id());
                    read_key = Some(key);
                    match checked {
                        Ok(by) => (
                            Some(derived),
                            format!("the repository's id key, certified by {by}"),
                        ),
                        Err(why) => (None, why),
                    }
                }
                None => (
                    None,
                    format!(
                        "this machine has no id key for repository {} ({} does not exist) and no --key was given to read the repository's",
                        repo.id(),
                        path.display()
                    ),
                ),
            },
        };
        Ok(Trust {
            keys,
            read_key,
            basis,
            policy,
            allow: opts.allow_unauthenticated,
            quiet: false,
        })
    }

    /// Takes every snapshot as it is, without a word: for prune, which
    /// keeps every object that any snapshot names, trusted or not.
    pub fn everything() -> Trust {
        Trust {
            keys: None,
            read_key: None,
            basis: String::new(),
            policy: Policy::none(),
            allow: true,
            quiet: true,
        }
    }

    /// The same trust, reading packs with `key`.
    pub fn with_read_key(mut self, key: idkey::IdKey) -> Trust {
        self.read_key = Some(key);
        self
    }

    /// The id key packs are read with, whether or not it is trusted to
    /// authenticate snapshots; an error saying how to get one if there is
    /// none.
    pub fn read_key(&self, repo: &Repo) -> Result<&idkey::IdKey> {
        self.read_key.as_ref().ok_or_else(|| {
            Error::key(format!(
                "no id key for repository {}: every pack is encrypted under keys derived from it",
                repo.id()
            ))
            .hint("give --key SECRET (the repository keeps the id key encrypted to it), or --id-key FILE")
        })
    }

    /// The keys snapshots are checked with, if any.
    pub fn keys(&self) -> Option<&AuthKeys> {
        self.keys.as_ref()
    }

    /// Whether snapshots that cannot be authenticated are read anyway.
    pub fn allows_unauthenticated(&self) -> bool {
        self.allow
    }

    /// What a snapshot's signature turned out to be, once its message was
    /// read to the end.
    pub fn signature_status(&self, msg: &pgp::composed::Message<'_>) -> Status {
        self.policy.status(msg)
    }

    /// Where the keys come from, or why there are none.
    pub fn basis(&self) -> &str {
        &self.basis
    }

    /// Whether a backing-up host chose the snapshot name `name`.
    pub fn check_name(&self, name: &str) -> NameCheck {
        let Some(keys) = &self.keys else {
            return NameCheck::Unchecked;
        };
        match SnapshotName::parse(name) {
            None => NameCheck::NotAuthentic("it is not a name bk makes"),
            Some(n) if !n.authentic(keys) => NameCheck::NotAuthentic(
                "its name's tag does not verify, so it was forged or renamed",
            ),
            Some(_) => NameCheck::Authentic,
        }
    }

    /// The error (or, when allowed, the warning) for a snapshot that
    /// cannot be trusted because of `cause`.
    fn refuse(&self, program: &str, name: &str, cause: &str, unchecked: bool) -> Result<()> {
        if self.allow {
            if !self.quiet {
                crate::say!(
                    "{program}: warning: snapshot {name} is not authenticated: {cause}; reading it anyway (--allow-unauthenticated)"
                );
            }
            return Ok(());
        }
        let hint = if unchecked {
            "run `bk-index certify --key SECRET` once where your secret key is (it certifies the repository's id key), or run this on a backing-up host of the repository; --allow-unauthenticated reads it anyway"
        } else {
            "do not trust its records; if you know why it changed, --allow-unauthenticated reads it anyway"
        };
        Err(Error::repo(format!(
            "snapshot {name} is not authenticated: {cause}; {hint}"
        )))
    }

    /// Decides on a snapshot that was decrypted to its end: what its last
    /// line held and what its signature turned out to be.
    pub fn judge(
        &self,
        program: &str,
        name: &str,
        found: &Found,
        signature: &Status,
    ) -> Result<()> {
        self.policy.enforce(program, name, signature)?;
        if self.quiet {
            return Ok(());
        }
        if *found == Found::Valid || matches!(signature, Status::Good(_)) {
            return Ok(());
        }
        if self.keys.is_none() {
            let cause = format!("it cannot be checked, since {}", self.basis);
            return self.refuse(program, name, &cause, true);
        }
        match found {
            Found::Invalid => self.refuse(
                program,
                name,
                "its MAC does not verify, so it was altered, renamed or forged",
                false,
            ),
            _ => self.refuse(
                program,
                name,
                "it carries no MAC of this repository's backing-up hosts, so someone holding only your public key made it",
                false,
            ),
        }
    }

    /// Resolves "latest" (the newest snapshot whose name a backing-up host
    /// chose; others are skipped with a warning), a full name, or a unique
    /// prefix of one.
    pub fn find_snapshot(&self, program: &str, repo: &Repo, wanted: &str) -> Result<String> {
        if wanted != "latest" {
            return repo.find_snapshot(wanted);
        }
        let names = crate::repo::snapshot_name::oldest_first(repo.snapshots()?);
        let mut skipped = 0;
        for name in names.iter().rev() {
            match self.check_name(name) {
                NameCheck::NotAuthentic(why) if !self.allow => {
                    crate::say!(
                        "{program}: warning: not taking snapshot {name} for \"latest\": {why}"
                    );
                    skipped += 1;
                }
                _ => return Ok(name.clone()),
            }
        }
        Err(Error::repo(if skipped == 0 {
            format!("{}: no snapshots yet", repo.location())
        } else {
            format!(
                "{}: no authenticated snapshot ({skipped} snapshots skipped, see above)",
                repo.location()
            )
        }))
    }
}
