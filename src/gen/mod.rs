//! `kbin gen`: everything a cluster built by hand needs, generated from one [`spec::ClusterSpec`].
//!
//! The PKI step (certificate table, keys, kubeconfigs) runs first; the configs step (component
//! configs, systemd units, node bundles) reads the PKI's file table and never hard-codes paths.
//! Every file is written atomically with its final mode ([`write_file`]).

pub mod bundle;
pub mod bundle_cache;
pub mod certs;
pub mod configs;
pub mod kubeconfig;
pub mod next_steps;
pub mod pki;
pub mod spec;
pub mod tarball;
pub mod versions;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of private keys.
pub const MODE_SECRET: u32 = 0o600;
/// Mode of certificates, configs and other public files.
pub const MODE_PUBLIC: u32 = 0o644;
/// Mode of scripts.
pub const MODE_EXEC: u32 = 0o755;
/// Mode of directories holding private keys.
pub const MODE_SECRET_DIR: u32 = 0o700;

/// An I/O failure while writing the generated tree, with the path.
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

fn at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
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
        .map_err(at("cannot create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(at("cannot set the mode of", dir))
}

/// Write `bytes` to `path` atomically with `mode`: a temporary file in the same directory gets
/// the mode before any byte is written (a key is never world-readable, even for an instant), is
/// synced, then renamed over `path`. The parent directory must exist.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(at("cannot create a temporary file in", dir))?;
    // The umask may have narrowed the mode at creation; set it exactly.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(at("cannot set the mode of", path))?;
    tmp.write_all(bytes).map_err(at("cannot write", path))?;
    tmp.as_file().sync_all().map_err(at("cannot sync", path))?;
    tmp.persist(path)
        .map_err(|e| at("cannot rename into", path)(e.error))?;
    Ok(())
}

/// `<out>/cluster.toml`: the spec a tree was generated from, read back by `kbin gen node` and
/// `kbin certs`.
pub fn spec_path(out: &Path) -> PathBuf {
    out.join("cluster.toml")
}

/// Save the spec a tree was generated from.
pub fn save_spec(out: &Path, spec: &spec::ClusterSpec) -> Result<(), WriteError> {
    let text = toml::to_string(&spec.to_input()).expect("a spec of strings always serializes");
    let text = format!("# Written by `kbin gen`; edit and pass it back with --config.\n{text}");
    write_file(&spec_path(out), text.as_bytes(), MODE_PUBLIC)
}

/// Load the spec saved in `<out>/cluster.toml`.
pub fn load_spec(out: &Path) -> Result<spec::ClusterSpec, spec::SpecError> {
    spec::SpecInput::load(&spec_path(out))?.build()
}

/// Files written as one set: each is staged as a temporary file beside its final path (with
/// its final mode, fd closed); [`Staged::commit`] fsyncs them on many threads at once (ext4
/// groups concurrent fsyncs; one after another, thousands took seconds), renames each into
/// place, and syncs the directories so the renames are durable too. Dropped uncommitted, the
/// temporary files are removed and no final path was touched.
#[derive(Debug, Default)]
pub struct Staged {
    files: std::sync::Mutex<StagedFiles>,
}

#[derive(Debug, Default)]
struct StagedFiles {
    order: Vec<(tempfile::TempPath, PathBuf)>,
    bytes: std::collections::HashMap<PathBuf, Vec<u8>>,
}

impl Staged {
    /// An empty set.
    pub fn new() -> Staged {
        Staged::default()
    }

    /// Stage `bytes` for `path` with `mode` (callable from several threads). The parent
    /// directory must exist.
    pub fn stage(&self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(dir)
            .map_err(at("cannot create a temporary file in", dir))?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(at("cannot set the mode of", path))?;
        tmp.write_all(bytes).map_err(at("cannot write", path))?;
        let tmp = tmp.into_temp_path();
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        files.order.push((tmp, path.to_owned()));
        files.bytes.insert(path.to_owned(), bytes.to_vec());
        Ok(())
    }

    /// What is staged for `path`, if anything (files not yet in place are read from here).
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bytes
            .get(path)
            .cloned()
    }

    /// Make every staged file durable, rename each into place, then sync their directories.
    pub fn commit(self) -> Result<(), WriteError> {
        let files = self
            .files
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .order;
        // ext4 commits concurrent fsyncs in one journal transaction: many threads make
        // thousands of syncs cost a few commits (and, unlike syncfs, never wait for other
        // programs' dirty data).
        let temps: Vec<&Path> = files.iter().map(|(t, _)| t.as_ref()).collect();
        par_io(&temps, |p| sync_path(p, false))?;
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .filter_map(|(_, p)| p.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        for (tmp, path) in files {
            tmp.persist(&path)
                .map_err(|e| at("cannot rename into", &path)(e.error))?;
        }
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        par_io(&dirs, |d| sync_path(d, true))
    }
}

/// fsync a file (or directory) by path.
fn sync_path(path: &Path, dir: bool) -> Result<(), WriteError> {
    let f = std::fs::File::open(path).map_err(at("cannot open", path))?;
    let r = if dir { f.sync_all() } else { f.sync_data() };
    r.map_err(at("cannot sync", path))
}

/// Run an I/O-bound `f` over `items` on up to 64 threads; the first error wins.
fn par_io(
    items: &[&Path],
    f: impl Fn(&Path) -> Result<(), WriteError> + Sync,
) -> Result<(), WriteError> {
    let threads = items.len().clamp(1, 64);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(p) = items.get(i) else { break Ok(()) };
                        f(p)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

/// Sync a directory so the renames inside it survive a crash (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn written_files_have_the_mode_asked_for_and_no_temp_left() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("pki");
        create_dir(&dir, MODE_SECRET_DIR).unwrap();
        let key = dir.join("ca.key");
        write_file(&key, b"secret", MODE_SECRET).unwrap();
        write_file(&key, b"secret2", MODE_SECRET).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"secret2");
        assert_eq!(key.metadata().unwrap().mode() & 0o777, 0o600);
        assert_eq!(dir.metadata().unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn staged_files_appear_only_on_commit_and_vanish_if_dropped() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("a.key");
        let staged = Staged::new();
        staged.stage(&key, b"k", MODE_SECRET).unwrap();
        assert_eq!(staged.get(&key).as_deref(), Some(&b"k"[..]));
        assert!(!key.exists());
        drop(staged);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "temp removed"
        );
        let staged = Staged::new();
        staged.stage(&key, b"k2", MODE_SECRET).unwrap();
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"k2");
        assert_eq!(key.metadata().unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_into_a_missing_directory_names_it() {
        let d = tempfile::tempdir().unwrap();
        let e = write_file(&d.path().join("no/such/f"), b"x", MODE_PUBLIC).unwrap_err();
        assert!(e.to_string().contains("no/such"), "{e}");
    }
}
