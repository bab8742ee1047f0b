//! The Lifeboat bus over Amazon SQS: [`SqsBus`] implements [`Bus`] with one queue per
//! [`Queue`], each with a dead-letter queue for the consumer loop's dead letters and a redrive
//! queue behind its redrive policy.
//!
//! # Queues
//!
//! | subject                              | queue (default prefix `lifeboat-`)          | type     |
//! |--------------------------------------|---------------------------------------------|----------|
//! | `lifeboat.restore.requests`          | `lifeboat-requests.fifo`                    | FIFO     |
//! | `lifeboat.work.<kind>`               | `lifeboat-work-<kind>.fifo`                 | FIFO     |
//! | `lifeboat.events.status.<request>`   | `lifeboat-status-events`                    | standard |
//! | `lifeboat.deadletter.<consumer>`     | that consumer's queue + `-dlq` (same type)  |          |
//! | none (the redrive policy's target)   | each queue + `-redrive` (same type)         |          |
//!
//! `.fifo` stays last (`lifeboat-work-ebs-redrive.fifo`), and `LIFEBOAT_SQS_QUEUE_<NAME>`
//! overrides any of them (`LIFEBOAT_SQS_QUEUE_WORK_EBS_REDRIVE`).
//!
//! Requests and tasks use FIFO queues for one reason: publish deduplication. A client that
//! resubmits a request, or discovery replanning after a crash, publishes with the same dedupe
//! id and SQS stores the message once within its five-minute window, as JetStream does with
//! `Nats-Msg-Id`. Ordering is not what they are for: every dedupe id (task id, request id) is
//! its own message group, so a task waiting hours for a snapshot copy holds back nothing else,
//! and the queues use the high-throughput FIFO mode (deduplication per group, throughput limit
//! per group). Status events are many and duplicates are harmless to the idempotent aggregator,
//! so they use a standard queue without FIFO limits. An override ending in `.fifo` makes any
//! queue FIFO, any other name makes it standard.
//!
//! # Messages
//!
//! The protobuf payload is base64 in the body (SQS bodies are XML text). The subject and the
//! headers are String message attributes; headers whose names SQS refuses, and headers beyond
//! the ten attributes SQS allows, travel together as JSON in one attribute and come back as
//! headers. A body that is not base64 (written by something else) is delivered as its raw
//! bytes, so that the handler can dead-letter it and report the task FAILED. The W3C trace
//! context is a header like any other (`traceparent`, `tracestate`: see
//! [`lifeboat_common::trace_context`]), so with the subject, the request and task ids it takes
//! four or five of the ten attributes.
//!
//! # Settling
//!
//! The consumer's `ack_wait` is the visibility timeout of every receive. `ack` and `terminate`
//! delete the message (acks that come together share a DeleteMessageBatch; each returns once
//! SQS confirmed its delete). `retry_after(delay)` and `in_progress` change the visibility
//! timeout (whole seconds, rounded up, at most 12 hours). `Delivery::attempt` is SQS's
//! ApproximateReceiveCount and `Delivery::published_at` its SentTimestamp.
//!
//! The consumer loop dead-letters a message itself, with a reason, once it has asked for
//! `max_deliveries` retries: it publishes it to `lifeboat.deadletter.<consumer>` (the `-dlq`
//! queue, kept for operators to inspect and `retry`), reports it (a task's FAILED event), and
//! only then deletes it. The redrive policy (`max_receive_count`, at most 1000 in SQS) is the
//! backstop for messages whose handler never returns, such as one that crashes the process on
//! every receive: SQS moves those to the `-redrive` queue, not to the `-dlq`. The source reads
//! the `-redrive` queue with its own long poll alongside the main queue's and hands each such
//! message to the loop marked [`lifeboat_common::bus::Delivery::redriven`]; the loop does not
//! run the handler again but dead-letters it as above, with code `REDRIVEN` and a reason naming
//! both queues and the receive count, and deletes it from `-redrive` once it is reported. A
//! report that cannot be stored leaves it in `-redrive`, visible again moments later. Keep
//! `max_receive_count` at or above the consumer's `max_deliveries` (1000 for the restore
//! services, which is also the SQS maximum and the default here): SQS moves a message on the
//! receive after the count is reached, so the loop still sees delivery number
//! `max_receive_count`.
//!
//! `notify` (live request summaries) does nothing: SQS has no fan-out, and followers read the
//! status API instead.
//!
//! A message received but never handed to a handler (buffered when its source is dropped)
//! is made visible again at once, but its receive still counts toward `max_receive_count`.
//! SQS limits one delivery's visibility to 12 hours: a handler busy longer than that in one
//! delivery cannot be extended further and its message is delivered again.
//!
//! # moto
//!
//! The end-to-end tests run this crate against moto 5.2.5, which implements everything used
//! here: FIFO queues with MessageDeduplicationId and message groups, ChangeMessageVisibility
//! (and the batch form), redrive policies with `maxReceiveCount` (moved on the receive after
//! the count is reached, as in AWS), ApproximateReceiveCount and SentTimestamp, String message
//! attributes, long polling, DeleteMessageBatch and SendMessageBatch. Where it differs from AWS
//! without mattering here: it deduplicates only against messages still in the queue (AWS also
//! remembers deleted ones for five minutes) and ignores the deduplication scope; it counts the
//! 12-hour visibility limit from the send instead of the receive; and its queue depths are
//! exact where AWS's lag.

mod cancel;
mod codec;
mod config;
mod names;
pub mod shared;
mod source;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use futures::StreamExt;
use lifeboat_common::bus::{Bus, BusError, OutgoingMessage, Queue, QueueOptions, Result, WorkSource};
use lifeboat_common::trace_context;
use tracing::{debug, info, trace, Instrument};

pub use codec::{fifo_id, HEADERS_ATTRIBUTE, SUBJECT_ATTRIBUTE};
pub use config::{SqsConfig, ENV_PREFIX, ENV_QUEUE_OVERRIDE_PREFIX, MAX_RECEIVE_COUNT_LIMIT};
pub use names::{route, QueueKey, QueueRole, QueueTarget};
pub use source::visibility_seconds;

use codec::EncodedMessage;
use source::{ReceiveSettings, RedriveSettings, SqsSource};

/// Entries per SendMessageBatch, DeleteMessageBatch and ChangeMessageVisibilityBatch.
pub(crate) const MAX_BATCH_ENTRIES: usize = 10;
/// Bytes per SendMessageBatch: 256 KiB, what every SQS region accepts.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// SendMessageBatch calls awaiting SQS at once in [`Bus::publish_all`].
const MAX_BATCHES_IN_FLIGHT: usize = 8;
/// Sends of batch entries SQS failed on its side (not the sender's fault) before giving up.
const BATCH_SEND_ATTEMPTS: u32 = 3;
/// Messages wait this long for a receiver; longer than any restore waits for AWS.
const QUEUE_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);
/// How long SQS reuses a data key before asking KMS again (a KMS call per queue per period).
const KMS_DATA_KEY_REUSE: Duration = Duration::from_secs(3600);
/// Dead letters wait for a human, and redriven messages for their queue's consumer: the 14 days
/// SQS allows. Longer than the source queue's retention, because a standard queue's messages
/// keep their original enqueue time when moved.
const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// Messages in a queue, as SQS approximates them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting for a receiver.
    pub visible: u64,
    /// Received and not deleted: being handled, or waiting out a `retry_after`.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

#[derive(Clone)]
pub struct SqsBus {
    client: Client,
    config: Arc<SqsConfig>,
    /// The state table's client, for cancellation marks (absent when built from an SQS client
    /// alone: such a bus cannot record cancellations).
    state: Option<aws_sdk_dynamodb::Client>,
    /// Task progress, quota buckets and slots in the state table (process memory without it).
    shared: Arc<dyn lifeboat_common::shared::SharedStore>,
    /// Queue URLs looked up so far; a queue's URL never changes while it exists.
    urls: Arc<Mutex<HashMap<QueueKey, Arc<str>>>>,
}

impl SqsBus {
    /// A bus in the account and region of `sdk_config`. Queue URLs are looked up on first use,
    /// so the queues may come from a deploy template or [`SqsBus::init_queues`].
    pub fn new(sdk_config: &SdkConfig, config: SqsConfig) -> Result<Self> {
        let instrumented = aws_sdk_sqs::config::Builder::from(sdk_config)
            .interceptor(lifeboat_common::metrics::AwsMetrics::new())
            .interceptor(lifeboat_common::aws_trace::AwsTracing::new())
            .retry_classifier(lifeboat_common::aws::ReusedConnection)
            .build();
        let state = aws_sdk_dynamodb::config::Builder::from(sdk_config)
            .interceptor(lifeboat_common::metrics::AwsMetrics::new())
            .interceptor(lifeboat_common::aws_trace::AwsTracing::new())
            .retry_classifier(lifeboat_common::aws::ReusedConnection)
            .build();
        let mut bus = Self::from_client(Client::from_conf(instrumented), config)?;
        let state = aws_sdk_dynamodb::Client::from_conf(state);
        bus.shared = Arc::new(shared::DynamoShared::new(state.clone(), bus.config.state_table.clone()));
        bus.state = Some(state);
        Ok(bus)
    }

    pub fn from_client(client: Client, config: SqsConfig) -> Result<Self> {
        config.validate()?;
        let shared = lifeboat_common::shared::MemoryStore::process();
        Ok(Self { client, config: Arc::new(config), state: None, shared, urls: Arc::default() })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &SqsConfig {
        &self.config
    }

    /// The SQS queue `key` stands for under this configuration.
    pub fn target(&self, key: &QueueKey) -> Result<QueueTarget> {
        names::target(&self.config, key)
    }

    /// Creates the requests, status-events and per-kind work queues, each with its dead-letter
    /// queue, its redrive queue and the redrive policy, and brings the attributes of existing
    /// ones up to date. Safe to run again. Queues the configuration gives by URL belong to
    /// whoever made them and are only looked at, not changed.
    pub async fn init_queues(&self, kinds: &[&str]) -> Result<()> {
        let queues = [Queue::Requests, Queue::StatusEvents]
            .into_iter()
            .chain(kinds.iter().map(|kind| Queue::Work(kind.to_string())));
        for queue in queues {
            self.ensure_queue(&queue).await?;
        }
        Ok(())
    }

    /// Creates (or updates) one queue, its dead-letter queue and its redrive queue. The main
    /// queue's redrive policy is set on every run, so a queue from the layout where it pointed
    /// at the `-dlq` is redirected to the `-redrive` queue.
    pub async fn ensure_queue(&self, queue: &Queue) -> Result<()> {
        let main_key = QueueKey::main(queue);
        let main = self.target(&main_key)?;
        let (dead_letter_key, redrive_key) = (QueueKey::dead_letter(queue), QueueKey::redrive(queue));
        let (dead_letter, redrive) = (self.target(&dead_letter_key)?, self.target(&redrive_key)?);
        for (role, side) in [("dead-letter", &dead_letter), ("redrive", &redrive)] {
            if side.fifo != main.fifo {
                return Err(BusError::Setup {
                    what: format!("SQS queue {}", main.name),
                    message: format!("its {role} queue {} must be of the same type (FIFO or standard)", side.name),
                });
            }
        }
        let encryption = match &self.config.kms_key_id {
            Some(key) => vec![
                (QueueAttributeName::KmsMasterKeyId, key.clone()),
                (QueueAttributeName::KmsDataKeyReusePeriodSeconds, KMS_DATA_KEY_REUSE.as_secs().to_string()),
            ],
            None => vec![(QueueAttributeName::SqsManagedSseEnabled, "true".to_string())],
        };
        let queue_attributes = |attributes: &mut Vec<(QueueAttributeName, String)>| {
            attributes.extend(encryption.iter().cloned());
            if main.fifo {
                attributes.push((QueueAttributeName::DeduplicationScope, "messageGroup".to_string()));
                attributes.push((QueueAttributeName::FifoThroughputLimit, "perMessageGroupId".to_string()));
            }
        };
        let visibility = visibility_seconds(self.config.visibility_timeout).to_string();
        // Redriven messages wait as long as dead letters: they are read only while the queue's
        // consumer runs, and an outage must not expire them before it is back.
        let mut side_attributes = vec![
            (QueueAttributeName::MessageRetentionPeriod, DEAD_LETTER_RETENTION.as_secs().to_string()),
            (QueueAttributeName::VisibilityTimeout, visibility.clone()),
        ];
        queue_attributes(&mut side_attributes);
        self.create_queue(&dead_letter_key, &dead_letter, side_attributes.clone()).await?;
        let redrive_url = self.create_queue(&redrive_key, &redrive, side_attributes).await?;
        let redrive_arn = self.queue_arn(&redrive_url).await?;
        let redrive_policy = serde_json::json!({
            "deadLetterTargetArn": redrive_arn,
            "maxReceiveCount": self.config.max_receive_count,
        });
        let mut attributes = vec![
            (QueueAttributeName::MessageRetentionPeriod, QUEUE_RETENTION.as_secs().to_string()),
            (QueueAttributeName::VisibilityTimeout, visibility),
            (QueueAttributeName::ReceiveMessageWaitTimeSeconds, self.wait_seconds().to_string()),
            (QueueAttributeName::RedrivePolicy, redrive_policy.to_string()),
        ];
        queue_attributes(&mut attributes);
        self.create_queue(&main_key, &main, attributes).await?;
        info!(
            queue = %main.name,
            dead_letter_queue = %dead_letter.name,
            redrive_queue = %redrive.name,
            "sqs queue ready"
        );
        Ok(())
    }

    /// CreateQueue with only the attribute that cannot change (FIFO or not), so it succeeds
    /// for an existing queue too, then SetQueueAttributes for the rest.
    async fn create_queue(
        &self,
        key: &QueueKey,
        target: &QueueTarget,
        attributes: Vec<(QueueAttributeName, String)>,
    ) -> Result<Arc<str>> {
        if let Some(url) = &target.url {
            return Ok(url.as_str().into());
        }
        let setup = |message: String| BusError::Setup { what: format!("SQS queue {}", target.name), message };
        let mut create = self.client.create_queue().queue_name(&target.name);
        if target.fifo {
            create = create.attributes(QueueAttributeName::FifoQueue, "true");
        }
        let created = create.send().await.map_err(|e| setup(describe(&e)))?;
        let url: Arc<str> =
            created.queue_url().ok_or_else(|| setup("CreateQueue returned no queue URL".to_string()))?.into();
        self.client
            .set_queue_attributes()
            .queue_url(url.as_ref())
            .set_attributes(Some(attributes.into_iter().collect()))
            .send()
            .await
            .map_err(|e| setup(describe(&e)))?;
        self.cache(key, url.clone());
        Ok(url)
    }

    async fn queue_arn(&self, url: &str) -> Result<String> {
        let setup = |message: String| BusError::Setup { what: format!("SQS queue {url}"), message };
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| setup(describe(&e)))?;
        output
            .attributes()
            .and_then(|attributes| attributes.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| setup("GetQueueAttributes returned no QueueArn".to_string()))
    }

    /// The receives after which SQS moves a message of the queue at `url`, from its redrive
    /// policy as deployed (a template may set another count than this process's settings).
    async fn deployed_max_receive_count(&self, url: &str) -> Option<u32> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .ok()?;
        let policy = output.attributes()?.get(&QueueAttributeName::RedrivePolicy)?;
        let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
        // A number or, as AWS itself writes it, a string.
        match &policy["maxReceiveCount"] {
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
            serde_json::Value::String(n) => n.parse().ok(),
            _ => None,
        }
    }

    fn cache(&self, key: &QueueKey, url: Arc<str>) {
        if let Ok(mut urls) = self.urls.lock() {
            urls.insert(key.clone(), url);
        }
    }

    /// The URL of `key`'s queue: from the configuration, the cache, or GetQueueUrl (creating the
    /// queue first if it is missing and [`SqsConfig::create_queues`] says so).
    pub async fn url(&self, key: &QueueKey) -> Result<Arc<str>> {
        if let Some(url) = self.urls.lock().ok().and_then(|urls| urls.get(key).cloned()) {
            return Ok(url);
        }
        let target = self.target(key)?;
        if let Some(url) = &target.url {
            let url: Arc<str> = url.as_str().into();
            self.cache(key, url.clone());
            return Ok(url);
        }
        let setup = |message: String| BusError::Setup { what: format!("SQS queue {}", target.name), message };
        match self.client.get_queue_url().queue_name(&target.name).send().await {
            Ok(output) => {
                let url: Arc<str> =
                    output.queue_url().ok_or_else(|| setup("GetQueueUrl returned no URL".to_string()))?.into();
                self.cache(key, url.clone());
                Ok(url)
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()) => {
                if !self.config.create_queues {
                    return Err(setup(format!(
                        "the queue does not exist in this account and region; create it with `SqsBus::init_queues` \
                         (lifeboat admin init) or the deploy template, or name it in queue_overrides ({})",
                        describe(&e)
                    )));
                }
                self.ensure_queue(&key.queue).await?;
                self.urls
                    .lock()
                    .ok()
                    .and_then(|urls| urls.get(key).cloned())
                    .ok_or_else(|| setup("created, but its URL was not recorded".to_string()))
            }
            Err(e) => Err(setup(describe(&e))),
        }
    }

    /// How many messages `key`'s queue holds, as SQS approximates it (about a minute behind on
    /// AWS; exact on moto).
    pub async fn depth(&self, key: &QueueKey) -> Result<QueueDepth> {
        let url = self.url(key).await?;
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url.as_ref())
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| BusError::Receive(format!("queue attributes of {url}: {}", describe(&e))))?;
        let count = |name: QueueAttributeName| {
            output.attributes().and_then(|attributes| attributes.get(&name)).and_then(|n| n.parse().ok()).unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    fn wait_seconds(&self) -> i32 {
        self.config.wait_time.as_secs().min(config::MAX_WAIT_TIME.as_secs()) as i32
    }

    /// The queue of every message and its encoding for that queue, failing on the first subject
    /// without a queue before anything is sent.
    async fn encode(&self, message: &OutgoingMessage) -> Result<(QueueKey, Arc<str>, EncodedMessage)> {
        let key = route(&message.subject)?;
        let target = self.target(&key)?;
        let url = self.url(&key).await.map_err(|e| publish_error(&message.subject, e))?;
        let encoded = codec::encode(message, target.fifo)?;
        Ok((key, url, encoded))
    }

    async fn send_one(&self, message: OutgoingMessage) -> Result<()> {
        let (_, url, encoded) = self.encode(&message).await?;
        let fifo = encoded.fifo.as_ref();
        self.client
            .send_message()
            .queue_url(url.as_ref())
            .message_body(encoded.body.clone())
            .set_message_attributes(Some(encoded.attributes.clone()))
            .set_message_group_id(fifo.map(|ids| ids.group_id.clone()))
            .set_message_deduplication_id(fifo.map(|ids| ids.deduplication_id.clone()))
            .send()
            .await
            .map_err(|e| BusError::Publish { subject: message.subject.clone(), message: describe(&e) })?;
        Ok(())
    }

    async fn send_all(&self, messages: Vec<OutgoingMessage>) -> Result<()> {
        let mut queues: Vec<(QueueKey, Arc<str>, Vec<EncodedMessage>)> = Vec::new();
        for message in &messages {
            let (key, url, encoded) = self.encode(message).await?;
            match queues.iter_mut().find(|(queued, _, _)| *queued == key) {
                Some((_, _, encoded_messages)) => encoded_messages.push(encoded),
                None => queues.push((key, url, vec![encoded])),
            }
        }
        let mut batches = Vec::new();
        for (_, url, encoded_messages) in queues {
            let mut batch: Vec<EncodedMessage> = Vec::new();
            let mut bytes = 0;
            for message in encoded_messages {
                if !batch.is_empty() && (batch.len() == MAX_BATCH_ENTRIES || bytes + message.size > MAX_BATCH_BYTES) {
                    batches.push((url.clone(), std::mem::take(&mut batch)));
                    bytes = 0;
                }
                bytes += message.size;
                batch.push(message);
            }
            if !batch.is_empty() {
                batches.push((url.clone(), batch));
            }
        }
        let mut sent = futures::stream::iter(batches)
            .map(|(url, batch)| self.send_batch(url, batch))
            .buffered(MAX_BATCHES_IN_FLIGHT);
        while let Some(result) = sent.next().await {
            result?;
        }
        Ok(())
    }

    /// Sends one batch, sending again the entries SQS failed on its side.
    async fn send_batch(&self, url: Arc<str>, mut batch: Vec<EncodedMessage>) -> Result<()> {
        for attempt in 1..=BATCH_SEND_ATTEMPTS {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(index, message)| {
                    let fifo = message.fifo.as_ref();
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(&message.body)
                        .set_message_attributes(Some(message.attributes.clone()))
                        .set_message_group_id(fifo.map(|ids| ids.group_id.clone()))
                        .set_message_deduplication_id(fifo.map(|ids| ids.deduplication_id.clone()))
                        .build()
                        .map_err(|e| BusError::Publish { subject: message.subject.clone(), message: e.to_string() })
                })
                .collect::<Result<Vec<_>>>()?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(url.as_ref())
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| BusError::Publish {
                    subject: batch.first().map(|m| m.subject.clone()).unwrap_or_default(),
                    message: describe(&e),
                })?;
            let mut retry = Vec::new();
            for failure in output.failed() {
                let Some(message) = failure.id().parse::<usize>().ok().and_then(|index| batch.get(index)) else {
                    continue;
                };
                let reason = format!("{}: {}", failure.code(), failure.message().unwrap_or_default());
                if failure.sender_fault() || attempt == BATCH_SEND_ATTEMPTS {
                    return Err(BusError::Publish { subject: message.subject.clone(), message: reason });
                }
                debug!(subject = %message.subject, %reason, "sqs failed a batch entry; sending it again");
                retry.push(message.clone());
            }
            if retry.is_empty() {
                return Ok(());
            }
            batch = retry;
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        Ok(())
    }
}

fn publish_error(subject: &str, error: BusError) -> BusError {
    match error {
        BusError::Publish { .. } => error,
        other => BusError::Publish { subject: subject.to_string(), message: other.to_string() },
    }
}

/// An SDK error as `Code: message`, keeping the AWS error code, or the whole chain when the
/// request never got an answer (connection, timeout).
pub(crate) fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.code() {
        Some(code) => format!("{code}: {}", error.message().unwrap_or("no message")),
        None => DisplayErrorContext(error).to_string(),
    }
}

#[async_trait]
impl Bus for SqsBus {
    async fn publish(&self, mut message: OutgoingMessage) -> Result<()> {
        let span = trace_context::publish_span(trace_context::SYSTEM_SQS, std::slice::from_mut(&mut message));
        let published = self.send_one(message).instrument(span.clone()).await;
        trace_context::record_result(&span, &published);
        published
    }

    /// Batches of up to ten messages per queue, several batches in flight. Within a queue the
    /// batches keep the order given; SQS itself orders only within a FIFO message group.
    async fn publish_all(&self, mut messages: Vec<OutgoingMessage>) -> Result<()> {
        let span = trace_context::publish_span(trace_context::SYSTEM_SQS, &mut messages);
        let published = self.send_all(messages).instrument(span.clone()).await;
        trace_context::record_result(&span, &published);
        published
    }

    /// Nothing to do: SQS has no fan-out to followers, who use the status API instead.
    async fn notify(&self, message: OutgoingMessage) -> Result<()> {
        trace!(subject = %message.subject, "notify is a no-op on sqs");
        Ok(())
    }

    fn messaging_system(&self) -> &'static str {
        trace_context::SYSTEM_SQS
    }

    fn shared(&self) -> Arc<dyn lifeboat_common::shared::SharedStore> {
        self.shared.clone()
    }

    async fn set_cancelled(&self, request_id: &str, cancelled: bool) -> Result<()> {
        let state = self.state.as_ref().ok_or_else(|| BusError::Store("no state table client".into()))?;
        cancel::set(state, &self.config.state_table, request_id, cancelled).await
    }

    async fn is_cancelled(&self, request_id: &str) -> Result<bool> {
        match &self.state {
            Some(state) => cancel::get(state, &self.config.state_table, request_id).await,
            None => Ok(false),
        }
    }

    /// Receives from the queue's SQS queue and from its redrive queue, whose messages come
    /// marked [`lifeboat_common::bus::Delivery::redriven`]. `max_ack_pending` has no SQS
    /// counterpart: SQS bounds in-flight messages per queue itself, and the consumer loop's
    /// concurrency bounds what one process takes.
    async fn consume(&self, queue: &Queue, options: &QueueOptions) -> Result<Box<dyn WorkSource>> {
        let (key, redrive_key) = (QueueKey::main(queue), QueueKey::redrive(queue));
        let queue_url = self.url(&key).await?;
        let redrive_url = self.url(&redrive_key).await?;
        let receives = self.deployed_max_receive_count(&queue_url).await.unwrap_or(self.config.max_receive_count);
        let reason = format!(
            "SQS moved it from {} to {} after {} receives without a handler finishing (a crash, or a visibility \
             timeout that kept running out)",
            self.target(&key)?.name,
            self.target(&redrive_key)?.name,
            receives
        );
        debug!(queue = %queue.consumer_name(), url = %queue_url, redrive_url = %redrive_url, "consuming sqs queue");
        Ok(Box::new(SqsSource::new(ReceiveSettings {
            client: self.client.clone(),
            key,
            queue_url,
            redrive: RedriveSettings { queue_url: redrive_url, reason },
            batch: self.config.receive_batch,
            wait_seconds: self.wait_seconds(),
            ack_wait: options.ack_wait,
        })))
    }
}
