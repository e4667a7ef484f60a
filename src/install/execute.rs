//! Acting on a [`Plan`]: get every artifact into the store, run the source builds, link the
//! binaries into a staging toolchain, write its receipt and swap it into place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::artifact::{self, Fetched};
use super::build::{Built, SourceBuilder};
use super::plan::Plan;
use super::{InstallError, receipt};
use crate::fetch::Fetcher;
use crate::manifest::{ArtifactFormat, Digest, Manifest};
use crate::store::{Checked, Store};
use crate::toolchain::Receipt;
use crate::toolchain::assemble::{self, Staging};
use crate::ui::Ui;

/// What an install did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The toolchain's name.
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
    /// The receipt written (or found, when up to date).
    pub receipt: Receipt,
    /// Nothing was done: it was installed already.
    pub up_to_date: bool,
    /// The installed toolchain was this one, but these of its files were not what its receipt
    /// said: they were fetched or linked again (the toolchain replaced whole).
    pub repaired: Vec<crate::toolchain::integrity::Fault>,
    /// Artifacts downloaded.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Artifacts verified against upstream's checksum file only.
    pub unpinned: Vec<String>,
    /// Skew violations let through.
    pub warnings: Vec<String>,
}

/// Get every artifact of `plan` into the store (verified, `jobs` at a time) and return the
/// sha256 of each, in [`Plan::artifacts`] order: what `kbin mirror export` copies out.
pub fn fetch_artifacts(
    store: &Store,
    fetcher: &Fetcher,
    plan: &Plan,
    jobs: usize,
    ui: &Ui,
) -> Result<Vec<Digest>, InstallError> {
    store.layout().ensure()?;
    let _home = store.lock_shared(|| ui.status("waiting for `kbin cache gc` to finish…"))?;
    Ok(artifact::fetch_all(store, fetcher, plan, jobs, ui)?
        .into_iter()
        .map(|f| f.sha256)
        .collect())
}

/// Fetch, verify, store, build, assemble and commit the toolchain of `plan`; `builder` makes
/// the plan's source builds.
pub fn execute(
    manifest: &Manifest,
    store: &Store,
    fetcher: &Fetcher,
    plan: &Plan,
    jobs: usize,
    builder: &dyn SourceBuilder,
    ui: &Ui,
) -> Result<Outcome, InstallError> {
    let layout = store.layout().clone();
    let _home = store.lock_shared(|| ui.status("waiting for `kbin cache gc` to finish…"))?;
    if plan.up_to_date {
        let receipt = Receipt::load(&layout.receipt_path(&plan.name))?;
        return Ok(Outcome {
            name: plan.name.clone(),
            path: layout.toolchain_dir(&plan.name),
            receipt,
            up_to_date: true,
            repaired: Vec::new(),
            downloaded: 0,
            bytes: 0,
            unpinned: Vec::new(),
            warnings: plan.resolution.warnings.clone(),
        });
    }

    for f in &plan.repairs {
        ui.warn(format!("toolchain {}: {f}: repairing it", plan.name));
    }
    let started = Instant::now();
    let fetched = artifact::fetch_all(store, fetcher, plan, jobs, ui)?;
    tracing::debug!(
        "fetched and unpacked {} artifact(s) in {} ms",
        fetched.len(),
        started.elapsed().as_millis()
    );

    let pulled = pull_images(store, fetcher, plan, ui)?;
    let staging = Staging::new(&layout, &plan.name)?;
    let bin_digests = link_downloads(store, plan, &fetched, &staging)?;
    for (image, p) in plan.images.iter().zip(&pulled) {
        link_blob(
            store,
            &staging,
            &format!("images/{}", image.archive_name()),
            &p.archive,
        )?;
    }
    let built = run_builds(store, plan, builder, &staging, ui)?;
    let components = receipt::components(manifest, plan, &fetched, &bin_digests, &built, &staging);
    tracing::debug!(
        "linked, built and asked versions at {} ms",
        started.elapsed().as_millis()
    );
    let mut receipt = Receipt::new(
        &plan.name,
        plan.resolution.kubernetes.clone(),
        plan.arch,
        manifest.digest.clone(),
        plan.resolution.images.clone(),
        components,
    );
    receipt.pulled = pulled;
    let _lock = assemble::lock_toolchain(&layout, &plan.name, || {
        ui.status(format!(
            "waiting for another kbin changing toolchain {}…",
            plan.name
        ))
    })?;
    let path = staging.commit(&receipt)?;
    tracing::debug!("committed at {} ms", started.elapsed().as_millis());
    Ok(Outcome {
        name: plan.name.clone(),
        path,
        receipt,
        up_to_date: false,
        repaired: plan.repairs.clone(),
        downloaded: fetched.iter().filter(|f| f.downloaded).count(),
        bytes: fetched.iter().map(|f| f.bytes).sum(),
        unpinned: plan
            .artifacts
            .iter()
            .filter(|a| a.pinned.is_none())
            .map(|a| a.url.clone())
            .collect(),
        warnings: plan.resolution.warnings.clone(),
    })
}

/// Pull the plan's images (one after the other: two small images, most of their bytes in one
/// layer each), saying which on the way.
fn pull_images(
    store: &Store,
    fetcher: &Fetcher,
    plan: &Plan,
    ui: &Ui,
) -> Result<Vec<crate::images::PulledImage>, InstallError> {
    if plan.images.is_empty() {
        return Ok(Vec::new());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::fsx::at::<InstallError>(
            "cannot start the runtime for",
            store.layout().root(),
        ))?;
    let mut pulled = Vec::new();
    for image in &plan.images {
        ui.status(format!("pulling {image} ({})", plan.arch));
        let p = rt
            .block_on(crate::images::pull_checked(
                fetcher,
                store,
                image,
                plan.arch,
                &plan.image_signer,
                plan.require_signed_images,
            ))
            .map_err(|e| InstallError::Image {
                image: image.to_string(),
                source: Box::new(e),
            })?;
        pulled.push(p);
    }
    Ok(pulled)
}

/// Link each planned binary into `staging`: a bare artifact is the binary; an archive gives up
/// a named member. Returns binary index → its digest.
fn link_downloads(
    store: &Store,
    plan: &Plan,
    fetched: &[Fetched],
    staging: &Staging,
) -> Result<BTreeMap<usize, Digest>, InstallError> {
    let mut bin_digests = BTreeMap::new();
    for (bi, b) in plan.binaries.iter().enumerate() {
        let (a, f) = (&plan.artifacts[b.artifact], &fetched[b.artifact]);
        let digest = match a.format {
            ArtifactFormat::Binary => f.sha256.clone(),
            ArtifactFormat::TarGz => {
                match f.members.get(b.member.as_deref().unwrap_or(&b.binary)) {
                    Some(d) => d.clone(),
                    None if b.optional => continue,
                    None => {
                        return Err(InstallError::MissingMember {
                            url: a.url.clone(),
                            member: b.member.clone().unwrap_or_default(),
                        });
                    }
                }
            }
        };
        link_blob(store, staging, &b.path, &digest)?;
        bin_digests.insert(bi, digest);
    }
    Ok(bin_digests)
}

/// Source builds, one at a time (each is heavy), each output linked like a download's.
/// Returns one [`Built`] per [`Plan::builds`], in order.
fn run_builds(
    store: &Store,
    plan: &Plan,
    builder: &dyn SourceBuilder,
    staging: &Staging,
    ui: &Ui,
) -> Result<Vec<Built>, InstallError> {
    let mut built = Vec::with_capacity(plan.builds.len());
    for b in &plan.builds {
        let out = builder
            .build(store, b, plan.arch, ui)
            .map_err(|source| InstallError::Build {
                component: b.component.clone(),
                version: b.version.to_string(),
                source,
            })?;
        for o in &b.outputs {
            match out.binaries.get(&o.binary) {
                Some(d) => link_blob(store, staging, &o.path, d)?,
                None if o.optional => {}
                None => {
                    return Err(InstallError::MissingOutput {
                        component: b.component.clone(),
                        binary: o.binary.clone(),
                    });
                }
            }
        }
        built.push(out);
    }
    Ok(built)
}

/// Link the blob `digest` at `rel` in `staging`, checked first ([`Store::check`]: its stamp, or
/// its bytes): a blob damaged since it was fetched, unpacked or built is never linked into a
/// toolchain that is then reported verified.
fn link_blob(
    store: &Store,
    staging: &Staging,
    rel: &str,
    digest: &Digest,
) -> Result<(), InstallError> {
    match store.check(digest)? {
        Checked::Intact(blob) => {
            staging.link(rel, &blob)?;
            store.relinked(digest);
            Ok(())
        }
        Checked::Missing => Err(InstallError::BlobGone {
            path: rel.to_owned(),
            digest: digest.clone(),
            damaged: None,
        }),
        Checked::Damaged(bad) => Err(InstallError::BlobGone {
            path: rel.to_owned(),
            digest: digest.clone(),
            damaged: Some(Box::new(bad)),
        }),
    }
}
