//! The restore request file (YAML or JSON) and its conversion to a `RestoreRequest`. Every
//! problem names its field, e.g. `restore_sets[0].source.point_in_time.time`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use lifeboat_proto as pb;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RequestFileError {
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// Generated when absent.
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub options: Options,
    pub restore_sets: Vec<SetFile>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    #[serde(default)]
    pub skip_source_tags: bool,
    #[serde(default)]
    pub max_wait_checks: u32,
    /// More tasks than this (default 1,000) need `confirm_large`.
    #[serde(default)]
    pub max_tasks: u32,
    #[serde(default)]
    pub confirm_large: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetFile {
    pub name: String,
    pub source: SourceFile,
    pub resource_types: Vec<String>,
    #[serde(default)]
    pub target: TargetsFile,
    /// The role to assume in the target account, instead of the deployment's role name.
    #[serde(default)]
    pub target_role_arn: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    #[serde(default)]
    pub account_id: String,
    pub region: String,
    #[serde(default)]
    pub tags: HashMap<String, String>,
    #[serde(default)]
    pub point_in_time: Option<PointInTimeFile>,
    #[serde(default)]
    pub window: Option<WindowFile>,
    /// Restore each resource's state at `point_in_time` from continuous backups (DynamoDB).
    #[serde(default)]
    pub point_in_time_recovery: bool,
    /// Resource names or ids, `*` as a wildcard (`orders*`).
    #[serde(default)]
    pub names: Vec<String>,
    /// Needed to restore a set without tags or names (the whole account and region).
    #[serde(default)]
    pub all_resources: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PointInTimeFile {
    /// RFC 3339, e.g. `2026-11-20T12:00:00Z`.
    pub time: String,
    /// `before` (default) or `after`.
    #[serde(default)]
    pub direction: Option<String>,
    /// `after` only: the oldest backup no later than this (RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFile {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsFile {
    #[serde(default)]
    pub ebs: Option<EbsTargetFile>,
    #[serde(default)]
    pub dynamodb: Option<DynamoDbTargetFile>,
    #[serde(default)]
    pub ec2: Option<Ec2TargetFile>,
    #[serde(default)]
    pub rds: Option<RdsTargetFile>,
    /// Route 53 and ELBv2 configuration restored from exports (`route53`, `elbv2`).
    #[serde(default)]
    pub config: Option<ConfigTargetFile>,
    /// S3: a protection group's objects restored from the vault into a bucket, or (`in_place`)
    /// a versioned bucket rolled back or undeleted in place.
    #[serde(default)]
    pub s3: Option<S3TargetFile>,
}

/// Where a protection group's objects go (or, with `in_place`, what to do to the bucket).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3TargetFile {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub region: String,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub kms_key_id: String,
    #[serde(default)]
    pub protection_group: String,
    #[serde(default)]
    pub source_buckets: Vec<String>,
    /// Clumio's `search_object_filters` (`prefix`, `latest_version_only`, `storage_classes`,
    /// `start_timestamp`, `end_timestamp`...), as a mapping.
    #[serde(default)]
    pub object_filters: Option<serde_json::Value>,
    /// The vault with the group's backups; empty: the deployment's (`LIFEBOAT_S3_VAULT_*`).
    #[serde(default)]
    pub vault_bucket: String,
    #[serde(default)]
    pub vault_region: String,
    #[serde(default)]
    pub vault_prefix: String,
    #[serde(default)]
    pub in_place: Option<S3InPlaceFile>,
}

/// `rollback` to the state at `at`, or `undelete` the keys deleted since `at`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3InPlaceFile {
    pub mode: String,
    /// RFC 3339.
    pub at: String,
    #[serde(default)]
    pub prefix: String,
}

/// Where the exports are, where they go, and how source ids map to the target's.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigTargetFile {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub name_suffix: String,
    pub bucket: String,
    pub bucket_region: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub subnet_map: HashMap<String, String>,
    #[serde(default)]
    pub security_group_map: HashMap<String, String>,
    #[serde(default)]
    pub vpc_map: HashMap<String, String>,
    #[serde(default)]
    pub certificate_map: HashMap<String, String>,
    #[serde(default)]
    pub target_map: HashMap<String, String>,
    #[serde(default)]
    pub replace: bool,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RdsTargetFile {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub region: String,
    /// Empty in the source account: the source's.
    #[serde(default)]
    pub db_subnet_group: String,
    /// The restored instance or cluster identifier; in another account the source's by default.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    #[serde(default)]
    pub kms_key_id: String,
    /// The instance class (for a cluster: of its writer instance).
    #[serde(default)]
    pub instance_class: String,
    #[serde(default)]
    pub availability_zone: String,
    #[serde(default)]
    pub tags: HashMap<String, String>,
    /// Overrides of the source's settings, which are otherwise carried over.
    #[serde(default)]
    pub db_parameter_group: String,
    #[serde(default)]
    pub option_group: String,
    #[serde(default)]
    pub multi_az: Option<bool>,
    #[serde(default)]
    pub storage_type: String,
    #[serde(default)]
    pub iops: Option<i32>,
    #[serde(default)]
    pub port: Option<i32>,
    #[serde(default)]
    pub db_cluster_parameter_group: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2TargetFile {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub availability_zone: String,
    #[serde(default)]
    pub vpc_id: String,
    pub subnet_id: String,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    #[serde(default)]
    pub key_pair_name: String,
    #[serde(default)]
    pub iam_instance_profile: String,
    #[serde(default)]
    pub kms_key_id: String,
    /// Otherwise the type of the instance the AMI was made from.
    #[serde(default)]
    pub instance_type: String,
    #[serde(default)]
    pub leave_stopped: bool,
    #[serde(default)]
    pub tags: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbTargetFile {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub region: String,
    /// The restored table's name; otherwise `<source table>-<name_suffix>`.
    #[serde(default)]
    pub table_name: String,
    #[serde(default)]
    pub name_suffix: String,
    #[serde(default)]
    pub kms_key_id: String,
    #[serde(default)]
    pub tags: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EbsTargetFile {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub availability_zone: String,
    #[serde(default)]
    pub volume_type: String,
    #[serde(default)]
    pub iops: Option<i32>,
    #[serde(default)]
    pub throughput: Option<i32>,
    #[serde(default)]
    pub kms_key_id: String,
    #[serde(default)]
    pub tags: HashMap<String, String>,
}

/// Parses YAML (JSON is YAML too, but a `.json` file gets JSON's error messages).
pub fn parse(path: &str, text: &str) -> Result<RequestFile, RequestFileError> {
    let syntax = |message: String| RequestFileError::Syntax { path: path.to_string(), message };
    if path.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| {
            // serde_json says where a bad value is, not which field: name it as YAML errors do.
            let missing = e.to_string().starts_with("missing field");
            match json_path_at(text, e.line(), e.column(), missing) {
                field if e.is_data() && !field.is_empty() => syntax(format!("{field}: {e}")),
                _ => syntax(e.to_string()),
            }
        })
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| syntax(e.to_string()))
    }
}

/// The path (`restore_sets[0].source.region`) of the value a JSON text has at `line` and
/// `column` (1-based, in bytes: the last byte serde_json read before an error), empty at the top
/// level; with `missing`, of the object that lacks a field (its last key is done).
fn json_path_at(text: &str, line: usize, column: usize, missing: bool) -> String {
    enum Frame {
        /// The key whose value is being read.
        Object(Option<String>),
        /// The index of the element being read, once one has started.
        Array(Option<usize>),
    }
    let line_start: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
    let bytes = text.as_bytes();
    let mut end = (line_start + column).min(text.len());
    // serde_json only peeks at an object or list it finds instead of another value.
    while end < bytes.len() && bytes[end].is_ascii_whitespace() {
        end += 1;
    }
    if end < bytes.len() && matches!(bytes[end], b'{' | b'[') {
        end += 1;
    }
    let mut stack = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < end {
        let byte = bytes[i];
        if let Some(Frame::Array(index @ None)) = stack.last_mut() {
            if !byte.is_ascii_whitespace() && byte != b']' {
                *index = Some(0);
            }
        }
        match byte {
            b'{' => {
                stack.push(Frame::Object(None));
                expect_key = true;
            }
            b'[' => stack.push(Frame::Array(None)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(Some(index))) => *index += 1,
                Some(Frame::Object(key)) => {
                    *key = None;
                    expect_key = true;
                }
                _ => {}
            },
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if std::mem::take(&mut expect_key) {
                    if let Some(Frame::Object(key)) = stack.last_mut() {
                        *key = text.get(start..=i).and_then(|quoted| serde_json::from_str(quoted).ok());
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    if let (true, Some(Frame::Object(key))) = (missing, stack.last_mut()) {
        *key = None;
    }
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Object(Some(key)) if path.is_empty() => path = key,
            Frame::Object(Some(key)) => path = format!("{path}.{key}"),
            Frame::Array(Some(index)) => path = format!("{path}[{index}]"),
            _ => {}
        }
    }
    path
}

/// Reads a request file in any accepted format: Lifeboat's own (YAML or JSON) or Clumio bulk
/// restore JSON. `request_id` is used when the file names none.
pub fn load(path: &str, text: &str, request_id: String) -> Result<pb::RestoreRequest, RequestFileError> {
    if path.ends_with(".json") {
        let document: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| RequestFileError::Syntax { path: path.to_string(), message: e.to_string() })?;
        if crate::clumio::is_clumio(&document) {
            return crate::clumio::convert(&document, request_id, Utc::now());
        }
    }
    parse(path, text)?.into_request(request_id)
}

fn field_error(field: String, message: impl Into<String>) -> RequestFileError {
    RequestFileError::Field { field, message: message.into() }
}

fn parse_time(field: String, text: &str) -> Result<lifeboat_proto::Timestamp, RequestFileError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| lifeboat_common::time::to_timestamp(t.with_timezone(&Utc)))
        .map_err(|e| field_error(field, format!("'{text}' is not an RFC 3339 time ({e})")))
}

impl RequestFile {
    /// Converts to the wire message. `request_id` is used when the file has none.
    pub fn into_request(self, request_id: String) -> Result<pb::RestoreRequest, RequestFileError> {
        let mut sets = Vec::new();
        for (index, set) in self.restore_sets.into_iter().enumerate() {
            sets.push(set.into_proto(&format!("restore_sets[{index}]"))?);
        }
        Ok(pb::RestoreRequest {
            request_id: self.request_id.unwrap_or(request_id),
            restore_sets: sets,
            dry_run: self.dry_run,
            options: Some(pb::RestoreOptions {
                skip_source_tags: self.options.skip_source_tags,
                max_wait_checks: self.options.max_wait_checks,
                max_tasks: self.options.max_tasks,
                confirm_large: self.options.confirm_large,
            }),
            submitted_at: Some(lifeboat_common::time::now()),
            requested_by: std::env::var("USER").unwrap_or_default(),
            backup_run: None,
        })
    }
}

impl SetFile {
    fn into_proto(self, path: &str) -> Result<pb::RestoreSet, RequestFileError> {
        let source = self.source;
        let selection = match (source.point_in_time, source.window) {
            (Some(_), Some(_)) => {
                return Err(field_error(format!("{path}.source"), "give point_in_time or window, not both"))
            }
            (Some(point), None) => {
                let direction = match point.direction.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("before") => pb::SearchDirection::Before,
                    Some("after") => pb::SearchDirection::After,
                    Some(other) => {
                        return Err(field_error(
                            format!("{path}.source.point_in_time.direction"),
                            format!("'{other}' is not before or after"),
                        ))
                    }
                };
                let until = match &point.until {
                    Some(until) => Some(parse_time(format!("{path}.source.point_in_time.until"), until)?),
                    None => None,
                };
                Some(pb::source::Selection::PointInTime(pb::PointInTime {
                    time: Some(parse_time(format!("{path}.source.point_in_time.time"), &point.time)?),
                    direction: direction as i32,
                    until,
                }))
            }
            (None, Some(window)) => Some(pb::source::Selection::Window(pb::TimeWindow {
                start: Some(parse_time(format!("{path}.source.window.start"), &window.start)?),
                end: Some(parse_time(format!("{path}.source.window.end"), &window.end)?),
            })),
            (None, None) => None,
        };
        let mut resource_types = Vec::new();
        for (index, name) in self.resource_types.iter().enumerate() {
            let kind = pb::ResourceType::from_short_name(name).ok_or_else(|| {
                field_error(format!("{path}.resource_types[{index}]"), format!("unknown resource type '{name}' (known: ebs, rds-instance, rds-cluster, dynamodb, ec2, s3, route53, elbv2)"))
            })?;
            resource_types.push(kind as i32);
        }
        let rds = self.target.rds.map(|t| pb::RdsTarget {
            account_id: t.account_id,
            region: t.region,
            db_subnet_group: t.db_subnet_group,
            name: t.name,
            security_group_ids: t.security_group_ids,
            kms_key_id: t.kms_key_id,
            instance_class: t.instance_class,
            tags: t.tags,
            availability_zone: t.availability_zone,
            db_parameter_group: t.db_parameter_group,
            option_group: t.option_group,
            multi_az: t.multi_az,
            storage_type: t.storage_type,
            iops: t.iops,
            port: t.port,
            db_cluster_parameter_group: t.db_cluster_parameter_group,
        });
        let ec2 = self.target.ec2.map(|t| pb::Ec2Target {
            account_id: t.account_id,
            region: t.region,
            availability_zone: t.availability_zone,
            vpc_id: t.vpc_id,
            subnet_id: t.subnet_id,
            security_group_ids: t.security_group_ids,
            key_pair_name: t.key_pair_name,
            iam_instance_profile: t.iam_instance_profile,
            kms_key_id: t.kms_key_id,
            instance_type: t.instance_type,
            leave_stopped: t.leave_stopped,
            tags: t.tags,
        });
        let dynamodb = self.target.dynamodb.map(|t| pb::DynamoDbTarget {
            account_id: t.account_id,
            region: t.region,
            table_name: t.table_name,
            name_suffix: t.name_suffix,
            kms_key_id: t.kms_key_id,
            tags: t.tags,
        });
        let config = self.target.config.map(|t| pb::ConfigTarget {
            account_id: t.account_id,
            region: t.region,
            name_suffix: t.name_suffix,
            subnet_map: t.subnet_map,
            security_group_map: t.security_group_map,
            vpc_map: t.vpc_map,
            certificate_map: t.certificate_map,
            target_map: t.target_map,
            replace: t.replace,
            bucket: t.bucket,
            bucket_region: t.bucket_region,
            prefix: t.prefix,
        });
        let s3 = match self.target.s3 {
            None => None,
            Some(t) => {
                let in_place = match t.in_place {
                    None => None,
                    Some(i) => Some(pb::S3InPlace {
                        at: Some(parse_time(format!("{path}.target.s3.in_place.at"), &i.at)?),
                        mode: i.mode,
                        prefix: i.prefix,
                        shallow: false,
                    }),
                };
                let object_filters_json = match t.object_filters {
                    None => String::new(),
                    Some(serde_json::Value::Object(filters)) => serde_json::Value::Object(filters).to_string(),
                    Some(_) => {
                        return Err(field_error(format!("{path}.target.s3.object_filters"), "must be a mapping"));
                    }
                };
                Some(pb::S3Target {
                    account_id: t.account_id,
                    region: t.region,
                    bucket: t.bucket,
                    prefix: t.prefix,
                    kms_key_id: t.kms_key_id,
                    protection_group: t.protection_group,
                    source_buckets: t.source_buckets,
                    object_filters_json,
                    vault_bucket: t.vault_bucket,
                    vault_region: t.vault_region,
                    vault_prefix: t.vault_prefix,
                    in_place,
                })
            }
        };
        let ebs = self.target.ebs.map(|t| pb::EbsTarget {
            account_id: t.account_id,
            region: t.region,
            availability_zone: t.availability_zone,
            volume_type: t.volume_type,
            iops: t.iops,
            throughput: t.throughput,
            kms_key_id: t.kms_key_id,
            tags: t.tags,
        });
        Ok(pb::RestoreSet {
            name: self.name,
            source: Some(pb::Source {
                account_id: source.account_id,
                region: source.region,
                tags: source.tags,
                selection,
                point_in_time_recovery: source.point_in_time_recovery,
                names: source.names,
                all_resources: source.all_resources,
            }),
            resource_types,
            target: Some(pb::Targets { ebs, dynamodb, ec2, rds, config, s3 }),
            target_role_arn: self.target_role_arn,
        })
    }
}
