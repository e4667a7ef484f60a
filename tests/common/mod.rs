//! Helpers shared by the integration tests. Each test file that needs them says `mod common;`.

pub mod gpg;
pub mod machines;
pub mod registry;
pub mod rekor;
pub mod server;
pub mod sigstore;
pub mod toolchain;
pub mod upstream;

/// Run git in `dir` with a fixed identity and no user or system config; its trimmed stdout.
#[allow(dead_code)] // not every test file that says `mod common;` uses it
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git is missing: run scripts/setup-test-deps");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The real `kbin` binary with `KBIN_HOME=home` and no manifest or mirror from the environment.
#[allow(dead_code)] // not every test file that says `mod common;` uses it
pub fn kbin(home: &std::path::Path) -> assert_cmd::Command {
    let mut c = assert_cmd::cargo::cargo_bin_cmd!("kbin");
    c.env("KBIN_HOME", home)
        .env_remove("KBIN_MANIFEST")
        .env_remove("KBIN_MIRROR");
    c
}

/// The path of a system tool (Debian's, in /usr/sbin, /usr/bin or /bin). A missing tool fails
/// the test, in CI and outside it: scripts/setup-test-deps installs every one.
#[allow(dead_code)] // not every test file that says `mod common;` uses it
pub fn tool(name: &str) -> std::path::PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/bin", "/sbin"] {
        let p = std::path::Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is missing: run scripts/setup-test-deps (as root) to install it");
}
