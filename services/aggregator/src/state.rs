//! One request's state, its counts and its verdict. Pure: the store loads and saves it, one
//! record for the request and one per task.

use std::collections::BTreeMap;

use lifeboat_proto::{
    status_event, PendingChange, PhaseCounts, RequestSummary, SetSummary, StatusEvent, StoredRequest, TaskPhase,
    TaskState, Verdict,
};

/// The reason code of a task or request the stall sweep ended: nothing reported for the
/// request's stall deadline.
pub const STALLED: &str = "STALLED";

/// What an event changed.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    /// The request-level part (plan, rejection, times) changed.
    pub meta: bool,
    /// The task's new state, if the event moved it forward.
    pub task: Option<TaskState>,
}

impl Change {
    pub fn any(&self) -> bool {
        self.meta || self.task.is_some()
    }
}

/// A request without its tasks: the plan, the counts per phase and per set, and the warnings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestState {
    /// The request-level part of the summary (plan, rejection, times); no counts, no tasks.
    pub meta: RequestSummary,
    counts: PhaseCounts,
    set_counts: BTreeMap<String, PhaseCounts>,
    /// Tasks that succeeded with a reason code (something was not carried over).
    warnings: u32,
}

fn phase_of(task: &TaskState) -> TaskPhase {
    TaskPhase::try_from(task.phase).unwrap_or(TaskPhase::Unspecified)
}

fn has_warning(task: &TaskState) -> bool {
    phase_of(task) == TaskPhase::Succeeded && !task.reason_code.is_empty()
}

/// Ended by the stall sweep, so a later real outcome still counts.
fn is_stalled(task: &TaskState) -> bool {
    phase_of(task) == TaskPhase::Failed && task.reason_code == STALLED
}

/// Whether `new` (a task after an event) says nothing `old` did not: same run, phase, reason,
/// message and created ids. Such a re-check is not logged as an event.
pub fn repeats(new: &TaskState, old: &TaskState) -> bool {
    (new.generation, new.phase, &new.reason_code, &new.message, &new.created_resource_ids)
        == (old.generation, old.phase, &old.reason_code, &old.message, &old.created_resource_ids)
}

fn subtract(counts: &mut PhaseCounts, phase: TaskPhase) {
    let slot = match phase {
        TaskPhase::Unspecified => return,
        TaskPhase::Planned => &mut counts.planned,
        TaskPhase::Queued => &mut counts.queued,
        TaskPhase::Running => &mut counts.running,
        TaskPhase::Waiting => &mut counts.waiting,
        TaskPhase::Succeeded => &mut counts.succeeded,
        TaskPhase::Failed => &mut counts.failed,
        TaskPhase::Skipped => &mut counts.skipped,
        TaskPhase::Cancelled => &mut counts.cancelled,
    };
    *slot = slot.saturating_sub(1);
}

/// Where a task is, in the order events can only move it: phase rank, then (before a terminal
/// phase) the delivery attempt, then WAITING after RUNNING within one attempt.
fn progress(phase: TaskPhase, attempt: u32) -> (u8, u32, bool) {
    let attempt = if phase.is_terminal() { 0 } else { attempt };
    (phase.rank(), attempt, phase == TaskPhase::Waiting)
}

/// The task as it is after `event`, or `None` if the event does not move it forward. Phases
/// only move forward and a terminal phase is final, so duplicates and late arrivals change
/// nothing; RUNNING and WAITING follow the latest delivery attempt. The one exception is a
/// task ended STALLED by the sweep: a later terminal event of the same run replaces it.
///
/// A higher generation (a retry) supersedes the task whatever phase it had reached; events of
/// an older generation change nothing.
pub fn next_task(known: Option<&TaskState>, event: &StatusEvent) -> Option<TaskState> {
    let phase = TaskPhase::try_from(event.phase).unwrap_or(TaskPhase::Unspecified);
    let mut superseded = false;
    if let Some(old) = known {
        let old_phase = phase_of(old);
        if event.generation < old.generation {
            return None;
        }
        superseded = event.generation > old.generation;
        // A task the sweep took for stalled that ends after all: its real outcome replaces
        // STALLED (and a second stall report changes nothing).
        let revived = is_stalled(old) && phase.is_terminal() && event.reason_code != STALLED;
        if !superseded
            && !revived
            && (old_phase.is_terminal() || progress(phase, event.attempt) <= progress(old_phase, old.attempt))
        {
            return None;
        }
    }
    let old = known.cloned().unwrap_or_default();
    let pick = |new: &str, old: &str| if new.is_empty() { old.to_string() } else { new.to_string() };
    Some(TaskState {
        task_id: event.task_id.clone(),
        set_name: pick(&event.set_name, &old.set_name),
        resource_type: if event.resource_type != 0 { event.resource_type } else { old.resource_type },
        phase: phase as i32,
        source_backup_id: pick(&event.source_backup_id, &old.source_backup_id),
        source_resource_id: pick(&event.source_resource_id, &old.source_resource_id),
        created_resource_ids: if event.created_resource_ids.is_empty() {
            old.created_resource_ids.clone()
        } else {
            event.created_resource_ids.clone()
        },
        reason_code: event.reason_code.clone(),
        message: event.message.clone(),
        updated_at: event.at,
        target: event.target.clone().or(old.target.clone()),
        selection_reason: pick(&event.selection_reason, &old.selection_reason),
        backup_created_at: event.backup_created_at.or(old.backup_created_at),
        attempt: if superseded { event.attempt } else { event.attempt.max(old.attempt) },
        generation: event.generation,
        alert: event.alert.clone().or(old.alert.clone()),
        task: event.task.clone().or(old.task),
    })
}

impl RequestState {
    pub fn new(request_id: &str) -> Self {
        Self { meta: RequestSummary { request_id: request_id.to_string(), ..Default::default() }, ..Default::default() }
    }

    /// The state as stored (the summary carries the counts).
    pub fn from_stored(stored: &StoredRequest) -> Self {
        let mut meta = stored.summary.clone().unwrap_or_default();
        let counts = meta.counts.take().unwrap_or_default();
        let set_counts = std::mem::take(&mut meta.sets)
            .into_iter()
            .filter_map(|set| set.counts.map(|counts| (set.set_name, counts)))
            .collect();
        meta.sets = stored.summary.as_ref().map(|s| s.sets.clone()).unwrap_or_default();
        meta.sets.iter_mut().for_each(|set| set.counts = None);
        meta.verdict = 0;
        meta.r#final = false;
        Self { meta, counts, set_counts, warnings: stored.warnings }
    }

    /// The record to store, with the change it makes still to be applied.
    pub fn to_stored(&self, sequence: u64, pending: PendingChange) -> StoredRequest {
        StoredRequest { summary: Some(self.summary()), warnings: self.warnings, sequence, pending: Some(pending) }
    }

    fn count(&mut self, task: &TaskState, sign: i8) {
        let phase = phase_of(task);
        let set = self.set_counts.entry(task.set_name.clone()).or_default();
        if sign > 0 {
            self.counts.add(phase);
            set.add(phase);
            self.warnings += has_warning(task) as u32;
        } else {
            subtract(&mut self.counts, phase);
            subtract(set, phase);
            self.warnings = self.warnings.saturating_sub(has_warning(task) as u32);
        }
    }

    /// Applies one event, given the stored state of its task.
    pub fn apply(&mut self, event: &StatusEvent, known_task: Option<&TaskState>) -> Change {
        let mut change = Change::default();
        if self.meta.started_at.is_none() {
            self.meta.started_at = event.at;
            change.meta = true;
        }
        // Cancelling a finished request changes nothing: its verdict stands.
        if event.cancelled.is_some() && !self.meta.cancelled && !self.is_final() {
            self.meta.cancelled = true;
            change.meta = true;
        }
        // A retry re-opens a cancelled request: its retried tasks run again.
        if event.retried.is_some() && self.meta.cancelled {
            self.meta.cancelled = false;
            change.meta = true;
        }
        match &event.detail {
            Some(status_event::Detail::Planned(planned)) if !self.meta.planned => {
                self.meta.planned = true;
                self.meta.total_tasks = planned.total_tasks;
                self.meta.dry_run = planned.dry_run;
                self.meta.total_size_gib = planned.total_size_gib;
                self.meta.estimated_seconds = planned.estimated_seconds;
                self.meta.request_digest = planned.request_digest.clone();
                self.meta.sets =
                    planned.sets.iter().map(|s| SetSummary { set_name: s.set_name.clone(), counts: None }).collect();
                change.meta = true;
            }
            Some(status_event::Detail::Rejected(rejected)) if self.meta.rejection.is_none() => {
                self.meta.rejection = Some(rejected.clone());
                change.meta = true;
            }
            // The stall sweep (STALLED), or discovery giving up on a request it could not plan
            // (a dead letter), ends a request that cannot otherwise reach its verdict.
            None if event.task_id.is_empty()
                && TaskPhase::try_from(event.phase) == Ok(TaskPhase::Failed)
                && !event.reason_code.is_empty()
                && self.meta.stalled.is_empty() =>
            {
                self.meta.stalled = event.message.clone();
                change.meta = true;
            }
            None if !event.task_id.is_empty() => {
                if let Some(task) = next_task(known_task, event) {
                    if let Some(old) = known_task {
                        self.count(old, -1);
                    }
                    self.count(&task, 1);
                    self.meta.retries = self.meta.retries.max(task.generation);
                    change.task = Some(task);
                }
            }
            // A repeated plan or rejection, or an event about nothing.
            _ => {}
        }
        if self.is_final() && self.meta.finished_at.is_none() {
            self.meta.finished_at = event.at;
            change.meta = true;
        }
        // Retried tasks re-open a finished request; it finishes again when they end.
        if !self.is_final() && self.meta.finished_at.is_some() {
            self.meta.finished_at = None;
            change.meta = true;
        }
        if change.any() {
            self.meta.updated_at = event.at;
        }
        change
    }

    pub fn is_final(&self) -> bool {
        self.meta.rejection.is_some()
            || !self.meta.stalled.is_empty()
            || (self.meta.planned && self.counts.terminal() >= self.meta.total_tasks)
    }

    /// Planned tasks that never reported, once the sweep has given up on the request.
    fn missing(&self) -> u32 {
        if self.meta.stalled.is_empty() {
            0
        } else {
            self.meta.total_tasks.saturating_sub(self.counts.terminal())
        }
    }

    pub fn counts(&self) -> PhaseCounts {
        self.counts
    }

    pub fn verdict(&self) -> Verdict {
        let c = &self.counts;
        if self.meta.rejection.is_some() {
            Verdict::Rejected
        } else if !self.is_final() {
            Verdict::InProgress
        } else if self.meta.cancelled {
            Verdict::Cancelled
        } else if c.succeeded + c.planned == 0 {
            // Nothing restored (or, for a dry run, nothing would be): never call that success.
            Verdict::Failed
        } else if c.failed + self.missing() > 0 {
            Verdict::PartiallyFailed
        } else if c.skipped > 0 || self.warnings > 0 {
            Verdict::CompletedWithWarnings
        } else {
            Verdict::Completed
        }
    }

    /// The summary with counts and verdict, without tasks.
    pub fn summary(&self) -> RequestSummary {
        let mut summary = self.meta.clone();
        summary.verdict = self.verdict() as i32;
        summary.r#final = self.is_final();
        summary.counts = Some(self.counts);
        let mut sets: Vec<SetSummary> = self
            .set_counts
            .iter()
            .map(|(name, counts)| SetSummary { set_name: name.clone(), counts: Some(*counts) })
            .collect();
        // Sets that were planned but have no events yet still show, in plan order.
        for planned in &self.meta.sets {
            if !self.set_counts.contains_key(&planned.set_name) {
                sets.push(SetSummary { set_name: planned.set_name.clone(), counts: Some(PhaseCounts::default()) });
            }
        }
        summary.sets = sets;
        summary
    }
}

/// Tasks in the order users read them: by set, then source resource.
pub fn sort_tasks(tasks: &mut [TaskState]) {
    tasks.sort_by(|a, b| {
        (&a.set_name, &a.source_resource_id, &a.task_id).cmp(&(&b.set_name, &b.source_resource_id, &b.task_id))
    });
}
