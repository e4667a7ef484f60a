//! `kbin certs check|renew`: expiry table and renewal of a generated cluster's certificates.

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
                        "ok".into()
                    } else {
                        r.problems.join("; ")
                    },
                ]
            })
            .collect();
        ui::table(&["NAME", "EXPIRES", "TIME LEFT", "CA", "PROBLEMS"], &table)
    })?;
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
        match hint {
            Some(h) => crate::error::with_hint(e.into(), h),
            None => anyhow::Error::from(e),
        }
    })?;
    let redeploy =
        crate::r#gen::bundle::refresh_pki(&super::gen_cmd::cluster_input(&spec), &a.out, &staged)
            .context("cannot refresh the node bundles")?;
    staged
        .commit()
        .with_context(|| format!("cannot write the renewed files in {}", a.out.display()))?;
    // Said once they are in place, not while they were only staged.
    for o in &outcomes {
        if o.action == pki::Action::Kept {
            ctx.ui.detail(o.line())
        } else {
            ctx.ui.status(o.line())
        }
    }
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
