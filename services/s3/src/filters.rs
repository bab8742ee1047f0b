//! Object filters of a restore from a protection group (Clumio's `search_object_filters`). (helper h2)
//!
//! The restore target carries them as JSON in `target.s3.object_filters_json`; errors name the
//! offending field as `target.s3.object_filters_json.<key>` so a user can fix the request.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use crate::vault::Entry;

/// The field path every error message starts with.
const FIELD: &str = "target.s3.object_filters_json";

/// Which index entries a restore copies. Empty/absent fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectFilters {
    /// An index holds one version per key, so every entry is already the latest one as of
    /// the index: kept so a request saying so is accepted.
    pub latest_version_only: bool,
    pub prefix: Option<String>,
    /// Clumio's `prefix_filters`: an entry matches when it is under any of them and under none
    /// of that one's `excluded_sub_prefixes` (relative to its prefix).
    pub prefix_filters: Vec<PrefixFilter>,
    pub storage_classes: Vec<String>,
    /// Inclusive bounds on the entry's `last_modified`.
    pub start_timestamp: Option<DateTime<Utc>>,
    pub end_timestamp: Option<DateTime<Utc>>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub object_key_contains: Option<String>,
}

/// One of Clumio's `prefix_filters`: `{"prefix": "logs/", "excluded_sub_prefixes": ["tmp/"]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixFilter {
    pub prefix: String,
    pub excluded_sub_prefixes: Vec<String>,
}

impl PrefixFilter {
    fn matches(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| !self.excluded_sub_prefixes.iter().any(|sub| rest.starts_with(sub.as_str())))
    }
}

impl ObjectFilters {
    /// Parses `object_filters_json`; an empty string means no filter.
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: Value = serde_json::from_str(json).map_err(|e| format!("{FIELD}: not valid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err(format!("{FIELD}: must be a JSON object"));
        };
        let mut filters = Self::default();
        for (key, value) in &map {
            if value.is_null() {
                continue;
            }
            match key.as_str() {
                "latest_version_only" => {
                    filters.latest_version_only =
                        value.as_bool().ok_or_else(|| format!("{FIELD}.{key}: must be true or false"))?
                }
                "prefix" => filters.prefix = Some(string(key, value)?),
                "prefix_filters" => filters.prefix_filters = prefix_filters(value)?,
                "etag" => filters.etag = Some(string(key, value)?.trim_matches('"').to_string()),
                "version_id" => filters.version_id = Some(string(key, value)?),
                "object_key_contains" => filters.object_key_contains = Some(string(key, value)?),
                "storage_classes" => {
                    let Value::Array(items) = value else {
                        return Err(format!("{FIELD}.{key}: must be a list of storage classes"));
                    };
                    filters.storage_classes = items
                        .iter()
                        .map(|item| string(key, item).map(|s| s.to_uppercase()))
                        .collect::<Result<_, _>>()?;
                }
                "start_timestamp" => filters.start_timestamp = Some(timestamp(key, value)?),
                "end_timestamp" => filters.end_timestamp = Some(timestamp(key, value)?),
                _ => return Err(format!("{FIELD}.{key}: unknown object filter")),
            }
        }
        if let (Some(start), Some(end)) = (filters.start_timestamp, filters.end_timestamp) {
            if start > end {
                return Err(format!("{FIELD}.start_timestamp: after end_timestamp"));
            }
        }
        Ok(filters)
    }

    /// Whether the restore copies this entry.
    pub fn matches(&self, entry: &Entry) -> bool {
        self.prefix.as_ref().is_none_or(|p| entry.key.starts_with(p.as_str()))
            && (self.prefix_filters.is_empty() || self.prefix_filters.iter().any(|f| f.matches(&entry.key)))
            && (self.storage_classes.is_empty()
                || self.storage_classes.iter().any(|c| c.eq_ignore_ascii_case(&entry.storage_class)))
            && self.start_timestamp.is_none_or(|t| entry.last_modified >= t)
            && self.end_timestamp.is_none_or(|t| entry.last_modified <= t)
            && self.etag.as_ref().is_none_or(|e| entry.etag.trim_matches('"') == e)
            && self.version_id.as_ref().is_none_or(|v| &entry.version_id == v)
            && self.object_key_contains.as_ref().is_none_or(|s| entry.key.contains(s.as_str()))
    }
}

fn string(key: &str, value: &Value) -> Result<String, String> {
    value.as_str().map(str::to_string).ok_or_else(|| format!("{FIELD}.{key}: must be a string"))
}

/// `[{"prefix": "a/", "excluded_sub_prefixes": ["tmp/"]}, ...]`, errors naming the item.
fn prefix_filters(value: &Value) -> Result<Vec<PrefixFilter>, String> {
    let field = format!("{FIELD}.prefix_filters");
    let Value::Array(items) = value else {
        return Err(format!("{field}: must be a list of {{prefix, excluded_sub_prefixes}}"));
    };
    let mut filters = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(format!("{field}[{i}]: must be an object with a prefix"));
        };
        let mut filter = PrefixFilter::default();
        for (key, value) in map {
            match (key.as_str(), value) {
                (_, Value::Null) => {}
                ("prefix", Value::String(prefix)) => filter.prefix = prefix.clone(),
                ("excluded_sub_prefixes", Value::Array(subs)) => {
                    filter.excluded_sub_prefixes = subs
                        .iter()
                        .enumerate()
                        .map(|(j, sub)| {
                            sub.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| format!("{field}[{i}].excluded_sub_prefixes[{j}]: must be a string"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                ("prefix", _) => return Err(format!("{field}[{i}].prefix: must be a string")),
                ("excluded_sub_prefixes", _) => {
                    return Err(format!("{field}[{i}].excluded_sub_prefixes: must be a list of strings"))
                }
                _ => return Err(format!("{field}[{i}].{key}: unknown field (prefix, excluded_sub_prefixes)")),
            }
        }
        filters.push(filter);
    }
    Ok(filters)
}

/// RFC 3339 or unix seconds (as a number or a string of digits).
fn timestamp(key: &str, value: &Value) -> Result<DateTime<Utc>, String> {
    let bad = || format!("{FIELD}.{key}: must be an RFC 3339 time or unix seconds");
    let seconds = match value {
        Value::Number(n) => n.as_i64().ok_or_else(bad)?,
        Value::String(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| bad()),
        },
        _ => return Err(bad()),
    };
    Utc.timestamp_opt(seconds, 0).single().ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, class: &str, modified: i64) -> Entry {
        Entry {
            key: key.into(),
            version_id: "v1".into(),
            etag: "\"abc\"".into(),
            size: 3,
            storage_class: class.into(),
            last_modified: Utc.timestamp_opt(modified, 0).unwrap(),
            backed_up_at: Utc.timestamp_opt(modified + 10, 0).unwrap(),
            vault_key: format!("vault/{key}"),
        }
    }

    #[test]
    fn empty_matches_everything() {
        let f = ObjectFilters::parse("").unwrap();
        assert_eq!(f, ObjectFilters::default());
        assert!(f.matches(&entry("a", "STANDARD", 0)));
        assert!(ObjectFilters::parse("{}").unwrap().matches(&entry("a", "GLACIER", 0)));
    }

    #[test]
    fn unknown_key_names_the_field() {
        let err = ObjectFilters::parse(r#"{"prefix":"a/","colour":"red"}"#).unwrap_err();
        assert!(err.contains("target.s3.object_filters_json.colour"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = ObjectFilters::parse(r#"{"storage_classes":"STANDARD"}"#).unwrap_err();
        assert!(err.contains("object_filters_json.storage_classes"), "{err}");
        let err = ObjectFilters::parse(r#"{"start_timestamp":"yesterday"}"#).unwrap_err();
        assert!(err.contains("object_filters_json.start_timestamp"), "{err}");
        let err = ObjectFilters::parse("[1]").unwrap_err();
        assert!(err.starts_with("target.s3.object_filters_json"), "{err}");
    }

    #[test]
    fn prefix_class_and_key_filters() {
        let f =
            ObjectFilters::parse(r#"{"prefix":"logs/","storage_classes":["standard"],"object_key_contains":"2024"}"#)
                .unwrap();
        assert!(f.matches(&entry("logs/2024-01", "STANDARD", 0)));
        assert!(!f.matches(&entry("data/2024-01", "STANDARD", 0)));
        assert!(!f.matches(&entry("logs/2024-01", "GLACIER", 0)));
        assert!(!f.matches(&entry("logs/2023-01", "STANDARD", 0)));
    }

    #[test]
    fn timestamps_rfc3339_or_unix_seconds() {
        let f = ObjectFilters::parse(r#"{"start_timestamp":"1970-01-01T00:01:40Z","end_timestamp":200}"#).unwrap();
        assert!(!f.matches(&entry("a", "STANDARD", 99)));
        assert!(f.matches(&entry("a", "STANDARD", 100)));
        assert!(f.matches(&entry("a", "STANDARD", 200)));
        assert!(!f.matches(&entry("a", "STANDARD", 201)));
        let err = ObjectFilters::parse(r#"{"start_timestamp":300,"end_timestamp":"200"}"#).unwrap_err();
        assert!(err.contains("start_timestamp"), "{err}");
    }

    #[test]
    fn etag_and_version_id() {
        let f = ObjectFilters::parse(r#"{"etag":"abc","version_id":"v1","latest_version_only":true}"#).unwrap();
        assert!(f.latest_version_only);
        assert!(f.matches(&entry("a", "STANDARD", 0)));
        let f = ObjectFilters::parse(r#"{"version_id":"v2"}"#).unwrap();
        assert!(!f.matches(&entry("a", "STANDARD", 0)));
    }

    #[test]
    fn clumio_prefix_filters_include_and_exclude_sub_prefixes() {
        let f = ObjectFilters::parse(
            r#"{"prefix_filters":[{"prefix":"logs/","excluded_sub_prefixes":["tmp/"]},{"prefix":"img/"}]}"#,
        )
        .unwrap();
        assert!(f.matches(&entry("logs/2024/a", "STANDARD", 0)));
        assert!(f.matches(&entry("img/a.png", "STANDARD", 0)));
        assert!(!f.matches(&entry("logs/tmp/a", "STANDARD", 0)), "excluded under its prefix");
        assert!(!f.matches(&entry("data/a", "STANDARD", 0)), "under none of the prefixes");
        let err =
            ObjectFilters::parse(r#"{"prefix_filters":[{"prefix":"a/","excluded_sub_prefixes":[1]}]}"#).unwrap_err();
        assert!(err.contains("object_filters_json.prefix_filters[0].excluded_sub_prefixes[0]"), "{err}");
        let err = ObjectFilters::parse(r#"{"prefix_filters":[{"prefx":"a/"}]}"#).unwrap_err();
        assert!(err.contains("prefix_filters[0].prefx"), "{err}");
    }
}
