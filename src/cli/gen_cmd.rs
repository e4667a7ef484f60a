//! `kbin gen cluster|node`: the cluster's configuration tree.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::Context;
use crate::error::WithHint;
use crate::r#gen as gen_mod;
use crate::r#gen::pki::{self, Action, Outcome, PkiError};
use crate::r#gen::spec::{ClusterSpec, SpecError, SpecInput};

/// `kbin gen` subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only add noise
pub enum GenCommand {
    /// Write the PKI, kubeconfigs, component configs, systemd units, node bundles and next steps
    /// of a cluster
    Cluster(GenClusterArgs),
    /// Add nodes to an existing cluster tree, reusing its CA: their certificates and
    /// kubeconfigs, and (unless the tree was made with --pki-only) their configs and bundles
    Node(GenNodeArgs),
}

/// Arguments of `kbin gen cluster`.
#[derive(Debug, Default, Args)]
pub struct GenClusterArgs {
    /// The output directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// Read the cluster spec from this TOML file (flags override it) [default: OUT/cluster.toml
    /// when the tree exists, so a re-run keeps its nodes]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The cluster's name in kubeconfigs
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The address clients and nodes use to reach the API server [default: the first
    /// control-plane node's IP]
    #[arg(long, value_name = "IP")]
    pub cluster_ip: Option<String>,

    /// The cluster DNS service address [default: the 10th address of the service CIDR]
    #[arg(long, value_name = "IP")]
    pub cluster_dns: Option<String>,

    /// The cluster's DNS domain [default: cluster.local]
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,

    /// The pod network [default: 10.200.0.0/16]
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<String>,

    /// The service network [default: 10.32.0.0/24]
    #[arg(long, value_name = "CIDR")]
    pub service_cidr: Option<String>,

    /// A control-plane node (repeatable)
    #[arg(long = "control-plane", value_name = "NAME=IP")]
    pub control_plane: Vec<String>,

    /// A worker node (repeatable)
    #[arg(long = "worker", value_name = "NAME=IP")]
    pub worker: Vec<String>,

    /// Key algorithm: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096 [default: ecdsa-p256]
    #[arg(long, value_name = "ALGO")]
    pub key_algo: Option<String>,

    /// CA validity, e.g. 3650d or 10y [default: 10y]
    #[arg(long, value_name = "DURATION")]
    pub ca_validity: Option<String>,

    /// Leaf certificate validity, e.g. 365d or 1y [default: 1y]
    #[arg(long, value_name = "DURATION")]
    pub cert_validity: Option<String>,

    /// The kind of machine the nodes are: systemd (systemd as PID 1) or sandbox (a container,
    /// WSL or CI: cgroupfs driver, containerd restrict_oom_score_adj, kube-proxy leaves
    /// conntrack limits alone) [default: detected when the cluster is this machine, else
    /// systemd]
    #[arg(long, value_name = "PROFILE")]
    pub host_profile: Option<String>,

    /// The resolv.conf the kubelets give pods, e.g. /run/systemd/resolve/resolv.conf on hosts
    /// with systemd-resolved [default: detected when the cluster is this machine]
    #[arg(long, value_name = "PATH")]
    pub resolv_conf: Option<String>,

    /// Replace existing CAs and certificates
    #[arg(long)]
    pub force: bool,

    /// Write only the PKI and kubeconfigs (and cluster.toml): no versions needed, no configs,
    /// units or bundles
    #[arg(long)]
    pub pki_only: bool,

    /// Write nothing: print what a run with these flags would change, file by file and node
    /// by node, with the version rule (and its upstream source) behind each change
    #[arg(long)]
    pub diff: bool,

    /// Generate an upgrade of an existing tree that breaks the version-skew rules (more than
    /// one minor at a time, a kubelet newer than the API server) anyway, with a warning
    #[arg(long)]
    pub allow_skew: bool,

    /// What the configs are pinned to
    #[command(flatten)]
    pub pin: PinArgs,
}

/// What `gen cluster` and `gen node` pin the configs to, and how the nodes' bundles are made.
#[derive(Debug, Default, Args)]
pub struct PinArgs {
    /// The toolchain whose versions the configs are pinned to [default: the default toolchain]
    #[arg(long, value_name = "NAME")]
    pub toolchain: Option<String>,

    /// Generate for this Kubernetes version from the manifest, with no toolchain installed (no
    /// binaries are bundled)
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Option<String>,

    /// Do not put the toolchain's binaries in the node bundles
    #[arg(long)]
    pub no_binaries: bool,

    /// Configure the kubelet for hosts still on cgroup v1
    #[arg(long)]
    pub cgroup_v1: bool,
}

/// Arguments of `kbin gen node`.
#[derive(Debug, Args)]
pub struct GenNodeArgs {
    /// The nodes to add
    #[arg(value_name = "NAME=IP", required = true)]
    pub nodes: Vec<String>,

    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// What the new nodes' configs are pinned to
    #[command(flatten)]
    pub pin: PinArgs,
}

pub(super) fn run(ctx: &Context, cmd: GenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GenCommand::Cluster(a) => cluster(ctx, a),
        GenCommand::Node(a) => node(ctx, a),
    }
}

/// What `kbin gen cluster|node --json` prints.
#[derive(Serialize)]
struct GenReport<'a> {
    out: &'a Path,
    spec: &'a ClusterSpec,
    pki: Vec<Outcome>,
    /// The configs step's output (`gen cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    configs: Option<&'a crate::r#gen::bundle::Written>,
}

impl GenClusterArgs {
    /// The spec input the flags give (nodes from --control-plane/--worker).
    fn input(&self) -> Result<SpecInput, SpecError> {
        let mut input = SpecInput {
            name: self.name.clone(),
            cluster_ip: self.cluster_ip.clone(),
            service_cidr: self.service_cidr.clone(),
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            pod_cidr: self.pod_cidr.clone(),
            key_algo: self.key_algo.clone(),
            ca_validity: self.ca_validity.clone(),
            cert_validity: self.cert_validity.clone(),
            host_profile: self.host_profile.clone(),
            resolv_conf: self.resolv_conf.clone(),
            nodes: Vec::new(),
        };
        input.add_nodes(&self.control_plane, &self.worker)?;
        Ok(input)
    }
}

const SPEC_HINT: &str =
    "fix the value named above (see `kbin gen cluster --help`); nothing was written";

fn cluster(ctx: &Context, a: GenClusterArgs) -> anyhow::Result<ExitCode> {
    let saved = gen_mod::spec_path(&a.out);
    let file = match &a.config {
        Some(path) => {
            SpecInput::load(path).hint("fix the file; its fields are the flags' names")?
        }
        // A re-run over an existing tree starts from the spec it was made with (and the nodes
        // `gen node` added), not from the defaults: flags still win.
        None if saved.is_file() => {
            if !a.diff {
                ctx.ui
                    .status(format!("starting from the spec in {}", saved.display()));
            }
            SpecInput::load(&saved)
                .hint("fix it, or pass --config FILE to start from another spec")?
        }
        None => SpecInput::default(),
    };
    let mut input = file.overlay(a.input().hint(SPEC_HINT)?);
    if input.nodes.is_empty() {
        let host = crate::r#gen::host::routable_address()
            .ok_or_else(|| anyhow::anyhow!("this machine has no IPv4 address besides loopback, and the kubelet refuses a loopback node IP"))
            .hint("give the node's address: --control-plane node-0=IP --worker node-0=IP")?;
        ctx.ui.status(format!(
            "one-machine cluster: node {} at {} ({})",
            crate::r#gen::spec::DEFAULT_NODE_NAME,
            host.ip,
            host.how
        ));
        input.add_this_machine(host.ip);
    }
    mark_joining_control_planes(ctx, &mut input, &a.out);
    // Even for --pki-only: the spec saved now is what a later full run starts from.
    detect_host(ctx, &mut input);
    let spec = input.build().hint(SPEC_HINT)?;
    generate(ctx, &spec, &a, false)
}

/// Control planes that a re-run adds to a tree whose etcd members already have their units join
/// the running cluster (`--initial-cluster-state=existing`) instead of starting a new one.
fn mark_joining_control_planes(ctx: &Context, input: &mut SpecInput, out: &Path) {
    let nodes = crate::r#gen::bundle::nodes_dir(out);
    let has_etcd = |name: &str| {
        nodes
            .join(name)
            .join("etc/systemd/system/etcd.service")
            .is_file()
    };
    if !input
        .nodes
        .iter()
        .any(|n| n.control_plane && has_etcd(&n.name))
    {
        return;
    }
    for n in input.nodes.iter_mut().filter(|n| n.control_plane) {
        if !has_etcd(&n.name) && !n.joins_etcd {
            n.joins_etcd = true;
            ctx.ui.status(format!(
                "control plane {} is new to this cluster: its etcd member joins the running one (NEXT-STEPS says how)",
                n.name
            ));
        }
    }
}

/// When the cluster is this machine and the spec does not say, detect the host profile and
/// whether systemd-resolved owns /etc/resolv.conf, and say what was found.
fn detect_host(ctx: &Context, input: &mut SpecInput) {
    use crate::r#gen::host;
    let ips: Vec<_> = input
        .nodes
        .iter()
        .filter_map(|n| n.ip.parse().ok())
        .collect();
    if ips.is_empty() || !ips.iter().all(|ip| host::is_own_address(*ip)) {
        return;
    }
    if input.host_profile.is_none() {
        let why = host::sandbox_reasons();
        let profile = if why.is_empty() {
            host::HostProfile::Systemd
        } else {
            ctx.ui.status(format!(
                "this machine is a sandbox ({}): host profile sandbox (as --host-profile sandbox)",
                why.join("; ")
            ));
            host::HostProfile::Sandbox
        };
        input.host_profile = Some(profile.to_string());
    }
    if input.resolv_conf.is_none()
        && let Some(p) = host::resolved_resolv_conf()
    {
        ctx.ui.status(format!(
            "systemd-resolved owns /etc/resolv.conf: the kubelet gives pods {} (as --resolv-conf)",
            p.display()
        ));
        input.resolv_conf = Some(p.display().to_string());
    }
}

/// The PKI, then (unless `--pki-only`) configs, units, bundles and NEXT-STEPS for `spec`.
/// `require_ca`: fail rather than create a CA (`gen node` adds to a tree).
fn generate(
    ctx: &Context,
    spec: &ClusterSpec,
    a: &GenClusterArgs,
    require_ca: bool,
) -> anyhow::Result<ExitCode> {
    // Versions first: a missing toolchain fails before anything is written.
    let versions = if a.pki_only {
        None
    } else {
        Some(configs_step::versions(ctx, a)?)
    };
    if a.diff {
        return diff(ctx, spec, a, require_ca, versions.as_ref());
    }
    // Whatever can be checked without making anything is checked before the lock (which makes
    // the directory) and the PKI step: skew, the toolchain's binaries. A run that fails there
    // has touched nothing. (The skew rule reads the tree's inventory unlocked: a concurrent
    // writer is waited for below, and its tree is regenerated under the lock anyway.)
    let opts = match &versions {
        Some(v) => Some(configs_step::prepare(ctx, spec, a, v)?),
        None => None,
    };
    gen_mod::interrupt::install();
    let _lock = gen_mod::OutLock::acquire(&a.out, || {
        ctx.ui.status(format!(
            "another kbin is writing {}; waiting for it to finish",
            a.out.display()
        ))
    })?;
    // Everything is staged, then committed at once: a failure or an interrupt before the
    // commit leaves the previous tree as it was.
    let staged = gen_mod::Staged::new();
    let pki = pki_step(spec, &a.out, a.force, require_ca, &staged)?;
    let configs = match (&versions, &opts) {
        (Some(v), Some(o)) => Some(configs_step::run(spec, v, o, &staged)?),
        _ => None,
    };
    gen_mod::save_spec(&a.out, spec, &staged)?;
    staged
        .commit()
        .with_context(|| format!("cannot write the cluster tree in {}", a.out.display()))?;
    // Only what was committed is reported: nothing is "created" before it is in place.
    report_pki(ctx, &pki);
    if let Some(c) = &configs {
        configs_step::report(ctx, c);
    }
    finish(ctx, &a.out, spec, pki, configs.as_ref())?;
    if let Some(c) = &configs {
        configs_step::print_next_steps(ctx, c);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--diff`: the same run, staged and compared with the tree instead of committed; its own
/// messages are silenced (nothing to say when nothing would change).
fn diff(
    ctx: &Context,
    spec: &ClusterSpec,
    a: &GenClusterArgs,
    require_ca: bool,
    versions: Option<&crate::r#gen::versions::Versions>,
) -> anyhow::Result<ExitCode> {
    let quiet = Context {
        global: ctx.global.clone(),
        ui: crate::ui::Ui::new(ctx.ui.json(), true, 0),
    };
    // Never create the directory or its lock file: wait for a writer only if the tree exists.
    let _lock = match a.out.join(".kbin.lock").is_file() {
        true => Some(gen_mod::OutLock::acquire(&a.out, || {
            ctx.ui.status(format!(
                "another kbin is writing {}; waiting for it to finish",
                a.out.display()
            ))
        })?),
        false => None,
    };
    let old = crate::r#gen::versions::Record::load(&a.out)
        .hint("it is written by `kbin gen`: regenerate the tree without --diff")?;
    let staged = gen_mod::Staged::scratch()?;
    pki_step(spec, &a.out, a.force, require_ca, &staged)?;
    if let Some(v) = versions {
        let opts = configs_step::prepare(&quiet, spec, a, v)?;
        configs_step::run(spec, v, &opts, &staged)?;
    }
    gen_mod::save_spec_staged(&a.out, spec, &staged)?;
    let new = versions.map(|v| v.record());
    let plan = crate::r#gen::diff::plan(&a.out, &staged, old.as_ref(), new.as_ref())
        .with_context(|| format!("cannot compare with the tree in {}", a.out.display()))?;
    if old.is_none() && a.out.join("nodes").is_dir() && versions.is_some() {
        ctx.ui.warn(format!(
            "{} records no versions (made by an older kbin): the changes are shown without the version rules that were in force",
            a.out.display()
        ));
    }
    // Staged files are dropped here: nothing was written.
    drop(staged);
    ctx.ui.answer(&plan, crate::r#gen::diff::Plan::text)?;
    Ok(ExitCode::SUCCESS)
}

fn node(ctx: &Context, a: GenNodeArgs) -> anyhow::Result<ExitCode> {
    let saved = gen_mod::spec_path(&a.out);
    let mut input = SpecInput::load(&saved).hint(format!(
        "`kbin gen node` adds to a tree made by `kbin gen cluster --out {}`; run that first",
        a.out.display()
    ))?;
    let before = input.nodes.clone();
    input.add_nodes(&[], &a.nodes).hint(SPEC_HINT)?;
    let spec = match input.build() {
        Ok(spec) => spec,
        // A name the tree already has is not a typo in this command line: say where it is.
        Err(SpecError::DuplicateName(name)) => match before.iter().find(|n| n.name == name) {
            Some(n) => {
                return Err(anyhow::anyhow!(
                    "node {name} is already in the cluster (at {})",
                    n.ip
                ))
                .hint(format!(
                    "`kbin gen node` adds new nodes; to change one, edit {} and run `kbin gen cluster --out {}`",
                    saved.display(),
                    a.out.display()
                ));
            }
            None => return Err(SpecError::DuplicateName(name)).hint(SPEC_HINT),
        },
        Err(e) => return Err(e).hint(SPEC_HINT),
    };
    // The same steps as `gen cluster` over the grown spec: what exists is kept, the new nodes'
    // files are made. A tree made with --pki-only stays PKI-only.
    let args = GenClusterArgs {
        out: a.out.clone(),
        pki_only: !crate::r#gen::bundle::nodes_dir(&a.out).is_dir(),
        pin: a.pin,
        ..GenClusterArgs::default()
    };
    generate(ctx, &spec, &args, true)
}

/// One line per certificate and kubeconfig, once the commit put them in place.
fn report_pki(ctx: &Context, pki: &[Outcome]) {
    for o in pki {
        match o.action {
            Action::Kept => ctx.ui.detail(o.line()),
            _ => ctx.ui.status(o.line()),
        }
    }
}

fn pki_step(
    spec: &ClusterSpec,
    out: &Path,
    force: bool,
    require_ca: bool,
    staged: &gen_mod::Staged,
) -> anyhow::Result<Vec<Outcome>> {
    pki::generate(spec, out, pki::Options { force, require_ca }, staged, &|_| {})
        .map_err(|e| {
            let hint = match &e {
                PkiError::CaUnusable { .. } => Some(
                    "fix or restore it; or pass --force to replace every CA and certificate (nodes then need the new ones)",
                ),
                _ => None,
            };
            match hint {
                Some(h) => crate::error::with_hint(e.into(), h),
                None => e.into(),
            }
        })
        .with_context(|| format!("cannot generate the PKI in {}", out.display()))
}

fn finish(
    ctx: &Context,
    out: &Path,
    spec: &ClusterSpec,
    pki: Vec<Outcome>,
    configs: Option<&crate::r#gen::bundle::Written>,
) -> anyhow::Result<ExitCode> {
    let report = GenReport {
        out,
        spec,
        pki,
        configs,
    };
    ctx.ui.report(&report, |r| {
        let count = |a: Action| r.pki.iter().filter(|o| o.action == a).count();
        format!(
            "PKI and kubeconfigs in {}: {} created, {} replaced, {} kept ({} nodes)",
            r.out.display(),
            count(Action::Created),
            count(Action::Replaced),
            count(Action::Kept),
            r.spec.nodes.len()
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The renderers' view of `spec` (also `kbin certs renew`'s, to refresh node bundles).
pub(super) fn cluster_input(spec: &ClusterSpec) -> crate::r#gen::configs::ClusterInput {
    configs_step::input(spec)
}

/// The configs step of `kbin gen cluster` (issue 7): component configs, systemd units, node
/// bundles and NEXT-STEPS, pinned to a toolchain's versions (or the manifest's with
/// `--kubernetes-version`).
mod configs_step {
    use anyhow::Context as _;

    use super::{Context, GenClusterArgs};
    use crate::error::WithHint;
    use crate::r#gen::bundle::{self, Written};
    use crate::r#gen::bundle_cache::Source;
    use crate::r#gen::configs::{ClusterInput, NodeInput};
    use crate::r#gen::spec::ClusterSpec;
    use crate::r#gen::versions::{self, Versions, VersionsError};
    use crate::manifest::Arch;
    use crate::manifest::resolve::Request;

    /// The versions to pin to: `--kubernetes-version` from the manifest, else `--toolchain`,
    /// else the default toolchain.
    pub(super) fn versions(ctx: &Context, a: &GenClusterArgs) -> anyhow::Result<Versions> {
        if let Some(v) = &a.pin.kubernetes_version {
            let manifest = ctx.manifest()?;
            let res = crate::cli::resolve(
                &manifest,
                &Request {
                    version: v.clone(),
                    ..Default::default()
                },
            )?;
            let arch = Arch::host().unwrap_or(Arch::Amd64);
            return Versions::from_resolution(&res, arch)
                .hint("the manifest's release lacks a component the cluster needs; pick another --kubernetes-version");
        }
        let layout = ctx.layout()?;
        let manifest = ctx.manifest()?;
        let v = Versions::from_toolchain_in(&layout, a.pin.toolchain.as_deref(), Some(&manifest))
            .map_err(|e| {
            let hint = match &e {
                VersionsError::NoToolchain { .. } => {
                    "install one (`kbin install 1.35`), name one with --toolchain NAME, or generate from the manifest with --kubernetes-version 1.35 (no binaries bundled)"
                }
                VersionsError::NotInstalled { .. } => {
                    "see `kbin show-versions` for what is installed, or `kbin install` it"
                }
                _ => "reinstall the toolchain (`kbin install`)",
            };
            crate::error::with_hint(e.into(), hint)
        })?;
        if !v.from_defaults.is_empty() {
            ctx.ui.warn(format!(
                "{} lacks {}: the configs use Kubernetes {}'s defaults from the manifest for them",
                v.origin,
                v.from_defaults.join(", "),
                crate::manifest::Minor::of(&v.kubernetes)
            ));
        }
        Ok(v)
    }

    /// The renderers' view of the spec.
    pub(in crate::cli) fn input(spec: &ClusterSpec) -> ClusterInput {
        ClusterInput {
            name: spec.name.clone(),
            api_server_url: spec.api_server_url(),
            service_cidr: spec.service_cidr.to_string(),
            cluster_dns: spec.cluster_dns,
            cluster_domain: spec.cluster_domain.clone(),
            pod_cidr: spec.pod_cidr.to_string(),
            host_profile: spec.host_profile,
            resolv_conf: spec.resolv_conf.clone(),
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

    /// Whether the cluster is this machine: every node on one of its addresses or named like
    /// this host. Then its cgroup version is detected rather than asked for.
    fn is_local(spec: &ClusterSpec) -> bool {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        spec.nodes
            .iter()
            .all(|n| crate::r#gen::host::is_own_address(n.ip) || n.name == hostname.trim())
    }

    /// Everything the configs step checks before a byte is staged: the loopback warning, the
    /// version-skew rules of a deployed tree, the host's cgroup version and the toolchain's
    /// binaries. Returns the bundle options.
    pub(super) fn prepare(
        ctx: &Context,
        spec: &ClusterSpec,
        a: &GenClusterArgs,
        v: &Versions,
    ) -> anyhow::Result<bundle::Options> {
        let remote: Vec<&str> = spec
            .workers()
            .filter(|n| !n.ip.is_loopback())
            .map(|n| n.name.as_str())
            .collect();
        if spec.cluster_ip.is_loopback() && !remote.is_empty() {
            let first_cp = spec.control_planes().next().map(|n| n.ip.to_string());
            ctx.ui.warn(format!(
                "workers {} will look for the API server at {} (a loopback --cluster-ip), which only works on one machine; generate again with --cluster-ip {} (a control-plane node or a load balancer in front of them)",
                remote.join(", "),
                spec.api_server_url(),
                first_cp.as_deref().unwrap_or("ADDRESS")
            ));
        }
        // An upgrade of a deployed tree (its inventory records what it was generated for) must
        // keep to the skew rules: upgrade.yml would otherwise run kubelets newer than their API
        // server, or skip minors.
        if let Some(old) = crate::r#gen::ansible::deployed_versions(&a.out) {
            let broken = crate::r#gen::ansible::upgrade_skew(&old, v);
            if !broken.is_empty() {
                let what = format!(
                    "generating {} over {} would break the version-skew rules: {}",
                    v.origin,
                    a.out.display(),
                    broken.join("; ")
                );
                if !a.allow_skew {
                    return Err(crate::error::with_hint(
                        anyhow::anyhow!(what),
                        "upgrade one minor at a time (kbin install the next minor, generate, run ansible/upgrade.yml), or pass --allow-skew to generate it anyway",
                    ));
                }
                ctx.ui
                    .warn(format!("version skew allowed by --allow-skew: {what}"));
            }
        }
        let local_v1 = is_local(spec) && versions::host_cgroup_v1();
        if local_v1 && !a.pin.cgroup_v1 {
            ctx.ui.status(
                "this machine runs cgroup v1: configuring the kubelet for it (as --cgroup-v1)",
            );
        }
        let opts = bundle::Options {
            out: a.out.clone(),
            // --kubernetes-version has no toolchain: nothing to bundle.
            no_binaries: a.pin.no_binaries || v.toolchain_dir.is_none(),
            cgroup_v1: a.pin.cgroup_v1 || local_v1,
        };
        bundle::check_binaries(&input(spec), v, &opts).map_err(bundle_error)?;
        Ok(opts)
    }

    /// The hint a bundle error deserves, if any.
    fn bundle_error(e: bundle::BundleError) -> anyhow::Error {
        let hint = match &e {
            bundle::BundleError::DamagedKey { .. } => {
                "restore it from a backup (or from /etc/kubernetes/encryption-config.yaml on a control-plane node); only for a cluster that stores no Secrets yet, delete it and run again"
            }
            bundle::BundleError::MissingBinary { .. } => {
                "install the whole toolchain (`kbin install VERSION` without --only), or pass --no-binaries to generate the configs without bundling binaries"
            }
            _ => return e.into(),
        };
        crate::error::with_hint(e.into(), hint)
    }

    /// Stage configs, units, node trees, tarballs and NEXT-STEPS.md.
    pub(super) fn run(
        spec: &ClusterSpec,
        v: &Versions,
        opts: &bundle::Options,
        staged: &crate::r#gen::Staged,
    ) -> anyhow::Result<Written> {
        bundle::write(&input(spec), v, opts, staged)
            .map_err(bundle_error)
            .with_context(|| format!("cannot write the node bundles in {}", opts.out.display()))
    }

    /// What the configs step put in place (after the commit).
    pub(super) fn report(ctx: &Context, written: &Written) {
        for n in &written.nodes {
            ctx.ui.status(format!(
                "node {}: {} and {}",
                n.name,
                n.tree.display(),
                n.tarball.display()
            ));
        }
        for b in &written.shared_bundles {
            let how = match b.source {
                Source::Reused => " (kept in the store by an earlier run: reused)",
                Source::Made => " (made, and kept in the store for the next run)",
                Source::Uncached => "",
            };
            ctx.ui
                .status(format!("binaries: {}{how}", b.path.display()));
        }
    }

    /// NEXT-STEPS.md on stdout, after the report (text mode only; a reader that went away is
    /// not an error: the tree is written).
    pub(super) fn print_next_steps(ctx: &Context, w: &Written) {
        if !ctx.ui.json() && !ctx.ui.quiet() {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "\n{}", w.next_steps_text);
        }
    }
}
