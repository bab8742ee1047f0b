//! The DynamoDB restore service: tables from on-demand, SYSTEM and AWS Backup backups or by
//! point-in-time recovery, at most 50 restores in flight per account and region (counted with
//! every replica in the bus's shared store), and, once the
//! table is ACTIVE, the settings a DynamoDB restore drops (tags, TTL, point-in-time recovery,
//! streams, deletion protection, billing mode) put back. A backup is restored only into its own
//! account: DynamoDB has no cross-account restore. A task with a `backup_task` takes an
//! on-demand backup of its table instead ([`backup`]).

pub mod backup;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    BillingMode, PointInTimeRecoverySpecification, SseSpecification, SseType, StreamSpecification, StreamViewType,
    TableDescription, TableStatus, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};
use lifeboat_common::aws::{absent_if_not_found, classify, Accounts, AwsError};
use lifeboat_common::bus::Bus;
use lifeboat_common::quota::{self, Api, Cap, Quotas};
use lifeboat_common::restore::{progress_key, restored_tags, Progress, RestoreService, Restorer, ServiceConfig, Step};
use lifeboat_common::shared::SharedStore;
use lifeboat_common::subjects::TAG_TASK_ID;
use lifeboat_proto::{restore_task, Backup, DynamoDbTarget, ResourceType, RestoreTask};

/// The role under which a task records its table in [`Progress`].
pub const TABLE: &str = "table";

/// A restore slot outlives a holder that died by this much; every re-check renews it, and
/// re-checks are at most a few minutes apart.
pub const SLOT_LEASE: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug, Default)]
pub struct DynamoDbConfig {
    /// Its `quotas` hold the 50-restores cap (`dynamodb.restores`) and the restore bucket.
    pub service: ServiceConfig,
}

pub type DynamoDbService = RestoreService<DynamoDbRestorer>;

/// The DynamoDB service, ready to `run`.
pub fn service(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: DynamoDbConfig) -> Arc<DynamoDbService> {
    let gate = Gate::new(bus.shared(), config.service.quotas.clone());
    RestoreService::new(DynamoDbRestorer { accounts, gate }, bus, config.service)
}

pub struct DynamoDbRestorer {
    accounts: Arc<Accounts>,
    gate: Gate,
}

/// What a restore passes before it starts, shared with every replica through the bus's store:
/// a slot of the restores-in-flight cap of the target account and region (held until the table
/// is ACTIVE, so a count leaks neither on WAIT_TIMEOUT nor across replicas) and a token of the
/// restore bucket.
pub struct Gate {
    quotas: Arc<Quotas>,
    store: Arc<dyn SharedStore>,
}

fn store_error(e: lifeboat_common::bus::BusError) -> AwsError {
    AwsError::retryable("dynamodb:RestoreTable", "SharedStoreUnavailable", e.to_string())
}

impl Gate {
    pub fn new(store: Arc<dyn SharedStore>, quotas: quota::QuotaConfig) -> Self {
        Self { quotas: Quotas::new(store.clone(), quotas), store }
    }

    /// The cap's record for a target, for [`Quotas::held`].
    pub fn slot_key(target: &DynamoDbTarget) -> String {
        Quotas::slot_key(Cap::DynamoDbRestores, &target.account_id, &target.region)
    }

    /// Takes (or renews) the task's slot, then a restore token; a full cap says to come back later.
    async fn admit(
        &self,
        task: &RestoreTask,
        target: &DynamoDbTarget,
        progress: &mut Progress,
    ) -> Result<(), AwsError> {
        let slot = Self::slot_key(target);
        let holder = progress_key(task);
        if !self.quotas.acquire(&slot, Cap::DynamoDbRestores, &holder, SLOT_LEASE).await.map_err(store_error)? {
            let limit = self.quotas.config().limit(Cap::DynamoDbRestores);
            return Err(AwsError::slot_full(
                "dynamodb:RestoreTable",
                "RestoreLimitInFlight",
                format!("{limit} table restores already in flight in {}/{}", target.account_id, target.region),
                &slot,
                limit as usize,
            ));
        }
        progress.hold(&slot);
        self.quotas.take(&target.account_id, &target.region, Api::DynamoDbRestore).await.map_err(store_error)
    }

    /// Keeps the slot of a restore still under way from running out with its lease.
    async fn renew(&self, task: &RestoreTask, progress: &Progress) -> Result<(), AwsError> {
        for slot in &progress.slots {
            self.quotas
                .acquire(slot, Cap::DynamoDbRestores, &progress_key(task), SLOT_LEASE)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// Gives the slot back once the table is ACTIVE: what remains (settings) is no restore. By
    /// the target's key, not only the recorded one: a delivery that took the slot may have lost
    /// the race to record it.
    async fn release(
        &self,
        task: &RestoreTask,
        target: &DynamoDbTarget,
        progress: &mut Progress,
    ) -> Result<(), AwsError> {
        quota::release(self.store.as_ref(), &Self::slot_key(target), &progress_key(task)).await.map_err(store_error)?;
        progress.slots.clear();
        Ok(())
    }
}

fn target_of(task: &RestoreTask) -> Option<&DynamoDbTarget> {
    match &task.target {
        Some(restore_task::Target::Dynamodb(target)) => Some(target),
        _ => None,
    }
}

#[async_trait]
impl Restorer for DynamoDbRestorer {
    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    fn check(&self, task: &RestoreTask) -> Result<(), String> {
        if task.backup_task.is_some() {
            return lifeboat_common::backup::check_task(task, "DynamoDB", &[ResourceType::DynamodbTable]);
        }
        match target_of(task) {
            Some(t)
                if task.backup.is_some()
                    && !t.table_name.is_empty()
                    && !t.region.is_empty()
                    && !t.account_id.is_empty() =>
            {
                Ok(())
            }
            _ => Err("task has no backup or no complete DynamoDB target (account, region, table name)".into()),
        }
    }

    async fn step(&self, task: &RestoreTask, attempt: u32, progress: &mut Progress) -> Result<Step, AwsError> {
        if task.backup_task.is_some() {
            return backup::step(self, task, attempt, progress).await;
        }
        let target = target_of(task).cloned().unwrap_or_default();
        let config = self.accounts.config_as(&target.account_id, &target.region, &task.target_role_arn).await?;
        let ddb = lifeboat_common::aws::dynamodb_client(&config, &target.account_id, &target.region);
        restore_step(&ddb, task, &target, progress, &self.gate).await
    }
}

/// Keys of [`Backup::settings`] discovery captures (see `lifeboat_discovery::dynamodb::setting`).
pub use lifeboat_common::settings::dynamodb as setting;

pub use lifeboat_common::restore::reason::CROSS_ACCOUNT_UNSUPPORTED;

/// One step of a table restore, idempotent: the task records its table once the restore is
/// started, and a table it did not record is ours when its restore summary names our source or
/// it carries our task tag (a concurrent duplicate's restore, or the crash window before the
/// record), so a repeated step finds it instead of restoring again. Each step describes the
/// table once; settings that need an UpdateTable are applied one per step (a table takes one
/// update at a time), the rest once the table is settled.
pub async fn restore_step(
    ddb: &aws_sdk_dynamodb::Client,
    task: &RestoreTask,
    target: &DynamoDbTarget,
    progress: &mut Progress,
    gate: &Gate,
) -> Result<Step, AwsError> {
    let backup = task.backup.clone().unwrap_or_default();
    let name = &target.table_name;
    if !backup.account_id.is_empty() && backup.account_id != target.account_id {
        return Ok(Step::Failed {
            code: CROSS_ACCOUNT_UNSUPPORTED.into(),
            message: format!(
                "DynamoDB cannot restore {} of account {} into account {}",
                backup.backup_id, backup.account_id, target.account_id
            ),
        });
    }
    let table = match describe(ddb, name).await? {
        Some(table) => table,
        None => {
            gate.admit(task, target, progress).await?;
            match start_restore(ddb, &backup, target).await {
                Ok(arn) => {
                    progress.record(TABLE, arn.clone());
                    return Ok(Step::Waiting { what: format!("table {name} is being restored"), created: vec![arn] });
                }
                // Someone restored into the name between the describe and the restore.
                Err(e) if e.code == "TableAlreadyExistsException" => describe(ddb, name).await?.ok_or_else(|| {
                    AwsError::retryable("dynamodb:DescribeTable", "TableNotFound", format!("table {name} vanished"))
                })?,
                Err(e) => return Err(e),
            }
        }
    };
    let arn = table.table_arn().unwrap_or(name).to_string();
    if progress.id(TABLE).is_none() {
        if !ours(ddb, task, &backup, &table, &arn).await? {
            return Ok(Step::Failed {
                code: "TargetTableExists".into(),
                message: format!(
                    "table {name} (target.dynamodb.table_name, or <source table>-<name_suffix>) already exists and \
                     was not restored from {} by this task; choose another name or suffix",
                    backup.backup_id
                ),
            });
        }
        progress.record(TABLE, arn.clone());
    }
    let summary = table.restore_summary();
    if table.table_status() != Some(&TableStatus::Active) || summary.is_some_and(|s| s.restore_in_progress()) {
        gate.renew(task, progress).await?;
        return Ok(Step::Waiting { what: format!("table {name} is being restored"), created: vec![arn] });
    }
    gate.release(task, target, progress).await?;
    let mut warnings = Vec::new();
    if let Some(applying) = update_table(ddb, &backup, name, &table, &mut warnings).await? {
        return Ok(Step::Waiting { what: format!("table {name}: applying {applying}"), created: vec![arn] });
    }
    warnings.extend(reconcile(ddb, task, &backup, target, &arn).await?);
    Ok(Step::Done { message: format!("table {name} is active"), created: vec![arn], warnings })
}

/// Whether an existing table this task did not record is its own: restored from its source
/// (the restore summary), or tagged with its task id.
async fn ours(
    ddb: &aws_sdk_dynamodb::Client,
    task: &RestoreTask,
    backup: &Backup,
    table: &TableDescription,
    arn: &str,
) -> Result<bool, AwsError> {
    let summary = table.restore_summary();
    let source =
        summary.and_then(|s| if backup.restore_time.is_some() { s.source_table_arn() } else { s.source_backup_arn() });
    if source == Some(backup.backup_id.as_str()) {
        return Ok(true);
    }
    let tags = ddb
        .list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| classify("dynamodb:ListTagsOfResource", e))?;
    Ok(tags.tags().iter().any(|t| t.key() == TAG_TASK_ID && t.value() == task.task_id))
}

async fn describe(ddb: &aws_sdk_dynamodb::Client, name: &str) -> Result<Option<TableDescription>, AwsError> {
    let described =
        ddb.describe_table().table_name(name).send().await.map_err(|e| classify("dynamodb:DescribeTable", e));
    Ok(absent_if_not_found(described, &["ResourceNotFoundException"])?.and_then(|output| output.table().cloned()))
}

/// The key the restored table is encrypted with: the target's, else the source's own key when
/// the restore stays in its region (a KMS key is regional). Without either, DynamoDB's default.
fn restore_kms_key<'a>(backup: &'a Backup, target: &'a DynamoDbTarget) -> Option<&'a str> {
    if !target.kms_key_id.is_empty() {
        return Some(&target.kms_key_id);
    }
    let source_key = backup.settings.get(setting::SSE_KMS_KEY_ARN).filter(|k| !k.is_empty());
    source_key.filter(|_| backup.region == target.region).map(String::as_str)
}

/// Starts the restore; the new table's ARN (its name when the answer carries none).
async fn start_restore(
    ddb: &aws_sdk_dynamodb::Client,
    backup: &Backup,
    target: &DynamoDbTarget,
) -> Result<String, AwsError> {
    let sse = restore_kms_key(backup, target)
        .map(|key| SseSpecification::builder().enabled(true).sse_type(SseType::Kms).kms_master_key_id(key).build());
    let table = match &backup.restore_time {
        Some(at) => {
            let time = aws_smithy_types::DateTime::from_secs(at.seconds);
            // The name where the source is local (every endpoint takes it), the ARN across regions.
            let local = backup.account_id == target.account_id && backup.region == target.region;
            let (arn, name) = if local {
                (None, Some(backup.source_resource_id.clone()))
            } else {
                (Some(backup.backup_id.clone()), None)
            };
            ddb.restore_table_to_point_in_time()
                .set_source_table_arn(arn)
                .set_source_table_name(name)
                .target_table_name(&target.table_name)
                .restore_date_time(time)
                .set_sse_specification_override(sse)
                .send()
                .await
                .map_err(|e| classify("dynamodb:RestoreTableToPointInTime", e))?
                .table_description
        }
        None => {
            ddb.restore_table_from_backup()
                .backup_arn(&backup.backup_id)
                .target_table_name(&target.table_name)
                .set_sse_specification_override(sse)
                .send()
                .await
                .map_err(|e| classify("dynamodb:RestoreTableFromBackup", e))?
                .table_description
        }
    };
    Ok(table.and_then(|t| t.table_arn).unwrap_or_else(|| target.table_name.clone()))
}

/// A warning for a setting that could not be applied, or the error when it is worth a retry.
fn warn_or_retry(warnings: &mut Vec<String>, what: &str, result: Result<(), AwsError>) -> Result<bool, AwsError> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => {
            warnings.push(format!("{what} ({}: {})", e.code, e.message));
            Ok(false)
        }
    }
}

/// Starts the first UpdateTable the restored table still needs (billing mode, stream, deletion
/// protection, judged from `table` as described in this step) and says which; `None` when none
/// is needed. A setting AWS refuses becomes a warning and the next one is tried.
async fn update_table(
    ddb: &aws_sdk_dynamodb::Client,
    backup: &Backup,
    name: &str,
    table: &TableDescription,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, AwsError> {
    let settings = &backup.settings;
    let current_mode = table.billing_mode_summary().and_then(|b| b.billing_mode());
    if settings.get(setting::BILLING_MODE).is_some_and(|m| m == BillingMode::PayPerRequest.as_str())
        && current_mode != Some(&BillingMode::PayPerRequest)
    {
        let sent = ddb.update_table().table_name(name).billing_mode(BillingMode::PayPerRequest).send().await;
        let result = sent.map(|_| ()).map_err(|e| classify("dynamodb:UpdateTable", e));
        if warn_or_retry(warnings, "billing mode PAY_PER_REQUEST", result)? {
            return Ok(Some("billing mode PAY_PER_REQUEST".into()));
        }
    }
    if let Some(view) = settings.get(setting::STREAM_VIEW_TYPE) {
        if !table.stream_specification().is_some_and(|s| s.stream_enabled()) {
            let what = format!("stream ({view})");
            let result = async {
                let spec = StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view.as_str()))
                    .build()
                    .map_err(|e| {
                        AwsError::task_failure("dynamodb:UpdateTable", "InvalidSpecification", e.to_string())
                    })?;
                ddb.update_table()
                    .table_name(name)
                    .stream_specification(spec)
                    .send()
                    .await
                    .map_err(|e| classify("dynamodb:UpdateTable", e))?;
                Ok(())
            };
            if warn_or_retry(warnings, &what, result.await)? {
                return Ok(Some(what));
            }
        }
    }
    if settings.get(setting::DELETION_PROTECTION).is_some_and(|v| v == "true")
        && table.deletion_protection_enabled() != Some(true)
    {
        let sent = ddb.update_table().table_name(name).deletion_protection_enabled(true).send().await;
        let result = sent.map(|_| ()).map_err(|e| classify("dynamodb:UpdateTable", e));
        if warn_or_retry(warnings, "deletion protection", result)? {
            return Ok(Some("deletion protection".into()));
        }
    }
    Ok(None)
}

/// Puts back what a restore does not carry over and needs no UpdateTable: tags, TTL,
/// point-in-time recovery. Every call is a no-op when the setting is already there; a setting
/// that cannot be applied is a warning, a retryable error a retry.
async fn reconcile(
    ddb: &aws_sdk_dynamodb::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &DynamoDbTarget,
    arn: &str,
) -> Result<Vec<String>, AwsError> {
    let name = target.table_name.as_str();
    let mut warnings = Vec::new();

    let tags: Vec<Tag> = restored_tags(task, &target.tags)
        .into_iter()
        .filter_map(|(key, value)| Tag::builder().key(key).value(value).build().ok())
        .collect();
    let tagged = ddb.tag_resource().resource_arn(arn).set_tags(Some(tags)).send().await;
    warn_or_retry(&mut warnings, "tags", tagged.map(|_| ()).map_err(|e| classify("dynamodb:TagResource", e)))?;
    let skip_source_tags = task.options.as_ref().is_some_and(|o| o.skip_source_tags);
    if backup.settings.contains_key(setting::TABLE_DELETED) && backup.tags.is_empty() && !skip_source_tags {
        warnings.push(format!(
            "source tags (table {} no longer exists and its backup carries none)",
            backup.source_resource_id
        ));
    }

    if let Some(attribute) = backup.settings.get(setting::TTL_ATTRIBUTE) {
        let result = async {
            let ttl = ddb
                .describe_time_to_live()
                .table_name(name)
                .send()
                .await
                .map_err(|e| classify("dynamodb:DescribeTimeToLive", e))?;
            let status = ttl.time_to_live_description().and_then(|t| t.time_to_live_status());
            if !matches!(status, Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling)) {
                let spec = TimeToLiveSpecification::builder().enabled(true).attribute_name(attribute).build().map_err(
                    |e| AwsError::task_failure("dynamodb:UpdateTimeToLive", "InvalidSpecification", e.to_string()),
                )?;
                ddb.update_time_to_live()
                    .table_name(name)
                    .time_to_live_specification(spec)
                    .send()
                    .await
                    .map_err(|e| classify("dynamodb:UpdateTimeToLive", e))?;
            }
            Ok(())
        };
        warn_or_retry(&mut warnings, &format!("TTL on {attribute}"), result.await)?;
    }

    if backup.settings.get(setting::POINT_IN_TIME_RECOVERY).is_some_and(|v| v == "true") {
        let result = async {
            let spec = PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .map_err(|e| {
                    AwsError::task_failure("dynamodb:UpdateContinuousBackups", "InvalidSpecification", e.to_string())
                })?;
            ddb.update_continuous_backups()
                .table_name(name)
                .point_in_time_recovery_specification(spec)
                .send()
                .await
                .map_err(|e| classify("dynamodb:UpdateContinuousBackups", e))?;
            Ok(())
        };
        warn_or_retry(&mut warnings, "point-in-time recovery", result.await)?;
    }

    if let Some(key) = backup.settings.get(setting::SSE_KMS_KEY_ARN) {
        if restore_kms_key(backup, target).is_none() {
            warnings.push(format!(
                "encryption with the source's KMS key ({key} is in {}; set target.dynamodb.kms_key_id for {})",
                backup.region, target.region
            ));
        }
    }
    Ok(warnings)
}
