//! `kbin up`, `kbin down`, `kbin status`: run the generated node(s) that live on this machine, in
//! order, with a check after every step.
//!
//! # Installed, not mapped
//! `up` **installs** the node's tree (`DIR/nodes/<name>/`, everything but `install.sh`) into the
//! machine's real paths, exactly as `install.sh` would (`/etc/kubernetes/…`,
//! `/var/lib/kubelet/config.yaml`, `/usr/local/bin/…`), then runs each unit's `ExecStart=` as
//! written. Nothing is rewritten: not a flag, not a path inside a config file. Running in place
//! with mapped paths would have meant rewriting the flags *and* every path inside the kubelet,
//! kube-proxy, scheduler and containerd configs, and the kubelet and containerd keep state at
//! fixed paths anyway (`/var/lib/kubelet`, `/run/containerd`). What `up` placed outside DIR is
//! listed in the state file and removed by `down`; installing a file that is already identical
//! writes nothing, so `up` twice changes nothing.
//!
//! # Who runs the processes
//! With systemd as PID 1, `up` uses it (`systemctl daemon-reload`, `systemctl start --no-block`:
//! the installed units are the generated ones). Otherwise ([`process`]) kbin supervises them
//! itself: one process group each, logs in `DIR/run/<node>/<component>.log`, PIDs in
//! `DIR/run/<node>/state.json`.
//!
//! # Steps
//! [`STEPS`] is the table: the units in [`bundle::UNITS`] order, each with its check and
//! timeout. A step whose component already runs and passes its check is kept. A step that fails
//! stops `up` and leaves everything already started running; interrupting `up` stops only the
//! component that was not up yet.

mod addons;
pub mod check;
mod down;
mod install;
pub mod preflight;
pub mod process;
mod status;
mod steps;
mod systemd;
pub mod unit;

pub use check::Checker;
pub use down::{DownOptions, DownReport, LEFT_MOUNTED, Refusal, StopReport, down};
pub use install::install;
pub use status::{
    ComponentStatus, NodeStatus, STATUS_HEALTHY, STATUS_NOT_HEALTHY, healthy, status,
};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::r#gen::bundle::{self, Role};
use crate::r#gen::configs::paths;
use crate::r#gen::spec::{ClusterSpec, Node};
use crate::ui::Ui;
use process::{Proc, State};
use steps::{Progress, import_images, run_step, step_error};
use systemd::{systemctl, systemd_main_pid};
use unit::ServiceUnit;

/// The check that says a step is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// etcd `GET /health` on its client URL with the healthcheck client certificate.
    EtcdHealth,
    /// kube-apiserver `GET /readyz` with admin.conf.
    Readyz,
    /// `GET /healthz` on the component's secure port, then its lease in kube-system.
    HealthzAndLease {
        /// The secure port when the unit gives no `--secure-port`.
        port: u16,
        /// The lease it holds once elected.
        lease: &'static str,
        /// Then the ServiceAccount default/default, which the controller manager's
        /// serviceaccount controller makes a moment after it is elected: until then the API
        /// server refuses every pod of the namespace ("serviceaccount \"default\" not found"),
        /// so a `kubectl run` right after `up` would fail.
        default_service_account: bool,
    },
    /// containerd answers on its socket (`ctr version`).
    ContainerdSocket,
    /// The Node exists (its podCIDR is then set) and is Ready.
    NodeReady,
    /// kube-proxy `GET /healthz` on 10256 (plain HTTP, as kube-proxy serves it).
    ProxyHealthz,
    /// A `Type=oneshot` unit: its `ExecStart=` ran to completion with exit status 0 (its
    /// `ExecStop=` undoes it at `down`).
    Oneshot,
}

/// One step of `up`: a unit of [`bundle::UNITS`], its check and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The unit's name.
    pub unit: &'static str,
    /// The role whose nodes run it.
    pub role: Role,
    /// Its check.
    pub check: CheckKind,
    /// How long the check may take to pass.
    pub timeout: Duration,
}

const fn step(unit: &'static str, role: Role, check: CheckKind, secs: u64) -> Step {
    Step {
        unit,
        role,
        check,
        timeout: Duration::from_secs(secs),
    }
}

/// Start order, checks and timeouts (a test keeps it in step with [`bundle::UNITS`]).
pub static STEPS: &[Step] = &[
    step("etcd", Role::ControlPlane, CheckKind::EtcdHealth, 60),
    step("kube-apiserver", Role::ControlPlane, CheckKind::Readyz, 120),
    step(
        "kube-controller-manager",
        Role::ControlPlane,
        CheckKind::HealthzAndLease {
            port: 10257,
            lease: "kube-controller-manager",
            default_service_account: true,
        },
        90,
    ),
    step(
        "kube-scheduler",
        Role::ControlPlane,
        CheckKind::HealthzAndLease {
            port: 10259,
            lease: "kube-scheduler",
            default_service_account: false,
        },
        90,
    ),
    step("kbin-pod-network", Role::Worker, CheckKind::Oneshot, 60),
    step("containerd", Role::Worker, CheckKind::ContainerdSocket, 60),
    step("kubelet", Role::Worker, CheckKind::NodeReady, 180),
    step("kube-proxy", Role::Worker, CheckKind::ProxyHealthz, 90),
];

/// How long `up` waits for the add-ons' rollout (CoreDNS's pods Running and ready).
pub const ADDONS_TIMEOUT: Duration = Duration::from_secs(240);

/// Errors of `up`, `down` and `status`.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// Reading or writing a file failed, with its path.
    #[error(transparent)]
    Path(#[from] crate::fsx::PathIo),
    /// The cluster tree cannot be read.
    #[error("cannot read the cluster tree in {dir}")]
    Spec {
        /// DIR.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: crate::r#gen::spec::SpecError,
    },
    /// No node of the tree is this machine.
    #[error("no node of {dir} lives on this machine (nodes: {nodes})")]
    NoLocalNode {
        /// DIR.
        dir: PathBuf,
        /// `name=ip` of every node.
        nodes: String,
    },
    /// `--node NAME` names no node.
    #[error("the cluster in {dir} has no node {name:?} (nodes: {nodes})")]
    UnknownNode {
        /// DIR.
        dir: PathBuf,
        /// The name given.
        name: String,
        /// `name=ip` of every node.
        nodes: String,
    },
    /// The node's tree is missing (a `--pki-only` tree, or gen failed).
    #[error("{tree} is missing: `kbin up` runs the node trees `kbin gen cluster` writes")]
    NoTree {
        /// `DIR/nodes/<name>`.
        tree: PathBuf,
    },
    /// A unit cannot be run.
    #[error(transparent)]
    Unit(#[from] unit::UnitError),
    /// Prerequisites are missing.
    #[error("this machine is not ready to run node {node}:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Preflight {
        /// The node.
        node: String,
        /// Each problem with its fix.
        problems: Vec<preflight::Problem>,
    },
    /// A step failed (boxed: it carries the log tail).
    #[error("{} on node {}: {}", .0.component, .0.node, .0.what)]
    Step(Box<StepFailure>),
    /// Writing a file failed.
    #[error(transparent)]
    Write(#[from] crate::r#gen::WriteError),
}

/// Why a step failed, with what the user needs to look further.
#[derive(Debug)]
pub struct StepFailure {
    /// The node.
    pub node: String,
    /// The component.
    pub component: String,
    /// What went wrong (the check and its last answer).
    pub what: String,
    /// The component's log.
    pub log: PathBuf,
    /// Its last lines.
    pub tail: Vec<String>,
    /// Where to look further.
    pub next: String,
}

/// [`crate::fsx::at`] into this module's error (so `?` needs no type annotation).
fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> UpError + 'a {
    crate::fsx::at(action, path)
}

/// Who runs the components.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Supervisor {
    /// systemd when it is PID 1, kbin otherwise.
    #[default]
    Auto,
    /// kbin itself (process groups, logs under DIR/run).
    Kbin,
    /// systemd (`systemctl start`).
    Systemd,
}

impl Supervisor {
    /// `Auto` resolved for this machine.
    pub fn resolve(self) -> Supervisor {
        match self {
            Supervisor::Auto => {
                let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
                if pid1.trim() == "systemd" {
                    Supervisor::Systemd
                } else {
                    Supervisor::Kbin
                }
            }
            s => s,
        }
    }
}

/// What `up` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// The cluster tree (DIR).
    pub out: PathBuf,
    /// Only this node (else every node whose address is this machine's).
    pub node: Option<String>,
    /// Start etcd and the control plane only (no root needed for containerd, kubelet, kube-proxy).
    pub control_plane_only: bool,
    /// Image archives (a file, or a directory of `.tar` files) to import before the kubelet.
    pub images: Option<PathBuf>,
    /// Every step's timeout instead of the table's.
    pub timeout: Option<Duration>,
    /// Who runs the components.
    pub supervisor: Supervisor,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The component.
    pub component: String,
    /// `started`, `kept` (already running and healthy) or `ran` (a oneshot, by kbin).
    pub action: &'static str,
    /// Its PID (kbin's supervisor or systemd's MainPID).
    pub pid: Option<i32>,
    /// What the check saw.
    pub check: String,
    /// Seconds from start (or from the first check of a kept one) to healthy.
    pub seconds: f64,
    /// What else was done after the check (RBAC binding, podCIDR, image imports).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What `up` did on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The node.
    pub node: String,
    /// Who runs its components.
    pub supervisor: Supervisor,
    /// Files written into the machine's paths (unchanged ones are not counted).
    pub files_written: usize,
    /// The steps, in order.
    pub steps: Vec<StepReport>,
    /// Seconds spent installing the node's tree into the machine's paths.
    pub install_seconds: f64,
    /// Seconds spent importing `--images` (0 without).
    pub images_seconds: f64,
    /// Seconds for the whole node.
    pub seconds: f64,
}

/// The cluster and where its node trees and run directories are.
#[derive(Debug, Clone)]
pub struct Tree {
    /// DIR.
    pub out: PathBuf,
    /// `DIR/cluster.toml`.
    pub spec: ClusterSpec,
}

impl Tree {
    /// Read `DIR/cluster.toml`.
    pub fn load(out: &Path) -> Result<Tree, UpError> {
        let spec = crate::r#gen::load_spec(out).map_err(|source| UpError::Spec {
            dir: out.to_owned(),
            source,
        })?;
        Ok(Tree {
            out: out.to_owned(),
            spec,
        })
    }

    fn node_list(&self) -> String {
        self.spec
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.ip))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The node called `name`, or every node whose address is one of this machine's.
    pub fn local_nodes(&self, name: Option<&str>) -> Result<Vec<Node>, UpError> {
        if let Some(name) = name {
            return self
                .spec
                .node(name)
                .cloned()
                .map(|n| vec![n])
                .ok_or_else(|| UpError::UnknownNode {
                    dir: self.out.clone(),
                    name: name.to_owned(),
                    nodes: self.node_list(),
                });
        }
        let local: Vec<Node> = self
            .spec
            .nodes
            .iter()
            .filter(|n| crate::r#gen::host::is_own_address(n.ip))
            .cloned()
            .collect();
        if local.is_empty() {
            return Err(UpError::NoLocalNode {
                dir: self.out.clone(),
                nodes: self.node_list(),
            });
        }
        Ok(local)
    }

    /// `DIR/nodes/<name>`.
    pub fn node_tree(&self, node: &str) -> PathBuf {
        bundle::nodes_dir(&self.out).join(node)
    }

    /// `DIR/run/<name>`.
    pub fn run_dir(&self, node: &str) -> PathBuf {
        self.out.join("run").join(node)
    }

    /// The steps `node` runs, with their parsed units.
    pub fn steps(
        &self,
        node: &Node,
        control_plane_only: bool,
    ) -> Result<Vec<(Step, ServiceUnit)>, UpError> {
        let tree = self.node_tree(&node.name);
        if !tree.is_dir() {
            return Err(UpError::NoTree { tree });
        }
        let mut out = Vec::new();
        for s in STEPS {
            let runs = match s.role {
                Role::ControlPlane => node.control_plane,
                Role::Worker => node.worker && !control_plane_only,
            };
            if runs {
                let path = tree.join(format!("etc/systemd/system/{}.service", s.unit));
                out.push((*s, ServiceUnit::load(&path)?));
            }
        }
        Ok(out)
    }
}

/// The value of `--name=` in a command line.
pub fn flag_value<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    words.iter().find_map(|w| w.strip_prefix(&prefix))
}

fn interrupted() -> bool {
    crate::r#gen::interrupt::check().is_err()
}

/// `kbin up`: bring up every selected node, in order, checking each step.
pub fn up(opts: &UpOptions, ui: &Ui) -> Result<Vec<NodeReport>, UpError> {
    crate::r#gen::interrupt::install();
    let tree = Tree::load(&opts.out)?;
    let nodes = tree.local_nodes(opts.node.as_deref())?;
    let supervisor = opts.supervisor.resolve();
    let mut reports = Vec::new();
    for node in &nodes {
        reports.push(up_node(&tree, node, opts, supervisor, ui)?);
    }
    Ok(reports)
}

/// Bring up one node: preflight, install its tree, then its steps in order (images imported
/// before the kubelet). About 105 lines, read top to bottom as the order `up` does things in.
fn up_node(
    tree: &Tree,
    node: &Node,
    opts: &UpOptions,
    supervisor: Supervisor,
    ui: &Ui,
) -> Result<NodeReport, UpError> {
    let began = Instant::now();
    let steps = tree.steps(node, opts.control_plane_only)?;
    let run_dir = tree.run_dir(&node.name);
    State::prepare_dir(&run_dir).map_err(io("cannot create", &run_dir))?;
    let _lock = crate::r#gen::OutLock::acquire(&run_dir, || {
        ui.status(format!(
            "waiting for another kbin up/down on node {}",
            node.name
        ))
    })?;
    let mut state =
        State::load(&run_dir, &node.name).map_err(io("cannot read", &State::path(&run_dir)))?;
    // What already runs holds its ports: a second `up` keeps it (under systemd the unit's main
    // PID says so; kbin's own state file tracks only what kbin supervises).
    let running: Vec<&str> = steps
        .iter()
        .filter(|(s, _)| match supervisor {
            Supervisor::Systemd => systemd_main_pid(s.unit).is_some_and(|p| p > 0),
            _ => state.components.get(s.unit).is_some_and(Proc::alive),
        })
        .map(|(s, _)| s.unit)
        .collect();
    let problems = preflight::check(tree, node, &steps, &running, opts, supervisor);
    if !problems.is_empty() {
        return Err(UpError::Preflight {
            node: node.name.clone(),
            problems,
        });
    }
    let mut progress = Progress::new(ui);
    let installing = Instant::now();
    let files_written = install(&tree.node_tree(&node.name), &mut state, &run_dir)?;
    let install_seconds = installing.elapsed().as_secs_f64();
    progress.line(format!(
        "node {}: installed {} into / ({files_written} file(s) changed)",
        node.name,
        tree.node_tree(&node.name).display()
    ));
    if supervisor == Supervisor::Systemd {
        systemctl(&["daemon-reload"])
            .map_err(|e| step_error(node, "systemd", e, &run_dir.join("none"), String::new()))?;
    }
    let checker = Checker::new(tree, node);
    let mut reports = Vec::new();
    let mut images_seconds = 0.0;
    for (step, unit) in &steps {
        if interrupted() {
            break;
        }
        // --images, else the archives the node's bundle brought (a toolchain's pulled images).
        let bundled = Path::new("/").join(paths::IMAGES.trim_start_matches('/'));
        let images = opts
            .images
            .clone()
            .or_else(|| bundled.is_dir().then_some(bundled));
        if step.unit == "kubelet"
            && let Some(images) = &images
        {
            let importing = Instant::now();
            let notes = import_images(images, &steps, node, &run_dir)?;
            images_seconds = importing.elapsed().as_secs_f64();
            for n in &notes {
                progress.line(format!("  images: {n}"));
            }
        }
        let timeout = opts.timeout.unwrap_or(step.timeout);
        if step.check == CheckKind::Oneshot {
            let report = steps::run_oneshot(
                node,
                step,
                unit,
                timeout,
                supervisor,
                &mut state,
                &run_dir,
                &mut progress,
            )?;
            reports.push(report);
            continue;
        }
        let report = run_step(
            tree,
            node,
            step,
            unit,
            timeout,
            supervisor,
            &checker,
            &mut state,
            &run_dir,
            &mut progress,
        )?;
        reports.push(report);
    }
    if interrupted() {
        return Err(step_error(
            node,
            "kbin up",
            "interrupted: the components already up keep running (`kbin down` stops them)".into(),
            &run_dir,
            format!("kbin status --out {}", tree.out.display()),
        ));
    }
    // The cluster's add-ons (CoreDNS) once this worker's Node is Ready and kube-proxy routes
    // Services: CoreDNS reaches the API through the `kubernetes` Service.
    if node.worker && !opts.control_plane_only {
        let timeout = opts.timeout.unwrap_or(ADDONS_TIMEOUT);
        if let Some(r) = addons::apply(tree, node, timeout, &run_dir, &mut progress)? {
            reports.push(r);
        }
    }
    Ok(NodeReport {
        node: node.name.clone(),
        supervisor,
        files_written,
        steps: reports,
        install_seconds,
        images_seconds,
        seconds: began.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_bundle_start_order_and_roles() {
        let steps: Vec<(Role, &str)> = STEPS.iter().map(|s| (s.role, s.unit)).collect();
        assert_eq!(steps, bundle::UNITS.to_vec());
    }
}
