//! `kbin cache dir|gc|verify`.

use std::process::ExitCode;

use clap::Subcommand;

use super::Context;
use crate::error::WithHint;
use crate::store::{Store, maintain};
use crate::toolchain::Receipt;

/// `kbin cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Print the cache directory
    Dir,
    /// Remove blobs, trees and builds that no toolchain.lock references
    Gc,
    /// Re-hash every blob and name the corrupt ones
    Verify,
}

pub(super) fn run(ctx: &Context, cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    let layout = ctx.layout()?;
    match cmd {
        CacheCommand::Dir => {
            let dir = layout.cache_dir();
            ctx.ui.answer(&serde_json::json!({ "cache": dir }), |_| {
                format!("{}\n", dir.display())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Gc => {
            let store = Store::open(layout.clone())?;
            let _lock = store.lock_exclusive(|| {
                ctx.ui
                    .status("waiting for running installs to finish before collecting garbage…")
            })?;
            let mut keep = std::collections::BTreeSet::new();
            for name in layout.toolchain_names()? {
                let r = Receipt::load(&layout.receipt_path(&name)).hint(format!(
                    "gc keeps what receipts reference, so it stops on an unreadable one: fix or \
                     `kbin uninstall {name}`"
                ))?;
                keep.extend(r.digests().cloned());
            }
            let report = maintain::gc(&store, &keep)?;
            ctx.ui.report(&report, |r| {
                format!(
                    "removed {} blob(s), {} tree(s), {} temporary file(s): {:.1} MB freed; kept {} blob(s)\n",
                    r.blobs,
                    r.trees,
                    r.tmp,
                    r.bytes as f64 / 1e6,
                    r.kept
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Verify => {
            let store = Store::open(layout)?;
            let _lock = store.lock_shared(|| ctx.ui.status("waiting for `kbin cache gc`…"))?;
            let report = maintain::verify(&store)?;
            ctx.ui.answer(&report, |r| {
                let mut t = String::new();
                for c in &r.corrupt {
                    t.push_str(&format!(
                        "corrupt: {} (named {}, content {})\n",
                        c.path.display(),
                        c.expected,
                        c.actual
                    ));
                }
                t.push_str(&format!(
                    "checked {} blob(s), {:.1} MB: {}\n",
                    r.checked,
                    r.bytes as f64 / 1e6,
                    if r.corrupt.is_empty() {
                        "all intact".to_string()
                    } else {
                        format!("{} corrupt", r.corrupt.len())
                    }
                ));
                t
            })?;
            if report.corrupt.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                ctx.ui.warn(
                    "remove the corrupt blobs (or run `kbin cache gc` after uninstalling what \
                     uses them) and reinstall: kbin downloads them again",
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
