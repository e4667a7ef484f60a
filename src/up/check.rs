//! The check after each step: what "up" means for each component, asked the way an operator
//! would (NEXT-STEPS.md's commands), over TLS with the cluster's own certificates.
//!
//! Every probe returns `Ok(what it saw)` or `Err(why not yet)`; the caller retries until the
//! step's timeout and reports the last `Err`.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::unit::ServiceUnit;
use super::{CheckKind, Step, Tree, flag_value};
use crate::r#gen::configs::paths;
use crate::r#gen::spec::Node;

/// One probe's answer: what was seen, or why it is not healthy (yet).
pub type Probe = Result<String, String>;

/// Client credentials and the CA to trust, PEM.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// CA certificates to trust (none: only with `insecure`).
    pub ca: Vec<u8>,
    /// Client certificate followed by its key.
    pub identity: Option<Vec<u8>>,
    /// Accept any server certificate: kube-controller-manager and kube-scheduler serve
    /// `/healthz` with a self-signed certificate they make at start-up (no `--tls-cert-file` in
    /// their units), so there is nothing to verify it against. Only their health is read.
    pub insecure: bool,
}

impl Tls {
    /// From PEM files: the CA, and optionally a client certificate and its key.
    pub fn from_files(ca: &Path, cert_key: Option<(&Path, &Path)>) -> std::io::Result<Tls> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        let identity = match cert_key {
            Some((c, k)) => {
                let mut id = read(c)?;
                id.push(b'\n');
                id.extend(read(k)?);
                Some(id)
            }
            None => None,
        };
        Ok(Tls {
            ca: read(ca)?,
            identity,
            insecure: false,
        })
    }
}

/// An HTTP response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

/// `method url` (with a JSON body, if any) over TLS per `tls`.
pub fn request(
    method: reqwest::Method,
    url: &str,
    tls: &Tls,
    body: Option<(&str, String)>,
    timeout: Duration,
) -> Result<Response, String> {
    crate::fetch::install_crypto_provider();
    let mut b = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .tls_built_in_root_certs(false);
    if tls.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    if !tls.ca.is_empty() {
        for cert in
            reqwest::Certificate::from_pem_bundle(&tls.ca).map_err(|e| format!("CA: {e}"))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(id) = &tls.identity {
        b = b.identity(
            reqwest::Identity::from_pem(id).map_err(|e| format!("client certificate: {e}"))?,
        );
    }
    let client = b.build().map_err(|e| format!("HTTP client: {e}"))?;
    let mut req = client.request(method, url);
    if let Some((content_type, body)) = body {
        req = req.header("Content-Type", content_type).body(body);
    }
    let resp = req.send().map_err(|e| crate::util::chain(&e))?;
    let status = resp.status().as_u16();
    let body = resp.text().map_err(|e| crate::util::chain(&e))?;
    Ok(Response { status, body })
}

/// `GET url` expecting 200; the body (trimmed, first line) is what was seen.
pub fn get_ok(url: &str, tls: &Tls, timeout: Duration) -> Probe {
    let r = request(reqwest::Method::GET, url, tls, None, timeout)?;
    let first = r.body.trim().lines().next().unwrap_or("").to_owned();
    if r.status == 200 {
        Ok(format!(
            "GET {url}: {}",
            if first.is_empty() {
                "200".into()
            } else {
                first
            }
        ))
    } else {
        Err(format!("GET {url}: HTTP {} {}", r.status, first))
    }
}

/// etcd's `GET /health` on a client URL with the healthcheck client certificate: healthy when
/// it answers `{"health":"true"}` (what `etcdctl endpoint health` asks too).
pub fn etcd_health(client_url: &str, tls: &Tls, timeout: Duration) -> Probe {
    let url = format!("{}/health", client_url.trim_end_matches('/'));
    let r = request(reqwest::Method::GET, &url, tls, None, timeout)?;
    let compact: String = r.body.chars().filter(|c| !c.is_whitespace()).collect();
    if r.status == 200 && compact.contains("\"health\":\"true\"") {
        Ok(format!("GET {url}: {}", r.body.trim()))
    } else {
        Err(format!("GET {url}: HTTP {} {}", r.status, r.body.trim()))
    }
}

/// A kubeconfig's first cluster and user, enough to talk to the API server as that user.
#[derive(Debug, Clone)]
pub struct Kube {
    /// The API server URL.
    pub server: String,
    /// TLS material for it.
    pub tls: Tls,
}

impl Kube {
    /// Read a kubeconfig with embedded certificates (as `kbin gen` writes them).
    pub fn load(path: &Path) -> Result<Kube, String> {
        #[derive(Deserialize)]
        struct Config {
            clusters: Vec<Named<ClusterEntry>>,
            users: Vec<Named<UserEntry>>,
        }
        #[derive(Deserialize)]
        struct Named<T> {
            #[serde(flatten)]
            value: T,
        }
        #[derive(Deserialize)]
        struct ClusterEntry {
            cluster: Cluster,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Cluster {
            server: String,
            certificate_authority_data: String,
        }
        #[derive(Deserialize)]
        struct UserEntry {
            user: User,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct User {
            client_certificate_data: String,
            client_key_data: String,
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: Config =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let (Some(cl), Some(us)) = (c.clusters.first(), c.users.first()) else {
            return Err(format!("{}: no cluster or no user", path.display()));
        };
        let b64 = |s: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let mut id = b64(&us.value.user.client_certificate_data)?;
        id.push(b'\n');
        id.extend(b64(&us.value.user.client_key_data)?);
        Ok(Kube {
            server: cl.value.cluster.server.trim_end_matches('/').to_owned(),
            tls: Tls {
                ca: b64(&cl.value.cluster.certificate_authority_data)?,
                identity: Some(id),
                insecure: false,
            },
        })
    }

    /// `method` on an API path.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, String)>,
        timeout: Duration,
    ) -> Result<Response, String> {
        request(
            method,
            &format!("{}{path}", self.server),
            &self.tls,
            body,
            timeout,
        )
    }

    /// `/readyz`: `ok` once every post-start hook ran.
    pub fn readyz(&self, timeout: Duration) -> Probe {
        get_ok(&format!("{}/readyz", self.server), &self.tls, timeout)
    }

    /// The holder of lease `name` in kube-system (a controller manager or scheduler that won
    /// its leader election).
    pub fn lease_holder(&self, name: &str, timeout: Duration) -> Probe {
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}");
        let r = self.call(reqwest::Method::GET, &path, None, timeout)?;
        if r.status != 200 {
            return Err(format!("GET {path}: HTTP {}", r.status));
        }
        let v: serde_json::Value =
            serde_json::from_str(&r.body).map_err(|e| format!("GET {path}: {e}"))?;
        match v.pointer("/spec/holderIdentity").and_then(|h| h.as_str()) {
            Some(h) if !h.is_empty() => Ok(format!("lease kube-system/{name} held by {h}")),
            _ => Err(format!("lease kube-system/{name} has no holder yet")),
        }
    }

    /// The Node `name`: `Ok(Some(pod CIDR))` once it exists (the CIDR may be empty), `Ok(None)`
    /// while it does not; and whether it is Ready.
    pub fn node(&self, name: &str, timeout: Duration) -> Result<Option<NodeView>, String> {
        let path = format!("/api/v1/nodes/{name}");
        let r = self.call(reqwest::Method::GET, &path, None, timeout)?;
        match r.status {
            404 => Ok(None),
            200 => {
                let v: serde_json::Value =
                    serde_json::from_str(&r.body).map_err(|e| format!("GET {path}: {e}"))?;
                let ready = v
                    .pointer("/status/conditions")
                    .and_then(|c| c.as_array())
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .map(|c| {
                        (
                            c["status"] == "True",
                            c["message"].as_str().unwrap_or("").to_owned(),
                        )
                    });
                Ok(Some(NodeView {
                    pod_cidr: v
                        .pointer("/spec/podCIDR")
                        .and_then(|c| c.as_str())
                        .unwrap_or("")
                        .to_owned(),
                    ready: ready.as_ref().is_some_and(|r| r.0),
                    message: ready.map(|r| r.1).unwrap_or_default(),
                }))
            }
            s => Err(format!("GET {path}: HTTP {s}")),
        }
    }
}

/// What the check reads of a Node.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// `spec.podCIDR` (empty when unset).
    pub pod_cidr: String,
    /// Its Ready condition is True.
    pub ready: bool,
    /// The Ready condition's message.
    pub message: String,
}

/// `ctr --address SOCKET version`: containerd answers on its socket (server version shown).
pub fn containerd(ctr: &Path, socket: &str, timeout: Duration) -> Probe {
    let out = run_with_timeout(
        std::process::Command::new(ctr).args(["--address", socket, "version"]),
        timeout,
    )?;
    let server = out
        .split("Server:")
        .nth(1)
        .and_then(|s| s.lines().find(|l| l.trim_start().starts_with("Version:")))
        .map(|l| l.trim().to_owned());
    match server {
        Some(v) => Ok(format!(
            "{} --address {socket} version: server {v}",
            ctr.display()
        )),
        None => Err(format!(
            "{} --address {socket} version: no server answer",
            ctr.display()
        )),
    }
}

/// Run `cmd` through [`crate::util::run_with_timeout`] (both pipes drained while it runs, killed
/// after `timeout`): its stdout on success, its stderr (or how it ended) otherwise.
pub fn run_with_timeout(
    cmd: &mut std::process::Command,
    timeout: Duration,
) -> Result<String, String> {
    let out = crate::util::run_with_timeout(cmd, timeout).map_err(|e| crate::util::chain(&e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(if err.is_empty() {
            format!("{:?}: {}", cmd.get_program(), out.status)
        } else {
            err
        })
    }
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
            CheckKind::Oneshot => format!("{} ran to completion (exit 0)", unit.command_line()),
            CheckKind::ApiLb => format!("GET {}/readyz through the load balancer", lb_url()),
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
                etcd_health(&etcd_url(unit), &tls, t)
            }
            CheckKind::Readyz => self.admin()?.readyz(t),
            CheckKind::HealthzAndLease {
                port,
                lease,
                default_service_account,
            } => self.healthz_and_lease(unit, port, lease, default_service_account, t),
            CheckKind::ContainerdSocket => {
                let ctr = unit.program().with_file_name("ctr");
                containerd(&ctr, &cri_socket(), t)
            }
            CheckKind::NodeReady => self.node_ready(t, notes),
            CheckKind::ProxyHealthz => get_ok("http://127.0.0.1:10256/healthz", &Tls::default(), t),
            // Nothing runs to ask: what it set up stays until its ExecStop=.
            CheckKind::Oneshot => Ok("set up (its ExecStart= exited 0)".into()),
            CheckKind::ApiLb => {
                // Its certificate is the API servers' (passed through): not checked here, the
                // question is whether some API server answers through it.
                let tls = Tls {
                    insecure: true,
                    ..Tls::default()
                };
                get_ok(&format!("{}/readyz", lb_url()), &tls, t)
            }
        }
    }

    /// The controller manager's or scheduler's /healthz, then who holds its leader lease,
    /// then (the controller manager) the ServiceAccount its controllers make first.
    fn healthz_and_lease(
        &self,
        unit: &ServiceUnit,
        port: u16,
        lease: &str,
        default_service_account: bool,
        t: Duration,
    ) -> Probe {
        let tls = Tls {
            insecure: true,
            ..Tls::default()
        };
        let seen = get_ok(&format!("{}/healthz", secure_url(unit, port)), &tls, t)?;
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

    /// This node's Node registered (given its pod subnet if it has none) and Ready.
    fn node_ready(&self, t: Duration, notes: &mut Vec<String>) -> Probe {
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
}

fn lb_url() -> String {
    format!(
        "https://127.0.0.1:{}",
        crate::r#gen::plan::spec::API_LB_PORT
    )
}

pub(super) fn cri_socket() -> String {
    paths::CRI_SOCKET.trim_start_matches("unix://").to_owned()
}

/// etcd's loopback client URL when it listens there (it always does in kbin's units), else the
/// advertised one.
pub(super) fn etcd_url(unit: &ServiceUnit) -> String {
    let listen = flag_value(&unit.exec_start, "listen-client-urls").unwrap_or("");
    listen
        .split(',')
        .find(|u| u.contains("127.0.0.1") || u.contains("[::1]"))
        .or_else(|| flag_value(&unit.exec_start, "advertise-client-urls"))
        .unwrap_or("https://127.0.0.1:2379")
        .to_owned()
}

/// `https://<bind-address>:<secure-port>` of a controller manager or scheduler unit.
pub(super) fn secure_url(unit: &ServiceUnit, default_port: u16) -> String {
    let bind = flag_value(&unit.exec_start, "bind-address").unwrap_or("127.0.0.1");
    let bind = if bind == "0.0.0.0" { "127.0.0.1" } else { bind };
    let port = flag_value(&unit.exec_start, "secure-port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_port);
    format!("https://{bind}:{port}")
}
