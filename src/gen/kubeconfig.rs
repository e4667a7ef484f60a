//! kubeconfigs with embedded certificates, one per client of the API server.
//!
//! [`TABLE`] names each file, the certificate it authenticates with and the user it names;
//! per-node rows are templates. A kubeconfig is rewritten only when its bytes would change, so a
//! re-run leaves the tree untouched.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;

use super::certs::Scope;
use super::pki::{Action, Decision, PkiError, pki_dir};
use super::spec::ClusterSpec;
use super::{MODE_SECRET, MODE_SECRET_DIR, create_dir, write_file};

/// One kubeconfig of the table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The file under `kubeconfigs/` (`{node}` filled in).
    pub file: &'static str,
    /// The certificate (a name of the certificate table) it authenticates with.
    pub cert: &'static str,
    /// The user entry's name.
    pub user: &'static str,
    /// Once per cluster or per worker.
    pub scope: Scope,
}

/// The kubeconfigs of a cluster.
pub const TABLE: &[Row] = &[
    Row {
        file: "admin.conf",
        cert: "admin",
        user: "kubernetes-admin",
        scope: Scope::Cluster,
    },
    Row {
        file: "super-admin.conf",
        cert: "super-admin",
        user: "kubernetes-super-admin",
        scope: Scope::Cluster,
    },
    Row {
        file: "controller-manager.conf",
        cert: "controller-manager",
        user: "system:kube-controller-manager",
        scope: Scope::Cluster,
    },
    Row {
        file: "scheduler.conf",
        cert: "scheduler",
        user: "system:kube-scheduler",
        scope: Scope::Cluster,
    },
    Row {
        file: "kube-proxy.conf",
        cert: "kube-proxy",
        user: "system:kube-proxy",
        scope: Scope::Cluster,
    },
    Row {
        file: "kubelet-{node}.conf",
        cert: "kubelet-client-{node}",
        user: "system:node:{node}",
        scope: Scope::Worker,
    },
];

/// `DIR/kubeconfigs`.
pub fn kubeconfig_dir(out: &Path) -> PathBuf {
    out.join("kubeconfigs")
}

/// Every kubeconfig of `spec`: (file name, certificate name, user).
pub fn expand(spec: &ClusterSpec) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for row in TABLE {
        let nodes: Vec<Option<&str>> = match row.scope {
            Scope::Cluster => vec![None],
            Scope::ControlPlane => spec
                .control_planes()
                .map(|n| Some(n.name.as_str()))
                .collect(),
            Scope::Worker => spec.workers().map(|n| Some(n.name.as_str())).collect(),
        };
        for n in nodes {
            let fill = |s: &str| n.map_or(s.to_string(), |n| s.replace("{node}", n));
            out.push((fill(row.file), fill(row.cert), fill(row.user)));
        }
    }
    out
}

#[derive(Serialize)]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: [Named<'a, ClusterEntry>; 1],
    contexts: [Named<'a, ContextEntry<'a>>; 1],
    #[serde(rename = "current-context")]
    current_context: &'a str,
    preferences: std::collections::BTreeMap<String, String>,
    users: [Named<'a, UserEntry>; 1],
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: ClusterData,
}

#[derive(Serialize)]
struct ClusterData {
    #[serde(rename = "certificate-authority-data")]
    ca: String,
    server: String,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    context: ContextData<'a>,
}

#[derive(Serialize)]
struct ContextData<'a> {
    cluster: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct UserEntry {
    user: UserData,
}

#[derive(Serialize)]
struct UserData {
    #[serde(rename = "client-certificate-data")]
    cert: String,
    #[serde(rename = "client-key-data")]
    key: String,
}

/// Render a kubeconfig (kubeadm's shape: one cluster, one user, one context).
pub fn render(
    spec: &ClusterSpec,
    user: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let context = format!("{user}@{}", spec.name);
    let doc = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: &spec.name,
            body: ClusterEntry {
                cluster: ClusterData {
                    ca: b64(ca_pem),
                    server: spec.api_server_url(),
                },
            },
        }],
        contexts: [Named {
            name: &context,
            body: ContextEntry {
                context: ContextData {
                    cluster: &spec.name,
                    user,
                },
            },
        }],
        current_context: &context,
        preferences: Default::default(),
        users: [Named {
            name: user,
            body: UserEntry {
                user: UserData {
                    cert: b64(cert_pem),
                    key: b64(key_pem),
                },
            },
        }],
    };
    serde_yaml_ng::to_string(&doc).expect("a kubeconfig of strings always serializes")
}

/// Write every kubeconfig of `spec` under `out/kubeconfigs` (0600: they embed keys), from the
/// certificates under `out/pki`. Unchanged files are left alone.
pub fn generate(out: &Path, spec: &ClusterSpec) -> Result<Vec<Decision>, PkiError> {
    let pki = pki_dir(out);
    let dir = kubeconfig_dir(out);
    create_dir(&dir, MODE_SECRET_DIR)?;
    let files = super::pki::files(out, spec);
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| PkiError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let ca = read(&pki.join("ca.crt"))?;
    let rows = expand(spec);
    let results = super::pki::par_map(&rows, |(file, cert, user)| -> Result<Decision, PkiError> {
        let (_, crt_path, key_path) = files
            .iter()
            .find(|(n, _, _)| n == cert)
            .expect("every kubeconfig row names a certificate of the table");
        let text = render(spec, user, &ca, &read(crt_path)?, &read(key_path)?);
        let path = dir.join(file);
        let old = std::fs::read(&path).ok();
        let action = match &old {
            Some(old) if old == text.as_bytes() => Action::Reused,
            Some(_) => Action::Replaced,
            None => Action::Created,
        };
        if action != Action::Reused {
            write_file(&path, text.as_bytes(), MODE_SECRET)?;
        }
        Ok(Decision {
            name: file.clone(),
            file: format!("kubeconfigs/{file}"),
            action,
            reason: match action {
                Action::Reused => String::new(),
                Action::Created => "missing".into(),
                Action::Replaced => "its certificate or the server changed".into(),
            },
        })
    });
    results.into_iter().collect()
}
