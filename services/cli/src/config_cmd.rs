//! `lifeboat config`: Route 53 and ELBv2 configuration exported to S3 (a backup run through the
//! bus, like `lifeboat backup run`), diffed in-process (an export against the live
//! configuration or another export), and restored into a target (a restore request through the
//! bus, or with `--dry-run` the plan computed in-process).

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lifeboat_common::aws::{load_base_config, Accounts};
use lifeboat_common::validate::{validate_request, Policy};
use lifeboat_config::changes::RestoreReport;
use lifeboat_config::diff::{self, Difference};
use lifeboat_config::document::{ConfigDocument, Service};
use lifeboat_config::service as config;
use lifeboat_config::store::{self, Location};
use lifeboat_proto as pb;

/// `config diff`'s exit code when the two configurations differ (`render::exit_code`'s
/// PARTIALLY_FAILED: not clean).
pub const DIFFERENT: i32 = 3;

/// The plan and rule of a run asked for with `config export` (its due id and run id follow).
pub const EXPORT_PLAN: &str = "config";
pub const EXPORT_RULE: &str = "export";

#[derive(Clone, Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Export Route 53 and ELBv2 configuration to S3 now (a backup run); prints the run id, or
    /// with --watch follows it to its verdict.
    Export(ExportArgs),
    /// What differs between an export and the live configuration, or two exports; exit 0 when
    /// equal, 3 when different.
    Diff(DiffArgs),
    /// Restore an export into a target account and region (a restore request, watched); with
    /// --dry-run only prints what would change.
    Restore(RestoreArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct BucketArgs {
    /// The bucket the exports are in.
    #[arg(long)]
    pub bucket: String,
    /// The bucket's region.
    #[arg(long)]
    pub bucket_region: String,
    /// The key prefix of the exports.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

impl BucketArgs {
    pub fn location(&self) -> Location {
        Location {
            bucket: self.bucket.clone(),
            region: self.bucket_region.clone(),
            prefix: self.prefix.clone(),
            kms_key_id: String::new(),
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    #[arg(long)]
    pub account: String,
    /// The region of the load balancers (Route 53 is global).
    #[arg(long)]
    pub region: String,
    #[arg(long, value_delimiter = ',', default_value = "route53,elbv2")]
    pub services: Vec<String>,
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// SSE-KMS key of the documents.
    #[arg(long)]
    pub kms_key: Option<String>,
    #[arg(long)]
    pub watch: bool,
    #[arg(long)]
    pub timeout: Option<u64>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub bucket: BucketArgs,
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub region: String,
    /// route53 or elbv2.
    #[arg(long)]
    pub service: String,
    /// An export's key, or `latest`.
    #[arg(long, default_value = "latest")]
    pub from: String,
    /// An export's key, or `live` (read now).
    #[arg(long, default_value = "live")]
    pub to: String,
    #[arg(long)]
    pub json: bool,
    /// Compare the ids a restore maps too (ARNs, zone ids, DNS names).
    #[arg(long)]
    pub strict: bool,
    #[arg(long, env = "LIFEBOAT_ROLE_NAME", default_value = lifeboat_common::aws::DEFAULT_ROLE_NAME)]
    pub role_name: String,
}

#[derive(Clone, Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// The exported account and region.
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub region: String,
    #[arg(long, value_delimiter = ',', default_value = "route53,elbv2")]
    pub services: Vec<String>,
    /// The target (default: the exported account and region).
    #[arg(long)]
    pub to_account: Option<String>,
    #[arg(long)]
    pub to_region: Option<String>,
    /// Source subnet to the target's, `subnet-a=subnet-b` (repeatable).
    #[arg(long = "map-subnet", value_name = "FROM=TO")]
    pub map_subnet: Vec<String>,
    #[arg(long = "map-sg", value_name = "FROM=TO")]
    pub map_sg: Vec<String>,
    #[arg(long = "map-vpc", value_name = "FROM=TO")]
    pub map_vpc: Vec<String>,
    #[arg(long = "map-certificate", value_name = "FROM=TO")]
    pub map_certificate: Vec<String>,
    #[arg(long = "map-target", value_name = "FROM=TO")]
    pub map_target: Vec<String>,
    /// Appended to load balancer and target group names.
    #[arg(long, default_value = "")]
    pub name_suffix: String,
    /// Replace items that exist in the target and differ.
    #[arg(long)]
    pub replace: bool,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The newest export at or before this time (RFC 3339); default: the newest.
    #[arg(long)]
    pub before: Option<String>,
    #[arg(long)]
    pub request_id: Option<String>,
    #[arg(long)]
    pub timeout: Option<u64>,
    #[arg(long, env = "LIFEBOAT_ROLE_NAME", default_value = lifeboat_common::aws::DEFAULT_ROLE_NAME)]
    pub role_name: String,
}

/// `--services route53,elbv2`, each named.
pub fn parse_services(names: &[String]) -> anyhow::Result<Vec<Service>> {
    let mut services = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let service = Service::parse(name).with_context(|| format!("--services: '{name}' is not route53 or elbv2"))?;
        if !services.contains(&service) {
            services.push(service);
        }
    }
    anyhow::ensure!(!services.is_empty(), "--services: name route53, elbv2 or both");
    Ok(services)
}

/// `a=b` pairs of a `--map-*` flag.
fn pairs(flag: &str, values: &[String]) -> anyhow::Result<HashMap<String, String>> {
    values
        .iter()
        .map(|value| {
            let (from, to) = value.split_once('=').with_context(|| format!("--{flag} {value}: expected FROM=TO"))?;
            Ok((from.trim().to_string(), to.trim().to_string()))
        })
        .collect()
}

fn parse_time(flag: &str, text: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("--{flag} {text}: not an RFC 3339 time such as 2026-12-04T10:00:00Z"))
}

/// The backup run `config export` submits, checked as discovery checks it.
pub fn export_request(args: &ExportArgs, now: DateTime<Utc>) -> anyhow::Result<pb::RestoreRequest> {
    let services = parse_services(&args.services)?;
    let due_id = lifeboat_scheduler::run::manual_due_id(EXPORT_PLAN, EXPORT_RULE, now);
    let run = pb::BackupRun {
        plan: EXPORT_PLAN.to_string(),
        rule: EXPORT_RULE.to_string(),
        due_id,
        due_at: Some(lifeboat_common::time::to_timestamp(now)),
        selection: Some(pb::BackupSelection {
            resource_types: services.iter().map(|s| config::resource_type(*s) as i32).collect(),
            account_ids: vec![args.account.clone()],
            regions: vec![args.region.clone()],
            all_resources: true,
            ..Default::default()
        }),
        config_export: Some(pb::ConfigExport {
            bucket: args.bucket.bucket.clone(),
            region: args.bucket.bucket_region.clone(),
            prefix: args.bucket.prefix.clone(),
            kms_key_id: args.kms_key.clone().unwrap_or_default(),
        }),
        manual: true,
        ..Default::default()
    };
    let request = lifeboat_scheduler::run::request(run, &std::env::var("USER").unwrap_or_default());
    checked(request)
}

fn checked(request: pb::RestoreRequest) -> anyhow::Result<pb::RestoreRequest> {
    if let Err(errors) = validate_request(&request, &Policy::default().with_config_types()) {
        let listed: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        anyhow::bail!("invalid request: {}", listed.join("; "));
    }
    Ok(request)
}

/// The target of `config restore`.
pub fn restore_target(args: &RestoreArgs) -> anyhow::Result<pb::ConfigTarget> {
    Ok(pb::ConfigTarget {
        account_id: args.to_account.clone().unwrap_or_else(|| args.account.clone()),
        region: args.to_region.clone().unwrap_or_else(|| args.region.clone()),
        name_suffix: args.name_suffix.clone(),
        subnet_map: pairs("map-subnet", &args.map_subnet)?,
        security_group_map: pairs("map-sg", &args.map_sg)?,
        vpc_map: pairs("map-vpc", &args.map_vpc)?,
        certificate_map: pairs("map-certificate", &args.map_certificate)?,
        target_map: pairs("map-target", &args.map_target)?,
        replace: args.replace,
        bucket: args.bucket.bucket.clone(),
        bucket_region: args.bucket.bucket_region.clone(),
        prefix: args.bucket.prefix.clone(),
    })
}

/// The restore request `config restore` submits: one set restoring the chosen exports.
pub fn restore_request(args: &RestoreArgs) -> anyhow::Result<pb::RestoreRequest> {
    let services = parse_services(&args.services)?;
    let selection = match &args.before {
        Some(text) => Some(pb::source::Selection::PointInTime(pb::PointInTime {
            time: Some(lifeboat_common::time::to_timestamp(parse_time("before", text)?)),
            direction: pb::SearchDirection::Before as i32,
            until: None,
        })),
        None => None,
    };
    let set = pb::RestoreSet {
        name: "config".to_string(),
        source: Some(pb::Source {
            account_id: args.account.clone(),
            region: args.region.clone(),
            selection,
            ..Default::default()
        }),
        resource_types: services.iter().map(|s| config::resource_type(*s) as i32).collect(),
        target: Some(pb::Targets { config: Some(restore_target(args)?), ..Default::default() }),
        target_role_arn: String::new(),
    };
    checked(pb::RestoreRequest {
        request_id: args.request_id.clone().unwrap_or_else(lifeboat_common::ids::new_request_id),
        restore_sets: vec![set],
        submitted_at: Some(lifeboat_common::time::now()),
        requested_by: std::env::var("USER").unwrap_or_default(),
        ..Default::default()
    })
}

/// A document named by `which`: an export's key, `latest`, or (with `live_ok`) `live`.
async fn document(
    accounts: &Accounts,
    args: &DiffArgs,
    service: Service,
    which: &str,
) -> anyhow::Result<ConfigDocument> {
    let location = args.bucket.location();
    let region = config::document_region(service, &args.region);
    if which == "live" {
        let aws = accounts.config_for(&args.account, config::call_region(region)).await?;
        return Ok(lifeboat_config::export::export_document(&aws, &args.account, &args.region, service).await?);
    }
    let s3_config = accounts.config_for(&args.account, &location.region).await?;
    let s3 = store::client(&s3_config, &args.account, &location);
    let key = if which == "latest" {
        let latest = store::latest(&s3, &location, &args.account, region, service).await?;
        let what = location.url(&location.latest_key(&args.account, region, service));
        latest.with_context(|| format!("--from latest: {what} does not exist (no export yet)"))?.key
    } else {
        which.to_string()
    };
    Ok(store::get(&s3, &location, &key).await?)
}

/// `config diff`: prints the differences (text or JSON); 0 when there are none, else [`DIFFERENT`].
pub async fn diff(args: &DiffArgs) -> anyhow::Result<i32> {
    let service =
        Service::parse(&args.service).with_context(|| format!("--service {}: not route53 or elbv2", args.service))?;
    let accounts = Accounts::new(load_base_config().await, args.role_name.clone());
    let from = document(&accounts, args, service, &args.from).await?;
    let to = document(&accounts, args, service, &args.to).await?;
    let differences = diff::diff_documents(&from, &to, args.strict);
    print_diff(&differences, args.json)?;
    Ok(if differences.is_empty() { 0 } else { DIFFERENT })
}

fn print_diff(differences: &[Difference], json: bool) -> anyhow::Result<()> {
    let summary = diff::summary(differences);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"summary": summary, "differences": differences}))?
        );
    } else {
        println!("{}", diff::render_text(differences));
        if !differences.is_empty() {
            println!("{summary}");
        }
    }
    Ok(())
}

/// `config restore --dry-run`: the exports the flags pick and what restoring them would do,
/// read in-process; nothing changes.
pub async fn dry_run(args: &RestoreArgs, json: bool) -> anyhow::Result<i32> {
    let services = parse_services(&args.services)?;
    let target = restore_target(args)?;
    let accounts = Accounts::new(load_base_config().await, args.role_name.clone());
    let location = args.bucket.location();
    let s3_config = accounts.config_for(&args.account, &location.region).await?;
    let s3 = store::client(&s3_config, &args.account, &location);
    let before = args.before.as_deref().map(|t| parse_time("before", t)).transpose()?;
    let found = config::find_exports(&s3, &location, &args.account, &args.region, &services, before, None).await?;
    anyhow::ensure!(
        !found.is_empty(),
        "no export of {}/{} under {}",
        args.account,
        args.region,
        location.url(&location.key_prefix())
    );
    let mut docs = Vec::new();
    for (_, entry) in &found {
        docs.push(store::get(&s3, &location, &entry.key).await?);
    }
    let aws = accounts.config_for(&target.account_id, &target.region).await?;
    let options = config::apply_options(&target, true);
    let report =
        lifeboat_config::apply::restore_documents(&aws, &target.account_id, &target.region, &docs, &options).await?;
    print_plan(&found, &report, json)?;
    Ok(0)
}

fn print_plan(found: &[(Service, store::ExportEntry)], report: &RestoreReport, json: bool) -> anyhow::Result<()> {
    let keys: Vec<&str> = found.iter().map(|(_, e)| e.key.as_str()).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"exports": keys, "plan": report}))?);
        return Ok(());
    }
    println!("dry run of {}", keys.join(", "));
    for change in &report.changes {
        println!("{:<8} {}  {}", change.kind.as_str(), change.resource, change.detail);
    }
    for warning in &report.warnings {
        println!("warning  {warning}");
    }
    println!("{}", report.summary());
    Ok(())
}
