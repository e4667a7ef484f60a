//! `kbin gen cluster|node`: the cluster's configuration tree.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use serde::Serialize;

use super::Context;
use crate::error::WithHint;
use crate::r#gen::kubeconfig;
use crate::r#gen::pki::{self, Action, Decision, PkiError};
use crate::r#gen::spec::{ClusterSpec, SpecInput};

/// `kbin gen` subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only add noise
pub enum GenCommand {
    /// Write the PKI, kubeconfigs, component configs, systemd units, node bundles and next steps
    /// of a cluster
    Cluster(GenClusterArgs),
    /// Add nodes to an existing cluster tree, reusing its CA
    Node(GenNodeArgs),
}

/// Arguments of `kbin gen cluster`.
#[derive(Debug, Args)]
pub struct GenClusterArgs {
    /// The output directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// Read the cluster spec from this TOML file (flags override it)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The cluster's name in kubeconfigs
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The address clients and nodes use to reach the API server [default: 127.0.0.1]
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

    /// Replace existing CAs and certificates
    #[arg(long)]
    pub force: bool,

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
}

pub(super) fn run(ctx: &Context, cmd: GenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GenCommand::Cluster(a) => cluster(ctx, a),
        GenCommand::Node(a) => node(ctx, a),
    }
}

/// The spec from `--config` and the flags (flags win).
fn spec_of(a: &GenClusterArgs) -> anyhow::Result<ClusterSpec> {
    let file = match &a.config {
        Some(path) => SpecInput::load(path).hint("fix the file, or give the values as flags")?,
        None => SpecInput::default(),
    };
    let mut flags = SpecInput {
        name: a.name.clone(),
        cluster_ip: a.cluster_ip.clone(),
        service_cidr: a.service_cidr.clone(),
        cluster_dns: a.cluster_dns.clone(),
        cluster_domain: a.cluster_domain.clone(),
        pod_cidr: a.pod_cidr.clone(),
        key_algo: a.key_algo.clone(),
        ca_validity: a.ca_validity.clone(),
        cert_validity: a.cert_validity.clone(),
        nodes: Vec::new(),
    };
    flags
        .add_nodes(&a.control_plane, &a.worker)
        .hint("nodes are written NAME=IP, e.g. --worker w1=10.0.0.21")?;
    file.overlay(flags)
        .build()
        .hint("nothing was written; fix the value and run again")
}

/// The PKI and kubeconfigs of `spec` under `out`, then `cluster.toml`; prints one line per
/// decision.
fn pki_step(
    ctx: &Context,
    out: &Path,
    spec: &ClusterSpec,
    force: bool,
    require_ca: bool,
) -> anyhow::Result<Vec<Decision>> {
    let mut decisions = pki::generate(out, spec, force, require_ca).map_err(|e| {
        let hint = match &e {
            PkiError::BrokenCa { .. } => Some(
                "kbin never replaces a CA on its own: repair or remove it, or pass --force to \
                 replace every CA and certificate (clusters using the old CA stop trusting them)",
            ),
            PkiError::MissingCa(_) => Some("run `kbin gen cluster --out DIR` first"),
            _ => None,
        };
        match hint {
            Some(h) => crate::error::with_hint(e.into(), h),
            None => e.into(),
        }
    })?;
    decisions.extend(kubeconfig::generate(out, spec)?);
    crate::r#gen::write_file(
        &pki::spec_file(out),
        pki::spec_toml(spec).as_bytes(),
        crate::r#gen::MODE_PUBLIC,
    )?;
    if !ctx.ui.quiet() && !ctx.ui.json() {
        for d in &decisions {
            let line = match d.action {
                Action::Reused => format!("[pki] reused   {}", d.file),
                Action::Created => format!("[pki] created  {}", d.file),
                Action::Replaced => format!("[pki] replaced {} ({})", d.file, d.reason),
            };
            ctx.ui.status(line);
        }
    }
    Ok(decisions)
}

/// What `gen cluster` and `gen node` report.
#[derive(Serialize)]
struct GenReport<'a> {
    out: &'a Path,
    decisions: &'a [Decision],
}

fn report(ctx: &Context, out: &Path, decisions: &[Decision]) -> anyhow::Result<()> {
    let count = |a: Action| decisions.iter().filter(|d| d.action == a).count();
    let (created, replaced, reused) = (
        count(Action::Created),
        count(Action::Replaced),
        count(Action::Reused),
    );
    ctx.ui.report(&GenReport { out, decisions }, |_| {
        format!(
            "{}: {created} created, {replaced} replaced, {reused} unchanged (PKI in {}, kubeconfigs in {})",
            out.display(),
            pki::pki_dir(out).display(),
            kubeconfig::kubeconfig_dir(out).display()
        )
    })?;
    Ok(())
}

fn cluster(ctx: &Context, a: GenClusterArgs) -> anyhow::Result<ExitCode> {
    let spec = spec_of(&a)?;
    let decisions = pki_step(ctx, &a.out, &spec, a.force, false)?;
    // The configs step (component configs, units, bundles) goes here, after the PKI.
    report(ctx, &a.out, &decisions)?;
    Ok(ExitCode::SUCCESS)
}

/// Load the spec a tree was generated from.
pub(super) fn load_tree_spec(out: &Path) -> anyhow::Result<SpecInput> {
    let path = pki::spec_file(out);
    if !path.exists() {
        return Err(anyhow::anyhow!(
            "{} has no cluster.toml: it is not a tree made by `kbin gen cluster`",
            out.display()
        ))
        .hint("run `kbin gen cluster --out DIR` first, or pass the right --out DIR");
    }
    Ok(SpecInput::load(&path)?)
}

fn node(ctx: &Context, a: GenNodeArgs) -> anyhow::Result<ExitCode> {
    let mut input = load_tree_spec(&a.out)?;
    input
        .add_nodes(&[], &a.nodes)
        .hint("nodes are written NAME=IP, e.g. kbin gen node w1=10.0.0.21")?;
    let spec = input
        .build()
        .hint("nothing was written; fix the value and run again")?;
    let decisions = pki_step(ctx, &a.out, &spec, false, true)?;
    report(ctx, &a.out, &decisions)?;
    Ok(ExitCode::SUCCESS)
}
