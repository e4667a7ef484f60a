//! `kbin mirror export` end to end: a machine with a (fake, loopback) upstream learns a new
//! patch, installs it and exports a mirror; a fresh machine whose every proxy variable points
//! at a dead proxy then updates and installs from `file://` alone, and gets the same digests.

use crate::common;

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use common::server::Server;
use sha2::{Digest, Sha256};

const OLD: &str = "1.30.14";
const NEW: &str = "1.30.15";
const KUBE_BINS: [&str; 7] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "kubeadm",
];

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn script(line: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho '{line}'\n").into_bytes()
}

fn tgz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Serve `body` at `path` with a `<hex>  <name>` checksum file at `sum`.
fn put_with_sum(s: &Server, path: &str, sum: &str, body: Vec<u8>) {
    let name = path.rsplit('/').next().unwrap();
    s.put(sum, format!("{}  {name}\n", sha256(&body)));
    s.put(path, body);
}

/// A fake upstream of Kubernetes 1.30 (one minor, nothing pinned: every artifact has its
/// checksum file), and a manifest of the real components with that one release.
fn upstream(dir: &Path) -> (Server, PathBuf) {
    let s = Server::start();
    for v in [OLD, NEW] {
        for arch in ["amd64", "arm64"] {
            for b in KUBE_BINS {
                let body = script(&format!("{b} Kubernetes v{v} {arch}"));
                let p = format!("/release/v{v}/bin/linux/{arch}/{b}");
                s.put(&format!("{p}.sha256"), format!("{}\n", sha256(&body)));
                s.put(&p, body);
            }
        }
    }
    let a = "amd64";
    let etcd = tgz(&["etcd", "etcdctl", "etcdutl"].map(|b| {
        (
            format!("etcd-v3.5.16-linux-{a}/{b}"),
            script(&format!("{b} version: 3.5.16")),
        )
    }));
    put_with_sum(
        &s,
        &format!("/etcd-io/etcd/releases/download/v3.5.16/etcd-v3.5.16-linux-{a}.tar.gz"),
        "/etcd-io/etcd/releases/download/v3.5.16/SHA256SUMS",
        etcd,
    );
    let cd = tgz(&["containerd", "containerd-shim-runc-v2", "ctr"]
        .map(|b| (format!("bin/{b}"), script(&format!("{b} v1.7.23")))));
    let p = format!(
        "/containerd/containerd/releases/download/v1.7.23/containerd-1.7.23-linux-{a}.tar.gz"
    );
    put_with_sum(&s, &p, &format!("{p}.sha256sum"), cd);
    put_with_sum(
        &s,
        &format!("/opencontainers/runc/releases/download/v1.1.14/runc.{a}"),
        "/opencontainers/runc/releases/download/v1.1.14/runc.sha256sum",
        script("runc version 1.1.14"),
    );
    let cni = tgz(&["bridge", "host-local", "loopback", "portmap"]
        .map(|b| (format!("./{b}"), script(&format!("CNI {b} v1.4.0")))));
    let p = format!(
        "/containernetworking/plugins/releases/download/v1.4.0/cni-plugins-linux-{a}-v1.4.0.tgz"
    );
    put_with_sum(&s, &p, &format!("{p}.sha256"), cni);
    let crictl = tgz(&[("crictl".to_string(), script("crictl version v1.30.0"))]);
    let p = format!(
        "/kubernetes-sigs/cri-tools/releases/download/v1.30.0/crictl-v1.30.0-linux-{a}.tar.gz"
    );
    put_with_sum(&s, &p, &format!("{p}.sha256"), crictl);
    // The release's images, as registry.k8s.io serves them.
    common::registry::publish(&s, "pause", "3.9");
    common::registry::publish(&s, "coredns/coredns", "v1.11.1");
    // What `kbin update` reads: 1.30.15 is published; the other components have nothing new.
    s.put("/release/stable-1.30.txt", format!("v{NEW}\n"));
    for (repo, tag) in [
        ("etcd-io/etcd", "v3.5.16"),
        ("containerd/containerd", "v1.7.23"),
        ("opencontainers/runc", "v1.1.14"),
        ("containernetworking/plugins", "v1.4.0"),
        ("kubernetes-sigs/cri-tools", "v1.30.0"),
    ] {
        s.put(
            &format!("/repos/{repo}/releases"),
            format!("[{{\"tag_name\":\"{tag}\"}}]"),
        );
    }
    let real =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("toolchains.toml"))
            .unwrap();
    // Without dl.k8s.io's detached signatures: their Rekor lookup is tested in update::.
    let mut text: String = real[..real.find("# ---- BEGIN GENERATED").unwrap()]
        .lines()
        .filter(|l| !l.starts_with("detached = "))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "[release.\"1.30\"]\nlatest = \"{OLD}\"\npatches = [\"{OLD}\"]\n\
         defaults = {{ etcd = \"3.5.16\", containerd = \"1.7.23\", runc = \"1.1.14\", cni-plugins = \"1.4.0\", crictl = \"1.30.0\" }}\n\
         images = {{ coredns = \"1.11.1\", pause = \"3.9\" }}\n\n[pins]\n"
    ));
    let manifest = dir.join("manifest.toml");
    std::fs::write(&manifest, text).unwrap();
    (s, manifest)
}

/// kbin with its own KBIN_HOME and the test manifest, nothing else from the environment.
fn kbin(home: &Path, manifest: &Path) -> assert_cmd::Command {
    let mut c = cargo_bin_cmd!("kbin");
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home)
        .env("KBIN_HOME", home.join("kbin"))
        .env("KBIN_MANIFEST", manifest)
        .env("KBIN_HTTP_BACKOFF_MS", "10")
        .env("KBIN_HTTP_RETRIES", "0");
    c
}

fn ok(o: &std::process::Output) -> String {
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{t}");
    t
}

/// A toolchain's (component, binary, digest) rows and (artifact URL, digest) rows.
type LockDigests = (Vec<(String, String, String)>, Vec<(String, String)>);

/// The digests a toolchain's lock records, sorted.
fn digests(home: &Path) -> LockDigests {
    let lock: toml::Table = toml::from_str(
        &std::fs::read_to_string(home.join("kbin/toolchains/1.30/toolchain.lock")).unwrap(),
    )
    .unwrap();
    assert_eq!(lock["kubernetes"].as_str(), Some(NEW));
    let mut bins = Vec::new();
    let mut arts = Vec::new();
    for c in lock["component"].as_array().unwrap() {
        for b in c["binary"].as_array().unwrap() {
            bins.push((
                c["name"].as_str().unwrap().to_owned(),
                b["name"].as_str().unwrap().to_owned(),
                b["digest"].as_str().unwrap().to_owned(),
            ));
        }
        for a in c["artifact"].as_array().unwrap() {
            arts.push((
                a["url"].as_str().unwrap().to_owned(),
                a["digest"].as_str().unwrap().to_owned(),
            ));
        }
    }
    // The images: the same platform manifests and the same archive bytes.
    for i in lock
        .get("image")
        .and_then(|i| i.as_array())
        .into_iter()
        .flatten()
    {
        arts.push((
            i["name"].as_str().unwrap().to_owned(),
            format!(
                "{} {}",
                i["manifest"].as_str().unwrap(),
                i["archive"].as_str().unwrap()
            ),
        ));
    }
    bins.sort();
    arts.sort();
    (bins, arts)
}

#[test]
fn an_export_installs_the_same_digests_with_no_network_and_a_missing_file_is_one_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, manifest) = upstream(tmp.path());
    let connected = tmp.path().join("connected");
    let mirror_dir = tmp.path().join("export");
    let base = server.base();

    // The connected machine learns 1.30.15, installs it and exports it.
    ok(&kbin(&connected, &manifest)
        .args(["update", "--mirror", &base])
        .output()
        .unwrap());
    ok(&kbin(&connected, &manifest)
        .args(["install", "1.30", "--arch", "amd64", "--mirror", &base])
        .output()
        .unwrap());
    let o = kbin(&connected, &manifest)
        .args([
            "mirror", "export", "1.30", "--arch", "amd64", "--json", "--out",
        ])
        .arg(&mirror_dir)
        .output()
        .unwrap();
    ok(&o);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Seven Kubernetes binaries and five archives or binaries of the other components.
    assert_eq!(r["written"], 12, "{r}");
    assert_eq!(r["reused"], 0);
    for f in [
        format!("release/v{NEW}/bin/linux/amd64/kubelet"),
        format!("release/v{NEW}/bin/linux/amd64/kubelet.sha256"),
        format!("release/v{NEW}/bin/linux/arm64/kubeadm.sha256"),
        "etcd-io/etcd/releases/download/v3.5.16/SHA256SUMS".into(),
        "release/stable-1.30.txt".into(),
        "repos/etcd-io/etcd/releases".into(),
        "README.md".into(),
        "v2/pause/manifests/3.9".into(),
        "v2/coredns/coredns/manifests/v1.11.1".into(),
    ] {
        assert!(
            mirror_dir.join(&f).is_file(),
            "{f} is missing from the export"
        );
    }
    // Re-exporting reuses every file.
    let o = kbin(&connected, &manifest)
        .args([
            "mirror", "export", "1.30", "--arch", "amd64", "--json", "--out",
        ])
        .arg(&mirror_dir)
        .output()
        .unwrap();
    ok(&o);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["written"].as_u64(), r["reused"].as_u64()),
        (Some(0), Some(12))
    );
    assert_eq!(r["images"]["written"], 0, "{r}");
    // Given a relative --out, the hint's file:// URLs name the absolute directory (`file://export`
    // would name a host).
    let o = kbin(&connected, &manifest)
        .args([
            "mirror", "export", "1.30", "--arch", "amd64", "--out", "export",
        ])
        .current_dir(mirror_dir.parent().unwrap())
        .output()
        .unwrap();
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("--mirror file://{} ", mirror_dir.display())),
        "{text}"
    );

    // The air-gapped machine: every proxy variable points at a dead proxy, and nothing serves
    // the export but the file system.
    drop(server);
    let url = format!("file://{}", mirror_dir.display());
    let offline = |home: &Path, args: &[&str]| {
        let mut c = kbin(home, &manifest);
        for v in [
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "https_proxy",
            "http_proxy",
            "all_proxy",
        ] {
            c.env(v, "http://127.0.0.1:1");
        }
        c.args(args).args(["--mirror", &url]).output().unwrap()
    };
    let airgapped = tmp.path().join("airgapped");
    let t = ok(&offline(&airgapped, &["update"]));
    assert!(t.contains(&format!("kubernetes {OLD} → {NEW}")), "{t}");
    ok(&offline(
        &airgapped,
        &["install", "1.30", "--arch", "amd64"],
    ));
    assert_eq!(digests(&airgapped), digests(&connected));
    assert!(
        digests(&airgapped)
            .1
            .iter()
            .any(|(name, _)| name == "registry.k8s.io/pause:3.9"),
        "the air-gapped toolchain has its pause image"
    );

    // An export missing one file: one clear error naming it, and no toolchain.
    let gone =
        "kubernetes-sigs/cri-tools/releases/download/v1.30.0/crictl-v1.30.0-linux-amd64.tar.gz";
    std::fs::remove_file(mirror_dir.join(gone)).unwrap();
    let broken = tmp.path().join("broken");
    ok(&offline(&broken, &["update"]));
    let o = offline(&broken, &["install", "1.30", "--arch", "amd64"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        err.contains(gone) && err.contains("does not exist"),
        "{err}"
    );
    assert!(!broken.join("kbin/toolchains/1.30").exists());
}

#[test]
fn export_without_versions_or_toolchains_says_what_to_name() {
    let tmp = tempfile::tempdir().unwrap();
    let o = kbin(tmp.path(), Path::new("/nonexistent"))
        .env_remove("KBIN_MANIFEST")
        .args(["mirror", "export", "--out"])
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nothing to export") && err.contains("--toolchain"),
        "{err}"
    );
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn a_toolchain_exports_its_own_artifacts_and_checksum_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, manifest) = upstream(tmp.path());
    let home = tmp.path().join("home");
    let base = server.base();
    ok(&kbin(&home, &manifest)
        .args([
            "install", "1.30", "--arch", "amd64", "--name", "t", "--mirror", &base,
        ])
        .output()
        .unwrap());
    drop(server);
    let dir = tmp.path().join("export");
    let o = kbin(&home, &manifest)
        .args(["mirror", "export", "--toolchain", "t", "--json", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    ok(&o);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["written"], 12, "{r}");
    // The checksum files it writes are ones kbin reads: an install from the export alone works.
    let other = tmp.path().join("other");
    ok(&kbin(&other, &manifest)
        .args(["install", "1.30", "--arch", "amd64", "--mirror"])
        .arg(format!("file://{}", dir.display()))
        .output()
        .unwrap());
    let sums =
        std::fs::read_to_string(dir.join("etcd-io/etcd/releases/download/v3.5.16/SHA256SUMS"))
            .unwrap();
    assert!(
        sums.ends_with("  etcd-v3.5.16-linux-amd64.tar.gz\n"),
        "{sums}"
    );
}
