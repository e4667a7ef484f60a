//! One writer for the toolchains tests install by hand: a receipt (kbin's own type, so it is
//! always one kbin reads) and a stub executable per binary.

// Not every test file that says `mod common;` uses all of it.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kbin::manifest::{Arch, Digest, Images};
use kbin::store::Layout;
use kbin::toolchain::{ArtifactReceipt, BinaryReceipt, ComponentReceipt, Origin, Receipt};
use semver::Version;

/// Every component of a full toolchain and its binaries, in manifest order.
pub const COMPONENTS: &[(&str, &[&str])] = &[
    (
        "kubernetes",
        &[
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kubectl",
        ],
    ),
    ("etcd", &["etcd", "etcdctl"]),
    (
        "containerd",
        &["containerd", "containerd-shim-runc-v2", "ctr"],
    ),
    ("runc", &["runc"]),
    (
        "cni-plugins",
        &["bridge", "host-local", "loopback", "portmap"],
    ),
    ("crictl", &["crictl"]),
];

/// The binaries of `component` at version `v`: [`COMPONENTS`]' list, and etcdutl for etcd from
/// 3.5 (as the manifest lists it).
pub fn binaries_of(
    component: &str,
    v: &str,
    bins: &'static [&'static str],
) -> &'static [&'static str] {
    match Version::parse(v) {
        Ok(ver) if component == "etcd" && (ver.major, ver.minor) >= (3, 5) => {
            &["etcd", "etcdctl", "etcdutl"]
        }
        _ => bins,
    }
}

/// [`COMPONENTS`] with a version each from `versions` (component, version): the table a
/// fixture toolchain is written from. Every component must have a version.
#[allow(dead_code)] // not every test file that says `mod common;` uses it
pub fn versioned<'a>(
    versions: &[(&str, &'a str)],
) -> Vec<(&'static str, &'a str, &'static [&'static str])> {
    COMPONENTS
        .iter()
        .map(|(c, bins)| {
            let v = versions
                .iter()
                .find(|(n, _)| n == c)
                .unwrap_or_else(|| panic!("no version given for {c}"))
                .1;
            (*c, v, binaries_of(c, v, bins))
        })
        .collect()
}

/// A toolchain to write.
#[derive(Debug, Clone)]
pub struct FixtureToolchain<'a> {
    /// Its name.
    pub name: &'a str,
    /// The Kubernetes version.
    pub kubernetes: &'a str,
    /// `(component, version, binaries)`, in receipt order.
    pub components: Vec<(&'a str, &'a str, &'a [&'a str])>,
    /// `(coredns, pause)`, when the receipt records images.
    pub images: Option<(&'a str, &'a str)>,
    /// Record each component as downloaded from `https://example.invalid/<component>`.
    pub artifacts: bool,
    /// Each binary's digest is the sha256 of its stub, else one fixed digest for all.
    pub real_digests: bool,
}

impl<'a> FixtureToolchain<'a> {
    /// Every component of [`COMPONENTS`], each at the version `version_of(component)` gives
    /// (the kubernetes component at `kubernetes`), with images and fixed digests.
    pub fn full(
        name: &'a str,
        kubernetes: &'a str,
        version_of: impl Fn(&str) -> &'a str,
        images: (&'a str, &'a str),
    ) -> Self {
        FixtureToolchain {
            name,
            kubernetes,
            components: COMPONENTS
                .iter()
                .map(|(c, bins)| {
                    let v = if *c == "kubernetes" {
                        kubernetes
                    } else {
                        version_of(c)
                    };
                    (*c, v, binaries_of(c, v, bins))
                })
                .collect(),
            images: Some(images),
            artifacts: false,
            real_digests: false,
        }
    }
}

/// Write `fixture` under KBIN_HOME `home`: each binary is an executable whose content is
/// `stub(binary, version)`, and the receipt lists them. Returns the toolchain's directory.
pub fn write_toolchain(
    home: &Path,
    f: &FixtureToolchain<'_>,
    stub: impl Fn(&str, &str) -> String,
) -> PathBuf {
    let layout = Layout::new(home);
    let dir = layout.toolchain_dir(f.name);
    std::fs::create_dir_all(layout.toolchain_bin(f.name)).unwrap();
    let fixed: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    let digest_of = |bytes: &[u8]| {
        if f.real_digests {
            use sha2::Digest as _;
            Digest::sha256_of(&sha2::Sha256::digest(bytes))
        } else {
            fixed.clone()
        }
    };
    let mut components = Vec::new();
    for (c, v, bins) in &f.components {
        let mut binaries = Vec::new();
        for b in *bins {
            let body = stub(b, v);
            let p = layout.toolchain_bin(f.name).join(b);
            std::fs::write(&p, &body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            binaries.push(BinaryReceipt {
                name: (*b).into(),
                path: format!("bin/{b}"),
                digest: digest_of(body.as_bytes()),
                size: None,
                reports: None,
            });
        }
        let artifacts = if f.artifacts {
            vec![ArtifactReceipt {
                url: format!("https://example.invalid/{c}"),
                digest: binaries[0].digest.clone(),
                pinned: true,
                tofu: None,
                signed: None,
            }]
        } else {
            vec![]
        };
        components.push(ComponentReceipt {
            name: (*c).into(),
            version: Version::parse(v).unwrap(),
            origin: Origin::Download,
            artifacts,
            binaries,
            source: None,
        });
    }
    let mut r = Receipt::new(
        f.name,
        Version::parse(f.kubernetes).unwrap(),
        Arch::Amd64,
        fixed,
        f.images.map(|(coredns, pause)| Images {
            coredns: coredns.into(),
            pause: pause.into(),
        }),
        components,
    );
    // A fixed time, so the receipt is the same on every run.
    r.created = "2026-11-22T23:00:00Z".into();
    std::fs::write(layout.receipt_path(f.name), r.to_toml()).unwrap();
    dir
}

/// A toolchain `name` for Kubernetes `kube`: Debian's etcd, containerd, runc and the image's
/// kubectl (real programs that run inside the machines), the self-contained python stand-in
/// (reporting `v<kube>`) as every kube-* binary, and stubs for crictl and the CNI plugins.
#[allow(dead_code)] // not every test file that says `mod common;` uses it
pub fn standin_toolchain(home: &Path, name: &str, kube: &str) {
    let standin = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin/kube-standin.py"),
    )
    .unwrap();
    let body = standin.split_once('\n').unwrap().1.to_owned();
    let f = FixtureToolchain::full(
        name,
        kube,
        |c| match c {
            "etcd" => "3.4.23",
            "containerd" => "1.7.23",
            "runc" => "1.1.14",
            "cni-plugins" => "1.4.0",
            _ => "1.30.0",
        },
        ("1.11.1", "3.9"),
    );
    // Real digests: the shared bundles are kept in the store by their binaries' digests, so a
    // new toolchain's stand-ins must not share one fixed digest with the old one's.
    let f = FixtureToolchain {
        real_digests: true,
        ..f
    };
    let dir = write_toolchain(home, &f, |b, v| {
        if b.starts_with("kube-") && b != "kubectl" || b == "kubelet" {
            format!(
                "#!/usr/bin/python3\nCOMPONENT = {b:?}\nVERSION = \"v{v}\"\nSTATE_DIR = \"/var/lib/kube-standin\"\n{body}"
            )
        } else {
            format!("#!/bin/sh\necho {b} {v}\n")
        }
    });
    for b in [
        "etcd",
        "etcdctl",
        "containerd",
        "ctr",
        "containerd-shim-runc-v2",
        "runc",
        "kubectl",
    ] {
        let to = dir.join("bin").join(b);
        std::fs::remove_file(&to).unwrap();
        std::fs::copy(super::tool(b), &to).unwrap();
    }
    // The receipt records the real programs' digests too.
    let layout = kbin::store::Layout::new(home);
    let path = layout.receipt_path(name);
    let mut r = kbin::toolchain::Receipt::load(&path).unwrap();
    for c in &mut r.components {
        for b in &mut c.binaries {
            let bytes = std::fs::read(dir.join(&b.path)).unwrap();
            b.digest = format!("sha256:{}", kbin::util::sha256_hex(&bytes))
                .parse()
                .unwrap();
        }
    }
    std::fs::write(&path, r.to_toml()).unwrap();
}

/// Give toolchain `name` (under KBIN_HOME `home`) the pause image `registry.k8s.io/pause:<tag>`
/// as `kbin install` leaves a pulled image: an OCI archive under `images/`, recorded in the
/// receipt (so `gen` puts it in the workers' bundle).
#[allow(dead_code)] // not every test file that says `mod common;` uses it
pub fn add_pause_image(home: &Path, name: &str, tag: &str) {
    add_image(home, name, kbin::images::ImageRef::pause(tag));
}

/// The same for any image of registry.k8s.io (`ImageRef::coredns("1.11.1")`).
#[allow(dead_code)] // not every test file that says `mod common;` uses it
pub fn add_image(home: &Path, name: &str, image: kbin::images::ImageRef) {
    let layout = kbin::store::Layout::new(home);
    let (bytes, manifest) = super::registry::oci_archive(&image.repository, &image.tag);
    let dir = layout.toolchain_dir(name).join("images");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(image.archive_name()), &bytes).unwrap();
    let path = layout.receipt_path(name);
    let mut r = kbin::toolchain::Receipt::load(&path).unwrap();
    let manifest: Digest = manifest.parse().unwrap();
    r.pulled.push(kbin::images::PulledImage {
        signed: None,
        signature: None,
        name: image.to_string(),
        arch: Arch::Amd64,
        digest: manifest.clone(),
        manifest,
        archive: format!("sha256:{}", kbin::util::sha256_hex(&bytes))
            .parse()
            .unwrap(),
        size: bytes.len() as u64,
        source: "tests/common/registry.rs".into(),
        fetched: "2026-11-22T23:00:00Z".into(),
    });
    std::fs::write(&path, r.to_toml()).unwrap();
}
