//! The certificate table: every CA, leaf and key pair of a cluster as data (the model is
//! kubeadm's `cmd/kubeadm/app/phases/certs/certlist.go`).
//!
//! [`TABLE`] is a static list of [`Row`]s; per-node rows are templates (`{node}` in their file,
//! CN and kubeconfig) that [`plan`] expands for each control-plane node or each worker. CAs come
//! before the leaves they sign, so a plan can be walked in order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::spec::{ClusterSpec, Node};

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
    /// The kubeconfig (under `kubeconfigs/`) embedding this client certificate.
    pub kubeconfig: Option<&'static str>,
}

#[allow(clippy::too_many_arguments)] // one argument per column of the table
const fn row(
    file: &'static str,
    ca: Option<&'static str>,
    cn: &'static str,
    org: Option<&'static str>,
    kind: Kind,
    sans: SanRule,
    scope: Scope,
    kubeconfig: Option<&'static str>,
) -> Row {
    Row {
        file,
        ca,
        cn,
        org,
        kind,
        sans,
        scope,
        kubeconfig,
    }
}

use Kind::*;
use SanRule as S;
use Scope::*;

const K8S_CA: Option<&str> = Some("ca");
const ETCD_CA: Option<&str> = Some("etcd/ca");
const FP_CA: Option<&str> = Some("front-proxy-ca");

/// Every certificate and key pair of a cluster, CAs first.
#[rustfmt::skip]
pub const TABLE: &[Row] = &[
    row("ca", None, "kubernetes", None, Ca, S::None, Cluster, None),
    row("front-proxy-ca", None, "front-proxy-ca", None, Ca, S::None, Cluster, None),
    row("etcd/ca", None, "etcd-ca", None, Ca, S::None, Cluster, None),
    row("sa", None, "sa", None, KeyPair, S::None, Cluster, None),
    row("apiserver", K8S_CA, "kube-apiserver", None, Server, S::ApiServer, Cluster, None),
    row("apiserver-kubelet-client", K8S_CA, "kube-apiserver-kubelet-client", Some("kubeadm:cluster-admins"), Client, S::None, Cluster, None),
    row("front-proxy-client", FP_CA, "front-proxy-client", None, Client, S::None, Cluster, None),
    row("etcd/{node}/server", ETCD_CA, "{node}", None, ServerClient, S::EtcdNode, ControlPlane, None),
    row("etcd/{node}/peer", ETCD_CA, "{node}", None, ServerClient, S::EtcdNode, ControlPlane, None),
    row("etcd/healthcheck-client", ETCD_CA, "kube-etcd-healthcheck-client", None, Client, S::None, Cluster, None),
    row("apiserver-etcd-client", ETCD_CA, "kube-apiserver-etcd-client", None, Client, S::None, Cluster, None),
    row("admin", K8S_CA, "kubernetes-admin", Some("kubeadm:cluster-admins"), Client, S::None, Cluster, Some("admin.conf")),
    row("super-admin", K8S_CA, "kubernetes-super-admin", Some("system:masters"), Client, S::None, Cluster, Some("super-admin.conf")),
    row("controller-manager", K8S_CA, "system:kube-controller-manager", None, Client, S::None, Cluster, Some("controller-manager.conf")),
    row("scheduler", K8S_CA, "system:kube-scheduler", None, Client, S::None, Cluster, Some("scheduler.conf")),
    row("kube-proxy", K8S_CA, "system:kube-proxy", Some("system:node-proxier"), Client, S::None, Cluster, Some("kube-proxy.conf")),
    row("nodes/{node}/kubelet-client", K8S_CA, "system:node:{node}", Some("system:nodes"), Client, S::None, Worker, Some("kubelet-{node}.conf")),
    row("nodes/{node}/kubelet", K8S_CA, "system:node:{node}", Some("system:nodes"), Server, S::Node, Worker, None),
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
        kubeconfig: row.kubeconfig.map(fill),
        node: node.map(|n| n.name.clone()),
    }
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
    use crate::r#gen::spec::SpecInput;

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
