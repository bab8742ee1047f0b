//! A verdict is guaranteed and status events stay proportional to tasks: the stall sweep ends
//! a task that stopped reporting and a request whose plan never came, re-checks that change
//! nothing log nothing, writes that lose to other replicas more than fifty times in a row
//! still record the event, and a 10,000-task request's record stays far below DynamoDB's
//! 400 KB item limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use lifeboat_aggregator::state::{RequestState, STALLED};
use lifeboat_aggregator::store::{Key, Records, Versioned};
use lifeboat_aggregator::{api, Aggregator, AggregatorConfig, KvRecords, Store};
use lifeboat_proto as pb;
use lifeboat_tests::*;
use pb::TaskPhase::*;
use prost::Message;
use tokio_util::sync::CancellationToken;

/// The aggregator alone, with a deadline of seconds, its HTTP API on the servers' API port.
async fn fast_aggregator(servers: &Servers, shutdown: &CancellationToken) -> Arc<Aggregator> {
    let config = AggregatorConfig {
        stall_after: Duration::from_secs(3),
        sweep_every: Duration::from_millis(500),
        ..AggregatorConfig::default()
    };
    let aggregator = Aggregator::new(servers.shared_bus().await, servers.store().await, config);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], servers.api_port));
    let http = lifeboat_common::http::serve(addr, api::router(aggregator.clone()), shutdown.clone()).await.unwrap();
    tokio::spawn(async move { http.wait().await.unwrap() });
    tokio::spawn(aggregator.clone().run(shutdown.clone()));
    aggregator
}

fn task_event(request_id: &str, task_id: &str, phase: pb::TaskPhase, attempt: u32, message: &str) -> pb::StatusEvent {
    pb::StatusEvent {
        request_id: request_id.into(),
        set_name: "volumes".into(),
        task_id: task_id.into(),
        resource_type: pb::ResourceType::EbsVolume as i32,
        phase: phase as i32,
        attempt,
        message: message.into(),
        created_resource_ids: if phase == Waiting { vec!["vol-1".into()] } else { vec![] },
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    }
}

fn planned(request_id: &str, total_tasks: u32) -> pb::StatusEvent {
    pb::StatusEvent {
        request_id: request_id.into(),
        detail: Some(pb::status_event::Detail::Planned(pb::RestorePlanned { total_tasks, ..Default::default() })),
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    }
}

/// The request's summary with tasks, once it is final (within `within`).
async fn verdict_within(store: &Store, request_id: &str, within: Duration) -> pb::RequestSummary {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(summary) = store.summary(request_id, 100).await.unwrap() {
            if summary.r#final {
                return summary;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{request_id} has no verdict within {within:?}");
}

#[tokio::test]
async fn a_task_that_stops_reporting_ends_failed_stalled_naming_it() {
    let servers = Servers::start().await;
    let shutdown = CancellationToken::new();
    let aggregator = fast_aggregator(&servers, &shutdown).await;
    let reporter = lifeboat_common::events::Reporter::new(servers.shared_bus().await, "test");
    let id = "req-stall-task";
    reporter.report(planned(id, 2)).await.unwrap();
    reporter.report(task_event(id, "t-done", Succeeded, 1, "restored")).await.unwrap();
    // The service restoring t-silent dies with its message lost: nothing more is heard.
    reporter.report(task_event(id, "t-silent", Waiting, 1, "volume creating")).await.unwrap();
    let started = Instant::now();
    let summary = verdict_within(aggregator.store(), id, Duration::from_secs(15)).await;
    assert!(started.elapsed() >= Duration::from_secs(2), "ended before its deadline: {:?}", started.elapsed());
    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed);
    let silent = summary.tasks.iter().find(|t| t.task_id == "t-silent").unwrap();
    assert_eq!((pb::TaskPhase::try_from(silent.phase).unwrap(), silent.reason_code.as_str()), (Failed, STALLED));
    assert_eq!(silent.created_resource_ids, vec!["vol-1".to_string()], "what it created is still listed");
    assert!(summary.stalled.contains("t-silent"), "{}", summary.stalled);
    assert!(!summary.stalled.contains("t-done"), "{}", summary.stalled);

    // The task was only slow: its real outcome, reported late, replaces STALLED.
    reporter.report(task_event(id, "t-silent", Succeeded, 2, "restored late")).await.unwrap();
    let start = Instant::now();
    loop {
        let summary = aggregator.store().summary(id, 100).await.unwrap().unwrap();
        if verdict(&summary) == pb::Verdict::Completed {
            assert_eq!(summary.counts.unwrap().succeeded, 2);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the late outcome was not counted: {summary:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
}

/// A large request's tasks beyond the work consumer's pending limit wait in the durable queue,
/// QUEUED and silent, for longer than the deadline: they are not ended with the stalled ones.
#[tokio::test]
async fn a_task_still_queued_is_not_stalled_with_the_others() {
    let servers = Servers::start().await;
    let shutdown = CancellationToken::new();
    let aggregator = fast_aggregator(&servers, &shutdown).await;
    let reporter = lifeboat_common::events::Reporter::new(servers.shared_bus().await, "test");
    let id = "req-stall-queued";
    reporter.report(planned(id, 2)).await.unwrap();
    reporter.report(task_event(id, "t-queued", Queued, 0, "queued")).await.unwrap();
    reporter.report(task_event(id, "t-silent", Waiting, 1, "volume creating")).await.unwrap();
    let start = Instant::now();
    loop {
        let summary = aggregator.store().summary(id, 100).await.unwrap();
        let silent = summary.iter().flat_map(|s| &s.tasks).find(|t| t.task_id == "t-silent");
        if silent.is_some_and(|t| t.reason_code == STALLED) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "t-silent was never ended: {summary:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Twice the deadline later, the queued task and the request are still open.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let summary = aggregator.store().summary(id, 100).await.unwrap().unwrap();
    assert!(!summary.r#final, "ended while a task waited in the queue: {summary:?}");
    let queued = summary.tasks.iter().find(|t| t.task_id == "t-queued").unwrap();
    assert_eq!(pb::TaskPhase::try_from(queued.phase).unwrap(), Queued);

    reporter.report(task_event(id, "t-queued", Succeeded, 1, "restored")).await.unwrap();
    let summary = verdict_within(aggregator.store(), id, Duration::from_secs(10)).await;
    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed);
    assert_eq!(summary.counts.unwrap().succeeded, 1);
    shutdown.cancel();
}

#[tokio::test]
async fn a_request_accepted_but_never_planned_gets_a_verdict() {
    let servers = Servers::start().await;
    let shutdown = CancellationToken::new();
    let aggregator = fast_aggregator(&servers, &shutdown).await;
    // Submitted through the API; no discovery runs, so no plan ever comes.
    let body = serde_json::json!({ "requestId": "req-stall-plan", "restoreSets": [] });
    let response =
        reqwest::Client::new().post(format!("{}/v1/requests", servers.api_url())).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let summary = verdict_within(aggregator.store(), "req-stall-plan", Duration::from_secs(15)).await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed);
    assert!(summary.stalled.contains("no plan"), "{}", summary.stalled);
    let events = aggregator.store().events("req-stall-plan", 0).await.unwrap();
    let last = events.last().and_then(|e| e.event.as_ref()).unwrap();
    assert_eq!(last.reason_code, STALLED, "watchers see why: {events:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_request_submitted_over_nats_but_never_planned_gets_a_verdict() {
    let servers = Servers::start().await;
    let shutdown = CancellationToken::new();
    let aggregator = fast_aggregator(&servers, &shutdown).await;
    // `lifeboat restore submit` over NATS; no discovery runs, so no plan ever comes.
    servers.client().await.submit(&request("req-stall-nats", Vec::new())).await.unwrap();
    let summary = verdict_within(aggregator.store(), "req-stall-nats", Duration::from_secs(15)).await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed);
    assert!(summary.stalled.contains("no plan"), "{}", summary.stalled);
    shutdown.cancel();
}

#[tokio::test]
async fn repeated_identical_waiting_events_do_not_grow_the_log() {
    let servers = Servers::start().await;
    let store = servers.store().await;
    let id = "req-repeats";
    store.record(&planned(id, 1)).await.unwrap();
    store.record(&task_event(id, "t1", Queued, 0, "queued")).await.unwrap();
    for attempt in 1..=20 {
        store.record(&task_event(id, "t1", Waiting, attempt, "volume creating")).await.unwrap();
    }
    let events = store.events(id, 0).await.unwrap();
    assert_eq!(events.len(), 3, "plan, queued, one waiting: {events:?}");
    // A change is still logged, and so is the end.
    store.record(&task_event(id, "t1", Waiting, 21, "volume optimizing")).await.unwrap();
    store.record(&task_event(id, "t1", Succeeded, 22, "restored")).await.unwrap();
    assert_eq!(store.events(id, 0).await.unwrap().len(), 5);
    let summary = store.summary(id, 10).await.unwrap().unwrap();
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
}

/// KV records whose request writes lose `left` times before they go through, as they would
/// against replicas that keep winning.
struct Conflicting {
    inner: KvRecords,
    left: AtomicU32,
}

#[async_trait]
impl Records for Conflicting {
    async fn get(&self, key: Key<'_>) -> lifeboat_common::bus::Result<Option<Versioned>> {
        self.inner.get(key).await
    }
    async fn put_if(&self, key: Key<'_>, value: Bytes, expected: u64) -> lifeboat_common::bus::Result<Option<u64>> {
        let lose = matches!(key, Key::Request(_))
            && self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if lose {
            return Ok(None);
        }
        self.inner.put_if(key, value, expected).await
    }
    async fn put(&self, key: Key<'_>, value: Bytes) -> lifeboat_common::bus::Result<()> {
        self.inner.put(key, value).await
    }
    async fn tasks(&self, request_id: &str) -> lifeboat_common::bus::Result<Vec<Bytes>> {
        self.inner.tasks(request_id).await
    }
    async fn events(&self, request_id: &str, after: u64) -> lifeboat_common::bus::Result<Vec<Bytes>> {
        self.inner.events(request_id, after).await
    }
    async fn requests(
        &self,
        limit: usize,
        after: Option<&str>,
    ) -> lifeboat_common::bus::Result<(Vec<Bytes>, Option<String>)> {
        self.inner.requests(limit, after).await
    }
}

#[tokio::test]
async fn sixty_conflicting_writes_in_a_row_still_record_the_event() {
    let servers = Servers::start().await;
    let inner = KvRecords::open(servers.bus().await.client().clone()).await.unwrap();
    let store = Store::new(Arc::new(Conflicting { inner, left: AtomicU32::new(60) }));
    let id = "req-conflicts";
    let recorded = store.record(&planned(id, 1)).await.expect("recorded despite 60 lost writes");
    assert!(recorded.is_some());
    store.record(&task_event(id, "t1", Succeeded, 1, "restored")).await.unwrap();
    let summary = servers.store().await.summary(id, 10).await.unwrap().expect("stored");
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
}

#[test]
fn the_request_record_of_10000_tasks_stays_far_below_400_kb() {
    let id = "req-10000";
    let mut state = RequestState::new(id);
    let sets: Vec<pb::SetPlan> =
        (0..100).map(|s| pb::SetPlan { set_name: format!("set-{s:03}"), ..Default::default() }).collect();
    let plan = pb::RestorePlanned { total_tasks: 10_000, sets, ..Default::default() };
    state.apply(&pb::StatusEvent { detail: Some(pb::status_event::Detail::Planned(plan)), ..planned(id, 0) }, None);
    let mut last = None;
    for task in 0..10_000 {
        let mut event = task_event(id, &format!("task-{task:05}"), Succeeded, 1, "restored");
        event.set_name = format!("set-{:03}", task % 100);
        let change = state.apply(&event, None);
        last = change.task;
    }
    assert!(state.is_final());
    let pending = pb::PendingChange { task: last, task_version: 1, event: None };
    let size = state.to_stored(10_001, pending).encode_to_vec().len();
    assert!(size < 16 * 1024, "request record of 10,000 tasks in 100 sets: {size} bytes");
    println!("request record of 10,000 tasks in 100 sets: {size} bytes");
}
