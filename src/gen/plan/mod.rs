//! What a run generates for: the cluster spec as given ([`spec`]), the versions the configs are
//! pinned to ([`versions`]) and the kind of host the nodes are ([`host`]). Nothing here writes.

pub mod host;
pub mod spec;
pub mod versions;
