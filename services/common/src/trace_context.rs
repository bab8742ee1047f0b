//! One trace per restore request: the W3C trace context (`traceparent`, `tracestate`) that every
//! message and API call carries, and the spans around the bus that continue it.
//!
//! Publishing opens a producer span (`publish <subject>`) and stamps *its* context into the
//! headers of every message published, so each consumer's `process <subject>` span is a child
//! of the publish that produced its message. Both buses call [`publish_span`] and nothing else
//! injects, so NATS headers and SQS message attributes carry the same two headers. A delayed
//! redelivery (a re-check of a restore still running) is the same stored message with the same
//! headers, so every re-check lands in the original trace.
//!
//! Without tracing configured ([`crate::telemetry`]) spans have no OpenTelemetry context:
//! nothing is injected and nothing extracted, and messages look as they always did.
//!
//! Span attributes follow the OpenTelemetry semantic conventions for messaging
//! (`messaging.system`, `messaging.destination.name`, `messaging.operation.type`...), plus
//! Lifeboat's own: `lifeboat.service` (which service handled it: one process may run them all),
//! `lifeboat.request_id` and `lifeboat.task_id` (how the dashboard finds a request's trace).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::bus::{BusError, Delivery, OutgoingMessage, Queue};
use crate::subjects;

/// `messaging.system` of the JetStream bus (not a registered value; the conventions allow others).
pub const SYSTEM_NATS: &str = "nats";
/// `messaging.system` of the SQS bus, as the conventions name it.
pub const SYSTEM_SQS: &str = "aws_sqs";

/// `context`, stamped into a message's headers, replacing any it already carried (a
/// dead-lettered message keeps its other headers but continues the current trace).
fn inject_context(context: &Context, headers: &mut Vec<(String, String)>) {
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut HeaderList(headers))
    });
}

/// The remote parent a delivery's headers name (an empty context when they name none).
pub fn extract(headers: &BTreeMap<String, String>) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderTree(headers)))
}

/// The context of `span` as HTTP headers, for a request to Lifeboat's API.
pub fn http_headers(span: &Span) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let context = span.context();
    if context.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HttpHeaders(&mut headers))
        });
    }
    headers
}

/// The remote parent an HTTP request's headers name.
pub fn extract_http(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HttpHeadersRef(headers)))
}

/// Makes `span` a child of `parent` when `parent` names a span, and records the trace id on it
/// (so log lines inside show which trace they belong to). Call before the span is entered.
pub fn continue_trace(span: &Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer (tracing off), when there is nothing to join.
        let _ = span.set_parent(parent);
    }
    crate::telemetry::record_trace_id(span);
}

/// The producer span of publishing `messages` (none when not exporting); their headers get its
/// context. Named after the subject when they share one (`publish lifeboat.work.ebs`);
/// per-request subjects are named by their template (`publish lifeboat.events.status.{request_id}`)
/// to keep span names few.
pub fn publish_span(system: &'static str, messages: &mut [OutgoingMessage]) -> Span {
    if !crate::telemetry::exporting() {
        return Span::none();
    }
    let subject = match messages.split_first() {
        Some((first, rest)) if rest.iter().all(|m| m.subject == first.subject) => Some(first.subject.clone()),
        _ => None,
    };
    let name = match &subject {
        Some(subject) => format!("publish {}", subjects::template(subject)),
        None => "publish".to_string(),
    };
    let span = tracing::info_span!(
        "messaging.publish",
        otel.name = %name,
        otel.kind = "producer",
        otel.status_code = Empty,
        otel.status_description = Empty,
        messaging.destination.name = Empty,
        lifeboat.request_id = Empty,
        error.type = Empty,
    );
    span.set_attribute("messaging.system", system);
    span.set_attribute("messaging.operation.type", "send");
    span.set_attribute("messaging.operation.name", "publish");
    if let Some(subject) = &subject {
        span.record("messaging.destination.name", subject.as_str());
        let template = subjects::template(subject);
        if template != subject.as_str() {
            span.set_attribute("messaging.destination.template", template.into_owned());
        }
    }
    if messages.len() > 1 {
        span.set_attribute("messaging.batch.message_count", messages.len() as i64);
    }
    let request_ids =
        messages.iter().map(|m| request_id_of(&m.subject, header(&m.headers, subjects::HEADER_REQUEST_ID)));
    if let Some(request_id) = only_one(request_ids) {
        span.record("lifeboat.request_id", request_id);
    }
    let context = span.context();
    for message in messages.iter_mut() {
        inject_context(&context, &mut message.headers);
    }
    span
}

/// Marks `span` (a publish) failed when `result` is an error.
pub fn record_result<T>(span: &Span, result: &Result<T, BusError>) {
    if let Err(error) = result {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", error.to_string());
        span.record("error.type", error.kind());
    }
}

/// The consumer span of handling one delivery from `queue`, a child of the publish that
/// produced the message (through the delivery's headers), with the request and task it is about.
pub fn process_span(system: &'static str, queue: &Queue, delivery: &Delivery) -> Span {
    let template = subjects::template(&delivery.subject);
    // Fields show on every log line inside (`otel.*` ones excepted, see `crate::telemetry`), so
    // only what helps reading logs is a field; the rest are attributes of the exported span.
    let span = tracing::info_span!(
        "messaging.process",
        otel.name = %format!("process {template}"),
        otel.kind = "consumer",
        messaging.destination.name = %delivery.subject,
        messaging.delivery_attempt = delivery.attempt,
        lifeboat.service = queue.service_name(),
        lifeboat.request_id = Empty,
        lifeboat.task_id = Empty,
        trace_id = Empty,
    );
    span.set_attribute("messaging.system", system);
    span.set_attribute("messaging.operation.type", "process");
    span.set_attribute("messaging.operation.name", "process");
    span.set_attribute("messaging.consumer.group.name", queue.consumer_name());
    span.set_attribute("messaging.message.body.size", delivery.payload.len() as i64);
    if template != delivery.subject.as_str() {
        span.set_attribute("messaging.destination.template", template.into_owned());
    }
    if let Some(request_id) = request_id_of(&delivery.subject, delivery.header(subjects::HEADER_REQUEST_ID)) {
        span.record("lifeboat.request_id", request_id);
    }
    if let Some(task_id) = delivery.header(subjects::HEADER_TASK_ID) {
        span.record("lifeboat.task_id", task_id);
    }
    continue_trace(&span, extract(&delivery.headers));
    span
}

/// The request a message is about: its request-id header (requests, work), else the request
/// its subject is about (status events and summaries carry the id in the subject).
fn request_id_of<'a>(subject: &'a str, header: Option<&'a str>) -> Option<&'a str> {
    header.or_else(|| {
        [subjects::STATUS_PREFIX, subjects::SUMMARY_PREFIX]
            .iter()
            .find_map(|prefix| subject.strip_prefix(prefix)?.strip_prefix('.'))
            .filter(|id| !id.is_empty())
    })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The value when every item is that same value.
fn only_one<'a>(mut items: impl Iterator<Item = Option<&'a str>>) -> Option<&'a str> {
    let first = items.next()??;
    items.all(|item| item == Some(first)).then_some(first)
}

/// An outgoing message's header list as a carrier: a header set again replaces the old value,
/// and an empty one (`tracestate` with no vendor entries) is left out: SQS refuses empty
/// attribute values.
struct HeaderList<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeaderList<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        if !value.is_empty() {
            self.0.push((key.to_string(), value));
        }
    }
}

/// A delivery's headers as a carrier. Exact names first; HTTP-style capitalised ones
/// (`Traceparent`, from a proxy or another client) are found too.
struct HeaderTree<'a>(&'a BTreeMap<String, String>);

impl Extractor for HeaderTree<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .or_else(|| self.0.iter().find(|(name, _)| name.eq_ignore_ascii_case(key)).map(|(_, value)| value))
            .map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct HttpHeaders<'a>(&'a mut HeaderMap);

impl Injector for HttpHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

struct HttpHeadersRef<'a>(&'a HeaderMap);

impl Extractor for HttpHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}
