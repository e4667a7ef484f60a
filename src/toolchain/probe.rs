//! Asking an installed binary what it is: the `reports` line of its receipt entry.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::manifest::Component;

/// How long a binary may take to say its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `bin args…` with a timeout and keep the first line it prints (stdout, else stderr).
/// [`crate::util::run_with_timeout`] drains the pipes while it runs, so a chatty binary cannot
/// fill one and stall; a binary that hangs, or leaves a child holding its pipes, costs at most
/// [`VERSION_TIMEOUT`] and reports nothing.
pub fn version_report(bin: &Path, args: &[String]) -> Option<String> {
    let out = crate::util::run_with_timeout(Command::new(bin).args(args), VERSION_TIMEOUT).ok()?;
    let (stdout, stderr) = (out.stdout, out.stderr);
    let text = if stdout.iter().any(|b| !b.is_ascii_whitespace()) {
        stdout
    } else {
        stderr
    };
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// What the binary `binary` of `component`, now at `file`, says its version is: run with the
/// component's version arguments (or the binary's own override).
pub fn component_report(component: &Component, binary: &str, file: &Path) -> Option<String> {
    let args = component
        .version_args_override
        .get(binary)
        .unwrap_or(&component.version_args);
    version_report(file, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn kubeadm_is_asked_with_its_version_subcommand_not_a_flag() {
        // kubeadm's own behaviour: `--version` is an unknown flag (exit 1), `version -o short`
        // prints the version.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("kubeadm");
        std::fs::write(
            &bin,
            "#!/bin/sh
if [ \"$*\" = \"version -o short\" ]; then echo v1.30.14; exit 0; fi
\
             echo 'unknown flag: --version' >&2; exit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let m = crate::manifest::Manifest::embedded().unwrap();
        let k = m.component("kubernetes").unwrap();
        assert_eq!(
            component_report(k, "kubeadm", &bin).as_deref(),
            Some("v1.30.14")
        );
    }

    #[test]
    fn a_chatty_binary_still_reports_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("chatty");
        // Far more than a pipe holds: the old wait-then-read would stall until the timeout.
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'chatty v1.2.3'\nhead -c 300000 /dev/zero | tr '\\0' x\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        assert_eq!(
            version_report(&bin, &["--version".into()]).as_deref(),
            Some("chatty v1.2.3")
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
