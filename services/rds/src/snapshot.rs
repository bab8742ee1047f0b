//! The snapshot a restore starts from when it is not the backup itself: a copy in the target
//! region (`lifeboat-<task id>`, so a repeated step finds it by identifier), and for another
//! account the source account's snapshot (or such a copy, when the backup is automated, in
//! another region or to be re-encrypted) shared with the target account.

use std::collections::{HashMap, HashSet};

use aws_sdk_rds::types::Tag;
use lifeboat_common::aws::{absent_if_not_found, classify, AwsError};
use lifeboat_common::restore::{lifeboat_tags, Step};
use lifeboat_proto::{Backup, RdsTarget, RestoreTask};
use tokio::sync::Mutex;

use crate::settings;

pub use lifeboat_common::subjects::TAG_RESTORE_COPY;

/// Copies in flight per destination region, as this process has seen them: a copy is counted
/// from its start until a step sees it available or failed (a restarted process counts each
/// copy again at its task's next check). Checked by identifier, never by listing snapshots.
pub struct Limits {
    pub max_copies_per_region: usize,
    in_flight: Mutex<HashMap<String, HashSet<String>>>,
}

impl Limits {
    pub fn new(max_copies_per_region: usize) -> Self {
        Self { max_copies_per_region, in_flight: Mutex::new(HashMap::new()) }
    }

    async fn seen(&self, region: &str, copy_id: &str, pending: bool) {
        let mut in_flight = self.in_flight.lock().await;
        let copies = in_flight.entry(region.to_string()).or_default();
        if pending {
            copies.insert(copy_id.to_string());
        } else {
            copies.remove(copy_id);
        }
    }

    /// Takes a slot for `copy_id`, or a retryable error while the region is full.
    async fn take(&self, region: &str, copy_id: &str) -> Result<(), AwsError> {
        let mut in_flight = self.in_flight.lock().await;
        let copies = in_flight.entry(region.to_string()).or_default();
        if copies.len() >= self.max_copies_per_region && !copies.contains(copy_id) {
            return Err(AwsError::retryable(
                "rds:CopyDBSnapshot",
                "CopyLimitInFlight",
                format!(
                    "{} snapshot copies in flight to {region} (limit {})",
                    copies.len(),
                    self.max_copies_per_region
                ),
            ));
        }
        copies.insert(copy_id.to_string());
        Ok(())
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

/// Where a copy stands, by its identifier.
enum Copy {
    Absent,
    Available,
    Pending(String),
    Failed,
}

async fn instance_copy(rds: &aws_sdk_rds::Client, copy_id: &str) -> Result<Copy, AwsError> {
    let described = rds.describe_db_snapshots().db_snapshot_identifier(copy_id).send().await;
    let found = absent_if_not_found(described.map_err(|e| classify("rds:DescribeDBSnapshots", e)), crate::NOT_FOUND)?;
    let Some(found) = found else { return Ok(Copy::Absent) };
    Ok(match found.db_snapshots().first().and_then(|s| s.status()).unwrap_or("creating") {
        "available" => Copy::Available,
        "failed" | "error" => Copy::Failed,
        other => Copy::Pending(other.to_string()),
    })
}

async fn cluster_copy(rds: &aws_sdk_rds::Client, copy_id: &str) -> Result<Copy, AwsError> {
    let described = rds.describe_db_cluster_snapshots().db_cluster_snapshot_identifier(copy_id).send().await;
    let found =
        absent_if_not_found(described.map_err(|e| classify("rds:DescribeDBClusterSnapshots", e)), crate::NOT_FOUND)?;
    let Some(found) = found else { return Ok(Copy::Absent) };
    Ok(match found.db_cluster_snapshots().first().and_then(|s| s.status()).unwrap_or("creating") {
        "available" => Copy::Available,
        "failed" | "error" => Copy::Failed,
        other => Copy::Pending(other.to_string()),
    })
}

/// The backup copied by `rds` (in the target region) as `lifeboat-<task>`, or the step to
/// report while it is on its way.
async fn instance_copy_step(
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    limits: &Limits,
) -> Result<Result<String, Step>, AwsError> {
    let copy_id = copy_id(task);
    match instance_copy(rds, &copy_id).await? {
        Copy::Available => {
            limits.seen(&target.region, &copy_id, false).await;
            return Ok(Ok(copy_id));
        }
        Copy::Failed => {
            limits.seen(&target.region, &copy_id, false).await;
            return Ok(Err(Step::Failed {
                code: "SnapshotCopyFailed".into(),
                message: format!("copy {copy_id} of {} failed", backup.backup_id),
            }));
        }
        Copy::Pending(status) => {
            limits.seen(&target.region, &copy_id, true).await;
            return Ok(Err(Step::Waiting {
                what: format!("snapshot copy {copy_id} is {status}"),
                created: vec![copy_id.clone()],
            }));
        }
        Copy::Absent => {}
    }
    limits.take(&target.region, &copy_id).await?;
    let source_arn = format!("arn:aws:rds:{}:{}:snapshot:{}", backup.region, backup.account_id, backup.backup_id);
    let copied = rds
        .copy_db_snapshot()
        .source_db_snapshot_identifier(source_arn)
        .target_db_snapshot_identifier(&copy_id)
        .set_kms_key_id((!target.kms_key_id.is_empty()).then(|| target.kms_key_id.clone()))
        .set_tags(Some(copy_tags(task)))
        .send()
        .await
        .map_err(|e| classify("rds:CopyDBSnapshot", e));
    if let Err(e) = copied {
        limits.seen(&target.region, &copy_id, false).await;
        return Err(e);
    }
    Ok(Err(Step::Waiting {
        what: format!("copying {} to {} as {copy_id}", backup.backup_id, target.region),
        created: vec![copy_id],
    }))
}

/// Same account, another region: the copy's identifier once it is available.
pub async fn copied_instance_snapshot(
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    limits: &Limits,
) -> Result<Result<String, Step>, AwsError> {
    instance_copy_step(rds, task, backup, target, limits).await
}

/// Another account: the ARN of a source-account snapshot in the target region shared with the
/// target account. Automated snapshots cannot be shared, nor can a snapshot be shared into
/// another region or re-encrypted in place, so those are copied first (with the target's key).
pub async fn shared_instance_snapshot(
    source: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    limits: &Limits,
) -> Result<Result<String, Step>, AwsError> {
    let needs_copy =
        is_automated(backup) || backup.region != target.region || (backup.encrypted && !target.kms_key_id.is_empty());
    let snapshot_id = if needs_copy {
        match instance_copy_step(source, task, backup, target, limits).await? {
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
pub async fn shared_cluster_snapshot(
    source: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
) -> Result<Result<String, Step>, AwsError> {
    let needs_copy = is_automated(backup) || (backup.encrypted && !target.kms_key_id.is_empty());
    let snapshot_id = if needs_copy {
        let copy_id = copy_id(task);
        match cluster_copy(source, &copy_id).await? {
            Copy::Available => copy_id,
            Copy::Failed => {
                return Ok(Err(Step::Failed {
                    code: "SnapshotCopyFailed".into(),
                    message: format!("copy {copy_id} of {} failed", backup.backup_id),
                }))
            }
            Copy::Pending(status) => {
                return Ok(Err(Step::Waiting {
                    what: format!("cluster snapshot copy {copy_id} is {status}"),
                    created: vec![copy_id.clone()],
                }))
            }
            Copy::Absent => {
                source
                    .copy_db_cluster_snapshot()
                    .source_db_cluster_snapshot_identifier(&backup.backup_id)
                    .target_db_cluster_snapshot_identifier(&copy_id)
                    .set_kms_key_id((!target.kms_key_id.is_empty()).then(|| target.kms_key_id.clone()))
                    .set_tags(Some(copy_tags(task)))
                    .send()
                    .await
                    .map_err(|e| classify("rds:CopyDBClusterSnapshot", e))?;
                return Ok(Err(Step::Waiting {
                    what: format!("copying {} as {copy_id} to share it", backup.backup_id),
                    created: vec![copy_id],
                }));
            }
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
