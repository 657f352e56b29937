//! The operating system below everything: the allocator, the host name,
//! XDG directories, reading source files safely and locking shared state.

pub mod alloc;
pub mod fs;
pub mod host;
pub mod paths;
pub mod source;
pub mod sync;
pub mod time;
