//! Is an installed toolchain still what its receipt says? Each binary is compared with its
//! receipt entry: present, a regular file, of the recorded size, and either the very blob last
//! verified (same inode and stat as the blob's stamp: no read) or, failing that, of the recorded
//! digest (hashed). Each blob the receipt names must also still be in the store.
//!
//! `install` calls this before answering "up to date" (so a damaged toolchain is repaired, not
//! kept), `show-versions` to flag a binary, and `cache verify` to name the toolchains that a
//! damaged blob or a changed file breaks.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::Receipt;
use crate::fsx::at;
use crate::manifest::Digest;
use crate::store::Store;
use crate::store::cas::{CasError, Stamp, hash_file};

/// A file of a toolchain that is not what its receipt says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// Its path relative to the toolchain directory (`bin/etcd`), or the blob's path in the
    /// store for a blob that is gone.
    pub path: String,
    /// The digest the receipt names for it.
    pub expected: Digest,
    /// What is wrong.
    pub problem: Problem,
}

/// What is wrong with a toolchain's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Problem {
    /// The file is not there.
    Missing,
    /// Something other than a regular file is in its place (a symlink, a directory).
    NotAFile,
    /// Its size is not the recorded one.
    Size {
        /// The receipt's.
        expected: u64,
        /// The file's.
        actual: u64,
    },
    /// Its bytes have another digest.
    Digest {
        /// The file's.
        actual: Digest,
    },
    /// The blob the receipt names is no longer in the store (the toolchain's copy may be
    /// fine, but nothing vouches for it and `cache gc` cannot keep it).
    BlobMissing,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.path;
        match &self.problem {
            Problem::Missing => write!(f, "{p} is missing"),
            Problem::NotAFile => write!(f, "{p} is not a regular file"),
            Problem::Size { expected, actual } => write!(
                f,
                "{p} is {actual} bytes, its receipt says {expected} ({})",
                self.expected
            ),
            Problem::Digest { actual } => write!(
                f,
                "{p} has digest {actual}, its receipt says {}",
                self.expected
            ),
            Problem::BlobMissing => write!(
                f,
                "the blob {} of {p} is gone from the store",
                self.expected
            ),
        }
    }
}

/// What [`check`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The toolchain's files only: are their bytes what the receipt says (`show-versions`)?
    Files,
    /// The files, and the store's blobs the receipt names (`install`, `cache verify`): a blob
    /// gone from the store is a fault too, repaired by fetching it again.
    FilesAndBlobs,
}

/// Compare the installed toolchain `receipt.name` with `receipt`; every fault found, in receipt
/// order (none: intact). Costs a stat and a small read per binary while the toolchain's files are
/// the store's verified blobs; a file that is not (a copy, a changed stamp) is hashed.
pub fn check(store: &Store, receipt: &Receipt, scope: Scope) -> Result<Vec<Fault>, CasError> {
    let blobs = scope == Scope::FilesAndBlobs;
    let layout = store.layout();
    let dir = layout.toolchain_dir(&receipt.name);
    let mut faults = Vec::new();
    for c in &receipt.components {
        for b in &c.binaries {
            let fault = |problem| Fault {
                path: b.path.clone(),
                expected: b.digest.clone(),
                problem,
            };
            if let Some(p) = check_file(store, &dir.join(&b.path), &b.digest, b.size)? {
                faults.push(fault(p));
            } else if blobs && !layout.blob_path(&b.digest).is_file() {
                faults.push(fault(Problem::BlobMissing));
            }
        }
        for a in c.artifacts.iter().filter(|_| blobs) {
            if !layout.blob_path(&a.digest).is_file() {
                faults.push(Fault {
                    path: a.url.rsplit('/').next().unwrap_or(&a.url).to_owned(),
                    expected: a.digest.clone(),
                    problem: Problem::BlobMissing,
                });
            }
        }
    }
    // The pulled images' archives, hardlinked like the binaries.
    for i in &receipt.pulled {
        let Ok(image) = i.name.parse::<crate::images::ImageRef>() else {
            continue;
        };
        let rel = format!("images/{}", image.archive_name());
        let fault = |problem| Fault {
            path: rel.clone(),
            expected: i.archive.clone(),
            problem,
        };
        if let Some(p) = check_file(store, &dir.join(&rel), &i.archive, Some(i.size))? {
            faults.push(fault(p));
        } else if blobs && !layout.blob_path(&i.archive).is_file() {
            faults.push(fault(Problem::BlobMissing));
        }
        // Its kept signature: without it an export could not carry the signature, and an
        // install repairs it by pulling the image's signature again.
        for d in i.signature_blobs().into_iter().filter(|_| blobs) {
            if !layout.blob_path(d).is_file() {
                faults.push(Fault {
                    path: format!("{rel} (its signature)"),
                    expected: d.clone(),
                    problem: Problem::BlobMissing,
                });
            }
        }
    }
    Ok(faults)
}

/// What is wrong with `path`, which must have `digest` (and `size`, when recorded), if anything.
fn check_file(
    store: &Store,
    path: &Path,
    digest: &Digest,
    size: Option<u64>,
) -> Result<Option<Problem>, CasError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(Problem::Missing)),
        Err(e) => return Err(at::<CasError>("cannot stat", path)(e)),
    };
    if !meta.is_file() {
        return Ok(Some(Problem::NotAFile));
    }
    if let Some(expected) = size
        && expected != meta.len()
    {
        return Ok(Some(Problem::Size {
            expected,
            actual: meta.len(),
        }));
    }
    // The blob itself, as last verified: nothing to read.
    if store.matches_stamp(digest, &meta) {
        return Ok(None);
    }
    let h = hash_file(path, Some(digest.algo()))?;
    let actual = h
        .get(digest.algo())
        .expect("hash_file computes the asked algorithm")
        .clone();
    if actual != *digest {
        return Ok(Some(Problem::Digest { actual }));
    }
    // Intact, and if it is the blob's inode (its stamp was only stale) and nothing moved while
    // it was hashed, the blob gets a fresh stamp so the next install reads nothing.
    use std::os::unix::fs::MetadataExt;
    let blob = store.layout().blob_path(digest);
    let unmoved =
        std::fs::symlink_metadata(path).is_ok_and(|m| Stamp::of_meta(&m) == Stamp::of_meta(&meta));
    if unmoved
        && std::fs::symlink_metadata(&blob)
            .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
    {
        store.write_stamp(digest, &blob);
    }
    Ok(None)
}

/// Why the installed toolchains could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] CasError),
    /// KBIN_HOME could not be read.
    #[error(transparent)]
    Layout(#[from] crate::store::StoreError),
    /// A receipt could not be read.
    #[error(transparent)]
    Receipt(#[from] super::receipt::ReceiptError),
}

/// An installed toolchain that is not what its receipt says.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    /// Its name.
    pub name: String,
    /// The damaged blobs it uses (binaries or artifacts), by digest.
    pub uses_damaged: Vec<Digest>,
    /// Its files that are not what its receipt says.
    pub faults: Vec<Fault>,
}

/// Every installed toolchain that names one of the `damaged` blobs in its receipt or whose
/// files are not what its receipt says, in name order.
pub fn broken_toolchains(
    store: &Store,
    damaged: &BTreeSet<Digest>,
) -> Result<Vec<Broken>, IntegrityError> {
    let layout = store.layout();
    let mut out = Vec::new();
    for name in layout.toolchain_names()? {
        let receipt = Receipt::load(&layout.receipt_path(&name))?;
        let uses_damaged: BTreeSet<Digest> = receipt
            .digests()
            .filter(|d| damaged.contains(*d))
            .cloned()
            .collect();
        let faults = check(store, &receipt, Scope::FilesAndBlobs)?;
        if !uses_damaged.is_empty() || !faults.is_empty() {
            out.push(Broken {
                name,
                uses_damaged: uses_damaged.into_iter().collect(),
                faults,
            });
        }
    }
    Ok(out)
}
