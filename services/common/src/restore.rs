//! The shell every resource service (EBS, RDS, DynamoDB, EC2) runs in: it decodes a
//! RestoreTask, serialises duplicate deliveries, reports RUNNING, asks the service's
//! [`Restorer`] for one step, and turns the step into a status event and a settlement. A
//! restorer only knows its AWS API. Backups run in the same shell: a task whose `backup_task` is
//! set takes a backup, and the restorer's `step` does that instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use lifeboat_proto::{RestoreTask, StatusEvent, TaskPhase};
use prost::Message;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::aws::{backoff, jitter, AwsError, FullSlot};
use crate::bus::{Bus, Delivery, Queue};
use crate::consumer::{ConsumerOptions, Handler, Outcome};
use crate::events::{task_event, Reporter};
use crate::shared::SharedStore;
use crate::{metrics, subjects};

/// Reason codes of the resource services (AWS error codes are reported as they are).
pub mod reason {
    pub const WAIT_TIMEOUT: &str = "WAIT_TIMEOUT";
    pub const INVALID_TASK: &str = "INVALID_TASK";
    pub const POISON_MESSAGE: &str = "POISON_MESSAGE";
    /// Restored, but some of the source's settings could not be applied (a warning).
    pub const SETTINGS_NOT_RESTORED: &str = "SETTINGS_NOT_RESTORED";
    /// The request was cancelled before the task started; nothing was created.
    pub const REQUEST_CANCELLED: &str = "REQUEST_CANCELLED";
    /// A restore into another account that the resource type cannot do (DynamoDB backups).
    pub const CROSS_ACCOUNT_UNSUPPORTED: &str = "CROSS_ACCOUNT_UNSUPPORTED";
    /// A cross-account restore of an encrypted backup without a key usable in the target.
    pub const ENCRYPTED_WITHOUT_TARGET_KEY: &str = "ENCRYPTED_WITHOUT_TARGET_KEY";
}

/// Where a restore stands after a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The resource is ready. Warnings name what could not be carried over.
    Done { message: String, created: Vec<String>, warnings: Vec<String> },
    /// An operation is under way; check again later.
    Waiting { what: String, created: Vec<String> },
    /// It cannot succeed.
    Failed { code: String, message: String },
    /// Done, but not all of it (some objects of a bucket could not be read): SUCCEEDED with
    /// `code` as the reason, and `alert` raised on the task's status event.
    Partial { code: String, message: String, created: Vec<String>, alert: lifeboat_proto::Alert },
}

/// Lifeboat's own tags on everything a task creates; the task-id tag is the idempotency key.
pub fn lifeboat_tags(task: &RestoreTask) -> Vec<(String, String)> {
    let backup = task.backup.clone().unwrap_or_default();
    vec![
        (subjects::TAG_REQUEST_ID.to_string(), task.request_id.clone()),
        (subjects::TAG_TASK_ID.to_string(), task.task_id.clone()),
        (subjects::TAG_SOURCE_BACKUP.to_string(), backup.backup_id),
        (subjects::TAG_SOURCE_RESOURCE.to_string(), backup.source_resource_id),
    ]
}

/// The tags a restored resource gets: the source's (unless the request opts out; reserved
/// `aws:` and Lifeboat's own keys dropped), then the set's `extra` tags, then Lifeboat's own;
/// later ones win. Sorted by key.
pub fn restored_tags(task: &RestoreTask, extra: &HashMap<String, String>) -> Vec<(String, String)> {
    let skip_source = task.options.as_ref().is_some_and(|o| o.skip_source_tags);
    let mut tags = std::collections::BTreeMap::new();
    if let (false, Some(backup)) = (skip_source, &task.backup) {
        let kept = backup.tags.iter().filter(|(k, _)| !k.starts_with("aws:") && !k.starts_with("lifeboat:"));
        tags.extend(kept.map(|(k, v)| (k.clone(), v.clone())));
    }
    tags.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    tags.extend(lifeboat_tags(task));
    tags.into_iter().collect()
}

/// What a task has done so far, recorded in the shared store as soon as a step returns: the
/// ids it created (so later steps check them by id, batched, instead of looking them up by
/// tag), the concurrency slots it holds (released when it ends), and what it last reported
/// (so re-checks that change nothing are not reported again).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Created ids by role: `volume`, `copy`, `instance`, `image`, `table`, `db`...
    #[serde(default)]
    pub ids: std::collections::BTreeMap<String, String>,
    /// Keys of the [`crate::quota`] slots this task holds.
    #[serde(default)]
    pub slots: Vec<String>,
    #[serde(default)]
    pub reported: Option<Reported>,
    /// What the task waits for and since which delivery, so re-checks back off from the start
    /// of this wait rather than from the task's first delivery: a copy started on delivery 40
    /// (after a long wait for a slot) is checked soon after, not 30 s later.
    #[serde(default)]
    pub wait: Option<WaitMark>,
    /// Whether a record was found (false on a task's first step, and in the crash window
    /// between an AWS call and its record).
    #[serde(skip)]
    pub recorded: bool,
}

/// The start of a task's current wait.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaitMark {
    /// `created:<ids>` while a step waits on what it created, `retry:<code>` while it retries.
    pub on: String,
    /// The delivery the wait began on.
    pub since: u32,
}

impl WaitMark {
    /// What `result` waits for, if it waits.
    fn on(result: &Result<Step, AwsError>) -> Option<String> {
        match result {
            Ok(Step::Waiting { created, .. }) => Some(format!("created:{}", created.join(","))),
            Err(e) if e.is_retryable() => Some(format!("retry:{}", e.code)),
            _ => None,
        }
    }
}

/// The last event a task reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reported {
    pub phase: i32,
    pub reason_code: String,
    pub message: String,
    pub created: Vec<String>,
    /// Unix seconds.
    pub at: u64,
}

impl Progress {
    pub fn id(&self, role: &str) -> Option<&str> {
        self.ids.get(role).map(String::as_str)
    }

    /// Records an id the task created; the shell stores it before it reports the step.
    pub fn record(&mut self, role: &str, id: impl Into<String>) {
        self.ids.insert(role.to_string(), id.into());
    }

    /// Whether a step must look for what an earlier delivery may have created without
    /// recording it (it died between the AWS call and the record): only a redelivery without a
    /// record. The tag lookup that answers it is the crash window's only.
    pub fn may_have_lost(&self, attempt: u32) -> bool {
        attempt > 1 && !self.recorded
    }

    /// Whether the resource of `role` is worth looking up by its known name: it was recorded,
    /// or an earlier delivery may have created it without recording it.
    pub fn may_exist(&self, role: &str, attempt: u32) -> bool {
        self.id(role).is_some() || self.may_have_lost(attempt)
    }

    /// Notes a slot the task holds, released when it ends.
    pub fn hold(&mut self, slot_key: &str) {
        if !self.slots.iter().any(|s| s == slot_key) {
            self.slots.push(slot_key.to_string());
        }
    }
}

/// Notes, before an AWS call that takes no idempotency token (CopySnapshot), that a delivery of
/// `task` is about to make it for `role`. A later delivery that finds no id recorded for the role
/// looks for the resource by tag only when the note exists ([`intended`]): the crash window's
/// lookup, not every redelivery's.
pub async fn note_intent(store: &dyn SharedStore, task: &RestoreTask, role: &str) -> crate::bus::Result<()> {
    let key = intent_key(task, role);
    store.put_if(&key, bytes::Bytes::from_static(b"1"), 0).await.map(|_| ())
}

/// Whether a delivery of `task` noted it was about to make the call of `role` ([`note_intent`]).
pub async fn intended(store: &dyn SharedStore, task: &RestoreTask, role: &str) -> crate::bus::Result<bool> {
    Ok(store.get(&intent_key(task, role)).await?.is_some())
}

fn intent_key(task: &RestoreTask, role: &str) -> String {
    format!("intent.{}.{}", progress_key(task), crate::shared::key_part(role))
}

/// The shared-store key of a task's progress (one per generation: a retried task starts over).
pub fn progress_key(task: &RestoreTask) -> String {
    format!("task.{}.g{}", crate::shared::key_part(&task.task_id), task.generation)
}

/// An unchanged re-check is reported at least this often, as a sign of life for the
/// aggregator's stall sweep.
pub const HEARTBEAT: Duration = Duration::from_secs(300);

/// One restore service's AWS side.
#[async_trait]
pub trait Restorer: Send + Sync + 'static {
    /// The work subject suffix it consumes (`lifeboat.work.<kind>`), also its service name.
    fn kind(&self) -> &'static str;

    /// Checks that a task carries what this restorer needs; the error becomes INVALID_TASK.
    fn check(&self, task: &RestoreTask) -> Result<(), String>;

    /// Advances the restore by one step. Must be idempotent: it may run any number of times
    /// for the same task, after crashes and duplicate deliveries. `progress` holds what earlier
    /// steps recorded; ids the step creates go into it ([`Progress::record`]) at once.
    async fn step(&self, task: &RestoreTask, attempt: u32, progress: &mut Progress) -> Result<Step, AwsError>;
}

/// How long and how often a task is re-checked.
#[derive(Clone, Debug)]
pub struct WaitPolicy {
    /// Re-checks of a resource still being created before the task fails with WAIT_TIMEOUT,
    /// unless the request's options say otherwise.
    pub max_wait_checks: u32,
    /// Delay before the first re-check; doubles up to `check_max`.
    pub check_initial: Duration,
    pub check_max: Duration,
    /// Delay after a retryable AWS error (throttling, 5xx); doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        Self {
            // With checks every 30 s at most: six hours, enough for a cross-region copy of a
            // large snapshot or the restore of a large database.
            max_wait_checks: 720,
            check_initial: Duration::from_secs(2),
            check_max: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub consumer: ConsumerOptions,
    pub wait: WaitPolicy,
    /// AWS's rates and caps, held with every replica in the bus's shared store.
    pub quotas: crate::quota::QuotaConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            // Deliveries outlast wait checks, so a slow restore ends as WAIT_TIMEOUT, not a dead letter.
            consumer: ConsumerOptions { max_deliveries: 1000, ..ConsumerOptions::default() },
            wait: WaitPolicy::default(),
            quotas: crate::quota::QuotaConfig::default(),
        }
    }
}

impl ServiceConfig {
    /// The checks a task waits before WAIT_TIMEOUT: what its request asked (0: the default),
    /// always below the consumer's `max_deliveries`, so that a long wait ends as WAIT_TIMEOUT
    /// with its reason rather than as a dead letter.
    pub fn max_wait_checks(&self, requested: u32) -> u32 {
        let wanted = if requested > 0 { requested } else { self.wait.max_wait_checks };
        wanted.min(self.consumer.max_deliveries.saturating_sub(1).max(1))
    }
}

/// What to report and how to settle after a step.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub phase: TaskPhase,
    pub reason_code: String,
    pub message: String,
    pub created: Vec<String>,
    pub outcome: Outcome,
    /// Raised on the task's status event ([`Step::Partial`]).
    pub alert: Option<lifeboat_proto::Alert>,
}

/// Turns a step's result into a report and a settlement. Retryable errors and work in progress
/// come back by delayed redelivery; a task waits at most `max_wait_checks` deliveries.
pub fn decide(result: Result<Step, AwsError>, attempt: u32, wait: &WaitPolicy, max_wait_checks: u32) -> Decision {
    decide_waited(result, attempt, attempt, wait, max_wait_checks)
}

/// [`decide`], backing off with `waited`, the deliveries of the current wait so far (1 on its
/// first), rather than with all of the task's deliveries.
pub fn decide_waited(
    result: Result<Step, AwsError>,
    attempt: u32,
    waited: u32,
    wait: &WaitPolicy,
    max_wait_checks: u32,
) -> Decision {
    let done = |phase, reason_code: String, message: String, created| Decision {
        phase,
        reason_code,
        message,
        created,
        outcome: Outcome::Done,
        alert: None,
    };
    match result {
        Ok(Step::Done { message, created, warnings }) if warnings.is_empty() => {
            done(TaskPhase::Succeeded, String::new(), message, created)
        }
        Ok(Step::Done { message, created, warnings }) => done(
            TaskPhase::Succeeded,
            reason::SETTINGS_NOT_RESTORED.to_string(),
            format!("{message}; not restored: {}", warnings.join("; ")),
            created,
        ),
        Ok(Step::Failed { code, message }) => done(TaskPhase::Failed, code, message, Vec::new()),
        Ok(Step::Partial { code, message, created, alert }) => {
            Decision { alert: Some(alert), ..done(TaskPhase::Succeeded, code, message, created) }
        }
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
            outcome: Outcome::RetryAfter(backoff(waited, wait.check_initial, wait.check_max)),
            alert: None,
        },
        Err(e) if e.is_retryable() => Decision {
            phase: TaskPhase::Waiting,
            reason_code: e.code.clone(),
            message: format!("retrying: {e}"),
            created: Vec::new(),
            // Jittered: tasks throttled together must not come back together.
            outcome: Outcome::RetryAfter(jitter(backoff(waited, wait.retry_initial, wait.retry_max))),
            alert: None,
        },
        Err(e) => done(TaskPhase::Failed, e.code.clone(), e.to_string(), Vec::new()),
    }
}

/// A resource service: the consumer of `lifeboat.work.<kind>` around a [`Restorer`].
pub struct RestoreService<R> {
    restorer: R,
    bus: Arc<dyn Bus>,
    reporter: Reporter,
    config: ServiceConfig,
    /// Two deliveries of one task in this process run one after the other, so the second sees
    /// what the first created.
    task_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Tasks whose last step here found a cap full, by task id.
    waiters: Mutex<HashMap<String, SlotWaiter>>,
    /// How many slots each cap's record held when last read, and when: shared by all of a cap's
    /// waiters in this process, so hundreds of them cost one read per [`SLOT_VIEW_TTL`].
    slot_views: Mutex<HashMap<String, (Instant, usize)>>,
}

/// A task waiting for a slot of a full cap.
#[derive(Clone, Debug)]
struct SlotWaiter {
    slot: FullSlot,
    /// The delivery its wait began on.
    since: u32,
    /// Unix seconds of its last report, for the heartbeat.
    reported_at: u64,
}

/// How long a cap's slot count read by one waiter serves the others.
const SLOT_VIEW_TTL: Duration = Duration::from_millis(250);

impl<R: Restorer> RestoreService<R> {
    pub fn new(restorer: R, bus: Arc<dyn Bus>, config: ServiceConfig) -> Arc<Self> {
        let reporter = Reporter::new(bus.clone(), restorer.kind());
        Arc::new(Self {
            restorer,
            bus,
            reporter,
            config,
            task_locks: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            slot_views: Mutex::new(HashMap::new()),
        })
    }

    pub fn restorer(&self) -> &R {
        &self.restorer
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> crate::bus::Result<()> {
        let (bus, options) = (self.bus.clone(), self.config.consumer.clone());
        let queue = Queue::Work(self.restorer.kind().to_string());
        crate::run_consumer(bus, queue, self, options, shutdown).await
    }

    /// When the task's last step here found a cap full and the cap is still full: how long to
    /// wait before the next look, without claiming, loading or stepping the task. None when it
    /// is worth a step: a slot is free, the record cannot be read, or the task is due for its
    /// heartbeat report.
    async fn still_waiting_for_slot(&self, task_id: &str, attempt: u32) -> Option<Duration> {
        let waiter = self.waiters.lock().await.get(task_id).cloned()?;
        if crate::time::unix_now().saturating_sub(waiter.reported_at) >= HEARTBEAT.as_secs() / 2 {
            return None;
        }
        if self.slots_held(&waiter.slot.key).await? < waiter.slot.limit {
            return None;
        }
        let waited = attempt.saturating_sub(waiter.since) + 1;
        Some(jitter(backoff(waited, self.config.wait.retry_initial, self.config.wait.retry_max)))
    }

    /// The slots held of the cap recorded at `key`, read at most once per [`SLOT_VIEW_TTL`].
    async fn slots_held(&self, key: &str) -> Option<usize> {
        if let Some((at, held)) = self.slot_views.lock().await.get(key) {
            if at.elapsed() < SLOT_VIEW_TTL {
                return Some(*held);
            }
        }
        let held = crate::quota::held(self.bus.shared().as_ref(), key).await.ok()?;
        self.slot_views.lock().await.insert(key.to_string(), (Instant::now(), held));
        Some(held)
    }

    /// Remembers (or forgets) that `task_id` waits for a slot of a full cap.
    async fn note_slot_wait(&self, task_id: &str, slot: Option<FullSlot>, since: u32, reported_at: u64) {
        let mut waiters = self.waiters.lock().await;
        match slot {
            Some(slot) => {
                // Just found full: the other waiters need not read it again for a while either.
                self.slot_views.lock().await.insert(slot.key.clone(), (Instant::now(), slot.limit));
                waiters.insert(task_id.to_string(), SlotWaiter { slot, since, reported_at });
            }
            None => {
                waiters.remove(task_id);
            }
        }
    }

    /// `queued_at`: when the bus stored the work message, for the task's duration.
    async fn restore(&self, task: &RestoreTask, attempt: u32, queued_at: Option<SystemTime>) -> Outcome {
        let retry_initial = self.config.wait.retry_initial;
        if let Some(delay) = self.still_waiting_for_slot(&task.task_id, attempt).await {
            debug!(delay_ms = delay.as_millis() as u64, "the cap is still full; not stepped");
            return Outcome::RetryAfter(delay);
        }
        let lock = self.task_locks.lock().await.entry(task.task_id.clone()).or_default().clone();
        let guard = lock.lock().await;
        if attempt == 1 {
            // The first delivery has created nothing yet: a cancelled request's task ends here.
            match self.bus.is_cancelled(&task.request_id).await {
                Ok(false) => {}
                Ok(true) => {
                    drop(guard);
                    self.forget_lock(&task.task_id, lock).await;
                    return self.report_cancelled(task, attempt, queued_at).await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot tell whether the request was cancelled; will retry");
                    return Outcome::RetryAfter(retry_initial);
                }
            }
            if let Err(e) = self.reporter.report(task_event(task, TaskPhase::Running, attempt)).await {
                warn!(error = %e, "cannot report; will retry");
                return Outcome::RetryAfter(retry_initial);
            }
        }
        let store = self.bus.shared();
        let key = progress_key(task);
        // Another replica's delivery of this task may be stepping right now: only one steps.
        let claim =
            match crate::claim::acquire(store.clone(), format!("claim.{key}"), self.config.consumer.queue.ack_wait)
                .await
            {
                Ok(Some(claim)) => claim,
                Ok(None) => {
                    info!("another delivery of this task is taking its step; will check again");
                    return Outcome::RetryAfter(jitter(retry_initial));
                }
                Err(e) => {
                    warn!(error = %e, "cannot claim the task; will retry");
                    return Outcome::RetryAfter(retry_initial);
                }
            };
        let stepped = self.step_and_record(task, attempt, store.as_ref(), &key).await;
        claim.release().await;
        let Ok((result, mut progress, version)) = stepped else {
            return Outcome::RetryAfter(retry_initial);
        };
        let requested = task.options.as_ref().map(|o| o.max_wait_checks).unwrap_or_default();
        let max_wait_checks = self.config.max_wait_checks(requested);
        let full_slot = result.as_ref().err().and_then(|e| e.full_slot.clone());
        let on = WaitMark::on(&result);
        let since = match (&progress.wait, &on) {
            (Some(mark), Some(on)) if &mark.on == on => mark.since.min(attempt),
            _ => attempt,
        };
        progress.wait = on.map(|on| WaitMark { on, since });
        let waited = attempt.saturating_sub(since) + 1;
        let mut decision = decide_waited(result, attempt, waited, &self.config.wait, max_wait_checks);
        if task.backup_task.is_some() && decision.reason_code == reason::SETTINGS_NOT_RESTORED {
            // A backup has no source settings to carry over; its warnings are its own.
            decision.reason_code = crate::backup::reason::BACKUP_WARNINGS.to_string();
            decision.message = decision.message.replacen("; not restored: ", "; warnings: ", 1);
        }
        drop(guard);
        self.forget_lock(&task.task_id, lock).await;
        let terminal = decision.phase.is_terminal();
        if terminal {
            for slot in &progress.slots {
                // A slot not given back runs out with its lease.
                if let Err(e) = crate::quota::release(store.as_ref(), slot, &key).await {
                    warn!(error = %e, slot = %slot, "cannot release a slot; it expires with its lease");
                }
            }
        }
        let reported = Reported {
            phase: decision.phase as i32,
            reason_code: decision.reason_code.clone(),
            message: decision.message.clone(),
            created: decision.created.clone(),
            at: crate::time::unix_now(),
        };
        let quiet = !terminal && unchanged(progress.reported.as_ref(), &reported);
        let reported_at = if quiet { progress.reported.as_ref().map_or(0, |r| r.at) } else { reported.at };
        self.note_slot_wait(&task.task_id, full_slot.filter(|_| !terminal), since, reported_at).await;
        if quiet {
            debug!(message = %decision.message, "re-check changed nothing; not reported");
            return decision.outcome;
        }
        info!(phase = decision.phase.short_name(), reason = %decision.reason_code, message = %decision.message, "restore step");
        let event = StatusEvent {
            created_resource_ids: decision.created,
            reason_code: decision.reason_code,
            message: decision.message,
            alert: decision.alert,
            ..task_event(task, decision.phase, attempt)
        };
        let finished = terminal.then(|| event.reason_code.clone());
        match self.reporter.report(event).await {
            Ok(()) => {
                if let Some(reason) = finished {
                    task_finished(task, decision.phase, &reason, queued_at);
                } else {
                    progress.reported = Some(reported);
                    if let Err(e) = save_progress(store.as_ref(), &key, &progress, version).await {
                        // Only costs a repeated report of the same state.
                        debug!(error = %e, "cannot record what was reported");
                    }
                }
                decision.outcome
            }
            // The step is repeatable, so settle for "again later" rather than lose the report.
            Err(e) => {
                warn!(error = %e, "cannot report; will retry");
                Outcome::RetryAfter(retry_initial)
            }
        }
    }

    /// Loads the task's progress, takes one step and records what it created: before anything
    /// is reported, so that a later step checks these ids, not tags. `Err` means "again later".
    async fn step_and_record(
        &self,
        task: &RestoreTask,
        attempt: u32,
        store: &dyn SharedStore,
        key: &str,
    ) -> std::result::Result<(Result<Step, AwsError>, Progress, u64), ()> {
        let (mut progress, version) = load_progress(store, key).await.map_err(|e| {
            warn!(error = %e, "cannot read the task's progress; will retry");
        })?;
        let before = progress.clone();
        let result = self.restorer.step(task, attempt, &mut progress).await;
        if progress == before {
            return Ok((result, progress, version));
        }
        match save_progress(store, key, &progress, version).await {
            Ok(Some(saved)) => Ok((result, progress, saved)),
            Ok(None) => {
                warn!("another delivery of this task recorded progress first; will check again");
                Err(())
            }
            Err(e) => {
                warn!(error = %e, "cannot record the task's progress; will retry");
                Err(())
            }
        }
    }

    async fn report_cancelled(&self, task: &RestoreTask, attempt: u32, queued_at: Option<SystemTime>) -> Outcome {
        let event = StatusEvent {
            reason_code: reason::REQUEST_CANCELLED.to_string(),
            message: "the request was cancelled before this task started; nothing was created".to_string(),
            ..task_event(task, TaskPhase::Cancelled, attempt)
        };
        match self.reporter.report(event).await {
            Ok(()) => {
                info!("task cancelled before it started");
                task_finished(task, TaskPhase::Cancelled, reason::REQUEST_CANCELLED, queued_at);
                Outcome::Done
            }
            Err(e) => {
                warn!(error = %e, "cannot report; will retry");
                Outcome::RetryAfter(self.config.wait.retry_initial)
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

    async fn report_failed(
        &self,
        task: &RestoreTask,
        delivery: &Delivery,
        code: &str,
        message: String,
    ) -> crate::bus::Result<()> {
        let event = StatusEvent {
            reason_code: code.to_string(),
            message,
            ..task_event(task, TaskPhase::Failed, delivery.attempt)
        };
        self.reporter.report(event).await?;
        task_finished(task, TaskPhase::Failed, code, delivery.published_at);
        Ok(())
    }
}

#[async_trait]
impl<R: Restorer> Handler for RestoreService<R> {
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
        if let Err(problem) = self.restorer.check(&task) {
            return match self.report_failed(&task, delivery, reason::INVALID_TASK, problem).await {
                Ok(()) => Outcome::Done,
                Err(e) => {
                    warn!(error = %e, "cannot report an invalid task; will retry");
                    Outcome::RetryAfter(self.config.wait.retry_initial)
                }
            };
        }
        let span = tracing::info_span!(
            "restore.task",
            service = self.restorer.kind(),
            request_id = %task.request_id,
            task_id = %task.task_id,
            attempt = delivery.attempt
        );
        self.restore(&task, delivery.attempt, delivery.published_at).instrument(span).await
    }

    async fn dead_lettered(&self, delivery: &Delivery, code: &str, reason: &str) -> crate::bus::Result<()> {
        let task = match RestoreTask::decode(delivery.payload.as_ref()) {
            Ok(task) => task,
            // Undecodable: the headers discovery set still say which task it was.
            Err(_) => match (delivery.header(subjects::HEADER_REQUEST_ID), delivery.header(subjects::HEADER_TASK_ID)) {
                (Some(request_id), Some(task_id)) => RestoreTask {
                    request_id: request_id.to_string(),
                    task_id: task_id.to_string(),
                    ..Default::default()
                },
                _ => {
                    warn!(reason, "dead-lettered an undecodable task without ids");
                    return Ok(());
                }
            },
        };
        self.report_failed(&task, delivery, code, format!("dead-lettered: {reason}")).await
    }
}

/// A task's progress and its version (0: no record yet).
pub async fn load_progress(store: &dyn SharedStore, key: &str) -> crate::bus::Result<(Progress, u64)> {
    let Some(found) = store.get(key).await? else {
        return Ok((Progress::default(), 0));
    };
    let mut progress: Progress = serde_json::from_slice(&found.value)
        .map_err(|e| crate::bus::BusError::Store(format!("{key}: not a task progress record: {e}")))?;
    progress.recorded = true;
    Ok((progress, found.version))
}

async fn save_progress(
    store: &dyn SharedStore,
    key: &str,
    progress: &Progress,
    version: u64,
) -> crate::bus::Result<Option<u64>> {
    let value = serde_json::to_vec(progress).map_err(|e| crate::bus::BusError::Store(e.to_string()))?;
    store.put_if(key, value.into(), version).await
}

/// Whether a WAITING report says what the last one said, recently enough.
fn unchanged(last: Option<&Reported>, now: &Reported) -> bool {
    last.is_some_and(|last| {
        (last.phase, &last.reason_code, &last.message, &last.created)
            == (now.phase, &now.reason_code, &now.message, &now.created)
            && now.at.saturating_sub(last.at) < HEARTBEAT.as_secs()
    })
}

/// Counts a task that reached a final phase. The bus's store time of the work message is when
/// discovery queued the task; it stays the same on every redelivery.
fn task_finished(task: &RestoreTask, phase: TaskPhase, reason: &str, queued_at: Option<SystemTime>) {
    metrics::task_finished(task.resource_type().short_name(), phase.short_name(), reason, queued_at);
}
