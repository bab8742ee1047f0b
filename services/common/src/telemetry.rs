//! Logs and traces of every Lifeboat process.
//!
//! Logs go to stderr: `RUST_LOG` filters them (default `info`), `LIFEBOAT_LOG_FORMAT=json` makes
//! them JSON lines. A line logged inside a traced span shows the span's `trace_id` field, so logs
//! and the trace in Grafana find each other. Text lines leave out the `otel.*` span fields, which
//! only name the exported span; JSON lines keep every field.
//!
//! Traces are off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! is set, and stay off with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. When on,
//! spans go over OTLP/HTTP with protobuf (the collector's port 4318; `/v1/traces` is appended to
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, the traces endpoint is taken as it is), batched by the SDK's
//! batch processor on a thread of its own and flushed by [`Telemetry::shutdown`]. The SDK reads
//! the rest of the standard variables itself: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
//! for the resource, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` for sampling (default
//! parent-based always-on), `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` and `..._TIMEOUT`, and
//! `OTEL_BSP_*` for batching. Only `http/protobuf` is spoken; another `OTEL_EXPORTER_OTLP_PROTOCOL`
//! is reported and ignored, and compression is not built in.
//!
//! The spans exported are Lifeboat's own at `info` and above, whatever `RUST_LOG` says, so that
//! quieter logs do not cut traces apart: the bus spans of [`crate::trace_context`], the AWS call
//! spans of [`crate::aws_trace`], and the services' work spans inside them. Events logged inside
//! a span travel with it as span events.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry::{Key, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::field::{Field, Visit};
use tracing::{debug, warn, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "lifeboat";
/// The instrumentation scope of every Lifeboat span.
const TRACER_NAME: &str = "lifeboat";

const DEFAULT_LOG_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn,async_nats=warn";
/// What becomes a span in the trace: Lifeboat's spans, not the clients' internals, and never the
/// exporter's own (its requests would trace themselves).
const TRACE_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn,aws_smithy_http_client=warn,\
                            async_nats=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,opentelemetry=off";

/// Whether this process exports spans (set once the tracing layer is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: spans that exist only for the trace (publishes, AWS calls) are
/// not made otherwise, so that an untraced process pays nothing for them.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the trace exporter running; [`Telemetry::shutdown`] (or dropping it) exports what is
/// still batched. Call it once the work is done: spans still open then are lost.
#[must_use = "dropping the guard stops exporting traces"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span still batched, then stops exporting.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown() {
                warn!(error = %e, "could not export the last spans");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Logging, and tracing when configured, as `lifeboat` (see [`init_as`]).
pub fn init() -> Telemetry {
    init_as(DEFAULT_SERVICE_NAME)
}

/// Logging, and tracing when configured, with `default_service_name` as the resource's
/// `service.name` unless the environment names the service. A second call in one process
/// (tests build many services in one) changes nothing and returns a guard that exports nothing.
pub fn init_as(default_service_name: &str) -> Telemetry {
    let (mut provider, problem) = match tracing_requested() {
        false => (None, None),
        true => match build_provider(default_service_name) {
            Ok(provider) => (Some(provider), None),
            Err(problem) => (None, Some(problem)),
        },
    };
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let json = std::env::var("LIFEBOAT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if json {
        logs.json().with_filter(log_filter).boxed()
    } else {
        logs.fmt_fields(LogFields).with_filter(log_filter).boxed()
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(TRACER_NAME))
            // Span names and attributes say where a span comes from; source locations and
            // module paths would only repeat the interceptor's or the consumer loop's file.
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_filter(EnvFilter::new(TRACE_FILTER))
    });
    let installed = tracing_subscriber::registry().with(logs).with(traces).try_init().is_ok();
    if !installed {
        // Someone else's subscriber has no layer of ours: nothing would reach this exporter.
        if let Some(provider) = provider.take() {
            let _ = provider.shutdown();
        }
    }
    if let Some(problem) = problem {
        warn!(%problem, "tracing is off: cannot set up the OTLP exporter");
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        EXPORTING.store(true, Ordering::Relaxed);
        for variable in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Ok(protocol) = std::env::var(variable) {
                if protocol != "http/protobuf" {
                    warn!(%variable, %protocol, "only http/protobuf is supported; exporting with it");
                }
            }
        }
        debug!(service = %service_name(default_service_name), "exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

/// An OTLP endpoint is configured and the SDK is not disabled.
fn tracing_requested() -> bool {
    let value = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_ascii_lowercase());
    let set = |name: &str| value(name).is_some_and(|v| !v.is_empty());
    let disabled = value("OTEL_SDK_DISABLED").as_deref() == Some("true")
        || value("OTEL_TRACES_EXPORTER").as_deref() == Some("none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn build_provider(default_service_name: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource(default_service_name)).build())
}

/// The SDK's resource (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`, the SDK's own
/// attributes), named `default_service_name` where the SDK would say `unknown_service`.
fn resource(default_service_name: &str) -> Resource {
    let detected = Resource::builder().build();
    if service_named(&detected) {
        detected
    } else {
        Resource::builder().with_service_name(default_service_name.to_string()).build()
    }
}

fn service_named(resource: &Resource) -> bool {
    resource.get(&Key::new("service.name")).is_some_and(|name| !name.as_str().starts_with("unknown_service"))
}

fn service_name(default_service_name: &str) -> Value {
    resource(default_service_name)
        .get(&Key::new("service.name"))
        .unwrap_or_else(|| default_service_name.to_string().into())
}

/// The trace `span` belongs to, as 32 hex digits; `None` when it is not traced.
pub fn trace_id(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// Records the trace id in `span`'s `trace_id` field (declared `trace_id = Empty`), so every log
/// line inside shows it. Starts the span in the trace: set a remote parent before this.
pub fn record_trace_id(span: &Span) {
    if let Some(trace_id) = trace_id(span) {
        // Displayed, so text logs show it bare (`trace_id=4bf9...`), easy to paste into Grafana.
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// Span fields as the default text format writes them (`name=value`, the message bare),
/// without the `otel.*` fields that only steer the exported span (its name, kind, status).
struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        write_log_fields(&mut writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        write_log_fields(&mut Writer::new(&mut added), fields)?;
        if !added.is_empty() {
            if !current.fields.is_empty() {
                current.fields.push(' ');
            }
            current.fields.push_str(&added);
        }
        Ok(())
    }
}

fn write_log_fields(writer: &mut Writer<'_>, fields: impl RecordFields) -> fmt::Result {
    let mut visitor = LogFieldVisitor { writer, first: true, result: Ok(()) };
    fields.record(&mut visitor);
    visitor.result
}

struct LogFieldVisitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl Visit for LogFieldVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") || name.starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = match name {
            "message" => write!(self.writer, "{separator}{value:?}"),
            name => write!(self.writer, "{separator}{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
        };
    }
}
