//! Finding EBS snapshots: server-side tag and status filters, paginated; every snapshot grouped
//! by the volume it really protects (a copy made by CopySnapshot carries an arbitrary VolumeId on
//! AWS, usually `vol-ffffffff`), and the source volume's settings captured for the restore.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, Snapshot};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::subjects::TAG_TASK_ID;
use lifeboat_proto::{Backup, EbsTarget, ResourceType};

use crate::select::Candidate;

/// Page size for DescribeSnapshots (the API's maximum).
const PAGE_SIZE: i32 = 1000;

pub use lifeboat_common::subjects::TAG_AWS_BACKUP_SOURCE;
pub use lifeboat_common::subjects::TAG_RESTORE_COPY;
pub use lifeboat_common::subjects::TAG_SOURCE_VOLUME;
/// The VolumeId AWS gives snapshots made by CopySnapshot (and some imports).
pub const PLACEHOLDER_VOLUME_ID: &str = "vol-ffffffff";
/// How many copies of copies are followed back to the original snapshot.
const MAX_COPY_CHAIN: usize = 4;
/// Values per DescribeVolumes `volume-id` filter.
const IDS_PER_CALL: usize = 200;

/// Settings keys in `Backup.settings` for EBS (read by the EBS service).
pub use lifeboat_common::settings::ebs as setting;

/// EC2 clients of the source account in other regions, for following a copy back to the
/// snapshot it was copied from.
#[async_trait]
pub trait RegionClients: Send + Sync {
    async fn ec2(&self, region: &str) -> Result<aws_sdk_ec2::Client, AwsError>;
}

/// One client for every region (tests with aws-smithy-mocks).
pub struct SameClient(pub aws_sdk_ec2::Client);

#[async_trait]
impl RegionClients for SameClient {
    async fn ec2(&self, _region: &str) -> Result<aws_sdk_ec2::Client, AwsError> {
        Ok(self.0.clone())
    }
}

/// Every completed snapshot owned by `account_id` in the client's region with all `tags`,
/// grouped by what its own tags, description and VolumeId say (no lookups elsewhere).
pub async fn list_snapshots(
    ec2: &aws_sdk_ec2::Client,
    account_id: &str,
    region: &str,
    tags: &HashMap<String, String>,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    find_snapshots(ec2, &SameClient(ec2.clone()), account_id, region, tags).await
}

/// Like [`list_snapshots`], following copies (`Copied snap-… from <region>`) back to their
/// original in its region through `regions`, to find the volume they protect.
pub async fn find_snapshots(
    ec2: &aws_sdk_ec2::Client,
    regions: &dyn RegionClients,
    account_id: &str,
    region: &str,
    tags: &HashMap<String, String>,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    let mut request = ec2
        .describe_snapshots()
        .owner_ids(account_id)
        .filters(Filter::builder().name("status").values("completed").build())
        .max_results(PAGE_SIZE);
    for (key, value) in tags {
        request = request.filters(Filter::builder().name(format!("tag:{key}")).values(value).build());
    }
    let mut pages = request.into_paginator().send();
    let mut listed = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("ec2:DescribeSnapshots", e))?;
        listed.extend(page.snapshots().iter().cloned());
    }
    let mut originals = Originals::default();
    originals.prefetch(regions, &listed).await?;
    let mut found = Vec::new();
    for snapshot in &listed {
        let (Some(snapshot_id), Some(created)) = (snapshot.snapshot_id(), snapshot.start_time()) else {
            continue;
        };
        let Some(created_at) = lifeboat_common::time::from_aws(created) else {
            continue;
        };
        let snapshot_tags = tags_of(snapshot);
        // Owner and tags are filtered by the server; this guards against an endpoint that
        // ignores those filters (moto ignores OwnerIds and lists its public AMI snapshots).
        let foreign = snapshot.owner_id().is_some_and(|owner| owner != account_id);
        if foreign || !crate::select::tags_match(tags, &snapshot_tags) || is_restore_artifact(&snapshot_tags) {
            continue;
        }
        let (volume_id, source_region) = originals.source_of(regions, snapshot, region).await?;
        let mut settings = HashMap::new();
        settings.insert(setting::SOURCE_REGION.to_string(), source_region);
        let candidate = Candidate {
            backup_id: snapshot_id.to_string(),
            source_resource_id: volume_id.clone(),
            created_at,
            tags: snapshot_tags.clone(),
        };
        let backup = Backup {
            backup_id: snapshot_id.to_string(),
            resource_type: ResourceType::EbsVolume as i32,
            source_resource_id: volume_id,
            account_id: account_id.to_string(),
            region: region.to_string(),
            created_at: Some(lifeboat_common::time::to_timestamp(created_at)),
            tags: snapshot_tags,
            size_gib: snapshot.volume_size().unwrap_or_default() as i64,
            encrypted: snapshot.encrypted().unwrap_or_default(),
            kms_key_id: snapshot.kms_key_id().unwrap_or_default().to_string(),
            settings,
            ..Default::default()
        };
        found.push((candidate, backup));
    }
    Ok(found)
}

/// Copies and volumes Lifeboat made while restoring are not backups of their own; the recovery
/// points its backup plans made (tagged with their plan) are.
pub fn is_restore_artifact(tags: &HashMap<String, String>) -> bool {
    let recovery_point = tags.contains_key(lifeboat_common::backup::TAG_PLAN);
    tags.contains_key(TAG_RESTORE_COPY) || (tags.contains_key(TAG_TASK_ID) && !recovery_point)
}

fn tags_of(snapshot: &Snapshot) -> HashMap<String, String> {
    snapshot
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect()
}

/// `vol-…` from AWS Backup's source ARN (`arn:aws:ec2:<region>:<account>:volume/vol-…`), with
/// the region of the ARN.
pub fn volume_from_arn(arn: &str) -> Option<(String, String)> {
    let volume = arn.rsplit_once("volume/")?.1;
    let region = arn.split(':').nth(3).unwrap_or_default();
    volume.starts_with("vol-").then(|| (volume.to_string(), region.to_string()))
}

/// The snapshot and region a copy names in its description: AWS writes
/// `[Copied snap-… from us-east-1]`.
pub fn copied_from(description: &str) -> Option<(String, String)> {
    let rest = &description[description.find("Copied snap-")? + "Copied ".len()..];
    let (snapshot_id, rest) = rest.split_once(" from ")?;
    let region: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    (!region.is_empty() && snapshot_id.starts_with("snap-")).then(|| (snapshot_id.to_string(), region))
}

/// Originals looked up by id, once per snapshot.
#[derive(Default)]
struct Originals {
    looked_up: HashMap<(String, String), Option<Snapshot>>,
}

impl Originals {
    /// Looks up the originals of every listed copy that its tags do not already place, by id,
    /// 200 to a call per region (rather than one call per copy).
    async fn prefetch(&mut self, regions: &dyn RegionClients, listed: &[Snapshot]) -> Result<(), AwsError> {
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for snapshot in listed {
            let tags = tags_of(snapshot);
            if tags.contains_key(TAG_SOURCE_VOLUME) || tags.contains_key(TAG_AWS_BACKUP_SOURCE) {
                continue;
            }
            if let Some((id, region)) = snapshot.description().and_then(copied_from) {
                wanted.entry(region).or_default().push(id);
            }
        }
        for (region, mut ids) in wanted {
            ids.sort();
            ids.dedup();
            let ec2 = regions.ec2(&region).await?;
            for chunk in ids.chunks(IDS_PER_CALL) {
                let output = ec2
                    .describe_snapshots()
                    .filters(Filter::builder().name("snapshot-id").set_values(Some(chunk.to_vec())).build())
                    .send()
                    .await
                    .map_err(|e| classify("ec2:DescribeSnapshots", e))?;
                for id in chunk {
                    let found = output.snapshots().iter().find(|s| s.snapshot_id() == Some(id.as_str())).cloned();
                    self.looked_up.insert((region.clone(), id.clone()), found);
                }
            }
        }
        Ok(())
    }

    /// The volume a snapshot protects and its region: Lifeboat's and AWS Backup's tags first,
    /// then the copy chain, then a real VolumeId, and finally the snapshot itself (never the
    /// placeholder id every copy shares).
    async fn source_of(
        &mut self,
        regions: &dyn RegionClients,
        snapshot: &Snapshot,
        region: &str,
    ) -> Result<(String, String), AwsError> {
        let mut current = snapshot.clone();
        let mut current_region = region.to_string();
        for _ in 0..MAX_COPY_CHAIN {
            let tags = tags_of(&current);
            if let Some(volume) = tags.get(TAG_SOURCE_VOLUME).filter(|v| v.starts_with("vol-")) {
                return Ok((volume.clone(), current_region));
            }
            if let Some(found) = tags.get(TAG_AWS_BACKUP_SOURCE).and_then(|arn| volume_from_arn(arn)) {
                let found_region = if found.1.is_empty() { current_region } else { found.1 };
                return Ok((found.0, found_region));
            }
            let Some((original_id, original_region)) = current.description().and_then(copied_from) else { break };
            match self.original(regions, &original_id, &original_region).await? {
                Some(original) => {
                    current = original;
                    current_region = original_region;
                }
                // The original is gone: its id still names the group of its copies.
                None => return Ok((original_id, original_region)),
            }
        }
        let id = current.snapshot_id().unwrap_or_default();
        let volume_id = current.volume_id().filter(|v| *v != PLACEHOLDER_VOLUME_ID && v.starts_with("vol-"));
        let is_copy = current.description().and_then(copied_from).is_some();
        Ok(match volume_id {
            Some(volume_id) if !is_copy => (volume_id.to_string(), current_region),
            _ => (id.to_string(), current_region),
        })
    }

    async fn original(
        &mut self,
        regions: &dyn RegionClients,
        snapshot_id: &str,
        region: &str,
    ) -> Result<Option<Snapshot>, AwsError> {
        let key = (region.to_string(), snapshot_id.to_string());
        if let Some(known) = self.looked_up.get(&key) {
            return Ok(known.clone());
        }
        let ec2 = regions.ec2(region).await?;
        // By id, as a filter, so that a deleted original is an empty answer, not an error.
        let output = ec2
            .describe_snapshots()
            .filters(Filter::builder().name("snapshot-id").values(snapshot_id).build())
            .send()
            .await
            .map_err(|e| classify("ec2:DescribeSnapshots", e))?;
        let found = output.snapshots().iter().find(|s| s.snapshot_id() == Some(snapshot_id)).cloned();
        self.looked_up.insert(key, found.clone());
        Ok(found)
    }
}

/// Captures the source volume's settings into each backup (one DescribeVolumes by id per
/// region and 200 volumes): type, IOPS, throughput, encryption, zone and tags. A volume that is
/// gone leaves the snapshot's tags (`tags_from` = `snapshot`) and no zone.
pub async fn capture_settings(regions: &dyn RegionClients, backups: &mut [Backup]) -> Result<(), AwsError> {
    let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for backup in backups.iter() {
        if backup.source_resource_id.starts_with("vol-") {
            let region = backup.settings.get(setting::SOURCE_REGION).cloned().unwrap_or_else(|| backup.region.clone());
            by_region.entry(region).or_default().push(backup.source_resource_id.clone());
        }
    }
    let mut volumes = HashMap::new();
    for (region, mut ids) in by_region {
        ids.sort();
        ids.dedup();
        let ec2 = regions.ec2(&region).await?;
        for chunk in ids.chunks(IDS_PER_CALL) {
            let output = ec2
                .describe_volumes()
                .filters(Filter::builder().name("volume-id").set_values(Some(chunk.to_vec())).build())
                .send()
                .await
                .map_err(|e| classify("ec2:DescribeVolumes", e))?;
            for volume in output.volumes() {
                if let Some(id) = volume.volume_id() {
                    volumes.insert((region.clone(), id.to_string()), volume.clone());
                }
            }
        }
    }
    for backup in backups.iter_mut() {
        let region = backup.settings.get(setting::SOURCE_REGION).cloned().unwrap_or_else(|| backup.region.clone());
        let settings = &mut backup.settings;
        let Some(volume) = volumes.get(&(region, backup.source_resource_id.clone())) else {
            settings.insert(setting::TAGS_FROM.to_string(), "snapshot".to_string());
            if backup.encrypted {
                settings.insert(setting::ENCRYPTED.to_string(), "true".to_string());
            }
            continue;
        };
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                settings.insert(key.to_string(), value);
            }
        };
        put(setting::VOLUME_TYPE, volume.volume_type().map(|t| t.as_str().to_string()));
        put(setting::IOPS, volume.iops().map(|i| i.to_string()));
        put(setting::THROUGHPUT, volume.throughput().map(|t| t.to_string()));
        put(setting::ENCRYPTED, volume.encrypted().filter(|e| *e).map(|_| "true".to_string()));
        put(setting::KMS_KEY_ID, volume.kms_key_id().map(str::to_string));
        put(setting::AVAILABILITY_ZONE, volume.availability_zone().map(str::to_string));
        put(setting::MULTI_ATTACH, volume.multi_attach_enabled().filter(|m| *m).map(|_| "true".to_string()));
        put(setting::TAGS_FROM, Some("volume".to_string()));
        for tag in volume.tags() {
            if let (Some(key), value) = (tag.key(), tag.value().unwrap_or_default()) {
                settings.insert(format!("{}{key}", setting::TAG_PREFIX), value.to_string());
            }
        }
    }
    Ok(())
}

/// Reason codes of EBS planning.
pub mod reason {
    pub use lifeboat_common::restore::reason::ENCRYPTED_WITHOUT_TARGET_KEY;
    /// No `availability_zone` in the target, and none to inherit from the source volume.
    pub const AVAILABILITY_ZONE_UNKNOWN: &str = "AVAILABILITY_ZONE_UNKNOWN";
}

/// The set's target for one backup, completed from the source: in the source's account and
/// region the source volume's zone is inherited. Refused at plan time (failing the set) when the
/// zone cannot be known, or when another account gets a backup whose key it cannot use.
pub fn complete_target(set_name: &str, target: &EbsTarget, backup: &Backup) -> Result<EbsTarget, AwsError> {
    let mut target = target.clone();
    let same_account = target.account_id == backup.account_id;
    if !same_account && backup.encrypted && target.kms_key_id.is_empty() && crate::keys::is_aws_managed(backup) {
        return Err(AwsError::task_failure(
            "plan",
            reason::ENCRYPTED_WITHOUT_TARGET_KEY,
            format!(
                "set '{set_name}': snapshot {} is encrypted with the AWS-managed EBS key of account {}, which cannot \
                 be shared with account {}; give target.ebs.kms_key_id (a key the target account can use)",
                backup.backup_id, backup.account_id, target.account_id
            ),
        ));
    }
    if target.availability_zone.is_empty() {
        let source_region = backup.settings.get(setting::SOURCE_REGION).unwrap_or(&backup.region);
        let zone = backup.settings.get(setting::AVAILABILITY_ZONE);
        let why = match zone {
            _ if !same_account => format!("the target is another account than the source's ({})", backup.account_id),
            Some(zone) if &target.region != source_region => {
                format!("the source volume's zone {zone} is not in the target region {}", target.region)
            }
            Some(zone) => {
                target.availability_zone = zone.clone();
                return Ok(target);
            }
            None => format!("the source volume {} no longer exists", backup.source_resource_id),
        };
        return Err(AwsError::task_failure(
            "plan",
            reason::AVAILABILITY_ZONE_UNKNOWN,
            format!("set '{set_name}': target.ebs.availability_zone is needed to restore {}: {why}", backup.backup_id),
        ));
    }
    Ok(target)
}
