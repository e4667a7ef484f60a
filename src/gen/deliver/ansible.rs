//! `ansible/`: an Ansible inventory and playbooks that deploy the generated tree onto its
//! machines and upgrade it later, with ansible-core's builtin modules only (kbin grows no SSH
//! fan-out of its own).
//!
//! What differs between clusters is data, rendered with serde into `inventory.yml`: the hosts
//! (`ansible_host` = node IP), the groups `etcd`, `control_plane` and `workers`, each host's
//! archives (its node tarball and the shared binaries bundles of its roles, with their sha256) and
//! the files it installs from them, each with its mode and the services that read it (so a
//! service restarts only when one of its files changed). Nothing secret is inline: keys stay in
//! the node tarballs. The playbooks themselves (`site.yml`, `upgrade.yml` and the task files they
//! import) are the same for every cluster and are written as they are.

use std::collections::BTreeMap;
use std::path::Path;

use semver::Version;

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use crate::r#gen::Staged;
use crate::r#gen::node::configs::ClusterInput;
use crate::r#gen::pki::certs::{Id, on_node_cert, on_node_key, on_node_kubeconfig};

/// `ansible/` in the output directory.
pub const DIR: &str = "ansible";

/// The playbooks and task files, written as they are (relative to `ansible/`).
pub const PLAYBOOKS: &[(&str, &str)] = &[
    ("site.yml", include_str!("ansible/site.yml")),
    ("upgrade.yml", include_str!("ansible/upgrade.yml")),
    ("backup.yml", include_str!("ansible/backup.yml")),
    ("restore.yml", include_str!("ansible/restore.yml")),
    ("remove.yml", include_str!("ansible/remove.yml")),
    ("tasks/stage.yml", include_str!("ansible/tasks/stage.yml")),
    (
        "tasks/install.yml",
        include_str!("ansible/tasks/install.yml"),
    ),
    ("tasks/start.yml", include_str!("ansible/tasks/start.yml")),
    ("tasks/addons.yml", include_str!("ansible/tasks/addons.yml")),
    (
        "files/kbin-node.py",
        include_str!("ansible/files/kbin-node.py"),
    ),
    ("ansible.cfg", include_str!("ansible/ansible.cfg")),
];

/// An archive a host gets: copied to `/var/lib/kbin/dist/<name>.tar.gz`, checked against
/// `sha256`, unpacked into `/var/lib/kbin/stage/<stage>/`.
#[derive(Debug, Clone, Serialize)]
pub struct Archive {
    /// Its name on the host (`node`, `worker-amd64-binaries`).
    pub name: String,
    /// Its path relative to the cluster directory.
    pub src: String,
    /// Hex sha256 of its bytes.
    pub sha256: String,
    /// The directory it is unpacked into, under `/var/lib/kbin/stage`: `<name>-<digest prefix>`.
    /// Named by content because Ansible's `unarchive` cannot see that a file changed when its
    /// size and mtime did not (kbin's archives are reproducible: every mtime is 0), so a new
    /// archive unpacked over an old one's directory would leave the old binaries in place.
    pub stage: String,
}

impl Archive {
    /// The archive `name` at `src` (relative to the cluster directory) with digest `sha256`.
    pub fn new(name: String, src: String, sha256: String) -> Archive {
        let stage = format!("{name}-{}", &sha256[..sha256.len().min(16)]);
        Archive {
            name,
            src,
            sha256,
            stage,
        }
    }
}

/// A file a host installs from one of its archives.
#[derive(Debug, Clone, Serialize)]
pub struct HostFile {
    /// Its path relative to `/` (and to the archive's root).
    pub path: String,
    /// Its mode, in octal (`"0644"`).
    pub mode: String,
    /// The [`Archive::name`] it comes from (unpacked into that archive's [`Archive::stage`]).
    pub archive: String,
    /// A private key or a kubeconfig with one: never shown by `--diff`.
    pub secret: bool,
    /// What a change to it must be followed by: services (`etcd`, `kubelet`, …) that read it,
    /// `modules` (load kernel modules), `sysctl` (apply sysctls) or `images` (import the image
    /// archives into containerd).
    pub restarts: Vec<String>,
}

/// One node as the inventory describes it.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// The node's name (the inventory hostname).
    pub name: String,
    /// Its address.
    pub ip: std::net::IpAddr,
    /// Runs etcd and the control plane.
    pub control_plane: bool,
    /// Runs containerd, kubelet and kube-proxy.
    pub worker: bool,
    /// Its pod subnet (the Node's `spec.podCIDR`).
    pub pod_subnet: String,
    /// Its archives.
    pub archives: Vec<Archive>,
    /// Its files, sorted by path.
    pub files: Vec<HostFile>,
}

/// A node the tree had and no longer has: `remove.yml` drains and deletes its Node, removes its
/// etcd member and stops its services (the inventory's `kbin_removed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Removed {
    /// Its name (its Node's, its etcd member's).
    pub name: String,
    /// Its address.
    pub ip: String,
    /// It ran an etcd member and the control plane.
    pub control_plane: bool,
    /// It ran a kubelet.
    pub worker: bool,
}

/// The nodes the inventory under `out` lists (and those it already listed as removed) that
/// `c` no longer has, sorted by name. Kept from run to run until a node comes back: remove.yml
/// skips what is already gone, so running it late or twice is harmless.
pub fn removed_nodes(out: &Path, c: &ClusterInput) -> Vec<Removed> {
    let Ok(text) = std::fs::read_to_string(out.join(DIR).join("inventory.yml")) else {
        return Vec::new();
    };
    let Ok(inv) = serde_yaml_ng::from_str::<Value>(&text) else {
        return Vec::new();
    };
    let all = &inv["all"];
    let member = |group: &str, name: &str| {
        all["children"][group]["hosts"]
            .as_mapping()
            .is_some_and(|m| m.contains_key(name))
    };
    let mut found: BTreeMap<String, Removed> = BTreeMap::new();
    if let Some(hosts) = all["hosts"].as_mapping() {
        for (name, vars) in hosts {
            let (Some(name), Some(ip)) = (name.as_str(), vars["kbin_node_ip"].as_str()) else {
                continue;
            };
            found.insert(
                name.to_owned(),
                Removed {
                    name: name.to_owned(),
                    ip: ip.to_owned(),
                    control_plane: member("control_plane", name),
                    worker: member("workers", name),
                },
            );
        }
    }
    if let Ok(before) =
        serde_yaml_ng::from_value::<Vec<Removed>>(all["vars"]["kbin_removed"].clone())
    {
        for r in before {
            found.entry(r.name.clone()).or_insert(r);
        }
    }
    found
        .into_values()
        .filter(|r| !c.nodes.iter().any(|n| n.name == r.name))
        .collect()
}

/// The group remove.yml reaches the removed machines through (empty in the inventory).
pub const REMOVED_GROUP: &str = "kbin_removed_hosts";

/// Each node's pod subnet (`kbin_pod_subnet`) as the inventory under `out` lists it.
pub fn deployed_pod_subnets(out: &Path) -> BTreeMap<String, String> {
    let inv = std::fs::read_to_string(out.join(DIR).join("inventory.yml"))
        .ok()
        .and_then(|t| serde_yaml_ng::from_str::<Value>(&t).ok());
    let mut found = BTreeMap::new();
    if let Some(hosts) = inv.as_ref().and_then(|i| i["all"]["hosts"].as_mapping()) {
        for (name, vars) in hosts {
            if let (Some(name), Some(sub)) = (name.as_str(), vars["kbin_pod_subnet"].as_str()) {
                found.insert(name.to_owned(), sub.to_owned());
            }
        }
    }
    found
}

/// Whether `text` names `path` as a whole path (not as the prefix of a longer one:
/// `/usr/local/bin/containerd` is not named by `/usr/local/bin/containerd-shim-runc-v2`).
pub fn mentions(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(i, _)| {
        !text[i + path.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    })
}

/// The services among `units` (name, unit text, texts of the files its unit names) that read
/// the file at absolute `path`: the unit itself, a file its unit names, or a file one of those
/// names (a kubeconfig named by a config).
pub fn readers(path: &str, units: &[(String, String, Vec<String>)]) -> Vec<String> {
    units
        .iter()
        .filter(|(name, text, refs)| {
            path == crate::r#gen::node::configs::paths::unit(name)
                || mentions(text, path)
                || refs.iter().any(|r| mentions(r, path))
        })
        .map(|(name, _, _)| name.clone())
        .collect()
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_yaml_ng::to_value(v).expect("inventory structs of strings always serialize")
}

/// The inventory variable recording the versions a tree was generated for (`kubernetes` and
/// each component): what the next `kbin gen cluster` over the tree upgrades from.
pub const VERSIONS_VAR: &str = "kbin_versions";

/// `<out>/ansible/inventory.yml`.
pub fn inventory_path(out: &Path) -> std::path::PathBuf {
    out.join(DIR).join("inventory.yml")
}

/// The versions the tree in `out` was last generated for, from its `versions.toml` (`None`:
/// no record, a tree from before kbin wrote it, or one kbin cannot read), as `kubernetes` and
/// each component.
pub fn deployed_versions(out: &Path) -> Option<BTreeMap<String, Version>> {
    let r = crate::r#gen::plan::versions::Record::load(out).ok()??;
    let mut m = r.components;
    m.insert("kubernetes".into(), r.kubernetes);
    Some(m)
}

/// The version-skew rules an upgrade from `old` (a tree's [`deployed_versions`]) to `new`
/// breaks, one sentence each: Kubernetes moves one minor at a time, and no kubelet is ever
/// newer than the API server it talks to (upgrade.yml upgrades the control planes first, so the
/// new kube-apiserver meets the old kubelets). Source: https://kubernetes.io/releases/version-skew-policy/
pub fn upgrade_skew(
    old: &BTreeMap<String, Version>,
    new: &crate::r#gen::plan::versions::Versions,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(o) = old.get("kubernetes") {
        let n = &new.kubernetes;
        if n.major != o.major || n.minor > o.minor + 1 {
            out.push(format!(
                "Kubernetes {o} to {n} skips minors: upgrade one minor at a time ({}.{} first)",
                o.major,
                o.minor + 1
            ));
        }
    }
    let minor = |v: &Version| (v.major, v.minor);
    if let (Some(kubelet), Some(api)) = (old.get("kubelet"), new.components.get("kube-apiserver"))
        && minor(api) < minor(kubelet)
    {
        out.push(format!(
            "kube-apiserver {api} would be older than the kubelets {kubelet} still running while the control planes are replaced: a kubelet is never newer than the API server"
        ));
    }
    if let (Some(kubelet), Some(api)) = (
        new.components.get("kubelet"),
        new.components.get("kube-apiserver"),
    ) && minor(api) < minor(kubelet)
    {
        out.push(format!(
            "kubelet {kubelet} is newer than kube-apiserver {api}: a kubelet is never newer than the API server"
        ));
    }
    out
}

/// `ansible/inventory.yml` for `hosts`, generated for `v`.
pub fn inventory(
    c: &ClusterInput,
    v: &crate::r#gen::plan::versions::Versions,
    hosts: &[HostPlan],
    removed: &[Removed],
) -> String {
    let mut vars = Mapping::new();
    vars.insert(s("ansible_user"), s("root"));
    // One SSH round trip per task instead of three.
    vars.insert(s("ansible_pipelining"), Value::Bool(true));
    vars.insert(s("kbin_cluster"), s(&c.name));
    vars.insert(s("kbin_host_profile"), s(c.host_profile.name()));
    vars.insert(s("kbin_tree"), s("{{ inventory_dir }}/.."));
    // Several control planes: each worker's kbin-apiserver-lb in front of them.
    vars.insert(s("kbin_api_lb"), Value::Bool(c.node_local_lb()));
    for (k, v) in [
        ("kbin_etcd_ca", on_node_cert(Id::EtcdCa)),
        (
            "kbin_etcd_client_cert",
            on_node_cert(Id::EtcdHealthcheckClient),
        ),
        (
            "kbin_etcd_client_key",
            on_node_key(Id::EtcdHealthcheckClient),
        ),
        ("kbin_admin_kubeconfig", on_node_kubeconfig(Id::Admin)),
        (
            "kbin_super_admin_kubeconfig",
            on_node_kubeconfig(Id::SuperAdmin),
        ),
    ] {
        vars.insert(s(k), s(&v));
    }
    let modules: Vec<Value> = crate::r#gen::node::configs::modules_load()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(s)
        .collect();
    vars.insert(s("kbin_kernel_modules"), Value::Sequence(modules));
    let mut versions = Mapping::new();
    versions.insert(s("kubernetes"), s(&v.kubernetes.to_string()));
    for (k, ver) in &v.components {
        versions.insert(s(k), s(&ver.to_string()));
    }
    vars.insert(s(VERSIONS_VAR), Value::Mapping(versions));
    // Not hosts (every play of site.yml would reach them): remove.yml adds them itself.
    vars.insert(s("kbin_removed"), to_value(&removed));

    let mut all_hosts = Mapping::new();
    for h in hosts {
        let mut hv = Mapping::new();
        hv.insert(s("ansible_host"), s(&h.ip.to_string()));
        // The node's own address, apart from ansible_host (which a user may point elsewhere,
        // e.g. at a bastion's forward): the other nodes route its pod subnet via it.
        hv.insert(s("kbin_node_ip"), s(&h.ip.to_string()));
        hv.insert(s("kbin_pod_subnet"), s(&h.pod_subnet));
        hv.insert(s("kbin_archives"), to_value(&h.archives));
        hv.insert(s("kbin_files"), to_value(&h.files));
        all_hosts.insert(s(&h.name), Value::Mapping(hv));
    }
    let group = |pick: &dyn Fn(&HostPlan) -> bool| {
        let mut members = Mapping::new();
        for h in hosts.iter().filter(|h| pick(h)) {
            members.insert(s(&h.name), Value::Null);
        }
        let mut g = Mapping::new();
        g.insert(s("hosts"), Value::Mapping(members));
        Value::Mapping(g)
    };
    let mut children = Mapping::new();
    // Every control plane runs an etcd member (the generated units say so).
    children.insert(s("etcd"), group(&|h| h.control_plane));
    children.insert(s("control_plane"), group(&|h| h.control_plane));
    children.insert(s("workers"), group(&|h| h.worker));
    // Empty here: remove.yml puts the removed machines in it (add_host) for the time of its
    // run, and the upgrade.yml it imports leaves them out.
    children.insert(s(REMOVED_GROUP), group(&|_| false));
    let mut all = Mapping::new();
    all.insert(s("vars"), Value::Mapping(vars));
    all.insert(s("hosts"), Value::Mapping(all_hosts));
    all.insert(s("children"), Value::Mapping(children));
    let mut root = Mapping::new();
    root.insert(s("all"), Value::Mapping(all));
    let yaml = serde_yaml_ng::to_string(&Value::Mapping(root))
        .expect("a mapping of strings always serializes");
    format!(
        "---\n# Ansible inventory of cluster \"{}\", generated by kbin (re-run `kbin gen cluster` rather\n\
         # than editing it). One host per node; ansible_host is the node's address.\n\
         #   ansible-playbook -i ansible/inventory.yml ansible/site.yml      deploy, or converge\n\
         #   ansible-playbook -i ansible/inventory.yml ansible/upgrade.yml   after a new toolchain\n\
         #   ansible-playbook -i ansible/inventory.yml ansible/remove.yml    after nodes left (kbin_removed)\n\
         # kbin_files: what each host installs from its archives, and what a change to each file\n\
         # restarts (or reloads). Nothing secret is here: keys travel inside the node tarballs.\n{yaml}",
        c.name
    )
}

/// Stage `ansible/` (inventory and playbooks) under `out`.
pub fn stage(
    out: &Path,
    c: &ClusterInput,
    v: &crate::r#gen::plan::versions::Versions,
    hosts: &[HostPlan],
    staged: &Staged,
) -> Result<(), crate::r#gen::WriteError> {
    let dir = out.join(DIR);
    let removed = removed_nodes(out, c);
    staged.stage(
        &dir.join("inventory.yml"),
        inventory(c, v, hosts, &removed).as_bytes(),
        crate::r#gen::MODE_PUBLIC,
    )?;
    for (rel, text) in PLAYBOOKS {
        staged.stage(&dir.join(rel), text.as_bytes(), crate::r#gen::MODE_PUBLIC)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_mentioned_only_whole() {
        let unit = "ExecStart=/usr/local/bin/containerd-shim-runc-v2 --config=/etc/a.toml\n";
        assert!(!mentions(unit, "/usr/local/bin/containerd"));
        assert!(mentions(unit, "/usr/local/bin/containerd-shim-runc-v2"));
        assert!(mentions(unit, "/etc/a.toml"));
        assert!(!mentions(unit, "/etc/a"));
    }

    #[test]
    fn a_file_restarts_the_services_that_read_it_even_through_a_config() {
        let units = vec![
            (
                "kubelet".to_string(),
                "ExecStart=/usr/local/bin/kubelet --config=/var/lib/kubelet/config.yaml"
                    .to_string(),
                vec!["clientCAFile: /etc/kubernetes/pki/ca.crt".to_string()],
            ),
            (
                "etcd".to_string(),
                "ExecStart=/usr/local/bin/etcd --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt"
                    .to_string(),
                vec![],
            ),
        ];
        assert_eq!(readers("/etc/kubernetes/pki/ca.crt", &units), ["kubelet"]);
        assert_eq!(readers("/etc/kubernetes/pki/etcd/ca.crt", &units), ["etcd"]);
        assert_eq!(
            readers("/etc/systemd/system/etcd.service", &units),
            ["etcd"]
        );
        assert!(readers("/usr/local/bin/kubectl", &units).is_empty());
    }
}
