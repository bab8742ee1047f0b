//! SQS's redrive policy and the consumer's own dead letters, apart: a message no handler
//! finished on (a worker crashing on every receive) is moved by SQS to the `-redrive` queue,
//! and the consumer reads it from there, reports its task FAILED, keeps it in the `-dlq` with
//! the reason and deletes it from `-redrive`; what the consumer dead-lettered itself stays in
//! the `-dlq` for operators, never read again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lifeboat_common::bus::{Bus, BusError, Delivery, OutgoingMessage, Queue, Result};
use lifeboat_common::consumer::{run_consumer, ConsumerOptions, Handler, Outcome, REDRIVEN};
use lifeboat_common::subjects;
use lifeboat_proto as pb;
use lifeboat_sqs::{QueueKey, SqsBus, SqsConfig};
use lifeboat_tests::*;
use tokio_util::sync::CancellationToken;

fn work() -> Queue {
    Queue::Work("ebs".into())
}

/// The tests' SQS bus with a redrive policy that moves a message after `max_receive_count`
/// receives, its queues brought up to date (the main queue's redrive policy set again).
async fn redriving_bus(servers: &Servers, max_receive_count: u32) -> SqsBus {
    redriving(servers, &work(), max_receive_count).await
}

async fn redriving(servers: &Servers, queue: &Queue, max_receive_count: u32) -> SqsBus {
    let config = SqsConfig { max_receive_count, ..servers.sqs_config() };
    let bus = SqsBus::new(&servers.aws("us-east-1"), config).expect("SQS bus");
    bus.ensure_queue(queue).await.expect("update the queue");
    bus
}

/// Receives the work queue's message without ever settling it, as a worker that crashes on
/// every receive would, until SQS's redrive policy moves it to the redrive queue. Returns how
/// many receives got it.
async fn crash_on_every_receive(sqs: &SqsBus, queue: &Queue) -> usize {
    let url = sqs.url(&QueueKey::main(queue)).await.unwrap();
    let mut receives = 0;
    for _ in 0..20 {
        if sqs.depth(&QueueKey::redrive(queue)).await.unwrap().total() > 0 {
            return receives;
        }
        let received = sqs
            .client()
            .receive_message()
            .queue_url(url.as_ref())
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        receives += received.messages().len();
    }
    panic!("SQS did not move the message to the redrive queue");
}

/// Waits until `key`'s queue holds nothing: the message deleted, none in flight.
async fn emptied(sqs: &SqsBus, key: &QueueKey) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sqs.depth(key).await.unwrap().total() > 0 {
        assert!(Instant::now() < deadline, "{} still holds {:?}", key.logical_name(), sqs.depth(key).await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn sqs_a_task_sqs_redrove_ends_failed_and_its_message_is_kept_in_the_dead_letters() {
    init_logging();
    let servers = Servers::start_with(Transport::Sqs).await;
    let sqs = redriving_bus(&servers, 2).await;
    let _aggregator = Running::start(&servers, ServiceSet::aggregator_only()).await;
    let bus = servers.shared_bus().await;
    report_planned(bus.clone(), "redrive-1", 1).await;
    let task = pb::RestoreTask { request_id: "redrive-1".into(), task_id: "t-redriven".into(), ..Default::default() };
    let published = OutgoingMessage::proto(subjects::work_subject("ebs"), &task)
        .dedupe_id("t-redriven")
        .header(subjects::HEADER_REQUEST_ID, "redrive-1")
        .header(subjects::HEADER_TASK_ID, "t-redriven");
    let payload = published.payload.clone();
    bus.publish(published).await.unwrap();
    assert_eq!(crash_on_every_receive(&sqs, &work()).await, 2, "moved after the two receives the policy allows");
    assert_eq!(sqs.depth(&QueueKey::dead_letter(&work())).await.unwrap().total(), 0, "SQS leaves the -dlq alone");

    let (shutdown, service) = ebs_service(&servers, Arc::new(sqs.clone()));
    let summary = final_summary(&servers.client().await, "redrive-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed, "a verdict, not the stall sweep's: {summary:#?}");
    let reported = &summary.tasks[0];
    assert_eq!((reported.task_id.as_str(), reported.reason_code.as_str()), ("t-redriven", REDRIVEN));
    assert_eq!(reported.phase, pb::TaskPhase::Failed as i32);
    let moved = "SQS moved it from lifeboat-work-ebs.fifo to lifeboat-work-ebs-redrive.fifo after 2 receives \
                 without a handler finishing";
    assert!(reported.message.contains(moved), "says what happened: {}", reported.message);

    emptied(&sqs, &QueueKey::redrive(&work())).await;
    let dead = dead_letters(&servers, &work()).await;
    assert_eq!(dead.len(), 1, "dead-lettered once: {dead:?}");
    assert_eq!(dead[0].payload, payload.to_vec());
    assert!(dead[0].reason().is_some_and(|reason| reason.starts_with(&format!("{REDRIVEN}: {moved}"))), "{dead:?}");
    assert_eq!(dead[0].header(subjects::HEADER_DEADLETTER_SUBJECT), Some("lifeboat.work.ebs"));
    assert_eq!(dead[0].header(subjects::HEADER_TASK_ID), Some("t-redriven"));
    assert_eq!(sqs.depth(&QueueKey::main(&work())).await.unwrap().total(), 0);
    shutdown.cancel();
    service.await.unwrap();
}

#[tokio::test]
async fn sqs_the_consumers_own_dead_letters_stay_in_the_dead_letter_queue_unread() {
    init_logging();
    let servers = Servers::start_with(Transport::Sqs).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let bus = servers.shared_bus().await;
    report_planned(bus.clone(), "kept-1", 1).await;
    let poison = OutgoingMessage::new(subjects::work_subject("ebs"), b"\x0a\xff\xff".to_vec())
        .dedupe_id("t-kept")
        .header(subjects::HEADER_REQUEST_ID, "kept-1")
        .header(subjects::HEADER_TASK_ID, "t-kept");
    bus.publish(poison).await.unwrap();
    let summary = final_summary(&servers.client().await, "kept-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed);
    assert_eq!(summary.tasks[0].reason_code, "POISON_MESSAGE");
    work_drained(&servers, "ebs").await;

    // The consumers keep receiving from their queues and redrive queues meanwhile: the dead
    // letter is never taken, not even for a moment.
    let sqs = servers.sqs();
    for _ in 0..15 {
        let held = sqs.depth(&QueueKey::dead_letter(&work())).await.unwrap();
        assert_eq!((held.visible, held.in_flight), (1, 0), "the dead letter waits untouched");
        assert_eq!(sqs.depth(&QueueKey::redrive(&work())).await.unwrap().total(), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dead = dead_letters(&servers, &work()).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason().is_some_and(|reason| reason.starts_with("POISON_MESSAGE: ")), "{dead:?}");
    assert_eq!(dead[0].header(subjects::HEADER_TASK_ID), Some("t-kept"));
}

/// Counts handler runs, and fails the first `failures` dead-letter reports.
struct ReportFails {
    handled: AtomicU32,
    failures: AtomicU32,
    reports: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Handler for ReportFails {
    async fn handle(&self, _delivery: &Delivery) -> Outcome {
        self.handled.fetch_add(1, Ordering::SeqCst);
        Outcome::Done
    }

    async fn dead_lettered(&self, _delivery: &Delivery, code: &str, reason: &str) -> Result<()> {
        self.reports.lock().unwrap().push((code.to_string(), reason.to_string()));
        match self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Err(BusError::Store("injected: the FAILED report cannot be stored".into())),
            Err(_) => Ok(()),
        }
    }
}

impl ReportFails {
    fn reports(&self) -> Vec<(String, String)> {
        self.reports.lock().unwrap().clone()
    }

    async fn wait_for_reports(&self, count: usize) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.reports().len() < count {
            assert!(Instant::now() < deadline, "expected {count} reports, got {:?}", self.reports());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.reports()
    }
}

#[tokio::test]
async fn sqs_a_redriven_message_whose_report_fails_stays_in_the_redrive_queue_until_reported() {
    init_logging();
    let servers = Servers::start_with(Transport::Sqs).await;
    let sqs = redriving_bus(&servers, 1).await;
    sqs.publish(OutgoingMessage::new(subjects::work_subject("ebs"), b"crashes".to_vec()).dedupe_id("t-crash"))
        .await
        .unwrap();
    assert_eq!(crash_on_every_receive(&sqs, &work()).await, 1);

    let handler =
        Arc::new(ReportFails { handled: AtomicU32::new(0), failures: AtomicU32::new(2), reports: Mutex::default() });
    let shutdown = CancellationToken::new();
    let run =
        run_consumer(Arc::new(sqs.clone()), work(), handler.clone(), ConsumerOptions::default(), shutdown.clone());
    let consumer = tokio::spawn(async move { run.await.expect("consumer") });

    handler.wait_for_reports(1).await;
    // The report was not stored: nothing was dead-lettered, the message is still in -redrive.
    assert_eq!(sqs.depth(&QueueKey::redrive(&work())).await.unwrap().total(), 1);
    assert_eq!(sqs.depth(&QueueKey::dead_letter(&work())).await.unwrap().total(), 0);

    let reports = handler.wait_for_reports(3).await;
    emptied(&sqs, &QueueKey::redrive(&work())).await;
    shutdown.cancel();
    consumer.await.unwrap();
    assert_eq!(handler.handled.load(Ordering::SeqCst), 0, "a redriven message is not handled again");
    assert_eq!(reports.len(), 3, "reported until the report got through, then no more: {reports:?}");
    assert!(
        reports.iter().all(|(code, reason)| code == REDRIVEN && reason.contains("after 1 receives")),
        "{reports:?}"
    );
    let dead = dead_letters(&servers, &work()).await;
    assert_eq!(dead.len(), 1, "dead-lettered once, after the report: {dead:?}");
    assert_eq!(dead[0].payload, b"crashes");
    assert!(dead[0].reason().is_some_and(|reason| reason.starts_with(REDRIVEN)), "{dead:?}");
}

#[tokio::test]
async fn sqs_a_request_sqs_redrove_ends_failed_saying_discovery_could_not_plan_it() {
    init_logging();
    let servers = Servers::start_with(Transport::Sqs).await;
    let sqs = redriving(&servers, &Queue::Requests, 2).await;
    let submitted = request("redrive-request", Vec::new());
    let message = OutgoingMessage::proto(subjects::RESTORE_REQUESTS, &submitted)
        .dedupe_id("redrive-request")
        .header(subjects::HEADER_REQUEST_ID, "redrive-request");
    sqs.publish(message).await.unwrap();
    assert_eq!(crash_on_every_receive(&sqs, &Queue::Requests).await, 2);

    let planning = ServiceSet { ebs: None, dynamodb: None, ec2: None, rds: None, ..ServiceSet::default() };
    let _services = Running::start(&servers, planning).await;
    let summary = final_summary(&servers.client().await, "redrive-request").await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed, "{summary:#?}");
    assert!(summary.stalled.contains("discovery could not plan the request"), "{}", summary.stalled);
    let moved = "SQS moved it from lifeboat-requests.fifo to lifeboat-requests-redrive.fifo after";
    assert!(summary.stalled.contains(moved), "says why: {}", summary.stalled);
    emptied(&sqs, &QueueKey::redrive(&Queue::Requests)).await;
    let dead = dead_letters(&servers, &Queue::Requests).await;
    assert_eq!(dead.len(), 1, "kept once for operators: {dead:?}");
    assert_eq!(dead[0].header(subjects::HEADER_REQUEST_ID), Some("redrive-request"));
}
