//! OpenPGP (GPG) detached signatures, verified offline against a compiled-in keyring.
//!
//! Some upstreams sign each release asset with GPG instead of Sigstore: runc publishes
//! `runc.amd64.asc` beside `runc.amd64`, an armored detached signature over the binary's bytes
//! by a key in its `runc.keyring`. A component names its keyring in the manifest
//! (`keyring = "runc"`); the keyrings are data (`data/trust/<name>.keyring`, each one's source in
//! `data/trust/README.md`), compiled in, so an air-gapped install verifies as a connected one.
//! Tests point `KBIN_TEST_KEYRINGS` at a directory of `<name>.keyring` files that replace the
//! compiled ones; it is read only in debug builds (`cfg(debug_assertions)`), never in a release.
//!
//! A signature is accepted when all of these hold, each refusal its own [`SigError`]:
//! - the `.asc` is one or more armored OpenPGP signatures over binary (or text) data;
//! - its hash is not MD5, SHA-1 or RIPEMD-160 (collisions are practical or near);
//! - its issuer (fingerprint, else key id) is a primary key of the keyring, or a subkey of one
//!   bound by a valid binding signature that allows signing (with its back-signature);
//! - the key had not expired when the signature was made, and is not revoked (a revocation
//!   that says "superseded" or "retired" spares signatures made before it, as RFC 9580 says);
//! - the signature verifies over the bytes (OpenPGP hashes the data itself, with its own hash,
//!   so the blob is read once more here: our sha256 cannot stand in for it).

use std::io::Read;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{RevocationCode, Signature, SignatureType};
use pgp::types::{KeyDetails, Tag};

use super::SigError;

/// The keyrings compiled in, by the name a component gives in the manifest (`keyring = "runc"`).
/// Adding one is adding a row and its file (with its source in `data/trust/README.md`).
pub const KEYRINGS: &[(&str, &str)] = &[("runc", include_str!("../../data/trust/runc.keyring"))];

/// The environment variable naming a directory of test keyrings (debug builds only).
pub const TEST_KEYRINGS_ENV: &str = "KBIN_TEST_KEYRINGS";

/// Whether this build can be pointed at test keyrings (false in every release build).
pub const TEST_KEYRINGS_REACHABLE: bool = cfg!(debug_assertions);

/// The names of the compiled-in keyrings, for the manifest's check and its message.
pub fn keyring_names() -> Vec<&'static str> {
    KEYRINGS.iter().map(|(n, _)| *n).collect()
}

/// A set of OpenPGP public keys (certificates) a component's signatures must come from.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Its name in the manifest (`runc`).
    pub name: String,
    /// Where it came from (for messages): `runc.keyring (built into kbin)`, or a test file.
    pub origin: String,
    /// The keys, each with its user ids and subkeys as the file has them.
    pub keys: Vec<SignedPublicKey>,
}

/// Who made a verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The primary user id of the key (`Aleksa Sarai <cyphar@cyphar.com>`).
    pub uid: String,
    /// The primary key's fingerprint (upper-case hex): what a user checks against upstream.
    pub fingerprint: String,
    /// The fingerprint of the key that made the signature (the primary or one of its subkeys).
    pub signing_key: String,
    /// When the signature was made (Unix seconds).
    pub created: i64,
}

impl Keyring {
    /// The keyring `name` to verify with: the compiled-in one, or in a debug build
    /// `$KBIN_TEST_KEYRINGS/<name>.keyring` when that variable is set.
    pub fn named(name: &str) -> Result<Keyring, SigError> {
        if let Some(dir) = test_keyrings_dir() {
            let path = dir.join(format!("{name}.keyring"));
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| SigError::Keyring {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
            return Keyring::parse(name, &origin, &text);
        }
        let (_, text) =
            KEYRINGS
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| SigError::Keyring {
                    origin: format!("{name}.keyring"),
                    message: format!(
                        "kbin has no such keyring (it has: {})",
                        keyring_names().join(", ")
                    ),
                })?;
        Keyring::parse(name, &format!("{name}.keyring (built into kbin)"), text)
    }

    /// Parse the armored key blocks in `text` (anything between them, such as the `gpg
    /// --list-keys` lines upstream's file carries, is skipped). `origin` is for messages.
    pub fn parse(name: &str, origin: &str, text: &str) -> Result<Keyring, SigError> {
        const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
        const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
        let bad = |message: String| SigError::Keyring {
            origin: origin.to_owned(),
            message,
        };
        let mut keys = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start..];
            let end = after
                .find(END)
                .ok_or_else(|| bad("a key block has no END line".into()))?;
            let block = &after[..end + END.len()];
            let (parsed, _) = SignedPublicKey::from_string_many(block)
                .map_err(|e| bad(format!("a key block does not parse: {e}")))?;
            for k in parsed {
                keys.push(k.map_err(|e| bad(format!("a key does not parse: {e}")))?);
            }
            rest = &after[end + END.len()..];
        }
        if keys.is_empty() {
            return Err(bad("it holds no armored public key".into()));
        }
        Ok(Keyring {
            name: name.to_owned(),
            origin: origin.to_owned(),
            keys,
        })
    }

    /// The primary fingerprints (upper-case hex), in file order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| fpr(&k.primary_key)).collect()
    }

    /// Verify the armored detached signature `asc` over `data` (read to its end) as made by a
    /// key of this keyring that was valid when it signed; `now` (Unix seconds) is for the
    /// signature's own expiry. With several signatures in the file, the first that verifies
    /// wins; else the first one's refusal says why.
    pub fn verify(&self, asc: &[u8], data: impl Read, now: i64) -> Result<Verified, SigError> {
        let text = std::str::from_utf8(asc)
            .map_err(|_| SigError::PgpMalformed("it is not text (armored)".into()))?;
        let (sigs, _) = DetachedSignature::from_string_many(text)
            .map_err(|e| SigError::PgpMalformed(one_line(&e)))?;
        let sigs: Vec<DetachedSignature> = sigs
            .collect::<Result<_, _>>()
            .map_err(|e| SigError::PgpMalformed(one_line(&e)))?;
        if sigs.is_empty() {
            return Err(SigError::PgpMalformed("it holds no signature".into()));
        }
        // The key checks are cheap and done for every signature first; the bytes are hashed
        // once, for the first signature whose key is valid.
        let mut first_err = None;
        let mut usable = None;
        for s in &sigs {
            match self.signer_of(&s.signature, now) {
                Ok(found) => {
                    usable = Some((s, found));
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let Some((s, found)) = usable else {
            return Err(first_err.expect("at least one signature was checked"));
        };
        let mut reader = Recording {
            inner: data,
            error: None,
        };
        let checked = match &found.subkey {
            Some(sub) => s.signature.verify(&sub.key, &mut reader),
            None => s.signature.verify(&found.key.primary_key, &mut reader),
        };
        if let Some(e) = reader.error {
            return Err(SigError::PgpRead(e.to_string()));
        }
        checked.map_err(|_| SigError::PgpBadSignature {
            key: found.signing_key.clone(),
        })?;
        Ok(Verified {
            uid: primary_uid(found.key),
            fingerprint: fpr(&found.key.primary_key),
            signing_key: found.signing_key,
            created: found.created,
        })
    }

    /// The key of this keyring that made `sig`, checked valid for it (everything but the
    /// signature over the data).
    fn signer_of<'k>(&'k self, sig: &Signature, now: i64) -> Result<Found<'k>, SigError> {
        match sig.typ() {
            Some(SignatureType::Binary | SignatureType::Text) => {}
            other => {
                return Err(SigError::PgpMalformed(format!(
                    "it is a {other:?} signature, not one over a file's bytes"
                )));
            }
        }
        let hash = sig
            .hash_alg()
            .ok_or_else(|| SigError::PgpMalformed("its version is not supported".into()))?;
        if matches!(
            hash,
            HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160
        ) {
            return Err(SigError::WeakHash {
                hash: hash.to_string(),
            });
        }
        let created = i64::from(
            sig.created()
                .ok_or_else(|| SigError::PgpMalformed("it has no creation time".into()))?
                .as_secs(),
        );
        if let Some(exp) = sig.signature_expiration_time()
            && exp.as_secs() != 0
            && created + i64::from(exp.as_secs()) < now
        {
            return Err(SigError::SignatureExpired {
                at: super::rfc3339(created + i64::from(exp.as_secs())),
            });
        }
        let fps: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| format!("{f:X}"))
            .collect();
        let ids: Vec<String> = sig
            .issuer_key_id()
            .iter()
            .map(|k| hex::encode_upper(k.as_ref()))
            .collect();
        if fps.is_empty() && ids.is_empty() {
            return Err(SigError::PgpMalformed("it names no issuer key".into()));
        }
        let is_issuer = |k: &dyn KeyDetails| {
            fps.contains(&format!("{:X}", k.fingerprint()))
                || ids.contains(&hex::encode_upper(k.legacy_key_id().as_ref()))
        };
        for key in &self.keys {
            if is_issuer(&key.primary_key) {
                self.check_primary(key, created)?;
                return Ok(Found {
                    key,
                    subkey: None,
                    signing_key: fpr(&key.primary_key),
                    created,
                });
            }
            if let Some(sub) = key.public_subkeys.iter().find(|s| is_issuer(&s.key)) {
                self.check_primary(key, created)?;
                self.check_subkey(key, sub, created)?;
                return Ok(Found {
                    key,
                    subkey: Some(sub),
                    signing_key: format!("{:X}", sub.key.fingerprint()),
                    created,
                });
            }
        }
        Err(SigError::UnknownKey {
            key: fps.first().or(ids.first()).cloned().unwrap_or_default(),
            keyring: self.origin.clone(),
        })
    }

    /// The primary key was valid at `created`: not revoked, not expired (its newest valid
    /// self-signature says until when), not made after the signature.
    fn check_primary(&self, key: &SignedPublicKey, created: i64) -> Result<(), SigError> {
        let pk = &key.primary_key;
        let name = fpr(pk);
        for r in &key.details.revocation_signatures {
            if r.typ() == Some(SignatureType::KeyRevocation) && r.verify_key(pk).is_ok() {
                revoked(r, created, &name, &self.origin)?;
            }
        }
        let key_created = i64::from(pk.created_at().as_secs());
        if created < key_created {
            return Err(self.not_valid_yet(&name, key_created, created));
        }
        // The newest valid self-signature (user id certification or direct key signature) is
        // the one whose expiry counts.
        let mut newest: Option<&Signature> = None;
        for u in &key.details.users {
            for s in &u.signatures {
                if is_self(s, pk)
                    && s.verify_certification(pk, Tag::UserId, &u.id).is_ok()
                    && newest.is_none_or(|n| s.created() > n.created())
                {
                    newest = Some(s);
                }
            }
        }
        for s in &key.details.direct_signatures {
            if s.verify_key(pk).is_ok() && newest.is_none_or(|n| s.created() > n.created()) {
                newest = Some(s);
            }
        }
        let Some(selfsig) = newest else {
            return Err(SigError::NotSigningKey {
                key: name,
                keyring: self.origin.clone(),
                why: "it has no valid self-signature".into(),
            });
        };
        self.check_expiry(&name, key_created, selfsig, created)
    }

    /// The subkey `sub` of `key` was valid for signing at `created`: bound by a valid binding
    /// signature with the signing flag and a valid back-signature, not revoked, not expired.
    fn check_subkey(
        &self,
        key: &SignedPublicKey,
        sub: &SignedPublicSubKey,
        created: i64,
    ) -> Result<(), SigError> {
        let pk = &key.primary_key;
        let name = format!("{:X}", sub.key.fingerprint());
        for r in &sub.signatures {
            if r.typ() == Some(SignatureType::SubkeyRevocation)
                && r.verify_subkey_binding(pk, &sub.key).is_ok()
            {
                revoked(r, created, &name, &self.origin)?;
            }
        }
        let binding = sub
            .signatures
            .iter()
            .filter(|s| {
                s.typ() == Some(SignatureType::SubkeyBinding)
                    && s.verify_subkey_binding(pk, &sub.key).is_ok()
            })
            .max_by_key(|s| s.created());
        let not_signing = |why: &str| SigError::NotSigningKey {
            key: name.clone(),
            keyring: self.origin.clone(),
            why: why.to_owned(),
        };
        let binding = binding
            .ok_or_else(|| not_signing("no valid binding signature ties it to its primary key"))?;
        if !binding.key_flags().sign() {
            return Err(not_signing("its binding does not allow signing"));
        }
        // A signing subkey must sign its primary back, or anyone could bind someone else's
        // signing key to their own primary and claim its signatures.
        let backsig_ok = binding
            .embedded_signature()
            .is_some_and(|b| b.verify_primary_key_binding(&sub.key, pk).is_ok());
        if !backsig_ok {
            return Err(not_signing(
                "its binding has no valid back-signature (primary key binding)",
            ));
        }
        let key_created = i64::from(sub.key.created_at().as_secs());
        if created < key_created {
            return Err(self.not_valid_yet(&name, key_created, created));
        }
        self.check_expiry(&name, key_created, binding, created)
    }

    /// The key named `name`, made at `key_created`, had not expired at `created` by what
    /// `selfsig` (its newest self-signature or binding) says.
    fn check_expiry(
        &self,
        name: &str,
        key_created: i64,
        selfsig: &Signature,
        created: i64,
    ) -> Result<(), SigError> {
        if let Some(d) = selfsig.key_expiration_time()
            && d.as_secs() != 0
        {
            let until = key_created + i64::from(d.as_secs());
            if created > until {
                return Err(SigError::KeyExpired {
                    key: name.to_owned(),
                    keyring: self.origin.clone(),
                    expired: until,
                    signed: created,
                });
            }
        }
        Ok(())
    }

    fn not_valid_yet(&self, name: &str, key_created: i64, created: i64) -> SigError {
        SigError::NotSigningKey {
            key: name.to_owned(),
            keyring: self.origin.clone(),
            why: format!(
                "the signature ({}) is older than the key ({})",
                super::rfc3339(created),
                super::rfc3339(key_created)
            ),
        }
    }
}

/// The issuing key found for a signature.
struct Found<'k> {
    key: &'k SignedPublicKey,
    subkey: Option<&'k SignedPublicSubKey>,
    signing_key: String,
    created: i64,
}

/// A reader that keeps the first I/O error, so a file that cannot be read is not reported as a
/// bad signature.
struct Recording<R> {
    inner: R,
    error: Option<std::io::Error>,
}

impl<R: Read> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

/// A revocation `r` (verified) of the key `name`: refuses a signature made at `created`,
/// unless the revocation is soft (superseded, retired) and the signature predates it.
fn revoked(r: &Signature, created: i64, name: &str, origin: &str) -> Result<(), SigError> {
    let code = r.revocation_reason_code().copied();
    let soft = matches!(
        code,
        Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired)
    );
    let at = r.created().map(|t| i64::from(t.as_secs()));
    if soft && at.is_some_and(|at| created < at) {
        return Ok(());
    }
    Err(SigError::KeyRevoked {
        key: name.to_owned(),
        keyring: origin.to_owned(),
        reason: match code {
            None | Some(RevocationCode::NoReason) => "no reason given".to_owned(),
            Some(RevocationCode::KeySuperseded) => "superseded".to_owned(),
            Some(RevocationCode::KeyCompromised) => "compromised".to_owned(),
            Some(RevocationCode::KeyRetired) => "retired".to_owned(),
            Some(c) => format!("{c:?}"),
        },
    })
}

/// Whether `s` names `pk` as its issuer (or names none): third-party certifications in a
/// keyring are not self-signatures and say nothing about the key's validity.
fn is_self(s: &Signature, pk: &pgp::packet::PublicKey) -> bool {
    let fps = s.issuer_fingerprint();
    let ids = s.issuer_key_id();
    (fps.is_empty() && ids.is_empty())
        || fps.iter().any(|f| **f == pk.fingerprint())
        || ids.iter().any(|k| **k == pk.legacy_key_id())
}

/// The key's primary user id (the one its self-signature marks primary, else the first).
fn primary_uid(key: &SignedPublicKey) -> String {
    let pk = &key.primary_key;
    let valid: Vec<_> = key
        .details
        .users
        .iter()
        .filter(|u| {
            u.signatures
                .iter()
                .any(|s| is_self(s, pk) && s.verify_certification(pk, Tag::UserId, &u.id).is_ok())
        })
        .collect();
    let u = valid
        .iter()
        .find(|u| u.signatures.iter().any(|s| s.is_primary()))
        .or(valid.first());
    match u {
        Some(u) => String::from_utf8_lossy(u.id.id()).into_owned(),
        None => format!("OpenPGP key {}", fpr(pk)),
    }
}

/// A fingerprint in upper-case hex, as `gpg` prints it.
fn fpr(k: &impl KeyDetails) -> String {
    format!("{:X}", k.fingerprint())
}

/// A parser's error on one line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// `KBIN_TEST_KEYRINGS`, read only in a debug build.
#[cfg(debug_assertions)]
fn test_keyrings_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(TEST_KEYRINGS_ENV)
        .filter(|v| !v.is_empty())
        .map(Into::into)
}

/// A release build has no test keyrings: the variable is not even read.
#[cfg(not(debug_assertions))]
fn test_keyrings_dir() -> Option<std::path::PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    const CYPHAR: &str = "C9C370B246B09F6DBCFC744C34401015D1D2D386";

    fn runc() -> Keyring {
        let text = KEYRINGS.iter().find(|(n, _)| *n == "runc").unwrap().1;
        Keyring::parse("runc", "runc.keyring", text).unwrap()
    }

    #[test]
    fn the_real_runc_keyring_holds_cyphars_key_with_a_signing_subkey() {
        let k = runc();
        assert!(
            k.fingerprints().contains(&CYPHAR.to_owned()),
            "{:?}",
            k.fingerprints()
        );
        let cyphar = k
            .keys
            .iter()
            .find(|k| fpr(&k.primary_key) == CYPHAR)
            .unwrap();
        assert_eq!(primary_uid(cyphar), "Aleksa Sarai <cyphar@cyphar.com>");
        // Its ed25519 signing subkey is bound, flagged for signing and signs back: valid on a
        // date inside its validity (2022-09-30 to 2030-03-25).
        let signing: Vec<_> = cyphar
            .public_subkeys
            .iter()
            .filter(|s| k.check_subkey(cyphar, s, 1_750_000_000).is_ok())
            .collect();
        assert_eq!(signing.len(), 1, "one signing subkey");
        k.check_primary(cyphar, 1_750_000_000).unwrap();
        // The embedded file is the one data/trust/README.md records.
        assert_eq!(
            hex::encode(sha2::Sha256::digest(KEYRINGS[0].1.as_bytes())),
            "c806294ce758acaa08ec06201dae7fabc47b6bab3d655a842c15e242d06a5b02"
        );
    }

    /// runc's releases up to v1.4.0 were signed by the key upstream's keyring dropped in 2026
    /// (data/trust/README.md): kept, so those releases verify.
    #[test]
    fn the_runc_keyring_keeps_the_key_that_signed_runc_up_to_1_4_0() {
        let k = runc();
        let suse = "5F36C6C61B5460124A75F5A69E18AA267DDB8DB4";
        let key = k
            .keys
            .iter()
            .find(|k| fpr(&k.primary_key) == suse)
            .expect("asarai@suse.de's key");
        assert!(
            primary_uid(key).starts_with("Aleksa Sarai <asarai@suse."),
            "{}",
            primary_uid(key)
        );
        // Its primary key signs ([SC]) and was valid when runc 1.2.9 was released (2025-11).
        k.check_primary(key, 1_762_000_000).unwrap();
        assert_eq!(k.fingerprints().len(), 4, "{:?}", k.fingerprints());
    }

    #[test]
    fn every_compiled_keyring_parses() {
        for (name, _) in KEYRINGS {
            let k = Keyring::named(name).unwrap();
            assert!(!k.keys.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_malformed_asc_is_refused_as_such() {
        let k = runc();
        for asc in [
            &b"not a signature"[..],
            b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
            b"\xff\xfe",
        ] {
            let err = k.verify(asc, &b"x"[..], 0).unwrap_err();
            assert!(matches!(err, SigError::PgpMalformed(_)), "{err}");
        }
    }

    #[test]
    fn a_keyring_without_keys_is_refused() {
        let err = Keyring::parse("x", "x.keyring", "pub ed25519\n").unwrap_err();
        assert!(err.to_string().contains("x.keyring"), "{err}");
    }

    #[test]
    fn the_test_keyrings_are_reachable_only_in_debug_builds() {
        assert_eq!(TEST_KEYRINGS_REACHABLE, cfg!(debug_assertions));
        let src = include_str!("openpgp.rs");
        let gate = "#[cfg(not(debug_assertions))]\nfn test_keyrings_dir() -> Option<std::path::PathBuf> {\n    None\n}";
        assert!(
            src.contains(gate),
            "the release build must not read {TEST_KEYRINGS_ENV}"
        );
    }
}
