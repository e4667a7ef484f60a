//! `kbin certs check|renew|rotate-ca`: expiry table, renewal of a generated cluster's
//! certificates, and the three steps of a CA rotation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::Context;
use crate::error::WithHint;
use crate::r#gen::pki;
use crate::ui;

/// `kbin certs` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// List every certificate with its expiry; fail when one expires within --warn or is broken
    Check(CertsCheckArgs),
    /// Renew leaf certificates with the same subjects and SANs (never a CA)
    Renew(CertsRenewArgs),
    /// Replace a CA with a trust period, in three steps each rolled out before the next: begin, use, finish
    #[command(name = "rotate-ca")]
    RotateCa(CertsRotateCaArgs),
}

/// Arguments of `kbin certs rotate-ca`.
#[derive(Debug, Args)]
pub struct CertsRotateCaArgs {
    /// The step
    #[command(subcommand)]
    pub step: RotateStep,
}

/// The steps of `kbin certs rotate-ca`: one command each, since each is rolled out to every
/// machine before the next may run.
#[derive(Debug, Subcommand)]
pub enum RotateStep {
    /// Step 1: make a new CA; every trust file (nodes' CA files, kubeconfigs) holds the old and the new one, the old one still signs
    Begin(RotateBeginArgs),
    /// Step 2: the new CA signs: every leaf of the rotated CAs re-signed by it (same keys, subjects and SANs); both still trusted
    Use(RotateOutArgs),
    /// Step 3: trust the new CA alone; the old one leaves the tree
    Finish(RotateOutArgs),
}

/// Arguments of `kbin certs rotate-ca begin`.
#[derive(Debug, Args)]
pub struct RotateBeginArgs {
    /// The CA to rotate: ca, etcd-ca, front-proxy-ca or all (repeat for several) [default: ca]
    #[arg(long = "ca", value_name = "NAME")]
    pub cas: Vec<String>,

    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,
}

/// Arguments of `kbin certs rotate-ca use|finish`.
#[derive(Debug, Args)]
pub struct RotateOutArgs {
    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,
}

/// Arguments of `kbin certs check`.
#[derive(Debug, Args)]
pub struct CertsCheckArgs {
    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// Warn (and exit non-zero) when a certificate expires within this window
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub warn: String,
}

/// Arguments of `kbin certs renew`.
#[derive(Debug, Args)]
pub struct CertsRenewArgs {
    /// Certificates to renew [default: every leaf]
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,
}

pub(super) fn run(ctx: &Context, cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Check(a) => check(ctx, a),
        CertsCommand::Renew(a) => renew(ctx, a),
        CertsCommand::RotateCa(a) => rotate_ca(ctx, a.step),
    }
}

fn load(out: &std::path::Path) -> anyhow::Result<crate::r#gen::spec::ClusterSpec> {
    crate::r#gen::load_spec(out).hint(format!(
        "{} holds no cluster made by `kbin gen cluster` (pass --out DIR)",
        out.display()
    ))
}

fn check(ctx: &Context, a: CertsCheckArgs) -> anyhow::Result<ExitCode> {
    let warn = crate::r#gen::spec::parse_duration("--warn", &a.warn)
        .hint("give the window like 30d, 12h or 1y")?;
    let spec = load(&a.out)?;
    let rows = pki::check(&spec, &a.out, warn);
    let bad = rows.iter().filter(|r| !r.problems.is_empty()).count();
    ctx.ui.answer(&rows, |rows| {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.expires.clone().unwrap_or_else(|| "-".into()),
                    r.time_left(),
                    r.ca.clone().unwrap_or_else(|| "-".into()),
                    if r.problems.is_empty() {
                        match &r.rotation {
                            Some(rot) => format!("ok; rotating: {rot}"),
                            None => "ok".into(),
                        }
                    } else {
                        r.problems.join("; ")
                    },
                ]
            })
            .collect();
        ui::table(&["NAME", "EXPIRES", "TIME LEFT", "CA", "PROBLEMS"], &table)
    })?;
    if let Ok(Some(st)) = pki::rotate::state(&a.out) {
        ctx.ui.status(st.describe());
    }
    if bad > 0 {
        ctx.ui.warn(format!(
            "{bad} certificate(s) expire within {} or are broken: `kbin certs renew` renews leaves, `kbin gen cluster` remakes broken ones",
            a.warn
        ));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `kbin certs renew --json` prints.
#[derive(serde::Serialize)]
struct RenewReport {
    /// Every certificate and kubeconfig renewed or rewritten.
    renewed: Vec<pki::Outcome>,
    /// Nodes whose bundle (`nodes/<name>/`, `nodes/<name>.tar.gz`) now holds the renewed files:
    /// copy and install them again.
    redeploy: Vec<String>,
}

fn renew(ctx: &Context, a: CertsRenewArgs) -> anyhow::Result<ExitCode> {
    let spec = load(&a.out)?;
    crate::r#gen::interrupt::install();
    let _lock = crate::r#gen::OutLock::acquire(&a.out, || {
        ctx.ui.status(format!(
            "another kbin is writing {}; waiting for it to finish",
            a.out.display()
        ))
    })?;
    let staged = crate::r#gen::Staged::new();
    let outcomes = pki::renew(&spec, &a.out, &a.names, &staged, &|_| {}).map_err(|e| {
        let hint = match &e {
            pki::PkiError::UnknownCert { .. } => {
                Some("`kbin certs check` lists the certificates by name".to_string())
            }
            pki::PkiError::NotALeaf { .. } => Some(
                "a CA is replaced only by `kbin gen cluster --force` (which replaces every certificate)"
                    .to_string(),
            ),
            _ => None,
        };
        hinted(e.into(), hint)
    })?;
    let redeploy = refresh_and_commit(ctx, &spec, &a.out, staged, &outcomes, "renewed")?;
    let report = RenewReport {
        renewed: outcomes,
        redeploy,
    };
    ctx.ui.report(&report, |r| {
        let n = r
            .renewed
            .iter()
            .filter(|o| o.action == pki::Action::Renewed)
            .count();
        let mut s = format!("renewed {n} certificate(s) in {}", a.out.display());
        if !r.redeploy.is_empty() {
            s.push_str(&format!(
                "\nnode bundles updated: {}; with Ansible, `ansible-playbook -i {out}/ansible/inventory.yml {out}/ansible/upgrade.yml` rolls them out one machine at a time, restarting only what reads a renewed file (with several control planes, without a failed request); by hand, copy nodes/<name>.tar.gz to each and run its install.sh again, then restart its services (NEXT-STEPS.md, section 2)",
                r.redeploy.join(", "),
                out = a.out.display()
            ));
        }
        s
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What `kbin certs rotate-ca STEP --json` prints.
#[derive(serde::Serialize)]
struct RotateReport {
    /// The step run.
    step: pki::rotate::Step,
    /// The rotation as the step leaves it; none once finished.
    rotation: Option<pki::rotate::State>,
    /// Every CA, certificate and kubeconfig made or rewritten.
    changed: Vec<pki::Outcome>,
    /// Nodes whose bundle now holds changed files: roll them out before the next step.
    redeploy: Vec<String>,
}

fn rotate_ca(ctx: &Context, step: RotateStep) -> anyhow::Result<ExitCode> {
    use pki::rotate::{RotateError, Step};
    let (step, out, cas) = match step {
        RotateStep::Begin(a) => (Step::Begin, a.out, a.cas),
        RotateStep::Use(a) => (Step::Use, a.out, vec![]),
        RotateStep::Finish(a) => (Step::Finish, a.out, vec![]),
    };
    let spec = load(&out)?;
    crate::r#gen::interrupt::install();
    let _lock = crate::r#gen::OutLock::acquire(&out, || {
        ctx.ui.status(format!(
            "another kbin is writing {}; waiting for it to finish",
            out.display()
        ))
    })?;
    if step == Step::Begin {
        signer_files_present(&spec, &out, &cas)?;
    }
    let staged = crate::r#gen::Staged::new();
    let (state, outcomes) = pki::rotate::rotate(&spec, &out, step, &cas, &staged, &|_| {})
        .map_err(|e| {
            let hint = match &e {
                RotateError::OutOfOrder { next, .. } => Some(format!(
                    "the next step is `{next}`; `kbin certs check` shows where the rotation stands"
                )),
                RotateError::StillOld { leaf, .. } => Some(format!(
                    "`kbin certs renew {leaf}` re-signs it with the new CA; roll that out, then finish"
                )),
                RotateError::Damaged { .. } => Some(
                    "restore the tree from your copy of it (a rotation's files are written only by kbin)"
                        .to_string(),
                ),
                _ => None,
            };
            hinted(e.into(), hint)
        })?;
    let redeploy = refresh_and_commit(ctx, &spec, &out, staged, &outcomes, "rotated")?;
    let report = RotateReport {
        step,
        rotation: state,
        changed: outcomes,
        redeploy,
    };
    ctx.ui.report(&report, |r| {
        let mut s = match &r.rotation {
            Some(st) => st.describe(),
            None => format!(
                "CA rotation finished in {}: only the new CA is trusted; roll it out",
                out.display()
            ),
        };
        if !r.redeploy.is_empty() {
            s.push_str(&format!(
                "\nnode bundles updated: {}; `ansible-playbook -i {out}/ansible/inventory.yml {out}/ansible/upgrade.yml` rolls them out one machine at a time, restarting only what reads a changed file; by hand, copy nodes/<name>.tar.gz to each and run its install.sh again, then restart its services (NEXT-STEPS.md, section 2). Every machine must have it before the next step",
                r.redeploy.join(", "),
                out = out.display()
            ));
        }
        s
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Rotating the cluster CA needs the controller manager to sign with `ca-signer.crt` (the CA
/// alone), which node trees made before kbin had it lack: `kbin gen cluster` adds it.
fn signer_files_present(
    spec: &crate::r#gen::spec::ClusterSpec,
    out: &std::path::Path,
    cas: &[String],
) -> anyhow::Result<()> {
    use crate::r#gen::pki::certs::{Id, on_node_signer_cert};
    let rotates_ca = pki::rotate::resolve(cas)
        .map(|c| c.iter().any(|n| n == "ca"))
        .unwrap_or(false);
    if !rotates_ca {
        return Ok(());
    }
    let signer = on_node_signer_cert(Id::Ca);
    for node in spec.control_planes() {
        let tree = crate::r#gen::bundle::nodes_dir(out).join(&node.name);
        if tree.is_dir() && !tree.join(signer.trim_start_matches('/')).exists() {
            return Err(crate::error::with_hint(
                anyhow::anyhow!(
                    "{} has no {signer}: its controller manager would sign with the CA file that begin turns into a bundle of two CAs",
                    tree.display()
                ),
                format!(
                    "run `kbin gen cluster --out {}` and roll it out first: it adds the file",
                    out.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `err` with `hint`, if any.
fn hinted(err: anyhow::Error, hint: Option<String>) -> anyhow::Error {
    match hint {
        Some(h) => crate::error::with_hint(err, h),
        None => err,
    }
}

/// Bring the node trees' PKI copies up to date with what `staged` holds, commit it all, then say
/// what was done; the nodes to redeploy.
fn refresh_and_commit(
    ctx: &Context,
    spec: &crate::r#gen::spec::ClusterSpec,
    out: &std::path::Path,
    staged: crate::r#gen::Staged,
    outcomes: &[pki::Outcome],
    what: &str,
) -> anyhow::Result<Vec<String>> {
    let redeploy =
        crate::r#gen::bundle::refresh_pki(&super::gen_cmd::cluster_input(spec), out, &staged)
            .context("cannot refresh the node bundles")?;
    staged
        .commit()
        .with_context(|| format!("cannot write the {what} files in {}", out.display()))?;
    // Said once they are in place, not while they were only staged.
    for o in outcomes {
        if o.action == pki::Action::Kept {
            ctx.ui.detail(o.line())
        } else {
            ctx.ui.status(o.line())
        }
    }
    Ok(redeploy)
}
