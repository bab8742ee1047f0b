//! Finding DynamoDB backups. Backups are listed once for the whole region (every type: on-demand,
//! AWS Backup, and the SYSTEM backups DynamoDB keeps of deleted tables), so a table that was
//! deleted is found by its backups; tables that still exist are checked with one DescribeTable
//! each. Point-in-time recovery needs the table, so it looks at existing tables only. The
//! settings a restore does not carry over are captured now (from the table, or from the backup
//! when the table is gone) so the restoring service can re-apply them.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_dynamodb::types::{
    BackupStatus, BackupType, BackupTypeFilter, PointInTimeRecoveryStatus, SseType, TableDescription,
    TimeToLiveDescription, TimeToLiveStatus,
};
use chrono::{DateTime, Duration, Utc};
use lifeboat_common::aws::{absent_if_not_found, classify, AwsError};
use lifeboat_common::time::{from_aws, to_timestamp};
use lifeboat_proto::{Backup, ResourceType, Source};

use crate::select::{names_match, pick, tags_match, Candidate, TimeRule};

/// Keys of [`Backup::settings`] for DynamoDB, shared with the restoring service.
pub use lifeboat_common::settings::dynamodb as setting;

/// A source table that exists and matched the set's names and tags.
#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub arn: String,
    /// DynamoDB's id of this incarnation of the table (a re-created table gets a new one).
    pub table_id: Option<String>,
    pub tags: HashMap<String, String>,
    /// What [`Backup::settings`] carries, see [`setting`].
    pub settings: HashMap<String, String>,
    /// Point-in-time recovery window, when enabled.
    pub restorable: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Every table in the client's region whose name matches `names` (any, when empty) and whose
/// tags include all of `tags`: for point-in-time recovery.
pub async fn tables(
    ddb: &aws_sdk_dynamodb::Client,
    tags: &HashMap<String, String>,
    names: &[String],
) -> Result<Vec<Table>, AwsError> {
    let mut tables = Vec::new();
    for name in table_names(ddb).await? {
        if !names_match(names, &[&name]) {
            continue;
        }
        if let Found::Table(table) = table(ddb, &name, tags).await? {
            tables.push(table);
        }
    }
    Ok(tables)
}

/// The names of every table in the region (ListTables, 100 a page).
pub async fn table_names(ddb: &aws_sdk_dynamodb::Client) -> Result<Vec<String>, AwsError> {
    let mut names = Vec::new();
    let mut pages = ddb.list_tables().into_paginator().send();
    while let Some(page) = pages.next().await {
        names.extend(page.map_err(|e| classify("dynamodb:ListTables", e))?.table_names().iter().cloned());
    }
    Ok(names)
}

/// What a table lookup found.
enum Found {
    Table(Table),
    /// It exists, but its tags do not match.
    Unmatched,
    Gone,
}

/// One table by name: one DescribeTable and its tags; its TTL and continuous backups only when
/// the tags match.
async fn table(ddb: &aws_sdk_dynamodb::Client, name: &str, tags: &HashMap<String, String>) -> Result<Found, AwsError> {
    let described =
        ddb.describe_table().table_name(name).send().await.map_err(|e| classify("dynamodb:DescribeTable", e));
    let Some(description) =
        absent_if_not_found(described, &["ResourceNotFoundException"])?.and_then(|d| d.table().cloned())
    else {
        return Ok(Found::Gone);
    };
    let arn = description.table_arn().unwrap_or_default().to_string();
    let table_tags = resource_tags(ddb, &arn).await?;
    if !tags_match(tags, &table_tags) {
        return Ok(Found::Unmatched);
    }
    let mut settings = table_settings(&description);
    let ttl = ddb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| classify("dynamodb:DescribeTimeToLive", e))?;
    settings.extend(ttl_setting(ttl.time_to_live_description()));
    let continuous = ddb
        .describe_continuous_backups()
        .table_name(name)
        .send()
        .await
        .map_err(|e| classify("dynamodb:DescribeContinuousBackups", e))?;
    let pitr = continuous.continuous_backups_description().and_then(|c| c.point_in_time_recovery_description());
    let mut restorable = None;
    if let Some(pitr) = pitr.filter(|p| p.point_in_time_recovery_status() == Some(&PointInTimeRecoveryStatus::Enabled))
    {
        settings.insert(setting::POINT_IN_TIME_RECOVERY.to_string(), "true".to_string());
        if let (Some(earliest), Some(latest)) =
            (pitr.earliest_restorable_date_time(), pitr.latest_restorable_date_time())
        {
            restorable = from_aws(earliest).zip(from_aws(latest));
        }
    }
    Ok(Found::Table(Table {
        name: name.to_string(),
        arn,
        table_id: description.table_id().map(str::to_string),
        tags: table_tags,
        settings,
        restorable,
    }))
}

/// Stream, billing mode, deletion protection and KMS key of an existing table.
fn table_settings(description: &TableDescription) -> HashMap<String, String> {
    let mut settings = HashMap::new();
    if let Some(view) =
        description.stream_specification().filter(|s| s.stream_enabled()).and_then(|s| s.stream_view_type())
    {
        settings.insert(setting::STREAM_VIEW_TYPE.to_string(), view.as_str().to_string());
    }
    if let Some(mode) = description.billing_mode_summary().and_then(|b| b.billing_mode()) {
        settings.insert(setting::BILLING_MODE.to_string(), mode.as_str().to_string());
    }
    if description.deletion_protection_enabled() == Some(true) {
        settings.insert(setting::DELETION_PROTECTION.to_string(), "true".to_string());
    }
    let sse = description.sse_description().filter(|s| s.sse_type() == Some(&SseType::Kms));
    if let Some(key) = sse.and_then(|s| s.kms_master_key_arn()).filter(|k| !k.is_empty()) {
        settings.insert(setting::SSE_KMS_KEY_ARN.to_string(), key.to_string());
    }
    settings
}

fn ttl_setting(ttl: Option<&TimeToLiveDescription>) -> Option<(String, String)> {
    let ttl = ttl?;
    if !matches!(ttl.time_to_live_status(), Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling)) {
        return None;
    }
    Some((setting::TTL_ATTRIBUTE.to_string(), ttl.attribute_name()?.to_string()))
}

/// The tags of a table, or of an AWS Backup recovery point by its ARN.
async fn resource_tags(ddb: &aws_sdk_dynamodb::Client, arn: &str) -> Result<HashMap<String, String>, AwsError> {
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

/// One available backup as ListBackups shows it.
#[derive(Clone, Debug)]
pub struct Listed {
    pub backup_arn: String,
    pub table_name: String,
    pub table_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub backup_type: BackupType,
    pub size_bytes: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The creation-time range ListBackups can narrow to for `rule`: the lower bound is inclusive,
/// the upper exclusive (so one second is added to keep a backup taken at the bound itself). A
/// bound before 1970 or past year 9999 (a catalog's "everything") is left open.
pub fn time_bounds(rule: TimeRule) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    const YEAR_10000: i64 = 253_402_300_800;
    let from = |at: DateTime<Utc>| Some(at).filter(|t| t.timestamp() >= 0);
    let through =
        |at: DateTime<Utc>| at.checked_add_signed(Duration::seconds(1)).filter(|t| t.timestamp() < YEAR_10000);
    match rule {
        TimeRule::Before(at) => (None, through(at)),
        TimeRule::After(at) => (from(at), None),
        TimeRule::Between(at, until) => (from(at), through(until)),
        TimeRule::Window(start, end) => (from(start), through(end)),
    }
}

fn aws_time(at: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(at.timestamp())
}

/// Every available backup in the region created within `bounds`, of every type (user, SYSTEM,
/// AWS_BACKUP), over all pages.
pub async fn list_backups(
    ddb: &aws_sdk_dynamodb::Client,
    bounds: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
) -> Result<Vec<Listed>, AwsError> {
    let mut found = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .list_backups()
            .backup_type(BackupTypeFilter::All)
            .set_time_range_lower_bound(bounds.0.map(aws_time))
            .set_time_range_upper_bound(bounds.1.map(aws_time))
            .set_exclusive_start_backup_arn(start)
            .send()
            .await
            .map_err(|e| classify("dynamodb:ListBackups", e))?;
        for summary in page.backup_summaries() {
            let (Some(arn), Some(table_name), Some(created)) =
                (summary.backup_arn(), summary.table_name(), summary.backup_creation_date_time().and_then(from_aws))
            else {
                continue;
            };
            // CREATING and DELETED backups cannot be restored.
            if summary.backup_status().is_some_and(|s| s != &BackupStatus::Available) {
                continue;
            }
            found.push(Listed {
                backup_arn: arn.to_string(),
                table_name: table_name.to_string(),
                table_id: summary.table_id().map(str::to_string),
                created_at: created,
                backup_type: summary.backup_type().cloned().unwrap_or(BackupType::User),
                size_bytes: summary.backup_size_bytes(),
                expires_at: summary.backup_expiry_date_time().and_then(from_aws),
            });
        }
        start = page.last_evaluated_backup_arn().map(str::to_string);
        if start.is_none() {
            return Ok(found);
        }
    }
}

/// Where a listed backup's table stands.
enum Origin {
    Existing(Table),
    /// No table by that name, or one with another table id (deleted and created again).
    Deleted,
}

/// The backups a set selects among every backup in the region: the table name must match one of
/// `source.names` (when given) and the tags all of `source.tags`. An existing table is judged by
/// its tags now; a deleted one by the tags of its backup where AWS keeps them (AWS Backup recovery
/// points), and otherwise by its name only, which the reason says. Returns (backup, why).
pub async fn backups(
    ddb: &aws_sdk_dynamodb::Client,
    source: &Source,
    rule: TimeRule,
    account_id: &str,
    region: &str,
) -> Result<Vec<(Backup, String)>, AwsError> {
    let mut listed = list_backups(ddb, time_bounds(rule)).await?;
    listed.retain(|b| names_match(&source.names, &[&b.table_name]));
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let existing: HashSet<String> = table_names(ddb).await?.into_iter().collect();
    let mut origins: BTreeMap<String, Found> = BTreeMap::new();
    for name in listed.iter().map(|b| &b.table_name) {
        if existing.contains(name) && !origins.contains_key(name) {
            origins.insert(name.clone(), table(ddb, name, &source.tags).await?);
        }
    }
    let deleted_selectable = source.tags.is_empty() || !source.names.is_empty();
    let mut kept = Vec::new();
    for backup in listed {
        let origin = match origins.get(&backup.table_name) {
            Some(Found::Table(table)) if same_incarnation(table, &backup) => Origin::Existing(table.clone()),
            Some(Found::Unmatched) => continue,
            // Not there, gone since ListTables, or deleted and created again under the same name.
            _ => Origin::Deleted,
        };
        // A deleted table's tags are known only from AWS Backup recovery points (checked once picked).
        if matches!(origin, Origin::Deleted) && !deleted_selectable && backup.backup_type != BackupType::AwsBackup {
            continue;
        }
        kept.push((backup, origin));
    }
    let candidates: Vec<Candidate> = kept
        .iter()
        .map(|(b, _)| Candidate {
            backup_id: b.backup_arn.clone(),
            source_resource_id: b.table_name.clone(),
            created_at: b.created_at,
            tags: HashMap::new(),
        })
        .collect();
    let mut picked = Vec::new();
    for (index, why) in pick(&candidates, rule) {
        let (listed, origin) = &kept[index];
        match origin {
            Origin::Existing(table) => {
                let mut backup = backup_of(table, account_id, region, listed.backup_arn.clone(), listed.created_at);
                describe_listing(&mut backup, listed);
                picked.push((backup, why));
            }
            Origin::Deleted => {
                if let Some(found) = deleted_table_backup(ddb, source, listed, account_id, region, why).await? {
                    picked.push(found);
                }
            }
        }
    }
    Ok(picked)
}

fn same_incarnation(table: &Table, backup: &Listed) -> bool {
    match (&table.table_id, &backup.table_id) {
        (Some(now), Some(then)) => now == then,
        _ => true,
    }
}

/// Size and expiry from the listing.
fn describe_listing(backup: &mut Backup, listed: &Listed) {
    backup.size_gib = listed.size_bytes.map(gib).unwrap_or_default();
    backup.expires_at = listed.expires_at.map(to_timestamp);
}

fn gib(bytes: i64) -> i64 {
    const GIB: i64 = 1 << 30;
    (bytes.max(0) + GIB - 1) / GIB
}

/// The backup of a table that no longer exists, with its tags where AWS Backup keeps them and
/// the settings DescribeBackup reports; `None` when its known tags do not match.
async fn deleted_table_backup(
    ddb: &aws_sdk_dynamodb::Client,
    source: &Source,
    listed: &Listed,
    account_id: &str,
    region: &str,
    why: String,
) -> Result<Option<(Backup, String)>, AwsError> {
    let tags = if listed.backup_type == BackupType::AwsBackup {
        // Recovery points carry the table's tags from backup time where tagging them is supported.
        match resource_tags(ddb, &listed.backup_arn).await {
            Ok(tags) if !tags.is_empty() => Some(tags),
            Ok(_) => None,
            Err(e) if e.is_retryable() => return Err(e),
            Err(_) => None,
        }
    } else {
        None
    };
    let by_tags = match &tags {
        Some(tags) if !tags_match(&source.tags, tags) => return Ok(None),
        Some(_) => "its backup's tags",
        None if source.tags.is_empty() => "",
        None if source.names.is_empty() => return Ok(None),
        None => "selected by name only: its tags are not known",
    };
    let described = ddb
        .describe_backup()
        .backup_arn(&listed.backup_arn)
        .send()
        .await
        .map_err(|e| classify("dynamodb:DescribeBackup", e))?;
    let description = described.backup_description();
    let mut settings = HashMap::new();
    settings.insert(setting::TABLE_DELETED.to_string(), "true".to_string());
    let mut backup = Backup {
        backup_id: listed.backup_arn.clone(),
        resource_type: ResourceType::DynamodbTable as i32,
        source_resource_id: listed.table_name.clone(),
        account_id: account_id.to_string(),
        region: region.to_string(),
        created_at: Some(to_timestamp(listed.created_at)),
        tags: tags.clone().unwrap_or_default(),
        ..Default::default()
    };
    describe_listing(&mut backup, listed);
    if let Some(table) = description.and_then(|d| d.source_table_details()) {
        if let Some(mode) = table.billing_mode() {
            settings.insert(setting::BILLING_MODE.to_string(), mode.as_str().to_string());
        }
        if backup.size_gib == 0 {
            backup.size_gib = table.table_size_bytes().map(gib).unwrap_or_default();
        }
    }
    if let Some(features) = description.and_then(|d| d.source_table_feature_details()) {
        if let Some(view) =
            features.stream_description().filter(|s| s.stream_enabled()).and_then(|s| s.stream_view_type())
        {
            settings.insert(setting::STREAM_VIEW_TYPE.to_string(), view.as_str().to_string());
        }
        settings.extend(ttl_setting(features.time_to_live_description()));
        let sse = features.sse_description().filter(|s| s.sse_type() == Some(&SseType::Kms));
        if let Some(key) = sse.and_then(|s| s.kms_master_key_arn()).filter(|k| !k.is_empty()) {
            settings.insert(setting::SSE_KMS_KEY_ARN.to_string(), key.to_string());
            backup.encrypted = true;
            backup.kms_key_id = key.to_string();
        }
    }
    // DynamoDB takes a SYSTEM backup when a table with point-in-time recovery is deleted.
    if listed.backup_type == BackupType::System {
        settings.insert(setting::POINT_IN_TIME_RECOVERY.to_string(), "true".to_string());
    }
    backup.settings = settings;
    let kind = match listed.backup_type {
        BackupType::System => "SYSTEM backup",
        BackupType::AwsBackup => "AWS Backup recovery point",
        _ => "on-demand backup",
    };
    let mut why = format!("{why}; table {} no longer exists, restored from its {kind}", listed.table_name);
    if !by_tags.is_empty() {
        why = format!("{why} ({by_tags})");
    }
    Ok(Some((backup, why)))
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
        encrypted: table.settings.contains_key(setting::SSE_KMS_KEY_ARN),
        kms_key_id: table.settings.get(setting::SSE_KMS_KEY_ARN).cloned().unwrap_or_default(),
        ..Default::default()
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

/// Checks that planning can restore into `target_account`: DynamoDB restores a backup (or a
/// point in time) only into the account that holds it.
pub fn cross_account_check(
    set_name: &str,
    source_account: &str,
    target_account: &str,
    target_role_arn: &str,
) -> Result<(), AwsError> {
    // The role's account is where the restore would land when no target account is named.
    let role_account = target_role_arn.split(':').nth(4).filter(|a| !a.is_empty());
    let target = if target_account != source_account { Some(target_account) } else { role_account };
    match target {
        Some(target) if target != source_account => Err(AwsError::task_failure(
            "plan",
            CROSS_ACCOUNT_UNSUPPORTED,
            format!(
                "set '{set_name}': DynamoDB cannot restore a backup of account {source_account} into account \
                 {target}; restore into {source_account} (leave target.dynamodb.account_id empty and no \
                 target_role_arn of another account), then copy the data across, or copy the backup into \
                 {target} with AWS Backup (a cross-account copy to a vault there) and restore it in {target}"
            ),
        )),
        _ => Ok(()),
    }
}

pub use lifeboat_common::restore::reason::CROSS_ACCOUNT_UNSUPPORTED;
