//! One step of an EBS restore. The ids a step creates are recorded in the task's progress as
//! soon as AWS returns them, and later steps check them by id in batched sweeps; the
//! `lifeboat:task-id` tag is looked up only by a redelivery without a record (the crash window),
//! so a step can run any number of times and still create each resource once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, ResourceType, Snapshot, SnapshotState, Tag, TagSpecification, Volume, VolumeState, VolumeType,
};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::batch::{all_pages, Batcher};
use lifeboat_common::quota::{self, Api, Cap, QuotaConfig, Quotas};
use lifeboat_common::restore::{lifeboat_tags, progress_key, restored_tags, Progress, Step};
use lifeboat_common::shared::SharedStore;
use lifeboat_common::subjects::TAG_TASK_ID;
use lifeboat_proto::{Backup, EbsTarget, RestoreTask};

/// The EC2 clients a step needs.
pub struct Clients {
    /// In the target account and region: volumes and copies are created here.
    pub target: aws_sdk_ec2::Client,
    /// In the source account and region: only used to share a snapshot with another account.
    pub source: aws_sdk_ec2::Client,
}

fn available(volume_id: String, created: Vec<String>, warnings: Vec<String>) -> Step {
    Step::Done { message: format!("volume {volume_id} is available"), created, warnings }
}

pub use lifeboat_common::subjects::TAG_RESTORE_COPY;
pub use lifeboat_common::subjects::TAG_SOURCE_VOLUME;

/// Keys of `Backup.settings` that discovery captured from the source volume.
pub use lifeboat_common::settings::ebs as setting;

/// What a new volume gets: the target's settings, else the source volume's; and the source's
/// settings that cannot be applied, each named (SETTINGS_NOT_RESTORED).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeSettings {
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub multi_attach: bool,
    pub warnings: Vec<String>,
}

/// The settings of the volume restored by `task`. Pure, so every delivery computes the same
/// warnings.
pub fn volume_settings(task: &RestoreTask, target: &EbsTarget) -> VolumeSettings {
    let backup = task.backup.clone().unwrap_or_default();
    let captured = |key: &str| backup.settings.get(key).filter(|v| !v.is_empty()).cloned();
    let number = |key: &str| captured(key).and_then(|v| v.parse::<i32>().ok());
    let mut out = VolumeSettings::default();
    let source_type = captured(setting::VOLUME_TYPE);
    out.volume_type = Some(target.volume_type.clone()).filter(|t| !t.is_empty()).or(source_type.clone());
    let final_type = out.volume_type.clone().unwrap_or_default();
    let type_kept = source_type.is_some() && source_type.as_deref() == Some(final_type.as_str());
    out.iops = target.iops;
    if out.iops.is_none() {
        if let Some(iops) = number(setting::IOPS) {
            // gp2, st1 and sc1 report a baseline IOPS that cannot be set.
            let settable = matches!(final_type.as_str(), "io1" | "io2" | "gp3");
            if type_kept && settable {
                out.iops = Some(iops);
            } else if settable || matches!(source_type.as_deref(), Some("io1" | "io2" | "gp3")) {
                out.warnings.push(format!("iops (the source's {iops} on {final_type}: give target.ebs.iops)"));
            }
        }
    }
    out.throughput = target.throughput;
    if out.throughput.is_none() {
        if let Some(throughput) = number(setting::THROUGHPUT) {
            if type_kept && final_type == "gp3" {
                out.throughput = Some(throughput);
            } else if source_type.as_deref() == Some("gp3") {
                out.warnings
                    .push(format!("throughput (the source's {throughput} MiB/s does not apply to {final_type})"));
            }
        }
    }
    let source_region = captured(setting::SOURCE_REGION).unwrap_or_else(|| backup.region.clone());
    let same_place = target.account_id == backup.account_id && target.region == source_region;
    out.encrypted = !target.kms_key_id.is_empty() || captured(setting::ENCRYPTED).is_some() || backup.encrypted;
    if !target.kms_key_id.is_empty() {
        out.kms_key_id = Some(target.kms_key_id.clone());
    } else if let Some(key) = captured(setting::KMS_KEY_ID) {
        if same_place {
            out.kms_key_id = Some(key);
        } else {
            out.warnings.push(format!(
                "kms_key_id (the source's key {key} is not in {}/{}: encrypted with the target's default key; give \
                 target.ebs.kms_key_id)",
                target.account_id, target.region
            ));
        }
    }
    if captured(setting::MULTI_ATTACH).is_some() {
        if matches!(final_type.as_str(), "io1" | "io2") {
            out.multi_attach = true;
        } else {
            out.warnings.push(format!("multi_attach_enabled (not available on {final_type})"));
        }
    }
    out
}

/// The source's tags for the restored volume: the snapshot's, with the source volume's
/// (captured by discovery while it still existed) over them.
pub fn source_tags(backup: &Backup) -> HashMap<String, String> {
    let mut tags = backup.tags.clone();
    if backup.settings.get(setting::TAGS_FROM).map(String::as_str) == Some("volume") {
        let volume_tags = backup.settings.iter().filter_map(|(k, v)| Some((k.strip_prefix(setting::TAG_PREFIX)?, v)));
        tags.extend(volume_tags.map(|(k, v)| (k.to_string(), v.clone())));
    }
    tags
}

/// How long a recorded copy may stay invisible to DescribeSnapshots (AWS is eventually
/// consistent right after CopySnapshot) before the task gives up on it: that many checks.
pub const COPY_GRACE_CHECKS: u32 = 5;

/// A snapshot copy holds its slot of [`Cap::SnapshotCopies`] at most this long if its task dies
/// without releasing it; copies of large snapshots across regions take hours.
pub const COPY_LEASE: Duration = Duration::from_secs(6 * 3600);

/// DescribeVolumes and DescribeSnapshots take up to this many ids in one filter.
const MAX_IDS_PER_CHECK: usize = 200;

/// Roles of the ids a task records in its [`Progress`].
pub mod role {
    pub const VOLUME: &str = "volume";
    pub const COPY: &str = "copy";
    /// The attempt that started the copy (not an AWS id): counts the grace checks.
    pub const COPY_STARTED_AT: &str = "copy-started-at";
    /// The account the source snapshot was shared with, so it is shared once.
    pub const SHARED_WITH: &str = "shared-with";
}

/// One target account and region (and role), as a batched check needs it: the client to call
/// and the bucket to take a token from.
#[derive(Clone)]
pub struct Scope {
    pub ec2: aws_sdk_ec2::Client,
    pub account: String,
    pub region: String,
}

/// What every task of this process shares: the quotas (token buckets and the copy cap, held with
/// every replica in the shared store) and the batched status checks, so that one Describe call
/// answers every task waiting in the same account and region.
pub struct Context {
    quotas: Arc<Quotas>,
    store: Arc<dyn SharedStore>,
    volumes: Batcher<Scope, Volume>,
    pub(crate) snapshots: Batcher<Scope, Snapshot>,
}

impl Context {
    /// `window`: how long a batched check waits for other tasks' ids before it calls AWS.
    pub fn new(store: Arc<dyn SharedStore>, quotas: QuotaConfig, window: Duration) -> Self {
        let quotas = Quotas::new(store.clone(), quotas);
        let (for_volumes, for_snapshots) = (quotas.clone(), quotas.clone());
        let volumes = Batcher::new(window, MAX_IDS_PER_CHECK, move |scope, ids| {
            describe_volumes(for_volumes.clone(), scope, ids)
        });
        let snapshots = Batcher::new(window, MAX_IDS_PER_CHECK, move |scope, ids| {
            describe_snapshots(for_snapshots.clone(), scope, ids)
        });
        Self { quotas, store, volumes, snapshots }
    }

    /// Takes a token of `api` before a call in `account` and `region`.
    pub(crate) async fn take(&self, account: &str, region: &str, api: Api) -> Result<(), AwsError> {
        take(&self.quotas, account, region, api).await
    }
}

async fn take(quotas: &Quotas, account: &str, region: &str, api: Api) -> Result<(), AwsError> {
    quotas.take(account, region, api).await.map_err(|e| {
        AwsError::retryable("quota", "QuotaStoreUnavailable", format!("cannot take a token of {}: {e}", api.name()))
    })
}

/// The batch group of a task's target: its account, region and the role it is reached by.
fn group(task: &RestoreTask, target: &EbsTarget) -> String {
    format!("{}/{}/{}", target.account_id, target.region, task.target_role_arn)
}

/// The volumes among `ids`, one DescribeVolumes per page (a filter, so a missing id is no error).
async fn describe_volumes(
    quotas: Arc<Quotas>,
    scope: Scope,
    ids: Vec<String>,
) -> Result<HashMap<String, Volume>, AwsError> {
    let filter = &Filter::builder().name("volume-id").set_values(Some(ids)).build();
    let (quotas, scope) = (&quotas, &scope);
    all_pages(move |token| async move {
        take(&quotas, &scope.account, &scope.region, Api::Ec2Describe).await?;
        let output = scope
            .ec2
            .describe_volumes()
            .filters(filter.clone())
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("ec2:DescribeVolumes", e))?;
        let volumes = output.volumes().iter().filter_map(|v| Some((v.volume_id()?.to_string(), v.clone())));
        Ok((volumes.collect(), output.next_token().map(str::to_string)))
    })
    .await
}

/// The snapshots among `ids`, one DescribeSnapshots per page.
async fn describe_snapshots(
    quotas: Arc<Quotas>,
    scope: Scope,
    ids: Vec<String>,
) -> Result<HashMap<String, Snapshot>, AwsError> {
    let filter = &Filter::builder().name("snapshot-id").set_values(Some(ids)).build();
    let (quotas, scope) = (&quotas, &scope);
    all_pages(move |token| async move {
        take(&quotas, &scope.account, &scope.region, Api::Ec2Describe).await?;
        let output = scope
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter.clone())
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| classify("ec2:DescribeSnapshots", e))?;
        let snapshots = output.snapshots().iter().filter_map(|s| Some((s.snapshot_id()?.to_string(), s.clone())));
        Ok((snapshots.collect(), output.next_token().map(str::to_string)))
    })
    .await
}

/// Advances the restore of `task` by one step. The ids it creates go into `progress` as soon as
/// AWS returns them; later steps check them by id in the process's batched sweeps. Only a
/// redelivery without a record looks for what an earlier delivery may have created by tag.
pub async fn restore_step(
    context: &Context,
    clients: &Clients,
    task: &RestoreTask,
    target: &EbsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let backup = task.backup.clone().unwrap_or_default();
    let settings = volume_settings(task, target);
    let scope =
        Scope { ec2: clients.target.clone(), account: target.account_id.clone(), region: target.region.clone() };
    let lost = progress.may_have_lost(attempt);
    if let Some(volume) = our_volume(context, &scope, task, target, lost, progress).await? {
        return Ok(volume_step(&volume, progress, settings.warnings));
    }
    if target.account_id != backup.account_id && progress.id(role::SHARED_WITH) != Some(target.account_id.as_str()) {
        context.take(&backup.account_id, &backup.region, Api::Ec2Mutate).await?;
        share_snapshot(&clients.source, &backup.backup_id, &target.account_id).await?;
        progress.record(role::SHARED_WITH, target.account_id.clone());
    }
    let snapshot_id = if target.region == backup.region {
        backup.backup_id.clone()
    } else {
        match copy_step(context, &scope, task, &backup, target, attempt, progress).await? {
            Ok(copy_id) => copy_id,
            Err(step) => return Ok(step),
        }
    };
    if attempt > 1 && !lost {
        // A record of other progress (the copy) does not say that an earlier delivery did not
        // create the volume and die before recording it: look once, right before creating.
        if let Some(volume) = our_volume(context, &scope, task, target, true, progress).await? {
            return Ok(volume_step(&volume, progress, settings.warnings));
        }
    }
    context.take(&target.account_id, &target.region, Api::CreateVolume).await?;
    let copy_id = progress.id(role::COPY).map(str::to_string);
    let volume = match create_volume(&clients.target, task, target, &settings, &snapshot_id, copy_id.as_deref()).await {
        Ok(volume) => volume,
        // The task id was used as a ClientToken before: the volume exists and is ours.
        Err(e) if e.code == "IdempotentParameterMismatch" => {
            context.take(&target.account_id, &target.region, Api::Ec2Describe).await?;
            find_volume(&clients.target, &task.task_id).await?.ok_or(e)?
        }
        Err(e) => return Err(e),
    };
    progress.record(role::VOLUME, volume.volume_id().unwrap_or_default());
    Ok(volume_step(&volume, progress, settings.warnings))
}

/// The task's volume: by its recorded id, else (only in the crash window) by tag.
async fn our_volume(
    context: &Context,
    scope: &Scope,
    task: &RestoreTask,
    target: &EbsTarget,
    lost: bool,
    progress: &mut Progress,
) -> Result<Option<Volume>, AwsError> {
    if let Some(id) = progress.id(role::VOLUME) {
        let found = context.volumes.get(&group(task, target), scope.clone(), id).await?;
        // Not visible yet right after CreateVolume: it is being created.
        return Ok(Some(found.unwrap_or_else(|| Volume::builder().volume_id(id).build())));
    }
    if !lost {
        return Ok(None);
    }
    context.take(&target.account_id, &target.region, Api::Ec2Describe).await?;
    let Some(volume) = find_volume(&scope.ec2, &task.task_id).await? else {
        return Ok(None);
    };
    progress.record(role::VOLUME, volume.volume_id().unwrap_or_default());
    let copy = volume.tags().iter().find(|t| t.key() == Some(TAG_COPY_ID)).and_then(|t| t.value());
    if let Some(copy) = copy {
        progress.record(role::COPY, copy);
    }
    Ok(Some(volume))
}

/// What the state of the task's volume means.
fn volume_step(volume: &Volume, progress: &Progress, warnings: Vec<String>) -> Step {
    let volume_id = volume.volume_id().unwrap_or_default().to_string();
    let mut created = vec![volume_id.clone()];
    created.extend(progress.id(role::COPY).map(str::to_string));
    match volume.state() {
        Some(VolumeState::Available) | Some(VolumeState::InUse) => available(volume_id, created, warnings),
        Some(VolumeState::Creating) | None => {
            Step::Waiting { what: format!("volume {volume_id} is being created"), created }
        }
        Some(VolumeState::Error) => Step::Failed {
            code: "VolumeCreationFailed".into(),
            message: format!("volume {volume_id} went into the error state"),
        },
        Some(other) => {
            Step::Failed { code: "VolumeDeleted".into(), message: format!("volume {volume_id} is {}", other.as_str()) }
        }
    }
}

/// The cross-region copy: `Ok(Ok(id))` once it is complete (its slot given back), `Ok(Err(step))`
/// while it is started or under way.
async fn copy_step(
    context: &Context,
    scope: &Scope,
    task: &RestoreTask,
    backup: &Backup,
    target: &EbsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Result<String, Step>, AwsError> {
    let copy = match progress.id(role::COPY).map(str::to_string) {
        Some(id) => match context.snapshots.get(&group(task, target), scope.clone(), &id).await? {
            Some(copy) => copy,
            None => return Ok(Err(copy_not_visible(&id, role::COPY_STARTED_AT, attempt, progress))),
        },
        None => return start_copy(context, scope, task, backup, target, attempt, progress).await.map(Err),
    };
    let id = copy.snapshot_id().unwrap_or_default().to_string();
    match copy.state() {
        Some(SnapshotState::Completed) => {
            release_copy_slot(context, task, &copy_slot(&target.account_id, &target.region), progress).await;
            Ok(Ok(id))
        }
        Some(SnapshotState::Error) | Some(SnapshotState::Recoverable) => Ok(Err(Step::Failed {
            code: "SnapshotCopyFailed".into(),
            message: format!(
                "copy {id} of {} failed: {}",
                backup.backup_id,
                copy.state_message().unwrap_or("no reason given")
            ),
        })),
        _ => Ok(Err(Step::Waiting {
            what: format!("snapshot copy {id} to {} is {}", target.region, copy.progress().unwrap_or("pending")),
            created: vec![id],
        })),
    }
}

/// A recorded copy DescribeSnapshots does not return: not visible yet for a few checks (never a
/// second CopySnapshot), then gone. `started_role`: the role under which the attempt that started the copy was recorded.
pub(crate) fn copy_not_visible(id: &str, started_role: &str, attempt: u32, progress: &Progress) -> Step {
    let started = progress.id(started_role).and_then(|a| a.parse::<u32>().ok()).unwrap_or(attempt);
    if attempt.saturating_sub(started) > COPY_GRACE_CHECKS {
        return Step::Failed {
            code: "SnapshotCopyNotFound".into(),
            message: format!("copy {id} is not in DescribeSnapshots after {COPY_GRACE_CHECKS} checks"),
        };
    }
    Step::Waiting { what: format!("waiting for copy {id} to appear"), created: vec![id.to_string()] }
}

/// Notes that this delivery is about to call CopySnapshot for `role` (see
/// [`lifeboat_common::restore::note_intent`]).
pub(crate) async fn note_intent(context: &Context, task: &RestoreTask, role: &str) -> Result<(), AwsError> {
    lifeboat_common::restore::note_intent(context.store.as_ref(), task, role)
        .await
        .map_err(|e| AwsError::retryable("ec2:CopySnapshot", "SharedStoreUnavailable", e.to_string()))
}

/// Whether a delivery may have called CopySnapshot for `role` without recording the copy.
pub(crate) async fn intended(context: &Context, task: &RestoreTask, role: &str) -> Result<bool, AwsError> {
    lifeboat_common::restore::intended(context.store.as_ref(), task, role)
        .await
        .map_err(|e| AwsError::retryable("ec2:CopySnapshot", "SharedStoreUnavailable", e.to_string()))
}

/// The key of the [`Cap::SnapshotCopies`] slots of copies into `account` and `region`.
pub(crate) fn copy_slot(account: &str, region: &str) -> String {
    Quotas::slot_key(Cap::SnapshotCopies, account, region)
}

/// Gives the copy's slot back as soon as the copy is complete, not when the task ends.
pub(crate) async fn release_copy_slot(context: &Context, task: &RestoreTask, slot: &str, progress: &mut Progress) {
    if !progress.slots.iter().any(|s| s == slot) {
        return;
    }
    match quota::release(context.store.as_ref(), slot, &progress_key(task)).await {
        Ok(()) => progress.slots.retain(|s| s != &slot),
        // Kept in the record: the shell releases it again when the task ends.
        Err(e) => tracing::warn!(error = %e, slot = %slot, "cannot release a copy slot yet"),
    }
}

/// On a volume created from a copy: the copy's id, so a later step can report it.
const TAG_COPY_ID: &str = "lifeboat:copy-snapshot-id";

pub(crate) fn task_filter(task_id: &str) -> Filter {
    Filter::builder().name(format!("tag:{TAG_TASK_ID}")).values(task_id).build()
}

/// Our volume for this task, if an earlier delivery created it.
pub async fn find_volume(ec2: &aws_sdk_ec2::Client, task_id: &str) -> Result<Option<Volume>, AwsError> {
    let output = ec2
        .describe_volumes()
        .filters(task_filter(task_id))
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeVolumes", e))?;
    Ok(output
        .volumes()
        .iter()
        .find(|v| !matches!(v.state(), Some(VolumeState::Deleted) | Some(VolumeState::Deleting)))
        .cloned())
}

async fn find_copy(ec2: &aws_sdk_ec2::Client, task_id: &str) -> Result<Option<Snapshot>, AwsError> {
    let output = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(task_filter(task_id))
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeSnapshots", e))?;
    Ok(output.snapshots().first().cloned())
}

pub(crate) async fn share_snapshot(
    source: &aws_sdk_ec2::Client,
    snapshot_id: &str,
    account_id: &str,
) -> Result<(), AwsError> {
    use aws_sdk_ec2::types::{CreateVolumePermission, CreateVolumePermissionModifications};
    source
        .modify_snapshot_attribute()
        .snapshot_id(snapshot_id)
        .create_volume_permission(
            CreateVolumePermissionModifications::builder()
                .add(CreateVolumePermission::builder().user_id(account_id).build())
                .build(),
        )
        .send()
        .await
        .map_err(|e| classify("ec2:ModifySnapshotAttribute", e))?;
    Ok(())
}

/// Takes the task's slot of [`Cap::SnapshotCopies`] into `account` and `region` (shared by
/// every replica; already held counts), or a retryable error, so the task waits for a slot
/// without holding a worker.
pub(crate) async fn acquire_copy_slot(
    context: &Context,
    task: &RestoreTask,
    account: &str,
    region: &str,
    progress: &mut Progress,
) -> Result<(), AwsError> {
    let slot = copy_slot(account, region);
    let limit = context.quotas.config().limit(Cap::SnapshotCopies);
    match context.quotas.acquire(&slot, Cap::SnapshotCopies, &progress_key(task), COPY_LEASE).await {
        Ok(true) => {
            progress.hold(&slot);
            Ok(())
        }
        Ok(false) => Err(AwsError::slot_full(
            "ec2:CopySnapshot",
            "CopyLimitInFlight",
            format!("{limit} snapshot copies already in flight to {region} (limit {limit})"),
            &slot,
            limit as usize,
        )),
        Err(e) => Err(AwsError::retryable("quota", "QuotaStoreUnavailable", format!("cannot take a copy slot: {e}"))),
    }
}

/// Starts a cross-region copy if the destination has a free slot of [`Cap::SnapshotCopies`]
/// (shared by every replica); otherwise a retryable error, so the task waits for a slot without
/// holding a worker. The copy's id is recorded at once.
async fn start_copy(
    context: &Context,
    scope: &Scope,
    task: &RestoreTask,
    backup: &Backup,
    target: &EbsTarget,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    acquire_copy_slot(context, task, &target.account_id, &target.region, progress).await?;
    if intended(context, task, role::COPY).await? {
        // An earlier delivery started the copy, or was about to, and died before recording
        // it (CopySnapshot has no idempotency token): look once, with the slot held.
        context.take(&target.account_id, &target.region, Api::Ec2Describe).await?;
        if let Some(copy) = find_copy(&scope.ec2, &task.task_id).await? {
            let id = copy.snapshot_id().unwrap_or_default().to_string();
            progress.record(role::COPY, id.clone());
            progress.record(role::COPY_STARTED_AT, attempt.to_string());
            return Ok(Step::Waiting {
                what: format!("found copy {id} an earlier delivery started"),
                created: vec![id],
            });
        }
    }
    context.take(&target.account_id, &target.region, Api::Ec2Mutate).await?;
    note_intent(context, task, role::COPY).await?;
    let mut copy = scope
        .ec2
        .copy_snapshot()
        .source_region(&backup.region)
        .source_snapshot_id(&backup.backup_id)
        .description(format!("Lifeboat restore {} of {}", task.task_id, backup.backup_id))
        .tag_specifications(tag_spec(ResourceType::Snapshot, copy_tags(task)));
    if !target.kms_key_id.is_empty() {
        copy = copy.encrypted(true).kms_key_id(&target.kms_key_id);
    }
    let output = copy.send().await.map_err(|e| classify("ec2:CopySnapshot", e))?;
    let id = output.snapshot_id().map(str::to_string).ok_or_else(|| {
        AwsError::retryable("ec2:CopySnapshot", "MissingSnapshotId", "CopySnapshot returned no snapshot id")
    })?;
    progress.record(role::COPY, id.clone());
    progress.record(role::COPY_STARTED_AT, attempt.to_string());
    Ok(Step::Waiting { what: format!("copying {} to {} as {id}", backup.backup_id, target.region), created: vec![id] })
}

/// Lifeboat's tags on a copy, with the source volume and the restore-copy marker.
pub fn copy_tags(task: &RestoreTask) -> Vec<(String, String)> {
    let backup = task.backup.clone().unwrap_or_default();
    let mut tags = lifeboat_tags(task);
    tags.push((TAG_SOURCE_VOLUME.to_string(), backup.source_resource_id));
    tags.push((TAG_RESTORE_COPY.to_string(), task.task_id.clone()));
    tags
}

async fn create_volume(
    ec2: &aws_sdk_ec2::Client,
    task: &RestoreTask,
    target: &EbsTarget,
    settings: &VolumeSettings,
    snapshot_id: &str,
    copy_id: Option<&str>,
) -> Result<Volume, AwsError> {
    let mut tags = volume_tags(task, target);
    if let Some(copy_id) = copy_id {
        tags.push((TAG_COPY_ID.to_string(), copy_id.to_string()));
    }
    let mut create = ec2
        .create_volume()
        .availability_zone(&target.availability_zone)
        .snapshot_id(snapshot_id)
        // The task id is the idempotency token: AWS returns the same volume for a repeated call.
        .client_token(&task.task_id)
        .tag_specifications(tag_spec(ResourceType::Volume, tags));
    if let Some(volume_type) = &settings.volume_type {
        create = create.volume_type(VolumeType::from(volume_type.as_str()));
    }
    if let Some(iops) = settings.iops {
        create = create.iops(iops);
    }
    if let Some(throughput) = settings.throughput {
        create = create.throughput(throughput);
    }
    if settings.encrypted {
        create = create.encrypted(true).set_kms_key_id(settings.kms_key_id.clone());
    }
    if settings.multi_attach {
        create = create.multi_attach_enabled(true);
    }
    let output = create.send().await.map_err(|e| classify("ec2:CreateVolume", e))?;
    let volume_id = output.volume_id().ok_or_else(|| {
        AwsError::retryable("ec2:CreateVolume", "MissingVolumeId", "CreateVolume returned no volume id")
    })?;
    Ok(Volume::builder().volume_id(volume_id).set_state(output.state().cloned()).build())
}

/// The source volume's tags (or the snapshot's, see [`source_tags`]), the set's extra tags,
/// then Lifeboat's own (see [`restored_tags`]).
pub fn volume_tags(task: &RestoreTask, target: &EbsTarget) -> Vec<(String, String)> {
    let mut task = task.clone();
    if let Some(backup) = task.backup.as_mut() {
        backup.tags = source_tags(backup);
    }
    restored_tags(&task, &target.tags)
}

pub(crate) fn tag_spec(resource_type: ResourceType, tags: Vec<(String, String)>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(tags.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
        .build()
}
