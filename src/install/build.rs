//! Source builds inside an install: the [`SourceBuilder`] seam [`super::execute`] calls for each
//! `--from-source` component, and [`ManifestBuilder`], the builder kbin uses, which hands each
//! build to [`crate::source`]. The dependency runs one way: install knows source, source knows
//! nothing of install.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::manifest::{Arch, Digest, Manifest};
use crate::source::{self, BuildRequest, SourceError};
use crate::store::Store;
use crate::ui::Ui;

/// One binary a source build must produce.
#[derive(Debug, Clone, Serialize)]
pub struct BuildOutput {
    /// Its name (`kubectl`).
    pub binary: String,
    /// Where it goes, relative to the toolchain directory (`bin/kubectl`).
    pub path: String,
    /// Optional: a build that does not make it is fine.
    pub optional: bool,
}

/// A component to build from source (`--from-source`) instead of downloading.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedBuild {
    /// The component.
    pub component: String,
    /// The version to build (the builder derives the git ref from the manifest's tag template).
    pub version: semver::Version,
    /// The binaries wanted from it (after `--only`).
    pub outputs: Vec<BuildOutput>,
}

/// What a source build hands back: its outputs, already in the store, and their provenance.
#[derive(Debug, Clone)]
pub struct Built {
    /// Binary name → the sha256 of its blob in the store.
    pub binaries: BTreeMap<String, Digest>,
    /// Repository, ref, commit, Go version and recipe, for the receipt.
    pub source: crate::toolchain::SourceReceipt,
}

/// The hook through which `install --from-source` builds components ([`ManifestBuilder`] in
/// kbin, a script in tests). [`super::execute`] calls it while holding the store's shared lock, after the
/// downloads and before the toolchain is assembled; the builder stores every output with
/// [`Store::insert_file`] (or `insert_copy`) and must not take the store's exclusive lock.
pub trait SourceBuilder: Sync {
    /// Build `build` for `arch` and store its outputs.
    fn build(
        &self,
        store: &Store,
        build: &PlannedBuild,
        arch: Arch,
        ui: &Ui,
    ) -> Result<Built, Box<dyn std::error::Error + Send + Sync + 'static>>;
}

/// The [`SourceBuilder`] that `kbin install --from-source` uses: each planned build goes
/// through [`source::build_component`] at the version's tag, from the manifest's repository.
#[derive(Debug)]
pub struct ManifestBuilder<'a> {
    manifest: &'a Manifest,
    mirror: Option<String>,
    host_mirrors: BTreeMap<String, String>,
}

impl<'a> ManifestBuilder<'a> {
    /// A builder for the components of `manifest`, cloning their repositories directly.
    pub fn new(manifest: &'a Manifest) -> Self {
        ManifestBuilder {
            manifest,
            mirror: None,
            host_mirrors: BTreeMap::new(),
        }
    }

    /// Clone repositories through the same mirrors as artifacts (`--mirror`, settings.toml).
    pub fn with_mirrors(
        mut self,
        mirror: Option<String>,
        host_mirrors: BTreeMap<String, String>,
    ) -> Self {
        self.mirror = mirror;
        self.host_mirrors = host_mirrors;
        self
    }
}

impl SourceBuilder for ManifestBuilder<'_> {
    fn build(
        &self,
        store: &Store,
        build: &PlannedBuild,
        arch: Arch,
        ui: &Ui,
    ) -> Result<Built, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let component = self
            .manifest
            .component(&build.component)
            .ok_or_else(|| SourceError::NoRecipe(build.component.clone()))?;
        if Arch::host() != Some(arch) {
            return Err(format!(
                "cannot build {} for {arch} from source: source builds are native to this machine",
                build.component
            )
            .into());
        }
        let req = BuildRequest {
            component,
            version: build.version.clone(),
            arch,
            git_ref: None,
            source: crate::fetch::repository_url(
                &component.repository,
                self.mirror.as_deref(),
                &self.host_mirrors,
            )?,
            manifest: self.manifest,
            check_reproducible: false,
        };
        let built = source::build_component(store, &req, ui).map_err(|e| match e.hint() {
            Some(h) => format!("{e}\nhint: {h}").into(),
            None => Box::new(e) as Box<dyn std::error::Error + Send + Sync>,
        })?;
        let wanted: Vec<&str> = build.outputs.iter().map(|o| o.binary.as_str()).collect();
        Ok(Built {
            binaries: built
                .binaries
                .into_iter()
                .filter(|(b, _)| wanted.is_empty() || wanted.contains(&b.as_str()))
                .collect(),
            source: built.source,
        })
    }
}
