//! `kbin gen cluster` against the defects real components found (issue 11): each test here
//! failed on the tree kbin generated before and checks what the component needs.

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::cargo::cargo_bin_cmd;

/// A fresh KBIN_HOME and output directory.
struct Env {
    home: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            out: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.out.path().join("cluster")
    }

    /// `kbin gen cluster --out DIR ARGS…`.
    fn gen_cluster(&self, args: &[&str]) -> Output {
        let mut c = cargo_bin_cmd!("kbin");
        c.env("KBIN_HOME", self.home.path())
            .env_remove("KBIN_MANIFEST")
            .args(["gen", "cluster", "--out"])
            .arg(self.dir())
            .args(args);
        c.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.gen_cluster(args);
        assert!(
            o.status.success(),
            "gen cluster {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn fail(&self, args: &[&str]) -> String {
        let o = self.gen_cluster(args);
        assert!(!o.status.success(), "gen cluster {args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
}

const NODES: &[&str] = &[
    "--kubernetes-version",
    "1.36",
    "--control-plane",
    "cp1=10.0.0.10",
    "--worker",
    "w1=10.0.0.21",
    "--worker",
    "w2=10.0.0.22",
];

/// The `--name=value` words of a unit's ExecStart.
fn exec_flags(unit: &str) -> Vec<String> {
    let start = unit.find("ExecStart=").expect("an ExecStart line");
    let mut words = Vec::new();
    for line in unit[start..].lines() {
        let line = line.trim_start_matches("ExecStart=").trim();
        let cont = line.ends_with('\\');
        words.extend(
            line.trim_end_matches('\\')
                .split_whitespace()
                .map(str::to_owned),
        );
        if !cont {
            break;
        }
    }
    words
}

fn flag<'a>(flags: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    flags.iter().find_map(|f| f.strip_prefix(&prefix))
}

fn yaml(text: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(text).unwrap()
}

#[test]
fn kube_proxy_looks_for_the_node_the_kubelet_registered_and_sets_node_port_addresses() {
    for (version, want) in [("1.36", "primary"), ("1.28", "10.0.0.21/32")] {
        let env = Env::new();
        let mut args = NODES.to_vec();
        args[1] = version;
        env.ok(&args);
        let kubelet = exec_flags(&env.read("nodes/w1/etc/systemd/system/kubelet.service"));
        let proxy = yaml(&env.read("nodes/w1/var/lib/kube-proxy/config.yaml"));
        assert_eq!(flag(&kubelet, "hostname-override"), Some("w1"));
        assert_eq!(proxy["hostnameOverride"].as_str(), Some("w1"), "{version}");
        assert_eq!(
            proxy["nodePortAddresses"][0].as_str(),
            Some(want),
            "{version}: `primary` exists from kube-proxy 1.29"
        );
    }
}

#[test]
fn a_control_plane_added_to_a_tree_joins_the_running_etcd_after_member_add() {
    let env = Env::new();
    env.ok(NODES);
    let cp1_before = env.read("nodes/cp1/etc/systemd/system/etcd.service");
    // The operator adds cp2 to cluster.toml and runs gen cluster again.
    let spec = env.read("cluster.toml")
        + "\n[[nodes]]\nname = \"cp2\"\nip = \"10.0.0.11\"\ncontrol_plane = true\n";
    std::fs::write(env.dir().join("cluster.toml"), spec).unwrap();
    let said = env.ok(&["--kubernetes-version", "1.36"]);
    assert!(said.contains("control plane cp2 is new"), "{said}");
    let cp2 = exec_flags(&env.read("nodes/cp2/etc/systemd/system/etcd.service"));
    assert_eq!(flag(&cp2, "initial-cluster-state"), Some("existing"));
    assert_eq!(
        flag(&cp2, "initial-cluster"),
        Some("cp1=https://10.0.0.10:2380,cp2=https://10.0.0.11:2380")
    );
    // The first member's unit is unchanged: it bootstrapped the cluster alone.
    assert_eq!(
        env.read("nodes/cp1/etc/systemd/system/etcd.service"),
        cp1_before
    );
    assert!(env.read("cluster.toml").contains("joins_etcd = true"));
    let next = env.read("NEXT-STEPS.md");
    let add = next
        .find("member add cp2 --peer-urls=https://10.0.0.11:2380")
        .expect("NEXT-STEPS adds the member");
    let start = next
        .find("systemctl start etcd   # on cp2")
        .expect("then starts it");
    assert!(add < start, "member add comes before starting cp2's etcd");
    // Byte-identical on a re-run: cp2 stays a joining member.
    env.ok(&["--kubernetes-version", "1.36"]);
    assert_eq!(
        flag(
            &exec_flags(&env.read("nodes/cp2/etc/systemd/system/etcd.service")),
            "initial-cluster-state"
        ),
        Some("existing")
    );
}

#[test]
fn pod_cidrs_agree_by_construction_between_cni_and_the_node_objects() {
    let env = Env::new();
    env.ok(NODES);
    let cm = exec_flags(&env.read("nodes/cp1/etc/systemd/system/kube-controller-manager.service"));
    assert_eq!(
        flag(&cm, "allocate-node-cidrs"),
        Some("false"),
        "the controller manager must not allocate pod CIDRs of its own"
    );
    let next = env.read("NEXT-STEPS.md");
    let pod_cidr: ipnet::Ipv4Net = "10.200.0.0/16".parse().unwrap();
    let mut seen = Vec::new();
    for w in ["w1", "w2"] {
        let conf: serde_json::Value =
            serde_json::from_str(&env.read(&format!("nodes/{w}/etc/cni/net.d/10-bridge.conflist")))
                .unwrap();
        let subnet = conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
            .as_str()
            .unwrap()
            .to_owned();
        let net: ipnet::Ipv4Net = subnet.parse().unwrap();
        assert!(pod_cidr.contains(&net), "{subnet} inside {pod_cidr}");
        assert!(!seen.contains(&subnet), "{subnet} given twice");
        let patch = format!(
            "kubectl patch node {w} -p '{{\"spec\":{{\"podCIDR\":\"{subnet}\",\"podCIDRs\":[\"{subnet}\"]}}}}'"
        );
        assert!(
            next.contains(&patch),
            "NEXT-STEPS gives {w} {subnet}:\n{next}"
        );
        seen.push(subnet);
    }
}

#[test]
fn secrets_are_encrypted_with_secretbox_and_an_older_aescbc_key_stays_readable() {
    let env = Env::new();
    env.ok(NODES);
    let rel = "nodes/cp1/etc/kubernetes/encryption-config.yaml";
    let conf = yaml(&env.read(rel));
    let providers = &conf["resources"][0]["providers"];
    assert!(providers[0]["secretbox"]["keys"][0]["secret"].is_string());
    assert!(providers[1]["identity"].is_mapping());
    assert!(!env.read(rel).contains("aescbc:"));

    // A tree made when kbin used aescbc: its key stays, second, under its old name.
    let old = Env::new();
    let legacy = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
    std::fs::create_dir_all(old.dir().join("secrets")).unwrap();
    std::fs::write(
        old.dir().join("secrets/encryption-key"),
        format!("{legacy}\n"),
    )
    .unwrap();
    old.ok(NODES);
    let conf = yaml(&old.read(rel));
    let providers = &conf["resources"][0]["providers"];
    assert!(providers[0]["secretbox"].is_mapping());
    assert_eq!(
        providers[1]["aescbc"]["keys"][0]["name"].as_str(),
        Some("key1")
    );
    assert_eq!(
        providers[1]["aescbc"]["keys"][0]["secret"].as_str(),
        Some(legacy)
    );
}

#[test]
fn a_damaged_encryption_key_is_an_error_and_is_never_replaced() {
    let env = Env::new();
    env.ok(NODES);
    let key = env.dir().join("secrets/secretbox-key");
    std::fs::write(&key, "not a key\n").unwrap();
    let before = env.read("nodes/cp1/etc/kubernetes/encryption-config.yaml");
    let err = env.fail(NODES);
    assert!(
        err.contains("secretbox-key is not a usable Secrets-encryption key")
            && err.contains("restore it"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "not a key\n");
    assert_eq!(
        env.read("nodes/cp1/etc/kubernetes/encryption-config.yaml"),
        before
    );
}

#[test]
fn the_resolv_conf_flag_reaches_the_kubelet_and_next_steps() {
    let env = Env::new();
    let mut args = NODES.to_vec();
    args.extend(["--resolv-conf", "/run/systemd/resolve/resolv.conf"]);
    env.ok(&args);
    let kubelet = yaml(&env.read("nodes/w1/var/lib/kubelet/config.yaml"));
    assert_eq!(
        kubelet["resolvConf"].as_str(),
        Some("/run/systemd/resolve/resolv.conf")
    );
    assert!(
        env.read("NEXT-STEPS.md")
            .contains("/run/systemd/resolve/resolv.conf")
    );
    // Kept by a bare re-run (it is in cluster.toml).
    env.ok(&["--kubernetes-version", "1.36"]);
    let kubelet = yaml(&env.read("nodes/w1/var/lib/kubelet/config.yaml"));
    assert!(kubelet["resolvConf"].is_string());
}

#[test]
fn ipv6_addresses_and_loopback_nodes_are_refused_before_anything_is_written() {
    for (args, want) in [
        (
            vec![
                "--kubernetes-version",
                "1.36",
                "--control-plane",
                "cp1=fd00::10",
            ],
            "IPv6",
        ),
        (
            vec![
                "--kubernetes-version",
                "1.36",
                "--control-plane",
                "cp1=10.0.0.10",
                "--pod-cidr",
                "fd00:200::/56",
            ],
            "IPv6",
        ),
        (
            vec![
                "--kubernetes-version",
                "1.36",
                "--control-plane",
                "cp1=127.0.0.1",
            ],
            "nodeIP can't be loopback",
        ),
        (
            vec!["--kubernetes-version", "1.36", "--name", "50%off"],
            "DNS label",
        ),
    ] {
        let env = Env::new();
        let err = env.fail(&args);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !env.dir().exists(),
            "{args:?} wrote {}",
            env.dir().display()
        );
    }
}

#[test]
fn a_one_machine_cluster_uses_the_machine_s_routable_address_not_loopback() {
    let env = Env::new();
    let said = env.ok(&["--kubernetes-version", "1.36"]);
    assert!(
        said.contains("one-machine cluster: node node-0 at "),
        "{said}"
    );
    let kubelet = exec_flags(&env.read("nodes/node-0/etc/systemd/system/kubelet.service"));
    let ip: std::net::Ipv4Addr = flag(&kubelet, "node-ip").unwrap().parse().unwrap();
    assert!(!ip.is_loopback(), "kubelet --node-ip={ip}");
    let api = exec_flags(&env.read("nodes/node-0/etc/systemd/system/kube-apiserver.service"));
    assert_eq!(
        flag(&api, "advertise-address"),
        Some(ip.to_string().as_str())
    );
    // The API server's certificate names the address, and loopback still works locally.
    let pem = std::fs::read(env.dir().join("pki/apiserver.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
            }
            _ => None,
        })
        .collect();
    for want in [ip.to_string(), "127.0.0.1".into()] {
        assert!(sans.contains(&want), "{want} in {sans:?}");
    }
}

#[test]
fn host_profiles_decide_cgroup_driver_oom_score_and_conntrack_together() {
    for (profile, driver, systemd_cgroup, restrict, conntrack) in [
        ("systemd", "systemd", true, false, false),
        ("sandbox", "cgroupfs", false, true, true),
    ] {
        for version in ["1.30", "1.36"] {
            let env = Env::new();
            let mut args = NODES.to_vec();
            args[1] = version;
            args.extend(["--host-profile", profile]);
            env.ok(&args);
            let kubelet = yaml(&env.read("nodes/w1/var/lib/kubelet/config.yaml"));
            assert_eq!(kubelet["cgroupDriver"].as_str(), Some(driver));
            let containerd: toml::Table = env
                .read("nodes/w1/etc/containerd/config.toml")
                .parse()
                .unwrap();
            let text = env.read("nodes/w1/etc/containerd/config.toml");
            assert!(
                text.contains(&format!("SystemdCgroup = {systemd_cgroup}")),
                "{profile} {version}:\n{text}"
            );
            assert_eq!(
                text.contains("restrict_oom_score_adj = true"),
                restrict,
                "{profile} {version}:\n{text}"
            );
            assert!(containerd.contains_key("plugins"));
            let proxy = yaml(&env.read("nodes/w1/var/lib/kube-proxy/config.yaml"));
            assert_eq!(
                proxy["conntrack"]["maxPerCore"].as_i64() == Some(0),
                conntrack,
                "{profile} {version}"
            );
            assert!(
                env.read("cluster.toml")
                    .contains(&format!("host_profile = \"{profile}\""))
            );
        }
    }
    let env = Env::new();
    let mut args = NODES.to_vec();
    args.extend(["--host-profile", "docker"]);
    let err = env.fail(&args);
    assert!(err.contains("not one of systemd, sandbox"), "{err}");
}

#[test]
fn etcd_lists_each_client_url_once_and_next_steps_drop_etcdctl_api_for_etcd_3_4_and_later() {
    for version in ["1.28", "1.36"] {
        let env = Env::new();
        let mut args = NODES.to_vec();
        args[1] = version;
        env.ok(&args);
        let etcd = exec_flags(&env.read("nodes/cp1/etc/systemd/system/etcd.service"));
        let urls: Vec<&str> = flag(&etcd, "listen-client-urls")
            .unwrap()
            .split(',')
            .collect();
        let mut unique = urls.clone();
        unique.dedup();
        assert_eq!(urls, unique);
        let next = env.read("NEXT-STEPS.md");
        assert!(
            !next.contains("ETCDCTL_API"),
            "{version}: etcd ≥ 3.4 needs no ETCDCTL_API"
        );
        assert!(next.contains("etcdctl --endpoints="), "{next}");
    }
}

#[test]
fn certs_renew_refreshes_the_copies_in_node_trees_and_tarballs_and_names_the_nodes() {
    let env = Env::new();
    env.ok(NODES);
    let tree_copy = "nodes/w1/etc/kubernetes/pki/kubelet.crt";
    let before = env.read(tree_copy);
    let unit = env.read("nodes/w1/etc/systemd/system/kubelet.service");
    let mut c = cargo_bin_cmd!("kbin");
    let o = c
        .env("KBIN_HOME", env.home.path())
        .args(["certs", "renew", "--json", "--out"])
        .arg(env.dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let redeploy: Vec<&str> = report["redeploy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(redeploy, ["cp1", "w1", "w2"]);
    let renewed = env.read("pki/nodes/w1/kubelet.crt");
    assert_ne!(renewed, before, "renew makes a new certificate");
    assert_eq!(env.read(tree_copy), renewed, "the node tree holds it");
    assert_eq!(
        env.read("nodes/w1/etc/systemd/system/kubelet.service"),
        unit
    );
    // The tarball too.
    let t = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-C")
        .arg(t.path())
        .arg("-xzf")
        .arg(env.dir().join("nodes/w1.tar.gz"))
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(
        std::fs::read_to_string(t.path().join("etc/kubernetes/pki/kubelet.crt")).unwrap(),
        renewed
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("etc/kubernetes/kubelet.conf")).unwrap(),
        env.read("kubeconfigs/kubelet-w1.conf")
    );
}
