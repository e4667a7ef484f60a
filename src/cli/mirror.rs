//! `kbin mirror export`: an upstream-shaped directory for air-gapped machines.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::Context;
use crate::error::WithHint;
use crate::manifest::Arch;
use crate::mirror::{self, Artifact};
use crate::store::Store;

/// `kbin mirror` subcommands.
#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Write the artifacts of some releases or toolchains, their checksum files and what `kbin
    /// update` reads into a directory laid out like upstream (for --mirror file://DIR)
    Export(ExportArgs),
}

/// Arguments of `kbin mirror export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Kubernetes versions to export with their default components (1.30, 1.30.14, latest)
    #[arg(value_name = "VERSION")]
    pub versions: Vec<String>,

    /// Installed toolchains to export (their downloaded artifacts, exactly)
    #[arg(long = "toolchain", value_name = "NAME")]
    pub toolchains: Vec<String>,

    /// Architectures for VERSIONs (repeatable) [default: this machine's]
    #[arg(long, value_name = "ARCH")]
    pub arch: Vec<Arch>,

    /// The directory to write (created; what is there and right is kept)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Downloads at once, for artifacts not in the store yet
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,

    /// Leave out the pause and CoreDNS images (exported registry-shaped under v2/ otherwise)
    #[arg(long)]
    pub no_images: bool,
}

pub(super) fn run(ctx: &Context, cmd: MirrorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MirrorCommand::Export(a) => export(ctx, a),
    }
}

fn export(ctx: &Context, args: ExportArgs) -> anyhow::Result<ExitCode> {
    if args.versions.is_empty() && args.toolchains.is_empty() {
        return Err(anyhow::anyhow!("nothing to export")).hint(
            "name Kubernetes versions (kbin mirror export 1.30 --out DIR) or --toolchain NAME",
        );
    }
    let manifest = ctx.manifest()?;
    let layout = ctx.layout()?;
    let store = Store::open(layout.clone())?;
    let mut todo = Todo::default();
    let archs = archs(&args)?;
    if !args.versions.is_empty() {
        let settings = layout.settings()?;
        let fetcher = super::fetcher(ctx, &settings)?;
        let from = mirror::from_versions(
            &manifest,
            &store,
            &fetcher,
            &args.versions,
            &archs,
            args.jobs,
            args.no_images,
            &ctx.ui,
        )
        .map_err(versions_hint)?;
        todo.artifacts.extend(from.artifacts);
        todo.images.extend(from.images);
    }
    for name in &args.toolchains {
        let from = mirror::from_toolchain(&manifest, &layout, &store, name, args.no_images)
            .map_err(toolchain_hint)?;
        for c in &from.built {
            ctx.ui.warn(format!(
                "toolchain {name}: {c} was built from source; it is not exported"
            ));
        }
        todo.artifacts.extend(from.artifacts);
        todo.images.extend(from.images);
    }
    let started = std::time::Instant::now();
    let mut report = mirror::export(&manifest, &todo.artifacts, &args.out)
        .with_context(|| format!("cannot export into {}", args.out.display()))?;
    let mut images = todo.images;
    // The same image from a toolchain and from a version: the one with a signature is kept.
    images.sort_by_key(|a| (a.image.to_string(), a.arch, a.signature.is_none()));
    images.dedup_by(|a, b| a.image == b.image && a.arch == b.arch);
    report.images = crate::images::export_registry(&args.out, &images)
        .with_context(|| format!("cannot export the images into {}", args.out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    ctx.ui.report(&report, |r| summary(r, secs))?;
    Ok(ExitCode::SUCCESS)
}

/// What an export writes: artifacts, and images (their archives and kept signatures).
#[derive(Default)]
struct Todo {
    artifacts: Vec<Artifact>,
    images: Vec<crate::images::ExportImage>,
}

/// The architectures VERSIONs are exported for: `--arch`, else this machine's.
fn archs(args: &ExportArgs) -> anyhow::Result<Vec<Arch>> {
    Ok(if args.arch.is_empty() {
        vec![
            Arch::host()
                .context("this machine's architecture is neither amd64 nor arm64")
                .hint("pass --arch amd64 or --arch arm64")?,
        ]
    } else {
        args.arch.clone()
    })
}

/// A failure to gather VERSIONs, with the hint the install or the resolution gives.
fn versions_hint(e: mirror::MirrorError) -> anyhow::Error {
    let hint = match &e {
        mirror::MirrorError::Install(i) => i.hint(true),
        mirror::MirrorError::Resolve(r) => r.hint(),
        _ => None,
    };
    match hint {
        Some(h) => crate::error::with_hint(e.into(), h),
        None => anyhow::Error::from(e),
    }
}

/// A failure to gather a toolchain, with a hint when there is one.
fn toolchain_hint(e: mirror::MirrorError) -> anyhow::Error {
    let hint = match &e {
        mirror::MirrorError::NotInstalled(_) => "kbin show-versions lists the installed toolchains",
        mirror::MirrorError::MissingBlob { .. } => {
            "reinstall the toolchain (kbin install), then export again"
        }
        _ => return anyhow::Error::from(e),
    };
    crate::error::with_hint(e.into(), hint)
}

/// The text report of an export that took `secs`.
fn summary(r: &mirror::Report, secs: f64) -> String {
    // A file:// URL needs the absolute path: `file://usb` would name a host.
    let abs = std::path::absolute(&r.out).unwrap_or_else(|_| r.out.clone());
    format!(
        "exported {} artifact(s) into {}: {} copied and verified ({:.1} MB in {secs:.2} s), {} already there\n\
         images (registry-shaped under v2/): {} ({} file(s) written, {} already there; {} with its verified signature)\n\
         air-gapped: kbin update --mirror file://{} && kbin install VERSION --mirror file://{}\n",
        r.artifacts.len(),
        r.out.display(),
        r.written,
        r.bytes as f64 / 1e6,
        r.reused,
        if r.images.images.is_empty() {
            "none".to_owned()
        } else {
            r.images.images.join(", ")
        },
        r.images.written,
        r.images.reused,
        r.images.signed.len(),
        abs.display(),
        abs.display(),
    )
}
