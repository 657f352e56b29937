//! Where a repository is (a directory or `s3://BUCKET/PREFIX`), and
//! opening the storage there.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::dir::DirStorage;
use super::s3::{S3Options, S3Storage};
use super::Storage;
use crate::error::Result;

/// Where a repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local (or mounted) directory.
    Dir(PathBuf),
    /// A bucket and a key prefix ("" for the bucket's root) in S3-compatible
    /// object storage.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing `/`.
        prefix: String,
    },
}

impl Location {
    /// Parses a `--repo` value: `s3://BUCKET[/PREFIX]` or a directory.
    pub fn parse(value: &OsStr) -> Result<Location, String> {
        let Some(text) = value.to_str().and_then(|t| t.strip_prefix("s3://")) else {
            if value.is_empty() {
                return Err("empty repository path".into());
            }
            return Ok(Location::Dir(PathBuf::from(value)));
        };
        let (bucket, prefix) = text.split_once('/').unwrap_or((text, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'));
        if !valid {
            return Err(format!(
                "s3://{text}: {bucket:?} is not a valid bucket name (3 to 63 lower-case letters, digits, '-' or '.')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|c| c == "." || c == "..") || prefix.contains("//") {
            return Err(format!(
                "s3://{text}: the prefix may not contain '.', '..' or '//' components"
            ));
        }
        Ok(Location::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The local directory, if the repository is one.
    pub fn as_dir(&self) -> Option<&std::path::Path> {
        match self {
            Location::Dir(p) => Some(p),
            Location::S3 { .. } => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl From<Location> for OsString {
    fn from(l: Location) -> OsString {
        match l {
            Location::Dir(p) => p.into_os_string(),
            other => OsString::from(other.to_string()),
        }
    }
}

/// Opens the storage a location names.
pub fn open(location: &Location, s3: &S3Options) -> Result<Arc<dyn Storage>> {
    Ok(match location {
        Location::Dir(path) => Arc::new(DirStorage::new(path)),
        Location::S3 { bucket, prefix } => Arc::new(S3Storage::new(bucket, prefix, s3)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dirs_and_s3() {
        assert_eq!(
            Location::parse(OsStr::new("/mnt/b")).unwrap(),
            Location::Dir("/mnt/b".into())
        );
        assert_eq!(
            Location::parse(OsStr::new("s3://my-bucket/a/b/")).unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse(OsStr::new("s3://my-bucket"))
                .unwrap()
                .to_string(),
            "s3://my-bucket"
        );
        assert!(Location::parse(OsStr::new("s3://My_Bucket/x")).is_err());
        assert!(Location::parse(OsStr::new("s3://bucket/a/../b")).is_err());
        assert!(Location::parse(OsStr::new("")).is_err());
    }
}
