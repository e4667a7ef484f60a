//! `kbin update`: learn upstream releases newer than the manifest, into the overlay in KBIN_HOME.

use std::process::ExitCode;

use clap::Args;

use super::Context;
use crate::error::WithHint;
use crate::fsx::write_atomic;
use crate::manifest::Overlay;
use crate::update::{self, UpdateError};

/// Arguments of `kbin update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Components to update (all when none is named): kubernetes, etcd, containerd, runc,
    /// cni-plugins, crictl
    #[arg(value_name = "COMPONENT")]
    pub components: Vec<String>,

    /// The Rekor transparency log that detached signatures (dl.k8s.io's .sig + .cert) are looked
    /// up in; --mirror does not rewrite it
    #[arg(long, env = crate::rekor::URL_ENV, value_name = "URL", default_value = crate::rekor::DEFAULT_URL)]
    pub rekor_url: String,
}

pub(super) fn run(ctx: &Context, args: UpdateArgs) -> anyhow::Result<ExitCode> {
    let layout = ctx.layout()?;
    let path = layout.overlay_path();
    let base = ctx.base_manifest()?;
    let overlay =
        Overlay::load(&path).hint("delete it and run `kbin update` again to rebuild it")?;
    let merged = base
        .with_overlay(&overlay, &path)
        .hint("delete it and run `kbin update` again to rebuild it")?;
    let settings = layout.settings()?;
    let fetcher = super::fetcher(ctx, &settings)?;
    let now = crate::util::now_rfc3339();
    let rekor = crate::rekor::base_url(&args.rekor_url)
        .map_err(|m| anyhow::anyhow!("--rekor-url (or {}): {m}", crate::rekor::URL_ENV))
        .hint("give the log's base URL, e.g. https://rekor.sigstore.dev")?;
    let (next, mut report) =
        update::update(&merged, &overlay, &fetcher, &args.components, &now, &rekor).map_err(|e| {
            let hint = match &e {
                UpdateError::Fetch { source, .. } => source.hint().map(str::to_owned).or_else(|| {
                    ctx.global.mirror.is_none().then(|| {
                        "without internet access, point kbin at a mirror: --mirror URL or KBIN_MIRROR (`kbin mirror export` makes one)"
                            .to_owned()
                    })
                }),
                UpdateError::Garbled { .. } => Some(
                    "the server (or mirror) answered something else than upstream's listing: check the mirror's copy".into(),
                ),
                UpdateError::Signature {
                    source: crate::trust::SigError::NotLogged { .. },
                    ..
                } => Some(
                    "the log knows no signature of these bytes: the binary (or its checksum file) is not what upstream signed, or --rekor-url names another log than upstream's".into(),
                ),
                UpdateError::Signature { .. } => Some(
                    "the new release is not what its upstream signed: check the mirror, or report it upstream".into(),
                ),
                UpdateError::Rekor { .. } => Some(format!(
                    "kbin update looks detached signatures (dl.k8s.io's .sig + .cert) up in the Rekor log {rekor} and records nothing as signed without a verified entry: check the network, or point --rekor-url (KBIN_REKOR_URL) at a reachable Rekor; without internet access, update from a mirror `kbin mirror export` made (it carries the verified bundles)"
                )),
                UpdateError::UnknownComponent { .. } | UpdateError::Runtime(_) => None,
            };
            let e = anyhow::Error::from(e)
                .context("kbin update learned nothing; the overlay is as it was");
            match hint {
                Some(h) => crate::error::with_hint(e, h),
                None => e,
            }
        })?;
    if next != overlay {
        layout.ensure()?;
        write_atomic(&path, next.to_toml().as_bytes(), 0o644)?;
        report.overlay = Some(path);
    }
    ctx.ui.report(&report, |r| {
        let mut t = String::new();
        if r.changes.is_empty() {
            t.push_str(&format!(
                "up to date: no release newer than kbin knows ({} source(s) asked)\n",
                r.sources.len()
            ));
        }
        for c in &r.changes {
            let from = c.from.as_deref().unwrap_or("(none)");
            let why = match &c.minor {
                Some(m) => format!("new patch of {m}: `kbin install {m}` now picks it"),
                None => format!(
                    "install it with --with {}={}; defaults unchanged: they change only when upstream's own defaults do",
                    c.component, c.to
                ),
            };
            let signed = if c.signed.is_empty() {
                String::new()
            } else {
                let who: std::collections::BTreeSet<&str> =
                    c.signed.values().map(String::as_str).collect();
                let who: Vec<&str> = who.into_iter().collect();
                format!(", {} of them signed by {}", c.signed.len(), who.join(", "))
            };
            t.push_str(&format!(
                "{} {from} → {} ({why}); {} digest(s) trusted on first use{signed}\n",
                c.component,
                c.to,
                c.digests.len()
            ));
        }
        if let Some(p) = &r.overlay {
            t.push_str(&format!("overlay: {}\n", p.display()));
        }
        t
    })?;
    Ok(ExitCode::SUCCESS)
}
