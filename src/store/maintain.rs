//! Store maintenance: `cache gc` (remove what no receipt references) and `cache verify`
//! (re-hash every blob).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Store;
use super::cas::{CasError, Stamp, hash_file, sha256_file};
use crate::fsx::{PathIo, at};
use crate::manifest::{Digest, DigestAlgo};

/// What `cache gc` removed.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Trees removed.
    pub trees: usize,
    /// Temporary files, partial downloads and leftovers of killed installs removed.
    pub tmp: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Blobs kept (referenced by a toolchain.lock).
    pub kept: usize,
}

/// What `cache verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Blobs checked.
    pub checked: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Blobs whose content does not match their name.
    pub corrupt: Vec<Corrupt>,
}

/// A blob whose content does not match its name.
#[derive(Debug, Serialize)]
pub struct Corrupt {
    /// Its path.
    pub path: PathBuf,
    /// The digest its name says.
    pub expected: String,
    /// The digest of its content.
    pub actual: String,
}

/// Every blob file: (its digest from the path, the path).
fn blobs(store: &Store) -> Result<Vec<(Digest, PathBuf)>, CasError> {
    let mut out = Vec::new();
    for (algo, name) in [
        (DigestAlgo::Sha256, "sha256"),
        (DigestAlgo::Sha512, "sha512"),
    ] {
        let dir = store.layout().blobs_dir().join(name);
        for prefix in read_dir(&dir)? {
            for file in read_dir(&prefix)? {
                let hex = file.file_name().map(|n| n.to_string_lossy().into_owned());
                match hex.and_then(|h| Digest::new(algo, &h).ok()) {
                    Some(d) => out.push((d, file)),
                    // Not a blob name (a stray file): gc removes it, verify names it as corrupt
                    // (no content can hash to the all-zero digest it is given here).
                    None => out.push((Digest::sha256_of(&[0; 32]), file)),
                }
            }
        }
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, CasError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v = Vec::new();
            for e in rd {
                v.push(e.map_err(at::<CasError>("cannot read", dir))?.path());
            }
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(at::<CasError>("cannot read", dir)(e)),
    }
}

fn size_of(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .map(|m| m.len())
        .unwrap_or(0)
}

fn remove_file(path: &Path) -> Result<(), CasError> {
    // Blobs are read-only files in writable directories: removing needs no chmod.
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CasError::Io(PathIo {
            action: "cannot remove",
            path: path.to_owned(),
            source: e,
        })),
    }
}

/// Remove every blob, tree and temporary file whose digest is not in `keep` (what the
/// toolchains' receipts reference: the store knows no receipts). The caller holds the store's
/// exclusive lock, so no install is running.
pub fn gc(store: &Store, keep: &BTreeSet<Digest>) -> Result<GcReport, CasError> {
    // An artifact pinned by sha512 is stored under its sha256 too: keep both names.
    let mut keep_sha256 = keep.clone();
    for d in keep {
        if d.algo() == DigestAlgo::Sha512
            && let Some(p) = store.get(d)
        {
            keep_sha256.insert(sha256_file(&p)?.0);
        }
    }
    let mut report = GcReport::default();
    for (d, path) in blobs(store)? {
        if keep_sha256.contains(&d) {
            report.kept += 1;
            continue;
        }
        report.bytes += size_of(&path);
        remove_file(&path)?;
        report.blobs += 1;
    }
    // Stamps of blobs that are gone (removed above, or by hand) describe nothing.
    for stamp in read_dir(&store.layout().stamps_dir())? {
        let name = stamp
            .file_name()
            .map(|n| n.to_string_lossy().replacen('-', ":", 1))
            .unwrap_or_default();
        let live = name
            .parse::<Digest>()
            .is_ok_and(|d| store.layout().blob_path(&d).is_file());
        if !live {
            remove_file(&stamp)?;
        }
    }
    // Trees are named after their archive's digest.
    for tree in read_dir(&store.layout().trees_dir())? {
        let name = tree
            .file_name()
            .map(|n| n.to_string_lossy().replacen('-', ":", 1))
            .unwrap_or_default();
        let referenced = name
            .parse::<Digest>()
            .is_ok_and(|d| keep_sha256.contains(&d));
        if !referenced {
            std::fs::remove_dir_all(&tree).map_err(at::<CasError>("cannot remove", &tree))?;
            report.trees += 1;
        }
    }
    // Partial downloads and staging leftovers; lock files stay (another process may wait on one).
    for entry in read_dir(&store.layout().tmp_dir())? {
        if entry.file_name().is_some_and(|n| n == "locks") {
            continue;
        }
        report.bytes += size_of(&entry);
        if entry.is_dir() {
            std::fs::remove_dir_all(&entry).map_err(at::<CasError>("cannot remove", &entry))?;
        } else {
            remove_file(&entry)?;
        }
        report.tmp += 1;
    }
    // Hidden entries in toolchains/ are staging, set-aside or half-removed toolchains of a kbin
    // that was killed (a live one holds the shared lock, so none runs now). Their hardlinks would
    // otherwise keep removed blobs' bytes on disk for ever.
    for entry in read_dir(&store.layout().toolchains_dir())? {
        if !entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if entry.is_dir() {
            std::fs::remove_dir_all(&entry).map_err(at::<CasError>("cannot remove", &entry))?;
        } else {
            remove_file(&entry)?;
        }
        report.tmp += 1;
    }
    Ok(report)
}

/// Re-hash every blob and name each one whose content does not match its name.
pub fn verify(store: &Store) -> Result<VerifyReport, CasError> {
    let mut report = VerifyReport::default();
    for (d, path) in blobs(store)? {
        let before = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| Stamp::of_meta(&m));
        let (actual, size) = match d.algo() {
            DigestAlgo::Sha256 => sha256_file(&path)?,
            DigestAlgo::Sha512 => {
                // Streamed: a sha512 alias can be a 100 MB binary.
                let h = hash_file(&path, Some(DigestAlgo::Sha512))?;
                let d512 = h.sha512.expect("hash_file computes the asked algorithm");
                (d512, h.size)
            }
        };
        report.checked += 1;
        report.bytes += size;
        let named = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if actual.hex() == named {
            // Hashed just now: its fresh stamp spares the next install a read (only if nothing
            // moved while it was read).
            let after = std::fs::symlink_metadata(&path)
                .ok()
                .map(|m| Stamp::of_meta(&m));
            if before.is_some() && before == after {
                store.write_stamp(&d, &path);
            }
        } else {
            report.corrupt.push(Corrupt {
                path,
                expected: format!("{}:{named}", d.algo().as_str()),
                actual: actual.to_string(),
            });
        }
    }
    Ok(report)
}

/// Remove the corrupt blobs `report` names, and their stamps (`cache verify --repair`): what a
/// toolchain needs of them is then fetched or unpacked again.
pub fn discard_corrupt(store: &Store, report: &VerifyReport) -> Result<(), CasError> {
    for c in &report.corrupt {
        if let Ok(d) = c.expected.parse::<Digest>() {
            remove_file(&store.layout().blob_stamp(&d))?;
        }
        remove_file(&c.path)?;
    }
    Ok(())
}
