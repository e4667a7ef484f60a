//! The verification core against a Sigstore-shaped trust root made here (the fixture is
//! `tests/common/sigstore.rs`, shared with the integration tests).

#[path = "../../../tests/common/sigstore.rs"]
mod fixture;

use sha2::Digest as _;

use super::*;
pub(crate) use fixture::{K8S_IDENTITY, K8S_ISSUER, Logged, Sign, TestSigstore};

fn policy() -> Policy {
    Policy {
        identity: K8S_IDENTITY.into(),
        issuer: K8S_ISSUER.into(),
    }
}

struct Case {
    ts: TestSigstore,
    root: TrustRoot,
    blob: Vec<u8>,
    sha: Vec<u8>,
}

fn case() -> Case {
    let ts = TestSigstore::new();
    let root = TrustRoot::parse(&ts.trusted_root(), "test").unwrap();
    let blob = b"kubelet, the real bytes\n".to_vec();
    let sha = sha2::Sha256::digest(&blob).to_vec();
    Case {
        ts,
        root,
        blob,
        sha,
    }
}

fn check(c: &Case, bundle: &str) -> Result<Signer, SigError> {
    verify_blob(
        &c.root,
        &Material::from_bundle(bundle.as_bytes())?,
        &c.sha,
        &policy(),
    )
}

#[test]
fn a_good_bundle_is_accepted_in_both_shapes() {
    let c = case();
    let s = c.ts.sign(&c.blob, &Sign::default());
    let signer = check(&c, &s.bundle).unwrap();
    assert_eq!(signer.identity, K8S_IDENTITY);
    assert_eq!(signer.issuer, K8S_ISSUER);
    assert_eq!(signer.log_index, 4242);
    check(&c, &s.cosign_bundle).unwrap();
}

#[test]
fn a_uri_identity_is_matched_too() {
    let c = case();
    let id = "https://github.com/etcd-io/etcd/.github/workflows/release.yaml@refs/tags/v3.6.0";
    let s = c.ts.sign(
        &c.blob,
        &Sign {
            identity: id.into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            ..Sign::default()
        },
    );
    let p = Policy {
        identity: id.into(),
        issuer: "https://token.actions.githubusercontent.com".into(),
    };
    let m = Material::from_bundle(s.bundle.as_bytes()).unwrap();
    assert_eq!(verify_blob(&c.root, &m, &c.sha, &p).unwrap().identity, id);
}

#[test]
fn a_wrong_identity_is_refused() {
    let c = case();
    let s = c.ts.sign(
        &c.blob,
        &Sign {
            identity: "mallory@example.com".into(),
            ..Sign::default()
        },
    );
    let e = check(&c, &s.bundle).unwrap_err();
    assert!(matches!(e, SigError::WrongIdentity { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("signed by mallory@example.com, not by {K8S_IDENTITY}")
    );
}

#[test]
fn a_wrong_issuer_is_refused() {
    let c = case();
    let s = c.ts.sign(
        &c.blob,
        &Sign {
            issuer: "https://github.com/login/oauth".into(),
            ..Sign::default()
        },
    );
    let e = check(&c, &s.bundle).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "the signer's identity was issued by https://github.com/login/oauth, not by {K8S_ISSUER}"
        )
    );
}

#[test]
fn an_expired_certificate_without_a_log_entry_is_refused() {
    let c = case();
    let s = c.ts.sign(
        &c.blob,
        &Sign {
            log_entry: false,
            ..Sign::default()
        },
    );
    for m in [
        Material::from_bundle(s.bundle.as_bytes()).unwrap(),
        Material::from_bundle(s.cosign_bundle.as_bytes()).unwrap(),
        // dl.k8s.io's .sig and .cert: the same signature, no log entry.
        Material::from_sig_cert(s.sig.as_bytes(), s.cert.as_bytes(), None).unwrap(),
    ] {
        let e = verify_blob(&c.root, &m, &c.sha, &policy()).unwrap_err();
        assert!(matches!(e, SigError::NoLogEntry { .. }), "{e:?}");
        assert!(
            e.to_string().contains("no valid transparency-log entry"),
            "{e}"
        );
    }
}

#[test]
fn a_log_entry_outside_the_certificates_validity_is_refused() {
    let c = case();
    let s = c.ts.sign(
        &c.blob,
        &Sign {
            logged_after: 3600,
            ..Sign::default()
        },
    );
    let e = check(&c, &s.bundle).unwrap_err();
    assert!(matches!(e, SigError::OutsideValidity { .. }), "{e:?}");
}

#[test]
fn a_forged_set_is_refused() {
    let c = case();
    let other = TestSigstore::new();
    // The same CA is trusted, but the SET is by a log key the root does not have under this id.
    let s = c.ts.sign(&c.blob, &Sign::default());
    let forged = other.sign(&c.blob, &Sign::default());
    let mut m = Material::from_bundle(s.bundle.as_bytes()).unwrap();
    let f = Material::from_bundle(forged.bundle.as_bytes()).unwrap();
    m.entry.as_mut().unwrap().set = f.entry.unwrap().set;
    let e = verify_blob(&c.root, &m, &c.sha, &policy()).unwrap_err();
    assert!(matches!(e, SigError::BadPromise), "{e:?}");
}

#[test]
fn a_signature_over_other_bytes_is_refused() {
    let c = case();
    let s = c.ts.sign(
        &c.blob,
        &Sign {
            other_bytes: Some(b"a truncated kubelet".to_vec()),
            ..Sign::default()
        },
    );
    let e = check(&c, &s.bundle).unwrap_err();
    assert!(matches!(e, SigError::BadSignature { .. }), "{e:?}");
    // And a good signature of the real bytes does not vouch for other bytes.
    let good = c.ts.sign(&c.blob, &Sign::default());
    let m = Material::from_bundle(good.bundle.as_bytes()).unwrap();
    let other = sha2::Sha256::digest(b"other bytes");
    let e = verify_blob(&c.root, &m, &other, &policy()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("the signature does not match the artifact's bytes (sha256:"),
        "{e}"
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let c = case();
    let s = c.ts.sign_with(&c.ts.stranger, &c.blob, &Sign::default());
    let e = check(&c, &s.bundle).unwrap_err();
    assert!(matches!(e, SigError::UntrustedCertificate { .. }), "{e:?}");
    assert!(
        e.to_string().contains("does not chain to a Fulcio CA"),
        "{e}"
    );
}

#[test]
fn the_production_root_refuses_a_test_signature() {
    let c = case();
    let s = c.ts.sign(&c.blob, &Sign::default());
    let m = Material::from_bundle(s.bundle.as_bytes()).unwrap();
    let e = verify_blob(&TrustRoot::production(), &m, &c.sha, &policy()).unwrap_err();
    assert!(matches!(e, SigError::UntrustedCertificate { .. }), "{e:?}");
}

/// A real bundle from the public-good instance (tests/data/sigstore/README.md says where from),
/// verified offline with the compiled-in root.
#[test]
fn a_real_public_good_bundle_verifies_with_the_production_root() {
    let blob = include_bytes!("../../../tests/data/sigstore/rfc8785-0.1.2-py3-none-any.whl");
    let bundle =
        include_bytes!("../../../tests/data/sigstore/rfc8785-0.1.2-py3-none-any.whl.sigstore");
    let m = Material::from_bundle(bundle).unwrap();
    let sha = sha2::Sha256::digest(blob);
    let p = Policy {
        identity: "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2".into(),
        issuer: "https://token.actions.githubusercontent.com".into(),
    };
    let root = TrustRoot::production();
    let s = verify_blob(&root, &m, &sha, &p).unwrap();
    assert_eq!(s.integrated_time, 1710888076);
    // The same signature does not vouch for other bytes, nor for another signer.
    let mut other = blob.to_vec();
    other[100] ^= 1;
    let e = verify_blob(&root, &m, &sha2::Sha256::digest(&other), &p).unwrap_err();
    assert!(matches!(e, SigError::BadSignature { .. }), "{e:?}");
    let e = verify_blob(&root, &m, &sha, &policy()).unwrap_err();
    assert!(matches!(e, SigError::WrongIdentity { .. }), "{e:?}");
}

#[test]
fn the_ca_certificate_itself_is_not_a_signing_certificate() {
    let c = case();
    let s = c.ts.sign(&c.blob, &Sign::default());
    let mut m = Material::from_bundle(s.bundle.as_bytes()).unwrap();
    m.cert = c.ts.fulcio.der.clone();
    let e = verify_blob(&c.root, &m, &c.sha, &policy()).unwrap_err();
    assert!(e.to_string().contains("not a code-signing leaf"), "{e}");
}

#[test]
fn a_detached_signature_with_its_rekor_entry_verifies_and_round_trips_as_a_cosign_bundle() {
    use base64::Engine as _;
    let c = case();
    let s = c.ts.sign(&c.blob, &Sign::default());
    let e = s.rekor_entry.as_ref().unwrap();
    let entry = LogEntry {
        body: e["body"].as_str().unwrap().into(),
        integrated_time: e["integratedTime"].as_i64().unwrap(),
        log_index: e["logIndex"].as_i64().unwrap(),
        log_id: hex::decode(e["logID"].as_str().unwrap()).unwrap(),
        set: base64::engine::general_purpose::STANDARD
            .decode(e["verification"]["signedEntryTimestamp"].as_str().unwrap())
            .unwrap(),
        proof: None,
    };
    // Without the entry it cannot be checked offline; with it, it verifies.
    let bare = Material::from_sig_cert(s.sig.as_bytes(), s.cert.as_bytes(), None).unwrap();
    assert!(matches!(
        verify_blob(&c.root, &bare, &c.sha, &policy()),
        Err(SigError::NoLogEntry { .. })
    ));
    let m = Material::from_sig_cert(s.sig.as_bytes(), s.cert.as_bytes(), Some(entry)).unwrap();
    verify_blob(&c.root, &m, &c.sha, &policy()).unwrap();
    let again = Material::from_bundle(m.to_cosign_bundle().as_bytes()).unwrap();
    assert_eq!(again, m);
    // The entry of another blob's signature does not vouch for this one.
    let other = c.ts.sign(b"other bytes", &Sign::default());
    let o = other.rekor_entry.as_ref().unwrap();
    let mut wrong = m.clone();
    if let Some(w) = wrong.entry.as_mut() {
        w.body = o["body"].as_str().unwrap().into();
    }
    assert!(verify_blob(&c.root, &wrong, &c.sha, &policy()).is_err());
}

/// containerd's release workflow, as its attestations name it.
const CONTAINERD: &str =
    "https://github.com/containerd/containerd/.github/workflows/release.yml@refs/tags/v2.3.4";
const ACTIONS: &str = "https://token.actions.githubusercontent.com";

fn attester() -> Sign {
    Sign {
        identity: CONTAINERD.into(),
        issuer: ACTIONS.into(),
        ..Sign::default()
    }
}

fn containerd() -> Policy {
    Policy {
        identity: CONTAINERD.into(),
        issuer: ACTIONS.into(),
    }
}

fn check_attestation(c: &Case, bundle: &str, sha: &[u8]) -> Result<Signer, SigError> {
    verify_blob(
        &c.root,
        &Material::from_bundle(bundle.as_bytes())?,
        sha,
        &containerd(),
    )
}

#[test]
fn an_attestation_vouches_for_each_blob_its_statement_names_logged_either_way() {
    let c = case();
    let other = b"containerd-static, the other tarball\n".to_vec();
    for kind in [Logged::Dsse, Logged::Intoto] {
        let a = c.ts.attest(
            &[
                ("containerd-static.tar.gz", &other),
                ("containerd.tar.gz", &c.blob),
            ],
            &attester(),
            kind,
        );
        let s = check_attestation(&c, &a, &c.sha).unwrap();
        assert_eq!((s.identity.as_str(), s.log_index), (CONTAINERD, 4343));
        check_attestation(&c, &a, &sha2::Sha256::digest(&other)).unwrap();
        // A blob the statement does not name: the attestation is good, but not for it.
        let e = check_attestation(&c, &a, &sha2::Sha256::digest(b"other bytes")).unwrap_err();
        assert!(
            matches!(e, SigError::NotASubject { subjects: 2, .. }),
            "{kind:?}: {e:?}"
        );
        assert!(
            e.to_string().contains("does not vouch for this artifact"),
            "{e}"
        );
    }
}

#[test]
fn an_attestation_is_refused_for_each_fault_of_a_signature() {
    let c = case();
    let subjects: &[(&str, &[u8])] = &[("containerd.tar.gz", &c.blob)];
    let refused = |a: &str| check_attestation(&c, a, &c.sha).unwrap_err();
    let other = Sign {
        other_bytes: Some(b"another envelope".to_vec()),
        ..attester()
    };
    let e = refused(&c.ts.attest(subjects, &other, Logged::Dsse));
    assert!(matches!(e, SigError::BadSignature { .. }), "{e:?}");
    let wrong = Sign {
        identity:
            "https://github.com/evil/containerd/.github/workflows/release.yml@refs/tags/v2.3.4"
                .into(),
        ..attester()
    };
    let e = refused(&c.ts.attest(subjects, &wrong, Logged::Dsse));
    assert!(matches!(e, SigError::WrongIdentity { .. }), "{e:?}");
    let issuer = Sign {
        issuer: "https://accounts.google.com".into(),
        ..attester()
    };
    let e = refused(&c.ts.attest(subjects, &issuer, Logged::Intoto));
    assert!(matches!(e, SigError::WrongIssuer { .. }), "{e:?}");
    let e = refused(
        &c.ts
            .attest_with(&c.ts.stranger, subjects, &attester(), Logged::Dsse),
    );
    assert!(matches!(e, SigError::UntrustedCertificate { .. }), "{e:?}");
    let unlogged = Sign {
        log_entry: false,
        ..attester()
    };
    let e = refused(&c.ts.attest(subjects, &unlogged, Logged::Dsse));
    assert!(matches!(e, SigError::NoLogEntry { .. }), "{e:?}");
    let late = Sign {
        logged_after: 3600,
        ..attester()
    };
    let e = refused(&c.ts.attest(subjects, &late, Logged::Intoto));
    assert!(matches!(e, SigError::OutsideValidity { .. }), "{e:?}");
}

#[test]
fn an_attestation_with_another_statements_log_entry_is_refused() {
    let c = case();
    for kind in [Logged::Dsse, Logged::Intoto] {
        let ours = c.ts.attest(&[("a.tar.gz", &c.blob)], &attester(), kind);
        let theirs =
            c.ts.attest(&[("a.tar.gz", &c.blob), ("b", b"b")], &attester(), kind);
        let mut spliced: serde_json::Value = serde_json::from_str(&ours).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
        spliced["verificationMaterial"]["tlogEntries"] =
            theirs["verificationMaterial"]["tlogEntries"].clone();
        let e = check_attestation(&c, &spliced.to_string(), &c.sha).unwrap_err();
        assert!(
            matches!(&e, SigError::EntryMismatch(m) if m.contains("another statement")),
            "{kind:?}: {e:?}"
        );
        // The envelope and its entry are one: a blob's hashedrekord entry does not log it.
        let blob = c.ts.sign(&c.blob, &attester());
        let blob: serde_json::Value = serde_json::from_str(&blob.bundle).unwrap();
        spliced["verificationMaterial"]["tlogEntries"] =
            blob["verificationMaterial"]["tlogEntries"].clone();
        let e = check_attestation(&c, &spliced.to_string(), &c.sha).unwrap_err();
        assert!(matches!(e, SigError::Malformed(_)), "{kind:?}: {e:?}");
    }
}

#[test]
fn an_envelope_that_is_not_an_in_toto_statement_or_has_two_signatures_is_malformed() {
    let c = case();
    let a =
        c.ts.attest(&[("a.tar.gz", &c.blob)], &attester(), Logged::Dsse);
    let mut v: serde_json::Value = serde_json::from_str(&a).unwrap();
    let sig = v["dsseEnvelope"]["signatures"][0].clone();
    v["dsseEnvelope"]["signatures"] = serde_json::json!([sig.clone(), sig]);
    let e = Material::from_bundle(v.to_string().as_bytes()).unwrap_err();
    assert!(e.to_string().contains("2 signatures, not one"), "{e}");
    let env = Envelope {
        payload_type: "text/plain".into(),
        payload: b"hello".to_vec(),
    };
    let e = env.subject(&hex::encode(&c.sha)).unwrap_err();
    assert!(e.to_string().contains("not an in-toto statement"), "{e}");
}

/// A real attestation made by actions/attest-build-provenance (as containerd's release workflow
/// makes them), logged as a `dsse` entry on the public-good instance: verified offline with the
/// compiled-in root, for the digest its statement names (tests/data/sigstore/README.md).
#[test]
fn a_real_build_provenance_attestation_verifies_with_the_production_root() {
    let bundle = include_bytes!(
        "../../../tests/data/sigstore/github-provenance-demo-0.0.0.attestation.sigstore.json"
    );
    let m = Material::from_bundle(bundle).unwrap();
    let sha =
        hex::decode("49a3aa6075e0f49f82843e74b5baa614ad2a588e6675612bf108a0a008c5ac25").unwrap();
    let p = Policy {
        identity: "https://github.com/github/artifact-attestations-workflows/.github/workflows/attest.yml@09b495c3f12c7881b3cc17209a327792065c1a1d".into(),
        issuer: ACTIONS.into(),
    };
    let root = TrustRoot::production();
    let s = verify_blob(&root, &m, &sha, &p).unwrap();
    assert_eq!((s.integrated_time, s.log_index), (1716578064, 96764485));
    let mut other = sha.clone();
    other[0] ^= 1;
    let e = verify_blob(&root, &m, &other, &p).unwrap_err();
    assert!(
        matches!(e, SigError::NotASubject { subjects: 1, .. }),
        "{e:?}"
    );
    let e = verify_blob(&root, &m, &sha, &containerd()).unwrap_err();
    assert!(matches!(e, SigError::WrongIdentity { .. }), "{e:?}");
}

/// npm's real provenance of sigstore@2.1.0, logged as an `intoto` 0.0.2 entry: every check
/// passes (chain, envelope signature, SET, entry body, times, signer) up to the subjects,
/// which name the package by sha512 only, so no sha256 is vouched for.
#[test]
fn a_real_intoto_entry_verifies_up_to_its_subjects() {
    let bundle =
        include_bytes!("../../../tests/data/sigstore/npm-sigstore-2.1.0.provenance.sigstore.json");
    let m = Material::from_bundle(bundle).unwrap();
    let p = Policy {
        identity:
            "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main"
                .into(),
        issuer: ACTIONS.into(),
    };
    let root = TrustRoot::production();
    let e = verify_blob(&root, &m, &[7; 32], &p).unwrap_err();
    assert!(
        matches!(e, SigError::NotASubject { subjects: 1, .. }),
        "{e:?}"
    );
    // The step before it is real: another signer is refused there.
    let e = verify_blob(&root, &m, &[7; 32], &containerd()).unwrap_err();
    assert!(matches!(e, SigError::WrongIdentity { .. }), "{e:?}");
}

/// Sigstore's staging instance, with its Rekor v2 logs and timestamp authority
/// (tests/data/sigstore/README.md says where each file comes from).
fn staging() -> TrustRoot {
    TrustRoot::parse(
        include_str!("../../../tests/data/sigstore/staging/trusted_root.json"),
        "staging",
    )
    .unwrap()
}

const STAGING_BLOB: &[u8] =
    include_bytes!("../../../tests/data/sigstore/staging/staging-rekor-v2.txt");
const STAGING_V2: &str =
    include_str!("../../../tests/data/sigstore/staging/staging-rekor-v2.txt.sigstore.json");

fn jku() -> Policy {
    Policy {
        identity: "jku@goto.fi".into(),
        issuer: "https://github.com/login/oauth".into(),
    }
}

/// A real Rekor v2 bundle: an inclusion proof to a checkpoint signed by the log's Ed25519 key,
/// no time in the entry, an RFC 3161 timestamp from the staging timestamp authority dating the
/// signature. Verified offline; then each part of it spoiled in turn.
#[test]
fn a_real_rekor_v2_bundle_verifies_by_its_inclusion_proof_and_timestamp() {
    use base64::Engine as _;
    let root = staging();
    let sha = sha2::Sha256::digest(STAGING_BLOB);
    let m = Material::from_bundle(STAGING_V2.as_bytes()).unwrap();
    assert!(m.entry.as_ref().unwrap().proof.is_some());
    let s = verify_blob(&root, &m, &sha, &jku()).unwrap();
    assert_eq!(s.identity, "jku@goto.fi");
    // Dated by the timestamp, inside the certificate's ten minutes (2025-06-09).
    assert!(
        (1749470255..1749470855).contains(&s.integrated_time),
        "{}",
        s.integrated_time
    );

    let spoiled = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(STAGING_V2).unwrap();
        f(&mut v);
        let m = Material::from_bundle(v.to_string().as_bytes())?;
        verify_blob(&root, &m, &sha, &jku())
    };
    let entry = "/verificationMaterial/tlogEntries/0";
    let e = spoiled(&|v| {
        let h = v
            .pointer_mut(&format!("{entry}/inclusionProof/hashes/0"))
            .unwrap();
        *h = serde_json::json!(base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
    })
    .unwrap_err();
    assert!(matches!(e, SigError::BadInclusion(_)), "{e:?}");
    let e = spoiled(&|v| {
        let c = v
            .pointer_mut(&format!("{entry}/inclusionProof/checkpoint/envelope"))
            .unwrap();
        *c = serde_json::json!(c.as_str().unwrap().replacen("\n646\n", "\n647\n", 1));
    })
    .unwrap_err();
    assert!(
        matches!(&e, SigError::BadInclusion(m) if m.contains("does not verify")),
        "{e:?}"
    );
    let e = spoiled(&|v| {
        v["verificationMaterial"]["timestampVerificationData"] = serde_json::json!({});
    })
    .unwrap_err();
    assert!(matches!(e, SigError::NoTimestamp(_)), "{e:?}");
    assert!(e.to_string().contains("Rekor v2"), "{e}");
    // The other bundle's timestamp dates another signature.
    let dsse: serde_json::Value = serde_json::from_str(STAGING_DSSE).unwrap();
    let e = spoiled(&|v| {
        v["verificationMaterial"]["timestampVerificationData"] =
            dsse["verificationMaterial"]["timestampVerificationData"].clone();
    })
    .unwrap_err();
    assert!(
        matches!(&e, SigError::NoTimestamp(m) if m.contains("another signature")),
        "{e:?}"
    );
    // Another blob: the entry is about other bytes (the signature check comes first).
    let m = Material::from_bundle(STAGING_V2.as_bytes()).unwrap();
    let e = verify_blob(&root, &m, &sha2::Sha256::digest(b"other"), &jku()).unwrap_err();
    assert!(matches!(e, SigError::BadSignature { .. }), "{e:?}");
    // The production root knows neither this CA, nor this log, nor this authority.
    let e = verify_blob(&TrustRoot::production(), &m, &sha, &jku()).unwrap_err();
    assert!(matches!(e, SigError::UntrustedCertificate { .. }), "{e:?}");
    // A root without the timestamp authority: nothing dates it.
    let mut no_tsa = staging();
    no_tsa.tsas.clear();
    let e = verify_blob(&no_tsa, &m, &sha, &jku()).unwrap_err();
    assert!(
        matches!(&e, SigError::NoTimestamp(m) if m.contains("not signed by a timestamp authority")),
        "{e:?}"
    );
}

const STAGING_DSSE: &str =
    include_str!("../../../tests/data/sigstore/staging/a.dsse.staging-rekor-v2.txt.sigstore.json");

/// A real attestation logged in Rekor v2 (a `hashedrekord` 0.0.2 of its envelope's PAE).
#[test]
fn a_real_rekor_v2_attestation_verifies_for_its_subject() {
    let m = Material::from_bundle(STAGING_DSSE.as_bytes()).unwrap();
    let p = Policy {
        identity: "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main".into(),
        issuer: ACTIONS.into(),
    };
    let sha =
        hex::decode("a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf").unwrap();
    verify_blob(&staging(), &m, &sha, &p).unwrap();
    let e = verify_blob(&staging(), &m, &[1; 32], &p).unwrap_err();
    assert!(matches!(e, SigError::NotASubject { .. }), "{e:?}");
}
