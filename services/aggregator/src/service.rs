//! The aggregator service: consumes every StatusEvent, records it in the [`Store`], announces
//! the request's summary on `lifeboat.events.summary.<id>` and answers `lifeboat.status.query`
//! (NATS) as well as the HTTP API ([`crate::api`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lifeboat_common::bus::{Bus, BusError, Delivery, OutgoingMessage, Queue, Result};
use lifeboat_common::restore::HEARTBEAT;
use lifeboat_common::{subjects, ConsumerOptions, Handler, Outcome};
use lifeboat_proto::{
    CancelQuery, ListQuery, OperatorReply, ResourceType, RetryQuery, StatusEvent, StatusQuery, StatusReply, TaskPhase,
    Verdict,
};
use prost::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::operator::OperatorError;
use crate::store::{Recorded, Store};

/// Tasks by resource type and phase, as changes seen by this replica (+1 entering a phase,
/// -1 leaving it): summed over replicas it is the number of tasks in each phase.
pub const TASKS_GAUGE: &str = "lifeboat_tasks";
/// Requests that reached a verdict, by verdict.
pub const REQUESTS_FINISHED: &str = "lifeboat_requests_finished_total";
/// From the first event of a request to its verdict.
pub const REQUEST_DURATION: &str = "lifeboat_request_duration_seconds";

#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    pub consumer: ConsumerOptions,
    /// Tasks listed in one status reply (NATS messages have a size limit).
    pub max_tasks_in_reply: usize,
    /// A task not terminal that reported nothing for this long is ended STALLED, and so is a
    /// request that got no plan or no report at all for this long. Three heartbeats of the
    /// resource services, which report a waiting task at least once a heartbeat.
    pub stall_after: Duration,
    /// How often each replica looks for stalled requests.
    pub sweep_every: Duration,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            consumer: ConsumerOptions { concurrency: 16, ..Default::default() },
            max_tasks_in_reply: 2000,
            stall_after: 3 * HEARTBEAT,
            sweep_every: Duration::from_secs(60),
        }
    }
}

/// Overrides of [`AggregatorConfig::stall_after`] and `sweep_every`, in seconds.
pub const STALL_AFTER_ENV: &str = "LIFEBOAT_STALL_AFTER_SECONDS";
pub const STALL_SWEEP_ENV: &str = "LIFEBOAT_STALL_SWEEP_SECONDS";

impl AggregatorConfig {
    /// The defaults with the stall deadline and sweep interval taken from the environment
    /// where set; a value that is not a positive number of seconds is ignored, with a warning.
    pub fn from_env() -> Self {
        let mut config = Self::default();
        for (name, slot) in [(STALL_AFTER_ENV, &mut config.stall_after), (STALL_SWEEP_ENV, &mut config.sweep_every)] {
            let Ok(value) = std::env::var(name) else { continue };
            match value.trim().parse::<u64>() {
                Ok(seconds) if seconds > 0 => *slot = Duration::from_secs(seconds),
                _ => warn!(name, value, "not a positive number of seconds; keeping the default"),
            }
        }
        config
    }
}

pub struct Aggregator {
    bus: Arc<dyn Bus>,
    store: Store,
    config: AggregatorConfig,
    /// Ids of requests that changed here, so live followers (SSE) look at once.
    changes: broadcast::Sender<String>,
}

impl Aggregator {
    pub fn new(bus: Arc<dyn Bus>, store: Store, config: AggregatorConfig) -> Arc<Self> {
        let (changes, _) = broadcast::channel(1024);
        // A task re-checked with nothing new keeps its report time fresh well within the deadline.
        let store = store.refreshing_after(config.stall_after / 3);
        Arc::new(Self { bus, store, config, changes })
    }

    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Request ids as this replica records changes to them.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Consumes status events and sweeps for stalled requests until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let sweeper = self.clone();
        let sweep_shutdown = shutdown.clone();
        let sweep = tokio::spawn(async move { sweeper.sweep_stalled(sweep_shutdown).await });
        let (bus, options) = (self.bus.clone(), self.config.consumer.clone());
        let consumed = lifeboat_common::run_consumer(bus, Queue::StatusEvents, self, options, shutdown.clone()).await;
        shutdown.cancel();
        let _ = sweep.await;
        consumed
    }

    pub(crate) async fn record(&self, event: &StatusEvent) -> Result<()> {
        self.record_if(event, |_, _| true).await.map(|_| ())
    }

    /// Records an event if `still` holds ([`Store::record_if`]), then announces the change.
    pub(crate) async fn record_if(
        &self,
        event: &StatusEvent,
        still: impl Fn(&crate::RequestState, Option<&lifeboat_proto::TaskState>) -> bool,
    ) -> Result<Option<Recorded>> {
        let Some(recorded) = self.store.record_if(event, still).await? else {
            debug!(request_id = %event.request_id, task_id = %event.task_id, "event changes nothing");
            return Ok(None);
        };
        observe(&recorded);
        let _ = self.changes.send(event.request_id.clone());
        let summary = &recorded.summary;
        if summary.r#final && summary.finished_at == event.at {
            let verdict = Verdict::try_from(summary.verdict).unwrap_or_default().short_name();
            info!(request_id = %summary.request_id, verdict, "request finished");
        }
        self.bus.notify(OutgoingMessage::proto(subjects::summary_subject(&event.request_id), summary)).await?;
        Ok(Some(recorded))
    }

    /// Answers `lifeboat.status.query` and the operator's list, retry and cancel queries on
    /// NATS until `shutdown`.
    pub async fn serve_queries(self: Arc<Self>, client: async_nats::Client, shutdown: CancellationToken) -> Result<()> {
        let mut subscriptions = Vec::new();
        for subject in [subjects::STATUS_QUERY, subjects::LIST_QUERY, subjects::RETRY_QUERY, subjects::CANCEL_QUERY] {
            let subscription = client
                .queue_subscribe(subject, "status-aggregator".to_string())
                .await
                .map_err(|e| BusError::Setup { what: format!("{subject} subscription"), message: e.to_string() })?;
            subscriptions.push(subscription);
        }
        let mut queries = futures::stream::select_all(subscriptions);
        loop {
            let query = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = queries.next() => match next { Some(query) => query, None => return Ok(()) },
            };
            let Some(reply_to) = query.reply.clone() else {
                continue;
            };
            // Retries and cancels write to the store and the bus: they must not hold up status queries.
            let (aggregator, client) = (self.clone(), client.clone());
            tokio::spawn(async move {
                let reply = match query.subject.as_str() {
                    subjects::STATUS_QUERY => aggregator.answer(&query.payload).await.encode_to_vec(),
                    subject => aggregator.operate(subject, &query.payload).await.encode_to_vec(),
                };
                if let Err(e) = client.publish(reply_to, reply.into()).await {
                    warn!(error = %e, "cannot answer a query");
                }
            });
        }
    }

    /// Runs one operator query received over NATS.
    pub async fn operate(&self, subject: &str, payload: &[u8]) -> OperatorReply {
        let undecodable = |e: prost::DecodeError| OperatorReply {
            status: 400,
            error: format!("not a query for {subject}: {e}"),
            ..Default::default()
        };
        let failed =
            |e: OperatorError| OperatorReply { status: e.status().into(), error: e.to_string(), ..Default::default() };
        match subject {
            subjects::LIST_QUERY => match ListQuery::decode(payload) {
                Ok(query) => {
                    let after = (!query.after.is_empty()).then_some(query.after.as_str());
                    let limit = if query.limit == 0 { 50 } else { query.limit as usize };
                    match self.list(&query.state, limit, after).await {
                        Ok(page) => OperatorReply { status: 200, page: Some(page), ..Default::default() },
                        Err(e) => failed(e),
                    }
                }
                Err(e) => undecodable(e),
            },
            subjects::RETRY_QUERY => match RetryQuery::decode(payload) {
                Ok(query) => match self.retry(&query.request_id, &query.set_names).await {
                    Ok(retried) => OperatorReply {
                        status: 202,
                        summary: Some(retried.summary),
                        task_ids: retried.task_ids,
                        ..Default::default()
                    },
                    Err(e) => failed(e),
                },
                Err(e) => undecodable(e),
            },
            subjects::CANCEL_QUERY => match CancelQuery::decode(payload) {
                Ok(query) => match self.cancel(&query.request_id, &query.reason, &query.requested_by).await {
                    Ok(summary) => OperatorReply { status: 202, summary: Some(summary), ..Default::default() },
                    Err(e) => failed(e),
                },
                Err(e) => undecodable(e),
            },
            other => OperatorReply { status: 404, error: format!("no such query: {other}"), ..Default::default() },
        }
    }

    pub async fn answer(&self, payload: &[u8]) -> StatusReply {
        let query = match StatusQuery::decode(payload) {
            Ok(query) => query,
            Err(e) => {
                return StatusReply { error: format!("not a lifeboat.v1.StatusQuery: {e}"), ..Default::default() }
            }
        };
        let max_tasks = if query.include_tasks { self.config.max_tasks_in_reply } else { 0 };
        match self.store.summary(&query.request_id, max_tasks).await {
            Ok(Some(summary)) => StatusReply { found: true, summary: Some(summary), error: String::new() },
            Ok(None) => {
                StatusReply { found: false, error: format!("no request {}", query.request_id), ..Default::default() }
            }
            Err(e) => StatusReply { error: e.to_string(), ..Default::default() },
        }
    }
}

/// Metrics of one recorded change.
fn observe(recorded: &Recorded) {
    let name = |task: &lifeboat_proto::TaskState| {
        let kind = ResourceType::try_from(task.resource_type).unwrap_or_default().short_name();
        (kind, TaskPhase::try_from(task.phase).unwrap_or_default().short_name())
    };
    if let Some(task) = &recorded.task {
        let (kind, phase) = name(task);
        metrics::gauge!(TASKS_GAUGE, "resource_type" => kind, "phase" => phase).increment(1.0);
        if let Some(previous) = &recorded.previous {
            let (kind, phase) = name(previous);
            metrics::gauge!(TASKS_GAUGE, "resource_type" => kind, "phase" => phase).decrement(1.0);
        }
    }
    let summary = &recorded.summary;
    let event_at = recorded.event.event.as_ref().and_then(|e| e.at);
    if summary.r#final && summary.finished_at.is_some() && summary.finished_at == event_at {
        let verdict = Verdict::try_from(summary.verdict).unwrap_or_default().short_name();
        metrics::counter!(REQUESTS_FINISHED, "verdict" => verdict).increment(1);
        if let (Some(start), Some(end)) = (summary.started_at, summary.finished_at) {
            let seconds = (end.seconds - start.seconds) as f64 + f64::from(end.nanos - start.nanos) / 1e9;
            metrics::histogram!(REQUEST_DURATION).record(seconds.max(0.0));
        }
    }
}

#[async_trait]
impl Handler for Aggregator {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let event = match StatusEvent::decode(delivery.payload.as_ref()) {
            Ok(event) if lifeboat_common::ids::is_valid_request_id(&event.request_id) => event,
            Ok(event) => {
                return Outcome::DeadLetter {
                    code: "INVALID_EVENT".to_string(),
                    reason: format!("status event with invalid request id '{}'", event.request_id),
                }
            }
            Err(e) => {
                return Outcome::DeadLetter {
                    code: "UNDECODABLE_EVENT".to_string(),
                    reason: format!("not a lifeboat.v1.StatusEvent: {e}"),
                }
            }
        };
        match self.record(&event).await {
            Ok(()) => Outcome::Done,
            Err(e) => {
                warn!(error = %e, request_id = %event.request_id, "cannot record event; will retry");
                Outcome::RetryAfter(crate::store::jittered(Duration::from_secs(2)))
            }
        }
    }
}
