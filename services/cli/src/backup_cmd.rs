//! `lifeboat backup list` and `lifeboat backup sweep`: Lifeboat's recovery points as their tags
//! describe them, and the retention sweep run on demand. Both read AWS directly (the standard
//! chain, roles into other accounts as the services assume them) and the bus's shared store,
//! where DynamoDB backups keep their tags.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use lifeboat_cli::serve::Transport;
use lifeboat_common::aws::{load_base_config, Accounts};
use lifeboat_common::backup::format_retention;
use lifeboat_common::shared::SharedStore;
use lifeboat_plans::points::{self, Point};
use lifeboat_plans::sweep::{Outcome, PointReport, SweepOptions, SweepReport, Target};
use serde_json::{json, Value};

#[derive(Args)]
pub struct SweepArgs {
    /// The region to sweep. Repeatable.
    #[arg(long = "region", required = true)]
    pub regions: Vec<String>,
    /// An account to sweep (default: the caller's). Repeatable.
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// Report what would be deleted and archived, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete GOVERNANCE-locked points whose retention is over before their lock ends (each
    /// one is logged).
    #[arg(long)]
    pub override_governance: bool,
    /// The role assumed in another account.
    #[arg(long, env = "LIFEBOAT_ROLE_NAME", default_value = lifeboat_common::aws::DEFAULT_ROLE_NAME)]
    pub role_name: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// A region to list (default: the caller's). Repeatable.
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// An account to list (default: the caller's). Repeatable.
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// Only the points of this resource (volume, instance, DB, table).
    #[arg(long)]
    pub resource: Option<String>,
    /// The role assumed in another account.
    #[arg(long, env = "LIFEBOAT_ROLE_NAME", default_value = lifeboat_common::aws::DEFAULT_ROLE_NAME)]
    pub role_name: String,
}

/// Every (account, region) pair the flags name; errors name the flag.
fn targets(accounts: &[String], regions: &[String]) -> anyhow::Result<Vec<Target>> {
    for region in regions {
        if !lifeboat_common::validate::is_region(region) {
            anyhow::bail!("--region: '{region}' is not an AWS region name");
        }
    }
    for account in accounts {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!("--account: '{account}' is not a 12-digit AWS account id");
        }
    }
    let accounts = if accounts.is_empty() { vec![String::new()] } else { accounts.to_vec() };
    Ok(accounts
        .iter()
        .flat_map(|account| regions.iter().map(|region| Target { account_id: account.clone(), region: region.clone() }))
        .collect())
}

/// The shared store of the configured bus.
async fn shared_store(transport: &Transport, aws: &aws_config::SdkConfig) -> anyhow::Result<Arc<dyn SharedStore>> {
    let connected = transport.connect(aws).await.context("connecting to the bus for the shared store")?;
    Ok(connected.bus.shared())
}

/// `backup sweep`: exit 0 when everything it decided was done, 1 when a listing, a deletion or
/// a move failed.
pub async fn sweep(args: &SweepArgs, transport: &Transport, json_output: bool) -> anyhow::Result<i32> {
    let targets = targets(&args.accounts, &args.regions)?;
    let aws = load_base_config().await;
    let store = shared_store(transport, &aws).await?;
    let accounts = Accounts::new(aws, args.role_name.clone());
    let options = SweepOptions { targets, dry_run: args.dry_run, governance_override: args.override_governance };
    let report = lifeboat_plans::sweep(&accounts, store.as_ref(), &options, Utc::now()).await;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&sweep_json(&report))?);
    } else {
        print!("{}", sweep_text(&report));
    }
    Ok(if report.has_failures() { 1 } else { 0 })
}

/// `backup list`: the points of every target, oldest first per resource.
pub async fn list(args: &ListArgs, transport: &Transport, json_output: bool) -> anyhow::Result<i32> {
    let aws = load_base_config().await;
    let regions = if args.regions.is_empty() {
        let region = aws.region().context("--region: none given and no default region (AWS_REGION)")?;
        vec![region.to_string()]
    } else {
        args.regions.clone()
    };
    let targets = targets(&args.accounts, &regions)?;
    let store = shared_store(transport, &aws).await?;
    let accounts = Accounts::new(aws, args.role_name.clone());
    let mut found = Vec::new();
    for target in &targets {
        let listed = points::list(&accounts, store.as_ref(), &target.account_id, &target.region)
            .await
            .with_context(|| format!("listing recovery points in {}", target.region))?;
        found.extend(listed);
    }
    if let Some(resource) = &args.resource {
        found.retain(|p| &p.resource_id == resource || p.source_resource() == resource);
    }
    found.sort_by(|a, b| {
        (a.source_resource(), &a.region, a.created_at, &a.id).cmp(&(
            b.source_resource(),
            &b.region,
            b.created_at,
            &b.id,
        ))
    });
    if json_output {
        println!("{}", serde_json::to_string_pretty(&Value::Array(found.iter().map(point_json).collect()))?);
    } else {
        println!("{}", list_table(&found, Utc::now()));
        let size: i64 = found.iter().filter_map(|p| p.size_gib).sum();
        println!("{} recovery points, {size} GiB", found.len());
    }
    Ok(0)
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
}

/// `3d 4h`, `5h 12m`, `40m`: enough to see which points are old.
fn age(created_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let minutes = (now - created_at).num_minutes().max(0);
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// When the point expires: its time for `days` rules, the rule for keep-last-N ones.
fn expires(point: &Point) -> String {
    match (&point.tags.expires_at, &point.tags.retention) {
        (Some(at), _) => time(Some(*at)),
        (None, Some(retention)) => format!("keep {}", format_retention(retention)),
        (None, None) => String::new(),
    }
}

fn lock(point: &Point) -> String {
    match (point.tags.lock.as_str(), point.tags.lock_until) {
        ("NONE", _) => String::new(),
        (mode, Some(until)) => format!("{mode} until {}", time(Some(until))),
        (mode, None) => mode.to_string(),
    }
}

pub fn point_json(point: &Point) -> Value {
    json!({
        "kind": point.kind.as_str(),
        "id": point.id,
        "accountId": point.account_id,
        "region": point.region,
        "resourceId": point.resource_id,
        "sourceResourceId": point.source_resource(),
        "plan": point.tags.plan,
        "rule": point.tags.rule,
        "run": point.tags.run,
        "createdAt": time(Some(point.created_at)),
        "sizeGib": point.size_gib,
        "state": point.state,
        "storageTier": point.storage_tier,
        "retention": point.tags.retention.as_ref().map(format_retention),
        "expiresAt": point.tags.expires_at.map(|_| time(point.tags.expires_at)),
        "lock": point.tags.lock,
        "lockUntil": point.tags.lock_until.map(|_| time(point.tags.lock_until)),
        "coldAt": point.tags.cold_at.map(|_| time(point.tags.cold_at)),
        "copyOf": point.tags.copy_of,
        "snapshotIds": point.snapshot_ids,
    })
}

pub fn list_table(points: &[Point], now: DateTime<Utc>) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(["resource", "type", "point", "region", "plan/rule", "created", "age", "expires", "lock"]);
    for point in points {
        table.add_row([
            point.source_resource().to_string(),
            point.kind.as_str().to_string(),
            point.id.clone(),
            point.region.clone(),
            format!("{}/{}", point.tags.plan, point.tags.rule),
            time(Some(point.created_at)),
            age(point.created_at, now),
            expires(point),
            lock(point),
        ]);
    }
    table.to_string()
}

fn outcome_json(report: &PointReport) -> Value {
    let mut value = point_json(&report.point);
    value["outcome"] = json!(report.outcome.name());
    value["detail"] = json!(report.outcome.detail());
    if let Outcome::Failed { code, .. } = &report.outcome {
        value["code"] = json!(code);
    }
    value
}

pub fn sweep_json(report: &SweepReport) -> Value {
    let failed: Vec<Value> = report
        .failed_targets
        .iter()
        .map(|f| json!({"accountId": f.target.account_id, "region": f.target.region, "error": f.error.to_string()}))
        .collect();
    json!({
        "dryRun": report.dry_run,
        "points": report.points.iter().map(outcome_json).collect::<Vec<_>>(),
        "failedTargets": failed,
    })
}

pub fn sweep_text(report: &SweepReport) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(["point", "type", "region", "resource", "outcome", "why"]);
    let verb = |outcome: &Outcome| match (outcome, report.dry_run) {
        (Outcome::Deleted { .. }, true) => "would delete",
        (Outcome::Archived, true) => "would archive",
        (outcome, _) => outcome.name(),
    };
    for done in &report.points {
        table.add_row([
            done.point.id.clone(),
            done.point.kind.as_str().to_string(),
            done.point.region.clone(),
            done.point.source_resource().to_string(),
            verb(&done.outcome).to_string(),
            done.outcome.detail(),
        ]);
    }
    let mut text = format!("{table}\n");
    let count = |name: &str| report.points.iter().filter(|p| p.outcome.name() == name).count();
    text.push_str(&format!(
        "{} points: {} deleted, {} archived, {} kept, {} refused by lock, {} failed{}\n",
        report.points.len(),
        count("deleted"),
        count("archived"),
        count("kept"),
        count("refused"),
        count("failed"),
        if report.dry_run { " (dry run: nothing was changed)" } else { "" },
    ));
    for failure in &report.failed_targets {
        let account =
            if failure.target.account_id.is_empty() { "caller's account" } else { &failure.target.account_id };
        text.push_str(&format!("not swept: {account} {}: {}\n", failure.target.region, failure.error));
    }
    text
}
