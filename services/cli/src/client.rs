//! Talking to a running Lifeboat: submit a request, ask for its status, follow its summaries;
//! over NATS ([`LifeboatClient`]) or the HTTP API ([`ApiClient`]).

use std::time::Duration;

use futures::StreamExt;
use lifeboat_common::bus::{Bus, BusError, OutgoingMessage};
use lifeboat_common::jetstream::JetStreamBus;
use lifeboat_common::subjects;
use lifeboat_proto::{
    CancelQuery, ListQuery, OperatorReply, RequestPage, RequestSummary, RestoreRequest, RetryQuery, StatusQuery,
    StatusReply,
};
use prost::Message;

/// How often `watch` asks for the status when no summary arrives (the aggregator may not be up
/// yet, or the request was finished before we subscribed).
const POLL_INTERVAL: Duration = Duration::from_secs(3);

pub use crate::api_client::ApiClient;

/// A known request id with another body: refused on every transport.
pub fn conflict(request_id: &str) -> BusError {
    BusError::Request {
        subject: subjects::RESTORE_REQUESTS.to_string(),
        message: format!(
            "409: request_id: {request_id} is already used by a different request; submit this one under a new id"
        ),
    }
}

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

    /// Requests newest first, only those in `state` (a verdict name, or `running`) if not empty.
    pub async fn list(&self, state: &str, limit: u32) -> Result<RequestPage, BusError> {
        match self {
            Client::Nats(client) => client.list(state, limit).await,
            Client::Api(client) => client.list(state, limit).await,
        }
    }

    /// Re-runs the failed (and cancelled) tasks of a finished request, only those of `set_names`
    /// if any; the reply names the tasks queued again.
    pub async fn retry(&self, request_id: &str, set_names: &[String]) -> Result<OperatorReply, BusError> {
        match self {
            Client::Nats(client) => client.retry(request_id, set_names).await,
            Client::Api(client) => client.retry(request_id, set_names).await,
        }
    }

    pub async fn cancel(&self, request_id: &str, reason: &str) -> Result<OperatorReply, BusError> {
        match self {
            Client::Nats(client) => client.cancel(request_id, reason).await,
            Client::Api(client) => client.cancel(request_id, reason).await,
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

    /// Publishes durably. The request id is the dedupe id, so submitting twice is harmless; a
    /// known id whose plan was made from another body is refused.
    pub async fn submit(&self, request: &RestoreRequest) -> Result<(), BusError> {
        if let Ok(reply) = self.status_once(&request.request_id).await {
            let known = reply.summary.unwrap_or_default();
            if reply.found && !known.request_digest.is_empty() {
                if known.request_digest != lifeboat_common::ids::request_digest(request) {
                    return Err(conflict(&request.request_id));
                }
                // The same request again: nothing to do.
                return Ok(());
            }
        }
        // Reported before the request, as the HTTP API records it.
        let accepted = lifeboat_common::events::accepted_event(&request.request_id, "client");
        self.bus
            .publish(
                OutgoingMessage::proto(subjects::status_subject(&request.request_id), &accepted)
                    .dedupe_id(format!("{}.accepted", request.request_id)),
            )
            .await?;
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

    /// One status query, without waiting for an aggregator to come up.
    async fn status_once(&self, request_id: &str) -> Result<StatusReply, BusError> {
        let query = StatusQuery { request_id: request_id.to_string(), include_tasks: false }.encode_to_vec();
        let request_error =
            |message: String| BusError::Request { subject: subjects::STATUS_QUERY.to_string(), message };
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            self.bus.client().request(subjects::STATUS_QUERY, query.into()),
        )
        .await
        .map_err(|_| request_error("no answer within 5s".into()))?
        .map_err(|e| request_error(e.to_string()))?;
        StatusReply::decode(reply.payload.as_ref()).map_err(|e| request_error(e.to_string()))
    }

    /// Asks the aggregator one operator query; a refusal becomes an error with its reason.
    async fn operate(&self, subject: &str, query: Vec<u8>) -> Result<OperatorReply, BusError> {
        let request_error = |message: String| BusError::Request { subject: subject.to_string(), message };
        let reply =
            tokio::time::timeout(Duration::from_secs(30), self.bus.client().request(subject.to_string(), query.into()))
                .await
                .map_err(|_| request_error("no answer within 30s: is the status aggregator running?".into()))?
                .map_err(|e| request_error(e.to_string()))?;
        let reply = OperatorReply::decode(reply.payload.as_ref()).map_err(|e| request_error(e.to_string()))?;
        if reply.status >= 300 {
            return Err(request_error(format!("{}: {}", reply.status, reply.error)));
        }
        Ok(reply)
    }

    pub async fn list(&self, state: &str, limit: u32) -> Result<RequestPage, BusError> {
        let query = ListQuery { state: state.to_string(), limit, after: String::new() };
        Ok(self.operate(subjects::LIST_QUERY, query.encode_to_vec()).await?.page.unwrap_or_default())
    }

    pub async fn retry(&self, request_id: &str, set_names: &[String]) -> Result<OperatorReply, BusError> {
        let query = RetryQuery { request_id: request_id.to_string(), failed_only: true, set_names: set_names.to_vec() };
        self.operate(subjects::RETRY_QUERY, query.encode_to_vec()).await
    }

    pub async fn cancel(&self, request_id: &str, reason: &str) -> Result<OperatorReply, BusError> {
        let query = CancelQuery {
            request_id: request_id.to_string(),
            reason: reason.to_string(),
            requested_by: std::env::var("USER").unwrap_or_default(),
        };
        self.operate(subjects::CANCEL_QUERY, query.encode_to_vec()).await
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
