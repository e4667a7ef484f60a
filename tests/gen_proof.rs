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

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
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
        // The CAs are ca.crt, etcd/ca.crt and front-proxy-ca.crt (kubeadm's names).
        let ca = rel.ends_with("/ca.crt") || rel.ends_with("-ca.crt");
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
