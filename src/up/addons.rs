//! After a worker's steps: apply the cluster's add-ons (`DIR/addons/*.yaml`, today CoreDNS)
//! and wait for their rollout. kbin's own client, as for the checks: a server-side apply
//! (`PATCH` with `application/apply-patch+yaml`, field manager `kbin`) per object, the same
//! request `kubectl apply --server-side --field-manager=kbin` makes, so that applying the same
//! file again changes nothing and a field someone else changed since is reported, not
//! overwritten.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::check::Kube;
use super::steps::{Progress, step_error};
use super::{StepReport, Tree, UpError, interrupted};
use crate::r#gen::node::addons;
use crate::r#gen::spec::Node;

/// The objects kbin's add-ons hold: kind → (resource, namespaced). Anything else in `addons/`
/// is refused by name (apply it with kubectl).
const KINDS: &[(&str, &str, bool)] = &[
    ("ServiceAccount", "serviceaccounts", true),
    ("ConfigMap", "configmaps", true),
    ("Service", "services", true),
    ("Deployment", "deployments", true),
    ("PodDisruptionBudget", "poddisruptionbudgets", true),
    ("ClusterRole", "clusterroles", false),
    ("ClusterRoleBinding", "clusterrolebindings", false),
];

/// One object of an add-on file, with the URL it is applied at.
#[derive(Debug)]
struct Object {
    /// `Deployment kube-system/coredns`.
    label: String,
    /// `/apis/apps/v1/namespaces/kube-system/deployments/coredns`.
    path: String,
    body: Value,
}

/// The objects of one YAML file, in order.
fn objects(file: &Path) -> Result<Vec<Object>, String> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).map_err(|e| format!("{}: {e}", file.display()))?;
        if v.is_null() {
            continue;
        }
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        let Some((_, resource, namespaced)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
            return Err(format!(
                "{}: {kind:?} {name:?} is not a kind kbin up applies ({}); apply it with kubectl",
                file.display(),
                KINDS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            ));
        };
        if name.is_empty() || api_version.is_empty() {
            return Err(format!(
                "{}: a {kind} without apiVersion or metadata.name",
                file.display()
            ));
        }
        let base = match api_version.split_once('/') {
            None => format!("/api/{api_version}"),
            Some(_) => format!("/apis/{api_version}"),
        };
        let (path, label) = match (namespaced, v["metadata"]["namespace"].as_str()) {
            (true, ns) => {
                let ns = ns.unwrap_or("default");
                (
                    format!("{base}/namespaces/{ns}/{resource}/{name}"),
                    format!("{kind} {ns}/{name}"),
                )
            }
            (false, _) => (
                format!("{base}/{resource}/{name}"),
                format!("{kind} {name}"),
            ),
        };
        out.push(Object {
            label,
            path,
            body: v,
        });
    }
    Ok(out)
}

/// The add-on files of the tree, sorted (none in a tree made before add-ons existed).
pub(super) fn files(tree: &Tree) -> Vec<std::path::PathBuf> {
    let dir = tree.out.join(addons::DIR);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Server-side apply of one object: `created`, `configured` or `unchanged` (its
/// resourceVersion did not move).
fn apply_one(kube: &Kube, o: &Object, t: Duration) -> Result<&'static str, String> {
    let before = kube.call(reqwest::Method::GET, &o.path, None, t)?;
    let old_version = match before.status {
        200 => serde_json::from_str::<Value>(&before.body)
            .ok()
            .and_then(|v| v["metadata"]["resourceVersion"].as_str().map(str::to_owned)),
        404 => None,
        s => return Err(format!("GET {}: HTTP {s} {}", o.label, before.body.trim())),
    };
    let r = kube.call(
        reqwest::Method::PATCH,
        &format!("{}?fieldManager={}", o.path, addons::FIELD_MANAGER),
        Some(("application/apply-patch+yaml", o.body.to_string())),
        t,
    )?;
    match r.status {
        200 | 201 => {}
        409 => {
            return Err(format!(
                "{} was changed by someone else since kbin applied it (a conflict, left as it is): {}; \
                 to put kbin's version back: kubectl apply --server-side --field-manager={} --force-conflicts -f addons/",
                o.label,
                message(&r.body),
                addons::FIELD_MANAGER
            ));
        }
        s => return Err(format!("apply {}: HTTP {s} {}", o.label, message(&r.body))),
    }
    let new_version = serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["metadata"]["resourceVersion"].as_str().map(str::to_owned));
    Ok(match old_version {
        None => "created",
        Some(old) if Some(&old) == new_version.as_ref() => "unchanged",
        Some(_) => "configured",
    })
}

/// The `message` of a Status body, else the body.
fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// Whether Deployment `ns/name` rolled out, as `kubectl rollout status` decides it: the
/// controller saw the latest generation, and every replica is updated and available.
fn rollout(kube: &Kube, ns: &str, name: &str, t: Duration) -> Result<String, String> {
    let r = kube.call(
        reqwest::Method::GET,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
        None,
        t,
    )?;
    if r.status != 200 {
        return Err(format!(
            "GET Deployment {ns}/{name}: HTTP {} {}",
            r.status,
            message(&r.body)
        ));
    }
    let d: Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let want = n(&d["spec"]["replicas"]);
    let (generation, observed) = (
        n(&d["metadata"]["generation"]),
        n(&d["status"]["observedGeneration"]),
    );
    let (updated, available) = (
        n(&d["status"]["updatedReplicas"]),
        n(&d["status"]["availableReplicas"]),
    );
    if observed >= generation && updated == want && available == want && want > 0 {
        Ok(format!(
            "Deployment {ns}/{name}: {available}/{want} replicas available"
        ))
    } else {
        Err(format!(
            "Deployment {ns}/{name}: {available}/{want} available, {updated} updated"
        ))
    }
}

/// Apply every add-on file with admin.conf, then wait up to `timeout` for CoreDNS's rollout.
pub(super) fn apply(
    tree: &Tree,
    node: &Node,
    timeout: Duration,
    run_dir: &Path,
    progress: &mut Progress,
) -> Result<Option<StepReport>, UpError> {
    let files = files(tree);
    if files.is_empty() {
        return Ok(None);
    }
    let began = Instant::now();
    let log = run_dir.join("addons.log");
    let fail = |what: String| {
        step_error(
            node,
            "addons",
            what,
            &log,
            "kubectl -n kube-system get deployment,pods -l k8s-app=kube-dns -o wide; kubectl -n kube-system describe pods -l k8s-app=kube-dns".into(),
        )
    };
    let kube = Kube::load(&tree.out.join("kubeconfigs/admin.conf")).map_err(&fail)?;
    let t = Duration::from_secs(10);
    let mut notes = Vec::new();
    for f in &files {
        for o in objects(f).map_err(&fail)? {
            match apply_one(&kube, &o, t) {
                Ok(what) => notes.push(format!("{}: {what}", o.label)),
                Err(e) if e.contains("a conflict") => notes.push(format!("warning: {e}")),
                Err(e) => return Err(fail(e)),
            }
        }
    }
    let _ = std::fs::write(&log, notes.join("\n") + "\n");
    let (ns, name) = addons::COREDNS_DEPLOYMENT;
    progress.line(format!(
        "addons: applied {} object(s) from {} — waiting for Deployment {ns}/{name} (up to {}s)",
        notes.len(),
        tree.out.join(addons::DIR).display(),
        timeout.as_secs()
    ));
    let deadline = began + timeout;
    let mut last;
    loop {
        if interrupted() {
            return Err(fail(
                "interrupted while waiting for the add-ons' rollout (what was applied stays)"
                    .into(),
            ));
        }
        match rollout(&kube, ns, name, t) {
            Ok(seen) => {
                let secs = began.elapsed().as_secs_f64();
                progress.line(format!("addons: rolled out in {secs:.1}s — {seen}"));
                return Ok(Some(StepReport {
                    component: "addons".into(),
                    action: "applied",
                    pid: None,
                    check: seen,
                    seconds: secs,
                    notes,
                }));
            }
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "not rolled out after {}s; last answer: {last}",
                timeout.as_secs()
            )));
        }
        progress.waiting(format!("addons: {last}"));
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_object_is_applied_at_its_own_url_and_an_unknown_kind_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.yaml");
        std::fs::write(
            &f,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n  namespace: kube-system\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: system:coredns\n",
        )
        .unwrap();
        let o = objects(&f).unwrap();
        assert_eq!(
            o[0].path,
            "/api/v1/namespaces/kube-system/services/kube-dns"
        );
        assert_eq!(
            o[1].path,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns"
        );
        std::fs::write(&f, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n").unwrap();
        let e = objects(&f).unwrap_err();
        assert!(
            e.contains("\"Secret\" \"s\" is not a kind kbin up applies"),
            "{e}"
        );
    }
}
