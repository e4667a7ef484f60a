//! `kbin gen cluster|node` PKI and kubeconfigs, `kbin certs check|renew`, checked with the real
//! openssl, kubectl and etcd.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use x509_parser::prelude::*;

/// A temp dir with KBIN_HOME inside and the cluster at `<dir>/c`.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("c")
    }

    fn pki(&self) -> PathBuf {
        self.out().join("pki")
    }

    /// Run kbin with `args` and `--out <dir>/c`.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("kbin");
        cmd.env("KBIN_HOME", self.dir.path().join("home"))
            .current_dir(self.dir.path())
            .args(args)
            .arg("--out")
            .arg(self.out());
        if args.starts_with(&["gen", "cluster"]) || args.starts_with(&["gen", "node"]) {
            // The configs step pins to versions: no toolchain is installed here.
            cmd.args(["--kubernetes-version", "1.30"]);
        }
        cmd.output().expect("kbin runs")
    }

    /// Run, expect success; stderr then stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kbin {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        )
    }

    fn fail(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kbin {args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// SHA-256 of every file the PKI step writes (pki/, kubeconfigs/, cluster.toml), by
    /// relative path; the configs step's node trees and NEXT-STEPS are tested in
    /// tests/testsuite/gen_configs.rs.
    fn tree(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if self.out().exists() {
            walk(&self.out(), &self.out(), &mut out);
        }
        out.retain(|k, _| {
            k.starts_with("pki/") || k.starts_with("kubeconfigs/") || k == "cluster.toml"
        });
        out
    }

    fn cert(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read(self.pki().join(format!("{name}.crt"))).expect("cert exists");
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
        p.contents
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, sha256(&std::fs::read(&p).unwrap()));
        }
    }
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The path of a required tool; a missing one fails the test.
fn tool(path: &str) -> &str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run scripts/setup-test-deps"
    );
    path
}

/// Files whose content changed between two trees, and files added.
fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    b.iter()
        .filter(|(k, v)| a.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

const NODES: &[&str] = &[
    "--control-plane",
    "cp1=10.0.0.1",
    "--control-plane",
    "cp2=10.0.0.2",
    "--worker",
    "w1=10.0.0.11",
    "--worker",
    "w2=10.0.0.12",
    "--cluster-ip",
    "10.0.0.100",
];

fn gen_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["gen", "cluster"];
    v.extend_from_slice(NODES);
    v.extend_from_slice(extra);
    v
}

/// name, CA, CN, O, server auth, client auth.
type Expect = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    bool,
    bool,
);

#[rustfmt::skip]
const LEAVES: &[Expect] = &[
    ("apiserver", "ca", "kube-apiserver", None, true, false),
    ("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client", Some("kubeadm:cluster-admins"), false, true),
    ("front-proxy-client", "front-proxy-ca", "front-proxy-client", None, false, true),
    ("etcd/cp1/server", "etcd/ca", "cp1", None, true, true),
    ("etcd/cp1/peer", "etcd/ca", "cp1", None, true, true),
    ("etcd/cp2/server", "etcd/ca", "cp2", None, true, true),
    ("etcd/cp2/peer", "etcd/ca", "cp2", None, true, true),
    ("etcd/healthcheck-client", "etcd/ca", "kube-etcd-healthcheck-client", None, false, true),
    ("apiserver-etcd-client", "etcd/ca", "kube-apiserver-etcd-client", None, false, true),
    ("admin", "ca", "kubernetes-admin", Some("kubeadm:cluster-admins"), false, true),
    ("super-admin", "ca", "kubernetes-super-admin", Some("system:masters"), false, true),
    ("controller-manager", "ca", "system:kube-controller-manager", None, false, true),
    ("scheduler", "ca", "system:kube-scheduler", None, false, true),
    ("kube-proxy", "ca", "system:kube-proxy", Some("system:node-proxier"), false, true),
    ("nodes/w1/kubelet-client", "ca", "system:node:w1", Some("system:nodes"), false, true),
    ("nodes/w1/kubelet", "ca", "system:node:w1", Some("system:nodes"), true, false),
    ("nodes/w2/kubelet-client", "ca", "system:node:w2", Some("system:nodes"), false, true),
    ("nodes/w2/kubelet", "ca", "system:node:w2", Some("system:nodes"), true, false),
];

const CAS: &[(&str, &str)] = &[
    ("ca", "kubernetes"),
    ("front-proxy-ca", "front-proxy-ca"),
    ("etcd/ca", "etcd-ca"),
];

fn sans(c: &X509Certificate<'_>) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(Some(ext)) = c.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => v.push(format!("DNS:{d}")),
                GeneralName::IPAddress(b) => {
                    let ip: IpAddr = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).unwrap().into(),
                        _ => <[u8; 16]>::try_from(*b).unwrap().into(),
                    };
                    v.push(format!("IP:{ip}"));
                }
                _ => {}
            }
        }
    }
    v.sort();
    v
}

fn first<'a>(mut it: impl Iterator<Item = &'a AttributeTypeAndValue<'a>>) -> Option<String> {
    it.next().map(|a| a.as_str().unwrap().to_string())
}

fn check_certificates(env: &Env, rsa: bool) {
    let openssl = tool("/usr/bin/openssl");
    let day = 86_400;
    for (name, cn) in CAS {
        let der = env.cert(name);
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        assert!(c.is_ca(), "{name} is a CA");
        assert_eq!(first(c.subject().iter_common_name()).as_deref(), Some(*cn));
        assert_eq!(c.subject(), c.issuer(), "{name} is self-signed");
        let ku = c.key_usage().unwrap().expect("CA key usage").value;
        assert!(ku.key_cert_sign() && ku.digital_signature(), "{name} KU");
        let span = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
        assert_eq!(
            span,
            3650 * day + 300,
            "{name}: 10 years (+5 min backdating)"
        );
        let out = Command::new(openssl)
            .args(["verify", "-CAfile"])
            .arg(env.pki().join(format!("{name}.crt")))
            .arg(env.pki().join(format!("{name}.crt")))
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl verify {name}: {out:?}");
    }
    for (name, ca, cn, org, server, client) in LEAVES {
        let path = env.pki().join(format!("{name}.crt"));
        let out = Command::new(openssl)
            .args(["verify", "-CAfile"])
            .arg(env.pki().join(format!("{ca}.crt")))
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(": OK"),
            "openssl verify {name} against {ca}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = env.cert(name);
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        assert!(!c.is_ca(), "{name} is not a CA");
        assert_eq!(
            first(c.subject().iter_common_name()).as_deref(),
            Some(*cn),
            "{name} CN"
        );
        assert_eq!(
            first(c.subject().iter_organization()),
            org.map(String::from),
            "{name} O"
        );
        let eku = c.extended_key_usage().unwrap().expect("EKU").value;
        assert_eq!(
            (eku.server_auth, eku.client_auth),
            (*server, *client),
            "{name} EKU"
        );
        let ku = c.key_usage().unwrap().expect("KU").value;
        assert!(ku.digital_signature() && !ku.key_cert_sign(), "{name} KU");
        assert_eq!(
            ku.key_encipherment(),
            rsa,
            "{name}: keyEncipherment only for RSA"
        );
        let span = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
        assert_eq!(span, 365 * day + 300, "{name}: 1 year (+5 min backdating)");
        match c.public_key().parsed().unwrap() {
            x509_parser::public_key::PublicKey::EC(ec) => {
                assert!(!rsa, "{name} key type");
                assert_eq!(ec.key_size(), 256);
            }
            x509_parser::public_key::PublicKey::RSA(k) => {
                assert!(rsa, "{name} key type");
                assert_eq!(k.key_size(), 2048);
            }
            other => panic!("{name}: unexpected key {other:?}"),
        }
        let key_pem = std::fs::read(env.pki().join(format!("{name}.key"))).unwrap();
        let mode = std::fs::metadata(env.pki().join(format!("{name}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.key mode");
        assert!(String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY"));
    }
    let api = env.cert("apiserver");
    let (_, c) = X509Certificate::from_der(&api).unwrap();
    let mut want: Vec<String> = [
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:cp1",
        "DNS:cp2",
        "DNS:localhost",
        "IP:10.32.0.1",
        "IP:10.0.0.1",
        "IP:10.0.0.2",
        "IP:10.0.0.100",
        "IP:127.0.0.1",
    ]
    .map(String::from)
    .to_vec();
    want.sort();
    assert_eq!(sans(&c), want);
    let der = env.cert("etcd/cp2/peer");
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    let mut want: Vec<String> = [
        "DNS:cp2",
        "DNS:localhost",
        "IP:10.0.0.2",
        "IP:127.0.0.1",
        "IP:::1",
    ]
    .map(String::from)
    .to_vec();
    want.sort();
    assert_eq!(sans(&c), want);
    let der = env.cert("nodes/w2/kubelet");
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(sans(&c), ["DNS:w2", "IP:10.0.0.12"]);
    let der = env.cert("admin");
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    assert!(sans(&c).is_empty());
    for dir in ["", "etcd", "etcd/cp1", "nodes/w1"] {
        let mode = std::fs::metadata(env.pki().join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "pki/{dir} mode");
    }
    let sa = std::fs::read_to_string(env.pki().join("sa.pub")).unwrap();
    assert!(sa.contains("BEGIN PUBLIC KEY"));
    let out = Command::new(openssl)
        .args(["pkey", "-pubout", "-in"])
        .arg(env.pki().join("sa.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sa.trim(),
        "sa.pub matches sa.key"
    );
}

#[test]
fn every_certificate_verifies_with_openssl_and_carries_its_subject_usages_and_sans() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    check_certificates(&env, false);
}

#[test]
fn rsa_2048_certificates_verify_and_carry_rsa_keys() {
    let env = Env::new();
    env.ok(&gen_args(&["--key-algo", "rsa-2048"]));
    check_certificates(&env, true);
}

#[test]
fn kubectl_loads_every_kubeconfig_with_the_certificate_from_pki() {
    let kubectl = tool("/usr/bin/kubectl");
    let env = Env::new();
    env.ok(&gen_args(&["--name", "hardway"]));
    let b64 = base64::engine::general_purpose::STANDARD;
    let confs = [
        ("admin.conf", "admin", "kubernetes-admin"),
        ("super-admin.conf", "super-admin", "kubernetes-super-admin"),
        (
            "controller-manager.conf",
            "controller-manager",
            "system:kube-controller-manager",
        ),
        ("scheduler.conf", "scheduler", "system:kube-scheduler"),
        ("kube-proxy.conf", "kube-proxy", "system:kube-proxy"),
        (
            "kubelet-w1.conf",
            "nodes/w1/kubelet-client",
            "system:node:w1",
        ),
        (
            "kubelet-w2.conf",
            "nodes/w2/kubelet-client",
            "system:node:w2",
        ),
    ];
    let dir = env.out().join("kubeconfigs");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), confs.len());
    for (file, cert, user) in confs {
        let path = dir.join(file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file} holds a key");
        let out = Command::new(kubectl)
            .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl on {file}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["clusters"][0]["name"], "hardway");
        // Two control planes: node components go through the node-local load balancer, the
        // control plane's to their own API server, admins to the cluster endpoint.
        let server = match file {
            "admin.conf" | "super-admin.conf" => "https://10.0.0.100:6443",
            "controller-manager.conf" | "scheduler.conf" => "https://127.0.0.1:6443",
            _ => "https://127.0.0.1:6444",
        };
        assert_eq!(v["clusters"][0]["cluster"]["server"], server, "{file}");
        assert_eq!(v["current-context"], format!("{user}@hardway"));
        assert_eq!(v["users"][0]["name"], user);
        let decode = |s: &serde_json::Value| b64.decode(s.as_str().unwrap()).unwrap();
        let embedded = decode(&v["users"][0]["user"]["client-certificate-data"]);
        let on_disk = std::fs::read(env.pki().join(format!("{cert}.crt"))).unwrap();
        assert_eq!(embedded, on_disk, "{file} embeds pki/{cert}.crt");
        let key = decode(&v["users"][0]["user"]["client-key-data"]);
        assert_eq!(
            key,
            std::fs::read(env.pki().join(format!("{cert}.key"))).unwrap()
        );
        let ca = decode(&v["clusters"][0]["cluster"]["certificate-authority-data"]);
        assert_eq!(ca, std::fs::read(env.pki().join("ca.crt")).unwrap());
    }
}

#[test]
fn a_rerun_changes_nothing_and_says_so() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let before = env.tree();
    let err = env.ok(&gen_args(&[]));
    assert_eq!(env.tree(), before);
    assert!(err.contains("0 created, 0 replaced"), "{err}");
}

#[test]
fn deleting_one_leaf_regenerates_only_it_and_its_kubeconfig() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let before = env.tree();
    std::fs::remove_file(env.pki().join("scheduler.crt")).unwrap();
    let err = env.ok(&gen_args(&[]));
    let mut diff = changed(&before, &env.tree());
    diff.sort();
    assert_eq!(
        diff,
        [
            "kubeconfigs/scheduler.conf",
            "pki/scheduler.crt",
            "pki/scheduler.key"
        ],
        "{err}"
    );
    assert!(err.contains("scheduler (certificate missing)"), "{err}");
}

#[test]
fn adding_a_control_plane_regenerates_only_certificates_whose_sans_change() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let before = env.tree();
    env.ok(&gen_args(&["--control-plane", "cp3=10.0.0.3"]));
    let mut diff = changed(&before, &env.tree());
    diff.sort();
    assert_eq!(
        diff,
        [
            "cluster.toml",
            "pki/apiserver.crt",
            "pki/apiserver.key",
            "pki/etcd/cp3/peer.crt",
            "pki/etcd/cp3/peer.key",
            "pki/etcd/cp3/server.crt",
            "pki/etcd/cp3/server.key",
        ]
    );
}

#[test]
fn force_replaces_every_ca_certificate_and_kubeconfig() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let before = env.tree();
    env.ok(&gen_args(&["--force"]));
    let after = env.tree();
    let same: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) == Some(v) && k.as_str() != "cluster.toml")
        .collect();
    assert!(same.is_empty(), "unchanged after --force: {same:?}");
}

#[test]
fn gen_node_adds_workers_signed_by_the_existing_ca() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let before = env.tree();
    let out = env.run(&["gen", "node", "w3=10.0.0.13", "w4=10.0.0.14"]);
    assert!(out.status.success(), "{out:?}");
    let mut diff = changed(&before, &env.tree());
    diff.sort();
    assert_eq!(
        diff,
        [
            "cluster.toml",
            "kubeconfigs/kubelet-w3.conf",
            "kubeconfigs/kubelet-w4.conf",
            "pki/nodes/w3/kubelet-client.crt",
            "pki/nodes/w3/kubelet-client.key",
            "pki/nodes/w3/kubelet.crt",
            "pki/nodes/w3/kubelet.key",
            "pki/nodes/w4/kubelet-client.crt",
            "pki/nodes/w4/kubelet-client.key",
            "pki/nodes/w4/kubelet.crt",
            "pki/nodes/w4/kubelet.key",
        ]
    );
    // The tree made with configs gets the new nodes' configs and bundles too.
    assert!(
        env.out()
            .join("nodes/w4/var/lib/kubelet/config.yaml")
            .is_file()
    );
    let out = Command::new(tool("/usr/bin/openssl"))
        .args(["verify", "-CAfile"])
        .arg(env.pki().join("ca.crt"))
        .arg(env.pki().join("nodes/w4/kubelet.crt"))
        .output()
        .unwrap();
    assert!(out.status.success());
    // A node that clashes with an existing one is refused, and nothing is written.
    let before = env.tree();
    let err = env.fail(&["gen", "node", "w5=10.0.0.11"]);
    assert!(err.contains("10.0.0.11 is used by both"), "{err}");
    assert_eq!(env.tree(), before);
    // gen node never makes a CA: without one it stops before writing.
    std::fs::remove_file(env.pki().join("ca.crt")).unwrap();
    std::fs::remove_file(env.pki().join("ca.key")).unwrap();
    let before = env.tree();
    let err = env.fail(&["gen", "node", "w5=10.0.0.15"]);
    assert!(
        err.contains("ca cannot be reused") && err.contains("ca.crt is missing"),
        "{err}"
    );
    assert_eq!(env.tree(), before);
}

#[test]
fn gen_node_without_a_cluster_says_to_run_gen_cluster() {
    let env = Env::new();
    let err = env.fail(&["gen", "node", "w1=10.0.0.1"]);
    assert!(err.contains("kbin gen cluster"), "{err}");
    assert!(!env.out().exists());
}

#[test]
fn each_bad_input_gives_its_error_and_writes_nothing() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--cluster-ip", "10.0.0.256"],
            "--cluster-ip \"10.0.0.256\" is not an IP address",
        ),
        (
            &["--service-cidr", "10.32.0.0/40"],
            "--service-cidr \"10.32.0.0/40\" is not a CIDR",
        ),
        (
            &["--pod-cidr", "banana"],
            "--pod-cidr \"banana\" is not a CIDR",
        ),
        (
            &["--cluster-dns", "10.96.0.10"],
            "cluster DNS address 10.96.0.10 is not inside the service CIDR 10.32.0.0/24",
        ),
        (
            &["--pod-cidr", "10.32.0.0/16"],
            "pod CIDR 10.32.0.0/16 and service CIDR 10.32.0.0/24 overlap",
        ),
        (
            &["--control-plane", "CP_1=10.0.0.1"],
            "node name \"CP_1\" is not a valid DNS label",
        ),
        (
            &[
                "--control-plane",
                "cp1=10.0.0.1",
                "--worker",
                "cp1=10.0.0.2",
            ],
            "node name \"cp1\" is used twice",
        ),
        (
            &["--control-plane", "cp1=10.0.0.1", "--worker", "w1=10.0.0.1"],
            "node IP 10.0.0.1 is used by both \"cp1\" and \"w1\"",
        ),
        (&["--control-plane", "cp1"], "node \"cp1\" is not NAME=IP"),
        (&["--worker", "w1=10.0.0.1"], "no control-plane node"),
        (&["--key-algo", "dsa-1024"], "key algorithm \"dsa-1024\""),
        (&["--cert-validity", "20y"], "longer than the CA validity"),
        (
            &["--ca-validity", "forever"],
            "--ca-validity \"forever\" is not a duration",
        ),
    ];
    for (args, want) in cases {
        let env = Env::new();
        let mut full = vec!["gen", "cluster"];
        full.extend_from_slice(args);
        let err = env.fail(&full);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.contains("nothing was written"), "{args:?}: {err}");
        assert!(!env.out().exists(), "{args:?} wrote {:?}", env.tree());
    }
    // Bad input over an existing tree changes nothing either.
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let before = env.tree();
    env.fail(&gen_args(&["--pod-cidr", "10.32.0.0/16"]));
    assert_eq!(env.tree(), before);
}

#[test]
fn a_config_file_gives_the_spec_and_flags_override_it() {
    let env = Env::new();
    let cfg = env.dir.path().join("cluster.toml");
    std::fs::write(
        &cfg,
        r#"name = "from-file"
cluster-ip = "10.1.0.5"
[[nodes]]
name = "cp1"
ip = "10.1.0.5"
control_plane = true
worker = true
"#,
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    env.ok(&["gen", "cluster", "--config", cfg_s, "--name", "from-flag"]);
    let conf = std::fs::read_to_string(env.out().join("kubeconfigs/admin.conf")).unwrap();
    assert!(conf.contains("from-flag") && conf.contains("https://10.1.0.5:6443"));
    assert!(env.pki().join("nodes/cp1/kubelet.crt").exists());
    std::fs::write(&cfg, "nmae = \"typo\"\n").unwrap();
    let env2 = Env::new();
    let err = env2.fail(&["gen", "cluster", "--config", cfg_s]);
    assert!(err.contains("nmae"), "{err}");
    assert!(!env2.out().exists());
}

#[test]
fn a_broken_ca_is_never_replaced_without_force() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    std::fs::write(env.pki().join("etcd/ca.key"), "garbage").unwrap();
    let before = env.tree();
    let err = env.fail(&gen_args(&[]));
    assert!(err.contains("etcd/ca cannot be reused"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(env.tree(), before);
    env.ok(&gen_args(&["--force"]));
    assert_ne!(env.tree(), before);
}

#[test]
fn certs_check_lists_every_certificate_and_fails_within_the_warning_window() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let out = env.run(&["certs", "check"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NAME") && text.contains("TIME LEFT"));
    assert!(
        text.contains("nodes/w2/kubelet") && text.contains("364d"),
        "{text}"
    );
    let out = env.run(&["certs", "check", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3 + 1 + LEAVES.len());
    // Leaves expire in a year: a 400-day window catches them, not the CAs.
    let out = env.run(&["certs", "check", "--warn", "400d", "--json"]);
    assert!(!out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let flagged: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["problems"].as_array().unwrap().is_empty())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(flagged.len(), LEAVES.len(), "{flagged:?}");
    // A broken leaf fails the check.
    std::fs::remove_file(env.pki().join("admin.key")).unwrap();
    let out = env.run(&["certs", "check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin.key is missing"));
    let err = env.fail(&["certs", "check", "--warn", "soon"]);
    assert!(err.contains("--warn \"soon\""), "{err}");
}

#[test]
fn certs_renew_resigns_leaves_with_their_keys_and_refuses_cas() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let before = env.tree();
    env.ok(&["certs", "renew", "admin", "nodes/w1/kubelet"]);
    let mut diff = changed(&before, &env.tree());
    diff.sort();
    assert_eq!(
        diff,
        [
            "kubeconfigs/admin.conf",
            "pki/admin.crt",
            "pki/nodes/w1/kubelet.crt"
        ]
    );
    let der = env.cert("nodes/w1/kubelet");
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(sans(&c), ["DNS:w1", "IP:10.0.0.11"]);
    // The re-run still keeps everything: the renewed certificates are right.
    let now = env.tree();
    env.ok(&gen_args(&[]));
    assert_eq!(env.tree(), now);
    let err = env.fail(&["certs", "renew", "ca"]);
    assert!(err.contains("only renews leaf"), "{err}");
    let err = env.fail(&["certs", "renew", "nope"]);
    assert!(err.contains("\"nope\" is not a certificate"), "{err}");
    assert_eq!(env.tree(), now);
    env.ok(&["certs", "renew"]);
    let renewed = changed(&now, &env.tree());
    assert_eq!(
        renewed.iter().filter(|f| f.ends_with(".crt")).count(),
        LEAVES.len()
    );
    assert!(
        renewed.iter().all(|f| !f.ends_with(".key")),
        "keys are kept: {renewed:?}"
    );
}

/// A running etcd, killed when dropped (also when the test panics).
struct EtcdGuard {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

#[test]
fn real_etcd_serves_the_apiserver_client_and_refuses_no_certificate_or_another_ca() {
    let env = Env::new();
    env.ok(&["gen", "cluster", "--control-plane", "cp1=10.0.0.10"]);
    let other = Env::new();
    other.ok(&["gen", "cluster"]);
    let (client_port, peer_port) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("https://127.0.0.1:{peer_port}");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
    let p = |rel: &str| env.pki().join(rel).display().to_string();
    let child = Command::new(tool("/usr/bin/etcd"))
        .args(["--name", "cp1", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("cp1={peer_url}")])
        .args(["--client-cert-auth", "--trusted-ca-file", &p("etcd/ca.crt")])
        .args([
            "--cert-file",
            &p("etcd/cp1/server.crt"),
            "--key-file",
            &p("etcd/cp1/server.key"),
        ])
        .args([
            "--peer-client-cert-auth",
            "--peer-trusted-ca-file",
            &p("etcd/ca.crt"),
        ])
        .args(["--peer-cert-file", &p("etcd/cp1/peer.crt")])
        .args(["--peer-key-file", &p("etcd/cp1/peer.key")])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd starts");
    let etcd = EtcdGuard { child, dir };
    let etcdctl = |cert: Option<(PathBuf, PathBuf)>, args: &[&str]| {
        let mut c = Command::new(tool("/usr/bin/etcdctl"));
        c.env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &client_url,
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "4s",
            ])
            .arg("--cacert")
            .arg(env.pki().join("etcd/ca.crt"));
        if let Some((crt, key)) = cert {
            c.arg("--cert").arg(crt).arg("--key").arg(key);
        }
        c.args(args).output().expect("etcdctl runs")
    };
    let pair = |root: PathBuf, name: &str| {
        Some((
            root.join(format!("{name}.crt")),
            root.join(format!("{name}.key")),
        ))
    };
    let start = std::time::Instant::now();
    loop {
        let out = etcdctl(
            pair(env.pki(), "apiserver-etcd-client"),
            &["endpoint", "health"],
        );
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "etcd did not become healthy: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let put = etcdctl(
        pair(env.pki(), "apiserver-etcd-client"),
        &["put", "/kbin/pki", "hello"],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = etcdctl(
        pair(env.pki(), "apiserver-etcd-client"),
        &["get", "/kbin/pki", "--print-value-only"],
    );
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");
    let hc = etcdctl(
        pair(env.pki(), "etcd/healthcheck-client"),
        &["get", "/kbin/pki"],
    );
    assert!(
        hc.status.success(),
        "{}",
        String::from_utf8_lossy(&hc.stderr)
    );

    let none = etcdctl(None, &["get", "/kbin/pki"]);
    assert!(
        !none.status.success(),
        "etcd served a client without a certificate"
    );
    let foreign = etcdctl(
        pair(other.pki(), "apiserver-etcd-client"),
        &["get", "/kbin/pki"],
    );
    assert!(
        !foreign.status.success(),
        "etcd served a client certificate signed by another cluster's etcd CA"
    );
    drop(etcd);
}

#[test]
fn pki_only_writes_the_pki_kubeconfigs_and_spec_without_versions() {
    let env = Env::new();
    env.ok(&[
        "gen",
        "cluster",
        "--pki-only",
        "--worker",
        "w1=10.0.0.11",
        "--control-plane",
        "cp1=10.0.0.1",
    ]);
    let mut top: Vec<String> = std::fs::read_dir(env.out())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, [".kbin.lock", "cluster.toml", "kubeconfigs", "pki"]);
    assert!(env.pki().join("nodes/w1/kubelet.crt").exists());
}

/// `openssl verify -CAfile ca cert` succeeded.
fn verifies(ca: &Path, cert: &Path) -> bool {
    let out = Command::new(tool("/usr/bin/openssl"))
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(": OK")
}

/// How many certificates a PEM file holds.
fn certs_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

/// The nodes of [`NODES`], with whether each is a control plane.
const NODE_TREES: &[(&str, bool)] = &[("cp1", true), ("cp2", true), ("w1", false), ("w2", false)];

/// Where each CA's file goes on the nodes (relative to the node root), and which nodes get it.
fn on_node(ca: &str, control_plane: bool) -> Option<&'static str> {
    match (ca, control_plane) {
        ("ca", _) => Some("etc/kubernetes/pki/ca.crt"),
        ("etcd/ca", true) => Some("etc/kubernetes/pki/etcd/ca.crt"),
        ("front-proxy-ca", true) => Some("etc/kubernetes/pki/front-proxy-ca.crt"),
        _ => None,
    }
}

/// Every kubeconfig loads in kubectl and embeds `pki/ca.crt` whole as its CA, and its client
/// certificate verifies against that bundle.
fn kubeconfigs_load(env: &Env, dir: &Path) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca = std::fs::read(env.pki().join("ca.crt")).unwrap();
    for e in std::fs::read_dir(env.out().join("kubeconfigs")).unwrap() {
        let path = e.unwrap().path();
        let out = Command::new(tool("/usr/bin/kubectl"))
            .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl on {}: {out:?}",
            path.display()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let decode = |s: &serde_json::Value| b64.decode(s.as_str().unwrap()).unwrap();
        let embedded_ca = decode(&v["clusters"][0]["cluster"]["certificate-authority-data"]);
        assert_eq!(embedded_ca, ca, "{} trusts pki/ca.crt", path.display());
        let client = dir.join("client.crt");
        std::fs::write(
            &client,
            decode(&v["users"][0]["user"]["client-certificate-data"]),
        )
        .unwrap();
        let bundle = dir.join("bundle.crt");
        std::fs::write(&bundle, &embedded_ca).unwrap();
        assert!(
            verifies(&bundle, &client),
            "{}: its client certificate verifies against its CA data",
            path.display()
        );
    }
}

/// A step's checks on the trees: every node's CA files are the tree's, every leaf verifies
/// against the bundle on every node that gets it, the controller manager's signer is the
/// signing CA alone.
fn trees_trust(env: &Env, cas: &[&str], bundle_len: usize) {
    for (node, cp) in NODE_TREES {
        let root = env.out().join("nodes").join(node);
        for ca in cas {
            let Some(rel) = on_node(ca, *cp) else {
                continue;
            };
            let bundle = root.join(rel);
            assert_eq!(
                std::fs::read(&bundle).unwrap(),
                std::fs::read(env.pki().join(format!("{ca}.crt"))).unwrap(),
                "{node}: {rel}"
            );
            assert_eq!(certs_in(&bundle), bundle_len, "{node}: {rel}");
            for (leaf, leaf_ca, ..) in LEAVES.iter().filter(|l| l.1 == *ca) {
                assert!(
                    verifies(&bundle, &env.pki().join(format!("{leaf}.crt"))),
                    "{leaf} (by {leaf_ca}) verifies against {node}'s {rel}"
                );
            }
        }
        if *cp {
            let signer =
                std::fs::read_to_string(root.join("etc/kubernetes/pki/ca-signer.crt")).unwrap();
            let ca = std::fs::read_to_string(env.pki().join("ca.crt")).unwrap();
            assert_eq!(signer.matches("BEGIN CERTIFICATE").count(), 1, "{node}");
            assert!(
                ca.starts_with(&signer),
                "{node}: the signer is ca.crt's first"
            );
            assert_eq!(
                std::fs::read(root.join("etc/kubernetes/pki/ca.key")).unwrap(),
                std::fs::read(env.pki().join("ca.key")).unwrap()
            );
        }
    }
}

#[test]
fn rotate_ca_trusts_both_cas_then_signs_with_the_new_then_trusts_it_alone() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let keep = tempfile::tempdir().unwrap();
    let cas = ["ca", "etcd/ca", "front-proxy-ca"];
    // The old CAs and leaves, kept aside.
    let saved = |tag: &str, name: &str| {
        keep.path()
            .join(format!("{tag}-{}.crt", name.replace('/', "_")))
    };
    for name in cas.iter().copied().chain(LEAVES.iter().map(|l| l.0)) {
        std::fs::copy(env.pki().join(format!("{name}.crt")), saved("old", name)).unwrap();
    }
    let keys: BTreeMap<String, String> = env
        .tree()
        .into_iter()
        .filter(|(k, _)| k.ends_with(".key"))
        .collect();
    let leaves_only_of = |tree: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        tree.iter()
            .filter(|(k, _)| LEAVES.iter().any(|l| **k == format!("pki/{}.crt", l.0)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };

    // Out of order: nothing to use or finish yet, and nothing written.
    let before = env.tree();
    for step in ["use", "finish"] {
        let err = env.fail(&["certs", "rotate-ca", step]);
        assert!(err.contains("no CA rotation is under way"), "{err}");
        assert!(err.contains("rotate-ca begin"), "{err}");
    }
    let err = env.fail(&["certs", "rotate-ca", "begin", "--ca", "sa"]);
    assert!(err.contains("not a CA kbin rotates"), "{err}");
    assert_eq!(env.tree(), before);

    // 1. begin: trust old + new, the old CAs still sign, leaves untouched.
    env.ok(&["certs", "rotate-ca", "begin", "--ca", "all"]);
    let begun = env.tree();
    assert_eq!(
        leaves_only_of(&begun),
        leaves_only_of(&before),
        "no leaf changes"
    );
    for ca in cas {
        let file = env.pki().join(format!("{ca}.crt"));
        assert_eq!(certs_in(&file), 2, "{ca}");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with(&std::fs::read_to_string(saved("old", ca)).unwrap()));
        let new = env.pki().join(format!("rotation/new/{ca}.crt"));
        assert!(text.ends_with(&std::fs::read_to_string(&new).unwrap()));
        let mode = std::fs::metadata(env.pki().join(format!("rotation/new/{ca}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let der = read_der(&new);
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        let cn = CAS.iter().find(|(n, _)| *n == ca).unwrap().1;
        assert_eq!(first(c.subject().iter_common_name()).as_deref(), Some(cn));
        assert!(c.is_ca());
    }
    trees_trust(&env, &cas, 2);
    kubeconfigs_load(&env, keep.path());
    let check = env.ok(&["certs", "check"]);
    assert!(check.contains("rotating: begun"), "{check}");
    assert!(check.contains("step 1 of 3"), "{check}");
    let err = env.fail(&["certs", "rotate-ca", "begin"]);
    assert!(
        err.contains("under way") && err.contains("rotate-ca use"),
        "{err}"
    );
    let err = env.fail(&["certs", "rotate-ca", "finish"]);
    assert!(
        err.contains("still signed by the old CA") && err.contains("rotate-ca use"),
        "{err}"
    );
    assert_eq!(env.tree(), begun);

    // A step that fails writes nothing: a leaf key gone, `use` cannot re-sign it.
    let admin_key = env.pki().join("admin.key");
    let admin = std::fs::read(&admin_key).unwrap();
    std::fs::remove_file(&admin_key).unwrap();
    let err = env.fail(&["certs", "rotate-ca", "use"]);
    assert!(err.contains("admin"), "{err}");
    std::fs::write(&admin_key, admin).unwrap();
    std::fs::set_permissions(&admin_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(env.tree(), begun);

    // 2. use: the new CAs sign every leaf (same keys); both still trusted.
    env.ok(&["certs", "rotate-ca", "use"]);
    let used = env.tree();
    for ca in cas {
        let file = env.pki().join(format!("{ca}.crt"));
        assert_eq!(certs_in(&file), 2, "{ca}");
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .ends_with(&std::fs::read_to_string(saved("old", ca)).unwrap()),
            "{ca}: new first, old after"
        );
        let new_alone = keep.path().join("new-alone.crt");
        std::fs::write(
            &new_alone,
            std::fs::read_to_string(&file)
                .unwrap()
                .strip_suffix(&std::fs::read_to_string(saved("old", ca)).unwrap())
                .unwrap(),
        )
        .unwrap();
        std::fs::copy(&new_alone, saved("new", ca)).unwrap();
        for (leaf, ..) in LEAVES.iter().filter(|l| l.1 == ca) {
            let path = env.pki().join(format!("{leaf}.crt"));
            assert!(verifies(&saved("new", ca), &path), "{leaf} by the new {ca}");
            assert!(
                !verifies(&saved("old", ca), &path),
                "{leaf} not by the old {ca}"
            );
            // The trust period: the leaf a machine not yet rolled out still has verifies too.
            assert!(
                verifies(&file, &saved("old", leaf)),
                "old {leaf} still trusted"
            );
        }
    }
    assert_eq!(
        used.iter()
            .filter(|(k, _)| k.ends_with(".key") && !k.starts_with("pki/rotation/"))
            .filter(|(k, v)| keys.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["pki/ca.key", "pki/etcd/ca.key", "pki/front-proxy-ca.key"],
        "leaf keys are kept, the CAs' keys are the new ones"
    );
    assert!(
        !env.pki().join("rotation/new").exists(),
        "the new keys moved into place"
    );
    trees_trust(&env, &cas, 2);
    kubeconfigs_load(&env, keep.path());
    let check = env.ok(&["certs", "check"]);
    assert!(check.contains("rotating: in use"), "{check}");
    let err = env.fail(&["certs", "rotate-ca", "use"]);
    assert!(
        err.contains("already in use") && err.contains("rotate-ca finish"),
        "{err}"
    );
    assert_eq!(env.tree(), used);

    // 3. finish: the new CAs alone; nothing chains to the old ones.
    env.ok(&["certs", "rotate-ca", "finish"]);
    for ca in cas {
        let file = env.pki().join(format!("{ca}.crt"));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            std::fs::read(saved("new", ca)).unwrap()
        );
        for (leaf, ..) in LEAVES.iter().filter(|l| l.1 == ca) {
            assert!(
                !verifies(&file, &saved("old", leaf)),
                "old {leaf} no longer trusted"
            );
        }
    }
    trees_trust(&env, &cas, 1);
    kubeconfigs_load(&env, keep.path());
    let mut left = BTreeMap::new();
    walk(&env.out(), &env.out(), &mut left);
    let old: Vec<String> = cas
        .iter()
        .map(|ca| std::fs::read_to_string(saved("old", ca)).unwrap())
        .collect();
    for (rel, _) in left.iter().filter(|(k, _)| !k.ends_with(".tar.gz")) {
        let text =
            String::from_utf8_lossy(&std::fs::read(env.out().join(rel)).unwrap()).into_owned();
        for o in &old {
            let body: String = o.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(
                !text.contains(o.trim()) && !text.contains(&body),
                "{rel} still holds an old CA"
            );
        }
    }
    let check = env.ok(&["certs", "check"]);
    assert!(!check.contains("rotating"), "{check}");
    for step in ["use", "finish"] {
        env.fail(&["certs", "rotate-ca", step]);
    }
    // The tree is what `kbin gen cluster` keeps as it is.
    let done = env.tree();
    env.ok(&gen_args(&[]));
    assert_eq!(env.tree(), done);
}

fn read_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents
}

/// `openssl s_server` standing in for an API server: serving `cert`/`key`, asking every client
/// for a certificate that verifies against `ca` (as `--client-ca-file`); killed when dropped.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server(pki: &Path) -> TlsServer {
    let port = free_port();
    let child = Command::new(tool("/usr/bin/openssl"))
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-Verify",
            "1",
            "-verify_return_error",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(pki.join("apiserver.crt"))
        .arg("-key")
        .arg(pki.join("apiserver.key"))
        .arg("-CAfile")
        .arg(pki.join("ca.crt"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server starts");
    let server = TlsServer { child, port };
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "s_server did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server
}

/// kubectl with `kubeconfig` gets an answer from `server` (both sides' certificates verified).
fn kubectl_reaches(kubeconfig: &Path, server: &TlsServer) -> bool {
    Command::new(tool("/usr/bin/kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--server", &format!("https://127.0.0.1:{}", server.port)])
        .args(["--request-timeout", "5s", "get", "--raw", "/"])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn during_a_ca_rotation_rolled_and_unrolled_machines_talk_and_after_it_the_old_ones_are_refused() {
    let env = Env::new();
    env.ok(&gen_args(&[]));
    let keep = tempfile::tempdir().unwrap();
    // What the tree holds after each step: kubeconfigs, and cp1's API server files.
    let snapshot = |n: usize| {
        let dir = keep.path().join(n.to_string());
        std::fs::create_dir_all(dir.join("pki")).unwrap();
        for e in std::fs::read_dir(env.out().join("kubeconfigs")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        let node = env.out().join("nodes/cp1/etc/kubernetes/pki");
        for f in ["apiserver.crt", "apiserver.key", "ca.crt"] {
            std::fs::copy(node.join(f), dir.join("pki").join(f)).unwrap();
        }
        dir
    };
    let confs: Vec<String> = std::fs::read_dir(env.out().join("kubeconfigs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(confs.len(), 7);
    let every = |dir: &Path, server: &TlsServer| {
        for c in &confs {
            assert!(
                kubectl_reaches(&dir.join(c), server),
                "{c} in {}",
                dir.display()
            );
        }
    };
    let mut steps = vec![snapshot(0)];
    let admin = |dir: &Path| dir.join("admin.conf");
    for (n, step) in [(1, "begin"), (2, "use"), (3, "finish")] {
        env.ok(&["certs", "rotate-ca", step]);
        steps.push(snapshot(n));
        let (now, before) = (&steps[n], &steps[n - 1]);
        // Machines rolled out and machines not yet: each side takes the other.
        let server = tls_server(&now.join("pki"));
        every(now, &server);
        assert!(
            kubectl_reaches(&admin(before), &server),
            "{step}: a client not rolled out yet"
        );
        drop(server);
        let server = tls_server(&before.join("pki"));
        every(now, &server);
        drop(server);
        // Two steps apart they do not: each step is rolled out everywhere before the next.
        if n >= 2 {
            let two_before = &steps[n - 2];
            let server = tls_server(&now.join("pki"));
            assert!(
                !kubectl_reaches(&admin(two_before), &server),
                "{step}: a client two steps behind"
            );
            drop(server);
            let server = tls_server(&two_before.join("pki"));
            assert!(
                !kubectl_reaches(&admin(now), &server),
                "{step}: a server two steps behind"
            );
        }
    }
}
