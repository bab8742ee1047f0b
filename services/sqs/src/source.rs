//! Receiving from one SQS queue and its redrive queue: long-polled batches buffered for a
//! consumer loop that takes one delivery at a time, settled through the receipt handle of the
//! receive that delivered them (delete, or a change of visibility).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
};
use aws_sdk_sqs::Client;
use lifeboat_common::bus::{BusError, Delivery, Result, Settle, WorkSource};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::codec;
use crate::names::QueueKey;
use crate::{describe, MAX_BATCH_ENTRIES};

/// SQS keeps a message invisible for at most 12 hours.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// Whole seconds for SQS, rounded up (a retry is never earlier than asked) and capped at 12 h.
pub fn visibility_seconds(duration: Duration) -> i32 {
    let duration = duration.min(MAX_VISIBILITY);
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)) as i32
}

pub struct ReceiveSettings {
    pub client: Client,
    pub key: QueueKey,
    pub queue_url: Arc<str>,
    /// The target of the queue's redrive policy, received from alongside it.
    pub redrive: RedriveSettings,
    pub batch: i32,
    pub wait_seconds: i32,
    /// `QueueOptions::ack_wait`: the visibility timeout of every receive and every extension.
    pub ack_wait: Duration,
}

pub struct RedriveSettings {
    pub queue_url: Arc<str>,
    /// [`Delivery::redriven`] of every message received there: which queues, after how many
    /// receives.
    pub reason: String,
}

/// A received message not yet handed to the consumer loop.
struct Received {
    message: Message,
    at: Instant,
    /// From the redrive queue.
    redriven: bool,
}

/// A receive's messages, and when SQS returned them (when their visibility timeout started).
type Receive = JoinHandle<Result<(Instant, Vec<Message>)>>;

/// One of the two SQS queues a source receives from.
struct Inbox {
    url: Arc<str>,
    /// The receive under way, kept across calls: the consumer loop drops `next()` on shutdown,
    /// and the messages of a receive dropped half way would stay invisible until they time out.
    pending: Option<Receive>,
    deletes: mpsc::UnboundedSender<DeleteRequest>,
}

impl Inbox {
    fn new(client: &Client, url: Arc<str>) -> Self {
        let (deletes, requests) = mpsc::unbounded_channel();
        tokio::spawn(delete_batches(client.clone(), url.clone(), requests));
        Self { url, pending: None, deletes }
    }

    /// The receive under way, started if there is none.
    fn receiving(&mut self, settings: &Arc<ReceiveSettings>) -> &mut Receive {
        let url = &self.url;
        self.pending.get_or_insert_with(|| tokio::spawn(receive(settings.clone(), url.clone())))
    }
}

/// Receives from a queue and from its redrive queue. A message from the redrive queue is
/// delivered marked [`Delivery::redriven`], for the consumer loop to dead-letter with a FAILED
/// report; the consumer's own dead letters go to the `-dlq` queue, which is not read here.
pub struct SqsSource {
    settings: Arc<ReceiveSettings>,
    buffer: VecDeque<Received>,
    main: Inbox,
    redrive: Inbox,
}

impl SqsSource {
    pub fn new(settings: ReceiveSettings) -> Self {
        let main = Inbox::new(&settings.client, settings.queue_url.clone());
        let redrive = Inbox::new(&settings.client, settings.redrive.queue_url.clone());
        Self { settings: Arc::new(settings), buffer: VecDeque::new(), main, redrive }
    }

    fn inbox(&self, redriven: bool) -> &Inbox {
        if redriven {
            &self.redrive
        } else {
            &self.main
        }
    }

    fn delivery(&self, received: Received) -> Option<Delivery> {
        let message = received.message;
        let Some(receipt_handle) = message.receipt_handle().map(str::to_string) else {
            warn!(message_id = message.message_id(), "received a message without a receipt handle; skipping it");
            return None;
        };
        let decoded =
            codec::decode(message.body().unwrap_or_default(), message.message_attributes(), message.attributes());
        if decoded.raw_body {
            warn!(message_id = message.message_id(), "message body is not base64; delivering its raw bytes");
        }
        let subject = decoded.subject.unwrap_or_else(|| self.settings.key.default_subject());
        let inbox = self.inbox(received.redriven);
        let settle = SqsSettle {
            client: self.settings.client.clone(),
            queue_url: inbox.url.clone(),
            receipt_handle,
            ack_wait: self.settings.ack_wait,
            deletes: inbox.deletes.clone(),
        };
        let delivery = Delivery::new(subject, decoded.payload, decoded.headers, decoded.attempt, Box::new(settle))
            .published_at(decoded.published_at);
        Some(if received.redriven {
            warn!(message_id = message.message_id(), "sqs moved a message to the redrive queue; dead-lettering it");
            delivery.redriven(self.settings.redrive.reason.clone())
        } else {
            delivery
        })
    }
}

async fn receive(settings: Arc<ReceiveSettings>, queue_url: Arc<str>) -> Result<(Instant, Vec<Message>)> {
    let output = settings
        .client
        .receive_message()
        .queue_url(queue_url.as_ref())
        .max_number_of_messages(settings.batch)
        .wait_time_seconds(settings.wait_seconds)
        .visibility_timeout(visibility_seconds(settings.ack_wait).max(1))
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .map_err(|e| BusError::Receive(format!("{queue_url}: {}", describe(&e))))?;
    Ok((Instant::now(), output.messages.unwrap_or_default()))
}

#[async_trait]
impl WorkSource for SqsSource {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            if let Some(received) = self.buffer.pop_front() {
                // A message that waited for a free handler for half its deadline gets a fresh
                // one; if that fails its receipt is stale and SQS delivers it again anyway.
                if received.at.elapsed() >= self.settings.ack_wait / 2 {
                    let Some(handle) = received.message.receipt_handle() else { continue };
                    let (url, ack_wait) =
                        (&self.inbox(received.redriven).url, visibility_seconds(self.settings.ack_wait));
                    if let Err(e) = change_visibility(&self.settings.client, url, handle, ack_wait).await {
                        debug!(error = %e, "buffered message outlived its visibility timeout; leaving it to SQS");
                        continue;
                    }
                }
                match self.delivery(received) {
                    Some(delivery) => return Some(Ok(delivery)),
                    None => continue,
                }
            }
            // Both queues are long-polled at once: a redriven message is taken as soon as SQS
            // moves it, and the redrive queue costs a request per long poll when it is empty.
            // Whichever receive is still under way is kept for the next call, so a busy queue
            // cannot starve the other.
            let (main, redrive) = (self.main.receiving(&self.settings), self.redrive.receiving(&self.settings));
            let (redriven, received) = tokio::select! {
                received = main => (false, received),
                received = redrive => (true, received),
            };
            let inbox = if redriven { &mut self.redrive } else { &mut self.main };
            inbox.pending = None;
            match received {
                Ok(Ok((at, messages))) => {
                    self.buffer.extend(messages.into_iter().map(|message| Received { message, at, redriven }));
                }
                Ok(Err(e)) => return Some(Err(e)),
                Err(e) => return Some(Err(BusError::Receive(format!("receive task failed: {e}")))),
            }
        }
    }
}

impl Drop for SqsSource {
    /// Hands buffered (and still arriving) messages straight back to their queue, so that
    /// another replica takes them now rather than after their visibility timeout.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let buffered: Vec<Received> = self.buffer.drain(..).collect();
        for (redriven, inbox) in [(false, &mut self.main), (true, &mut self.redrive)] {
            let mut handles: Vec<String> = buffered
                .iter()
                .filter(|received| received.redriven == redriven)
                .filter_map(|received| received.message.receipt_handle().map(str::to_string))
                .collect();
            let pending = inbox.pending.take();
            if handles.is_empty() && pending.is_none() {
                continue;
            }
            let (client, url) = (self.settings.client.clone(), inbox.url.clone());
            runtime.spawn(async move {
                if let Some(pending) = pending {
                    if let Ok(Ok((_, more))) = pending.await {
                        handles.extend(more.iter().filter_map(|message| message.receipt_handle().map(str::to_string)));
                    }
                }
                release(&client, &url, handles).await;
            });
        }
    }
}

/// Makes received messages visible again at once.
async fn release(client: &Client, queue_url: &str, handles: Vec<String>) {
    for chunk in handles.chunks(MAX_BATCH_ENTRIES) {
        let entries = chunk.iter().enumerate().filter_map(|(index, handle)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(handle)
                .visibility_timeout(0)
                .build()
                .ok()
        });
        let released = client
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries.collect()))
            .send()
            .await;
        if let Err(e) = released {
            debug!(error = %describe(&e), "could not release buffered messages; they return after their timeout");
        }
    }
}

async fn change_visibility(client: &Client, queue_url: &str, receipt_handle: &str, seconds: i32) -> Result<()> {
    client
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(receipt_handle)
        .visibility_timeout(seconds)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| BusError::Ack(format!("change visibility on {queue_url}: {}", describe(&e))))
}

struct DeleteRequest {
    receipt_handle: String,
    done: oneshot::Sender<Result<()>>,
}

/// Deletes what the settles of one source ask for, up to ten per DeleteMessageBatch: whatever
/// arrived while the previous call was being sent goes together, so a lone ack waits for
/// nothing and a busy consumer makes a tenth of the calls.
async fn delete_batches(client: Client, queue_url: Arc<str>, mut requests: mpsc::UnboundedReceiver<DeleteRequest>) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_ENTRIES {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        tokio::spawn(delete_batch(client.clone(), queue_url.clone(), batch));
    }
}

async fn delete_batch(client: Client, queue_url: Arc<str>, batch: Vec<DeleteRequest>) {
    let entries: std::result::Result<Vec<_>, _> = batch
        .iter()
        .enumerate()
        .map(|(index, request)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .receipt_handle(&request.receipt_handle)
                .build()
        })
        .collect();
    let output = match entries {
        Ok(entries) => client
            .delete_message_batch()
            .queue_url(queue_url.as_ref())
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| describe(&e)),
        Err(e) => Err(e.to_string()),
    };
    let output = match output {
        Ok(output) => output,
        Err(message) => {
            for request in batch {
                let _ = request.done.send(Err(BusError::Ack(format!("delete on {queue_url}: {message}"))));
            }
            return;
        }
    };
    let mut results: Vec<Result<()>> = (0..batch.len())
        .map(|_| Err(BusError::Ack(format!("delete on {queue_url}: SQS did not report on this message"))))
        .collect();
    for success in output.successful() {
        if let Some(slot) = success.id().parse::<usize>().ok().and_then(|index| results.get_mut(index)) {
            *slot = Ok(());
        }
    }
    for failure in output.failed() {
        if let Some(slot) = failure.id().parse::<usize>().ok().and_then(|index| results.get_mut(index)) {
            let message = failure.message().unwrap_or_default();
            *slot = Err(BusError::Ack(format!("delete on {queue_url}: {}: {message}", failure.code())));
        }
    }
    for (request, result) in batch.into_iter().zip(results) {
        // A settle that stopped waiting has nobody to tell.
        let _ = request.done.send(result);
    }
}

struct SqsSettle {
    client: Client,
    queue_url: Arc<str>,
    receipt_handle: String,
    ack_wait: Duration,
    deletes: mpsc::UnboundedSender<DeleteRequest>,
}

impl SqsSettle {
    /// Returns once SQS confirmed the delete: an ack must be as durable as the work it ends.
    async fn delete(&self) -> Result<()> {
        let (done, confirmed) = oneshot::channel();
        self.deletes
            .send(DeleteRequest { receipt_handle: self.receipt_handle.clone(), done })
            .map_err(|_| BusError::Ack("the delete worker has stopped".to_string()))?;
        confirmed.await.map_err(|_| BusError::Ack("the delete worker dropped the request".to_string()))?
    }
}

#[async_trait]
impl Settle for SqsSettle {
    async fn ack(&self) -> Result<()> {
        self.delete().await
    }

    /// The message stays in flight, invisible, until `delay` has passed; then any receiver
    /// gets it again with a higher receive count.
    async fn retry_after(&self, delay: Duration) -> Result<()> {
        change_visibility(&self.client, &self.queue_url, &self.receipt_handle, visibility_seconds(delay)).await
    }

    async fn in_progress(&self) -> Result<()> {
        change_visibility(&self.client, &self.queue_url, &self.receipt_handle, visibility_seconds(self.ack_wait)).await
    }

    /// The consumer loop has already stored the message on the dead-letter subject (the
    /// dead-letter queue): all that is left is to remove it here.
    async fn terminate(&self) -> Result<()> {
        self.delete().await
    }
}
