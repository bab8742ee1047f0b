//! The EBS restore service: creates volumes from snapshots, copying them to the target region
//! first when needed, idempotently and without holding messages while AWS works.

pub mod restore;
pub mod service;

pub use restore::{restore_step, Clients, Step};
pub use service::{EbsConfig, EbsService};
