//! What a configuration restore is told and what it reports, shared by [`crate::route53`] and
//! [`crate::elbv2`]: how source ids map to the target's, and per item whether it is created,
//! kept (an equal one exists), replaced, left differing, or skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Source ids and names to the target's. An id not in a map is used as it is (a restore into
/// the same account and region needs no mapping).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub subnets: BTreeMap<String, String>,
    pub security_groups: BTreeMap<String, String>,
    pub vpcs: BTreeMap<String, String>,
    /// ACM certificate ARNs (listeners' certificates are regional).
    pub certificates: BTreeMap<String, String>,
    /// Registered targets (instance ids, IP addresses, Lambda ARNs).
    pub targets: BTreeMap<String, String>,
    /// DNS names an alias record points at: a source load balancer's DNS name to its restored
    /// copy's, filled by the ELBv2 restore for the Route 53 restore that follows it.
    pub alias_dns_names: BTreeMap<String, String>,
    /// Hosted zone ids of alias targets (a load balancer's canonical hosted zone id differs per
    /// region).
    pub alias_zone_ids: BTreeMap<String, String>,
}

impl Mapping {
    fn get<'a>(map: &'a BTreeMap<String, String>, id: &'a str) -> &'a str {
        map.get(id).map(String::as_str).unwrap_or(id)
    }

    pub fn subnet<'a>(&'a self, id: &'a str) -> &'a str {
        Self::get(&self.subnets, id)
    }

    pub fn security_group<'a>(&'a self, id: &'a str) -> &'a str {
        Self::get(&self.security_groups, id)
    }

    pub fn vpc<'a>(&'a self, id: &'a str) -> &'a str {
        Self::get(&self.vpcs, id)
    }

    pub fn certificate<'a>(&'a self, arn: &'a str) -> &'a str {
        Self::get(&self.certificates, arn)
    }

    pub fn target<'a>(&'a self, id: &'a str) -> &'a str {
        Self::get(&self.targets, id)
    }

    /// DNS names compare without case and without the trailing dot Route 53 adds.
    pub fn alias_dns_name(&self, name: &str) -> String {
        let bare = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
        let wanted = bare(name);
        self.alias_dns_names
            .iter()
            .find(|(from, _)| bare(from) == wanted)
            .map(|(_, to)| to.clone())
            .unwrap_or_else(|| name.to_string())
    }

    pub fn alias_zone_id<'a>(&'a self, id: &'a str) -> &'a str {
        Self::get(&self.alias_zone_ids, id)
    }
}

/// How a restore runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOptions {
    /// Read the target and report what would change; change nothing.
    pub dry_run: bool,
    /// Replace items that exist in the target and differ; otherwise they are reported as
    /// `Differs` and left alone.
    pub replace: bool,
    /// Appended to the names of load balancers and target groups (names are unique per account
    /// and region, so a restore beside the source needs one). Zones keep their names.
    pub name_suffix: String,
    /// The target region (private zones' VPC associations, load balancers).
    pub region: String,
    pub mapping: Mapping,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Not in the target: created (or, in a dry run, would be).
    Create,
    /// In the target and equal: kept.
    Keep,
    /// In the target and different: replaced (with `replace`).
    Replace,
    /// In the target and different, left alone (without `replace`).
    Differs,
    /// Not restored, with the reason in `detail` (a zone's own NS and SOA, an unmapped target).
    Skip,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Keep => "keep",
            Self::Replace => "replace",
            Self::Differs => "differs",
            Self::Skip => "skip",
        }
    }
}

/// One item of a restore's plan or result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// What it is, by its identity (a document element's `key`), e.g.
    /// `record www.example.com. A weighted-1` or `listener app-lb HTTPS:443`.
    pub resource: String,
    /// Why, or what differs, or the id created.
    pub detail: String,
}

/// What a restore did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub changes: Vec<Change>,
    /// Source ids (ARNs, health check ids, zone ids, DNS names) to the ids their restored copies
    /// have, for the diff and for a restore that follows (see [`Mapping::alias_dns_names`]).
    pub ids: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

impl RestoreReport {
    pub fn push(&mut self, kind: ChangeKind, resource: impl Into<String>, detail: impl Into<String>) {
        self.changes.push(Change { kind, resource: resource.into(), detail: detail.into() });
    }

    pub fn count(&self, kind: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }

    /// `12 created, 3 kept, 1 differs, 2 skipped` (kinds with none left out).
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            (ChangeKind::Create, "created"),
            (ChangeKind::Keep, "kept"),
            (ChangeKind::Replace, "replaced"),
            (ChangeKind::Differs, "differ"),
            (ChangeKind::Skip, "skipped"),
        ]
        .into_iter()
        .filter_map(|(kind, word)| {
            let n = self.count(kind);
            (n > 0).then(|| format!("{n} {word}"))
        })
        .collect();
        if parts.is_empty() {
            "nothing to restore".to_string()
        } else {
            parts.join(", ")
        }
    }

    pub fn extend(&mut self, other: RestoreReport) {
        self.changes.extend(other.changes);
        self.ids.extend(other.ids);
        self.warnings.extend(other.warnings);
    }
}
