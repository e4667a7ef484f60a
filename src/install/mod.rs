//! `kbin install`: plan, then act.
//!
//! A newcomer's tour, one file a step:
//!
//! - [`plan`](plan::plan) (`plan.rs`) turns a [`Resolution`] into a [`Plan`] before a byte is
//!   written: which artifact provides each binary, which are pinned, which are already in the
//!   store, which components are built from source, and whether the toolchain is already
//!   installed exactly so (its receipt the same, and its files still what the receipt says:
//!   `toolchain::integrity`; if not, the faults are the plan's `repairs`).
//! - [`execute`] (`execute.rs`) acts on it: a bounded pool of concurrent downloads
//!   (`artifact.rs`: each under a per-artifact lock, verified, stored, its archive members
//!   unpacked once), then the source builds (`build.rs`: the [`SourceBuilder`] seam, and
//!   [`ManifestBuilder`], which hands each build to `source`), then the receipt (`receipt.rs`)
//!   and the swap of the whole toolchain into place (`toolchain::assemble`).
//! - [`repair()`] (`repair.rs`) installs a toolchain again from its own receipt, for
//!   `kbin cache verify --repair`.
//! - The progress display is `ui::progress`; the receipt format is `toolchain::receipt`.
//!
//! [`Resolution`]: crate::manifest::resolve::Resolution

mod artifact;
mod build;
mod execute;
mod plan;
mod receipt;
mod repair;
#[cfg(test)]
mod tests;

use crate::archive;
use crate::fetch::FetchError;
use crate::manifest::Arch;
use crate::toolchain::assemble;

pub use build::{BuildOutput, Built, ManifestBuilder, PlannedBuild, SourceBuilder};
pub use execute::{Outcome, execute, fetch_artifacts};
pub use plan::{Plan, PlannedArtifact, PlannedBinary, plan};
pub use repair::{repair, request_of};

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
    /// `--require-verified` and some artifacts or images are neither pinned nor signed.
    #[error("--require-verified: neither pinned nor signed: {}", .0.join(", "))]
    Unverified(Vec<String>),
    /// An artifact's signature was refused: nothing of it is kept.
    #[error("the signature of {url} ({signature}) was refused (nothing kept)")]
    Signature {
        /// The artifact.
        url: String,
        /// The signature's file (a bundle, an attestation, or the one `kbin update` kept).
        signature: String,
        /// Why (boxed: the error's other variants are small).
        #[source]
        source: Box<crate::trust::SigError>,
    },
    /// An artifact's OpenPGP signature (`.asc`) was refused: nothing of it is kept.
    #[error("the OpenPGP signature {asc} was refused: nothing of its artifact is kept")]
    Asc {
        /// The `.asc` (its name says whose signature it is: `runc.amd64.asc`).
        asc: String,
        /// Why.
        #[source]
        source: crate::trust::SigError,
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
    Io(#[from] crate::fsx::PathIo),
    /// The installed toolchain's receipt could not be read.
    #[error(transparent)]
    Receipt(#[from] crate::toolchain::receipt::ReceiptError),
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
    /// An image could not be pulled.
    #[error("cannot pull {image}")]
    Image {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: Box<crate::images::ImageError>,
    },
    /// A blob vanished or was damaged between being fetched and being linked (another process
    /// at work in KBIN_HOME): nothing is installed.
    #[error("the blob {digest} for {path} {}", match damaged { Some(d) => format!("was damaged before it could be linked: {d}"), None => "vanished from the store before it could be linked".to_owned() })]
    BlobGone {
        /// Where it was to go in the toolchain.
        path: String,
        /// Its digest.
        digest: crate::manifest::Digest,
        /// What was wrong with it, if it was there.
        damaged: Option<Box<crate::store::DamagedBlob>>,
    },
    /// A toolchain to repair has components built from source, which only `kbin build` makes.
    #[error("cannot repair toolchain {toolchain} by fetching: {} built from source", components.join(", "))]
    RepairBuilt {
        /// The toolchain.
        toolchain: String,
        /// Its components built from source.
        components: Vec<String>,
    },
    /// The versions in a toolchain's receipt no longer resolve against the manifest.
    #[error("cannot repair toolchain {toolchain}: the manifest no longer resolves its versions")]
    RepairResolve {
        /// The toolchain.
        toolchain: String,
        /// Why.
        #[source]
        source: Box<crate::manifest::resolve::ResolveError>,
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

impl InstallError {
    /// The next step to suggest, if any; `mirror_set` says whether a mirror is in use already.
    pub fn hint(&self, mirror_set: bool) -> Option<String> {
        match self {
            InstallError::Unpinned(_) => Some(
                "drop --require-pinned to verify these against upstream's checksum files, or pin \
                 them in a manifest (scripts/update-manifest)"
                    .into(),
            ),
            InstallError::Unverified(_) => Some(
                "pin them in a manifest (scripts/update-manifest), or drop --require-verified to \
                 accept upstream's checksum files"
                    .into(),
            ),
            InstallError::Signature { .. } | InstallError::Asc { .. } => Some(
                "the artifact is not what its upstream signed: check the mirror, or report it upstream"
                    .into(),
            ),
            InstallError::UnknownOnly { .. } | InstallError::UnknownFromSource { .. } => {
                Some("kbin show-versions --available lists the components of each version".into())
            }
            InstallError::Fetch(f) => f.hint().map(str::to_owned).or_else(|| {
                (!mirror_set).then(|| {
                    "without internet access, point kbin at a mirror: --mirror URL or KBIN_MIRROR"
                        .to_owned()
                })
            }),
            InstallError::RepairBuilt {
                toolchain,
                components,
            } => Some(format!(
                "rebuild each with `kbin build --from-source {} --toolchain {toolchain}`, or reinstall the toolchain with `kbin install`",
                components.join("|")
            )),
            InstallError::RepairResolve { .. } => Some(
                "reinstall it with `kbin install` (or uninstall it with `kbin uninstall`)".into(),
            ),
            InstallError::BlobGone { .. } => {
                Some("rerun the command: the blob is fetched or unpacked again".into())
            }
            InstallError::Store(crate::store::CasError::Mismatch { .. }) => Some(
                "the artifact is not what the manifest pins: check the mirror, then rerun".into(),
            ),
            _ => None,
        }
    }
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
    /// `--require-verified` (`--require-signed`): refuse what is neither pinned nor signed.
    pub require_verified: bool,
    /// Concurrent downloads.
    pub jobs: usize,
    /// `--from-source`: components to build instead of downloading.
    pub from_source: Vec<String>,
    /// `--no-images`: do not pull the release's images.
    pub no_images: bool,
}
