//! A protection group's objects as of a backup time, restored into a target bucket. (helper h2)
//!
//! Discovery plans one task per source bucket of the group: `task.backup.backup_id` is the key
//! of the index its time rule picked, `backup.settings` say which vault and group it is in
//! ([`settings`]). The step reads that index, keeps the entries the target's object filters
//! select, and copies each from the vault to `target.prefix + key` in the target bucket (server
//! side, in parts above the multipart threshold), `copy_concurrency` at a time. A redelivered
//! task copies again: the copies land on the same keys with the same bytes.

use std::future::Future;
use std::pin::Pin;

use futures::stream::{self, StreamExt};
use lifeboat_common::aws::{absent_if_not_found, classify, AwsError};
use lifeboat_common::restore::{Progress, Step};
use lifeboat_proto::{Alert, RestoreTask, S3Target, S3Vault};

use crate::copy::{self, CopyFrom, CopyTo};
use crate::filters::ObjectFilters;
use crate::vault::{self, Entry};
use crate::Context;

/// The keys of `Backup.settings` a restore task reads its vault and group from.
pub mod settings {
    pub const VAULT_BUCKET: &str = "vault_bucket";
    pub const VAULT_REGION: &str = "vault_region";
    pub const VAULT_PREFIX: &str = "vault_prefix";
    /// The vault's account, resolved at planning (the deployment's when the vault names none).
    pub const VAULT_ACCOUNT: &str = "vault_account";
    pub const GROUP: &str = "group";
}

/// The target bucket does not exist (in the target account).
pub const TARGET_BUCKET_NOT_FOUND: &str = "TARGET_BUCKET_NOT_FOUND";
/// The index the task was planned from is no longer in the vault.
pub const INDEX_NOT_FOUND: &str = "INDEX_NOT_FOUND";
/// Some selected objects' copies are missing from the vault: the others are restored.
pub const S3_PARTIAL_RESTORE: &str = "S3_PARTIAL_RESTORE";
/// The object filters do not parse.
pub const INVALID_OBJECT_FILTERS: &str = "INVALID_OBJECT_FILTERS";

const BUCKET_NOT_FOUND: &[&str] = &["NoSuchBucket", "NotFound", "HTTP404"];

/// The vault a task's backup is in.
pub fn vault_of(task: &RestoreTask) -> Option<S3Vault> {
    let backup = task.backup.as_ref()?;
    let get = |key: &str| backup.settings.get(key).cloned().unwrap_or_default();
    let vault = S3Vault {
        bucket: get(settings::VAULT_BUCKET),
        region: get(settings::VAULT_REGION),
        prefix: get(settings::VAULT_PREFIX),
        account_id: get(settings::VAULT_ACCOUNT),
        kms_key_id: String::new(),
    };
    (!vault.bucket.is_empty() && !vault.region.is_empty()).then_some(vault)
}

/// Whether a restore task names what it restores and where.
pub fn check(task: &RestoreTask, target: &S3Target) -> Result<(), String> {
    if target.bucket.is_empty() {
        return Err("task has no target.s3.bucket".into());
    }
    let backup_id = task.backup.as_ref().map(|b| b.backup_id.as_str()).unwrap_or_default();
    if vault::IndexEntry::from_key(backup_id).is_none() {
        return Err(format!("task has no backup index to restore from (backup.backup_id {backup_id:?})"));
    }
    if vault_of(task).is_none() {
        return Err("task has no vault (backup.settings vault_bucket and vault_region)".into());
    }
    ObjectFilters::parse(&target.object_filters_json).map(|_| ())
}

/// `s3://bucket/prefix`.
fn destination(target: &S3Target) -> String {
    vault::url(&target.bucket, &target.prefix)
}

pub async fn step(context: &Context, task: &RestoreTask, progress: &mut Progress) -> Result<Step, AwsError> {
    let _ = progress;
    let Some(target) = crate::service::target_of(task) else {
        return Ok(Step::Failed { code: "INVALID_TASK".into(), message: "task has no s3 target".into() });
    };
    let filters = match ObjectFilters::parse(&target.object_filters_json) {
        Ok(filters) => filters,
        Err(message) => return Ok(Step::Failed { code: INVALID_OBJECT_FILTERS.into(), message }),
    };
    let Some(vault) = vault_of(task) else {
        return Ok(Step::Failed { code: "INVALID_TASK".into(), message: "task has no vault".into() });
    };
    let index_key = task.backup.as_ref().map(|b| b.backup_id.clone()).unwrap_or_default();
    let vault_s3 = context.client(&vault.account_id, &vault.region).await?;
    let Some(index) = vault::get_index(&vault_s3, &vault, &index_key).await? else {
        let message = format!("the backup's index {} is no longer in the vault", vault::url(&vault.bucket, &index_key));
        return Ok(Step::Failed { code: INDEX_NOT_FOUND.into(), message });
    };
    let s3 = context.client_as(&target.account_id, &target.region, &task.target_role_arn).await?;
    let head = s3.head_bucket().bucket(&target.bucket).send().await.map_err(|e| classify("s3:HeadBucket", e));
    if absent_if_not_found(head, BUCKET_NOT_FOUND)?.is_none() {
        return Ok(Step::Failed { code: TARGET_BUCKET_NOT_FOUND.into(), message: no_bucket(target) });
    }
    let selected: Vec<&Entry> = index.objects.iter().filter(|e| filters.matches(e)).collect();
    // Boxed, built before the stream: a closure in the stream's type makes the step's future
    // not general enough over lifetimes for the async trait.
    type Copying<'a> = Pin<Box<dyn Future<Output = (&'a Entry, Result<(), AwsError>)> + Send + 'a>>;
    let (s3, vault) = (&s3, &vault);
    let copies: Vec<Copying<'_>> = selected
        .into_iter()
        .map(|entry| -> Copying<'_> {
            Box::pin(async move { (entry, restore_one(context, s3, vault, target, entry).await) })
        })
        .collect();
    let results: Vec<(&Entry, Result<(), AwsError>)> =
        stream::iter(copies).buffer_unordered(context.config.copy_concurrency.max(1)).collect().await;
    let (mut objects, mut bytes, mut missing) = (0u64, 0i64, Vec::new());
    for (entry, result) in results {
        match result {
            Ok(()) => {
                objects += 1;
                bytes += entry.size;
            }
            // The vault's copy is gone (CopyObject says NoSuchKey, the HeadObject before a
            // multipart copy a bare 404).
            Err(e) if e.code == "NoSuchKey" || (e.operation == "s3:HeadObject" && is_not_found(&e)) => {
                missing.push(entry.key.clone())
            }
            Err(e) if is_not_found(&e) => {
                // The target bucket went away under the restore.
                return Ok(Step::Failed { code: TARGET_BUCKET_NOT_FOUND.into(), message: no_bucket(target) });
            }
            Err(e) => return Err(e),
        }
    }
    let created = vec![destination(target)];
    let message = format!("{objects} objects, {bytes} bytes restored to {}", destination(target));
    if missing.is_empty() {
        return Ok(Step::Done { message, created, warnings: Vec::new() });
    }
    missing.sort();
    let summary = format!(
        "{} objects of the index have no copy in the vault {}: {}",
        missing.len(),
        vault.bucket,
        missing.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
    );
    let alert = Alert {
        code: S3_PARTIAL_RESTORE.into(),
        severity: "warning".into(),
        summary: summary.clone(),
        count: missing.len() as u64,
        report_url: vault::url(&vault.bucket, &index_key),
    };
    Ok(Step::Partial { code: S3_PARTIAL_RESTORE.into(), message: format!("{message}; {summary}"), created, alert })
}

fn is_not_found(e: &AwsError) -> bool {
    BUCKET_NOT_FOUND.contains(&e.code.as_str())
}

/// `target.s3.bucket: ... does not exist`.
fn no_bucket(target: &S3Target) -> String {
    format!(
        "target.s3.bucket: bucket {} does not exist in account {} (create it, or name another)",
        target.bucket, target.account_id
    )
}

/// Copies one entry's vault copy to `target.prefix + key`.
async fn restore_one(
    context: &Context,
    s3: &aws_sdk_s3::Client,
    vault: &S3Vault,
    target: &S3Target,
    entry: &Entry,
) -> Result<(), AwsError> {
    let key = format!("{}{}", target.prefix, entry.key);
    let from = CopyFrom { bucket: &vault.bucket, key: &entry.vault_key, version_id: "", size: entry.size, etag: "" };
    let to = CopyTo { bucket: &target.bucket, key: &key, kms_key_id: &target.kms_key_id };
    copy::copy(s3, &from, &to, &context.config).await
}

#[cfg(test)]
mod tests {
    use lifeboat_proto::Backup;

    use super::*;

    fn task(settings: &[(&str, &str)], backup_id: &str) -> RestoreTask {
        RestoreTask {
            backup: Some(Backup {
                backup_id: backup_id.into(),
                settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const INDEX: &str = "s3/web/assets/index/20261205T101500Z-0a1b2c3d.json";

    fn planned() -> RestoreTask {
        task(
            &[
                (settings::VAULT_BUCKET, "vault"),
                (settings::VAULT_REGION, "us-west-2"),
                (settings::VAULT_PREFIX, "s3/"),
                (settings::GROUP, "web"),
            ],
            INDEX,
        )
    }

    #[test]
    fn a_task_needs_a_target_bucket_an_index_a_vault_and_filters_that_parse() {
        let target = S3Target { bucket: "restored".into(), ..Default::default() };
        assert_eq!(check(&planned(), &target), Ok(()));
        let err = check(&planned(), &S3Target::default()).unwrap_err();
        assert!(err.contains("target.s3.bucket"), "{err}");
        let err = check(&task(&[], INDEX), &target).unwrap_err();
        assert!(err.contains("vault"), "{err}");
        let err = check(&RestoreTask { backup: None, ..planned() }, &target).unwrap_err();
        assert!(err.contains("backup"), "{err}");
        let bad = S3Target { object_filters_json: r#"{"colour":"red"}"#.into(), ..target };
        let err = check(&planned(), &bad).unwrap_err();
        assert!(err.contains("target.s3.object_filters_json.colour"), "{err}");
    }

    #[test]
    fn the_vault_comes_from_the_backup_settings() {
        let vault = vault_of(&planned()).unwrap();
        assert_eq!(
            (vault.bucket.as_str(), vault.region.as_str(), vault.prefix.as_str()),
            ("vault", "us-west-2", "s3/")
        );
        assert!(vault.account_id.is_empty(), "the deployment's account");
        assert_eq!(vault_of(&task(&[(settings::VAULT_BUCKET, "vault")], INDEX)), None);
    }
}
