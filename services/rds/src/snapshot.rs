//! The snapshot a restore starts from when it is not the backup itself: a copy in the target
//! region (`lifeboat-<task id>`, recorded in the task's progress as AWS accepts it, so later
//! steps check it by id), and for another account the source account's snapshot (or such a
//! copy, when the backup is automated, in another region or to be re-encrypted) shared with the
//! target account.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_rds::types::Tag;
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::quota::{self, Cap, QuotaConfig, Quotas};
use lifeboat_common::restore::{lifeboat_tags, progress_key, Progress, Step};
use lifeboat_common::shared::SharedStore;
use lifeboat_proto::{Backup, RdsTarget, RestoreTask};

use crate::checks::group;
use crate::{already_exists, is_ours, name_taken, not_visible, settings, Context};

pub use lifeboat_common::subjects::TAG_RESTORE_COPY;

/// The progress role of the snapshot copy a task made.
pub const COPY: &str = "copy";

/// How long a copy slot outlives a holder that died without giving it back: the longest a
/// task waits for its copy (720 checks of 30 s).
const COPY_LEASE: Duration = Duration::from_secs(6 * 3600);

/// The RDS copy cap (`rds.copies`, 20 in flight per account and destination region), held in
/// the bus's shared store so that every replica counts the same copies.
pub struct Copies {
    quotas: Arc<Quotas>,
    store: Arc<dyn SharedStore>,
}

impl Copies {
    pub fn new(store: Arc<dyn SharedStore>, config: QuotaConfig) -> Self {
        Self { quotas: Quotas::new(store.clone(), config), store }
    }

    /// Takes a slot for the task's copy into `account` and `region` (kept if already held), or
    /// a retryable error while the cap is full. Restores' and backups' copies share it.
    pub(crate) async fn take(
        &self,
        task: &RestoreTask,
        account: &str,
        region: &str,
        progress: &mut Progress,
    ) -> Result<(), AwsError> {
        let slot = Quotas::slot_key(Cap::RdsCopies, account, region);
        let taken = self.quotas.acquire(&slot, Cap::RdsCopies, &progress_key(task), COPY_LEASE).await;
        match taken.map_err(|e| AwsError::retryable("rds:CopyDBSnapshot", "QuotaStoreUnavailable", e.to_string()))? {
            true => {
                progress.hold(&slot);
                Ok(())
            }
            false => {
                let limit = self.quotas.config().limit(Cap::RdsCopies);
                Err(AwsError::slot_full(
                    "rds:CopyDBSnapshot",
                    "CopyLimitInFlight",
                    format!("{limit} RDS snapshot copies in flight to {region} in {account} (the limit)"),
                    &slot,
                    limit as usize,
                ))
            }
        }
    }

    /// Gives the task's slot back once its copy is done (or was never started).
    pub(crate) async fn give_back(&self, task: &RestoreTask, account: &str, region: &str, progress: &mut Progress) {
        let slot = Quotas::slot_key(Cap::RdsCopies, account, region);
        if !progress.slots.contains(&slot) {
            return;
        }
        match quota::release(self.store.as_ref(), &slot, &progress_key(task)).await {
            Ok(()) => progress.slots.retain(|held| held != &slot),
            // Kept in the progress: the shell gives it back when the task ends.
            Err(e) => tracing::warn!(error = %e, slot = %slot, "cannot give a copy slot back yet"),
        }
    }
}

fn copy_tags(task: &RestoreTask) -> Vec<Tag> {
    let mut tags = lifeboat_tags(task);
    tags.push((TAG_RESTORE_COPY.to_string(), "true".to_string()));
    tags.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

pub fn copy_id(task: &RestoreTask) -> String {
    format!("lifeboat-{}", task.task_id)
}

fn is_automated(backup: &Backup) -> bool {
    backup.settings.get(settings::SNAPSHOT_TYPE).map(String::as_str) == Some("automated")
        || backup.backup_id.starts_with("rds:")
}

/// RDS's "that snapshot identifier is taken" codes (wire and model names).
const COPY_EXISTS: &[&str] = &[
    "DBSnapshotAlreadyExists",
    "DBSnapshotAlreadyExistsFault",
    "DBClusterSnapshotAlreadyExistsFault",
    "DBClusterSnapshotAlreadyExists",
];

/// Where a copy stands, once seen.
enum Copy {
    Available,
    Pending(String),
    Failed,
}

fn copy_status(status: Option<&str>) -> Copy {
    match status.unwrap_or("creating") {
        "available" => Copy::Available,
        "failed" | "error" => Copy::Failed,
        other => Copy::Pending(other.to_string()),
    }
}

/// A copy that exists, as the task's: its standing, or a failure when someone else's holds the name.
fn seen_copy(
    task: &RestoreTask,
    tags: &[Tag],
    status: Option<&str>,
    copy_id: &str,
    region: &str,
) -> Result<Copy, Step> {
    if !is_ours(tags, &task.task_id) {
        return Err(name_taken(
            &format!("snapshot {copy_id} in {region}"),
            "delete or rename that snapshot (Lifeboat names its copies lifeboat-<task id>)",
        ));
    }
    Ok(copy_status(status))
}

/// Everything a copy step needs to know about where the copy goes.
struct CopyPlace<'a> {
    rds: &'a aws_sdk_rds::Client,
    /// The account that makes and owns the copy, in the target region.
    account: &'a str,
    region: &'a str,
}

/// The backup copied (in the target region) as `lifeboat-<task>`, or the step to report while
/// it is on its way. The copy is checked by id once recorded (or in the crash window); a slot of
/// the shared cap is held from the copy call until it is seen done.
async fn instance_copy_step(
    cx: &Context,
    place: CopyPlace<'_>,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<String, Step>, AwsError> {
    let copy_id = copy_id(task);
    let batch = group(place.account, place.region);
    let look = progress.may_exist(COPY, attempt);
    let found = if look { cx.checks.snapshot(&batch, place.rds, &copy_id).await? } else { None };
    let snapshot = match found {
        Some(found) => found,
        None => {
            cx.copies.take(task, place.account, place.region, progress).await?;
            let source_arn =
                format!("arn:aws:rds:{}:{}:snapshot:{}", backup.region, backup.account_id, backup.backup_id);
            let copied = place
                .rds
                .copy_db_snapshot()
                .source_db_snapshot_identifier(source_arn)
                .target_db_snapshot_identifier(&copy_id)
                .set_kms_key_id((!target.kms_key_id.is_empty()).then(|| target.kms_key_id.clone()))
                .set_tags(Some(copy_tags(task)))
                .send()
                .await
                .map_err(|e| classify("rds:CopyDBSnapshot", e));
            match copied {
                Ok(_) => {
                    progress.record(COPY, &copy_id);
                    return Ok(Err(Step::Waiting {
                        what: format!("copying {} to {} as {copy_id}", backup.backup_id, place.region),
                        created: vec![copy_id],
                    }));
                }
                // A duplicate delivery's copy, or someone else's snapshot of that name: read it again.
                Err(e) if already_exists(&e, COPY_EXISTS) => cx
                    .checks
                    .snapshot(&batch, place.rds, &copy_id)
                    .await?
                    .ok_or_else(|| not_visible("rds:CopyDBSnapshot", e))?,
                Err(e) => {
                    cx.copies.give_back(task, place.account, place.region, progress).await;
                    return Err(e);
                }
            }
        }
    };
    let standing = match seen_copy(task, snapshot.tag_list(), snapshot.status(), &copy_id, place.region) {
        Ok(standing) => standing,
        Err(step) => return Ok(Err(step)),
    };
    progress.record(COPY, &copy_id);
    match standing {
        Copy::Available => {
            cx.copies.give_back(task, place.account, place.region, progress).await;
            Ok(Ok(copy_id))
        }
        Copy::Failed => {
            cx.copies.give_back(task, place.account, place.region, progress).await;
            Ok(Err(Step::Failed {
                code: "SnapshotCopyFailed".into(),
                message: format!("copy {copy_id} of {} failed", backup.backup_id),
            }))
        }
        Copy::Pending(status) => Ok(Err(Step::Waiting {
            what: format!("snapshot copy {copy_id} is {status}"),
            created: vec![copy_id.clone()],
        })),
    }
}

/// Same account, another region: the copy's identifier once it is available.
pub async fn copied_instance_snapshot(
    cx: &Context,
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<String, Step>, AwsError> {
    let place = CopyPlace { rds, account: &target.account_id, region: &target.region };
    instance_copy_step(cx, place, task, backup, target, attempt, progress).await
}

/// Another account: the ARN of a source-account snapshot in the target region shared with the
/// target account. Automated snapshots cannot be shared, nor can a snapshot be shared into
/// another region or re-encrypted in place, so those are copied first (with the target's key).
pub async fn shared_instance_snapshot(
    cx: &Context,
    source: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<String, Step>, AwsError> {
    let needs_copy =
        is_automated(backup) || backup.region != target.region || (backup.encrypted && !target.kms_key_id.is_empty());
    let snapshot_id = if needs_copy {
        let place = CopyPlace { rds: source, account: &backup.account_id, region: &target.region };
        match instance_copy_step(cx, place, task, backup, target, attempt, progress).await? {
            Ok(copy) => copy,
            Err(step) => return Ok(Err(step)),
        }
    } else {
        backup.backup_id.clone()
    };
    source
        .modify_db_snapshot_attribute()
        .db_snapshot_identifier(&snapshot_id)
        .attribute_name("restore")
        .values_to_add(&target.account_id)
        .send()
        .await
        .map_err(|e| classify("rds:ModifyDBSnapshotAttribute", e))?;
    Ok(Ok(format!("arn:aws:rds:{}:{}:snapshot:{snapshot_id}", target.region, backup.account_id)))
}

/// Another account, same region: the ARN of the cluster snapshot (or of a manual copy of an
/// automated one, or one re-encrypted with the target's key) shared with the target account.
/// A same-region copy, so outside the cross-region copy cap.
pub async fn shared_cluster_snapshot(
    cx: &Context,
    source: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<String, Step>, AwsError> {
    let needs_copy = is_automated(backup) || (backup.encrypted && !target.kms_key_id.is_empty());
    let snapshot_id = if needs_copy {
        match cluster_copy_step(cx, source, task, backup, target, attempt, progress).await? {
            Ok(copy) => copy,
            Err(step) => return Ok(Err(step)),
        }
    } else {
        backup.backup_id.clone()
    };
    source
        .modify_db_cluster_snapshot_attribute()
        .db_cluster_snapshot_identifier(&snapshot_id)
        .attribute_name("restore")
        .values_to_add(&target.account_id)
        .send()
        .await
        .map_err(|e| classify("rds:ModifyDBClusterSnapshotAttribute", e))?;
    Ok(Ok(format!("arn:aws:rds:{}:{}:cluster-snapshot:{snapshot_id}", target.region, backup.account_id)))
}

/// The source account's copy of a cluster snapshot, made to be shared, as the instance copy
/// step does it: checked by id once recorded, adopted when a duplicate made it first.
async fn cluster_copy_step(
    cx: &Context,
    source: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<String, Step>, AwsError> {
    let copy_id = copy_id(task);
    let batch = group(&backup.account_id, &target.region);
    let look = progress.may_exist(COPY, attempt);
    let found = if look { cx.checks.cluster_snapshot(&batch, source, &copy_id).await? } else { None };
    let snapshot = match found {
        Some(found) => found,
        None => {
            let copied = source
                .copy_db_cluster_snapshot()
                .source_db_cluster_snapshot_identifier(&backup.backup_id)
                .target_db_cluster_snapshot_identifier(&copy_id)
                .set_kms_key_id((!target.kms_key_id.is_empty()).then(|| target.kms_key_id.clone()))
                .set_tags(Some(copy_tags(task)))
                .send()
                .await
                .map_err(|e| classify("rds:CopyDBClusterSnapshot", e));
            match copied {
                Ok(_) => {
                    progress.record(COPY, &copy_id);
                    return Ok(Err(Step::Waiting {
                        what: format!("copying {} as {copy_id} to share it", backup.backup_id),
                        created: vec![copy_id],
                    }));
                }
                Err(e) if already_exists(&e, COPY_EXISTS) => cx
                    .checks
                    .cluster_snapshot(&batch, source, &copy_id)
                    .await?
                    .ok_or_else(|| not_visible("rds:CopyDBClusterSnapshot", e))?,
                Err(e) => return Err(e),
            }
        }
    };
    match seen_copy(task, snapshot.tag_list(), snapshot.status(), &copy_id, &target.region) {
        Err(step) => Ok(Err(step)),
        Ok(standing) => {
            progress.record(COPY, &copy_id);
            Ok(match standing {
                Copy::Available => Ok(copy_id),
                Copy::Failed => Err(Step::Failed {
                    code: "SnapshotCopyFailed".into(),
                    message: format!("copy {copy_id} of {} failed", backup.backup_id),
                }),
                Copy::Pending(status) => Err(Step::Waiting {
                    what: format!("cluster snapshot copy {copy_id} is {status}"),
                    created: vec![copy_id.clone()],
                }),
            })
        }
    }
}
