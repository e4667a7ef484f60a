//! `kbin cache dir|gc|verify`.

use std::process::ExitCode;

use clap::Subcommand;

use serde::Serialize;

use super::Context;
use crate::error::WithHint;
use crate::store::{Layout, Store, maintain};
use crate::toolchain::{Receipt, integrity};

/// `kbin cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Print the cache directory
    Dir,
    /// Remove blobs, trees and builds that no toolchain.lock references
    Gc,
    /// Re-hash every blob, check every toolchain against its receipt, and name the corrupt
    /// blobs and the toolchains they (or changed files) break
    Verify {
        /// Remove the corrupt blobs and install each broken toolchain again as its receipt
        /// says (blobs fetched or unpacked again, verified, relinked)
        #[arg(long)]
        repair: bool,
    },
}

/// What `cache verify` found (and, with `--repair`, did).
#[derive(Debug, Serialize)]
struct VerifyAnswer {
    #[serde(flatten)]
    blobs: maintain::VerifyReport,
    /// Toolchains that use a corrupt blob or whose files are not what their receipt says.
    toolchains: Vec<integrity::Broken>,
    /// With `--repair`: the toolchains installed again.
    repaired: Vec<String>,
    /// With `--repair`: the toolchains that could not be, with why.
    unrepaired: Vec<(String, String)>,
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
        CacheCommand::Verify { repair } => verify(ctx, layout, repair),
    }
}

fn verify(ctx: &Context, layout: Layout, repair: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(layout.clone())?;
    let _lock = store.lock_shared(|| ctx.ui.status("waiting for `kbin cache gc`…"))?;
    let blobs = maintain::verify(&store)?;
    let damaged: std::collections::BTreeSet<crate::manifest::Digest> = blobs
        .corrupt
        .iter()
        .filter_map(|c| c.expected.parse().ok())
        .collect();
    if repair {
        // Gone before the toolchains are checked, so each one that used them is broken and
        // gets them fetched or unpacked again.
        maintain::discard_corrupt(&store, &blobs)?;
    }
    let toolchains = integrity::broken_toolchains(&store, &damaged)?;
    let (mut repaired, mut unrepaired) = (Vec::new(), Vec::new());
    if repair && !toolchains.is_empty() {
        let manifest = ctx.manifest()?;
        let settings = layout.settings()?;
        let fetcher = super::fetcher(ctx, &settings)?;
        let builder = crate::install::ManifestBuilder::new(&manifest)
            .with_mirrors(ctx.global.mirror.clone(), settings.mirrors.clone());
        for t in &toolchains {
            let receipt = Receipt::load(&layout.receipt_path(&t.name))?;
            ctx.ui.status(format!("repairing toolchain {}…", t.name));
            match crate::install::repair(&manifest, &store, &fetcher, &receipt, &builder, &ctx.ui) {
                Ok(_) => repaired.push(t.name.clone()),
                Err(e) => {
                    let hint = e.hint(ctx.global.mirror.is_some());
                    // One line: the error and its causes, as `error:` and `Caused by:` would say.
                    let mut why = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        why.push_str(&format!(": {c}"));
                        cause = c.source();
                    }
                    if let Some(h) = hint {
                        why.push_str(&format!(" (hint: {h})"));
                    }
                    unrepaired.push((t.name.clone(), why));
                }
            }
        }
    }
    let answer = VerifyAnswer {
        blobs,
        toolchains,
        repaired,
        unrepaired,
    };
    ctx.ui.answer(&answer, |a| render_verify(a, repair))?;
    let ok = if repair {
        answer.unrepaired.is_empty()
    } else {
        answer.blobs.corrupt.is_empty() && answer.toolchains.is_empty()
    };
    if ok {
        return Ok(ExitCode::SUCCESS);
    }
    if !repair {
        ctx.ui.warn(
            "`kbin cache verify --repair` removes the corrupt blobs and installs each broken \
             toolchain again (fetching what it needs)",
        );
    }
    Ok(ExitCode::FAILURE)
}

fn render_verify(a: &VerifyAnswer, repair: bool) -> String {
    let r = &a.blobs;
    let mut t = String::new();
    for c in &r.corrupt {
        t.push_str(&format!(
            "corrupt: {} (named {}, content {}){}\n",
            c.path.display(),
            c.expected,
            c.actual,
            if repair { ": removed" } else { "" }
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
    for b in &a.toolchains {
        t.push_str(&format!("toolchain {} is damaged:\n", b.name));
        for d in &b.uses_damaged {
            t.push_str(&format!("  uses the corrupt blob {d}\n"));
        }
        for f in &b.faults {
            t.push_str(&format!("  {f}\n"));
        }
    }
    for n in &a.repaired {
        t.push_str(&format!("repaired toolchain {n}\n"));
    }
    for (n, why) in &a.unrepaired {
        t.push_str(&format!("could not repair toolchain {n}: {why}\n"));
    }
    if a.toolchains.is_empty() {
        t.push_str("every toolchain matches its receipt\n");
    }
    t
}
