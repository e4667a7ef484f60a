//! `kbin gen`: everything a cluster built by hand needs, generated from one
//! [`plan::spec::ClusterSpec`]. The rooms read as the pipeline, each using only the rooms
//! before it:
//!
//! - [`plan`]: the cluster spec, the versions pinned to and the host it runs on;
//! - [`pki`]: the certificate table, the keys and certificates, the kubeconfigs;
//! - [`node`]: each node's configs, units, and the NEXT-STEPS that start them;
//! - [`deliver`]: node trees, tarballs, shared binary bundles, the Ansible inventory, and the
//!   staged writer ([`deliver::staged::Staged`]) that commits a run's files at once;
//! - [`diff`]: a dry run compared with the tree;
//! - [`run`]: the pipeline in order, the one call `kbin gen cluster|node` makes.
//!
//! The PKI step runs first; the configs step reads the PKI's file table and never hard-codes
//! paths. Both stage what they make in one [`Staged`] set, committed at the end under the
//! output directory's [`OutLock`]: a run that fails or is interrupted leaves the previous tree
//! as it was.

pub mod deliver;
pub mod diff;
pub mod node;
pub mod pki;
pub mod plan;
pub mod run;

// The paths callers outside gen/ (up/, cli/, tests) knew before the rooms.
pub use crate::fsx::interrupt;
pub use crate::fsx::{OutLock, WriteError, create_dir};
pub use deliver::staged::{Pending, Staged};
pub use deliver::{ansible, bundle, bundle_cache, tarball};
pub use node::{configs, next_steps};
pub use pki::{certs, kubeconfig};
pub use plan::{host, spec, versions};

use std::path::{Path, PathBuf};

pub(crate) use crate::fsx::write_at as at;

/// Mode of private keys.
pub const MODE_SECRET: u32 = 0o600;
/// Mode of certificates, configs and other public files.
pub const MODE_PUBLIC: u32 = 0o644;
/// Mode of scripts.
pub const MODE_EXEC: u32 = 0o755;
/// Mode of directories holding private keys.
pub const MODE_SECRET_DIR: u32 = 0o700;

/// `<out>/cluster.toml`: the spec a tree was generated from, read back by `kbin gen node` and
/// `kbin certs`.
pub fn spec_path(out: &Path) -> PathBuf {
    out.join("cluster.toml")
}

/// Stage the spec a tree was generated from (committed with the rest of the tree).
pub fn save_spec(out: &Path, spec: &spec::ClusterSpec, staged: &Staged) -> Result<(), WriteError> {
    std::fs::create_dir_all(out).map_err(at("cannot create", out))?;
    save_spec_staged(out, spec, staged)
}

/// [`save_spec`] without making `out` (the commit makes it; `gen --diff` never commits).
pub fn save_spec_staged(
    out: &Path,
    spec: &spec::ClusterSpec,
    staged: &Staged,
) -> Result<(), WriteError> {
    let text = toml::to_string(&spec.to_input()).expect("a spec of strings always serializes");
    let text = format!("# Written by `kbin gen`; edit and pass it back with --config.\n{text}");
    staged.stage(&spec_path(out), text.as_bytes(), MODE_PUBLIC)
}

/// Load the spec saved in `<out>/cluster.toml`.
pub fn load_spec(out: &Path) -> Result<spec::ClusterSpec, spec::SpecError> {
    spec::SpecInput::load(&spec_path(out))?.build()
}
