//! The s3 service on `lifeboat.work.s3`, in the same shell as the resource services (claims,
//! progress records, status events, verdicts). A task with a `backup_task` backs one bucket of
//! a protection group up to the run's vault ([`crate::backup`]); a task whose target has
//! `in_place` rolls a versioned bucket back or undeletes in it ([`crate::rollback`]); any other
//! restores a group's backed-up objects into its target bucket ([`crate::restore`]).

use std::sync::Arc;

use async_trait::async_trait;
use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_common::bus::Bus;
use lifeboat_common::restore::{Progress, RestoreService, Restorer, ServiceConfig, Step};
use lifeboat_proto::{restore_task, ResourceType, RestoreTask, S3Target};

/// The work subject suffix and service name.
pub const KIND: &str = "s3";

#[derive(Clone, Debug)]
pub struct S3Config {
    pub service: ServiceConfig,
    /// Objects larger than this are copied in parts (UploadPartCopy). S3 copies at most 5 GiB
    /// in one CopyObject.
    pub multipart_threshold: u64,
    /// The size of each part of a multipart copy (at least 5 MiB, S3's minimum).
    pub part_size: u64,
    /// Object copies in flight per task.
    pub copy_concurrency: usize,
    /// A bucket's backup copies at most this many objects per step, then records what it has
    /// copied (a checkpoint beside the index) and continues at its next check: a step stays
    /// well inside the handler timeout however large the bucket.
    pub copies_per_step: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            service: ServiceConfig::default(),
            multipart_threshold: 64 * 1024 * 1024,
            part_size: 64 * 1024 * 1024,
            copy_concurrency: 16,
            copies_per_step: 10_000,
        }
    }
}

pub type S3Service = RestoreService<S3Restorer>;

/// The s3 service, ready to `run`.
pub fn service(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: S3Config) -> Arc<S3Service> {
    RestoreService::new(S3Restorer { context: Context { accounts, config: config.clone() } }, bus, config.service)
}

/// What every step needs: credentials per account and region, and the copy settings.
pub struct Context {
    pub accounts: Arc<Accounts>,
    pub config: S3Config,
}

impl Context {
    /// An S3 client in `account_id` (empty: the deployment's) and `region`.
    pub async fn client(&self, account_id: &str, region: &str) -> Result<aws_sdk_s3::Client, AwsError> {
        self.client_as(account_id, region, "").await
    }

    /// An S3 client through `role_arn` (empty: the deployment's role in that account).
    pub async fn client_as(
        &self,
        account_id: &str,
        region: &str,
        role_arn: &str,
    ) -> Result<aws_sdk_s3::Client, AwsError> {
        let config = self.accounts.config_as(account_id, region, role_arn).await?;
        Ok(lifeboat_config::clients::s3_client(&config, account_id, region))
    }
}

pub struct S3Restorer {
    context: Context,
}

/// The task's S3 target, if it has one.
pub fn target_of(task: &RestoreTask) -> Option<&S3Target> {
    match &task.target {
        Some(restore_task::Target::S3(target)) => Some(target),
        _ => None,
    }
}

#[async_trait]
impl Restorer for S3Restorer {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, task: &RestoreTask) -> Result<(), String> {
        if let Some(job) = &task.backup_task {
            lifeboat_common::backup::check_task(task, "s3", &[ResourceType::S3Bucket])?;
            let vault = job.run.as_ref().and_then(|r| r.vault.as_ref());
            return match vault {
                Some(v) if !v.bucket.is_empty() && !v.region.is_empty() => Ok(()),
                _ => Err("backup task without backup_task.run.vault (bucket, region)".into()),
            };
        }
        match target_of(task) {
            Some(t) if t.in_place.is_some() => crate::rollback::check(task, t),
            Some(t) => crate::restore::check(task, t),
            None => Err("task has no s3 target".into()),
        }
    }

    async fn step(&self, task: &RestoreTask, _attempt: u32, progress: &mut Progress) -> Result<Step, AwsError> {
        if task.backup_task.is_some() {
            return crate::backup::step(&self.context, task, progress).await;
        }
        match target_of(task) {
            Some(t) if t.in_place.is_some() => crate::rollback::step(&self.context, task, progress).await,
            _ => crate::restore::step(&self.context, task, progress).await,
        }
    }
}
