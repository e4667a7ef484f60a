//! `kbin gen cluster` writes its tree whole: a file in the way, an interrupt or a closed pipe
//! leaves the previous tree exactly as it was (or finishes it), and two runs on one directory
//! take turns.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kbin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kbin"))
}

fn gen_cmd(home: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(kbin_path());
    c.env("KBIN_HOME", home)
        .env_remove("KBIN_MANIFEST")
        .args(["gen", "cluster", "--kubernetes-version", "1.36", "--out"])
        .arg(out)
        .args([
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
        ])
        .args(extra);
    c
}

/// Every file under `root` (but the lock file) with its mode and bytes.
fn snapshot(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".kbin.lock" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(format!("{rel}/"), (meta.permissions().mode(), Vec::new()));
                stack.push(p);
            } else {
                out.insert(rel, (meta.permissions().mode(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn assert_same(before: &BTreeMap<String, (u32, Vec<u8>)>, root: &Path) {
    let after = snapshot(root);
    let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let gone: Vec<_> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k).is_some_and(|a| a != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        added.is_empty() && gone.is_empty() && changed.is_empty(),
        "the previous tree changed: added {added:?}, removed {gone:?}, changed {changed:?}"
    );
}

/// Until a kbin run holds `dir`'s lock (its lock file exists and is locked by someone).
fn wait_for_lock(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(f) = std::fs::File::open(dir.join(".kbin.lock")) {
            match f.try_lock_shared() {
                Err(std::fs::TryLockError::WouldBlock) => return,
                _ => drop(f),
            }
        }
        assert!(Instant::now() < deadline, "no run ever took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One error, said once, and no line claiming something was made.
fn assert_one_clear_error(o: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(what), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        !err.contains("created") && !said.contains("created"),
        "nothing was created, nothing may say so: {err}{said}"
    );
}

#[test]
fn a_file_named_nodes_in_a_new_directory_fails_with_nothing_written_or_announced() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("nodes"), "a file where the node trees go\n").unwrap();
    let before = snapshot(&dir);
    let o = gen_cmd(home.path(), &dir, &[]).output().unwrap();
    assert_one_clear_error(&o, "nodes");
    assert_same(&before, &dir);
}

#[test]
fn a_toolchain_without_the_control_plane_binaries_fails_before_anything_is_written() {
    let home = tempfile::tempdir().unwrap();
    // `kbin install 1.35 --only etcd --default`: a receipt with etcd alone.
    let fixture = common::toolchain::FixtureToolchain {
        name: "etcd-only",
        kubernetes: "1.35.8",
        components: vec![("etcd", "3.6.10", &["etcd", "etcdctl", "etcdutl"][..])],
        images: None,
        artifacts: false,
        real_digests: false,
    };
    common::toolchain::write_toolchain(home.path(), &fixture, |b, _| {
        format!("#!/bin/sh\necho {b}\n")
    });
    std::fs::write(
        home.path().join("settings.toml"),
        "default = \"etcd-only\"\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = Command::new(kbin_path())
        .env("KBIN_HOME", home.path())
        .env_remove("KBIN_MANIFEST")
        .args(["gen", "cluster", "--out"])
        .arg(&dir)
        .args([
            "--control-plane",
            "cp1=10.0.0.10",
            "--worker",
            "w1=10.0.0.21",
        ])
        .output()
        .unwrap();
    assert_one_clear_error(&o, "has no kube-apiserver");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("hint:") && err.contains("--no-binaries"),
        "{err}"
    );
    assert!(!dir.exists(), "the output directory was made");
}

#[test]
fn gen_node_that_cannot_place_its_tree_leaves_no_empty_pki_directory() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = gen_cmd(home.path(), &dir, &[]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(dir.join("nodes/w2"), "a file where w2's tree goes\n").unwrap();
    let before = snapshot(&dir);
    let o = Command::new(kbin_path())
        .env("KBIN_HOME", home.path())
        .env_remove("KBIN_MANIFEST")
        .args([
            "gen",
            "node",
            "w2=10.0.0.22",
            "--kubernetes-version",
            "1.36",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_one_clear_error(&o, "nodes/w2");
    assert_same(&before, &dir);
}

#[test]
fn networks_that_swallow_a_node_or_the_api_address_are_refused_with_nothing_written() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--pod-cidr", "10.0.0.0/16"],
            "node cp1's IP 10.0.0.10 is inside the pod CIDR 10.0.0.0/16",
        ),
        (
            &["--service-cidr", "10.0.0.0/24"],
            "node cp1's IP 10.0.0.10 is inside the service CIDR 10.0.0.0/24",
        ),
        (
            &["--cluster-ip", "10.200.7.1"],
            "--cluster-ip 10.200.7.1 is inside the pod CIDR 10.200.0.0/16",
        ),
        (
            &["--cluster-ip", "10.32.0.10"],
            "--cluster-ip 10.32.0.10 is the cluster DNS address",
        ),
    ];
    for (flags, want) in cases {
        let o = gen_cmd(home.path(), &dir, flags).output().unwrap();
        assert_one_clear_error(&o, want);
        assert!(!dir.exists(), "{flags:?}: the output directory was made");
    }
}

#[test]
fn a_crash_while_node_trees_are_swapped_leaves_each_tree_old_or_new_never_missing() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = gen_cmd(home.path(), &dir, &[]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = snapshot(&dir);
    // --force makes new certificates, so every node tree changes; the fault point (debug
    // builds) aborts the process right after the first tree was swapped in.
    let o = gen_cmd(home.path(), &dir, &["--force"])
        .env("KBIN_FAULT", "tree-swap")
        .output()
        .unwrap();
    assert_eq!(
        o.status.signal(),
        Some(6),
        "the run was to abort at the fault point: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let after = snapshot(&dir);
    for node in ["cp1", "w1"] {
        let prefix = format!("nodes/{node}/");
        let files = |s: &BTreeMap<String, (u32, Vec<u8>)>| -> Vec<(String, u32)> {
            s.iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, (m, _))| (k.clone(), *m))
                .collect()
        };
        assert!(
            dir.join("nodes").join(node).is_dir(),
            "nodes/{node} is gone"
        );
        // Old or new, the tree is whole: every file of the old one, with its mode.
        assert_eq!(files(&after), files(&before), "nodes/{node} is not whole");
    }
    // The next run puts everything right and leaves nothing of the crashed one behind.
    let o = gen_cmd(home.path(), &dir, &[]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<String> = std::fs::read_dir(dir.join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["cp1", "cp1.tar.gz", "w1", "w1.tar.gz"]);
}

#[test]
fn a_file_in_the_way_fails_before_anything_is_written() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = gen_cmd(home.path(), &dir, &["--pki-only"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(dir.join("nodes"), "a file where the node trees go\n").unwrap();
    let before = snapshot(&dir);
    // --force would replace every certificate: none of it may land.
    let o = gen_cmd(home.path(), &dir, &["--force"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nodes"), "{err}");
    assert_same(&before, &dir);
}

#[test]
fn closed_stdout_and_stderr_do_not_stop_the_work_half_way() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    // `kbin gen cluster 2>&1 | head -0`: both pipes are closed before kbin writes a line.
    let mut child = gen_cmd(home.path(), &dir, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "no panic (101), the work is done");
    for rel in [
        "cluster.toml",
        "NEXT-STEPS.md",
        "nodes/w1.tar.gz",
        "nodes/cp1/etc/systemd/system/etcd.service",
        "pki/ca.crt",
    ] {
        assert!(dir.join(rel).is_file(), "{rel} missing");
    }
}

#[test]
fn sigint_mid_run_leaves_the_previous_tree_exactly_as_it_was() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let o = gen_cmd(home.path(), &dir, &[]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = snapshot(&dir);
    // RSA keys make the run last long enough to be interrupted while it works.
    let child = gen_cmd(home.path(), &dir, &["--force", "--key-algo", "rsa-3072"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The lock is taken after the signal handlers are installed and before any work: from then
    // on SIGINT is the run's to handle (RSA keys keep it working long after).
    wait_for_lock(&dir);
    let pid = child.id().to_string();
    let k = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "an interrupted run fails: {err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_same(&before, &dir);
}

#[test]
fn a_second_gen_on_the_same_directory_waits_for_the_first() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("cluster");
    let first = gen_cmd(home.path(), &dir, &["--key-algo", "rsa-3072"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until the first holds the lock, the second would simply go first.
    wait_for_lock(&dir);
    let second = gen_cmd(home.path(), &dir, &["--key-algo", "rsa-3072"])
        .output()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(err.contains("another kbin is writing"), "{err}");
    // The second found the first's tree complete and kept it.
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(said.contains(": 0 created, 0 replaced"), "{said}");
}

/// A tmpfs of `size` mounted at a new directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount is missing: run scripts/setup-test-deps");
        assert!(
            ok.success(),
            "mounting a tmpfs needs root (tests run as root here and in CI)"
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_fails_before_anything_is_written() {
    let home = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount("4m");
    let dir = fs.dir.path().join("cluster");
    let o = gen_cmd(home.path(), &dir, &["--pki-only"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Fill the disk but for a few KB: the node trees and tarballs cannot all be staged.
    let filler = fs.dir.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    let len = std::fs::metadata(&filler).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    f.set_len(len.saturating_sub(16 * 1024)).unwrap();
    drop(f);
    let before = snapshot(&dir);
    let o = gen_cmd(home.path(), &dir, &["--force"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a full disk must fail the run");
    assert!(err.contains("No space left"), "{err}");
    assert_same(&before, &dir);
}

/// `--out cluster` relative to the working directory, new and then again: the commit's sweep of
/// a crashed run's leftovers once took this run's own node trees for leftovers (their paths
/// were spelt absolute, the directory listed relative) and deleted them before the rename.
#[test]
fn a_relative_out_directory_is_written_and_rewritten_whole() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    for round in ["new", "again", "forced"] {
        let extra: &[&str] = if round == "forced" { &["--force"] } else { &[] };
        let o = gen_cmd(home.path(), Path::new("cluster"), extra)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut names: Vec<String> = std::fs::read_dir(work.path().join("cluster/nodes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cp1", "cp1.tar.gz", "w1", "w1.tar.gz"], "{round}");
        assert!(work.path().join("cluster/nodes/w1/etc/kubernetes").is_dir());
    }
}
