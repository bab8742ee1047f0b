//! One bucket of a protection group backed up to the run's vault. (helper h1)

use lifeboat_common::aws::AwsError;
use lifeboat_common::restore::{Progress, Step};
use lifeboat_proto::RestoreTask;

use crate::Context;

/// Backs the task's bucket up to its run's vault.
pub async fn step(context: &Context, task: &RestoreTask, progress: &mut Progress) -> Result<Step, AwsError> {
    let _ = (context, task, progress);
    Err(AwsError::task_failure("s3:backup", "NotImplemented", "the S3 backup is being built"))
}
