//! The trust root: Fulcio CA chains and Rekor log keys, each with its validity, in Sigstore's
//! `trusted_root.json` format (`dev.sigstore.trustedroot.v0.1`, protobuf JSON).
//!
//! The production root is compiled in (`data/trust/sigstore-trusted-root.json`; its source and
//! digest are in `data/trust/README.md`), so an air-gapped install verifies as a connected one
//! does. Tests make a root of their own (a test Fulcio CA, a test Rekor key) and point
//! `KBIN_TEST_TRUST_ROOT` at it; that variable is read only in debug builds
//! (`cfg(debug_assertions)`), so no test key is reachable in a release build.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use serde::Deserialize;

use super::SigError;

/// Sigstore's public-good trust root, as shipped by sigstore-python 4.5.1.
pub const PRODUCTION: &str = include_str!("../../data/trust/sigstore-trusted-root.json");

/// The environment variable naming a test trust root (debug builds only).
pub const TEST_ROOT_ENV: &str = "KBIN_TEST_TRUST_ROOT";

/// A validity window (Unix seconds); `end` none is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// From.
    pub start: i64,
    /// Until, if it ends.
    pub end: Option<i64>,
}

impl Window {
    /// Whether `t` is inside.
    pub fn contains(&self, t: i64) -> bool {
        t >= self.start && self.end.is_none_or(|e| t <= e)
    }

    /// `(from, to)` as RFC 3339, for messages.
    pub fn describe(&self) -> (String, String) {
        (
            super::rfc3339(self.start),
            self.end.map_or_else(|| "now".to_owned(), super::rfc3339),
        )
    }
}

/// A Fulcio certificate authority: its chain (the issuing certificate first, the root last).
#[derive(Debug, Clone)]
pub struct CertAuthority {
    /// Its URI (`https://fulcio.sigstore.dev`).
    pub uri: String,
    /// DER certificates, issuing certificate first.
    pub chain: Vec<Vec<u8>>,
    /// When it may issue.
    pub valid: Window,
}

/// A transparency log's key.
#[derive(Debug, Clone)]
pub struct LogKey {
    /// Its URL.
    pub url: String,
    /// The log id: sha256 of the key's SubjectPublicKeyInfo.
    pub id: Vec<u8>,
    /// The key, as DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// When it signed.
    pub valid: Window,
}

/// A timestamp authority (RFC 3161): its chain, the signing certificate first.
#[derive(Debug, Clone)]
pub struct Tsa {
    /// Its URI.
    pub uri: String,
    /// DER certificates, the timestamping certificate first.
    pub chain: Vec<Vec<u8>>,
    /// When it may timestamp.
    pub valid: Window,
}

/// The Fulcio CAs and Rekor keys a signature may chain to.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    /// Where it came from (for messages).
    pub origin: String,
    /// Fulcio CAs.
    pub cas: Vec<CertAuthority>,
    /// Rekor logs.
    pub logs: Vec<LogKey>,
    /// Timestamp authorities (what dates a Rekor v2 entry).
    pub tsas: Vec<Tsa>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    tlogs: Vec<WireLog>,
    #[serde(default)]
    certificate_authorities: Vec<WireCa>,
    #[serde(default)]
    timestamp_authorities: Vec<WireCa>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireLog {
    #[serde(default)]
    base_url: String,
    public_key: WireKey,
    log_id: WireLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireKey {
    raw_bytes: String,
    valid_for: WireWindow,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCa {
    #[serde(default)]
    uri: String,
    cert_chain: WireChain,
    valid_for: WireWindow,
}

#[derive(Deserialize)]
struct WireChain {
    certificates: Vec<WireCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCert {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct WireWindow {
    start: String,
    end: Option<String>,
}

impl TrustRoot {
    /// Parse a `trusted_root.json` (`origin` is for messages).
    pub fn parse(json: &str, origin: &str) -> Result<TrustRoot, SigError> {
        let bad = |message: String| SigError::Root {
            origin: origin.to_owned(),
            message,
        };
        let w: Wire = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let b64 = |s: &str, what: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| bad(format!("{what} is not base64: {e}")))
        };
        let time = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|e| bad(format!("{s:?} is not an RFC 3339 time: {e}")))
        };
        let window = |w: &WireWindow| -> Result<Window, SigError> {
            Ok(Window {
                start: time(&w.start)?,
                end: w.end.as_deref().map(time).transpose()?,
            })
        };
        let mut root = TrustRoot {
            origin: origin.to_owned(),
            cas: Vec::new(),
            logs: Vec::new(),
            tsas: Vec::new(),
        };
        for l in &w.tlogs {
            root.logs.push(LogKey {
                url: l.base_url.clone(),
                id: b64(&l.log_id.key_id, "a log id")?,
                spki: b64(&l.public_key.raw_bytes, "a log key")?,
                valid: window(&l.public_key.valid_for)?,
            });
        }
        let chain = |c: &WireCa| -> Result<Vec<Vec<u8>>, SigError> {
            let chain = c
                .cert_chain
                .certificates
                .iter()
                .map(|x| b64(&x.raw_bytes, "a CA certificate"))
                .collect::<Result<Vec<_>, _>>()?;
            if chain.is_empty() {
                return Err(bad(format!("the CA {} has no certificates", c.uri)));
            }
            Ok(chain)
        };
        for c in &w.certificate_authorities {
            root.cas.push(CertAuthority {
                uri: c.uri.clone(),
                chain: chain(c)?,
                valid: window(&c.valid_for)?,
            });
        }
        for c in &w.timestamp_authorities {
            root.tsas.push(Tsa {
                uri: c.uri.clone(),
                chain: chain(c)?,
                valid: window(&c.valid_for)?,
            });
        }
        if root.cas.is_empty() || root.logs.is_empty() {
            return Err(bad("no certificate authority or no transparency log".into()));
        }
        Ok(root)
    }

    /// The compiled-in production root (checked by the tests, so a failure is a build defect).
    pub fn production() -> Arc<TrustRoot> {
        static ROOT: OnceLock<Arc<TrustRoot>> = OnceLock::new();
        ROOT.get_or_init(|| {
            Arc::new(
                TrustRoot::parse(PRODUCTION, "(built into kbin: Sigstore public-good)")
                    .expect("the compiled-in trust root parses (tested)"),
            )
        })
        .clone()
    }

    /// The root to verify with: the production root, or in a debug build the file
    /// `KBIN_TEST_TRUST_ROOT` names.
    pub fn active() -> Result<Arc<TrustRoot>, SigError> {
        match test_root_path() {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| SigError::Root {
                    origin: p.display().to_string(),
                    message: e.to_string(),
                })?;
                Ok(Arc::new(TrustRoot::parse(&text, &p.display().to_string())?))
            }
            None => Ok(TrustRoot::production()),
        }
    }
}

/// `KBIN_TEST_TRUST_ROOT`, read only in a debug build.
#[cfg(debug_assertions)]
fn test_root_path() -> Option<std::path::PathBuf> {
    std::env::var_os(TEST_ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// A release build has no test root: the variable is not even read.
#[cfg(not(debug_assertions))]
fn test_root_path() -> Option<std::path::PathBuf> {
    None
}

/// Whether this build can be pointed at a test root (false in every release build).
pub const TEST_ROOT_REACHABLE: bool = cfg!(debug_assertions);

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn the_production_root_is_sigstores_public_good_instance() {
        let r = TrustRoot::production();
        assert!(r.cas.iter().all(|c| c.uri == "https://fulcio.sigstore.dev"));
        let rekor = r
            .logs
            .iter()
            .find(|l| l.url == "https://rekor.sigstore.dev")
            .expect("rekor.sigstore.dev");
        // The public-good Rekor log id, as every Rekor entry names it.
        assert_eq!(
            hex::encode(&rekor.id),
            "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
        );
        // A Rekor v1 log id is the digest of its key.
        assert_eq!(
            sha2::Sha256::digest(&rekor.spki).as_slice(),
            rekor.id.as_slice()
        );
        // What dates a Rekor v2 entry: the v2 log's Ed25519 key and the timestamp authority.
        assert!(
            r.logs
                .iter()
                .any(|l| l.url == "https://log2025-1.rekor.sigstore.dev")
        );
        assert_eq!(
            r.tsas.iter().map(|t| t.uri.as_str()).collect::<Vec<_>>(),
            ["https://timestamp.sigstore.dev/api/v1/timestamp"]
        );
        // The embedded file is the one data/trust/README.md records.
        assert_eq!(
            hex::encode(sha2::Sha256::digest(PRODUCTION.as_bytes())),
            "6494e21ea73fa7ee769f85f57d5a3e6a08725eae1e38c755fc3517c9e6bc0b66"
        );
    }

    #[test]
    fn the_test_root_is_reachable_only_in_debug_builds() {
        // Tests run in debug builds; the release profile compiles test_root_path to None.
        assert_eq!(TEST_ROOT_REACHABLE, cfg!(debug_assertions));
        let src = include_str!("root.rs");
        let gate = "#[cfg(not(debug_assertions))]\nfn test_root_path() -> Option<std::path::PathBuf> {\n    None\n}";
        assert!(
            src.contains(gate),
            "the release build must not read {TEST_ROOT_ENV}"
        );
    }
}
