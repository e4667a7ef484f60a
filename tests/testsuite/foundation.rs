//! The foundation, through the real binary: the CLI surface, the embedded manifest and its
//! generator script, resolution errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;

fn kbin(home: &Path) -> assert_cmd::Command {
    let mut c = cargo_bin_cmd!("kbin");
    c.env("KBIN_HOME", home)
        .env_remove("KBIN_MANIFEST")
        .env_remove("KBIN_MIRROR");
    c
}

#[test]
fn help_lists_every_command() {
    let home = tempfile::tempdir().unwrap();
    let out = kbin(home.path()).arg("--help").assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for cmd in [
        "install",
        "build",
        "show-versions",
        "env",
        "gen",
        "certs",
        "cache",
        "uninstall",
        "default",
        "completions",
    ] {
        assert!(
            text.contains(&format!("\n  {cmd} ")),
            "--help lacks {cmd}:\n{text}"
        );
    }
}

#[test]
fn a_commands_help_lists_its_own_options_first_and_the_global_ones_under_their_heading() {
    let home = tempfile::tempdir().unwrap();
    for (cmd, own) in [
        ("install", "--only"),
        ("env", "--cluster"),
        ("build", "--ref"),
    ] {
        let out = kbin(home.path()).args([cmd, "--help"]).assert().success();
        let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        let (mine, global) = text
            .split_once("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{cmd} --help has no Global options heading:\n{text}"));
        assert!(
            mine.contains("\nOptions:\n") && mine.contains(own),
            "{text}"
        );
        for g in [
            "--home",
            "--manifest",
            "--mirror",
            "--json",
            "--verbose",
            "--quiet",
        ] {
            assert!(
                global.contains(g) && !mine.contains(g),
                "{g} in {cmd} --help:\n{text}"
            );
        }
    }
}

#[test]
fn available_versions_are_json_with_minors_1_28_to_1_36() {
    let home = tempfile::tempdir().unwrap();
    let out = kbin(home.path())
        .args(["show-versions", "--available", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let minors = v["minors"].as_array().unwrap();
    for n in 28..=36 {
        let m = minors
            .iter()
            .find(|m| m["minor"] == format!("1.{n}"))
            .unwrap_or_else(|| panic!("1.{n} missing"));
        for c in [
            "kubernetes",
            "etcd",
            "containerd",
            "runc",
            "cni-plugins",
            "crictl",
        ] {
            assert!(m["components"][c].is_string(), "1.{n} lacks {c}");
        }
        assert!(m["images"]["pause"].is_string());
        assert!(
            m["pinned"]["amd64"]["kubelet"].as_bool().unwrap(),
            "1.{n} kubelet unpinned"
        );
    }
    // Reporting is read-only: KBIN_HOME stays empty.
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0);
}

#[test]
fn available_versions_as_a_table() {
    let home = tempfile::tempdir().unwrap();
    kbin(home.path())
        .args(["show-versions", "--available"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1.30   1.30.14  3.5.16"))
        .stdout(predicate::str::contains(
            "1.37   1.37.0   (no defaults yet)",
        ));
}

/// Every pin in toolchains.toml is a row of data/upstream/checksums.tsv, every row is a pin, and
/// the committed generated block is exactly what the script writes.
#[test]
fn pins_come_from_the_table_and_the_script_output_is_committed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tsv = std::fs::read_to_string(root.join("data/upstream/checksums.tsv")).unwrap();
    let mut rows = BTreeMap::new();
    for line in tsv.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        rows.insert(
            format!("{}/{}/{}", c[0], c[1], c[2]),
            format!("{}:{}", c[3], c[4]),
        );
    }
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("toolchains.toml")).unwrap()).unwrap();
    let pins: BTreeMap<String, String> = manifest["pins"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(pins, rows);

    let status = Command::new("python3")
        .arg(root.join("scripts/update-manifest"))
        .arg("--check")
        .status()
        .expect("python3 runs scripts/update-manifest");
    assert!(
        status.success(),
        "toolchains.toml is not what scripts/update-manifest writes"
    );
}

#[test]
fn update_manifest_rewrites_only_its_block_and_rejects_bad_tables() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("toolchains.toml");
    let original = std::fs::read_to_string(root.join("toolchains.toml")).unwrap();
    // A manifest whose generated block is stale (one pin dropped) is brought back.
    let stale = original.replacen("\"crictl/amd64/1.25.0\"", "\"crictl/amd64/0.0.1\"", 1);
    std::fs::write(&manifest, &stale).unwrap();
    let script = root.join("scripts/update-manifest");
    let run = |args: &[&str]| {
        Command::new("python3")
            .arg(&script)
            .args(args)
            .arg("--manifest")
            .arg(&manifest)
            .output()
            .unwrap()
    };
    assert!(!run(&["--check"]).status.success());
    assert!(run(&[]).status.success());
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), original);

    // A malformed digest in the input table: one clear error, manifest untouched.
    let bad = dir.path().join("bad.tsv");
    let tsv = std::fs::read_to_string(root.join("data/upstream/checksums.tsv")).unwrap();
    let mut lines: Vec<String> = tsv.lines().map(String::from).collect();
    let mut cells: Vec<String> = lines[1].split('\t').map(String::from).collect();
    cells[4] = "xyz".into();
    lines[1] = cells.join("\t");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let out = run(&["--checksums", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.tsv:2") && err.contains("lowercase hex"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), original);
}

#[test]
fn a_manifest_with_the_wrong_schema_is_refused_with_its_path() {
    let home = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("toolchains.toml"))
        .unwrap()
        .replacen("schema = 1", "schema = 7", 1);
    let path = home.path().join("m.toml");
    std::fs::write(&path, text).unwrap();
    kbin(home.path())
        .env("KBIN_MANIFEST", &path)
        .args(["show-versions", "--available"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "has schema 7, but this kbin reads schema 1",
        ))
        .stderr(predicate::str::contains(path.to_str().unwrap()))
        .stderr(predicate::str::contains("hint:"));
}

#[test]
fn an_unreadable_manifest_is_one_clear_error() {
    let home = tempfile::tempdir().unwrap();
    kbin(home.path())
        .args([
            "--manifest",
            "/nonexistent/m.toml",
            "show-versions",
            "--available",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::starts_with(
            "error: cannot read the manifest /nonexistent/m.toml",
        ));
}

#[test]
fn a_malformed_with_is_refused_by_the_parser() {
    let home = tempfile::tempdir().unwrap();
    kbin(home.path())
        .args(["install", "1.30", "--with", "etcd"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("is not NAME=VERSION"));
}

#[test]
fn completions_are_generated_for_each_shell() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        kbin(home.path())
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains("show-versions"));
    }
}

#[test]
fn resolution_errors_carry_a_hint_naming_the_next_step() {
    use kbin::manifest::resolve::Request;
    let m = kbin::manifest::Manifest::embedded().unwrap();
    let hints = |version: &str, with: &[&str], allow_skew: bool| {
        let req = Request {
            version: version.into(),
            overrides: with.iter().map(|w| w.parse().unwrap()).collect(),
            allow_skew,
        };
        kbin::error::hints(&kbin::cli::resolve(&m, &req).unwrap_err())
    };
    assert!(hints("1.30.99", &[], false)[0].contains("kbin show-versions --available"));
    let h = hints("1.37", &[], false);
    assert!(
        h[0].contains("install 1.36") && h[0].contains("--with etcd=X.Y.Z"),
        "{h:?}"
    );
    assert!(hints("1.30", &["etcd=3.6.14"], false)[0].contains("--allow-skew"));
}
