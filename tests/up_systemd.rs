//! `kbin up` / `status` / `down` where PID 1 is systemd: inside a real systemd machine
//! (tests/common/machines.rs), `up` installs the generated units and starts them with
//! `systemctl` in the cluster's order, each checked (Debian's etcd and containerd, the python
//! stand-ins for kube-*), `status` reads systemd's view, a second `up` keeps what runs, and
//! `down` stops every unit.

mod common;

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
}
