//! Repairing an installed toolchain (`kbin cache verify --repair`): the request that made it
//! (versions, binaries, arch, name, images) is read back from its receipt and installed again
//! through the same plan and execute as `kbin install`. The plan finds the same toolchain with
//! faults, so blobs are checked (a damaged one fetched or unpacked again), the binaries relinked
//! and the toolchain swapped in whole; the digests come from the manifest's pins or upstream's
//! checksum files, never from the receipt being repaired (which may be what was edited).

use super::build::SourceBuilder;
use super::execute::{Outcome, execute};
use super::plan::plan;
use super::{InstallError, Options};
use crate::fetch::Fetcher;
use crate::manifest::resolve::{Override, Request, resolve};
use crate::manifest::{KUBERNETES, Manifest};
use crate::store::Store;
use crate::toolchain::{Origin, Receipt};
use crate::ui::Ui;

/// The request and options that install `receipt`'s toolchain again as it is: every
/// component at its version, only its binaries, its arch, name and images.
pub fn request_of(receipt: &Receipt, jobs: usize) -> Result<(Request, Options), InstallError> {
    let built: Vec<String> = receipt
        .components
        .iter()
        .filter(|c| c.origin == Origin::Source)
        .map(|c| c.name.clone())
        .collect();
    if !built.is_empty() {
        return Err(InstallError::RepairBuilt {
            toolchain: receipt.name.clone(),
            components: built,
        });
    }
    let mut overrides: Vec<Override> = Vec::new();
    for c in &receipt.components {
        if c.name == KUBERNETES {
            // A Kubernetes binary at another version than the API server was a `--with` of its
            // own (`--with kubelet=1.29.15`).
            if c.version != receipt.kubernetes {
                overrides.extend(c.binaries.iter().map(|b| Override {
                    name: b.name.clone(),
                    version: c.version.clone(),
                }));
            }
        } else if !overrides.iter().any(|o| o.name == c.name) {
            overrides.push(Override {
                name: c.name.clone(),
                version: c.version.clone(),
            });
        }
    }
    let request = Request {
        version: receipt.kubernetes.to_string(),
        overrides,
        // It was installed so: a skew it has was let through then.
        allow_skew: true,
    };
    let opts = Options {
        name: receipt.name.clone(),
        arch: receipt.arch,
        only: receipt
            .components
            .iter()
            .flat_map(|c| c.binaries.iter().map(|b| b.name.clone()))
            .collect(),
        require_pinned: false,
        require_verified: false,
        jobs,
        from_source: Vec::new(),
        no_images: receipt.pulled.is_empty(),
    };
    Ok((request, opts))
}

/// Install `receipt`'s toolchain again as it is (see the module's comment).
pub fn repair(
    manifest: &Manifest,
    store: &Store,
    fetcher: &Fetcher,
    receipt: &Receipt,
    builder: &dyn SourceBuilder,
    ui: &Ui,
) -> Result<Outcome, InstallError> {
    let jobs = 4;
    let (request, opts) = request_of(receipt, jobs)?;
    let resolution = resolve(manifest, &request).map_err(|e| InstallError::RepairResolve {
        toolchain: receipt.name.clone(),
        source: Box::new(e),
    })?;
    let p = plan(manifest, store, &resolution, &opts)?;
    execute(manifest, store, fetcher, &p, jobs, builder, ui)
}
