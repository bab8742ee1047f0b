//! The exported document: one self-describing, versioned JSON object per account, region and
//! service, whose checksum lets the store skip unchanged exports and lets a reader detect a
//! document that was changed after it was written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `format` of every document this version writes.
pub const FORMAT: &str = "lifeboat.config.v1";

/// Which configuration a document holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Route53,
    Elbv2,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Route53, Service::Elbv2];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Route53 => "route53",
            Service::Elbv2 => "elbv2",
        }
    }

    pub fn parse(name: &str) -> Option<Service> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Route 53 is global: its documents are stored under this region.
    pub const GLOBAL: &'static str = "global";

    /// The fields the diff leaves out by default (ids that a restore maps).
    pub fn mapped_fields(self) -> &'static [&'static str] {
        match self {
            Service::Route53 => crate::route53::MAPPED_FIELDS,
            Service::Elbv2 => crate::elbv2::MAPPED_FIELDS,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigDocument {
    /// [`FORMAT`].
    pub format: String,
    pub service: Service,
    pub account_id: String,
    /// [`Service::GLOBAL`] for Route 53.
    pub region: String,
    pub exported_at: DateTime<Utc>,
    pub lifeboat_version: String,
    /// `sha256:<hex>` of the canonical JSON of `config`: equal configurations, equal checksums.
    pub checksum: String,
    /// How many of each kind `config` holds.
    pub counts: BTreeMap<String, usize>,
    /// The service's configuration ([`crate::route53::Route53Config`],
    /// [`crate::elbv2::Elbv2Config`]) as JSON.
    pub config: serde_json::Value,
}

/// `sha256:<hex>` of `config`'s canonical JSON: compact, object fields sorted by name at every
/// depth. serde_json's `preserve_order` feature is on in this workspace (a dependency asks for
/// it), so `Value` keeps insertion order and the sorting is done here rather than trusted.
pub fn checksum_of(config: &Value) -> String {
    let bytes = serde_json::to_vec(&canonical(config)).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `value` with every object's fields in name order (arrays keep their order: it is meaningful).
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut names: Vec<&String> = map.keys().collect();
            names.sort();
            Value::Object(names.into_iter().map(|name| (name.clone(), canonical(&map[name]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl ConfigDocument {
    /// A document of this version for `config`, its checksum computed (and `config` stored in
    /// canonical field order, so the written JSON is the same for the same configuration).
    pub fn new(
        service: Service,
        account_id: impl Into<String>,
        region: impl Into<String>,
        exported_at: DateTime<Utc>,
        counts: BTreeMap<String, usize>,
        config: Value,
    ) -> Self {
        let config = canonical(&config);
        Self {
            format: FORMAT.to_string(),
            service,
            account_id: account_id.into(),
            region: region.into(),
            exported_at,
            lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
            checksum: checksum_of(&config),
            counts,
            config,
        }
    }

    /// Same as [`checksum_of`].
    pub fn checksum_of(config: &Value) -> String {
        checksum_of(config)
    }

    /// Whether this version can read the document and its `config` is what was written:
    /// the error names the field that is wrong.
    pub fn verify(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format: document says {:?}, this Lifeboat reads {FORMAT:?}", self.format));
        }
        let actual = checksum_of(&self.config);
        if self.checksum != actual {
            return Err(format!("checksum: document says {} but its config hashes to {actual}", self.checksum));
        }
        if !self.config.is_object() {
            return Err(format!("config: expected a JSON object, found {}", kind_of(&self.config)));
        }
        Ok(())
    }

    /// The document as stored: pretty-printed JSON.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing plain structs, string-keyed maps and a Value cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a stored document; the error names the missing or mistyped field (with serde_json's
    /// line and column). It does not verify the checksum: see [`ConfigDocument::verify`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a Lifeboat config document: {e}"))
    }

    /// `3 hosted_zones, 250 record_sets, 2 health_checks`-style counts (in name order), or
    /// `empty` when the configuration holds nothing.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self.counts.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
        if parts.is_empty() || self.counts.values().all(|n| *n == 0) {
            "empty".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// The first 12 hex digits of the checksum, as the store's keys carry them.
    pub fn short_checksum(&self) -> &str {
        let hex = self.checksum.strip_prefix("sha256:").unwrap_or(&self.checksum);
        hex.get(..12).unwrap_or(hex)
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 19, 30, 5).unwrap()
    }

    fn sample() -> ConfigDocument {
        let counts = BTreeMap::from([("hosted_zones".to_string(), 2), ("record_sets".to_string(), 250)]);
        let config =
            json!({"hosted_zones": [{"key": "example.com.|public", "name": "example.com."}], "health_checks": []});
        ConfigDocument::new(Service::Route53, "123456789012", Service::GLOBAL, at(), counts, config)
    }

    #[test]
    fn equal_configurations_have_equal_checksums_whatever_the_field_order() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": null}});
        let mut b = serde_json::Map::new();
        b.insert("a".into(), json!({"x": null, "y": [1, 2]}));
        b.insert("b".into(), json!(1));
        assert_eq!(checksum_of(&a), checksum_of(&Value::Object(b)));
        assert_ne!(checksum_of(&a), checksum_of(&json!({"b": 1, "a": {"y": [2, 1], "x": null}})));
        assert!(checksum_of(&a).starts_with("sha256:"));
        assert_eq!(checksum_of(&a).len(), "sha256:".len() + 64);
    }

    #[test]
    fn checksum_is_sha256_of_the_sorted_compact_json() {
        // sha256 of the bytes `{"a":1,"b":2}`.
        let expected = {
            let digest = Sha256::digest(br#"{"a":1,"b":2}"#);
            format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
        };
        assert_eq!(checksum_of(&json!({"b": 2, "a": 1})), expected);
    }

    #[test]
    fn a_new_document_verifies_and_round_trips() {
        let doc = sample();
        assert_eq!(doc.format, FORMAT);
        assert_eq!(doc.region, "global");
        doc.verify().unwrap();
        let back = ConfigDocument::from_slice(&doc.to_json_bytes()).unwrap();
        assert_eq!(back, doc);
        back.verify().unwrap();
        assert_eq!(doc.short_checksum().len(), 12);
        assert!(doc.checksum.contains(doc.short_checksum()));
    }

    #[test]
    fn a_changed_config_fails_verify_naming_the_checksum() {
        let mut doc = sample();
        doc.config["hosted_zones"][0]["name"] = json!("evil.com.");
        let err = doc.verify().unwrap_err();
        assert!(err.starts_with("checksum: document says sha256:"), "{err}");
        assert!(err.contains("but its config hashes to sha256:"), "{err}");
    }

    #[test]
    fn an_unknown_format_fails_verify_naming_the_format() {
        let mut doc = sample();
        doc.format = "lifeboat.config.v9".into();
        let err = doc.verify().unwrap_err();
        assert!(err.starts_with("format: "), "{err}");
        assert!(err.contains("lifeboat.config.v9"), "{err}");
    }

    #[test]
    fn parse_errors_name_the_field() {
        let mut json: Value = serde_json::from_slice(&sample().to_json_bytes()).unwrap();
        json.as_object_mut().unwrap().remove("checksum");
        let err = ConfigDocument::from_slice(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(err.contains("missing field `checksum`"), "{err}");

        json["checksum"] = json!("sha256:00");
        json["service"] = json!("dynamodb");
        let err = ConfigDocument::from_slice(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(err.contains("unknown variant `dynamodb`"), "{err}");

        json["service"] = json!("route53");
        json["exported_at"] = json!(12);
        let err = ConfigDocument::from_slice(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(err.contains("line"), "{err}");

        let err = ConfigDocument::from_slice(b"<html>").unwrap_err();
        assert!(err.starts_with("not a Lifeboat config document"), "{err}");
    }

    #[test]
    fn summary_lists_the_counts() {
        assert_eq!(sample().summary(), "2 hosted_zones, 250 record_sets");
        let empty = ConfigDocument::new(Service::Elbv2, "1", "us-east-1", at(), BTreeMap::new(), json!({}));
        assert_eq!(empty.summary(), "empty");
    }

    #[test]
    fn services_parse_by_name() {
        for service in Service::ALL {
            assert_eq!(Service::parse(service.as_str()), Some(service));
            assert_eq!(serde_json::to_value(service).unwrap(), json!(service.as_str()));
        }
        assert_eq!(Service::parse("s3"), None);
    }
}
