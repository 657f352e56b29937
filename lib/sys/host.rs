//! This machine's host name, as snapshot roots and lock bodies record it.

/// This machine's host name ("localhost" if it cannot be read).
pub fn this_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
