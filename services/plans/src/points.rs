//! Lifeboat's recovery points in one account and region, of every type: what `lifeboat backup
//! list` shows and the retention sweep decides over. A point is Lifeboat's when it carries a
//! `lifeboat:plan` tag (DynamoDB backups, which take no tags: a `lifeboat-` name and recovery
//! point tags in the shared store); nothing else is ever listed, so nothing else is ever touched.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::{BackupStatus, BackupTypeFilter};
use aws_sdk_ec2::types::{Filter, ImageState, SnapshotState, StorageTier};
use chrono::{DateTime, Utc};
use lifeboat_common::aws::{classify, dynamodb_client, ec2_client, rds_client, Accounts, AwsError};
use lifeboat_common::backup::{load_point_tags, PointTags, TAG_PLAN};
use lifeboat_common::shared::SharedStore;
use lifeboat_common::BusError;

/// The prefix of the names of Lifeboat's DynamoDB backups (`dynamodb_backup_name`).
pub const DYNAMODB_BACKUP_PREFIX: &str = "lifeboat-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PointKind {
    EbsSnapshot,
    /// Deleting one deregisters it and deletes its snapshots.
    Ami,
    RdsSnapshot,
    RdsClusterSnapshot,
    DynamodbBackup,
}

impl PointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::EbsSnapshot => "ebs-snapshot",
            PointKind::Ami => "ami",
            PointKind::RdsSnapshot => "rds-snapshot",
            PointKind::RdsClusterSnapshot => "rds-cluster-snapshot",
            PointKind::DynamodbBackup => "dynamodb-backup",
        }
    }
}

/// Where a point is in its life, whatever each service calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Complete: it can be restored.
    Ready,
    /// Still being made: the sweep keeps it, and it counts in no keep-last-N tier yet.
    InProgress,
    /// Failed: it can never be restored, so it counts in no tier either.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub kind: PointKind,
    /// The snapshot, image or DB (cluster) snapshot id; the backup ARN for DynamoDB.
    pub id: String,
    pub account_id: String,
    pub region: String,
    /// What AWS says the point is of (volume, DB instance or cluster, table); for an AMI, which
    /// does not say, the `lifeboat:source-resource-id` tag.
    pub resource_id: String,
    pub created_at: DateTime<Utc>,
    pub size_gib: Option<i64>,
    /// The state as AWS words it (`completed`, `available`, `creating`, ...).
    pub state: String,
    pub readiness: Readiness,
    /// EBS snapshots only: `standard` or `archive`.
    pub storage_tier: Option<String>,
    /// An AMI's snapshots, deleted with it.
    pub snapshot_ids: Vec<String>,
    pub tags: PointTags,
}

impl Point {
    /// The resource a point is a backup of, for grouping: the tag, which copies carry too,
    /// else what AWS says.
    pub fn source_resource(&self) -> &str {
        if self.tags.resource_id.is_empty() {
            &self.resource_id
        } else {
            &self.tags.resource_id
        }
    }
}

/// Why a region's points could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("reading DynamoDB recovery point tags: {0}")]
    Store(BusError),
}

/// The clients of one account and region.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub rds: aws_sdk_rds::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl Clients {
    /// The clients of `account_id` (resolved: empty is the caller's) in `region`.
    pub async fn connect(accounts: &Accounts, account_id: &str, region: &str) -> Result<Clients, AwsError> {
        let config = accounts.config_for(account_id, region).await?;
        Ok(Clients {
            ec2: ec2_client(&config, account_id, region),
            rds: rds_client(&config, account_id, region),
            dynamodb: dynamodb_client(&config, account_id, region),
        })
    }
}

/// Every Lifeboat recovery point in `account_id` (empty: the caller's) and `region`, all types.
pub async fn list(
    accounts: &Accounts,
    store: &dyn SharedStore,
    account_id: &str,
    region: &str,
) -> Result<Vec<Point>, ListError> {
    let account_id = accounts.resolve_account(account_id).await?;
    let clients = Clients::connect(accounts, &account_id, region).await?;
    list_with(&clients, store, Location { account_id: &account_id, region }).await
}

/// [`list`] with ready clients. All or nothing: a region whose AMIs cannot be listed must not
/// have their snapshots swept as if they were plain EBS snapshots.
pub async fn list_with(clients: &Clients, store: &dyn SharedStore, at: Location<'_>) -> Result<Vec<Point>, ListError> {
    let images = amis(&clients.ec2, at).await?;
    // An AMI's snapshots carry its tags too; they live and go with it.
    let of_images: HashSet<&str> = images.iter().flat_map(|i| i.snapshot_ids.iter().map(String::as_str)).collect();
    let mut points: Vec<Point> =
        ebs_snapshots(&clients.ec2, at).await?.into_iter().filter(|s| !of_images.contains(s.id.as_str())).collect();
    points.extend(images);
    points.extend(rds_snapshots(&clients.rds, at).await?);
    points.extend(rds_cluster_snapshots(&clients.rds, at).await?);
    points.extend(dynamodb_backups(&clients.dynamodb, store, at).await?);
    Ok(points)
}

/// The account and region being listed.
#[derive(Clone, Copy)]
pub struct Location<'a> {
    pub account_id: &'a str,
    pub region: &'a str,
}

fn lifeboat_filter() -> Filter {
    Filter::builder().name("tag-key").values(TAG_PLAN).build()
}

fn from_aws(at: &aws_sdk_ec2::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.secs(), at.subsec_nanos())
}

fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> HashMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn rds_tags(tags: &[aws_sdk_rds::types::Tag]) -> HashMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

/// EBS snapshots owned by the account with a `lifeboat:plan` tag.
pub async fn ebs_snapshots(ec2: &aws_sdk_ec2::Client, at: Location<'_>) -> Result<Vec<Point>, AwsError> {
    let mut pages =
        ec2.describe_snapshots().owner_ids("self").filters(lifeboat_filter()).max_results(1000).into_paginator().send();
    let mut points = Vec::new();
    while let Some(page) = pages.next().await {
        for snapshot in page.map_err(|e| classify("ec2:DescribeSnapshots", e))?.snapshots() {
            let (Some(id), Some(created_at)) = (snapshot.snapshot_id(), snapshot.start_time().and_then(from_aws))
            else {
                continue;
            };
            let Some(tags) = PointTags::parse(&ec2_tags(snapshot.tags())) else { continue };
            let state = snapshot.state().cloned().unwrap_or(SnapshotState::Pending);
            let readiness = match state {
                SnapshotState::Completed => Readiness::Ready,
                SnapshotState::Error => Readiness::Failed,
                _ => Readiness::InProgress,
            };
            points.push(Point {
                kind: PointKind::EbsSnapshot,
                id: id.to_string(),
                account_id: at.account_id.to_string(),
                region: at.region.to_string(),
                resource_id: snapshot.volume_id().unwrap_or_default().to_string(),
                created_at,
                size_gib: snapshot.volume_size().map(i64::from),
                state: state.as_str().to_string(),
                readiness,
                // Snapshots from before storage tiers existed are standard.
                storage_tier: Some(snapshot.storage_tier().unwrap_or(&StorageTier::Standard).as_str().to_string()),
                snapshot_ids: Vec::new(),
                tags,
            });
        }
    }
    Ok(points)
}

/// AMIs owned by the account with a `lifeboat:plan` tag, with their snapshots.
pub async fn amis(ec2: &aws_sdk_ec2::Client, at: Location<'_>) -> Result<Vec<Point>, AwsError> {
    let mut pages = ec2.describe_images().owners("self").filters(lifeboat_filter()).into_paginator().send();
    let mut points = Vec::new();
    while let Some(page) = pages.next().await {
        for image in page.map_err(|e| classify("ec2:DescribeImages", e))?.images() {
            let created_at =
                image.creation_date().and_then(|d| DateTime::parse_from_rfc3339(d).ok()).map(|d| d.with_timezone(&Utc));
            let (Some(id), Some(created_at)) = (image.image_id(), created_at) else { continue };
            let Some(tags) = PointTags::parse(&ec2_tags(image.tags())) else { continue };
            let state = image.state().cloned().unwrap_or(ImageState::Pending);
            let readiness = match state {
                ImageState::Available => Readiness::Ready,
                ImageState::Pending | ImageState::Transient => Readiness::InProgress,
                _ => Readiness::Failed,
            };
            let devices: Vec<_> = image.block_device_mappings().iter().filter_map(|m| m.ebs()).collect();
            let size: i64 = devices.iter().filter_map(|ebs| ebs.volume_size()).map(i64::from).sum();
            points.push(Point {
                kind: PointKind::Ami,
                id: id.to_string(),
                account_id: at.account_id.to_string(),
                region: at.region.to_string(),
                resource_id: tags.resource_id.clone(),
                created_at,
                size_gib: (!devices.is_empty()).then_some(size),
                state: state.as_str().to_string(),
                readiness,
                storage_tier: None,
                snapshot_ids: devices.iter().filter_map(|ebs| ebs.snapshot_id()).map(str::to_string).collect(),
                tags,
            });
        }
    }
    Ok(points)
}

fn rds_readiness(status: &str) -> Readiness {
    match status {
        "available" => Readiness::Ready,
        "failed" | "incompatible-restore" | "incompatible-parameters" => Readiness::Failed,
        _ => Readiness::InProgress,
    }
}

/// Manual DB snapshots whose tags are Lifeboat's recovery point tags.
pub async fn rds_snapshots(rds: &aws_sdk_rds::Client, at: Location<'_>) -> Result<Vec<Point>, AwsError> {
    let mut pages = rds.describe_db_snapshots().snapshot_type("manual").into_paginator().send();
    let mut points = Vec::new();
    while let Some(page) = pages.next().await {
        for snapshot in page.map_err(|e| classify("rds:DescribeDBSnapshots", e))?.db_snapshots() {
            let created_at = snapshot.snapshot_create_time().and_then(from_aws);
            let (Some(id), Some(created_at)) = (snapshot.db_snapshot_identifier(), created_at) else { continue };
            let Some(tags) = PointTags::parse(&rds_tags(snapshot.tag_list())) else { continue };
            let state = snapshot.status().unwrap_or("creating");
            points.push(Point {
                kind: PointKind::RdsSnapshot,
                id: id.to_string(),
                account_id: at.account_id.to_string(),
                region: at.region.to_string(),
                resource_id: snapshot.db_instance_identifier().unwrap_or_default().to_string(),
                created_at,
                size_gib: snapshot.allocated_storage().map(i64::from),
                state: state.to_string(),
                readiness: rds_readiness(state),
                storage_tier: None,
                snapshot_ids: Vec::new(),
                tags,
            });
        }
    }
    Ok(points)
}

/// Manual DB cluster snapshots whose tags are Lifeboat's recovery point tags.
pub async fn rds_cluster_snapshots(rds: &aws_sdk_rds::Client, at: Location<'_>) -> Result<Vec<Point>, AwsError> {
    let mut pages = rds.describe_db_cluster_snapshots().snapshot_type("manual").into_paginator().send();
    let mut points = Vec::new();
    while let Some(page) = pages.next().await {
        for snapshot in page.map_err(|e| classify("rds:DescribeDBClusterSnapshots", e))?.db_cluster_snapshots() {
            let created_at = snapshot.snapshot_create_time().and_then(from_aws);
            let (Some(id), Some(created_at)) = (snapshot.db_cluster_snapshot_identifier(), created_at) else {
                continue;
            };
            let Some(tags) = PointTags::parse(&rds_tags(snapshot.tag_list())) else { continue };
            let state = snapshot.status().unwrap_or("creating");
            points.push(Point {
                kind: PointKind::RdsClusterSnapshot,
                id: id.to_string(),
                account_id: at.account_id.to_string(),
                region: at.region.to_string(),
                resource_id: snapshot.db_cluster_identifier().unwrap_or_default().to_string(),
                created_at,
                size_gib: snapshot.allocated_storage().map(i64::from),
                state: state.to_string(),
                readiness: rds_readiness(state),
                storage_tier: None,
                snapshot_ids: Vec::new(),
                tags,
            });
        }
    }
    Ok(points)
}

/// On-demand DynamoDB backups named `lifeboat-...` whose recovery point tags are in the shared
/// store; a backup with a Lifeboat-like name but no tags there is not a plan's.
pub async fn dynamodb_backups(
    ddb: &aws_sdk_dynamodb::Client,
    store: &dyn SharedStore,
    at: Location<'_>,
) -> Result<Vec<Point>, ListError> {
    let mut points = Vec::new();
    let mut start = None;
    loop {
        let page = ddb
            .list_backups()
            .backup_type(BackupTypeFilter::User)
            .set_exclusive_start_backup_arn(start)
            .send()
            .await
            .map_err(|e| classify("dynamodb:ListBackups", e))?;
        for summary in page.backup_summaries() {
            let created_at = summary.backup_creation_date_time().and_then(from_aws);
            let (Some(arn), Some(created_at)) = (summary.backup_arn(), created_at) else { continue };
            if !summary.backup_name().is_some_and(|name| name.starts_with(DYNAMODB_BACKUP_PREFIX)) {
                continue;
            }
            let loaded = load_point_tags(store, arn).await.map_err(ListError::Store)?;
            let Some(tags) = loaded.and_then(|tags| PointTags::parse(&tags)) else {
                continue;
            };
            let status = summary.backup_status().cloned().unwrap_or(BackupStatus::Creating);
            let readiness = match status {
                BackupStatus::Available => Readiness::Ready,
                BackupStatus::Creating => Readiness::InProgress,
                // Being deleted already.
                BackupStatus::Deleted => continue,
                _ => Readiness::Failed,
            };
            const GIB: i64 = 1 << 30;
            points.push(Point {
                kind: PointKind::DynamodbBackup,
                id: arn.to_string(),
                account_id: at.account_id.to_string(),
                region: at.region.to_string(),
                resource_id: summary.table_name().unwrap_or_default().to_string(),
                created_at,
                size_gib: summary.backup_size_bytes().map(|bytes| (bytes + GIB - 1) / GIB),
                state: status.as_str().to_string(),
                readiness,
                storage_tier: None,
                snapshot_ids: Vec::new(),
                tags,
            });
        }
        start = page.last_evaluated_backup_arn().map(str::to_string);
        if start.is_none() {
            return Ok(points);
        }
    }
}
