//! A real S3 server for the S3 tests: moto's, started by
//! `tests/common/s3_server.py` on a free loopback port, one per sandbox
//! (tests run in parallel threads; each gets its own server, bucket and
//! prefix). The test reads and writes the bucket itself with `curl`
//! (`--aws-sigv4`), independently of bk.
//!
//! Without moto the tests fail, saying what to install: CI installs it
//! (`.ci/run`), and a test that skipped silently would hide a gap.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{describe, run_command, DEFAULT_TIMEOUT};

/// The wrapper around moto's server (see its docstring).
pub fn s3_server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/s3_server.py")
}

/// What to install when moto is missing.
pub const MOTO_HINT: &str = "the S3 tests need moto's S3 server: \
    python3 -m pip install 'moto[server]' (.ci/run installs it)";

/// The credentials the sandboxes give bk and curl. moto accepts any
/// credentials unless the server was started with `auth`.
pub const TEST_ACCESS_KEY: &str = "test";
pub const TEST_SECRET_KEY: &str = "test";
pub const TEST_REGION: &str = "us-east-1";

/// A unique, valid bucket name (3–63 lower-case letters, digits, '-').
pub fn unique_bucket(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "bk-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub key: String,
    pub size: u64,
    pub last_modified: String,
}

/// A moto S3 server on 127.0.0.1, killed when dropped.
pub struct S3Server {
    child: Mutex<Option<Child>>,
    pub port: u16,
    buckets: Vec<String>,
    /// Where the server saves its buckets on SIGTERM and loads them from
    /// at start (see [`S3Server::stop`] and [`S3Server::restart`]).
    state: PathBuf,
    /// With `auth`: the only credentials the server accepts.
    pub credentials: (String, String),
    auth: bool,
    dir: TempDir,
    log: PathBuf,
    starts: AtomicU64,
}

impl S3Server {
    /// A server holding the (empty) buckets `buckets`, accepting any
    /// credentials.
    pub fn start(buckets: &[&str]) -> S3Server {
        Self::start_with(buckets, false)
    }

    /// A server that checks credentials and signatures: only
    /// [`S3Server::credentials`] (made by the server) are accepted.
    pub fn start_with_auth(buckets: &[&str]) -> S3Server {
        Self::start_with(buckets, true)
    }

    fn start_with(buckets: &[&str], auth: bool) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("bk-s3-server-")
            .tempdir()
            .expect("tempdir");
        let mut server = S3Server {
            child: Mutex::new(None),
            port: 0,
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            state: dir.path().join("state.pickle"),
            credentials: (TEST_ACCESS_KEY.into(), TEST_SECRET_KEY.into()),
            auth,
            log: dir.path().join("server.log"),
            dir,
            starts: AtomicU64::new(0),
        };
        let (child, port) = server.spawn(0);
        server.port = port;
        *server.child.lock().unwrap() = Some(child);
        if auth {
            let text = fs::read_to_string(server.dir.path().join("auth.json"))
                .expect("s3_server.py --auth writes auth.json");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            server.credentials = (
                v["access_key_id"].as_str().unwrap().to_owned(),
                v["secret_access_key"].as_str().unwrap().to_owned(),
            );
        }
        server
    }

    /// The request lines the server has logged, over all its starts
    /// (`GET /bucket/key HTTP/1.1`): what a test counts requests by.
    pub fn request_lines(&self) -> Vec<String> {
        (0..self.starts.load(Ordering::SeqCst))
            .flat_map(|n| {
                let log = fs::read_to_string(self.log.with_extension(format!("{n}.log")));
                log.unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Starts the wrapper on `port` (0: any free one) and waits for its
    /// `ready PORT` line.
    fn spawn(&self, port: u16) -> (Child, u16) {
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        let log = fs::File::create(self.log.with_extension(format!("{n}.log"))).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(s3_server_script())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--state")
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // moto logs every request: to a file, so no pipe fills up.
            .stderr(log);
        for b in &self.buckets {
            cmd.args(["--bucket", b]);
        }
        if self.auth {
            cmd.arg("--auth").arg(self.dir.path().join("auth.json"));
        }
        // The server needs no AWS settings of the machine it runs on.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(&k);
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (for moto): {e}; {MOTO_HINT}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let got = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse::<u16>().ok());
        match got {
            Some(p) => (child, p),
            None => {
                let _ = child.kill();
                let status = child.wait().ok();
                let log = fs::read_to_string(self.log.with_extension(format!("{n}.log")))
                    .unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "the S3 test server (moto) did not start on port {port} (exit {status:?}); \
                     {MOTO_HINT}. Its stderr:\n{tail}"
                );
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// SIGKILL: the server dies at once and, moto keeping everything in
    /// memory, its buckets are gone.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: the server stops serving at once (requests in flight are
    /// cut off), saves every completed object to its state file and exits.
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "the S3 test server exited with {status} on SIGTERM (state not saved?)"
                    );
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the S3 test server did not exit within 60 s of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again on the same port with the objects that
    /// [`S3Server::stop`] saved.
    pub fn restart(&self) {
        self.stop();
        let start = Instant::now();
        let child = loop {
            // The port was just released; if something else took it in the
            // meantime, retry for a while rather than fail at once.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn(self.port))) {
                Ok((c, p)) => {
                    assert_eq!(p, self.port, "restarted on another port");
                    break c;
                }
                Err(e) if start.elapsed() > Duration::from_secs(20) => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        *self.child.lock().unwrap() = Some(child);
    }

    /// Requests the server has answered so far, by HTTP method: moto's
    /// server logs one line per request (`… "PUT /bucket/key HTTP/1.1"
    /// 200 -`) to its log files, one per start. Take this before and after
    /// what is measured and subtract ([`request_delta`]); the test's own
    /// requests (listings, `get`, `put`) count too.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for n in 0..self.starts.load(Ordering::SeqCst) {
            let log = self.log.with_extension(format!("{n}.log"));
            let text = fs::read_to_string(&log).unwrap_or_default();
            for line in text.lines() {
                let Some((_, request)) = line.split_once("] \"") else {
                    continue;
                };
                let mut words = request.split(' ');
                if let (Some(method), Some(_), Some(version)) =
                    (words.next(), words.next(), words.next())
                {
                    if version.starts_with("HTTP/")
                        && method.bytes().all(|b| b.is_ascii_uppercase())
                    {
                        *counts.entry(method.to_owned()).or_insert(0) += 1;
                    }
                }
            }
        }
        counts
    }

    // -- The test's own S3 client (curl), independent of bk. --------------

    fn curl(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        query: &str,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let out_file = self.dir.path().join(format!(
            "curl-{}-{}.out",
            std::process::id(),
            unique_bucket("x")
        ));
        let mut url = format!("{}/{bucket}", self.endpoint());
        if !key.is_empty() {
            url.push('/');
            url.push_str(&percent_encode_key(key));
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "120", "-X", method])
            .args(["--aws-sigv4", &format!("aws:amz:{TEST_REGION}:s3")])
            .args([
                "-u",
                &format!("{}:{}", self.credentials.0, self.credentials.1),
            ])
            .arg("-o")
            .arg(&out_file)
            .args(["-w", "%{http_code}"]);
        if method == "PUT" {
            cmd.args([
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                "@-",
            ]);
        }
        cmd.arg(&url);
        let out = run_command(cmd, body, DEFAULT_TIMEOUT);
        assert!(
            out.status.success(),
            "curl -X {method} {url} failed: {}",
            describe(&out)
        );
        let code: u16 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl printed no HTTP status: {}", describe(&out)));
        let data = fs::read(&out_file).unwrap_or_default();
        let _ = fs::remove_file(&out_file);
        (code, data)
    }

    /// Every object of `bucket` whose key starts with `prefix`, in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<S3Object> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = format!("list-type=2&prefix={}", percent_encode_key(prefix));
            if let Some(t) = &token {
                q.push_str(&format!("&continuation-token={}", percent_encode_key(t)));
            }
            let (code, body) = self.curl("GET", bucket, "", &q, b"");
            let text = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(code, 200, "listing s3://{bucket}/{prefix}: {text}");
            for c in xml_elements(&text, "Contents") {
                all.push(S3Object {
                    key: xml_unescape(xml_elements(&c, "Key").first().expect("Key")),
                    size: xml_elements(&c, "Size")
                        .first()
                        .and_then(|s| s.parse().ok())
                        .expect("Size"),
                    last_modified: xml_elements(&c, "LastModified")
                        .first()
                        .cloned()
                        .unwrap_or_default(),
                });
            }
            let truncated = xml_elements(&text, "IsTruncated")
                .first()
                .map(String::as_str)
                == Some("true");
            if !truncated {
                break;
            }
            token = xml_elements(&text, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            assert!(token.is_some(), "truncated listing without a token: {text}");
        }
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// The bytes of `bucket/key`, or None if there is no such object.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (code, body) = self.curl("GET", bucket, key, "", b"");
        match code {
            200 => Some(body),
            404 => None,
            _ => panic!(
                "GET s3://{bucket}/{key}: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Writes `bucket/key`.
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let (code, body) = self.curl("PUT", bucket, key, "", data);
        assert_eq!(
            code,
            200,
            "PUT s3://{bucket}/{key}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Deletes `bucket/key`.
    pub fn delete(&self, bucket: &str, key: &str) {
        let (code, body) = self.curl("DELETE", bucket, key, "", b"");
        assert!(
            code == 204 || code == 200,
            "DELETE s3://{bucket}/{key}: HTTP {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Percent-encodes an S3 key for a URL path or query value ('/' kept).
fn percent_encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text inside every `<tag>…</tag>` of `xml` (not nested in itself).
fn xml_elements(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_owned());
        rest = &after[j + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Where a sandbox's S3 repository lives.
pub struct S3Repo {
    pub server: S3Server,
    pub bucket: String,
    /// The key prefix of the repository, without a trailing '/'; may be
    /// empty (the repository at the bucket's root).
    pub prefix: String,
}

impl S3Repo {
    /// A new server with one empty bucket; the repository will live under
    /// `prefix`.
    pub fn new(prefix: &str) -> S3Repo {
        let bucket = unique_bucket("repo");
        let server = S3Server::start(&[&bucket]);
        S3Repo {
            server,
            bucket,
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// `s3://BUCKET/PREFIX` (or `s3://BUCKET` for an empty prefix).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The bucket key of `rel`, a path inside the repository.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// Every object under `rel` (a directory of the repository, e.g.
    /// `"packs"`, or `""` for all): relative path inside `rel` → size.
    pub fn files_under(&self, rel: &str) -> BTreeMap<String, u64> {
        let dir = if rel.is_empty() {
            self.key("")
        } else {
            format!("{}/", self.key(rel.trim_end_matches('/')))
        };
        self.server
            .list(&self.bucket, &dir)
            .into_iter()
            .map(|o| (o.key[dir.len()..].to_owned(), o.size))
            .collect()
    }

    /// The environment bk needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BK_S3_ENDPOINT", self.server.endpoint()),
            ("BK_S3_PATH_STYLE", "true".into()),
            ("AWS_ACCESS_KEY_ID", self.server.credentials.0.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.server.credentials.1.clone()),
            ("AWS_REGION", TEST_REGION.into()),
        ]
    }
}

/// Requests by method between two [`S3Server::request_counts`].
pub fn request_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(m, n)| (m.clone(), n - before.get(m).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}
