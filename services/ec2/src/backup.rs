//! EC2 backups: an AMI of the instance (without a reboot when the rule says so), tagged as a
//! recovery point on the image and its snapshots, then its copies into other regions and
//! accounts. Idempotent like the restores: the AMI's id and each copy's are recorded at once and
//! checked by id in the batched DescribeImages; the deterministic names are looked up only in
//! the crash window, and once right before a copy on a later delivery. When the plan asks for
//! scripts, the pre script runs on the instance before CreateImage and the post script right
//! after ([`lifeboat_common::app_consistent`]).

use aws_sdk_ec2::types::{Filter, Image, ImageState, ResourceType, Tag};
use chrono::Utc;
use lifeboat_common::app_consistent::{Consistency, Prepared, Script, Scripts};
use lifeboat_common::aws::{classify, Accounts, AwsError, ErrorClass};
use lifeboat_common::backup::{
    copy_account, copy_role, past_completion_window, recovery_point_tags, MAX_TAGS, ROLE_POINT,
};
use lifeboat_common::quota::Api;
use lifeboat_common::restore::{Progress, Step};
use lifeboat_proto::{BackupTask, CopyDestination, RestoreTask};
use sha2::{Digest, Sha256};

use crate::{share_image, tag_image, tag_spec, Ec2Api, Scope, TAG_SOURCE_INSTANCE};

/// The EC2 clients a backup step needs: in the instance's account and region, and in each copy
/// destination's.
pub struct BackupClients {
    pub source: Scope,
    /// One per `copy_to` destination, in its order.
    pub copies: Vec<Scope>,
    /// The pre and post scripts, when the plan asks for them.
    pub scripts: Option<Scripts>,
}

impl BackupClients {
    /// Clients in the instance's account and region and in every destination of the run.
    pub async fn new(accounts: &Accounts, job: &BackupTask) -> Result<Self, AwsError> {
        let scope = |config: &aws_config::SdkConfig, account: &str, region: &str| Scope {
            ec2: lifeboat_common::aws::ec2_client(config, account, region),
            account: account.to_string(),
            region: region.to_string(),
        };
        let source_config = accounts.config_for(&job.account_id, &job.region).await?;
        let source = scope(&source_config, &job.account_id, &job.region);
        let mut copies = Vec::new();
        for destination in destinations(job) {
            let account = copy_account(destination, &job.account_id);
            let config = accounts.config_for(account, &destination.region).await?;
            copies.push(scope(&config, account, &destination.region));
        }
        let scripts = Scripts::for_job(accounts, job).await?;
        Ok(Self { source, copies, scripts })
    }
}

fn destinations(job: &BackupTask) -> &[CopyDestination] {
    job.run.as_ref().map(|run| run.copy_to.as_slice()).unwrap_or_default()
}

/// AMI names are unique per account and region: the name is the AMI's idempotency key.
pub fn image_name(task_id: &str) -> String {
    format!("lifeboat-{task_id}")
}

/// A copy's name differs from the AMI's, so that a copy into the AMI's own account and region
/// (to re-encrypt it) does not collide with it.
pub fn copy_name(task_id: &str) -> String {
    format!("lifeboat-{task_id}-copy")
}

/// CopyImage's ClientToken (at most 64 characters): one per task and destination.
fn copy_token(task_id: &str, account: &str, region: &str) -> String {
    let digest = Sha256::digest(format!("{task_id}\0{account}\0{region}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The recovery point tags plus `lifeboat:source-instance` (discovery groups AMI copies by it,
/// since AWS gives copies no SourceInstanceId) and, when the plan asks for scripts,
/// `lifeboat:consistency`, within EC2's 50: resource tags give way. Second value: the resource
/// tags left out.
fn image_tags(
    task: &RestoreTask,
    job: &BackupTask,
    copy: Option<(&CopyDestination, &str)>,
    progress: &Progress,
) -> (Vec<(String, String)>, Vec<String>) {
    let (mut tags, mut dropped) = recovery_point_tags(task, Utc::now(), copy);
    tags.push((TAG_SOURCE_INSTANCE.to_string(), job.resource_id.clone()));
    tags.extend(Consistency::tag(progress));
    let plan_tags = job.run.as_ref().map(|run| &run.tags);
    while tags.len() > MAX_TAGS {
        let resource_tag = tags.iter().rposition(|(key, _)| {
            job.resource_tags.contains_key(key) && !plan_tags.is_some_and(|t| t.contains_key(key))
        });
        let Some(index) = resource_tag else { break };
        dropped.insert(0, tags.remove(index).0);
    }
    (tags, dropped)
}

/// The task's images that are done, failed or on their way.
enum Seen {
    Available(String),
    Failed(String, String),
    Pending(String, String),
}

fn seen(image: &Image) -> Seen {
    let id = image.image_id().unwrap_or_default().to_string();
    match image.state() {
        Some(ImageState::Available) => Seen::Available(id),
        Some(ImageState::Failed | ImageState::Error | ImageState::Invalid | ImageState::Deregistered) => {
            let reason = image.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
            Seen::Failed(id, reason.to_string())
        }
        state => Seen::Pending(id, state.map(|s| s.as_str().to_string()).unwrap_or_else(|| "pending".into())),
    }
}

/// Waiting, unless the run's completion window has ended: then FAILED, saying what exists.
fn waiting(task: &RestoreTask, what: String, created: Vec<String>) -> Step {
    match past_completion_window(task, Utc::now()) {
        Some(Step::Failed { code, message }) => Step::Failed { code, message: format!("{message}; {what}") },
        _ => Step::Waiting { what, created },
    }
}

/// One step of an instance backup: the AMI, then its copies, each created once and then
/// checked by id until available.
pub async fn step(
    clients: &BackupClients,
    api: &Ec2Api,
    task: &RestoreTask,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let job = task.backup_task.clone().unwrap_or_default();
    let instance = &job.resource_id;
    let later_delivery = attempt > 1;
    let name = image_name(&task.task_id);
    // While the pre script runs there is no AMI an earlier delivery may have lost.
    let may_be_lost = later_delivery && !clients.scripts.as_ref().is_some_and(|s| s.pre_running(progress));
    let image = match recorded_image(&clients.source, api, &name, ROLE_POINT, may_be_lost, progress).await? {
        Some(image) => image,
        None => {
            if let Some(id) = progress.id(ROLE_POINT) {
                // Created and recorded, not yet in DescribeImages (eventual consistency).
                let what = format!("AMI {id} of {instance} is not visible yet");
                return Ok(waiting(task, what, vec![id.to_string()]));
            }
            if let Some(failed) = past_completion_window(task, Utc::now()) {
                if let Some(scripts) = &clients.scripts {
                    // A pre script may have frozen the instance: it is not left so.
                    scripts.thaw(task, attempt, progress).await;
                }
                return Ok(failed);
            }
            if let Some(scripts) = &clients.scripts {
                if let Prepared::Waiting(what) = scripts.prepare(task, attempt, progress).await? {
                    return Ok(Step::Waiting { what, created: Vec::new() });
                }
            }
            let created = create_image(&clients.source, api, task, &job, progress).await;
            if let Some(scripts) = &clients.scripts {
                // The thaw follows CreateImage at once, and a CreateImage that failed too.
                match created {
                    Ok(_) => {
                        scripts.finish(task, attempt, progress).await?;
                    }
                    Err(_) => scripts.thaw(task, attempt, progress).await,
                }
            }
            let id = created?;
            return Ok(Step::Waiting { what: format!("creating AMI {id} of {instance}"), created: vec![id] });
        }
    };
    if let Some(scripts) = &clients.scripts {
        // Sent here when an earlier delivery created the AMI and died before sending it.
        if let Script::Running { command_id, status } = scripts.finish(task, attempt, progress).await? {
            let what = format!("post script (command {command_id}) on {instance} is {status}");
            return Ok(waiting(task, what, vec![image.image_id().unwrap_or_default().to_string()]));
        }
    }
    let point = match seen(&image) {
        Seen::Available(id) => id,
        Seen::Failed(id, reason) => {
            return Ok(Step::Failed {
                code: "ImageCreationFailed".into(),
                message: format!("AMI {id} of {instance} failed: {reason}"),
            })
        }
        Seen::Pending(id, state) => {
            return Ok(waiting(task, format!("AMI {id} of {instance} is {state}"), vec![id]));
        }
    };
    let copies = destinations(&job);
    if copies.iter().all(|d| progress.id(&copy_role(d, &job.account_id)).is_none()) {
        // Before any copy starts, so once per backup but for redeliveries (CreateTags repeats
        // harmlessly).
        tag_snapshots(&clients.source, api, &image).await?;
    }
    let mut created = vec![point.clone()];
    let mut pending = Vec::new();
    for (destination, scope) in copies.iter().zip(&clients.copies) {
        let role = copy_role(destination, &job.account_id);
        let place = format!("{}/{}", scope.account, scope.region);
        let copy = recorded_image(scope, api, &copy_name(&task.task_id), &role, later_delivery, progress).await?;
        match copy.as_ref().map(seen) {
            Some(Seen::Available(id)) => created.push(id),
            Some(Seen::Failed(id, reason)) => {
                return Ok(Step::Failed {
                    code: "ImageCopyFailed".into(),
                    message: format!("AMI {point} of {instance} exists; its copy {id} to {place} failed: {reason}"),
                })
            }
            Some(Seen::Pending(id, state)) => {
                pending.push(format!("copy {id} to {place} is {state}"));
                created.push(id);
            }
            None if progress.id(&role).is_some() => {
                let id = progress.id(&role).unwrap_or_default().to_string();
                pending.push(format!("copy {id} to {place} is not visible yet"));
                created.push(id);
            }
            None => {
                if let Some(Step::Failed { code, message }) = past_completion_window(task, Utc::now()) {
                    let message = format!("{message}; AMI {point} of {instance} exists, not copied to {place}");
                    return Ok(Step::Failed { code, message });
                }
                match copy_image(&clients.source, scope, api, task, &job, destination, &point, progress).await {
                    Ok(id) => {
                        pending.push(format!("copying {point} to {place} as {id}"));
                        created.push(id);
                    }
                    Err(e) if e.class == ErrorClass::TaskFailure => {
                        return Ok(Step::Failed {
                            code: e.code.clone(),
                            message: format!("AMI {point} of {instance} exists; cannot copy it to {place}: {e}"),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if !pending.is_empty() {
        return Ok(waiting(task, pending.join("; "), created));
    }
    let (_, dropped) = image_tags(task, &job, None, progress);
    let mut warnings = if dropped.is_empty() {
        Vec::new()
    } else {
        vec![format!("tags left off {point} (EC2 takes {MAX_TAGS}): {}", dropped.join(", "))]
    };
    let mut message = match created.len() {
        1 => format!("AMI {point} of {instance}"),
        _ => format!("AMI {point} of {instance}, copies {}", created[1..].join(", ")),
    };
    if let Some(scripts) = &clients.scripts {
        warnings.extend(scripts.warnings(progress));
        let consistency = Consistency::recorded(progress).unwrap_or(Consistency::Crash);
        message.push_str(&format!(" ({}-consistent)", consistency.as_str()));
    }
    Ok(Step::Done { message, created, warnings })
}

/// The image recorded under `role`, by id (batched); else, on a later delivery, by its name
/// (then recorded): an earlier delivery may have created it and died, or timed out on a call
/// that AWS carried out, before recording it. That lookup runs once, right before a create,
/// since a create records its id (AWS also answers a repeated ClientToken; moto does not).
async fn recorded_image(
    scope: &Scope,
    api: &Ec2Api,
    name: &str,
    role: &str,
    later_delivery: bool,
    progress: &mut Progress,
) -> Result<Option<Image>, AwsError> {
    if let Some(id) = progress.id(role) {
        return api.image(scope, id).await;
    }
    if !later_delivery {
        return Ok(None);
    }
    let found = named_image(scope, api, name).await?;
    if let Some(id) = found.as_ref().and_then(|i| i.image_id()) {
        progress.record(role, id);
    }
    Ok(found)
}

async fn named_image(scope: &Scope, api: &Ec2Api, name: &str) -> Result<Option<Image>, AwsError> {
    api.token(scope, Api::Ec2Describe).await?;
    let output = scope
        .ec2
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("name").values(name).build())
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeImages", e))?;
    Ok(output.images().first().cloned())
}

/// CreateImage, tagged as the recovery point, and recorded. A name already taken is ours (the
/// name holds the task id): that AMI is adopted. The snapshots are tagged once the AMI is
/// available ([`tag_snapshots`]): CreateImage's snapshot TagSpecification is not taken by every
/// endpoint (moto rejects it).
async fn create_image(
    source: &Scope,
    api: &Ec2Api,
    task: &RestoreTask,
    job: &BackupTask,
    progress: &mut Progress,
) -> Result<String, AwsError> {
    let run = job.run.clone().unwrap_or_default();
    let no_reboot = run.options.as_ref().is_some_and(|o| o.no_reboot);
    let name = image_name(&task.task_id);
    let (tags, _) = image_tags(task, job, None, progress);
    api.token(source, Api::Ec2Mutate).await?;
    let created = source
        .ec2
        .create_image()
        .instance_id(&job.resource_id)
        .name(&name)
        .description(format!("Lifeboat backup {}/{} of {}", run.plan, run.rule, job.resource_id))
        .no_reboot(no_reboot)
        .tag_specifications(tag_spec(ResourceType::Image, &tags))
        .send()
        .await
        .map_err(|e| classify("ec2:CreateImage", e));
    let id = match created {
        Ok(output) => output
            .image_id()
            .map(str::to_string)
            .ok_or_else(|| AwsError::retryable("ec2:CreateImage", "NoImageId", "CreateImage returned no image id"))?,
        Err(e) if e.code == "InvalidAMIName.Duplicate" => {
            named_image(source, api, &name).await?.and_then(|image| image.image_id().map(str::to_string)).ok_or(e)?
        }
        Err(e) => return Err(e),
    };
    progress.record(ROLE_POINT, id.clone());
    Ok(id)
}

/// The AMI's EBS snapshots get the AMI's own tags, so the sweep and `backup list` see them as
/// part of the recovery point.
async fn tag_snapshots(source: &Scope, api: &Ec2Api, image: &Image) -> Result<(), AwsError> {
    let snapshots: Vec<String> = image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect();
    let tags: Vec<Tag> = image.tags().to_vec();
    if snapshots.is_empty() || tags.is_empty() {
        return Ok(());
    }
    api.token(source, Api::Ec2Mutate).await?;
    source
        .ec2
        .create_tags()
        .set_resources(Some(snapshots))
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(|e| classify("ec2:CreateTags", e))?;
    Ok(())
}

/// Shares the AMI with another account when the destination is one, then CopyImage in the
/// destination (re-encrypted when the destination names a key), recorded, then tagged
/// explicitly too: not every endpoint applies CopyImage's tag specifications.
#[allow(clippy::too_many_arguments)]
async fn copy_image(
    source: &Scope,
    destination_scope: &Scope,
    api: &Ec2Api,
    task: &RestoreTask,
    job: &BackupTask,
    destination: &CopyDestination,
    point: &str,
    progress: &mut Progress,
) -> Result<String, AwsError> {
    if destination_scope.account != source.account {
        share_image(source, api, point, &destination_scope.account).await?;
    }
    let (tags, _) = image_tags(task, job, Some((destination, point)), progress);
    let encrypted = !destination.kms_key_id.is_empty();
    api.token(destination_scope, Api::CopyImage).await?;
    let copy = destination_scope
        .ec2
        .copy_image()
        .source_image_id(point)
        .source_region(&source.region)
        .name(copy_name(&task.task_id))
        .description(format!("Lifeboat copy of {point} ({})", job.resource_id))
        .client_token(copy_token(&task.task_id, &destination_scope.account, &destination_scope.region))
        .set_encrypted(encrypted.then_some(true))
        .set_kms_key_id(encrypted.then(|| destination.kms_key_id.clone()))
        .tag_specifications(tag_spec(ResourceType::Image, &tags))
        .tag_specifications(tag_spec(ResourceType::Snapshot, &tags))
        .send()
        .await
        .map_err(|e| classify("ec2:CopyImage", e))?;
    let id = copy
        .image_id()
        .map(str::to_string)
        .ok_or_else(|| AwsError::retryable("ec2:CopyImage", "NoImageId", "CopyImage returned no image id"))?;
    progress.record(&copy_role(destination, &job.account_id), id.clone());
    tag_image(api, destination_scope, &id, &tags).await?;
    Ok(id)
}
