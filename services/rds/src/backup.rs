//! RDS backups: a manual DB snapshot of an instance (or a cluster snapshot of an Aurora
//! cluster) named `lifeboat-<task id>` and tagged with its recovery point tags, then its copies,
//! one per destination of the rule: in the destination region, and for another account shared
//! with it first and copied there. Every snapshot is checked by identifier through the batched
//! Describe calls once recorded (the deterministic name makes the crash window a lookup by id,
//! and AlreadyExists of a snapshot carrying our task tag an adoption); cross-region copies hold
//! a slot of the copy cap shared with the restore side's copies.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_rds::types::{DbClusterSnapshot, DbSnapshot, Tag};
use chrono::Utc;
use lifeboat_common::aws::{classify, rds_client, Accounts, AwsError};
use lifeboat_common::backup::{copy_account, copy_role, past_completion_window, recovery_point_tags, ROLE_POINT};
use lifeboat_common::quota::{self, Cap, QuotaConfig, Quotas};
use lifeboat_common::restore::{progress_key, Progress, Step};
use lifeboat_common::shared::SharedStore;
use lifeboat_proto::{BackupTask, CopyDestination, ResourceType, RestoreTask};

use crate::checks::group;
use crate::{already_exists, is_ours, name_taken, not_visible, Context};

/// How long a copy slot outlives a holder that died without giving it back: as long as the
/// restore side's (a task waits at most 720 checks of 30 s).
const COPY_LEASE: Duration = Duration::from_secs(6 * 3600);

/// RDS's "that snapshot identifier is taken" codes (wire and model names).
const SNAPSHOT_EXISTS: &[&str] = &[
    "DBSnapshotAlreadyExists",
    "DBSnapshotAlreadyExistsFault",
    "DBClusterSnapshotAlreadyExistsFault",
    "DBClusterSnapshotAlreadyExists",
];

/// The identifier of a task's snapshot, and of each of its copies (each in its own account and
/// region): valid for RDS (a letter first, no double hyphen), the same on every delivery.
pub fn snapshot_id(task: &RestoreTask) -> String {
    crate::snapshot::copy_id(task)
}

/// The copy cap's slots of backup copies: the same records (`rds.copies` per account and
/// destination region, held by the task's progress key) the restore side's copies take, so
/// both count against one limit.
pub struct CopySlots {
    quotas: Arc<Quotas>,
    store: Arc<dyn SharedStore>,
}

impl CopySlots {
    pub fn new(store: Arc<dyn SharedStore>, config: QuotaConfig) -> Self {
        Self { quotas: Quotas::new(store.clone(), config), store }
    }

    /// Takes (or keeps) the task's slot for a copy into `account` and `region`, or a retryable
    /// error while the cap is full.
    async fn take(
        &self,
        task: &RestoreTask,
        account: &str,
        region: &str,
        progress: &mut Progress,
    ) -> Result<(), AwsError> {
        let slot = Quotas::slot_key(Cap::RdsCopies, account, region);
        let taken = self.quotas.acquire(&slot, Cap::RdsCopies, &progress_key(task), COPY_LEASE).await;
        if taken.map_err(|e| AwsError::retryable("rds:CopyDBSnapshot", "QuotaStoreUnavailable", e.to_string()))? {
            progress.hold(&slot);
            return Ok(());
        }
        Err(AwsError::retryable(
            "rds:CopyDBSnapshot",
            "CopyLimitInFlight",
            format!(
                "{} RDS snapshot copies in flight to {region} in {account} (the limit)",
                self.quotas.config().limit(Cap::RdsCopies)
            ),
        ))
    }

    /// Gives the slot back once the copy is done (or never started); one not given back now
    /// stays in the progress and the shell gives it back when the task ends.
    async fn give_back(&self, task: &RestoreTask, account: &str, region: &str, progress: &mut Progress) {
        let slot = Quotas::slot_key(Cap::RdsCopies, account, region);
        if !progress.slots.contains(&slot) {
            return;
        }
        match quota::release(self.store.as_ref(), &slot, &progress_key(task)).await {
            Ok(()) => progress.slots.retain(|held| held != &slot),
            Err(e) => tracing::warn!(error = %e, slot = %slot, "cannot give a copy slot back yet"),
        }
    }
}

/// Instance snapshots and cluster snapshots, told apart only where their calls differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Instance,
    Cluster,
}

impl Kind {
    fn of(task: &RestoreTask) -> Kind {
        if task.resource_type == ResourceType::RdsCluster as i32 {
            Kind::Cluster
        } else {
            Kind::Instance
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Instance => "DB snapshot",
            Kind::Cluster => "DB cluster snapshot",
        }
    }

    /// The ARN of snapshot `id` in `account` and `region`.
    fn arn(self, region: &str, account: &str, id: &str) -> String {
        let kind = match self {
            Kind::Instance => "snapshot",
            Kind::Cluster => "cluster-snapshot",
        };
        format!("arn:aws:rds:{region}:{account}:{kind}:{id}")
    }
}

/// A snapshot as the Describe call showed it.
struct Seen {
    status: String,
    arn: Option<String>,
    ours: bool,
}

impl Seen {
    fn instance(snapshot: DbSnapshot, task: &RestoreTask) -> Seen {
        Seen {
            status: snapshot.status().unwrap_or("creating").to_string(),
            arn: snapshot.db_snapshot_arn().map(str::to_string),
            ours: is_ours(snapshot.tag_list(), &task.task_id),
        }
    }

    fn cluster(snapshot: DbClusterSnapshot, task: &RestoreTask) -> Seen {
        Seen {
            status: snapshot.status().unwrap_or("creating").to_string(),
            arn: snapshot.db_cluster_snapshot_arn().map(str::to_string),
            ours: is_ours(snapshot.tag_list(), &task.task_id),
        }
    }
}

/// The snapshot `id` in the batch group's account and region, by identifier.
async fn look(
    cx: &Context,
    kind: Kind,
    batch: &str,
    rds: &aws_sdk_rds::Client,
    id: &str,
    task: &RestoreTask,
) -> Result<Option<Seen>, AwsError> {
    Ok(match kind {
        Kind::Instance => cx.checks.snapshot(batch, rds, id).await?.map(|s| Seen::instance(s, task)),
        Kind::Cluster => cx.checks.cluster_snapshot(batch, rds, id).await?.map(|s| Seen::cluster(s, task)),
    })
}

fn rds_tags(tags: Vec<(String, String)>) -> Vec<Tag> {
    tags.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// Where a snapshot stands: `None` when available.
fn standing(what: &str, status: &str, created: &[String]) -> Option<Step> {
    match status {
        "available" => None,
        "failed" | "error" => {
            Some(Step::Failed { code: "SnapshotFailed".into(), message: format!("{what} is {status}") })
        }
        other => Some(Step::Waiting { what: format!("{what} is {other}"), created: created.to_vec() }),
    }
}

/// One step of an RDS backup: the task's snapshot until it is available, then its copies
/// (started together, waited for together), then done with every identifier.
pub async fn step(
    accounts: &Accounts,
    cx: &Context,
    task: &RestoreTask,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    if let Some(late) = past_completion_window(task, Utc::now()) {
        return Ok(late);
    }
    let job = task.backup_task.clone().unwrap_or_default();
    let kind = Kind::of(task);
    let config = accounts.config_for(&job.account_id, &job.region).await?;
    let rds = rds_client(&config, &job.account_id, &job.region);
    let id = snapshot_id(task);
    let point = match point_step(cx, &rds, task, &job, attempt, progress).await? {
        Ok(point) => point,
        Err(step) => return Ok(step),
    };
    let mut created = vec![id.clone()];
    let (_, dropped) = recovery_point_tags(task, Utc::now(), None);
    let mut warnings = Vec::new();
    if !dropped.is_empty() {
        warnings.push(format!(
            "resource tags beyond {} per snapshot: {}",
            lifeboat_common::backup::MAX_TAGS,
            dropped.join(", ")
        ));
    }
    let (mut pending, mut copied) = (Vec::new(), Vec::new());
    let run = job.run.clone().unwrap_or_default();
    for destination in &run.copy_to {
        let account = copy_account(destination, &job.account_id);
        if account == job.account_id && destination.region == job.region {
            warnings.push(format!("copy to {} (the snapshot's own account and region)", destination.region));
            continue;
        }
        let source = Source { rds: &rds, kind, job: &job, id: &id, arn: &point };
        // Copies keep the point's identifier in their own account and region: named by ARN.
        let copy = kind.arn(&destination.region, account, &id);
        match copy_step(accounts, cx, task, &source, destination, attempt, progress).await? {
            Ok(()) => {
                created.push(copy);
                copied.push(format!("{} in {account}", destination.region));
            }
            Err(Step::Waiting { what, .. }) => {
                created.push(copy);
                pending.push(what);
            }
            Err(failed) => return Ok(failed),
        }
    }
    if !pending.is_empty() {
        return Ok(Step::Waiting { what: pending.join("; "), created });
    }
    let copies = if copied.is_empty() { String::new() } else { format!(", copied to {}", copied.join(", ")) };
    Ok(Step::Done {
        message: format!("{} {id} of {} is available{copies}", kind.what(), job.resource_id),
        created,
        warnings,
    })
}

/// The task's snapshot: its ARN once available, or the step to report until then.
async fn point_step(
    cx: &Context,
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    job: &BackupTask,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<String, Step>, AwsError> {
    let (kind, id) = (Kind::of(task), &snapshot_id(task));
    let batch = group(&job.account_id, &job.region);
    let found =
        if progress.may_exist(ROLE_POINT, attempt) { look(cx, kind, &batch, rds, id, task).await? } else { None };
    let seen = match found {
        Some(seen) => seen,
        None => {
            let (tags, _) = recovery_point_tags(task, Utc::now(), None);
            let created = match kind {
                Kind::Instance => rds
                    .create_db_snapshot()
                    .db_instance_identifier(&job.resource_id)
                    .db_snapshot_identifier(id)
                    .set_tags(Some(rds_tags(tags)))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify("rds:CreateDBSnapshot", e)),
                Kind::Cluster => rds
                    .create_db_cluster_snapshot()
                    .db_cluster_identifier(&job.resource_id)
                    .db_cluster_snapshot_identifier(id)
                    .set_tags(Some(rds_tags(tags)))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify("rds:CreateDBClusterSnapshot", e)),
            };
            match created {
                Ok(()) => {
                    progress.record(ROLE_POINT, id);
                    return Ok(Err(Step::Waiting {
                        what: format!("{} {id} of {} is being created", kind.what(), job.resource_id),
                        created: vec![id.to_string()],
                    }));
                }
                // A duplicate delivery's snapshot, or someone else's of that name: judged below.
                Err(e) if already_exists(&e, SNAPSHOT_EXISTS) => {
                    look(cx, kind, &batch, rds, id, task).await?.ok_or_else(|| not_visible(e.operation, e))?
                }
                // The resource gone since selection fails the task with AWS's code.
                Err(e) => return Err(e),
            }
        }
    };
    if !seen.ours {
        return Ok(Err(name_taken(
            &format!("{} {id} in {}", kind.what(), job.region),
            "delete or rename that snapshot (Lifeboat names its backups lifeboat-<task id>)",
        )));
    }
    progress.record(ROLE_POINT, id);
    let what = format!("{} {id} of {}", kind.what(), job.resource_id);
    if let Some(step) = standing(&what, &seen.status, &[id.to_string()]) {
        return Ok(Err(step));
    }
    Ok(Ok(seen.arn.unwrap_or_else(|| kind.arn(&job.region, &job.account_id, id))))
}

/// The recovery point a copy is made from.
struct Source<'a> {
    /// The source account's client in the source region (to share the point).
    rds: &'a aws_sdk_rds::Client,
    kind: Kind,
    job: &'a BackupTask,
    id: &'a str,
    arn: &'a str,
}

/// A copy that cannot be made fails the task; the point itself exists, and the message says so.
fn copy_failed(source: &Source<'_>, destination: &str, e: AwsError) -> Step {
    Step::Failed {
        code: e.code.clone(),
        message: format!(
            "cannot copy to {destination}: {e}; the recovery point {} exists in {}",
            source.id, source.job.region
        ),
    }
}

/// One copy of the point into `destination`: `Ok` once available, else the step to report.
async fn copy_step(
    accounts: &Accounts,
    cx: &Context,
    task: &RestoreTask,
    source: &Source<'_>,
    destination: &CopyDestination,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<(), Step>, AwsError> {
    let job = source.job;
    let (id, kind, region) = (source.id, source.kind, destination.region.as_str());
    let account = copy_account(destination, &job.account_id);
    let place = format!("{region} in {account}");
    let role = copy_role(destination, &job.account_id);
    let config = accounts.config_for(account, region).await?;
    let rds = rds_client(&config, account, region);
    let batch = group(account, region);
    let capped = region != job.region;
    let found = if progress.may_exist(&role, attempt) { look(cx, kind, &batch, &rds, id, task).await? } else { None };
    let seen = match found {
        Some(seen) => seen,
        None => {
            if account != job.account_id {
                if let Err(e) = share(source, account).await {
                    return if e.is_retryable() { Err(e) } else { Ok(Err(copy_failed(source, &place, e))) };
                }
            }
            if capped {
                cx.backup_copies.take(task, account, region, progress).await?;
            }
            let (tags, _) = recovery_point_tags(task, Utc::now(), Some((destination, id)));
            let kms = (!destination.kms_key_id.is_empty()).then(|| destination.kms_key_id.clone());
            let copied = match kind {
                Kind::Instance => rds
                    .copy_db_snapshot()
                    .source_db_snapshot_identifier(source.arn)
                    .target_db_snapshot_identifier(id)
                    .set_kms_key_id(kms)
                    .set_tags(Some(rds_tags(tags)))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify("rds:CopyDBSnapshot", e)),
                Kind::Cluster => rds
                    .copy_db_cluster_snapshot()
                    .source_db_cluster_snapshot_identifier(source.arn)
                    .target_db_cluster_snapshot_identifier(id)
                    .set_kms_key_id(kms)
                    .set_tags(Some(rds_tags(tags)))
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| classify("rds:CopyDBClusterSnapshot", e)),
            };
            match copied {
                Ok(()) => {
                    progress.record(&role, id);
                    return Ok(Err(Step::Waiting { what: format!("copying {id} to {place}"), created: Vec::new() }));
                }
                Err(e) if already_exists(&e, SNAPSHOT_EXISTS) => {
                    look(cx, kind, &batch, &rds, id, task).await?.ok_or_else(|| not_visible(e.operation, e))?
                }
                Err(e) => {
                    cx.backup_copies.give_back(task, account, region, progress).await;
                    return if e.is_retryable() { Err(e) } else { Ok(Err(copy_failed(source, &place, e))) };
                }
            }
        }
    };
    if !seen.ours {
        return Ok(Err(name_taken(
            &format!("{} {id} in {place}", kind.what()),
            "delete or rename that snapshot (Lifeboat names its copies lifeboat-<task id>)",
        )));
    }
    progress.record(&role, id);
    match standing(&format!("copy {id} in {place}"), &seen.status, &[]) {
        None => {
            cx.backup_copies.give_back(task, account, region, progress).await;
            Ok(Ok(()))
        }
        Some(Step::Failed { code, message }) => {
            cx.backup_copies.give_back(task, account, region, progress).await;
            let message = format!("{message}; the recovery point {id} exists in {}", job.region);
            Ok(Err(Step::Failed { code, message }))
        }
        Some(waiting) => Ok(Err(waiting)),
    }
}

/// Lets `account` copy the point (adding an account that already may is a no-op).
async fn share(source: &Source<'_>, account: &str) -> Result<(), AwsError> {
    match source.kind {
        Kind::Instance => source
            .rds
            .modify_db_snapshot_attribute()
            .db_snapshot_identifier(source.id)
            .attribute_name("restore")
            .values_to_add(account)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify("rds:ModifyDBSnapshotAttribute", e)),
        Kind::Cluster => source
            .rds
            .modify_db_cluster_snapshot_attribute()
            .db_cluster_snapshot_identifier(source.id)
            .attribute_name("restore")
            .values_to_add(account)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify("rds:ModifyDBClusterSnapshotAttribute", e)),
    }
}
