//! One way to put a file at its final path, and one way to say which path an I/O error is about.
//!
//! The rule (docs/ARCHITECTURE.md, "Store rules"): no partial or unverified file ever sits at a
//! final path.
//! A file is written to a temporary file beside its final path (same directory, so the rename
//! is atomic), created with its final mode (a key is never world-readable, even for an instant),
//! fsynced, renamed into place, and the directory is fsynced so the rename survives a crash.
//!
//! - [`write_atomic`] does all of it for bytes in memory.
//! - [`temp_in`] / [`temp_beside`] + [`persist`] are the two halves, for a writer that streams
//!   into the file (gen's `Staged` stages each file with `temp_in` and commits the batch itself,
//!   its fsyncs in parallel).
//! - [`persist_path`] is the second half for a complete file that already exists on the same
//!   filesystem (a verified download moving into the store).
//!
//! Every error is a [`PathIo`]: what kbin was doing, on which path, and the OS's cause.
//!
//! What `gen` and `up` both need to write an output directory lives here too, below both: its
//! lock ([`OutLock`]), the [`WriteError`] of its writes, and the SIGINT/SIGTERM flag
//! ([`interrupt`]) that stops a run before its commit.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::os::unix::fs::DirBuilderExt;

use tempfile::TempPath;

pub mod interrupt;

/// An I/O error on a path: what kbin was doing, and where. Every module's error enum wraps it
/// (`Io(#[from] PathIo)`), so each I/O failure names its path the same way.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct PathIo {
    /// What kbin was doing ("cannot create").
    pub action: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// `map_err(at("cannot read", path))`: wrap an I/O error with its action and path, into any
/// error type that wraps [`PathIo`].
pub fn at<'a, E: From<PathIo>>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> E + 'a {
    move |source| {
        E::from(PathIo {
            action,
            path: path.to_owned(),
            source,
        })
    }
}

/// A new empty temporary file in `dir` (which must exist) with exactly `mode`, open for
/// writing. Dropping the [`TempPath`] removes it; [`persist`] puts it in place.
pub fn temp_in(dir: &Path, mode: u32) -> Result<(File, TempPath), PathIo> {
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(at("cannot create a temporary file in", dir))?;
    // The umask may have narrowed the mode at creation; set it exactly.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(at("cannot set the mode of", tmp.path()))?;
    Ok(tmp.into_parts())
}

/// [`temp_in`] the directory of `path` (which must exist): where `path`'s content is written
/// before [`persist`] renames it over `path`.
pub fn temp_beside(path: &Path, mode: u32) -> Result<(File, TempPath), PathIo> {
    temp_in(parent_of(path), mode)
}

/// Make the temporary file `tmp` (written through `file`) durable and rename it to `path`
/// (same filesystem), then sync `path`'s directory.
pub fn persist(file: File, tmp: TempPath, path: &Path) -> Result<(), PathIo> {
    file.sync_all().map_err(at("cannot sync", path))?;
    drop(file);
    tmp.persist(path)
        .map_err(|e| at("cannot rename into", path)(e.error))?;
    sync_dir(parent_of(path));
    Ok(())
}

/// Make the complete file `src` durable and rename it to `dest` (same filesystem; `dest`'s
/// directory must exist), then sync `dest`'s directory. The caller has set its final mode.
pub fn persist_path(src: &Path, dest: &Path) -> Result<(), PathIo> {
    File::open(src)
        .and_then(|f| f.sync_all())
        .map_err(at("cannot sync", src))?;
    std::fs::rename(src, dest).map_err(at("cannot rename into", dest))?;
    sync_dir(parent_of(dest));
    Ok(())
}

/// Write `bytes` to `path` atomically with `mode`, creating its directory if missing.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PathIo> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(at("cannot create", dir))?;
    let (mut file, tmp) = temp_beside(path, mode)?;
    file.write_all(bytes).map_err(at("cannot write", path))?;
    persist(file, tmp, path)
}

/// Start the disk writes of a file as it is being written, so that the fsync which makes it
/// durable at the end finds most of it on disk already: a download's or a member's final sync
/// overlaps the rest of the install instead of landing, whole, at its end.
///
/// Call [`Writeback::wrote`] after each write with the file's length; every [`Self::CHUNK`]
/// bytes it asks the kernel to start writing the new range (Linux `sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`: it does not wait). Best effort: where the call is missing or
/// refused, the final fsync does all the work, as before.
#[derive(Debug, Default)]
pub struct Writeback {
    /// Bytes whose writeback was started.
    started: u64,
}

impl Writeback {
    /// Start writeback in ranges of this many bytes.
    pub const CHUNK: u64 = 8 << 20;

    /// A tracker for a file whose first `len` bytes are already there (a resumed download):
    /// those are left to the final fsync.
    pub fn from(len: u64) -> Writeback {
        Writeback { started: len }
    }

    /// `file` is now `len` bytes long.
    pub fn wrote(&mut self, file: &File, len: u64) {
        if len < self.started {
            // Truncated (a download restarted): start over.
            self.started = len;
            return;
        }
        if len - self.started < Self::CHUNK {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (Ok(off), Ok(n)) = (
                libc::off64_t::try_from(self.started),
                libc::off64_t::try_from(len - self.started),
            ) else {
                return;
            };
            // SAFETY: the descriptor is open for the borrow of `file`; the call reads no memory.
            let _ = unsafe {
                libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE)
            };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.started = len;
    }
}

/// fsync a directory, so the renames in it are durable. Best effort: some filesystems refuse
/// to sync a directory, and the data itself was synced before the rename.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Swap `a` and `b` (two directories, or files, on one filesystem) in one atomic step
/// (`renameat2(RENAME_EXCHANGE)`): at every instant each path names one of the two, so a crash
/// never leaves either missing.
pub fn exchange(a: &Path, b: &Path) -> Result<(), PathIo> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| at("cannot swap", p)(std::io::Error::other(e)))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(at("cannot swap in", b)(std::io::Error::last_os_error())),
    }
}

/// An I/O failure while writing an output directory (a generated tree, `up`'s run state),
/// with the path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}")]
pub struct WriteError {
    /// What kbin was doing.
    pub action: &'static str,
    /// Where.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

impl From<PathIo> for WriteError {
    fn from(e: PathIo) -> WriteError {
        WriteError {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

/// `map_err(write_at("cannot create", dir))`: an I/O error as a [`WriteError`] on `path`.
pub fn write_at<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
    move |source| WriteError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Create `dir` (and its parents) with `mode` for the directories it creates, and set `mode`
/// on `dir` itself even if it existed (a key directory left 0755 by hand is tightened).
pub fn create_dir(dir: &Path, mode: u32) -> Result<(), WriteError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(write_at("cannot create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(write_at("cannot set the mode of", dir))
}

/// An exclusive lock on an output directory (`<out>/.kbin.lock`), held while a tree is generated
/// or renewed, so two kbin processes never interleave their writes.
#[derive(Debug)]
pub struct OutLock {
    _file: std::fs::File,
}

impl OutLock {
    /// Lock `out` (created if missing); `waiting` is called once if another process holds it,
    /// before blocking until it is released.
    pub fn acquire(out: &Path, waiting: impl FnOnce()) -> Result<OutLock, WriteError> {
        std::fs::create_dir_all(out).map_err(write_at("cannot create", out))?;
        let path = out.join(".kbin.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(write_at("cannot open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                waiting();
                file.lock().map_err(write_at("cannot lock", &path))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(write_at("cannot lock", &path)(e)),
        }
        Ok(OutLock { _file: file })
    }
}

/// A crash test's fault point: in a debug build, when the environment variable `KBIN_FAULT`
/// names `name`, the process aborts here, with no unwinding and no cleanup, as SIGKILL or a
/// power cut would stop it. Release builds ignore it.
pub fn fault_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("KBIN_FAULT").is_some_and(|v| v == name) {
        std::process::abort();
    }
    let _ = name;
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Every regular file (and symlink) under `root`, as sorted paths relative to it.
pub fn files_under(root: &Path) -> Result<Vec<std::path::PathBuf>, PathIo> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(at("cannot read", &dir))? {
            let e = e.map_err(at("cannot read", &dir))?;
            let p = e.path();
            if e.file_type().map_err(at("cannot stat", &p))?.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_written_file_has_its_mode_and_no_temporary_file_stays() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/key.pem");
        write_atomic(&p, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        write_atomic(&p, b"public", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"public");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn a_temp_file_has_its_final_mode_before_any_byte_and_vanishes_unpersisted() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x");
        let (file, tmp) = temp_beside(&target, 0o640).unwrap();
        assert_eq!(std::fs::metadata(&tmp).unwrap().mode() & 0o777, 0o640);
        assert_eq!(tmp.parent(), Some(d.path()));
        let kept = tmp.to_path_buf();
        drop((file, tmp));
        assert!(!kept.exists());
        assert!(!target.exists());
    }

    #[test]
    fn an_error_names_what_and_where() {
        let e = write_atomic(Path::new("/proc/version/x"), b"", 0o644).unwrap_err();
        assert!(e.to_string().contains("/proc/version"), "{e}");
    }

    #[test]
    fn writeback_starts_per_chunk_and_starts_over_after_a_truncation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut f = File::create(&p).unwrap();
        let mut wb = Writeback::default();
        let half = vec![7u8; (Writeback::CHUNK / 2) as usize];
        f.write_all(&half).unwrap();
        wb.wrote(&f, Writeback::CHUNK / 2);
        assert_eq!(wb.started, 0, "less than a chunk waits");
        f.write_all(&half).unwrap();
        wb.wrote(&f, Writeback::CHUNK);
        assert_eq!(wb.started, Writeback::CHUNK);
        f.set_len(0).unwrap();
        wb.wrote(&f, 0);
        assert_eq!(wb.started, 0);
        assert_eq!(Writeback::from(5).started, 5);
        f.sync_all().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    }
}
