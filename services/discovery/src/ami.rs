//! Finding AMIs: images owned by the source account with all the set's tags, grouped by the
//! instance they were made from (also for copies), and the source instance's settings captured
//! for the restore.

use std::collections::HashMap;

use aws_sdk_ec2::types::{Filter, Image, ImageState, InstanceAttributeName, InstanceStateName};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::time::to_timestamp;
use lifeboat_proto::{Backup, Ec2Target, ResourceType};

use crate::ebs::RegionClients;
use crate::select::Candidate;

/// Tag an AMI may carry with the type of the instance it was made from (Lifeboat's own backups
/// set it); otherwise the type is read from the source instance, if it still exists.
pub const TAG_INSTANCE_TYPE: &str = "lifeboat:instance-type";

pub use lifeboat_common::subjects::TAG_SOURCE_INSTANCE;

/// Settings keys in `Backup.settings` for EC2 (read by the EC2 service).
pub use lifeboat_common::settings::ec2 as setting;

/// Every available AMI owned by `account_id` with all `tags`, grouped by the instance it was
/// made from: Lifeboat's and AWS Backup's tags, SourceInstanceId, or for a copy the source
/// AMI's SourceInstanceId (looked up by id in its region); the AMI itself otherwise. AMIs
/// Lifeboat copied while restoring are skipped.
pub async fn list_images(
    ec2: &aws_sdk_ec2::Client,
    account_id: &str,
    region: &str,
    tags: &HashMap<String, String>,
) -> Result<Vec<(Candidate, Backup)>, AwsError> {
    find_images(ec2, &crate::ebs::SameClient(ec2.clone()), account_id, region, tags).await
}

pub async fn find_images(
    ec2: &aws_sdk_ec2::Client,
    regions: &dyn RegionClients,
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
    let mut found = Vec::new();
    for image in images {
        let (Some(image_id), Some(created)) = (image.image_id(), image.creation_date()) else { continue };
        let Some(created_at) =
            chrono::DateTime::parse_from_rfc3339(created).ok().map(|t| t.with_timezone(&chrono::Utc))
        else {
            continue;
        };
        let image_tags = tags_of(&image);
        let foreign = image.owner_id().is_some_and(|owner| owner != account_id);
        if foreign
            || image.state() != Some(&ImageState::Available)
            || !crate::select::tags_match(tags, &image_tags)
            || crate::ebs::is_restore_artifact(&image_tags)
        {
            continue;
        }
        let (source, source_region) = source_instance(regions, &image, region).await?;
        let mut settings = HashMap::new();
        settings.insert(setting::SOURCE_REGION.to_string(), source_region);
        if let Some(known) = image_tags.get(TAG_INSTANCE_TYPE) {
            settings.insert(setting::INSTANCE_TYPE.to_string(), known.clone());
        }
        let encrypted_device =
            image.block_device_mappings().iter().filter_map(|m| m.ebs()).find(|ebs| ebs.encrypted() == Some(true));
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
            encrypted: encrypted_device.is_some(),
            kms_key_id: encrypted_device.and_then(|e| e.kms_key_id()).unwrap_or_default().to_string(),
            settings,
            ..Default::default()
        };
        found.push((candidate, backup));
    }
    Ok(found)
}

fn tags_of(image: &Image) -> HashMap<String, String> {
    image
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect()
}

/// `i-…` and its region from AWS Backup's source ARN (`arn:aws:ec2:<region>:<account>:instance/i-…`).
pub fn instance_from_arn(arn: &str) -> Option<(String, String)> {
    let instance = arn.rsplit_once("instance/")?.1;
    let region = arn.split(':').nth(3).unwrap_or_default();
    instance.starts_with("i-").then(|| (instance.to_string(), region.to_string()))
}

/// The instance an AMI was made from, and its region.
async fn source_instance(
    regions: &dyn RegionClients,
    image: &Image,
    region: &str,
) -> Result<(String, String), AwsError> {
    let mut current = image.clone();
    let mut current_region = region.to_string();
    for _ in 0..4 {
        let tags = tags_of(&current);
        if let Some(instance) = tags.get(TAG_SOURCE_INSTANCE).filter(|i| i.starts_with("i-")) {
            return Ok((instance.clone(), current_region));
        }
        if let Some((instance, arn_region)) =
            tags.get(crate::ebs::TAG_AWS_BACKUP_SOURCE).and_then(|a| instance_from_arn(a))
        {
            return Ok((instance, if arn_region.is_empty() { current_region } else { arn_region }));
        }
        if let Some(instance) = current.source_instance_id().filter(|i| !i.is_empty()) {
            return Ok((instance.to_string(), current_region));
        }
        let (Some(source_image), Some(source_region)) = (current.source_image_id(), current.source_image_region())
        else {
            break;
        };
        let (source_image, source_region) = (source_image.to_string(), source_region.to_string());
        let ec2 = regions.ec2(&source_region).await?;
        let output = ec2
            .describe_images()
            .filters(Filter::builder().name("image-id").values(&source_image).build())
            .send()
            .await
            .map_err(|e| classify("ec2:DescribeImages", e))?;
        match output.images().iter().find(|i| i.image_id() == Some(source_image.as_str())) {
            Some(original) => {
                current = original.clone();
                current_region = source_region;
            }
            None => return Ok((source_image, source_region)),
        }
    }
    Ok((current.image_id().unwrap_or_default().to_string(), current_region))
}

/// Captures each picked AMI's source instance settings while it still exists (by id: one
/// DescribeInstances per region, and its user data and termination protection per instance):
/// type, subnet, security groups, zone, key pair, instance profile, metadata options, tags.
pub async fn capture_settings(regions: &dyn RegionClients, backups: &mut [Backup]) -> Result<(), AwsError> {
    let mut by_region: HashMap<String, Vec<String>> = HashMap::new();
    for backup in backups.iter() {
        if backup.source_resource_id.starts_with("i-") {
            let region = backup.settings.get(setting::SOURCE_REGION).cloned().unwrap_or_else(|| backup.region.clone());
            by_region.entry(region).or_default().push(backup.source_resource_id.clone());
        }
    }
    let mut instances = HashMap::new();
    for (region, mut ids) in by_region {
        ids.sort();
        ids.dedup();
        let ec2 = regions.ec2(&region).await?;
        for chunk in ids.chunks(200) {
            let output = ec2
                .describe_instances()
                .filters(Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build())
                .send()
                .await
                .map_err(|e| classify("ec2:DescribeInstances", e))?;
            for instance in output.reservations().iter().flat_map(|r| r.instances()) {
                let gone = matches!(
                    instance.state().and_then(|s| s.name()),
                    Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
                );
                if let (Some(id), false) = (instance.instance_id(), gone) {
                    let user_data = attribute(&ec2, id, InstanceAttributeName::UserData).await?;
                    let protection = attribute(&ec2, id, InstanceAttributeName::DisableApiTermination).await?;
                    instances.insert((region.clone(), id.to_string()), (instance.clone(), user_data, protection));
                }
            }
        }
    }
    for backup in backups.iter_mut() {
        let region = backup.settings.get(setting::SOURCE_REGION).cloned().unwrap_or_else(|| backup.region.clone());
        let Some((instance, user_data, protection)) = instances.get(&(region, backup.source_resource_id.clone()))
        else {
            continue;
        };
        let settings = &mut backup.settings;
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                settings.insert(key.to_string(), value);
            }
        };
        put(setting::INSTANCE_TYPE, instance.instance_type().map(|t| t.as_str().to_string()));
        put(setting::SUBNET_ID, instance.subnet_id().map(str::to_string));
        let groups: Vec<&str> = instance.security_groups().iter().filter_map(|g| g.group_id()).collect();
        put(setting::SECURITY_GROUP_IDS, Some(groups.join(",")));
        put(setting::AVAILABILITY_ZONE, instance.placement().and_then(|p| p.availability_zone()).map(str::to_string));
        put(setting::KEY_NAME, instance.key_name().map(str::to_string));
        put(
            setting::IAM_INSTANCE_PROFILE_ARN,
            instance.iam_instance_profile().and_then(|p| p.arn()).map(str::to_string),
        );
        put(setting::USER_DATA, user_data.clone());
        put(setting::DISABLE_API_TERMINATION, protection.clone());
        if let Some(options) = instance.metadata_options() {
            put(setting::HTTP_TOKENS, options.http_tokens().map(|t| t.as_str().to_string()));
            put(setting::HTTP_ENDPOINT, options.http_endpoint().map(|t| t.as_str().to_string()));
            put(setting::HTTP_PUT_RESPONSE_HOP_LIMIT, options.http_put_response_hop_limit().map(|h| h.to_string()));
            put(setting::INSTANCE_METADATA_TAGS, options.instance_metadata_tags().map(|t| t.as_str().to_string()));
        }
        put(setting::TAGS_FROM, Some("instance".to_string()));
        for tag in instance.tags() {
            if let Some(key) = tag.key() {
                settings.insert(format!("{}{key}", setting::TAG_PREFIX), tag.value().unwrap_or_default().to_string());
            }
        }
    }
    Ok(())
}

/// One attribute of a still existing instance (`None` when it has none).
async fn attribute(
    ec2: &aws_sdk_ec2::Client,
    instance_id: &str,
    name: InstanceAttributeName,
) -> Result<Option<String>, AwsError> {
    let output = ec2
        .describe_instance_attribute()
        .instance_id(instance_id)
        .attribute(name.clone())
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeInstanceAttribute", e))?;
    Ok(match name {
        InstanceAttributeName::UserData => output.user_data().and_then(|v| v.value()).map(str::to_string),
        _ => output.disable_api_termination().and_then(|v| v.value()).map(|v| v.to_string()),
    })
}

/// Reason codes of EC2 planning.
pub mod reason {
    /// No `subnet_id` in the target, and none to inherit from the source instance.
    pub const SUBNET_UNKNOWN: &str = "SUBNET_UNKNOWN";
}

/// The set's target for one AMI, completed from the source instance in its account and region:
/// subnet and security groups (the zone follows the subnet). Refused at plan time when the subnet
/// cannot be known, or another account gets an AMI under a key it cannot use.
pub fn complete_target(set_name: &str, target: &Ec2Target, backup: &Backup) -> Result<Ec2Target, AwsError> {
    let mut target = target.clone();
    let same_account = target.account_id == backup.account_id;
    if !same_account && backup.encrypted && target.kms_key_id.is_empty() && crate::keys::is_aws_managed(backup) {
        return Err(AwsError::task_failure(
            "plan",
            crate::ebs::reason::ENCRYPTED_WITHOUT_TARGET_KEY,
            format!(
                "set '{set_name}': AMI {} has snapshots encrypted with the AWS-managed EBS key of account {}, which \
                 cannot be shared with account {}; give target.ec2.kms_key_id (a key the target account can use)",
                backup.backup_id, backup.account_id, target.account_id
            ),
        ));
    }
    if target.subnet_id.is_empty() {
        let source_region = backup.settings.get(setting::SOURCE_REGION).unwrap_or(&backup.region);
        let why = match backup.settings.get(setting::SUBNET_ID) {
            _ if !same_account => format!("the target is another account than the source's ({})", backup.account_id),
            Some(_) if &target.region != source_region => {
                format!("the source instance's subnet is in {source_region}, not in {}", target.region)
            }
            Some(subnet) => {
                target.subnet_id = subnet.clone();
                if target.security_group_ids.is_empty() {
                    target.security_group_ids = backup
                        .settings
                        .get(setting::SECURITY_GROUP_IDS)
                        .map(|g| g.split(',').filter(|g| !g.is_empty()).map(str::to_string).collect())
                        .unwrap_or_default();
                }
                return Ok(target);
            }
            None => format!("the source instance {} no longer exists", backup.source_resource_id),
        };
        return Err(AwsError::task_failure(
            "plan",
            reason::SUBNET_UNKNOWN,
            format!("set '{set_name}': target.ec2.subnet_id is needed to restore {}: {why}", backup.backup_id),
        ));
    }
    Ok(target)
}
