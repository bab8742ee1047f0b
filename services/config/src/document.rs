//! The exported document: one self-describing, versioned JSON object per account, region and
//! service. (Contract stub: the core helper fills the bodies, keeping the signatures.)

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
