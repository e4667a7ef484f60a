//! The verification core against a Sigstore-shaped trust root made here (the fixture is
//! `tests/common/sigstore.rs`, shared with the integration tests).

#[path = "../../../tests/common/sigstore.rs"]
mod fixture;

use sha2::Digest as _;

use super::*;
pub(crate) use fixture::{K8S_IDENTITY, K8S_ISSUER, Sign, TestSigstore};

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
