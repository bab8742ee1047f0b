//! Backup plans: the plan file (YAML or JSON), its validation with every error named by field,
//! and the pure functions the scheduler and the retention sweep build on: when a rule is due,
//! which recovery points a grandfather-father-son rule keeps, and whether a lock lets a point go.
//!
//! Nothing here talks to AWS or the bus, so a plan can be checked (`lifeboat backup plan
//! validate`) and its arithmetic tested without either.

pub mod load;
pub mod plan;
pub mod retention;
pub mod schedule;

pub use load::{from_value, load, FieldError, LoadError};
pub use plan::{
    AppConsistent, CopyTo, Drill, DrillTarget, Keep, Lock, LockMode, Plan, ResourceType, Retention, Rule, RuleOptions,
    Schedule, Selection, Span,
};
pub use retention::{expires_at, may_delete, DeleteRefusal};
pub use schedule::{due_between, due_id, next_due, Due};
