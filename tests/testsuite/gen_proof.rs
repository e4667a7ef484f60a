//! Proof by the components themselves (issue 11): what `kbin gen cluster` writes is read by the
//! real program that will read it on a node, not compared with a snapshot (a snapshot locks in
//! whatever kbin writes, bugs included).
//!
//! - certificates: Python `cryptography`, a strict DER parser (openssl and Go accept encodings it
//!   refuses);
//! - containerd config version 2: Debian's containerd 1.x (`containerd config dump`); version 3
//!   (containerd 2.x, not in Debian): every key checked against containerd's documented fields;
//! - the CNI conflist: Debian's CNI plugins run, plugin by plugin, in network namespaces made here;
//! - kubeconfigs: the real kubectl.
//!
//! Each tool is installed by scripts/setup-test-deps; a missing one fails the test (never a skip).

use crate::common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use ipnet::IpNet;
use kbin::manifest::Manifest;
use kbin::manifest::resolve::{Request, resolve};
use semver::Version;
use serde_json::Value;

use common::{kbin, tool};

/// The cluster's pod CIDR, given explicitly so the test knows what every node subnet must be in.
const POD_CIDR: &str = "10.244.0.0/16";

/// One control plane and two workers.
const NODES: &[&str] = &[
    "--control-plane",
    "cp1=10.0.0.10",
    "--worker",
    "w1=10.0.0.21",
    "--worker",
    "w2=10.0.0.22",
];

/// A tree written by the real `kbin gen cluster`, in a fresh KBIN_HOME.
struct Tree {
    _home: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Tree {
    fn path(&self) -> &Path {
        self.out.path()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel))
            .unwrap_or_else(|e| panic!("{rel} (written by kbin gen cluster): {e}"))
    }
}

/// `kbin gen cluster --kubernetes-version k8s --pod-cidr POD_CIDR` with `args` (nodes, key
/// algorithm).
/// The host profiles, each changing containerd's config.
const PROFILES: &[&str] = &["systemd", "sandbox"];

fn gen_cluster(k8s: &str, args: &[&str]) -> Tree {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = kbin(home.path())
        .args(["gen", "cluster", "--kubernetes-version", k8s])
        .args(["--pod-cidr", POD_CIDR, "--out"])
        .arg(out.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "kbin gen cluster --kubernetes-version {k8s} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Tree { _home: home, out }
}

/// Every file under `root`, relative to it, sorted.
fn files_under(root: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Run a command; its output, or a panic with its stderr.
fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}: run scripts/setup-test-deps"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Every kubeconfig of the tree (kubeconfigs/ and the copies in the node trees), parsed.
fn kubeconfigs(t: &Tree) -> Vec<(String, serde_yaml_ng::Value)> {
    let mut out = vec![];
    for rel in files_under(t.path()) {
        let in_kubeconfigs = rel.starts_with("kubeconfigs/");
        let in_node = rel.starts_with("nodes/") && rel.contains("/etc/kubernetes/");
        if !rel.ends_with(".conf") || !(in_kubeconfigs || in_node) {
            continue;
        }
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&t.read(&rel))
            .unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"));
        assert_eq!(v["kind"].as_str(), Some("Config"), "{rel} is a kubeconfig");
        out.push((rel, v));
    }
    assert!(
        out.iter()
            .filter(|(r, _)| r.starts_with("kubeconfigs/"))
            .count()
            >= 6,
        "kubeconfigs/ holds admin, super-admin, controller-manager, scheduler, kube-proxy and a \
         kubelet kubeconfig per worker: {:?}",
        out.iter().map(|(r, _)| r).collect::<Vec<_>>()
    );
    out
}

/// The PEM certificates in `text`, each as its own PEM block.
fn pem_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = vec![];
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let len = rest[start..].find(END).expect("a BEGIN has its END") + END.len();
        out.push(format!("{}\n", &rest[start..start + len]));
        rest = &rest[start + len..];
    }
    out
}

/// One certificate kbin wrote: where it is, its PEM, and whether it should be a CA.
struct Cert {
    label: String,
    pem: String,
    ca: bool,
}

/// Every certificate of the tree: the .crt files (pki/ and the node trees' copies) and the ones
/// embedded in kubeconfigs.
fn certificates(t: &Tree) -> Vec<Cert> {
    let mut out = vec![];
    for rel in files_under(t.path()) {
        if !rel.ends_with(".crt") {
            continue;
        }
        let blocks = pem_blocks(&t.read(&rel));
        assert_eq!(blocks.len(), 1, "{rel} holds one certificate");
        // The CAs are ca.crt, etcd/ca.crt and front-proxy-ca.crt (kubeadm's names), and the
        // signer's copy of ca.crt, ca-signer.crt.
        let ca =
            rel.ends_with("/ca.crt") || rel.ends_with("-ca.crt") || rel.ends_with("/ca-signer.crt");
        for pem in blocks {
            out.push(Cert {
                label: rel.clone(),
                pem,
                ca,
            });
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    for (rel, k) in kubeconfigs(t) {
        let embedded = [
            (
                &k["clusters"],
                "cluster",
                "certificate-authority-data",
                true,
            ),
            (&k["users"], "user", "client-certificate-data", false),
        ];
        for (list, entry, field, ca) in embedded {
            for item in list.as_sequence().expect("a list") {
                let data = item[entry][field]
                    .as_str()
                    .unwrap_or_else(|| panic!("{rel}: {entry} without {field}"));
                let pem = String::from_utf8(b64.decode(data).unwrap()).unwrap();
                for pem in pem_blocks(&pem) {
                    out.push(Cert {
                        label: format!("{rel} ({field})"),
                        pem,
                        ca,
                    });
                }
            }
        }
    }
    out
}

/// Python with `cryptography` ≥ 35 (whose X.509 parsing is strict DER, in Rust): Debian's
/// python3-cryptography, or the venv scripts/setup-test-deps makes where Debian's is older.
fn strict_der_python() -> PathBuf {
    let venv = PathBuf::from("/opt/kbin-test-deps/venv/bin/python3");
    if venv.is_file() {
        venv
    } else {
        tool("python3")
    }
}

/// Load each file in argv with `cryptography`, touch every extension (extensions are parsed
/// lazily: that is where a strict DER parser refuses a bad encoding), and report as JSON.
const LOAD_CERTS_PY: &str = r#"
import json, sys
import cryptography
from cryptography import x509
report = {"version": cryptography.__version__, "certs": {}}
for path in sys.argv[1:]:
    try:
        cert = x509.load_pem_x509_certificate(open(path, "rb").read())
        exts = {e.oid.dotted_string: e.value for e in cert.extensions}
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        report["certs"][path] = {"ca": bc.ca, "subject": cert.subject.rfc4514_string(),
                                 "extensions": len(exts)}
    except Exception as e:
        report["certs"][path] = {"error": "%s: %s" % (type(e).__name__, e)}
print(json.dumps(report))
"#;

#[test]
fn every_certificate_loads_in_a_strict_der_parser() {
    let python = strict_der_python();
    for algo in ["ecdsa-p256", "rsa-2048"] {
        let t = gen_cluster("1.35", &[NODES, &["--key-algo", algo]].concat());
        let certs = certificates(&t);
        assert!(certs.len() > 30, "{} certificates", certs.len());
        let dir = tempfile::tempdir().unwrap();
        let mut paths = vec![];
        for (i, c) in certs.iter().enumerate() {
            let p = dir.path().join(format!("{i}.pem"));
            std::fs::write(&p, &c.pem).unwrap();
            paths.push(p);
        }
        let o = run(Command::new(&python)
            .arg("-c")
            .arg(LOAD_CERTS_PY)
            .args(&paths));
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        let version = report["version"].as_str().unwrap();
        let major: u32 = version.split('.').next().unwrap().parse().unwrap();
        assert!(
            major >= 35,
            "{} has cryptography {version}, whose X.509 parsing is not the strict (Rust) one: \
             run scripts/setup-test-deps",
            python.display()
        );
        let mut refused = vec![];
        for (c, p) in certs.iter().zip(&paths) {
            let r = &report["certs"][p.to_str().unwrap()];
            if let Some(e) = r["error"].as_str() {
                refused.push(format!("{}: {e}", c.label));
                continue;
            }
            assert_eq!(
                r["ca"].as_bool(),
                Some(c.ca),
                "{} ({}): BasicConstraints cA",
                c.label,
                r["subject"]
            );
        }
        assert!(
            refused.is_empty(),
            "cryptography {version} refuses {} of {} certificates ({algo}):\n{}",
            refused.len(),
            certs.len(),
            refused.join("\n")
        );
    }
}

/// Every release of the embedded manifest that resolves, with its containerd version.
fn releases_with_containerd() -> Vec<(String, Version)> {
    let m = Manifest::embedded().unwrap();
    let mut out = vec![];
    for minor in m.releases.keys() {
        let req = Request {
            version: minor.to_string(),
            ..Default::default()
        };
        // A minor known only by name (no defaults yet) does not resolve: nothing to generate.
        let Ok(res) = resolve(&m, &req) else { continue };
        let containerd = res.version_of("containerd").expect("a containerd").clone();
        out.push((minor.to_string(), containerd));
    }
    out
}

/// The one node of a tree generated without node flags (this machine).
fn only_node(t: &Tree) -> PathBuf {
    let mut nodes: Vec<PathBuf> = std::fs::read_dir(t.path().join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    nodes.pop().unwrap()
}

/// Every leaf value of a TOML table with its path (table names, then the key).
fn toml_leaves(t: &toml::Table) -> Vec<(Vec<String>, toml::Value)> {
    fn walk(path: &mut Vec<String>, t: &toml::Table, out: &mut Vec<(Vec<String>, toml::Value)>) {
        for (k, v) in t {
            path.push(k.clone());
            match v {
                toml::Value::Table(sub) => walk(path, sub, out),
                v => out.push((path.clone(), v.clone())),
            }
            path.pop();
        }
    }
    let mut out = vec![];
    walk(&mut vec![], t, &mut out);
    out
}

fn toml_get<'a>(t: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, tables) = path.split_last()?;
    let mut t = t;
    for k in tables {
        t = t.get(k)?.as_table()?;
    }
    t.get(last)
}

/// A path as TOML writes it: `plugins.'io.containerd.cri.v1.images'.pinned_images.sandbox`.
fn dotted(path: &[String]) -> String {
    let seg = |s: &String| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-*".contains(c))
        {
            s.clone()
        } else {
            format!("'{s}'")
        }
    };
    path.iter().map(seg).collect::<Vec<_>>().join(".")
}

#[test]
fn containerd_1_x_loads_the_generated_config_v2_and_keeps_every_value_kbin_wrote() {
    let containerd = tool("containerd");
    let v1: Vec<_> = releases_with_containerd()
        .into_iter()
        .filter(|(_, c)| c.major == 1)
        .collect();
    assert!(
        !v1.is_empty(),
        "the manifest has releases on containerd 1.x"
    );
    // Both host profiles: sandbox adds restrict_oom_score_adj and turns SystemdCgroup off.
    let runs = v1
        .into_iter()
        .flat_map(|(k, c)| PROFILES.iter().map(move |p| (k.clone(), c.clone(), *p)));
    for (k8s, cv, profile) in runs {
        let t = gen_cluster(&k8s, &["--host-profile", profile]);
        let node = only_node(&t);
        let path = node.join("etc/containerd/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let wrote: toml::Table = text.parse().unwrap();
        assert_eq!(
            wrote["version"].as_integer(),
            Some(2),
            "{k8s} (containerd {cv})"
        );

        let o = run(Command::new(&containerd)
            .arg("--config")
            .arg(&path)
            .args(["config", "dump"]));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !stderr.contains("level=warning") && !stderr.contains("level=error"),
            "containerd warns about {k8s}'s config:\n{stderr}"
        );
        let dump: toml::Table = String::from_utf8(o.stdout).unwrap().parse().unwrap();

        // containerd decodes each plugin's section into its config struct and dumps the struct:
        // a key it does not know is dropped, a value it cannot use changes. So every value kbin
        // wrote must come back, at the same place.
        let leaves = toml_leaves(&wrote);
        assert!(leaves.len() >= 7, "{leaves:?}");
        for (p, v) in &leaves {
            assert_eq!(
                toml_get(&dump, p),
                Some(v),
                "{k8s}: containerd did not keep {} = {v} (unknown key or value?)",
                dotted(p)
            );
        }

        // What the file meant, as containerd understood it.
        let cri = |path: &str| {
            let mut p = vec!["plugins".to_owned(), "io.containerd.grpc.v1.cri".to_owned()];
            p.extend(path.split('.').map(str::to_owned));
            toml_get(&dump, &p).unwrap_or_else(|| panic!("{k8s}: the dump has no CRI {path}"))
        };
        let sandbox = cri("sandbox_image").as_str().unwrap();
        assert!(
            sandbox.starts_with("registry.k8s.io/pause:"),
            "{k8s}: {sandbox}"
        );
        assert_eq!(
            cri("containerd.default_runtime_name").as_str(),
            Some("runc")
        );
        assert_eq!(
            cri("containerd.runtimes.runc.runtime_type").as_str(),
            Some("io.containerd.runc.v2")
        );
        // The kubelet and runc must use the same cgroup driver. containerd hands a runtime's
        // options to the shim as they are (an opaque map), so a misspelt option survives the
        // dump: this is what catches it.
        let kubelet: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(node.join("var/lib/kubelet/config.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            cri("containerd.runtimes.runc.options.SystemdCgroup").as_bool(),
            Some(kubelet["cgroupDriver"].as_str() == Some("systemd")),
            "{k8s}: SystemdCgroup against the kubelet's cgroupDriver {:?}",
            kubelet["cgroupDriver"]
        );
        // containerd looks for the conflist where kbin put it in the node tree.
        let conf_dir = cri("cni.conf_dir").as_str().unwrap();
        let conflists: Vec<_> = std::fs::read_dir(node.join(conf_dir.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{k8s}: conf_dir {conf_dir} is not in the node tree: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conflist"))
            .collect();
        assert!(!conflists.is_empty(), "{k8s}: no conflist in {conf_dir}");
        assert_eq!(cri("cni.bin_dir").as_str(), Some("/opt/cni/bin"));
    }
}

/// containerd 2.x's documented CRI config fields, for config version 3: the 2.x "Full
/// configuration" in containerd's docs/cri/config.md, and `SystemdCgroup` from its "Cgroup
/// Driver" section (runc's options are not all in the full listing). Each row is (the 2.x minor
/// whose docs first list it, table, keys); read at tags v2.0.0 (207ad711), v2.1.0 (061792f0),
/// v2.2.0 and v2.3.0 with `git show vX:docs/cri/config.md`. A runtime's name is `*`.
const CONTAINERD_2_CRI_DOCS: &[(u64, &str, &[&str])] = &[
    (0, "", &["version"]),
    (
        0,
        "plugins.'io.containerd.cri.v1.images'",
        &[
            "snapshotter",
            "disable_snapshot_annotations",
            "discard_unpacked_layers",
            "max_concurrent_downloads",
            "image_pull_progress_timeout",
            "image_pull_with_sync_fs",
            "stats_collect_period",
        ],
    ),
    (
        1,
        "plugins.'io.containerd.cri.v1.images'",
        &["use_local_image_pull"],
    ),
    (
        0,
        "plugins.'io.containerd.cri.v1.images'.pinned_images",
        &["sandbox"],
    ),
    (
        0,
        "plugins.'io.containerd.cri.v1.images'.registry",
        &["config_path"],
    ),
    (
        0,
        "plugins.'io.containerd.cri.v1.images'.image_decryption",
        &["key_model"],
    ),
    (
        0,
        "plugins.'io.containerd.cri.v1.runtime'",
        &[
            "enable_selinux",
            "selinux_category_range",
            "max_container_log_line_size",
            "disable_cgroup",
            "disable_apparmor",
            "restrict_oom_score_adj",
            "disable_proc_mount",
            "unset_seccomp_profile",
            "tolerate_missing_hugetlb_controller",
            "disable_hugetlb_controller",
            "device_ownership_from_security_context",
            "ignore_image_defined_volumes",
            "netns_mounts_under_state_dir",
            "enable_unprivileged_ports",
            "enable_unprivileged_icmp",
            "enable_cdi",
            "cdi_spec_dirs",
            "drain_exec_sync_io_timeout",
            "ignore_deprecation_warnings",
        ],
    ),
    (
        3,
        "plugins.'io.containerd.cri.v1.runtime'",
        &["stats_collect_period", "stats_retention_period"],
    ),
    (
        0,
        "plugins.'io.containerd.cri.v1.runtime'.containerd",
        &[
            "default_runtime_name",
            "ignore_blockio_not_enabled_errors",
            "ignore_rdt_not_enabled_errors",
        ],
    ),
    (
        0,
        "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.*",
        &[
            "runtime_type",
            "runtime_path",
            "pod_annotations",
            "container_annotations",
            "privileged_without_host_devices",
            "privileged_without_host_devices_all_devices_allowed",
            "base_runtime_spec",
            "cni_conf_dir",
            "cni_max_conf_num",
            "snapshotter",
            "sandboxer",
            "io_type",
        ],
    ),
    (
        2,
        "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.*",
        &["cgroup_writable"],
    ),
    (
        0,
        "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.*.options",
        &[
            "BinaryName",
            "CriuImagePath",
            "CriuWorkPath",
            "IoGid",
            "IoUid",
            "NoNewKeyring",
            "Root",
            "ShimCgroup",
            "SystemdCgroup",
        ],
    ),
    (
        0,
        "plugins.'io.containerd.cri.v1.runtime'.cni",
        &[
            // Listed until v2.3 at least; "DEPRECATED, use `bin_dirs` instead (since v2.1)".
            "bin_dir",
            "conf_dir",
            "max_conf_num",
            "setup_serially",
            "conf_template",
            "ip_pref",
            "use_internal_loopback",
        ],
    ),
    (
        1,
        "plugins.'io.containerd.cri.v1.runtime'.cni",
        &["bin_dirs"],
    ),
    (
        0,
        "plugins.'io.containerd.grpc.v1.cri'",
        &[
            "disable_tcp_service",
            "stream_server_address",
            "stream_server_port",
            "stream_idle_timeout",
            "enable_tls_streaming",
        ],
    ),
    (
        0,
        "plugins.'io.containerd.grpc.v1.cri'.x509_key_pair_streaming",
        &["tls_cert_file", "tls_key_file"],
    ),
];

/// Keys deprecated in the docs of a 2.x minor: kbin must not write them for that minor on.
const CONTAINERD_2_DEPRECATED: &[(u64, &str)] =
    &[(1, "plugins.'io.containerd.cri.v1.runtime'.cni.bin_dir")];

#[test]
fn every_key_of_the_containerd_v3_config_is_documented_for_its_containerd_minor() {
    let v2: Vec<_> = releases_with_containerd()
        .into_iter()
        .filter(|(_, c)| c.major == 2)
        .collect();
    assert!(
        !v2.is_empty(),
        "the manifest has releases on containerd 2.x"
    );
    let runs = v2
        .into_iter()
        .flat_map(|(k, c)| PROFILES.iter().map(move |p| (k.clone(), c.clone(), *p)));
    for (k8s, cv, profile) in runs {
        let t = gen_cluster(&k8s, &["--host-profile", profile]);
        let text =
            std::fs::read_to_string(only_node(&t).join("etc/containerd/config.toml")).unwrap();
        let wrote: toml::Table = text.parse().unwrap();
        assert_eq!(
            wrote["version"].as_integer(),
            Some(3),
            "{k8s} (containerd {cv})"
        );
        for (mut p, v) in toml_leaves(&wrote) {
            // runtimes.<name>.…: the name is the user's choice (the docs' is runc).
            if let Some(i) = p.iter().position(|s| s == "runtimes")
                && i + 1 < p.len() - 1
            {
                p[i + 1] = "*".into();
            }
            let (key, table) = p.split_last().unwrap();
            let table = dotted(table);
            let documented = CONTAINERD_2_CRI_DOCS.iter().any(|(since, t, keys)| {
                *since <= cv.minor && *t == table && keys.contains(&key.as_str())
            });
            assert!(
                documented,
                "{k8s}: containerd {cv}'s docs/cri/config.md has no {}.{key} (kbin wrote {v})",
                if table.is_empty() { "<top>" } else { &table }
            );
            let full = dotted(&p);
            let deprecated = CONTAINERD_2_DEPRECATED
                .iter()
                .any(|(since, k)| *since <= cv.minor && *k == full);
            assert!(!deprecated, "{k8s}: containerd {cv} deprecates {full}");
        }
        // The CRI runtime must point at the conf dir where kbin put the conflist.
        let cni = &wrote["plugins"]["io.containerd.cri.v1.runtime"]["cni"];
        assert_eq!(cni["conf_dir"].as_str(), Some("/etc/cni/net.d"), "{k8s}");
    }
}

/// Network namespaces made by a test, deleted on drop (pass or fail) with everything in them:
/// the bridge, the veths and the iptables rules the plugins add live in a "node" namespace, so
/// nothing of the machine's own network is touched.
struct Netns {
    ip: PathBuf,
    names: Vec<String>,
}

impl Netns {
    fn new() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
        assert_eq!(
            uid.split_whitespace().next(),
            Some("0"),
            "network namespaces need root: run the tests as root (CI does)"
        );
        Netns {
            ip: tool("ip"),
            names: vec![],
        }
    }

    /// Make `kbin-test-<pid>-<suffix>`; its name.
    fn add(&mut self, suffix: &str) -> String {
        let name = format!("kbin-test-{}-{suffix}", std::process::id());
        run(Command::new(&self.ip).args(["netns", "add", &name]));
        self.names.push(name.clone());
        name
    }

    /// `ip netns exec NS ARGS…`: its stdout.
    fn exec(&self, ns: &str, args: &[&str]) -> String {
        let o = run(Command::new(&self.ip)
            .args(["netns", "exec", ns])
            .args(args));
        String::from_utf8(o.stdout).unwrap()
    }

    /// `ip -j ARGS…` inside `ns`, parsed.
    fn ip_json(&self, ns: &str, args: &[&str]) -> Value {
        let out = self.exec(ns, &[&[self.ip.to_str().unwrap(), "-j"], args].concat());
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = Command::new(&self.ip).args(["netns", "del", name]).status();
        }
    }
}

/// Debian's CNI plugins (containernetworking-plugins).
const CNI_PATH: &str = "/usr/lib/cni";

/// Run one CNI plugin for `command` inside the node namespace, on `eth0` of the pod namespace,
/// as a runtime does (CNI spec, "Execution protocol"); its parsed result (ADD) or Null.
fn cni_plugin(nets: &Netns, node: &str, pod: &str, command: &str, conf: &Value) -> Value {
    let ty = conf["type"].as_str().unwrap();
    let plugin = Path::new(CNI_PATH).join(ty);
    assert!(
        plugin.is_file(),
        "{} is missing: run scripts/setup-test-deps (containernetworking-plugins)",
        plugin.display()
    );
    let mut child = Command::new(&nets.ip)
        .args(["netns", "exec", node])
        .arg(&plugin)
        .env("CNI_COMMAND", command)
        .env(
            "CNI_CONTAINERID",
            format!("kbin-test-{}", std::process::id()),
        )
        .env("CNI_NETNS", format!("/var/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "CNI {command} of {ty} failed:\nconfig: {conf}\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

/// Run a conflist as a runtime does (libcni): ADD plugin by plugin, each plugin's config with the
/// list's `cniVersion` and `name` and the previous plugin's result as `prevResult`; DEL in
/// reverse order, each with the ADD result as `prevResult`. The one change to kbin's plugins:
/// host-local's `dataDir` goes under `ipam_dir` (it defaults to /var/lib/cni/networks on the
/// machine). The bridge keeps kbin's name (cni0): it is made in the node namespace.
fn cni_configs(list: &Value, ipam_dir: &Path) -> Vec<Value> {
    let mut out = vec![];
    for p in list["plugins"].as_array().expect("a conflist has plugins") {
        let mut conf = p.clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if conf["ipam"]["type"] == "host-local" {
            conf["ipam"]["dataDir"] = Value::from(ipam_dir.to_str().unwrap());
        }
        out.push(conf);
    }
    out
}

fn cni_add(nets: &Netns, node: &str, pod: &str, confs: &[Value]) -> Value {
    let mut prev = Value::Null;
    for c in confs {
        let mut c = c.clone();
        if !prev.is_null() {
            c["prevResult"] = prev.clone();
        }
        let r = cni_plugin(nets, node, pod, "ADD", &c);
        if !r.is_null() {
            prev = r;
        }
    }
    prev
}

fn cni_del(nets: &Netns, node: &str, pod: &str, confs: &[Value], result: &Value) {
    for c in confs.iter().rev() {
        let mut c = c.clone();
        c["prevResult"] = result.clone();
        cni_plugin(nets, node, pod, "DEL", &c);
    }
}

/// The files host-local holds for `network` in `dir` that are allocations (named by an IP).
fn ipam_allocations(dir: &Path, network: &str) -> Vec<String> {
    match std::fs::read_dir(dir.join(network)) {
        Err(_) => vec![],
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .collect(),
    }
}

#[test]
fn the_bridge_conflist_run_by_the_cni_plugins_gives_each_worker_pod_an_address_in_its_subnet() {
    let t = gen_cluster("1.35", NODES);
    let pod_cidr: IpNet = POD_CIDR.parse().unwrap();
    let mut nets = Netns::new();
    let mut subnets: Vec<IpNet> = vec![];
    for worker in ["w1", "w2"] {
        let rel = format!("nodes/{worker}/etc/cni/net.d/10-bridge.conflist");
        let list: Value = serde_json::from_str(&t.read(&rel)).unwrap();
        // The subnet kbin gave this node, inside the cluster's pod CIDR and no other node's.
        let ranges = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|p| p["ipam"]["ranges"].as_array())
            .unwrap_or_else(|| panic!("{rel}: no IPAM ranges"));
        let subnet: IpNet = ranges[0][0]["subnet"].as_str().unwrap().parse().unwrap();
        assert!(
            pod_cidr.contains(&subnet),
            "{rel}: {subnet} outside {pod_cidr}"
        );
        for s in &subnets {
            assert!(
                !s.contains(&subnet.network()) && !subnet.contains(&s.network()),
                "{rel}: {subnet} overlaps {s}"
            );
        }
        subnets.push(subnet);

        let node = nets.add(&format!("{worker}-node"));
        let pod = nets.add(&format!("{worker}-pod"));
        let ipam = tempfile::tempdir().unwrap();
        let confs = cni_configs(&list, ipam.path());
        let result = cni_add(&nets, &node, &pod, &confs);

        // The result and the namespace agree: eth0 has an address in the node's subnet, and
        // the default route goes through the bridge's gateway.
        let ip: IpNet = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            subnet.contains(&ip.addr()),
            "{worker}: {ip} outside {subnet}"
        );
        let addrs = nets.ip_json(&pod, &["-4", "addr", "show", "dev", "eth0"]);
        let have: Vec<&str> = addrs[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["local"].as_str())
            .collect();
        assert_eq!(have, [ip.addr().to_string()], "{worker}: eth0 {addrs}");
        let routes = nets.ip_json(&pod, &["-4", "route", "show", "default"]);
        let gateway = routes[0]["gateway"].as_str().unwrap_or_else(|| {
            panic!("{worker}: no default route in the pod: {routes}");
        });
        let gateway: IpAddr = gateway.parse().unwrap();
        assert!(subnet.contains(&gateway), "{worker}: gateway {gateway}");
        assert_eq!(routes[0]["dev"], "eth0", "{worker}: {routes}");
        // The loopback plugin brought lo up.
        let lo = nets.ip_json(&pod, &["link", "show", "lo"]);
        assert!(
            lo[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{worker}: lo {lo}"
        );
        // The pod reaches its gateway over the bridge.
        nets.exec(
            &pod,
            &[
                tool("ping").to_str().unwrap(),
                "-c1",
                "-W2",
                &gateway.to_string(),
            ],
        );
        let network = list["name"].as_str().unwrap();
        assert_eq!(ipam_allocations(ipam.path(), network).len(), 1);

        // DEL: eth0 gone, the address released, the masquerade rules removed.
        cni_del(&nets, &node, &pod, &confs, &result);
        let links = nets.ip_json(&pod, &["link", "show"]);
        assert!(
            links
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["ifname"] != "eth0"),
            "{worker}: eth0 left after DEL: {links}"
        );
        assert_eq!(
            ipam_allocations(ipam.path(), network),
            Vec::<String>::new(),
            "{worker}: host-local still holds an address after DEL"
        );
        let nat = nets.exec(
            &node,
            &[tool("iptables").to_str().unwrap(), "-t", "nat", "-S"],
        );
        assert!(
            !nat.contains("CNI-"),
            "{worker}: rules left after DEL:\n{nat}"
        );
    }

    // Every namespace goes with the guard.
    let names = nets.names.clone();
    drop(nets);
    let left =
        String::from_utf8(run(Command::new(tool("ip")).args(["netns", "list"])).stdout).unwrap();
    for n in names {
        assert!(!left.contains(&n), "{n} left behind:\n{left}");
    }
}

#[test]
fn every_kubeconfig_has_a_current_context_kubectl_resolves_with_the_cluster_ca_and_a_usable_key_pair()
 {
    // (That each kubeconfig loads in kubectl and names the API server is in gen_configs.rs and
    // gen_cluster_cli.rs; this adds what they do not look at.)
    let kubectl = tool("kubectl");
    let t = gen_cluster("1.35", NODES);
    let ca = t.read("pki/ca.crt");
    let home = tempfile::tempdir().unwrap();
    // A closed loopback port: kubectl builds its TLS client (loading the key pair) and then
    // finds nobody there. Never the address in the kubeconfig (not this machine).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b64 = base64::engine::general_purpose::STANDARD;
    for (rel, _) in kubeconfigs(&t) {
        let kubectl = |args: &[&str]| {
            let mut c = Command::new(&kubectl);
            c.env("HOME", home.path())
                .arg("--kubeconfig")
                .arg(t.path().join(&rel))
                .args(args);
            c
        };
        let contexts = run(&mut kubectl(&["config", "get-contexts", "-o", "name"])).stdout;
        let contexts = String::from_utf8(contexts).unwrap();
        let current = run(&mut kubectl(&["config", "current-context"])).stdout;
        let current = String::from_utf8(current).unwrap();
        assert!(
            contexts.lines().any(|c| c == current.trim()),
            "{rel}: current context {current:?} is not among {contexts:?}"
        );
        // --minify keeps what the current context refers to, and fails if a reference dangles.
        let view = run(&mut kubectl(&[
            "config", "view", "--raw", "--minify", "-o", "json",
        ]));
        let view: Value = serde_json::from_slice(&view.stdout).unwrap();
        let cluster = &view["clusters"][0]["cluster"];
        let user = &view["users"][0]["user"];
        let their_ca = b64
            .decode(cluster["certificate-authority-data"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(their_ca).unwrap().trim(),
            ca.trim(),
            "{rel}: the CA is pki/ca.crt"
        );
        assert!(
            user["client-certificate-data"].is_string() && user["client-key-data"].is_string(),
            "{rel}: {user}"
        );
        let o = kubectl(&[
            "--server",
            &format!("https://127.0.0.1:{port}"),
            "--request-timeout",
            "5s",
            "get",
            "--raw",
            "/readyz",
        ])
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(&format!("127.0.0.1:{port} was refused")),
            "{rel}: kubectl should get as far as connecting: {err}"
        );
    }
}

/// A TCP listener on `port` in network namespace `ns` that prints the address of the first peer
/// it accepts (what the receiving pod sees as the sender).
struct PeerListener {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl PeerListener {
    fn start(nets: &Netns, ns: &str, port: u16) -> PeerListener {
        use std::io::BufRead as _;
        let script = format!(
            "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port}))\ns.listen(4)\nprint('listening', flush=True)\n\
             while True:\n    c, a = s.accept()\n    print(a[0], flush=True)\n    c.close()\n"
        );
        let mut child = Command::new(&nets.ip)
            .args(["netns", "exec", ns])
            .arg(tool("python3"))
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "listening",
            "the listener in {ns} did not start"
        );
        PeerListener { child, out }
    }

    /// Connect from namespace `from` to `ip:port`; the address the listener saw, or the
    /// connection's error.
    fn seen_from(
        &mut self,
        nets: &Netns,
        from: &str,
        ip: &str,
        port: u16,
    ) -> Result<String, String> {
        use std::io::BufRead as _;
        let o = Command::new(&nets.ip)
            .args(["netns", "exec", from])
            .arg(tool("python3"))
            .args([
                "-c",
                &format!(
                    "import socket; socket.create_connection(('{ip}', {port}), timeout=3).close()"
                ),
            ])
            .output()
            .unwrap();
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_owned());
        }
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        Ok(line.trim().to_owned())
    }
}

impl Drop for PeerListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_pod_sees_another_workers_pod_by_its_own_address_and_only_traffic_leaving_the_cluster_is_masqueraded()
 {
    let t = gen_cluster("1.35", NODES);
    let mut nets = Netns::new();
    let ip = tool("ip");
    let ip = ip.to_str().unwrap();
    // Two worker "machines" on one wire (their node addresses), and a host outside the cluster
    // behind w1.
    let (n1, n2, outside) = (
        nets.add("w1-node"),
        nets.add("w2-node"),
        nets.add("outside"),
    );
    let (n1, n2, outside) = (n1.as_str(), n2.as_str(), outside.as_str());
    run(Command::new(ip).args([
        "-n", n1, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", n2,
    ]));
    run(Command::new(ip).args([
        "-n", n1, "link", "add", "eth2", "type", "veth", "peer", "name", "eth0", "netns", outside,
    ]));
    for (ns, dev, addr) in [
        (n1, "eth1", "10.0.0.21/24"),
        (n2, "eth1", "10.0.0.22/24"),
        (n1, "eth2", "192.0.2.1/24"),
        (outside, "eth0", "192.0.2.2/24"),
    ] {
        nets.exec(ns, &[ip, "addr", "add", addr, "dev", dev]);
        nets.exec(ns, &[ip, "link", "set", dev, "up"]);
        nets.exec(ns, &[ip, "link", "set", "lo", "up"]);
    }
    let mut pods = vec![];
    let mut ipams = vec![];
    for (worker, node) in [("w1", n1), ("w2", n2)] {
        nets.exec(node, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        let list: Value = serde_json::from_str(
            &t.read(&format!("nodes/{worker}/etc/cni/net.d/10-bridge.conflist")),
        )
        .unwrap();
        assert_eq!(list["plugins"][0]["ipMasq"], false, "{worker}: {list}");
        let pod = nets.add(&format!("{worker}-pod"));
        let ipam = tempfile::tempdir().unwrap();
        let result = cni_add(&nets, node, &pod, &cni_configs(&list, ipam.path()));
        let addr: IpNet = result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        pods.push((pod, addr.addr().to_string()));
        ipams.push(ipam);
    }
    let script = |worker: &str| {
        t.path()
            .join(format!("nodes/{worker}/usr/local/lib/kbin/pod-network"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (p1, p1_ip) = pods[0].clone();
    let (p2, p2_ip) = pods[1].clone();
    let mut l2 = PeerListener::start(&nets, &p2, 8080);
    // Without kbin-pod-network, w1 has no route to w2's pods: the test can fail.
    assert!(
        l2.seen_from(&nets, &p1, &p2_ip, 8080).is_err(),
        "reached w2's pod with no route to it"
    );
    for (worker, node) in [("w1", n1), ("w2", n2)] {
        nets.exec(node, &["sh", &script(worker), "start"]);
    }
    // Pod to pod across nodes: the receiver sees the sender's own address (no NAT).
    assert_eq!(l2.seen_from(&nets, &p1, &p2_ip, 8080).unwrap(), p1_ip);
    let mut l1 = PeerListener::start(&nets, &p1, 8081);
    assert_eq!(l1.seen_from(&nets, &p2, &p1_ip, 8081).unwrap(), p2_ip);
    // Out of the cluster: the outside host sees w1's address, so its replies come back.
    let mut lo = PeerListener::start(&nets, outside, 8082);
    assert_eq!(
        lo.seen_from(&nets, &p1, "192.0.2.2", 8082).unwrap(),
        "192.0.2.1"
    );

    // Started again (every boot, every restart): the same rules, one jump, and a route of a
    // node that left (protocol 152, kbin's) is gone.
    let rules = |ns: &str| nets.exec(ns, &["iptables", "-t", "nat", "-S"]);
    let before = rules(n1);
    nets.exec(
        n1,
        &[
            ip,
            "route",
            "add",
            "10.244.99.0/24",
            "via",
            "10.0.0.22",
            "proto",
            "152",
        ],
    );
    nets.exec(n1, &["sh", &script("w1"), "start"]);
    assert_eq!(rules(n1), before);
    assert_eq!(before.matches("-j KBIN-POD-MASQ").count(), 1, "{before}");
    let routes = nets.exec(n1, &[ip, "route", "show", "proto", "152"]);
    assert!(!routes.contains("10.244.99.0"), "{routes}");
    assert!(routes.contains(" via 10.0.0.22"), "{routes}");
    assert_eq!(l2.seen_from(&nets, &p1, &p2_ip, 8080).unwrap(), p1_ip);

    // Stopped: kbin's routes and chain gone, nothing else touched.
    nets.exec(n1, &["sh", &script("w1"), "stop"]);
    assert_eq!(
        nets.exec(n1, &[ip, "route", "show", "proto", "152"]).trim(),
        ""
    );
    let after = rules(n1);
    assert!(!after.contains("KBIN-POD-MASQ"), "{after}");
    assert!(l2.seen_from(&nets, &p1, &p2_ip, 8080).is_err());
}

/// Three control planes and two workers.
const HA_NODES: &[&str] = &[
    "--control-plane",
    "cp1=10.0.0.10",
    "--control-plane",
    "cp2=10.0.0.11",
    "--control-plane",
    "cp3=10.0.0.12",
    "--worker",
    "w1=10.0.0.21",
    "--worker",
    "w2=10.0.0.22",
];

/// The `server:` of a kubeconfig of the tree.
fn kubeconfig_server(t: &Tree, rel: &str) -> String {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&t.read(rel)).unwrap();
    v["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn with_several_control_planes_workers_reach_the_api_through_haproxy_which_skips_a_lost_one() {
    // One control plane: no load balancer, every kubeconfig names the cluster endpoint.
    let one = gen_cluster("1.35", NODES);
    assert!(
        !one.path()
            .join("nodes/w1/etc/kubernetes/apiserver-lb.cfg")
            .exists()
    );
    assert!(
        !one.read("nodes/w1/install.sh")
            .contains("kbin-apiserver-lb")
    );
    assert_eq!(
        kubeconfig_server(&one, "kubeconfigs/kubelet-w1.conf"),
        "https://10.0.0.10:6443"
    );

    let t = gen_cluster("1.35", HA_NODES);
    for (rel, server) in [
        ("kubeconfigs/kubelet-w1.conf", "https://127.0.0.1:6444"),
        ("kubeconfigs/kube-proxy.conf", "https://127.0.0.1:6444"),
        (
            "kubeconfigs/controller-manager.conf",
            "https://127.0.0.1:6443",
        ),
        ("kubeconfigs/scheduler.conf", "https://127.0.0.1:6443"),
        ("kubeconfigs/admin.conf", "https://10.0.0.10:6443"),
    ] {
        assert_eq!(kubeconfig_server(&t, rel), server, "{rel}");
    }
    assert!(
        t.read("nodes/w1/install.sh")
            .contains("systemctl enable kbin-apiserver-lb.service")
    );
    // A stopping API server fails /readyz first, for longer than the balancers take to see it.
    let unit = "nodes/cp1/etc/systemd/system/kube-apiserver.service";
    assert!(t.read(unit).contains("--shutdown-delay-duration=10s"));
    assert!(!one.read(unit).contains("--shutdown-delay-duration"));
    assert!(
        !t.path()
            .join("nodes/cp1/etc/kubernetes/apiserver-lb.cfg")
            .exists()
    );
    let cfg_path = t.path().join("nodes/w1/etc/kubernetes/apiserver-lb.cfg");
    let cfg = t.read("nodes/w1/etc/kubernetes/apiserver-lb.cfg");
    assert_eq!(cfg.matches("\n    server cp").count(), 3, "{cfg}");
    // HAProxy itself accepts it.
    run(Command::new(tool("haproxy"))
        .args(["-c", "-q", "-f"])
        .arg(&cfg_path));

    // Run it for real, in a namespace where the three API servers are TLS servers with the
    // tree's apiserver certificate, cp2's /readyz failing.
    let mut nets = Netns::new();
    let ns = nets.add("lb");
    let ip = tool("ip");
    let ip = ip.to_str().unwrap();
    nets.exec(&ns, &[ip, "link", "set", "lo", "up"]);
    for a in ["10.0.0.10/32", "10.0.0.11/32", "10.0.0.12/32"] {
        nets.exec(&ns, &[ip, "addr", "add", a, "dev", "lo"]);
    }
    let _cp1 = fake_apiserver(&t, &ns, "cp1", "10.0.0.10", 200);
    let _cp2 = fake_apiserver(&t, &ns, "cp2", "10.0.0.11", 500);
    let mut cp3 = Some(fake_apiserver(&t, &ns, "cp3", "10.0.0.12", 200));
    wait_listening(&ns, &["10.0.0.10", "10.0.0.11", "10.0.0.12"]);
    let _lb = haproxy(&ns, &cfg_path);
    let ca = t.path().join("pki/ca.crt");
    // Through the load balancer, verified against the cluster CA as the kubelet does.
    let ask = || ask_through(&ns, &ca, "https://127.0.0.1:6444/who");
    // HAProxy starts with every server up; cp2 is taken out after two failed checks (2 s
    // apart): wait until ten answers in a row come from the others.
    ten_in_a_row(&ask, &["cp1", "cp3"]);
    // Only the ready ones answer, both of them.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let a = ask();
        seen.insert(a.clone());
        assert!(a == "cp1" || a == "cp3", "{a}");
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // cp3 lost: every request still succeeds, from cp1 (redispatched until cp3 is seen down).
    drop(cp3.take());
    for _ in 0..30 {
        assert_eq!(ask(), "cp1");
    }
}

/// An API server stand-in in netns `ns`: TLS on `addr`:6443 with the tree's apiserver
/// certificate, answering its `name` to every path and `ready` to /readyz.
fn fake_apiserver(t: &Tree, ns: &str, name: &str, addr: &str, ready: u16) -> Kill {
    let script = format!(
        "import http.server, ssl\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def log_message(self, *a): pass\n\
         \x20   def do_GET(self):\n\
         \x20       code = {ready} if self.path == '/readyz' else 200\n\
         \x20       body = b'{name}'\n\
         \x20       self.send_response(code); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)\n\
         s = http.server.ThreadingHTTPServer(('{addr}', 6443), H)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('{crt}', '{key}')\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        crt = t.path().join("pki/apiserver.crt").display(),
        key = t.path().join("pki/apiserver.key").display(),
    );
    Kill(
        Command::new(tool("ip"))
            .args(["netns", "exec", ns])
            .arg(tool("python3"))
            .args(["-c", &script])
            .spawn()
            .unwrap(),
    )
}

/// Wait until every fake API server at `addrs` answers in `ns` (before HAProxy checks them).
fn wait_listening(ns: &str, addrs: &[&str]) {
    for a in addrs {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !Command::new(tool("ip"))
            .args(["netns", "exec", ns])
            .arg(tool("curl"))
            .args(["-sk", "--max-time", "2", &format!("https://{a}:6443/who")])
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(std::time::Instant::now() < deadline, "{a} never listened");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// HAProxy with `cfg` in netns `ns`, in the foreground, until dropped.
fn haproxy(ns: &str, cfg: &Path) -> Kill {
    Kill(
        Command::new(tool("ip"))
            .args(["netns", "exec", ns])
            .arg(tool("haproxy"))
            .args(["-db", "-f"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// GET `url` from netns `ns`, the server verified against `ca`: the body, or curl's error.
fn ask_through(ns: &str, ca: &Path, url: &str) -> String {
    let o = Command::new(tool("ip"))
        .args(["netns", "exec", ns])
        .arg(tool("curl"))
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(if o.status.success() {
        &o.stdout
    } else {
        &o.stderr
    })
    .into_owned()
}

/// Ask until ten answers in a row come from `ready` (within 30 s: HAProxy starts with every
/// server up and takes a failing one out after two checks 2 s apart).
fn ten_in_a_row(ask: &dyn Fn() -> String, ready: &[&str]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        let a = ask();
        assert!(std::time::Instant::now() < deadline, "through the LB: {a}");
        in_a_row = if ready.contains(&a.as_str()) {
            in_a_row + 1
        } else {
            0
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A child killed (and reaped) when dropped.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fenced block of NEXT-STEPS.md that starts with `first_line`.
fn next_steps_block(t: &Tree, first_line: &str) -> String {
    let text = t.read("NEXT-STEPS.md");
    let start = text
        .find(&format!("```\n{first_line}"))
        .unwrap_or_else(|| panic!("no block starting {first_line:?} in NEXT-STEPS.md"));
    let body = &text[start + 4..];
    body[..body.find("```").unwrap()].to_owned()
}

#[test]
fn with_an_api_endpoint_nodes_use_the_operators_load_balancer_whose_config_next_steps_gives() {
    let mut args = HA_NODES.to_vec();
    args.extend(["--api-endpoint", "10.0.0.100:8443"]);
    let t = gen_cluster("1.35", &args);
    for (rel, server) in [
        ("kubeconfigs/kubelet-w1.conf", "https://10.0.0.100:8443"),
        ("kubeconfigs/kube-proxy.conf", "https://10.0.0.100:8443"),
        ("kubeconfigs/admin.conf", "https://10.0.0.100:8443"),
        // The control plane's own components never depend on the load balancer (kubeadm's rule).
        (
            "kubeconfigs/controller-manager.conf",
            "https://127.0.0.1:6443",
        ),
        ("kubeconfigs/scheduler.conf", "https://127.0.0.1:6443"),
    ] {
        assert_eq!(kubeconfig_server(&t, rel), server, "{rel}");
    }
    // No node-local balancer: the operator's replaces it.
    assert!(
        !t.path()
            .join("nodes/w1/etc/kubernetes/apiserver-lb.cfg")
            .exists()
    );
    assert!(!t.read("nodes/w1/install.sh").contains("kbin-apiserver-lb"));
    assert!(
        t.read("ansible/inventory.yml")
            .contains("kbin_api_lb: false")
    );
    // Behind any load balancer, a stopping API server fails /readyz first.
    assert!(
        t.read("nodes/cp1/etc/systemd/system/kube-apiserver.service")
            .contains("--shutdown-delay-duration=10s")
    );
    assert!(
        t.read("cluster.toml")
            .contains("api_endpoint = \"10.0.0.100:8443\"")
    );

    // The configuration NEXT-STEPS gives for the operator's balancer, run in real HAProxy in
    // front of three API servers with the tree's certificate; the client verifies the endpoint's
    // address against the cluster CA, so the certificate must name it.
    let cfg = next_steps_block(&t, "# haproxy.cfg for the load balancer at 10.0.0.100:8443");
    assert!(cfg.contains("    bind *:8443\n"), "{cfg}");
    let cfg_path = t.path().join("operator-haproxy.cfg");
    std::fs::write(&cfg_path, &cfg).unwrap();
    run(Command::new(tool("haproxy"))
        .args(["-c", "-q", "-f"])
        .arg(&cfg_path));
    let mut nets = Netns::new();
    let ns = nets.add("oplb");
    let ip = tool("ip");
    let ip = ip.to_str().unwrap();
    nets.exec(&ns, &[ip, "link", "set", "lo", "up"]);
    for a in [
        "10.0.0.10/32",
        "10.0.0.11/32",
        "10.0.0.12/32",
        "10.0.0.100/32",
    ] {
        nets.exec(&ns, &[ip, "addr", "add", a, "dev", "lo"]);
    }
    let _cp1 = fake_apiserver(&t, &ns, "cp1", "10.0.0.10", 200);
    let _cp2 = fake_apiserver(&t, &ns, "cp2", "10.0.0.11", 200);
    let _cp3 = fake_apiserver(&t, &ns, "cp3", "10.0.0.12", 500);
    wait_listening(&ns, &["10.0.0.10", "10.0.0.11", "10.0.0.12"]);
    let _lb = haproxy(&ns, &cfg_path);
    let ca = t.path().join("pki/ca.crt");
    // cp3 fails /readyz: after two checks only cp1 and cp2 answer, every time.
    ten_in_a_row(
        &|| ask_through(&ns, &ca, "https://10.0.0.100:8443/who"),
        &["cp1", "cp2"],
    );

    // A DNS name: the certificate names it, with the default port.
    let mut args = HA_NODES.to_vec();
    args.extend(["--api-endpoint", "api.cluster.internal"]);
    let d = gen_cluster("1.35", &args);
    assert_eq!(
        kubeconfig_server(&d, "kubeconfigs/kubelet-w2.conf"),
        "https://api.cluster.internal:6443"
    );
    let san = run(Command::new(tool("openssl"))
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(d.path().join("pki/apiserver.crt")));
    assert!(
        String::from_utf8_lossy(&san.stdout).contains("DNS:api.cluster.internal"),
        "{}",
        String::from_utf8_lossy(&san.stdout)
    );

    // A re-run with `--api-endpoint none` goes back to the node-local balancers.
    let o = kbin(d._home.path())
        .args(["gen", "cluster", "--kubernetes-version", "1.35", "--out"])
        .arg(d.path())
        .args(["--api-endpoint", "none"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        kubeconfig_server(&d, "kubeconfigs/kubelet-w2.conf"),
        "https://127.0.0.1:6444"
    );
    assert!(
        d.path()
            .join("nodes/w2/etc/kubernetes/apiserver-lb.cfg")
            .exists()
    );
    assert!(!d.read("cluster.toml").contains("api_endpoint"));
}

#[test]
fn a_bad_api_endpoint_is_one_error_and_nothing_is_written() {
    for (endpoint, says) in [
        ("10.244.3.1:6443", "inside the pod CIDR 10.244.0.0/16"),
        ("10.32.0.50", "inside the service CIDR 10.32.0.0/24"),
        ("lb.internal:0", "is not HOST or HOST:PORT"),
        ("lb.internal:65536", "is not HOST or HOST:PORT"),
        ("lb_internal", "is not HOST or HOST:PORT"),
        ("[fd00::1]:6443", "is IPv6"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("tree");
        let o = kbin(home.path())
            .args(["gen", "cluster", "--kubernetes-version", "1.35"])
            .args(["--pod-cidr", POD_CIDR, "--out"])
            .arg(&out)
            .args(HA_NODES)
            .args(["--api-endpoint", endpoint])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{endpoint}");
        assert!(err.contains(says), "{endpoint}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{err}");
        assert!(!out.exists(), "{endpoint}: something was written");
    }
}
