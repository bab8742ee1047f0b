//! One bucket of a protection group backed up to the run's vault. (helper h1)
//!
//! The bucket's current objects (that the group's filter selects) are listed to the end; an
//! object whose version the previous index already holds is carried over, any other is copied
//! server side to its per-version vault key (in parts above the threshold), up to
//! `copy_concurrency` copies in flight. Archived objects (GLACIER, DEEP_ARCHIVE not restored)
//! and objects that cannot be read are skipped with their reason: the backup is then partial
//! (SUCCEEDED with `S3_PARTIAL_BACKUP` and an alert whose report is the index's
//! `.skipped.csv`). Keys of the previous index no longer in the bucket are recorded as deleted.
//!
//! A run with continuous backup enabled is a check: once the bucket has an index, it syncs only
//! when [`crate::continuous::decide`] says so, and otherwise ends Done naming why, writing
//! nothing. A redelivered task whose index is already written adopts it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::restore::{Progress, Step};
use lifeboat_proto::{Alert, ObjectFilter, RestoreTask, S3Vault};

use crate::copy::{self, CopyFrom, CopyTo};
use crate::vault::{self, Deleted, Entry, Index, Skipped};
use crate::{Context, S3Config};

/// The reason code (and alert code) of a backup that could not copy every object.
pub const PARTIAL_BACKUP: &str = "S3_PARTIAL_BACKUP";
/// The skip code of an object in an archive storage class that has not been restored.
pub const ARCHIVED_STORAGE_CLASS: &str = "ARCHIVED_STORAGE_CLASS";
/// The skip code of an unversioned object overwritten again while its backup retried the copy.
pub const CHANGED_DURING_BACKUP: &str = "CHANGED_DURING_BACKUP";
/// S3's answer to a copy whose source ETag condition no longer holds.
const PRECONDITION_FAILED: &str = "PreconditionFailed";
/// Keys named in a partial backup's message (all of them are in the CSV).
const KEYS_NAMED: usize = 3;

/// One current object version of the source bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    /// `null` for an object of an unversioned bucket.
    pub version_id: String,
    pub etag: String,
    pub size: i64,
    pub storage_class: String,
    pub last_modified: DateTime<Utc>,
}

/// The bucket as listed: its current objects, and when every version and delete marker (or,
/// unversioned, every object) was last written, for counting pending updates.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Any version id other than `null`, or a delete marker: deletes leave markers to count.
    pub versioned: bool,
    pub current: Vec<Object>,
    pub writes: Vec<DateTime<Utc>>,
}

/// What the backup does with one current object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The previous index holds this version: keep its entry (and its backed_up_at).
    Carry(Entry),
    /// Copy it to the vault.
    Copy,
    /// In an archive class: copyable only when restored (HeadObject tells).
    Archived,
}

/// Whether the group's filter selects an object (an absent filter selects everything).
pub fn selected(filter: Option<&ObjectFilter>, key: &str, storage_class: &str) -> bool {
    let Some(filter) = filter else { return true };
    (filter.prefixes.is_empty() || filter.prefixes.iter().any(|p| key.starts_with(p.as_str())))
        && !filter.exclude_prefixes.iter().any(|p| !p.is_empty() && key.starts_with(p.as_str()))
        && (filter.storage_classes.is_empty()
            || filter.storage_classes.iter().any(|c| c.eq_ignore_ascii_case(storage_class)))
}

/// Archive classes must be restored (RestoreObject) before they can be read; GLACIER_IR can be.
pub fn archived(storage_class: &str) -> bool {
    matches!(storage_class, "GLACIER" | "DEEP_ARCHIVE")
}

/// An object without a version id (unversioned bucket) is the same version only with the same ETag.
fn same_version(entry: &Entry, object: &Object) -> bool {
    entry.key == object.key
        && entry.version_id == object.version_id
        && (object.version_id != "null" || entry.etag.trim_matches('"') == object.etag.trim_matches('"'))
}

/// Carry over, copy, or check the archive, for one object given the previous index's entries by key.
pub fn plan_object(object: &Object, previous: &HashMap<&str, &Entry>) -> Plan {
    match previous.get(object.key.as_str()) {
        Some(entry) if same_version(entry, object) => Plan::Carry((*entry).clone()),
        _ if archived(&object.storage_class) => Plan::Archived,
        _ => Plan::Copy,
    }
}

/// The previous index's keys (still selected by the filter) that are no longer in the bucket.
pub fn deletions(
    previous: &Index,
    current: &[Object],
    filter: Option<&ObjectFilter>,
    at: DateTime<Utc>,
) -> Vec<Deleted> {
    let now: std::collections::HashSet<&str> = current.iter().map(|o| o.key.as_str()).collect();
    previous
        .objects
        .iter()
        .filter(|e| !now.contains(e.key.as_str()) && selected(filter, &e.key, &e.storage_class))
        .map(|e| Deleted { key: e.key.clone(), version_id: e.version_id.clone(), detected_at: at })
        .collect()
}

/// Updates pending since `since`: writes after it, plus (unversioned buckets, whose deletes
/// leave no trace) the previous index's keys that are gone.
pub fn pending_updates(listing: &Listing, since: DateTime<Utc>, gone: usize) -> u64 {
    (listing.writes.iter().filter(|t| **t > since).count() + gone) as u64
}

/// The Done message of a backup, from its index.
pub fn summary(index: &Index) -> (usize, usize, i64) {
    let copied: Vec<&Entry> = index.objects.iter().filter(|e| e.backed_up_at == index.backed_up_at).collect();
    (index.objects.len(), copied.len(), copied.iter().map(|e| e.size).sum())
}

/// The step's result for a written (or adopted) index.
pub fn result(vault: &S3Vault, index_key: &str, index: &Index) -> Step {
    let (objects, copied, bytes) = summary(index);
    let created = vec![vault::url(&vault.bucket, index_key)];
    let mut message =
        format!("{objects} objects ({copied} copied, {bytes} bytes), {} deletions recorded", index.deleted.len());
    if index.skipped.is_empty() {
        return Step::Done { message, created, warnings: Vec::new() };
    }
    let named: Vec<&str> = index.skipped.iter().take(KEYS_NAMED).map(|s| s.key.as_str()).collect();
    let more = if index.skipped.len() > KEYS_NAMED { ", ..." } else { "" };
    let summary =
        format!("{} objects of s3://{} not backed up ({}{more})", index.skipped.len(), index.bucket, named.join(", "));
    message = format!("{summary}; {message}");
    let alert = Alert {
        code: PARTIAL_BACKUP.to_string(),
        severity: "warning".to_string(),
        summary,
        count: index.skipped.len() as u64,
        report_url: vault::url(&vault.bucket, &vault::skipped_key(index_key)),
    };
    Step::Partial { code: PARTIAL_BACKUP.to_string(), message, created, alert }
}

/// Backs the task's bucket up to its run's vault.
pub async fn step(context: &Context, task: &RestoreTask, progress: &mut Progress) -> Result<Step, AwsError> {
    let _ = progress;
    let Some(job) = &task.backup_task else {
        return Ok(Step::Failed { code: "INVALID_TASK".into(), message: "task has no backup_task".into() });
    };
    let run = job.run.clone().unwrap_or_default();
    let Some(vault) = run.vault.clone() else {
        return Ok(Step::Failed { code: "INVALID_TASK".into(), message: "backup_task.run.vault is missing".into() });
    };
    let Some(group) = run.protection_groups.iter().find(|g| g.name == job.protection_group) else {
        let message = format!(
            "backup_task.protection_group '{}' is not one of backup_task.run.protection_groups",
            job.protection_group
        );
        return Ok(Step::Failed { code: "INVALID_TASK".into(), message });
    };
    let bucket = job.resource_id.as_str();
    let at = run.due_at.as_ref().and_then(lifeboat_common::time::from_timestamp).unwrap_or_else(Utc::now);
    let run_id = if run.due_id.is_empty() { task.request_id.clone() } else { run.due_id.clone() };
    let source = context.client(&job.account_id, &job.region).await?;
    let target = context.client(&vault.account_id, &vault.region).await?;
    vault::ensure_vault(&target, &vault).await?;

    let index_key = vault::index_key(&vault, &group.name, bucket, at, &run_id);
    if let Some(written) = vault::get_index(&target, &vault, &index_key).await? {
        return expired(&target, &vault, &group.name, bucket, &run, result(&vault, &index_key, &written)).await;
    }
    let indexes = vault::list_indexes(&target, &vault, &group.name, bucket).await?;
    let earlier: Vec<_> = indexes.into_iter().filter(|e| e.key != index_key).collect();
    let previous = match vault::choose(&earlier, Some(at), None) {
        Some(entry) => {
            let index = vault::get_index(&target, &vault, &entry.key).await?;
            index.map(|index| (entry.key.clone(), index))
        }
        None => None,
    };
    let filter = group.filter.as_ref();
    let listing = list(&source, bucket, filter).await?;
    // Copies made by this backup's earlier steps (a bucket larger than one step).
    let checkpoint_key = vault::checkpoint_key(&index_key);
    let checkpoint = vault::get_index(&target, &vault, &checkpoint_key).await?;

    if let (Some(settings), Some((previous_key, previous))) = (run.continuous.as_ref(), previous.as_ref()) {
        // A sync under way is finished whatever has been written since.
        if settings.enabled && checkpoint.is_none() {
            // Writes are counted from when the previous index was really written when that is
            // earlier than its backup time (a check whose due time is ahead of the clock).
            let written = vault::written_at(&target, &vault, previous_key).await?;
            let since = written.map_or(previous.backed_up_at, |w| w.min(previous.backed_up_at));
            // An unversioned bucket's deletes leave no delete marker to count.
            let gone = if listing.versioned { 0 } else { deletions(previous, &listing.current, filter, at).len() };
            let pending = pending_updates(&listing, since, gone);
            let decision = crate::continuous::decide(pending, Some(previous.backed_up_at), at, settings);
            if !decision.sync {
                return Ok(Step::Done {
                    message: format!("no sync due: {}", decision.why),
                    created: Vec::new(),
                    warnings: Vec::new(),
                });
            }
            tracing::info!(bucket, why = %decision.why, "continuous backup syncs");
        }
    }

    let mut index = Index::new(&group.name, bucket, &job.account_id, &job.region, &run_id, at);
    let by_key: HashMap<&str, &Entry> =
        previous.as_ref().map(|(_, p)| p.objects.iter().map(|e| (e.key.as_str(), e)).collect()).unwrap_or_default();
    let checkpoint =
        checkpoint.unwrap_or_else(|| Index::new(&group.name, bucket, &job.account_id, &job.region, &run_id, at));
    let copied_before: HashMap<&str, &Entry> = checkpoint.objects.iter().map(|e| (e.key.as_str(), e)).collect();
    let skipped_before: HashMap<&str, &Skipped> = checkpoint.skipped.iter().map(|s| (s.key.as_str(), s)).collect();
    let mut copied_now: Vec<Entry> = Vec::new();
    let mut to_copy = Vec::new();
    for object in &listing.current {
        if let Some(entry) = copied_before.get(object.key.as_str()).filter(|e| same_version(e, object)) {
            copied_now.push((*entry).clone());
            continue;
        }
        if let Some(skipped) = skipped_before.get(object.key.as_str()).filter(|s| s.version_id == object.version_id) {
            index.skipped.push((*skipped).clone());
            continue;
        }
        match plan_object(object, &by_key) {
            Plan::Carry(entry) => index.objects.push(entry),
            Plan::Copy => to_copy.push((object, false)),
            Plan::Archived => to_copy.push((object, true)),
        }
    }
    let per_step = context.config.copies_per_step.max(1);
    let left_after = to_copy.len().saturating_sub(per_step);
    to_copy.truncate(per_step);
    let copies: Vec<_> = to_copy
        .into_iter()
        .map(|(object, archived)| {
            let (config, source, target, vault, group) = (&context.config, &source, &target, &vault, &group.name);
            Box::pin(back_up(config, source, target, vault, group, bucket, object, archived, at))
        })
        .collect();
    let copies = stream::iter(copies).buffer_unordered(context.config.copy_concurrency.max(1));
    let outcomes: Vec<Result<Outcome, AwsError>> = copies.collect().await;
    for outcome in outcomes {
        match outcome? {
            Outcome::Copied(entry) => copied_now.push(entry),
            Outcome::Skipped(skipped) => index.skipped.push(skipped),
        }
    }
    if left_after > 0 {
        let done = copied_now.len() + index.skipped.len();
        let partial = Index { objects: copied_now, skipped: std::mem::take(&mut index.skipped), ..checkpoint };
        vault::put_index(&target, &vault, &checkpoint_key, &partial).await?;
        let what = format!("{done} objects copied to the vault so far, {left_after} to go");
        return Ok(Step::Waiting { what, created: Vec::new() });
    }
    index.objects.extend(copied_now);
    index.objects.sort_by(|a, b| a.key.cmp(&b.key));
    index.skipped.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some((previous_key, previous)) = &previous {
        index.deleted = deletions(previous, &listing.current, filter, at);
        index.previous = Some(previous_key.clone());
    }
    vault::put_index(&target, &vault, &index_key, &index).await?;
    // Best effort: a checkpoint left behind is a small file the index has made obsolete.
    let _ = target.delete_object().bucket(&vault.bucket).key(&checkpoint_key).send().await;
    expired(&target, &vault, &group.name, bucket, &run, result(&vault, &index_key, &index)).await
}

/// `step` once the rule's retention has been applied to the bucket's older backups (also when a
/// redelivery adopts the index, so a pass cut short is finished). Throttling and 5xx retry the
/// step; anything else leaves the backup done, with a warning that retention was not applied.
async fn expired(
    target: &aws_sdk_s3::Client,
    vault: &S3Vault,
    group: &str,
    bucket: &str,
    run: &lifeboat_proto::BackupRun,
    step: Step,
) -> Result<Step, AwsError> {
    let retention = run.retention.clone().unwrap_or_default();
    let outcome = crate::expiry::expire(target, vault, group, bucket, &retention, run.lock.as_ref(), Utc::now()).await;
    let (note, warning) = match outcome {
        Ok(outcome) => (outcome.note(), None),
        Err(e) if e.is_retryable() => return Err(e),
        Err(e) => (
            String::new(),
            Some(format!("retention not applied to older backups: {} {}: {}", e.operation, e.code, e.message)),
        ),
    };
    let with_note = |message: String| if note.is_empty() { message } else { format!("{message}; {note}") };
    Ok(match step {
        Step::Done { message, created, mut warnings } => {
            warnings.extend(warning);
            Step::Done { message: with_note(message), created, warnings }
        }
        Step::Partial { code, message, created, alert } => {
            let message = match warning {
                Some(warning) => format!("{}; {warning}", with_note(message)),
                None => with_note(message),
            };
            Step::Partial { code, message, created, alert }
        }
        other => other,
    })
}

#[derive(Debug)]
enum Outcome {
    Copied(Entry),
    Skipped(Skipped),
}

/// Copies one object to the vault (an archived one only when restored). A terminal error
/// (AccessDenied, NoSuchKey because it was deleted meanwhile...) skips the object with AWS's
/// code; a retryable one is the task's, for the shell to retry.
#[allow(clippy::too_many_arguments)]
async fn back_up(
    config: &S3Config,
    source: &aws_sdk_s3::Client,
    target: &aws_sdk_s3::Client,
    vault: &S3Vault,
    group: &str,
    bucket: &str,
    object: &Object,
    archived: bool,
    at: DateTime<Utc>,
) -> Result<Outcome, AwsError> {
    let skip = |code: &str, reason: String| skip_object(object, code, reason);
    if archived {
        let head = source.head_object().bucket(bucket).key(&object.key);
        let head = if object.version_id == "null" { head } else { head.version_id(&object.version_id) };
        match head.send().await.map_err(|e| classify("s3:HeadObject", e)) {
            Ok(head) if restored(head.restore()) => {}
            Ok(_) => {
                let reason =
                    format!("in {}: restore it from the archive (RestoreObject) to back it up", object.storage_class);
                return Ok(skip(ARCHIVED_STORAGE_CLASS, reason));
            }
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => return Ok(skip(&e.code, e.message)),
        }
    }
    // An unversioned object overwritten between the listing and the copy (S3 refuses the copy
    // on the listed ETag) is copied as it now is, once; changed again, it is skipped.
    let mut object = object.clone();
    for attempt in 0..2 {
        let vault_key = vault::object_key(vault, group, bucket, &object.version_id, &object.etag, &object.key);
        let from = CopyFrom {
            bucket,
            key: &object.key,
            version_id: &object.version_id,
            size: object.size,
            etag: &object.etag,
        };
        let to = CopyTo { bucket: &vault.bucket, key: &vault_key, kms_key_id: &vault.kms_key_id };
        match copy::copy(target, &from, &to, config).await {
            Ok(()) => {
                return Ok(Outcome::Copied(Entry {
                    key: object.key.clone(),
                    version_id: object.version_id.clone(),
                    etag: object.etag.clone(),
                    size: object.size,
                    storage_class: object.storage_class.clone(),
                    last_modified: object.last_modified,
                    backed_up_at: at,
                    vault_key,
                }))
            }
            Err(e) if e.code == PRECONDITION_FAILED && object.version_id == "null" && attempt == 0 => {
                let head = source.head_object().bucket(bucket).key(&object.key).send().await;
                match head.map_err(|e| classify("s3:HeadObject", e)) {
                    Ok(head) => {
                        object.etag = head.e_tag().unwrap_or_default().to_string();
                        object.size = head.content_length().unwrap_or(object.size);
                        if let Some(modified) = head.last_modified().and_then(lifeboat_common::time::from_aws) {
                            object.last_modified = modified;
                        }
                    }
                    Err(e) if e.is_retryable() => return Err(e),
                    Err(e) => return Ok(skip_object(&object, &e.code, e.message)),
                }
            }
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) if e.code == PRECONDITION_FAILED => {
                let reason = "overwritten twice while it was being backed up: the next backup copies it".to_string();
                return Ok(skip_object(&object, CHANGED_DURING_BACKUP, reason));
            }
            Err(e) => {
                let reason = if e.message.is_empty() { format!("{} failed", e.operation) } else { e.message.clone() };
                return Ok(skip_object(&object, &e.code, reason));
            }
        }
    }
    unreachable!("the second attempt returns")
}

fn skip_object(object: &Object, code: &str, reason: String) -> Outcome {
    Outcome::Skipped(Skipped {
        key: object.key.clone(),
        version_id: object.version_id.clone(),
        size: object.size,
        storage_class: object.storage_class.clone(),
        code: code.to_string(),
        reason,
    })
}

/// HeadObject's `x-amz-restore`: a finished restore reads `ongoing-request="false", expiry-date=...`.
pub fn restored(restore: Option<&str>) -> bool {
    restore.is_some_and(|r| r.replace(' ', "").contains("ongoing-request=\"false\""))
}

/// The prefixes to list: the filter's (overlaps removed), or the whole bucket.
fn prefixes(filter: Option<&ObjectFilter>) -> Vec<String> {
    let mut wanted: Vec<String> = filter.map(|f| f.prefixes.clone()).unwrap_or_default();
    if wanted.is_empty() || wanted.iter().any(String::is_empty) {
        return vec![String::new()];
    }
    wanted.sort();
    let mut kept: Vec<String> = Vec::new();
    for prefix in wanted {
        if !kept.iter().any(|k| prefix.starts_with(k.as_str())) {
            kept.push(prefix);
        }
    }
    kept
}

/// Lists the bucket's current objects that the filter selects, with every version and delete
/// marker's time. ListObjectVersions serves unversioned buckets too (their objects have version
/// id `null`), so GetBucketVersioning is not needed (moto's answer to it does not parse).
async fn list(s3: &aws_sdk_s3::Client, bucket: &str, filter: Option<&ObjectFilter>) -> Result<Listing, AwsError> {
    let mut listing = Listing::default();
    for prefix in prefixes(filter) {
        list_versions(s3, bucket, &prefix, filter, &mut listing).await?;
    }
    Ok(listing)
}

fn time(at: Option<&aws_smithy_types::DateTime>) -> DateTime<Utc> {
    at.and_then(lifeboat_common::time::from_aws).unwrap_or_default()
}

fn class_or_standard(class: Option<&str>) -> String {
    match class {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => "STANDARD".to_string(),
    }
}

async fn list_versions(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    filter: Option<&ObjectFilter>,
    listing: &mut Listing,
) -> Result<(), AwsError> {
    let mut key_marker: Option<String> = None;
    let mut version_marker: Option<String> = None;
    let mut current = BTreeMap::new();
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .map_err(|e| classify("s3:ListObjectVersions", e))?;
        for version in page.versions() {
            let key = version.key().unwrap_or_default();
            let class = class_or_standard(version.storage_class().map(|c| c.as_str()));
            if !selected(filter, key, &class) {
                continue;
            }
            let last_modified = time(version.last_modified());
            listing.writes.push(last_modified);
            if version.version_id().is_some_and(|v| v != "null") {
                listing.versioned = true;
            }
            if version.is_latest() == Some(true) {
                current.insert(
                    key.to_string(),
                    Object {
                        key: key.to_string(),
                        version_id: version.version_id().unwrap_or("null").to_string(),
                        etag: version.e_tag().unwrap_or_default().to_string(),
                        size: version.size().unwrap_or_default(),
                        storage_class: class,
                        last_modified,
                    },
                );
            }
        }
        for marker in page.delete_markers() {
            listing.versioned = true;
            if selected_key(filter, marker.key().unwrap_or_default()) {
                listing.writes.push(time(marker.last_modified()));
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
        if key_marker.is_none() && version_marker.is_none() {
            break;
        }
    }
    listing.current.extend(current.into_values());
    Ok(())
}

/// The filter's key conditions alone (a delete marker has no storage class).
fn selected_key(filter: Option<&ObjectFilter>, key: &str) -> bool {
    let keys_only = filter.map(|f| ObjectFilter { storage_classes: Vec::new(), ..f.clone() });
    selected(keys_only.as_ref(), key, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn object(key: &str, version: &str, etag: &str, class: &str) -> Object {
        Object {
            key: key.into(),
            version_id: version.into(),
            etag: format!("\"{etag}\""),
            size: 3,
            storage_class: class.into(),
            last_modified: t(0),
        }
    }

    fn entry(o: &Object) -> Entry {
        Entry {
            key: o.key.clone(),
            version_id: o.version_id.clone(),
            etag: o.etag.clone(),
            size: o.size,
            storage_class: o.storage_class.clone(),
            last_modified: o.last_modified,
            backed_up_at: t(10),
            vault_key: format!("v/{}", o.key),
        }
    }

    #[test]
    fn filter_selects_by_prefix_exclusion_and_class() {
        let filter = ObjectFilter {
            prefixes: vec!["logs/".into(), "data/".into()],
            exclude_prefixes: vec!["logs/tmp/".into()],
            storage_classes: vec!["standard".into()],
        };
        assert!(selected(Some(&filter), "logs/a", "STANDARD"));
        assert!(selected(Some(&filter), "data/b", "STANDARD"));
        assert!(!selected(Some(&filter), "logs/tmp/a", "STANDARD"));
        assert!(!selected(Some(&filter), "other/a", "STANDARD"));
        assert!(!selected(Some(&filter), "logs/a", "GLACIER"));
        assert!(selected(None, "anything", "GLACIER"));
        assert!(selected(Some(&ObjectFilter::default()), "x", "DEEP_ARCHIVE"));
        assert!(selected_key(Some(&filter), "logs/a"));
    }

    #[test]
    fn overlapping_prefixes_are_listed_once() {
        let filter = ObjectFilter { prefixes: vec!["a/b/".into(), "a/".into(), "c/".into()], ..Default::default() };
        assert_eq!(prefixes(Some(&filter)), ["a/", "c/"]);
        assert_eq!(prefixes(None), [""]);
    }

    #[test]
    fn same_version_is_carried_over_and_others_copied() {
        let kept = object("a", "v1", "x", "STANDARD");
        let overwritten = object("b", "v1", "x", "STANDARD");
        let unversioned = object("c", "null", "x", "STANDARD");
        let previous_entries = [entry(&kept), entry(&overwritten), entry(&unversioned)];
        let by_key: HashMap<&str, &Entry> = previous_entries.iter().map(|e| (e.key.as_str(), e)).collect();
        assert_eq!(plan_object(&kept, &by_key), Plan::Carry(previous_entries[0].clone()));
        assert_eq!(plan_object(&object("b", "v2", "y", "STANDARD"), &by_key), Plan::Copy);
        assert_eq!(plan_object(&unversioned, &by_key), Plan::Carry(previous_entries[2].clone()));
        // An unversioned object rewritten: same "null" version id, another ETag.
        assert_eq!(plan_object(&object("c", "null", "z", "STANDARD"), &by_key), Plan::Copy);
        assert_eq!(plan_object(&object("new", "v1", "x", "STANDARD"), &by_key), Plan::Copy);
        assert_eq!(plan_object(&object("cold", "v1", "x", "GLACIER"), &by_key), Plan::Archived);
        assert_eq!(plan_object(&object("cold", "v1", "x", "DEEP_ARCHIVE"), &by_key), Plan::Archived);
        assert_eq!(plan_object(&object("ir", "v1", "x", "GLACIER_IR"), &by_key), Plan::Copy);
    }

    #[test]
    fn keys_gone_since_the_previous_index_are_deletions() {
        let mut previous = Index::new("g", "b", "1", "us-east-1", "r", t(10));
        previous.objects =
            vec![entry(&object("a", "v1", "x", "STANDARD")), entry(&object("gone", "v1", "x", "STANDARD"))];
        let now = [object("a", "v2", "y", "STANDARD")];
        let deleted = deletions(&previous, &now, None, t(20));
        assert_eq!(deleted, [Deleted { key: "gone".into(), version_id: "v1".into(), detected_at: t(20) }]);
        // A key the filter no longer selects is not a deletion.
        let filter = ObjectFilter { prefixes: vec!["a".into()], ..Default::default() };
        assert!(deletions(&previous, &now, Some(&filter), t(20)).is_empty());
    }

    #[test]
    fn pending_updates_are_writes_since_the_last_sync() {
        let listing = Listing { versioned: true, current: Vec::new(), writes: vec![t(1), t(5), t(6), t(9)] };
        assert_eq!(pending_updates(&listing, t(5), 0), 2);
        assert_eq!(pending_updates(&listing, t(5), 3), 5);
        assert_eq!(pending_updates(&listing, t(9), 0), 0);
    }

    #[test]
    fn restored_archives_are_copyable() {
        assert!(restored(Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"")));
        assert!(!restored(Some("ongoing-request=\"true\"")));
        assert!(!restored(None));
    }

    fn vault() -> S3Vault {
        S3Vault { bucket: "vault".into(), region: "us-west-2".into(), ..Default::default() }
    }

    #[test]
    fn a_full_backup_is_done_and_a_skipped_object_makes_it_partial() {
        let mut index = Index::new("g", "assets", "1", "us-east-1", "r", t(10));
        let copied = entry(&object("a", "v1", "x", "STANDARD"));
        let carried = Entry { backed_up_at: t(0), ..entry(&object("b", "v1", "x", "STANDARD")) };
        index.objects = vec![copied, carried];
        index.deleted = vec![Deleted { key: "c".into(), version_id: "v1".into(), detected_at: t(10) }];
        let Step::Done { message, created, .. } = result(&vault(), "g/assets/index/k.json", &index) else {
            panic!("not done")
        };
        assert_eq!(message, "2 objects (1 copied, 3 bytes), 1 deletions recorded");
        assert_eq!(created, ["s3://vault/g/assets/index/k.json"]);

        index.skipped.push(Skipped {
            key: "cold/x".into(),
            version_id: "v9".into(),
            size: 1,
            storage_class: "GLACIER".into(),
            code: ARCHIVED_STORAGE_CLASS.into(),
            reason: "in GLACIER".into(),
        });
        let Step::Partial { code, message, alert, .. } = result(&vault(), "g/assets/index/k.json", &index) else {
            panic!("not partial")
        };
        assert_eq!(code, PARTIAL_BACKUP);
        assert!(message.contains("1 objects of s3://assets not backed up (cold/x)"), "{message}");
        assert_eq!((alert.code.as_str(), alert.severity.as_str(), alert.count), (PARTIAL_BACKUP, "warning", 1));
        assert_eq!(alert.report_url, "s3://vault/g/assets/index/k.skipped.csv");
    }

    #[tokio::test]
    async fn an_unreadable_object_is_skipped_with_the_aws_code_and_throttling_is_retried() {
        use aws_sdk_s3::operation::copy_object::{CopyObjectError, CopyObjectOutput};
        use aws_sdk_s3::operation::head_object::HeadObjectOutput;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        use aws_smithy_types::error::ErrorMetadata;

        let fails = |code: &'static str| {
            move || {
                CopyObjectError::generic(ErrorMetadata::builder().code(code).message(format!("mocked {code}")).build())
            }
        };
        let denied = mock!(aws_sdk_s3::Client::copy_object)
            .match_requests(|r| r.key().is_some_and(|k| k.ends_with("/secret.txt")))
            .then_error(fails("AccessDenied"));
        let busy = mock!(aws_sdk_s3::Client::copy_object)
            .match_requests(|r| r.key().is_some_and(|k| k.ends_with("/busy.txt")))
            .then_error(fails("SlowDown"));
        let copied = mock!(aws_sdk_s3::Client::copy_object).then_output(|| CopyObjectOutput::builder().build());
        let restored_head =
            mock!(aws_sdk_s3::Client::head_object).match_requests(|r| r.key() == Some("thawed.log")).then_output(
                || HeadObjectOutput::builder().restore("ongoing-request=\"false\", expiry-date=\"x\"").build(),
            );
        let frozen_head = mock!(aws_sdk_s3::Client::head_object).then_output(|| HeadObjectOutput::builder().build());
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&denied, &busy, &copied, &restored_head, &frozen_head]);
        let config = S3Config::default();
        let back = |o: Object, archived: bool| {
            let (s3, config) = (s3.clone(), config.clone());
            async move { back_up(&config, &s3, &s3, &vault(), "g", "src", &o, archived, t(10)).await }
        };

        let Ok(Outcome::Skipped(skipped)) = back(object("secret.txt", "v1", "x", "STANDARD"), false).await else {
            panic!("AccessDenied skips the object")
        };
        assert_eq!((skipped.code.as_str(), skipped.reason.as_str()), ("AccessDenied", "mocked AccessDenied"));
        let error = back(object("busy.txt", "v1", "x", "STANDARD"), false).await.err().expect("SlowDown is the task's");
        assert!(error.is_retryable(), "{error:?}");
        let Ok(Outcome::Copied(entry)) = back(object("fine.txt", "v1", "x", "STANDARD"), false).await else {
            panic!("copied")
        };
        assert_eq!((entry.vault_key.as_str(), entry.backed_up_at), ("g/src/data/v1/fine.txt", t(10)));
        let Ok(Outcome::Copied(_)) = back(object("thawed.log", "v1", "x", "GLACIER"), true).await else {
            panic!("a restored archive is copied")
        };
        let Ok(Outcome::Skipped(skipped)) = back(object("frozen.log", "v1", "x", "GLACIER"), true).await else {
            panic!("an archived object is skipped")
        };
        assert_eq!(skipped.code, ARCHIVED_STORAGE_CLASS);
        assert!(skipped.reason.contains("GLACIER"), "{}", skipped.reason);
    }

    #[tokio::test]
    async fn an_unversioned_object_overwritten_after_the_listing_is_copied_as_it_now_is() {
        use aws_sdk_s3::operation::copy_object::{CopyObjectError, CopyObjectOutput};
        use aws_sdk_s3::operation::head_object::HeadObjectOutput;
        use aws_smithy_mocks::{mock, mock_client, RuleMode};
        use aws_smithy_types::error::ErrorMetadata;

        // What S3 does with x-amz-copy-source-if-match (moto ignores it): 412 once the
        // object's ETag is no longer the listed one.
        let stale = || {
            CopyObjectError::generic(
                ErrorMetadata::builder().code("PreconditionFailed").message("At least one condition failed").build(),
            )
        };
        let refused = mock!(aws_sdk_s3::Client::copy_object)
            .match_requests(|r| r.copy_source_if_match() == Some("\"old\""))
            .then_error(stale);
        let copied = mock!(aws_sdk_s3::Client::copy_object)
            .match_requests(|r| r.copy_source_if_match() == Some("\"new\""))
            .then_output(|| CopyObjectOutput::builder().build());
        let head = mock!(aws_sdk_s3::Client::head_object)
            .match_requests(|r| r.key() == Some("page.html"))
            .then_output(|| HeadObjectOutput::builder().e_tag("\"new\"").content_length(7).build());
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&refused, &copied, &head]);
        let config = S3Config::default();
        let page = object("page.html", "null", "old", "STANDARD");
        let Ok(Outcome::Copied(entry)) = back_up(&config, &s3, &s3, &vault(), "g", "src", &page, false, t(10)).await
        else {
            panic!("copied after the second look")
        };
        assert_eq!((entry.etag.as_str(), entry.size), ("\"new\"", 7), "the index describes the bytes copied");
        assert_eq!(entry.vault_key, "g/src/data/e-new/page.html");
        assert_eq!((refused.num_calls(), copied.num_calls(), head.num_calls()), (1, 1, 1));

        // Overwritten again before the second copy: skipped, for the next backup.
        let again = mock!(aws_sdk_s3::Client::copy_object).then_error(stale);
        let head = mock!(aws_sdk_s3::Client::head_object)
            .then_output(|| HeadObjectOutput::builder().e_tag("\"newer\"").content_length(7).build());
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&again, &head]);
        let Ok(Outcome::Skipped(skipped)) = back_up(&config, &s3, &s3, &vault(), "g", "src", &page, false, t(10)).await
        else {
            panic!("skipped")
        };
        assert_eq!(skipped.code, CHANGED_DURING_BACKUP);
        assert_eq!(again.num_calls(), 2);
    }
}
