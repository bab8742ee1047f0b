//! The transport contract every service is written against.
//!
//! Delivery is at least once: any message may arrive twice, late, or again after a crash, so
//! handlers must be idempotent. A message is acknowledged only after its effects are durable;
//! "check again later" is a delayed redelivery, never a sleep while holding the message.
//! JetStream implements it in [`crate::jetstream`], Amazon SQS in the `lifeboat-sqs` crate
//! (visibility timeout for the delay, a redrive policy for the dead letters).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::subjects;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to the bus at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cannot set up {what}: {message}")]
    Setup { what: String, message: String },
    #[error("publish to {subject} failed: {message}")]
    Publish { subject: String, message: String },
    #[error("receive failed: {0}")]
    Receive(String),
    #[error("acknowledgement failed: {0}")]
    Ack(String),
    #[error("state store: {0}")]
    Store(String),
    #[error("request to {subject} failed: {message}")]
    Request { subject: String, message: String },
}

impl BusError {
    /// The kind of failure, as a span's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            BusError::Connect { .. } => "connect",
            BusError::Setup { .. } => "setup",
            BusError::Publish { .. } => "publish",
            BusError::Receive(_) => "receive",
            BusError::Ack(_) => "ack",
            BusError::Store(_) => "store",
            BusError::Request { .. } => "request",
        }
    }
}

pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// A message to publish durably.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    pub subject: String,
    pub payload: Bytes,
    /// Publishes with the same id inside the dedupe window are stored once (`Nats-Msg-Id`).
    pub dedupe_id: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl OutgoingMessage {
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self { subject: subject.into(), payload: payload.into(), dedupe_id: None, headers: Vec::new() }
    }

    pub fn dedupe_id(mut self, id: impl Into<String>) -> Self {
        self.dedupe_id = Some(id.into());
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Encodes a protobuf message as the payload.
    pub fn proto(subject: impl Into<String>, message: &impl prost::Message) -> Self {
        Self::new(subject, message.encode_to_vec())
    }
}

/// The durable queues services consume from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    /// RestoreRequests, consumed by discovery.
    Requests,
    /// RestoreTasks of one kind (`ebs`, `rds`...), consumed by that resource service.
    Work(String),
    /// Every StatusEvent, consumed by the status aggregator.
    StatusEvents,
}

impl Queue {
    /// Durable consumer name, one per service.
    pub fn consumer_name(&self) -> String {
        match self {
            Queue::Requests => "discovery".to_string(),
            Queue::Work(kind) => format!("work-{kind}"),
            Queue::StatusEvents => "status-aggregator".to_string(),
        }
    }

    pub fn filter_subject(&self) -> String {
        match self {
            Queue::Requests => subjects::RESTORE_REQUESTS.to_string(),
            Queue::Work(kind) => subjects::work_subject(kind),
            Queue::StatusEvents => format!("{}.>", subjects::STATUS_PREFIX),
        }
    }

    /// The service consuming it, as the `lifeboat.service` attribute of its spans (one process
    /// may run every service, so the resource's `service.name` cannot tell them apart).
    pub fn service_name(&self) -> &str {
        match self {
            Queue::Requests => "discovery",
            Queue::Work(kind) => kind,
            Queue::StatusEvents => "aggregator",
        }
    }

    pub fn deadletter_subject(&self) -> String {
        format!("{}.{}", subjects::DEADLETTER_PREFIX, self.consumer_name())
    }
}

/// How a consumer of a queue behaves.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// Unacknowledged messages are redelivered after this long (a crashed worker's messages
    /// come back after it). Long handlers extend it with progress signals.
    pub ack_wait: Duration,
    /// Messages handed out but not yet acknowledged, across all replicas.
    pub max_ack_pending: i64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self { ack_wait: Duration::from_secs(30), max_ack_pending: 1000 }
    }
}

/// One received message and the means to settle it.
pub struct Delivery {
    pub subject: String,
    pub payload: Bytes,
    pub headers: BTreeMap<String, String>,
    /// 1 for the first delivery, then 2, 3...
    pub attempt: u32,
    /// When the bus stored the message (for queue lag), if the transport says.
    pub published_at: Option<std::time::SystemTime>,
    /// Why the transport itself moved the message aside, if it did: SQS's redrive policy after
    /// `maxReceiveCount` receives that no handler finished (a process crashing on it, or a
    /// visibility timeout that kept running out). The consumer loop dead-letters such a
    /// delivery with this reason instead of running the handler once more. JetStream never
    /// sets it.
    pub redriven: Option<String>,
    pub(crate) settle: Box<dyn Settle>,
}

impl Delivery {
    pub fn new(
        subject: String,
        payload: Bytes,
        headers: BTreeMap<String, String>,
        attempt: u32,
        settle: Box<dyn Settle>,
    ) -> Self {
        Self { subject, payload, headers, attempt, published_at: None, redriven: None, settle }
    }

    pub fn published_at(mut self, at: Option<std::time::SystemTime>) -> Self {
        self.published_at = at;
        self
    }

    pub fn redriven(mut self, reason: impl Into<String>) -> Self {
        self.redriven = Some(reason.into());
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Settling a delivery. Only the consumer loop calls these; handlers return an outcome.
#[async_trait]
pub trait Settle: Send + Sync {
    /// Done: never deliver again.
    async fn ack(&self) -> Result<()>;
    /// Deliver again after `delay` (JetStream `Nak(delay)`, SQS visibility change).
    async fn retry_after(&self, delay: Duration) -> Result<()>;
    /// Still working: extend the ack deadline.
    async fn in_progress(&self) -> Result<()>;
    /// Never deliver again without success (after it was dead-lettered).
    async fn terminate(&self) -> Result<()>;
}

/// A stream of deliveries from one durable queue.
#[async_trait]
pub trait WorkSource: Send {
    /// The next delivery; `None` when the source has ended.
    async fn next(&mut self) -> Option<Result<Delivery>>;
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes and returns once the bus has stored the message.
    async fn publish(&self, message: OutgoingMessage) -> Result<()>;

    /// Publishes many messages pipelined, returning once every one is stored. Faster than
    /// publishing one by one; order of storage follows the order given.
    async fn publish_all(&self, messages: Vec<OutgoingMessage>) -> Result<()>;

    /// Announces something to whoever follows live (request summaries). Not a work queue: a
    /// transport without fan-out (SQS) drops it, and followers use the status API instead.
    async fn notify(&self, message: OutgoingMessage) -> Result<()>;

    /// Opens (creating if needed) the durable consumer of `queue`.
    async fn consume(&self, queue: &Queue, options: &QueueOptions) -> Result<Box<dyn WorkSource>>;

    /// Marks a request cancelled (or, after a retry, no longer cancelled) where every service
    /// of every replica can see it: a JetStream KV bucket, or an item of the DynamoDB state
    /// table with SQS. The restore shell asks [`Bus::is_cancelled`] before it starts a task.
    async fn set_cancelled(&self, request_id: &str, cancelled: bool) -> Result<()> {
        let _ = (request_id, cancelled);
        Err(BusError::Store("this transport cannot record cancellations".into()))
    }

    /// Whether the request was cancelled. Transports that cannot record it say no.
    async fn is_cancelled(&self, request_id: &str) -> Result<bool> {
        let _ = request_id;
        Ok(false)
    }

    /// The store every replica shares (task progress, quota buckets, concurrency slots, plans).
    /// Transports without one get this process's memory, which holds only for one replica.
    fn shared(&self) -> std::sync::Arc<dyn crate::shared::SharedStore> {
        crate::shared::MemoryStore::process()
    }

    /// The OpenTelemetry `messaging.system` of this transport (`nats`, `aws_sqs`), on the spans
    /// of the consumer loop. Implementations publish through
    /// [`crate::trace_context::publish_span`] so that every message carries the trace context.
    fn messaging_system(&self) -> &'static str {
        "lifeboat"
    }
}
