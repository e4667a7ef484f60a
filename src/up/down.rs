//! `kbin down`: stop the components in reverse order, remove what `up` placed (only what the
//! node's tree installs, only while it is the very file placed), and `--purge` the data without
//! ever descending into a mount.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::check::{self, cri_socket};
use super::process::{self, State, Stopped};
use super::systemd::{systemctl, systemd_main_pid};
use super::unit::ServiceUnit;
use super::{CheckKind, STEPS, Step, Supervisor, Tree, UpError, flag_value, io};
use crate::r#gen::configs::paths;
use crate::ui::Ui;

/// What `down` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// The cluster tree (DIR).
    pub out: PathBuf,
    /// Only this node (else every node with a state file).
    pub node: Option<String>,
    /// Also delete etcd's data and the kubelet's state.
    pub purge: bool,
    /// How long SIGTERM may take before SIGKILL.
    pub grace: Duration,
    /// Who ran the components.
    pub supervisor: Supervisor,
}

/// One component stopped by `down`.
#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    /// The component.
    pub component: String,
    /// How it went.
    pub outcome: Stopped,
    /// Why it could not be stopped (`outcome` is `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `down` did on one node.
#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    /// The node.
    pub node: String,
    /// Components, in the order they were stopped.
    pub stopped: Vec<StopReport>,
    /// Files and directories removed outside DIR.
    pub removed: usize,
    /// Mounts left by the kubelet or containerd that were unmounted.
    pub unmounted: Vec<PathBuf>,
    /// Those that could not be unmounted, with why (`--purge` leaves them as they are).
    pub unmount_failed: Vec<String>,
    /// Directories deleted by `--purge`.
    pub purged: Vec<PathBuf>,
    /// Mount points found under a purged directory: not descended into, left in place.
    pub kept_mounts: Vec<PathBuf>,
    /// Paths the state file listed that `down` would not remove (not kbin's, or replaced).
    pub refused: Vec<Refusal>,
}

pub(super) fn nodes_with_state(tree: &Tree, name: Option<&str>) -> Vec<String> {
    if let Some(n) = name {
        return vec![n.to_owned()];
    }
    tree.spec
        .nodes
        .iter()
        .filter(|n| State::path(&tree.run_dir(&n.name)).is_file())
        .map(|n| n.name.clone())
        .collect()
}

/// `kbin down`: stop in reverse order, remove what `up` installed, `--purge` the data.
pub fn down(opts: &DownOptions, ui: &Ui) -> Result<Vec<DownReport>, UpError> {
    let tree = Tree::load(&opts.out)?;
    let supervisor = opts.supervisor.resolve();
    let mut reports = Vec::new();
    for name in nodes_with_state(&tree, opts.node.as_deref()) {
        let Some(node) = tree.spec.node(&name).cloned() else {
            continue;
        };
        let run_dir = tree.run_dir(&name);
        State::prepare_dir(&run_dir).map_err(io("cannot create", &run_dir))?;
        let _lock = crate::r#gen::OutLock::acquire(&run_dir, || {
            ui.status("waiting for another kbin up/down")
        })?;
        let mut state =
            State::load(&run_dir, &name).map_err(io("cannot read", &State::path(&run_dir)))?;
        let units: Vec<(Step, Option<ServiceUnit>)> = STEPS
            .iter()
            .rev()
            .map(|s| {
                let path = tree
                    .node_tree(&name)
                    .join(format!("etc/systemd/system/{}.service", s.unit));
                (*s, ServiceUnit::load(&path).ok())
            })
            .collect();
        let stopped = stop_components(&units, &mut state, &run_dir, opts, supervisor, ui)?;
        if stopped.iter().any(|s| s.outcome == Stopped::Failed) {
            // Something still runs: its files, mounts and data stay, and so does the state, so
            // that `down` can be run again once it can be stopped.
            ui.warn(format!(
                "node {name}: a component could not be stopped; nothing was removed"
            ));
            state.save(&run_dir)?;
            reports.push(DownReport {
                node: name,
                stopped,
                removed: 0,
                unmounted: vec![],
                unmount_failed: vec![],
                purged: vec![],
                kept_mounts: vec![],
                refused: vec![],
            });
            continue;
        }
        let (unmounted, unmount_failed) = unmount_under(LEFT_MOUNTED);
        for (p, e) in &unmount_failed {
            ui.warn(format!(
                "cannot unmount {}: {e} (left mounted; --purge does not descend into it)",
                p.display()
            ));
        }
        let (removed, mut refused) = remove_placed(&mut state, &tree.node_tree(&name))?;
        let (purged, kept_mounts) = if opts.purge {
            purge_data(&node, &units, &mut refused, ui)?
        } else {
            (Vec::new(), Vec::new())
        };
        for r in &refused {
            ui.warn(format!(
                "refused to remove {}: {}",
                r.path.display(),
                r.reason
            ));
        }
        if refused.is_empty() {
            let _ = std::fs::remove_file(State::path(&run_dir));
        } else {
            // What was refused stays listed, for a look and another `down`.
            state.save(&run_dir)?;
        }
        reports.push(DownReport {
            node: name,
            stopped,
            removed,
            unmounted,
            unmount_failed: unmount_failed
                .into_iter()
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect(),
            purged,
            kept_mounts,
            refused,
        });
    }
    Ok(reports)
}

/// Stop each component that runs, in `units`' order (reverse start order), through its
/// supervisor; kbin's own state forgets each one as it is stopped.
fn stop_components(
    units: &[(Step, Option<ServiceUnit>)],
    state: &mut State,
    run_dir: &Path,
    opts: &DownOptions,
    supervisor: Supervisor,
    ui: &Ui,
) -> Result<Vec<StopReport>, UpError> {
    let mut stopped = Vec::new();
    for (s, unit) in units {
        if s.unit == "containerd" {
            remove_pods(unit.as_ref(), ui);
        }
        let mut error = None;
        if s.check == CheckKind::Oneshot {
            let Some(outcome) =
                undo_oneshot(s, unit.as_ref(), state, run_dir, supervisor, &mut error)?
            else {
                continue;
            };
            ui.status(format!(
                "{}: {}",
                s.unit,
                match &error {
                    None => "undone (its ExecStop= exited 0)".to_owned(),
                    Some(e) => format!("NOT undone: {e}"),
                }
            ));
            stopped.push(StopReport {
                component: s.unit.to_owned(),
                outcome,
                error,
            });
            continue;
        }
        let outcome = match supervisor {
            Supervisor::Systemd => {
                if systemd_main_pid(s.unit).is_none() {
                    continue;
                }
                match systemctl(&["stop", &format!("{}.service", s.unit)]) {
                    Ok(_) if systemd_main_pid(s.unit).is_none() => Stopped::Terminated,
                    Ok(_) => {
                        error = Some(
                            "systemctl stop returned, and the unit is still active".to_owned(),
                        );
                        Stopped::Failed
                    }
                    Err(e) => {
                        error = Some(e);
                        Stopped::Failed
                    }
                }
            }
            _ => {
                let o = match (
                    state.components.get(s.unit).cloned(),
                    state.starting.get(s.unit).cloned(),
                ) {
                    (Some(p), None) => process::stop(&p, opts.grace),
                    (None, Some(st)) => st.stop(opts.grace),
                    (Some(p), Some(st)) => {
                        // A restart killed between its spawn and its PID: the old one and the
                        // new one.
                        let old = process::stop(&p, opts.grace);
                        match st.stop(opts.grace) {
                            Stopped::NotRunning => old,
                            new => new,
                        }
                    }
                    (None, None) => continue,
                };
                state.components.remove(s.unit);
                state.starting.remove(s.unit);
                state.save(run_dir)?;
                o
            }
        };
        ui.status(format!(
            "{}: {}",
            s.unit,
            match outcome {
                Stopped::NotRunning => "was not running".to_owned(),
                Stopped::Terminated => "stopped (SIGTERM)".to_owned(),
                Stopped::Killed => format!("killed (SIGKILL after {}s)", opts.grace.as_secs()),
                Stopped::Failed => format!(
                    "NOT stopped: {}",
                    error.as_deref().unwrap_or("unknown cause")
                ),
            }
        ));
        stopped.push(StopReport {
            component: s.unit.to_owned(),
            outcome,
            error,
        });
    }
    Ok(stopped)
}

/// `down` of a oneshot (kbin-pod-network): its `ExecStop=`, or `systemctl stop` while systemd
/// has it active. `None` when it was never run here.
fn undo_oneshot(
    s: &Step,
    unit: Option<&ServiceUnit>,
    state: &mut State,
    run_dir: &Path,
    supervisor: Supervisor,
    error: &mut Option<String>,
) -> Result<Option<Stopped>, UpError> {
    if supervisor == Supervisor::Systemd {
        let active = systemctl(&["is-active", &format!("{}.service", s.unit)])
            .is_ok_and(|o| o.trim() == "active");
        if !active {
            return Ok(None);
        }
        return Ok(Some(
            match systemctl(&["stop", &format!("{}.service", s.unit)]) {
                Ok(_) => Stopped::Terminated,
                Err(e) => {
                    *error = Some(e);
                    Stopped::Failed
                }
            },
        ));
    }
    if !state.done.contains_key(s.unit) {
        return Ok(None);
    }
    let Some(stop) = unit.and_then(|u| u.exec_stop.clone()) else {
        // Its unit is gone from the tree: nothing says how to undo it.
        *error = Some("its unit (and so its ExecStop=) is no longer in the tree".into());
        return Ok(Some(Stopped::Failed));
    };
    let out = check::run_with_timeout(
        std::process::Command::new(&stop[0]).args(&stop[1..]),
        Duration::from_secs(60),
    );
    Ok(Some(match out {
        Ok(_) => {
            state.done.remove(s.unit);
            state.save(run_dir)?;
            Stopped::Terminated
        }
        Err(e) => {
            *error = Some(format!("{}: {e}", super::unit::shell_line(&stop)));
            Stopped::Failed
        }
    }))
}

/// Remove the files and directories the state lists, each only if it is kbin's
/// ([`KbinPaths`]); what is refused stays listed. How many were removed, and the refusals.
fn remove_placed(state: &mut State, node_tree: &Path) -> Result<(usize, Vec<Refusal>), UpError> {
    use std::os::unix::fs::MetadataExt as _;
    let owned = KbinPaths::of(node_tree)?;
    let mut removed = 0;
    let mut refused = Vec::new();
    for f in std::mem::take(&mut state.installed) {
        match owned.remove_file(&f) {
            Ok(n) => removed += n,
            Err(reason) => {
                refused.push(Refusal {
                    path: f.path().to_owned(),
                    reason,
                });
                state.installed.push(f);
            }
        }
    }
    // A temporary file a kill left before it was recorded, before the directories go.
    if let Some(p) = state.placing.take() {
        if owned.dirs.contains(&p.dir) {
            for t in p.left() {
                if std::fs::remove_file(&t).is_ok() {
                    removed += 1;
                }
            }
        } else {
            refused.push(Refusal {
                path: p.dir.clone(),
                reason: "not a directory the node's tree installs into".into(),
            });
            state.placing = Some(p);
        }
    }
    // The machine's own files come back where up had replaced them.
    for r in std::mem::take(&mut state.replaced) {
        let plain = r.backup == process::Replaced::backup_of(&r.path)
            && owned.files.contains(&r.path)
            && r.backup
                .symlink_metadata()
                .map_or(true, |m| m.is_file() || m.file_type().is_symlink());
        if !plain {
            refused.push(Refusal {
                path: r.backup.clone(),
                reason: "not the original kbin kept of a path the node's tree installs".into(),
            });
            state.replaced.push(r);
            continue;
        }
        let Ok(kept) = r.backup.symlink_metadata() else {
            continue;
        };
        match r.path.symlink_metadata() {
            // up was killed before its file replaced the original: both names are one file.
            Ok(m) if m.dev() == kept.dev() && m.ino() == kept.ino() => {
                std::fs::remove_file(&r.backup).map_err(io("cannot remove", &r.backup))?;
            }
            // kbin's file was removed above, so what is there now is someone else's (a file
            // refused above as replaced): it is not overwritten.
            Ok(_) => {
                refused.push(Refusal {
                    path: r.path.clone(),
                    reason: format!(
                        "it holds a file kbin did not place; the original stays at {}",
                        r.backup.display()
                    ),
                });
                state.replaced.push(r);
            }
            Err(_) => {
                std::fs::rename(&r.backup, &r.path).map_err(io("cannot put back", &r.path))?;
                removed += 1;
            }
        }
    }
    for d in std::mem::take(&mut state.created_dirs).into_iter().rev() {
        match owned.remove_dir(&d) {
            Ok(n) => removed += n,
            Err(reason) => {
                refused.push(Refusal {
                    path: d.clone(),
                    reason,
                });
                state.created_dirs.insert(0, d);
            }
        }
    }
    Ok((removed, refused))
}

/// `--purge`: etcd's data directory (from the tree's etcd unit) on a control plane, the
/// kubelet's on a worker; a directory outside what purge may delete is added to `refused`.
/// The directories purged and the mount points left in them.
fn purge_data(
    node: &crate::r#gen::spec::Node,
    units: &[(Step, Option<ServiceUnit>)],
    refused: &mut Vec<Refusal>,
    ui: &Ui,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), UpError> {
    let mut purged = Vec::new();
    let mut kept_mounts = Vec::new();
    let etcd_data = units
        .iter()
        .find(|(s, _)| s.unit == "etcd")
        .and_then(|(_, u)| u.as_ref())
        .and_then(|u| flag_value(&u.exec_start, "data-dir").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(paths::ETCD_DATA));
    let mut dirs = Vec::new();
    if node.control_plane {
        dirs.push(etcd_data);
    }
    if node.worker {
        dirs.push(PathBuf::from("/var/lib/kubelet"));
    }
    for d in dirs {
        if let Err(reason) = purge_root_ok(&d) {
            refused.push(Refusal { path: d, reason });
            continue;
        }
        match purge(&d)? {
            None => {}
            Some(kept) => {
                ui.status(format!("purged {}", d.display()));
                for k in &kept {
                    ui.warn(format!(
                        "{} is a mount point: not descended into, left as it is",
                        k.display()
                    ));
                }
                kept_mounts.extend(kept);
                purged.push(d);
            }
        }
    }
    Ok((purged, kept_mounts))
}

/// A path `down` would not touch, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The path.
    pub path: PathBuf,
    /// Why it was left alone.
    pub reason: String,
}

/// The paths a node's tree installs (`/` + each file of `DIR/nodes/<name>/` but install.sh) and
/// their parent directories: the only paths `down` removes, whatever the state file lists.
struct KbinPaths {
    files: std::collections::BTreeSet<PathBuf>,
    dirs: std::collections::BTreeSet<PathBuf>,
}

impl KbinPaths {
    fn of(tree: &Path) -> Result<KbinPaths, UpError> {
        let mut files = std::collections::BTreeSet::new();
        let mut dirs = std::collections::BTreeSet::new();
        if tree.is_dir() {
            for rel in crate::fsx::files_under(tree)? {
                if rel == Path::new("install.sh") {
                    continue;
                }
                let dst = Path::new("/").join(&rel);
                dirs.extend(dst.ancestors().skip(1).map(Path::to_path_buf));
                files.insert(dst);
            }
        }
        dirs.remove(Path::new("/"));
        Ok(KbinPaths { files, dirs })
    }

    /// Remove a placed file (and the temporary file a killed kbin left for it) if the path is
    /// one the tree installs and still holds the very file kbin wrote. How many were removed.
    fn remove_file(&self, f: &process::Placed) -> Result<usize, String> {
        use std::os::unix::fs::MetadataExt as _;
        let path = f.path();
        if !self.files.contains(path) {
            return Err("not a path the node's tree installs".into());
        }
        let mut n = 0;
        let is_it = |p: &Path, dev: u64, ino: u64| {
            p.symlink_metadata()
                .ok()
                .map(|m| m.is_file() && m.dev() == dev && m.ino() == ino)
        };
        match f {
            process::Placed::File { dev, ino, temp, .. } => {
                if let Some(t) = temp
                    && t.parent() == path.parent()
                    && t.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
                    && is_it(t, *dev, *ino) == Some(true)
                    && std::fs::remove_file(t).is_ok()
                {
                    n += 1;
                }
                match is_it(path, *dev, *ino) {
                    None => {}
                    Some(false) => {
                        return Err(
                            "it is no longer the file kbin placed (another device/inode): someone replaced it"
                                .into(),
                        );
                    }
                    Some(true) => {
                        std::fs::remove_file(path).map_err(|e| e.to_string())?;
                        n += 1;
                    }
                }
            }
            process::Placed::Path(_) => match path.symlink_metadata() {
                Err(_) => {}
                Ok(m) if !m.is_file() => {
                    return Err("not a regular file (a symlink?)".into());
                }
                Ok(_) => {
                    std::fs::remove_file(path).map_err(|e| e.to_string())?;
                    n += 1;
                }
            },
        }
        Ok(n)
    }

    /// Remove a directory kbin created, if the tree installs something under it and it is
    /// empty now: whatever a component wrote there (etcd's data) is `--purge`'s.
    fn remove_dir(&self, d: &Path) -> Result<usize, String> {
        if !self.dirs.contains(d) {
            return Err("not a directory the node's tree installs into".into());
        }
        match d.symlink_metadata() {
            Err(_) => Ok(0),
            Ok(m) if !m.is_dir() => Err("not a directory (a symlink?)".into()),
            Ok(_) => Ok(usize::from(std::fs::remove_dir(d).is_ok())),
        }
    }
}

/// Whether `--purge` may delete `d`: an absolute, plain path strictly below `/var/lib` (the etcd
/// data directory comes from the tree's etcd unit, which kbin does not vouch for).
pub(super) fn purge_root_ok(d: &Path) -> Result<(), String> {
    use std::path::Component;
    let plain = d.is_absolute()
        && d.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)));
    if plain && d.starts_with("/var/lib") && d.components().count() > 3 {
        Ok(())
    } else {
        Err("--purge deletes only plain paths below /var/lib".into())
    }
}

/// Every mount point of this mount namespace (`/proc/self/mountinfo`, octal escapes undone).
pub(super) fn mount_points() -> std::collections::BTreeSet<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect()
}

/// mountinfo's `\040`-style octal escapes (space, tab, newline, backslash) undone.
pub(super) fn unescape_mountinfo(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = |k: usize| u32::from(b[i + k] - b'0');
            // The kernel escapes only space, tab, newline and backslash: \\0xx and \\1xx.
            out.push((v(1) * 64 + v(2) * 8 + v(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `--purge` of one directory: delete everything under `root` without ever descending into a
/// mount (a mount point listed in mountinfo, a bind mount of the same filesystem included, or
/// a directory on another device) or following a symlink; `root` itself goes too unless it is a
/// mount point or holds one. `None` when `root` does not exist; else the mount points left.
pub(super) fn purge(root: &Path) -> Result<Option<Vec<PathBuf>>, UpError> {
    use std::os::unix::fs::MetadataExt as _;
    let m = match root.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot stat", root)(e)),
    };
    if !m.is_dir() {
        return Err(io("refusing to purge", root)(std::io::Error::other(
            "not a directory (a symlink?)",
        )));
    }
    let mounts = mount_points();
    let mut kept = Vec::new();
    let emptied = purge_dir(root, m.dev(), &mounts, &mut kept)?;
    if emptied && !mounts.contains(root) {
        std::fs::remove_dir(root).map_err(io("cannot delete", root))?;
    }
    Ok(Some(kept))
}

/// Delete what `dir` holds on device `dev`; whether it is empty now.
pub(super) fn purge_dir(
    dir: &Path,
    dev: u64,
    mounts: &std::collections::BTreeSet<PathBuf>,
    kept: &mut Vec<PathBuf>,
) -> Result<bool, UpError> {
    use std::os::unix::fs::MetadataExt as _;
    let mut emptied = true;
    for e in std::fs::read_dir(dir).map_err(io("cannot read", dir))? {
        let p = e.map_err(io("cannot read", dir))?.path();
        let m = p.symlink_metadata().map_err(io("cannot stat", &p))?;
        if m.is_dir() {
            if m.dev() != dev || mounts.contains(&p) {
                kept.push(p);
                emptied = false;
            } else if purge_dir(&p, dev, mounts, kept)? {
                std::fs::remove_dir(&p).map_err(io("cannot delete", &p))?;
            } else {
                emptied = false;
            }
        } else if mounts.contains(&p) {
            // A file bind-mounted over another.
            kept.push(p);
            emptied = false;
        } else {
            std::fs::remove_file(&p).map_err(io("cannot delete", &p))?;
        }
    }
    Ok(emptied)
}

/// Before containerd stops: stop and remove every pod sandbox, so no shim or container outlives
/// it (containerd's unit has KillMode=process: stopping it leaves them running on purpose).
pub(super) fn remove_pods(unit: Option<&ServiceUnit>, ui: &Ui) {
    let Some(unit) = unit else { return };
    let crictl = unit.program().with_file_name("crictl");
    if !crictl.is_file() || !Path::new(&cri_socket()).exists() {
        return;
    }
    let r = check::run_with_timeout(
        std::process::Command::new(&crictl).args([
            "--runtime-endpoint",
            paths::CRI_SOCKET,
            "rmp",
            "--all",
            "--force",
        ]),
        Duration::from_secs(60),
    );
    match r {
        Ok(out) if !out.trim().is_empty() => {
            ui.status(format!("pods removed: {}", out.trim().replace('\n', ", ")))
        }
        Ok(_) => {}
        Err(e) => ui.warn(format!("crictl rmp --all --force: {e}")),
    }
}

/// Where the kubelet and containerd leave mounts behind, and the name prefix of the ones that are
/// theirs: `/run/netns` also holds the network namespaces of everyone else on the machine (`ip
/// netns add`, other container engines), and only the pods' (`cni-<uuid>`, named by
/// containerd's CRI) are the cluster's to unmount.
pub static LEFT_MOUNTED: &[(&str, &str)] = &[
    ("/var/lib/kubelet", ""),
    ("/run/containerd", ""),
    ("/run/netns", "cni-"),
];

/// Unmount (lazily) every mount under `roots` whose first component below the root starts with
/// its prefix, deepest first: those unmounted, and those that could not be with the error.
pub(super) fn unmount_under(
    roots: &[(&str, &str)],
) -> (Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>) {
    let mut points: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|p| {
            roots.iter().any(|(root, prefix)| {
                p.strip_prefix(root)
                    .ok()
                    .and_then(|rest| rest.components().next())
                    .is_some_and(|first| first.as_os_str().to_string_lossy().starts_with(prefix))
            })
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for p in points {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: umount2 with a NUL-terminated path; MNT_DETACH never blocks on busy mounts.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            done.push(p);
        } else {
            failed.push((p, std::io::Error::last_os_error()));
        }
    }
    (done, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_original_is_put_back_only_where_nobody_else_has_written_since() {
        use std::os::unix::fs::MetadataExt as _;
        let tree = tempfile::tempdir().unwrap();
        let machine = tempfile::tempdir().unwrap();
        let rel = machine.path().strip_prefix("/").unwrap();
        std::fs::create_dir_all(tree.path().join(rel)).unwrap();
        let mut state = State::default();
        for name in ["ours", "theirs", "killed"] {
            std::fs::write(tree.path().join(rel).join(name), b"tree").unwrap();
            let path = machine.path().join(name);
            let backup = process::Replaced::backup_of(&path);
            std::fs::write(&backup, b"original").unwrap();
            match name {
                // up placed its file: down removes it and puts the original back.
                "ours" => {
                    std::fs::write(&path, b"tree").unwrap();
                    let m = std::fs::metadata(&path).unwrap();
                    state.installed.push(process::Placed::File {
                        path: path.clone(),
                        dev: m.dev(),
                        ino: m.ino(),
                        temp: None,
                    });
                }
                // Someone replaced kbin's file since: theirs stays, and so does the original.
                "theirs" => {
                    std::fs::write(&path, b"someone's").unwrap();
                    state.installed.push(process::Placed::File {
                        path: path.clone(),
                        dev: 0,
                        ino: 0,
                        temp: None,
                    });
                }
                // up was killed after keeping the original, before replacing it.
                _ => std::fs::hard_link(&backup, &path).unwrap(),
            }
            state.replaced.push(process::Replaced { path, backup });
        }
        let (_, refused) = remove_placed(&mut state, tree.path()).unwrap();
        let read = |n: &str| std::fs::read_to_string(machine.path().join(n)).unwrap();
        let kept = |n: &str| process::Replaced::backup_of(&machine.path().join(n)).exists();
        assert_eq!(read("ours"), "original");
        assert!(!kept("ours"));
        assert_eq!(read("theirs"), "someone's");
        assert!(kept("theirs"));
        assert_eq!(read("killed"), "original");
        assert!(!kept("killed"));
        let refused: Vec<&Path> = refused.iter().map(|r| r.path.as_path()).collect();
        let theirs = machine.path().join("theirs");
        assert_eq!(refused, [theirs.as_path(), theirs.as_path()]);
        assert_eq!(state.replaced.len(), 1);
        assert_eq!(state.replaced[0].path, theirs);
    }
}
