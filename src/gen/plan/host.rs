//! What kbin reads of the machine it runs on when a cluster is generated for this machine: its
//! routable address, the host profile its configs need, and whether systemd-resolved owns
//! `/etc/resolv.conf`.
//!
//! Nothing here changes the machine; every answer ends up written (and explained) in the
//! generated files, never applied behind their back.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The kind of machine the nodes are: what the kubelet, containerd and kube-proxy configs must
/// allow for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostProfile {
    /// A full machine with systemd as PID 1: the systemd cgroup driver, nothing relaxed.
    #[default]
    Systemd,
    /// A container, WSL or CI sandbox: PID 1 is not systemd (the kubelet's systemd cgroup driver
    /// refuses to run: the cgroupfs driver, in containerd too), no CAP_SYS_RESOURCE (containerd's
    /// `restrict_oom_score_adj = true`) and a read-only `/proc/sys` (kube-proxy's
    /// `conntrack.maxPerCore: 0`, as kind does).
    Sandbox,
}

impl HostProfile {
    /// Every profile with its name, the table parsing and printing walk.
    pub const ALL: [(HostProfile, &'static str); 2] = [
        (HostProfile::Systemd, "systemd"),
        (HostProfile::Sandbox, "sandbox"),
    ];

    /// The name used on the command line and in `cluster.toml`.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
            .expect("every HostProfile is in ALL")
    }

    /// The kubelet's and containerd's cgroup driver.
    pub fn cgroup_driver(self) -> CgroupDriver {
        match self {
            HostProfile::Systemd => CgroupDriver::Systemd,
            HostProfile::Sandbox => CgroupDriver::Cgroupfs,
        }
    }

    /// Whether containerd must not raise containers' OOM score (no CAP_SYS_RESOURCE).
    pub fn restrict_oom_score_adj(self) -> bool {
        self == HostProfile::Sandbox
    }

    /// Whether kube-proxy must leave the conntrack table size alone (`/proc/sys` read-only).
    pub fn keep_conntrack_limits(self) -> bool {
        self == HostProfile::Sandbox
    }
}

impl std::fmt::Display for HostProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HostProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(p, _)| *p)
            .ok_or_else(|| format!("host profile {s:?} is not one of systemd, sandbox"))
    }
}

/// The cgroup driver the kubelet and runc use (they must agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// systemd manages the cgroups (needs systemd as PID 1).
    Systemd,
    /// The kubelet and runc write cgroupfs themselves.
    Cgroupfs,
}

/// Why this machine needs the sandbox profile: one reason per finding, empty on a full machine.
pub fn sandbox_reasons() -> Vec<String> {
    let mut why = Vec::new();
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if pid1.trim() != "systemd" {
        why.push(format!(
            "PID 1 is {:?}, not systemd (the kubelet's systemd cgroup driver would refuse to run)",
            pid1.trim()
        ));
    }
    if !has_capability(24) {
        why.push("no CAP_SYS_RESOURCE (containerd cannot raise OOM scores)".into());
    }
    if proc_sys_read_only() {
        why.push("/proc/sys is read-only (kube-proxy cannot size the conntrack table)".into());
    }
    why
}

/// Whether the effective capability set of this process holds capability `bit`.
fn has_capability(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Whether `/proc/sys/net` refuses writes (opening for writing changes nothing).
fn proc_sys_read_only() -> bool {
    let candidates = [
        "/proc/sys/net/netfilter/nf_conntrack_max",
        "/proc/sys/net/ipv4/ip_forward",
    ];
    candidates
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .is_some_and(|p| std::fs::OpenOptions::new().write(true).open(p).is_err())
}

/// The resolv.conf the kubelet should hand pods when systemd-resolved owns `/etc/resolv.conf`
/// (its stub at 127.0.0.53 would loop inside CoreDNS): `/run/systemd/resolve/resolv.conf`.
pub fn resolved_resolv_conf() -> Option<PathBuf> {
    resolved_resolv_conf_at(
        Path::new("/etc/resolv.conf"),
        Path::new("/run/systemd/resolve"),
    )
}

/// [`resolved_resolv_conf`] for given paths (tests).
pub fn resolved_resolv_conf_at(etc: &Path, resolve_dir: &Path) -> Option<PathBuf> {
    let upstream = resolve_dir.join("resolv.conf");
    let text = std::fs::read_to_string(etc).ok()?;
    let stub = text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["nameserver", "127.0.0.53"]);
    (stub && upstream.is_file()).then_some(upstream)
}

/// This machine's address for a one-machine cluster, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    /// The address.
    pub ip: IpAddr,
    /// How it was chosen, for the status line.
    pub how: String,
}

/// The IPv4 address of the default route's interface, else the first non-loopback IPv4 address
/// of an interface; `None` when the machine has none.
pub fn routable_address() -> Option<HostAddress> {
    let addrs: Vec<(String, Ipv4Addr)> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| match i.ip() {
            IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_link_local() => Some((i.name, ip)),
            _ => None,
        })
        .collect();
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if let Some(iface) = default_route_interface(&route)
        && let Some((_, ip)) = addrs.iter().find(|(n, _)| *n == iface)
    {
        return Some(HostAddress {
            ip: IpAddr::V4(*ip),
            how: format!("the address of {iface}, the default route's interface"),
        });
    }
    addrs.first().map(|(n, ip)| HostAddress {
        ip: IpAddr::V4(*ip),
        how: format!("the address of {n} (no default route)"),
    })
}

/// The interface of the IPv4 default route in `/proc/net/route`'s text.
pub fn default_route_interface(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
    })
}

/// Whether `ip` is one of this machine's addresses.
pub fn is_own_address(ip: IpAddr) -> bool {
    ip.is_loopback()
        || if_addrs::get_if_addrs()
            .unwrap_or_default()
            .iter()
            .any(|i| i.ip() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_interface_is_read_from_proc_net_route() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\n"), None);
    }

    #[test]
    fn systemd_resolved_stub_points_the_kubelet_at_the_upstream_file() {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("resolv.conf");
        let run = d.path().join("resolve");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        std::fs::write(&etc, "# stub\nnameserver 127.0.0.53\noptions edns0\n").unwrap();
        assert_eq!(
            resolved_resolv_conf_at(&etc, &run),
            Some(run.join("resolv.conf"))
        );
        std::fs::write(&etc, "nameserver 192.0.2.1\n").unwrap();
        assert_eq!(resolved_resolv_conf_at(&etc, &run), None);
    }

    #[test]
    fn profiles_parse_and_print_by_name() {
        for (p, n) in HostProfile::ALL {
            assert_eq!(n.parse::<HostProfile>().unwrap(), p);
            assert_eq!(p.to_string(), n);
        }
        assert!("docker".parse::<HostProfile>().is_err());
        assert_eq!(HostProfile::Sandbox.cgroup_driver(), CgroupDriver::Cgroupfs);
    }
}
