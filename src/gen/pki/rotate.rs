//! `kbin certs rotate-ca begin|use|finish`: replacing a CA with a trust period, in three steps
//! each rolled out before the next (the Kubernetes manual CA rotation, as generated files):
//!
//! 1. **begin**: a new CA (same subject, new key) is made; `pki/<ca>.crt` becomes the bundle
//!    old + new, so every trust anchor made from it (the nodes' `ca.crt`, the kubeconfigs'
//!    `certificate-authority-data`, etcd's trusted CA) trusts both. The old CA still signs
//!    (first in the file; its key stays `pki/<ca>.key`). Leaves unchanged.
//! 2. **use**: the new CA signs: `pki/<ca>.crt` is new + old, `pki/<ca>.key` the new key, and
//!    every leaf of that CA is re-signed by it with its own key, subject and SANs (and the
//!    kubeconfigs embedding them). Still trusted both ways.
//! 3. **finish**: `pki/<ca>.crt` is the new CA alone; the old CA is gone from the tree. Refused
//!    while a leaf of that CA is not signed by the new one.
//!
//! The rotation's record lives in `pki/rotation/` (`state.toml`, `new/<ca>.crt|key` until
//! `use`, `old/<ca>.crt` until `finish`), swapped in whole with the rest of the step's files by
//! one [`Staged`] commit: a step that fails leaves the tree as it was.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::KeyPair;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::certs::{self, Item};
use super::{
    Action, Outcome, PkiError, authorities_pem, cert_der_of, cert_params, load_authorities,
    new_key, pki_dir, resign, root_problem, sha256_hex,
};
use crate::r#gen::plan::spec::ClusterSpec;
use crate::r#gen::{MODE_PUBLIC, MODE_SECRET, Staged, WriteError};

/// The CAs that can be rotated, by their name in `kbin certs` (`etcd-ca` also names `etcd/ca`).
pub const CAS: &[&str] = &["ca", "etcd/ca", "front-proxy-ca"];

/// A step of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Trust old + new; the old CA signs.
    Begin,
    /// The new CA signs every leaf; trust old + new.
    Use,
    /// Trust the new CA alone.
    Finish,
}

impl Step {
    /// `begin`, `use`, `finish`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Begin => "begin",
            Step::Use => "use",
            Step::Finish => "finish",
        }
    }
}

/// Where a rotation stands: the last step done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `begin` done: old + new trusted, the old CA signs.
    Begun,
    /// `use` done: old + new trusted, the new CA signs.
    InUse,
}

/// `pki/rotation/state.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The last step done.
    pub phase: Phase,
    /// The CAs rotated, by name (`ca`, `etcd/ca`, `front-proxy-ca`).
    pub cas: Vec<String>,
}

impl State {
    /// One line for `kbin certs check` and the step's report.
    pub fn describe(&self) -> String {
        let cas = self.cas.join(", ");
        match self.phase {
            Phase::Begun => format!(
                "CA rotation of {cas}: step 1 of 3 (begin) done: the old and the new CA are trusted, the old one still signs; roll it out, then `kbin certs rotate-ca use`"
            ),
            Phase::InUse => format!(
                "CA rotation of {cas}: step 2 of 3 (use) done: every leaf is signed by the new CA, the old one is still trusted; roll it out, then `kbin certs rotate-ca finish`"
            ),
        }
    }
}

/// Errors of a rotation step.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Reading, signing or re-signing failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A file could not be staged.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A step out of order.
    #[error("`kbin certs rotate-ca {step}` cannot run now: {why}")]
    OutOfOrder {
        /// The step asked for.
        step: &'static str,
        /// Why not.
        why: String,
        /// The command to run instead.
        next: String,
    },
    /// `--ca` names no CA of the cluster.
    #[error("{name:?} is not a CA kbin rotates (ca, etcd-ca, front-proxy-ca, or all)")]
    UnknownCa {
        /// The name given.
        name: String,
    },
    /// The rotation's files are not what the last step left.
    #[error("the CA rotation in {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `finish` while a leaf still chains to the old CA.
    #[error("{leaf} is not signed by the new {ca}: finishing would leave it trusted by nothing")]
    StillOld {
        /// The leaf.
        leaf: String,
        /// Its CA.
        ca: String,
    },
}

/// `<out>/pki/rotation`.
pub fn rotation_dir(out: &Path) -> PathBuf {
    pki_dir(out).join("rotation")
}

fn state_path(out: &Path) -> PathBuf {
    rotation_dir(out).join("state.toml")
}

/// The rotation under way in `out`, if any.
pub fn state(out: &Path) -> Result<Option<State>, RotateError> {
    let path = state_path(out);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PkiError::Read { path, source }.into()),
    };
    let state: State = toml::from_str(&text).map_err(|e| RotateError::Damaged {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    for ca in &state.cas {
        if !CAS.contains(&ca.as_str()) {
            return Err(RotateError::Damaged {
                path,
                reason: format!("{ca:?} is not a CA"),
            });
        }
    }
    Ok(Some(state))
}

/// The CA names `names` stand for (`etcd-ca` is `etcd/ca`, `all` every CA), deduplicated in
/// table order; none means `ca`.
pub fn resolve(names: &[String]) -> Result<Vec<String>, RotateError> {
    let mut want = Vec::new();
    for n in names {
        match n.trim_end_matches(".crt") {
            "all" => want.extend(CAS.iter().map(|s| s.to_string())),
            "etcd-ca" | "etcd/ca" => want.push("etcd/ca".into()),
            n if CAS.contains(&n) => want.push(n.into()),
            _ => return Err(RotateError::UnknownCa { name: n.clone() }),
        }
    }
    if want.is_empty() {
        want.push("ca".into());
    }
    Ok(CAS
        .iter()
        .filter(|c| want.iter().any(|w| w == *c))
        .map(|c| c.to_string())
        .collect())
}

/// How many PEM certificates `pem` holds.
pub fn count_certs(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

fn with_newline(pem: &str) -> String {
    if pem.ends_with('\n') {
        pem.to_owned()
    } else {
        format!("{pem}\n")
    }
}

fn read(path: &Path) -> Result<String, RotateError> {
    std::fs::read_to_string(path).map_err(|source| {
        PkiError::Read {
            path: path.to_owned(),
            source,
        }
        .into()
    })
}

/// A file of the rotation tree being built (mode 0600 for keys, its directories 0700).
fn put(built: &Path, rel: &str, text: &str, mode: u32) -> Result<(), RotateError> {
    let path = built.join(rel);
    let fail = |e: std::io::Error| crate::r#gen::at("cannot write", &path)(e);
    let mut dir = path.parent().map(Path::to_path_buf);
    let mut made = Vec::new();
    while let Some(d) = dir.filter(|d| !d.exists()) {
        made.push(d.clone());
        dir = d.parent().map(Path::to_path_buf);
    }
    for d in made.iter().rev() {
        std::fs::create_dir(d).map_err(fail)?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    Ok(())
}

/// A new `pki/rotation/` tree, swapped in by the commit (0700: it holds a key until `use`).
fn rotation_tree(out: &Path, staged: &Staged) -> Result<PathBuf, RotateError> {
    let built = staged.stage_tree(&rotation_dir(out))?;
    std::fs::set_permissions(&built, std::fs::Permissions::from_mode(0o700))
        .map_err(crate::r#gen::at("cannot restrict", &built))?;
    Ok(built)
}

fn state_text(state: &State) -> String {
    format!(
        "# kbin certs rotate-ca: the CA rotation under way. Do not edit.\n{}",
        toml::to_string(state).expect("a state of strings always serializes")
    )
}

fn out_of_order(step: Step, why: impl Into<String>, next: &str) -> RotateError {
    RotateError::OutOfOrder {
        step: step.name(),
        why: why.into(),
        next: next.into(),
    }
}

/// Run `step` on the tree at `out`, staged in `staged` (the caller refreshes the node trees and
/// commits). `cas` matters only to `begin`. Returns the rotation as the step leaves it (none
/// once finished) and what was made.
pub fn rotate(
    spec: &ClusterSpec,
    out: &Path,
    step: Step,
    cas: &[String],
    staged: &Staged,
    report: &(dyn Fn(&Outcome) + Sync),
) -> Stepped {
    let now = state(out)?;
    let cx = Cx {
        spec,
        out,
        pki: pki_dir(out),
        items: certs::plan(spec),
        staged,
        report,
    };
    match (step, &now) {
        (Step::Begin, None) => begin(&cx, &resolve(cas)?),
        (Step::Begin, Some(s)) => Err(out_of_order(
            step,
            format!(
                "a rotation of {} is under way ({})",
                s.cas.join(", "),
                match s.phase {
                    Phase::Begun => "begun",
                    Phase::InUse => "its new CA in use",
                }
            ),
            match s.phase {
                Phase::Begun => "kbin certs rotate-ca use",
                Phase::InUse => "kbin certs rotate-ca finish",
            },
        )),
        (Step::Use | Step::Finish, None) => Err(out_of_order(
            step,
            "no CA rotation is under way",
            "kbin certs rotate-ca begin",
        )),
        (Step::Use, Some(s)) if s.phase == Phase::Begun => use_new(&cx, s),
        (Step::Use, Some(_)) => Err(out_of_order(
            step,
            "the new CA is already in use",
            "kbin certs rotate-ca finish",
        )),
        (Step::Finish, Some(s)) if s.phase == Phase::InUse => finish(&cx, s),
        (Step::Finish, Some(_)) => Err(out_of_order(
            step,
            "the leaves are still signed by the old CA, which finishing would stop trusting",
            "kbin certs rotate-ca use",
        )),
    }
}

/// What every step works on.
struct Cx<'a> {
    spec: &'a ClusterSpec,
    out: &'a Path,
    pki: PathBuf,
    items: Vec<Item>,
    staged: &'a Staged,
    report: &'a (dyn Fn(&Outcome) + Sync),
}

impl Cx<'_> {
    /// Stage CA `it`'s file as `pem` (the certificates trusted, the signer first), and report
    /// it, `der` being the CA this step made or made the signer.
    fn ca_file(
        &self,
        it: &Item,
        pem: &str,
        action: Action,
        reason: &str,
        der: &[u8],
    ) -> Result<Outcome, RotateError> {
        self.staged
            .stage(&it.cert_path(&self.pki), pem.as_bytes(), MODE_PUBLIC)?;
        let o = Outcome {
            name: it.name.clone(),
            action,
            reason: Some(reason.to_owned()),
            sha256: Some(sha256_hex(der)),
        };
        (self.report)(&o);
        Ok(o)
    }
}

/// What a step returns: the rotation as it leaves it (none once finished), what it made.
type Stepped = Result<(Option<State>, Vec<Outcome>), RotateError>;

fn item<'a>(items: &'a [Item], name: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.name == name && i.is_ca())
        .expect("CAS names CAs of the table")
}

/// Every kubeconfig again, trusting the CA files as this step leaves them (staged).
fn kubeconfigs(
    spec: &ClusterSpec,
    out: &Path,
    items: &[Item],
    staged: &Staged,
    report: &(dyn Fn(&Outcome) + Sync),
) -> Result<Vec<Outcome>, RotateError> {
    let authorities = load_authorities(items, &pki_dir(out), staged)?;
    let mut outcomes = Vec::new();
    for o in super::kubeconfig::write_all(spec, out, items, &authorities_pem(&authorities), staged)?
    {
        report(&o);
        outcomes.push(o);
    }
    Ok(outcomes)
}

fn begin(cx: &Cx<'_>, cas: &[String]) -> Stepped {
    // Every CA usable before anything is made.
    let authorities = load_authorities(&cx.items, &cx.pki, cx.staged)?;
    let built = rotation_tree(cx.out, cx.staged)?;
    let mut outcomes = Vec::new();
    let now = SystemTime::now();
    for name in cas {
        let it = item(&cx.items, name);
        let old = &authorities[name.as_str()].cert_pem;
        if count_certs(old) != 1 {
            return Err(RotateError::Damaged {
                path: it.cert_path(&cx.pki),
                reason: format!(
                    "it holds {} certificates, and no rotation is recorded in {}",
                    count_certs(old),
                    state_path(cx.out).display()
                ),
            });
        }
        let crypto = |e: rcgen::Error| PkiError::Crypto {
            name: name.clone(),
            message: e.to_string(),
        };
        let key = new_key(cx.spec.key_algo).map_err(crypto)?;
        let cert = cert_params(it, cx.spec.key_algo, now, cx.spec.ca_validity, None)
            .self_signed(&key)
            .map_err(crypto)?;
        let old = with_newline(old);
        put(&built, &format!("old/{name}.crt"), &old, MODE_PUBLIC)?;
        put(&built, &format!("new/{name}.crt"), &cert.pem(), MODE_PUBLIC)?;
        put(
            &built,
            &format!("new/{name}.key"),
            &key.serialize_pem(),
            MODE_SECRET,
        )?;
        let bundle = format!("{old}{}", with_newline(&cert.pem()));
        outcomes.push(cx.ca_file(
            it,
            &bundle,
            Action::Created,
            "a new CA, trusted beside the old one, which still signs",
            cert.der(),
        )?);
    }
    let state = State {
        phase: Phase::Begun,
        cas: cas.to_vec(),
    };
    put(&built, "state.toml", &state_text(&state), MODE_PUBLIC)?;
    outcomes.extend(kubeconfigs(
        cx.spec, cx.out, &cx.items, cx.staged, cx.report,
    )?);
    Ok((Some(state), outcomes))
}

/// The old and new CA of `name` as the last step left them: `pki/<name>.crt` must be old + new
/// after `begin` (`new_first` false), new + old after `use`.
fn recorded(out: &Path, name: &str, new_first: bool) -> Result<(String, String), RotateError> {
    let dir = rotation_dir(out);
    let old = read(&dir.join(format!("old/{name}.crt")))?;
    let current_path = pki_dir(out).join(format!("{name}.crt"));
    let current = read(&current_path)?;
    let new = if new_first {
        current.strip_suffix(old.as_str())
    } else {
        current.strip_prefix(old.as_str())
    };
    match new {
        Some(new) if count_certs(new) == 1 && count_certs(&old) == 1 => Ok((old, new.to_owned())),
        _ => Err(RotateError::Damaged {
            path: current_path,
            reason: format!(
                "it is not the bundle of the old and the new CA that `kbin certs rotate-ca {}` wrote",
                if new_first { "use" } else { "begin" }
            ),
        }),
    }
}

fn use_new(cx: &Cx<'_>, state: &State) -> Stepped {
    let dir = rotation_dir(cx.out);
    let built = rotation_tree(cx.out, cx.staged)?;
    let mut outcomes = Vec::new();
    for name in &state.cas {
        let it = item(&cx.items, name);
        let (old, new) = recorded(cx.out, name, false)?;
        if new != read(&dir.join(format!("new/{name}.crt")))? {
            return Err(RotateError::Damaged {
                path: it.cert_path(&cx.pki),
                reason: format!(
                    "its new CA is not {}",
                    dir.join(format!("new/{name}.crt")).display()
                ),
            });
        }
        let key_path = dir.join(format!("new/{name}.key"));
        let key_pem = read(&key_path)?;
        let damaged = |reason: String| RotateError::Damaged {
            path: key_path.clone(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| damaged(e.to_string()))?;
        let der =
            cert_der_of(new.as_bytes(), &dir.join(format!("new/{name}.crt"))).map_err(damaged)?;
        let (_, x) = X509Certificate::from_der(&der).map_err(|e| damaged(e.to_string()))?;
        if let Some(p) = root_problem(&x, &key, SystemTime::now()) {
            return Err(damaged(format!("the new {name}: {p}")));
        }
        cx.staged
            .stage(&it.key_path(&cx.pki), key_pem.as_bytes(), MODE_SECRET)?;
        put(&built, &format!("old/{name}.crt"), &old, MODE_PUBLIC)?;
        outcomes.push(cx.ca_file(
            it,
            &format!("{new}{old}"),
            Action::Replaced,
            "the new CA signs; the old one is still trusted",
            &der,
        )?);
    }
    let next = State {
        phase: Phase::InUse,
        cas: state.cas.clone(),
    };
    put(&built, "state.toml", &state_text(&next), MODE_PUBLIC)?;
    let authorities = load_authorities(&cx.items, &cx.pki, cx.staged)?;
    let chosen: Vec<&Item> = cx
        .items
        .iter()
        .filter(|i| i.ca.as_ref().is_some_and(|c| state.cas.contains(c)))
        .collect();
    outcomes.extend(resign(
        cx.spec,
        cx.out,
        &cx.items,
        &chosen,
        &authorities,
        cx.staged,
        cx.report,
    )?);
    Ok((Some(next), outcomes))
}

fn finish(cx: &Cx<'_>, state: &State) -> Stepped {
    let mut outcomes = Vec::new();
    for name in &state.cas {
        let it = item(&cx.items, name);
        let (_, new) = recorded(cx.out, name, true)?;
        let der = cert_der_of(new.as_bytes(), &it.cert_path(&cx.pki)).map_err(|reason| {
            RotateError::Damaged {
                path: it.cert_path(&cx.pki),
                reason,
            }
        })?;
        let (_, ca) = X509Certificate::from_der(&der).map_err(|e| RotateError::Damaged {
            path: it.cert_path(&cx.pki),
            reason: e.to_string(),
        })?;
        for leaf in cx.items.iter().filter(|i| i.ca.as_deref() == Some(name)) {
            let signed = super::read_cert_der(&leaf.cert_path(&cx.pki))
                .ok()
                .and_then(|d| {
                    X509Certificate::from_der(&d)
                        .ok()
                        .map(|(_, c)| c.verify_signature(Some(ca.public_key())).is_ok())
                })
                .unwrap_or(false);
            if !signed {
                return Err(RotateError::StillOld {
                    leaf: leaf.name.clone(),
                    ca: name.clone(),
                });
            }
        }
        outcomes.push(cx.ca_file(
            it,
            &new,
            Action::Replaced,
            "the new CA alone is trusted; the old one is removed",
            &der,
        )?);
    }
    // The rotation's record goes: an empty pki/rotation/.
    rotation_tree(cx.out, cx.staged)?;
    outcomes.extend(kubeconfigs(
        cx.spec, cx.out, &cx.items, cx.staged, cx.report,
    )?);
    Ok((None, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_in_table_order_and_default_to_the_cluster_ca() {
        assert_eq!(resolve(&[]).unwrap(), ["ca"]);
        assert_eq!(
            resolve(&["front-proxy-ca".into(), "etcd-ca".into(), "ca".into()]).unwrap(),
            ["ca", "etcd/ca", "front-proxy-ca"]
        );
        assert_eq!(resolve(&["all".into()]).unwrap(), CAS);
        assert!(matches!(
            resolve(&["sa".into()]),
            Err(RotateError::UnknownCa { .. })
        ));
    }
}
