//! The certificate table: every CA, leaf and key pair of a cluster as a row of data.
//!
//! Modelled on kubeadm's `certlist.go`: [`TABLE`] is a static slice of [`Row`]s (file, CA, CN, O,
//! usages, SAN rule), CAs before the leaves they sign; per-node rows are templates (`{node}` in
//! the file and CN) expanded for each control-plane or worker node by [`expand`]. Adding a
//! certificate is adding a row.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::spec::ClusterSpec;

/// What a row makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A self-signed certificate authority.
    Ca,
    /// A certificate signed by a CA of the table.
    Leaf,
    /// A bare key pair (the service-account signing key: `sa.key`, `sa.pub`).
    KeyPair,
}

/// An extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Usage {
    /// TLS server (`serverAuth`).
    Server,
    /// TLS client (`clientAuth`).
    Client,
}

/// Which subject alternative names a certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SanRule {
    /// None (clients, CAs).
    None,
    /// kube-apiserver: the `kubernetes` service names, its first service IP, every control-plane
    /// name and IP, the API endpoint, localhost.
    ApiServer,
    /// etcd server and peer: the node's name and IP, localhost.
    EtcdMember,
    /// kubelet serving: the node's name and IP.
    Kubelet,
}

/// For which nodes a row is instantiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Once per cluster.
    Cluster,
    /// Once per control-plane node (`{node}` in file and CN).
    ControlPlane,
    /// Once per worker node (`{node}` in file and CN).
    Worker,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Row {
    /// The name `kbin certs renew` takes (`{node}` filled in).
    pub name: &'static str,
    /// The file under `pki/` without extension (`.crt` / `.key`; `.pub` / `.key` for key pairs).
    pub file: &'static str,
    /// What the row makes.
    pub kind: Kind,
    /// The name of the CA row that signs it (leaves only).
    pub ca: Option<&'static str>,
    /// The subject's common name.
    pub cn: &'static str,
    /// The subject's organizations (RBAC groups).
    pub orgs: &'static [&'static str],
    /// Extended key usages.
    pub usages: &'static [Usage],
    /// Subject alternative names.
    pub sans: SanRule,
    /// Once per cluster, or per node.
    pub scope: Scope,
}

const fn ca(name: &'static str, file: &'static str, cn: &'static str) -> Row {
    Row {
        name,
        file,
        kind: Kind::Ca,
        ca: None,
        cn,
        orgs: &[],
        usages: &[],
        sans: SanRule::None,
        scope: Scope::Cluster,
    }
}

const fn client(
    name: &'static str,
    file: &'static str,
    ca: &'static str,
    cn: &'static str,
    orgs: &'static [&'static str],
) -> Row {
    Row {
        name,
        file,
        kind: Kind::Leaf,
        ca: Some(ca),
        cn,
        orgs,
        usages: &[Usage::Client],
        sans: SanRule::None,
        scope: Scope::Cluster,
    }
}

/// The certificates of a cluster, CAs first (kubeadm's names and subjects).
pub const TABLE: &[Row] = &[
    ca("ca", "ca", "kubernetes"),
    ca("front-proxy-ca", "front-proxy-ca", "front-proxy-ca"),
    ca("etcd-ca", "etcd/ca", "etcd-ca"),
    Row {
        name: "apiserver",
        file: "apiserver",
        kind: Kind::Leaf,
        ca: Some("ca"),
        cn: "kube-apiserver",
        orgs: &[],
        usages: &[Usage::Server],
        sans: SanRule::ApiServer,
        scope: Scope::Cluster,
    },
    client(
        "apiserver-kubelet-client",
        "apiserver-kubelet-client",
        "ca",
        "kube-apiserver-kubelet-client",
        &["kubeadm:cluster-admins"],
    ),
    client(
        "front-proxy-client",
        "front-proxy-client",
        "front-proxy-ca",
        "front-proxy-client",
        &[],
    ),
    Row {
        name: "etcd-server-{node}",
        file: "etcd/{node}/server",
        kind: Kind::Leaf,
        ca: Some("etcd-ca"),
        cn: "{node}",
        orgs: &[],
        usages: &[Usage::Server, Usage::Client],
        sans: SanRule::EtcdMember,
        scope: Scope::ControlPlane,
    },
    Row {
        name: "etcd-peer-{node}",
        file: "etcd/{node}/peer",
        kind: Kind::Leaf,
        ca: Some("etcd-ca"),
        cn: "{node}",
        orgs: &[],
        usages: &[Usage::Server, Usage::Client],
        sans: SanRule::EtcdMember,
        scope: Scope::ControlPlane,
    },
    client(
        "etcd-healthcheck-client",
        "etcd/healthcheck-client",
        "etcd-ca",
        "kube-etcd-healthcheck-client",
        &[],
    ),
    client(
        "apiserver-etcd-client",
        "apiserver-etcd-client",
        "etcd-ca",
        "kube-apiserver-etcd-client",
        &[],
    ),
    Row {
        name: "sa",
        file: "sa",
        kind: Kind::KeyPair,
        ca: None,
        cn: "",
        orgs: &[],
        usages: &[],
        sans: SanRule::None,
        scope: Scope::Cluster,
    },
    client(
        "admin",
        "admin",
        "ca",
        "kubernetes-admin",
        &["kubeadm:cluster-admins"],
    ),
    client(
        "super-admin",
        "super-admin",
        "ca",
        "kubernetes-super-admin",
        &["system:masters"],
    ),
    client(
        "controller-manager",
        "controller-manager",
        "ca",
        "system:kube-controller-manager",
        &[],
    ),
    client("scheduler", "scheduler", "ca", "system:kube-scheduler", &[]),
    client(
        "kube-proxy",
        "kube-proxy",
        "ca",
        "system:kube-proxy",
        &["system:node-proxier"],
    ),
    Row {
        name: "kubelet-client-{node}",
        file: "nodes/{node}/kubelet-client",
        kind: Kind::Leaf,
        ca: Some("ca"),
        cn: "system:node:{node}",
        orgs: &["system:nodes"],
        usages: &[Usage::Client],
        sans: SanRule::None,
        scope: Scope::Worker,
    },
    Row {
        name: "kubelet-{node}",
        file: "nodes/{node}/kubelet",
        kind: Kind::Leaf,
        ca: Some("ca"),
        cn: "system:node:{node}",
        orgs: &["system:nodes"],
        usages: &[Usage::Server],
        sans: SanRule::Kubelet,
        scope: Scope::Worker,
    },
];

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
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

/// A row instantiated for a cluster (and a node): everything needed to issue or check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertSpec {
    /// The row's name with the node filled in.
    pub name: String,
    /// The file under `pki/` without extension.
    pub file: String,
    /// What it is.
    pub kind: Kind,
    /// The signing CA's name.
    pub ca: Option<String>,
    /// Common name.
    pub cn: String,
    /// Organizations.
    pub orgs: Vec<String>,
    /// Extended key usages.
    pub usages: Vec<Usage>,
    /// Subject alternative names, sorted.
    pub sans: Vec<San>,
}

impl CertSpec {
    /// The certificate's path relative to `pki/` (`sa.pub` for the key pair).
    pub fn cert_file(&self) -> String {
        match self.kind {
            Kind::KeyPair => format!("{}.pub", self.file),
            _ => format!("{}.crt", self.file),
        }
    }

    /// The private key's path relative to `pki/`.
    pub fn key_file(&self) -> String {
        format!("{}.key", self.file)
    }
}

fn sans(rule: SanRule, spec: &ClusterSpec, node: Option<&super::spec::Node>) -> Vec<San> {
    let localhost = || {
        vec![
            San::Dns("localhost".into()),
            San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]
    };
    let mut out = match (rule, node) {
        (SanRule::None, _) => Vec::new(),
        (SanRule::ApiServer, _) => {
            let mut v = vec![
                San::Dns("kubernetes".into()),
                San::Dns("kubernetes.default".into()),
                San::Dns("kubernetes.default.svc".into()),
                San::Dns(format!("kubernetes.default.svc.{}", spec.cluster_domain)),
                San::Ip(spec.first_service_ip()),
                San::Ip(spec.cluster_ip),
            ];
            for n in spec.control_planes() {
                v.push(San::Dns(n.name.clone()));
                v.push(San::Ip(n.ip));
            }
            v.extend(localhost());
            v
        }
        (SanRule::EtcdMember, Some(n)) => {
            let mut v = vec![San::Dns(n.name.clone()), San::Ip(n.ip)];
            v.extend(localhost());
            v
        }
        (SanRule::Kubelet, Some(n)) => vec![San::Dns(n.name.clone()), San::Ip(n.ip)],
        (SanRule::EtcdMember | SanRule::Kubelet, None) => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

/// Every certificate of `spec`, CAs first, per-node rows in node order.
pub fn expand(spec: &ClusterSpec) -> Vec<CertSpec> {
    let mut out = Vec::new();
    for row in TABLE {
        let nodes: Vec<Option<&super::spec::Node>> = match row.scope {
            Scope::Cluster => vec![None],
            Scope::ControlPlane => spec.control_planes().map(Some).collect(),
            Scope::Worker => spec.workers().map(Some).collect(),
        };
        for node in nodes {
            let fill = |s: &str| match node {
                Some(n) => s.replace("{node}", &n.name),
                None => s.to_string(),
            };
            out.push(CertSpec {
                name: fill(row.name),
                file: fill(row.file),
                kind: row.kind,
                ca: row.ca.map(str::to_string),
                cn: fill(row.cn),
                orgs: row.orgs.iter().map(|o| o.to_string()).collect(),
                usages: row.usages.to_vec(),
                sans: sans(row.sans, spec, node),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::r#gen::spec::SpecInput;

    #[test]
    fn cas_come_before_their_leaves_and_every_ca_reference_resolves() {
        for (i, row) in TABLE.iter().enumerate() {
            match row.kind {
                Kind::Leaf => {
                    let ca = row.ca.expect("a leaf names its CA");
                    let pos = TABLE
                        .iter()
                        .position(|r| r.name == ca && r.kind == Kind::Ca)
                        .unwrap_or_else(|| panic!("{}: unknown CA {ca}", row.name));
                    assert!(pos < i, "{} comes before its CA {ca}", row.name);
                }
                Kind::Ca | Kind::KeyPair => assert!(row.ca.is_none(), "{}", row.name),
            }
        }
    }

    #[test]
    fn names_and_files_are_unique_for_a_multi_node_cluster() {
        let mut input = SpecInput::default();
        input
            .add_nodes(
                &["cp1=10.0.0.1".into(), "cp2=10.0.0.2".into()],
                &["w1=10.0.0.3".into(), "cp1=10.0.0.1".into()],
            )
            .unwrap();
        let spec = input.build().unwrap();
        let certs = expand(&spec);
        let mut names: Vec<_> = certs.iter().map(|c| &c.name).collect();
        let mut files: Vec<_> = certs.iter().map(|c| &c.file).collect();
        let n = certs.len();
        names.sort();
        names.dedup();
        files.sort();
        files.dedup();
        assert_eq!((names.len(), files.len()), (n, n));
        // 3 CAs, 11 cluster leaves + sa, 2 per control plane, 2 per worker.
        assert_eq!(n, 3 + 11 + 2 * 2 + 2 * 2);
        let api = certs.iter().find(|c| c.name == "apiserver").unwrap();
        for want in [
            "DNS:cp2",
            "IP:10.0.0.2",
            "IP:10.32.0.1",
            "DNS:kubernetes.default.svc.cluster.local",
        ] {
            assert!(api.sans.iter().any(|s| s.to_string() == want), "{want}");
        }
    }
}
