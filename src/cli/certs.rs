//! `kbin certs check|renew`: expiry table and renewal of a generated cluster's certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use serde::Serialize;

use super::Context;
use super::gen_cmd::load_tree_spec;
use crate::error::WithHint;
use crate::r#gen::kubeconfig;
use crate::r#gen::pki::{self, CheckRow, Decision, PkiError};
use crate::r#gen::spec::parse_duration;
use crate::ui::table;

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

/// `347d`, `9y`, `5h`, or `expired` (kubeadm's check-expiration style).
fn residual(seconds: i64) -> String {
    match seconds {
        s if s <= 0 => "expired".into(),
        s if s >= 2 * 365 * 86_400 => format!("{}y", s / (365 * 86_400)),
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s => format!("{}h", s / 3600),
    }
}

#[derive(Serialize)]
struct CheckReport {
    warn_seconds: u64,
    certificates: Vec<CheckRow>,
    ok: bool,
}

fn check(ctx: &Context, a: CertsCheckArgs) -> anyhow::Result<ExitCode> {
    let warn = parse_duration("--warn", &a.warn).hint("e.g. --warn 30d")?;
    let spec = load_tree_spec(&a.out)?
        .build()
        .hint("the tree's cluster.toml is invalid; fix it")?;
    let rows = pki::check(&a.out, &spec, warn)?;
    let ok = rows.iter().all(|r| r.problems.is_empty() && !r.expiring);
    let report = CheckReport {
        warn_seconds: warn.as_secs(),
        certificates: rows,
        ok,
    };
    ctx.ui.report(&report, |r| {
        let rows: Vec<Vec<String>> = r
            .certificates
            .iter()
            .map(|c| {
                let mut problems = c.problems.join("; ");
                if c.expiring && c.problems.is_empty() {
                    problems = format!("expires within {}", a.warn);
                }
                vec![
                    c.name.clone(),
                    c.expires.clone().unwrap_or_else(|| "!MISSING!".into()),
                    c.residual_seconds.map(residual).unwrap_or_default(),
                    c.ca.clone(),
                    problems,
                ]
            })
            .collect();
        table(
            &["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CA", "PROBLEMS"],
            &rows,
        )
    })?;
    if ok {
        Ok(ExitCode::SUCCESS)
    } else {
        if !ctx.ui.json() {
            ctx.ui.warn(
                "some certificates are broken or expire soon: `kbin certs renew` reissues leaves; \
                 `kbin gen cluster --out DIR` replaces missing or wrong ones",
            );
        }
        Ok(ExitCode::from(1))
    }
}

#[derive(Serialize)]
struct RenewReport<'a> {
    renewed: &'a [Decision],
}

fn renew(ctx: &Context, a: CertsRenewArgs) -> anyhow::Result<ExitCode> {
    let spec = load_tree_spec(&a.out)?
        .build()
        .hint("the tree's cluster.toml is invalid; fix it")?;
    let decisions = pki::renew(&a.out, &spec, &a.names).map_err(|e| {
        let hint = match &e {
            PkiError::UnknownName(_) => Some("`kbin certs check` lists the certificates' names"),
            PkiError::BrokenCa { .. } | PkiError::MissingCa(_) => {
                Some("renew never touches a CA: `kbin gen cluster --force` replaces the whole PKI")
            }
            _ => None,
        };
        match hint {
            Some(h) => crate::error::with_hint(e.into(), h),
            None => e.into(),
        }
    })?;
    // Kubeconfigs embed the client certificates: refresh them.
    kubeconfig::generate(&a.out, &spec)?;
    ctx.ui.report(
        &RenewReport {
            renewed: &decisions,
        },
        |r| {
            r.renewed
                .iter()
                .map(|d| format!("renewed {} ({})\n", d.file, d.reason))
                .collect()
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
