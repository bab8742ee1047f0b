//! The RDS restore service: DB instances from DB snapshots (copied to the target region first
//! when needed, shared with the target account when it is another) or to a point in time (also
//! of deleted instances, from their retained automated backups), and Aurora clusters from
//! cluster snapshots or to a point in time, with a writer instance. The source's settings
//! captured by discovery are applied unless the target overrides them; what cannot be applied
//! is a named SETTINGS_NOT_RESTORED warning. Idempotent by the deterministic target identifier:
//! a database of that name carrying our `lifeboat:task-id` tag is ours; anyone else's is a clear
//! failure. Once available, the security groups and tags asked for are put in place.

pub mod settings;
mod snapshot;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_rds::types::{DbCluster, DbInstance, Tag};
use lifeboat_common::aws::{absent_if_not_found, classify, Accounts, AwsError};
use lifeboat_common::bus::Bus;
use lifeboat_common::restore::{restored_tags, Progress, RestoreService, Restorer, ServiceConfig};
use lifeboat_common::subjects::{self, TAG_TASK_ID};
use lifeboat_proto::{restore_task, Backup, RdsTarget, ResourceType, RestoreTask};

pub use lifeboat_common::restore::Step;
pub use snapshot::{Limits, TAG_RESTORE_COPY};

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
    let limits = Limits::new(config.max_copies_per_region);
    RestoreService::new(RdsRestorer { accounts, limits }, bus, config.service)
}

pub struct RdsRestorer {
    accounts: Arc<Accounts>,
    limits: Limits,
}

/// The clients a restore step uses: the target account's in the target region, and for a
/// restore into another account the source account's in the target region (to copy and share).
pub struct Clients {
    pub target: aws_sdk_rds::Client,
    pub source: Option<aws_sdk_rds::Client>,
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
                if task.backup.is_some() && !t.name.is_empty() && !t.account_id.is_empty() && !t.region.is_empty() =>
            {
                Ok(())
            }
            _ => Err("task has no backup or no complete RDS target (account, region, name)".into()),
        }
    }

    async fn step(&self, task: &RestoreTask, _attempt: u32, _progress: &mut Progress) -> Result<Step, AwsError> {
        let target = target_of(task).cloned().unwrap_or_default();
        let backup = task.backup.clone().unwrap_or_default();
        let config = self.accounts.config_as(&target.account_id, &target.region, &task.target_role_arn).await?;
        let source = if backup.account_id != target.account_id {
            let config = self.accounts.config_for(&backup.account_id, &target.region).await?;
            Some(lifeboat_common::aws::rds_client(&config, &backup.account_id, &target.region))
        } else {
            None
        };
        let clients =
            Clients { target: lifeboat_common::aws::rds_client(&config, &target.account_id, &target.region), source };
        if task.resource_type == ResourceType::RdsCluster as i32 {
            cluster_step(&clients, task, &target).await
        } else {
            instance_step(&clients, task, &target, &self.limits).await
        }
    }
}

fn tags(task: &RestoreTask, target: &RdsTarget, not_applied: Option<String>) -> Vec<Tag> {
    let mut tags = restored_tags(task, &target.tags);
    tags.extend(not_applied.map(|names| (settings::TAG_NOT_RESTORED.to_string(), names)));
    tags.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn is_ours(tag_list: &[Tag], task_id: &str) -> bool {
    tag_list.iter().any(|t| t.key() == Some(TAG_TASK_ID) && t.value() == Some(task_id))
}

/// RDS's "no such instance, cluster or snapshot" codes.
pub(crate) const NOT_FOUND: &[&str] = &[
    "DBInstanceNotFound",
    "DBInstanceNotFoundFault",
    "DBClusterNotFoundFault",
    "DBClusterNotFound",
    "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault",
    "DBClusterSnapshotNotFoundFault",
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

fn same_place(backup: &Backup, target: &RdsTarget) -> bool {
    backup.region == target.region && backup.account_id == target.account_id
}

/// The settings a DB instance restore asks for (the source's, overridden by the target), on
/// either restore call's builder: RestoreDBInstanceFromDBSnapshot and ToPointInTime name them alike.
macro_rules! with_instance_settings {
    ($builder:expr, $wanted:expr, $tags:expr) => {{
        let wanted = &$wanted;
        $builder
            .set_db_subnet_group_name(wanted.db_subnet_group.clone())
            .set_vpc_security_group_ids(wanted.security_group_ids.clone())
            .set_db_instance_class(wanted.instance_class.clone())
            .set_availability_zone(wanted.availability_zone.clone())
            .set_db_parameter_group_name(wanted.db_parameter_group.clone())
            .set_option_group_name(wanted.option_group.clone())
            .set_multi_az(wanted.multi_az)
            .set_storage_type(wanted.storage_type.clone())
            .set_iops(wanted.iops)
            .set_storage_throughput(wanted.storage_throughput)
            .set_port(wanted.port)
            .set_deletion_protection(wanted.deletion_protection)
            .set_enable_iam_database_authentication(wanted.iam_auth)
            .set_copy_tags_to_snapshot(wanted.copy_tags_to_snapshot)
            .set_enable_cloudwatch_logs_exports(wanted.log_exports.clone())
            .set_tags(Some($tags))
    }};
}

/// The same for an Aurora cluster restore, from a snapshot or to a point in time.
macro_rules! with_cluster_settings {
    ($builder:expr, $wanted:expr, $kms:expr, $tags:expr) => {{
        let wanted = &$wanted;
        $builder
            .set_db_subnet_group_name(wanted.db_subnet_group.clone())
            .set_vpc_security_group_ids(wanted.security_group_ids.clone())
            .set_kms_key_id($kms)
            .set_db_cluster_parameter_group_name(wanted.db_cluster_parameter_group.clone())
            .set_port(wanted.port)
            .set_deletion_protection(wanted.deletion_protection)
            .set_enable_iam_database_authentication(wanted.iam_auth)
            .set_copy_tags_to_snapshot(wanted.copy_tags_to_snapshot)
            .set_enable_cloudwatch_logs_exports(wanted.log_exports.clone())
            .set_tags(Some($tags))
    }};
}

/// One step of a DB instance restore.
pub async fn instance_step(
    clients: &Clients,
    task: &RestoreTask,
    target: &RdsTarget,
    limits: &Limits,
) -> Result<Step, AwsError> {
    let rds = &clients.target;
    let backup = task.backup.clone().unwrap_or_default();
    let name = target.name.as_str();
    if let Some(db) = find_instance(rds, name).await? {
        return restored_instance(rds, task, target, &backup, &db).await;
    }
    let wanted = settings::checked(rds, &backup, target, false).await?;
    let not_applied = settings::not_applied_tag(&wanted);
    if let Some(at) = &backup.restore_time {
        if !same_place(&backup, target) {
            return Ok(Step::Failed {
                code: "PITR_SAME_REGION_ONLY".into(),
                message: "point-in-time restores of DB instances are made in the source's account and region".into(),
            });
        }
        let deleted = backup.settings.get(settings::AUTOMATED_BACKUPS_ARN).cloned();
        let source_id = deleted.is_none().then(|| backup.source_resource_id.clone());
        let restore = rds
            .restore_db_instance_to_point_in_time()
            .set_source_db_instance_identifier(source_id)
            .set_source_db_instance_automated_backups_arn(deleted)
            .target_db_instance_identifier(name)
            .restore_time(aws_smithy_types::DateTime::from_secs(at.seconds));
        with_instance_settings!(restore, wanted, tags(task, target, not_applied))
            .send()
            .await
            .map_err(|e| classify("rds:RestoreDBInstanceToPointInTime", e))?;
        return Ok(Step::Waiting {
            what: format!("DB instance {name} is being restored"),
            created: vec![name.to_string()],
        });
    }
    let snapshot = if same_place(&backup, target) {
        backup.backup_id.clone()
    } else if let Some(source) = &clients.source {
        // Another account: a snapshot of the source account's, shared with the target.
        match snapshot::shared_instance_snapshot(source, task, &backup, target, limits).await? {
            Ok(arn) => arn,
            Err(step) => return Ok(step),
        }
    } else {
        match snapshot::copied_instance_snapshot(rds, task, &backup, target, limits).await? {
            Ok(copy) => copy,
            Err(step) => return Ok(step),
        }
    };
    let restore =
        rds.restore_db_instance_from_db_snapshot().db_instance_identifier(name).db_snapshot_identifier(&snapshot);
    with_instance_settings!(restore, wanted, tags(task, target, not_applied))
        .send()
        .await
        .map_err(|e| classify("rds:RestoreDBInstanceFromDBSnapshot", e))?;
    Ok(Step::Waiting {
        what: format!("DB instance {name} is being restored from {snapshot}"),
        created: vec![name.to_string()],
    })
}

/// A restored instance of this name: ours and available, then put the security groups and
/// tags in place and report what was not carried over.
async fn restored_instance(
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    target: &RdsTarget,
    backup: &Backup,
    db: &DbInstance,
) -> Result<Step, AwsError> {
    let name = target.name.as_str();
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
    let mut have: Vec<&str> = db.vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id()).collect();
    let mut wanted: Vec<&str> = target.security_group_ids.iter().map(String::as_str).collect();
    wanted.sort_unstable();
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
    let tag = settings::not_restored_tag(db.tag_list()).map(str::to_string);
    if let Some(arn) = db.db_instance_arn() {
        rds.add_tags_to_resource()
            .resource_name(arn)
            .set_tags(Some(tags(task, target, tag.clone())))
            .send()
            .await
            .map_err(|e| classify("rds:AddTagsToResource", e))?;
    }
    let asked = settings::restarted(backup, target, false, tag.as_deref());
    Ok(Step::Done {
        message: format!("{what} is available"),
        created: vec![name.to_string()],
        warnings: settings::instance_warnings(db, &asked, backup),
    })
}

fn with_created(step: Step, id: &str) -> Step {
    match step {
        Step::Waiting { what, .. } => Step::Waiting { what, created: vec![id.to_string()] },
        other => other,
    }
}

/// One step of an Aurora cluster restore: the cluster, then its writer instance (of the
/// target's class, else the source writer's).
pub async fn cluster_step(clients: &Clients, task: &RestoreTask, target: &RdsTarget) -> Result<Step, AwsError> {
    let rds = &clients.target;
    let backup = task.backup.clone().unwrap_or_default();
    let name = target.name.as_str();
    let engine = backup.settings.get(settings::ENGINE).cloned().unwrap_or_else(|| "aurora-postgresql".to_string());
    let Some(cluster) = find_cluster(rds, name).await? else {
        if backup.region != target.region {
            return Ok(Step::Failed {
                code: "CLUSTER_SAME_REGION_ONLY".into(),
                message: "Aurora clusters are restored in the source's region; copy the cluster snapshot first".into(),
            });
        }
        let wanted = settings::checked(rds, &backup, target, true).await?;
        let not_applied = settings::not_applied_tag(&wanted);
        let kms = (!target.kms_key_id.is_empty()).then(|| target.kms_key_id.clone());
        match &backup.restore_time {
            Some(_) if !same_place(&backup, target) => {
                return Ok(Step::Failed {
                    code: "PITR_SAME_REGION_ONLY".into(),
                    message: "point-in-time restores of clusters are made in the source's account and region".into(),
                })
            }
            Some(at) => {
                let restore = rds
                    .restore_db_cluster_to_point_in_time()
                    .db_cluster_identifier(name)
                    .source_db_cluster_identifier(&backup.source_resource_id)
                    .restore_to_time(aws_smithy_types::DateTime::from_secs(at.seconds));
                with_cluster_settings!(restore, wanted, kms, tags(task, target, not_applied))
                    .send()
                    .await
                    .map_err(|e| classify("rds:RestoreDBClusterToPointInTime", e))?;
            }
            None => {
                let snapshot = match &clients.source {
                    Some(source) if backup.account_id != target.account_id => {
                        match snapshot::shared_cluster_snapshot(source, task, &backup, target).await? {
                            Ok(arn) => arn,
                            Err(step) => return Ok(step),
                        }
                    }
                    _ => backup.backup_id.clone(),
                };
                let restore = rds
                    .restore_db_cluster_from_snapshot()
                    .db_cluster_identifier(name)
                    .snapshot_identifier(&snapshot)
                    .engine(&engine)
                    .set_engine_version(backup.settings.get(settings::ENGINE_VERSION).cloned());
                with_cluster_settings!(restore, wanted, kms, tags(task, target, not_applied))
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
    let tag = settings::not_restored_tag(cluster.tag_list());
    let asked = settings::restarted(&backup, target, true, tag);
    let mut warnings = settings::cluster_warnings(&cluster, &asked, &backup);
    // A restored cluster has no instances; without a writer nobody can connect.
    let Some(class) = asked.instance_class.clone() else {
        warnings.push(
            "writer instance (the source writer's class is unknown; give target.rds.instance_class to create one)"
                .into(),
        );
        return Ok(Step::Done {
            message: format!("cluster {name} is available"),
            created: vec![name.to_string()],
            warnings,
        });
    };
    let writer = format!("{name}-writer");
    let created = vec![name.to_string(), writer.clone()];
    match find_instance(rds, &writer).await? {
        None => {
            rds.create_db_instance()
                .db_instance_identifier(&writer)
                .db_cluster_identifier(name)
                .db_instance_class(&class)
                .engine(&engine)
                .set_db_parameter_group_name(asked.db_parameter_group.clone())
                .set_tags(Some(tags(task, target, None)))
                .send()
                .await
                .map_err(|e| classify("rds:CreateDBInstance", e))?;
            Ok(Step::Waiting { what: format!("writer {writer} ({class}) is being created"), created })
        }
        Some(instance) => {
            match by_status(&format!("writer {writer}"), instance.db_instance_status().unwrap_or("creating")) {
                Some(Step::Waiting { what, .. }) => Ok(Step::Waiting { what, created }),
                Some(failed) => Ok(failed),
                None => Ok(Step::Done {
                    message: format!("cluster {name} and writer {writer} ({class}) are available"),
                    created,
                    warnings,
                }),
            }
        }
    }
}
