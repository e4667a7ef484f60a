//! Configs, units, node bundles and next steps (issue 7), against real tools: systemd-analyze,
//! etcd/etcdctl, openssl, sh (install.sh), tar.

use crate::common;

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::toolchain::{FixtureToolchain, write_toolchain};
use kbin::r#gen::bundle::{self, BINARIES, Options};
use kbin::r#gen::certs::placed_on;
use kbin::r#gen::configs::{ClusterInput, NodeInput};
use kbin::r#gen::host::HostProfile;
use kbin::r#gen::versions::Versions;
use kbin::store::{Layout, Settings};

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is missing: run scripts/setup-test-deps");
}

/// A toolchain in `home`: a toolchain.lock (the receipt type) and stub executables.
fn install_toolchain(home: &Path, name: &str, k8s: &str, versions: &[(&str, &str)], pause: &str) {
    let fixture = FixtureToolchain::full(
        name,
        k8s,
        |c| versions.iter().find(|(n, _)| *n == c).unwrap().1,
        ("1.11.1", pause),
    );
    write_toolchain(home, &fixture, |b, v| format!("#!/bin/sh\necho {b} {v}\n"));
}

const OLD: (&str, &str, &[(&str, &str)], &str) = (
    "old",
    "1.30.14",
    &[
        ("etcd", "3.5.16"),
        ("containerd", "1.7.23"),
        ("runc", "1.1.14"),
        ("cni-plugins", "1.4.0"),
        ("crictl", "1.30.0"),
    ],
    "3.9",
);
const NEW: (&str, &str, &[(&str, &str)], &str) = (
    "new",
    "1.35.8",
    &[
        ("etcd", "3.6.10"),
        ("containerd", "2.2.3"),
        ("runc", "1.4.2"),
        ("cni-plugins", "1.9.1"),
        ("crictl", "1.35.0"),
    ],
    "3.10.1",
);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The fixed spec: one control plane, two workers.
fn cluster() -> ClusterInput {
    let node = |name: &str, addr: &str, cp: bool, w: bool, sub: &str| NodeInput {
        name: name.into(),
        ip: ip(addr),
        control_plane: cp,
        worker: w,
        pod_subnet: sub.into(),
        joins_etcd: false,
    };
    ClusterInput {
        name: "kubernetes".into(),
        api_server_url: "https://10.0.0.10:6443".into(),
        service_cidr: "10.32.0.0/24".into(),
        cluster_dns: ip("10.32.0.10"),
        cluster_domain: "cluster.local".into(),
        pod_cidr: "10.200.0.0/16".into(),
        host_profile: HostProfile::Systemd,
        resolv_conf: None,
        api_lb: false,
        api_endpoint: None,
        nodes: vec![
            node("cp1", "10.0.0.10", true, false, "10.200.0.0/24"),
            node("w1", "10.0.0.21", false, true, "10.200.1.0/24"),
            node("w2", "10.0.0.22", false, true, "10.200.2.0/24"),
        ],
    }
}

/// Placeholder PKI and kubeconfig files where the PKI step puts them.
fn fake_pki(out: &Path, c: &ClusterInput) {
    for n in &c.nodes {
        for p in placed_on(&n.name, n.control_plane, n.worker) {
            let path = out.join(&p.from);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("placeholder {}\n", p.from)).unwrap();
        }
    }
}

struct Gen {
    _home: tempfile::TempDir,
    out: tempfile::TempDir,
    written: bundle::Written,
}

fn generate(tc: (&str, &str, &[(&str, &str)], &str), cgroup_v1: bool) -> Gen {
    let home = tempfile::tempdir().unwrap();
    install_toolchain(home.path(), tc.0, tc.1, tc.2, tc.3);
    let versions = Versions::from_toolchain(&Layout::new(home.path()), Some(tc.0)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let c = cluster();
    fake_pki(out.path(), &c);
    let opts = Options {
        out: out.path().to_owned(),
        no_binaries: false,
        cgroup_v1,
        encryption_key_step: None,
    };
    let written = write_committed(&c, &versions, &opts);
    Gen {
        _home: home,
        out,
        written,
    }
}

/// `bundle::write` staged, then committed (what `kbin gen cluster` does after the PKI step).
fn write_committed(c: &ClusterInput, v: &Versions, opts: &Options) -> bundle::Written {
    let staged = kbin::r#gen::Staged::new();
    let w = bundle::write(c, v, opts, &staged).unwrap();
    staged.commit().unwrap();
    w
}

fn read(g: &Gen, rel: &str) -> String {
    std::fs::read_to_string(g.out.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The files whose content depends on versions, concatenated for one snapshot.
fn gated_files(g: &Gen) -> String {
    let mut s = String::new();
    for rel in [
        "nodes/cp1/etc/systemd/system/etcd.service",
        "nodes/cp1/etc/kubernetes/kube-scheduler.yaml",
        "nodes/w1/etc/containerd/config.toml",
        "nodes/w1/etc/cni/net.d/10-bridge.conflist",
        "nodes/w1/var/lib/kubelet/config.yaml",
        "nodes/w1/etc/systemd/system/kubelet.service",
        "nodes/w1/var/lib/kube-proxy/config.yaml",
        "nodes/cp1/usr/local/lib/kbin/etcd-backup",
        "nodes/cp1/usr/local/lib/kbin/etcd-restore",
        "nodes/w1/usr/local/lib/kbin/pod-network",
        "nodes/w1/etc/systemd/system/kbin-pod-network.service",
        "addons/coredns.yaml",
    ] {
        s.push_str(&format!("==> {rel}\n{}\n", read(g, rel)));
    }
    s
}

#[test]
fn older_toolchain_gets_containerd_v2_config_and_no_runtime_endpoint_flag() {
    let g = generate(OLD, false);
    insta::assert_snapshot!("old_toolchain_1_30_containerd_1_7", gated_files(&g));
}

#[test]
fn newer_toolchain_gets_containerd_v3_config_and_cgroup_v1_opt_out() {
    let g = generate(NEW, true);
    insta::assert_snapshot!(
        "new_toolchain_1_35_containerd_2_2_cgroup_v1",
        gated_files(&g)
    );
}

#[test]
fn version_gated_rules_hold_in_the_generated_files() {
    let old = generate(OLD, true);
    let new = generate(NEW, true);
    let cfg = read(&old, "nodes/w1/etc/containerd/config.toml");
    assert!(
        cfg.contains("version = 2\n")
            && cfg.contains("io.containerd.grpc.v1.cri")
            && cfg.contains("pause:3.9"),
        "{cfg}"
    );
    let cfg = read(&new, "nodes/w1/etc/containerd/config.toml");
    assert!(
        cfg.contains("version = 3\n")
            && cfg.contains("io.containerd.cri.v1.runtime")
            && cfg.contains("pause:3.10.1"),
        "{cfg}"
    );
    assert!(cfg.contains("bin_dirs = ["), "{cfg}");
    for g in [&old, &new] {
        let unit = read(g, "nodes/w1/etc/systemd/system/kubelet.service");
        assert!(!unit.contains("--container-runtime"), "{unit}");
        assert!(
            read(g, "nodes/w1/var/lib/kubelet/config.yaml")
                .contains("containerRuntimeEndpoint: unix:///run/containerd/containerd.sock")
        );
    }
    // 1.30 on cgroup v1 runs without the field; 1.35 needs it.
    assert!(!read(&old, "nodes/w1/var/lib/kubelet/config.yaml").contains("failCgroupV1"));
    assert!(read(&new, "nodes/w1/var/lib/kubelet/config.yaml").contains("failCgroupV1: false"));
    assert!(read(&new, "NEXT-STEPS.md").contains("failCgroupV1: false"));
    let v2 = generate(NEW, false);
    assert!(!read(&v2, "nodes/w1/var/lib/kubelet/config.yaml").contains("failCgroupV1"));
    assert!(read(&v2, "NEXT-STEPS.md").contains("--cgroup-v1"));
}

fn files_under(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn every_unit_passes_systemd_analyze_verify_without_warnings() {
    let analyze = tool("systemd-analyze");
    for tc in [OLD, NEW] {
        let g = generate(tc, false);
        let stubs = tempfile::tempdir().unwrap();
        let mut units = 0;
        for node in ["cp1", "w1"] {
            let dir = g
                .out
                .path()
                .join("nodes")
                .join(node)
                .join("etc/systemd/system");
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let text = std::fs::read_to_string(&p).unwrap();
                // Give systemd-analyze the binaries the unit names: the bundled ones, copied.
                let root = g.out.path().join("nodes").join(node);
                let text = text
                    .replace(
                        "/usr/local/bin/",
                        &format!("{}/usr/local/bin/", root.display()),
                    )
                    .replace(
                        "/usr/local/lib/",
                        &format!("{}/usr/local/lib/", root.display()),
                    );
                let copy = stubs.path().join(p.file_name().unwrap());
                std::fs::write(&copy, text).unwrap();
                let o = Command::new(&analyze)
                    .arg("verify")
                    .arg(&copy)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&o.stderr);
                assert!(
                    o.status.success() && stderr.trim().is_empty(),
                    "{}: {stderr}",
                    p.display()
                );
                units += 1;
            }
        }
        // cp1: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, etcd-backup
        // (service and timer); w1: those of bundle::UNITS for workers (kbin-pod-network,
        // containerd, kubelet, kube-proxy).
        assert_eq!(units, 10);
    }
}

#[test]
fn every_yaml_toml_and_json_file_parses() {
    for tc in [OLD, NEW] {
        let g = generate(tc, true);
        let mut seen = 0;
        for rel in files_under(&g.out.path().join("nodes")) {
            let path = g.out.path().join("nodes").join(&rel);
            if rel.contains("/usr/local/bin/") || rel.contains("/opt/") || rel.ends_with(".tar.gz")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if rel.ends_with(".yaml") {
                let _: serde_yaml_ng::Value =
                    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
                seen += 1;
            } else if rel.ends_with(".toml") {
                let _: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
                seen += 1;
            } else if rel.ends_with(".conflist") {
                let _: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
                seen += 1;
            }
        }
        // cp1: scheduler, encryption; w1, w2: kubelet, kube-proxy, crictl, config.toml, conflist.
        assert_eq!(seen, 2 + 2 * 5);
    }
}

#[test]
fn install_sh_with_destdir_lays_out_exactly_the_node_tree_and_the_tarballs_hold_the_same() {
    let g = generate(NEW, false);
    for node in ["cp1", "w1"] {
        let tree = g.out.path().join("nodes").join(node);
        let dest = tempfile::tempdir().unwrap();
        let o = Command::new(tool("sh"))
            .arg(tree.join("install.sh"))
            .env("DESTDIR", dest.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut expected = files_under(&tree);
        expected.remove("install.sh");
        assert_eq!(files_under(dest.path()), expected);
        let key = "etc/kubernetes/pki/ca.crt";
        assert_eq!(
            std::fs::read(dest.path().join(key)).unwrap(),
            std::fs::read(tree.join(key)).unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        if node == "cp1" {
            let m = std::fs::metadata(dest.path().join("etc/kubernetes/pki/ca.key")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }

        // The node tarball plus the shared binaries tarball unpack to the same tree.
        let unpacked = tempfile::tempdir().unwrap();
        let role = if node == "cp1" {
            "control-plane"
        } else {
            "worker"
        };
        for t in [
            g.out.path().join(format!("nodes/{node}.tar.gz")),
            g.out
                .path()
                .join(format!("bundles/{role}-amd64-binaries.tar.gz")),
        ] {
            let st = Command::new(tool("tar"))
                .arg("-C")
                .arg(unpacked.path())
                .arg("-xzf")
                .arg(&t)
                .status()
                .unwrap();
            assert!(st.success(), "{}", t.display());
        }
        assert_eq!(files_under(unpacked.path()), files_under(&tree));
        // ... and the node tarball alone holds no binary.
        let listing = Command::new(tool("tar"))
            .arg("-tzf")
            .arg(g.out.path().join(format!("nodes/{node}.tar.gz")))
            .output()
            .unwrap();
        let listing = String::from_utf8(listing.stdout).unwrap();
        assert!(!listing.contains("usr/local/bin"), "{listing}");
    }
    let installed: Vec<_> = BINARIES.iter().map(|b| b.1).collect();
    assert!(installed.contains(&"kubelet"));
}

#[test]
fn re_running_generation_is_byte_identical_and_keeps_the_encryption_key() {
    let home = tempfile::tempdir().unwrap();
    install_toolchain(home.path(), NEW.0, NEW.1, NEW.2, NEW.3);
    let v = Versions::from_toolchain(&Layout::new(home.path()), Some("new")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let c = cluster();
    fake_pki(out.path(), &c);
    let opts = Options {
        out: out.path().to_owned(),
        no_binaries: false,
        cgroup_v1: false,
        encryption_key_step: None,
    };
    write_committed(&c, &v, &opts);
    let snap = |p: &Path| -> Vec<(String, Vec<u8>)> {
        files_under(p)
            .into_iter()
            .map(|f| {
                let b = std::fs::read(p.join(&f)).unwrap();
                (f, b)
            })
            .collect()
    };
    let first = snap(out.path());
    write_committed(&c, &v, &opts);
    assert_eq!(snap(out.path()), first);
}

#[test]
fn no_binaries_leaves_the_trees_without_binaries_and_no_shared_bundle() {
    let home = tempfile::tempdir().unwrap();
    install_toolchain(home.path(), OLD.0, OLD.1, OLD.2, OLD.3);
    let v = Versions::from_toolchain(&Layout::new(home.path()), Some("old")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let c = cluster();
    fake_pki(out.path(), &c);
    let opts = Options {
        out: out.path().to_owned(),
        no_binaries: true,
        cgroup_v1: false,
        encryption_key_step: None,
    };
    let w = write_committed(&c, &v, &opts);
    assert!(w.binary_bundles.is_empty());
    assert!(!out.path().join("nodes/w1/usr/local/bin").exists());
    assert!(w.next_steps_text.contains("No binaries are bundled"));
}

#[test]
fn missing_pki_file_is_a_clear_error_naming_it() {
    let home = tempfile::tempdir().unwrap();
    install_toolchain(home.path(), OLD.0, OLD.1, OLD.2, OLD.3);
    let v = Versions::from_toolchain(&Layout::new(home.path()), Some("old")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let c = cluster();
    fake_pki(out.path(), &c);
    std::fs::remove_file(out.path().join("pki/sa.key")).unwrap();
    let e = bundle::write(
        &c,
        &v,
        &Options {
            out: out.path().to_owned(),
            ..Default::default()
        },
        &kbin::r#gen::Staged::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("pki/sa.key"), "{e}");
    assert!(
        !out.path().join("nodes/cp1").exists(),
        "no half-written tree"
    );
}

#[test]
fn no_toolchain_and_no_kubernetes_version_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::new(home.path());
    let e = Versions::from_toolchain(&layout, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no toolchain") && e.contains("--kubernetes-version"),
        "{e}"
    );
    let e = Versions::from_toolchain(&layout, Some("1.30"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"1.30\" is not installed"), "{e}");
    // The default toolchain is used when set.
    install_toolchain(home.path(), OLD.0, OLD.1, OLD.2, OLD.3);
    layout
        .save_settings(&Settings {
            default: Some("old".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        Versions::from_toolchain(&layout, None)
            .unwrap()
            .kubernetes
            .to_string(),
        "1.30.14"
    );
}

#[test]
fn next_steps_walk_a_new_user_through_every_node_in_order() {
    let g = generate(OLD, false);
    let t = read(&g, "NEXT-STEPS.md");
    assert_eq!(t, g.written.next_steps_text);
    for must in [
        "scp nodes/cp1.tar.gz bundles/control-plane-amd64-binaries.tar.gz root@10.0.0.10:/tmp/",
        "scp nodes/w2.tar.gz bundles/worker-amd64-binaries.tar.gz root@10.0.0.22:/tmp/",
        "/tmp/kbin-w1/install.sh",
        "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        "endpoint health",
        "get --raw /readyz",
        "kubectl get nodes",
        "ip route show proto 152",
        "CoreDNS 1.11.1",
        "super-admin.conf create clusterrolebinding kubeadm:cluster-admins",
        "kubectl apply --server-side --field-manager=kbin -f addons/\nkubectl -n kube-system rollout status deployment/coredns",
    ] {
        assert!(t.contains(must), "NEXT-STEPS.md lacks {must:?}:\n{t}");
    }
    let order = [
        "systemctl start etcd",
        "systemctl start kube-apiserver",
        "systemctl start kube-controller-manager kube-scheduler",
        "systemctl start kbin-pod-network",
        "systemctl start containerd",
        "systemctl start kubelet",
        "systemctl start kube-proxy",
    ];
    let pos: Vec<usize> = order
        .iter()
        .map(|o| t.find(o).unwrap_or_else(|| panic!("{o}")))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
}

// --- real etcd ---------------------------------------------------------------------------

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The ExecStart arguments of a unit, one string per flag.
fn exec_start_args(unit: &str) -> Vec<String> {
    let line = unit
        .split("ExecStart=")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let joined = line.replace("\\\n", " ");
    let first = joined.lines().next().unwrap();
    first
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

#[test]
fn real_etcd_started_with_the_generated_flags_serves_etcdctl_with_the_client_certificate() {
    let etcd = tool("etcd");
    let etcdctl = tool("etcdctl");
    // Debian's etcd is 3.4: generate for a toolchain whose etcd is 3.4, gated by the same table.
    let home = tempfile::tempdir().unwrap();
    let vers: &[(&str, &str)] = &[
        ("etcd", "3.4.23"),
        ("containerd", "1.7.23"),
        ("runc", "1.1.14"),
        ("cni-plugins", "1.4.0"),
        ("crictl", "1.30.0"),
    ];
    install_toolchain(home.path(), "etcd34", "1.30.14", vers, "3.9");
    let out = tempfile::tempdir().unwrap();
    // The real `kbin gen cluster`: the PKI step's certificates, one node (control plane and
    // worker). The test runs etcd on loopback: the node's address becomes 127.0.0.2 below.
    let o = kbin(home.path())
        .args(["gen", "cluster", "--toolchain", "etcd34", "--out"])
        .arg(out.path())
        .args([
            "--control-plane",
            "node-0=10.0.0.10",
            "--worker",
            "node-0=10.0.0.10",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let node = std::fs::read_dir(out.path().join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    let root = node;
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/etcd.service")).unwrap();
    assert!(
        unit.contains("--logger=zap"),
        "3.4 gets the zap logger flag:\n{unit}"
    );
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let data = out.path().join("etcd-data");
    let args: Vec<String> = exec_start_args(&unit)
        .into_iter()
        .map(|a| {
            a.replace(
                "/etc/kubernetes/",
                &format!("{}/etc/kubernetes/", root.display()),
            )
            .replace("/var/lib/etcd", &data.display().to_string())
            .replace("10.0.0.10", "127.0.0.2")
            .replace(":2379", &format!(":{client}"))
            .replace(":2380", &format!(":{peer}"))
            .replace(":2381", &format!(":{metrics}"))
        })
        .collect();
    assert!(
        args.iter()
            .any(|a| a.starts_with("--client-cert-auth=true")),
        "{args:?}"
    );
    let log = std::fs::File::create(out.path().join("etcd.log")).unwrap();
    let _etcd = Kill(
        Command::new(&etcd)
            .args(&args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let pki = root.join("etc/kubernetes/pki/etcd");
    let endpoint = format!("https://127.0.0.1:{client}");
    let ctl = |with_cert: bool| {
        let mut cmd = Command::new(&etcdctl);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()));
        if with_cert {
            cmd.arg(format!(
                "--cert={}",
                pki.join("healthcheck-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                pki.join("healthcheck-client.key").display()
            ));
        }
        cmd.args(["--command-timeout=3s", "endpoint", "health"]);
        cmd.output().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = ctl(true);
        if o.status.success() {
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(all.contains("is healthy"), "{all}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd never became healthy: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(out.path().join("etcd.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = ctl(false);
    assert!(
        !o.status.success(),
        "etcd must refuse a client without a certificate"
    );
}

// --- kbin env ----------------------------------------------------------------------------

fn kbin(home: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::cargo::cargo_bin_cmd!("kbin");
    c.env("KBIN_HOME", home).env_remove("SHELL");
    c
}

#[test]
fn env_exports_the_toolchain_bin_and_the_cluster_admin_kubeconfig_for_each_shell() {
    let home = tempfile::tempdir().unwrap();
    install_toolchain(home.path(), OLD.0, OLD.1, OLD.2, OLD.3);
    let cluster = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cluster.path().join("kubeconfigs")).unwrap();
    std::fs::write(cluster.path().join("kubeconfigs/admin.conf"), "").unwrap();
    let bin = Layout::new(home.path()).toolchain_bin("old");
    let admin = cluster.path().join("kubeconfigs/admin.conf");
    for (shell, path_line, kc_line, completion) in [
        (
            "bash",
            format!("export PATH='{}':\"$PATH\";", bin.display()),
            format!("export KUBECONFIG='{}';", admin.display()),
            "kubectl completion bash",
        ),
        (
            "zsh",
            format!("export PATH='{}':\"$PATH\";", bin.display()),
            format!("export KUBECONFIG='{}';", admin.display()),
            "kubectl completion zsh",
        ),
        (
            "fish",
            format!("set -gx PATH '{}' $PATH;", bin.display()),
            format!("set -gx KUBECONFIG '{}';", admin.display()),
            "kubectl completion fish | source",
        ),
    ] {
        let out = kbin(home.path())
            .args(["env", "old", "--shell", shell, "--cluster"])
            .arg(cluster.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&path_line) && text.contains(&kc_line) && text.contains(completion),
            "{shell}:\n{text}"
        );
    }
    // The bash output is valid bash that sets the variables.
    let out = kbin(home.path())
        .args(["env", "old", "--shell", "bash", "--cluster"])
        .arg(cluster.path())
        .output()
        .unwrap();
    let script = format!(
        "{}\nprintf '%s\\n' \"$KUBECONFIG\" \"${{PATH%%:*}}\"",
        String::from_utf8(out.stdout).unwrap()
    );
    let o = Command::new(tool("bash"))
        .arg("-c")
        .arg(script)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    // The toolchain's (stub) kubectl answered `kubectl completion bash`: PATH took effect.
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        format!("kubectl 1.30.14\n{}\n{}\n", admin.display(), bin.display())
    );
}

#[test]
fn env_without_toolchain_or_cluster_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let out = kbin(home.path()).arg("env").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no default toolchain") && err.contains("hint:"),
        "{err}"
    );
    let out = kbin(home.path()).args(["env", "nosuch"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nosuch\" is not installed"));
    let out = kbin(home.path())
        .args(["env", "--cluster", "/nonexistent-kbin-cluster"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no kubeconfigs/admin.conf"));
}

// --- kbin gen cluster (with the PKI step) ------------------------------------------------

#[test]
fn gen_cluster_without_toolchain_or_kubernetes_version_fails_clearly_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = kbin(home.path())
        .args(["gen", "cluster", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no toolchain to generate for") && err.contains("--kubernetes-version"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!dir.exists(), "nothing may be written");
}

#[test]
fn gen_cluster_from_kubernetes_version_bundles_no_binaries_and_every_kubeconfig_loads_in_kubectl() {
    let kubectl = tool("kubectl");
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = kbin(home.path())
        .args([
            "gen",
            "cluster",
            "--kubernetes-version",
            "1.35",
            "--cluster-ip",
            "10.0.0.10",
        ])
        .args([
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
            "--worker",
            "w2=10.0.0.22",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("# Next steps for cluster"),
        "NEXT-STEPS is printed:\n{stdout}"
    );
    assert!(stdout.contains("No binaries are bundled"), "{stdout}");
    assert!(!out.path().join("bundles").exists());
    let cfg =
        std::fs::read_to_string(out.path().join("nodes/w1/etc/containerd/config.toml")).unwrap();
    assert!(cfg.contains("version = 3"), "{cfg}");
    // Every kubeconfig, in kubeconfigs/ and in the node trees, loads in the real kubectl.
    let mut confs: Vec<PathBuf> = files_under(out.path())
        .into_iter()
        .filter(|f| f.ends_with(".conf") && !f.contains("modules-load") && !f.contains("sysctl"))
        .map(|f| out.path().join(f))
        .collect();
    confs.sort();
    assert!(confs.len() >= 6 + 4 + 2 * 2, "{confs:?}");
    for c in &confs {
        let o = Command::new(&kubectl)
            .args([
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
                "--kubeconfig",
            ])
            .arg(c)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            c.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "https://10.0.0.10:6443",
            "{}",
            c.display()
        );
    }
    // A re-run keeps the encryption key and rewrites the same bytes.
    let key = std::fs::read(
        out.path()
            .join("nodes/cp1/etc/kubernetes/encryption-config.yaml"),
    )
    .unwrap();
    let tar = std::fs::read(out.path().join("nodes/w1.tar.gz")).unwrap();
    let o = kbin(home.path())
        .args([
            "gen",
            "cluster",
            "--kubernetes-version",
            "1.35",
            "--cluster-ip",
            "10.0.0.10",
        ])
        .args([
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
            "--worker",
            "w2=10.0.0.22",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(
            out.path()
                .join("nodes/cp1/etc/kubernetes/encryption-config.yaml")
        )
        .unwrap(),
        key
    );
    assert_eq!(
        std::fs::read(out.path().join("nodes/w1.tar.gz")).unwrap(),
        tar
    );
}
