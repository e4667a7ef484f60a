//! The pipeline of `kbin gen cluster|node|encryption-key`, in order, for the command line to
//! call: the spec made whole from this machine ([`complete_spec`]), the versions pinned to
//! ([`versions()`], [`tree_pin`]), the checks that need nothing written ([`prepare`]), then the
//! PKI step, the configs step and the spec staged in one set and committed ([`write`]), or
//! compared with the tree instead ([`dry_run`]); [`generate`] runs those last steps in order,
//! under the output directory's lock.
//!
//! What a step has to say (a detected host profile, an allowed skew) comes back as [`Note`]s
//! ([`generate`] says its own on the `Ui` it is given); printing them, the [`Report`], and the
//! hints an error deserves ([`RunError::hint`], [`PinError::hint`]) are the caller's.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fsx::WriteError;
use crate::r#gen::deliver::{ansible, bundle};
use crate::r#gen::node::KeyStep;
use crate::r#gen::node::{Options, configs::ClusterInput};
use crate::r#gen::pki::{self, Outcome, PkiError};
use crate::r#gen::plan::host;
use crate::r#gen::plan::spec::{ClusterSpec, SpecInput};
use crate::r#gen::plan::versions::{self, Record, Versions, VersionsError};
use crate::r#gen::{Staged, diff};
use crate::manifest::resolve::{self, ResolveError};
use crate::manifest::{Arch, Manifest};
use crate::store::Layout;
use crate::ui::Ui;

/// Something a step found worth saying: `warn` ones are warnings, the others status lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// A warning rather than a status line.
    pub warn: bool,
    /// The text.
    pub text: String,
}

fn status(text: String) -> Note {
    Note { warn: false, text }
}

/// Errors of a run, by step.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The PKI step failed.
    #[error("cannot generate the PKI in {out}")]
    Pki {
        /// The output directory.
        out: PathBuf,
        /// Why.
        #[source]
        source: PkiError,
    },
    /// The configs step failed (or its check of the toolchain's binaries).
    #[error("cannot write the node bundles in {out}")]
    Bundle {
        /// The output directory.
        out: PathBuf,
        /// Why.
        #[source]
        source: bundle::BundleError,
    },
    /// An upgrade that breaks the version-skew rules, without `allow_skew`.
    #[error("{0}")]
    Skew(String),
    /// The tree's version record cannot be read (`--diff`).
    #[error(transparent)]
    Record(#[from] VersionsError),
    /// The dry run could not be compared with the tree.
    #[error("cannot compare with the tree in {out}")]
    Compare {
        /// The output directory.
        out: PathBuf,
        /// Why.
        #[source]
        source: WriteError,
    },
    /// The output directory's lock cannot be taken.
    #[error(transparent)]
    Lock(WriteError),
    /// `kbin gen encryption-key` over a tree with no node trees.
    #[error("{} has no node trees (made with --pki-only): there is no encryption config to rotate", .0.display())]
    NotRotatable(PathBuf),
    /// Staging or committing failed.
    #[error("cannot write the cluster tree in {out}")]
    Write {
        /// The output directory.
        out: PathBuf,
        /// Why.
        #[source]
        source: WriteError,
    },
}

/// Complete the spec input from this machine, when the cluster is this machine and the input
/// does not say: the host profile (sandbox when PID 1 is not systemd, …) and the resolv.conf of
/// systemd-resolved. Control planes that a re-run adds to a tree whose etcd runs are marked to
/// join it. Returns what was found.
pub fn complete_spec(input: &mut SpecInput, out: &Path) -> Vec<Note> {
    keep_pod_subnets(input, out);
    let mut notes = mark_joining_control_planes(input, out);
    let ips: Vec<_> = input
        .nodes
        .iter()
        .filter_map(|n| n.ip.parse().ok())
        .collect();
    if ips.is_empty() || !ips.iter().all(|ip| host::is_own_address(*ip)) {
        return notes;
    }
    if input.host_profile.is_none() {
        let why = host::sandbox_reasons();
        let profile = if why.is_empty() {
            host::HostProfile::Systemd
        } else {
            notes.push(status(format!(
                "this machine is a sandbox ({}): host profile sandbox (as --host-profile sandbox)",
                why.join("; ")
            )));
            host::HostProfile::Sandbox
        };
        input.host_profile = Some(profile.to_string());
    }
    if input.resolv_conf.is_none()
        && let Some(p) = host::resolved_resolv_conf()
    {
        notes.push(status(format!(
            "systemd-resolved owns /etc/resolv.conf: the kubelet gives pods {} (as --resolv-conf)",
            p.display()
        )));
        input.resolv_conf = Some(p.display().to_string());
    }
    notes
}

/// Nodes the tree under `out` already has keep their pod subnets (from its cluster.toml, or from
/// the inventory of a tree made before cluster.toml recorded them), when the pod CIDR still
/// holds them: subnets are given in node order, so a node leaving would otherwise move every
/// later node's pods, whose Nodes' `spec.podCIDR` cannot change.
fn keep_pod_subnets(input: &mut SpecInput, out: &Path) {
    let mut known: std::collections::BTreeMap<String, String> = ansible::deployed_pod_subnets(out);
    if let Ok(saved) = SpecInput::load(&crate::r#gen::spec_path(out)) {
        for n in saved.nodes {
            if let Some(sub) = n.pod_subnet {
                known.insert(n.name, sub);
            }
        }
    }
    let pod: Option<ipnet::IpNet> = input
        .pod_cidr
        .as_deref()
        .unwrap_or(crate::r#gen::spec::DEFAULT_POD_CIDR)
        .parse()
        .ok();
    for n in input.nodes.iter_mut().filter(|n| n.pod_subnet.is_none()) {
        if let (Some(sub), Some(pod)) = (known.get(&n.name), pod)
            && sub
                .parse::<ipnet::IpNet>()
                .is_ok_and(|s| pod.contains(&s) && s.prefix_len() == 24)
        {
            n.pod_subnet = Some(sub.clone());
        }
    }
}

/// Control planes that a re-run adds to a tree whose etcd members already have their units join
/// the running cluster (`--initial-cluster-state=existing`) instead of starting a new one.
fn mark_joining_control_planes(input: &mut SpecInput, out: &Path) -> Vec<Note> {
    let nodes = bundle::nodes_dir(out);
    let has_etcd = |name: &str| {
        nodes
            .join(name)
            .join("etc/systemd/system/etcd.service")
            .is_file()
    };
    let mut notes = Vec::new();
    if !input
        .nodes
        .iter()
        .any(|n| n.control_plane && has_etcd(&n.name))
    {
        return notes;
    }
    for n in input.nodes.iter_mut().filter(|n| n.control_plane) {
        if !has_etcd(&n.name) && !n.joins_etcd {
            n.joins_etcd = true;
            notes.push(status(format!(
                "control plane {} is new to this cluster: its etcd member joins the running one (NEXT-STEPS says how)",
                n.name
            )));
        }
    }
    notes
}

/// The renderers' view of `spec` (also `kbin certs renew`'s, to refresh node bundles).
pub fn cluster_input(spec: &ClusterSpec) -> ClusterInput {
    use crate::r#gen::node::configs::NodeInput;
    ClusterInput {
        name: spec.name.clone(),
        api_server_url: spec.api_server_url(),
        service_cidr: spec.service_cidr.to_string(),
        cluster_dns: spec.cluster_dns,
        cluster_domain: spec.cluster_domain.clone(),
        pod_cidr: spec.pod_cidr.to_string(),
        host_profile: spec.host_profile,
        resolv_conf: spec.resolv_conf.clone(),
        api_lb: spec.node_local_lb(),
        api_endpoint: spec.api_endpoint.clone(),
        nodes: spec
            .nodes
            .iter()
            .map(|n| NodeInput {
                name: n.name.clone(),
                ip: n.ip,
                control_plane: n.control_plane,
                worker: n.worker,
                pod_subnet: n.pod_subnet.to_string(),
                joins_etcd: n.joins_etcd,
            })
            .collect(),
    }
}

/// Whether the cluster is this machine: every node on one of its addresses or named like this
/// host. Then its cgroup version is detected rather than asked for.
fn is_local(spec: &ClusterSpec) -> bool {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    spec.nodes
        .iter()
        .all(|n| host::is_own_address(n.ip) || n.name == hostname.trim())
}

/// What the configs step is asked for.
#[derive(Debug, Clone, Default)]
pub struct ConfigsRequest {
    /// The output directory.
    pub out: PathBuf,
    /// `--no-binaries`.
    pub no_binaries: bool,
    /// `--cgroup-v1`.
    pub cgroup_v1: bool,
    /// `--allow-skew`.
    pub allow_skew: bool,
    /// `kbin gen encryption-key STEP`.
    pub encryption_key_step: Option<crate::r#gen::node::KeyStep>,
}

/// Everything the configs step checks before a byte is staged: the loopback warning, the
/// version-skew rules of a deployed tree, the host's cgroup version and the toolchain's
/// binaries. Returns the options of the configs step.
pub fn prepare(
    spec: &ClusterSpec,
    v: &Versions,
    req: &ConfigsRequest,
) -> Result<(Options, Vec<Note>), RunError> {
    let mut notes = Vec::new();
    let remote: Vec<&str> = spec
        .workers()
        .filter(|n| !n.ip.is_loopback())
        .map(|n| n.name.as_str())
        .collect();
    if spec.cluster_ip.is_loopback() && !remote.is_empty() {
        let first_cp = spec.control_planes().next().map(|n| n.ip.to_string());
        notes.push(Note {
            warn: true,
            text: format!(
                "workers {} will look for the API server at {} (a loopback --cluster-ip), which only works on one machine; generate again with --cluster-ip {} (a control-plane node or a load balancer in front of them)",
                remote.join(", "),
                spec.api_server_url(),
                first_cp.as_deref().unwrap_or("ADDRESS")
            ),
        });
    }
    // An upgrade of a deployed tree (its inventory records what it was generated for) must
    // keep to the skew rules: upgrade.yml would otherwise run kubelets newer than their API
    // server, or skip minors.
    if let Some(old) = ansible::deployed_versions(&req.out) {
        let broken = ansible::upgrade_skew(&old, v);
        if !broken.is_empty() {
            let what = format!(
                "generating {} over {} would break the version-skew rules: {}",
                v.origin,
                req.out.display(),
                broken.join("; ")
            );
            if !req.allow_skew {
                return Err(RunError::Skew(what));
            }
            notes.push(Note {
                warn: true,
                text: format!("version skew allowed by --allow-skew: {what}"),
            });
        }
    }
    for r in ansible::removed_nodes(&req.out, &cluster_input(spec)) {
        notes.push(Note {
            warn: true,
            text: format!(
                "node {} ({}) is no longer in the cluster: run ansible/remove.yml to drain and delete it{}, stop its services and bring the others to this tree (NEXT-STEPS says how by hand)",
                r.name,
                r.ip,
                if r.control_plane {
                    ", remove its etcd member"
                } else {
                    ""
                }
            ),
        });
    }
    let local_v1 = is_local(spec) && versions::host_cgroup_v1();
    if local_v1 && !req.cgroup_v1 {
        notes.push(status(
            "this machine runs cgroup v1: configuring the kubelet for it (as --cgroup-v1)".into(),
        ));
    }
    let opts = Options {
        out: req.out.clone(),
        // --kubernetes-version has no toolchain: nothing to bundle.
        no_binaries: req.no_binaries || v.toolchain_dir.is_none(),
        cgroup_v1: req.cgroup_v1 || local_v1,
        encryption_key_step: req.encryption_key_step,
    };
    bundle::check_binaries(&cluster_input(spec), v, &opts).map_err(|source| RunError::Bundle {
        out: req.out.clone(),
        source,
    })?;
    Ok((opts, notes))
}

/// What a run staged (and [`write`] committed).
#[derive(Debug)]
pub struct Staging {
    /// One outcome per certificate, key pair and kubeconfig.
    pub pki: Vec<Outcome>,
    /// The configs step's output, unless PKI-only.
    pub configs: Option<bundle::Written>,
}

/// How the PKI step may treat what exists.
#[derive(Debug, Clone, Copy, Default)]
pub struct PkiRequest {
    /// Replace every CA and certificate.
    pub force: bool,
    /// Fail rather than create a CA (`gen node` adds to a tree).
    pub require_ca: bool,
}

/// Stage the PKI, then (given versions and options) the configs step, then the spec.
fn stage(
    spec: &ClusterSpec,
    out: &Path,
    pki_req: PkiRequest,
    configs: Option<(&Versions, &Options)>,
    staged: &Staged,
) -> Result<Staging, RunError> {
    let opts = pki::Options {
        force: pki_req.force,
        require_ca: pki_req.require_ca,
    };
    let pki = pki::generate(spec, out, opts, staged, &|_| {}).map_err(|source| RunError::Pki {
        out: out.to_owned(),
        source,
    })?;
    let configs = match configs {
        Some((v, o)) => Some(bundle::write(&cluster_input(spec), v, o, staged).map_err(
            |source| RunError::Bundle {
                out: out.to_owned(),
                source,
            },
        )?),
        None => None,
    };
    crate::r#gen::save_spec_staged(out, spec, staged).map_err(|source| RunError::Write {
        out: out.to_owned(),
        source,
    })?;
    Ok(Staging { pki, configs })
}

/// The PKI step, then (given versions and options) the configs step and the spec, staged in one
/// set and committed: a failure or an interrupt before the commit leaves the previous tree as it
/// was. The caller holds the directory's [`crate::fsx::OutLock`].
pub fn write(
    spec: &ClusterSpec,
    out: &Path,
    pki_req: PkiRequest,
    configs: Option<(&Versions, &Options)>,
) -> Result<Staging, RunError> {
    let staged = Staged::new();
    let done = stage(spec, out, pki_req, configs, &staged)?;
    staged.commit().map_err(|source| RunError::Write {
        out: out.to_owned(),
        source,
    })?;
    Ok(done)
}

/// The same run staged in a private directory and compared with the tree in `out`, never
/// committed (`gen --diff`). Returns the plan, and whether the tree records no versions although
/// it has node trees (made by an older kbin).
pub fn dry_run(
    spec: &ClusterSpec,
    out: &Path,
    pki_req: PkiRequest,
    configs: Option<(&Versions, &Options)>,
) -> Result<(diff::Plan, bool), RunError> {
    let old = Record::load(out)?;
    let write_err = |source| RunError::Write {
        out: out.to_owned(),
        source,
    };
    let staged = Staged::scratch().map_err(write_err)?;
    stage(spec, out, pki_req, configs, &staged)?;
    let new = configs.map(|(v, _)| v.record());
    let plan = diff::plan(out, &staged, old.as_ref(), new.as_ref()).map_err(|source| {
        RunError::Compare {
            out: out.to_owned(),
            source,
        }
    })?;
    let unrecorded = old.is_none() && out.join("nodes").is_dir() && configs.is_some();
    Ok((plan, unrecorded))
}

/// What `kbin gen cluster|node|encryption-key` asks of a run.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The configs step's request (its `out` is the output directory).
    pub configs: ConfigsRequest,
    /// How the PKI step may treat what exists.
    pub pki: PkiRequest,
    /// `--diff`: compare with the tree, write nothing.
    pub diff: bool,
}

/// What [`generate`] did.
#[derive(Debug)]
pub enum Generated {
    /// `--diff`: the plan, and whether the tree records no versions (made by an older kbin).
    Planned {
        /// The changes a run would make.
        plan: diff::Plan,
        /// The tree records no versions.
        unrecorded: bool,
    },
    /// The tree was written: what was committed.
    Written(Staging),
}

/// The whole run for `spec`: the checks that need nothing written (with `versions`, unless
/// PKI-only), then under the output directory's lock either the dry run (`--diff`: never
/// creating the directory or its lock) or the PKI and configs steps committed. What a step has
/// to say is said on `ui` (not by a dry run: nothing to say when nothing would change), and so
/// is a wait for another kbin's lock.
pub fn generate(
    spec: &ClusterSpec,
    versions: Option<&Versions>,
    req: &Request,
    ui: &Ui,
) -> Result<Generated, RunError> {
    let out = &req.configs.out;
    let opts = match versions {
        Some(v) => {
            let (opts, notes) = prepare(spec, v, &req.configs)?;
            if !req.diff {
                say(ui, notes);
            }
            Some(opts)
        }
        None => None,
    };
    let configs = versions.zip(opts.as_ref());
    if req.diff {
        // Never create the directory or its lock file: wait for a writer only if the tree
        // exists.
        let _lock = match out.join(".kbin.lock").is_file() {
            true => Some(lock(out, ui)?),
            false => None,
        };
        let (plan, unrecorded) = dry_run(spec, out, req.pki, configs)?;
        return Ok(Generated::Planned { plan, unrecorded });
    }
    crate::fsx::interrupt::install();
    let _lock = lock(out, ui)?;
    Ok(Generated::Written(write(spec, out, req.pki, configs)?))
}

/// The output directory's lock, saying so when another kbin holds it.
fn lock(out: &Path, ui: &Ui) -> Result<crate::fsx::OutLock, RunError> {
    crate::fsx::OutLock::acquire(out, || {
        ui.status(format!(
            "another kbin is writing {}; waiting for it to finish",
            out.display()
        ))
    })
    .map_err(RunError::Lock)
}

/// Say `notes` on `ui`: warnings as warnings, the others as status lines.
pub fn say(ui: &Ui, notes: Vec<Note>) {
    for n in notes {
        match n.warn {
            true => ui.warn(n.text),
            false => ui.status(n.text),
        }
    }
}

/// What a run wrote, as `kbin gen cluster|node` reports it (`--json`: this, serialized).
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// The output directory.
    pub out: &'a Path,
    /// The spec the tree was generated from.
    pub spec: &'a ClusterSpec,
    /// One outcome per certificate, key pair and kubeconfig.
    pub pki: Vec<Outcome>,
    /// The configs step's output (`gen cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configs: Option<&'a bundle::Written>,
}

impl Report<'_> {
    /// The report's line: what the PKI step created, replaced and kept.
    pub fn text(&self) -> String {
        let count = |a: pki::Action| self.pki.iter().filter(|o| o.action == a).count();
        format!(
            "PKI and kubeconfigs in {}: {} created, {} replaced, {} kept ({} nodes)",
            self.out.display(),
            count(pki::Action::Created),
            count(pki::Action::Replaced),
            count(pki::Action::Kept),
            self.spec.nodes.len()
        )
    }
}

/// When neither `toolchain` nor `kubernetes_version` is given: the versions the tree under
/// `out` records (its toolchain, or its manifest version), and the note that says so.
pub fn tree_pin(
    out: &Path,
    toolchain: &mut Option<String>,
    kubernetes_version: &mut Option<String>,
) -> Result<Option<Note>, VersionsError> {
    if toolchain.is_some() || kubernetes_version.is_some() {
        return Ok(None);
    }
    let Some(record) = Record::load(out)? else {
        return Ok(None);
    };
    match record.origin.split_once(' ') {
        Some(("toolchain", name)) => *toolchain = Some(name.to_owned()),
        Some(("manifest", version)) => *kubernetes_version = Some(version.to_owned()),
        _ => {}
    }
    Ok(Some(status(format!(
        "pinned to {} as the rest of the tree ({}; --toolchain names another)",
        record.origin,
        versions::record_path(out).display()
    ))))
}

/// What the configs are pinned to.
#[derive(Debug, Clone, Copy)]
pub enum Pin<'a> {
    /// `--kubernetes-version`: from the manifest, with no toolchain.
    Kubernetes(&'a str),
    /// An installed toolchain (`--toolchain`, else the default one).
    Toolchain {
        /// The KBIN_HOME layout.
        layout: &'a Layout,
        /// `--toolchain`.
        name: Option<&'a str>,
    },
}

/// Why the versions to pin to cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// `--kubernetes-version` does not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The manifest's release lacks a component the cluster needs.
    #[error(transparent)]
    Release(VersionsError),
    /// The toolchain's versions cannot be read.
    #[error(transparent)]
    Toolchain(VersionsError),
}

impl PinError {
    /// What to do next.
    pub fn hint(&self) -> Option<String> {
        match self {
            PinError::Resolve(e) => e.hint(),
            PinError::Release(_) => Some(
                "the manifest's release lacks a component the cluster needs; pick another --kubernetes-version".into(),
            ),
            PinError::Toolchain(VersionsError::NoToolchain { .. }) => Some(
                "install one (`kbin install 1.35`), name one with --toolchain NAME, or generate from the manifest with --kubernetes-version 1.35 (no binaries bundled)".into(),
            ),
            PinError::Toolchain(VersionsError::NotInstalled { .. }) => Some(
                "see `kbin show-versions` for what is installed, or `kbin install` it".into(),
            ),
            PinError::Toolchain(_) => Some("reinstall the toolchain (`kbin install`)".into()),
        }
    }
}

/// The versions to pin to (`manifest` is the manifest with its overlay), and what is worth
/// saying about them: a toolchain lacking components whose defaults come from the manifest.
pub fn versions(manifest: &Manifest, pin: Pin<'_>) -> Result<(Versions, Vec<Note>), PinError> {
    let (layout, name) = match pin {
        Pin::Kubernetes(version) => {
            let res = resolve::resolve(
                manifest,
                &resolve::Request {
                    version: version.to_owned(),
                    ..Default::default()
                },
            )?;
            let arch = Arch::host().unwrap_or(Arch::Amd64);
            let v = Versions::from_resolution(&res, arch).map_err(PinError::Release)?;
            return Ok((v, Vec::new()));
        }
        Pin::Toolchain { layout, name } => (layout, name),
    };
    let v =
        Versions::from_toolchain_in(layout, name, Some(manifest)).map_err(PinError::Toolchain)?;
    let mut notes = Vec::new();
    if !v.from_defaults.is_empty() {
        notes.push(Note {
            warn: true,
            text: format!(
                "{} lacks {}: the configs use Kubernetes {}'s defaults from the manifest for them",
                v.origin,
                v.from_defaults.join(", "),
                crate::manifest::Minor::of(&v.kubernetes)
            ),
        });
    }
    Ok((v, notes))
}

impl RunError {
    /// What to do next, for the errors that have an obvious next step.
    pub fn hint(&self) -> Option<&'static str> {
        use bundle::BundleError;
        Some(match self {
            RunError::Pki {
                source: PkiError::CaUnusable { .. },
                ..
            } => {
                "fix or restore it; or pass --force to replace every CA and certificate (nodes then need the new ones)"
            }
            RunError::Bundle {
                source: BundleError::DamagedKey { .. },
                ..
            } => {
                "restore it from a backup (or from /etc/kubernetes/encryption-config.yaml on a control-plane node); only for a cluster that stores no Secrets yet, delete it and run again"
            }
            RunError::Bundle {
                source: BundleError::MissingBinary { .. },
                ..
            } => {
                "install the whole toolchain (`kbin install VERSION` without --only), or pass --no-binaries to generate the configs without bundling binaries"
            }
            RunError::Skew(_) => {
                "upgrade one minor at a time (kbin install the next minor, generate, run ansible/upgrade.yml), or pass --allow-skew to generate it anyway"
            }
            RunError::Record(_) => {
                "it is written by `kbin gen`: regenerate the tree without --diff"
            }
            _ => return None,
        })
    }
}

/// `kbin gen encryption-key`: fail unless the tree under `out` has node trees (one made with
/// `--pki-only` has no encryption config to rotate).
pub fn check_rotatable(out: &Path) -> Result<(), RunError> {
    match bundle::nodes_dir(out).is_dir() {
        true => Ok(()),
        false => Err(RunError::NotRotatable(out.to_owned())),
    }
}

/// What to run after the tree under `out` was regenerated for key rotation `step`.
pub fn key_step_done(out: &Path, step: KeyStep) -> Note {
    let roll = format!(
        "ansible-playbook -i {}/ansible/inventory.yml {}/ansible/upgrade.yml",
        out.display(),
        out.display()
    );
    let next = match step {
        KeyStep::Add => format!(
            "roll it out to every API server, one at a time ({roll}), then `kbin gen encryption-key use`"
        ),
        KeyStep::Use => format!(
            "roll it out ({roll}), then write every Secret again with the new key (`kubectl get secrets -A -o json | kubectl replace -f -`), then `kbin gen encryption-key drop`"
        ),
        KeyStep::Drop => format!("roll it out ({roll}): the old key is gone"),
    };
    status(format!("encryption key {}: {next}", step.name()))
}
