//! Field-by-field differences between two configurations (an export against the live
//! configuration, or two exports), by identity rather than position: collection elements are
//! matched by their `key`, so a record added in the middle of a zone is one addition, not a
//! shift of every record after it. Fields that hold ids a restore maps are left out by default.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::document::ConfigDocument;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    /// Only in `after`.
    Added,
    /// Only in `before`.
    Removed,
    /// In both, with different values.
    Changed,
}

/// One difference, at a path such as
/// `hosted_zones[example.com.|public].record_sets[www.example.com.|A|].ttl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub path: String,
    pub kind: DiffKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// How many differences of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffSummary {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

impl DiffSummary {
    pub fn total(&self) -> usize {
        self.added + self.removed + self.changed
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

impl std::fmt::Display for DiffSummary {
    /// `2 added, 1 changed` (kinds with none left out), or `no differences`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [(self.added, "added"), (self.removed, "removed"), (self.changed, "changed")]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, word)| format!("{n} {word}"))
            .collect();
        if parts.is_empty() {
            f.write_str("no differences")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The differences from `before` to `after`. Objects compare field by field (a missing field and
/// a `null` one are the same: both mean "not set"); arrays whose elements are all objects with a
/// string `key` (unique) compare element by element matched by key, an added or removed element
/// reported whole; other arrays compare as values. Fields named in `ignored` are skipped at any
/// depth, also inside arrays compared as values.
pub fn diff(before: &Value, after: &Value, ignored: &[&str]) -> Vec<Difference> {
    let mut out = Vec::new();
    walk("", before, after, ignored, &mut out);
    out
}

/// The differences between two documents' configurations, leaving out the fields the service's
/// restore maps (ids, ARNs, DNS names) unless `strict`. Documents of different services differ
/// in `service` too.
pub fn diff_documents(a: &ConfigDocument, b: &ConfigDocument, strict: bool) -> Vec<Difference> {
    let ignored: &[&str] = if strict { &[] } else { a.service.mapped_fields() };
    let mut out = Vec::new();
    if a.service != b.service {
        out.push(Difference {
            path: "service".to_string(),
            kind: DiffKind::Changed,
            before: Some(Value::String(a.service.as_str().to_string())),
            after: Some(Value::String(b.service.as_str().to_string())),
        });
    }
    out.extend(diff(&a.config, &b.config, ignored));
    out
}

pub fn summary(differences: &[Difference]) -> DiffSummary {
    let mut summary = DiffSummary::default();
    for d in differences {
        match d.kind {
            DiffKind::Added => summary.added += 1,
            DiffKind::Removed => summary.removed += 1,
            DiffKind::Changed => summary.changed += 1,
        }
    }
    summary
}

/// One line per difference: `+ path: value`, `- path: value`, `~ path: before -> after`
/// (values as compact JSON, long ones shortened), or `no differences`.
pub fn render_text(differences: &[Difference]) -> String {
    if differences.is_empty() {
        return "no differences".to_string();
    }
    let shown = |v: &Option<Value>| v.as_ref().map(short).unwrap_or_else(|| "(unset)".to_string());
    differences
        .iter()
        .map(|d| {
            let path = if d.path.is_empty() { "(root)" } else { d.path.as_str() };
            match d.kind {
                DiffKind::Added => format!("+ {path}: {}", shown(&d.after)),
                DiffKind::Removed => format!("- {path}: {}", shown(&d.before)),
                DiffKind::Changed => format!("~ {path}: {} -> {}", shown(&d.before), shown(&d.after)),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Longest value shown in full by [`render_text`].
const SHOWN_CHARS: usize = 160;

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= SHOWN_CHARS {
        text
    } else {
        let cut: String = text.chars().take(SHOWN_CHARS).collect();
        format!("{cut}…")
    }
}

fn walk(path: &str, before: &Value, after: &Value, ignored: &[&str], out: &mut Vec<Difference>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for name in names.into_iter().filter(|n| !ignored.contains(&n.as_str())) {
                let child = field_path(path, name);
                match (set(a.get(name)), set(b.get(name))) {
                    (Some(x), Some(y)) => walk(&child, x, y, ignored, out),
                    (Some(x), None) => out.push(removed(child, x)),
                    (None, Some(y)) => out.push(added(child, y)),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => match (by_key(a), by_key(b)) {
            (Some(a), Some(b)) => walk_keyed(path, &a, &b, ignored, out),
            _ => {
                if strip(before, ignored) != strip(after, ignored) {
                    out.push(changed(path, before, after));
                }
            }
        },
        _ => {
            if strip(before, ignored) != strip(after, ignored) {
                out.push(changed(path, before, after));
            }
        }
    }
}

fn walk_keyed(
    path: &str,
    a: &BTreeMap<&str, &Value>,
    b: &BTreeMap<&str, &Value>,
    ignored: &[&str],
    out: &mut Vec<Difference>,
) {
    let keys: BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    for key in keys {
        let child = format!("{path}[{key}]");
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) => walk(&child, x, y, ignored, out),
            (Some(x), None) => out.push(removed(child, x)),
            (None, Some(y)) => out.push(added(child, y)),
            (None, None) => {}
        }
    }
}

/// The elements by their `key` when every element is an object with a unique string `key`.
fn by_key(items: &[Value]) -> Option<BTreeMap<&str, &Value>> {
    let mut map = BTreeMap::new();
    for item in items {
        let key = item.get("key")?.as_str()?;
        if map.insert(key, item).is_some() {
            return None;
        }
    }
    Some(map)
}

/// `null` is "not set", like a missing field.
fn set(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

fn field_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// `value` without the ignored fields (and without `null` fields), at any depth.
fn strip(value: &Value, ignored: &[&str]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(name, v)| !ignored.contains(&name.as_str()) && !v.is_null())
                .map(|(name, v)| (name.clone(), strip(v, ignored)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| strip(v, ignored)).collect()),
        other => other.clone(),
    }
}

fn added(path: String, value: &Value) -> Difference {
    Difference { path, kind: DiffKind::Added, before: None, after: Some(value.clone()) }
}

fn removed(path: String, value: &Value) -> Difference {
    Difference { path, kind: DiffKind::Removed, before: Some(value.clone()), after: None }
}

fn changed(path: &str, before: &Value, after: &Value) -> Difference {
    Difference {
        path: path.to_string(),
        kind: DiffKind::Changed,
        before: Some(before.clone()),
        after: Some(after.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Service;
    use serde_json::json;

    fn zones(ttl: i64, extra_record: bool) -> Value {
        let mut records = vec![
            json!({"key": "example.com.|NS|", "ttl": 172800, "values": ["ns-1.", "ns-2."]}),
            json!({"key": "www.example.com.|A|", "ttl": ttl, "values": ["10.0.0.1"]}),
        ];
        if extra_record {
            records.push(json!({"key": "api.example.com.|CNAME|", "ttl": 60, "values": ["www.example.com."]}));
        }
        json!({
            "hosted_zones": [
                {"key": "example.com.|public", "id": "Z1", "name": "example.com.", "record_sets": records},
                {"key": "internal.example.|private", "id": "Z2", "vpcs": [{"vpc_id": "vpc-1", "region": "us-east-1"}], "record_sets": []}
            ],
            "health_checks": []
        })
    }

    #[test]
    fn equal_configurations_have_no_differences() {
        assert!(diff(&zones(300, true), &zones(300, true), &[]).is_empty());
        assert_eq!(render_text(&[]), "no differences");
    }

    #[test]
    fn a_changed_field_is_named_by_the_keys_on_its_path() {
        let d = diff(&zones(300, false), &zones(60, false), &[]);
        assert_eq!(
            d,
            vec![Difference {
                path: "hosted_zones[example.com.|public].record_sets[www.example.com.|A|].ttl".into(),
                kind: DiffKind::Changed,
                before: Some(json!(300)),
                after: Some(json!(60)),
            }]
        );
        assert_eq!(
            render_text(&d),
            "~ hosted_zones[example.com.|public].record_sets[www.example.com.|A|].ttl: 300 -> 60"
        );
    }

    #[test]
    fn added_and_removed_elements_are_reported_whole() {
        let d = diff(&zones(300, false), &zones(300, true), &[]);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].path, "hosted_zones[example.com.|public].record_sets[api.example.com.|CNAME|]");
        assert_eq!(d[0].kind, DiffKind::Added);
        assert_eq!(d[0].after.as_ref().unwrap()["ttl"], json!(60));
        assert!(
            render_text(&d).starts_with("+ hosted_zones[example.com.|public].record_sets[api.example.com.|CNAME|]: {")
        );

        let back = diff(&zones(300, true), &zones(300, false), &[]);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].kind, DiffKind::Removed);
        assert_eq!(back[0].before, d[0].after);
        assert!(render_text(&back).starts_with("- hosted_zones"));
    }

    #[test]
    fn elements_match_by_key_not_position() {
        let a = json!({"xs": [{"key": "a", "v": 1}, {"key": "b", "v": 2}]});
        let b = json!({"xs": [{"key": "b", "v": 2}, {"key": "a", "v": 1}]});
        assert!(diff(&a, &b, &[]).is_empty());
    }

    #[test]
    fn ignored_fields_are_skipped_at_any_depth() {
        let mut other = zones(300, false);
        other["hosted_zones"][0]["id"] = json!("Z9");
        other["hosted_zones"][1]["vpcs"][0]["vpc_id"] = json!("vpc-9");
        assert!(diff(&zones(300, false), &other, &["id", "vpc_id"]).is_empty());
        let strict = diff(&zones(300, false), &other, &[]);
        let paths: Vec<&str> = strict.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["hosted_zones[example.com.|public].id", "hosted_zones[internal.example.|private].vpcs"]);
    }

    #[test]
    fn arrays_without_keys_compare_as_values() {
        let a = json!({"values": ["1.1.1.1", "2.2.2.2"]});
        let b = json!({"values": ["2.2.2.2", "1.1.1.1"]});
        let d = diff(&a, &b, &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "values");
        assert_eq!(d[0].kind, DiffKind::Changed);
        assert_eq!(d[0].before, Some(a["values"].clone()));
    }

    #[test]
    fn missing_and_null_fields_are_the_same() {
        assert!(diff(&json!({"a": null, "b": 1}), &json!({"b": 1}), &[]).is_empty());
        let d = diff(&json!({"a": null}), &json!({"a": 5}), &[]);
        assert_eq!((d[0].kind, d[0].path.as_str()), (DiffKind::Added, "a"));
    }

    #[test]
    fn a_type_change_is_a_change_of_the_whole_value() {
        let d = diff(&json!({"a": {"x": 1}}), &json!({"a": [1]}), &[]);
        assert_eq!(d, vec![changed("a", &json!({"x": 1}), &json!([1]))]);
    }

    #[test]
    fn summary_counts_kinds() {
        let mut b = zones(60, true);
        b["health_checks"] = json!([{"key": "HTTP|www.example.com|80|/"}]);
        b["hosted_zones"].as_array_mut().unwrap().pop();
        let s = summary(&diff(&zones(300, false), &b, &[]));
        assert_eq!(s, DiffSummary { added: 2, removed: 1, changed: 1 });
        assert_eq!(s.to_string(), "2 added, 1 removed, 1 changed");
        assert_eq!(DiffSummary::default().to_string(), "no differences");
    }

    #[test]
    fn documents_diff_without_mapped_fields_unless_strict() {
        let at = chrono::Utc::now();
        let a = ConfigDocument::new(
            Service::Elbv2,
            "1",
            "us-east-1",
            at,
            BTreeMap::new(),
            json!({"load_balancers": [{"key": "web", "arn": "arn:1", "scheme": "internet-facing"}]}),
        );
        let b = ConfigDocument::new(
            Service::Elbv2,
            "2",
            "us-west-2",
            at,
            BTreeMap::new(),
            json!({"load_balancers": [{"key": "web", "arn": "arn:2", "scheme": "internet-facing"}]}),
        );
        assert!(Service::Elbv2.mapped_fields().contains(&"arn"));
        assert!(diff_documents(&a, &b, false).is_empty());
        assert_eq!(diff_documents(&a, &b, true).len(), 1);
        let c = ConfigDocument::new(Service::Route53, "1", "global", at, BTreeMap::new(), json!({}));
        assert_eq!(diff_documents(&a, &c, false)[0].path, "service");
    }

    #[test]
    fn differences_serialize_with_their_kind() {
        let d = diff(&json!({"a": 1}), &json!({}), &[]);
        assert_eq!(serde_json::to_value(&d).unwrap(), json!([{"path": "a", "kind": "removed", "before": 1}]));
    }

    /// A small deterministic generator (no proptest in this crate): xorshift64*.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn value(&mut self, depth: u32) -> Value {
            match if depth == 0 { self.below(4) } else { self.below(7) } {
                0 => Value::Null,
                1 => json!(self.below(3)),
                2 => json!(["x", "y", "z"][self.below(3) as usize]),
                3 => json!(self.below(2) == 0),
                4 | 5 => self.object(depth - 1),
                _ => self.keyed(depth - 1),
            }
        }

        fn object(&mut self, depth: u32) -> Value {
            let mut map = serde_json::Map::new();
            for name in ["a", "b", "id", "c"] {
                if self.below(3) > 0 {
                    map.insert(name.to_string(), self.value(depth));
                }
            }
            Value::Object(map)
        }

        fn keyed(&mut self, depth: u32) -> Value {
            let mut items = Vec::new();
            for key in ["k1", "k2", "k3"] {
                if self.below(2) == 0 {
                    let mut item = self.object(depth);
                    item["key"] = json!(key);
                    items.push(item);
                }
            }
            Value::Array(items)
        }
    }

    fn paths(ds: &[Difference], kind: DiffKind) -> BTreeSet<String> {
        ds.iter().filter(|d| d.kind == kind).map(|d| d.path.clone()).collect()
    }

    #[test]
    fn property_diff_is_empty_on_itself_and_antisymmetric() {
        let mut gen = Gen(0x9E37_79B9_7F4A_7C15);
        let mut nonempty = 0;
        for _ in 0..2_000 {
            let (a, b) = (gen.object(3), gen.object(3));
            for ignored in [&[][..], &["id"][..]] {
                assert!(diff(&a, &a, ignored).is_empty(), "{a}");
                let forward = diff(&a, &b, ignored);
                let backward = diff(&b, &a, ignored);
                assert_eq!(paths(&forward, DiffKind::Added), paths(&backward, DiffKind::Removed), "{a} {b}");
                assert_eq!(paths(&forward, DiffKind::Removed), paths(&backward, DiffKind::Added), "{a} {b}");
                assert_eq!(paths(&forward, DiffKind::Changed), paths(&backward, DiffKind::Changed), "{a} {b}");
                assert!(
                    forward.iter().all(|d| !d.path.split(['.', '[']).any(|seg| ignored.contains(&seg))),
                    "{forward:?}"
                );
                assert_eq!(forward.is_empty(), strip(&a, ignored) == strip(&b, ignored), "{a} {b}");
                nonempty += usize::from(!forward.is_empty());
            }
        }
        assert!(nonempty > 1_000, "the generator makes different values ({nonempty})");
    }
}
