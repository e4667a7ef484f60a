//! Safe extraction of release archives (`.tar.gz`): a whole tree into a directory that appears
//! at once, or just the named members (the binaries an install takes).
//!
//! An archive is data from the network, so nothing in it may write outside the target: entries
//! with absolute paths or `..` that climbs out, symlinks whose targets point outside, hardlinks
//! to anything but a file already extracted inside, entries written through a symlink, and
//! device files or fifos are refused, and so is the whole archive (nothing half-extracted
//! remains). The unpacked size and the entry count are capped ([`Limits`]) against
//! decompression bombs. Extraction is synchronous: call it from `spawn_blocking` in async code.
//!
//! Why the symlink rule is enough: a symlink target may only climb (`..`) at its start and must
//! stay inside lexically, and no entry is ever written through an existing symlink, so every
//! link sits at its lexical place and resolves inside the tree.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::manifest::Digest;

/// Errors of archive extraction. Every variant names the archive; refusals name the entry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An I/O error on a local path (the archive, the target directory).
    #[error(transparent)]
    Io(#[from] crate::fsx::PathIo),
    /// The archive is not a readable gzip-compressed tar.
    #[error("{archive} is not a valid .tar.gz")]
    Corrupt {
        /// The archive.
        archive: PathBuf,
        /// The decoder's complaint.
        #[source]
        source: std::io::Error,
    },
    /// An entry would write outside the target, or through a link.
    #[error("{archive}: refusing the entry {entry:?}: {reason}")]
    Unsafe {
        /// The archive.
        archive: PathBuf,
        /// The entry's path as stored.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry of a kind kbin never extracts (device, fifo, sparse file…).
    #[error("{archive}: refusing the entry {entry:?}: {kind} entries are not extracted")]
    Unsupported {
        /// The archive.
        archive: PathBuf,
        /// The entry's path as stored.
        entry: String,
        /// The entry's kind.
        kind: String,
    },
    /// The unpacked content exceeds [`Limits::max_bytes`].
    #[error("{archive} unpacks to more than {limit} bytes")]
    TooLarge {
        /// The archive.
        archive: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// Between two entries, tar's own records (long names, pax headers, the data of an entry
    /// that has none, such as a directory) took more than [`META_MAX`] bytes: a bomb meant to
    /// be read into memory.
    #[error("{archive}: more than {limit} bytes of tar records between two entries")]
    Records {
        /// The archive.
        archive: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// The archive has more than [`Limits::max_entries`] entries.
    #[error("{archive} has more than {limit} entries")]
    TooManyEntries {
        /// The archive.
        archive: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// A member asked for is not a regular file.
    #[error("{archive}: the member {member:?} is a {kind}, not a regular file")]
    NotAFile {
        /// The archive.
        archive: PathBuf,
        /// The member.
        member: String,
        /// Its kind.
        kind: String,
    },
}

impl ArchiveError {
    /// A suggestion for the user.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ArchiveError::Unsafe { .. } | ArchiveError::Unsupported { .. } => Some(
                "the archive is malformed or malicious; check where it came from (mirror, pin)",
            ),
            ArchiveError::Corrupt { .. } => Some("run `kbin cache verify`, then install again"),
            _ => None,
        }
    }
}

/// Caps that stop a hostile or broken archive from filling the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of file content the archive may unpack to. Default 8 GiB (the Kubernetes
    /// server tarball unpacks to about 1.5 GB).
    pub max_bytes: u64,
    /// Most entries. Default 100 000.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 8 << 30,
            max_entries: 100_000,
        }
    }
}

/// What a whole-tree extraction produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extracted {
    /// Regular files written (hardlinks included).
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// A member taken out of an archive by [`extract_members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's normalized path in the archive (`./bridge` → `bridge`).
    pub name: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its sha256, computed while it was written.
    pub sha256: Digest,
    /// Its permission bits from the archive (`0o755`).
    pub mode: u32,
}

/// [`crate::fsx::at`] into this module's error (so `?` needs no type annotation).
fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ArchiveError + 'a {
    crate::fsx::at(action, path)
}

/// The entry's path made relative and free of `.`/`..`, or why it cannot be.
pub fn enclosed_path(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err("it is an absolute path".into());
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("its `..` climbs out of the target".into());
                }
            }
            Component::Normal(s) => {
                if s.as_encoded_bytes().contains(&0) {
                    return Err("it contains a NUL byte".into());
                }
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Check a symlink at `link` (relative to the root) pointing to `target`: relative, `..` only
/// as leading components, and staying inside the root.
fn check_symlink_target(link: &Path, target: &Path) -> Result<(), String> {
    if target.as_os_str().is_empty() {
        return Err("the symlink has an empty target".into());
    }
    // Depth of the directory holding the link.
    let mut depth = link.components().count() as i64 - 1;
    let mut named = false;
    for c in target.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(format!(
                    "the symlink points to the absolute path {target:?}"
                ));
            }
            Component::CurDir => {}
            Component::ParentDir if named => {
                return Err(format!(
                    "the symlink target {target:?} has `..` after a name"
                ));
            }
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "the symlink target {target:?} points outside the target"
                    ));
                }
            }
            Component::Normal(s) => {
                if s.as_encoded_bytes().contains(&0) {
                    return Err("the symlink target contains a NUL byte".into());
                }
                named = true;
            }
        }
    }
    Ok(())
}

/// Make sure every directory leading to `rel` under `root` is a real directory (creating the
/// missing ones when `create`), never a symlink or a file.
fn real_parents(root: &Path, rel: &Path, create: bool) -> Result<(), String> {
    let mut dir = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        dir.push(c);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "it would be written through the symlink {:?}",
                    dir.strip_prefix(root).unwrap_or(&dir)
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "{:?} is a file, not a directory",
                    dir.strip_prefix(root).unwrap_or(&dir)
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                std::fs::create_dir(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
            }
            Err(e) => return Err(format!("cannot inspect {dir:?}: {e}")),
        }
    }
    Ok(())
}

fn kind_name(t: EntryType) -> String {
    match t {
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "fifo".into(),
        EntryType::GNUSparse => "sparse file".into(),
        EntryType::Symlink => "symlink".into(),
        EntryType::Link => "hardlink".into(),
        EntryType::Directory => "directory".into(),
        other => format!("{other:?}"),
    }
}

/// Most bytes tar may read between two entries for its own records (GNU long names, pax
/// headers, data skipped after a directory or link header). The tar crate reads long names and
/// pax headers into memory whole, so without this cap a gzip bomb of a long name would take
/// all of it.
pub const META_MAX: u64 = 1 << 20;

/// Counts the decompressed bytes of an archive: entry data, whether written or read past
/// (against [`Limits::max_bytes`]), and what tar reads for itself between entries (against
/// [`META_MAX`] each time, and room for the headers of [`Limits::max_entries`] in all).
#[derive(Debug, Default)]
struct Meter {
    /// Entry data read, whether written out or read past.
    content: std::cell::Cell<u64>,
    /// tar's records since the last entry.
    records: std::cell::Cell<u64>,
    /// tar's records in all.
    all_records: std::cell::Cell<u64>,
    /// tar is between entries: what it reads now is its own.
    between: std::cell::Cell<bool>,
}

/// Why the metered reader stopped (carried inside the `io::Error`).
#[derive(Debug, thiserror::Error)]
enum Exceeded {
    #[error("the archive unpacks to more than its limit")]
    Total,
    #[error("too many bytes of tar records between two entries")]
    Records,
}

/// The decompressed stream, counted by a [`Meter`].
struct Metered<R> {
    inner: R,
    meter: std::rc::Rc<Meter>,
    content_cap: u64,
    records_cap: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let m = &self.meter;
        if m.between.get() {
            m.records.set(m.records.get() + n as u64);
            m.all_records.set(m.all_records.get() + n as u64);
            if m.records.get() > META_MAX {
                return Err(std::io::Error::other(Exceeded::Records));
            }
            if m.all_records.get() > self.records_cap {
                return Err(std::io::Error::other(Exceeded::Total));
            }
        } else {
            m.content.set(m.content.get() + n as u64);
            if m.content.get() > self.content_cap {
                return Err(std::io::Error::other(Exceeded::Total));
            }
        }
        Ok(n)
    }
}

/// tar's entry iterator with each `next` (where tar reads its records) metered as such.
struct Entries<'a, I> {
    inner: I,
    meter: &'a Meter,
}

impl<T, I: Iterator<Item = T>> Iterator for Entries<'_, I> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.meter.records.set(0);
        self.meter.between.set(true);
        let next = self.inner.next();
        self.meter.between.set(false);
        next
    }
}

/// The decompressed, metered stream tar reads.
type GzStream = Metered<flate2::read::MultiGzDecoder<BufReader<File>>>;
type TarGz = tar::Archive<GzStream>;

/// Open `archive` as a tar.gz stream (multi-member gzip accepted), metered against `limits`.
fn open(archive: &Path, limits: &Limits) -> Result<(TarGz, std::rc::Rc<Meter>), ArchiveError> {
    let f = File::open(archive).map_err(io("cannot open", archive))?;
    let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f));
    let meter = std::rc::Rc::new(Meter::default());
    let metered = Metered {
        inner: gz,
        meter: meter.clone(),
        content_cap: limits.max_bytes,
        // A header, a long name and a long link per entry, plus one burst of records.
        records_cap: limits
            .max_entries
            .saturating_add(1)
            .saturating_mul(3 * 512)
            .saturating_add(META_MAX),
    };
    Ok((tar::Archive::new(metered), meter))
}

/// A read error of `archive`: the meter's refusals, else corruption.
fn read_error(archive: &Path, limits: &Limits, source: std::io::Error) -> ArchiveError {
    match source.get_ref().and_then(|e| e.downcast_ref::<Exceeded>()) {
        Some(Exceeded::Total) => ArchiveError::TooLarge {
            archive: archive.to_owned(),
            limit: limits.max_bytes,
        },
        Some(Exceeded::Records) => ArchiveError::Records {
            archive: archive.to_owned(),
            limit: META_MAX,
        },
        None => ArchiveError::Corrupt {
            archive: archive.to_owned(),
            source,
        },
    }
}

/// Running totals checked against the limits.
struct Budget<'a> {
    archive: &'a Path,
    limits: &'a Limits,
    entries: u64,
    bytes: u64,
}

impl Budget<'_> {
    fn entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                archive: self.archive.to_owned(),
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Bytes still allowed.
    fn left(&self) -> u64 {
        self.limits.max_bytes.saturating_sub(self.bytes)
    }

    fn too_large(&self) -> ArchiveError {
        ArchiveError::TooLarge {
            archive: self.archive.to_owned(),
            limit: self.limits.max_bytes,
        }
    }
}

/// Copy a file entry into a new file at `dest` (mode `mode`), hashing it, within the budget.
fn write_file(
    entry: &mut impl Read,
    size_hint: u64,
    dest: &Path,
    mode: u32,
    budget: &mut Budget<'_>,
    hasher: Option<&mut Sha256>,
) -> Result<u64, ArchiveError> {
    // Whatever the archive says, the owner can read what kbin unpacked.
    let mode = mode | 0o400;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)
        .map_err(io("cannot create", dest))?;
    // Sized to the entry (its header's word, capped): most members of a release are big, but
    // a small file needs no quarter-megabyte of zeroed buffer.
    let mut buf = vec![0u8; size_hint.clamp(8 << 10, 256 << 10) as usize];
    let mut written = 0u64;
    let mut hasher = hasher;
    // A hashed member is headed for the store, which fsyncs it: start its disk writes now.
    let mut writeback = hasher.is_some().then(crate::fsx::Writeback::default);
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|source| read_error(budget.archive, budget.limits, source))?;
        if n == 0 {
            break;
        }
        if n as u64 > budget.left() {
            return Err(budget.too_large());
        }
        budget.bytes += n as u64;
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        out.write_all(&buf[..n]).map_err(io("cannot write", dest))?;
        written += n as u64;
        if let Some(wb) = writeback.as_mut() {
            wb.wrote(&out, written);
        }
    }
    // Permissions again: create_new's mode is filtered by the umask.
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
        .map_err(io("cannot chmod", dest))?;
    Ok(written)
}

/// Remove whatever non-directory sits at `dest` (a later duplicate entry wins, as with tar);
/// refuse to replace a directory by something else.
fn clear_spot(dest: &Path, is_dir: bool) -> Result<bool, String> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_dir() => {
            if is_dir {
                Ok(true)
            } else {
                Err("it would replace a directory".into())
            }
        }
        Ok(_) => {
            std::fs::remove_file(dest).map_err(|e| format!("cannot replace {dest:?}: {e}"))?;
            Ok(false)
        }
        Err(_) => Ok(false),
    }
}

/// Extract the whole of `archive` (a .tar.gz) so that it appears at `dest` at once: entries go
/// into a temporary directory next to `dest` (same filesystem), which is renamed to `dest` when
/// everything succeeded. On any refusal or error the temporary directory is removed and `dest`
/// is untouched. If `dest` appears meanwhile (another process extracted the same archive), it
/// is kept and the result reports what this run unpacked.
pub fn extract_tar_gz(
    archive: &Path,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(parent)
        .map_err(io("cannot create a temporary directory in", parent))?;
    let done = unpack(archive, tmp.path(), limits)?;
    // tempfile makes the directory 0700; the tree is for everyone to read.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(io("cannot chmod", tmp.path()))?;
    let staged = tmp.keep();
    match std::fs::rename(&staged, dest) {
        Ok(()) => {
            crate::fsx::sync_dir(parent);
            Ok(done)
        }
        Err(e) if dest.is_dir() => {
            tracing::debug!("{dest:?} appeared meanwhile ({e}); keeping it");
            let _ = std::fs::remove_dir_all(&staged);
            Ok(done)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(io("cannot rename into", dest)(e))
        }
    }
}

fn unpack(archive: &Path, root: &Path, limits: &Limits) -> Result<Extracted, ArchiveError> {
    let mut done = Extracted::default();
    walk(archive, limits, |mut e| {
        let unsafe_ = |reason: String| e.unsafe_(reason);
        let dest = root.join(e.rel);
        // The rules were checked by `walk` on its model of the tree; the real_parents and
        // clear_spot checks on disk guard the same ground again where the bytes land.
        match &e.kind {
            Checked::Dir => {
                real_parents(root, e.rel, true).map_err(unsafe_)?;
                if !clear_spot(&dest, true).map_err(unsafe_)? {
                    std::fs::create_dir(&dest).map_err(io("cannot create", &dest))?;
                }
            }
            Checked::File => {
                real_parents(root, e.rel, true).map_err(unsafe_)?;
                clear_spot(&dest, false).map_err(unsafe_)?;
                let mode = e.entry.header().mode().unwrap_or(0o644) & 0o777;
                done.bytes += e.write_to(&dest, mode, None)?;
                done.files += 1;
            }
            Checked::Symlink(target) => {
                real_parents(root, e.rel, true).map_err(unsafe_)?;
                clear_spot(&dest, false).map_err(unsafe_)?;
                std::os::unix::fs::symlink(target, &dest)
                    .map_err(io("cannot create the symlink", &dest))?;
            }
            Checked::Hardlink(trel) => {
                real_parents(root, trel, false).map_err(unsafe_)?;
                let src = root.join(trel);
                real_parents(root, e.rel, true).map_err(unsafe_)?;
                clear_spot(&dest, false).map_err(unsafe_)?;
                std::fs::hard_link(&src, &dest).map_err(io("cannot create the hardlink", &dest))?;
                done.files += 1;
            }
        }
        Ok(())
    })?;
    Ok(done)
}

/// What an entry made, in [`Shadow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
}

/// The tree the archive's entries make so far, as a model: [`walk`] judges every entry against
/// it, so a whole extraction and a members-only one refuse exactly the same archives.
#[derive(Default)]
struct Shadow {
    made: std::collections::HashMap<PathBuf, Kind>,
}

impl Shadow {
    fn kind(&self, rel: &Path) -> Option<Kind> {
        self.made.get(rel).copied()
    }

    /// The directories leading to `rel`: each must be one (made when missing), as
    /// [`real_parents`] checks on disk.
    fn parents(&mut self, rel: &Path) -> Result<(), String> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut dir = PathBuf::new();
        for c in parent.components() {
            dir.push(c);
            match self.kind(&dir) {
                Some(Kind::Dir) => {}
                Some(Kind::Link) => {
                    return Err(format!("it would be written through the symlink {dir:?}"));
                }
                Some(Kind::File) => return Err(format!("{dir:?} is a file, not a directory")),
                None => {
                    self.made.insert(dir.clone(), Kind::Dir);
                }
            }
        }
        Ok(())
    }

    /// An entry of `kind` at `rel`: a directory replaces anything but a directory; anything
    /// else replaces anything but a directory, as [`clear_spot`] does on disk.
    fn place(&mut self, rel: &Path, kind: Kind) -> Result<(), String> {
        if kind != Kind::Dir && self.kind(rel) == Some(Kind::Dir) {
            return Err("it would replace a directory".into());
        }
        self.made.insert(rel.to_owned(), kind);
        Ok(())
    }
}

/// An entry that passed the rules, and what it is.
enum Checked {
    Dir,
    File,
    /// Its target, checked to stay inside.
    Symlink(PathBuf),
    /// Its target's enclosed path, a file made by an earlier entry.
    Hardlink(PathBuf),
}

/// One entry handed to [`walk`]'s visitor.
struct Visit<'a, 'b, 't, R: Read> {
    archive: &'a Path,
    entry: &'b mut tar::Entry<'t, R>,
    /// Its enclosed path.
    rel: &'b Path,
    /// Its path as the archive spells it.
    shown: &'b str,
    kind: Checked,
    budget: &'b mut Budget<'a>,
}

impl<R: Read> Visit<'_, '_, '_, R> {
    fn unsafe_(&self, reason: String) -> ArchiveError {
        ArchiveError::Unsafe {
            archive: self.archive.to_owned(),
            entry: self.shown.to_owned(),
            reason,
        }
    }

    /// Write this file entry's content to a new file at `dest`, within the budget.
    fn write_to(
        &mut self,
        dest: &Path,
        mode: u32,
        hasher: Option<&mut Sha256>,
    ) -> Result<u64, ArchiveError> {
        let size = self.entry.header().size().unwrap_or(0);
        if size > self.budget.left() {
            return Err(self.budget.too_large());
        }
        write_file(self.entry, size, dest, mode, self.budget, hasher)
    }

    /// Read past this entry's content, where its bytes count as content, not as tar's records.
    fn skip(&mut self) -> Result<(), ArchiveError> {
        std::io::copy(self.entry, &mut std::io::sink())
            .map_err(|source| read_error(self.archive, self.budget.limits, source))?;
        Ok(())
    }
}

/// Every entry of `archive`, judged by kbin's one set of archive rules — limits on entries,
/// bytes and tar records; paths enclosed; the target directory itself never named; nothing
/// written through a symlink or over a directory; symlinks pointing inside; hardlinks only to
/// files made before; no devices, fifos or other kinds — then handed to `visit`, in archive
/// order. pax headers are skipped.
fn walk<'a>(
    archive: &'a Path,
    limits: &'a Limits,
    mut visit: impl FnMut(Visit<'a, '_, '_, GzStream>) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let (mut tar, meter) = open(archive, limits)?;
    let corrupt = |source| read_error(archive, limits, source);
    let mut budget = Budget {
        archive,
        limits,
        entries: 0,
        bytes: 0,
    };
    let mut shadow = Shadow::default();
    let entries = Entries {
        inner: tar.entries().map_err(corrupt)?,
        meter: &meter,
    };
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        budget.entry()?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let shown = raw.display().to_string();
        let unsafe_ = |reason: String| ArchiveError::Unsafe {
            archive: archive.to_owned(),
            entry: shown.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        let rel = enclosed_path(&raw).map_err(&unsafe_)?;
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(unsafe_("it names the target directory itself".into()));
        }
        shadow.parents(&rel).map_err(&unsafe_)?;
        let link_target =
            |entry: &tar::Entry<'_, _>, what: &str| -> Result<PathBuf, ArchiveError> {
                Ok(entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| unsafe_(format!("the {what} has no target")))?
                    .into_owned())
            };
        let checked = match kind {
            EntryType::Regular | EntryType::Continuous => {
                shadow.place(&rel, Kind::File).map_err(&unsafe_)?;
                Checked::File
            }
            EntryType::Directory => {
                shadow.place(&rel, Kind::Dir).map_err(&unsafe_)?;
                Checked::Dir
            }
            EntryType::Symlink => {
                let target = link_target(&entry, "symlink")?;
                check_symlink_target(&rel, &target).map_err(&unsafe_)?;
                shadow.place(&rel, Kind::Link).map_err(&unsafe_)?;
                Checked::Symlink(target)
            }
            EntryType::Link => {
                let target = link_target(&entry, "hardlink")?;
                let trel = enclosed_path(&target)
                    .map_err(|r| unsafe_(format!("the hardlink target {target:?}: {r}")))?;
                if shadow.kind(&trel) != Some(Kind::File) {
                    return Err(unsafe_(format!(
                        "the hardlink target {target:?} is not a file extracted before it"
                    )));
                }
                shadow.place(&rel, Kind::File).map_err(&unsafe_)?;
                Checked::Hardlink(trel)
            }
            other => {
                return Err(ArchiveError::Unsupported {
                    archive: archive.to_owned(),
                    entry: shown,
                    kind: kind_name(other),
                });
            }
        };
        visit(Visit {
            archive,
            entry: &mut entry,
            rel: &rel,
            shown: &shown,
            kind: checked,
            budget: &mut budget,
        })?;
    }
    Ok(())
}

/// Take only the members named in `wanted` (archive paths; a leading `./` does not matter) out
/// of `archive`, writing each to `out_dir/<member path>` and hashing it on the way. Members that
/// are absent are absent from the result (the caller knows which are required); the result is
/// in archive order. Every entry of the archive is still checked: an archive with an unsafe
/// entry is refused even if that entry was not asked for. A member that is a link or directory
/// is an error. `out_dir` should be a fresh directory of the caller's (e.g. in cache/tmp/).
pub fn extract_members(
    archive: &Path,
    wanted: &[&str],
    out_dir: &Path,
    limits: &Limits,
) -> Result<Vec<Member>, ArchiveError> {
    let mut want = Vec::with_capacity(wanted.len());
    for w in wanted {
        let rel = enclosed_path(Path::new(w)).map_err(|reason| ArchiveError::Unsafe {
            archive: archive.to_owned(),
            entry: (*w).to_owned(),
            reason,
        })?;
        want.push(rel);
    }
    std::fs::create_dir_all(out_dir).map_err(io("cannot create", out_dir))?;
    let mut found: Vec<Member> = Vec::new();
    walk(archive, limits, |mut e| {
        if !want.iter().any(|w| w == e.rel) {
            return e.skip();
        }
        let kind = e.entry.header().entry_type();
        if !matches!(e.kind, Checked::File) {
            return Err(ArchiveError::NotAFile {
                archive: archive.to_owned(),
                member: e.shown.to_owned(),
                kind: kind_name(kind),
            });
        }
        let dest = out_dir.join(e.rel);
        real_parents(out_dir, e.rel, true).map_err(|r| e.unsafe_(r))?;
        clear_spot(&dest, false).map_err(|r| e.unsafe_(r))?;
        let mode = e.entry.header().mode().unwrap_or(0o755) & 0o777;
        let mut h = Sha256::new();
        let size = e.write_to(&dest, mode, Some(&mut h))?;
        let name = e.rel.to_string_lossy().into_owned();
        // A duplicate entry replaces the earlier one, as tar does.
        found.retain(|m| m.name != name);
        found.push(Member {
            name,
            path: dest,
            size,
            sha256: Digest::sha256_of(&h.finalize()),
            mode,
        });
        Ok(())
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclosed_path_normalizes_and_refuses_escapes() {
        assert_eq!(enclosed_path(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert_eq!(enclosed_path(Path::new("a/../b")).unwrap(), Path::new("b"));
        assert!(enclosed_path(Path::new("../x")).is_err());
        assert!(enclosed_path(Path::new("a/../../x")).is_err());
        assert!(enclosed_path(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(check_symlink_target(Path::new("bin/x"), Path::new("../lib/x")).is_ok());
        assert!(check_symlink_target(Path::new("x"), Path::new("sub/y")).is_ok());
        assert!(check_symlink_target(Path::new("x"), Path::new("../y")).is_err());
        assert!(check_symlink_target(Path::new("a/x"), Path::new("../../y")).is_err());
        assert!(check_symlink_target(Path::new("x"), Path::new("/etc")).is_err());
        // `..` after a name could pass through another symlink: refused.
        assert!(check_symlink_target(Path::new("x"), Path::new("d/d/..")).is_err());
        assert!(check_symlink_target(Path::new("x"), Path::new("")).is_err());
    }
}
