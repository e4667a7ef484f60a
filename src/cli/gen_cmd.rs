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

/// What `kbin gen cluster|node --json` prints.
#[derive(Serialize)]
struct GenReport<'a> {
    out: &'a Path,
    spec: &'a ClusterSpec,
    pki: Vec<Outcome>,
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
            nodes: Vec::new(),
        };
        input.add_nodes(&self.control_plane, &self.worker)?;
        Ok(input)
    }
}

const SPEC_HINT: &str =
    "fix the value named above (see `kbin gen cluster --help`); nothing was written";

fn cluster(ctx: &Context, a: GenClusterArgs) -> anyhow::Result<ExitCode> {
    let file = match &a.config {
        Some(path) => {
            SpecInput::load(path).hint("fix the file; its fields are the flags' names")?
        }
        None => SpecInput::default(),
    };
    let spec = a
        .input()
        .and_then(|flags| file.overlay(flags).build())
        .hint(SPEC_HINT)?;
    let pki = pki_step(ctx, &spec, &a.out, a.force, false)?;

    // Configs, units, bundles and next steps (issue 7) go here, after the PKI.

    finish(ctx, &a.out, &spec, pki)
}

fn node(ctx: &Context, a: GenNodeArgs) -> anyhow::Result<ExitCode> {
    let saved = gen_mod::spec_path(&a.out);
    let mut input = SpecInput::load(&saved).hint(format!(
        "`kbin gen node` adds to a tree made by `kbin gen cluster --out {}`; run that first",
        a.out.display()
    ))?;
    input.add_nodes(&[], &a.nodes).hint(SPEC_HINT)?;
    let spec = input.build().hint(SPEC_HINT)?;
    let pki = pki_step(ctx, &spec, &a.out, false, true)?;
    finish(ctx, &a.out, &spec, pki)
}

fn pki_step(
    ctx: &Context,
    spec: &ClusterSpec,
    out: &Path,
    force: bool,
    require_ca: bool,
) -> anyhow::Result<Vec<Outcome>> {
    let ui = &ctx.ui;
    let line = |o: &Outcome| match o.action {
        Action::Kept => ui.detail(o.line()),
        _ => ui.status(o.line()),
    };
    pki::generate(spec, out, pki::Options { force, require_ca }, &line)
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
) -> anyhow::Result<ExitCode> {
    gen_mod::save_spec(out, spec)?;
    let report = GenReport { out, spec, pki };
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
