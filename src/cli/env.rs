//! `kbin env`: shell exports for a toolchain and a cluster.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::error::WithHint as _;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::Context;
// Always quoted, for POSIX shells and fish alike: these lines are read as much as run.
use crate::util::shell_quote_always;

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

/// The lines `kbin env` prints for `shell`: PATH, KUBECONFIG and kubectl completion.
pub fn render(shell: Shell, bin: Option<&Path>, kubeconfig: Option<&Path>) -> String {
    let mut out = String::from("# kbin env: eval this in your shell, e.g. eval \"$(kbin env)\"\n");
    if let Some(bin) = bin {
        let b = shell_quote_always(&bin.display().to_string());
        out.push_str(&match shell {
            Shell::Fish => format!("set -gx PATH {b} $PATH;\n"),
            _ => format!("export PATH={b}:\"$PATH\";\n"),
        });
    }
    if let Some(k) = kubeconfig {
        let k = shell_quote_always(&k.display().to_string());
        out.push_str(&match shell {
            Shell::Fish => format!("set -gx KUBECONFIG {k};\n"),
            _ => format!("export KUBECONFIG={k};\n"),
        });
    }
    out.push_str(match shell {
        Shell::Bash => "command -v kubectl >/dev/null && source <(kubectl completion bash);\n",
        Shell::Zsh => "command -v kubectl >/dev/null && source <(kubectl completion zsh);\n",
        Shell::Fish => "command -q kubectl; and kubectl completion fish | source;\n",
    });
    out
}

fn shell_from_env() -> Shell {
    let sh = std::env::var("SHELL").unwrap_or_default();
    match sh.rsplit('/').next().unwrap_or("") {
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => Shell::Bash,
    }
}

pub(super) fn run(ctx: &Context, args: EnvArgs) -> anyhow::Result<ExitCode> {
    let layout = ctx.layout()?;
    let name = match args.toolchain {
        Some(n) => Some(n),
        None => layout.settings()?.default,
    };
    let bin = match &name {
        Some(n) => {
            let receipt = layout.receipt_path(n);
            if !receipt.is_file() {
                return Err(anyhow::anyhow!("toolchain {n:?} is not installed (no {})", receipt.display()))
                    .hint("list toolchains with `kbin show-versions`, or install one with `kbin install 1.30`");
            }
            Some(layout.toolchain_bin(n))
        }
        None => None,
    };
    let kubeconfig = match &args.cluster {
        Some(dir) => {
            let dir = std::path::absolute(dir)
                .with_context(|| format!("cannot resolve {}", dir.display()))?;
            // The cluster tree is gen's, not KBIN_HOME's: gen names its kubeconfig directory.
            let admin = crate::r#gen::pki::kubeconfig_dir(&dir).join("admin.conf");
            if !admin.is_file() {
                return Err(anyhow::anyhow!(
                    "{} has no kubeconfigs/admin.conf",
                    dir.display()
                ))
                .hint("generate the cluster first with `kbin gen cluster --out DIR`");
            }
            Some(admin)
        }
        None => None,
    };
    if bin.is_none() && kubeconfig.is_none() {
        return Err(anyhow::anyhow!("no toolchain given, no default toolchain, and no --cluster"))
            .hint("name a toolchain (`kbin env 1.30`), set a default (`kbin default 1.30`), or pass --cluster DIR");
    }
    let shell = args.shell.unwrap_or_else(shell_from_env);
    let text = render(shell, bin.as_deref(), kubeconfig.as_deref());
    #[derive(serde::Serialize)]
    struct Report<'a> {
        path: Option<&'a Path>,
        kubeconfig: Option<&'a Path>,
        script: &'a str,
    }
    ctx.ui.answer(
        &Report {
            path: bin.as_deref(),
            kubeconfig: kubeconfig.as_deref(),
            script: &text,
        },
        |r| r.script.to_owned(),
    )?;
    Ok(ExitCode::SUCCESS)
}
