//! How a run's files reach the tree and the nodes: node trees and their tarballs ([`bundle`],
//! [`tarball`]), shared binary bundles kept in the store ([`bundle_cache`]), the Ansible
//! inventory and playbooks ([`ansible`]), and the writer that commits it all at once
//! ([`staged`]).

pub mod ansible;
pub mod bundle;
pub mod bundle_cache;
pub mod staged;
pub mod tarball;
