//! `kbin build --from-source`: clone a component with libgit2, build it, put it in a toolchain.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use semver::Version;

use super::Context;
use crate::error::WithHint;
use crate::manifest::{Arch, KUBERNETES, Manifest, Minor};
use crate::source::{self, BuildRequest, Built};
use crate::store::{Layout, Store};
use crate::toolchain::edit::NewToolchain;
use crate::toolchain::{self, Receipt};

/// Arguments of `kbin build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The component to build (etcd, containerd, runc, cni-plugins, crictl, kubernetes)
    #[arg(long = "from-source", value_name = "COMPONENT", required = true)]
    pub from_source: String,

    /// The toolchain to put it in [default: the default toolchain]
    #[arg(long, value_name = "NAME")]
    pub toolchain: Option<String>,

    /// Build this ref (tag, branch or commit) instead of the tag of the toolchain's version
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,

    /// Clone from this URL or local path instead of the manifest's repository
    #[arg(long, value_name = "URL|PATH")]
    pub source: Option<String>,

    /// Also build a second time in another directory (with a fresh Go build cache) and compare
    /// the binaries; exit 1 when they differ (the build is installed either way)
    #[arg(long)]
    pub check_reproducible: bool,
}

pub(super) fn run(ctx: &Context, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let layout = ctx.layout()?;
    let manifest = ctx.manifest()?;
    let name = match &args.toolchain {
        Some(n) => n.clone(),
        None => layout
            .settings()?
            .default
            .context("no toolchain given and no default toolchain")
            .hint("pass --toolchain NAME, or install one first: kbin install 1.30")?,
    };
    toolchain::assemble::check_name(&name)?;
    let receipt_path = layout.receipt_path(&name);
    // A toolchain named with --toolchain that is not installed yet is made with just this
    // component; the default toolchain must exist.
    let receipt = if receipt_path.is_file() {
        Some(Receipt::load(&receipt_path)?)
    } else if args.toolchain.is_some() {
        None
    } else {
        return Err(anyhow::anyhow!("the default toolchain {name:?} is not installed"))
            .hint("see the installed toolchains with `kbin show-versions`, or install it with `kbin install`");
    };
    let created = receipt.is_none();
    let built = build_into(
        ctx,
        &manifest,
        &layout,
        Target {
            name: &name,
            receipt: receipt.as_ref(),
        },
        Wanted {
            component: &args.from_source,
            git_ref: args.git_ref,
            source: args.source,
            check_reproducible: args.check_reproducible,
        },
    )?;
    ctx.ui.report(&built, |b| {
        let mut t = format!(
            "{} {} {} into {}toolchain {name}: {} at {} (commit {}, Go {})\n",
            if b.cache_hit {
                "cache hit: installed"
            } else {
                "built and installed"
            },
            b.component,
            b.version,
            if created { "new " } else { "" },
            b.source.repository,
            b.source.git_ref,
            b.source.commit,
            b.source.go.as_deref().unwrap_or("-"),
        );
        for (bin, d) in &b.binaries {
            t.push_str(&format!("  {bin:<24} {d}\n"));
            if let Some(r) = b.source.reproduction.get(bin) {
                t.push_str(&format!("  {:<24} upstream: {}\n", "", r.upstream));
                if let Some(again) = &r.rebuild {
                    t.push_str(&format!("  {:<24} rebuild: {again}\n", ""));
                }
            }
        }
        t
    })?;
    // The first binary (in name order) whose second build differs is the one named.
    let differs = built.source.reproduction.iter().find(|(_, r)| {
        r.rebuild
            .as_deref()
            .is_some_and(|s| s.starts_with("differs"))
    });
    if let Some((bin, r)) = differs {
        ctx.ui.warn(format!(
            "{} {} is not reproducible: the first differing file is {bin}: {}",
            built.component,
            built.version,
            r.rebuild.as_deref().unwrap_or_default()
        ));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The toolchain a build goes into: installed (its receipt), or made by the build.
pub(super) struct Target<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its receipt, when it is installed.
    pub receipt: Option<&'a Receipt>,
}

/// What to build: a component, at a ref, from a repository.
pub(super) struct Wanted<'a> {
    /// The component.
    pub component: &'a str,
    /// `--ref`.
    pub git_ref: Option<String>,
    /// `--source`.
    pub source: Option<String>,
    /// `--check-reproducible`.
    pub check_reproducible: bool,
}

/// Build `component` for `target` and swap it in (or create `target` with just it): the seam
/// `kbin install --from-source` uses too.
pub(super) fn build_into(
    ctx: &Context,
    manifest: &Manifest,
    layout: &Layout,
    target: Target<'_>,
    wanted: Wanted<'_>,
) -> anyhow::Result<Built> {
    let Wanted {
        component,
        git_ref,
        source,
        check_reproducible,
    } = wanted;
    let comp = manifest
        .component(component)
        .with_context(|| format!("the manifest has no component {component:?}"))
        .hint(format!("components: {}", manifest.component_names()))?;
    let host = Arch::host()
        .context("this machine's architecture is neither amd64 nor arm64")
        .hint("source builds are native: build on an amd64 or arm64 machine")?;
    // A ref that is one of the component's version tags (`v1.5.1`) builds that version: it
    // fills the recipe's {version} and is what the receipt records.
    let ref_version = git_ref
        .as_deref()
        .and_then(|r| source::version_of_ref(comp, r));
    let (version, fresh) = match target.receipt {
        Some(receipt) => {
            if host != receipt.arch {
                return Err(anyhow::anyhow!(
                    "toolchain {} is for {}, and source builds are native to this machine",
                    receipt.name,
                    receipt.arch
                ))
                .hint(
                    "build on a machine of that architecture, or install a toolchain for this one",
                );
            }
            let v = match ref_version {
                Some(v) => v,
                None => component_version(manifest, receipt, component)?,
            };
            (v, None)
        }
        None => {
            let (v, fresh) = new_toolchain(manifest, component, ref_version, host)?;
            ctx.ui.status(format!(
                "toolchain {} is not installed: making it with just {component} {v} (Kubernetes {})",
                target.name, fresh.kubernetes
            ));
            (v, Some(fresh))
        }
    };
    let store = Store::open(layout.clone())?;
    layout.ensure()?;
    let _shared = store.lock_shared(|| ctx.ui.status("waiting for `kbin cache gc` to finish"))?;
    // The manifest's repository goes through the same mirrors as artifacts; --source wins.
    let source = match source {
        Some(s) => Some(s),
        None => crate::fetch::repository_url(
            &comp.repository,
            ctx.global.mirror.as_deref(),
            &layout.settings()?.mirrors,
        )?,
    };
    let req = BuildRequest {
        component: comp,
        version,
        arch: host,
        git_ref,
        source,
        manifest,
        check_reproducible,
    };
    let built = source::build_component(&store, &req, &ctx.ui).map_err(with_source_hint)?;
    toolchain::edit::replace_component(
        layout,
        &store,
        target.name,
        comp,
        &built.version,
        &built.binaries,
        built.source.clone(),
        fresh,
        || {
            ctx.ui.status(format!(
                "waiting for another kbin changing toolchain {}",
                target.name
            ))
        },
    )?;
    Ok(built)
}

/// For a toolchain that is not installed yet: the version of `component` to build (the ref's,
/// else the manifest's latest Kubernetes or its default of the component), and the toolchain
/// to make with it.
fn new_toolchain(
    manifest: &Manifest,
    component: &str,
    ref_version: Option<Version>,
    host: Arch,
) -> anyhow::Result<(Version, NewToolchain)> {
    let release = manifest
        .latest_complete()
        .context("the manifest has no Kubernetes minor with defaults")?;
    let kube = if component == KUBERNETES {
        ref_version
            .clone()
            .unwrap_or_else(|| release.latest.clone())
    } else {
        release.latest.clone()
    };
    let minor = manifest.releases.get(&Minor::of(&kube)).unwrap_or(release);
    let v = match (&ref_version, component == KUBERNETES) {
        (Some(v), _) => v.clone(),
        (None, true) => kube.clone(),
        (None, false) => minor
            .defaults
            .as_ref()
            .ok()
            .and_then(|d| d.components.get(component))
            .cloned()
            .with_context(|| {
                format!(
                    "the manifest has no default version of {component} for Kubernetes {}",
                    minor.minor
                )
            })
            .hint("pass --ref vX.Y.Z to say which version to build")?,
    };
    let fresh = NewToolchain {
        kubernetes: kube,
        arch: host,
        manifest: manifest.digest.clone(),
        images: minor.defaults.as_ref().ok().map(|d| d.images.clone()),
    };
    Ok((v, fresh))
}

fn with_source_hint(e: source::SourceError) -> anyhow::Error {
    match e.hint() {
        Some(h) => crate::error::with_hint(e.into(), h),
        None => e.into(),
    }
}

/// The version of `component` in a toolchain: its receipt's, else the default of the
/// toolchain's Kubernetes minor.
fn component_version(
    manifest: &Manifest,
    receipt: &Receipt,
    component: &str,
) -> anyhow::Result<Version> {
    if let Some(v) = receipt.version_of(component) {
        return Ok(v.clone());
    }
    if component == "kubernetes" {
        return Ok(receipt.kubernetes.clone());
    }
    manifest
        .releases
        .get(&Minor::of(&receipt.kubernetes))
        .and_then(|r| r.defaults.as_ref().ok())
        .and_then(|d| d.components.get(component))
        .cloned()
        .with_context(|| {
            format!(
                "toolchain {} has no {component}, and the manifest has no default version of it for Kubernetes {}",
                receipt.name, receipt.kubernetes
            )
        })
}
