//! Finding RDS backups: DB snapshots per instance, DB cluster snapshots per Aurora cluster
//! (manual and automated, paginated, selected by their tags), and for point-in-time sets the
//! instances and clusters whose restorable window allows the time.

use std::collections::HashMap;

use aws_sdk_rds::types::Tag;
use chrono::{DateTime, Utc};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::time::{from_aws, to_timestamp};
use lifeboat_proto::{Backup, ResourceType};

use crate::select::Candidate;

fn tags_of(list: &[Tag]) -> HashMap<String, String> {
    list.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

/// Everything about a source that the restore needs, captured now.
struct Source<'a> {
    kind: ResourceType,
    id: &'a str,
    account_id: &'a str,
    region: &'a str,
    tags: HashMap<String, String>,
    settings: HashMap<String, String>,
}

impl Source<'_> {
    fn backup(&self, backup_id: &str, created_at: DateTime<Utc>, encrypted: bool, kms_key_id: &str) -> Backup {
        Backup {
            backup_id: backup_id.to_string(),
            resource_type: self.kind as i32,
            source_resource_id: self.id.to_string(),
            account_id: self.account_id.to_string(),
            region: self.region.to_string(),
            created_at: Some(to_timestamp(created_at)),
            tags: self.tags.clone(),
            settings: self.settings.clone(),
            encrypted,
            kms_key_id: kms_key_id.to_string(),
            ..Default::default()
        }
    }
}

/// What both kinds of RDS snapshot say about themselves.
struct Snapshot<'a> {
    id: Option<&'a str>,
    /// The instance or cluster it was taken of.
    source: Option<&'a str>,
    created: Option<DateTime<Utc>>,
    status: Option<&'a str>,
    tags: &'a [Tag],
    encrypted: bool,
    kms_key_id: &'a str,
    settings: HashMap<String, String>,
}

/// The candidate and backup of an available snapshot with all of `wanted`'s tags.
fn selected(
    kind: ResourceType,
    snapshot: Snapshot<'_>,
    account_id: &str,
    region: &str,
    wanted: &HashMap<String, String>,
) -> Option<(Candidate, Backup)> {
    let (Some(id), Some(source_id), Some(created)) = (snapshot.id, snapshot.source, snapshot.created) else {
        return None;
    };
    let tags = tags_of(snapshot.tags);
    if snapshot.status != Some("available") || !crate::select::tags_match(wanted, &tags) {
        return None;
    }
    let source = Source { kind, id: source_id, account_id, region, tags: tags.clone(), settings: snapshot.settings };
    let backup = source.backup(id, created, snapshot.encrypted, snapshot.kms_key_id);
    let candidate =
        Candidate { backup_id: id.to_string(), source_resource_id: source_id.to_string(), created_at: created, tags };
    Some((candidate, backup))
}

/// Available DB snapshots (of instances) with all of `tags`.
pub async fn instance_snapshots(
    rds: &aws_sdk_rds::Client,
    account_id: &str,
    region: &str,
    tags: &HashMap<String, String>,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    let mut found = Vec::new();
    let mut pages = rds.describe_db_snapshots().into_paginator().send();
    while let Some(page) = pages.next().await {
        for snapshot in page.map_err(|e| classify("rds:DescribeDBSnapshots", e))?.db_snapshots() {
            let fields = Snapshot {
                id: snapshot.db_snapshot_identifier(),
                source: snapshot.db_instance_identifier(),
                created: snapshot.snapshot_create_time().and_then(from_aws),
                status: snapshot.status(),
                tags: snapshot.tag_list(),
                encrypted: snapshot.encrypted().unwrap_or_default(),
                kms_key_id: snapshot.kms_key_id().unwrap_or_default(),
                settings: HashMap::from([("engine".to_string(), snapshot.engine().unwrap_or_default().to_string())]),
            };
            found.extend(selected(ResourceType::RdsInstance, fields, account_id, region, tags));
        }
    }
    Ok(found)
}

/// Available DB cluster snapshots (Aurora) with all of `tags`.
pub async fn cluster_snapshots(
    rds: &aws_sdk_rds::Client,
    account_id: &str,
    region: &str,
    tags: &HashMap<String, String>,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    let mut found = Vec::new();
    let mut pages = rds.describe_db_cluster_snapshots().into_paginator().send();
    while let Some(page) = pages.next().await {
        for snapshot in page.map_err(|e| classify("rds:DescribeDBClusterSnapshots", e))?.db_cluster_snapshots() {
            let mut settings =
                HashMap::from([("engine".to_string(), snapshot.engine().unwrap_or_default().to_string())]);
            if let Some(version) = snapshot.engine_version() {
                settings.insert("engine_version".to_string(), version.to_string());
            }
            let fields = Snapshot {
                id: snapshot.db_cluster_snapshot_identifier(),
                source: snapshot.db_cluster_identifier(),
                created: snapshot.snapshot_create_time().and_then(from_aws),
                status: snapshot.status(),
                tags: snapshot.tag_list(),
                encrypted: snapshot.storage_encrypted().unwrap_or_default(),
                kms_key_id: snapshot.kms_key_id().unwrap_or_default(),
                settings,
            };
            found.extend(selected(ResourceType::RdsCluster, fields, account_id, region, tags));
        }
    }
    Ok(found)
}

/// An instance or cluster and its restorable window.
struct Restorable {
    id: String,
    tags: HashMap<String, String>,
    earliest: Option<DateTime<Utc>>,
    latest: Option<DateTime<Utc>>,
    engine: String,
}

/// Point-in-time restores of instances (or clusters) with all of `tags`: BEFORE restores the
/// latest restorable time at or before `at`, AFTER the earliest at or after it.
pub async fn point_in_time(
    rds: &aws_sdk_rds::Client,
    kind: ResourceType,
    account_id: &str,
    region: &str,
    tags: &HashMap<String, String>,
    at: DateTime<Utc>,
    after: bool,
) -> Result<Vec<(Backup, String)>, AwsError> {
    let mut sources: Vec<Restorable> = Vec::new();
    if kind == ResourceType::RdsCluster {
        let mut pages = rds.describe_db_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            for cluster in page.map_err(|e| classify("rds:DescribeDBClusters", e))?.db_clusters() {
                sources.push(Restorable {
                    id: cluster.db_cluster_identifier().unwrap_or_default().to_string(),
                    tags: tags_of(cluster.tag_list()),
                    earliest: cluster.earliest_restorable_time().and_then(from_aws),
                    latest: cluster.latest_restorable_time().and_then(from_aws),
                    engine: cluster.engine().unwrap_or_default().to_string(),
                });
            }
        }
    } else {
        let mut pages = rds.describe_db_instances().into_paginator().send();
        while let Some(page) = pages.next().await {
            for instance in page.map_err(|e| classify("rds:DescribeDBInstances", e))?.db_instances() {
                if instance.db_cluster_identifier().is_some() || instance.backup_retention_period() == Some(0) {
                    continue; // cluster members restore with their cluster; no retention, no PITR
                }
                sources.push(Restorable {
                    id: instance.db_instance_identifier().unwrap_or_default().to_string(),
                    tags: tags_of(instance.tag_list()),
                    earliest: instance.instance_create_time().and_then(from_aws),
                    latest: instance.latest_restorable_time().and_then(from_aws),
                    engine: instance.engine().unwrap_or_default().to_string(),
                });
            }
        }
    }
    let mut found = Vec::new();
    for Restorable { id, tags: source_tags, earliest, latest, engine } in sources {
        if !crate::select::tags_match(tags, &source_tags) {
            continue;
        }
        let (Some(earliest), Some(latest)) = (earliest, latest) else { continue };
        let restore_to = if after { at.max(earliest) } else { at.min(latest) };
        if restore_to < earliest || restore_to > latest {
            continue;
        }
        let settings = HashMap::from([("engine".to_string(), engine)]);
        let source = Source { kind, id: &id, account_id, region, tags: source_tags.clone(), settings };
        let mut backup = source.backup(&id, restore_to, false, "");
        backup.restore_time = Some(to_timestamp(restore_to));
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        found.push((
            backup,
            format!("point-in-time recovery to {} (restorable {} .. {})", fmt(restore_to), fmt(earliest), fmt(latest)),
        ));
    }
    Ok(found)
}
