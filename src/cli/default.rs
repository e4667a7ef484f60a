//! `kbin default`: show or set the default toolchain.

use std::process::ExitCode;

use clap::Args;

use super::Context;

/// Arguments of `kbin default`.
#[derive(Debug, Args)]
pub struct DefaultArgs {
    /// The toolchain to make the default [default: show the current one]
    #[arg(value_name = "TOOLCHAIN")]
    pub name: Option<String>,
}

pub(super) fn run(_ctx: &Context, _args: DefaultArgs) -> anyhow::Result<ExitCode> {
    super::not_yet("default", 4)
}
