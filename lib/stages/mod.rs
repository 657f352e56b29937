//! The six programs' work, one module each: `bk-scan` → [`scan`],
//! `bk-hash` → [`hash`], `bk-seal` → [`seal`], `bk-index` → [`index`],
//! `bk-verify` → [`verify`], `bk-open` → [`open`].

pub mod hash;
pub mod index;
pub mod open;
pub mod scan;
pub mod seal;
pub mod verify;
