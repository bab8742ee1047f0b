//! What every backing-up service shares: the run id of a due time, the tags of a recovery point
//! (which make it self-describing: the retention sweep, `lifeboat backup list` and discovery read
//! plan, rule, expiry and lock from the point itself, never from a plan file that may have
//! changed since), and reading those tags back.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use lifeboat_proto::{Backup, BackupTask, CopyDestination, ResourceType, RestoreTask, Retention};
use sha2::{Digest, Sha256};

use crate::ids::MAX_REQUEST_ID_LEN;
use crate::subjects::{TAG_REQUEST_ID, TAG_SOURCE_RESOURCE, TAG_TASK_ID};

pub const TAG_PLAN: &str = "lifeboat:plan";
pub const TAG_RULE: &str = "lifeboat:rule";
/// RFC 3339, UTC. Absent on points of keep-last-N rules, which expire when newer points push
/// them out (the sweep reads `lifeboat:retention`).
pub const TAG_EXPIRES_AT: &str = "lifeboat:expires-at";
/// `days=30`, or `daily=7,weekly=4,monthly=12,yearly=0@Europe/Berlin`.
pub const TAG_RETENTION: &str = "lifeboat:retention";
/// NONE, GOVERNANCE or COMPLIANCE.
pub const TAG_LOCK: &str = "lifeboat:lock";
/// RFC 3339: the end of the lock's minimum retention; before it the lock holds.
pub const TAG_LOCK_UNTIL: &str = "lifeboat:lock-until";
/// On a copy: the recovery point it was copied from.
pub const TAG_COPY_OF: &str = "lifeboat:copy-of";
/// RFC 3339: when an EBS snapshot moves to the archive tier.
pub const TAG_COLD_AT: &str = "lifeboat:cold-at";

/// Reason codes of backup tasks (AWS error codes are reported as they are).
pub mod reason {
    /// The run's completion window ended before the backup was done.
    pub const COMPLETION_WINDOW_EXCEEDED: &str = "COMPLETION_WINDOW_EXCEEDED";
    /// The recovery point exists, with warnings: scripts that failed (crash-consistent
    /// instead of application-consistent), tags that did not fit, a copy that could not be made.
    pub const BACKUP_WARNINGS: &str = "BACKUP_WARNINGS";
}

/// The progress role of a task's recovery point in the source region.
pub const ROLE_POINT: &str = "point";

/// The account a copy goes to: its own, or the source's.
pub fn copy_account<'a>(destination: &'a CopyDestination, source_account: &'a str) -> &'a str {
    if destination.account_id.is_empty() {
        source_account
    } else {
        &destination.account_id
    }
}

/// The progress role of a task's copy into `destination`: `copy:<account>:<region>`.
pub fn copy_role(destination: &CopyDestination, source_account: &str) -> String {
    format!("copy:{}:{}", copy_account(destination, source_account), destination.region)
}

/// EC2 and RDS take at most 50 tags per resource.
pub const MAX_TAGS: usize = 50;

/// The request id of a backup run: its due id with `/` made `-` and `:` dropped, readable
/// (`prod-nightly-nightly-2026-12-03T010000Z`) and the same on every replica; a due id too long
/// for a request id keeps its head and gets a digest of the whole.
pub fn backup_run_id(due_id: &str) -> String {
    let id: String = due_id
        .chars()
        .filter(|c| *c != ':')
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    if id.len() <= MAX_REQUEST_ID_LEN {
        return id;
    }
    let digest = Sha256::digest(due_id.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", &id[..MAX_REQUEST_ID_LEN - hex.len() - 1])
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `lifeboat:retention` value of a retention.
pub fn format_retention(retention: &Retention) -> String {
    if retention.days > 0 {
        return format!("days={}", retention.days);
    }
    let zone = if retention.time_zone.is_empty() { "UTC" } else { retention.time_zone.as_str() };
    format!(
        "daily={},weekly={},monthly={},yearly={}@{zone}",
        retention.keep_daily, retention.keep_weekly, retention.keep_monthly, retention.keep_yearly
    )
}

/// Reads a `lifeboat:retention` value back; None for anything [`format_retention`] did not write.
pub fn parse_retention(value: &str) -> Option<Retention> {
    if let Some(days) = value.strip_prefix("days=") {
        return Some(Retention { days: days.parse().ok().filter(|d| *d > 0)?, ..Default::default() });
    }
    let (counts, zone) = value.split_once('@')?;
    let mut retention = Retention { time_zone: zone.to_string(), ..Default::default() };
    for part in counts.split(',') {
        let (name, count) = part.split_once('=')?;
        let count = count.parse().ok()?;
        match name {
            "daily" => retention.keep_daily = count,
            "weekly" => retention.keep_weekly = count,
            "monthly" => retention.keep_monthly = count,
            "yearly" => retention.keep_yearly = count,
            _ => return None,
        }
    }
    let any = retention.keep_daily + retention.keep_weekly + retention.keep_monthly + retention.keep_yearly > 0;
    any.then_some(retention)
}

/// When a point created at `created_at` under `retention` expires: for `days` rules only.
pub fn expires_at(retention: &Retention, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (retention.days > 0).then(|| created_at + TimeDelta::days(retention.days.into()))
}

/// The tags of a recovery point (or, with `copy`, of its copy into that destination), in the
/// order of precedence: the resource's own tags (`aws:` and `lifeboat:` keys left out), the
/// plan's tags, then Lifeboat's, which win. Lifeboat's and the plan's always fit; resource tags
/// beyond [`MAX_TAGS`] are left out and named in the second value, for a warning.
pub fn recovery_point_tags(
    task: &RestoreTask,
    created_at: DateTime<Utc>,
    copy: Option<(&CopyDestination, &str)>,
) -> (Vec<(String, String)>, Vec<String>) {
    let job = task.backup_task.clone().unwrap_or_default();
    let run = job.run.clone().unwrap_or_default();
    let mut ours = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        ours.insert(key.to_string(), value);
    };
    put(TAG_PLAN, run.plan.clone());
    put(TAG_RULE, run.rule.clone());
    put(TAG_REQUEST_ID, task.request_id.clone());
    put(TAG_TASK_ID, task.task_id.clone());
    put(TAG_SOURCE_RESOURCE, job.resource_id.clone());
    let retention = match copy {
        Some((destination, _)) => destination.retention.clone().unwrap_or_default(),
        None => run.retention.clone().unwrap_or_default(),
    };
    put(TAG_RETENTION, format_retention(&retention));
    if let Some(expiry) = expires_at(&retention, created_at) {
        put(TAG_EXPIRES_AT, rfc3339(expiry));
    }
    let lock = run.lock.clone().unwrap_or_default();
    if !lock.mode.is_empty() && lock.mode != "NONE" {
        put(TAG_LOCK, lock.mode.clone());
        put(TAG_LOCK_UNTIL, rfc3339(created_at + TimeDelta::days(lock.min_retention_days.into())));
    }
    let cold_after = run.options.as_ref().map_or(0, |o| o.cold_after_days);
    if cold_after > 0 && copy.is_none() {
        put(TAG_COLD_AT, rfc3339(created_at + TimeDelta::days(cold_after.into())));
    }
    if let Some((_, source_point)) = copy {
        put(TAG_COPY_OF, source_point.to_string());
    }
    let plan_tags: BTreeMap<_, _> = run.tags.iter().filter(|(k, _)| !reserved(k)).collect();
    let room = MAX_TAGS.saturating_sub(ours.len() + plan_tags.len());
    let resource_tags: BTreeMap<_, _> =
        job.resource_tags.iter().filter(|(k, _)| !reserved(k) && !plan_tags.contains_key(k)).collect();
    let dropped: Vec<String> = resource_tags.keys().skip(room).map(|k| k.to_string()).collect();
    let mut tags: BTreeMap<String, String> =
        resource_tags.into_iter().take(room).map(|(k, v)| (k.clone(), v.clone())).collect();
    tags.extend(plan_tags.into_iter().map(|(k, v)| (k.clone(), v.clone())));
    tags.extend(ours);
    (tags.into_iter().collect(), dropped)
}

fn reserved(key: &str) -> bool {
    key.starts_with("aws:") || key.starts_with("lifeboat:")
}

/// What a recovery point's tags say about it; None for anything Lifeboat's plans did not create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointTags {
    pub plan: String,
    pub rule: String,
    pub run: String,
    pub task_id: String,
    pub resource_id: String,
    pub retention: Option<Retention>,
    pub expires_at: Option<DateTime<Utc>>,
    /// NONE when the point has no lock.
    pub lock: String,
    pub lock_until: Option<DateTime<Utc>>,
    pub copy_of: Option<String>,
    pub cold_at: Option<DateTime<Utc>>,
}

impl PointTags {
    pub fn parse(tags: &HashMap<String, String>) -> Option<PointTags> {
        let time =
            |key: &str| tags.get(key).and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|t| t.with_timezone(&Utc));
        let text = |key: &str| tags.get(key).cloned().unwrap_or_default();
        let plan = tags.get(TAG_PLAN).filter(|p| !p.is_empty())?.clone();
        Some(PointTags {
            plan,
            rule: text(TAG_RULE),
            run: text(TAG_REQUEST_ID),
            task_id: text(TAG_TASK_ID),
            resource_id: text(TAG_SOURCE_RESOURCE),
            retention: tags.get(TAG_RETENTION).and_then(|v| parse_retention(v)),
            expires_at: time(TAG_EXPIRES_AT),
            lock: tags.get(TAG_LOCK).cloned().unwrap_or_else(|| "NONE".to_string()),
            lock_until: time(TAG_LOCK_UNTIL),
            copy_of: tags.get(TAG_COPY_OF).cloned(),
            cold_at: time(TAG_COLD_AT),
        })
    }
}

/// The task that backs up one resource in a run: its set is the rule, its id is derived from
/// the run and the resource (so a replanned run yields the same ids), and its `backup` names the
/// resource as the source, so status events and tables show what is being backed up.
pub fn task(request_id: &str, resource_type: ResourceType, job: BackupTask) -> RestoreTask {
    let run = job.run.clone().unwrap_or_default();
    let key = format!("{}:{}:{}:{}", resource_type.short_name(), job.account_id, job.region, job.resource_id);
    let include: Vec<String> =
        run.selection.iter().flat_map(|s| s.include_tags.iter()).map(|(k, v)| format!("{k}={v}")).collect();
    RestoreTask {
        request_id: request_id.to_string(),
        task_id: crate::ids::task_id(request_id, &run.rule, &key),
        set_name: run.rule.clone(),
        resource_type: resource_type as i32,
        backup: Some(Backup {
            resource_type: resource_type as i32,
            source_resource_id: job.resource_id.clone(),
            account_id: job.account_id.clone(),
            region: job.region.clone(),
            tags: job.resource_tags.clone(),
            size_gib: job.size_gib,
            ..Default::default()
        }),
        selection_reason: format!("backup rule {}/{} selects it ({})", run.plan, run.rule, include.join(", ")),
        backup_task: Some(job),
        ..Default::default()
    }
}

/// DynamoDB's on-demand backups take no tags, so a backup's recovery point tags are kept in the
/// shared store under this key (by its ARN); the backup's name, `lifeboat-<task id>`, marks it
/// as Lifeboat's.
pub fn point_tags_key(arn: &str) -> String {
    format!("point.{}", crate::shared::key_part(arn))
}

/// Records the tags of a recovery point that cannot carry its own (written once; a second
/// write of the same point keeps the first).
pub async fn save_point_tags(
    store: &dyn crate::shared::SharedStore,
    arn: &str,
    tags: &[(String, String)],
) -> crate::bus::Result<()> {
    let map: BTreeMap<_, _> = tags.iter().cloned().collect();
    let value = serde_json::to_vec(&map).map_err(|e| crate::bus::BusError::Store(e.to_string()))?;
    store.put_if(&point_tags_key(arn), value.into(), 0).await.map(|_| ())
}

/// The tags [`save_point_tags`] recorded for a point, if any.
pub async fn load_point_tags(
    store: &dyn crate::shared::SharedStore,
    arn: &str,
) -> crate::bus::Result<Option<HashMap<String, String>>> {
    let Some(found) = store.get(&point_tags_key(arn)).await? else { return Ok(None) };
    serde_json::from_slice(&found.value)
        .map(Some)
        .map_err(|e| crate::bus::BusError::Store(format!("{}: not recovery point tags: {e}", point_tags_key(arn))))
}

/// The name of a task's DynamoDB backup.
pub fn dynamodb_backup_name(task: &RestoreTask) -> String {
    format!("lifeboat-{}", task.task_id)
}

/// What every service checks of a backup task before its first step (the error becomes
/// INVALID_TASK): a resource type the service backs up, and the resource, account and region.
pub fn check_task(task: &RestoreTask, service: &str, kinds: &[ResourceType]) -> Result<(), String> {
    let job = task.backup_task.clone().unwrap_or_default();
    if !kinds.contains(&task.resource_type()) {
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str_name()).collect();
        return Err(format!(
            "backup task of resource type {} ({service} backs up {})",
            task.resource_type().as_str_name(),
            names.join(" or ")
        ));
    }
    let fields = [
        ("backup_task.resource_id", &job.resource_id),
        ("backup_task.account_id", &job.account_id),
        ("backup_task.region", &job.region),
    ];
    let missing: Vec<&str> = fields.iter().filter(|(_, v)| v.is_empty()).map(|(name, _)| *name).collect();
    if !missing.is_empty() {
        return Err(format!("backup task without {}", missing.join(", ")));
    }
    let copy_to = job.run.iter().flat_map(|run| &run.copy_to);
    if let Some(index) = copy_to.clone().position(|d| d.region.is_empty()) {
        return Err(format!("backup task without backup_task.run.copy_to[{index}].region"));
    }
    Ok(())
}

/// The backup a task takes, when it takes one.
pub fn backup_task(task: &RestoreTask) -> Option<&BackupTask> {
    task.backup_task.as_ref()
}

/// When the task's plan locks its EBS snapshots in EC2 too (`lock.snapshot_lock`): the mode
/// (`COMPLIANCE` or `GOVERNANCE`) and for how many days.
pub fn snapshot_lock(task: &RestoreTask) -> Option<(&str, u32)> {
    let lock = task.backup_task.as_ref()?.run.as_ref()?.lock.as_ref()?;
    let locking = lock.snapshot_lock && matches!(lock.mode.as_str(), "COMPLIANCE" | "GOVERNANCE");
    (locking && lock.min_retention_days > 0).then_some((lock.mode.as_str(), lock.min_retention_days))
}

/// The time by which the task's run must be done, if its rule has a completion window.
pub fn complete_by(task: &RestoreTask) -> Option<DateTime<Utc>> {
    let run = task.backup_task.as_ref()?.run.as_ref()?;
    let at = run.complete_by.as_ref()?;
    DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32)
}

/// The failure of a backup still not done when its run's completion window has ended.
pub fn past_completion_window(task: &RestoreTask, now: DateTime<Utc>) -> Option<crate::restore::Step> {
    let by = complete_by(task).filter(|by| now > *by)?;
    Some(crate::restore::Step::Failed {
        code: reason::COMPLETION_WINDOW_EXCEEDED.to_string(),
        message: format!("not done by {} (the rule's completion window)", rfc3339(by)),
    })
}
