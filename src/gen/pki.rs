//! The PKI step: issue, reuse, check and renew the certificates of [`super::certs::TABLE`].
//!
//! Idempotent like kubeadm's `certs.go`: a CA on disk is reused (never replaced without
//! `force`); a leaf is reused when it parses, matches its key, is signed by its CA, is valid now,
//! has the subject and key algorithm the spec asks for and carries every SAN it needs. Anything
//! else is issued, and each decision is reported. Keys are generated and certificates signed on
//! every core (RSA key generation dominates). Private keys are 0600 in 0700 directories; every
//! file is written atomically.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::certs::{self, CertSpec, Kind, San, Usage};
use super::spec::{ClusterSpec, KeyAlgo};
use super::{MODE_PUBLIC, MODE_SECRET, MODE_SECRET_DIR, WriteError, create_dir, write_file};

/// A PKI failure, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A CA on disk cannot be used, and replacing it needs `--force`.
    #[error("the CA {path} cannot be used: {reason}")]
    BrokenCa {
        /// The CA certificate.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A CA is missing where one must already exist (`gen node`, `certs renew`).
    #[error("the CA {0} is missing")]
    MissingCa(PathBuf),
    /// Key generation or signing failed.
    #[error("cannot issue {name}")]
    Issue {
        /// The certificate's name.
        name: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Reading failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `certs renew NAME` names no leaf of the table.
    #[error("{0:?} is not a leaf certificate of this cluster")]
    UnknownName(String),
}

/// What happened to one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Kept as it was.
    Reused,
    /// Issued because it was missing.
    Created,
    /// Issued again, replacing what was there.
    Replaced,
}

/// One decision of the PKI step.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The certificate's name (as `certs renew` takes it).
    pub name: String,
    /// Its file under `pki/`.
    pub file: String,
    /// What was done.
    pub action: Action,
    /// Why (empty when reused).
    pub reason: String,
}

/// `DIR/pki`.
pub fn pki_dir(out: &Path) -> PathBuf {
    out.join("pki")
}

/// Every file the PKI step writes for `spec`, as (certificate name, cert path, key path), so the
/// configs step never hard-codes `pki/` paths.
pub fn files(out: &Path, spec: &ClusterSpec) -> Vec<(String, PathBuf, PathBuf)> {
    let pki = pki_dir(out);
    certs::expand(spec)
        .into_iter()
        .map(|c| {
            (
                c.name.clone(),
                pki.join(c.cert_file()),
                pki.join(c.key_file()),
            )
        })
        .collect()
}

/// A CA loaded from disk (or just made).
pub(crate) struct Ca {
    pub(crate) name: String,
    pub(crate) der: Vec<u8>,
    pub(crate) key: KeyPair,
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, rcgen::Error> {
        Issuer::from_ca_cert_der(&self.der.as_slice().into(), &self.key)
    }
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate ({e})"))?;
    Ok(p.contents)
}

fn new_key(algo: KeyAlgo) -> Result<KeyPair, rcgen::Error> {
    use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize};
    match algo {
        KeyAlgo::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyAlgo::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyAlgo::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyAlgo::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
        KeyAlgo::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
    }
}

/// The algorithm of a certificate's public key, if it is one kbin makes.
pub fn key_algo_of(cert: &X509Certificate<'_>) -> Option<KeyAlgo> {
    match cert.public_key().parsed().ok()? {
        PublicKey::RSA(rsa) => match rsa.key_size() {
            2048 => Some(KeyAlgo::Rsa2048),
            3072 => Some(KeyAlgo::Rsa3072),
            4096 => Some(KeyAlgo::Rsa4096),
            _ => None,
        },
        PublicKey::EC(_) => {
            let curve = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()?
                .as_oid()
                .ok()?
                .to_id_string();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => Some(KeyAlgo::EcdsaP256),
                "1.3.132.0.34" => Some(KeyAlgo::EcdsaP384),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A random positive serial number (a renewed certificate with the same key must not repeat
/// its serial, which rcgen would derive from the key).
fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !ok {
        // No /dev/urandom: time and address entropy still make repeats implausible.
        let t = OffsetDateTime::now_utc().unix_timestamp_nanos() as u128;
        b = (t ^ (&b as *const _ as u128)).to_be_bytes();
    }
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

fn params(c: &CertSpec, validity: Duration) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in &c.orgs {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, c.cn.as_str());
    p.distinguished_name = dn;
    // Backdated a little, so a node whose clock lags by minutes accepts a fresh certificate.
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::seconds(validity.as_secs() as i64);
    p.serial_number = Some(serial());
    if c.kind == Kind::Ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = c
            .usages
            .iter()
            .map(|u| match u {
                Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
                Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect();
        for s in &c.sans {
            p.subject_alt_names.push(match s {
                San::Dns(d) => SanType::DnsName(d.as_str().try_into()?),
                San::Ip(ip) => SanType::IpAddress(*ip),
            });
        }
    }
    Ok(p)
}

/// The SANs a parsed certificate carries.
pub fn sans_of(cert: &X509Certificate<'_>) -> Vec<San> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => out.push(San::Dns(d.to_string())),
                    GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            out.push(San::Ip(a.into()));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            out.push(San::Ip(a.into()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out.sort();
    out
}

/// What is wrong with an existing leaf, or `None` when it can be reused.
fn leaf_problem(
    c: &CertSpec,
    cert_pem: &str,
    key_pem: &str,
    ca: &Ca,
    algo: Option<KeyAlgo>,
) -> Option<String> {
    let der = match pem_to_der(cert_pem) {
        Ok(d) => d,
        Err(e) => return Some(e),
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return Some("the certificate does not parse".into());
    };
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return Some("the key does not parse".into());
    };
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Some("the key does not match the certificate".into());
    }
    let Ok((_, ca_cert)) = X509Certificate::from_der(&ca.der) else {
        return Some(format!("its CA {} does not parse", ca.name));
    };
    if cert.verify_signature(Some(ca_cert.public_key())).is_err() {
        return Some(format!("not signed by the current {} CA", ca.name));
    }
    if !cert.validity().is_valid() {
        return Some(format!(
            "not valid now (expires {})",
            cert.validity().not_after
        ));
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok());
    let orgs: Vec<&str> = cert
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    if cn != Some(c.cn.as_str()) || orgs != c.orgs.iter().map(String::as_str).collect::<Vec<_>>() {
        return Some(format!("subject is not CN={} O={}", c.cn, c.orgs.join(",")));
    }
    if let Some(want) = algo {
        let have = key_algo_of(&cert);
        if have != Some(want) {
            return Some(format!(
                "key is {}, the spec asks for {want}",
                have.map_or("unknown".to_string(), |a| a.to_string())
            ));
        }
    }
    let have = sans_of(&cert);
    let missing: Vec<String> = c
        .sans
        .iter()
        .filter(|s| !have.contains(s))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Some(format!("SANs lack {}", missing.join(", ")));
    }
    None
}

/// Run `f` over `items` on every core, keeping the order of the results.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Make the directories of every file of `certs` under `pki` (0700: they hold keys).
fn make_dirs(pki: &Path, certs: &[CertSpec]) -> Result<(), PkiError> {
    create_dir(pki, MODE_SECRET_DIR)?;
    let mut dirs: Vec<PathBuf> = certs
        .iter()
        .filter_map(|c| pki.join(&c.file).parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        // Each level of e.g. etcd/cp1 holds keys below it.
        let mut p = pki.to_path_buf();
        for comp in d.strip_prefix(pki).unwrap_or(Path::new("")).components() {
            p.push(comp);
            create_dir(&p, MODE_SECRET_DIR)?;
        }
    }
    Ok(())
}

/// Issue `c` with `key` (signed by `ca`, or self-signed for a CA) and write cert and key.
fn issue(
    pki: &Path,
    c: &CertSpec,
    key: KeyPair,
    ca: Option<&Ca>,
    validity: Duration,
) -> Result<Ca, PkiError> {
    let err = |source| PkiError::Issue {
        name: c.name.clone(),
        source,
    };
    let p = params(c, validity).map_err(err)?;
    let cert = match ca {
        Some(ca) => p.signed_by(&key, &ca.issuer().map_err(err)?),
        None => p.self_signed(&key),
    }
    .map_err(err)?;
    write_file(
        &pki.join(c.key_file()),
        key.serialize_pem().as_bytes(),
        MODE_SECRET,
    )?;
    write_file(&pki.join(c.cert_file()), cert.pem().as_bytes(), MODE_PUBLIC)?;
    Ok(Ca {
        name: c.name.clone(),
        der: cert.der().to_vec(),
        key,
    })
}

/// Load a CA from disk: `Ok(None)` when neither file exists.
fn load_ca(pki: &Path, c: &CertSpec) -> Result<Option<Ca>, PkiError> {
    let crt_path = pki.join(c.cert_file());
    let key_path = pki.join(c.key_file());
    let (crt, key) = (read(&crt_path)?, read(&key_path)?);
    let broken = |reason: String| PkiError::BrokenCa {
        path: crt_path.clone(),
        reason,
    };
    let (crt, key) = match (crt, key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(broken(format!("its key {} is missing", key_path.display())));
        }
        (None, Some(_)) => {
            return Err(broken(
                "the certificate is missing, its key is there".into(),
            ));
        }
        (Some(c), Some(k)) => (c, k),
    };
    let der = pem_to_der(&crt).map_err(broken)?;
    let key =
        KeyPair::from_pem(&key).map_err(|e| broken(format!("its key does not parse ({e})")))?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| broken(format!("the certificate does not parse ({e})")))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(broken("its key does not match it".into()));
    }
    if !cert.is_ca() {
        return Err(broken("it is not a CA certificate".into()));
    }
    if !cert.validity().is_valid() {
        return Err(broken(format!(
            "it is not valid now (expires {})",
            cert.validity().not_after
        )));
    }
    Ok(Some(Ca {
        name: c.name.clone(),
        der,
        key,
    }))
}

/// The work to do for one leaf or key pair.
struct Job<'a> {
    cert: &'a CertSpec,
    action: Action,
    reason: String,
    /// An existing key to keep (renewals, SAN changes); else a new one is generated.
    key: Option<String>,
}

/// Generate (or complete) the PKI of `spec` under `out/pki`. With `force`, every CA, leaf and
/// key is made anew. `require_ca` refuses to create CAs (for `gen node`, which extends a tree).
pub fn generate(
    out: &Path,
    spec: &ClusterSpec,
    force: bool,
    require_ca: bool,
) -> Result<Vec<Decision>, PkiError> {
    let pki = pki_dir(out);
    let all = certs::expand(spec);
    // Check the CAs before writing anything, so a broken CA leaves the tree untouched.
    let mut cas: Vec<(usize, Option<Ca>)> = Vec::new();
    for (i, c) in all.iter().enumerate().filter(|(_, c)| c.kind == Kind::Ca) {
        let loaded = if force { None } else { load_ca(&pki, c)? };
        if loaded.is_none() && require_ca {
            return Err(PkiError::MissingCa(pki.join(c.cert_file())));
        }
        cas.push((i, loaded));
    }
    make_dirs(&pki, &all)?;
    let mut decisions = Vec::new();
    let to_make: Vec<&CertSpec> = cas
        .iter()
        .filter(|(_, ca)| ca.is_none())
        .map(|(i, _)| &all[*i])
        .collect();
    let made = par_map(&to_make, |c| {
        let key = new_key(spec.key_algo).map_err(|source| PkiError::Issue {
            name: c.name.clone(),
            source,
        })?;
        issue(&pki, c, key, None, spec.ca_validity)
    });
    let mut made = made.into_iter();
    let mut ready: Vec<Ca> = Vec::new();
    for (i, ca) in cas {
        let c = &all[i];
        let (ca, action, reason) = match ca {
            Some(ca) => (ca, Action::Reused, String::new()),
            None => {
                let ca = made.next().expect("one result per CA to make")?;
                let existed = pki.join(c.cert_file()).exists();
                if force && existed {
                    (ca, Action::Replaced, "--force".to_string())
                } else {
                    (ca, Action::Created, "missing".to_string())
                }
            }
        };
        decisions.push(Decision {
            name: c.name.clone(),
            file: c.cert_file(),
            action,
            reason,
        });
        ready.push(ca);
    }
    let ca_of = |name: &str| ready.iter().find(|ca| ca.name == name);

    // Decide for every leaf and key pair, then issue the ones that need it in parallel.
    let indices: Vec<usize> = (0..all.len()).collect();
    let all_ref = &all;
    let checks = par_map(&indices, |&i| -> Result<Option<Job<'_>>, PkiError> {
        let c = &all_ref[i];
        let crt = read(&pki.join(c.cert_file()))?;
        let key = read(&pki.join(c.key_file()))?;
        Ok(match c.kind {
            Kind::Ca => None,
            Kind::KeyPair => match (&key, force) {
                (Some(k), false) if KeyPair::from_pem(k).is_ok() => {
                    let pubkey = KeyPair::from_pem(k)
                        .map(|k| k.public_key_pem())
                        .unwrap_or_default();
                    (crt.as_deref() != Some(pubkey.as_str())).then(|| Job {
                        cert: c,
                        action: Action::Replaced,
                        reason: "public key missing or wrong".into(),
                        key: key.clone(),
                    })
                }
                (None, false) => Some(Job {
                    cert: c,
                    action: Action::Created,
                    reason: "missing".into(),
                    key: None,
                }),
                (_, _) => Some(Job {
                    cert: c,
                    action: Action::Replaced,
                    reason: if force {
                        "--force".into()
                    } else {
                        "the key does not parse".into()
                    },
                    key: None,
                }),
            },
            Kind::Leaf => {
                let ca = ca_of(c.ca.as_deref().unwrap_or_default())
                    .expect("the table test guarantees every leaf's CA is a CA row");
                match (crt, key) {
                    _ if force => Some(Job {
                        cert: c,
                        action: if pki.join(c.cert_file()).exists() {
                            Action::Replaced
                        } else {
                            Action::Created
                        },
                        reason: "--force".into(),
                        key: None,
                    }),
                    (Some(crt), Some(key)) => {
                        leaf_problem(c, &crt, &key, ca, Some(spec.key_algo)).map(|reason| {
                            // Keep a sound key of the right algorithm: only the certificate is wrong.
                            let keep = reason.starts_with("SANs")
                                || reason.starts_with("not signed")
                                || reason.starts_with("not valid")
                                || reason.starts_with("subject");
                            Job {
                                cert: c,
                                action: Action::Replaced,
                                reason,
                                key: keep.then_some(key),
                            }
                        })
                    }
                    _ => Some(Job {
                        cert: c,
                        action: Action::Created,
                        reason: "missing".into(),
                        key: None,
                    }),
                }
            }
        })
    });
    let mut jobs = Vec::new();
    for (c, check) in all.iter().zip(checks) {
        match check? {
            Some(job) => jobs.push(job),
            None if c.kind != Kind::Ca => decisions.push(Decision {
                name: c.name.clone(),
                file: c.cert_file(),
                action: Action::Reused,
                reason: String::new(),
            }),
            None => {}
        }
    }
    let results = par_map(&jobs, |j| run_job(&pki, j, spec, &ca_of));
    for (j, r) in jobs.iter().zip(results) {
        r?;
        decisions.push(Decision {
            name: j.cert.name.clone(),
            file: j.cert.cert_file(),
            action: j.action,
            reason: j.reason.clone(),
        });
    }
    // Table order, so the report reads like the table.
    decisions.sort_by_key(|d| all.iter().position(|c| c.name == d.name));
    Ok(decisions)
}

fn run_job<'a>(
    pki: &Path,
    j: &Job<'_>,
    spec: &ClusterSpec,
    ca_of: &impl Fn(&str) -> Option<&'a Ca>,
) -> Result<(), PkiError> {
    let c = j.cert;
    let err = |source| PkiError::Issue {
        name: c.name.clone(),
        source,
    };
    let key = match &j.key {
        Some(pem) => KeyPair::from_pem(pem).map_err(err)?,
        None => new_key(spec.key_algo).map_err(err)?,
    };
    if c.kind == Kind::KeyPair {
        write_file(
            &pki.join(c.key_file()),
            key.serialize_pem().as_bytes(),
            MODE_SECRET,
        )?;
        write_file(
            &pki.join(c.cert_file()),
            key.public_key_pem().as_bytes(),
            MODE_PUBLIC,
        )?;
        return Ok(());
    }
    let ca = ca_of(c.ca.as_deref().unwrap_or_default())
        .expect("the table test guarantees every leaf's CA is a CA row");
    issue(pki, c, key, Some(ca), spec.cert_validity).map(|_| ())
}

/// One row of `kbin certs check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    /// The certificate's name.
    pub name: String,
    /// Its file under `pki/`.
    pub file: String,
    /// Expiry (RFC 3339), when the certificate parses.
    pub expires: Option<String>,
    /// Seconds left until expiry (negative when expired).
    pub residual_seconds: Option<i64>,
    /// The signing CA's name (empty for CAs).
    pub ca: String,
    /// What is wrong (empty when sound).
    pub problems: Vec<String>,
    /// Expires within the warning window.
    pub expiring: bool,
}

/// Check every certificate of `spec` under `out/pki`: expiry, signature, key, subject, SANs.
pub fn check(out: &Path, spec: &ClusterSpec, warn: Duration) -> Result<Vec<CheckRow>, PkiError> {
    let pki = pki_dir(out);
    let all = certs::expand(spec);
    let mut cas = Vec::new();
    for c in all.iter().filter(|c| c.kind == Kind::Ca) {
        // A broken CA shows up as its own row's problem below.
        if let Ok(Some(ca)) = load_ca(&pki, c) {
            cas.push(ca);
        }
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let rows = par_map(&all, |c| -> Result<Option<CheckRow>, PkiError> {
        if c.kind == Kind::KeyPair {
            return Ok(None);
        }
        let crt = read(&pki.join(c.cert_file()))?;
        let key = read(&pki.join(c.key_file()))?;
        let mut row = CheckRow {
            name: c.name.clone(),
            file: c.cert_file(),
            expires: None,
            residual_seconds: None,
            ca: c.ca.clone().unwrap_or_default(),
            problems: Vec::new(),
            expiring: false,
        };
        let (Some(crt), Some(key)) = (crt, key) else {
            row.problems.push("missing".into());
            return Ok(Some(row));
        };
        if let Ok(der) = pem_to_der(&crt)
            && let Ok((_, cert)) = X509Certificate::from_der(&der)
        {
            let not_after = cert.validity().not_after.to_datetime();
            row.expires = not_after
                .format(&time::format_description::well_known::Rfc3339)
                .ok();
            let left = not_after.unix_timestamp() - now;
            row.residual_seconds = Some(left);
            row.expiring = left < warn.as_secs() as i64;
        }
        let problem = match c.kind {
            Kind::Ca => match load_ca(&pki, c) {
                Err(e) => Some(match e {
                    PkiError::BrokenCa { reason, .. } => reason,
                    e => e.to_string(),
                }),
                Ok(_) => None,
            },
            _ => match cas.iter().find(|ca| Some(&ca.name) == c.ca.as_ref()) {
                Some(ca) => leaf_problem(c, &crt, &key, ca, None),
                None => Some(format!("its CA {} is missing or broken", row.ca)),
            },
        };
        row.problems.extend(problem);
        Ok(Some(row))
    });
    rows.into_iter().filter_map(Result::transpose).collect()
}

/// Renew leaves (all of them, or those named) with their existing keys, same subjects and SANs,
/// signed by the existing CAs. CAs are never renewed here.
pub fn renew(out: &Path, spec: &ClusterSpec, names: &[String]) -> Result<Vec<Decision>, PkiError> {
    let pki = pki_dir(out);
    let all = certs::expand(spec);
    for n in names {
        if !all.iter().any(|c| &c.name == n && c.kind == Kind::Leaf) {
            return Err(PkiError::UnknownName(n.clone()));
        }
    }
    let mut cas = Vec::new();
    for c in all.iter().filter(|c| c.kind == Kind::Ca) {
        match load_ca(&pki, c)? {
            Some(ca) => cas.push(ca),
            None => return Err(PkiError::MissingCa(pki.join(c.cert_file()))),
        }
    }
    let ca_of = |name: &str| cas.iter().find(|ca| ca.name == name);
    let mut jobs = Vec::new();
    for c in all.iter().filter(|c| c.kind == Kind::Leaf) {
        if !names.is_empty() && !names.contains(&c.name) {
            continue;
        }
        let key = read(&pki.join(c.key_file()))?.filter(|k| KeyPair::from_pem(k).is_ok());
        jobs.push(Job {
            cert: c,
            action: Action::Replaced,
            reason: if key.is_some() {
                "renewed".into()
            } else {
                "renewed with a new key".into()
            },
            key,
        });
    }
    let results = par_map(&jobs, |j| run_job(&pki, j, spec, &ca_of));
    let mut decisions = Vec::new();
    for (j, r) in jobs.iter().zip(results) {
        r?;
        decisions.push(Decision {
            name: j.cert.name.clone(),
            file: j.cert.cert_file(),
            action: j.action,
            reason: j.reason.clone(),
        });
    }
    Ok(decisions)
}

/// `DIR/cluster.toml`: the spec a tree was generated from, so `gen node` and `certs check|renew`
/// work on it later (and `--config DIR/cluster.toml` regenerates it).
pub fn spec_file(out: &Path) -> PathBuf {
    out.join("cluster.toml")
}

/// `spec` as the `cluster.toml` that builds it again (every value explicit).
pub fn spec_toml(spec: &ClusterSpec) -> String {
    use super::spec::{NodeInput, SpecInput, format_duration};
    let input = SpecInput {
        name: Some(spec.name.clone()),
        cluster_ip: Some(spec.cluster_ip.to_string()),
        service_cidr: Some(spec.service_cidr.to_string()),
        cluster_dns: Some(spec.cluster_dns.to_string()),
        cluster_domain: Some(spec.cluster_domain.clone()),
        pod_cidr: Some(spec.pod_cidr.to_string()),
        key_algo: Some(spec.key_algo.to_string()),
        ca_validity: Some(format_duration(spec.ca_validity)),
        cert_validity: Some(format_duration(spec.cert_validity)),
        nodes: spec
            .nodes
            .iter()
            .map(|n| NodeInput {
                name: n.name.clone(),
                ip: n.ip.to_string(),
                control_plane: n.control_plane,
                worker: n.worker,
            })
            .collect(),
    };
    let body = toml::to_string(&input).expect("a spec of strings and booleans always serializes");
    format!("# Written by `kbin gen`: the spec this tree was generated from.\n{body}")
}
