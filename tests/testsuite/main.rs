//! kbin's integration tests in one binary (the layout of cargo's own tests/testsuite): one
//! link of the crate instead of one per file, and the slow machine tests overlap the rest.
//! Each module is one area; `cargo test --test testsuite MODULE::` runs one. tests/fetch_env.rs
//! stays a binary of its own: it sets process-wide environment variables.

#[path = "../common/mod.rs"]
mod common;

mod addons;
mod ansible;
mod archive;
mod docs;
mod fetch;
mod foundation;
mod fuzz;
mod gen_bundles;
mod gen_cluster_cli;
mod gen_configs;
mod gen_defects;
mod gen_diff;
mod gen_flags;
mod gen_proof;
mod gen_whole;
mod git_http;
mod images;
mod install;
mod mirror;
mod pki;
mod source;
mod up;
mod up_systemd;
mod update;
