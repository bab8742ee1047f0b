//! Talking to a running Lifeboat through its HTTP API (`--api-url`): the way in when the bus is
//! SQS, or when NATS is not reachable from where the CLI runs.

use std::time::Duration;

use futures::StreamExt;
use lifeboat_common::bus::BusError;
use lifeboat_proto::{
    CancelQuery, OperatorReply, RequestPage, RequestSummary, RestoreRequest, RetryQuery, StatusReply,
};
use prost::Message;

/// Summaries fetched while following, at most this often (events can come in thousands).
const SUMMARY_INTERVAL: Duration = Duration::from_millis(250);

pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

fn failed(url: &str, message: impl std::fmt::Display) -> BusError {
    BusError::Request { subject: url.to_string(), message: message.to_string() }
}

/// The `error` of an API error body, or the body itself.
async fn error_of(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(body);
    format!("{status}: {message}")
}

impl ApiClient {
    pub fn new(base: &str) -> Result<Self, BusError> {
        let http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().map_err(|e| failed(base, e))?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), http })
    }

    pub async fn submit(&self, request: &RestoreRequest) -> Result<(), BusError> {
        let url = format!("{}/v1/requests", self.base);
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            // The caller's trace continues in the API's span and everything after it.
            .headers(lifeboat_common::trace_context::http_headers(&tracing::Span::current()))
            .body(request.encode_to_vec())
            .send()
            .await
            .map_err(|e| failed(&url, e))?;
        if !response.status().is_success() {
            return Err(failed(&url, error_of(response).await));
        }
        Ok(())
    }

    pub async fn list(&self, state: &str, limit: u32) -> Result<RequestPage, BusError> {
        let limit = if limit == 0 { 50 } else { limit };
        // States are plain words (`partially_failed`): nothing to escape.
        let url = format!("{}/v1/requests?state={state}&limit={limit}", self.base);
        let response = self.http.get(&url).send().await.map_err(|e| failed(&url, e))?;
        if !response.status().is_success() {
            return Err(failed(&url, error_of(response).await));
        }
        response.json().await.map_err(|e| failed(&url, e))
    }

    pub async fn retry(&self, request_id: &str, set_names: &[String]) -> Result<OperatorReply, BusError> {
        let body = RetryQuery { request_id: request_id.to_string(), failed_only: true, set_names: set_names.to_vec() };
        self.operate(&format!("{}/v1/requests/{request_id}/retry", self.base), &body).await
    }

    pub async fn cancel(&self, request_id: &str, reason: &str) -> Result<OperatorReply, BusError> {
        let body = CancelQuery {
            request_id: request_id.to_string(),
            reason: reason.to_string(),
            requested_by: std::env::var("USER").unwrap_or_default(),
        };
        self.operate(&format!("{}/v1/requests/{request_id}/cancel", self.base), &body).await
    }

    async fn operate(&self, url: &str, body: &impl serde::Serialize) -> Result<OperatorReply, BusError> {
        let response = self.http.post(url).json(body).send().await.map_err(|e| failed(url, e))?;
        if !response.status().is_success() {
            return Err(failed(url, error_of(response).await));
        }
        response.json().await.map_err(|e| failed(url, e))
    }

    pub async fn status(&self, request_id: &str, include_tasks: bool) -> Result<StatusReply, BusError> {
        let tasks = if include_tasks { 10_000 } else { 0 };
        let url = format!("{}/v1/requests/{request_id}?tasks={tasks}", self.base);
        let response = self.http.get(&url).send().await.map_err(|e| failed(&url, e))?;
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => {
                Ok(StatusReply { found: false, error: error_of(response).await, ..Default::default() })
            }
            status if status.is_success() => {
                let summary: RequestSummary = response.json().await.map_err(|e| failed(&url, e))?;
                Ok(StatusReply { found: true, summary: Some(summary), error: String::new() })
            }
            _ => Err(failed(&url, error_of(response).await)),
        }
    }

    /// Follows the request's event stream until its verdict, calling `on_update` with fresh
    /// summaries; reconnects (resuming after the last event) if the stream drops.
    pub async fn watch(
        &self,
        request_id: &str,
        timeout: Option<Duration>,
        mut on_update: impl FnMut(&RequestSummary),
    ) -> Result<RequestSummary, BusError> {
        let url = format!("{}/v1/requests/{request_id}/events", self.base);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let follow = async {
            let mut last_event = None::<String>;
            let mut last_summary = tokio::time::Instant::now() - SUMMARY_INTERVAL;
            loop {
                let mut get = self.http.get(&url).header(reqwest::header::ACCEPT, "text/event-stream");
                if let Some(id) = &last_event {
                    get = get.header("Last-Event-ID", id);
                }
                let response = match get.send().await {
                    Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                        // Not recorded yet (just submitted): ask again shortly.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                    Ok(response) if response.status().is_success() => response,
                    Ok(response) => return Err(failed(&url, error_of(response).await)),
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream failed; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let mut body = response.bytes_stream();
                let mut buffer = String::new();
                let (mut kind, mut data, mut id) = (String::new(), String::new(), None::<String>);
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buffer.find('\n') {
                        let line = buffer[..end].trim_end_matches('\r').to_string();
                        buffer.drain(..=end);
                        if let Some(value) = line.strip_prefix("event:") {
                            kind = value.trim().to_string();
                        } else if let Some(value) = line.strip_prefix("data:") {
                            data.push_str(value.trim_start());
                        } else if let Some(value) = line.strip_prefix("id:") {
                            id = Some(value.trim().to_string());
                        } else if line.is_empty() && !data.is_empty() {
                            match kind.as_str() {
                                "verdict" => {
                                    let summary: RequestSummary =
                                        serde_json::from_str(&data).map_err(|e| failed(&url, e))?;
                                    on_update(&summary);
                                    return Ok(summary);
                                }
                                "error" => return Err(failed(&url, data)),
                                _ => {
                                    last_event = id.take().or(last_event);
                                    if last_summary.elapsed() >= SUMMARY_INTERVAL {
                                        last_summary = tokio::time::Instant::now();
                                        if let Ok(StatusReply { summary: Some(summary), .. }) =
                                            self.status(request_id, false).await
                                        {
                                            on_update(&summary);
                                        }
                                    }
                                }
                            }
                            kind.clear();
                            data.clear();
                        }
                    }
                }
            }
        };
        let summary = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, follow)
                .await
                .map_err(|_| failed(&url, "timed out waiting for the verdict"))??,
            None => follow.await?,
        };
        let reply = self.status(request_id, true).await?;
        Ok(reply.summary.unwrap_or(summary))
    }
}
