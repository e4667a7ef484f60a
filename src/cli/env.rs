//! `kbin env`: shell exports for a toolchain and a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::Context;

/// Shells `kbin env` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// Arguments of `kbin env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The toolchain [default: the default toolchain]
    #[arg(value_name = "TOOLCHAIN")]
    pub toolchain: Option<String>,

    /// A generated cluster directory: KUBECONFIG points at its admin.conf
    #[arg(long, value_name = "DIR")]
    pub cluster: Option<PathBuf>,

    /// The shell to write for [default: from $SHELL, else bash]
    #[arg(long, value_name = "SHELL")]
    pub shell: Option<Shell>,
}

pub(super) fn run(_ctx: &Context, _args: EnvArgs) -> anyhow::Result<ExitCode> {
    super::not_yet("env", 7)
}
