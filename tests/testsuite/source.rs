//! `kbin build --from-source` against real git repositories made here, cloned over file:// and
//! git:// (`git daemon` on 127.0.0.1), built with real make and real go.

use crate::common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin_cmd;
use common::git;
use common::toolchain::{FixtureToolchain, write_toolchain};

const KUBE: &str = "1.30.14";
const RUNC: &str = "1.1.14";
const CRICTL: &str = "1.30.0";

fn need(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(tool)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{tool} is missing: run scripts/setup-test-deps (the source tests need real git, make and go)"
    );
}

fn commit_all(dir: &Path, msg: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", msg]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A Makefile project whose `runc` target writes a script stamped with VERSION and COMMIT and
/// appends a line to $RUNS (outside the work tree) each time it runs.
fn make_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(
        dir.join("Makefile"),
        "runc:\n\techo ran >> $(RUNS)\n\tprintf '#!/bin/sh\\necho runc version $(VERSION) commit $(COMMIT)\\n' > runc\n\tchmod +x runc\n",
    )
    .unwrap();
    let c = commit_all(dir, "first");
    git(dir, &["tag", &format!("v{RUNC}")]);
    c
}

/// A Go module whose binary prints the version stamped by -ldflags.
fn go_repo(dir: &Path, go_line: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(
        dir.join("go.mod"),
        format!("module example.com/crictl\n\ngo {go_line}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("main.go"),
        "package main\n\nimport \"fmt\"\n\nvar version = \"unset\"\n\nfunc main() { fmt.Println(\"crictl version\", version) }\n",
    )
    .unwrap();
    let c = commit_all(dir, "first");
    git(dir, &["tag", &format!("v{CRICTL}")]);
    c
}

struct Fixture {
    tmp: tempfile::TempDir,
    manifest: PathBuf,
    runs: PathBuf,
}

impl Fixture {
    /// A manifest whose runc and crictl come from `runc_repo` and `crictl_repo`, and a
    /// toolchain "t" with downloaded-looking runc and crictl.
    fn new(runc_repo: &str, crictl_repo: &str, extra_runc: &str) -> Fixture {
        need("git");
        need("make");
        need("go");
        let tmp = tempfile::tempdir().unwrap();
        let runs = tmp.path().join("runs.txt");
        let real =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("toolchains.toml"))
                .unwrap();
        let hand = &real[..real.find("# ---- BEGIN GENERATED").unwrap()];
        // The real manifest without runc and crictl: the test's own come at the end.
        let mut table: toml::Table = toml::from_str(hand).unwrap();
        table["component"]
            .as_array_mut()
            .unwrap()
            .retain(|c| !matches!(c["name"].as_str(), Some("runc" | "crictl")));
        let mut text = toml::to_string(&table).unwrap();
        text.push('\n');
        text.push_str(&format!(
            "[release.\"1.30\"]\nlatest = \"{KUBE}\"\npatches = [\"{KUBE}\"]\n\
             defaults = {{ etcd = \"3.5.16\", containerd = \"1.7.23\", runc = \"{RUNC}\", cni-plugins = \"1.4.0\", crictl = \"{CRICTL}\" }}\n\
             images = {{ coredns = \"1.11.1\", pause = \"3.9\" }}\n\n[pins]\n\n"
        ));
        text.push_str(&format!(
            r#"[[component]]
name = "runc"
binaries = ["runc"]
repository = "{runc_repo}"
tag = "v{{version}}"
version-args = ["--version"]
{extra_runc}
[[component.artifact]]
pin = "runc"
url = "https://github.com/opencontainers/runc/releases/download/v{{version}}/runc.{{arch}}"
format = "binary"

[component.recipe]
command = ["make", "runc", "VERSION={{version}}", "COMMIT={{commit}}"]
env = {{ RUNS = "{runs}" }}
outputs = {{ runc = "runc" }}

[[component]]
name = "crictl"
binaries = ["crictl"]
repository = "{crictl_repo}"
tag = "v{{version}}"
version-args = ["--version"]

[[component.artifact]]
pin = "crictl"
url = "https://github.com/kubernetes-sigs/cri-tools/releases/download/v{{version}}/crictl-v{{version}}-linux-{{arch}}.tar.gz"
format = "tar.gz"
layout = "crictl"

[component.recipe]
command = ["go", "build", "-trimpath", "-ldflags", "-X main.version=v{{version}}", "-o", "build/crictl", "."]
outputs = {{ crictl = "build/crictl" }}
"#,
            runs = runs.display()
        ));
        let manifest = tmp.path().join("manifest.toml");
        std::fs::write(&manifest, text).unwrap();
        let f = Fixture {
            tmp,
            manifest,
            runs,
        };
        f.write_toolchain();
        f
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("kbin")
    }

    fn toolchain(&self) -> PathBuf {
        self.home().join("toolchains/t")
    }

    /// A minimal installed toolchain "t": runc and crictl as if downloaded.
    fn write_toolchain(&self) {
        let fixture = FixtureToolchain {
            name: "t",
            kubernetes: KUBE,
            components: vec![("runc", RUNC, &["runc"]), ("crictl", CRICTL, &["crictl"])],
            images: None,
            artifacts: true,
            real_digests: true,
        };
        write_toolchain(&self.home(), &fixture, |name, _| {
            format!("#!/bin/sh\necho downloaded {name}\n")
        });
    }

    fn kbin(&self) -> assert_cmd::Command {
        self.kbin_with_path(&std::env::var("PATH").unwrap())
    }

    fn kbin_with_path(&self, path: &str) -> assert_cmd::Command {
        let mut c = cargo_bin_cmd!("kbin");
        c.env_clear()
            .env("PATH", path)
            .env("HOME", self.tmp.path())
            .env("KBIN_HOME", self.home())
            .env("KBIN_MANIFEST", &self.manifest);
        c
    }

    fn build(&self, component: &str, extra: &[&str]) -> std::process::Output {
        let mut c = self.kbin();
        c.args(["build", "--from-source", component, "--toolchain", "t"])
            .args(extra);
        c.output().unwrap()
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(&self.runs)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn run_bin(&self, name: &str) -> String {
        let out = Command::new(self.toolchain().join("bin").join(name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn lock(&self) -> toml::Table {
        toml::from_str(&std::fs::read_to_string(self.toolchain().join("toolchain.lock")).unwrap())
            .unwrap()
    }

    fn component(&self, name: &str) -> toml::Table {
        self.lock()["component"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap()
            .as_table()
            .unwrap()
            .clone()
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// `git daemon` serving a directory on 127.0.0.1; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // git-daemon itself, not `git daemon`: the `git` wrapper would leave it orphaned on kill.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git is missing: run scripts/setup-test-deps");
        let daemon =
            PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let child = Command::new(daemon)
            .args([
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                "--reuseaddr",
                "--export-all",
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ])
            .spawn()
            .expect("git daemon: run scripts/setup-test-deps");
        let d = Daemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_tag_builds_over_file_url_installs_and_a_second_build_is_a_cache_hit() {
    let repos = tempfile::tempdir().unwrap();
    let commit = make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let o = f.build("runc", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(f.runs(), 1);
    assert_eq!(
        f.run_bin("runc"),
        format!("runc version {RUNC} commit {commit}")
    );
    let c = f.component("runc");
    assert_eq!(c["origin"].as_str(), Some("source"));
    let src = c["source"].as_table().unwrap();
    assert_eq!(src["ref"].as_str(), Some(format!("v{RUNC}").as_str()));
    assert_eq!(src["commit"].as_str(), Some(commit.as_str()));
    assert!(src["recipe"].as_str().unwrap().starts_with("sha256:"));
    assert!(src["outputs"].as_str().unwrap().starts_with("sha256:"));
    assert!(c.get("artifact").is_none(), "{c:?}");
    // crictl is untouched.
    assert_eq!(f.run_bin("crictl"), "downloaded crictl");
    // The work tree and log are under builds/, the mirror under git/.
    let log = walk(&f.home().join("builds"))
        .into_iter()
        .find(|p| p.ends_with("build.log"))
        .unwrap();
    assert!(std::fs::read_to_string(log).unwrap().contains("make runc"));
    assert!(
        walk(&f.home().join("git"))
            .iter()
            .any(|p| p.ends_with("HEAD"))
    );

    // Same inputs: the recipe does not run again.
    let o = f.build("runc", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cache hit"), "{}", text(&o));
    assert_eq!(f.runs(), 1, "the recipe ran again on a cache hit");
    assert_eq!(
        f.run_bin("runc"),
        format!("runc version {RUNC} commit {commit}")
    );

    // show-versions shows the provenance.
    let o = f.kbin().args(["show-versions", "t"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("source v{RUNC}@{}", &commit[..12])),
        "{}",
        text(&o)
    );
}

#[test]
fn a_go_module_builds_over_git_daemon_with_the_version_stamped_by_ldflags() {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    let commit = go_repo(&repos.path().join("crictl"), "1.19");
    let daemon = Daemon::start(repos.path());
    let f = Fixture::new(&daemon.url("runc"), &daemon.url("crictl"), "");
    let o = f.build("crictl", &["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["cache_hit"], false);
    assert_eq!(report["source"]["commit"], commit.as_str());
    assert!(report["source"]["go"].as_str().unwrap().starts_with("1."));
    assert_eq!(f.run_bin("crictl"), format!("crictl version v{CRICTL}"));
    let c = f.component("crictl");
    assert_eq!(
        c["binary"][0]["reports"].as_str(),
        Some(format!("crictl version v{CRICTL}").as_str())
    );
    assert!(
        c["source"]["repository"]
            .as_str()
            .unwrap()
            .starts_with("git://127.0.0.1")
    );
}

#[test]
fn source_overrides_the_repository_with_a_plain_local_path() {
    let repos = tempfile::tempdir().unwrap();
    let commit = make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    // The manifest points nowhere useful: --source is the internal mirror.
    let f = Fixture::new(
        "git://127.0.0.1:1/nothing",
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let o = f.build(
        "runc",
        &["--source", &repos.path().join("runc").display().to_string()],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        f.run_bin("runc"),
        format!("runc version {RUNC} commit {commit}")
    );
}

#[test]
fn a_moved_tag_against_a_pinned_commit_is_refused() {
    let repos = tempfile::tempdir().unwrap();
    let dir = repos.path().join("runc");
    let pinned = make_repo(&dir);
    go_repo(&repos.path().join("crictl"), "1.19");
    std::fs::write(dir.join("evil"), "x").unwrap();
    let moved = commit_all(&dir, "evil");
    git(&dir, &["tag", "-f", &format!("v{RUNC}")]);
    let f = Fixture::new(
        &file_url(&dir),
        &file_url(&repos.path().join("crictl")),
        &format!("commits = {{ \"{RUNC}\" = \"{pinned}\" }}\n"),
    );
    let o = f.build("runc", &[]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("the tag moved"), "{t}");
    assert!(t.contains(&pinned) && t.contains(&moved), "{t}");
    assert_eq!(f.runs(), 0);
    assert_eq!(f.run_bin("runc"), "downloaded runc");
}

#[test]
fn a_missing_ref_is_one_clear_error() {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let o = f.build("runc", &["--ref", "v9.9.9"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("has no tag or branch \"v9.9.9\""), "{t}");
    assert!(
        t.contains(&format!("v{RUNC}")),
        "the error lists refs it has: {t}"
    );
    assert!(t.contains("hint:"), "{t}");
}

#[test]
fn a_failing_build_shows_the_log_tail_and_the_rerun_command_and_installs_nothing() {
    let repos = tempfile::tempdir().unwrap();
    let dir = repos.path().join("runc");
    make_repo(&dir);
    go_repo(&repos.path().join("crictl"), "1.19");
    git(&dir, &["checkout", "-q", "-b", "broken"]);
    let mut mk = String::from("runc:\n");
    for i in 0..40 {
        mk.push_str(&format!("\t@echo line-{i}\n"));
    }
    mk.push_str("\t@echo boom >&2; exit 3\n");
    std::fs::write(dir.join("Makefile"), mk).unwrap();
    commit_all(&dir, "broken");
    let f = Fixture::new(&file_url(&dir), &file_url(&repos.path().join("crictl")), "");
    let before = std::fs::read(f.toolchain().join("toolchain.lock")).unwrap();
    let o = f.build("runc", &["--ref", "broken"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("boom") && t.contains("line-39"), "{t}");
    assert!(!t.contains("line-5\n"), "more than the tail was shown: {t}");
    assert!(t.contains("rerun it by hand: cd "), "{t}");
    assert!(t.contains("env -i") && t.contains("make runc"), "{t}");
    assert_eq!(f.run_bin("runc"), "downloaded runc");
    assert_eq!(
        std::fs::read(f.toolchain().join("toolchain.lock")).unwrap(),
        before
    );
    assert!(
        !f.home().join("builds/index").exists()
            || std::fs::read_dir(f.home().join("builds/index"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn a_new_commit_on_a_branch_is_rebuilt() {
    let repos = tempfile::tempdir().unwrap();
    let dir = repos.path().join("runc");
    make_repo(&dir);
    go_repo(&repos.path().join("crictl"), "1.19");
    let daemon = Daemon::start(repos.path());
    let f = Fixture::new(
        &daemon.url("runc"),
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let o = f.build("runc", &["--ref", "main"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(dir.join("README"), "new").unwrap();
    let second = commit_all(&dir, "second");
    let o = f.build("runc", &["--ref", "main"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("cache hit"), "{}", text(&o));
    assert_eq!(f.runs(), 2);
    assert_eq!(
        f.run_bin("runc"),
        format!("runc version {RUNC} commit {second}")
    );
    assert_eq!(f.component("runc")["source"]["ref"].as_str(), Some("main"));
}

/// A PATH holding only `make`, `sh` and, when given, a fake `go` printing `go_version`.
fn fake_path(dir: &Path, go_version: Option<&str>) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for tool in ["make", "sh"] {
        let real = which(tool);
        std::os::unix::fs::symlink(real, dir.join(tool)).unwrap();
    }
    if let Some(v) = go_version {
        let go = dir.join("go");
        std::fs::write(
            &go,
            format!("#!/bin/sh\necho go version go{v} linux/amd64\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&go, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir.display().to_string()
}

fn which(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is missing: run scripts/setup-test-deps"))
}

#[test]
fn a_missing_or_too_old_go_is_a_clear_error_naming_the_version_needed() {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.21");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let args = ["build", "--from-source", "crictl", "--toolchain", "t"];

    let path = fake_path(&f.tmp.path().join("no-go"), None);
    let o = f.kbin_with_path(&path).args(args).output().unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("needs go (1.21 or newer)") && t.contains("no go on PATH"),
        "{t}"
    );

    let path = fake_path(&f.tmp.path().join("old-go"), Some("1.20.3"));
    let o = f.kbin_with_path(&path).args(args).output().unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("needs Go 1.21 or newer (go.mod says so), but go on PATH is 1.20.3"),
        "{t}"
    );
    assert!(t.contains("hint: install Go 1.21"), "{t}");
    assert_eq!(f.run_bin("crictl"), "downloaded crictl");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The runc repository of [`make_repo`] with two more commits: `v1.5.1` tags the last, and an
/// older `v1.0.0` tags the first (whose Makefile differs, so its blob is not the tip's).
fn repo_with_history(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("Makefile"), "runc:\n\techo old > runc\n").unwrap();
    let old = commit_all(dir, "old");
    git(dir, &["tag", "v1.0.0"]);
    std::fs::write(dir.join("notes"), "middle").unwrap();
    commit_all(dir, "middle");
    std::fs::write(
        dir.join("Makefile"),
        "runc:\n\techo ran >> $(RUNS)\n\tprintf '#!/bin/sh\\necho runc version $(VERSION) commit $(COMMIT)\\n' > runc\n\tchmod +x runc\n",
    )
    .unwrap();
    let tip = commit_all(dir, "tip");
    git(dir, &["tag", "v1.5.1"]);
    git(dir, &["tag", &format!("v{RUNC}")]);
    (old, tip)
}

#[test]
fn a_version_tag_ref_is_recorded_as_the_version_it_builds() {
    let repos = tempfile::tempdir().unwrap();
    let (_, tip) = repo_with_history(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let o = f.build("runc", &["--ref", "v1.5.1"]);
    assert!(o.status.success(), "{}", text(&o));
    // The build line, the recipe's {version}, the lock and show-versions all say 1.5.1, not
    // the toolchain's 1.1.14.
    assert!(
        text(&o).contains("runc 1.5.1 into toolchain t"),
        "{}",
        text(&o)
    );
    assert_eq!(
        f.run_bin("runc"),
        format!("runc version 1.5.1 commit {tip}")
    );
    assert_eq!(f.component("runc")["version"].as_str(), Some("1.5.1"));
    let o = f.kbin().args(["show-versions", "t"]).output().unwrap();
    let shown = String::from_utf8_lossy(&o.stdout).into_owned();
    let row = shown
        .lines()
        .find(|l| l.trim_start().starts_with("runc"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(row.contains(" 1.5.1 ") && !row.contains(RUNC), "{row}");
    // A branch is not a version: the toolchain's runc version (now 1.5.1) stays.
    let o = f.build("runc", &["--ref", "main"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(f.component("runc")["version"].as_str(), Some("1.5.1"));
}

#[test]
fn shallow_and_partial_clones_work_as_source_and_fetch_only_the_ref() {
    let repos = tempfile::tempdir().unwrap();
    let upstream = repos.path().join("upstream");
    let (old, tip) = repo_with_history(&upstream);
    git(&upstream, &["config", "uploadpack.allowFilter", "true"]);
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        "git://127.0.0.1:1/nothing",
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let shallow = repos.path().join("shallow");
    let partial = repos.path().join("partial");
    let up = file_url(&upstream);
    git(
        repos.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &up,
            &shallow.display().to_string(),
        ],
    );
    git(
        repos.path(),
        &[
            "clone",
            "-q",
            "--filter=blob:none",
            &up,
            &partial.display().to_string(),
        ],
    );
    for clone in [&shallow, &partial] {
        let o = f.build(
            "runc",
            &[
                "--source",
                &clone.display().to_string(),
                "--ref",
                &format!("v{RUNC}"),
            ],
        );
        assert!(o.status.success(), "{}: {}", clone.display(), text(&o));
        assert_eq!(
            f.run_bin("runc"),
            format!("runc version {RUNC} commit {tip}")
        );
    }
    // The mirrors got the tip's commit and tree only: not the older commits.
    let mirrors: Vec<PathBuf> = walk(&f.home().join("git"))
        .into_iter()
        .filter(|p| p.ends_with("HEAD"))
        .map(|p| p.parent().unwrap().to_owned())
        .collect();
    assert_eq!(mirrors.len(), 2, "{mirrors:?}");
    for m in &mirrors {
        let has = |oid: &str| {
            Command::new("git")
                .arg("--git-dir")
                .arg(m)
                .args(["cat-file", "-e", oid])
                .status()
                .unwrap()
                .success()
        };
        assert!(has(&tip), "{}", m.display());
        assert!(!has(&old), "{} holds history it does not need", m.display());
    }
    // A ref whose blobs the partial clone never fetched: one clear error with the fix.
    let o = f.build(
        "runc",
        &[
            "--source",
            &partial.display().to_string(),
            "--ref",
            "v1.0.0",
        ],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("lacks objects that v1.0.0 needs"), "{t}");
    assert!(t.contains("hint:") && t.contains("checkout v1.0.0"), "{t}");
    // A ref the shallow clone does not have at all.
    let o = f.build(
        "runc",
        &[
            "--source",
            &shallow.display().to_string(),
            "--ref",
            "v1.0.0",
        ],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("has no tag or branch \"v1.0.0\""),
        "{}",
        text(&o)
    );
}

#[test]
fn repositories_go_through_the_mirror_flag_and_settings_mirrors() {
    let repos = tempfile::tempdir().unwrap();
    // A directory laid out like github.com: <mirror>/opencontainers/runc.
    let mirror = repos.path().join("mirror");
    let commit = make_repo(&mirror.join("opencontainers/runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        "https://github.com/opencontainers/runc",
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let o = f.build("runc", &["--mirror", &file_url(&mirror)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        f.run_bin("runc"),
        format!("runc version {RUNC} commit {commit}")
    );
    let repo = f.component("runc")["source"]["repository"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(repo, format!("{}/opencontainers/runc", file_url(&mirror)));
    // The same through settings.toml's per-host mirrors, into a toolchain that does not exist
    // yet: it is made with just runc, at the newest minor's default.
    std::fs::write(
        f.home().join("settings.toml"),
        format!("[mirrors]\n\"github.com\" = \"{}\"\n", file_url(&mirror)),
    )
    .unwrap();
    let o = f
        .kbin()
        .args(["build", "--from-source", "runc", "--toolchain", "fresh"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("into new toolchain fresh"),
        "{}",
        text(&o)
    );
    let lock: toml::Table = toml::from_str(
        &std::fs::read_to_string(f.home().join("toolchains/fresh/toolchain.lock")).unwrap(),
    )
    .unwrap();
    assert_eq!(lock["kubernetes"].as_str(), Some(KUBE));
    let comps = lock["component"].as_array().unwrap();
    assert_eq!(comps.len(), 1, "{comps:?}");
    assert_eq!(comps[0]["name"].as_str(), Some("runc"));
    assert_eq!(comps[0]["version"].as_str(), Some(RUNC));
    assert!(f.home().join("toolchains/fresh/bin/runc").is_file());
    // The default toolchain is not made behind the user's back.
    std::fs::remove_file(f.home().join("settings.toml")).unwrap();
    let o = f
        .kbin()
        .args(["build", "--from-source", "runc"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

impl Fixture {
    /// Add `rows` (`[[component.recipe.release]]` tables) to the fixture's runc or crictl recipe.
    fn with_release_rows(self, component: &str, rows: &str) -> Fixture {
        let text = std::fs::read_to_string(&self.manifest).unwrap();
        // Each component's recipe is the last table of its block: rows go before the next block
        // (crictl's, for runc) or at the end (crictl is last).
        let text = match component {
            "runc" => {
                let at = text.find("[[component]]\nname = \"crictl\"").unwrap();
                format!("{}{rows}\n{}", &text[..at], &text[at..])
            }
            _ => format!("{text}\n{rows}\n"),
        };
        std::fs::write(&self.manifest, text).unwrap();
        self
    }

    /// The bare mirrors under KBIN_HOME/git (a clone made one).
    fn mirrors(&self) -> Vec<PathBuf> {
        walk(&self.home().join("git"))
            .into_iter()
            .filter(|p| p.ends_with("HEAD"))
            .collect()
    }
}

#[test]
fn a_missing_pkg_config_module_is_one_clear_error_and_nothing_is_cloned() {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    )
    .with_release_rows(
        "runc",
        r#"[[component.recipe.release]]
versions = ">=1.0.0"
source = "a test row"
needs = [{ pkg-config = "kbin-test-absent-module", package = "libkbin-test-absent-dev", for = "the seccomp build tag" }]
"#,
    );
    let o = f.build("runc", &[]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains(&format!(
            "building runc {RUNC} needs the pkg-config module kbin-test-absent-module (for the seccomp build tag)"
        )),
        "{t}"
    );
    assert!(
        t.contains("hint: install it (Debian, Ubuntu: apt-get install libkbin-test-absent-dev)"),
        "{t}"
    );
    assert_eq!(t.matches("error:").count(), 1, "{t}");
    assert!(f.mirrors().is_empty(), "cloned: {:?}", f.mirrors());
    assert_eq!(f.runs(), 0);
    assert_eq!(f.run_bin("runc"), "downloaded runc");
}

#[test]
fn a_missing_make_is_named_before_anything_is_cloned() {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    );
    // A PATH with sh but no make.
    let dir = f.tmp.path().join("no-make");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(which("sh"), dir.join("sh")).unwrap();
    let o = f
        .kbin_with_path(&dir.display().to_string())
        .args(["build", "--from-source", "runc", "--toolchain", "t"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains(&format!("building runc {RUNC} needs make")),
        "{t}"
    );
    assert!(t.contains("apt-get install make"), "{t}");
    assert!(f.mirrors().is_empty(), "cloned: {:?}", f.mirrors());
}

/// Release rows for the Go fixture (crictl): a promised tag, one dropped for a missing library.
const GO_ROWS: &str = r#"[[component.recipe.release]]
versions = ">=1.0.0"
source = "a test row"
command = ["go", "build", "-trimpath", "-tags", "{tags}", "-ldflags", "-X main.version=v{version}", "-o", "build/crictl", "."]
tags = ["kbin_promised", "kbin_optional"]
cgo = { crictl = false }
drop = [{ tag = "kbin_optional", pkg-config = "kbin-test-absent-module", package = "libkbin-optional-dev", env = { KBIN_DROPPED = "kbin_optional" }, why = "the optional feature is off" }]
reports = [{ binary = "crictl", args = [], contains = "crictl version" }]
"#;

#[test]
fn a_tag_whose_library_is_missing_is_dropped_said_and_recorded_and_the_rest_is_checked() {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    )
    .with_release_rows("crictl", GO_ROWS);
    let o = f.build("crictl", &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "building crictl {CRICTL} without the build tag kbin_optional: pkg-config finds no kbin-test-absent-module (install libkbin-optional-dev to keep it)"
        )),
        "{t}"
    );
    assert_eq!(f.run_bin("crictl"), format!("crictl version v{CRICTL}"));
    let source = f.component("crictl")["source"].clone();
    assert_eq!(
        source["dropped_tags"].as_array().unwrap(),
        &vec![toml::Value::from("kbin_optional")],
        "{source}"
    );
    // The binary carries the promised tag and not the dropped one.
    let info = Command::new("go")
        .args(["version", "-m"])
        .arg(f.toolchain().join("bin/crictl"))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("-tags=kbin_promised\n"), "{info}");
}

#[test]
fn a_recipe_whose_promised_tag_is_missing_from_the_binary_fails_and_installs_nothing() {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    // The row promises kbin_promised, but its command builds without -tags.
    let rows = GO_ROWS.replace(r#""-tags", "{tags}", "#, "");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    )
    .with_release_rows("crictl", &rows);
    let o = f.build("crictl", &[]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("crictl built from crictl lacks what upstream's release build has: build tags should be kbin_promised, the binary says -tags= (lacks kbin_promised) (release row: a test row)"),
        "{t}"
    );
    assert!(t.contains("hint: nothing was installed"), "{t}");
    assert_eq!(f.run_bin("crictl"), "downloaded crictl");
    let index = walk(&f.home().join("builds"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/index/"))
        .count();
    assert_eq!(index, 0, "a refused build is not in the build index");
}

/// Where Debian's golang-*-dev packages put Go source (GOPATH layout).
const GOCODE: &str = "/usr/share/gocode/src";

/// The nearest directory at or above `dir` (inside GOCODE) holding a go.mod, with the module
/// path its `module` line names.
fn module_of(dir: &Path) -> Option<(PathBuf, String)> {
    let mut d = dir.to_owned();
    while d.starts_with(GOCODE) && d != Path::new(GOCODE) {
        if let Ok(text) = std::fs::read_to_string(d.join("go.mod")) {
            let m = text
                .lines()
                .find_map(|l| l.strip_prefix("module "))?
                .trim()
                .to_owned();
            return Some((d, m));
        }
        d.pop();
    }
    None
}

/// A git repository of runc 1.1.5 made from Debian's golang-github-opencontainers-runc-dev (the
/// main package without Makefile or vendor/), tagged v1.1.5, plus a vendor/ assembled from the
/// golang-*-dev packages it depends on, so that `go build` works offline: each imported package
/// is copied to vendor/<module path>/<dir in module> and vendor/modules.txt lists the modules
/// (at the versions runc's go.mod requires, `## explicit` for those, with each module's own
/// `go` line so the vendored code compiles at its language version).
fn debian_runc_repo(dir: &Path) {
    let src = Path::new(GOCODE).join("github.com/opencontainers/runc");
    assert!(
        src.join("main.go").is_file(),
        "{} is missing: run scripts/setup-test-deps (golang-github-opencontainers-runc-dev)",
        src.display()
    );
    let cp = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(dir)
        .status()
        .unwrap();
    assert!(cp.success());
    let go_mod = std::fs::read_to_string(dir.join("go.mod")).unwrap();
    // `require` lines: module → version.
    let required: std::collections::BTreeMap<String, String> = go_mod
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next()) {
                (Some(m), Some(v)) if v.starts_with('v') && m.contains('.') => {
                    Some((m.to_owned(), v.to_owned()))
                }
                _ => None,
            }
        })
        .collect();
    let cache = dir.parent().unwrap().join("gocache-list");
    let list = Command::new("go")
        .args([
            "list",
            "-deps",
            "-tags",
            "seccomp",
            "-f",
            "{{if not .Standard}}{{.ImportPath}} {{.Dir}}{{end}}",
            "github.com/opencontainers/runc",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("HOME", dir.parent().unwrap())
        .env("GOCACHE", &cache)
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list));
    // module → (its go line, the vendored package paths)
    let mut modules: std::collections::BTreeMap<String, (Option<String>, Vec<String>)> =
        Default::default();
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let (import, pkg_dir) = line.split_once(' ').unwrap();
        if import.starts_with("github.com/opencontainers/runc") {
            continue;
        }
        let pkg_dir = Path::new(pkg_dir);
        let (module, rel, go_line) = match module_of(pkg_dir) {
            Some((root, m)) => {
                let go_line = std::fs::read_to_string(root.join("go.mod"))
                    .unwrap()
                    .lines()
                    .find_map(|l| l.strip_prefix("go ").map(|v| v.trim().to_owned()));
                (m, pkg_dir.strip_prefix(&root).unwrap().to_owned(), go_line)
            }
            None => {
                // No go.mod in Debian's copy: the longest required module that is a prefix.
                let m = required
                    .keys()
                    .filter(|m| import == m.as_str() || import.starts_with(&format!("{m}/")))
                    .max_by_key(|m| m.len())
                    .unwrap_or_else(|| panic!("no module for {import}"))
                    .clone();
                let root = Path::new(GOCODE).join(&m);
                (m, pkg_dir.strip_prefix(&root).unwrap().to_owned(), None)
            }
        };
        let path = if rel.as_os_str().is_empty() {
            module.clone()
        } else {
            format!("{module}/{}", rel.display())
        };
        let dest = dir.join("vendor").join(&path);
        std::fs::create_dir_all(&dest).unwrap();
        for e in std::fs::read_dir(pkg_dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() && !name.ends_with("_test.go") {
                std::fs::copy(e.path(), dest.join(&name)).unwrap();
            }
        }
        let entry = modules.entry(module).or_default();
        entry.0 = entry.0.take().or(go_line);
        entry.1.push(path);
    }
    let mut txt = String::new();
    for (m, (go_line, pkgs)) in &modules {
        let version = required.get(m).map_or("v0.0.0", String::as_str);
        txt.push_str(&format!("# {m} {version}\n"));
        let mut notes = Vec::new();
        if required.contains_key(m) {
            notes.push("explicit".to_owned());
        }
        if let Some(g) = go_line {
            notes.push(format!("go {g}"));
        }
        if !notes.is_empty() {
            txt.push_str(&format!("## {}\n", notes.join("; ")));
        }
        for p in pkgs {
            txt.push_str(&format!("{p}\n"));
        }
    }
    std::fs::write(dir.join("vendor/modules.txt"), txt).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A", "-f"]);
    git(
        dir,
        &["commit", "-q", "-m", "runc 1.1.5 from Debian's source"],
    );
    git(dir, &["tag", "v1.1.5"]);
}

#[test]
fn real_runc_builds_with_kbins_recipe_and_reports_seccomp() {
    need("go");
    need("git");
    assert!(
        Command::new("pkg-config")
            .args(["--exists", "libseccomp"])
            .status()
            .is_ok_and(|s| s.success()),
        "libseccomp-dev is missing: run scripts/setup-test-deps"
    );
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("runc");
    debian_runc_repo(&repo);
    let home = tmp.path().join("kbin");
    // The built-in manifest: kbin's own runc recipe and its release rows.
    let o = common::kbin(&home)
        .env("GOFLAGS", "-mod=vendor")
        .env("GOPROXY", "off")
        .args([
            "build",
            "--from-source",
            "runc",
            "--toolchain",
            "src",
            "--source",
            &repo.display().to_string(),
            "--ref",
            "v1.1.5",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let runc = home.join("toolchains/src/bin/runc");
    let version = Command::new(&runc).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.contains("runc version 1.1.5"), "{version}");
    assert!(version.contains("libseccomp: 2."), "{version}");
    let features = Command::new(&runc).arg("features").output().unwrap();
    assert!(features.status.success(), "{}", text(&features));
    let features: serde_json::Value = serde_json::from_slice(&features.stdout).unwrap();
    assert_eq!(
        features["linux"]["seccomp"]["enabled"],
        serde_json::Value::Bool(true),
        "{features}"
    );
    let info = Command::new("go")
        .args(["version", "-m"])
        .arg(&runc)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("-tags=seccomp\n") && info.contains("CGO_ENABLED=1\n"),
        "{info}"
    );
}

/// A git server over HTTP that accepts the connection and never answers: the build fails after
/// the stall timeout (KBIN_HTTP_STALL_TIMEOUT_MS) with one error naming the URL, instead of
/// waiting for ever for the refs.
#[test]
fn a_git_http_server_that_never_answers_is_a_stall_error_not_a_hang() {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    go_repo(&repos.path().join("crictl"), "1.19");
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    );
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/runc.git", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        // Hold the connection open, saying nothing, until the client gives up.
        let (mut conn, _) = silent.accept().unwrap();
        let mut buf = [0u8; 1024];
        while std::io::Read::read(&mut conn, &mut buf).is_ok_and(|n| n > 0) {}
    });
    let started = Instant::now();
    let o = f
        .kbin()
        .env("KBIN_HTTP_STALL_TIMEOUT_MS", "500")
        .args(["build", "--from-source", "runc", "--toolchain", "t"])
        .args(["--source", &url, "--ref", &format!("v{RUNC}")])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("no answer for 500ms"), "{t}");
    assert!(t.contains("/runc.git/info/refs"), "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    held.join().unwrap();
}

/// The Go on PATH, as `go env GOVERSION` spells it without `go` (`1.19.8`).
fn local_go() -> String {
    let o = Command::new("go")
        .args(["env", "GOVERSION"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .trim_start_matches("go")
        .to_owned()
}

/// The host's arch as kbin names it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// A release row for the Go fixture (crictl) saying how "upstream" builds it: `command` is
/// kbin's, the ldflags and flags are upstream's.
fn repro_rows(command: &str) -> String {
    format!(
        r#"[[component.recipe.release]]
versions = ">=1.0.0"
source = "a test row"
command = {command}
cgo = {{ crictl = false }}
ldflags = "-X main.version=v{{version}}"
flags = ["-trimpath"]
"#
    )
}

/// kbin's command for the Go fixture, as upstream's row says (with -trimpath).
const TRIMPATH_BUILD: &str = r#"["go", "build", "-trimpath", "-ldflags", "-X main.version=v{version}", "-o", "build/crictl", "."]"#;

/// A fixture whose crictl repository says `.go-version` = `go_version` and whose recipe runs
/// `command` under [`repro_rows`] (the repositories' directory is returned, to keep it).
fn repro_fixture(go_version: &str, command: &str) -> (tempfile::TempDir, Fixture) {
    let repos = tempfile::tempdir().unwrap();
    make_repo(&repos.path().join("runc"));
    go_repo_with_go_version(&repos.path().join("crictl"), go_version);
    let f = Fixture::new(
        &file_url(&repos.path().join("runc")),
        &file_url(&repos.path().join("crictl")),
        "",
    )
    .with_release_rows("crictl", &repro_rows(command));
    (repos, f)
}

/// The Go fixture's module, with a `.go-version` saying `go_version`, tagged again.
fn go_repo_with_go_version(dir: &Path, go_version: &str) -> String {
    go_repo(dir, "1.19");
    std::fs::write(dir.join(".go-version"), format!("{go_version}\n")).unwrap();
    let c = commit_all(dir, "go version");
    git(dir, &["tag", "-f", &format!("v{CRICTL}")]);
    c
}

impl Fixture {
    /// crictl's artifact as a bare binary pinned to `digest` (for this version and arch).
    fn pin_crictl_binary(&self, digest: &str) {
        let text = std::fs::read_to_string(&self.manifest).unwrap();
        let text = text.replace(
            "format = \"tar.gz\"\nlayout = \"crictl\"",
            "format = \"binary\"",
        );
        std::fs::write(&self.manifest, text).unwrap();
        self.pin_crictl(digest);
    }

    /// crictl's artifact (as it is: an archive, or a binary) pinned to `digest`.
    fn pin_crictl(&self, digest: &str) {
        let text = std::fs::read_to_string(&self.manifest).unwrap();
        let start = text.find("[pins]\n").unwrap() + "[pins]\n".len();
        let end = start + text[start..].find("\n[[component]]").unwrap();
        let text = format!(
            "{}\"crictl/{}/{CRICTL}\" = \"{digest}\"\n{}",
            &text[..start],
            host_arch(),
            &text[end..]
        );
        std::fs::write(&self.manifest, text).unwrap();
    }
}

#[test]
fn a_go_module_built_twice_in_different_directories_is_the_same_and_compared_with_upstreams_pin() {
    let (_repos, f) = repro_fixture(&local_go(), TRIMPATH_BUILD);

    // Two builds, the second in another directory with its own Go cache: the same bytes. There
    // is no official digest yet (crictl's archive is not pinned).
    let o = f.build("crictl", &["--check-reproducible", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &report["source"]["reproduction"]["crictl"];
    assert_eq!(
        r["rebuild"], "same digest in a second build in another directory",
        "{report}"
    );
    assert!(
        r["upstream"].as_str().unwrap().starts_with(&format!(
            "not comparable: no official digest of crictl {CRICTL}"
        )),
        "{report}"
    );
    let up = &report["source"]["upstream"];
    assert_eq!(up["go"], local_go().as_str(), "{report}");
    assert_eq!(up["go_from"], ".go-version");
    assert_eq!(
        up["settings"]["-ldflags"],
        format!("-X main.version=v{CRICTL}")
    );
    assert!(
        walk(&f.home().join("builds"))
            .iter()
            .any(|p| p.ends_with("check.log")),
        "the second build's log is kept"
    );
    assert!(
        !walk(&f.home().join("builds"))
            .iter()
            .any(|p| p.to_string_lossy().contains("/check/")),
        "the second build's tree is removed"
    );

    // Upstream's pin is this binary's digest: it reproduces upstream (same Go, same settings).
    let digest = f.component("crictl")["binary"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    f.pin_crictl_binary(&digest);
    let o = f.build("crictl", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("upstream: reproduces upstream"),
        "{}",
        text(&o)
    );
    let source = f.component("crictl")["source"].clone();
    assert_eq!(
        source["reproduction"]["crictl"]["upstream"].as_str(),
        Some("reproduces upstream"),
        "{source}"
    );
    let o = f.kbin().args(["show-versions", "t"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("crictl crictl: reproduces upstream"),
        "{}",
        text(&o)
    );
    let o = f
        .kbin()
        .args(["show-versions", "t", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let crictl = v[0]["component"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "crictl")
        .unwrap();
    assert_eq!(
        crictl["source"]["reproduction"]["crictl"]["upstream"],
        "reproduces upstream"
    );

    // Another pinned digest: it differs, and says which two.
    let other = format!("sha256:{}", "ab".repeat(32));
    f.pin_crictl_binary(&other);
    let o = f.build("crictl", &["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["source"]["reproduction"]["crictl"]["upstream"],
        format!("differs: {digest} vs the official {other}").as_str(),
        "{report}"
    );
}

#[test]
fn a_build_that_embeds_its_directory_differs_naming_the_file_and_offset_and_another_go_is_not_comparable()
 {
    // Upstream says another Go; kbin's recipe leaves out -trimpath, so the binary holds the
    // directory it was built in.
    let theirs = if local_go() == "1.19.1" {
        "1.19.2"
    } else {
        "1.19.1"
    };
    let (_repos, f) = repro_fixture(
        theirs,
        r#"["go", "build", "-ldflags", "-X main.version=v{version}", "-o", "build/crictl", "."]"#,
    );
    let o = f.build("crictl", &["--check-reproducible"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "crictl {CRICTL} is not reproducible: the first differing file is crictl: differs: a second build in another directory gave sha256:"
        )),
        "{t}"
    );
    assert!(t.contains(", first difference at byte "), "{t}");
    // Installed all the same, with both outcomes recorded.
    assert_eq!(f.run_bin("crictl"), format!("crictl version v{CRICTL}"));
    let r = f.component("crictl")["source"]["reproduction"]["crictl"].clone();
    assert_eq!(
        r["upstream"].as_str(),
        Some(format!("not comparable: Go {} vs {theirs}", local_go()).as_str()),
        "{r}"
    );
    assert!(
        r["rebuild"].as_str().unwrap().starts_with("differs: "),
        "{r}"
    );
    let o = f.kbin().args(["show-versions", "t"]).output().unwrap();
    assert!(text(&o).contains("not comparable"), "{}", text(&o));
}

#[test]
fn the_official_binary_is_read_out_of_a_pinned_archive_in_the_store_and_the_first_differing_byte_named()
 {
    let (_repos, f) = repro_fixture(&local_go(), TRIMPATH_BUILD);
    let o = f.build("crictl", &[]);
    assert!(o.status.success(), "{}", text(&o));
    // "Upstream's" release archive: the same binary with byte 1000 changed, pinned, and in the
    // store (as an install of that version leaves it).
    let mut bytes = std::fs::read(f.toolchain().join("bin/crictl")).unwrap();
    bytes[1000] ^= 0xff;
    let pack = f.tmp.path().join("pack");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(pack.join("crictl"), &bytes).unwrap();
    let archive = f.tmp.path().join("crictl.tar.gz");
    let ok = Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&pack)
        .arg("crictl")
        .status()
        .unwrap();
    assert!(ok.success());
    let hex = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(std::fs::read(&archive).unwrap()))
    };
    let blob = f
        .home()
        .join("cache/blobs/sha256")
        .join(&hex[..2])
        .join(&hex);
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::copy(&archive, &blob).unwrap();
    f.pin_crictl(&format!("sha256:{hex}"));
    let o = f.build("crictl", &["--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let official = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let outcome = report["source"]["reproduction"]["crictl"]["upstream"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        outcome.starts_with("differs: sha256:")
            && outcome.ends_with(&format!(
                " vs the official sha256:{official}, first difference at byte 1000"
            )),
        "{outcome}"
    );
}
