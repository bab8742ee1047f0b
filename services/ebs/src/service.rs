//! The EBS service: consumes `lifeboat.work.ebs`, advances each restore one step per delivery
//! and reports every phase.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lifeboat_common::aws::{backoff, Accounts, AwsError};
use lifeboat_common::bus::{Bus, Delivery, Queue};
use lifeboat_common::events::{task_event, Reporter};
use lifeboat_common::{subjects, ConsumerOptions, Handler, Outcome};
use lifeboat_proto::{restore_task, EbsTarget, RestoreTask, StatusEvent, TaskPhase};
use prost::Message;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::restore::{restore_step, Clients, Limits, Step};

/// Reason codes of the EBS service (AWS error codes are reported as they are).
pub mod reason {
    pub const WAIT_TIMEOUT: &str = "WAIT_TIMEOUT";
    pub const INVALID_TASK: &str = "INVALID_TASK";
    pub const POISON_MESSAGE: &str = "POISON_MESSAGE";
}

#[derive(Clone, Debug)]
pub struct EbsConfig {
    pub consumer: ConsumerOptions,
    /// Re-checks of a volume or copy in progress before the task fails with WAIT_TIMEOUT,
    /// unless the request's options say otherwise.
    pub max_wait_checks: u32,
    /// Delay before the first re-check; doubles up to `check_max`.
    pub check_initial: Duration,
    pub check_max: Duration,
    /// Delay after a retryable AWS error (throttling, 5xx); doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub max_copies_per_region: usize,
}

impl Default for EbsConfig {
    fn default() -> Self {
        Self {
            // Deliveries outlast wait checks, so a slow copy ends as WAIT_TIMEOUT, not a dead letter.
            consumer: ConsumerOptions { max_deliveries: 1000, ..ConsumerOptions::default() },
            // With checks every 30 s at most: six hours, enough for a cross-region copy of a
            // large snapshot.
            max_wait_checks: 720,
            check_initial: Duration::from_secs(2),
            check_max: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            max_copies_per_region: subjects::MAX_SNAPSHOT_COPIES_PER_REGION,
        }
    }
}

pub struct EbsService {
    accounts: Arc<Accounts>,
    bus: Arc<dyn Bus>,
    reporter: Reporter,
    config: EbsConfig,
    limits: Limits,
    /// Two deliveries of one task in this process run one after the other, so the second sees
    /// what the first created.
    task_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// What to report and how to settle after a step.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub phase: TaskPhase,
    pub reason_code: String,
    pub message: String,
    pub created: Vec<String>,
    pub outcome: Outcome,
}

/// Turns a step's result into a report and a settlement. Retryable errors and work in progress
/// come back by delayed redelivery; a task waits at most `max_wait_checks` deliveries.
pub fn decide(result: Result<Step, AwsError>, attempt: u32, config: &EbsConfig, max_wait_checks: u32) -> Decision {
    let done = |phase, reason_code: String, message: String, created| Decision {
        phase,
        reason_code,
        message,
        created,
        outcome: Outcome::Done,
    };
    match result {
        Ok(Step::Done { volume_id, created }) => {
            done(TaskPhase::Succeeded, String::new(), format!("volume {volume_id} is available"), created)
        }
        Ok(Step::Failed { code, message }) => done(TaskPhase::Failed, code, message, Vec::new()),
        Ok(Step::Waiting { what, created }) if attempt >= max_wait_checks => done(
            TaskPhase::Failed,
            reason::WAIT_TIMEOUT.to_string(),
            format!("gave up after {attempt} checks: {what}"),
            created,
        ),
        Ok(Step::Waiting { what, created }) => Decision {
            phase: TaskPhase::Waiting,
            reason_code: String::new(),
            message: what,
            created,
            outcome: Outcome::RetryAfter(backoff(attempt, config.check_initial, config.check_max)),
        },
        Err(e) if e.is_retryable() => Decision {
            phase: TaskPhase::Waiting,
            reason_code: e.code.clone(),
            message: format!("retrying: {e}"),
            created: Vec::new(),
            outcome: Outcome::RetryAfter(backoff(attempt, config.retry_initial, config.retry_max)),
        },
        Err(e) => done(TaskPhase::Failed, e.code.clone(), e.to_string(), Vec::new()),
    }
}

impl EbsService {
    pub fn new(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: EbsConfig) -> Arc<Self> {
        let reporter = Reporter::new(bus.clone(), "ebs");
        let limits = Limits::new(config.max_copies_per_region);
        Arc::new(Self { accounts, bus, reporter, config, limits, task_locks: Mutex::new(HashMap::new()) })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> lifeboat_common::bus::Result<()> {
        let (bus, options) = (self.bus.clone(), self.config.consumer.clone());
        lifeboat_common::run_consumer(bus, Queue::Work("ebs".to_string()), self, options, shutdown).await
    }

    async fn clients(&self, task: &RestoreTask, target: &EbsTarget) -> Result<Clients, AwsError> {
        let backup = task.backup.clone().unwrap_or_default();
        let target_config = self.accounts.config_for(&target.account_id, &target.region).await?;
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

    async fn restore(&self, task: &RestoreTask, target: &EbsTarget, attempt: u32) -> Outcome {
        let lock = self.task_locks.lock().await.entry(task.task_id.clone()).or_default().clone();
        let guard = lock.lock().await;
        if attempt == 1 {
            if let Err(e) = self.reporter.report(task_event(task, TaskPhase::Running, attempt)).await {
                warn!(error = %e, "cannot report; will retry");
                return Outcome::RetryAfter(self.config.retry_initial);
            }
        }
        let result = match self.clients(task, target).await {
            Ok(clients) => restore_step(&clients, task, target, &self.limits).await,
            Err(e) => Err(e),
        };
        let max_wait_checks =
            task.options.as_ref().map(|o| o.max_wait_checks).filter(|&n| n > 0).unwrap_or(self.config.max_wait_checks);
        let decision = decide(result, attempt, &self.config, max_wait_checks);
        drop(guard);
        self.forget_lock(&task.task_id, lock).await;
        info!(phase = decision.phase.short_name(), reason = %decision.reason_code, message = %decision.message, "ebs restore step");
        let event = StatusEvent {
            created_resource_ids: decision.created,
            reason_code: decision.reason_code,
            message: decision.message,
            ..task_event(task, decision.phase, attempt)
        };
        match self.reporter.report(event).await {
            Ok(()) => decision.outcome,
            // The step is repeatable, so settle for "again later" rather than lose the report.
            Err(e) => {
                warn!(error = %e, "cannot report; will retry");
                Outcome::RetryAfter(self.config.retry_initial)
            }
        }
    }

    async fn forget_lock(&self, task_id: &str, lock: Arc<Mutex<()>>) {
        let mut locks = self.task_locks.lock().await;
        // Two references: the map's and ours. Anyone else still waiting keeps it alive.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(task_id);
        }
    }

    async fn report_failed(&self, task: &RestoreTask, attempt: u32, code: &str, message: String) {
        let event =
            StatusEvent { reason_code: code.to_string(), message, ..task_event(task, TaskPhase::Failed, attempt) };
        if let Err(e) = self.reporter.report(event).await {
            warn!(error = %e, "cannot report a failed task");
        }
    }
}

#[async_trait]
impl Handler for EbsService {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let task = match RestoreTask::decode(delivery.payload.as_ref()) {
            Ok(task) => task,
            Err(e) => {
                return Outcome::DeadLetter {
                    code: reason::POISON_MESSAGE.to_string(),
                    reason: format!("not a lifeboat.v1.RestoreTask: {e}"),
                }
            }
        };
        let target = match &task.target {
            Some(restore_task::Target::Ebs(target))
                if task.backup.is_some() && !target.region.is_empty() && !target.account_id.is_empty() =>
            {
                target.clone()
            }
            _ => {
                self.report_failed(
                    &task,
                    delivery.attempt,
                    reason::INVALID_TASK,
                    "task has no backup or no complete EBS target".into(),
                )
                .await;
                return Outcome::Done;
            }
        };
        let span = tracing::info_span!("ebs.restore", request_id = %task.request_id, task_id = %task.task_id, attempt = delivery.attempt);
        self.restore(&task, &target, delivery.attempt).instrument(span).await
    }

    async fn dead_lettered(&self, delivery: &Delivery, code: &str, reason: &str) {
        match RestoreTask::decode(delivery.payload.as_ref()) {
            Ok(task) => self.report_failed(&task, delivery.attempt, code, format!("dead-lettered: {reason}")).await,
            Err(_) => {
                // Undecodable: the headers discovery set still say which task it was.
                let (Some(request_id), Some(task_id)) =
                    (delivery.header(subjects::HEADER_REQUEST_ID), delivery.header(subjects::HEADER_TASK_ID))
                else {
                    warn!(reason, "dead-lettered an undecodable task without ids");
                    return;
                };
                let task = RestoreTask {
                    request_id: request_id.to_string(),
                    task_id: task_id.to_string(),
                    ..Default::default()
                };
                self.report_failed(&task, delivery.attempt, code, format!("dead-lettered: {reason}")).await;
            }
        }
    }
}
