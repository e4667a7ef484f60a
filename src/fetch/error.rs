//! The errors of [`crate::fetch`]: every variant names the URL it concerns (the upstream URL and,
//! when a mirror rewrote it, the URL actually fetched) so a failure can be reproduced with curl.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::manifest::Digest;

/// An upstream URL and the URL actually fetched for it (they differ when a mirror rewrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as written in the manifest.
    pub upstream: String,
    /// The URL kbin fetched (after the mirror rewrite).
    pub url: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.url == self.upstream {
            write!(f, "{}", self.url)
        } else {
            write!(f, "{} (mirror of {})", self.url, self.upstream)
        }
    }
}

/// Why a download or checksum fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A URL (upstream, mirror or rewritten) does not parse or uses an unsupported scheme.
    #[error("{url:?} is not a usable URL: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A mirror base is not usable (checked before any work, whether or not anything will be
    /// downloaded).
    #[error("the mirror {mirror:?} from {origin} is not usable: {reason}")]
    BadMirror {
        /// The base as given.
        mirror: String,
        /// Where it was set (`--mirror or KBIN_MIRROR`, `settings.toml [mirrors] "dl.k8s.io"`).
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA bundle (KBIN_CA_BUNDLE or SSL_CERT_FILE) cannot be read or holds no certificate.
    #[error("cannot use the CA bundle {path}: {reason}")]
    CaBundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A proxy URL from the environment does not parse.
    #[error("cannot use the proxy {url:?} from the environment")]
    Proxy {
        /// The proxy URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client cannot be built (TLS backend).
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The server answered with an error status. 4xx are never retried; 5xx only when the
    /// retries are exhausted.
    #[error("GET {target} answered {status}")]
    Status {
        /// What was fetched.
        target: Target,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// The connection failed (refused, reset, TLS, cut mid-body), on the last attempt.
    #[error("GET {target} failed after {attempts} attempt(s)")]
    Http {
        /// What was fetched.
        target: Target,
        /// How many attempts were made.
        attempts: u32,
        /// The cause of the last failure.
        #[source]
        source: reqwest::Error,
    },
    /// The server's TLS certificate is not trusted (never retried).
    #[error("GET {target}: the server's TLS certificate is not trusted")]
    Certificate {
        /// What was fetched.
        target: Target,
        /// The TLS error.
        #[source]
        source: reqwest::Error,
    },
    /// No byte arrived for the stall timeout, on the last attempt.
    #[error("GET {target} timed out: no data for {after:?} (after {attempts} attempt(s))")]
    Timeout {
        /// What was fetched.
        target: Target,
        /// The stall timeout.
        after: Duration,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The body ended before the length the server announced, on the last attempt.
    #[error("GET {target} ended after {got} of {expected} bytes (after {attempts} attempt(s))")]
    Truncated {
        /// What was fetched.
        target: Target,
        /// The announced length of the whole file.
        expected: u64,
        /// How many bytes of it kbin has.
        got: u64,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The server contradicts itself about the file's length (Content-Length, Content-Range),
    /// or sent more than it announced. The partial file is discarded.
    #[error("GET {target}: the server's lengths do not add up: {detail}")]
    Length {
        /// What was fetched.
        target: Target,
        /// What disagreed.
        detail: String,
    },
    /// The downloaded bytes do not have the expected digest. The partial file is discarded.
    #[error("{target} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// What was fetched.
        target: Target,
        /// The pinned or announced digest.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A local file (the partial download, or a `file://` source) cannot be read or written.
    #[error(transparent)]
    Io(#[from] crate::fsx::PathIo),
    /// A `file://` URL names a file that does not exist.
    #[error("{target} does not exist")]
    FileNotFound {
        /// What was fetched.
        target: Target,
    },
    /// A checksum file has no line for the artifact.
    #[error("the checksum file {target} has no digest for {file_name}")]
    ChecksumNotFound {
        /// The checksum file.
        target: Target,
        /// The artifact's file name.
        file_name: String,
    },
    /// A checksum file is not in a known format.
    #[error("the checksum file {target} is not in sha256sum format: {detail}")]
    ChecksumFormat {
        /// The checksum file.
        target: Target,
        /// What is wrong.
        detail: String,
    },
    /// A small file (a release listing) is larger than kbin reads.
    #[error("{target} is larger than {max} bytes")]
    TooLarge {
        /// What was fetched.
        target: Target,
        /// The limit.
        max: usize,
    },
}

impl FetchError {
    /// The upstream URL and mirrored URL this error is about, if it is about one.
    pub fn target(&self) -> Option<&Target> {
        match self {
            FetchError::Status { target, .. }
            | FetchError::Http { target, .. }
            | FetchError::Certificate { target, .. }
            | FetchError::Timeout { target, .. }
            | FetchError::Truncated { target, .. }
            | FetchError::Length { target, .. }
            | FetchError::DigestMismatch { target, .. }
            | FetchError::FileNotFound { target }
            | FetchError::ChecksumNotFound { target, .. }
            | FetchError::ChecksumFormat { target, .. }
            | FetchError::TooLarge { target, .. } => Some(target),
            _ => None,
        }
    }

    /// Whether the file is not there: a 404 from a server, or a `file://` mirror without it. What
    /// callers that accept an absent optional file (a signature, a bundle) match on.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::Status { status, .. } if status.as_u16() == 404)
            || matches!(self, FetchError::FileNotFound { .. })
    }

    /// A suggestion for the user, for callers that attach hints (`.hint(…)`).
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            FetchError::Status { status, .. } if status.as_u16() == 404 => {
                "the file is not there: check the version, or that the mirror (--mirror, KBIN_MIRROR, settings.toml [mirrors]) is laid out like upstream"
            }
            FetchError::Status { .. } | FetchError::Http { .. } | FetchError::Timeout { .. } => {
                "check the network, proxy (HTTPS_PROXY, NO_PROXY) or use a mirror with --mirror URL; rerunning resumes the download"
            }
            FetchError::Truncated { .. } => {
                "rerun the command: the download resumes where it stopped"
            }
            FetchError::DigestMismatch { .. } | FetchError::Length { .. } => {
                "the server sent other bytes than expected; if you use a mirror, check that its copy is complete and current"
            }
            FetchError::Certificate { .. } => {
                "if the server (a corporate mirror or proxy) uses its own CA, point KBIN_CA_BUNDLE at that CA's PEM file"
            }
            FetchError::BadMirror { .. } => {
                "a mirror is http://HOST[/PATH], https://HOST[/PATH] or file:///ABSOLUTE/DIR, laid out like upstream (kbin mirror export makes one)"
            }
            FetchError::CaBundle { .. } => {
                "KBIN_CA_BUNDLE (or SSL_CERT_FILE) must name a PEM file with one or more CA certificates"
            }
            _ => return None,
        })
    }
}
