//! `kbin install`: plan, then act.
//!
//! [`plan`] turns a [`Resolution`] into a [`Plan`] before a byte is written: which artifact
//! provides each binary, which are pinned, which are already in the store, and whether the
//! toolchain is already installed exactly so. [`execute`] then fetches what is missing (a bounded
//! pool of concurrent downloads, each under a per-artifact lock so concurrent kbin processes
//! never fetch the same bytes twice), verifies, stores, extracts the binaries it needs, asks each
//! binary its version, and swaps the toolchain into place whole with its receipt.
//!
//! `--from-source COMPONENT` goes through one seam: [`plan`] moves the component's binaries
//! from [`Plan::artifacts`] to [`Plan::builds`], and [`execute`] hands each [`PlannedBuild`] to
//! a [`SourceBuilder`] (issue 5's source module implements it; the CLI passes it in), which
//! stores the outputs as blobs and returns their digests with the provenance for the receipt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use crate::archive::{self, Limits};
use crate::fetch::{FetchError, Fetcher, Progress};
use crate::manifest::resolve::Resolution;
use crate::manifest::{Arch, ArtifactFormat, Digest, Manifest};
use crate::store::cas::{FileLock, sha256_file};
use crate::store::{PathIo, Store, at, write_atomic};
use crate::toolchain::assemble::{self, Staging};
use crate::toolchain::receipt::RECEIPT_SCHEMA;
use crate::toolchain::{ArtifactReceipt, BinaryReceipt, ComponentReceipt, Origin, Receipt};
use crate::ui::Ui;

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// `--only` names something that is neither a component nor a binary.
    #[error("--only names {name:?}, which is neither a component nor a binary; known: {known}")]
    UnknownOnly {
        /// The name.
        name: String,
        /// What is accepted.
        known: String,
    },
    /// `--require-pinned` and some artifacts have no pin.
    #[error("--require-pinned: no pinned digest for {}", .0.join(", "))]
    Unpinned(Vec<String>),
    /// No artifact provides a binary.
    #[error("the manifest has no artifact that provides {binary} ({component} {version})")]
    NoArtifact {
        /// The component.
        component: String,
        /// Its version.
        version: String,
        /// The binary.
        binary: String,
    },
    /// A required binary is not in its archive.
    #[error("{url} does not contain {member}")]
    MissingMember {
        /// The artifact.
        url: String,
        /// The member looked for.
        member: String,
    },
    /// A download failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Extraction failed.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// The store refused a file.
    #[error(transparent)]
    Store(#[from] crate::store::CasError),
    /// Layout or settings.
    #[error(transparent)]
    Layout(#[from] crate::store::StoreError),
    /// Assembling the toolchain failed.
    #[error(transparent)]
    Assemble(#[from] assemble::AssembleError),
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// A background task died.
    #[error("an internal task failed: {0}")]
    Task(String),
    /// `--from-source` names something that is not a component.
    #[error("--from-source names {name:?}, which is not a component; known: {known}")]
    UnknownFromSource {
        /// The name.
        name: String,
        /// The components.
        known: String,
    },
    /// The plan has source builds but this kbin has no source builder.
    #[error("cannot build {} from source: this kbin has no source builds yet", .0.join(", "))]
    NoSourceBuilder(Vec<String>),
    /// A source build failed.
    #[error("building {component} {version} from source failed")]
    Build {
        /// The component.
        component: String,
        /// Its version.
        version: String,
        /// What went wrong (the builder's error, with its hints).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A source build did not return a binary the plan needs.
    #[error("building {component} from source gave no {binary} (or not in the store)")]
    MissingOutput {
        /// The component.
        component: String,
        /// The binary.
        binary: String,
    },
}

/// What the user asked for beyond the versions.
#[derive(Debug, Clone)]
pub struct Options {
    /// The toolchain's name.
    pub name: String,
    /// The binaries' architecture.
    pub arch: Arch,
    /// `--only`: components or binaries (empty: everything).
    pub only: Vec<String>,
    /// Refuse unpinned artifacts.
    pub require_pinned: bool,
    /// Concurrent downloads.
    pub jobs: usize,
    /// `--from-source`: components to build instead of downloading.
    pub from_source: Vec<String>,
}

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
    /// Its file name (for checksum files).
    pub file_name: String,
    /// Binary or archive.
    pub format: ArtifactFormat,
    /// The pinned digest, if any.
    pub pinned: Option<Digest>,
    /// For unpinned artifacts: the digest verified by an earlier install (no checksum request).
    pub known: Option<Digest>,
    /// Already in the store.
    pub cached: bool,
}

impl PlannedArtifact {
    /// The digest it must have, if known before fetching.
    pub fn expected(&self) -> Option<&Digest> {
        self.pinned.as_ref().or(self.known.as_ref())
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

/// The hook through which `install --from-source` builds components (issue 5's source module
/// implements it). [`execute`] calls it while holding the store's shared lock, after the
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
    /// The toolchain is installed exactly so already: nothing to do.
    pub up_to_date: bool,
}

fn url_index_path(store: &Store, url: &str) -> PathBuf {
    use sha2::Digest as _;
    let key = hex::encode(sha2::Sha256::digest(url.as_bytes()));
    store.layout().cache_dir().join("index/urls").join(key)
}

/// Decide what an install of `resolution` needs.
pub fn plan(
    manifest: &Manifest,
    store: &Store,
    resolution: &Resolution,
    opts: &Options,
) -> Result<Plan, InstallError> {
    // `--only`: each name is a component (all its binaries) or a single binary.
    let mut wanted: Option<BTreeSet<String>> = None;
    if !opts.only.is_empty() {
        let mut set = BTreeSet::new();
        for n in &opts.only {
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
        wanted = Some(set);
    }

    for n in &opts.from_source {
        if manifest.component(n).is_none() {
            let known: Vec<&str> = manifest
                .components
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return Err(InstallError::UnknownFromSource {
                name: n.clone(),
                known: known.join(", "),
            });
        }
    }

    let mut artifacts: Vec<PlannedArtifact> = Vec::new();
    let mut binaries = Vec::new();
    let mut builds: Vec<PlannedBuild> = Vec::new();
    for sel in &resolution.components {
        let comp = manifest
            .component(&sel.component)
            .expect("resolutions only name the manifest's components");
        let all = sel.binaries.iter().map(|b| (b, false)).chain(
            // Optional binaries ride along with the component's first selection.
            comp.optional_binaries
                .iter()
                .filter(|_| sel.binaries.len() == comp.binaries.len())
                .map(|b| (b, true)),
        );
        let from_source = opts.from_source.contains(&comp.name);
        for (binary, optional) in all {
            if wanted.as_ref().is_some_and(|w| !w.contains(binary)) {
                continue;
            }
            if from_source {
                let output = BuildOutput {
                    binary: binary.clone(),
                    path: format!("{}/{}", comp.install_dir, binary),
                    optional,
                };
                match builds
                    .iter_mut()
                    .find(|b| b.component == comp.name && b.version == sel.version)
                {
                    Some(b) => b.outputs.push(output),
                    None => builds.push(PlannedBuild {
                        component: comp.name.clone(),
                        version: sel.version.clone(),
                        outputs: vec![output],
                    }),
                }
                continue;
            }
            let choice = manifest
                .artifact_for(comp, binary, &sel.version, opts.arch)
                .ok_or_else(|| InstallError::NoArtifact {
                    component: comp.name.clone(),
                    version: sel.version.to_string(),
                    binary: binary.clone(),
                })?;
            let index = match artifacts.iter().position(|a| a.url == choice.url) {
                Some(i) => i,
                None => {
                    let known = if choice.pinned.is_none() {
                        std::fs::read_to_string(url_index_path(store, &choice.url))
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                    } else {
                        None
                    };
                    let mut a = PlannedArtifact {
                        component: comp.name.clone(),
                        version: sel.version.to_string(),
                        file_name: choice
                            .url
                            .rsplit('/')
                            .next()
                            .unwrap_or(&choice.url)
                            .to_owned(),
                        url: choice.url.clone(),
                        checksum_url: choice.checksum_url.clone(),
                        format: choice.format,
                        pinned: choice.pinned.clone(),
                        known,
                        cached: false,
                    };
                    a.cached = a.expected().is_some_and(|d| store.get(d).is_some());
                    artifacts.push(a);
                    artifacts.len() - 1
                }
            };
            binaries.push(PlannedBinary {
                component: comp.name.clone(),
                version: sel.version.to_string(),
                binary: binary.clone(),
                path: format!("{}/{}", comp.install_dir, binary),
                artifact: index,
                member: choice.member.clone(),
                optional,
            });
        }
    }
    if opts.require_pinned {
        let unpinned: Vec<String> = artifacts
            .iter()
            .filter(|a| a.pinned.is_none())
            .map(|a| a.url.clone())
            .collect();
        if !unpinned.is_empty() {
            return Err(InstallError::Unpinned(unpinned));
        }
    }
    let mut p = Plan {
        name: opts.name.clone(),
        arch: opts.arch,
        resolution: resolution.clone(),
        artifacts,
        binaries,
        builds,
        up_to_date: false,
    };
    // Whether a source build is current is the builder's call (its cache is keyed by commit).
    p.up_to_date = p.builds.is_empty() && is_up_to_date(store, &p);
    Ok(p)
}

/// Whether the installed toolchain already is exactly what `plan` would make: same versions,
/// same artifacts (by URL and digest), every binary present.
fn is_up_to_date(store: &Store, plan: &Plan) -> bool {
    let layout = store.layout();
    let Ok(r) = Receipt::load(&layout.receipt_path(&plan.name)) else {
        return false;
    };
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
            || !layout.toolchain_dir(&plan.name).join(&br.path).is_file()
        {
            return false;
        }
    }
    expected_bins == have.len()
}

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
    /// Artifacts downloaded.
    pub downloaded: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Artifacts verified against upstream's checksum file only.
    pub unpinned: Vec<String>,
    /// Skew violations let through.
    pub warnings: Vec<String>,
}

/// Fetch, verify, store, assemble and commit the toolchain of `plan`.
pub fn execute(
    manifest: &Manifest,
    store: &Store,
    fetcher: &Fetcher,
    plan: &Plan,
    jobs: usize,
    builder: Option<&dyn SourceBuilder>,
    ui: &Ui,
) -> Result<Outcome, InstallError> {
    let layout = store.layout().clone();
    // Refuse before any byte moves, rather than after the downloads.
    let builder = match (builder, plan.builds.is_empty()) {
        (None, false) => {
            return Err(InstallError::NoSourceBuilder(
                plan.builds.iter().map(|b| b.component.clone()).collect(),
            ));
        }
        (b, _) => b,
    };
    let _home = store.lock_shared(|| ui.status("waiting for `kbin cache gc` to finish…"))?;
    if plan.up_to_date {
        let receipt = Receipt::load(&layout.receipt_path(&plan.name)).map_err(|e| {
            InstallError::Io(PathIo {
                action: "cannot read",
                path: layout.receipt_path(&plan.name),
                source: std::io::Error::other(e.to_string()),
            })
        })?;
        return Ok(Outcome {
            name: plan.name.clone(),
            path: layout.toolchain_dir(&plan.name),
            receipt,
            up_to_date: true,
            downloaded: 0,
            bytes: 0,
            unpinned: Vec::new(),
            warnings: plan.resolution.warnings.clone(),
        });
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(at::<InstallError>(
            "cannot start the runtime for",
            layout.root(),
        ))?;
    let progress = Arc::new(Bars::new(ui));
    let started = Instant::now();
    let fetched: Vec<Result<Fetched, InstallError>> = rt.block_on(async {
        // Unordered, so that one slow download never keeps a free slot from the next one.
        let mut done: Vec<(usize, Result<Fetching, InstallError>)> =
            futures_util::stream::iter(plan.artifacts.iter().cloned().enumerate())
                .map(|(i, a)| {
                    let store = store.clone();
                    let fetcher = fetcher.clone();
                    let progress = progress.clone();
                    let ui = ui.clone();
                    let members: Vec<String> = plan
                        .binaries
                        .iter()
                        .filter(|b| b.artifact == i)
                        .filter_map(|b| b.member.clone())
                        .collect();
                    async move {
                        let f = match fetch_artifact(&store, &fetcher, &a, &progress, &ui).await {
                            Ok(f) => f,
                            Err(e) => return (i, Err(e)),
                        };
                        // An archive is unpacked on a blocking thread while its pool slot
                        // goes to the next download.
                        let unpack = matches!(a.format, ArtifactFormat::TarGz).then(|| {
                            let sha256 = f.sha256.clone();
                            tokio::task::spawn_blocking(move || {
                                let blob = store
                                    .get(&sha256)
                                    .expect("fetch_artifact leaves the blob in the store");
                                members_of(&store, &sha256, &blob, &members)
                            })
                        });
                        (i, Ok(Fetching { fetched: f, unpack }))
                    }
                })
                .buffer_unordered(jobs.max(1))
                .collect()
                .await;
        done.sort_by_key(|(i, _)| *i);
        let mut out = Vec::with_capacity(done.len());
        for (_, r) in done {
            out.push(match r {
                Err(e) => Err(e),
                Ok(Fetching {
                    mut fetched,
                    unpack,
                }) => match unpack {
                    None => Ok(fetched),
                    Some(h) => match h.await {
                        Ok(Ok(m)) => {
                            fetched.members = m;
                            Ok(fetched)
                        }
                        Ok(Err(e)) => Err(e),
                        Err(e) => Err(InstallError::Task(e.to_string())),
                    },
                },
            });
        }
        out
    });
    progress.done();
    let fetched = fetched.into_iter().collect::<Result<Vec<Fetched>, _>>()?;
    tracing::debug!(
        "fetched and unpacked {} artifact(s) in {} ms",
        fetched.len(),
        started.elapsed().as_millis()
    );

    // Binaries: bare artifacts are the binary; archives give up named members.
    let staging = Staging::new(&layout, &plan.name)?;
    let mut bin_digests: BTreeMap<usize, (Digest, PathBuf)> = BTreeMap::new();
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
        let blob = store
            .get(&digest)
            .expect("fetch_artifact and members_of leave their blobs in the store");
        bin_digests.insert(bi, (digest, blob));
    }
    for (bi, (_, blob)) in &bin_digests {
        staging.link(&plan.binaries[*bi].path, blob)?;
    }

    // Source builds, one at a time (each is heavy), each output linked like a download's.
    let mut built: Vec<Built> = Vec::new();
    if let Some(builder) = builder {
        for b in &plan.builds {
            let out =
                builder
                    .build(store, b, plan.arch, ui)
                    .map_err(|source| InstallError::Build {
                        component: b.component.clone(),
                        version: b.version.to_string(),
                        source,
                    })?;
            for o in &b.outputs {
                match out.binaries.get(&o.binary).and_then(|d| store.get(d)) {
                    Some(blob) => staging.link(&o.path, &blob)?,
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
    }

    // The receipt: per selected component (in resolution order), its artifacts and binaries.
    let host = Arch::host() == Some(plan.arch);
    let reports_of = |comp: &crate::manifest::Component, binary: &str, path: &str| {
        if !host {
            return None;
        }
        let args = comp
            .version_args_override
            .get(binary)
            .unwrap_or(&comp.version_args);
        version_report(&staging.dir().join(path), args)
    };
    let mut components: Vec<ComponentReceipt> = Vec::new();
    for sel in &plan.resolution.components {
        let comp = manifest
            .component(&sel.component)
            .expect("resolutions only name the manifest's components");
        if let Some((pb, out)) = plan
            .builds
            .iter()
            .zip(&built)
            .find(|(b, _)| b.component == sel.component && b.version == sel.version)
        {
            let binaries: Vec<BinaryReceipt> = pb
                .outputs
                .iter()
                .filter_map(|o| {
                    let digest = out.binaries.get(&o.binary)?;
                    Some(BinaryReceipt {
                        name: o.binary.clone(),
                        path: o.path.clone(),
                        digest: digest.clone(),
                        reports: if o.optional {
                            None
                        } else {
                            reports_of(comp, &o.binary, &o.path)
                        },
                    })
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
            let Some((digest, _)) = bin_digests.get(&bi) else {
                continue;
            };
            let a = &plan.artifacts[b.artifact];
            if !c.artifacts.iter().any(|x| x.url == a.url) {
                c.artifacts.push(ArtifactReceipt {
                    url: a.url.clone(),
                    digest: fetched[b.artifact].verified.clone(),
                    pinned: a.pinned.is_some(),
                });
            }
            let reports = if b.optional {
                None
            } else {
                reports_of(comp, &b.binary, &b.path)
            };
            c.binaries.push(BinaryReceipt {
                name: b.binary.clone(),
                path: b.path.clone(),
                digest: digest.clone(),
                reports,
            });
        }
        if !c.binaries.is_empty() {
            components.push(c);
        }
    }
    tracing::debug!(
        "linked, built and asked versions at {} ms",
        started.elapsed().as_millis()
    );
    let receipt = Receipt {
        schema: RECEIPT_SCHEMA,
        name: plan.name.clone(),
        kubernetes: plan.resolution.kubernetes.clone(),
        arch: plan.arch,
        manifest: manifest.digest.clone(),
        created: now_rfc3339(),
        images: plan.resolution.images.clone(),
        components,
    };
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

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The result of getting one artifact into the store.
#[derive(Debug)]
struct Fetched {
    sha256: Digest,
    verified: Digest,
    downloaded: bool,
    bytes: u64,
    /// For archives: member path → blob digest.
    members: BTreeMap<String, Digest>,
}

/// An artifact in the store whose members may still be being unpacked.
struct Fetching {
    fetched: Fetched,
    unpack: Option<tokio::task::JoinHandle<Result<BTreeMap<String, Digest>, InstallError>>>,
}

async fn fetch_artifact(
    store: &Store,
    fetcher: &Fetcher,
    a: &PlannedArtifact,
    bars: &Bars,
    ui: &Ui,
) -> Result<Fetched, InstallError> {
    let hit = |d: &Digest| -> Result<Option<Fetched>, InstallError> {
        let Some(p) = store.get(d) else {
            return Ok(None);
        };
        let sha256 = if d.algo() == crate::manifest::DigestAlgo::Sha256 {
            d.clone()
        } else {
            sha256_file(&p)?.0
        };
        Ok(Some(Fetched {
            sha256,
            verified: d.clone(),
            downloaded: false,
            bytes: 0,
            members: BTreeMap::new(),
        }))
    };
    if let Some(d) = a.expected()
        && let Some(f) = hit(d)?
    {
        return Ok(f);
    }
    let expected = match a.expected() {
        Some(d) => d.clone(),
        None => {
            let url = a.checksum_url.as_deref().ok_or_else(|| {
                InstallError::Unpinned(vec![format!(
                    "{} (and upstream has no checksum file)",
                    a.url
                )])
            })?;
            let d = fetcher.checksum(url, &a.file_name).await?;
            ui.warn(format!(
                "{} is not pinned in the manifest; verified against upstream's {url}",
                a.file_name
            ));
            d
        }
    };
    // One process at a time per artifact: the second waits, then finds the blob.
    let lock_key = expected.to_string();
    let s2 = store.clone();
    let ui2 = ui.clone();
    let name = a.file_name.clone();
    let _lock: FileLock = tokio::task::spawn_blocking(move || {
        s2.lock_key(&lock_key, || {
            ui2.status(format!("waiting for another kbin downloading {name}…"))
        })
    })
    .await
    .map_err(|e| InstallError::Task(e.to_string()))??;
    if let Some(f) = hit(&expected)? {
        return Ok(f);
    }
    let partial = store.layout().tmp_dir().join(format!(
        "{}-{}.partial",
        expected.algo().as_str(),
        expected.hex()
    ));
    let bar = bars.add(&a.file_name);
    let done = fetcher
        .download(&a.url, &partial, Some(&expected), &*bar)
        .await;
    bars.finish(&bar, &a.file_name, done.as_ref().ok().map(|d| d.size));
    let done = done?;
    let digests = crate::store::cas::FileDigests {
        sha256: done.sha256.clone(),
        sha512: done.sha512.clone(),
        size: done.size,
    };
    let sha256 = store.insert_hashed(&done.path, &digests, Some(&expected))?;
    if a.pinned.is_none() {
        // Remember what upstream's checksum said, so a later install needs no request.
        let _ = write_atomic(
            &url_index_path(store, &a.url),
            expected.to_string().as_bytes(),
        );
    }
    Ok(Fetched {
        sha256,
        verified: expected,
        downloaded: true,
        bytes: done.size - done.resumed_from,
        members: BTreeMap::new(),
    })
}

/// The member path → blob digest of an archive's members, extracting them once: the result is
/// kept in `cache/trees/<digest>/members.toml` (the members themselves are blobs).
fn members_of(
    store: &Store,
    archive_digest: &Digest,
    archive_blob: &Path,
    members: &[String],
) -> Result<BTreeMap<String, Digest>, InstallError> {
    let tree = store.layout().tree_path(archive_digest);
    let index = tree.join("members.toml");
    let mut known: BTreeMap<String, Digest> = std::fs::read_to_string(&index)
        .ok()
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_default();
    let missing: Vec<&str> = members
        .iter()
        .map(String::as_str)
        .filter(|m| !known.contains_key(*m) || store.get(&known[*m]).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(known);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".members-")
        .tempdir_in(store.layout().tmp_dir())
        .map_err(at::<InstallError>(
            "cannot create a directory in",
            &store.layout().tmp_dir(),
        ))?;
    let got = archive::extract_members(archive_blob, &missing, tmp.path(), &Limits::default())?;
    for m in got {
        let d = store.insert_hashed(
            &m.path,
            &crate::store::cas::FileDigests {
                sha256: m.sha256.clone(),
                sha512: None,
                size: m.size,
            },
            Some(&m.sha256),
        )?;
        // `extract_members` normalizes `./x` to `x`; index under the name the plan uses.
        let asked = missing
            .iter()
            .find(|w| w.trim_start_matches("./") == m.name)
            .map_or(m.name.clone(), |w| (*w).to_owned());
        known.insert(asked, d);
    }
    let text = toml::to_string(&known).expect("a map of strings serializes");
    write_atomic(&index, text.as_bytes())?;
    Ok(known)
}

/// How long a binary may take to say its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `bin args…` with a timeout and keep the first line it prints (stdout, else stderr).
/// The pipes are drained on threads, so a chatty binary cannot fill one and stall; a binary that
/// hangs, or leaves a child holding its pipes, costs at most [`VERSION_TIMEOUT`] and reports
/// nothing.
pub fn version_report(bin: &Path, args: &[String]) -> Option<String> {
    use std::io::Read as _;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let (tx, rx) = std::sync::mpsc::channel();
    for (which, pipe) in [
        (
            0,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ),
        (
            1,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.by_ref().take(1 << 20).read_to_end(&mut buf);
            }
            let _ = tx.send((which, buf));
        });
    }
    drop(tx);
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let mut out: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((which, buf)) => out[which] = buf,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let [stdout, stderr] = out;
    let text = if stdout.iter().any(|b| !b.is_ascii_whitespace()) {
        stdout
    } else {
        stderr
    };
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// Download progress: indicatif bars on a terminal, one line per artifact in a pipe, nothing
/// with `-q`.
struct Bars {
    multi: Option<indicatif::MultiProgress>,
    /// Bytes of every download so far against the sizes announced so far.
    overall: Option<indicatif::ProgressBar>,
    lines: bool,
}

/// One artifact's progress (and its share of the overall bar).
struct Bar(
    Option<indicatif::ProgressBar>,
    Option<indicatif::ProgressBar>,
    Instant,
);

impl Progress for Bar {
    fn begin(&self, total: Option<u64>, already: u64) {
        if let Some(b) = &self.0 {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(already);
        }
        if let Some(o) = &self.1 {
            o.inc_length(total.unwrap_or(0));
            o.inc(already);
        }
    }
    fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
        if let Some(o) = &self.1 {
            o.inc(n);
        }
    }
    fn finish(&self) {}
}

impl Bars {
    fn new(ui: &Ui) -> Self {
        let multi = ui.progress().then(indicatif::MultiProgress::new);
        let overall = multi.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new(0));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4} [{bar:20}]",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            b.set_message("all downloads");
            b
        });
        Bars {
            multi,
            overall,
            lines: ui.lines() && !ui.json(),
        }
    }

    fn add(&self, name: &str) -> Arc<Bar> {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::no_length());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4} [{bar:20}]",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            b.set_message(name.to_owned());
            b
        });
        Arc::new(Bar(bar, self.overall.clone(), Instant::now()))
    }

    fn finish(&self, bar: &Bar, name: &str, size: Option<u64>) {
        if let Some(b) = &bar.0 {
            b.finish_and_clear();
        }
        if self.lines
            && let Some(size) = size
        {
            let secs = bar.2.elapsed().as_secs_f64().max(1e-3);
            crate::ui::say(&format!(
                "downloaded {name} ({:.1} MB, {:.1} MB/s)",
                size as f64 / 1e6,
                size as f64 / 1e6 / secs
            ));
        }
    }

    fn done(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchOptions;
    use crate::manifest::resolve::{Request, resolve};
    use crate::store::Layout;
    use crate::toolchain::SourceReceipt;

    fn setup() -> (tempfile::TempDir, Manifest, Store, Resolution) {
        let home = tempfile::tempdir().unwrap();
        let manifest = Manifest::embedded().unwrap();
        let store = Store::open(Layout::new(home.path().join("kbin"))).unwrap();
        let resolution = resolve(
            &manifest,
            &Request {
                version: "1.30".into(),
                overrides: Vec::new(),
                allow_skew: false,
            },
        )
        .unwrap();
        (home, manifest, store, resolution)
    }

    fn opts(only: &[&str], from_source: &[&str]) -> Options {
        Options {
            name: "t".into(),
            arch: Arch::host().unwrap_or(Arch::Amd64),
            only: only.iter().map(|s| s.to_string()).collect(),
            require_pinned: false,
            jobs: 2,
            from_source: from_source.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Builds crictl as a shell script that prints a version, the way a real build would put
    /// its output into the store.
    struct ScriptBuilder {
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl SourceBuilder for ScriptBuilder {
        fn build(
            &self,
            store: &Store,
            build: &PlannedBuild,
            _arch: Arch,
            _ui: &Ui,
        ) -> Result<Built, Box<dyn std::error::Error + Send + Sync + 'static>> {
            self.calls.lock().unwrap().push(build.component.clone());
            let dir = tempfile::tempdir()?;
            let mut binaries = BTreeMap::new();
            for o in &build.outputs {
                let p = dir.path().join(&o.binary);
                std::fs::write(
                    &p,
                    format!(
                        "#!/bin/sh\necho {} version v{}-src\n",
                        o.binary, build.version
                    ),
                )?;
                binaries.insert(o.binary.clone(), store.insert_copy(&p)?);
            }
            Ok(Built {
                binaries,
                source: SourceReceipt {
                    repository: "file:///src/cri-tools".into(),
                    git_ref: format!("v{}", build.version),
                    commit: "0123456789abcdef0123456789abcdef01234567".into(),
                    go: Some("1.22.5".into()),
                    recipe: Digest::sha256_of(&[7; 32]),
                    outputs: None,
                },
            })
        }
    }

    #[test]
    fn from_source_components_are_planned_as_builds_not_downloads() {
        let (_home, manifest, store, resolution) = setup();
        let plan = plan(&manifest, &store, &resolution, &opts(&[], &["etcd"])).unwrap();
        assert!(plan.artifacts.iter().all(|a| a.component != "etcd"));
        assert!(plan.binaries.iter().all(|b| b.component != "etcd"));
        assert!(plan.artifacts.iter().any(|a| a.component == "kubernetes"));
        assert_eq!(plan.builds.len(), 1);
        let b = &plan.builds[0];
        assert_eq!(b.component, "etcd");
        assert_eq!(Some(&b.version), resolution.version_of("etcd"));
        let paths: Vec<&str> = b.outputs.iter().map(|o| o.path.as_str()).collect();
        assert!(
            paths.contains(&"bin/etcd") && paths.contains(&"bin/etcdctl"),
            "{paths:?}"
        );
        assert!(!plan.up_to_date);
    }

    #[test]
    fn from_source_of_an_unknown_component_is_refused() {
        let (_home, manifest, store, resolution) = setup();
        let err = plan(&manifest, &store, &resolution, &opts(&[], &["kubectl"])).unwrap_err();
        assert!(
            matches!(&err, InstallError::UnknownFromSource { name, .. } if name == "kubectl"),
            "{err}"
        );
    }

    #[test]
    fn source_builds_without_a_builder_are_refused_before_anything_is_written() {
        let (_home, manifest, store, resolution) = setup();
        let plan = plan(&manifest, &store, &resolution, &opts(&[], &["crictl"])).unwrap();
        let fetcher = Fetcher::new(FetchOptions::default()).unwrap();
        let ui = Ui::new(false, true, 0);
        let err = execute(&manifest, &store, &fetcher, &plan, 2, None, &ui).unwrap_err();
        assert!(
            matches!(&err, InstallError::NoSourceBuilder(c) if c == &["crictl".to_string()]),
            "{err}"
        );
        assert!(!store.layout().toolchain_dir("t").exists());
        fn files(dir: &Path) -> usize {
            std::fs::read_dir(dir).map_or(0, |rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            files(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        assert_eq!(files(&store.layout().blobs_dir()), 0);
        assert_eq!(files(&store.layout().toolchains_dir()), 0);
    }

    #[test]
    fn a_source_build_is_linked_and_recorded_with_its_provenance() {
        let (_home, manifest, store, resolution) = setup();
        let plan = plan(
            &manifest,
            &store,
            &resolution,
            &opts(&["crictl"], &["crictl"]),
        )
        .unwrap();
        assert!(plan.artifacts.is_empty(), "{:?}", plan.artifacts);
        let fetcher = Fetcher::new(FetchOptions::default()).unwrap();
        let builder = ScriptBuilder {
            calls: Default::default(),
        };
        let ui = Ui::new(false, true, 0);
        let out = execute(&manifest, &store, &fetcher, &plan, 2, Some(&builder), &ui).unwrap();
        assert_eq!(*builder.calls.lock().unwrap(), vec!["crictl".to_string()]);
        assert_eq!(out.downloaded, 0);

        let receipt = Receipt::load(&store.layout().receipt_path("t")).unwrap();
        assert_eq!(receipt, out.receipt);
        assert_eq!(receipt.components.len(), 1);
        let c = &receipt.components[0];
        assert_eq!((c.name.as_str(), c.origin), ("crictl", Origin::Source));
        assert!(c.artifacts.is_empty());
        let src = c
            .source
            .as_ref()
            .expect("a source build records its provenance");
        assert_eq!(src.commit, "0123456789abcdef0123456789abcdef01234567");
        let bin = &c.binaries[0];
        assert_eq!(bin.path, "bin/crictl");
        let installed = store.layout().toolchain_dir("t").join("bin/crictl");
        let ran = Command::new(&installed).output().unwrap();
        let said = String::from_utf8_lossy(&ran.stdout).trim().to_string();
        assert_eq!(said, format!("crictl version v{}-src", c.version));
        assert_eq!(bin.reports.as_deref(), Some(said.as_str()));
        // The toolchain's file is the blob the builder stored, not a copy.
        use std::os::unix::fs::MetadataExt;
        let blob = store.get(&bin.digest).unwrap();
        assert_eq!(
            std::fs::metadata(&installed).unwrap().ino(),
            std::fs::metadata(&blob).unwrap().ino()
        );
    }

    #[test]
    fn a_chatty_binary_still_reports_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("chatty");
        // Far more than a pipe holds: the old wait-then-read would stall until the timeout.
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'chatty v1.2.3'\nhead -c 300000 /dev/zero | tr '\\0' x\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        assert_eq!(
            version_report(&bin, &["--version".into()]).as_deref(),
            Some("chatty v1.2.3")
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
