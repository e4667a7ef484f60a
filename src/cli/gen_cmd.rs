//! `kbin gen cluster|node`: the cluster's configuration tree.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::Context;

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

pub(super) fn run(_ctx: &Context, cmd: GenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GenCommand::Cluster(_) => super::not_yet("gen cluster", 6),
        GenCommand::Node(_) => super::not_yet("gen node", 6),
    }
}
