//! `kbin install`: resolve, fetch or build, verify, install a toolchain.

use std::process::ExitCode;

use clap::Args;

use anyhow::Context as _;

use super::Context;
use crate::error::WithHint;
use crate::install::{self, Options};
use crate::manifest::Arch;
use crate::manifest::resolve::{Override, Request};
use crate::store::Store;
use crate::toolchain::assemble;

/// Arguments of `kbin install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The Kubernetes version: a minor (1.30: its latest known patch), a patch (1.30.4 or
    /// v1.30.4), or latest
    #[arg(value_name = "VERSION")]
    pub kubernetes: String,

    /// Use another version of a component or Kubernetes binary (repeatable), e.g.
    /// --with etcd=3.5.16 --with kubelet=1.29.15
    #[arg(long = "with", value_name = "NAME=VERSION")]
    pub with: Vec<Override>,

    /// Install only these components or binaries, e.g. --only kubectl,etcd
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Build this component from source instead of downloading it (repeatable)
    #[arg(long = "from-source", value_name = "COMPONENT")]
    pub from_source: Vec<String>,

    /// Install binaries for another architecture (downloaded and verified, not run)
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<Arch>,

    /// The toolchain's name [default: the Kubernetes minor, e.g. 1.30]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Make it the default toolchain
    #[arg(long)]
    pub default: bool,

    /// How many artifacts to download at once
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4)]
    pub jobs: usize,

    /// Refuse artifacts whose digest is not pinned in the manifest
    #[arg(long)]
    pub require_pinned: bool,

    /// Refuse artifacts and images that are neither pinned in the manifest nor signed (a
    /// signature verified offline against the compiled-in Sigstore trust root, by the
    /// component's signer, or an OpenPGP `.asc` by a key of the component's compiled-in
    /// keyring): what `--require-pinned` users accept for releases `kbin update` learned
    #[arg(long, visible_alias = "require-signed")]
    pub require_verified: bool,

    /// Do not pull the release's pause and CoreDNS images (a node toolchain gets them, from
    /// registry.k8s.io or its mirror, for air-gapped nodes)
    #[arg(long)]
    pub no_images: bool,

    /// Let version-skew violations through as warnings
    #[arg(long)]
    pub allow_skew: bool,
}

pub(super) fn run(ctx: &Context, args: InstallArgs) -> anyhow::Result<ExitCode> {
    let manifest = ctx.manifest()?;
    let resolution = super::resolve(
        &manifest,
        &Request {
            version: args.kubernetes.clone(),
            overrides: args.with.clone(),
            allow_skew: args.allow_skew,
        },
    )?;
    for w in &resolution.warnings {
        ctx.ui
            .warn(format!("version skew allowed by --allow-skew: {w}"));
    }
    let arch = match args.arch {
        Some(a) => a,
        None => Arch::host()
            .context("this machine's architecture is neither amd64 nor arm64")
            .hint("pass --arch amd64 or --arch arm64 to install for another machine")?,
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| resolution.minor.to_string());
    assemble::check_name(&name)?;
    let layout = ctx.layout()?;
    let store = Store::open(layout.clone())?;
    let opts = Options {
        name: name.clone(),
        arch,
        only: args.only.clone(),
        require_pinned: args.require_pinned,
        require_verified: args.require_verified,
        jobs: args.jobs,
        from_source: args.from_source.clone(),
        no_images: args.no_images,
    };
    let mirror_set = ctx.global.mirror.is_some();
    let with_hint = |e: install::InstallError| match e.hint(mirror_set) {
        Some(h) => crate::error::with_hint(e.into(), h),
        None => anyhow::Error::from(e),
    };
    let plan = install::plan(&manifest, &store, &resolution, &opts).map_err(with_hint)?;
    let settings = layout.settings()?;
    let fetcher = super::fetcher(ctx, &settings)?;
    let builder = install::ManifestBuilder::new(&manifest)
        .with_mirrors(ctx.global.mirror.clone(), settings.mirrors.clone());
    let outcome = install::execute(
        &manifest, &store, &fetcher, &plan, args.jobs, &builder, &ctx.ui,
    )
    .map_err(with_hint)?;
    // The first toolchain becomes the default, as with rustup.
    let mut settings = layout.settings()?;
    if args.default || settings.default.is_none() {
        settings.default = Some(name.clone());
        layout.save_settings(&settings)?;
    }
    ctx.ui.report(&outcome, render)?;
    Ok(ExitCode::SUCCESS)
}

/// The text report of an install.
fn render(o: &install::Outcome) -> String {
    let mut t = if !o.repaired.is_empty() {
        let mut t = format!(
            "repaired toolchain {} (Kubernetes {}, {}) in {}:\n",
            o.name,
            o.receipt.kubernetes,
            o.receipt.arch,
            o.path.display()
        );
        for f in &o.repaired {
            t.push_str(&format!("  was: {f}\n"));
        }
        t
    } else if o.up_to_date {
        format!(
            "toolchain {} is up to date ({})\n",
            o.name,
            o.path.display()
        )
    } else {
        format!(
            "installed toolchain {} (Kubernetes {}, {}) in {}\n",
            o.name,
            o.receipt.kubernetes,
            o.receipt.arch,
            o.path.display()
        )
    };
    for c in &o.receipt.components {
        let names: Vec<&str> = c.binaries.iter().map(|b| b.name.as_str()).collect();
        t.push_str(&format!(
            "  {:<12} {:<10} {}\n",
            c.name,
            c.version,
            names.join(" ")
        ));
    }
    if !o.unpinned.is_empty() && !o.up_to_date {
        t.push_str(&format!(
            "{} artifact(s) verified against upstream's checksum files only (not pinned)\n",
            o.unpinned.len()
        ));
    }
    t
}
