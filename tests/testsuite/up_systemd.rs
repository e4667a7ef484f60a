//! `kbin up` / `status` / `down` where PID 1 is systemd: inside a real systemd machine
//! (tests/common/machines.rs), `up` installs the generated units and starts them with
//! `systemctl` in the cluster's order, each checked (Debian's etcd and containerd, the python
//! stand-ins for kube-*), `status` reads systemd's view, a second `up` keeps what runs, and
//! `down` stops every unit.

use crate::common;

use std::process::Command;

use common::machines::Machines;

const UNITS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
];

#[test]
fn up_under_systemd_starts_the_generated_units_in_order_and_down_stops_them() {
    let lab = Machines::boot("ups", &["n1"]);
    let m = &lab.machines[0];
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    common::toolchain::standin_toolchain(&home, "t", "1.30.14");
    let tree = work.path().join("cluster");
    let node = format!("n1={}", m.ip);
    let o = Command::new(env!("CARGO_BIN_EXE_kbin"))
        .env("KBIN_HOME", &home)
        .args(["gen", "cluster", "-q", "--toolchain", "t"])
        .args(["--host-profile", "sandbox", "--cgroup-v1"])
        .arg("--out")
        .arg(&tree)
        .args(["--control-plane", &node, "--worker", &node])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The tree and kbin itself go into the machine; everything else is what up installs.
    let root = m.root();
    let copy = Command::new("cp")
        .arg("-a")
        .arg(&tree)
        .arg(root.join("root/cluster"))
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::copy(env!("CARGO_BIN_EXE_kbin"), root.join("root/kbin")).unwrap();
    lab.exec(0, "sysctl -qw net.ipv4.ip_forward=1");
    // The kubelet's and containerd's data on filesystems of their own: up refuses a node whose
    // disk is under the kubelet's eviction thresholds, and this host's disk may well be.
    lab.exec(
        0,
        "for d in /var/lib/kubelet /var/lib/containerd; do mkdir -p $d && mount -t tmpfs -o size=256m tmpfs $d; done",
    );

    let up = lab.exec_output(0, "/root/kbin up --out /root/cluster 2>&1");
    let text = String::from_utf8_lossy(&up.stdout);
    assert!(up.status.success(), "kbin up under systemd:\n{text}");
    let active = lab.exec(0, &format!("systemctl is-active {}", UNITS.join(" ")));
    assert_eq!(
        active.lines().collect::<Vec<_>>(),
        vec!["active"; UNITS.len()],
        "{text}"
    );
    // Each unit started after the one before it was checked.
    let entered: Vec<u64> = UNITS
        .iter()
        .map(|u| {
            lab.exec(
                0,
                &format!("systemctl show -p ActiveEnterTimestampMonotonic --value {u}"),
            )
            .trim()
            .parse()
            .unwrap()
        })
        .collect();
    for (w, pair) in entered.windows(2).zip(UNITS.windows(2)) {
        assert!(
            w[0] < w[1],
            "{} started before {}: {entered:?}",
            pair[1],
            pair[0]
        );
    }
    // systemd runs the generated unit, byte for byte.
    let installed = lab.exec(0, "cat /etc/systemd/system/kubelet.service");
    assert_eq!(
        installed,
        std::fs::read_to_string(tree.join("nodes/n1/etc/systemd/system/kubelet.service")).unwrap()
    );

    // status: systemd's main PIDs, every component healthy.
    let status = lab.exec(0, "/root/kbin status --out /root/cluster --json");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let etcd_pid: u64 = lab
        .exec(0, "systemctl show -p MainPID --value etcd")
        .trim()
        .parse()
        .unwrap();
    assert!(status.contains(&etcd_pid.to_string()), "{v:#}");

    // A second up keeps what runs.
    let again = lab.exec_output(0, "/root/kbin up --out /root/cluster 2>&1");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let pid_after: u64 = lab
        .exec(0, "systemctl show -p MainPID --value etcd")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid_after, etcd_pid, "etcd was restarted by a second up");

    let st = lab.exec_output(0, "/root/kbin status --out /root/cluster -q");
    assert_eq!(st.status.code(), Some(0), "status exits 0 when healthy");

    // A unit systemd refuses to stop: down says so and fails, never "terminated".
    lab.exec(
        0,
        "mkdir -p /run/systemd/system/etcd.service.d && \
         printf '[Unit]\\nRefuseManualStop=yes\\n' > /run/systemd/system/etcd.service.d/refuse.conf && \
         systemctl daemon-reload",
    );
    let refused = lab.exec_output(0, "/root/kbin down --out /root/cluster --json");
    let out = String::from_utf8_lossy(&refused.stdout);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let etcd = v[0]["stopped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["component"] == "etcd")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(etcd["outcome"], "failed", "{v}");
    assert!(err.contains("could not stop: etcd"), "{err}");
    assert_eq!(lab.exec(0, "systemctl is-active etcd").trim(), "active");
    lab.exec(
        0,
        "rm -r /run/systemd/system/etcd.service.d && systemctl daemon-reload",
    );

    // down stops every unit.
    let down = lab.exec_output(0, "/root/kbin down --out /root/cluster 2>&1");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stdout)
    );
    let after = lab.exec_output(0, &format!("systemctl is-active {}", UNITS.join(" ")));
    let after = String::from_utf8_lossy(&after.stdout);
    assert!(
        after.lines().all(|l| l != "active"),
        "still active after down:\n{after}"
    );
    let st = lab.exec_output(0, "/root/kbin status --out /root/cluster -q");
    assert_eq!(
        st.status.code(),
        Some(3),
        "status exits 3 when nothing runs"
    );

    // An interrupted up stops the unit it started and says so (it used to say "it was
    // stopped" and leave it running).
    lab.exec(
        0,
        "mkdir -p /var/lib/kube-standin && echo kube-scheduler=never-healthy >> /var/lib/kube-standin/modes",
    );
    lab.exec(
        0,
        "/root/kbin up --out /root/cluster --control-plane-only --timeout 120 </dev/null >/root/up.log 2>&1 & \
         echo $! > /root/up.pid; \
         while ! grep -q '^kube-scheduler: started' /root/up.log; do \
           kill -0 $(cat /root/up.pid) 2>/dev/null || { cat /root/up.log; exit 1; }; sleep 0.1; done; \
         kill -INT $(cat /root/up.pid); \
         while kill -0 $(cat /root/up.pid) 2>/dev/null; do sleep 0.1; done",
    );
    let log = lab.exec(0, "cat /root/up.log");
    assert!(
        log.contains("interrupted before it was up: it was stopped (systemctl stop)"),
        "{log}"
    );
    let sched = lab.exec_output(0, "systemctl is-active kube-scheduler");
    assert_ne!(
        String::from_utf8_lossy(&sched.stdout).trim(),
        "active",
        "{log}"
    );
    assert_eq!(lab.exec(0, "systemctl is-active etcd").trim(), "active");
    let _ = lab.exec_output(0, "/root/kbin down --out /root/cluster");
}
