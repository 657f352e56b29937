//! What bk keeps on the backing-up machine between runs, besides the id
//! key: the reuse cache of each source root's latest snapshot.

pub mod snapcache;
pub mod summaries;
