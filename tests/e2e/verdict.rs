//! A verdict is guaranteed: a FAILED report that could not be stored keeps its message, and a
//! hung handler is abandoned and its delivery retried.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lifeboat_common::bus::{Bus, BusError, Delivery, OutgoingMessage, Queue, QueueOptions, Result, WorkSource};
use lifeboat_common::consumer::{run_consumer, ConsumerOptions, Handler, Outcome};
use lifeboat_common::subjects;
use lifeboat_proto as pb;
use lifeboat_tests::*;
use tokio_util::sync::CancellationToken;

/// A bus whose first `failures` publishes of status events fail, as when the bus is briefly
/// unreachable right when a task is dead-lettered.
struct FlakyStatus {
    inner: Arc<dyn Bus>,
    failures: AtomicU32,
    failed: AtomicU32,
}

impl FlakyStatus {
    fn check(&self, subject: &str) -> Result<()> {
        let status = subject.starts_with(subjects::STATUS_PREFIX);
        if status && self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(BusError::Publish { subject: subject.into(), message: "injected failure".into() });
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for FlakyStatus {
    async fn publish(&self, message: OutgoingMessage) -> Result<()> {
        self.check(&message.subject)?;
        self.inner.publish(message).await
    }

    async fn publish_all(&self, messages: Vec<OutgoingMessage>) -> Result<()> {
        for message in &messages {
            self.check(&message.subject)?;
        }
        self.inner.publish_all(messages).await
    }

    async fn notify(&self, message: OutgoingMessage) -> Result<()> {
        self.inner.notify(message).await
    }

    async fn consume(&self, queue: &Queue, options: &QueueOptions) -> Result<Box<dyn WorkSource>> {
        self.inner.consume(queue, options).await
    }

    async fn is_cancelled(&self, request_id: &str) -> Result<bool> {
        self.inner.is_cancelled(request_id).await
    }

    fn shared(&self) -> Arc<dyn lifeboat_common::shared::SharedStore> {
        self.inner.shared()
    }
}

/// An undecodable task that still names its request and task, as discovery's headers do.
fn poison_task(request_id: &str, task_id: &str) -> OutgoingMessage {
    OutgoingMessage::new(subjects::work_subject("ebs"), b"\xff\xff not a task".to_vec())
        .dedupe_id(task_id)
        .header(subjects::HEADER_REQUEST_ID, request_id)
        .header(subjects::HEADER_TASK_ID, task_id)
}

async fn a_lost_failed_report_keeps_the_message_until_it_is_stored(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let _aggregator = Running::start(&servers, ServiceSet::aggregator_only()).await;
    let bus = servers.shared_bus().await;
    report_planned(bus.clone(), "lost-1", 1).await;
    let flaky = Arc::new(FlakyStatus { inner: bus.clone(), failures: AtomicU32::new(3), failed: AtomicU32::new(0) });
    let (shutdown, service) = ebs_service(&servers, flaky.clone());

    bus.publish(poison_task("lost-1", "t-lost")).await.unwrap();
    let summary = final_summary(&servers.client().await, "lost-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed);
    let task = &summary.tasks[0];
    assert_eq!((task.task_id.as_str(), task.reason_code.as_str()), ("t-lost", "POISON_MESSAGE"));
    assert_eq!(flaky.failed.load(Ordering::SeqCst), 3, "every injected failure was hit before the report got through");
    work_drained(&servers, "ebs").await;
    shutdown.cancel();
    service.await.unwrap();
}

/// Hangs on its first delivery, as a call to AWS that never answers; done on the next.
struct HangsOnce {
    attempts: Mutex<Vec<u32>>,
}

#[async_trait]
impl Handler for HangsOnce {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        self.attempts.lock().unwrap().push(delivery.attempt);
        if delivery.attempt == 1 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Outcome::Done
    }
}

async fn a_hung_handler_is_abandoned_and_its_delivery_retried(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let bus = servers.shared_bus().await;
    let queue = Queue::Work("ebs".into());
    let handler = Arc::new(HangsOnce { attempts: Mutex::new(Vec::new()) });
    let options = ConsumerOptions { handler_timeout: Duration::from_millis(500), ..ConsumerOptions::default() };
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(bus.clone(), queue, handler.clone(), options, shutdown.clone()));
    bus.publish(OutgoingMessage::new(subjects::work_subject("ebs"), b"hang".to_vec()).dedupe_id("hang")).await.unwrap();

    // Back long before the ack deadline (30 s) would have brought it back.
    let deadline = Instant::now() + Duration::from_secs(15);
    while handler.attempts.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "not retried: {:?}", handler.attempts.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    work_drained(&servers, "ebs").await;
    assert_eq!(*handler.attempts.lock().unwrap(), vec![1, 2]);
    shutdown.cancel();
    consumer.await.unwrap().unwrap();
}

on_both_transports!(
    a_lost_failed_report_keeps_the_message_until_it_is_stored,
    a_hung_handler_is_abandoned_and_its_delivery_retried
);
