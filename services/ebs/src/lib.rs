//! The EBS service: creates volumes from snapshots, copying them to the target region first when
//! needed, and takes snapshots of volumes (alone, or an instance's together) with their copies,
//! idempotently and without holding messages while AWS works.

pub mod backup;
pub mod restore;
pub mod service;

pub use lifeboat_common::restore::Step;
pub use restore::{restore_step, Clients, Context};
pub use service::{service, EbsConfig, EbsService};
