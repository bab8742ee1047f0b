//! The source settings a restore carries over: captured by discovery into `Backup.settings`
//! (keys in `lifeboat_common::settings::rds`), overridden by the target, checked
//! against the target account and region, and compared with what RDS restored. Whatever cannot
//! be applied is named, never dropped silently.

use std::collections::HashMap;

use aws_sdk_rds::types::{DbCluster, DbInstance};
use lifeboat_common::aws::{absent_if_not_found, classify, AwsError};
use lifeboat_proto::{Backup, RdsTarget};

pub use lifeboat_common::settings::rds::*;

/// On the restored database: the settings (space-separated names) that could not be applied
/// when the restore started, so that the final step reports them.
pub const TAG_NOT_RESTORED: &str = "lifeboat:settings-not-restored";

/// What a restore call asks for. `None` leaves RDS's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub db_parameter_group: Option<String>,
    pub db_cluster_parameter_group: Option<String>,
    pub option_group: Option<String>,
    pub multi_az: Option<bool>,
    pub storage_type: Option<String>,
    pub iops: Option<i32>,
    pub storage_throughput: Option<i32>,
    pub port: Option<i32>,
    pub deletion_protection: Option<bool>,
    pub iam_auth: Option<bool>,
    pub copy_tags_to_snapshot: Option<bool>,
    pub log_exports: Option<Vec<String>>,
    pub db_subnet_group: Option<String>,
    pub security_group_ids: Option<Vec<String>>,
    pub availability_zone: Option<String>,
    pub instance_class: Option<String>,
    /// Source settings that cannot be applied, by name.
    pub not_applied: Vec<String>,
}

fn text(settings: &HashMap<String, String>, key: &str) -> Option<String> {
    settings.get(key).filter(|v| !v.is_empty()).cloned()
}

fn flag(settings: &HashMap<String, String>, key: &str) -> Option<bool> {
    settings.get(key).map(|v| v == "true")
}

fn number(settings: &HashMap<String, String>, key: &str) -> Option<i32> {
    settings.get(key).and_then(|v| v.parse().ok())
}

fn or_source(over: &str, settings: &HashMap<String, String>, key: &str) -> Option<String> {
    if over.is_empty() {
        text(settings, key)
    } else {
        Some(over.to_string())
    }
}

/// The target's group, else the source's unless it is a default one: RDS gives the engine's
/// default group anyway, and its name differs between engine versions.
fn group_or_source(over: &str, settings: &HashMap<String, String>, key: &str) -> Option<String> {
    if over.is_empty() {
        text(settings, key).filter(|g| !is_default_group(g))
    } else {
        Some(over.to_string())
    }
}

/// Groups named `default.*` / `default:*` exist in every account and region.
fn is_default_group(name: &str) -> bool {
    name.starts_with("default.") || name.starts_with("default:") || name == "default"
}

async fn parameter_group_exists(rds: &aws_sdk_rds::Client, name: &str) -> Result<bool, AwsError> {
    let found = rds.describe_db_parameter_groups().db_parameter_group_name(name).send().await;
    let found = absent_if_not_found(
        found.map_err(|e| classify("rds:DescribeDBParameterGroups", e)),
        &["DBParameterGroupNotFound", "DBParameterGroupNotFoundFault"],
    )?;
    Ok(found.is_some_and(|f| !f.db_parameter_groups().is_empty()))
}

async fn cluster_parameter_group_exists(rds: &aws_sdk_rds::Client, name: &str) -> Result<bool, AwsError> {
    let found = rds.describe_db_cluster_parameter_groups().db_cluster_parameter_group_name(name).send().await;
    let found = absent_if_not_found(
        found.map_err(|e| classify("rds:DescribeDBClusterParameterGroups", e)),
        &["DBParameterGroupNotFound", "DBParameterGroupNotFoundFault", "DBClusterParameterGroupNotFound"],
    )?;
    Ok(found.is_some_and(|f| !f.db_cluster_parameter_groups().is_empty()))
}

async fn option_group_exists(rds: &aws_sdk_rds::Client, name: &str) -> Result<bool, AwsError> {
    let found = rds.describe_option_groups().option_group_name(name).send().await;
    let found = absent_if_not_found(
        found.map_err(|e| classify("rds:DescribeOptionGroups", e)),
        &["OptionGroupNotFoundFault", "OptionGroupNotFound"],
    )?;
    Ok(found.is_some_and(|f| !f.option_groups_list().is_empty()))
}

/// What to ask for: the target's overrides, else the source's settings, before checking that
/// the source's groups exist where the restore goes.
pub fn asked(backup: &Backup, target: &RdsTarget, cluster: bool) -> Wanted {
    let s = &backup.settings;
    let mut wanted = Wanted {
        db_parameter_group: group_or_source(&target.db_parameter_group, s, DB_PARAMETER_GROUP),
        db_cluster_parameter_group: if cluster {
            group_or_source(&target.db_cluster_parameter_group, s, DB_CLUSTER_PARAMETER_GROUP)
        } else {
            None
        },
        option_group: if cluster { None } else { group_or_source(&target.option_group, s, OPTION_GROUP) },
        multi_az: if cluster { None } else { target.multi_az.or(flag(s, MULTI_AZ)) },
        storage_type: if cluster { None } else { or_source(&target.storage_type, s, STORAGE_TYPE) },
        iops: if cluster { None } else { target.iops.or(number(s, IOPS)) },
        storage_throughput: if cluster { None } else { number(s, STORAGE_THROUGHPUT) },
        port: target.port.or(number(s, PORT)),
        deletion_protection: flag(s, DELETION_PROTECTION),
        iam_auth: flag(s, IAM_AUTH),
        copy_tags_to_snapshot: flag(s, COPY_TAGS_TO_SNAPSHOT),
        log_exports: text(s, LOG_EXPORTS).map(|v| v.split(',').map(str::to_string).collect()),
        db_subnet_group: (!target.db_subnet_group.is_empty()).then(|| target.db_subnet_group.clone()),
        security_group_ids: (!target.security_group_ids.is_empty()).then(|| target.security_group_ids.clone()),
        availability_zone: (!target.availability_zone.is_empty()).then(|| target.availability_zone.clone()),
        instance_class: if target.instance_class.is_empty() {
            text(s, if cluster { WRITER_INSTANCE_CLASS } else { "instance_class" })
        } else {
            Some(target.instance_class.clone())
        },
        not_applied: Vec::new(),
    };
    // Storage throughput only goes with gp3; iops not with gp2 or magnetic storage.
    if wanted.storage_type.as_deref() != Some("gp3") {
        wanted.storage_throughput = None;
    }
    if matches!(wanted.storage_type.as_deref(), Some("gp2") | Some("standard")) {
        wanted.iops = None;
    }
    // A Multi-AZ instance is placed by RDS; a zone cannot be given with it.
    if wanted.multi_az == Some(true) {
        wanted.availability_zone = None;
    }
    wanted
}

/// [`asked`], less the source's custom groups that do not exist where the restore goes (named
/// in `not_applied`); a group the target names is passed as it is (RDS's error then names it).
pub async fn checked(
    rds: &aws_sdk_rds::Client,
    backup: &Backup,
    target: &RdsTarget,
    cluster: bool,
) -> Result<Wanted, AwsError> {
    let mut wanted = asked(backup, target, cluster);
    if wanted.db_subnet_group.is_none() {
        wanted.not_applied.push(DB_SUBNET_GROUP.to_string());
    }
    let from_source =
        |over: &str, group: &Option<String>| group.clone().filter(|g| over.is_empty() && !is_default_group(g));
    if let Some(group) = from_source(&target.db_parameter_group, &wanted.db_parameter_group) {
        if !parameter_group_exists(rds, &group).await? {
            wanted.db_parameter_group = None;
            wanted.not_applied.push(DB_PARAMETER_GROUP.to_string());
        }
    }
    if let Some(group) = from_source(&target.option_group, &wanted.option_group) {
        if !option_group_exists(rds, &group).await? {
            wanted.option_group = None;
            wanted.not_applied.push(OPTION_GROUP.to_string());
        }
    }
    if let Some(group) = from_source(&target.db_cluster_parameter_group, &wanted.db_cluster_parameter_group) {
        if !cluster_parameter_group_exists(rds, &group).await? {
            wanted.db_cluster_parameter_group = None;
            wanted.not_applied.push(DB_CLUSTER_PARAMETER_GROUP.to_string());
        }
    }
    Ok(wanted)
}

/// What was asked for when the restore started, less what its tag says was left out.
pub fn restarted(backup: &Backup, target: &RdsTarget, cluster: bool, tag: Option<&str>) -> Wanted {
    let mut wanted = asked(backup, target, cluster);
    for name in tag.unwrap_or_default().split_whitespace() {
        match name {
            DB_PARAMETER_GROUP => wanted.db_parameter_group = None,
            OPTION_GROUP => wanted.option_group = None,
            DB_CLUSTER_PARAMETER_GROUP => wanted.db_cluster_parameter_group = None,
            _ => {}
        }
    }
    wanted
}

/// The value of the not-restored tag in a tag list.
pub fn not_restored_tag(tags: &[aws_sdk_rds::types::Tag]) -> Option<&str> {
    tags.iter().find(|t| t.key() == Some(TAG_NOT_RESTORED)).and_then(|t| t.value())
}

/// The tag value recording `not_applied` (RDS tag values allow letters, digits, `_` and spaces).
pub fn not_applied_tag(wanted: &Wanted) -> Option<String> {
    (!wanted.not_applied.is_empty()).then(|| wanted.not_applied.join(" "))
}

/// One warning per setting named in the restored resource's tag.
fn recorded(tag: Option<&str>, backup: &Backup) -> Vec<String> {
    tag.unwrap_or_default()
        .split_whitespace()
        .map(|name| match name {
            DB_SUBNET_GROUP => "db_subnet_group (the source's is unknown; restored into the default VPC)".to_string(),
            other => match backup.settings.get(other) {
                Some(value) => format!("{other} ({value} does not exist in the target account and region)"),
                None => other.to_string(),
            },
        })
        .collect()
}

fn compare<T: PartialEq + std::fmt::Debug>(warnings: &mut Vec<String>, name: &str, wanted: Option<T>, got: Option<T>) {
    if let Some(wanted) = wanted {
        if got.as_ref() != Some(&wanted) {
            warnings.push(format!("{name} (asked for {wanted:?}, restored with {got:?})"));
        }
    }
}

/// What the restored instance lacks of what was asked for, and what could not be asked for.
pub fn instance_warnings(db: &DbInstance, wanted: &Wanted, backup: &Backup) -> Vec<String> {
    let tag = not_restored_tag(db.tag_list());
    let mut warnings = recorded(tag, backup);
    let group = db.db_parameter_groups().first().and_then(|g| g.db_parameter_group_name()).map(str::to_string);
    compare(&mut warnings, DB_PARAMETER_GROUP, wanted.db_parameter_group.clone(), group);
    let option = db.option_group_memberships().first().and_then(|g| g.option_group_name()).map(str::to_string);
    compare(&mut warnings, OPTION_GROUP, wanted.option_group.clone(), option);
    compare(&mut warnings, MULTI_AZ, wanted.multi_az, db.multi_az());
    compare(&mut warnings, STORAGE_TYPE, wanted.storage_type.clone(), db.storage_type().map(str::to_string));
    compare(&mut warnings, IOPS, wanted.iops, db.iops());
    compare(&mut warnings, STORAGE_THROUGHPUT, wanted.storage_throughput, db.storage_throughput());
    compare(&mut warnings, PORT, wanted.port, db.endpoint().and_then(|e| e.port()).or(db.db_instance_port()));
    compare(&mut warnings, DELETION_PROTECTION, wanted.deletion_protection, db.deletion_protection());
    compare(&mut warnings, IAM_AUTH, wanted.iam_auth, db.iam_database_authentication_enabled());
    compare(&mut warnings, COPY_TAGS_TO_SNAPSHOT, wanted.copy_tags_to_snapshot, db.copy_tags_to_snapshot());
    let mut exports = db.enabled_cloudwatch_logs_exports().to_vec();
    exports.sort();
    let asked = wanted.log_exports.clone().map(|mut v| {
        v.sort();
        v
    });
    compare(&mut warnings, LOG_EXPORTS, asked, Some(exports));
    warnings
}

/// The same for a restored Aurora cluster.
pub fn cluster_warnings(cluster: &DbCluster, wanted: &Wanted, backup: &Backup) -> Vec<String> {
    let tag = not_restored_tag(cluster.tag_list());
    let mut warnings = recorded(tag, backup);
    let group = cluster.db_cluster_parameter_group().map(str::to_string);
    compare(&mut warnings, DB_CLUSTER_PARAMETER_GROUP, wanted.db_cluster_parameter_group.clone(), group);
    compare(&mut warnings, PORT, wanted.port, cluster.port());
    compare(&mut warnings, DELETION_PROTECTION, wanted.deletion_protection, cluster.deletion_protection());
    compare(&mut warnings, IAM_AUTH, wanted.iam_auth, cluster.iam_database_authentication_enabled());
    compare(&mut warnings, COPY_TAGS_TO_SNAPSHOT, wanted.copy_tags_to_snapshot, cluster.copy_tags_to_snapshot());
    let mut exports = cluster.enabled_cloudwatch_logs_exports().to_vec();
    exports.sort();
    let asked = wanted.log_exports.clone().map(|mut v| {
        v.sort();
        v
    });
    compare(&mut warnings, LOG_EXPORTS, asked, Some(exports));
    warnings
}
