//! `kbin uninstall`: remove a toolchain (its blobs stay until `kbin cache gc`).

use std::process::ExitCode;

use clap::Args;

use super::Context;

/// Arguments of `kbin uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The toolchain to remove
    #[arg(value_name = "TOOLCHAIN")]
    pub name: String,
}

pub(super) fn run(_ctx: &Context, _args: UninstallArgs) -> anyhow::Result<ExitCode> {
    super::not_yet("uninstall", 4)
}
