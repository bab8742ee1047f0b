//! The operator's commands on requests, shared by the HTTP API and NATS request/reply: list
//! with a state filter, retry the failed tasks of a finished request, cancel a running one.
//!
//! A retry republishes each chosen task's RestoreTask (kept from its QUEUED event) with its
//! generation one higher, under a work dedupe id carrying the generation, and records it QUEUED
//! again: the new generation supersedes the old run's terminal phase, the request is IN_PROGRESS
//! and its verdict is recomputed once the retried tasks end. The task ids stay the same, so every
//! AWS mutation stays idempotent and nothing that succeeded runs again.
//!
//! A cancel marks the request cancelled on the bus ([`Bus::set_cancelled`]), where the restore
//! shell of every resource service looks before it starts a task: tasks not started yet end
//! CANCELLED, started ones run to their end. The verdict is CANCELLED once every task ended.

use lifeboat_common::bus::{BusError, OutgoingMessage};
use lifeboat_common::events::{task_event, Reporter};
use lifeboat_common::subjects;
use lifeboat_proto::{
    RequestCancelled, RequestPage, RequestRetried, RequestSummary, ResourceType, StatusEvent, TaskPhase, Verdict,
};

use crate::service::Aggregator;

/// Task ids a retry event lists; the rest are counted (10,000 ids would make a 280 KB event,
/// near DynamoDB's item and SQS's message limits).
const RETRIED_IDS_LISTED: usize = 100;

/// Why an operator command was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{0}")]
    Invalid(String),
    #[error("no request {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Unavailable(#[from] BusError),
}

impl OperatorError {
    /// The HTTP status this error is answered with (also in NATS replies).
    pub fn status(&self) -> u16 {
        match self {
            OperatorError::Invalid(_) => 400,
            OperatorError::NotFound(_) => 404,
            OperatorError::Conflict(_) => 409,
            OperatorError::Unavailable(_) => 503,
        }
    }
}

pub type Result<T> = std::result::Result<T, OperatorError>;

/// What a retry queued again.
#[derive(Clone, Debug)]
pub struct Retried {
    pub summary: RequestSummary,
    pub task_ids: Vec<String>,
}

/// The verdict a `?state=` names: verdict names in any case (`partially_failed`,
/// `COMPLETED_WITH_WARNINGS`), `running` for IN_PROGRESS and `warnings` for
/// COMPLETED_WITH_WARNINGS.
pub fn parse_state(state: &str) -> Result<Option<Verdict>> {
    let wanted = state.trim().to_ascii_uppercase().replace('-', "_");
    if wanted.is_empty() || wanted == "ALL" {
        return Ok(None);
    }
    let verdict = match wanted.as_str() {
        "RUNNING" | "IN_PROGRESS" => Verdict::InProgress,
        "WARNINGS" => Verdict::CompletedWithWarnings,
        other => [
            Verdict::Completed,
            Verdict::CompletedWithWarnings,
            Verdict::PartiallyFailed,
            Verdict::Failed,
            Verdict::Rejected,
            Verdict::Cancelled,
        ]
        .into_iter()
        .find(|v| v.short_name() == other)
        .ok_or_else(|| {
            OperatorError::Invalid(format!(
                "state: '{state}' is not one of running, completed, completed_with_warnings, partially_failed, \
                 failed, rejected, cancelled"
            ))
        })?,
    };
    Ok(Some(verdict))
}

/// A request id that can name a request (the API's and the bus replies' 400).
pub(crate) fn checked(request_id: &str) -> Result<()> {
    if lifeboat_common::ids::is_valid_request_id(request_id) {
        Ok(())
    } else {
        Err(OperatorError::Invalid(format!(
            "request_id: '{request_id}' is not a request id (1 to 64 of A-Z a-z 0-9 _ -)"
        )))
    }
}

impl Aggregator {
    /// Requests newest first, only those in `state` if given.
    pub async fn list(&self, state: &str, limit: usize, after: Option<&str>) -> Result<RequestPage> {
        let verdict = parse_state(state)?;
        Ok(self.store().list(limit, after, verdict).await?)
    }

    /// Re-runs the FAILED and CANCELLED tasks of a finished request (only those of `set_names`
    /// if any are named) under the same task ids, one generation up.
    pub async fn retry(&self, request_id: &str, set_names: &[String]) -> Result<Retried> {
        checked(request_id)?;
        let (summary, tasks) =
            self.store().tasks(request_id).await?.ok_or_else(|| OperatorError::NotFound(request_id.to_string()))?;
        if !summary.r#final {
            return Err(OperatorError::Conflict(format!(
                "request {request_id} is still running; retry it once it has finished (or cancel it first)"
            )));
        }
        if summary.rejection.is_some() {
            return Err(OperatorError::Conflict(format!(
                "request {request_id} was rejected; fix the request and submit it under a new id"
            )));
        }
        if summary.dry_run {
            return Err(OperatorError::Conflict(format!("request {request_id} is a dry run: nothing ran to retry")));
        }
        if let Some(unknown) = set_names.iter().find(|name| !summary.sets.iter().any(|s| &s.set_name == *name)) {
            return Err(OperatorError::Invalid(format!("set_names: request {request_id} has no set '{unknown}'")));
        }
        let chosen: Vec<_> = tasks
            .into_iter()
            .filter(|t| set_names.is_empty() || set_names.contains(&t.set_name))
            .filter(|t| matches!(TaskPhase::try_from(t.phase), Ok(TaskPhase::Failed | TaskPhase::Cancelled)))
            .collect();
        if chosen.is_empty() {
            return Err(OperatorError::Conflict(format!(
                "request {request_id} has no failed or cancelled tasks to retry"
            )));
        }
        // A failed set that produced no task (discovery could not list it) has nothing to republish.
        let (retryable, unplanned): (Vec<_>, Vec<_>) = chosen.into_iter().partition(|t| t.task.is_some());
        if retryable.is_empty() {
            let sets: Vec<_> = unplanned.iter().map(|t| t.set_name.as_str()).collect();
            return Err(OperatorError::Conflict(format!(
                "the failures of request {request_id} (sets {}) happened while planning; submit the request again \
                 under a new id",
                sets.join(", ")
            )));
        }
        if summary.cancelled {
            self.bus().set_cancelled(request_id, false).await?;
        }
        let mut work = Vec::new();
        let mut events = Vec::new();
        for state in &retryable {
            let mut task = state.task.clone().unwrap_or_default();
            task.generation = state.generation + 1;
            let kind = ResourceType::try_from(task.resource_type).ok().and_then(ResourceType::work_kind);
            let kind = kind.unwrap_or("unknown");
            work.push(
                OutgoingMessage::proto(subjects::work_subject(kind), &task)
                    .dedupe_id(subjects::work_dedupe_id(&task.task_id, task.generation))
                    .header(subjects::HEADER_REQUEST_ID, task.request_id.clone())
                    .header(subjects::HEADER_TASK_ID, task.task_id.clone()),
            );
            events.push(StatusEvent {
                size_gib: task.backup.as_ref().map_or(0, |b| b.size_gib),
                message: format!("retry {} of the task", task.generation),
                task: Some(task.clone()),
                ..task_event(&task, TaskPhase::Queued, 0)
            });
        }
        let task_ids: Vec<String> = retryable.iter().map(|t| t.task_id.clone()).collect();
        let generation = retryable.iter().map(|t| t.generation + 1).max().unwrap_or(1);
        let retried = StatusEvent {
            request_id: request_id.to_string(),
            message: format!("{} tasks retried", task_ids.len()),
            attempt: generation,
            retried: Some(RequestRetried {
                task_ids: task_ids.iter().take(RETRIED_IDS_LISTED).cloned().collect(),
                tasks: task_ids.len() as u32,
                failed_only: true,
                set_names: set_names.to_vec(),
            }),
            ..Default::default()
        };
        // The work first: if publishing it fails nothing changed, and the retry can be repeated.
        // The events go on the bus for the audit trail, and are recorded here at once, so the
        // request reads IN_PROGRESS when the call returns (the bus copies then change nothing).
        self.bus().publish_all(work).await?;
        let reporter = Reporter::new(self.bus().clone(), "aggregator");
        let mut all = vec![retried];
        all.extend(events);
        let stamped: Vec<StatusEvent> = all.into_iter().map(stamp).collect();
        reporter.report_all(stamped.clone()).await?;
        for event in &stamped {
            self.record(event).await?;
        }
        let summary = self.store().summary(request_id, 0).await?.unwrap_or(summary);
        Ok(Retried { summary, task_ids })
    }

    /// Cancels a request that has not finished.
    pub async fn cancel(&self, request_id: &str, reason: &str, requested_by: &str) -> Result<RequestSummary> {
        checked(request_id)?;
        let (summary, _) =
            self.store().head(request_id).await?.ok_or_else(|| OperatorError::NotFound(request_id.to_string()))?;
        if summary.r#final {
            let verdict = Verdict::try_from(summary.verdict).unwrap_or_default().short_name();
            return Err(OperatorError::Conflict(format!("request {request_id} has already finished: {verdict}")));
        }
        if summary.cancelled {
            return Ok(summary);
        }
        // Marked first, so that no service starts another task of it from now on.
        self.bus().set_cancelled(request_id, true).await?;
        let event = stamp(StatusEvent {
            request_id: request_id.to_string(),
            message: "cancelled: tasks not started end CANCELLED; started ones run to their end".to_string(),
            cancelled: Some(RequestCancelled { requested_by: requested_by.to_string(), reason: reason.to_string() }),
            ..Default::default()
        });
        Reporter::new(self.bus().clone(), "aggregator").report(event.clone()).await?;
        self.record(&event).await?;
        let (summary, _) =
            self.store().head(request_id).await?.ok_or_else(|| OperatorError::NotFound(request_id.to_string()))?;
        if !summary.cancelled {
            // It finished just before the cancellation was recorded.
            self.bus().set_cancelled(request_id, false).await?;
            let verdict = Verdict::try_from(summary.verdict).unwrap_or_default().short_name();
            return Err(OperatorError::Conflict(format!("request {request_id} has already finished: {verdict}")));
        }
        Ok(summary)
    }
}

/// The event as the Reporter would publish it (service and time), so that the copy recorded
/// here and the one on the bus are the same event.
fn stamp(mut event: StatusEvent) -> StatusEvent {
    event.service = "aggregator".to_string();
    event.at.get_or_insert_with(lifeboat_common::time::now);
    event
}
