//! `lifeboat backup run` (a rule's run, now) and `lifeboat backup report` (a run's failed
//! resources with their reasons, as CSV), and the plan files the scheduler serves.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use lifeboat_common::validate::{validate_request, Policy};
use lifeboat_plans::Plan;
use lifeboat_proto::{RequestSummary, ResourceType, RestoreRequest, TaskPhase};

/// The plans in `paths`: files, or directories whose `.yaml`, `.yml` and `.json` files are plans.
/// Any invalid plan stops the lot, with its errors by field.
pub fn load_plans(paths: &[String]) -> anyhow::Result<Vec<Plan>> {
    let mut files = Vec::new();
    for path in paths.iter().filter(|p| !p.is_empty()) {
        if Path::new(path).is_dir() {
            let mut found: Vec<String> = std::fs::read_dir(path)
                .with_context(|| format!("reading {path}"))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
                .map(|p| p.display().to_string())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut plans: Vec<Plan> = Vec::new();
    for file in files {
        let plan = load_plan(&file)?;
        if plans.iter().any(|p| p.name == plan.name) {
            anyhow::bail!("{file}: another plan file is also named '{}'", plan.name);
        }
        plans.push(plan);
    }
    Ok(plans)
}

/// One plan file, or its errors by field.
pub fn load_plan(file: &str) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    lifeboat_plans::load(file, &text).map_err(|e| anyhow::anyhow!("{file}: {e}"))
}

/// The requests of a run now of `rule` (every rule when None) of the plan in `file`, checked as
/// discovery will check them.
pub fn run_requests(file: &str, rule: Option<&str>) -> anyhow::Result<Vec<RestoreRequest>> {
    let plan = load_plan(file)?;
    let rules: Vec<_> = plan.rules.iter().filter(|r| rule.is_none_or(|name| r.name == name)).collect();
    if rules.is_empty() {
        let names: Vec<_> = plan.rules.iter().map(|r| r.name.as_str()).collect();
        anyhow::bail!("plan '{}' has no rule '{}' (its rules: {})", plan.name, rule.unwrap_or(""), names.join(", "));
    }
    let now = Utc::now();
    let user = std::env::var("USER").unwrap_or_default();
    let mut requests = Vec::new();
    for rule in rules {
        let due_id = lifeboat_scheduler::run::manual_due_id(&plan.name, &rule.name, now);
        let run = lifeboat_scheduler::run::backup_run(&plan, rule, due_id, now, true);
        let request = lifeboat_scheduler::run::request(run, &user);
        if let Err(errors) = validate_request(&request, &Policy::default()) {
            let listed: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
            anyhow::bail!("rule '{}' makes an invalid run: {}", rule.name, listed.join("; "));
        }
        requests.push(request);
    }
    Ok(requests)
}

/// The columns of `lifeboat backup report --csv`.
pub const REPORT_HEADER: &str = "resource_type,resource_id,account_id,region,phase,reason_code,message,task_id";

/// One CSV line per resource of the run that was not backed up (failed, cancelled, or left
/// unfinished) or only partly (SUCCEEDED with an alert: a bucket some of whose objects could
/// not be copied), with its reason; only the header when every resource was.
pub fn report_csv(summary: &RequestSummary) -> String {
    let mut out = format!("{REPORT_HEADER}\n");
    for task in &summary.tasks {
        let phase = TaskPhase::try_from(task.phase).unwrap_or_default();
        let partial = task.alert.as_ref().is_some_and(|a| !a.code.is_empty());
        if (phase == TaskPhase::Succeeded || phase == TaskPhase::Skipped) && !partial {
            continue;
        }
        let target = task.target.clone().unwrap_or_default();
        let kind = ResourceType::try_from(task.resource_type).unwrap_or_default().short_name();
        let fields = [
            kind,
            &task.source_resource_id,
            &target.account_id,
            &target.region,
            phase.short_name(),
            &task.reason_code,
            &task.message,
            &task.task_id,
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// The reports of the objects the run's partial tasks did not back up (their alerts'
/// `report_url`s: `.skipped.csv` files in the vault), in task order, without duplicates.
pub fn object_report_urls(summary: &RequestSummary) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for alert in summary.tasks.iter().filter_map(|t| t.alert.as_ref()) {
        if !alert.report_url.is_empty() && !urls.contains(&alert.report_url) {
            urls.push(alert.report_url.clone());
        }
    }
    urls
}

/// [`report_csv`], then, when partial tasks' object reports were fetched (each a CSV with
/// [`SKIPPED_HEADER`]), an empty line, that header once, and every object line of them.
pub fn report_csv_with_objects(summary: &RequestSummary, reports: &[String]) -> String {
    let mut out = report_csv(summary);
    let lines: Vec<&str> =
        reports.iter().flat_map(|r| r.lines().filter(|l| !l.trim().is_empty() && *l != SKIPPED_HEADER)).collect();
    if lines.is_empty() {
        return out;
    }
    out.push('\n');
    out.push_str(SKIPPED_HEADER);
    out.push('\n');
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `lifeboat backup report RUN --csv`: the report with the objects of every partial task,
/// fetched from the vault with the caller's AWS credentials. A report that cannot be fetched
/// is named on stderr; the rest is still printed.
pub async fn report_csv_fetched(summary: &RequestSummary) -> String {
    let urls = object_report_urls(summary);
    if urls.is_empty() {
        return report_csv(summary);
    }
    let config = lifeboat_common::aws::load_base_config().await;
    let mut reports = Vec::new();
    for url in urls {
        match lifeboat_s3::vault::fetch_text(&config, &url).await {
            Ok(text) => reports.push(text),
            Err(e) => eprintln!("warning: the objects not backed up are listed in {url}, which could not be read: {e}"),
        }
    }
    report_csv_with_objects(summary, &reports)
}

use lifeboat_s3::vault::{csv_field, SKIPPED_HEADER};
