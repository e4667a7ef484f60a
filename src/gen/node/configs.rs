//! Component configs and systemd units for one node, from plain inputs, the versions and the
//! version table's [`Decisions`].
//!
//! YAML, TOML and JSON come from serde structs; the teaching comments are lines placed between
//! the serialized sections ([`yaml_doc`], [`decorate`]), never YAML or TOML written by hand.
//! Units come from [`Unit`], which escapes every value per systemd.syntax(7).
//!
//! Every path here is the path on the node (`/etc/kubernetes/pki/ca.crt`); [`crate::r#gen::deliver::bundle`]
//! places the files under `nodes/<name>/`. Renderers are pure: same inputs, same bytes.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::r#gen::pki::certs::{
    Id, on_node_cert, on_node_key, on_node_kubeconfig, on_node_signer_cert,
};
use crate::r#gen::plan::host::{CgroupDriver, HostProfile};
use crate::r#gen::plan::spec::ApiEndpoint;
use crate::r#gen::plan::versions::{
    CgroupV1, CniBinDir, Decisions, Knob, NodePortAddresses, RuntimeEndpoint, Versions,
};

/// The cluster as the renderers need it (built from the validated cluster spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInput {
    /// The cluster's name (etcd's initial-cluster-token, controller-manager's --cluster-name).
    pub name: String,
    /// `https://<cluster-ip>:6443`.
    pub api_server_url: String,
    /// The service network (CIDR text).
    pub service_cidr: String,
    /// The cluster DNS service address.
    pub cluster_dns: IpAddr,
    /// The cluster DNS domain.
    pub cluster_domain: String,
    /// The pod network (CIDR text).
    pub pod_cidr: String,
    /// The kind of machine the nodes are.
    pub host_profile: HostProfile,
    /// The resolv.conf the kubelets give pods (`None`: the kubelet's default, /etc/resolv.conf).
    pub resolv_conf: Option<String>,
    /// Whether the workers reach the API servers through a node-local load balancer
    /// (`ClusterSpec::node_local_lb`, the rule the kubeconfigs follow).
    pub api_lb: bool,
    /// `--api-endpoint`: the operator's load balancer in front of the API servers.
    pub api_endpoint: Option<ApiEndpoint>,
    /// Control planes first, then workers.
    pub nodes: Vec<NodeInput>,
}

/// A node as the renderers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInput {
    /// Its name (a DNS label).
    pub name: String,
    /// Its address.
    pub ip: IpAddr,
    /// Runs etcd and the control plane.
    pub control_plane: bool,
    /// Runs containerd, kubelet and kube-proxy.
    pub worker: bool,
    /// Its slice of the pod network (CIDR text): the CNI host-local range and its Node's
    /// `spec.podCIDR`.
    pub pod_subnet: String,
    /// Its etcd member joins a running cluster (a control plane added later).
    pub joins_etcd: bool,
}

impl ClusterInput {
    /// The control-plane nodes, in order.
    pub fn control_planes(&self) -> impl Iterator<Item = &NodeInput> {
        self.nodes.iter().filter(|n| n.control_plane)
    }

    /// The nodes that run workloads, in order.
    pub fn workers(&self) -> impl Iterator<Item = &NodeInput> {
        self.nodes.iter().filter(|n| n.worker)
    }

    /// Whether the workers reach the API servers through a node-local load balancer.
    pub fn node_local_lb(&self) -> bool {
        self.api_lb
    }

    /// Whether there is more than one API server behind a load balancer (kbin's node-local one
    /// or the operator's `--api-endpoint`).
    pub fn several_control_planes(&self) -> bool {
        self.control_planes().count() > 1
    }

    /// The etcd members `node` starts with: for the first members, all of them; for a member
    /// that joins later, the members before it and itself (etcd adds one member at a time).
    pub fn initial_etcd_members(&self, node: &NodeInput) -> Vec<&NodeInput> {
        if node.joins_etcd {
            let mut members = Vec::new();
            for n in self.control_planes() {
                members.push(n);
                if n.name == node.name {
                    break;
                }
            }
            members
        } else {
            self.control_planes().filter(|n| !n.joins_etcd).collect()
        }
    }
}

/// Where things live on a node. One place, so units, configs and install.sh agree.
pub mod paths {
    /// Binaries.
    pub const BIN: &str = "/usr/local/bin";
    /// CNI plugins.
    pub const CNI_BIN: &str = "/opt/cni/bin";
    /// CNI configs.
    pub const CNI_CONF: &str = "/etc/cni/net.d";
    /// The containerd CRI socket.
    pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
    /// The EncryptionConfiguration on control-plane nodes.
    pub const ENCRYPTION_CONFIG: &str = "/etc/kubernetes/encryption-config.yaml";
    /// The kubelet's configuration.
    pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
    /// kube-proxy's configuration.
    pub const KUBE_PROXY_CONFIG: &str = "/var/lib/kube-proxy/config.yaml";
    /// kube-scheduler's configuration.
    pub const SCHEDULER_CONFIG: &str = "/etc/kubernetes/kube-scheduler.yaml";
    /// containerd's configuration.
    pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
    /// etcd's data directory.
    pub const ETCD_DATA: &str = "/var/lib/etcd";
    /// The CNI network configuration.
    pub const CNI_CONFLIST: &str = "/etc/cni/net.d/10-bridge.conflist";
    /// crictl's configuration.
    pub const CRICTL_CONFIG: &str = "/etc/crictl.yaml";
    /// Kernel modules loaded at boot.
    pub const MODULES_LOAD: &str = "/etc/modules-load.d/kubernetes.conf";
    /// Kernel settings applied at boot.
    pub const SYSCTL: &str = "/etc/sysctl.d/99-kubernetes.conf";
    /// Where systemd units go.
    pub const UNITS: &str = "/etc/systemd/system";
    /// Image archives for `ctr -n k8s.io images import` (the pause and CoreDNS images, for
    /// nodes without a registry).
    pub const IMAGES: &str = "/var/lib/kbin/images";

    /// The script `kbin-pod-network.service` runs (routes between pod subnets, masquerade).
    pub const POD_NETWORK: &str = "/usr/local/lib/kbin/pod-network";
    /// The unit that sets up pod traffic between nodes at every boot.
    pub const POD_NETWORK_UNIT: &str = "kbin-pod-network";
    /// The script that saves and checks one etcd snapshot (`etcd-backup.service`).
    pub const ETCD_BACKUP: &str = "/usr/local/lib/kbin/etcd-backup";
    /// The script that restores one member's data from a snapshot.
    pub const ETCD_RESTORE: &str = "/usr/local/lib/kbin/etcd-restore";
    /// Where an etcd member keeps its snapshots.
    pub const ETCD_BACKUPS: &str = "/var/backups/etcd";
    /// The node-local load balancer's config (HAProxy), on workers of a cluster with several
    /// control planes.
    pub const API_LB_CONFIG: &str = "/etc/kubernetes/apiserver-lb.cfg";
    /// Its unit.
    pub const API_LB_UNIT: &str = "kbin-apiserver-lb";
    /// HAProxy, from the distribution (`apt-get install haproxy`).
    pub const HAPROXY: &str = "/usr/sbin/haproxy";
    /// The backup timer's unit file.
    pub const ETCD_BACKUP_TIMER: &str = "/etc/systemd/system/etcd-backup.timer";

    /// The unit file of service `name`.
    pub fn unit(name: &str) -> String {
        format!("{UNITS}/{name}.service")
    }
}

fn ip_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("https://{ip}:{port}"),
        IpAddr::V6(ip) => format!("https://[{ip}]:{port}"),
    }
}

/// One command-line word of an `ExecStart=` line, escaped per systemd.syntax(7) and
/// systemd.service(5): `%` starts a specifier (`%%`), `$` a variable (`$$`), and a word with
/// spaces, quotes or backslashes is double-quoted with `\` escapes.
pub fn exec_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if !escaped.is_empty()
        && !escaped
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        return escaped;
    }
    let mut q = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A value of a non-command unit setting (`Description=`): specifiers escaped, one line.
fn setting_value(v: &str) -> String {
    v.replace('%', "%%").replace('\n', " ")
}

/// A systemd unit: header comment, description, dependencies and the command line as
/// `--flag=value` words, one per line so a learner can read each flag.
pub struct Unit<'a> {
    /// The unit's name without `.service`.
    pub name: &'a str,
    /// Comment lines at the top.
    pub teach: &'a str,
    /// `Documentation=`.
    pub doc: &'a str,
    /// `After=`.
    pub after: &'a [&'a str],
    /// `Requires=`.
    pub requires: &'a [&'a str],
    /// The binary under [`paths::BIN`].
    pub binary: &'a str,
    /// Its arguments, unescaped.
    pub args: Vec<String>,
    /// Extra `[Service]` settings (`Type=notify`), constant text.
    pub service_extra: &'a [&'a str],
}

impl Unit<'_> {
    /// The unit file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {}.service: generated by kbin.", self.name);
        for line in self.teach.lines() {
            let _ = writeln!(s, "# {line}");
        }
        let _ = writeln!(s, "[Unit]");
        let _ = writeln!(s, "Description={}", setting_value(self.name));
        let _ = writeln!(s, "Documentation={}", setting_value(self.doc));
        if !self.after.is_empty() {
            let _ = writeln!(s, "After={}", self.after.join(" "));
        }
        if !self.requires.is_empty() {
            let _ = writeln!(s, "Requires={}", self.requires.join(" "));
        }
        let _ = writeln!(s, "\n[Service]");
        let _ = write!(
            s,
            "ExecStart={}",
            exec_word(&format!("{}/{}", paths::BIN, self.binary))
        );
        for a in &self.args {
            let _ = write!(s, " \\\n  {}", exec_word(a));
        }
        let _ = writeln!(s);
        for line in self.service_extra {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "Restart=on-failure\nRestartSec=5");
        let _ = writeln!(s, "\n[Install]\nWantedBy=multi-user.target");
        s
    }
}

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// A YAML document from `value`, each top-level key preceded by its comment lines from
/// `comments` (key, text), under a `header` comment.
fn yaml_doc(header: &str, value: &impl Serialize, comments: &[(&str, &str)]) -> String {
    let value = serde_yaml_ng::to_value(value).expect("config structs always serialize");
    let serde_yaml_ng::Value::Mapping(map) = value else {
        unreachable!("config structs serialize to mappings")
    };
    let mut s = String::new();
    for line in header.lines() {
        let _ = writeln!(s, "# {line}");
    }
    for (k, v) in map {
        if let Some(key) = k.as_str()
            && let Some((_, text)) = comments.iter().find(|(c, _)| *c == key)
        {
            for line in text.lines() {
                let _ = writeln!(s, "# {line}");
            }
        }
        let mut one = serde_yaml_ng::Mapping::new();
        one.insert(k, v);
        s.push_str(&serde_yaml_ng::to_string(&one).expect("YAML values always serialize"));
    }
    s
}

/// `text` with comment lines inserted before the lines equal to each `(line, comment)`; every
/// line must be there (a renamed table without its comment is a bug the tests catch).
fn decorate(text: &str, comments: &[(String, &str)]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if let Some((_, c)) = comments.iter().find(|(l, _)| l == line) {
            for cl in c.lines() {
                let _ = writeln!(out, "# {cl}");
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    debug_assert!(
        comments.iter().all(|(l, _)| text.lines().any(|t| t == l)),
        "a comment's anchor is missing from:\n{text}"
    );
    out
}

/// `etcd.service` for control-plane node `node`.
pub fn etcd_unit(c: &ClusterInput, node: &NodeInput, d: &Decisions) -> String {
    let initial: Vec<String> = c
        .initial_etcd_members(node)
        .iter()
        .map(|n| format!("{}={}", n.name, ip_url(n.ip, 2380)))
        .collect();
    let mut client_urls = vec![ip_url(node.ip, 2379)];
    let local = "https://127.0.0.1:2379".to_owned();
    if !client_urls.contains(&local) {
        client_urls.push(local);
    }
    let state = if node.joins_etcd { "existing" } else { "new" };
    let mut args = vec![
        flag("name", &node.name),
        flag("data-dir", paths::ETCD_DATA),
        flag("listen-client-urls", client_urls.join(",")),
        flag("advertise-client-urls", ip_url(node.ip, 2379)),
        flag("listen-peer-urls", ip_url(node.ip, 2380)),
        flag("initial-advertise-peer-urls", ip_url(node.ip, 2380)),
        flag("initial-cluster", initial.join(",")),
        flag("initial-cluster-state", state),
        flag("initial-cluster-token", &c.name),
        flag("listen-metrics-urls", "http://127.0.0.1:2381"),
        flag("cert-file", on_node_cert(Id::EtcdServer)),
        flag("key-file", on_node_key(Id::EtcdServer)),
        flag("trusted-ca-file", on_node_cert(Id::EtcdCa)),
        flag("client-cert-auth", "true"),
        flag("peer-cert-file", on_node_cert(Id::EtcdPeer)),
        flag("peer-key-file", on_node_key(Id::EtcdPeer)),
        flag("peer-trusted-ca-file", on_node_cert(Id::EtcdCa)),
        flag("peer-client-cert-auth", "true"),
    ];
    args.extend(
        d.flags(Knob::EtcdSnapshotCount)
            .iter()
            .map(|f| f.to_string()),
    );
    args.extend(d.flags(Knob::EtcdLoggerFlags).iter().map(|f| f.to_string()));
    args.extend(
        d.flags(Knob::EtcdCorruptCheckFlag)
            .iter()
            .map(|f| f.to_string()),
    );
    let mut teach = String::from(
        "etcd stores the whole cluster state. Clients (kube-apiserver) and peers (the other\n\
         control-plane nodes) must present a certificate signed by the etcd CA.",
    );
    if node.joins_etcd {
        teach.push_str(
            "\nThis member joins a running etcd cluster (--initial-cluster-state=existing): add it\n\
             with `etcdctl member add` on a running member first (NEXT-STEPS.md).",
        );
    }
    Unit {
        name: "etcd",
        teach: &teach,
        doc: "https://etcd.io/docs/",
        after: &["network-online.target"],
        requires: &[],
        binary: "etcd",
        args,
        service_extra: &["Type=notify", "LimitNOFILE=65536"],
    }
    .render()
}

/// How long a stopping API server keeps serving while its /readyz fails (several control
/// planes): longer than a load balancer's `fall 2` × `inter 2s` plus a check's timeout.
pub const API_SHUTDOWN_DELAY: &str = "10s";

/// `kube-apiserver.service` for control-plane node `node`.
pub fn apiserver_unit(c: &ClusterInput, node: &NodeInput, v: &Versions) -> String {
    let etcd: Vec<String> = c.control_planes().map(|n| ip_url(n.ip, 2379)).collect();
    let mut args = vec![
        flag("advertise-address", node.ip),
        flag("allow-privileged", "true"),
        flag("authorization-mode", "Node,RBAC"),
        flag("client-ca-file", on_node_cert(Id::Ca)),
        flag("enable-admission-plugins", "NodeRestriction"),
        flag("encryption-provider-config", paths::ENCRYPTION_CONFIG),
        flag("etcd-cafile", on_node_cert(Id::EtcdCa)),
        flag("etcd-certfile", on_node_cert(Id::ApiserverEtcdClient)),
        flag("etcd-keyfile", on_node_key(Id::ApiserverEtcdClient)),
        flag("etcd-servers", etcd.join(",")),
        flag(
            "kubelet-client-certificate",
            on_node_cert(Id::ApiserverKubeletClient),
        ),
        flag(
            "kubelet-client-key",
            on_node_key(Id::ApiserverKubeletClient),
        ),
        flag("kubelet-preferred-address-types", "InternalIP,Hostname"),
        flag("proxy-client-cert-file", on_node_cert(Id::FrontProxyClient)),
        flag("proxy-client-key-file", on_node_key(Id::FrontProxyClient)),
        flag("requestheader-allowed-names", "front-proxy-client"),
        flag(
            "requestheader-client-ca-file",
            on_node_cert(Id::FrontProxyCa),
        ),
        flag("requestheader-extra-headers-prefix", "X-Remote-Extra-"),
        flag("requestheader-group-headers", "X-Remote-Group"),
        flag("requestheader-username-headers", "X-Remote-User"),
        flag("secure-port", 6443),
        flag(
            "service-account-issuer",
            format!("https://kubernetes.default.svc.{}", c.cluster_domain),
        ),
        flag("service-account-key-file", on_node_cert(Id::Sa)),
        flag("service-account-signing-key-file", on_node_key(Id::Sa)),
        flag("service-cluster-ip-range", &c.service_cidr),
        flag("tls-cert-file", on_node_cert(Id::Apiserver)),
        flag("tls-private-key-file", on_node_key(Id::Apiserver)),
    ];
    let mut teach = format!(
        "kube-apiserver {}: the only component that talks to etcd; everything else talks to it.\n\
         It advertises {} to pods (the `kubernetes` Service's endpoint), so that address must be\n\
         routable, never loopback. Secrets are encrypted at rest with the keys in {}.",
        v.of("kube-apiserver"),
        node.ip,
        paths::ENCRYPTION_CONFIG
    );
    if c.several_control_planes() {
        // Stopped (an upgrade, a restart), it first fails /readyz while it keeps serving, for
        // longer than the workers' load balancers take to see it (an operator's load balancer
        // should check as often: NEXT-STEPS says so) (two failed checks 2 s apart,
        // 3 s each at most): they open nothing new to it, and the clients holding connections to
        // it (watches, HTTP/2) move over before it closes them.
        args.push(flag("shutdown-delay-duration", API_SHUTDOWN_DELAY));
        teach.push_str(&format!(
            "\nStopping it takes {API_SHUTDOWN_DELAY} more: /readyz fails first, the load balancers stop\n\
             sending it requests, then it closes."
        ));
    }
    Unit {
        name: "kube-apiserver",
        teach: &teach,
        doc: "https://kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/",
        after: &["network-online.target", "etcd.service"],
        requires: &[],
        binary: "kube-apiserver",
        args,
        service_extra: &[],
    }
    .render()
}

/// `kube-controller-manager.service`.
pub fn controller_manager_unit(c: &ClusterInput) -> String {
    let kc = &on_node_kubeconfig(Id::ControllerManager);
    let args = vec![
        // kbin gives each node its pod subnet (the CNI config and the Node's spec.podCIDR, set
        // in NEXT-STEPS); the controller manager allocating its own would disagree with it.
        flag("allocate-node-cidrs", "false"),
        flag("authentication-kubeconfig", kc),
        flag("authorization-kubeconfig", kc),
        flag("bind-address", "127.0.0.1"),
        flag("cluster-cidr", &c.pod_cidr),
        flag("cluster-name", &c.name),
        // The CA alone: ca.crt is the trust bundle (two CAs during a rotation), and the signer
        // takes exactly one certificate.
        flag("cluster-signing-cert-file", on_node_signer_cert(Id::Ca)),
        flag("cluster-signing-key-file", on_node_key(Id::Ca)),
        flag("kubeconfig", kc),
        flag("leader-elect", "true"),
        flag(
            "requestheader-client-ca-file",
            on_node_cert(Id::FrontProxyCa),
        ),
        flag("root-ca-file", on_node_cert(Id::Ca)),
        flag("service-account-private-key-file", on_node_key(Id::Sa)),
        flag("service-cluster-ip-range", &c.service_cidr),
        flag("use-service-account-credentials", "true"),
    ];
    Unit {
        name: "kube-controller-manager",
        teach: "Runs the control loops (nodes, deployments, service accounts...) and signs kubelet\n\
                certificate requests with the cluster CA. It does not hand out pod CIDRs here\n\
                (--allocate-node-cidrs=false): kbin assigned each node its subnet, and NEXT-STEPS\n\
                writes it into the Node object.",
        doc: "https://kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/",
        after: &["kube-apiserver.service"],
        requires: &[],
        binary: "kube-controller-manager",
        args,
        service_extra: &[],
    }
    .render()
}

/// `kube-scheduler.service`.
pub fn scheduler_unit() -> String {
    let kc = &on_node_kubeconfig(Id::Scheduler);
    Unit {
        name: "kube-scheduler",
        teach: "Picks a node for every new pod. Its settings are in /etc/kubernetes/kube-scheduler.yaml.",
        doc: "https://kubernetes.io/docs/reference/command-line-tools-reference/kube-scheduler/",
        after: &["kube-apiserver.service"],
        requires: &[],
        binary: "kube-scheduler",
        args: vec![
            flag("authentication-kubeconfig", kc),
            flag("authorization-kubeconfig", kc),
            flag("bind-address", "127.0.0.1"),
            flag("config", paths::SCHEDULER_CONFIG),
        ],
        service_extra: &[],
    }
    .render()
}

/// `kubeconfig:` in a component config's `clientConnection`.
#[derive(Serialize)]
struct ClientConnection<'a> {
    kubeconfig: &'a str,
}

/// `/etc/kubernetes/kube-scheduler.yaml`.
pub fn scheduler_config(d: &Decisions) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct LeaderElection {
        leader_elect: bool,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct KubeSchedulerConfiguration<'a> {
        api_version: &'a str,
        kind: &'a str,
        client_connection: ClientConnection<'a>,
        leader_election: LeaderElection,
    }
    yaml_doc(
        "KubeSchedulerConfiguration: generated by kbin.",
        &KubeSchedulerConfiguration {
            api_version: d.text(Knob::SchedulerConfigApi),
            kind: "KubeSchedulerConfiguration",
            client_connection: ClientConnection {
                kubeconfig: &on_node_kubeconfig(Id::Scheduler),
            },
            leader_election: LeaderElection { leader_elect: true },
        },
        &[(
            "leaderElection",
            "Only one scheduler acts at a time when there are several control-plane nodes.",
        )],
    )
}

/// A named secretbox key: the name is part of every Secret it wrote (`k8s:enc:secretbox:v1:NAME:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedKey {
    /// `key1`, `key2`, …: a rotation adds the next number.
    pub name: String,
    /// Base64 of 32 random bytes.
    pub secret: String,
}

/// The Secrets-encryption keys of a cluster (base64 of 32 random bytes each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionKeys {
    /// The secretbox keys, in the provider's order: the first writes new Secrets, every one
    /// reads (two during a rotation).
    pub secretbox: Vec<NamedKey>,
    /// The aescbc key of a tree made before kbin used secretbox: kept as a second provider so
    /// Secrets it wrote stay readable.
    pub legacy_aescbc: Option<String>,
}

/// `/etc/kubernetes/encryption-config.yaml`.
pub fn encryption_config(d: &Decisions, keys: &EncryptionKeys) -> String {
    #[derive(Serialize)]
    struct Key<'a> {
        name: &'a str,
        secret: &'a str,
    }
    #[derive(Serialize)]
    struct Keys<'a> {
        keys: Vec<Key<'a>>,
    }
    #[derive(Serialize)]
    struct Empty {}
    #[derive(Serialize, Default)]
    struct Provider<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        secretbox: Option<Keys<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        aescbc: Option<Keys<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<Empty>,
    }
    #[derive(Serialize)]
    struct Resource<'a> {
        resources: Vec<&'a str>,
        providers: Vec<Provider<'a>>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct EncryptionConfiguration<'a> {
        api_version: &'a str,
        kind: &'a str,
        resources: Vec<Resource<'a>>,
    }
    // The key name is part of every stored Secret's prefix (k8s:enc:aescbc:v1:key1:): the old
    // key keeps its name.
    let one = |secret| Keys {
        keys: vec![Key {
            name: "key1",
            secret,
        }],
    };
    let mut providers = vec![Provider {
        secretbox: Some(Keys {
            keys: keys
                .secretbox
                .iter()
                .map(|k| Key {
                    name: &k.name,
                    secret: &k.secret,
                })
                .collect(),
        }),
        ..Provider::default()
    }];
    if let Some(old) = &keys.legacy_aescbc {
        providers.push(Provider {
            aescbc: Some(one(old)),
            ..Provider::default()
        });
    }
    providers.push(Provider {
        identity: Some(Empty {}),
        ..Provider::default()
    });
    let mut resources_comment = String::from(
        "kube-apiserver writes Secrets with the first provider (secretbox: XSalsa20-Poly1305, which\n\
         the Kubernetes docs prefer to aescbc) and reads them with any of them; identity reads\n\
         Secrets written before encryption was turned on.",
    );
    if keys.secretbox.len() > 1 {
        resources_comment.push_str(
            "\nA key rotation is under way (`kbin gen encryption-key`): the first secretbox key writes,\n\
             both read, so every API server reads what any other wrote while the new file rolls out.",
        );
    }
    if keys.legacy_aescbc.is_some() {
        resources_comment.push_str(
            "\nThe aescbc key is this tree's older key: it still reads the Secrets it wrote. To\n\
             re-encrypt them with secretbox: kubectl get secrets -A -o json | kubectl replace -f -",
        );
    }
    yaml_doc(
        "EncryptionConfiguration: generated by kbin. Keep this file secret (mode 0600).",
        &EncryptionConfiguration {
            api_version: d.text(Knob::EncryptionConfigApi),
            kind: "EncryptionConfiguration",
            resources: vec![Resource {
                resources: vec!["secrets"],
                providers,
            }],
        },
        &[("resources", &resources_comment)],
    )
}

/// `/etc/containerd/config.toml`.
///
/// Long (≈ 150 lines) on purpose: most of it is the serde structs of the one file, declared
/// where they are filled, and the teaching comments placed beside the tables they explain, in
/// the file's own order; the version-dependent choices are already rows of the version table.
pub fn containerd_config(v: &Versions, d: &Decisions, profile: HostProfile) -> String {
    #[derive(Serialize)]
    struct RuncOptions {
        #[serde(rename = "SystemdCgroup")]
        systemd_cgroup: bool,
    }
    #[derive(Serialize)]
    struct Runtime<'a> {
        runtime_type: &'a str,
        options: RuncOptions,
    }
    #[derive(Serialize)]
    struct Containerd<'a> {
        default_runtime_name: &'a str,
        runtimes: std::collections::BTreeMap<&'a str, Runtime<'a>>,
    }
    #[derive(Serialize)]
    struct Cni<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        bin_dir: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        bin_dirs: Option<Vec<&'a str>>,
        conf_dir: &'a str,
    }
    #[derive(Serialize)]
    struct Cri<'a> {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        restrict_oom_score_adj: bool,
        containerd: Containerd<'a>,
        cni: Cni<'a>,
    }
    let version: i64 = d
        .text(Knob::ContainerdConfigVersion)
        .parse()
        .expect("the table's containerd config versions are numbers");
    let runtime_plugin = d.text(Knob::ContainerdCriRuntimePlugin);
    let (sandbox_table, sandbox_key) = d.sandbox_image();
    let cgroup_driver = profile.cgroup_driver();
    let cri = Cri {
        restrict_oom_score_adj: profile.restrict_oom_score_adj(),
        containerd: Containerd {
            default_runtime_name: "runc",
            runtimes: [(
                "runc",
                Runtime {
                    runtime_type: "io.containerd.runc.v2",
                    options: RuncOptions {
                        systemd_cgroup: cgroup_driver == CgroupDriver::Systemd,
                    },
                },
            )]
            .into(),
        },
        cni: Cni {
            bin_dir: (d.cni_bin_dir() == CniBinDir::BinDir).then_some(paths::CNI_BIN),
            bin_dirs: (d.cni_bin_dir() == CniBinDir::BinDirs).then(|| vec![paths::CNI_BIN]),
            conf_dir: paths::CNI_CONF,
        },
    };
    let mut plugins = toml::Table::new();
    plugins.insert(
        runtime_plugin.to_owned(),
        toml::Value::try_from(&cri).expect("the CRI config serializes"),
    );
    // The sandbox image lives in the runtime plugin's table (1.x) or in the images plugin (2.x).
    let pause = format!("registry.k8s.io/pause:{}", v.images.pause);
    let mut table = &mut plugins;
    for part in sandbox_table {
        table = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("the sandbox image's tables are tables");
    }
    table.insert(sandbox_key.to_owned(), toml::Value::String(pause));
    let mut doc = toml::Table::new();
    doc.insert("version".into(), toml::Value::Integer(version));
    doc.insert("plugins".into(), toml::Value::Table(plugins));
    let text = toml::to_string(&doc).expect("a TOML table always serializes");

    let header = |path: &[&str]| {
        let mut h = String::from("[plugins");
        for p in path {
            if p.contains('.') {
                let _ = write!(h, ".\"{p}\"");
            } else {
                let _ = write!(h, ".{p}");
            }
        }
        h.push(']');
        h
    };
    let sandbox_header = if *sandbox_table == [runtime_plugin] {
        header(&[runtime_plugin])
    } else {
        header(sandbox_table)
    };
    let pause_note = format!(
        "The pause image holds each pod's network namespace; Kubernetes {} expects pause {}.",
        v.kubernetes, v.images.pause
    );
    let mut runtime_note = String::new();
    if sandbox_header == header(&[runtime_plugin]) {
        runtime_note.push_str(&pause_note);
        runtime_note.push('\n');
    }
    if profile.restrict_oom_score_adj() {
        runtime_note.push_str(
            "Host profile sandbox: containerd cannot raise OOM scores here (no CAP_SYS_RESOURCE),\n\
             so it keeps containers' scores at or above its own (restrict_oom_score_adj).",
        );
    }
    let driver_note = match cgroup_driver {
        CgroupDriver::Systemd => {
            "The kubelet uses cgroupDriver: systemd; runc must use the same driver."
        }
        CgroupDriver::Cgroupfs => {
            "Host profile sandbox: PID 1 is not systemd, so the kubelet uses cgroupDriver: cgroupfs\n\
             and runc must too (SystemdCgroup = false)."
        }
    };
    let cni_note = format!(
        "Pod networking: CNI plugins in {} and the conflist in {}.",
        paths::CNI_BIN,
        paths::CNI_CONF
    );
    let mut comments = vec![
        (
            header(&[runtime_plugin, "containerd"]),
            "runc runs the containers (through containerd-shim-runc-v2).",
        ),
        (
            header(&[runtime_plugin, "containerd", "runtimes", "runc", "options"]),
            driver_note,
        ),
        (header(&[runtime_plugin, "cni"]), cni_note.as_str()),
    ];
    if !runtime_note.is_empty() {
        comments.push((header(&[runtime_plugin]), runtime_note.trim_end()));
    }
    if sandbox_header != header(&[runtime_plugin]) {
        comments.push((sandbox_header, pause_note.as_str()));
    }
    format!(
        "# containerd {cv} config: generated by kbin.\n\
         # containerd 1.x reads config version 2 (CRI plugin \"io.containerd.grpc.v1.cri\");\n\
         # containerd 2.x reads version 3, where the CRI plugin is split into\n\
         # \"io.containerd.cri.v1.runtime\" and \"io.containerd.cri.v1.images\".\n{}",
        decorate(&text, &comments),
        cv = v.of("containerd"),
    )
}

/// `containerd.service` (upstream's unit, trimmed).
pub fn containerd_unit() -> String {
    Unit {
        name: "containerd",
        teach: "The container runtime: the kubelet asks it (over the CRI socket) to pull images and\n\
                run containers; it starts them with runc.",
        doc: "https://containerd.io",
        after: &["network.target", "local-fs.target"],
        requires: &[],
        binary: "containerd",
        args: vec![flag("config", paths::CONTAINERD_CONFIG)],
        service_extra: &[
            "Type=notify",
            "Delegate=yes",
            "KillMode=process",
            "LimitNPROC=infinity",
            "LimitCORE=infinity",
            "TasksMax=infinity",
            "OOMScoreAdjust=-999",
        ],
    }
    .render()
}

/// `/etc/cni/net.d/10-bridge.conflist` for worker `node`.
pub fn cni_conflist(node: &NodeInput, d: &Decisions) -> String {
    let conf = serde_json::json!({
        "cniVersion": d.text(Knob::CniSpecVersion),
        "name": "bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                // No NAT between pods (Kubernetes' network model): the bridge's masquerade
                // would hide a pod's address from pods on other nodes. Traffic leaving the
                // cluster is masqueraded by kbin-pod-network.service instead (see there).
                "ipMasq": false,
                // A pod reaching itself through a Service (kube-proxy sends the packet back out
                // the port it came in on) needs the bridge to allow that.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": node.pod_subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            // hostPort in a pod spec: the runtime passes the mappings, portmap makes the rules.
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "loopback" }
        ]
    });
    let mut s = serde_json::to_string_pretty(&conf).expect("a JSON value always serializes");
    s.push('\n');
    s
}

/// `/var/lib/kubelet/config.yaml` for worker `node`.
///
/// Long (≈ 110 lines) for the same reason as [`containerd_config`]: the serde struct of one
/// file, filled and commented in the file's order.
pub fn kubelet_config(
    c: &ClusterInput,
    node: &NodeInput,
    d: &Decisions,
    cgroup_v1: bool,
) -> String {
    #[derive(Serialize)]
    struct Enabled {
        enabled: bool,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct X509 {
        #[serde(rename = "clientCAFile")]
        client_ca_file: String,
    }
    #[derive(Serialize)]
    struct Authentication {
        anonymous: Enabled,
        webhook: Enabled,
        x509: X509,
    }
    #[derive(Serialize)]
    struct Authorization {
        mode: &'static str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct KubeletConfiguration<'a> {
        api_version: &'a str,
        kind: &'a str,
        authentication: Authentication,
        authorization: Authorization,
        cgroup_driver: CgroupDriver,
        #[serde(rename = "clusterDNS")]
        cluster_dns: Vec<IpAddr>,
        cluster_domain: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        container_runtime_endpoint: Option<&'a str>,
        #[serde(rename = "failCgroupV1", skip_serializing_if = "Option::is_none")]
        fail_cgroup_v1: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resolv_conf: Option<&'a str>,
        tls_cert_file: String,
        tls_private_key_file: String,
    }
    let driver = c.host_profile.cgroup_driver();
    let driver_note = match driver {
        CgroupDriver::Systemd => "Same driver as containerd's SystemdCgroup = true.",
        CgroupDriver::Cgroupfs => {
            "Host profile sandbox: PID 1 is not systemd, so the kubelet manages cgroups itself\n\
             (cgroupfs), like containerd's SystemdCgroup = false."
        }
    };
    let config = KubeletConfiguration {
        api_version: d.text(Knob::KubeletConfigApi),
        kind: "KubeletConfiguration",
        authentication: Authentication {
            anonymous: Enabled { enabled: false },
            webhook: Enabled { enabled: true },
            x509: X509 {
                client_ca_file: on_node_cert(Id::Ca),
            },
        },
        authorization: Authorization { mode: "Webhook" },
        cgroup_driver: driver,
        cluster_dns: vec![c.cluster_dns],
        cluster_domain: &c.cluster_domain,
        container_runtime_endpoint: (d.runtime_endpoint() == RuntimeEndpoint::Config)
            .then_some(paths::CRI_SOCKET),
        fail_cgroup_v1: (cgroup_v1 && d.cgroup_v1() == CgroupV1::Refuses).then_some(false),
        resolv_conf: c.resolv_conf.as_deref(),
        tls_cert_file: on_node_cert(Id::Kubelet),
        tls_private_key_file: on_node_key(Id::Kubelet),
    };
    yaml_doc(
        &format!("KubeletConfiguration for {}: generated by kbin.", node.name),
        &config,
        &[
            (
                "authentication",
                "Who may call the kubelet's API: clients with a certificate from the cluster CA\n\
                 (kube-apiserver), or bearer tokens checked with the API server (webhook).",
            ),
            (
                "authorization",
                "What they may do: asked of the API server (SubjectAccessReview).",
            ),
            ("cgroupDriver", driver_note),
            (
                "clusterDNS",
                "Pods resolve names through the cluster DNS service (CoreDNS, which you deploy).",
            ),
            (
                "failCgroupV1",
                "This host runs cgroup v1: from 1.35 the kubelet refuses to start there unless told to.",
            ),
            (
                "resolvConf",
                "The upstream resolvers pods inherit: systemd-resolved's real list, not its\n\
                 127.0.0.53 stub (which, inside CoreDNS, would forward to itself and loop).",
            ),
            (
                "tlsCertFile",
                "The kubelet's own serving certificate (kubectl logs/exec connect here).",
            ),
        ],
    )
}

/// `kubelet.service` for worker `node`.
pub fn kubelet_unit(node: &NodeInput, v: &Versions, d: &Decisions) -> String {
    let mut args = vec![
        flag("config", paths::KUBELET_CONFIG),
        flag("kubeconfig", on_node_kubeconfig(Id::KubeletClient)),
        // The node registers under the name its certificate was made for.
        flag("hostname-override", &node.name),
        flag("node-ip", node.ip),
    ];
    if d.runtime_endpoint() == RuntimeEndpoint::Flags {
        args.push(flag("container-runtime", "remote"));
        args.push(flag("container-runtime-endpoint", paths::CRI_SOCKET));
    }
    let teach = format!(
        "kubelet {}: registers this node and runs its pods through containerd.",
        v.of("kubelet")
    );
    Unit {
        name: "kubelet",
        teach: &teach,
        doc: "https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/",
        after: &["containerd.service"],
        requires: &["containerd.service"],
        binary: "kubelet",
        args,
        service_extra: &[],
    }
    .render()
}

/// `/var/lib/kube-proxy/config.yaml` for worker `node`.
pub fn kube_proxy_config(c: &ClusterInput, node: &NodeInput, d: &Decisions) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Conntrack {
        max_per_core: i32,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct KubeProxyConfiguration<'a> {
        api_version: &'a str,
        kind: &'a str,
        client_connection: ClientConnection<'a>,
        #[serde(rename = "clusterCIDR")]
        cluster_cidr: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        conntrack: Option<Conntrack>,
        hostname_override: &'a str,
        mode: &'a str,
        node_port_addresses: Vec<String>,
    }
    let node_ports = match d.node_port_addresses() {
        NodePortAddresses::Primary => "primary".to_owned(),
        NodePortAddresses::NodeIp => format!("{}/32", node.ip),
    };
    yaml_doc(
        &format!(
            "KubeProxyConfiguration for {}: generated by kbin.",
            node.name
        ),
        &KubeProxyConfiguration {
            api_version: d.text(Knob::KubeProxyConfigApi),
            kind: "KubeProxyConfiguration",
            client_connection: ClientConnection {
                kubeconfig: &on_node_kubeconfig(Id::KubeProxy),
            },
            cluster_cidr: &c.pod_cidr,
            conntrack: c
                .host_profile
                .keep_conntrack_limits()
                .then_some(Conntrack { max_per_core: 0 }),
            hostname_override: &node.name,
            mode: "iptables",
            node_port_addresses: vec![node_ports],
        },
        &[
            (
                "clusterCIDR",
                "Traffic to Services from outside the pod network is masqueraded.",
            ),
            (
                "conntrack",
                "Host profile sandbox: /proc/sys is read-only, so kube-proxy leaves the conntrack\n\
                 table size as it is (maxPerCore: 0), as kind does in containers.",
            ),
            (
                "hostnameOverride",
                "The Node's name, as the kubelet registered it (--hostname-override): kube-proxy\n\
                 reads its Node to learn its addresses.",
            ),
            (
                "mode",
                "kube-proxy programs iptables so that Service IPs reach their pods.",
            ),
            (
                "nodePortAddresses",
                "NodePort Services answer on this node's own address only.",
            ),
        ],
    )
}

/// Protocol number of the routes kbin adds (`ip route show proto 152`): what `start` flushes
/// before adding the current ones, so a node that left loses its route on the next start.
pub const ROUTE_PROTO: u8 = 152;

/// `/usr/local/lib/kbin/pod-network` for worker `node`: `start` adds a route to every other
/// worker's pod subnet and masquerades this node's pod traffic that leaves the cluster's pod
/// network; `stop` removes both. Idempotent: `start` first removes what an earlier start made.
pub fn pod_network_script(c: &ClusterInput, node: &NodeInput) -> String {
    use crate::util::shell_quote as q;
    let mut routes = String::new();
    for o in c.workers().filter(|o| o.name != node.name) {
        let _ = writeln!(
            routes,
            "    ip route replace {} via {} proto \"$PROTO\"  # {}",
            q(&o.pod_subnet),
            q(&o.ip.to_string()),
            o.name
        );
    }
    if routes.is_empty() {
        routes.push_str("    : # the only worker: no other pod subnet to route\n");
    }
    format!(
        r#"#!/bin/sh
# {path}: generated by kbin for node {name};
# kbin-pod-network.service runs it at boot (`start`) and when stopped (`stop`).
#
# Pod traffic between nodes, without NAT:
# - The bridge CNI (cni0) knows only this node's pods ({subnet}); a packet for another
#   worker's pod needs a route via that worker. kbin's routes carry protocol {proto}, so `start`
#   first flushes them all: the route of a node that left the cluster goes with the next start.
# - Kubernetes' network model: a pod sees another pod's real address, on any node. So the
#   bridge does no masquerade (ipMasq: false in {conflist});
#   only traffic from this node's pods to outside the pod network ({cluster}) leaves with the
#   node's address (chain KBIN-POD-MASQ in the nat table), so that replies find their way back.
#   Service addresses are translated before this (kube-proxy, which knows {cluster} too).
set -eu
PROTO={proto}
SUBNET={q_subnet}
CLUSTER={q_cluster}

unmasquerade() {{
    iptables -w -t nat -S POSTROUTING | sed -n 's/^-A \(.*-j KBIN-POD-MASQ\)$/\1/p' |
        while read -r rule; do eval "iptables -w -t nat -D $rule"; done
    if iptables -w -t nat -S KBIN-POD-MASQ >/dev/null 2>&1; then
        iptables -w -t nat -F KBIN-POD-MASQ
        iptables -w -t nat -X KBIN-POD-MASQ
    fi
}}

start() {{
    ip route flush proto "$PROTO"
{routes}    unmasquerade
    iptables -w -t nat -N KBIN-POD-MASQ
    iptables -w -t nat -A KBIN-POD-MASQ -d "$CLUSTER" -j RETURN
    iptables -w -t nat -A KBIN-POD-MASQ -j MASQUERADE
    iptables -w -t nat -A POSTROUTING -s "$SUBNET" -m comment --comment "kbin: pods leaving the cluster" -j KBIN-POD-MASQ
}}

stop() {{
    ip route flush proto "$PROTO"
    unmasquerade
}}

case "${{1:-}}" in
start) start ;;
stop) stop ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
"#,
        path = paths::POD_NETWORK,
        name = node.name,
        subnet = node.pod_subnet,
        conflist = paths::CNI_CONFLIST,
        cluster = c.pod_cidr,
        proto = ROUTE_PROTO,
        q_subnet = q(&node.pod_subnet),
        q_cluster = q(&c.pod_cidr),
    )
}

/// `kbin-pod-network.service`: runs [`pod_network_script`] at boot, before the kubelet.
pub fn pod_network_unit() -> String {
    format!(
        "# {unit}.service: generated by kbin.\n\
         # Pod traffic between nodes (routes to the other workers' pod subnets) and out of the\n\
         # cluster (masquerade), set up at every boot and removed when stopped: see {script}.\n\
         # Retried every 5 s until it succeeds: a route via another node needs this node's\n\
         # address, which may come up after boot.\n\
         [Unit]\n\
         Description={unit}\n\
         Documentation=https://kubernetes.io/docs/concepts/cluster-administration/networking/\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         Before=kubelet.service\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart={script} start\n\
         ExecStop={script} stop\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        unit = paths::POD_NETWORK_UNIT,
        script = paths::POD_NETWORK,
    )
}

/// `/etc/kubernetes/apiserver-lb.cfg` for worker `node`: HAProxy in front of every API server.
pub fn apiserver_lb_config(c: &ClusterInput, node: &NodeInput) -> String {
    let port = crate::r#gen::plan::spec::API_LB_PORT;
    haproxy_config(
        c,
        &format!(
            "# {path}: generated by kbin for node {name} (kbin-apiserver-lb.service runs it).\n\
             # The node-local load balancer in front of every API server, so that losing one control\n\
             # plane loses nothing here: this node's kubelet and kube-proxy reach the API at\n\
             # https://127.0.0.1:{port} (their kubeconfigs say so), and HAProxy passes each TLS\n",
            path = paths::API_LB_CONFIG,
            name = node.name,
        ),
        &format!("127.0.0.1:{port}"),
    )
}

/// An HAProxy configuration for the operator's own load balancer at `--api-endpoint` (shown in
/// NEXT-STEPS): the node-local one's rules, listening on every address at the endpoint's port.
pub fn operator_lb_config(c: &ClusterInput, e: &ApiEndpoint) -> String {
    haproxy_config(
        c,
        &format!(
            "# haproxy.cfg for the load balancer at {e} (--api-endpoint), generated by kbin.\n\
             # Every node and kubeconfig reaches the API through it, so that losing one control\n\
             # plane loses nothing: HAProxy passes each TLS\n"
        ),
        &format!("*:{}", e.port),
    )
}

/// HAProxy in mode tcp in front of every API server, health-checked on /readyz: `head` is the
/// file's first comment lines, `bind` the address it listens on.
fn haproxy_config(c: &ClusterInput, head: &str, bind: &str) -> String {
    let mut s = format!(
        "{head}\
         # connection through untouched (mode tcp: the certificates stay end to end) to an API\n\
         # server whose /readyz answers 200, asked every 2 s; one that fails twice gets no new\n\
         # connection until it passes twice. Watches are long-lived: the idle timeouts are an hour.\n\
         global\n\
         \x20   # Connections: as many as the open-files limit allows (HAProxy's default).\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n    timeout check 3s\n\
         \x20   # A connection refused by a server not yet seen down goes to another one.\n\
         \x20   retries 3\n    option redispatch\n\n\
         frontend apiserver\n    bind {bind}\n    default_backend apiservers\n\n\
         backend apiservers\n    option httpchk GET /readyz\n    http-check expect status 200\n\
         \x20   default-server inter 2s fall 2 rise 2 check check-ssl verify none\n",
    );
    for cp in c.control_planes() {
        let addr = match cp.ip {
            IpAddr::V4(ip) => format!("{ip}:6443"),
            IpAddr::V6(ip) => format!("[{ip}]:6443"),
        };
        let _ = writeln!(s, "    server {} {addr}", cp.name);
    }
    s
}

/// `kbin-apiserver-lb.service`: HAProxy with [`apiserver_lb_config`], before the kubelet.
pub fn apiserver_lb_unit() -> String {
    format!(
        "# {unit}.service: generated by kbin.\n\
         # The node-local load balancer in front of every API server ({cfg}); HAProxy comes\n\
         # from the distribution (apt-get install haproxy; its own haproxy.service is not used).\n\
         [Unit]\n\
         Description={unit}\n\
         Documentation=https://docs.haproxy.org/\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         Before=kubelet.service kube-proxy.service\n\
         \n\
         [Service]\n\
         Type=notify\n\
         ExecStart={haproxy} -Ws -f {cfg}\n\
         KillMode=mixed\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        unit = paths::API_LB_UNIT,
        cfg = paths::API_LB_CONFIG,
        haproxy = paths::HAPROXY,
    )
}

/// How many days of snapshots an etcd member keeps.
pub const ETCD_BACKUP_KEEP_DAYS: u32 = 7;

/// The etcdctl words every snapshot command starts with on a member: the local client URL
/// and the healthcheck client certificate (any certificate of etcd's CA may read).
fn etcdctl_words(d: &Decisions) -> String {
    format!(
        "{}{}/etcdctl --endpoints=https://127.0.0.1:2379 --cacert={} --cert={} --key={}",
        d.etcdctl_env(),
        paths::BIN,
        on_node_cert(Id::EtcdCa),
        on_node_cert(Id::EtcdHealthcheckClient),
        on_node_key(Id::EtcdHealthcheckClient)
    )
}

/// `snapshot status` or `snapshot restore` with the version's offline tool.
fn snapshot_tool(d: &Decisions) -> String {
    match d.text(Knob::EtcdSnapshotTool) {
        "etcdctl" => format!("{}{}/etcdctl", d.etcdctl_env(), paths::BIN),
        tool => format!("{}/{tool}", paths::BIN),
    }
}

/// `/usr/local/lib/kbin/etcd-backup` for etcd member `node`: one snapshot, checked, kept with
/// its sha256, older ones pruned. Prints the snapshot's path (the last line), which
/// `ansible/backup.yml` fetches.
pub fn etcd_backup_script(node: &NodeInput, d: &Decisions) -> String {
    format!(
        r#"#!/bin/sh
# {path}: generated by kbin for etcd member {name}; etcd-backup.service runs it
# (etcd-backup.timer: daily), as can you: `systemctl start etcd-backup`, or this script.
# One snapshot of the whole keyspace (`etcdctl snapshot save`, through this member), checked
# with `{status} snapshot status` before it is kept, written with its sha256 beside it,
# readable by root only (it holds every Secret, encrypted at rest or not). Snapshots older than
# KEEP_DAYS days ({keep} unless set) are removed. Restore: {restore} (NEXT-STEPS.md).
set -eu
DIR={dir}
KEEP_DAYS="${{KEEP_DAYS:-{keep}}}"
umask 077
mkdir -p "$DIR"
name="etcd-{name}-$(date -u +%Y%m%dT%H%M%SZ).db"
tmp="$DIR/.$name.part"
trap 'rm -f "$tmp"' EXIT
{etcdctl} snapshot save "$tmp" >/dev/null
{status} snapshot status "$tmp" >&2
sum=$(sha256sum "$tmp" | cut -d' ' -f1)
mv "$tmp" "$DIR/$name"
trap - EXIT
echo "$sum  $name" >"$DIR/$name.sha256"
find "$DIR" -maxdepth 1 -name 'etcd-*.db*' -mtime +"$KEEP_DAYS" -delete
echo "$DIR/$name"
"#,
        path = paths::ETCD_BACKUP,
        name = node.name,
        dir = paths::ETCD_BACKUPS,
        keep = ETCD_BACKUP_KEEP_DAYS,
        etcdctl = etcdctl_words(d),
        status = snapshot_tool(d),
        restore = paths::ETCD_RESTORE,
    )
}

/// `/usr/local/lib/kbin/etcd-restore SNAPSHOT` for etcd member `node`: its data directory
/// rebuilt from the snapshot as a member of a new cluster of every control plane (the same
/// snapshot on every member), the old data kept aside. Refuses while etcd runs.
pub fn etcd_restore_script(c: &ClusterInput, node: &NodeInput, d: &Decisions) -> String {
    use crate::util::shell_quote as q;
    let members: Vec<String> = c
        .control_planes()
        .map(|n| format!("{}={}", n.name, ip_url(n.ip, 2380)))
        .collect();
    format!(
        r#"#!/bin/sh
# {path}: generated by kbin for etcd member {name}.
#   {path} SNAPSHOT.db
# Replaces this member's data ({data}) with SNAPSHOT, as a member of a new cluster made of
# every control plane ({members}); the same snapshot must be restored on every member, with
# kube-apiserver stopped everywhere and etcd stopped here (ansible/restore.yml does it all, in
# that order). The old data directory is kept aside, never deleted.
set -eu
snap="${{1:?usage: $0 SNAPSHOT.db}}"
[ -f "$snap" ] || {{ echo "etcd-restore: no snapshot at $snap" >&2; exit 1; }}
if [ -f "$snap.sha256" ]; then
    want=$(cut -d' ' -f1 "$snap.sha256")
    got=$(sha256sum "$snap" | cut -d' ' -f1)
    [ "$want" = "$got" ] || {{ echo "etcd-restore: $snap has sha256 $got, not $want as $snap.sha256 says: a damaged copy" >&2; exit 1; }}
fi
if pgrep -x etcd >/dev/null; then
    echo "etcd-restore: etcd is running on {name}: stop kube-apiserver on every control plane, then etcd, first" >&2
    exit 1
fi
new={data}.restoring
rm -rf "$new"
{tool} snapshot restore "$snap" --name={q_name} --initial-cluster={q_members} \
    --initial-cluster-token={q_token} --initial-advertise-peer-urls={q_peer} --data-dir="$new" >&2
chmod 700 "$new"
if [ -e {data} ]; then
    aside="{data}.before-restore-$(date -u +%Y%m%dT%H%M%SZ)"
    mv {data} "$aside"
    echo "etcd-restore: the previous data is in $aside" >&2
fi
mv "$new" {data}
echo "etcd-restore: {name} restored from $snap"
"#,
        path = paths::ETCD_RESTORE,
        name = node.name,
        data = paths::ETCD_DATA,
        members = members.join(","),
        tool = snapshot_tool(d),
        q_name = q(&node.name),
        q_members = q(&members.join(",")),
        q_token = q(&c.name),
        q_peer = q(&ip_url(node.ip, 2380)),
    )
}

/// `etcd-backup.service`: one run of [`etcd_backup_script`].
pub fn etcd_backup_unit() -> String {
    format!(
        "# etcd-backup.service: generated by kbin.\n\
         # One etcd snapshot into {dir} (see {script}); started by etcd-backup.timer.\n\
         [Unit]\n\
         Description=etcd-backup\n\
         Documentation=https://etcd.io/docs/v3.5/op-guide/recovery/\n\
         After=etcd.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={script}\n",
        dir = paths::ETCD_BACKUPS,
        script = paths::ETCD_BACKUP,
    )
}

/// `etcd-backup.timer`: a snapshot a day, caught up after a machine was off.
pub fn etcd_backup_timer() -> String {
    "# etcd-backup.timer: generated by kbin.\n\
     # A snapshot a day, at a random minute of the first hour (members do not all snapshot at\n\
     # once); a day missed while the machine was off is caught up at boot (Persistent).\n\
     [Unit]\n\
     Description=etcd-backup daily\n\
     \n\
     [Timer]\n\
     OnCalendar=daily\n\
     RandomizedDelaySec=1h\n\
     Persistent=true\n\
     \n\
     [Install]\n\
     WantedBy=timers.target\n"
        .into()
}

/// `kube-proxy.service`.
pub fn kube_proxy_unit() -> String {
    Unit {
        name: "kube-proxy",
        teach: "Implements Services on this node (iptables rules).",
        doc: "https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/",
        after: &["network-online.target"],
        requires: &[],
        binary: "kube-proxy",
        args: vec![flag("config", paths::KUBE_PROXY_CONFIG)],
        service_extra: &[],
    }
    .render()
}

/// `/etc/crictl.yaml`.
pub fn crictl_config() -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct Crictl<'a> {
        runtime_endpoint: &'a str,
        image_endpoint: &'a str,
        timeout: u32,
    }
    yaml_doc(
        "crictl talks to containerd's CRI socket: try `crictl ps` and `crictl pods` on this node.",
        &Crictl {
            runtime_endpoint: paths::CRI_SOCKET,
            image_endpoint: paths::CRI_SOCKET,
            timeout: 10,
        },
        &[],
    )
}

/// `/etc/modules-load.d/kubernetes.conf`.
pub fn modules_load() -> String {
    "# Loaded at boot: overlay for containerd's snapshotter, br_netfilter so that iptables\n\
     # sees bridged pod traffic (kube-proxy).\noverlay\nbr_netfilter\n"
        .into()
}

/// `/etc/sysctl.d/99-kubernetes.conf`.
pub fn sysctl() -> String {
    "# Pods on the bridge need forwarding, and iptables must see bridged traffic.\n\
     net.ipv4.ip_forward = 1\n\
     net.bridge.bridge-nf-call-iptables = 1\n\
     net.bridge.bridge-nf-call-ip6tables = 1\n"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_escape_specifiers_variables_and_spaces() {
        assert_eq!(exec_word("--name=node-0"), "--name=node-0");
        assert_eq!(exec_word("--x=50%"), "--x=50%%");
        assert_eq!(exec_word("--x=$HOME"), "--x=$$HOME");
        assert_eq!(exec_word("--x=a b"), "\"--x=a b\"");
        assert_eq!(exec_word("--x=a\"b\\c"), "\"--x=a\\\"b\\\\c\"");
        assert_eq!(exec_word(""), "\"\"");
    }

    #[test]
    fn decorate_puts_comments_before_their_lines() {
        let t = decorate("a = 1\n[x]\nb = 2\n", &[("[x]".into(), "about x\nmore")]);
        assert_eq!(t, "a = 1\n# about x\n# more\n[x]\nb = 2\n");
    }
}
