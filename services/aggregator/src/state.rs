//! One request's state, its counts and its verdict. Pure: the service loads and stores it.

use std::collections::{BTreeMap, HashMap};

use lifeboat_proto::{
    status_event, PhaseCounts, RequestSummary, SetSummary, StatusEvent, TaskPhase, TaskState, Verdict,
};

/// What changed when an event was applied, so only that is written back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub meta: bool,
    pub task: Option<String>,
}

impl Change {
    pub fn any(&self) -> bool {
        self.meta || self.task.is_some()
    }
}

#[derive(Clone, Debug, Default)]
pub struct RequestState {
    /// The request-level part of the summary (plan, rejection, times); no counts, no tasks.
    pub meta: RequestSummary,
    pub tasks: HashMap<String, TaskState>,
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
    };
    *slot = slot.saturating_sub(1);
}

impl RequestState {
    pub fn new(request_id: &str) -> Self {
        Self { meta: RequestSummary { request_id: request_id.to_string(), ..Default::default() }, ..Default::default() }
    }

    /// Rebuilds the state from what the store holds.
    pub fn from_parts(meta: RequestSummary, tasks: impl IntoIterator<Item = TaskState>) -> Self {
        let mut state = Self { meta, ..Default::default() };
        for task in tasks {
            state.count(&task, 1);
            state.tasks.insert(task.task_id.clone(), task);
        }
        state
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

    /// Applies one event. Phases only move forward, so duplicates and late arrivals change
    /// nothing; RUNNING and WAITING follow the latest delivery attempt.
    pub fn apply(&mut self, event: &StatusEvent) -> Change {
        let mut change = Change::default();
        if self.meta.started_at.is_none() {
            self.meta.started_at = event.at;
            change.meta = true;
        }
        match &event.detail {
            Some(status_event::Detail::Planned(planned)) if !self.meta.planned => {
                self.meta.planned = true;
                self.meta.total_tasks = planned.total_tasks;
                self.meta.dry_run = planned.dry_run;
                self.meta.sets =
                    planned.sets.iter().map(|s| SetSummary { set_name: s.set_name.clone(), counts: None }).collect();
                change.meta = true;
            }
            Some(status_event::Detail::Rejected(rejected)) if self.meta.rejection.is_none() => {
                self.meta.rejection = Some(rejected.clone());
                change.meta = true;
            }
            None if !event.task_id.is_empty() && self.apply_task(event) => {
                change.task = Some(event.task_id.clone());
            }
            // A repeated plan or rejection, or an event about nothing.
            _ => {}
        }
        if self.is_final() && self.meta.finished_at.is_none() {
            self.meta.finished_at = event.at;
            change.meta = true;
        }
        if change.any() {
            self.meta.updated_at = event.at;
        }
        change
    }

    fn apply_task(&mut self, event: &StatusEvent) -> bool {
        let phase = TaskPhase::try_from(event.phase).unwrap_or(TaskPhase::Unspecified);
        let previous = self.tasks.get(&event.task_id).cloned();
        if let Some(old) = &previous {
            let old_phase = phase_of(old);
            let newer = phase.rank() > old_phase.rank()
                || (phase.rank() == old_phase.rank() && !old_phase.is_terminal() && event.attempt >= old.attempt);
            if !newer {
                return false;
            }
        }
        let old = previous.clone().unwrap_or_default();
        let pick = |new: &str, old: &str| {
            if new.is_empty() {
                old.to_string()
            } else {
                new.to_string()
            }
        };
        let task = TaskState {
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
            attempt: event.attempt.max(old.attempt),
        };
        if let Some(old) = &previous {
            self.count(old, -1);
        }
        self.count(&task, 1);
        self.tasks.insert(task.task_id.clone(), task);
        true
    }

    pub fn is_final(&self) -> bool {
        self.meta.rejection.is_some() || (self.meta.planned && self.counts.terminal() >= self.meta.total_tasks)
    }

    pub fn verdict(&self) -> Verdict {
        let c = &self.counts;
        if self.meta.rejection.is_some() {
            Verdict::Rejected
        } else if !self.is_final() {
            Verdict::InProgress
        } else if c.succeeded + c.planned == 0 {
            // Nothing restored (or, for a dry run, nothing would be): never call that success.
            Verdict::Failed
        } else if c.failed > 0 {
            Verdict::PartiallyFailed
        } else if c.skipped > 0 || self.warnings > 0 {
            Verdict::CompletedWithWarnings
        } else {
            Verdict::Completed
        }
    }

    /// The summary with counts; tasks only when asked (status replies), at most `max_tasks`.
    pub fn summary(&self, max_tasks: usize) -> RequestSummary {
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
        if max_tasks > 0 {
            let mut tasks: Vec<&TaskState> = self.tasks.values().collect();
            tasks.sort_by(|a, b| {
                (&a.set_name, &a.source_resource_id, &a.task_id).cmp(&(&b.set_name, &b.source_resource_id, &b.task_id))
            });
            summary.tasks_truncated = tasks.len() > max_tasks;
            summary.tasks = tasks.into_iter().take(max_tasks).cloned().collect();
        }
        summary
    }
}
