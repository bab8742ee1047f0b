//! Route 53 and ELBv2 configuration (`lifeboat.work.config`): a backup run exports it whole,
//! one task per account for Route 53 and per account and region for ELBv2; a restore set
//! restores the exports its time rule picks, both services in one task (load balancers before
//! the alias records that point at them).

use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_config::document::Service;
use lifeboat_config::service::{self as config, find_exports};
use lifeboat_proto::{restore_task, Backup, BackupRun, BackupTask, ResourceType, RestoreSet, RestoreTask, Source};

use crate::select::TimeRule;

/// The resource id of every configuration export task of a service.
pub fn resource_id(service: Service) -> &'static str {
    service.as_str()
}

/// The configuration services a backup selection exports.
pub fn services(kinds: &[i32]) -> Vec<Service> {
    let kinds: Vec<ResourceType> = kinds.iter().filter_map(|k| ResourceType::try_from(*k).ok()).collect();
    Service::ALL.into_iter().filter(|s| kinds.contains(&config::resource_type(*s))).collect()
}

/// The export tasks of one account: Route 53 once (region `global`), ELBv2 in each region.
pub fn backup_tasks(request_id: &str, run: &BackupRun, account_id: &str, regions: &[String]) -> Vec<RestoreTask> {
    let selection = run.selection.clone().unwrap_or_default();
    let mut tasks = Vec::new();
    for service in services(&selection.resource_types) {
        let places: Vec<&str> = match service {
            Service::Route53 => vec![Service::GLOBAL],
            Service::Elbv2 => regions.iter().map(String::as_str).collect(),
        };
        for region in places {
            let job = BackupTask {
                run: Some(run.clone()),
                resource_id: resource_id(service).to_string(),
                account_id: account_id.to_string(),
                region: region.to_string(),
                ..Default::default()
            };
            tasks.push(lifeboat_common::backup::task(request_id, config::resource_type(service), job));
        }
    }
    tasks
}

/// Whether a restore set restores configuration (validation keeps it in a set of its own).
pub fn is_config_set(set: &RestoreSet) -> bool {
    !set.resource_types.is_empty() && !services(&set.resource_types).is_empty()
}

/// The time bounds of [`lifeboat_config::store::choose`] for a set's time rule.
fn bounds(rule: TimeRule) -> (Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>) {
    match rule {
        TimeRule::Before(at) => (Some(at), None),
        TimeRule::After(at) => (None, Some(at)),
        TimeRule::Between(at, until) | TimeRule::Window(at, until) => (Some(until), Some(at)),
    }
}

/// The exports a configuration set restores, as one backup with its completed target and why it
/// was chosen; `Ok(None)` with the reason when the bucket holds no export the rule picks.
pub async fn find(
    accounts: &Accounts,
    set: &RestoreSet,
    source: &Source,
    rule: TimeRule,
) -> Result<Result<(Backup, restore_task::Target, String), String>, AwsError> {
    let account_id = accounts.resolve_account(&source.account_id).await?;
    let mut target = set.target.clone().unwrap_or_default().config.unwrap_or_default();
    let location = config::target_location(&target);
    let s3_config = accounts.config_for(&account_id, &location.region).await?;
    let s3 = lifeboat_config::store::client(&s3_config, &account_id, &location);
    let wanted = services(&set.resource_types);
    let (before, after) = bounds(rule);
    let found = find_exports(&s3, &location, &account_id, &source.region, &wanted, before, after).await?;
    let missing: Vec<&str> =
        wanted.iter().filter(|s| !found.iter().any(|(f, _)| f == *s)).map(|s| s.as_str()).collect();
    if !missing.is_empty() {
        return Ok(Err(format!(
            "no {} export of {account_id}/{} under {} is the {rule}",
            missing.join(" or "),
            source.region,
            location.url(&location.key_prefix())
        )));
    }
    if target.account_id.is_empty() {
        target.account_id = account_id.clone();
    }
    if target.region.is_empty() {
        target.region = source.region.clone();
    }
    let backup = config::export_backup(&account_id, &source.region, &found);
    let why = format!("{} export {rule}: {}", named(&found), backup.backup_id);
    Ok(Ok((backup, restore_task::Target::Config(target), why)))
}

/// `route53 and elbv2`: the services found.
fn named(found: &[(Service, lifeboat_config::store::ExportEntry)]) -> String {
    found.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(" and ")
}
