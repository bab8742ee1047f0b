//! The SQS bus against moto: routing, bodies and attributes, batches, FIFO deduplication,
//! delayed retries, acks, the redrive policy and its redrive queue, and undecodable bodies,
//! checked on the queues.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use base64::Engine;
use lifeboat_common::bus::{Bus, BusError, Delivery, OutgoingMessage, Queue, QueueOptions, WorkSource};
use lifeboat_common::consumer::{run_consumer, ConsumerOptions, Handler, Outcome};
use lifeboat_common::subjects;
use lifeboat_sqs::{route, QueueDepth, QueueKey, QueueRole, SqsBus, SqsConfig};
use lifeboat_tests::*;
use tokio_util::sync::CancellationToken;

const KIND: &str = "ebs";

fn work() -> Queue {
    Queue::Work(KIND.to_string())
}

fn quick_config() -> SqsConfig {
    SqsConfig {
        max_receive_count: 3,
        wait_time: Duration::from_secs(1),
        visibility_timeout: Duration::from_secs(5),
        ..SqsConfig::default()
    }
}

async fn sqs_bus(servers: &Servers, config: SqsConfig) -> SqsBus {
    let bus = SqsBus::new(&servers.aws("us-east-1"), config).expect("valid sqs config");
    bus.init_queues(&[KIND]).await.expect("create the queues");
    bus
}

fn options(ack_wait: Duration) -> QueueOptions {
    QueueOptions { ack_wait, ..QueueOptions::default() }
}

async fn next_within(source: &mut Box<dyn WorkSource>, within: Duration) -> Option<Delivery> {
    match tokio::time::timeout(within, source.next()).await {
        Ok(Some(Ok(delivery))) => Some(delivery),
        Ok(Some(Err(e))) => panic!("receive failed: {e}"),
        Ok(None) => panic!("the source ended"),
        Err(_) => None,
    }
}

async fn depth(bus: &SqsBus, key: &QueueKey) -> QueueDepth {
    bus.depth(key).await.expect("queue depth")
}

/// Waits until `key`'s queue holds nothing at all: every message deleted, none in flight.
async fn drained(bus: &SqsBus, key: &QueueKey) {
    for _ in 0..100 {
        if depth(bus, key).await.total() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} still holds {:?} after 10s", key.logical_name(), depth(bus, key).await);
}

/// Receives what `key`'s queue holds, straight from SQS, without deleting it.
async fn receive_raw(bus: &SqsBus, key: &QueueKey) -> Vec<aws_sdk_sqs::types::Message> {
    let url = bus.url(key).await.expect("queue url");
    bus.client()
        .receive_message()
        .queue_url(url.as_ref())
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .visibility_timeout(30)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

fn attribute<'a>(message: &'a aws_sdk_sqs::types::Message, name: &str) -> Option<&'a str> {
    message.message_attributes().and_then(|attributes| attributes.get(name)).and_then(|value| value.string_value())
}

fn base64_decode(body: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(body).expect("base64 body")
}

/// Records every delivery and answers with `outcome(delivery)`.
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    dead_letters: Mutex<Vec<String>>,
    outcome: Box<dyn Fn(&Delivery) -> Outcome + Send + Sync>,
}

#[derive(Clone, Debug)]
struct Seen {
    subject: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
    attempt: u32,
    at: Instant,
}

impl Recorder {
    fn new(outcome: impl Fn(&Delivery) -> Outcome + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self { seen: Mutex::default(), dead_letters: Mutex::default(), outcome: Box::new(outcome) })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, deliveries: usize) -> Vec<Seen> {
        for _ in 0..150 {
            let seen = self.seen();
            if seen.len() >= deliveries {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {deliveries} deliveries within 15s, got {:?}", self.seen());
    }
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        self.seen.lock().unwrap().push(Seen {
            subject: delivery.subject.clone(),
            payload: delivery.payload.to_vec(),
            headers: delivery.headers.clone(),
            attempt: delivery.attempt,
            at: Instant::now(),
        });
        (self.outcome)(delivery)
    }

    async fn dead_lettered(&self, _delivery: &Delivery, code: &str, _reason: &str) -> lifeboat_common::bus::Result<()> {
        self.dead_letters.lock().unwrap().push(code.to_string());
        Ok(())
    }
}

/// Runs the shared consumer loop on `queue` until the returned token is cancelled.
fn consume(bus: &SqsBus, queue: Queue, handler: Arc<Recorder>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    // An ack wait far longer than any delay asked for: a message back early came back because of it.
    let options = ConsumerOptions {
        queue: options(Duration::from_secs(10)),
        concurrency: 8,
        max_deliveries: 10,
        ..Default::default()
    };
    let run = run_consumer(Arc::new(bus.clone()), queue, handler, options, shutdown.clone());
    let handle = tokio::spawn(async move { run.await.expect("consumer") });
    (shutdown, handle)
}

#[tokio::test]
async fn sqs_routes_subjects_and_names_queues() {
    let key = |subject: &str| route(subject).map(|key| (key.queue, key.role));
    assert_eq!(key(subjects::RESTORE_REQUESTS).unwrap(), (Queue::Requests, QueueRole::Main));
    assert_eq!(key("lifeboat.work.ebs").unwrap(), (work(), QueueRole::Main));
    assert_eq!(key("lifeboat.events.status.req.with.dots").unwrap(), (Queue::StatusEvents, QueueRole::Main));
    assert_eq!(key("lifeboat.deadletter.work-ebs").unwrap(), (work(), QueueRole::DeadLetter));
    assert_eq!(key("lifeboat.deadletter.discovery").unwrap(), (Queue::Requests, QueueRole::DeadLetter));
    assert_eq!(key("lifeboat.deadletter.status-aggregator").unwrap(), (Queue::StatusEvents, QueueRole::DeadLetter));
    for unknown in
        ["lifeboat.events.summary.r1", "lifeboat.work", "lifeboat.events.status", "other", "lifeboat.deadletter.x"]
    {
        assert!(matches!(route(unknown), Err(BusError::Publish { .. })), "{unknown} should have no queue");
    }

    let bus = SqsBus::from_client(
        aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::Config::builder().behavior_version_latest().build()),
        SqsConfig::from_vars([
            ("LIFEBOAT_SQS_PREFIX".to_string(), "prod-".to_string()),
            ("LIFEBOAT_SQS_MAX_RECEIVE_COUNT".to_string(), "50".to_string()),
            ("LIFEBOAT_SQS_WAIT_SECONDS".to_string(), "2".to_string()),
            ("LIFEBOAT_SQS_QUEUE_WORK_EBS_DLQ".to_string(), "ebs-dead.fifo".to_string()),
            ("LIFEBOAT_SQS_QUEUE_WORK_EBS_REDRIVE".to_string(), "ebs-moved.fifo".to_string()),
            (
                "LIFEBOAT_SQS_QUEUE_STATUS_EVENTS".to_string(),
                "https://sqs.eu-west-1.amazonaws.com/123456789012/events".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ])
        .expect("config from variables"),
    )
    .expect("bus");
    assert_eq!(bus.config().max_receive_count, 50);
    assert_eq!(bus.config().wait_time, Duration::from_secs(2));
    let name = |key: QueueKey| {
        let target = bus.target(&key).expect("queue target");
        (target.name, target.fifo, target.url.is_some())
    };
    assert_eq!(name(QueueKey::main(&Queue::Requests)), ("prod-requests.fifo".into(), true, false));
    assert_eq!(name(QueueKey::dead_letter(&Queue::Requests)), ("prod-requests-dlq.fifo".into(), true, false));
    assert_eq!(name(QueueKey::main(&work())), ("prod-work-ebs.fifo".into(), true, false));
    assert_eq!(name(QueueKey::dead_letter(&work())), ("ebs-dead.fifo".into(), true, false));
    assert_eq!(name(QueueKey::main(&Queue::StatusEvents)), ("events".into(), false, true));
    assert_eq!(name(QueueKey::dead_letter(&Queue::StatusEvents)), ("prod-status-events-dlq".into(), false, false));
    assert_eq!(name(QueueKey::redrive(&Queue::Requests)), ("prod-requests-redrive.fifo".into(), true, false));
    assert_eq!(name(QueueKey::redrive(&work())), ("ebs-moved.fifo".into(), true, false));
    assert_eq!(name(QueueKey::redrive(&Queue::StatusEvents)), ("prod-status-events-redrive".into(), false, false));
    let long_kind = Queue::Work("k".repeat(80 - "prod-work--redrive.fifo".len()));
    assert!(bus.target(&QueueKey::main(&long_kind)).is_ok() && bus.target(&QueueKey::redrive(&long_kind)).is_ok());
    let too_long = Queue::Work("k".repeat(81 - "prod-work--redrive.fifo".len()));
    assert!(bus.target(&QueueKey::main(&too_long)).is_ok(), "the main queue's name still fits");
    assert!(
        matches!(bus.target(&QueueKey::redrive(&too_long)), Err(BusError::Setup { what, .. }) if what.ends_with("-redrive")),
        "a redrive queue name beyond 80 characters is refused, naming the queue"
    );
    assert!(bus.target(&QueueKey::main(&Queue::Work("bad kind".into()))).is_err());

    for (name, value) in [("LIFEBOAT_SQS_MAX_RECEIVE_COUNT", "1001"), ("LIFEBOAT_SQS_WAIT_SECONDS", "soon")] {
        let refused = SqsConfig::from_vars([(name.to_string(), value.to_string())]);
        assert!(matches!(refused, Err(BusError::Setup { .. })), "{name}={value} should be refused");
    }
    let long_id = "request 1/".repeat(20);
    assert_eq!(lifeboat_sqs::fifo_id("task-1"), "task-1");
    assert_eq!(lifeboat_sqs::fifo_id(&long_id).len(), 64);
    assert_eq!(lifeboat_sqs::fifo_id(&long_id), lifeboat_sqs::fifo_id(&long_id));
}

#[tokio::test]
async fn sqs_round_trip_keeps_subject_headers_and_attempt() {
    init_logging();
    let servers = Servers::start().await;
    let bus = sqs_bus(&servers, quick_config()).await;
    let before = SystemTime::now() - Duration::from_secs(2);

    bus.publish(
        OutgoingMessage::new(subjects::work_subject(KIND), b"task bytes".to_vec())
            .dedupe_id("t-1")
            .header(subjects::HEADER_REQUEST_ID, "r-1")
            .header(subjects::HEADER_TASK_ID, "t-1"),
    )
    .await
    .expect("publish a task");
    bus.publish(OutgoingMessage::new(subjects::status_subject("r.1"), b"event".to_vec()).dedupe_id("e-1"))
        .await
        .expect("publish an event");
    bus.publish(OutgoingMessage::new(subjects::RESTORE_REQUESTS, b"request".to_vec()).dedupe_id("r-1"))
        .await
        .expect("publish a request");
    assert_eq!(depth(&bus, &QueueKey::main(&work())).await, QueueDepth { visible: 1, in_flight: 0, delayed: 0 });

    let mut source = bus.consume(&work(), &options(Duration::from_secs(10))).await.expect("consume work");
    let delivery = next_within(&mut source, Duration::from_secs(5)).await.expect("the task");
    assert_eq!(delivery.subject, "lifeboat.work.ebs");
    assert_eq!(delivery.payload.as_ref(), b"task bytes");
    let expected: BTreeMap<String, String> = [(subjects::HEADER_REQUEST_ID, "r-1"), (subjects::HEADER_TASK_ID, "t-1")]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    assert_eq!(delivery.headers, expected, "headers come back without the internal subject attribute");
    assert_eq!(delivery.attempt, 1);
    let published_at = delivery.published_at.expect("SentTimestamp");
    assert!(published_at >= before && published_at <= SystemTime::now() + Duration::from_secs(2));
    // Received and not settled: in flight for the ack wait.
    assert_eq!(depth(&bus, &QueueKey::main(&work())).await, QueueDepth { visible: 0, in_flight: 1, delayed: 0 });

    let mut events = bus.consume(&Queue::StatusEvents, &options(Duration::from_secs(10))).await.expect("consume");
    let event = next_within(&mut events, Duration::from_secs(5)).await.expect("the event");
    assert_eq!((event.subject.as_str(), event.payload.as_ref()), ("lifeboat.events.status.r.1", b"event".as_ref()));
    let mut requests = bus.consume(&Queue::Requests, &options(Duration::from_secs(10))).await.expect("consume");
    let request = next_within(&mut requests, Duration::from_secs(5)).await.expect("the request");
    assert_eq!((request.subject.as_str(), request.payload.as_ref()), (subjects::RESTORE_REQUESTS, b"request".as_ref()));
}

#[tokio::test]
async fn sqs_headers_beyond_the_attribute_limit_and_empty_payloads_survive() {
    init_logging();
    let servers = Servers::start().await;
    let bus = sqs_bus(&servers, quick_config()).await;
    let mut message = OutgoingMessage::new(subjects::work_subject(KIND), Vec::new()).dedupe_id("t-headers");
    let mut expected = BTreeMap::new();
    let odd = [("has space", "v"), ("AWS.reserved", "v"), ("empty", ""), ("lifeboat.subject", "not the subject")];
    let regular = (0..12).map(|i| (format!("Header-{i:02}"), format!("value {i} é ✓")));
    for (name, value) in odd.iter().map(|(n, v)| (n.to_string(), v.to_string())).chain(regular) {
        message = message.header(name.clone(), value.clone());
        expected.insert(name, value);
    }
    bus.publish(message).await.expect("publish with 16 headers");

    let sent = receive_raw(&bus, &QueueKey::main(&work())).await;
    assert_eq!(sent.len(), 1);
    assert!(sent[0].message_attributes().map_or(0, |a| a.len()) <= 10, "SQS allows ten attributes");
    assert_eq!(sent[0].body(), Some("="), "an empty payload still has a body");
    let url = bus.url(&QueueKey::main(&work())).await.unwrap();
    let handle = sent[0].receipt_handle().unwrap();
    bus.client()
        .change_message_visibility()
        .queue_url(url.as_ref())
        .receipt_handle(handle)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();

    let mut source = bus.consume(&work(), &options(Duration::from_secs(10))).await.expect("consume");
    let delivery = next_within(&mut source, Duration::from_secs(5)).await.expect("the message");
    assert_eq!(delivery.subject, "lifeboat.work.ebs");
    assert!(delivery.payload.is_empty());
    assert_eq!(delivery.headers, expected);
    assert_eq!(delivery.attempt, 2, "received once raw, once by the source");
}

#[tokio::test]
async fn sqs_publish_all_stores_every_message_once() {
    init_logging();
    let servers = Servers::start().await;
    let bus = sqs_bus(&servers, quick_config()).await;
    let mut messages = Vec::new();
    for i in 0..50 {
        messages.push(
            OutgoingMessage::new(subjects::work_subject(KIND), format!("task-{i:02}").into_bytes())
                .dedupe_id(format!("t-{i:02}"))
                .header(subjects::HEADER_TASK_ID, format!("t-{i:02}")),
        );
        if i % 10 == 0 {
            messages.push(OutgoingMessage::new(subjects::status_subject("r-all"), format!("event-{i}").into_bytes()));
        }
    }
    bus.publish_all(messages).await.expect("publish all");
    assert_eq!(depth(&bus, &QueueKey::main(&work())).await.visible, 50);
    assert_eq!(depth(&bus, &QueueKey::main(&Queue::StatusEvents)).await.visible, 5);

    let recorder = Recorder::new(|_| Outcome::Done);
    let (shutdown, consumer) = consume(&bus, work(), recorder.clone());
    recorder.wait_for(50).await;
    drained(&bus, &QueueKey::main(&work())).await;
    // Give a redelivery the time to show up if an ack had been lost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    consumer.await.unwrap();
    let seen = recorder.seen();
    assert_eq!(seen.len(), 50, "each message delivered exactly once");
    let payloads: BTreeSet<Vec<u8>> = seen.iter().map(|s| s.payload.clone()).collect();
    let expected: BTreeSet<Vec<u8>> = (0..50).map(|i| format!("task-{i:02}").into_bytes()).collect();
    assert_eq!(payloads, expected);
    assert!(seen.iter().all(|s| s.attempt == 1 && s.headers.contains_key(subjects::HEADER_TASK_ID)));
    assert_eq!(depth(&bus, &QueueKey::dead_letter(&work())).await.total(), 0);
}

#[tokio::test]
async fn sqs_deduplicates_requests_and_work_but_not_status_events() {
    init_logging();
    let servers = Servers::start().await;
    let bus = sqs_bus(&servers, quick_config()).await;
    let task = |id: &str, body: &str| {
        OutgoingMessage::new(subjects::work_subject(KIND), body.as_bytes().to_vec()).dedupe_id(id.to_string())
    };
    bus.publish(task("t-1", "first")).await.unwrap();
    bus.publish(task("t-1", "second copy")).await.unwrap();
    bus.publish_all(vec![task("t-2", "two"), task("t-2", "two again"), task("t-3", "three")]).await.unwrap();
    // Longer than SQS allows and with spaces: hashed, and the same id still deduplicates.
    let long_id = "request 7/set 1/".repeat(12);
    bus.publish(task(&long_id, "long")).await.unwrap();
    bus.publish(task(&long_id, "long again")).await.unwrap();
    assert_eq!(depth(&bus, &QueueKey::main(&work())).await.visible, 4);

    let request = || OutgoingMessage::new(subjects::RESTORE_REQUESTS, b"request".to_vec()).dedupe_id("r-9");
    bus.publish(request()).await.unwrap();
    bus.publish(request()).await.unwrap();
    assert_eq!(depth(&bus, &QueueKey::main(&Queue::Requests)).await.visible, 1);

    // Status events go to a standard queue: duplicates are stored, the aggregator is idempotent.
    let event = || OutgoingMessage::new(subjects::status_subject("r-9"), b"event".to_vec()).dedupe_id("e-1");
    bus.publish(event()).await.unwrap();
    bus.publish(event()).await.unwrap();
    assert_eq!(depth(&bus, &QueueKey::main(&Queue::StatusEvents)).await.visible, 2);

    let recorder = Recorder::new(|_| Outcome::Done);
    let (shutdown, consumer) = consume(&bus, work(), recorder.clone());
    recorder.wait_for(4).await;
    drained(&bus, &QueueKey::main(&work())).await;
    shutdown.cancel();
    consumer.await.unwrap();
    let payloads: BTreeSet<Vec<u8>> = recorder.seen().iter().map(|s| s.payload.clone()).collect();
    let expected: BTreeSet<Vec<u8>> = ["first", "two", "three", "long"].iter().map(|p| p.as_bytes().to_vec()).collect();
    assert_eq!(payloads, expected, "the first of each dedupe id is kept");
}

#[tokio::test]
async fn sqs_retry_after_redelivers_later_and_ack_deletes() {
    init_logging();
    let servers = Servers::start().await;
    let bus = sqs_bus(&servers, quick_config()).await;
    bus.publish(OutgoingMessage::new(subjects::work_subject(KIND), b"slow".to_vec()).dedupe_id("t-slow"))
        .await
        .unwrap();

    let recorder = Recorder::new(|delivery| {
        if delivery.attempt == 1 {
            Outcome::RetryAfter(Duration::from_millis(1200))
        } else {
            Outcome::Done
        }
    });
    let (shutdown, consumer) = consume(&bus, work(), recorder.clone());
    let seen = recorder.wait_for(1).await;
    // Waiting out its delay: in flight, not visible, not gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(depth(&bus, &QueueKey::main(&work())).await, QueueDepth { visible: 0, in_flight: 1, delayed: 0 });
    let seen = if seen.len() < 2 { recorder.wait_for(2).await } else { seen };
    drained(&bus, &QueueKey::main(&work())).await;
    shutdown.cancel();
    consumer.await.unwrap();

    assert_eq!(seen.iter().map(|s| s.attempt).collect::<Vec<_>>(), vec![1, 2]);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(1900), "1.2 s rounds up to 2 s of invisibility, came back after {gap:?}");
    assert!(gap < Duration::from_millis(4500), "came back only after {gap:?}, not after the delay asked for");
    assert_eq!(recorder.seen().len(), 2, "acknowledged: no third delivery");
    assert_eq!(depth(&bus, &QueueKey::dead_letter(&work())).await.total(), 0);
}

/// A handler that never returns uses up the receives; SQS then moves the message to the
/// `-redrive` queue (not the `-dlq`), and the same source delivers it from there marked
/// redriven, with the reason the consumer loop dead-letters it with.
#[tokio::test]
async fn sqs_redrive_moves_a_message_never_settled_to_the_redrive_queue_and_delivers_it_marked() {
    init_logging();
    let servers = Servers::start().await;
    let bus = sqs_bus(&servers, SqsConfig { max_receive_count: 2, ..quick_config() }).await;
    bus.publish(
        OutgoingMessage::new(subjects::work_subject(KIND), b"poison".to_vec())
            .dedupe_id("t-poison")
            .header(subjects::HEADER_TASK_ID, "t-poison"),
    )
    .await
    .unwrap();

    // A handler that never returns: the message comes back after each ack wait.
    let mut source = bus.consume(&work(), &options(Duration::from_secs(1))).await.expect("consume");
    let first = next_within(&mut source, Duration::from_secs(5)).await.expect("first delivery");
    assert_eq!((first.attempt, first.redriven.is_some()), (1, false));
    let second = next_within(&mut source, Duration::from_secs(5)).await.expect("second delivery");
    assert_eq!((second.attempt, second.redriven.is_some()), (2, false));
    let moved = next_within(&mut source, Duration::from_secs(8)).await.expect("the redriven delivery");
    assert_eq!(moved.payload.as_ref(), b"poison");
    assert_eq!(moved.subject, "lifeboat.work.ebs", "the subject it was published with");
    assert_eq!(moved.header(subjects::HEADER_TASK_ID), Some("t-poison"));
    let reason = moved.redriven.as_deref().expect("marked redriven");
    assert!(
        reason.contains("lifeboat-work-ebs.fifo to lifeboat-work-ebs-redrive.fifo after 2 receives"),
        "names both queues and the receive count: {reason}"
    );
    assert_eq!(depth(&bus, &QueueKey::main(&work())).await.total(), 0);
    assert_eq!(depth(&bus, &QueueKey::redrive(&work())).await.in_flight, 1, "received from the redrive queue");
    assert_eq!(depth(&bus, &QueueKey::dead_letter(&work())).await.total(), 0, "the -dlq is the consumer's alone");
    drop((moved, source));

    // Dropped unsettled: handed back to the redrive queue at once, as it was.
    for _ in 0..50 {
        if depth(&bus, &QueueKey::redrive(&work())).await.visible == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = receive_raw(&bus, &QueueKey::redrive(&work())).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(base64_decode(kept[0].body().unwrap()), b"poison");
    assert_eq!(attribute(&kept[0], lifeboat_sqs::SUBJECT_ATTRIBUTE), Some("lifeboat.work.ebs"));
}

#[tokio::test]
async fn sqs_delivers_an_undecodable_body_raw_so_it_can_be_dead_lettered() {
    init_logging();
    let servers = Servers::start().await;
    let bus = sqs_bus(&servers, quick_config()).await;
    let raw = "this is {not} base64!";
    let url = bus.url(&QueueKey::main(&work())).await.unwrap();
    let string =
        |value: &str| MessageAttributeValue::builder().data_type("String").string_value(value).build().unwrap();
    // Written by something other than Lifeboat: no subject attribute, a body that is not base64.
    bus.client()
        .send_message()
        .queue_url(url.as_ref())
        .message_body(raw)
        .message_attributes(subjects::HEADER_TASK_ID, string("t-raw"))
        .message_group_id("t-raw")
        .message_deduplication_id("t-raw")
        .send()
        .await
        .expect("send a raw message");

    let recorder = Recorder::new(|_| Outcome::DeadLetter { code: "UNDECODABLE".into(), reason: "not a task".into() });
    let (shutdown, consumer) = consume(&bus, work(), recorder.clone());
    let seen = recorder.wait_for(1).await;
    drained(&bus, &QueueKey::main(&work())).await;
    shutdown.cancel();
    consumer.await.unwrap();

    assert_eq!(seen[0].payload, raw.as_bytes());
    assert_eq!(seen[0].subject, "lifeboat.work.ebs", "the queue's subject when the sender gave none");
    assert_eq!(seen[0].headers.get(subjects::HEADER_TASK_ID).map(String::as_str), Some("t-raw"));
    assert_eq!(*recorder.dead_letters.lock().unwrap(), vec!["UNDECODABLE".to_string()]);
    let dead = receive_raw(&bus, &QueueKey::dead_letter(&work())).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(base64_decode(dead[0].body().unwrap()), raw.as_bytes());
    assert_eq!(attribute(&dead[0], lifeboat_sqs::SUBJECT_ATTRIBUTE), Some("lifeboat.deadletter.work-ebs"));
    assert_eq!(attribute(&dead[0], subjects::HEADER_DEADLETTER_REASON), Some("UNDECODABLE: not a task"));
    assert_eq!(attribute(&dead[0], subjects::HEADER_DEADLETTER_SUBJECT), Some("lifeboat.work.ebs"));
    assert_eq!(attribute(&dead[0], subjects::HEADER_TASK_ID), Some("t-raw"));
}

#[tokio::test]
async fn sqs_refuses_unknown_subjects_ignores_notify_and_finds_missing_queues() {
    init_logging();
    let servers = Servers::start().await;
    let bus = SqsBus::new(&servers.aws("us-east-1"), quick_config()).unwrap();
    let missing = bus.consume(&work(), &QueueOptions::default()).await.err().expect("no queue yet");
    assert!(matches!(&missing, BusError::Setup { message, .. } if message.contains("init_queues")), "{missing}");
    let unqueued = bus.publish(OutgoingMessage::new(subjects::work_subject(KIND), b"x".to_vec())).await;
    assert!(matches!(unqueued, Err(BusError::Publish { .. })));

    bus.init_queues(&[KIND]).await.unwrap();
    // Idempotent, and it brings the redrive policy up to date.
    let bus = sqs_bus(&servers, SqsConfig { max_receive_count: 7, ..quick_config() }).await;
    let url = bus.url(&QueueKey::main(&work())).await.unwrap();
    let attributes = bus
        .client()
        .get_queue_attributes()
        .queue_url(url.as_ref())
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attributes = attributes.attributes().unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(attributes.get(&QueueAttributeName::RedrivePolicy).unwrap()).unwrap();
    assert_eq!(redrive["maxReceiveCount"], 7);
    assert!(redrive["deadLetterTargetArn"].as_str().unwrap().ends_with(":lifeboat-work-ebs-redrive.fifo"));
    assert_eq!(attributes.get(&QueueAttributeName::FifoQueue).map(String::as_str), Some("true"));

    // A queue of the layout where SQS redrove to the -dlq is redirected to the -redrive queue.
    let dead_letter_url = bus.url(&QueueKey::dead_letter(&work())).await.unwrap();
    let dead_letter_arn = bus
        .client()
        .get_queue_attributes()
        .queue_url(dead_letter_url.as_ref())
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|attributes| attributes.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap();
    let old_policy = serde_json::json!({ "deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": 7 });
    bus.client()
        .set_queue_attributes()
        .queue_url(url.as_ref())
        .attributes(QueueAttributeName::RedrivePolicy, old_policy.to_string())
        .send()
        .await
        .unwrap();
    bus.ensure_queue(&work()).await.unwrap();
    let attributes = bus
        .client()
        .get_queue_attributes()
        .queue_url(url.as_ref())
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(attributes.attributes().unwrap().get(&QueueAttributeName::RedrivePolicy).unwrap())
            .unwrap();
    assert!(redrive["deadLetterTargetArn"].as_str().unwrap().ends_with(":lifeboat-work-ebs-redrive.fifo"), "{redrive}");

    let unknown = bus.publish(OutgoingMessage::new("lifeboat.events.summary.r-1", b"x".to_vec())).await;
    assert!(matches!(&unknown, Err(BusError::Publish { subject, .. }) if subject == "lifeboat.events.summary.r-1"));
    let batch = vec![
        OutgoingMessage::new(subjects::work_subject(KIND), b"fine".to_vec()),
        OutgoingMessage::new("nowhere", b"x".to_vec()),
    ];
    assert!(matches!(bus.publish_all(batch).await, Err(BusError::Publish { .. })));
    assert_eq!(depth(&bus, &QueueKey::main(&work())).await.total(), 0, "nothing sent from a refused batch");
    bus.notify(OutgoingMessage::new(subjects::summary_subject("r-1"), b"summary".to_vec())).await.expect("no-op");

    // With create_queues, a service creates what it uses.
    let creating = SqsBus::new(&servers.aws("us-east-1"), SqsConfig { create_queues: true, ..quick_config() }).unwrap();
    creating.publish(OutgoingMessage::new(subjects::work_subject("rds"), b"task".to_vec())).await.expect("publish");
    let rds = Queue::Work("rds".into());
    assert_eq!(depth(&creating, &QueueKey::main(&rds)).await.visible, 1);
    assert_eq!(depth(&creating, &QueueKey::dead_letter(&rds)).await.total(), 0);
    assert_eq!(depth(&creating, &QueueKey::redrive(&rds)).await.total(), 0);
}

/// Queues hold restore targets and tags: every queue Lifeboat creates is encrypted, with
/// SQS-managed keys by default and with the configured KMS key when one is given.
#[tokio::test]
async fn every_queue_is_created_encrypted() {
    use aws_sdk_sqs::types::QueueAttributeName;

    let servers = Servers::start().await;
    let attributes = |bus: SqsBus, key: QueueKey| async move {
        let url = bus.url(&key).await.expect("queue url");
        let output = bus
            .client()
            .get_queue_attributes()
            .queue_url(url.as_ref())
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("queue attributes");
        output.attributes().cloned().unwrap_or_default()
    };
    let managed = sqs_bus(&servers, SqsConfig { queue_prefix: "sse-".into(), ..quick_config() }).await;
    let queues = [Queue::Requests, Queue::StatusEvents, work()];
    let keys =
        queues.iter().flat_map(|queue| [QueueKey::main(queue), QueueKey::dead_letter(queue), QueueKey::redrive(queue)]);
    for key in keys {
        let found = attributes(managed.clone(), key.clone()).await;
        assert_eq!(found.get(&QueueAttributeName::SqsManagedSseEnabled).map(String::as_str), Some("true"), "{key:?}");
    }
    let config = SqsConfig { queue_prefix: "kms-".into(), kms_key_id: Some("alias/lifeboat".into()), ..quick_config() };
    let with_key = sqs_bus(&servers, config).await;
    for key in [QueueKey::main(&Queue::StatusEvents), QueueKey::redrive(&work())] {
        let found = attributes(with_key.clone(), key.clone()).await;
        assert_eq!(
            found.get(&QueueAttributeName::KmsMasterKeyId).map(String::as_str),
            Some("alias/lifeboat"),
            "{key:?}"
        );
    }
}
