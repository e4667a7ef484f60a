//! Shared binaries bundles, paid for once.
//!
//! A `bundles/<role>-<arch>-binaries.tar.gz` holds the same ≈ 250 MB whatever the cluster, so it
//! is made once per content and kept in the store (KBIN_HOME): the bundle is an ordinary blob in
//! `cache/blobs/`, and `cache/bundles/<key>` ([`Layout::bundle_ref`]) names that blob, where the
//! key is the sha256 of what the bundle holds ([`bundle_key`]: each binary's digest, its path and
//! mode in the tarball, and the tarball format). An unchanged re-run, `kbin gen node`, or another
//! cluster from the same toolchain finds the ref, checks the blob (re-hashed unless its size,
//! mtime, ctime and inode are those recorded when it was last hashed: any write through any of
//! its names changes them; a damaged blob is removed and made again, never served), and hardlinks it
//! into the output tree (a copy across filesystems; nothing at all when the output already is
//! that file).
//!
//! Making one follows the store's rules: written in `cache/tmp` while hashed, fsynced, made
//! read-only and renamed into `cache/blobs` ([`Store::insert_hashed`]), then the ref is written
//! atomically. The KBIN_HOME lock is held shared (so `cache gc` cannot remove the blob under us)
//! and a lock per key makes a second kbin wait for the first one's bundle instead of compressing
//! the same bytes again. A KBIN_HOME this user cannot write (a toolchain shared read-only) only
//! loses the reuse: the bundle is then compressed straight into the output tree.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::fsx::{PathIo, at};
use crate::r#gen::Staged;
use crate::r#gen::deliver::tarball::{self, Entry};
use crate::r#gen::plan::versions::Versions;
use crate::manifest::Digest;
use crate::store::cas::{CasError, FileDigests, sha256_file};
use crate::store::{FileLock, Layout, Store, StoreError};

/// Errors making, checking or placing a shared bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleCacheError {
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// The store refused a blob or a lock.
    #[error(transparent)]
    Store(#[from] CasError),
    /// KBIN_HOME could not be opened.
    #[error("cannot keep the shared bundle in {home}")]
    Home {
        /// KBIN_HOME.
        home: PathBuf,
        /// The cause.
        #[source]
        source: StoreError,
    },
}

/// How a shared bundle got to its place in the output tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// From the store, checked: linked (or copied) into the tree, or already there.
    Reused,
    /// Compressed now, kept in the store, and linked into the tree.
    Made,
    /// Compressed now, straight into the tree (no KBIN_HOME to keep it in).
    Uncached,
}

/// A shared bundle in the output tree, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SharedBundle {
    /// Its path in the output tree.
    pub path: PathBuf,
    /// sha256 of its bytes (its blob in the store).
    pub digest: Digest,
    /// What it holds ([`bundle_key`]), when it is kept in the store.
    pub key: Option<Digest>,
    /// Reused, made, or made without a store.
    pub source: Source,
}

/// The key of a bundle: sha256 over the tarball format and one `<mode> <digest> <path>` line per
/// entry, in the tarball's order. Equal keys mean byte-identical tarballs.
pub fn bundle_key(entries: &[(String, u32, Digest)]) -> Digest {
    let mut h = Sha256::new();
    h.update(format!("kbin shared bundle\n{}\n", tarball::FORMAT));
    for (rel, mode, digest) in entries {
        h.update(format!("{mode:o} {digest} {rel}\n"));
    }
    Digest::sha256_of(&h.finalize())
}

/// Same device and inode: one file under two names.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The digest of each entry's bytes. The receipt's digest is taken as is when the file is the
/// store's blob of that digest (the toolchain hardlinks it: nothing to read); any other file is
/// hashed (a toolchain copied across filesystems, or edited by hand).
fn entry_digests(
    layout: &Layout,
    v: &Versions,
    entries: &[Entry],
) -> Result<Vec<(String, u32, Digest)>, BundleCacheError> {
    let mut recorded: BTreeMap<PathBuf, &Digest> = BTreeMap::new();
    if let Some(dir) = &v.toolchain_dir {
        for (name, rel) in &v.binaries {
            if let Some(d) = v.digests.get(name) {
                recorded.insert(dir.join(rel), d);
            }
        }
        for (rel, d) in v.image_archives.values() {
            recorded.insert(dir.join(rel), d);
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for (rel, mode, src) in entries {
        let digest = match recorded.get(src) {
            Some(d) if same_file(src, &layout.blob_path(d)) => (*d).clone(),
            _ => sha256_file(src)?.0,
        };
        out.push((rel.clone(), *mode, digest));
    }
    Ok(out)
}

/// A blob's size, mtime, ctime and inode when its bytes were last hashed. Any write to it
/// (through the store or through a hardlink in an output tree) changes its mtime and ctime, so
/// an equal stamp means the bytes were not rewritten and need no second read of ≈ 200 MB;
/// `kbin cache verify` re-hashes every blob whatever its stamp. The ctime is there because the
/// mtime alone can be put back (`touch -d`, a tool that preserves times) after a same-size
/// rewrite; the ctime cannot be set, and the chmod any rewrite of a read-only blob needs moves
/// it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> Result<Stamp, BundleCacheError> {
        let m = std::fs::metadata(path).map_err(at::<BundleCacheError>("cannot stat", path))?;
        Ok(Stamp {
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    fn render(&self) -> String {
        format!(
            "verified size={} mtime_ns={} ctime_ns={} dev={} ino={}",
            self.size, self.mtime_ns, self.ctime_ns, self.dev, self.ino
        )
    }

    fn parse(line: &str) -> Option<Stamp> {
        let mut f = line.strip_prefix("verified ")?.split(' ');
        let mut field = |name: &str| f.next()?.strip_prefix(name)?.strip_prefix('=');
        Some(Stamp {
            size: field("size")?.parse().ok()?,
            mtime_ns: field("mtime_ns")?.parse().ok()?,
            ctime_ns: field("ctime_ns")?.parse().ok()?,
            dev: field("dev")?.parse().ok()?,
            ino: field("ino")?.parse().ok()?,
        })
    }
}

/// Write the ref of `key`: the bundle's blob digest, then the blob's [`Stamp`] as just hashed.
fn write_ref(
    layout: &Layout,
    key: &Digest,
    digest: &Digest,
    blob: &Path,
) -> Result<(), BundleCacheError> {
    let text = format!("{digest}\n{}\n", Stamp::of(blob)?.render());
    crate::fsx::write_atomic(&layout.bundle_ref(key), text.as_bytes(), 0o644)?;
    Ok(())
}

/// The blob the ref of `key` names, if it exists and its bytes still have its digest: taken
/// as is when its stamp is the one recorded when it was last hashed, else hashed again. A
/// damaged blob is removed (with its ref), so it is never served again.
fn cached(store: &Store, key: &Digest) -> Result<Option<(Digest, PathBuf)>, BundleCacheError> {
    let ref_path = store.layout().bundle_ref(key);
    let text = match std::fs::read_to_string(&ref_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at::<BundleCacheError>("cannot read", &ref_path)(e)),
    };
    let mut lines = text.lines();
    let Some(Ok(digest)) = lines.next().map(|l| l.trim().parse::<Digest>()) else {
        tracing::warn!(
            "{} does not start with a digest: making the bundle again",
            ref_path.display()
        );
        return Ok(None);
    };
    let Some(blob) = store.get(&digest) else {
        // `cache gc` removed it: a miss.
        return Ok(None);
    };
    let recorded = lines.next().and_then(Stamp::parse);
    if recorded.is_some() && recorded == Some(Stamp::of(&blob)?) {
        return Ok(Some((digest, blob)));
    }
    let (actual, _) = sha256_file(&blob)?;
    if actual != digest {
        tracing::warn!(
            "{} has digest {actual}, expected {digest}: removing it and making the bundle again",
            blob.display()
        );
        remove(&blob)?;
        remove(&ref_path)?;
        return Ok(None);
    }
    // Touched but intact: remember it, so the next run does not read it again.
    write_ref(store.layout(), key, &digest, &blob)?;
    Ok(Some((digest, blob)))
}

fn remove(path: &Path) -> Result<(), BundleCacheError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at::<BundleCacheError>("cannot remove", path)(e)),
    }
}

/// Compress `entries` into the store; returns the blob's digest and path.
fn make(
    store: &Store,
    entries: &[Entry],
    path: &Path,
) -> Result<(Digest, PathBuf), BundleCacheError> {
    let tmp = store.temp_file()?;
    let w = tarball::write_tar_gz(tmp.as_file(), entries, path)?;
    let digests = FileDigests {
        sha256: w.sha256,
        sha512: None,
        size: w.size,
    };
    // A blob already at that name (its ref lost) is kept by the store: check it is not damaged.
    if let Some(existing) = store.get(&digests.sha256)
        && sha256_file(&existing)?.0 != digests.sha256
    {
        remove(&existing)?;
    }
    let tmp = tmp.into_temp_path();
    let digest = store.insert_hashed(&tmp, &digests, None)?;
    // Renamed into the store: nothing left for the temp path to delete.
    let _ = tmp.keep();
    let blob = store.layout().blob_path(&digest);
    Ok((digest, blob))
}

/// Stage `blob` for `path`: a hardlink beside it, renamed over it by the commit (a copy where
/// links fail, e.g. across filesystems), or nothing when `path` already is that file.
fn place(blob: &Path, path: &Path, staged: &Staged) -> Result<(), BundleCacheError> {
    if same_file(blob, path) {
        return Ok(());
    }
    // A missing bundles/ is made by the staged commit; until then the link waits above it.
    let dir = staged.temp_dir(path);
    let new = tempfile::Builder::new()
        .prefix(".tmp-")
        .make_in(dir, |p| std::fs::hard_link(blob, p));
    let tmp = match new {
        Ok(t) => t.into_temp_path(),
        Err(_) => {
            let t = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(dir)
                .map_err(at::<BundleCacheError>(
                    "cannot create a temporary file in",
                    dir,
                ))?;
            std::fs::copy(blob, t.path()).map_err(at::<BundleCacheError>("cannot copy", blob))?;
            t.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(at::<BundleCacheError>("cannot set the mode of", path))?;
            t.into_temp_path()
        }
    };
    staged.stage_written(tmp, path);
    Ok(())
}

/// Compress `entries` straight to `path`, with no store to keep the bundle in.
fn uncached(
    path: &Path,
    entries: &[Entry],
    staged: &Staged,
) -> Result<SharedBundle, BundleCacheError> {
    let (w, tmp) = tarball::write_temp(path, staged.temp_dir(path), entries, 0o644)?;
    staged.stage_written(tmp, path);
    Ok(SharedBundle {
        path: path.to_owned(),
        digest: w.sha256,
        key: None,
        source: Source::Uncached,
    })
}

/// Open the store of `layout` and take its shared lock: the bundle's blob is safe from
/// `cache gc` while the lock is held.
fn open_store(layout: &Layout) -> Result<(Store, FileLock), BundleCacheError> {
    let store = Store::open(layout.clone()).map_err(|source| BundleCacheError::Home {
        home: layout.root().to_owned(),
        source,
    })?;
    let lock = store.lock_shared(|| tracing::warn!("waiting for `kbin cache gc` to finish"))?;
    Ok((store, lock))
}

/// Put the shared bundle of `entries` (sorted, as they go in the tarball) at `path`: reused
/// from the store of the toolchain's KBIN_HOME when it holds one for the same content, else
/// made on every core and kept there. Without a KBIN_HOME (`v.home` is none), or one this user
/// cannot write (a toolchain shared read-only), it is only made.
pub fn shared_bundle(
    v: &Versions,
    path: &Path,
    entries: &[Entry],
    staged: &Staged,
) -> Result<SharedBundle, BundleCacheError> {
    let Some(layout) = &v.home else {
        return uncached(path, entries, staged);
    };
    let (store, _home) = match open_store(layout) {
        Ok(s) => s,
        Err(e) => {
            // Generating must not need write access to the toolchain's home: only the reuse
            // is lost.
            let mut why = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why = format!("{why}: {c}");
                cause = c.source();
            }
            tracing::warn!(
                "{why}; {} is made without the store (and will be made again next time)",
                path.display()
            );
            return uncached(path, entries, staged);
        }
    };
    let key = bundle_key(&entry_digests(layout, v, entries)?);
    // Another kbin making the same bundle: wait for it, then reuse its work.
    let _key = store.lock_key(&format!("bundle-{}", key.hex()), || {
        tracing::warn!("waiting for another kbin making {}", path.display())
    })?;
    let (digest, blob, source) = match cached(&store, &key)? {
        Some((digest, blob)) => (digest, blob, Source::Reused),
        None => {
            let (digest, blob) = make(&store, entries, path)?;
            // Hashed while written: its stamp is taken now.
            write_ref(layout, &key, &digest, &blob)?;
            (digest, blob, Source::Made)
        }
    };
    place(&blob, path, staged)?;
    Ok(SharedBundle {
        path: path.to_owned(),
        digest,
        key: Some(key),
        source,
    })
}
