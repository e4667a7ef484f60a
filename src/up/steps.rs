//! One step of `up`: start its component (or keep the one that runs), wait for its check, and
//! what the step does after it (the admins' RBAC binding, image imports).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::check::{self, Checker, Kube, cri_socket};
use super::process::{self, State};
use super::systemd::{systemctl, systemd_main_pid};
use super::unit::ServiceUnit;
use super::{CheckKind, Step, StepFailure, StepReport, Supervisor, Tree, UpError, interrupted, io};
use crate::r#gen::configs::paths;
use crate::r#gen::spec::Node;
use crate::ui::Ui;

/// Progress: a spinner on a terminal, a line per step otherwise, nothing with `-q`/`--json`.
pub(super) struct Progress<'a> {
    ui: &'a Ui,
    bar: Option<indicatif::ProgressBar>,
}

impl<'a> Progress<'a> {
    pub(super) fn new(ui: &'a Ui) -> Self {
        Progress { ui, bar: None }
    }

    pub(super) fn waiting(&mut self, msg: String) {
        if self.ui.progress() {
            let bar = self.bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.enable_steady_tick(Duration::from_millis(120));
                b
            });
            bar.set_message(msg);
        } else {
            self.ui.detail(msg);
        }
    }

    pub(super) fn line(&mut self, msg: String) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.ui.status(msg);
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

pub(super) fn step_error(
    node: &Node,
    component: &str,
    what: String,
    log: &Path,
    next: String,
) -> UpError {
    UpError::Step(Box::new(StepFailure {
        node: node.name.clone(),
        component: component.to_owned(),
        what,
        log: log.to_owned(),
        tail: crate::util::tail_lines(log, 30),
        next,
    }))
}

/// After an interrupt, stop what this run started of the step's component; what became of
/// it, for the message (true under either supervisor).
fn stop_interrupted(
    name: &str,
    action: &str,
    supervisor: Supervisor,
    child: Option<Child>,
    state: &mut State,
    run_dir: &Path,
) -> Result<String, UpError> {
    Ok(if let Some(mut c) = child {
        if let Some(p) = state.components.remove(name) {
            process::stop(&p, Duration::from_secs(5));
        }
        let _ = c.wait();
        state.save(run_dir)?;
        "it was stopped".to_owned()
    } else if supervisor == Supervisor::Systemd && action == "started" {
        match systemctl(&["stop", &format!("{name}.service")]) {
            Ok(_) => "it was stopped (systemctl stop)".to_owned(),
            Err(e) => format!("it is still running: {e}"),
        }
    } else {
        "it was already running before this run and keeps running".to_owned()
    })
}

/// Keep the component if it already runs (up twice), else start it through `supervisor`:
/// `started` or `kept`, its PID, and the child when kbin started it.
fn start(
    node: &Node,
    name: &'static str,
    unit: &ServiceUnit,
    supervisor: Supervisor,
    state: &mut State,
    run_dir: &Path,
    log: &Path,
) -> Result<(&'static str, Option<i32>, Option<Child>), UpError> {
    let look = |log: &Path| match supervisor {
        Supervisor::Systemd => format!("journalctl -u {name} -n 200 --no-pager"),
        _ => format!("less {}", log.display()),
    };
    // Already running (up twice): keep it if it passes its check; a running one that does not
    // is given its timeout like a fresh start (it may still be starting).
    let kept = match supervisor {
        Supervisor::Systemd => systemd_main_pid(name).filter(|p| *p > 0),
        _ => state
            .components
            .get(name)
            .filter(|p| p.alive())
            .map(|p| p.pid),
    };
    let started = match kept {
        Some(pid) => ("kept", Some(pid), None),
        None => match supervisor {
            Supervisor::Systemd => {
                systemctl(&["start", "--no-block", &format!("{name}.service")])
                    .map_err(|e| step_error(node, name, e, log, look(log)))?;
                ("started", systemd_main_pid(name), None)
            }
            _ => {
                let cannot = |e: std::io::Error| {
                    step_error(
                        node,
                        name,
                        format!("cannot start {}: {e}", unit.program().display()),
                        log,
                        look(log),
                    )
                };
                // Its mark is recorded before the spawn, its PID right after: a kbin killed
                // in between still leaves `kbin down` a way to find it.
                let starting = process::Starting::new().map_err(cannot)?;
                let id = starting.invocation_id.clone();
                state.starting.insert(name.to_owned(), starting);
                state.save(run_dir)?;
                let (c, p) = process::spawn(unit, log, &id).map_err(cannot)?;
                let pid = p.pid;
                state.components.insert(name.to_owned(), p);
                state.starting.remove(name);
                state.save(run_dir)?;
                ("started", Some(pid), Some(c))
            }
        },
    };
    Ok(started)
}

/// Run one step: start (or keep) its component, then probe its check until it passes, the
/// component exits, the timeout passes or kbin is interrupted. About 110 lines: the wait loop's
/// four exits each report from the same locals (log, last answer, child), which splitting would
/// only pass around.
#[allow(clippy::too_many_arguments)] // one step needs each of these; a struct would only rename them
pub(super) fn run_step(
    tree: &Tree,
    node: &Node,
    step: &Step,
    unit: &ServiceUnit,
    timeout: Duration,
    supervisor: Supervisor,
    checker: &Checker,
    state: &mut State,
    run_dir: &Path,
    progress: &mut Progress,
) -> Result<StepReport, UpError> {
    let name = step.unit;
    let log = run_dir.join(format!("{name}.log"));
    let what = checker.describe(step, unit);
    let mut notes = Vec::new();
    let look = |log: &Path| match supervisor {
        Supervisor::Systemd => format!("journalctl -u {name} -n 200 --no-pager"),
        _ => format!("less {}", log.display()),
    };
    let began = Instant::now();
    let (action, pid, mut child) = start(node, name, unit, supervisor, state, run_dir, &log)?;
    progress.line(format!(
        "{name}: {action}{} — waiting for {what} (up to {}s)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        timeout.as_secs()
    ));
    if action == "started" && supervisor != Supervisor::Systemd {
        progress.ui.detail(format!("  {}", unit.command_line()));
    }
    let deadline = began + timeout;
    let mut last = String::from("no answer yet");
    loop {
        if interrupted() {
            // Interrupted before it was up: what this run started is stopped, and the message
            // says what really happened to it.
            let what_became =
                stop_interrupted(name, action, supervisor, child.take(), state, run_dir)?;
            return Err(step_error(
                node,
                name,
                format!(
                    "interrupted before it was up: {what_became}; the components before it keep running (`kbin down` stops them)"
                ),
                &log,
                format!("kbin status --out {}", tree.out.display()),
            ));
        }
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(step_error(
                node,
                name,
                format!("exited ({status}) before its check passed; last check: {what}: {last}"),
                &log,
                look(&log),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = left.clamp(Duration::from_millis(200), Duration::from_secs(3));
        match checker.probe(step, unit, attempt, &mut notes) {
            Ok(seen) => {
                let secs = began.elapsed().as_secs_f64();
                progress.line(format!("{name}: healthy in {secs:.1}s — {seen}"));
                if step.check == CheckKind::Readyz {
                    match grant_admins(tree, attempt.max(Duration::from_secs(5))) {
                        Ok(n) => notes.push(n),
                        Err(e) => {
                            return Err(step_error(
                                node,
                                name,
                                format!("granting kubeadm:cluster-admins: {e}"),
                                &log,
                                look(&log),
                            ));
                        }
                    }
                }
                for n in &notes {
                    progress.line(format!("  {n}"));
                }
                // A kept child of this run is left to run on after kbin exits.
                drop(child);
                return Ok(StepReport {
                    component: name.to_owned(),
                    action,
                    pid,
                    check: seen,
                    seconds: secs,
                    notes,
                });
            }
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(step_error(
                node,
                name,
                format!(
                    "not healthy after {}s (it keeps running); check: {what}; last answer: {last}",
                    timeout.as_secs()
                ),
                &log,
                look(&log),
            ));
        }
        progress.waiting(format!("{name}: {last}"));
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Run a `Type=oneshot` step (kbin-pod-network): its `ExecStart=` to completion, exit 0 being
/// its check. Recorded in the state before it runs, so that `down` runs its `ExecStop=` even
/// after a kbin killed midway (both are idempotent). Run again by every `up`: what it sets up
/// may have been lost (a reboot), and running it again changes nothing otherwise.
#[allow(clippy::too_many_arguments)] // as run_step: one step needs each of these
pub(super) fn run_oneshot(
    node: &Node,
    step: &Step,
    unit: &ServiceUnit,
    timeout: Duration,
    supervisor: Supervisor,
    state: &mut State,
    run_dir: &Path,
    progress: &mut Progress,
) -> Result<StepReport, UpError> {
    let name = step.unit;
    let log = run_dir.join(format!("{name}.log"));
    let began = Instant::now();
    let (action, result) = if supervisor == Supervisor::Systemd {
        // systemctl start waits for a oneshot to finish: its exit status is the result.
        ("started", systemctl(&["start", &format!("{name}.service")]))
    } else {
        state
            .done
            .insert(name.to_owned(), crate::util::now_rfc3339());
        state.save(run_dir)?;
        let out = crate::util::run_with_timeout(
            std::process::Command::new(unit.program()).args(&unit.exec_start[1..]),
            timeout,
        );
        let result = match out {
            Ok(o) => {
                let mut text = o.stdout;
                text.extend_from_slice(&o.stderr);
                let _ = std::fs::write(&log, &text);
                if o.status.success() {
                    Ok(String::new())
                } else {
                    Err(format!("{} exited ({})", unit.command_line(), o.status))
                }
            }
            Err(e) => Err(format!(
                "{}: {}",
                unit.command_line(),
                crate::util::chain(&e)
            )),
        };
        ("ran", result)
    };
    if let Err(e) = result {
        let look = match supervisor {
            Supervisor::Systemd => format!("journalctl -u {name} -n 200 --no-pager"),
            _ => format!("less {}", log.display()),
        };
        return Err(step_error(node, name, e, &log, look));
    }
    let secs = began.elapsed().as_secs_f64();
    let seen = format!("{} exited 0", unit.command_line());
    progress.line(format!("{name}: {action}, done in {secs:.1}s — {seen}"));
    Ok(StepReport {
        component: name.to_owned(),
        action,
        pid: None,
        check: seen,
        seconds: secs,
        notes: vec![],
    })
}

/// NEXT-STEPS.md's clusterrolebinding, made with super-admin.conf: admin.conf's group
/// `kubeadm:cluster-admins` gets cluster-admin, as kubeadm does. Already there is fine.
pub(super) fn grant_admins(tree: &Tree, t: Duration) -> Result<String, String> {
    let kube = Kube::load(&tree.out.join("kubeconfigs/super-admin.conf"))?;
    let body = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "kubeadm:cluster-admins"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}]
    });
    let r = kube.call(
        reqwest::Method::POST,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        Some(("application/json", body.to_string())),
        t,
    )?;
    match r.status {
        200 | 201 => {
            Ok("clusterrolebinding kubeadm:cluster-admins created (super-admin.conf)".into())
        }
        409 => Ok("clusterrolebinding kubeadm:cluster-admins already there".into()),
        s => Err(format!("HTTP {s} {}", r.body.trim())),
    }
}

/// The line `up` prints for one imported archive. What ctr says on stdout varies: Debian's ctr 1.6
/// what it unpacked, ctr 2.3.4 its progress table in three of four runs of scripts/e2e-up and
/// nothing in the fourth, which left the line ending in a colon.
fn import_note(file: &Path, ctr_stdout: &str) -> String {
    match ctr_stdout.trim() {
        "" => format!("imported {}", file.display()),
        out => format!("imported {}: {}", file.display(), out.replace('\n', "; ")),
    }
}

/// `ctr -n k8s.io images import` for `images` (a file, or every `.tar` in a directory), then
/// whether the pause image containerd's config names is there.
pub(super) fn import_images(
    images: &Path,
    steps: &[(Step, ServiceUnit)],
    node: &Node,
    run_dir: &Path,
) -> Result<Vec<String>, UpError> {
    let Some((_, containerd)) = steps.iter().find(|(s, _)| s.unit == "containerd") else {
        return Ok(vec![]);
    };
    let ctr = containerd.program().with_file_name("ctr");
    let socket = cri_socket();
    let files: Vec<PathBuf> = if images.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(images)
            .map_err(io("cannot read", images))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
            .collect();
        v.sort();
        v
    } else {
        vec![images.to_owned()]
    };
    let log = run_dir.join("containerd.log");
    let mut notes = Vec::new();
    for f in &files {
        let out = check::run_with_timeout(
            std::process::Command::new(&ctr)
                .args(["--address", &socket, "-n", "k8s.io", "images", "import"])
                .arg(f),
            Duration::from_secs(300),
        )
        .map_err(|e| {
            step_error(
                node,
                "images",
                format!(
                    "{} -n k8s.io images import {}: {e}",
                    ctr.display(),
                    f.display()
                ),
                &log,
                format!("{} --address {socket} -n k8s.io images ls", ctr.display()),
            )
        })?;
        notes.push(import_note(f, &out));
    }
    let pause = pause_image(&Path::new("/").join(paths::CONTAINERD_CONFIG.trim_start_matches('/')));
    if let Some(pause) = pause {
        let list = check::run_with_timeout(
            std::process::Command::new(&ctr).args([
                "--address",
                &socket,
                "-n",
                "k8s.io",
                "images",
                "ls",
                "-q",
            ]),
            Duration::from_secs(30),
        )
        .unwrap_or_default();
        if list.lines().any(|l| l.trim() == pause) {
            notes.push(format!("the pause image {pause} is there"));
        } else {
            notes.push(format!(
                "warning: the pause image {pause} (named by {}) is not in containerd's k8s.io namespace: pods cannot start without a registry; import an archive of it with --images",
                paths::CONTAINERD_CONFIG
            ));
        }
    }
    Ok(notes)
}

/// The sandbox (pause) image containerd's config names (`sandbox_image` or `sandbox`).
pub(super) fn pause_image(config: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    fn find(v: &toml::Value) -> Option<String> {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    if let (true, toml::Value::String(s)) =
                        (k == "sandbox_image" || k == "sandbox", v)
                    {
                        return Some(s.clone());
                    }
                    if let Some(s) = find(v) {
                        return Some(s);
                    }
                }
                None
            }
            _ => None,
        }
    }
    find(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_image_is_read_from_either_containerd_config_version() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"registry.k8s.io/pause:3.9\"\n").unwrap();
        assert_eq!(
            pause_image(&p).as_deref(),
            Some("registry.k8s.io/pause:3.9")
        );
        std::fs::write(&p, "version = 3\n[plugins.\"io.containerd.cri.v1.images\".pinned_images]\nsandbox = \"registry.k8s.io/pause:3.10.1\"\n").unwrap();
        assert_eq!(
            pause_image(&p).as_deref(),
            Some("registry.k8s.io/pause:3.10.1")
        );
    }

    #[test]
    fn an_import_that_ctr_reports_nothing_for_ends_without_a_dangling_colon() {
        let f = Path::new("/tmp/pause.tar");
        assert_eq!(import_note(f, "\n"), "imported /tmp/pause.tar");
        assert_eq!(
            import_note(f, "unpacking a...done\nunpacking b...done\n"),
            "imported /tmp/pause.tar: unpacking a...done; unpacking b...done"
        );
    }
}
