//! The `s3` service (`lifeboat.work.s3`): S3 protection in the manner of Clumio's SecureVault
//! and Backtrack.
//!
//! - [`vault`]: the secondary copy of a protection group's objects in a vault bucket (another
//!   region and/or account, its own KMS key) and the index of what was backed up when.
//! - [`backup`]: one bucket of a group backed up to the vault, incrementally (only new or
//!   changed versions copied, deletions recorded, large objects in parts); unreadable objects
//!   are skipped with their reason and make a partial backup with an alert.
//! - [`expiry`]: the rule's retention applied to the vault after each backup: expired indexes
//!   deleted with the copies only they reference.
//! - [`continuous`]: when a continuous-backup check syncs (more than 32 updates pending, or an
//!   hour since the last sync with any update pending).
//! - [`restore`] and [`filters`]: a group's objects as of a backup time, filtered, written to a
//!   target bucket under a target prefix.
//! - [`rollback`]: versioned buckets returned in place to their state at a time, and delete
//!   markers removed in bulk.
//! - [`copy`]: one object version copied server side, in parts above the threshold.
//! - [`service`]: all of it as tasks in the restore shell.

pub mod backup;
pub mod continuous;
pub mod copy;
pub mod expiry;
pub mod filters;
pub mod restore;
pub mod rollback;
pub mod service;
pub mod vault;

pub use service::{service, Context, S3Config, S3Service, KIND};
