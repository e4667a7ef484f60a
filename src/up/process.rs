//! kbin's own supervisor, for machines whose PID 1 is not systemd: each component runs in its own
//! process group with its output appended to `DIR/run/<node>/<component>.log`, and
//! `DIR/run/<node>/state.json` remembers what runs ([`State`]).
//!
//! A process is recognised by its PID *and* its start time (`/proc/<pid>/stat`, field 22), so a
//! PID reused by another program after a reboot or a crash is never signalled.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::unit::{KillMode, ServiceUnit};

/// systemd's default `PATH` for services: components find the tools they call (iptables, runc,
/// mount) the same way under kbin as under systemd.
pub const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `DIR/run/<node>/state.json`: what `kbin up` started on a node and what it installed.
///
/// ```json
/// { "node": "node-0",
///   "components": { "etcd": { "pid": 4242, "start_ticks": 123456, "started": 1760000000,
///                             "command": ["/usr/local/bin/etcd", "--name=node-0", "…"],
///                             "log": "DIR/run/node-0/etcd.log", "kill_mode": "control-group" } },
///   "installed": ["/etc/kubernetes/pki/ca.crt", "…"],
///   "created_dirs": ["/etc/kubernetes", "…"] }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The node.
    pub node: String,
    /// Running (or last started) components by name.
    #[serde(default)]
    pub components: BTreeMap<String, Proc>,
    /// Files `kbin up` placed outside DIR (removed by `kbin down`).
    #[serde(default)]
    pub installed: Vec<PathBuf>,
    /// Directories `kbin up` created outside DIR, parents first (removed when empty).
    #[serde(default)]
    pub created_dirs: Vec<PathBuf>,
}

/// One started component.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    /// Its PID, which is also its process group's ID.
    pub pid: i32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// When it was started (seconds since the Unix epoch).
    pub started: u64,
    /// The command line it runs.
    pub command: Vec<String>,
    /// Its log file.
    pub log: PathBuf,
    /// Which processes `down` signals.
    pub kill_mode: KillModeState,
}

/// [`KillMode`] as stored in the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillModeState {
    /// The whole process group.
    ControlGroup,
    /// The main process only.
    Process,
}

impl State {
    /// `DIR/run/<node>/state.json`.
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join("state.json")
    }

    /// The state in `run_dir`, or an empty one for `node`.
    pub fn load(run_dir: &Path, node: &str) -> std::io::Result<State> {
        let path = Self::path(run_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a kbin state file: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                node: node.to_owned(),
                ..State::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// Write the state atomically (a reader never sees half of it).
    pub fn save(&self, run_dir: &Path) -> Result<(), crate::r#gen::WriteError> {
        let text = serde_json::to_vec_pretty(self).expect("the state always serializes");
        let path = Self::path(run_dir);
        // Not through gen's Staged: its commit refuses after SIGINT, and an interrupted `up`
        // must still record the PIDs it started.
        Ok(crate::fsx::write_atomic(&path, &text, 0o644)?)
    }
}

/// What `/proc/<pid>/stat` says of a process: its state letter, process group and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z`, `T`…
    pub state: char,
    /// Its process group.
    pub pgrp: i32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// `/proc/<pid>/stat`, if the process exists.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

impl Proc {
    /// Whether this very process (same PID, same start time) still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start_ticks == self.start_ticks && s.state != 'Z')
    }

    /// Live processes of its group other than a zombie.
    pub fn group(&self) -> Vec<i32> {
        group_members(self.pid)
    }
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs` since the Unix epoch as RFC 3339 (UTC), as [`crate::util::rfc3339`] writes it.
pub fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .map(crate::util::rfc3339)
        .unwrap_or_else(|_| secs.to_string())
}

/// Start `unit`'s command line exactly as written, in a new process group (so a Ctrl-C meant
/// for kbin does not reach it and `down` can signal everything it forked), with systemd's
/// service `PATH`, no stdin, and stdout and stderr appended to `log` after a header line.
pub fn spawn(unit: &ServiceUnit, log: &Path) -> std::io::Result<(Child, Proc)> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    writeln!(
        file,
        "--- kbin up, {}: {}",
        rfc3339(now()),
        unit.command_line()
    )?;
    let mut cmd = Command::new(unit.program());
    cmd.args(&unit.exec_start[1..])
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0);
    if let Some(n) = unit.limit_nofile {
        // LimitNOFILE= of the unit, applied as systemd would (etcd wants 65536 descriptors).
        // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                // A limit above the hard limit is refused without CAP_SYS_RESOURCE: keep the
                // inherited one rather than failing the start.
                let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let start_ticks = stat(pid).map(|s| s.start_ticks).unwrap_or(0);
    Ok((
        child,
        Proc {
            pid,
            start_ticks,
            started: now(),
            command: unit.exec_start.clone(),
            log: log.to_owned(),
            kill_mode: match unit.kill_mode {
                KillMode::ControlGroup => KillModeState::ControlGroup,
                KillMode::Process => KillModeState::Process,
            },
        },
    ))
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It ignored SIGTERM for the whole grace period and was killed.
    Killed,
}

fn signal(p: &Proc, sig: i32) {
    // Only a process we recognise (PID and start time) is ever signalled.
    if !p.alive() && p.group().is_empty() {
        return;
    }
    // SAFETY: kill(2) with a PID we started; a negative PID names its process group.
    unsafe {
        match p.kill_mode {
            KillModeState::ControlGroup => {
                libc::kill(-p.pid, sig);
            }
            KillModeState::Process => {
                if p.alive() {
                    libc::kill(p.pid, sig);
                }
            }
        }
    }
}

fn gone(p: &Proc) -> bool {
    match p.kill_mode {
        KillModeState::ControlGroup => !p.alive() && p.group().is_empty(),
        KillModeState::Process => !p.alive(),
    }
}

/// SIGTERM, then SIGKILL if it still runs after `grace` (as systemd's TimeoutStopSec).
pub fn stop(p: &Proc, grace: Duration) -> Stopped {
    if gone(p) {
        return Stopped::NotRunning;
    }
    signal(p, libc::SIGTERM);
    if wait_gone(p, grace) {
        return Stopped::Terminated;
    }
    signal(p, libc::SIGKILL);
    wait_gone(p, Duration::from_secs(5));
    Stopped::Killed
}

fn wait_gone(p: &Proc, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if gone(p) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of `path` (empty if it cannot be read).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_read_as_the_receipts_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_388_400), "2026-11-22T23:00:00Z");
    }

    #[test]
    fn this_process_is_recognised_by_pid_and_start_time() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        let p = Proc {
            pid: me,
            start_ticks: s.start_ticks,
            started: 0,
            command: vec![],
            log: PathBuf::new(),
            kill_mode: KillModeState::Process,
        };
        assert!(p.alive());
        let reused = Proc {
            start_ticks: s.start_ticks + 1,
            ..p
        };
        assert!(!reused.alive(), "a reused PID is another process");
    }
}
