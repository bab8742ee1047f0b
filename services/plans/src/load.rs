//! Reading a plan file. The document is read as a tree first and walked by hand, so that one
//! pass reports every problem by its field path (`rules[1].retention.keep.weekly`), unknown
//! fields included, instead of stopping at the first as a derived deserializer would.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::plan::{
    AppConsistent, ConfigExport, ConfigService, Continuous, CopyTo, Drill, DrillTarget, GroupBucket, Keep, Lock,
    LockMode, ObjectFilter, Plan, ProtectionGroup, ResourceType, Retention, Rule, RuleOptions, Schedule, Selection,
    Vault, STORAGE_CLASSES,
};

/// AWS Backup's smallest start window, and its smallest time between two runs of a rule.
pub const MIN_START_WINDOW: TimeDelta = TimeDelta::hours(1);
/// AWS Backup's defaults when a rule names no windows.
pub const DEFAULT_START_WINDOW: TimeDelta = TimeDelta::hours(8);
pub const DEFAULT_COMPLETION_WINDOW: TimeDelta = TimeDelta::days(7);
/// The archive tier bills a snapshot for at least this many days, so it must be kept as long.
pub const ARCHIVE_MIN_DAYS: u64 = 90;
/// Vault Lock's largest retention bound.
pub const MAX_LOCK_DAYS: u32 = 36_500;
/// Prefix of the tags Lifeboat puts on recovery points itself.
pub const RESERVED_TAG_PREFIX: &str = "lifeboat:";
/// The shortest interval between continuous-backup checks: each lists every bucket's versions.
pub const MIN_CHECK_MINUTES: u32 = 5;
/// The longest: a day.
pub const MAX_CHECK_MINUTES: u32 = 1440;

/// One problem in a plan, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not YAML or JSON at all; `path` is the file.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// Well-formed, but wrong: every problem found.
    #[error("invalid plan: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
}

/// Reads a plan from YAML, or JSON when `path` ends in `.json` (for JSON's error messages).
pub fn load(path: &str, text: &str) -> Result<Plan, LoadError> {
    let syntax = |message: String| LoadError::Syntax { path: path.to_string(), message };
    let document: Value = if path.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| syntax(e.to_string()))?
    };
    from_value(&document)
}

/// Reads a plan already parsed into a JSON value (a plan carried in a message).
pub fn from_value(document: &Value) -> Result<Plan, LoadError> {
    let mut reader = Reader::default();
    let plan = reader.plan(document);
    match plan {
        Some(plan) if reader.errors.is_empty() => Ok(plan),
        _ => {
            if reader.errors.is_empty() {
                reader.error("", "not a valid plan");
            }
            Err(LoadError::Invalid(reader.errors))
        }
    }
}

fn at(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Plan and rule names end up in due ids (`plan/rule/time`) and in tag values.
fn valid_name(name: &str) -> bool {
    (1..=50).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// What a config-only rule says to `retention` and `copy_to`.
const CONFIG_ONLY_NO_POINTS: &str =
    "does not apply to route53 and elbv2: their exports are documents in config_export's bucket, kept by its \
     lifecycle rules";

/// S3's bucket naming rules, the part a plan can get wrong.
fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_account(account: &str) -> bool {
    account.len() == 12 && account.chars().all(|c| c.is_ascii_digit())
}

/// `us-east-1`, `ap-southeast-2`, `us-gov-west-1`: lowercase words and a trailing number.
fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// `90m`, `1h`, `2h30m`, `7d`: whole numbers of days, hours and minutes, largest first.
pub fn parse_duration(text: &str) -> Option<TimeDelta> {
    let mut total = TimeDelta::zero();
    let mut digits = String::new();
    let mut last_unit = u8::MAX;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (rank, minutes) = match c {
            'd' => (3, 24 * 60),
            'h' => (2, 60),
            'm' => (1, 1),
            _ => return None,
        };
        let count: i64 = digits.parse().ok()?;
        if rank >= last_unit {
            return None;
        }
        last_unit = rank;
        digits.clear();
        total = total.checked_add(&TimeDelta::try_minutes(count.checked_mul(minutes)?)?)?;
    }
    (digits.is_empty() && last_unit != u8::MAX).then_some(total)
}

fn show_duration(duration: TimeDelta) -> String {
    let minutes = duration.num_minutes();
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

enum Bound {
    Shortest,
    Longest,
}

/// The field to blame when a retention crosses a lock's bound: `days`, or the `keep` tier that
/// keeps points the shortest or the longest.
fn bound_field(retention: &Retention, field: &str, bound: Bound) -> String {
    let spans = retention.spans();
    let span = match bound {
        Bound::Shortest => spans.iter().min_by_key(|span| span.shortest_days),
        Bound::Longest => spans.iter().max_by_key(|span| span.longest_days),
    };
    at(field, span.map_or("days", |span| span.field))
}

/// A protection group defined in a rule's selection (its group None when it is invalid).
struct InlineGroup {
    field: String,
    name: String,
    group: Option<ProtectionGroup>,
}

/// What a plan defines for its rules that select s3.
#[derive(Default)]
struct PlanS3 {
    groups: Vec<ProtectionGroup>,
    /// Every group name the plan defines, valid or not, and its field.
    defined: BTreeMap<String, String>,
    /// With the field it was given at.
    vault: Option<(Vault, String)>,
    /// A plan-level vault was given, valid or not.
    vault_given: bool,
    continuous: Option<Continuous>,
}

#[derive(Default)]
struct Reader {
    errors: Vec<FieldError>,
}

impl Reader {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError { field: field.to_string(), message: message.into() });
    }

    /// The object at `field`, with every key not in `known` reported by its own path.
    fn object<'v>(&mut self, value: &'v Value, field: &str, known: &[&str]) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = value else {
            self.error(field, format!("must be a mapping with the fields {}", known.join(", ")));
            return None;
        };
        for key in map.keys().filter(|key| !known.contains(&key.as_str())) {
            self.error(&at(field, key), format!("unknown field; expected one of {}", known.join(", ")));
        }
        Some(map)
    }

    /// Present and not null.
    fn field<'v>(&mut self, map: &'v Map<String, Value>, parent: &str, key: &str, required: bool) -> Option<&'v Value> {
        match map.get(key) {
            Some(Value::Null) | None => {
                if required {
                    self.error(&at(parent, key), "required");
                }
                None
            }
            Some(value) => Some(value),
        }
    }

    fn string(&mut self, map: &Map<String, Value>, parent: &str, key: &str, required: bool) -> Option<String> {
        match self.field(map, parent, key, required)? {
            Value::String(text) if text.trim().is_empty() => {
                self.error(&at(parent, key), "must not be empty");
                None
            }
            Value::String(text) => Some(text.trim().to_string()),
            _ => {
                self.error(&at(parent, key), "must be a string");
                None
            }
        }
    }

    fn count(&mut self, map: &Map<String, Value>, parent: &str, key: &str, required: bool) -> Option<u32> {
        let value = self.field(map, parent, key, required)?;
        match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.error(&at(parent, key), format!("must be a whole number of 0 or more, not {value}"));
                None
            }
        }
    }

    fn flag(&mut self, map: &Map<String, Value>, parent: &str, key: &str) -> bool {
        match self.field(map, parent, key, false) {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                self.error(&at(parent, key), "must be true or false");
                false
            }
        }
    }

    fn list<'v>(&mut self, map: &'v Map<String, Value>, parent: &str, key: &str, required: bool) -> &'v [Value] {
        match self.field(map, parent, key, required) {
            None => &[],
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.error(&at(parent, key), "must be a list");
                &[]
            }
        }
    }

    /// Tag values may be written unquoted (`tier: 1`); they are kept as text.
    fn tags(&mut self, map: &Map<String, Value>, parent: &str, key: &str) -> BTreeMap<String, String> {
        let field = at(parent, key);
        let Some(value) = self.field(map, parent, key, false) else {
            return BTreeMap::new();
        };
        let Value::Object(tags) = value else {
            self.error(&field, "must be a mapping of tag keys to values");
            return BTreeMap::new();
        };
        let mut result = BTreeMap::new();
        for (tag, value) in tags {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    self.error(&at(&field, tag), "a tag value must be a string");
                    continue;
                }
            };
            if tag.is_empty() || tag.len() > 128 || text.len() > 256 {
                self.error(&at(&field, tag), "tag keys are 1 to 128 characters, values at most 256");
                continue;
            }
            result.insert(tag.clone(), text);
        }
        result
    }

    fn duration(&mut self, map: &Map<String, Value>, parent: &str, key: &str, default: TimeDelta) -> TimeDelta {
        let Some(text) = self.string(map, parent, key, false) else {
            return default;
        };
        match parse_duration(&text) {
            Some(duration) => duration,
            None => {
                self.error(&at(parent, key), format!("`{text}` is not a duration such as 90m, 1h, 2h30m or 7d"));
                default
            }
        }
    }

    fn plan(&mut self, document: &Value) -> Option<Plan> {
        let known = ["name", "rules", "lock", "tags", "protection_groups", "vault", "continuous"];
        let map = self.object(document, "", &known)?;
        let name = self.string(map, "", "name", true);
        if let Some(name) = name.as_deref().filter(|name| !valid_name(name)) {
            self.error("name", format!("`{name}`: use 1 to 50 letters, digits, `-`, `_` or `.`"));
        }
        let lock = match self.field(map, "", "lock", false) {
            Some(value) => self.lock(value, "lock"),
            None => Some(Lock::default()),
        };
        let tags = self.tags(map, "", "tags");
        for tag in tags.keys().filter(|tag| tag.starts_with(RESERVED_TAG_PREFIX)) {
            self.error(&at("tags", tag), format!("tags starting with `{RESERVED_TAG_PREFIX}` are Lifeboat's own"));
        }
        let s3 = self.plan_s3(map);
        let items = self.list(map, "", "rules", true);
        if items.is_empty() && map.get("rules").is_some_and(Value::is_array) {
            self.error("rules", "a plan needs at least one rule");
        }
        let mut rules = Vec::new();
        let mut names = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let field = index("rules", i);
            // Checked on the raw name, so that a duplicate is reported even beside other errors.
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                let first = *names.entry(name.to_string()).or_insert(i);
                if first != i {
                    self.error(&at(&field, "name"), format!("`{name}` is also the name of rules[{first}]"));
                }
            }
            rules.extend(self.rule(item, &field, lock.as_ref(), &s3));
        }
        let any_s3 = items.iter().any(|item| {
            item.pointer("/selection/resource_types")
                .and_then(Value::as_array)
                .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("s3")))
        });
        for key in ["vault", "continuous"] {
            if !any_s3 && map.get(key).is_some_and(|v| !v.is_null()) {
                self.error(key, "applies to rules that select s3: no rule does");
            }
        }
        let protection_groups = s3.groups;
        Some(Plan { name: name?, rules, lock: lock?, tags, protection_groups })
    }

    fn lock(&mut self, value: &Value, field: &str) -> Option<Lock> {
        let map = self.object(value, field, &["mode", "min_retention_days", "max_retention_days", "snapshot_lock"])?;
        let mode = match self.string(map, field, "mode", true)?.as_str() {
            "NONE" => LockMode::None,
            "GOVERNANCE" => LockMode::Governance,
            "COMPLIANCE" => LockMode::Compliance,
            other => {
                self.error(&at(field, "mode"), format!("`{other}`: expected NONE, GOVERNANCE or COMPLIANCE"));
                return None;
            }
        };
        let min = self.count(map, field, "min_retention_days", false);
        let max = self.count(map, field, "max_retention_days", false);
        for (key, days) in [("min_retention_days", min), ("max_retention_days", max)] {
            if let Some(days) = days.filter(|days| !(1..=MAX_LOCK_DAYS).contains(days)) {
                self.error(&at(field, key), format!("{days}: must be from 1 to {MAX_LOCK_DAYS} days"));
            }
        }
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                self.error(&at(field, "max_retention_days"), format!("{max} is less than min_retention_days ({min})"));
            }
        }
        if mode == LockMode::Compliance && min.is_none() {
            self.error(
                &at(field, "min_retention_days"),
                "required with COMPLIANCE: the lock must say how long nobody may delete a point",
            );
        }
        if mode == LockMode::None && (min.is_some() || max.is_some()) {
            self.error(&at(field, "mode"), "NONE locks nothing; retention bounds need GOVERNANCE or COMPLIANCE");
        }
        let snapshot_lock = self.flag(map, field, "snapshot_lock");
        if snapshot_lock && (mode == LockMode::None || min.is_none()) {
            self.error(
                &at(field, "snapshot_lock"),
                "locks snapshots in EC2 for min_retention_days: needs GOVERNANCE or COMPLIANCE and min_retention_days",
            );
        }
        Some(Lock { mode, min_retention_days: min, max_retention_days: max, snapshot_lock })
    }

    fn rule(&mut self, value: &Value, field: &str, lock: Option<&Lock>, plan_s3: &PlanS3) -> Option<Rule> {
        let known = [
            "name",
            "schedule",
            "time_zone",
            "start_window",
            "completion_window",
            "selection",
            "retention",
            "copy_to",
            "options",
            "drill",
            "config_export",
            "vault",
            "continuous",
        ];
        let map = self.object(value, field, &known)?;
        let name = self.string(map, field, "name", true);
        if let Some(name) = name.as_deref().filter(|name| !valid_name(name)) {
            self.error(&at(field, "name"), format!("`{name}`: use 1 to 50 letters, digits, `-`, `_` or `.`"));
        }
        let schedule = self.schedule(map, field);
        let start_window = self.duration(map, field, "start_window", DEFAULT_START_WINDOW);
        let completion_window = self.duration(map, field, "completion_window", DEFAULT_COMPLETION_WINDOW);
        if start_window < MIN_START_WINDOW {
            self.error(
                &at(field, "start_window"),
                format!("{}: must be at least 1h (AWS Backup's minimum)", show_duration(start_window)),
            );
        }
        if completion_window < start_window {
            self.error(
                &at(field, "completion_window"),
                format!(
                    "{} is shorter than the start window ({})",
                    show_duration(completion_window),
                    show_duration(start_window)
                ),
            );
        }
        let (selection, inline_groups) = match self.field(map, field, "selection", true) {
            Some(value) => match self.selection(value, &at(field, "selection")) {
                Some((selection, inline)) => (Some(selection), inline),
                None => (None, Vec::new()),
            },
            None => (None, Vec::new()),
        };
        // A rule that only exports configuration makes no recovery points to keep or copy.
        let config_only =
            selection.as_ref().is_some_and(|s| s.resource_types.is_empty() && !s.s3 && !s.config_services.is_empty());
        let s3_only = selection.as_ref().is_some_and(|s| s.s3 && s.resource_types.is_empty());
        if s3_only && map.get("copy_to").is_some_and(|v| !v.is_null()) {
            self.error(
                &at(field, "copy_to"),
                "does not apply to s3: protection groups are copied to the vault (another region or account)",
            );
        }
        let (protection_groups, vault, continuous) = match &selection {
            Some(selection) => self.rule_s3(map, field, selection, inline_groups, plan_s3),
            None => (Vec::new(), None, None),
        };
        let retention = match self.field(map, field, "retention", !config_only) {
            Some(_) if config_only => {
                self.error(&at(field, "retention"), CONFIG_ONLY_NO_POINTS);
                None
            }
            Some(value) => self.retention(value, &at(field, "retention"), lock),
            None if config_only => Some(Retention::Days(0)),
            None => None,
        };
        if config_only && map.get("copy_to").is_some_and(|v| !v.is_null()) {
            self.error(&at(field, "copy_to"), CONFIG_ONLY_NO_POINTS);
        }
        let config_export = self.config_export(map, field, selection.as_ref());
        let mut copy_to = Vec::new();
        let mut destinations = BTreeSet::new();
        for (i, item) in self.list(map, field, "copy_to", false).iter().enumerate() {
            let item_field = index(&at(field, "copy_to"), i);
            if let Some(copy) = self.copy_to(item, &item_field, lock) {
                if !destinations.insert((copy.region.clone(), copy.account.clone())) {
                    self.error(&item_field, "the same destination (region and account) is listed twice");
                }
                copy_to.push(copy);
            }
        }
        let options = match self.field(map, field, "options", false) {
            Some(value) => self.options(value, &at(field, "options")),
            None => Some(RuleOptions::default()),
        };
        let drill = match self.field(map, field, "drill", false) {
            Some(value) => self.drill(value, &at(field, "drill")),
            None => None,
        };
        if drill.is_some() && selection.as_ref().is_some_and(|s| !s.has_tagged_types()) {
            self.error(
                &at(field, "drill"),
                "drills restore recovery points of ebs, ec2, rds and dynamodb: the selection has none",
            );
        }
        let (selection, retention, options) = (selection?, retention?, options?);
        self.check_options(field, &selection, &retention, &options);
        Some(Rule {
            name: name?,
            schedule: schedule?,
            start_window,
            completion_window,
            selection,
            retention,
            copy_to,
            options,
            drill,
            config_export,
            protection_groups,
            vault,
            continuous,
        })
    }

    /// `config_export: {bucket, region, prefix?, kms_key_id?}`: required with `route53` or
    /// `elbv2`, refused without; its region is not one the selection exports, so that a lost
    /// region does not take its configuration's copy with it.
    fn config_export(
        &mut self,
        map: &Map<String, Value>,
        field: &str,
        selection: Option<&Selection>,
    ) -> Option<ConfigExport> {
        let wanted = selection.is_some_and(|s| !s.config_services.is_empty());
        let export_field = at(field, "config_export");
        let value = match self.field(map, field, "config_export", false) {
            None if wanted => {
                self.error(
                    &export_field,
                    "required with route53 or elbv2: the S3 bucket (bucket, region) exports go to",
                );
                return None;
            }
            None => return None,
            Some(_) if !wanted && selection.is_some() => {
                self.error(&export_field, "applies to route53 and elbv2: the selection has neither");
                return None;
            }
            Some(value) => value,
        };
        let export = self.object(value, &export_field, &["bucket", "region", "prefix", "kms_key_id"])?;
        let bucket = self.string(export, &export_field, "bucket", true);
        if let Some(bucket) = bucket.as_deref().filter(|b| !valid_bucket(b)) {
            self.error(
                &at(&export_field, "bucket"),
                format!("`{bucket}` is not an S3 bucket name (3 to 63 lowercase letters, digits, `.` and `-`)"),
            );
        }
        let region = self.string(export, &export_field, "region", true);
        if let Some(region) = region.as_deref() {
            if !valid_region(region) {
                self.error(&at(&export_field, "region"), format!("`{region}` is not a region such as us-west-2"));
            } else if selection.is_some_and(|s| s.regions.iter().any(|r| r == region)) {
                self.error(
                    &at(&export_field, "region"),
                    format!("`{region}` is a region the rule exports: the exports go to S3 in another region"),
                );
            }
        }
        let prefix = self.string(export, &export_field, "prefix", false);
        let kms_key = self.string(export, &export_field, "kms_key_id", false);
        Some(ConfigExport { bucket: bucket?, region: region?, prefix, kms_key })
    }

    fn schedule(&mut self, map: &Map<String, Value>, field: &str) -> Option<Schedule> {
        let time_zone = match self.string(map, field, "time_zone", false) {
            None => Some(chrono_tz::UTC),
            Some(name) => match name.parse::<chrono_tz::Tz>() {
                Ok(zone) => Some(zone),
                Err(_) => {
                    self.error(
                        &at(field, "time_zone"),
                        format!("`{name}` is not an IANA time zone such as Europe/Berlin"),
                    );
                    None
                }
            },
        };
        let expression = self.string(map, field, "schedule", true)?;
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&expression);
        let cron = match cron {
            Ok(cron) => cron,
            Err(e) => {
                self.error(
                    &at(field, "schedule"),
                    format!("`{expression}` is not a cron expression (minute hour day month weekday): {e}"),
                );
                return None;
            }
        };
        let schedule = Schedule { expression, time_zone: time_zone?, cron };
        self.check_frequency(&schedule, &at(field, "schedule"));
        Some(schedule)
    }

    /// A rule more frequent than hourly, or never due, is refused: the first 64 due times from
    /// a fixed date are enough to see either (a pattern such as `0,30 2 * * *` shows its gap
    /// every day).
    fn check_frequency(&mut self, schedule: &Schedule, field: &str) {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut previous: Option<DateTime<Utc>> = None;
        let mut due = start;
        for _ in 0..64 {
            let Some(next) = crate::schedule::next_after(schedule, due) else {
                if previous.is_none() {
                    self.error(field, format!("`{}` is never due", schedule.expression));
                }
                return;
            };
            if previous.is_some_and(|previous| next - previous < MIN_START_WINDOW) {
                self.error(
                    field,
                    format!("`{}` is due more often than hourly (AWS Backup's limit)", schedule.expression),
                );
                return;
            }
            previous = Some(next);
            due = next;
        }
    }

    /// The selection, and the protection groups defined in it.
    fn selection(&mut self, value: &Value, field: &str) -> Option<(Selection, Vec<InlineGroup>)> {
        let known = ["resource_types", "accounts", "regions", "tags", "all_resources", "protection_groups"];
        let map = self.object(value, field, &known)?;
        let mut resource_types = Vec::new();
        let types = self.list(map, field, "resource_types", true);
        if types.is_empty() && map.get("resource_types").is_some_and(Value::is_array) {
            self.error(&at(field, "resource_types"), "the selection names no resource type");
        }
        let mut config_services = Vec::new();
        let mut s3 = false;
        for (i, item) in types.iter().enumerate() {
            let item_field = index(&at(field, "resource_types"), i);
            if item.as_str() == Some("s3") {
                if s3 {
                    self.error(&item_field, "`s3` is listed twice");
                }
                s3 = true;
                continue;
            }
            if let Some(service) = item.as_str().and_then(ConfigService::parse) {
                if config_services.contains(&service) {
                    self.error(&item_field, format!("`{}` is listed twice", service.as_str()));
                } else {
                    config_services.push(service);
                }
                continue;
            }
            match item.as_str().and_then(ResourceType::parse) {
                Some(t) if resource_types.contains(&t) => {
                    self.error(&item_field, format!("`{}` is listed twice", t.as_str()))
                }
                Some(t) => resource_types.push(t),
                None => {
                    let names: Vec<&str> = ResourceType::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .chain(ConfigService::ALL.iter().map(|s| s.as_str()))
                        .chain(["s3"])
                        .collect();
                    self.error(&item_field, format!("{item}: expected one of {}", names.join(", ")));
                }
            }
        }
        let accounts = self.strings(map, field, "accounts", false, valid_account, "is not a 12-digit account id");
        // Protection groups' buckets name their own accounts and regions.
        let only_groups = s3 && resource_types.is_empty() && config_services.is_empty();
        let regions =
            self.strings(map, field, "regions", !only_groups, valid_region, "is not a region such as us-east-1");
        if map.get("regions").and_then(Value::as_array).is_some_and(Vec::is_empty) && !only_groups {
            self.error(&at(field, "regions"), "the selection names no region");
        }
        if only_groups {
            for key in ["regions", "accounts", "tags"] {
                if map.get(key).is_some_and(|v| !v.is_null()) {
                    self.error(
                        &at(field, key),
                        "selects resources of the other types: the s3 buckets are those of the protection groups, \
                         with their own accounts and regions",
                    );
                }
            }
        }
        let (group_names, inline_groups) = self.selected_groups(map, field, s3);
        let (mut include_tags, mut exclude_tags) = (BTreeMap::new(), BTreeMap::new());
        if let Some(value) = self.field(map, field, "tags", false) {
            let tags_field = at(field, "tags");
            if let Some(tags) = self.object(value, &tags_field, &["include", "exclude"]) {
                include_tags = self.tags(tags, &tags_field, "include");
                exclude_tags = self.tags(tags, &tags_field, "exclude");
            }
        }
        for (tag, value) in include_tags.iter().filter(|(tag, value)| exclude_tags.get(*tag) == Some(value)) {
            self.error(
                &at(&at(field, "tags.exclude"), tag),
                format!("`{tag}: {value}` is also included: nothing is selected"),
            );
        }
        // As with restores, backing up a whole account takes saying so. Configuration is
        // exported whole: tags select only the other types.
        let all_resources = self.flag(map, field, "all_resources");
        let untagged = resource_types.is_empty() && (!config_services.is_empty() || s3);
        if include_tags.is_empty() && !all_resources && !untagged {
            self.error(
                &at(field, "tags.include"),
                "the selection has no tags: name some, or set all_resources: true to back up every resource",
            );
        }
        let selection = Selection {
            resource_types,
            accounts,
            regions,
            include_tags,
            exclude_tags,
            config_services,
            s3,
            protection_groups: group_names,
        };
        Some((selection, inline_groups))
    }

    /// A list of strings, each checked by `valid` and none repeated.
    fn strings(
        &mut self,
        map: &Map<String, Value>,
        field: &str,
        key: &str,
        required: bool,
        valid: fn(&str) -> bool,
        problem: &str,
    ) -> Vec<String> {
        let mut result: Vec<String> = Vec::new();
        for (i, item) in self.list(map, field, key, required).iter().enumerate() {
            let item_field = index(&at(field, key), i);
            match item.as_str() {
                Some(text) if !valid(text) => self.error(&item_field, format!("`{text}` {problem}")),
                Some(text) if result.iter().any(|seen| seen == text) => {
                    self.error(&item_field, format!("`{text}` is listed twice"))
                }
                Some(text) => result.push(text.to_string()),
                // An unquoted account id is a YAML number, and one with a leading zero loses it.
                None => self.error(&item_field, format!("{item}: must be a quoted string")),
            }
        }
        result
    }

    /// `days: N` or `keep: {daily, weekly, monthly, yearly}`, within the lock's bounds.
    fn retention(&mut self, value: &Value, field: &str, lock: Option<&Lock>) -> Option<Retention> {
        let map = self.object(value, field, &["days", "keep"])?;
        let retention = match (map.get("days"), map.get("keep")) {
            (Some(_), Some(_)) => {
                self.error(field, "give either days or keep, not both");
                return None;
            }
            (None, None) => {
                self.error(field, "give days (expire after N days) or keep (daily, weekly, monthly, yearly counts)");
                return None;
            }
            (Some(_), None) => {
                let days = self.count(map, field, "days", true)?;
                if days == 0 {
                    self.error(&at(field, "days"), "must be at least 1");
                    return None;
                }
                Retention::Days(days)
            }
            (None, Some(value)) => {
                let keep_field = at(field, "keep");
                let keep_map = self.object(value, &keep_field, &["daily", "weekly", "monthly", "yearly"])?;
                let mut count = |key| self.count(keep_map, &keep_field, key, false).unwrap_or(0);
                let keep = Keep {
                    daily: count("daily"),
                    weekly: count("weekly"),
                    monthly: count("monthly"),
                    yearly: count("yearly"),
                };
                if keep == Keep::default() {
                    self.error(&keep_field, "keeps nothing: give at least one of daily, weekly, monthly, yearly");
                    return None;
                }
                Retention::Keep(keep)
            }
        };
        if let Some(lock) = lock.filter(|lock| lock.mode != LockMode::None) {
            self.check_lock_bounds(&retention, field, lock);
        }
        Some(retention)
    }

    fn check_lock_bounds(&mut self, retention: &Retention, field: &str, lock: &Lock) {
        let (shortest, longest) = retention.bounds_days();
        if let Some(min) = lock.min_retention_days.filter(|min| shortest < u64::from(*min)) {
            self.error(
                &bound_field(retention, field, Bound::Shortest),
                format!("keeps points {shortest} days, less than the lock's min_retention_days ({min})"),
            );
        }
        if let Some(max) = lock.max_retention_days.filter(|max| longest > u64::from(*max)) {
            self.error(
                &bound_field(retention, field, Bound::Longest),
                format!("keeps points up to {longest} days, more than the lock's max_retention_days ({max})"),
            );
        }
    }

    fn copy_to(&mut self, value: &Value, field: &str, lock: Option<&Lock>) -> Option<CopyTo> {
        let map = self.object(value, field, &["region", "account", "kms_key", "retention"])?;
        let region = self.string(map, field, "region", true);
        if let Some(region) = region.as_deref().filter(|region| !valid_region(region)) {
            self.error(&at(field, "region"), format!("`{region}` is not a region such as us-east-1"));
        }
        let account = self.string(map, field, "account", false);
        if let Some(account) = account.as_deref().filter(|account| !valid_account(account)) {
            self.error(&at(field, "account"), format!("`{account}` is not a 12-digit account id"));
        }
        let kms_key = self.string(map, field, "kms_key", false);
        let retention = match self.field(map, field, "retention", true) {
            Some(value) => self.retention(value, &at(field, "retention"), lock),
            None => None,
        };
        Some(CopyTo { region: region?, account, kms_key, retention: retention? })
    }

    fn options(&mut self, value: &Value, field: &str) -> Option<RuleOptions> {
        let known = ["no_reboot", "continuous", "application_consistent", "cold_after_days"];
        let map = self.object(value, field, &known)?;
        let no_reboot = self.flag(map, field, "no_reboot");
        let continuous = self.flag(map, field, "continuous");
        let cold_after_days = self.count(map, field, "cold_after_days", false);
        if cold_after_days == Some(0) {
            self.error(&at(field, "cold_after_days"), "must be at least 1");
        }
        let scripts_field = at(field, "application_consistent");
        let application_consistent = self
            .field(map, field, "application_consistent", false)
            .and_then(|value| self.object(value, &scripts_field, &["pre", "post"]))
            .and_then(|scripts| {
                let pre = self.string(scripts, &scripts_field, "pre", true);
                let post = self.string(scripts, &scripts_field, "post", true);
                Some(AppConsistent { pre: pre?, post: post? })
            });
        Some(RuleOptions { no_reboot, continuous, application_consistent, cold_after_days })
    }

    /// Options that need a resource type the selection lacks, and the archive tier's minimum.
    fn check_options(&mut self, field: &str, selection: &Selection, retention: &Retention, options: &RuleOptions) {
        let options_field = at(field, "options");
        let has = |wanted: &[ResourceType]| selection.resource_types.iter().any(|t| wanted.contains(t));
        if options.no_reboot && !has(&[ResourceType::Ec2]) {
            self.error(&at(&options_field, "no_reboot"), "applies to AMIs: the selection has no ec2");
        }
        if options.continuous && !has(&[ResourceType::Dynamodb]) {
            self.error(
                &at(&options_field, "continuous"),
                "applies to DynamoDB tables: the selection has no dynamodb (S3's continuous backup is the rule's \
                 `continuous`)",
            );
        }
        if options.application_consistent.is_some() && !has(&[ResourceType::Ec2, ResourceType::EbsVolumeSet]) {
            self.error(
                &at(&options_field, "application_consistent"),
                "runs scripts on instances: the selection has no ec2 or ebs-volume-set",
            );
        }
        if let Some(cold) = options.cold_after_days.filter(|cold| *cold > 0) {
            if !selection.resource_types.iter().any(|t| t.is_ebs_snapshot()) {
                self.error(
                    &at(&options_field, "cold_after_days"),
                    "applies to EBS snapshots: the selection has no ebs or ebs-volume-set",
                );
            }
            // Every way of keeping a point that reaches the archive must keep it there 90 days;
            // a `keep` tier whose points are gone before `cold` days never reaches it.
            let needed = u64::from(cold) + ARCHIVE_MIN_DAYS;
            let is_days = matches!(retention, Retention::Days(_));
            for span in retention.spans() {
                if span.shortest_days < needed && (is_days || span.longest_days > u64::from(cold)) {
                    self.error(
                        &at(&at(field, "retention"), span.field),
                        format!(
                            "keeps points {} days; archived after {cold} days they must be kept at least {needed} \
                             ({ARCHIVE_MIN_DAYS} days in the archive tier)",
                            span.shortest_days
                        ),
                    );
                }
            }
        }
    }

    /// The plan's own protection groups, vault and continuous settings, which rules use.
    fn plan_s3(&mut self, map: &Map<String, Value>) -> PlanS3 {
        let mut plan_s3 = PlanS3::default();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in self.list(map, "", "protection_groups", false).iter().enumerate() {
            let field = index("protection_groups", i);
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                let first = *names.entry(name.to_string()).or_insert(i);
                if first != i {
                    self.error(&at(&field, "name"), format!("`{name}` is also the name of protection_groups[{first}]"));
                }
                plan_s3.defined.insert(name.to_string(), field.clone());
            }
            if let Some(group) = self.group(item, &field) {
                if !plan_s3.groups.iter().any(|g| g.name == group.name) {
                    plan_s3.groups.push(group);
                }
            }
        }
        plan_s3.vault_given = map.get("vault").is_some_and(|v| !v.is_null());
        plan_s3.vault = match self.field(map, "", "vault", false) {
            Some(value) => self.vault(value, "vault").map(|vault| (vault, "vault".to_string())),
            None => None,
        };
        plan_s3.continuous = match self.field(map, "", "continuous", false) {
            Some(value) => self.continuous(value, "continuous"),
            None => None,
        };
        plan_s3
    }

    /// `selection.protection_groups`: names of the plan's groups, or groups defined in place.
    fn selected_groups(&mut self, map: &Map<String, Value>, field: &str, s3: bool) -> (Vec<String>, Vec<InlineGroup>) {
        let groups_field = at(field, "protection_groups");
        let items = self.list(map, field, "protection_groups", false);
        if !s3 {
            if map.get("protection_groups").is_some_and(|v| !v.is_null()) {
                self.error(&groups_field, "applies to s3: add s3 to resource_types to back these groups up");
            }
            return (Vec::new(), Vec::new());
        }
        if items.is_empty() {
            self.error(&groups_field, "required with s3: the protection groups (by name, or defined here) to back up");
        }
        let (mut names, mut inline) = (Vec::new(), Vec::new());
        for (i, item) in items.iter().enumerate() {
            let item_field = index(&groups_field, i);
            let name = match item {
                Value::String(name) => Some(name.trim().to_string()),
                Value::Object(_) => {
                    let name = item.get("name").and_then(Value::as_str).map(|name| name.trim().to_string());
                    let group = self.group(item, &item_field);
                    if let Some(name) = &name {
                        inline.push(InlineGroup { field: item_field.clone(), name: name.clone(), group });
                    }
                    name
                }
                _ => {
                    self.error(&item_field, "a protection group's name, or a group (name, buckets, filter)");
                    None
                }
            };
            match name {
                Some(name) if names.contains(&name) => self.error(&item_field, format!("`{name}` is listed twice")),
                Some(name) => names.push(name),
                None => {}
            }
        }
        (names, inline)
    }

    /// The rule's groups resolved, its vault (or the plan's) checked against them, and its
    /// continuous settings (or the plan's).
    fn rule_s3(
        &mut self,
        map: &Map<String, Value>,
        field: &str,
        selection: &Selection,
        inline: Vec<InlineGroup>,
        plan_s3: &PlanS3,
    ) -> (Vec<ProtectionGroup>, Option<Vault>, Option<Continuous>) {
        let rule_vault = match self.field(map, field, "vault", false) {
            Some(_) if !selection.s3 => {
                self.error(&at(field, "vault"), "applies to s3: the selection has no s3");
                None
            }
            Some(value) => self.vault(value, &at(field, "vault")).map(|vault| (vault, at(field, "vault"))),
            None => None,
        };
        let rule_continuous = match self.field(map, field, "continuous", false) {
            Some(_) if !selection.s3 => {
                self.error(&at(field, "continuous"), "applies to s3: the selection has no s3");
                None
            }
            Some(value) => Some(self.continuous(value, &at(field, "continuous"))),
            None => None,
        };
        if !selection.s3 {
            return (Vec::new(), None, None);
        }
        let selection_field = at(field, "selection");
        for group in &inline {
            if let Some(defined) = plan_s3.defined.get(&group.name) {
                self.error(
                    &at(&group.field, "name"),
                    format!(
                        "`{}` is also the name of {defined}: name the plan's group, or rename this one",
                        group.name
                    ),
                );
            }
        }
        let mut groups: Vec<(String, ProtectionGroup)> = Vec::new();
        for (i, name) in selection.protection_groups.iter().enumerate() {
            let item_field = index(&at(&selection_field, "protection_groups"), i);
            let found = match inline.iter().find(|g| &g.name == name) {
                Some(defined_here) => defined_here.group.clone(),
                None => plan_s3.groups.iter().find(|g| &g.name == name).cloned(),
            };
            match found {
                Some(found) => groups.push((item_field, found)),
                // A group defined but invalid has its own errors.
                None if plan_s3.defined.contains_key(name) || inline.iter().any(|g| &g.name == name) => {}
                None => {
                    let known: Vec<&str> = plan_s3.defined.keys().map(String::as_str).collect();
                    let listed = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                    self.error(
                        &item_field,
                        format!("`{name}` is not a protection group of the plan (its protection_groups: {listed})"),
                    );
                }
            }
        }
        // A bucket is one task of a run: two groups of a rule cannot both have it.
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let mut twice = Vec::new();
        for (group_field, group) in &groups {
            for bucket in &group.buckets {
                match seen.get(bucket.bucket.as_str()) {
                    Some(other) if *other != group.name => {
                        twice.push((group_field.clone(), bucket.bucket.clone(), other.to_string()))
                    }
                    _ => {
                        seen.insert(&bucket.bucket, &group.name);
                    }
                }
            }
        }
        for (group_field, bucket, other) in twice {
            self.error(
                &group_field,
                format!("bucket `{bucket}` is also in group `{other}`: a rule backs a bucket up once"),
            );
        }
        let vault = rule_vault.or_else(|| plan_s3.vault.clone());
        match &vault {
            None if !map.contains_key("vault") && !plan_s3.vault_given => self.error(
                &at(field, "vault"),
                "required with s3: the bucket (bucket, region) the protection groups are copied to, here or at \
                 plan level",
            ),
            None => {}
            Some((vault, vault_field)) => {
                for (_, group) in &groups {
                    for bucket in &group.buckets {
                        if bucket.bucket == vault.bucket {
                            self.error(
                                &at(vault_field, "bucket"),
                                format!(
                                    "`{}` is a bucket of protection group `{}`: the vault is another bucket",
                                    vault.bucket, group.name
                                ),
                            );
                        } else if bucket.region == vault.region && bucket.account == vault.account {
                            self.error(
                                &at(vault_field, "region"),
                                format!(
                                    "`{}` is the region of bucket `{}` (group `{}`) in the same account: the vault is \
                                     in another region or account, so that losing one does not lose both",
                                    vault.region, bucket.bucket, group.name
                                ),
                            );
                        }
                    }
                }
            }
        }
        let from_rule = rule_continuous.is_some();
        let continuous = match rule_continuous {
            Some(continuous) => continuous,
            None => plan_s3.continuous,
        };
        // A check runs the rule every few minutes: it must not back up anything else.
        if continuous.is_some() && (selection.has_tagged_types() || !selection.config_services.is_empty()) {
            let (blamed, whose) = if from_rule {
                (at(field, "continuous"), "continuous backup")
            } else {
                (at(&selection_field, "resource_types"), "the plan's continuous backup")
            };
            self.error(
                &blamed,
                format!(
                    "{whose} checks only protection groups, every few minutes: a rule with it selects s3 alone \
                     (give the other types a rule of their own, or set continuous: {{enabled: false}})"
                ),
            );
        }
        (groups.into_iter().map(|(_, g)| g).collect(), vault.map(|(v, _)| v), continuous)
    }

    /// `{name, buckets: [{bucket, account_id, region}], filter: {prefixes, exclude_prefixes,
    /// storage_classes}}`.
    fn group(&mut self, value: &Value, field: &str) -> Option<ProtectionGroup> {
        let map = self.object(value, field, &["name", "buckets", "filter"])?;
        let name = self.string(map, field, "name", true);
        if let Some(name) = name.as_deref().filter(|name| !valid_name(name)) {
            self.error(&at(field, "name"), format!("`{name}`: use 1 to 50 letters, digits, `-`, `_` or `.`"));
        }
        let buckets_field = at(field, "buckets");
        let items = self.list(map, field, "buckets", true);
        if items.is_empty() && map.get("buckets").is_some_and(Value::is_array) {
            self.error(&buckets_field, "a protection group needs at least one bucket");
        }
        let mut buckets: Vec<GroupBucket> = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut complete = true;
        for (i, item) in items.iter().enumerate() {
            let item_field = index(&buckets_field, i);
            let Some(bucket_map) = self.object(item, &item_field, &["bucket", "account_id", "region"]) else {
                complete = false;
                continue;
            };
            let bucket = self.string(bucket_map, &item_field, "bucket", true);
            if let Some(bucket) = bucket.as_deref() {
                if !valid_bucket(bucket) {
                    self.error(
                        &at(&item_field, "bucket"),
                        format!("`{bucket}` is not an S3 bucket name (3 to 63 lowercase letters, digits, `.` and `-`)"),
                    );
                }
                let first = *names.entry(bucket.to_string()).or_insert(i);
                if first != i {
                    self.error(&at(&item_field, "bucket"), format!("`{bucket}` is also buckets[{first}]"));
                }
            }
            let account = self.string(bucket_map, &item_field, "account_id", false);
            if let Some(account) = account.as_deref().filter(|account| !valid_account(account)) {
                self.error(&at(&item_field, "account_id"), format!("`{account}` is not a 12-digit account id"));
            }
            let region = self.string(bucket_map, &item_field, "region", true);
            if let Some(region) = region.as_deref().filter(|region| !valid_region(region)) {
                self.error(&at(&item_field, "region"), format!("`{region}` is not a region such as us-east-1"));
            }
            match (bucket, region) {
                (Some(bucket), Some(region)) => buckets.push(GroupBucket { bucket, account, region }),
                _ => complete = false,
            }
        }
        let filter = match self.field(map, field, "filter", false) {
            Some(value) => self.object_filter(value, &at(field, "filter")),
            None => Some(ObjectFilter::default()),
        };
        (complete && !buckets.is_empty()).then_some(())?;
        Some(ProtectionGroup { name: name?, buckets, filter: filter? })
    }

    fn object_filter(&mut self, value: &Value, field: &str) -> Option<ObjectFilter> {
        let map = self.object(value, field, &["prefixes", "exclude_prefixes", "storage_classes"])?;
        let not_empty: fn(&str) -> bool = |text| !text.is_empty();
        let prefixes = self.strings(map, field, "prefixes", false, not_empty, "must not be empty");
        let exclude_prefixes = self.strings(map, field, "exclude_prefixes", false, not_empty, "must not be empty");
        for (i, exclude) in exclude_prefixes.iter().enumerate() {
            for (j, include) in prefixes.iter().enumerate().filter(|(_, include)| include.starts_with(exclude.as_str()))
            {
                self.error(
                    &index(&at(field, "exclude_prefixes"), i),
                    format!("`{exclude}` leaves out everything under prefixes[{j}] (`{include}`)"),
                );
            }
        }
        let problem = format!("is not an S3 storage class; one of {}", STORAGE_CLASSES.join(", "));
        let storage_classes = self.strings(
            map,
            field,
            "storage_classes",
            false,
            |class| STORAGE_CLASSES.iter().any(|known| *known == class),
            &problem,
        );
        Some(ObjectFilter { prefixes, exclude_prefixes, storage_classes })
    }

    /// `{bucket, region, account_id?, kms_key_id?, prefix?}`.
    fn vault(&mut self, value: &Value, field: &str) -> Option<Vault> {
        let map = self.object(value, field, &["bucket", "region", "account_id", "kms_key_id", "prefix"])?;
        let bucket = self.string(map, field, "bucket", true);
        if let Some(bucket) = bucket.as_deref().filter(|b| !valid_bucket(b)) {
            self.error(
                &at(field, "bucket"),
                format!("`{bucket}` is not an S3 bucket name (3 to 63 lowercase letters, digits, `.` and `-`)"),
            );
        }
        let region = self.string(map, field, "region", true);
        if let Some(region) = region.as_deref().filter(|region| !valid_region(region)) {
            self.error(&at(field, "region"), format!("`{region}` is not a region such as us-west-2"));
        }
        let account = self.string(map, field, "account_id", false);
        if let Some(account) = account.as_deref().filter(|account| !valid_account(account)) {
            self.error(&at(field, "account_id"), format!("`{account}` is not a 12-digit account id"));
        }
        let kms_key = self.string(map, field, "kms_key_id", false);
        let prefix = self.string(map, field, "prefix", false);
        if let Some(prefix) = prefix.as_deref().filter(|p| !p.ends_with('/') || p.starts_with('/')) {
            self.error(&at(field, "prefix"), format!("`{prefix}`: a prefix such as backups/s3/ (ends with `/`)"));
        }
        Some(Vault { bucket: bucket?, region: region?, account, kms_key, prefix })
    }

    /// `{enabled?, check_minutes?, min_updates?, max_interval_minutes?}`; None when disabled.
    fn continuous(&mut self, value: &Value, field: &str) -> Option<Continuous> {
        let known = ["enabled", "check_minutes", "min_updates", "max_interval_minutes"];
        let map = self.object(value, field, &known)?;
        let enabled = match self.field(map, field, "enabled", false) {
            None => true,
            Some(_) => self.flag(map, field, "enabled"),
        };
        let defaults = Continuous::default();
        let check_minutes = self.count(map, field, "check_minutes", false).unwrap_or(defaults.check_minutes);
        if !(MIN_CHECK_MINUTES..=MAX_CHECK_MINUTES).contains(&check_minutes) {
            self.error(
                &at(field, "check_minutes"),
                format!("{check_minutes}: must be from {MIN_CHECK_MINUTES} to {MAX_CHECK_MINUTES} minutes"),
            );
        }
        let min_updates = self.count(map, field, "min_updates", false).unwrap_or(defaults.min_updates);
        if min_updates == 0 {
            self.error(&at(field, "min_updates"), "must be at least 1 (a check syncs above this many updates)");
        }
        let max_interval_minutes =
            self.count(map, field, "max_interval_minutes", false).unwrap_or(defaults.max_interval_minutes);
        if max_interval_minutes < check_minutes {
            self.error(
                &at(field, "max_interval_minutes"),
                format!("{max_interval_minutes} is less than check_minutes ({check_minutes})"),
            );
        }
        enabled.then_some(Continuous { check_minutes, min_updates, max_interval_minutes })
    }

    fn drill(&mut self, value: &Value, field: &str) -> Option<Drill> {
        let map = self.object(value, field, &["resources", "target"])?;
        let resources = self.count(map, field, "resources", true);
        if resources == Some(0) {
            self.error(&at(field, "resources"), "must be at least 1");
        }
        let target_field = at(field, "target");
        let target = match self.field(map, field, "target", true) {
            Some(value) => {
                let target = self.object(value, &target_field, &["account", "region", "subnet"]);
                target.and_then(|target| {
                    let account = self.string(target, &target_field, "account", true);
                    if let Some(account) = account.as_deref().filter(|account| !valid_account(account)) {
                        self.error(&at(&target_field, "account"), format!("`{account}` is not a 12-digit account id"));
                    }
                    let region = self.string(target, &target_field, "region", true);
                    if let Some(region) = region.as_deref().filter(|region| !valid_region(region)) {
                        self.error(
                            &at(&target_field, "region"),
                            format!("`{region}` is not a region such as us-east-1"),
                        );
                    }
                    let subnet = self.string(target, &target_field, "subnet", true);
                    if let Some(subnet) = subnet.as_deref().filter(|subnet| !subnet.starts_with("subnet-")) {
                        self.error(&at(&target_field, "subnet"), format!("`{subnet}` is not a subnet id (subnet-...)"));
                    }
                    Some(DrillTarget { account: account?, region: region?, subnet: subnet? })
                })
            }
            None => None,
        };
        Some(Drill { resources: resources.filter(|n| *n > 0)?, target: target? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/backup-plan.yaml");

    fn errors(text: &str) -> Vec<String> {
        match load("plan.yaml", text) {
            Ok(plan) => panic!("accepted: {plan:?}"),
            Err(LoadError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    fn fields(text: &str) -> Vec<String> {
        let mut fields: Vec<String> =
            errors(text).into_iter().map(|e| e.split(": ").next().unwrap_or_default().to_string()).collect();
        fields.sort();
        fields
    }

    /// A valid one-rule plan, with `rule` appended to its rule's fields.
    fn with_rule(extra: &str) -> String {
        format!(
            "name: p\nrules:\n  - name: r\n    schedule: \"0 5 * * *\"\n    \
             selection: {{resource_types: [ebs], regions: [us-east-1], tags: {{include: {{app: web}}}}}}\n{extra}"
        )
    }

    #[test]
    fn the_example_plan_is_valid() {
        let plan = load("examples/backup-plan.yaml", EXAMPLE).expect("the example is valid");
        assert_eq!(plan.name, "prod-nightly");
        let names: Vec<&str> = plan.rules.iter().map(|rule| rule.name.as_str()).collect();
        assert_eq!(names, ["nightly", "data-6h", "weekly-ami"]);
        let nightly = &plan.rules[0];
        assert_eq!(nightly.schedule.time_zone, chrono_tz::Europe::Berlin);
        assert_eq!((nightly.start_window, nightly.completion_window), (TimeDelta::hours(1), TimeDelta::hours(8)));
        assert_eq!(nightly.retention, Retention::Keep(Keep { daily: 7, weekly: 4, monthly: 12, yearly: 0 }));
        assert_eq!(nightly.selection.exclude_tags.get("backup").map(String::as_str), Some("skip"));
        assert_eq!(nightly.copy_to[0].kms_key.as_deref(), Some("alias/backup-copies"));
        assert_eq!(nightly.drill.as_ref().map(|drill| drill.target.subnet.as_str()), Some("subnet-0abc1234"));
        assert_eq!(plan.rules[1].start_window, DEFAULT_START_WINDOW);
        assert_eq!(plan.lock.mode, LockMode::Governance);
        // The same plan as JSON reads the same.
        let document: Value = serde_yaml_ng::from_str(EXAMPLE).expect("yaml");
        let json = serde_json::to_string(&document).expect("json");
        assert_eq!(load("plan.json", &json).expect("json plan").rules.len(), 3);
    }

    #[test]
    fn every_error_is_reported_by_its_field() {
        let text = r#"
name: bad/name
colour: blue
lock: {mode: COMPLIANCE}
rules:
  - name: a
    schedule: "61 * * * *"
    time_zone: Mars/Olympus
    start_window: 30m
    completion_window: 20m
    selection: {resource_types: [ebs, tape], regions: [moon-1], tags: {include: {app: web}}}
    retention: {keep: {daily: 7, weekly: -1, hourly: 3}}
    copy_to:
      - {region: us-west-2x, account: "123", retention: {days: 30}}
  - name: a
    schedule: "0 5 * * *"
    selection: {resource_types: [], regions: [us-east-1]}
    retention: {days: 0}
"#;
        assert_eq!(
            fields(text),
            [
                "colour",
                "lock.min_retention_days",
                "name",
                "rules[0].completion_window",
                "rules[0].copy_to[0].account",
                "rules[0].copy_to[0].region",
                "rules[0].retention.keep.hourly",
                "rules[0].retention.keep.weekly",
                "rules[0].schedule",
                "rules[0].selection.regions[0]",
                "rules[0].selection.resource_types[1]",
                "rules[0].start_window",
                "rules[0].time_zone",
                "rules[1].name",
                "rules[1].retention.days",
                "rules[1].selection.resource_types",
                "rules[1].selection.tags.include",
            ]
        );
    }

    #[test]
    fn duplicate_rule_names_are_rejected_when_the_rules_are_otherwise_valid() {
        let rule = "  - name: r\n    schedule: \"0 5 * * *\"\n    \
                    selection: {resource_types: [ebs], regions: [us-east-1], all_resources: true}\n    \
                    retention: {days: 7}\n";
        let text = format!("name: p\nrules:\n{rule}{rule}");
        assert_eq!(errors(&text), ["rules[1].name: `r` is also the name of rules[0]"]);
    }

    #[test]
    fn retention_outside_the_locks_bounds_is_rejected() {
        let lock = "lock: {mode: GOVERNANCE, min_retention_days: 14, max_retention_days: 365}\n";
        let text = format!(
            "{lock}{}",
            with_rule(
                "    retention: {days: 7}\n    copy_to:\n      - region: us-west-2\n        \
                 retention: {keep: {daily: 30, yearly: 2}}\n"
            )
        );
        assert_eq!(
            errors(&text),
            [
                "rules[0].retention.days: keeps points 7 days, less than the lock's min_retention_days (14)",
                "rules[0].copy_to[0].retention.keep.yearly: keeps points up to 732 days, more than the lock's \
                 max_retention_days (365)",
            ]
        );
    }

    #[test]
    fn lock_bounds_must_be_ordered_and_named_by_their_mode() {
        assert_eq!(
            fields(&format!(
                "lock: {{mode: COMPLIANCE, min_retention_days: 30, max_retention_days: 7}}\n{}",
                with_rule("    retention: {days: 10}\n")
            )),
            // 10 days is both under the minimum and over the maximum.
            ["lock.max_retention_days", "rules[0].retention.days", "rules[0].retention.days"]
        );
        assert_eq!(
            fields(&format!(
                "lock: {{mode: NONE, max_retention_days: 7}}\n{}",
                with_rule("    retention: {days: 10}\n")
            )),
            ["lock.mode"]
        );
        assert_eq!(
            fields(&format!("lock: {{mode: FROZEN}}\n{}", with_rule("    retention: {days: 10}\n"))),
            ["lock.mode"]
        );
    }

    #[test]
    fn a_snapshot_lock_needs_a_locking_mode_and_a_minimum() {
        let plan = |lock: &str| format!("lock: {{{lock}}}\n{}", with_rule("    retention: {days: 10}\n"));
        let locked = load("plan.yaml", &plan("mode: COMPLIANCE, min_retention_days: 7, snapshot_lock: true"));
        assert!(locked.expect("a valid plan").lock.snapshot_lock);
        assert_eq!(fields(&plan("mode: GOVERNANCE, snapshot_lock: true")), ["lock.snapshot_lock"]);
        assert_eq!(fields(&plan("mode: NONE, snapshot_lock: true")), ["lock.snapshot_lock"]);
        assert_eq!(
            fields(&plan("mode: COMPLIANCE, min_retention_days: 7, snapshot_lock: yes please")),
            ["lock.snapshot_lock"]
        );
    }

    #[test]
    fn the_archive_tier_needs_ninety_days_after_cold_after_days() {
        let too_short = with_rule("    retention: {days: 100}\n    options: {cold_after_days: 30}\n");
        assert_eq!(
            errors(&too_short),
            ["rules[0].retention.days: keeps points 100 days; archived after 30 days they must be kept at least 120 \
              (90 days in the archive tier)"]
        );
        assert!(load("p.yaml", &with_rule("    retention: {days: 120}\n    options: {cold_after_days: 30}\n")).is_ok());
        // Weekly points (8 weeks) reach the archive and leave it too soon; daily ones never reach it.
        let gfs = with_rule(
            "    retention: {keep: {daily: 7, weekly: 8, monthly: 12}}\n    options: {cold_after_days: 30}\n",
        );
        assert_eq!(fields(&gfs), ["rules[0].retention.keep.weekly"]);
    }

    #[test]
    fn options_need_the_resource_types_they_apply_to() {
        let text = with_rule(
            "    retention: {days: 7}\n    options:\n      no_reboot: true\n      continuous: true\n      \
             application_consistent: {pre: freeze}\n",
        );
        assert_eq!(
            fields(&text),
            [
                "rules[0].options.application_consistent.post",
                "rules[0].options.continuous",
                "rules[0].options.no_reboot",
            ]
        );
    }

    #[test]
    fn schedules_more_often_than_hourly_or_never_due_are_rejected() {
        let every_half_hour = with_rule("    retention: {days: 7}\n").replace("0 5 * * *", "0,30 5 * * *");
        assert_eq!(fields(&every_half_hour), ["rules[0].schedule"]);
        let never = with_rule("    retention: {days: 7}\n").replace("0 5 * * *", "0 5 31 2 *");
        assert!(errors(&never)[0].contains("never due"), "{:?}", errors(&never));
    }

    #[test]
    fn drills_need_an_isolated_target() {
        let text = with_rule(
            "    retention: {days: 7}\n    drill: {resources: 0, target: {account: \"123456789012\", region: us-east-1, \
             subnet: sg-1}}\n",
        );
        assert_eq!(fields(&text), ["rules[0].drill.resources", "rules[0].drill.target.subnet"]);
    }

    #[test]
    fn reserved_tags_and_conflicting_selection_tags_are_rejected() {
        let text = format!(
            "tags: {{\"lifeboat:plan\": x}}\n{}",
            with_rule("    retention: {days: 7}\n")
                .replace("include: {app: web}", "include: {app: web}, exclude: {app: web}")
        );
        assert_eq!(fields(&text), ["rules[0].selection.tags.exclude.app", "tags.lifeboat:plan"]);
    }

    #[test]
    fn config_exports_need_a_bucket_in_another_region_and_no_retention() {
        let config = |extra: &str| {
            format!(
                "name: p\nrules:\n  - name: r\n    schedule: \"0 5 * * *\"\n    \
                 selection: {{resource_types: [route53, elbv2], regions: [us-east-1]}}\n{extra}"
            )
        };
        let plan = load("p.yaml", &config("    config_export: {bucket: cfg-exports, region: us-west-2}\n"))
            .expect("a config-only rule needs no tags and no retention");
        let rule = &plan.rules[0];
        assert_eq!(rule.selection.config_services, [ConfigService::Route53, ConfigService::Elbv2]);
        assert_eq!(rule.config_export.as_ref().map(|e| e.region.as_str()), Some("us-west-2"));
        assert_eq!(fields(&config("")), ["rules[0].config_export"]);
        assert_eq!(
            fields(&config(
                "    retention: {days: 7}\n    config_export: {bucket: Bad_Bucket, region: us-east-1, colour: x}\n"
            )),
            [
                "rules[0].config_export.bucket",
                "rules[0].config_export.colour",
                "rules[0].config_export.region",
                "rules[0].retention",
            ]
        );
        let ebs = with_rule("    retention: {days: 7}\n    config_export: {bucket: cfg-exports, region: us-west-2}\n");
        assert_eq!(fields(&ebs), ["rules[0].config_export"]);
    }

    #[test]
    fn syntax_errors_name_the_file_and_durations_parse_largest_unit_first() {
        assert!(matches!(load("p.yaml", "name: [unclosed"), Err(LoadError::Syntax { path, .. }) if path == "p.yaml"));
        assert!(matches!(load("p.json", "{\"name\": "), Err(LoadError::Syntax { .. })));
        assert_eq!(parse_duration("90m"), Some(TimeDelta::minutes(90)));
        assert_eq!(parse_duration("2h30m"), Some(TimeDelta::minutes(150)));
        assert_eq!(parse_duration("7d"), Some(TimeDelta::days(7)));
        for bad in ["", "h", "30m2h", "1h1h", "5", "1w", "-1h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    const S3_EXAMPLE: &str = include_str!("../../../examples/s3-protection-plan.yaml");

    /// A valid plan with two groups and a vault, `rule` replacing its one rule's extra fields.
    fn s3_plan(groups: &str, vault: &str, rule: &str) -> String {
        format!(
            "name: p\n{groups}{vault}rules:\n  - name: r\n    schedule: \"0 1 * * *\"\n    retention: {{days: 7}}\n{rule}"
        )
    }

    const TWO_GROUPS: &str = "protection_groups:\n  - {name: g1, buckets: [{bucket: one, region: us-east-1}, \
                              {bucket: two, region: us-east-1}]}\n  - {name: g2, buckets: [{bucket: three, region: \
                              eu-west-1}]}\n";
    const VAULT: &str = "vault: {bucket: the-vault, region: us-west-2}\n";

    #[test]
    fn the_s3_example_plan_is_valid() {
        let plan = load("examples/s3-protection-plan.yaml", S3_EXAMPLE).expect("the s3 example is valid");
        let rule = &plan.rules[0];
        assert!(rule.selection.s3);
        assert_eq!(rule.selection.protection_groups, ["web-assets", "reports"]);
        let names: Vec<&str> = rule.protection_groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["web-assets", "reports"]);
        let web = &rule.protection_groups[0];
        assert_eq!(web.buckets[1].account.as_deref(), Some("123456789012"));
        assert_eq!(web.filter.exclude_prefixes, ["uploads/tmp/"]);
        assert_eq!(web.filter.storage_classes.len(), 4);
        let vault = rule.vault.as_ref().expect("the plan's vault");
        assert_eq!((vault.bucket.as_str(), vault.region.as_str()), ("acme-s3-vault", "us-west-2"));
        assert_eq!((vault.kms_key.as_deref(), vault.prefix.as_deref()), (Some("alias/s3-vault"), Some("lifeboat/")));
        assert_eq!(rule.continuous, Some(Continuous { check_minutes: 15, min_updates: 32, max_interval_minutes: 60 }));
        assert_eq!(plan.protection_groups.len(), 2);
    }

    #[test]
    fn groups_are_selected_by_name_or_defined_in_the_selection_and_the_rules_vault_wins() {
        let rule = "    selection:\n      resource_types: [s3]\n      protection_groups:\n        - g2\n        - \
                    {name: here, buckets: [{bucket: four, region: ap-southeast-2}], filter: {prefixes: [a/]}}\n    \
                    vault: {bucket: rule-vault, region: eu-central-1, prefix: s3/}\n    continuous: {}\n";
        let plan = load("p.yaml", &s3_plan(TWO_GROUPS, VAULT, rule)).expect("valid");
        let rule = &plan.rules[0];
        let names: Vec<&str> = rule.protection_groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["g2", "here"]);
        assert_eq!(rule.protection_groups[1].filter.prefixes, ["a/"]);
        assert_eq!(rule.vault.as_ref().map(|v| v.bucket.as_str()), Some("rule-vault"));
        // `continuous: {}` is enabled with the defaults.
        assert_eq!(rule.continuous, Some(Continuous::default()));
        // A plan-level continuous setting, turned off by the rule.
        let off = s3_plan(
            TWO_GROUPS,
            &format!("{VAULT}continuous: {{check_minutes: 10}}\n"),
            "    selection: {resource_types: [s3], protection_groups: [g1]}\n    continuous: {enabled: false}\n",
        );
        assert_eq!(load("p.yaml", &off).expect("valid").rules[0].continuous, None);
    }

    #[test]
    fn protection_group_errors_are_named_by_field() {
        let groups = "protection_groups:\n  - {name: g1, buckets: [{bucket: one, region: us-east-1}]}\n  - name: \
                      g1\n    buckets:\n      - {bucket: Bad_Bucket, region: us-east-1, account_id: \"12\"}\n      - \
                      {bucket: ok-bucket, region: mars-1}\n      - {bucket: ok-bucket, region: us-east-1}\n    \
                      filter: {prefixes: [logs/], exclude_prefixes: [log], storage_classes: [STANDARD, GLACIR]}\n  - \
                      {name: empty, buckets: []}\n";
        let rule = "    selection: {resource_types: [s3], protection_groups: [g1, missing]}\n";
        assert_eq!(
            fields(&s3_plan(groups, VAULT, rule)),
            [
                "protection_groups[1].buckets[0].account_id",
                "protection_groups[1].buckets[0].bucket",
                "protection_groups[1].buckets[1].region",
                "protection_groups[1].buckets[2].bucket",
                "protection_groups[1].filter.exclude_prefixes[0]",
                "protection_groups[1].filter.storage_classes[1]",
                "protection_groups[1].name",
                "protection_groups[2].buckets",
                "rules[0].selection.protection_groups[1]",
            ]
        );
        let text = errors(&s3_plan(groups, VAULT, rule)).join("\n");
        assert!(text.contains("`missing` is not a protection group of the plan (its protection_groups: empty, g1)"));
        assert!(text.contains("`GLACIR` is not an S3 storage class; one of STANDARD,"), "{text}");
    }

    #[test]
    fn a_rule_selecting_s3_needs_groups_and_a_vault_elsewhere() {
        let no_vault = s3_plan(TWO_GROUPS, "", "    selection: {resource_types: [s3], protection_groups: [g1]}\n");
        assert_eq!(errors(&no_vault), ["rules[0].vault: required with s3: the bucket (bucket, region) the protection groups are copied to, here or at plan level"]);
        let no_groups = s3_plan(TWO_GROUPS, VAULT, "    selection: {resource_types: [s3]}\n");
        assert_eq!(fields(&no_groups), ["rules[0].selection.protection_groups"]);
        // The vault in a protected bucket's region and account, or one of the buckets.
        let same_region = s3_plan(
            TWO_GROUPS,
            "vault: {bucket: the-vault, region: eu-west-1, prefix: /abs}\n",
            "    selection: {resource_types: [s3], protection_groups: [g2]}\n",
        );
        assert_eq!(fields(&same_region), ["vault.prefix", "vault.region"]);
        let in_group = s3_plan(
            TWO_GROUPS,
            "",
            "    selection: {resource_types: [s3], protection_groups: [g1]}\n    vault: {bucket: two, region: us-west-2, \
             account_id: \"123456789012\"}\n",
        );
        assert_eq!(fields(&in_group), ["rules[0].vault.bucket"]);
        // Another account is enough.
        let other_account = s3_plan(
            TWO_GROUPS,
            "vault: {bucket: the-vault, region: eu-west-1, account_id: \"210987654321\"}\n",
            "    selection: {resource_types: [s3], protection_groups: [g2]}\n",
        );
        assert!(load("p.yaml", &other_account).is_ok());
    }

    #[test]
    fn s3_settings_need_s3_and_s3_needs_no_regions_or_tags() {
        // vault, continuous and protection_groups on a rule without s3.
        let ebs = with_rule(
            "    retention: {days: 7}\n    vault: {bucket: the-vault, region: us-west-2}\n    continuous: {}\n",
        )
        .replace("tags: {include: {app: web}}", "tags: {include: {app: web}}, protection_groups: [g]");
        assert_eq!(fields(&ebs), ["rules[0].continuous", "rules[0].selection.protection_groups", "rules[0].vault"]);
        // The plan's vault with no rule selecting s3.
        assert_eq!(fields(&format!("{VAULT}{}", with_rule("    retention: {days: 7}\n"))), ["vault"]);
        // s3 alone: regions, accounts and tags select nothing; copies go to the vault.
        let extra = s3_plan(
            TWO_GROUPS,
            VAULT,
            "    selection: {resource_types: [s3, s3], protection_groups: [g1, g1], regions: [us-east-1], tags: \
             {include: {a: b}}}\n    copy_to: [{region: us-west-2, retention: {days: 7}}]\n",
        );
        assert_eq!(
            fields(&extra),
            [
                "rules[0].copy_to",
                "rules[0].selection.protection_groups[1]",
                "rules[0].selection.regions",
                "rules[0].selection.resource_types[1]",
                "rules[0].selection.tags",
            ]
        );
        // s3 beside ebs: the ebs part still needs its regions and tags; continuous needs s3 alone.
        let mixed = s3_plan(
            TWO_GROUPS,
            VAULT,
            "    selection: {resource_types: [ebs, s3], protection_groups: [g1], regions: [us-east-1], tags: {include: \
             {a: b}}}\n",
        );
        assert!(load("p.yaml", &mixed).is_ok(), "{:?}", load("p.yaml", &mixed).err());
        let mixed_continuous = mixed.clone() + "    continuous: {}\n";
        assert_eq!(fields(&mixed_continuous), ["rules[0].continuous"]);
        let plan_continuous = mixed.replace("vault:", "continuous: {}\nvault:");
        assert_eq!(fields(&plan_continuous), ["rules[0].selection.resource_types"]);
    }

    #[test]
    fn a_bucket_is_in_one_group_of_a_rule_and_inline_groups_do_not_shadow_the_plans() {
        let groups = "protection_groups:\n  - {name: g1, buckets: [{bucket: one, region: us-east-1}]}\n  - {name: g2, \
                      buckets: [{bucket: one, region: us-east-1}]}\n";
        assert_eq!(
            fields(&s3_plan(groups, VAULT, "    selection: {resource_types: [s3], protection_groups: [g1, g2]}\n")),
            ["rules[0].selection.protection_groups[1]"]
        );
        let shadow = "    selection:\n      resource_types: [s3]\n      protection_groups: [{name: g1, buckets: \
                      [{bucket: five, region: us-east-1}]}]\n";
        assert_eq!(fields(&s3_plan(groups, VAULT, shadow)), ["rules[0].selection.protection_groups[0].name"]);
    }

    #[test]
    fn continuous_settings_are_bounded() {
        let rule = |continuous: &str| {
            s3_plan(
                TWO_GROUPS,
                VAULT,
                &format!(
                    "    selection: {{resource_types: [s3], protection_groups: [g1]}}\n    continuous: {continuous}\n"
                ),
            )
        };
        assert_eq!(
            fields(&rule("{check_minutes: 2, min_updates: 0, max_interval_minutes: 1, every: 3}")),
            [
                "rules[0].continuous.check_minutes",
                "rules[0].continuous.every",
                "rules[0].continuous.max_interval_minutes",
                "rules[0].continuous.min_updates",
            ]
        );
        assert_eq!(fields(&rule("{enabled: maybe}")), ["rules[0].continuous.enabled"]);
        assert_eq!(fields(&rule("{max_interval_minutes: 10}")), ["rules[0].continuous.max_interval_minutes"]);
    }
}
