//! `addons/`: what the cluster itself runs once its nodes are up. Today one add-on, the cluster
//! DNS (CoreDNS), as kubeadm deploys it (`cmd/kubeadm/app/phases/addons/dns`: the same Corefile,
//! RBAC, labels and Service name, so that what users read about kubeadm clusters holds here),
//! plus a PodDisruptionBudget so that draining a node for an upgrade never takes both replicas.
//!
//! Every object is a serde struct serialized to YAML; the teaching comments go between the
//! documents. The image is the one the toolchain pulled and bundles (by tag and, when pulled,
//! by the digest containerd knows it by), so an air-gapped node runs exactly that image.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::configs::ClusterInput;
use crate::r#gen::plan::versions::Versions;

/// The add-on files, relative to the cluster directory.
pub const DIR: &str = "addons";
/// The cluster DNS manifest, relative to the cluster directory.
pub const COREDNS: &str = "addons/coredns.yaml";
/// The field manager kbin applies the add-ons as (server-side apply): `kbin up`, site.yml and
/// NEXT-STEPS.md use the same one, so that each re-apply changes nothing and a field someone
/// else set is a conflict, not a silent overwrite.
pub const FIELD_MANAGER: &str = "kbin";
/// Namespace and name of the CoreDNS Deployment (the rollout `up` waits for).
pub const COREDNS_DEPLOYMENT: (&str, &str) = ("kube-system", "coredns");

/// The image reference the add-on runs: `registry.k8s.io/coredns/coredns:v1.12.1@sha256:…`
/// when the toolchain pulled it (the platform manifest's digest: what containerd names an
/// imported image by), else the tag alone.
pub fn coredns_image(v: &Versions) -> (String, bool) {
    let tagged = crate::images::ImageRef::coredns(&v.images.coredns).to_string();
    match v.image_digests.get(&tagged) {
        Some(d) => (format!("{tagged}@{d}"), true),
        None => (tagged, false),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Object<B: Serialize> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Meta,
    #[serde(flatten)]
    body: B,
}

#[derive(Serialize, Default)]
struct Meta {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'static str, &'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, &'static str>,
}

fn meta(name: &'static str, namespaced: bool, labels: &[(&'static str, &'static str)]) -> Meta {
    Meta {
        name,
        namespace: namespaced.then_some("kube-system"),
        labels: labels.iter().copied().collect(),
        annotations: BTreeMap::new(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: &'static [&'static str],
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Binding {
    role_ref: Ref,
    subjects: Vec<Subject>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ref {
    api_group: &'static str,
    kind: &'static str,
    name: &'static str,
}

#[derive(Serialize)]
struct Subject {
    kind: &'static str,
    name: &'static str,
    namespace: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Selector {
    match_labels: BTreeMap<&'static str, &'static str>,
}

fn dns_selector() -> Selector {
    Selector {
        match_labels: [("k8s-app", "kube-dns")].into_iter().collect(),
    }
}

/// The CoreDNS configuration, kubeadm's Corefile for `domain`.
pub fn corefile(domain: &str) -> String {
    format!(
        ".:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {domain} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :9153
    forward . /etc/resolv.conf {{
       max_concurrent 1000
    }}
    cache 30
    loop
    reload
    loadbalance
}}
"
    )
}

/// One YAML document: its comment lines, `---`, the object.
fn doc(out: &mut String, comment: &str, value: &impl Serialize) {
    out.push_str("---\n");
    for line in comment.lines() {
        let _ = writeln!(out, "# {line}");
    }
    out.push_str(&serde_yaml_ng::to_string(value).expect("add-on objects always serialize"));
}

/// `addons/coredns.yaml`: the cluster DNS, seven objects in the order `kubectl apply` needs
/// them (the ServiceAccount and ConfigMap before the Deployment that names them). Long (≈ 190
/// lines) because it is the manifest itself: each object's fields in kubeadm's order, with the
/// comment that explains it just above.
pub fn coredns(c: &ClusterInput, v: &Versions) -> String {
    let (image, pinned) = coredns_image(v);
    let resolv = c.resolv_conf.as_deref().unwrap_or("/etc/resolv.conf");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# The cluster DNS: CoreDNS {ver}, generated by kbin for cluster {name} from {origin}.\n\
         # Applied by `kbin up` and site.yml once a Node is Ready (server-side apply, field manager\n\
         # `{FIELD_MANAGER}`; applying it again changes nothing), or by hand:\n\
         #   kubectl apply --server-side --field-manager={FIELD_MANAGER} -f addons/\n\
         #   kubectl -n kube-system rollout status deployment/coredns\n\
         # The kubelets give every pod {dns} as its nameserver and `{domain}` as its search domain:\n\
         # this Service is that address, and these pods answer for the domain.",
        ver = v.images.coredns,
        name = c.name,
        origin = v.origin,
        dns = c.cluster_dns,
        domain = c.cluster_domain,
    );
    doc(
        &mut s,
        "The identity the CoreDNS pods run as, bound below to what they may read.",
        &Object {
            api_version: "v1",
            kind: "ServiceAccount",
            metadata: meta("coredns", true, &[]),
            body: BTreeMap::<&str, ()>::new(),
        },
    );
    #[derive(Serialize)]
    struct Rules {
        rules: Vec<Rule>,
    }
    let mut role_meta = meta(
        "system:coredns",
        false,
        &[("kubernetes.io/bootstrapping", "rbac-defaults")],
    );
    role_meta
        .annotations
        .insert("rbac.authorization.kubernetes.io/autoupdate", "true");
    doc(
        &mut s,
        "CoreDNS answers from what it watches: Services and their EndpointSlices (names to\n\
         addresses), Pods (`pods insecure` answers a-b-c-d.ns.pod names) and Namespaces.\n\
         Read-only: list and watch, nothing else.",
        &Object {
            api_version: "rbac.authorization.k8s.io/v1",
            kind: "ClusterRole",
            metadata: role_meta,
            body: Rules {
                rules: vec![
                    Rule {
                        api_groups: &[""],
                        resources: &["endpoints", "services", "pods", "namespaces"],
                        verbs: &["list", "watch"],
                    },
                    Rule {
                        api_groups: &["discovery.k8s.io"],
                        resources: &["endpointslices"],
                        verbs: &["list", "watch"],
                    },
                ],
            },
        },
    );
    let mut binding_meta = meta(
        "system:coredns",
        false,
        &[("kubernetes.io/bootstrapping", "rbac-defaults")],
    );
    binding_meta
        .annotations
        .insert("rbac.authorization.kubernetes.io/autoupdate", "true");
    doc(
        &mut s,
        "The ServiceAccount above gets the ClusterRole above.",
        &Object {
            api_version: "rbac.authorization.k8s.io/v1",
            kind: "ClusterRoleBinding",
            metadata: binding_meta,
            body: Binding {
                role_ref: Ref {
                    api_group: "rbac.authorization.k8s.io",
                    kind: "ClusterRole",
                    name: "system:coredns",
                },
                subjects: vec![Subject {
                    kind: "ServiceAccount",
                    name: "coredns",
                    namespace: "kube-system",
                }],
            },
        },
    );
    #[derive(Serialize)]
    struct Data {
        data: BTreeMap<&'static str, String>,
    }
    doc(
        &mut s,
        &format!(
            "The Corefile (kubeadm's). `kubernetes {domain}` answers cluster names from the API;\n\
             every other name is forwarded to the resolvers in the pod's /etc/resolv.conf, which,\n\
             with `dnsPolicy: Default` below, is the kubelet's resolvConf: {resolv} on the node\n\
             (never a 127.0.0.53 stub: inside the pod that would be CoreDNS itself, which `loop`\n\
             detects and stops on). Air-gapped, those resolvers may answer nothing: cluster names\n\
             still resolve. `reload` picks up an edited ConfigMap within about two minutes.",
            domain = c.cluster_domain
        ),
        &Object {
            api_version: "v1",
            kind: "ConfigMap",
            metadata: meta("coredns", true, &[]),
            body: Data {
                data: [("Corefile", corefile(&c.cluster_domain))]
                    .into_iter()
                    .collect(),
            },
        },
    );
    doc(
        &mut s,
        &format!(
            "Two replicas, preferably on two nodes (anti-affinity), so that one node going away\n\
             leaves DNS up; on a one-node cluster both run there.\n{}\n\
             The probes are CoreDNS's `health` (liveness, :8080) and `ready` (readiness, :8181)\n\
             plugins.",
            if pinned {
                "The image is the one the toolchain pulled, by digest: exactly those bytes. It is in\n\
                 every worker's bundle and imported into containerd before the kubelet starts\n\
                 (`IfNotPresent`: an air-gapped node pulls nothing)."
            } else {
                "The image is named by tag only: the toolchain did not pull it (installed with\n\
                 --no-images), so no digest is known and no worker's bundle carries it: import it\n\
                 on every worker under this name, or let the nodes pull it."
            }
        ),
        &Object {
            api_version: "apps/v1",
            kind: "Deployment",
            metadata: meta("coredns", true, &[("k8s-app", "kube-dns")]),
            body: deployment(image),
        },
    );
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct PdbSpec {
        max_unavailable: u32,
        selector: Selector,
    }
    #[derive(Serialize)]
    struct Pdb {
        spec: PdbSpec,
    }
    doc(
        &mut s,
        "A drain (upgrade.yml, `kubectl drain`) evicts at most one CoreDNS pod at a time: the\n\
         other keeps answering while the evicted one starts elsewhere.",
        &Object {
            api_version: "policy/v1",
            kind: "PodDisruptionBudget",
            metadata: meta("coredns", true, &[("k8s-app", "kube-dns")]),
            body: Pdb {
                spec: PdbSpec {
                    max_unavailable: 1,
                    selector: dns_selector(),
                },
            },
        },
    );
    doc(
        &mut s,
        &format!(
            "The cluster DNS address every kubelet gives its pods ({dns}, the kubelets'\n\
             clusterDNS). Named kube-dns, as in every cluster since kube-dns: tools look it up\n\
             by that name.",
            dns = c.cluster_dns
        ),
        &service(c),
    );
    s
}

fn service(c: &ClusterInput) -> impl Serialize {
    #[derive(Serialize)]
    struct Port {
        name: &'static str,
        port: u16,
        protocol: &'static str,
        #[serde(rename = "targetPort")]
        target_port: u16,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        selector: BTreeMap<&'static str, &'static str>,
        #[serde(rename = "clusterIP")]
        cluster_ip: String,
        ports: Vec<Port>,
    }
    #[derive(Serialize)]
    struct Body {
        spec: Spec,
    }
    let mut m = meta(
        "kube-dns",
        true,
        &[
            ("k8s-app", "kube-dns"),
            ("kubernetes.io/cluster-service", "true"),
            ("kubernetes.io/name", "CoreDNS"),
        ],
    );
    m.annotations.insert("prometheus.io/port", "9153");
    m.annotations.insert("prometheus.io/scrape", "true");
    let port = |name, port, protocol| Port {
        name,
        port,
        protocol,
        target_port: port,
    };
    Object {
        api_version: "v1",
        kind: "Service",
        metadata: m,
        body: Body {
            spec: Spec {
                selector: dns_selector().match_labels,
                cluster_ip: c.cluster_dns.to_string(),
                ports: vec![
                    port("dns", 53, "UDP"),
                    port("dns-tcp", 53, "TCP"),
                    port("metrics", 9153, "TCP"),
                ],
            },
        },
    }
}

fn deployment(image: String) -> impl Serialize {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        replicas: u32,
        strategy: serde_json::Value,
        selector: Selector,
        template: Template,
    }
    #[derive(Serialize)]
    struct Template {
        metadata: TemplateMeta,
        spec: PodSpec,
    }
    #[derive(Serialize)]
    struct TemplateMeta {
        labels: BTreeMap<&'static str, &'static str>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct PodSpec {
        priority_class_name: &'static str,
        service_account_name: &'static str,
        affinity: serde_json::Value,
        tolerations: serde_json::Value,
        node_selector: BTreeMap<&'static str, &'static str>,
        containers: Vec<Container>,
        dns_policy: &'static str,
        volumes: serde_json::Value,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Container {
        name: &'static str,
        image: String,
        image_pull_policy: &'static str,
        resources: serde_json::Value,
        args: &'static [&'static str],
        volume_mounts: serde_json::Value,
        ports: serde_json::Value,
        security_context: serde_json::Value,
        liveness_probe: serde_json::Value,
        readiness_probe: serde_json::Value,
    }
    #[derive(Serialize)]
    struct Body {
        spec: Spec,
    }
    use serde_json::json;
    // Small leaves as JSON values (their keys sort the way kubeadm writes them, or order does
    // not matter); the structure above keeps the order a reader follows.
    Body {
        spec: Spec {
            replicas: 2,
            strategy: json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
            selector: dns_selector(),
            template: Template {
                metadata: TemplateMeta {
                    labels: dns_selector().match_labels,
                },
                spec: PodSpec {
                    priority_class_name: "system-cluster-critical",
                    service_account_name: "coredns",
                    affinity: json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchExpressions": [{"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]},
                            "topologyKey": "kubernetes.io/hostname"
                        }
                    }]}}),
                    tolerations: json!([
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
                    ]),
                    node_selector: [("kubernetes.io/os", "linux")].into_iter().collect(),
                    containers: vec![Container {
                        name: "coredns",
                        image,
                        image_pull_policy: "IfNotPresent",
                        resources: json!({"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}}),
                        args: &["-conf", "/etc/coredns/Corefile"],
                        volume_mounts: json!([{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}]),
                        ports: json!([
                            {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                            {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                            {"containerPort": 9153, "name": "metrics", "protocol": "TCP"}
                        ]),
                        security_context: json!({
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                            "readOnlyRootFilesystem": true
                        }),
                        liveness_probe: json!({
                            "httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                            "initialDelaySeconds": 60, "timeoutSeconds": 5,
                            "successThreshold": 1, "failureThreshold": 5
                        }),
                        readiness_probe: json!({"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}}),
                    }],
                    // Default: the node's resolvers (the kubelet's resolvConf), not itself.
                    dns_policy: "Default",
                    volumes: json!([{"name": "config-volume", "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}]),
                },
            },
        },
    }
}
