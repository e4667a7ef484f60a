//! Proof by the components' own flag sets (issue 11): CI has no kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubelet or kube-proxy, so every flag and config field
//! that `kbin gen cluster` emits is checked against the flag and field sets those components have
//! in the Kubernetes minor it is emitted for, kept in `data/kube-flags/1.NN/` (taken from upstream
//! source; see `data/kube-flags/SOURCES.md` and `scripts/kube-flags.py`).
//!
//! The test reads whatever the real binary writes (every ExecStart of the kube-* and kubelet
//! units, every field of the three component configs), so new flags and fields are checked as
//! soon as they are generated.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;

/// The Kubernetes minors kbin generates for, all of which `data/kube-flags` covers.
const MINORS: std::ops::RangeInclusive<u32> = 28..=36;

/// The component configs kbin writes: (path in a node tree, data file stem, apiVersion, kind).
const CONFIGS: &[(&str, &str, &str, &str)] = &[
    (
        "var/lib/kubelet/config.yaml",
        "kubelet-config",
        "kubelet.config.k8s.io/v1beta1",
        "KubeletConfiguration",
    ),
    (
        "var/lib/kube-proxy/config.yaml",
        "kube-proxy-config",
        "kubeproxy.config.k8s.io/v1alpha1",
        "KubeProxyConfiguration",
    ),
    (
        "etc/kubernetes/kube-scheduler.yaml",
        "kube-scheduler-config",
        "kubescheduler.config.k8s.io/v1",
        "KubeSchedulerConfiguration",
    ),
];

/// The components whose units are checked, as their unit files are named.
const COMPONENTS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];

/// The cluster layouts and options that change what is generated: a control plane and a worker
/// on separate nodes, a node that is both, the kubelet configured for cgroup v1 hosts, and the
/// sandbox host profile (cgroupfs, conntrack) with a resolv.conf.
const VARIANTS: &[(&str, &[&str])] = &[
    (
        "control plane + worker",
        &[
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
        ],
    ),
    (
        "control plane that is also a worker, + worker, --cgroup-v1",
        &[
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
            "--cgroup-v1",
        ],
    ),
    (
        "control plane + worker, --host-profile sandbox --resolv-conf",
        &[
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
            "--host-profile",
            "sandbox",
            "--resolv-conf",
            "/run/systemd/resolve/resolv.conf",
        ],
    ),
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/kube-flags")
}

/// One data file: its path (for messages) and its names, `#` lines left out.
struct NameSet {
    file: PathBuf,
    names: BTreeSet<String>,
}

impl NameSet {
    fn load(minor: u32, file_name: &str) -> NameSet {
        let file = data_dir().join(format!("1.{minor}")).join(file_name);
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let names = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        NameSet { file, names }
    }

    fn flags(minor: u32, component: &str) -> NameSet {
        NameSet::load(minor, &format!("{component}.flags"))
    }

    fn fields(minor: u32, stem: &str) -> NameSet {
        NameSet::load(minor, &format!("{stem}.fields"))
    }

    /// Whether a field path exists: listed itself, or below a path listed as `PATH.*` (a map,
    /// or a type whose inside the data does not go into).
    fn has_path(&self, path: &str) -> bool {
        if self.names.contains(path) {
            return true;
        }
        let mut prefix = path;
        while let Some((head, _)) = prefix.rsplit_once('.') {
            if self.names.contains(&format!("{head}.*")) {
                return true;
            }
            prefix = head;
        }
        false
    }
}

/// The `--name` of every argument of an ExecStart command line, after the program. pflag
/// normalizes `_` to `-` in these components, so the data does too.
fn exec_start_flags(unit: &str) -> Result<Vec<String>, String> {
    let mut line = String::new();
    let mut in_exec = false;
    for l in unit.lines() {
        let l = l.trim_end();
        if !in_exec {
            match l.strip_prefix("ExecStart=") {
                Some(rest) => {
                    in_exec = true;
                    line.push_str(rest);
                }
                None => continue,
            }
        } else {
            line.push(' ');
            line.push_str(l.trim_start());
        }
        match line.strip_suffix('\\') {
            Some(stripped) => line = stripped.to_string(),
            None => break,
        }
    }
    if !in_exec {
        return Err("no ExecStart line".into());
    }
    let mut words = line.split_whitespace();
    words.next().ok_or("an empty ExecStart")?;
    words
        .map(|w| {
            let name = w
                .strip_prefix("--")
                .or_else(|| w.strip_prefix('-'))
                .ok_or_else(|| format!("argument {w:?} is not a flag"))?;
            let name = name.split('=').next().unwrap_or(name);
            Ok(name.replace('_', "-"))
        })
        .collect()
}

/// Every field path of a YAML document: `a`, `a.b`, ...; list items' fields under the list's own
/// path, as the data writes them.
fn field_paths(value: &serde_yaml_ng::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_yaml_ng::Value::Mapping(map) => {
            for (k, v) in map {
                let key = match k {
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
                };
                let path = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                out.push(path.clone());
                field_paths(v, &path, out);
            }
        }
        serde_yaml_ng::Value::Sequence(items) => {
            for v in items {
                field_paths(v, prefix, out);
            }
        }
        serde_yaml_ng::Value::Tagged(t) => field_paths(&t.value, prefix, out),
        _ => {}
    }
}

/// Generate a cluster tree for `1.minor` with the real binary and a fresh KBIN_HOME; returns the
/// tree and the Kubernetes version the report says it was generated for.
fn generate(minor: u32, args: &[&str], out: &Path) -> String {
    let home = tempfile::tempdir().unwrap();
    let o = cargo_bin_cmd!("kbin")
        .env("KBIN_HOME", home.path())
        .env_remove("KBIN_MANIFEST")
        .args(["gen", "cluster", "--json", "--kubernetes-version"])
        .arg(format!("1.{minor}"))
        .args(["--cluster-ip", "10.0.0.10", "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gen cluster 1.{minor} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    report["configs"]["versions"]
        .as_str()
        .expect("the report names the versions generated for")
        .to_string()
}

/// The Kubernetes minor in a report's `versions` ("manifest 1.31.14", or a toolchain's).
fn emitted_minor(versions: &str) -> u32 {
    versions
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| {
            let mut parts = w.split('.');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("1"), Some(minor), Some(patch)) if !patch.is_empty() => minor.parse().ok(),
                _ => None,
            }
        })
        .next()
        .unwrap_or_else(|| panic!("no Kubernetes version in {versions:?}"))
}

/// What one generated tree holds that its minor's components do not know, one line each.
fn check_tree(tree: &Path, minor: u32, what: &str, checked: &mut usize) -> Vec<String> {
    let mut problems = vec![];
    let mut nodes: Vec<PathBuf> = std::fs::read_dir(tree.join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    nodes.sort();
    assert!(
        !nodes.is_empty(),
        "{what}: no node trees in {}",
        tree.display()
    );
    for node in &nodes {
        let node_name = node.file_name().unwrap().to_string_lossy().to_string();
        let units = node.join("etc/systemd/system");
        for component in COMPONENTS {
            let unit = units.join(format!("{component}.service"));
            let Ok(text) = std::fs::read_to_string(&unit) else {
                continue;
            };
            let known = NameSet::flags(minor, component);
            match exec_start_flags(&text) {
                Err(e) => problems.push(format!("{what}: {}: {e}", unit.display())),
                Ok(flags) => {
                    for flag in flags {
                        *checked += 1;
                        if !known.names.contains(&flag) {
                            problems.push(format!(
                                "{what}: flag --{flag} of {component} (node {node_name}) does not exist in Kubernetes 1.{minor} ({})",
                                known.file.display()
                            ));
                        }
                    }
                }
            }
        }
        for (rel, stem, api_version, kind) in CONFIGS {
            let path = node.join(rel);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: {} is not YAML: {e}", path.display()));
            if doc["apiVersion"].as_str() != Some(api_version) || doc["kind"].as_str() != Some(kind)
            {
                problems.push(format!(
                    "{what}: {} is not {kind} {api_version}, which is what {} describes",
                    path.display(),
                    stem
                ));
                continue;
            }
            let known = NameSet::fields(minor, stem);
            let mut paths = vec![];
            field_paths(&doc, "", &mut paths);
            for p in paths {
                *checked += 1;
                if !known.has_path(&p) {
                    problems.push(format!(
                        "{what}: field {p} of {kind} in {rel} (node {node_name}) does not exist in Kubernetes 1.{minor} ({})",
                        known.file.display()
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_emitted_flag_and_config_field_exists_in_the_minor_it_is_emitted_for() {
    let out = tempfile::tempdir().unwrap();
    let mut problems = vec![];
    let mut units_and_configs = 0;
    for minor in MINORS {
        for (i, (variant, args)) in VARIANTS.iter().enumerate() {
            let tree = out.path().join(format!("1.{minor}-{i}"));
            let versions = generate(minor, args, &tree);
            let emitted = emitted_minor(&versions);
            assert_eq!(
                emitted, minor,
                "--kubernetes-version 1.{minor} generated {versions}"
            );
            let what = format!("1.{minor}, {variant}");
            let before = units_and_configs;
            problems.extend(check_tree(&tree, emitted, &what, &mut units_and_configs));
            // Not vacuous: every component's unit and config was found and read.
            assert!(
                units_and_configs - before > 50,
                "{what}: only {} flags and fields checked",
                units_and_configs - before
            );
        }
    }
    assert!(
        problems.is_empty(),
        "{} flags or fields that the components do not have:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn a_tree_has_every_component_unit_and_config_the_check_reads() {
    let out = tempfile::tempdir().unwrap();
    let tree = out.path().join("cluster");
    generate(36, VARIANTS[1].1, &tree);
    let cp = tree.join("nodes/cp1");
    for component in COMPONENTS {
        let unit = cp.join(format!("etc/systemd/system/{component}.service"));
        assert!(unit.is_file(), "{} is missing", unit.display());
    }
    for (rel, ..) in CONFIGS {
        assert!(cp.join(rel).is_file(), "{rel} is missing on cp1");
    }
}

#[test]
fn the_checker_refuses_what_a_component_does_not_have() {
    let unit = "[Service]\nExecStart=/usr/local/bin/kubelet \\\n  --config=/x \\\n  --container-runtime=remote\nRestart=always\n";
    assert_eq!(
        exec_start_flags(unit).unwrap(),
        ["config", "container-runtime"]
    );
    let kubelet = NameSet::flags(30, "kubelet");
    assert!(kubelet.names.contains("config"));
    assert!(!kubelet.names.contains("container-runtime"));

    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  maxPerCore: 0\n  maxPerCores: 1\nfeatureGates:\n  Foo: true\n",
    )
    .unwrap();
    let mut paths = vec![];
    field_paths(&doc, "", &mut paths);
    let proxy = NameSet::fields(36, "kube-proxy-config");
    let refused: Vec<&String> = paths.iter().filter(|p| !proxy.has_path(p)).collect();
    assert_eq!(refused, ["conntrack.maxPerCores"]);

    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("profiles:\n- schedulerName: a\n  plugins:\n    score:\n      enabled:\n      - name: X\n        weight: 2\n")
            .unwrap();
    let mut paths = vec![];
    field_paths(&doc, "", &mut paths);
    let scheduler = NameSet::fields(36, "kube-scheduler-config");
    assert!(paths.iter().all(|p| scheduler.has_path(p)), "{paths:?}");
    assert!(paths.contains(&"profiles.plugins.score.enabled.weight".to_string()));
}

#[test]
fn the_flag_and_field_data_is_real_for_every_minor() {
    for minor in MINORS {
        for component in COMPONENTS {
            let set = NameSet::flags(minor, component);
            for common in ["help", "v", "feature-gates"] {
                assert!(
                    set.names.contains(common),
                    "{component} 1.{minor} lacks --{common}: {}",
                    set.file.display()
                );
            }
            assert!(set.names.len() >= 50, "{}", set.file.display());
        }
        for (_, stem, ..) in CONFIGS {
            let set = NameSet::fields(minor, stem);
            for common in ["apiVersion", "kind", "clientConnection.kubeconfig"] {
                if stem == &"kubelet-config" && common.starts_with("clientConnection") {
                    continue;
                }
                assert!(
                    set.names.contains(common),
                    "{common}: {}",
                    set.file.display()
                );
            }
            assert!(set.names.len() >= 60, "{}", set.file.display());
        }
        let kubelet = NameSet::flags(minor, "kubelet");
        assert!(kubelet.names.contains("container-runtime-endpoint"));
        // Removed in 1.27 (dockershim gone since 1.24).
        assert!(!kubelet.names.contains("container-runtime"), "1.{minor}");
        let apiserver = NameSet::flags(minor, "kube-apiserver");
        for f in ["etcd-servers", "service-account-issuer", "tls-cert-file"] {
            assert!(apiserver.names.contains(f), "{f} 1.{minor}");
        }
        // A flag of other components only.
        assert!(!apiserver.names.contains("authentication-kubeconfig"));
        assert!(!apiserver.names.contains("openshift-config"));
        let kubelet_config = NameSet::fields(minor, "kubelet-config");
        for f in [
            "authentication.x509.clientCAFile",
            "cgroupDriver",
            "resolvConf",
            "containerRuntimeEndpoint",
        ] {
            assert!(kubelet_config.names.contains(f), "{f} 1.{minor}");
        }
        assert!(kubelet_config.has_path("featureGates.AnyGate"));
        // kubelet 1.31 added failCgroupV1.
        assert_eq!(
            kubelet_config.names.contains("failCgroupV1"),
            minor >= 31,
            "failCgroupV1 in 1.{minor}"
        );
        let proxy = NameSet::fields(minor, "kube-proxy-config");
        for f in [
            "conntrack.maxPerCore",
            "nodePortAddresses",
            "hostnameOverride",
            "clusterCIDR",
            "mode",
        ] {
            assert!(proxy.names.contains(f), "{f} 1.{minor}");
        }
        let scheduler = NameSet::fields(minor, "kube-scheduler-config");
        assert!(scheduler.names.contains("leaderElection.leaderElect"));
    }
    assert!(
        NameSet::flags(28, "kubelet")
            .names
            .contains("container-runtime-endpoint")
    );
    assert!(
        NameSet::flags(36, "kube-apiserver")
            .names
            .contains("etcd-servers")
    );
}

/// A flag's first etcd minor and the minor that deprecates it.
type EtcdRange = ((u32, u32), Option<(u32, u32)>);

/// `data/etcd-flags.tsv`: flag → its range.
fn etcd_flags() -> std::collections::BTreeMap<String, EtcdRange> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/etcd-flags.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let minor = |s: &str| {
        let (a, b) = s.split_once('.').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("flag\t") && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{l}");
            assert!(f[3].len() > 10, "every row names its source: {l}");
            let deprecated = (f[2] != "-").then(|| minor(f[2]));
            (f[0].to_owned(), (minor(f[1]), deprecated))
        })
        .collect()
}

#[test]
fn every_etcd_flag_exists_and_is_not_deprecated_in_the_etcd_version_it_is_emitted_for() {
    let table = etcd_flags();
    assert!(table.contains_key("feature-gates") && table.contains_key("snapshot-count"));
    let mut problems = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    for minor in MINORS {
        let out = tempfile::tempdir().unwrap();
        generate(minor, VARIANTS[0].1, out.path());
        let next = std::fs::read_to_string(out.path().join("NEXT-STEPS.md")).unwrap();
        let etcd = next
            .split("Versions: etcd ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("1.{minor}: no etcd version in NEXT-STEPS"));
        let mut parts = etcd.split('.').map(|p| p.parse::<u32>().unwrap());
        let v = (parts.next().unwrap(), parts.next().unwrap());
        versions.insert(etcd.to_owned());
        let unit =
            std::fs::read_to_string(out.path().join("nodes/cp1/etc/systemd/system/etcd.service"))
                .unwrap();
        for flag in exec_start_flags(&unit).unwrap() {
            match table.get(&flag) {
                None => problems.push(format!(
                    "1.{minor} (etcd {etcd}): --{flag} is not in data/etcd-flags.tsv"
                )),
                Some((first, _)) if v < *first => problems.push(format!(
                    "1.{minor}: --{flag} arrived in etcd {}.{}, after {etcd}",
                    first.0, first.1
                )),
                Some((_, Some(dep))) if v >= *dep => problems.push(format!(
                    "1.{minor}: --{flag} is deprecated from etcd {}.{} (emitted for {etcd})",
                    dep.0, dep.1
                )),
                Some(_) => {}
            }
        }
    }
    assert!(versions.len() >= 2, "etcd versions checked: {versions:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
