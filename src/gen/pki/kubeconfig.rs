//! kubeconfigs with embedded certificates: one per client certificate of the table that names
//! a kubeconfig (admin, super-admin, controller-manager, scheduler, kube-proxy, a kubelet per
//! worker). Written 0600 (they hold private keys), only when their content changes.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use serde::Serialize;

use crate::r#gen::pki::certs::Item;
use crate::r#gen::pki::{Action, Outcome, PkiError, kubeconfig_dir, par_map, pki_dir, sha256_hex};
use crate::r#gen::plan::spec::ClusterSpec;
use crate::r#gen::{MODE_SECRET, MODE_SECRET_DIR, Staged};

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Config {
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<ClusterEntry>>,
    contexts: Vec<Named<ContextEntry>>,
    current_context: String,
    users: Vec<Named<UserEntry>>,
    preferences: HashMap<String, String>,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: Cluster,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    certificate_authority_data: String,
    server: String,
}

#[derive(Serialize)]
struct ContextEntry {
    context: Context,
}

#[derive(Serialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Serialize)]
struct UserEntry {
    user: User,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate_data: String,
    client_key_data: String,
}

/// Render a kubeconfig for `user` that trusts `ca_pem` and presents `cert_pem`/`key_pem`.
pub fn render(
    spec: &ClusterSpec,
    reach: crate::r#gen::plan::spec::Reach,
    user: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let context = format!("{user}@{}", spec.name);
    let config = Config {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: spec.name.clone(),
            value: ClusterEntry {
                cluster: Cluster {
                    certificate_authority_data: b64(ca_pem),
                    server: spec.server_for(reach),
                },
            },
        }],
        contexts: vec![Named {
            name: context.clone(),
            value: ContextEntry {
                context: Context {
                    cluster: spec.name.clone(),
                    user: user.to_string(),
                },
            },
        }],
        current_context: context,
        users: vec![Named {
            name: user.to_string(),
            value: UserEntry {
                user: User {
                    client_certificate_data: b64(cert_pem),
                    client_key_data: b64(key_pem),
                },
            },
        }],
        preferences: HashMap::new(),
    };
    serde_yaml_ng::to_string(&config).expect("a kubeconfig of strings always serializes")
}

/// Write every kubeconfig of `items` under `<out>/kubeconfigs`, from the certificates and keys
/// in `<out>/pki` or `staged`, and the CA certificates in `ca_pems` (by CA name); staged too.
pub fn write_all(
    spec: &ClusterSpec,
    out: &Path,
    items: &[Item],
    ca_pems: &HashMap<String, String>,
    staged: &Staged,
) -> Result<Vec<Outcome>, PkiError> {
    let pki = pki_dir(out);
    let dir = kubeconfig_dir(out);
    staged.create_dir(&dir, MODE_SECRET_DIR)?;
    let with_kc: Vec<&Item> = items.iter().filter(|i| i.kubeconfig.is_some()).collect();
    let results = par_map(&with_kc, |item| {
        let file = item.kubeconfig.as_deref().expect("filtered on kubeconfig");
        let path = dir.join(file);
        // Certificates made in this run are staged, not yet in place.
        let read = |p: &Path| match staged.get(p) {
            Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            None => std::fs::read_to_string(p).map_err(|source| PkiError::Read {
                path: p.to_owned(),
                source,
            }),
        };
        let ca = ca_pems
            .get(item.ca.as_deref().unwrap_or_default())
            .expect("every CA of the table was loaded");
        let text = render(
            spec,
            item.reach,
            &item.cn,
            ca,
            &read(&item.cert_path(&pki))?,
            &read(&item.key_path(&pki))?,
        );
        let action = match std::fs::read(&path) {
            Ok(old) if old == text.as_bytes() => Action::Kept,
            Ok(_) => Action::Replaced,
            Err(_) => Action::Created,
        };
        if action != Action::Kept {
            staged.stage(&path, text.as_bytes(), MODE_SECRET)?;
        }
        Ok(Outcome {
            name: format!("kubeconfigs/{file}"),
            action,
            reason: match action {
                Action::Created => Some("missing".into()),
                Action::Replaced => Some("its certificate or endpoint changed".into()),
                _ => None,
            },
            sha256: Some(sha256_hex(text.as_bytes())),
        })
    });
    results.into_iter().collect()
}
