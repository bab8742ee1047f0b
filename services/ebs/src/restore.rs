//! One step of an EBS restore. Every call looks at what exists in AWS first (found by the
//! `lifeboat:task-id` tag), so a step can run any number of times, after a crash or a duplicate
//! delivery, and still create each resource once.

use std::collections::HashMap;

use aws_sdk_ec2::types::{
    Filter, ResourceType, Snapshot, SnapshotState, Tag, TagSpecification, Volume, VolumeState, VolumeType,
};
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::restore::{lifeboat_tags, restored_tags, Step};
use lifeboat_common::subjects::TAG_TASK_ID;
use lifeboat_proto::{Backup, EbsTarget, RestoreTask};
use tokio::sync::Mutex;

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

/// Limits shared by every task of this process.
pub struct Limits {
    /// At most this many copies in flight per destination region.
    pub max_copies_per_region: usize,
    /// Serialises the count-then-copy of one destination region in this process.
    pub copy_locks: Mutex<HashMap<String, std::sync::Arc<Mutex<()>>>>,
}

impl Limits {
    pub fn new(max_copies_per_region: usize) -> Self {
        Self { max_copies_per_region, copy_locks: Mutex::new(HashMap::new()) }
    }
}

/// Advances the restore of `task` by one step.
pub async fn restore_step(
    clients: &Clients,
    task: &RestoreTask,
    target: &EbsTarget,
    limits: &Limits,
) -> Result<Step, AwsError> {
    let backup = task.backup.clone().unwrap_or_default();
    let settings = volume_settings(task, target);
    if let Some(volume) = find_volume(&clients.target, &task.task_id).await? {
        let volume_id = volume.volume_id().unwrap_or_default().to_string();
        let mut created = vec![volume_id.clone()];
        created.extend(
            volume.tags().iter().filter(|t| t.key() == Some(TAG_COPY_ID)).filter_map(|t| t.value().map(str::to_string)),
        );
        return Ok(match volume.state() {
            Some(VolumeState::Available) | Some(VolumeState::InUse) => available(volume_id, created, settings.warnings),
            Some(VolumeState::Creating) | None => {
                Step::Waiting { what: format!("volume {volume_id} is being created"), created }
            }
            Some(VolumeState::Error) => Step::Failed {
                code: "VolumeCreationFailed".into(),
                message: format!("volume {volume_id} went into the error state"),
            },
            Some(other) => Step::Failed {
                code: "VolumeDeleted".into(),
                message: format!("volume {volume_id} is {}", other.as_str()),
            },
        });
    }
    let cross_account = target.account_id != backup.account_id;
    if cross_account {
        share_snapshot(&clients.source, &backup.backup_id, &target.account_id).await?;
    }
    let mut copy_id = None;
    let snapshot_id = if target.region == backup.region {
        backup.backup_id.clone()
    } else {
        match find_copy(&clients.target, &task.task_id).await? {
            Some(copy) => {
                let id = copy.snapshot_id().unwrap_or_default().to_string();
                match copy.state() {
                    Some(SnapshotState::Completed) => {
                        copy_id = Some(id.clone());
                        id
                    }
                    Some(SnapshotState::Error) | Some(SnapshotState::Recoverable) => {
                        return Ok(Step::Failed {
                            code: "SnapshotCopyFailed".into(),
                            message: format!(
                                "copy {id} of {} failed: {}",
                                backup.backup_id,
                                copy.state_message().unwrap_or("no reason given")
                            ),
                        })
                    }
                    _ => {
                        return Ok(Step::Waiting {
                            what: format!(
                                "snapshot copy {id} to {} is {}",
                                target.region,
                                copy.progress().unwrap_or("pending")
                            ),
                            created: vec![id],
                        })
                    }
                }
            }
            None => {
                let id = start_copy(&clients.target, task, &backup, target, limits).await?;
                return Ok(Step::Waiting {
                    what: format!("copying {} to {} as {id}", backup.backup_id, target.region),
                    created: vec![id],
                });
            }
        }
    };
    let volume = create_volume(&clients.target, task, target, &settings, &snapshot_id, copy_id.as_deref()).await?;
    let volume_id = volume.volume_id().unwrap_or_default().to_string();
    let mut created = vec![volume_id.clone()];
    created.extend(copy_id);
    Ok(match volume.state() {
        Some(VolumeState::Available) => available(volume_id, created, settings.warnings),
        _ => Step::Waiting { what: format!("volume {volume_id} is being created from {snapshot_id}"), created },
    })
}

/// On a volume created from a copy: the copy's id, so a later step can report it.
const TAG_COPY_ID: &str = "lifeboat:copy-snapshot-id";

fn task_filter(task_id: &str) -> Filter {
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

async fn share_snapshot(source: &aws_sdk_ec2::Client, snapshot_id: &str, account_id: &str) -> Result<(), AwsError> {
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

/// Starts a cross-region copy if fewer than the limit are in flight to the region; otherwise a
/// retryable error, so the task waits for a slot without holding a worker.
async fn start_copy(
    ec2: &aws_sdk_ec2::Client,
    task: &RestoreTask,
    backup: &Backup,
    target: &EbsTarget,
    limits: &Limits,
) -> Result<String, AwsError> {
    let lock = limits.copy_locks.lock().await.entry(target.region.clone()).or_default().clone();
    let _guard = lock.lock().await;
    // Counted in AWS, not in memory, so that every replica and every restart sees the same number.
    let pending = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(Filter::builder().name("status").values("pending").build())
        .filters(Filter::builder().name("tag-key").values(TAG_TASK_ID).build())
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeSnapshots", e))?
        .snapshots()
        .len();
    if pending >= limits.max_copies_per_region {
        return Err(AwsError::retryable(
            "ec2:CopySnapshot",
            "CopyLimitInFlight",
            format!(
                "{pending} snapshot copies already in flight to {} (limit {})",
                target.region, limits.max_copies_per_region
            ),
        ));
    }
    let mut copy = ec2
        .copy_snapshot()
        .source_region(&backup.region)
        .source_snapshot_id(&backup.backup_id)
        .description(format!("Lifeboat restore {} of {}", task.task_id, backup.backup_id))
        .tag_specifications(tag_spec(ResourceType::Snapshot, copy_tags(task)));
    if !target.kms_key_id.is_empty() {
        copy = copy.encrypted(true).kms_key_id(&target.kms_key_id);
    }
    let output = copy.send().await.map_err(|e| classify("ec2:CopySnapshot", e))?;
    output.snapshot_id().map(str::to_string).ok_or_else(|| {
        AwsError::retryable("ec2:CopySnapshot", "MissingSnapshotId", "CopySnapshot returned no snapshot id")
    })
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

fn tag_spec(resource_type: ResourceType, tags: Vec<(String, String)>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(tags.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
        .build()
}
