//! bk: encrypted, deduplicated, incremental backups as small programs that
//! stream newline-delimited JSON records to each other.
//!
//! Each program in `bin/` is a thin wrapper around one module here:
//! `bk-scan` → [`scan`], `bk-hash` → [`hash`], `bk-seal` → [`seal`],
//! `bk-index` → [`index`], `bk-verify` → [`verify`], `bk-open` → [`open`].

pub mod alloc;
pub mod authkey;
pub mod certify;
pub mod chunker;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod docs;
pub mod error;
pub mod extsort;
pub mod hash;
pub mod host;
pub mod idkey;
pub mod index;
pub mod inventory;
pub mod lifecycle;
pub mod lock;
pub mod meta;
pub mod open;
pub mod order;
pub mod paths;
pub mod pause;
pub mod pipeline;
pub mod program;
pub mod progress;
pub mod record;
pub mod reorder;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod reuse;
pub mod say;
pub mod scan;
pub mod seal;
pub mod signature;
pub mod snapcache;
pub mod snapshot_name;
pub mod snapwrite;
pub mod source;
pub mod storage;
pub mod sync;
pub mod trailer;
pub mod trust;
pub mod verify;
