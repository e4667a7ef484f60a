//! The certificate table: every CA, leaf and key pair of a cluster as data (the model is
//! kubeadm's `cmd/kubeadm/app/phases/certs/certlist.go`).
//!
//! [`TABLE`] is a static list of [`Row`]s; per-node rows are templates (`{node}` in their file,
//! CN and kubeconfig) that [`plan`] expands for each control-plane node or each worker. CAs come
//! before the leaves they sign, so a plan can be walked in order.
//!
//! The table is the only place that names PKI and kubeconfig files: each row also says where its
//! files go on the nodes that need them ([`Place`], [`Kubeconfig`]); the configs ask for paths by
//! [`Id`] ([`on_node_cert`], [`on_node_kubeconfig`]) and the bundles by node ([`placed_on`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::r#gen::plan::spec::{ClusterSpec, EndpointHost, Node};

/// The role of a node: what it runs, and so which files it gets.
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

    /// Whether a node with these roles has this one.
    pub fn held_by(self, control_plane: bool, worker: bool) -> bool {
        match self {
            Role::ControlPlane => control_plane,
            Role::Worker => worker,
        }
    }
}

/// Every row by name, for the configs to ask for paths without spelling file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each is the row of the same name in TABLE
pub enum Id {
    Ca,
    FrontProxyCa,
    EtcdCa,
    Sa,
    Apiserver,
    ApiserverKubeletClient,
    FrontProxyClient,
    EtcdServer,
    EtcdPeer,
    EtcdHealthcheckClient,
    ApiserverEtcdClient,
    Admin,
    SuperAdmin,
    ControllerManager,
    Scheduler,
    KubeProxy,
    KubeletClient,
    Kubelet,
}

/// What a role's nodes get of a row's certificate and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Give {
    /// The certificate (or public key) only.
    Cert,
    /// The certificate (or public key) and the private key.
    CertAndKey,
}

/// Where a row's files go on the nodes: under [`NODE_PKI`] as `<file>.crt`/`.key`, for each role
/// listed (per-node rows: only on their own node).
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// Path under [`NODE_PKI`] without extension (kubeadm's names).
    pub file: &'static str,
    /// The roles that get it, and what.
    pub give: &'static [(Role, Give)],
}

/// A kubeconfig that embeds a row's client certificate.
#[derive(Debug, Clone, Copy)]
pub struct Kubeconfig {
    /// Its name under `kubeconfigs/` (`{node}` for per-node rows).
    pub file: &'static str,
    /// Its name on the node, under [`NODE_KUBECONFIGS`].
    pub on_node: &'static str,
    /// The roles whose nodes get it.
    pub roles: &'static [Role],
    /// Which API server address it names.
    pub reach: Reach,
}

pub use crate::r#gen::plan::spec::Reach;

/// Where PKI files live on a node (kubeadm's directory), relative to the node's root.
pub const NODE_PKI: &str = "etc/kubernetes/pki";
/// Where kubeconfigs live on a node, relative to its root.
pub const NODE_KUBECONFIGS: &str = "etc/kubernetes";
/// The tree's directory of kubeconfigs, relative to the output directory.
pub const TREE_KUBECONFIGS: &str = "kubeconfigs";
/// The tree's PKI directory, relative to the output directory.
pub const TREE_PKI: &str = "pki";

/// What a row's key and certificate are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A self-signed CA (basic constraints CA:TRUE, keyCertSign).
    Ca,
    /// A leaf used by servers (EKU serverAuth).
    Server,
    /// A leaf used by clients (EKU clientAuth).
    Client,
    /// A leaf used both ways (etcd server and peer: EKU serverAuth and clientAuth).
    ServerClient,
    /// A bare key pair with no certificate (the service-account signing key: `sa.key`, `sa.pub`).
    KeyPair,
}

/// How a row's subject alternative names are computed from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanRule {
    /// No SANs (clients and CAs).
    None,
    /// kubernetes, kubernetes.default, kubernetes.default.svc, kubernetes.default.svc.<domain>,
    /// the first service IP, every control-plane name and IP, the API endpoint, localhost,
    /// 127.0.0.1.
    ApiServer,
    /// The node's name and IP, localhost, 127.0.0.1 and ::1 (kubeadm's etcd server and peer).
    EtcdNode,
    /// The node's name and IP (the kubelet's serving certificate).
    Node,
}

/// Which nodes a row is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Once per cluster.
    Cluster,
    /// Once per control-plane node.
    ControlPlane,
    /// Once per worker node.
    Worker,
}

/// One row of the table. `{node}` in `file`, `cn` and `kubeconfig` is the node's name.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The row's name for code.
    pub id: Id,
    /// Path under `pki/` without extension (`.crt`/`.key`, or `.key`/`.pub` for a key pair);
    /// also the certificate's name in `kbin certs`.
    pub file: &'static str,
    /// The signing CA's `file`; `None` for CAs (self-signed) and key pairs.
    pub ca: Option<&'static str>,
    /// Subject common name.
    pub cn: &'static str,
    /// Subject organization (the RBAC group).
    pub org: Option<&'static str>,
    /// Key usages.
    pub kind: Kind,
    /// SANs.
    pub sans: SanRule,
    /// Which nodes.
    pub scope: Scope,
    /// Where its certificate and key go on the nodes.
    pub place: Place,
    /// The kubeconfig embedding this client certificate.
    pub kubeconfig: Option<Kubeconfig>,
}

#[allow(clippy::too_many_arguments)] // one argument per column of the table
const fn row(
    id: Id,
    file: &'static str,
    ca: Option<&'static str>,
    cn: &'static str,
    org: Option<&'static str>,
    kind: Kind,
    sans: SanRule,
    scope: Scope,
    place: Place,
    kubeconfig: Option<Kubeconfig>,
) -> Row {
    Row {
        id,
        file,
        ca,
        cn,
        org,
        kind,
        sans,
        scope,
        place,
        kubeconfig,
    }
}

const fn on(file: &'static str, give: &'static [(Role, Give)]) -> Place {
    Place { file, give }
}

/// Not copied to nodes (a client certificate that travels inside its kubeconfig).
const NOWHERE: Place = Place {
    file: "",
    give: &[],
};

const fn kc(
    file: &'static str,
    on_node: &'static str,
    roles: &'static [Role],
    reach: Reach,
) -> Option<Kubeconfig> {
    Some(Kubeconfig {
        file,
        on_node,
        roles,
        reach,
    })
}

use Give::{Cert, CertAndKey};
use Role::{ControlPlane as Cp, Worker as Wk};

use Kind::*;
use SanRule as S;
use Scope::*;

const K8S_CA: Option<&str> = Some("ca");
const ETCD_CA: Option<&str> = Some("etcd/ca");
const FP_CA: Option<&str> = Some("front-proxy-ca");

/// Every certificate and key pair of a cluster, CAs first.
#[rustfmt::skip]
pub const TABLE: &[Row] = &[
    row(Id::Ca, "ca", None, "kubernetes", None, Ca, S::None, Cluster, on("ca", &[(Cp, CertAndKey), (Wk, Cert)]), None),
    row(Id::FrontProxyCa, "front-proxy-ca", None, "front-proxy-ca", None, Ca, S::None, Cluster, on("front-proxy-ca", &[(Cp, Cert)]), None),
    row(Id::EtcdCa, "etcd/ca", None, "etcd-ca", None, Ca, S::None, Cluster, on("etcd/ca", &[(Cp, Cert)]), None),
    row(Id::Sa, "sa", None, "sa", None, KeyPair, S::None, Cluster, on("sa", &[(Cp, CertAndKey)]), None),
    row(Id::Apiserver, "apiserver", K8S_CA, "kube-apiserver", None, Server, S::ApiServer, Cluster, on("apiserver", &[(Cp, CertAndKey)]), None),
    row(Id::ApiserverKubeletClient, "apiserver-kubelet-client", K8S_CA, "kube-apiserver-kubelet-client", Some("kubeadm:cluster-admins"), Client, S::None, Cluster, on("apiserver-kubelet-client", &[(Cp, CertAndKey)]), None),
    row(Id::FrontProxyClient, "front-proxy-client", FP_CA, "front-proxy-client", None, Client, S::None, Cluster, on("front-proxy-client", &[(Cp, CertAndKey)]), None),
    row(Id::EtcdServer, "etcd/{node}/server", ETCD_CA, "{node}", None, ServerClient, S::EtcdNode, ControlPlane, on("etcd/server", &[(Cp, CertAndKey)]), None),
    row(Id::EtcdPeer, "etcd/{node}/peer", ETCD_CA, "{node}", None, ServerClient, S::EtcdNode, ControlPlane, on("etcd/peer", &[(Cp, CertAndKey)]), None),
    row(Id::EtcdHealthcheckClient, "etcd/healthcheck-client", ETCD_CA, "kube-etcd-healthcheck-client", None, Client, S::None, Cluster, on("etcd/healthcheck-client", &[(Cp, CertAndKey)]), None),
    row(Id::ApiserverEtcdClient, "apiserver-etcd-client", ETCD_CA, "kube-apiserver-etcd-client", None, Client, S::None, Cluster, on("apiserver-etcd-client", &[(Cp, CertAndKey)]), None),
    row(Id::Admin, "admin", K8S_CA, "kubernetes-admin", Some("kubeadm:cluster-admins"), Client, S::None, Cluster, NOWHERE, kc("admin.conf", "admin.conf", &[Cp], Reach::Endpoint)),
    row(Id::SuperAdmin, "super-admin", K8S_CA, "kubernetes-super-admin", Some("system:masters"), Client, S::None, Cluster, NOWHERE, kc("super-admin.conf", "super-admin.conf", &[Cp], Reach::Endpoint)),
    row(Id::ControllerManager, "controller-manager", K8S_CA, "system:kube-controller-manager", None, Client, S::None, Cluster, NOWHERE, kc("controller-manager.conf", "controller-manager.conf", &[Cp], Reach::LocalApiserver)),
    row(Id::Scheduler, "scheduler", K8S_CA, "system:kube-scheduler", None, Client, S::None, Cluster, NOWHERE, kc("scheduler.conf", "scheduler.conf", &[Cp], Reach::LocalApiserver)),
    row(Id::KubeProxy, "kube-proxy", K8S_CA, "system:kube-proxy", Some("system:node-proxier"), Client, S::None, Cluster, NOWHERE, kc("kube-proxy.conf", "kube-proxy.conf", &[Wk], Reach::NodeLocalLb)),
    row(Id::KubeletClient, "nodes/{node}/kubelet-client", K8S_CA, "system:node:{node}", Some("system:nodes"), Client, S::None, Worker, NOWHERE, kc("kubelet-{node}.conf", "kubelet.conf", &[Wk], Reach::NodeLocalLb)),
    row(Id::Kubelet, "nodes/{node}/kubelet", K8S_CA, "system:node:{node}", Some("system:nodes"), Server, S::Node, Worker, on("kubelet", &[(Wk, CertAndKey)]), None),
];

/// A row expanded for the spec (and a node, for per-node rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The name in `kbin certs` and the path under `pki/` without extension.
    pub name: String,
    /// The signing CA's name (`None` for CAs and key pairs).
    pub ca: Option<String>,
    /// Subject common name.
    pub cn: String,
    /// Subject organization.
    pub org: Option<String>,
    /// Key usages.
    pub kind: Kind,
    /// Subject alternative names.
    pub sans: Vec<San>,
    /// The kubeconfig file name under `kubeconfigs/`, for client certificates that have one.
    pub kubeconfig: Option<String>,
    /// The API server address its kubeconfig names.
    pub reach: Reach,
    /// The node, for per-node rows.
    pub node: Option<String>,
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl Item {
    /// `pki/<name>.crt` (for a key pair: `pki/<name>.pub`).
    pub fn cert_path(&self, pki: &Path) -> PathBuf {
        let ext = if self.kind == KeyPair { "pub" } else { "crt" };
        pki.join(format!("{}.{ext}", self.name))
    }

    /// `pki/<name>.key`.
    pub fn key_path(&self, pki: &Path) -> PathBuf {
        pki.join(format!("{}.key", self.name))
    }

    /// Whether this is a CA.
    pub fn is_ca(&self) -> bool {
        self.kind == Ca
    }
}

/// Expand the table for `spec`: CAs, then cluster rows, then per-node rows in node order (each
/// row's nodes together, so the order is stable as nodes are added).
pub fn plan(spec: &ClusterSpec) -> Vec<Item> {
    let mut items = Vec::new();
    for row in TABLE {
        let nodes: Vec<Option<&Node>> = match row.scope {
            Cluster => vec![None],
            ControlPlane => spec.control_planes().map(Some).collect(),
            Worker => spec.workers().map(Some).collect(),
        };
        for node in nodes {
            items.push(expand(row, spec, node));
        }
    }
    items
}

fn expand(row: &Row, spec: &ClusterSpec, node: Option<&Node>) -> Item {
    let fill = |t: &str| match node {
        Some(n) => t.replace("{node}", &n.name),
        None => t.to_string(),
    };
    Item {
        name: fill(row.file),
        ca: row.ca.map(str::to_string),
        cn: fill(row.cn),
        org: row.org.map(str::to_string),
        kind: row.kind,
        sans: sans(row.sans, spec, node),
        kubeconfig: row.kubeconfig.map(|k| fill(k.file)),
        reach: row.kubeconfig.map_or(Reach::Endpoint, |k| k.reach),
        node: node.map(|n| n.name.clone()),
    }
}

/// The row called `id`.
pub fn row_of(id: Id) -> &'static Row {
    TABLE
        .iter()
        .find(|r| r.id == id)
        .expect("every Id has a row (tested)")
}

fn ext(kind: Kind) -> &'static str {
    if kind == KeyPair { "pub" } else { "crt" }
}

/// The absolute path of row `id`'s certificate (public key for a key pair) on a node.
pub fn on_node_cert(id: Id) -> String {
    let r = row_of(id);
    format!("/{NODE_PKI}/{}.{}", r.place.file, ext(r.kind))
}

/// The absolute path of row `id`'s private key on a node.
pub fn on_node_key(id: Id) -> String {
    format!("/{NODE_PKI}/{}.key", row_of(id).place.file)
}

/// The absolute path on a node of the kubeconfig that embeds row `id`'s certificate.
pub fn on_node_kubeconfig(id: Id) -> String {
    let k = row_of(id)
        .kubeconfig
        .expect("asked only for rows with a kubeconfig (tested by rendering every file)");
    format!("/{NODE_KUBECONFIGS}/{}", k.on_node)
}

/// The kubeconfig embedding row `id`'s certificate, relative to the cluster output directory
/// (cluster-wide rows only).
pub fn tree_kubeconfig(id: Id) -> String {
    let k = row_of(id)
        .kubeconfig
        .expect("asked only for rows with a kubeconfig");
    format!("{TREE_KUBECONFIGS}/{}", k.file)
}

/// A PKI or kubeconfig file a node gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Relative to the cluster output directory.
    pub from: String,
    /// Relative to the node's root.
    pub to: String,
    /// File mode (keys and kubeconfigs 0600).
    pub mode: u32,
    /// Only the first certificate of `from` (a signer's own certificate, out of its CA file
    /// that holds the trust bundle during a CA rotation): [`first_certificate`].
    pub first_cert: bool,
}

/// The node file name of a CA's certificate alone, for the signer that reads it (the
/// controller manager's `--cluster-signing-cert-file` takes exactly one certificate, while
/// `<file>.crt` holds the old and the new CA during a rotation).
fn signer_file(place: &str) -> String {
    format!("{place}-signer")
}

/// The absolute path on a node of CA `id`'s certificate alone, for its signer (only CAs whose
/// key nodes get).
pub fn on_node_signer_cert(id: Id) -> String {
    format!("/{NODE_PKI}/{}.crt", signer_file(row_of(id).place.file))
}

/// The first PEM certificate of `pem` with its line end (the signing CA, first in a CA file);
/// all of `pem` when it holds none (a placeholder).
pub fn first_certificate(pem: &[u8]) -> &[u8] {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let Some(start) = find(pem, BEGIN) else {
        return pem;
    };
    let Some(end) = find(&pem[start..], END).map(|e| start + e + END.len()) else {
        return pem;
    };
    let end = if pem.get(end) == Some(&b'\n') {
        end + 1
    } else {
        end
    };
    &pem[start..end]
}

/// Every PKI and kubeconfig file node `name` gets for its roles, sorted by node path.
pub fn placed_on(name: &str, control_plane: bool, worker: bool) -> Vec<Placed> {
    let held = |r: Role| r.held_by(control_plane, worker);
    let fill = |t: &str| t.replace("{node}", name);
    let mut out: Vec<Placed> = Vec::new();
    for r in TABLE {
        let here = match r.scope {
            Cluster => true,
            ControlPlane => control_plane,
            Worker => worker,
        };
        if !here {
            continue;
        }
        let key = r
            .place
            .give
            .iter()
            .any(|(role, g)| held(*role) && *g == CertAndKey);
        if r.place.give.iter().any(|(role, _)| held(*role)) {
            out.push(Placed {
                from: format!("{TREE_PKI}/{}.{}", fill(r.file), ext(r.kind)),
                to: format!("{NODE_PKI}/{}.{}", r.place.file, ext(r.kind)),
                mode: 0o644,
                first_cert: false,
            });
            if key {
                out.push(Placed {
                    from: format!("{TREE_PKI}/{}.key", fill(r.file)),
                    to: format!("{NODE_PKI}/{}.key", r.place.file),
                    mode: 0o600,
                    first_cert: false,
                });
            }
            if key && r.kind == Ca {
                // A CA given with its key signs on the node: its certificate alone too.
                out.push(Placed {
                    from: format!("{TREE_PKI}/{}.crt", fill(r.file)),
                    to: format!("{NODE_PKI}/{}.crt", signer_file(r.place.file)),
                    mode: 0o644,
                    first_cert: true,
                });
            }
        }
        if let Some(k) = r.kubeconfig
            && k.roles.iter().any(|role| held(*role))
        {
            out.push(Placed {
                from: format!("{TREE_KUBECONFIGS}/{}", fill(k.file)),
                to: format!("{NODE_KUBECONFIGS}/{}", k.on_node),
                mode: 0o600,
                first_cert: false,
            });
        }
    }
    out.sort_by(|a, b| a.to.cmp(&b.to));
    out
}

fn sans(rule: SanRule, spec: &ClusterSpec, node: Option<&Node>) -> Vec<San> {
    let localhost = [
        San::Dns("localhost".into()),
        San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    let mut out: Vec<San> = match (rule, node) {
        (SanRule::None, _) => vec![],
        (SanRule::ApiServer, _) => {
            let mut v: Vec<San> = [
                "kubernetes".to_string(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                format!("kubernetes.default.svc.{}", spec.cluster_domain),
            ]
            .into_iter()
            .map(San::Dns)
            .collect();
            v.push(San::Ip(spec.first_service_ip()));
            for cp in spec.control_planes() {
                v.push(San::Dns(cp.name.clone()));
                v.push(San::Ip(cp.ip));
            }
            v.push(San::Ip(spec.cluster_ip));
            match spec.api_endpoint.as_ref().map(|e| &e.host) {
                Some(EndpointHost::Ip(ip)) => v.push(San::Ip(*ip)),
                Some(EndpointHost::Dns(name)) => v.push(San::Dns(name.clone())),
                None => {}
            }
            v.extend(localhost);
            v
        }
        (SanRule::EtcdNode, Some(n)) => {
            let mut v = vec![San::Dns(n.name.clone()), San::Ip(n.ip)];
            v.extend(localhost);
            v.push(San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
            v
        }
        (SanRule::Node, Some(n)) => vec![San::Dns(n.name.clone()), San::Ip(n.ip)],
        (SanRule::EtcdNode | SanRule::Node, None) => {
            unreachable!("per-node SAN rules are only used by per-node rows")
        }
    };
    // Deduplicate while keeping the table's order (a control plane at the API endpoint).
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::r#gen::plan::spec::SpecInput;

    #[test]
    fn every_ca_comes_before_the_leaves_it_signs() {
        for (i, row) in TABLE.iter().enumerate() {
            if let Some(ca) = row.ca {
                let at = TABLE.iter().position(|r| r.file == ca && r.kind == Ca);
                assert!(at.is_some_and(|at| at < i), "{} signed by {ca}", row.file);
            }
        }
    }

    #[test]
    fn every_id_names_one_row_and_node_paths_never_collide() {
        for r in TABLE {
            assert_eq!(
                TABLE.iter().filter(|o| o.id == r.id).count(),
                1,
                "{:?}",
                r.id
            );
        }
        for (cp, w) in [(true, false), (false, true), (true, true)] {
            let placed = placed_on("n1", cp, w);
            let mut to: Vec<_> = placed.iter().map(|p| p.to.as_str()).collect();
            to.dedup();
            assert_eq!(to.len(), placed.len(), "{placed:?}");
        }
        let w = placed_on("w1", false, true);
        let tos: Vec<_> = w
            .iter()
            .map(|p| (p.from.as_str(), p.to.as_str(), p.mode))
            .collect();
        assert_eq!(
            tos,
            [
                (
                    "kubeconfigs/kube-proxy.conf",
                    "etc/kubernetes/kube-proxy.conf",
                    0o600
                ),
                (
                    "kubeconfigs/kubelet-w1.conf",
                    "etc/kubernetes/kubelet.conf",
                    0o600
                ),
                ("pki/ca.crt", "etc/kubernetes/pki/ca.crt", 0o644),
                (
                    "pki/nodes/w1/kubelet.crt",
                    "etc/kubernetes/pki/kubelet.crt",
                    0o644
                ),
                (
                    "pki/nodes/w1/kubelet.key",
                    "etc/kubernetes/pki/kubelet.key",
                    0o600
                ),
            ]
        );
        let cp = placed_on("cp1", true, false);
        assert!(
            cp.iter().any(|p| p.from == "pki/etcd/cp1/server.key"
                && p.to == "etc/kubernetes/pki/etcd/server.key")
        );
        assert!(
            !cp.iter().any(|p| p.to.ends_with("front-proxy-ca.key")),
            "no CA key but the cluster CA's"
        );
        assert!(cp.iter().any(|p| p.from == "pki/ca.crt"
            && p.to == "etc/kubernetes/pki/ca-signer.crt"
            && p.first_cert));
        assert_eq!(
            on_node_signer_cert(Id::Ca),
            "/etc/kubernetes/pki/ca-signer.crt"
        );
        assert_eq!(on_node_cert(Id::Sa), "/etc/kubernetes/pki/sa.pub");
        assert_eq!(
            on_node_kubeconfig(Id::KubeletClient),
            "/etc/kubernetes/kubelet.conf"
        );
    }

    #[test]
    fn first_certificate_takes_the_first_pem_block_or_everything() {
        let two = b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            first_certificate(two),
            b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(first_certificate(b"placeholder\n"), b"placeholder\n");
    }

    #[test]
    fn plan_expands_per_node_rows() {
        let mut i = SpecInput::default();
        i.add_nodes(
            &["cp1=10.0.0.1".into(), "cp2=10.0.0.2".into()],
            &["w1=10.0.0.3".into()],
        )
        .unwrap();
        let spec = i.build().unwrap();
        let items = plan(&spec);
        let names: Vec<_> = items.iter().map(|i| i.name.as_str()).collect();
        assert!(names.contains(&"etcd/cp2/peer"));
        assert!(names.contains(&"nodes/w1/kubelet"));
        assert!(!names.contains(&"nodes/cp1/kubelet"));
        let kc = items
            .iter()
            .find(|i| i.name == "nodes/w1/kubelet-client")
            .unwrap();
        assert_eq!(kc.cn, "system:node:w1");
        assert_eq!(kc.kubeconfig.as_deref(), Some("kubelet-w1.conf"));
        let api = items.iter().find(|i| i.name == "apiserver").unwrap();
        assert!(api.sans.contains(&San::Ip("10.0.0.2".parse().unwrap())));
        assert!(
            api.sans
                .contains(&San::Dns("kubernetes.default.svc.cluster.local".into()))
        );
        assert!(api.sans.contains(&San::Ip("10.32.0.1".parse().unwrap())));
        // 14 cluster rows (with the key pair), 2 per control plane, 2 per worker.
        assert_eq!(items.len(), 14 + 4 + 2);
    }
}
