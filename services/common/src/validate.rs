//! Validation of RestoreRequests. Every problem is reported with the path of its field, e.g.
//! `restore_sets[1].target.ebs.availability_zone`, so a user can fix them all in one go.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use lifeboat_proto::{
    source, BackupRun, FieldError, RecoveryLock, ResourceType, RestoreRequest, RestoreSet, Retention, SearchDirection,
};

use crate::ids;

const VOLUME_TYPES: &[&str] = &["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];
const MAX_WAIT_CHECKS: u32 = 10_000;
/// Restore sets in one request: beyond this a request is a script's mistake, and each set is
/// listed against AWS.
pub const MAX_SETS: usize = 100;
/// Tags a source selects by, or a target adds (AWS allows 50 per resource).
pub const MAX_TAGS: usize = 50;
/// Names a source selects by.
pub const MAX_NAMES: usize = 1000;
/// The highest `options.max_tasks` a request may ask for.
pub const MAX_TASKS_LIMIT: u32 = 100_000;
/// Length of any one string (set names, tag keys and values, names, ids).
pub const MAX_STRING: usize = 256;

/// What this deployment accepts.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Resource types that have a discovery and a restore service.
    pub supported_types: Vec<ResourceType>,
    /// When not empty, only these accounts may be named as source or target.
    pub allowed_accounts: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            supported_types: vec![
                ResourceType::EbsVolume,
                ResourceType::DynamodbTable,
                ResourceType::Ec2Instance,
                ResourceType::RdsInstance,
                ResourceType::RdsCluster,
            ],
            allowed_accounts: Vec::new(),
        }
    }
}

impl Policy {
    /// The policy of a deployment that also runs the config service (`lifeboat serve config`):
    /// Route 53 and ELBv2 configuration restores are accepted too.
    pub fn with_config_types(mut self) -> Self {
        for kind in CONFIG_TYPES {
            if !self.supported_types.contains(&kind) {
                self.supported_types.push(kind);
            }
        }
        self
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }
}

/// Checks a whole request; returns every problem found.
pub fn validate_request(request: &RestoreRequest, policy: &Policy) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors(Vec::new());
    if request.request_id.is_empty() {
        errors.add("request_id", "is required");
    } else if !ids::is_valid_request_id(&request.request_id) {
        errors.add(
            "request_id",
            format!("must be 1 to {} characters of A-Z, a-z, 0-9, '-' and '_'", ids::MAX_REQUEST_ID_LEN),
        );
    }
    if let Some(run) = &request.backup_run {
        validate_backup_run(request, run, policy, &mut errors);
    } else if request.restore_sets.is_empty() {
        errors.add("restore_sets", "at least one restore set is required");
    } else if request.restore_sets.len() > MAX_SETS {
        errors.add("restore_sets", format!("{} restore sets, more than {MAX_SETS}", request.restore_sets.len()));
        // Each set would add its own errors; the count is the one to fix.
        return Err(errors.0);
    }
    if let Some(options) = &request.options {
        if options.max_wait_checks > MAX_WAIT_CHECKS {
            errors.add("options.max_wait_checks", format!("must be at most {MAX_WAIT_CHECKS}"));
        }
        if options.max_tasks > MAX_TASKS_LIMIT {
            errors.add("options.max_tasks", format!("must be at most {MAX_TASKS_LIMIT}"));
        }
    }
    let mut names = HashSet::new();
    for (index, set) in request.restore_sets.iter().enumerate() {
        let path = format!("restore_sets[{index}]");
        if set.name.is_empty() {
            errors.add(format!("{path}.name"), "is required");
        } else if set.name.len() > MAX_STRING {
            errors.add(format!("{path}.name"), format!("is longer than {MAX_STRING} bytes"));
        } else if !names.insert(set.name.as_str()) {
            errors.add(format!("{path}.name"), format!("'{}' is used by another restore set", set.name));
        }
        validate_set(&path, set, policy, &mut errors);
    }
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(errors.0)
    }
}

fn validate_set(path: &str, set: &RestoreSet, policy: &Policy, errors: &mut Errors) {
    let source_region = match &set.source {
        None => {
            errors.add(format!("{path}.source"), "is required");
            String::new()
        }
        Some(source) => {
            check_account(&format!("{path}.source.account_id"), &source.account_id, policy, errors);
            if source.region.is_empty() {
                errors.add(format!("{path}.source.region"), "is required");
            } else if !is_region(&source.region) {
                errors.add(format!("{path}.source.region"), format!("'{}' is not an AWS region name", source.region));
            }
            if source.tags.len() > MAX_TAGS {
                errors.add(format!("{path}.source.tags"), format!("{} tags, more than {MAX_TAGS}", source.tags.len()));
            }
            // Tags are a map: in key order, the same request lists its errors the same way on
            // every decoding (a rejection shows the first ones).
            for (key, value) in source.tags.iter().collect::<BTreeMap<_, _>>() {
                if key.is_empty() {
                    errors.add(format!("{path}.source.tags"), "tag keys must not be empty");
                }
                check_length(&format!("{path}.source.tags"), key, errors);
                check_length(&format!("{path}.source.tags"), value, errors);
            }
            if source.names.len() > MAX_NAMES {
                errors.add(
                    format!("{path}.source.names"),
                    format!("{} names, more than {MAX_NAMES}", source.names.len()),
                );
            }
            for (index, name) in source.names.iter().enumerate() {
                if name.trim().is_empty() {
                    errors.add(format!("{path}.source.names[{index}]"), "must not be empty");
                }
                check_length(&format!("{path}.source.names[{index}]"), name, errors);
            }
            if source.point_in_time_recovery && !matches!(source.selection, Some(source::Selection::PointInTime(_))) {
                errors.add(format!("{path}.source.point_in_time_recovery"), "needs a point_in_time to restore to");
            }
            match &source.selection {
                Some(source::Selection::PointInTime(point)) => {
                    if point.time.is_none() {
                        errors.add(format!("{path}.source.point_in_time.time"), "is required");
                    }
                    if let Some(until) = &point.until {
                        if point.direction != SearchDirection::After as i32 {
                            errors.add(format!("{path}.source.point_in_time.until"), "only bounds an AFTER search");
                        } else if point
                            .time
                            .as_ref()
                            .is_some_and(|t| (until.seconds, until.nanos) < (t.seconds, t.nanos))
                        {
                            errors.add(format!("{path}.source.point_in_time.until"), "is before point_in_time.time");
                        }
                    }
                    if point.direction == SearchDirection::Unspecified as i32
                        || SearchDirection::try_from(point.direction).is_err()
                    {
                        errors.add(format!("{path}.source.point_in_time.direction"), "must be BEFORE or AFTER");
                    }
                }
                Some(source::Selection::Window(window)) => match (&window.start, &window.end) {
                    (None, _) => errors.add(format!("{path}.source.window.start"), "is required"),
                    (_, None) => errors.add(format!("{path}.source.window.end"), "is required"),
                    (Some(start), Some(end)) if (end.seconds, end.nanos) < (start.seconds, start.nanos) => {
                        errors.add(format!("{path}.source.window.end"), "is before window.start")
                    }
                    _ => {}
                },
                None => {}
            }
            source.region.clone()
        }
    };
    if set.resource_types.is_empty() {
        errors.add(format!("{path}.resource_types"), "at least one resource type is required");
    }
    let mut seen = HashSet::new();
    let s3 = ResourceType::S3Bucket as i32;
    if set.resource_types.contains(&s3) && set.resource_types.iter().any(|&t| t != s3) {
        errors.add(format!("{path}.resource_types"), "S3 restores go in a restore set of their own");
    }
    let config = |t: &i32| CONFIG_TYPES.iter().any(|c| *c as i32 == *t);
    if set.resource_types.iter().any(config) && !set.resource_types.iter().all(config) {
        errors.add(
            format!("{path}.resource_types"),
            "route53 and elbv2 configuration restores go in a restore set of their own (one task restores both)",
        );
    }
    for (index, &value) in set.resource_types.iter().enumerate() {
        let field = format!("{path}.resource_types[{index}]");
        match ResourceType::try_from(value) {
            Err(_) | Ok(ResourceType::Unspecified) => errors.add(field, format!("unknown resource type {value}")),
            // Always accepted: every deployment plans S3 sets (the s3 service restores them), and
            // their target is checked here field by field.
            Ok(ResourceType::S3Bucket) if !policy.supported_types.contains(&ResourceType::S3Bucket) => {
                validate_target(path, ResourceType::S3Bucket, set, &source_region, policy, errors);
            }
            Ok(kind) if !policy.supported_types.contains(&kind) => {
                errors.add(field, format!("{} restores are not supported by this deployment", kind.short_name()))
            }
            Ok(kind) => {
                if !seen.insert(kind) {
                    errors.add(field, format!("{} is listed twice", kind.short_name()));
                }
                validate_target(path, kind, set, &source_region, policy, errors);
            }
        }
    }
}

fn validate_target(
    path: &str,
    kind: ResourceType,
    set: &RestoreSet,
    source_region: &str,
    policy: &Policy,
    errors: &mut Errors,
) {
    let targets = set.target.clone().unwrap_or_default();
    match kind {
        ResourceType::EbsVolume => {
            no_point_in_time_recovery(path, set, "EBS volumes", errors);
            let path = format!("{path}.target.ebs");
            let Some(target) = targets.ebs else {
                errors.add(path, "is required to restore EBS volumes");
                return;
            };
            let place =
                Place { account_id: &target.account_id, region: &target.region, zone: Some(&target.availability_zone) };
            // In the source's account and region the zone is inherited from the source volume
            // (discovery fails the set, naming this field, when that volume is gone).
            let source_account = set.source.as_ref().map(|s| s.account_id.as_str()).unwrap_or_default();
            let other_account =
                !target.account_id.is_empty() && !source_account.is_empty() && target.account_id != source_account;
            let other_region = !target.region.is_empty() && target.region != source_region;
            check_place(&path, place, other_account || other_region, source_region, policy, errors);
            let volume_type = target.volume_type.as_str();
            if !volume_type.is_empty() && !VOLUME_TYPES.contains(&volume_type) {
                errors.add(
                    format!("{path}.volume_type"),
                    format!("'{volume_type}' is not one of {}", VOLUME_TYPES.join(", ")),
                );
            }
            if let Some(iops) = target.iops {
                if !matches!(volume_type, "io1" | "io2" | "gp3") {
                    errors.add(format!("{path}.iops"), "only io1, io2 and gp3 volumes take iops");
                } else if iops <= 0 {
                    errors.add(format!("{path}.iops"), "must be positive");
                }
            }
            if let Some(throughput) = target.throughput {
                if volume_type != "gp3" {
                    errors.add(format!("{path}.throughput"), "only gp3 volumes take throughput");
                } else if throughput <= 0 {
                    errors.add(format!("{path}.throughput"), "must be positive");
                }
            }
            check_tags(&format!("{path}.tags"), target.tags.keys(), errors);
        }
        ResourceType::DynamodbTable => {
            let path = format!("{path}.target.dynamodb");
            let Some(target) = targets.dynamodb else {
                errors.add(path, "is required to restore DynamoDB tables");
                return;
            };
            let place = Place { account_id: &target.account_id, region: &target.region, zone: None };
            check_place(&path, place, false, source_region, policy, errors);
            if target.table_name.is_empty() && target.name_suffix.is_empty() {
                errors.add(
                    format!("{path}.name_suffix"),
                    "a name_suffix (table <source>-<suffix>) or a table_name is required",
                );
            }
            for (field, name) in [("table_name", &target.table_name), ("name_suffix", &target.name_suffix)] {
                if !name.is_empty() && !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
                    errors.add(format!("{path}.{field}"), "may hold only A-Z, a-z, 0-9, '_', '-' and '.'");
                }
            }
            if target.table_name.len() > 255 {
                errors.add(format!("{path}.table_name"), "is longer than 255 characters");
            }
            check_tags(&format!("{path}.tags"), target.tags.keys(), errors);
        }
        ResourceType::Ec2Instance => {
            no_point_in_time_recovery(path, set, "EC2 instances", errors);
            let path = format!("{path}.target.ec2");
            let Some(target) = targets.ec2 else {
                errors.add(path, "is required to restore EC2 instances");
                return;
            };
            let place =
                Place { account_id: &target.account_id, region: &target.region, zone: Some(&target.availability_zone) };
            check_place(&path, place, false, source_region, policy, errors);
            // In the source's account and region the subnet (and its security groups) are
            // inherited from the source instance; discovery fails the set, naming this field,
            // when that instance is gone.
            let source_account = set.source.as_ref().map(|s| s.account_id.as_str()).unwrap_or_default();
            let other_account =
                !target.account_id.is_empty() && !source_account.is_empty() && target.account_id != source_account;
            let other_region = !target.region.is_empty() && target.region != source_region;
            if target.subnet_id.is_empty() && (other_account || other_region) {
                errors.add(format!("{path}.subnet_id"), "is required in another account or region");
            } else if !target.subnet_id.is_empty() && !target.subnet_id.starts_with("subnet-") {
                errors.add(format!("{path}.subnet_id"), format!("'{}' is not a subnet id", target.subnet_id));
            }
            if !target.vpc_id.is_empty() && !target.vpc_id.starts_with("vpc-") {
                errors.add(format!("{path}.vpc_id"), format!("'{}' is not a VPC id", target.vpc_id));
            }
            check_security_groups(&path, &target.security_group_ids, errors);
            check_tags(&format!("{path}.tags"), target.tags.keys(), errors);
        }
        ResourceType::RdsInstance | ResourceType::RdsCluster => {
            let path = format!("{path}.target.rds");
            let Some(target) = targets.rds else {
                errors.add(path, "is required to restore RDS databases");
                return;
            };
            let place =
                Place { account_id: &target.account_id, region: &target.region, zone: Some(&target.availability_zone) };
            check_place(&path, place, false, source_region, policy, errors);
            // In the source's account and region the source's subnet group is used; an empty
            // source account is the caller's, as is an empty target account.
            let source_account = set.source.as_ref().map(|s| s.account_id.as_str()).unwrap_or_default();
            let same_account = target.account_id.is_empty() || target.account_id == source_account;
            let same_region = target.region.is_empty() || target.region == source_region;
            if target.db_subnet_group.is_empty() && !(same_account && same_region) {
                errors.add(
                    format!("{path}.db_subnet_group"),
                    "is required when restoring to another account or region (in the source's, the source's is used)",
                );
            }
            if target.name.is_empty() {
                if same_account {
                    errors.add(
                        format!("{path}.name"),
                        "is required in the source's account (the restored instance or cluster identifier); only a \
                         restore to another account may keep the source's identifier",
                    );
                }
            } else if !is_rds_identifier(&target.name) {
                errors.add(
                    format!("{path}.name"),
                    format!(
                        "'{}' must start with a letter and hold 1 to 63 letters, digits and single hyphens",
                        target.name
                    ),
                );
            }
            const STORAGE_TYPES: &[&str] = &["standard", "gp2", "gp3", "io1", "io2", "aurora", "aurora-iopt1"];
            if !target.storage_type.is_empty() && !STORAGE_TYPES.contains(&target.storage_type.as_str()) {
                errors.add(
                    format!("{path}.storage_type"),
                    format!("'{}' is not one of {}", target.storage_type, STORAGE_TYPES.join(", ")),
                );
            }
            if target.iops.is_some_and(|iops| iops <= 0) {
                errors.add(format!("{path}.iops"), "must be positive");
            }
            if target.port.is_some_and(|port| !(1150..=65535).contains(&port)) {
                errors.add(format!("{path}.port"), "must be between 1150 and 65535");
            }
            check_security_groups(&path, &target.security_group_ids, errors);
            check_tags(&format!("{path}.tags"), target.tags.keys(), errors);
        }
        ResourceType::S3Bucket => {
            let path = format!("{path}.target.s3");
            let Some(target) = targets.s3 else {
                errors.add(path, "is required to restore S3 objects");
                return;
            };
            let place = Place { account_id: &target.account_id, region: &target.region, zone: None };
            check_place(&path, place, false, source_region, policy, errors);
            if target.bucket.is_empty() {
                errors.add(format!("{path}.bucket"), "is required (the bucket objects are restored to)");
            }
        }
        ResourceType::Route53Zone | ResourceType::Elbv2LoadBalancer => {
            let what = if kind == ResourceType::Route53Zone { "Route 53 zones" } else { "ELBv2 load balancers" };
            no_point_in_time_recovery(path, set, what, errors);
            let path = format!("{path}.target.config");
            let Some(target) = targets.config else {
                errors.add(path, format!("is required to restore {what} (where the exports are, and the target)"));
                return;
            };
            let place = Place { account_id: &target.account_id, region: &target.region, zone: None };
            check_place(&path, place, false, source_region, policy, errors);
            if target.bucket.is_empty() {
                errors.add(format!("{path}.bucket"), "is required (the bucket the configuration was exported to)");
            }
            if target.bucket_region.is_empty() {
                errors.add(format!("{path}.bucket_region"), "is required (the region of the exports' bucket)");
            } else if !is_region(&target.bucket_region) {
                errors.add(
                    format!("{path}.bucket_region"),
                    format!("'{}' is not an AWS region name", target.bucket_region),
                );
            }
            for (field, ids, prefix) in [
                ("subnet_map", &target.subnet_map, "subnet-"),
                ("security_group_map", &target.security_group_map, "sg-"),
                ("vpc_map", &target.vpc_map, "vpc-"),
            ] {
                for (from, to) in ids.iter().collect::<BTreeMap<_, _>>() {
                    if !from.starts_with(prefix) || !to.starts_with(prefix) {
                        errors.add(format!("{path}.{field}"), format!("'{from}={to}': both must be {prefix}... ids"));
                    }
                }
            }
        }
        other => {
            errors.add(format!("{path}.resource_types"), format!("{} has no target validation yet", other.short_name()))
        }
    }
}

/// Where a target puts the restore; empty fields fall back to the source's.
struct Place<'a> {
    account_id: &'a str,
    region: &'a str,
    zone: Option<&'a str>,
}

/// The account is a known 12-digit id, the region a region, the zone one of its zones.
fn check_place(
    path: &str,
    place: Place<'_>,
    zone_required: bool,
    source_region: &str,
    policy: &Policy,
    errors: &mut Errors,
) {
    check_account(&format!("{path}.account_id"), place.account_id, policy, errors);
    if !place.region.is_empty() && !is_region(place.region) {
        errors.add(format!("{path}.region"), format!("'{}' is not an AWS region name", place.region));
    }
    let region = if place.region.is_empty() { source_region } else { place.region };
    match place.zone {
        Some("") if zone_required => errors.add(format!("{path}.availability_zone"), "is required"),
        Some(zone) if !zone.is_empty() && !region.is_empty() && !is_zone_of(zone, region) => {
            errors.add(format!("{path}.availability_zone"), format!("'{zone}' is not a zone of {region}"))
        }
        _ => {}
    }
}

fn check_security_groups(path: &str, groups: &[String], errors: &mut Errors) {
    for (index, group) in groups.iter().enumerate() {
        if !group.starts_with("sg-") {
            errors.add(format!("{path}.security_group_ids[{index}]"), format!("'{group}' is not a security group id"));
        }
    }
}

/// Volumes and instances are restored from backups only.
fn no_point_in_time_recovery(path: &str, set: &RestoreSet, what: &str, errors: &mut Errors) {
    if set.source.as_ref().is_some_and(|s| s.point_in_time_recovery) {
        errors.add(format!("{path}.source.point_in_time_recovery"), format!("{what} have no point-in-time recovery"));
    }
}

/// Configuration exported whole to S3 (`lifeboat.work.config`) rather than backed up.
pub const CONFIG_TYPES: [ResourceType; 2] = [ResourceType::Route53Zone, ResourceType::Elbv2LoadBalancer];

/// Resource types a backup rule can select.
const BACKUP_TYPES: [ResourceType; 9] = [
    ResourceType::EbsVolume,
    ResourceType::EbsVolumeSet,
    ResourceType::Ec2Instance,
    ResourceType::RdsInstance,
    ResourceType::RdsCluster,
    ResourceType::DynamodbTable,
    ResourceType::Route53Zone,
    ResourceType::Elbv2LoadBalancer,
    ResourceType::S3Bucket,
];

/// A backup run as a message: the plan file's checks (`lifeboat backup plan validate`) again, for
/// runs published by anyone, and the run's id, which must be the one its due id gives so that a
/// due time is one run however often it is published.
fn validate_backup_run(request: &RestoreRequest, run: &BackupRun, policy: &Policy, errors: &mut Errors) {
    if !request.restore_sets.is_empty() {
        errors.add("restore_sets", "a backup run has no restore sets");
    }
    for (field, value) in [("backup_run.plan", &run.plan), ("backup_run.rule", &run.rule)] {
        if value.is_empty() {
            errors.add(field, "is required");
        }
        check_length(field, value, errors);
    }
    if run.due_id.is_empty() {
        errors.add("backup_run.due_id", "is required");
    } else if crate::backup::backup_run_id(&run.due_id) != request.request_id {
        errors.add(
            "request_id",
            format!("must be '{}', the run id of due id '{}'", crate::backup::backup_run_id(&run.due_id), run.due_id),
        );
    }
    let selection = run.selection.clone().unwrap_or_default();
    if selection.resource_types.is_empty() {
        errors.add("backup_run.selection.resource_types", "at least one resource type is required");
    }
    for (i, kind) in selection.resource_types.iter().enumerate() {
        if !ResourceType::try_from(*kind).is_ok_and(|kind| BACKUP_TYPES.contains(&kind)) {
            let names: Vec<_> = BACKUP_TYPES.iter().map(|t| t.short_name()).collect();
            errors.add(
                format!("backup_run.selection.resource_types[{i}]"),
                format!("cannot be backed up; one of {}", names.join(", ")),
            );
        }
    }
    let s3 = ResourceType::S3Bucket as i32;
    let has_s3 = selection.resource_types.contains(&s3);
    // Protection groups' buckets name their own accounts and regions, and are not selected by tags.
    let groups_only = has_s3 && selection.resource_types.iter().all(|t| *t == s3);
    if selection.regions.is_empty() && !groups_only {
        errors.add("backup_run.selection.regions", "at least one region is required");
    }
    if has_s3 {
        check_protection_groups(run, &selection, policy, errors);
    } else if !run.protection_groups.is_empty() || run.vault.is_some() {
        errors.add("backup_run.protection_groups", "applies to S3_BUCKET: the selection has no S3_BUCKET");
    }
    for (i, region) in selection.regions.iter().enumerate() {
        if !is_region(region) {
            errors.add(format!("backup_run.selection.regions[{i}]"), format!("'{region}' is not an AWS region name"));
        }
    }
    for (i, account) in selection.account_ids.iter().enumerate() {
        check_account(&format!("backup_run.selection.account_ids[{i}]"), account, policy, errors);
    }
    let is_config = |t: &i32| CONFIG_TYPES.iter().any(|c| *c as i32 == *t);
    let has_config = selection.resource_types.iter().any(is_config);
    // Configuration exports make no recovery points: no tags, retention or copies apply.
    let config_only = has_config && selection.resource_types.iter().all(is_config);
    if has_config {
        check_config_export(run, &selection.regions, errors);
    } else if run.config_export.is_some() {
        errors.add(
            "backup_run.config_export",
            "applies to ROUTE53_ZONE and ELBV2_LOAD_BALANCER: the selection has neither",
        );
    }
    if selection.include_tags.is_empty() && !selection.all_resources && !config_only && !groups_only {
        errors.add(
            "backup_run.selection.all_resources",
            "a selection without include tags backs up every resource: set all_resources to say so",
        );
    }
    let lock = run.lock.clone().unwrap_or_default();
    if !["", "NONE", "GOVERNANCE", "COMPLIANCE"].contains(&lock.mode.as_str()) {
        errors.add("backup_run.lock.mode", format!("'{}' is not NONE, GOVERNANCE or COMPLIANCE", lock.mode));
    }
    let destinations = run.copy_to.iter().enumerate().map(|(i, d)| (format!("backup_run.copy_to[{i}]"), d));
    for (field, destination) in destinations {
        if !is_region(&destination.region) {
            errors.add(format!("{field}.region"), format!("'{}' is not an AWS region name", destination.region));
        }
        check_account(&format!("{field}.account_id"), &destination.account_id, policy, errors);
        check_retention(&format!("{field}.retention"), destination.retention.as_ref(), &lock, errors);
    }
    if !config_only {
        check_retention("backup_run.retention", run.retention.as_ref(), &lock, errors);
    } else if !run.copy_to.is_empty() {
        errors.add("backup_run.copy_to", "does not apply to configuration exports (they go to config_export.bucket)");
    }
}

/// The protection groups the selection names, each with buckets in regions, and the vault.
fn check_protection_groups(
    run: &BackupRun,
    selection: &lifeboat_proto::BackupSelection,
    policy: &Policy,
    errors: &mut Errors,
) {
    if run.protection_groups.is_empty() {
        errors.add("backup_run.protection_groups", "at least one protection group is required with S3_BUCKET");
    }
    for (i, group) in run.protection_groups.iter().enumerate() {
        let field = format!("backup_run.protection_groups[{i}]");
        if group.name.is_empty() || group.name.contains('/') {
            errors.add(format!("{field}.name"), "is required, without `/`");
        }
        check_length(&format!("{field}.name"), &group.name, errors);
        if group.buckets.is_empty() {
            errors.add(format!("{field}.buckets"), "at least one bucket is required");
        }
        for (j, bucket) in group.buckets.iter().enumerate() {
            let field = format!("{field}.buckets[{j}]");
            if bucket.bucket.is_empty() {
                errors.add(format!("{field}.bucket"), "is required");
            }
            check_length(&format!("{field}.bucket"), &bucket.bucket, errors);
            if !is_region(&bucket.region) {
                errors.add(format!("{field}.region"), format!("'{}' is not an AWS region name", bucket.region));
            }
            check_account(&format!("{field}.account_id"), &bucket.account_id, policy, errors);
        }
    }
    for (i, name) in selection.protection_groups.iter().enumerate() {
        if !run.protection_groups.iter().any(|g| g.name == *name) {
            errors.add(
                format!("backup_run.selection.protection_groups[{i}]"),
                format!("'{name}' is not one of backup_run.protection_groups"),
            );
        }
    }
    let Some(vault) = &run.vault else {
        errors.add("backup_run.vault", "is required with S3_BUCKET (bucket, region)");
        return;
    };
    if vault.bucket.is_empty() {
        errors.add("backup_run.vault.bucket", "is required");
    }
    check_length("backup_run.vault.bucket", &vault.bucket, errors);
    check_length("backup_run.vault.prefix", &vault.prefix, errors);
    if !is_region(&vault.region) {
        errors.add("backup_run.vault.region", format!("'{}' is not an AWS region name", vault.region));
    }
    check_account("backup_run.vault.account_id", &vault.account_id, policy, errors);
}

/// The bucket configuration exports go to: named, in a region, and not one the run exports.
fn check_config_export(run: &BackupRun, regions: &[String], errors: &mut Errors) {
    let Some(export) = &run.config_export else {
        errors.add("backup_run.config_export", "is required with ROUTE53_ZONE or ELBV2_LOAD_BALANCER (bucket, region)");
        return;
    };
    if export.bucket.is_empty() {
        errors.add("backup_run.config_export.bucket", "is required");
    }
    check_length("backup_run.config_export.bucket", &export.bucket, errors);
    check_length("backup_run.config_export.prefix", &export.prefix, errors);
    if !is_region(&export.region) {
        errors.add("backup_run.config_export.region", format!("'{}' is not an AWS region name", export.region));
    } else if regions.iter().any(|r| *r == export.region) {
        errors.add(
            "backup_run.config_export.region",
            format!("'{}' is a region the run exports: exports go to S3 in another region", export.region),
        );
    }
}

/// A retention keeps points for some time, and a `days` retention lies within the lock's bounds
/// (keep-last-N ones are checked against them by the plan's validation, which knows its tiers).
fn check_retention(field: &str, retention: Option<&Retention>, lock: &RecoveryLock, errors: &mut Errors) {
    let Some(retention) = retention else {
        errors.add(field, "is required");
        return;
    };
    let keeps = retention.keep_daily + retention.keep_weekly + retention.keep_monthly + retention.keep_yearly;
    if retention.days == 0 && keeps == 0 {
        errors.add(field, "keeps nothing: give days or a keep count");
    }
    if retention.days > 0 && !lock.mode.is_empty() && lock.mode != "NONE" {
        if lock.min_retention_days > 0 && retention.days < lock.min_retention_days {
            errors.add(
                format!("{field}.days"),
                format!("{} days is less than the lock's minimum of {}", retention.days, lock.min_retention_days),
            );
        }
        if lock.max_retention_days > 0 && retention.days > lock.max_retention_days {
            errors.add(
                format!("{field}.days"),
                format!("{} days is more than the lock's maximum of {}", retention.days, lock.max_retention_days),
            );
        }
    }
}

fn check_account(field: &str, account_id: &str, policy: &Policy, errors: &mut Errors) {
    if account_id.is_empty() {
        return;
    }
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        errors.add(field, format!("'{account_id}' is not a 12-digit AWS account id"));
    } else if !policy.allowed_accounts.is_empty() && !policy.allowed_accounts.iter().any(|a| a == account_id) {
        errors.add(field, format!("account {account_id} is not one Lifeboat is configured for"));
    }
}

/// Strings stay short enough for AWS names, tags and status tables.
fn check_length(field: &str, value: &str, errors: &mut Errors) {
    if value.len() > MAX_STRING {
        errors.add(field, format!("'{}...' is longer than {MAX_STRING} bytes", truncated(value, 32)));
    }
}

/// At most `bytes` of `value`, cut at a character boundary.
fn truncated(value: &str, bytes: usize) -> &str {
    let mut end = bytes.min(value.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn check_tags<'a>(field: &str, keys: impl ExactSizeIterator<Item = &'a String>, errors: &mut Errors) {
    if keys.len() > MAX_TAGS {
        errors.add(field, format!("{} tags, more than {MAX_TAGS}", keys.len()));
    }
    // In key order, as the source's tags.
    for key in keys.collect::<BTreeSet<_>>() {
        check_length(field, key, errors);
        if key.is_empty() {
            errors.add(field, "tag keys must not be empty");
        } else if key.starts_with("aws:") {
            errors.add(field, format!("tag key '{key}' uses the reserved aws: prefix"));
        } else if key.starts_with("lifeboat:") {
            errors.add(field, format!("tag key '{key}' uses the lifeboat: prefix Lifeboat sets itself"));
        }
    }
}

/// RDS instance and cluster identifiers.
pub fn is_rds_identifier(id: &str) -> bool {
    id.len() <= 63
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && !id.ends_with('-')
        && !id.contains("--")
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`...
pub fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// `us-east-1a` is a zone of `us-east-1` (also local zones such as `us-west-2-lax-1a`).
pub fn is_zone_of(zone: &str, region: &str) -> bool {
    zone.len() > region.len() && zone.starts_with(region) && zone.as_bytes()[region.len()].is_ascii_lowercase()
        || zone.starts_with(&format!("{region}-"))
}
