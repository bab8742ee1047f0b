//! One step of an EBS backup: a snapshot of a volume, or one crash-consistent CreateSnapshots of
//! an instance's volumes (EBS_VOLUME_SET), then a copy of every snapshot into each of the run's
//! `copy_to` destinations. As in a restore, ids go into the task's progress as soon as AWS
//! returns them and later steps check them by id in the batched sweeps; the `lifeboat:task-id`
//! tag is looked up only by a redelivery that has no snapshot recorded (the crash window).
//! A set whose plan asks for scripts runs the pre script on the instance before CreateSnapshots
//! and the post script right after ([`lifeboat_common::app_consistent`]).

use aws_sdk_ec2::types::{
    Filter, InstanceSpecification, LockMode, ResourceType as Ec2ResourceType, Snapshot, SnapshotState,
};
use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use lifeboat_common::app_consistent::{Consistency, Prepared, Script, Scripts};
use lifeboat_common::aws::{classify, ec2_client, Accounts, AwsError};
use lifeboat_common::backup::{
    copy_account, copy_role, past_completion_window, recovery_point_tags, snapshot_lock, MAX_TAGS, ROLE_POINT,
    TAG_COPY_OF,
};
use lifeboat_common::quota::Api;
use lifeboat_common::restore::{Progress, Step};
use lifeboat_common::subjects::{TAG_SOURCE_INSTANCE, TAG_SOURCE_VOLUME};
use lifeboat_proto::{BackupTask, CopyDestination, ResourceType, RestoreTask};

use crate::restore::{
    acquire_copy_slot, copy_not_visible, copy_slot, intended, note_intent, release_copy_slot, share_snapshot, tag_spec,
    task_filter, Context, Scope,
};

/// A task's snapshot of one volume. A single volume's point is recorded as `point`, each of a
/// set's as `point:<volume id>`; the roles of its copies carry the same suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Point {
    volume_id: String,
    snapshot_id: String,
}

/// Recorded once every point of the task is completed.
const ROLE_POINTS_COMPLETED: &str = "completed:points";
/// `locked:<snapshot id>`: locked in EC2 until the recorded time.
const ROLE_LOCKED: &str = "locked";

/// What a task backs up.
struct Source<'a> {
    task: &'a RestoreTask,
    job: BackupTask,
    /// EBS_VOLUME_SET: `job.resource_id` is an instance, its volumes are snapshotted together.
    set: bool,
    scope: Scope,
}

impl Source<'_> {
    fn suffix(&self, volume_id: &str) -> String {
        if self.set {
            format!(":{volume_id}")
        } else {
            String::new()
        }
    }

    fn point_role(&self, volume_id: &str) -> String {
        format!("{ROLE_POINT}{}", self.suffix(volume_id))
    }

    fn copy_role(&self, destination: &CopyDestination, volume_id: &str) -> String {
        format!("{}{}", copy_role(destination, &self.job.account_id), self.suffix(volume_id))
    }

    /// The points recorded so far.
    fn recorded(&self, progress: &Progress) -> Vec<Point> {
        if !self.set {
            let point = progress
                .id(ROLE_POINT)
                .map(|id| Point { volume_id: self.job.resource_id.clone(), snapshot_id: id.to_string() });
            return point.into_iter().collect();
        }
        let prefix = format!("{ROLE_POINT}:");
        let points = progress.ids.iter().filter_map(|(role, id)| {
            let volume_id = role.strip_prefix(&prefix)?;
            Some(Point { volume_id: volume_id.to_string(), snapshot_id: id.clone() })
        });
        points.collect()
    }

    /// The tags of the point of `volume_id` (or, with `copy`, of its copy): the recovery point
    /// tags, then the source volume (and, in a set, the instance) by which the restore side's
    /// discovery groups snapshots, and how consistent they are when the plan asks for scripts. Resource tags make room for those two when 50 do not fit;
    /// the second value names every resource tag left out.
    fn tags(
        &self,
        volume_id: &str,
        created_at: DateTime<Utc>,
        copy: Option<(&CopyDestination, &str)>,
        progress: &Progress,
    ) -> (Vec<(String, String)>, Vec<String>) {
        let (mut tags, mut dropped) = recovery_point_tags(self.task, created_at, copy);
        let mut extra = vec![(TAG_SOURCE_VOLUME.to_string(), volume_id.to_string())];
        if self.set {
            extra.push((TAG_SOURCE_INSTANCE.to_string(), self.job.resource_id.clone()));
        }
        extra.extend(Consistency::tag(progress));
        let plan_tags = self.job.run.as_ref().map(|run| &run.tags);
        let resource_tag = |key: &str| {
            !key.starts_with("lifeboat:")
                && self.job.resource_tags.contains_key(key)
                && !plan_tags.is_some_and(|tags| tags.contains_key(key))
        };
        while tags.len() + extra.len() > MAX_TAGS {
            let Some(last) = tags.iter().rposition(|(key, _)| resource_tag(key)) else { break };
            dropped.push(tags.remove(last).0);
        }
        tags.extend(extra);
        (tags, dropped)
    }
}

/// The EC2 clients a backup step needs.
pub struct Clients {
    /// In the resource's account and region: its snapshots are taken (and shared) here.
    pub source: aws_sdk_ec2::Client,
    /// One per `copy_to` destination of the run, in its order, in that destination's account
    /// and region: the copies are made there.
    pub destinations: Vec<aws_sdk_ec2::Client>,
    /// A set's pre and post scripts, when its plan asks for them.
    pub scripts: Option<Scripts>,
}

impl Clients {
    /// The clients of `task`'s backup, in the accounts and regions it reaches.
    pub async fn for_task(accounts: &Accounts, task: &RestoreTask) -> Result<Self, AwsError> {
        let job = task.backup_task.clone().unwrap_or_default();
        let client = |account: String, region: String| async move {
            let config = accounts.config_for(&account, &region).await?;
            Ok::<_, AwsError>(ec2_client(&config, &account, &region))
        };
        let source = client(job.account_id.clone(), job.region.clone()).await?;
        let mut destinations = Vec::new();
        for destination in job.run.iter().flat_map(|run| &run.copy_to) {
            let account = copy_account(destination, &job.account_id).to_string();
            destinations.push(client(account, destination.region.clone()).await?);
        }
        let scripts = match task.resource_type() {
            ResourceType::EbsVolumeSet => Scripts::for_job(accounts, &job).await?,
            _ => None,
        };
        Ok(Self { source, destinations, scripts })
    }
}

/// The batch group of a scope: the same as a restore's into that account and region (without a
/// role), so backups and restores there share their DescribeSnapshots calls.
fn group(scope: &Scope) -> String {
    format!("{}/{}/", scope.account, scope.region)
}

/// Advances the backup of `task` by one step. Before anything is created and while anything
/// is still being created or copied, a run past its completion window ends the task FAILED
/// with COMPLETION_WINDOW_EXCEEDED.
pub async fn step(
    context: &Context,
    clients: &Clients,
    task: &RestoreTask,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let late = past_completion_window(task, Utc::now());
    let job = task.backup_task.clone().unwrap_or_default();
    let set = task.resource_type() == ResourceType::EbsVolumeSet;
    let scope = Scope { ec2: clients.source.clone(), account: job.account_id.clone(), region: job.region.clone() };
    let source = Source { task, job, set, scope };
    if let (Some(failed), true) = (&late, source.recorded(progress).is_empty()) {
        if let Some(scripts) = &clients.scripts {
            // A pre script may have frozen the instance: it is not left so.
            scripts.thaw(task, attempt, progress).await;
        }
        return Ok(failed.clone());
    }
    let result = backup_step(context, clients, &source, attempt, progress).await;
    match (result, late) {
        (Ok(Step::Waiting { created, .. }), Some(Step::Failed { code, message })) => {
            Ok(Step::Failed { code, message: format!("{message}; created so far: {}", created.join(", ")) })
        }
        (Err(e), Some(failed)) if e.is_retryable() => Ok(failed),
        (result, _) => result,
    }
}

async fn backup_step(
    context: &Context,
    clients: &Clients,
    source: &Source<'_>,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let mut points = source.recorded(progress);
    if let (true, Some(scripts)) = (points.is_empty(), &clients.scripts) {
        if let Prepared::Waiting(what) = scripts.prepare(source.task, attempt, progress).await? {
            return Ok(Step::Waiting { what, created: Vec::new() });
        }
    }
    if points.is_empty() && attempt > 1 {
        // An earlier delivery may have created the snapshots and died before recording them:
        // look once, right before creating (CreateSnapshot(s) takes no idempotency token).
        points = find_points(context, source, progress).await?;
    }
    if points.is_empty() {
        let created = create_points(context, source, progress).await;
        if let Some(scripts) = &clients.scripts {
            // The thaw follows the snapshots at once, and a snapshot call that failed too.
            match created {
                Ok(_) => {
                    scripts.finish(source.task, attempt, progress).await?;
                }
                Err(_) => scripts.thaw(source.task, attempt, progress).await,
            }
        }
        let points = created?;
        let what = points.iter().map(|p| format!("{} of {}", p.snapshot_id, p.volume_id)).collect::<Vec<_>>();
        return Ok(Step::Waiting {
            what: format!("creating snapshot {}", what.join(", ")),
            created: points.into_iter().map(|p| p.snapshot_id).collect(),
        });
    }
    let point_ids: Vec<String> = points.iter().map(|p| p.snapshot_id.clone()).collect();
    if let Some(scripts) = &clients.scripts {
        // Sent here when an earlier delivery took the snapshots and died before sending it.
        if let Script::Running { command_id, status } = scripts.finish(source.task, attempt, progress).await? {
            let what = format!("post script (command {command_id}) on {} is {status}", source.job.resource_id);
            return Ok(Step::Waiting { what, created: point_ids });
        }
    }
    if progress.id(ROLE_POINTS_COMPLETED).is_none() {
        if let Some(waiting) = points_waiting(context, source, &points).await? {
            return Ok(match waiting {
                Step::Waiting { what, .. } => Step::Waiting { what, created: point_ids },
                failed => failed,
            });
        }
        // Completed snapshots stay so: later steps (copies, waits for a copy slot) do not
        // describe them again.
        progress.record(ROLE_POINTS_COMPLETED, Utc::now().to_rfc3339());
    }
    if let Err(e) = lock_snapshots(context, &source.scope, source.task, &point_ids, progress).await {
        return match e.is_retryable() {
            true => Err(e),
            false => Ok(Step::Failed {
                code: e.code.clone(),
                message: format!("{e}; snapshot {} exists but is not locked", point_ids.join(", ")),
            }),
        };
    }
    let run = source.job.run.clone().unwrap_or_default();
    let mut created = point_ids.clone();
    let mut copies = Vec::new();
    let mut waiting = Vec::new();
    for (n, destination) in run.copy_to.iter().enumerate() {
        let account = copy_account(destination, &source.job.account_id);
        let ec2 = clients.destinations.get(n).cloned().ok_or_else(|| {
            AwsError::task_failure("ec2:CopySnapshot", "NoClient", format!("no client for copy_to[{n}]"))
        })?;
        let target = Scope { ec2, account: account.to_string(), region: destination.region.clone() };
        let mut all_complete = true;
        for point in &points {
            let copied = copy_point(context, source, &target, destination, point, attempt, progress).await;
            match copied {
                Ok(Step::Done { created: ids, .. }) => {
                    copies.push(format!("{} in {account}/{}", ids.join(", "), destination.region));
                    created.extend(ids);
                }
                Ok(Step::Waiting { what, created: ids }) => {
                    all_complete = false;
                    waiting.push(what);
                    created.extend(ids);
                }
                Ok(Step::Failed { code, message }) => return Ok(copy_failed(code, message, &point_ids)),
                // A snapshot copy is whole or not at all.
                Ok(Step::Partial { code, message, .. }) => return Ok(copy_failed(code, message, &point_ids)),
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => return Ok(copy_failed(e.code.clone(), e.to_string(), &point_ids)),
            }
        }
        if all_complete {
            release_copy_slot(context, source.task, &copy_slot(&target.account, &target.region), progress).await;
        }
    }
    if !waiting.is_empty() {
        return Ok(Step::Waiting { what: waiting.join("; "), created });
    }
    let mut message = format!("snapshot {} completed", point_ids.join(", "));
    if !copies.is_empty() {
        message.push_str(&format!(", copied as {}", copies.join("; ")));
    }
    let mut warnings = warnings(source, &points, progress);
    if let Some(scripts) = &clients.scripts {
        warnings.extend(scripts.warnings(progress));
        let consistency = Consistency::recorded(progress).unwrap_or(Consistency::Crash);
        message.push_str(&format!(" ({}-consistent)", consistency.as_str()));
    }
    Ok(Step::Done { message, created, warnings })
}

/// Locks `ids` (in `scope`) in EC2 when the task's plan asks (`lock.snapshot_lock`), each once:
/// in the lock's mode, for its minimum retention from now, so at least until the
/// `lifeboat:lock-until` the snapshot was tagged with. A repeated call after a lost record only
/// extends the lock, which EC2 allows in either mode.
async fn lock_snapshots(
    context: &Context,
    scope: &Scope,
    task: &RestoreTask,
    ids: &[String],
    progress: &mut Progress,
) -> Result<(), AwsError> {
    let Some((mode, days)) = snapshot_lock(task) else {
        return Ok(());
    };
    let mode = if mode == "COMPLIANCE" { LockMode::Compliance } else { LockMode::Governance };
    for id in ids {
        let role = format!("{ROLE_LOCKED}:{id}");
        if progress.id(&role).is_some() {
            continue;
        }
        context.take(&scope.account, &scope.region, Api::Ec2Mutate).await?;
        let until = Utc::now() + TimeDelta::days(days.into());
        scope
            .ec2
            .lock_snapshot()
            .snapshot_id(id)
            .lock_mode(mode.clone())
            .expiration_date(aws_smithy_types::DateTime::from_secs(until.timestamp()))
            .send()
            .await
            .map_err(|e| classify("ec2:LockSnapshot", e))?;
        progress.record(&role, until.to_rfc3339());
    }
    Ok(())
}

/// A copy that cannot be made fails the task; its points exist and stay.
fn copy_failed(code: String, message: String, point_ids: &[String]) -> Step {
    Step::Failed { code, message: format!("{message}; snapshot {} exists", point_ids.join(", ")) }
}

/// What a completed backup reports as warnings: tags that did not fit on its snapshots, and a
/// set's volumes (at selection) that the instance no longer had attached.
fn warnings(source: &Source<'_>, points: &[Point], progress: &Progress) -> Vec<String> {
    let tags = |p: &Point| source.tags(&p.volume_id, Utc::now(), None, progress).1;
    let mut dropped: Vec<String> = points.iter().flat_map(tags).collect();
    dropped.sort();
    dropped.dedup();
    let mut warnings = Vec::new();
    if !dropped.is_empty() {
        warnings.push(format!("tags left out (more than {MAX_TAGS}): {}", dropped.join(", ")));
    }
    if source.set {
        let missing: Vec<&str> = source
            .job
            .volumes
            .iter()
            .filter(|(_, volume)| !points.iter().any(|p| &p.volume_id == *volume))
            .map(|(device, _)| device.as_str())
            .collect();
        if !missing.is_empty() {
            let named: Vec<String> = missing.iter().map(|d| format!("{d} ({})", source.job.volumes[*d])).collect();
            warnings.push(format!("not attached at the snapshot, not backed up: {}", named.join(", ")));
        }
    }
    warnings
}

/// Creates the task's snapshots and records them at once: one CreateSnapshot of a volume, or one
/// CreateSnapshots of an instance (crash-consistent across its volumes).
async fn create_points(
    context: &Context,
    source: &Source<'_>,
    progress: &mut Progress,
) -> Result<Vec<Point>, AwsError> {
    let scope = &source.scope;
    let task = source.task;
    let now = Utc::now();
    context.take(&scope.account, &scope.region, Api::CreateSnapshot).await?;
    if !source.set {
        let volume_id = source.job.resource_id.clone();
        let output = scope
            .ec2
            .create_snapshot()
            .volume_id(&volume_id)
            .description(format!("Lifeboat backup {} of {volume_id}", task.task_id))
            .tag_specifications(tag_spec(Ec2ResourceType::Snapshot, source.tags(&volume_id, now, None, progress).0))
            .send()
            .await
            .map_err(|e| classify("ec2:CreateSnapshot", e))?;
        let snapshot_id = output.snapshot_id().map(str::to_string).ok_or_else(|| {
            AwsError::retryable("ec2:CreateSnapshot", "MissingSnapshotId", "CreateSnapshot returned no snapshot id")
        })?;
        progress.record(ROLE_POINT, snapshot_id.clone());
        return Ok(vec![Point { volume_id, snapshot_id }]);
    }
    // The tags every snapshot of the set shares; its own volume is tagged on each afterwards.
    let (shared, _) = source.tags("", now, None, progress);
    let shared: Vec<_> = shared.into_iter().filter(|(key, _)| key != TAG_SOURCE_VOLUME).collect();
    let instance = InstanceSpecification::builder().instance_id(&source.job.resource_id).build();
    let output = scope
        .ec2
        .create_snapshots()
        .instance_specification(instance)
        .description(format!("Lifeboat backup {} of {}", task.task_id, source.job.resource_id))
        .tag_specifications(tag_spec(Ec2ResourceType::Snapshot, shared))
        .send()
        .await
        .map_err(|e| classify("ec2:CreateSnapshots", e))?;
    let mut points = Vec::new();
    for info in output.snapshots() {
        let (Some(snapshot_id), Some(volume_id)) = (info.snapshot_id(), info.volume_id()) else {
            return Err(AwsError::retryable(
                "ec2:CreateSnapshots",
                "MissingSnapshotId",
                "CreateSnapshots returned a snapshot without its id or volume",
            ));
        };
        let point = Point { volume_id: volume_id.to_string(), snapshot_id: snapshot_id.to_string() };
        progress.record(&source.point_role(volume_id), snapshot_id);
        points.push(point);
    }
    if points.is_empty() {
        return Err(AwsError::task_failure(
            "ec2:CreateSnapshots",
            "NoVolumes",
            format!("instance {} has no EBS volumes to snapshot", source.job.resource_id),
        ));
    }
    tag_source_volumes(context, source, &points).await?;
    Ok(points)
}

/// Tags each of a set's snapshots with its own volume (CreateSnapshots tags them all alike).
async fn tag_source_volumes(context: &Context, source: &Source<'_>, points: &[Point]) -> Result<(), AwsError> {
    let scope = &source.scope;
    for point in points {
        context.take(&scope.account, &scope.region, Api::Ec2Mutate).await?;
        let tag = aws_sdk_ec2::types::Tag::builder().key(TAG_SOURCE_VOLUME).value(&point.volume_id).build();
        scope
            .ec2
            .create_tags()
            .resources(&point.snapshot_id)
            .tags(tag)
            .send()
            .await
            .map_err(|e| classify("ec2:CreateTags", e))?;
    }
    Ok(())
}

/// The task's snapshots an earlier delivery created (by the task-id tag; copies carry it too,
/// and `lifeboat:copy-of`), recorded.
async fn find_points(context: &Context, source: &Source<'_>, progress: &mut Progress) -> Result<Vec<Point>, AwsError> {
    let scope = &source.scope;
    context.take(&scope.account, &scope.region, Api::Ec2Describe).await?;
    let found = describe_tagged(&scope.ec2, vec![task_filter(&source.task.task_id)]).await?;
    let mut points = Vec::new();
    for snapshot in found.iter().filter(|s| tag(s, TAG_COPY_OF).is_none()) {
        let (Some(snapshot_id), Some(volume_id)) = (snapshot.snapshot_id(), snapshot.volume_id()) else { continue };
        let volume_id = if source.set { volume_id.to_string() } else { source.job.resource_id.clone() };
        progress.record(&source.point_role(&volume_id), snapshot_id);
        points.push(Point { volume_id, snapshot_id: snapshot_id.to_string() });
        if !source.set {
            break;
        }
    }
    Ok(points)
}

async fn describe_tagged(ec2: &aws_sdk_ec2::Client, filters: Vec<Filter>) -> Result<Vec<Snapshot>, AwsError> {
    let output = ec2
        .describe_snapshots()
        .owner_ids("self")
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(|e| classify("ec2:DescribeSnapshots", e))?;
    Ok(output.snapshots().to_vec())
}

fn tag<'a>(snapshot: &'a Snapshot, key: &str) -> Option<&'a str> {
    snapshot.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// `Some(step)` while a point is not completed yet (Waiting) or has failed; None when all are.
/// The points are checked together, so they share one DescribeSnapshots.
async fn points_waiting(context: &Context, source: &Source<'_>, points: &[Point]) -> Result<Option<Step>, AwsError> {
    let scope = &source.scope;
    let group = group(scope);
    let checks = join_all(points.iter().map(|p| context.snapshots.get(&group, scope.clone(), &p.snapshot_id))).await;
    let mut waiting = Vec::new();
    let mut untagged = Vec::new();
    for (point, found) in points.iter().zip(checks) {
        let (id, volume) = (&point.snapshot_id, &point.volume_id);
        let Some(snapshot) = found? else {
            // Not visible yet right after CreateSnapshot(s): it is being created.
            waiting.push(format!("snapshot {id} of {volume} is being created"));
            continue;
        };
        if source.set && tag(&snapshot, TAG_SOURCE_VOLUME).is_none() {
            // An earlier delivery died between CreateSnapshots and CreateTags.
            untagged.push(point.clone());
        }
        match snapshot.state() {
            Some(SnapshotState::Completed) => {}
            Some(SnapshotState::Error) | Some(SnapshotState::Recoverable) => {
                return Ok(Some(Step::Failed {
                    code: "SnapshotCreationFailed".into(),
                    message: format!(
                        "snapshot {id} of {volume} failed: {}",
                        snapshot.state_message().unwrap_or("no reason given")
                    ),
                }))
            }
            _ => waiting.push(format!("snapshot {id} of {volume} is {}", snapshot.progress().unwrap_or("pending"))),
        }
    }
    tag_source_volumes(context, source, &untagged).await?;
    Ok((!waiting.is_empty()).then(|| Step::Waiting { what: waiting.join("; "), created: Vec::new() }))
}

/// The copy of `point` into `destination`: Done once it is complete, Waiting while it is
/// started or under way, Failed if it cannot complete.
async fn copy_point(
    context: &Context,
    source: &Source<'_>,
    target: &Scope,
    destination: &CopyDestination,
    point: &Point,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let role = source.copy_role(destination, &point.volume_id);
    let started_role = format!("{role}:started-at");
    let Some(id) = progress.id(&role).map(str::to_string) else {
        return start_copy(context, source, target, destination, point, attempt, progress).await;
    };
    let Some(copy) = context.snapshots.get(&group(target), target.clone(), &id).await? else {
        return Ok(copy_not_visible(&id, &started_role, attempt, progress));
    };
    let place = format!("{}/{}", target.account, target.region);
    Ok(match copy.state() {
        Some(SnapshotState::Completed) => {
            lock_snapshots(context, target, source.task, std::slice::from_ref(&id), progress).await?;
            Step::Done { message: String::new(), created: vec![id], warnings: Vec::new() }
        }
        Some(SnapshotState::Error) | Some(SnapshotState::Recoverable) => Step::Failed {
            code: "SnapshotCopyFailed".into(),
            message: format!(
                "copy {id} of {} to {place} failed: {}",
                point.snapshot_id,
                copy.state_message().unwrap_or("no reason given")
            ),
        },
        _ => Step::Waiting {
            what: format!("copy {id} of {} to {place} is {}", point.snapshot_id, copy.progress().unwrap_or("pending")),
            created: vec![id],
        },
    })
}

/// Starts the copy of `point` into `destination` under a slot of the destination's
/// [`lifeboat_common::quota::Cap::SnapshotCopies`] (a task's copies into one destination share
/// one slot), sharing the point with another account first. Its id is recorded at once.
async fn start_copy(
    context: &Context,
    source: &Source<'_>,
    target: &Scope,
    destination: &CopyDestination,
    point: &Point,
    attempt: u32,
    progress: &mut Progress,
) -> Result<Step, AwsError> {
    let task = source.task;
    let role = source.copy_role(destination, &point.volume_id);
    let started_role = format!("{role}:started-at");
    acquire_copy_slot(context, task, &target.account, &target.region, progress).await?;
    if intended(context, task, &role).await? {
        // An earlier delivery started the copy, or was about to, and died before recording
        // it (CopySnapshot has no idempotency token): look once, with the slot held.
        context.take(&target.account, &target.region, Api::Ec2Describe).await?;
        let filters = vec![
            task_filter(&task.task_id),
            Filter::builder().name(format!("tag:{TAG_COPY_OF}")).values(&point.snapshot_id).build(),
        ];
        if let Some(id) = describe_tagged(&target.ec2, filters).await?.first().and_then(|s| s.snapshot_id()) {
            progress.record(&role, id);
            progress.record(&started_role, attempt.to_string());
            return Ok(Step::Waiting {
                what: format!("found copy {id} of {} an earlier delivery started", point.snapshot_id),
                created: vec![id.to_string()],
            });
        }
    }
    if target.account != source.scope.account {
        let shared_role = format!("shared-with:{}{}", target.account, source.suffix(&point.volume_id));
        if progress.id(&shared_role).is_none() {
            let scope = &source.scope;
            context.take(&scope.account, &scope.region, Api::Ec2Mutate).await?;
            share_snapshot(&scope.ec2, &point.snapshot_id, &target.account).await?;
            progress.record(&shared_role, target.account.clone());
        }
    }
    context.take(&target.account, &target.region, Api::Ec2Mutate).await?;
    note_intent(context, task, &role).await?;
    let copy_of = Some((destination, point.snapshot_id.as_str()));
    let (tags, _) = source.tags(&point.volume_id, Utc::now(), copy_of, progress);
    let mut copy = target
        .ec2
        .copy_snapshot()
        .source_region(&source.scope.region)
        .source_snapshot_id(&point.snapshot_id)
        .description(format!("Lifeboat backup {} of {}", task.task_id, point.snapshot_id))
        .tag_specifications(tag_spec(Ec2ResourceType::Snapshot, tags));
    if !destination.kms_key_id.is_empty() {
        copy = copy.encrypted(true).kms_key_id(&destination.kms_key_id);
    }
    let output = copy.send().await.map_err(|e| classify("ec2:CopySnapshot", e))?;
    let id = output.snapshot_id().map(str::to_string).ok_or_else(|| {
        AwsError::retryable("ec2:CopySnapshot", "MissingSnapshotId", "CopySnapshot returned no snapshot id")
    })?;
    progress.record(&role, id.clone());
    progress.record(&started_role, attempt.to_string());
    Ok(Step::Waiting {
        what: format!("copying {} to {}/{} as {id}", point.snapshot_id, target.account, target.region),
        created: vec![id],
    })
}
