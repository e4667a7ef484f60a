//! RFC 3161 timestamps: what dates a Rekor v2 entry. A Rekor v1 entry carries the time the log
//! integrated it, vouched for by the log's signed entry timestamp; a Rekor v2 entry carries no
//! time, so the bundle holds a timestamp authority's signed timestamp over the signature instead
//! (`timestampVerificationData.rfc3161Timestamps`, each a DER `TimeStampResp`).
//!
//! Checked here, offline: the response grants a token; the token is a CMS SignedData over a
//! TSTInfo; the TSTInfo's message imprint is the digest of the signature it dates; the signer's
//! signed attributes carry the digest of that TSTInfo and are signed by the timestamping
//! certificate of a timestamp authority of the trust root; and the time is inside that
//! authority's validity and its certificate's.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use cms::signed_data::SignedData;
use der::asn1::OctetString;
use der::oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_tsp::{TimeStampResp, TstInfo};

use super::{SigError, TrustRoot, rfc3339};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

fn bad(what: impl Into<String>) -> SigError {
    SigError::BadTimestamp(what.into())
}

/// The digest algorithm an OID names (sha256, sha384, sha512).
fn digest_alg(oid: &ObjectIdentifier) -> Result<&'static aws_lc_rs::digest::Algorithm, SigError> {
    match oid.to_string().as_str() {
        "2.16.840.1.101.3.4.2.1" => Ok(&aws_lc_rs::digest::SHA256),
        "2.16.840.1.101.3.4.2.2" => Ok(&aws_lc_rs::digest::SHA384),
        "2.16.840.1.101.3.4.2.3" => Ok(&aws_lc_rs::digest::SHA512),
        other => Err(bad(format!("its digest algorithm {other} is not SHA-2"))),
    }
}

/// The ECDSA verification for a signature algorithm OID over a key on `curve`.
fn ecdsa(sig_alg: &str, curve: &str) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match (sig_alg, curve) {
        ("1.2.840.10045.4.3.2", "1.2.840.10045.3.1.7") => &signature::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", "1.2.840.10045.3.1.7") => &signature::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.2", "1.3.132.0.34") => &signature::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", "1.3.132.0.34") => &signature::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.10045.4.3.4", "1.3.132.0.35") => &signature::ECDSA_P521_SHA512_ASN1,
        _ => return None,
    })
}

/// What a verified timestamp says.
struct Token {
    /// When (Unix seconds).
    time: i64,
    /// The DER of the signed attributes (as signed: a SET).
    signed_attrs: Vec<u8>,
    /// The signature over them.
    signature: Vec<u8>,
    /// Its algorithm's OID.
    signature_alg: String,
}

/// Parse `resp` and check everything but who signed it: the token it grants dates `message`.
fn token(resp: &[u8], message: &[u8]) -> Result<Token, SigError> {
    let resp = TimeStampResp::from_der(resp)
        .map_err(|e| bad(format!("it is not an RFC 3161 response ({e})")))?;
    // 0 granted, 1 granted with modifications: anything else is a refusal without a token.
    let status = resp.status.status as u8;
    if status > 1 {
        return Err(bad(format!(
            "the authority did not grant it (status {status})"
        )));
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| bad("the response holds no token"))?;
    if token.content_type != ID_SIGNED_DATA {
        return Err(bad("its token is not a CMS SignedData"));
    }
    let sd: SignedData = token
        .content
        .decode_as()
        .map_err(|e| bad(format!("its SignedData does not parse ({e})")))?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(bad("its SignedData does not hold a TSTInfo"));
    }
    let tst_der = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| bad("its SignedData has no content"))?
        .decode_as::<OctetString>()
        .map_err(|e| bad(format!("its content is not an OCTET STRING ({e})")))?
        .into_bytes();
    let tst = TstInfo::from_der(&tst_der)
        .map_err(|e| bad(format!("its TSTInfo does not parse ({e})")))?;
    let imprint = digest_alg(&tst.message_imprint.hash_algorithm.oid)?;
    if aws_lc_rs::digest::digest(imprint, message).as_ref()
        != tst.message_imprint.hashed_message.as_bytes()
    {
        return Err(bad(
            "it dates another signature (its message imprint differs)",
        ));
    }
    let [signer] = sd.signer_infos.0.as_slice() else {
        return Err(bad(format!(
            "it has {} signers, not one",
            sd.signer_infos.0.len()
        )));
    };
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("its signer has no signed attributes"))?;
    let digest = attrs
        .iter()
        .find(|a| a.oid == ID_MESSAGE_DIGEST)
        .and_then(|a| a.values.get(0))
        .ok_or_else(|| bad("its signed attributes have no message digest"))?
        .decode_as::<OctetString>()
        .map_err(|e| bad(format!("its message digest is not an OCTET STRING ({e})")))?;
    let alg = digest_alg(&signer.digest_alg.oid)?;
    if aws_lc_rs::digest::digest(alg, &tst_der).as_ref() != digest.as_bytes() {
        return Err(bad("its signed attributes are about another TSTInfo"));
    }
    let time = tst.gen_time.to_unix_duration().as_secs();
    Ok(Token {
        time: i64::try_from(time).map_err(|_| bad("its time is out of range"))?,
        signed_attrs: attrs
            .to_der()
            .map_err(|e| bad(format!("its signed attributes do not encode ({e})")))?,
        signature: signer.signature.as_bytes().to_vec(),
        signature_alg: signer.signature_algorithm.oid.to_string(),
    })
}

/// Verify `resp` (a DER `TimeStampResp`) as a timestamp over `message` (the artifact's
/// signature) by a timestamp authority of `root`: the time it vouches for (Unix seconds).
pub fn verify(root: &TrustRoot, resp: &[u8], message: &[u8]) -> Result<i64, SigError> {
    let t = token(resp, message)?;
    for tsa in &root.tsas {
        let Some(Ok((_, leaf))) = tsa
            .chain
            .first()
            .map(|d| x509_parser::parse_x509_certificate(d))
        else {
            continue;
        };
        let spki = leaf.public_key();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string())
            .unwrap_or_default();
        let Some(alg) = ecdsa(&t.signature_alg, &curve) else {
            continue;
        };
        if UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
            .verify(&t.signed_attrs, &t.signature)
            .is_err()
        {
            continue;
        }
        let cert = super::root::Window {
            start: leaf.validity().not_before.timestamp(),
            end: Some(leaf.validity().not_after.timestamp()),
        };
        for (what, w) in [
            ("the timestamp authority", tsa.valid),
            ("its certificate", cert),
        ] {
            if !w.contains(t.time) {
                let (from, to) = w.describe();
                return Err(bad(format!(
                    "it is dated {}, outside the validity of {what} {} ({from} to {to})",
                    rfc3339(t.time),
                    tsa.uri
                )));
            }
        }
        return Ok(t.time);
    }
    Err(bad(
        "it is not signed by a timestamp authority of the trust root".to_owned(),
    ))
}
