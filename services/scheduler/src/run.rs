//! A rule's run as the message the services read: the plan's rule, its due time and windows,
//! in `BackupRun`, and the request that carries it.

use chrono::{DateTime, SecondsFormat, Utc};
use lifeboat_plans::{Plan, ResourceType as PlanType, Retention as PlanRetention, Rule};
use lifeboat_proto::{
    BackupOptions, BackupRun, BackupSelection, CopyDestination, RecoveryLock, ResourceType, RestoreRequest, Retention,
};

fn resource_type(kind: PlanType) -> ResourceType {
    match kind {
        PlanType::Ebs => ResourceType::EbsVolume,
        PlanType::EbsVolumeSet => ResourceType::EbsVolumeSet,
        PlanType::Ec2 => ResourceType::Ec2Instance,
        PlanType::RdsInstance => ResourceType::RdsInstance,
        PlanType::RdsCluster => ResourceType::RdsCluster,
        PlanType::Dynamodb => ResourceType::DynamodbTable,
    }
}

fn retention(retention: &PlanRetention, time_zone: &str) -> Retention {
    match retention {
        PlanRetention::Days(days) => Retention { days: *days, ..Default::default() },
        PlanRetention::Keep(keep) => Retention {
            keep_daily: keep.daily,
            keep_weekly: keep.weekly,
            keep_monthly: keep.monthly,
            keep_yearly: keep.yearly,
            time_zone: time_zone.to_string(),
            ..Default::default()
        },
    }
}

/// The due id of a run asked for by hand at `now`: it has its own id, so it never stands in for
/// a scheduled run.
pub fn manual_due_id(plan: &str, rule: &str, now: DateTime<Utc>) -> String {
    format!("{plan}/{rule}/manual-{}", now.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The run of `rule` due at `due_at` under `due_id`; at a continuous-backup check of a rule with
/// protection groups, the run carries the continuous settings (`BackupRun.continuous`), so the
/// s3 service syncs only the buckets whose pending updates say so.
pub fn backup_run(plan: &Plan, rule: &Rule, due_id: String, due_at: DateTime<Utc>, manual: bool) -> BackupRun {
    let zone = rule.schedule.time_zone.name();
    let selection = &rule.selection;
    let mut run = BackupRun {
        plan: plan.name.clone(),
        rule: rule.name.clone(),
        due_id,
        due_at: Some(lifeboat_common::time::to_timestamp(due_at)),
        complete_by: Some(lifeboat_common::time::to_timestamp(due_at + rule.completion_window)),
        selection: Some(BackupSelection {
            resource_types: selection.resource_types.iter().map(|t| resource_type(*t) as i32).collect(),
            account_ids: selection.accounts.clone(),
            regions: selection.regions.clone(),
            include_tags: selection.include_tags.clone().into_iter().collect(),
            exclude_tags: selection.exclude_tags.clone().into_iter().collect(),
            all_resources: selection.include_tags.is_empty(),
            ..Default::default()
        }),
        retention: Some(retention(&rule.retention, zone)),
        copy_to: rule
            .copy_to
            .iter()
            .map(|copy| CopyDestination {
                region: copy.region.clone(),
                account_id: copy.account.clone().unwrap_or_default(),
                kms_key_id: copy.kms_key.clone().unwrap_or_default(),
                retention: Some(retention(&copy.retention, zone)),
            })
            .collect(),
        options: Some(BackupOptions {
            no_reboot: rule.options.no_reboot,
            continuous: rule.options.continuous,
            pre_script: rule.options.application_consistent.as_ref().map(|a| a.pre.clone()).unwrap_or_default(),
            post_script: rule.options.application_consistent.as_ref().map(|a| a.post.clone()).unwrap_or_default(),
            cold_after_days: rule.options.cold_after_days.unwrap_or_default(),
        }),
        lock: Some(RecoveryLock {
            mode: plan.lock.mode.as_str().to_string(),
            min_retention_days: plan.lock.min_retention_days.unwrap_or_default(),
            max_retention_days: plan.lock.max_retention_days.unwrap_or_default(),
            snapshot_lock: plan.lock.snapshot_lock,
        }),
        tags: plan.tags.clone().into_iter().collect(),
        manual,
        config_export: None,
        ..Default::default()
    };
    rule.add_config_export(&mut run);
    // A run asked for by hand is a full run, whatever the time.
    rule.add_protection_groups(&mut run, !manual && lifeboat_plans::is_check(rule, due_at));
    run
}

/// The request that carries a run; its id comes from the due id, so publishing it twice (two
/// replicas, a restart) is one run.
pub fn request(run: BackupRun, requested_by: &str) -> RestoreRequest {
    RestoreRequest {
        request_id: lifeboat_common::backup::backup_run_id(&run.due_id),
        submitted_at: Some(lifeboat_common::time::now()),
        requested_by: requested_by.to_string(),
        backup_run: Some(run),
        ..Default::default()
    }
}
