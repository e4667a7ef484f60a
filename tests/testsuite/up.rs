//! `kbin up`, `down` and `status` (issue 12) against a real etcd (Debian's 3.4), a real
//! containerd, and stand-ins for the kube-* components (tests/standin/kube-standin.py: CI has no
//! Kubernetes server binaries) that serve the same health endpoints over TLS with the generated
//! certificates.
//!
//! Each test runs kbin in its own network and mount namespaces (`unshare`, then `nsenter` for
//! every kbin command): the node's address (10.99.0.2, not loopback: gen refuses that) sits on
//! the namespace's own `lo`, and /etc, /usr/local and /opt are overlays (/var/lib and /run tmpfs),
//! so `kbin up` installs into the real paths it always uses without touching this machine.
//! Needs root, unshare/nsenter, python3, etcd, containerd, iptables and conntrack.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::tool;
use kbin::manifest::{Arch, Digest, Images};
use kbin::store::Layout;
use kbin::toolchain::receipt::{BinaryReceipt, ComponentReceipt, Origin, RECEIPT_SCHEMA, Receipt};
use semver::Version;

const NODE_IP: &str = "10.99.0.2";

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A toolchain whose etcd, containerd, ctr, runc and shim run the real Debian binaries and whose
/// kube-* run the stand-in; the versions are ones whose gates match Debian's etcd 3.4 and
/// containerd 1.6 (config version 2).
fn install_toolchain(home: &Path, standin: &Path) {
    let layout = Layout::new(home);
    let dir = layout.toolchain_dir("t");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    let python = tool("python3");
    let comps = common::toolchain::versioned(&[
        ("kubernetes", "1.30.14"),
        ("etcd", "3.4.23"),
        ("containerd", "1.7.23"),
        ("runc", "1.1.14"),
        ("cni-plugins", "1.4.0"),
        ("crictl", "1.30.0"),
    ]);
    let mut components = vec![];
    for (c, v, bins) in &comps {
        let mut binaries = vec![];
        for b in *bins {
            let p = dir.join("bin").join(b);
            let text = if b.starts_with("kube-") || *b == "kubelet" {
                format!(
                    "#!/bin/sh\nexec {} {} {b} \"$@\"\n",
                    python.display(),
                    standin.display()
                )
            } else if [
                "etcd",
                "etcdctl",
                "containerd",
                "containerd-shim-runc-v2",
                "ctr",
                "runc",
            ]
            .contains(b)
            {
                // exec: the PID kbin records is the real program's.
                format!("#!/bin/sh\nexec {} \"$@\"\n", tool(b).display())
            } else {
                format!("#!/bin/sh\necho {b} {v}\n")
            };
            write_exec(&p, &text);
            binaries.push(BinaryReceipt {
                name: (*b).into(),
                path: format!("bin/{b}"),
                digest: digest.clone(),
                size: None,
                reports: None,
            });
        }
        components.push(ComponentReceipt {
            name: (*c).into(),
            version: Version::parse(v).unwrap(),
            origin: Origin::Download,
            artifacts: vec![],
            binaries,
            source: None,
        });
    }
    let r = Receipt {
        schema: RECEIPT_SCHEMA,
        pulled: Vec::new(),
        name: "t".into(),
        kubernetes: Version::parse("1.30.14").unwrap(),
        arch: Arch::Amd64,
        manifest: digest,
        created: "2026-11-22T23:00:00Z".into(),
        images: Some(Images {
            coredns: "1.11.1".into(),
            pause: "3.9".into(),
        }),
        components,
    };
    std::fs::write(layout.receipt_path("t"), r.to_toml()).unwrap();
}

/// A generated cluster, a toolchain and a pair of namespaces to run it in.
struct Lab {
    dir: tempfile::TempDir,
    holder: Child,
}

impl Lab {
    fn new(host_profile: &str) -> Lab {
        Lab::with_setup(host_profile, "")
    }

    /// A lab whose namespaces also run `setup` (shell lines) once /etc, /var/lib… are in place.
    fn with_setup(host_profile: &str, setup: &str) -> Lab {
        for t in [
            "unshare",
            "nsenter",
            "ip",
            "etcd",
            "containerd",
            "iptables",
            "conntrack",
        ] {
            tool(t);
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The stand-in is copied so its state (modes, Nodes) is this test's own.
        let standin = d.join("standin/kube-standin.py");
        std::fs::create_dir_all(d.join("standin/state")).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin/kube-standin.py"),
            &standin,
        )
        .unwrap();
        install_toolchain(&d.join("home"), &standin);
        let o = Command::new(env!("CARGO_BIN_EXE_kbin"))
            .env("KBIN_HOME", d.join("home"))
            .args([
                "gen",
                "cluster",
                "--toolchain",
                "t",
                "--host-profile",
                host_profile,
            ])
            .arg("--out")
            .arg(d.join("cluster"))
            .args([
                "--control-plane",
                &format!("node-0={NODE_IP}"),
                "--worker",
                &format!("node-0={NODE_IP}"),
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "gen: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut script = String::from("set -e\nip link set lo up\n");
        script.push_str(&format!("ip addr add {NODE_IP}/32 dev lo\n"));
        script.push_str("echo 1 > /proc/sys/net/ipv4/ip_forward\n");
        for (i, target) in ["/etc", "/usr/local", "/opt"].iter().enumerate() {
            let (u, w) = (d.join(format!("ov/{i}/u")), d.join(format!("ov/{i}/w")));
            std::fs::create_dir_all(&u).unwrap();
            std::fs::create_dir_all(&w).unwrap();
            script.push_str(&format!(
                "mount -t overlay overlay -o lowerdir={target},upperdir={},workdir={} {target}\n",
                u.display(),
                w.display()
            ));
        }
        // /var/lib on a tmpfs, not an overlay of this machine's disk: the kubelet's eviction
        // thresholds (checked before up) are then this lab's, whatever the disk holds.
        script.push_str("mount -t tmpfs -o size=2g tmpfs /var/lib\n");
        script.push_str("mount -t tmpfs tmpfs /run\n");
        script.push_str(setup);
        script.push_str(&format!(
            "touch {}\nexec sleep 100000\n",
            d.join("ready").display()
        ));
        let holder = Command::new(tool("unshare"))
            .args([
                "--mount",
                "--net",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let lab = Lab { dir, holder };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lab.dir.path().join("ready").exists() {
            assert!(Instant::now() < deadline, "the namespaces were not set up");
            std::thread::sleep(Duration::from_millis(50));
        }
        lab
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    fn set_mode(&self, component: &str, mode: &str) {
        let p = self.dir.path().join("standin/state/modes");
        let mut text = std::fs::read_to_string(&p).unwrap_or_default();
        text.push_str(&format!("{component}={mode}\n"));
        std::fs::write(p, text).unwrap();
    }

    /// `kbin ARGS --out DIR` inside the namespaces.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tool("nsenter"));
        c.arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "-n", "--"])
            .arg(env!("CARGO_BIN_EXE_kbin"))
            .args(args)
            .arg("--out")
            .arg(self.out())
            .env("KBIN_HOME", self.dir.path().join("home"))
            .env_remove("KBIN_LOG");
        c
    }

    fn kbin(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// PIDs of processes in the lab's network namespace (the holder aside).
    fn processes(&self) -> Vec<i32> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/net", self.holder.id())).unwrap();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| *p != self.holder.id() as i32)
            .filter(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/net"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            })
            .filter(|p| {
                // Zombies waiting for init are gone for every purpose here.
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
            })
            .collect()
    }

    /// `kbin status --json`: the node's components (its exit code, 0 healthy or 3 not, aside).
    fn status(&self) -> serde_json::Value {
        self.status_and_code().0
    }

    /// `kbin status --json`: the node's components and the exit code.
    fn status_and_code(&self) -> (serde_json::Value, i32) {
        let o = self.kbin(&["status", "--json"]);
        let code = o.status.code().unwrap_or(-1);
        assert!(code == 0 || code == 3, "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v[0]["components"].clone(), code)
    }

    /// `sh -c SCRIPT` inside the lab's namespaces; its stdout.
    fn sh(&self, script: &str) -> String {
        let o = Command::new(tool("nsenter"))
            .arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "-n", "--", "sh", "-c", script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn state_file(&self) -> PathBuf {
        self.out().join("run/node-0/state.json")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.kbin(&["down", "--grace", "1"]);
        for p in self.processes() {
            // SAFETY-free: `kill -9` of what is left in the lab's own namespace.
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn component<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == name)
        .unwrap()
}

const CONTROL_PLANE: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

#[test]
fn control_plane_comes_up_in_order_then_up_twice_keeps_it_and_down_leaves_nothing() {
    let lab = Lab::new("sandbox");
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // One line per step, in start order, each with its check.
    let pos: Vec<usize> = CONTROL_PLANE
        .iter()
        .map(|c| {
            err.find(&format!("{c}: healthy in"))
                .unwrap_or_else(|| panic!("{c}:\n{err}"))
        })
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{err}");
    assert!(
        err.contains("/health: {\"health\":\"true\"}"),
        "etcd's own answer:\n{err}"
    );
    assert!(
        err.contains("lease kube-system/kube-scheduler held by"),
        "{err}"
    );
    assert!(
        err.contains("clusterrolebinding kubeadm:cluster-admins created"),
        "{err}"
    );
    // The installed unit is the generated one, and etcd runs its exact command line.
    let unit = std::fs::read_to_string(
        lab.out()
            .join("nodes/node-0/etc/systemd/system/etcd.service"),
    )
    .unwrap();
    let status = lab.status();
    for c in CONTROL_PLANE {
        let s = component(&status, c);
        assert_eq!(s["state"], "running", "{c}: {s}");
        assert_eq!(s["healthy"], true, "{c}: {s}");
        assert!(s["since"].as_str().unwrap().contains('T'), "{s}");
    }
    assert_eq!(component(&status, "kubelet")["state"], "not-started");
    assert_eq!(
        lab.status_and_code().1,
        0,
        "status exits 0: everything started is up and healthy"
    );
    let etcd_pid = component(&status, "etcd")["pid"].as_i64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{etcd_pid}/cmdline")).unwrap();
    let words: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    assert!(words.iter().any(|w| w == "--name=node-0"), "{words:?}");
    assert!(unit.contains("--data-dir=/var/lib/etcd"), "{unit}");
    assert!(
        words.iter().any(|w| w == "--data-dir=/var/lib/etcd"),
        "{words:?}"
    );

    // Twice: everything kept, same PIDs.
    let o = lab.kbin(&["up", "--control-plane-only", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for s in v[0]["steps"].as_array().unwrap() {
        assert_eq!(s["action"], "kept", "{s}");
    }
    assert_eq!(v[0]["files_written"], 0, "an identical tree writes nothing");
    assert_eq!(v[0]["steps"][0]["pid"].as_i64(), Some(etcd_pid));

    let o = lab.kbin(&["down", "--grace", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let api = err
        .find("kube-apiserver: stopped")
        .unwrap_or_else(|| panic!("{err}"));
    let etcd = err.find("etcd: stopped").unwrap_or_else(|| panic!("{err}"));
    assert!(api < etcd, "kube-apiserver stops before etcd:\n{err}");
    assert_eq!(lab.processes(), Vec::<i32>::new(), "down leaves no process");
    let (status, code) = lab.status_and_code();
    for c in CONTROL_PLANE {
        assert_eq!(component(&status, c)["state"], "not-started");
    }
    assert_eq!(code, 3, "status exits 3 when nothing runs");

    // Up after down works; down --purge removes etcd's data.
    let o = lab.kbin(&["up", "--control-plane-only", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty(), "-q says nothing: {}", text(&o));
    let o = lab.kbin(&["down", "--purge", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["purged"][0], "/var/lib/etcd", "{v}");
    assert_eq!(lab.processes(), Vec::<i32>::new());
}

#[test]
fn whole_node_with_real_containerd_gets_its_pod_cidr_and_a_ready_node() {
    let lab = Lab::new("sandbox");
    let o = lab.kbin(&["up", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for c in [
        "containerd: healthy",
        "kubelet: healthy",
        "kube-proxy: healthy",
    ] {
        assert!(err.contains(c), "{c}:\n{err}");
    }
    assert!(
        err.contains("server Version:"),
        "containerd's own answer:\n{err}"
    );
    // NEXT-STEPS.md's podCIDR patch, done by up after the Node registered.
    let patch = std::fs::read_to_string(lab.dir.path().join("standin/state/patch-node-0")).unwrap();
    assert!(
        patch.contains("\"podCIDR\": \"10.200.0.0/24\"")
            || patch.contains("\"podCIDR\":\"10.200.0.0/24\""),
        "{patch}"
    );
    // kbin-pod-network ran before containerd: only pod traffic leaving the cluster is NATed.
    let net = err
        .find("kbin-pod-network: ran")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(net < err.find("containerd: healthy").unwrap(), "{err}");
    let nat = lab.sh("iptables -w -t nat -S");
    assert!(
        nat.contains("-A POSTROUTING -s 10.200.0.0/24 -m comment --comment \"kbin: pods leaving the cluster\" -j KBIN-POD-MASQ")
            && nat.contains("-A KBIN-POD-MASQ -d 10.200.0.0/16 -j RETURN")
            && nat.contains("-A KBIN-POD-MASQ -j MASQUERADE"),
        "{nat}"
    );
    // The add-ons: each object applied server-side as field manager kbin, after the Node was
    // Ready, and the rollout awaited.
    assert!(err.contains("addons: rolled out in"), "{err}");
    let applied = lab.dir.path().join("standin/state/applied");
    let log = std::fs::read_to_string(&applied).unwrap();
    assert_eq!(log.lines().count(), 7, "{log}");
    assert!(
        log.lines()
            .all(|l| l.contains(" application/apply-patch+yaml fieldManager=kbin")),
        "{log}"
    );
    assert!(
        log.contains("PATCH /apis/apps/v1/namespaces/kube-system/deployments/coredns "),
        "{log}"
    );
    let (status, code) = lab.status_and_code();
    let pn = component(&status, "kbin-pod-network");
    assert_eq!(
        (pn["state"].as_str(), pn["healthy"].as_bool()),
        (Some("done"), Some(true)),
        "{pn}"
    );
    assert_eq!(code, 0, "{status}");
    // Up again: the add-ons are applied again and nothing changes.
    let o = lab.kbin(&["up", "--timeout", "60", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = report[0]["steps"].as_array().unwrap();
    let addons = steps.iter().find(|s| s["component"] == "addons").unwrap();
    let notes: Vec<&str> = addons["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 7, "{addons}");
    assert!(
        notes.iter().all(|n| n.ends_with(": unchanged")),
        "{notes:?}"
    );
    assert_eq!(
        lab.sh("iptables -w -t nat -S"),
        nat,
        "a second start changes no rule"
    );

    let o = lab.kbin(&["down", "--grace", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(lab.processes(), Vec::<i32>::new(), "down leaves no process");
    // The network's ExecStop ran before the script was removed.
    let nat = lab.sh("iptables -w -t nat -S");
    assert!(!nat.contains("KBIN-POD-MASQ"), "{nat}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("kbin-pod-network: undone"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_resolv_conf_without_a_nameserver_is_refused_before_anything_starts() {
    // The kubelet's resolv.conf (the machine's here) names no resolver: CoreDNS would exit.
    let lab = Lab::with_setup("sandbox", "echo '# no resolver here' > /etc/resolv.conf\n");
    let o = lab.kbin(&["up", "--timeout", "20"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/etc/resolv.conf, the resolv.conf the kubelet gives the cluster DNS")
            && err.contains("--resolv-conf FILE"),
        "{err}"
    );
    assert_eq!(lab.processes(), Vec::<i32>::new(), "nothing started");
}

#[test]
fn an_addon_that_never_rolls_out_fails_up_naming_the_deployment_and_what_to_look_at() {
    let lab = Lab::new("sandbox");
    lab.set_mode("kube-apiserver", "no-rollout");
    let o = lab.kbin(&["up", "--timeout", "20"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not rolled out after 20s")
            && err.contains("Deployment kube-system/coredns: 0/2 available")
            && err.contains("kubectl -n kube-system get deployment,pods -l k8s-app=kube-dns"),
        "{err}"
    );
    // What was up stays up (as for any failed step); down stops it.
    let o = lab.kbin(&["down", "--grace", "10"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_step_that_never_becomes_healthy_fails_with_its_check_log_tail_and_next_command() {
    let lab = Lab::new("sandbox");
    lab.set_mode("kube-scheduler", "never-healthy");
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "4"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kube-scheduler on node node-0: not healthy after 4s"),
        "{err}"
    );
    assert!(err.contains("/healthz"), "names its check:\n{err}");
    assert!(
        err.contains("kube-scheduler.log:") && err.contains("| kube-scheduler: still starting..."),
        "log tail:\n{err}"
    );
    assert!(err.contains("hint: look further: less "), "{err}");
    // What already ran keeps running; the failing one too, for `kbin down` to stop.
    let (status, code) = lab.status_and_code();
    assert_eq!(code, 3, "status exits 3: a component is not healthy");
    for c in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        assert_eq!(component(&status, c)["healthy"], true, "{c}");
    }
    // An error (no such node) is 1.
    let o = lab.kbin(&["status", "--node", "nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(component(&status, "kube-scheduler")["state"], "running");
    assert_eq!(component(&status, "kube-scheduler")["healthy"], false);
}

#[test]
fn a_crash_is_reported_at_once_with_its_exit_status_and_log() {
    let lab = Lab::new("sandbox");
    lab.set_mode("kube-controller-manager", "crash");
    let began = Instant::now();
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "60"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        began.elapsed() < Duration::from_secs(40),
        "a crash does not wait for the timeout"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kube-controller-manager on node node-0: exited (exit status: 3)"),
        "{err}"
    );
    assert!(err.contains("fatal: stand-in told to crash"), "{err}");
    let (status, code) = lab.status_and_code();
    assert_eq!(
        component(&status, "kube-controller-manager")["state"],
        "exited"
    );
    assert_eq!(code, 3, "status exits 3: a started component has exited");
}

#[test]
fn down_kills_a_component_that_ignores_sigterm_after_the_grace_period() {
    let lab = Lab::new("sandbox");
    lab.set_mode("kube-apiserver", "ignore-term");
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = lab.kbin(&["down", "--grace", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stopped = v[0]["stopped"].as_array().unwrap();
    let api = stopped
        .iter()
        .find(|s| s["component"] == "kube-apiserver")
        .unwrap();
    assert_eq!(api["outcome"], "killed", "{v}");
    let etcd = stopped.iter().find(|s| s["component"] == "etcd").unwrap();
    assert_eq!(etcd["outcome"], "terminated", "{v}");
    assert_eq!(lab.processes(), Vec::<i32>::new());
}

#[test]
fn interrupting_up_stops_the_component_not_yet_up_and_keeps_the_others() {
    let lab = Lab::new("sandbox");
    lab.set_mode("kube-scheduler", "never-healthy");
    let mut child = lab
        .cmd(&["up", "--control-plane-only", "--timeout", "120"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // kbin's own line says the scheduler was started and its check is being waited for: the
    // interrupt then lands in that wait (no sleep guessing when that is).
    let mut err = String::new();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    let sched_pid: i32 = loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(n > 0, "kbin ended before starting the scheduler:\n{err}");
        err.push_str(&line);
        if let Some(rest) = line.strip_prefix("kube-scheduler: started (pid ") {
            break rest.split(')').next().unwrap().parse().unwrap();
        }
    };
    // nsenter execs kbin: the child's PID is kbin's.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    std::io::Read::read_to_string(&mut reader, &mut err).unwrap();
    let o = child.wait().unwrap();
    assert!(!o.success());
    assert!(err.contains("interrupted before it was up"), "{err}");
    assert!(
        !Path::new(&format!("/proc/{sched_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{sched_pid}/stat"))
                .unwrap_or_default()
                .contains(") Z"),
        "the scheduler is stopped"
    );
    let status = lab.status();
    assert_eq!(component(&status, "kube-scheduler")["state"], "not-started");
    assert_eq!(component(&status, "kube-apiserver")["healthy"], true);
}

#[test]
fn a_tree_for_systemd_hosts_is_refused_with_the_profile_it_needs_and_a_busy_port_is_named() {
    let lab = Lab::new("systemd");
    let o = lab.kbin(&["up"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("needs profile sandbox"), "{err}");
    assert!(
        err.contains("--host-profile sandbox"),
        "the regenerate command:\n{err}"
    );
    assert!(lab.processes().is_empty(), "nothing started");
    // A port held by someone else is named with the way to find who.
    let mut hold = Command::new(tool("nsenter"))
        .arg("-t")
        .arg(lab.holder.id().to_string())
        .args(["-m", "-n", "--"])
        .arg(tool("python3"))
        .args(["-c", "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 6443)); s.listen(); print('ok', flush=True); time.sleep(60)"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hold.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let o = lab.kbin(&["up", "--control-plane-only"]);
    let _ = hold.kill();
    let _ = hold.wait();
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("port 6443 (kube-apiserver) is already in use"),
        "{err}"
    );
    assert!(err.contains("ss -ltnp"), "{err}");
}

#[test]
fn a_filesystem_under_the_kubelets_eviction_threshold_is_refused_before_anything_starts() {
    // /var/lib on a 4 MiB tmpfs with 256 inodes: filled to 95% the kubelet would evict every pod
    // (nodefs.available<10%), then emptied but with its inodes used up (inodesFree<5%).
    let lab = Lab::with_setup(
        "sandbox",
        "mount -t tmpfs -o size=4m,nr_inodes=256 tmpfs /var/lib\n\
         dd if=/dev/zero of=/var/lib/fill bs=1k count=3900 2>/dev/null\n",
    );
    let o = lab.kbin(&["up"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/var/lib/kubelet (the kubelet's data) is on a filesystem with")
            && err.contains("nodefs.available<10%"),
        "{err}"
    );
    assert!(err.contains("imagefs.available<15%"), "{err}");
    assert!(err.contains("evictionHard in "), "the fix:\n{err}");
    assert!(lab.processes().is_empty(), "nothing started");

    let fill = Command::new(tool("nsenter"))
        .arg("-t")
        .arg(lab.holder.id().to_string())
        .args(["-m", "--", "sh", "-c"])
        .arg("rm /var/lib/fill && mkdir /var/lib/many && cd /var/lib/many && i=0 && while [ $i -lt 250 ]; do : > f$i; i=$((i+1)); done")
        .status()
        .unwrap();
    assert!(fill.success());
    let o = lab.kbin(&["up"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nodefs.inodesFree<5%"), "{err}");
    assert!(
        !err.contains("nodefs.available"),
        "space is free now:\n{err}"
    );
    assert!(lab.processes().is_empty(), "nothing started");
}

#[test]
fn down_unmounts_the_pods_network_namespaces_and_leaves_everyone_elses() {
    let lab = Lab::new("sandbox");
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    // A pod's namespace as containerd's CRI names it, and one of another user of the machine.
    let ns = |args: &str| {
        let o = Command::new(tool("nsenter"))
            .arg("-t")
            .arg(lab.holder.id().to_string())
            .args(["-m", "-n", "--", "sh", "-c", args])
            .output()
            .unwrap();
        assert!(o.status.success(), "{args}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ns("ip netns add cni-8e5c2a1f-0000-4000-8000-000000000001 && ip netns add someone-else");
    let o = lab.kbin(&["down", "--grace", "5", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let unmounted = v[0]["unmounted"].to_string();
    assert!(
        unmounted.contains("/run/netns/cni-8e5c2a1f-0000-4000-8000-000000000001"),
        "{v}"
    );
    assert!(!unmounted.contains("someone-else"), "{v}");
    let mounts = ns("cat /proc/self/mountinfo");
    assert!(mounts.contains(" /run/netns/someone-else "), "{mounts}");
    assert!(!mounts.contains("/run/netns/cni-"), "{mounts}");
}

#[test]
fn the_controller_manager_is_up_only_once_the_default_service_account_exists() {
    // Until its serviceaccount controller makes default/default, the API server refuses every
    // pod of the namespace: `kubectl run` right after `up` failed with real binaries.
    let lab = Lab::new("sandbox");
    lab.set_mode("kube-controller-manager", "no-serviceaccounts");
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "4"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kube-controller-manager on node node-0: not healthy after 4s"),
        "{err}"
    );
    assert!(
        err.contains("ServiceAccount default/default is not there yet"),
        "{err}"
    );
    assert_eq!(
        component(&lab.status(), "kube-scheduler")["state"],
        "not-started"
    );
}

/// The process group's leader took over the old PID: a `setsid` leader (with a child in its new
/// group) whose PID the state file gives as the component's, recorded with an older start time.
#[test]
fn down_never_signals_a_process_that_took_over_the_components_pid_and_group() {
    let lab = Lab::new("sandbox");
    let out = lab.sh(
        "setsid sh -c 'sleep 1000 & exec sleep 1001' </dev/null >/dev/null 2>&1 & \
         sleep_pid=$!; while [ \"$(cat /proc/$sleep_pid/comm)\" != sleep ]; do :; done; \
         echo $sleep_pid",
    );
    let pid: i32 = out.trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(f[2], pid.to_string(), "a group leader");
    let ticks: u64 = f[19].parse().unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let member = lab.sh(&format!("pgrep -g {pid} -f 'sleep 1000'"));
    let member: i32 = member.trim().parse().unwrap();
    let state = serde_json::json!({
        "node": "node-0",
        "components": {"etcd": {
            "pid": pid, "start_ticks": ticks - 1, "started": 0,
            "command": ["/usr/local/bin/etcd"], "log": "/dev/null",
            "kill_mode": "control-group", "boot_id": boot.trim(),
            "invocation_id": "0123456789abcdef0123456789abcdef"
        }}
    });
    std::fs::create_dir_all(lab.state_file().parent().unwrap()).unwrap();
    std::fs::write(lab.state_file(), state.to_string()).unwrap();
    std::fs::set_permissions(
        lab.state_file().parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::set_permissions(lab.state_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = lab.kbin(&["down", "--grace", "1", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["stopped"][0]["outcome"], "not-running", "{v}");
    for p in [pid, member] {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
        assert!(!s.contains(") Z"), "{p} was signalled: {s}");
    }
}

#[test]
fn up_writes_through_random_temp_names_and_never_follows_a_planted_symlink() {
    // The old installer copied to /usr/local/bin/.kbin-up-NAME, following a symlink there.
    let lab = Lab::with_setup(
        "sandbox",
        "mkdir -p /usr/local/bin /etc/kubernetes && echo mine > /opt/victim \
         && ln -s /opt/victim /usr/local/bin/.kbin-up-etcd \
         && ln -s /opt/victim /etc/kubernetes/.kbin-up-admin.conf\n",
    );
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(lab.sh("cat /opt/victim"), "mine\n");
    // Placed files are recorded with their identity, the state is the user's own.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.state_file()).unwrap()).unwrap();
    let etcd = state["installed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/usr/local/bin/etcd")
        .unwrap_or_else(|| panic!("{state}"));
    assert!(etcd["ino"].as_u64().is_some(), "{etcd}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&lab.state_file()), 0o600);
    assert_eq!(mode(lab.state_file().parent().unwrap()), 0o700);
    // No temporary file is left beside what was placed.
    let left =
        lab.sh("ls -a /usr/local/bin /etc/kubernetes /etc/kubernetes/pki | grep '^.tmp-' || true");
    assert_eq!(left, "", "temporary files left");
}

#[test]
fn an_install_failing_midway_leaves_a_state_that_down_purges_completely() {
    // A regular file where the tree has a directory: the install fails partway through, after
    // files before it (sorted order) were placed.
    let lab = Lab::with_setup(
        "sandbox",
        "mkdir -p /etc/kubernetes && echo in-the-way > /etc/kubernetes/pki\n",
    );
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "60"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(lab.processes().is_empty(), "nothing started");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.state_file()).unwrap()).unwrap();
    let placed: Vec<String> = state["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !placed.is_empty(),
        "files placed before the error are listed: {state}"
    );
    let listing = lab.sh(&format!("ls -d {} 2>&1 || true", placed.join(" ")));
    assert!(!listing.contains("No such file"), "{listing}");
    // Files the machine already had (the host's own /etc/containerd/config.toml, seen through
    // the lab's overlay) were kept aside: down puts them back, byte for byte.
    let replaced: Vec<String> = state["replaced"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|f| f["path"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let o = lab.kbin(&["down", "--purge"]);
    assert!(o.status.success(), "{}", text(&o));
    let ours: Vec<&String> = placed.iter().filter(|p| !replaced.contains(p)).collect();
    let listing = lab.sh(&format!(
        "for f in {}; do [ -e $f ] && echo $f; done; true",
        ours.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    assert_eq!(listing, "", "down --purge left files up placed");
    for r in &replaced {
        assert_eq!(
            lab.sh(&format!("cat {r}")),
            std::fs::read_to_string(r).unwrap(),
            "{r} is the machine's again"
        );
    }
    assert_eq!(
        lab.sh("cat /etc/kubernetes/pki"),
        "in-the-way\n",
        "not kbin's"
    );
}

#[test]
fn down_refuses_a_state_listing_paths_outside_what_the_tree_installs() {
    let lab = Lab::with_setup(
        "sandbox",
        "echo precious > /etc/precious && mkdir -p /opt/somedir\n",
    );
    let state = serde_json::json!({
        "node": "node-0",
        "installed": ["/etc/precious", {"path": "/etc/kubernetes/admin.conf", "dev": 1, "ino": 1}],
        "created_dirs": ["/opt/somedir"]
    });
    let run = lab.state_file();
    std::fs::create_dir_all(run.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        run.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(&run, state.to_string()).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = lab.kbin(&["down", "--json"]);
    assert!(!o.status.success(), "refusals fail down: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let refused = v[0]["refused"].to_string();
    assert!(
        refused.contains("/etc/precious") && refused.contains("/opt/somedir"),
        "{v}"
    );
    assert_eq!(lab.sh("cat /etc/precious"), "precious\n");
    lab.sh("test -d /opt/somedir");
    // A state file others could write is refused as a whole.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = lab.kbin(&["down"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("writable by others"),
        "{}",
        text(&o)
    );
    std::fs::remove_file(&run).unwrap();
}

#[test]
fn down_purge_never_descends_into_a_bind_mount_under_the_data_directory() {
    let lab = Lab::new("sandbox");
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    lab.sh(
        "mkdir -p /opt/keep /var/lib/etcd/keep && echo precious > /opt/keep/file \
         && mount --bind /opt/keep /var/lib/etcd/keep",
    );
    let o = lab.kbin(&["down", "--purge", "--grace", "5", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["kept_mounts"][0], "/var/lib/etcd/keep", "{v}");
    assert_eq!(lab.sh("cat /opt/keep/file"), "precious\n");
    // Everything else of etcd's data is gone.
    assert_eq!(lab.sh("ls -A /var/lib/etcd"), "keep\n");
}

#[test]
fn preflight_names_missing_runc_and_cni_plugins_with_their_versions_and_a_foreign_node_address() {
    let lab = Lab::new("sandbox");
    let tree = lab.out().join("nodes/node-0");
    std::fs::remove_file(tree.join("usr/local/bin/runc")).unwrap();
    std::fs::remove_file(tree.join("opt/cni/bin/bridge")).unwrap();
    let o = lab.kbin(&["up", "--timeout", "5"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/usr/local/bin/runc (runc 1.1.14) is missing"),
        "{err}"
    );
    assert!(
        err.contains("/opt/cni/bin/bridge (cni-plugins 1.4.0) is missing"),
        "{err}"
    );
    assert!(err.contains("kbin install 1.30.14"), "{err}");
    assert!(!err.contains("VERSION"), "{err}");
    assert!(lab.processes().is_empty(), "nothing started");
    // The node named with --node does not have its address here.
    lab.sh(&format!("ip addr del {NODE_IP}/32 dev lo"));
    let o = lab.kbin(&["up", "--node", "node-0", "--control-plane-only"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "node node-0 has address {NODE_IP}, which is not an address of this machine"
        )),
        "{err}"
    );
    assert!(lab.processes().is_empty(), "nothing started");
}

/// What a fault-injection run compares before and after: every path under the directories
/// `up` writes to (files with mode and size, the rest with type and mode) and the mount points.
fn machine_listing(lab: &Lab) -> (Vec<String>, Vec<String>) {
    let roots = "/etc /usr/local /opt /var/lib /run";
    let files = lab.sh(&format!(
        "{{ find {roots} -type f -printf '%p|f|%m|%s\\n'; find {roots} ! -type f -printf '%p|%y|%m\\n'; }} 2>/dev/null | sort"
    ));
    let mounts = lab.sh("awk '{print $5}' /proc/self/mountinfo | sort");
    (
        files.lines().map(str::to_owned).collect(),
        mounts.lines().map(str::to_owned).collect(),
    )
}

/// The lines only in `a` and only in `b`.
fn listing_diff(a: &[String], b: &[String]) -> String {
    let only = |x: &[String], y: &[String]| {
        x.iter()
            .filter(|l| !y.contains(l))
            .cloned()
            .collect::<Vec<_>>()
    };
    format!("gone: {:?} new: {:?}", only(a, b), only(b, a))
}

/// Issue 23's fault injection, run by `scripts/fault-up` (ignored by a plain `cargo test`: it
/// takes minutes): `kbin up --control-plane-only` killed with SIGKILL at FAULT_RUNS (default 20)
/// random points of a whole run, each followed by `kbin down --purge`, which must leave no
/// process, no mount and no path under /etc, /usr/local, /opt, /var/lib, /run other than before.
/// FAULT_SEED replays a run.
#[test]
#[ignore = "minutes long: run by scripts/fault-up"]
fn fault_injection_up_killed_at_random_points_then_down_purge_leaves_nothing() {
    let runs: usize = std::env::var("FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1
        });
    let mut x = seed;
    let mut next = move || {
        // xorshift64: reproducible from the seed.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let lab = Lab::new("sandbox");
    let pristine = machine_listing(&lab);
    // One whole run first: how long up takes here sets the range of kill points.
    let began = Instant::now();
    let o = lab.kbin(&["up", "--control-plane-only", "--timeout", "60", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let whole = began.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!(
        "fault-injection: the whole up placed {} files in {:.3}s",
        v[0]["files_written"], v[0]["install_seconds"]
    );
    let o = lab.kbin(&["down", "--purge", "--grace", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    let before = machine_listing(&lab);
    assert_eq!(
        before.1, pristine.1,
        "a clean up + down --purge leaves no mount"
    );
    // The machine's own files where the tree has one (this host's /etc/containerd/config.toml)
    // are kept aside by up and put back by down: a clean cycle changes nothing.
    assert!(
        before == pristine,
        "a clean up + down --purge changed: {}",
        listing_diff(&pristine.0, &before.0)
    );
    eprintln!("fault-injection: seed {seed}, a whole up takes {whole:?}, {runs} runs");
    let mut failures = Vec::new();
    for i in 0..runs {
        let at = Duration::from_micros(next() % (whole.as_micros() as u64).max(1));
        let mut child = lab
            .cmd(&["up", "--control-plane-only", "--timeout", "60", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The fault itself: SIGKILL after a random time (this sleep is the injection point,
        // not a wait for something).
        std::thread::sleep(at);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let o = lab.kbin(&["down", "--purge", "--grace", "5"]);
        let mut problems = Vec::new();
        if !o.status.success() {
            problems.push(format!("down --purge failed: {}", text(&o)));
        }
        let left = lab.processes();
        if !left.is_empty() {
            let cmds: Vec<String> = left
                .iter()
                .map(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                        .unwrap_or_default()
                })
                .collect();
            problems.push(format!("processes left: {cmds:?}"));
            for p in left {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
        }
        let after = machine_listing(&lab);
        if after.1 != before.1 {
            problems.push(format!("mounts: {}", listing_diff(&before.1, &after.1)));
        }
        if after.0 != before.0 {
            problems.push(format!("paths: {}", listing_diff(&before.0, &after.0)));
        }
        eprintln!(
            "run {:2}: SIGKILL at {:>8.3}s ({}): {}",
            i + 1,
            at.as_secs_f64(),
            if status.code().is_some() {
                "up had already ended"
            } else {
                "killed"
            },
            if problems.is_empty() {
                "clean".to_owned()
            } else {
                problems.join("; ")
            }
        );
        if !problems.is_empty() {
            failures.push((i + 1, at, problems));
            // Start the next run from a clean machine whatever this one left.
            let _ = lab.kbin(&["down", "--purge", "--grace", "1"]);
        }
    }
    eprintln!(
        "fault-injection: {} of {runs} runs clean (seed {seed})",
        runs - failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}
