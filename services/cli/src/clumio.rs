//! Clumio bulk restore input, converted to a `RestoreRequest`, so that existing Clumio restore
//! runbooks (clumio-code/bulk_restore) can be submitted to Lifeboat unchanged.
//!
//! Accepted shapes: `{"RestoreGroups": [group, ...], "DefaultInput": {...}}`, or one group's
//! fields at the top level (the first published example, whose type is then read from its
//! fields). `DefaultInput` is flat (`{"source_account": ...}`, for every group) or keyed by
//! resource type (`{"EBS": {...}, "RDS": {...}}`, Clumio's current `validate_input`), or both.
//! A group's own value wins, then its type's default, then the flat default; a field a group
//! gives empty (`""`, `null`, `[]`, `{}` or Clumio's `"[This field will follow default input]"`)
//! while its DefaultInput also has it empty is an error naming the field, as in Clumio.
//!
//! A group becomes one restore set. Clumio searches backups with `start < time ≤ end`, start
//! being 00:00:00 UTC `start_search_day_offset` days ago and end 23:59:59 UTC
//! `end_search_day_offset` days ago (Clumio's backup times are whole seconds):
//!
//! | Clumio | Lifeboat |
//! |---|---|
//! | `search_direction: before` | newest backup at or before end |
//! | `search_direction: after`, start ≤ end | oldest backup in [start + 1 s, end] (`PointInTime.until`) |
//! | `search_direction: after`, end before start | oldest backup at or after start + 1 s (Clumio finds nothing) |
//! | no `search_direction` | newest backup at or before end |
//! | `search_tag_key` + `search_tag_value` | `source.tags` |
//! | `search_volume_id`, `search_instance_id`, `search_resource_id`, `search_table_id` | `source.names`; a Clumio asset id (a UUID) is ignored |
//! | `source_account`, `source_region` | `source.account_id`, `source.region` |
//! | `target_account`, `target_region` | the target's `account_id`, `region` |
//! | `target_role_arn` | `target_role_arn`, the role assumed in the target account |
//! | EBS `target_aws_az` / `target_az`, `target_volume_type`, `target_iops`, `target_kms_key_native_id`, `target_volume_tags` | `target.ebs.*` |
//! | EC2 `target_aws_az` / `target_az`, `target_vpc_native_id`, `target_subnet_native_id`, `target_security_group_native_ids`, `target_key_pair_name`, `target_iam_instance_profile_name`, `target_kms_key_native_id`, `target_instance_tags` + `target_volume_tags`, `should_power_on` | `target.ec2.*` (`leave_stopped` = not `should_power_on`) |
//! | RDS `target_subnet_group_name`, `target_rds_name`, `target_security_group_native_ids`, `target_kms_key_native_id`, `target_resource_tags` | `target.rds.*` |
//! | DynamoDB `change_set_name`, `target_kms_key_native_id` | `target.dynamodb.name_suffix`, `kms_key_id` |
//! | ProtectionGroup `search_pg_name`, `search_bucket_names`, `search_object_filters`, `target_bucket`, `target_prefix` | `target.s3.*`, resource type S3 |
//!
//! Unlike Clumio, which restores the first matching backup of a group, Lifeboat restores every
//! matching resource. `clumio_token`, `bear`, `base_url` and `debug` are accepted and ignored, as
//! are EC2's `target_ami_native_id` (Lifeboat boots the restored instance from its backup AMI)
//! and `target_eni_cfg_from_backup` (Lifeboat makes a new interface in the target subnet).

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use lifeboat_proto as pb;
use serde_json::{Map, Value};

use crate::request_file::RequestFileError;

/// Clumio's placeholder for "take this from DefaultInput".
const FOLLOW_DEFAULT_INPUT: &str = "[This field will follow default input]";

/// Top-level fields that configure Clumio itself, not a restore (`bear` is `clumio_token`'s
/// name before June 2025).
const CLUMIO_SETTINGS: &[&str] = &["clumio_token", "bear", "base_url", "debug"];

const RESOURCE_TYPES: &[&str] = &["EBS", "EC2", "RDS", "DynamoDB", "ProtectionGroup"];

/// Fields of every group, whatever its type.
const COMMON_FIELDS: &[&str] = &[
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
    "target_role_arn",
];

/// The README calls the zone `target_aws_az`, Clumio's code and examples `target_az`.
const ZONE_FIELDS: &[&str] = &["target_aws_az", "target_az"];

/// Longest day offset accepted (a century), so that the arithmetic cannot overflow.
const MAX_DAY_OFFSET: i64 = 36_500;

/// The fields a resource type adds to the common ones, and which of them are required (a zone
/// field stands for either spelling; RDS `target_rds_name` is checked by account).
fn type_fields(resource_type: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match resource_type {
        "EBS" => (
            &[
                "target_aws_az",
                "target_az",
                "target_iops",
                "target_volume_type",
                "target_volume_tags",
                "search_volume_id",
            ],
            &["target_aws_az"],
        ),
        "EC2" => (
            &[
                "target_aws_az",
                "target_az",
                "target_vpc_native_id",
                "target_subnet_native_id",
                "target_security_group_native_ids",
                "target_security_group_native_id",
                "target_key_pair_name",
                "target_iam_instance_profile_name",
                "target_instance_tags",
                "target_volume_tags",
                "target_ami_native_id",
                "target_eni_cfg_from_backup",
                "should_power_on",
                "search_instance_id",
            ],
            &["target_aws_az", "target_vpc_native_id", "target_subnet_native_id"],
        ),
        "RDS" => (
            &[
                "target_subnet_group_name",
                "target_rds_name",
                "target_security_group_native_ids",
                "target_security_group_native_id",
                "target_resource_tags",
                "search_resource_id",
            ],
            &["target_subnet_group_name"],
        ),
        "DynamoDB" => (&["change_set_name", "search_table_id"], &["change_set_name"]),
        "ProtectionGroup" => (
            &["search_pg_name", "search_bucket_names", "search_object_filters", "target_bucket", "target_prefix"],
            &["search_pg_name", "target_bucket"],
        ),
        _ => return None,
    })
}

/// True when `field` belongs to `resource_type` only: such fields tell the type of a flat
/// document that has no `ResourceType`.
fn only_of(field: &str, resource_type: &str) -> bool {
    RESOURCE_TYPES.iter().all(|&t| {
        let listed = type_fields(t).is_some_and(|(fields, _)| fields.contains(&field));
        listed == (t == resource_type)
    })
}

fn known_somewhere(field: &str) -> bool {
    COMMON_FIELDS.contains(&field)
        || RESOURCE_TYPES.iter().filter_map(|t| type_fields(t)).any(|(fields, _)| fields.contains(&field))
}

/// True when the document is Clumio input rather than a Lifeboat request file.
pub fn is_clumio(document: &Value) -> bool {
    document.as_object().is_some_and(|o| {
        o.contains_key("RestoreGroups")
            || o.contains_key("DefaultInput")
            || o.contains_key("source_account")
            || o.contains_key("ResourceType")
    })
}

fn error(field: impl Into<String>, message: impl Into<String>) -> RequestFileError {
    RequestFileError::Field { field: field.into(), message: message.into() }
}

fn join(path: &str, name: &str) -> String {
    // An empty key (`{"": 1}`) is shown quoted, so that no field is blank.
    let name = if name.is_empty() { "\"\"" } else { name };
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Empty as Clumio means it: nothing given. Numbers and booleans are values (`0`, `false`),
/// where Clumio's Python would take them for empty.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty() || s == FOLLOW_DEFAULT_INPUT,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

/// A Clumio asset id (`abb2e20f-xxxx-11ef-9866-7205609e0abc`): Clumio's own inventory, which
/// Lifeboat cannot resolve, unlike AWS ids and names.
fn is_clumio_asset_id(id: &str) -> bool {
    id.len() == 36 && id.char_indices().all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'))
}

/// DefaultInput split into its flat fields and its per-type sections.
struct Defaults {
    flat: Map<String, Value>,
    by_type: HashMap<String, Map<String, Value>>,
}

impl Defaults {
    fn read(value: Option<&Value>) -> Result<Self, RequestFileError> {
        let mut defaults = Defaults { flat: Map::new(), by_type: HashMap::new() };
        let fields = match value {
            None | Some(Value::Null) => return Ok(defaults),
            Some(Value::Object(fields)) => fields,
            Some(_) => return Err(error("DefaultInput", "must be an object")),
        };
        for (key, value) in fields {
            if RESOURCE_TYPES.contains(&key.as_str()) {
                let path = format!("DefaultInput.{key}");
                let Value::Object(section) = value else {
                    return Err(error(path, format!("must be an object of {key} fields")));
                };
                check_known(section, &path, Some(key))?;
                defaults.by_type.insert(key.clone(), section.clone());
            } else {
                defaults.flat.insert(key.clone(), value.clone());
            }
        }
        check_known(&defaults.flat, "DefaultInput", None)?;
        Ok(defaults)
    }

    /// The group's fields with the defaults filled in: its own value, then its type's default,
    /// then the flat default.
    fn merge(&self, path: &str, resource_type: &str, own: &Map<String, Value>) -> Result<Group, RequestFileError> {
        let none = Map::new();
        let typed = self.by_type.get(resource_type).unwrap_or(&none);
        let mut fields = own.clone();
        for (key, value) in own {
            if !is_empty(value) {
                continue;
            }
            let default = [typed.get(key), self.flat.get(key)].into_iter().flatten().find(|v| !is_empty(v));
            let empty_default_in = if typed.contains_key(key) {
                format!("DefaultInput.{resource_type}")
            } else if self.flat.contains_key(key) {
                "DefaultInput".to_string()
            } else {
                continue;
            };
            match default {
                Some(value) => {
                    fields.insert(key.clone(), value.clone());
                }
                None => {
                    return Err(error(
                        join(path, key),
                        format!("is empty here and in {empty_default_in}: give it a value in one of them"),
                    ))
                }
            }
        }
        // Fields the group does not name at all come from the defaults as they are.
        for source in [typed, &self.flat] {
            for (key, value) in source {
                if !fields.contains_key(key) {
                    fields.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(Group { path: path.to_string(), fields })
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

    fn field(&self, name: &str) -> String {
        join(&self.path, name)
    }

    fn string(&self, name: &str) -> Result<String, RequestFileError> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.trim().to_string()),
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

    /// The zone, under either of Clumio's names.
    fn zone(&self, resource_type: &str) -> Result<String, RequestFileError> {
        let aws_az = self.string("target_aws_az")?;
        let az = self.string("target_az")?;
        match (aws_az.is_empty(), az.is_empty()) {
            (true, true) => {
                // Name the spelling the group uses, if any.
                let named = ZONE_FIELDS.iter().find(|f| self.fields.contains_key(**f)).unwrap_or(&ZONE_FIELDS[0]);
                Err(error(
                    self.field(named),
                    format!("is required to restore {resource_type} (target_aws_az or target_az)"),
                ))
            }
            (false, false) if aws_az != az => Err(error(
                self.field("target_az"),
                format!("'{az}' differs from target_aws_az '{aws_az}'; give one of them"),
            )),
            (false, _) => Ok(aws_az),
            (true, false) => Ok(az),
        }
    }

    /// Numbers may be given as numbers or strings, as Clumio's examples do.
    fn number(&self, name: &str) -> Result<Option<i64>, RequestFileError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                n.as_i64().map(Some).ok_or_else(|| error(self.field(name), format!("{n} is not a whole number")))
            }
            Some(Value::String(s)) => {
                s.trim().parse().map(Some).map_err(|_| error(self.field(name), format!("'{s}' is not a whole number")))
            }
            Some(other) => Err(error(self.field(name), format!("expected a number, not {other}"))),
        }
    }

    /// A day offset: a whole number of days back from today, 0 for today.
    fn day_offset(&self, name: &str, default: i64) -> Result<i64, RequestFileError> {
        let days = self.number(name)?.unwrap_or(default);
        if days < 0 {
            return Err(error(self.field(name), format!("{days} is negative: offsets count days back from today")));
        }
        if days > MAX_DAY_OFFSET {
            return Err(error(self.field(name), format!("{days} is more than {MAX_DAY_OFFSET} days")));
        }
        Ok(days)
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, RequestFileError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(error(self.field(name), format!("expected true or false, not {other}"))),
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
                        all.push(s.trim().to_string());
                    }
                }
                Some(other) => return Err(error(self.field(name), format!("expected a list of strings, not {other}"))),
            }
        }
        Ok(all)
    }

    /// Clumio's tag lists (`[{"key": "k", "value": "v"}]`), or a plain object of tags; the
    /// first of `names` wins on a clash of keys.
    fn tags(&self, names: &[&str]) -> Result<HashMap<String, String>, RequestFileError> {
        let mut tags = HashMap::new();
        for name in names.iter().rev() {
            let field = self.field(name);
            match self.get(name) {
                None => {}
                Some(Value::Array(items)) => {
                    for (index, item) in items.iter().enumerate() {
                        let entry = |lower: &str, upper: &str| item.get(lower).or_else(|| item.get(upper));
                        match (entry("key", "Key"), entry("value", "Value")) {
                            (Some(Value::String(key)), Some(Value::String(value))) if !key.is_empty() => {
                                tags.insert(key.clone(), value.clone());
                            }
                            _ => {
                                return Err(error(
                                    format!("{field}[{index}]"),
                                    format!("expected {{\"key\": ..., \"value\": ...}}, not {item}"),
                                ))
                            }
                        }
                    }
                }
                Some(Value::Object(map)) => {
                    for (key, value) in map {
                        let Value::String(value) = value else {
                            return Err(error(format!("{field}.{key}"), format!("expected a string, not {value}")));
                        };
                        tags.insert(key.clone(), value.clone());
                    }
                }
                Some(other) => return Err(error(field, format!("expected a list of key/value tags, not {other}"))),
            }
        }
        Ok(tags)
    }
}

/// Converts Clumio input to a request; `now` anchors the day offsets.
pub fn convert(
    document: &Value,
    request_id: String,
    now: DateTime<Utc>,
) -> Result<pb::RestoreRequest, RequestFileError> {
    let top = document.as_object().ok_or_else(|| error("<document>", "Clumio input must be a JSON object"))?;
    let defaults = Defaults::read(top.get("DefaultInput"))?;
    let groups: Vec<(String, Map<String, Value>)> = match top.get("RestoreGroups") {
        Some(Value::Array(groups)) => {
            for key in top.keys() {
                if !matches!(key.as_str(), "RestoreGroups" | "DefaultInput") && !CLUMIO_SETTINGS.contains(&key.as_str())
                {
                    return Err(error(join("", key), "unknown field next to RestoreGroups"));
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
        let resource_type = resource_type_of(&path, &fields, &defaults)?;
        check_known(&fields, &path, Some(&resource_type))?;
        let group = defaults.merge(&path, &resource_type, &fields)?;
        sets.push(convert_group(group, &resource_type, index, now)?);
    }
    Ok(pb::RestoreRequest {
        request_id,
        restore_sets: sets,
        dry_run: false,
        options: Some(pb::RestoreOptions::default()),
        submitted_at: Some(lifeboat_common::time::to_timestamp(now)),
        requested_by: std::env::var("USER").unwrap_or_default(),
        backup_run: None,
    })
}

/// The group's `ResourceType` (or the flat default's); without one, the only type whose own
/// fields the group uses (the first published example, an EC2 group, names none).
fn resource_type_of(path: &str, fields: &Map<String, Value>, defaults: &Defaults) -> Result<String, RequestFileError> {
    let field = join(path, "ResourceType");
    let given = fields.get("ResourceType").or_else(|| defaults.flat.get("ResourceType"));
    match given.filter(|v| !is_empty(v)) {
        Some(Value::String(t)) if RESOURCE_TYPES.contains(&t.as_str()) => return Ok(t.clone()),
        Some(Value::String(t)) => {
            return Err(error(field, format!("unknown resource type '{t}' ({})", RESOURCE_TYPES.join(", "))))
        }
        Some(other) => return Err(error(field, format!("expected a string, not {other}"))),
        None => {}
    }
    let candidates: Vec<&str> =
        RESOURCE_TYPES.iter().copied().filter(|t| fields.keys().any(|key| only_of(key, t))).collect();
    match candidates[..] {
        [only] => Ok(only.to_string()),
        _ => Err(error(field, format!("is required ({})", RESOURCE_TYPES.join(", ")))),
    }
}

/// Every field must be one Clumio defines (for the group's type, when it is known).
fn check_known(fields: &Map<String, Value>, path: &str, resource_type: Option<&str>) -> Result<(), RequestFileError> {
    for (key, value) in fields {
        let field = join(path, key);
        if !known_somewhere(key) {
            return Err(error(field, "unknown field"));
        }
        if let Some((fields_of_type, _)) = resource_type.and_then(type_fields) {
            let applies = COMMON_FIELDS.contains(&key.as_str()) || fields_of_type.contains(&key.as_str());
            if !applies && !is_empty(value) {
                return Err(error(field, format!("does not apply to {} restores", resource_type.unwrap_or_default())));
            }
        }
    }
    Ok(())
}

fn convert_group(
    group: Group,
    resource_type: &str,
    index: usize,
    now: DateTime<Utc>,
) -> Result<pb::RestoreSet, RequestFileError> {
    let Some((_, required)) = type_fields(resource_type) else {
        return Err(error(group.field("ResourceType"), format!("unknown resource type '{resource_type}'")));
    };
    for name in required {
        if ZONE_FIELDS.contains(name) {
            group.zone(resource_type)?;
        } else {
            group.required(name, resource_type)?;
        }
    }

    let source_account = group.string("source_account")?;
    let source_region = group.string("source_region")?;
    let account_id = group.string("target_account")?;
    let region = group.string("target_region")?;
    let kms_key_id = group.string("target_kms_key_native_id")?;
    let target_role_arn = group.string("target_role_arn")?;
    if !target_role_arn.is_empty() && !target_role_arn.starts_with("arn:") {
        return Err(error(group.field("target_role_arn"), format!("'{target_role_arn}' is not a role ARN")));
    }

    let mut tags = HashMap::new();
    let tag_key = group.string("search_tag_key")?;
    if !tag_key.is_empty() {
        tags.insert(tag_key, group.string("search_tag_value")?);
    } else if !group.string("search_tag_value")?.is_empty() {
        return Err(error(group.field("search_tag_key"), "is required with search_tag_value"));
    }
    let point = point_in_time(&group, resource_type, now)?;

    let security_groups = || group.strings(&["target_security_group_native_ids", "target_security_group_native_id"]);
    let (resource_types, target, search_id) = match resource_type {
        "EBS" => {
            let iops = match group.number("target_iops")? {
                Some(n) if !(0..=i64::from(i32::MAX)).contains(&n) => {
                    return Err(error(group.field("target_iops"), format!("{n} is not a number of IOPS")))
                }
                n => n.map(|n| n as i32),
            };
            let ebs = pb::EbsTarget {
                account_id,
                region,
                availability_zone: group.zone(resource_type)?,
                volume_type: group.string("target_volume_type")?,
                iops,
                kms_key_id,
                tags: group.tags(&["target_volume_tags"])?,
                ..Default::default()
            };
            (
                vec![pb::ResourceType::EbsVolume],
                pb::Targets { ebs: Some(ebs), ..Default::default() },
                "search_volume_id",
            )
        }
        "EC2" => {
            let ec2 = pb::Ec2Target {
                account_id,
                region,
                availability_zone: group.zone(resource_type)?,
                vpc_id: group.string("target_vpc_native_id")?,
                subnet_id: group.string("target_subnet_native_id")?,
                security_group_ids: security_groups()?,
                key_pair_name: group.string("target_key_pair_name")?,
                iam_instance_profile: group.string("target_iam_instance_profile_name")?,
                kms_key_id,
                // Lifeboat tags the instance and its volumes alike.
                tags: group.tags(&["target_instance_tags", "target_volume_tags"])?,
                // Runbooks written before Clumio had `should_power_on` started their instances.
                leave_stopped: group.boolean("should_power_on")?.is_some_and(|on| !on),
                ..Default::default()
            };
            // Accepted, without effect (see the module documentation).
            group.string("target_ami_native_id")?;
            group.boolean("target_eni_cfg_from_backup")?;
            (
                vec![pb::ResourceType::Ec2Instance],
                pb::Targets { ec2: Some(ec2), ..Default::default() },
                "search_instance_id",
            )
        }
        "RDS" => {
            let name = group.string("target_rds_name")?;
            let other_account = !source_account.is_empty() && !account_id.is_empty() && source_account != account_id;
            if name.is_empty() && !other_account {
                return Err(error(
                    group.field("target_rds_name"),
                    "is required to restore RDS in the source account (in another account the source's name is kept)",
                ));
            }
            let rds = pb::RdsTarget {
                account_id,
                region,
                db_subnet_group: group.string("target_subnet_group_name")?,
                name,
                security_group_ids: security_groups()?,
                kms_key_id,
                tags: group.tags(&["target_resource_tags"])?,
                ..Default::default()
            };
            (
                vec![pb::ResourceType::RdsInstance, pb::ResourceType::RdsCluster],
                pb::Targets { rds: Some(rds), ..Default::default() },
                "search_resource_id",
            )
        }
        "DynamoDB" => {
            let dynamodb = pb::DynamoDbTarget {
                account_id,
                region,
                name_suffix: group.string("change_set_name")?,
                kms_key_id,
                ..Default::default()
            };
            (
                vec![pb::ResourceType::DynamodbTable],
                pb::Targets { dynamodb: Some(dynamodb), ..Default::default() },
                "search_table_id",
            )
        }
        _ => {
            let object_filters_json = match group.get("search_object_filters") {
                None => String::new(),
                Some(filters) => filters.to_string(),
            };
            let s3 = pb::S3Target {
                account_id,
                region: if region.is_empty() { source_region.clone() } else { region },
                bucket: group.string("target_bucket")?,
                prefix: group.string("target_prefix")?,
                kms_key_id,
                protection_group: group.string("search_pg_name")?,
                source_buckets: group.strings(&["search_bucket_names"])?,
                object_filters_json,
                ..Default::default()
            };
            (vec![pb::ResourceType::S3Bucket], pb::Targets { s3: Some(s3), ..Default::default() }, "")
        }
    };
    let names = if search_id.is_empty() {
        Vec::new()
    } else {
        let id = group.string(search_id)?;
        if id.is_empty() || is_clumio_asset_id(&id) {
            Vec::new()
        } else {
            vec![id]
        }
    };
    let name = group.string("name")?;
    Ok(pb::RestoreSet {
        name: if name.is_empty() { format!("{}-{index}", resource_type.to_ascii_lowercase()) } else { name },
        source: Some(pb::Source {
            account_id: source_account,
            region: source_region,
            tags,
            selection: Some(pb::source::Selection::PointInTime(point)),
            point_in_time_recovery: false,
            names,
            // Never implied: a group without tags is planned, and runs only when asked for.
            all_resources: false,
        }),
        resource_types: resource_types.into_iter().map(|t| t as i32).collect(),
        target: Some(target),
        target_role_arn,
    })
}

/// Clumio's search window (common.py `get_sort_and_ts_filter`): `before` is `time ≤ end`,
/// `after` is `start < time ≤ end`, the oldest first.
fn point_in_time(group: &Group, resource_type: &str, now: DateTime<Utc>) -> Result<pb::PointInTime, RequestFileError> {
    // Clumio's defaults: EBS searches from yesterday, the other types from today.
    let start_days = group.day_offset("start_search_day_offset", if resource_type == "EBS" { 1 } else { 0 })?;
    let end_days = group.day_offset("end_search_day_offset", 0)?;
    let midnight = |days: i64| (now.date_naive() - Duration::days(days)).and_time(NaiveTime::MIN).and_utc();
    let end = midnight(end_days) + Duration::seconds(24 * 3600 - 1);
    let timestamp = lifeboat_common::time::to_timestamp;
    let direction = group.string("search_direction")?.to_ascii_lowercase();
    Ok(match direction.as_str() {
        "" | "before" => {
            pb::PointInTime { time: Some(timestamp(end)), direction: pb::SearchDirection::Before as i32, until: None }
        }
        "after" => {
            // Strictly after midnight; backup times are whole seconds.
            let start = midnight(start_days) + Duration::seconds(1);
            pb::PointInTime {
                time: Some(timestamp(start)),
                direction: pb::SearchDirection::After as i32,
                // An end before the start (the published examples: start 0, end 10) finds
                // nothing in Clumio; Lifeboat reads it as "after the start, no upper bound".
                until: (end >= start).then(|| timestamp(end)),
            }
        }
        other => return Err(error(group.field("search_direction"), format!("'{other}' is not before or after"))),
    })
}
