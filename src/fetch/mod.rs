//! Downloads: the only async module. An upstream URL is rewritten for mirrors, fetched over
//! http(s) (reqwest + rustls) or read from `file://`, hashed while the bytes stream, written to a
//! partial file the caller chose, and checked against the expected digest before the caller
//! moves it anywhere.
//!
//! Faults are expected, not exceptional: connection errors, stalls (no byte for
//! [`FetchOptions::stall_timeout`]), 5xx answers and bodies cut short are retried with exponential
//! backoff and jitter, resuming from the bytes already on disk with `Range: bytes=N-` (and
//! starting over cleanly if the server answers 200 instead of 206). 4xx answers are final at
//! once. A server whose lengths contradict each other, or bytes with the wrong digest, never
//! leave a file behind. `fetch` knows nothing of KBIN_HOME: the caller names the partial file.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kbin::fetch::FetchError> {
//! use kbin::fetch::{FetchOptions, Fetcher, NoProgress};
//! let fetcher = Fetcher::new(FetchOptions::from_env(None, Default::default()))?;
//! let url = "https://dl.k8s.io/release/v1.30.14/bin/linux/amd64/kubectl";
//! let expected = fetcher.checksum(&format!("{url}.sha256"), "kubectl").await?;
//! let done = fetcher
//!     .download(url, "/tmp/kubectl.partial".as_ref(), Some(&expected), &NoProgress)
//!     .await?;
//! assert_eq!(done.sha256, expected);
//! # Ok(()) }
//! ```

mod checksum;
mod error;
mod mirror;
mod sink;

pub use mirror::repository_url;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use url::Url;

pub use error::{FetchError, Target};

use crate::manifest::{Digest, DigestAlgo};
use sink::{Hashers, Sink};

/// The digest for `file_name` in the text of an upstream checksum file (bare digest,
/// `sha256sum` lines or BSD tags), as `install` reads it; `None` when the file names no digest
/// for it or is not a checksum file. Public for the fuzz harness (`fuzz/harness.rs`).
#[doc(hidden)]
pub fn digest_in_checksum_file(text: &str, file_name: &str) -> Option<Digest> {
    checksum::parse(text, file_name).ok()
}

/// Received chunks are handed to the writer thread in batches of about this many bytes: one
/// channel message per MiB rather than per TCP read.
const BATCH: usize = 256 << 10;
/// Checksum files are small; anything bigger is not one.
const CHECKSUM_MAX: usize = 1 << 20;
/// The longest pause between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Proxy settings, as read from the standard environment variables. Loopback addresses
/// (`127.0.0.0/8`, `::1`, `localhost`) always bypass the proxy, whatever NO_PROXY says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// HTTPS_PROXY / https_proxy: proxy for https URLs.
    pub https: Option<String>,
    /// HTTP_PROXY / http_proxy: proxy for http URLs.
    pub http: Option<String>,
    /// ALL_PROXY / all_proxy: proxy for both, when the specific one is unset.
    pub all: Option<String>,
    /// NO_PROXY / no_proxy: comma-separated hosts, domains, IPs and CIDRs that go direct.
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    /// Read the variables curl and reqwest read (upper case first). Empty values count as unset.
    /// Like curl and reqwest, HTTP_PROXY is ignored under CGI (REQUEST_METHOD set).
    pub fn from_env() -> Self {
        let get = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        };
        let cgi = std::env::var_os("REQUEST_METHOD").is_some();
        ProxySettings {
            https: get(["HTTPS_PROXY", "https_proxy"]),
            http: if cgi {
                None
            } else {
                get(["HTTP_PROXY", "http_proxy"])
            },
            all: get(["ALL_PROXY", "all_proxy"]),
            no_proxy: get(["NO_PROXY", "no_proxy"]),
        }
    }
}

/// How to download: mirrors, extra trust roots, proxies, timeouts and retries.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// `--mirror` / `KBIN_MIRROR`: replaces scheme and host of every upstream URL, keeps the path.
    pub mirror: Option<String>,
    /// settings.toml `[mirrors]`: upstream host (or `host:port`) → base URL. `mirror` wins.
    pub host_mirrors: BTreeMap<String, String>,
    /// Extra trust roots (PEM, one or more certificates) on top of the system's:
    /// `KBIN_CA_BUNDLE`, else `SSL_CERT_FILE`.
    pub ca_bundle: Option<PathBuf>,
    /// Proxies (from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY).
    pub proxy: ProxySettings,
    /// How long a TCP (+TLS) connection may take. Default 10 s.
    pub connect_timeout: Duration,
    /// No byte for this long (waiting for the headers or within the body) counts as a failed
    /// attempt. Default 30 s.
    pub stall_timeout: Duration,
    /// Retries after the first attempt. Default 4 (5 attempts).
    pub retries: u32,
    /// The pause before the first retry; it doubles each time (plus up to 50 % jitter), capped
    /// at 10 s. Default 500 ms.
    pub backoff: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            mirror: None,
            host_mirrors: BTreeMap::new(),
            ca_bundle: None,
            proxy: ProxySettings::default(),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

impl FetchOptions {
    /// Options from the command line's mirror and settings.toml's mirrors, plus the
    /// environment: `KBIN_CA_BUNDLE` (else `SSL_CERT_FILE`), the proxy variables, and knobs
    /// for tests and slow links, in milliseconds or counts: `KBIN_HTTP_CONNECT_TIMEOUT_MS`,
    /// `KBIN_HTTP_STALL_TIMEOUT_MS`, `KBIN_HTTP_BACKOFF_MS`, `KBIN_HTTP_RETRIES`. A knob that is
    /// not a number is ignored with a warning.
    pub fn from_env(mirror: Option<String>, host_mirrors: BTreeMap<String, String>) -> Self {
        let num = |name: &str| -> Option<u64> {
            let v = std::env::var(name).ok()?;
            match v.trim().parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!("ignoring {name}={v:?}: not a whole number");
                    None
                }
            }
        };
        let d = FetchOptions::default();
        let ms = Duration::from_millis;
        FetchOptions {
            mirror: mirror.filter(|m| !m.trim().is_empty()),
            host_mirrors,
            ca_bundle: ["KBIN_CA_BUNDLE", "SSL_CERT_FILE"]
                .iter()
                .find_map(|n| std::env::var_os(n).filter(|v| !v.is_empty()))
                .map(PathBuf::from),
            proxy: ProxySettings::from_env(),
            connect_timeout: num("KBIN_HTTP_CONNECT_TIMEOUT_MS").map_or(d.connect_timeout, ms),
            stall_timeout: num("KBIN_HTTP_STALL_TIMEOUT_MS").map_or(d.stall_timeout, ms),
            retries: num("KBIN_HTTP_RETRIES").map_or(d.retries, |n| n.min(100) as u32),
            backoff: num("KBIN_HTTP_BACKOFF_MS").map_or(d.backoff, ms),
        }
    }
}

/// Progress of one download, reported by [`Fetcher::download`].
pub trait Progress: Send + Sync {
    /// The transfer (re)starts: `total` bytes in all if the server said, `already` of them on
    /// disk. Called again on each retry, restating both.
    fn begin(&self, total: Option<u64>, already: u64);
    /// `n` more bytes arrived.
    fn inc(&self, n: u64);
    /// The download is complete (not called on failure).
    fn finish(&self);
    /// An attempt failed and another follows after a pause: say so, or the user watches a
    /// frozen bar for the whole backoff. A no-op unless implemented.
    fn retrying(&self, _retry: &Retry) {}
}

/// A failed attempt that will be retried: what failed, which attempt, and how long until the
/// next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Why the attempt failed (the error's message).
    pub reason: String,
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// How many attempts there are in all (retries + 1).
    pub attempts: u32,
    /// The pause before the next attempt.
    pub wait: Duration,
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; attempt {} of {} failed, next try in ",
            self.reason, self.attempt, self.attempts,
        )?;
        if self.wait < Duration::from_secs(1) {
            write!(f, "{} ms", self.wait.as_millis())
        } else {
            write!(f, "{} s", self.wait.as_secs_f64().round() as u64)
        }
    }
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: Option<u64>, _: u64) {}
    fn inc(&self, _: u64) {}
    fn finish(&self) {}
}

/// A complete, hashed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The partial path the caller gave, now holding the whole file (fsynced).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256.
    pub sha256: Digest,
    /// Its sha512, computed when the expected digest was a sha512.
    pub sha512: Option<Digest>,
    /// Bytes that were already on disk when the last (successful) transfer started: a partial
    /// left by an earlier run or by an attempt cut short. 0 for a transfer from scratch.
    pub resumed_from: u64,
}

impl Downloaded {
    /// The digest of `algo`, if it was computed.
    pub fn digest(&self, algo: DigestAlgo) -> Option<&Digest> {
        match algo {
            DigestAlgo::Sha256 => Some(&self.sha256),
            DigestAlgo::Sha512 => self.sha512.as_ref(),
        }
    }
}

/// A client and the runtime it was built in (`None`: outside any runtime).
type RuntimeClient = (Option<tokio::runtime::Id>, reqwest::Client);

/// Downloads over one shared HTTP client (connection pool, TLS roots, proxies).
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// Built at the first request, shared by clones: loading the system's TLS roots (a stat and
    /// a parse of every file in /etc/ssl/certs) was a quarter of an up-to-date `kbin install`,
    /// which sends none. One per runtime (the one it was built in): a pooled connection is
    /// driven by a task of the runtime that opened it, so another runtime reusing it while that
    /// one sits idle (image pulls beside artifact downloads) waits for the stall timeout.
    client: std::sync::Arc<std::sync::Mutex<Option<RuntimeClient>>>,
    opts: FetchOptions,
}

/// How one attempt ended, when it did not complete.
enum Failure {
    /// Worth another attempt (resuming): connection error, stall, 5xx, short body.
    Retry(FetchError),
    /// Final; `discard` says the partial file cannot be trusted and must go.
    Fatal { error: FetchError, discard: bool },
}

impl Failure {
    /// A final failure of the sink (the partial file stays: it is not the server's fault).
    fn keep(error: FetchError) -> Failure {
        Failure::Fatal {
            error,
            discard: false,
        }
    }

    /// The server's lengths contradict each other: final, and the partial cannot be trusted.
    fn length(target: &Target, detail: String) -> Failure {
        Failure::Fatal {
            error: FetchError::Length {
                target: target.clone(),
                detail,
            },
            discard: true,
        }
    }
}

/// What a response's status and headers say about the body to come.
enum Answer {
    /// A body of `body` bytes (when announced) of a file of `file` bytes.
    Body {
        body: Option<u64>,
        file: Option<u64>,
    },
    /// 416 for a partial that already is the whole file: nothing to read.
    Complete,
    /// 416 otherwise: start the file over.
    StartOver(String),
}

/// Read the status and lengths of a response to a request from `offset`.
fn lengths(
    resp: &reqwest::Response,
    target: &Target,
    offset: u64,
    total: &mut Option<u64>,
) -> Result<Answer, Failure> {
    let fatal = |detail: String| Failure::length(target, detail);
    match resp.status() {
        StatusCode::PARTIAL_CONTENT if offset > 0 => {
            let range = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| fatal("206 without a valid Content-Range".into()))?;
            if range.start != offset {
                return Err(fatal(format!(
                    "asked for bytes from {offset}, got a range from {}",
                    range.start
                )));
            }
            Ok(Answer::Body {
                body: Some(range.end + 1 - range.start),
                file: range.total,
            })
        }
        StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
            // The partial may already be the whole file (a run stopped after the last byte);
            // the digest check decides. Otherwise start over.
            let total_now = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            check_total(total, total_now).map_err(fatal)?;
            if total_now == Some(offset) {
                return Ok(Answer::Complete);
            }
            Ok(Answer::StartOver(format!(
                "the server cannot serve bytes from {offset} (416)"
            )))
        }
        s if s.is_success() && s != StatusCode::PARTIAL_CONTENT => Ok(Answer::Body {
            body: resp.content_length(),
            file: resp.content_length(),
        }),
        s => Err(status_failure(target, s)),
    }
}

impl Fetcher {
    /// A fetcher with these options, checked now (the CA bundle is read and parsed, the proxies'
    /// URLs too); its HTTP client is built at the first request.
    pub fn new(opts: FetchOptions) -> Result<Self, FetchError> {
        // Made now so a bad CA bundle or proxy is reported before any work; built when used.
        let _checked = client_builder(&opts)?;
        // Mirrors too, even when everything is cached: a typo must not wait for the day a
        // download needs it.
        let bases = opts
            .mirror
            .iter()
            .map(|m| (m, "--mirror or KBIN_MIRROR".to_owned()))
            .chain(
                opts.host_mirrors
                    .iter()
                    .map(|(host, m)| (m, format!("settings.toml [mirrors] {host:?}"))),
            );
        for (mirror, origin) in bases {
            mirror::check_base(mirror).map_err(|reason| FetchError::BadMirror {
                mirror: mirror.clone(),
                origin,
                reason,
            })?;
        }
        Ok(Fetcher {
            client: Default::default(),
            opts,
        })
    }

    /// The HTTP client for the current runtime, built on first use there.
    fn client(&self) -> Result<reqwest::Client, FetchError> {
        let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        // A poisoned lock only means another thread panicked while swapping clients.
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, c)) = slot.as_ref()
            && *id == runtime
        {
            return Ok(c.clone());
        }
        let c = client_builder(&self.opts)?
            .build()
            .map_err(FetchError::Client)?;
        *slot = Some((runtime, c.clone()));
        Ok(c)
    }

    /// The options this fetcher was made with.
    pub fn options(&self) -> &FetchOptions {
        &self.opts
    }

    /// The URL actually fetched for an upstream URL (mirror rewrite); http, https and file.
    pub fn resolve_url(&self, upstream: &str) -> Result<Url, FetchError> {
        mirror::resolve(
            upstream,
            self.opts.mirror.as_deref(),
            &self.opts.host_mirrors,
        )
    }

    /// Download `upstream` (after the mirror rewrite) into `partial`, a path the caller chose
    /// (under cache/tmp/, named after the expected digest or the URL), whose directory exists.
    ///
    /// If `partial` exists, the download resumes after its bytes (`Range: bytes=N-`; the
    /// existing prefix is re-hashed); a server that ignores the Range gets a clean restart.
    /// Hashes while streaming: sha256 always, sha512 too when `expected` is one. On success the
    /// complete file is at `partial`, fsynced. If `expected` does not match, `partial` is
    /// deleted and [`FetchError::DigestMismatch`] returned. Connection errors, stalls, 5xx and
    /// short bodies are retried (resuming); 4xx fail at once ([`FetchError::Status`]). When the
    /// retries run out on a transient error the partial file is kept (unless empty), so a rerun
    /// resumes; when the server contradicts itself it is deleted. A resumed download with the
    /// wrong digest is tried once more from scratch (the old prefix may have been stale) before
    /// the mismatch is reported. One process at a time may write a given `partial`: the caller
    /// holds a lock for it.
    pub async fn download(
        &self,
        upstream: &str,
        partial: &Path,
        expected: Option<&Digest>,
        progress: &dyn Progress,
    ) -> Result<Downloaded, FetchError> {
        let url = self.resolve_url(upstream)?;
        let target = Target {
            upstream: upstream.to_owned(),
            url: url.to_string(),
        };
        let sha512 = expected.is_some_and(|d| d.algo() == DigestAlgo::Sha512);
        // A resumed download whose digest is wrong may owe it to a stale or damaged prefix:
        // it gets one more try from scratch before the mismatch is reported.
        let mut fresh_retry = true;
        loop {
            let (finished, resumed_from) = if url.scheme() == "file" {
                let f = copy_file(&url, &target, partial, sha512, progress).await?;
                (f, 0)
            } else {
                self.download_http(&url, &target, partial, sha512, progress)
                    .await?
            };
            let done = Downloaded {
                path: partial.to_owned(),
                size: finished.size,
                sha256: finished.sha256,
                sha512: finished.sha512,
                resumed_from,
            };
            if let Some(exp) = expected {
                let actual = done
                    .digest(exp.algo())
                    .expect("the expected digest's algorithm was computed");
                if actual != exp {
                    let _ = std::fs::remove_file(partial);
                    if resumed_from > 0 && fresh_retry {
                        tracing::debug!("{target}: wrong digest after a resume; starting over");
                        fresh_retry = false;
                        continue;
                    }
                    return Err(FetchError::DigestMismatch {
                        target,
                        expected: exp.clone(),
                        actual: actual.clone(),
                    });
                }
            }
            progress.finish();
            return Ok(done);
        }
    }

    /// Fetch upstream's checksum file (after the mirror rewrite) and find the digest for
    /// `file_name` in it: bare hex, or `sha256sum`/`sha512sum` lines `<hex>  <name>`; the
    /// algorithm follows from the hex length. Retried like a download.
    pub async fn checksum(
        &self,
        checksum_url: &str,
        file_name: &str,
    ) -> Result<Digest, FetchError> {
        self.checksum_with_progress(checksum_url, file_name, &NoProgress)
            .await
    }

    /// [`Fetcher::checksum`], telling `progress` about retries (a checksum file is small: no
    /// byte counts).
    pub async fn checksum_with_progress(
        &self,
        checksum_url: &str,
        file_name: &str,
        progress: &dyn Progress,
    ) -> Result<Digest, FetchError> {
        let (bytes, target) = self
            .small(checksum_url, CHECKSUM_MAX, None, progress)
            .await?;
        if bytes.len() > CHECKSUM_MAX {
            return Err(FetchError::ChecksumFormat {
                target,
                detail: format!("it is larger than {CHECKSUM_MAX} bytes"),
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        checksum::parse(&text, file_name).map_err(|e| match e {
            checksum::ChecksumParse::NotFound => FetchError::ChecksumNotFound {
                target,
                file_name: file_name.to_owned(),
            },
            checksum::ChecksumParse::Format(detail) => {
                FetchError::ChecksumFormat { target, detail }
            }
        })
    }

    /// A small text file (a release listing, `stable-1.30.txt`), after the mirror rewrite, with
    /// the same retries as downloads; more than `max` bytes is an error.
    pub async fn text(&self, upstream: &str, max: usize) -> Result<String, FetchError> {
        let (bytes, target) = self.small(upstream, max, None, &NoProgress).await?;
        if bytes.len() > max {
            return Err(FetchError::TooLarge { target, max });
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A small document (at most 4 MiB) such as a registry manifest, asking for the media
    /// types in `accept` (registries answer a tag with the form the client accepts). Mirror
    /// rewrite and retries as for a download; `file://` mirrors are read as files.
    pub async fn document(&self, upstream: &str, accept: &str) -> Result<Vec<u8>, FetchError> {
        const DOCUMENT_MAX: usize = 4 << 20;
        let (bytes, target) = self
            .small(upstream, DOCUMENT_MAX, Some(accept), &NoProgress)
            .await?;
        if bytes.len() > DOCUMENT_MAX {
            return Err(FetchError::TooLarge {
                target,
                max: DOCUMENT_MAX,
            });
        }
        Ok(bytes)
    }

    /// At most `max + 1` bytes of `upstream` (after the mirror rewrite), in memory.
    async fn small(
        &self,
        upstream: &str,
        max: usize,
        accept: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<(Vec<u8>, Target), FetchError> {
        let url = self.resolve_url(upstream)?;
        let target = Target {
            upstream: upstream.to_owned(),
            url: url.to_string(),
        };
        let bytes = if url.scheme() == "file" {
            let path = file_path(&url, &target)?;
            let mut buf = Vec::new();
            std::fs::File::open(&path)
                .map_err(|e| file_error(e, &target, &path))?
                .take(max as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| file_error(e, &target, &path))?;
            buf
        } else {
            self.get_limited(&url, &target, progress, accept, max)
                .await?
        };
        Ok((bytes, target))
    }

    /// A small body in memory (at most `max + 1` bytes), with the same retries as downloads.
    async fn get_limited(
        &self,
        url: &Url,
        target: &Target,
        progress: &dyn Progress,
        accept: Option<&str>,
        max: usize,
    ) -> Result<Vec<u8>, FetchError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let resp = self.send_accepting(url, target, None, accept).await?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(status_failure(target, status));
                }
                let mut body = Vec::new();
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = self.next_chunk(&mut stream, target).await? {
                    body.extend_from_slice(&chunk);
                    if body.len() > max {
                        break;
                    }
                }
                Ok(body)
            }
            .await;
            match result {
                Ok(body) => return Ok(body),
                Err(Failure::Retry(e)) if attempt <= self.opts.retries => {
                    self.pause(&e, attempt, progress).await;
                }
                Err(Failure::Retry(e)) => return Err(with_attempts(e, attempt)),
                Err(Failure::Fatal { error, .. }) => return Err(error),
            }
        }
    }

    async fn download_http(
        &self,
        url: &Url,
        target: &Target,
        partial: &Path,
        sha512: bool,
        progress: &dyn Progress,
    ) -> Result<(sink::Finished, u64), FetchError> {
        let mut sink = Sink::open(partial, sha512).await?;
        if sink.initial > 0 {
            tracing::debug!("{partial:?} holds {} bytes: resuming", sink.initial);
        }
        // The whole file's length as the first answer stated it; later answers must agree.
        let mut total: Option<u64> = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .attempt(url, target, &mut sink, &mut total, progress)
                .await;
            // Whatever happened, the file holds exactly what the digests cover.
            let synced = sink.sync().await;
            let failure = match (result, synced) {
                (_, Err(e)) => Failure::Fatal {
                    error: e,
                    discard: false,
                },
                (Ok(resumed_from), Ok(_)) => {
                    let f = sink.finish().await?;
                    return Ok((f, resumed_from));
                }
                (Err(f), Ok(_)) => f,
            };
            let (error, discard) = match failure {
                Failure::Retry(e) if attempt <= self.opts.retries => {
                    self.pause(&e, attempt, progress).await;
                    continue;
                }
                // The bytes on disk are good: a rerun resumes after them.
                Failure::Retry(e) => (with_attempts(e, attempt), false),
                Failure::Fatal { error, discard } => (error, discard),
            };
            // An empty partial file helps no one.
            let empty = sink.len() == 0;
            drop(sink);
            if discard || empty {
                let _ = std::fs::remove_file(partial);
            }
            return Err(error);
        }
    }

    /// One GET, resuming after the sink's bytes; Ok when the whole file is in the sink, with
    /// the number of bytes that were on disk before this transfer.
    async fn attempt(
        &self,
        url: &Url,
        target: &Target,
        sink: &mut Sink,
        total: &mut Option<u64>,
        progress: &dyn Progress,
    ) -> Result<u64, Failure> {
        let offset = sink.len();
        let resp = self
            .send(url, target, (offset > 0).then_some(offset))
            .await?;
        let (body_len, file_len) = match lengths(&resp, target, offset, total)? {
            Answer::Body { body, file } => (body, file),
            Answer::Complete => return Ok(offset),
            Answer::StartOver(detail) => {
                sink.reset().await.map_err(Failure::keep)?;
                return Err(Failure::Retry(FetchError::Length {
                    target: target.clone(),
                    detail,
                }));
            }
        };
        if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
            tracing::debug!("{target}: Range ignored, starting over");
            sink.reset().await.map_err(Failure::keep)?;
        }
        check_total(total, file_len).map_err(|d| Failure::length(target, d))?;
        let start = sink.len();
        progress.begin(file_len, start);
        let got = self
            .stream_body(resp, target, sink, body_len, progress)
            .await?;
        match body_len {
            Some(n) if got < n => Err(Failure::Retry(FetchError::Truncated {
                target: target.clone(),
                expected: file_len.unwrap_or(start + n),
                got: start + got,
                attempts: 1,
            })),
            _ => Ok(start),
        }
    }

    /// Stream `resp`'s body into `sink` in batches, refusing more than `body_len` bytes; the
    /// bytes received.
    async fn stream_body(
        &self,
        resp: reqwest::Response,
        target: &Target,
        sink: &mut Sink,
        body_len: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<u64, Failure> {
        let mut got: u64 = 0;
        let mut batch: Vec<Bytes> = Vec::with_capacity(64);
        let mut batched = 0usize;
        let mut stream = resp.bytes_stream();
        let end = loop {
            let chunk = match self.next_chunk(&mut stream, target).await {
                Ok(Some(c)) => c,
                Ok(None) => break Ok(()),
                Err(f) => break Err(f),
            };
            got += chunk.len() as u64;
            if let Some(n) = body_len.filter(|n| got > *n) {
                break Err(Failure::length(
                    target,
                    format!("the body is longer than the {n} bytes announced"),
                ));
            }
            batched += chunk.len();
            batch.push(chunk);
            if batched >= BATCH {
                sink.write(std::mem::take(&mut batch))
                    .await
                    .map_err(Failure::keep)?;
                progress.inc(batched as u64);
                batched = 0;
            }
        };
        // What arrived before a failure is kept: the next attempt resumes after it.
        if !batch.is_empty() {
            sink.write(batch).await.map_err(Failure::keep)?;
            progress.inc(batched as u64);
        }
        end.map(|()| got)
    }

    /// Send a GET (with `Range: bytes=N-` when `from` is given), waiting at most the stall
    /// timeout for the response headers.
    async fn send(
        &self,
        url: &Url,
        target: &Target,
        from: Option<u64>,
    ) -> Result<reqwest::Response, Failure> {
        self.send_accepting(url, target, from, None).await
    }

    async fn send_accepting(
        &self,
        url: &Url,
        target: &Target,
        from: Option<u64>,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, Failure> {
        let client = self.client().map_err(|error| Failure::Fatal {
            error,
            discard: false,
        })?;
        let mut req = client.get(url.clone());
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        if let Some(n) = from {
            req = req.header(RANGE, format!("bytes={n}-"));
        }
        match tokio::time::timeout(self.opts.stall_timeout, req.send()).await {
            Err(_) => Err(Failure::Retry(self.timeout(target))),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_builder() || e.is_redirect() => Err(Failure::Fatal {
                error: http_error(target, e),
                discard: false,
            }),
            Ok(Err(e)) if is_certificate_error(&e) => Err(Failure::Fatal {
                error: FetchError::Certificate {
                    target: target.clone(),
                    source: e,
                },
                discard: false,
            }),
            Ok(Err(e)) => Err(Failure::Retry(http_error(target, e))),
        }
    }

    /// The next body chunk, or a stall timeout / transport error.
    async fn next_chunk<S>(&self, stream: &mut S, target: &Target) -> Result<Option<Bytes>, Failure>
    where
        S: futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    {
        match tokio::time::timeout(self.opts.stall_timeout, stream.next()).await {
            Err(_) => Err(Failure::Retry(self.timeout(target))),
            Ok(None) => Ok(None),
            Ok(Some(Ok(c))) => Ok(Some(c)),
            Ok(Some(Err(e))) => Err(Failure::Retry(http_error(target, e))),
        }
    }

    fn timeout(&self, target: &Target) -> FetchError {
        FetchError::Timeout {
            target: target.clone(),
            after: self.opts.stall_timeout,
            attempts: 1,
        }
    }

    /// After failed attempt `attempt` (`e`): tell `progress`, then wait the backoff.
    async fn pause(&self, e: &FetchError, attempt: u32, progress: &dyn Progress) {
        let wait = self.backoff(attempt);
        tracing::debug!("attempt {attempt} failed, retrying in {wait:?}: {e}");
        // The root cause says why ("Connection refused", "503 Service Unavailable"); the top
        // message only repeats the URL, which the line's name already identifies.
        let mut root: &dyn std::error::Error = e;
        while let Some(next) = root.source() {
            root = next;
        }
        progress.retrying(&Retry {
            reason: root.to_string(),
            attempt,
            attempts: self.opts.retries + 1,
            wait,
        });
        tokio::time::sleep(wait).await;
    }

    /// The pause before retry `n` (1-based): backoff · 2^(n-1), plus up to 50 % jitter.
    fn backoff(&self, n: u32) -> Duration {
        let base = self
            .opts
            .backoff
            .saturating_mul(1 << (n - 1).min(16))
            .min(BACKOFF_MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base + base.mul_f64(f64::from(nanos % 500) / 1000.0)
    }
}

/// Set the attempt count on the errors that report it.
fn with_attempts(mut e: FetchError, n: u32) -> FetchError {
    match &mut e {
        FetchError::Http { attempts, .. }
        | FetchError::Timeout { attempts, .. }
        | FetchError::Truncated { attempts, .. } => *attempts = n,
        _ => {}
    }
    e
}

fn http_error(target: &Target, source: reqwest::Error) -> FetchError {
    FetchError::Http {
        target: target.clone(),
        attempts: 1,
        source,
    }
}

/// A TLS certificate verification failure: retrying cannot help. rustls's errors are not
/// reachable as types through reqwest, so the cause chain's text decides ("invalid peer
/// certificate: UnknownIssuer"); a miss only means a pointless retry.
fn is_certificate_error(e: &reqwest::Error) -> bool {
    crate::util::chain(e).contains("certificate")
}

/// 5xx is worth retrying; anything else (4xx, unexpected 1xx/3xx) is final.
fn status_failure(target: &Target, status: StatusCode) -> Failure {
    let error = FetchError::Status {
        target: target.clone(),
        status,
    };
    if status.is_server_error() {
        Failure::Retry(error)
    } else {
        Failure::Fatal {
            error,
            discard: true,
        }
    }
}

/// Record the whole file's length the first time it is stated; refuse a later contradiction.
fn check_total(known: &mut Option<u64>, now: Option<u64>) -> Result<(), String> {
    match (*known, now) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "the file was {a} bytes long in one answer and {b} in another"
        )),
        (None, Some(b)) => {
            *known = Some(b);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
struct ContentRange {
    start: u64,
    end: u64,
    total: Option<u64>,
}

fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (end >= start && total.is_none_or(|t| end < t)).then_some(ContentRange { start, end, total })
}

/// Make aws-lc-rs the process's rustls provider (reqwest is built without one of its own), so
/// TLS and certificate generation (rcgen) use one crypto library. Call before building any
/// HTTP client; later calls do nothing.
pub fn install_crypto_provider() {
    // An error only says a provider is already installed: aws-lc-rs, by an earlier call.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An HTTP client with `opts`' trust roots, proxies and connect timeout, for other protocols
/// carried over HTTP (git's smart HTTP in `source::http`), so every request kbin makes goes
/// through one TLS stack with one set of settings.
pub fn client(opts: &FetchOptions) -> Result<reqwest::Client, FetchError> {
    client_builder(opts)?.build().map_err(FetchError::Client)
}

/// The HTTP client's settings: rustls with the system's roots plus the CA bundle, proxies with
/// loopback exempt.
fn client_builder(opts: &FetchOptions) -> Result<reqwest::ClientBuilder, FetchError> {
    install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("kbin/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(opts.connect_timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .tcp_nodelay(true);
    if let Some(path) = &opts.ca_bundle {
        let bad = |reason: String| FetchError::CaBundle {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("it holds no PEM certificate".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b = with_proxies(b, &opts.proxy)?;
    Ok(b)
}

/// Add the proxies from `p`, each with NO_PROXY plus loopback exempt. reqwest's own reading of
/// the environment is turned off (it would send 127.0.0.1 through the proxy).
fn with_proxies(
    mut b: reqwest::ClientBuilder,
    p: &ProxySettings,
) -> Result<reqwest::ClientBuilder, FetchError> {
    let no_proxy = match &p.no_proxy {
        Some(n) => format!("{n},127.0.0.0/8,::1,localhost"),
        None => "127.0.0.0/8,::1,localhost".to_owned(),
    };
    type MakeProxy = fn(&str) -> reqwest::Result<reqwest::Proxy>;
    let entries: [(&Option<String>, MakeProxy); 3] = [
        (&p.https, |u| reqwest::Proxy::https(u)),
        (&p.http, |u| reqwest::Proxy::http(u)),
        (&p.all, |u| reqwest::Proxy::all(u)),
    ];
    let mut any = false;
    for (value, make) in entries {
        if let Some(u) = value {
            let proxy = make(u).map_err(|source| FetchError::Proxy {
                url: u.clone(),
                source,
            })?;
            b = b.proxy(proxy.no_proxy(reqwest::NoProxy::from_string(&no_proxy)));
            any = true;
        }
    }
    if !any {
        b = b.no_proxy();
    }
    Ok(b)
}

fn file_path(url: &Url, target: &Target) -> Result<PathBuf, FetchError> {
    url.to_file_path().map_err(|()| FetchError::BadUrl {
        url: target.url.clone(),
        reason: "not a local file path".into(),
    })
}

fn file_error(e: std::io::Error, target: &Target, path: &Path) -> FetchError {
    if e.kind() == std::io::ErrorKind::NotFound {
        FetchError::FileNotFound {
            target: target.clone(),
        }
    } else {
        FetchError::Io(crate::fsx::PathIo {
            action: "cannot read",
            path: path.to_owned(),
            source: e,
        })
    }
}

/// A `file://` source: copied into `partial` with hashing, on a blocking thread. No resume:
/// reading local bytes again is cheaper than hashing the old prefix.
async fn copy_file(
    url: &Url,
    target: &Target,
    partial: &Path,
    sha512: bool,
    progress: &dyn Progress,
) -> Result<sink::Finished, FetchError> {
    let src = file_path(url, target)?;
    let mut input = std::fs::File::open(&src).map_err(|e| file_error(e, target, &src))?;
    let len = input.metadata().ok().map(|m| m.len());
    progress.begin(len, 0);
    let dst = partial.to_owned();
    let target = target.clone();
    let copied = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| crate::fsx::at::<FetchError>(action, &path)(source)
        };
        let mut out = std::fs::File::create(&dst).map_err(io("cannot create", &dst))?;
        let mut hashers = Hashers::new(sha512);
        let mut buf = vec![0u8; BATCH];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(io("cannot read", &src))?;
            if n == 0 {
                break;
            }
            hashers.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io("cannot write", &dst))?;
            size += n as u64;
        }
        out.sync_all().map_err(io("cannot sync", &dst))?;
        let (sha256, sha512) = hashers.finish();
        if len.is_some_and(|l| l != size) {
            let _ = std::fs::remove_file(&dst);
            return Err(FetchError::Length {
                target,
                detail: format!("the file changed while it was read ({size} bytes)"),
            });
        }
        Ok(sink::Finished {
            size,
            sha256,
            sha512,
        })
    })
    .await
    .map_err(|e| {
        FetchError::Io(crate::fsx::PathIo {
            action: "the copy thread failed for",
            path: partial.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })
    })??;
    progress.inc(copied.size);
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_and_rejects_nonsense() {
        let r = parse_content_range("bytes 100-199/200").unwrap();
        assert_eq!((r.start, r.end, r.total), (100, 199, Some(200)));
        assert!(
            parse_content_range("bytes 100-199/*")
                .unwrap()
                .total
                .is_none()
        );
        assert!(parse_content_range("bytes 200-100/300").is_none());
        assert!(parse_content_range("bytes 100-200/200").is_none());
        assert!(parse_content_range("items 1-2/3").is_none());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let f = Fetcher::new(FetchOptions {
            backoff: Duration::from_millis(100),
            ..FetchOptions::default()
        })
        .unwrap();
        let b1 = f.backoff(1);
        assert!(b1 >= Duration::from_millis(100) && b1 < Duration::from_millis(151));
        let b3 = f.backoff(3);
        assert!(b3 >= Duration::from_millis(400) && b3 < Duration::from_millis(601));
        assert!(f.backoff(30) <= BACKOFF_MAX + BACKOFF_MAX / 2);
    }

    #[test]
    fn lengths_must_agree() {
        let mut known = None;
        assert!(check_total(&mut known, Some(10)).is_ok());
        assert!(check_total(&mut known, None).is_ok());
        assert!(check_total(&mut known, Some(10)).is_ok());
        assert!(check_total(&mut known, Some(11)).is_err());
    }
}
