//! `kbin gen cluster` end to end through the real binary: the PKI step, then the configs step
//! pinned to an installed toolchain (a fixture receipt plus small executables) or to the manifest
//! (`--kubernetes-version`); kubeconfigs in the node trees checked with the real kubectl.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::cargo_bin_cmd;
use common::toolchain::{FixtureToolchain, write_toolchain};

/// Write toolchain `name` under `home` (receipt + executables) and make it the default.
fn install_default_toolchain(home: &Path, name: &str, versions: &BTreeMap<&str, &str>) {
    let fixture = FixtureToolchain::full(
        name,
        versions["kubernetes"],
        |c| versions[c],
        ("1.12.4", "3.10.1"),
    );
    write_toolchain(home, &fixture, |b, _| format!("#!/bin/sh\necho {b}\n"));
    std::fs::write(
        home.join("settings.toml"),
        format!("default = \"{name}\"\n"),
    )
    .unwrap();
}

fn versions_1_35() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("kubernetes", "1.35.8"),
        ("etcd", "3.6.10"),
        ("containerd", "2.2.3"),
        ("runc", "1.4.2"),
        ("cni-plugins", "1.9.1"),
        ("crictl", "1.35.0"),
    ])
}

fn kbin(home: &Path) -> assert_cmd::Command {
    let mut c = cargo_bin_cmd!("kbin");
    c.env("KBIN_HOME", home).env_remove("KBIN_MANIFEST");
    c
}

const NODES: &[&str] = &[
    "--control-plane",
    "cp1=10.0.0.10",
    "--worker",
    "w1=10.0.0.21",
    "--worker",
    "w2=10.0.0.22",
];

fn kubectl() -> PathBuf {
    let p = PathBuf::from("/usr/bin/kubectl");
    assert!(
        p.exists(),
        "/usr/bin/kubectl is missing: run scripts/setup-test-deps"
    );
    p
}

#[test]
fn gen_cluster_without_a_toolchain_or_kubernetes_version_fails_clearly_and_writes_nothing() {
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
    assert!(err.contains("no toolchain to generate for"), "{err}");
    assert!(
        err.contains("hint:") && err.contains("--kubernetes-version"),
        "{err}"
    );
    assert!(
        !dir.exists(),
        "nothing is written before the versions are known"
    );

    let o = kbin(home.path())
        .args(["gen", "cluster", "--toolchain", "1.30", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("\"1.30\" is not installed"),
        "{err}"
    );
    assert!(!dir.exists());
}

#[test]
fn gen_cluster_pins_to_the_default_toolchain_bundles_its_binaries_and_kubeconfigs_load_in_kubectl()
{
    let home = tempfile::tempdir().unwrap();
    install_default_toolchain(home.path(), "1.35", &versions_1_35());
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = kbin(home.path())
        .args(["gen", "cluster", "--cgroup-v1", "--out"])
        .arg(&dir)
        .args(NODES)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Without --cluster-ip the API endpoint is the control plane's address: nothing to warn.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("warning:"), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    // NEXT-STEPS.md is printed too.
    let next = std::fs::read_to_string(dir.join("NEXT-STEPS.md")).unwrap();
    assert!(stdout.contains(next.lines().next().unwrap()), "{stdout}");
    for f in [
        "nodes/cp1/etc/systemd/system/etcd.service",
        "nodes/cp1/etc/kubernetes/pki/etcd/server.crt",
        "nodes/w1/etc/containerd/config.toml",
        "nodes/w2/var/lib/kubelet/config.yaml",
        "nodes/cp1.tar.gz",
        "nodes/w1.tar.gz",
        "bundles/control-plane-amd64-binaries.tar.gz",
        "bundles/worker-amd64-binaries.tar.gz",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let containerd =
        std::fs::read_to_string(dir.join("nodes/w1/etc/containerd/config.toml")).unwrap();
    assert!(
        containerd.contains("version = 3"),
        "containerd 2.2 → config version 3"
    );
    let kubelet =
        std::fs::read_to_string(dir.join("nodes/w1/var/lib/kubelet/config.yaml")).unwrap();
    assert!(
        kubelet.contains("failCgroupV1: false"),
        "--cgroup-v1 with kubelet 1.35"
    );
    // Binaries are hardlinks of the toolchain's, not copies.
    let a = dir
        .join("nodes/w1/usr/local/bin/kubelet")
        .metadata()
        .unwrap();
    let b = home
        .path()
        .join("toolchains/1.35/bin/kubelet")
        .metadata()
        .unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));

    // Every kubeconfig of every node tree loads in the real kubectl and points at the API server.
    let mut loaded = 0;
    for node in ["cp1", "w1", "w2"] {
        let kdir = dir.join("nodes").join(node).join("etc/kubernetes");
        for e in std::fs::read_dir(&kdir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) != Some("conf") {
                continue;
            }
            let o = Command::new(kubectl())
                .arg("--kubeconfig")
                .arg(&p)
                .args(["config", "view", "--raw", "-o", "json"])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                v["clusters"][0]["cluster"]["server"],
                "https://10.0.0.10:6443",
                "{}",
                p.display()
            );
            assert!(v["current-context"].as_str().is_some_and(|c| !c.is_empty()));
            loaded += 1;
        }
    }
    assert!(loaded >= 3 + 2 * 2, "{loaded} kubeconfigs");

    // A re-run is byte-identical (same PKI kept, same encryption key).
    let before = std::fs::read(dir.join("nodes/cp1.tar.gz")).unwrap();
    let o = kbin(home.path())
        .args(["gen", "cluster", "--cgroup-v1", "--out"])
        .arg(&dir)
        .args(NODES)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(before, std::fs::read(dir.join("nodes/cp1.tar.gz")).unwrap());
}

#[test]
fn kubernetes_version_generates_from_the_manifest_without_binaries() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = kbin(home.path())
        .args([
            "gen",
            "cluster",
            "--json",
            "--kubernetes-version",
            "1.30",
            "--out",
        ])
        .arg(&dir)
        .args(NODES)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["configs"]["nodes"].as_array().unwrap().len(), 3);
    assert!(!dir.join("bundles").exists());
    assert!(!dir.join("nodes/w1/usr/local/bin/kubelet").exists());
    let containerd =
        std::fs::read_to_string(dir.join("nodes/w1/etc/containerd/config.toml")).unwrap();
    assert!(
        containerd.contains("version = 2"),
        "1.30 resolves containerd 1.7: {containerd}"
    );
    let next = std::fs::read_to_string(dir.join("NEXT-STEPS.md")).unwrap();
    assert!(next.contains("scp"), "{next}");
}

#[test]
fn generating_for_this_machine_detects_its_cgroup_version() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    // No nodes given: one node at 127.0.0.1, this machine.
    let o = kbin(home.path())
        .args(["gen", "cluster", "--kubernetes-version", "1.35", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let node = std::fs::read_dir(dir.join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let kubelet = std::fs::read_to_string(node.join("var/lib/kubelet/config.yaml")).unwrap();
    let v1 = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert_eq!(
        kubelet.contains("failCgroupV1: false"),
        v1,
        "host cgroup v1 = {v1}"
    );
}

#[test]
fn a_loopback_cluster_ip_with_remote_workers_is_warned_about() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = kbin(home.path())
        .args([
            "gen",
            "cluster",
            "--kubernetes-version",
            "1.35",
            "--cluster-ip",
            "127.0.0.1",
            "--out",
        ])
        .arg(&dir)
        .args(NODES)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Workers on other machines cannot reach an API server at loopback.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "warning: workers w1, w2 will look for the API server at https://127.0.0.1:6443"
        ) && stderr.contains("--cluster-ip 10.0.0.10"),
        "{stderr}"
    );
    let o = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(dir.join("nodes/w2/etc/kubernetes/kubelet.conf"))
        .args([
            "config",
            "view",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "https://127.0.0.1:6443");
}

#[test]
fn gen_node_adds_a_node_tree_and_a_bare_rerun_keeps_every_node() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let run = |args: &[&str]| {
        kbin(home.path())
            .arg("gen")
            .args(args)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let mut first = vec!["cluster", "--kubernetes-version", "1.35"];
    first.extend(NODES);
    ok(run(&first));
    let ca = std::fs::read(dir.join("pki/ca.crt")).unwrap();
    let apiserver = std::fs::read(dir.join("pki/apiserver.crt")).unwrap();
    let w1 = std::fs::read(dir.join("nodes/w1.tar.gz")).unwrap();

    // A tree that records no versions (made by an older kbin), and no toolchain installed here:
    // the new node's configs cannot be pinned; one clear error, and nothing of w3 written.
    let record = dir.join("versions.toml");
    let recorded = std::fs::read(&record).unwrap();
    std::fs::remove_file(&record).unwrap();
    let o = run(&["node", "w3=10.0.0.23"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--kubernetes-version"), "{err}");
    assert!(!dir.join("kubeconfigs/kubelet-w3.conf").exists());
    assert!(!dir.join("nodes/w3").exists());
    std::fs::write(&record, &recorded).unwrap();

    // A node that is already there is not "added" again.
    let o = run(&["node", "w1=10.0.0.21", "--kubernetes-version", "1.35"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("node w1 is already in the cluster (at 10.0.0.21)"),
        "{err}"
    );

    // The control plane given again as a worker becomes one (the flags' merge rule), with the
    // kubelet tree a worker gets.
    assert!(!dir.join("nodes/cp1/var/lib/kubelet/config.yaml").exists());
    ok(run(&[
        "node",
        "cp1=10.0.0.10",
        "--kubernetes-version",
        "1.35",
    ]));
    assert!(dir.join("nodes/cp1/var/lib/kubelet/config.yaml").is_file());

    // gen node: w3's certificates, kubeconfig, configs and bundle; everything else kept. No
    // version flag: the tree's own origin (here the manifest's 1.35) pins the new node.
    let err = ok(run(&["node", "w3=10.0.0.23"]));
    assert!(err.contains("pinned to manifest 1.35."), "{err}");
    assert_eq!(std::fs::read(&record).unwrap(), recorded);
    assert!(!err.contains("replaced"), "nothing is remade: {err}");
    assert!(dir.join("pki/nodes/w3/kubelet.crt").is_file());
    assert!(dir.join("nodes/w3/var/lib/kubelet/config.yaml").is_file());
    assert!(dir.join("nodes/w3.tar.gz").is_file());
    let kubelet =
        std::fs::read_to_string(dir.join("nodes/w3/etc/kubernetes/kubelet.conf")).unwrap();
    assert!(kubelet.contains("https://10.0.0.10:6443"), "{kubelet}");
    assert_eq!(std::fs::read(dir.join("pki/ca.crt")).unwrap(), ca);
    assert_eq!(
        std::fs::read(dir.join("pki/apiserver.crt")).unwrap(),
        apiserver
    );
    // w1's tarball changed: its pod network now routes w3's pods via w3.
    assert_ne!(std::fs::read(dir.join("nodes/w1.tar.gz")).unwrap(), w1);
    let script =
        std::fs::read_to_string(dir.join("nodes/w1/usr/local/lib/kbin/pod-network")).unwrap();
    assert!(
        script.contains("via 10.0.0.23 proto \"$PROTO\"  # w3"),
        "{script}"
    );
    let w1 = std::fs::read(dir.join("nodes/w1.tar.gz")).unwrap();
    let next = std::fs::read_to_string(dir.join("NEXT-STEPS.md")).unwrap();
    assert!(next.contains("w3"), "{next}");

    // No node flags: the saved spec (with w3) is the starting point, not the one-node default.
    let err = ok(run(&["cluster", "--kubernetes-version", "1.35"]));
    assert!(err.contains("starting from the spec in"), "{err}");
    assert!(!err.contains("replaced"), "nothing is remade: {err}");
    for n in ["cp1", "w1", "w2", "w3"] {
        assert!(dir.join("nodes").join(n).join("etc").is_dir(), "{n}");
    }
    assert!(!dir.join("nodes/node-0").exists());
    assert_eq!(std::fs::read(dir.join("nodes/w1.tar.gz")).unwrap(), w1);
}

#[test]
fn an_only_toolchain_takes_the_missing_versions_from_its_release_defaults_and_says_so() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    // `kbin install 1.30 --only kubectl,etcd`: no images, no containerd, no kubelet…
    let fixture = FixtureToolchain {
        name: "ws",
        kubernetes: "1.30.14",
        components: vec![
            ("kubernetes", "1.30.14", &["kubectl"]),
            ("etcd", "3.5.16", &["etcd", "etcdctl", "etcdutl"]),
        ],
        images: None,
        artifacts: false,
        real_digests: false,
    };
    write_toolchain(home.path(), &fixture, |b, _| {
        format!("#!/bin/sh\necho {b}\n")
    });
    let o = kbin(home.path())
        .args([
            "gen",
            "cluster",
            "--toolchain",
            "ws",
            "--no-binaries",
            "--out",
        ])
        .arg(&dir)
        .args(NODES)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // It says which versions came from the manifest (1.30's defaults).
    assert!(
        err.contains("toolchain ws lacks")
            && err.contains("cni-plugins 1.4.0")
            && err.contains("containerd 1.7.23")
            && err.contains("kubernetes 1.30.14")
            && err.contains("1.30's defaults"),
        "{err}"
    );
    // The configs are pinned to those defaults: containerd 1.7 writes config version 2, the
    // pause image is 1.30's.
    let containerd =
        std::fs::read_to_string(dir.join("nodes/w1/etc/containerd/config.toml")).unwrap();
    assert!(containerd.contains("version = 2"), "{containerd}");
    assert!(containerd.contains("pause:3.9"), "{containerd}");
}

#[test]
fn certs_renew_updates_each_node_archive_in_the_inventory_digest_and_stage_alike() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("c");
    let run = |args: &[&str]| {
        let o = kbin(home.path())
            .args(args)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&[
        "gen",
        "cluster",
        "--kubernetes-version",
        "1.35",
        "--control-plane",
        "cp1=10.0.0.10",
        "--worker",
        "w1=10.0.0.21",
    ]);
    let archives = || {
        let inv: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(dir.join("ansible/inventory.yml")).unwrap(),
        )
        .unwrap();
        let mut v = vec![];
        for (host, hv) in inv["all"]["hosts"].as_mapping().unwrap() {
            for a in hv["kbin_archives"].as_sequence().unwrap() {
                if a["name"] == "node" {
                    v.push((
                        host.as_str().unwrap().to_owned(),
                        a["sha256"].as_str().unwrap().to_owned(),
                        a["stage"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
        v
    };
    let before = archives();
    run(&["certs", "renew"]);
    let after = archives();
    for ((host, old, _), (_, new, stage)) in before.iter().zip(&after) {
        assert_ne!(old, new, "{host}: its tarball holds renewed certificates");
        let tarball = std::fs::read(dir.join(format!("nodes/{host}.tar.gz"))).unwrap();
        assert_eq!(*new, kbin::util::sha256_hex(&tarball), "{host}");
        // The host unpacks into the stage named after the digest: a stale name means the
        // old stage (old certificates) is installed again.
        assert_eq!(*stage, format!("node-{}", &new[..16]), "{host}");
    }
}

/// The secretbox keys of cp1's encryption config, in order: (name, secret).
fn secretbox_keys(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join("nodes/cp1/etc/kubernetes/encryption-config.yaml"))
        .unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let providers = v["resources"][0]["providers"].as_sequence().unwrap();
    // secretbox first, identity last (reads what was stored before encryption).
    assert!(
        providers.last().unwrap().get("identity").is_some(),
        "{text}"
    );
    providers[0]["secretbox"]["keys"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_owned(),
                k["secret"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_secrets_key_rotates_in_three_steps_each_refused_out_of_order_with_the_tree_unchanged() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("cluster");
    let run = |args: &[&str]| {
        kbin(home.path())
            .arg("gen")
            .args(args)
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let mut first = vec!["cluster", "--kubernetes-version", "1.35"];
    first.extend(NODES);
    let o = run(&first);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let original = std::fs::read_to_string(dir.join("secrets/secretbox-key")).unwrap();
    let original = original.trim().to_owned();
    assert_eq!(secretbox_keys(&dir), [("key1".into(), original.clone())]);

    // A step out of order: one error naming the step that must come first; nothing written.
    let tree_bytes = |dir: &Path| -> Vec<Vec<u8>> {
        [
            "nodes/cp1.tar.gz",
            "nodes/cp1/etc/kubernetes/encryption-config.yaml",
        ]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect()
    };
    let refused = |step: &str, says: &str| {
        let before = tree_bytes(&dir);
        let listed = std::fs::read(dir.join("secrets/secretbox-keys")).ok();
        let o = run(&["encryption-key", step]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{step}: {err}");
        assert!(err.contains(says), "{step}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{err}");
        assert_eq!(tree_bytes(&dir), before, "{step} changed the tree");
        assert_eq!(
            std::fs::read(dir.join("secrets/secretbox-keys")).ok(),
            listed
        );
    };
    refused("use", "`use` needs the key `add` made");
    refused("drop", "`drop` ends a rotation whose new key is in use");

    let step = |s: &str| {
        let o = run(&["encryption-key", s]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{s}: {err}");
        // Pinned to the tree's own versions, and says what to run next.
        assert!(err.contains("pinned to manifest 1.35."), "{err}");
        assert!(err.contains("ansible/upgrade.yml"), "{err}");
        secretbox_keys(&dir)
    };
    // add: the new key second (reads), the old one still writes; the other nodes untouched.
    let w1 = std::fs::read(dir.join("nodes/w1.tar.gz")).unwrap();
    let keys = step("add");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], ("key1".into(), original.clone()));
    assert_eq!(keys[1].0, "key2");
    assert_ne!(keys[1].1, original);
    let new = keys[1].1.clone();
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &new)
            .unwrap()
            .len(),
        32
    );
    assert_eq!(std::fs::read(dir.join("nodes/w1.tar.gz")).unwrap(), w1);
    let mode = std::fs::metadata(dir.join("secrets/secretbox-keys"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    refused("add", "one is under way: run `use`, then `drop`");
    // use: the new key writes, the old one still reads.
    assert_eq!(
        step("use"),
        [("key2".into(), new.clone()), ("key1".into(), original)]
    );
    refused("use", "`use` needs the key `add` made");
    // drop: the old key gone. A re-run of gen keeps the new key.
    assert_eq!(step("drop"), [("key2".into(), new.clone())]);
    let o = run(&["cluster", "--kubernetes-version", "1.35"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(secretbox_keys(&dir), [("key2".into(), new.clone())]);
    // The next rotation numbers on.
    assert_eq!(step("add")[1].0, "key3");

    // A damaged key list is named, never replaced.
    std::fs::write(dir.join("secrets/secretbox-keys"), "key2 not-base64\n").unwrap();
    let o = run(&["cluster", "--kubernetes-version", "1.35"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("secrets/secretbox-keys"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("secrets/secretbox-keys")).unwrap(),
        "key2 not-base64\n"
    );
}
