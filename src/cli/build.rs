//! `kbin build --from-source`: clone a component with libgit2, build it, put it in a toolchain.

use std::process::ExitCode;

use clap::Args;

use super::Context;

/// Arguments of `kbin build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The component to build (etcd, containerd, runc, cni-plugins, crictl, kubernetes)
    #[arg(long = "from-source", value_name = "COMPONENT", required = true)]
    pub from_source: String,

    /// The toolchain to put it in [default: the default toolchain]
    #[arg(long, value_name = "NAME")]
    pub toolchain: Option<String>,

    /// Build this ref (tag, branch or commit) instead of the tag of the toolchain's version
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,

    /// Clone from this URL or local path instead of the manifest's repository
    #[arg(long, value_name = "URL|PATH")]
    pub source: Option<String>,
}

pub(super) fn run(_ctx: &Context, _args: BuildArgs) -> anyhow::Result<ExitCode> {
    super::not_yet("build", 5)
}
