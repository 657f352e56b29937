//! Which record paths and roots may be restored, and where: the bytewise
//! checks that keep a hostile record inside the target. They look only at
//! bytes, never at the file system or the restorer's state, so the property
//! tests exercise them on their own.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Longest relative path accepted (PATH_MAX less the terminating NUL).
pub const MAX_PATH: usize = 4095;

/// Longest single name accepted (NAME_MAX).
pub const MAX_NAME: usize = 255;

/// Checks a record path: relative, no `..`, no empty or `.` components
/// (except the root itself, "."), no NUL, at most [`MAX_PATH`] bytes and
/// [`MAX_NAME`] bytes per name. Returns `None` for the root.
pub fn safe_relative(path: &OsStr) -> std::result::Result<Option<PathBuf>, String> {
    let bytes = path.as_bytes();
    if bytes == b"." {
        return Ok(None);
    }
    check_components(bytes, "path")?;
    Ok(Some(PathBuf::from(path)))
}

/// Checks that `bytes` is a relative path of plain names (see
/// [`safe_relative`]); `what` names it in the reason.
fn check_components(bytes: &[u8], what: &str) -> std::result::Result<(), String> {
    if bytes.is_empty() {
        return Err(format!("empty {what}"));
    }
    if bytes[0] == b'/' {
        return Err(format!("absolute {what}"));
    }
    if bytes.contains(&0) {
        return Err(format!("{what} contains a NUL byte"));
    }
    if bytes.len() > MAX_PATH {
        return Err(format!("{what} longer than {MAX_PATH} bytes"));
    }
    for comp in bytes.split(|&b| b == b'/') {
        match comp {
            b"" => return Err(format!("{what} has an empty component")),
            b"." => return Err(format!("{what} contains '.'")),
            b".." => return Err(format!("{what} contains '..'")),
            c if c.len() > MAX_NAME => return Err(format!("name longer than {MAX_NAME} bytes")),
            _ => {}
        }
    }
    Ok(())
}

/// Where the records of `root` go under the target, relative to it: the
/// root without its leading '/' (empty for `/`, which maps to the target
/// itself). Refuses roots that are not plain names once that '/' is gone:
/// `..`, `.` or empty components (`/a/../b`, `/a//b`, `/a/`), NUL, too long.
pub(crate) fn root_place(root: &OsStr) -> std::result::Result<Vec<u8>, String> {
    let bytes = root.as_bytes();
    if bytes.is_empty() {
        return Err("empty root".into());
    }
    let rel = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if rel.is_empty() || rel == b"." {
        return Ok(Vec::new());
    }
    check_components(rel, "root")?;
    Ok(rel.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &[u8]) -> std::result::Result<Option<PathBuf>, String> {
        safe_relative(OsStr::from_bytes(s))
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../x",
            b"a/./b",
            b"",
            b"a//b",
            b"a/",
            b"..",
            b"a/..",
            b"./a",
            b"a\0b",
        ] {
            assert!(rel(bad).is_err(), "{bad:?}");
        }
        assert!(rel(&[b'a'; MAX_NAME + 1]).is_err());
        let long: Vec<u8> = b"a/".repeat(MAX_PATH / 2 + 2);
        assert!(rel(&long[..long.len() - 1]).is_err());
        assert_eq!(rel(b".").unwrap(), None);
        assert_eq!(rel(b"a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(rel(b"...").unwrap(), Some(PathBuf::from("...")));
        assert_eq!(
            rel(b"\xff\n").unwrap(),
            Some(PathBuf::from(OsStr::from_bytes(b"\xff\n")))
        );
    }

    #[test]
    fn roots_map_to_places_under_the_target() {
        let place = |r: &[u8]| root_place(OsStr::from_bytes(r));
        assert_eq!(place(b"/home/a/docs").unwrap(), b"home/a/docs");
        assert_eq!(place(b"/").unwrap(), b"");
        assert_eq!(place(b"docs").unwrap(), b"docs");
        assert_eq!(place(b"/caf\xe9").unwrap(), b"caf\xe9");
        for (bad, why) in [
            (&b""[..], "empty root"),
            (b"/a/../b", "'..'"),
            (b"/..", "'..'"),
            (b"/a/./b", "'.'"),
            (b"//a", "absolute"),
            (b"/a//b", "empty component"),
            (b"/a/", "empty component"),
            (b"/a\0b", "NUL"),
        ] {
            let err = place(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(place(&[b'a'; MAX_NAME + 1]).is_err());
    }
}
