//! Prometheus metrics of every Lifeboat service: the metric names and labels in one place, the
//! process-wide recorder behind the `metrics` facade, and the AWS SDK interceptor that counts
//! calls and throttles per service, operation and region.
//!
//! Recording goes through the `metrics` macros, so code that records never needs a handle; until
//! [`install`] runs, recordings go nowhere. `GET /metrics` of [`crate::http::router`] renders them.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use aws_config::Region;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef, InterceptorContext,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryReason};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::retry::ErrorKind;
use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::warn;

use crate::consumer::Outcome;

/// Counter, labels `queue` (durable consumer name, e.g. `work-ebs`) and `outcome` (`done`,
/// `retry`, `dead_letter`): deliveries the consumer loop settled, by how.
pub const MESSAGES_HANDLED: &str = "lifeboat_messages_handled_total";
/// Histogram, label `queue`: from when the bus stored a message to its first delivery here.
/// Redeliveries are left out: their wait is the retry delay a handler asked for, not lag.
pub const QUEUE_LAG: &str = "lifeboat_queue_lag_seconds";
/// Histogram, label `queue`: how long the handler ran for one delivery.
pub const MESSAGE_HANDLE: &str = "lifeboat_message_handle_seconds";
/// Counter, labels `service` and `operation` (as the SDK names them: `EC2`, `CreateVolume`),
/// `region`, `outcome` (`ok`, `throttled`, `error`): HTTP attempts, so throttles the SDK retried
/// away still count.
pub const AWS_CALLS: &str = "lifeboat_aws_calls_total";
/// Counter, labels `service`, `operation`, `region`: attempts AWS throttled.
pub const AWS_THROTTLES: &str = "lifeboat_aws_throttles_total";
/// Histogram, labels `service`, `operation`: duration of one attempt.
pub const AWS_CALL: &str = "lifeboat_aws_call_seconds";
/// Counter, labels `resource_type` (`ebs`, `rds-instance`...), `phase` (`succeeded`, `failed`)
/// and `reason` (the reason code of the final status event; empty for a plain success).
pub const TASKS_FINISHED: &str = "lifeboat_tasks_finished_total";
/// Histogram, labels `resource_type`, `phase`: from when the task was queued (the bus's store
/// time of the work message) to its final status.
pub const TASK_DURATION: &str = "lifeboat_task_duration_seconds";
/// Counter, label `queue`: deliveries whose handler ran past the consumer's `handler_timeout`
/// and was abandoned (the delivery is retried).
pub const HANDLER_TIMEOUTS: &str = "lifeboat_handler_timeouts_total";
/// Time spent waiting for a token of a shared AWS quota bucket, by API family.
pub const QUOTA_WAIT: &str = "lifeboat_quota_wait_seconds";

/// `outcome` values of [`MESSAGES_HANDLED`].
pub mod message_outcome {
    pub const DONE: &str = "done";
    pub const RETRY: &str = "retry";
    pub const DEAD_LETTER: &str = "dead_letter";
}

/// `outcome` values of [`AWS_CALLS`].
pub mod aws_outcome {
    pub const OK: &str = "ok";
    pub const THROTTLED: &str = "throttled";
    pub const ERROR: &str = "error";
}

/// Buckets of the sub-minute histograms (AWS attempts, handler runs, queue lag).
const SHORT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Buckets of task durations: a restore takes from seconds to hours.
const TASK_BUCKETS: &[f64] =
    &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0];
/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process once and returns its handle; every later
/// call returns the same handle (tests run many services in one process).
pub fn install() -> PrometheusHandle {
    HANDLE.get_or_init(build).clone()
}

fn build() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets(SHORT_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TASK_DURATION.to_string()), TASK_BUCKETS))
        .expect("bucket lists are constant and not empty");
    let handle = match builder.install_recorder() {
        Ok(handle) => handle,
        Err(e) => {
            // Another recorder owns the facade: /metrics still answers, with nothing in it.
            warn!(error = %e, "cannot install the prometheus recorder; metrics stay empty");
            PrometheusBuilder::new().build_recorder().handle()
        }
    };
    describe();
    // `install_recorder` leaves folding histogram samples into buckets to the caller.
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new().name("lifeboat-metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_INTERVAL);
        upkeep.run_upkeep();
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start metrics upkeep; histograms are folded on render only");
    }
    handle
}

fn describe() {
    describe_counter!(MESSAGES_HANDLED, Unit::Count, "Deliveries settled by the consumer loop, by outcome.");
    describe_histogram!(QUEUE_LAG, Unit::Seconds, "Time from storing a message on the bus to its first delivery.");
    describe_histogram!(MESSAGE_HANDLE, Unit::Seconds, "Time the handler ran for one delivery.");
    describe_counter!(AWS_CALLS, Unit::Count, "AWS API attempts, by outcome (ok, throttled, error).");
    describe_counter!(AWS_THROTTLES, Unit::Count, "AWS API attempts that were throttled.");
    describe_histogram!(AWS_CALL, Unit::Seconds, "Duration of one AWS API attempt.");
    describe_counter!(
        HANDLER_TIMEOUTS,
        Unit::Count,
        "Deliveries whose handler was abandoned after the handler timeout."
    );
    describe_counter!(TASKS_FINISHED, Unit::Count, "Restore tasks that reached a final phase.");
    describe_histogram!(QUOTA_WAIT, Unit::Seconds, "Time spent waiting for a token of a shared AWS quota bucket.");
    describe_histogram!(TASK_DURATION, Unit::Seconds, "Time from queueing a restore task to its final phase.");
}

/// A delivery arrived from `queue` (consumer name); `published_at` is when the bus stored it.
pub fn message_received(queue: &str, attempt: u32, published_at: Option<SystemTime>) {
    let lag = published_at.and_then(|at| SystemTime::now().duration_since(at).ok());
    if let (1, Some(lag)) = (attempt, lag) {
        histogram!(QUEUE_LAG, "queue" => queue.to_string()).record(lag.as_secs_f64());
    }
}

/// A handler of a delivery from `queue` ran past the handler timeout and was abandoned.
pub fn handler_timed_out(queue: &str) {
    counter!(HANDLER_TIMEOUTS, "queue" => queue.to_string()).increment(1);
}

/// The consumer loop settled a delivery from `queue` with `outcome` after `handled_in`.
pub fn message_handled(queue: &str, outcome: &Outcome, handled_in: Duration) {
    let outcome = match outcome {
        Outcome::Done => message_outcome::DONE,
        Outcome::RetryAfter(_) => message_outcome::RETRY,
        Outcome::DeadLetter { .. } => message_outcome::DEAD_LETTER,
    };
    counter!(MESSAGES_HANDLED, "queue" => queue.to_string(), "outcome" => outcome).increment(1);
    histogram!(MESSAGE_HANDLE, "queue" => queue.to_string()).record(handled_in.as_secs_f64());
}

/// A caller waited `wait` for a token of the `api` bucket (see [`crate::quota`]).
pub fn quota_waited(api: &'static str, wait: Duration) {
    histogram!(QUOTA_WAIT, "api" => api).record(wait.as_secs_f64());
}

/// A restore task reached a final `phase`; `queued_at` is when its work message was stored.
pub fn task_finished(resource_type: &'static str, phase: &'static str, reason: &str, queued_at: Option<SystemTime>) {
    counter!(TASKS_FINISHED, "resource_type" => resource_type, "phase" => phase, "reason" => reason.to_string())
        .increment(1);
    if let Some(took) = queued_at.and_then(|at| SystemTime::now().duration_since(at).ok()) {
        histogram!(TASK_DURATION, "resource_type" => resource_type, "phase" => phase).record(took.as_secs_f64());
    }
}

/// An AWS SDK interceptor recording [`AWS_CALLS`], [`AWS_THROTTLES`] and [`AWS_CALL`] for every
/// attempt of every operation of the client it is attached to:
/// `aws_sdk_sqs::config::Builder::from(&sdk_config).interceptor(AwsMetrics::new())`.
/// The clients of [`crate::aws`] carry it already.
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsMetrics;

impl AwsMetrics {
    pub fn new() -> Self {
        Self
    }
}

/// When the current attempt started, kept in the attempt's config bag.
#[derive(Clone, Copy, Debug)]
struct AttemptStarted(Instant);

impl Storable for AttemptStarted {
    type Storer = StoreReplace<Self>;
}

impl Intercept for AwsMetrics {
    fn name(&self) -> &'static str {
        "LifeboatAwsMetrics"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(AttemptStarted(Instant::now()));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = match cfg.load::<Metadata>() {
            Some(metadata) => (metadata.service().to_string(), metadata.name().to_string()),
            None => ("unknown".to_string(), "unknown".to_string()),
        };
        let region = cfg.load::<Region>().map(|r| r.to_string()).unwrap_or_default();
        let outcome = attempt_outcome(context.inner(), runtime_components);
        counter!(AWS_CALLS, "service" => service.clone(), "operation" => operation.clone(), "region" => region.clone(), "outcome" => outcome)
            .increment(1);
        if outcome == aws_outcome::THROTTLED {
            counter!(AWS_THROTTLES, "service" => service.clone(), "operation" => operation.clone(), "region" => region)
                .increment(1);
        }
        if let Some(AttemptStarted(started)) = cfg.load::<AttemptStarted>() {
            histogram!(AWS_CALL, "service" => service, "operation" => operation)
                .record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

/// ok, throttled or error. Throttled: the error code is one of [`crate::aws::is_throttling_code`],
/// the status is 429, or the operation's own retry classifiers call it throttling (they know
/// the modeled error types, e.g. DynamoDB's ProvisionedThroughputExceededException).
fn attempt_outcome(context: &InterceptorContext, runtime_components: &RuntimeComponents) -> &'static str {
    let error = match context.output_or_error() {
        Some(Ok(_)) => return aws_outcome::OK,
        Some(Err(error)) => error,
        None => return aws_outcome::ERROR,
    };
    let code = error.as_operation_error().and_then(|e| error_code(e));
    let status = context.response().map(|r| r.status().as_u16());
    let throttled = code.is_some_and(crate::aws::is_throttling_code)
        || status == Some(429)
        || runtime_components.retry_classifiers().any(|classifier| {
            matches!(
                classifier.classify_retry(context),
                RetryAction::RetryIndicated(RetryReason::RetryableError { kind: ErrorKind::ThrottlingError, .. })
            )
        });
    if throttled {
        aws_outcome::THROTTLED
    } else {
        aws_outcome::ERROR
    }
}

/// The AWS error code of an operation error the SDK did not model: generated operation errors
/// keep the parsed `ErrorMetadata` as their source.
pub(crate) fn error_code<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a str> {
    error_metadata(error)?.code()
}

/// The parsed `ErrorMetadata` in an error's chain, if there is one.
pub(crate) fn error_metadata<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ErrorMetadata> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(metadata) = current.downcast_ref::<ErrorMetadata>() {
            return Some(metadata);
        }
        next = current.source();
    }
    None
}
