//! Backup scheduling: the scheduler service, which turns due rules of backup plans into backup
//! runs exactly once per due time, and the conversion of a plan's rule into the `BackupRun`
//! message the services read (also used by `lifeboat backup run`), and restore drills of a
//! rule's latest recovery points.

pub mod drill;
pub mod run;
pub mod scheduler;

pub use scheduler::{Clock, ManualClock, Scheduler, SchedulerConfig, SystemClock};
