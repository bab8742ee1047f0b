//! The one consumer loop: receives deliveries, runs the handler, and settles each delivery
//! (ack, delayed retry, dead letter) from the outcome the handler returns. Business code never
//! acks or sleeps. It also counts what it settled, reports whether it is consuming, and runs
//! each delivery in a `messaging.process` span that continues the trace the message carries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use crate::bus::{Bus, Delivery, OutgoingMessage, Queue, QueueOptions, Result};
use crate::http::{Component, Health};
use crate::{metrics, subjects, trace_context};

/// Dead-letter code of a delivery that asked for a retry once too often.
pub const MAX_DELIVERIES: &str = "MAX_DELIVERIES";
/// Dead-letter code of a delivery the transport had moved aside because no handler finished on
/// any of its receives ([`Delivery::redriven`]).
pub const REDRIVEN: &str = "REDRIVEN";

/// How long a dead-lettered message waits before its FAILED report is tried again, when the
/// report could not be stored.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(2);
/// How soon a delivery whose handler timed out comes back.
const TIMED_OUT_RETRY: Duration = Duration::from_secs(1);

/// What a handler decided about a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Fully handled, effects durable: acknowledge.
    Done,
    /// Deliver again after the delay: an AWS operation is still running, or a retryable error.
    RetryAfter(Duration),
    /// Can never succeed (undecodable, poison): move to the dead-letter subject with the reason.
    DeadLetter { code: String, reason: String },
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, delivery: &Delivery) -> Outcome;

    /// Called after a delivery was dead-lettered (by the handler's outcome, with code
    /// [`MAX_DELIVERIES`] because it ran out of deliveries, or with [`REDRIVEN`] when the
    /// transport had moved it aside), so the handler can report the affected task as FAILED.
    /// The message is terminated only once this returns `Ok`: on an error it comes back later,
    /// so that a task's verdict is never lost with it.
    async fn dead_lettered(&self, _delivery: &Delivery, _code: &str, _reason: &str) -> Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    pub queue: QueueOptions,
    /// Deliveries handled at the same time by this process.
    pub concurrency: usize,
    /// A delivery that still asks for a retry on this attempt is dead-lettered instead.
    pub max_deliveries: u32,
    /// A handler still running after this long is abandoned and its delivery retried, so that
    /// a hung call cannot hold a message forever. Progress signals keep the message until then.
    pub handler_timeout: Duration,
    /// Where the consumer reports its readiness, as the component named after the queue's
    /// consumer (`work-ebs`): ready once it consumes, not ready once it stopped.
    pub health: Option<Health>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            queue: QueueOptions::default(),
            concurrency: 32,
            max_deliveries: 200,
            handler_timeout: Duration::from_secs(300),
            health: None,
        }
    }
}

/// Consumes `queue` until `shutdown` is cancelled, then waits for in-flight handlers to settle.
pub async fn run_consumer<B, H>(
    bus: Arc<B>,
    queue: Queue,
    handler: Arc<H>,
    options: ConsumerOptions,
    shutdown: CancellationToken,
) -> Result<()>
where
    B: Bus + ?Sized,
    H: Handler,
{
    let component = options.health.as_ref().map(|health| health.component(queue.consumer_name()));
    let mut source = match bus.consume(&queue, &options.queue).await {
        Ok(source) => source,
        Err(e) => {
            if let Some(component) = &component {
                component.not_ready(format!("cannot consume: {e}"));
            }
            return Err(e);
        }
    };
    let consuming = Consuming::new(component);
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let tracker = TaskTracker::new();
    info!(queue = %queue.consumer_name(), concurrency = options.concurrency, "consumer started");
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = source.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => {
                    warn!(error = %e, "receive failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                None => break,
            },
        };
        let (bus, handler, queue, options) = (bus.clone(), handler.clone(), queue.clone(), options.clone());
        // A child of the publish that produced the message, through its headers; redeliveries
        // carry the same headers, so every re-check of a long restore joins the same trace.
        let span = trace_context::process_span(bus.messaging_system(), &queue, &delivery);
        tracker.spawn(
            async move {
                settle(bus.as_ref(), &queue, handler.as_ref(), &options, delivery).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    drop(consuming);
    tracker.close();
    tracker.wait().await;
    info!(queue = %queue.consumer_name(), "consumer stopped");
    Ok(())
}

/// Keeps the consumer's component ready until the loop ends, however it ends.
struct Consuming(Option<Component>);

impl Consuming {
    fn new(component: Option<Component>) -> Self {
        if let Some(component) = &component {
            component.ready();
        }
        Self(component)
    }
}

impl Drop for Consuming {
    fn drop(&mut self) {
        if let Some(component) = &self.0 {
            component.not_ready("stopped");
        }
    }
}

async fn settle<B: Bus + ?Sized, H: Handler>(
    bus: &B,
    queue: &Queue,
    handler: &H,
    options: &ConsumerOptions,
    delivery: Delivery,
) {
    let consumer = queue.consumer_name();
    metrics::message_received(&consumer, delivery.attempt, delivery.published_at);
    let started = Instant::now();
    let outcome = match &delivery.redriven {
        // Every receive so far ended without a handler finishing, maybe by crashing the
        // process: it is not run again, the message goes the way of one out of deliveries.
        Some(reason) => Outcome::DeadLetter { code: REDRIVEN.to_string(), reason: reason.clone() },
        None => handle(handler, &consumer, options, &delivery).await,
    };
    let handled_in = started.elapsed();
    metrics::message_handled(&consumer, &outcome, handled_in);
    let settled = match &outcome {
        Outcome::Done => delivery.settle.ack().await,
        Outcome::RetryAfter(delay) => {
            debug!(delay_ms = delay.as_millis() as u64, "will check again");
            delivery.settle.retry_after(*delay).await
        }
        Outcome::DeadLetter { code, reason } => dead_letter(bus, queue, handler, &delivery, code, reason).await,
    };
    if let Err(e) = settled {
        // The message comes back after the ack deadline; handlers are idempotent.
        error!(error = %e, ?outcome, "could not settle delivery; it will be redelivered");
    }
}

/// Runs the handler within the handler timeout, and turns a retry asked for on the last
/// delivery allowed into a dead letter.
async fn handle<H: Handler>(handler: &H, consumer: &str, options: &ConsumerOptions, delivery: &Delivery) -> Outcome {
    let work = with_progress(delivery, options.queue.ack_wait, handler.handle(delivery));
    let outcome = match tokio::time::timeout(options.handler_timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => {
            warn!(timeout_s = options.handler_timeout.as_secs(), "handler timed out; abandoned, will retry");
            metrics::handler_timed_out(consumer);
            Outcome::RetryAfter(TIMED_OUT_RETRY)
        }
    };
    match outcome {
        Outcome::RetryAfter(_) if delivery.attempt >= options.max_deliveries => Outcome::DeadLetter {
            code: MAX_DELIVERIES.to_string(),
            reason: format!("still not done after {} deliveries", delivery.attempt),
        },
        other => other,
    }
}

/// Runs the handler, telling the bus every third of the ack deadline that work goes on.
async fn with_progress(
    delivery: &Delivery,
    ack_wait: Duration,
    work: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    tokio::pin!(work);
    let period = (ack_wait / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = ticker.tick() => {
                if let Err(e) = delivery.settle.in_progress().await {
                    warn!(error = %e, "could not extend the ack deadline");
                }
            }
        }
    }
}

/// Reports a dead letter, then stores it on the dead-letter subject, then terminates it. The
/// report comes first so that a report that cannot be stored leaves nothing behind: the
/// delivery comes back and is dead-lettered once, when the report gets through (a report
/// stored twice, when the publish fails after it, is a duplicate event the aggregator ignores).
async fn dead_letter<B: Bus + ?Sized, H: Handler>(
    bus: &B,
    queue: &Queue,
    handler: &H,
    delivery: &Delivery,
    code: &str,
    reason: &str,
) -> Result<()> {
    warn!(code, reason, "dead-lettering message");
    if let Err(e) = handler.dead_lettered(delivery, code, reason).await {
        warn!(error = %e, "cannot report the dead letter; it comes back");
        return delivery.settle.retry_after(DEAD_LETTER_RETRY).await;
    }
    let mut message = OutgoingMessage::new(queue.deadletter_subject(), delivery.payload.clone())
        .header(subjects::HEADER_DEADLETTER_REASON, format!("{code}: {reason}").replace(['\r', '\n'], " "))
        .header(subjects::HEADER_DEADLETTER_SUBJECT, delivery.subject.clone());
    for (name, value) in &delivery.headers {
        if !name.starts_with("Nats-") {
            message = message.header(name.clone(), value.clone());
        }
    }
    // Keep it until it is stored elsewhere: on failure the delivery is not terminated and comes back.
    bus.publish(message).await?;
    delivery.settle.terminate().await
}
