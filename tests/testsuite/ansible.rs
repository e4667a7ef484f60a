//! The generated Ansible playbooks (issue 13) on real machines with systemd as PID 1
//! (tests/common/machines.rs: systemd-nspawn containers on a bridge in a network namespace the
//! test creates), over SSH with a key the test makes.

use crate::common;

use common::machines::Machines;

#[test]
fn machines_boot_with_systemd_and_sshd_and_leave_nothing_after_a_panic() {
    let (netns, dir) = {
        let lab = Machines::boot("hb", &["m1"]);
        assert!(lab.exec(0, "cat /proc/1/comm").contains("systemd"));
        lab.exec(0, "systemctl is-active ssh");
        let netns = lab.netns().to_owned();
        let dir = lab.scratch().to_owned();
        let root = lab.machines[0].root();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _lab = lab;
            panic!("a failing test");
        }));
        assert!(r.is_err());
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(
            !mounts.contains(&*root.to_string_lossy()),
            "overlay left mounted"
        );
        (netns, dir)
    };
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&netns),
        "netns left"
    );
    assert!(!dir.exists(), "machine directories left: {}", dir.display());
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &format!("systemd-nspawn.*{}", dir.display())])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "nspawn left running");
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const VENV: &str = "/opt/kbin-test-deps/ansible/bin";

/// A program of the ansible-core + ansible-lint venv scripts/setup-test-deps makes.
fn ansible_tool(name: &str) -> PathBuf {
    let p = Path::new(VENV).join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-test-deps (as root) to install ansible-core and ansible-lint",
        p.display()
    );
    p
}

/// `kbin gen cluster` for the lab's machines from toolchain `tc` into `out`: the first is the
/// control plane, the others workers (a lone machine is both).
fn generate(home: &Path, out: &Path, lab: &Machines, tc: &str) {
    run_gen(gen_command(home, out, lab, tc));
}

/// The command [`generate`] runs, for a test to add to.
fn gen_command(home: &Path, out: &Path, lab: &Machines, tc: &str) -> Command {
    gen_command_with(home, out, &lab.machines, tc, 1)
}

/// [`gen_command`] for some of the lab's machines only.
fn gen_command_for(home: &Path, out: &Path, m: &[common::machines::Machine], tc: &str) -> Command {
    gen_command_with(home, out, m, tc, 1)
}

/// [`gen_command`] for machines `m`, the first `control_planes` of them control planes, the
/// others workers (a lone machine is both).
fn gen_command_with(
    home: &Path,
    out: &Path,
    m: &[common::machines::Machine],
    tc: &str,
    control_planes: usize,
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kbin"));
    c.env("KBIN_HOME", home)
        .args([
            "gen",
            "cluster",
            "--toolchain",
            tc,
            "--host-profile",
            "sandbox",
            "--cgroup-v1",
        ])
        .arg("--out")
        .arg(out)
        .args(["--cluster-ip", &m[0].ip.to_string()]);
    for cp in &m[..control_planes] {
        c.args(["--control-plane", &format!("{}={}", cp.name, cp.ip)]);
    }
    let workers = if m.len() == 1 {
        m
    } else {
        &m[control_planes..]
    };
    for w in workers {
        c.args(["--worker", &format!("{}={}", w.name, w.ip)]);
    }
    c
}

fn run_gen(mut c: Command) {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Run `book` of `tree/ansible` against the lab (from inside its network namespace), with the
/// lab's key; the output, whatever the status. Its log is also kept in the lab's scratch dir.
fn playbook(lab: &Machines, tree: &Path, book: &str, extra: &[&str]) -> Output {
    let t = Instant::now();
    let o = lab
        .host_command(ansible_tool("ansible-playbook"))
        .arg("-i")
        .arg(tree.join("ansible/inventory.yml"))
        .arg(tree.join("ansible").join(book))
        .args(extra)
        .env("ANSIBLE_CONFIG", tree.join("ansible/ansible.cfg"))
        .env("ANSIBLE_HOME", lab.scratch().join("ansible-home"))
        .env("ANSIBLE_PRIVATE_KEY_FILE", lab.ssh_key())
        // The lab's own ssh master connections: by default they live in ~/.ansible/cp, keyed
        // by address and user, and another lab (another test process) reuses the same addresses.
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", lab.scratch().join("cp"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env(
            "ANSIBLE_SSH_ARGS",
            "-o UserKnownHostsFile=/dev/null -o ControlMaster=auto -o ControlPersist=120s",
        )
        // ssh's control sockets are named after user@host:port: another lab with the same
        // addresses (in its own network namespace) must never share this lab's.
        .env(
            "ANSIBLE_SSH_CONTROL_PATH_DIR",
            lab.scratch().join("ansible-home/cp"),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_STDOUT_CALLBACK", "default")
        .output()
        .unwrap();
    eprintln!(
        "ansible-playbook {book} {extra:?}: {} in {:.1} s",
        o.status,
        t.elapsed().as_secs_f64()
    );
    o
}

/// The PLAY RECAP: per host, its counters (`ok`, `changed`, `unreachable`, `failed`…).
fn recap(
    o: &Output,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, u32>> {
    let text = String::from_utf8_lossy(&o.stdout);
    let tail = text.rsplit_once("PLAY RECAP").map(|(_, t)| t).unwrap_or("");
    tail.lines()
        .filter_map(|l| {
            let (host, counts) = l.split_once(" : ")?;
            let counts = counts
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect();
            Some((host.trim().to_owned(), counts))
        })
        .collect()
}

fn show(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_converged(o: &Output, changed: Option<u32>) {
    assert!(o.status.success(), "playbook failed:\n{}", show(o));
    let r = recap(o);
    assert!(!r.is_empty(), "{}", show(o));
    for (host, c) in &r {
        assert_eq!(c["failed"], 0, "{host}: {}", show(o));
        assert_eq!(c["unreachable"], 0, "{host}: {}", show(o));
        if let Some(n) = changed {
            assert_eq!(c["changed"], n, "{host} changed things:\n{}", show(o));
        }
    }
}

/// The first time (host clock) a stand-in `component` on machine `i` started at `version`.
fn started_at(lab: &Machines, i: usize, component: &str, version: &str) -> f64 {
    let log = lab.exec(i, &format!("cat /var/lib/kube-standin/started-{component}"));
    log.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&version)).then(|| f[1].parse().unwrap())
        })
        .next()
        .unwrap_or_else(|| panic!("{component} never started at {version} on machine {i}: {log}"))
}

/// Every worker routes each other worker's pod subnet via that worker's address, with kbin's
/// route protocol (kbin-pod-network.service); the subnets are read from the inventory.
fn assert_pod_routes(lab: &Machines, tree: &Path) {
    for i in 0..lab.machines.len() {
        if let Err(e) = pod_routes(lab, tree, i) {
            panic!("{e}");
        }
    }
}

/// [`assert_pod_routes`] for machine `i`: what is missing, if anything.
fn pod_routes(lab: &Machines, tree: &Path, i: usize) -> Result<(), String> {
    let inv = std::fs::read_to_string(tree.join("ansible/inventory.yml")).unwrap();
    let inv: serde_yaml_ng::Value = serde_yaml_ng::from_str(&inv).unwrap();
    let hosts = &inv["all"]["hosts"];
    let workers: Vec<&str> = inv["all"]["children"]["workers"]["hosts"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    let m = &lab.machines[i];
    if !workers.contains(&m.name.as_str()) {
        return Ok(());
    }
    let routes = lab.exec(i, "ip -4 route show proto 152");
    for w in workers.iter().filter(|w| **w != m.name) {
        let want = format!(
            "{} via {} ",
            hosts[*w]["kbin_pod_subnet"].as_str().unwrap(),
            hosts[*w]["kbin_node_ip"].as_str().unwrap()
        );
        if !routes.lines().any(|l| l.starts_with(&want)) {
            return Err(format!(
                "{}: no route {want}for {w}'s pods:\n{routes}",
                m.name
            ));
        }
    }
    Ok(())
}

/// Worker `i` asks the API five times a second through its load balancer (its kubelet's
/// kubeconfig), recording each answer, until [`no_request_failed`].
fn start_asking_the_api(lab: &Machines, i: usize) {
    lab.exec(
        i,
        "setsid sh -c 'while [ ! -e /tmp/stop ]; do \
           if kubectl --kubeconfig /etc/kubernetes/kubelet.conf get --raw /version >/dev/null 2>>/tmp/errors; \
           then echo ok; else echo fail; fi >>/tmp/results; sleep 0.2; done' >/dev/null 2>&1 < /dev/null &",
    );
}

/// Stop [`start_asking_the_api`] on worker `i`: not one request failed, and more than
/// `min_ok` were answered `during` what the test did.
fn no_request_failed(lab: &Machines, i: usize, min_ok: usize, during: &str) {
    lab.exec(i, "touch /tmp/stop; sleep 1");
    let results = lab.exec(i, "cat /tmp/results");
    let (ok, failed) = (
        results.matches("ok").count(),
        results.matches("fail").count(),
    );
    assert!(
        failed == 0 && ok > min_ok,
        "{failed} of {} requests failed during {during}:\n{}",
        ok + failed,
        lab.exec(i, "cat /tmp/errors; true")
    );
}

/// Machine `i`'s own etcd member answers its health check (with the health-check client's
/// certificate, as the playbooks ask).
fn assert_local_etcd_healthy(lab: &Machines, i: usize) {
    let pki = "/etc/kubernetes/pki/etcd";
    let health = lab.exec(
        i,
        &format!(
            "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={pki}/ca.crt \
             --cert={pki}/healthcheck-client.crt --key={pki}/healthcheck-client.key endpoint health 2>&1"
        ),
    );
    assert!(
        health.contains("is healthy"),
        "{}: {health}",
        lab.machines[i].name
    );
}

#[test]
fn site_deploys_three_machines_converges_survives_a_machine_down_upgrades_one_at_a_time_and_removes_one()
 {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    common::toolchain::standin_toolchain(&home, "old", "1.30.14");
    // The pause image, as `kbin install` pulls it: the workers get it in their bundle.
    common::toolchain::add_pause_image(&home, "old", "3.9");
    common::toolchain::standin_toolchain(&home, "new", "1.31.9");
    let mut lab = Machines::boot("ans", &["cp1", "w1", "w2"]);
    let tree = work.path().join("cluster");
    generate(&home, &tree, &lab, "old");

    // Deploy: every service up, in order, checked.
    let o = playbook(&lab, &tree, "site.yml", &[]);
    assert_converged(&o, None);
    assert_local_etcd_healthy(&lab, 0);
    assert_eq!(
        lab.exec(0, "systemctl show -p FragmentPath --value etcd")
            .trim(),
        "/etc/systemd/system/etcd.service"
    );
    for i in [1, 2] {
        let name = &lab.machines[i].name;
        lab.exec(i, "systemctl is-active containerd");
        let v = lab.exec(i, "ctr --address /run/containerd/containerd.sock version");
        assert!(v.contains("Server:"), "{v}");
        assert_eq!(
            lab.exec(i, "cat /etc/containerd/config.toml"),
            std::fs::read_to_string(tree.join(format!("nodes/{name}/etc/containerd/config.toml")))
                .unwrap()
        );
        assert!(
            lab.exec(i, "systemctl show -p ExecStart --value containerd")
                .contains("/etc/containerd/config.toml")
        );
        for unit in ["kubelet", "kube-proxy"] {
            lab.exec(i, &format!("systemctl is-active {unit}"));
        }
        // Air-gapped: the bundled pause image is in containerd before the kubelet needs it.
        let images = lab.exec(
            i,
            "ctr --address /run/containerd/containerd.sock -n k8s.io images ls -q",
        );
        assert!(
            images.lines().any(|l| l == "registry.k8s.io/pause:3.9"),
            "{name}: {images}"
        );
        let node = lab.exec(
            0,
            &format!("kubectl --kubeconfig /etc/kubernetes/admin.conf get node {name} -o json"),
        );
        assert!(
            node.contains("podCIDR"),
            "the playbook gave {name} its pod subnet: {node}"
        );
    }

    assert_pod_routes(&lab, &tree);
    // The add-ons, applied once from the first control plane (server-side, field manager kbin).
    let applied = lab.exec(0, "cat /var/lib/kube-standin/applied");
    assert_eq!(applied.lines().count(), 7, "{applied}");
    assert!(
        applied
            .lines()
            .all(|l| l.ends_with(" application/apply-patch+yaml fieldManager=kbin")),
        "{applied}"
    );

    // A second run changes nothing (-v: a change it reports shows why).
    assert_converged(&playbook(&lab, &tree, "site.yml", &["-v"]), Some(0));

    // A tarball changed after `gen` is refused on the host, by name, before anything is
    // unpacked or installed; regenerating the tree mends it.
    let tarball = tree.join("nodes/w1.tar.gz");
    let mut bytes = std::fs::read(&tarball).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&tarball, &bytes).unwrap();
    let stages = lab.exec(1, "ls /var/lib/kbin/stage");
    let o = playbook(&lab, &tree, "site.yml", &[]);
    let out = show(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("nodes/w1.tar.gz on w1 has sha256")
            && out.contains("Run `kbin gen cluster` again"),
        "{out}"
    );
    assert_eq!(recap(&o)["w1"]["failed"], 1, "{out}");
    assert_eq!(lab.exec(1, "ls /var/lib/kbin/stage"), stages);
    generate(&home, &tree, &lab, "old");
    assert_converged(&playbook(&lab, &tree, "site.yml", &[]), None);

    // A machine that is down fails the run, by name; once it is back a rerun converges.
    lab.power_off(2);
    let o = playbook(&lab, &tree, "site.yml", &[]);
    assert!(!o.status.success(), "{}", show(&o));
    let out = show(&o);
    assert!(
        out.contains("fatal: [w2]: UNREACHABLE!") && out.contains("10.77.0.12"),
        "{out}"
    );
    assert_eq!(recap(&o)["w2"]["unreachable"], 1, "{out}");
    lab.start(2);
    lab.wait_booted(2);
    // Routes survive the restart, before any playbook runs: kbin-pod-network.service is
    // enabled, and retries until the machine's address (set once it booted) is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Err(e) = pod_routes(&lab, &tree, 2) {
        assert!(
            std::time::Instant::now() < deadline,
            "after a restart: {e}\n{}",
            lab.exec(2, "systemctl status kbin-pod-network --no-pager 2>&1; true")
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    lab.exec(2, "iptables -w -t nat -S KBIN-POD-MASQ");
    assert_converged(&playbook(&lab, &tree, "site.yml", &[]), None);
    lab.exec(
        2,
        "systemctl is-active containerd kubelet kube-proxy kbin-pod-network",
    );
    assert_pod_routes(&lab, &tree);

    // A new toolchain: --check --diff shows the change and changes nothing.
    generate(&home, &tree, &lab, "new");
    let o = playbook(&lab, &tree, "site.yml", &["--check", "--diff"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(recap(&o)["w1"]["changed"] > 0, "{}", show(&o));
    assert!(
        lab.exec(1, "kubelet --version").contains("v1.30.14"),
        "check mode changed nothing"
    );

    // upgrade.yml: one machine at a time, control plane first, then w1, then w2.
    let o = playbook(&lab, &tree, "upgrade.yml", &[]);
    assert_converged(&o, None);
    for (i, bin) in [(0, "kube-apiserver"), (1, "kubelet"), (2, "kube-proxy")] {
        let v = lab.exec(i, &format!("{bin} --version"));
        assert!(v.contains("v1.31.9"), "{bin} on {i}: {v}\n{}", show(&o));
    }
    // Each archive was unpacked into a new directory named by its digest; the old ones are gone.
    let stages = lab.exec(1, "ls /var/lib/kbin/stage");
    assert_eq!(
        stages.lines().count(),
        2,
        "node and worker binaries only: {stages}"
    );
    let running = lab.exec(
        0,
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /version",
    );
    assert!(running.contains("v1.31.9"), "{running}");
    let cp = started_at(&lab, 0, "kube-scheduler", "v1.31.9");
    let w1_first = started_at(&lab, 1, "kubelet", "v1.31.9");
    let w1_last = started_at(&lab, 1, "kube-proxy", "v1.31.9");
    let w2_first = started_at(&lab, 2, "kubelet", "v1.31.9");
    assert!(
        cp < w1_first && w1_last < w2_first,
        "order: cp1 {cp}, w1 {w1_first}..{w1_last}, w2 {w2_first}"
    );
    let log = String::from_utf8_lossy(&o.stdout);
    let drains: Vec<&str> = log
        .split("TASK [Drain the Node")
        .skip(1)
        .filter_map(|t| t.lines().find(|l| l.starts_with("changed: [")))
        .collect();
    assert_eq!(
        drains,
        [
            "changed: [w1 -> cp1(10.77.0.10)]",
            "changed: [w2 -> cp1(10.77.0.10)]"
        ],
        "{log}"
    );
    let cordons = lab.exec(0, "cat /var/lib/kube-standin/cordon-w1");
    assert!(
        cordons.starts_with("True") && cordons.lines().last().unwrap().starts_with("False"),
        "drained then uncordoned: {cordons}"
    );
    // And the upgraded cluster is a converged one.
    assert_converged(&playbook(&lab, &tree, "site.yml", &[]), Some(0));

    // w2 leaves. Regenerated without it, the inventory lists it as removed (gen says to run
    // remove.yml), w1 keeps its pod subnet, and remove.yml drains w2, stops its services (its
    // routes and NAT rules go), deletes its Node and brings the others to the new tree: w1 no
    // longer routes w2's pods.
    let subnet = |name: &str| {
        let inv: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(tree.join("ansible/inventory.yml")).unwrap(),
        )
        .unwrap();
        inv["all"]["hosts"][name]["kbin_pod_subnet"]
            .as_str()
            .map(str::to_owned)
    };
    let (w1_subnet, w2_subnet) = (subnet("w1").unwrap(), subnet("w2").unwrap());
    assert!(
        lab.exec(1, "ip -4 route show proto 152")
            .contains(&w2_subnet)
    );
    let o = gen_command_for(&home, &tree, &lab.machines[..2], "new")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("node w2 (10.77.0.12) is no longer in the cluster: run ansible/remove.yml"),
        "{err}"
    );
    assert_eq!(subnet("w1").unwrap(), w1_subnet);
    assert_eq!(subnet("w2"), None);
    let o = playbook(&lab, &tree, "remove.yml", &[]);
    assert_converged(&o, None);
    assert!(recap(&o).contains_key("w2"), "{}", show(&o));
    let routes = lab.exec(1, "ip -4 route show proto 152");
    assert!(
        !routes.contains(&w2_subnet),
        "w1 still routes w2's pods: {routes}"
    );
    assert_eq!(lab.exec(2, "ip -4 route show proto 152").trim(), "");
    for unit in ["kubelet", "kube-proxy", "containerd", "kbin-pod-network"] {
        let state = lab.exec(
            2,
            &format!("systemctl is-enabled {unit}; systemctl is-active {unit}; true"),
        );
        assert_eq!(state, "disabled\ninactive\n", "{unit} on w2");
    }
    assert_eq!(
        lab.exec(
            2,
            "iptables -w -t nat -S KBIN-POD-MASQ >/dev/null 2>&1 && echo present || echo absent"
        ),
        "absent\n"
    );
    let cordoned = lab.exec(0, "cat /var/lib/kube-standin/cordon-w2");
    assert!(cordoned.starts_with("True "), "w2 was drained: {cordoned}");
    lab.exec(0, "test -e /var/lib/kube-standin/deleted-w2");
    let gone = lab.exec(
        0,
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get node w2 2>&1; true",
    );
    assert!(gone.contains("NotFound"), "{gone}");
    // Again: what is gone is skipped; then site.yml has nothing left to do.
    assert_converged(&playbook(&lab, &tree, "remove.yml", &[]), None);
    assert_converged(&playbook(&lab, &tree, "site.yml", &[]), Some(0));
}

#[test]
fn a_worker_keeps_the_api_through_an_upgrade_a_renewal_every_ca_rotation_and_a_control_plane_lost()
{
    // One lab of three control planes and a worker for everything a rollout must survive
    // without a failed request: booting and deploying it is a third of the time.
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    common::toolchain::standin_toolchain(&home, "old", "1.30.14");
    common::toolchain::standin_toolchain(&home, "new", "1.31.9");
    let mut lab = Machines::boot("ha", &["cp1", "cp2", "cp3", "w1"]);
    let tree = work.path().join("cluster");
    let gen_ha =
        |lab: &Machines, tc: &str| run_gen(gen_command_with(&home, &tree, &lab.machines, tc, 3));
    gen_ha(&lab, "old");
    assert_converged(&playbook(&lab, &tree, "site.yml", &[]), None);
    lab.exec(3, "systemctl is-active kbin-apiserver-lb");
    // The worker's kubeconfigs name its load balancer; through it an API server answers.
    let api = "kubectl --kubeconfig /etc/kubernetes/kubelet.conf get --raw /readyz";
    assert!(
        lab.exec(
            3,
            "grep server: /etc/kubernetes/kubelet.conf /etc/kubernetes/kube-proxy.conf"
        )
        .matches("https://127.0.0.1:6444")
        .count()
            == 2
    );
    assert_eq!(lab.exec(3, api).trim(), "ok");

    // A rolling upgrade of every API server (one at a time, each failing /readyz while it
    // still serves, then stopping) while the worker asks the API five times a second through
    // its load balancer: not one request fails (checked at the end, after every rollout).
    start_asking_the_api(&lab, 3);
    gen_ha(&lab, "new");
    assert_converged(&playbook(&lab, &tree, "upgrade.yml", &[]), None);
    for i in 0..3 {
        assert!(lab.exec(i, "kube-apiserver --version").contains("v1.31.9"));
    }
    // Every leaf certificate renewed; upgrade.yml rolls it out with the rotation's first step
    // below, whose checks compare each machine's API server certificate with the tree's.
    let o = Command::new(env!("CARGO_BIN_EXE_kbin"))
        .env("KBIN_HOME", &home)
        .args(["certs", "renew", "--out"])
        .arg(&tree)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ansible/upgrade.yml"),
        "{}",
        show(&o)
    );

    // Every CA rotated in three steps, each rolled out by upgrade.yml.
    let old_ca = std::fs::read_to_string(tree.join("pki/ca.crt")).unwrap();
    let old_etcd_ca = std::fs::read_to_string(tree.join("pki/etcd/ca.crt")).unwrap();
    let old_fp_ca = std::fs::read_to_string(tree.join("pki/front-proxy-ca.crt")).unwrap();
    // A leaf each old CA signed, to check what the machines trust.
    let old_api = std::fs::read_to_string(tree.join("pki/apiserver.crt")).unwrap();
    let old_etcd = std::fs::read_to_string(tree.join("pki/apiserver-etcd-client.crt")).unwrap();
    let etcd_health = |i: usize| {
        let pki = "/etc/kubernetes/pki";
        lab.exec(
            i,
            &format!(
                "ETCDCTL_API=3 etcdctl --endpoints=https://{ip}:2379 --cacert={pki}/etcd/ca.crt \
                 --cert={pki}/apiserver-etcd-client.crt --key={pki}/apiserver-etcd-client.key \
                 endpoint health 2>&1",
                ip = lab.machines[i].ip
            ),
        )
    };
    // openssl on this side (the machines have none), on PEM texts.
    let scratch = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str], pems: &[&str]| {
        let mut c = Command::new(common::tool("openssl"));
        c.args(args);
        for (n, pem) in pems.iter().enumerate() {
            let p = scratch.path().join(format!("{n}.pem"));
            std::fs::write(&p, pem).unwrap();
            c.arg(p);
        }
        c.output().unwrap()
    };
    let serial_issuer = |pem: &str| {
        let o = openssl(&["x509", "-noout", "-serial", "-issuer", "-in"], &[pem]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let trusts = |bundle: &str, leaf: &str| {
        openssl(&["verify", "-CAfile"], &[bundle, leaf])
            .status
            .success()
    };
    for (step, bundle) in [("begin", 2), ("use", 2), ("finish", 1)] {
        let mut k = Command::new(env!("CARGO_BIN_EXE_kbin"));
        k.env("KBIN_HOME", &home).args(["certs", "rotate-ca", step]);
        if step == "begin" {
            k.args(["--ca", "all"]);
        }
        let o = k.arg("--out").arg(&tree).output().unwrap();
        assert!(o.status.success(), "{step}: {}", show(&o));
        assert_converged(&playbook(&lab, &tree, "upgrade.yml", &[]), None);
        let ca = std::fs::read_to_string(tree.join("pki/ca.crt")).unwrap();
        let etcd_ca = std::fs::read_to_string(tree.join("pki/etcd/ca.crt")).unwrap();
        let apiserver = std::fs::read_to_string(tree.join("pki/apiserver.crt")).unwrap();
        assert_eq!(ca.matches("BEGIN CERTIFICATE").count(), bundle, "{step}");
        let old_trusted = step != "finish";
        for i in 0..4 {
            let name = &lab.machines[i].name;
            let on_machine = lab.exec(i, "cat /etc/kubernetes/pki/ca.crt");
            assert_eq!(on_machine, ca, "{step}: {name}");
            assert_eq!(
                trusts(&on_machine, &old_api),
                old_trusted,
                "{step}: {name} and a leaf of the old CA"
            );
        }
        for i in 0..3 {
            let name = &lab.machines[i].name;
            let etcd_on_machine = lab.exec(i, "cat /etc/kubernetes/pki/etcd/ca.crt");
            assert_eq!(etcd_on_machine, etcd_ca, "{step}: {name}");
            assert_eq!(
                trusts(&etcd_on_machine, &old_etcd),
                old_trusted,
                "{step}: {name}'s etcd and a leaf of the old etcd CA"
            );
            let on_machine = lab.exec(i, "cat /etc/kubernetes/pki/apiserver.crt");
            assert_eq!(
                serial_issuer(&on_machine),
                serial_issuer(&apiserver),
                "{step}: {name}'s API server certificate"
            );
            assert!(trusts(&ca, &on_machine), "{step}: {name}");
            let signer = lab.exec(i, "cat /etc/kubernetes/pki/ca-signer.crt");
            assert!(
                ca.starts_with(&signer) && signer.matches("BEGIN").count() == 1,
                "{step}: {name}"
            );
            assert!(
                etcd_health(i).contains("is healthy"),
                "{step}: {name}'s etcd"
            );
        }
        assert_eq!(lab.exec(3, api).trim(), "ok", "{step}");
    }
    // Nothing on the control planes chains to the old CAs any more.
    for i in 0..3 {
        for c in [
            "apiserver",
            "apiserver-kubelet-client",
            "front-proxy-client",
            "etcd/server",
            "etcd/peer",
            "etcd/healthcheck-client",
            "apiserver-etcd-client",
        ] {
            let pem = lab.exec(i, &format!("cat /etc/kubernetes/pki/{c}.crt"));
            assert!(
                [&old_ca, &old_etcd_ca, &old_fp_ca]
                    .iter()
                    .all(|old| !trusts(old, &pem)),
                "{}: {c} chains to an old CA",
                lab.machines[i].name
            );
        }
    }
    no_request_failed(
        &lab,
        3,
        50,
        "the upgrade, the certificate renewal and the CA rotation",
    );

    // The first control plane (the cluster endpoint) goes away: the worker still reaches the
    // API, and etcd keeps its quorum on the other two.
    lab.power_off(0);
    for _ in 0..20 {
        let o = lab.exec_output(3, api);
        assert!(
            o.status.success(),
            "through the load balancer with cp1 off: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_local_etcd_healthy(&lab, 1);
}

#[test]
fn backup_yml_fetches_a_checked_snapshot_and_restore_yml_brings_its_keyspace_back() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    // Debian's etcd 3.4 (real): its snapshot tool is etcdctl (the version table's row).
    common::toolchain::standin_toolchain(&home, "t", "1.30.14");
    let lab = Machines::boot("bak", &["cp1", "w1"]);
    let tree = work.path().join("cluster");
    generate(&home, &tree, &lab, "t");
    assert_converged(&playbook(&lab, &tree, "site.yml", &[]), None);
    let pki = "/etc/kubernetes/pki/etcd";
    let etcdctl = format!(
        "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={pki}/ca.crt \
         --cert={pki}/healthcheck-client.crt --key={pki}/healthcheck-client.key"
    );
    // The daily timer is on; a run of its service keeps a snapshot with its sha256.
    assert_eq!(
        lab.exec(0, "systemctl is-enabled etcd-backup.timer").trim(),
        "enabled"
    );
    lab.exec(0, "systemctl start etcd-backup.service");
    let kept = lab.exec(
        0,
        "cd /var/backups/etcd && sha256sum --check --strict etcd-cp1-*.sha256",
    );
    assert!(kept.contains(": OK"), "{kept}");
    assert_eq!(
        lab.exec(0, "stat -c %a /var/backups/etcd").trim(),
        "700",
        "a snapshot holds every Secret"
    );

    lab.exec(0, &format!("{etcdctl} put kbin-test before >/dev/null"));
    let o = playbook(&lab, &tree, "backup.yml", &[]);
    assert_converged(&o, None);
    let snaps: Vec<PathBuf> = std::fs::read_dir(tree.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let snap = &snaps[0];
    let sum = std::fs::read_to_string(snap.with_extension("db.sha256")).unwrap();
    use sha2::Digest as _;
    let got = format!("{:x}", sha2::Sha256::digest(std::fs::read(snap).unwrap()));
    assert!(sum.starts_with(&got), "{sum} vs {got}");
    lab.exec(0, &format!("{etcdctl} put kbin-test after >/dev/null"));

    // Without a snapshot: one clear failure, and nothing was stopped.
    let o = playbook(&lab, &tree, "restore.yml", &[]);
    assert!(!o.status.success());
    assert!(show(&o).contains("by its absolute path"), "{}", show(&o));
    lab.exec(0, "systemctl is-active etcd kube-apiserver");
    // A damaged copy is refused before anything stops.
    let bad = work.path().join("bad.db");
    std::fs::copy(snap, &bad).unwrap();
    std::fs::write(
        work.path().join("bad.db.sha256"),
        sum.replace(snap.file_name().unwrap().to_str().unwrap(), "bad.db")
            .replacen(&got[..4], "0000", 1),
    )
    .unwrap();
    let o = playbook(
        &lab,
        &tree,
        "restore.yml",
        &["-e", &format!("kbin_snapshot={}", bad.display())],
    );
    assert!(!o.status.success(), "{}", show(&o));
    lab.exec(0, "systemctl is-active etcd kube-apiserver");

    // Restore: the key is back to what the snapshot holds, the old data kept aside.
    let o = playbook(
        &lab,
        &tree,
        "restore.yml",
        &["-e", &format!("kbin_snapshot={}", snap.display())],
    );
    assert_converged(&o, None);
    let v = lab.exec(0, &format!("{etcdctl} get kbin-test --print-value-only"));
    assert_eq!(v.trim(), "before");
    lab.exec(
        0,
        "systemctl is-active etcd kube-apiserver kube-controller-manager kube-scheduler",
    );
    lab.exec(1, "systemctl is-active kubelet");
    let aside = lab.exec(0, "ls -d /var/lib/etcd.before-restore-*");
    assert_eq!(aside.lines().count(), 1, "{aside}");
    // The site converges on the restored cluster.
    assert_converged(&playbook(&lab, &tree, "site.yml", &[]), None);
}

/// With several control planes, upgrade.yml's "kube-apiserver ready" check after each control
/// plane asks that machine's own API server, not the cluster endpoint (the first control
/// plane's address, answering whatever the others do): a second control plane whose new API
/// server does not come up stops the upgrade there, before the workers. Found by the
/// real-binaries HA run (scripts/e2e-ha), where admin.conf names cp1 on every control plane.
#[test]
fn upgrade_stops_at_a_control_plane_whose_own_api_server_is_not_ready() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    common::toolchain::standin_toolchain(&home, "old", "1.30.14");
    common::toolchain::standin_toolchain(&home, "new", "1.31.9");
    let lab = Machines::boot("ucp", &["cp1", "cp2", "w1"]);
    let tree = work.path().join("cluster");
    // cp1 and cp2 control planes (so the workers reach them through the node-local load
    // balancer), w1 a worker.
    let gen_ha = |tc: &str| run_gen(gen_command_with(&home, &tree, &lab.machines, tc, 2));
    gen_ha("old");
    assert_converged(&playbook(&lab, &tree, "site.yml", &[]), None);
    // cp2's API server stand-in exits at start from now on (systemd restarts it, in vain);
    // cp1's, the cluster endpoint, keeps answering.
    lab.exec(
        1,
        "echo kube-apiserver=crash >> /var/lib/kube-standin/modes",
    );
    gen_ha("new");
    // cp2's wait gives up after 10 tries (20 s) instead of 60 (2 min): nothing else here is
    // slower to come up than that.
    let o = playbook(&lab, &tree, "upgrade.yml", &["-e", "kbin_ready_retries=10"]);
    assert!(!o.status.success(), "upgrade.yml went on:\n{}", show(&o));
    let log = String::from_utf8_lossy(&o.stdout);
    let failed = log
        .split("TASK [")
        .filter(|t| t.lines().any(|l| l.starts_with("fatal: [cp2]")))
        .map(|t| t.lines().next().unwrap_or(""))
        .collect::<Vec<_>>();
    assert!(
        failed
            .iter()
            .any(|t| t.starts_with("Wait until kube-apiserver is ready")),
        "cp2 failed elsewhere: {failed:?}\n{log}"
    );
    // The workers were not touched.
    let v = lab.exec(2, "kubelet --version");
    assert!(v.contains("v1.30.14"), "w1 upgraded anyway: {v}");
}

#[test]
fn generated_playbooks_pass_syntax_check_and_ansible_lint_and_the_inventory_holds_no_secret() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    common::toolchain::standin_toolchain(&home, "old", "1.30.14");
    let tree = work.path().join("cluster");
    let o = Command::new(env!("CARGO_BIN_EXE_kbin"))
        .env("KBIN_HOME", &home)
        .args(["gen", "cluster", "--toolchain", "old", "--out"])
        .arg(&tree)
        .args([
            "--control-plane",
            "cp1=10.1.0.10",
            "--control-plane",
            "cp2=10.1.0.11",
        ])
        .args(["--worker", "w1=10.1.0.21", "--worker", "w2=10.1.0.22"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ansible = tree.join("ansible");
    let books = [
        "site.yml",
        "upgrade.yml",
        "backup.yml",
        "restore.yml",
        "remove.yml",
    ];
    for book in books {
        let o = Command::new(ansible_tool("ansible-playbook"))
            .arg("-i")
            .arg(ansible.join("inventory.yml"))
            .arg(ansible.join(book))
            .arg("--syntax-check")
            .env("ANSIBLE_HOME", work.path().join("ansible-home"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{book}: {}", show(&o));
    }
    let o = Command::new(ansible_tool("ansible-lint"))
        .args(["--nocolor", "--offline", "--profile", "production"])
        .args(books)
        .current_dir(&ansible)
        .env("ANSIBLE_HOME", work.path().join("ansible-home"))
        .env("PATH", format!("{VENV}:/usr/bin:/bin"))
        .output()
        .unwrap();
    assert!(o.status.success(), "ansible-lint: {}", show(&o));
    // The inventory: hosts and groups as the spec says, no key material inline.
    let inv = std::fs::read_to_string(ansible.join("inventory.yml")).unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&inv).unwrap();
    let all = &v["all"];
    assert_eq!(
        all["hosts"]["w2"]["ansible_host"].as_str(),
        Some("10.1.0.22")
    );
    let members = |g: &str| -> Vec<String> {
        all["children"][g]["hosts"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(members("etcd"), ["cp1", "cp2"]);
    assert_eq!(members("control_plane"), ["cp1", "cp2"]);
    assert_eq!(members("workers"), ["w1", "w2"]);
    for needle in [
        "PRIVATE KEY",
        "client-key-data",
        "secret:\n",
        "aescbc",
        "secretbox",
    ] {
        assert!(
            !inv.contains(needle) || needle == "secret:\n",
            "{needle} in the inventory"
        );
    }
    let key = std::fs::read_to_string(tree.join("secrets/secretbox-key")).unwrap();
    assert!(!inv.contains(key.trim()));
    // Each archive's recorded sha256 is the file's.
    for h in ["cp1", "w1"] {
        for a in all["hosts"][h]["kbin_archives"].as_sequence().unwrap() {
            let bytes = std::fs::read(tree.join(a["src"].as_str().unwrap())).unwrap();
            assert_eq!(
                a["sha256"].as_str().unwrap(),
                kbin::util::sha256_hex(&bytes)
            );
        }
    }
    // A file restarts exactly the services that read it.
    let restarts = |h: &str, path: &str| -> Vec<String> {
        all["hosts"][h]["kbin_files"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|f| f["path"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("{path} not on {h}"))["restarts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(restarts("w1", "etc/containerd/config.toml"), ["containerd"]);
    assert_eq!(restarts("cp1", "usr/local/bin/etcd"), ["etcd"]);
    assert!(restarts("w1", "usr/local/bin/kubectl").is_empty());
    assert_eq!(restarts("w1", "etc/kubernetes/kubelet.conf"), ["kubelet"]);
}

/// Every file under `dir` with its bytes, to show a run wrote nothing.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name() != Some(std::ffi::OsStr::new(".kbin.lock")) {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn an_upgrade_that_skips_a_minor_or_downgrades_below_the_kubelets_is_refused_unless_allowed() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    common::toolchain::standin_toolchain(&home, "v130", "1.30.14");
    common::toolchain::standin_toolchain(&home, "v131", "1.31.9");
    common::toolchain::standin_toolchain(&home, "v132", "1.32.5");
    common::toolchain::standin_toolchain(&home, "v129", "1.29.15");
    let tree = work.path().join("cluster");
    let gen_cmd = |tc: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kbin"))
            .env("KBIN_HOME", &home)
            .args(["gen", "cluster", "--toolchain", tc, "--out"])
            .arg(&tree)
            .args([
                "--control-plane",
                "cp1=10.1.0.10",
                "--worker",
                "w1=10.1.0.21",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = gen_cmd("v130", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let before = snapshot(&tree);
    for (tc, rule) in [
        ("v132", "one minor at a time (1.31 first)"),
        ("v129", "a kubelet is never newer than the API server"),
    ] {
        let o = gen_cmd(tc, &[]);
        assert!(!o.status.success(), "{tc}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("version-skew rules") && err.contains(rule),
            "{tc}: {err}"
        );
        assert!(err.contains("--allow-skew"), "{err}");
        assert!(
            snapshot(&tree) == before,
            "{tc}: a refused upgrade wrote nothing"
        );
    }
    // One minor up is an upgrade; and a refused one goes through with --allow-skew, warned.
    let o = gen_cmd("v131", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let o = gen_cmd("v129", &["--allow-skew"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("version skew allowed by --allow-skew"));
    let inv = std::fs::read_to_string(tree.join("ansible/inventory.yml")).unwrap();
    assert!(inv.contains("kubernetes: 1.29.15"), "{inv}");
}

/// CPU seconds this host spent busy so far (all its cores; niced work, such as a fuzzer, left
/// out), and the CPU seconds of this process's finished children (ansible-playbook, its forks
/// and their ssh clients: the controller's share).
fn cpu_now() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = (f[0] + f[2] + f[5] + f[6] + f[7]) / 100.0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (busy, secs(ru.ru_utime) + secs(ru.ru_stime))
}

/// `scripts/bench-ansible`: site.yml's wall time on 1, 3 and 10 machines (stand-ins for kube-*),
/// against the one-machine deploy, with the CPU the host spent (the machines share its cores)
/// and the controller's part of it. Not run in CI (≈ 10 min): `cargo test --test testsuite ansible::
/// bench_ -- --ignored --nocapture`, or the script.
#[test]
#[ignore]
fn bench_site_on_1_3_and_10_machines() {
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    common::toolchain::standin_toolchain(&home, "old", "1.30.14");
    let mut rows = Vec::new();
    for n in [1usize, 3, 10] {
        let names: Vec<String> = (0..n)
            .map(|i| {
                if i == 0 {
                    "cp1".into()
                } else {
                    format!("w{i}")
                }
            })
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let t = Instant::now();
        let lab = Machines::boot("bn", &names);
        let boot = t.elapsed().as_secs_f64();
        let tree = work.path().join(format!("cluster-{n}"));
        generate(&home, &tree, &lab, "old");
        let (busy0, ctl0) = cpu_now();
        let t = Instant::now();
        let o = playbook(&lab, &tree, "site.yml", &[]);
        let first = t.elapsed().as_secs_f64();
        let (busy1, ctl1) = cpu_now();
        assert_converged(&o, None);
        let t = Instant::now();
        let o = playbook(&lab, &tree, "site.yml", &[]);
        let again = t.elapsed().as_secs_f64();
        assert_converged(&o, Some(0));
        let (busy, ctl) = (busy1 - busy0, ctl1 - ctl0);
        eprintln!(
            "{n} machines: booted in {boot:.1} s, site.yml {first:.1} s (host CPU {busy:.0} s, \
             controller {ctl:.0} s), re-run {again:.1} s"
        );
        rows.push((n, first, again, busy, ctl));
    }
    let base = rows[0].1;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "machines  site.yml (s)  ratio to 1 machine  re-run (s)  host CPU (s)  controller CPU (s)  \
         host CPU per machine (s)   [{cores} cores]"
    );
    for (n, first, again, busy, ctl) in &rows {
        println!(
            "{n:>8}  {first:>12.1}  {:>18.2}  {again:>10.1}  {busy:>12.0}  {ctl:>18.0}  {:>24.1}",
            first / base,
            (busy - ctl) / *n as f64
        );
    }
}

/// `scripts/e2e-ansible`: site.yml with the real upstream binaries of `KBIN_E2E_BIN` (never in
/// CI: CI machines cannot get them; shared/realworld/README.md says how to build them here) on
/// one control plane that is also a worker and two workers: three Nodes Ready, then a pod on
/// each worker reaching the other's pod by its IP (ping and a TCP connect, from the pod's
/// network namespace), over the routes site.yml adds. The pause image comes from
/// `KBIN_E2E_IMAGES` (a directory of `.tar` archives or one), imported on each machine as
/// `kbin up --images` does: there is no registry here.
#[test]
#[ignore]
fn real_binaries_three_ready_nodes_and_pods_reach_each_other() {
    let bin = std::env::var_os("KBIN_E2E_BIN").unwrap_or_else(|| {
        panic!(
            "KBIN_E2E_BIN is not set: this test needs real upstream binaries (run \
             `KBIN_E2E_BIN=DIR KBIN_E2E_IMAGES=DIR scripts/e2e-ansible`)"
        )
    });
    let images = e2e_images();

    let work = tempfile::Builder::new()
        .prefix("kbin-e2e-ansible-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let home = work.path().join("home");
    let t = Instant::now();
    let st = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/e2e-toolchain"
    ))
    .arg(work.path())
    .env("KBIN", env!("CARGO_BIN_EXE_kbin"))
    .env("KBIN_HOME", &home)
    .env("KBIN_E2E_BIN", &bin)
    .status()
    .unwrap();
    assert!(st.success(), "scripts/e2e-toolchain: {st}");
    eprintln!(
        "toolchain installed from real binaries in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let lab = Machines::boot("e2e", &["cp1", "w1", "w2"]);
    // The kubelet evicts every pod when its filesystems have less than 10% free (15% for
    // images), and this host's disk is not this test's business: containerd's and the
    // kubelet's state live on a tmpfs (as in scripts/e2e-up).
    for i in 0..lab.machines.len() {
        lab.exec(
            i,
            "for d in /var/lib/containerd /var/lib/kubelet; do \
             mkdir -p $d && mount -t tmpfs -o size=2g tmpfs $d; done",
        );
    }
    let tree = work.path().join("cluster");
    let cp = &lab.machines[0];
    let mut c = gen_command(&home, &tree, &lab, "e2e");
    c.args(["--worker", &format!("{}={}", cp.name, cp.ip)])
        .env("KBIN_MANIFEST", work.path().join("manifest.toml"));
    run_gen(c);

    // No registry, and the toolchain was installed with --no-images (its mirror has no registry
    // part), so the tree bundles no image: each machine imports the archives of KBIN_E2E_IMAGES
    // (the pause and CoreDNS images, at least) as soon as site.yml has containerd running (a
    // loop retrying until each import succeeds, across containerd's restarts), before the
    // playbook's last play applies the add-ons and waits for CoreDNS to roll out.
    for i in 0..lab.machines.len() {
        // A resolver, as a real machine has (the lab's is empty): CoreDNS forwards what is not
        // the cluster's to the node's resolv.conf and exits at start when it names none ("no
        // nameservers found"). The bridge's address: nothing answers there, nothing leaves.
        lab.exec(
            i,
            &format!("echo 'nameserver {}' > /etc/resolv.conf", Machines::GATEWAY),
        );
        import_when_containerd_runs(&lab, i, &images);
    }
    let t = Instant::now();
    let o = playbook(&lab, &tree, "site.yml", &[]);
    let first = t.elapsed().as_secs_f64();
    if !o.status.success() {
        // What the real components said: the playbook shows only its checks.
        for i in 0..lab.machines.len() {
            let o = lab.exec_output(
                i,
                "systemctl --no-pager --failed; for u in etcd kube-apiserver kubelet containerd kube-proxy; do \
                 systemctl is-enabled -q $u 2>/dev/null && journalctl --no-pager -u $u -n 40; done",
            );
            eprintln!("== {}\n{}", lab.machines[i].name, show(&o));
        }
        // The add-ons: what their pods said (the playbook's last play waits for CoreDNS).
        let o = lab.exec_output(
            0,
            "export KUBECONFIG=/etc/kubernetes/admin.conf; kubectl get pods -A -o wide; \
             kubectl -n kube-system describe pods -l k8s-app=kube-dns | tail -40; \
             for p in $(kubectl -n kube-system get pods -l k8s-app=kube-dns -o name); do \
             kubectl -n kube-system logs $p --previous --tail=30 || kubectl -n kube-system logs $p --tail=30; done",
        );
        eprintln!("== add-ons\n{}", show(&o));
    }
    assert_converged(&o, None);
    assert_pod_routes(&lab, &tree);
    let t = Instant::now();
    let o = playbook(&lab, &tree, "site.yml", &["-v"]);
    let again = t.elapsed().as_secs_f64();
    assert_converged(&o, Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    eprintln!(
        "site.yml: {first:.1} s; again {again:.1} s\nPLAY RECAP{}",
        text.rsplit_once("PLAY RECAP").map_or("", |(_, t)| t)
    );

    let kubectl = |args: &str| {
        lab.exec(
            0,
            &format!("kubectl --kubeconfig /etc/kubernetes/admin.conf {args}"),
        )
    };
    let nodes = kubectl("get nodes -o wide");
    eprintln!("$ kubectl get nodes -o wide\n{nodes}");
    let ready: Vec<&str> = nodes
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .collect();
    assert_eq!(ready.len(), 3, "three Ready nodes:\n{nodes}");

    // The images the machines imported while site.yml ran (above).
    let pause = std::fs::read_to_string(tree.join("nodes/w1/etc/containerd/config.toml"))
        .unwrap()
        .split('"')
        .find(|s| s.starts_with("registry.k8s.io/pause:"))
        .expect("the containerd config names the pause image")
        .to_owned();
    for i in 0..lab.machines.len() {
        lab.exec(
            i,
            "for _ in $(seq 300); do [ -e /root/e2e-images/done ] && break; sleep 1; done; \
             [ -e /root/e2e-images/done ]",
        );
    }

    // A pod on each worker, pinned there.
    let t = Instant::now();
    for w in ["w1", "w2"] {
        kubectl(&format!(
            "run e2e-{w} --image={pause} --image-pull-policy=Never --restart=Never \
             --overrides='{{\"apiVersion\":\"v1\",\"spec\":{{\"nodeName\":\"{w}\"}}}}'"
        ));
    }
    for w in ["w1", "w2"] {
        let o = lab.exec_output(
            0,
            &format!(
                "kubectl --kubeconfig /etc/kubernetes/admin.conf wait \
                 --for=jsonpath='{{.status.phase}}'=Running pod/e2e-{w} --timeout=180s"
            ),
        );
        assert!(
            o.status.success(),
            "pod e2e-{w} not Running: {}\n{}",
            show(&o),
            kubectl(&format!("describe pod e2e-{w}"))
        );
    }
    eprintln!(
        "pods Running in {:.1} s\n$ kubectl get pods -o wide\n{}",
        t.elapsed().as_secs_f64(),
        kubectl("get pods -o wide")
    );
    let ip = |w: &str| {
        kubectl(&format!("get pod e2e-{w} -o jsonpath={{.status.podIP}}"))
            .trim()
            .to_owned()
    };
    let (ip1, ip2) = (ip("w1"), ip("w2"));
    // The pod's network namespace, as the CRI reports it (`crictl inspectp`).
    let netns = |i: usize, w: &str| {
        lab.exec(
            i,
            &format!(
                "crictl inspectp $(crictl pods --name e2e-{w} --state ready -q) | python3 -c \
                 'import json, sys; d = json.load(sys.stdin); print([n[\"path\"] for n in \
                 d[\"info\"][\"runtimeSpec\"][\"linux\"][\"namespaces\"] if n[\"type\"] == \"network\"][0])'"
            ),
        )
        .trim()
        .to_owned()
    };
    let (ns1, ns2) = (netns(1, "w1"), netns(2, "w2"));
    for (i, ns, to) in [(1, &ns1, &ip2), (2, &ns2, &ip1)] {
        let o = lab.exec_output(i, &format!("nsenter --net={ns} ping -c 3 -W 2 {to}"));
        let diag = || {
            format!(
                "{}\nroutes on {}:\n{}",
                show(&o),
                lab.machines[i].name,
                lab.exec(i, "ip -4 route show")
            )
        };
        assert!(o.status.success(), "ping from pod to {to}: {}", diag());
        eprintln!(
            "$ (in pod e2e-{} on {}) ping -c 3 {to}\n{}",
            lab.machines[i].name,
            lab.machines[i].name,
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // TCP: w2's pod listens, w1's connects; the listener says which address it saw.
    lab.exec(
        2,
        &format!(
            "nsenter --net={ns2} python3 -c 'import socket; s = socket.socket(); \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"0.0.0.0\", 8080)); \
             s.listen(1); c, a = s.accept(); c.sendall(a[0].encode()); c.close()' \
             >/root/listener.log 2>&1 &"
        ),
    );
    let seen = lab.exec(
        1,
        &format!(
            "nsenter --net={ns1} python3 -c 'import socket, time\n\
             for _ in range(50):\n    try:\n        s = socket.create_connection((\"{ip2}\", 8080), 5); break\n\
             \x20   except OSError:\n        time.sleep(0.2)\n\
             print(s.recv(100).decode())'"
        ),
    );
    eprintln!(
        "TCP from pod e2e-w1 ({ip1}) to {ip2}:8080 in pod e2e-w2: connected; the listener saw {}",
        seen.trim()
    );

    // `scripts/e2e-conformance three WORK` sets KBIN_E2E_CONFORMANCE=WORK: Kubernetes' conformance
    // tests (e2e.test of KBIN_E2E_BIN) against this cluster, from the lab's network, where the
    // machines are reachable; every image of KBIN_E2E_IMAGES is on every machine (above).
    if let Some(out) = std::env::var_os("KBIN_E2E_CONFORMANCE") {
        for p in ["e2e-w1", "e2e-w2"] {
            kubectl(&format!("delete pod {p} --wait=true"));
        }
        let path = format!(
            "{}:{}",
            home.join("toolchains/e2e/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let st = lab
            .host_command(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/e2e-conformance"
            ))
            .args([std::ffi::OsStr::new("run"), &out])
            .arg(cp.root().join("etc/kubernetes/admin.conf"))
            .env("PATH", path)
            .status()
            .unwrap();
        assert!(st.success(), "scripts/e2e-conformance run: {st}");
    }
}

/// Copy `images` into machine `i` and import them into containerd in the background as soon as
/// it answers (retrying across its restarts); `/root/e2e-images/done` once all are in.
fn import_when_containerd_runs(lab: &Machines, i: usize, images: &[PathBuf]) {
    let dir = lab.machines[i].root().join("root/e2e-images");
    std::fs::create_dir_all(&dir).unwrap();
    for img in images {
        std::fs::copy(img, dir.join(img.file_name().unwrap())).unwrap();
    }
    lab.exec(
        i,
        "nohup sh -c 'for f in /root/e2e-images/*.tar; do \
         until PATH=/usr/local/bin:$PATH ctr --address /run/containerd/containerd.sock -n k8s.io \
         images import $f >/dev/null 2>&1; do sleep 2; done; done; touch /root/e2e-images/done' \
         </dev/null >/dev/null 2>&1 &",
    );
}

/// The archives of `KBIN_E2E_IMAGES` (a directory of `.tar` archives, or one).
fn e2e_images() -> Vec<PathBuf> {
    let images = PathBuf::from(std::env::var_os("KBIN_E2E_IMAGES").unwrap_or_else(|| {
        panic!("KBIN_E2E_IMAGES is not set: a pause image archive (or a directory of them)")
    }));
    let images: Vec<PathBuf> = if images.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        v.sort();
        v
    } else {
        vec![images]
    };
    assert!(!images.is_empty(), "no .tar archive in KBIN_E2E_IMAGES");
    images
}

/// Seconds since the epoch (the machines share the host's clock).
fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `kubectl` with the admin kubeconfig on machine `i`; its stdout (it must succeed).
fn kc(lab: &Machines, i: usize, args: &str) -> String {
    lab.exec(
        i,
        &format!("kubectl --kubeconfig /etc/kubernetes/admin.conf {args}"),
    )
}

/// What the real components said, for a failed step: failed units and the last journal lines
/// of each kube service on every running machine.
fn dump_services(lab: &Machines) {
    for (i, m) in lab.machines.iter().enumerate() {
        if m.leader() == 0 {
            continue;
        }
        let o = lab.exec_output(
            i,
            "systemctl --no-pager --failed; for u in etcd kube-apiserver kube-controller-manager \
             kube-scheduler kubelet containerd kube-proxy kbin-apiserver-lb; do \
             systemctl is-enabled -q $u 2>/dev/null && journalctl --no-pager -u $u -n 25; done",
        );
        eprintln!("== {}\n{}", m.name, show(&o));
    }
}

/// One request of a client pod: when (epoch seconds), whether it succeeded, who answered (the
/// serving pod's name) or curl's error.
struct Request {
    at: u64,
    ok: bool,
    said: String,
}

/// The requests the `client` DaemonSet's pod on machine `i` logged (its container log files
/// under /var/log/pods, read on the machine: no API needed).
fn client_requests(lab: &Machines, i: usize) -> Vec<Request> {
    let log = lab.exec(
        i,
        "cat /var/log/pods/default_client-*/client/*.log 2>/dev/null; true",
    );
    log.lines()
        .filter_map(|l| {
            // CRI log format: TIME STREAM FLAG LINE; the line is "EPOCH ok|FAIL TEXT".
            let mut f = l.splitn(6, ' ');
            let (_, _, _) = (f.next()?, f.next()?, f.next()?);
            let at = f.next()?.parse().ok()?;
            let ok = match f.next()? {
                "ok" => true,
                "FAIL" => false,
                _ => return None,
            };
            Some(Request {
                at,
                ok,
                said: f.next().unwrap_or("").trim().to_owned(),
            })
        })
        .collect()
}

/// Requests, failures and who answered (pod name → count) in `[from, to]`.
fn tally(reqs: &[Request], from: u64, to: u64) -> (usize, usize, String, Vec<String>) {
    let mut who = std::collections::BTreeMap::<&str, usize>::new();
    let mut fails = Vec::new();
    let mut n = 0;
    for r in reqs.iter().filter(|r| r.at >= from && r.at <= to) {
        n += 1;
        if r.ok {
            *who.entry(r.said.as_str()).or_default() += 1;
        } else {
            fails.push(format!("{} {}", r.at, r.said));
        }
    }
    let who = who
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    (n, fails.len(), who, fails)
}

/// The serving workload of the HA run: a Deployment of 2 agnhost `netexec` replicas spread over
/// the workers (a preStop pause so that a terminating pod keeps serving until every kube-proxy
/// dropped it), a PodDisruptionBudget of minAvailable 1, and a Service in front.
const HA_WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 30
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: AGNHOST
        imagePullPolicy: Never
        args: [netexec, --http-port=8080]
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        lifecycle: {preStop: {exec: {command: [/bin/sleep, "PRESTOP"]}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"#;

/// The clients: a DaemonSet (drain leaves its pods where they are: `--ignore-daemonsets`), one
/// pod per worker requesting the Service every 100 ms and logging each result.
const HA_CLIENT: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: client}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: client
        image: AGNHOST
        imagePullPolicy: Never
        command:
        - /bin/sh
        - -c
        - |
          while :; do
            if h=$(curl -fsS -m 2 http://SVCIP/hostname 2>&1); then echo "$(date +%s) ok $h"
            else echo "$(date +%s) FAIL $(echo $h)"; fi
            sleep 0.1
          done
"#;

/// `scripts/e2e-ha`: issue 21's proof with the real upstream binaries of `KBIN_E2E_BIN` (never
/// in CI). Three control planes and two workers (systemd-nspawn machines) deployed by the
/// generated site.yml; a Deployment of two agnhost replicas with a PodDisruptionBudget behind a
/// Service, requested every 100 ms by a client pod on each worker; then (a) the first control
/// plane powered off for `KBIN_E2E_HA_OFF` s (75), the API asked from a worker through its
/// load balancer twice a second; (b) upgrade.yml to a second toolchain installed from
/// `KBIN_E2E_BIN2` (the Kubernetes binaries of a second build, another version string), and a
/// kubelet restart on a worker compared with its containers before and after; (c) backup.yml,
/// a namespace deleted, restore.yml with the snapshot, the namespace's objects back. Prints
/// each phase's requests and failures (also written to `KBIN_E2E_HA_OUT` when set); fails at
/// the end if a Service request failed in (a) or (b), or a phase did not succeed.
#[test]
#[ignore]
fn real_binaries_ha_serves_through_a_control_plane_loss_an_upgrade_and_a_restore() {
    let env_dir = |v: &str| {
        PathBuf::from(std::env::var_os(v).unwrap_or_else(|| {
            panic!("{v} is not set: this test needs real upstream binaries (see scripts/e2e-ha)")
        }))
    };
    let bin = env_dir("KBIN_E2E_BIN");
    let bin2 = env_dir("KBIN_E2E_BIN2");
    let images = e2e_images();
    let agnhost = std::env::var("KBIN_E2E_AGNHOST")
        .unwrap_or_else(|_| "registry.k8s.io/e2e-test-images/agnhost:2.63.0".into());
    let off_secs: u64 = std::env::var("KBIN_E2E_HA_OFF")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(75);
    let work = tempfile::Builder::new()
        .prefix("kbin-e2e-ha-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let home = work.path().join("home");
    let mut report: Vec<String> = Vec::new();
    let mut note = |s: String| {
        eprintln!("\n#### {s}");
        report.push(s);
    };

    // A toolchain from a directory of binaries (scripts/e2e-toolchain); its manifest.
    let toolchain = |name: &str, dir: &Path, manifest_in: Option<&Path>| -> PathBuf {
        let w = work.path().join(format!("tc-{name}"));
        let t = Instant::now();
        let mut c = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/e2e-toolchain"
        ));
        c.arg(&w)
            .env("KBIN", env!("CARGO_BIN_EXE_kbin"))
            .env("KBIN_HOME", &home)
            .env("KBIN_E2E_BIN", dir)
            .env("KBIN_E2E_NAME", name);
        if let Some(m) = manifest_in {
            c.env("KBIN_E2E_MANIFEST_IN", m);
        }
        let st = c.status().unwrap();
        assert!(st.success(), "scripts/e2e-toolchain {name}: {st}");
        eprintln!(
            "toolchain {name} installed in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        w.join("manifest.toml")
    };
    let manifest1 = toolchain("e2e", &bin, None);

    let mut lab = Machines::boot("rha", &["cp1", "cp2", "cp3", "w1", "w2"]);
    for m in &lab.machines {
        eprintln!("machine {} {}: nsenter -t {} -a", m.name, m.ip, m.leader());
    }
    let workers = [3usize, 4];
    // containerd's and the kubelet's state on a tmpfs, as in the three-machine run.
    for &i in &workers {
        lab.exec(
            i,
            "for d in /var/lib/containerd /var/lib/kubelet; do \
             mkdir -p $d && mount -t tmpfs -o size=2g tmpfs $d; done",
        );
    }
    let tree = work.path().join("cluster");
    let gen_ha = |lab: &Machines, tc: &str, manifest: &Path| {
        let mut c = gen_command_with(&home, &tree, &lab.machines, tc, 3);
        c.env("KBIN_MANIFEST", manifest);
        run_gen(c);
    };
    gen_ha(&lab, "e2e", &manifest1);

    // No registry: the workers import the archives as soon as containerd runs.
    for &i in &workers {
        import_when_containerd_runs(&lab, i, &images);
    }
    let t = Instant::now();
    let o = playbook(&lab, &tree, "site.yml", &[]);
    let site = t.elapsed().as_secs_f64();
    if !o.status.success() {
        dump_services(&lab);
    }
    assert_converged(&o, None);
    note(format!(
        "site.yml on 3 control planes + 2 workers: {site:.0} s"
    ));
    for &i in &workers {
        lab.exec(
            i,
            "for _ in $(seq 300); do [ -e /root/e2e-images/done ] && break; sleep 1; done; \
             [ -e /root/e2e-images/done ]",
        );
    }
    let nodes = kc(&lab, 0, "get nodes -o wide");
    eprintln!("$ kubectl get nodes -o wide\n{nodes}");

    // The workload and its clients.
    // KBIN_E2E_HA_PRESTOP: the preStop pause in seconds (10), 0 for none.
    let web = match std::env::var("KBIN_E2E_HA_PRESTOP").as_deref() {
        Ok("0") => HA_WEB
            .lines()
            .filter(|l| !l.contains("preStop"))
            .map(|l| format!("{l}\n"))
            .collect(),
        Ok(n) => HA_WEB.replace("PRESTOP", n),
        Err(_) => HA_WEB.replace("PRESTOP", "10"),
    };
    std::fs::write(
        lab.machines[0].root().join("root/ha-web.yaml"),
        web.replace("AGNHOST", &agnhost),
    )
    .unwrap();
    // The clients start once the Service has its endpoints (a client started with it would
    // count the seconds before kube-proxy knows them as failures).
    let rollout = |lab: &Machines, r: &str| {
        let o = lab.exec_output(
            0,
            &format!(
                "kubectl --kubeconfig /etc/kubernetes/admin.conf rollout status {r} --timeout=300s"
            ),
        );
        if !o.status.success() {
            eprintln!("{}\n{}", show(&o), kc(lab, 0, "get pods -A -o wide; true"));
            dump_services(lab);
        }
        assert!(o.status.success(), "{r} did not roll out");
    };
    kc(&lab, 0, "apply -f /root/ha-web.yaml");
    rollout(&lab, "deployment/web");
    let svc = kc(&lab, 0, "get svc web -o jsonpath={.spec.clusterIP}");
    for &i in &workers {
        lab.exec(
            i,
            &format!(
                "for _ in $(seq 30); do iptables-save -t nat | grep -q -- '-d {}/32' && break; sleep 1; done; sleep 2",
                svc.trim()
            ),
        );
    }
    std::fs::write(
        lab.machines[0].root().join("root/ha-client.yaml"),
        HA_CLIENT
            .replace("AGNHOST", &agnhost)
            .replace("SVCIP", svc.trim()),
    )
    .unwrap();
    kc(&lab, 0, "apply -f /root/ha-client.yaml");
    rollout(&lab, "daemonset/client");
    std::thread::sleep(std::time::Duration::from_secs(15));
    eprintln!(
        "$ kubectl get pods -o wide\n{}",
        kc(&lab, 0, "get pods -o wide")
    );
    let containers = |lab: &Machines, i: usize| {
        lab.exec(
            i,
            "crictl ps -o json | python3 -c 'import json, sys\n\
             for c in json.load(sys.stdin)[\"containers\"]:\n\
             \x20   print(c[\"metadata\"][\"name\"], c[\"id\"][:13], c[\"metadata\"].get(\"attempt\", 0))' | sort",
        )
    };

    // (a) The first control plane (the old single endpoint) powered off.
    let api_loop = "setsid sh -c 'while [ ! -e /root/api.stop ]; do \
         if kubectl --kubeconfig /etc/kubernetes/kubelet.conf get node w1 -o name >/dev/null 2>>/root/api.err; \
         then echo \"$(date +%s) ok\"; else echo \"$(date +%s) FAIL\"; fi >>/root/api.log; sleep 0.5; done' \
         >/dev/null 2>&1 </dev/null &";
    lab.exec(3, api_loop);
    let a0 = epoch();
    let t = Instant::now();
    lab.power_off(0);
    std::thread::sleep(std::time::Duration::from_secs(off_secs));
    let off = t.elapsed().as_secs_f64();
    lab.start(0);
    lab.wait_booted(0);
    eprintln!("cp1 back: nsenter -t {} -a", lab.machines[0].leader());
    let pki = "/etc/kubernetes/pki/etcd";
    let etcdctl = format!(
        "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={pki}/ca.crt \
         --cert={pki}/healthcheck-client.crt --key={pki}/healthcheck-client.key"
    );
    let healthy = lab.exec_output(
        0,
        &format!(
            "for _ in $(seq 180); do {etcdctl} endpoint health >/dev/null 2>&1 && \
             kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz >/dev/null 2>&1 && exit 0; \
             sleep 1; done; exit 1"
        ),
    );
    let back = t.elapsed().as_secs_f64();
    let a1 = epoch();
    lab.exec(3, "touch /root/api.stop; sleep 1");
    let api_log = lab.exec(3, "cat /root/api.log");
    let api: Vec<(u64, bool)> = api_log
        .lines()
        .filter_map(|l| {
            let (t, s) = l.split_once(' ')?;
            Some((t.parse().ok()?, s == "ok"))
        })
        .filter(|(t, _)| *t >= a0 && *t <= a1)
        .collect();
    let api_fail = api.iter().filter(|(_, ok)| !ok).count();
    let health_a = if healthy.status.success() {
        format!("healthy again {back:.0} s after the power-off")
    } else {
        dump_services(&lab);
        format!("NOT healthy {back:.0} s after the power-off")
    };
    note(format!(
        "(a) cp1 powered off for {off:.0} s, then booted: etcd and /readyz on cp1 {health_a}; \
         API from w1 through its load balancer (kubectl get node w1 with the kubelet's credentials, every 0.5 s): {} calls, {api_fail} failed{}",
        api.len(),
        if api_fail > 0 {
            format!(" ({})", lab.exec(3, "tail -5 /root/api.err; true").trim())
        } else {
            String::new()
        }
    ));
    let ok_a = healthy.status.success();
    eprintln!(
        "{}",
        lab.exec(1, &format!("{etcdctl} member list -w table; true"))
    );

    // (b) upgrade.yml to a second build of the same release with another version string.
    let merged = work.path().join("bin2");
    std::fs::create_dir_all(&merged).unwrap();
    for dir in [&bin, &bin2] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let to = merged.join(p.file_name().unwrap());
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(&p, &to).unwrap();
        }
    }
    let manifest2 = toolchain("e2e2", &merged, Some(&manifest1));
    let before_b: Vec<String> = workers.iter().map(|&i| containers(&lab, i)).collect();
    gen_ha(&lab, "e2e2", &manifest2);
    let b0 = epoch();
    let t = Instant::now();
    let o = playbook(&lab, &tree, "upgrade.yml", &[]);
    let upgrade = t.elapsed().as_secs_f64();
    let b1 = epoch();
    let ok_b = o.status.success();
    if !ok_b {
        eprintln!("{}", show(&o));
        dump_services(&lab);
    }
    let versions = format!(
        "kube-apiserver on cp1..3: {}; kubelet on w1, w2: {}",
        (0..3)
            .map(|i| lab.exec(i, "kube-apiserver --version").trim().to_owned())
            .collect::<Vec<_>>()
            .join(", "),
        workers
            .iter()
            .map(|&i| lab.exec(i, "kubelet --version").trim().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let after_b: Vec<String> = workers.iter().map(|&i| containers(&lab, i)).collect();
    let clients_kept = (0..2).all(|k| {
        let c = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("client "))
                .map(str::to_owned)
        };
        c(&before_b[k]).is_some() && c(&before_b[k]) == c(&after_b[k])
    });
    note(format!(
        "(b) upgrade.yml e2e (v1.36.2) -> e2e2 (v1.36.3): {} in {upgrade:.0} s; {versions}; \
         the client containers through the upgrade: {}",
        if ok_b { "succeeded" } else { "FAILED" },
        if clients_kept {
            "same IDs, not restarted".to_owned()
        } else {
            format!("before {before_b:?} after {after_b:?}")
        }
    ));
    eprintln!("{}", kc(&lab, 0, "get nodes -o wide; true"));

    // The kubelet restarted on a worker (the one running more containers): they stay.
    let w = if after_b[0].lines().count() >= after_b[1].lines().count() {
        workers[0]
    } else {
        workers[1]
    };
    let before = containers(&lab, w);
    lab.exec(w, "systemctl restart kubelet");
    std::thread::sleep(std::time::Duration::from_secs(30));
    let after = containers(&lab, w);
    let kubelet_ok = before == after;
    note(format!(
        "kubelet restarted on {}: containers (name, ID, attempt) {}:\n{}",
        lab.machines[w].name,
        if kubelet_ok { "unchanged" } else { "CHANGED" },
        if kubelet_ok {
            before.clone()
        } else {
            format!("before:\n{before}after:\n{after}")
        }
    ));

    // (c) backup.yml, a namespace deleted, restore.yml: its objects are back.
    kc(
        &lab,
        0,
        &format!(
            "create namespace ha-restore && kubectl --kubeconfig /etc/kubernetes/admin.conf -n ha-restore \
             create configmap kept --from-literal=k=v1 && kubectl --kubeconfig /etc/kubernetes/admin.conf \
             -n ha-restore create deployment kept --image={agnhost} -- /agnhost pause"
        ),
    );
    let objects = "-n ha-restore get configmap/kept deployment/kept -o name";
    let had = kc(&lab, 0, objects);
    let t = Instant::now();
    let o = playbook(&lab, &tree, "backup.yml", &[]);
    let backup = t.elapsed().as_secs_f64();
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(tree.join("backups"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "db"))
                .collect()
        })
        .unwrap_or_default();
    snaps.sort();
    let ok_backup = o.status.success() && !snaps.is_empty();
    if !ok_backup {
        eprintln!("{}", show(&o));
    }
    kc(
        &lab,
        0,
        "delete namespace ha-restore --wait=true --timeout=180s",
    );
    let gone = !lab
        .exec_output(
            0,
            "kubectl --kubeconfig /etc/kubernetes/admin.conf get namespace ha-restore",
        )
        .status
        .success();
    let c0 = epoch();
    let t = Instant::now();
    let (ok_restore, back_objects) = if let Some(snap) = snaps.last() {
        let o = playbook(
            &lab,
            &tree,
            "restore.yml",
            &["-e", &format!("kbin_snapshot={}", snap.display())],
        );
        if !o.status.success() {
            eprintln!("{}", show(&o));
            dump_services(&lab);
        }
        let b = lab.exec_output(
            0,
            &format!(
                "for _ in $(seq 120); do kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw /readyz \
                 >/dev/null 2>&1 && break; sleep 1; done; \
                 kubectl --kubeconfig /etc/kubernetes/admin.conf {objects} && \
                 kubectl --kubeconfig /etc/kubernetes/admin.conf -n ha-restore get configmap kept -o jsonpath={{.data.k}}"
            ),
        );
        (o.status.success(), show(&b))
    } else {
        (false, String::new())
    };
    let restore = t.elapsed().as_secs_f64();
    let c1 = epoch();
    let ok_c = ok_restore
        && back_objects.contains("configmap/kept")
        && back_objects.contains("deployment.apps/kept")
        && back_objects.contains("v1");
    note(format!(
        "(c) backup.yml {} in {backup:.0} s ({}); namespace ha-restore with {} deleted (gone: {gone}); \
         restore.yml {} in {restore:.0} s; after it: {}",
        if ok_backup { "succeeded" } else { "FAILED" },
        snaps.last().map_or("no snapshot".into(), |s| s
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()),
        had.split_whitespace().collect::<Vec<_>>().join(" "),
        if ok_restore { "succeeded" } else { "FAILED" },
        back_objects
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    ));
    eprintln!("{}", kc(&lab, 0, "get pods -A -o wide; true"));

    // The clients' counts per phase.
    let mut fails_ab = 0;
    for (k, &i) in workers.iter().enumerate() {
        let reqs = client_requests(&lab, i);
        let w = &lab.machines[i].name;
        for (phase, from, to) in [
            ("(a) cp1 off and back", a0, a1),
            ("(b) upgrade.yml", b0, b1),
            ("(c) restore.yml", c0, c1),
            ("(a) to (c), all", a0, c1),
            ("before (a), from the client's start", 0, a0 - 1),
        ] {
            let (n, f, who, fails) = tally(&reqs, from, to);
            if k < 2 && (phase.starts_with("(a)") || phase.starts_with("(b)")) {
                fails_ab += f;
            }
            note(format!(
                "client on {w}, {phase}: {n} requests, {f} failed; answered by {who}{}",
                if fails.is_empty() {
                    String::new()
                } else {
                    format!(
                        "\n  failures: {}",
                        fails
                            .iter()
                            .take(10)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n  ")
                    )
                }
            ));
        }
    }
    let summary = report.join("\n");
    eprintln!("\n======== HA run summary\n{summary}");
    if let Some(out) = std::env::var_os("KBIN_E2E_HA_OUT") {
        std::fs::write(out, format!("{summary}\n")).unwrap();
    }
    assert!(
        ok_a && ok_b && ok_backup && ok_c && kubelet_ok && fails_ab == 0,
        "the HA run failed:\n{summary}"
    );
}
