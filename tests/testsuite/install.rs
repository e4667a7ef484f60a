//! `kbin install` end to end: the real binary against a real HTTP server on 127.0.0.1 serving
//! upstream-shaped artifacts made at test time, through `--mirror`, with a test manifest whose
//! pins are the fixtures' digests.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin_cmd;
use common::git;
use common::server::{Fault, Server};
use sha2::{Digest, Sha256};

const KUBE: &str = "1.30.14";
const KUBE_BINS: [&str; 7] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "kubeadm",
];
/// Kubernetes binaries left unpinned in the test manifest (as upstream's manifest leaves them
/// for most patches): verified against the served `.sha256` files.
const UNPINNED: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A shell script that prints `line`, padded to `size` bytes with a comment so downloads take
/// a few chunks.
fn script(line: &str, size: usize) -> Vec<u8> {
    let mut s = format!("#!/bin/sh\necho '{line}'\nexit 0\n#").into_bytes();
    s.resize(size.max(s.len()), b'x');
    s.push(b'\n');
    s
}

/// A gzip tarball of (path, content, mode).
fn tgz(entries: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

struct Artifact {
    path: String,
    body: Vec<u8>,
    pin: Option<String>,
}

/// The fixture: a server with every artifact of one Kubernetes 1.30 toolchain for `arch`, and
/// a manifest pinning them.
struct Fixture {
    server: Server,
    home: tempfile::TempDir,
    manifest: PathBuf,
    artifacts: Vec<Artifact>,
}

fn artifacts(arch: &str, kube_size: usize) -> Vec<Artifact> {
    let mut v = Vec::new();
    for b in KUBE_BINS {
        let body = script(&format!("{b} Kubernetes v{KUBE}"), kube_size);
        let path = format!("/release/v{KUBE}/bin/linux/{arch}/{b}");
        let pin = (!UNPINNED.contains(&b))
            .then(|| format!("\"{b}/{arch}/{KUBE}\" = \"sha256:{}\"", sha256(&body)));
        v.push(Artifact {
            path: format!("{path}.sha256"),
            body: format!("{}\n", sha256(&body)).into_bytes(),
            pin: None,
        });
        v.push(Artifact { path, body, pin });
    }
    let etcd = tgz(&[
        (
            &format!("etcd-v3.5.16-linux-{arch}/etcd"),
            script("etcd Version: 3.5.16", 0),
            0o755,
        ),
        (
            &format!("etcd-v3.5.16-linux-{arch}/etcdctl"),
            script("etcdctl version: 3.5.16", 0),
            0o755,
        ),
        (
            &format!("etcd-v3.5.16-linux-{arch}/etcdutl"),
            script("etcdutl version: 3.5.16", 0),
            0o755,
        ),
        (
            &format!("etcd-v3.5.16-linux-{arch}/README.md"),
            b"docs".to_vec(),
            0o644,
        ),
    ]);
    let containerd = tgz(&[
        (
            "bin/containerd",
            script("containerd github.com/containerd/containerd v1.7.23", 0),
            0o755,
        ),
        (
            "bin/containerd-shim-runc-v2",
            script("containerd-shim-runc-v2 v1.7.23", 0),
            0o755,
        ),
        (
            "bin/ctr",
            script("ctr github.com/containerd/containerd v1.7.23", 0),
            0o755,
        ),
    ]);
    let runc = script("runc version 1.1.14", 0);
    let cni = tgz(&[
        ("./bridge", script("CNI bridge plugin v1.4.0", 0), 0o755),
        (
            "./host-local",
            script("CNI host-local plugin v1.4.0", 0),
            0o755,
        ),
        ("./loopback", script("CNI loopback plugin v1.4.0", 0), 0o755),
        ("./portmap", script("CNI portmap plugin v1.4.0", 0), 0o755),
        ("./tuning", script("CNI tuning plugin v1.4.0", 0), 0o755),
    ]);
    let crictl = tgz(&[("crictl", script("crictl version v1.30.0", 0), 0o755)]);
    for (pin, path, body) in [
        (
            "etcd",
            format!("/etcd-io/etcd/releases/download/v3.5.16/etcd-v3.5.16-linux-{arch}.tar.gz"),
            etcd,
        ),
        (
            "containerd",
            format!(
                "/containerd/containerd/releases/download/v1.7.23/containerd-1.7.23-linux-{arch}.tar.gz"
            ),
            containerd,
        ),
        (
            "runc",
            format!("/opencontainers/runc/releases/download/v1.1.14/runc.{arch}"),
            runc,
        ),
        (
            "cni-plugins",
            format!(
                "/containernetworking/plugins/releases/download/v1.4.0/cni-plugins-linux-{arch}-v1.4.0.tgz"
            ),
            cni,
        ),
        (
            "crictl",
            format!(
                "/kubernetes-sigs/cri-tools/releases/download/v1.30.0/crictl-v1.30.0-linux-{arch}.tar.gz"
            ),
            crictl,
        ),
    ] {
        let version = path
            .split("/download/v")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        v.push(Artifact {
            pin: Some(format!(
                "\"{pin}/{arch}/{version}\" = \"sha256:{}\"",
                sha256(&body)
            )),
            path,
            body,
        });
    }
    v
}

/// The real manifest's components and rules, with one release and the fixtures' pins.
fn write_manifest(path: &Path, artifacts: &[Artifact]) {
    let real =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("toolchains.toml"))
            .unwrap();
    let hand = &real[..real.find("# ---- BEGIN GENERATED").unwrap()];
    let mut text = hand.to_string();
    text.push_str(&format!(
        "[release.\"1.30\"]\nlatest = \"{KUBE}\"\npatches = [\"{KUBE}\"]\n\
         defaults = {{ etcd = \"3.5.16\", containerd = \"1.7.23\", runc = \"1.1.14\", cni-plugins = \"1.4.0\", crictl = \"1.30.0\" }}\n\
         images = {{ coredns = \"1.11.1\", pause = \"3.9\" }}\n\n[pins]\n"
    ));
    for a in artifacts {
        if let Some(p) = &a.pin {
            text.push_str(p);
            text.push('\n');
        }
    }
    std::fs::write(path, text).unwrap();
}

impl Fixture {
    fn new() -> Fixture {
        Self::with_size(64 << 10)
    }

    fn with_size(kube_size: usize) -> Fixture {
        let server = Server::start();
        let home = tempfile::tempdir().unwrap();
        let mut arts = artifacts("amd64", kube_size);
        arts.extend(artifacts("arm64", kube_size));
        for a in &arts {
            server.put(&a.path, a.body.clone());
        }
        // The release's images, as registry.k8s.io serves them (the server is every host's mirror).
        common::registry::publish(&server, "pause", "3.9");
        common::registry::publish(&server, "coredns/coredns", "v1.11.1");
        let manifest = home.path().join("manifest.toml");
        write_manifest(&manifest, &arts);
        Fixture {
            server,
            home,
            manifest,
            artifacts: arts,
        }
    }

    fn kbin_home(&self) -> PathBuf {
        self.home.path().join("kbin")
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = cargo_bin_cmd!("kbin");
        self.env(c.env_clear());
        c
    }

    fn env<'a>(&self, c: &'a mut assert_cmd::Command) -> &'a mut assert_cmd::Command {
        c.env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.home.path())
            .env("KBIN_HOME", self.kbin_home())
            .env("KBIN_MANIFEST", &self.manifest)
            .env("KBIN_MIRROR", self.server.base())
            .env("KBIN_HTTP_BACKOFF_MS", "10")
    }

    fn std_cmd(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin!("kbin"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.home.path())
            .env("KBIN_HOME", self.kbin_home())
            .env("KBIN_MANIFEST", &self.manifest)
            .env("KBIN_MIRROR", self.server.base())
            .env("KBIN_HTTP_BACKOFF_MS", "10");
        c
    }

    fn path_of(&self, suffix: &str) -> String {
        self.artifacts
            .iter()
            .find(|a| a.path.ends_with(suffix))
            .unwrap_or_else(|| panic!("no fixture ends with {suffix}"))
            .path
            .clone()
    }

    fn toolchain(&self, name: &str) -> PathBuf {
        self.kbin_home().join("toolchains").join(name)
    }

    fn receipt(&self, name: &str) -> toml::Table {
        toml::from_str(
            &std::fs::read_to_string(self.toolchain(name).join("toolchain.lock")).unwrap(),
        )
        .unwrap()
    }

    /// Every file under cache/blobs.
    fn blobs(&self) -> Vec<PathBuf> {
        walk(&self.kbin_home().join("cache/blobs"))
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn install_succeeds_binaries_run_and_the_lock_is_right() {
    let f = Fixture::new();
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The real manifest names dl.k8s.io's detached signatures: a pinned binary never fetches
    // them (its pin vouches more), nor does an unpinned one without a bundle `kbin update` stored.
    for b in KUBE_BINS {
        for ext in ["sig", "cert", "sigstore.json"] {
            for arch in ["amd64", "arm64"] {
                let p = format!("/release/v{KUBE}/bin/linux/{arch}/{b}.{ext}");
                assert_eq!(f.server.requests(&p), 0, "{p}");
            }
        }
    }
    let tc = f.toolchain("1.30");
    let kubectl = Command::new(tc.join("bin/kubectl")).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&kubectl.stdout).trim(),
        format!("kubectl Kubernetes v{KUBE}")
    );
    for b in [
        "kube-apiserver",
        "kubelet",
        "etcd",
        "etcdctl",
        "containerd",
        "ctr",
        "runc",
        "crictl",
    ] {
        assert!(tc.join("bin").join(b).is_file(), "bin/{b}");
    }
    // CNI plugins live outside PATH; optional ones are taken when the archive has them.
    for b in ["bridge", "host-local", "loopback", "portmap", "tuning"] {
        assert!(tc.join("libexec/cni").join(b).is_file(), "libexec/cni/{b}");
    }
    assert!(!tc.join("libexec/cni/vlan").exists());

    let r = f.receipt("1.30");
    assert_eq!(r["kubernetes"].as_str(), Some(KUBE));
    assert_eq!(r["arch"].as_str(), Some("amd64"));
    let comps = r["component"].as_array().unwrap();
    let comp = |n: &str| {
        comps
            .iter()
            .find(|c| c["name"].as_str() == Some(n))
            .unwrap()
    };
    let kube = comp("kubernetes");
    let art = |url_end: &str| {
        kube["artifact"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["url"].as_str().unwrap().ends_with(url_end))
            .unwrap()
            .clone()
    };
    assert_eq!(art("/amd64/kubelet")["pinned"].as_bool(), Some(true));
    assert_eq!(
        art("/amd64/kube-apiserver")["pinned"].as_bool(),
        Some(false)
    );
    assert!(
        art("/amd64/kubelet")["url"]
            .as_str()
            .unwrap()
            .starts_with("https://dl.k8s.io/")
    );
    let kubelet = kube["binary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"].as_str() == Some("kubelet"))
        .unwrap();
    assert_eq!(
        kubelet["reports"].as_str(),
        Some(format!("kubelet Kubernetes v{KUBE}").as_str())
    );
    assert_eq!(kubelet["path"].as_str(), Some("bin/kubelet"));
    let on_disk = std::fs::read(tc.join("bin/kubelet")).unwrap();
    assert_eq!(
        kubelet["digest"].as_str().unwrap(),
        format!("sha256:{}", sha256(&on_disk))
    );
    assert_eq!(comp("etcd")["version"].as_str(), Some("3.5.16"));
    assert_eq!(comp("etcd")["artifact"][0]["pinned"].as_bool(), Some(true));
    // The first toolchain becomes the default.
    let settings = std::fs::read_to_string(f.kbin_home().join("settings.toml")).unwrap();
    assert!(settings.contains("default = \"1.30\""), "{settings}");
    // The warning about unpinned artifacts names them.
    assert!(
        stderr(&out).contains("kube-apiserver is not pinned"),
        "{}",
        stderr(&out)
    );

    // A second install is a cache hit that asks the server nothing.
    f.server.reset_counters();
    let t = Instant::now();
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    let warm = t.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.server.total_requests(), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    assert!(warm < Duration::from_secs(2), "{warm:?}");

    // show-versions reports it, as text and JSON.
    let out = f.cmd().args(["show-versions", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "1.30");
    assert_eq!(v[0]["default"], true);
    let out = f.cmd().args(["show-versions"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1.30 (default)")
            && text.contains("checksum file only")
            && text.contains("etcd Version: 3.5.16"),
        "{text}"
    );
}

/// An etcd release archive holding `members` (names under `etcd-v{v}-linux-amd64/`).
fn etcd_archive(v: &str, members: &[&str]) -> Vec<u8> {
    let entries: Vec<(String, Vec<u8>, u32)> = members
        .iter()
        .map(|m| {
            (
                format!("etcd-v{v}-linux-amd64/{m}"),
                script(&format!("{m} version: {v}"), 0),
                0o755,
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>, u32)> = entries
        .iter()
        .map(|(p, b, m)| (p.as_str(), b.clone(), *m))
        .collect();
    tgz(&refs)
}

impl Fixture {
    /// Serve an etcd `v` archive holding `members`, pinned in the test manifest.
    fn add_etcd(&self, v: &str, members: &[&str]) {
        let body = etcd_archive(v, members);
        let mut m = std::fs::read_to_string(&self.manifest).unwrap();
        m.push_str(&format!(
            "\"etcd/amd64/{v}\" = \"sha256:{}\"\n",
            sha256(&body)
        ));
        std::fs::write(&self.manifest, m).unwrap();
        self.server.put(
            &format!("/etcd-io/etcd/releases/download/v{v}/etcd-v{v}-linux-amd64.tar.gz"),
            body,
        );
    }
}

#[test]
fn etcd_3_4_installs_without_etcdutl_which_it_never_shipped() {
    let f = Fixture::new();
    // etcd 3.4's archive: etcd and etcdctl only (etcdutl is new in 3.5).
    f.add_etcd("3.4.23", &["etcd", "etcdctl", "README.md"]);
    let out = f
        .cmd()
        .args([
            "install",
            "1.30",
            "--with",
            "etcd=3.4.23",
            "--allow-skew",
            "--only",
            "etcd",
            "--name",
            "etcd34",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bin = f.toolchain("etcd34").join("bin");
    assert!(bin.join("etcd").is_file() && bin.join("etcdctl").is_file());
    assert!(!bin.join("etcdutl").exists());
    let r = f.receipt("etcd34");
    let etcd = r["component"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("etcd"))
        .unwrap();
    assert_eq!(etcd["version"].as_str(), Some("3.4.23"));
    let names: Vec<&str> = etcd["binary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["etcd", "etcdctl"]);
    assert_eq!(
        etcd["binary"][0]["reports"].as_str(),
        Some("etcd version: 3.4.23")
    );
}

#[test]
fn an_etcd_3_5_archive_without_etcdutl_is_refused() {
    let f = Fixture::new();
    // 3.5 ships etcdutl: an archive without it is not what upstream publishes.
    f.add_etcd("3.5.21", &["etcd", "etcdctl"]);
    let out = f
        .cmd()
        .args(["install", "1.30", "--with", "etcd=3.5.21", "--only", "etcd"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("does not contain etcd-v3.5.21-linux-amd64/etcdutl"),
        "{err}"
    );
    assert!(!f.toolchain("1.30").exists());
}

#[test]
fn reinstalling_after_uninstall_uses_the_cache_even_for_unpinned_artifacts() {
    let f = Fixture::new();
    assert!(
        f.cmd()
            .args(["install", "1.30"])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(
        f.cmd()
            .args(["uninstall", "1.30"])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(!f.toolchain("1.30").exists());
    let settings = std::fs::read_to_string(f.kbin_home().join("settings.toml")).unwrap_or_default();
    assert!(!settings.contains("default"), "{settings}");
    f.server.reset_counters();
    let out = f
        .cmd()
        .args(["install", "1.30", "--name", "again"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.server.total_requests(), 0);
    assert!(f.toolchain("again").join("bin/kube-apiserver").is_file());
}

#[test]
fn a_digest_mismatch_installs_nothing_and_keeps_nothing() {
    let f = Fixture::new();
    let etcd = f.path_of("etcd-v3.5.16-linux-amd64.tar.gz");
    let evil = tgz(&[("etcd-v3.5.16-linux-amd64/etcd", script("evil", 0), 0o755)]);
    f.server.put(&etcd, evil.clone());
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("etcd-v3.5.16-linux-amd64.tar.gz") && err.contains(&sha256(&evil)),
        "{err}"
    );
    assert!(!f.toolchain("1.30").exists());
    let hexes: Vec<String> = f
        .blobs()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!hexes.contains(&sha256(&evil)), "the bad artifact was kept");
    let tmp = walk(&f.kbin_home().join("cache/tmp"));
    assert!(
        tmp.iter()
            .all(|p| p.extension().is_some_and(|e| e == "lock")),
        "{tmp:?}"
    );
    let names: Vec<_> = std::fs::read_dir(f.kbin_home().join("toolchains"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        names.iter().all(|n| n.to_string_lossy().ends_with(".lock")),
        "{names:?}"
    );
}

#[test]
fn a_missing_artifact_is_one_error_naming_its_url() {
    let f = Fixture::new();
    let crictl = f.path_of("crictl-v1.30.0-linux-amd64.tar.gz");
    f.server.remove(&crictl);
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        err.contains(&format!("{}{crictl}", f.server.base())) && err.contains("404"),
        "{err}"
    );
    assert_eq!(f.server.requests(&crictl), 1, "4xx must not be retried");
    assert!(!f.toolchain("1.30").exists());
}

#[test]
fn server_errors_are_retried_until_the_artifact_comes() {
    let f = Fixture::new();
    let runc = f.path_of("runc.amd64");
    f.server.fault(&runc, Fault::Status(500));
    f.server.fault(&runc, Fault::Status(500));
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.server.requests(&runc), 3);
}

#[test]
fn quiet_install_prints_nothing_but_errors() {
    let f = Fixture::new();
    let out = f.cmd().args(["install", "1.30", "-q"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(f.toolchain("1.30").join("bin/kubectl").is_file());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "no result table");
    assert_eq!(stderr(&out), "");
    // Up to date: still nothing.
    let again = f.cmd().args(["install", "1.30", "-q"]).output().unwrap();
    assert!(again.status.success());
    assert!(again.stdout.is_empty() && again.stderr.is_empty());
    // An error still says what failed.
    let bad = f
        .cmd()
        .args(["install", "1.30", "-q", "--only", "nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).starts_with("error: "), "{}", stderr(&bad));
}

#[test]
fn a_dead_mirror_says_it_is_retrying_before_the_error() {
    let f = Fixture::new();
    // Nothing listens on port 1: every attempt is refused at once.
    let out = f
        .cmd()
        .env("KBIN_HTTP_RETRIES", "2")
        .args([
            "install",
            "1.30",
            "--only",
            "kubectl",
            "--mirror",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    let retries: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("kubectl: ") && l.contains(" failed, next try in "))
        .collect();
    assert_eq!(retries.len(), 2, "one line per retry:\n{err}");
    assert!(
        retries[0].contains("Connection refused") && retries[0].contains("; attempt 1 of 3 failed"),
        "{err}"
    );
    assert!(retries[1].contains("; attempt 2 of 3 failed"), "{err}");
    assert!(!err.contains("downloaded kubectl"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1);
}

#[test]
fn a_cut_download_resumes_from_the_cut() {
    let f = Fixture::new();
    let kubelet = f.path_of("/amd64/kubelet");
    f.server.fault(&kubelet, Fault::CutAfter(20_000));
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let ranges = f.server.ranges(&kubelet);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[1].as_deref(), Some("bytes=20000-"));
    assert!(
        Command::new(f.toolchain("1.30").join("bin/kubelet"))
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn a_stalled_server_is_a_timeout_error() {
    let f = Fixture::new();
    let etcd = f.path_of("etcd-v3.5.16-linux-amd64.tar.gz");
    f.server.fault_always(&etcd, Fault::StallAfter(100));
    let out = f
        .cmd()
        .args(["install", "1.30"])
        .env("KBIN_HTTP_STALL_TIMEOUT_MS", "300")
        .env("KBIN_HTTP_RETRIES", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert!(!f.toolchain("1.30").exists());
}

#[test]
fn a_wrong_content_length_is_an_error_and_nothing_is_kept() {
    let f = Fixture::new();
    let runc = f.path_of("runc.amd64");
    let len = f
        .artifacts
        .iter()
        .find(|a| a.path == runc)
        .unwrap()
        .body
        .len() as u64;
    f.server
        .fault_always(&runc, Fault::ContentLength(len + 1000));
    let out = f
        .cmd()
        .args(["install", "1.30"])
        .env("KBIN_HTTP_RETRIES", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("runc.amd64"), "{}", stderr(&out));
    assert!(!f.toolchain("1.30").exists());
    let tmp = walk(&f.kbin_home().join("cache/tmp"));
    assert!(
        tmp.iter()
            .all(|p| p.extension().is_some_and(|e| e == "lock")),
        "{tmp:?}"
    );
}

#[test]
fn a_killed_install_is_finished_by_the_next_one_and_the_cache_stays_sound() {
    let f = Fixture::with_size(3 << 20);
    let api = f.path_of("/amd64/kube-apiserver");
    f.server.fault(&api, Fault::Slow(1 << 20));
    let mut child = f
        .std_cmd()
        .args(["install", "1.30", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until part of the slow artifact is on disk (its partial file is named after its
    // digest), then SIGKILL the process.
    let api_hex = sha256(&f.artifacts.iter().find(|a| a.path == api).unwrap().body);
    let tmp = f.kbin_home().join("cache/tmp");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let partial = walk(&tmp).into_iter().find(|p| {
            p.extension().is_some_and(|e| e == "partial") && p.to_string_lossy().contains(&api_hex)
        });
        if partial.is_some_and(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) > 100_000) {
            break;
        }
        assert!(Instant::now() < deadline, "no partial download appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    assert!(!f.toolchain("1.30").exists());

    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let ranges = f.server.ranges(&api);
    assert!(
        ranges
            .last()
            .unwrap()
            .as_deref()
            .is_some_and(|r| r != "bytes=0-"),
        "not resumed: {ranges:?}"
    );
    let out = f.cmd().args(["cache", "verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all intact"));
}

#[test]
fn two_installs_at_once_both_succeed_with_one_download_each() {
    let f = Fixture::with_size(1 << 20);
    for a in &f.artifacts {
        if !a.path.ends_with(".sha256") && a.path.contains("amd64") {
            f.server.fault(&a.path, Fault::Slow(8 << 20));
        }
    }
    let children: Vec<_> = (0..2)
        .map(|_| {
            f.std_cmd()
                .args(["install", "1.30", "-q"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for a in &f.artifacts {
        if !a.path.ends_with(".sha256") && a.path.contains("amd64") {
            assert_eq!(f.server.requests(&a.path), 1, "{} fetched twice", a.path);
        }
    }
    assert!(f.toolchain("1.30").join("bin/kubectl").is_file());
}

#[test]
fn only_and_another_arch_install_a_subset_without_running_it() {
    let f = Fixture::new();
    let out = f
        .cmd()
        .args([
            "install",
            "1.30",
            "--only",
            "kubectl,etcd",
            "--arch",
            "arm64",
            "--name",
            "ws",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bins: Vec<String> = std::fs::read_dir(f.toolchain("ws").join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut bins = bins;
    bins.sort();
    assert_eq!(bins, ["etcd", "etcdctl", "etcdutl", "kubectl"]);
    let r = f.receipt("ws");
    assert_eq!(r["arch"].as_str(), Some("arm64"));
    for c in r["component"].as_array().unwrap() {
        for b in c["binary"].as_array().unwrap() {
            assert!(
                b.get("reports").is_none(),
                "an arm64 binary was run on this host: {b:?}"
            );
        }
    }
    assert_eq!(f.server.requests(&f.path_of("/arm64/kubelet")), 0);
    assert_eq!(f.server.requests(&f.path_of("/arm64/kubectl")), 1);
}

#[test]
fn unknown_only_names_and_require_pinned_fail_before_any_request() {
    let f = Fixture::new();
    let out = f
        .cmd()
        .args(["install", "1.30", "--only", "kubectl,nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--only names \"nope\""),
        "{}",
        stderr(&out)
    );
    let out = f
        .cmd()
        .args(["install", "1.30", "--require-pinned"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--require-pinned") && err.contains("kube-apiserver") && err.contains("hint:"),
        "{err}"
    );
    assert_eq!(f.server.total_requests(), 0);
    assert!(!f.kbin_home().join("toolchains/1.30").exists());
    // Pinned-only subsets are fine.
    let out = f
        .cmd()
        .args([
            "install",
            "1.30",
            "--require-pinned",
            "--only",
            "kubectl,etcd",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_malicious_archive_is_refused_and_nothing_escapes() {
    let f = Fixture::new();
    let crictl = f.path_of("crictl-v1.30.0-linux-amd64.tar.gz");
    // A tarball whose entry climbs out; the tar crate refuses to write such names, so the
    // header's name bytes are set by hand.
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let data = script("crictl", 0);
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../../escape");
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
    let evil = b.into_inner().unwrap().finish().unwrap();
    f.server.put(&crictl, evil.clone());
    let mut m = std::fs::read_to_string(&f.manifest).unwrap();
    let good = f.artifacts.iter().find(|a| a.path == crictl).unwrap();
    m = m.replace(&sha256(&good.body), &sha256(&evil));
    std::fs::write(&f.manifest, m).unwrap();
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing the entry"),
        "{}",
        stderr(&out)
    );
    assert!(!f.toolchain("1.30").exists());
    for base in [f.kbin_home().join("cache"), f.home.path().to_path_buf()] {
        assert!(
            walk(&base).iter().all(|p| !p.ends_with("escape")),
            "escaped under {base:?}"
        );
    }
}

#[test]
fn gc_keeps_what_toolchains_use_and_verify_names_corrupt_blobs() {
    let f = Fixture::new();
    assert!(
        f.cmd()
            .args(["install", "1.30"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let before = f.blobs().len();
    let out = f.cmd().args(["cache", "gc", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["blobs"], 0, "{v}");
    assert_eq!(f.blobs().len(), before);
    // Still complete: a reinstall asks nothing.
    f.server.reset_counters();
    assert!(
        f.cmd()
            .args(["install", "1.30"])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert_eq!(f.server.total_requests(), 0);

    // Corrupt one blob: verify names it and fails.
    let victim = f
        .blobs()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/sha256/"))
        .unwrap();
    let mut perms = std::fs::metadata(&victim).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&victim, perms).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&victim)
        .unwrap()
        .write_all(b"rot")
        .unwrap();
    let out = f.cmd().args(["cache", "verify"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&victim.display().to_string()));

    // Once nothing uses them, gc removes every blob.
    assert!(
        f.cmd()
            .args(["uninstall", "1.30"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = f.cmd().args(["cache", "gc"]).output().unwrap();
    assert!(out.status.success());
    assert!(f.blobs().is_empty(), "{:?}", f.blobs());
}

#[test]
fn default_and_uninstall_refuse_unknown_toolchains() {
    let f = Fixture::new();
    let out = f.cmd().args(["default", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no toolchain named \"nope\""));
    let out = f.cmd().args(["uninstall", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        f.cmd()
            .args(["install", "1.30", "--only", "kubectl"])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(
        f.cmd()
            .args(["install", "1.30", "--only", "etcd", "--name", "e"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = f.cmd().args(["default"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.30");
    assert!(
        f.cmd()
            .args(["default", "e"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = f.cmd().args(["default", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["default"], "e");
}

#[test]
fn from_source_of_a_binary_is_refused_before_any_request() {
    let f = Fixture::new();
    let out = f
        .cmd()
        .args(["install", "1.30", "--from-source", "kubectl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--from-source names \"kubectl\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.server.total_requests(), 0);
    assert!(!f.toolchain("1.30").exists());
}

#[test]
fn gc_removes_only_what_no_toolchain_uses_and_what_killed_installs_left() {
    let f = Fixture::new();
    let ok = |args: &[&str]| {
        let out = f.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    ok(&["install", "1.30"]);
    f.server.reset_counters();
    // A second toolchain sharing kubectl's blob: made from the cache alone.
    ok(&["install", "1.30", "--name", "ws", "--only", "kubectl"]);
    assert_eq!(f.server.total_requests(), 0);
    ok(&["uninstall", "1.30"]);
    // What a kbin killed while assembling leaves behind: a hidden staging directory.
    let leftover = f.kbin_home().join("toolchains/.staging-1.30-killed/bin");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("kubelet"), b"half").unwrap();

    let before = f.blobs().len();
    let out = ok(&["cache", "gc", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = v["blobs"].as_u64().unwrap() as usize;
    assert!(removed > 0 && removed < before, "{v}");
    assert_eq!(f.blobs().len(), before - removed);
    assert!(v["tmp"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        !f.kbin_home()
            .join("toolchains/.staging-1.30-killed")
            .exists()
    );

    // ws is whole: its kubectl runs, verify is clean, and its receipt's digests are all kept.
    let kubectl = Command::new(f.toolchain("ws").join("bin/kubectl"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&kubectl.stdout).trim(),
        format!("kubectl Kubernetes v{KUBE}")
    );
    ok(&["cache", "verify"]);
    let receipt = f.receipt("ws");
    for c in receipt["component"].as_array().unwrap() {
        for key in ["artifact", "binary"] {
            for item in c.get(key).and_then(|x| x.as_array()).into_iter().flatten() {
                let d = item["digest"].as_str().unwrap();
                let (algo, hex) = d.split_once(':').unwrap();
                let blob = f
                    .kbin_home()
                    .join("cache/blobs")
                    .join(algo)
                    .join(&hex[..2])
                    .join(hex);
                assert!(blob.is_file(), "gc removed {d}, which ws uses");
            }
        }
    }
    // Reinstalling the removed toolchain downloads again what gc removed, and only that.
    f.server.reset_counters();
    ok(&["install", "1.30"]);
    assert!(f.server.total_requests() > 0);
    assert_eq!(
        f.server.requests(&f.path_of("/bin/linux/amd64/kubectl")),
        0,
        "kubectl was kept"
    );
}

#[test]
fn per_host_mirrors_from_settings_and_the_mirror_flag_both_work() {
    let f = Fixture::new();
    // Without KBIN_MIRROR: per-host entries in settings.toml. Anything they miss would go to a
    // dead proxy on loopback, never outside.
    std::fs::create_dir_all(f.kbin_home()).unwrap();
    std::fs::write(
        f.kbin_home().join("settings.toml"),
        format!(
            "[mirrors]\n\"dl.k8s.io\" = \"{0}\"\n\"github.com\" = \"{0}\"\n",
            f.server.base()
        ),
    )
    .unwrap();
    let no_env_mirror = |c: &mut assert_cmd::Command| {
        c.env_remove("KBIN_MIRROR")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1")
            .env("KBIN_HTTP_RETRIES", "0");
    };
    let mut c = f.cmd();
    no_env_mirror(&mut c);
    let out = c
        .args(["install", "1.30", "--only", "kubectl,etcd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.server.requests(&f.path_of("/bin/linux/amd64/kubectl")), 1);
    let etcd = Command::new(f.toolchain("1.30").join("bin/etcd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(etcd.status.success());

    // The global --mirror flag, in a fresh home with no settings.
    std::fs::remove_dir_all(f.kbin_home()).unwrap();
    f.server.reset_counters();
    let mut c = f.cmd();
    no_env_mirror(&mut c);
    let out = c
        .args([
            "--mirror",
            &f.server.base(),
            "install",
            "1.30",
            "--only",
            "kubectl",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.server.requests(&f.path_of("/bin/linux/amd64/kubectl")), 1);
}

/// A runc-shaped repository: tag v1.1.14, and a Makefile whose `runc` target (the real
/// manifest's recipe: `make runc COMMIT=…`) writes a script stamped with COMMIT, or fails when
/// `fail`. Returns the tagged commit.
fn runc_repo(dir: &Path, fail: bool) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let recipe = if fail {
        "\t@echo 'cc: fatal error: seccomp.h: No such file or directory' >&2; exit 1\n".to_string()
    } else {
        "\tprintf '#!/bin/sh\\necho runc version 1.1.14 commit $(COMMIT)\\n' > runc\n\tchmod +x runc\n"
            .to_string()
    };
    std::fs::write(dir.join("Makefile"), format!("runc:\n{recipe}")).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "runc"]);
    git(dir, &["tag", "v1.1.14"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The fixture's manifest with runc's repository pointing at `repo`, and without runc's
/// release rows (their needs, command and checks are real runc's, not the fixture Makefile's).
fn with_runc_repository(f: &Fixture, repo: &Path) {
    let text = std::fs::read_to_string(&f.manifest).unwrap();
    let from = "repository = \"https://github.com/opencontainers/runc\"";
    assert!(
        text.contains(from),
        "the real manifest names runc's repository"
    );
    let to = format!("repository = \"file://{}\"", repo.display());
    let mut text = text.replace(from, &to);
    let start = text.find(&to).unwrap();
    let end = start + text[start..].find("[[component]]").unwrap();
    if let Some(rows) = text[start..end].find("\n[[component.recipe.release]]") {
        text.replace_range(start + rows..end, "\n\n");
    }
    std::fs::write(&f.manifest, text).unwrap();
}

#[test]
fn from_source_builds_that_component_and_downloads_the_rest() {
    let f = Fixture::new();
    let repos = tempfile::tempdir().unwrap();
    let commit = runc_repo(&repos.path().join("runc"), false);
    with_runc_repository(&f, &repos.path().join("runc"));
    let runc_url = f.path_of("/runc.amd64");

    let out = f
        .cmd()
        .args(["install", "1.30", "--from-source", "runc"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tc = f.toolchain("1.30");
    let run = |b: &str| {
        let o = Command::new(tc.join("bin").join(b)).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    // runc is the build's, stamped with the tag's commit; nothing asked the server for it.
    assert_eq!(run("runc"), format!("runc version 1.1.14 commit {commit}"));
    assert_eq!(f.server.requests(&runc_url), 0);
    // The rest came from the mirror.
    assert_eq!(run("kubectl"), format!("kubectl Kubernetes v{KUBE}"));
    assert!(f.server.requests(&f.path_of("/amd64/kubectl")) >= 1);

    let receipt = f.receipt("1.30");
    let comps = receipt["component"].as_array().unwrap();
    let comp = |name: &str| {
        comps
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in the lock"))
    };
    let runc = comp("runc");
    assert_eq!(runc["origin"].as_str(), Some("source"));
    assert_eq!(runc["source"]["commit"].as_str(), Some(commit.as_str()));
    assert_eq!(runc["source"]["ref"].as_str(), Some("v1.1.14"));
    assert_eq!(comp("etcd")["origin"].as_str(), Some("download"));

    // show-versions says where each came from.
    let out = f.cmd().args(["show-versions", "1.30"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("source v1.1.14@{}", &commit[..12])),
        "{text}"
    );
}

#[test]
fn a_failing_source_build_during_install_installs_nothing() {
    let f = Fixture::new();
    let repos = tempfile::tempdir().unwrap();
    runc_repo(&repos.path().join("runc"), true);
    with_runc_repository(&f, &repos.path().join("runc"));

    let out = f
        .cmd()
        .args(["install", "1.30", "--from-source", "runc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("seccomp.h: No such file or directory"),
        "{err}"
    );
    assert!(err.contains("make runc"), "the command to rerun: {err}");
    assert!(!f.toolchain("1.30").exists(), "a half toolchain was left");
    let o = f.cmd().args(["show-versions", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn a_node_toolchain_gets_its_release_images_and_a_workstation_or_no_images_one_does_not() {
    let f = Fixture::new();
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let images = f.toolchain("1.30").join("images");
    for name in ["pause-3.9.tar", "coredns-v1.11.1.tar"] {
        assert!(images.join(name).is_file(), "{name}");
    }
    let receipt = std::fs::read_to_string(f.toolchain("1.30").join("toolchain.lock")).unwrap();
    assert!(
        receipt.contains("name = \"registry.k8s.io/pause:3.9\""),
        "{receipt}"
    );
    assert!(receipt.contains("[[image]]"), "{receipt}");
    // The amd64 image, not the arm64 one.
    let pause = f.server.requests("/v2/pause/manifests/3.9");
    assert_eq!(pause, 1);

    f.server.reset_counters();
    let out = f
        .cmd()
        .args(["install", "1.30", "--name", "bare", "--no-images"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!f.toolchain("bare").join("images").exists());
    let out = f
        .cmd()
        .args(["install", "1.30", "--name", "ws", "--only", "kubectl,etcd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!f.toolchain("ws").join("images").exists());
    assert_eq!(f.server.requests("/v2/pause/manifests/3.9"), 0);

    // --require-pinned: images are trusted on first use, so it refuses them by name.
    let out = f
        .cmd()
        .args(["install", "1.30", "--name", "strict", "--require-pinned"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("image registry.k8s.io/pause:3.9"), "{err}");
    assert!(err.contains("--no-images"), "{err}");
}

#[test]
fn an_image_the_registry_does_not_have_fails_the_install_and_installs_nothing() {
    let f = Fixture::new();
    f.server.remove("/v2/pause/manifests/3.9");
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot pull registry.k8s.io/pause:3.9"),
        "{err}"
    );
    assert!(err.contains("404"), "{err}");
    assert!(!f.toolchain("1.30").exists());
}

#[test]
fn gen_puts_the_pulled_images_in_the_workers_bundle_and_next_steps_imports_them() {
    let f = Fixture::new();
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tree = f.home.path().join("cluster");
    let out = f
        .cmd()
        .args(["gen", "cluster", "--toolchain", "1.30", "--out"])
        .arg(&tree)
        .args(["--control-plane", "cp=10.0.0.1", "--worker", "w=10.0.0.2"])
        .args(["--host-profile", "systemd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pulled = std::fs::read(f.toolchain("1.30").join("images/pause-3.9.tar")).unwrap();
    assert_eq!(
        std::fs::read(tree.join("nodes/w/var/lib/kbin/images/pause-3.9.tar")).unwrap(),
        pulled
    );
    assert!(!tree.join("nodes/cp/var/lib/kbin/images").exists());
    // In the workers' shared bundle, byte for byte; not in the node's own tarball.
    let bundle = tree.join("bundles/worker-amd64-binaries.tar.gz");
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&bundle).unwrap(),
    ));
    let mut found = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == "var/lib/kbin/images/pause-3.9.tar" {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut b).unwrap();
            assert_eq!(b, pulled);
            found = true;
        }
    }
    assert!(found, "the pause image is not in {}", bundle.display());
    let next = std::fs::read_to_string(tree.join("NEXT-STEPS.md")).unwrap();
    assert!(
        next.contains("ctr -n k8s.io images import /var/lib/kbin/images/*.tar"),
        "{next}"
    );
}

// ---- A damaged store: detected, named, repaired; never reported verified (issue 22, part 2) ----

/// The receipt's digest of `path` (`bin/etcd`) in toolchain `name`, and that blob's path.
fn binary_blob(f: &Fixture, name: &str, path: &str) -> (String, PathBuf) {
    let r = f.receipt(name);
    let digest = r["component"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["binary"].as_array().unwrap().iter())
        .find(|b| b["path"].as_str() == Some(path))
        .unwrap_or_else(|| panic!("{path} is not in the receipt of {name}"))["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = f
        .kbin_home()
        .join("cache/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    (digest, blob)
}

/// Rewrite `path` in place (through every hardlink to it), as a careless editor or a disk
/// error would: made writable first, then cut to `len` bytes.
fn truncate_in_place(path: &Path, len: u64) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// `sha256:<hex>` of a file's bytes.
fn digest_of_file(path: &Path) -> String {
    format!("sha256:{}", sha256(&std::fs::read(path).unwrap()))
}

fn install_ok(f: &Fixture, args: &[&str]) -> std::process::Output {
    let out = f.cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kbin {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

#[test]
fn a_truncated_blob_is_never_linked_into_a_new_toolchain_and_install_repairs_the_old_one() {
    let f = Fixture::new();
    install_ok(&f, &["install", "1.30"]);
    let etcd = f.toolchain("1.30").join("bin/etcd");
    let (digest, blob) = binary_blob(&f, "1.30", "bin/etcd");
    truncate_in_place(&blob, 100);
    assert_eq!(std::fs::metadata(&etcd).unwrap().len(), 100, "a hardlink");

    // show-versions flags it, and fails.
    let out = f.cmd().args(["show-versions"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("DAMAGED: bin/etcd is 100 bytes, its receipt says"),
        "{text}"
    );

    // A new toolchain that needs the blob gets good bytes, unpacked again, and says why.
    f.server.reset_counters();
    let out = install_ok(&f, &["install", "1.30", "--name", "fresh"]);
    assert_eq!(
        f.server.total_requests(),
        0,
        "the archive is intact in the store"
    );
    assert!(
        stderr(&out).contains("was damaged in the store"),
        "{}",
        stderr(&out)
    );
    let fresh = f.toolchain("fresh").join("bin/etcd");
    assert_eq!(digest_of_file(&fresh), digest);
    assert_eq!(digest_of_file(&blob), digest, "the blob is whole again");

    // Installing the old one again is not "up to date": it is repaired, and says what it was.
    let out = install_ok(&f, &["install", "1.30"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("repaired toolchain 1.30"), "{text}");
    assert!(text.contains("bin/etcd is 100 bytes"), "{text}");
    assert_eq!(digest_of_file(&etcd), digest);
    let out = install_ok(&f, &["install", "1.30"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    install_ok(&f, &["show-versions"]);
}

#[test]
fn an_edited_digest_in_the_lock_is_noticed_by_every_command_and_install_puts_it_right() {
    let f = Fixture::new();
    install_ok(&f, &["install", "1.30"]);
    let (digest, _) = binary_blob(&f, "1.30", "bin/etcd");
    let (other, _) = binary_blob(&f, "1.30", "bin/etcdctl");
    let lock = f.toolchain("1.30").join("toolchain.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    // etcd's binary entry now claims etcdctl's digest (a blob that is in the store, intact).
    let edited = text.replacen(
        &format!("path = \"bin/etcd\"\ndigest = \"{digest}\""),
        &format!("path = \"bin/etcd\"\ndigest = \"{other}\""),
        1,
    );
    assert_ne!(edited, text, "{text}");
    std::fs::write(&lock, edited).unwrap();

    let out = f.cmd().args(["show-versions"]).output().unwrap();
    assert!(!out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!(
            "DAMAGED: bin/etcd has digest {digest}, its receipt says {other}"
        )),
        "{shown}"
    );
    let out = f.cmd().args(["cache", "verify"]).output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("toolchain 1.30 is damaged") && said.contains("bin/etcd has digest"),
        "{said}"
    );
    assert!(stderr(&out).contains("--repair"), "{}", stderr(&out));

    let out = install_ok(&f, &["install", "1.30"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("repaired toolchain 1.30"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(binary_blob(&f, "1.30", "bin/etcd").0, digest);
    install_ok(&f, &["cache", "verify"]);
}

#[test]
fn a_binary_replaced_by_a_script_and_a_truncated_blob_are_repaired_by_cache_verify() {
    let f = Fixture::new();
    install_ok(&f, &["install", "1.30"]);
    let tc = f.toolchain("1.30");
    // kubectl: removed and replaced by a script (the blob is untouched).
    let (kubectl_digest, _) = binary_blob(&f, "1.30", "bin/kubectl");
    std::fs::remove_file(tc.join("bin/kubectl")).unwrap();
    std::fs::write(
        tc.join("bin/kubectl"),
        "#!/bin/sh\necho 'kubectl Kubernetes v1.30.14'\n",
    )
    .unwrap();
    // containerd: its blob cut short (the toolchain's hardlink with it).
    let (containerd_digest, containerd_blob) = binary_blob(&f, "1.30", "bin/containerd");
    truncate_in_place(&containerd_blob, 7);

    let out = f.cmd().args(["cache", "verify"]).output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("corrupt: {}", containerd_blob.display())),
        "{said}"
    );
    assert!(
        said.contains("toolchain 1.30 is damaged")
            && said.contains(&format!("uses the corrupt blob {containerd_digest}"))
            && said.contains("bin/kubectl is 45 bytes, its receipt says"),
        "{said}"
    );

    f.server.reset_counters();
    let out = f
        .cmd()
        .args(["cache", "verify", "--repair"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains("repaired toolchain 1.30"), "{said}");
    assert_eq!(f.server.total_requests(), 0, "both archives are intact");
    assert_eq!(digest_of_file(&tc.join("bin/kubectl")), kubectl_digest);
    assert_eq!(
        digest_of_file(&tc.join("bin/containerd")),
        containerd_digest
    );
    let out = install_ok(&f, &["cache", "verify"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("every toolchain matches its receipt"));
    let out = install_ok(&f, &["install", "1.30"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
}

#[test]
fn a_removed_blob_is_fetched_again_by_install_not_called_up_to_date() {
    let f = Fixture::new();
    install_ok(&f, &["install", "1.30"]);
    // kubelet is a bare binary artifact: its blob is the download itself.
    let (digest, blob) = binary_blob(&f, "1.30", "bin/kubelet");
    std::fs::remove_file(&blob).unwrap();
    f.server.reset_counters();
    let out = install_ok(&f, &["install", "1.30"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("repaired toolchain 1.30")
            && text.contains(&format!(
                "the blob {digest} of bin/kubelet is gone from the store"
            )),
        "{text}"
    );
    assert_eq!(f.server.total_requests(), 1, "kubelet, downloaded again");
    assert_eq!(digest_of_file(&blob), digest);
}

// ---- Bad homes and mirrors: one error naming what is wrong (issue 22, part 3) ----

fn one_error(out: &std::process::Output) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    err
}

#[test]
fn a_kbin_home_that_is_a_file_is_one_error_naming_it_for_every_command() {
    let f = Fixture::new();
    std::fs::write(f.kbin_home(), "not a directory").unwrap();
    for args in [
        &["install", "1.30"][..],
        &["show-versions"],
        &["cache", "verify"],
        &["cache", "gc"],
    ] {
        let out = f.cmd().args(args).output().unwrap();
        let err = one_error(&out);
        assert!(
            err.contains(&format!(
                "KBIN_HOME {} is not a directory",
                f.kbin_home().display()
            )) && err.contains("point KBIN_HOME (or --home) at a directory"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(f.server.total_requests(), 0);
}

#[test]
fn a_kbin_home_on_a_read_only_filesystem_is_one_error_naming_it() {
    let f = Fixture::new();
    install_ok(&f, &["install", "1.30"]);
    // A read-only bind mount of KBIN_HOME over itself, in a mount namespace of the test's own.
    let home = f.kbin_home();
    let kbin = assert_cmd::cargo::cargo_bin!("kbin");
    let script = format!(
        "mount --bind {h} {h} && mount -o remount,ro,bind {h} && exec {kbin} \"$@\"",
        h = home.display(),
        kbin = kbin.display()
    );
    for args in [&["install", "1.30"][..], &["cache", "verify"]] {
        let out = Command::new(common::tool("unshare"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", f.home.path())
            .env("KBIN_HOME", &home)
            .env("KBIN_MANIFEST", &f.manifest)
            .env("KBIN_MIRROR", f.server.base())
            .args(["-m", "sh", "-c", &script, "sh"])
            .args(args)
            .output()
            .unwrap();
        let err = one_error(&out);
        assert!(
            err.contains(&format!(
                "KBIN_HOME {} is on a read-only filesystem",
                home.display()
            )),
            "{args:?}: {err}"
        );
    }
    // Reading still works there: show-versions needs no write.
    let out = Command::new(common::tool("unshare"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", f.home.path())
        .env("KBIN_HOME", &home)
        .env("KBIN_MANIFEST", &f.manifest)
        .args(["-m", "sh", "-c", &script, "sh", "show-versions"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unreadable_kbin_home_is_one_error_naming_it() {
    // Root reads any directory, so kbin runs as `nobody` (tests run as root: setpriv drops to
    // that user), against a KBIN_HOME with mode 000 under a directory everyone may enter.
    let f = Fixture::new();
    use std::os::unix::fs::PermissionsExt;
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = open.path().join("kbin");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o000)).unwrap();
    let manifest = open.path().join("manifest.toml");
    std::fs::copy(&f.manifest, &manifest).unwrap();
    std::fs::set_permissions(&manifest, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [&["show-versions"][..], &["install", "1.30"]] {
        let out = Command::new(common::tool("setpriv"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", open.path())
            .env("KBIN_HOME", &home)
            .env("KBIN_MANIFEST", &manifest)
            .env("KBIN_MIRROR", f.server.base())
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(assert_cmd::cargo::cargo_bin!("kbin"))
            .args(args)
            .output()
            .unwrap();
        let err = one_error(&out);
        assert!(
            err.contains(&format!(
                "KBIN_HOME {} cannot be read by this user",
                home.display()
            )) || err.contains(&format!(
                "KBIN_HOME {} is not writable by this user",
                home.display()
            )),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_bad_mirror_is_refused_even_when_everything_is_cached() {
    let f = Fixture::new();
    install_ok(&f, &["install", "1.30"]);
    f.server.reset_counters();
    for (mirror, says) in [
        ("ftp://mirror.example/k8s", "the scheme \"ftp\""),
        ("file:relative/path", "is a relative path"),
        ("file://relative/path", "names the host \"relative\""),
        ("file:///nonexistent/kbin-mirror", "is not a directory"),
    ] {
        let out = f
            .cmd()
            .args(["install", "1.30", "--mirror", mirror])
            .output()
            .unwrap();
        let err = one_error(&out);
        assert!(
            err.contains(&format!(
                "the mirror {mirror:?} from --mirror or KBIN_MIRROR is not usable"
            )) && err.contains(says)
                && err.contains("hint: a mirror is"),
            "{mirror}: {err}"
        );
    }
    // A settings.toml mirror is named with its entry.
    std::fs::write(
        f.kbin_home().join("settings.toml"),
        "[mirrors]\n\"dl.k8s.io\" = \"file:mirror\"\n",
    )
    .unwrap();
    let out = f.cmd().args(["install", "1.30"]).output().unwrap();
    let err = one_error(&out);
    assert!(
        err.contains("from settings.toml [mirrors] \"dl.k8s.io\" is not usable"),
        "{err}"
    );
    assert_eq!(f.server.total_requests(), 0);
}

#[test]
fn a_truncated_image_archive_is_pulled_again_for_a_new_toolchain_and_repaired_in_the_old() {
    let f = Fixture::new();
    install_ok(&f, &["install", "1.30"]);
    let r = f.receipt("1.30");
    let archive = r["image"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str() == Some("registry.k8s.io/pause:3.9"))
        .unwrap()["archive"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = archive.strip_prefix("sha256:").unwrap();
    let blob = f
        .kbin_home()
        .join("cache/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    truncate_in_place(&blob, 512);

    f.server.reset_counters();
    install_ok(&f, &["install", "1.30", "--name", "fresh"]);
    assert_eq!(
        f.server.requests("/v2/pause/manifests/3.9"),
        1,
        "pulled again"
    );
    assert_eq!(
        digest_of_file(&f.toolchain("fresh").join("images/pause-3.9.tar")),
        archive
    );
    let out = install_ok(&f, &["install", "1.30"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("repaired toolchain 1.30")
            && text.contains("images/pause-3.9.tar is 512 bytes"),
        "{text}"
    );
    assert_eq!(
        digest_of_file(&f.toolchain("1.30").join("images/pause-3.9.tar")),
        archive
    );
}

/// Signatures: the Kubernetes binaries' template gets a Sigstore bundle beside each binary and
/// the component its signer; bundles are made by a test Sigstore (a test Fulcio CA and Rekor
/// key) that the kbin under test trusts through `KBIN_TEST_TRUST_ROOT` (debug builds only).
struct Signed {
    f: Fixture,
    ts: common::sigstore::TestSigstore,
    root: PathBuf,
}

impl Signed {
    fn new() -> Signed {
        let f = Fixture::new();
        let text = std::fs::read_to_string(&f.manifest).unwrap();
        let text = common::sigstore::sign_kubernetes_in(&text);
        std::fs::write(&f.manifest, text).unwrap();
        let ts = common::sigstore::TestSigstore::new();
        let root = f.home.path().join("trusted_root.json");
        std::fs::write(&root, ts.trusted_root()).unwrap();
        let s = Signed { f, ts, root };
        s.publish(|_| common::sigstore::Sign::default());
        s
    }

    /// Serve a bundle for every amd64 Kubernetes binary, signed as `how` says for each.
    fn publish(&self, how: impl Fn(&str) -> common::sigstore::Sign) {
        for b in KUBE_BINS {
            let path = format!("/release/v{KUBE}/bin/linux/amd64/{b}");
            let body = &self
                .f
                .artifacts
                .iter()
                .find(|a| a.path == path)
                .unwrap()
                .body;
            let signed = self.ts.sign(body, &how(b));
            self.f
                .server
                .put(&format!("{path}.sigstore.json"), signed.bundle);
        }
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = self.f.cmd();
        c.env("KBIN_TEST_TRUST_ROOT", &self.root);
        c
    }
}

#[test]
fn signed_artifacts_are_verified_recorded_and_shown() {
    let s = Signed::new();
    let out = s
        .cmd()
        .args(["install", "1.30", "--no-images", "--require-verified"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = s.f.receipt("1.30");
    let comp = r["component"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("kubernetes"))
        .unwrap();
    let arts = comp["artifact"].as_array().unwrap();
    let api = arts
        .iter()
        .find(|a| a["url"].as_str().unwrap().ends_with("/kube-apiserver"))
        .unwrap();
    assert_eq!(api["pinned"].as_bool(), Some(false));
    assert_eq!(
        api["signed"]["identity"].as_str(),
        Some(common::sigstore::K8S_IDENTITY)
    );
    assert_eq!(
        api["signed"]["issuer"].as_str(),
        Some(common::sigstore::K8S_ISSUER)
    );
    // show-versions says what vouched for each artifact, as text and JSON.
    let out = s.cmd().args(["show-versions"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("signed by {}", common::sigstore::K8S_IDENTITY))
            && text.contains("pinned"),
        "{text}"
    );
    let out = s.cmd().args(["show-versions", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vouched = v[0]["vouched"].as_array().unwrap();
    assert!(
        vouched
            .iter()
            .any(|x| x["url"].as_str().unwrap().ends_with("/kube-apiserver")
                && x["vouch"] == format!("signed by {}", common::sigstore::K8S_IDENTITY))
    );
    assert!(vouched.iter().any(|x| x["vouch"] == "pinned"));

    // Another toolchain from the same blobs: the kept signature records vouch, no request.
    s.f.server.reset_counters();
    let out = s
        .cmd()
        .args(["install", "1.30", "--no-images", "--name", "again"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.f.server.total_requests(), 0);
    assert!(s.f.receipt("again").to_string().contains("signed"));

    // `mirror export` carries the bundles; a fresh home installing from the mirror alone
    // verifies them (the upstream server is not asked), and refuses a damaged one.
    let bundle = format!("release/v{KUBE}/bin/linux/amd64/kube-apiserver.sigstore.json");
    let lock = air_gapped(&s.f, &|| s.cmd(), &bundle, &["--require-verified"]);
    assert!(lock.contains(common::sigstore::K8S_IDENTITY), "{lock}");
}

/// `mirror export` of toolchain 1.30 (no images); an install into a fresh home from the export
/// alone (with `args`) that asks the upstream server nothing: its receipt. Then `signature`
/// (a path in the export) damaged there: the next fresh install refuses it, naming it, and
/// keeps no toolchain.
fn air_gapped(
    f: &Fixture,
    cmd: &dyn Fn() -> assert_cmd::Command,
    signature: &str,
    args: &[&str],
) -> String {
    let dir = f.home.path().join("export");
    let out = cmd()
        .args([
            "mirror",
            "export",
            "--toolchain",
            "1.30",
            "--no-images",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = dir.join(signature);
    assert!(exported.is_file(), "{}", exported.display());
    let install = |home: &str| {
        cmd()
            .env("KBIN_HOME", f.home.path().join(home))
            .env("KBIN_MIRROR", format!("file://{}", dir.display()))
            .args(["install", "1.30", "--no-images"])
            .args(args)
            .output()
            .unwrap()
    };
    f.server.reset_counters();
    let out = install("fresh");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.server.total_requests(), 0);
    let lock = std::fs::read_to_string(f.home.path().join("fresh/toolchains/1.30/toolchain.lock"))
        .unwrap();
    let text = std::fs::read_to_string(&exported).unwrap();
    std::fs::write(&exported, text.replace("MII", "MIJ")).unwrap();
    let out = install("fresh2");
    assert!(!out.status.success());
    let name = signature.rsplit('/').next().unwrap();
    assert!(
        stderr(&out).contains(&format!("{name}) was refused (nothing kept)")),
        "{}",
        stderr(&out)
    );
    assert!(!f.home.path().join("fresh2/toolchains/1.30").exists());
    lock
}

#[test]
fn require_verified_refuses_what_is_neither_pinned_nor_signed() {
    let f = Fixture::new();
    let out = f
        .cmd()
        .args(["install", "1.30", "--no-images", "--require-signed"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--require-verified: neither pinned nor signed:")
            && err.contains("kube-apiserver (checksum file only)")
            && !err.contains("kubelet (checksum"),
        "{err}"
    );
    assert!(!f.toolchain("1.30").exists());
}

#[test]
fn a_refused_signature_fails_the_install_with_one_error_and_keeps_nothing() {
    use common::sigstore::Sign;
    let s = Signed::new();
    let cases: Vec<(&str, Sign)> = vec![
        (
            "signed by mallory@example.com, not by krel-staging@",
            Sign {
                identity: "mallory@example.com".into(),
                ..Sign::default()
            },
        ),
        (
            "issued by https://github.com/login/oauth, not by https://accounts.google.com",
            Sign {
                issuer: "https://github.com/login/oauth".into(),
                ..Sign::default()
            },
        ),
        (
            "expired at",
            Sign {
                log_entry: false,
                ..Sign::default()
            },
        ),
        (
            "the signature does not match the artifact's bytes",
            Sign {
                other_bytes: Some(b"other bytes".to_vec()),
                ..Sign::default()
            },
        ),
    ];
    for (want, how) in cases {
        s.publish(|_| how.clone());
        let _ = std::fs::remove_dir_all(s.f.kbin_home());
        let out = s
            .cmd()
            .args(["install", "1.30", "--no-images", "-j", "1"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{want}");
        let err = stderr(&out);
        assert!(
            err.contains("the signature of https://dl.k8s.io/release/v1.30.14/bin/linux/amd64/")
                && err.contains("was refused (nothing kept)")
                && err.contains(want),
            "{want}: {err}"
        );
        assert!(!s.f.toolchain("1.30").exists(), "{want}");
        // A signature this kbin cannot evaluate (here: no log entry) does not block a pinned
        // binary, said as such; it does refuse an unpinned one. A contradicting signature
        // refuses both.
        let unevaluable = want == "expired at";
        assert_eq!(
            err.contains("kubelet: its signature https://dl.k8s.io/")
                && err.contains("cannot be checked by this kbin")
                && err.contains("installed on its pin"),
            unevaluable,
            "{want}: {err}"
        );
        // Not one refused Kubernetes binary is in the store, nor a partial download.
        let kube: Vec<Vec<u8>> = KUBE_BINS
            .iter()
            .filter(|b| !unevaluable || UNPINNED.contains(b))
            .map(|b| {
                let p = format!("/release/v{KUBE}/bin/linux/amd64/{b}");
                s.f.artifacts
                    .iter()
                    .find(|a| a.path == p)
                    .unwrap()
                    .body
                    .clone()
            })
            .collect();
        for blob in s.f.blobs() {
            let bytes = std::fs::read(&blob).unwrap();
            assert!(!kube.contains(&bytes), "{want}: {} kept", blob.display());
        }
        let tmp = walk(&s.f.kbin_home().join("cache/tmp"));
        assert!(
            tmp.iter()
                .all(|p| !p.to_string_lossy().contains(".partial")),
            "{want}: {tmp:?}"
        );
    }
    // A certificate from another CA.
    for b in KUBE_BINS {
        let path = format!("/release/v{KUBE}/bin/linux/amd64/{b}");
        let body = &s.f.artifacts.iter().find(|a| a.path == path).unwrap().body;
        let signed = s.ts.sign_with(&s.ts.stranger, body, &Sign::default());
        s.f.server
            .put(&format!("{path}.sigstore.json"), signed.bundle);
    }
    let _ = std::fs::remove_dir_all(s.f.kbin_home());
    let out = s
        .cmd()
        .args(["install", "1.30", "--no-images"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not chain to a Fulcio CA of the trust root"),
        "{}",
        stderr(&out)
    );
    assert!(!s.f.toolchain("1.30").exists());
}

/// containerd 2.x, unpinned, with its release's attestation (`.intoto.jsonl`, as
/// actions/attest-build-provenance makes it) signed by a test Sigstore that the kbin under test
/// trusts through `KBIN_TEST_TRUST_ROOT`.
struct Attested {
    f: Fixture,
    ts: common::sigstore::TestSigstore,
    root: PathBuf,
    /// The amd64 and arm64 tarballs.
    tarballs: Vec<(String, Vec<u8>)>,
}

const CONTAINERD2: &str = "2.1.0";
const ATTESTATION: &str =
    "/containerd/containerd/releases/download/v2.1.0/containerd-2.1.0-attestation.intoto.jsonl";

impl Attested {
    fn new() -> Attested {
        let f = Fixture::new();
        let mut tarballs = Vec::new();
        for arch in ["amd64", "arm64"] {
            let body = tgz(&[
                (
                    "bin/containerd",
                    script("containerd github.com/containerd/containerd/v2 v2.1.0", 0),
                    0o755,
                ),
                (
                    "bin/containerd-shim-runc-v2",
                    script("containerd-shim-runc-v2 v2.1.0", 0),
                    0o755,
                ),
                (
                    "bin/ctr",
                    script("ctr github.com/containerd/containerd/v2 v2.1.0", 0),
                    0o755,
                ),
                // Each arch's tarball is its own blob.
                ("README.md", arch.as_bytes().to_vec(), 0o644),
            ]);
            let name = format!("containerd-{CONTAINERD2}-linux-{arch}.tar.gz");
            let path = format!("/containerd/containerd/releases/download/v{CONTAINERD2}/{name}");
            f.server.put(
                &format!("{path}.sha256sum"),
                format!("{}  {name}\n", sha256(&body)),
            );
            f.server.put(&path, body.clone());
            tarballs.push((name, body));
        }
        let text = std::fs::read_to_string(&f.manifest).unwrap();
        std::fs::write(
            &f.manifest,
            text.replacen("containerd = \"1.7.23\"", "containerd = \"2.1.0\"", 1),
        )
        .unwrap();
        let ts = common::sigstore::TestSigstore::new();
        let root = f.home.path().join("trusted_root.json");
        std::fs::write(&root, ts.trusted_root()).unwrap();
        let a = Attested {
            f,
            ts,
            root,
            tarballs,
        };
        a.publish(&a.signer(), &[0, 1]);
        a
    }

    /// containerd's release workflow at `tag`.
    fn signer(&self) -> common::sigstore::Sign {
        common::sigstore::Sign {
            identity: format!(
                "https://github.com/containerd/containerd/.github/workflows/release.yml@refs/tags/v{CONTAINERD2}"
            ),
            issuer: "https://token.actions.githubusercontent.com".into(),
            ..common::sigstore::Sign::default()
        }
    }

    /// Serve an attestation signed as `how` says, naming the tarballs at `subjects`.
    fn publish(&self, how: &common::sigstore::Sign, subjects: &[usize]) {
        self.publish_lines(&[(how.clone(), subjects.to_vec())]);
    }

    /// Serve an attestation file of one bundle a line, each signed and naming as its pair says.
    fn publish_lines(&self, lines: &[(common::sigstore::Sign, Vec<usize>)]) {
        let mut file = String::new();
        for (how, subjects) in lines {
            let named: Vec<(&str, &[u8])> = subjects
                .iter()
                .map(|i| (self.tarballs[*i].0.as_str(), self.tarballs[*i].1.as_slice()))
                .collect();
            let a = self.ts.attest(&named, how, common::sigstore::Logged::Dsse);
            file.push_str(&format!("{a}\n"));
        }
        self.f.server.put(ATTESTATION, file);
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = self.f.cmd();
        c.env("KBIN_TEST_TRUST_ROOT", &self.root);
        c
    }

    /// The receipt's containerd artifact.
    fn containerd(&self, toolchain: &str) -> toml::Value {
        let r = self.f.receipt(toolchain);
        r["component"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str() == Some("containerd"))
            .unwrap()["artifact"][0]
            .clone()
    }

    /// Whether the store holds the amd64 tarball.
    fn kept(&self) -> bool {
        self.f
            .blobs()
            .iter()
            .any(|b| std::fs::read(b).unwrap() == self.tarballs[0].1)
    }
}

#[test]
fn a_release_attestation_vouches_for_containerd_online_and_through_a_mirror() {
    let a = Attested::new();
    // The fixture's unpinned Kubernetes binaries are all --require-verified refuses.
    let out = a
        .cmd()
        .args(["install", "1.30", "--no-images", "--require-verified"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("kube-apiserver (checksum file only)"), "{err}");
    assert!(!err.contains("containerd"), "{err}");
    let out = a
        .cmd()
        .args(["install", "1.30", "--no-images"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let art = a.containerd("1.30");
    assert_eq!(art["pinned"].as_bool(), Some(false));
    let workflow = a.signer().identity;
    assert_eq!(art["signed"]["identity"].as_str(), Some(workflow.as_str()));
    let out = a.cmd().args(["show-versions"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("signed by {workflow}")), "{text}");

    // The export carries the attestation; a fresh home installs from the export alone and
    // verifies it there (the upstream server is not asked), and refuses it damaged.
    let lock = air_gapped(&a.f, &|| a.cmd(), ATTESTATION.trim_start_matches('/'), &[]);
    assert!(lock.contains(&workflow), "{lock}");
}

#[test]
fn a_refused_or_missing_attestation_fails_the_install_and_keeps_nothing() {
    use common::sigstore::Sign;
    let a = Attested::new();
    let other_tag = Sign {
        identity: "https://github.com/containerd/containerd/.github/workflows/release.yml@refs/tags/v2.0.9".into(),
        ..a.signer()
    };
    let other_bytes = Sign {
        other_bytes: Some(b"another envelope".to_vec()),
        ..a.signer()
    };
    // What the error must say, and the attestation served (how it is signed, which tarballs
    // it names), or none.
    type Served = Option<(Sign, Vec<usize>)>;
    let cases: Vec<(&str, Served)> = vec![
        // The attestation names only the arm64 tarball.
        (
            "does not vouch for this artifact",
            Some((a.signer(), vec![1])),
        ),
        // Another release's attestation, served for this one.
        (
            "not by https://github.com/containerd/containerd/.github/workflows/release.yml@refs/tags/v2.1.0",
            Some((other_tag.clone(), vec![0, 1])),
        ),
        (
            "the signature does not match the artifact's bytes",
            Some((other_bytes, vec![0, 1])),
        ),
        // containerd signs every release since 2.0.1: no attestation is not "unsigned".
        ("answered 404", None),
    ];
    for (want, how) in cases {
        match &how {
            Some((sign, subjects)) => a.publish(sign, subjects),
            None => a.f.server.remove(ATTESTATION),
        }
        let _ = std::fs::remove_dir_all(a.f.kbin_home());
        let out = a
            .cmd()
            .args(["install", "1.30", "--no-images"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{want}: {:?}",
            a.f.toolchain("1.30").exists().then(|| a.containerd("1.30"))
        );
        let err = stderr(&out);
        assert!(
            err.contains("containerd-2.1.0-attestation.intoto.jsonl") && err.contains(want),
            "{want}: {err}"
        );
        assert!(!a.f.toolchain("1.30").exists(), "{want}");
        assert!(!a.kept(), "{want}: the tarball was kept");
    }
    // A file of several bundles: the line about this tarball says why, not the line about
    // another; and a good line anywhere is accepted.
    let arm64_only = (a.signer(), vec![1]);
    a.publish_lines(&[arm64_only.clone(), (other_tag, vec![0, 1])]);
    let _ = std::fs::remove_dir_all(a.f.kbin_home());
    let out = a
        .cmd()
        .args(["install", "1.30", "--no-images"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("not by https://"),
        "{err}"
    );
    a.publish_lines(&[arm64_only, (a.signer(), vec![0])]);
    let out = a
        .cmd()
        .args(["install", "1.30", "--no-images"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(a.containerd("1.30").get("signed").is_some());

    // Pinned, the same release needs no attestation: its pin vouches for it.
    a.f.server.remove(ATTESTATION);
    let mut text = std::fs::read_to_string(&a.f.manifest).unwrap();
    text.push_str(&format!(
        "\"containerd/amd64/{CONTAINERD2}\" = \"sha256:{}\"\n",
        sha256(&a.tarballs[0].1)
    ));
    std::fs::write(&a.f.manifest, text).unwrap();
    let _ = std::fs::remove_dir_all(a.f.kbin_home());
    let out = a
        .cmd()
        .args(["install", "1.30", "--no-images"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let art = a.containerd("1.30");
    assert_eq!(art["pinned"].as_bool(), Some(true), "{art}");
    assert!(art.get("signed").is_none(), "{art}");
    // Pinned, an attestation this kbin cannot evaluate (no log entry: as a log its trust root
    // lacks would be) is said and left to the pin; one that contradicts is still refused.
    let unlogged = Sign {
        log_entry: false,
        ..a.signer()
    };
    a.publish(&unlogged, &[0, 1]);
    let _ = std::fs::remove_dir_all(a.f.kbin_home());
    let out = a
        .cmd()
        .args(["install", "1.30", "--no-images"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be checked by this kbin"),
        "{}",
        stderr(&out)
    );
    assert!(a.containerd("1.30").get("signed").is_none());
    a.publish(&a.signer(), &[1]);
    let _ = std::fs::remove_dir_all(a.f.kbin_home());
    let out = a
        .cmd()
        .args(["install", "1.30", "--no-images"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not vouch for this artifact"),
        "{}",
        stderr(&out)
    );
    assert!(!a.kept());
}

#[test]
fn signed_images_are_verified_recorded_and_a_refused_one_keeps_nothing() {
    use common::sigstore::Sign;
    let s = Signed::new();
    let trust = Sign {
        identity: "krel-trust@k8s-releng-prod.iam.gserviceaccount.com".into(),
        ..Sign::default()
    };
    let pause = common::registry::publish(&s.f.server, "pause", "3.9");
    let coredns = common::registry::publish(&s.f.server, "coredns/coredns", "v1.11.1");
    // Unsigned images: --require-verified refuses them before a layer is fetched.
    let out = s
        .cmd()
        .args(["install", "1.30", "--require-verified"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "registry.k8s.io/pause:3.9: the registry serves no cosign signature for it (--require-verified)"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!s.f.toolchain("1.30").exists());

    // Signed by someone else: refused, nothing of the image kept.
    common::registry::publish_signature(
        &s.f.server,
        &pause,
        &s.ts,
        &Sign {
            identity: "mallory@example.com".into(),
            ..trust.clone()
        },
        None,
    );
    let _ = std::fs::remove_dir_all(s.f.kbin_home());
    let out = s.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("registry.k8s.io/pause:3.9: its cosign signature was refused (nothing kept)")
            && err.contains("signed by mallory@example.com, not by krel-trust@"),
        "{err}"
    );
    assert!(
        !s.f.kbin_home().join("cache/images").exists()
            || walk(&s.f.kbin_home().join("cache/images")).is_empty()
    );
    // A signature of another image does not vouch for this one.
    common::registry::publish_signature(
        &s.f.server,
        &pause,
        &s.ts,
        &trust,
        Some(&coredns.index_digest),
    );
    let out = s.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "the signed payload names {}, not {}",
            coredns.index_digest, pause.index_digest
        )),
        "{}",
        stderr(&out)
    );

    // Both signed by the image promoter: installed with --require-verified, recorded, shown.
    common::registry::publish_signature(&s.f.server, &pause, &s.ts, &trust, None);
    common::registry::publish_signature(&s.f.server, &coredns, &s.ts, &trust, None);
    let out = s
        .cmd()
        .args(["install", "1.30", "--require-verified"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = s.f.receipt("1.30");
    for i in r["image"].as_array().unwrap() {
        assert_eq!(
            i["signed"]["identity"].as_str(),
            Some("krel-trust@k8s-releng-prod.iam.gserviceaccount.com"),
            "{i}"
        );
    }
    let out = s.cmd().args(["show-versions", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = image_vouches(&v);
    assert_eq!(images.len(), 2, "{v}");
    assert!(
        images
            .iter()
            .all(|x| x["vouch"] == "signed by krel-trust@k8s-releng-prod.iam.gserviceaccount.com")
    );
}

#[test]
fn a_missing_bundle_is_an_error_for_an_unpinned_artifact_but_not_for_a_pinned_one() {
    let s = Signed::new();
    // kubelet is pinned: its pin vouches for it without the bundle.
    s.f.server.remove(&format!(
        "/release/v{KUBE}/bin/linux/amd64/kubelet.sigstore.json"
    ));
    let out = s
        .cmd()
        .args(["install", "1.30", "--no-images", "--only", "kubelet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.f.receipt("1.30").to_string().contains("pinned = true"));
    // kube-apiserver is not: without its bundle it is not installed.
    s.f.server.remove(&format!(
        "/release/v{KUBE}/bin/linux/amd64/kube-apiserver.sigstore.json"
    ));
    let out = s
        .cmd()
        .args([
            "install",
            "1.30",
            "--no-images",
            "--only",
            "kube-apiserver",
            "--name",
            "api",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("kube-apiserver.sigstore.json"),
        "{}",
        stderr(&out)
    );
    assert!(!s.f.toolchain("api").exists());
}

/// Who the manifest says signs registry.k8s.io's images.
const IMAGE_SIGNER: &str = "krel-trust@k8s-releng-prod.iam.gserviceaccount.com";

/// The fixture's images, both signed by the image promoter.
fn signed_images(s: &Signed) -> (common::registry::FakeImage, common::registry::FakeImage) {
    let trust = common::sigstore::Sign {
        identity: IMAGE_SIGNER.into(),
        ..common::sigstore::Sign::default()
    };
    let pause = common::registry::publish(&s.f.server, "pause", "3.9");
    let coredns = common::registry::publish(&s.f.server, "coredns/coredns", "v1.11.1");
    common::registry::publish_signature(&s.f.server, &pause, &s.ts, &trust, None);
    common::registry::publish_signature(&s.f.server, &coredns, &s.ts, &trust, None);
    (pause, coredns)
}

/// The image rows of `show-versions --json`'s first toolchain's `vouched`.
fn image_vouches(v: &serde_json::Value) -> Vec<&serde_json::Value> {
    v[0]["vouched"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["component"] == "image")
        .collect()
}

/// `kbin mirror export ARGS --json --out dir`: its report.
fn export(s: &Signed, args: &[&str], dir: &Path) -> serde_json::Value {
    let out = s
        .cmd()
        .args(["mirror", "export"])
        .args(args)
        .args(["--json", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `kbin ARGS` in a fresh KBIN_HOME `home` whose only source is the export `dir`.
fn from_export(s: &Signed, home: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    s.cmd()
        .env("KBIN_HOME", home)
        .env("KBIN_MIRROR", format!("file://{}", dir.display()))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_export_carries_image_signatures_that_an_air_gapped_install_verifies() {
    let s = Signed::new();
    let (pause, _) = signed_images(&s);
    let out = s
        .cmd()
        .args(["install", "1.30", "--require-verified"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The receipt names the kept signature: its manifest and payload, blobs in the store.
    let home = s.f.kbin_home();
    for i in s.f.receipt("1.30")["image"].as_array().unwrap() {
        let k = &i["signature"];
        let blobs = std::iter::once(&k["manifest"])
            .chain(k["payloads"].as_array().unwrap())
            .chain(std::iter::once(&i["digest"]));
        for d in blobs {
            let hex = d.as_str().unwrap().strip_prefix("sha256:").unwrap();
            let blob = home.join(format!("cache/blobs/sha256/{}/{hex}", &hex[..2]));
            assert_eq!(sha256(&std::fs::read(&blob).unwrap()), hex, "{i}");
        }
    }

    // `cache gc` keeps them: the receipt names them.
    let out = s.cmd().args(["cache", "gc"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Exported from the installed toolchain: the signature where cosign puts it, the tag the
    // very index it signs.
    let dir = s.f.home.path().join("export");
    let report = export(&s, &["--toolchain", "1.30"], &dir);
    assert_eq!(
        report["images"]["signed"],
        serde_json::json!([
            "registry.k8s.io/coredns/coredns:v1.11.1 (amd64)",
            "registry.k8s.io/pause:3.9 (amd64)"
        ]),
        "{report}"
    );
    let hex = pause.index_digest.strip_prefix("sha256:").unwrap();
    let sig = dir.join(format!("v2/pause/manifests/sha256-{hex}.sig"));
    assert!(sig.is_file(), "{}", sig.display());
    let tag = std::fs::read(dir.join("v2/pause/manifests/3.9")).unwrap();
    assert_eq!(sha256(&tag), hex);

    // Air-gapped, from the export alone: verified, recorded and shown as from the registry.
    s.f.server.reset_counters();
    let fresh = s.f.home.path().join("fresh");
    let out = from_export(&s, &fresh, &dir, &["install", "1.30", "--require-verified"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.f.server.total_requests(), 0);
    let out = from_export(&s, &fresh, &dir, &["show-versions"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("image") && l.contains("pause:3.9"))
        .unwrap_or_else(|| panic!("no image row: {text}"));
    assert!(row.contains(&format!("signed by {IMAGE_SIGNER}")), "{row}");
    let out = from_export(&s, &fresh, &dir, &["show-versions", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = image_vouches(&v);
    assert_eq!(images.len(), 2, "{v}");
    assert!(
        images
            .iter()
            .all(|x| x["vouch"] == format!("signed by {IMAGE_SIGNER}")),
        "{v}"
    );
    // An export of that air-gapped toolchain carries the signatures on.
    let again = s.f.home.path().join("export-again");
    let out = s
        .cmd()
        .env("KBIN_HOME", &fresh)
        .args(["mirror", "export", "--toolchain", "1.30", "--json", "--out"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(again.join(format!("v2/pause/manifests/sha256-{hex}.sig"))).unwrap(),
        std::fs::read(&sig).unwrap()
    );

    // A fresh pull (`mirror export VERSION`, nothing installed) carries them too.
    let pulled = s.f.home.path().join("export-pulled");
    let out = s
        .cmd()
        .env("KBIN_HOME", s.f.home.path().join("puller"))
        .args([
            "mirror", "export", "1.30", "--arch", "amd64", "--json", "--out",
        ])
        .arg(&pulled)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(pulled.join(format!("v2/pause/manifests/sha256-{hex}.sig"))).unwrap(),
        std::fs::read(&sig).unwrap()
    );
}

#[test]
fn a_signature_tampered_in_an_export_is_refused_and_nothing_of_the_image_is_kept() {
    let s = Signed::new();
    let (pause, coredns) = signed_images(&s);
    let out = s.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = s.f.home.path().join("export");
    export(&s, &["--toolchain", "1.30"], &dir);
    let hex = pause.index_digest.strip_prefix("sha256:").unwrap();
    let sig = dir.join(format!("v2/pause/manifests/sha256-{hex}.sig"));
    let original = std::fs::read(&sig).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let layer = &manifest["layers"][0];
    let payload_path = dir.join(format!(
        "v2/pause/blobs/{}",
        layer["digest"].as_str().unwrap()
    ));
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(payload_path).unwrap()).unwrap();

    // (a) A payload naming another image's digest (a blob of its own, the manifest pointing
    // at it): the signature vouches for that image, not this one.
    let mut other = payload.clone();
    other["critical"]["image"]["docker-manifest-digest"] = coredns.index_digest.clone().into();
    let other = serde_json::to_vec(&other).unwrap();
    let od = format!("sha256:{}", sha256(&other));
    std::fs::write(dir.join(format!("v2/pause/blobs/{od}")), &other).unwrap();
    let mut m = manifest.clone();
    m["layers"][0]["digest"] = od.into();
    m["layers"][0]["size"] = other.len().into();
    std::fs::write(&sig, serde_json::to_vec(&m).unwrap()).unwrap();
    let refused = |fresh: &str, phrase: &str| {
        let fresh = s.f.home.path().join(fresh);
        let out = from_export(&s, &fresh, &dir, &["install", "1.30"]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(
                "registry.k8s.io/pause:3.9: its cosign signature was refused (nothing kept)"
            ) && err.contains(phrase),
            "{err}"
        );
        assert_eq!(err.matches("error:").count(), 1, "{err}");
        assert!(!fresh.join("toolchains/1.30").exists());
        assert_eq!(walk(&fresh.join("cache/images")), Vec::<PathBuf>::new());
    };
    refused(
        "fresh-payload",
        &format!(
            "the signed payload names {}, not {}",
            coredns.index_digest, pause.index_digest
        ),
    );

    // (b) The certificate replaced by one for the same identity from a CA the trust root does
    // not have.
    let stranger = s.ts.sign_with(
        &s.ts.stranger,
        &serde_json::to_vec(&payload).unwrap(),
        &common::sigstore::Sign {
            identity: IMAGE_SIGNER.into(),
            ..common::sigstore::Sign::default()
        },
    );
    let mut m = manifest.clone();
    m["layers"][0]["annotations"]["dev.sigstore.cosign/certificate"] = stranger.cert_pem.into();
    std::fs::write(&sig, serde_json::to_vec(&m).unwrap()).unwrap();
    refused(
        "fresh-cert",
        "does not chain to a Fulcio CA of the trust root",
    );

    // Restored, it verifies again.
    std::fs::write(&sig, &original).unwrap();
    let fresh = s.f.home.path().join("fresh-ok");
    let out = from_export(&s, &fresh, &dir, &["install", "1.30", "--require-verified"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_export_of_unsigned_images_is_refused_by_an_air_gapped_require_verified_install() {
    let s = Signed::new();
    let out = s.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = s.cmd().args(["show-versions"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("image")
            && l.contains("pause:3.9")
            && l.contains("trusted on first use")),
        "{text}"
    );
    let dir = s.f.home.path().join("export");
    let report = export(&s, &["--toolchain", "1.30"], &dir);
    assert_eq!(
        report["images"]["signed"],
        serde_json::json!([]),
        "{report}"
    );
    let fresh = s.f.home.path().join("fresh");
    let out = from_export(&s, &fresh, &dir, &["install", "1.30", "--require-verified"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "registry.k8s.io/pause:3.9: the registry serves no cosign signature for it (--require-verified)"
        ),
        "{err}"
    );
    assert!(!fresh.join("toolchains/1.30").exists());
}

#[test]
fn the_image_signer_comes_from_the_manifest_and_another_one_refuses_the_same_image() {
    let s = Signed::new();
    signed_images(&s);
    let out = s.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A user manifest naming another signer: the same image, pulled before and signed by the
    // image promoter, is refused (the store's record is no vouch for another signer).
    let text = std::fs::read_to_string(&s.f.manifest).unwrap();
    let other = "promoter@example.com";
    assert!(text.contains(&format!("identity = \"{IMAGE_SIGNER}\"")));
    std::fs::write(
        &s.f.manifest,
        text.replacen(
            &format!("identity = \"{IMAGE_SIGNER}\""),
            &format!("identity = \"{other}\""),
            1,
        ),
    )
    .unwrap();
    let out = s
        .cmd()
        .args(["install", "1.30", "--name", "other"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("its cosign signature was refused (nothing kept)")
            && err.contains(&format!("signed by {IMAGE_SIGNER}, not by {other}")),
        "{err}"
    );
    assert!(!s.f.toolchain("other").exists());
    // A malformed signer is one manifest error, before anything is fetched.
    std::fs::write(
        &s.f.manifest,
        text.replacen(
            "issuer = \"https://accounts.google.com\"\n",
            "issuer = \"accounts.google.com\"\n",
            1,
        ),
    )
    .unwrap();
    s.f.server.reset_counters();
    let out = s
        .cmd()
        .args(["install", "1.30", "--name", "bad"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("[images.signer]: issuer \"accounts.google.com\" is not an https URL"),
        "{err}"
    );
    assert_eq!(s.f.server.total_requests(), 0);
}

#[test]
fn a_kept_signature_gone_from_the_store_stops_the_export_until_an_install_repairs_it() {
    let s = Signed::new();
    let (pause, _) = signed_images(&s);
    let out = s.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lock = s.f.receipt("1.30");
    let image = lock["image"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str() == Some("registry.k8s.io/pause:3.9"))
        .unwrap();
    let payload = image["signature"]["payloads"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = payload.strip_prefix("sha256:").unwrap();
    let blob =
        s.f.kbin_home()
            .join(format!("cache/blobs/sha256/{}/{hex}", &hex[..2]));

    // Damaged in the store: the export refuses to copy it, naming the blob.
    let good = std::fs::read(&blob).unwrap();
    std::fs::set_permissions(&blob, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&blob, b"{\"not\": \"the payload\"}").unwrap();
    let dir = s.f.home.path().join("export");
    let out = s
        .cmd()
        .args(["mirror", "export", "--toolchain", "1.30", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the store's blob {payload}")) && err.contains("is damaged"),
        "{err}"
    );
    std::fs::write(&blob, &good).unwrap();

    // Gone from the store: the export names it, and `kbin install` repairs the toolchain by
    // pulling the signature again; then the export carries it.
    std::fs::remove_file(&blob).unwrap();
    let out = s
        .cmd()
        .args(["mirror", "export", "--toolchain", "1.30", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "registry.k8s.io/pause:3.9 ({payload}) of toolchain 1.30 is not in the store"
        )) && err.contains("kbin install"),
        "{err}"
    );
    s.f.server.reset_counters();
    let out = s.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pause-3.9.tar (its signature)"),
        "{}",
        stderr(&out)
    );
    let sig_tag = format!(
        "/v2/pause/manifests/sha256-{}.sig",
        pause.index_digest.strip_prefix("sha256:").unwrap()
    );
    assert_eq!(s.f.server.requests(&sig_tag), 1);
    assert_eq!(std::fs::read(&blob).unwrap(), good);
    let report = export(&s, &["--toolchain", "1.30"], &dir);
    assert_eq!(report["images"]["signed"].as_array().unwrap().len(), 2);
}

#[test]
fn signed_architectures_pulled_from_different_tag_digests_are_not_exported_together() {
    let s = Signed::new();
    let (pause, _) = signed_images(&s);
    let out = s.cmd().args(["install", "1.30"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The tag moves (the promoter re-signs a new index) before arm64 is pulled.
    // (The store keeps the index the signature names.)
    let hex = pause.index_digest.strip_prefix("sha256:").unwrap();
    let index = std::fs::read(
        s.f.kbin_home()
            .join(format!("cache/blobs/sha256/{}/{hex}", &hex[..2])),
    )
    .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&index).unwrap();
    v["annotations"] = serde_json::json!({ "moved": "yes" });
    let moved = serde_json::to_vec(&v).unwrap();
    let moved_digest = format!("sha256:{}", sha256(&moved));
    s.f.server.put("/v2/pause/manifests/3.9", moved.clone());
    s.f.server
        .put(&format!("/v2/pause/manifests/{moved_digest}"), moved);
    let moved_image = common::registry::FakeImage {
        index_digest: moved_digest.clone(),
        ..pause.clone()
    };
    common::registry::publish_signature(
        &s.f.server,
        &moved_image,
        &s.ts,
        &common::sigstore::Sign {
            identity: IMAGE_SIGNER.into(),
            ..common::sigstore::Sign::default()
        },
        None,
    );
    let out = s
        .cmd()
        .args([
            "install", "1.30", "--arch", "arm64", "--name", "arm", "--only", "kubelet",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = s.f.home.path().join("export");
    let out = s
        .cmd()
        .args([
            "mirror",
            "export",
            "--toolchain",
            "1.30",
            "--toolchain",
            "arm",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "registry.k8s.io/pause:3.9: its tag named {} when one architecture was pulled and {moved_digest} when another was",
            pause.index_digest
        )) && err.contains("export them into separate directories"),
        "{err}"
    );
    // Apart, each is exported with its signature.
    for t in ["1.30", "arm"] {
        let report = export(&s, &["--toolchain", t], &s.f.home.path().join(t));
        assert_eq!(report["images"]["signed"].as_array().unwrap().len(), 2);
    }
}

/// OpenPGP: runc's `.asc` verified against a keyring made by real gpg.
mod gpg;
