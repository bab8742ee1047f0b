//! The status HTTP API: a live event stream of a real restore (resumed with `Last-Event-ID`,
//! and read incrementally however long the log gets), paging, submission as JSON, JSON
//! errors, and an OpenAPI description that lists exactly the routes served.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lifeboat_aggregator::store::{Key, Records, Versioned};
use lifeboat_aggregator::{api, Aggregator, AggregatorConfig, KvRecords, Store};
use lifeboat_proto as pb;
use lifeboat_tests::*;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One Server-Sent Event.
#[derive(Debug)]
struct Sse {
    kind: String,
    id: Option<String>,
    data: String,
}

/// Opens the event stream, resuming after event `last_event_id` if given; waits until the
/// request is known.
async fn open_events(url: &str, last_event_id: Option<u64>) -> reqwest::Response {
    let http = reqwest::Client::new();
    let response = loop {
        let mut get = http.get(url);
        if let Some(id) = last_event_id {
            get = get.header("Last-Event-ID", id.to_string());
        }
        let response = get.send().await.unwrap();
        if response.status() != 404 {
            break response;
        }
        // Nothing recorded yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    response
}

/// Reads an open stream until the server closes it.
async fn collect_events(response: reqwest::Response) -> Vec<Sse> {
    let mut body = response.bytes_stream();
    let (mut text, mut events) = (String::new(), Vec::new());
    let read = async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    };
    tokio::time::timeout(Duration::from_secs(90), read).await.expect("the stream ends after the verdict");
    for block in text.split("\n\n").filter(|b| b.contains("data:")) {
        let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()));
        events.push(Sse { kind: field("event:").unwrap_or_default(), id: field("id:"), data: field("data:").unwrap() });
    }
    events
}

/// The whole stream from its first event.
async fn read_events(url: &str) -> Vec<Sse> {
    collect_events(open_events(url, None).await).await
}

/// The status events of a stream, checked to be numbered `first`, `first + 1`... (each event
/// once, in order) and followed by the final verdict, which is returned with them.
fn in_sequence(events: &[Sse], first: u64) -> (Vec<pb::RecordedEvent>, pb::RequestSummary) {
    let (verdict_event, status_events) = events.split_last().expect("events");
    assert_eq!(verdict_event.kind, "verdict", "the stream ends with the verdict");
    let summary: pb::RequestSummary = serde_json::from_str(&verdict_event.data).unwrap();
    assert!(summary.r#final);
    let mut recorded = Vec::new();
    for (i, sse) in status_events.iter().enumerate() {
        assert_eq!(sse.kind, "status");
        let event: pb::RecordedEvent = serde_json::from_str(&sse.data).unwrap();
        assert_eq!(event.sequence, first + i as u64);
        assert_eq!(sse.id.as_deref(), Some(event.sequence.to_string().as_str()));
        recorded.push(event);
    }
    (recorded, summary)
}

async fn the_event_stream_follows_a_restore_to_its_verdict(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    for name in ["a", "b", "c"] {
        let volume = create_volume(&east, "us-east-1a", 4, &[("app", "sse"), ("Name", name)]).await;
        create_snapshot(&east, &volume, &[("app", "sse")]).await;
    }
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let target = pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() };
    client.submit(&request("sse-1", vec![ebs_set("all", "us-east-1", &[("app", "sse")], None, target)])).await.unwrap();

    let url = format!("{}/v1/requests/sse-1/events", servers.api_url());
    let events = read_events(&url).await;
    // Every recorded event, numbered 1..n in order, each task moving only forward to SUCCEEDED.
    let (recorded, summary) = in_sequence(&events, 1);
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
    let stored = servers.store().await.events("sse-1", 0).await.unwrap();
    assert_eq!(recorded, stored, "the stream carries exactly what the aggregator recorded");
    assert!(recorded
        .iter()
        .any(|r| matches!(r.event.as_ref().unwrap().detail, Some(pb::status_event::Detail::Planned(_)))));
    let mut phases: HashMap<String, Vec<pb::TaskPhase>> = HashMap::new();
    for r in &recorded {
        let event = r.event.as_ref().unwrap();
        if !event.task_id.is_empty() {
            phases.entry(event.task_id.clone()).or_default().push(pb::TaskPhase::try_from(event.phase).unwrap());
        }
    }
    assert_eq!(phases.len(), 3);
    for (task, seen) in &phases {
        assert!(seen.windows(2).all(|w| w[0].rank() <= w[1].rank()), "{task}: {seen:?}");
        assert_eq!(seen.first(), Some(&pb::TaskPhase::Queued), "{task}: {seen:?}");
        assert_eq!(seen.last(), Some(&pb::TaskPhase::Succeeded), "{task}: {seen:?}");
    }

    // Resuming after event 2 gives the rest, and the verdict again.
    let (resumed, again) = in_sequence(&collect_events(open_events(&url, Some(2)).await).await, 3);
    assert_eq!(resumed, recorded[2..]);
    assert_eq!(again, summary);

    // The request as JSON, with its tasks and their created volumes.
    let http = reqwest::Client::new();
    let shown: Value =
        http.get(format!("{}/v1/requests/sse-1", servers.api_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["verdict"], "VERDICT_COMPLETED");
    assert_eq!(shown["tasks"].as_array().unwrap().len(), 3);
    assert!(shown["tasks"][0]["createdResourceIds"][0].as_str().unwrap().starts_with("vol-"));
}

on_both_transports!(the_event_stream_follows_a_restore_to_its_verdict);

/// The HTTP API of an aggregator over `store` (consuming nothing) on the servers' API port,
/// until the token is cancelled.
async fn serve_api(servers: &Servers, store: Store) -> CancellationToken {
    let aggregator = Aggregator::new(servers.shared_bus().await, store, AggregatorConfig::default());
    let shutdown = CancellationToken::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], servers.api_port));
    let http = lifeboat_common::http::serve(addr, api::router(aggregator), shutdown.clone()).await.unwrap();
    tokio::spawn(async move { http.wait().await.unwrap() });
    shutdown
}

/// Tasks of the request a follower reads while it is recorded: with its plan, 2,001 events.
const FOLLOWED_TASKS: usize = 1000;

fn followed_event(request_id: &str, task: usize, phase: pb::TaskPhase) -> pb::StatusEvent {
    pb::StatusEvent {
        request_id: request_id.into(),
        set_name: format!("set-{}", task % 10),
        task_id: format!("t{task:04}"),
        resource_type: pb::ResourceType::EbsVolume as i32,
        phase: phase as i32,
        attempt: 1,
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    }
}

/// A follower attached while a request of 2,001 events is recorded by another replica gets
/// each event once, in order, then the verdict; and its replica receives fewer than three
/// messages per event from NATS (each event record once, through a KV watch, and the request
/// record per read), where re-reading the log on every change would take O(events²).
#[tokio::test]
async fn a_follower_reads_each_event_record_once() {
    init_logging();
    let servers = Servers::start().await;
    // The following replica has a connection of its own, whose received messages are counted.
    let client = servers.bus().await.client().clone();
    let received = client.statistics();
    let store = Store::new(Arc::new(KvRecords::open(client).await.unwrap()));
    let shutdown = serve_api(&servers, store).await;

    let id = "follow-1";
    let writer = servers.store().await;
    let plan = pb::RestorePlanned { total_tasks: FOLLOWED_TASKS as u32, ..Default::default() };
    let planned = pb::StatusEvent {
        request_id: id.into(),
        detail: Some(pb::status_event::Detail::Planned(plan)),
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    };
    writer.record(&planned).await.unwrap();
    let url = format!("{}/v1/requests/{id}/events", servers.api_url());
    let before = received.in_messages.load(Ordering::Relaxed);
    let stream = open_events(&url, None).await;
    let recording = tokio::spawn(async move {
        for task in 0..FOLLOWED_TASKS {
            for phase in [pb::TaskPhase::Queued, pb::TaskPhase::Succeeded] {
                writer.record(&followed_event(id, task, phase)).await.unwrap().expect("a new event");
            }
        }
        writer
    });
    let (followed, summary) = in_sequence(&collect_events(stream).await, 1);
    let read = received.in_messages.load(Ordering::Relaxed) - before;
    let writer = recording.await.unwrap();
    let events = 1 + 2 * FOLLOWED_TASKS as u64;
    assert_eq!(followed, writer.events(id, 0).await.unwrap(), "every recorded event, once, in order");
    assert_eq!(followed.len() as u64, events);
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
    println!("following {events} events: {read} messages received");
    assert!(read < 3 * events, "following {events} events took {read} messages");

    // Reconnecting after event 1,000: the later events only, then the verdict.
    let before = received.in_messages.load(Ordering::Relaxed);
    let (resumed, _) = in_sequence(&collect_events(open_events(&url, Some(1000)).await).await, 1001);
    let read = received.in_messages.load(Ordering::Relaxed) - before;
    assert_eq!(resumed, followed[1000..]);
    println!("resuming after event 1000 of {events}: {read} messages received");
    assert!(read < 3 * events, "resuming took {read} messages");
    shutdown.cancel();
}

/// KV records of a replica that dies after each conditional write of a request: the event
/// records it should write next never are.
struct DyingWriter(KvRecords);

#[async_trait]
impl Records for DyingWriter {
    async fn get(&self, key: Key<'_>) -> lifeboat_common::bus::Result<Option<Versioned>> {
        self.0.get(key).await
    }
    async fn put_if(&self, key: Key<'_>, value: Bytes, expected: u64) -> lifeboat_common::bus::Result<Option<u64>> {
        self.0.put_if(key, value, expected).await
    }
    async fn put(&self, _key: Key<'_>, _value: Bytes) -> lifeboat_common::bus::Result<()> {
        Ok(())
    }
    async fn tasks(&self, request_id: &str) -> lifeboat_common::bus::Result<Vec<Bytes>> {
        self.0.tasks(request_id).await
    }
    async fn events(&self, request_id: &str, after: u64) -> lifeboat_common::bus::Result<Vec<Bytes>> {
        self.0.events(request_id, after).await
    }
    async fn requests(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> lifeboat_common::bus::Result<(Vec<Bytes>, Option<String>)> {
        self.0.requests(limit, after).await
    }
}

/// Events whose record a dying writer left unwritten still reach a follower of the KV watch
/// in order, each once: from the request record while it is pending, and not again when the
/// next writer completes it; the last one, never written, comes before the verdict.
#[tokio::test]
async fn a_follower_gets_the_events_a_dying_writer_left_pending() {
    init_logging();
    let servers = Servers::start().await;
    let shutdown = serve_api(&servers, servers.store().await).await;
    let dying = Store::new(Arc::new(DyingWriter(KvRecords::open(servers.bus().await.client().clone()).await.unwrap())));
    let healthy = servers.store().await;
    let id = "follow-dying";
    let plan = pb::RestorePlanned { total_tasks: 1, ..Default::default() };
    let planned = pb::StatusEvent {
        request_id: id.into(),
        detail: Some(pb::status_event::Detail::Planned(plan)),
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    };
    dying.record(&planned).await.unwrap().expect("planned");
    let stream = open_events(&format!("{}/v1/requests/{id}/events", servers.api_url()), None).await;
    // Completes the plan's event record, then writes its own.
    healthy.record(&followed_event(id, 0, pb::TaskPhase::Queued)).await.unwrap().expect("queued");
    dying.record(&followed_event(id, 0, pb::TaskPhase::Succeeded)).await.unwrap().expect("succeeded");

    let (followed, summary) = in_sequence(&collect_events(stream).await, 1);
    assert_eq!(followed.len(), 3, "{followed:?}");
    assert!(matches!(followed[0].event.as_ref().unwrap().detail, Some(pb::status_event::Detail::Planned(_))));
    assert_eq!(followed[2].event.as_ref().unwrap().phase, pb::TaskPhase::Succeeded as i32);
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
    let kv = KvRecords::open(servers.bus().await.client().clone()).await.unwrap();
    assert!(kv.get(Key::Event(id, 3)).await.unwrap().is_none(), "the last event is only pending");
    shutdown.cancel();
}

#[tokio::test]
async fn requests_are_submitted_as_json_listed_and_unknown_ones_are_json_404s() {
    init_logging();
    let servers = Servers::start().await;
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let (http, base) = (reqwest::Client::new(), servers.api_url());

    // A dry run submitted as JSON, twice (runs once), without volumes to find: one SKIPPED set.
    let body = serde_json::json!({
        "requestId": "json-1",
        "dryRun": true,
        "restoreSets": [{
            "name": "nothing",
            "source": { "region": "us-east-1", "tags": { "app": "none" } },
            "resourceTypes": ["RESOURCE_TYPE_EBS_VOLUME"],
            "target": { "ebs": { "availabilityZone": "us-east-1a" } }
        }]
    });
    for _ in 0..2 {
        let accepted = http.post(format!("{base}/v1/requests")).json(&body).send().await.unwrap();
        assert_eq!(accepted.status(), 202);
        assert_eq!(accepted.headers()["location"], "/v1/requests/json-1");
    }
    let summary = final_summary(&servers.client().await, "json-1").await;
    assert_eq!(summary.counts.unwrap().skipped, 1);
    assert_eq!(summary.tasks[0].reason_code, "NO_MATCHING_BACKUPS");

    let page: Value = http.get(format!("{base}/v1/requests?limit=10")).send().await.unwrap().json().await.unwrap();
    let listed: Vec<&str> =
        page["requests"].as_array().unwrap().iter().map(|r| r["requestId"].as_str().unwrap()).collect();
    assert_eq!(listed, ["json-1"]);

    let bad = http.post(format!("{base}/v1/requests")).body("{not json").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().starts_with("body:"), "{error}");

    for (path, status) in [
        ("/v1/requests/nobody", 404),
        ("/v1/requests/nobody/events", 404),
        ("/v1/requests/bad%20id", 400),
        ("/v2/nothing", 404),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        let error: Value = response.json().await.unwrap();
        assert!(!error["error"].as_str().unwrap().is_empty(), "{path}: {error}");
    }
}

#[tokio::test]
async fn the_openapi_description_lists_exactly_the_routes_served() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml")).unwrap();
    let spec: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut described = BTreeSet::new();
    for (path, methods) in spec["paths"].as_mapping().unwrap() {
        for method in methods.as_mapping().unwrap().keys() {
            described.insert((method.as_str().unwrap().to_uppercase(), path.as_str().unwrap().to_string()));
        }
    }
    let probes =
        [lifeboat_common::http::HEALTHZ_PATH, lifeboat_common::http::READYZ_PATH, lifeboat_common::http::METRICS_PATH];
    let served: BTreeSet<(String, String)> = api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .chain(probes.iter().map(|p| ("GET".to_string(), p.to_string())))
        .collect();
    assert_eq!(described, served);

    // And the router serves every one of them (no "no route" 404).
    let servers = Servers::start().await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let http = reqwest::Client::new();
    for (method, path) in &served {
        let url = format!("{}{}", servers.api_url(), path.replace("{id}", "some-id"));
        let request = match method.as_str() {
            "GET" => http.get(&url),
            "POST" => http.post(&url).json(&serde_json::json!({"requestId": "some-id"})),
            other => panic!("unexpected method {other}"),
        };
        let response = request.send().await.unwrap();
        let body = response.text().await.unwrap();
        assert!(!body.contains("no route"), "{method} {path}: {body}");
    }
}
