//! bk: encrypted, deduplicated, incremental backups as small programs that
//! stream newline-delimited JSON records to each other.
//!
//! The folders say the architecture; dependencies point one way, from the
//! command line down to the operating system (checked by
//! `tests/layering.rs`):
//!
//! - [`cli`]: clap definitions, config layering, docs generation, `main`;
//! - [`stages`]: the work of each program (`bin/` holds thin wrappers);
//! - [`local`]: what the backing-up machine keeps between runs;
//! - [`repo`]: the repository format: objects, snapshots, locks, keys;
//! - [`stream`]: the worker model the record stages share;
//! - [`record`]: the wire format and its one order;
//! - [`crypto`]: OpenPGP keys, encryption and signatures;
//! - [`storage`]: where a repository's files live (directory, S3);
//! - [`sys`]: the operating system.
//!
//! [`error`] and [`say`] serve every layer.

pub mod cli;
pub mod crypto;
pub mod error;
pub mod local;
pub mod record;
pub mod repo;
pub mod say;
pub mod stages;
pub mod storage;
pub mod stream;
pub mod sys;
