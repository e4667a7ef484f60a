//! NEXT-STEPS.md: what to copy where, what to start in which order, how to check each step, and
//! what kbin leaves to the user. Rendered from the cluster, the versions and the decisions only,
//! so it is byte-stable.

use std::fmt::Write as _;

use crate::r#gen::node::configs::ClusterInput;
use crate::r#gen::node::{Options, binaries_bundle};
use crate::r#gen::pki::certs::Role;
use crate::r#gen::pki::certs::{Id, on_node_cert, on_node_key, on_node_kubeconfig};
use crate::r#gen::plan::host::HostProfile;
use crate::r#gen::plan::versions::{CgroupV1, Decisions, Versions};

/// etcdctl's TLS flags with the healthcheck client (one per line, continued).
fn etcd_certs() -> String {
    format!(
        "--cacert={} \\\n    --cert={} \\\n    --key={}",
        on_node_cert(Id::EtcdCa),
        on_node_cert(Id::EtcdHealthcheckClient),
        on_node_key(Id::EtcdHealthcheckClient)
    )
}

/// The text of NEXT-STEPS.md.
/// What NEXT-STEPS.md is rendered from.
#[derive(Clone, Copy)]
struct Page<'a> {
    c: &'a ClusterInput,
    v: &'a Versions,
    d: &'a Decisions,
    opts: &'a Options,
    binaries_bundled: bool,
}

/// NEXT-STEPS.md's sections in order, each a small function of the same inputs: adding a
/// section is adding a row.
const SECTIONS: &[fn(&Page<'_>, &mut String)] = &[
    header,
    prepare,
    ansible,
    copy,
    control_plane,
    workers,
    left_to_you,
    day_two,
];

/// The text of NEXT-STEPS.md.
pub fn render(
    c: &ClusterInput,
    v: &Versions,
    d: &Decisions,
    opts: &Options,
    binaries_bundled: bool,
) -> String {
    let page = Page {
        c,
        v,
        d,
        opts,
        binaries_bundled,
    };
    let mut s = String::new();
    for section in SECTIONS {
        section(&page, &mut s);
    }
    s
}

/// NEXT-STEPS.md: the title, where to run from, the versions.
fn header(p: &Page<'_>, w: &mut String) {
    let Page { c, v, opts, .. } = *p;
    let _ = writeln!(
        w,
        "# Next steps for cluster \"{}\" (Kubernetes {}, {})\n",
        c.name, v.kubernetes, v.origin
    );
    let _ = writeln!(
        w,
        "Run the commands below from the directory that holds this file (`{}`). Every node's\n\
         files are in `nodes/<name>/`, laid out like its root filesystem; read them: each one\n\
         says what it is for.\n",
        opts.out.display()
    );
    let _ = writeln!(
        w,
        "Versions: etcd {}, containerd {}, runc {}, CNI plugins {}, crictl {}, pause {}, CoreDNS {}.\n",
        v.of("etcd"),
        v.of("containerd"),
        v.of("runc"),
        v.of("cni-plugins"),
        v.of("crictl"),
        v.images.pause,
        v.images.coredns
    );
}

/// NEXT-STEPS.md: 1. what every machine needs before anything is copied.
fn prepare(p: &Page<'_>, w: &mut String) {
    let Page { c, v, d, opts, .. } = *p;
    let _ = writeln!(w, "## 1. Prepare every machine\n");
    let _ = writeln!(
        w,
        "- A Linux {arch} machine with systemd, reachable by ssh as root (or use `sudo` on it).\n\
         - Swap off (the kubelet refuses to start with swap): `swapoff -a`, and remove swap from /etc/fstab.\n\
         - Workers need `iptables` and `conntrack` (kube-proxy): `apt-get install -y iptables conntrack`.\n\
         - Check the cgroup version: `stat -fc %T /sys/fs/cgroup/` prints `cgroup2fs` on cgroup v2.",
        arch = v.arch
    );
    let refuses_v1 = d.cgroup_v1() == CgroupV1::Refuses;
    match c.host_profile {
        HostProfile::Systemd => {}
        HostProfile::Sandbox => {
            let _ = writeln!(
                w,
                "- Host profile `sandbox` (containers, WSL, CI machines): the kubelet and containerd use the
                   cgroupfs driver (PID 1 is not systemd), containerd sets `restrict_oom_score_adj` and
                   kube-proxy leaves conntrack limits alone (`maxPerCore: 0`). On real machines with systemd,
                   generate again with `--host-profile systemd`."
            );
        }
    }
    if let Some(r) = &c.resolv_conf {
        let _ = writeln!(
            w,
            "- The kubelets give pods `{r}` as resolv.conf (systemd-resolved's upstream list, not its
  127.0.0.53 stub, which would make CoreDNS forward to itself). Every worker needs that file."
        );
    }
    if opts.cgroup_v1 {
        let _ = writeln!(
            w,
            "- These configs are for cgroup v1 hosts{}. cgroup v1 is deprecated (containerd 2.2 and\n  Kubernetes 1.35 warn about it): plan a move to cgroup v2.",
            if refuses_v1 {
                ": kubelet 1.35+ refuses cgroup v1 unless its config sets `failCgroupV1: false`, which\n  `var/lib/kubelet/config.yaml` does"
            } else {
                ""
            }
        );
    } else if refuses_v1 {
        let _ = writeln!(
            w,
            "- kubelet {} refuses to start on cgroup v1 (`tmpfs` above). For such hosts, generate again\n  with `kbin gen cluster ... --cgroup-v1` (sets `failCgroupV1: false`).",
            v.of("kubelet")
        );
    }
    let _ = writeln!(w);
}

/// NEXT-STEPS.md: the Ansible way to do steps 2 to 4.
fn ansible(_: &Page<'_>, w: &mut String) {
    let _ = writeln!(
        w,
        "## With Ansible (steps 2 to 4 at once)\n\n\
         `ansible/` holds an inventory (one host per node, groups `etcd`, `control_plane`, `workers`)\n\
         and playbooks using only ansible-core's builtin modules. `site.yml` does steps 2 to 4 below\n\
         on every machine over ssh, in the same order and with the same checks; run it again at any\n\
         time (a second run changes nothing; `--check --diff` shows what would change). After a new\n\
         toolchain (`kbin gen cluster --toolchain NEW` over this tree), `upgrade.yml` replaces the\n\
         binaries one machine at a time, draining each worker first:\n\n\
         ```sh\nansible-playbook -i ansible/inventory.yml ansible/site.yml\n\
         ansible-playbook -i ansible/inventory.yml ansible/upgrade.yml\n```\n\n\
         By hand instead, one step at a time:\n"
    );
}

/// NEXT-STEPS.md: 2. copy and install each node's bundle.
fn copy(p: &Page<'_>, w: &mut String) {
    let Page {
        c,
        v,
        binaries_bundled,
        ..
    } = *p;
    let _ = writeln!(w, "## 2. Copy each node's bundle and install it\n");
    if !binaries_bundled {
        let _ = writeln!(
            w,
            "No binaries are bundled (`--no-binaries` or `--kubernetes-version`). Either install a\n\
             toolchain and generate again (`kbin install {minor}`, then `kbin gen cluster --toolchain {minor} ...`),\n\
             or put these exact versions on each node yourself before running install.sh: Kubernetes\n\
             {k} (control plane: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl; workers:\n\
             kubelet, kube-proxy), etcd and etcdctl {etcd}, containerd {cd} (with containerd-shim-runc-v2),\n\
             runc {runc} and crictl {crictl} in /usr/local/bin; CNI plugins {cni} (bridge, host-local,\n\
             loopback, portmap) in /opt/cni/bin.\n",
            minor = format_args!("{}.{}", v.kubernetes.major, v.kubernetes.minor),
            k = v.kubernetes,
            etcd = v.of("etcd"),
            cd = v.of("containerd"),
            runc = v.of("runc"),
            crictl = v.of("crictl"),
            cni = v.of("cni-plugins"),
        );
    }
    for n in &c.nodes {
        let mut tars = vec![format!("nodes/{}.tar.gz", n.name)];
        if binaries_bundled {
            for role in [Role::ControlPlane, Role::Worker] {
                let wanted = match role {
                    Role::ControlPlane => n.control_plane,
                    Role::Worker => n.worker,
                };
                if wanted {
                    tars.push(binaries_bundle(role, v.arch));
                }
            }
        }
        let roles = match (n.control_plane, n.worker) {
            (true, true) => "control plane and worker",
            (true, false) => "control plane",
            _ => "worker",
        };
        let _ = writeln!(w, "Node `{}` ({}, {}):\n\n```sh", n.name, n.ip, roles);
        let _ = writeln!(w, "scp {} root@{}:/tmp/", tars.join(" "), n.ip);
        let dir = format!("/tmp/kbin-{}", n.name);
        let mut unpack = format!("mkdir -p {dir}");
        for t in &tars {
            let file = t.rsplit('/').next().unwrap_or(t);
            let _ = write!(unpack, " && tar -C {dir} -xzf /tmp/{file}");
        }
        let _ = writeln!(w, "ssh root@{} '{unpack} && {dir}/install.sh'\n```\n", n.ip);
    }
    let _ = writeln!(
        w,
        "install.sh copies the files into place, runs `systemctl daemon-reload` and enables the\n\
         services; it starts nothing. Try it first with `DESTDIR=/tmp/root nodes/<name>/install.sh`.\n"
    );
}

/// NEXT-STEPS.md: 3. etcd, then the API server, controller manager and scheduler, each checked.
fn control_plane(p: &Page<'_>, w: &mut String) {
    let Page { c, d, .. } = *p;
    let etcdctl = format!("{}etcdctl", d.etcdctl_env());
    let certs = etcd_certs();
    let admin = on_node_kubeconfig(Id::Admin);
    let super_admin = on_node_kubeconfig(Id::SuperAdmin);
    let tree_admin = crate::r#gen::pki::certs::tree_kubeconfig(Id::Admin);
    let joining: Vec<_> = c.control_planes().filter(|n| n.joins_etcd).collect();
    let cps: Vec<_> = c.control_planes().filter(|n| !n.joins_etcd).collect();
    let first = cps.first();
    let _ = writeln!(w, "## 3. Start the control plane, one step at a time\n");
    let _ = writeln!(
        w,
        "On every control-plane node ({}), start etcd. It reports started once its members have\n\
         a quorum, so with several control-plane nodes start them all at about the same time\n\
         (`systemctl start --no-block etcd` returns at once):\n\n\
         ```sh\nsystemctl start etcd\n```\n\nCheck that every member is healthy (on a control-plane node):\n\n\
         ```sh\n{etcdctl} --endpoints={} \\\n    {certs} \\\n    endpoint health\n```\n",
        cps.iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        cps.iter()
            .map(|n| format!("https://{}", sock(n.ip, 2379)))
            .collect::<Vec<_>>()
            .join(",")
    );
    if let Some(running) = first {
        for n in &joining {
            let _ = writeln!(
                w,
                "Control plane `{name}` joins the running etcd cluster (its unit says\n\
                 `--initial-cluster-state=existing`). One member at a time: first tell the cluster about it\n\
                 (on `{run}`), then start it on `{name}` and check the members:\n\n\
                 ```sh\n{etcdctl} --endpoints=https://{rsock} \\\n    {certs} \\\n    member add {name} --peer-urls=https://{peer}\n\
                 systemctl start etcd   # on {name}\n\
                 {etcdctl} --endpoints=https://{rsock} \\\n    {certs} \\\n    member list -w table\n```\n",
                name = n.name,
                run = running.name,
                rsock = sock(running.ip, 2379),
                peer = sock(n.ip, 2380),
            );
        }
    }
    if let Some(e) = &c.api_endpoint {
        let _ = writeln!(
            w,
            "Your load balancer at {e} (`--api-endpoint`) must pass TCP through, untouched, to port\n\
             6443 of every control-plane node, and stop sending new connections to one whose\n\
             `/readyz` fails, within a few seconds{delay}. The API server's certificate names {host}.\n\
             With HAProxy:\n\n\
             ```\n{cfg}```\n",
            delay = if c.several_control_planes() {
                format!(
                    ": each API server, when stopped, fails /readyz for {} before it closes\n\
                     (`--shutdown-delay-duration`), so that an upgrade or a restart fails no request",
                    crate::r#gen::node::configs::API_SHUTDOWN_DELAY
                )
            } else {
                String::new()
            },
            host = e.host,
            cfg = crate::r#gen::node::configs::operator_lb_config(c, e),
        );
    }
    let _ = writeln!(
        w,
        "Then kube-apiserver, and check it answers `ok` (admin.conf talks to {url}: with several\n\
         control-plane nodes that address must reach one of them, e.g. a load balancer):\n\n\
         ```sh\nsystemctl start kube-apiserver\n\
         kubectl --kubeconfig {admin} get --raw /readyz\n```\n",
        url = c.api_server_url
    );
    let _ = writeln!(
        w,
        "Give the admin group its rights, as kubeadm does: admin.conf (and kube-apiserver's\n\
         client certificate for the kubelets, used by `kubectl logs` and `kubectl exec`) belong to\n\
         the group `kubeadm:cluster-admins`, which nothing binds yet. super-admin.conf\n\
         (`system:masters`) can; keep it for emergencies afterwards:\n\n\
         ```sh\nkubectl --kubeconfig {super_admin} create clusterrolebinding kubeadm:cluster-admins \\\n    --clusterrole=cluster-admin --group=kubeadm:cluster-admins\n```\n"
    );
    let _ = writeln!(
        w,
        "Then the controller manager and the scheduler:\n\n\
         ```sh\nsystemctl start kube-controller-manager kube-scheduler\n\
         kubectl --kubeconfig {admin} get --raw '/readyz?verbose'\n\
         kubectl --kubeconfig {admin} -n kube-system get leases\n```\n\n\
         (the leases `kube-controller-manager` and `kube-scheduler` name their holders).\n"
    );
    let _ = writeln!(
        w,
        "From your own machine, use the admin kubeconfig:\n\n```sh\nexport KUBECONFIG=$PWD/{tree_admin}   # or: eval \"$(kbin env --cluster .)\"\nkubectl get --raw /readyz\n```\n"
    );
}

/// NEXT-STEPS.md: 4. containerd, kubelet, kube-proxy on each worker, each checked.
fn workers(p: &Page<'_>, w: &mut String) {
    let Page {
        c,
        v,
        binaries_bundled,
        ..
    } = *p;
    let _ = writeln!(w, "## 4. Start the workers\n");
    // Images the toolchain pulled ride in the workers' bundle: containerd needs the pause image
    // before the kubelet starts a pod, and there may be no registry to pull it from.
    let import = if binaries_bundled && !v.image_archives.is_empty() {
        format!(
            "ctr -n k8s.io images import {}/*.tar   # {} (no registry needed)\n",
            crate::r#gen::node::configs::paths::IMAGES,
            v.image_archives
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        w,
        "On every worker ({}), in this order:\n\n\
         ```sh\nsystemctl start kbin-pod-network   # routes to the other workers' pods, NAT only out of the cluster\n\
         ip route show proto {proto}; iptables -t nat -S KBIN-POD-MASQ\n\
         systemctl start containerd\ncrictl info > /dev/null && echo containerd ok\n{import}{lb}\
         systemctl start kubelet\nsystemctl start kube-proxy\n\
         iptables -t nat -L KUBE-SERVICES | head -n 5   # kube-proxy wrote its rules\n```\n\n\
         Then, from your machine, every worker is listed and becomes `Ready` (control-plane nodes\n\
         that are not workers run no kubelet, so they are not listed):\n\n\
         ```sh\nkubectl get nodes -o wide\n```\n",
        c.workers()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        proto = crate::r#gen::node::configs::ROUTE_PROTO,
        lb = if c.node_local_lb() {
            "systemctl start kbin-apiserver-lb   # HAProxy (apt-get install haproxy) in front of every API server\n\
             curl -sk https://127.0.0.1:6444/readyz; echo   # ok: the kubelet and kube-proxy go through it\n"
        } else {
            ""
        }
    );
    let _ = writeln!(
        w,
        "Give each Node the pod subnet its CNI config already uses (the controller manager runs with\n\
         `--allocate-node-cidrs=false`, so kbin's assignment is the only one). `spec.podCIDR` can be\n\
         set once, after the kubelet registered its Node:\n\n```sh"
    );
    for n in c.workers() {
        let _ = writeln!(
            w,
            "kubectl patch node {name} -p '{{\"spec\":{{\"podCIDR\":\"{sub}\",\"podCIDRs\":[\"{sub}\"]}}}}'",
            name = n.name,
            sub = n.pod_subnet
        );
    }
    let _ = writeln!(
        w,
        "kubectl get nodes -o custom-columns=NAME:.metadata.name,POD_CIDR:.spec.podCIDR\n```\n"
    );
}

/// NEXT-STEPS.md: 5. pod traffic between nodes, the cluster DNS add-on, backups.
fn left_to_you(p: &Page<'_>, w: &mut String) {
    let Page { c, v, d, .. } = *p;
    let etcdctl = format!("{}etcdctl", d.etcdctl_env());
    let cps: Vec<_> = c.control_planes().filter(|n| !n.joins_etcd).collect();
    let first = cps.first();
    let _ = writeln!(w, "## 5. Pod traffic, cluster DNS, backups\n");
    let _ = writeln!(
        w,
        "**Pod routes between nodes, without NAT.** Each worker's bridge CNI gives its pods addresses\n\
         from its own subnet; `kbin-pod-network.service` (enabled by install.sh, started above, and\n\
         again at every boot) routes every other worker's subnet via that worker and masquerades only\n\
         pod traffic leaving the pod network {cidr}: a pod sees another pod's own address, on any node\n\
         (Kubernetes' network model). Its script is {script}; regenerate the tree after a node comes\n\
         or goes and restart the unit on every worker. A control-plane node that is not a worker gets\n\
         no such routes (it runs no pods and no kube-proxy).\n",
        cidr = c.pod_cidr,
        script = crate::r#gen::node::configs::paths::POD_NETWORK,
    );
    let _ = writeln!(
        w,
        "**Cluster DNS.** The kubelets send pods to {dns} for DNS. `addons/coredns.yaml` is CoreDNS {cd}\n\
         with a Service at that address, its image the one the workers imported (`kbin up` and\n\
         site.yml apply it; applying it again changes nothing). From your machine, once a Node is Ready:\n\n\
         ```sh\nkubectl apply --server-side --field-manager={fm} -f addons/\n\
         kubectl -n kube-system rollout status deployment/coredns\n```\n\n\
         **Check it end to end** (any image with nslookup that your nodes have):\n\n\
         ```sh\nkubectl run probe --image=busybox:1.36 --restart=Never -- sleep 3600\n\
         kubectl wait --for=condition=Ready pod/probe\n\
         kubectl exec probe -- nslookup kubernetes.default.svc.{dom}\n\
         kubectl delete pod probe\n```",
        dns = c.cluster_dns,
        cd = v.images.coredns,
        fm = crate::r#gen::node::addons::FIELD_MANAGER,
        dom = c.cluster_domain
    );
    if let Some(n) = first {
        use crate::r#gen::node::configs::{ETCD_BACKUP_KEEP_DAYS, paths};
        let members: Vec<&str> = c.control_planes().map(|m| m.name.as_str()).collect();
        let _ = writeln!(
            w,
            "\n**etcd backups.** Every member snapshots etcd daily into {dir} (etcd-backup.timer,\n\
             enabled by install.sh; {keep} days kept, each with its sha256). One now, on {first}:\n\n\
             ```sh\nsystemctl start etcd-backup && ls -l {dir}\n```\n\n\
             `ansible-playbook -i ansible/inventory.yml ansible/backup.yml` takes one and fetches it into\n\
             backups/ here. **Restore** (the cluster goes back to the snapshot; what was written since is\n\
             lost): copy the snapshot and its .sha256 to every member ({members}), then\n\n\
             ```sh\nsystemctl stop kube-apiserver        # on every control plane\n\
             systemctl stop etcd                  # on every member\n\
             {restore} /path/to/etcd-{first}-TIME.db   # on every member, the same snapshot\n\
             systemctl start etcd                 # on every member\n\
             {etcdctl} --endpoints=https://{sock} {certs} endpoint health\n\
             systemctl start kube-apiserver && systemctl restart kube-controller-manager kube-scheduler\n\
             systemctl restart kubelet            # on every worker\n```\n\n\
             or `ansible-playbook -i ansible/inventory.yml ansible/restore.yml -e kbin_snapshot=$PWD/backups/etcd-{first}-TIME.db`.",
            dir = paths::ETCD_BACKUPS,
            keep = ETCD_BACKUP_KEEP_DAYS,
            first = n.name,
            members = members.join(", "),
            restore = paths::ETCD_RESTORE,
            sock = sock(n.ip, 2379),
            certs = etcd_certs().replace(" \\\n    ", " ")
        );
    }
}

/// NEXT-STEPS.md: 6. upgrades and nodes in and out, by hand (what upgrade.yml and remove.yml do).
fn day_two(p: &Page<'_>, w: &mut String) {
    let Page { c, d, .. } = *p;
    let etcdctl = format!("{}etcdctl", d.etcdctl_env());
    let certs = etcd_certs().replace(" \\\n    ", " ");
    let lb = if c.node_local_lb() {
        " kbin-apiserver-lb"
    } else {
        ""
    };
    let admin = on_node_kubeconfig(Id::Admin);
    let _ = writeln!(
        w,
        "\n## 6. Later: upgrades, nodes in and out\n\n\
         **Upgrade** (`kbin install NEW`, then `kbin gen cluster --toolchain NEW` over this tree; one\n\
         minor at a time). `ansible/upgrade.yml` does this; by hand, copy and install each node's new\n\
         bundle as in step 2, then one machine at a time, each checked before the next:\n\n\
         ```sh\n\
         # every etcd member, one at a time\n\
         systemctl restart etcd && {etcdctl} --endpoints=https://127.0.0.1:2379 {certs} endpoint health\n\
         # every control plane, one at a time\n\
         systemctl restart kube-apiserver && kubectl --kubeconfig {admin} --server https://127.0.0.1:6443 get --raw /readyz\n\
         systemctl restart kube-controller-manager kube-scheduler\n\
         curl -sk https://127.0.0.1:10257/healthz; curl -sk https://127.0.0.1:10259/healthz\n\
         # every worker, one at a time (drain honours PodDisruptionBudgets)\n\
         kubectl drain NAME --ignore-daemonsets --delete-emptydir-data    # from your machine\n\
         systemctl restart kbin-pod-network containerd{lb} kubelet kube-proxy\n\
         kubectl wait --for=condition=Ready node/NAME && kubectl uncordon NAME\n\
         kubectl get pods -A --field-selector spec.nodeName=NAME          # Running again\n\
         ```\n\n\
         Restarting the kubelet or containerd leaves running containers alone: they belong to\n\
         containerd's shims (containerd's unit has `KillMode=process`), and the kubelet finds them again.\n\n\
         **Add a worker**: `kbin gen node NAME=IP --out DIR` (pinned to this tree's versions), then\n\
         `site.yml`, or steps 1 to 4 on it and `systemctl restart kbin-pod-network` on the other workers\n\
         (their new trees route its pods). **Add a control plane**: `kbin gen cluster --control-plane\n\
         NAME=IP` over this tree; its etcd member joins the running cluster (step 3 says how).\n\n\
         **Remove a node**: generate the tree without it (`kbin gen cluster` with the other nodes; each\n\
         keeps its pod subnet), then `ansible-playbook -i ansible/inventory.yml ansible/remove.yml`.\n\
         By hand, in this order:\n\n\
         ```sh\n\
         kubectl drain NAME --ignore-daemonsets --delete-emptydir-data    # a worker: its pods move\n\
         # a control plane: remove its etcd member first, from another member\n\
         {etcdctl} --endpoints=https://127.0.0.1:2379 {certs} member list\n\
         {etcdctl} --endpoints=https://127.0.0.1:2379 {certs} member remove ID\n\
         # on the node itself (the units it has)\n\
         systemctl disable --now kube-proxy kubelet{lb} containerd kbin-pod-network \\\n    kube-scheduler kube-controller-manager kube-apiserver etcd-backup.timer etcd\n\
         kubectl delete node NAME\n\
         ```\n\n\
         then install the other nodes' new trees one machine at a time as for an upgrade: the workers\n\
         forget its pod subnet (`systemctl restart kbin-pod-network`), the API servers and load\n\
         balancers forget a removed control plane.\n\n\
         **Rotate the key Secrets are encrypted with**, in three steps, each rolled out to every API\n\
         server (`upgrade.yml`, or `systemctl restart kube-apiserver` on each control plane in turn)\n\
         before the next: `kbin gen encryption-key add` (a new key every API server reads with), `use`\n\
         (it writes; then write every Secret again: `kubectl get secrets -A -o json | kubectl replace\n\
         -f -`), `drop` (the old key gone)."
    );
}

fn sock(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(ip) => format!("{ip}:{port}"),
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}
