//! The cluster spec: what `kbin gen` generates for, from flags or `--config cluster.toml`,
//! validated before anything is written.
//!
//! [`SpecInput`] is the raw, optional form (a TOML file's fields, the same names as the flags);
//! flags are layered over the file with [`SpecInput::overlay`], then [`SpecInput::build`] applies
//! the defaults and checks every rule. Each [`SpecError`] names the offending value and the rule.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::r#gen::plan::host::HostProfile;

/// The default service network.
pub const DEFAULT_SERVICE_CIDR: &str = "10.32.0.0/24";
/// The default pod network.
pub const DEFAULT_POD_CIDR: &str = "10.200.0.0/16";
/// The default cluster DNS domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The default cluster name (kubeconfigs' cluster entry).
pub const DEFAULT_NAME: &str = "kubernetes";
/// The name of the single node made when no node is given.
pub const DEFAULT_NODE_NAME: &str = "node-0";
/// Seconds in a day.
const DAY: u64 = 86_400;
/// kubeadm's CA validity: 10 years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(3650 * DAY);
/// kubeadm's leaf validity: 1 year.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(365 * DAY);

/// The API server address a kubeconfig names ([`ClusterSpec::server_for`]; a column of the cert table). With one control
/// plane every kubeconfig names the cluster endpoint; with several, what runs on the nodes must
/// survive losing any one of them (kubespray's design): node components go through the
/// node-local load balancer in front of every API server, control-plane components talk to the
/// API server on their own machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The cluster endpoint (`--cluster-ip`): what an operator uses, from anywhere.
    Endpoint,
    /// The API server on the same machine (the controller manager, the scheduler).
    LocalApiserver,
    /// The node-local load balancer (the kubelet, kube-proxy); the cluster endpoint when the
    /// operator gave `--api-endpoint`.
    NodeLocalLb,
}

/// `--api-endpoint HOST[:PORT]`: the operator's own load balancer (or DNS name) in front of every
/// API server, kubeadm's `--control-plane-endpoint`. The nodes and the operator reach the API
/// through it; kbin then makes no node-local load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiEndpoint {
    /// An IPv4 address or a DNS name.
    pub host: EndpointHost,
    /// The port it listens on (6443 when not given).
    pub port: u16,
}

/// The host part of an [`ApiEndpoint`]: it becomes a SAN of the API server's certificate, of the
/// kind it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EndpointHost {
    /// An address.
    Ip(IpAddr),
    /// A DNS name.
    Dns(String),
}

impl fmt::Display for EndpointHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointHost::Ip(ip) => ip.fmt(f),
            EndpointHost::Dns(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for ApiEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl ApiEndpoint {
    /// Parse `HOST` or `HOST:PORT` (IPv4 or a DNS name; the port defaults to 6443).
    pub fn parse(value: &str) -> Result<ApiEndpoint, SpecError> {
        let bad = || SpecError::ApiEndpoint(value.to_string());
        let (host, port) = match value.trim().rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            ),
            None => (value.trim(), 6443),
        };
        let host = if let Ok(ip) = host.parse::<IpAddr>() {
            if ip.is_unspecified() {
                return Err(bad());
            }
            EndpointHost::Ip(ip)
        } else if host.contains(':') || host.starts_with('[') {
            return Err(SpecError::Ipv6 {
                field: "--api-endpoint",
                value: value.to_string(),
            });
        } else if host.len() <= 253
            && host.split('.').all(is_dns_label)
            && !host
                .split('.')
                .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            EndpointHost::Dns(host.to_string())
        } else {
            return Err(bad());
        };
        Ok(ApiEndpoint { host, port })
    }

    /// `https://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("https://{self}")
    }
}

/// The port of the node-local load balancer in front of every API server (kube-apiserver keeps
/// 6443 on control planes that are also workers).
pub const API_LB_PORT: u16 = 6444;

/// A validated cluster spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSpec {
    /// `--name`: the cluster's name in kubeconfigs.
    pub name: String,
    /// `--cluster-ip`: the API endpoint clients and nodes use.
    pub cluster_ip: IpAddr,
    /// `--service-cidr`.
    pub service_cidr: IpNet,
    /// `--cluster-dns`: inside `service_cidr`.
    pub cluster_dns: IpAddr,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--pod-cidr`: disjoint from `service_cidr`.
    pub pod_cidr: IpNet,
    /// Control planes first, then workers, in the order given.
    pub nodes: Vec<Node>,
    /// `--key-algo`.
    pub key_algo: KeyAlgo,
    /// `--ca-validity`.
    #[serde(with = "duration_text")]
    pub ca_validity: Duration,
    /// `--cert-validity`.
    #[serde(with = "duration_text")]
    pub cert_validity: Duration,
    /// `--host-profile`: what kind of machine the nodes are.
    pub host_profile: HostProfile,
    /// `--resolv-conf`: the resolv.conf the kubelets give pods (the host's own when `None`).
    pub resolv_conf: Option<String>,
    /// `--api-endpoint`: the operator's load balancer in front of the API servers.
    pub api_endpoint: Option<ApiEndpoint>,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// A DNS label, unique in the cluster.
    pub name: String,
    /// Unique in the cluster.
    pub ip: IpAddr,
    /// Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler.
    pub control_plane: bool,
    /// Runs workloads (kubelet, kube-proxy, containerd).
    pub worker: bool,
    /// This node's slice of the pod CIDR (a /24, in node order): its CNI host-local range and
    /// the `spec.podCIDR` kbin gives its Node object.
    pub pod_subnet: IpNet,
    /// A control plane added to a cluster whose etcd already runs: its etcd member joins
    /// (`--initial-cluster-state=existing`, after `etcdctl member add`).
    pub joins_etcd: bool,
}

impl ClusterSpec {
    /// The control-plane nodes, in order.
    pub fn control_planes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.control_plane)
    }

    /// The nodes that run workloads (kubelet, kube-proxy, containerd), in order.
    pub fn workers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.worker)
    }

    /// `https://<cluster_ip>:6443`.
    /// The API server URL a kubeconfig of `reach` names: the cluster endpoint with one control
    /// plane; with several, the node-local load balancer (127.0.0.1:6444) for node components
    /// and the local API server (127.0.0.1:6443) for the control plane's.
    pub fn server_for(&self, reach: Reach) -> String {
        match reach {
            Reach::NodeLocalLb if self.node_local_lb() => {
                format!("https://127.0.0.1:{API_LB_PORT}")
            }
            // Behind an operator's load balancer too, as kubeadm does: the control plane's own
            // components do not depend on it.
            Reach::LocalApiserver if self.control_planes().count() > 1 => {
                "https://127.0.0.1:6443".into()
            }
            _ => self.api_server_url(),
        }
    }

    /// Whether the nodes reach the API servers through a node-local load balancer: when there
    /// is more than one control plane and the operator gave no `--api-endpoint` of their own.
    pub fn node_local_lb(&self) -> bool {
        self.api_endpoint.is_none() && self.control_planes().count() > 1
    }

    /// The cluster endpoint's URL: `--api-endpoint` when given, else `--cluster-ip` port 6443.
    pub fn api_server_url(&self) -> String {
        if let Some(e) = &self.api_endpoint {
            return e.url();
        }
        match self.cluster_ip {
            IpAddr::V4(ip) => format!("https://{ip}:6443"),
            IpAddr::V6(ip) => format!("https://[{ip}]:6443"),
        }
    }

    /// The first address of the service network: the `kubernetes` service's ClusterIP.
    pub fn first_service_ip(&self) -> IpAddr {
        nth_address(&self.service_cidr, 1).expect("validated: the service CIDR holds address 1")
    }

    /// The input that builds this spec again (what `kbin gen` saves as `<out>/cluster.toml`).
    pub fn to_input(&self) -> SpecInput {
        SpecInput {
            name: Some(self.name.clone()),
            cluster_ip: Some(self.cluster_ip.to_string()),
            service_cidr: Some(self.service_cidr.to_string()),
            cluster_dns: Some(self.cluster_dns.to_string()),
            cluster_domain: Some(self.cluster_domain.clone()),
            pod_cidr: Some(self.pod_cidr.to_string()),
            key_algo: Some(self.key_algo.to_string()),
            ca_validity: Some(format_duration(self.ca_validity)),
            cert_validity: Some(format_duration(self.cert_validity)),
            host_profile: Some(self.host_profile.to_string()),
            resolv_conf: self.resolv_conf.clone(),
            api_endpoint: self.api_endpoint.as_ref().map(|e| e.to_string()),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeInput {
                    name: n.name.clone(),
                    ip: n.ip.to_string(),
                    control_plane: n.control_plane,
                    worker: n.worker,
                    joins_etcd: n.joins_etcd,
                    pod_subnet: Some(n.pod_subnet.to_string()),
                })
                .collect(),
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// A key algorithm for every key of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeyAlgo {
    /// ECDSA on P-256 with SHA-256 (the default: fast and small).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 bits, PKCS#1 v1.5 with SHA-256 (kubeadm's default).
    Rsa2048,
    /// RSA 3072 bits.
    Rsa3072,
    /// RSA 4096 bits.
    Rsa4096,
}

impl KeyAlgo {
    /// Every algorithm with its name, the table `FromStr` and `Display` walk.
    pub const ALL: [(KeyAlgo, &'static str); 5] = [
        (KeyAlgo::EcdsaP256, "ecdsa-p256"),
        (KeyAlgo::EcdsaP384, "ecdsa-p384"),
        (KeyAlgo::Rsa2048, "rsa-2048"),
        (KeyAlgo::Rsa3072, "rsa-3072"),
        (KeyAlgo::Rsa4096, "rsa-4096"),
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(a, _)| *a == self)
            .map(|(_, n)| *n)
            .expect("every KeyAlgo is in ALL")
    }
}

impl fmt::Display for KeyAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgo {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(a, _)| *a)
            .ok_or_else(|| SpecError::KeyAlgo(s.to_string()))
    }
}

impl TryFrom<String> for KeyAlgo {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        s.parse()
    }
}

impl From<KeyAlgo> for String {
    fn from(a: KeyAlgo) -> String {
        a.name().to_string()
    }
}

/// Why a spec is invalid. Every variant names the value and the rule it breaks.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// An address that does not parse.
    #[error("{field} {value:?} is not an IP address")]
    Ip {
        /// The flag or field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A network that does not parse.
    #[error("{field} {value:?} is not a CIDR (like 10.32.0.0/24)")]
    Cidr {
        /// The flag or field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A network with host bits set (10.32.0.5/24).
    #[error("{field} {value} has host bits set: write its network address, {network}")]
    CidrHostBits {
        /// The flag or field.
        field: &'static str,
        /// The value given.
        value: String,
        /// The network it means.
        network: IpNet,
    },
    /// The DNS address outside the service network.
    #[error("cluster DNS address {dns} is not inside the service CIDR {service_cidr}")]
    DnsOutsideServices {
        /// The DNS address.
        dns: IpAddr,
        /// The service network.
        service_cidr: IpNet,
    },
    /// The DNS address taken by the `kubernetes` service or a network/broadcast address.
    #[error(
        "cluster DNS address {dns} is reserved in the service CIDR {service_cidr} (network, broadcast or the kubernetes service's {first})"
    )]
    DnsReserved {
        /// The DNS address.
        dns: IpAddr,
        /// The service network.
        service_cidr: IpNet,
        /// The first service address.
        first: IpAddr,
    },
    /// A service network too small for the default DNS address.
    #[error(
        "service CIDR {0} is too small: it needs room for the kubernetes service and cluster DNS (at least a /28)"
    )]
    ServiceCidrTooSmall(IpNet),
    /// Overlapping pod and service networks.
    #[error("pod CIDR {pod} and service CIDR {service} overlap: they must be disjoint")]
    CidrOverlap {
        /// The pod network.
        pod: IpNet,
        /// The service network.
        service: IpNet,
    },
    /// A node whose address lies inside the pod or the service network: its traffic would be
    /// routed to pods or captured by kube-proxy's service rules.
    #[error(
        "node {name}'s IP {ip} is inside the {network} CIDR {cidr}: node addresses must lie outside the pod and service networks"
    )]
    NodeInClusterNetwork {
        /// The node.
        name: String,
        /// Its address.
        ip: IpAddr,
        /// `pod` or `service`.
        network: &'static str,
        /// The network.
        cidr: IpNet,
    },
    /// An API endpoint inside the pod network: kubelets and pods would route it to a pod subnet.
    #[error(
        "--cluster-ip {ip} is inside the pod CIDR {pod}: the API server address must lie outside the pod network"
    )]
    ClusterIpInPodCidr {
        /// The API endpoint.
        ip: IpAddr,
        /// The pod network.
        pod: IpNet,
    },
    /// An API endpoint that is the cluster DNS service's address.
    #[error(
        "--cluster-ip {ip} is the cluster DNS address (--cluster-dns): the API server and CoreDNS cannot share an address"
    )]
    ClusterIpIsDns {
        /// The shared address.
        ip: IpAddr,
    },
    /// A pod network too small for one subnet per node.
    #[error(
        "pod CIDR {pod} holds {capacity} node subnets (/{prefix}), but there are {nodes} nodes"
    )]
    PodCidrTooSmall {
        /// The pod network.
        pod: IpNet,
        /// The per-node prefix length.
        prefix: u8,
        /// How many per-node subnets fit.
        capacity: u128,
        /// How many nodes there are.
        nodes: usize,
    },
    /// A node's kept pod subnet that is not one of the pod CIDR's /24s.
    #[error(
        "node {name}'s pod subnet {subnet} is not a /24 inside the pod CIDR {pod}: a running cluster's pod subnets cannot move (remove the node's pod_subnet from cluster.toml only for a cluster not deployed yet)"
    )]
    PodSubnet {
        /// The node.
        name: String,
        /// Its subnet, as given.
        subnet: String,
        /// The pod network.
        pod: IpNet,
    },
    /// Two nodes given one pod subnet.
    #[error(
        "pod subnet {subnet} is given to both {first:?} and {second:?}: each node needs its own"
    )]
    PodSubnetTwice {
        /// The subnet.
        subnet: IpNet,
        /// The first node.
        first: String,
        /// The second node.
        second: String,
    },
    /// A node name that is not a DNS label.
    #[error(
        "node name {0:?} is not a valid DNS label (1-63 characters: lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    NodeName(String),
    /// A node argument that is not NAME=IP.
    #[error("node {0:?} is not NAME=IP (like cp1=10.0.0.10)")]
    NodeSyntax(String),
    /// Two nodes with one name.
    #[error("node name {0:?} is used twice: node names must be unique")]
    DuplicateName(String),
    /// Two nodes with one address.
    #[error("node IP {ip} is used by both {first:?} and {second:?}: node IPs must be unique")]
    DuplicateIp {
        /// The address.
        ip: IpAddr,
        /// The first node.
        first: String,
        /// The second node.
        second: String,
    },
    /// Workers given but no control plane.
    #[error("there are worker nodes but no control-plane node")]
    NoControlPlane,
    /// A node that is neither control plane nor worker (from a file).
    #[error("node {0:?} is neither a control plane nor a worker")]
    NoRole(String),
    /// An unknown key algorithm.
    #[error(
        "key algorithm {0:?} is not one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096"
    )]
    KeyAlgo(String),
    /// A duration that does not parse.
    #[error(
        "{field} {value:?} is not a duration (a positive number followed by y, d, h, m or s: 10y, 365d, 12h)"
    )]
    Duration {
        /// The flag or field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// Leaves outliving their CA.
    #[error(
        "certificate validity {cert} is longer than the CA validity {ca}: a certificate cannot outlive its CA"
    )]
    ValidityOrder {
        /// The leaf validity.
        cert: String,
        /// The CA validity.
        ca: String,
    },
    /// A domain that is not a DNS name.
    #[error(
        "cluster domain {0:?} is not a DNS name (dot-separated DNS labels, like cluster.local)"
    )]
    Domain(String),
    /// A cluster name that is not a DNS label (it reaches flags and unit files).
    #[error(
        "cluster name {0:?} is not a valid DNS label (1-63 characters: lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    Name(String),
    /// An IPv6 address or network: the generated configs are IPv4-only.
    #[error(
        "{field} {value} is IPv6: kbin generates IPv4 clusters only (bridge CNI routes, forwarding sysctls and the pod subnets are IPv4); give an IPv4 address"
    )]
    Ipv6 {
        /// The flag or field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A node on a loopback (or unspecified) address.
    #[error(
        "node {name}'s IP {ip} is a loopback address: the kubelet refuses it (\"nodeIP can't be loopback address\") and kube-apiserver cannot advertise it to pods; give the machine's own address"
    )]
    LoopbackNode {
        /// The node.
        name: String,
        /// Its address.
        ip: IpAddr,
    },
    /// No nodes at all.
    #[error("the cluster has no nodes: give --control-plane NAME=IP (and --worker NAME=IP)")]
    NoNodes,
    /// An unknown host profile.
    #[error("{0}")]
    HostProfile(String),
    /// An `--api-endpoint` that is not HOST or HOST:PORT.
    #[error(
        "--api-endpoint {0:?} is not HOST or HOST:PORT (an IPv4 address or a DNS name, and a port from 1 to 65535, like lb.example.internal:6443)"
    )]
    ApiEndpoint(String),
    /// An `--api-endpoint` address inside the pod or the service network.
    #[error(
        "--api-endpoint {ip} is inside the {network} CIDR {cidr}: the load balancer's address must lie outside the pod and service networks"
    )]
    ApiEndpointInClusterNetwork {
        /// Its address.
        ip: IpAddr,
        /// `pod` or `service`.
        network: &'static str,
        /// The network.
        cidr: IpNet,
    },
    /// A resolv.conf path that is not absolute or has spaces.
    #[error("resolv.conf path {0:?} must be an absolute path without spaces")]
    ResolvConf(String),
    /// The config file cannot be read.
    #[error("cannot read the cluster config {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file does not parse.
    #[error("{path} is not a valid cluster config: {message}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// A node as written in `cluster.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInput {
    /// The node's name (a DNS label).
    pub name: String,
    /// The node's address.
    pub ip: String,
    /// Runs the control plane.
    #[serde(default)]
    pub control_plane: bool,
    /// Runs workloads.
    #[serde(default)]
    pub worker: bool,
    /// A control plane added after etcd was bootstrapped: its member joins the running cluster.
    /// `kbin gen cluster` sets it when a re-run adds a control plane to a tree.
    #[serde(
        default,
        skip_serializing_if = "std::ops::Not::not",
        alias = "joins-etcd"
    )]
    pub joins_etcd: bool,
    /// Its slice of the pod CIDR, once given: kept from run to run, so that a node leaving does
    /// not move the others' pods to new subnets (a Node's `spec.podCIDR` cannot change).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "pod-subnet")]
    pub pod_subnet: Option<String>,
}

/// The raw spec: every field optional, strings as given. `cluster.toml` has these fields (with
/// `-` or `_` in names), and the flags fill the same struct.
///
/// ```toml
/// name = "hard-way"
/// cluster_ip = "10.0.0.10"
/// key_algo = "rsa-2048"
/// [[nodes]]
/// name = "cp1"
/// ip = "10.0.0.10"
/// control_plane = true
/// [[nodes]]
/// name = "w1"
/// ip = "10.0.0.21"
/// worker = true
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecInput {
    /// `--name`.
    pub name: Option<String>,
    /// `--cluster-ip`.
    #[serde(alias = "cluster-ip")]
    pub cluster_ip: Option<String>,
    /// `--service-cidr`.
    #[serde(alias = "service-cidr")]
    pub service_cidr: Option<String>,
    /// `--cluster-dns`.
    #[serde(alias = "cluster-dns")]
    pub cluster_dns: Option<String>,
    /// `--cluster-domain`.
    #[serde(alias = "cluster-domain")]
    pub cluster_domain: Option<String>,
    /// `--pod-cidr`.
    #[serde(alias = "pod-cidr")]
    pub pod_cidr: Option<String>,
    /// `--key-algo`.
    #[serde(alias = "key-algo")]
    pub key_algo: Option<String>,
    /// `--ca-validity`.
    #[serde(alias = "ca-validity")]
    pub ca_validity: Option<String>,
    /// `--cert-validity`.
    #[serde(alias = "cert-validity")]
    pub cert_validity: Option<String>,
    /// `--host-profile`: `systemd` or `sandbox`.
    #[serde(alias = "host-profile")]
    pub host_profile: Option<String>,
    /// `--resolv-conf`.
    #[serde(alias = "resolv-conf")]
    pub resolv_conf: Option<String>,
    /// `--api-endpoint`.
    #[serde(alias = "api-endpoint", skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// `--control-plane NAME=IP` and `--worker NAME=IP`, or `[[nodes]]` tables.
    #[serde(default)]
    pub nodes: Vec<NodeInput>,
}

impl SpecInput {
    /// Read `cluster.toml`.
    pub fn load(path: &Path) -> Result<SpecInput, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SpecError::ParseConfig {
            path: path.to_owned(),
            message: e.message().to_string(),
        })
    }

    /// Add nodes from `--control-plane` / `--worker` arguments (`NAME=IP`). The same `NAME=IP`
    /// in both lists is one node with both roles.
    pub fn add_nodes(
        &mut self,
        control_planes: &[String],
        workers: &[String],
    ) -> Result<(), SpecError> {
        for (args, cp) in [(control_planes, true), (workers, false)] {
            for arg in args {
                let (name, ip) = split_node(arg)?;
                if let Some(n) = self
                    .nodes
                    .iter_mut()
                    .find(|n| n.name == name && n.ip == ip && n.control_plane && !cp)
                {
                    n.worker = true;
                    continue;
                }
                self.nodes.push(NodeInput {
                    name: name.to_string(),
                    ip: ip.to_string(),
                    control_plane: cp,
                    worker: !cp,
                    joins_etcd: false,
                    pod_subnet: None,
                });
            }
        }
        Ok(())
    }

    /// `self` with every field `over` sets replaced; nodes given in `over` replace the file's.
    pub fn overlay(self, over: SpecInput) -> SpecInput {
        SpecInput {
            name: over.name.or(self.name),
            cluster_ip: over.cluster_ip.or(self.cluster_ip),
            service_cidr: over.service_cidr.or(self.service_cidr),
            cluster_dns: over.cluster_dns.or(self.cluster_dns),
            cluster_domain: over.cluster_domain.or(self.cluster_domain),
            pod_cidr: over.pod_cidr.or(self.pod_cidr),
            key_algo: over.key_algo.or(self.key_algo),
            ca_validity: over.ca_validity.or(self.ca_validity),
            cert_validity: over.cert_validity.or(self.cert_validity),
            host_profile: over.host_profile.or(self.host_profile),
            resolv_conf: over.resolv_conf.or(self.resolv_conf),
            api_endpoint: over.api_endpoint.or(self.api_endpoint),
            nodes: if over.nodes.is_empty() {
                self.nodes
            } else {
                over.nodes
            },
        }
    }

    /// Apply the defaults and check every rule.
    pub fn build(&self) -> Result<ClusterSpec, SpecError> {
        let name = self.name.clone().unwrap_or_else(|| DEFAULT_NAME.into());
        if !is_dns_label(&name) {
            return Err(SpecError::Name(name));
        }
        if self.nodes.is_empty() {
            return Err(SpecError::NoNodes);
        }
        let cluster_ip = match self.cluster_ip.as_deref() {
            Some(ip) => parse_ip("--cluster-ip", ip)?,
            // The API endpoint workers can reach: a control plane's address.
            None => match self.nodes.iter().find(|n| n.control_plane) {
                Some(cp) => parse_ip("node IP", &cp.ip)?,
                None => return Err(SpecError::NoControlPlane),
            },
        };
        let host_profile = match &self.host_profile {
            Some(p) => p.parse().map_err(SpecError::HostProfile)?,
            None => HostProfile::default(),
        };
        if let Some(p) = &self.resolv_conf
            && (!p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(SpecError::ResolvConf(p.clone()));
        }
        let service_cidr = parse_cidr(
            "--service-cidr",
            self.service_cidr.as_deref().unwrap_or(DEFAULT_SERVICE_CIDR),
        )?;
        let pod_cidr = parse_cidr(
            "--pod-cidr",
            self.pod_cidr.as_deref().unwrap_or(DEFAULT_POD_CIDR),
        )?;
        let first = nth_address(&service_cidr, 1);
        let cluster_dns = match &self.cluster_dns {
            Some(v) => parse_ip("--cluster-dns", v)?,
            None => nth_address(&service_cidr, 10)
                .filter(|ip| *ip != service_cidr.broadcast() || service_cidr.addr().is_ipv6())
                .ok_or(SpecError::ServiceCidrTooSmall(service_cidr))?,
        };
        let first = first.ok_or(SpecError::ServiceCidrTooSmall(service_cidr))?;
        if !service_cidr.contains(&cluster_dns) {
            return Err(SpecError::DnsOutsideServices {
                dns: cluster_dns,
                service_cidr,
            });
        }
        if cluster_dns == first
            || cluster_dns == service_cidr.network()
            || (cluster_dns.is_ipv4() && cluster_dns == service_cidr.broadcast())
        {
            return Err(SpecError::DnsReserved {
                dns: cluster_dns,
                service_cidr,
                first,
            });
        }
        if pod_cidr.contains(&service_cidr.network()) || service_cidr.contains(&pod_cidr.network())
        {
            return Err(SpecError::CidrOverlap {
                pod: pod_cidr,
                service: service_cidr,
            });
        }
        let cluster_domain = self
            .cluster_domain
            .clone()
            .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.into());
        if cluster_domain.len() > 253 || !cluster_domain.split('.').all(is_dns_label) {
            return Err(SpecError::Domain(cluster_domain));
        }
        let (key_algo, ca_validity, cert_validity) = self.keys_and_validities()?;
        let nodes = self.build_nodes(pod_cidr)?;
        check_addresses(cluster_ip, cluster_dns, pod_cidr, service_cidr, &nodes)?;
        let api_endpoint = api_endpoint(self.api_endpoint.as_deref(), pod_cidr, service_cidr)?;
        Ok(ClusterSpec {
            name,
            cluster_ip,
            service_cidr,
            cluster_dns,
            cluster_domain,
            pod_cidr,
            nodes,
            key_algo,
            ca_validity,
            cert_validity,
            host_profile,
            resolv_conf: self.resolv_conf.clone(),
            api_endpoint,
        })
    }

    /// `--key-algo`, `--ca-validity` and `--cert-validity` with their defaults, leaves never
    /// outliving their CA.
    fn keys_and_validities(&self) -> Result<(KeyAlgo, Duration, Duration), SpecError> {
        let key_algo = match &self.key_algo {
            Some(a) => a.parse()?,
            None => KeyAlgo::default(),
        };
        let ca_validity = match &self.ca_validity {
            Some(v) => parse_duration("--ca-validity", v)?,
            None => DEFAULT_CA_VALIDITY,
        };
        let cert_validity = match &self.cert_validity {
            Some(v) => parse_duration("--cert-validity", v)?,
            None => DEFAULT_CERT_VALIDITY,
        };
        if cert_validity > ca_validity {
            return Err(SpecError::ValidityOrder {
                cert: format_duration(cert_validity),
                ca: format_duration(ca_validity),
            });
        }
        Ok((key_algo, ca_validity, cert_validity))
    }

    /// A one-machine cluster: node `node-0` at `ip`, control plane and worker.
    pub fn add_this_machine(&mut self, ip: IpAddr) {
        self.nodes.push(NodeInput {
            name: DEFAULT_NODE_NAME.into(),
            ip: ip.to_string(),
            control_plane: true,
            worker: true,
            joins_etcd: false,
            pod_subnet: None,
        });
    }

    fn build_nodes(&self, pod_cidr: IpNet) -> Result<Vec<Node>, SpecError> {
        let inputs = &self.nodes;
        let mut parsed = Vec::with_capacity(inputs.len());
        let mut names = BTreeMap::new();
        let mut ips: BTreeMap<IpAddr, String> = BTreeMap::new();
        for n in inputs {
            if !is_dns_label(&n.name) {
                return Err(SpecError::NodeName(n.name.clone()));
            }
            if !n.control_plane && !n.worker {
                return Err(SpecError::NoRole(n.name.clone()));
            }
            let ip = parse_ip("node IP", &n.ip).map_err(|e| match e {
                SpecError::Ipv6 { field, value } => SpecError::Ipv6 {
                    field,
                    value: format!("{value} (node {})", n.name),
                },
                e => e,
            })?;
            if ip.is_loopback() || ip.is_unspecified() {
                return Err(SpecError::LoopbackNode {
                    name: n.name.clone(),
                    ip,
                });
            }
            if names.insert(n.name.clone(), ()).is_some() {
                return Err(SpecError::DuplicateName(n.name.clone()));
            }
            if let Some(first) = ips.insert(ip, n.name.clone()) {
                return Err(SpecError::DuplicateIp {
                    ip,
                    first,
                    second: n.name.clone(),
                });
            }
            parsed.push((n, ip));
        }
        if !parsed.iter().any(|(n, _)| n.control_plane) {
            return Err(SpecError::NoControlPlane);
        }
        // Control planes first, each group in the order given.
        parsed.sort_by_key(|(n, _)| !n.control_plane);
        let prefix: u8 = 24;
        let capacity = if pod_cidr.prefix_len() > prefix {
            0
        } else {
            1u128 << (prefix - pod_cidr.prefix_len()).min(127)
        };
        if (parsed.len() as u128) > capacity {
            return Err(SpecError::PodCidrTooSmall {
                pod: pod_cidr,
                prefix,
                capacity,
                nodes: parsed.len(),
            });
        }
        let inputs: Vec<&NodeInput> = parsed.iter().map(|(n, _)| *n).collect();
        let subnets = pod_subnets(&inputs, pod_cidr, prefix)?;
        Ok(parsed
            .into_iter()
            .zip(subnets)
            .map(|((n, ip), pod_subnet)| Node {
                name: n.name.clone(),
                ip,
                control_plane: n.control_plane,
                worker: n.worker,
                pod_subnet,
                joins_etcd: n.joins_etcd && n.control_plane,
            })
            .collect())
    }
}

/// `--api-endpoint` parsed, its address outside the cluster's networks; `none` (how a re-run
/// drops the endpoint `cluster.toml` keeps) is no endpoint.
fn api_endpoint(
    given: Option<&str>,
    pod: IpNet,
    service: IpNet,
) -> Result<Option<ApiEndpoint>, SpecError> {
    let endpoint = match given {
        Some("none") | None => return Ok(None),
        Some(e) => ApiEndpoint::parse(e)?,
    };
    if let EndpointHost::Ip(ip) = endpoint.host {
        for (network, cidr) in [("pod", pod), ("service", service)] {
            if cidr.contains(&ip) {
                return Err(SpecError::ApiEndpointInClusterNetwork { ip, network, cidr });
            }
        }
    }
    Ok(Some(endpoint))
}

/// Each node's pod subnet, in node order: the one it already has (checked: a /`prefix` of
/// `pod`, not given twice), else the first one free.
fn pod_subnets(nodes: &[&NodeInput], pod: IpNet, prefix: u8) -> Result<Vec<IpNet>, SpecError> {
    let mut taken: BTreeMap<IpNet, String> = BTreeMap::new();
    let mut kept = Vec::with_capacity(nodes.len());
    for n in nodes {
        let Some(text) = &n.pod_subnet else {
            kept.push(None);
            continue;
        };
        let sub = parse_cidr("pod subnet", text)?;
        if sub.prefix_len() != prefix || !pod.contains(&sub) {
            return Err(SpecError::PodSubnet {
                name: n.name.clone(),
                subnet: text.clone(),
                pod,
            });
        }
        if let Some(first) = taken.insert(sub, n.name.clone()) {
            return Err(SpecError::PodSubnetTwice {
                subnet: sub,
                first,
                second: n.name.clone(),
            });
        }
        kept.push(Some(sub));
    }
    let mut free = pod
        .subnets(prefix)
        .expect("checked: the node prefix is not shorter than the pod CIDR's")
        .filter(|s| !taken.contains_key(s));
    Ok(kept
        .into_iter()
        .map(|k| k.unwrap_or_else(|| free.next().expect("checked: enough subnets for every node")))
        .collect())
}

/// Split `NAME=IP` (the IP is checked later, with the other rules).
pub fn split_node(arg: &str) -> Result<(&str, &str), SpecError> {
    match arg.split_once('=') {
        Some((name, ip)) if !name.is_empty() && !ip.is_empty() => Ok((name, ip)),
        _ => Err(SpecError::NodeSyntax(arg.to_string())),
    }
}

/// The addresses the cluster's networks must not swallow: no node inside the pod or service
/// network, no API endpoint inside the pod network or on the DNS service's address.
fn check_addresses(
    cluster_ip: IpAddr,
    cluster_dns: IpAddr,
    pod: IpNet,
    service: IpNet,
    nodes: &[Node],
) -> Result<(), SpecError> {
    for n in nodes {
        for (network, cidr) in [("pod", pod), ("service", service)] {
            if cidr.contains(&n.ip) {
                return Err(SpecError::NodeInClusterNetwork {
                    name: n.name.clone(),
                    ip: n.ip,
                    network,
                    cidr,
                });
            }
        }
    }
    if pod.contains(&cluster_ip) {
        return Err(SpecError::ClusterIpInPodCidr {
            ip: cluster_ip,
            pod,
        });
    }
    if cluster_ip == cluster_dns {
        return Err(SpecError::ClusterIpIsDns { ip: cluster_ip });
    }
    Ok(())
}

/// RFC 1123 label: what Kubernetes accepts as a node name component.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn parse_ip(field: &'static str, value: &str) -> Result<IpAddr, SpecError> {
    let ip: IpAddr = value.trim().parse().map_err(|_| SpecError::Ip {
        field,
        value: value.to_string(),
    })?;
    if ip.is_ipv6() {
        return Err(SpecError::Ipv6 {
            field,
            value: value.to_string(),
        });
    }
    Ok(ip)
}

fn parse_cidr(field: &'static str, value: &str) -> Result<IpNet, SpecError> {
    let net: IpNet = value.trim().parse().map_err(|_| SpecError::Cidr {
        field,
        value: value.to_string(),
    })?;
    if net.addr().is_ipv6() {
        return Err(SpecError::Ipv6 {
            field,
            value: value.to_string(),
        });
    }
    if net.trunc() != net {
        return Err(SpecError::CidrHostBits {
            field,
            value: value.to_string(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// The `n`th address of `net` (0 is the network address), if it lies inside it.
pub fn nth_address(net: &IpNet, n: u32) -> Option<IpAddr> {
    let ip = match net.network() {
        IpAddr::V4(a) => IpAddr::V4(u32::from(a).checked_add(n)?.into()),
        IpAddr::V6(a) => IpAddr::V6(u128::from(a).checked_add(n.into())?.into()),
    };
    net.contains(&ip).then_some(ip)
}

/// Parse `10y`, `365d`, `12h`, `30m`, `90s` (a year is 365 days).
pub fn parse_duration(field: &'static str, value: &str) -> Result<Duration, SpecError> {
    let err = || SpecError::Duration {
        field,
        value: value.to_string(),
    };
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let unit_secs = match unit {
        "y" => 365 * DAY,
        "d" => DAY,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(err()),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|s| *s > 0)
        .ok_or_else(err)?;
    // x509 times end in 9999; anything beyond a millennium is a typo.
    if secs > 1000 * 365 * DAY {
        return Err(err());
    }
    Ok(Duration::from_secs(secs))
}

/// The shortest exact form of a duration (`10y`, `400d`, `90s`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, secs) in [("y", 365 * DAY), ("d", DAY), ("h", 3600), ("m", 60)] {
        if s >= secs && s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

mod duration_text {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-machine spec at 10.0.0.5 with `f` applied.
    fn input(f: impl FnOnce(&mut SpecInput)) -> Result<ClusterSpec, SpecError> {
        let mut i = SpecInput::default();
        i.add_this_machine("10.0.0.5".parse().unwrap());
        f(&mut i);
        i.build()
    }

    #[test]
    fn defaults_give_one_node_that_is_control_plane_and_worker() {
        let s = input(|_| {}).unwrap();
        assert_eq!(s.nodes.len(), 1);
        let n = &s.nodes[0];
        assert!(n.control_plane && n.worker);
        assert_eq!(n.ip.to_string(), "10.0.0.5");
        assert_eq!(s.cluster_dns.to_string(), "10.32.0.10");
        assert_eq!(s.first_service_ip().to_string(), "10.32.0.1");
        assert_eq!(s.api_server_url(), "https://10.0.0.5:6443");
        assert_eq!(n.pod_subnet.to_string(), "10.200.0.0/24");
        assert_eq!(s.host_profile, HostProfile::Systemd);
        assert!(matches!(
            SpecInput::default().build(),
            Err(SpecError::NoNodes)
        ));
    }

    #[test]
    fn ipv6_loopback_nodes_and_non_label_names_are_refused_before_anything_is_written() {
        type Case = (Box<dyn FnOnce(&mut SpecInput)>, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|i| i.cluster_ip = Some("fd00::1".into())), "IPv6"),
            (
                Box::new(|i| i.pod_cidr = Some("fd00:200::/56".into())),
                "IPv6",
            ),
            (
                Box::new(|i| i.service_cidr = Some("fd00:32::/112".into())),
                "IPv6",
            ),
            (
                Box::new(|i| i.add_nodes(&[], &["w6=fd00::7".into()]).unwrap()),
                "w6",
            ),
            (
                Box::new(|i| i.add_nodes(&[], &["w1=127.0.0.1".into()]).unwrap()),
                "loopback",
            ),
            (
                Box::new(|i| i.add_nodes(&[], &["w1=0.0.0.0".into()]).unwrap()),
                "loopback",
            ),
            (
                Box::new(|i| i.name = Some("my cluster".into())),
                "DNS label",
            ),
            (Box::new(|i| i.name = Some("50%off".into())), "DNS label"),
            (
                Box::new(|i| i.host_profile = Some("docker".into())),
                "docker",
            ),
            (
                Box::new(|i| i.resolv_conf = Some("resolv.conf".into())),
                "absolute",
            ),
        ];
        for (f, want) in cases {
            let e = input(f).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        // A loopback API endpoint for clients on this machine stays allowed.
        let s = input(|i| i.cluster_ip = Some("127.0.0.1".into())).unwrap();
        assert_eq!(s.nodes[0].ip.to_string(), "10.0.0.5");
    }

    #[test]
    fn control_planes_come_first_and_subnets_follow_node_order() {
        let mut i = SpecInput::default();
        i.add_nodes(
            &["cp1=10.0.0.1".into(), "cp2=10.0.0.2".into()],
            &["w1=10.0.0.3".into(), "cp1=10.0.0.1".into()],
        )
        .unwrap();
        let s = i.build().unwrap();
        let names: Vec<_> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["cp1", "cp2", "w1"]);
        assert!(s.nodes[0].worker, "cp1 given as worker too");
        assert_eq!(s.workers().count(), 2);
        assert_eq!(s.nodes[2].pod_subnet.to_string(), "10.200.2.0/24");
        // Workers on other machines reach the API at a control plane, not at loopback.
        assert_eq!(s.api_server_url(), "https://10.0.0.1:6443");
        i.cluster_ip = Some("10.0.0.100".into());
        assert_eq!(
            i.build().unwrap().api_server_url(),
            "https://10.0.0.100:6443"
        );
    }

    #[test]
    fn each_rule_names_its_value() {
        type Case = (Box<dyn FnOnce(&mut SpecInput)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                Box::new(|i| i.cluster_ip = Some("10.0.0.300".into())),
                "10.0.0.300",
            ),
            (
                Box::new(|i| i.pod_cidr = Some("10.200.0.0/33".into())),
                "10.200.0.0/33",
            ),
            (
                Box::new(|i| i.cluster_dns = Some("10.99.0.10".into())),
                "not inside",
            ),
            (
                Box::new(|i| i.pod_cidr = Some("10.32.0.0/16".into())),
                "overlap",
            ),
            (Box::new(|i| i.key_algo = Some("dsa".into())), "\"dsa\""),
            (Box::new(|i| i.ca_validity = Some("ten".into())), "\"ten\""),
            (
                Box::new(|i| i.cert_validity = Some("11y".into())),
                "longer than the CA",
            ),
            (
                Box::new(|i| i.cluster_domain = Some("Bad_Domain".into())),
                "Bad_Domain",
            ),
            (
                Box::new(|i| i.service_cidr = Some("10.32.0.5/24".into())),
                "host bits",
            ),
            (
                Box::new(|i| i.add_nodes(&["Node_1=10.0.0.1".into()], &[]).unwrap()),
                "\"Node_1\"",
            ),
            (
                Box::new(|i| {
                    i.add_nodes(&["a=10.0.0.1".into()], &["a=10.0.0.2".into()])
                        .unwrap()
                }),
                "used twice",
            ),
            (
                Box::new(|i| {
                    i.add_nodes(&["a=10.0.0.1".into()], &["b=10.0.0.1".into()])
                        .unwrap()
                }),
                "10.0.0.1 is used by both",
            ),
            (
                Box::new(|i| {
                    i.nodes.clear();
                    i.add_nodes(&[], &["b=10.0.0.1".into()]).unwrap()
                }),
                "no control-plane",
            ),
            (
                Box::new(|i| i.add_nodes(&[], &["w=10.200.3.4".into()]).unwrap()),
                "node w's IP 10.200.3.4 is inside the pod CIDR 10.200.0.0/16",
            ),
            (
                Box::new(|i| i.add_nodes(&[], &["w=10.32.0.200".into()]).unwrap()),
                "node w's IP 10.32.0.200 is inside the service CIDR 10.32.0.0/24",
            ),
            (
                Box::new(|i| i.cluster_ip = Some("10.200.9.9".into())),
                "--cluster-ip 10.200.9.9 is inside the pod CIDR",
            ),
            (
                Box::new(|i| i.cluster_ip = Some("10.32.0.10".into())),
                "--cluster-ip 10.32.0.10 is the cluster DNS address",
            ),
        ];
        for (f, want) in cases {
            let e = input(f).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        assert!(matches!(
            SpecInput::default().add_nodes(&["cp1".into()], &[]),
            Err(SpecError::NodeSyntax(_))
        ));
    }

    #[test]
    fn pod_cidr_must_hold_a_subnet_per_node() {
        let mut i = SpecInput {
            pod_cidr: Some("10.200.0.0/23".into()),
            ..Default::default()
        };
        let nodes: Vec<String> = (0..3).map(|k| format!("n{k}=10.0.0.{k}")).collect();
        i.add_nodes(&nodes, &[]).unwrap();
        assert!(matches!(i.build(), Err(SpecError::PodCidrTooSmall { .. })));
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("x", "10y").unwrap(), DEFAULT_CA_VALIDITY);
        assert_eq!(
            format_duration(parse_duration("x", "400d").unwrap()),
            "400d"
        );
        assert!(parse_duration("x", "0d").is_err());
        assert!(parse_duration("x", "5w").is_err());
        assert!(parse_duration("x", "d").is_err());
    }

    #[test]
    fn config_file_fields_match_the_flags() {
        let text = r#"
name = "hw"
cluster-ip = "10.0.0.10"
key_algo = "rsa-2048"
[[nodes]]
name = "cp1"
ip = "10.0.0.10"
control_plane = true
[[nodes]]
name = "w1"
ip = "10.0.0.21"
worker = true
"#;
        let i: SpecInput = toml::from_str(text).unwrap();
        let s = i
            .overlay(SpecInput {
                name: Some("flag".into()),
                ..Default::default()
            })
            .build()
            .unwrap();
        assert_eq!(s.name, "flag");
        assert_eq!(s.key_algo, KeyAlgo::Rsa2048);
        assert_eq!(s.nodes.len(), 2);
        assert!(toml::from_str::<SpecInput>("nmae = \"x\"").is_err());
    }
}
