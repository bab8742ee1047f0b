//! The RDS restore service: DB instances from DB snapshots (copied to the target region first
//! when needed) or to a point in time, and Aurora clusters from cluster snapshots or to a point
//! in time, with a writer instance. Idempotent by the deterministic target identifier: a
//! database of that name carrying our `lifeboat:task-id` tag is ours; anyone else's is a clear
//! failure. Once available, the security groups and tags asked for are put in place.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_rds::types::{DbCluster, DbInstance, Tag};
use lifeboat_common::aws::{absent_if_not_found, classify, Accounts, AwsError};
use lifeboat_common::bus::Bus;
use lifeboat_common::restore::{restored_tags, RestoreService, Restorer, ServiceConfig, Step};
use lifeboat_common::subjects::{self, TAG_TASK_ID};
use lifeboat_proto::{restore_task, Backup, RdsTarget, ResourceType, RestoreTask};

#[derive(Clone, Debug)]
pub struct RdsConfig {
    pub service: ServiceConfig,
    /// Cross-region snapshot copies in flight per destination region (AWS allows 20).
    pub max_copies_per_region: usize,
}

impl Default for RdsConfig {
    fn default() -> Self {
        Self { service: ServiceConfig::default(), max_copies_per_region: subjects::MAX_SNAPSHOT_COPIES_PER_REGION }
    }
}

pub type RdsService = RestoreService<RdsRestorer>;

/// The RDS service, ready to `run`.
pub fn service(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: RdsConfig) -> Arc<RdsService> {
    RestoreService::new(RdsRestorer { accounts, max_copies: config.max_copies_per_region }, bus, config.service)
}

pub struct RdsRestorer {
    accounts: Arc<Accounts>,
    max_copies: usize,
}

fn target_of(task: &RestoreTask) -> Option<&RdsTarget> {
    match &task.target {
        Some(restore_task::Target::Rds(target)) => Some(target),
        _ => None,
    }
}

#[async_trait]
impl Restorer for RdsRestorer {
    fn kind(&self) -> &'static str {
        "rds"
    }

    fn check(&self, task: &RestoreTask) -> Result<(), String> {
        match target_of(task) {
            Some(t)
                if task.backup.is_some()
                    && !t.name.is_empty()
                    && !t.db_subnet_group.is_empty()
                    && !t.account_id.is_empty()
                    && !t.region.is_empty() =>
            {
                Ok(())
            }
            _ => Err("task has no backup or no complete RDS target (account, region, name, DB subnet group)".into()),
        }
    }

    async fn step(&self, task: &RestoreTask, _attempt: u32) -> Result<Step, AwsError> {
        let target = target_of(task).cloned().unwrap_or_default();
        let config = self.accounts.config_as(&target.account_id, &target.region, &task.target_role_arn).await?;
        let rds = lifeboat_common::aws::rds_client(&config, &target.account_id, &target.region);
        if task.resource_type == ResourceType::RdsCluster as i32 {
            cluster_step(&rds, task, &target).await
        } else {
            instance_step(&rds, task, &target, self.max_copies).await
        }
    }
}

fn tags(task: &RestoreTask, target: &RdsTarget) -> Vec<Tag> {
    restored_tags(task, &target.tags).into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn is_ours(tag_list: &[Tag], task_id: &str) -> bool {
    tag_list.iter().any(|t| t.key() == Some(TAG_TASK_ID) && t.value() == Some(task_id))
}

/// RDS's "no such instance, cluster or snapshot" codes.
const NOT_FOUND: &[&str] = &[
    "DBInstanceNotFound",
    "DBInstanceNotFoundFault",
    "DBClusterNotFoundFault",
    "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault",
];

/// What a status means: done, still going, or failed.
fn by_status(what: &str, status: &str) -> Option<Step> {
    match status {
        "available" => None,
        "failed"
        | "storage-full"
        | "incompatible-restore"
        | "incompatible-parameters"
        | "incompatible-network"
        | "inaccessible-encryption-credentials"
        | "restore-error" => Some(Step::Failed {
            code: format!("RDS_{}", status.to_ascii_uppercase().replace('-', "_")),
            message: format!("{what} is {status}"),
        }),
        other => Some(Step::Waiting { what: format!("{what} is {other}"), created: Vec::new() }),
    }
}

async fn find_instance(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<DbInstance>, AwsError> {
    let described = rds.describe_db_instances().db_instance_identifier(id).send().await;
    let found = absent_if_not_found(described.map_err(|e| classify("rds:DescribeDBInstances", e)), NOT_FOUND)?;
    Ok(found.and_then(|output| output.db_instances().first().cloned()))
}

async fn find_cluster(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<DbCluster>, AwsError> {
    let described = rds.describe_db_clusters().db_cluster_identifier(id).send().await;
    let found = absent_if_not_found(described.map_err(|e| classify("rds:DescribeDBClusters", e)), NOT_FOUND)?;
    Ok(found.and_then(|output| output.db_clusters().first().cloned()))
}

/// One step of a DB instance restore.
pub async fn instance_step(
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    target: &RdsTarget,
    max_copies: usize,
) -> Result<Step, AwsError> {
    let backup = task.backup.clone().unwrap_or_default();
    let name = target.name.as_str();
    if let Some(db) = find_instance(rds, name).await? {
        if !is_ours(db.tag_list(), &task.task_id) {
            return Ok(Step::Failed {
                code: "DBInstanceAlreadyExists".into(),
                message: format!("DB instance {name} exists and was not restored by this task"),
            });
        }
        let what = format!("DB instance {name}");
        if let Some(step) = by_status(&what, db.db_instance_status().unwrap_or("creating")) {
            return Ok(with_created(step, name));
        }
        // Put the asked-for security groups in place if the restore did not.
        let current: Vec<&str> = db.vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id()).collect();
        let mut wanted: Vec<&str> = target.security_group_ids.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        let mut have = current.clone();
        have.sort_unstable();
        if !wanted.is_empty() && have != wanted {
            rds.modify_db_instance()
                .db_instance_identifier(name)
                .set_vpc_security_group_ids(Some(target.security_group_ids.clone()))
                .apply_immediately(true)
                .send()
                .await
                .map_err(|e| classify("rds:ModifyDBInstance", e))?;
            return Ok(Step::Waiting {
                what: format!("{what}: applying security groups"),
                created: vec![name.to_string()],
            });
        }
        if let Some(arn) = db.db_instance_arn() {
            rds.add_tags_to_resource()
                .resource_name(arn)
                .set_tags(Some(tags(task, target)))
                .send()
                .await
                .map_err(|e| classify("rds:AddTagsToResource", e))?;
        }
        return Ok(Step::Done {
            message: format!("{what} is available"),
            created: vec![name.to_string()],
            warnings: Vec::new(),
        });
    }
    let security_groups = (!target.security_group_ids.is_empty()).then(|| target.security_group_ids.clone());
    let class = (!target.instance_class.is_empty()).then(|| target.instance_class.clone());
    let zone = (!target.availability_zone.is_empty()).then(|| target.availability_zone.clone());
    if let Some(at) = &backup.restore_time {
        if backup.region != target.region || backup.account_id != target.account_id {
            return Ok(Step::Failed {
                code: "PITR_SAME_REGION_ONLY".into(),
                message: "point-in-time restores of DB instances are made in the source's account and region".into(),
            });
        }
        rds.restore_db_instance_to_point_in_time()
            .source_db_instance_identifier(&backup.source_resource_id)
            .target_db_instance_identifier(name)
            .restore_time(aws_smithy_types::DateTime::from_secs(at.seconds))
            .db_subnet_group_name(&target.db_subnet_group)
            .set_vpc_security_group_ids(security_groups)
            .set_db_instance_class(class)
            .set_availability_zone(zone)
            .set_tags(Some(tags(task, target)))
            .send()
            .await
            .map_err(|e| classify("rds:RestoreDBInstanceToPointInTime", e))?;
        return Ok(Step::Waiting {
            what: format!("DB instance {name} is being restored"),
            created: vec![name.to_string()],
        });
    }
    let snapshot = if backup.region == target.region && backup.account_id == target.account_id {
        backup.backup_id.clone()
    } else {
        match copy_step(rds, task, &backup, target, max_copies).await? {
            Ok(copy) => copy,
            Err(step) => return Ok(step),
        }
    };
    rds.restore_db_instance_from_db_snapshot()
        .db_instance_identifier(name)
        .db_snapshot_identifier(&snapshot)
        .db_subnet_group_name(&target.db_subnet_group)
        .set_vpc_security_group_ids(security_groups)
        .set_db_instance_class(class)
        .set_availability_zone(zone)
        .set_tags(Some(tags(task, target)))
        .send()
        .await
        .map_err(|e| classify("rds:RestoreDBInstanceFromDBSnapshot", e))?;
    Ok(Step::Waiting {
        what: format!("DB instance {name} is being restored from {snapshot}"),
        created: vec![name.to_string()],
    })
}

fn with_created(step: Step, id: &str) -> Step {
    match step {
        Step::Waiting { what, .. } => Step::Waiting { what, created: vec![id.to_string()] },
        other => other,
    }
}

/// The snapshot copied into the target region (`lifeboat-<task id>`, so a repeated step finds
/// it), or the step to report while it is on its way.
async fn copy_step(
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &RdsTarget,
    max_copies: usize,
) -> Result<Result<String, Step>, AwsError> {
    let copy_id = format!("lifeboat-{}", task.task_id);
    let described = rds.describe_db_snapshots().db_snapshot_identifier(&copy_id).send().await;
    if let Some(found) = absent_if_not_found(described.map_err(|e| classify("rds:DescribeDBSnapshots", e)), NOT_FOUND)?
    {
        let status = found.db_snapshots().first().and_then(|s| s.status()).unwrap_or("creating").to_string();
        return Ok(match status.as_str() {
            "available" => Ok(copy_id),
            "failed" | "error" => {
                Err(Step::Failed { code: "SnapshotCopyFailed".into(), message: format!("copy {copy_id} failed") })
            }
            other => Err(Step::Waiting {
                what: format!("snapshot copy {copy_id} is {other}"),
                created: vec![copy_id.clone()],
            }),
        });
    }
    // Counted in AWS: copies Lifeboat started that are not available yet.
    let pending = rds
        .describe_db_snapshots()
        .snapshot_type("manual")
        .send()
        .await
        .map_err(|e| classify("rds:DescribeDBSnapshots", e))?
        .db_snapshots()
        .iter()
        .filter(|s| {
            s.db_snapshot_identifier().is_some_and(|id| id.starts_with("lifeboat-")) && s.status() != Some("available")
        })
        .count();
    if pending >= max_copies {
        return Err(AwsError::retryable(
            "rds:CopyDBSnapshot",
            "CopyLimitInFlight",
            format!("{pending} snapshot copies in flight to {}", target.region),
        ));
    }
    let source_arn = format!("arn:aws:rds:{}:{}:snapshot:{}", backup.region, backup.account_id, backup.backup_id);
    rds.copy_db_snapshot()
        .source_db_snapshot_identifier(source_arn)
        .target_db_snapshot_identifier(&copy_id)
        .set_kms_key_id((!target.kms_key_id.is_empty()).then(|| target.kms_key_id.clone()))
        .set_tags(Some(tags(task, target)))
        .send()
        .await
        .map_err(|e| classify("rds:CopyDBSnapshot", e))?;
    Ok(Err(Step::Waiting {
        what: format!("copying {} to {} as {copy_id}", backup.backup_id, target.region),
        created: vec![copy_id],
    }))
}

/// One step of an Aurora cluster restore: the cluster, then its writer instance.
pub async fn cluster_step(rds: &aws_sdk_rds::Client, task: &RestoreTask, target: &RdsTarget) -> Result<Step, AwsError> {
    let backup = task.backup.clone().unwrap_or_default();
    let name = target.name.as_str();
    let engine = backup.settings.get("engine").cloned().unwrap_or_else(|| "aurora-postgresql".to_string());
    let Some(cluster) = find_cluster(rds, name).await? else {
        if backup.region != target.region || backup.account_id != target.account_id {
            return Ok(Step::Failed {
                code: "CLUSTER_SAME_REGION_ONLY".into(),
                message:
                    "Aurora clusters are restored in the source's account and region; copy the cluster snapshot first"
                        .into(),
            });
        }
        let security_groups = (!target.security_group_ids.is_empty()).then(|| target.security_group_ids.clone());
        let kms = (!target.kms_key_id.is_empty()).then(|| target.kms_key_id.clone());
        match &backup.restore_time {
            Some(at) => {
                rds.restore_db_cluster_to_point_in_time()
                    .db_cluster_identifier(name)
                    .source_db_cluster_identifier(&backup.source_resource_id)
                    .restore_to_time(aws_smithy_types::DateTime::from_secs(at.seconds))
                    .db_subnet_group_name(&target.db_subnet_group)
                    .set_vpc_security_group_ids(security_groups)
                    .set_kms_key_id(kms)
                    .set_tags(Some(tags(task, target)))
                    .send()
                    .await
                    .map_err(|e| classify("rds:RestoreDBClusterToPointInTime", e))?;
            }
            None => {
                rds.restore_db_cluster_from_snapshot()
                    .db_cluster_identifier(name)
                    .snapshot_identifier(&backup.backup_id)
                    .engine(&engine)
                    .set_engine_version(backup.settings.get("engine_version").cloned())
                    .db_subnet_group_name(&target.db_subnet_group)
                    .set_vpc_security_group_ids(security_groups)
                    .set_kms_key_id(kms)
                    .set_tags(Some(tags(task, target)))
                    .send()
                    .await
                    .map_err(|e| classify("rds:RestoreDBClusterFromSnapshot", e))?;
            }
        }
        return Ok(Step::Waiting {
            what: format!("cluster {name} is being restored"),
            created: vec![name.to_string()],
        });
    };
    if !is_ours(cluster.tag_list(), &task.task_id) {
        return Ok(Step::Failed {
            code: "DBClusterAlreadyExists".into(),
            message: format!("DB cluster {name} exists and was not restored by this task"),
        });
    }
    if let Some(step) = by_status(&format!("cluster {name}"), cluster.status().unwrap_or("creating")) {
        return Ok(with_created(step, name));
    }
    // A restored cluster has no instances; without a writer nobody can connect.
    if target.instance_class.is_empty() {
        return Ok(Step::Done {
            message: format!("cluster {name} is available"),
            created: vec![name.to_string()],
            warnings: vec!["writer instance (give target.rds.instance_class to create one)".into()],
        });
    }
    let writer = format!("{name}-writer");
    let created = vec![name.to_string(), writer.clone()];
    match find_instance(rds, &writer).await? {
        None => {
            rds.create_db_instance()
                .db_instance_identifier(&writer)
                .db_cluster_identifier(name)
                .db_instance_class(&target.instance_class)
                .engine(&engine)
                .set_tags(Some(tags(task, target)))
                .send()
                .await
                .map_err(|e| classify("rds:CreateDBInstance", e))?;
            Ok(Step::Waiting { what: format!("writer {writer} is being created"), created })
        }
        Some(instance) => {
            match by_status(&format!("writer {writer}"), instance.db_instance_status().unwrap_or("creating")) {
                Some(Step::Waiting { what, .. }) => Ok(Step::Waiting { what, created }),
                Some(failed) => Ok(failed),
                None => Ok(Step::Done {
                    message: format!("cluster {name} and writer {writer} are available"),
                    created,
                    warnings: Vec::new(),
                }),
            }
        }
    }
}
