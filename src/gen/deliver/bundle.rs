//! Node bundles: `nodes/<name>/` laid out like the node's root filesystem, its `install.sh`,
//! `nodes/<name>.tar.gz` (configs and PKI) and one shared `bundles/<role>-<arch>-binaries.tar.gz`
//! per role, so a hundred workers do not mean a hundred copies of the binaries.
//!
//! What each node gets is data: the certificate table's placements
//! ([`crate::r#gen::pki::certs::placed_on`]: cluster tree → node path) and [`BINARIES`] (binary → node
//! directory, role). Trees are built beside their final path and renamed in;
//! tarballs are written to a temp file and renamed; both are byte-stable (sorted entries,
//! mtime 0, uid/gid 0).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use serde::Serialize;

use crate::r#gen::Staged;
use crate::r#gen::deliver::ansible;
use crate::r#gen::deliver::bundle_cache::{self, BundleCacheError, SharedBundle};
use crate::r#gen::deliver::tarball;
use crate::r#gen::node::KeyStep;
use crate::r#gen::node::configs::NamedKey;
use crate::r#gen::node::configs::{self, ClusterInput, EncryptionKeys, NodeInput, paths};
use crate::r#gen::node::{addons, next_steps};
use crate::r#gen::plan::versions::{Decisions, Versions, VersionsError};

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
    /// The version table has no answer.
    #[error(transparent)]
    Versions(#[from] VersionsError),
    /// A key-rotation step out of order.
    #[error("{0}")]
    KeyRotation(String),
    /// A Secrets-encryption key that cannot be used as it is.
    #[error(
        "{path} is not a usable Secrets-encryption key ({reason}); a new key would make every Secret encrypted with it unreadable"
    )]
    DamagedKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing a file failed.
    #[error(transparent)]
    Write(#[from] crate::r#gen::WriteError),
    /// A shared binaries bundle could not be made, checked or placed.
    #[error(transparent)]
    SharedBundle(#[from] BundleCacheError),
    /// Reading or writing a file failed (a tarball, a staged file, a key), with its path.
    #[error(transparent)]
    Io(#[from] crate::fsx::PathIo),
}

/// [`crate::fsx::at`] into this module's error (so `?` needs no type annotation).
fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BundleError + 'a {
    crate::fsx::at(action, path)
}

pub use crate::r#gen::node::{Options, binaries_bundle};
pub use crate::r#gen::pki::certs::Role;

impl Role {
    fn applies(self, n: &NodeInput) -> bool {
        self.held_by(n.control_plane, n.worker)
    }
}

use Role::{ControlPlane as Cp, Worker as Wk};

/// Binaries per role and where they go on the node.
#[rustfmt::skip]
pub static BINARIES: &[(Role, &str, &str)] = &[
    (Cp, "etcd", "usr/local/bin"),
    (Cp, "etcdctl", "usr/local/bin"),
    // etcd 3.5+: snapshot status and restore (etcd-backup, etcd-restore); skipped for 3.4.
    (Cp, "etcdutl", "usr/local/bin"),
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
    (Wk, "kbin-pod-network"),
    (Wk, "containerd"),
    // Only where the tree has it: workers of a cluster with several control planes.
    (Wk, "kbin-apiserver-lb"),
    (Wk, "kubelet"),
    (Wk, "kube-proxy"),
];

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

/// `secrets/secretbox-key`: the key Secrets are encrypted with (base64 of 32 bytes).
pub const SECRETBOX_KEY: &str = "secrets/secretbox-key";
/// `secrets/encryption-key`: the aescbc key of trees made before kbin used secretbox.
pub const LEGACY_AESCBC_KEY: &str = "secrets/encryption-key";
/// `secrets/secretbox-keys`: once a key rotation began, every secretbox key as `NAME KEY` lines,
/// the one that writes first; [`SECRETBOX_KEY`] is then only the first key's origin.
pub const SECRETBOX_KEYS: &str = "secrets/secretbox-keys";

/// A key file's key, if the file exists; a damaged or unreadable one is an error, never
/// replaced.
fn read_key(path: &Path) -> Result<Option<String>, BundleError> {
    let damaged = |reason: String| BundleError::DamagedKey {
        path: path.to_owned(),
        reason,
    };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(damaged(format!("cannot read it: {e}"))),
    };
    let text = String::from_utf8(text).map_err(|_| damaged("not text".into()))?;
    let key = text.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|e| damaged(format!("not base64: {e}")))?;
    if bytes.len() != 32 {
        return Err(damaged(format!("{} bytes, not 32", bytes.len())));
    }
    Ok(Some(key.to_owned()))
}

/// The Secrets-encryption keys: reused from `secrets/` so re-runs keep Secrets readable; a tree's
/// old aescbc key stays as a second provider. A new key is staged with the tree, and so is the
/// key list a rotation `step` makes.
fn encryption_keys(
    out: &Path,
    staged: &Staged,
    step: Option<KeyStep>,
) -> Result<EncryptionKeys, BundleError> {
    let legacy_aescbc = read_key(&out.join(LEGACY_AESCBC_KEY))?;
    let mut keys = match read_key_list(&out.join(SECRETBOX_KEYS))? {
        Some(keys) => keys,
        None => vec![NamedKey {
            // The name every kbin tree gave its first key.
            name: "key1".into(),
            secret: match read_key(&out.join(SECRETBOX_KEY))? {
                Some(k) => k,
                None => {
                    let key = random_key()?;
                    staged.stage(
                        &out.join(SECRETBOX_KEY),
                        format!("{key}\n").as_bytes(),
                        crate::r#gen::MODE_SECRET,
                    )?;
                    key
                }
            },
        }],
    };
    if let Some(step) = step {
        keys = rotate(keys, step)?;
        let text: String = keys
            .iter()
            .map(|k| format!("{} {}\n", k.name, k.secret))
            .collect();
        staged.stage(
            &out.join(SECRETBOX_KEYS),
            text.as_bytes(),
            crate::r#gen::MODE_SECRET,
        )?;
    }
    Ok(EncryptionKeys {
        secretbox: keys,
        legacy_aescbc,
    })
}

/// The number of key `name` (`key7` → 7).
fn key_number(name: &str) -> Option<u32> {
    name.strip_prefix("key")?.parse().ok()
}

/// Where a rotation stands, from the key list: one key (none under way), the newest key second
/// (added: it reads everywhere), or first (in use: it writes, the old one still reads).
fn rotation_phase(keys: &[NamedKey]) -> &'static str {
    match keys {
        [_] => "none",
        [a, b] if key_number(&a.name) < key_number(&b.name) => "added",
        _ => "in use",
    }
}

/// The key list after `step`, or why the step does not follow the last one.
fn rotate(keys: Vec<NamedKey>, step: KeyStep) -> Result<Vec<NamedKey>, BundleError> {
    let phase = rotation_phase(&keys);
    let refuse = |what: &str| {
        Err(BundleError::KeyRotation(format!(
            "`{}` {what} (the rotation's last step: {phase})",
            step.name()
        )))
    };
    match (step, keys.as_slice()) {
        (KeyStep::Add, [only]) => {
            let next = key_number(&only.name).unwrap_or(1) + 1;
            Ok(vec![
                only.clone(),
                NamedKey {
                    name: format!("key{next}"),
                    secret: random_key()?,
                },
            ])
        }
        (KeyStep::Add, _) => {
            refuse("starts a rotation, and one is under way: run `use`, then `drop`")
        }
        (KeyStep::Use, [old, new]) if phase == "added" => Ok(vec![new.clone(), old.clone()]),
        (KeyStep::Use, _) => {
            refuse("needs the key `add` made, rolled out to every API server first")
        }
        (KeyStep::Drop, [new, _old]) if phase == "in use" => Ok(vec![new.clone()]),
        (KeyStep::Drop, _) => {
            refuse("ends a rotation whose new key is in use: run `add`, then `use` first")
        }
    }
}

/// 32 random bytes, base64.
fn random_key() -> Result<String, BundleError> {
    let mut bytes = [0u8; 32];
    let urandom = Path::new("/dev/urandom");
    let mut f = std::fs::File::open(urandom).map_err(io("cannot open", urandom))?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(io("cannot read", urandom))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// [`SECRETBOX_KEYS`], if a rotation made it: each line `NAME KEY`, each key checked as
/// [`read_key`] checks one.
fn read_key_list(path: &Path) -> Result<Option<Vec<NamedKey>>, BundleError> {
    let damaged = |reason: String| BundleError::DamagedKey {
        path: path.to_owned(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(damaged(format!("cannot read it: {e}"))),
    };
    let mut keys = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, secret) = line
            .trim()
            .split_once(' ')
            .filter(|(n, _)| key_number(n).is_some())
            .ok_or_else(|| damaged(format!("{line:?} is not `keyN BASE64`")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|e| damaged(format!("{name} is not base64: {e}")))?;
        if bytes.len() != 32 {
            return Err(damaged(format!("{name} has {} bytes, not 32", bytes.len())));
        }
        keys.push(NamedKey {
            name: name.to_owned(),
            secret: secret.trim().to_owned(),
        });
    }
    if keys.is_empty() || keys.len() > 2 {
        return Err(damaged(format!("{} keys, not 1 or 2", keys.len())));
    }
    Ok(Some(keys))
}

/// What the renderers of a node's configs read.
struct FileCx<'a> {
    c: &'a ClusterInput,
    node: &'a NodeInput,
    v: &'a Versions,
    d: &'a Decisions,
    opts: &'a Options,
    keys: &'a EncryptionKeys,
}

/// A node config: the role that has it, its path on the node, its mode, its renderer.
type ConfigFile = (Role, fn() -> String, u32, fn(&FileCx<'_>) -> String);

/// Every config and unit a node gets, by role: adding a file is adding a row.
#[rustfmt::skip]
static CONFIG_FILES: &[ConfigFile] = &[
    (Cp, || paths::unit("etcd"), 0o644, |x| configs::etcd_unit(x.c, x.node, x.d)),
    (Cp, || paths::unit("kube-apiserver"), 0o644, |x| configs::apiserver_unit(x.c, x.node, x.v)),
    (Cp, || paths::unit("kube-controller-manager"), 0o644, |x| configs::controller_manager_unit(x.c)),
    (Cp, || paths::unit("kube-scheduler"), 0o644, |_| configs::scheduler_unit()),
    (Cp, || paths::SCHEDULER_CONFIG.into(), 0o644, |x| configs::scheduler_config(x.d)),
    (Cp, || paths::ENCRYPTION_CONFIG.into(), 0o600, |x| configs::encryption_config(x.d, x.keys)),
    (Wk, || paths::CONTAINERD_CONFIG.into(), 0o644, |x| configs::containerd_config(x.v, x.d, x.c.host_profile)),
    (Wk, || paths::unit("containerd"), 0o644, |_| configs::containerd_unit()),
    (Wk, || paths::CNI_CONFLIST.into(), 0o644, |x| configs::cni_conflist(x.node, x.d)),
    (Wk, || paths::KUBELET_CONFIG.into(), 0o644, |x| configs::kubelet_config(x.c, x.node, x.d, x.opts.cgroup_v1)),
    (Wk, || paths::unit("kubelet"), 0o644, |x| configs::kubelet_unit(x.node, x.v, x.d)),
    (Wk, || paths::KUBE_PROXY_CONFIG.into(), 0o644, |x| configs::kube_proxy_config(x.c, x.node, x.d)),
    (Wk, || paths::unit("kube-proxy"), 0o644, |_| configs::kube_proxy_unit()),
    (Wk, || paths::CRICTL_CONFIG.into(), 0o644, |_| configs::crictl_config()),
    (Wk, || paths::MODULES_LOAD.into(), 0o644, |_| configs::modules_load()),
    (Wk, || paths::SYSCTL.into(), 0o644, |_| configs::sysctl()),
    (Cp, || paths::ETCD_BACKUP.into(), 0o755, |x| configs::etcd_backup_script(x.node, x.d)),
    (Cp, || paths::ETCD_RESTORE.into(), 0o755, |x| configs::etcd_restore_script(x.c, x.node, x.d)),
    (Cp, || paths::unit("etcd-backup"), 0o644, |_| configs::etcd_backup_unit()),
    (Cp, || paths::ETCD_BACKUP_TIMER.into(), 0o644, |_| configs::etcd_backup_timer()),
    (Wk, || paths::POD_NETWORK.into(), 0o755, |x| configs::pod_network_script(x.c, x.node)),
    (Wk, || paths::unit(paths::POD_NETWORK_UNIT), 0o644, |_| configs::pod_network_unit()),
];

/// Every file of a node's tree, sorted by path: its configs and units, its PKI copies, its
/// binaries and images (unless `--no-binaries`), and the install.sh that places them.
fn node_files(
    c: &ClusterInput,
    node: &NodeInput,
    v: &Versions,
    d: &Decisions,
    opts: &Options,
    keys: &EncryptionKeys,
    staged: &Staged,
) -> Result<Vec<NodeFile>, BundleError> {
    let cx = FileCx {
        c,
        node,
        v,
        d,
        opts,
        keys,
    };
    let mut files = config_files(&cx);
    pki_files(node, opts, staged, &mut files)?;
    binary_files(node, v, d, opts, &mut files)?;
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

/// A node's files by their path in its tree.
type NodeFiles = BTreeMap<String, NodeFile>;

/// The node's configs and units ([`CONFIG_FILES`], and the node-local load balancer's).
fn config_files(cx: &FileCx<'_>) -> NodeFiles {
    let (c, node) = (cx.c, cx.node);
    let mut files = NodeFiles::new();
    // Node paths are absolute in configs::paths (what the units and configs name); the tree
    // holds them relative to the node's root.
    let mut text = |path: &str, mode: u32, s: String| {
        let rel = path.trim_start_matches('/');
        files.insert(
            rel.to_owned(),
            NodeFile {
                rel: rel.to_owned(),
                mode,
                content: Content::Text(s),
            },
        );
    };
    for (role, path, mode, render) in CONFIG_FILES {
        if role.applies(node) {
            text(&path(), *mode, render(cx));
        }
    }
    // Several control planes: the worker's node-local load balancer in front of them all.
    if node.worker && c.node_local_lb() {
        text(
            paths::API_LB_CONFIG,
            0o644,
            configs::apiserver_lb_config(c, node),
        );
        text(
            &paths::unit(paths::API_LB_UNIT),
            0o644,
            configs::apiserver_lb_unit(),
        );
    }
    files
}

/// The certificates, keys and kubeconfigs placed on the node, from the PKI step's files.
fn pki_files(
    node: &NodeInput,
    opts: &Options,
    staged: &Staged,
    files: &mut NodeFiles,
) -> Result<(), BundleError> {
    for p in crate::r#gen::pki::certs::placed_on(&node.name, node.control_plane, node.worker) {
        let from = opts.out.join(&p.from);
        if staged.get(&from).is_none() && !from.is_file() {
            return Err(BundleError::MissingPki { path: from });
        }
        let content = if p.first_cert {
            let pem = staged.read(&from).map_err(io("cannot read", &from))?;
            let first = crate::r#gen::pki::certs::first_certificate(&pem);
            Content::Text(String::from_utf8_lossy(first).into_owned())
        } else {
            Content::Copy(from)
        };
        files.insert(
            p.to.clone(),
            NodeFile {
                rel: p.to,
                mode: p.mode,
                content,
            },
        );
    }
    Ok(())
}

/// The toolchain's binaries the node runs, and (on workers) the image archives containerd
/// imports: none with `--no-binaries` or without a toolchain.
fn binary_files(
    node: &NodeInput,
    v: &Versions,
    d: &Decisions,
    opts: &Options,
    files: &mut NodeFiles,
) -> Result<(), BundleError> {
    let (false, Some(dir)) = (opts.no_binaries, &v.toolchain_dir) else {
        return Ok(());
    };
    for (_, bin, to) in BINARIES
        .iter()
        .filter(|(r, b, _)| r.applies(node) && bundled(b, d))
    {
        let path = binary_path(v, dir, bin)?;
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
    // Workers run containerd: the images it needs with no registry, in the shared bundle.
    if node.worker {
        for (name, (rel_in_toolchain, _)) in &v.image_archives {
            let path = dir.join(rel_in_toolchain);
            let rel = format!("{}/{name}", paths::IMAGES.trim_start_matches('/'));
            files.insert(
                rel.clone(),
                NodeFile {
                    rel,
                    mode: 0o644,
                    content: Content::Binary(path),
                },
            );
        }
    }
    Ok(())
}

/// Where toolchain `dir` holds `bin`, or why it cannot be bundled.
fn binary_path(v: &Versions, dir: &Path, bin: &str) -> Result<PathBuf, BundleError> {
    let rel_in_toolchain = v
        .binaries
        .get(bin)
        .cloned()
        .unwrap_or_else(|| format!("bin/{bin}"));
    let path = dir.join(rel_in_toolchain);
    if !path.is_file() {
        return Err(BundleError::MissingBinary {
            toolchain: dir.to_owned(),
            binary: bin.into(),
            path,
        });
    }
    Ok(path)
}

/// Check, before anything is staged, that the toolchain holds every binary the nodes' bundles
/// need (a toolchain installed with `--only etcd` lacks kube-apiserver): the run then fails
/// before the PKI step rather than after it.
pub fn check_binaries(c: &ClusterInput, v: &Versions, opts: &Options) -> Result<(), BundleError> {
    let (false, Some(dir)) = (opts.no_binaries, &v.toolchain_dir) else {
        return Ok(());
    };
    let d = v.decide()?;
    for node in &c.nodes {
        for (_, bin, _) in BINARIES
            .iter()
            .filter(|(r, b, _)| r.applies(node) && bundled(b, &d))
        {
            binary_path(v, dir, bin)?;
        }
    }
    Ok(())
}

/// Whether the nodes get `bin` with these versions: etcdutl only where etcd has one (3.5+).
/// Also what `kbin up`'s preflight expects on the machine.
pub fn bundled(bin: &str, d: &Decisions) -> bool {
    bin != "etcdutl" || d.text(crate::r#gen::plan::versions::Knob::EtcdSnapshotTool) == "etcdutl"
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
        .filter(|(r, u)| {
            let unit = paths::unit(u);
            r.applies(node) && files.iter().any(|f| f.rel == unit.trim_start_matches('/'))
        })
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
    if node.control_plane {
        s.push_str("# A daily etcd snapshot into /var/backups/etcd (etcd-backup.service).\nsystemctl enable etcd-backup.timer\n");
    }
    s.push_str(&format!(
        "echo \"node {}: files installed and services enabled; see NEXT-STEPS.md to start them\"\n",
        node.name
    ));
    s
}

fn build_tree(dir: &Path, files: &[NodeFile], staged: &Staged) -> Result<(), BundleError> {
    for f in files {
        let path = dir.join(&f.rel);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        // Created with its final mode: a key is never readable by others, even for an instant.
        let create = |path: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(f.mode)
                .open(path)
                .map_err(io("cannot create", path))
        };
        match &f.content {
            Content::Text(s) => create(&path)?
                .write_all(s.as_bytes())
                .map_err(io("cannot write", &path))?,
            Content::Copy(from) => {
                // PKI files made in this run are staged, not yet in place.
                let bytes = staged.read(from).map_err(io("cannot read", from))?;
                create(&path)?
                    .write_all(&bytes)
                    .map_err(io("cannot write", &path))?;
            }
            Content::Binary(from) => {
                // Hardlink from the toolchain (itself hardlinks into the store); copy across
                // filesystems.
                if std::fs::hard_link(from, &path).is_err() {
                    std::fs::copy(from, &path).map_err(io("cannot copy", from))?;
                }
                continue; // the store's read-only mode stays as it is
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
            .map_err(io("cannot chmod", &path))?;
    }
    Ok(())
}

/// Write a deterministic .tar.gz of `entries` (relative path, mode, source file) on every core
/// ([`tarball`]) to a temporary file beside `path`, returned for staging. Mode 0600: a node's
/// tarball holds its private keys.
fn write_tarball(
    path: &Path,
    entries: &[(String, u32, PathBuf)],
    staged: &Staged,
) -> Result<(crate::manifest::Digest, tempfile::TempPath), BundleError> {
    let (out, tmp) = tarball::write_temp(path, staged.temp_dir(path), entries, 0o600)?;
    Ok((out.sha256, tmp))
}

/// The Ansible name of an archive: its file name without `.tar.gz`.
fn archive_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.trim_end_matches(".tar.gz").to_owned()
}

/// What node `node`'s files are to Ansible: each one's archive, mode, secrecy and the services
/// (or `modules`, `sysctl`) a change to it must be followed by.
fn host_files(
    node: &NodeInput,
    files: &[NodeFile],
    arch: crate::manifest::Arch,
) -> Vec<ansible::HostFile> {
    let text_of = |rel: &str| {
        files.iter().find_map(|f| match &f.content {
            Content::Text(t) if f.rel == rel => Some(t.clone()),
            _ => None,
        })
    };
    let units: Vec<(String, String, Vec<String>)> = UNITS
        .iter()
        .filter(|(r, _)| r.applies(node))
        .filter_map(|(_, u)| {
            let unit = paths::unit(u);
            let text = text_of(unit.trim_start_matches('/'))?;
            let refs = files
                .iter()
                .filter(|f| ansible::mentions(&text, &format!("/{}", f.rel)))
                .filter_map(|f| text_of(&f.rel))
                .collect();
            Some(((*u).to_owned(), text, refs))
        })
        .collect();
    files
        .iter()
        .filter(|f| f.rel != "install.sh")
        .map(|f| {
            let abs = format!("/{}", f.rel);
            let archive = match &f.content {
                Content::Binary(_) => {
                    let role = BINARIES
                        .iter()
                        .find(|(r, b, to)| r.applies(node) && f.rel == format!("{to}/{b}"))
                        .map_or(Wk, |(r, _, _)| *r);
                    archive_name(&binaries_bundle(role, arch))
                }
                _ => "node".to_owned(),
            };
            let restarts = if abs == paths::MODULES_LOAD {
                vec!["modules".to_owned()]
            } else if abs == paths::SYSCTL {
                vec!["sysctl".to_owned()]
            } else if abs.starts_with(&format!("{}/", paths::IMAGES)) {
                // Imported into containerd once it runs (air-gapped nodes pull nothing).
                vec!["images".to_owned()]
            } else {
                ansible::readers(&abs, &units)
            };
            ansible::HostFile {
                path: f.rel.clone(),
                mode: format!("0{:o}", f.mode),
                archive,
                secret: f.mode & 0o077 == 0,
                restarts,
            }
        })
        .collect()
}

/// `<out>/nodes`: one root-filesystem tree and one tarball per node (absent in a --pki-only tree).
pub fn nodes_dir(out: &Path) -> PathBuf {
    out.join("nodes")
}

/// Stage every node's tree, tarball and install.sh, the shared binary bundles, and
/// NEXT-STEPS.md in `staged`. Needs `pki/` and `kubeconfigs/` in `opts.out` or staged (the PKI
/// step).
pub fn write(
    c: &ClusterInput,
    v: &Versions,
    opts: &Options,
    staged: &Staged,
) -> Result<Written, BundleError> {
    let d = v.decide()?;
    let keys = encryption_keys(&opts.out, staged, opts.encryption_key_step)?;
    let nodes_dir = nodes_dir(&opts.out);
    let mut written = Vec::new();
    let mut hosts = Vec::new();
    let mut bundles = Bundles::new();
    for node in &c.nodes {
        crate::fsx::interrupt::check().map_err(io("cannot stop before", &nodes_dir))?;
        let files = node_files(c, node, v, &d, opts, &keys, staged)?;
        let (host, node_written) = stage_node(node, &files, v, &nodes_dir, staged, &mut bundles)?;
        hosts.push(host);
        written.push(node_written);
    }
    let (binary_bundles, shared_bundles) = stage_bundles(c, v, opts, staged, &bundles, &mut hosts)?;
    ansible::stage(&opts.out, c, v, &hosts, staged)?;
    staged.stage(
        &opts.out.join(addons::COREDNS),
        addons::coredns(c, v).as_bytes(),
        crate::r#gen::MODE_PUBLIC,
    )?;
    let text = next_steps::render(c, v, &d, opts, !bundles.is_empty());
    let next = opts.out.join("NEXT-STEPS.md");
    staged.stage(&next, text.as_bytes(), crate::r#gen::MODE_PUBLIC)?;
    let record = crate::r#gen::plan::versions::record_path(&opts.out);
    staged.stage(
        &record,
        v.record().to_toml().as_bytes(),
        crate::r#gen::MODE_PUBLIC,
    )?;
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

/// The binaries (and image archives) of each role's shared bundle: path in the bundle → file.
type Bundles = BTreeMap<Role, BTreeMap<String, PathBuf>>;

/// Stage one node's tree and tarball (its own files; its binaries go to the role's shared
/// bundle in `bundles`): its host in the Ansible inventory and what was written.
fn stage_node(
    node: &NodeInput,
    files: &[NodeFile],
    v: &Versions,
    nodes_dir: &Path,
    staged: &Staged,
    bundles: &mut Bundles,
) -> Result<(ansible::HostPlan, WrittenNode), BundleError> {
    // Built aside, swapped in by the commit: a tree appears whole.
    let tree = nodes_dir.join(&node.name);
    let built = staged.stage_tree(&tree)?;
    build_tree(&built, files, staged)?;

    let mut own = Vec::new();
    for f in files {
        if let Content::Binary(src) = &f.content {
            let image = f
                .rel
                .starts_with(&format!("{}/", paths::IMAGES.trim_start_matches('/')));
            for role in [Cp, Wk] {
                if role.applies(node)
                    && (BINARIES
                        .iter()
                        .any(|(r, b, to)| *r == role && f.rel == format!("{to}/{b}"))
                        || (image && role == Wk))
                {
                    bundles
                        .entry(role)
                        .or_default()
                        .insert(f.rel.clone(), src.clone());
                }
            }
        } else {
            own.push((f.rel.clone(), f.mode, built.join(&f.rel)));
        }
    }
    let tarball = nodes_dir.join(format!("{}.tar.gz", node.name));
    let (digest, tmp) = write_tarball(&tarball, &own, staged)?;
    staged.stage_written(tmp, &tarball);
    let host = ansible::HostPlan {
        name: node.name.clone(),
        ip: node.ip,
        control_plane: node.control_plane,
        worker: node.worker,
        pod_subnet: node.pod_subnet.clone(),
        archives: vec![ansible::Archive::new(
            "node".into(),
            format!("nodes/{}.tar.gz", node.name),
            digest.hex().to_owned(),
        )],
        files: host_files(node, files, v.arch),
    };
    let written = WrittenNode {
        name: node.name.clone(),
        tree,
        tarball,
        files: files.iter().map(|f| f.rel.clone()).collect(),
    };
    Ok((host, written))
}

/// Stage each role's shared binary bundle (or reuse it from the store), and add it to the
/// archives of the hosts with that role: the bundles' paths and what became of each.
fn stage_bundles(
    c: &ClusterInput,
    v: &Versions,
    opts: &Options,
    staged: &Staged,
    bundles: &Bundles,
    hosts: &mut [ansible::HostPlan],
) -> Result<(Vec<PathBuf>, Vec<SharedBundle>), BundleError> {
    let mut binary_bundles = Vec::new();
    let mut shared_bundles = Vec::new();
    for (role, files) in bundles {
        let path = opts.out.join(binaries_bundle(*role, v.arch));
        let entries: Vec<(String, u32, PathBuf)> = files
            .iter()
            .map(|(rel, src)| (rel.clone(), 0o755, src.clone()))
            .collect();
        let shared = bundle_cache::shared_bundle(v, &path, &entries, staged)?;
        let rel = binaries_bundle(*role, v.arch);
        for (h, node) in hosts.iter_mut().zip(&c.nodes) {
            if role.applies(node) {
                h.archives.push(ansible::Archive::new(
                    archive_name(&rel),
                    rel.clone(),
                    shared.digest.hex().to_owned(),
                ));
            }
        }
        shared_bundles.push(shared);
        binary_bundles.push(path);
    }
    Ok((binary_bundles, shared_bundles))
}

/// After `kbin certs renew`: bring the PKI copies inside each existing `nodes/<name>/` tree and
/// its `nodes/<name>.tar.gz` up to date with `pki/` and `kubeconfigs/` (as staged), keeping every
/// other file. Returns the nodes whose files changed: they must be redeployed.
pub fn refresh_pki(
    c: &ClusterInput,
    out: &Path,
    staged: &Staged,
) -> Result<Vec<String>, BundleError> {
    let nodes_dir = nodes_dir(out);
    let mut changed = Vec::new();
    let mut inventory_digests = Vec::new();
    for node in &c.nodes {
        let tree = nodes_dir.join(&node.name);
        if !tree.is_dir() {
            continue;
        }
        let mut fresh: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for p in crate::r#gen::pki::certs::placed_on(&node.name, node.control_plane, node.worker) {
            let from = out.join(&p.from);
            let mut bytes = staged.read(&from).map_err(io("cannot read", &from))?;
            if p.first_cert {
                bytes = crate::r#gen::pki::certs::first_certificate(&bytes).to_vec();
            }
            let now = std::fs::read(tree.join(&p.to)).ok();
            if now.as_deref() != Some(bytes.as_slice()) {
                fresh.insert(p.to, bytes);
            }
        }
        if fresh.is_empty() {
            continue;
        }
        // A new tree: the changed files written, every other file linked from the old tree.
        let built = staged.stage_tree(&tree)?;
        let binaries: Vec<String> = BINARIES
            .iter()
            .filter(|(r, _, _)| r.applies(node))
            .map(|(_, b, to)| format!("{to}/{b}"))
            .collect();
        let mut own = Vec::new();
        for rel in crate::fsx::files_under(&tree)? {
            let rel = rel.to_string_lossy().into_owned();
            let (src, dst) = (tree.join(&rel), built.join(&rel));
            let parent = dst.parent().unwrap_or(&built);
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
            let mode = std::fs::metadata(&src)
                .map_err(io("cannot stat", &src))?
                .permissions()
                .mode()
                & 0o7777;
            match fresh.get(&rel) {
                Some(bytes) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(mode)
                        .open(&dst)
                        .map_err(io("cannot create", &dst))?;
                    f.write_all(bytes).map_err(io("cannot write", &dst))?;
                }
                None => {
                    if std::fs::hard_link(&src, &dst).is_err() {
                        std::fs::copy(&src, &dst).map_err(io("cannot copy", &src))?;
                    }
                }
            }
            if !binaries.contains(&rel) {
                own.push((rel.clone(), mode, dst));
            }
        }
        let tarball = nodes_dir.join(format!("{}.tar.gz", node.name));
        let (digest, tmp) = write_tarball(&tarball, &own, staged)?;
        staged.stage_written(tmp, &tarball);
        // The inventory records each node tarball's sha256 (site.yml checks it on the host).
        if let Ok(old) = std::fs::read(&tarball) {
            inventory_digests.push((crate::util::sha256_hex(&old), digest.hex().to_owned()));
        }
        changed.push(node.name.clone());
    }
    let inventory = out.join(ansible::DIR).join("inventory.yml");
    if !inventory_digests.is_empty()
        && let Ok(mut text) = std::fs::read_to_string(&inventory)
    {
        for (old, new) in &inventory_digests {
            // The sha256 the host checks, and the stage directory named after it: a stage
            // left named by the old digest would be taken as already unpacked, and the host
            // would install the old files again.
            let stage =
                |d: &str| ansible::Archive::new("node".into(), String::new(), d.into()).stage;
            text = text
                .replace(old.as_str(), new)
                .replace(&stage(old), &stage(new));
        }
        staged.stage(&inventory, text.as_bytes(), crate::r#gen::MODE_PUBLIC)?;
    }
    Ok(changed)
}
