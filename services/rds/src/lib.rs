//! The RDS restore service: DB instances from DB snapshots (copied to the target region first
//! when needed, shared with the target account when it is another) or to a point in time (also
//! of deleted instances, from their retained automated backups), and Aurora clusters from
//! cluster snapshots or to a point in time, with a writer instance. The source's settings
//! captured by discovery are applied unless the target overrides them; what cannot be applied
//! is a named SETTINGS_NOT_RESTORED warning. Idempotent by the deterministic target identifier:
//! a database of that name carrying our `lifeboat:task-id` tag is ours (adopted also when a
//! concurrent duplicate made it first and the call answered AlreadyExists); anyone else's is a
//! TARGET_NAME_TAKEN failure. What a task creates is recorded in its progress as AWS accepts it
//! and re-checked by id in batches ([`checks`]); cross-region copies hold a slot of the copy cap
//! shared by every replica. Once available, the security groups and tags asked for are put in
//! place. A task with a `backup_task` takes a snapshot and its copies instead ([`backup`]).

pub mod backup;
pub mod checks;
pub mod settings;
mod snapshot;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_rds::types::{DbCluster, DbInstance, Tag};
use lifeboat_common::aws::{classify, Accounts, AwsError};
use lifeboat_common::bus::Bus;
use lifeboat_common::quota::QuotaConfig;
use lifeboat_common::restore::{restored_tags, Progress, RestoreService, Restorer, ServiceConfig};
use lifeboat_common::shared::SharedStore;
use lifeboat_common::subjects::TAG_TASK_ID;
use lifeboat_proto::{restore_task, Backup, RdsTarget, ResourceType, RestoreTask};

use checks::{group, Checks};

pub use lifeboat_common::restore::Step;
pub use snapshot::{Copies, COPY, TAG_RESTORE_COPY};

/// Progress roles of what a task creates: the restored instance, or the cluster and its writer.
pub const DB: &str = "db";
pub const CLUSTER: &str = "cluster";
pub const WRITER: &str = "writer";

/// The reason a restore fails when its target identifier belongs to something it did not make.
pub const TARGET_NAME_TAKEN: &str = "TARGET_NAME_TAKEN";

/// The copy cap (`rds.copies`) comes from `service.quotas`.
#[derive(Clone, Debug, Default)]
pub struct RdsConfig {
    pub service: ServiceConfig,
}

pub type RdsService = RestoreService<RdsRestorer>;

/// The RDS service, ready to `run`.
pub fn service(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: RdsConfig) -> Arc<RdsService> {
    let cx = Context::new(bus.shared(), config.service.quotas.clone());
    RestoreService::new(RdsRestorer { accounts, cx }, bus, config.service)
}

/// What every step of one process shares: the batched status checks, and the copy cap held
/// with every other replica (by restores' copies and backups' copies alike).
pub struct Context {
    pub checks: Checks,
    pub copies: Copies,
}

impl Context {
    pub fn new(store: Arc<dyn SharedStore>, quotas: QuotaConfig) -> Self {
        Self { checks: Checks::default(), copies: Copies::new(store, quotas) }
    }
}

pub struct RdsRestorer {
    accounts: Arc<Accounts>,
    cx: Context,
}

impl RdsRestorer {
    pub fn context(&self) -> &Context {
        &self.cx
    }
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
        if task.backup_task.is_some() {
            let kinds = [ResourceType::RdsInstance, ResourceType::RdsCluster];
            return lifeboat_common::backup::check_task(task, "RDS", &kinds);
        }
        match target_of(task) {
            Some(t)
                if task.backup.is_some() && !t.name.is_empty() && !t.account_id.is_empty() && !t.region.is_empty() =>
            {
                Ok(())
            }
            _ => Err("task has no backup or no complete RDS target (account, region, name)".into()),
        }
    }

    async fn step(&self, task: &RestoreTask, attempt: u32, progress: &mut Progress) -> Result<Step, AwsError> {
        if task.backup_task.is_some() {
            return backup::step(&self.accounts, &self.cx, task, attempt, progress).await;
        }
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
            cluster_step(&self.cx, &clients, task, &target, attempt, progress).await
        } else {
            instance_step(&self.cx, &clients, task, &target, attempt, progress).await
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

/// RDS's "that identifier is taken" codes (wire and model names).
const INSTANCE_EXISTS: &[&str] = &["DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault"];
const CLUSTER_EXISTS: &[&str] = &["DBClusterAlreadyExistsFault", "DBClusterAlreadyExists"];

fn already_exists(e: &AwsError, codes: &[&str]) -> bool {
    codes.contains(&e.code.as_str())
}

/// AWS said the name is taken but does not show it yet: look again later.
fn not_visible(operation: &'static str, e: AwsError) -> AwsError {
    AwsError::retryable(operation, e.code, format!("{} (not visible yet; will look again)", e.message))
}

/// `what` exists and is not this task's: a failure naming it and what to change.
fn name_taken(what: &str, fix: &str) -> Step {
    Step::Failed {
        code: TARGET_NAME_TAKEN.into(),
        message: format!("{what} exists and was not restored by this task; {fix}"),
    }
}

const RENAME: &str = "choose another target name (target.rds.name)";

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

/// One step of a DB instance restore. The instance is checked (batched, by identifier) once
/// recorded, or in the crash window; otherwise it is restored, and a duplicate's instance
/// (AlreadyExists) re-read and adopted when it is ours.
pub async fn instance_step(
    cx: &Context,
    clients: &Clients,
    task: &RestoreTask,
    target: &RdsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let rds = &clients.target;
    let backup = task.backup.clone().unwrap_or_default();
    let name = target.name.as_str();
    if progress.may_exist(DB, attempt) {
        if let Some(db) = cx.checks.instance(&group(&target.account_id, &target.region), rds, name).await? {
            return restored_instance(rds, task, target, &backup, &db, progress).await;
        }
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
        let restored = with_instance_settings!(restore, wanted, tags(task, target, not_applied))
            .send()
            .await
            .map(|_| format!("DB instance {name} is being restored"))
            .map_err(|e| classify("rds:RestoreDBInstanceToPointInTime", e));
        return created_instance(cx, rds, task, target, &backup, restored, progress).await;
    }
    let copy = if same_place(&backup, target) {
        Ok(backup.backup_id.clone())
    } else if let Some(source) = &clients.source {
        // Another account: a snapshot of the source account's, shared with the target.
        snapshot::shared_instance_snapshot(cx, source, task, &backup, target, attempt, progress).await?
    } else {
        snapshot::copied_instance_snapshot(cx, rds, task, &backup, target, attempt, progress).await?
    };
    let snapshot = match copy {
        Ok(snapshot) => snapshot,
        Err(step) => return Ok(step),
    };
    let restore =
        rds.restore_db_instance_from_db_snapshot().db_instance_identifier(name).db_snapshot_identifier(&snapshot);
    let restored = with_instance_settings!(restore, wanted, tags(task, target, not_applied))
        .send()
        .await
        .map(|_| format!("DB instance {name} is being restored from {snapshot}"))
        .map_err(|e| classify("rds:RestoreDBInstanceFromDBSnapshot", e));
    created_instance(cx, rds, task, target, &backup, restored, progress).await
}

/// After a restore call (`Ok` says what is under way): the instance recorded; or, when the name
/// is taken, the instance of that name re-read and adopted if this task made it (a concurrent
/// duplicate delivery), else a failure naming the name.
async fn created_instance(
    cx: &Context,
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    target: &RdsTarget,
    backup: &Backup,
    restored: Result<String, AwsError>,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let name = target.name.as_str();
    match restored {
        Ok(what) => {
            progress.record(DB, name);
            Ok(Step::Waiting { what, created: vec![name.to_string()] })
        }
        Err(e) if already_exists(&e, INSTANCE_EXISTS) => {
            match cx.checks.instance(&group(&target.account_id, &target.region), rds, name).await? {
                Some(db) => restored_instance(rds, task, target, backup, &db, progress).await,
                None => Err(not_visible(e.operation, e)),
            }
        }
        Err(e) => Err(e),
    }
}

/// A restored instance of this name: ours and available, then put the security groups and
/// tags in place and report what was not carried over.
async fn restored_instance(
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    target: &RdsTarget,
    backup: &Backup,
    db: &DbInstance,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let name = target.name.as_str();
    if !is_ours(db.tag_list(), &task.task_id) {
        return Ok(name_taken(&format!("DB instance {name}"), RENAME));
    }
    progress.record(DB, name);
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
/// target's class, else the source writer's). Both are checked by identifier once recorded
/// and adopted from a concurrent duplicate, as instances are.
pub async fn cluster_step(
    cx: &Context,
    clients: &Clients,
    task: &RestoreTask,
    target: &RdsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let rds = &clients.target;
    let backup = task.backup.clone().unwrap_or_default();
    let name = target.name.as_str();
    let batch = group(&target.account_id, &target.region);
    let look = progress.may_exist(CLUSTER, attempt);
    let found = if look { cx.checks.cluster(&batch, rds, name).await? } else { None };
    let cluster = match found {
        Some(cluster) => cluster,
        None => match restore_cluster(cx, clients, task, target, attempt, progress).await? {
            Ok(cluster) => cluster,
            Err(step) => return Ok(step),
        },
    };
    if !is_ours(cluster.tag_list(), &task.task_id) {
        return Ok(name_taken(&format!("DB cluster {name}"), RENAME));
    }
    progress.record(CLUSTER, name);
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
    let instance = match writer_instance(cx, rds, task, target, &asked, attempt, progress).await? {
        Ok(instance) => instance,
        Err(step) => return Ok(step),
    };
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

/// Restores the cluster: `Err(step)` to report while it is under way (or why it cannot be), or
/// `Ok(cluster)` when the name was taken and the cluster of that name is to be judged.
async fn restore_cluster(
    cx: &Context,
    clients: &Clients,
    task: &RestoreTask,
    target: &RdsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<DbCluster, Step>, AwsError> {
    let rds = &clients.target;
    let backup = task.backup.clone().unwrap_or_default();
    let name = target.name.as_str();
    let engine = backup.settings.get(settings::ENGINE).cloned().unwrap_or_else(|| "aurora-postgresql".to_string());
    if backup.region != target.region {
        return Ok(Err(Step::Failed {
            code: "CLUSTER_SAME_REGION_ONLY".into(),
            message: "Aurora clusters are restored in the source's region; copy the cluster snapshot first".into(),
        }));
    }
    let wanted = settings::checked(rds, &backup, target, true).await?;
    let not_applied = settings::not_applied_tag(&wanted);
    let kms = (!target.kms_key_id.is_empty()).then(|| target.kms_key_id.clone());
    let restored = match &backup.restore_time {
        Some(_) if !same_place(&backup, target) => {
            return Ok(Err(Step::Failed {
                code: "PITR_SAME_REGION_ONLY".into(),
                message: "point-in-time restores of clusters are made in the source's account and region".into(),
            }))
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
                .map(drop)
                .map_err(|e| classify("rds:RestoreDBClusterToPointInTime", e))
        }
        None => {
            let snapshot = match &clients.source {
                Some(source) if backup.account_id != target.account_id => {
                    match snapshot::shared_cluster_snapshot(cx, source, task, &backup, target, attempt, progress)
                        .await?
                    {
                        Ok(arn) => arn,
                        Err(step) => return Ok(Err(step)),
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
                .map(drop)
                .map_err(|e| classify("rds:RestoreDBClusterFromSnapshot", e))
        }
    };
    match restored {
        Ok(()) => {
            progress.record(CLUSTER, name);
            Ok(Err(Step::Waiting {
                what: format!("cluster {name} is being restored"),
                created: vec![name.to_string()],
            }))
        }
        Err(e) if already_exists(&e, CLUSTER_EXISTS) => {
            let found = cx.checks.cluster(&group(&target.account_id, &target.region), rds, name).await?;
            found.map(Ok).ok_or_else(|| not_visible(e.operation, e))
        }
        Err(e) => Err(e),
    }
}

/// The cluster's writer instance (of `asked`'s class), ours: `Err(step)` while it is being
/// created or when its name is someone else's.
async fn writer_instance(
    cx: &Context,
    rds: &aws_sdk_rds::Client,
    task: &RestoreTask,
    target: &RdsTarget,
    asked: &settings::Wanted,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<DbInstance, Step>, AwsError> {
    let name = target.name.as_str();
    let writer = format!("{name}-writer");
    let class = asked.instance_class.clone().unwrap_or_default();
    let batch = group(&target.account_id, &target.region);
    let look = progress.may_exist(WRITER, attempt);
    let found = if look { cx.checks.instance(&batch, rds, &writer).await? } else { None };
    let instance = match found {
        Some(found) => found,
        None => {
            let engine = task.backup.as_ref().and_then(|b| b.settings.get(settings::ENGINE)).cloned();
            let created = rds
                .create_db_instance()
                .db_instance_identifier(&writer)
                .db_cluster_identifier(name)
                .db_instance_class(&class)
                .engine(engine.unwrap_or_else(|| "aurora-postgresql".to_string()))
                .set_db_parameter_group_name(asked.db_parameter_group.clone())
                .set_tags(Some(tags(task, target, None)))
                .send()
                .await
                .map_err(|e| classify("rds:CreateDBInstance", e));
            match created {
                Ok(_) => {
                    progress.record(WRITER, &writer);
                    return Ok(Err(Step::Waiting {
                        what: format!("writer {writer} ({class}) is being created"),
                        created: vec![name.to_string(), writer],
                    }));
                }
                Err(e) if already_exists(&e, INSTANCE_EXISTS) => {
                    cx.checks.instance(&batch, rds, &writer).await?.ok_or_else(|| not_visible(e.operation, e))?
                }
                Err(e) => return Err(e),
            }
        }
    };
    if !is_ours(instance.tag_list(), &task.task_id) {
        return Ok(Err(name_taken(
            &format!("DB instance {writer}"),
            "choose another target name (target.rds.name); the writer is <name>-writer",
        )));
    }
    progress.record(WRITER, &writer);
    Ok(Ok(instance))
}
