//! The PKI room: the certificate table ([`certs`]), the kubeconfigs made from it
//! ([`kubeconfig`]), and here the PKI step: walk the certificate table, keep what is still right, make what is missing or
//! wrong (one [`Outcome`] per item, saying why), write keys 0600 in 0700 directories, atomically.
//!
//! CAs are inspected first and never replaced without `force`: a broken CA is an error before
//! anything is written. Leaves are inspected and made in parallel on every core
//! ([`par_map`]); RSA key generation dominates the run time.

pub mod certs;
pub mod kubeconfig;
pub mod rotate;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::r#gen::plan::spec::{ClusterSpec, KeyAlgo};
use crate::r#gen::{MODE_PUBLIC, MODE_SECRET, MODE_SECRET_DIR, Staged, WriteError};
pub use crate::util::sha256_hex;
use certs::{Item, Kind, San};

/// Clock skew tolerated between the machine that generates and the nodes: certificates are
/// valid from this long before their creation.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Errors of the PKI step. Each names the certificate or file.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An existing CA (or the service-account key) cannot be used; replacing it needs `--force`.
    #[error("{name} cannot be reused: {reason}")]
    CaUnusable {
        /// The CA's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Key generation or signing failed.
    #[error("cannot make {name}: {message}")]
    Crypto {
        /// The certificate.
        name: String,
        /// rcgen's message.
        message: String,
    },
    /// `certs renew NAME` with a name that is not in the table.
    #[error("{name:?} is not a certificate of this cluster")]
    UnknownCert {
        /// The name given.
        name: String,
    },
    /// `certs renew NAME` with a CA or key pair.
    #[error("{name} is a CA or key pair: `kbin certs renew` only renews leaf certificates")]
    NotALeaf {
        /// The name given.
        name: String,
    },
    /// `certs renew` on a leaf whose files are missing or broken.
    #[error("{name} cannot be renewed: {reason}")]
    CannotRenew {
        /// The certificate.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// What happened to one certificate, key pair or kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Still right: left as it was.
    Kept,
    /// Did not exist: made.
    Created,
    /// Existed but was wrong (or `--force`): made anew.
    Replaced,
    /// Re-signed with its key, subject and SANs (`certs renew`).
    Renewed,
}

/// One decision of the PKI step.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The certificate's name (its path under `pki/` without extension) or the kubeconfig's
    /// file name.
    pub name: String,
    /// What was done.
    pub action: Action,
    /// Why (for created and replaced items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// SHA-256 of the certificate's DER (of the public key's DER for a key pair).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Outcome {
    /// `created  apiserver (missing)`: one line for the terminal.
    pub fn line(&self) -> String {
        let verb = match self.action {
            Action::Kept => "kept",
            Action::Created => "created",
            Action::Replaced => "replaced",
            Action::Renewed => "renewed",
        };
        match &self.reason {
            Some(r) => format!("{verb:<8} {} ({r})", self.name),
            None => format!("{verb:<8} {}", self.name),
        }
    }
}

/// `<out>/pki`.
pub fn pki_dir(out: &Path) -> PathBuf {
    out.join("pki")
}

/// `<out>/kubeconfigs`.
pub fn kubeconfig_dir(out: &Path) -> PathBuf {
    out.join("kubeconfigs")
}

/// Every certificate and key pair of `spec` with its files: the table the configs step reads
/// (`item.cert_path(&pki_dir(out))`, `item.key_path(…)`, `item.kubeconfig`).
pub fn files(spec: &ClusterSpec) -> Vec<Item> {
    certs::plan(spec)
}

/// Each CA in `authorities` that `keep` names, with its rcgen issuer.
fn issuers<'a>(
    authorities: &'a std::collections::HashMap<String, Authority>,
    keep: impl Fn(&str) -> bool,
) -> Result<std::collections::HashMap<&'a str, (&'a Authority, Issuer<'a, &'a KeyPair>)>, PkiError>
{
    authorities
        .iter()
        .filter(|(name, _)| keep(name))
        .map(|(name, a)| {
            let issuer =
                Issuer::from_ca_cert_der(&a.der.as_slice().into(), &a.key).map_err(|e| {
                    PkiError::Crypto {
                        name: name.clone(),
                        message: e.to_string(),
                    }
                })?;
            Ok((name.as_str(), (a, issuer)))
        })
        .collect()
}

/// A CA or key pair as loaded or made: its certificate DER and PEM, and its key.
struct Authority {
    der: Vec<u8>,
    cert_pem: String,
    key: KeyPair,
    not_after: time::OffsetDateTime,
    fresh: bool,
}

/// A CA and its rcgen issuer.
type Signer<'a, 'k> = (&'a Authority, &'a Issuer<'k, &'k KeyPair>);

/// Options of [`generate`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Replace every CA, key pair and certificate.
    pub force: bool,
    /// Fail instead of creating a missing CA or key pair (`kbin gen node` adds to a tree).
    pub require_ca: bool,
}

/// Generate (or bring up to date) the PKI and kubeconfigs of `spec` under `out`, staged in
/// `staged` (the caller commits). `report` is called once per decision, as it is made (from
/// several threads).
pub fn generate(
    spec: &ClusterSpec,
    out: &Path,
    opts: Options,
    staged: &Staged,
    report: &(dyn Fn(&Outcome) + Sync),
) -> Result<Vec<Outcome>, PkiError> {
    let pki = pki_dir(out);
    let items = certs::plan(spec);
    let now = SystemTime::now();

    // Inspect every CA and key pair before writing anything: a CA that cannot be reused is an
    // error unless --force.
    let roots: Vec<&Item> = items.iter().filter(|i| i.ca.is_none()).collect();
    let mut root_plans = Vec::new();
    for item in &roots {
        let verdict = if opts.force {
            Verdict::Make(Action::Replaced, "--force".into())
        } else {
            inspect_root(item, &pki, now)?
        };
        if opts.require_ca && matches!(verdict, Verdict::Make(Action::Created, _)) {
            return Err(PkiError::CaUnusable {
                name: item.name.clone(),
                reason: format!("{} is missing", item.cert_path(&pki).display()),
            });
        }
        root_plans.push(verdict);
    }

    ensure_dirs(&pki, &items, staged)?;
    let made = par_map(
        &roots.iter().zip(&root_plans).collect::<Vec<_>>(),
        |(item, v)| make_root(item, v, &pki, spec, now, staged),
    );
    let mut outcomes = Vec::new();
    let mut authorities = std::collections::HashMap::new();
    for r in made {
        let (outcome, auth, name) = r?;
        report(&outcome);
        outcomes.push(outcome);
        authorities.insert(name, auth);
    }

    let issuers = issuers(&authorities, |name| {
        items.iter().any(|i| i.name == name && i.is_ca())
    })?;

    let leaves: Vec<&Item> = items.iter().filter(|i| i.ca.is_some()).collect();
    let leaf_results = par_map(&leaves, |item| {
        let ca_name = item.ca.as_deref().expect("leaves have a CA");
        let (auth, issuer) = issuers
            .get(ca_name)
            .expect("the table's CAs are all planned");
        let verdict = if opts.force {
            Verdict::Make(Action::Replaced, "--force".into())
        } else if auth.fresh {
            match std::fs::metadata(item.cert_path(&pki)) {
                Ok(_) => Verdict::Make(Action::Replaced, format!("{ca_name} is new")),
                Err(_) => Verdict::Make(Action::Created, "missing".into()),
            }
        } else {
            inspect_leaf(item, &pki, auth, spec.key_algo, now)
        };
        let outcome = make_leaf(item, verdict, &pki, spec, (auth, issuer), now, staged)?;
        report(&outcome);
        Ok::<_, PkiError>(outcome)
    });
    for r in leaf_results {
        outcomes.push(r?);
    }

    let kc = crate::r#gen::pki::kubeconfig::write_all(
        spec,
        out,
        &items,
        &authorities_pem(&authorities),
        staged,
    )?;
    for o in kc {
        report(&o);
        outcomes.push(o);
    }
    Ok(outcomes)
}

fn authorities_pem(
    a: &std::collections::HashMap<String, Authority>,
) -> std::collections::HashMap<String, String> {
    a.iter()
        .map(|(k, v)| (k.clone(), v.cert_pem.clone()))
        .collect()
}

/// Create `pki/` and every directory under it 0700 (they hold keys).
fn ensure_dirs(pki: &Path, items: &[Item], staged: &Staged) -> Result<(), PkiError> {
    let mut dirs: Vec<PathBuf> = items
        .iter()
        .filter_map(|i| i.key_path(pki).parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    staged.create_dir(pki, MODE_SECRET_DIR)?;
    for d in dirs {
        // Parents (pki/etcd, pki/nodes) are made 0700 by create_dir's recursion.
        staged.create_dir(&d, MODE_SECRET_DIR)?;
    }
    Ok(())
}

enum Verdict {
    Keep,
    Make(Action, String),
}

/// Decide about a CA or key pair. Missing entirely: make it. Present but unusable: an error
/// (replacing a CA invalidates every certificate it signed, so only `--force` does it).
fn inspect_root(item: &Item, pki: &Path, now: SystemTime) -> Result<Verdict, PkiError> {
    let (cert_path, key_path) = (item.cert_path(pki), item.key_path(pki));
    let (has_cert, has_key) = (cert_path.exists(), key_path.exists());
    if !has_cert && !has_key {
        return Ok(Verdict::Make(Action::Created, "missing".into()));
    }
    let unusable = |reason: String| PkiError::CaUnusable {
        name: item.name.clone(),
        reason,
    };
    let key_pem = read_string(&key_path)
        .map_err(|_| unusable(format!("{} is missing", key_path.display())))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| unusable(format!("{} is not a private key: {e}", key_path.display())))?;
    if item.kind == Kind::KeyPair {
        let pub_pem = read_string(&cert_path)
            .map_err(|_| unusable(format!("{} is missing", cert_path.display())))?;
        if pub_pem.trim() != key.public_key_pem().trim() {
            return Err(unusable(format!(
                "{} does not hold the public key of {}",
                cert_path.display(),
                key_path.display()
            )));
        }
        return Ok(Verdict::Keep);
    }
    let der = read_cert_der(&cert_path).map_err(unusable)?;
    let (_, x509) = X509Certificate::from_der(&der)
        .map_err(|e| unusable(format!("{} does not parse: {e}", cert_path.display())))?;
    if let Some(problem) = root_problem(&x509, &key, now) {
        return Err(unusable(problem));
    }
    Ok(Verdict::Keep)
}

fn root_problem(x509: &X509Certificate<'_>, key: &KeyPair, now: SystemTime) -> Option<String> {
    if !x509.is_ca() {
        return Some("it is not a CA certificate".into());
    }
    if x509.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(key) {
        return Some("its key does not match its certificate".into());
    }
    validity_problem(x509, now)
}

fn validity_problem(x509: &X509Certificate<'_>, now: SystemTime) -> Option<String> {
    let now = time::OffsetDateTime::from(now);
    let v = x509.validity();
    if now > v.not_after.to_datetime() {
        return Some(format!(
            "expired on {}",
            crate::util::rfc3339(v.not_after.to_datetime())
        ));
    }
    if now < v.not_before.to_datetime() {
        return Some(format!(
            "not valid before {}",
            crate::util::rfc3339(v.not_before.to_datetime())
        ));
    }
    None
}

/// Decide about a leaf: keep it only if it is readable, its key matches, its CA signed it, it
/// is valid now, and its subject, SANs and key type are what the spec asks.
fn inspect_leaf(
    item: &Item,
    pki: &Path,
    ca: &Authority,
    algo: KeyAlgo,
    now: SystemTime,
) -> Verdict {
    let (cert_path, key_path) = (item.cert_path(pki), item.key_path(pki));
    let replace = |why: String| Verdict::Make(Action::Replaced, why);
    let (Ok(der), true) = (read_cert_der(&cert_path), key_path.exists()) else {
        return match (cert_path.exists(), key_path.exists()) {
            (false, false) => Verdict::Make(Action::Created, "missing".into()),
            (true, false) => replace("key missing".into()),
            (false, true) => replace("certificate missing".into()),
            (true, true) => replace("certificate unreadable".into()),
        };
    };
    let Ok((_, x509)) = X509Certificate::from_der(&der) else {
        return replace("certificate does not parse".into());
    };
    let key = match read_string(&key_path).ok().map(|p| KeyPair::from_pem(&p)) {
        Some(Ok(k)) => k,
        _ => return replace("key unreadable".into()),
    };
    match leaf_problem(item, &x509, &key, ca, algo, now) {
        Some(why) => replace(why),
        None => Verdict::Keep,
    }
}

fn leaf_problem(
    item: &Item,
    x509: &X509Certificate<'_>,
    key: &KeyPair,
    ca: &Authority,
    algo: KeyAlgo,
    now: SystemTime,
) -> Option<String> {
    if x509.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(key) {
        return Some("key does not match the certificate".into());
    }
    let ca_name = item.ca.as_deref().unwrap_or("its CA");
    let signed = X509Certificate::from_der(&ca.der)
        .ok()
        .is_some_and(|(_, c)| x509.verify_signature(Some(c.public_key())).is_ok());
    if !signed {
        return Some(format!("not signed by {ca_name}"));
    }
    if let Some(p) = validity_problem(x509, now) {
        return Some(p);
    }
    if explicit_ca_false(x509) {
        // What kbin wrote with rcgen < 0.14.10: reissue it, or a strict client refuses it.
        return Some("BasicConstraints encodes cA FALSE explicitly (not DER)".into());
    }
    let (cn, org) = subject(x509);
    if cn.as_deref() != Some(item.cn.as_str()) || org != item.org {
        return Some("subject differs".into());
    }
    let mut have = cert_sans(x509);
    let mut want = item.sans.clone();
    have.sort();
    want.sort();
    if have != want {
        let missing: Vec<String> = want
            .iter()
            .filter(|s| !have.contains(s))
            .map(ToString::to_string)
            .collect();
        let extra: Vec<String> = have
            .iter()
            .filter(|s| !want.contains(s))
            .map(ToString::to_string)
            .collect();
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("SANs lack {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            why.push(format!("SANs have extra {}", extra.join(", ")));
        }
        return Some(why.join("; "));
    }
    match key_algo_of(x509) {
        Some(a) if a == algo => None,
        Some(a) => Some(format!("key is {a}, the spec asks {algo}")),
        None => Some("unsupported key type".into()),
    }
}

/// True if the certificate's BasicConstraints holds `cA FALSE` explicitly (bytes
/// `30 03 01 01 00`). cA is `DEFAULT FALSE`, and DER omits a default value (X.690 §11.5), so this
/// is not DER: strict parsers (Python `cryptography`, rust-asn1) refuse the whole certificate,
/// while openssl and Go accept it. rcgen before 0.14.10 wrote it for every leaf (rustls/rcgen#443).
fn explicit_ca_false(x509: &X509Certificate<'_>) -> bool {
    x509.extensions().iter().any(|e| {
        e.oid == x509_parser::oid_registry::OID_X509_EXT_BASIC_CONSTRAINTS
            && matches!(e.value, [0x30, _, 0x01, 0x01, 0x00, ..])
    })
}

/// The subject's CN and O.
pub fn subject(x509: &X509Certificate<'_>) -> (Option<String>, Option<String>) {
    let s = x509.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    (
        first(&mut s.iter_common_name()),
        first(&mut s.iter_organization()),
    )
}

/// The certificate's SANs.
pub fn cert_sans(x509: &X509Certificate<'_>) -> Vec<San> {
    let mut out = Vec::new();
    for ext in x509.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.push(San::Dns(d.to_string())),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            out.push(San::Ip(IpAddr::from(a)));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            out.push(San::Ip(IpAddr::from(a)));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// The key algorithm of a certificate's public key.
pub fn key_algo_of(x509: &X509Certificate<'_>) -> Option<KeyAlgo> {
    match x509.public_key().parsed().ok()? {
        PublicKey::EC(ec) => match ec.key_size() {
            256 => Some(KeyAlgo::EcdsaP256),
            384 => Some(KeyAlgo::EcdsaP384),
            _ => None,
        },
        PublicKey::RSA(rsa) => match rsa.key_size() {
            2048 => Some(KeyAlgo::Rsa2048),
            3072 => Some(KeyAlgo::Rsa3072),
            4096 => Some(KeyAlgo::Rsa4096),
            _ => None,
        },
        _ => None,
    }
}

fn make_root(
    item: &Item,
    verdict: &Verdict,
    pki: &Path,
    spec: &ClusterSpec,
    now: SystemTime,
    staged: &Staged,
) -> Result<(Outcome, Authority, String), PkiError> {
    let crypto = |e: rcgen::Error| PkiError::Crypto {
        name: item.name.clone(),
        message: e.to_string(),
    };
    let (cert_path, key_path) = (item.cert_path(pki), item.key_path(pki));
    match verdict {
        Verdict::Keep => {
            let key = KeyPair::from_pem(&read_string(&key_path)?).map_err(crypto)?;
            let (der, cert_pem, not_after) = if item.kind == Kind::KeyPair {
                let der = rcgen::PublicKeyData::subject_public_key_info(&key);
                (der, key.public_key_pem(), time::OffsetDateTime::now_utc())
            } else {
                let pem = read_string(&cert_path)?;
                let der = read_cert_der(&cert_path).map_err(|reason| PkiError::CaUnusable {
                    name: item.name.clone(),
                    reason,
                })?;
                let na = X509Certificate::from_der(&der)
                    .map(|(_, c)| c.validity().not_after.to_datetime())
                    .map_err(|e| PkiError::CaUnusable {
                        name: item.name.clone(),
                        reason: e.to_string(),
                    })?;
                (der, pem, na)
            };
            let outcome = Outcome {
                name: item.name.clone(),
                action: Action::Kept,
                reason: None,
                sha256: Some(sha256_hex(&der)),
            };
            Ok((
                outcome,
                Authority {
                    der,
                    cert_pem,
                    key,
                    not_after,
                    fresh: false,
                },
                item.name.clone(),
            ))
        }
        Verdict::Make(action, why) => {
            let key = new_key(spec.key_algo).map_err(crypto)?;
            let (der, cert_pem, not_after) = if item.kind == Kind::KeyPair {
                let pub_pem = key.public_key_pem();
                staged.stage(&key_path, key.serialize_pem().as_bytes(), MODE_SECRET)?;
                staged.stage(&cert_path, pub_pem.as_bytes(), MODE_PUBLIC)?;
                (
                    rcgen::PublicKeyData::subject_public_key_info(&key),
                    pub_pem,
                    time::OffsetDateTime::now_utc(),
                )
            } else {
                let params = cert_params(item, spec.key_algo, now, spec.ca_validity, None);
                let not_after = params.not_after;
                let cert = params.self_signed(&key).map_err(crypto)?;
                staged.stage(&key_path, key.serialize_pem().as_bytes(), MODE_SECRET)?;
                staged.stage(&cert_path, cert.pem().as_bytes(), MODE_PUBLIC)?;
                (cert.der().to_vec(), cert.pem(), not_after)
            };
            let outcome = Outcome {
                name: item.name.clone(),
                action: *action,
                reason: Some(why.clone()),
                sha256: Some(sha256_hex(&der)),
            };
            Ok((
                outcome,
                Authority {
                    der,
                    cert_pem,
                    key,
                    not_after,
                    fresh: true,
                },
                item.name.clone(),
            ))
        }
    }
}

fn make_leaf(
    item: &Item,
    verdict: Verdict,
    pki: &Path,
    spec: &ClusterSpec,
    ca: Signer<'_, '_>,
    now: SystemTime,
    staged: &Staged,
) -> Result<Outcome, PkiError> {
    let cert_path = item.cert_path(pki);
    match verdict {
        Verdict::Keep => {
            let der = read_cert_der(&cert_path).map_err(|reason| PkiError::CannotRenew {
                name: item.name.clone(),
                reason,
            })?;
            Ok(Outcome {
                name: item.name.clone(),
                action: Action::Kept,
                reason: None,
                sha256: Some(sha256_hex(&der)),
            })
        }
        Verdict::Make(action, why) => {
            let key = new_key(spec.key_algo).map_err(|e| PkiError::Crypto {
                name: item.name.clone(),
                message: e.to_string(),
            })?;
            let der = sign_leaf(item, &key, pki, spec, ca, now, true, staged)?;
            Ok(Outcome {
                name: item.name.clone(),
                action,
                reason: Some(why),
                sha256: Some(sha256_hex(&der)),
            })
        }
    }
}

/// Sign `item` for `key` and write its certificate (and, if `write_key`, its key first: a crash
/// in between leaves a mismatched pair that the next run replaces).
#[allow(clippy::too_many_arguments)] // the step's whole context; a struct would only rename it
fn sign_leaf(
    item: &Item,
    key: &KeyPair,
    pki: &Path,
    spec: &ClusterSpec,
    (ca, issuer): Signer<'_, '_>,
    now: SystemTime,
    write_key: bool,
    staged: &Staged,
) -> Result<Vec<u8>, PkiError> {
    let params = cert_params(
        item,
        spec.key_algo,
        now,
        spec.cert_validity,
        Some(ca.not_after),
    );
    let cert = params
        .signed_by(key, issuer)
        .map_err(|e| PkiError::Crypto {
            name: item.name.clone(),
            message: e.to_string(),
        })?;
    if write_key {
        staged.stage(
            &item.key_path(pki),
            key.serialize_pem().as_bytes(),
            MODE_SECRET,
        )?;
    }
    staged.stage(&item.cert_path(pki), cert.pem().as_bytes(), MODE_PUBLIC)?;
    Ok(cert.der().to_vec())
}

/// A new key of `algo`.
pub fn new_key(algo: KeyAlgo) -> Result<KeyPair, rcgen::Error> {
    use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize};
    match algo {
        KeyAlgo::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyAlgo::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyAlgo::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyAlgo::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
        KeyAlgo::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
    }
}

fn cert_params(
    item: &Item,
    algo: KeyAlgo,
    now: SystemTime,
    validity: Duration,
    ca_not_after: Option<time::OffsetDateTime>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = &item.org {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, item.cn.as_str());
    p.distinguished_name = dn;
    let start = time::OffsetDateTime::from(now);
    p.not_before = start - BACKDATE;
    p.not_after = start + validity;
    if let Some(ca_end) = ca_not_after {
        // A leaf never outlives its CA.
        p.not_after = p.not_after.min(ca_end);
    }
    p.serial_number = Some(serial(item, now));
    p.subject_alt_names = item
        .sans
        .iter()
        .filter_map(|s| match s {
            San::Dns(d) => d.as_str().try_into().ok().map(SanType::DnsName),
            San::Ip(ip) => Some(SanType::IpAddress(*ip)),
        })
        .collect();
    let rsa = matches!(algo, KeyAlgo::Rsa2048 | KeyAlgo::Rsa3072 | KeyAlgo::Rsa4096);
    let mut ku = vec![KeyUsagePurpose::DigitalSignature];
    if rsa {
        // Key transport only exists for RSA keys (TLS 1.2 RSA key exchange).
        ku.push(KeyUsagePurpose::KeyEncipherment);
    }
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    match item.kind {
        Kind::Ca => {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ku.push(KeyUsagePurpose::KeyCertSign);
        }
        Kind::Server => p.extended_key_usages = vec![ServerAuth],
        Kind::Client => p.extended_key_usages = vec![ClientAuth],
        Kind::ServerClient => p.extended_key_usages = vec![ServerAuth, ClientAuth],
        Kind::KeyPair => {}
    }
    if item.kind != Kind::Ca {
        p.is_ca = IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
    }
    p.key_usages = ku;
    p
}

/// 16 bytes, positive, unique per item and instant.
fn serial(item: &Item, now: SystemTime) -> SerialNumber {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut h = Sha256::new();
    h.update(item.name.as_bytes());
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let mut bytes: Vec<u8> = h.finalize()[..16].to_vec();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Renew leaves (all, or those named) with their existing keys, the table's subject and SANs
/// and a fresh validity; then rewrite the kubeconfigs that embed them (staged in `staged`).
pub fn renew(
    spec: &ClusterSpec,
    out: &Path,
    names: &[String],
    staged: &Staged,
    report: &(dyn Fn(&Outcome) + Sync),
) -> Result<Vec<Outcome>, PkiError> {
    let pki = pki_dir(out);
    let items = certs::plan(spec);
    for n in names {
        let n = n.trim_end_matches(".crt");
        match items.iter().find(|i| i.name == n) {
            None => return Err(PkiError::UnknownCert { name: n.into() }),
            Some(i) if i.ca.is_none() => return Err(PkiError::NotALeaf { name: n.into() }),
            Some(_) => {}
        }
    }
    let chosen: Vec<&Item> = items
        .iter()
        .filter(|i| i.ca.is_some())
        .filter(|i| names.is_empty() || names.iter().any(|n| n.trim_end_matches(".crt") == i.name))
        .collect();
    // Load every CA and every chosen key first: nothing is written unless all can be renewed.
    let authorities = load_authorities(&items, &pki, staged)?;
    resign(spec, out, &items, &chosen, &authorities, staged, report)
}

/// Every CA of `items` as this run leaves it (staged, else on disk): its signing certificate
/// (the first of its file), that file whole (the trust bundle kubeconfigs embed) and its key.
fn load_authorities(
    items: &[Item],
    pki: &Path,
    staged: &Staged,
) -> Result<std::collections::HashMap<String, Authority>, PkiError> {
    let mut authorities = std::collections::HashMap::new();
    for root in items.iter().filter(|i| i.is_ca()) {
        let unusable = |reason: String| PkiError::CaUnusable {
            name: root.name.clone(),
            reason,
        };
        let read = |p: &Path| {
            staged
                .read(p)
                .map_err(|source| PkiError::Read {
                    path: p.to_owned(),
                    source,
                })
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let key =
            KeyPair::from_pem(&read(&root.key_path(pki))?).map_err(|e| unusable(e.to_string()))?;
        let cert_pem = read(&root.cert_path(pki))?;
        let der = cert_der_of(cert_pem.as_bytes(), &root.cert_path(pki)).map_err(unusable)?;
        let (_, x) = X509Certificate::from_der(&der).map_err(|e| unusable(e.to_string()))?;
        if let Some(p) = root_problem(&x, &key, SystemTime::now()) {
            return Err(unusable(p));
        }
        let not_after = x.validity().not_after.to_datetime();
        authorities.insert(
            root.name.clone(),
            Authority {
                der,
                cert_pem,
                key,
                not_after,
                fresh: false,
            },
        );
    }
    Ok(authorities)
}

/// Re-sign `chosen` leaves with their keys and the table's subject and SANs by their CA in
/// `authorities`, then rewrite every kubeconfig (staged).
fn resign(
    spec: &ClusterSpec,
    out: &Path,
    items: &[Item],
    chosen: &[&Item],
    authorities: &std::collections::HashMap<String, Authority>,
    staged: &Staged,
    report: &(dyn Fn(&Outcome) + Sync),
) -> Result<Vec<Outcome>, PkiError> {
    let pki = pki_dir(out);
    let mut keys = Vec::new();
    for item in chosen {
        let cannot = |reason: String| PkiError::CannotRenew {
            name: item.name.clone(),
            reason,
        };
        let pem = read_string(&item.key_path(&pki))
            .map_err(|_| cannot("its key is missing: `kbin gen cluster` makes a new one".into()))?;
        let key =
            KeyPair::from_pem(&pem).map_err(|e| cannot(format!("its key is unreadable: {e}")))?;
        keys.push(key);
    }
    let issuers = issuers(authorities, |_| true)?;
    let now = SystemTime::now();
    let work: Vec<(&&Item, &KeyPair)> = chosen.iter().zip(keys.iter()).collect();
    let results = par_map(&work, |(item, key)| {
        let (auth, issuer) = issuers
            .get(item.ca.as_deref().expect("leaves have a CA"))
            .expect("every CA was loaded");
        let der = sign_leaf(item, key, &pki, spec, (auth, issuer), now, false, staged)?;
        let o = Outcome {
            name: item.name.clone(),
            action: Action::Renewed,
            reason: None,
            sha256: Some(sha256_hex(&der)),
        };
        report(&o);
        Ok::<_, PkiError>(o)
    });
    let mut outcomes = Vec::new();
    for r in results {
        outcomes.push(r?);
    }
    for o in crate::r#gen::pki::kubeconfig::write_all(
        spec,
        out,
        items,
        &authorities_pem(authorities),
        staged,
    )? {
        report(&o);
        outcomes.push(o);
    }
    Ok(outcomes)
}

/// `f` over `items` on every core, results in input order: key generation is CPU-bound.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    crate::util::parallel_map(items, crate::util::cores(), f)
}

fn read_string(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The DER of the first certificate in a PEM file; the error says what is wrong, with the path.
pub fn read_cert_der(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    cert_der_of(&text, path)
}

/// The DER of the first certificate of `text`, the PEM file at `path`.
fn cert_der_of(text: &[u8], path: &Path) -> Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text)
        .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!(
            "{} holds a {}, not a CERTIFICATE",
            path.display(),
            pem.label
        ));
    }
    Ok(pem.contents)
}

/// One row of `kbin certs check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    /// The certificate's name.
    pub name: String,
    /// Its expiry (RFC 3339), when readable.
    pub expires: Option<String>,
    /// Seconds left until expiry (negative once expired), when readable.
    pub seconds_left: Option<i64>,
    /// The signing CA (`None` for CAs and key pairs).
    pub ca: Option<String>,
    /// Whether it is a CA.
    pub is_ca: bool,
    /// Everything wrong with it; empty when fine.
    pub problems: Vec<String>,
    /// For a CA being rotated: where its rotation stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
}

impl CheckRow {
    /// `364d`, `9y`, `5h`, `expired`: kubeadm's "residual time".
    pub fn time_left(&self) -> String {
        match self.seconds_left {
            None => "-".into(),
            Some(s) if s <= 0 => "expired".into(),
            Some(s) if s >= 2 * 365 * 86_400 => format!("{}y", s / (365 * 86_400)),
            Some(s) if s >= 86_400 => format!("{}d", s / 86_400),
            Some(s) => format!("{}h", s / 3600),
        }
    }
}

/// Check every certificate of `spec` under `out`: readable, key matching, signed by its CA,
/// the subject and SANs the table asks, and not expiring within `warn`.
pub fn check(spec: &ClusterSpec, out: &Path, warn: Duration) -> Vec<CheckRow> {
    let pki = pki_dir(out);
    let items = certs::plan(spec);
    let now = SystemTime::now();
    let checker = Checker {
        spec,
        cas: load_cas(&items, &pki),
        pki,
        now,
        soon: now + warn,
        warn,
        rotation: rotate::state(out),
    };
    par_map(&items, |item| checker.row(item))
}

/// The CAs of `items` that load from `pki` (certificate and key), for the leaves' signature
/// checks.
fn load_cas<'a>(items: &'a [Item], pki: &Path) -> std::collections::HashMap<&'a str, Authority> {
    let mut cas = std::collections::HashMap::new();
    for item in items.iter().filter(|i| i.is_ca()) {
        let loaded = (|| {
            let key = KeyPair::from_pem(&read_string(&item.key_path(pki)).ok()?).ok()?;
            let der = read_cert_der(&item.cert_path(pki)).ok()?;
            let cert_pem = read_string(&item.cert_path(pki)).ok()?;
            Some(Authority {
                der,
                cert_pem,
                key,
                not_after: time::OffsetDateTime::now_utc(),
                fresh: false,
            })
        })();
        if let Some(a) = loaded {
            cas.insert(item.name.as_str(), a);
        }
    }
    cas
}

/// What [`check`] checks every item against.
struct Checker<'a> {
    spec: &'a ClusterSpec,
    pki: PathBuf,
    now: SystemTime,
    /// `now` + `warn`: expiring before it is a problem.
    soon: SystemTime,
    warn: Duration,
    rotation: Result<Option<rotate::State>, rotate::RotateError>,
    cas: std::collections::HashMap<&'a str, Authority>,
}

impl Checker<'_> {
    /// The row of one item: its CA rotation, its key, then its certificate.
    fn row(&self, item: &Item) -> CheckRow {
        let mut row = CheckRow {
            name: item.name.clone(),
            expires: None,
            seconds_left: None,
            ca: item.ca.clone(),
            is_ca: item.is_ca(),
            problems: Vec::new(),
            rotation: None,
        };
        if item.is_ca() {
            self.ca_rotation(item, &mut row);
        }
        let key = self.key(item, &mut row);
        if item.kind == Kind::KeyPair {
            let cert_path = item.cert_path(&self.pki);
            match (read_string(&cert_path), &key) {
                (Err(_), _) => row
                    .problems
                    .push(format!("{} is missing", cert_path.display())),
                (Ok(p), Some(k)) if p.trim() != k.public_key_pem().trim() => row
                    .problems
                    .push("public key does not match the private key".into()),
                _ => {}
            }
            return row;
        }
        self.certificate(item, key, &mut row);
        row
    }

    /// A CA's rotation phase, and whether its file holds as many certificates as the phase
    /// wants.
    fn ca_rotation(&self, item: &Item, row: &mut CheckRow) {
        let rotating = match &self.rotation {
            Ok(Some(st)) if st.cas.contains(&item.name) => Some(st.phase),
            _ => None,
        };
        row.rotation = rotating.map(|p| {
            match p {
                rotate::Phase::Begun => "begun: old and new trusted, the old one signs",
                rotate::Phase::InUse => "in use: new and old trusted, the new one signs",
            }
            .to_string()
        });
        if let Err(e) = &self.rotation {
            row.problems.push(e.to_string());
        }
        let want = if rotating.is_some() { 2 } else { 1 };
        if let Ok(pem) = read_string(&item.cert_path(&self.pki)) {
            let n = rotate::count_certs(&pem);
            if n != want && n > 0 {
                row.problems.push(format!(
                    "it holds {n} certificates; {want} expected{}",
                    if rotating.is_some() {
                        " during its rotation"
                    } else {
                        " with no rotation under way"
                    }
                ));
            }
        }
    }

    /// The item's private key, or the problem reading it.
    fn key(&self, item: &Item, row: &mut CheckRow) -> Option<KeyPair> {
        let key_path = item.key_path(&self.pki);
        match read_string(&key_path) {
            Err(_) => {
                row.problems
                    .push(format!("{} is missing", key_path.display()));
                None
            }
            Ok(pem) => match KeyPair::from_pem(&pem) {
                Ok(k) => Some(k),
                Err(e) => {
                    row.problems.push(format!("key unreadable: {e}"));
                    None
                }
            },
        }
    }

    /// The item's certificate: parsed, its expiry, then (with its key) what a root or a leaf
    /// must be.
    fn certificate(&self, item: &Item, key: Option<KeyPair>, row: &mut CheckRow) {
        let der = match read_cert_der(&item.cert_path(&self.pki)) {
            Ok(d) => d,
            Err(e) => {
                row.problems.push(e);
                return;
            }
        };
        let Ok((_, x509)) = X509Certificate::from_der(&der) else {
            row.problems.push("certificate does not parse".into());
            return;
        };
        self.expiry(&x509, row);
        let Some(key) = key else { return };
        if item.is_ca() {
            if let Some(p) =
                root_problem(&x509, &key, self.now).filter(|p| !p.starts_with("expired"))
            {
                row.problems.push(p);
            }
            return;
        }
        let ca_name = item.ca.as_deref().expect("leaves have a CA");
        match self.cas.get(ca_name) {
            None => row
                .problems
                .push(format!("its CA {ca_name} is missing or unreadable")),
            Some(ca) => {
                if let Some(p) = leaf_problem(
                    item,
                    &x509,
                    &key,
                    ca,
                    key_algo_of(&x509).unwrap_or(self.spec.key_algo),
                    self.now,
                )
                .filter(|p| !p.starts_with("expired"))
                {
                    row.problems.push(p);
                }
            }
        }
    }

    /// When the certificate expires, and whether it has or will within `warn`.
    fn expiry(&self, x509: &X509Certificate<'_>, row: &mut CheckRow) {
        let now = time::OffsetDateTime::from(self.now);
        let not_after = x509.validity().not_after.to_datetime();
        row.expires = Some(crate::util::rfc3339(not_after));
        row.seconds_left = Some((not_after - now).whole_seconds());
        if not_after < now {
            row.problems.push("expired".into());
        } else if not_after < time::OffsetDateTime::from(self.soon) {
            row.problems.push(format!(
                "expires within {}",
                crate::r#gen::plan::spec::format_duration(self.warn)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::r#gen::plan::spec::SpecInput;
    use x509_parser::oid_registry::OID_X509_EXT_BASIC_CONSTRAINTS;

    /// The raw BasicConstraints value of every certificate under `pki`, by file.
    fn basic_constraints(pki: &Path) -> Vec<(PathBuf, bool, Vec<u8>)> {
        let mut out = vec![];
        let mut stack = vec![pki.to_owned()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "crt") {
                    let der = read_cert_der(&p).unwrap();
                    let (_, x509) = X509Certificate::from_der(&der).unwrap();
                    let bc = x509
                        .extensions()
                        .iter()
                        .find(|e| e.oid == OID_X509_EXT_BASIC_CONSTRAINTS)
                        .unwrap_or_else(|| panic!("{} has no BasicConstraints", p.display()));
                    out.push((p, x509.is_ca(), bc.value.to_vec()));
                }
            }
        }
        out
    }

    fn one_machine() -> ClusterSpec {
        let mut i = SpecInput::default();
        i.add_this_machine("10.0.0.5".parse().unwrap());
        i.build().unwrap()
    }

    fn generate_committed(spec: &ClusterSpec, out: &Path) -> Vec<Outcome> {
        let staged = Staged::new();
        let o = generate(spec, out, Options::default(), &staged, &|_| {}).unwrap();
        staged.commit().unwrap();
        o
    }

    #[test]
    fn no_leaf_encodes_the_default_ca_false_in_its_basic_constraints() {
        let out = tempfile::tempdir().unwrap();
        let spec = one_machine();
        generate_committed(&spec, out.path());
        let certs = basic_constraints(&pki_dir(out.path()));
        assert!(certs.iter().filter(|(_, ca, _)| !ca).count() > 10);
        for (path, ca, value) in certs {
            let want: &[u8] = if ca {
                // SEQUENCE { BOOLEAN TRUE }: no path length constraint.
                &[0x30, 0x03, 0x01, 0x01, 0xff]
            } else {
                // An empty SEQUENCE: cA is DEFAULT FALSE, and DER omits defaults (X.690 §11.5).
                &[0x30, 0x00]
            };
            assert_eq!(value, want, "{}", path.display());
        }
    }

    #[test]
    fn a_leaf_with_an_explicit_ca_false_is_reissued() {
        let out = tempfile::tempdir().unwrap();
        let spec = one_machine();
        generate_committed(&spec, out.path());
        let pki = pki_dir(out.path());

        // admin.crt as rcgen < 0.14.10 wrote it: BasicConstraints `30 03 01 01 00`, signed by
        // the tree's CA and otherwise right.
        let items = certs::plan(&spec);
        let admin = items.iter().find(|i| i.name == "admin").unwrap();
        let ca_key = KeyPair::from_pem(&read_string(&pki.join("ca.key")).unwrap()).unwrap();
        let issuer =
            Issuer::from_ca_cert_pem(&read_string(&pki.join("ca.crt")).unwrap(), &ca_key).unwrap();
        let ca_der = read_cert_der(&pki.join("ca.crt")).unwrap();
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        let mut params = cert_params(
            admin,
            spec.key_algo,
            SystemTime::now(),
            spec.cert_validity,
            Some(ca.validity().not_after.to_datetime()),
        );
        params.is_ca = IsCa::NoCa;
        let mut bc = rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 19],
            vec![0x30, 0x03, 0x01, 0x01, 0x00],
        );
        bc.set_criticality(true);
        params.custom_extensions.push(bc);
        let key = new_key(spec.key_algo).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(pki.join("admin.crt"), cert.pem()).unwrap();
        std::fs::write(pki.join("admin.key"), key.serialize_pem()).unwrap();
        let (_, x509) = X509Certificate::from_der(cert.der()).unwrap();
        assert!(explicit_ca_false(&x509));

        let outcomes = generate_committed(&spec, out.path());
        let o = outcomes.iter().find(|o| o.name == "admin").unwrap();
        assert_eq!(o.action, Action::Replaced, "{o:?}");
        assert!(o.reason.as_deref().unwrap().contains("cA FALSE"), "{o:?}");
        let remade: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.action != Action::Kept && !o.name.ends_with(".conf"))
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(remade, ["admin"], "no other certificate is remade");
        for (path, _, value) in basic_constraints(&pki) {
            assert_ne!(value, [0x30, 0x03, 0x01, 0x01, 0x00], "{}", path.display());
        }
    }
}
