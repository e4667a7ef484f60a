//! The receipt's components for a fresh install: per selected component (in resolution order),
//! its artifacts and binaries, or its source build's provenance. Entries are made by
//! [`crate::toolchain::edit`], the one place receipts are written.

use std::collections::BTreeMap;

use super::artifact::Fetched;
use super::build::Built;
use super::plan::Plan;
use crate::manifest::{Arch, Digest, Manifest};
use crate::toolchain::assemble::Staging;
use crate::toolchain::edit::binary_entry;
use crate::toolchain::{ArtifactReceipt, ComponentReceipt, Origin};

/// The components of the receipt of `plan`, whose binaries are linked in `staging`:
/// `bin_digests` maps a [`Plan::binaries`] index to its digest, `built` has one entry per
/// [`Plan::builds`]. A binary is asked its version only when it runs here and is not optional.
pub(super) fn components(
    manifest: &Manifest,
    plan: &Plan,
    fetched: &[Fetched],
    bin_digests: &BTreeMap<usize, Digest>,
    built: &[Built],
    staging: &Staging,
) -> Vec<ComponentReceipt> {
    let host = Arch::host() == Some(plan.arch);
    let mut components: Vec<ComponentReceipt> = Vec::new();
    for sel in &plan.resolution.components {
        let comp = manifest
            .component(&sel.component)
            .expect("resolutions only name the manifest's components");
        if let Some((pb, out)) = plan
            .builds
            .iter()
            .zip(built)
            .find(|(b, _)| b.component == sel.component && b.version == sel.version)
        {
            let binaries = pb
                .outputs
                .iter()
                .filter_map(|o| {
                    let digest = out.binaries.get(&o.binary)?;
                    let ask = host && !o.optional;
                    Some(binary_entry(staging, comp, &o.binary, &o.path, digest, ask))
                })
                .collect();
            components.push(ComponentReceipt {
                name: sel.component.clone(),
                version: sel.version.clone(),
                origin: Origin::Source,
                artifacts: Vec::new(),
                binaries,
                source: Some(out.source.clone()),
            });
            continue;
        }
        let mut c = ComponentReceipt {
            name: sel.component.clone(),
            version: sel.version.clone(),
            origin: Origin::Download,
            artifacts: Vec::new(),
            binaries: Vec::new(),
            source: None,
        };
        for (bi, b) in plan.binaries.iter().enumerate() {
            if b.component != sel.component || b.version != sel.version.to_string() {
                continue;
            }
            if !(sel.binaries.contains(&b.binary) || b.optional) {
                continue;
            }
            let Some(digest) = bin_digests.get(&bi) else {
                continue;
            };
            let a = &plan.artifacts[b.artifact];
            if !c.artifacts.iter().any(|x| x.url == a.url) {
                c.artifacts.push(ArtifactReceipt {
                    url: a.url.clone(),
                    digest: fetched[b.artifact].verified.clone(),
                    pinned: a.pinned.is_some(),
                    tofu: a.tofu.as_ref().filter(|_| a.pinned.is_none()).map(|t| {
                        crate::toolchain::TofuRecord {
                            source: t.source.clone(),
                            fetched: t.fetched.clone(),
                        }
                    }),
                    signed: fetched[b.artifact].signed.clone(),
                });
            }
            let ask = host && !b.optional;
            c.binaries
                .push(binary_entry(staging, comp, &b.binary, &b.path, digest, ask));
        }
        if !c.binaries.is_empty() {
            components.push(c);
        }
    }
    components
}
