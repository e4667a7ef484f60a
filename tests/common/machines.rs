//! Real machines with systemd as PID 1, for tests that deploy onto several hosts (Ansible) or run
//! kbin under systemd: `systemd-nspawn` containers booted from one debootstrapped Debian bookworm
//! rootfs, each on its own overlay, all on a bridge inside a network namespace the test creates.
//!
//! ```ignore
//! let lab = Machines::boot("ans", &["cp1", "w1", "w2"]);   // ≈ 5 s once the rootfs is cached
//! lab.exec(0, "systemctl is-active sshd");               // run inside machine 0 (nsenter)
//! lab.host_command("ssh")...;                             // a command in the lab's network
//! // dropped (also while a test panics): machines stopped, overlays unmounted, netns deleted
//! ```
//!
//! The base rootfs is made once per package list with `debootstrap --variant=minbase` from
//! Debian's mirror (the package registry) and cached at [`rootfs_path`] (≈ 2.5 min and 260 MB
//! to make; every later run reuses it), under a lock so parallel tests build it once.
//! Machines boot with nspawn's seccomp filter off, its API filesystems writable, every
//! capability and the cgroup v1 controllers remounted read-write inside, so containerd and runc
//! can run in them (see shared/realworld/README.md), and `/dev/kmsg` a link to the console, as
//! kind makes it, so a real kubelet starts. Addresses: the bridge is
//! [`Machines::GATEWAY`], machine `i` is `10.77.0.(10+i)`, reachable only inside the namespace.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::tool;

/// Packages of the base rootfs besides minbase: systemd as PID 1, sshd and python3 for Ansible,
/// what the kube-* workers need on any host (iptables, conntrack, kmod; haproxy, the node-local
/// API load balancer of a cluster with several control planes), and ping, to show one
/// pod reaching another from its network namespace. Sorted: the cache key is made from this list.
pub const PACKAGES: &[&str] = &[
    "conntrack",
    "dbus",
    "haproxy",
    "iproute2",
    "iptables",
    "iputils-ping",
    "kmod",
    "openssh-server",
    "procps",
    "python3",
    "systemd",
    "systemd-sysv",
];

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
const CACHE: &str = "/var/cache/kbin-tests";

/// Where the base rootfs for [`PACKAGES`] is cached: `/var/cache/kbin-tests/rootfs-bookworm-<12
/// hex of sha256("bookworm minbase <packages joined by ,>")>`. A new package list is a new path.
pub fn rootfs_path() -> PathBuf {
    use sha2::Digest as _;
    let key = format!("{SUITE} minbase {}", PACKAGES.join(","));
    let hex = format!("{:x}", sha2::Sha256::digest(key.as_bytes()));
    Path::new(CACHE).join(format!("rootfs-{SUITE}-{}", &hex[..12]))
}

/// The cached base rootfs, made first if missing (under `<path>.lock`: a second test process
/// waits for the first to finish, then reuses its result). Built in `<path>.tmp` and renamed,
/// so a half-made rootfs is never used.
pub fn base_rootfs() -> PathBuf {
    let path = rootfs_path();
    if path.join("usr/lib/systemd/systemd").exists() {
        return path;
    }
    std::fs::create_dir_all(CACHE).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))
        .unwrap();
    lock.lock().unwrap();
    if path.join("usr/lib/systemd/systemd").exists() {
        return path;
    }
    let tmp = path.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).unwrap();
    }
    eprintln!(
        "making the machines' base rootfs at {} (debootstrap, ≈ 2.5 min, once)",
        path.display()
    );
    let o = Command::new(tool("debootstrap"))
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .args([SUITE])
        .arg(&tmp)
        .arg(MIRROR)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "debootstrap failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// One booted machine.
#[derive(Debug)]
pub struct Machine {
    /// Its name (hostname inside).
    pub name: String,
    /// Its address on the lab's bridge.
    pub ip: Ipv4Addr,
    dir: PathBuf,
    nspawn: Option<Child>,
    leader: u32,
}

impl Machine {
    /// The overlay's merged root, as the machine sees `/`.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The PID (on the host) of its systemd, 0 while powered off: `nsenter -t PID -a` enters it.
    pub fn leader(&self) -> u32 {
        self.leader
    }
}

/// N machines on a bridge in their own network namespace; everything is undone on drop.
#[derive(Debug)]
pub struct Machines {
    /// The machines, in the order given.
    pub machines: Vec<Machine>,
    netns: String,
    dir: tempfile::TempDir,
    base: PathBuf,
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let p = path.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*p))
}

impl Machines {
    /// The bridge's address, the lab's gateway (the Ansible controller's address in the lab).
    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    /// Boot one machine per name; `tag` (a few letters) names the network namespace
    /// (`kbin-<tag>-<pid>-<n>`). Panics with the reason when a machine does not boot.
    pub fn boot(tag: &str, names: &[&str]) -> Machines {
        for t in ["systemd-nspawn", "nsenter", "ip", "ssh-keygen", "mount"] {
            tool(t);
        }
        let base = base_rootfs();
        // nspawn wants its runtime directory on a tmpfs (it refuses otherwise on this kind of
        // host); shared by every machine of every test, and harmless to leave mounted.
        let run_dir = Path::new("/run/systemd/nspawn");
        std::fs::create_dir_all(run_dir).unwrap();
        if !mounted(run_dir) {
            let _ = Command::new(tool("mount"))
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(run_dir)
                .status();
        }
        // Every machine's systemd (and its journald, logind, udev...) takes inotify instances
        // from root's one per-user budget, 128 by default: a few labs at once (the test threads)
        // exhaust it, and a machine's PID 1 then exits at boot ("Failed to create control group
        // inotify object: Too many open files"). Raised, never lowered.
        let limit = Path::new("/proc/sys/fs/inotify/max_user_instances");
        let now: u64 = std::fs::read_to_string(limit)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if now < 8192 {
            let _ = std::fs::write(limit, "8192");
        }
        let netns = format!(
            "kbin-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("kbin-machines-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mut lab = Machines {
            machines: Vec::new(),
            netns,
            dir,
            base,
        };
        run(Command::new(tool("ip")).args(["netns", "add", &lab.netns]));
        let gw = format!("{}/24", Self::GATEWAY);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "kbr0", "type", "bridge"],
            vec!["addr", "add", &gw, "dev", "kbr0"],
            vec!["link", "set", "kbr0", "up"],
        ] {
            run(Command::new(tool("ip"))
                .args(["-n", &lab.netns])
                .args(&args));
        }
        // The test's key: root logs in with it, Ansible uses it.
        run(Command::new(tool("ssh-keygen"))
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kbin-test", "-f"])
            .arg(lab.ssh_key()));
        for (i, name) in names.iter().enumerate() {
            let ip = Ipv4Addr::new(10, 77, 0, 10 + i as u8);
            let mdir = lab.dir.path().join(name);
            for d in ["upper", "work", "root"] {
                std::fs::create_dir_all(mdir.join(d)).unwrap();
            }
            let ssh = mdir.join("upper/root/.ssh");
            std::fs::create_dir_all(&ssh).unwrap();
            std::fs::copy(
                lab.ssh_key().with_extension("pub"),
                ssh.join("authorized_keys"),
            )
            .unwrap();
            // The host's resolv.conf would name resolvers the lab cannot reach; machines
            // resolve nothing but /etc/hosts.
            std::fs::create_dir_all(mdir.join("upper/etc")).unwrap();
            std::fs::write(mdir.join("upper/etc/resolv.conf"), "").unwrap();
            lab.machines.push(Machine {
                name: (*name).to_owned(),
                ip,
                dir: mdir,
                nspawn: None,
                leader: 0,
            });
            lab.start(i);
        }
        for i in 0..lab.machines.len() {
            lab.wait_booted(i);
        }
        lab
    }

    /// The private key root logs in with on every machine.
    pub fn ssh_key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// The network namespace the machines' bridge is in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// A scratch directory that goes with the lab.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// `program` run inside the lab's network namespace (where the machines are reachable).
    pub fn host_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(tool("nsenter"));
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        c
    }

    /// Boot machine `i` from its overlay (again, after [`Machines::power_off`]); returns once
    /// nspawn runs (then [`Machines::wait_booted`]).
    pub fn start(&mut self, i: usize) {
        let m = &self.machines[i];
        let root = m.root();
        if !mounted(&root) {
            run(Command::new(tool("mount"))
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    self.base.display(),
                    m.dir.join("upper").display(),
                    m.dir.join("work").display()
                ))
                .arg(&root));
        }
        let log = std::fs::File::create(m.dir.join("console.log")).unwrap();
        // nsenter, not `ip netns exec`: that mounts a fresh /sys, without the cgroup
        // hierarchies nspawn needs.
        let child = Command::new(tool("nsenter"))
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(tool("systemd-nspawn"))
            .args([
                "--register=no",
                "--keep-unit",
                "--boot",
                "--console=passive",
                "--capability=all",
                "--property=Delegate=yes",
                "--network-bridge=kbr0",
            ])
            // nspawn keeps per-machine state under /run/systemd/nspawn by machine name: unique
            // per lab, so two test processes (two worktrees) booting "cp1" never share it.
            .arg(format!("--machine={}-{}", self.netns, m.name))
            .arg("--directory")
            .arg(&root)
            // runc joins session keyrings, which nspawn's seccomp filter refuses; containerd
            // needs the API filesystems writable (shared/realworld/README.md).
            .env("SYSTEMD_SECCOMP", "0")
            .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let m = &mut self.machines[i];
        m.nspawn = Some(child);
        m.leader = 0;
    }

    /// Wait until machine `i`'s systemd finished booting (`running`, or `degraded` with the
    /// failed units printed), then give it its address and make its cgroups writable.
    pub fn wait_booted(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let pid = self.machines[i]
            .nspawn
            .as_ref()
            .expect("started before waited for")
            .id();
        // The container's PID 1 is the child of nspawn's that runs systemd (nspawn forks
        // helpers first that exit).
        let leader = loop {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let systemd = children.split_whitespace().find(|c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|comm| comm.trim() == "systemd")
            });
            if let Some(c) = systemd {
                break c.parse::<u32>().unwrap();
            }
            self.assert_alive(i);
            assert!(
                Instant::now() < deadline,
                "machine {i}: nspawn started no systemd"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.machines[i].leader = leader;
        let state = loop {
            self.assert_alive(i);
            let o = self.exec_output(i, "systemctl is-system-running");
            let s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if s == "running" || s == "degraded" {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "machine {} did not boot in 90 s (state {s:?}); console:\n{}",
                self.machines[i].name,
                std::fs::read_to_string(self.machines[i].dir.join("console.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        if state == "degraded" {
            let o = self.exec_output(i, "systemctl --failed --no-legend --plain");
            eprintln!(
                "machine {} booted degraded; failed units:\n{}",
                self.machines[i].name,
                String::from_utf8_lossy(&o.stdout)
            );
        }
        let ip = self.machines[i].ip;
        // nspawn gives a container no /dev/kmsg, and a real kubelet refuses to start without it
        // (its OOM watcher reads it): the link kind's node image makes in containers too. And a
        // resolver, as a real machine has (minbase's resolv.conf is empty; kbin up refuses a
        // kubelet resolv.conf without one, which would stop CoreDNS): the bridge's address,
        // where nothing answers and from where nothing leaves.
        self.exec(
            i,
            &format!(
                "ip addr add {ip}/24 dev host0 && ip link set host0 up && ip route add default via {} && \
                 {{ grep -q '^nameserver' /etc/resolv.conf 2>/dev/null || echo 'nameserver {}' > /etc/resolv.conf; }} && \
                 for m in /sys/fs/cgroup/* /sys/fs/cgroup; do mount -o remount,bind,rw $m; done && \
                 {{ [ -e /dev/kmsg ] || ln -s /dev/console /dev/kmsg; }}",
                Self::GATEWAY,
                Self::GATEWAY
            ),
        );
    }

    fn assert_alive(&mut self, i: usize) {
        let m = &mut self.machines[i];
        if let Some(Some(st)) = m.nspawn.as_mut().map(|c| c.try_wait().unwrap()) {
            panic!(
                "machine {}: systemd-nspawn exited ({st}); console:\n{}",
                m.name,
                std::fs::read_to_string(m.dir.join("console.log")).unwrap_or_default()
            );
        }
    }

    /// Run `script` with `sh -c` inside machine `i` (all its namespaces); its output, whatever
    /// the exit status.
    pub fn exec_output(&self, i: usize, script: &str) -> Output {
        let leader = self.machines[i].leader;
        assert!(leader != 0, "machine {i} is not running");
        Command::new(tool("nsenter"))
            .args([
                "-t",
                &leader.to_string(),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "-C",
                "--",
            ])
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// [`Machines::exec_output`] that must succeed; its stdout.
    pub fn exec(&self, i: usize, script: &str) -> String {
        let o = self.exec_output(i, script);
        assert!(
            o.status.success(),
            "in {}: {script}: {}{}",
            self.machines[i].name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Stop machine `i` at once (its processes killed, as at a power cut); its overlay stays, so
    /// [`Machines::start`] boots it again with its files.
    pub fn power_off(&mut self, i: usize) {
        let m = &mut self.machines[i];
        if m.leader != 0 {
            // SIGKILL to a PID namespace's init kills everything in it.
            let _ = Command::new(tool("kill"))
                .args(["-KILL", &m.leader.to_string()])
                .status();
        }
        if let Some(mut c) = m.nspawn.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        m.leader = 0;
        let root = m.root();
        if mounted(&root) {
            let _ = Command::new(tool("umount")).arg("-l").arg(&root).status();
        }
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for i in 0..self.machines.len() {
            self.power_off(i);
        }
        // Deleting the namespace deletes the bridge and every veth in it.
        let _ = Command::new(tool("ip"))
            .args(["netns", "delete", &self.netns])
            .status();
        // The TempDir's own drop removes the overlays' directories.
    }
}
