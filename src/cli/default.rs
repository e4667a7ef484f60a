//! `kbin default`: show or set the default toolchain.

use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::error::WithHint;

/// Arguments of `kbin default`.
#[derive(Debug, Args)]
pub struct DefaultArgs {
    /// The toolchain to make the default [default: show the current one]
    #[arg(value_name = "TOOLCHAIN")]
    pub name: Option<String>,
}

#[derive(serde::Serialize)]
struct DefaultReport {
    default: Option<String>,
}

pub(super) fn run(ctx: &Context, args: DefaultArgs) -> anyhow::Result<ExitCode> {
    let layout = ctx.layout()?;
    let mut settings = layout.settings()?;
    if let Some(name) = args.name {
        let installed = layout.toolchain_names()?;
        if !installed.contains(&name) {
            return Err(anyhow::anyhow!("no toolchain named {name:?} is installed")).hint(
                if installed.is_empty() {
                    "install one first: kbin install 1.30".to_string()
                } else {
                    format!("installed: {}", installed.join(", "))
                },
            );
        }
        settings.default = Some(name);
        layout.save_settings(&settings)?;
    }
    ctx.ui.answer(
        &DefaultReport {
            default: settings.default.clone(),
        },
        |r| match &r.default {
            Some(d) => format!("{d}\n"),
            None => "no default toolchain (kbin install sets one)\n".into(),
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
