//! systemd as the supervisor: `systemctl` with a timeout, and what systemd says of a unit.

use std::time::Duration;

use super::check;

pub(super) fn systemctl(args: &[&str]) -> Result<String, String> {
    check::run_with_timeout(
        std::process::Command::new("systemctl").args(args),
        Duration::from_secs(60),
    )
    .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))
}

/// `systemctl show UNIT.service -p MainPID -p ActiveState`: `KEY=value` lines.
fn show_pid_and_state(unit: &str) -> Result<String, String> {
    systemctl(&[
        "show",
        &format!("{unit}.service"),
        "-p",
        "MainPID",
        "-p",
        "ActiveState",
    ])
}

/// systemd's MainPID of `unit` while it is active.
pub(super) fn systemd_main_pid(unit: &str) -> Option<i32> {
    let out = show_pid_and_state(unit).ok()?;
    let active = out
        .lines()
        .any(|l| l == "ActiveState=active" || l == "ActiveState=activating");
    let pid = out
        .lines()
        .find_map(|l| l.strip_prefix("MainPID="))?
        .parse()
        .ok()?;
    active.then_some(pid)
}

/// systemd's view of `unit` for `status`: `running` (active, activating, reloading or
/// deactivating) with its MainPID, `failed`, or `not-started`.
pub(super) fn systemd_state(unit: &str) -> (&'static str, Option<i32>) {
    let Ok(out) = show_pid_and_state(unit) else {
        return ("not-started", None);
    };
    let pid = out
        .lines()
        .find_map(|l| l.strip_prefix("MainPID="))
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0);
    match out.lines().find_map(|l| l.strip_prefix("ActiveState=")) {
        Some("active" | "activating" | "reloading" | "deactivating") => ("running", pid),
        Some("failed") => ("failed", None),
        _ => ("not-started", None),
    }
}
