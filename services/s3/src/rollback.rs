//! Versioned buckets returned in place to their state at a time, and delete markers removed
//! in bulk. (helper h3)

use lifeboat_common::aws::AwsError;
use lifeboat_common::restore::{Progress, Step};
use lifeboat_proto::{RestoreTask, S3Target};

use crate::Context;

/// Whether an in-place task names its bucket, mode and time.
pub fn check(task: &RestoreTask, target: &S3Target) -> Result<(), String> {
    let _ = (task, target);
    Ok(())
}

pub async fn step(context: &Context, task: &RestoreTask, progress: &mut Progress) -> Result<Step, AwsError> {
    let _ = (context, task, progress);
    Err(AwsError::task_failure("s3:rollback", "NotImplemented", "the S3 rollback is being built"))
}
