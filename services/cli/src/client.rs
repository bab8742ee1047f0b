//! Talking to a running Lifeboat: submit a request, ask for its status, follow its summaries;
//! over NATS ([`LifeboatClient`]) or the HTTP API ([`ApiClient`]).

use std::time::Duration;

use futures::StreamExt;
use lifeboat_common::bus::{Bus, BusError, OutgoingMessage};
use lifeboat_common::jetstream::JetStreamBus;
use lifeboat_common::subjects;
use lifeboat_proto::{RequestSummary, RestoreRequest, StatusQuery, StatusReply};
use prost::Message;

/// How often `watch` asks for the status when no summary arrives (the aggregator may not be up
/// yet, or the request was finished before we subscribed).
const POLL_INTERVAL: Duration = Duration::from_secs(3);

pub use crate::api_client::ApiClient;

/// Either way in, with the same operations.
pub enum Client {
    Nats(LifeboatClient),
    Api(ApiClient),
}

impl Client {
    pub async fn submit(&self, request: &RestoreRequest) -> Result<(), BusError> {
        match self {
            Client::Nats(client) => client.submit(request).await,
            Client::Api(client) => client.submit(request).await,
        }
    }

    pub async fn status(&self, request_id: &str, include_tasks: bool) -> Result<StatusReply, BusError> {
        match self {
            Client::Nats(client) => client.status(request_id, include_tasks).await,
            Client::Api(client) => client.status(request_id, include_tasks).await,
        }
    }

    pub async fn watch(
        &self,
        request_id: &str,
        timeout: Option<Duration>,
        on_update: impl FnMut(&RequestSummary),
    ) -> Result<RequestSummary, BusError> {
        match self {
            Client::Nats(client) => client.watch(request_id, timeout, on_update).await,
            Client::Api(client) => client.watch(request_id, timeout, on_update).await,
        }
    }
}

/// The NATS client: publishes requests, asks `lifeboat.status.query`, follows summaries.
pub struct LifeboatClient {
    bus: JetStreamBus,
}

impl LifeboatClient {
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        Ok(Self { bus: JetStreamBus::connect(url).await? })
    }

    pub fn from_bus(bus: JetStreamBus) -> Self {
        Self { bus }
    }

    /// Publishes durably. The request id is the dedupe id, so submitting twice is harmless.
    pub async fn submit(&self, request: &RestoreRequest) -> Result<(), BusError> {
        self.bus
            .publish(
                OutgoingMessage::proto(subjects::RESTORE_REQUESTS, request)
                    .dedupe_id(request.request_id.clone())
                    .header(subjects::HEADER_REQUEST_ID, request.request_id.clone()),
            )
            .await
    }

    /// Asks the status aggregator. While no aggregator is subscribed yet (services starting), the
    /// query is repeated for up to 10 seconds.
    pub async fn status(&self, request_id: &str, include_tasks: bool) -> Result<StatusReply, BusError> {
        let query = StatusQuery { request_id: request_id.to_string(), include_tasks }.encode_to_vec();
        let request_error =
            |message: String| BusError::Request { subject: subjects::STATUS_QUERY.to_string(), message };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let asked = tokio::time::timeout_at(
                deadline,
                self.bus.client().request(subjects::STATUS_QUERY, query.clone().into()),
            )
            .await
            .map_err(|_| request_error("no answer within 10s: is the status aggregator running?".into()))?;
            match asked {
                Ok(reply) => {
                    return StatusReply::decode(reply.payload.as_ref()).map_err(|e| request_error(e.to_string()))
                }
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(request_error("no status aggregator is running".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(request_error(e.to_string())),
            }
        }
    }

    /// Follows a request until its final summary, calling `on_update` for every summary seen.
    /// Returns the final summary with its tasks.
    pub async fn watch(
        &self,
        request_id: &str,
        timeout: Option<Duration>,
        mut on_update: impl FnMut(&RequestSummary),
    ) -> Result<RequestSummary, BusError> {
        let mut summaries = self
            .bus
            .client()
            .subscribe(subjects::summary_subject(request_id))
            .await
            .map_err(|e| BusError::Setup { what: "summary subscription".into(), message: e.to_string() })?;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        loop {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(BusError::Request {
                    subject: subjects::summary_subject(request_id),
                    message: "timed out waiting for the final summary".into(),
                });
            }
            let summary = tokio::select! {
                message = summaries.next() => match message {
                    Some(message) => RequestSummary::decode(message.payload.as_ref()).ok(),
                    None => None,
                },
                _ = poll.tick() => match self.status(request_id, false).await {
                    Ok(reply) if reply.found => reply.summary,
                    _ => None,
                },
            };
            if let Some(summary) = summary {
                on_update(&summary);
                if summary.r#final {
                    let reply = self.status(request_id, true).await?;
                    return Ok(reply.summary.unwrap_or(summary));
                }
            }
        }
    }
}
