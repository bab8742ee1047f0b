//! Versioned buckets returned in place to their state at a time, and delete markers removed
//! in bulk. (helper h3)

use std::collections::BTreeMap;

use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use futures::stream::{self, StreamExt};
use lifeboat_common::aws::{classify, AwsError, ErrorClass};
use lifeboat_common::restore::{Progress, Step};
use lifeboat_proto::{RestoreTask, S3Target};

use crate::copy::{CopyFrom, CopyTo};
use crate::{Context, S3Config};

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

/// Reason code of a rollback that left some keys as they were (archived versions, keys S3
/// refused to change): SUCCEEDED with an alert listing them.
pub const NOT_ROLLBACKABLE: &str = "S3_NOT_ROLLBACKABLE";

/// Keys of a DeleteObjects call (S3's limit).
pub const DELETE_BATCH: usize = 1000;

/// Keys not rolled back that a task's message and alert name (the count covers them all).
const NAMED_IN_MESSAGE: usize = 5;

/// Rolls the task's part of its bucket back (or undeletes in it): every key under the task's
/// prefix (only those directly under it when `shallow`) is brought to its state at the time.
/// A redelivery re-plans from the versions as they are now: keys already done are kept.
pub async fn step(context: &Context, task: &RestoreTask, progress: &mut Progress) -> Result<Step, AwsError> {
    let _ = progress;
    let invalid = |message: String| AwsError::task_failure("s3:rollback", "INVALID_TASK", message);
    let target = crate::service::target_of(task).ok_or_else(|| invalid("task has no s3 target".into()))?;
    check(task, target).map_err(invalid)?;
    let in_place = target.in_place.clone().unwrap_or_default();
    let mode =
        Mode::parse(&in_place.mode).ok_or_else(|| invalid(format!("target.in_place.mode {:?}", in_place.mode)))?;
    let at = in_place
        .at
        .as_ref()
        .and_then(lifeboat_common::time::from_timestamp)
        .ok_or_else(|| invalid("target.in_place.at is not a valid time".into()))?;
    let s3 = context.client_as(&target.account_id, &target.region, &task.target_role_arn).await?;
    let part = Part { bucket: &target.bucket, prefix: &in_place.prefix, shallow: in_place.shallow };
    let tally = roll(&s3, &part, mode, at, &context.config).await?;
    Ok(tally.step(&part))
}

/// The keys one task handles.
#[derive(Clone, Copy, Debug)]
pub struct Part<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    /// Only the keys directly under `prefix` (no further `/`).
    pub shallow: bool,
}

impl Part<'_> {
    fn url(&self) -> String {
        format!("s3://{}/{}{}", self.bucket, self.prefix, if self.shallow { " (top level)" } else { "" })
    }
}

/// What a task did, key by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub restored: u64,
    pub deleted: u64,
    pub undeleted: u64,
    pub unchanged: u64,
    /// Keys left as they are, with the reason.
    pub not_rolled_back: Vec<(String, String)>,
}

impl Tally {
    pub fn message(&self) -> String {
        format!(
            "{} keys restored, {} deleted, {} undeleted, {} unchanged",
            self.restored, self.deleted, self.undeleted, self.unchanged
        )
    }

    /// Done, or Partial naming the keys not rolled back.
    pub fn step(&self, part: &Part<'_>) -> Step {
        if self.not_rolled_back.is_empty() {
            return Step::Done { message: self.message(), created: Vec::new(), warnings: Vec::new() };
        }
        let count = self.not_rolled_back.len();
        let mut named: Vec<String> =
            self.not_rolled_back.iter().take(NAMED_IN_MESSAGE).map(|(key, why)| format!("{key}: {why}")).collect();
        if count > NAMED_IN_MESSAGE {
            named.push(format!("and {} more", count - NAMED_IN_MESSAGE));
        }
        let summary = format!("{count} keys of {} not rolled back: {}", part.url(), named.join("; "));
        Step::Partial {
            code: NOT_ROLLBACKABLE.to_string(),
            message: format!("{}; {summary}", self.message()),
            created: Vec::new(),
            alert: lifeboat_proto::Alert {
                code: NOT_ROLLBACKABLE.to_string(),
                severity: "warning".to_string(),
                summary,
                count: count as u64,
                report_url: String::new(),
            },
        }
    }
}

/// A key and its versions, newest first.
type Planned = (String, Vec<Version>);

/// Lists the part's versions page by page and applies each key's action; a key whose
/// versions straddle two pages is planned once its last page is in.
pub async fn roll(
    s3: &aws_sdk_s3::Client,
    part: &Part<'_>,
    mode: Mode,
    at: chrono::DateTime<chrono::Utc>,
    config: &S3Config,
) -> Result<Tally, AwsError> {
    let mut tally = Tally::default();
    let mut markers: Vec<(String, String)> = Vec::new();
    let mut pending: BTreeMap<String, Vec<(bool, Version)>> = BTreeMap::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let mut list = s3.list_object_versions().bucket(part.bucket).prefix(part.prefix);
        if part.shallow {
            list = list.delimiter("/");
        }
        let page = list
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .map_err(|e| classify("s3:ListObjectVersions", e))?;
        for version in page.versions() {
            let Some(key) = version.key() else { continue };
            let entry = Version {
                version_id: version.version_id().unwrap_or("null").to_string(),
                is_marker: false,
                last_modified: version.last_modified().and_then(lifeboat_common::time::from_aws).unwrap_or_default(),
                etag: version.e_tag().unwrap_or_default().to_string(),
                size: version.size().unwrap_or_default(),
                storage_class: version.storage_class().map(|c| c.as_str().to_string()).unwrap_or_default(),
            };
            pending.entry(key.to_string()).or_default().push((version.is_latest().unwrap_or(false), entry));
        }
        for marker in page.delete_markers() {
            let Some(key) = marker.key() else { continue };
            let entry = Version {
                version_id: marker.version_id().unwrap_or("null").to_string(),
                is_marker: true,
                last_modified: marker.last_modified().and_then(lifeboat_common::time::from_aws).unwrap_or_default(),
                etag: String::new(),
                size: 0,
                storage_class: String::new(),
            };
            pending.entry(key.to_string()).or_default().push((marker.is_latest().unwrap_or(false), entry));
        }
        let truncated = page.is_truncated().unwrap_or(false);
        // Listed by key: every key before the page's last is complete; the last may go on.
        let complete: Vec<Planned> = if truncated {
            let last = pending.keys().next_back().cloned();
            let rest = last.and_then(|last| pending.split_off(&last).into_iter().next());
            let done = std::mem::take(&mut pending);
            pending.extend(rest);
            done.into_iter().map(|(key, versions)| (key, newest_first(versions))).collect()
        } else {
            std::mem::take(&mut pending).into_iter().map(|(key, versions)| (key, newest_first(versions))).collect()
        };
        apply(s3, part.bucket, complete, mode, at, config, &mut tally, &mut markers).await?;
        while markers.len() >= DELETE_BATCH || (!truncated && !markers.is_empty()) {
            let batch: Vec<_> = markers.drain(..markers.len().min(DELETE_BATCH)).collect();
            remove_markers(s3, part.bucket, batch, &mut tally).await?;
        }
        if !truncated {
            return Ok(tally);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
        if key_marker.is_none() {
            return Err(AwsError::retryable(
                "s3:ListObjectVersions",
                "MissingMarker",
                "a truncated page without NextKeyMarker",
            ));
        }
    }
}

/// A key's versions and delete markers (listed apart) in one list, the current one first,
/// then by time, newest first; the listing's order breaks ties.
fn newest_first(mut versions: Vec<(bool, Version)>) -> Vec<Version> {
    versions.sort_by(|(a_latest, a), (b_latest, b)| b_latest.cmp(a_latest).then(b.last_modified.cmp(&a.last_modified)));
    versions.into_iter().map(|(_, v)| v).collect()
}

/// Plans each key and makes its copies and deletes (several at once); delete markers to remove
/// are gathered into `markers` for DeleteObjects.
#[allow(clippy::too_many_arguments)]
async fn apply(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    keys: Vec<Planned>,
    mode: Mode,
    at: chrono::DateTime<chrono::Utc>,
    config: &S3Config,
    tally: &mut Tally,
    markers: &mut Vec<(String, String)>,
) -> Result<(), AwsError> {
    let mut changes = Vec::new();
    for (key, versions) in keys {
        match plan_key(&versions, at, mode) {
            KeyAction::Keep => tally.unchanged += 1,
            KeyAction::NotRollbackable { reason } => tally.not_rolled_back.push((key, reason)),
            KeyAction::RemoveMarkers { ids } => markers.extend(ids.into_iter().map(|id| (key.clone(), id))),
            action => {
                let size = match &action {
                    KeyAction::RestoreVersion { version_id } => {
                        versions.iter().find(|v| &v.version_id == version_id).map(|v| v.size).unwrap_or_default()
                    }
                    _ => 0,
                };
                changes.push((key, action, size));
            }
        }
    }
    let results: Vec<(String, KeyAction, Result<(), AwsError>)> = stream::iter(changes)
        .map(|(key, action, size)| async move {
            let result = match &action {
                KeyAction::RestoreVersion { version_id } => {
                    let from = CopyFrom { bucket, key: &key, version_id, size, etag: "" };
                    let to = CopyTo { bucket, key: &key, kms_key_id: "" };
                    crate::copy::copy(s3, &from, &to, config).await
                }
                _ => s3
                    .delete_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("s3:DeleteObject", e)),
            };
            (key, action, result)
        })
        .buffer_unordered(config.copy_concurrency.max(1))
        .collect()
        .await;
    for (key, action, result) in results {
        match (result, action) {
            (Ok(()), KeyAction::RestoreVersion { .. }) => tally.restored += 1,
            (Ok(()), _) => tally.deleted += 1,
            // Throttling and 5xx: the redelivery re-plans, keys done by now are kept.
            (Err(e), _) if e.is_retryable() => return Err(e),
            // S3 refused this key (access denied, an object in an archive...): the others go on.
            (Err(e), _) => tally.not_rolled_back.push((key, format!("{} {}: {}", e.operation, e.code, e.message))),
        }
    }
    Ok(())
}

/// DeleteObjects of delete markers by version id (at most [`DELETE_BATCH`]).
async fn remove_markers(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    markers: Vec<(String, String)>,
    tally: &mut Tally,
) -> Result<(), AwsError> {
    if markers.is_empty() {
        return Ok(());
    }
    let built = |e: aws_smithy_types::error::operation::BuildError| {
        AwsError::task_failure("s3:DeleteObjects", "INVALID_TASK", e.to_string())
    };
    let objects = markers
        .iter()
        .map(|(key, id)| ObjectIdentifier::builder().key(key).version_id(id).build().map_err(built))
        .collect::<Result<Vec<_>, _>>()?;
    let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(built)?;
    let output =
        s3.delete_objects().bucket(bucket).delete(delete).send().await.map_err(|e| classify("s3:DeleteObjects", e))?;
    let mut failed: BTreeMap<&str, String> = BTreeMap::new();
    for error in output.errors() {
        let code = error.code().unwrap_or_default();
        if lifeboat_common::aws::classify_code(Some(code), 0) == ErrorClass::Retryable {
            return Err(AwsError::retryable("s3:DeleteObjects", code, error.message().unwrap_or_default()));
        }
        if let Some(key) = error.key() {
            failed.insert(key, format!("s3:DeleteObjects {code}: {}", error.message().unwrap_or_default()));
        }
    }
    let mut undeleted: Vec<&str> = markers.iter().map(|(key, _)| key.as_str()).collect();
    undeleted.dedup();
    for key in undeleted {
        match failed.get(key) {
            Some(why) => tally.not_rolled_back.push((key.to_string(), why.clone())),
            None => tally.undeleted += 1,
        }
    }
    Ok(())
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

    mod listed {
        use aws_sdk_s3::operation::copy_object::CopyObjectOutput;
        use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
        use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
        use aws_sdk_s3::primitives::DateTime;
        use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion, ObjectVersionStorageClass};
        use aws_smithy_mocks::{mock, mock_client, RuleMode};

        use super::*;

        fn version(key: &str, id: &str, s: i64, latest: bool) -> ObjectVersion {
            ObjectVersion::builder()
                .key(key)
                .version_id(id)
                .is_latest(latest)
                .last_modified(DateTime::from_secs(1_700_000_000 + s))
                .e_tag(format!("\"{id}\""))
                .size(3)
                .storage_class(ObjectVersionStorageClass::Standard)
                .build()
        }

        fn marker(key: &str, id: &str, s: i64, latest: bool) -> DeleteMarkerEntry {
            DeleteMarkerEntry::builder()
                .key(key)
                .version_id(id)
                .is_latest(latest)
                .last_modified(DateTime::from_secs(1_700_000_000 + s))
                .build()
        }

        const PART: Part<'static> = Part { bucket: "b", prefix: "", shallow: false };

        #[tokio::test]
        async fn a_key_whose_versions_straddle_two_pages_is_planned_with_all_of_them() {
            // k was overwritten at 10; its version at the time (1) is on the second page.
            let first = mock!(aws_sdk_s3::Client::list_object_versions)
                .match_requests(|r| r.key_marker().is_none())
                .then_output(|| {
                    ListObjectVersionsOutput::builder()
                        .versions(version("a", "a1", 1, true))
                        .versions(version("k", "k2", 10, true))
                        .is_truncated(true)
                        .next_key_marker("k")
                        .next_version_id_marker("k2")
                        .build()
                });
            let second = mock!(aws_sdk_s3::Client::list_object_versions)
                .match_requests(|r| r.key_marker() == Some("k") && r.version_id_marker() == Some("k2"))
                .then_output(|| {
                    ListObjectVersionsOutput::builder()
                        .versions(version("k", "k1", 1, false))
                        .versions(version("n", "n1", 10, true))
                        .is_truncated(false)
                        .build()
                });
            let copy = mock!(aws_sdk_s3::Client::copy_object)
                .match_requests(|r| r.key() == Some("k") && r.copy_source() == Some("b/k?versionId=k1"))
                .then_output(|| CopyObjectOutput::builder().build());
            let delete = mock!(aws_sdk_s3::Client::delete_object)
                .match_requests(|r| r.key() == Some("n") && r.version_id().is_none())
                .then_output(|| aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build());
            let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&first, &second, &copy, &delete]);
            let tally = roll(&s3, &PART, Mode::Rollback, t(5), &S3Config::default()).await.expect("rolled back");
            assert_eq!((tally.restored, tally.deleted, tally.unchanged), (1, 1, 1), "{tally:?}");
            assert_eq!((copy.num_calls(), delete.num_calls(), second.num_calls()), (1, 1, 1));
            assert_eq!(
                tally.step(&PART),
                Step::Done {
                    message: "1 keys restored, 1 deleted, 0 undeleted, 1 unchanged".into(),
                    created: vec![],
                    warnings: vec![],
                }
            );
        }

        #[tokio::test]
        async fn markers_s3_refuses_to_remove_are_reported_with_an_alert() {
            let listed = mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| {
                ListObjectVersionsOutput::builder()
                    .versions(version("x", "x1", 1, false))
                    .delete_markers(marker("x", "dx", 10, true))
                    .versions(version("y", "y1", 1, false))
                    .delete_markers(marker("y", "dy", 10, true))
                    .is_truncated(false)
                    .build()
            });
            let removed = mock!(aws_sdk_s3::Client::delete_objects)
                .match_requests(|r| r.delete().map(|d| d.objects().len()) == Some(2))
                .then_output(|| {
                    let denied = aws_sdk_s3::types::Error::builder()
                        .key("y")
                        .version_id("dy")
                        .code("AccessDenied")
                        .message("denied")
                        .build();
                    DeleteObjectsOutput::builder().errors(denied).build()
                });
            let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&listed, &removed]);
            let tally = roll(&s3, &PART, Mode::Undelete, t(5), &S3Config::default()).await.expect("undeleted");
            assert_eq!(tally.undeleted, 1, "{tally:?}");
            assert_eq!(tally.not_rolled_back, [("y".to_string(), "s3:DeleteObjects AccessDenied: denied".to_string())]);
            let Step::Partial { code, message, alert, .. } = tally.step(&PART) else { panic!("partial") };
            assert_eq!((code.as_str(), alert.count), (NOT_ROLLBACKABLE, 1));
            assert!(
                message.starts_with("0 keys restored, 0 deleted, 1 undeleted, 0 unchanged; 1 keys of s3://b/"),
                "{message}"
            );
        }

        #[tokio::test]
        async fn throttled_delete_objects_is_retried() {
            let listed = mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| {
                ListObjectVersionsOutput::builder()
                    .versions(version("x", "x1", 1, false))
                    .delete_markers(marker("x", "dx", 10, true))
                    .build()
            });
            let removed = mock!(aws_sdk_s3::Client::delete_objects).then_output(|| {
                let slow = aws_sdk_s3::types::Error::builder().key("x").code("SlowDown").message("slow").build();
                DeleteObjectsOutput::builder().errors(slow).build()
            });
            let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&listed, &removed]);
            let error = roll(&s3, &PART, Mode::Undelete, t(5), &S3Config::default()).await.unwrap_err();
            assert!(error.is_retryable() && error.code == "SlowDown", "{error:?}");
        }
    }

    #[test]
    fn undelete_keeps_live_keys_and_older_deletes() {
        assert_eq!(plan_key(&[v("a", 10, "x")], t(5), Mode::Undelete), KeyAction::Keep);
        assert_eq!(plan_key(&[m("d", 3), v("a", 1, "x")], t(5), Mode::Undelete), KeyAction::Keep);
    }
}
