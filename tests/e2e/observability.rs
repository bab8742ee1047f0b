//! What a deployment probes over HTTP: `/healthz`, `/readyz` naming the components that are not
//! ready and why, and `/metrics` with the consumer, restore-task and AWS call metrics after real
//! work (the restore shell on an in-memory bus, SDK clients answered by aws-smithy-mocks).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::Region;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use lifeboat_common::bus::{Bus, BusError, Delivery, OutgoingMessage, Queue, QueueOptions, Settle, WorkSource};
use lifeboat_common::http::{self, Health, HttpServer};
use lifeboat_common::metrics::{self as lifeboat_metrics, AwsMetrics};
use lifeboat_common::restore::{RestoreService, Restorer, ServiceConfig, Step};
use lifeboat_common::ConsumerOptions;
use lifeboat_proto as pb;
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn start(health: &Health, shutdown: &CancellationToken) -> (HttpServer, String) {
    let router = http::router(health.clone(), lifeboat_metrics::install());
    let server = http::serve(([127, 0, 0, 1], 0).into(), router, shutdown.clone()).await.expect("listens");
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

async fn get(url: &str) -> (u16, String, String) {
    let response = reqwest::get(url).await.expect("http server answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, response.text().await.expect("body"))
}

async fn get_json(url: &str) -> (u16, Value) {
    let (status, _, body) = get(url).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url} answered non-JSON {body:?}: {e}")))
}

/// The value of the sample `series` (name and labels, exactly as rendered) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn probes_answer_and_readiness_names_what_is_not_ready() {
    let health = Health::new();
    let bus = health.component("bus");
    let shutdown = CancellationToken::new();
    let (server, base) = start(&health, &shutdown).await;

    assert_eq!(get(&format!("{base}/healthz")).await.2, "ok");
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["components"]["bus"], serde_json::json!({"ready": false, "reason": "starting"}));

    bus.not_ready("nats unreachable");
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!((status, &body["components"]["bus"]["reason"]), (503, &Value::from("nats unreachable")));

    bus.ready();
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"status": "ready", "components": {"bus": {"ready": true}}}));

    let (status, body) = get_json(&format!("{base}/v1/nothing-here")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no route for GET /v1/nothing-here");

    let (status, content_type, _) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.wait()).await.expect("stops").expect("stops cleanly");
}

#[tokio::test]
async fn aws_attempts_and_throttles_are_counted_per_operation_and_region() {
    use aws_sdk_ec2::operation::describe_account_attributes::{
        DescribeAccountAttributesError, DescribeAccountAttributesOutput,
    };
    use aws_sdk_ec2::operation::describe_regions::DescribeRegionsError;

    let health = Health::new();
    let shutdown = CancellationToken::new();
    let (_server, base) = start(&health, &shutdown).await;

    let throttled_once = mock!(aws_sdk_ec2::Client::describe_account_attributes)
        .sequence()
        .error(|| {
            DescribeAccountAttributesError::generic(
                ErrorMetadata::builder().code("RequestLimitExceeded").message("slow down").build(),
            )
        })
        .output(|| DescribeAccountAttributesOutput::builder().build())
        .build();
    let denied = mock!(aws_sdk_ec2::Client::describe_regions).then_error(|| {
        DescribeRegionsError::generic(ErrorMetadata::builder().code("UnauthorizedOperation").message("no").build())
    });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&throttled_once, &denied], |config| config
        .region(Region::new("eu-south-2"))
        .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(1)))
        .interceptor(AwsMetrics::new()));
    ec2.describe_account_attributes().send().await.expect("the SDK retries the throttled attempt");
    ec2.describe_regions().send().await.expect_err("access denied is not retried");

    let scrape = get(&format!("{base}/metrics")).await.2;
    let series = |name: &str, labels: &str| sample(&scrape, &format!("{name}{{{labels}}}"));
    let op = r#"service="EC2",operation="DescribeAccountAttributes",region="eu-south-2""#;
    assert_eq!(series(lifeboat_metrics::AWS_THROTTLES, op), Some(1.0), "{scrape}");
    assert_eq!(series(lifeboat_metrics::AWS_CALLS, &format!(r#"{op},outcome="throttled""#)), Some(1.0));
    assert_eq!(series(lifeboat_metrics::AWS_CALLS, &format!(r#"{op},outcome="ok""#)), Some(1.0));
    let attempts = r#"service="EC2",operation="DescribeAccountAttributes""#;
    assert_eq!(series("lifeboat_aws_call_seconds_count", attempts), Some(2.0), "both attempts are timed");

    let denied_op = r#"service="EC2",operation="DescribeRegions",region="eu-south-2""#;
    assert_eq!(series(lifeboat_metrics::AWS_CALLS, &format!(r#"{denied_op},outcome="error""#)), Some(1.0));
    assert_eq!(series(lifeboat_metrics::AWS_THROTTLES, denied_op), None, "access denied is no throttle");
    shutdown.cancel();
}

#[tokio::test]
async fn modeled_throttling_errors_count_as_throttles() {
    use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
    use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException;

    // Installed before the calls: until then the facade records nowhere.
    let metrics = lifeboat_metrics::install();
    let code = "ProvisionedThroughputExceededException";
    let throttled_once = mock!(aws_sdk_dynamodb::Client::get_item)
        .sequence()
        .error(move || {
            GetItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("too fast")
                    .meta(ErrorMetadata::builder().code(code).build())
                    .build(),
            )
        })
        .output(|| GetItemOutput::builder().build())
        .build();
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled_once], |config| config
        .region(Region::new("eu-south-2"))
        .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(1)))
        .interceptor(AwsMetrics::new()));
    dynamodb.get_item().table_name("t").send().await.expect("retried");

    let scrape = metrics.render();
    let op = r#"service="DynamoDB",operation="GetItem",region="eu-south-2""#;
    assert_eq!(sample(&scrape, &format!("{}{{{op}}}", lifeboat_metrics::AWS_THROTTLES)), Some(1.0), "{scrape}");
}

/// An in-memory bus: deliveries come from a channel, publishes are kept, settlements reported.
struct MemoryBus {
    deliveries_rx: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
    published: Mutex<Vec<OutgoingMessage>>,
}

struct ChannelSource(mpsc::UnboundedReceiver<Delivery>);

#[async_trait]
impl WorkSource for ChannelSource {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        self.0.recv().await.map(Ok)
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), BusError> {
        self.published.lock().unwrap().push(message);
        Ok(())
    }

    async fn publish_all(&self, messages: Vec<OutgoingMessage>) -> Result<(), BusError> {
        self.published.lock().unwrap().extend(messages);
        Ok(())
    }

    async fn notify(&self, _message: OutgoingMessage) -> Result<(), BusError> {
        Ok(())
    }

    async fn consume(&self, _queue: &Queue, _options: &QueueOptions) -> Result<Box<dyn WorkSource>, BusError> {
        let deliveries_rx = self.deliveries_rx.lock().unwrap().take();
        let deliveries_rx = deliveries_rx.ok_or_else(|| BusError::Receive("consumed twice".into()))?;
        Ok(Box::new(ChannelSource(deliveries_rx)))
    }
}

struct ReportSettle(mpsc::UnboundedSender<&'static str>);

#[async_trait]
impl Settle for ReportSettle {
    async fn ack(&self) -> Result<(), BusError> {
        let _ = self.0.send("ack");
        Ok(())
    }
    async fn retry_after(&self, _delay: Duration) -> Result<(), BusError> {
        let _ = self.0.send("retry");
        Ok(())
    }
    async fn in_progress(&self) -> Result<(), BusError> {
        Ok(())
    }
    async fn terminate(&self) -> Result<(), BusError> {
        let _ = self.0.send("terminate");
        Ok(())
    }
}

/// Restores nothing: a task whose backup id says `fail` fails with OBSERVED_FAILURE.
struct OutcomeByBackupId;

#[async_trait]
impl Restorer for OutcomeByBackupId {
    fn kind(&self) -> &'static str {
        "observability"
    }

    fn check(&self, _task: &pb::RestoreTask) -> Result<(), String> {
        Ok(())
    }

    async fn step(
        &self,
        task: &pb::RestoreTask,
        _attempt: u32,
        _progress: &mut lifeboat_common::restore::Progress,
    ) -> Result<Step, lifeboat_common::aws::AwsError> {
        Ok(match task.backup.as_ref().map(|b| b.backup_id.as_str()) {
            Some("fail") => Step::Failed { code: "OBSERVED_FAILURE".into(), message: "as asked".into() },
            _ => Step::Done { message: "done".into(), created: vec!["x".into()], warnings: vec![] },
        })
    }
}

#[tokio::test]
async fn the_consumer_reports_readiness_and_the_restore_shell_counts_tasks() {
    let health = Health::new();
    let http_shutdown = CancellationToken::new();
    let (_server, base) = start(&health, &http_shutdown).await;

    let (deliveries_tx, deliveries_rx) = mpsc::unbounded_channel();
    let bus = Arc::new(MemoryBus { deliveries_rx: Mutex::new(Some(deliveries_rx)), published: Mutex::default() });
    let config = ServiceConfig {
        consumer: ConsumerOptions { health: Some(health.clone()), ..ServiceConfig::default().consumer },
        ..ServiceConfig::default()
    };
    let service = RestoreService::new(OutcomeByBackupId, bus.clone(), config);
    let service_shutdown = CancellationToken::new();
    let running = tokio::spawn(service.run(service_shutdown.clone()));

    let consumer = "work-observability";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_json(&format!("{base}/readyz")).await;
        if status == 200 {
            assert_eq!(body["components"][consumer]["ready"], true, "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "consumer never became ready: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let before = get(&format!("{base}/metrics")).await.2;
    let (settled_tx, mut settled_rx) = mpsc::unbounded_channel();
    let queued_at = SystemTime::now() - Duration::from_secs(3);
    for backup_id in ["ok", "fail"] {
        let task = pb::RestoreTask {
            request_id: "r-observability".into(),
            task_id: format!("t-{backup_id}"),
            // A type no real task has: other tests in this binary finish real tasks into the
            // same process-wide registry.
            resource_type: pb::ResourceType::Unspecified as i32,
            backup: Some(pb::Backup { backup_id: backup_id.into(), ..Default::default() }),
            ..Default::default()
        };
        let settle = Box::new(ReportSettle(settled_tx.clone()));
        let delivery = Delivery::new(
            "lifeboat.work.observability".into(),
            task.encode_to_vec().into(),
            BTreeMap::new(),
            1,
            settle,
        )
        .published_at(Some(queued_at));
        deliveries_tx.send(delivery).expect("consumer listens");
    }
    for _ in 0..2 {
        let settled = tokio::time::timeout(Duration::from_secs(10), settled_rx.recv()).await.expect("settled");
        assert_eq!(settled, Some("ack"), "a finished task is acknowledged, failed or not");
    }

    let scrape = get(&format!("{base}/metrics")).await.2;
    let series = |name: &str, labels: &str| sample(&scrape, &format!("{name}{{{labels}}}"));
    let queue = format!(r#"queue="{consumer}""#);
    // What this test added: undecodable work elsewhere also finishes `unspecified` tasks.
    let added = |name: &str, labels: &str| {
        let key = format!("{name}{{{labels}}}");
        sample(&scrape, &key).map(|after| after - sample(&before, &key).unwrap_or(0.0))
    };
    assert_eq!(
        series(lifeboat_metrics::MESSAGES_HANDLED, &format!(r#"{queue},outcome="done""#)),
        Some(2.0),
        "{scrape}"
    );
    assert_eq!(series("lifeboat_queue_lag_seconds_count", &queue), Some(2.0));
    assert_eq!(series("lifeboat_queue_lag_seconds_bucket", &format!(r#"{queue},le="1""#)), Some(0.0), "lag >= 3 s");
    assert_eq!(series("lifeboat_message_handle_seconds_count", &queue), Some(2.0));
    let succeeded = r#"resource_type="unspecified",phase="succeeded",reason="""#;
    let failed = r#"resource_type="unspecified",phase="failed",reason="OBSERVED_FAILURE""#;
    assert_eq!(added(lifeboat_metrics::TASKS_FINISHED, succeeded), Some(1.0), "{scrape}");
    assert_eq!(added(lifeboat_metrics::TASKS_FINISHED, failed), Some(1.0));
    let failed_duration = r#"resource_type="unspecified",phase="failed""#;
    assert_eq!(added("lifeboat_task_duration_seconds_count", failed_duration), Some(1.0));
    assert_eq!(
        added("lifeboat_task_duration_seconds_bucket", &format!(r#"{failed_duration},le="1""#)),
        Some(0.0),
        "the duration counts from when the task was queued"
    );

    service_shutdown.cancel();
    running.await.expect("joins").expect("consumer stops cleanly");
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["components"][consumer], serde_json::json!({"ready": false, "reason": "stopped"}));
    assert!(!bus.published.lock().unwrap().is_empty(), "status events were published");
    http_shutdown.cancel();
}
