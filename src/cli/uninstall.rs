//! `kbin uninstall`: remove a toolchain (its blobs stay until `kbin cache gc`).

use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::error::WithHint;
use crate::toolchain::assemble;

/// Arguments of `kbin uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The toolchain to remove
    #[arg(value_name = "TOOLCHAIN")]
    pub name: String,
}

pub(super) fn run(ctx: &Context, args: UninstallArgs) -> anyhow::Result<ExitCode> {
    let layout = ctx.layout()?;
    // Shared, like an install: `cache gc` (exclusive) then never sees a half-removed toolchain.
    let store = crate::store::Store::open(layout.clone())?;
    let _home = store.lock_shared(|| ctx.ui.status("waiting for `kbin cache gc` to finish…"))?;
    let _lock = assemble::lock_toolchain(&layout, &args.name, || {
        ctx.ui.status(format!(
            "waiting for another kbin using toolchain {}…",
            args.name
        ))
    })?;
    if !assemble::remove_toolchain(&layout, &args.name)? {
        return Err(anyhow::anyhow!(
            "no toolchain named {:?} is installed",
            args.name
        ))
        .hint("kbin show-versions lists the installed toolchains");
    }
    let mut settings = layout.settings()?;
    if settings.default.as_deref() == Some(args.name.as_str()) {
        settings.default = None;
        layout.save_settings(&settings)?;
    }
    ctx.ui.status(format!(
        "removed toolchain {} (its files stay in the cache until `kbin cache gc`)",
        args.name
    ));
    Ok(ExitCode::SUCCESS)
}
