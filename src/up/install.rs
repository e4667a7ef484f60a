//! Placing a node's tree into the machine's paths (`/etc/kubernetes/…`, `/usr/local/bin/…`), as
//! `install.sh` would, through the one atomic writer, with every file recorded in the state
//! before it appears.

use std::path::Path;

use super::process::{self, State};
use super::{UpError, io};

/// Install `tree` (but `install.sh`) under `/`, recording every file and directory it creates in
/// `state`, saved in `run_dir` *before* each one appears: a kbin killed at any point leaves a
/// state that lists everything it placed, for `down` to remove. Each file goes through the one
/// atomic writer ([`crate::fsx`]: a temporary file with a random name created exclusively beside
/// its target, so a planted symlink is never followed; its final mode from the start; fsync;
/// rename). Returns how many files were written (identical files are left alone).
pub fn install(tree: &Path, state: &mut State, run_dir: &Path) -> Result<usize, UpError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let mut written = 0;
    for rel in crate::fsx::files_under(tree)? {
        if rel == Path::new("install.sh") {
            continue;
        }
        let src = tree.join(&rel);
        let dst = Path::new("/").join(&rel);
        let mut missing = Vec::new();
        let mut p = dst.parent();
        while let Some(d) = p {
            if d.symlink_metadata().is_ok() {
                break;
            }
            missing.push(d.to_owned());
            p = d.parent();
        }
        for d in missing.into_iter().rev() {
            if !state.created_dirs.contains(&d) {
                state.created_dirs.push(d.clone());
                state.save(run_dir)?;
            }
            std::fs::create_dir(&d).map_err(io("cannot create", &d))?;
        }
        let mode = std::fs::metadata(&src)
            .map_err(io("cannot stat", &src))?
            .permissions()
            .mode()
            & 0o7777;
        if same_file_content(&src, &dst, mode) {
            continue;
        }
        // A file the machine already had (a user's own kubectl, a distribution's containerd
        // config) is kept aside as `.kbin-orig-NAME` (a hard link: nothing is copied, and a
        // name already there makes the link fail rather than be followed) before it is
        // replaced, and `down` puts it back. Each step is in the state before it happens.
        let ours = state.installed.iter().position(|f| f.path() == dst);
        let replacing = ours.is_none()
            && dst.symlink_metadata().is_ok()
            && !state.replaced.iter().any(|r| r.path == dst);
        let dir = dst.parent().unwrap_or(Path::new("/"));
        // One record per directory (the files come sorted, a directory's together): it holds
        // for every temporary file made there after it.
        let new_dir = state.placing.as_ref().is_none_or(|p| p.dir != dir);
        if new_dir {
            state.placing = Some(process::Placing {
                dir: dir.to_owned(),
                since: process::now(),
                before: process::Placing::temp_names(dir),
            });
        }
        let backup = process::Replaced::backup_of(&dst);
        if replacing {
            state.replaced.push(process::Replaced {
                path: dst.clone(),
                backup: backup.clone(),
            });
        }
        if new_dir || replacing {
            state.save(run_dir)?;
        }
        if replacing {
            std::fs::hard_link(&dst, &backup)
                .map_err(io("cannot keep the original at", &backup))?;
        }
        let (mut file, tmp) = crate::fsx::temp_beside(&dst, mode)?;
        {
            let m = file.metadata().map_err(io("cannot stat", &tmp))?;
            let placed = process::Placed::File {
                path: dst.clone(),
                dev: m.dev(),
                ino: m.ino(),
                temp: Some(tmp.to_path_buf()),
            };
            match ours {
                Some(i) => state.installed[i] = placed,
                None => state.installed.push(placed),
            }
            state.save(run_dir)?;
        }
        let mut from = std::fs::File::open(&src).map_err(io("cannot read", &src))?;
        std::io::copy(&mut from, &mut file).map_err(io("cannot write", &tmp))?;
        crate::fsx::persist(file, tmp, &dst)?;
        written += 1;
    }
    if state.placing.take().is_some() {
        state.save(run_dir)?;
    }
    Ok(written)
}

pub(super) fn same_file_content(a: &Path, b: &Path, mode: u32) -> bool {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    if ma.len() != mb.len() || mb.permissions().mode() & 0o7777 != mode {
        return false;
    }
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = match fa.read(&mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return true;
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}
