//! `kbin update` against a fake upstream on 127.0.0.1 (dl.k8s.io's stable-1.N.txt, GitHub's
//! release listings, checksum files), reached through `--mirror`: nothing new, then a patch
//! "published" between two runs that `kbin install 1.30` then picks and verifies, and each
//! kind of upstream failure leaving the overlay as it was.

use crate::common;

use std::path::PathBuf;

use assert_cmd::cargo::cargo_bin_cmd;
use common::server::Server;
use sha2::{Digest, Sha256};

const KUBE_BINS: [&str; 7] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "kubeadm",
];

/// GitHub-shaped listing paths and the newest releases the built-in manifest knows.
const LISTINGS: [(&str, &[&str]); 5] = [
    (
        "/repos/etcd-io/etcd/releases",
        &["v3.6.14", "v3.5.33", "v3.7.0-rc.1"],
    ),
    (
        "/repos/containerd/containerd/releases",
        &["v2.3.4", "v1.7.30", "api/v1.9.0"],
    ),
    ("/repos/opencontainers/runc/releases", &["v1.4.3", "v1.3.5"]),
    ("/repos/containernetworking/plugins/releases", &["v1.9.1"]),
    ("/repos/kubernetes-sigs/cri-tools/releases", &["v1.36.0"]),
];

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn listing(tags: &[&str]) -> String {
    let items: Vec<String> = tags
        .iter()
        .map(|t| {
            format!(
                "{{\"tag_name\":\"{t}\",\"draft\":false,\"prerelease\":{}}}",
                t.contains("-rc")
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// A fake upstream where every known minor's stable file names the manifest's latest patch;
/// beside it a stand-in Rekor and a test Sigstore that sign what it publishes, trusted by the
/// kbin under test (`KBIN_TEST_TRUST_ROOT`, `KBIN_REKOR_URL`: nothing outside 127.0.0.1).
struct Upstream {
    server: Server,
    home: tempfile::TempDir,
    ts: common::sigstore::TestSigstore,
    rekor: common::rekor::Rekor,
    root: PathBuf,
}

/// A signature of a blob, and the Rekor entry logged under its digest (if any).
type Signing = (common::sigstore::Signed, Option<serde_json::Value>);

/// A published Kubernetes binary's bytes.
fn kube_body(v: &str, b: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho '{b} Kubernetes v{v}'\n").into_bytes()
}

impl Upstream {
    fn new() -> Upstream {
        let server = Server::start();
        let m = kbin::manifest::Manifest::embedded().unwrap();
        for r in m.releases.values() {
            server.put(
                &format!("/release/stable-{}.txt", r.minor),
                format!("v{}\n", r.latest),
            );
        }
        for (path, tags) in LISTINGS {
            server.put(path, listing(tags));
        }
        let home = tempfile::tempdir().unwrap();
        let ts = common::sigstore::TestSigstore::new();
        let root = home.path().join("trusted_root.json");
        std::fs::write(&root, ts.trusted_root()).unwrap();
        Upstream {
            server,
            home,
            ts,
            rekor: common::rekor::Rekor::start(),
            root,
        }
    }

    /// Publish the detached signature (`.sig`, `.cert`) of every Kubernetes binary of `v`, and
    /// log in the stand-in Rekor, under the binary's digest, the entry `how` gives with it.
    fn sign_kube(&self, v: &str, how: &dyn Fn(&[u8]) -> Signing) {
        for b in KUBE_BINS {
            let body = kube_body(v, b);
            let (signed, entry) = how(&body);
            if let Some(e) = entry {
                self.rekor.add(&sha256(&body), e);
            }
            for arch in ["amd64", "arm64"] {
                let path = format!("/release/v{v}/bin/linux/{arch}/{b}");
                self.server.put(&format!("{path}.sig"), signed.sig.clone());
                self.server
                    .put(&format!("{path}.cert"), signed.cert.clone());
            }
        }
    }

    /// Signed by Kubernetes' release signer, and logged.
    fn good(&self, body: &[u8]) -> Signing {
        let s = self.ts.sign(body, &common::sigstore::Sign::default());
        let e = s.rekor_entry.clone();
        (s, e)
    }

    fn kbin_home(&self) -> PathBuf {
        self.home.path().join("kbin")
    }

    fn overlay(&self) -> Option<String> {
        std::fs::read_to_string(self.kbin_home().join("manifest-overlay.toml")).ok()
    }

    /// `show-versions --available --json`.
    fn available(&self) -> serde_json::Value {
        let o = self
            .cmd()
            .args(["show-versions", "--available", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = cargo_bin_cmd!("kbin");
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.home.path())
            .env("KBIN_HOME", self.kbin_home())
            .env("KBIN_MIRROR", self.server.base())
            .env("KBIN_HTTP_BACKOFF_MS", "10")
            .env("KBIN_HTTP_RETRIES", "1")
            .env("KBIN_TEST_TRUST_ROOT", &self.root)
            .env("KBIN_REKOR_URL", self.rekor.base());
        c
    }

    /// Publish Kubernetes `v` (a 1.30 patch): its stable file, binaries and `.sha256` files.
    fn publish_kube(&self, v: &str) {
        self.server
            .put("/release/stable-1.30.txt", format!("v{v}\n"));
        for arch in ["amd64", "arm64"] {
            for b in KUBE_BINS {
                let body = kube_body(v, b);
                let path = format!("/release/v{v}/bin/linux/{arch}/{b}");
                self.server
                    .put(&format!("{path}.sha256"), format!("{}\n", sha256(&body)));
                self.server.put(&path, body);
            }
        }
        self.sign_kube(v, &|b| self.good(b));
    }

    /// Publish etcd `v`: the listing names it, and its SHA256SUMS covers both arches.
    fn publish_etcd(&self, v: &str) {
        let sums: String = ["amd64", "arm64"]
            .iter()
            .map(|a| {
                format!(
                    "{}  etcd-v{v}-linux-{a}.tar.gz\n",
                    sha256(format!("etcd {v} {a}").as_bytes())
                )
            })
            .collect();
        self.server.put(
            &format!("/etcd-io/etcd/releases/download/v{v}/SHA256SUMS"),
            sums,
        );
        let tag = format!("v{v}");
        self.server.put(
            "/repos/etcd-io/etcd/releases",
            listing(&[&tag, "v3.6.14", "v3.5.33"]),
        );
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn nothing_new_asks_each_source_once_and_writes_nothing() {
    let u = Upstream::new();
    let o = u.cmd().args(["update", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["changes"].as_array().unwrap().len(), 0, "{r}");
    let sources = r["sources"].as_array().unwrap();
    // One stable file per known minor (1.28 to 1.37) and one listing per other component.
    assert_eq!(sources.len(), 10 + 5, "{r}");
    for s in sources {
        let path = s.as_str().unwrap().split_once("://").unwrap().1;
        let path = &path[path.find('/').unwrap()..];
        assert_eq!(u.server.requests(path), 1, "{path}");
    }
    assert_eq!(u.server.total_requests(), 15);
    assert!(u.overlay().is_none(), "nothing learned, nothing written");
    let o = u.cmd().args(["update"]).output().unwrap();
    assert!(text(&o).contains("up to date"), "{}", text(&o));
}

#[test]
fn a_patch_published_between_two_runs_is_learned_installed_verified_and_marked_tofu() {
    let u = Upstream::new();
    let o = u.cmd().args(["update"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(u.overlay().is_none());

    u.publish_kube("1.30.15");
    u.publish_etcd("3.6.15");
    let o = u.cmd().args(["update"]).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("kubernetes 1.30.14 → 1.30.15"), "{out}");
    assert!(out.contains("etcd 3.6.14 → 3.6.15"), "{out}");
    assert!(out.contains("defaults unchanged"), "{out}");
    let overlay = u.overlay().expect("the overlay is written");
    let t: toml::Table = toml::from_str(&overlay).unwrap();
    assert_eq!(
        t["patches"]["1.30"].as_array().unwrap()[0].as_str(),
        Some("1.30.15")
    );
    assert_eq!(
        t["versions"]["etcd"].as_array().unwrap()[0].as_str(),
        Some("3.6.15")
    );
    let tofu = t["tofu"].as_table().unwrap();
    // 7 binaries × 2 arches, and etcd's archive × 2 arches.
    assert_eq!(tofu.len(), 14 + 2, "{overlay}");
    let kubectl = &tofu["kubectl/amd64/1.30.15"];
    assert!(
        kubectl["source"]
            .as_str()
            .unwrap()
            .starts_with("https://dl.k8s.io/release/v1.30.15/"),
        "{kubectl}"
    );
    assert!(kubectl["fetched"].as_str().unwrap().ends_with('Z'));

    // A third run finds nothing more and leaves the overlay byte for byte.
    u.server.reset_counters();
    let o = u.cmd().args(["update"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(u.overlay().as_deref(), Some(overlay.as_str()));
    assert_eq!(u.server.total_requests(), 15);

    // show-versions --available tells pinned from TOFU.
    let a = u.available();
    let m130 = minor(&a, "1.30");
    assert_eq!(m130["latest"], "1.30.15");
    assert_eq!(m130["pinned"]["amd64"]["kubectl"], false);
    assert_eq!(m130["tofu"]["amd64"].as_array().unwrap().len(), 7, "{m130}");
    // The fake dl.k8s.io serves the binaries' detached signatures, and the stand-in Rekor
    // their entries: each learned digest is signed.
    assert_eq!(
        m130["signed"]["amd64"]["kubectl"],
        common::sigstore::K8S_IDENTITY,
        "{m130}"
    );
    assert_eq!(m130["signed"]["amd64"].as_object().unwrap().len(), 7);
    assert_eq!(a["learned"]["etcd"][0], "3.6.15");
    let o = u
        .cmd()
        .args(["show-versions", "--available"])
        .output()
        .unwrap();
    assert!(
        text(&o).contains("(+7 tofu, 7 of them signed)"),
        "{}",
        text(&o)
    );

    // --require-pinned refuses the TOFU digests; a plain install takes 1.30.15, verified
    // against them, and the lock says where they came from.
    let o = u
        .cmd()
        .args(["install", "1.30", "--only", "kubectl", "--require-pinned"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("trust on first use"), "{}", text(&o));
    u.server.reset_counters();
    let o = u
        .cmd()
        .args(["install", "1.30", "--only", "kubectl"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("kubectl is not pinned in the manifest; verified against the digest `kbin update` trusted on first use"),
        "{}",
        text(&o)
    );
    // Verified against the recorded digest: the checksum file is not asked again.
    assert_eq!(
        u.server
            .requests("/release/v1.30.15/bin/linux/amd64/kubectl.sha256"),
        0
    );
    let lock: toml::Table = toml::from_str(
        &std::fs::read_to_string(u.kbin_home().join("toolchains/1.30/toolchain.lock")).unwrap(),
    )
    .unwrap();
    assert_eq!(lock["kubernetes"].as_str(), Some("1.30.15"));
    let art = &lock["component"][0]["artifact"][0];
    assert_eq!(art["pinned"].as_bool(), Some(false));
    assert_eq!(
        art["tofu"]["source"].as_str(),
        Some("https://dl.k8s.io/release/v1.30.15/bin/linux/amd64/kubectl.sha256")
    );
}

#[test]
fn a_tofu_digest_the_artifact_does_not_match_is_refused_at_install() {
    let u = Upstream::new();
    u.publish_kube("1.30.15");
    let o = u.cmd().args(["update", "kubernetes"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Upstream's binary changes after its checksum was trusted.
    u.server.put(
        "/release/v1.30.15/bin/linux/amd64/kubectl",
        b"#!/bin/sh\necho evil\n".to_vec(),
    );
    let o = u
        .cmd()
        .args(["install", "1.30", "--only", "kubectl"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("expected sha256:"), "{}", text(&o));
    assert!(!u.kbin_home().join("toolchains/1.30").exists());
}

/// Run `kbin update` expecting one clear error containing `wanted`, and the overlay unchanged.
fn fails_cleanly(u: &Upstream, extra: &[&str], wanted: &str) {
    let before = u.overlay();
    let o = u.cmd().arg("update").args(extra).output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains(wanted), "wanted {wanted:?} in: {err}");
    assert!(err.contains("the overlay is as it was"), "{err}");
    assert_eq!(u.overlay(), before, "the overlay changed");
}

#[test]
fn upstream_failures_are_one_clear_error_each_and_leave_the_overlay_as_it_was() {
    let u = Upstream::new();
    u.publish_kube("1.30.15");
    let o = u.cmd().args(["update"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(u.overlay().is_some());

    // A wrong checksum file for the next patch.
    u.publish_kube("1.30.16");
    u.server.put(
        "/release/v1.30.16/bin/linux/amd64/kubelet.sha256",
        "<html>rate limited</html>\n",
    );
    fails_cleanly(&u, &[], "kubelet.sha256 (mirror of");
    fails_cleanly(&u, &[], "is not in sha256sum format");

    // A checksum file that is not there.
    u.publish_kube("1.30.16");
    u.server
        .remove("/release/v1.30.16/bin/linux/arm64/kubeadm.sha256");
    fails_cleanly(&u, &[], "404");

    // A garbled listing.
    u.publish_kube("1.30.16");
    u.server
        .put("/repos/containerd/containerd/releases", "<html>");
    fails_cleanly(&u, &[], "is not a GitHub release listing");
    // Naming only the components that are fine works, and learns 1.30.16.
    let o = u.cmd().args(["update", "kubernetes"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(u.overlay().unwrap().contains("1.30.16"));

    // A stable file that names another minor.
    u.server.put("/release/stable-1.31.txt", "v1.32.0\n");
    fails_cleanly(&u, &["kubernetes"], "is not a 1.31 release");

    // An unreachable host (nothing listens on port 1).
    let before = u.overlay();
    let o = u
        .cmd()
        .args(["update", "--mirror", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("http://127.0.0.1:1/"), "{err}");
    assert!(err.contains("the overlay is as it was"), "{err}");
    assert_eq!(u.overlay(), before);

    // An unknown component.
    fails_cleanly(&u, &["etcdd"], "\"etcdd\" is not a component");
}

#[test]
fn per_host_mirrors_in_settings_reach_dl_k8s_io_and_the_github_api() {
    let u = Upstream::new();
    u.publish_kube("1.30.15");
    std::fs::create_dir_all(u.kbin_home()).unwrap();
    std::fs::write(
        u.kbin_home().join("settings.toml"),
        format!(
            "[mirrors]\n\"dl.k8s.io\" = \"{b}\"\n\"api.github.com\" = \"{b}\"\n",
            b = u.server.base()
        ),
    )
    .unwrap();
    let o = u
        .cmd()
        .env_remove("KBIN_MIRROR")
        .args(["update", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["changes"][0]["to"], "1.30.15", "{r}");
    assert_eq!(u.server.requests("/repos/etcd-io/etcd/releases"), 1);
}

/// The built-in manifest with a Sigstore bundle beside each Kubernetes binary and its signer,
/// written into `dir`; and a test trust root there.
fn signed_manifest(
    dir: &std::path::Path,
    ts: &common::sigstore::TestSigstore,
) -> (PathBuf, PathBuf) {
    let text = common::sigstore::sign_kubernetes_in(kbin::manifest::EMBEDDED);
    let manifest = dir.join("signed.toml");
    std::fs::write(&manifest, text).unwrap();
    let root = dir.join("trusted_root.json");
    std::fs::write(&root, ts.trusted_root()).unwrap();
    (manifest, root)
}

#[test]
fn a_new_release_whose_signatures_verify_is_recorded_signed_and_accepted_by_require_verified() {
    use common::sigstore::{Sign, TestSigstore};
    let u = Upstream::new();
    let ts = TestSigstore::new();
    let (manifest, root) = signed_manifest(u.home.path(), &ts);
    let cmd = || {
        let mut c = u.cmd();
        c.env("KBIN_MANIFEST", &manifest)
            .env("KBIN_TEST_TRUST_ROOT", &root);
        c
    };
    u.publish_kube("1.30.15");
    let sign_all = |how: &Sign| {
        for arch in ["amd64", "arm64"] {
            for b in KUBE_BINS {
                let body = format!("#!/bin/sh\necho '{b} Kubernetes v1.30.15'\n").into_bytes();
                let path = format!("/release/v1.30.15/bin/linux/{arch}/{b}");
                u.server
                    .put(&format!("{path}.sigstore.json"), ts.sign(&body, how).bundle);
            }
        }
    };
    // Signed by someone else: update refuses the release, the overlay is not written.
    sign_all(&Sign {
        identity: "mallory@example.com".into(),
        ..Sign::default()
    });
    let o = cmd().args(["update", "kubernetes"]).output().unwrap();
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("kbin update learned nothing; the overlay is as it was")
            && out.contains("of kubernetes's new release was refused")
            && out.contains("signed by mallory@example.com, not by krel-staging@"),
        "{out}"
    );
    assert!(u.overlay().is_none());

    sign_all(&Sign::default());
    let o = cmd().args(["update", "kubernetes"]).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("14 digest(s) trusted on first use, 14 of them signed by krel-staging@"),
        "{out}"
    );
    let t: toml::Table = toml::from_str(&u.overlay().unwrap()).unwrap();
    assert_eq!(
        t["tofu"]["kubectl/amd64/1.30.15"]["signed"]["identity"].as_str(),
        Some(common::sigstore::K8S_IDENTITY)
    );
    // --require-pinned still refuses it; --require-verified takes it, signed.
    let o = cmd()
        .args(["install", "1.30", "--only", "kubectl", "--require-pinned"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = cmd()
        .args(["install", "1.30", "--only", "kubectl", "--require-verified"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let lock =
        std::fs::read_to_string(u.kbin_home().join("toolchains/1.30/toolchain.lock")).unwrap();
    assert!(lock.contains(common::sigstore::K8S_IDENTITY), "{lock}");
}

/// Install 1.30's kubectl, refusing a digest neither pinned nor signed.
const INSTALL_KUBECTL_VERIFIED: [&str; 6] = [
    "install",
    "1.30",
    "--only",
    "kubectl",
    "--require-verified",
    "--no-images",
];

#[test]
fn a_release_with_detached_signatures_is_looked_up_in_rekor_recorded_signed_and_installs_air_gapped()
 {
    let u = Upstream::new();
    u.publish_kube("1.30.15");
    let o = u.cmd().args(["update", "kubernetes"]).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("14 digest(s) trusted on first use, 14 of them signed by krel-staging@"),
        "{out}"
    );
    let overlay = u.overlay().unwrap();
    let t: toml::Table = toml::from_str(&overlay).unwrap();
    let kubectl = &t["tofu"]["kubectl/amd64/1.30.15"];
    assert_eq!(
        kubectl["signed"]["identity"].as_str(),
        Some(common::sigstore::K8S_IDENTITY)
    );
    let bundle: serde_json::Value =
        serde_json::from_str(kubectl["bundle"].as_str().expect("a stored bundle")).unwrap();
    assert!(
        bundle["rekorBundle"]["SignedEntryTimestamp"].is_string(),
        "{bundle}"
    );
    assert!(u.rekor.requests() >= 14);

    // Install verifies the stored bundle offline: neither the .sig nor Rekor is asked.
    u.server.reset_counters();
    let asked = u.rekor.requests();
    let o = u.cmd().args(INSTALL_KUBECTL_VERIFIED).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(u.rekor.requests(), asked);
    for f in ["kubectl.sig", "kubectl.cert", "kubectl.sigstore.json"] {
        assert_eq!(
            u.server
                .requests(&format!("/release/v1.30.15/bin/linux/amd64/{f}")),
            0,
            "{f}"
        );
    }
    let vouch = |o: &std::process::Output| -> String {
        assert!(o.status.success(), "{}", text(o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["vouched"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["url"].as_str().unwrap().ends_with("/amd64/kubectl"))
            .map(|a| a["vouch"].as_str().unwrap().to_owned())
            .expect("kubectl is vouched for")
    };
    let o = u.cmd().args(["show-versions", "--json"]).output().unwrap();
    assert_eq!(
        vouch(&o),
        format!("signed by {}", common::sigstore::K8S_IDENTITY)
    );
    // --available says which learned digests are signed, and by whom.
    let a = u.available();
    let m130 = minor(&a, "1.30");
    assert_eq!(
        m130["signed"]["amd64"]["kubectl"],
        common::sigstore::K8S_IDENTITY,
        "{m130}"
    );
    let o = u
        .cmd()
        .args(["show-versions", "--available"])
        .output()
        .unwrap();
    assert!(text(&o).contains(" of them signed)"), "{}", text(&o));

    // The export carries the bundles of every learned artifact.
    let export = u.home.path().join("export");
    let o = u
        .cmd()
        .args([
            "mirror",
            "export",
            "--toolchain",
            "1.30",
            "--no-images",
            "--out",
        ])
        .arg(&export)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for arch in ["amd64", "arm64"] {
        let p = export.join(format!(
            "release/v1.30.15/bin/linux/{arch}/kubelet.sigstore.json"
        ));
        assert!(p.is_file(), "{} is missing", p.display());
    }

    // Air-gapped: no server, no Rekor; another machine learns 1.30.15 signed from the export
    // and installs it verified.
    let Upstream {
        server,
        rekor,
        home,
        root,
        ..
    } = u;
    drop(server);
    drop(rekor);
    let other = home.path().join("other");
    let offline = || {
        let mut c = cargo_bin_cmd!("kbin");
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", home.path())
            .env("KBIN_HOME", &other)
            .env("KBIN_MIRROR", format!("file://{}", export.display()))
            .env("KBIN_TEST_TRUST_ROOT", &root)
            .env("KBIN_REKOR_URL", "http://127.0.0.1:1");
        c
    };
    let o = offline().args(["update", "kubernetes"]).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("14 of them signed by krel-staging@"), "{out}");
    let o = offline().args(INSTALL_KUBECTL_VERIFIED).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = offline()
        .args(["show-versions", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        vouch(&o),
        format!("signed by {}", common::sigstore::K8S_IDENTITY)
    );
}

#[test]
fn a_detached_signature_rekor_does_not_vouch_for_is_one_error_and_the_overlay_is_unchanged() {
    use common::sigstore::Sign;
    let u = Upstream::new();
    u.publish_kube("1.30.15");
    let resign = |how: &dyn Fn(&[u8]) -> Signing| {
        u.rekor.clear();
        u.sign_kube("1.30.15", how);
    };
    // Rekor has no entry for the digest.
    resign(&|b| (u.good(b).0, None));
    fails_cleanly(&u, &["kubernetes"], "has no entry for sha256:");
    // Its entry is about other bytes.
    resign(&|b| (u.good(b).0, u.good(b"other bytes").1));
    fails_cleanly(&u, &["kubernetes"], "it is about other bytes");
    // Signed by someone else.
    resign(&|b| {
        let s = u.ts.sign(
            b,
            &Sign {
                identity: "mallory@example.com".into(),
                ..Sign::default()
            },
        );
        let e = s.rekor_entry.clone();
        (s, e)
    });
    fails_cleanly(
        &u,
        &["kubernetes"],
        "signed by mallory@example.com, not by krel-staging@",
    );
    // A certificate from a CA the trust root does not name.
    resign(&|b| {
        let s = u.ts.sign_with(&u.ts.stranger, b, &Sign::default());
        let e = s.rekor_entry.clone();
        (s, e)
    });
    fails_cleanly(
        &u,
        &["kubernetes"],
        "does not chain to a Fulcio CA of the trust root",
    );
    // Rekor cannot be reached (nothing listens on port 1).
    resign(&|b| u.good(b));
    fails_cleanly(
        &u,
        &["kubernetes", "--rekor-url", "http://127.0.0.1:1"],
        "cannot reach the transparency log http://127.0.0.1:1/api/v1/index/retrieve",
    );
    // A server that is not a Rekor log (the upstream's file server): named, nothing learned.
    let not_rekor = u.server.base();
    fails_cleanly(
        &u,
        &["kubernetes", "--rekor-url", &not_rekor],
        "/api/v1/index/retrieve did not answer as a Rekor log does: it answered 404",
    );
    // Each refusal named the artifact's signature, and nothing was learned; now it verifies.
    let o = u.cmd().args(["update", "kubernetes"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(u.overlay().unwrap().contains("bundle = "));
}

/// Minor `m`'s entry of a `show-versions --available --json` answer.
fn minor<'a>(available: &'a serde_json::Value, m: &str) -> &'a serde_json::Value {
    available["minors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["minor"] == m)
        .unwrap()
}

impl Upstream {
    /// Publish containerd `v` (the listing names it, a `.sha256sum` per arch) with its release
    /// attestation signed as its release workflow at tag `signed_tag`.
    fn publish_containerd(&self, v: &str, signed_tag: &str) {
        let dir = format!("/containerd/containerd/releases/download/v{v}");
        let mut tarballs = Vec::new();
        for arch in ["amd64", "arm64"] {
            let name = format!("containerd-{v}-linux-{arch}.tar.gz");
            let body = format!("containerd {v} {arch}").into_bytes();
            self.server.put(
                &format!("{dir}/{name}.sha256sum"),
                format!("{}  {name}\n", sha256(&body)),
            );
            tarballs.push((name, body));
        }
        let subjects: Vec<(&str, &[u8])> = tarballs
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let how = common::sigstore::Sign {
            identity: format!(
                "https://github.com/containerd/containerd/.github/workflows/release.yml@refs/tags/{signed_tag}"
            ),
            issuer: "https://token.actions.githubusercontent.com".into(),
            ..common::sigstore::Sign::default()
        };
        let a = self
            .ts
            .attest(&subjects, &how, common::sigstore::Logged::Intoto);
        self.server.put(
            &format!("{dir}/containerd-{v}-attestation.intoto.jsonl"),
            format!("{a}\n"),
        );
        let tag = format!("v{v}");
        self.server.put(
            "/repos/containerd/containerd/releases",
            listing(&[&tag, "v2.3.4", "v1.7.30"]),
        );
    }
}

#[test]
fn a_containerd_release_is_recorded_signed_by_its_attestation_and_another_tags_is_refused() {
    let u = Upstream::new();
    u.publish_containerd("2.3.5", "v2.3.5");
    let o = u.cmd().args(["update", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let overlay = u.overlay().expect("the overlay is written");
    let t: toml::Table = toml::from_str(&overlay).unwrap();
    let workflow =
        "https://github.com/containerd/containerd/.github/workflows/release.yml@refs/tags/v2.3.5";
    for arch in ["amd64", "arm64"] {
        let e = &t["tofu"][&format!("containerd/{arch}/2.3.5")];
        assert_eq!(
            e["signed"]["identity"].as_str(),
            Some(workflow),
            "{overlay}"
        );
    }

    // The next release, served with the attestation of another tag: one error, nothing learned.
    u.publish_containerd("2.3.6", "v2.3.5");
    let o = u.cmd().args(["update"]).output().unwrap();
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("containerd-2.3.6-attestation.intoto.jsonl")
            && out.contains("not by https://github.com/containerd/containerd/.github/workflows/release.yml@refs/tags/v2.3.6"),
        "{out}"
    );
    assert_eq!(u.overlay().as_deref(), Some(overlay.as_str()));
}

/// runc's `runc.sha256sum` is clear-signed (its release script runs `gpg --clear-sign` over
/// it): made here by real gpg, `kbin update` reads the digests inside the signed message.
#[test]
fn a_clear_signed_runc_checksum_file_is_read() {
    let u = Upstream::new();
    let gpg = common::gpg::Gpg::new(&u.home.path().join("gnupg"));
    let key = gpg.gen_key("Runc Test <runc@example.com>", "sign", "1y", None);
    let v = "1.4.4";
    let dir = format!("/opencontainers/runc/releases/download/v{v}");
    let bodies: Vec<(String, Vec<u8>)> = ["amd64", "arm64"]
        .iter()
        .map(|a| (format!("runc.{a}"), format!("runc {v} {a}").into_bytes()))
        .collect();
    let sums: String = bodies
        .iter()
        .map(|(n, b)| format!("{}  {n}\n", sha256(b)))
        .collect();
    let signed = gpg.run(None, &["--local-user", &key, "--clear-sign"], Some(&sums));
    assert!(
        signed.starts_with("-----BEGIN PGP SIGNED MESSAGE-----"),
        "{signed}"
    );
    u.server.put(&format!("{dir}/runc.sha256sum"), signed);
    u.server.put(
        "/repos/opencontainers/runc/releases",
        listing(&[&format!("v{v}"), "v1.4.3", "v1.3.5"]),
    );
    let o = u.cmd().args(["update"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let overlay = u.overlay().expect("the overlay is written");
    let t: toml::Table = toml::from_str(&overlay).unwrap();
    for (arch, (_, body)) in ["amd64", "arm64"].iter().zip(&bodies) {
        assert_eq!(
            t["tofu"][&format!("runc/{arch}/{v}")]["digest"].as_str(),
            Some(format!("sha256:{}", sha256(body)).as_str()),
            "{overlay}"
        );
    }
}
