//! Which backups a restore set selects: per source resource, the newest at or before a point in
//! time, the oldest at or after it, or every backup in a window.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use lifeboat_proto::{source, SearchDirection, Source};

/// The time rule of a restore set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeRule {
    Before(DateTime<Utc>),
    After(DateTime<Utc>),
    /// The oldest at or after the first time and at or before the second (`after` with `until`).
    Between(DateTime<Utc>, DateTime<Utc>),
    Window(DateTime<Utc>, DateTime<Utc>),
}

impl TimeRule {
    /// The set's rule; without one, the newest backup at or before `default_time` (the request's
    /// submission time, so that a replanned request picks the same backups).
    pub fn of(source: &Source, default_time: DateTime<Utc>) -> Self {
        let time = |ts: &Option<lifeboat_proto::Timestamp>| {
            ts.as_ref().and_then(lifeboat_common::time::from_timestamp).unwrap_or(default_time)
        };
        match &source.selection {
            Some(source::Selection::PointInTime(point)) if point.direction == SearchDirection::After as i32 => {
                match point.until.as_ref().and_then(lifeboat_common::time::from_timestamp) {
                    Some(until) => TimeRule::Between(time(&point.time), until),
                    None => TimeRule::After(time(&point.time)),
                }
            }
            Some(source::Selection::PointInTime(point)) => TimeRule::Before(time(&point.time)),
            Some(source::Selection::Window(window)) => TimeRule::Window(time(&window.start), time(&window.end)),
            None => TimeRule::Before(default_time),
        }
    }
}

impl TimeRule {
    /// The time a point-in-time recovery aims at, and whether it searches forward from it.
    pub fn point(self) -> (DateTime<Utc>, bool) {
        match self {
            TimeRule::Before(at) => (at, false),
            TimeRule::After(at) | TimeRule::Between(at, _) => (at, true),
            TimeRule::Window(start, _) => (start, true),
        }
    }
}

impl std::fmt::Display for TimeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            TimeRule::Before(at) => write!(f, "newest at or before {}", rfc3339(at)),
            TimeRule::After(at) => write!(f, "oldest at or after {}", rfc3339(at)),
            TimeRule::Between(at, until) => {
                write!(f, "oldest at or after {} and at or before {}", rfc3339(at), rfc3339(until))
            }
            TimeRule::Window(start, end) => write!(f, "in window {} .. {}", rfc3339(start), rfc3339(end)),
        }
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A backup as far as selection is concerned.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub backup_id: String,
    pub source_resource_id: String,
    pub created_at: DateTime<Utc>,
    pub tags: HashMap<String, String>,
}

impl Candidate {
    /// True when `patterns` is empty or one matches the source resource's id, the backup's id
    /// or the backup's Name tag (snapshots and AMIs are named either way).
    pub fn is_named(&self, patterns: &[String]) -> bool {
        let name_tag = self.tags.get("Name").map(String::as_str).unwrap_or_default();
        names_match(patterns, &[&self.source_resource_id, &self.backup_id, name_tag])
    }
}

/// True when every wanted tag is on the backup with the same value.
pub fn tags_match(wanted: &HashMap<String, String>, actual: &HashMap<String, String>) -> bool {
    wanted.iter().all(|(key, value)| actual.get(key) == Some(value))
}

/// True when `patterns` is empty or one of them matches one of the resource's `names` (its id,
/// its name, its Name tag). `*` matches any run of characters; everything else is literal.
pub fn names_match(patterns: &[String], names: &[&str]) -> bool {
    patterns.is_empty() || patterns.iter().any(|pattern| names.iter().any(|name| glob_match(pattern, name)))
}

/// `*` matches any run of characters (also none); matching is case-sensitive, like AWS names.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Picks backups per source resource. Returns (index into `candidates`, why) in a stable order:
/// by source resource, then by creation time.
pub fn pick(candidates: &[Candidate], rule: TimeRule) -> Vec<(usize, String)> {
    let mut by_resource: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, candidate) in candidates.iter().enumerate() {
        by_resource.entry(candidate.source_resource_id.as_str()).or_default().push(index);
    }
    let mut picked = Vec::new();
    for (_, mut indices) in by_resource {
        // Ties on time are broken by id so the pick is deterministic.
        indices.sort_by(|&a, &b| {
            (candidates[a].created_at, &candidates[a].backup_id)
                .cmp(&(candidates[b].created_at, &candidates[b].backup_id))
        });
        // The resource and the backup's time are shown beside the reason; it says which rule chose.
        let of = indices.len();
        match rule {
            TimeRule::Before(at) => {
                if let Some(&index) = indices.iter().rev().find(|&&i| candidates[i].created_at <= at) {
                    picked.push((index, format!("newest of {of} at or before {}", rfc3339(at))));
                }
            }
            TimeRule::After(at) => {
                if let Some(&index) = indices.iter().find(|&&i| candidates[i].created_at >= at) {
                    picked.push((index, format!("oldest of {of} at or after {}", rfc3339(at))));
                }
            }
            TimeRule::Between(at, until) => {
                if let Some(&index) =
                    indices.iter().find(|&&i| candidates[i].created_at >= at && candidates[i].created_at <= until)
                {
                    picked.push((
                        index,
                        format!("oldest of {of} at or after {} and at or before {}", rfc3339(at), rfc3339(until)),
                    ));
                }
            }
            TimeRule::Window(start, end) => {
                for &index in
                    indices.iter().filter(|&&i| candidates[i].created_at >= start && candidates[i].created_at <= end)
                {
                    picked.push((index, rule.to_string()));
                }
            }
        }
    }
    picked
}
