//! `kbin gen cluster --diff`: it writes nothing, it predicts exactly the files a real run then
//! changes, and each change names the version-table rows behind it (as the table predicts for
//! the two versions), with their upstream sources.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use assert_cmd::cargo::cargo_bin_cmd;
use common::toolchain::{FixtureToolchain, write_toolchain};
use kbin::r#gen::versions::Versions;
use kbin::manifest::Manifest;
use kbin::manifest::resolve::{Request, resolve};

fn kbin(home: &Path) -> assert_cmd::Command {
    let mut c = cargo_bin_cmd!("kbin");
    c.env("KBIN_HOME", home).env_remove("KBIN_MANIFEST");
    c
}

/// `gen cluster` of the test's two nodes into `out` for Kubernetes `version` of the manifest.
fn generate(home: &Path, out: &Path, version: &str) {
    kbin(home)
        .args(["gen", "cluster", "--cgroup-v1", "-q", "--out"])
        .arg(out)
        .args(["--kubernetes-version", version])
        .args(NODES)
        .assert()
        .success();
}

const NODES: &[&str] = &[
    "--control-plane",
    "cp1=10.0.0.10",
    "--worker",
    "w1=10.0.0.21",
    "--host-profile",
    "systemd",
];

/// Every file under `dir` but the lock, with its mode and content (tarballs and bundles are
/// deterministic: a diff must predict them too).
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for rel in kbin::fsx::files_under(dir).unwrap() {
        let rel = rel.to_string_lossy().into_owned();
        if rel == ".kbin.lock" {
            continue;
        }
        let p = dir.join(&rel);
        let m = std::fs::metadata(&p).unwrap();
        out.insert(rel, (m.mode() & 0o7777, std::fs::read(&p).unwrap()));
    }
    out
}

/// Every path (files and directories, temporaries included) under `dir`, with mtimes.
fn entries(dir: &Path) -> BTreeSet<(String, i64)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            out.insert((
                e.path().display().to_string(),
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
            ));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn changed(
    a: &BTreeMap<String, (u32, Vec<u8>)>,
    b: &BTreeMap<String, (u32, Vec<u8>)>,
) -> BTreeSet<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// The knob names whose table row differs between two Kubernetes versions of the manifest.
fn predicted_rules(from: &str, to: &str) -> BTreeSet<String> {
    let m = Manifest::embedded().unwrap();
    let decide = |v: &str| {
        let res = resolve(
            &m,
            &Request {
                version: v.into(),
                ..Default::default()
            },
        )
        .unwrap();
        let d = Versions::from_resolution(&res, kbin::manifest::Arch::Amd64)
            .unwrap()
            .decide()
            .unwrap();
        d.rules()
            .map(|r| (r.knob.name().to_owned(), format!("{:?}", r.value)))
            .collect::<BTreeMap<_, _>>()
    };
    let (a, b) = (decide(from), decide(to));
    b.iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn diff_json(home: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let o = kbin(home)
        .args(["gen", "cluster", "--cgroup-v1", "--diff", "--json", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_diff_predicts_exactly_what_the_run_then_changes_with_the_rules_behind_it() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("c");
    let gen_at = |v: &str| generate(home.path(), &out, v);
    // Every minor kbin has defaults for, one after another: each boundary of the table is
    // crossed, and each changed row must land on a changed file.
    let minors = [
        "1.28", "1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35", "1.36",
    ];
    gen_at(minors[0]);
    for pair in minors.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        let before = snapshot(&out);
        let before_entries = entries(work.path());
        let plan = diff_json(home.path(), &out, &["--kubernetes-version", to]);
        assert_eq!(
            entries(work.path()),
            before_entries,
            "--diff wrote, removed or touched something"
        );

        // The rules it names are exactly the rows that differ, each with its source.
        let named: BTreeSet<String> = plan["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["knob"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(named, predicted_rules(from, to), "{from} → {to}");
        for r in plan["rules"].as_array().unwrap() {
            assert!(!r["source"].as_str().unwrap().is_empty(), "{r}");
            let on_a_file = plan["files"].as_array().unwrap().iter().any(|f| {
                f["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["knob"] == r["knob"])
            });
            assert!(on_a_file, "rule {} is on no changed file", r["knob"]);
        }

        // The files it lists are exactly those the real run then changes.
        gen_at(to);
        let after = snapshot(&out);
        let listed: BTreeSet<String> = plan["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, changed(&before, &after), "{from} → {to}");

        // Over the tree it describes, a diff says nothing and succeeds.
        let o = kbin(home.path())
            .args(["gen", "cluster", "--cgroup-v1", "--diff", "--out"])
            .arg(&out)
            .args(["--kubernetes-version", to])
            .output()
            .unwrap();
        assert!(o.status.success());
        assert_eq!(String::from_utf8_lossy(&o.stdout), "", "{from} → {to}");
        assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    }
}

#[test]
fn the_text_names_each_rule_its_source_and_the_lines_it_changes() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("c");
    generate(home.path(), &out, "1.34");
    let o = kbin(home.path())
        .args(["gen", "cluster", "--cgroup-v1", "--diff", "--out"])
        .arg(&out)
        .args(["--kubernetes-version", "1.35"])
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    // etcd 3.5 → 3.6 replaces the experimental flag: the etcd unit of the control plane.
    let etcd = text
        .split("\nnode cp1:\n")
        .nth(1)
        .expect("a section for node cp1")
        .split("\nnode ")
        .next()
        .unwrap();
    assert!(
        etcd.contains("~ /etc/systemd/system/etcd.service"),
        "{text}"
    );
    assert!(
        etcd.contains("rule: etcd initial corruption check"),
        "{etcd}"
    );
    assert!(etcd.contains("etcd CHANGELOG-3.6"), "{etcd}");
    assert!(
        etcd.contains("-  --experimental-initial-corrupt-check=true"),
        "{etcd}"
    );
    assert!(
        etcd.contains("+  --feature-gates=InitialCorruptCheck=true"),
        "{etcd}"
    );
    // kubelet 1.35 refuses cgroup v1 unless told: the worker's kubelet config.
    let w1 = text.split("\nnode w1:\n").nth(1).expect("a section for w1");
    assert!(w1.contains("~ /var/lib/kubelet/config.yaml"), "{w1}");
    assert!(
        w1.contains("rule: kubelet on cgroup v1: runs → refuses"),
        "{w1}"
    );
    assert!(w1.contains("+failCgroupV1: false"), "{w1}");
    // Secrets are never printed.
    assert!(!text.contains("BEGIN"), "{text}");
}

#[test]
fn binaries_from_a_new_toolchain_show_as_changed_binaries_with_their_versions() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("c");
    for (name, k, etcd, containerd) in [
        ("old", "1.35.8", "3.6.10", "2.2.3"),
        ("new", "1.36.4", "3.6.14", "2.3.4"),
    ] {
        let fixture = FixtureToolchain::full(
            name,
            k,
            |c| match c {
                "etcd" => etcd,
                "containerd" => containerd,
                "runc" => "1.4.2",
                "cni-plugins" => "1.9.1",
                _ => "1.35.0",
            },
            ("1.12.4", "3.10.1"),
        );
        write_toolchain(home.path(), &fixture, |b, v| {
            format!("#!/bin/sh\necho {b} {v}\n")
        });
    }
    kbin(home.path())
        .args([
            "gen",
            "cluster",
            "--cgroup-v1",
            "-q",
            "--toolchain",
            "old",
            "--out",
        ])
        .arg(&out)
        .args(NODES)
        .assert()
        .success();
    let plan = diff_json(home.path(), &out, &["--toolchain", "new"]);
    let files = plan["files"].as_array().unwrap();
    let kubelet = files
        .iter()
        .find(|f| f["path"] == "nodes/w1/usr/local/bin/kubelet")
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert_eq!(kubelet["opaque"], "binary");
    assert_eq!(kubelet["versions"][0]["from"], "1.35.8");
    assert_eq!(kubelet["versions"][0]["to"], "1.36.4");
    // runc did not move: its binary is not listed.
    assert!(
        !files
            .iter()
            .any(|f| f["path"] == "nodes/w1/usr/local/bin/runc"),
        "{plan:#}"
    );
}

#[test]
fn a_diff_where_no_tree_is_lists_every_file_as_new_and_creates_nothing() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("c");
    let plan = diff_json(
        home.path(),
        &out,
        &[&["--kubernetes-version", "1.36"][..], NODES].concat(),
    );
    assert!(!out.exists(), "the directory was created");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "temporaries left"
    );
    let files = plan["files"].as_array().unwrap();
    assert!(files.iter().all(|f| f["kind"] == "added"), "{plan:#}");
    for must in [
        "cluster.toml",
        "versions.toml",
        "pki/ca.crt",
        "nodes/w1/var/lib/kubelet/config.yaml",
    ] {
        assert!(files.iter().any(|f| f["path"] == must), "{must} not listed");
    }
}

#[test]
fn a_damaged_version_record_is_one_error_and_the_tree_is_untouched() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("c");
    generate(home.path(), &out, "1.35");
    std::fs::write(out.join("versions.toml"), "kubernetes = [").unwrap();
    let before = entries(work.path());
    let o = kbin(home.path())
        .args(["gen", "cluster", "--cgroup-v1", "--diff", "--out"])
        .arg(&out)
        .args(["--kubernetes-version", "1.36"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("versions.toml"), "{err}");
    assert!(err.contains("regenerate the tree without --diff"), "{err}");
    assert_eq!(entries(work.path()), before);
}

#[test]
fn a_tree_from_before_version_records_is_diffed_with_a_warning() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("c");
    generate(home.path(), &out, "1.35");
    std::fs::remove_file(out.join("versions.toml")).unwrap();
    let o = kbin(home.path())
        .args(["gen", "cluster", "--cgroup-v1", "--diff", "--out"])
        .arg(&out)
        .args(["--kubernetes-version", "1.35"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("records no versions"), "{err}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("+ versions.toml"), "{text}");
    assert_eq!(
        text.matches("\n  ").count(),
        1,
        "only the record is new: {text}"
    );
}
