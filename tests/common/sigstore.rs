//! A Sigstore-shaped trust root made in the test, as sigstore's own test suites make one: a test
//! Fulcio CA (P-384, like Fulcio's), a test Rekor key (P-256), and keyless signatures over blobs:
//! a short-lived (ten-minute, long expired) certificate for an identity and OIDC issuer, the
//! signature, and a Rekor `hashedrekord` entry with its signed entry timestamp (SET).
//!
//! Shared by the unit tests of `src/trust` (through `#[path]`) and the integration tests, so it
//! uses only crates both have (rcgen, serde_json, base64, sha2, hex, time).

#![allow(dead_code)] // each user takes what it needs

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PublicKeyData, SanType, SigningKey,
};
use sha2::Digest as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Kubernetes' release signer, as the manifest's policy names it.
pub const K8S_IDENTITY: &str = "krel-staging@k8s-releng-prod.iam.gserviceaccount.com";
/// Its OIDC issuer.
pub const K8S_ISSUER: &str = "https://accounts.google.com";

/// `manifest` (toolchains.toml text) with a Sigstore bundle beside each Kubernetes binary
/// (`<binary>.sigstore.json`) and the Kubernetes release signer.
pub fn sign_kubernetes_in(manifest: &str) -> String {
    let sum = "checksum-url = \"https://dl.k8s.io/release/v{version}/bin/linux/{arch}/{binary}.sha256\"\n";
    assert_eq!(manifest.matches(sum).count(), 1);
    // The real manifest names dl.k8s.io's detached signatures and their signer: a bundle
    // replaces the first, and the signer is named once.
    let manifest: String = manifest
        .lines()
        .filter(|l| {
            !l.starts_with("detached = ")
                && !l.starts_with(&format!("signer = {{ identity = \"{K8S_IDENTITY}\""))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    manifest
        .replacen(
            sum,
            &format!(
                "{sum}signature = \"https://dl.k8s.io/release/v{{version}}/bin/linux/{{arch}}/{{binary}}.sigstore.json\"\n"
            ),
            1,
        )
        .replacen(
            "name = \"kubernetes\"\n",
            &format!(
                "name = \"kubernetes\"\nsigner = {{ identity = \"{K8S_IDENTITY}\", issuer = \"{K8S_ISSUER}\" }}\n"
            ),
            1,
        )
}

/// A Fulcio-like CA.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// Its self-signed certificate (DER).
    pub der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA named `name`, valid from a day ago for a year.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "sigstore.test");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let der = params.self_signed(&key).expect("self-sign").der().to_vec();
        TestCa { params, key, der }
    }
}

/// What to put in one signature (each field a way to make it wrong).
#[derive(Clone, Debug)]
pub struct Sign {
    /// The certificate's SAN (an email, or a URI when it has a scheme).
    pub identity: String,
    /// The OIDC issuer extension.
    pub issuer: String,
    /// Include the Rekor entry (with its SET).
    pub log_entry: bool,
    /// Sign these bytes instead of the blob (the entry still names the blob).
    pub other_bytes: Option<Vec<u8>>,
    /// Seconds after the certificate's notBefore that the entry was logged (valid: 0–600).
    pub logged_after: i64,
}

impl Default for Sign {
    fn default() -> Self {
        Sign {
            identity: K8S_IDENTITY.to_owned(),
            issuer: K8S_ISSUER.to_owned(),
            log_entry: true,
            other_bytes: None,
            logged_after: 60,
        }
    }
}

/// How Rekor logs an attestation: `dsse` 0.0.1 (what actions/attest-build-provenance asks
/// for) or `intoto` 0.0.2 (npm's provenance, cosign's older attestations).
#[derive(Clone, Copy, Debug)]
pub enum Logged {
    /// A `dsse` 0.0.1 entry.
    Dsse,
    /// An `intoto` 0.0.2 entry.
    Intoto,
}

/// The signature files of one blob.
pub struct Signed {
    /// The Sigstore bundle (v0.3), as `.sigstore.json` holds it.
    pub bundle: String,
    /// cosign's older `--bundle` JSON (the shape of an image's `dev.sigstore.cosign/bundle`).
    pub cosign_bundle: String,
    /// `.sig`: the base64 signature.
    pub sig: String,
    /// `.cert`: base64 of the PEM certificate (as dl.k8s.io publishes it).
    pub cert: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its Rekor entry as `GET /api/v1/log/entries/{uuid}` answers it (without the UUID key),
    /// when it has one.
    pub rekor_entry: Option<serde_json::Value>,
}

/// A test Sigstore: its Fulcio CA, its Rekor key, and a CA that is not in its root.
pub struct TestSigstore {
    /// The trusted Fulcio CA.
    pub fulcio: TestCa,
    /// A CA of the same shape that the root does not name.
    pub stranger: TestCa,
    rekor: KeyPair,
    /// The Rekor log id (sha256 of its key).
    pub log_id: Vec<u8>,
}

impl Default for TestSigstore {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSigstore {
    /// A fresh test Fulcio CA and Rekor key.
    pub fn new() -> TestSigstore {
        let rekor = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("rekor key");
        let log_id = sha2::Sha256::digest(rekor.subject_public_key_info()).to_vec();
        TestSigstore {
            fulcio: TestCa::new("fulcio.test"),
            stranger: TestCa::new("fulcio.test"),
            rekor,
            log_id,
        }
    }

    /// The `trusted_root.json` naming the test Fulcio CA and Rekor key.
    pub fn trusted_root(&self) -> String {
        let start = "2020-01-01T00:00:00Z";
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": B64.encode(self.rekor.subject_public_key_info()),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start}
                },
                "logId": {"keyId": B64.encode(&self.log_id)}
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "sigstore.test", "commonName": "fulcio.test"},
                "uri": "https://fulcio.test",
                "certChain": {"certificates": [{"rawBytes": B64.encode(&self.fulcio.der)}]},
                "validFor": {"start": start}
            }],
            "ctlogs": [],
            "timestampAuthorities": []
        })
        .to_string()
    }

    /// Sign `blob` as `s` says, with the trusted CA.
    pub fn sign(&self, blob: &[u8], s: &Sign) -> Signed {
        self.sign_with(&self.fulcio, blob, s)
    }

    /// A Fulcio-like leaf certificate from `ca` for `s`'s identity and issuer, its key, and its
    /// notBefore.
    fn leaf(&self, ca: &TestCa, s: &Sign) -> (KeyPair, rcgen::Certificate, time::OffsetDateTime) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("signing key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        p.subject_alt_names = vec![if s.identity.contains("://") {
            SanType::URI(s.identity.as_str().try_into().expect("an IA5 URI"))
        } else {
            SanType::Rfc822Name(s.identity.as_str().try_into().expect("an IA5 email"))
        }];
        // Fulcio's certificates live ten minutes; this one expired fifty minutes ago.
        let not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        p.not_before = not_before;
        p.not_after = not_before + time::Duration::minutes(10);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let mut v2 = vec![0x0c, s.issuer.len() as u8];
        v2.extend_from_slice(s.issuer.as_bytes());
        p.custom_extensions = vec![
            CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                s.issuer.clone().into_bytes(),
            ),
            CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 8], v2),
        ];
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        let cert = p.signed_by(&key, &issuer).expect("sign the leaf");
        (key, cert, not_before)
    }

    /// Sign `blob` with a certificate from `ca`.
    pub fn sign_with(&self, ca: &TestCa, blob: &[u8], s: &Sign) -> Signed {
        let (key, cert, not_before) = self.leaf(ca, s);
        let cert_pem = cert.pem();
        let signed_bytes = s.other_bytes.as_deref().unwrap_or(blob);
        let sig = key.sign(signed_bytes).expect("sign the blob");
        let sha = hex::encode(sha2::Sha256::digest(blob));
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": sha}},
                "signature": {
                    "content": B64.encode(&sig),
                    "publicKey": {"content": B64.encode(cert_pem.as_bytes())}
                }
            }
        })
        .to_string();
        let body_b64 = B64.encode(body.as_bytes());
        let integrated = not_before.unix_timestamp() + s.logged_after;
        let log_index = 4242_i64;
        let set = self.set(&body_b64, integrated, log_index);
        let entries = if s.log_entry {
            serde_json::json!([{
                "logIndex": log_index.to_string(),
                "logId": {"keyId": B64.encode(&self.log_id)},
                "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                "integratedTime": integrated.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": B64.encode(&set)},
                "canonicalizedBody": body_b64
            }])
        } else {
            serde_json::json!([])
        };
        let bundle = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": B64.encode(cert.der())},
                "tlogEntries": entries
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(sha2::Sha256::digest(blob))},
                "signature": B64.encode(&sig)
            }
        })
        .to_string();
        let mut cosign = serde_json::json!({
            "base64Signature": B64.encode(&sig),
            "cert": B64.encode(cert_pem.as_bytes()),
        });
        if s.log_entry {
            cosign["rekorBundle"] = serde_json::json!({
                "SignedEntryTimestamp": B64.encode(&set),
                "Payload": {
                    "body": body_b64,
                    "integratedTime": integrated,
                    "logIndex": log_index,
                    "logID": hex::encode(&self.log_id)
                }
            });
        }
        let rekor_entry = s.log_entry.then(|| {
            serde_json::json!({
                "body": body_b64,
                "integratedTime": integrated,
                "logID": hex::encode(&self.log_id),
                "logIndex": log_index,
                "verification": {"signedEntryTimestamp": B64.encode(&set)},
            })
        });
        Signed {
            rekor_entry,
            bundle,
            cosign_bundle: cosign.to_string(),
            sig: B64.encode(&sig),
            cert: B64.encode(cert_pem.as_bytes()),
            cert_pem,
        }
    }

    /// An attestation as `actions/attest-build-provenance` makes one (`.intoto.jsonl`: a
    /// Sigstore bundle whose DSSE envelope holds an in-toto statement naming each of `subjects`
    /// by sha256), signed as `s` says with the trusted CA, logged as a `kind` entry.
    /// `s.other_bytes` makes the signature over those bytes instead of the envelope.
    pub fn attest(&self, subjects: &[(&str, &[u8])], s: &Sign, kind: Logged) -> String {
        self.attest_with(&self.fulcio, subjects, s, kind)
    }

    /// [`TestSigstore::attest`] with a certificate from `ca`.
    pub fn attest_with(
        &self,
        ca: &TestCa,
        subjects: &[(&str, &[u8])],
        s: &Sign,
        kind: Logged,
    ) -> String {
        let (key, cert, not_before) = self.leaf(ca, s);
        let cert_pem = cert.pem();
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": subjects.iter().map(|(name, bytes)| serde_json::json!({
                "name": name,
                "digest": {"sha256": hex::encode(sha2::Sha256::digest(bytes))},
            })).collect::<Vec<_>>(),
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"buildDefinition": {"buildType": "https://actions.github.io/buildtypes/workflow/v1"}},
        })
        .to_string();
        let payload_type = "application/vnd.in-toto+json";
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            statement.len()
        )
        .into_bytes();
        pae.extend_from_slice(statement.as_bytes());
        let sig = key
            .sign(s.other_bytes.as_deref().unwrap_or(&pae))
            .expect("sign the envelope");
        let payload_hash = hex::encode(sha2::Sha256::digest(statement.as_bytes()));
        let body = match kind {
            Logged::Dsse => serde_json::json!({
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256", "value": "0".repeat(64)},
                    "payloadHash": {"algorithm": "sha256", "value": payload_hash},
                    "signatures": [{
                        "signature": B64.encode(&sig),
                        "verifier": B64.encode(cert_pem.as_bytes()),
                    }],
                }
            }),
            Logged::Intoto => serde_json::json!({
                "apiVersion": "0.0.2",
                "kind": "intoto",
                "spec": {"content": {
                    "envelope": {
                        "payloadType": payload_type,
                        "signatures": [{
                            "sig": B64.encode(B64.encode(&sig)),
                            "publicKey": B64.encode(cert_pem.trim_end().as_bytes()),
                        }],
                    },
                    "hash": {"algorithm": "sha256", "value": "0".repeat(64)},
                    "payloadHash": {"algorithm": "sha256", "value": payload_hash},
                }}
            }),
        }
        .to_string();
        let body_b64 = B64.encode(body.as_bytes());
        let integrated = not_before.unix_timestamp() + s.logged_after;
        let log_index = 4343_i64;
        let set = self.set(&body_b64, integrated, log_index);
        let (kind_name, version) = match kind {
            Logged::Dsse => ("dsse", "0.0.1"),
            Logged::Intoto => ("intoto", "0.0.2"),
        };
        let entries = if s.log_entry {
            serde_json::json!([{
                "logIndex": log_index.to_string(),
                "logId": {"keyId": B64.encode(&self.log_id)},
                "kindVersion": {"kind": kind_name, "version": version},
                "integratedTime": integrated.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": B64.encode(&set)},
                "canonicalizedBody": body_b64
            }])
        } else {
            serde_json::json!([])
        };
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": B64.encode(cert.der())},
                "tlogEntries": entries,
                "timestampVerificationData": {}
            },
            "dsseEnvelope": {
                "payload": B64.encode(statement.as_bytes()),
                "payloadType": payload_type,
                "signatures": [{"sig": B64.encode(&sig), "keyid": ""}]
            }
        })
        .to_string()
    }

    /// The Rekor key's signature over an entry's canonical JSON.
    fn set(&self, body_b64: &str, integrated: i64, log_index: i64) -> Vec<u8> {
        let payload = serde_json::json!({
            "body": body_b64,
            "integratedTime": integrated,
            "logID": hex::encode(&self.log_id),
            "logIndex": log_index,
        })
        .to_string();
        self.rekor.sign(payload.as_bytes()).expect("sign the SET")
    }
}
