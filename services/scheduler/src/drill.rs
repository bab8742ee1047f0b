//! Restore drills: proof that a rule's backups restore. A drill picks the resources of a rule
//! with the newest recovery points, restores them in ONE request into the drill's isolated
//! target, checks each restored resource, times it (from its task's QUEUED to its SUCCEEDED
//! event: the real time to restore), and deletes everything it created. Its request id starts
//! with [`DRILL_PREFIX`], so everything it restores carries `lifeboat:request-id=drill-...`,
//! which backups leave out and [`sweep_leftovers`] deletes after a crash; every drill sweeps
//! first. The report is kept in the shared store (`drill.<id>`) and the times are exported as
//! [`RESTORE_SECONDS`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use chrono::{DateTime, SecondsFormat, Utc};
use lifeboat_common::aws::{classify, Accounts, AwsError};
use lifeboat_common::backup::{PointTags, TAG_PLAN, TAG_RULE};
use lifeboat_common::bus::{Bus, BusError, OutgoingMessage};
use lifeboat_common::events::{accepted_event, Reporter};
use lifeboat_common::shared::{key_part, SharedStore};
use lifeboat_common::subjects::{self, TAG_REQUEST_ID};
use lifeboat_common::time::{from_timestamp, to_timestamp};
use lifeboat_discovery::backup_run::DRILL_PREFIX;
use lifeboat_discovery::catalog::{self, Entry, Query};
use lifeboat_plans::{Drill, Plan, ResourceType as PlanType, Rule};
use lifeboat_proto::{
    DynamoDbTarget, EbsTarget, Ec2Target, RdsTarget, RequestSummary, ResourceType, RestoreRequest, RestoreSet, Source,
    StatusEvent, Targets, TaskPhase, TaskState,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Histogram, labels `type` (`ebs`, `dynamodb`...) and `resource` (the source resource id):
/// seconds from a drill task's QUEUED event to its SUCCEEDED event.
pub const RESTORE_SECONDS: &str = "lifeboat_drill_restore_seconds";
/// How many times (a quarter of a second apart) the event log is read again for the
/// SUCCEEDED events of tasks the final summary says succeeded.
const EVENT_LOG_READS: usize = 20;

/// Restored DynamoDB tables are named `<table>-drill`, RDS databases `<id>-drill`.
pub const NAME_SUFFIX: &str = "drill";

/// How long a deleted resource may take to be gone, by default and in a sweep.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(1800);

/// How often teardown looks whether a deleted resource is gone.
const GONE_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("plan '{plan}' has no rule '{rule}'")]
    NoRule { plan: String, rule: String },
    #[error("rule '{rule}' of plan '{plan}' has no drill")]
    NoDrill { plan: String, rule: String },
    #[error("rule '{rule}' of plan '{plan}' has no recovery points to drill")]
    NothingToDrill { plan: String, rule: String },
    #[error("drill target: subnet {subnet}: {message}")]
    Subnet { subnet: String, message: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("drill report {key}: {source}")]
    Report {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = DrillError> = std::result::Result<T, E>;

/// How a drill learns its request's outcome: the final summary (with its tasks) and the
/// recorded status events, as the aggregator keeps them. The CLI implements it with its client
/// and the aggregator's store (this crate cannot depend on either).
pub trait Follow: Send + Sync {
    /// The request's final summary, with its tasks; an error after `timeout`.
    fn final_summary(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<RequestSummary, BusError>> + Send;
    /// Every status event recorded for the request, in order.
    fn events(&self, request_id: &str) -> impl Future<Output = Result<Vec<StatusEvent>, BusError>> + Send;
}

#[derive(Clone, Debug)]
pub struct DrillConfig {
    /// How long the restore may take before the drill gives up waiting (and tears down).
    pub verdict_timeout: Duration,
    /// How long a deleted resource may take to be gone.
    pub teardown_timeout: Duration,
}

impl Default for DrillConfig {
    fn default() -> Self {
        Self { verdict_timeout: Duration::from_secs(3600), teardown_timeout: TEARDOWN_TIMEOUT }
    }
}

/// What a drill did, per resource; kept as `drill.<id>` in the shared store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub drill_id: String,
    pub plan: String,
    pub rule: String,
    pub target_account: String,
    pub target_region: String,
    pub target_subnet: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339; empty while the drill has not torn down.
    pub finished_at: String,
    /// The restore request's verdict (`COMPLETED`, `PARTIALLY_FAILED`...).
    pub verdict: String,
    pub resources: Vec<ResourceReport>,
    /// Leftovers of earlier drills that the opening sweep deleted.
    pub swept: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// `ebs`, `dynamodb`, `rds-instance`, `rds-cluster`, `ec2`.
    pub resource_type: String,
    pub source_resource_id: String,
    pub backup_id: String,
    /// RFC 3339: when the recovery point was taken.
    pub backup_created_at: String,
    pub restored_ids: Vec<String>,
    /// From the task's QUEUED to its SUCCEEDED event; None when it did not succeed.
    pub restore_seconds: Option<f64>,
    pub validated: bool,
    /// Why it is (or is not) valid.
    pub validation: String,
    pub torn_down: bool,
    pub teardown: String,
}

impl DrillReport {
    /// Every resource restored, validated and deleted.
    pub fn passed(&self) -> bool {
        !self.resources.is_empty() && self.resources.iter().all(|r| r.validated && r.torn_down)
    }
}

/// The shared-store key of a drill's report.
pub fn report_key(drill_id: &str) -> String {
    format!("drill.{}", key_part(drill_id))
}

/// A stored drill report.
pub async fn stored_report(store: &dyn SharedStore, drill_id: &str) -> Result<Option<DrillReport>> {
    let key = report_key(drill_id);
    let Some(found) = store.get(&key).await? else { return Ok(None) };
    serde_json::from_slice(&found.value).map(Some).map_err(|source| DrillError::Report { key, source })
}

async fn store_report(store: &dyn SharedStore, report: &DrillReport) -> Result<()> {
    let key = report_key(&report.drill_id);
    let value = serde_json::to_vec(report).map_err(|source| DrillError::Report { key: key.clone(), source })?;
    lifeboat_common::shared::update(store, &key, 5, |_| (Some(value.clone().into()), ())).await?;
    Ok(())
}

/// The request id of a drill of `plan`'s `rule` started at `at`:
/// `drill-<plan>-<rule>-<yyyymmddThhmmssZ>`, shortened with a digest past 64 characters.
pub fn drill_id(plan: &str, rule: &str, at: DateTime<Utc>) -> String {
    // The same sanitizing and shortening as a run's id; the prefix survives either.
    lifeboat_common::backup::backup_run_id(&format!("{DRILL_PREFIX}{plan}-{rule}-{}", at.format("%Y%m%dT%H%M%SZ")))
}

/// The catalog types a plan type's recovery points are listed (and restored) as: a volume
/// set's snapshots are restored as volumes.
fn restore_type(kind: PlanType) -> ResourceType {
    match kind {
        PlanType::Ebs | PlanType::EbsVolumeSet => ResourceType::EbsVolume,
        PlanType::Ec2 => ResourceType::Ec2Instance,
        PlanType::RdsInstance => ResourceType::RdsInstance,
        PlanType::RdsCluster => ResourceType::RdsCluster,
        PlanType::Dynamodb => ResourceType::DynamodbTable,
    }
}

fn kind_of(entry: &Entry) -> ResourceType {
    ResourceType::from_short_name(&entry.resource_type).unwrap_or_default()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A drill restored and checked, not torn down yet: what [`Drills::teardown`] deletes.
#[derive(Debug)]
pub struct Restored {
    pub report: DrillReport,
    /// Per resource of the report, in its order: the task that restored it, if any.
    tasks: Vec<Option<TaskState>>,
}

/// Runs drills: submits over `bus`, learns outcomes through `follow`, reaches the accounts
/// through `accounts`.
pub struct Drills<F> {
    bus: Arc<dyn Bus>,
    accounts: Arc<Accounts>,
    follow: F,
    reporter: Reporter,
    config: DrillConfig,
}

impl<F: Follow> Drills<F> {
    pub fn new(bus: Arc<dyn Bus>, accounts: Arc<Accounts>, follow: F, config: DrillConfig) -> Self {
        let reporter = Reporter::new(bus.clone(), "drill");
        Self { bus, accounts, follow, reporter, config }
    }

    /// The whole drill of `rule`: restore, check, time, tear down, report.
    pub async fn run(&self, plan: &Plan, rule: &str) -> Result<DrillReport> {
        let restored = self.restore(plan, rule, Utc::now()).await?;
        self.teardown(restored).await
    }

    /// The first half of a drill: sweep the target of earlier drills' leftovers, pick the
    /// resources, restore them, check and time each. The report is stored (not torn down yet),
    /// so a drill that dies here is visible, and the next drill's sweep deletes what it left.
    pub async fn restore(&self, plan: &Plan, rule_name: &str, now: DateTime<Utc>) -> Result<Restored> {
        let rule = plan
            .rules
            .iter()
            .find(|r| r.name == rule_name)
            .ok_or_else(|| DrillError::NoRule { plan: plan.name.clone(), rule: rule_name.to_string() })?;
        let drill = rule
            .drill
            .as_ref()
            .ok_or_else(|| DrillError::NoDrill { plan: plan.name.clone(), rule: rule.name.clone() })?;
        let target = &drill.target;
        let swept = sweep_leftovers(&self.accounts, &target.account, &target.region).await?;
        let chosen = self.choose(plan, rule, drill, now).await?;
        if chosen.is_empty() {
            return Err(DrillError::NothingToDrill { plan: plan.name.clone(), rule: rule.name.clone() });
        }
        let zone = self.subnet_zone(drill).await?;
        let request = drill_request(&plan.name, &rule.name, drill, &chosen, &zone, now);
        let drill_id = request.request_id.clone();
        let mut report = DrillReport {
            drill_id: drill_id.clone(),
            plan: plan.name.clone(),
            rule: rule.name.clone(),
            target_account: target.account.clone(),
            target_region: target.region.clone(),
            target_subnet: target.subnet.clone(),
            started_at: rfc3339(now),
            swept,
            ..Default::default()
        };
        info!(drill = %drill_id, resources = chosen.len(), "drill restoring");
        self.submit(&request).await?;
        let summary = self.follow.final_summary(&drill_id, self.config.verdict_timeout).await;
        let (summary, events) = match summary {
            Ok(summary) => {
                // The verdict can be seen a moment before the last events are in the log.
                let mut events = self.follow.events(&drill_id).await?;
                for _ in 0..EVENT_LOG_READS {
                    let logged = |task: &TaskState| {
                        events.iter().any(|e| e.task_id == task.task_id && e.phase == TaskPhase::Succeeded as i32)
                    };
                    let succeeded = summary.tasks.iter().filter(|t| t.phase == TaskPhase::Succeeded as i32);
                    if succeeded.clone().all(logged) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    events = self.follow.events(&drill_id).await?;
                }
                (summary, events)
            }
            Err(e) => {
                // Torn down anyway: whatever was created carries the drill's tag.
                warn!(drill = %drill_id, error = %e, "no verdict for the drill's restore");
                (RequestSummary { verdict: 0, ..Default::default() }, Vec::new())
            }
        };
        report.verdict =
            lifeboat_proto::Verdict::try_from(summary.verdict).unwrap_or_default().short_name().to_string();
        let mut tasks = Vec::new();
        for entry in &chosen {
            let task = summary
                .tasks
                .iter()
                .find(|t| t.resource_type == kind_of(entry) as i32 && t.source_resource_id == entry.source_resource_id)
                .cloned();
            let mut resource = ResourceReport {
                resource_type: entry.resource_type.clone(),
                source_resource_id: entry.source_resource_id.clone(),
                backup_id: entry.backup_id.clone(),
                backup_created_at: entry.created_at.map(rfc3339).unwrap_or_default(),
                ..Default::default()
            };
            match &task {
                None => resource.validation = "no restore task for it".to_string(),
                Some(task) => {
                    resource.restored_ids = task.created_resource_ids.clone();
                    let phase = TaskPhase::try_from(task.phase).unwrap_or_default();
                    if phase == TaskPhase::Succeeded {
                        resource.restore_seconds = restore_seconds(&events, &task.task_id);
                        if let Some(seconds) = resource.restore_seconds {
                            metrics::histogram!(RESTORE_SECONDS, "type" => entry.resource_type.clone(), "resource" => entry.source_resource_id.clone())
                                .record(seconds);
                        }
                        let (account, region) = task_target(task, &drill.target.account, &drill.target.region);
                        match self.validate(entry, task, &account, &region).await {
                            Ok(()) => {
                                resource.validated = true;
                                resource.validation = "valid".to_string();
                            }
                            Err(why) => resource.validation = why,
                        }
                    } else {
                        resource.validation =
                            format!("restore {}: {} {}", phase.short_name(), task.reason_code, task.message);
                    }
                }
            }
            report.resources.push(resource);
            tasks.push(task);
        }
        store_report(self.bus.shared().as_ref(), &report).await?;
        Ok(Restored { report, tasks })
    }

    /// The second half: delete what the drill created (by the tasks' created ids, then by its
    /// request-id tag), check each is gone, and store the finished report.
    pub async fn teardown(&self, restored: Restored) -> Result<DrillReport> {
        let Restored { mut report, tasks } = restored;
        let (target_account, target_region) = (report.target_account.clone(), report.target_region.clone());
        for (resource, task) in report.resources.iter_mut().zip(&tasks) {
            let Some(task) = task else {
                resource.torn_down = true;
                resource.teardown = "nothing was created".to_string();
                continue;
            };
            let (account, region) = task_target(task, &target_account, &target_region);
            let kind = ResourceType::try_from(task.resource_type).unwrap_or_default();
            match self.delete_created(kind, &task.created_resource_ids, &account, &region).await {
                Ok(()) => {
                    resource.torn_down = true;
                    resource.teardown = if task.created_resource_ids.is_empty() {
                        "nothing was created".to_string()
                    } else {
                        format!("deleted {}", task.created_resource_ids.join(", "))
                    };
                }
                Err(e) => resource.teardown = e.to_string(),
            }
        }
        // Whatever the tasks did not report (a copy of a snapshot, a half-made resource).
        let by_tag = sweep(&self.accounts, &target_account, &target_region, &report.drill_id).await;
        match by_tag {
            Ok(deleted) if !deleted.is_empty() => {
                info!(drill = %report.drill_id, deleted = ?deleted, "deleted by the drill's tag")
            }
            Ok(_) => {}
            Err(e) => {
                for resource in &mut report.resources {
                    resource.torn_down = false;
                    resource.teardown = format!("{}; the sweep by tag failed: {e}", resource.teardown);
                }
            }
        }
        report.finished_at = rfc3339(Utc::now());
        store_report(self.bus.shared().as_ref(), &report).await?;
        info!(drill = %report.drill_id, passed = report.passed(), "drill finished");
        Ok(report)
    }

    /// The N resources of the rule with the newest recovery points of this plan and rule
    /// (copies left out), one entry each: its newest point.
    async fn choose(&self, plan: &Plan, rule: &Rule, drill: &Drill, now: DateTime<Utc>) -> Result<Vec<Entry>> {
        let mut kinds: Vec<ResourceType> = rule.selection.resource_types.iter().map(|k| restore_type(*k)).collect();
        kinds.sort();
        kinds.dedup();
        let accounts = if rule.selection.accounts.is_empty() {
            vec![self.accounts.caller_account().await?]
        } else {
            rule.selection.accounts.clone()
        };
        let store = self.bus.shared();
        let mut newest: BTreeMap<(String, String, String, String), Entry> = BTreeMap::new();
        for account in &accounts {
            for region in &rule.selection.regions {
                let query = Query {
                    source: Source { account_id: account.clone(), region: region.clone(), ..Default::default() },
                    resource_types: kinds.clone(),
                    copy_regions: Vec::new(),
                };
                for entry in catalog::list(&self.accounts, &query).await? {
                    let taken = entry.created_at.is_some_and(|at| at <= now);
                    if entry.kind != "backup" || !taken || entry.region != *region {
                        continue;
                    }
                    let point = match &entry.plan {
                        Some(point) => Some((point.plan.clone(), point.rule.clone(), point.copy_of.is_some())),
                        // DynamoDB backups take no tags: theirs are in the shared store.
                        None => lifeboat_common::backup::load_point_tags(store.as_ref(), &entry.backup_id)
                            .await?
                            .and_then(|tags| PointTags::parse(&tags))
                            .map(|p| (p.plan, p.rule, p.copy_of.is_some())),
                    };
                    if point != Some((plan.name.clone(), rule.name.clone(), false)) {
                        continue;
                    }
                    let key = (
                        entry.resource_type.clone(),
                        entry.account_id.clone(),
                        entry.region.clone(),
                        entry.source_resource_id.clone(),
                    );
                    if newest.get(&key).is_none_or(|known| known.created_at < entry.created_at) {
                        newest.insert(key, entry);
                    }
                }
            }
        }
        let mut chosen: Vec<Entry> = newest.into_values().collect();
        chosen.sort_by(|a, b| {
            b.created_at.cmp(&a.created_at).then_with(|| a.source_resource_id.cmp(&b.source_resource_id))
        });
        chosen.truncate(drill.resources as usize);
        Ok(chosen)
    }

    /// EBS volumes are restored in the availability zone of the drill's subnet.
    async fn subnet_zone(&self, drill: &Drill) -> Result<String> {
        let target = &drill.target;
        let ec2 = self.ec2(&target.account, &target.region).await?;
        let subnets = ec2
            .describe_subnets()
            .subnet_ids(&target.subnet)
            .send()
            .await
            .map_err(|e| classify("ec2:DescribeSubnets", e))?;
        let subnet = subnets.subnets().first().ok_or_else(|| DrillError::Subnet {
            subnet: target.subnet.clone(),
            message: "not found in the target".to_string(),
        })?;
        subnet.availability_zone().map(str::to_string).ok_or_else(|| DrillError::Subnet {
            subnet: target.subnet.clone(),
            message: "has no availability zone".to_string(),
        })
    }

    /// Recorded as accepted first, then published, as the scheduler publishes a run.
    async fn submit(&self, request: &RestoreRequest) -> Result<()> {
        let id = &request.request_id;
        self.reporter.report(accepted_event(id, "drill")).await?;
        let message = OutgoingMessage::proto(subjects::RESTORE_REQUESTS, request)
            .dedupe_id(id.clone())
            .header(subjects::HEADER_REQUEST_ID, id.clone());
        self.bus.publish(message).await?;
        Ok(())
    }

    async fn ec2(&self, account: &str, region: &str) -> Result<aws_sdk_ec2::Client> {
        let config = self.accounts.config_for(account, region).await?;
        Ok(lifeboat_common::aws::ec2_client(&config, account, region))
    }

    /// Whether the restored resource is what the backup holds; Err says why not.
    async fn validate(&self, entry: &Entry, task: &TaskState, account: &str, region: &str) -> Result<(), String> {
        let config = self.accounts.config_for(account, region).await.map_err(|e| e.to_string())?;
        let ids = &task.created_resource_ids;
        let first = ids.first().ok_or_else(|| "the restore reported no resource".to_string())?;
        match kind_of(entry) {
            ResourceType::EbsVolume => {
                let ec2 = lifeboat_common::aws::ec2_client(&config, account, region);
                let volume_id = ids.iter().find(|id| id.starts_with("vol-")).unwrap_or(first);
                let found = ec2
                    .describe_volumes()
                    .volume_ids(volume_id)
                    .send()
                    .await
                    .map_err(|e| classify("ec2:DescribeVolumes", e).to_string())?;
                let volume = found.volumes().first().ok_or_else(|| format!("volume {volume_id} not found"))?;
                let state = volume.state().map(|s| s.as_str()).unwrap_or_default();
                let size = i64::from(volume.size().unwrap_or_default());
                if state != "available" {
                    return Err(format!("volume {volume_id} is {state}, not available"));
                }
                if size != entry.size_gib {
                    return Err(format!("volume {volume_id} is {size} GiB, the backup {} GiB", entry.size_gib));
                }
                Ok(())
            }
            ResourceType::DynamodbTable => {
                let ddb = lifeboat_common::aws::dynamodb_client(&config, account, region);
                let name = first.rsplit_once("table/").map_or(first.as_str(), |(_, name)| name);
                let described = ddb
                    .describe_table()
                    .table_name(name)
                    .send()
                    .await
                    .map_err(|e| classify("dynamodb:DescribeTable", e).to_string())?;
                let table = described.table().ok_or_else(|| format!("table {name} not described"))?;
                let status = table.table_status().map(|s| s.as_str()).unwrap_or_default();
                if status != "ACTIVE" {
                    return Err(format!("table {name} is {status}, not ACTIVE"));
                }
                let source_items = self.backup_item_count(entry).await.map_err(|e| e.to_string())?;
                match (source_items, table.item_count()) {
                    (Some(expected), Some(found)) if expected != found => {
                        Err(format!("table {name} has {found} items, the backup's source table {expected}"))
                    }
                    _ => Ok(()),
                }
            }
            ResourceType::RdsInstance => {
                let rds = lifeboat_common::aws::rds_client(&config, account, region);
                let found = rds
                    .describe_db_instances()
                    .db_instance_identifier(first)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBInstances", e).to_string())?;
                let status = found.db_instances().first().and_then(|db| db.db_instance_status()).unwrap_or_default();
                if status == "available" {
                    Ok(())
                } else {
                    Err(format!("DB instance {first} is {status}, not available"))
                }
            }
            ResourceType::RdsCluster => {
                let rds = lifeboat_common::aws::rds_client(&config, account, region);
                let found = rds
                    .describe_db_clusters()
                    .db_cluster_identifier(first)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBClusters", e).to_string())?;
                let status = found.db_clusters().first().and_then(|c| c.status()).unwrap_or_default();
                if status == "available" {
                    Ok(())
                } else {
                    Err(format!("DB cluster {first} is {status}, not available"))
                }
            }
            ResourceType::Ec2Instance => {
                let ec2 = lifeboat_common::aws::ec2_client(&config, account, region);
                let instance_id = ids.iter().find(|id| id.starts_with("i-")).unwrap_or(first);
                let found = ec2
                    .describe_instances()
                    .instance_ids(instance_id)
                    .send()
                    .await
                    .map_err(|e| classify("ec2:DescribeInstances", e).to_string())?;
                let state = found
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .find_map(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()))
                    .unwrap_or_default();
                if state == "running" {
                    Ok(())
                } else {
                    Err(format!("instance {instance_id} is {state}, not running"))
                }
            }
            other => Err(format!("drills do not validate {}", other.short_name())),
        }
    }

    /// The item count of the table the backup was taken of, when DynamoDB knows it.
    async fn backup_item_count(&self, entry: &Entry) -> Result<Option<i64>, AwsError> {
        let config = self.accounts.config_for(&entry.account_id, &entry.region).await?;
        let ddb = lifeboat_common::aws::dynamodb_client(&config, &entry.account_id, &entry.region);
        let described = ddb
            .describe_backup()
            .backup_arn(&entry.backup_id)
            .send()
            .await
            .map_err(|e| classify("dynamodb:DescribeBackup", e))?;
        Ok(described
            .backup_description()
            .and_then(|d| d.source_table_details())
            .and_then(|details| details.item_count()))
    }

    /// Deletes what one task created and waits until it is gone.
    async fn delete_created(&self, kind: ResourceType, ids: &[String], account: &str, region: &str) -> Result<()> {
        let config = self.accounts.config_for(account, region).await?;
        let deadline = tokio::time::Instant::now() + self.config.teardown_timeout;
        match kind {
            ResourceType::DynamodbTable => {
                let ddb = lifeboat_common::aws::dynamodb_client(&config, account, region);
                for id in ids {
                    let name = id.rsplit_once("table/").map_or(id.as_str(), |(_, name)| name);
                    delete_table(&ddb, name).await?;
                    until_gone(deadline, || table_gone(&ddb, name)).await?;
                }
            }
            ResourceType::RdsInstance | ResourceType::RdsCluster => {
                let rds = lifeboat_common::aws::rds_client(&config, account, region);
                // A cluster's task names the cluster first, then its instances: instances go first.
                let (clusters, instances) =
                    if kind == ResourceType::RdsCluster { ids.split_at(ids.len().min(1)) } else { (&ids[..0], ids) };
                for id in instances {
                    delete_db_instance(&rds, id).await?;
                }
                for id in instances {
                    until_gone(deadline, || db_instance_gone(&rds, id)).await?;
                }
                for id in clusters {
                    delete_db_cluster(&rds, id).await?;
                    until_gone(deadline, || db_cluster_gone(&rds, id)).await?;
                }
            }
            _ => {
                let ec2 = lifeboat_common::aws::ec2_client(&config, account, region);
                for id in ids {
                    delete_ec2(&ec2, id).await?;
                }
                for id in ids {
                    until_gone(deadline, || ec2_gone(&ec2, id)).await?;
                }
            }
        }
        Ok(())
    }
}

/// The restore of the chosen points: one set per resource type and source account and region
/// (per database for RDS, whose target names the database), each naming its resources.
pub fn drill_request(
    plan: &str,
    rule: &str,
    drill: &Drill,
    chosen: &[Entry],
    zone: &str,
    now: DateTime<Utc>,
) -> RestoreRequest {
    let target = &drill.target;
    let mut groups: BTreeMap<(String, String, String, String), Vec<&Entry>> = BTreeMap::new();
    for entry in chosen {
        let kind = kind_of(entry);
        let per_database = matches!(kind, ResourceType::RdsInstance | ResourceType::RdsCluster);
        let database = if per_database { entry.source_resource_id.clone() } else { String::new() };
        groups
            .entry((entry.resource_type.clone(), entry.account_id.clone(), entry.region.clone(), database))
            .or_default()
            .push(entry);
    }
    let mut restore_sets = Vec::new();
    for (index, ((_, account, region, database), entries)) in groups.into_iter().enumerate() {
        let kind = kind_of(entries[0]);
        // DynamoDB backups carry no tags; the others are narrowed to this plan's points.
        let tags: HashMap<String, String> = if kind == ResourceType::DynamodbTable {
            HashMap::new()
        } else {
            HashMap::from([(TAG_PLAN.to_string(), plan.to_string()), (TAG_RULE.to_string(), rule.to_string())])
        };
        let (account_id, region_name) = (target.account.clone(), target.region.clone());
        let targets = match kind {
            ResourceType::EbsVolume => Targets {
                ebs: Some(EbsTarget {
                    account_id,
                    region: region_name,
                    availability_zone: zone.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ResourceType::Ec2Instance => Targets {
                ec2: Some(Ec2Target {
                    account_id,
                    region: region_name,
                    subnet_id: target.subnet.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ResourceType::DynamodbTable => Targets {
                dynamodb: Some(DynamoDbTarget {
                    account_id,
                    region: region_name,
                    name_suffix: NAME_SUFFIX.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            _ => Targets {
                rds: Some(RdsTarget {
                    account_id,
                    region: region_name,
                    name: format!("{database}-{NAME_SUFFIX}"),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        restore_sets.push(RestoreSet {
            name: format!("{}-{}", kind.short_name(), index + 1),
            source: Some(Source {
                account_id: account,
                region,
                tags,
                names: entries.iter().map(|e| e.source_resource_id.clone()).collect(),
                ..Default::default()
            }),
            resource_types: vec![kind as i32],
            target: Some(targets),
            ..Default::default()
        });
    }
    RestoreRequest {
        request_id: drill_id(plan, rule, now),
        restore_sets,
        submitted_at: Some(to_timestamp(now)),
        requested_by: "drill".to_string(),
        ..Default::default()
    }
}

/// Where a task restored to: its reported target, or the drill's.
fn task_target(task: &TaskState, account: &str, region: &str) -> (String, String) {
    let location = task.target.clone().unwrap_or_default();
    let or = |value: String, default: &str| if value.is_empty() { default.to_string() } else { value };
    (or(location.account_id, account), or(location.region, region))
}

/// Seconds from the task's first QUEUED event to its last SUCCEEDED event. The log the
/// aggregator keeps need not hold both (a busy aggregator may record a later phase first and
/// keep only that): then from the task's first event of any phase, to its last.
fn restore_seconds(events: &[StatusEvent], task_id: &str) -> Option<f64> {
    let at = |phase: Option<TaskPhase>| {
        events
            .iter()
            .filter(move |e| e.task_id == task_id && phase.is_none_or(|p| e.phase == p as i32))
            .filter_map(|e| e.at.as_ref().and_then(from_timestamp))
    };
    let queued = at(Some(TaskPhase::Queued)).min().or_else(|| at(None).min())?;
    let succeeded = at(Some(TaskPhase::Succeeded)).max().or_else(|| at(None).max())?;
    Some((succeeded - queued).num_milliseconds().max(0) as f64 / 1000.0)
}

/// Deletes every resource of the account and region that a drill made (tagged
/// `lifeboat:request-id=drill-*`): what a drill killed before its teardown left. Returns what
/// it deleted, once each is gone.
pub async fn sweep_leftovers(accounts: &Accounts, account: &str, region: &str) -> Result<Vec<String>> {
    sweep(accounts, account, region, &format!("{DRILL_PREFIX}*")).await
}

/// Whether a `lifeboat:request-id` value is matched by `pattern` (a drill id, or a prefix
/// ending in `*`).
fn matches(pattern: &str, request_id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => request_id.starts_with(prefix),
        None => request_id == pattern,
    }
}

/// Deletes (and waits until gone) every volume, instance, snapshot, AMI, table, DB instance and
/// DB cluster of the account and region whose `lifeboat:request-id` matches `pattern`. Only
/// drill ids are ever swept.
async fn sweep(accounts: &Accounts, account: &str, region: &str, pattern: &str) -> Result<Vec<String>> {
    debug_assert!(pattern.starts_with(DRILL_PREFIX));
    let config = accounts.config_for(account, region).await?;
    let deadline = tokio::time::Instant::now() + TEARDOWN_TIMEOUT;
    let mut deleted = Vec::new();

    let ec2 = lifeboat_common::aws::ec2_client(&config, account, region);
    let tagged = || Filter::builder().name(format!("tag:{TAG_REQUEST_ID}")).values(pattern).build();
    let ec2_drill = |tags: &[aws_sdk_ec2::types::Tag]| {
        tags.iter().any(|t| t.key() == Some(TAG_REQUEST_ID) && t.value().is_some_and(|v| matches(pattern, v)))
    };
    let mut ec2_ids = Vec::new();
    let instances =
        ec2.describe_instances().filters(tagged()).send().await.map_err(|e| classify("ec2:DescribeInstances", e))?;
    for instance in instances.reservations().iter().flat_map(|r| r.instances()) {
        let state = instance.state().and_then(|s| s.name()).map(|n| n.as_str()).unwrap_or_default();
        if ec2_drill(instance.tags()) && state != "terminated" {
            ec2_ids.extend(instance.instance_id().map(str::to_string));
        }
    }
    let volumes =
        ec2.describe_volumes().filters(tagged()).send().await.map_err(|e| classify("ec2:DescribeVolumes", e))?;
    ec2_ids.extend(
        volumes.volumes().iter().filter(|v| ec2_drill(v.tags())).filter_map(|v| v.volume_id().map(str::to_string)),
    );
    let images = ec2
        .describe_images()
        .owners("self")
        .filters(tagged())
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeImages", e))?;
    ec2_ids.extend(
        images.images().iter().filter(|i| ec2_drill(i.tags())).filter_map(|i| i.image_id().map(str::to_string)),
    );
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(tagged())
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeSnapshots", e))?;
    ec2_ids.extend(
        snapshots
            .snapshots()
            .iter()
            .filter(|s| ec2_drill(s.tags()))
            .filter_map(|s| s.snapshot_id().map(str::to_string)),
    );
    // Instances before the volumes and images they hold, then snapshots behind the images.
    for id in &ec2_ids {
        delete_ec2(&ec2, id).await?;
        if id.starts_with("i-") {
            until_gone(deadline, || ec2_gone(&ec2, id)).await?;
        }
    }
    for id in &ec2_ids {
        until_gone(deadline, || ec2_gone(&ec2, id)).await?;
    }
    deleted.extend(ec2_ids);

    let ddb = lifeboat_common::aws::dynamodb_client(&config, account, region);
    let mut names = Vec::new();
    let mut tables = ddb.list_tables().into_paginator().items().send();
    while let Some(name) = tables.next().await {
        names.push(name.map_err(|e| classify("dynamodb:ListTables", e))?);
    }
    for name in names {
        let described = ddb.describe_table().table_name(&name).send().await;
        let Some(arn) = described.ok().and_then(|d| d.table().and_then(|t| t.table_arn().map(str::to_string))) else {
            continue;
        };
        let tags = ddb
            .list_tags_of_resource()
            .resource_arn(&arn)
            .send()
            .await
            .map_err(|e| classify("dynamodb:ListTagsOfResource", e))?;
        if tags.tags().iter().any(|t| t.key() == TAG_REQUEST_ID && matches(pattern, t.value())) {
            delete_table(&ddb, &name).await?;
            until_gone(deadline, || table_gone(&ddb, &name)).await?;
            deleted.push(arn);
        }
    }

    let rds = lifeboat_common::aws::rds_client(&config, account, region);
    let rds_drill = |tags: &[aws_sdk_rds::types::Tag]| {
        tags.iter().any(|t| t.key() == Some(TAG_REQUEST_ID) && t.value().is_some_and(|v| matches(pattern, v)))
    };
    let instances = rds.describe_db_instances().send().await.map_err(|e| classify("rds:DescribeDBInstances", e))?;
    let db_ids: Vec<String> = instances
        .db_instances()
        .iter()
        .filter(|db| rds_drill(db.tag_list()))
        .filter_map(|db| db.db_instance_identifier().map(str::to_string))
        .collect();
    for id in &db_ids {
        delete_db_instance(&rds, id).await?;
    }
    for id in &db_ids {
        until_gone(deadline, || db_instance_gone(&rds, id)).await?;
    }
    let clusters = rds.describe_db_clusters().send().await.map_err(|e| classify("rds:DescribeDBClusters", e))?;
    let cluster_ids: Vec<String> = clusters
        .db_clusters()
        .iter()
        .filter(|c| rds_drill(c.tag_list()))
        .filter_map(|c| c.db_cluster_identifier().map(str::to_string))
        .collect();
    for id in &cluster_ids {
        delete_db_cluster(&rds, id).await?;
        until_gone(deadline, || db_cluster_gone(&rds, id)).await?;
    }
    deleted.extend(db_ids);
    deleted.extend(cluster_ids);
    if !deleted.is_empty() {
        info!(account, region, pattern, deleted = ?deleted, "drill resources swept");
    }
    Ok(deleted)
}

/// Polls `gone` until it says so, or fails at `deadline`.
async fn until_gone<F, Fut>(deadline: tokio::time::Instant, mut gone: F) -> Result<(), AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<String>, AwsError>>,
{
    loop {
        let Some(still) = gone().await? else { return Ok(()) };
        if tokio::time::Instant::now() >= deadline {
            return Err(AwsError::task_failure("drill.teardown", "TEARDOWN_TIMEOUT", format!("{still} is not gone")));
        }
        tokio::time::sleep(GONE_POLL).await;
    }
}

/// A not-found error is success: what is gone needs no deleting.
fn not_found(result: Result<(), AwsError>, codes: &[&str]) -> Result<(), AwsError> {
    lifeboat_common::aws::absent_if_not_found(result, codes).map(|_| ())
}

const EC2_NOT_FOUND: &[&str] = &[
    "InvalidVolume.NotFound",
    "InvalidInstanceID.NotFound",
    "InvalidSnapshot.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Unavailable",
];

async fn delete_ec2(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<(), AwsError> {
    let result = if id.starts_with("i-") {
        ec2.terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("ec2:TerminateInstances", e))
    } else if id.starts_with("ami-") {
        ec2.deregister_image().image_id(id).send().await.map(|_| ()).map_err(|e| classify("ec2:DeregisterImage", e))
    } else if id.starts_with("snap-") {
        ec2.delete_snapshot().snapshot_id(id).send().await.map(|_| ()).map_err(|e| classify("ec2:DeleteSnapshot", e))
    } else {
        ec2.delete_volume().volume_id(id).send().await.map(|_| ()).map_err(|e| classify("ec2:DeleteVolume", e))
    };
    not_found(result, EC2_NOT_FOUND)
}

/// None when gone, else what is still there.
async fn ec2_gone(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<Option<String>, AwsError> {
    let still = if id.starts_with("i-") {
        let found =
            ec2.describe_instances().instance_ids(id).send().await.map_err(|e| classify("ec2:DescribeInstances", e));
        lifeboat_common::aws::absent_if_not_found(found, EC2_NOT_FOUND)?.and_then(|found| {
            let state = found
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find_map(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()))?;
            (state != "terminated").then(|| format!("instance {id} ({state})"))
        })
    } else if id.starts_with("ami-") {
        let found = ec2.describe_images().image_ids(id).send().await.map_err(|e| classify("ec2:DescribeImages", e));
        lifeboat_common::aws::absent_if_not_found(found, EC2_NOT_FOUND)?
            .and_then(|found| (!found.images().is_empty()).then(|| format!("image {id}")))
    } else if id.starts_with("snap-") {
        let found =
            ec2.describe_snapshots().snapshot_ids(id).send().await.map_err(|e| classify("ec2:DescribeSnapshots", e));
        lifeboat_common::aws::absent_if_not_found(found, EC2_NOT_FOUND)?
            .and_then(|found| (!found.snapshots().is_empty()).then(|| format!("snapshot {id}")))
    } else {
        let found = ec2.describe_volumes().volume_ids(id).send().await.map_err(|e| classify("ec2:DescribeVolumes", e));
        lifeboat_common::aws::absent_if_not_found(found, EC2_NOT_FOUND)?.and_then(|found| {
            let volume = found.volumes().first()?;
            let state = volume.state().map(|s| s.as_str()).unwrap_or_default();
            (state != "deleted").then(|| format!("volume {id} ({state})"))
        })
    };
    Ok(still)
}

async fn delete_table(ddb: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), AwsError> {
    let result =
        ddb.delete_table().table_name(name).send().await.map(|_| ()).map_err(|e| classify("dynamodb:DeleteTable", e));
    // In use: it is already being deleted (or still being restored; the poll waits it out).
    match not_found(result, &["ResourceNotFoundException"]) {
        Err(e) if e.code == "ResourceInUseException" => Ok(()),
        other => other,
    }
}

async fn table_gone(ddb: &aws_sdk_dynamodb::Client, name: &str) -> Result<Option<String>, AwsError> {
    let found = ddb.describe_table().table_name(name).send().await.map_err(|e| classify("dynamodb:DescribeTable", e));
    Ok(lifeboat_common::aws::absent_if_not_found(found, &["ResourceNotFoundException"])?
        .map(|_| format!("table {name}")))
}

const RDS_NOT_FOUND: &[&str] = &["DBInstanceNotFound", "DBInstanceNotFoundFault", "DBClusterNotFoundFault"];

async fn delete_db_instance(rds: &aws_sdk_rds::Client, id: &str) -> Result<(), AwsError> {
    let result = rds
        .delete_db_instance()
        .db_instance_identifier(id)
        .skip_final_snapshot(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify("rds:DeleteDBInstance", e));
    match not_found(result, RDS_NOT_FOUND) {
        // Already being deleted.
        Err(e) if e.code == "InvalidDBInstanceState" || e.code == "InvalidDBInstanceStateFault" => Ok(()),
        other => other,
    }
}

async fn db_instance_gone(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<String>, AwsError> {
    let found = rds
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .map_err(|e| classify("rds:DescribeDBInstances", e));
    Ok(lifeboat_common::aws::absent_if_not_found(found, RDS_NOT_FOUND)?
        .and_then(|found| (!found.db_instances().is_empty()).then(|| format!("DB instance {id}"))))
}

async fn delete_db_cluster(rds: &aws_sdk_rds::Client, id: &str) -> Result<(), AwsError> {
    let result = rds
        .delete_db_cluster()
        .db_cluster_identifier(id)
        .skip_final_snapshot(true)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify("rds:DeleteDBCluster", e));
    match not_found(result, RDS_NOT_FOUND) {
        Err(e) if e.code == "InvalidDBClusterStateFault" => Ok(()),
        other => other,
    }
}

async fn db_cluster_gone(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<String>, AwsError> {
    let found = rds
        .describe_db_clusters()
        .db_cluster_identifier(id)
        .send()
        .await
        .map_err(|e| classify("rds:DescribeDBClusters", e));
    Ok(lifeboat_common::aws::absent_if_not_found(found, RDS_NOT_FOUND)?
        .and_then(|found| (!found.db_clusters().is_empty()).then(|| format!("DB cluster {id}"))))
}
