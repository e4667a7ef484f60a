//! kbin's own supervisor, for machines whose PID 1 is not systemd: each component runs in its own
//! process group with its output appended to `DIR/run/<node>/<component>.log`, and
//! `DIR/run/<node>/state.json` remembers what runs ([`State`]).
//!
//! # What is ours
//! `down` signals only what it can prove `up` started ([`Proc::members`]):
//! - the leader, by its PID, its start time (`/proc/<pid>/stat` field 22) *and* the boot it was
//!   started in (`/proc/sys/kernel/random/boot_id`): start times restart at every boot;
//! - while the leader is ours, every member of its process group: Linux gives PID X to no new
//!   process while a group X has members, and only process X can create group X, so group X is
//!   the leader's;
//! - once the leader is gone, only members that carry the component's `INVOCATION_ID` (a random
//!   id in their environment, as systemd gives each service run): a process that took over PID X
//!   after the group emptied, and whatever it forked, is someone else's and is never signalled.
//!
//! Each signal goes through a pidfd opened *before* the last check (`pidfd_open`,
//! `pidfd_send_signal`), so a PID recycled between the check and the signal cannot be hit.

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
///   "installed": [{ "path": "/etc/kubernetes/pki/ca.crt", "dev": 2049, "ino": 1234,
///                   "temp": "/etc/kubernetes/pki/.tmp-Ab12Cd" }, "…"],
///   "created_dirs": ["/etc/kubernetes", "…"] }
/// ```
///
/// It decides what `down` (as root) signals and deletes, so nobody else may write it: the file
/// is 0600 in a 0700 directory, and [`State::load`] refuses one that is not owned by the user
/// running kbin, or that others could write, or that sits in a directory others could write.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The node.
    pub node: String,
    /// Running (or last started) components by name.
    #[serde(default)]
    pub components: BTreeMap<String, Proc>,
    /// `Type=oneshot` units whose `ExecStart=` `up` ran (recorded before it runs), with when:
    /// `down` runs their `ExecStop=`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub done: BTreeMap<String, String>,
    /// Files `kbin up` placed outside DIR (removed by `kbin down`), each recorded before it is
    /// renamed into place.
    #[serde(default)]
    pub installed: Vec<Placed>,
    /// Components being started: the invocation id each is given, recorded before the spawn,
    /// so that a kbin killed between the spawn and recording the PID leaves `down` a way to
    /// find the process (by that id in its environment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub starting: BTreeMap<String, Starting>,
    /// The directory a file is being placed in, recorded before its temporary file is created
    /// (whose random name is known only after): a kbin killed in between leaves `down` what
    /// it needs to find that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placing: Option<Placing>,
    /// Files the machine had where the tree has one: each kept aside before it was replaced,
    /// put back by `down`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<Replaced>,
    /// Directories `kbin up` created outside DIR, parents first (removed when empty).
    #[serde(default)]
    pub created_dirs: Vec<PathBuf>,
}

/// A file `kbin up` placed: its path and the device and inode of the very file it wrote there.
/// `down` removes it only while the path still holds that file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Placed {
    /// Recorded with its identity (the temporary file's, which the rename keeps).
    File {
        /// The final path.
        path: PathBuf,
        /// `st_dev` of the file written.
        dev: u64,
        /// `st_ino` of the file written.
        ino: u64,
        /// The temporary file it was written as, beside `path` (gone once renamed; left only
        /// by a kbin killed in between, and then removed by `down` too).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temp: Option<PathBuf>,
    },
    /// A path alone, as state files recorded before kbin kept identities.
    Path(PathBuf),
}

impl Placed {
    /// The final path.
    pub fn path(&self) -> &Path {
        match self {
            Placed::File { path, .. } | Placed::Path(path) => path,
        }
    }
}

/// A temporary file about to be created in `dir`: the `.tmp-*` names already there and when.
/// A new `.tmp-*` regular file there, owned by kbin's user and changed since, is kbin's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placing {
    /// The directory.
    pub dir: PathBuf,
    /// Seconds since the Unix epoch when it was recorded.
    pub since: u64,
    /// The `.tmp-*` names the directory held then (someone else's).
    pub before: Vec<String>,
}

impl Placing {
    /// `.tmp-*` names in `dir`.
    pub fn temp_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(".tmp-"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The temporary files kbin left in `dir` (see the type's doc).
    pub fn left(&self) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt as _;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        Self::temp_names(&self.dir)
            .into_iter()
            .filter(|n| !self.before.contains(n))
            .map(|n| self.dir.join(n))
            .filter(|p| {
                p.symlink_metadata().is_ok_and(|m| {
                    m.is_file() && m.uid() == me && m.ctime() >= self.since as i64 - 1
                })
            })
            .collect()
    }
}

/// A file of the machine's that `up` replaced, and where its original is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    /// The path.
    pub path: PathBuf,
    /// The original, a hard link beside it ([`Replaced::backup_of`]).
    pub backup: PathBuf,
}

impl Replaced {
    /// Where the original of `path` is kept: `.kbin-orig-NAME` beside it.
    pub fn backup_of(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!(".kbin-orig-{name}"))
    }
}

/// A component about to be started: what will mark its processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Starting {
    /// The `INVOCATION_ID` it is given.
    pub invocation_id: String,
    /// The boot it is started in.
    pub boot_id: Option<String>,
}

impl Starting {
    /// A fresh id for a component started now.
    pub fn new() -> std::io::Result<Starting> {
        Ok(Starting {
            invocation_id: new_invocation_id()?,
            boot_id: boot_id(),
        })
    }

    /// Every live process of this boot carrying the id (none from another boot).
    fn members(&self) -> Vec<i32> {
        if self.boot_id.is_none() || self.boot_id != boot_id() {
            return Vec::new();
        }
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                stat(*pid).is_some_and(|s| s.state != 'Z') && carries(*pid, &self.invocation_id)
            })
            .collect()
    }

    /// Stop whatever carries the id (a start interrupted before its PID was recorded): SIGTERM,
    /// then SIGKILL after `grace`, as [`stop`] does.
    pub fn stop(&self, grace: Duration) -> Stopped {
        terminate(
            || self.members(),
            |pid| carries(pid, &self.invocation_id),
            grace,
        )
    }
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
    /// The boot it was started in (`/proc/sys/kernel/random/boot_id`); state files written
    /// before kbin recorded it have none, and then [`Proc::started`] must agree with its start
    /// time since boot instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The random `INVOCATION_ID` put in its environment (and so in its children's): what proves a
    /// group member ours once the leader is gone. None in older state files: then nothing is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
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

    /// Create `run_dir` if needed and make it the user's own: mode 0700, owned by the user
    /// running kbin (one owned by someone else is refused: they could swap the state file).
    pub fn prepare_dir(run_dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(run_dir)?;
        let m = std::fs::symlink_metadata(run_dir)?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if !m.is_dir() || m.uid() != me {
            return Err(unsafe_state(format!(
                "{} is not a directory owned by uid {me} (owner: uid {})",
                run_dir.display(),
                m.uid()
            )));
        }
        if m.mode() & 0o077 != 0 {
            std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The state in `run_dir`, or an empty one for `node`. Refused (PermissionDenied) when the
    /// file or its directory is not the user's own or others could write them: what it lists
    /// is signalled and deleted as root.
    pub fn load(run_dir: &Path, node: &str) -> std::io::Result<State> {
        use std::os::unix::fs::MetadataExt as _;
        let path = Self::path(run_dir);
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        for (p, what) in [(run_dir, "directory"), (path.as_path(), "file")] {
            let m = match std::fs::symlink_metadata(p) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let kind_ok = if what == "file" {
                m.is_file()
            } else {
                m.is_dir()
            };
            if !kind_ok {
                return Err(unsafe_state(format!(
                    "{} is not a {what} (a symlink?)",
                    p.display()
                )));
            }
            if m.uid() != me {
                return Err(unsafe_state(format!(
                    "{} is owned by uid {}, not by uid {me} who runs kbin",
                    p.display(),
                    m.uid()
                )));
            }
            if m.mode() & 0o022 != 0 {
                return Err(unsafe_state(format!(
                    "{} is writable by others (mode {:04o})",
                    p.display(),
                    m.mode() & 0o7777
                )));
            }
        }
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
        Ok(crate::fsx::write_atomic(&path, &text, 0o600)?)
    }
}

fn unsafe_state(reason: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{reason}: kbin will not act on a state file others could have edited (check it, then fix its owner and mode: chown, chmod 0600, its directory 0700)"
        ),
    )
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

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// When this boot began (`btime` of `/proc/stat`), in seconds since the Unix epoch.
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The environment `pid` was started with holds `INVOCATION_ID=<id>`.
fn carries(pid: i32, id: &str) -> bool {
    let want = format!("INVOCATION_ID={id}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|w| w == want.as_bytes()))
}

/// A fresh random invocation id: 128 bits as 32 hex digits, as systemd writes them.
pub fn new_invocation_id() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

impl Proc {
    /// Whether it was started in this boot: the recorded boot id, or for an older state file,
    /// its recorded start (epoch seconds) against boot time plus its start ticks.
    fn this_boot(&self) -> bool {
        match &self.boot_id {
            Some(b) => boot_id().as_deref() == Some(b.as_str()),
            None => {
                // SAFETY: sysconf cannot fail for _SC_CLK_TCK.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
                boot_time()
                    .is_some_and(|bt| (bt + self.start_ticks / hz).abs_diff(self.started) <= 2)
            }
        }
    }

    /// Whether this very process (same boot, PID and start time) still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        self.this_boot()
            && stat(self.pid).is_some_and(|s| s.start_ticks == self.start_ticks && s.state != 'Z')
    }

    /// Whether `pid`, a member of the process group `self.pid` a moment ago, is provably this
    /// component's: the leader itself; any member while the leader is ours; once the leader is
    /// gone, a member carrying its invocation id (started after it, in this boot).
    fn owns(&self, pid: i32) -> bool {
        if pid == self.pid {
            return self.alive();
        }
        let Some(s) = stat(pid) else { return false };
        if s.pgrp != self.pid || s.state == 'Z' || s.start_ticks < self.start_ticks {
            return false;
        }
        if self.kill_mode == KillModeState::Process {
            return false;
        }
        self.alive()
            || (self.this_boot()
                && self
                    .invocation_id
                    .as_deref()
                    .is_some_and(|id| carries(pid, id)))
    }

    /// Every live process that is provably this component's (see the module's doc): the
    /// leader and, under `KillMode=control-group`, its group.
    pub fn members(&self) -> Vec<i32> {
        let mut out: Vec<i32> = if self.alive() { vec![self.pid] } else { vec![] };
        if self.kill_mode == KillModeState::ControlGroup && self.this_boot() {
            out.extend(
                group_members(self.pid)
                    .into_iter()
                    .filter(|p| *p != self.pid && self.owns(*p)),
            );
        }
        out
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

/// Send `sig` to `pid` only if `ours(pid)` holds once a pidfd pins the process: a PID that
/// exits and is reused between the check and the signal is then not hit. Kernels without
/// pidfds (before 5.3) get the check and `kill(2)` right after it.
fn send_if(pid: i32, sig: i32, ours: impl Fn(i32) -> bool) {
    // SAFETY: pidfd_open(2) with a PID and no flags; the descriptor is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) && ours(pid) {
            // SAFETY: kill(2) of a process just proven ours.
            unsafe { libc::kill(pid, sig) };
        }
        return;
    }
    if ours(pid) {
        // SAFETY: pidfd_send_signal(2) on the descriptor opened above, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
    // SAFETY: closing the descriptor pidfd_open returned.
    unsafe { libc::close(fd) };
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
pub fn spawn(
    unit: &ServiceUnit,
    log: &Path,
    invocation_id: &str,
) -> std::io::Result<(Child, Proc)> {
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
        // What systemd gives each run of a service; here it also marks every process the
        // component forks, so `down` can prove them ours once the leader is gone.
        .env("INVOCATION_ID", invocation_id)
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
            boot_id: boot_id(),
            invocation_id: Some(invocation_id.to_owned()),
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
    /// Stopping it failed (`systemctl stop` refused or failed): it may still run.
    Failed,
}

/// SIGTERM, then SIGKILL if it still runs after `grace` (as systemd's TimeoutStopSec), to every
/// process provably `p`'s ([`Proc::members`]), each through a pidfd.
pub fn stop(p: &Proc, grace: Duration) -> Stopped {
    terminate(|| p.members(), |pid| p.owns(pid), grace)
}

/// The one stop sequence: SIGTERM to each of `members()` (through [`send_if`] with `ours`), wait
/// up to `grace` for none to be left, then SIGKILL and wait up to 5 s more, so that what follows
/// (removing the files they use) does not race their exit.
fn terminate(
    members: impl Fn() -> Vec<i32>,
    ours: impl Fn(i32) -> bool + Copy,
    grace: Duration,
) -> Stopped {
    let signal = |sig| {
        for pid in members() {
            send_if(pid, sig, ours);
        }
    };
    let wait_gone = |limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            if members().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    if members().is_empty() {
        return Stopped::NotRunning;
    }
    signal(libc::SIGTERM);
    if wait_gone(grace) {
        return Stopped::Terminated;
    }
    signal(libc::SIGKILL);
    wait_gone(Duration::from_secs(5));
    Stopped::Killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_read_as_the_receipts_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_388_400), "2026-11-22T23:00:00Z");
    }

    fn proc_of(pid: i32, start_ticks: u64) -> Proc {
        Proc {
            pid,
            start_ticks,
            started: now(),
            command: vec![],
            log: PathBuf::new(),
            kill_mode: KillModeState::ControlGroup,
            boot_id: boot_id(),
            invocation_id: Some("0123456789abcdef0123456789abcdef".into()),
        }
    }

    #[test]
    fn a_start_killed_before_its_pid_was_recorded_is_found_by_its_invocation_id() {
        let st = Starting::new().unwrap();
        let mut child = Command::new("sleep")
            .arg("1000")
            .env("INVOCATION_ID", &st.invocation_id)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let other_boot = Starting {
            boot_id: Some("00000000-0000-0000-0000-000000000000".into()),
            ..st.clone()
        };
        assert_eq!(other_boot.stop(Duration::from_secs(1)), Stopped::NotRunning);
        let someone_else = Starting::new().unwrap();
        assert_eq!(
            someone_else.stop(Duration::from_secs(1)),
            Stopped::NotRunning
        );
        assert!(running(pid));
        assert_eq!(st.members(), vec![pid]);
        // Reaped by this test as soon as it dies, so that /proc shows it gone.
        let reaper = std::thread::spawn(move || child.wait());
        assert_eq!(st.stop(Duration::from_secs(10)), Stopped::Terminated);
        reaper.join().unwrap().unwrap();
        assert!(!running(pid));
    }

    #[test]
    fn an_interrupted_start_that_ignores_sigterm_is_killed_and_gone_when_stop_returns() {
        let st = Starting::new().unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
            .env("INVOCATION_ID", &st.invocation_id)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let reaper = std::thread::spawn(move || child.wait());
        // Let sh install its trap before the SIGTERM.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(st.stop(Duration::from_millis(300)), Stopped::Killed);
        assert!(
            st.members().is_empty(),
            "stop waits for the SIGKILL to take"
        );
        reaper.join().unwrap().unwrap();
        assert!(!running(pid));
    }

    #[test]
    fn a_temp_file_created_after_placing_was_recorded_is_found_and_others_are_not() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".tmp-theirs"), b"").unwrap();
        std::fs::write(d.path().join("kept"), b"").unwrap();
        let p = Placing {
            dir: d.path().to_owned(),
            since: now(),
            before: Placing::temp_names(d.path()),
        };
        assert_eq!(p.before, vec![".tmp-theirs".to_owned()]);
        let (_f, tmp) = crate::fsx::temp_in(d.path(), 0o600).unwrap();
        let left = p.left();
        assert_eq!(left, vec![tmp.to_path_buf()]);
    }

    #[test]
    fn a_state_file_others_could_edit_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run/n");
        State::prepare_dir(&run).unwrap();
        let st = State {
            node: "n".into(),
            ..State::default()
        };
        st.save(&run).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&run), 0o700);
        assert_eq!(mode(&State::path(&run)), 0o600);
        assert_eq!(State::load(&run, "n").unwrap().node, "n");
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&State::path(&run), 0o666);
        let e = State::load(&run, "n").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("writable by others"), "{e}");
        set(&State::path(&run), 0o644);
        assert!(State::load(&run, "n").is_ok(), "readable by others is fine");
        set(&run, 0o777);
        assert!(
            State::load(&run, "n").is_err(),
            "a directory others can write"
        );
        State::prepare_dir(&run).unwrap();
        assert_eq!(mode(&run), 0o700, "prepare_dir narrows it again");
        // A state file that is a symlink (to anything) is refused.
        std::fs::remove_file(State::path(&run)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", State::path(&run)).unwrap();
        assert!(State::load(&run, "n").is_err());
        std::fs::remove_file(State::path(&run)).unwrap();
        st.save(&run).unwrap();
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Owned by someone else (nobody): refused, even with a safe mode.
            std::os::unix::fs::chown(State::path(&run), Some(65534), None).unwrap();
            let e = State::load(&run, "n").unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn state_files_with_plain_installed_paths_still_read() {
        let v: State = serde_json::from_str(
            r#"{"node":"n","installed":["/etc/a",{"path":"/etc/b","dev":1,"ino":2}]}"#,
        )
        .unwrap();
        assert_eq!(v.installed[0], Placed::Path("/etc/a".into()));
        assert_eq!(v.installed[1].path(), Path::new("/etc/b"));
    }

    #[test]
    fn this_process_is_recognised_by_pid_start_time_and_boot() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        let p = Proc {
            kill_mode: KillModeState::Process,
            ..proc_of(me, s.start_ticks)
        };
        assert!(p.alive());
        let reused = Proc {
            start_ticks: s.start_ticks + 1,
            ..p.clone()
        };
        assert!(!reused.alive(), "a reused PID is another process");
        let other_boot = Proc {
            boot_id: Some("00000000-0000-0000-0000-000000000000".into()),
            ..p.clone()
        };
        assert!(!other_boot.alive(), "start times restart at every boot");
        // A state file from before boot ids were recorded: its start (epoch seconds) must agree
        // with boot time plus its start ticks.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let legacy = Proc {
            boot_id: None,
            started: boot_time().unwrap() + s.start_ticks / hz,
            ..p.clone()
        };
        assert!(legacy.alive());
        let legacy_elsewhen = Proc {
            started: legacy.started + 3600,
            ..legacy
        };
        assert!(!legacy_elsewhen.alive());
    }

    /// `setsid sh` printing the PID of a `sleep` it forked into its own new group, then
    /// becoming a `sleep` itself: (the leader, its group member).
    fn session_with_a_member(token: Option<&str>) -> (Child, i32) {
        let mut cmd = Command::new("setsid");
        cmd.args(["sh", "-c", "sleep 1000 & echo $!; exec sleep 1000"])
            .stdout(Stdio::piped());
        if let Some(t) = token {
            cmd.env("INVOCATION_ID", t);
        }
        let mut leader = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(leader.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let member: i32 = line.trim().parse().unwrap();
        assert_eq!(stat(member).unwrap().pgrp, leader.id() as i32);
        (leader, member)
    }

    fn running(pid: i32) -> bool {
        stat(pid).is_some_and(|s| s.state != 'Z')
    }

    fn kill9(pid: i32) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    #[test]
    fn a_process_that_took_over_the_pid_and_its_group_is_never_signalled() {
        let (mut leader, member) = session_with_a_member(None);
        let pid = leader.id() as i32;
        // The state's leader had this PID once, with another start time.
        let old = proc_of(pid, stat(pid).unwrap().start_ticks.saturating_sub(1));
        assert_eq!(stop(&old, Duration::from_millis(300)), Stopped::NotRunning);
        assert!(
            running(pid) && running(member),
            "nothing of theirs was signalled"
        );
        kill9(member);
        leader.kill().unwrap();
        leader.wait().unwrap();
    }

    #[test]
    fn once_the_leader_is_gone_a_group_member_is_signalled_only_with_the_components_id() {
        // Someone else's group whose leader exited (its PID stays free while the group lives):
        // the old code signalled every member of the group.
        let (mut leader, member) = session_with_a_member(None);
        let pid = leader.id() as i32;
        let ticks = stat(pid).unwrap().start_ticks;
        leader.kill().unwrap();
        leader.wait().unwrap();
        let old = proc_of(pid, ticks);
        assert_eq!(stop(&old, Duration::from_millis(300)), Stopped::NotRunning);
        assert!(
            running(member),
            "a member without the component's id is not ours"
        );
        kill9(member);

        // The component's own orphan carries its INVOCATION_ID: stopped.
        let token = "0123456789abcdef0123456789abcdef";
        let (mut leader, member) = session_with_a_member(Some(token));
        let pid = leader.id() as i32;
        let ticks = stat(pid).unwrap().start_ticks;
        leader.kill().unwrap();
        leader.wait().unwrap();
        let ours = proc_of(pid, ticks);
        assert_eq!(ours.members(), vec![member]);
        assert_eq!(stop(&ours, Duration::from_secs(10)), Stopped::Terminated);
        assert!(!running(member));
        // From another boot, even a member with the id is not provably ours.
        let (mut leader, member) = session_with_a_member(Some(token));
        let pid = leader.id() as i32;
        let ticks = stat(pid).unwrap().start_ticks;
        leader.kill().unwrap();
        leader.wait().unwrap();
        let stale = Proc {
            boot_id: Some("00000000-0000-0000-0000-000000000000".into()),
            ..proc_of(pid, ticks)
        };
        assert!(stale.members().is_empty());
        kill9(member);
    }
}
