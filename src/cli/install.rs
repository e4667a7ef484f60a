//! `kbin install`: resolve, fetch or build, verify, install a toolchain.

use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::manifest::Arch;
use crate::manifest::resolve::Override;

/// Arguments of `kbin install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The Kubernetes version: a minor (1.30: its latest known patch), a patch (1.30.4 or
    /// v1.30.4), or latest
    #[arg(value_name = "VERSION")]
    pub kubernetes: String,

    /// Use another version of a component or Kubernetes binary (repeatable), e.g.
    /// --with etcd=3.5.16 --with kubelet=1.29.15
    #[arg(long = "with", value_name = "NAME=VERSION")]
    pub with: Vec<Override>,

    /// Install only these components or binaries, e.g. --only kubectl,etcd
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Build this component from source instead of downloading it (repeatable)
    #[arg(long = "from-source", value_name = "COMPONENT")]
    pub from_source: Vec<String>,

    /// Install binaries for another architecture (downloaded and verified, not run)
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<Arch>,

    /// The toolchain's name [default: the Kubernetes minor, e.g. 1.30]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Make it the default toolchain
    #[arg(long)]
    pub default: bool,

    /// How many artifacts to download at once
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4)]
    pub jobs: usize,

    /// Refuse artifacts whose digest is not pinned in the manifest
    #[arg(long)]
    pub require_pinned: bool,

    /// Let version-skew violations through as warnings
    #[arg(long)]
    pub allow_skew: bool,
}

pub(super) fn run(_ctx: &Context, _args: InstallArgs) -> anyhow::Result<ExitCode> {
    super::not_yet("install", 4)
}
