//! The backup tasks of a run's protection groups: one per bucket of each group, to the run's
//! vault.

use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_proto::{BackupRun, BackupTask, ResourceType, RestoreTask};

/// One backup task per bucket of each of the run's protection groups (none without groups or
/// without a vault: there is nowhere to back them up to). Empty account ids are resolved to
/// the account they default to, so that the task key names the real account.
pub async fn backup_tasks(
    accounts: &Accounts,
    request_id: &str,
    run: &BackupRun,
) -> Result<Vec<RestoreTask>, AwsError> {
    if run.protection_groups.is_empty() || run.vault.is_none() {
        return Ok(Vec::new());
    }
    let mut tasks = Vec::new();
    for group in &run.protection_groups {
        for bucket in &group.buckets {
            let account_id = accounts.resolve_account(&bucket.account_id).await?;
            let job = BackupTask {
                run: Some(run.clone()),
                resource_id: bucket.bucket.clone(),
                account_id,
                region: bucket.region.clone(),
                protection_group: group.name.clone(),
                ..Default::default()
            };
            tasks.push(lifeboat_common::backup::task(request_id, ResourceType::S3Bucket, job));
        }
    }
    Ok(tasks)
}
