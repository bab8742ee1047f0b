//! The config service on `lifeboat.work.config`, in the same shell as the resource services
//! (claims, progress records, status events, verdicts). A task with a `backup_task` exports one
//! service's configuration of one account (and region, for ELBv2) to the run's bucket; any other
//! task restores the export documents its backup names into its target.
//!
//! Also what discovery and the CLI share with it: where a run's or a target's exports are
//! ([`location`]), which exports a time rule picks ([`find_exports`]), the Backup that names
//! them ([`export_backup`]), and a target's restore options ([`apply_options`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_common::bus::Bus;
use lifeboat_common::restore::{Progress, RestoreService, Restorer, ServiceConfig, Step};
use lifeboat_proto::{restore_task, Backup, ConfigExport, ConfigTarget, ResourceType, RestoreTask};

use crate::changes::{ApplyOptions, ChangeKind, Mapping, RestoreReport};
use crate::document::{ConfigDocument, Service};
use crate::store::{self, ExportEntry, Location, Stored};

/// The work subject suffix and service name.
pub const KIND: &str = "config";

/// Region of the credentials a Route 53 export or restore is made with (Route 53 is global).
pub const GLOBAL_CALL_REGION: &str = "us-east-1";

#[derive(Clone, Debug, Default)]
pub struct ConfigServiceConfig {
    pub service: ServiceConfig,
}

pub type ConfigService = RestoreService<ConfigRestorer>;

/// The config service, ready to `run`.
pub fn service(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: ConfigServiceConfig) -> Arc<ConfigService> {
    RestoreService::new(ConfigRestorer { accounts }, bus, config.service)
}

pub struct ConfigRestorer {
    accounts: Arc<Accounts>,
}

/// The document service of a resource type.
pub fn service_of(kind: ResourceType) -> Option<Service> {
    match kind {
        ResourceType::Route53Zone => Some(Service::Route53),
        ResourceType::Elbv2LoadBalancer => Some(Service::Elbv2),
        _ => None,
    }
}

/// The resource type of a document service.
pub fn resource_type(service: Service) -> ResourceType {
    match service {
        Service::Route53 => ResourceType::Route53Zone,
        Service::Elbv2 => ResourceType::Elbv2LoadBalancer,
    }
}

/// The region a service's documents are stored under: `global` for Route 53.
pub fn document_region(service: Service, region: &str) -> &str {
    match service {
        Service::Route53 => Service::GLOBAL,
        Service::Elbv2 => region,
    }
}

/// The region to call AWS in for a document region (`global` is not one).
pub fn call_region(region: &str) -> &str {
    if region == Service::GLOBAL {
        GLOBAL_CALL_REGION
    } else {
        region
    }
}

/// Where a backup run's exports go.
pub fn location(export: &ConfigExport) -> Location {
    Location {
        bucket: export.bucket.clone(),
        region: export.region.clone(),
        prefix: export.prefix.clone(),
        kms_key_id: export.kms_key_id.clone(),
    }
}

/// Where a restore target's exports are.
pub fn target_location(target: &ConfigTarget) -> Location {
    Location {
        bucket: target.bucket.clone(),
        region: target.bucket_region.clone(),
        prefix: target.prefix.clone(),
        kms_key_id: String::new(),
    }
}

/// A target's restore options (its mappings, suffix and `replace`), in its region.
pub fn apply_options(target: &ConfigTarget, dry_run: bool) -> ApplyOptions {
    let map = |m: &std::collections::HashMap<String, String>| -> BTreeMap<String, String> {
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    ApplyOptions {
        dry_run,
        replace: target.replace,
        name_suffix: target.name_suffix.clone(),
        region: target.region.clone(),
        mapping: Mapping {
            subnets: map(&target.subnet_map),
            security_groups: map(&target.security_group_map),
            vpcs: map(&target.vpc_map),
            certificates: map(&target.certificate_map),
            targets: map(&target.target_map),
            ..Mapping::default()
        },
    }
}

/// The export of each of `services` of `account_id` (and `region`, for ELBv2) that the time
/// bounds pick ([`store::choose`]); a service without one is left out.
pub async fn find_exports(
    s3: &aws_sdk_s3::Client,
    location: &Location,
    account_id: &str,
    region: &str,
    services: &[Service],
    before: Option<DateTime<Utc>>,
    after: Option<DateTime<Utc>>,
) -> Result<Vec<(Service, ExportEntry)>, AwsError> {
    let mut found = Vec::new();
    for &service in services {
        let entries = store::list(s3, location, account_id, document_region(service, region), service).await?;
        if let Some(entry) = store::choose(&entries, before, after) {
            found.push((service, entry.clone()));
        }
    }
    Ok(found)
}

/// The Backup a restore task carries: the chosen documents' keys by service in `settings`
/// (ELBv2's restored first, by the service), all of them in `backup_id`.
pub fn export_backup(account_id: &str, region: &str, exports: &[(Service, ExportEntry)]) -> Backup {
    let keys: Vec<&str> = exports.iter().map(|(_, e)| e.key.as_str()).collect();
    let services: Vec<&str> = exports.iter().map(|(s, _)| s.as_str()).collect();
    let newest = exports.iter().map(|(_, e)| e.exported_at).max();
    Backup {
        backup_id: keys.join(","),
        resource_type: exports.first().map_or(ResourceType::Route53Zone, |(s, _)| resource_type(*s)) as i32,
        source_resource_id: services.join("+"),
        account_id: account_id.to_string(),
        region: region.to_string(),
        created_at: newest.map(lifeboat_common::time::to_timestamp),
        settings: exports.iter().map(|(s, e)| (s.as_str().to_string(), e.key.clone())).collect(),
        ..Default::default()
    }
}

/// The document keys a restore task's backup names, by service.
pub fn backup_keys(backup: &Backup) -> Vec<(Service, String)> {
    Service::ALL
        .into_iter()
        .filter_map(|service| backup.settings.get(service.as_str()).map(|key| (service, key.clone())))
        .collect()
}

fn target_of(task: &RestoreTask) -> Option<&ConfigTarget> {
    match &task.target {
        Some(restore_task::Target::Config(target)) => Some(target),
        _ => None,
    }
}

#[async_trait]
impl Restorer for ConfigRestorer {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn check(&self, task: &RestoreTask) -> Result<(), String> {
        let kinds = [ResourceType::Route53Zone, ResourceType::Elbv2LoadBalancer];
        if let Some(job) = &task.backup_task {
            lifeboat_common::backup::check_task(task, "config", &kinds)?;
            let export = job.run.as_ref().and_then(|r| r.config_export.as_ref());
            return match export {
                Some(e) if !e.bucket.is_empty() && !e.region.is_empty() => Ok(()),
                _ => Err("backup task without backup_task.run.config_export (bucket, region)".into()),
            };
        }
        let backup = task.backup.clone().unwrap_or_default();
        match target_of(task) {
            _ if backup_keys(&backup).is_empty() => {
                Err("task's backup names no export document (backup.settings route53, elbv2)".into())
            }
            Some(t) if !t.account_id.is_empty() && !t.region.is_empty() && !t.bucket.is_empty() => Ok(()),
            _ => Err("task has no complete config target (account, region, bucket)".into()),
        }
    }

    async fn step(&self, task: &RestoreTask, _attempt: u32, _progress: &mut Progress) -> Result<Step, AwsError> {
        if task.backup_task.is_some() {
            return self.export_step(task).await;
        }
        self.restore_step(task).await
    }
}

impl ConfigRestorer {
    /// Exports one service's configuration and stores it, unless unchanged since the latest.
    async fn export_step(&self, task: &RestoreTask) -> Result<Step, AwsError> {
        if let Some(late) = lifeboat_common::backup::past_completion_window(task, Utc::now()) {
            return Ok(late);
        }
        let job = task.backup_task.clone().unwrap_or_default();
        let Some(service) = service_of(task.resource_type()) else {
            let message = format!("{} is not a configuration type", task.resource_type().as_str_name());
            return Ok(Step::Failed { code: lifeboat_common::restore::reason::INVALID_TASK.into(), message });
        };
        let export = job.run.as_ref().and_then(|r| r.config_export.clone()).unwrap_or_default();
        let location = location(&export);
        let config = self.accounts.config_for(&job.account_id, call_region(&job.region)).await?;
        let doc = crate::export::export_document(&config, &job.account_id, &job.region, service).await?;
        let s3_config = self.accounts.config_for(&job.account_id, &location.region).await?;
        let s3 = store::client(&s3_config, &job.account_id, &location);
        store::ensure_bucket(&s3, &location).await?;
        let stored = store::put(&s3, &location, &doc).await?;
        Ok(export_done(&doc, &location, &stored))
    }

    /// Restores the documents the task's backup names, ELBv2 before Route 53.
    async fn restore_step(&self, task: &RestoreTask) -> Result<Step, AwsError> {
        let target = target_of(task).cloned().unwrap_or_default();
        let backup = task.backup.clone().unwrap_or_default();
        let location = target_location(&target);
        let s3_config = self.accounts.config_for(&backup.account_id, &location.region).await?;
        let s3 = store::client(&s3_config, &backup.account_id, &location);
        let mut docs = Vec::new();
        for (_, key) in backup_keys(&backup) {
            docs.push(store::get(&s3, &location, &key).await?);
        }
        let config = self.accounts.config_as(&target.account_id, &target.region, &task.target_role_arn).await?;
        let options = apply_options(&target, false);
        let report =
            crate::apply::restore_documents(&config, &target.account_id, &target.region, &docs, &options).await?;
        Ok(restore_done(&docs, &target, &report))
    }
}

/// `exported 2 hosted_zones, 130 record_sets ... to s3://bucket/key`, or unchanged.
pub fn export_done(doc: &ConfigDocument, location: &Location, stored: &Stored) -> Step {
    let what = format!("{} of {}/{}", doc.service.as_str(), doc.account_id, doc.region);
    match stored {
        Stored::Written { key } => Step::Done {
            message: format!("exported {} ({what}) to {}", doc.summary(), location.url(key)),
            created: vec![location.url(key)],
            warnings: Vec::new(),
        },
        Stored::Unchanged { key } => Step::Done {
            message: format!("{what} unchanged since {} ({})", location.url(key), doc.summary()),
            created: Vec::new(),
            warnings: Vec::new(),
        },
    }
}

/// The report as a step: its summary, the target ids it names, and a warning per item that
/// exists in the target and differs (left alone without `replace`) and per report warning.
pub fn restore_done(docs: &[ConfigDocument], target: &ConfigTarget, report: &RestoreReport) -> Step {
    let services: Vec<&str> = docs.iter().map(|d| d.service.as_str()).collect();
    let mut warnings: Vec<String> = report
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Differs)
        .map(|c| format!("{} differs in the target ({}); --replace replaces it", c.resource, c.detail))
        .collect();
    warnings.extend(report.warnings.iter().cloned());
    let mut created: Vec<String> = report.ids.values().cloned().collect();
    created.sort();
    created.dedup();
    Step::Done {
        message: format!(
            "restored {} into {}/{}: {}",
            services.join(" and "),
            target.account_id,
            target.region,
            report.summary()
        ),
        created,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::Change;

    fn entry(key: &str, at: &str) -> ExportEntry {
        ExportEntry {
            key: key.to_string(),
            exported_at: at.parse().expect("a time"),
            short_checksum: "0123456789ab".to_string(),
            checksum: None,
            size: 1,
        }
    }

    #[test]
    fn a_restore_tasks_backup_names_each_document_by_service() {
        let exports = [
            (Service::Elbv2, entry("p/1/us-east-1/elbv2/x.json", "2026-12-01T00:00:00Z")),
            (Service::Route53, entry("p/1/global/route53/y.json", "2026-12-02T00:00:00Z")),
        ];
        let backup = export_backup("111111111111", "us-east-1", &exports);
        assert_eq!(backup.backup_id, "p/1/us-east-1/elbv2/x.json,p/1/global/route53/y.json");
        assert_eq!(backup.source_resource_id, "elbv2+route53");
        assert_eq!(backup.resource_type, ResourceType::Elbv2LoadBalancer as i32);
        assert_eq!(
            backup.created_at.as_ref().and_then(lifeboat_common::time::from_timestamp),
            Some(exports[1].1.exported_at)
        );
        let keys = backup_keys(&backup);
        assert_eq!(keys, [(Service::Route53, exports[1].1.key.clone()), (Service::Elbv2, exports[0].1.key.clone())]);
    }

    #[test]
    fn differing_items_are_warnings_and_the_summary_is_the_message() {
        let target =
            ConfigTarget { account_id: "111111111111".into(), region: "us-east-2".into(), ..Default::default() };
        let mut report = RestoreReport::default();
        report.push(ChangeKind::Create, "load_balancer web-lb", "created");
        report.push(ChangeKind::Differs, "record www.example.com.|A|", "ttl 300 -> 60");
        report.ids.insert("web-lb-1.elb.amazonaws.com".into(), "web-lb-2.elb.amazonaws.com".into());
        let Step::Done { message, created, warnings } = restore_done(&[], &target, &report) else {
            panic!("a restore is done in one step");
        };
        assert!(message.ends_with("into 111111111111/us-east-2: 1 created, 1 differ"), "{message}");
        assert_eq!(created, ["web-lb-2.elb.amazonaws.com"]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("www.example.com.") && warnings[0].contains("--replace"), "{warnings:?}");
        let clean = RestoreReport {
            changes: vec![Change {
                kind: ChangeKind::Keep,
                resource: "zone example.com.".into(),
                detail: String::new(),
            }],
            ..Default::default()
        };
        assert!(matches!(restore_done(&[], &target, &clean), Step::Done { warnings, .. } if warnings.is_empty()));
    }

    #[test]
    fn a_targets_maps_become_the_restores_mapping() {
        let target = ConfigTarget {
            region: "us-east-2".into(),
            name_suffix: "-dr".into(),
            replace: true,
            subnet_map: [("subnet-a".to_string(), "subnet-b".to_string())].into(),
            security_group_map: [("sg-a".to_string(), "sg-b".to_string())].into(),
            ..Default::default()
        };
        let options = apply_options(&target, true);
        assert!(options.dry_run && options.replace);
        assert_eq!((options.region.as_str(), options.name_suffix.as_str()), ("us-east-2", "-dr"));
        assert_eq!(options.mapping.subnet("subnet-a"), "subnet-b");
        assert_eq!(options.mapping.security_group("sg-a"), "sg-b");
        assert_eq!(options.mapping.vpc("vpc-1"), "vpc-1", "unmapped ids stay");
    }

    #[test]
    fn route53_is_stored_under_global_and_called_in_us_east_1() {
        assert_eq!(document_region(Service::Route53, "eu-west-1"), "global");
        assert_eq!(document_region(Service::Elbv2, "eu-west-1"), "eu-west-1");
        assert_eq!(call_region("global"), GLOBAL_CALL_REGION);
        assert_eq!(call_region("eu-west-1"), "eu-west-1");
    }
}
