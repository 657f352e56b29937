//! This machine's host name, as snapshot names and lock files record it.

/// This machine's host name ("localhost" if it cannot be read).
pub fn this_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A host name made safe inside a file name: letters, digits, '.' and '-'
/// kept, anything else '_', at most 64 characters, never empty.
pub fn file_safe(host: &str) -> String {
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        "host".into()
    } else {
        clean
    }
}
