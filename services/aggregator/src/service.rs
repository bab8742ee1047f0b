//! The aggregator service: consumes `lifeboat.events.status.>`, keeps state, publishes
//! summaries on `lifeboat.events.summary.<id>` and answers `lifeboat.status.query`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use lifeboat_common::bus::{Bus, Delivery, OutgoingMessage, Queue, Result};
use lifeboat_common::{subjects, ConsumerOptions, Handler, Outcome};
use lifeboat_proto::{StatusEvent, StatusQuery, StatusReply};
use prost::Message;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::state::RequestState;
use crate::store::StateStore;

#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    pub consumer: ConsumerOptions,
    /// Tasks listed in one status reply (NATS messages have a size limit).
    pub max_tasks_in_reply: usize,
    /// Requests kept in memory; the oldest finished ones are dropped first (the store has them).
    pub max_cached_requests: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            consumer: ConsumerOptions { concurrency: 16, ..Default::default() },
            max_tasks_in_reply: 2000,
            max_cached_requests: 1000,
        }
    }
}

type Shared = Arc<Mutex<RequestState>>;

pub struct Aggregator {
    bus: Arc<dyn Bus>,
    store: Arc<dyn StateStore>,
    client: async_nats::Client,
    config: AggregatorConfig,
    /// Events of one request are applied one at a time; different requests in parallel.
    requests: Mutex<HashMap<String, Shared>>,
}

impl Aggregator {
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn StateStore>,
        client: async_nats::Client,
        config: AggregatorConfig,
    ) -> Arc<Self> {
        Arc::new(Self { bus, store, client, config, requests: Mutex::new(HashMap::new()) })
    }

    /// Serves status queries and consumes events until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let queries = tokio::spawn(self.clone().serve_queries(shutdown.clone()));
        let (bus, options) = (self.bus.clone(), self.config.consumer.clone());
        let consumed = lifeboat_common::run_consumer(bus, Queue::StatusEvents, self, options, shutdown).await;
        queries.await.map_err(|e| lifeboat_common::BusError::Receive(e.to_string()))??;
        consumed
    }

    /// The request's state from memory, or loaded from the store (after a restart).
    async fn state(&self, request_id: &str) -> Result<Option<Shared>> {
        if let Some(state) = self.requests.lock().await.get(request_id) {
            return Ok(Some(state.clone()));
        }
        let Some((meta, tasks)) = self.store.load(request_id).await? else {
            return Ok(None);
        };
        let state = Arc::new(Mutex::new(RequestState::from_parts(meta, tasks)));
        Ok(Some(self.cache(request_id, state).await))
    }

    async fn cache(&self, request_id: &str, state: Shared) -> Shared {
        let mut requests = self.requests.lock().await;
        if requests.len() >= self.config.max_cached_requests {
            let finished: Vec<String> = requests
                .iter()
                .filter(|(_, s)| s.try_lock().map(|s| s.is_final()).unwrap_or(false))
                .map(|(id, _)| id.clone())
                .collect();
            for id in finished {
                requests.remove(&id);
            }
        }
        requests.entry(request_id.to_string()).or_insert(state).clone()
    }

    async fn apply(&self, event: &StatusEvent) -> Result<()> {
        let shared = match self.state(&event.request_id).await? {
            Some(shared) => shared,
            None => self.cache(&event.request_id, Arc::new(Mutex::new(RequestState::new(&event.request_id)))).await,
        };
        let mut state = shared.lock().await;
        let change = state.apply(event);
        if !change.any() {
            debug!(request_id = %event.request_id, task_id = %event.task_id, "event changes nothing");
            return Ok(());
        }
        // Store first, then announce: a crash in between re-applies the event on redelivery.
        if let Some(task_id) = &change.task {
            self.store.put_task(&event.request_id, &state.tasks[task_id]).await?;
        }
        if change.meta {
            self.store.put_meta(&state.meta).await?;
        }
        let summary = state.summary(0);
        if summary.r#final && change.meta {
            info!(request_id = %summary.request_id, verdict = lifeboat_proto::Verdict::try_from(summary.verdict).unwrap_or_default().short_name(), "request finished");
        }
        self.bus.notify(OutgoingMessage::proto(subjects::summary_subject(&event.request_id), &summary)).await
    }

    async fn serve_queries(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let mut queries =
            self.client.queue_subscribe(subjects::STATUS_QUERY, "status-aggregator".to_string()).await.map_err(
                |e| lifeboat_common::BusError::Setup {
                    what: "status query subscription".into(),
                    message: e.to_string(),
                },
            )?;
        loop {
            let query = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = queries.next() => match next { Some(query) => query, None => return Ok(()) },
            };
            let Some(reply_to) = query.reply.clone() else {
                continue;
            };
            let reply = self.answer(&query.payload).await;
            if let Err(e) = self.client.publish(reply_to, reply.encode_to_vec().into()).await {
                warn!(error = %e, "cannot answer a status query");
            }
        }
    }

    pub async fn answer(&self, payload: &[u8]) -> StatusReply {
        let query = match StatusQuery::decode(payload) {
            Ok(query) => query,
            Err(e) => {
                return StatusReply { error: format!("not a lifeboat.v1.StatusQuery: {e}"), ..Default::default() }
            }
        };
        match self.state(&query.request_id).await {
            Ok(Some(state)) => {
                let max_tasks = if query.include_tasks { self.config.max_tasks_in_reply } else { 0 };
                StatusReply { found: true, summary: Some(state.lock().await.summary(max_tasks)), error: String::new() }
            }
            Ok(None) => {
                StatusReply { found: false, error: format!("no request {}", query.request_id), ..Default::default() }
            }
            Err(e) => StatusReply { error: e.to_string(), ..Default::default() },
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
        match self.apply(&event).await {
            Ok(()) => Outcome::Done,
            Err(e) => {
                warn!(error = %e, request_id = %event.request_id, "cannot record event; will retry");
                Outcome::RetryAfter(std::time::Duration::from_secs(1))
            }
        }
    }
}
