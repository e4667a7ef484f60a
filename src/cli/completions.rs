//! `kbin completions`: a completion script from the same clap definition as the help.

use std::process::ExitCode;

use clap::{Args, CommandFactory};

use super::{Cli, Context};

/// Arguments of `kbin completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

pub(super) fn run(_ctx: &Context, args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "kbin", &mut std::io::stdout().lock());
    Ok(ExitCode::SUCCESS)
}
