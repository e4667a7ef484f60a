//! Images pulled from a registry (the test server, as registry.k8s.io's mirror) with the
//! distribution API: every blob verified by digest, a tampered one refused with nothing kept,
//! and the stored OCI archive imported by Debian's real containerd (`ctr images import`, which
//! unpacks the layer and checks it against the config's diff_id).

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::Server;
use common::tool;
use kbin::fetch::{FetchOptions, Fetcher};
use kbin::images::{ImageRef, pull};
use kbin::manifest::Arch;
use kbin::store::Layout;
use kbin::store::cas::Store;

fn fetcher(server: &Server) -> Fetcher {
    Fetcher::new(FetchOptions {
        mirror: Some(server.base()),
        backoff: Duration::from_millis(10),
        retries: 1,
        ..FetchOptions::default()
    })
    .unwrap()
}

/// Who the built-in manifest says signs registry.k8s.io's images.
fn signer() -> kbin::trust::Policy {
    kbin::manifest::Manifest::embedded().unwrap().image_signer
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Debian's containerd on a private socket and root, CRI off, until dropped.
struct Containerd {
    child: Child,
    sock: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sock = d.join("c.sock");
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{1}.ttrpc\"\n",
            d.display(),
            sock.display()
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let child = Command::new(tool("containerd"))
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("log")).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "containerd did not start: {}",
                std::fs::read_to_string(d.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd {
            child,
            sock,
            _dir: dir,
        }
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new(tool("ctr"))
            .arg("--address")
            .arg(&self.sock)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn blobs(home: &Path) -> Vec<String> {
    let dir = Layout::new(home).blobs_dir();
    kbin::fsx::files_under(&dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_pulled_image_is_verified_stored_once_and_imported_by_real_containerd() {
    let server = Server::start();
    let img = common::registry::publish(&server, "pause", "3.10.1");
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(Layout::new(home.path())).unwrap();
    let f = fetcher(&server);
    let pulled = rt()
        .block_on(pull(
            &f,
            &store,
            &ImageRef::pause("3.10.1"),
            Arch::Amd64,
            &signer(),
        ))
        .unwrap();
    assert_eq!(pulled.name, "registry.k8s.io/pause:3.10.1");
    assert_eq!(pulled.digest.to_string(), img.index_digest);
    assert_eq!(
        pulled.manifest.to_string(),
        img.manifests[0].0,
        "the amd64 manifest"
    );
    let archive = store
        .get(&pulled.archive)
        .expect("the archive is in the store");

    // Only the amd64 blobs were fetched; a second pull fetches no blob again, and makes the
    // same archive (deterministic).
    let amd64_layer = format!("/v2/pause/blobs/{}", img.manifests[0].2[0]);
    let arm64_layer = format!("/v2/pause/blobs/{}", img.manifests[1].2[0]);
    assert_eq!(server.requests(&amd64_layer), 1);
    assert_eq!(server.requests(&arm64_layer), 0);
    let again = rt()
        .block_on(pull(
            &f,
            &store,
            &ImageRef::pause("3.10.1"),
            Arch::Amd64,
            &signer(),
        ))
        .unwrap();
    assert_eq!(again.archive, pulled.archive);
    assert_eq!(server.requests(&amd64_layer), 1);

    // The real containerd imports it under its name and unpacks it (diff_ids checked).
    let c = Containerd::start();
    let out = c.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        archive.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = c.ctr(&["images", "ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    let line = ls
        .lines()
        .find(|l| l.starts_with("registry.k8s.io/pause:3.10.1 "))
        .unwrap_or_else(|| panic!("not imported under its name: {ls}"));
    assert!(line.contains(&img.manifests[0].0), "{line}");
    let check = c.ctr(&["images", "check"]);
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(
        check
            .lines()
            .any(|l| l.starts_with("registry.k8s.io/pause:3.10.1") && l.contains("complete")),
        "{check}"
    );
}

#[test]
fn a_tampered_layer_is_refused_and_nothing_of_it_is_kept() {
    let server = Server::start();
    let img = common::registry::publish(&server, "pause", "3.10.2");
    let layer = format!("/v2/pause/blobs/{}", img.manifests[0].2[0]);
    server.put(&layer, b"not the layer the manifest names".to_vec());
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(Layout::new(home.path())).unwrap();
    let before = blobs(home.path());
    let err = rt()
        .block_on(pull(
            &fetcher(&server),
            &store,
            &ImageRef::pause("3.10.2"),
            Arch::Amd64,
            &signer(),
        ))
        .unwrap_err();
    let msg = format!("{err}");
    assert!(msg.contains(&img.manifests[0].2[0]), "{msg}");
    assert_eq!(blobs(home.path()), before, "nothing stored");
    let tmp = Layout::new(home.path()).tmp_dir();
    let left: Vec<_> = kbin::fsx::files_under(&tmp)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.starts_with("locks"))
        .collect();
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "nothing partial left"
    );
}

#[test]
fn a_missing_tag_and_a_missing_platform_are_clear_errors() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(Layout::new(home.path())).unwrap();
    let err = rt()
        .block_on(pull(
            &fetcher(&server),
            &store,
            &ImageRef::pause("9.9"),
            Arch::Amd64,
            &signer(),
        ))
        .unwrap_err();
    let msg = format!("{err}");
    assert!(
        msg.contains("404") && msg.contains("/v2/pause/manifests/9.9"),
        "{msg}"
    );

    // An index with only arm64.
    let img = common::registry::publish(&server, "coredns/coredns", "v1.12.4");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifests[1].0, "size": 1,
            "platform": { "os": "linux", "architecture": "arm64" } }],
    });
    server.put(
        "/v2/coredns/coredns/manifests/v1.12.4",
        serde_json::to_vec(&index).unwrap(),
    );
    let err = rt()
        .block_on(pull(
            &fetcher(&server),
            &store,
            &ImageRef::coredns("1.12.4"),
            Arch::Amd64,
            &signer(),
        ))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "registry.k8s.io/coredns/coredns:v1.12.4 has no linux/amd64 image (it has: linux/arm64)"
    );
}
