//! Toolchains: named sets of binaries hardlinked into the store, each with a receipt.
//!
//! The receipt (`toolchain.lock`) is the contract between `install`/`build` (which write it,
//! through [`edit`] only) and `show-versions`/`gen` (which read it): it says exactly what is in
//! the toolchain and where each byte came from.

pub mod assemble;
pub mod edit;
pub mod integrity;
pub mod probe;
pub mod receipt;

pub use receipt::{
    ArtifactReceipt, BinaryReceipt, ComponentReceipt, Origin, Receipt, Reproduction, SourceReceipt,
    TofuRecord, UpstreamBuild,
};
