//! Parsing `--repo`: a directory or `s3://BUCKET/PREFIX`, and the S3
//! connection options that go with it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

use clap::Args;

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

/// clap value parser for [`Location`] (directories need not be UTF-8).
#[derive(Debug, Clone, Copy)]
pub struct LocationParser;

impl clap::builder::TypedValueParser for LocationParser {
    type Value = Location;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Location, clap::Error> {
        Location::parse(value).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --repo: {e}\n"),
            )
        })
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

/// How to reach an S3-compatible service. Credentials come from the
/// standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or profile files
/// (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`).
#[derive(Debug, Clone, Default, Args)]
pub struct S3Options {
    /// S3 endpoint URL for providers other than AWS (MinIO, Garage, Ceph,
    /// Backblaze, Wasabi…) [default: AWS_ENDPOINT_URL, else AWS]
    #[arg(long, env = "BK_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]
    #[arg(long, env = "BK_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Address buckets as ENDPOINT/BUCKET rather than BUCKET.ENDPOINT (for
    /// MinIO and most self-hosted servers; automatic for an endpoint that
    /// is an IP address or localhost)
    #[arg(long, env = "BK_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub s3_path_style: bool,
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
