//! The catalog behind `lifeboat backups list`: for a source selection (account, region, tags,
//! names), every backup a restore could use, per resource, with its time, size and type, the
//! regions holding copies of the same resource's backups, the expiry where it is known, and the
//! continuous-backup (point-in-time) window where the resource has one. It selects through the
//! same code as a restore ([`Discovery::find`]), so what it lists is what a restore would pick
//! from: Lifeboat's own restore-time copies are left out, backups of deleted resources are in.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_common::time::from_timestamp;
use lifeboat_proto::{Backup, ResourceType, RestoreSet, Source, Targets};

use crate::select::TimeRule;
use crate::service::Discovery;

pub use lifeboat_common::backup::TAG_EXPIRES_AT;

/// One restorable backup (or continuous-backup window) of one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `ebs`, `rds-instance`, `rds-cluster`, `dynamodb`, `ec2`.
    pub resource_type: String,
    pub account_id: String,
    pub region: String,
    /// The volume, database, table or instance the backup was taken of.
    pub source_resource_id: String,
    /// Snapshot id, DB snapshot id, backup ARN, AMI id; for `continuous`, the source's ARN or name.
    pub backup_id: String,
    /// `backup`, or `continuous` for a point-in-time recovery window.
    pub kind: String,
    /// When the backup was taken; for `continuous`, the latest restorable time.
    pub created_at: Option<DateTime<Utc>>,
    pub size_gib: i64,
    pub encrypted: bool,
    /// Other listed regions holding backups of the same resource (copies).
    pub copies_in: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// For `continuous`: the restorable window, as discovery reports it.
    pub note: String,
    /// A recovery point of a Lifeboat backup plan: its plan and rule, and its lock (NONE,
    /// GOVERNANCE, COMPLIANCE) with the time it holds until.
    pub plan: Option<Point>,
}

/// What a Lifeboat recovery point's tags say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub plan: String,
    pub rule: String,
    pub lock: String,
    pub lock_until: Option<DateTime<Utc>>,
    /// The recovery point this one is a copy of.
    pub copy_of: Option<String>,
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Account, region, tags and names; the time selection is ignored (everything is listed).
    pub source: Source,
    /// Empty: every type a restore supports.
    pub resource_types: Vec<ResourceType>,
    /// Further regions to list the same selection in, as the places copies live (DR regions).
    pub copy_regions: Vec<String>,
}

const RESTORABLE_TYPES: [ResourceType; 5] = [
    ResourceType::EbsVolume,
    ResourceType::Ec2Instance,
    ResourceType::RdsInstance,
    ResourceType::RdsCluster,
    ResourceType::DynamodbTable,
];

fn expiry(backup: &Backup) -> Option<DateTime<Utc>> {
    backup.expires_at.as_ref().and_then(from_timestamp).or_else(|| {
        let tagged = backup.tags.get(TAG_EXPIRES_AT)?;
        DateTime::parse_from_rfc3339(tagged).ok().map(|t| t.with_timezone(&Utc))
    })
}

/// Every restorable backup of the selection, sorted by type, region, resource and time.
pub async fn list(accounts: &Accounts, query: &Query) -> Result<Vec<Entry>, AwsError> {
    let kinds: Vec<ResourceType> =
        if query.resource_types.is_empty() { RESTORABLE_TYPES.to_vec() } else { query.resource_types.clone() };
    let mut regions = vec![query.source.region.clone()];
    regions.extend(query.copy_regions.iter().filter(|r| **r != query.source.region).cloned());
    let everything = TimeRule::Window(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    let mut entries = Vec::new();
    for region in &regions {
        let mut source = query.source.clone();
        source.region = region.clone();
        source.selection = None;
        source.point_in_time_recovery = false;
        let set = RestoreSet {
            name: "catalog".to_string(),
            source: Some(source.clone()),
            resource_types: kinds.iter().map(|k| *k as i32).collect(),
            target: Some(Targets::default()),
            ..Default::default()
        };
        for &kind in &kinds {
            for (backup, _, _) in Discovery::find(accounts, &set, &source, everything, kind).await? {
                entries.push(entry(kind, &backup, "backup", String::new()));
            }
            // The continuous-backup window, where the resource has one.
            if matches!(kind, ResourceType::DynamodbTable | ResourceType::RdsInstance | ResourceType::RdsCluster) {
                let mut continuous = source.clone();
                continuous.point_in_time_recovery = true;
                let latest = TimeRule::Before(Utc::now());
                for (backup, _, why) in Discovery::find(accounts, &set, &continuous, latest, kind).await? {
                    entries.push(entry(kind, &backup, "continuous", why));
                }
            }
        }
    }
    // Copies: the other listed regions holding backups of the same resource.
    let mut regions_of: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for e in &entries {
        regions_of.entry((e.resource_type.clone(), e.source_resource_id.clone())).or_default().insert(e.region.clone());
    }
    for e in &mut entries {
        let key = (e.resource_type.clone(), e.source_resource_id.clone());
        e.copies_in = regions_of[&key].iter().filter(|r| **r != e.region).cloned().collect();
    }
    entries.sort_by(|a, b| {
        (&a.resource_type, &a.region, &a.source_resource_id, &a.kind, a.created_at, &a.backup_id).cmp(&(
            &b.resource_type,
            &b.region,
            &b.source_resource_id,
            &b.kind,
            b.created_at,
            &b.backup_id,
        ))
    });
    Ok(entries)
}

fn entry(kind: ResourceType, backup: &Backup, what: &str, note: String) -> Entry {
    let time = backup.restore_time.as_ref().or(backup.created_at.as_ref());
    Entry {
        resource_type: kind.short_name().to_string(),
        account_id: backup.account_id.clone(),
        region: backup.region.clone(),
        source_resource_id: backup.source_resource_id.clone(),
        backup_id: backup.backup_id.clone(),
        kind: what.to_string(),
        created_at: time.and_then(from_timestamp),
        size_gib: backup.size_gib,
        encrypted: backup.encrypted,
        copies_in: Vec::new(),
        expires_at: expiry(backup),
        note,
        plan: lifeboat_common::backup::PointTags::parse(&backup.tags).map(|point| Point {
            plan: point.plan,
            rule: point.rule,
            lock: point.lock,
            lock_until: point.lock_until,
            copy_of: point.copy_of,
        }),
    }
}
