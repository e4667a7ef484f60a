//! Shared binaries bundles, paid for once (issue 11): made on every core into the store, reused
//! by an unchanged re-run, `gen node` and other clusters, remade when a binary changes or the
//! cached blob is damaged. Toolchains here are real installs in shape: binaries are blobs in the
//! store, hardlinked into `toolchains/<name>/bin`, with their digests in the receipt.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;

use assert_cmd::cargo::cargo_bin_cmd;
use kbin::r#gen::bundle::{BINARIES, Role};
use kbin::r#gen::bundle_cache::{self, SharedBundle, Source};
use kbin::r#gen::versions::Versions;
use kbin::manifest::{Arch, Digest, Images};
use kbin::store::{Layout, Store};
use kbin::toolchain::receipt::{BinaryReceipt, ComponentReceipt, Origin, RECEIPT_SCHEMA, Receipt};
use semver::Version;

const VERSIONS: &[(&str, &str)] = &[
    ("kubernetes", "1.35.8"),
    ("etcd", "3.6.10"),
    ("containerd", "2.2.3"),
    ("runc", "1.4.2"),
    ("cni-plugins", "1.9.1"),
    ("crictl", "1.35.0"),
];

/// Bytes of a fake binary: half repetitive (it compresses, like code), half noise seeded by
/// the name and `salt`; a few hundred KB each, so a bundle spans several 1 MiB blocks.
fn binary(name: &str, salt: u32) -> Vec<u8> {
    let mut x = name.bytes().fold(0x811c_9dc5_u32 ^ salt, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) | 1;
    let size = 200_000 + (x as usize % 300_000);
    (0..size)
        .map(|j| {
            if j % 1024 < 512 {
                name.as_bytes()[j % name.len()]
            } else {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }
        })
        .collect()
}

/// Install toolchain `name` in `home` like `kbin install` leaves it: each binary a read-only
/// blob, hardlinked into the toolchain, its digest in the receipt; `salt` picks each binary's
/// bytes. Returns its versions.
fn install(home: &Path, name: &str, salt: impl Fn(&str) -> u32) -> Versions {
    let layout = Layout::new(home);
    let store = Store::open(layout.clone()).unwrap();
    let bin = layout.toolchain_bin(name);
    std::fs::create_dir_all(&bin).unwrap();
    let mut components = vec![];
    for (c, v, bins) in common::toolchain::versioned(VERSIONS) {
        let mut binaries = vec![];
        for b in bins {
            let src = home.join(format!("{b}.new"));
            std::fs::write(&src, binary(b, salt(b))).unwrap();
            let digest = store.insert_copy(&src).unwrap();
            std::fs::remove_file(&src).unwrap();
            let dest = bin.join(b);
            let _ = std::fs::remove_file(&dest);
            std::fs::hard_link(store.get(&digest).unwrap(), &dest).unwrap();
            binaries.push(BinaryReceipt {
                name: (*b).into(),
                path: format!("bin/{b}"),
                digest,
                size: None,
                reports: None,
            });
        }
        components.push(ComponentReceipt {
            name: (*c).into(),
            version: Version::parse(v).unwrap(),
            origin: Origin::Download,
            artifacts: vec![],
            binaries,
            source: None,
        });
    }
    let receipt = Receipt {
        schema: RECEIPT_SCHEMA,
        pulled: Vec::new(),
        name: name.into(),
        kubernetes: Version::parse("1.35.8").unwrap(),
        arch: Arch::Amd64,
        manifest: format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
        created: "2026-11-22T23:00:00Z".into(),
        images: Some(Images {
            coredns: "1.12.4".into(),
            pause: "3.10.1".into(),
        }),
        components,
    };
    std::fs::write(layout.receipt_path(name), receipt.to_toml()).unwrap();
    std::fs::write(layout.settings_path(), format!("default = \"{name}\"\n")).unwrap();
    Versions::from_toolchain(&layout, Some(name)).unwrap()
}

/// The shared bundle of `role` as `gen` writes it: its path under `out` and its entries.
fn entries(v: &Versions, role: Role) -> Vec<(String, u32, PathBuf)> {
    let dir = v.toolchain_dir.as_ref().unwrap();
    let mut e: Vec<_> = BINARIES
        .iter()
        .filter(|(r, _, _)| *r == role)
        .map(|(_, b, to)| (format!("{to}/{b}"), 0o755, dir.join(&v.binaries[*b])))
        .collect();
    e.sort();
    e
}

fn bundle(v: &Versions, out: &Path, role: Role) -> SharedBundle {
    let path = out.join(format!("bundles/{}-amd64-binaries.tar.gz", role.name()));
    let staged = kbin::r#gen::Staged::new();
    let b = bundle_cache::shared_bundle(v, &path, &entries(v, role), &staged).unwrap();
    staged.commit().unwrap();
    b
}

fn inode(p: &Path) -> (u64, u64) {
    let m = std::fs::metadata(p).unwrap();
    (m.dev(), m.ino())
}

fn blob(home: &Path, b: &SharedBundle) -> PathBuf {
    Layout::new(home).blob_path(&b.digest)
}

fn sha256(p: &Path) -> Digest {
    kbin::store::cas::sha256_file(p).unwrap().0
}

#[test]
fn bundle_is_read_by_real_tar_and_gzip_with_the_binaries_and_their_modes() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let b = bundle(&v, out.path(), Role::Worker);
    assert_eq!(b.source, Source::Made);
    assert_eq!(sha256(&b.path), b.digest);
    let st = Command::new("gzip")
        .arg("-t")
        .arg(&b.path)
        .status()
        .unwrap();
    assert!(st.success(), "gzip -t");
    let x = tempfile::tempdir().unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(x.path())
        .arg("-xzf")
        .arg(&b.path)
        .status()
        .unwrap();
    assert!(st.success(), "tar xzf");
    let want = entries(&v, Role::Worker);
    assert!(want.len() > 8);
    for (rel, _, src) in &want {
        let got = x.path().join(rel);
        assert_eq!(
            std::fs::read(&got).unwrap(),
            std::fs::read(src).unwrap(),
            "{rel}"
        );
        assert_eq!(got.metadata().unwrap().mode() & 0o777, 0o755, "{rel}");
    }
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&b.path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(listing.stdout).unwrap().lines().count(),
        want.len()
    );
}

#[test]
fn unchanged_rerun_and_another_cluster_reuse_the_stored_bundle_without_recompressing() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let first = bundle(&v, out.path(), Role::Worker);
    assert_eq!(first.source, Source::Made);
    let stored = blob(home.path(), &first);
    // The store's blob, read-only, and the output is that very file.
    assert_eq!(stored.metadata().unwrap().permissions().mode() & 0o222, 0);
    assert_eq!(inode(&first.path), inode(&stored));
    let mtime = stored.metadata().unwrap().modified().unwrap();
    let ref_path = Layout::new(home.path()).bundle_ref(first.key.as_ref().unwrap());
    assert_eq!(
        std::fs::read_to_string(&ref_path).unwrap().lines().next(),
        Some(first.digest.to_string().as_str())
    );

    let again = bundle(&v, out.path(), Role::Worker);
    assert_eq!(again.source, Source::Reused);
    assert_eq!(again.digest, first.digest);
    assert_eq!(inode(&again.path), inode(&stored));
    assert_eq!(
        stored.metadata().unwrap().modified().unwrap(),
        mtime,
        "not rewritten"
    );

    // Another cluster from the same toolchain: a link to the same blob.
    let other = tempfile::tempdir().unwrap();
    let b = bundle(&v, other.path(), Role::Worker);
    assert_eq!(b.source, Source::Reused);
    assert_eq!(inode(&b.path), inode(&stored));
    // An output replaced by something else is put back.
    std::fs::remove_file(&b.path).unwrap();
    std::fs::write(&b.path, b"junk").unwrap();
    let b = bundle(&v, other.path(), Role::Worker);
    assert_eq!(b.source, Source::Reused);
    assert_eq!(inode(&b.path), inode(&stored));
    // No temporary file left anywhere.
    let leftovers: Vec<_> = std::fs::read_dir(other.path().join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn changing_one_binary_makes_a_new_bundle_and_keeps_the_other_role_s() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let w1 = bundle(&v, out.path(), Role::Worker);
    let c1 = bundle(&v, out.path(), Role::ControlPlane);
    // A new kubelet (only the worker bundle holds it), installed as kbin would: new blob,
    // new receipt digest.
    let v = install(home.path(), "t", |b| u32::from(b == "kubelet"));
    let w2 = bundle(&v, out.path(), Role::Worker);
    let c2 = bundle(&v, out.path(), Role::ControlPlane);
    assert_eq!(w2.source, Source::Made);
    assert_ne!(w2.key, w1.key);
    assert_ne!(w2.digest, w1.digest);
    assert_eq!(sha256(&w2.path), w2.digest);
    assert_eq!(c2.source, Source::Reused);
    assert_eq!(c2.digest, c1.digest);
}

#[test]
fn a_binary_edited_by_hand_is_hashed_rather_than_trusted_from_the_receipt() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let first = bundle(&v, out.path(), Role::Worker);
    // Replaced in the toolchain without a new receipt: no longer the blob the receipt names.
    let runc = v.toolchain_dir.as_ref().unwrap().join("bin/runc");
    std::fs::remove_file(&runc).unwrap();
    std::fs::write(&runc, b"#!/bin/sh\necho patched runc\n").unwrap();
    let b = bundle(&v, out.path(), Role::Worker);
    assert_eq!(b.source, Source::Made);
    assert_ne!(b.key, first.key);
}

#[test]
fn a_damaged_stored_bundle_is_detected_removed_and_made_again() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let first = bundle(&v, out.path(), Role::Worker);
    let good = std::fs::read(&first.path).unwrap();
    let stored = blob(home.path(), &first);
    let damaged = inode(&stored);
    // Flip one byte in the middle of the blob (the output is the same file: damaged too). Same
    // size; file times tick every few ms, so wait for the next tick as any later write would.
    wait_for_the_clock_to_tick_past(&stored);
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o555)).unwrap();

    let b = bundle(&v, out.path(), Role::Worker);
    assert_eq!(b.source, Source::Made, "a damaged blob is never served");
    assert_eq!(b.digest, first.digest, "the same bytes, made again");
    assert_eq!(std::fs::read(&b.path).unwrap(), good);
    assert_eq!(sha256(&blob(home.path(), &b)), b.digest);
    assert_ne!(
        inode(&b.path),
        damaged,
        "a new file, not the damaged one rewritten"
    );
}

/// Until a file made now gets a ctime later than `path`'s: file times advance by a kernel tick
/// (a few ms), and a write within the tick of the last hash would leave every time unchanged.
/// Observed, not slept on.
fn wait_for_the_clock_to_tick_past(path: &Path) {
    let then = std::fs::metadata(path).unwrap();
    let then = (then.ctime(), then.ctime_nsec());
    let probe = path.with_file_name(".clock-probe");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        std::fs::write(&probe, b"").unwrap();
        let now = std::fs::metadata(&probe).unwrap();
        std::fs::remove_file(&probe).unwrap();
        if (now.ctime(), now.ctime_nsec()) > then {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file clock never moved"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_same_size_rewrite_with_its_mtime_put_back_is_not_served_as_verified() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let first = bundle(&v, out.path(), Role::Worker);
    let good = std::fs::read(&first.path).unwrap();
    let stored = blob(home.path(), &first);
    let mtime = stored.metadata().unwrap().modified().unwrap();
    wait_for_the_clock_to_tick_past(&stored);
    // The same size, the same inode, and the mtime put back as `touch -d` or a tool that
    // preserves times would: only the ctime (which nobody can set) tells.
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stored)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o555)).unwrap();
    assert_eq!(stored.metadata().unwrap().modified().unwrap(), mtime);

    let b = bundle(&v, out.path(), Role::Worker);
    assert_eq!(b.source, Source::Made, "a rewritten blob is never served");
    assert_eq!(std::fs::read(&b.path).unwrap(), good);
    assert_eq!(sha256(&blob(home.path(), &b)), b.digest);
}

#[test]
fn bundles_are_byte_identical_across_stores_and_runs() {
    let (h1, h2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (v1, v2) = (
        install(h1.path(), "a", |_| 7),
        install(h2.path(), "b", |_| 7),
    );
    let (o1, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for role in [Role::Worker, Role::ControlPlane] {
        let (a, b) = (bundle(&v1, o1.path(), role), bundle(&v2, o2.path(), role));
        assert_eq!((a.source, b.source), (Source::Made, Source::Made));
        assert_eq!(a.key, b.key);
        assert_eq!(a.digest, b.digest);
        assert_eq!(
            std::fs::read(&a.path).unwrap(),
            std::fs::read(&b.path).unwrap()
        );
    }
}

#[test]
fn two_runs_at_once_compress_the_bundle_once() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let (o1, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| bundle(&v, o1.path(), Role::Worker));
        let b = s.spawn(|| bundle(&v, o2.path(), Role::Worker));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut sources = [a.source, b.source];
    sources.sort_by_key(|s| *s == Source::Reused);
    assert_eq!(sources, [Source::Made, Source::Reused]);
    assert_eq!(inode(&a.path), inode(&b.path));
}

#[test]
fn gen_cluster_rerun_and_gen_node_reuse_the_bundles_the_first_run_made() {
    let home = tempfile::tempdir().unwrap();
    install(home.path(), "1.35", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let gen_ = |args: &[&str]| -> serde_json::Value {
        let o = cargo_bin_cmd!("kbin")
            .env("KBIN_HOME", home.path())
            .env_remove("KBIN_MANIFEST")
            .args(["gen"])
            .args(args)
            .arg("--json")
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let sources = |r: &serde_json::Value| -> Vec<String> {
        r["configs"]["shared_bundles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["source"].as_str().unwrap().to_owned())
            .collect()
    };
    let nodes = [
        "cluster",
        "--control-plane",
        "cp1=10.0.0.10",
        "--worker",
        "w1=10.0.0.21",
    ];
    let first = gen_(&nodes);
    assert_eq!(sources(&first), ["made", "made"]);
    let worker = dir.join("bundles/worker-amd64-binaries.tar.gz");
    let before = (
        inode(&worker),
        worker.metadata().unwrap().modified().unwrap(),
    );
    let again = gen_(&nodes);
    assert_eq!(sources(&again), ["reused", "reused"]);
    assert_eq!(
        (
            inode(&worker),
            worker.metadata().unwrap().modified().unwrap()
        ),
        before
    );
    // Another toolchain became the default since: gen node still pins the new node to the
    // tree's own toolchain (its bundles, reused).
    install(home.path(), "other", |_| 1);
    let o = cargo_bin_cmd!("kbin")
        .env("KBIN_HOME", home.path())
        .args(["default", "other"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let node = gen_(&["node", "w2=10.0.0.22"]);
    assert_eq!(sources(&node), ["reused", "reused"]);
    assert_eq!(inode(&worker), before.0);
    let record = std::fs::read_to_string(dir.join("versions.toml")).unwrap();
    assert!(record.contains("origin = \"toolchain 1.35\""), "{record}");
}

#[test]
fn a_kbin_home_that_cannot_keep_the_bundle_still_gets_one_made_without_the_store() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    // The toolchain's binaries stay (hardlinks), but cache/ can no longer be a directory.
    let cache = Layout::new(home.path()).cache_dir();
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::write(&cache, b"not a directory").unwrap();
    let out = tempfile::tempdir().unwrap();
    let b = bundle(&v, out.path(), Role::Worker);
    assert_eq!(b.source, Source::Uncached);
    assert_eq!(b.key, None);
    assert_eq!(sha256(&b.path), b.digest);
    let st = Command::new("gzip")
        .arg("-t")
        .arg(&b.path)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_touched_but_intact_bundle_is_hashed_again_reused_and_not_hashed_a_third_time() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let first = bundle(&v, out.path(), Role::Worker);
    let ref_path = Layout::new(home.path()).bundle_ref(first.key.as_ref().unwrap());
    let stamp = || {
        std::fs::read_to_string(&ref_path)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let made = stamp();
    assert!(made.starts_with("verified size="), "{made}");
    // A new mtime, the same bytes.
    let stored = blob(home.path(), &first);
    let f = std::fs::File::open(&stored).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1))
        .unwrap();
    let b = bundle(&v, out.path(), Role::Worker);
    assert_eq!(b.source, Source::Reused);
    assert_eq!(b.digest, first.digest);
    let rehashed = stamp();
    assert_ne!(rehashed, made, "the new stamp is recorded");
    assert!(rehashed.contains("mtime_ns=1000000000 "), "{rehashed}");
    let b = bundle(&v, out.path(), Role::Worker);
    assert_eq!(b.source, Source::Reused);
    assert_eq!(stamp(), rehashed);
}

#[test]
fn a_truncated_stored_bundle_is_made_again() {
    let home = tempfile::tempdir().unwrap();
    let v = install(home.path(), "t", |_| 0);
    let out = tempfile::tempdir().unwrap();
    let first = bundle(&v, out.path(), Role::ControlPlane);
    let stored = blob(home.path(), &first);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&stored)
        .unwrap();
    f.set_len(stored.metadata().unwrap().len() / 2).unwrap();
    drop(f);
    let b = bundle(&v, out.path(), Role::ControlPlane);
    assert_eq!(b.source, Source::Made);
    assert_eq!(sha256(&b.path), first.digest);
}
