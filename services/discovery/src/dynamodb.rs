//! Finding DynamoDB backups: tables selected by their tags, their on-demand backups (paginated),
//! or their point-in-time recovery window; and the table settings a restore does not carry over,
//! captured now so they can be re-applied even if the source table is gone by then.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{BackupTypeFilter, PointInTimeRecoveryStatus, TimeToLiveStatus};
use chrono::{DateTime, Utc};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::time::{from_aws, to_timestamp};
use lifeboat_proto::{Backup, ResourceType};

use crate::select::Candidate;

/// A source table that matched the set's tags.
#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub arn: String,
    pub tags: HashMap<String, String>,
    /// What [`Backup::settings`] carries: `ttl_attribute`, `point_in_time_recovery`, `stream_view_type`.
    pub settings: HashMap<String, String>,
    /// Point-in-time recovery window, when enabled.
    pub restorable: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Every table in the client's region whose tags include all of `tags`.
pub async fn tables(ddb: &aws_sdk_dynamodb::Client, tags: &HashMap<String, String>) -> Result<Vec<Table>, AwsError> {
    let mut names = Vec::new();
    let mut pages = ddb.list_tables().into_paginator().send();
    while let Some(page) = pages.next().await {
        names.extend(page.map_err(|e| classify("dynamodb:ListTables", e))?.table_names().iter().cloned());
    }
    let mut tables = Vec::new();
    for name in names {
        let described =
            ddb.describe_table().table_name(&name).send().await.map_err(|e| classify("dynamodb:DescribeTable", e))?;
        let Some(description) = described.table() else { continue };
        let arn = description.table_arn().unwrap_or_default().to_string();
        let table_tags = table_tags(ddb, &arn).await?;
        if !crate::select::tags_match(tags, &table_tags) {
            continue;
        }
        let mut settings = HashMap::new();
        if let Some(stream) = description.stream_specification().filter(|s| s.stream_enabled()) {
            if let Some(view) = stream.stream_view_type() {
                settings.insert("stream_view_type".to_string(), view.as_str().to_string());
            }
        }
        let ttl = ddb
            .describe_time_to_live()
            .table_name(&name)
            .send()
            .await
            .map_err(|e| classify("dynamodb:DescribeTimeToLive", e))?;
        if let Some(ttl) = ttl.time_to_live_description() {
            if matches!(ttl.time_to_live_status(), Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling)) {
                settings.insert("ttl_attribute".to_string(), ttl.attribute_name().unwrap_or_default().to_string());
            }
        }
        let continuous = ddb
            .describe_continuous_backups()
            .table_name(&name)
            .send()
            .await
            .map_err(|e| classify("dynamodb:DescribeContinuousBackups", e))?;
        let pitr = continuous.continuous_backups_description().and_then(|c| c.point_in_time_recovery_description());
        let mut restorable = None;
        if let Some(pitr) =
            pitr.filter(|p| p.point_in_time_recovery_status() == Some(&PointInTimeRecoveryStatus::Enabled))
        {
            settings.insert("point_in_time_recovery".to_string(), "true".to_string());
            if let (Some(earliest), Some(latest)) =
                (pitr.earliest_restorable_date_time(), pitr.latest_restorable_date_time())
            {
                restorable = from_aws(earliest).zip(from_aws(latest));
            }
        }
        tables.push(Table { name, arn, tags: table_tags, settings, restorable });
    }
    Ok(tables)
}

async fn table_tags(ddb: &aws_sdk_dynamodb::Client, arn: &str) -> Result<HashMap<String, String>, AwsError> {
    let mut tags = HashMap::new();
    let mut next = None;
    loop {
        let page = ddb
            .list_tags_of_resource()
            .resource_arn(arn)
            .set_next_token(next)
            .send()
            .await
            .map_err(|e| classify("dynamodb:ListTagsOfResource", e))?;
        tags.extend(page.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())));
        next = page.next_token().map(str::to_string);
        if next.is_none() {
            return Ok(tags);
        }
    }
}

fn backup_of(table: &Table, account_id: &str, region: &str, backup_id: String, created_at: DateTime<Utc>) -> Backup {
    Backup {
        backup_id,
        resource_type: ResourceType::DynamodbTable as i32,
        source_resource_id: table.name.clone(),
        account_id: account_id.to_string(),
        region: region.to_string(),
        created_at: Some(to_timestamp(created_at)),
        tags: table.tags.clone(),
        settings: table.settings.clone(),
        ..Default::default()
    }
}

/// The available backups of `table`, every type (on-demand, AWS Backup, system).
pub async fn backups(
    ddb: &aws_sdk_dynamodb::Client,
    table: &Table,
    account_id: &str,
    region: &str,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    let mut found = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .list_backups()
            .table_name(&table.name)
            .backup_type(BackupTypeFilter::All)
            .set_exclusive_start_backup_arn(start)
            .send()
            .await
            .map_err(|e| classify("dynamodb:ListBackups", e))?;
        for summary in page.backup_summaries() {
            let (Some(arn), Some(created)) =
                (summary.backup_arn(), summary.backup_creation_date_time().and_then(from_aws))
            else {
                continue;
            };
            if summary.table_name().is_some_and(|name| name != table.name) {
                continue;
            }
            let candidate = Candidate {
                backup_id: arn.to_string(),
                source_resource_id: table.name.clone(),
                created_at: created,
                tags: table.tags.clone(),
            };
            found.push((candidate, backup_of(table, account_id, region, arn.to_string(), created)));
        }
        start = page.last_evaluated_backup_arn().map(str::to_string);
        if start.is_none() {
            return Ok(found);
        }
    }
}

/// A point-in-time restore of `table`: BEFORE restores the latest restorable time at or
/// before `at`, AFTER the earliest at or after it; `None` when the window does not allow it.
pub fn point_in_time(
    table: &Table,
    account_id: &str,
    region: &str,
    at: DateTime<Utc>,
    after: bool,
) -> Option<(Backup, String)> {
    let (earliest, latest) = table.restorable?;
    let restore_to = if after { at.max(earliest) } else { at.min(latest) };
    if restore_to < earliest || restore_to > latest {
        return None;
    }
    let mut backup = backup_of(table, account_id, region, table.arn.clone(), restore_to);
    backup.restore_time = Some(to_timestamp(restore_to));
    let why = format!(
        "point-in-time recovery to {} (restorable {} .. {})",
        restore_to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        earliest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    Some((backup, why))
}
