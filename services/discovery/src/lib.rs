//! Discovery: validates restore requests, finds the backups each restore set selects, and fans
//! the request out into one RestoreTask per backup.

pub mod ami;
pub mod backup_run;
pub mod catalog;
pub mod config;
pub mod dynamodb;
pub mod ebs;
pub mod estimate;
pub mod keys;
pub mod rds;
pub mod s3;
pub mod s3_backup;
pub mod s3_inplace;
pub mod select;
pub mod service;
pub mod stored_plan;

pub use service::{Discovery, DiscoveryConfig};
