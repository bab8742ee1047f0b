//! The EC2 restore service: launches an instance from an AMI in the target account, region,
//! subnet and security groups, copying the AMI to the target region first when needed, and can
//! leave it stopped. Idempotent by the ids each task records (the AMI copy, the instance),
//! checked by id in one batched Describe per account and region; the `lifeboat:task-id` tag
//! and the ClientToken cover the crash window before a record. Every call takes a token of its
//! API family's bucket, shared with every replica. Backup tasks take AMIs instead ([`backup`]).

pub mod backup;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use std::collections::HashMap;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState,
    IamInstanceProfileSpecification, Image, ImageState, Instance, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceMetadataTagsState, InstanceStateName, InstanceType, LaunchPermission,
    LaunchPermissionModifications, OperationType, Placement, ResourceType, SnapshotAttributeName, Tag,
    TagSpecification,
};
use lifeboat_common::aws::{classify, Accounts, AwsError};
use lifeboat_common::batch::Batcher;
use lifeboat_common::bus::Bus;
use lifeboat_common::quota::{Api, QuotaConfig, Quotas};
use lifeboat_common::restore::{restored_tags, Progress, RestoreService, Restorer, ServiceConfig, Step};
use lifeboat_common::shared::SharedStore;
use lifeboat_common::subjects::TAG_TASK_ID;
use lifeboat_proto::{restore_task, Ec2Target, RestoreTask};

pub use lifeboat_common::subjects::TAG_RESTORE_COPY;
pub use lifeboat_common::subjects::TAG_SOURCE_INSTANCE;

/// Keys of `Backup.settings` that discovery captured from the source instance.
pub use lifeboat_common::settings::ec2 as setting;

/// What the new instance gets from the source instance (the target's choices win), and the
/// source's settings that cannot be applied, each named (SETTINGS_NOT_RESTORED).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceSettings {
    pub key_name: Option<String>,
    pub iam_instance_profile_arn: Option<String>,
    pub user_data: Option<String>,
    pub disable_api_termination: bool,
    pub metadata: Option<InstanceMetadataOptionsRequest>,
    pub warnings: Vec<String>,
}

/// Pure, so every delivery computes the same warnings.
pub fn instance_settings(task: &RestoreTask, target: &Ec2Target) -> InstanceSettings {
    let backup = task.backup.clone().unwrap_or_default();
    let captured = |key: &str| backup.settings.get(key).filter(|v| !v.is_empty()).cloned();
    let source_region = captured(setting::SOURCE_REGION).unwrap_or_else(|| backup.region.clone());
    let same_account = target.account_id == backup.account_id;
    let same_place = same_account && target.region == source_region;
    let mut out = InstanceSettings { user_data: captured(setting::USER_DATA), ..Default::default() };
    out.disable_api_termination = captured(setting::DISABLE_API_TERMINATION).as_deref() == Some("true");
    if target.key_pair_name.is_empty() {
        if let Some(key) = captured(setting::KEY_NAME) {
            if same_place {
                out.key_name = Some(key);
            } else {
                out.warnings.push(format!(
                    "key_name (the source's key pair '{key}' is in {}/{source_region}; give target.ec2.key_pair_name)",
                    backup.account_id
                ));
            }
        }
    }
    if target.iam_instance_profile.is_empty() {
        if let Some(profile) = captured(setting::IAM_INSTANCE_PROFILE_ARN) {
            if same_account {
                out.iam_instance_profile_arn = Some(profile);
            } else {
                out.warnings.push(format!(
                    "iam_instance_profile (the source's {profile} is in account {}; give target.ec2.iam_instance_profile)",
                    backup.account_id
                ));
            }
        }
    }
    let tokens = captured(setting::HTTP_TOKENS);
    let endpoint = captured(setting::HTTP_ENDPOINT);
    let hops = captured(setting::HTTP_PUT_RESPONSE_HOP_LIMIT).and_then(|h| h.parse::<i32>().ok());
    let metadata_tags = captured(setting::INSTANCE_METADATA_TAGS);
    if tokens.is_some() || endpoint.is_some() || hops.is_some() || metadata_tags.is_some() {
        out.metadata = Some(
            InstanceMetadataOptionsRequest::builder()
                .set_http_tokens(tokens.map(|t| HttpTokensState::from(t.as_str())))
                .set_http_endpoint(endpoint.map(|e| InstanceMetadataEndpointState::from(e.as_str())))
                .set_http_put_response_hop_limit(hops)
                .set_instance_metadata_tags(metadata_tags.map(|t| InstanceMetadataTagsState::from(t.as_str())))
                .build(),
        );
    }
    out
}

/// The restored instance's tags: the AMI's, the source instance's over them (when discovery
/// saw it), the set's, Lifeboat's.
fn instance_tags(task: &RestoreTask, target: &Ec2Target) -> Vec<(String, String)> {
    let mut task = task.clone();
    if let Some(backup) = task.backup.as_mut() {
        if backup.settings.get(setting::TAGS_FROM).map(String::as_str) == Some("instance") {
            let from_instance: HashMap<String, String> = backup
                .settings
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(setting::TAG_PREFIX)?.to_string(), v.clone())))
                .collect();
            backup.tags.extend(from_instance);
        }
    }
    restored_tags(&task, &target.tags)
}

#[derive(Clone, Debug, Default)]
pub struct Ec2Config {
    pub service: ServiceConfig,
}

pub type Ec2Service = RestoreService<Ec2Restorer>;

/// The EC2 service, ready to `run`.
pub fn service(accounts: Arc<Accounts>, bus: Arc<dyn Bus>, config: Ec2Config) -> Arc<Ec2Service> {
    let api = Ec2Api::new(bus.shared(), config.service.quotas.clone());
    RestoreService::new(Ec2Restorer { accounts, api }, bus, config.service)
}

pub struct Ec2Restorer {
    accounts: Arc<Accounts>,
    api: Ec2Api,
}

fn target_of(task: &RestoreTask) -> Option<&Ec2Target> {
    match &task.target {
        Some(restore_task::Target::Ec2(target)) => Some(target),
        _ => None,
    }
}

/// An EC2 client with the account and region its calls are metered in.
#[derive(Clone)]
pub struct Scope {
    pub ec2: aws_sdk_ec2::Client,
    pub account: String,
    pub region: String,
}

impl Scope {
    fn group(&self) -> String {
        format!("{}/{}", self.account, self.region)
    }
}

/// The EC2 clients a step needs: in the target account and region, and in the source's.
pub struct Clients {
    pub target: Scope,
    pub source: Scope,
}

/// Roles under which a task records its ids in [`Progress`].
pub const INSTANCE: &str = "instance";
pub const COPY: &str = "copy";

/// How long a batch collects ids before its one Describe, and how many one call takes.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const BATCH_IDS: usize = 200;

/// The quota buckets every call takes a token of, and the batched checks by id.
pub struct Ec2Api {
    quotas: Arc<Quotas>,
    instances: Batcher<Scope, Instance>,
    images: Batcher<Scope, Image>,
}

fn store_error(e: lifeboat_common::bus::BusError) -> AwsError {
    AwsError::retryable("ec2", "SharedStoreUnavailable", e.to_string())
}

impl Ec2Api {
    pub fn new(store: Arc<dyn SharedStore>, quotas: QuotaConfig) -> Self {
        let quotas = Quotas::new(store, quotas);
        let (for_instances, for_images) = (quotas.clone(), quotas.clone());
        let instances = Batcher::new(BATCH_WINDOW, BATCH_IDS, move |scope: Scope, ids: Vec<String>| {
            let quotas = for_instances.clone();
            async move { describe_instances(&quotas, &scope, ids).await }
        });
        let images = Batcher::new(BATCH_WINDOW, BATCH_IDS, move |scope: Scope, ids: Vec<String>| {
            let quotas = for_images.clone();
            async move { describe_images(&quotas, &scope, ids).await }
        });
        Self { quotas, instances, images }
    }

    /// Waits for a token of `api` in the scope's account and region.
    async fn token(&self, scope: &Scope, api: Api) -> Result<(), AwsError> {
        take(&self.quotas, scope, api).await
    }

    /// A recorded instance, from the next batched DescribeInstances of its account and region.
    async fn instance(&self, scope: &Scope, id: &str) -> Result<Option<Instance>, AwsError> {
        self.instances.get(&scope.group(), scope.clone(), id).await
    }

    /// A recorded AMI copy, from the next batched DescribeImages of its account and region.
    async fn image(&self, scope: &Scope, id: &str) -> Result<Option<Image>, AwsError> {
        self.images.get(&scope.group(), scope.clone(), id).await
    }
}

async fn take(quotas: &Quotas, scope: &Scope, api: Api) -> Result<(), AwsError> {
    quotas.take(&scope.account, &scope.region, api).await.map_err(store_error)
}

/// One DescribeInstances for many ids (a filter: unknown ids are absent, not an error).
async fn describe_instances(
    quotas: &Quotas,
    scope: &Scope,
    ids: Vec<String>,
) -> Result<HashMap<String, Instance>, AwsError> {
    take(quotas, scope, Api::Ec2Describe).await?;
    let filter = Filter::builder().name("instance-id").set_values(Some(ids)).build();
    // Without MaxResults the answer is not paged, and a batch is far below its limit.
    let output = scope
        .ec2
        .describe_instances()
        .filters(filter)
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeInstances", e))?;
    Ok(output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| (i.instance_id().unwrap_or_default().to_string(), i.clone()))
        .collect())
}

/// One DescribeImages for many ids (a filter: images not yet visible are absent).
async fn describe_images(quotas: &Quotas, scope: &Scope, ids: Vec<String>) -> Result<HashMap<String, Image>, AwsError> {
    take(quotas, scope, Api::Ec2Describe).await?;
    let filter = Filter::builder().name("image-id").set_values(Some(ids)).build();
    let output =
        scope.ec2.describe_images().filters(filter).send().await.map_err(|e| classify("ec2:DescribeImages", e))?;
    Ok(output.images().iter().map(|i| (i.image_id().unwrap_or_default().to_string(), i.clone())).collect())
}

#[async_trait]
impl Restorer for Ec2Restorer {
    fn kind(&self) -> &'static str {
        "ec2"
    }

    fn check(&self, task: &RestoreTask) -> Result<(), String> {
        if task.backup_task.is_some() {
            return lifeboat_common::backup::check_task(task, "ec2", &[lifeboat_proto::ResourceType::Ec2Instance]);
        }
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

    async fn step(&self, task: &RestoreTask, attempt: u32, progress: &mut Progress) -> Result<Step, AwsError> {
        if let Some(job) = &task.backup_task {
            let clients = backup::BackupClients::new(&self.accounts, job).await?;
            return backup::step(&clients, &self.api, task, attempt, progress).await;
        }
        let target = target_of(task).cloned().unwrap_or_default();
        let backup = task.backup.clone().unwrap_or_default();
        let target_config = self.accounts.config_as(&target.account_id, &target.region, &task.target_role_arn).await?;
        let source_config = self.accounts.config_for(&backup.account_id, &backup.region).await?;
        let clients = Clients {
            target: Scope {
                ec2: lifeboat_common::aws::ec2_client(&target_config, &target.account_id, &target.region),
                account: target.account_id.clone(),
                region: target.region.clone(),
            },
            source: Scope {
                ec2: lifeboat_common::aws::ec2_client(&source_config, &backup.account_id, &backup.region),
                account: backup.account_id.clone(),
                region: backup.region.clone(),
            },
        };
        restore_step(&clients, &self.api, task, &target, attempt, progress).await
    }
}

fn task_filter(task_id: &str) -> Filter {
    Filter::builder().name(format!("tag:{TAG_TASK_ID}")).values(task_id).build()
}

pub(crate) fn tag_spec(kind: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
        .build()
}

/// One step of an instance restore. Recorded ids are checked by id (batched); the tag and
/// name lookups run only when an earlier delivery may have created something unrecorded.
pub async fn restore_step(
    clients: &Clients,
    api: &Ec2Api,
    task: &RestoreTask,
    target: &Ec2Target,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let backup = task.backup.clone().unwrap_or_default();
    let settings = instance_settings(task, target);
    if let Some(instance) = recorded_instance(clients, api, task, attempt, progress).await? {
        return settle_instance(clients, api, &instance, target, settings.warnings).await;
    }
    if let Some(id) = progress.id(INSTANCE) {
        // Launched and recorded, not yet in DescribeInstances (eventual consistency).
        return Ok(Step::Waiting { what: format!("instance {id} is starting"), created: vec![id.to_string()] });
    }
    if target.account_id != backup.account_id {
        share_image(&clients.source, api, &backup.backup_id, &target.account_id).await?;
    }
    let image_id = if target.region == backup.region && target.account_id == backup.account_id {
        backup.backup_id.clone()
    } else {
        match recorded_copy(clients, api, task, attempt, progress).await? {
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
            // Recorded, not yet visible: wait for it, never copy twice.
            None if progress.id(COPY).is_some() => {
                let id = progress.id(COPY).unwrap_or_default().to_string();
                return Ok(Step::Waiting {
                    what: format!("AMI copy {id} to {} is not visible yet", target.region),
                    created: vec![id],
                });
            }
            None => {
                let id = copy_image(clients, api, task, target, progress).await?;
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
    let tags = instance_tags(task, target);
    let mut run = clients
        .target
        .ec2
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
    } else if let Some(key) = &settings.key_name {
        run = run.key_name(key);
    }
    if !target.iam_instance_profile.is_empty() {
        run = run.iam_instance_profile(
            IamInstanceProfileSpecification::builder().name(&target.iam_instance_profile).build(),
        );
    } else if let Some(arn) = &settings.iam_instance_profile_arn {
        run = run.iam_instance_profile(IamInstanceProfileSpecification::builder().arn(arn).build());
    }
    if let Some(user_data) = &settings.user_data {
        run = run.user_data(user_data);
    }
    if settings.disable_api_termination {
        run = run.disable_api_termination(true);
    }
    if let Some(metadata) = settings.metadata.clone() {
        run = run.metadata_options(metadata);
    }
    if !target.kms_key_id.is_empty() {
        run = run.set_block_device_mappings(Some(
            encrypted_mappings(&clients.target, api, &image_id, &target.kms_key_id).await?,
        ));
    }
    if attempt > 1 && progress.recorded {
        // A record of other progress (the AMI copy) does not say that an earlier delivery did
        // not launch the instance and die before recording it: look once, right before
        // launching. (On AWS the ClientToken answers it too; not every endpoint honours one.)
        if let Some(instance) = tagged_instance(clients, api, task, progress).await? {
            return settle_instance(clients, api, &instance, target, settings.warnings).await;
        }
    }
    api.token(&clients.target, Api::RunInstances).await?;
    let output = run.send().await.map_err(|e| classify("ec2:RunInstances", e))?;
    let instance =
        output.instances().first().cloned().ok_or_else(|| {
            AwsError::retryable("ec2:RunInstances", "NoInstance", "RunInstances returned no instance")
        })?;
    let id = instance.instance_id().unwrap_or_default().to_string();
    progress.record(INSTANCE, id.clone());
    if settings.disable_api_termination {
        // Also set on its own: not every endpoint applies RunInstances' DisableApiTermination.
        api.token(&clients.target, Api::Ec2Mutate).await?;
        clients
            .target
            .ec2
            .modify_instance_attribute()
            .instance_id(&id)
            .disable_api_termination(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .map_err(|e| classify("ec2:ModifyInstanceAttribute", e))?;
    }
    Ok(Step::Waiting { what: format!("instance {id} is starting"), created: vec![id] })
}

/// Running (or stopped, when asked) is done; on the way there, wait.
async fn settle_instance(
    clients: &Clients,
    api: &Ec2Api,
    instance: &Instance,
    target: &Ec2Target,
    warnings: Vec<String>,
) -> Result<Step, AwsError> {
    let ec2 = &clients.target.ec2;
    let id = instance.instance_id().unwrap_or_default().to_string();
    let state = instance.state().and_then(|s| s.name()).cloned();
    let done = |what: &str| Step::Done {
        message: format!("instance {id} is {what}"),
        created: vec![id.clone()],
        warnings: warnings.clone(),
    };
    Ok(match (state, target.leave_stopped) {
        (Some(InstanceStateName::Running), false) => done("running"),
        (Some(InstanceStateName::Stopped), true) => done("stopped"),
        (Some(InstanceStateName::Running), true) => {
            api.token(&clients.target, Api::Ec2Mutate).await?;
            ec2.stop_instances().instance_ids(&id).send().await.map_err(|e| classify("ec2:StopInstances", e))?;
            Step::Waiting { what: format!("stopping {id}"), created: vec![id] }
        }
        (Some(InstanceStateName::Stopped), false) => {
            api.token(&clients.target, Api::Ec2Mutate).await?;
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

/// The task's instance: by its recorded id, else (only in the crash window) by its tag, and
/// then recorded.
async fn recorded_instance(
    clients: &Clients,
    api: &Ec2Api,
    task: &RestoreTask,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Option<Instance>, AwsError> {
    if let Some(id) = progress.id(INSTANCE) {
        return api.instance(&clients.target, id).await;
    }
    if !progress.may_have_lost(attempt) {
        return Ok(None);
    }
    tagged_instance(clients, api, task, progress).await
}

/// The task's instance found by its `lifeboat:task-id` tag (recorded when found): the crash
/// window's lookup.
async fn tagged_instance(
    clients: &Clients,
    api: &Ec2Api,
    task: &RestoreTask,
    progress: &mut Progress,
) -> Result<Option<Instance>, AwsError> {
    api.token(&clients.target, Api::Ec2Describe).await?;
    let output = clients
        .target
        .ec2
        .describe_instances()
        .filters(task_filter(&task.task_id))
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeInstances", e))?;
    let found = output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| !matches!(i.state().and_then(|s| s.name()), Some(InstanceStateName::Terminated)))
        .cloned();
    if let Some(id) = found.as_ref().and_then(|i| i.instance_id()) {
        progress.record(INSTANCE, id);
    }
    Ok(found)
}

/// AMI names are unique per account and region, so the copy's name is its idempotency key.
fn copy_name(task_id: &str) -> String {
    format!("lifeboat-{task_id}")
}

/// The task's AMI copy: by its recorded id, else (only in the crash window) by its name, and
/// then recorded.
async fn recorded_copy(
    clients: &Clients,
    api: &Ec2Api,
    task: &RestoreTask,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Option<Image>, AwsError> {
    if let Some(id) = progress.id(COPY) {
        return api.image(&clients.target, id).await;
    }
    if !progress.may_have_lost(attempt) {
        return Ok(None);
    }
    api.token(&clients.target, Api::Ec2Describe).await?;
    let output = clients
        .target
        .ec2
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("name").values(copy_name(&task.task_id)).build())
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeImages", e))?;
    let found = output.images().first().cloned();
    if let Some(id) = found.as_ref().and_then(|i| i.image_id()) {
        progress.record(COPY, id);
    }
    Ok(found)
}

/// Starts the AMI copy (the ClientToken makes a repeated call return the same one), records
/// it, and tags it.
async fn copy_image(
    clients: &Clients,
    api: &Ec2Api,
    task: &RestoreTask,
    target: &Ec2Target,
    progress: &mut Progress,
) -> Result<String, AwsError> {
    let backup = task.backup.clone().unwrap_or_default();
    let mut tags = restored_tags(task, &target.tags);
    tags.push((TAG_SOURCE_INSTANCE.to_string(), backup.source_resource_id.clone()));
    tags.push((TAG_RESTORE_COPY.to_string(), task.task_id.clone()));
    api.token(&clients.target, Api::CopyImage).await?;
    let copy = clients
        .target
        .ec2
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
    progress.record(COPY, id.clone());
    tag_image(api, &clients.target, &id, &tags).await?;
    Ok(id)
}

/// Tags an AMI copy explicitly too: not every endpoint applies CopyImage's tag specifications.
/// Restores' and backups' copies share it.
pub(crate) async fn tag_image(
    api: &Ec2Api,
    scope: &Scope,
    id: &str,
    tags: &[(String, String)],
) -> Result<(), AwsError> {
    api.token(scope, Api::Ec2Mutate).await?;
    scope
        .ec2
        .create_tags()
        .resources(id)
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
        .send()
        .await
        .map_err(|e| classify("ec2:CreateTags", e))?;
    Ok(())
}

/// Another account gets launch permission on the AMI and create-volume permission on its EBS
/// snapshots (without the latter it cannot launch from it, nor copy it).
pub(crate) async fn share_image(
    source: &Scope,
    api: &Ec2Api,
    image_id: &str,
    account_id: &str,
) -> Result<(), AwsError> {
    api.token(source, Api::Ec2Mutate).await?;
    source
        .ec2
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
    api.token(source, Api::Ec2Describe).await?;
    let images =
        source.ec2.describe_images().image_ids(image_id).send().await.map_err(|e| classify("ec2:DescribeImages", e))?;
    let snapshots: Vec<String> = images
        .images()
        .iter()
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect();
    for snapshot_id in snapshots {
        api.token(source, Api::Ec2Mutate).await?;
        source
            .ec2
            .modify_snapshot_attribute()
            .snapshot_id(&snapshot_id)
            // The attribute form (also what moto reads) rather than CreateVolumePermission.Add.
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(OperationType::Add)
            .user_ids(account_id)
            .send()
            .await
            .map_err(|e| classify("ec2:ModifySnapshotAttribute", e))?;
    }
    Ok(())
}

/// The AMI's EBS devices, encrypted with `kms_key_id` on the new instance.
async fn encrypted_mappings(
    scope: &Scope,
    api: &Ec2Api,
    image_id: &str,
    kms_key_id: &str,
) -> Result<Vec<BlockDeviceMapping>, AwsError> {
    api.token(scope, Api::Ec2Describe).await?;
    let images =
        scope.ec2.describe_images().image_ids(image_id).send().await.map_err(|e| classify("ec2:DescribeImages", e))?;
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
                        // Re-encrypting keeps the devices' performance.
                        .set_iops(ebs.iops())
                        .set_throughput(ebs.throughput())
                        .set_delete_on_termination(ebs.delete_on_termination())
                        .encrypted(true)
                        .kms_key_id(kms_key_id)
                        .build(),
                )
                .build()
        })
        .collect())
}
