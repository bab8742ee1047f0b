//! EBS at scale: a same-region restore costs about one EC2 call per volume (CreateVolume, then
//! shared DescribeVolumes sweeps by id), cross-region copies stay under the copy cap held in the
//! shared store by every replica together, and a redelivery never starts a second copy.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::operation::copy_snapshot::CopySnapshotOutput;
use aws_sdk_ec2::operation::create_volume::CreateVolumeError;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesOutput;
use aws_sdk_ec2::types::{Filter, Tag, Volume, VolumeState};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use lifeboat_common::bus::OutgoingMessage;
use lifeboat_common::quota::{Cap, QuotaConfig, Quotas};
use lifeboat_common::restore::{load_progress, progress_key, Progress};
use lifeboat_common::shared::MemoryStore;
use lifeboat_common::subjects::{self, TAG_TASK_ID};
use lifeboat_ebs::restore::{role, COPY_GRACE_CHECKS};
use lifeboat_ebs::{restore_step, Clients, Context, Step};
use lifeboat_proto as pb;
use lifeboat_tests::*;

/// A region no other test restores into, so the process-wide call counters of its EC2 calls
/// are this test's alone.
const SCALE_REGION: &str = "eu-north-1";

fn ebs_task(
    request_id: &str,
    n: usize,
    snapshot_id: &str,
    source_region: &str,
    target_region: &str,
) -> pb::RestoreTask {
    pb::RestoreTask {
        request_id: request_id.into(),
        task_id: format!("{request_id}-t{n}"),
        set_name: "set".into(),
        resource_type: pb::ResourceType::EbsVolume as i32,
        backup: Some(pb::Backup {
            backup_id: snapshot_id.into(),
            resource_type: pb::ResourceType::EbsVolume as i32,
            account_id: ACCOUNT.into(),
            region: source_region.into(),
            ..Default::default()
        }),
        target: Some(pb::restore_task::Target::Ebs(pb::EbsTarget {
            account_id: ACCOUNT.into(),
            region: target_region.into(),
            availability_zone: format!("{target_region}a"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `count` snapshots in `region`, each of its own volume.
async fn snapshots(ec2: &Client, region: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let volume = create_volume(ec2, &format!("{region}a"), 1, &[]).await;
        ids.push(create_snapshot(ec2, &volume, &[]).await);
    }
    ids
}

/// Plans `tasks` as discovery would, then queues them.
async fn submit(servers: &Servers, request_id: &str, tasks: &[pb::RestoreTask]) {
    let bus = servers.shared_bus().await;
    report_planned(bus.clone(), request_id, tasks.len() as u32).await;
    for task in tasks {
        bus.publish(OutgoingMessage::proto(subjects::work_subject("ebs"), task).dedupe_id(task.task_id.clone()))
            .await
            .unwrap();
    }
}

/// Lifeboat's volumes in `region` by task id: every task must have exactly one.
async fn volumes_by_task(ec2: &Client, request_id: &str) -> BTreeMap<String, Vec<String>> {
    let volumes = ec2
        .describe_volumes()
        .filters(Filter::builder().name(format!("tag:{}", subjects::TAG_REQUEST_ID)).values(request_id).build());
    let mut by_task: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for volume in volumes.send().await.unwrap().volumes() {
        let task = volume.tags().iter().find(|t| t.key() == Some(TAG_TASK_ID)).and_then(|t| t.value()).unwrap();
        by_task.entry(task.to_string()).or_default().push(volume.volume_id().unwrap().to_string());
    }
    by_task
}

/// Every task of `tasks` restored exactly one volume.
fn assert_one_volume_each(by_task: &BTreeMap<String, Vec<String>>, tasks: &[pb::RestoreTask]) {
    let expected: Vec<_> =
        tasks.iter().map(|t| t.task_id.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(by_task.keys().cloned().collect::<Vec<_>>(), expected);
    let twice: Vec<_> = by_task.iter().filter(|(_, volumes)| volumes.len() != 1).collect();
    assert!(twice.is_empty(), "tasks with more than one volume: {twice:?}");
}

/// EC2 attempts this process made in `region`, from a scrape of its metrics.
fn ec2_calls(scrape: &str, region: &str) -> f64 {
    let region = format!(r#"region="{region}""#);
    scrape
        .lines()
        .filter(|line| line.starts_with(lifeboat_common::metrics::AWS_CALLS) && line.contains(&region))
        .filter(|line| line.contains(r#"service="EC2""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_region_restore_of_sixty_volumes_takes_at_most_one_point_two_ec2_calls_per_volume() {
    init_logging();
    let metrics = lifeboat_common::metrics::install();
    let servers = Servers::start().await;
    let ec2 = servers.ec2(SCALE_REGION);
    let snapshots = snapshots(&ec2, SCALE_REGION, 60).await;
    let tasks: Vec<_> =
        snapshots.iter().enumerate().map(|(n, s)| ebs_task("scale", n, s, SCALE_REGION, SCALE_REGION)).collect();
    let before = ec2_calls(&metrics.render(), SCALE_REGION);
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    submit(&servers, "scale", &tasks).await;

    let summary = final_summary(&servers.client().await, "scale").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    assert_eq!(summary.counts.unwrap().succeeded, 60);
    work_drained(&servers, "ebs").await;
    let calls = ec2_calls(&metrics.render(), SCALE_REGION) - before;
    let per_volume = calls / 60.0;
    println!("same-region restore of 60 volumes: {calls} EC2 calls, {per_volume:.2} per volume");
    assert!(per_volume <= 1.2, "{calls} EC2 calls for 60 volumes");
    assert_one_volume_each(&volumes_by_task(&ec2, "scale").await, &tasks);
}

/// Samples how many copy slots of `region` are held until stopped; returns the most seen.
fn watch_slots(
    store: Arc<dyn lifeboat_common::shared::SharedStore>,
    region: &str,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let most = Arc::new(AtomicUsize::new(0));
    let (seen, slot) = (most.clone(), Quotas::slot_key(Cap::SnapshotCopies, ACCOUNT, region));
    let quotas = Quotas::new(store, QuotaConfig::default());
    let watcher = tokio::spawn(async move {
        loop {
            if let Ok(held) = quotas.held(&slot).await {
                seen.fetch_max(held, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (most, watcher)
}

async fn copies_limited_to_two(transport: Transport, replicas: usize, volumes: usize) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let west = servers.ec2("us-west-2");
    let request_id = format!("copies-{replicas}");
    let snapshots = snapshots(&west, "us-west-2", volumes).await;
    let tasks: Vec<_> =
        snapshots.iter().enumerate().map(|(n, s)| ebs_task(&request_id, n, s, "us-west-2", "us-east-1")).collect();
    let store = servers.shared_bus().await.shared();
    let (most, watcher) = watch_slots(store.clone(), "us-east-1");
    let mut ebs = fast_ebs_config();
    ebs.max_copies_per_region = Some(2);
    let mut running = Vec::new();
    for replica in 0..replicas {
        let set = ServiceSet {
            discovery: None,
            ebs: Some(ebs.clone()),
            dynamodb: None,
            ec2: None,
            rds: None,
            aggregator: replica == 0,
        };
        running.push(Running::start(&servers, set).await);
    }
    submit(&servers, &request_id, &tasks).await;

    let summary = final_summary(&servers.client().await, &request_id).await;
    watcher.abort();
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    assert_eq!(summary.counts.unwrap().succeeded, volumes as u32);
    let east = servers.ec2("us-east-1");
    assert_one_volume_each(&volumes_by_task(&east, &request_id).await, &tasks);
    let copies = snapshots_tagged(&east, subjects::TAG_REQUEST_ID, &request_id).await;
    let copied: HashSet<_> = copies.iter().map(|c| c.description().unwrap_or_default().to_string()).collect();
    assert_eq!((copies.len(), copied.len()), (volumes, volumes), "one copy per task: {copies:?}");
    let most = most.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} copies held at once with a cap of 2");
    // Each slot went back when its copy completed.
    let slot = Quotas::slot_key(Cap::SnapshotCopies, ACCOUNT, "us-east-1");
    assert_eq!(Quotas::new(store.clone(), QuotaConfig::default()).held(&slot).await.unwrap(), 0);
    for task in &tasks {
        let (progress, _) = load_progress(store.as_ref(), &progress_key(task)).await.unwrap();
        assert!(progress.slots.is_empty() && progress.id(role::COPY).is_some(), "{progress:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_region_restore_with_two_copies_in_flight_completes() {
    copies_limited_to_two(Transport::Nats, 1, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_over_one_bus_share_the_copy_cap() {
    copies_limited_to_two(Transport::Nats, 2, 8).await;
}

/// The same over SQS, where the cap lives in the DynamoDB state table (fewer volumes: a task
/// waiting for a slot comes back after whole seconds there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_over_sqs_share_the_copy_cap() {
    copies_limited_to_two(Transport::Sqs, 2, 4).await;
}

fn cross_region_task() -> (pb::RestoreTask, pb::EbsTarget) {
    let task = ebs_task("r", 1, "snap-1", "us-east-1", "us-west-2");
    let Some(pb::restore_task::Target::Ebs(target)) = task.target.clone() else { unreachable!() };
    (task, target)
}

fn context(store: Arc<MemoryStore>) -> Context {
    Context::new(store, QuotaConfig::parse("off").unwrap(), Duration::from_millis(10))
}

/// What a redelivery finds: the record of an earlier delivery that started copy `snap-copy`.
fn recorded_copy() -> Progress {
    let mut progress = Progress::default();
    progress.record(role::COPY, "snap-copy");
    progress.record(role::COPY_STARTED_AT, "1");
    progress.recorded = true;
    progress
}

#[tokio::test]
async fn a_redelivery_before_the_copy_is_visible_waits_for_it_and_never_copies_again() {
    let by_id = mock!(Client::describe_snapshots)
        .match_requests(|req| {
            req.filters().iter().any(|f| f.name() == Some("snapshot-id") && f.values() == ["snap-copy".to_string()])
        })
        .then_output(|| DescribeSnapshotsOutput::builder().build());
    let copy =
        mock!(Client::copy_snapshot).then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-2nd").build());
    let by_tag = mock!(Client::describe_volumes).then_output(|| DescribeVolumesOutput::builder().build());
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&by_id, &copy, &by_tag]);
    let (task, target) = cross_region_task();
    let context = context(Arc::default());
    let clients = Clients { target: ec2.clone(), source: ec2 };
    for attempt in 2..=1 + COPY_GRACE_CHECKS {
        let mut progress = recorded_copy();
        let step = restore_step(&context, &clients, &task, &target, attempt, &mut progress).await.unwrap();
        let waiting =
            Step::Waiting { what: "waiting for copy snap-copy to appear".into(), created: vec!["snap-copy".into()] };
        assert_eq!(step, waiting, "attempt {attempt}");
        assert_eq!(progress, recorded_copy(), "nothing new recorded");
    }
    // Still not there after the grace checks: the copy is gone, and the task says so.
    let mut progress = recorded_copy();
    let step = restore_step(&context, &clients, &task, &target, 2 + COPY_GRACE_CHECKS, &mut progress).await.unwrap();
    assert!(matches!(&step, Step::Failed { code, .. } if code == "SnapshotCopyNotFound"), "{step:?}");
    assert_eq!(copy.num_calls(), 0, "no second CopySnapshot");
    assert_eq!(by_tag.num_calls(), 0, "a recorded task is never looked up by tag");
    assert_eq!(by_id.num_calls() as u32, COPY_GRACE_CHECKS + 1);
}

#[tokio::test]
async fn a_first_delivery_records_its_copy_and_holds_a_slot_until_the_copy_completes() {
    use aws_sdk_ec2::types::{Snapshot, SnapshotState};

    let copy =
        mock!(Client::copy_snapshot).then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-copy").build());
    let completed = mock!(Client::describe_snapshots).then_output(|| {
        let copy = Snapshot::builder().snapshot_id("snap-copy").state(SnapshotState::Completed).build();
        DescribeSnapshotsOutput::builder().snapshots(copy).build()
    });
    let create = mock!(Client::create_volume).then_output(|| {
        aws_sdk_ec2::operation::create_volume::CreateVolumeOutput::builder()
            .volume_id("vol-new")
            .state(VolumeState::Creating)
            .build()
    });
    // Before creating the volume on a later delivery, one look by tag: none yet.
    let no_volume = mock!(Client::describe_volumes).then_output(|| DescribeVolumesOutput::builder().build());
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&copy, &completed, &create, &no_volume]);
    let (task, target) = cross_region_task();
    let store = Arc::new(MemoryStore::default());
    let context = context(store.clone());
    let clients = Clients { target: ec2.clone(), source: ec2 };
    let slot = Quotas::slot_key(Cap::SnapshotCopies, ACCOUNT, "us-west-2");
    let held = || async { Quotas::new(store.clone(), QuotaConfig::default()).held(&slot).await.unwrap() };

    let mut progress = Progress::default();
    let step = restore_step(&context, &clients, &task, &target, 1, &mut progress).await.unwrap();
    assert!(matches!(&step, Step::Waiting { created, .. } if created == &["snap-copy".to_string()]), "{step:?}");
    assert_eq!((progress.id(role::COPY), progress.slots.clone()), (Some("snap-copy"), vec![slot.clone()]));
    assert_eq!(held().await, 1);
    progress.recorded = true;
    let step = restore_step(&context, &clients, &task, &target, 2, &mut progress).await.unwrap();
    let created = vec!["vol-new".to_string(), "snap-copy".to_string()];
    assert_eq!(step, Step::Waiting { what: "volume vol-new is being created".into(), created });
    assert_eq!(progress.id(role::VOLUME), Some("vol-new"));
    assert!(progress.slots.is_empty(), "the slot goes back once the copy is complete");
    assert_eq!(held().await, 0);
    assert_eq!((copy.num_calls(), completed.num_calls(), create.num_calls(), no_volume.num_calls()), (1, 1, 1, 1));
}

/// Found by the chaos tests: a delivery that created the volume from a completed copy and died
/// before recording it left a record (of the copy) behind, so the next delivery must still look
/// for the volume before creating another (moto, unlike AWS, ignores the ClientToken).
#[tokio::test]
async fn a_volume_created_after_the_copy_but_not_recorded_is_adopted_not_created_again() {
    use aws_sdk_ec2::types::{Snapshot, SnapshotState, Tag, Volume};

    let completed = mock!(Client::describe_snapshots).then_output(|| {
        let copy = Snapshot::builder().snapshot_id("snap-copy").state(SnapshotState::Completed).build();
        DescribeSnapshotsOutput::builder().snapshots(copy).build()
    });
    let ours = mock!(Client::describe_volumes).then_output(|| {
        let tag = Tag::builder().key("lifeboat:copy-snapshot-id").value("snap-copy").build();
        let volume = Volume::builder().volume_id("vol-made").state(VolumeState::Available).tags(tag).build();
        DescribeVolumesOutput::builder().volumes(volume).build()
    });
    let create = mock!(Client::create_volume).then_output(|| {
        aws_sdk_ec2::operation::create_volume::CreateVolumeOutput::builder().volume_id("vol-twice").build()
    });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&completed, &ours, &create]);
    let (task, target) = cross_region_task();
    let context = context(Arc::default());
    let clients = Clients { target: ec2.clone(), source: ec2 };
    let mut progress = recorded_copy();
    let step = restore_step(&context, &clients, &task, &target, 7, &mut progress).await.unwrap();
    assert!(matches!(&step, Step::Done { created, .. } if created[0] == "vol-made"), "{step:?}");
    assert_eq!(progress.id(role::VOLUME), Some("vol-made"));
    assert_eq!(create.num_calls(), 0, "no second volume");
}

#[tokio::test]
async fn a_client_token_already_used_adopts_our_volume_found_by_tag() {
    let mismatch = mock!(Client::create_volume).then_error(|| {
        CreateVolumeError::generic(
            ErrorMetadata::builder().code("IdempotentParameterMismatch").message("token reused").build(),
        )
    });
    let ours = mock!(Client::describe_volumes)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("tag:lifeboat:task-id")))
        .then_output(|| {
            let volume = Volume::builder()
                .volume_id("vol-ours")
                .state(VolumeState::Available)
                .tags(Tag::builder().key(TAG_TASK_ID).value("r-t1").build())
                .build();
            DescribeVolumesOutput::builder().volumes(volume).build()
        });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&mismatch, &ours]);
    let task = ebs_task("r", 1, "snap-1", "us-east-1", "us-east-1");
    let Some(pb::restore_task::Target::Ebs(target)) = task.target.clone() else { unreachable!() };
    let clients = Clients { target: ec2.clone(), source: ec2 };
    let mut progress = Progress::default();
    let step = restore_step(&context(Arc::default()), &clients, &task, &target, 1, &mut progress).await.unwrap();
    let done = Step::Done {
        message: "volume vol-ours is available".into(),
        created: vec!["vol-ours".into()],
        warnings: vec![],
    };
    assert_eq!(step, done);
    assert_eq!(progress.id(role::VOLUME), Some("vol-ours"));
}
