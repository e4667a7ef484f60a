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
}

/// The shared binaries tarball of `role` for `arch`, relative to the output directory.
pub fn binaries_bundle(role: Role, arch: impl std::fmt::Display) -> String {
    format!("bundles/{}-{arch}-binaries.tar.gz", role.name())
}
