//! EBS backups against moto: a volume's snapshot and its copies, an instance's volumes
//! snapshotted as one crash-consistent set, a volume deleted since selection, a duplicate
//! delivery, a copy re-encrypted with a key, a run past its completion window, and a copy made
//! by a delivery that died before recording it.

use std::collections::{BTreeSet, HashMap};

use lifeboat_common::backup::{self, PointTags, TAG_COPY_OF};
use lifeboat_common::bus::OutgoingMessage;
use lifeboat_common::subjects::{self, TAG_SOURCE_INSTANCE, TAG_SOURCE_VOLUME, TAG_TASK_ID};
use lifeboat_proto as pb;
use lifeboat_tests::*;

fn run(copy_to: Vec<pb::CopyDestination>) -> pb::BackupRun {
    pb::BackupRun {
        plan: "prod".into(),
        rule: "nightly".into(),
        due_id: "prod/nightly/2026-12-03T01:00:00Z".into(),
        retention: Some(pb::Retention { days: 30, ..Default::default() }),
        copy_to,
        tags: [("owner".to_string(), "platform".to_string())].into(),
        ..Default::default()
    }
}

fn west_copy(kms_key_id: &str) -> pb::CopyDestination {
    pb::CopyDestination {
        region: "us-west-2".into(),
        kms_key_id: kms_key_id.into(),
        retention: Some(pb::Retention { days: 90, ..Default::default() }),
        ..Default::default()
    }
}

/// A backup task of `resource_id` in us-east-1, built as discovery builds it.
fn backup_task(
    request_id: &str,
    resource_type: pb::ResourceType,
    resource_id: &str,
    run: pb::BackupRun,
) -> pb::RestoreTask {
    let job = pb::BackupTask {
        run: Some(run),
        resource_id: resource_id.into(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        resource_tags: [("env".to_string(), "prod".to_string())].into(),
        ..Default::default()
    };
    backup::task(request_id, resource_type, job)
}

async fn publish(servers: &Servers, task: &pb::RestoreTask, dedupe_id: &str) {
    let bus = servers.shared_bus().await;
    bus.publish(OutgoingMessage::proto(subjects::work_subject("ebs"), task).dedupe_id(dedupe_id.to_string()))
        .await
        .expect("publish the task");
}

/// Plans `tasks` as discovery would, publishes them and waits for the final summary.
async fn back_up(servers: &Servers, request_id: &str, tasks: &[pb::RestoreTask]) -> pb::RequestSummary {
    report_planned(servers.shared_bus().await, request_id, tasks.len() as u32).await;
    for task in tasks {
        publish(servers, task, &task.task_id).await;
    }
    final_summary(&servers.client().await, request_id).await
}

fn snapshot_tags(snapshot: &aws_sdk_ec2::types::Snapshot) -> HashMap<String, String> {
    snapshot.tags().iter().map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string())).collect()
}

fn task_state<'a>(summary: &'a pb::RequestSummary, task: &pb::RestoreTask) -> &'a pb::TaskState {
    summary.tasks.iter().find(|t| t.task_id == task.task_id).expect("the task is in the summary")
}

#[tokio::test]
async fn a_volume_is_snapshotted_and_copied_to_another_region() {
    init_logging();
    let servers = Servers::start().await;
    let (east, west) = (servers.ec2("us-east-1"), servers.ec2("us-west-2"));
    let volume = create_volume(&east, "us-east-1a", 8, &[("env", "prod")]).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let task = backup_task("backup-volume", pb::ResourceType::EbsVolume, &volume, run(vec![west_copy("")]));

    let summary = back_up(&servers, "backup-volume", &[task.clone()]).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");

    let points = snapshots_tagged(&east, TAG_TASK_ID, &task.task_id).await;
    assert_eq!(points.len(), 1, "one snapshot of the volume: {points:?}; {summary:?}");
    let point = &points[0];
    let point_id = point.snapshot_id().unwrap().to_string();
    assert_eq!(point.volume_id(), Some(volume.as_str()));
    let tags = snapshot_tags(point);
    assert_eq!((tags["env"].as_str(), tags["owner"].as_str()), ("prod", "platform"));
    assert_eq!(tags[TAG_SOURCE_VOLUME], volume);
    let parsed = PointTags::parse(&tags).expect("the point describes itself");
    assert_eq!((parsed.plan.as_str(), parsed.rule.as_str()), ("prod", "nightly"));
    assert_eq!((parsed.run.as_str(), parsed.resource_id.as_str()), ("backup-volume", volume.as_str()));
    assert_eq!(parsed.retention.as_ref().map(|r| r.days), Some(30));
    assert!(parsed.expires_at.is_some() && parsed.copy_of.is_none(), "{parsed:?}");

    let copies = snapshots_tagged(&west, TAG_TASK_ID, &task.task_id).await;
    assert_eq!(copies.len(), 1, "one copy in us-west-2: {copies:?}; {summary:?}");
    let copy = &copies[0];
    let copy_id = copy.snapshot_id().unwrap().to_string();
    let copy_tags = snapshot_tags(copy);
    assert_eq!(copy_tags[TAG_COPY_OF], point_id);
    assert_eq!(copy_tags[TAG_SOURCE_VOLUME], volume);
    assert_eq!(copy_tags["env"], "prod");
    let parsed = PointTags::parse(&copy_tags).expect("the copy describes itself");
    assert_eq!(parsed.retention.map(|r| r.days), Some(90), "the destination's retention");
    assert_eq!(copy.state(), Some(&aws_sdk_ec2::types::SnapshotState::Completed));

    let state = task_state(&summary, &task);
    assert_eq!(state.created_resource_ids, vec![point_id, copy_id], "{state:?}");
    assert_eq!(pb::TaskPhase::try_from(state.phase), Ok(pb::TaskPhase::Succeeded), "{state:?}");
}

#[tokio::test]
async fn an_instances_volumes_are_snapshotted_as_one_set() {
    init_logging();
    let servers = Servers::start().await;
    let (east, west) = (servers.ec2("us-east-1"), servers.ec2("us-west-2"));
    let base = east.describe_images().owners("amazon").send().await.unwrap();
    let image = base.images().first().and_then(|i| i.image_id()).unwrap().to_string();
    let launched = east
        .run_instances()
        .image_id(image)
        .min_count(1)
        .max_count(1)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .placement(aws_sdk_ec2::types::Placement::builder().availability_zone("us-east-1a").build())
        .send()
        .await
        .unwrap();
    let instance = launched.instances()[0].instance_id().unwrap().to_string();
    let data = create_volume(&east, "us-east-1a", 20, &[]).await;
    east.attach_volume().volume_id(&data).instance_id(&instance).device("/dev/sdf").send().await.unwrap();
    let described = east.describe_instances().instance_ids(&instance).send().await.unwrap();
    let mappings = described.reservations()[0].instances()[0].block_device_mappings().to_vec();
    let volumes: HashMap<String, String> = mappings
        .iter()
        .map(|m| (m.device_name().unwrap().to_string(), m.ebs().unwrap().volume_id().unwrap().to_string()))
        .collect();
    assert_eq!(volumes.len(), 2, "a root volume and a data volume: {volumes:?}");
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let mut task = backup_task("backup-set", pb::ResourceType::EbsVolumeSet, &instance, run(vec![west_copy("")]));
    task.backup_task.as_mut().unwrap().volumes = volumes.clone();

    let summary = back_up(&servers, "backup-set", &[task.clone()]).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    let state = task_state(&summary, &task);
    assert_eq!(state.reason_code, "", "no warnings: {}", state.message);

    let expected: BTreeSet<String> = volumes.values().cloned().collect();
    let points = snapshots_tagged(&east, TAG_TASK_ID, &task.task_id).await;
    let tags: Vec<_> = points.iter().map(snapshot_tags).collect();
    let tagged: BTreeSet<String> = tags.iter().map(|t| t[TAG_SOURCE_VOLUME].clone()).collect();
    assert_eq!(tagged, expected, "one snapshot per volume, each tagged with its own");
    for (point, tags) in points.iter().zip(&tags) {
        assert_eq!(point.volume_id(), Some(tags[TAG_SOURCE_VOLUME].as_str()));
        assert_eq!(tags[TAG_SOURCE_INSTANCE], instance);
        assert_eq!(PointTags::parse(tags).unwrap().resource_id, instance);
    }
    let point_ids: BTreeSet<String> = points.iter().map(|p| p.snapshot_id().unwrap().to_string()).collect();

    let copies = snapshots_tagged(&west, TAG_TASK_ID, &task.task_id).await;
    let copy_tags: Vec<_> = copies.iter().map(snapshot_tags).collect();
    let copied: BTreeSet<String> = copy_tags.iter().map(|t| t[TAG_COPY_OF].clone()).collect();
    assert_eq!(copied, point_ids, "each snapshot copied once to us-west-2");
    let copied_volumes: BTreeSet<String> = copy_tags.iter().map(|t| t[TAG_SOURCE_VOLUME].clone()).collect();
    assert_eq!(copied_volumes, expected);

    let created: BTreeSet<String> = state.created_resource_ids.iter().cloned().collect();
    let all: BTreeSet<String> =
        point_ids.iter().cloned().chain(copies.iter().map(|c| c.snapshot_id().unwrap().to_string())).collect();
    assert_eq!(created, all, "points and copies are reported");
}

#[tokio::test]
async fn a_volume_deleted_since_selection_fails_its_task_only() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let kept = create_volume(&east, "us-east-1a", 8, &[]).await;
    let gone = create_volume(&east, "us-east-1a", 8, &[]).await;
    east.delete_volume().volume_id(&gone).send().await.unwrap();
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let ok = backup_task("backup-gone", pb::ResourceType::EbsVolume, &kept, run(Vec::new()));
    let failed = backup_task("backup-gone", pb::ResourceType::EbsVolume, &gone, run(Vec::new()));

    let summary = back_up(&servers, "backup-gone", &[ok.clone(), failed.clone()]).await;
    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:?}");
    let state = task_state(&summary, &failed);
    assert_eq!(pb::TaskPhase::try_from(state.phase), Ok(pb::TaskPhase::Failed));
    assert_eq!(state.reason_code, "InvalidVolume.NotFound", "{}", state.message);
    assert!(snapshots_tagged(&east, TAG_TASK_ID, &failed.task_id).await.is_empty());
    let points = snapshots_tagged(&east, TAG_TASK_ID, &ok.task_id).await;
    assert_eq!(points.len(), 1);
    assert_eq!(task_state(&summary, &ok).created_resource_ids, vec![points[0].snapshot_id().unwrap().to_string()]);
}

#[tokio::test]
async fn the_same_backup_delivered_twice_takes_one_snapshot() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let volume = create_volume(&east, "us-east-1a", 8, &[]).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let task = backup_task("backup-dup", pb::ResourceType::EbsVolume, &volume, run(Vec::new()));

    report_planned(servers.shared_bus().await, "backup-dup", 1).await;
    // Distinct dedupe ids, so that the bus's own dedupe does not hide the duplicate.
    for copy in ["first", "second"] {
        publish(&servers, &task, &format!("{}-{copy}", task.task_id)).await;
    }
    let summary = final_summary(&servers.client().await, "backup-dup").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    work_drained(&servers, "ebs").await;
    let points = snapshots_tagged(&east, TAG_TASK_ID, &task.task_id).await;
    assert_eq!(points.len(), 1, "one snapshot for one task: {points:?}");
    assert_eq!(summary.tasks[0].created_resource_ids, vec![points[0].snapshot_id().unwrap().to_string()]);
}

#[tokio::test]
async fn a_copy_is_encrypted_with_the_destinations_key() {
    init_logging();
    let servers = Servers::start().await;
    let (east, west) = (servers.ec2("us-east-1"), servers.ec2("us-west-2"));
    let kms = aws_sdk_kms::Client::new(&servers.aws("us-west-2"));
    let key = kms.create_key().description("backup copies").send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    let volume = create_volume(&east, "us-east-1a", 8, &[]).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let task = backup_task("backup-kms", pb::ResourceType::EbsVolume, &volume, run(vec![west_copy(&key_arn)]));

    let summary = back_up(&servers, "backup-kms", &[task.clone()]).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    let copies = snapshots_tagged(&west, TAG_TASK_ID, &task.task_id).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].encrypted(), Some(true));
    assert_eq!(copies[0].kms_key_id(), Some(key_arn.as_str()));
    let point = snapshots_tagged(&east, TAG_TASK_ID, &task.task_id).await;
    assert_eq!(point[0].encrypted(), Some(false), "the point keeps the volume's encryption");
}

#[tokio::test]
async fn a_backup_past_its_completion_window_fails_without_a_snapshot() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let volume = create_volume(&east, "us-east-1a", 8, &[]).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let mut late = run(Vec::new());
    late.complete_by = Some(ts(chrono::Utc::now() - chrono::TimeDelta::hours(1)));
    let task = backup_task("backup-late", pb::ResourceType::EbsVolume, &volume, late);

    let summary = back_up(&servers, "backup-late", &[task.clone()]).await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed, "{summary:?}");
    let state = task_state(&summary, &task);
    assert_eq!(state.reason_code, backup::reason::COMPLETION_WINDOW_EXCEEDED, "{}", state.message);
    assert!(snapshots_tagged(&east, TAG_TASK_ID, &task.task_id).await.is_empty(), "nothing was created");
}

/// What moto cannot do: copies into another account (moto looks the source up in the
/// destination's account), a copy AWS refuses, and a redelivery that lost its record.
mod mocked {
    use aws_sdk_ec2::operation::copy_snapshot::{CopySnapshotError, CopySnapshotOutput};
    use aws_sdk_ec2::operation::create_snapshot::CreateSnapshotOutput;
    use aws_sdk_ec2::operation::describe_snapshots::{DescribeSnapshotsInput, DescribeSnapshotsOutput};
    use aws_sdk_ec2::operation::modify_snapshot_attribute::ModifySnapshotAttributeOutput;
    use aws_sdk_ec2::types::{Snapshot, SnapshotState};
    use aws_sdk_ec2::Client;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use lifeboat_common::restore::{Progress, Step};
    use lifeboat_ebs::backup::{step, Clients};
    use lifeboat_ebs::Context;

    use super::*;

    const OTHER_ACCOUNT: &str = "210987654321";

    fn context() -> Context {
        let store = std::sync::Arc::new(lifeboat_common::shared::MemoryStore::default());
        let quotas = lifeboat_common::quota::QuotaConfig::parse("off").unwrap();
        Context::new(store, quotas, std::time::Duration::from_millis(10))
    }

    fn vault_copy() -> pb::CopyDestination {
        pb::CopyDestination {
            region: "us-west-2".into(),
            account_id: OTHER_ACCOUNT.into(),
            kms_key_id: "alias/vault".into(),
            ..Default::default()
        }
    }

    fn snapshot(id: &str, state: SnapshotState) -> Snapshot {
        Snapshot::builder().snapshot_id(id).volume_id("vol-1").state(state).build()
    }

    fn describes(snapshots: Vec<Snapshot>) -> Rule {
        mock!(Client::describe_snapshots)
            .then_output(move || DescribeSnapshotsOutput::builder().set_snapshots(Some(snapshots.clone())).build())
    }

    fn filtered_by(input: &DescribeSnapshotsInput, name: &str) -> bool {
        input.filters().iter().any(|f| f.name() == Some(name))
    }

    #[tokio::test]
    async fn another_account_gets_the_point_shared_then_its_own_encrypted_copy() {
        let task = backup_task("vault", pb::ResourceType::EbsVolume, "vol-1", run(vec![vault_copy()]));
        let create = mock!(Client::create_snapshot)
            .match_requests(|req| req.volume_id() == Some("vol-1"))
            .then_output(|| CreateSnapshotOutput::builder().snapshot_id("snap-point").build());
        let point = describes(vec![snapshot("snap-point", SnapshotState::Completed)]);
        let share = mock!(Client::modify_snapshot_attribute)
            .match_requests(|req| {
                req.snapshot_id() == Some("snap-point")
                    && req
                        .create_volume_permission()
                        .is_some_and(|p| p.add().iter().any(|perm| perm.user_id() == Some(OTHER_ACCOUNT)))
            })
            .then_output(|| ModifySnapshotAttributeOutput::builder().build());
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&create, &point, &share]);
        let no_lost_copy = mock!(Client::describe_snapshots)
            .match_requests(|req| filtered_by(req, &format!("tag:{TAG_TASK_ID}")))
            .then_output(|| DescribeSnapshotsOutput::builder().build());
        let copy = mock!(Client::copy_snapshot)
            .match_requests(|req| {
                let tagged = req
                    .tag_specifications()
                    .iter()
                    .flat_map(|s| s.tags())
                    .any(|t| t.key() == Some(TAG_COPY_OF) && t.value() == Some("snap-point"));
                req.source_region() == Some("us-east-1")
                    && req.source_snapshot_id() == Some("snap-point")
                    && req.encrypted() == Some(true)
                    && req.kms_key_id() == Some("alias/vault")
                    && tagged
            })
            .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-copy").build());
        let copied = describes(vec![snapshot("snap-copy", SnapshotState::Completed)]);
        let destination = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&no_lost_copy, &copy, &copied]);
        let clients = Clients { source, destinations: vec![destination], scripts: None };
        let context = context();
        let mut progress = Progress::default();

        let first = step(&context, &clients, &task, 1, &mut progress).await.unwrap();
        assert!(matches!(first, Step::Waiting { .. }), "{first:?}");
        assert_eq!(progress.id(backup::ROLE_POINT), Some("snap-point"));
        let second = step(&context, &clients, &task, 2, &mut progress).await.unwrap();
        assert!(matches!(second, Step::Waiting { .. }), "{second:?}");
        let copy_role = backup::copy_role(&vault_copy(), ACCOUNT);
        assert_eq!(progress.id(&copy_role), Some("snap-copy"));
        assert_eq!(progress.slots.len(), 1, "the copy holds a slot of us-west-2 in the vault account");
        let third = step(&context, &clients, &task, 3, &mut progress).await.unwrap();
        match third {
            Step::Done { created, warnings, .. } => {
                assert_eq!(created, vec!["snap-point".to_string(), "snap-copy".to_string()]);
                assert!(warnings.is_empty(), "{warnings:?}");
            }
            other => panic!("not done: {other:?}"),
        }
        assert!(progress.slots.is_empty(), "the slot is given back once the copy is complete");
        assert_eq!((create.num_calls(), share.num_calls(), copy.num_calls()), (1, 1, 1));
    }

    /// moto has no LockSnapshot: with `snapshot_lock`, the point is locked in EC2 in the lock's
    /// mode for its minimum retention once it is completed, and so is its copy, each once.
    #[tokio::test]
    async fn a_compliance_lock_locks_the_point_and_its_copy_in_ec2_once() {
        use aws_sdk_ec2::operation::lock_snapshot::{LockSnapshotInput, LockSnapshotOutput};
        use aws_sdk_ec2::types::LockMode;
        let mut run = run(vec![west_copy("")]);
        let lock = pb::RecoveryLock {
            mode: "COMPLIANCE".into(),
            min_retention_days: 7,
            snapshot_lock: true,
            ..Default::default()
        };
        run.lock = Some(lock);
        let task = backup_task("locked", pb::ResourceType::EbsVolume, "vol-1", run);
        fn locks(id: &'static str) -> Rule {
            let for_a_week = |req: &LockSnapshotInput| {
                let wanted = (chrono::Utc::now() + chrono::TimeDelta::days(7)).timestamp();
                req.expiration_date().is_some_and(|at| (at.secs() - wanted).abs() < 300)
            };
            mock!(Client::lock_snapshot)
                .match_requests(move |req| {
                    req.snapshot_id() == Some(id) && req.lock_mode() == Some(&LockMode::Compliance) && for_a_week(req)
                })
                .then_output(move || LockSnapshotOutput::builder().snapshot_id(id).build())
        }
        let create = mock!(Client::create_snapshot)
            .then_output(|| CreateSnapshotOutput::builder().snapshot_id("snap-point").build());
        let point = describes(vec![snapshot("snap-point", SnapshotState::Completed)]);
        let lock_point = locks("snap-point");
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&create, &point, &lock_point]);
        let copy =
            mock!(Client::copy_snapshot).then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-copy").build());
        let copied = describes(vec![snapshot("snap-copy", SnapshotState::Completed)]);
        let lock_copy = locks("snap-copy");
        let destination = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&copy, &copied, &lock_copy]);
        let clients = Clients { source, destinations: vec![destination], scripts: None };
        let context = context();
        let mut progress = Progress::default();

        let first = step(&context, &clients, &task, 1, &mut progress).await.unwrap();
        assert!(matches!(first, Step::Waiting { .. }), "{first:?}");
        assert_eq!(lock_point.num_calls(), 0, "not locked before it is completed");
        let second = step(&context, &clients, &task, 2, &mut progress).await.unwrap();
        assert!(matches!(second, Step::Waiting { .. }), "{second:?}");
        assert_eq!((lock_point.num_calls(), lock_copy.num_calls()), (1, 0));
        let third = step(&context, &clients, &task, 3, &mut progress).await.unwrap();
        assert!(matches!(third, Step::Done { .. }), "{third:?}");
        let again = step(&context, &clients, &task, 4, &mut progress).await.unwrap();
        assert!(matches!(again, Step::Done { .. }), "{again:?}");
        assert_eq!((lock_point.num_calls(), lock_copy.num_calls()), (1, 1), "each locked once");
    }

    #[tokio::test]
    async fn a_copy_aws_refuses_fails_the_task_and_names_the_point() {
        let task = backup_task("refused", pb::ResourceType::EbsVolume, "vol-1", run(vec![west_copy("alias/nope")]));
        let point = describes(vec![snapshot("snap-point", SnapshotState::Completed)]);
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&point]);
        let refused = mock!(Client::copy_snapshot).then_error(|| {
            CopySnapshotError::generic(
                ErrorMetadata::builder().code("InvalidParameterValue").message("the key is not usable").build(),
            )
        });
        let destination = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&refused]);
        let clients = Clients { source, destinations: vec![destination], scripts: None };
        let mut progress = Progress::default();
        progress.record(backup::ROLE_POINT, "snap-point");

        let failed = step(&context(), &clients, &task, 1, &mut progress).await.unwrap();
        match failed {
            Step::Failed { code, message } => {
                assert_eq!(code, "InvalidParameterValue");
                assert!(message.contains("snapshot snap-point exists"), "{message}");
            }
            other => panic!("not failed: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_redelivery_without_a_record_adopts_the_snapshot_it_finds() {
        let task = backup_task("lost", pb::ResourceType::EbsVolume, "vol-1", run(Vec::new()));
        let found = describes(vec![snapshot("snap-lost", SnapshotState::Pending)]);
        let create = mock!(Client::create_snapshot)
            .then_output(|| CreateSnapshotOutput::builder().snapshot_id("snap-second").build());
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&found, &create]);
        let clients = Clients { source, destinations: Vec::new(), scripts: None };
        let mut progress = Progress::default();

        let waiting = step(&context(), &clients, &task, 2, &mut progress).await.unwrap();
        match waiting {
            Step::Waiting { created, what } => {
                assert_eq!(created, vec!["snap-lost".to_string()]);
                assert!(what.contains("snap-lost of vol-1 is"), "{what}");
            }
            other => panic!("not waiting: {other:?}"),
        }
        assert_eq!(progress.id(backup::ROLE_POINT), Some("snap-lost"));
        assert_eq!(create.num_calls(), 0, "no second snapshot");
    }

    #[tokio::test]
    async fn a_point_still_pending_when_the_window_ends_fails_and_is_named() {
        let mut late = run(Vec::new());
        late.complete_by = Some(ts(chrono::Utc::now() - chrono::TimeDelta::minutes(1)));
        let task = backup_task("late", pb::ResourceType::EbsVolume, "vol-1", late);
        let pending = describes(vec![snapshot("snap-point", SnapshotState::Pending)]);
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&pending]);
        let clients = Clients { source, destinations: Vec::new(), scripts: None };
        let mut progress = Progress::default();
        progress.record(backup::ROLE_POINT, "snap-point");

        match step(&context(), &clients, &task, 3, &mut progress).await.unwrap() {
            Step::Failed { code, message } => {
                assert_eq!(code, backup::reason::COMPLETION_WINDOW_EXCEEDED);
                assert!(message.ends_with("created so far: snap-point"), "{message}");
            }
            other => panic!("not failed: {other:?}"),
        }
    }
}

/// The crash window of a copy: a delivery noted that it was about to call CopySnapshot, made
/// the copy and died before recording it. The next delivery finds that copy by its tags and
/// adopts it: one copy in the destination. (Without the note no delivery can have called
/// CopySnapshot, and nothing is looked up by tag.)
#[tokio::test]
async fn a_copy_started_by_a_delivery_that_died_is_adopted() {
    init_logging();
    let servers = Servers::start().await;
    let (east, west) = (servers.ec2("us-east-1"), servers.ec2("us-west-2"));
    let volume = create_volume(&east, "us-east-1a", 8, &[]).await;
    let destination = west_copy("");
    let task = backup_task("backup-crash", pb::ResourceType::EbsVolume, &volume, run(vec![destination.clone()]));
    let tag = |key: &str, value: &str| aws_sdk_ec2::types::Tag::builder().key(key).value(value).build();
    let spec = |tags: Vec<aws_sdk_ec2::types::Tag>| {
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Snapshot)
            .set_tags(Some(tags))
            .build()
    };
    // What the dead delivery left: its point (recorded), a copy of it (not recorded), the note.
    let point = east
        .create_snapshot()
        .volume_id(&volume)
        .tag_specifications(spec(vec![tag(TAG_TASK_ID, &task.task_id)]))
        .send()
        .await
        .unwrap();
    let point_id = point.snapshot_id().unwrap().to_string();
    let lost = west
        .copy_snapshot()
        .source_region("us-east-1")
        .source_snapshot_id(&point_id)
        .tag_specifications(spec(vec![tag(TAG_TASK_ID, &task.task_id), tag(TAG_COPY_OF, &point_id)]))
        .send()
        .await
        .unwrap();
    let lost_id = lost.snapshot_id().unwrap().to_string();
    let store = servers.shared_bus().await.shared();
    let mut progress = lifeboat_common::restore::Progress::default();
    progress.record(backup::ROLE_POINT, point_id.clone());
    let key = lifeboat_common::restore::progress_key(&task);
    store.put_if(&key, serde_json::to_vec(&progress).unwrap().into(), 0).await.unwrap();
    let role = backup::copy_role(&destination, ACCOUNT);
    lifeboat_common::restore::note_intent(store.as_ref(), &task, &role).await.unwrap();

    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let summary = back_up(&servers, "backup-crash", &[task.clone()]).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    let copies = snapshots_tagged(&west, TAG_TASK_ID, &task.task_id).await;
    let ids: Vec<&str> = copies.iter().filter_map(|c| c.snapshot_id()).collect();
    assert_eq!(ids, vec![lost_id.as_str()], "the lost copy is adopted, not made again");
    assert_eq!(task_state(&summary, &task).created_resource_ids, vec![point_id, lost_id]);
}
