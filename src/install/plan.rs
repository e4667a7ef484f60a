//! The plan: everything `install` will do, decided before a byte is written, so tests (and
//! `--json` some day) can inspect it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::build::{BuildOutput, PlannedBuild};
use super::{InstallError, Options};
use crate::manifest::resolve::Resolution;
use crate::manifest::{Arch, ArtifactFormat, Digest, Manifest};
use crate::store::Store;
use crate::toolchain::{BinaryReceipt, ComponentReceipt, Origin, Receipt};

/// One artifact to have in the store.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedArtifact {
    /// The component it belongs to.
    pub component: String,
    /// The component's version.
    pub version: String,
    /// Upstream URL (before mirrors).
    pub url: String,
    /// Upstream's checksum file.
    pub checksum_url: Option<String>,
    /// Upstream's signature (a Sigstore bundle's URL, or where the bundle `kbin update` made of
    /// a detached signature is exported) and who must have signed it.
    pub signature: Option<(String, crate::trust::Policy)>,
    /// Upstream's OpenPGP detached signature (`.asc` URL) and the keyring it must verify against.
    pub asc: Option<(String, String)>,
    /// Its file name (for checksum files).
    pub file_name: String,
    /// Binary or archive.
    pub format: ArtifactFormat,
    /// The pinned digest, if any.
    pub pinned: Option<Digest>,
    /// For unpinned artifacts: a trust-on-first-use digest `kbin update` recorded.
    pub tofu: Option<crate::manifest::Tofu>,
    /// For unpinned artifacts: the digest verified by an earlier install (no checksum request).
    pub known: Option<Digest>,
    /// Already in the store.
    pub cached: bool,
}

impl PlannedArtifact {
    /// For an unpinned artifact: the bundle `kbin update` stored in the overlay (a detached
    /// signature with the Rekor entry it verified), which install verifies offline.
    pub fn stored_bundle(&self) -> Option<&str> {
        if self.pinned.is_some() {
            return None;
        }
        self.tofu.as_ref()?.bundle.as_deref()
    }

    /// The digest it must have, if known before fetching.
    pub fn expected(&self) -> Option<&Digest> {
        self.pinned
            .as_ref()
            .or(self.tofu.as_ref().map(|t| &t.digest))
            .or(self.known.as_ref())
    }
}

/// One binary to put in the toolchain.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedBinary {
    /// Its component.
    pub component: String,
    /// The component's version.
    pub version: String,
    /// Its name.
    pub binary: String,
    /// Where it goes, relative to the toolchain directory.
    pub path: String,
    /// Index into [`Plan::artifacts`].
    pub artifact: usize,
    /// For archives: the member path.
    pub member: Option<String>,
    /// Optional: missing from the archive is fine.
    pub optional: bool,
}

/// Everything `install` will do, decided before doing any of it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The toolchain's name.
    pub name: String,
    /// Its arch.
    pub arch: Arch,
    /// The versions.
    pub resolution: Resolution,
    /// Distinct artifacts, in manifest order.
    pub artifacts: Vec<PlannedArtifact>,
    /// Binaries, in manifest order.
    pub binaries: Vec<PlannedBinary>,
    /// Components built from source instead (`--from-source`), in manifest order.
    pub builds: Vec<PlannedBuild>,
    /// The images to pull with it: a node toolchain (containerd or the kubelet in it) gets its
    /// release's pause and CoreDNS images, unless `--no-images`.
    pub images: Vec<crate::images::ImageRef>,
    /// `--require-verified`: each image must have a verified signature.
    pub require_signed_images: bool,
    /// Who must have signed an image the registry serves a signature for (the manifest's
    /// `[images.signer]`).
    pub image_signer: crate::trust::Policy,
    /// `--require-verified`: an unpinned artifact whose `.asc` upstream turns out not to have
    /// (known only when it is fetched) is refused.
    pub require_verified: bool,
    /// The toolchain is installed exactly so already, every file as its receipt says: nothing
    /// to do.
    pub up_to_date: bool,
    /// The toolchain is installed so, but these files are not what its receipt says (changed,
    /// missing, their blob gone): the install repairs it.
    pub repairs: Vec<crate::toolchain::integrity::Fault>,
}

/// Decide what an install of `resolution` needs.
pub fn plan(
    manifest: &Manifest,
    store: &Store,
    resolution: &Resolution,
    opts: &Options,
) -> Result<Plan, InstallError> {
    let wanted = wanted_binaries(manifest, &opts.only)?;
    if let Some(n) = opts
        .from_source
        .iter()
        .find(|n| manifest.component(n).is_none())
    {
        return Err(InstallError::UnknownFromSource {
            name: n.clone(),
            known: manifest.component_names(),
        });
    }
    let mut p = Plan {
        name: opts.name.clone(),
        arch: opts.arch,
        resolution: resolution.clone(),
        artifacts: Vec::new(),
        binaries: Vec::new(),
        builds: Vec::new(),
        images: Vec::new(),
        require_signed_images: opts.require_verified,
        image_signer: manifest.image_signer.clone(),
        require_verified: opts.require_verified,
        up_to_date: false,
        repairs: Vec::new(),
    };
    for (si, sel) in resolution.components.iter().enumerate() {
        let comp = manifest
            .component(&sel.component)
            .expect("resolutions only name the manifest's components");
        // Optional binaries ride along with the component's first selection, those its
        // version ships (resolution checked that the manifest knows what it ships).
        let first = resolution
            .components
            .iter()
            .position(|s| s.component == sel.component)
            == Some(si);
        let optional = if first {
            comp.shipped(&sel.version)
                .map(|s| s.optional)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let all = sel
            .binaries
            .iter()
            .map(|b| (b, false))
            .chain(optional.iter().map(|b| (b, true)));
        for (binary, optional) in all {
            if wanted.as_ref().is_some_and(|w| !w.contains(binary)) {
                continue;
            }
            if opts.from_source.contains(&comp.name) {
                p.add_build(comp, &sel.version, binary, optional);
            } else {
                p.add_download(manifest, store, comp, &sel.version, binary, optional)?;
            }
        }
    }
    let is_node = |b: &str| b == "containerd" || b == "kubelet";
    let node = p.binaries.iter().any(|b| is_node(&b.binary))
        || p.builds
            .iter()
            .any(|b| b.outputs.iter().any(|o| is_node(&o.binary)));
    if let (Some(i), true) = (&resolution.images, node && !opts.no_images) {
        p.images = vec![
            crate::images::ImageRef::pause(&i.pause),
            crate::images::ImageRef::coredns(&i.coredns),
        ];
    }
    if opts.require_pinned {
        p.refuse_unpinned()?;
    }
    if opts.require_verified {
        p.refuse_unverified()?;
    }
    // Whether a source build is current is the builder's call (its cache is keyed by commit).
    if p.builds.is_empty()
        && let Some(installed) = same_toolchain(store, &p)
    {
        // The same toolchain: "up to date" only if its files still are what its receipt says.
        p.repairs = crate::toolchain::integrity::check(
            store,
            &installed,
            crate::toolchain::integrity::Scope::FilesAndBlobs,
        )?;
        p.up_to_date = p.repairs.is_empty();
    }
    Ok(p)
}

/// `--only`: each name is a component (all its binaries) or a single binary; `None` is all.
fn wanted_binaries(
    manifest: &Manifest,
    only: &[String],
) -> Result<Option<BTreeSet<String>>, InstallError> {
    if only.is_empty() {
        return Ok(None);
    }
    let mut set = BTreeSet::new();
    for n in only {
        if let Some(c) = manifest.component(n) {
            set.extend(c.binaries.iter().chain(&c.optional_binaries).cloned());
        } else if manifest.component_of_binary(n).is_some() {
            set.insert(n.clone());
        } else {
            let known: Vec<String> = manifest
                .components
                .iter()
                .map(|c| c.name.clone())
                .chain(manifest.components.iter().flat_map(|c| c.binaries.clone()))
                .collect();
            return Err(InstallError::UnknownOnly {
                name: n.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(Some(set))
}

impl Plan {
    /// `binary` of `comp` built from source: an output of the component's one build.
    fn add_build(
        &mut self,
        comp: &crate::manifest::Component,
        version: &semver::Version,
        binary: &str,
        optional: bool,
    ) {
        let output = BuildOutput {
            binary: binary.to_owned(),
            path: format!("{}/{}", comp.install_dir, binary),
            optional,
        };
        match self
            .builds
            .iter_mut()
            .find(|b| b.component == comp.name && b.version == *version)
        {
            Some(b) => b.outputs.push(output),
            None => self.builds.push(PlannedBuild {
                component: comp.name.clone(),
                version: version.clone(),
                outputs: vec![output],
            }),
        }
    }

    /// `binary` of `comp` downloaded: its artifact (planned once however many binaries it
    /// holds) and where the binary is in it.
    fn add_download(
        &mut self,
        manifest: &Manifest,
        store: &Store,
        comp: &crate::manifest::Component,
        version: &semver::Version,
        binary: &str,
        optional: bool,
    ) -> Result<(), InstallError> {
        let choice = manifest
            .artifact_for(comp, binary, version, self.arch)
            .ok_or_else(|| InstallError::NoArtifact {
                component: comp.name.clone(),
                version: version.to_string(),
                binary: binary.to_owned(),
            })?;
        let index = match self.artifacts.iter().position(|a| a.url == choice.url) {
            Some(i) => i,
            None => {
                let known = if choice.pinned.is_none() {
                    std::fs::read_to_string(store.layout().url_index(&choice.url))
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                } else {
                    None
                };
                let mut a = PlannedArtifact {
                    component: comp.name.clone(),
                    version: version.to_string(),
                    file_name: choice
                        .url
                        .rsplit('/')
                        .next()
                        .unwrap_or(&choice.url)
                        .to_owned(),
                    url: choice.url.clone(),
                    checksum_url: choice.checksum_url.clone(),
                    signature: choice.signature.clone(),
                    asc: choice.asc.clone(),
                    format: choice.format,
                    pinned: choice.pinned.clone(),
                    tofu: choice.tofu.clone(),
                    known,
                    cached: false,
                };
                a.cached = a.expected().is_some_and(|d| store.get(d).is_some());
                self.artifacts.push(a);
                self.artifacts.len() - 1
            }
        };
        self.binaries.push(PlannedBinary {
            component: comp.name.clone(),
            version: version.to_string(),
            binary: binary.to_owned(),
            path: format!("{}/{}", comp.install_dir, binary),
            artifact: index,
            member: choice.member.clone(),
            optional,
        });
        Ok(())
    }

    /// `--require-verified`: every artifact neither pinned nor signed (a signature is verified
    /// when the artifact is fetched; failing it fails the install), named, or nothing. Images
    /// are checked when pulled (`Plan::require_signed_images`): whether the registry signs
    /// them is known only there.
    fn refuse_unverified(&self) -> Result<(), InstallError> {
        let bad: Vec<String> = self
            .artifacts
            .iter()
            .filter(|a| a.pinned.is_none() && a.signature.is_none() && a.asc.is_none())
            .map(|a| format!("{} (checksum file only)", a.url))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Unverified(bad))
        }
    }

    /// `--require-pinned`: every artifact and image not pinned, named, or nothing.
    fn refuse_unpinned(&self) -> Result<(), InstallError> {
        let unpinned: Vec<String> = self
            .artifacts
            .iter()
            .filter(|a| a.pinned.is_none())
            .map(|a| match &a.tofu {
                Some(t) => format!(
                    "{} (its digest is trust on first use, from {} at {})",
                    a.url, t.source, t.fetched
                ),
                None => a.url.clone(),
            })
            // No kbin release pins image digests yet: they are trusted on first use.
            .chain(
                self.images
                    .iter()
                    .map(|i| format!("image {i} (trusted on first use; --no-images skips images)")),
            )
            .collect();
        if unpinned.is_empty() {
            Ok(())
        } else {
            Err(InstallError::Unpinned(unpinned))
        }
    }
}

/// The installed toolchain's receipt, if it already says exactly what `plan` would make: same
/// versions, same artifacts (by URL and digest), same binaries at the same paths. (Whether the
/// files still match it is [`crate::toolchain::integrity::check`]'s question.)
fn same_toolchain(store: &Store, plan: &Plan) -> Option<Receipt> {
    let layout = store.layout();
    let r = Receipt::load(&layout.receipt_path(&plan.name)).ok()?;
    same_as_planned(store, plan, &r).then_some(r)
}

fn same_as_planned(store: &Store, plan: &Plan, r: &Receipt) -> bool {
    let layout = store.layout();
    if r.arch != plan.arch || r.kubernetes != plan.resolution.kubernetes {
        return false;
    }
    let mut have: BTreeMap<(String, String), (&ComponentReceipt, &BinaryReceipt)> = BTreeMap::new();
    for c in &r.components {
        for b in &c.binaries {
            have.insert((c.name.clone(), b.name.clone()), (c, b));
        }
    }
    let mut expected_bins = 0;
    for b in &plan.binaries {
        let Some((c, br)) = have.get(&(b.component.clone(), b.binary.clone())) else {
            if b.optional {
                continue;
            }
            return false;
        };
        expected_bins += 1;
        let a = &plan.artifacts[b.artifact];
        let same_artifact = c
            .artifacts
            .iter()
            .any(|ar| ar.url == a.url && a.expected().is_none_or(|d| *d == ar.digest));
        if c.version.to_string() != b.version
            || c.origin != Origin::Download
            || !same_artifact
            || br.path != b.path
        {
            return false;
        }
    }
    let toolchain = layout.toolchain_dir(&plan.name);
    let images_present = plan.images.iter().all(|i| {
        r.pulled
            .iter()
            .any(|p| p.name == i.to_string() && p.arch == plan.arch)
            && crate::images::toolchain_path(&toolchain, i).is_file()
    });
    expected_bins == have.len() && images_present && r.pulled.len() == plan.images.len()
}
