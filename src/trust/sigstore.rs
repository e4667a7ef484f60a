//! Keyless (Fulcio + Rekor) signatures over a blob, verified offline.
//!
//! Accepted material:
//! - a Sigstore bundle (`application/vnd.dev.sigstore.bundle*+json`, v0.1 to v0.3): the
//!   certificate (or chain), the message signature, and the Rekor entry with its
//!   `inclusionPromise` (the signed entry timestamp);
//! - cosign's older `--bundle` JSON (`base64Signature`, `cert`, `rekorBundle`), which is also the
//!   shape of an image signature's `dev.sigstore.cosign/bundle` annotation;
//! - a bare `.sig` + `.cert` pair (as dl.k8s.io publishes): it has no log entry, so the
//!   certificate (valid ten minutes) cannot be checked offline and [`verify_blob`] refuses it
//!   with [`SigError::NoLogEntry`];
//! - an attestation: a Sigstore bundle whose signature is over a DSSE envelope holding an in-toto
//!   statement (as `actions/attest-build-provenance` makes for containerd's releases), logged as
//!   a `dsse` or `intoto` entry. It vouches for every blob its statement names by sha256, so the
//!   blob's digest must be one of the statement's subjects.
//!
//! The checks, in order, each with its own error: the certificate chains to a Fulcio CA of the
//! root; the signature is over the blob's sha256 (or over the envelope, whose statement names
//! that sha256) under the certificate's key; a Rekor entry
//! exists, from a log of the root, its SET verifies, its body records this digest, signature and
//! certificate, and its time is inside the certificate's, the CA's and the log key's validity;
//! the certificate's identity (SAN) and OIDC issuer are the policy's.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use serde::Deserialize;
use x509_parser::prelude::*;

use super::{Policy, SigError, TrustRoot, rfc3339};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Fulcio's OIDC issuer extension (v1: the raw string).
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// Fulcio's OIDC issuer extension (v2: a DER UTF8String).
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";

/// A Rekor entry as a bundle carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The canonicalized entry body, base64 (as the log signed it).
    pub body: String,
    /// When the log integrated it (Unix seconds).
    pub integrated_time: i64,
    /// Its index in the log.
    pub log_index: i64,
    /// The log's id (sha256 of its key).
    pub log_id: Vec<u8>,
    /// The signed entry timestamp: the log's signature over the canonical JSON of the above
    /// (Rekor v1); empty for a Rekor v2 entry, which has `proof` instead.
    pub set: Vec<u8>,
    /// A Rekor v2 entry's inclusion proof, with the log's signed checkpoint.
    pub proof: Option<InclusionProof>,
}

pub use super::inclusion::InclusionProof;

/// A signature over a blob with what is needed to check it offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// The signing (leaf) certificate, DER.
    pub cert: Vec<u8>,
    /// The signature (ASN.1 DER ECDSA).
    pub signature: Vec<u8>,
    /// The transparency-log entry, if the material has one.
    pub entry: Option<LogEntry>,
    /// For an attestation, the DSSE envelope the signature is over; none when the signature
    /// is over the blob itself.
    pub envelope: Option<Envelope>,
    /// RFC 3161 timestamps over the signature (DER `TimeStampResp`s): what dates a Rekor v2
    /// entry.
    pub timestamps: Vec<Vec<u8>>,
}

/// A DSSE envelope's signed content: an in-toto statement naming the blobs it vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The payload's type (`application/vnd.in-toto+json`).
    pub payload_type: String,
    /// The payload (the statement's JSON), decoded.
    pub payload: Vec<u8>,
}

/// The payload type of an in-toto statement.
const IN_TOTO: &str = "application/vnd.in-toto+json";

impl Envelope {
    /// DSSE's pre-authentication encoding: what the signature is over.
    fn pae(&self) -> Vec<u8> {
        let mut out = format!(
            "DSSEv1 {} {} {} ",
            self.payload_type.len(),
            self.payload_type,
            self.payload.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.payload);
        out
    }

    /// The statement's subject that has sha256 `sha256` (hex), or why there is none.
    fn subject(&self, sha256: &str) -> Result<String, SigError> {
        if self.payload_type != IN_TOTO {
            return Err(malformed(format!(
                "the envelope holds a {:?}, not an in-toto statement",
                self.payload_type
            )));
        }
        #[derive(Deserialize)]
        struct Statement {
            #[serde(rename = "_type")]
            kind: String,
            subject: Vec<Subject>,
        }
        #[derive(Deserialize)]
        struct Subject {
            #[serde(default)]
            name: String,
            digest: std::collections::BTreeMap<String, String>,
        }
        let st: Statement = serde_json::from_slice(&self.payload).map_err(|e| {
            malformed(format!(
                "the envelope's statement is not in-toto JSON ({e})"
            ))
        })?;
        if !st.kind.starts_with("https://in-toto.io/Statement/") {
            return Err(malformed(format!(
                "the envelope's statement has type {:?}, not an in-toto statement",
                st.kind
            )));
        }
        st.subject
            .iter()
            .find(|s| {
                s.digest
                    .get("sha256")
                    .is_some_and(|d| d.eq_ignore_ascii_case(sha256))
            })
            .map(|s| s.name.clone())
            .ok_or_else(|| SigError::NotASubject {
                digest: format!("sha256:{sha256}"),
                subjects: st.subject.len(),
            })
    }
}

/// Who signed, as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The certificate's identity (the SAN the policy matched).
    pub identity: String,
    /// Its OIDC issuer.
    pub issuer: String,
    /// When the log recorded the signature (Unix seconds).
    pub integrated_time: i64,
    /// Its index in the log.
    pub log_index: i64,
}

fn malformed(what: impl Into<String>) -> SigError {
    SigError::Malformed(what.into())
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, SigError> {
    B64.decode(s.trim())
        .map_err(|e| malformed(format!("{what} is not base64 ({e})")))
}

/// DER from PEM text, or the bytes themselves if they are DER already.
fn cert_der(bytes: &[u8]) -> Result<Vec<u8>, SigError> {
    if bytes.starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(bytes)
            .map_err(|e| malformed(format!("the certificate is not PEM ({e})")))?;
        Ok(pem.contents)
    } else {
        Ok(bytes.to_vec())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    #[serde(default)]
    media_type: String,
    verification_material: Option<VerificationMaterial>,
    message_signature: Option<MessageSignature>,
    dsse_envelope: Option<DsseEnvelope>,
    // cosign's older --bundle shape
    base64_signature: Option<String>,
    cert: Option<String>,
    rekor_bundle: Option<RekorBundle>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    certificate: Option<RawBytes>,
    x509_certificate_chain: Option<Chain>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntry>,
    timestamp_verification_data: Option<TimestampData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimestampData {
    #[serde(default)]
    rfc3161_timestamps: Vec<SignedTimestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedTimestamp {
    signed_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct Chain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntry {
    log_index: StrOrInt,
    log_id: KeyId,
    // Protobuf JSON leaves out a zero: a Rekor v2 entry has no time.
    #[serde(default)]
    integrated_time: Option<StrOrInt>,
    inclusion_promise: Option<Promise>,
    inclusion_proof: Option<WireProof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireProof {
    log_index: StrOrInt,
    root_hash: String,
    tree_size: StrOrInt,
    #[serde(default)]
    hashes: Vec<String>,
    checkpoint: Option<Checkpoint>,
}

#[derive(Deserialize)]
struct Checkpoint {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Promise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageSignature {
    signature: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DsseEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<DsseSignature>,
}

#[derive(Deserialize)]
struct DsseSignature {
    sig: String,
}

#[derive(Deserialize)]
struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// Protobuf JSON writes int64 as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrInt {
    S(String),
    I(i64),
}

impl StrOrInt {
    fn get(&self, what: &str) -> Result<i64, SigError> {
        match self {
            StrOrInt::I(i) => Ok(*i),
            StrOrInt::S(s) => s
                .parse()
                .map_err(|_| malformed(format!("{what} {s:?} is not an integer"))),
        }
    }
}

/// A bundle's signing certificate (DER): the certificate, or the chain's first.
fn bundle_cert(vm: &VerificationMaterial) -> Result<Vec<u8>, SigError> {
    match (&vm.certificate, &vm.x509_certificate_chain) {
        (Some(c), _) => b64(&c.raw_bytes, "the certificate"),
        (None, Some(ch)) => b64(
            &ch.certificates
                .first()
                .ok_or_else(|| malformed("an empty certificate chain"))?
                .raw_bytes,
            "the certificate",
        ),
        (None, None) => Err(malformed(
            "the bundle has no certificate (a public-key bundle is not keyless)",
        )),
    }
}

/// What a bundle's signature is over: the blob (a message signature), or a DSSE envelope.
fn signed_content(
    message: Option<MessageSignature>,
    envelope: Option<DsseEnvelope>,
) -> Result<(Vec<u8>, Option<Envelope>), SigError> {
    match (message, envelope) {
        (Some(ms), None) => Ok((b64(&ms.signature, "the signature")?, None)),
        (None, Some(env)) => {
            // A keyless attestation is signed once; several signatures would each need their
            // own certificate, which a bundle cannot carry.
            let [sig] = env.signatures.as_slice() else {
                return Err(malformed(format!(
                    "the DSSE envelope has {} signatures, not one",
                    env.signatures.len()
                )));
            };
            Ok((
                b64(&sig.sig, "the envelope's signature")?,
                Some(Envelope {
                    payload_type: env.payload_type,
                    payload: b64(&env.payload, "the envelope's payload")?,
                }),
            ))
        }
        (Some(_), Some(_)) => Err(malformed(
            "the bundle has both a message signature and a DSSE envelope",
        )),
        (None, None) => Err(malformed(
            "the bundle has neither a message signature nor a DSSE envelope",
        )),
    }
}

/// The log entry to check a bundle by: a Rekor v1 entry by its promise (SET), else a Rekor v2
/// entry by its inclusion proof and signed checkpoint. An entry with neither: as good as none.
fn bundle_entry(entries: &[TlogEntry]) -> Result<Option<LogEntry>, SigError> {
    let Some(e) = entries
        .iter()
        .find(|e| e.inclusion_promise.is_some())
        .or_else(|| {
            entries.iter().find(|e| {
                e.inclusion_proof
                    .as_ref()
                    .is_some_and(|p| p.checkpoint.is_some())
            })
        })
    else {
        return Ok(None);
    };
    let (set, proof) = match (&e.inclusion_promise, &e.inclusion_proof) {
        (Some(p), _) => (
            b64(&p.signed_entry_timestamp, "the signed entry timestamp")?,
            None,
        ),
        (None, Some(p)) => (Vec::new(), Some(inclusion_proof(p)?)),
        // Found by its promise or its proof: not reached.
        (None, None) => return Ok(None),
    };
    Ok(Some(LogEntry {
        body: e.canonicalized_body.clone(),
        integrated_time: match &e.integrated_time {
            Some(t) => t.get("integratedTime")?,
            None => 0,
        },
        log_index: e.log_index.get("logIndex")?,
        log_id: b64(&e.log_id.key_id, "the log id")?,
        set,
        proof,
    }))
}

/// A Rekor v2 entry's inclusion proof, decoded.
fn inclusion_proof(p: &WireProof) -> Result<InclusionProof, SigError> {
    let count = |v: &StrOrInt, what: &str| {
        u64::try_from(v.get(what)?).map_err(|_| malformed(format!("{what} is negative")))
    };
    Ok(InclusionProof {
        log_index: count(&p.log_index, "the proof's logIndex")?,
        tree_size: count(&p.tree_size, "the proof's treeSize")?,
        root_hash: b64(&p.root_hash, "the proof's root hash")?,
        hashes: p
            .hashes
            .iter()
            .map(|h| b64(h, "a proof hash"))
            .collect::<Result<_, _>>()?,
        checkpoint: p
            .checkpoint
            .as_ref()
            .map(|c| c.envelope.clone())
            .unwrap_or_default(),
    })
}

/// cosign's older `--bundle` JSON (`base64Signature`, `cert`, `rekorBundle`).
fn cosign_bundle(b: Bundle) -> Result<Material, SigError> {
    let (Some(sig), Some(cert)) = (&b.base64_signature, &b.cert) else {
        return Err(malformed(
            "neither a Sigstore bundle nor a cosign bundle (no signature and certificate)",
        ));
    };
    let cert = cert_der(&b64(cert, "the certificate")?)?;
    let entry = b
        .rekor_bundle
        .map(|r| -> Result<LogEntry, SigError> {
            Ok(LogEntry {
                body: r.payload.body,
                integrated_time: r.payload.integrated_time,
                log_index: r.payload.log_index,
                log_id: hex::decode(&r.payload.log_id)
                    .map_err(|_| malformed("the log id is not hex"))?,
                set: b64(&r.set, "the signed entry timestamp")?,
                proof: None,
            })
        })
        .transpose()?;
    Ok(Material {
        cert,
        signature: b64(sig, "the signature")?,
        entry,
        envelope: None,
        timestamps: Vec::new(),
    })
}

impl Material {
    /// From a Sigstore bundle or cosign's older `--bundle` JSON.
    pub fn from_bundle(json: &[u8]) -> Result<Material, SigError> {
        let b: Bundle = serde_json::from_slice(json)
            .map_err(|e| malformed(format!("not a Sigstore bundle ({e})")))?;
        match b.verification_material {
            Some(vm) => {
                if !b
                    .media_type
                    .starts_with("application/vnd.dev.sigstore.bundle")
                {
                    return Err(malformed(format!(
                        "unknown bundle media type {:?}",
                        b.media_type
                    )));
                }
                let (signature, envelope) = signed_content(b.message_signature, b.dsse_envelope)?;
                Ok(Material {
                    cert: bundle_cert(&vm)?,
                    signature,
                    entry: bundle_entry(&vm.tlog_entries)?,
                    envelope,
                    timestamps: vm
                        .timestamp_verification_data
                        .map(|t| t.rfc3161_timestamps)
                        .unwrap_or_default()
                        .iter()
                        .map(|t| b64(&t.signed_timestamp, "a signed timestamp"))
                        .collect::<Result<_, _>>()?,
                })
            }
            None => cosign_bundle(b),
        }
    }

    /// From a `.sig` (base64) and a `.cert` (base64 of PEM, or PEM), as dl.k8s.io publishes
    /// them; `entry` is a log entry found elsewhere, if any.
    pub fn from_sig_cert(
        sig: &[u8],
        cert: &[u8],
        entry: Option<LogEntry>,
    ) -> Result<Material, SigError> {
        let text = |b: &[u8], what: &str| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| malformed(format!("the {what} is not text")))
        };
        let cert = text(cert, "certificate")?;
        let cert = if cert.trim_start().starts_with("-----BEGIN") {
            cert_der(cert.trim_start().as_bytes())?
        } else {
            cert_der(&b64(&cert, "the certificate")?)?
        };
        Ok(Material {
            cert,
            signature: b64(&text(sig, "signature")?, "the signature")?,
            entry,
            envelope: None,
            timestamps: Vec::new(),
        })
    }
}

impl Material {
    /// As cosign's `--bundle` JSON (`base64Signature`, `cert`, `rekorBundle`), which
    /// [`Material::from_bundle`] reads back: how `kbin update` keeps a detached signature with
    /// the Rekor entry it looked up, so install and mirror export treat it as any bundle.
    pub fn to_cosign_bundle(&self) -> String {
        let mut b = serde_json::json!({
            "base64Signature": B64.encode(&self.signature),
            "cert": B64.encode(&self.cert),
        });
        if let Some(e) = &self.entry {
            b["rekorBundle"] = serde_json::json!({
                "SignedEntryTimestamp": B64.encode(&e.set),
                "Payload": {
                    "body": e.body,
                    "integratedTime": e.integrated_time,
                    "logIndex": e.log_index,
                    "logID": hex::encode(&e.log_id),
                },
            });
        }
        b.to_string()
    }
}

/// The verification algorithm for an EC SubjectPublicKeyInfo (P-256 or P-384), whether it is
/// P-256 (whose signatures are over sha256), and the key's raw point.
fn ec_key<'a>(
    spki: &'a SubjectPublicKeyInfo<'a>,
    what: &str,
) -> Result<(&'static dyn VerificationAlgorithm, bool, &'a [u8]), SigError> {
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let alg: &'static dyn VerificationAlgorithm = match curve.as_deref() {
        Some("1.2.840.10045.3.1.7") => &signature::ECDSA_P256_SHA256_ASN1,
        Some("1.3.132.0.34") => &signature::ECDSA_P384_SHA384_ASN1,
        other => {
            return Err(malformed(format!(
                "{what} is not an ECDSA P-256 or P-384 key ({})",
                other.unwrap_or("no curve")
            )));
        }
    };
    let p256 = curve.as_deref() == Some("1.2.840.10045.3.1.7");
    Ok((alg, p256, spki.subject_public_key.data.as_ref()))
}

/// The identities (SAN emails and URIs) of a certificate.
fn identities(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::RFC822Name(s) | GeneralName::URI(s) => Some((*s).to_owned()),
            _ => None,
        })
        .collect()
}

/// Fulcio's OIDC issuer extension (the v2 DER form, else the v1 raw form).
fn oidc_issuer(cert: &X509Certificate<'_>) -> Option<String> {
    let ext = |oid: &str| {
        cert.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .map(|e| e.value)
    };
    if let Some(v) = ext(OID_ISSUER_V2)
        && let Ok((_, s)) = x509_parser::asn1_rs::Utf8String::from_der(v)
    {
        return Some(s.string());
    }
    ext(OID_ISSUER_V1).and_then(|v| std::str::from_utf8(v).ok().map(str::to_owned))
}

/// The CA of `root` whose chain issued `leaf` (every link's signature checked), if any.
fn chain_to_root<'r>(
    root: &'r TrustRoot,
    leaf: &X509Certificate<'_>,
) -> Option<&'r super::root::CertAuthority> {
    root.cas.iter().find(|ca| {
        let parsed: Vec<X509Certificate<'_>> = match ca
            .chain
            .iter()
            .map(|d| X509Certificate::from_der(d).map(|(_, c)| c))
            .collect()
        {
            Ok(p) => p,
            Err(_) => return false,
        };
        let mut child = leaf;
        for issuer in &parsed {
            if child.verify_signature(Some(issuer.public_key())).is_err() {
                return false;
            }
            child = issuer;
        }
        true
    })
}

/// A log's key as a check of (message, signature): ECDSA (Rekor v1, and v2 logs may be) or
/// Ed25519 (Rekor v2's checkpoints).
fn log_key<'a>(
    spki: &'a SubjectPublicKeyInfo<'a>,
) -> Result<impl Fn(&[u8], &[u8]) -> bool + 'a, SigError> {
    let alg: &'static dyn VerificationAlgorithm =
        if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" {
            &signature::ED25519
        } else {
            ec_key(spki, "the log's key")?.0
        };
    let key = spki.subject_public_key.data.as_ref();
    Ok(move |msg: &[u8], sig: &[u8]| UnparsedPublicKey::new(alg, key).verify(msg, sig).is_ok())
}

/// The canonical JSON a Rekor SET signs: keys sorted, no spaces.
fn set_payload(e: &LogEntry) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "body": e.body,
        "integratedTime": e.integrated_time,
        "logID": hex::encode(&e.log_id),
        "logIndex": e.log_index,
    }))
    .expect("a JSON object serializes")
}

/// Verify `m` as a signature over the blob whose sha256 is `sha256` (32 bytes), by `policy`'s
/// signer, with nothing but `root`.
pub fn verify_blob(
    root: &TrustRoot,
    m: &Material,
    sha256: &[u8],
    policy: &Policy,
) -> Result<Signer, SigError> {
    let digest_name = format!("sha256:{}", hex::encode(sha256));
    let (_, leaf) = X509Certificate::from_der(&m.cert)
        .map_err(|e| malformed(format!("the certificate is not X.509 DER ({e})")))?;
    // 1. Issued by a Fulcio CA of the root.
    let ca = chain_to_root(root, &leaf).ok_or_else(|| SigError::UntrustedCertificate {
        issuer: leaf.issuer().to_string(),
    })?;
    // A Fulcio signing certificate is for code signing, never a CA.
    let code_signing = matches!(leaf.extended_key_usage(), Ok(Some(e)) if e.value.code_signing);
    if !code_signing || leaf.is_ca() {
        return Err(malformed(
            "the signing certificate is not a code-signing leaf certificate",
        ));
    }
    // 2. The signature is over these bytes (or over an envelope naming them), under the
    //    certificate's key.
    let (alg, p256, key) = ec_key(leaf.public_key(), "the certificate's key")?;
    let bad = || SigError::BadSignature {
        digest: digest_name.clone(),
    };
    match &m.envelope {
        None => {
            if !p256 {
                return Err(malformed(
                    "only P-256 signing keys are supported for blobs (their signatures are over sha256)",
                ));
            }
            let d = aws_lc_rs::digest::Digest::import_less_safe(sha256, &aws_lc_rs::digest::SHA256)
                .map_err(|_| malformed("the artifact's digest is not a sha256"))?;
            UnparsedPublicKey::new(alg, key)
                .verify_digest(&d, &m.signature)
                .map_err(|_| bad())?;
        }
        Some(env) => {
            UnparsedPublicKey::new(alg, key)
                .verify(&env.pae(), &m.signature)
                .map_err(|_| bad())?;
        }
    }
    // 3. A log entry vouches that the certificate was valid when the signature was made.
    let not_after = leaf.validity().not_after.timestamp();
    let Some(entry) = &m.entry else {
        return Err(SigError::NoLogEntry {
            not_after: rfc3339(not_after),
        });
    };
    let (t, log) = logged(root, m, entry, sha256)?;
    let outside = |what: &str, w: super::root::Window| {
        let (from, to) = w.describe();
        SigError::OutsideValidity {
            logged: rfc3339(t),
            what: what.to_owned(),
            from,
            to,
        }
    };
    let cert_window = super::root::Window {
        start: leaf.validity().not_before.timestamp(),
        end: Some(not_after),
    };
    if !cert_window.contains(t) {
        return Err(outside("the signing certificate", cert_window));
    }
    if !ca.valid.contains(t) {
        return Err(outside(&format!("the CA {}", ca.uri), ca.valid));
    }
    if !log.valid.contains(t) {
        return Err(outside(&format!("the log key of {}", log.url), log.valid));
    }
    // 4. The signer the policy names.
    let who = signer(&leaf, policy, t, entry.log_index)?;
    // 5. An attestation, verified, vouches only for the blobs its statement names.
    if let Some(env) = &m.envelope {
        env.subject(&hex::encode(sha256))?;
    }
    Ok(who)
}

/// When `entry` says `m` was logged, by which log of `root`, once the log vouches for the entry
/// and the entry records `m`: Rekor v1 by the log's promise (SET), which dates it too; Rekor v2
/// by an inclusion proof to a checkpoint the log signed, the entry having no time, dated by a
/// timestamp authority's timestamp over the signature.
fn logged<'r>(
    root: &'r TrustRoot,
    m: &Material,
    entry: &LogEntry,
    sha256: &[u8],
) -> Result<(i64, &'r super::root::LogKey), SigError> {
    let log = root
        .logs
        .iter()
        .find(|l| l.id == entry.log_id)
        .ok_or_else(|| SigError::UnknownLog(hex::encode(&entry.log_id)))?;
    let (_, log_spki) = SubjectPublicKeyInfo::from_der(&log.spki)
        .map_err(|e| malformed(format!("the log key of {} is not DER ({e})", log.url)))?;
    let log_key = log_key(&log_spki)?;
    let Some(proof) = &entry.proof else {
        if !log_key(&set_payload(entry), &entry.set) {
            return Err(SigError::BadPromise);
        }
        check_body(entry, m, sha256)?;
        return Ok((entry.integrated_time, log));
    };
    super::inclusion::verify(&entry.body, proof, &log.id, &log_key)?;
    check_body_v2(entry, m, sha256)?;
    let mut why = String::new();
    for ts in &m.timestamps {
        match super::tsa::verify(root, ts, &m.signature) {
            Ok(t) => return Ok((t, log)),
            Err(e) if why.is_empty() => why = format!(" ({e})"),
            Err(_) => {}
        }
    }
    Err(SigError::NoTimestamp(why))
}

/// The signer of `leaf`, logged in `entry`, if it is the one `policy` names (identity and OIDC
/// issuer).
fn signer(
    leaf: &X509Certificate<'_>,
    policy: &Policy,
    time: i64,
    log_index: i64,
) -> Result<Signer, SigError> {
    let ids = identities(leaf);
    let Some(identity) = ids.iter().find(|i| **i == policy.identity) else {
        return Err(SigError::WrongIdentity {
            found: if ids.is_empty() {
                "a certificate without an email or URI identity".to_owned()
            } else {
                ids.join(", ")
            },
            expected: policy.identity.clone(),
        });
    };
    let issuer = oidc_issuer(leaf);
    if issuer.as_deref() != Some(policy.issuer.as_str()) {
        return Err(SigError::WrongIssuer {
            found: issuer.unwrap_or_else(|| "no issuer".to_owned()),
            expected: policy.issuer.clone(),
        });
    }
    Ok(Signer {
        identity: identity.clone(),
        issuer: policy.issuer.clone(),
        integrated_time: time,
        log_index,
    })
}

/// The entry's body records this signature and this certificate, over this digest (a
/// `hashedrekord`) or this envelope (a `dsse` or an `intoto` entry).
fn check_body(entry: &LogEntry, m: &Material, sha256: &[u8]) -> Result<(), SigError> {
    let body = b64(&entry.body, "the log entry's body")?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| malformed("the log entry's body is not JSON"))?;
    match (&m.envelope, v["kind"].as_str(), v["apiVersion"].as_str()) {
        (None, Some("hashedrekord"), _) => check_hashedrekord(&v, m, sha256),
        (Some(env), Some("dsse"), Some("0.0.1")) => check_dsse(&v["spec"], m, env),
        (Some(env), Some("intoto"), Some("0.0.2")) => check_intoto(&v["spec"]["content"], m, env),
        (None, kind, _) => Err(malformed(format!(
            "the log entry is a {}, not a hashedrekord",
            kind.unwrap_or("body without a kind")
        ))),
        (Some(_), kind, version) => Err(malformed(format!(
            "the log entry is a {} {}, not a dsse 0.0.1 or intoto 0.0.2 entry",
            kind.unwrap_or("body without a kind"),
            version.unwrap_or("")
        ))),
    }
}

/// A Rekor v2 entry is a `hashedrekord` 0.0.2 of the digest signed (the blob's sha256, or
/// for an envelope the sha256 of its PAE), this signature and this certificate.
fn check_body_v2(entry: &LogEntry, m: &Material, sha256: &[u8]) -> Result<(), SigError> {
    let body = b64(&entry.body, "the log entry's body")?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| malformed("the log entry's body is not JSON"))?;
    if v["kind"] != "hashedrekord" || v["apiVersion"] != "0.0.2" {
        return Err(malformed(format!(
            "the Rekor v2 entry is a {} {}, not a hashedrekord 0.0.2",
            v["kind"], v["apiVersion"]
        )));
    }
    let spec = &v["spec"]["hashedRekordV002"];
    let signed = match &m.envelope {
        None => sha256.to_vec(),
        Some(env) => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &env.pae())
            .as_ref()
            .to_vec(),
    };
    let digest = spec["data"]["digest"]
        .as_str()
        .map(|d| b64(d, "the logged digest"))
        .transpose()?;
    if spec["data"]["algorithm"] != "SHA2_256" || digest.as_deref() != Some(signed.as_slice()) {
        return Err(SigError::EntryMismatch(
            if m.envelope.is_some() {
                "it is about another statement"
            } else {
                "it is about other bytes"
            }
            .into(),
        ));
    }
    let sig = spec["signature"]["content"]
        .as_str()
        .map(|s| b64(s, "the logged signature"))
        .transpose()?;
    if sig.as_deref() != Some(m.signature.as_slice()) {
        return Err(SigError::EntryMismatch(
            "it records another signature".into(),
        ));
    }
    let cert = spec["signature"]["verifier"]["x509Certificate"]["rawBytes"]
        .as_str()
        .map(|c| b64(c, "the logged certificate"))
        .transpose()?;
    if cert.as_deref() != Some(m.cert.as_slice()) {
        return Err(SigError::EntryMismatch(
            "it records another certificate".into(),
        ));
    }
    Ok(())
}

/// A `dsse` 0.0.1 entry records the payload's sha256 and each signature with its verifier
/// (base64 of the PEM certificate).
fn check_dsse(spec: &serde_json::Value, m: &Material, env: &Envelope) -> Result<(), SigError> {
    check_payload_hash(&spec["payloadHash"], env)?;
    let one = only_signature(&spec["signatures"])?;
    check_logged_signature(
        one["signature"]
            .as_str()
            .map(|s| b64(s, "the logged signature"))
            .transpose()?,
        one["verifier"].as_str(),
        m,
    )
}

/// An `intoto` 0.0.2 entry records the payload's sha256 and the envelope's signatures, each
/// base64 twice over (the envelope's own encoding, then the entry's), with its public key.
fn check_intoto(content: &serde_json::Value, m: &Material, env: &Envelope) -> Result<(), SigError> {
    check_payload_hash(&content["payloadHash"], env)?;
    if content["envelope"]["payloadType"].as_str() != Some(env.payload_type.as_str()) {
        return Err(SigError::EntryMismatch(
            "it records another payload type".into(),
        ));
    }
    let one = only_signature(&content["envelope"]["signatures"])?;
    let sig = match one["sig"].as_str() {
        Some(s) => {
            let inner = b64(s, "the logged signature")?;
            let inner = String::from_utf8(inner)
                .map_err(|_| malformed("the logged signature is not base64 text"))?;
            Some(b64(&inner, "the logged signature")?)
        }
        None => None,
    };
    check_logged_signature(sig, one["publicKey"].as_str(), m)
}

/// The one signature a log entry of a keyless envelope records.
fn only_signature(sigs: &serde_json::Value) -> Result<&serde_json::Value, SigError> {
    match sigs.as_array().map(Vec::as_slice).unwrap_or_default() {
        [one] => Ok(one),
        sigs => Err(SigError::EntryMismatch(format!(
            "it records {} signatures, not this one",
            sigs.len()
        ))),
    }
}

/// The logged payload hash is the sha256 of this envelope's payload.
fn check_payload_hash(hash: &serde_json::Value, env: &Envelope) -> Result<(), SigError> {
    let want = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &env.payload,
    ));
    if hash["algorithm"] != "sha256" || hash["value"].as_str() != Some(want.as_str()) {
        return Err(SigError::EntryMismatch(
            "it is about another statement".into(),
        ));
    }
    Ok(())
}

/// The logged signature and certificate (base64 of PEM) are this material's.
fn check_logged_signature(
    sig: Option<Vec<u8>>,
    cert_b64_pem: Option<&str>,
    m: &Material,
) -> Result<(), SigError> {
    if sig.as_deref() != Some(m.signature.as_slice()) {
        return Err(SigError::EntryMismatch(
            "it records another signature".into(),
        ));
    }
    let cert = cert_b64_pem
        .map(|s| b64(s, "the logged certificate"))
        .transpose()?
        .map(|pem| cert_der(&pem))
        .transpose()?;
    if cert.as_deref() != Some(m.cert.as_slice()) {
        return Err(SigError::EntryMismatch(
            "it records another certificate".into(),
        ));
    }
    Ok(())
}

/// A `hashedrekord` entry records this digest, this signature and this certificate.
fn check_hashedrekord(v: &serde_json::Value, m: &Material, sha256: &[u8]) -> Result<(), SigError> {
    let spec = &v["spec"];
    if spec["data"]["hash"]["algorithm"] != "sha256"
        || spec["data"]["hash"]["value"].as_str() != Some(hex::encode(sha256).as_str())
    {
        return Err(SigError::EntryMismatch("it is about other bytes".into()));
    }
    check_logged_signature(
        spec["signature"]["content"]
            .as_str()
            .map(|s| b64(s, "the logged signature"))
            .transpose()?,
        spec["signature"]["publicKey"]["content"].as_str(),
        m,
    )
}

#[cfg(test)]
pub(crate) mod tests;
