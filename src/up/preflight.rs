//! Host prerequisites, checked before anything starts: each problem says what is wrong and the
//! command that fixes it. Nothing here changes the machine.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;

use serde::Serialize;

use super::unit::ServiceUnit;
use super::{Step, Supervisor, Tree, UpOptions};
use crate::r#gen::bundle::{self, Role};
use crate::r#gen::host::{self, HostProfile};
use crate::r#gen::spec::Node;
use crate::r#gen::versions::Record;

/// One unmet prerequisite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (fix: {})", self.what, self.fix)
    }
}

/// The ports each component listens on, checked free before it starts.
pub static PORTS: &[(&str, &[u16])] = &[
    ("etcd", &[2379, 2380]),
    ("kube-apiserver", &[6443]),
    ("kube-controller-manager", &[10257]),
    ("kube-scheduler", &[10259]),
    ("kubelet", &[10250]),
    ("kube-proxy", &[10256]),
];

fn problem(what: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        what: what.into(),
        fix: fix.into(),
    }
}

/// Every unmet prerequisite for running `steps` of `node` (`running`: components already up,
/// whose ports are theirs).
pub fn check(
    tree: &Tree,
    node: &Node,
    steps: &[(Step, ServiceUnit)],
    running: &[&str],
    opts: &UpOptions,
    supervisor: Supervisor,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let dir = tree.out.display();
    let worker = steps.iter().any(|(s, _)| s.unit == "kubelet");
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if worker {
            out.push(problem(
                "containerd, the kubelet and kube-proxy need root (mounts, cgroups, iptables)",
                format!("sudo kbin up --out {dir}, or start the control plane only: kbin up --out {dir} --control-plane-only"),
            ));
        }
        let target = nearest_existing(Path::new("/etc/kubernetes"));
        if !writable(&target) {
            out.push(problem(
                format!("kbin up installs the node's files into /etc/kubernetes, /var/lib and /usr/local/bin, and {} is not writable", target.display()),
                format!("sudo kbin up --out {dir}"),
            ));
        }
    }
    if supervisor == Supervisor::Systemd {
        let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        if pid1.trim() != "systemd" {
            out.push(problem(
                format!("--supervisor systemd, but PID 1 is {:?}", pid1.trim()),
                "let kbin supervise the components: --supervisor kbin (the default here)",
            ));
        }
    }
    // The tree's host profile must fit this machine: the configs are not patched at run time.
    let why = host::sandbox_reasons();
    if worker && tree.spec.host_profile == HostProfile::Systemd && !why.is_empty() {
        out.push(problem(
            format!(
                "{dir} was generated for host profile systemd, but this machine needs profile sandbox: {}",
                why.join("; ")
            ),
            format!("kbin gen cluster --out {dir} --host-profile sandbox (keeps the CA and valid certificates)"),
        ));
    }
    if opts.node.is_some() && !host::is_own_address(node.ip) {
        out.push(problem(
            format!(
                "node {} has address {}, which is not an address of this machine: its components would listen on and advertise an address nobody reaches here",
                node.name, node.ip
            ),
            format!(
                "run kbin up on the machine whose address is {} (or add it here: ip addr add {}/32 dev lo)",
                node.ip, node.ip
            ),
        ));
    }
    if worker && !super::addons::files(tree).is_empty() {
        out.extend(resolv_conf_problem(tree));
    }
    out.extend(missing_binaries(tree, node, steps));
    out.extend(ports_in_use(steps, running, &dir.to_string()));
    if worker {
        out.extend(worker_problems(tree, node, steps));
    }
    if let Some(images) = &opts.images
        && !images.exists()
    {
        out.push(problem(
            format!("--images {} does not exist", images.display()),
            "give a .tar image archive or a directory of them",
        ));
    }
    out
}

/// The kubelet's resolv.conf without a nameserver, when the tree has add-ons: CoreDNS
/// (addons/) forwards to it (`dnsPolicy: Default`), and with none it exits at start ("no
/// nameservers found") and never rolls out.
fn resolv_conf_problem(tree: &Tree) -> Option<Problem> {
    let dir = tree.out.display();
    let resolv = tree
        .spec
        .resolv_conf
        .clone()
        .unwrap_or_else(|| "/etc/resolv.conf".into());
    let names_one = std::fs::read_to_string(&resolv).is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().next() == Some("nameserver"))
    });
    if names_one {
        return None;
    }
    Some(problem(
        format!(
            "{resolv}, the resolv.conf the kubelet gives the cluster DNS (CoreDNS, addons/), names no nameserver: CoreDNS would exit at start (\"no nameservers found\")"
        ),
        format!(
            "add a nameserver line to {resolv} (air-gapped: any resolver on your network), or point the kubelet at a file that has one: kbin gen cluster --out {dir} --resolv-conf FILE"
        ),
    ))
}

/// The ports of the components `steps` start (not those already `running`) that something
/// else holds.
fn ports_in_use(steps: &[(Step, ServiceUnit)], running: &[&str], dir: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    for (s, _) in steps {
        if running.contains(&s.unit) {
            continue;
        }
        for (c, ports) in PORTS {
            if *c != s.unit {
                continue;
            }
            for p in *ports {
                if port_in_use(*p) {
                    out.push(problem(
                        format!("port {p} ({c}) is already in use"),
                        format!("find what holds it: ss -ltnp 'sport = :{p}' (a previous run? kbin down --out {dir})"),
                    ));
                }
            }
        }
    }
    out
}

/// What a worker needs of the host: no swap (unless the kubelet allows it), cgroup v2 (or a
/// kubelet told to accept v1), br_netfilter, IPv4 forwarding, room above the eviction
/// thresholds, iptables and conntrack.
fn worker_problems(tree: &Tree, node: &Node, steps: &[(Step, ServiceUnit)]) -> Vec<Problem> {
    let mut out = Vec::new();
    let dir = tree.out.display();
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let kubelet_config = std::fs::read_to_string(
        tree.node_tree(&node.name)
            .join("var/lib/kubelet/config.yaml"),
    )
    .unwrap_or_default();
    if swaps.lines().count() > 1 && !kubelet_config.contains("failSwapOn: false") {
        out.push(problem(
            "swap is on and the kubelet refuses to start with swap (failSwapOn)",
            "swapoff -a (and remove swap from /etc/fstab)",
        ));
    }
    let cgroup_v1 = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if cgroup_v1
        && !kubelet_config.contains("failCgroupV1: false")
        && kubelet_refuses_v1(&tree.out, steps)
    {
        out.push(problem(
            "this machine runs cgroup v1 and this kubelet refuses it unless its config sets failCgroupV1: false",
            format!("kbin gen cluster --out {dir} --cgroup-v1"),
        ));
    }
    if !Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        out.push(problem(
            "br_netfilter is not loaded (iptables would not see bridged pod traffic)",
            "modprobe br_netfilter",
        ));
    }
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if fwd.trim() != "1" {
        out.push(problem(
            "IPv4 forwarding is off (pods could not reach anything)",
            "sysctl -w net.ipv4.ip_forward=1",
        ));
    }
    if !kubelet_config.contains("evictionHard") {
        out.extend(eviction_problems(tree, node));
    }
    for tool in ["iptables", "conntrack"] {
        if !on_path(tool) {
            out.push(problem(
                format!("{tool} is not installed (kube-proxy needs it)"),
                format!("apt-get install -y {tool}"),
            ));
        }
    }
    out
}

/// Every binary the node needs that is neither in its tree nor on this machine: each unit's
/// `ExecStart=` program, and every binary [`bundle::BINARIES`] gives the node's roles (runc and
/// the CNI plugins are run by containerd, not by a unit). Each line names the component and
/// version the tree was generated for (`versions.toml`).
fn missing_binaries(tree: &Tree, node: &Node, steps: &[(Step, ServiceUnit)]) -> Vec<Problem> {
    let dir = tree.out.display();
    let worker = steps.iter().any(|(s, _)| s.unit == "kubelet");
    let mut wanted: Vec<(std::path::PathBuf, String)> = steps
        .iter()
        .map(|(s, u)| (u.program().to_owned(), format!("{}'s ExecStart", s.unit)))
        .collect();
    let record = Record::load(&tree.out).ok().flatten();
    // The version table's answer gen used (etcdutl only for etcd 3.5+); without a record of the
    // versions, only what every version needs.
    let decisions = record.as_ref().and_then(|r| r.decide().ok());
    for (role, bin, at) in bundle::BINARIES {
        let needed = match &decisions {
            Some(d) => bundle::bundled(bin, d),
            None => *bin != "etcdutl",
        };
        if !needed {
            continue;
        }
        let runs = match role {
            Role::ControlPlane => node.control_plane,
            Role::Worker => worker,
        };
        let p = Path::new("/").join(at).join(bin);
        if runs && !wanted.iter().any(|(w, _)| *w == p) {
            wanted.push((p, format!("{} installs it", bundle_word(*role))));
        }
    }
    let manifest = crate::manifest::Manifest::embedded().ok();
    let version_of = |bin: &str| -> Option<String> {
        let r = record.as_ref()?;
        // The component's name where it is not Kubernetes itself (runc, cni-plugins), else the
        // binary's (kube-apiserver), as the toolchain lists them.
        let component = manifest
            .as_ref()
            .and_then(|m| m.component_of_binary(bin))
            .filter(|c| c.name != "kubernetes");
        match component {
            Some(c) if r.components.contains_key(&c.name) => {
                Some(format!("{} {}", c.name, r.components[&c.name]))
            }
            _ => r.components.get(bin).map(|v| format!("{bin} {v}")),
        }
    };
    let (install, toolchain) = match &record {
        Some(r) => (
            r.kubernetes.to_string(),
            r.origin
                .strip_prefix("toolchain ")
                .map(str::to_owned)
                .unwrap_or_else(|| r.kubernetes.to_string()),
        ),
        None => ("VERSION".to_owned(), "VERSION".to_owned()),
    };
    let mut out = Vec::new();
    for (prog, why) in wanted {
        let in_tree = tree
            .node_tree(&node.name)
            .join(prog.strip_prefix("/").unwrap_or(&prog));
        if in_tree.is_file() || prog.is_file() {
            continue;
        }
        let name = prog
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let what = version_of(&name)
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        out.push(problem(
            format!(
                "{}{what} is missing ({why}), and {} has no copy of it",
                prog.display(),
                in_tree.display()
            ),
            format!("install the toolchain and generate again: kbin install {install} && kbin gen cluster --toolchain {toolchain} --out {dir}"),
        ));
    }
    out
}

fn bundle_word(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "the control plane's bundle",
        Role::Worker => "the worker's bundle",
    }
}

/// The kubelet's default hard eviction thresholds on the filesystems it watches: below them it
/// evicts every pod it runs (the Node stays Ready, with a DiskPressure taint). `(path, what,
/// signal, min free %, min free inodes %)`; the kubelet's own defaults
/// (pkg/kubelet/eviction/defaults_linux.go). With no separate image filesystem (containerd's
/// root on the same one), the imagefs signals apply to it too.
pub static EVICTION: &[(&str, &str, &str, f64, f64)] = &[
    ("/var/lib/kubelet", "the kubelet's", "nodefs", 10.0, 5.0),
    ("/var/lib/containerd", "containerd's", "imagefs", 15.0, 5.0),
];

/// Free space and inodes of the filesystem holding `path` (or its nearest existing parent), in
/// percent, with its size in bytes.
fn free_percent(path: &Path) -> Option<(f64, f64, u64)> {
    let at = nearest_existing(path);
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed struct it fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
        return None;
    }
    let space = st.f_bavail as f64 * 100.0 / st.f_blocks as f64;
    // Filesystems without an inode count (btrfs says 0) never run out of them.
    let inodes = if st.f_files == 0 {
        100.0
    } else {
        st.f_favail as f64 * 100.0 / st.f_files as f64
    };
    Some((space, inodes, st.f_blocks * st.f_frsize))
}

/// A filesystem the kubelet watches that is already under its default eviction threshold: the
/// Node would be Ready and every pod evicted at once.
fn eviction_problems(tree: &Tree, node: &Node) -> Vec<Problem> {
    let config = tree
        .node_tree(&node.name)
        .join("var/lib/kubelet/config.yaml");
    let mut out = Vec::new();
    for (path, whose, signal, space_min, inodes_min) in EVICTION {
        let Some((space, inodes, size)) = free_percent(Path::new(path)) else {
            continue;
        };
        let fix = format!(
            "free space on the filesystem of {path}, or give the kubelet thresholds of your own (evictionHard in {})",
            config.display()
        );
        if space < *space_min {
            out.push(problem(
                format!(
                    "{path} ({whose} data) is on a filesystem with {space:.1}% free of {:.1} GB: the kubelet evicts every pod below {space_min}% ({signal}.available<{space_min}%)",
                    size as f64 / 1e9
                ),
                fix.clone(),
            ));
        }
        if inodes < *inodes_min {
            out.push(problem(
                format!(
                    "{path} ({whose} data) is on a filesystem with {inodes:.1}% of its inodes free: the kubelet evicts every pod below {inodes_min}% ({signal}.inodesFree<{inodes_min}%)"
                ),
                fix,
            ));
        }
    }
    out
}

/// Whether the tree's kubelet refuses cgroup v1 unless told (≥ 1.35): the version table's
/// answer for the versions the tree records (`versions.toml`); for a tree made before kbin
/// wrote it, the version in the kubelet unit's header comment.
fn kubelet_refuses_v1(out: &std::path::Path, steps: &[(Step, ServiceUnit)]) -> bool {
    use crate::r#gen::versions::CgroupV1;
    if let Ok(Some(d)) = Record::load(out).map(|r| r.map(|r| r.decide()))
        && let Ok(d) = d
    {
        return d.cgroup_v1() == CgroupV1::Refuses;
    }
    let Some((_, u)) = steps.iter().find(|(s, _)| s.unit == "kubelet") else {
        return false;
    };
    let text = std::fs::read_to_string(&u.path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("# kubelet "))
        .and_then(|rest| rest.split(':').next())
        .and_then(|v| semver::Version::parse(v.trim_start_matches('v')).ok())
        .is_some_and(|v| (v.major, v.minor) >= (1, 35))
}

fn port_in_use(port: u16) -> bool {
    matches!(
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

fn on_path(tool: &str) -> bool {
    super::process::SERVICE_PATH
        .split(':')
        .any(|d| Path::new(d).join(tool).is_file())
}

fn nearest_existing(p: &Path) -> std::path::PathBuf {
    let mut p = p.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(q) => p = q.to_path_buf(),
            None => break,
        }
    }
    p
}

fn writable(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) with a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::r#gen::versions::{NEEDED, record_path};

    fn record(kubelet: &str) -> Record {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        let mut components: std::collections::BTreeMap<String, semver::Version> = NEEDED
            .iter()
            .map(|c| ((*c).to_owned(), v("1.4.0")))
            .collect();
        for k in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
        ] {
            components.insert(k.into(), v(kubelet));
        }
        components.insert("kubelet".into(), v(kubelet));
        components.insert("etcd".into(), v("3.5.16"));
        components.insert("containerd".into(), v("1.7.23"));
        Record {
            origin: "test".into(),
            kubernetes: v(kubelet),
            components,
            images: crate::manifest::Images {
                coredns: "1.11.1".into(),
                pause: "3.9".into(),
            },
        }
    }

    #[test]
    fn whether_the_kubelet_refuses_cgroup_v1_comes_from_the_trees_version_record() {
        let d = tempfile::tempdir().unwrap();
        // No record and no kubelet unit: nothing says it refuses.
        assert!(!kubelet_refuses_v1(d.path(), &[]));
        std::fs::write(record_path(d.path()), record("1.35.8").to_toml()).unwrap();
        assert!(kubelet_refuses_v1(d.path(), &[]));
        std::fs::write(record_path(d.path()), record("1.34.11").to_toml()).unwrap();
        assert!(!kubelet_refuses_v1(d.path(), &[]));
    }
}
