//! Versioned buckets returned in place to their state at a time, and delete markers removed
//! in bulk. (helper h3)

use lifeboat_common::aws::AwsError;
use lifeboat_common::restore::{Progress, Step};
use lifeboat_proto::{RestoreTask, S3Target};

use crate::Context;

/// Whether an in-place task names its bucket, mode and time.
pub fn check(task: &RestoreTask, target: &S3Target) -> Result<(), String> {
    let _ = task;
    let Some(in_place) = &target.in_place else { return Err("target.in_place is missing".into()) };
    if Mode::parse(&in_place.mode).is_none() {
        return Err(format!("target.in_place.mode {:?} is neither \"rollback\" nor \"undelete\"", in_place.mode));
    }
    if in_place.at.is_none() {
        return Err("target.in_place.at is missing: the time to roll back to".into());
    }
    if target.bucket.is_empty() {
        return Err("target.bucket is missing".into());
    }
    Ok(())
}

pub async fn step(context: &Context, task: &RestoreTask, progress: &mut Progress) -> Result<Step, AwsError> {
    let _ = (context, task, progress);
    Err(AwsError::task_failure("s3:rollback", "NotImplemented", "the S3 rollback is being built"))
}

/// One version or delete marker of a key, as ListObjectVersions reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub version_id: String,
    pub is_marker: bool,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    pub etag: String,
    pub size: i64,
    pub storage_class: String,
}

/// What to do with one key to bring it to its state at `at`.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyAction {
    Keep,
    /// CopyObject of this version onto the same key: every version stays, nothing is lost.
    RestoreVersion {
        version_id: String,
    },
    /// DeleteObject without a version id: a delete marker, the versions stay.
    Delete,
    /// DeleteObjects of these delete markers (by version id).
    RemoveMarkers {
        ids: Vec<String>,
    },
    NotRollbackable {
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Rollback,
    Undelete,
}

impl Mode {
    pub fn parse(mode: &str) -> Option<Mode> {
        match mode {
            "rollback" => Some(Mode::Rollback),
            "undelete" => Some(Mode::Undelete),
            _ => None,
        }
    }
}

/// Archived classes must be restored (RestoreObject) before they can be copied; GLACIER_IR can.
fn archived(storage_class: &str) -> bool {
    matches!(storage_class, "GLACIER" | "DEEP_ARCHIVE")
}

/// The action for one key from its versions, newest first.
pub fn plan_key(versions: &[Version], at: chrono::DateTime<chrono::Utc>, mode: Mode) -> KeyAction {
    let Some(current) = versions.first() else { return KeyAction::Keep };
    match mode {
        Mode::Undelete => {
            if !current.is_marker || current.last_modified < at {
                return KeyAction::Keep;
            }
            let ids = versions
                .iter()
                .filter(|v| v.is_marker && v.last_modified >= at)
                .map(|v| v.version_id.clone())
                .collect();
            KeyAction::RemoveMarkers { ids }
        }
        Mode::Rollback => match versions.iter().find(|v| v.last_modified <= at) {
            None => delete_unless_deleted(current),
            Some(target) if target.is_marker => delete_unless_deleted(current),
            Some(target) => {
                if !current.is_marker && current.etag == target.etag && current.size == target.size {
                    KeyAction::Keep
                } else if archived(&target.storage_class) {
                    KeyAction::NotRollbackable {
                        reason: format!(
                            "version {} is in {}: restore it from the archive first",
                            target.version_id, target.storage_class
                        ),
                    }
                } else {
                    KeyAction::RestoreVersion { version_id: target.version_id.clone() }
                }
            }
        },
    }
}

/// A key that did not exist at the time: deleted, unless it already is.
fn delete_unless_deleted(current: &Version) -> KeyAction {
    if current.is_marker {
        KeyAction::Keep
    } else {
        KeyAction::Delete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn t(s: i64) -> chrono::DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn v(id: &str, s: i64, etag: &str) -> Version {
        Version {
            version_id: id.into(),
            is_marker: false,
            last_modified: t(s),
            etag: etag.into(),
            size: 3,
            storage_class: "STANDARD".into(),
        }
    }

    fn m(id: &str, s: i64) -> Version {
        Version {
            version_id: id.into(),
            is_marker: true,
            last_modified: t(s),
            etag: String::new(),
            size: 0,
            storage_class: String::new(),
        }
    }

    #[test]
    fn unchanged_key_is_kept() {
        assert_eq!(plan_key(&[v("a", 1, "x")], t(5), Mode::Rollback), KeyAction::Keep);
    }

    #[test]
    fn overwritten_key_restores_its_version_at_the_time() {
        let versions = [v("b", 10, "y"), v("a", 1, "x")];
        assert_eq!(plan_key(&versions, t(5), Mode::Rollback), KeyAction::RestoreVersion { version_id: "a".into() });
    }

    #[test]
    fn overwrite_with_same_content_is_kept() {
        let versions = [v("b", 10, "x"), v("a", 1, "x")];
        assert_eq!(plan_key(&versions, t(5), Mode::Rollback), KeyAction::Keep);
    }

    #[test]
    fn deleted_key_is_restored() {
        let versions = [m("d", 10), v("a", 1, "x")];
        assert_eq!(plan_key(&versions, t(5), Mode::Rollback), KeyAction::RestoreVersion { version_id: "a".into() });
    }

    #[test]
    fn key_created_after_the_time_is_deleted() {
        assert_eq!(plan_key(&[v("a", 10, "x")], t(5), Mode::Rollback), KeyAction::Delete);
    }

    #[test]
    fn key_deleted_at_the_time_and_recreated_is_deleted() {
        let versions = [v("c", 10, "z"), m("d", 3), v("a", 1, "x")];
        assert_eq!(plan_key(&versions, t(5), Mode::Rollback), KeyAction::Delete);
    }

    #[test]
    fn key_deleted_then_and_now_is_kept() {
        let versions = [m("e", 10), v("c", 8, "z"), m("d", 3), v("a", 1, "x")];
        assert_eq!(plan_key(&versions, t(5), Mode::Rollback), KeyAction::Keep);
    }

    #[test]
    fn archived_version_is_not_rollbackable() {
        let mut old = v("a", 1, "x");
        old.storage_class = "GLACIER".into();
        let action = plan_key(&[v("b", 10, "y"), old], t(5), Mode::Rollback);
        assert!(matches!(action, KeyAction::NotRollbackable { reason } if reason.contains("GLACIER")));
    }

    #[test]
    fn glacier_ir_version_is_restored() {
        let mut old = v("a", 1, "x");
        old.storage_class = "GLACIER_IR".into();
        assert_eq!(
            plan_key(&[v("b", 10, "y"), old], t(5), Mode::Rollback),
            KeyAction::RestoreVersion { version_id: "a".into() }
        );
    }

    #[test]
    fn second_rollback_to_a_later_time_restores_the_changed_state() {
        // a at 1, overwritten by b at 10; rolled back to 5 at 20 (copy of a -> r).
        let versions = [v("r", 20, "x"), v("b", 10, "y"), v("a", 1, "x")];
        assert_eq!(plan_key(&versions, t(15), Mode::Rollback), KeyAction::RestoreVersion { version_id: "b".into() });
        // a key created at 10 and deleted by the rollback at 20 comes back.
        let created = [m("d", 20), v("n", 10, "y")];
        assert_eq!(plan_key(&created, t(15), Mode::Rollback), KeyAction::RestoreVersion { version_id: "n".into() });
        // and the first rollback, redelivered, finds nothing to do.
        assert_eq!(plan_key(&versions, t(5), Mode::Rollback), KeyAction::Keep);
        assert_eq!(plan_key(&created, t(5), Mode::Rollback), KeyAction::Keep);
    }

    #[test]
    fn undelete_removes_markers_since_the_time() {
        let versions = [m("e", 12), m("d", 10), v("a", 1, "x"), m("o", 0)];
        assert_eq!(
            plan_key(&versions, t(5), Mode::Undelete),
            KeyAction::RemoveMarkers { ids: vec!["e".into(), "d".into()] }
        );
    }

    #[test]
    fn undelete_keeps_live_keys_and_older_deletes() {
        assert_eq!(plan_key(&[v("a", 10, "x")], t(5), Mode::Undelete), KeyAction::Keep);
        assert_eq!(plan_key(&[m("d", 3), v("a", 1, "x")], t(5), Mode::Undelete), KeyAction::Keep);
    }
}
