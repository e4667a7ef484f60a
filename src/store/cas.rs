//! The content-addressed store: immutable, read-only blobs named by their digest, and the locks
//! that let several kbin processes share it.
//!
//! Every blob is keyed by its sha256. A blob verified against a sha512 pin (the Kubernetes
//! tarballs) also gets a hardlink at its sha512 path, so a later lookup by that pin hits the cache.
//! Nothing unverified ever sits at a blob path: files are hashed, verified, fsynced, then renamed.
//!
//! A blob can still be damaged afterwards, by hand or by a write through one of its hardlinks in a
//! toolchain. So every use goes through [`Store::check`]: the blob's [`Stamp`] (size, mtime,
//! ctime, inode) recorded when its bytes were last hashed is compared with its stat, and the blob
//! is hashed again when they differ. A damaged blob is removed, so it is fetched again, never
//! linked or reported verified.

use std::fs::File;
use std::io::{Read, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256, Sha512};

use super::Layout;
use crate::fsx::{PathIo, at};
use crate::manifest::{Digest, DigestAlgo};

/// Errors of the content-addressed store.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// A file's content does not match the digest it must have.
    #[error("{path} has digest {actual}, expected {expected}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The digest it must have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
}

/// The sha256 (and sha512) of a file, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    /// sha256 of the content.
    pub sha256: Digest,
    /// sha512 of the content, when it was asked for.
    pub sha512: Option<Digest>,
    /// Size in bytes.
    pub size: u64,
}

impl FileDigests {
    /// The digest of the algorithm `algo`, if it was computed.
    pub fn get(&self, algo: DigestAlgo) -> Option<&Digest> {
        match algo {
            DigestAlgo::Sha256 => Some(&self.sha256),
            DigestAlgo::Sha512 => self.sha512.as_ref(),
        }
    }
}

/// Files at least this large are hashed through a memory map instead of `read`.
const MAP_AT: u64 = 4 << 20;

/// Feed a file to `update` in 1 MiB chunks; returns its size.
///
/// With `immutable`, a large file is mapped, not read: hashing is most of what verifying an
/// artifact costs, and `read` copies every byte from the page cache first (an eighth of the CPU
/// of a `mirror export`, measured). Only for files nobody truncates while they are hashed (store
/// blobs: read-only, replaced by rename, never changed in place; temporary files kbin alone
/// writes): a mapped file that shrinks kills the process (SIGBUS).
fn read_chunks(
    path: &Path,
    immutable: bool,
    mut update: impl FnMut(&[u8]),
) -> Result<u64, CasError> {
    let mut f = File::open(path).map_err(at::<CasError>("cannot open", path))?;
    let len = f
        .metadata()
        .map_err(at::<CasError>("cannot read the size of", path))?
        .len();
    if immutable && len >= MAP_AT {
        // SAFETY: the caller vouches that nobody changes the file while it is mapped (above).
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(at::<CasError>("cannot map", path))?;
        // Advice only: a refusal changes nothing but speed.
        let _ = map.advise(memmap2::Advice::Sequential);
        for chunk in map.chunks(1 << 20) {
            update(chunk);
        }
        return Ok(map.len() as u64);
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(at::<CasError>("cannot read", path))?;
        if n == 0 {
            return Ok(size);
        }
        update(&buf[..n]);
        size += n as u64;
    }
}

/// Hash a file with sha256 only (the common case: blob keys, `cache verify`).
pub fn sha256_file(path: &Path) -> Result<(Digest, u64), CasError> {
    let mut h = Sha256::new();
    let size = read_chunks(path, false, |b| h.update(b))?;
    Ok((Digest::sha256_of(&h.finalize()), size))
}

/// Hash a file with sha256 and, when `also` is sha512, sha512 too (one read).
pub fn hash_file(path: &Path, also: Option<DigestAlgo>) -> Result<FileDigests, CasError> {
    hash_with(path, also, false)
}

/// [`hash_file`] for a file nobody changes while it is hashed (a store blob, or a temporary file
/// only kbin writes): a large one is mapped instead of read, which is faster.
pub fn hash_immutable(path: &Path, also: Option<DigestAlgo>) -> Result<FileDigests, CasError> {
    hash_with(path, also, true)
}

fn hash_with(
    path: &Path,
    also: Option<DigestAlgo>,
    immutable: bool,
) -> Result<FileDigests, CasError> {
    let (mut a, mut b) = (
        Sha256::new(),
        (also == Some(DigestAlgo::Sha512)).then(Sha512::new),
    );
    let size = read_chunks(path, immutable, |chunk| {
        a.update(chunk);
        if let Some(b) = b.as_mut() {
            b.update(chunk);
        }
    })?;
    Ok(FileDigests {
        sha256: Digest::sha256_of(&a.finalize()),
        sha512: b.map(|b| Digest::sha512_of(&b.finalize())),
        size,
    })
}

/// A file's size, mtime, ctime and inode when its bytes were last hashed.
///
/// Any write to a blob (through the store or through a hardlink in a toolchain) moves its mtime
/// and ctime, so an equal stamp means the bytes were not rewritten and need no second read. The
/// ctime is there because the mtime alone can be put back (`touch -d`) after a same-size rewrite;
/// the ctime cannot be set. Making or removing a hardlink (every install, uninstall and `cache gc`
/// does) moves the ctime too, but with the link count: see [`Stamp::vouches_for`]. Kept in
/// `cache/verified/<algo>-<hex>` as one line:
///
/// ```text
/// verified size=<n> mtime_ns=<n> ctime_ns=<n> dev=<n> ino=<n> nlink=<n>
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    dev: u64,
    ino: u64,
    nlink: u64,
}

impl Stamp {
    /// The stamp of a file's metadata (taken without following a symlink).
    pub fn of_meta(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
        }
    }

    /// Whether `now` (a stat taken now) shows the bytes this stamp (taken when they were hashed)
    /// describes: equal, or equal but for a ctime that moved with the link count (a hardlink
    /// made or removed). A rewrite changes no link count, and the chmod a read-only blob needs
    /// before it can be rewritten moves the ctime alone, so both still mean hashing again.
    pub fn vouches_for(&self, now: &Stamp) -> bool {
        self == now || (self.same_but_ctime(now) && self.nlink != now.nlink)
    }

    /// The size the stamp records.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Equal but for the ctime: the inode was only linked or unlinked (which moves the ctime),
    /// its bytes and mtime untouched.
    fn same_but_ctime(&self, other: &Stamp) -> bool {
        (self.size, self.mtime_ns, self.dev, self.ino)
            == (other.size, other.mtime_ns, other.dev, other.ino)
    }

    fn render(&self) -> String {
        format!(
            "verified size={} mtime_ns={} ctime_ns={} dev={} ino={} nlink={}\n",
            self.size, self.mtime_ns, self.ctime_ns, self.dev, self.ino, self.nlink
        )
    }

    fn parse(text: &str) -> Option<Stamp> {
        let mut f = text.trim_end().strip_prefix("verified ")?.split(' ');
        let mut field = |name: &str| f.next()?.strip_prefix(name)?.strip_prefix('=');
        Some(Stamp {
            size: field("size")?.parse().ok()?,
            mtime_ns: field("mtime_ns")?.parse().ok()?,
            ctime_ns: field("ctime_ns")?.parse().ok()?,
            dev: field("dev")?.parse().ok()?,
            ino: field("ino")?.parse().ok()?,
            nlink: field("nlink")?.parse().ok()?,
        })
    }
}

/// What [`Store::check`] found for a digest.
#[derive(Debug)]
pub enum Checked {
    /// The blob is there and its bytes have its digest.
    Intact(PathBuf),
    /// The store has no blob with that digest.
    Missing,
    /// The blob was damaged; it has been removed from the store (so it is fetched again).
    Damaged(DamagedBlob),
}

/// A blob whose bytes no longer have its digest (removed from the store when found).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DamagedBlob {
    /// Where it was.
    pub path: PathBuf,
    /// The digest its name says.
    pub expected: Digest,
    /// The digest of its content (absent when it was not a regular file).
    pub actual: Option<Digest>,
    /// Its size.
    pub size: u64,
}

impl std::fmt::Display for DamagedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.actual {
            Some(a) => write!(
                f,
                "{} is damaged: {} bytes with digest {a}, not {}",
                self.path.display(),
                self.size,
                self.expected
            ),
            None => write!(f, "{} is not a regular file", self.path.display()),
        }
    }
}

/// A held file lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Lock `path` (created if missing), shared or exclusive, waiting for other holders.
/// `on_wait` is called once if the lock is contended, so the caller can say what it waits for.
pub fn lock_file(
    path: &Path,
    exclusive: bool,
    on_wait: impl FnOnce(),
) -> Result<FileLock, CasError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(at::<CasError>("cannot create", dir))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(at::<CasError>("cannot open the lock", path))?;
    // std's flock-based locks: released by the kernel if the process dies, so a killed kbin
    // never leaves a stale lock behind.
    let got = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    if got.is_err() {
        on_wait();
        if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        }
        .map_err(at::<CasError>("cannot lock", path))?;
    }
    Ok(FileLock {
        file,
        path: path.to_owned(),
    })
}

/// The content-addressed store under `$KBIN_HOME/cache`.
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
}

impl Store {
    /// Open the store, creating KBIN_HOME's directories on first use.
    pub fn open(layout: Layout) -> Result<Self, super::StoreError> {
        layout.ensure()?;
        Ok(Store { layout })
    }

    /// The store of `layout` for reading (`show-versions`): nothing is created.
    pub fn existing(layout: Layout) -> Self {
        Store { layout }
    }

    /// The layout it lives in.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The blob with `digest`, if the store has it.
    pub fn get(&self, digest: &Digest) -> Option<PathBuf> {
        let p = self.layout.blob_path(digest);
        p.is_file().then_some(p)
    }

    /// The blob with `digest`, checked before use: taken as is when its stat is the [`Stamp`]
    /// recorded when it was last hashed, else hashed again. A damaged blob (other bytes, or not
    /// a regular file) is removed, with its stamp, so nothing links or serves it again.
    pub fn check(&self, digest: &Digest) -> Result<Checked, CasError> {
        let path = self.layout.blob_path(digest);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checked::Missing),
            Err(e) => return Err(at::<CasError>("cannot stat", &path)(e)),
        };
        if !meta.is_file() {
            self.discard(digest, &path)?;
            return Ok(Checked::Damaged(DamagedBlob {
                path,
                expected: digest.clone(),
                actual: None,
                size: meta.len(),
            }));
        }
        let now = Stamp::of_meta(&meta);
        if let Some(recorded) = self.stamp(digest)
            && recorded.vouches_for(&now)
        {
            if recorded != now {
                // Only linked or unlinked since: the stamp follows, so the ctime guards again.
                self.restamp_if(digest, &path, &now);
            }
            return Ok(Checked::Intact(path));
        }
        // Read, not mapped: a damaged blob may be being truncated while it is hashed.
        let h = hash_file(&path, Some(digest.algo()))?;
        let actual = h
            .get(digest.algo())
            .expect("hash_file computes the asked algorithm")
            .clone();
        if actual == *digest {
            // Stamped only if nothing moved while it was hashed: the stamp must describe the
            // bytes that were read.
            self.restamp_if(digest, &path, &now);
            return Ok(Checked::Intact(path));
        }
        self.discard(digest, &path)?;
        Ok(Checked::Damaged(DamagedBlob {
            path,
            expected: digest.clone(),
            actual: Some(actual),
            size: h.size,
        }))
    }

    /// Whether `meta` (a toolchain file's, taken without following symlinks) is the blob of
    /// `digest` as last verified: the same inode, size, mtime and ctime as its stamp.
    pub fn matches_stamp(&self, digest: &Digest, meta: &std::fs::Metadata) -> bool {
        let now = Stamp::of_meta(meta);
        match self.stamp(digest) {
            Some(recorded) if recorded == now => true,
            Some(recorded) if recorded.vouches_for(&now) => {
                // Only linked or unlinked since (the blob's own inode): the stamp follows.
                self.restamp_if(digest, &self.layout.blob_path(digest), &now);
                true
            }
            _ => false,
        }
    }

    /// After `digest`'s blob was hardlinked somewhere (which moves its ctime and nothing else):
    /// carry its stamp over, if the stamp was current but for the ctime, so the new link costs
    /// no second hash.
    pub fn relinked(&self, digest: &Digest) {
        let path = self.layout.blob_path(digest);
        if let (Some(old), Ok(m)) = (self.stamp(digest), std::fs::symlink_metadata(&path))
            && old.same_but_ctime(&Stamp::of_meta(&m))
        {
            self.write_stamp(digest, &path);
        }
    }

    /// Record `path`'s current stat as the stamp of `digest`, whose bytes were just hashed. A
    /// stamp only saves work (a missing one means hashing again), so failing to write one is
    /// logged, not an error: a read-only KBIN_HOME still installs from its cache.
    pub fn write_stamp(&self, digest: &Digest, path: &Path) {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return;
        };
        let stamp_path = self.layout.blob_stamp(digest);
        let written = (|| -> std::io::Result<()> {
            let dir = stamp_path
                .parent()
                .expect("stamp paths have a parent directory");
            std::fs::create_dir_all(dir)?;
            // No fsync: a stamp lost in a crash is a hash more, never a wrong answer (a torn
            // one does not parse).
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(Stamp::of_meta(&m).render().as_bytes())?;
            tmp.persist(&stamp_path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = written {
            tracing::debug!("cannot record the stamp {}: {e}", stamp_path.display());
        }
    }

    /// [`Store::write_stamp`] only if `path`'s stat is still `expected` (the one the caller
    /// vouched for: a file that moved since, or another inode at the path, is not stamped).
    fn restamp_if(&self, digest: &Digest, path: &Path, expected: &Stamp) {
        if std::fs::symlink_metadata(path).is_ok_and(|m| Stamp::of_meta(&m) == *expected) {
            self.write_stamp(digest, path);
        }
    }

    fn stamp(&self, digest: &Digest) -> Option<Stamp> {
        Stamp::parse(&std::fs::read_to_string(self.layout.blob_stamp(digest)).ok()?)
    }

    /// Remove a damaged blob and its stamp.
    fn discard(&self, digest: &Digest, path: &Path) -> Result<(), CasError> {
        let _ = std::fs::remove_file(self.layout.blob_stamp(digest));
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(at::<CasError>("cannot remove the damaged blob", path)(e)),
        }
    }

    /// A new empty temp file in `cache/tmp` (same filesystem as the blobs).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, CasError> {
        let dir = self.layout.tmp_dir();
        // Owner-only while it is written; insert_* makes the blob read-only for all.
        let (file, path) = crate::fsx::temp_in(&dir, 0o600)?;
        Ok(tempfile::NamedTempFile::from_parts(file, path))
    }

    /// Move the complete file `src` (on the same filesystem, usually in `cache/tmp`) into the
    /// store. Its content is hashed here; if `expected` is given and differs, `src` is deleted
    /// and nothing is stored. Returns the blob's sha256. If the blob exists already, `src` is
    /// removed and the existing blob kept.
    pub fn insert_file(&self, src: &Path, expected: Option<&Digest>) -> Result<Digest, CasError> {
        let digests = hash_file(src, expected.map(Digest::algo))?;
        self.insert_hashed(src, &digests, expected)
    }

    /// [`Store::insert_file`] for a file whose digests the caller computed while writing it
    /// (a download hashed while streaming): no second read.
    pub fn insert_hashed(
        &self,
        src: &Path,
        digests: &FileDigests,
        expected: Option<&Digest>,
    ) -> Result<Digest, CasError> {
        if let Some(exp) = expected {
            // A caller that hashed without the expected algorithm gets it computed here.
            let owned;
            let actual = match digests.get(exp.algo()) {
                Some(d) => d,
                None => {
                    owned = hash_file(src, Some(exp.algo()))?;
                    owned
                        .get(exp.algo())
                        .expect("hash_file computes the asked algorithm")
                }
            };
            if actual != exp {
                let _ = std::fs::remove_file(src);
                return Err(CasError::Mismatch {
                    path: src.to_owned(),
                    expected: exp.clone(),
                    actual: actual.clone(),
                });
            }
        }
        let dest = self.layout.blob_path(&digests.sha256);
        // A blob already there is kept only if it is intact: a damaged one is removed by the
        // check and replaced by these verified bytes.
        if matches!(self.check(&digests.sha256)?, Checked::Intact(_)) {
            let _ = std::fs::remove_file(src);
        } else {
            let dir = dest.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir).map_err(at::<CasError>("cannot create", dir))?;
            // Blobs are executables or archives: readable and executable by all, writable by none.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(src, std::fs::Permissions::from_mode(0o555)).map_err(at::<
                CasError,
            >(
                "cannot chmod",
                src,
            ))?;
            crate::fsx::persist_path(src, &dest)?;
            // Just hashed (by the caller, while writing it): its stamp saves the next read.
            self.write_stamp(&digests.sha256, &dest);
        }
        if let Some(exp) = expected
            && exp.algo() != DigestAlgo::Sha256
        {
            let alias = self.layout.blob_path(exp);
            if !alias.exists() {
                let dir = alias.parent().expect("blob paths have a parent");
                std::fs::create_dir_all(dir).map_err(at::<CasError>("cannot create", dir))?;
                match std::fs::hard_link(&dest, &alias) {
                    Ok(()) => {
                        self.write_stamp(exp, &alias);
                        self.relinked(&digests.sha256);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(at::<CasError>("cannot link", &alias)(e)),
                }
            }
        }
        Ok(digests.sha256.clone())
    }

    /// Copy `src` (anywhere) into the store and return its sha256; `src` is left as it is.
    pub fn insert_copy(&self, src: &Path) -> Result<Digest, CasError> {
        let tmp = self.temp_file()?;
        std::fs::copy(src, tmp.path()).map_err(at::<CasError>("cannot copy", src))?;
        let (file, path) = tmp
            .keep()
            .map_err(|e| at::<CasError>("cannot keep", src)(e.error))?;
        drop(file);
        self.insert_file(&path, None)
    }

    /// Shared lock on KBIN_HOME: held by installs and builds; `cache gc` takes it exclusively.
    pub fn lock_shared(&self, on_wait: impl FnOnce()) -> Result<FileLock, CasError> {
        lock_file(&self.layout.lock_path(), false, on_wait)
    }

    /// Exclusive lock on KBIN_HOME (for `cache gc`).
    pub fn lock_exclusive(&self, on_wait: impl FnOnce()) -> Result<FileLock, CasError> {
        lock_file(&self.layout.lock_path(), true, on_wait)
    }

    /// An exclusive lock named `key` (e.g. an artifact's digest or URL hash), so that two
    /// processes never download or build the same thing at once: the second waits, then finds
    /// the blob in the store.
    pub fn lock_key(&self, key: &str, on_wait: impl FnOnce()) -> Result<FileLock, CasError> {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        lock_file(&self.layout.key_lock(&safe), true, on_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(Layout::new(d.path().join("home"))).unwrap();
        (d, s)
    }

    #[test]
    fn mapped_and_read_hashes_agree_with_sha256sum_on_either_side_of_the_map_threshold() {
        let d = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            MAP_AT as usize - 1,
            MAP_AT as usize,
            MAP_AT as usize + (1 << 20) + 7,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = d.path().join(format!("f{len}"));
            std::fs::write(&p, &bytes).unwrap();
            let sum = std::process::Command::new("sha256sum")
                .arg(&p)
                .output()
                .unwrap();
            let want = String::from_utf8(sum.stdout).unwrap();
            let want = want.split_whitespace().next().unwrap().to_owned();
            for h in [
                hash_file(&p, Some(DigestAlgo::Sha512)).unwrap(),
                hash_immutable(&p, Some(DigestAlgo::Sha512)).unwrap(),
            ] {
                assert_eq!(h.sha256.hex(), want, "{len} bytes");
                assert_eq!(h.size, len as u64);
                assert_eq!(
                    h.sha512.unwrap(),
                    Digest::sha512_of(&Sha512::digest(&bytes)),
                    "{len} bytes"
                );
            }
        }
    }

    #[test]
    fn inserted_blob_is_read_only_and_found_by_digest() {
        let (_d, s) = store();
        let tmp = s.temp_file().unwrap().into_temp_path().keep().unwrap();
        std::fs::write(&tmp, b"hello").unwrap();
        let d = s.insert_file(&tmp, None).unwrap();
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let p = s.get(&d).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert!(std::fs::metadata(&p).unwrap().permissions().readonly());
        assert!(!tmp.exists());
    }

    #[test]
    fn mismatching_content_is_deleted_and_not_stored() {
        let (_d, s) = store();
        let tmp = s.temp_file().unwrap().into_temp_path().keep().unwrap();
        std::fs::write(&tmp, b"evil").unwrap();
        let want: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        let e = s.insert_file(&tmp, Some(&want)).unwrap_err();
        assert!(matches!(e, CasError::Mismatch { .. }), "{e}");
        assert!(!tmp.exists());
        let blobs = walk(&s.layout().blobs_dir());
        assert!(blobs.is_empty(), "{blobs:?}");
    }

    #[test]
    fn sha512_pinned_blob_is_found_by_its_pin() {
        let (_d, s) = store();
        let tmp = s.temp_file().unwrap().into_temp_path().keep().unwrap();
        std::fs::write(&tmp, b"hello").unwrap();
        let pin = Digest::sha512_of(&Sha512::digest(b"hello"));
        let d = s.insert_file(&tmp, Some(&pin)).unwrap();
        assert_eq!(d.algo(), DigestAlgo::Sha256);
        assert_eq!(std::fs::read(s.get(&pin).unwrap()).unwrap(), b"hello");
    }

    #[test]
    fn inserting_an_existing_blob_keeps_the_first() {
        let (_d, s) = store();
        let src = s.layout().root().join("x");
        std::fs::write(&src, b"same").unwrap();
        let a = s.insert_copy(&src).unwrap();
        let b = s.insert_copy(&src).unwrap();
        assert_eq!(a, b);
        assert!(src.exists());
        assert!(
            walk(&s.layout().tmp_dir())
                .iter()
                .all(|p| p.extension().is_none_or(|e| e == "lock"))
        );
    }

    #[test]
    fn a_blob_rewritten_after_it_was_stamped_is_found_damaged_and_removed() {
        let (_d, s) = store();
        let tmp = s.temp_file().unwrap().into_temp_path().keep().unwrap();
        std::fs::write(&tmp, b"hello world").unwrap();
        let d = s.insert_file(&tmp, None).unwrap();
        // Stamped on insert: checked without a read.
        let p = match s.check(&d).unwrap() {
            Checked::Intact(p) => p,
            other => panic!("{other:?}"),
        };
        assert!(s.layout().blob_stamp(&d).is_file());
        // Same size, other bytes, mtime put back: only the ctime tells.
        let m = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&p, b"HELLO WORLD").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(m.modified().unwrap()).unwrap();
        drop(f);
        match s.check(&d).unwrap() {
            Checked::Damaged(bad) => {
                assert_eq!(bad.path, p);
                assert_eq!(bad.size, 11);
                assert!(bad.to_string().contains("is damaged: 11 bytes"), "{bad}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!p.exists() && !s.layout().blob_stamp(&d).exists());
        assert!(matches!(s.check(&d).unwrap(), Checked::Missing));
    }

    #[test]
    fn a_stamp_vouches_across_a_link_made_or_removed_but_not_across_a_chmod() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let stat = |p: &Path| Stamp::of_meta(&std::fs::symlink_metadata(p).unwrap());
        let first = stat(&p);
        // ctime has a coarse clock on some filesystems: make sure it can move.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::hard_link(&p, d.path().join("link")).unwrap();
        let linked = stat(&p);
        assert!(first.vouches_for(&linked), "{first:?} {linked:?}");
        std::fs::remove_file(d.path().join("link")).unwrap();
        let unlinked = stat(&p);
        assert!(linked.vouches_for(&unlinked));
        // A chmod (what rewriting a read-only blob takes first) moves the ctime alone.
        std::thread::sleep(std::time::Duration::from_millis(20));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let chmodded = stat(&p);
        assert!(
            !unlinked.vouches_for(&chmodded),
            "{unlinked:?} {chmodded:?}"
        );
    }

    #[test]
    fn a_blob_without_a_stamp_is_hashed_once_then_stamped() {
        let (_d, s) = store();
        let tmp = s.temp_file().unwrap().into_temp_path().keep().unwrap();
        std::fs::write(&tmp, b"x").unwrap();
        let d = s.insert_file(&tmp, None).unwrap();
        std::fs::remove_file(s.layout().blob_stamp(&d)).unwrap();
        assert!(matches!(s.check(&d).unwrap(), Checked::Intact(_)));
        assert!(s.layout().blob_stamp(&d).is_file());
        // A hardlink moves the ctime only: `relinked` carries the stamp over.
        let link = s.layout().root().join("link");
        std::fs::hard_link(s.get(&d).unwrap(), &link).unwrap();
        s.relinked(&d);
        assert!(s.matches_stamp(&d, &std::fs::symlink_metadata(&link).unwrap()));
    }

    #[test]
    fn exclusive_key_lock_makes_the_second_holder_wait() {
        let (_d, s) = store();
        let first = s.lock_key("sha256:abc", || {}).unwrap();
        let s2 = s.clone();
        let (waiting, waits) = std::sync::mpsc::channel();
        let (taken, takes) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _l = s2
                .lock_key("sha256:abc", || waiting.send(()).unwrap())
                .unwrap();
            taken.send(()).unwrap();
        });
        // The second holder says it waits (it found the lock taken): only then let go.
        waits
            .recv()
            .expect("the second holder never reported waiting");
        assert!(
            takes.try_recv().is_err(),
            "the second took the lock while the first held it"
        );
        drop(first);
        takes.recv().expect("the second never took the lock");
        t.join().unwrap();
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.extend(walk(&p));
                } else {
                    out.push(p);
                }
            }
        }
        out
    }
}
