//! The status HTTP API: a live event stream of a real restore, paging, submission as JSON,
//! JSON errors, and an OpenAPI description that lists exactly the routes served.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use lifeboat_aggregator::api;
use lifeboat_proto as pb;
use lifeboat_tests::*;
use serde_json::Value;

/// One Server-Sent Event.
#[derive(Debug)]
struct Sse {
    kind: String,
    id: Option<String>,
    data: String,
}

/// Reads the stream until the server closes it.
async fn read_events(url: &str) -> Vec<Sse> {
    let http = reqwest::Client::new();
    let response = loop {
        let response = http.get(url).send().await.unwrap();
        if response.status() != 404 {
            break response;
        }
        // Nothing recorded yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
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

    let events = read_events(&format!("{}/v1/requests/sse-1/events", servers.api_url())).await;
    let (verdict_event, status_events) = events.split_last().expect("events");
    assert_eq!(verdict_event.kind, "verdict", "the stream ends with the verdict");
    let summary: pb::RequestSummary = serde_json::from_str(&verdict_event.data).unwrap();
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
    assert!(summary.r#final);

    // Every recorded event, numbered 1..n in order, each task moving only forward to SUCCEEDED.
    let recorded: Vec<pb::RecordedEvent> = status_events
        .iter()
        .map(|e| {
            assert_eq!(e.kind, "status");
            serde_json::from_str(&e.data).unwrap()
        })
        .collect();
    for (i, (sse, event)) in status_events.iter().zip(&recorded).enumerate() {
        assert_eq!(event.sequence, i as u64 + 1);
        assert_eq!(sse.id.as_deref(), Some(event.sequence.to_string().as_str()));
    }
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

    // Resuming after event 2 gives the rest.
    let http = reqwest::Client::new();
    let resumed = http
        .get(format!("{}/v1/requests/sse-1/events", servers.api_url()))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!resumed.contains("\nid: 2\n") && !resumed.contains("\nid:2\n"));
    assert!(
        resumed.contains(&format!("id: {}", recorded.len())) || resumed.contains(&format!("id:{}", recorded.len()))
    );

    // The request as JSON, with its tasks and their created volumes.
    let shown: Value =
        http.get(format!("{}/v1/requests/sse-1", servers.api_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["verdict"], "VERDICT_COMPLETED");
    assert_eq!(shown["tasks"].as_array().unwrap().len(), 3);
    assert!(shown["tasks"][0]["createdResourceIds"][0].as_str().unwrap().starts_with("vol-"));
}

on_both_transports!(the_event_stream_follows_a_restore_to_its_verdict);

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
