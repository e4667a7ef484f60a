//! Node bundles: `nodes/<name>/` laid out like the node's root filesystem, its `install.sh`,
//! `nodes/<name>.tar.gz` (configs and PKI) and one shared `bundles/<role>-<arch>-binaries.tar.gz`
//! per role, so a hundred workers do not mean a hundred copies of the binaries.
//!
//! What each node gets is data: [`PKI_FILES`] (cluster tree → node path) and [`BINARIES`]
//! (binary → node directory, role). Trees are built beside their final path and renamed in;
//! tarballs are written to a temp file and renamed; both are byte-stable (sorted entries,
//! mtime 0, uid/gid 0).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::bundle_cache::{self, BundleCacheError, SharedBundle};
use super::configs::{self, ClusterInput, NodeInput};
use super::next_steps;
use super::tarball;
use super::versions::{Decisions, Versions, VersionsError};

/// Errors writing the configs and bundles.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file the PKI step should have written is missing.
    #[error("{path} is missing: the PKI step writes it before the node bundles")]
    MissingPki {
        /// The missing file.
        path: PathBuf,
    },
    /// A binary the node needs is not in the toolchain.
    #[error("toolchain {toolchain} has no {binary} (looked for {path})")]
    MissingBinary {
        /// The toolchain directory.
        toolchain: PathBuf,
        /// The binary.
        binary: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The version table has no answer.
    #[error(transparent)]
    Versions(#[from] VersionsError),
    /// A shared binaries bundle could not be made, checked or placed.
    #[error(transparent)]
    SharedBundle(#[from] BundleCacheError),
    /// A tarball could not be written.
    #[error(transparent)]
    Tarball(#[from] crate::store::PathIo),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_owned();
    move |source| BundleError::Io {
        action,
        path,
        source,
    }
}

/// Which nodes get a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// etcd and the control plane.
    ControlPlane,
    /// containerd, kubelet, kube-proxy.
    Worker,
}

impl Role {
    /// `control-plane` or `worker`.
    pub fn name(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }

    fn applies(self, n: &NodeInput) -> bool {
        match self {
            Role::ControlPlane => n.control_plane,
            Role::Worker => n.worker,
        }
    }
}

/// A PKI or kubeconfig file a node gets: its path in the cluster tree (`{node}` is the node's
/// name) and on the node, and its mode.
#[derive(Debug, Clone, Copy)]
pub struct PkiFile {
    /// The role that needs it.
    pub role: Role,
    /// Relative to the cluster output directory.
    pub from: &'static str,
    /// Relative to the node's root.
    pub to: &'static str,
    /// File mode.
    pub mode: u32,
}

const fn pki(role: Role, from: &'static str, to: &'static str, mode: u32) -> PkiFile {
    PkiFile {
        role,
        from,
        to,
        mode,
    }
}

use Role::{ControlPlane as Cp, Worker as Wk};

/// What each node takes from `pki/` and `kubeconfigs/` (kubeadm's names on the node). The
/// sources follow the PKI step's table (`gen::pki::files`); `{node}` is the node's name.
#[rustfmt::skip]
pub static PKI_FILES: &[PkiFile] = &[
    pki(Cp, "pki/ca.crt", "etc/kubernetes/pki/ca.crt", 0o644),
    pki(Cp, "pki/ca.key", "etc/kubernetes/pki/ca.key", 0o600),
    pki(Cp, "pki/apiserver.crt", "etc/kubernetes/pki/apiserver.crt", 0o644),
    pki(Cp, "pki/apiserver.key", "etc/kubernetes/pki/apiserver.key", 0o600),
    pki(Cp, "pki/apiserver-kubelet-client.crt", "etc/kubernetes/pki/apiserver-kubelet-client.crt", 0o644),
    pki(Cp, "pki/apiserver-kubelet-client.key", "etc/kubernetes/pki/apiserver-kubelet-client.key", 0o600),
    pki(Cp, "pki/apiserver-etcd-client.crt", "etc/kubernetes/pki/apiserver-etcd-client.crt", 0o644),
    pki(Cp, "pki/apiserver-etcd-client.key", "etc/kubernetes/pki/apiserver-etcd-client.key", 0o600),
    pki(Cp, "pki/front-proxy-ca.crt", "etc/kubernetes/pki/front-proxy-ca.crt", 0o644),
    pki(Cp, "pki/front-proxy-client.crt", "etc/kubernetes/pki/front-proxy-client.crt", 0o644),
    pki(Cp, "pki/front-proxy-client.key", "etc/kubernetes/pki/front-proxy-client.key", 0o600),
    pki(Cp, "pki/sa.key", "etc/kubernetes/pki/sa.key", 0o600),
    pki(Cp, "pki/sa.pub", "etc/kubernetes/pki/sa.pub", 0o644),
    pki(Cp, "pki/etcd/ca.crt", "etc/kubernetes/pki/etcd/ca.crt", 0o644),
    pki(Cp, "pki/etcd/healthcheck-client.crt", "etc/kubernetes/pki/etcd/healthcheck-client.crt", 0o644),
    pki(Cp, "pki/etcd/healthcheck-client.key", "etc/kubernetes/pki/etcd/healthcheck-client.key", 0o600),
    pki(Cp, "pki/etcd/{node}/server.crt", "etc/kubernetes/pki/etcd/server.crt", 0o644),
    pki(Cp, "pki/etcd/{node}/server.key", "etc/kubernetes/pki/etcd/server.key", 0o600),
    pki(Cp, "pki/etcd/{node}/peer.crt", "etc/kubernetes/pki/etcd/peer.crt", 0o644),
    pki(Cp, "pki/etcd/{node}/peer.key", "etc/kubernetes/pki/etcd/peer.key", 0o600),
    pki(Cp, "kubeconfigs/admin.conf", "etc/kubernetes/admin.conf", 0o600),
    pki(Cp, "kubeconfigs/super-admin.conf", "etc/kubernetes/super-admin.conf", 0o600),
    pki(Cp, "kubeconfigs/controller-manager.conf", "etc/kubernetes/controller-manager.conf", 0o600),
    pki(Cp, "kubeconfigs/scheduler.conf", "etc/kubernetes/scheduler.conf", 0o600),
    pki(Wk, "pki/ca.crt", "etc/kubernetes/pki/ca.crt", 0o644),
    pki(Wk, "pki/nodes/{node}/kubelet.crt", "etc/kubernetes/pki/kubelet.crt", 0o644),
    pki(Wk, "pki/nodes/{node}/kubelet.key", "etc/kubernetes/pki/kubelet.key", 0o600),
    pki(Wk, "kubeconfigs/kubelet-{node}.conf", "etc/kubernetes/kubelet.conf", 0o600),
    pki(Wk, "kubeconfigs/kube-proxy.conf", "etc/kubernetes/kube-proxy.conf", 0o600),
];

/// Binaries per role and where they go on the node.
#[rustfmt::skip]
pub static BINARIES: &[(Role, &str, &str)] = &[
    (Cp, "etcd", "usr/local/bin"),
    (Cp, "etcdctl", "usr/local/bin"),
    (Cp, "kube-apiserver", "usr/local/bin"),
    (Cp, "kube-controller-manager", "usr/local/bin"),
    (Cp, "kube-scheduler", "usr/local/bin"),
    (Cp, "kubectl", "usr/local/bin"),
    (Wk, "containerd", "usr/local/bin"),
    (Wk, "containerd-shim-runc-v2", "usr/local/bin"),
    (Wk, "ctr", "usr/local/bin"),
    (Wk, "runc", "usr/local/bin"),
    (Wk, "crictl", "usr/local/bin"),
    (Wk, "kubelet", "usr/local/bin"),
    (Wk, "kube-proxy", "usr/local/bin"),
    (Wk, "kubectl", "usr/local/bin"),
    (Wk, "bridge", "opt/cni/bin"),
    (Wk, "host-local", "opt/cni/bin"),
    (Wk, "loopback", "opt/cni/bin"),
    (Wk, "portmap", "opt/cni/bin"),
];

/// Units in start order, with their role (install.sh enables them in this order).
pub static UNITS: &[(Role, &str)] = &[
    (Cp, "etcd"),
    (Cp, "kube-apiserver"),
    (Cp, "kube-controller-manager"),
    (Cp, "kube-scheduler"),
    (Wk, "containerd"),
    (Wk, "kubelet"),
    (Wk, "kube-proxy"),
];

/// Options of the configs step.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The cluster output directory (holds `pki/` and `kubeconfigs/`).
    pub out: PathBuf,
    /// Leave binaries out of the trees and bundles.
    pub no_binaries: bool,
    /// The hosts run cgroup v1 (`--cgroup-v1`, or detected for the local machine).
    pub cgroup_v1: bool,
}

/// Where a node file's bytes come from.
#[derive(Debug, Clone)]
enum Content {
    Text(String),
    Copy(PathBuf),
    Binary(PathBuf),
}

/// One file of a node tree.
#[derive(Debug, Clone)]
struct NodeFile {
    rel: String,
    mode: u32,
    content: Content,
}

/// What was written, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// The versions generated for.
    pub versions: String,
    /// Node trees and their tarballs.
    pub nodes: Vec<WrittenNode>,
    /// Shared binary tarballs.
    pub binary_bundles: Vec<PathBuf>,
    /// Each shared binary tarball's digest and whether the store already had it.
    pub shared_bundles: Vec<SharedBundle>,
    /// NEXT-STEPS.md.
    pub next_steps: PathBuf,
    /// Whether the kubelet configs are for cgroup v1 hosts.
    pub cgroup_v1: bool,
    /// Its text (also printed).
    #[serde(skip)]
    pub next_steps_text: String,
}

/// One node's output.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenNode {
    /// The node.
    pub name: String,
    /// `nodes/<name>/`.
    pub tree: PathBuf,
    /// `nodes/<name>.tar.gz`.
    pub tarball: PathBuf,
    /// Files in the tree (relative), sorted.
    pub files: Vec<String>,
}

/// The shared binaries tarball of `role` for `arch`, relative to the output directory.
pub fn binaries_bundle(role: Role, arch: impl std::fmt::Display) -> String {
    format!("bundles/{}-{arch}-binaries.tar.gz", role.name())
}

/// The encryption key: reused from `secrets/encryption-key` so re-runs keep Secrets readable.
fn encryption_key(out: &Path) -> Result<String, BundleError> {
    let path = out.join("secrets/encryption-key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim();
        if key.len() == 44 && key.ends_with('=') {
            return Ok(key.to_owned());
        }
    }
    let mut bytes = [0u8; 32];
    let mut f =
        std::fs::File::open("/dev/urandom").map_err(io("open", Path::new("/dev/urandom")))?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(io("read", Path::new("/dev/urandom")))?;
    let key = configs::base64(&bytes);
    write_file(&path, format!("{key}\n").as_bytes(), 0o600)?;
    Ok(key)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundleError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io("write", path))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", path))?;
    tmp.as_file().sync_all().map_err(io("sync", path))?;
    tmp.persist(path)
        .map_err(|e| io("rename into", path)(e.error))?;
    Ok(())
}

fn node_files(
    c: &ClusterInput,
    node: &NodeInput,
    v: &Versions,
    d: &Decisions,
    opts: &Options,
    key: &str,
) -> Result<Vec<NodeFile>, BundleError> {
    let mut files: BTreeMap<String, NodeFile> = BTreeMap::new();
    let mut text = |rel: &str, mode: u32, s: String| {
        files.insert(
            rel.to_owned(),
            NodeFile {
                rel: rel.to_owned(),
                mode,
                content: Content::Text(s),
            },
        );
    };
    if node.control_plane {
        text(
            "etc/systemd/system/etcd.service",
            0o644,
            configs::etcd_unit(c, node, d),
        );
        text(
            "etc/systemd/system/kube-apiserver.service",
            0o644,
            configs::apiserver_unit(c, node, v),
        );
        text(
            "etc/systemd/system/kube-controller-manager.service",
            0o644,
            configs::controller_manager_unit(c),
        );
        text(
            "etc/systemd/system/kube-scheduler.service",
            0o644,
            configs::scheduler_unit(),
        );
        text(
            "etc/kubernetes/kube-scheduler.yaml",
            0o644,
            configs::scheduler_config(d),
        );
        text(
            "etc/kubernetes/encryption-config.yaml",
            0o600,
            configs::encryption_config(d, key),
        );
    }
    if node.worker {
        text(
            "etc/containerd/config.toml",
            0o644,
            configs::containerd_config(v, d),
        );
        text(
            "etc/systemd/system/containerd.service",
            0o644,
            configs::containerd_unit(),
        );
        text(
            "etc/cni/net.d/10-bridge.conflist",
            0o644,
            configs::cni_conflist(node, d),
        );
        text(
            "var/lib/kubelet/config.yaml",
            0o644,
            configs::kubelet_config(c, node, d, opts.cgroup_v1),
        );
        text(
            "etc/systemd/system/kubelet.service",
            0o644,
            configs::kubelet_unit(node, v, d),
        );
        text(
            "var/lib/kube-proxy/config.yaml",
            0o644,
            configs::kube_proxy_config(c, d),
        );
        text(
            "etc/systemd/system/kube-proxy.service",
            0o644,
            configs::kube_proxy_unit(),
        );
        text("etc/crictl.yaml", 0o644, configs::crictl_config());
        text(
            "etc/modules-load.d/kubernetes.conf",
            0o644,
            configs::modules_load(),
        );
        text("etc/sysctl.d/99-kubernetes.conf", 0o644, configs::sysctl());
    }
    for p in PKI_FILES.iter().filter(|p| p.role.applies(node)) {
        let from = opts.out.join(p.from.replace("{node}", &node.name));
        if !from.is_file() {
            return Err(BundleError::MissingPki { path: from });
        }
        files.insert(
            p.to.to_owned(),
            NodeFile {
                rel: p.to.to_owned(),
                mode: p.mode,
                content: Content::Copy(from),
            },
        );
    }
    if let (false, Some(dir)) = (opts.no_binaries, &v.toolchain_dir) {
        for (role, bin, to) in BINARIES.iter().filter(|(r, _, _)| r.applies(node)) {
            let _ = role;
            let rel_in_toolchain = v
                .binaries
                .get(*bin)
                .cloned()
                .unwrap_or_else(|| format!("bin/{bin}"));
            let path = dir.join(rel_in_toolchain);
            if !path.is_file() {
                return Err(BundleError::MissingBinary {
                    toolchain: dir.clone(),
                    binary: (*bin).into(),
                    path,
                });
            }
            let rel = format!("{to}/{bin}");
            files.insert(
                rel.clone(),
                NodeFile {
                    rel,
                    mode: 0o755,
                    content: Content::Binary(path),
                },
            );
        }
    }
    let list: Vec<NodeFile> = files.into_values().collect();
    let script = install_script(node, &list);
    let mut list = list;
    list.push(NodeFile {
        rel: "install.sh".into(),
        mode: 0o755,
        content: Content::Text(script),
    });
    list.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(list)
}

fn install_script(node: &NodeInput, files: &[NodeFile]) -> String {
    let mut s = format!(
        "#!/bin/sh\n\
         # install.sh for node {name}: generated by kbin.\n\
         # Puts this node's files in place, then enables its services (it does not start them:\n\
         # NEXT-STEPS.md starts them one by one and checks each).\n\
         #   sudo ./install.sh              install on this machine\n\
         #   DESTDIR=/tmp/root ./install.sh  dry install under /tmp/root (no systemctl)\n\
         set -eu\n\
         here=$(cd \"$(dirname \"$0\")\" && pwd)\n\
         DESTDIR=${{DESTDIR:-}}\n\
         \n\
         put() {{ # put MODE PATH: copy $here/PATH to $DESTDIR/PATH with MODE\n\
         \x20 if [ ! -f \"$here/$2\" ]; then\n\
         \x20   echo \"install.sh: $here/$2 is missing (did you unpack the binaries bundle here too?)\" >&2\n\
         \x20   exit 1\n\
         \x20 fi\n\
         \x20 mkdir -p \"$DESTDIR/$(dirname \"$2\")\"\n\
         \x20 install -m \"$1\" \"$here/$2\" \"$DESTDIR/$2\"\n\
         }}\n\n",
        name = node.name
    );
    for f in files {
        s.push_str(&format!("put {:o} {}\n", f.mode, f.rel));
    }
    let units: Vec<&str> = UNITS
        .iter()
        .filter(|(r, _)| r.applies(node))
        .map(|(_, u)| *u)
        .collect();
    s.push_str("\nif [ -n \"$DESTDIR\" ]; then\n  echo \"installed under $DESTDIR (dry run: systemctl not called)\"\n  exit 0\nfi\n");
    if node.worker {
        s.push_str("# Kernel modules and sysctls pods need, now rather than at the next boot.\nmodprobe overlay\nmodprobe br_netfilter\nsysctl --quiet --system\n");
    }
    s.push_str("systemctl daemon-reload\n# Enabled in start order: etcd before kube-apiserver, containerd before kubelet.\n");
    for u in units {
        s.push_str(&format!("systemctl enable {u}.service\n"));
    }
    s.push_str(&format!(
        "echo \"node {}: files installed and services enabled; see NEXT-STEPS.md to start them\"\n",
        node.name
    ));
    s
}

fn build_tree(dir: &Path, files: &[NodeFile]) -> Result<(), BundleError> {
    for f in files {
        let path = dir.join(&f.rel);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        match &f.content {
            Content::Text(s) => std::fs::write(&path, s).map_err(io("write", &path))?,
            Content::Copy(from) => {
                std::fs::copy(from, &path).map_err(io("copy", from))?;
            }
            Content::Binary(from) => {
                // Hardlink from the toolchain (itself hardlinks into the store); copy across
                // filesystems.
                if std::fs::hard_link(from, &path).is_err() {
                    std::fs::copy(from, &path).map_err(io("copy", from))?;
                }
                continue; // the store's read-only mode stays as it is
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(io("chmod", &path))?;
    }
    Ok(())
}

/// Write a deterministic .tar.gz of `entries` (relative path, mode, source file) on every core
/// ([`tarball`]). Mode 0600: a node's tarball holds its private keys.
fn write_tarball(path: &Path, entries: &[(String, u32, PathBuf)]) -> Result<(), BundleError> {
    tarball::write_file(path, entries, 0o600)?;
    Ok(())
}

/// `<out>/nodes`: one root-filesystem tree and one tarball per node (absent in a --pki-only tree).
pub fn nodes_dir(out: &Path) -> PathBuf {
    out.join("nodes")
}

/// Write every node's tree, tarball and install.sh, the shared binary bundles, and
/// NEXT-STEPS.md. Needs `pki/` and `kubeconfigs/` in `opts.out` (the PKI step).
pub fn write(c: &ClusterInput, v: &Versions, opts: &Options) -> Result<Written, BundleError> {
    let d = v.decide()?;
    let key = encryption_key(&opts.out)?;
    let nodes_dir = nodes_dir(&opts.out);
    std::fs::create_dir_all(&nodes_dir).map_err(io("create", &nodes_dir))?;
    let mut written = Vec::new();
    let mut bundles: BTreeMap<Role, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for node in &c.nodes {
        let files = node_files(c, node, v, &d, opts, &key)?;
        // Build aside, then swap in: a tree appears whole.
        let staging = nodes_dir.join(format!(".{}.tmp", node.name));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
        }
        build_tree(&staging, &files)?;
        let tree = nodes_dir.join(&node.name);
        if tree.exists() {
            std::fs::remove_dir_all(&tree).map_err(io("remove", &tree))?;
        }
        std::fs::rename(&staging, &tree).map_err(io("rename into", &tree))?;

        let mut own = Vec::new();
        for f in &files {
            if let Content::Binary(src) = &f.content {
                for role in [Cp, Wk] {
                    if role.applies(node)
                        && BINARIES
                            .iter()
                            .any(|(r, b, to)| *r == role && f.rel == format!("{to}/{b}"))
                    {
                        bundles
                            .entry(role)
                            .or_default()
                            .insert(f.rel.clone(), src.clone());
                    }
                }
            } else {
                own.push((f.rel.clone(), f.mode, tree.join(&f.rel)));
            }
        }
        let tarball = nodes_dir.join(format!("{}.tar.gz", node.name));
        write_tarball(&tarball, &own)?;
        written.push(WrittenNode {
            name: node.name.clone(),
            tree,
            tarball,
            files: files.iter().map(|f| f.rel.clone()).collect(),
        });
    }
    let mut binary_bundles = Vec::new();
    let mut shared_bundles = Vec::new();
    for (role, files) in &bundles {
        let path = opts.out.join(binaries_bundle(*role, v.arch));
        let entries: Vec<(String, u32, PathBuf)> = files
            .iter()
            .map(|(rel, src)| (rel.clone(), 0o755, src.clone()))
            .collect();
        shared_bundles.push(bundle_cache::shared_bundle(v, &path, &entries)?);
        binary_bundles.push(path);
    }
    let text = next_steps::render(c, v, &d, opts, !bundles.is_empty());
    let next = opts.out.join("NEXT-STEPS.md");
    write_file(&next, text.as_bytes(), 0o644)?;
    Ok(Written {
        versions: v.origin.clone(),
        nodes: written,
        binary_bundles,
        shared_bundles,
        next_steps: next,
        cgroup_v1: opts.cgroup_v1,
        next_steps_text: text,
    })
}
