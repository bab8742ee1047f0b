//! The discovery service: consumes RestoreRequests and publishes the plan and the tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use lifeboat_common::aws::{backoff, Accounts, AwsError};
use lifeboat_common::bus::{Bus, Delivery, OutgoingMessage, Queue};
use lifeboat_common::events::{self, Reporter};
use lifeboat_common::validate::{validate_request, Policy};
use lifeboat_common::{ids, subjects, ConsumerOptions, Handler, Outcome};
use lifeboat_proto::{
    restore_task, status_event, Backup, BackupRun, BackupSelection, BackupTask, FieldError, RequestRejected,
    ResourceType, RestorePlanned, RestoreRequest, RestoreSet, RestoreTask, SetPlan, Source, StatusEvent, TaskPhase,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::select::{pick, TimeRule};

/// EC2 clients of a set's source account in any region (copies lead back to their originals).
struct SourceRegions<'a> {
    accounts: &'a Accounts,
    account_id: String,
}

#[async_trait]
impl crate::ebs::RegionClients for SourceRegions<'_> {
    async fn ec2(&self, region: &str) -> Result<aws_sdk_ec2::Client, AwsError> {
        let config = self.accounts.config_for(&self.account_id, region).await?;
        Ok(lifeboat_common::aws::ec2_client(&config, &self.account_id, region))
    }
}

/// Restore sets of one request whose backups are listed at the same time.
const SETS_LISTED_AT_ONCE: usize = 8;

/// A valid RDS identifier (letters, digits, single hyphens, at most 63) from `wanted`; a short
/// hash of `unique` keeps two long names apart.
pub(crate) fn rds_identifier(wanted: &str, unique: &str) -> String {
    let mut id = String::new();
    for c in wanted.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }) {
        if !(c == '-' && id.ends_with('-')) {
            id.push(c);
        }
    }
    let id = id.trim_matches('-').to_string();
    if id.len() <= 63 {
        return id;
    }
    let hash = &ids::task_id(unique, "", "")[2..8];
    format!("{}-{hash}", id[..56].trim_end_matches('-'))
}

/// Reason codes discovery reports.
pub mod reason {
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const UNDECODABLE_REQUEST: &str = "UNDECODABLE_REQUEST";
    pub const NO_MATCHING_BACKUPS: &str = "NO_MATCHING_BACKUPS";
    /// A backup run whose rule selected no resource.
    pub const NO_MATCHING_RESOURCES: &str = "NO_MATCHING_RESOURCES";
}

/// Field errors a rejection event lists before "and K more".
pub const MAX_REJECTION_ERRORS: usize = 20;

/// Tasks a request may start without `options.confirm_large` (or a higher `options.max_tasks`).
pub const DEFAULT_MAX_TASKS: u32 = 1000;

#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    pub policy: Policy,
    pub consumer: ConsumerOptions,
    /// First delay before re-planning after a retryable AWS error (doubles per attempt).
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Where protection groups are backed up, for restore sets that do not name a vault
    /// (`LIFEBOAT_S3_VAULT_BUCKET`, `_REGION`, `_PREFIX`).
    pub s3_vault: Option<lifeboat_proto::S3Vault>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            consumer: ConsumerOptions { concurrency: 4, ..Default::default() },
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            s3_vault: None,
        }
    }
}

pub struct Discovery {
    accounts: Arc<Accounts>,
    bus: Arc<dyn Bus>,
    reporter: Reporter,
    config: DiscoveryConfig,
}

/// The planned work of one restore set.
enum SetOutcome {
    Tasks(Vec<RestoreTask>),
    /// Nothing to restore, with the reason code and message.
    Nothing {
        phase: TaskPhase,
        code: String,
        message: String,
    },
}

impl Discovery {
    pub fn new(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: DiscoveryConfig) -> Arc<Self> {
        let reporter = Reporter::new(bus.clone(), "discovery");
        Arc::new(Self { accounts, bus, reporter, config })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> lifeboat_common::bus::Result<()> {
        let (bus, options) = (self.bus.clone(), self.config.consumer.clone());
        lifeboat_common::run_consumer(bus, Queue::Requests, self, options, shutdown).await
    }

    async fn reject(&self, request_id: &str, mut errors: Vec<FieldError>) -> Outcome {
        let first = errors.first().cloned().unwrap_or_default();
        // A rejection is one event: the first errors show what to fix, the count the rest.
        if errors.len() > MAX_REJECTION_ERRORS {
            let more = errors.len() - MAX_REJECTION_ERRORS;
            errors.truncate(MAX_REJECTION_ERRORS);
            errors.push(FieldError { field: "<request>".to_string(), message: format!("and {more} more") });
        }
        warn!(request_id, field = %first.field, message = %first.message, "request rejected");
        let event = StatusEvent {
            request_id: request_id.to_string(),
            phase: TaskPhase::Unspecified as i32,
            reason_code: reason::INVALID_REQUEST.to_string(),
            message: format!("{}: {}", first.field, first.message),
            detail: Some(status_event::Detail::Rejected(RequestRejected {
                field: first.field,
                message: first.message,
                errors,
            })),
            ..Default::default()
        };
        match self.reporter.report(event).await {
            Ok(()) => Outcome::Done,
            Err(e) => {
                warn!(error = %e, "could not publish the rejection; will retry");
                Outcome::RetryAfter(self.config.retry_initial)
            }
        }
    }

    /// Finds the backups of one set. Retryable AWS errors bubble up (the whole request is
    /// replanned later); anything else becomes the set's reason.
    async fn plan_set(&self, request: &RestoreRequest, set: &RestoreSet) -> Result<SetOutcome, AwsError> {
        let source = set.source.clone().unwrap_or_default();
        let submitted =
            request.submitted_at.as_ref().and_then(lifeboat_common::time::from_timestamp).unwrap_or_else(Utc::now);
        let rule = TimeRule::of(&source, submitted);
        if set.resource_types.contains(&(ResourceType::S3Bucket as i32)) {
            return match crate::s3::plan(&self.accounts, self.config.s3_vault.as_ref(), request, set, &source, rule)
                .await
            {
                Ok(Ok(tasks)) => Ok(SetOutcome::Tasks(tasks)),
                Ok(Err((code, message))) => Ok(SetOutcome::Nothing { phase: TaskPhase::Failed, code, message }),
                Err(e) => lookup_failed(e),
            };
        }
        if crate::config::is_config_set(set) {
            return self.plan_config_set(request, set, &source, rule).await;
        }
        let mut tasks = Vec::new();
        for &kind in &set.resource_types {
            let Ok(kind) = ResourceType::try_from(kind) else { continue };
            let found = match Self::find(&self.accounts, set, &source, rule, kind).await {
                Ok(found) => found,
                Err(e) => return lookup_failed(e),
            };
            for (backup, target, why) in found {
                tasks.push(restore_task(request, set, kind as i32, backup, target, why));
            }
        }
        if tasks.is_empty() {
            let tags: Vec<String> = source.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let what =
                if source.point_in_time_recovery { "can be recovered to the" } else { "has a backup that is the" };
            return Ok(SetOutcome::Nothing {
                phase: TaskPhase::Skipped,
                code: reason::NO_MATCHING_BACKUPS.to_string(),
                message: if source.names.is_empty() {
                    format!("nothing in {} has tags [{}] and {what} {rule}", source.region, tags.join(", "))
                } else {
                    format!(
                        "nothing in {} is named [{}], has tags [{}] and {what} {rule}",
                        source.region,
                        source.names.join(", "),
                        tags.join(", ")
                    )
                },
            });
        }
        Ok(SetOutcome::Tasks(tasks))
    }

    /// A Route 53 and ELBv2 configuration set: one task restoring the exports the set's time rule
    /// picks (load balancers first, then the records aliasing them); none in the bucket fails
    /// the set, naming where it looked.
    async fn plan_config_set(
        &self,
        request: &RestoreRequest,
        set: &RestoreSet,
        source: &Source,
        rule: TimeRule,
    ) -> Result<SetOutcome, AwsError> {
        let found = match crate::config::find(&self.accounts, set, source, rule).await {
            Ok(found) => found,
            Err(e) => return lookup_failed(e),
        };
        let (backup, target, why) = match found {
            Ok(found) => found,
            Err(message) => {
                return Ok(SetOutcome::Nothing {
                    phase: TaskPhase::Failed,
                    code: reason::NO_MATCHING_BACKUPS.to_string(),
                    message,
                })
            }
        };
        let kind = set.resource_types.first().copied().unwrap_or(ResourceType::Route53Zone as i32);
        Ok(SetOutcome::Tasks(vec![restore_task(request, set, kind, backup, target, why)]))
    }

    /// The backups of one resource type in a set, each with its complete target and the reason
    /// it was chosen. Needs no bus: the catalog (`lifeboat backups list`) lists through it too.
    pub async fn find(
        accounts: &Accounts,
        set: &RestoreSet,
        source: &Source,
        rule: TimeRule,
        kind: ResourceType,
    ) -> Result<Vec<(Backup, restore_task::Target, String)>, AwsError> {
        let account_id = accounts.resolve_account(&source.account_id).await?;
        let config = accounts.config_for(&account_id, &source.region).await?;
        let region = source.region.as_str();
        let targets = set.target.clone().unwrap_or_default();
        let target_account = |account: &str| if account.is_empty() { account_id.clone() } else { account.to_string() };
        let target_region = |r: &str| if r.is_empty() { region.to_string() } else { r.to_string() };
        match kind {
            ResourceType::EbsVolume => {
                let ec2 = lifeboat_common::aws::ec2_client(&config, &account_id, region);
                let regions = SourceRegions { accounts, account_id: account_id.clone() };
                let found = crate::ebs::find_snapshots(&ec2, &regions, &account_id, region, &source.tags).await?;
                let found: Vec<_> =
                    found.into_iter().filter(|(candidate, _)| candidate.is_named(&source.names)).collect();
                let candidates: Vec<_> = found.iter().map(|(c, _)| c.clone()).collect();
                let picked = pick(&candidates, rule);
                let mut backups: Vec<Backup> = picked.iter().map(|(index, _)| found[*index].1.clone()).collect();
                crate::ebs::capture_settings(&regions, &mut backups).await?;
                // Without a target (the catalog lists through here) nothing is completed.
                let listing_only = targets.ebs.is_none();
                let mut target = targets.ebs.unwrap_or_default();
                target.account_id = target_account(&target.account_id);
                target.region = target_region(&target.region);
                if !listing_only {
                    let to = (target.account_id.as_str(), target.kms_key_id.as_str());
                    note_keys(&config, &account_id, region, to, backups.iter_mut().collect()).await?;
                }
                let complete = |backup: &Backup| crate::ebs::complete_target(&set.name, &target, backup);
                planned_with(backups, picked, &target, listing_only, complete, restore_task::Target::Ebs)
            }
            ResourceType::DynamodbTable => {
                let mut target = targets.dynamodb.unwrap_or_default();
                target.account_id = target_account(&target.account_id);
                target.region = target_region(&target.region);
                crate::dynamodb::cross_account_check(&set.name, &account_id, &target.account_id, &set.target_role_arn)?;
                let ddb = lifeboat_common::aws::dynamodb_client(&config, &account_id, region);
                let picked = if source.point_in_time_recovery {
                    let (at, after) = rule.point();
                    crate::dynamodb::tables(&ddb, &source.tags, &source.names)
                        .await?
                        .iter()
                        .filter_map(|table| crate::dynamodb::point_in_time(table, &account_id, region, at, after))
                        .collect()
                } else {
                    crate::dynamodb::backups(&ddb, source, rule, &account_id, region).await?
                };
                if !target.table_name.is_empty() && picked.len() > 1 {
                    return Err(AwsError::task_failure(
                        "plan",
                        "AMBIGUOUS_TABLE_NAME",
                        format!("table_name {} names one table, but {} backups match", target.table_name, picked.len()),
                    ));
                }
                let mut per_table: HashMap<String, usize> = HashMap::new();
                for (backup, _) in &picked {
                    *per_table.entry(backup.source_resource_id.clone()).or_default() += 1;
                }
                Ok(picked
                    .into_iter()
                    .map(|(backup, why)| {
                        let mut target = target.clone();
                        if target.table_name.is_empty() {
                            target.table_name = format!("{}-{}", backup.source_resource_id, target.name_suffix);
                            // Several backups of one table (a window): one table each, by time.
                            if per_table[&backup.source_resource_id] > 1 {
                                let taken = backup.created_at.as_ref().and_then(lifeboat_common::time::from_timestamp);
                                let stamp = taken.map(|t| t.format("%Y%m%d%H%M%S").to_string()).unwrap_or_default();
                                target.table_name = format!("{}-{stamp}", target.table_name);
                            }
                        }
                        (backup, restore_task::Target::Dynamodb(target), why)
                    })
                    .collect())
            }
            ResourceType::Ec2Instance => {
                let ec2 = lifeboat_common::aws::ec2_client(&config, &account_id, region);
                let regions = SourceRegions { accounts, account_id: account_id.clone() };
                let found = crate::ami::find_images(&ec2, &regions, &account_id, region, &source.tags).await?;
                let found: Vec<_> =
                    found.into_iter().filter(|(candidate, _)| candidate.is_named(&source.names)).collect();
                let candidates: Vec<_> = found.iter().map(|(c, _)| c.clone()).collect();
                let picked = pick(&candidates, rule);
                let mut backups: Vec<Backup> = picked.iter().map(|(index, _)| found[*index].1.clone()).collect();
                crate::ami::capture_settings(&regions, &mut backups).await?;
                let listing_only = targets.ec2.is_none();
                let mut target = targets.ec2.unwrap_or_default();
                target.account_id = target_account(&target.account_id);
                target.region = target_region(&target.region);
                if !listing_only {
                    let to = (target.account_id.as_str(), target.kms_key_id.as_str());
                    note_keys(&config, &account_id, region, to, backups.iter_mut().collect()).await?;
                }
                let complete = |backup: &Backup| crate::ami::complete_target(&set.name, &target, backup);
                planned_with(backups, picked, &target, listing_only, complete, restore_task::Target::Ec2)
            }
            ResourceType::RdsInstance | ResourceType::RdsCluster => {
                let rds = lifeboat_common::aws::rds_client(&config, &account_id, region);
                let selection = crate::rds::Selection { tags: &source.tags, names: &source.names };
                let picked: Vec<(Backup, String)> = if source.point_in_time_recovery {
                    let (at, after) = rule.point();
                    let until = match rule {
                        TimeRule::Between(_, until) => Some(until),
                        _ => None,
                    };
                    crate::rds::point_in_time(&rds, kind, &account_id, region, &selection, at, after, until).await?
                } else {
                    let found = if kind == ResourceType::RdsCluster {
                        crate::rds::cluster_snapshots(&rds, &account_id, region, &selection).await?
                    } else {
                        crate::rds::instance_snapshots(&rds, &account_id, region, &selection).await?
                    };
                    let candidates: Vec<_> = found.iter().map(|(c, _)| c.clone()).collect();
                    let mut picked: Vec<_> =
                        pick(&candidates, rule).into_iter().map(|(index, why)| (found[index].1.clone(), why)).collect();
                    crate::rds::capture_sources(&rds, kind, &mut picked).await?;
                    picked
                };
                let mut target = targets.rds.unwrap_or_default();
                target.account_id = target_account(&target.account_id);
                target.region = target_region(&target.region);
                let mut picked = picked;
                let to = (target.account_id.as_str(), target.kms_key_id.as_str());
                let backups: Vec<&mut Backup> = picked.iter_mut().map(|(backup, _)| backup).collect();
                note_keys(&config, &account_id, region, to, backups).await?;
                crate::rds::targets(&set.name, &account_id, region, target, picked)
            }
            // Validation keeps other types out until their services exist.
            _ => Ok(Vec::new()),
        }
    }

    async fn plan(&self, request: &RestoreRequest, attempt: u32) -> Outcome {
        let retry = || Outcome::RetryAfter(backoff(attempt, self.config.retry_initial, self.config.retry_max));
        // A redelivery after a crash republishes the stored plan, never a new listing.
        match crate::stored_plan::load(self.bus.shared().as_ref(), &request.request_id).await {
            Ok(Some(plan)) => {
                info!(request_id = %request.request_id, "republishing the stored plan");
                return self.publish_plan(&request.request_id, plan, attempt).await;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(request_id = %request.request_id, error = %e, "reading the stored plan failed; will retry");
                return retry();
            }
        }
        if let Some(run) = &request.backup_run {
            return self.plan_backup(request, run, attempt).await;
        }
        // Sets are independent (often other accounts or regions): list them side by side,
        // keeping their order for the plan.
        let listings: Vec<_> = request.restore_sets.iter().map(|set| self.plan_set(request, set)).collect();
        let results: Vec<_> = futures::stream::iter(listings).buffered(SETS_LISTED_AT_ONCE).collect().await;
        let planned = request.restore_sets.iter().zip(results);
        let mut outcomes = Vec::new();
        for (set, outcome) in planned {
            match outcome {
                Ok(outcome) => outcomes.push((set, outcome)),
                Err(e) => {
                    warn!(request_id = %request.request_id, set = %set.name, error = %e, "discovery will retry");
                    return retry();
                }
            }
        }
        let dry_run = request.dry_run;
        if !dry_run {
            let refused = guard(request, &outcomes);
            if !refused.is_empty() {
                return self.reject(&request.request_id, refused).await;
            }
        }
        let planned_tasks: Vec<RestoreTask> = outcomes
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                SetOutcome::Tasks(tasks) => Some(tasks.iter().cloned()),
                SetOutcome::Nothing { .. } => None,
            })
            .flatten()
            .collect();
        let total_size_gib: i64 = planned_tasks.iter().map(|t| t.backup.as_ref().map_or(0, |b| b.size_gib)).sum();
        let estimated_seconds = crate::estimate::estimated_seconds(&planned_tasks);
        let mut events = Vec::new();
        let mut set_plans = Vec::new();
        for (set, outcome) in outcomes {
            match outcome {
                SetOutcome::Tasks(tasks) => {
                    set_plans.push(SetPlan { set_name: set.name.clone(), tasks: tasks.len() as u32 });
                    for task in tasks {
                        let phase = if dry_run { TaskPhase::Planned } else { TaskPhase::Queued };
                        let size_gib = task.backup.as_ref().map_or(0, |b| b.size_gib);
                        events.push(StatusEvent {
                            size_gib,
                            // Kept by the aggregator so that `restore retry` needs no replanning.
                            task: (!dry_run).then(|| task.clone()),
                            ..events::task_event(&task, phase, 0)
                        });
                    }
                }
                SetOutcome::Nothing { phase, code, message } => {
                    set_plans.push(SetPlan { set_name: set.name.clone(), tasks: 1 });
                    events.push(StatusEvent {
                        request_id: request.request_id.clone(),
                        set_name: set.name.clone(),
                        task_id: ids::set_task_id(&request.request_id, &set.name),
                        phase: phase as i32,
                        reason_code: code,
                        message,
                        ..Default::default()
                    });
                }
            }
        }
        let total_tasks = events.len() as u32;
        let planned = StatusEvent {
            request_id: request.request_id.clone(),
            message: format!(
                "{total_tasks} tasks planned, {total_size_gib} GiB, {}",
                crate::estimate::human(estimated_seconds)
            ),
            detail: Some(status_event::Detail::Planned(RestorePlanned {
                total_tasks,
                dry_run,
                sets: set_plans,
                total_size_gib,
                estimated_seconds,
                request_digest: ids::request_digest(request),
            })),
            ..Default::default()
        };
        let plan = std::iter::once(planned).chain(events).collect();
        self.store_and_publish(&request.request_id, plan, attempt).await
    }

    /// Stores a plan before publishing it, so that a redelivery republishes this plan.
    async fn store_and_publish(&self, request_id: &str, plan: Vec<StatusEvent>, attempt: u32) -> Outcome {
        match crate::stored_plan::store(self.bus.shared().as_ref(), request_id, plan).await {
            Ok(plan) => self.publish_plan(request_id, plan, attempt).await,
            Err(e) => {
                warn!(request_id, error = %e, "storing the plan failed; will retry");
                Outcome::RetryAfter(backoff(attempt, self.config.retry_initial, self.config.retry_max))
            }
        }
    }

    /// A backup run: one task per selected resource in every account and region of the rule,
    /// all in one set named after the rule, stored and published as a restore's plan is. An
    /// account or region that cannot be listed (access denied) fails as one entry of the run,
    /// and the others go on.
    async fn plan_backup(&self, request: &RestoreRequest, run: &BackupRun, attempt: u32) -> Outcome {
        let selection = run.selection.clone().unwrap_or_default();
        let accounts =
            if selection.account_ids.is_empty() { vec![String::new()] } else { selection.account_ids.clone() };
        let mut tasks = Vec::new();
        let mut unlisted = Vec::new();
        for account in &accounts {
            for region in &selection.regions {
                match self.select_resources(account, region, &selection).await {
                    Ok((account_id, resources)) => {
                        tasks.extend(resources.into_iter().map(|resource| {
                            let job = BackupTask {
                                run: Some(run.clone()),
                                resource_id: resource.id,
                                resource_arn: resource.arn,
                                account_id: account_id.clone(),
                                region: region.clone(),
                                resource_tags: resource.tags,
                                volumes: resource.volumes,
                                size_gib: resource.size_gib,
                                ..Default::default()
                            };
                            lifeboat_common::backup::task(&request.request_id, resource.kind, job)
                        }));
                    }
                    Err(e) if e.is_retryable() => {
                        warn!(request_id = %request.request_id, account, region, error = %e, "listing will be retried");
                        return Outcome::RetryAfter(backoff(attempt, self.config.retry_initial, self.config.retry_max));
                    }
                    Err(e) => unlisted.push((account.clone(), region.clone(), e)),
                }
            }
            if !crate::config::services(&selection.resource_types).is_empty() {
                match self.accounts.resolve_account(account).await {
                    Ok(account_id) => tasks.extend(crate::config::backup_tasks(
                        &request.request_id,
                        run,
                        &account_id,
                        &selection.regions,
                    )),
                    Err(e) if e.is_retryable() => {
                        warn!(request_id = %request.request_id, account, error = %e, "resolving will be retried");
                        return Outcome::RetryAfter(backoff(attempt, self.config.retry_initial, self.config.retry_max));
                    }
                    Err(e) => unlisted.push((account.clone(), "config".to_string(), e)),
                }
            }
        }
        match crate::s3_backup::backup_tasks(&self.accounts, &request.request_id, run).await {
            Ok(found) => tasks.extend(found),
            Err(e) if e.is_retryable() => {
                warn!(request_id = %request.request_id, error = %e, "resolving the protection groups will be retried");
                return Outcome::RetryAfter(backoff(attempt, self.config.retry_initial, self.config.retry_max));
            }
            Err(e) => unlisted.push((String::new(), "s3".to_string(), e)),
        }
        let mut events: Vec<StatusEvent> = tasks
            .iter()
            .map(|task| StatusEvent {
                size_gib: task.backup.as_ref().map_or(0, |b| b.size_gib),
                task: Some(task.clone()),
                ..events::task_event(task, TaskPhase::Queued, 0)
            })
            .collect();
        for (account, region, e) in unlisted {
            let place = format!("{}/{region}", if account.is_empty() { "own account" } else { account.as_str() });
            events.push(StatusEvent {
                request_id: request.request_id.clone(),
                set_name: run.rule.clone(),
                task_id: ids::set_task_id(&request.request_id, &format!("{}@{place}", run.rule)),
                phase: TaskPhase::Failed as i32,
                reason_code: e.code.clone(),
                message: format!("cannot list the resources of {place}: {e}"),
                ..Default::default()
            });
        }
        if events.is_empty() {
            let wanted: Vec<String> = selection.include_tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            events.push(StatusEvent {
                request_id: request.request_id.clone(),
                set_name: run.rule.clone(),
                task_id: ids::set_task_id(&request.request_id, &run.rule),
                phase: TaskPhase::Skipped as i32,
                reason_code: reason::NO_MATCHING_RESOURCES.to_string(),
                message: format!("no resource of the rule's types has the tags {}", wanted.join(", ")),
                ..Default::default()
            });
        }
        let total_tasks = events.len() as u32;
        let total_size_gib: i64 = tasks.iter().map(|t| t.backup.as_ref().map_or(0, |b| b.size_gib)).sum();
        let planned = StatusEvent {
            request_id: request.request_id.clone(),
            message: format!("{} resources to back up for {}/{} ({})", tasks.len(), run.plan, run.rule, run.due_id),
            detail: Some(status_event::Detail::Planned(RestorePlanned {
                total_tasks,
                dry_run: false,
                sets: vec![SetPlan { set_name: run.rule.clone(), tasks: total_tasks }],
                total_size_gib,
                estimated_seconds: 0,
                request_digest: ids::request_digest(request),
            })),
            ..Default::default()
        };
        let plan = std::iter::once(planned).chain(events).collect();
        self.store_and_publish(&request.request_id, plan, attempt).await
    }

    /// The resources of one account (empty: the caller's) and region that a backup selection
    /// picks, with the account id resolved.
    async fn select_resources(
        &self,
        account: &str,
        region: &str,
        selection: &BackupSelection,
    ) -> Result<(String, Vec<crate::backup_run::Resource>), AwsError> {
        use crate::backup_run;
        let account_id = self.accounts.resolve_account(account).await?;
        let config = self.accounts.config_for(&account_id, region).await?;
        let ec2 = lifeboat_common::aws::ec2_client(&config, &account_id, region);
        let rds = lifeboat_common::aws::rds_client(&config, &account_id, region);
        let ddb = lifeboat_common::aws::dynamodb_client(&config, &account_id, region);
        let mut found = Vec::new();
        for kind in selection.resource_types.iter().filter_map(|k| ResourceType::try_from(*k).ok()) {
            found.extend(match kind {
                ResourceType::EbsVolume => backup_run::volumes(&ec2, &account_id, region, selection).await?,
                ResourceType::EbsVolumeSet | ResourceType::Ec2Instance => {
                    backup_run::instances(&ec2, kind, &account_id, region, selection).await?
                }
                ResourceType::RdsInstance | ResourceType::RdsCluster => {
                    backup_run::databases(&rds, kind, selection).await?
                }
                ResourceType::DynamodbTable => backup_run::tables(&ddb, selection).await?,
                // Validation lets no other type through.
                _ => Vec::new(),
            });
        }
        Ok((account_id, found))
    }

    /// Publishes a stored plan: the planned event first, so watchers know the total; then the
    /// queued tasks, then the work of every task the events carry (none in a dry run).
    /// Everything carries a dedupe id, so a republish after a crash publishes nothing twice.
    async fn publish_plan(&self, request_id: &str, mut plan: Vec<StatusEvent>, attempt: u32) -> Outcome {
        if plan.is_empty() {
            warn!(request_id, "the stored plan is empty; will retry");
            return Outcome::RetryAfter(backoff(attempt, self.config.retry_initial, self.config.retry_max));
        }
        let events = plan.split_off(1);
        let planned = plan.remove(0);
        let (total_tasks, dry_run) = match &planned.detail {
            Some(status_event::Detail::Planned(p)) => (p.total_tasks, p.dry_run),
            _ => (events.len() as u32, false),
        };
        let work: Vec<_> = events.iter().filter_map(|event| event.task.as_ref()).map(work_message).collect();
        let published = async {
            self.reporter.report(planned).await?;
            self.reporter.report_all(events).await?;
            self.bus.publish_all(work).await
        };
        match published.await {
            Ok(()) => {
                info!(request_id, total_tasks, dry_run, "request planned");
                Outcome::Done
            }
            Err(e) => {
                warn!(request_id, error = %e, "publishing the plan failed; will retry");
                Outcome::RetryAfter(backoff(attempt, self.config.retry_initial, self.config.retry_max))
            }
        }
    }
}

/// The work message of a task, to the queue of its resource type.
fn work_message(task: &RestoreTask) -> OutgoingMessage {
    let kind = ResourceType::try_from(task.resource_type).ok().and_then(ResourceType::work_kind).unwrap_or("unknown");
    OutgoingMessage::proto(subjects::work_subject(kind), task)
        .dedupe_id(task.task_id.clone())
        .header(subjects::HEADER_REQUEST_ID, task.request_id.clone())
        .header(subjects::HEADER_TASK_ID, task.task_id.clone())
}

/// Each picked backup with its target completed from its source (or, when only listing for the
/// catalog, the target as it is) and the reason it was chosen.
fn planned_with<T: Clone>(
    backups: Vec<Backup>,
    picked: Vec<(usize, String)>,
    target: &T,
    listing_only: bool,
    complete: impl Fn(&Backup) -> Result<T, AwsError>,
    wrap: fn(T) -> restore_task::Target,
) -> Result<Vec<(Backup, restore_task::Target, String)>, AwsError> {
    let mut planned = Vec::new();
    for (backup, (_, why)) in backups.into_iter().zip(picked) {
        let target = if listing_only { target.clone() } else { complete(&backup)? };
        planned.push((backup, wrap(target), why));
    }
    Ok(planned)
}

/// For backups going to another account without a target key (`to`: the target account and
/// key), asks KMS who manages their keys: an AWS-managed key cannot be shared, which the targets
/// then refuse at plan time with ENCRYPTED_WITHOUT_TARGET_KEY.
async fn note_keys<'a>(
    config: &aws_config::SdkConfig,
    account_id: &str,
    region: &str,
    (target_account, target_key): (&str, &str),
    backups: Vec<&'a mut Backup>,
) -> Result<(), AwsError> {
    if target_account == account_id || !target_key.is_empty() {
        return Ok(());
    }
    let kms = lifeboat_common::aws::kms_client(config, account_id, region);
    crate::keys::note_key_managers(&kms, backups).await
}

/// The blast-radius guard: a set without tags or names selects a whole account and region and
/// runs only with `all_resources`; a request starting more than `max_tasks` tasks needs
/// `confirm_large`. Dry runs are never refused, so they show what would be refused and why.
fn guard(request: &RestoreRequest, outcomes: &[(&RestoreSet, SetOutcome)]) -> Vec<FieldError> {
    let mut refused = Vec::new();
    let mut total = 0u32;
    for (set, outcome) in outcomes {
        let SetOutcome::Tasks(tasks) = outcome else { continue };
        total += tasks.len() as u32;
        let index = request.restore_sets.iter().position(|s| s.name == set.name).unwrap_or_default();
        let source = set.source.clone().unwrap_or_default();
        // A configuration set restores one account's (and region's) exports, an S3 set one named
        // protection group or the buckets it names: never a fleet.
        let whole = !crate::config::is_config_set(set) && !crate::s3::is_named_set(set);
        if whole && source.tags.is_empty() && source.names.is_empty() && !source.all_resources {
            refused.push(FieldError {
                field: format!("restore_sets[{index}].source.all_resources"),
                message: format!(
                    "set '{}' has no tags and no names, so it selects every resource in {}: {} backups would be \
                     restored; set all_resources: true to restore them all, or narrow it with tags or names",
                    set.name,
                    if source.region.is_empty() { "the account".to_string() } else { source.region.clone() },
                    tasks.len()
                ),
            });
        }
    }
    let options = request.options.unwrap_or_default();
    let limit = if options.max_tasks > 0 { options.max_tasks } else { DEFAULT_MAX_TASKS };
    if total > limit && !options.confirm_large {
        refused.push(FieldError {
            field: "options.max_tasks".to_string(),
            message: format!(
                "the request would start {total} tasks, more than {limit}; confirm with --confirm-large \
                 (options.confirm_large) or raise options.max_tasks"
            ),
        });
    }
    refused
}

/// The request in a delivery's bytes, or the rejection of bytes that are not one (field
/// `<message>`: no field of the request can be named). Pure, so that it can be fuzzed.
pub fn decode_request(payload: &[u8]) -> Result<RestoreRequest, FieldError> {
    RestoreRequest::decode(payload).map_err(|e| FieldError {
        field: "<message>".to_string(),
        message: format!("not a lifeboat.v1.RestoreRequest: {e}"),
    })
}

#[async_trait]
impl Handler for Discovery {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let header_id = delivery
            .header(subjects::HEADER_REQUEST_ID)
            .filter(|id| ids::is_valid_request_id(id))
            .unwrap_or("unknown")
            .to_string();
        let request = match decode_request(delivery.payload.as_ref()) {
            Ok(request) => request,
            Err(error) => {
                let message = error.message.clone();
                // Tell the requester, then keep the bytes in the dead-letter stream for inspection.
                return match self.reject(&header_id, vec![error]).await {
                    Outcome::Done => {
                        Outcome::DeadLetter { code: reason::UNDECODABLE_REQUEST.to_string(), reason: message }
                    }
                    other => other,
                };
            }
        };
        if let Err(errors) = validate_request(&request, &self.config.policy) {
            let request_id =
                if ids::is_valid_request_id(&request.request_id) { request.request_id.clone() } else { header_id };
            return self.reject(&request_id, errors).await;
        }
        let span =
            tracing::info_span!("discovery.plan", request_id = %request.request_id, sets = request.restore_sets.len());
        tracing::Instrument::instrument(self.plan(&request, delivery.attempt), span).await
    }

    /// A request no delivery could plan (it ran out of deliveries, or SQS redrove it after
    /// crashes) ends FAILED with the reason, as a request-level event the aggregator records;
    /// an undecodable one was rejected already. The message stays until the event is stored.
    async fn dead_lettered(&self, delivery: &Delivery, code: &str, reason: &str) -> lifeboat_common::bus::Result<()> {
        if code == reason::UNDECODABLE_REQUEST {
            return Ok(());
        }
        let decoded = decode_request(delivery.payload.as_ref()).ok().map(|r| r.request_id);
        let header = delivery.header(subjects::HEADER_REQUEST_ID).map(str::to_string);
        let Some(request_id) = decoded.into_iter().chain(header).find(|id| ids::is_valid_request_id(id)) else {
            warn!(code, reason, "a dead-lettered request names no request id; nobody to tell");
            return Ok(());
        };
        warn!(request_id, code, reason, "the request could not be planned; it ends FAILED");
        let event = StatusEvent {
            request_id,
            phase: TaskPhase::Failed as i32,
            reason_code: code.to_string(),
            message: format!("discovery could not plan the request: {reason}"),
            ..Default::default()
        };
        self.reporter.report(event).await
    }
}

/// The task that restores `backup` of `set` into `target`; its id derives from the request, the
/// set and the backup, so a replanned request yields the same tasks.
pub(crate) fn restore_task(
    request: &RestoreRequest,
    set: &RestoreSet,
    resource_type: i32,
    backup: Backup,
    target: restore_task::Target,
    why: String,
) -> RestoreTask {
    RestoreTask {
        request_id: request.request_id.clone(),
        task_id: ids::task_id(&request.request_id, &set.name, &backup.backup_id),
        set_name: set.name.clone(),
        resource_type,
        backup: Some(backup),
        target: Some(target),
        options: request.options,
        selection_reason: why,
        target_role_arn: set.target_role_arn.clone(),
        generation: 0,
        backup_task: None,
    }
}

/// A set whose backups could not be looked up: a retryable error replans the whole request
/// later; any other becomes the set's reason.
fn lookup_failed(e: AwsError) -> Result<SetOutcome, AwsError> {
    if e.is_retryable() {
        return Err(e);
    }
    Ok(SetOutcome::Nothing { phase: TaskPhase::Failed, code: e.code.clone(), message: e.to_string() })
}
