//! `kbin gen cluster|node`: the cluster's configuration tree.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::Context;
use crate::error::WithHint;
use crate::r#gen as gen_mod;
use crate::r#gen::bundle::Written;
use crate::r#gen::bundle_cache::Source;
use crate::r#gen::pki::{Action, Outcome};
use crate::r#gen::run::{self, Generated, RunError};
use crate::r#gen::spec::{ClusterSpec, SpecError, SpecInput};
use crate::r#gen::versions::Versions;

/// `kbin gen` subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only add noise
pub enum GenCommand {
    /// Write the PKI, kubeconfigs, component configs, systemd units, node bundles and next steps
    /// of a cluster
    Cluster(GenClusterArgs),
    /// Add nodes to an existing cluster tree, reusing its CA: their certificates and
    /// kubeconfigs, and (unless the tree was made with --pki-only) their configs and bundles
    Node(GenNodeArgs),
    /// Rotate the key Secrets are encrypted with, one step at a time, each rolled out to every
    /// API server (ansible/upgrade.yml) before the next: add, use, (re-encrypt), drop
    EncryptionKey(GenKeyArgs),
}

/// Arguments of `kbin gen encryption-key`.
#[derive(Debug, Args)]
pub struct GenKeyArgs {
    /// add: a new key every API server reads with; use: the new key writes, the old one still
    /// reads; drop: the old key gone (after every Secret was written again)
    #[arg(value_name = "STEP")]
    pub step: KeyStepArg,

    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,
}

/// `kbin gen encryption-key STEP`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyStepArg {
    /// A new key, second: every API server can read with it
    Add,
    /// The new key first: new Secrets are written with it
    Use,
    /// The old key gone
    Drop,
}

/// Arguments of `kbin gen cluster`.
#[derive(Debug, Default, Args)]
pub struct GenClusterArgs {
    /// The output directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// Read the cluster spec from this TOML file (flags override it) [default: OUT/cluster.toml
    /// when the tree exists, so a re-run keeps its nodes]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The cluster's name in kubeconfigs
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The address clients and nodes use to reach the API server [default: the first
    /// control-plane node's IP]
    #[arg(long, value_name = "IP")]
    pub cluster_ip: Option<String>,

    /// Your own load balancer (or DNS name) in front of every API server, as HOST or HOST:PORT:
    /// nodes and kubeconfigs use it, and no node-local load balancer is made; `none` drops the
    /// one a tree's cluster.toml keeps [default: with several control planes, a node-local
    /// HAProxy on every worker]
    #[arg(long, value_name = "HOST:PORT")]
    pub api_endpoint: Option<String>,

    /// The cluster DNS service address [default: the 10th address of the service CIDR]
    #[arg(long, value_name = "IP")]
    pub cluster_dns: Option<String>,

    /// The cluster's DNS domain [default: cluster.local]
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,

    /// The pod network [default: 10.200.0.0/16]
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<String>,

    /// The service network [default: 10.32.0.0/24]
    #[arg(long, value_name = "CIDR")]
    pub service_cidr: Option<String>,

    /// A control-plane node (repeatable)
    #[arg(long = "control-plane", value_name = "NAME=IP")]
    pub control_plane: Vec<String>,

    /// A worker node (repeatable)
    #[arg(long = "worker", value_name = "NAME=IP")]
    pub worker: Vec<String>,

    /// Key algorithm: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096 [default: ecdsa-p256]
    #[arg(long, value_name = "ALGO")]
    pub key_algo: Option<String>,

    /// CA validity, e.g. 3650d or 10y [default: 10y]
    #[arg(long, value_name = "DURATION")]
    pub ca_validity: Option<String>,

    /// Leaf certificate validity, e.g. 365d or 1y [default: 1y]
    #[arg(long, value_name = "DURATION")]
    pub cert_validity: Option<String>,

    /// The kind of machine the nodes are: systemd (systemd as PID 1) or sandbox (a container,
    /// WSL or CI: cgroupfs driver, containerd restrict_oom_score_adj, kube-proxy leaves
    /// conntrack limits alone) [default: detected when the cluster is this machine, else
    /// systemd]
    #[arg(long, value_name = "PROFILE")]
    pub host_profile: Option<String>,

    /// The resolv.conf the kubelets give pods, e.g. /run/systemd/resolve/resolv.conf on hosts
    /// with systemd-resolved [default: detected when the cluster is this machine]
    #[arg(long, value_name = "PATH")]
    pub resolv_conf: Option<String>,

    /// Replace existing CAs and certificates
    #[arg(long)]
    pub force: bool,

    /// Write only the PKI and kubeconfigs (and cluster.toml): no versions needed, no configs,
    /// units or bundles
    #[arg(long)]
    pub pki_only: bool,

    /// Write nothing: print what a run with these flags would change, file by file and node
    /// by node, with the version rule (and its upstream source) behind each change
    #[arg(long)]
    pub diff: bool,

    /// Generate an upgrade of an existing tree that breaks the version-skew rules (more than
    /// one minor at a time, a kubelet newer than the API server) anyway, with a warning
    #[arg(long)]
    pub allow_skew: bool,

    /// What the configs are pinned to
    #[command(flatten)]
    pub pin: PinArgs,

    /// `gen encryption-key`: the rotation step this run makes.
    #[arg(skip)]
    pub encryption_key_step: Option<crate::r#gen::node::KeyStep>,
}

/// What `gen cluster` and `gen node` pin the configs to, and how the nodes' bundles are made.
#[derive(Debug, Default, Args)]
pub struct PinArgs {
    /// The toolchain whose versions the configs are pinned to [default: the default toolchain]
    #[arg(long, value_name = "NAME")]
    pub toolchain: Option<String>,

    /// Generate for this Kubernetes version from the manifest, with no toolchain installed (no
    /// binaries are bundled)
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Option<String>,

    /// Do not put the toolchain's binaries in the node bundles
    #[arg(long)]
    pub no_binaries: bool,

    /// Configure the kubelet for hosts still on cgroup v1
    #[arg(long)]
    pub cgroup_v1: bool,
}

/// Arguments of `kbin gen node`.
#[derive(Debug, Args)]
pub struct GenNodeArgs {
    /// The nodes to add
    #[arg(value_name = "NAME=IP", required = true)]
    pub nodes: Vec<String>,

    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// What the new nodes' configs are pinned to
    #[command(flatten)]
    pub pin: PinArgs,
}

pub(super) fn run(ctx: &Context, cmd: GenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GenCommand::Cluster(a) => cluster(ctx, a),
        GenCommand::Node(a) => node(ctx, a),
        GenCommand::EncryptionKey(a) => encryption_key(ctx, a),
    }
}

impl GenClusterArgs {
    /// The spec input the flags give (nodes from --control-plane/--worker).
    fn input(&self) -> Result<SpecInput, SpecError> {
        let mut input = SpecInput {
            name: self.name.clone(),
            cluster_ip: self.cluster_ip.clone(),
            service_cidr: self.service_cidr.clone(),
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            pod_cidr: self.pod_cidr.clone(),
            key_algo: self.key_algo.clone(),
            ca_validity: self.ca_validity.clone(),
            cert_validity: self.cert_validity.clone(),
            host_profile: self.host_profile.clone(),
            resolv_conf: self.resolv_conf.clone(),
            api_endpoint: self.api_endpoint.clone(),
            nodes: Vec::new(),
        };
        input.add_nodes(&self.control_plane, &self.worker)?;
        Ok(input)
    }
}

const SPEC_HINT: &str =
    "fix the value named above (see `kbin gen cluster --help`); nothing was written";

fn cluster(ctx: &Context, a: GenClusterArgs) -> anyhow::Result<ExitCode> {
    let saved = gen_mod::spec_path(&a.out);
    let file = match &a.config {
        Some(path) => {
            SpecInput::load(path).hint("fix the file; its fields are the flags' names")?
        }
        // A re-run over an existing tree starts from the spec it was made with (and the nodes
        // `gen node` added), not from the defaults: flags still win.
        None if saved.is_file() => {
            if !a.diff {
                ctx.ui
                    .status(format!("starting from the spec in {}", saved.display()));
            }
            SpecInput::load(&saved)
                .hint("fix it, or pass --config FILE to start from another spec")?
        }
        None => SpecInput::default(),
    };
    let mut input = file.overlay(a.input().hint(SPEC_HINT)?);
    if input.nodes.is_empty() {
        let host = crate::r#gen::host::routable_address()
            .ok_or_else(|| anyhow::anyhow!("this machine has no IPv4 address besides loopback, and the kubelet refuses a loopback node IP"))
            .hint("give the node's address: --control-plane node-0=IP --worker node-0=IP")?;
        ctx.ui.status(format!(
            "one-machine cluster: node {} at {} ({})",
            crate::r#gen::spec::DEFAULT_NODE_NAME,
            host.ip,
            host.how
        ));
        input.add_this_machine(host.ip);
    }
    // Even for --pki-only: the spec saved now is what a later full run starts from.
    say(ctx, run::complete_spec(&mut input, &a.out));
    let spec = input.build().hint(SPEC_HINT)?;
    generate(ctx, &spec, &a, false)
}

/// Print what a step had to say.
fn say(ctx: &Context, notes: Vec<run::Note>) {
    run::say(&ctx.ui, notes);
}

/// A failed run, with its hint if it has one.
fn hinted(e: RunError) -> anyhow::Error {
    match e.hint() {
        Some(h) => crate::error::with_hint(e.into(), h),
        None => e.into(),
    }
}

/// The PKI, then (unless `--pki-only`) configs, units, bundles and NEXT-STEPS for `spec`.
/// `require_ca`: fail rather than create a CA (`gen node` adds to a tree).
fn generate(
    ctx: &Context,
    spec: &ClusterSpec,
    a: &GenClusterArgs,
    require_ca: bool,
) -> anyhow::Result<ExitCode> {
    // Versions first: a missing toolchain fails before anything is written. Then whatever can
    // be checked without making anything (skew, the toolchain's binaries), before the lock
    // (which makes the directory) and the PKI step. (The skew rule reads the tree's inventory
    // unlocked: a concurrent writer is waited for below, and the tree is regenerated under the
    // lock anyway.)
    let versions = match a.pki_only {
        true => None,
        false => Some(versions(ctx, &a.pin)?),
    };
    let req = run::Request {
        configs: run::ConfigsRequest {
            out: a.out.clone(),
            no_binaries: a.pin.no_binaries,
            cgroup_v1: a.pin.cgroup_v1,
            allow_skew: a.allow_skew,
            encryption_key_step: a.encryption_key_step,
        },
        pki: run::PkiRequest {
            force: a.force,
            require_ca,
        },
        diff: a.diff,
    };
    let done = run::generate(spec, versions.as_ref(), &req, &ctx.ui).map_err(|e| match e {
        // `gen node` has no --allow-skew: new nodes join at the tree's own versions.
        RunError::Skew(_) if require_ca => crate::error::with_hint(
            e.into(),
            "`kbin gen node` adds nodes at the versions the tree records: drop --toolchain and --kubernetes-version, or move the whole tree first (`kbin gen cluster --toolchain NAME`, then ansible/upgrade.yml)",
        ),
        e => hinted(e),
    })?;
    let done = match done {
        Generated::Planned { plan, unrecorded } => {
            if unrecorded {
                ctx.ui.warn(format!(
                    "{} records no versions (made by an older kbin): the changes are shown without the version rules that were in force",
                    a.out.display()
                ));
            }
            ctx.ui.answer(&plan, crate::r#gen::diff::Plan::text)?;
            return Ok(ExitCode::SUCCESS);
        }
        Generated::Written(done) => done,
    };
    // Only what was committed is reported: nothing is "created" before it is in place.
    report_pki(ctx, &done.pki);
    if let Some(c) = &done.configs {
        report_configs(ctx, c);
    }
    finish(ctx, &a.out, spec, done.pki, done.configs.as_ref())?;
    if let Some(c) = &done.configs {
        print_next_steps(ctx, c);
    }
    Ok(ExitCode::SUCCESS)
}

fn node(ctx: &Context, a: GenNodeArgs) -> anyhow::Result<ExitCode> {
    let saved = gen_mod::spec_path(&a.out);
    let mut input = SpecInput::load(&saved).hint(format!(
        "`kbin gen node` adds to a tree made by `kbin gen cluster --out {}`; run that first",
        a.out.display()
    ))?;
    let before = input.nodes.clone();
    input.add_nodes(&[], &a.nodes).hint(SPEC_HINT)?;
    let spec = match input.build() {
        Ok(spec) => spec,
        // A name the tree already has is not a typo in this command line: say where it is.
        Err(SpecError::DuplicateName(name)) => match before.iter().find(|n| n.name == name) {
            Some(n) => {
                return Err(anyhow::anyhow!(
                    "node {name} is already in the cluster (at {})",
                    n.ip
                ))
                .hint(format!(
                    "`kbin gen node` adds new nodes; to change one, edit {} and run `kbin gen cluster --out {}`",
                    saved.display(),
                    a.out.display()
                ));
            }
            None => return Err(SpecError::DuplicateName(name)).hint(SPEC_HINT),
        },
        Err(e) => return Err(e).hint(SPEC_HINT),
    };
    // New nodes run what the others run: the tree's own version origin, unless a flag names
    // another (the default toolchain may have moved on since the tree was made).
    let pin = tree_pin(ctx, &a.out, a.pin)?;
    // The same steps as `gen cluster` over the grown spec: what exists is kept, the new nodes'
    // files are made. A tree made with --pki-only stays PKI-only.
    let args = GenClusterArgs {
        out: a.out.clone(),
        pki_only: !crate::r#gen::bundle::nodes_dir(&a.out).is_dir(),
        pin,
        ..GenClusterArgs::default()
    };
    generate(ctx, &spec, &args, true)
}

/// `pin`, or when it names no versions, the versions the tree under `out` records (its
/// toolchain, or its manifest version), said on the way.
fn tree_pin(ctx: &Context, out: &Path, mut pin: PinArgs) -> anyhow::Result<PinArgs> {
    let note = run::tree_pin(out, &mut pin.toolchain, &mut pin.kubernetes_version)?;
    say(ctx, note.into_iter().collect());
    Ok(pin)
}

/// `kbin gen encryption-key STEP`: the tree regenerated at its own versions with the key list
/// the step makes, then what to run next.
fn encryption_key(ctx: &Context, a: GenKeyArgs) -> anyhow::Result<ExitCode> {
    use crate::r#gen::node::KeyStep;
    let saved = gen_mod::spec_path(&a.out);
    let input = SpecInput::load(&saved).hint(format!(
        "`kbin gen encryption-key` rotates the key of a tree made by `kbin gen cluster --out {}`; run that first",
        a.out.display()
    ))?;
    let spec = input.build().hint(SPEC_HINT)?;
    run::check_rotatable(&a.out)?;
    let step = match a.step {
        KeyStepArg::Add => KeyStep::Add,
        KeyStepArg::Use => KeyStep::Use,
        KeyStepArg::Drop => KeyStep::Drop,
    };
    let args = GenClusterArgs {
        out: a.out.clone(),
        pin: tree_pin(ctx, &a.out, PinArgs::default())?,
        encryption_key_step: Some(step),
        ..GenClusterArgs::default()
    };
    let code = generate(ctx, &spec, &args, true)?;
    say(ctx, vec![run::key_step_done(&a.out, step)]);
    Ok(code)
}

/// One line per certificate and kubeconfig, once the commit put them in place.
fn report_pki(ctx: &Context, pki: &[Outcome]) {
    for o in pki {
        match o.action {
            Action::Kept => ctx.ui.detail(o.line()),
            _ => ctx.ui.status(o.line()),
        }
    }
}

/// The report of a written tree (`--json`: all of it; text: the PKI's counts).
fn finish(
    ctx: &Context,
    out: &Path,
    spec: &ClusterSpec,
    pki: Vec<Outcome>,
    configs: Option<&Written>,
) -> anyhow::Result<ExitCode> {
    let report = run::Report {
        out,
        spec,
        pki,
        configs,
    };
    ctx.ui.report(&report, run::Report::text)?;
    Ok(ExitCode::SUCCESS)
}

/// The renderers' view of `spec` (also `kbin certs renew`'s, to refresh node bundles).
pub(super) fn cluster_input(spec: &ClusterSpec) -> crate::r#gen::configs::ClusterInput {
    run::cluster_input(spec)
}

/// The versions to pin to: `--kubernetes-version` from the manifest, else `--toolchain`,
/// else the default toolchain.
fn versions(ctx: &Context, pin: &PinArgs) -> anyhow::Result<Versions> {
    let pinned = match &pin.kubernetes_version {
        Some(v) => run::versions(&ctx.manifest()?, run::Pin::Kubernetes(v)),
        None => {
            let layout = ctx.layout()?;
            let name = pin.toolchain.as_deref();
            run::versions(
                &ctx.manifest()?,
                run::Pin::Toolchain {
                    layout: &layout,
                    name,
                },
            )
        }
    };
    let (v, notes) = pinned.map_err(|e| match e.hint() {
        Some(h) => crate::error::with_hint(e.into(), h),
        None => e.into(),
    })?;
    say(ctx, notes);
    Ok(v)
}

/// What the configs step put in place (after the commit).
fn report_configs(ctx: &Context, written: &Written) {
    for n in &written.nodes {
        ctx.ui.status(format!(
            "node {}: {} and {}",
            n.name,
            n.tree.display(),
            n.tarball.display()
        ));
    }
    for b in &written.shared_bundles {
        let how = match b.source {
            Source::Reused => " (kept in the store by an earlier run: reused)",
            Source::Made => " (made, and kept in the store for the next run)",
            Source::Uncached => "",
        };
        ctx.ui
            .status(format!("binaries: {}{how}", b.path.display()));
    }
}

/// NEXT-STEPS.md on stdout, after the report (text mode only; a reader that went away is
/// not an error: the tree is written).
fn print_next_steps(ctx: &Context, w: &Written) {
    if !ctx.ui.json() && !ctx.ui.quiet() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "\n{}", w.next_steps_text);
    }
}
