//! Finding EBS snapshots: server-side tag and status filters, paginated.

use std::collections::HashMap;

use aws_sdk_ec2::types::Filter;
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_proto::{Backup, ResourceType};

use crate::select::Candidate;

/// Page size for DescribeSnapshots (the API's maximum).
const PAGE_SIZE: i32 = 1000;

/// Every completed snapshot owned by `account_id` in the client's region with all `tags`.
pub async fn list_snapshots(
    ec2: &aws_sdk_ec2::Client,
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
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("ec2:DescribeSnapshots", e))?;
        for snapshot in page.snapshots() {
            let (Some(snapshot_id), Some(created)) = (snapshot.snapshot_id(), snapshot.start_time()) else {
                continue;
            };
            let Some(created_at) = lifeboat_common::time::from_aws(created) else {
                continue;
            };
            let snapshot_tags: HashMap<String, String> = snapshot
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                .collect();
            // Owner and tags are filtered by the server; this guards against an endpoint that
            // ignores those filters (moto ignores OwnerIds and lists its public AMI snapshots).
            let foreign = snapshot.owner_id().is_some_and(|owner| owner != account_id);
            if foreign || !crate::select::tags_match(tags, &snapshot_tags) {
                continue;
            }
            let volume_id = snapshot.volume_id().unwrap_or(snapshot_id).to_string();
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
                ..Default::default()
            };
            found.push((candidate, backup));
        }
    }
    Ok(found)
}
