//! Assembling a toolchain: build it aside, then swap it into place, so that a toolchain directory
//! appears whole or not at all.
//!
//! A [`Staging`] directory is made under `toolchains/` (same filesystem); binaries are hardlinked
//! into it from the store (copied where hardlinks fail, e.g. across filesystems); the receipt is
//! written last; [`Staging::commit`] renames it over the old toolchain. Dropping an uncommitted
//! staging directory removes it, so a failed install leaves nothing behind.

use std::path::{Path, PathBuf};

use crate::fsx::{self, PathIo, at};
use crate::store::Layout;
use crate::store::cas::{FileLock, lock_file};
use crate::toolchain::Receipt;

/// Errors assembling a toolchain.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] PathIo),
    /// A lock could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::store::CasError),
    /// A toolchain name that is not a plain directory name.
    #[error("{0:?} is not a valid toolchain name: use letters, digits, '.', '-' and '_'")]
    BadName(String),
    /// A path in the toolchain that would leave it.
    #[error("{0:?} is not a relative path inside the toolchain")]
    BadPath(String),
    /// Writing the receipt failed.
    #[error("cannot write the receipt")]
    Receipt(#[source] PathIo),
}

/// Check a toolchain name: it becomes a directory name.
pub fn check_name(name: &str) -> Result<(), AssembleError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(AssembleError::BadName(name.to_owned()))
    }
}

/// Exclusive lock on one toolchain's name, held while it is replaced.
pub fn lock_toolchain(
    layout: &Layout,
    name: &str,
    on_wait: impl FnOnce(),
) -> Result<FileLock, AssembleError> {
    check_name(name)?;
    let path = layout.toolchain_lock(name);
    Ok(lock_file(&path, true, on_wait)?)
}

/// A toolchain being assembled aside.
#[derive(Debug)]
pub struct Staging {
    layout: Layout,
    name: String,
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    /// An empty staging directory for toolchain `name`.
    pub fn new(layout: &Layout, name: &str) -> Result<Self, AssembleError> {
        check_name(name)?;
        let parent = layout.toolchains_dir();
        std::fs::create_dir_all(&parent).map_err(at::<AssembleError>("cannot create", &parent))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!(".staging-{name}-"))
            .tempdir_in(&parent)
            .map_err(at::<AssembleError>(
                "cannot create a staging directory in",
                &parent,
            ))?
            .keep();
        Ok(Staging {
            layout: layout.clone(),
            name: name.to_owned(),
            dir,
            committed: false,
        })
    }

    /// A staging directory that starts as a copy (hardlinks) of the installed toolchain `name`,
    /// for changing one component of it (a source build).
    pub fn from_installed(layout: &Layout, name: &str) -> Result<Self, AssembleError> {
        let s = Self::new(layout, name)?;
        let src = layout.toolchain_dir(name);
        link_tree(&src, &s.dir)?;
        Ok(s)
    }

    /// The staging directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Put `file` (a blob in the store) at `rel` (e.g. `bin/etcd`) in the toolchain: a hardlink,
    /// or a copy where hardlinks fail. Replaces what was there.
    pub fn link(&self, rel: &str, file: &Path) -> Result<(), AssembleError> {
        let dest = self.path_of(rel)?;
        let dir = dest
            .parent()
            .expect("path_of returns a path below the staging dir");
        std::fs::create_dir_all(dir).map_err(at::<AssembleError>("cannot create", dir))?;
        match std::fs::remove_file(&dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(at::<AssembleError>("cannot replace", &dest)(e)),
        }
        if std::fs::hard_link(file, &dest).is_err() {
            std::fs::copy(file, &dest).map_err(at::<AssembleError>("cannot copy", file))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o555))
                .map_err(at::<AssembleError>("cannot chmod", &dest))?;
        }
        Ok(())
    }

    /// Remove `rel` from the toolchain, if present.
    pub fn remove(&self, rel: &str) -> Result<(), AssembleError> {
        let p = self.path_of(rel)?;
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(at::<AssembleError>("cannot remove", &p)(e)),
        }
    }

    fn path_of(&self, rel: &str) -> Result<PathBuf, AssembleError> {
        let p = Path::new(rel);
        let ok = !rel.is_empty()
            && p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !ok {
            return Err(AssembleError::BadPath(rel.to_owned()));
        }
        Ok(self.dir.join(p))
    }

    /// Write the receipt, then swap the staging directory into `toolchains/<name>`. The caller
    /// holds [`lock_toolchain`] for `name`.
    pub fn commit(mut self, receipt: &Receipt) -> Result<PathBuf, AssembleError> {
        // A receipt says what is installed, nothing secret: readable by all, like the binaries.
        fsx::write_atomic(
            &self.dir.join(Layout::RECEIPT_FILE),
            receipt.to_toml().as_bytes(),
            0o644,
        )
        .map_err(AssembleError::Receipt)?;
        let target = self.layout.toolchain_dir(&self.name);
        let parent = self.layout.toolchains_dir();
        // Move the old toolchain aside first: rename cannot replace a non-empty directory. Between
        // the two renames the name is briefly absent, never half-written.
        let old = if target.exists() {
            let old = parent.join(format!(".old-{}-{}", self.name, std::process::id()));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&target, &old)
                .map_err(at::<AssembleError>("cannot move aside", &target))?;
            Some(old)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&self.dir, &target) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old, &target);
            }
            return Err(at::<AssembleError>("cannot rename into", &target)(e));
        }
        self.committed = true;
        fsx::sync_dir(&parent);
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(target)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Recreate the tree `src` under `dest` with hardlinks (copies where links fail).
fn link_tree(src: &Path, dest: &Path) -> Result<(), AssembleError> {
    for entry in std::fs::read_dir(src).map_err(at::<AssembleError>("cannot read", src))? {
        let entry = entry.map_err(at::<AssembleError>("cannot read", src))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(at::<AssembleError>("cannot stat", &from))?;
        if ft.is_dir() {
            std::fs::create_dir_all(&to).map_err(at::<AssembleError>("cannot create", &to))?;
            link_tree(&from, &to)?;
        } else if ft.is_file() && std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(at::<AssembleError>("cannot copy", &from))?;
        }
    }
    Ok(())
}

/// Remove the installed toolchain `name` (the caller holds [`lock_toolchain`]). Its blobs stay in
/// the store until `kbin cache gc`.
pub fn remove_toolchain(layout: &Layout, name: &str) -> Result<bool, AssembleError> {
    check_name(name)?;
    let target = layout.toolchain_dir(name);
    if !target.exists() {
        return Ok(false);
    }
    // Rename first, so that a crash mid-delete leaves a hidden directory, not a broken toolchain.
    let trash = layout
        .toolchains_dir()
        .join(format!(".removing-{name}-{}", std::process::id()));
    std::fs::rename(&target, &trash).map_err(at::<AssembleError>("cannot move aside", &target))?;
    std::fs::remove_dir_all(&trash).map_err(at::<AssembleError>("cannot remove", &trash))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Arch, Digest};

    fn receipt(name: &str) -> Receipt {
        Receipt {
            schema: crate::toolchain::receipt::RECEIPT_SCHEMA,
            pulled: Vec::new(),
            name: name.into(),
            kubernetes: semver::Version::new(1, 30, 14),
            arch: Arch::Amd64,
            manifest: Digest::sha256_of(&[0; 32]),
            created: "2026-11-22T00:00:00Z".into(),
            images: None,
            components: vec![],
        }
    }

    #[test]
    fn uncommitted_staging_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        let blob = d.path().join("blob");
        std::fs::write(&blob, b"x").unwrap();
        {
            let s = Staging::new(&l, "t").unwrap();
            s.link("bin/x", &blob).unwrap();
        }
        assert_eq!(std::fs::read_dir(l.toolchains_dir()).unwrap().count(), 0);
    }

    #[test]
    fn commit_replaces_a_toolchain_whole() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let s = Staging::new(&l, "t").unwrap();
        s.link("bin/one", &a).unwrap();
        s.link("bin/two", &a).unwrap();
        s.commit(&receipt("t")).unwrap();
        let s = Staging::from_installed(&l, "t").unwrap();
        s.link("bin/one", &b).unwrap();
        s.remove("bin/two").unwrap();
        s.commit(&receipt("t")).unwrap();
        let bin = l.toolchain_bin("t");
        assert_eq!(std::fs::read(bin.join("one")).unwrap(), b"b");
        assert!(!bin.join("two").exists());
        assert!(l.receipt_path("t").is_file());
        // Only the toolchain itself remains: no staging or old directories.
        let names: Vec<String> = std::fs::read_dir(l.toolchains_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert_eq!(names, vec!["t".to_string()]);
        assert_eq!(l.toolchain_names().unwrap(), vec!["t".to_string()]);
        assert!(remove_toolchain(&l, "t").unwrap());
        assert!(l.toolchain_names().unwrap().is_empty());
    }

    #[test]
    fn names_and_paths_that_escape_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        for bad in ["", ".x", "a/b", "..", "a b"] {
            assert!(Staging::new(&l, bad).is_err(), "{bad:?}");
        }
        let s = Staging::new(&l, "ok").unwrap();
        for bad in ["../x", "/etc/passwd", "bin/../../x", ""] {
            assert!(
                matches!(s.link(bad, d.path()), Err(AssembleError::BadPath(_))),
                "{bad:?}"
            );
        }
    }
}
