//! kbin: rustup for Kubernetes "the hard way".
//!
//! The pipeline, one module a stage:
//!
//! ```text
//! toolchains.toml ─► manifest (parse, resolve) ─► fetch / source ─► store (CAS) ─► toolchain (+ lock)
//!                                                                                      │
//!                                                                 gen (PKI, configs) ◄─┘
//! ```
//!
//! `main.rs` only parses the command line and renders errors; [`cli`] wires the commands to the
//! library modules, which know nothing of the command line.

pub mod archive;
pub mod cli;
pub mod error;
pub mod fetch;
pub mod fsx;
pub mod r#gen;
pub mod images;
pub mod install;
pub mod manifest;
pub mod mirror;
pub mod rekor;
pub mod source;
pub mod store;
pub mod toolchain;
pub mod trust;
pub mod ui;
pub mod up;
pub mod update;
pub mod util;
