//! The version-gated table: which flags, config API versions and config schemas each component
//! version gets.
//!
//! Every decision the renderers make that depends on a version is a [`Knob`]; [`RULES`] holds,
//! per knob, rows that each cover a half-open range of the component's minor versions
//! (`from <= v < until`) with the value to use and the upstream source of the rule. Code never
//! compares versions itself: it asks [`Decisions::get`]. Adding a rule is adding a row.
//!
//! The versions come from a toolchain's receipt ([`Versions::from_receipt`]) or from the manifest
//! ([`Versions::from_resolution`], `--kubernetes-version`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::Serialize;

use crate::manifest::resolve::Resolution;
use crate::manifest::{Arch, Digest, Images};
use crate::store::Layout;
use crate::toolchain::receipt::Receipt;

/// Errors finding the versions to generate for.
#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    /// No `--toolchain`, no default toolchain and no `--kubernetes-version`.
    #[error(
        "no toolchain to generate for: no --toolchain given, no default toolchain set in {settings}, and no --kubernetes-version"
    )]
    NoToolchain {
        /// The settings file that has no default.
        settings: PathBuf,
    },
    /// The named toolchain has no receipt.
    #[error("toolchain {name:?} is not installed (no {receipt})")]
    NotInstalled {
        /// The toolchain.
        name: String,
        /// The receipt path looked for.
        receipt: PathBuf,
    },
    /// The receipt could not be read.
    #[error(transparent)]
    Receipt(#[from] crate::toolchain::receipt::ReceiptError),
    /// The settings could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A component the configs need has no version.
    #[error("{source_name} has no version for {component}; the configs need one")]
    Missing {
        /// The toolchain or manifest release.
        source_name: String,
        /// The component or binary.
        component: String,
    },
    /// A tree's `versions.toml` could not be read.
    #[error("cannot read {path}: {reason}")]
    Record {
        /// The record.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A version falls outside every row of a knob: the table does not know it.
    #[error("kbin's version table has no rule for {knob} with {component} {version}")]
    NoRule {
        /// The knob.
        knob: &'static str,
        /// The component.
        component: &'static str,
        /// Its version.
        version: Version,
    },
}

/// A decision that depends on a component's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Knob {
    /// `version = N` at the top of containerd's config.toml.
    ContainerdConfigVersion,
    /// The CRI runtime plugin's table name (runtimes, CNI).
    ContainerdCriRuntimePlugin,
    /// Where the sandbox (pause) image is set: `<table>|<key>`.
    ContainerdSandboxImage,
    /// The CNI binary directory key: `bin_dir = "…"` or `bin_dirs = ["…"]`.
    ContainerdCniBinDir,
    /// How the kubelet learns the CRI endpoint: `flags` (`--container-runtime=remote
    /// --container-runtime-endpoint`) or `config` (`containerRuntimeEndpoint`).
    KubeletRuntimeEndpoint,
    /// What the kubelet does on a cgroup v1 host: `no-field` (field unknown, runs), `runs`
    /// (`failCgroupV1` defaults to false) or `refuses` (needs `failCgroupV1: false`).
    KubeletCgroupV1,
    /// KubeletConfiguration's apiVersion.
    KubeletConfigApi,
    /// KubeSchedulerConfiguration's apiVersion.
    SchedulerConfigApi,
    /// KubeProxyConfiguration's apiVersion.
    KubeProxyConfigApi,
    /// EncryptionConfiguration's apiVersion.
    EncryptionConfigApi,
    /// Extra etcd logging flags (empty: the default logger is already structured).
    EtcdLoggerFlags,
    /// The etcd flag that checks data for corruption before serving.
    EtcdCorruptCheckFlag,
    /// `cniVersion` of the CNI conflist.
    CniSpecVersion,
    /// Which addresses kube-proxy opens NodePorts on.
    KubeProxyNodePortAddresses,
    /// Whether etcdctl needs `ETCDCTL_API=3` for the v3 API.
    EtcdctlApiEnv,
    /// etcd's `--snapshot-count` (deprecated from 3.6, where 10000 is the default).
    EtcdSnapshotCount,
}

/// What a row decides. Each knob takes one kind of value ([`Knob::accepts`], checked by a test)
/// and renderers match on the enums: a misspelt decision does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Value {
    /// Written into a file as it is: an apiVersion, a plugin table name, a cniVersion.
    Text(&'static str),
    /// Command-line flags added as they are (none: the default is right).
    Flags(&'static [&'static str]),
    /// How the kubelet learns the CRI endpoint.
    RuntimeEndpoint(RuntimeEndpoint),
    /// What the kubelet does on a cgroup v1 host.
    CgroupV1(CgroupV1),
    /// containerd's CNI binary directory key.
    CniBinDir(CniBinDir),
    /// Where containerd's config names the sandbox (pause) image.
    SandboxImage {
        /// The table's path under `plugins`.
        table: &'static [&'static str],
        /// The key in it.
        key: &'static str,
    },
    /// kube-proxy's NodePort addresses.
    NodePortAddresses(NodePortAddresses),
    /// Whether etcdctl needs `ETCDCTL_API=3`.
    EtcdctlApiEnv(bool),
}

impl Value {
    /// The value as `gen --diff` shows it.
    pub fn describe(&self) -> String {
        match self {
            Value::Text(t) => (*t).to_owned(),
            Value::Flags([]) => "(no flags)".into(),
            Value::Flags(f) => f.join(" "),
            Value::RuntimeEndpoint(e) => kebab(e),
            Value::CgroupV1(c) => kebab(c),
            Value::CniBinDir(c) => kebab(c),
            Value::SandboxImage { table, key } => format!("{}.{key}", table.join(".")),
            Value::NodePortAddresses(n) => kebab(n),
            Value::EtcdctlApiEnv(true) => "ETCDCTL_API=3".into(),
            Value::EtcdctlApiEnv(false) => "(not set)".into(),
        }
    }
}

/// The serde (kebab-case) name of a unit variant.
fn kebab<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// How the kubelet learns the CRI endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeEndpoint {
    /// `--container-runtime=remote --container-runtime-endpoint=…`.
    Flags,
    /// `containerRuntimeEndpoint` in KubeletConfiguration.
    Config,
}

/// What the kubelet does on a cgroup v1 host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupV1 {
    /// No `failCgroupV1` field; the kubelet runs.
    NoField,
    /// `failCgroupV1` exists and defaults to false.
    Runs,
    /// The kubelet refuses unless `failCgroupV1: false`.
    Refuses,
}

/// containerd's CNI binary directory key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CniBinDir {
    /// `bin_dir = "…"`.
    BinDir,
    /// `bin_dirs = ["…"]`.
    BinDirs,
}

/// Which addresses kube-proxy opens NodePorts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodePortAddresses {
    /// The node's own address as a /32 CIDR (before `primary` existed).
    NodeIp,
    /// `primary`: the node's primary addresses.
    Primary,
}

impl Knob {
    /// The knob's name in messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            Knob::ContainerdConfigVersion => "containerd config version",
            Knob::ContainerdCriRuntimePlugin => "containerd CRI runtime plugin",
            Knob::ContainerdSandboxImage => "containerd sandbox image key",
            Knob::ContainerdCniBinDir => "containerd CNI bin dir key",
            Knob::KubeletRuntimeEndpoint => "kubelet runtime endpoint",
            Knob::KubeletCgroupV1 => "kubelet on cgroup v1",
            Knob::KubeletConfigApi => "KubeletConfiguration apiVersion",
            Knob::SchedulerConfigApi => "KubeSchedulerConfiguration apiVersion",
            Knob::KubeProxyConfigApi => "KubeProxyConfiguration apiVersion",
            Knob::EncryptionConfigApi => "EncryptionConfiguration apiVersion",
            Knob::EtcdLoggerFlags => "etcd logger flags",
            Knob::EtcdCorruptCheckFlag => "etcd initial corruption check",
            Knob::CniSpecVersion => "CNI conflist cniVersion",
            Knob::KubeProxyNodePortAddresses => "kube-proxy nodePortAddresses",
            Knob::EtcdctlApiEnv => "etcdctl ETCDCTL_API",
            Knob::EtcdSnapshotCount => "etcd snapshot count",
        }
    }

    /// Whether `v` is the kind of value this knob takes.
    pub fn accepts(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (
                Knob::ContainerdConfigVersion
                    | Knob::ContainerdCriRuntimePlugin
                    | Knob::KubeletConfigApi
                    | Knob::SchedulerConfigApi
                    | Knob::KubeProxyConfigApi
                    | Knob::EncryptionConfigApi
                    | Knob::CniSpecVersion,
                Value::Text(_)
            ) | (
                Knob::EtcdLoggerFlags | Knob::EtcdCorruptCheckFlag | Knob::EtcdSnapshotCount,
                Value::Flags(_)
            ) | (Knob::ContainerdSandboxImage, Value::SandboxImage { .. })
                | (Knob::ContainerdCniBinDir, Value::CniBinDir(_))
                | (Knob::KubeletRuntimeEndpoint, Value::RuntimeEndpoint(_))
                | (Knob::KubeletCgroupV1, Value::CgroupV1(_))
                | (
                    Knob::KubeProxyNodePortAddresses,
                    Value::NodePortAddresses(_)
                )
                | (Knob::EtcdctlApiEnv, Value::EtcdctlApiEnv(_))
        )
    }
}

/// One row of the table.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    /// The decision.
    pub knob: Knob,
    /// The component (or Kubernetes binary) whose version decides.
    pub component: &'static str,
    /// First minor the row covers (`(major, minor)`), inclusive; `None`: from the beginning.
    pub from: Option<(u64, u64)>,
    /// First minor the row no longer covers, exclusive; `None`: still current.
    pub until: Option<(u64, u64)>,
    /// The value the renderers use.
    pub value: Value,
    /// Where upstream says so.
    pub source: &'static str,
}

impl Rule {
    fn covers(&self, v: &Version) -> bool {
        let mm = (v.major, v.minor);
        self.from.is_none_or(|f| mm >= f) && self.until.is_none_or(|u| mm < u)
    }

    /// The covered range as text: `>= 1.27`, `< 2.0`, `>= 2.0, < 2.1`, `all`.
    pub fn range(&self) -> String {
        match (self.from, self.until) {
            (None, None) => "all".into(),
            (Some((a, b)), None) => format!(">= {a}.{b}"),
            (None, Some((a, b))) => format!("< {a}.{b}"),
            (Some((a, b)), Some((c, d))) => format!(">= {a}.{b}, < {c}.{d}"),
        }
    }
}

const fn rule(
    knob: Knob,
    component: &'static str,
    from: Option<(u64, u64)>,
    until: Option<(u64, u64)>,
    value: Value,
    source: &'static str,
) -> Rule {
    Rule {
        knob,
        component,
        from,
        until,
        value,
        source,
    }
}

const CONTAINERD_RELEASES: &str =
    "containerd RELEASES.md (\"Deprecated config properties\") and docs/cri/config.md";

/// The table. For each knob the rows partition the versions (checked by a test).
pub static RULES: &[Rule] = &[
    // containerd 2.0 introduced config version 3 and split the CRI plugin into
    // io.containerd.cri.v1.{runtime,images}; 1.x reads version 2 with io.containerd.grpc.v1.cri.
    rule(
        Knob::ContainerdConfigVersion,
        "containerd",
        None,
        Some((2, 0)),
        Value::Text("2"),
        "containerd docs/PLUGINS.md (version 2 config, containerd 1.x)",
    ),
    rule(
        Knob::ContainerdConfigVersion,
        "containerd",
        Some((2, 0)),
        None,
        Value::Text("3"),
        "containerd docs/containerd-2.0.md (\"version = 3\" config, migrated with `containerd config migrate`)",
    ),
    rule(
        Knob::ContainerdCriRuntimePlugin,
        "containerd",
        None,
        Some((2, 0)),
        Value::Text("io.containerd.grpc.v1.cri"),
        CONTAINERD_RELEASES,
    ),
    rule(
        Knob::ContainerdCriRuntimePlugin,
        "containerd",
        Some((2, 0)),
        None,
        Value::Text("io.containerd.cri.v1.runtime"),
        "containerd docs/cri/config.md (2.x: plugins.'io.containerd.cri.v1.runtime')",
    ),
    rule(
        Knob::ContainerdSandboxImage,
        "containerd",
        None,
        Some((2, 0)),
        Value::SandboxImage {
            table: &["io.containerd.grpc.v1.cri"],
            key: "sandbox_image",
        },
        "containerd docs/cri/config.md (1.x: sandbox_image)",
    ),
    rule(
        Knob::ContainerdSandboxImage,
        "containerd",
        Some((2, 0)),
        None,
        Value::SandboxImage {
            table: &["io.containerd.cri.v1.images", "pinned_images"],
            key: "sandbox",
        },
        "containerd docs/cri/config.md (2.x: plugins.'io.containerd.cri.v1.images'.pinned_images.sandbox)",
    ),
    // bin_dir is deprecated from 2.1 (removed in 2.3) in favour of the list bin_dirs.
    rule(
        Knob::ContainerdCniBinDir,
        "containerd",
        None,
        Some((2, 1)),
        Value::CniBinDir(CniBinDir::BinDir),
        CONTAINERD_RELEASES,
    ),
    rule(
        Knob::ContainerdCniBinDir,
        "containerd",
        Some((2, 1)),
        None,
        Value::CniBinDir(CniBinDir::BinDirs),
        "containerd RELEASES.md: CNI `bin_dir` deprecated in v2.1, removed in v2.3; use `bin_dirs`",
    ),
    // kubelet 1.27 removed --container-runtime (KEP-2221 dockershim removal follow-up);
    // containerRuntimeEndpoint joined KubeletConfiguration in 1.27.
    rule(
        Knob::KubeletRuntimeEndpoint,
        "kubelet",
        None,
        Some((1, 27)),
        Value::RuntimeEndpoint(RuntimeEndpoint::Flags),
        "kubernetes CHANGELOG-1.24 (dockershim removed: --container-runtime=remote required)",
    ),
    rule(
        Knob::KubeletRuntimeEndpoint,
        "kubelet",
        Some((1, 27)),
        None,
        Value::RuntimeEndpoint(RuntimeEndpoint::Config),
        "kubernetes CHANGELOG-1.27: --container-runtime removed; KubeletConfiguration.containerRuntimeEndpoint added",
    ),
    // failCgroupV1 arrived in 1.31 (default false) and defaults to true from 1.35 (KEP-5573).
    rule(
        Knob::KubeletCgroupV1,
        "kubelet",
        None,
        Some((1, 31)),
        Value::CgroupV1(CgroupV1::NoField),
        "kubernetes CHANGELOG-1.31 (KubeletConfiguration.failCgroupV1 added, default false)",
    ),
    rule(
        Knob::KubeletCgroupV1,
        "kubelet",
        Some((1, 31)),
        Some((1, 35)),
        Value::CgroupV1(CgroupV1::Runs),
        "kubernetes CHANGELOG-1.31 (cgroup v1 in maintenance mode; failCgroupV1 defaults to false)",
    ),
    rule(
        Knob::KubeletCgroupV1,
        "kubelet",
        Some((1, 35)),
        None,
        Value::CgroupV1(CgroupV1::Refuses),
        "kubernetes CHANGELOG-1.35 / KEP-5573: kubelet fails on cgroup v1 unless failCgroupV1: false",
    ),
    rule(
        Knob::KubeletConfigApi,
        "kubelet",
        None,
        None,
        Value::Text("kubelet.config.k8s.io/v1beta1"),
        "kubernetes staging/src/k8s.io/kubelet/config/v1beta1 (the only served version)",
    ),
    // kubescheduler.config.k8s.io/v1 is GA in 1.25; v1beta3 was removed in 1.29.
    rule(
        Knob::SchedulerConfigApi,
        "kube-scheduler",
        None,
        Some((1, 25)),
        Value::Text("kubescheduler.config.k8s.io/v1beta3"),
        "kubernetes CHANGELOG-1.23 (v1beta3 added)",
    ),
    rule(
        Knob::SchedulerConfigApi,
        "kube-scheduler",
        Some((1, 25)),
        None,
        Value::Text("kubescheduler.config.k8s.io/v1"),
        "kubernetes CHANGELOG-1.25: kubescheduler.config.k8s.io/v1 graduated; v1beta3 removed in 1.29",
    ),
    rule(
        Knob::KubeProxyConfigApi,
        "kube-proxy",
        None,
        None,
        Value::Text("kubeproxy.config.k8s.io/v1alpha1"),
        "kubernetes staging/src/k8s.io/kube-proxy/config/v1alpha1 (still the served version)",
    ),
    rule(
        Knob::EncryptionConfigApi,
        "kube-apiserver",
        Some((1, 13)),
        None,
        Value::Text("apiserver.config.k8s.io/v1"),
        "kubernetes docs tasks/administer-cluster/encrypt-data (v1 since 1.13)",
    ),
    // etcd 3.4 still defaults to the deprecated capnslog logger; 3.5 made zap the default and
    // removed capnslog.
    rule(
        Knob::EtcdLoggerFlags,
        "etcd",
        None,
        Some((3, 5)),
        Value::Flags(&["--logger=zap", "--log-outputs=stderr"]),
        "etcd CHANGELOG-3.4: --logger=capnslog deprecated, use --logger=zap",
    ),
    rule(
        Knob::EtcdLoggerFlags,
        "etcd",
        Some((3, 5)),
        None,
        Value::Flags(&[]),
        "etcd CHANGELOG-3.5: zap is the default logger, capnslog removed",
    ),
    // etcd 3.6 turned experimental flags into feature gates.
    rule(
        Knob::EtcdCorruptCheckFlag,
        "etcd",
        None,
        Some((3, 6)),
        Value::Flags(&["--experimental-initial-corrupt-check=true"]),
        "etcd CHANGELOG-3.4/3.5: --experimental-initial-corrupt-check",
    ),
    rule(
        Knob::EtcdCorruptCheckFlag,
        "etcd",
        Some((3, 6)),
        None,
        Value::Flags(&["--feature-gates=InitialCorruptCheck=true"]),
        "etcd CHANGELOG-3.6: experimental flags deprecated, replaced by --feature-gates",
    ),
    // CNI spec 1.0.0 is understood by plugins from v1.0.0 on.
    rule(
        Knob::CniSpecVersion,
        "cni-plugins",
        None,
        Some((1, 0)),
        Value::Text("0.4.0"),
        "containernetworking/plugins v0.9 (CNI spec 0.4.0)",
    ),
    rule(
        Knob::CniSpecVersion,
        "cni-plugins",
        Some((1, 0)),
        None,
        Value::Text("1.0.0"),
        "containernetworking/plugins v1.0.0 release notes (CNI spec 1.0.0)",
    ),
    // kube-proxy 1.29 added `primary` for --nodeport-addresses / nodePortAddresses (KEP-3866)
    // and warns when it is unset; older ones take CIDRs.
    rule(
        Knob::KubeProxyNodePortAddresses,
        "kube-proxy",
        None,
        Some((1, 29)),
        Value::NodePortAddresses(NodePortAddresses::NodeIp),
        "kubernetes KubeProxyConfiguration v1alpha1: nodePortAddresses is a list of CIDRs",
    ),
    rule(
        Knob::KubeProxyNodePortAddresses,
        "kube-proxy",
        Some((1, 29)),
        None,
        Value::NodePortAddresses(NodePortAddresses::Primary),
        "kubernetes CHANGELOG-1.29: kube-proxy --nodeport-addresses accepts `primary` (KEP-3866)",
    ),
    // etcd 3.6 made 10000 the default and deprecated the flag (warned about at every start).
    rule(
        Knob::EtcdSnapshotCount,
        "etcd",
        None,
        Some((3, 6)),
        Value::Flags(&["--snapshot-count=10000"]),
        "etcd CHANGELOG-3.4/3.5: --snapshot-count defaults to 100000; 10000 is kubeadm's and 3.6's value",
    ),
    rule(
        Knob::EtcdSnapshotCount,
        "etcd",
        Some((3, 6)),
        None,
        Value::Flags(&[]),
        "etcd server/etcdmain/config.go (v3.6): --snapshot-count deprecated, decommissioned in 3.7; default 10000",
    ),
    // etcdctl 3.4 made the v3 API its default; 3.6 warns about ETCDCTL_API as unrecognized.
    rule(
        Knob::EtcdctlApiEnv,
        "etcd",
        None,
        Some((3, 4)),
        Value::EtcdctlApiEnv(true),
        "etcd CHANGELOG-3.4: etcdctl defaults to the v3 API (ETCDCTL_API=3 no longer needed)",
    ),
    rule(
        Knob::EtcdctlApiEnv,
        "etcd",
        Some((3, 4)),
        None,
        Value::EtcdctlApiEnv(false),
        "etcd CHANGELOG-3.4: v3 API is etcdctl's default; etcd 3.6 reports ETCDCTL_API as unrecognized",
    ),
];

/// The exact versions generation is pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Versions {
    /// Where they come from: `toolchain 1.30` or `manifest 1.30.14`.
    pub origin: String,
    /// The Kubernetes version.
    pub kubernetes: Version,
    /// The binaries' architecture.
    pub arch: Arch,
    /// Version per component and per Kubernetes binary (`kubelet`, `etcd`, `cni-plugins`, …).
    pub components: BTreeMap<String, Version>,
    /// The images the configs refer to.
    pub images: Images,
    /// The toolchain directory whose binaries go into the bundles (none from the manifest).
    pub toolchain_dir: Option<PathBuf>,
    /// Binary name to its path relative to `toolchain_dir` (from the receipt).
    pub binaries: BTreeMap<String, String>,
    /// Binary name to the digest the receipt records for it (its blob in the store): the shared
    /// bundles are keyed by these instead of re-hashing hundreds of MB on every run.
    #[serde(skip)]
    pub digests: BTreeMap<String, Digest>,
    /// Image archives the toolchain pulled: file name (`pause-3.10.1.tar`) → its path relative
    /// to `toolchain_dir` and its blob's digest (workers get them in their binaries bundle).
    #[serde(skip)]
    pub image_archives: BTreeMap<String, (String, Digest)>,
    /// Images the toolchain pulled for its architecture: name (`registry.k8s.io/pause:3.10.1`)
    /// to the platform manifest's digest, what containerd names the imported image by (the
    /// add-ons refer to their image by it).
    #[serde(skip)]
    pub image_digests: BTreeMap<String, Digest>,
    /// The KBIN_HOME the toolchain is installed in, whose store keeps the shared binaries
    /// bundles made from it (none for versions read from the manifest or a bare receipt).
    #[serde(skip)]
    pub home: Option<Layout>,
    /// Components the toolchain lacks (installed with `--only`) whose versions were taken
    /// from its Kubernetes minor's defaults in the manifest, as `name version`.
    pub from_defaults: Vec<String>,
}

/// The components and Kubernetes binaries the configs need a version for.
pub const NEEDED: &[&str] = &[
    "cni-plugins",
    "containerd",
    "crictl",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubelet",
    "runc",
];

impl Versions {
    /// The versions of an installed toolchain's receipt.
    pub fn from_receipt(
        receipt: &Receipt,
        toolchain_dir: Option<PathBuf>,
    ) -> Result<Self, VersionsError> {
        let origin = format!("toolchain {}", receipt.name);
        let mut components = BTreeMap::new();
        let mut binaries = BTreeMap::new();
        let mut digests = BTreeMap::new();
        for c in &receipt.components {
            components
                .entry(c.name.clone())
                .or_insert_with(|| c.version.clone());
            for b in &c.binaries {
                components
                    .entry(b.name.clone())
                    .or_insert_with(|| c.version.clone());
                binaries
                    .entry(b.name.clone())
                    .or_insert_with(|| b.path.clone());
                digests
                    .entry(b.name.clone())
                    .or_insert_with(|| b.digest.clone());
            }
        }
        let image_archives = receipt
            .pulled
            .iter()
            .filter_map(|p| {
                let name = p
                    .name
                    .parse::<crate::images::ImageRef>()
                    .ok()?
                    .archive_name();
                Some((name.clone(), (format!("images/{name}"), p.archive.clone())))
            })
            .collect();
        let image_digests = receipt
            .pulled
            .iter()
            .filter(|p| p.arch == receipt.arch)
            .map(|p| (p.name.clone(), p.manifest.clone()))
            .collect();
        let images = receipt
            .images
            .clone()
            .ok_or_else(|| VersionsError::Missing {
                source_name: origin.clone(),
                component: "images (pause, coredns)".into(),
            })?;
        Self::checked(Versions {
            origin,
            kubernetes: receipt.kubernetes.clone(),
            arch: receipt.arch,
            components,
            images,
            toolchain_dir,
            binaries,
            digests,
            image_archives,
            image_digests,
            home: None,
            from_defaults: Vec::new(),
        })
    }

    /// The versions the manifest resolves for `--kubernetes-version` (no binaries).
    pub fn from_resolution(res: &Resolution, arch: Arch) -> Result<Self, VersionsError> {
        let origin = format!("manifest {}", res.kubernetes);
        let mut components = BTreeMap::new();
        for s in &res.components {
            components
                .entry(s.component.clone())
                .or_insert_with(|| s.version.clone());
        }
        for b in NEEDED {
            if let Some(v) = res.version_of_binary(b) {
                components
                    .entry((*b).to_owned())
                    .or_insert_with(|| v.clone());
            }
        }
        let images = res.images.clone().ok_or_else(|| VersionsError::Missing {
            source_name: origin.clone(),
            component: "images (pause, coredns)".into(),
        })?;
        Self::checked(Versions {
            origin,
            kubernetes: res.kubernetes.clone(),
            arch,
            components,
            images,
            toolchain_dir: None,
            binaries: BTreeMap::new(),
            digests: BTreeMap::new(),
            image_archives: BTreeMap::new(),
            image_digests: BTreeMap::new(),
            home: None,
            from_defaults: Vec::new(),
        })
    }

    /// The versions of `receipt`, with what it lacks (a toolchain installed with `--only`)
    /// taken from the defaults of its Kubernetes minor in `manifest`: the other Kubernetes
    /// binaries at the toolchain's Kubernetes version, other components at the minor's
    /// defaults, and the minor's images. Each filled component is listed in
    /// [`Versions::from_defaults`].
    pub fn from_receipt_with_defaults(
        receipt: &Receipt,
        toolchain_dir: Option<PathBuf>,
        manifest: &crate::manifest::Manifest,
    ) -> Result<Self, VersionsError> {
        let mut r = receipt.clone();
        let release = manifest
            .releases
            .get(&crate::manifest::Minor::of(&receipt.kubernetes))
            .and_then(|rel| rel.defaults.as_ref().ok());
        let mut filled = Vec::new();
        if let Some(d) = release {
            let has_binary = |r: &Receipt, b: &str| {
                r.components
                    .iter()
                    .any(|c| c.binaries.iter().any(|x| x.name == b))
            };
            for c in &manifest.components {
                let missing = if c.name == crate::manifest::KUBERNETES {
                    NEEDED
                        .iter()
                        .any(|n| c.binaries.iter().any(|b| b == n) && !has_binary(&r, n))
                } else {
                    NEEDED.contains(&c.name.as_str())
                        && !r.components.iter().any(|x| x.name == c.name)
                };
                if !missing {
                    continue;
                }
                let version = if c.name == crate::manifest::KUBERNETES {
                    receipt.kubernetes.clone()
                } else {
                    match d.components.get(&c.name) {
                        Some(v) => v.clone(),
                        None => continue,
                    }
                };
                // A receipt entry without binaries: the configs get a version, the bundles
                // nothing (the toolchain does not have them).
                let binaries: Vec<_> = if c.name == crate::manifest::KUBERNETES {
                    c.binaries
                        .iter()
                        .filter(|b| NEEDED.contains(&b.as_str()) && !has_binary(&r, b))
                        .map(|b| crate::toolchain::BinaryReceipt {
                            name: b.clone(),
                            path: String::new(),
                            digest: receipt.manifest.clone(),
                            reports: None,
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                filled.push(format!("{} {version}", c.name));
                r.components.push(crate::toolchain::ComponentReceipt {
                    name: c.name.clone(),
                    version,
                    origin: crate::toolchain::Origin::Download,
                    artifacts: Vec::new(),
                    binaries,
                    source: None,
                });
            }
            if r.images.is_none() {
                r.images = Some(d.images.clone());
                filled.push(format!(
                    "images (pause {}, coredns {})",
                    d.images.pause, d.images.coredns
                ));
            }
        }
        let mut v = Self::from_receipt(&r, toolchain_dir)?;
        // Filled binaries have no file: drop them from what the bundles copy.
        v.binaries.retain(|_, p| !p.is_empty());
        v.digests.retain(|b, _| v.binaries.contains_key(b));
        v.from_defaults = filled;
        Ok(v)
    }

    /// The toolchain named `name`, else the default one from settings.
    pub fn from_toolchain(layout: &Layout, name: Option<&str>) -> Result<Self, VersionsError> {
        Self::from_toolchain_in(layout, name, None)
    }

    /// [`Versions::from_toolchain`], with what the toolchain lacks taken from `manifest`'s
    /// defaults when one is given ([`Versions::from_receipt_with_defaults`]).
    pub fn from_toolchain_in(
        layout: &Layout,
        name: Option<&str>,
        manifest: Option<&crate::manifest::Manifest>,
    ) -> Result<Self, VersionsError> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => layout
                .settings()?
                .default
                .ok_or_else(|| VersionsError::NoToolchain {
                    settings: layout.settings_path(),
                })?,
        };
        let receipt_path = layout.receipt_path(&name);
        if !receipt_path.is_file() {
            return Err(VersionsError::NotInstalled {
                name,
                receipt: receipt_path,
            });
        }
        let receipt = Receipt::load(&receipt_path)?;
        let dir = Some(layout.toolchain_dir(&name));
        let mut v = match manifest {
            Some(m) => Self::from_receipt_with_defaults(&receipt, dir, m)?,
            None => Self::from_receipt(&receipt, dir)?,
        };
        v.home = Some(layout.clone());
        Ok(v)
    }

    fn checked(self) -> Result<Self, VersionsError> {
        for c in NEEDED {
            if !self.components.contains_key(*c) {
                return Err(VersionsError::Missing {
                    source_name: self.origin.clone(),
                    component: (*c).into(),
                });
            }
        }
        Ok(self)
    }

    /// The version of `component` (present for every name in [`NEEDED`]).
    pub fn of(&self, component: &str) -> &Version {
        self.components
            .get(component)
            .expect("checked at construction: every NEEDED component has a version")
    }

    /// Walk the table: one value per knob.
    pub fn decide(&self) -> Result<Decisions, VersionsError> {
        decide(&self.components)
    }

    /// What `versions.toml` records of these versions.
    pub fn record(&self) -> Record {
        Record {
            origin: self.origin.clone(),
            kubernetes: self.kubernetes.clone(),
            components: self.components.clone(),
            images: self.images.clone(),
        }
    }
}

/// One value per knob for `components` (each [`NEEDED`] one has a version).
fn decide(components: &BTreeMap<String, Version>) -> Result<Decisions, VersionsError> {
    let of = |c: &'static str| {
        components.get(c).ok_or_else(|| VersionsError::Missing {
            source_name: "the versions".into(),
            component: c.into(),
        })
    };
    let mut values = BTreeMap::new();
    for r in RULES {
        if r.covers(of(r.component)?) {
            values.insert(r.knob, *r);
        }
    }
    for r in RULES {
        if !values.contains_key(&r.knob) {
            return Err(VersionsError::NoRule {
                knob: r.knob.name(),
                component: r.component,
                version: of(r.component)?.clone(),
            });
        }
    }
    Ok(Decisions { rules: values })
}

/// `<out>/versions.toml`: the versions a tree was generated for, read back by `gen --diff` (which
/// rules changed), `kbin up` and upgrades (the skew from the running versions).
pub fn record_path(out: &Path) -> PathBuf {
    out.join("versions.toml")
}

/// What a tree records of the versions it was generated for (`versions.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Record {
    /// Where they came from: `toolchain 1.30` or `manifest 1.30.14`.
    pub origin: String,
    /// The Kubernetes version.
    pub kubernetes: Version,
    /// Version per component and per Kubernetes binary.
    pub components: BTreeMap<String, Version>,
    /// The images the configs name.
    pub images: Images,
}

impl Record {
    /// The record's text, with a comment saying what wrote it.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("strings and versions always serialize");
        format!(
            "# The versions this tree is pinned to. Written by `kbin gen`; read by `kbin gen --diff`,\n# `kbin up` and upgrades. Do not edit: run `kbin gen cluster --toolchain NAME` instead.\n{body}"
        )
    }

    /// The record of the tree in `out`, if it has one (trees made before kbin wrote it have
    /// none; a damaged one is an error).
    pub fn load(out: &Path) -> Result<Option<Record>, VersionsError> {
        let path = record_path(out);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(VersionsError::Record {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| VersionsError::Record {
                path,
                reason: e.message().to_owned(),
            })
    }

    /// Walk the table for these versions.
    pub fn decide(&self) -> Result<Decisions, VersionsError> {
        decide(&self.components)
    }
}

/// The table's answer for one set of versions.
#[derive(Debug, Clone, Serialize)]
pub struct Decisions {
    rules: BTreeMap<Knob, Rule>,
}

impl Decisions {
    /// The value chosen for `knob`.
    pub fn get(&self, knob: Knob) -> Value {
        self.rules
            .get(&knob)
            .map(|r| r.value)
            .expect("Versions::decide checks every knob has a row")
    }

    /// A [`Value::Text`] knob's text.
    pub fn text(&self, knob: Knob) -> &'static str {
        match self.get(knob) {
            Value::Text(t) => t,
            v => unreachable!("{knob:?} takes text, the table test checks it; got {v:?}"),
        }
    }

    /// A [`Value::Flags`] knob's flags.
    pub fn flags(&self, knob: Knob) -> &'static [&'static str] {
        match self.get(knob) {
            Value::Flags(f) => f,
            v => unreachable!("{knob:?} takes flags, the table test checks it; got {v:?}"),
        }
    }

    /// How the kubelet learns the CRI endpoint.
    pub fn runtime_endpoint(&self) -> RuntimeEndpoint {
        match self.get(Knob::KubeletRuntimeEndpoint) {
            Value::RuntimeEndpoint(r) => r,
            v => unreachable!("checked by the table test: {v:?}"),
        }
    }

    /// What the kubelet does on cgroup v1.
    pub fn cgroup_v1(&self) -> CgroupV1 {
        match self.get(Knob::KubeletCgroupV1) {
            Value::CgroupV1(c) => c,
            v => unreachable!("checked by the table test: {v:?}"),
        }
    }

    /// containerd's CNI binary directory key.
    pub fn cni_bin_dir(&self) -> CniBinDir {
        match self.get(Knob::ContainerdCniBinDir) {
            Value::CniBinDir(c) => c,
            v => unreachable!("checked by the table test: {v:?}"),
        }
    }

    /// containerd's sandbox image table and key.
    pub fn sandbox_image(&self) -> (&'static [&'static str], &'static str) {
        match self.get(Knob::ContainerdSandboxImage) {
            Value::SandboxImage { table, key } => (table, key),
            v => unreachable!("checked by the table test: {v:?}"),
        }
    }

    /// kube-proxy's NodePort addresses.
    pub fn node_port_addresses(&self) -> NodePortAddresses {
        match self.get(Knob::KubeProxyNodePortAddresses) {
            Value::NodePortAddresses(n) => n,
            v => unreachable!("checked by the table test: {v:?}"),
        }
    }

    /// `ETCDCTL_API=3 ` where etcdctl needs it, else nothing.
    pub fn etcdctl_env(&self) -> &'static str {
        match self.get(Knob::EtcdctlApiEnv) {
            Value::EtcdctlApiEnv(true) => "ETCDCTL_API=3 ",
            Value::EtcdctlApiEnv(false) => "",
            v => unreachable!("checked by the table test: {v:?}"),
        }
    }

    /// The rows chosen, in knob order (for reports and the generated README).
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }
}

/// Whether this machine runs cgroup v1 (no unified hierarchy at /sys/fs/cgroup).
pub fn host_cgroup_v1() -> bool {
    host_cgroup_v1_at(Path::new("/sys/fs/cgroup"))
}

/// [`host_cgroup_v1`] for a cgroup mount point (v2 has `cgroup.controllers` at its root).
pub fn host_cgroup_v1_at(root: &Path) -> bool {
    root.is_dir() && !root.join("cgroup.controllers").exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::manifest::resolve::{Request, resolve};

    #[test]
    fn rows_of_each_knob_never_overlap() {
        for a in RULES {
            for b in RULES {
                if std::ptr::eq(a, b) || a.knob != b.knob {
                    continue;
                }
                assert_eq!(a.component, b.component, "{:?}", a.knob);
                let a_lo = a.from.unwrap_or((0, 0));
                let a_hi = a.until.unwrap_or((u64::MAX, 0));
                let b_lo = b.from.unwrap_or((0, 0));
                let b_hi = b.until.unwrap_or((u64::MAX, 0));
                assert!(a_hi <= b_lo || b_hi <= a_lo, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn every_rule_names_its_source() {
        for r in RULES {
            assert!(r.source.len() > 10, "{r:?}");
        }
    }

    #[test]
    fn every_rule_holds_the_kind_of_value_its_knob_takes() {
        for r in RULES {
            assert!(r.knob.accepts(&r.value), "{r:?}");
        }
    }

    #[test]
    fn every_release_in_the_manifest_gets_a_value_for_every_knob() {
        let m = Manifest::embedded().unwrap();
        let mut decided = 0;
        for minor in m.releases.keys() {
            let req = Request {
                version: minor.to_string(),
                overrides: vec![],
                allow_skew: false,
            };
            let Ok(res) = resolve(&m, &req) else { continue };
            let v = Versions::from_resolution(&res, Arch::Amd64).unwrap();
            v.decide().unwrap();
            decided += 1;
        }
        assert!(decided >= 5, "only {decided} releases resolved");
    }

    #[test]
    fn containerd_major_decides_the_config_schema() {
        let m = Manifest::embedded().unwrap();
        for (k, cd, ver, plugin) in [
            ("1.30", "1.7.23", "2", "io.containerd.grpc.v1.cri"),
            ("1.35", "2.2.3", "3", "io.containerd.cri.v1.runtime"),
        ] {
            let req = Request {
                version: k.into(),
                overrides: vec![],
                allow_skew: false,
            };
            let v = Versions::from_resolution(&resolve(&m, &req).unwrap(), Arch::Amd64).unwrap();
            assert_eq!(v.of("containerd").to_string(), cd);
            let d = v.decide().unwrap();
            assert_eq!(d.text(Knob::ContainerdConfigVersion), ver);
            assert_eq!(d.text(Knob::ContainerdCriRuntimePlugin), plugin);
        }
    }

    #[test]
    fn cgroup_v2_is_recognised_by_its_controllers_file() {
        let d = tempfile::tempdir().unwrap();
        assert!(host_cgroup_v1_at(d.path()));
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert!(!host_cgroup_v1_at(d.path()));
    }
}
