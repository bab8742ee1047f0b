//! Finding AMIs: images owned by the source account with all the set's tags, grouped by the
//! instance they were made from, and the source instance's type captured for the restore.

use std::collections::HashMap;

use aws_sdk_ec2::types::{Filter, ImageState};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::time::to_timestamp;
use lifeboat_proto::{Backup, ResourceType};

use crate::select::Candidate;

/// Tag an AMI may carry with the type of the instance it was made from (Lifeboat's own backups
/// set it); otherwise the type is read from the source instance, if it still exists.
pub const TAG_INSTANCE_TYPE: &str = "lifeboat:instance-type";

pub async fn list_images(
    ec2: &aws_sdk_ec2::Client,
    account_id: &str,
    region: &str,
    tags: &HashMap<String, String>,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    let mut request =
        ec2.describe_images().owners(account_id).filters(Filter::builder().name("state").values("available").build());
    for (key, value) in tags {
        request = request.filters(Filter::builder().name(format!("tag:{key}")).values(value).build());
    }
    let mut pages = request.into_paginator().send();
    let mut images = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("ec2:DescribeImages", e))?;
        images.extend(page.images().iter().cloned());
    }
    let mut instance_types: HashMap<String, String> = HashMap::new();
    let mut found = Vec::new();
    for image in images {
        let (Some(image_id), Some(created)) = (image.image_id(), image.creation_date()) else { continue };
        let Some(created_at) =
            chrono::DateTime::parse_from_rfc3339(created).ok().map(|t| t.with_timezone(&chrono::Utc))
        else {
            continue;
        };
        let image_tags: HashMap<String, String> = image
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
            .collect();
        let foreign = image.owner_id().is_some_and(|owner| owner != account_id);
        if foreign || image.state() != Some(&ImageState::Available) || !crate::select::tags_match(tags, &image_tags) {
            continue;
        }
        let source = image.source_instance_id().unwrap_or(image_id).to_string();
        let mut settings = HashMap::new();
        let instance_type = match image_tags.get(TAG_INSTANCE_TYPE) {
            Some(known) => Some(known.clone()),
            None => match instance_types.get(&source) {
                Some(known) => Some(known.clone()),
                None => {
                    let looked_up = instance_type_of(ec2, &source).await?;
                    if let Some(found) = &looked_up {
                        instance_types.insert(source.clone(), found.clone());
                    }
                    looked_up
                }
            },
        };
        if let Some(instance_type) = instance_type {
            settings.insert("instance_type".to_string(), instance_type);
        }
        let candidate = Candidate {
            backup_id: image_id.to_string(),
            source_resource_id: source.clone(),
            created_at,
            tags: image_tags.clone(),
        };
        let backup = Backup {
            backup_id: image_id.to_string(),
            resource_type: ResourceType::Ec2Instance as i32,
            source_resource_id: source,
            account_id: account_id.to_string(),
            region: region.to_string(),
            created_at: Some(to_timestamp(created_at)),
            tags: image_tags,
            settings,
            ..Default::default()
        };
        found.push((candidate, backup));
    }
    Ok(found)
}

/// The type of a still existing instance; `None` when it is gone.
async fn instance_type_of(ec2: &aws_sdk_ec2::Client, instance_id: &str) -> Result<Option<String>, AwsError> {
    if !instance_id.starts_with("i-") {
        return Ok(None);
    }
    match ec2.describe_instances().instance_ids(instance_id).send().await {
        Ok(output) => Ok(output
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.instance_type().map(|t| t.as_str().to_string()))),
        Err(e) => {
            let error = classify("ec2:DescribeInstances", e);
            if error.is_retryable() {
                Err(error)
            } else {
                Ok(None)
            }
        }
    }
}
