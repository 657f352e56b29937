//! Command-line definitions of the six programs, in one place so that the
//! man pages and shell completions are generated from exactly what the
//! programs parse (`bk-gen-docs`).
//!
//! Every option can also come from the environment (`BK_…`) or the config
//! file (see [`crate::cli::config`]); the command line wins.

pub mod config;
pub mod docs;
pub mod program;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use std::ffi::OsStr;

use crate::crypto::{PassphraseSource, SecretKeys};
use crate::error::{Error, Result};
use crate::repo::{Repo, RepoHandle};
use crate::storage::location::Location;
use crate::storage::s3::S3Options;

/// Text shown under every program's `--help`: exit statuses.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   success
  1   faults found (bk-verify problems, entries bk-open could not restore)
  2   bad command line or configuration
  3   malformed or incomplete input (a stage before stopped early: no end record)
  4   key problem (unreadable key, wrong secret key, wrong passphrase)
  5   repository problem (missing/unknown repository, missing or corrupt object or snapshot,
      a snapshot that cannot be authenticated)
  6   local I/O error (disk full, permission denied on output)
  11  repository locked by another run (try again later, or give --wait)
  24  partial: some files vanished, changed or were unreadable; the rest was stored";

/// `--config FILE`: where options not given on the command line or in the
/// environment are read from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// TOML config file [default: $XDG_CONFIG_HOME/bk/config.toml]
    #[arg(long, env = "BK_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

/// `--repo DIR|s3://BUCKET/PREFIX`: the repository, and how to reach S3.
#[derive(Debug, Clone, Args)]
pub struct RepoArg {
    /// Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible
    /// object storage (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY or AWS_PROFILE)
    #[arg(long, env = "BK_REPO", value_name = "DIR|s3://BUCKET/PREFIX", value_parser = LocationParser)]
    pub repo: Location,
    #[command(flatten)]
    pub s3: S3Args,
}

impl RepoArg {
    /// The storage these arguments name (no request is made yet).
    pub fn handle(&self) -> Result<RepoHandle> {
        RepoHandle::new(&self.repo, &self.s3.options())
    }

    /// Opens the existing repository these arguments name.
    pub fn open(&self) -> Result<Repo> {
        Repo::open_handle(self.handle()?)
    }
}

/// clap value parser for [`Location`] (directories need not be UTF-8).
#[derive(Debug, Clone, Copy)]
pub struct LocationParser;

impl clap::builder::TypedValueParser for LocationParser {
    type Value = Location;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Location, clap::Error> {
        Location::parse(value).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --repo: {e}\n"),
            )
        })
    }
}

/// How to reach an S3-compatible service. Credentials come from the
/// standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or profile files
/// (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`).
#[derive(Debug, Clone, Default, Args)]
pub struct S3Args {
    /// S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph,
    /// Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]
    #[arg(long, env = "BK_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]
    #[arg(long, env = "BK_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for
    /// MinIO and most self-hosted servers; automatic for an endpoint that
    /// is an IP address or localhost)
    #[arg(long, env = "BK_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub s3_path_style: bool,
}

impl S3Args {
    /// The storage layer's options.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
        }
    }
}

/// Public keys to encrypt to.
#[derive(Debug, Clone, Args)]
pub struct RecipientArgs {
    /// Recipient public key file (armored or binary OpenPGP); repeat for
    /// several recipients (BK_RECIPIENT takes a comma-separated list)
    #[arg(
        long = "recipient",
        short = 'r',
        env = "BK_RECIPIENT",
        value_name = "KEY",
        value_delimiter = ',',
        required = true
    )]
    pub recipients: Vec<PathBuf>,
}

/// A secret key and where its passphrase comes from.
#[derive(Debug, Clone, Args)]
pub struct SecretKeyArgs {
    /// Secret key file (armored or binary OpenPGP)
    #[arg(long, short = 'k', env = "BK_KEY", value_name = "SECRET")]
    pub key: Option<PathBuf>,
    /// File whose first line is the key's passphrase (else $BK_PASSPHRASE,
    /// else the terminal is asked)
    #[arg(long, env = "BK_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl SecretKeyArgs {
    /// Loads the secret key named by the arguments, if any.
    pub fn load(&self) -> Result<Option<SecretKeys>> {
        self.key
            .as_ref()
            .map(|k| {
                SecretKeys::load(
                    k,
                    &PassphraseSource {
                        file: self.passphrase_file.clone(),
                    },
                )
            })
            .transpose()
    }

    /// Loads the secret key, which this command cannot do without.
    pub fn require(&self, why: &str) -> Result<SecretKeys> {
        self.load()?.ok_or_else(|| {
            Error::usage(format!(
                "{why} needs a secret key: give --key SECRET (or BK_KEY)"
            ))
        })
    }
}

/// `--chunk-threshold`: which files are stored in content-defined chunks.
/// bk-hash and bk-seal both take it (and `BK_CHUNK_THRESHOLD`): bk-hash
/// hashes the chunks of such files while it reads them, so that bk-seal
/// reads only the chunks the repository lacks.
#[derive(Debug, Clone, Args)]
pub struct ChunkArg {
    /// Files larger than this are split into content-defined chunks, each
    /// its own object (suffixes K, M, G: powers of 1024)
    #[arg(long, env = "BK_CHUNK_THRESHOLD", value_name = "SIZE", default_value = "8M", value_parser = parse_size)]
    pub chunk_threshold: u64,
}

/// `-j N`: worker threads.
#[derive(Debug, Clone, Args)]
pub struct JobsArg {
    /// Worker threads [default: number of cores]
    #[arg(long, short = 'j', env = "BK_JOBS", value_name = "N")]
    pub jobs: Option<usize>,
}

impl JobsArg {
    /// The number of workers to run.
    pub fn count(&self) -> usize {
        self.jobs
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

/// `--progress`: show progress on stderr.
#[derive(Debug, Clone, Args)]
pub struct ProgressArg {
    /// Show progress on stderr (default: only when stderr is a terminal)
    #[arg(long, env = "BK_PROGRESS", value_parser = clap::builder::BoolishValueParser::new())]
    pub progress: bool,
    /// Never show progress, even on a terminal
    #[arg(long, conflicts_with = "progress")]
    pub no_progress: bool,
}

impl ProgressArg {
    /// When to show progress.
    pub fn show(&self) -> crate::stream::progress::Show {
        use crate::stream::progress::Show;
        match (self.progress, self.no_progress) {
            (_, true) => Show::Never,
            (true, false) => Show::Always,
            (false, false) => Show::Auto,
        }
    }
}

/// Public keys whose snapshot signatures are trusted, and whether a
/// signature is required.
#[derive(Debug, Clone, Args)]
pub struct SignerArgs {
    /// Check snapshot signatures against this public key; repeatable
    /// (BK_SIGNER takes a comma-separated list). A signature that does not
    /// verify is always an error; an unsigned snapshot, or one signed by
    /// another key, is a warning
    #[arg(long, env = "BK_SIGNER", value_name = "PUBLIC", value_delimiter = ',')]
    pub signer: Vec<PathBuf>,
    /// Refuse (exit status 5) any snapshot not signed by one of the --signer keys
    #[arg(long, env = "BK_REQUIRE_SIGNATURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub require_signature: bool,
}

/// How a reader authenticates snapshots: this machine's id key, the
/// signers, and the explicit opt-out.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// This machine's id key file of the repository, which authenticates
    /// snapshots [default: $XDG_DATA_HOME/bk/<repo id>.idkey]; without it,
    /// the repository's id key is used if your key certified it (`bk-index
    /// certify`)
    #[arg(long, env = "BK_ID_KEY", value_name = "FILE")]
    pub id_key: Option<PathBuf>,
    /// Read snapshots that cannot be authenticated (no valid MAC of this
    /// repository's backing-up hosts and no good --signer signature) with a
    /// warning instead of refusing them: anyone holding your public key
    /// could have made them
    #[arg(long, env = "BK_ALLOW_UNAUTHENTICATED", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_unauthenticated: bool,
    #[command(flatten)]
    pub signers: SignerArgs,
}

impl TrustArgs {
    /// The options the trust layer takes.
    pub fn options(&self) -> crate::repo::trust::TrustOptions {
        crate::repo::trust::TrustOptions {
            id_key: self.id_key.clone(),
            allow_unauthenticated: self.allow_unauthenticated,
            signers: self.signers.signer.clone(),
            require_signature: self.signers.require_signature,
        }
    }
}

/// `--pause-file PATH`: pause while a file exists.
#[derive(Debug, Clone, Args)]
pub struct PauseArg {
    /// While this file exists, finish the files under way and take no new
    /// ones (checked about once a second); resume when it is removed
    #[arg(long, env = "BK_PAUSE_FILE", value_name = "PATH")]
    pub pause_file: Option<PathBuf>,
}

/// `--wait DURATION`: how long to wait for a repository lock.
#[derive(Debug, Clone, Args)]
pub struct WaitArg {
    /// If the repository is locked by a conflicting run, keep trying this
    /// long before giving up with exit status 11 (e.g. 30s, 10m, 2h)
    #[arg(long, env = "BK_WAIT", value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
}

/// Parses an RFC 3339 time such as `2026-01-31T02:00:00Z`.
pub fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(text.trim())
        .map_err(|e| format!("{text:?} is not a time (e.g. 2026-01-31T02:00:00Z): {e}"))
}

/// Parses a duration such as `30s`, `10m`, `24h`, `7days` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration (e.g. 30s, 10m, 24h, 7d): {e}"))
}

/// bk-scan: walk trees and emit one record per entry.
#[derive(Debug, Parser)]
#[command(
    name = "bk-scan",
    version,
    about = "Walk directory trees and print one metadata record per entry",
    long_about = "Walk directory trees and print one schema-1 record (NDJSON) per entry: \
files, directories, symlinks and special files with mode, owner, times, inode, \
device, link count and extended attributes. Symlinks are never followed. \
.bkignore files (gitignore syntax) and --exclude globs leave entries out. The stream \
starts with {\"bk\":\"begin\",\"v\":1} and ends with {\"bk\":\"end\",\"v\":1} only when the \
walk finished (exit status 0 or 24).",
    after_help = concat!("Examples:\n  bk-scan ~/docs | bk-hash | bk-seal | bk-index write\n  bk-scan -x --exclude '*.tmp' / > root.ndjson\n\n", "Exit status:\n  0   success\n  2   bad command line or configuration\n  6   local I/O error writing the output\n  24  partial: some entries could not be read (each named on stderr)")
)]
pub struct ScanCli {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Trees (or single files) to scan
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Leave out entries matching this glob (gitignore syntax); repeatable
    /// (BK_EXCLUDE takes one glob per line)
    #[arg(
        long,
        short = 'e',
        env = "BK_EXCLUDE",
        value_name = "GLOB",
        value_delimiter = '\n'
    )]
    pub exclude: Vec<String>,
    /// Do not cross file-system boundaries
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Also honour .gitignore files (and .git/info/exclude)
    #[arg(long)]
    pub gitignore: bool,
}

/// bk-hash: add the SHA-256 of every regular file.
#[derive(Debug, Parser)]
#[command(
    name = "bk-hash",
    version,
    about = "Add the SHA-256 of each regular file's content to its record",
    long_about = "Read records on stdin and add \"sha256\" to every file record, hashing \
files in parallel. Records come out in the order they came in (a record may \
be overtaken only when holding it back would take more than 16 MiB). A file that vanished, \
changed size or could not be read is reported on stderr and left out. An input that \
starts with a begin record ({\"bk\":\"begin\",\"v\":1}) gets one in the output too, and an \
end record ({\"bk\":\"end\",\"v\":1}) only if the input had its end record and the run \
finished (exit status 0 or 24).",
    after_help = concat!("Examples:\n  bk-scan ~/docs | bk-hash -j 4 | bk-seal\n\n", "Exit status:\n  0   success\n  2   bad command line or configuration\n  3   malformed or incomplete input (the stage before stopped early: no end record written)\n  6   local I/O error writing the output\n  24  partial: some files vanished, changed or were unreadable")
)]
pub struct HashCli {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub jobs: JobsArg,
    /// Take sha256 and objects from an earlier snapshot for files whose size,
    /// mtime, ctime, inode and device are unchanged, without reading them:
    /// a plaintext record file (e.g. saved `bk-index show` output), or
    /// "auto" for the local copy of the latest snapshot of each root in --repo
    #[arg(long, env = "BK_REUSE", value_name = "INDEX|auto")]
    pub reuse: Option<String>,
    #[command(flatten)]
    pub chunk: ChunkArg,
    /// Repository whose cached latest snapshot `--reuse auto` uses
    #[arg(long, env = "BK_REPO", value_name = "DIR|s3://BUCKET/PREFIX", value_parser = LocationParser)]
    pub repo: Option<Location>,
    /// Local file holding the repository's id key, which authenticates the
    /// cache `--reuse auto` reads [default: $XDG_DATA_HOME/bk/<repo id>.idkey]
    #[arg(long, env = "BK_ID_KEY", value_name = "FILE")]
    pub id_key: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub progress: ProgressArg,
    #[command(flatten)]
    pub pause: PauseArg,
}

/// bk-seal: encrypt new contents into the repository.
#[derive(Debug, Parser)]
#[command(
    name = "bk-seal",
    version,
    about = "Encrypt each new content into the repository and add its object ids",
    long_about = "Read hashed records on stdin. For each file whose content is not yet in \
the repository, encrypt it (OpenPGP, AES-256, ZLIB-compressed when it looks compressible) to \
every recipient as an object, a blob in a pack of about --pack-size bytes; add \"objects\" to \
the record and print it. Only public keys are needed. The object id is HMAC-SHA256(id key, \
sha256), so the repository cannot be probed for known files. An input that starts with a \
begin record ({\"bk\":\"begin\",\"v\":1}) gets one in the output too, and an end record \
({\"bk\":\"end\",\"v\":1}), after the last pack is durable, only if the input had its end \
record and the run finished (exit status 0 or 24).",
    after_help = concat!("Examples:\n  bk-scan ~/docs | bk-hash | bk-seal --init --repo /mnt/backup -r me.asc | bk-index write --repo /mnt/backup -r me.asc\n  BK_REPO=/mnt/backup BK_RECIPIENT=me.asc bk-seal < hashed.ndjson > sealed.ndjson\n\n", "Exit status:\n  0   success\n  2   bad command line or configuration\n  3   malformed or incomplete input (the stage before stopped early: no end record written)\n  4   key problem\n  5   repository problem\n  6   local I/O error (disk full)\n  11  repository locked by another run (bk-index forget/prune)\n  24  partial: some files changed or vanished before they were sealed")
)]
pub struct SealCli {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Create the repository if it does not exist yet
    #[arg(long)]
    pub init: bool,
    /// Local file holding the repository's id key [default: $XDG_DATA_HOME/bk/<repo id>.idkey]
    #[arg(long, env = "BK_ID_KEY", value_name = "FILE")]
    pub id_key: Option<PathBuf>,
    /// Secret key used only to recover a lost local id key from the repository
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    #[command(flatten)]
    pub jobs: JobsArg,
    #[command(flatten)]
    pub chunk: ChunkArg,
    /// Close a pack once it holds this much (suffixes K, M, G): fewer,
    /// larger packs mean fewer requests to remote storage
    #[arg(long, env = "BK_PACK_SIZE", value_name = "SIZE", default_value = "16M", value_parser = parse_pack_size)]
    pub pack_size: u64,
    #[command(flatten)]
    pub progress: ProgressArg,
    #[command(flatten)]
    pub pause: PauseArg,
    #[command(flatten)]
    pub wait: WaitArg,
}

/// A pack size: from 64 KiB to 1 GiB.
fn parse_pack_size(text: &str) -> Result<u64, String> {
    let n = parse_size(text)?;
    if (64 << 10..=1 << 30).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{text:?}: a pack size must be between 64K and 1G"))
    }
}

/// Parses a byte size such as `8M`, `512K`, `1G` or `4096`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{text:?} is not a size (e.g. 8M, 512K, 4096)"))
}

/// bk-index: the catalogue of snapshots.
#[derive(Debug, Parser)]
#[command(
    name = "bk-index",
    version,
    about = "Write, list and show encrypted snapshots (the catalogue)",
    after_help = concat!("Examples:\n  bk-scan ~/docs | bk-hash | bk-seal | bk-index write\n  bk-index list --repo /mnt/backup\n  bk-index show latest --key secret.asc --csv > files.csv\n  bk-index show latest | jq -c 'select(.path|startswith(\"docs/\"))' | bk-open --to /restore\n  bk-index forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run\n  bk-index prune --key secret.asc --wait 1h\n  bk-index unlock\n\n", "Exit status:\n  0   success\n  2   bad command line or configuration\n  3   malformed or incomplete input (write: a stage before stopped early, no snapshot written)\n  4   key problem\n  5   repository problem (missing object, unknown snapshot, a snapshot that cannot be authenticated)\n  6   local I/O error\n  11  repository locked by another run (try again later, or give --wait)")
)]
pub struct IndexCli {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub command: IndexCommand,
}

/// What bk-index does.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Collect sealed records from stdin into one encrypted snapshot; print its name
    ///
    /// A stream that starts with a begin record ({"bk":"begin","v":1}, as every bk stage
    /// writes) is committed only if it ends with its end record: a stream cut short because a
    /// stage before was killed or failed is refused (exit 3) and nothing is written, neither
    /// snapshot nor reuse cache. A stream without a begin record (typed by hand, filtered by
    /// jq) is written, with a note that its completeness could not be checked.
    Write(IndexWriteArgs),
    /// List snapshots: time, host, files and bytes
    List(IndexListArgs),
    /// Decrypt a snapshot back to records (NDJSON) or CSV
    Show(IndexShowArgs),
    /// Remove snapshots by a retention policy (keep-last, daily, weekly…)
    #[command(after_help = FORGET_HELP)]
    Forget(IndexForgetArgs),
    /// Delete or repack packs whose objects no snapshot references; report the bytes freed
    #[command(after_help = PRUNE_HELP)]
    Prune(IndexPruneArgs),
    /// Check every blob of the given packs; drop the damaged ones so the next backup stores them again
    #[command(after_help = REPAIR_HELP)]
    Repair(IndexRepairArgs),
    /// Remove stale locks (of dead or silent processes), or every lock with --all
    #[command(after_help = UNLOCK_HELP)]
    Unlock(IndexUnlockArgs),
    /// Sign the repository's id key with your key, once, so that a machine
    /// with only your secret key can authenticate snapshots
    #[command(after_help = CERTIFY_HELP)]
    Certify(IndexCertifyArgs),
}

const CERTIFY_HELP: &str = "\
Snapshots carry a MAC under a key derived from the repository's id key, which every \
backing-up host holds; the repository holds it only encrypted to your public key, so \
anyone with that public key could replace it. `certify` decrypts it with your secret key, \
compares it with this machine's id key file when there is one, and stores a detached \
signature by your key over the repository id and the id key's check value \
(keys/certified-by-<FINGERPRINT>.sig). Run it once where your secret key is; after that, \
a machine with nothing but your secret key can tell your snapshots from forged ones. \
`bk-seal --init --key SECRET` certifies the new repository itself.

Examples:
  bk-index certify --repo /mnt/backup --key ~/me-secret.asc";

/// `bk-index certify`.
#[derive(Debug, Args)]
pub struct IndexCertifyArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    /// This machine's id key file of the repository, compared with the
    /// repository's before certifying [default: $XDG_DATA_HOME/bk/<repo id>.idkey]
    #[arg(long, env = "BK_ID_KEY", value_name = "FILE")]
    pub id_key: Option<PathBuf>,
}

const FORGET_HELP: &str = "\
Snapshots are grouped by host and set of roots (by host only without --key), and the \
policy applies to each group: a snapshot kept by any rule is kept. Times are the UTC \
times in the snapshot names. keep-daily N keeps the newest snapshot of each of the last \
N days that have one (likewise hourly, weekly = ISO weeks, monthly, yearly); keep-within \
D keeps every snapshot less than D older than the newest of its group. Objects are not \
deleted: run `bk-index prune` afterwards.

Examples:
  bk-index forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --key secret.asc --dry-run
  bk-index forget --keep-last 3 --keep-within 30d --host laptop --key secret.asc";

const PRUNE_HELP: &str = "\
Takes the exclusive lock (so no backup runs meanwhile), decrypts every snapshot to \
collect the objects they reference (any snapshot that cannot be read stops prune before \
anything is deleted), then plans per pack: a pack with no referenced object is deleted, a \
pack with more than --max-unused of its bytes unreferenced is repacked (its referenced \
objects are copied, still encrypted, into new packs, made durable before the old pack is \
deleted), and packs or leftover temporary files modified less than --grace ago are left \
alone. bk-seal refreshes the time of packs it reuses objects from (on a directory), so \
records sealed but not yet written into a snapshot (`bk-seal > file`, `bk-index write < \
file` later) are safe if the snapshot is written within half the default grace period \
(12 hours).

Examples:
  bk-index prune --key secret.asc --dry-run --verbose-plan
  bk-index prune --key secret.asc --wait 2h --max-unused 5 --json";

const REPAIR_HELP: &str = "\
For packs whose blobs `bk-verify --read-data` reports damaged (\"decrypt\" problems, \
each of which names its pack). While a damaged copy of a blob is in the \
repository, backups deduplicate against it and never store that content again. Repair \
takes the exclusive lock, reads each given pack in full and decrypts every blob in it, \
checking each against its id, and reads its header again. A pack with damaged blobs, or \
whose header no longer verifies, has its sound blobs copied, still encrypted, into new \
packs (made durable first) and is then deleted; a sound pack is left alone, and a pack \
no longer in the repository is reported as gone. Nothing sound is dropped for what is \
not damage: a read that fails (storage or network), a blob encrypted only to keys other \
than --key, or a blob that checks otherwise when read a second time stops repair before \
anything is deleted. Afterwards the dropped blobs are missing: back up the same files again and they \
are stored again under the same ids, which makes every snapshot that names them whole. \
Prints one JSON line per pack on stdout: its blobs, the damaged ones and what was done.

Examples:
  bk-index show latest --key secret.asc | bk-verify --read-data --key secret.asc \\
    | jq -r '.pack // empty' | sort -u > damaged-packs
  xargs bk-index repair --key secret.asc --dry-run < damaged-packs
  xargs bk-index repair --key secret.asc < damaged-packs";

const UNLOCK_HELP: &str = "\
A lock is stale when it has not been refreshed for 30 minutes, or when it was taken on \
this host in this boot and this PID namespace and its process is no longer running (or \
its pid now belongs to a process started later). A lock of another PID namespace (a \
container or `unshare -p` sharing the host name), of another machine with the same host \
name, or of an older bk that recorded neither goes stale by its refresh time alone. \
Lock files are encrypted under a key derived from the repository's id key: with that \
key (this machine's id key file), unlock shows who holds each lock and judges it as \
above; a lock it cannot read (no id key here, or another key's) is stale when its file \
has not been modified for 30 minutes. Without --all only stale locks are removed; live \
ones are listed on stderr and kept.

Examples:
  bk-index unlock --repo /mnt/backup
  bk-index unlock --repo /mnt/backup --all   # only when you know no bk program runs";

/// `bk-index write`.
#[derive(Debug, Args)]
pub struct IndexWriteArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Host name recorded in the snapshot name [default: this machine's]
    #[arg(long, env = "BK_HOST", value_name = "NAME")]
    pub host: Option<String>,
    /// Time recorded in the snapshot name, RFC 3339 (e.g. 2026-01-31T02:00:00Z),
    /// for importing older backups [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub time: Option<std::time::SystemTime>,
    /// Local file holding the repository's id key, which authenticates the
    /// snapshot and the reuse cache [default: $XDG_DATA_HOME/bk/<repo id>.idkey]
    #[arg(long, env = "BK_ID_KEY", value_name = "FILE")]
    pub id_key: Option<PathBuf>,
    /// Sign the snapshot with this secret key (its signing subkey, else its
    /// primary key), inside the encryption
    #[arg(long, env = "BK_SIGN_KEY", value_name = "SECRET")]
    pub sign_key: Option<PathBuf>,
    /// File whose first line is the passphrase of --sign-key (else
    /// $BK_PASSPHRASE, else the terminal is asked)
    #[arg(long, env = "BK_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub wait: WaitArg,
}

/// `bk-index forget`.
#[derive(Debug, Args)]
pub struct IndexForgetArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Secret key: read each snapshot's roots, to group by host and roots
    /// (without it, snapshots are grouped by host only)
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot less than DURATION older than the newest of its
    /// group (e.g. 30d, 1y)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_within: Option<Duration>,
    /// Only consider snapshots of this host (others are left alone)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print what would be kept and removed, and remove nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print one JSON object per snapshot instead of text lines
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub wait: WaitArg,
}

/// `bk-index prune`.
#[derive(Debug, Args)]
pub struct IndexPruneArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Secret key: needed to read which objects the snapshots reference
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    /// Never delete or repack a pack, or delete a temporary file, modified less
    /// than this long ago (protects records sealed but not yet in a snapshot)
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Repack a pack (copy its used blobs into a new pack, then delete it)
    /// when more than this percentage of it is unused
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0, value_parser = parse_percent)]
    pub max_unused: f64,
    /// Report what would be deleted, and delete nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Also print a JSON summary on stdout
    #[arg(long)]
    pub json: bool,
    /// Print the plan on stdout first: one JSON line per pack with how
    /// much of it is used and what prune does with it
    #[arg(long)]
    pub verbose_plan: bool,
    #[command(flatten)]
    pub wait: WaitArg,
}

/// `bk-index repair`.
#[derive(Debug, Args)]
pub struct IndexRepairArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Secret key: needed to decrypt and check the blobs
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    /// The packs to check and repair: their ids (64 hex digits, as
    /// bk-verify names them) or keys (packs/ab/<id>)
    #[arg(value_name = "PACK", required = true)]
    pub packs: Vec<String>,
    /// Check and report, and change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: WaitArg,
}

/// A percentage from 0 to 100.
fn parse_percent(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{text:?} is not between 0 and 100"))
    }
}

/// `bk-index unlock`.
#[derive(Debug, Args)]
pub struct IndexUnlockArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Remove every lock, live ones too: only when you are sure no bk
    /// program is using the repository (a prune running beside a backup can
    /// delete objects the backup needs)
    #[arg(long)]
    pub all: bool,
    /// Local file holding the repository's id key, with which the details of
    /// locks are read [default: $XDG_DATA_HOME/bk/<repo id>.idkey]; without
    /// it, locks are judged by their files' modification times
    #[arg(long, env = "BK_ID_KEY", value_name = "FILE")]
    pub id_key: Option<PathBuf>,
}

/// `bk-index list`.
#[derive(Debug, Args)]
pub struct IndexListArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Secret key: count files and bytes of snapshots not in the local cache
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    /// Print one JSON object per snapshot instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// `bk-index show`.
#[derive(Debug, Args)]
pub struct IndexShowArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    /// Snapshot name (as printed by `list`), a unique prefix of it, or "latest"
    #[arg(value_name = "SNAPSHOT", default_value = "latest")]
    pub snapshot: String,
    /// Print CSV (path, kind, size, mtime, mode, sha256, objects…) instead of records
    #[arg(long)]
    pub csv: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// bk-verify: check records against the repository.
#[derive(Debug, Parser)]
#[command(
    name = "bk-verify",
    version,
    about = "Check that every object a record stream needs is present and sound",
    long_about = "Read records on stdin (typically from `bk-index show`) and check that every \
object exists with the expected size. With --read-data, also decrypt every object and check \
the file's SHA-256. Prints one JSON result record per problem on stdout and a summary on stderr. \
File records of one root that share a device and inode but not their size or SHA-256 (a file \
replaced while it was backed up, its inode number reused) are reported as \
{\"problem\":\"hardlink-mismatch\",\"path\":…,\"other\":…} and a line on stderr; bk-open restores \
them as separate files, so nothing is lost and, like orphans, they do not change the exit \
status.",
    after_help = concat!("Examples:\n  bk-index show latest | bk-verify\n  bk-index show latest | bk-verify --read-data --key secret.asc\n  bk-verify --all-snapshots --orphans --read-data-subset today/7 --key secret.asc\n  bk-verify --inventory --repo /srv/backup   (storage side, no key)\n\n", "Exit status:\n  0   every record checked out (hard-link mismatches and orphans are warnings)\n  1   problems found (one result record each)\n  2   bad command line or configuration\n  3   malformed input record\n  4   key problem\n  5   repository problem (with --all-snapshots: a snapshot that cannot be authenticated)")
)]
pub struct VerifyCli {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub repo: RepoArg,
    /// Decrypt every object and re-hash the content (needs --key)
    #[arg(long)]
    pub read_data: bool,
    /// Decrypt and re-hash only part of the objects: "N/M" (part N of M by
    /// object id, e.g. 3/7), "today/M" (the part for today's day number,
    /// so "today/7" reads a different seventh each day of the week), or
    /// "P%" (a fixed pseudo-random P percent of the objects)
    #[arg(long, value_name = "N/M|today/M|P%", conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
    /// Check the records of every snapshot in the repository instead of
    /// stdin (needs --key)
    #[arg(long)]
    pub all_snapshots: bool,
    /// Also list objects that no snapshot references, as "orphan" records
    /// (implies --all-snapshots; needs --key). Orphans waste space but lose
    /// nothing, so they are not a fault unless --orphans-fail
    #[arg(long)]
    pub orphans: bool,
    /// With --orphans: exit 1 when there are orphans
    #[arg(long, requires = "orphans")]
    pub orphans_fail: bool,
    /// Keyless storage-side check: re-hash every pack file against the
    /// repository's pack inventory (BLAKE3 of the stored bytes); needs no key
    #[arg(long, conflicts_with_all = ["read_data", "read_data_subset", "all_snapshots", "orphans"])]
    pub inventory: bool,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub jobs: JobsArg,
}

/// bk-open: decrypt objects and restore trees.
#[derive(Debug, Parser)]
#[command(
    name = "bk-open",
    version,
    about = "Decrypt one object, or restore a record stream into a directory",
    long_about = "With --object, decrypt one object to stdout. With --to, read records on \
stdin and restore them under DIR: files (every byte checked against the record's SHA-256 \
before it gets its real name), directories, symlinks, hard links, special files, modes, \
times, extended attributes, and owners when run as root. Each root goes to its own place, \
DIR/ROOT (/home/a/docs: DIR/home/a/docs), or with --root ROOT only that root, straight \
into DIR. Paths that would leave DIR (absolute, '..', through a symlink) are refused, and \
so is any record that would replace what another root's record put there (overlapping \
roots such as /usr and /usr/share).",
    after_help = concat!("Examples:\n  bk-index show latest | bk-open --to /restore          (/home/a/docs -> /restore/home/a/docs)\n  bk-index show latest | bk-open --root /home/a/docs --to ~/docs-back\n  bk-index show latest | jq -c 'select(.path==\"letters/tax.pdf\")' | bk-open --root /home/a/docs --to .\n  bk-open --snapshot latest --signer me.asc --require-signature --to /restore\n  bk-open --object 3fa9… > chunk.bin\n\n", "Exit status:\n  0   success\n  1   some entries could not be restored (each named on stderr)\n  2   bad command line or configuration\n  3   malformed input record\n  4   key problem\n  5   repository problem (missing or corrupt object; with --snapshot, a snapshot that cannot be authenticated)\n  6   local I/O error (disk full)")
)]
pub struct OpenCli {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
    /// Decrypt this object (hex id) to stdout
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "to",
        required_unless_present = "to"
    )]
    pub object: Option<String>,
    /// Restore the records read on stdin under this directory, each root
    /// in its own place: a record of root /home/a/docs with path
    /// letters/x.txt becomes DIR/home/a/docs/letters/x.txt (records of
    /// root / and records without a root go to DIR/PATH)
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// With --to: restore only the records of root ROOT (as bk-scan
    /// recorded it, e.g. /home/a/docs), straight into DIR
    /// (DIR/letters/x.txt); records of other roots are skipped and counted
    #[arg(long, value_name = "ROOT", requires = "to")]
    pub root: Option<PathBuf>,
    /// With --to: restore the records of this snapshot ("latest", a name
    /// or a unique prefix) straight from the repository, after checking its
    /// signature, instead of reading records on stdin
    #[arg(long, value_name = "SNAPSHOT", requires = "to")]
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub jobs: JobsArg,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub progress: ProgressArg,
}
