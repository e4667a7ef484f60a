//! What each node runs, as text: component configs and systemd units ([`configs`], with the
//! node's paths in [`configs::paths`]), NEXT-STEPS.md ([`next_steps`]) that starts them in
//! order and checks each, and what the cluster runs once they are up ([`addons`]).

pub mod addons;
pub mod configs;
pub mod next_steps;

use std::path::PathBuf;

use crate::r#gen::pki::certs::Role;

/// Options of the configs step.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The cluster output directory (holds `pki/` and `kubeconfigs/`).
    pub out: PathBuf,
    /// Leave binaries out of the trees and bundles.
    pub no_binaries: bool,
    /// The hosts run cgroup v1 (`--cgroup-v1`, or detected for the local machine).
    pub cgroup_v1: bool,
    /// `kbin gen encryption-key STEP`: the Secrets-key rotation step this run makes.
    pub encryption_key_step: Option<KeyStep>,
}

/// A step of a Secrets-encryption key rotation, each rolled out to every API server before the
/// next: a new key that only reads, then writes, then the old one dropped (after every Secret
/// was written again with the new one). Reading before writing, because during a rollout an API
/// server still on the older file must read what an updated one wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStep {
    /// A new key, second: every API server can read with it.
    Add,
    /// The new key first: new Secrets are written with it, the old key still reads.
    Use,
    /// The old key gone.
    Drop,
}

impl KeyStep {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyStep::Add => "add",
            KeyStep::Use => "use",
            KeyStep::Drop => "drop",
        }
    }
}

/// The shared binaries tarball of `role` for `arch`, relative to the output directory.
pub fn binaries_bundle(role: Role, arch: impl std::fmt::Display) -> String {
    format!("bundles/{}-{arch}-binaries.tar.gz", role.name())
}
