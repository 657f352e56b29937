//! The S3 backend: keys are objects under `s3://BUCKET/PREFIX/`, through
//! Apache OpenDAL.
//!
//! S3 has no rename, but it never shows a half-written object: a PUT, or a
//! multipart upload, becomes visible only once it is complete. So uploads
//! go straight to their final key, streamed in parts of [`PART_SIZE`]
//! (objects smaller than that take a single PUT), and an upload that fails
//! or is dropped is aborted. Transient failures (5xx, throttling, timeouts,
//! refused connections) are retried with exponential backoff and jitter.
//!
//! OpenDAL is async; bk's programs are plain threads, so one small tokio
//! runtime per process drives the requests and each call blocks on it.

use std::future::IntoFuture;
use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{services, ErrorKind, Operator};
use tokio::runtime::{Handle, Runtime};

use super::{Commit, Entry, Finished, KeyReader, Stat, Storage, Upload};
use crate::error::{Error, Result};

/// Size of one part of a multipart upload (S3's minimum is 5 MiB); also
/// the largest object sent in a single PUT.
pub const PART_SIZE: usize = 5 << 20;

/// How many times a failed request is retried (`BK_S3_RETRIES` overrides).
pub const DEFAULT_RETRIES: usize = 6;

/// The process's runtime for S3 requests.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bk-s3")
        .enable_all()
        .build()
        .map_err(|e| Error::repo(format!("cannot start the S3 client: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// How to reach an S3-compatible service. Credentials come from the
/// standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or profile files
/// (`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL for providers other than AWS (else `AWS_ENDPOINT_URL`,
    /// else AWS).
    pub endpoint: Option<String>,
    /// Region (else `AWS_REGION`, `AWS_DEFAULT_REGION`, else us-east-1).
    pub region: Option<String>,
    /// Address buckets as ENDPOINT/BUCKET (automatic for an endpoint that
    /// is an IP address or localhost).
    pub path_style: bool,
}

/// A repository in an S3 bucket.
#[derive(Debug)]
pub struct S3Storage {
    /// Requests retried with backoff.
    patient: Operators,
    /// The same without retries: once the endpoint proved unreachable
    /// (retries exhausted), the remaining requests of the run (other
    /// workers, lock removal) fail at once instead of each waiting again.
    impatient: Operators,
    unreachable: Arc<AtomicBool>,
    rt: Handle,
    shown: String,
    endpoint: String,
}

impl S3Storage {
    /// Connects (lazily: no request is made here) to `bucket` under
    /// `prefix` with the given options and the standard AWS credentials.
    pub fn new(bucket: &str, prefix: &str, opts: &S3Options) -> Result<S3Storage> {
        opendal::install_default();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = opts
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let mut builder = services::S3::default()
            .bucket(bucket)
            .root(&format!("/{prefix}"))
            .region(&region);
        if let Some(e) = &endpoint {
            builder = builder.endpoint(e);
        }
        // Keys in the environment are used as they are; otherwise the
        // default chain reads profile files (AWS_PROFILE, ~/.aws/…), web
        // identity and instance metadata.
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            builder = builder.access_key_id(&id).secret_access_key(&secret);
            if let Some(token) = env("AWS_SESSION_TOKEN") {
                builder = builder.session_token(&token);
            }
        }
        // Virtual-hosted style (BUCKET.ENDPOINT) unless asked otherwise, or
        // the endpoint is an IP address or localhost, where a bucket name
        // in front makes no host name (AWS's own clients switch there too).
        let path_style = opts.path_style || endpoint.as_deref().is_some_and(host_wants_path_style);
        if !path_style {
            builder = builder.enable_virtual_host_style();
        }
        let retries = env("BK_S3_RETRIES")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_RETRIES);
        let shown = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let config_error = |e: opendal::Error| Error::usage(format!("{shown}: {}", e.message()));
        let once = Operator::new(builder).map_err(config_error)?.layer(
            TimeoutLayer::new()
                .with_timeout(Duration::from_secs(120))
                .with_io_timeout(Duration::from_secs(30)),
        );
        let retrying = once.clone().layer(
            RetryLayer::new()
                .with_max_times(retries)
                .with_factor(2.0)
                .with_min_delay(Duration::from_millis(250))
                .with_max_delay(Duration::from_secs(8))
                .with_jitter(),
        );
        let rt = runtime()?;
        let operators = |op: Operator| -> Result<Operators> {
            let _inside = rt.enter();
            Ok(Operators {
                blocking: opendal::blocking::Operator::new(op.clone()).map_err(config_error)?,
                op,
            })
        };
        Ok(S3Storage {
            patient: operators(retrying)?,
            impatient: operators(once)?,
            unreachable: Arc::new(AtomicBool::new(false)),
            rt: rt.handle().clone(),
            shown,
            endpoint: endpoint.unwrap_or_else(|| format!("s3.{region}.amazonaws.com")),
        })
    }

    /// An OpenDAL error as an `io::Error` whose text tells the user what
    /// to check (see [`friendly_error`]).
    fn error(&self, e: &opendal::Error) -> io::Error {
        friendly_error(e, &self.endpoint, &self.unreachable)
    }

    /// The operators to use now: retrying, unless the endpoint already
    /// proved unreachable in this run.
    fn ops(&self) -> &Operators {
        if self.unreachable.load(Ordering::Relaxed) {
            &self.impatient
        } else {
            &self.patient
        }
    }

    fn is_not_found(e: &opendal::Error) -> bool {
        e.kind() == ErrorKind::NotFound && !e.to_string().contains("NoSuchBucket")
    }
}

/// Whether an endpoint URL's host is an IP address (`http://127.0.0.1:9000`,
/// `http://[::1]:9000`) or `localhost`, which take path-style requests only.
pub fn host_wants_path_style(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host_port.split(':').next().unwrap_or(""),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host.parse::<std::net::Ipv4Addr>().is_ok()
        || host == "localhost"
        || host.ends_with(".localhost")
}

/// An OpenDAL error as an `io::Error` whose text tells the user what
/// to check. A missing key stays `NotFound`; a missing bucket does not.
fn friendly_error(e: &opendal::Error, endpoint: &str, unreachable: &AtomicBool) -> io::Error {
    let text = e.to_string();
    let hint = if text.contains("signing credential") {
        Some(
            "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or AWS_PROFILE with ~/.aws/credentials"
                .to_owned(),
        )
    } else if text.contains("NoSuchBucket") {
        Some(format!(
            "the bucket does not exist at {} (create it first; bk does not create buckets)",
            endpoint
        ))
    } else if e.kind() == ErrorKind::PermissionDenied
        || [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
        ]
        .iter()
        .any(|c| text.contains(c))
    {
        Some(
            "access denied: check the credentials (AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and the bucket's policy"
                .to_owned(),
        )
    } else if e.kind() == ErrorKind::Unexpected
        && [
            "connect",
            "dns",
            "timed out",
            "timeout",
            "error sending request",
        ]
        .iter()
        .any(|w| text.to_ascii_lowercase().contains(w))
    {
        unreachable.store(true, Ordering::Relaxed);
        Some(format!("cannot reach the S3 endpoint {endpoint}"))
    } else {
        None
    };
    let kind = match (e.kind(), &hint) {
        (ErrorKind::NotFound, None) => io::ErrorKind::NotFound,
        (ErrorKind::PermissionDenied, _) => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    let cause = short_cause(e, &text);
    match hint {
        Some(h) => io::Error::new(kind, crate::error::Explained(format!("{h} ({cause})"))),
        None => io::Error::new(kind, cause),
    }
}

/// An async operator and its blocking twin.
#[derive(Debug)]
struct Operators {
    op: Operator,
    blocking: opendal::blocking::Operator,
}

/// The gist of an OpenDAL error: the S3 error code and message where the
/// server sent one, else what failed and why (without the request dump).
fn short_cause(e: &opendal::Error, text: &str) -> String {
    let field = |name: &str| {
        let start = text.find(&format!("{name}: \""))? + name.len() + 3;
        let len = text[start..].find('"')?;
        Some(&text[start..start + len])
    };
    if let (Some(code), Some(message)) = (field("code"), field("message")) {
        return format!("{code}: {message}");
    }
    let mut cause = format!("{}: {}", e.kind(), e.message());
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause.push_str(&format!(": {s}"));
        source = s.source();
    }
    cause.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl S3Storage {
    /// One streaming GET of `range` of a key; `None` if it does not exist.
    fn get(
        &self,
        key: &str,
        range: impl std::ops::RangeBounds<u64>,
    ) -> io::Result<Option<KeyReader>> {
        let reader = self
            .ops()
            .blocking
            .reader(key)
            .and_then(|r| r.into_std_read(range));
        let mut reader = match reader {
            Ok(r) => r,
            Err(e) if Self::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.error(&e)),
        };
        // The request is made on the first read: make it now, so that a
        // missing key is told from a broken stream.
        if let Err(e) = reader.fill_buf() {
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<opendal::Error>());
            return match inner {
                Some(oe) if Self::is_not_found(oe) => Ok(None),
                Some(oe) => Err(self.error(oe)),
                None => Err(e),
            };
        }
        Ok(Some(KeyReader(Box::new(reader))))
    }
}

impl Storage for S3Storage {
    fn location(&self) -> &str {
        &self.shown
    }

    fn stat(&self, key: &str) -> io::Result<Option<Stat>> {
        match self.rt.block_on(self.ops().op.stat(key)) {
            Ok(m) => Ok(Some(Stat {
                size: m.content_length(),
                modified: m.last_modified().map(Into::into),
            })),
            Err(e) if Self::is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error(&e)),
        }
    }

    fn open(&self, key: &str) -> io::Result<Option<KeyReader>> {
        // One streaming GET of the whole object (no size lookup first).
        self.get(key, ..)
    }

    fn open_range(&self, key: &str, offset: u64, len: u64) -> io::Result<Option<KeyReader>> {
        if len == 0 {
            return match self.stat(key)? {
                Some(_) => Ok(Some(KeyReader(Box::new(io::Cursor::new(Vec::new()))))),
                None => Ok(None),
            };
        }
        self.get(key, offset..offset.saturating_add(len))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        let path = if dir.is_empty() {
            "/".to_owned()
        } else {
            format!("{dir}/")
        };
        let entries = match self.rt.block_on(self.ops().op.list(&path)) {
            Ok(e) => e,
            Err(e) if Self::is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.error(&e)),
        };
        let mut out: Vec<Entry> = entries
            .into_iter()
            .filter_map(|e| {
                let full = e.path().trim_start_matches('/');
                let rest = full.strip_prefix(path.trim_start_matches('/'))?;
                let name = rest.trim_end_matches('/');
                if name.is_empty() || name.contains('/') {
                    return None;
                }
                let meta = e.metadata();
                Some(Entry {
                    name: name.to_owned(),
                    is_dir: meta.is_dir(),
                    stat: Stat {
                        size: if meta.is_dir() {
                            0
                        } else {
                            meta.content_length()
                        },
                        modified: meta.last_modified().map(Into::into),
                    },
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    fn walk(&self, dir: &str, f: &mut dyn FnMut(&str, Stat)) -> io::Result<()> {
        // The root is "/" to the lister, and keys below it have no prefix.
        let path = format!("{dir}/");
        let below = if dir.is_empty() { "" } else { path.as_str() };
        let lister = self.ops().blocking.lister_options(
            &path,
            opendal::options::ListOptions {
                recursive: true,
                ..Default::default()
            },
        );
        let lister = match lister {
            Ok(l) => l,
            Err(e) if Self::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(self.error(&e)),
        };
        for entry in lister {
            let entry = entry.map_err(|e| self.error(&e))?;
            let meta = entry.metadata();
            let Some(rel) = entry.path().trim_start_matches('/').strip_prefix(below) else {
                continue;
            };
            if meta.is_dir() || rel.is_empty() {
                continue;
            }
            f(
                rel,
                Stat {
                    size: meta.content_length(),
                    modified: meta.last_modified().map(Into::into),
                },
            );
        }
        Ok(())
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn create(&self, key: &str) -> io::Result<Box<dyn Upload>> {
        let writer = self
            .rt
            .block_on(
                self.ops()
                    .op
                    .writer_with(key)
                    .chunk(PART_SIZE)
                    .concurrent(1)
                    .into_future(),
            )
            .map_err(|e| self.error(&e))?;
        Ok(Box::new(S3Upload {
            key: key.to_owned(),
            endpoint: self.endpoint.clone(),
            unreachable: Arc::clone(&self.unreachable),
            rt: self.rt.clone(),
            writer: Some(writer),
            buf: Vec::with_capacity(WRITE_PIECE),
        }))
    }

    fn commit(&self, batch: Vec<Finished>, _mode: Commit) -> io::Result<Vec<bool>> {
        // Finished uploads are already complete, durable and visible.
        Ok(batch.iter().map(|_| true).collect())
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match self.rt.block_on(self.ops().op.delete(key)) {
            Ok(()) => Ok(()),
            Err(e) if Self::is_not_found(&e) => Ok(()),
            Err(e) => Err(self.error(&e)),
        }
    }

    fn touch(&self, _key: &str) {
        // S3 cannot change an object's Last-Modified without copying it.
    }

    fn append(&self, _key: &str, _bytes: &[u8]) -> io::Result<bool> {
        Ok(false)
    }
}

/// How much is gathered before it is handed to OpenDAL's writer (which
/// collects parts of [`PART_SIZE`]).
const WRITE_PIECE: usize = 1 << 20;

/// An upload in progress; aborted unless finished.
struct S3Upload {
    key: String,
    endpoint: String,
    unreachable: Arc<AtomicBool>,
    rt: Handle,
    writer: Option<opendal::Writer>,
    buf: Vec<u8>,
}

impl S3Upload {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(w) = self.writer.as_mut() else {
            return Err(io::Error::other("upload already finished"));
        };
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_PIECE));
        self.rt
            .block_on(w.write(piece))
            .map_err(|e| friendly_error(&e, &self.endpoint, &self.unreachable))
    }
}

impl Write for S3Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = WRITE_PIECE - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= WRITE_PIECE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for S3Upload {
    fn finish(mut self: Box<Self>) -> io::Result<Finished> {
        self.send()?;
        let Some(mut w) = self.writer.take() else {
            return Err(io::Error::other("upload already finished"));
        };
        if let Err(e) = self.rt.block_on(w.close()) {
            let _ = self.rt.block_on(w.abort());
            return Err(friendly_error(&e, &self.endpoint, &self.unreachable));
        }
        Ok(Finished::visible(std::mem::take(&mut self.key)))
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = self.rt.block_on(w.abort());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_wants_path_style;

    #[test]
    fn ip_and_localhost_endpoints_take_path_style() {
        for e in [
            "http://127.0.0.1:9000",
            "http://127.0.0.1",
            "https://10.0.0.7:443/",
            "http://[::1]:9000",
            "http://[fd00::5]/",
            "http://localhost:9000",
            "http://LOCALHOST",
            "http://minio.localhost:9000",
            "127.0.0.1:9000",
        ] {
            assert!(host_wants_path_style(e), "{e}");
        }
        for e in [
            "https://s3.eu-central-003.backblazeb2.com",
            "http://nas.lan:9000",
            "https://127.0.0.1.nip.io",
            "http://localhost-proxy:9000",
        ] {
            assert!(!host_wants_path_style(e), "{e}");
        }
    }
}
