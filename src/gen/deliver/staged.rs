//! The staged writer: every file and tree of a run is staged beside its final path, then
//! committed at once ([`Staged::commit`]) under the output directory's [`crate::fsx::OutLock`];
//! dropped uncommitted, nothing of it remains.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fsx::{WriteError, create_dir, write_at as at};
use crate::r#gen::MODE_SECRET_DIR;

/// A staged file or tree: its final path, and the temporary file or tree that holds it.
pub type Pending = (PathBuf, PathBuf);

/// Files and directories written as one set: each file is staged as a temporary file beside its
/// final path (with its final mode, fd closed), each directory tree is built beside the one it
/// replaces; [`Staged::commit`] fsyncs the files on many threads at once (ext4 groups concurrent
/// fsyncs; one after another, thousands took seconds), renames each into place, swaps the trees
/// and syncs the directories so the renames are durable too. Dropped uncommitted (an error, or
/// SIGINT seen by [`crate::fsx::interrupt`]), the temporary files and trees are removed and no final path was
/// touched.
#[derive(Debug, Default)]
pub struct Staged {
    files: std::sync::Mutex<StagedFiles>,
    /// A dry run's private directory: every temporary goes there, no directory of the tree is
    /// made or touched, and the set is never committed (`gen --diff`).
    scratch: Option<tempfile::TempDir>,
}

#[derive(Debug, Default)]
struct StagedFiles {
    order: Vec<(tempfile::TempPath, PathBuf)>,
    bytes: std::collections::HashMap<PathBuf, Vec<u8>>,
    trees: Vec<(tempfile::TempDir, PathBuf)>,
    new_dirs: Vec<(PathBuf, u32)>,
}

impl Staged {
    /// An empty set.
    pub fn new() -> Staged {
        Staged::default()
    }

    /// A dry run: staged like a real one (so it can be compared with the tree: [`Staged::pending`])
    /// but in a private temporary directory, touching nothing of the tree; never committed.
    pub fn scratch() -> Result<Staged, WriteError> {
        let tmp = std::env::temp_dir();
        let scratch = tempfile::Builder::new()
            .prefix("kbin-dry-run-")
            .tempdir_in(&tmp)
            .map_err(at("cannot create a temporary directory in", &tmp))?;
        Ok(Staged {
            scratch: Some(scratch),
            ..Staged::default()
        })
    }

    /// Where this set puts a temporary for `path`: beside it (or the nearest directory above
    /// that exists), or the dry run's private directory.
    pub fn temp_dir<'a>(&'a self, path: &'a Path) -> &'a Path {
        match &self.scratch {
            Some(s) => s.path(),
            None => Self::temp_dir_for(path),
        }
    }

    /// Have the commit make a directory the run needs (`pki/`, `kubeconfigs/`) with `mode`, and
    /// set `mode` on it if it exists; nothing is made before the commit (a run that fails
    /// leaves no empty directory behind), nothing at all in a dry run.
    pub fn create_dir(&self, dir: &Path, mode: u32) -> Result<(), WriteError> {
        if self.scratch.is_none() {
            self.lock().new_dirs.push((dir.to_owned(), mode));
        }
        Ok(())
    }

    /// Stage `bytes` for `path` with `mode` (callable from several threads). A missing parent
    /// directory is made by the commit (0700 for a secret file, else 0755); until then the
    /// temporary file waits in the nearest directory that exists.
    pub fn stage(&self, path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
        let dir = self.temp_dir(path);
        self.note_parent(path, mode);
        let (mut file, tmp) = crate::fsx::temp_in(dir, mode)?;
        file.write_all(bytes).map_err(at("cannot write", path))?;
        let mut files = self.lock();
        files.order.push((tmp, path.to_owned()));
        files.bytes.insert(path.to_owned(), bytes.to_vec());
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StagedFiles> {
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stage a file already written at `tmp` (its final mode set; beside `path`) for `path`.
    pub fn stage_written(&self, tmp: tempfile::TempPath, path: &Path) {
        let mode = std::fs::metadata(&tmp).map_or(0o644, |m| m.permissions().mode());
        self.note_parent(path, mode);
        self.lock().order.push((tmp, path.to_owned()));
    }

    /// Where to create a temporary file or directory for `path`: its parent if it exists, else
    /// the nearest directory above it that does (the commit makes the parent).
    pub fn temp_dir_for(path: &Path) -> &Path {
        path.parent()
            .unwrap_or(Path::new("."))
            .ancestors()
            .find(|d| d.is_dir())
            .unwrap_or(Path::new("."))
    }

    /// Have the commit make `path`'s parent if it is missing (0700 for a secret file's).
    fn note_parent(&self, path: &Path, mode: u32) {
        let parent = path.parent().unwrap_or(Path::new("."));
        if !parent.is_dir() {
            let dir_mode = if mode & 0o077 == 0 {
                MODE_SECRET_DIR
            } else {
                0o755
            };
            self.lock().new_dirs.push((parent.to_owned(), dir_mode));
        }
    }

    /// A new empty directory beside `dir` to build its replacement in; the commit swaps it in
    /// whole (`dir`'s parent must exist).
    pub fn stage_tree(&self, dir: &Path) -> Result<PathBuf, WriteError> {
        let parent = self.temp_dir(dir);
        self.note_parent(dir, 0o755);
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-tree-")
            .tempdir_in(parent)
            .map_err(at("cannot create a temporary directory in", parent))?;
        let built = tmp.path().to_owned();
        self.lock().trees.push((tmp, dir.to_owned()));
        Ok(built)
    }

    /// What a commit would write, without writing it (`gen --diff`): each staged file's final
    /// path and temporary file, and each staged tree's final directory and the tree built for it.
    pub fn pending(&self) -> (Vec<Pending>, Vec<Pending>) {
        let files = self.lock();
        (
            files
                .order
                .iter()
                .map(|(t, p)| (p.clone(), t.to_path_buf()))
                .collect(),
            files
                .trees
                .iter()
                .map(|(t, d)| (d.clone(), t.path().to_owned()))
                .collect(),
        )
    }

    /// What is staged for `path`, if anything (files not yet in place are read from here).
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().bytes.get(path).cloned()
    }

    /// `path`'s bytes as this run leaves them: staged, else on disk.
    pub fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self.get(path) {
            Some(b) => Ok(b),
            None => std::fs::read(path),
        }
    }

    /// Make every staged file durable, rename each into place, swap the staged trees in, then
    /// sync their directories. Refuses (and leaves everything as it was) when SIGINT or SIGTERM
    /// arrived; once the renames start, they finish.
    pub fn commit(self) -> Result<(), WriteError> {
        if let Some(s) = &self.scratch {
            return Err(at("a dry run is never written; staged in", s.path())(
                std::io::Error::other("kbin bug: commit of a dry run"),
            ));
        }
        let StagedFiles {
            order: files,
            trees,
            new_dirs,
            ..
        } = self
            .files
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nothing may stand where a tree or a file goes but what it replaces, nor where a
        // missing directory is to be made.
        for (dir, _) in &new_dirs {
            if let Some(blocker) = dir.ancestors().find(|d| d.exists() && !d.is_dir()) {
                return Err(at("cannot create a directory at", blocker)(
                    std::io::Error::other("a file is in the way: move it away"),
                ));
            }
        }
        for (_, dir) in &trees {
            if dir.exists() && !dir.is_dir() {
                return Err(at("cannot replace", dir)(std::io::Error::other(
                    "it is not a directory: move it away",
                )));
            }
        }
        // ext4 commits concurrent fsyncs in one journal transaction: many threads make
        // thousands of syncs cost a few commits (and, unlike syncfs, never wait for other
        // programs' dirty data).
        let temps: Vec<&Path> = files.iter().map(|(t, _)| t.as_ref()).collect();
        par_io(&temps, |p| sync_path(p, false))?;
        crate::fsx::interrupt::check()
            .map_err(at("stopped before writing", Path::new("the tree")))?;
        // A directory that will hold a secret file is 0700 whatever else goes in it (keys 0600
        // in 0700 directories), so the most restrictive mode asked for wins, not the last.
        let mut modes: std::collections::BTreeMap<&Path, u32> = std::collections::BTreeMap::new();
        for (dir, mode) in &new_dirs {
            *modes.entry(dir).or_insert(*mode) &= *mode;
        }
        for (dir, mode) in modes {
            create_dir(dir, mode)?;
        }
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .map(|(_, p)| p)
            .chain(trees.iter().map(|(_, d)| d))
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        // What a crashed run left in these directories (its temporaries, an old tree it had
        // swapped out) goes now: the caller holds the directory's lock, so no other run's.
        // By device and inode, not by path: the temporaries' paths may be spelt otherwise
        // (absolute) than the directories listed (relative to a relative --out).
        let ours: std::collections::HashSet<(u64, u64)> = files
            .iter()
            .map(|(t, _)| t.as_ref())
            .chain(trees.iter().map(|(t, _)| t.path()))
            .filter_map(|p| std::fs::symlink_metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        for dir in &dirs {
            sweep_leftovers(dir, &ours)?;
        }
        for (tmp, dir) in trees {
            let built = tmp.keep();
            if dir.exists() {
                // One atomic step: at every instant `dir` is the old tree or the new one.
                crate::fsx::exchange(&built, &dir)?;
                crate::fsx::fault_point("tree-swap");
                // `built` now holds the old tree.
                std::fs::remove_dir_all(&built).map_err(at("cannot remove", &built))?;
            } else {
                std::fs::rename(&built, &dir).map_err(at("cannot rename into", &dir))?;
            }
        }
        for (tmp, path) in files {
            tmp.persist(&path)
                .map_err(|e| at("cannot rename into", &path)(e.error))?;
        }
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        par_io(&dirs, |d| sync_path(d, true))
    }
}

/// Remove from `dir` what a run that crashed mid-commit left: temporary files (`.tmp-XXXXXX`),
/// trees (`.tmp-tree-XXXXXX`, possibly an old tree swapped out) and the `.old-*` trees of kbin
/// before the atomic exchange, but none of `ours`.
fn sweep_leftovers(
    dir: &Path,
    ours: &std::collections::HashSet<(u64, u64)>,
) -> Result<(), WriteError> {
    let random = |s: &str| s.len() == 6 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(at("cannot read", dir)(e)),
    };
    for e in entries {
        let e = e.map_err(at("cannot read", dir))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = name.strip_prefix(".tmp-tree-").is_some_and(random)
            || name.strip_prefix(".tmp-").is_some_and(random)
            || name.starts_with(".old-");
        let path = e.path();
        if !stale {
            continue;
        }
        let id = std::fs::symlink_metadata(&path).map_err(at("cannot stat", &path))?;
        if ours.contains(&(id.dev(), id.ino())) {
            continue;
        }
        let r = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        r.map_err(at("cannot remove the leftover", &path))?;
    }
    Ok(())
}

/// fsync a file (or directory) by path.
fn sync_path(path: &Path, dir: bool) -> Result<(), WriteError> {
    let f = std::fs::File::open(path).map_err(at("cannot open", path))?;
    let r = if dir { f.sync_all() } else { f.sync_data() };
    r.map_err(at("cannot sync", path))
}

/// An I/O-bound `f` over `items` on up to 64 threads (fsyncs wait on the disk, not the CPU:
/// ext4 groups concurrent ones into one journal commit); the first error wins.
fn par_io(
    items: &[&Path],
    f: impl Fn(&Path) -> Result<(), WriteError> + Sync,
) -> Result<(), WriteError> {
    crate::util::try_parallel_map(items, 64, |p| f(p)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::r#gen::{MODE_PUBLIC, MODE_SECRET};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn staged_files_keep_their_mode_and_missing_secret_dirs_are_made_0700_on_commit() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("secrets/new/ca.key");
        let staged = Staged::new();
        staged.stage(&key, b"secret", MODE_SECRET).unwrap();
        assert!(
            !d.path().join("secrets").exists(),
            "nothing before the commit"
        );
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        assert_eq!(key.metadata().unwrap().mode() & 0o777, 0o600);
        let dir = d.path().join("secrets/new");
        assert_eq!(dir.metadata().unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }

    #[test]
    fn a_staged_tree_replaces_the_old_one_whole_and_a_file_in_the_way_fails_the_commit() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("nodes/w1");
        std::fs::create_dir_all(tree.join("old")).unwrap();
        std::fs::write(tree.join("old/file"), "old").unwrap();
        let staged = Staged::new();
        let built = staged.stage_tree(&tree).unwrap();
        std::fs::write(built.join("new"), "new").unwrap();
        staged.commit().unwrap();
        assert_eq!(std::fs::read_to_string(tree.join("new")).unwrap(), "new");
        assert!(!tree.join("old").exists());
        assert_eq!(
            std::fs::read_dir(d.path().join("nodes")).unwrap().count(),
            1
        );

        std::fs::remove_dir_all(&tree).unwrap();
        std::fs::write(&tree, "in the way").unwrap();
        let other = d.path().join("nodes/f");
        let staged = Staged::new();
        staged.stage(&other, b"x", MODE_PUBLIC).unwrap();
        staged.stage_tree(&tree).unwrap();
        let e = staged.commit().unwrap_err();
        assert!(e.to_string().contains("nodes/w1"), "{e}");
        assert!(!other.exists(), "nothing committed");
        assert_eq!(std::fs::read_to_string(&tree).unwrap(), "in the way");
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
}
