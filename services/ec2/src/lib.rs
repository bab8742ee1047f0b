//! The EC2 restore service: launches an instance from an AMI in the target account, region,
//! subnet and security groups, copying the AMI to the target region first when needed, and can
//! leave it stopped. Idempotent by the `lifeboat:task-id` tag and the ClientToken.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification, Image, ImageState, Instance,
    InstanceStateName, InstanceType, LaunchPermission, LaunchPermissionModifications, Placement, ResourceType, Tag,
    TagSpecification,
};
use lifeboat_common::aws::{classify, Accounts, AwsError};
use lifeboat_common::bus::Bus;
use lifeboat_common::restore::{restored_tags, RestoreService, Restorer, ServiceConfig, Step};
use lifeboat_common::subjects::TAG_TASK_ID;
use lifeboat_proto::{restore_task, Ec2Target, RestoreTask};

#[derive(Clone, Debug, Default)]
pub struct Ec2Config {
    pub service: ServiceConfig,
}

pub type Ec2Service = RestoreService<Ec2Restorer>;

/// The EC2 service, ready to `run`.
pub fn service(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: Ec2Config) -> Arc<Ec2Service> {
    RestoreService::new(Ec2Restorer { accounts }, bus, config.service)
}

pub struct Ec2Restorer {
    accounts: Arc<Accounts>,
}

fn target_of(task: &RestoreTask) -> Option<&Ec2Target> {
    match &task.target {
        Some(restore_task::Target::Ec2(target)) => Some(target),
        _ => None,
    }
}

/// The EC2 clients a step needs: in the target account and region, and in the source's.
pub struct Clients {
    pub target: aws_sdk_ec2::Client,
    pub source: aws_sdk_ec2::Client,
}

#[async_trait]
impl Restorer for Ec2Restorer {
    fn kind(&self) -> &'static str {
        "ec2"
    }

    fn check(&self, task: &RestoreTask) -> Result<(), String> {
        match target_of(task) {
            Some(t)
                if task.backup.is_some()
                    && !t.account_id.is_empty()
                    && !t.region.is_empty()
                    && !t.subnet_id.is_empty() =>
            {
                Ok(())
            }
            _ => Err("task has no AMI or no complete EC2 target (account, region, subnet)".into()),
        }
    }

    async fn step(&self, task: &RestoreTask, _attempt: u32) -> Result<Step, AwsError> {
        let target = target_of(task).cloned().unwrap_or_default();
        let backup = task.backup.clone().unwrap_or_default();
        let target_config = self.accounts.config_as(&target.account_id, &target.region, &task.target_role_arn).await?;
        let source_config = self.accounts.config_for(&backup.account_id, &backup.region).await?;
        let clients = Clients {
            target: lifeboat_common::aws::ec2_client(&target_config, &target.account_id, &target.region),
            source: lifeboat_common::aws::ec2_client(&source_config, &backup.account_id, &backup.region),
        };
        restore_step(&clients, task, &target).await
    }
}

fn task_filter(task_id: &str) -> Filter {
    Filter::builder().name(format!("tag:{TAG_TASK_ID}")).values(task_id).build()
}

fn tag_spec(kind: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
        .build()
}

/// One step of an instance restore.
pub async fn restore_step(clients: &Clients, task: &RestoreTask, target: &Ec2Target) -> Result<Step, AwsError> {
    let backup = task.backup.clone().unwrap_or_default();
    if let Some(instance) = find_instance(&clients.target, &task.task_id).await? {
        return settle_instance(&clients.target, &instance, target).await;
    }
    if target.account_id != backup.account_id {
        share_image(&clients.source, &backup.backup_id, &target.account_id).await?;
    }
    let image_id = if target.region == backup.region && target.account_id == backup.account_id {
        backup.backup_id.clone()
    } else {
        match find_copy(&clients.target, &task.task_id).await? {
            Some(copy) if copy.state() == Some(&ImageState::Available) => {
                copy.image_id().unwrap_or_default().to_string()
            }
            Some(copy)
                if matches!(
                    copy.state(),
                    Some(ImageState::Failed) | Some(ImageState::Error) | Some(ImageState::Invalid)
                ) =>
            {
                return Ok(Step::Failed {
                    code: "ImageCopyFailed".into(),
                    message: format!("copy {} of {} failed", copy.image_id().unwrap_or_default(), backup.backup_id),
                })
            }
            Some(copy) => {
                let id = copy.image_id().unwrap_or_default().to_string();
                return Ok(Step::Waiting {
                    what: format!("AMI copy {id} to {} is pending", target.region),
                    created: vec![id],
                });
            }
            None => {
                let tags = restored_tags(task, &target.tags);
                let copy = clients
                    .target
                    .copy_image()
                    .source_image_id(&backup.backup_id)
                    .source_region(&backup.region)
                    .name(copy_name(&task.task_id))
                    .client_token(&task.task_id)
                    .tag_specifications(tag_spec(ResourceType::Image, &tags))
                    .send()
                    .await
                    .map_err(|e| classify("ec2:CopyImage", e))?;
                let id = copy.image_id().unwrap_or_default().to_string();
                // Also tagged explicitly: not every endpoint applies CopyImage's tag specifications.
                clients
                    .target
                    .create_tags()
                    .resources(&id)
                    .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
                    .send()
                    .await
                    .map_err(|e| classify("ec2:CreateTags", e))?;
                return Ok(Step::Waiting {
                    what: format!("copying {} to {} as {id}", backup.backup_id, target.region),
                    created: vec![id],
                });
            }
        }
    };
    let Some(instance_type) = Some(target.instance_type.clone())
        .filter(|t| !t.is_empty())
        .or_else(|| backup.settings.get("instance_type").cloned())
    else {
        return Ok(Step::Failed {
            code: "INSTANCE_TYPE_UNKNOWN".into(),
            message: format!(
                "the instance {} behind {} is gone; give target.ec2.instance_type",
                backup.source_resource_id, backup.backup_id
            ),
        });
    };
    let tags = restored_tags(task, &target.tags);
    let mut run = clients
        .target
        .run_instances()
        .image_id(&image_id)
        .min_count(1)
        .max_count(1)
        .instance_type(InstanceType::from(instance_type.as_str()))
        .subnet_id(&target.subnet_id)
        .set_security_group_ids((!target.security_group_ids.is_empty()).then(|| target.security_group_ids.clone()))
        // The task id is the idempotency token: AWS returns the same instance for a repeated call.
        .client_token(&task.task_id)
        .tag_specifications(tag_spec(ResourceType::Instance, &tags))
        .tag_specifications(tag_spec(ResourceType::Volume, &tags));
    if !target.availability_zone.is_empty() {
        run = run.placement(Placement::builder().availability_zone(&target.availability_zone).build());
    }
    if !target.key_pair_name.is_empty() {
        run = run.key_name(&target.key_pair_name);
    }
    if !target.iam_instance_profile.is_empty() {
        run = run.iam_instance_profile(
            IamInstanceProfileSpecification::builder().name(&target.iam_instance_profile).build(),
        );
    }
    if !target.kms_key_id.is_empty() {
        run = run
            .set_block_device_mappings(Some(encrypted_mappings(&clients.target, &image_id, &target.kms_key_id).await?));
    }
    let output = run.send().await.map_err(|e| classify("ec2:RunInstances", e))?;
    let instance =
        output.instances().first().cloned().ok_or_else(|| {
            AwsError::retryable("ec2:RunInstances", "NoInstance", "RunInstances returned no instance")
        })?;
    let id = instance.instance_id().unwrap_or_default().to_string();
    Ok(Step::Waiting { what: format!("instance {id} is starting"), created: vec![id] })
}

/// Running (or stopped, when asked) is done; on the way there, wait.
async fn settle_instance(ec2: &aws_sdk_ec2::Client, instance: &Instance, target: &Ec2Target) -> Result<Step, AwsError> {
    let id = instance.instance_id().unwrap_or_default().to_string();
    let state = instance.state().and_then(|s| s.name()).cloned();
    let done = |what: &str| Step::Done {
        message: format!("instance {id} is {what}"),
        created: vec![id.clone()],
        warnings: Vec::new(),
    };
    Ok(match (state, target.leave_stopped) {
        (Some(InstanceStateName::Running), false) => done("running"),
        (Some(InstanceStateName::Stopped), true) => done("stopped"),
        (Some(InstanceStateName::Running), true) => {
            ec2.stop_instances().instance_ids(&id).send().await.map_err(|e| classify("ec2:StopInstances", e))?;
            Step::Waiting { what: format!("stopping {id}"), created: vec![id] }
        }
        (Some(InstanceStateName::Stopped), false) => {
            ec2.start_instances().instance_ids(&id).send().await.map_err(|e| classify("ec2:StartInstances", e))?;
            Step::Waiting { what: format!("starting {id}"), created: vec![id] }
        }
        (Some(InstanceStateName::Terminated) | Some(InstanceStateName::ShuttingDown), _) => {
            Step::Failed { code: "InstanceTerminated".into(), message: format!("instance {id} was terminated") }
        }
        (state, _) => Step::Waiting {
            what: format!(
                "instance {id} is {}",
                state.map(|s| s.as_str().to_string()).unwrap_or_else(|| "starting".into())
            ),
            created: vec![id],
        },
    })
}

async fn find_instance(ec2: &aws_sdk_ec2::Client, task_id: &str) -> Result<Option<Instance>, AwsError> {
    let output = ec2
        .describe_instances()
        .filters(task_filter(task_id))
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeInstances", e))?;
    Ok(output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| !matches!(i.state().and_then(|s| s.name()), Some(InstanceStateName::Terminated)))
        .cloned())
}

/// AMI names are unique per account and region, so the copy's name is its idempotency key.
fn copy_name(task_id: &str) -> String {
    format!("lifeboat-{task_id}")
}

async fn find_copy(ec2: &aws_sdk_ec2::Client, task_id: &str) -> Result<Option<Image>, AwsError> {
    let output = ec2
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("name").values(copy_name(task_id)).build())
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeImages", e))?;
    Ok(output.images().first().cloned())
}

async fn share_image(source: &aws_sdk_ec2::Client, image_id: &str, account_id: &str) -> Result<(), AwsError> {
    source
        .modify_image_attribute()
        .image_id(image_id)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id(account_id).build())
                .build(),
        )
        .send()
        .await
        .map_err(|e| classify("ec2:ModifyImageAttribute", e))?;
    Ok(())
}

/// The AMI's EBS devices, encrypted with `kms_key_id` on the new instance.
async fn encrypted_mappings(
    ec2: &aws_sdk_ec2::Client,
    image_id: &str,
    kms_key_id: &str,
) -> Result<Vec<BlockDeviceMapping>, AwsError> {
    let images =
        ec2.describe_images().image_ids(image_id).send().await.map_err(|e| classify("ec2:DescribeImages", e))?;
    let image = images
        .images()
        .first()
        .ok_or_else(|| AwsError::task_failure("ec2:DescribeImages", "InvalidAMIID.NotFound", image_id))?;
    Ok(image
        .block_device_mappings()
        .iter()
        .filter(|m| m.ebs().is_some())
        .map(|m| {
            let ebs = m.ebs().cloned().unwrap_or_else(|| EbsBlockDevice::builder().build());
            BlockDeviceMapping::builder()
                .set_device_name(m.device_name().map(str::to_string))
                .ebs(
                    EbsBlockDevice::builder()
                        .set_snapshot_id(ebs.snapshot_id().map(str::to_string))
                        .set_volume_size(ebs.volume_size())
                        .set_volume_type(ebs.volume_type().cloned())
                        .set_delete_on_termination(ebs.delete_on_termination())
                        .encrypted(true)
                        .kms_key_id(kms_key_id)
                        .build(),
                )
                .build()
        })
        .collect())
}
