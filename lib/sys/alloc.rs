//! Tuning of glibc's allocator for bk's many-threads, many-buffers shape.
//!
//! bk-seal and bk-open allocate and free buffers of a few hundred KiB per
//! object on several threads. With glibc's defaults each free of such a
//! buffer may hand the memory back (`madvise`/`munmap`), and in a
//! multi-threaded process each of those costs a TLB shoot-down on every
//! core, a large share of a small-file backup's time. Fixing the
//! thresholds keeps freed memory for reuse instead; peak memory is
//! unchanged, since it is bounded by what is in flight.

/// Keeps freed memory below 256 MiB per arena and serves allocations up to
/// 32 MiB from the heap. Does nothing outside glibc.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called once at
    // start-up, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// Limits glibc to `n` malloc arenas. Each thread otherwise gets an arena
/// of its own, up to eight per core, and with the thresholds above every
/// arena keeps the most it ever held, so peak memory grows with the number
/// of threads. bk-seal on S3 runs four record workers per core besides the
/// chunk pool and the S3 client's threads, so there one arena keeps its
/// memory bounded at little cost in speed. Call it before the threads
/// start (arenas that exist already stay). Does nothing outside glibc.
pub fn limit_arenas(n: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter (glibc takes its own
    // lock); arenas that exist already are kept.
    unsafe {
        libc::mallopt(
            libc::M_ARENA_MAX,
            libc::c_int::try_from(n.max(1)).unwrap_or(libc::c_int::MAX),
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}
