//! Locking shared state between worker threads.

use std::sync::{Mutex, MutexGuard};

/// Locks `m` even if a thread panicked while holding it: what bk guards
/// (counters, sets of ids, queues) stays valid after such a panic, and the
/// panic itself is reported where the thread is joined.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
