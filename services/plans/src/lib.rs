//! Backup plans: the plan file (YAML or JSON), its validation with every error named by field,
//! and the pure functions the scheduler and the retention sweep build on: when a rule is due,
//! which recovery points a grandfather-father-son rule keeps, and whether a lock lets a point go.
//!
//! Only `points` (listing Lifeboat's recovery points) and the acting half of `sweep` talk to
//! AWS and the shared store; a plan can be checked (`lifeboat backup plan validate`) and all of
//! the arithmetic, the sweep's decisions included, tested without either.

pub mod load;
pub mod plan;
pub mod points;
pub mod retention;
pub mod schedule;
pub mod sweep;

pub use load::{from_value, load, FieldError, LoadError};
pub use plan::{
    AppConsistent, Continuous, CopyTo, Drill, DrillTarget, GroupBucket, Keep, Lock, LockMode, ObjectFilter, Plan,
    ProtectionGroup, ResourceType, Retention, Rule, RuleOptions, Schedule, Selection, Span, Vault, STORAGE_CLASSES,
};
pub use retention::{expires_at, may_delete, DeleteRefusal};
pub use schedule::{due_between, due_id, is_check, next_due, start_window, Due};
pub use sweep::{decide, sweep, Decision, KeepReason, Outcome, SweepOptions, SweepReport, Target};
