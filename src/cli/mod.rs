//! The command line: clap types whose doc comments are the help, and one file per command.
//!
//! This module only wires: it parses, builds a [`Context`], and calls the library. Each command's
//! arguments live beside its implementation in `cli/<command>.rs`.

mod build;
mod cache;
mod certs;
mod completions;
mod default;
mod env;
mod gen_cmd;
mod install;
mod mirror;
mod show_versions;
mod uninstall;
mod up;
mod update;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::error::WithHint;
use crate::manifest::Manifest;
use crate::store::Layout;
use crate::ui::Ui;

pub use build::BuildArgs;
pub use cache::CacheCommand;
pub use certs::CertsCommand;
pub use completions::CompletionsArgs;
pub use default::DefaultArgs;
pub use env::EnvArgs;
pub use gen_cmd::GenCommand;
pub use install::InstallArgs;
pub use mirror::MirrorCommand;
pub use show_versions::ShowVersionsArgs;
pub use uninstall::UninstallArgs;
pub use up::{DownArgs, StatusArgs, UpArgs};
pub use update::UpdateArgs;

/// rustup for Kubernetes "the hard way".
///
/// kbin resolves a Kubernetes version to a coherent set of components (kubernetes, etcd,
/// containerd, runc, CNI plugins, crictl), downloads and verifies their release artifacts or
/// builds them from git, installs them as named toolchains, and generates everything a cluster
/// built by hand needs: PKI, kubeconfigs, component configs, systemd units and per-node bundles.
#[derive(Debug, Parser)]
#[command(name = "kbin", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The help heading of [`Global`]'s options: a command's `--help` lists its own options first,
/// then these under their own heading.
const GLOBAL: &str = "Global options";

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Where kbin keeps its cache, toolchains and settings [default: ~/.kbin]
    #[arg(long, env = "KBIN_HOME", value_name = "DIR", global = true, help_heading = GLOBAL)]
    pub home: Option<PathBuf>,

    /// Use this manifest instead of the one built into kbin
    #[arg(long, env = "KBIN_MANIFEST", value_name = "FILE", global = true, help_heading = GLOBAL)]
    pub manifest: Option<PathBuf>,

    /// Fetch from this mirror: it replaces the scheme and host of upstream URLs and keeps their
    /// paths (http://, https:// or file://)
    #[arg(long, env = "KBIN_MIRROR", value_name = "URL", global = true, help_heading = GLOBAL)]
    pub mirror: Option<String>,

    /// Print results as JSON on stdout
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// Say more (repeat for more)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,

    /// Say nothing but errors (what a query asks for, like `kbin env` or `--json`, still prints)
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
}

/// kbin's commands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only add noise
pub enum Command {
    /// Resolve a Kubernetes version, fetch or build its components, verify them and install a
    /// toolchain
    Install(InstallArgs),
    /// Clone a component's git repository and build it into a toolchain
    Build(BuildArgs),
    /// Air-gapped sites: export an upstream-shaped directory for --mirror file://DIR
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// Learn upstream releases newer than kbin's manifest (an overlay in KBIN_HOME; trust on
    /// first use for their digests)
    Update(UpdateArgs),
    /// Show installed toolchains (or, with --available, what kbin can install)
    #[command(name = "show-versions")]
    ShowVersions(ShowVersionsArgs),
    /// Print shell exports for a toolchain and a cluster: PATH, KUBECONFIG, completion
    Env(EnvArgs),
    /// Generate a cluster's PKI, kubeconfigs, configs, units and node bundles
    #[command(subcommand)]
    Gen(GenCommand),
    /// Check or renew a generated cluster's certificates
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Inspect and maintain the download and build cache
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Remove an installed toolchain
    Uninstall(UninstallArgs),
    /// Show or set the default toolchain
    Default(DefaultArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
    /// Run the generated node(s) of this machine, in order, with a check after each step
    Up(UpArgs),
    /// Stop what `kbin up` started, in reverse order, and remove what it installed
    Down(DownArgs),
    /// Each component of this machine's node(s): PID, state, health and since when
    Status(StatusArgs),
}

/// What every command gets: the global options, the output, and lazy access to the store and
/// the manifest.
#[derive(Debug)]
pub struct Context {
    /// The global options.
    pub global: Global,
    /// Output.
    pub ui: Ui,
}

impl Context {
    /// The KBIN_HOME layout (nothing is created).
    pub fn layout(&self) -> anyhow::Result<Layout> {
        Ok(Layout::resolve(self.global.home.as_deref())?)
    }

    /// The manifest: `--manifest`/`KBIN_MANIFEST`, else the embedded one.
    pub fn manifest(&self) -> anyhow::Result<Manifest> {
        let base = self.base_manifest()?;
        // No KBIN_HOME to find (no HOME either): nothing was updated.
        let Ok(layout) = self.layout() else {
            return Ok(base);
        };
        // A KBIN_HOME that is a file or unreadable is named as such, not as an overlay error.
        layout.check_home(false)?;
        let path = layout.overlay_path();
        let overlay = crate::manifest::Overlay::load(&path)
            .hint("delete it and run `kbin update` again to rebuild it")?;
        base.with_overlay(&overlay, &path)
            .hint("delete it and run `kbin update` again to rebuild it")
    }

    /// The manifest without the overlay `kbin update` keeps in KBIN_HOME.
    pub fn base_manifest(&self) -> anyhow::Result<Manifest> {
        match &self.global.manifest {
            Some(path) => Manifest::load(path).hint(
                "fix the file, or drop --manifest/KBIN_MANIFEST to use the manifest built into kbin",
            ),
            None => Manifest::embedded().context("the manifest built into kbin is invalid (a kbin bug)"),
        }
    }
}

/// Resolve a request against the manifest, with a hint naming the next step for each kind of
/// failure. Every command that resolves versions (install, gen --kubernetes-version) uses this.
pub fn resolve(
    manifest: &Manifest,
    request: &crate::manifest::resolve::Request,
) -> anyhow::Result<crate::manifest::resolve::Resolution> {
    crate::manifest::resolve::resolve(manifest, request).map_err(|e| match e.hint() {
        Some(h) => crate::error::with_hint(e.into(), h),
        None => e.into(),
    })
}

/// The fetcher of the global `--mirror` and settings.toml's mirrors (checked here, even when
/// nothing will be downloaded), with the hint of its error.
pub fn fetcher(
    ctx: &Context,
    settings: &crate::store::Settings,
) -> anyhow::Result<crate::fetch::Fetcher> {
    crate::fetch::Fetcher::new(crate::fetch::FetchOptions::from_env(
        ctx.global.mirror.clone(),
        settings.mirrors.clone(),
    ))
    .map_err(|e| match e.hint() {
        Some(h) => crate::error::with_hint(e.into(), h),
        None => e.into(),
    })
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_tracing(cli.global.verbose, cli.global.quiet);
    let ctx = Context {
        ui: Ui::new(cli.global.json, cli.global.quiet, cli.global.verbose),
        global: cli.global,
    };
    match cli.command {
        Command::Install(a) => install::run(&ctx, a),
        Command::Build(a) => build::run(&ctx, a),
        Command::ShowVersions(a) => show_versions::run(&ctx, a),
        Command::Update(a) => update::run(&ctx, a),
        Command::Mirror(c) => mirror::run(&ctx, c),
        Command::Env(a) => env::run(&ctx, a),
        Command::Gen(c) => gen_cmd::run(&ctx, c),
        Command::Certs(c) => certs::run(&ctx, c),
        Command::Cache(c) => cache::run(&ctx, c),
        Command::Uninstall(a) => uninstall::run(&ctx, a),
        Command::Default(a) => default::run(&ctx, a),
        Command::Completions(a) => completions::run(&ctx, a),
        Command::Up(a) => up::up(&ctx, a),
        Command::Down(a) => up::down(&ctx, a),
        Command::Status(a) => up::status(&ctx, a),
    }
}

fn init_tracing(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KBIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("kbin={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
