//! Bad input: every problem is reported with its field, nothing panics, and the services keep
//! serving the next request.

use std::time::Duration;

use lifeboat_common::bus::{OutgoingMessage, Queue, QueueOptions};
use lifeboat_common::subjects;
use lifeboat_common::validate::Policy;
use lifeboat_proto as pb;
use lifeboat_tests::*;

fn target(zone: &str) -> pb::EbsTarget {
    pb::EbsTarget { availability_zone: zone.into(), ..Default::default() }
}

async fn rejection(client: &lifeboat_cli::client::Client, request_id: &str) -> pb::RequestRejected {
    let summary = final_summary(client, request_id).await;
    assert_eq!(verdict(&summary), pb::Verdict::Rejected, "{summary:#?}");
    summary.rejection.expect("a rejected summary says why")
}

async fn invalid_requests_are_rejected_by_field_and_the_next_request_still_runs(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let volume = create_volume(&east, "us-east-1a", 8, &[("app", "ok")]).await;
    create_snapshot(&east, &volume, &[("app", "ok")]).await;
    let policy = Policy { allowed_accounts: vec![ACCOUNT.to_string()], ..Policy::default() };
    let _services = Running::start(
        &servers,
        ServiceSet { discovery: Some(fast_discovery_config(policy)), ..ServiceSet::default() },
    )
    .await;
    let bus = servers.shared_bus().await;
    let client = servers.client().await;

    // Bytes that are not a RestoreRequest: rejected by the id in the header, kept in the dead letters.
    bus.publish(
        OutgoingMessage::new(subjects::RESTORE_REQUESTS, vec![0xff, 0xff, 0xff, 0x01, 0x02])
            .header(subjects::HEADER_REQUEST_ID, "garbage-1"),
    )
    .await
    .unwrap();
    let rejected = rejection(&client, "garbage-1").await;
    assert_eq!(rejected.field, "<message>");
    assert!(rejected.message.contains("RestoreRequest"), "{}", rejected.message);

    // Unknown resource type.
    let mut set = ebs_set("s", "us-east-1", &[("app", "ok")], None, target("us-east-1b"));
    set.resource_types = vec![42];
    client.submit(&request("unknown-type", vec![set])).await.unwrap();
    assert_eq!(rejection(&client, "unknown-type").await.field, "restore_sets[0].resource_types[0]");

    // A type this deployment has no service for yet.
    let mut set = ebs_set("s", "us-east-1", &[("app", "ok")], None, target("us-east-1b"));
    set.resource_types = vec![pb::ResourceType::Route53Zone as i32];
    client.submit(&request("unsupported-type", vec![set])).await.unwrap();
    let rejected = rejection(&client, "unsupported-type").await;
    assert_eq!(rejected.field, "restore_sets[0].resource_types[0]");
    assert!(rejected.message.contains("not supported"), "{}", rejected.message);

    // S3 (a protection group) is accepted and planned as skipped, but needs its target.
    let mut set = ebs_set("s", "us-east-1", &[("app", "ok")], None, target("us-east-1b"));
    set.resource_types = vec![pb::ResourceType::S3Bucket as i32];
    client.submit(&request("s3-no-target", vec![set])).await.unwrap();
    assert_eq!(rejection(&client, "s3-no-target").await.field, "restore_sets[0].target.s3");

    // Missing availability zone, in the second set; the first set is fine and nothing starts.
    let good = ebs_set("good", "us-east-1", &[("app", "ok")], None, target("us-east-1b"));
    // In another region the zone cannot be inherited from the source volume.
    let bad = ebs_set(
        "no-zone",
        "us-east-1",
        &[("app", "ok")],
        None,
        pb::EbsTarget { region: "us-west-2".into(), ..target("") },
    );
    client.submit(&request("missing-az", vec![good, bad])).await.unwrap();
    assert_eq!(rejection(&client, "missing-az").await.field, "restore_sets[1].target.ebs.availability_zone");

    // A window that ends before it starts.
    let now = chrono::Utc::now();
    let window = Some(pb::source::Selection::Window(pb::TimeWindow {
        start: Some(ts(now)),
        end: Some(ts(now - chrono::Duration::hours(1))),
    }));
    client
        .submit(&request("bad-window", vec![ebs_set("s", "us-east-1", &[("app", "ok")], window, target("us-east-1b"))]))
        .await
        .unwrap();
    assert_eq!(rejection(&client, "bad-window").await.field, "restore_sets[0].source.window.end");

    // An account Lifeboat is not configured for.
    let mut set = ebs_set("s", "us-east-1", &[("app", "ok")], None, target("us-east-1b"));
    set.source.as_mut().unwrap().account_id = "999999999999".into();
    client.submit(&request("unknown-account", vec![set])).await.unwrap();
    let rejected = rejection(&client, "unknown-account").await;
    assert_eq!(rejected.field, "restore_sets[0].source.account_id");
    assert!(rejected.message.contains("999999999999"));

    // Several problems at once are all listed.
    let mut set = ebs_set("", "mars-1", &[], None, target("us-east-1b"));
    set.resource_types.clear();
    client.submit(&request("many-problems", vec![set])).await.unwrap();
    let fields: Vec<String> = rejection(&client, "many-problems").await.errors.into_iter().map(|e| e.field).collect();
    for field in ["restore_sets[0].name", "restore_sets[0].source.region", "restore_sets[0].resource_types"] {
        assert!(fields.iter().any(|f| f == field), "{field} missing from {fields:?}");
    }

    // No matching backups: not rejected (the request is valid) but a clear SKIPPED reason, and
    // FAILED as a whole because nothing was restored.
    client
        .submit(&request(
            "no-match",
            vec![ebs_set("s", "us-east-1", &[("app", "nothing-has-this")], None, target("us-east-1b"))],
        ))
        .await
        .unwrap();
    let summary = final_summary(&client, "no-match").await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed);
    assert_eq!(summary.tasks.len(), 1);
    assert_eq!(summary.tasks[0].phase, pb::TaskPhase::Skipped as i32);
    assert_eq!(summary.tasks[0].reason_code, "NO_MATCHING_BACKUPS");

    // One set matching and one not: restored, with a warning.
    let sets = vec![
        ebs_set("found", "us-east-1", &[("app", "ok")], None, target("us-east-1b")),
        ebs_set("missing", "us-east-1", &[("app", "nothing-has-this")], None, target("us-east-1b")),
    ];
    client.submit(&request("half-match", sets)).await.unwrap();
    let summary = final_summary(&client, "half-match").await;
    assert_eq!(verdict(&summary), pb::Verdict::CompletedWithWarnings);
    assert_eq!(summary.counts.unwrap().succeeded, 1);
    assert_eq!(lifeboat_cli::render::exit_code(verdict(&summary)), 2, "watch exits non-zero unless COMPLETED");
    let table = lifeboat_cli::render::table(&summary);
    assert!(table.contains("NO_MATCHING_BACKUPS"), "{table}");

    // The services kept serving: a valid request completes.
    client
        .submit(&request("valid-after", vec![ebs_set("s", "us-east-1", &[("app", "ok")], None, target("us-east-1b"))]))
        .await
        .unwrap();
    assert_eq!(verdict(&final_summary(&client, "valid-after").await), pb::Verdict::Completed);

    // The undecodable request is kept, with its reason, in the dead letters.
    let dead = dead_letters(&servers, &Queue::Requests).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].payload, [0xff, 0xff, 0xff, 0x01, 0x02]);
    assert!(dead[0].reason().unwrap().contains("UNDECODABLE_REQUEST"), "{:?}", dead[0].reason());
    assert_eq!(dead[0].header(subjects::HEADER_REQUEST_ID), Some("garbage-1"));
}

/// Work bytes that are not a RestoreTask (discovery's headers still name the task).
fn poison(request_id: &str, task_id: &str) -> OutgoingMessage {
    OutgoingMessage::new(subjects::work_subject("ebs"), b"\x0a\xff\xff".to_vec())
        .header(subjects::HEADER_REQUEST_ID, request_id)
        .header(subjects::HEADER_TASK_ID, task_id)
}

/// What a poison task leaves: a FAILED task with the reason, and its bytes in the dead letters.
async fn assert_poison_handled(servers: &Servers, request_id: &str, task_id: &str) -> pb::TaskState {
    let summary = final_summary(&servers.client().await, request_id).await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed, "{summary:#?}");
    assert_eq!(summary.tasks.len(), 1);
    let task = summary.tasks[0].clone();
    assert_eq!(task.task_id, task_id);
    assert_eq!(task.phase, pb::TaskPhase::Failed as i32);
    assert_eq!(task.reason_code, "POISON_MESSAGE");
    work_drained(servers, "ebs").await;
    let dead = dead_letters(servers, &Queue::Work("ebs".into())).await;
    assert_eq!(dead.len(), 1, "dead-lettered once: {dead:?}");
    assert_eq!(dead[0].payload, b"\x0a\xff\xff");
    let reason = dead[0].reason().expect("a reason");
    assert!(reason.starts_with("POISON_MESSAGE: not a lifeboat.v1.RestoreTask"), "{reason}");
    assert_eq!(dead[0].header(subjects::HEADER_DEADLETTER_SUBJECT), Some("lifeboat.work.ebs"));
    assert_eq!(dead[0].header(subjects::HEADER_TASK_ID), Some(task_id));
    task
}

async fn a_poison_task_is_dead_lettered_and_reported_failed(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let bus = servers.shared_bus().await;
    report_planned(bus.clone(), "poison-1", 1).await;
    bus.publish(poison("poison-1", "t-poison")).await.unwrap();
    let task = assert_poison_handled(&servers, "poison-1", "t-poison").await;
    assert_eq!(task.attempt, 1, "dead-lettered on its first delivery");
}

on_both_transports!(
    invalid_requests_are_rejected_by_field_and_the_next_request_still_runs,
    a_poison_task_is_dead_lettered_and_reported_failed,
);

/// Workers that take a poison task and die before settling it (the way a process crashes on
/// it) use up its receives; the last receive the SQS redrive policy allows still reaches a live
/// service, which dead-letters it with the reason and reports it FAILED. SQS only: the redrive
/// policy is SQS's (JetStream consumers here have no max_deliver; the loop's max_deliveries is
/// covered in resilience.rs). If dying workers took every receive, SQS would move the message
/// to the dead-letter queue itself, without a reason and without anyone reporting the task.
#[tokio::test]
async fn sqs_a_poison_task_received_by_dying_workers_is_dead_lettered_on_its_last_receive() {
    init_logging();
    let servers = Servers::start_with(Transport::Sqs).await;
    let work = Queue::Work("ebs".into());
    let max_receive_count = 3;
    let redrive = lifeboat_sqs::SqsConfig { max_receive_count, ..servers.sqs_config() };
    lifeboat_sqs::SqsBus::new(&servers.aws("us-east-1"), redrive).unwrap().ensure_queue(&work).await.unwrap();
    let bus = servers.shared_bus().await;
    report_planned(bus.clone(), "poison-2", 1).await;
    bus.publish(poison("poison-2", "t-dies")).await.unwrap();

    // Received and never settled: back after each one-second ack wait.
    let options = QueueOptions { ack_wait: Duration::from_secs(1), ..QueueOptions::default() };
    let mut dying = bus.consume(&work, &options).await.unwrap();
    for attempt in 1..max_receive_count {
        let delivery = tokio::time::timeout(Duration::from_secs(10), dying.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(delivery.attempt, attempt);
    }
    drop(dying);

    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let task = assert_poison_handled(&servers, "poison-2", "t-dies").await;
    assert_eq!(task.attempt, max_receive_count, "handled on the last receive SQS allows");
}
