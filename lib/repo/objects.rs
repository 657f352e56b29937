//! Objects as records name them: the blobs holding a file's content (see
//! [`crate::repo::pack`] for where they are stored).

/// Checks that the objects of a file record cover its content: their
/// plaintext sizes add up to the record's `size`, and a non-empty file
/// has at least one object. A record that fails this cannot be restored
/// (`"size":81234,"objects":[]` would restore as an empty file, or not at
/// all), so `bk-index write` and `bk-verify` should refuse it. The error
/// says what is wrong, for the caller to put after the record's path.
pub fn check_objects_cover_size(
    size: u64,
    objects: &[crate::record::ObjectRef],
) -> std::result::Result<(), String> {
    if size > 0 && objects.is_empty() {
        return Err(format!(
            "a file of {size} bytes with no objects (its content is nowhere in the repository)"
        ));
    }
    let total = objects
        .iter()
        .try_fold(0u64, |sum, o| sum.checked_add(o.size));
    match total {
        Some(total) if total == size => Ok(()),
        Some(total) => Err(format!(
            "its objects hold {total} bytes of content, the record says {size}"
        )),
        None => Err(format!(
            "its objects' sizes add up to more than 2^64 bytes, the record says {size}"
        )),
    }
}

/// A pack holding a blob a run reuses gets a fresh modification time when
/// its own is older than this: half of `bk-index prune`'s default grace
/// period (24 h).
pub const REUSE_TOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ObjectRef;

    fn obj(size: u64) -> ObjectRef {
        ObjectRef {
            id: "ab".repeat(32),
            size,
            stored: None,
        }
    }

    #[test]
    fn objects_must_cover_the_size_of_a_file() {
        assert_eq!(check_objects_cover_size(0, &[]), Ok(()));
        assert_eq!(check_objects_cover_size(5, &[obj(5)]), Ok(()));
        assert_eq!(
            check_objects_cover_size(3 << 20, &[obj(1 << 20), obj(2 << 20)]),
            Ok(())
        );
        // An empty file may name the object of the empty content.
        assert_eq!(check_objects_cover_size(0, &[obj(0)]), Ok(()));
        let e = check_objects_cover_size(81234, &[]).unwrap_err();
        assert!(e.contains("81234 bytes with no objects"), "{e}");
        let e = check_objects_cover_size(10, &[obj(4), obj(5)]).unwrap_err();
        assert!(e.contains("hold 9 bytes") && e.contains("says 10"), "{e}");
        let e = check_objects_cover_size(0, &[obj(1)]).unwrap_err();
        assert!(e.contains("hold 1 bytes"), "{e}");
        let e = check_objects_cover_size(1, &[obj(u64::MAX), obj(2)]).unwrap_err();
        assert!(e.contains("more than 2^64"), "{e}");
    }
}
