//! Clumio bulk restore input, converted to a `RestoreRequest`, so that existing Clumio restore
//! runbooks can be submitted to Lifeboat unchanged.
//!
//! Accepted shapes: `{"RestoreGroups": [group, ...], "DefaultInput": {...}}`, or one group's
//! fields at the top level. `DefaultInput` fills every field a group leaves empty (`""`, `null`,
//! missing, or Clumio's `"[This field will follow default input]"`). A group becomes one restore
//! set; its time rule follows Clumio's day offsets:
//!
//! | Clumio | Lifeboat |
//! |---|---|
//! | `search_direction: before`, `end_search_day_offset: N` | newest backup at or before 23:59:59 UTC N days ago |
//! | `search_direction: after`, `start_search_day_offset: N` | oldest backup at or after 00:00 UTC N days ago |
//! | `search_tag_key` + `search_tag_value` | `source.tags` |
//! | `source_account`, `source_region` | `source.account_id`, `source.region` |
//! | `target_account`, `target_region` | the target's `account_id`, `region` |
//! | EBS `target_az`, `target_volume_type`, `target_iops`, `target_kms_key_native_id` | `target.ebs.*` |
//! | EC2 `target_az`, `target_vpc_native_id`, `target_subnet_native_id`, `target_security_group_native_ids`, `target_key_pair_name`, `target_iam_instance_profile_name`, `target_kms_key_native_id` | `target.ec2.*` |
//! | RDS `target_subnet_group_name`, `target_rds_name`, `target_security_group_native_ids`, `target_kms_key_native_id` | `target.rds.*` |
//! | DynamoDB `change_set_name`, `target_kms_key_native_id` | `target.dynamodb.name_suffix`, `kms_key_id` |
//!
//! Unlike Clumio, which restores the first matching backup of a group, Lifeboat restores every
//! matching resource. `clumio_token`, `base_url` and `debug` are accepted and ignored.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use lifeboat_proto as pb;
use serde_json::{Map, Value};

use crate::request_file::RequestFileError;

/// Clumio's placeholder for "take this from DefaultInput".
const FOLLOW_DEFAULT_INPUT: &str = "[This field will follow default input]";

/// Top-level fields that configure Clumio itself, not a restore.
const CLUMIO_SETTINGS: &[&str] = &["clumio_token", "base_url", "debug"];

const SOURCE_FIELDS: &[&str] = &[
    "ResourceType",
    "name",
    "source_account",
    "source_region",
    "search_direction",
    "search_tag_key",
    "search_tag_value",
    "start_search_day_offset",
    "end_search_day_offset",
    "target_account",
    "target_region",
    "target_kms_key_native_id",
];

/// Target fields per Clumio resource type (beyond the common ones above), and which are required.
fn target_fields(resource_type: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match resource_type {
        "EBS" => (&["target_az", "target_iops", "target_volume_type"], &["target_az"]),
        "EC2" => (
            &[
                "target_az",
                "target_vpc_native_id",
                "target_subnet_native_id",
                "target_security_group_native_ids",
                "target_security_group_native_id",
                "target_key_pair_name",
                "target_iam_instance_profile_name",
            ],
            &["target_az", "target_vpc_native_id", "target_subnet_native_id"],
        ),
        "RDS" => (
            &[
                "target_subnet_group_name",
                "target_rds_name",
                "target_security_group_native_ids",
                "target_security_group_native_id",
            ],
            &["target_subnet_group_name", "target_rds_name"],
        ),
        "DynamoDB" => (&["change_set_name"], &["change_set_name"]),
        _ => return None,
    })
}

/// True when the document is Clumio input rather than a Lifeboat request file.
pub fn is_clumio(document: &Value) -> bool {
    document.as_object().is_some_and(|o| {
        o.contains_key("RestoreGroups") || o.contains_key("DefaultInput") || o.contains_key("source_account")
    })
}

fn error(field: impl Into<String>, message: impl Into<String>) -> RequestFileError {
    RequestFileError::Field { field: field.into(), message: message.into() }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty() || s == FOLLOW_DEFAULT_INPUT,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// A group with DefaultInput merged in, read field by field with its path for errors.
struct Group {
    path: String,
    fields: Map<String, Value>,
}

impl Group {
    fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !is_empty(v))
    }

    fn string(&self, name: &str) -> Result<String, RequestFileError> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(error(self.field(name), format!("expected a string, not {other}"))),
        }
    }

    fn required(&self, name: &str, resource_type: &str) -> Result<String, RequestFileError> {
        let value = self.string(name)?;
        if value.is_empty() {
            return Err(error(self.field(name), format!("is required to restore {resource_type}")));
        }
        Ok(value)
    }

    /// Numbers may be given as numbers or strings, as Clumio's examples do.
    fn number(&self, name: &str) -> Result<Option<i64>, RequestFileError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                n.as_i64().map(Some).ok_or_else(|| error(self.field(name), "must be a whole number"))
            }
            Some(Value::String(s)) => {
                s.trim().parse().map(Some).map_err(|_| error(self.field(name), format!("'{s}' is not a whole number")))
            }
            Some(other) => Err(error(self.field(name), format!("expected a number, not {other}"))),
        }
    }

    fn strings(&self, names: &[&str]) -> Result<Vec<String>, RequestFileError> {
        let mut all = Vec::new();
        for name in names {
            match self.get(name) {
                None => {}
                Some(Value::String(s)) => {
                    all.extend(s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from))
                }
                Some(Value::Array(items)) => {
                    for item in items {
                        let Some(s) = item.as_str() else {
                            return Err(error(self.field(name), format!("expected strings, found {item}")));
                        };
                        all.push(s.to_string());
                    }
                }
                Some(other) => return Err(error(self.field(name), format!("expected a list of strings, not {other}"))),
            }
        }
        Ok(all)
    }

    fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }
}

/// Converts Clumio input to a request; `now` anchors the day offsets.
pub fn convert(
    document: &Value,
    request_id: String,
    now: DateTime<Utc>,
) -> Result<pb::RestoreRequest, RequestFileError> {
    let top = document.as_object().ok_or_else(|| error("<document>", "Clumio input must be a JSON object"))?;
    let defaults = match top.get("DefaultInput") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(defaults)) => defaults.clone(),
        Some(_) => return Err(error("DefaultInput", "must be an object")),
    };
    check_known(&defaults, "DefaultInput", None)?;
    let groups: Vec<(String, Map<String, Value>)> = match top.get("RestoreGroups") {
        Some(Value::Array(groups)) => {
            for key in top.keys() {
                if !matches!(key.as_str(), "RestoreGroups" | "DefaultInput") && !CLUMIO_SETTINGS.contains(&key.as_str())
                {
                    return Err(error(key.clone(), "unknown field next to RestoreGroups"));
                }
            }
            let mut out = Vec::new();
            for (index, group) in groups.iter().enumerate() {
                let path = format!("RestoreGroups[{index}]");
                let fields = group.as_object().ok_or_else(|| error(path.clone(), "must be an object"))?;
                out.push((path, fields.clone()));
            }
            out
        }
        Some(_) => return Err(error("RestoreGroups", "must be a list")),
        // The flat form: one group's fields at the top level.
        None => {
            let fields: Map<String, Value> = top
                .iter()
                .filter(|(k, _)| k.as_str() != "DefaultInput" && !CLUMIO_SETTINGS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            vec![(String::new(), fields)]
        }
    };
    if groups.is_empty() {
        return Err(error("RestoreGroups", "at least one restore group is required"));
    }
    let mut sets = Vec::new();
    for (index, (path, fields)) in groups.into_iter().enumerate() {
        let mut merged = defaults.clone();
        for (key, value) in fields {
            if !is_empty(&value) || !merged.contains_key(&key) {
                merged.insert(key, value);
            }
        }
        sets.push(convert_group(Group { path, fields: merged }, index, now)?);
    }
    Ok(pb::RestoreRequest {
        request_id,
        restore_sets: sets,
        dry_run: false,
        options: Some(pb::RestoreOptions::default()),
        submitted_at: Some(lifeboat_common::time::to_timestamp(now)),
        requested_by: std::env::var("USER").unwrap_or_default(),
    })
}

/// Every field must be one Clumio defines (for the group's type, when it is known).
fn check_known(fields: &Map<String, Value>, path: &str, resource_type: Option<&str>) -> Result<(), RequestFileError> {
    let all_types = ["EBS", "EC2", "RDS", "DynamoDB"];
    for key in fields.keys() {
        let known_somewhere = SOURCE_FIELDS.contains(&key.as_str())
            || all_types.iter().filter_map(|t| target_fields(t)).any(|(fields, _)| fields.contains(&key.as_str()));
        let field = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        if !known_somewhere {
            return Err(error(field, "unknown field"));
        }
        if let Some((fields_of_type, _)) = resource_type.and_then(target_fields) {
            let applies = SOURCE_FIELDS.contains(&key.as_str()) || fields_of_type.contains(&key.as_str());
            if !applies && !is_empty(&fields[key]) {
                return Err(error(field, format!("does not apply to {} restores", resource_type.unwrap_or_default())));
            }
        }
    }
    Ok(())
}

fn convert_group(group: Group, index: usize, now: DateTime<Utc>) -> Result<pb::RestoreSet, RequestFileError> {
    let resource_type = group.string("ResourceType")?;
    if resource_type.is_empty() {
        return Err(error(group.field("ResourceType"), "is required (EBS, EC2, RDS or DynamoDB)"));
    }
    let Some((_, required)) = target_fields(&resource_type) else {
        let message = if resource_type == "ProtectionGroup" {
            "ProtectionGroup (S3) restores are not supported by Lifeboat's Clumio input yet".to_string()
        } else {
            format!("unknown resource type '{resource_type}' (EBS, EC2, RDS or DynamoDB)")
        };
        return Err(error(group.field("ResourceType"), message));
    };
    check_known(&group.fields, &group.path, Some(&resource_type))?;
    for name in required {
        group.required(name, &resource_type)?;
    }

    let mut tags = HashMap::new();
    let tag_key = group.string("search_tag_key")?;
    if !tag_key.is_empty() {
        tags.insert(tag_key, group.string("search_tag_value")?);
    } else if !group.string("search_tag_value")?.is_empty() {
        return Err(error(group.field("search_tag_key"), "is required with search_tag_value"));
    }
    let day = |offset: i64| now.date_naive() - Duration::days(offset);
    let direction = group.string("search_direction")?.to_ascii_lowercase();
    let point = match direction.as_str() {
        "" | "before" => {
            let end = group.number("end_search_day_offset")?.unwrap_or(0);
            pb::PointInTime {
                time: Some(lifeboat_common::time::to_timestamp(
                    day(end).and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default()).and_utc(),
                )),
                direction: pb::SearchDirection::Before as i32,
                until: None,
            }
        }
        "after" => {
            let start = group.number("start_search_day_offset")?.unwrap_or(1);
            pb::PointInTime {
                time: Some(lifeboat_common::time::to_timestamp(day(start).and_time(NaiveTime::MIN).and_utc())),
                direction: pb::SearchDirection::After as i32,
                until: None,
            }
        }
        other => return Err(error(group.field("search_direction"), format!("'{other}' is not before or after"))),
    };

    let account_id = group.string("target_account")?;
    let region = group.string("target_region")?;
    let kms_key_id = group.string("target_kms_key_native_id")?;
    let security_groups = || group.strings(&["target_security_group_native_ids", "target_security_group_native_id"]);
    let (resource_types, target) = match resource_type.as_str() {
        "EBS" => {
            let iops = group.number("target_iops")?.map(|n| n as i32);
            let ebs = pb::EbsTarget {
                account_id,
                region,
                availability_zone: group.string("target_az")?,
                volume_type: group.string("target_volume_type")?,
                iops,
                kms_key_id,
                ..Default::default()
            };
            (vec![pb::ResourceType::EbsVolume], pb::Targets { ebs: Some(ebs), ..Default::default() })
        }
        "EC2" => {
            let ec2 = pb::Ec2Target {
                account_id,
                region,
                availability_zone: group.string("target_az")?,
                vpc_id: group.string("target_vpc_native_id")?,
                subnet_id: group.string("target_subnet_native_id")?,
                security_group_ids: security_groups()?,
                key_pair_name: group.string("target_key_pair_name")?,
                iam_instance_profile: group.string("target_iam_instance_profile_name")?,
                kms_key_id,
                ..Default::default()
            };
            (vec![pb::ResourceType::Ec2Instance], pb::Targets { ec2: Some(ec2), ..Default::default() })
        }
        "RDS" => {
            let rds = pb::RdsTarget {
                account_id,
                region,
                db_subnet_group: group.string("target_subnet_group_name")?,
                name: group.string("target_rds_name")?,
                security_group_ids: security_groups()?,
                kms_key_id,
                ..Default::default()
            };
            (
                vec![pb::ResourceType::RdsInstance, pb::ResourceType::RdsCluster],
                pb::Targets { rds: Some(rds), ..Default::default() },
            )
        }
        _ => {
            let dynamodb = pb::DynamoDbTarget {
                account_id,
                region,
                name_suffix: group.string("change_set_name")?,
                kms_key_id,
                ..Default::default()
            };
            (vec![pb::ResourceType::DynamodbTable], pb::Targets { dynamodb: Some(dynamodb), ..Default::default() })
        }
    };
    let name = group.string("name")?;
    Ok(pb::RestoreSet {
        name: if name.is_empty() { format!("{}-{index}", resource_type.to_ascii_lowercase()) } else { name },
        source: Some(pb::Source {
            account_id: group.string("source_account")?,
            region: group.string("source_region")?,
            tags,
            selection: Some(pb::source::Selection::PointInTime(point)),
            point_in_time_recovery: false,
            ..Default::default()
        }),
        resource_types: resource_types.into_iter().map(|t| t as i32).collect(),
        target: Some(target),
        ..Default::default()
    })
}
