//! The status HTTP API, served by the aggregator: submit a request, list requests (by state),
//! read one with its tasks, follow its events live (Server-Sent Events) until the verdict, and
//! retry or cancel it. Bodies
//! are the protobuf messages in their canonical JSON mapping; `docs/openapi.yaml` describes it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use lifeboat_common::bus::{BusError, OutgoingMessage};
use lifeboat_common::{subjects, trace_context};
use lifeboat_proto::{CancelQuery, OperatorReply, RestoreRequest, RetryQuery};
use prost::Message;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tracing::field::Empty;
use tracing::Instrument;

use crate::operator::OperatorError;
use crate::service::Aggregator;
use crate::store::EventLog;

/// Every route of the API, as (method, path): the OpenAPI description must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/requests"),
    ("POST", "/v1/requests"),
    ("GET", "/v1/requests/{id}"),
    ("GET", "/v1/requests/{id}/events"),
    ("POST", "/v1/requests/{id}/retry"),
    ("POST", "/v1/requests/{id}/cancel"),
];

/// Tasks returned by `GET /v1/requests/{id}` unless `?tasks=` says otherwise.
const DEFAULT_TASKS: usize = 10_000;
/// Followers look at the store at least this often (other replicas' changes do not wake them).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

pub fn router(aggregator: Arc<Aggregator>) -> Router {
    Router::new()
        .route("/v1/requests", get(list).post(submit))
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/events", get(follow))
        .route("/v1/requests/{id}/retry", post(retry))
        .route("/v1/requests/{id}/cancel", post(cancel))
        .with_state(aggregator)
}

/// An error as users see it: a status and `{"error": "..."}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    fn internal(e: impl std::fmt::Display) -> Self {
        Self(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }

    fn not_found(id: &str) -> Self {
        Self(StatusCode::NOT_FOUND, format!("no request {id}"))
    }
}

fn checked(id: &str) -> Result<&str, ApiError> {
    crate::operator::checked(id)?;
    Ok(id)
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self(status, e.to_string())
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    after: Option<String>,
    state: Option<String>,
}

async fn list(State(aggregator): State<Arc<Aggregator>>, Query(page): Query<Page>) -> Result<Response, ApiError> {
    let state = page.state.unwrap_or_default();
    let page = aggregator.list(&state, page.limit.unwrap_or(50), page.after.as_deref()).await?;
    Ok(Json(page).into_response())
}

/// `POST /v1/requests/{id}/retry`: a RetryQuery as JSON (`failedOnly`, `setNames`; the id
/// comes from the path), or no body for every failed task.
async fn retry(
    State(aggregator): State<Arc<Aggregator>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = checked(&id)?;
    let query: RetryQuery = if body.iter().all(u8::is_ascii_whitespace) {
        RetryQuery::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("body: not a lifeboat.v1.RetryQuery: {e}")))?
    };
    let retried = aggregator.retry(id, &query.set_names).await?;
    let reply =
        OperatorReply { status: 202, summary: Some(retried.summary), task_ids: retried.task_ids, ..Default::default() };
    Ok((StatusCode::ACCEPTED, Json(reply)).into_response())
}

/// `POST /v1/requests/{id}/cancel`: a CancelQuery as JSON (`reason`, `requestedBy`), or no body.
async fn cancel(
    State(aggregator): State<Arc<Aggregator>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = checked(&id)?;
    let query: CancelQuery = if body.iter().all(u8::is_ascii_whitespace) {
        CancelQuery::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("body: not a lifeboat.v1.CancelQuery: {e}")))?
    };
    let summary = aggregator.cancel(id, &query.reason, &query.requested_by).await?;
    let reply = OperatorReply { status: 202, summary: Some(summary), ..Default::default() };
    Ok((StatusCode::ACCEPTED, Json(reply)).into_response())
}

#[derive(Deserialize)]
struct Show {
    tasks: Option<usize>,
}

async fn show(
    State(aggregator): State<Arc<Aggregator>>,
    Path(id): Path<String>,
    Query(show): Query<Show>,
) -> Result<Response, ApiError> {
    let id = checked(&id)?;
    let summary =
        aggregator.store().summary(id, show.tasks.unwrap_or(DEFAULT_TASKS)).await.map_err(ApiError::internal)?;
    summary.map(|s| Json(s).into_response()).ok_or_else(|| ApiError::not_found(id))
}

/// Accepts a RestoreRequest as JSON, or as protobuf with `Content-Type: application/x-protobuf`,
/// and publishes it for discovery. Everything beyond the id is validated by discovery, which
/// answers an invalid request with a REJECTED event naming each bad field.
///
/// The request runs in a server span continuing the client's trace (its `traceparent`), so the
/// request's trace starts at the client's submission.
async fn submit(
    State(aggregator): State<Arc<Aggregator>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!(
        "http.submit",
        otel.name = "POST /v1/requests",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/requests",
        http.response.status_code = Empty,
        lifeboat.service = "aggregator",
        lifeboat.request_id = Empty,
        trace_id = Empty,
    );
    trace_context::continue_trace(&span, trace_context::extract_http(&headers));
    let accepted = accept(&aggregator, &headers, body).instrument(span.clone()).await;
    let status = match &accepted {
        Ok(response) => response.status(),
        Err(ApiError(status, _)) => *status,
    };
    span.record("http.response.status_code", status.as_u16());
    accepted
}

async fn accept(aggregator: &Aggregator, headers: &HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    let mut request: RestoreRequest = if protobuf {
        RestoreRequest::decode(body.as_ref())
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("body: not a lifeboat.v1.RestoreRequest: {e}")))?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("body: not a lifeboat.v1.RestoreRequest: {e}")))?
    };
    if request.request_id.is_empty() {
        request.request_id = lifeboat_common::ids::new_request_id();
    }
    checked(&request.request_id)?;
    if request.submitted_at.is_none() {
        request.submitted_at = Some(lifeboat_common::time::now());
    }
    let id = request.request_id.clone();
    tracing::Span::current().record("lifeboat.request_id", id.as_str());
    // A known id: the same request again is a no-op, another one under its id a conflict.
    if let Some((known, _)) = aggregator.store().head(&id).await.map_err(ApiError::internal)? {
        if !known.request_digest.is_empty() {
            if known.request_digest != lifeboat_common::ids::request_digest(&request) {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("request_id: {id} is already used by a different request; submit this one under a new id"),
                ));
            }
            return Ok(accepted(&id));
        }
    }
    // Recorded before discovery sees it, so that the stall sweep gives a request whose plan
    // never comes a verdict.
    let accepted_event = lifeboat_common::events::accepted_event(&id, "aggregator");
    aggregator.record(&accepted_event).await.map_err(ApiError::internal)?;
    let message = OutgoingMessage::proto(subjects::RESTORE_REQUESTS, &request)
        .dedupe_id(id.clone())
        .header(subjects::HEADER_REQUEST_ID, id.clone());
    aggregator.bus().publish(message).await.map_err(ApiError::internal)?;
    Ok(accepted(&id))
}

fn accepted(id: &str) -> Response {
    let location = format!("/v1/requests/{id}");
    (StatusCode::ACCEPTED, [(header::LOCATION, location.clone())], Json(json!({ "requestId": id, "status": location })))
        .into_response()
}

/// Server-Sent Events: every recorded event of the request in order (`event: status`, `id:`
/// its sequence, so a client reconnecting with `Last-Event-ID` resumes), then `event: verdict`
/// with the final summary, and the stream ends.
async fn follow(
    State(aggregator): State<Arc<Aggregator>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = checked(&id)?.to_string();
    if aggregator.store().head(&id).await.map_err(ApiError::internal)?.is_none() {
        return Err(ApiError::not_found(&id));
    }
    let after = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let log = aggregator.store().follow(&id, after).await.map_err(ApiError::internal)?;
    // Pushed records wake the follower for every replica's writes; otherwise this replica's
    // own changes do (and the poll catches the others').
    let changes = (!log.is_pushed()).then(|| aggregator.changes());
    let follower = Follower { log, queue: VecDeque::new(), changes, unread: true, done: false };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        follower.next().await.map(|event| (Ok::<_, Infallible>(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

struct Follower {
    log: EventLog,
    queue: VecDeque<Event>,
    changes: Option<broadcast::Receiver<String>>,
    /// Something may have been recorded since the last read (the follower was woken).
    unread: bool,
    done: bool,
}

/// The next change this replica records; never, for a follower that does not listen.
async fn changed(changes: &mut Option<broadcast::Receiver<String>>) {
    match changes {
        // A lagging receiver has missed changes: reading the log now is what it needs too.
        Some(changes) => {
            let _ = changes.recv().await;
        }
        None => std::future::pending().await,
    }
}

impl Follower {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if self.unread {
                self.unread = false;
                if let Err(e) = self.read().await {
                    return Some(self.failed(e));
                }
                continue;
            }
            let woken = tokio::select! {
                arrived = self.log.arrival() => arrived,
                _ = changed(&mut self.changes) => Ok(()),
                _ = tokio::time::sleep(FOLLOW_POLL) => Ok(()),
            };
            if let Err(e) = woken {
                return Some(self.failed(e));
            }
            self.unread = true;
        }
    }

    /// The stream's last event: why it ends early.
    fn failed(&mut self, e: BusError) -> Event {
        self.done = true;
        Event::default().event("error").data(json!({ "error": e.to_string() }).to_string())
    }

    /// Queues the events recorded since the last read, and the verdict once every event up
    /// to the final one has been sent.
    async fn read(&mut self) -> lifeboat_common::bus::Result<()> {
        let (events, head) = self.log.read().await?;
        for recorded in events {
            let data = serde_json::to_string(&recorded).unwrap_or_default();
            self.queue.push_back(Event::default().event("status").id(recorded.sequence.to_string()).data(data));
        }
        if let Some((summary, sequence)) = head {
            if summary.r#final && self.log.last_sequence() >= sequence {
                self.queue.push_back(
                    Event::default().event("verdict").data(serde_json::to_string(&summary).unwrap_or_default()),
                );
                self.done = true;
            }
        }
        Ok(())
    }
}
