//! Making and changing receipts: the one place a toolchain's receipt entries are written.
//!
//! `install` makes a whole receipt ([`Receipt::new`] from [`binary_entry`]s); `kbin build`
//! swaps one component of an installed toolchain ([`replace_component`]). Both go through
//! [`Staging`], so the receipt and the binaries it names change together or not at all.

use std::collections::BTreeMap;

use semver::Version;

use super::assemble::{self, AssembleError, Staging};
use super::probe;
use super::receipt::{
    BinaryReceipt, ComponentReceipt, Origin, RECEIPT_SCHEMA, Receipt, ReceiptError, SourceReceipt,
};
use crate::manifest::{Arch, Component, Digest, Images};
use crate::store::{CasError, Checked, Layout, Store};

/// Errors changing an installed toolchain.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The installed receipt could not be read.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// Staging or swapping the toolchain failed.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] CasError),
    /// A binary's blob is not in the store, or was damaged (and removed).
    #[error("the blob {digest} of {binary} is missing from the store or damaged")]
    MissingBlob {
        /// The binary.
        binary: String,
        /// Its digest.
        digest: Digest,
    },
}

impl Receipt {
    /// A new receipt of the current schema, stamped now.
    pub fn new(
        name: &str,
        kubernetes: Version,
        arch: Arch,
        manifest: Digest,
        images: Option<Images>,
        components: Vec<ComponentReceipt>,
    ) -> Receipt {
        Receipt {
            schema: RECEIPT_SCHEMA,
            pulled: Vec::new(),
            name: name.to_owned(),
            kubernetes,
            arch,
            manifest,
            created: crate::util::now_rfc3339(),
            images,
            components,
        }
    }

    /// Put `entry` in place of every entry of its component (a `--with` split of it included),
    /// where the first one was; or append it.
    pub fn put_component(&mut self, entry: ComponentReceipt) {
        match self.components.iter().position(|c| c.name == entry.name) {
            Some(i) => {
                let name = entry.name.clone();
                self.components[i] = entry;
                let mut n = 0;
                self.components.retain(|c| {
                    n += 1;
                    n <= i + 1 || c.name != name
                });
            }
            None => self.components.push(entry),
        }
    }
}

/// The receipt entry of binary `name` of `component`, staged at `path` with `digest`. When `ask`
/// (the binary runs on this machine and is not optional), the binary is asked its version.
pub fn binary_entry(
    staging: &Staging,
    component: &Component,
    name: &str,
    path: &str,
    digest: &Digest,
    ask: bool,
) -> BinaryReceipt {
    let staged = staging.dir().join(path);
    BinaryReceipt {
        name: name.to_owned(),
        path: path.to_owned(),
        digest: digest.clone(),
        size: std::fs::metadata(&staged).ok().map(|m| m.len()),
        reports: ask
            .then(|| probe::component_report(component, name, &staged))
            .flatten(),
    }
}

/// The receipt facts of a toolchain that a source build creates.
#[derive(Debug, Clone)]
pub struct NewToolchain {
    /// Its Kubernetes version.
    pub kubernetes: Version,
    /// Its arch (the host's: builds are native).
    pub arch: Arch,
    /// The manifest's digest.
    pub manifest: Digest,
    /// The images of its Kubernetes minor, if the manifest has them.
    pub images: Option<Images>,
}

/// Swap a source build's `binaries` (name → blob) into the installed toolchain `name` and
/// record `component` as built from source at `version`. The toolchain is replaced whole
/// (staging + rename) under its lock; `on_wait` is called if another kbin holds that lock.
#[allow(clippy::too_many_arguments)] // each is one fact of the change; a struct would only rename them
///
/// When `fresh` is given and the toolchain is not installed, it is created with just this
/// component, its receipt made from `fresh`.
pub fn replace_component(
    layout: &Layout,
    store: &Store,
    name: &str,
    component: &Component,
    version: &Version,
    binaries: &BTreeMap<String, Digest>,
    source: SourceReceipt,
    fresh: Option<NewToolchain>,
    on_wait: impl FnOnce(),
) -> Result<Receipt, EditError> {
    let _lock = assemble::lock_toolchain(layout, name, on_wait)?;
    let path = layout.receipt_path(name);
    let (mut receipt, staging) = match fresh {
        Some(f) if !path.is_file() => (
            Receipt::new(name, f.kubernetes, f.arch, f.manifest, f.images, Vec::new()),
            Staging::new(layout, name)?,
        ),
        _ => (
            Receipt::load(&path)?,
            Staging::from_installed(layout, name)?,
        ),
    };
    for old in receipt
        .components
        .iter()
        .filter(|c| c.name == component.name)
        .flat_map(|c| &c.binaries)
    {
        staging.remove(&old.path)?;
    }
    let mut entries = Vec::new();
    for (b, digest) in binaries {
        let rel = format!("{}/{}", component.install_dir, b);
        // Checked before it is linked: a build output damaged in the store is never installed.
        let blob = match store.check(digest)? {
            Checked::Intact(blob) => blob,
            Checked::Missing | Checked::Damaged(_) => {
                return Err(EditError::MissingBlob {
                    binary: b.clone(),
                    digest: digest.clone(),
                });
            }
        };
        staging.link(&rel, &blob)?;
        store.relinked(digest);
        // Builds are native, so the binary can say what it is.
        entries.push(binary_entry(&staging, component, b, &rel, digest, true));
    }
    // The Kubernetes version of a toolchain is its kubernetes component's.
    if component.name == crate::manifest::KUBERNETES {
        receipt.kubernetes = version.clone();
    }
    receipt.put_component(ComponentReceipt {
        name: component.name.clone(),
        version: version.clone(),
        origin: Origin::Source,
        artifacts: Vec::new(),
        binaries: entries,
        source: Some(source),
    });
    staging.commit(&receipt)?;
    Ok(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, version: u64) -> ComponentReceipt {
        ComponentReceipt {
            name: name.into(),
            version: Version::new(1, version, 0),
            origin: Origin::Download,
            artifacts: vec![],
            binaries: vec![],
            source: None,
        }
    }

    #[test]
    fn a_put_component_replaces_every_split_entry_in_place() {
        let mut r = Receipt::new(
            "t",
            Version::new(1, 30, 0),
            Arch::Amd64,
            Digest::sha256_of(&[0; 32]),
            None,
            vec![entry("a", 1), entry("k", 1), entry("b", 1), entry("k", 2)],
        );
        r.put_component(entry("k", 3));
        let got: Vec<(String, u64)> = r
            .components
            .iter()
            .map(|c| (c.name.clone(), c.version.minor))
            .collect();
        assert_eq!(
            got,
            [("a", 1), ("k", 3), ("b", 1)].map(|(n, v)| (n.to_string(), v))
        );
        r.put_component(entry("new", 1));
        assert_eq!(r.components.last().unwrap().name, "new");
    }
}
