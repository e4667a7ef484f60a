//! Signatures, verified offline: who vouches for an artifact's bytes beyond a checksum file.
//!
//! - [`root`]: the trust roots compiled in (`data/trust/`, each file's source in its README):
//!   Sigstore's public-good `trusted_root.json` (Fulcio CA chains, Rekor log keys, each with
//!   its validity). A test root is reachable only in debug builds (`KBIN_TEST_TRUST_ROOT`), never
//!   in a release build.
//! - [`sigstore`]: a keyless (Fulcio + Rekor) signature over a blob, from a Sigstore bundle
//!   (`.sigstore.json`, or cosign's older `--bundle` JSON), checked with nothing but the trust
//!   root: the certificate chains to a trusted Fulcio CA, the signature is over the blob's
//!   sha256, the Rekor log's signed entry timestamp (SET) vouches that the entry (this
//!   signature, this certificate, this digest) was logged while the short-lived certificate was
//!   valid, and the certificate names the identity and issuer the manifest's policy expects.
//! - [`openpgp`]: an OpenPGP (GPG) detached signature (`.asc`, as runc publishes them) over a
//!   blob's bytes, by a key of a compiled-in keyring (`data/trust/<name>.keyring`) that was
//!   valid when it signed.
//!
//! Nothing here touches the network or the store: callers hand in the blob's digest (or, for
//! OpenPGP, its bytes) and the signature's bytes, and keep the blob only if this says yes.

mod inclusion;
pub mod openpgp;
pub mod root;
pub mod sigstore;
pub mod tsa;

use serde::{Deserialize, Serialize};

pub use root::TrustRoot;
pub use sigstore::{Material, Signer, verify_blob};

/// Who must have signed: the certificate's subject (SAN email or URI) and the OIDC issuer that
/// Fulcio recorded in it. Per component in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The SAN: an email (`krel-staging@k8s-releng-prod.iam.gserviceaccount.com`) or a URI.
    pub identity: String,
    /// The OIDC issuer (`https://accounts.google.com`).
    pub issuer: String,
}

/// What vouched for an artifact or image: recorded in the receipt, shown by `show-versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vouch {
    /// The digest is pinned in the manifest (a kbin release, or the user's manifest).
    Pinned,
    /// A signature verified against the compiled-in trust root, by this identity.
    Signed {
        /// The certificate's identity (SAN).
        identity: String,
        /// The OIDC issuer in it.
        issuer: String,
    },
    /// Only upstream's checksum file (over TLS), or a digest `kbin update` read from one.
    ChecksumFile,
}

impl std::fmt::Display for Vouch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Vouch::Pinned => f.write_str("pinned"),
            Vouch::Signed { identity, .. } => write!(f, "signed by {identity}"),
            Vouch::ChecksumFile => f.write_str("checksum file only"),
        }
    }
}

/// Why a signature was refused. Each case is one clear sentence; the artifact is not kept.
#[derive(Debug, thiserror::Error)]
pub enum SigError {
    /// The trust root itself could not be read.
    #[error("the trust root {origin} is not valid: {message}")]
    Root {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The signature files are not what they claim to be.
    #[error("the signature material is malformed: {0}")]
    Malformed(String),
    /// The certificate does not chain to a Fulcio CA of the trust root.
    #[error(
        "the signing certificate (issued by {issuer}) does not chain to a Fulcio CA of the trust root"
    )]
    UntrustedCertificate {
        /// The certificate's issuer name.
        issuer: String,
    },
    /// The signature is not over these bytes (or not by this certificate's key).
    #[error(
        "the signature does not match the artifact's bytes ({digest}) under the certificate's key"
    )]
    BadSignature {
        /// The artifact's digest.
        digest: String,
    },
    /// No transparency-log entry, so the short-lived certificate cannot be checked offline.
    #[error(
        "the signing certificate expired at {not_after} and there is no valid transparency-log entry \
         showing it was used while valid: the signature cannot be verified offline"
    )]
    NoLogEntry {
        /// The certificate's notAfter (RFC 3339).
        not_after: String,
    },
    /// The log entry names a log the trust root does not have.
    #[error("the transparency-log entry is from a log the trust root does not know (log id {0})")]
    UnknownLog(String),
    /// A Rekor v2 entry's inclusion proof or checkpoint does not hold.
    #[error("the transparency-log entry's inclusion proof does not hold: {0}")]
    BadInclusion(String),
    /// A Rekor v2 entry without a timestamp that verifies: nothing dates the signature.
    #[error(
        "the transparency-log entry is a Rekor v2 entry, which carries no time, and no timestamp \
         from a timestamp authority of the trust root dates the signature{0}"
    )]
    NoTimestamp(String),
    /// A timestamp authority's timestamp was refused.
    #[error("the signed timestamp is refused: {0}")]
    BadTimestamp(String),
    /// The log's signed entry timestamp does not verify.
    #[error(
        "the transparency-log entry's signed timestamp (SET) does not verify against the log's key"
    )]
    BadPromise,
    /// The log entry is about other bytes, another signature or another certificate.
    #[error("the transparency-log entry does not record this signature: {0}")]
    EntryMismatch(String),
    /// The log entry's time is outside the certificate's (or its CA's, or the log key's) validity.
    #[error("the entry was logged at {logged}, outside the validity of {what} ({from} to {to})")]
    OutsideValidity {
        /// When it was logged.
        logged: String,
        /// The certificate, CA or log key.
        what: String,
        /// Valid from.
        from: String,
        /// Valid until.
        to: String,
    },
    /// An attestation that does not name the artifact among the blobs it vouches for.
    #[error(
        "the attestation does not vouch for this artifact: none of its statement's {subjects} subject(s) has the digest {digest}"
    )]
    NotASubject {
        /// The artifact's digest.
        digest: String,
        /// How many subjects the statement names.
        subjects: usize,
    },
    /// The log has no entry for the artifact's digest (a detached signature looked up in Rekor).
    #[error(
        "the transparency log {log} has no entry for {digest}: the signature cannot be verified offline"
    )]
    NotLogged {
        /// The log asked.
        log: String,
        /// The artifact's digest.
        digest: String,
    },
    /// Signed, but by someone else.
    #[error("signed by {found}, not by {expected}")]
    WrongIdentity {
        /// The identities in the certificate.
        found: String,
        /// What the policy expects.
        expected: String,
    },
    /// The identity was vouched for by another OIDC issuer.
    #[error("the signer's identity was issued by {found}, not by {expected}")]
    WrongIssuer {
        /// The issuer in the certificate (or `no issuer`).
        found: String,
        /// What the policy expects.
        expected: String,
    },
    /// An OpenPGP keyring could not be read.
    #[error("the OpenPGP keyring {origin} is not valid: {message}")]
    Keyring {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The `.asc` is not an armored OpenPGP signature over data.
    #[error("the OpenPGP signature is malformed: {0}")]
    PgpMalformed(String),
    /// The signing key is not in the component's keyring.
    #[error("the signature was made by OpenPGP key {key}, which is not in the keyring {keyring}")]
    UnknownKey {
        /// The issuer's fingerprint (or key id), upper-case hex.
        key: String,
        /// The keyring.
        keyring: String,
    },
    /// The signature does not verify over these bytes.
    #[error("the OpenPGP signature by key {key} does not match the artifact's bytes")]
    PgpBadSignature {
        /// The signing key's fingerprint.
        key: String,
    },
    /// The key had expired when the signature was made.
    #[error(
        "the OpenPGP key {key} of the keyring {keyring} expired at {}, before the signature was made at {}",
        rfc3339(*expired),
        rfc3339(*signed)
    )]
    KeyExpired {
        /// The key's fingerprint.
        key: String,
        /// The keyring.
        keyring: String,
        /// When it expired (Unix seconds; times keep the error small).
        expired: i64,
        /// When the signature was made (Unix seconds).
        signed: i64,
    },
    /// The key is revoked.
    #[error("the OpenPGP key {key} of the keyring {keyring} is revoked ({reason})")]
    KeyRevoked {
        /// The key's fingerprint.
        key: String,
        /// The keyring.
        keyring: String,
        /// The revocation's reason.
        reason: String,
    },
    /// The key is in the keyring but may not sign (or not then).
    #[error("the OpenPGP key {key} of the keyring {keyring} may not make this signature: {why}")]
    NotSigningKey {
        /// The key's fingerprint.
        key: String,
        /// The keyring.
        keyring: String,
        /// Why not.
        why: String,
    },
    /// The signature hashes with a broken algorithm.
    #[error(
        "the OpenPGP signature uses {hash}, a hash too weak to trust (MD5, SHA-1 and RIPEMD-160 are refused)"
    )]
    WeakHash {
        /// The hash algorithm.
        hash: String,
    },
    /// The signature itself has expired.
    #[error("the OpenPGP signature expired at {at}")]
    SignatureExpired {
        /// When.
        at: String,
    },
    /// The artifact could not be read to check its signature.
    #[error("the artifact could not be read to check its OpenPGP signature: {0}")]
    PgpRead(String),
}

impl SigError {
    /// Whether this kbin could not evaluate the signature at all (a format, a log, a key or a
    /// timestamp authority its trust roots do not have, or material it cannot read), as opposed
    /// to one it checked that contradicts (other bytes, another signer, another statement, a
    /// forged proof). A pinned artifact is vouched for by its pin: only the second kind blocks
    /// it, so an older kbin meeting a newer log shard or maintainer key still installs it.
    pub fn unevaluable(&self) -> bool {
        matches!(
            self,
            SigError::Root { .. }
                | SigError::Malformed(_)
                | SigError::NoLogEntry { .. }
                | SigError::UnknownLog(_)
                | SigError::NoTimestamp(_)
                | SigError::Keyring { .. }
                | SigError::PgpMalformed(_)
                | SigError::UnknownKey { .. }
        )
    }
}

/// A verified signature, kept beside its blob (`Layout::signature_record` for a Sigstore
/// bundle, `Layout::openpgp_record` for an OpenPGP `.asc`): the signature as upstream published
/// it, where from, and who signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The signature's upstream URL (the bundle's, or the `.asc`'s).
    pub url: String,
    /// Who signed (as verified).
    pub signer: Policy,
    /// The bundle's (or the `.asc`'s) text.
    pub bundle: String,
}

impl Record {
    /// The record at `path`, if there is a readable one.
    pub fn load(path: &std::path::Path) -> Option<Record> {
        toml::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Write it at `path` (its directory made if need be): whole or not at all (a temporary
    /// file renamed), but not fsynced: a record lost in a crash only means the bundle is
    /// fetched and verified again, and an install should not pay a sync per artifact for it.
    pub fn save(&self, path: &std::path::Path) -> Result<(), crate::fsx::PathIo> {
        use crate::fsx::{PathIo, at};
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(at::<PathIo>("cannot create", d))?;
        }
        let text = toml::to_string(self).expect("a record serializes");
        let (mut file, tmp) = crate::fsx::temp_beside(path, 0o644)?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(at::<PathIo>("cannot write", path))?;
        drop(file);
        tmp.persist(path)
            .map_err(|e| at::<PathIo>("cannot rename into", path)(e.error))?;
        Ok(())
    }
}

/// Verify the OpenPGP detached signature `asc` (fetched from `url`) over the blob at `blob`
/// against the keyring `keyring` (its manifest name): the record to keep, whose signer is the
/// key's primary user id and, as issuer, its fingerprint and keyring
/// (`OpenPGP key C9C3…D386 (runc.keyring)`), or why not.
pub fn verify_asc(
    asc: &[u8],
    url: &str,
    keyring: &str,
    blob: &std::path::Path,
) -> Result<Record, SigError> {
    let ring = openpgp::Keyring::named(keyring)?;
    let file = std::fs::File::open(blob)
        .map_err(|e| SigError::PgpRead(format!("{}: {e}", blob.display())))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let v = ring.verify(asc, std::io::BufReader::with_capacity(1 << 16, file), now)?;
    Ok(Record {
        url: url.to_owned(),
        signer: Policy {
            identity: v.uid,
            issuer: openpgp_issuer(&v.fingerprint, keyring),
        },
        bundle: String::from_utf8_lossy(asc).into_owned(),
    })
}

/// What a verified OpenPGP signature records as its issuer: the primary key's fingerprint and
/// the keyring it is in, which a user can check against upstream's.
pub fn openpgp_issuer(fingerprint: &str, keyring: &str) -> String {
    format!("OpenPGP key {fingerprint} ({keyring}.keyring)")
}

/// The blob's sha256 from hex.
fn sha256_bytes(sha256: &str) -> Result<Vec<u8>, SigError> {
    hex::decode(sha256)
        .map_err(|_| SigError::Malformed(format!("{sha256:?} is not a sha256 in hex")))
}

/// Verify `bundle` (fetched from `url`) as `policy`'s signature over the blob with `sha256`,
/// against the active trust root: the record to keep, or why not. `sha256` is in hex (the
/// manifest's digest, which this module does not depend on). An attestation file
/// (`.intoto.jsonl`) may hold several bundles, one a line: the first that vouches for the blob
/// is kept.
pub fn verify_bundle(
    bundle: &[u8],
    url: &str,
    policy: &Policy,
    sha256: &str,
) -> Result<Record, SigError> {
    let raw = sha256_bytes(sha256)?;
    let root = TrustRoot::active()?;
    // One JSON document (pretty-printed or not), else JSON lines.
    let candidates: Vec<&[u8]> = if serde_json::from_slice::<serde::de::IgnoredAny>(bundle).is_ok()
    {
        vec![bundle]
    } else {
        bundle
            .split(|b| *b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .collect()
    };
    let mut refused: Vec<SigError> = Vec::new();
    for one in candidates {
        match Material::from_bundle(one).and_then(|m| verify_blob(&root, &m, &raw, policy)) {
            Ok(s) => {
                return Ok(Record {
                    url: url.to_owned(),
                    signer: Policy {
                        identity: s.identity,
                        issuer: s.issuer,
                    },
                    // The whole file, as published: a mirror export writes it back for
                    // every blob it vouches for, and each finds its own line again.
                    bundle: String::from_utf8_lossy(bundle).into_owned(),
                });
            }
            Err(e) => refused.push(e),
        }
    }
    // A line about other blobs says less than one about this blob that failed.
    let at = refused
        .iter()
        .position(|e| !matches!(e, SigError::NotASubject { .. }))
        .unwrap_or(0);
    if refused.is_empty() {
        return Err(SigError::Malformed("the signature file is empty".into()));
    }
    Err(refused.swap_remove(at))
}

/// Verify a detached signature (`sig`, `cert` as dl.k8s.io publishes them) as `policy`'s
/// signature over the blob with `sha256`, with the `entries` the log `log` holds for that
/// digest: the first entry that makes it verify is kept, as a cosign bundle recorded at
/// `bundle_url` (what install and mirror export then read). When none does, the error of the
/// first entry that records this signature (else of the first entry) says why.
pub fn verify_detached(
    sig: &[u8],
    cert: &[u8],
    entries: Vec<sigstore::LogEntry>,
    log: &str,
    bundle_url: &str,
    policy: &Policy,
    sha256: &str,
) -> Result<Record, SigError> {
    let raw = sha256_bytes(sha256)?;
    let root = TrustRoot::active()?;
    let mut m = Material::from_sig_cert(sig, cert, None)?;
    let mut refused: Vec<SigError> = Vec::new();
    for e in entries {
        m.entry = Some(e);
        match verify_blob(&root, &m, &raw, policy) {
            Ok(_) => {
                return verify_bundle(m.to_cosign_bundle().as_bytes(), bundle_url, policy, sha256);
            }
            Err(err) => refused.push(err),
        }
    }
    if refused.is_empty() {
        // Without an entry: the checks before the log's (chain, signature) still say what
        // is wrong with the files themselves; else the log has nothing.
        m.entry = None;
        return Err(match verify_blob(&root, &m, &raw, policy) {
            Err(SigError::NoLogEntry { .. }) | Ok(_) => SigError::NotLogged {
                log: log.to_owned(),
                digest: format!("sha256:{sha256}"),
            },
            Err(e) => e,
        });
    }
    let at = refused
        .iter()
        .position(|e| !matches!(e, SigError::EntryMismatch(_)))
        .unwrap_or(0);
    Err(refused.swap_remove(at))
}

/// RFC 3339 for a Unix time (for messages).
fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}
