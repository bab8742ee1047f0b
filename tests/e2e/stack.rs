//! The local stack users bring up with `docker compose up --build` (there is no Docker here, so
//! the files are checked instead): the compose files parse and name only services and files that
//! exist, the collector, Tempo, Prometheus and Grafana configs point at each other, and the
//! Lifeboat dashboard covers what it should with queries naming only metrics that a real restore
//! makes the services export.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::Region;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use clap::ValueEnum;
use lifeboat_cli::serve::ServiceName;
use lifeboat_common::metrics::AwsMetrics;
use lifeboat_proto as pb;
use lifeboat_tests::*;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

const COMPOSE: &str = "docker-compose.yml";
const COMPOSE_SQS: &str = "docker-compose.sqs.yml";
const DASHBOARD: &str = "deploy/grafana/dashboards/lifeboat.json";
const DATASOURCES: &str = "deploy/grafana/provisioning/datasources";
const DASHBOARD_PROVIDERS: &str = "deploy/grafana/provisioning/dashboards";
/// What the stack runs besides Lifeboat's own services.
const INFRASTRUCTURE: &[&str] = &["nats", "moto", "otel-collector", "tempo", "prometheus", "grafana"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A YAML file with its `<<` merge keys applied, as Docker Compose reads them.
fn yaml(path: impl AsRef<Path>) -> Yaml {
    let text = read(path.as_ref());
    let mut value: Yaml =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.as_ref().display()));
    value.apply_merge().unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.as_ref().display()));
    value
}

fn dashboard() -> Json {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD} does not parse: {e}"))
}

fn text(value: &Yaml) -> &str {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value:?}"))
}

fn strings(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Null => Vec::new(),
        Yaml::Sequence(items) => items.iter().map(|i| text(i).to_string()).collect(),
        // The long form of depends_on: service name -> condition.
        Yaml::Mapping(map) => map.keys().map(|k| text(k).to_string()).collect(),
        other => vec![text(other).to_string()],
    }
}

/// `host` and `port` of `http://host:port/...` or `host:port`.
fn host_port(address: &str) -> (String, u16) {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap_or_else(|| panic!("{address}: no port"));
    (host.to_string(), port.parse().unwrap_or_else(|_| panic!("{address}: bad port")))
}

/// The compose services of both files, by name.
struct Compose {
    base: Yaml,
    sqs: Yaml,
}

impl Compose {
    fn load() -> Self {
        Self { base: yaml(COMPOSE), sqs: yaml(COMPOSE_SQS) }
    }

    fn services(file: &Yaml) -> &serde_yaml_ng::Mapping {
        file["services"].as_mapping().expect("a services mapping")
    }

    fn names(&self) -> BTreeSet<String> {
        [&self.base, &self.sqs]
            .into_iter()
            .flat_map(|f| Self::services(f).keys().map(|k| text(k).to_string()))
            .collect()
    }

    fn service(&self, name: &str) -> &Yaml {
        let service = &self.base["services"][name];
        assert!(!service.is_null(), "{COMPOSE} has no service {name}");
        service
    }

    /// Lifeboat service name (`ebs`) -> compose service name, from `command: [serve, ebs]`.
    fn lifeboat_services(&self) -> BTreeMap<String, String> {
        Self::services(&self.base)
            .iter()
            .filter_map(|(name, service)| {
                let command = strings(&service["command"]);
                (command.first().map(String::as_str) == Some("serve"))
                    .then(|| (command[1].clone(), text(name).to_string()))
            })
            .collect()
    }

    fn env<'a>(&'a self, service: &str, key: &str) -> &'a str {
        let value = &self.service(service)["environment"][key];
        value.as_str().unwrap_or_else(|| panic!("service {service} has no {key} in its environment"))
    }

    /// The file mounted at `target` into `service`, relative to the repository, e.g. the
    /// `./deploy/tempo.yaml` of `./deploy/tempo.yaml:/etc/tempo.yaml:ro`.
    fn mounted_at(&self, service: &str, target: &str) -> String {
        strings(&self.service(service)["volumes"])
            .iter()
            .find_map(|volume| {
                let mut parts = volume.split(':');
                let (source, mounted) = (parts.next()?, parts.next()?);
                (mounted == target && source.starts_with('.')).then(|| source.trim_start_matches("./").to_string())
            })
            .unwrap_or_else(|| panic!("service {service} mounts nothing from the repository at {target}"))
    }

    /// The config file `service` reads, found through the `flag=path` of its command.
    fn config_of(&self, service: &str, flag: &str) -> Yaml {
        let command = strings(&self.service(service)["command"]);
        let path = command
            .iter()
            .find_map(|arg| arg.strip_prefix(flag))
            .unwrap_or_else(|| panic!("service {service} has no {flag} in {command:?}"));
        yaml(self.mounted_at(service, path))
    }
}

#[test]
fn docker_compose_runs_every_service_and_the_telemetry_stack_from_files_that_exist() {
    let compose = Compose::load();
    let defined = compose.names();
    for name in INFRASTRUCTURE {
        assert!(Compose::services(&compose.base).contains_key(*name), "{COMPOSE} has no {name} service");
    }

    // Every Lifeboat service runs in a container of its own, and only real services are named.
    let lifeboat = compose.lifeboat_services();
    for served in lifeboat.keys() {
        assert!(ServiceName::from_str(served, false).is_ok(), "{COMPOSE} runs unknown service {served}");
    }
    for variant in ServiceName::value_variants().iter().filter(|v| **v != ServiceName::All) {
        let name = variant.to_possible_value().unwrap().get_name().to_string();
        assert!(lifeboat.contains_key(&name), "{COMPOSE} does not run `lifeboat serve {name}`");
    }

    for (file_name, file) in [(COMPOSE, &compose.base), (COMPOSE_SQS, &compose.sqs)] {
        let declared_volumes: BTreeSet<String> = [&compose.base, file]
            .into_iter()
            .filter_map(|f| f["volumes"].as_mapping())
            .flat_map(|m| m.keys().map(|k| text(k).to_string()))
            .collect();
        for (name, service) in Compose::services(file) {
            let name = text(name);
            // An override file only adds to services of the base file, or brings its own image.
            assert!(
                file_name == COMPOSE || compose.base["services"][name].is_mapping() || service["image"].is_string(),
                "{file_name}: {name} overrides no service of {COMPOSE} and has no image"
            );
            for dependency in strings(&service["depends_on"]) {
                assert!(defined.contains(&dependency), "{file_name}: {name} depends on unknown service {dependency}");
            }
            for volume in strings(&service["volumes"]) {
                let source = volume.split(':').next().unwrap();
                if source.starts_with('.') || source.starts_with('/') {
                    let path = root().join(source);
                    assert!(path.exists(), "{file_name}: {name} mounts {source}, which does not exist");
                } else {
                    assert!(declared_volumes.contains(source), "{file_name}: {name} uses undeclared volume {source}");
                }
            }
            if service["build"].is_mapping() {
                let context = root().join(text(&service["build"]["context"]));
                let dockerfile = text(&service["build"]["dockerfile"]);
                assert!(context.join(dockerfile).exists(), "{file_name}: {name} builds from missing {dockerfile}");
            }
            if let Some(image) = service["image"].as_str() {
                let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("latest");
                assert!(tag != "latest", "{file_name}: {name} runs {image}: pin a tag");
            }
        }
    }

    // Every Lifeboat container traces to the collector under a name of its own, and stays
    // probe-able; the SQS variant changes the transport of each of them and nothing else.
    let collector = compose.config_of("otel-collector", "--config=");
    let otlp_http = text(&collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]);
    let mut service_names = BTreeSet::new();
    for (served, container) in &lifeboat {
        let (host, port) = host_port(compose.env(container, "OTEL_EXPORTER_OTLP_ENDPOINT"));
        assert_eq!((host.as_str(), port), ("otel-collector", host_port(otlp_http).1), "{container}'s OTLP endpoint");
        let service_name = compose.env(container, "OTEL_SERVICE_NAME");
        assert_eq!(service_name, format!("lifeboat-{served}"));
        assert!(service_names.insert(service_name.to_string()), "{service_name} twice");
        assert_eq!(host_port(compose.env(container, "LIFEBOAT_HTTP_ADDR")), ("0.0.0.0".to_string(), 8080));
        let probe = strings(&compose.service(container)["healthcheck"]["test"]);
        assert_eq!(probe[1..3], ["lifeboat", "probe"], "{container} healthcheck");
        let sqs = &compose.sqs["services"][container.as_str()]["environment"];
        assert_eq!(sqs["LIFEBOAT_TRANSPORT"].as_str(), Some("sqs"), "{COMPOSE_SQS} leaves {container} on NATS");
    }

    // Collector -> Tempo, on the port Tempo receives OTLP gRPC on.
    let tempo = compose.config_of("tempo", "-config.file=");
    let tempo_otlp = host_port(text(&tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]));
    for protocol in ["grpc", "http"] {
        let (host, _) = host_port(text(&collector["receivers"]["otlp"]["protocols"][protocol]["endpoint"]));
        assert_eq!(host, "0.0.0.0", "the collector's OTLP {protocol} receiver must listen beyond localhost");
    }
    let exporters = collector["exporters"].as_mapping().expect("collector exporters");
    let traces = strings(&collector["service"]["pipelines"]["traces"]["exporters"]);
    assert!(!traces.is_empty(), "the collector's traces pipeline exports nowhere");
    for exporter in &traces {
        assert!(exporters.contains_key(exporter.as_str()), "the traces pipeline names unknown exporter {exporter}");
    }
    let to_tempo = traces.iter().find(|e| e.starts_with("otlp")).expect("an otlp exporter in the traces pipeline");
    let (host, port) = host_port(text(&collector["exporters"][to_tempo.as_str()]["endpoint"]));
    assert_eq!((host.as_str(), port), ("tempo", tempo_otlp.1), "the collector exports to Tempo's OTLP receiver");
    for receiver in strings(&collector["service"]["pipelines"]["traces"]["receivers"]) {
        assert!(collector["receivers"][receiver.as_str()].is_mapping(), "unknown receiver {receiver}");
    }

    // Tempo's metrics generator writes to Prometheus, which accepts remote writes.
    for remote in tempo["metrics_generator"]["storage"]["remote_write"].as_sequence().into_iter().flatten() {
        let (host, port) = host_port(text(&remote["url"]));
        assert!(defined.contains(&host), "Tempo remote-writes to unknown service {host}");
        assert_eq!(port, 9090);
        let flags = strings(&compose.service(&host)["command"]);
        assert!(flags.iter().any(|f| f == "--web.enable-remote-write-receiver"), "{host} refuses remote writes");
    }

    // Prometheus scrapes every Lifeboat service, labelled with its trace service name.
    let prometheus = compose.config_of("prometheus", "--config.file=");
    let mut scraped = BTreeMap::new();
    for job in prometheus["scrape_configs"].as_sequence().expect("scrape_configs") {
        assert_eq!(job["metrics_path"].as_str().unwrap_or("/metrics"), "/metrics");
        for static_config in job["static_configs"].as_sequence().expect("static_configs") {
            for target in strings(&static_config["targets"]) {
                let (host, port) = host_port(&target);
                assert!(defined.contains(&host), "Prometheus scrapes {target}, not a compose service");
                let label = static_config["labels"]["service_name"].as_str().map(str::to_string);
                scraped.insert(host, (port, label));
            }
        }
    }
    for container in lifeboat.values() {
        let expected = (8080, Some(compose.env(container, "OTEL_SERVICE_NAME").to_string()));
        assert_eq!(scraped.get(container), Some(&expected), "how Prometheus scrapes {container}");
    }

    // Grafana: provisioning and the dashboards directory mounted where the provisioning says.
    let provisioning = compose.mounted_at("grafana", "/etc/grafana/provisioning");
    assert_eq!(provisioning, "deploy/grafana/provisioning");
    let providers = yaml(format!("{DASHBOARD_PROVIDERS}/lifeboat.yaml"));
    for provider in providers["providers"].as_sequence().expect("dashboard providers") {
        let path = text(&provider["options"]["path"]);
        let dashboards = compose.mounted_at("grafana", path);
        assert!(root().join(&dashboards).join("lifeboat.json").exists(), "{path} holds no lifeboat.json");
    }
    let home = compose.env("grafana", "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH");
    let (directory, file) = home.rsplit_once('/').unwrap();
    assert!(root().join(compose.mounted_at("grafana", directory)).join(file).exists(), "home dashboard {home}");
    let datasources = datasources();
    for (uid, url) in &datasources {
        let (host, port) = host_port(url);
        assert!(defined.contains(&host), "data source {uid} points at {url}, not a compose service");
        if host == "tempo" {
            assert_eq!(Some(port as u64), tempo["server"]["http_listen_port"].as_u64(), "Tempo's query port");
        }
    }
    for kind in ["prometheus", "tempo"] {
        assert!(datasources.contains_key(kind), "no data source with uid {kind}");
    }
    let mut used = BTreeSet::new();
    datasource_uids(&dashboard(), &mut used);
    for uid in used {
        assert!(datasources.contains_key(&uid), "{DASHBOARD} uses data source {uid}, which is not provisioned");
    }

    // The image: multi-stage, locked, the one binary, non-root, probed by itself, no huge context.
    let dockerfile = read(text(&compose.base["x-lifeboat"]["build"]["dockerfile"]));
    assert!(dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")) >= 2, "multi-stage");
    for expected in
        ["--locked", "--bin lifeboat", "ca-certificates", "USER 10001", "HEALTHCHECK", "lifeboat\", \"probe"]
    {
        assert!(dockerfile.contains(expected), "deploy/Dockerfile lacks {expected}");
    }
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l.trim_end_matches('/') == "target"), ".dockerignore must leave out target/");
}

/// Provisioned data sources: uid -> URL.
fn datasources() -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(root().join(DATASOURCES)).unwrap() {
        let path = entry.unwrap().path();
        let file = yaml(path.strip_prefix(root()).unwrap());
        for source in file["datasources"].as_sequence().expect("datasources") {
            found.insert(text(&source["uid"]).to_string(), text(&source["url"]).to_string());
        }
    }
    found
}

/// Every data source uid the dashboard names (panels, targets, variables, annotations), except
/// Grafana's built-in one and template variables.
fn datasource_uids(value: &Json, uids: &mut BTreeSet<String>) {
    match value {
        Json::Object(object) => {
            if let Some(uid) = object.get("datasource").and_then(|d| d.get("uid")).and_then(Json::as_str) {
                if uid != "-- Grafana --" && !uid.starts_with('$') {
                    uids.insert(uid.to_string());
                }
            }
            object.values().for_each(|v| datasource_uids(v, uids));
        }
        Json::Array(items) => items.iter().for_each(|v| datasource_uids(v, uids)),
        _ => {}
    }
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL expression of the dashboard: panel targets and query variables.
fn prometheus_queries(dashboard: &Json) -> Vec<String> {
    let mut queries: Vec<String> = panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["datasource"]["type"] == "prometheus" {
            let query = variable["query"].get("query").unwrap_or(&variable["query"]);
            queries.extend(query.as_str().map(str::to_string));
        }
    }
    queries
}

/// The `lifeboat_*` metric names a PromQL expression reads (string literals left out: label
/// values and regexes name no metric).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut code = String::new();
    let mut quote = None;
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(_) if c == '\\' => {
                chars.next();
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '"' | '\'' | '`') => quote = Some(c),
            None => code.push(c),
        }
    }
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("lifeboat_"))
        .map(str::to_string)
        .collect()
}

/// Sample names in a Prometheus text exposition (`lifeboat_queue_lag_seconds_bucket`...).
fn exported_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

#[test]
fn metric_names_are_read_from_promql_without_labels_or_functions() {
    let expr = r#"histogram_quantile(0.95, sum by (le, queue) (rate(lifeboat_queue_lag_seconds_bucket{queue=~"lifeboat_x|work-.*"}[$__rate_interval]))) / lifeboat_tasks"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from(["lifeboat_queue_lag_seconds_bucket".into(), "lifeboat_tasks".into()])
    );
    let scrape = "# TYPE lifeboat_tasks gauge\nlifeboat_tasks{phase=\"queued\"} 1\nlifeboat_x 2\n\n";
    assert_eq!(exported_names(scrape), BTreeSet::from(["lifeboat_tasks".into(), "lifeboat_x".into()]));
}

#[test]
fn the_dashboard_covers_requests_tasks_durations_aws_queues_and_the_trace_of_a_request() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "lifeboat", "the trace links point at /d/lifeboat");
    let queries = prometheus_queries(&dashboard);
    let used: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    for (topic, metric) in [
        ("requests by verdict", "lifeboat_requests_finished_total"),
        ("request durations", "lifeboat_request_duration_seconds_bucket"),
        ("tasks finished", "lifeboat_tasks_finished_total"),
        ("task durations", "lifeboat_task_duration_seconds_bucket"),
        ("AWS throttles", "lifeboat_aws_throttles_total"),
        ("AWS calls", "lifeboat_aws_calls_total"),
        ("AWS call durations", "lifeboat_aws_call_seconds_bucket"),
        ("queue lag", "lifeboat_queue_lag_seconds_bucket"),
        ("messages handled", "lifeboat_messages_handled_total"),
        ("handler durations", "lifeboat_message_handle_seconds_bucket"),
    ] {
        assert!(used.contains(metric), "no panel shows {topic} ({metric})");
    }
    let by_type_and_phase = queries.iter().any(|q| {
        metric_names(q).contains("lifeboat_tasks")
            && q.split("by (").skip(1).any(|group| {
                let labels = group.split(')').next().unwrap();
                labels.contains("resource_type") && labels.contains("phase")
            })
    });
    assert!(by_type_and_phase, "no panel shows lifeboat_tasks by resource type and phase");

    // A request id typed into `request` finds its trace in Tempo; a click shows the waterfall.
    let variables: BTreeSet<&str> =
        dashboard["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(variables.contains("request") && variables.contains("trace"), "{variables:?}");
    let tempo_targets: Vec<(&Json, &Json)> = panels(&dashboard)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten().map(move |t| (p, t)))
        .filter(|(_, t)| t["datasource"]["uid"] == "tempo")
        .collect();
    let (by_request, _) = tempo_targets
        .iter()
        .find(|(_, t)| t["query"] == r#"{ span.lifeboat.request_id = "$request" }"#)
        .expect("a Tempo panel finding the trace of $request by lifeboat.request_id");
    let links = by_request["fieldConfig"]["overrides"].to_string();
    assert!(links.contains("var-trace=${__value.raw}"), "a trace id in the request's panel links to its waterfall");
    assert!(
        tempo_targets.iter().any(|(p, t)| p["type"] == "traces" && t["query"] == "$trace"),
        "no traces panel shows the waterfall of $trace"
    );
}

/// One AWS attempt throttled and retried, through the interceptor every Lifeboat client carries:
/// moto never throttles, and the throttle metric exists only once something was throttled.
async fn one_throttled_describe_snapshots() {
    use aws_sdk_ec2::operation::describe_snapshots::{DescribeSnapshotsError, DescribeSnapshotsOutput};
    let throttled_once = mock!(aws_sdk_ec2::Client::describe_snapshots)
        .sequence()
        .error(|| {
            DescribeSnapshotsError::generic(
                ErrorMetadata::builder().code("RequestLimitExceeded").message("slow down").build(),
            )
        })
        .output(|| DescribeSnapshotsOutput::builder().build())
        .build();
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&throttled_once], |config| config
        .region(Region::new("us-east-1"))
        .retry_config(RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(1)))
        .interceptor(AwsMetrics::new()));
    ec2.describe_snapshots().send().await.expect("the SDK retries the throttled attempt");
}

#[tokio::test]
async fn the_dashboard_queries_only_metrics_a_restore_makes_the_services_export() {
    init_logging();
    lifeboat_common::metrics::install();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    for name in ["a", "b"] {
        let volume = create_volume(&east, "us-east-1a", 4, &[("app", "stack"), ("Name", name)]).await;
        create_snapshot(&east, &volume, &[("app", "stack")]).await;
    }
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let target = pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() };
    let set = ebs_set("volumes", "us-east-1", &[("app", "stack")], None, target);
    client.submit(&request("stack-metrics", vec![set])).await.unwrap();
    let summary = final_summary(&client, "stack-metrics").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    one_throttled_describe_snapshots().await;

    let dashboard = dashboard();
    let wanted: BTreeSet<String> = prometheus_queries(&dashboard).iter().flat_map(|q| metric_names(q)).collect();
    assert!(wanted.len() >= 10, "the dashboard reads only {wanted:?}");
    // The recorder is process-wide: other tests add series, never take names away. A consumer
    // counts a delivery after its handler returns, so the last counts may trail the verdict.
    let url = format!("{}/metrics", servers.api_url());
    let mut missing = wanted.clone();
    for _ in 0..50 {
        let scrape = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let exported = exported_names(&scrape);
        missing = wanted.difference(&exported).cloned().collect();
        if missing.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the dashboard queries metrics the services do not export: {missing:?}");
}
