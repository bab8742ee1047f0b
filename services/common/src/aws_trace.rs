//! A client span for every AWS operation a Lifeboat client makes, following the OpenTelemetry
//! conventions for AWS SDK calls: named `Service.Operation` (`EC2.CreateVolume`), with
//! `rpc.system=aws-api`, `rpc.service`, `rpc.method`, `cloud.region` (and `aws.region`, which
//! AWS-minded dashboards use), `aws.request_id`, `aws.attempts` (every try, retries included),
//! `http.request.resend_count` (the retries, when there were any), `http.response.status_code`
//! of the last try, and on failure `error.type` with the AWS error code (`ThrottlingException`;
//! `timeout`, `connection` or `_OTHER` when AWS never answered) and an error status.
//!
//! One span covers the whole operation, retries and backoff included, as the caller waits for
//! it. Its parent is the caller's current span; a call made outside any span (the SQS consumer's
//! long polls and batched deletes) gets none, so idle polling does not fill the trace store with
//! one-span traces. The clients of [`crate::aws`] and the SQS bus carry this interceptor next to
//! [`crate::metrics::AwsMetrics`].

use aws_config::Region;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata, OrchestratorError};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use tracing::field::Empty;
use tracing::Span;

/// Response headers AWS puts the request id in (most services; S3 uses the second).
const REQUEST_ID_HEADERS: [&str; 2] = ["x-amzn-requestid", "x-amz-request-id"];
/// XML elements of the request id in bodies of services that send no header (EC2).
const REQUEST_ID_ELEMENTS: [&str; 3] = ["<requestId>", "<RequestId>", "<RequestID>"];
/// The request id comes first in those bodies: only this much is looked at.
const REQUEST_ID_SEARCH_BYTES: usize = 1024;

/// The tracing interceptor: `aws_sdk_ec2::config::Builder::from(&sdk_config).interceptor(AwsTracing)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsTracing;

impl AwsTracing {
    pub fn new() -> Self {
        Self
    }
}

/// The operation's span, from serialization until after the last attempt.
#[derive(Clone, Debug)]
struct CallSpan(Span);

impl Storable for CallSpan {
    type Storer = StoreReplace<Self>;
}

/// Attempts made so far for the operation.
#[derive(Clone, Copy, Debug)]
struct Attempts(u32);

impl Storable for Attempts {
    type Storer = StoreReplace<Self>;
}

impl Intercept for AwsTracing {
    fn name(&self) -> &'static str {
        "LifeboatAwsTracing"
    }

    /// The first hook after the operation's configuration (its `Metadata`) is in the bag.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !crate::telemetry::exporting() || Span::current().is_none() {
            return Ok(());
        }
        let (service, operation) = match cfg.load::<Metadata>() {
            Some(metadata) => (metadata.service().to_string(), metadata.name().to_string()),
            None => ("unknown".to_string(), "unknown".to_string()),
        };
        let region = cfg.load::<Region>().map(|r| r.to_string()).unwrap_or_default();
        let span = tracing::info_span!(
            "aws.call",
            otel.name = %format!("{service}.{operation}"),
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            rpc.system = "aws-api",
            rpc.service = %service,
            rpc.method = %operation,
            cloud.region = %region,
            aws.region = %region,
            aws.request_id = Empty,
            aws.attempts = Empty,
            http.request.resend_count = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
        );
        cfg.interceptor_state().store_put(CallSpan(span));
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<CallSpan>().is_some() {
            let attempts = cfg.load::<Attempts>().map_or(0, |a| a.0) + 1;
            cfg.interceptor_state().store_put(Attempts(attempts));
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(CallSpan(span)) = cfg.load::<CallSpan>().cloned() else {
            return Ok(());
        };
        // The bag outlives the call a little; the span ends now.
        cfg.interceptor_state().unset::<CallSpan>();
        let attempts = cfg.load::<Attempts>().map_or(0, |a| a.0);
        span.record("aws.attempts", attempts);
        if attempts > 1 {
            span.record("http.request.resend_count", attempts - 1);
        }
        let response = context.response();
        if let Some(response) = response {
            span.record("http.response.status_code", response.status().as_u16());
        }
        let error = match context.output_or_error() {
            Some(Err(error)) => Some(error),
            _ => None,
        };
        if let Some(request_id) = request_id(response, error) {
            span.record("aws.request_id", request_id.as_str());
        }
        if let Some(error) = error {
            let kind = error_type(error);
            span.record("error.type", kind.as_str());
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", kind.as_str());
        }
        Ok(())
    }
}

/// The AWS error code, or what kept AWS from answering.
fn error_type(error: &OrchestratorError<aws_smithy_runtime_api::client::interceptors::context::Error>) -> String {
    if let Some(operation_error) = error.as_operation_error() {
        if let Some(code) = crate::metrics::error_code(operation_error) {
            return code.to_string();
        }
        // Modeled errors print as `Code: message`; their metadata is not reachable type-erased.
        let shown = operation_error.to_string();
        let code = shown.split(':').next().unwrap_or_default().trim();
        if !code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
            return code.to_string();
        }
    }
    if error.is_timeout_error() {
        "timeout".to_string()
    } else if error.is_connector_error() {
        "connection".to_string()
    } else {
        "_OTHER".to_string()
    }
}

/// From the response headers, the error's metadata, or the start of an XML body (EC2).
fn request_id(
    response: Option<&HttpResponse>,
    error: Option<&OrchestratorError<aws_smithy_runtime_api::client::interceptors::context::Error>>,
) -> Option<String> {
    if let Some(id) = response.and_then(|r| REQUEST_ID_HEADERS.iter().find_map(|name| r.headers().get(*name))) {
        return Some(id.to_string());
    }
    let metadata = error.and_then(|e| e.as_operation_error()).and_then(|e| crate::metrics::error_metadata(e));
    if let Some(id) = metadata.and_then(|m| m.extra("aws_request_id")) {
        return Some(id.to_string());
    }
    let body = response?.body().bytes()?;
    let head = String::from_utf8_lossy(&body[..body.len().min(REQUEST_ID_SEARCH_BYTES)]);
    REQUEST_ID_ELEMENTS.iter().find_map(|element| {
        let start = head.find(element)? + element.len();
        let end = head[start..].find('<')? + start;
        let id = head[start..end].trim();
        (!id.is_empty()).then(|| id.to_string())
    })
}
