//! How requests, plans and summaries are shown: a progress bar while running, a table of tasks
//! and the verdict at the end, or JSON for scripts.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use indicatif::{ProgressBar, ProgressStyle};
use lifeboat_proto::{PhaseCounts, RequestSummary, ResourceType, TaskPhase, TaskState, Verdict};
use serde_json::{json, Value};

pub fn verdict(summary: &RequestSummary) -> Verdict {
    Verdict::try_from(summary.verdict).unwrap_or_default()
}

/// Exit code of `watch` and `status`: 0 only for COMPLETED.
pub fn exit_code(verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Completed => 0,
        Verdict::CompletedWithWarnings => 2,
        Verdict::PartiallyFailed => 3,
        Verdict::Failed => 4,
        Verdict::Rejected => 5,
        Verdict::Cancelled => 7,
        Verdict::InProgress | Verdict::Unspecified => 6,
    }
}

pub fn counts_line(counts: &PhaseCounts) -> String {
    let mut parts = Vec::new();
    for (name, n) in [
        ("planned", counts.planned),
        ("queued", counts.queued),
        ("running", counts.running),
        ("waiting", counts.waiting),
        ("succeeded", counts.succeeded),
        ("failed", counts.failed),
        ("skipped", counts.skipped),
        ("cancelled", counts.cancelled),
    ] {
        if n > 0 {
            parts.push(format!("{name} {n}"));
        }
    }
    parts.join(" · ")
}

/// A live progress bar; on a terminal it redraws in place, elsewhere it prints a line per change.
pub struct Progress {
    bar: ProgressBar,
    last_line: String,
}

impl Progress {
    pub fn new(request_id: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:40.cyan/blue}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(request_id.to_string());
        Self { bar, last_line: String::new() }
    }

    pub fn update(&mut self, summary: &RequestSummary) {
        let counts = summary.counts.unwrap_or_default();
        self.bar.set_length(summary.total_tasks as u64);
        self.bar.set_position(counts.terminal() as u64);
        let mut line = counts_line(&counts);
        if let Some(plan) = plan_line(summary) {
            line = if line.is_empty() { plan } else { format!("{line} · {plan}") };
        }
        if self.bar.is_hidden() && line != self.last_line {
            eprintln!("{} {}/{} {}", summary.request_id, counts.terminal(), summary.total_tasks, line);
        }
        self.bar.set_message(line.clone());
        self.last_line = line;
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn short_target(task: &TaskState) -> String {
    task.target
        .as_ref()
        .map(|t| {
            format!(
                "{}/{}",
                t.account_id,
                if t.availability_zone.is_empty() { &t.region } else { &t.availability_zone }
            )
        })
        .unwrap_or_default()
}

/// ARNs are long; a table shows their resource part (`table/orders-restored`,
/// `backup/01795310179593-51313fd7`). JSON output keeps them whole.
pub fn short_id(id: &str) -> String {
    let Some(resource) = id.strip_prefix("arn:").and_then(|rest| rest.splitn(5, ':').nth(4)) else {
        return id.to_string();
    };
    match resource.rsplit_once("/backup/") {
        Some((_, backup)) => format!("backup/{backup}"),
        None => resource.to_string(),
    }
}

fn phase_name(task: &TaskState) -> &'static str {
    TaskPhase::try_from(task.phase).unwrap_or_default().short_name()
}

/// The final table: one row per task, then counts per set and the verdict.
pub fn table(summary: &RequestSummary) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    if summary.dry_run {
        table.set_header(["set", "type", "source", "backup", "taken", "target", "why"]);
        for task in &summary.tasks {
            table.add_row([
                task.set_name.clone(),
                ResourceType::try_from(task.resource_type).unwrap_or_default().short_name().to_string(),
                task.source_resource_id.clone(),
                if task.source_backup_id.is_empty() {
                    format!("- ({})", task.reason_code)
                } else {
                    short_id(&task.source_backup_id)
                },
                lifeboat_common::time::display(task.backup_created_at.as_ref()),
                short_target(task),
                if task.selection_reason.is_empty() { task.message.clone() } else { task.selection_reason.clone() },
            ]);
        }
    } else {
        table.set_header(["set", "source", "backup", "phase", "created", "target", "reason"]);
        for task in &summary.tasks {
            let reason = if task.reason_code.is_empty() {
                String::new()
            } else {
                format!("{}: {}", task.reason_code, task.message)
            };
            table.add_row([
                task.set_name.clone(),
                task.source_resource_id.clone(),
                short_id(&task.source_backup_id),
                phase_name(task).to_string(),
                task.created_resource_ids.iter().map(|id| short_id(id)).collect::<Vec<_>>().join(" "),
                short_target(task),
                reason,
            ]);
        }
    }
    let mut out = String::new();
    if let Some(rejection) = &summary.rejection {
        out.push_str(&format!("rejected: {}: {}\n", rejection.field, rejection.message));
        for error in rejection.errors.iter().skip(1) {
            out.push_str(&format!("          {}: {}\n", error.field, error.message));
        }
    }
    if !summary.tasks.is_empty() {
        out.push_str(&table.to_string());
        out.push('\n');
    }
    if summary.tasks_truncated {
        out.push_str(&format!("(showing {} of {} tasks)\n", summary.tasks.len(), summary.total_tasks));
    }
    for set in &summary.sets {
        out.push_str(&format!("set {}: {}\n", set.set_name, counts_line(&set.counts.unwrap_or_default())));
    }
    if let Some(plan) = plan_line(summary) {
        out.push_str(&format!("plan: {} tasks, {plan}\n", summary.total_tasks));
    }
    let plan = if summary.dry_run { " (dry run: nothing was created)" } else { "" };
    out.push_str(&format!("request {}: {}{plan}\n", summary.request_id, verdict(summary).short_name()));
    out
}

fn counts_json(counts: &PhaseCounts) -> Value {
    json!({
        "planned": counts.planned, "queued": counts.queued, "running": counts.running, "waiting": counts.waiting,
        "succeeded": counts.succeeded, "failed": counts.failed, "skipped": counts.skipped,
        "cancelled": counts.cancelled,
    })
}

/// `1 h 5 min`, `12 min`, `40 s`: an estimate, so no more precision than that.
pub fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s.div_ceil(60)),
        s => {
            let minutes = (s % 3600).div_ceil(60);
            if minutes == 0 {
                format!("{} h", s / 3600)
            } else {
                format!("{} h {minutes} min", s / 3600)
            }
        }
    }
}

/// Size and estimated duration of a planned request: `120 GiB, about 25 min`.
pub fn plan_line(summary: &RequestSummary) -> Option<String> {
    (summary.planned && summary.rejection.is_none()).then(|| {
        let estimate = if summary.estimated_seconds > 0 {
            format!(", about {}", human_duration(summary.estimated_seconds.into()))
        } else {
            String::new()
        };
        format!("{} GiB{estimate}", summary.total_size_gib)
    })
}

/// How long ago: `40s`, `12m`, `3h`, `2d`.
pub fn age(at: Option<&lifeboat_proto::Timestamp>, now: std::time::SystemTime) -> String {
    let Some(at) = at else { return "-".to_string() };
    let now = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default();
    let seconds = (now - at.seconds).max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `lifeboat restore list`: one row per request, newest first.
pub fn list_table(requests: &[RequestSummary], now: std::time::SystemTime) -> String {
    if requests.is_empty() {
        return "no requests\n".to_string();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(["request", "verdict", "tasks", "counts", "size", "age"]);
    for summary in requests {
        let mut verdict = verdict(summary).short_name().to_string();
        if summary.dry_run {
            verdict.push_str(" (dry run)");
        }
        if summary.cancelled && summary.verdict == Verdict::InProgress as i32 {
            verdict.push_str(" (cancelling)");
        }
        table.add_row([
            summary.request_id.clone(),
            verdict,
            summary.total_tasks.to_string(),
            counts_line(&summary.counts.unwrap_or_default()),
            if summary.planned { format!("{} GiB", summary.total_size_gib) } else { String::new() },
            age(summary.started_at.as_ref(), now),
        ]);
    }
    format!("{table}\n")
}

pub fn list_json(requests: &[RequestSummary]) -> Value {
    Value::Array(requests.iter().map(summary_json).collect())
}

pub fn summary_json(summary: &RequestSummary) -> Value {
    let time = |ts: &Option<lifeboat_proto::Timestamp>| lifeboat_common::time::display(ts.as_ref());
    json!({
        "request_id": summary.request_id,
        "verdict": verdict(summary).short_name(),
        "final": summary.r#final,
        "dry_run": summary.dry_run,
        "total_tasks": summary.total_tasks,
        "total_size_gib": summary.total_size_gib,
        "estimated_seconds": summary.estimated_seconds,
        "cancelled": summary.cancelled,
        "retries": summary.retries,
        "counts": counts_json(&summary.counts.unwrap_or_default()),
        "sets": summary.sets.iter().map(|s| json!({"name": s.set_name, "counts": counts_json(&s.counts.unwrap_or_default())})).collect::<Vec<_>>(),
        "rejection": summary.rejection.as_ref().map(|r| json!({
            "field": r.field, "message": r.message,
            "errors": r.errors.iter().map(|e| json!({"field": e.field, "message": e.message})).collect::<Vec<_>>(),
        })),
        "started_at": time(&summary.started_at),
        "finished_at": time(&summary.finished_at),
        "tasks": summary.tasks.iter().map(|t| json!({
            "task_id": t.task_id,
            "set": t.set_name,
            "resource_type": ResourceType::try_from(t.resource_type).unwrap_or_default().short_name(),
            "phase": phase_name(t),
            "source_resource_id": t.source_resource_id,
            "source_backup_id": t.source_backup_id,
            "backup_created_at": time(&t.backup_created_at),
            "selection_reason": t.selection_reason,
            "created_resource_ids": t.created_resource_ids,
            "target": t.target.as_ref().map(|l| json!({"account_id": l.account_id, "region": l.region, "availability_zone": l.availability_zone})),
            "reason_code": t.reason_code,
            "message": t.message,
            "attempts": t.attempt,
            "generation": t.generation,
        })).collect::<Vec<_>>(),
        "tasks_truncated": summary.tasks_truncated,
    })
}
