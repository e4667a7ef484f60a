//! `kbin cache dir|gc|verify`.

use std::process::ExitCode;

use clap::Subcommand;

use super::Context;

/// `kbin cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Print the cache directory
    Dir,
    /// Remove blobs, trees and builds that no toolchain.lock references
    Gc,
    /// Re-hash every blob and name the corrupt ones
    Verify,
}

pub(super) fn run(_ctx: &Context, cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CacheCommand::Dir => super::not_yet("cache dir", 4),
        CacheCommand::Gc => super::not_yet("cache gc", 4),
        CacheCommand::Verify => super::not_yet("cache verify", 4),
    }
}
