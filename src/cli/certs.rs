//! `kbin certs check|renew`: expiry table and renewal of a generated cluster's certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::Context;

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

pub(super) fn run(_ctx: &Context, cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Check(_) => super::not_yet("certs check", 6),
        CertsCommand::Renew(_) => super::not_yet("certs renew", 6),
    }
}
