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

pub mod check;
pub mod preflight;
pub mod process;
pub mod unit;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::r#gen::bundle::{self, Role};
use crate::r#gen::configs::paths;
use crate::r#gen::spec::{ClusterSpec, Node};
use crate::ui::Ui;
use check::{Kube, Probe, Tls};
use process::{Proc, State, Stopped};
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
    step("containerd", Role::Worker, CheckKind::ContainerdSocket, 60),
    step("kubelet", Role::Worker, CheckKind::NodeReady, 180),
    step("kube-proxy", Role::Worker, CheckKind::ProxyHealthz, 90),
];

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
    /// `started` or `kept` (already running and healthy).
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

/// Probes one step's check. Holds what every check needs: the cluster tree and the node.
pub struct Checker<'a> {
    tree: &'a Tree,
    node: &'a Node,
}

impl<'a> Checker<'a> {
    /// For `node` of `tree`.
    pub fn new(tree: &'a Tree, node: &'a Node) -> Self {
        Checker { tree, node }
    }

    fn admin(&self) -> Result<Kube, String> {
        Kube::load(&self.tree.out.join("kubeconfigs/admin.conf"))
    }

    /// What the check of `step` asks, for messages.
    pub fn describe(&self, step: &Step, unit: &ServiceUnit) -> String {
        match step.check {
            CheckKind::EtcdHealth => {
                format!("GET {}/health (healthcheck-client cert)", etcd_url(unit))
            }
            CheckKind::Readyz => format!(
                "GET {}/readyz (admin.conf)",
                self.tree.spec.api_server_url()
            ),
            CheckKind::HealthzAndLease {
                port,
                lease,
                default_service_account,
            } => format!(
                "GET {}/healthz, then lease kube-system/{lease}{}",
                secure_url(unit, port),
                if default_service_account {
                    ", then ServiceAccount default/default"
                } else {
                    ""
                }
            ),
            CheckKind::ContainerdSocket => format!("ctr version on {}", cri_socket()),
            CheckKind::NodeReady => format!("Node {} registered and Ready", self.node.name),
            CheckKind::ProxyHealthz => "GET http://127.0.0.1:10256/healthz".into(),
        }
    }

    /// Ask once, waiting at most `t` for an answer. `notes` gets what the check did beside
    /// asking (the Node's podCIDR).
    pub fn probe(
        &self,
        step: &Step,
        unit: &ServiceUnit,
        t: Duration,
        notes: &mut Vec<String>,
    ) -> Probe {
        let pki = self.tree.out.join("pki");
        match step.check {
            CheckKind::EtcdHealth => {
                let tls = Tls::from_files(
                    &pki.join("etcd/ca.crt"),
                    Some((
                        &pki.join("etcd/healthcheck-client.crt"),
                        &pki.join("etcd/healthcheck-client.key"),
                    )),
                )
                .map_err(|e| e.to_string())?;
                check::etcd_health(&etcd_url(unit), &tls, t)
            }
            CheckKind::Readyz => self.admin()?.readyz(t),
            CheckKind::HealthzAndLease {
                port,
                lease,
                default_service_account,
            } => {
                let tls = Tls {
                    insecure: true,
                    ..Tls::default()
                };
                let seen = check::get_ok(&format!("{}/healthz", secure_url(unit, port)), &tls, t)?;
                let kube = self.admin()?;
                let holder = kube.lease_holder(lease, t)?;
                if !default_service_account {
                    return Ok(format!("{seen}; {holder}"));
                }
                let r = kube.call(
                    reqwest::Method::GET,
                    "/api/v1/namespaces/default/serviceaccounts/default",
                    None,
                    t,
                )?;
                match r.status {
                    200 => Ok(format!(
                        "{seen}; {holder}; ServiceAccount default/default exists"
                    )),
                    404 => Err(format!(
                        "{seen}; {holder}; but ServiceAccount default/default is not there yet (the serviceaccount controller makes it; pods are refused until then)"
                    )),
                    s => Err(format!(
                        "GET ServiceAccount default/default: HTTP {s} {}",
                        r.body.trim()
                    )),
                }
            }
            CheckKind::ContainerdSocket => {
                let ctr = unit.program().with_file_name("ctr");
                check::containerd(&ctr, &cri_socket(), t)
            }
            CheckKind::NodeReady => {
                let kube = self.admin()?;
                let name = &self.node.name;
                let Some(node) = kube.node(name, t)? else {
                    return Err(format!("Node {name} is not registered yet"));
                };
                if node.pod_cidr.is_empty() {
                    // NEXT-STEPS.md's patch: the controller manager allocates no CIDRs
                    // (--allocate-node-cidrs=false), kbin's subnet is the Node's.
                    let sub = self.node.pod_subnet.to_string();
                    let patch = serde_json::json!({"spec": {"podCIDR": sub, "podCIDRs": [sub]}});
                    let r = kube.call(
                        reqwest::Method::PATCH,
                        &format!("/api/v1/nodes/{name}"),
                        Some(("application/strategic-merge-patch+json", patch.to_string())),
                        t,
                    )?;
                    if r.status != 200 {
                        return Err(format!(
                            "patching Node {name}'s podCIDR: HTTP {} {}",
                            r.status,
                            r.body.trim()
                        ));
                    }
                    notes.push(format!("kubectl patch node {name} -p '{patch}'"));
                }
                if node.ready {
                    Ok(format!("Node {name} is Ready"))
                } else {
                    Err(format!(
                        "Node {name} is registered, not Ready: {}",
                        node.message
                    ))
                }
            }
            CheckKind::ProxyHealthz => {
                check::get_ok("http://127.0.0.1:10256/healthz", &Tls::default(), t)
            }
        }
    }
}

fn cri_socket() -> String {
    paths::CRI_SOCKET.trim_start_matches("unix://").to_owned()
}

/// etcd's loopback client URL when it listens there (it always does in kbin's units), else the
/// advertised one.
fn etcd_url(unit: &ServiceUnit) -> String {
    let listen = flag_value(&unit.exec_start, "listen-client-urls").unwrap_or("");
    listen
        .split(',')
        .find(|u| u.contains("127.0.0.1") || u.contains("[::1]"))
        .or_else(|| flag_value(&unit.exec_start, "advertise-client-urls"))
        .unwrap_or("https://127.0.0.1:2379")
        .to_owned()
}

/// `https://<bind-address>:<secure-port>` of a controller manager or scheduler unit.
fn secure_url(unit: &ServiceUnit, default_port: u16) -> String {
    let bind = flag_value(&unit.exec_start, "bind-address").unwrap_or("127.0.0.1");
    let bind = if bind == "0.0.0.0" { "127.0.0.1" } else { bind };
    let port = flag_value(&unit.exec_start, "secure-port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_port);
    format!("https://{bind}:{port}")
}

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
        // Only what up creates is up's to remove: a file that was there before (a user's own
        // kubectl) is overwritten like install.sh would, but `down` leaves it.
        let ours = state.installed.iter().position(|f| f.path() == dst);
        let existed = dst.symlink_metadata().is_ok();
        // Beside the target, then renamed over it: a running binary is replaced, never written
        // in place (ETXTBSY), and a reader never sees half a file.
        let (mut file, tmp) = crate::fsx::temp_beside(&dst, mode)?;
        if ours.is_some() || !existed {
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
    Ok(written)
}

fn same_file_content(a: &Path, b: &Path, mode: u32) -> bool {
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

/// Progress: a spinner on a terminal, a line per step otherwise, nothing with `-q`/`--json`.
struct Progress<'a> {
    ui: &'a Ui,
    bar: Option<indicatif::ProgressBar>,
}

impl<'a> Progress<'a> {
    fn new(ui: &'a Ui) -> Self {
        Progress { ui, bar: None }
    }

    fn waiting(&mut self, msg: String) {
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

    fn line(&mut self, msg: String) {
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

fn step_error(node: &Node, component: &str, what: String, log: &Path, next: String) -> UpError {
    UpError::Step(Box::new(StepFailure {
        node: node.name.clone(),
        component: component.to_owned(),
        what,
        log: log.to_owned(),
        tail: process::tail(log, 30),
        next,
    }))
}

#[allow(clippy::too_many_arguments)] // one step needs each of these; a struct would only rename them
fn run_step(
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
    let began = Instant::now();
    let mut child: Option<Child> = None;
    let (action, pid) = match kept {
        Some(pid) => ("kept", Some(pid)),
        None => match supervisor {
            Supervisor::Systemd => {
                systemctl(&["start", "--no-block", &format!("{name}.service")])
                    .map_err(|e| step_error(node, name, e, &log, look(&log)))?;
                ("started", systemd_main_pid(name))
            }
            _ => {
                let (c, p) = process::spawn(unit, &log).map_err(|e| {
                    step_error(
                        node,
                        name,
                        format!("cannot start {}: {e}", unit.program().display()),
                        &log,
                        look(&log),
                    )
                })?;
                let pid = p.pid;
                // Recorded before waiting: if kbin dies now, `kbin down` still finds it.
                state.components.insert(name.to_owned(), p);
                state.save(run_dir)?;
                child = Some(c);
                ("started", Some(pid))
            }
        },
    };
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
            let what_became = if let Some(mut c) = child.take() {
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
            };
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

/// NEXT-STEPS.md's clusterrolebinding, made with super-admin.conf: admin.conf's group
/// `kubeadm:cluster-admins` gets cluster-admin, as kubeadm does. Already there is fine.
fn grant_admins(tree: &Tree, t: Duration) -> Result<String, String> {
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

/// `ctr -n k8s.io images import` for `images` (a file, or every `.tar` in a directory), then
/// whether the pause image containerd's config names is there.
fn import_images(
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
        notes.push(format!(
            "imported {}: {}",
            f.display(),
            out.trim().replace('\n', "; ")
        ));
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
fn pause_image(config: &Path) -> Option<String> {
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

fn systemctl(args: &[&str]) -> Result<String, String> {
    check::run_with_timeout(
        std::process::Command::new("systemctl").args(args),
        Duration::from_secs(60),
    )
    .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))
}

/// systemd's MainPID of `unit` while it is active.
fn systemd_main_pid(unit: &str) -> Option<i32> {
    let out = systemctl(&[
        "show",
        &format!("{unit}.service"),
        "-p",
        "MainPID",
        "-p",
        "ActiveState",
    ])
    .ok()?;
    let active = out
        .lines()
        .any(|l| l == "ActiveState=active" || l == "ActiveState=activating");
    let pid = out
        .lines()
        .find_map(|l| l.strip_prefix("MainPID="))?
        .parse()
        .ok()?;
    active.then_some(pid)
}

/// systemd's view of `unit` for `status`: `running` (active, activating, reloading or
/// deactivating) with its MainPID, `failed`, or `not-started`.
fn systemd_state(unit: &str) -> (&'static str, Option<i32>) {
    let Ok(out) = systemctl(&[
        "show",
        &format!("{unit}.service"),
        "-p",
        "MainPID",
        "-p",
        "ActiveState",
    ]) else {
        return ("not-started", None);
    };
    let pid = out
        .lines()
        .find_map(|l| l.strip_prefix("MainPID="))
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0);
    match out.lines().find_map(|l| l.strip_prefix("ActiveState=")) {
        Some("active" | "activating" | "reloading" | "deactivating") => ("running", pid),
        Some("failed") => ("failed", None),
        _ => ("not-started", None),
    }
}

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

fn nodes_with_state(tree: &Tree, name: Option<&str>) -> Vec<String> {
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
        let mut stopped = Vec::new();
        for (s, unit) in &units {
            if s.unit == "containerd" {
                remove_pods(unit.as_ref(), ui);
            }
            let mut error = None;
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
                    let Some(p) = state.components.get(s.unit).cloned() else {
                        continue;
                    };
                    let o = process::stop(&p, opts.grace);
                    state.components.remove(s.unit);
                    state.save(&run_dir)?;
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
        let (unmounted, unmount_failed) = unmount_under(LEFT_MOUNTED);
        for (p, e) in &unmount_failed {
            ui.warn(format!(
                "cannot unmount {}: {e} (left mounted; --purge does not descend into it)",
                p.display()
            ));
        }
        let owned = KbinPaths::of(&tree.node_tree(&name))?;
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
        let mut purged = Vec::new();
        let mut kept_mounts = Vec::new();
        if opts.purge {
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
        }
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
fn purge_root_ok(d: &Path) -> Result<(), String> {
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
fn mount_points() -> std::collections::BTreeSet<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect()
}

/// mountinfo's `\040`-style octal escapes (space, tab, newline, backslash) undone.
fn unescape_mountinfo(p: &str) -> String {
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
fn purge(root: &Path) -> Result<Option<Vec<PathBuf>>, UpError> {
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
fn purge_dir(
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
fn remove_pods(unit: Option<&ServiceUnit>, ui: &Ui) {
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
fn unmount_under(roots: &[(&str, &str)]) -> (Vec<PathBuf>, Vec<(PathBuf, std::io::Error)>) {
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

/// One component in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    /// The component.
    pub component: String,
    /// `running`, `exited` (kbin started it and it ended), `failed` (systemd says so) or
    /// `not-started`.
    pub state: &'static str,
    /// Its PID.
    pub pid: Option<i32>,
    /// Whether its check passes now.
    pub healthy: bool,
    /// What the check saw, or why it fails.
    pub health: String,
    /// When it was started (RFC 3339).
    pub since: Option<String>,
    /// Its log.
    pub log: Option<PathBuf>,
}

/// `status` of one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// The node.
    pub node: String,
    /// Its components in start order.
    pub components: Vec<ComponentStatus>,
}

/// `kbin status`'s exit code when the cluster runs and passes every check.
pub const STATUS_HEALTHY: u8 = 0;
/// `kbin status`'s exit code when a component that was started is not running (exited,
/// failed) or not healthy, or when nothing runs at all. (1 is an error: no tree, no such node.)
pub const STATUS_NOT_HEALTHY: u8 = 3;

/// Whether `nodes` are healthy, as `kbin status`'s exit code tells scripts: at least one
/// component runs, and every component that was started (kbin's state or systemd) runs and
/// passes its check. A component never started here (a worker's, after `--control-plane-only`)
/// does not count.
pub fn healthy(nodes: &[NodeStatus]) -> bool {
    let started: Vec<&ComponentStatus> = nodes
        .iter()
        .flat_map(|n| &n.components)
        .filter(|c| c.state != "not-started")
        .collect();
    !started.is_empty() && started.iter().all(|c| c.state == "running" && c.healthy)
}

/// `kbin status`: each component's PID, state, health and start time.
pub fn status(
    out: &Path,
    node: Option<&str>,
    supervisor: Supervisor,
) -> Result<Vec<NodeStatus>, UpError> {
    let tree = Tree::load(out)?;
    let supervisor = supervisor.resolve();
    let names = match node {
        Some(n) => vec![n.to_owned()],
        None => {
            let with_state = nodes_with_state(&tree, None);
            if with_state.is_empty() {
                tree.local_nodes(None)?
                    .into_iter()
                    .map(|n| n.name)
                    .collect()
            } else {
                with_state
            }
        }
    };
    let mut all = Vec::new();
    for name in names {
        let Some(node) = tree.spec.node(&name).cloned() else {
            return Err(UpError::UnknownNode {
                dir: out.to_owned(),
                name,
                nodes: tree.node_list(),
            });
        };
        let run_dir = tree.run_dir(&name);
        let state =
            State::load(&run_dir, &name).map_err(io("cannot read", &State::path(&run_dir)))?;
        let steps = tree.steps(&node, false)?;
        let checker = Checker::new(&tree, &node);
        let mut comps = Vec::new();
        for (s, unit) in &steps {
            let p = state.components.get(s.unit);
            let (st, pid) = match supervisor {
                Supervisor::Systemd => systemd_state(s.unit),
                _ => match p {
                    Some(p) if p.alive() => ("running", Some(p.pid)),
                    Some(p) => ("exited", Some(p.pid)),
                    None => ("not-started", None),
                },
            };
            let (healthy, health) = if st == "running" {
                let mut notes = Vec::new();
                match checker.probe(s, unit, Duration::from_secs(2), &mut notes) {
                    Ok(h) => (true, h),
                    Err(e) => (false, e),
                }
            } else {
                (false, "not running".to_owned())
            };
            comps.push(ComponentStatus {
                component: s.unit.to_owned(),
                state: st,
                pid,
                healthy,
                health,
                since: p.map(|p| process::rfc3339(p.started)),
                log: p.map(|p| p.log.clone()),
            });
        }
        all.push(NodeStatus {
            node: name,
            components: comps,
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(state: &'static str, healthy: bool) -> ComponentStatus {
        ComponentStatus {
            component: "etcd".into(),
            state,
            pid: None,
            healthy,
            health: String::new(),
            since: None,
            log: None,
        }
    }

    #[test]
    fn status_is_healthy_only_when_something_runs_and_everything_started_passes() {
        let node = |c: Vec<ComponentStatus>| {
            vec![NodeStatus {
                node: "n".into(),
                components: c,
            }]
        };
        assert!(healthy(&node(vec![
            comp("running", true),
            comp("not-started", false)
        ])));
        assert!(
            !healthy(&node(vec![comp("not-started", false)])),
            "nothing runs"
        );
        assert!(!healthy(&node(vec![])));
        assert!(!healthy(&node(vec![
            comp("running", true),
            comp("exited", false)
        ])));
        assert!(!healthy(&node(vec![
            comp("running", true),
            comp("failed", false)
        ])));
        assert!(!healthy(&node(vec![comp("running", false)])));
    }

    #[test]
    fn steps_follow_the_bundle_start_order_and_roles() {
        let steps: Vec<(Role, &str)> = STEPS.iter().map(|s| (s.role, s.unit)).collect();
        assert_eq!(steps, bundle::UNITS.to_vec());
    }

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
}
