//! A protection group's objects as of a backup time, restored into a target bucket. (helper h2)

use lifeboat_common::aws::AwsError;
use lifeboat_common::restore::{Progress, Step};
use lifeboat_proto::{RestoreTask, S3Target};

use crate::Context;

/// Whether a restore task names what it restores and where.
pub fn check(task: &RestoreTask, target: &S3Target) -> Result<(), String> {
    let _ = task;
    if target.bucket.is_empty() {
        return Err("task has no target.s3.bucket".into());
    }
    Ok(())
}

pub async fn step(context: &Context, task: &RestoreTask, progress: &mut Progress) -> Result<Step, AwsError> {
    let _ = (context, task, progress);
    Err(AwsError::task_failure("s3:restore", "NotImplemented", "the S3 restore is being built"))
}
