//! S3 restore sets (`lifeboat.work.s3`): a set whose target has `in_place` rolls its source
//! buckets back or undeletes in them ([`crate::s3_inplace`]); any other restores a protection
//! group's objects from the vault, one task per source bucket, from the index the set's time
//! rule picks. (helper h2)

use chrono::{DateTime, SecondsFormat, Utc};
use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_proto::{
    restore_task, Backup, ResourceType, RestoreRequest, RestoreSet, RestoreTask, S3Target, S3Vault, Source,
};
use lifeboat_s3::filters::ObjectFilters;
use lifeboat_s3::restore::settings;
use lifeboat_s3::vault::{self, IndexEntry};

use crate::select::TimeRule;

/// A set without a vault to restore from (none in the target, none configured).
pub const S3_NO_VAULT: &str = "S3_NO_VAULT";
/// A set whose target is incomplete or whose object filters do not parse.
pub const S3_INVALID_TARGET: &str = "S3_INVALID_TARGET";
/// No bucket of the group has an index the time rule picks.
pub const NO_MATCHING_BACKUPS: &str = "NO_MATCHING_BACKUPS";

/// Whether an S3 set names what it restores (a protection group, or the buckets it changes in
/// place), so that the blast-radius guard does not ask it for `all_resources`.
pub fn is_named_set(set: &RestoreSet) -> bool {
    let s3 = set.target.as_ref().and_then(|t| t.s3.as_ref());
    let named = s3.is_some_and(|s3| !s3.protection_group.is_empty() || s3.in_place.is_some());
    named && set.resource_types == [ResourceType::S3Bucket as i32]
}

/// The tasks of an S3 set, or the reason code and message it has none.
pub async fn plan(
    accounts: &Accounts,
    default_vault: Option<&S3Vault>,
    request: &RestoreRequest,
    set: &RestoreSet,
    source: &Source,
    rule: TimeRule,
) -> Result<Result<Vec<RestoreTask>, (String, String)>, AwsError> {
    let in_place = set.target.as_ref().and_then(|t| t.s3.as_ref()).and_then(|s3| s3.in_place.as_ref());
    if in_place.is_some() {
        return crate::s3_inplace::plan(accounts, request, set, source).await;
    }
    let mut target = set.target.as_ref().and_then(|t| t.s3.clone()).unwrap_or_default();
    let invalid = |message: String| Ok(Err((S3_INVALID_TARGET.to_string(), format!("set '{}': {message}", set.name))));
    if target.protection_group.is_empty() {
        return invalid("target.s3.protection_group: is required (the protection group to restore from)".into());
    }
    if target.bucket.is_empty() {
        return invalid("target.s3.bucket: is required (the bucket objects are restored to)".into());
    }
    if let Err(message) = ObjectFilters::parse(&target.object_filters_json) {
        return invalid(message);
    }
    let vault = match vault_of(&target, default_vault) {
        Ok(vault) => vault,
        Err((code, message)) => return Ok(Err((code, format!("set '{}': {message}", set.name)))),
    };
    let vault_account = accounts.resolve_account(&vault.account_id).await?;
    let vault_config = accounts.config_for(&vault_account, &vault.region).await?;
    let s3 = lifeboat_config::clients::s3_client(&vault_config, &vault_account, &vault.region);
    let group = target.protection_group.clone();
    let buckets = if target.source_buckets.is_empty() {
        vault::list_group_buckets(&s3, &vault, &group).await?
    } else {
        target.source_buckets.clone()
    };
    let source_account = accounts.resolve_account(&source.account_id).await?;
    if target.account_id.is_empty() {
        target.account_id = source_account.clone();
    }
    if target.region.is_empty() {
        target.region = source.region.clone();
    }
    let mut picked: Vec<(String, IndexEntry, usize)> = Vec::new();
    let mut without: Vec<String> = Vec::new();
    for bucket in &buckets {
        let indexes = vault::list_indexes(&s3, &vault, &group, bucket).await?;
        match choose(&indexes, rule) {
            Some(entry) => picked.push((bucket.clone(), entry.clone(), indexes.len())),
            None => without.push(bucket.clone()),
        }
    }
    let whole = vault::url(&vault.bucket, &vault::group_base(&vault, &group));
    if picked.is_empty() {
        let what = if buckets.is_empty() {
            "has no backed-up bucket".to_string()
        } else {
            format!("has no backup of [{}] that is the {rule}", buckets.join(", "))
        };
        return Ok(Err((NO_MATCHING_BACKUPS.to_string(), format!("protection group '{group}' in {whole} {what}"))));
    }
    // A bucket without a backup the rule picks is skipped; the tasks of the others say so.
    let skipped = if without.is_empty() {
        String::new()
    } else {
        format!("; skipped (no backup that is the {rule}): {}", without.join(", "))
    };
    let mut tasks = Vec::new();
    for (bucket, entry, of) in picked {
        let backup = Backup {
            backup_id: entry.key.clone(),
            resource_type: ResourceType::S3Bucket as i32,
            source_resource_id: bucket.clone(),
            account_id: source_account.clone(),
            region: source.region.clone(),
            created_at: Some(lifeboat_common::time::to_timestamp(entry.backed_up_at)),
            settings: [
                (settings::VAULT_BUCKET, vault.bucket.clone()),
                (settings::VAULT_REGION, vault.region.clone()),
                (settings::VAULT_PREFIX, vault.prefix.clone()),
                (settings::VAULT_ACCOUNT, vault_account.clone()),
                (settings::GROUP, group.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..Default::default()
        };
        let why = format!(
            "{bucket} as of {}: the {} of its {of} backups ({}){skipped}",
            entry.backed_up_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            rule_name(rule),
            vault::url(&vault.bucket, &entry.key),
        );
        let task_target = S3Target {
            vault_bucket: vault.bucket.clone(),
            vault_region: vault.region.clone(),
            vault_prefix: vault.prefix.clone(),
            source_buckets: vec![bucket.clone()],
            ..target.clone()
        };
        let kind = ResourceType::S3Bucket as i32;
        tasks.push(crate::service::restore_task(
            request,
            set,
            kind,
            backup,
            restore_task::Target::S3(task_target),
            why,
        ));
    }
    Ok(Ok(tasks))
}

/// The vault a set restores from: the target's (`vault_bucket` and `vault_region`, with
/// `vault_prefix`), else the deployment's; neither is `S3_NO_VAULT`.
fn vault_of(target: &S3Target, default_vault: Option<&S3Vault>) -> Result<S3Vault, (String, String)> {
    match (target.vault_bucket.is_empty(), target.vault_region.is_empty()) {
        (false, false) => Ok(S3Vault {
            bucket: target.vault_bucket.clone(),
            region: target.vault_region.clone(),
            prefix: target.vault_prefix.clone(),
            ..Default::default()
        }),
        (false, true) => Err((
            S3_INVALID_TARGET.to_string(),
            "target.s3.vault_region: is required with target.s3.vault_bucket (the vault's region)".to_string(),
        )),
        (true, false) => Err((
            S3_INVALID_TARGET.to_string(),
            "target.s3.vault_bucket: is required with target.s3.vault_region (the vault bucket)".to_string(),
        )),
        (true, true) => {
            default_vault.filter(|v| !v.bucket.is_empty() && !v.region.is_empty()).cloned().ok_or_else(|| {
                (
                    S3_NO_VAULT.to_string(),
                    "no vault: set target.s3.vault_bucket and vault_region, or LIFEBOAT_S3_VAULT_*".to_string(),
                )
            })
        }
    }
}

/// The index a time rule picks: the newest at or before a time, the oldest at or after one
/// (up to `until`), or the newest in a window (a restore writes one state of the bucket).
fn choose(indexes: &[IndexEntry], rule: TimeRule) -> Option<&IndexEntry> {
    let within = |e: &&IndexEntry, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| {
        from.is_none_or(|f| e.backed_up_at >= f) && to.is_none_or(|t| e.backed_up_at <= t)
    };
    let order = |a: &&IndexEntry, b: &&IndexEntry| (a.backed_up_at, &a.key).cmp(&(b.backed_up_at, &b.key));
    match rule {
        TimeRule::Before(at) => indexes.iter().filter(|e| within(e, None, Some(at))).max_by(order),
        TimeRule::After(at) => indexes.iter().filter(|e| within(e, Some(at), None)).min_by(order),
        TimeRule::Between(at, until) => indexes.iter().filter(|e| within(e, Some(at), Some(until))).min_by(order),
        TimeRule::Window(start, end) => indexes.iter().filter(|e| within(e, Some(start), Some(end))).max_by(order),
    }
}

/// `newest at or before ...` and the like, for the selection reason.
fn rule_name(rule: TimeRule) -> String {
    match rule {
        TimeRule::Window(..) => format!("newest {rule}"),
        _ => rule.to_string(),
    }
}
