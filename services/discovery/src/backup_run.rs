//! The resources a backup run selects: every resource of the rule's types in each account and
//! region with all its include tags and none of its exclude tags. Tag filters go to AWS where
//! the API takes them (EC2), so a large account is not listed whole.

use std::collections::HashMap;

use aws_sdk_ec2::types::Filter;
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_proto::{BackupSelection, ResourceType};

/// One selected resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: ResourceType,
    pub id: String,
    pub arn: String,
    pub tags: HashMap<String, String>,
    /// EBS_VOLUME_SET: the instance's EBS volumes by device name.
    pub volumes: HashMap<String, String>,
    pub size_gib: i64,
}

/// Restore drills restore into request ids with this prefix (their resources carry it in
/// `lifeboat:request-id`); what they create is deleted within minutes and never backed up.
pub const DRILL_PREFIX: &str = "drill-";

/// Whether a resource with `tags` is selected: all include tags, none of the exclude tags (key
/// and value), and not a drill's.
pub fn selected(selection: &BackupSelection, tags: &HashMap<String, String>) -> bool {
    let has = |(k, v): (&String, &String)| tags.get(k) == Some(v);
    let drill = tags.get(lifeboat_common::subjects::TAG_REQUEST_ID).is_some_and(|id| id.starts_with(DRILL_PREFIX));
    selection.include_tags.iter().all(has) && !selection.exclude_tags.iter().any(has) && !drill
}

fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> HashMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn rds_tags(tags: &[aws_sdk_rds::types::Tag]) -> HashMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn tag_filters(selection: &BackupSelection) -> Vec<Filter> {
    let mut filters: Vec<Filter> = selection
        .include_tags
        .iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect();
    filters.sort_by(|a, b| a.name().cmp(&b.name()));
    filters
}

/// The volumes of the region that the selection picks.
pub async fn volumes(
    ec2: &aws_sdk_ec2::Client,
    account_id: &str,
    region: &str,
    selection: &BackupSelection,
) -> Result<Vec<Resource>, AwsError> {
    let mut listed = Vec::new();
    let mut pages = ec2.describe_volumes().set_filters(Some(tag_filters(selection))).into_paginator().send();
    while let Some(page) = pages.next().await {
        listed.extend(page.map_err(|e| classify("ec2:DescribeVolumes", e))?.volumes.unwrap_or_default());
    }
    Ok(listed
        .into_iter()
        .filter(|v| !matches!(v.state().map(|s| s.as_str()), Some("deleting" | "deleted" | "error")))
        .map(|volume| {
            let id = volume.volume_id().unwrap_or_default().to_string();
            Resource {
                kind: ResourceType::EbsVolume,
                arn: format!("arn:aws:ec2:{region}:{account_id}:volume/{id}"),
                id,
                tags: ec2_tags(volume.tags()),
                volumes: HashMap::new(),
                size_gib: volume.size().unwrap_or_default().into(),
            }
        })
        .filter(|resource| selected(selection, &resource.tags))
        .collect())
}

/// The instances of the region that the selection picks, as `kind` (an AMI of each, or the
/// snapshot set of its volumes). Terminated and terminating instances are left out.
pub async fn instances(
    ec2: &aws_sdk_ec2::Client,
    kind: ResourceType,
    account_id: &str,
    region: &str,
    selection: &BackupSelection,
) -> Result<Vec<Resource>, AwsError> {
    let mut filters = tag_filters(selection);
    filters.push(
        Filter::builder()
            .name("instance-state-name")
            .set_values(Some(["pending", "running", "stopping", "stopped"].map(String::from).to_vec()))
            .build(),
    );
    let mut reservations = Vec::new();
    let mut pages = ec2.describe_instances().set_filters(Some(filters)).into_paginator().send();
    while let Some(page) = pages.next().await {
        reservations.extend(page.map_err(|e| classify("ec2:DescribeInstances", e))?.reservations.unwrap_or_default());
    }
    let mut found = Vec::new();
    for instance in reservations.iter().flat_map(|r| r.instances()) {
        let id = instance.instance_id().unwrap_or_default().to_string();
        let volumes: HashMap<String, String> = instance
            .block_device_mappings()
            .iter()
            .filter_map(|m| Some((m.device_name()?.to_string(), m.ebs()?.volume_id()?.to_string())))
            .collect();
        let resource = Resource {
            kind,
            arn: format!("arn:aws:ec2:{region}:{account_id}:instance/{id}"),
            id,
            tags: ec2_tags(instance.tags()),
            volumes,
            size_gib: 0,
        };
        if selected(selection, &resource.tags) {
            found.push(resource);
        }
    }
    Ok(found)
}

/// The DB instances (not cluster members, which their cluster's snapshot covers) and clusters
/// of the region that the selection picks.
pub async fn databases(
    rds: &aws_sdk_rds::Client,
    kind: ResourceType,
    selection: &BackupSelection,
) -> Result<Vec<Resource>, AwsError> {
    let mut found = Vec::new();
    if kind == ResourceType::RdsCluster {
        let mut pages = rds.describe_db_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            for cluster in page.map_err(|e| classify("rds:DescribeDBClusters", e))?.db_clusters() {
                let id = cluster.db_cluster_identifier().unwrap_or_default().to_string();
                found.push(Resource {
                    kind,
                    arn: cluster.db_cluster_arn().unwrap_or(&id).to_string(),
                    id,
                    tags: rds_tags(cluster.tag_list()),
                    volumes: HashMap::new(),
                    size_gib: cluster.allocated_storage().unwrap_or_default().into(),
                });
            }
        }
    } else {
        let mut pages = rds.describe_db_instances().into_paginator().send();
        while let Some(page) = pages.next().await {
            for db in page.map_err(|e| classify("rds:DescribeDBInstances", e))?.db_instances() {
                if db.db_cluster_identifier().is_some_and(|c| !c.is_empty()) {
                    continue;
                }
                let id = db.db_instance_identifier().unwrap_or_default().to_string();
                found.push(Resource {
                    kind,
                    arn: db.db_instance_arn().unwrap_or(&id).to_string(),
                    id,
                    tags: rds_tags(db.tag_list()),
                    volumes: HashMap::new(),
                    size_gib: db.allocated_storage().unwrap_or_default().into(),
                });
            }
        }
    }
    found.retain(|resource| selected(selection, &resource.tags));
    Ok(found)
}

/// The tables of the region that the selection picks.
pub async fn tables(ddb: &aws_sdk_dynamodb::Client, selection: &BackupSelection) -> Result<Vec<Resource>, AwsError> {
    let include: HashMap<String, String> = selection.include_tags.clone();
    let tables = crate::dynamodb::tables(ddb, &include, &[]).await?;
    Ok(tables
        .into_iter()
        .map(|table| Resource {
            kind: ResourceType::DynamodbTable,
            id: table.name,
            arn: table.arn,
            tags: table.tags,
            volumes: HashMap::new(),
            size_gib: 0,
        })
        .filter(|resource| selected(selection, &resource.tags))
        .collect())
}
