//! DynamoDB backups: an on-demand backup of the table named `lifeboat-<task id>`, its recovery
//! point tags kept in the shared store by its ARN (DynamoDB backups take no tags), and with the
//! rule's `continuous` option point-in-time recovery turned on. Backup names are not unique in
//! DynamoDB, so the backup's ARN is recorded as CreateBackup answers, and the name is looked
//! for (ListBackups of the table) only in the crash window. DynamoDB cannot copy a backup to
//! another region or account, so a rule's copies end the task with a warning naming them.

use aws_sdk_dynamodb::types::{BackupStatus, PointInTimeRecoverySpecification};
use chrono::{DateTime, Utc};
use lifeboat_common::aws::{classify, dynamodb_client, AwsError};
use lifeboat_common::backup::{
    copy_account, dynamodb_backup_name, past_completion_window, recovery_point_tags, save_point_tags, ROLE_POINT,
};
use lifeboat_common::restore::{Progress, Step};
use lifeboat_common::shared::SharedStore;
use lifeboat_proto::{BackupTask, RestoreTask};

use crate::{warn_or_retry, DynamoDbRestorer};

fn store_error(e: lifeboat_common::bus::BusError) -> AwsError {
    AwsError::retryable("dynamodb:CreateBackup", "SharedStoreUnavailable", e.to_string())
}

fn created_at(at: &aws_smithy_types::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(at.secs(), at.subsec_nanos()).unwrap_or_else(Utc::now)
}

/// One step of a table backup, in the table's account and region.
pub async fn step(
    restorer: &DynamoDbRestorer,
    task: &RestoreTask,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let job = task.backup_task.clone().unwrap_or_default();
    let config = restorer.accounts.config_for(&job.account_id, &job.region).await?;
    let ddb = dynamodb_client(&config, &job.account_id, &job.region);
    backup_step(&ddb, restorer.gate.store.as_ref(), task, attempt, progress).await
}

/// One step of a table backup: the backup until it is AVAILABLE, then point-in-time recovery
/// when the rule asks for it, then done. `store` keeps the backup's recovery point tags.
pub async fn backup_step(
    ddb: &aws_sdk_dynamodb::Client,
    store: &dyn SharedStore,
    task: &RestoreTask,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    if let Some(late) = past_completion_window(task, Utc::now()) {
        return Ok(late);
    }
    let job = task.backup_task.clone().unwrap_or_default();
    let name = dynamodb_backup_name(task);
    let table = job.resource_id.as_str();
    let known = match progress.id(ROLE_POINT) {
        Some(arn) => Some(arn.to_string()),
        None if progress.may_have_lost(attempt) => lost_backup(ddb, table, &name).await?,
        None => None,
    };
    let arn = match known {
        Some(arn) => arn,
        None => {
            // The table gone since selection fails the task with AWS's code (TableNotFoundException).
            let created = ddb
                .create_backup()
                .table_name(table)
                .backup_name(&name)
                .send()
                .await
                .map_err(|e| classify("dynamodb:CreateBackup", e))?;
            let details = created.backup_details().ok_or_else(|| {
                AwsError::retryable("dynamodb:CreateBackup", "NoBackupDetails", "CreateBackup answered no backup")
            })?;
            let arn = details.backup_arn().to_string();
            progress.record(ROLE_POINT, &arn);
            let (tags, _) = recovery_point_tags(task, created_at(details.backup_creation_date_time()), None);
            save_point_tags(store, &arn, &tags).await.map_err(store_error)?;
            if details.backup_status() != &BackupStatus::Available {
                return Ok(Step::Waiting {
                    what: format!("backup {name} of table {table} is being created"),
                    created: vec![arn],
                });
            }
            arn
        }
    };
    progress.record(ROLE_POINT, &arn);
    let described =
        ddb.describe_backup().backup_arn(&arn).send().await.map_err(|e| classify("dynamodb:DescribeBackup", e))?;
    let Some(details) = described.backup_description().and_then(|d| d.backup_details()) else {
        return Err(AwsError::retryable(
            "dynamodb:DescribeBackup",
            "NoBackupDetails",
            format!("backup {arn} not described"),
        ));
    };
    match details.backup_status() {
        BackupStatus::Available => {}
        BackupStatus::Deleted => {
            return Ok(Step::Failed { code: "BackupDeleted".into(), message: format!("backup {arn} was deleted") })
        }
        other => {
            return Ok(Step::Waiting {
                what: format!("backup {name} of table {table} is {}", other.as_str()),
                created: vec![arn],
            })
        }
    }
    // A no-op after the write that followed CreateBackup (the first write is kept); the write
    // itself when that one was lost, or the backup was found by name in the crash window.
    let (tags, dropped) = recovery_point_tags(task, created_at(details.backup_creation_date_time()), None);
    save_point_tags(store, &arn, &tags).await.map_err(store_error)?;
    let mut warnings = Vec::new();
    if !dropped.is_empty() {
        warnings.push(format!(
            "resource tags beyond {} per point: {}",
            lifeboat_common::backup::MAX_TAGS,
            dropped.join(", ")
        ));
    }
    if job.run.as_ref().and_then(|r| r.options.as_ref()).is_some_and(|o| o.continuous) {
        let pitr = continuous_backups(ddb, table).await;
        warn_or_retry(&mut warnings, "point-in-time recovery", pitr)?;
    }
    warnings.extend(uncopied(&job));
    Ok(Step::Done { message: format!("backup {name} of table {table} is available"), created: vec![arn], warnings })
}

/// The backup of that name an earlier delivery made without recording it, if any.
async fn lost_backup(ddb: &aws_sdk_dynamodb::Client, table: &str, name: &str) -> Result<Option<String>, AwsError> {
    let mut after: Option<String> = None;
    loop {
        let page = ddb
            .list_backups()
            .table_name(table)
            .set_exclusive_start_backup_arn(after.take())
            .send()
            .await
            .map_err(|e| classify("dynamodb:ListBackups", e))?;
        let found = page.backup_summaries().iter().find(|b| b.backup_name() == Some(name));
        if let Some(arn) = found.and_then(|b| b.backup_arn()) {
            return Ok(Some(arn.to_string()));
        }
        match page.last_evaluated_backup_arn() {
            Some(last) => after = Some(last.to_string()),
            None => return Ok(None),
        }
    }
}

/// Turns point-in-time recovery on (a no-op when it is on).
async fn continuous_backups(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), AwsError> {
    let spec =
        PointInTimeRecoverySpecification::builder().point_in_time_recovery_enabled(true).build().map_err(|e| {
            AwsError::task_failure("dynamodb:UpdateContinuousBackups", "InvalidSpecification", e.to_string())
        })?;
    ddb.update_continuous_backups()
        .table_name(table)
        .point_in_time_recovery_specification(spec)
        .send()
        .await
        .map_err(|e| classify("dynamodb:UpdateContinuousBackups", e))?;
    Ok(())
}

/// The rule's copies, which DynamoDB cannot make: a warning naming every destination.
fn uncopied(job: &BackupTask) -> Option<String> {
    let run = job.run.as_ref()?;
    let destinations: Vec<String> =
        run.copy_to.iter().map(|d| format!("{} in {}", d.region, copy_account(d, &job.account_id))).collect();
    (!destinations.is_empty()).then(|| {
        format!(
            "copies to {} (DynamoDB cannot copy an on-demand backup to another region or account)",
            destinations.join(", ")
        )
    })
}
