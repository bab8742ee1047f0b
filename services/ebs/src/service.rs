//! The EBS service: the shared restore shell around [`EbsRestorer`], which consumes
//! `lifeboat.work.ebs` and advances each volume restore, and each backup of a volume or of an
//! instance's volumes, one step per delivery.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_common::bus::Bus;
use lifeboat_common::quota::Cap;
use lifeboat_common::restore::{Progress, RestoreService, Restorer, ServiceConfig, Step};
use lifeboat_proto::{restore_task, EbsTarget, ResourceType, RestoreTask};

use crate::restore::{restore_step, Clients, Context};

#[derive(Clone, Debug)]
pub struct EbsConfig {
    pub service: ServiceConfig,
    /// Cross-region snapshot copies in flight per destination account and region, all replicas
    /// together, when `service.quotas` does not name `ebs.copies` (AWS's 20 when neither does).
    pub max_copies_per_region: Option<u32>,
    /// How long a batched status check waits for other tasks' ids before it calls AWS.
    pub batch_window: Duration,
}

impl Default for EbsConfig {
    fn default() -> Self {
        Self { service: ServiceConfig::default(), max_copies_per_region: None, batch_window: Duration::from_millis(50) }
    }
}

pub type EbsService = RestoreService<EbsRestorer>;

/// The EBS service, ready to `run`.
pub fn service(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: EbsConfig) -> Arc<EbsService> {
    let mut quotas = config.service.quotas.clone();
    if let Some(limit) = config.max_copies_per_region {
        quotas.caps.entry(Cap::SnapshotCopies).or_insert(limit);
    }
    let context = Context::new(bus.shared(), quotas, config.batch_window);
    let restorer = EbsRestorer { accounts, context };
    RestoreService::new(restorer, bus, config.service)
}

pub struct EbsRestorer {
    accounts: Arc<Accounts>,
    context: Context,
}

fn ebs_target(task: &RestoreTask) -> Option<&EbsTarget> {
    match &task.target {
        Some(restore_task::Target::Ebs(target)) => Some(target),
        _ => None,
    }
}

impl EbsRestorer {
    async fn clients(&self, task: &RestoreTask, target: &EbsTarget) -> Result<Clients, AwsError> {
        let backup = task.backup.clone().unwrap_or_default();
        let target_config = self.accounts.config_as(&target.account_id, &target.region, &task.target_role_arn).await?;
        let source_config = if backup.account_id == target.account_id && backup.region == target.region {
            target_config.clone()
        } else {
            self.accounts.config_for(&backup.account_id, &backup.region).await?
        };
        Ok(Clients {
            target: lifeboat_common::aws::ec2_client(&target_config, &target.account_id, &target.region),
            source: lifeboat_common::aws::ec2_client(&source_config, &backup.account_id, &backup.region),
        })
    }
}

#[async_trait]
impl Restorer for EbsRestorer {
    fn kind(&self) -> &'static str {
        "ebs"
    }

    fn check(&self, task: &RestoreTask) -> Result<(), String> {
        if task.backup_task.is_some() {
            let kinds = [ResourceType::EbsVolume, ResourceType::EbsVolumeSet];
            return lifeboat_common::backup::check_task(task, "EBS", &kinds);
        }
        match ebs_target(task) {
            Some(target) if task.backup.is_some() && !target.region.is_empty() && !target.account_id.is_empty() => {
                Ok(())
            }
            _ => Err("task has no backup or no complete EBS target".into()),
        }
    }

    async fn step(&self, task: &RestoreTask, attempt: u32, progress: &mut Progress) -> Result<Step, AwsError> {
        if task.backup_task.is_some() {
            let clients = crate::backup::Clients::for_task(&self.accounts, task).await?;
            return crate::backup::step(&self.context, &clients, task, attempt, progress).await;
        }
        let target = ebs_target(task).cloned().unwrap_or_default();
        let clients = self.clients(task, &target).await?;
        restore_step(&self.context, &clients, task, &target, attempt, progress).await
    }
}
