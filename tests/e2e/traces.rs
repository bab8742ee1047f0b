//! One trace per restore request, as a user follows it in Grafana: the real `lifeboat` binary
//! serves every service and submits a request with several restore sets (EBS in two regions,
//! one of them across regions, and a DynamoDB table), exporting OTLP/HTTP to a receiver inside
//! the test. Every span of the request shares one trace id, from the CLI's submission through
//! discovery, the resource services and their re-checks to the aggregator's verdict; every span
//! but the root has its parent in the trace; AWS calls are spans with operation and region.
//!
//! The services run as child processes because the tracer is global to a process and this
//! binary holds every test; the test builds the binary first if it is missing or stale.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use lifeboat_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const REQUEST_ID: &str = "traced-1";
/// How long the services and the CLI get for the restore, and then for exporting.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(90);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(20);

/// One exported span, flattened with its resource's `service.name`.
#[derive(Clone, Debug)]
struct Collected {
    service_name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: BTreeMap<String, String>,
}

impl Collected {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Spans = Arc<Mutex<Vec<Collected>>>;

/// An OTLP/HTTP trace receiver: `POST /v1/traces` with an ExportTraceServiceRequest in protobuf.
struct Receiver {
    endpoint: String,
    spans: Spans,
    shutdown: CancellationToken,
}

impl Receiver {
    async fn start() -> Self {
        let spans = Spans::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("receiver address"));
        let shutdown = CancellationToken::new();
        let router = Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await.expect("OTLP receiver")
        });
        Self { endpoint, spans, shutdown }
    }

    fn spans(&self) -> Vec<Collected> {
        self.spans.lock().expect("spans lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn receive(State(spans): State<Spans>, headers: HeaderMap, body: Bytes) -> Response {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    if encoding != "identity" {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("content-encoding {encoding}")).into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut collected = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
        let service_name = resource.get("service.name").cloned().unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
            collected.push(Collected {
                service_name: service_name.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attributes: attributes(&span.attributes),
            });
        }
    }
    spans.lock().expect("spans lock").extend(collected);
    let response = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], response).into_response()
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    let text = |value: &AnyValue| match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    };
    attributes.iter().filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)))).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `lifeboat` binary as a user on this machine runs it against `servers`: their NATS and
/// moto, test credentials, the default region us-east-1, and no AWS profile.
pub(crate) fn lifeboat_command(servers: &Servers) -> std::process::Command {
    let mut command = std::process::Command::new(lifeboat_binary());
    command
        .env_remove("AWS_PROFILE")
        .env("NATS_URL", &servers.nats_url)
        .env("AWS_ENDPOINT_URL", &servers.moto_url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1");
    command
}

/// The `lifeboat` binary of this build: `$LIFEBOAT_BIN`, or the one next to this test binary's
/// directory, built (or found fresh) by cargo first. `cargo test` builds only the binaries of the
/// package under test, so a plain run would otherwise find none, or last week's.
pub(crate) fn lifeboat_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(path) = std::env::var("LIFEBOAT_BIN") {
                return PathBuf::from(path);
            }
            let test_binary = std::env::current_exe().expect("test binary path");
            // target/<profile>/deps/e2e-<hash>
            let profile_dir = test_binary.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
            let target_dir = profile_dir.parent().expect("target dir");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(other) => other.to_string(),
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut build = std::process::Command::new(cargo);
            build
                .args(["build", "--quiet", "-p", "lifeboat-cli", "--bin", "lifeboat", "--profile", &profile])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(workspace);
            // What cargo set for this test is not the build's: build scripts that read such a
            // variable (ring reads CARGO_MANIFEST_DIR) would rebuild half the tree for nothing.
            for (name, _) in std::env::vars() {
                let set_by_cargo =
                    ["CARGO_PKG_", "CARGO_BIN_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_TARGET_TMPDIR"]
                        .iter()
                        .any(|prefix| name.starts_with(prefix))
                        || ["OUT_DIR", "CARGO_PRIMARY_PACKAGE", "CARGO_RUSTC_CURRENT_DIR"].contains(&name.as_str());
                if set_by_cargo {
                    build.env_remove(name);
                }
            }
            let status = build.status().expect("run cargo to build the lifeboat binary");
            assert!(status.success(), "cargo build of the lifeboat binary failed");
            profile_dir.join("lifeboat")
        })
        .clone()
}

/// What every `lifeboat` process of the test gets: the test's moto and NATS, and the receiver.
fn lifeboat(servers: &Servers, receiver: &Receiver, service_name: Option<&str>) -> Command {
    let mut command = Command::new(lifeboat_binary());
    for variable in
        ["AWS_PROFILE", "AWS_SESSION_TOKEN", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED"]
    {
        command.env_remove(variable);
    }
    command
        .env("AWS_ENDPOINT_URL", &servers.moto_url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("NATS_URL", &servers.nats_url)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    // Text logs on NATS, JSON lines on SQS: both must show the trace id.
    if servers.transport == Transport::Sqs {
        command.env("LIFEBOAT_LOG_FORMAT", "json");
    }
    if let Some(name) = service_name {
        command.env("OTEL_SERVICE_NAME", name);
    }
    if servers.transport == Transport::Sqs {
        let sqs = servers.sqs_config();
        command
            .arg("--transport")
            .arg("sqs")
            .env("LIFEBOAT_SQS_WAIT_SECONDS", sqs.wait_time.as_secs().to_string())
            .env("LIFEBOAT_SQS_MAX_RECEIVE_COUNT", sqs.max_receive_count.to_string())
            .env("LIFEBOAT_STATE_TABLE", STATE_TABLE);
    }
    command
}

async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    fixtures::create_table(ddb, name, &[("app", "shop")]).await;
    ddb.create_backup().table_name(name).backup_name("nightly").send().await.expect("create backup");
}

const REQUEST_FILE: &str = r#"
request_id: traced-1
restore_sets:
  - name: web
    source: {region: us-east-1, tags: {app: web}}
    resource_types: [ebs]
    target: {ebs: {availability_zone: us-east-1b}}
  - name: db-to-us-east-1
    source: {region: us-west-2, tags: {app: db}}
    resource_types: [ebs]
    target: {ebs: {region: us-east-1, availability_zone: us-east-1c}}
  - name: tables
    source: {region: us-east-1, tags: {app: shop}}
    resource_types: [dynamodb]
    target: {dynamodb: {name_suffix: restored}}
"#;

/// Stops a child the way an orchestrator does (SIGTERM, then it drains and flushes) and waits.
async fn terminate(child: &mut Child, what: &str) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
    }
    match tokio::time::timeout(EXPORT_TIMEOUT, child.wait()).await {
        Ok(status) => assert!(status.expect("wait").success(), "{what} exited with an error after SIGTERM"),
        Err(_) => panic!("{what} did not stop within {EXPORT_TIMEOUT:?} of SIGTERM"),
    }
}

async fn wait_ready(url: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = reqwest::get(url).await {
            if response.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("lifeboat serve exited with {status}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "lifeboat serve not ready within 60s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The spans of the request: the ones naming it, with everything below them.
fn request_spans(spans: &[Collected]) -> Vec<&Collected> {
    let mut wanted: HashSet<&str> = spans
        .iter()
        .filter(|s| s.attribute("lifeboat.request_id") == Some(REQUEST_ID))
        .map(|s| s.span_id.as_str())
        .collect();
    loop {
        let before = wanted.len();
        for span in spans {
            if wanted.contains(span.parent_span_id.as_str()) {
                wanted.insert(span.span_id.as_str());
            }
        }
        if wanted.len() == before {
            break;
        }
    }
    spans.iter().filter(|s| wanted.contains(s.span_id.as_str())).collect()
}

/// The service whose work a span is part of: its own `lifeboat.service`, or its nearest
/// ancestor's (a publish inside `restore.task` inside `messaging.process`).
fn service_of<'a>(span: &'a Collected, by_id: &HashMap<&str, &'a Collected>) -> Option<&'a str> {
    let mut current = Some(span);
    while let Some(span) = current {
        if let Some(service) = span.attribute("lifeboat.service") {
            return Some(service);
        }
        current = by_id.get(span.parent_span_id.as_str()).copied();
    }
    None
}

/// Services whose work on the request is in the trace, by the `lifeboat.service` of their spans.
fn services_in(spans: &[&Collected]) -> BTreeSet<String> {
    spans.iter().filter_map(|s| s.attribute("lifeboat.service")).map(str::to_string).collect()
}

async fn a_restore_is_one_trace_from_submission_to_verdict(transport: Transport) {
    init_logging();
    let started = Instant::now();
    let servers = Servers::start_with(transport).await;
    let receiver = Receiver::start().await;
    let east = servers.ec2("us-east-1");
    let west = servers.ec2("us-west-2");
    for name in ["web-a", "web-b"] {
        let volume = create_volume(&east, "us-east-1a", 8, &[("app", "web"), ("Name", name)]).await;
        create_snapshot(&east, &volume, &[("app", "web")]).await;
    }
    let db = create_volume(&west, "us-west-2a", 20, &[("app", "db")]).await;
    create_snapshot(&west, &db, &[("app", "db")]).await;
    create_table(&aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1")), "orders").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let request_file = dir.path().join("request.yaml");
    std::fs::write(&request_file, REQUEST_FILE).expect("write the request file");

    let binary = tokio::task::spawn_blocking(lifeboat_binary).await.expect("build the lifeboat binary");
    assert!(binary.exists(), "{} exists", binary.display());
    let serve_log = dir.path().join("serve.log");
    let mut serve = lifeboat(&servers, &receiver, None)
        .args(["serve", "all", "--check-interval", "0.2", "--http-addr"])
        .arg(format!("127.0.0.1:{}", servers.api_port))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&serve_log).expect("serve log"))
        .spawn()
        .expect("start lifeboat serve all");
    wait_ready(&format!("{}/readyz", servers.api_url()), &mut serve, &serve_log).await;
    let ready_at = started.elapsed();

    let mut submit = lifeboat(&servers, &receiver, Some("lifeboat-cli"));
    submit.args(["restore", "submit", "--watch", "--output", "json", "--timeout", "80"]).arg(&request_file);
    if transport == Transport::Sqs {
        submit.arg("--api-url").arg(servers.api_url());
    }
    let submitted =
        tokio::time::timeout(RESTORE_TIMEOUT, submit.stderr(Stdio::piped()).stdout(Stdio::piped()).output())
            .await
            .expect("the restore finishes in time")
            .expect("run lifeboat restore submit");
    let restored_in = started.elapsed() - ready_at;
    terminate(&mut serve, "lifeboat serve").await;
    let serve_output = std::fs::read_to_string(&serve_log).unwrap_or_default();
    assert!(
        submitted.status.success(),
        "restore submit: {}\nstdout: {}\nstderr: {}\nserve:\n{serve_output}",
        submitted.status,
        String::from_utf8_lossy(&submitted.stdout),
        String::from_utf8_lossy(&submitted.stderr),
    );
    let summary: serde_json::Value = serde_json::from_slice(&submitted.stdout).expect("the final summary as JSON");
    assert_eq!(summary["total_tasks"].as_u64(), Some(4), "{summary:#}");

    // Both processes flushed on exit; the receiver may still be storing the last batch.
    let deadline = Instant::now() + EXPORT_TIMEOUT;
    let spans = loop {
        let spans = receiver.spans();
        let services = services_in(&request_spans(&spans));
        let verdict_seen = spans.iter().any(|s| s.attribute("lifeboat.service") == Some("aggregator"));
        if (services.len() >= 5 && verdict_seen) || Instant::now() >= deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let request = request_spans(&spans);
    let by_id: HashMap<&str, &Collected> = request.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let describe = |s: &Collected| format!("{} [{}] {:?}", s.name, s.service_name, s.attributes);

    // One trace id across every span of the request.
    let traces: BTreeSet<&str> = request.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), 1, "one trace for the request, got {traces:?}");
    let trace_id = *traces.first().expect("a trace");
    let in_trace: Vec<&Collected> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    assert_eq!(in_trace.len(), request.len(), "every span of the trace belongs to the request");

    // It starts at the CLI's submission and every other span hangs off a span of the trace.
    let roots: Vec<&&Collected> = request.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {:?}", roots.iter().map(|s| describe(s)).collect::<Vec<_>>());
    assert_eq!(roots[0].name, "lifeboat.submit");
    assert_eq!(roots[0].service_name, "lifeboat-cli");
    assert_eq!(roots[0].attribute("lifeboat.request_id"), Some(REQUEST_ID));
    for span in &request {
        if !span.parent_span_id.is_empty() {
            assert!(by_id.contains_key(span.parent_span_id.as_str()), "parent of {} is in the trace", describe(span));
        }
    }

    // Discovery, each resource service and the aggregator, each below a publish of the bus.
    assert_eq!(
        services_in(&request),
        ["aggregator", "cli", "discovery", "dynamodb", "ebs"].into_iter().map(String::from).collect(),
        "services in the trace"
    );
    let system = match transport {
        Transport::Nats => "nats",
        Transport::Sqs => "aws_sqs",
    };
    let processed = |service: &str| -> Vec<&Collected> {
        request
            .iter()
            .filter(|s| s.attribute("lifeboat.service") == Some(service) && s.kind == SpanKind::Consumer as i32)
            .copied()
            .collect()
    };
    for service in ["discovery", "ebs", "dynamodb", "aggregator"] {
        let consumed = processed(service);
        assert!(!consumed.is_empty(), "{service} processed messages of the request");
        for span in &consumed {
            assert_eq!(span.attribute("messaging.system"), Some(system), "{}", describe(span));
            assert_eq!(span.attribute("messaging.operation.type"), Some("process"), "{}", describe(span));
            assert_eq!(span.attribute("lifeboat.request_id"), Some(REQUEST_ID), "{}", describe(span));
            let parent = by_id[span.parent_span_id.as_str()];
            assert_eq!(parent.kind, SpanKind::Producer as i32, "{} follows a publish", describe(span));
            assert_eq!(parent.attribute("messaging.operation.type"), Some("send"));
            assert!(span.attribute("trace_id") == Some(trace_id), "log lines inside carry the trace id");
        }
    }
    let discovery = processed("discovery");
    assert_eq!(discovery[0].name, "process lifeboat.restore.requests");
    assert_eq!(by_id[discovery[0].parent_span_id.as_str()].name, "publish lifeboat.restore.requests");
    // Work published by discovery: each resource service's task is a child of discovery's publish.
    for service in ["ebs", "dynamodb"] {
        for span in processed(service) {
            assert!(span.attribute("lifeboat.task_id").is_some(), "{}", describe(span));
            let publish = by_id[span.parent_span_id.as_str()];
            let publisher = by_id[publish.parent_span_id.as_str()];
            assert_eq!(service_of(publisher, &by_id), Some("discovery"), "{}", describe(span));
        }
    }
    // The cross-region copy is re-checked by delayed redelivery, in the same trace.
    assert!(
        processed("ebs").iter().any(|s| s.attribute("messaging.delivery_attempt").is_some_and(|a| a != "1")),
        "a redelivered re-check is in the trace"
    );
    // The verdict: the aggregator processed the status events of every service.
    let reporters: BTreeSet<&str> = processed("aggregator")
        .iter()
        .filter_map(|s| {
            let publish = by_id[s.parent_span_id.as_str()];
            service_of(by_id.get(publish.parent_span_id.as_str())?, &by_id)
        })
        .collect();
    assert!(reporters.is_superset(&BTreeSet::from(["discovery", "ebs", "dynamodb"])), "{reporters:?}");

    // Logs: a line inside the request's work names its trace.
    let planned =
        serve_output.lines().find(|line| line.contains("request planned")).expect("discovery logged the plan");
    match transport {
        Transport::Nats => assert!(planned.contains(&format!("trace_id={trace_id}")), "{planned}"),
        Transport::Sqs => {
            let line: serde_json::Value = serde_json::from_str(planned).expect("a JSON log line");
            let spans = line["spans"].as_array().expect("the line's spans");
            assert!(spans.iter().any(|span| span["trace_id"] == trace_id), "{planned}");
        }
    }

    // AWS calls: client spans named Service.Operation with the operation and region.
    let aws: Vec<&Collected> =
        request.iter().filter(|s| s.attribute("rpc.system") == Some("aws-api")).copied().collect();
    for span in &aws {
        assert_eq!(span.kind, SpanKind::Client as i32, "{}", describe(span));
        let (service, method) =
            (span.attribute("rpc.service").unwrap_or(""), span.attribute("rpc.method").unwrap_or(""));
        assert!(!method.is_empty() && span.name == format!("{service}.{method}"), "{}", describe(span));
        assert!(span.attribute("cloud.region").is_some_and(|r| !r.is_empty()), "{}", describe(span));
        assert!(span.attribute("aws.attempts").is_some(), "{}", describe(span));
    }
    let calls: BTreeSet<(&str, &str)> = aws
        .iter()
        .map(|s| (s.attribute("rpc.method").unwrap_or(""), s.attribute("cloud.region").unwrap_or("")))
        .collect();
    for expected in [
        ("DescribeSnapshots", "us-west-2"),
        ("CopySnapshot", "us-east-1"),
        ("CreateVolume", "us-east-1"),
        ("RestoreTableFromBackup", "us-east-1"),
    ] {
        assert!(calls.contains(&expected), "AWS call {expected:?} traced; traced: {calls:?}");
    }
    if transport == Transport::Sqs {
        assert!(calls.iter().any(|(method, _)| method.starts_with("SendMessage")), "SQS sends traced: {calls:?}");
    }
    eprintln!(
        "{transport:?}: {} spans in the request's trace ({} AWS calls); services ready after {ready_at:?}, restore \
         done in {restored_in:?}, all in {:?}",
        request.len(),
        aws.len(),
        started.elapsed()
    );
}

on_both_transports!(a_restore_is_one_trace_from_submission_to_verdict);
