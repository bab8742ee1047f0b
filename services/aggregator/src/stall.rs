//! The stall sweep: the request-level deadline that guarantees a verdict. A task that has
//! not reported for `stall_after` (its service died with the message lost, a dead letter no
//! one read) is ended FAILED with reason STALLED; a request that still cannot finish (its plan
//! never came, or planned tasks never reported) is ended STALLED as a whole, its missing
//! tasks counted as failed.
//!
//! A task still QUEUED (never delivered: it waits in the durable work queue behind others, as
//! the tasks of a large request beyond the consumer's pending limit do) gets
//! [`QUEUED_PATIENCE`] times as long: its message is not lost, only not yet taken.
//!
//! Every end is a conditional write that re-checks, against the stored record, what the sweep
//! saw: with two replicas sweeping, or a task reporting meanwhile, nothing is ended twice and
//! nothing alive is ended. A STALLED task that reports a terminal phase later takes that real
//! outcome (see [`crate::state::next_task`]).

use std::time::Duration;

use lifeboat_common::bus::Result;
use lifeboat_proto::{RequestSummary, StatusEvent, TaskPhase, TaskState, Timestamp};
use tracing::{info, warn};

use crate::service::Aggregator;
use crate::state::STALLED;

/// How many times `stall_after` a task that never left QUEUED may stay quiet.
pub const QUEUED_PATIENCE: i64 = 8;

/// Tasks named in a request's stall message; the rest are counted.
const NAMED_TASKS: usize = 10;
/// Requests read per page of the sweep.
const SWEEP_PAGE: usize = 200;

/// Seconds since the epoch of a stored time (0 when there is none: as old as can be).
fn seconds(at: Option<Timestamp>) -> i64 {
    at.map(|t| t.seconds).unwrap_or(0)
}

/// "a, b, c and 7 more" for the first [`NAMED_TASKS`] ids.
fn named(ids: &[String]) -> String {
    let shown = ids.iter().take(NAMED_TASKS).cloned().collect::<Vec<_>>().join(", ");
    match ids.len().saturating_sub(NAMED_TASKS) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn stall_event(request_id: &str, task: Option<&TaskState>, message: String) -> StatusEvent {
    let mut event = StatusEvent {
        request_id: request_id.to_string(),
        phase: TaskPhase::Failed as i32,
        reason_code: STALLED.to_string(),
        message,
        at: Some(lifeboat_common::time::now()),
        service: "aggregator".to_string(),
        ..Default::default()
    };
    if let Some(task) = task {
        event.task_id = task.task_id.clone();
        event.set_name = task.set_name.clone();
        event.resource_type = task.resource_type;
        event.attempt = task.attempt;
        event.generation = task.generation;
    }
    event
}

impl Aggregator {
    /// Sweeps every `sweep_every` until `shutdown`.
    pub(crate) async fn sweep_stalled(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(crate::store::jittered(self.config().sweep_every)) => {}
            }
            if let Err(e) = self.sweep().await {
                warn!(error = %e, "stall sweep failed; trying again at the next one");
            }
        }
    }

    /// One pass over the requests without a verdict; how many requests it ended.
    pub async fn sweep(&self) -> Result<usize> {
        let mut ended = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.store().list(SWEEP_PAGE, after.as_deref(), None).await?;
            for summary in page.requests.iter().filter(|s| !s.r#final) {
                ended += self.sweep_request(summary).await? as usize;
            }
            if page.next.is_empty() {
                return Ok(ended);
            }
            after = Some(page.next);
        }
    }

    /// Ends what stopped reporting in one request; whether the request reached its verdict.
    async fn sweep_request(&self, summary: &RequestSummary) -> Result<bool> {
        let stall_after = self.config().stall_after;
        let now = lifeboat_common::time::unix_now() as i64;
        let cutoff = now - stall_after.as_secs() as i64;
        let queued_cutoff = now - QUEUED_PATIENCE * stall_after.as_secs() as i64;
        // The cutoff of a task in `phase`.
        let cutoff_of = |phase: i32| if phase == TaskPhase::Queued as i32 { queued_cutoff } else { cutoff };
        let request_id = summary.request_id.as_str();
        let Some((_, tasks)) = self.store().tasks(request_id).await? else {
            return Ok(false);
        };
        let quiet: Vec<&TaskState> = tasks
            .iter()
            .filter(|t| !TaskPhase::try_from(t.phase).unwrap_or_default().is_terminal())
            .filter(|t| seconds(t.updated_at) <= cutoff_of(t.phase))
            .collect();
        let silence = humanize(stall_after);
        let mut stalled_ids = Vec::new();
        for task in &quiet {
            let event = stall_event(request_id, Some(task), format!("no report for {silence}: the task stopped"));
            let still_quiet = |_: &_, known: Option<&TaskState>| {
                known.is_some_and(|k| {
                    k.generation == task.generation
                        && !TaskPhase::try_from(k.phase).unwrap_or_default().is_terminal()
                        && seconds(k.updated_at) <= cutoff_of(k.phase)
                })
            };
            if let Some(recorded) = self.record_if(&event, still_quiet).await? {
                stalled_ids.push(task.task_id.clone());
                if recorded.summary.r#final {
                    info!(request_id, tasks = %named(&stalled_ids), "stalled tasks ended; the request has its verdict");
                }
            }
        }
        let stalled_now = !stalled_ids.is_empty();
        if !stalled_now && seconds(summary.updated_at) > cutoff {
            return Ok(false);
        }
        let in_queue = |t: &TaskState| t.phase == TaskPhase::Queued as i32 && seconds(t.updated_at) > queued_cutoff;
        if tasks.iter().any(in_queue) {
            // Not ended as a whole while some of its tasks still wait their turn in the queue;
            // it ends when they do (or stall in their turn).
            return Ok(false);
        }
        // What is left: a request still without a verdict that nothing reported to for the
        // whole deadline (its plan never came, or planned tasks never appeared).
        let message = if !stalled_ids.is_empty() {
            format!("tasks {} stopped reporting for {silence}", named(&stalled_ids))
        } else if !summary.planned {
            format!("no plan within {silence} of the request's acceptance: discovery never planned it")
        } else {
            let missing = summary.total_tasks.saturating_sub(tasks.len() as u32);
            format!("{missing} of {} planned tasks never reported within {silence}", summary.total_tasks)
        };
        let still_stuck = |state: &crate::RequestState, _: Option<&TaskState>| {
            // After ending tasks: only to name them. Otherwise: only if still unfinished and silent.
            state.meta.stalled.is_empty()
                && (stalled_now || (!state.is_final() && seconds(state.meta.updated_at) <= cutoff))
        };
        let recorded = self.record_if(&stall_event(request_id, None, message.clone()), still_stuck).await?;
        if recorded.is_some() {
            warn!(request_id, reason = STALLED, %message, "request stalled");
        }
        Ok(recorded.is_some_and(|r| r.summary.r#final))
    }
}

/// A deadline as users read it: `15m`, `90s`.
fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 60 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}
