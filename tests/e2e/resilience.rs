//! No lost or duplicated work: redelivered tasks, crashed workers, a restarted aggregator and
//! a task that runs out of deliveries, over both transports.

use std::time::Duration;

use lifeboat_common::bus::{OutgoingMessage, Queue};
use lifeboat_common::subjects::{self, TAG_TASK_ID};
use lifeboat_proto as pb;
use lifeboat_tests::*;

fn ebs_task(request_id: &str, task_id: &str, snapshot_id: &str, volume_id: &str) -> pb::RestoreTask {
    pb::RestoreTask {
        request_id: request_id.into(),
        task_id: task_id.into(),
        set_name: "set".into(),
        resource_type: pb::ResourceType::EbsVolume as i32,
        backup: Some(pb::Backup {
            backup_id: snapshot_id.into(),
            resource_type: pb::ResourceType::EbsVolume as i32,
            source_resource_id: volume_id.into(),
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            ..Default::default()
        }),
        target: Some(pb::restore_task::Target::Ebs(pb::EbsTarget {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            availability_zone: "us-east-1b".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn the_same_task_delivered_twice_creates_one_volume(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let volume = create_volume(&east, "us-east-1a", 8, &[]).await;
    let snapshot = create_snapshot(&east, &volume, &[]).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let bus = servers.shared_bus().await;

    // The plan, as discovery would publish it, then the same task twice with distinct dedupe
    // ids so that the bus's dedupe (JetStream's, the FIFO queue's) does not hide the duplicate.
    report_planned(bus.clone(), "dup-1", 1).await;
    let task = ebs_task("dup-1", "t-duplicate", &snapshot, &volume);
    for copy in ["first", "second"] {
        bus.publish(
            OutgoingMessage::proto(subjects::work_subject("ebs"), &task).dedupe_id(format!("t-duplicate-{copy}")),
        )
        .await
        .unwrap();
    }
    let client = servers.client().await;
    let summary = final_summary(&client, "dup-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
    assert_eq!(summary.counts.unwrap().succeeded, 1);
    // Both deliveries handled and acknowledged, then count.
    work_drained(&servers, "ebs").await;
    let volumes = volumes_tagged(&east, TAG_TASK_ID, "t-duplicate").await;
    assert_eq!(volumes.len(), 1, "exactly one volume for one task: {volumes:?}");
    assert_eq!(summary.tasks[0].created_resource_ids, vec![volumes[0].volume_id().unwrap().to_string()]);
}

/// Runs an EBS service on its own runtime, so it can be killed the way a process dies: no
/// graceful shutdown, no acks of what it was doing.
fn start_doomed_ebs(servers: &Servers) -> tokio::runtime::Runtime {
    let (address, aws) = (servers.bus_address(), servers.aws("us-east-1"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.spawn(async move {
        let bus = address.connect().await;
        let accounts = lifeboat_common::aws::Accounts::new(aws, "role");
        // A long first re-check, so the task is mid-flight (volume created, not yet reported
        // done) when the process dies.
        let mut config = short_ack_wait(fast_ebs_config(), Duration::from_secs(2));
        config.service.wait.check_initial = Duration::from_secs(3);
        config.service.wait.check_max = Duration::from_secs(3);
        let service = lifeboat_ebs::service(accounts, bus, config);
        let _ = service.run(tokio_util::sync::CancellationToken::new()).await;
    });
    runtime
}

async fn a_fresh_worker_finishes_what_a_crashed_one_started(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let west = servers.ec2("us-west-2");
    let east = servers.ec2("us-east-1");
    let mut snapshots = Vec::new();
    for i in 0..3 {
        let volume = create_volume(&west, "us-west-2a", 8, &[("crash", "yes"), ("n", &i.to_string())]).await;
        snapshots.push(create_snapshot(&west, &volume, &[("crash", "yes")]).await);
    }
    let _others = Running::start(&servers, ServiceSet { ebs: None, ..ServiceSet::default() }).await;
    let doomed = start_doomed_ebs(&servers);
    let client = servers.client().await;
    // Cross-region: the first step starts a snapshot copy and comes back later for the volume.
    let target =
        pb::EbsTarget { region: "us-east-1".into(), availability_zone: "us-east-1b".into(), ..Default::default() };
    client
        .submit(&request("crash-1", vec![ebs_set("crash", "us-west-2", &[("crash", "yes")], None, target)]))
        .await
        .unwrap();

    // Wait until the doomed worker has started every task (its copies exist), then kill it.
    let mut started = 0;
    for _ in 0..200 {
        started = snapshots_tagged(&east, subjects::TAG_REQUEST_ID, "crash-1").await.len();
        if started == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(started, 3, "the first worker started all three restores");
    doomed.shutdown_background();
    let status = client.status("crash-1", false).await.unwrap().summary.unwrap();
    assert!(!status.r#final, "nothing finished before the crash: {status:?}");
    assert!(volumes_tagged(&east, subjects::TAG_REQUEST_ID, "crash-1").await.is_empty());

    let _fresh = Running::start(
        &servers,
        ServiceSet {
            discovery: None,
            aggregator: false,
            dynamodb: None,
            ec2: None,
            rds: None,
            ebs: Some(short_ack_wait(fast_ebs_config(), Duration::from_secs(2))),
        },
    )
    .await;
    let summary = final_summary(&client, "crash-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.counts.unwrap().succeeded, 3);
    let volumes = volumes_tagged(&east, subjects::TAG_REQUEST_ID, "crash-1").await;
    assert_eq!(volumes.len(), 3, "one volume per task");
    assert_eq!(snapshots_tagged(&east, subjects::TAG_REQUEST_ID, "crash-1").await.len(), 3, "no snapshot copied twice");
    let restored_from: std::collections::BTreeSet<_> =
        volumes.iter().map(|v| tags_of(v)[subjects::TAG_SOURCE_BACKUP].clone()).collect();
    assert_eq!(restored_from, snapshots.into_iter().collect());
}

async fn an_aggregator_restart_loses_nothing(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let volume = create_volume(&east, "us-east-1a", 8, &[("keep", "state")]).await;
    create_snapshot(&east, &volume, &[("keep", "state")]).await;
    let client = servers.client().await;

    // First run: everything, to the final verdict.
    let services = Running::start(&servers, ServiceSet::default()).await;
    let set = ebs_set(
        "s",
        "us-east-1",
        &[("keep", "state")],
        None,
        pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() },
    );
    client.submit(&request("restart-1", vec![set])).await.unwrap();
    let before = final_summary(&client, "restart-1").await;
    services.stop().await;

    // A new aggregator answers from its state store alone (JetStream KV, DynamoDB).
    let _aggregator = Running::start(
        &servers,
        ServiceSet { discovery: None, ebs: None, dynamodb: None, ec2: None, rds: None, aggregator: true },
    )
    .await;
    let reply = client.status("restart-1", true).await.unwrap();
    assert!(reply.found);
    let after = reply.summary.unwrap();
    assert_eq!(verdict(&after), pb::Verdict::Completed);
    assert_eq!(after.counts, before.counts);
    assert_eq!(after.tasks, before.tasks);
}

async fn a_task_that_never_gets_a_copy_slot_ends_failed_and_dead_lettered(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let west = servers.ec2("us-west-2");
    let volume = create_volume(&west, "us-west-2a", 8, &[("slot", "none")]).await;
    create_snapshot(&west, &volume, &[("slot", "none")]).await;
    // No copy slot ever (limit 0), and only three deliveries allowed.
    let mut ebs = fast_ebs_config();
    ebs.max_copies_per_region = Some(0);
    ebs.service.consumer.max_deliveries = 3;
    let _services = Running::start(&servers, ServiceSet { ebs: Some(ebs), ..ServiceSet::default() }).await;
    let client = servers.client().await;
    let target =
        pb::EbsTarget { region: "us-east-1".into(), availability_zone: "us-east-1a".into(), ..Default::default() };
    client
        .submit(&request("no-slot", vec![ebs_set("s", "us-west-2", &[("slot", "none")], None, target)]))
        .await
        .unwrap();

    let summary = final_summary(&client, "no-slot").await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed);
    let task = &summary.tasks[0];
    assert_eq!(task.reason_code, lifeboat_common::consumer::MAX_DELIVERIES, "{task:?}");
    assert_eq!(task.attempt, 3);
    assert!(snapshots_tagged(&servers.ec2("us-east-1"), subjects::TAG_REQUEST_ID, "no-slot").await.is_empty());
    let dead = dead_letters(&servers, &Queue::Work("ebs".into())).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let task_back = <pb::RestoreTask as prost::Message>::decode(dead[0].payload.as_ref()).unwrap();
    assert_eq!(task_back.task_id, task.task_id, "the task is kept for inspection or replay");
    let reason = dead[0].reason().expect("a reason");
    assert!(reason.starts_with(lifeboat_common::consumer::MAX_DELIVERIES), "{reason}");
}

on_both_transports!(
    the_same_task_delivered_twice_creates_one_volume,
    a_fresh_worker_finishes_what_a_crashed_one_started,
    an_aggregator_restart_loses_nothing,
    a_task_that_never_gets_a_copy_slot_ends_failed_and_dead_lettered,
);
