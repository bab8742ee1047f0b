//! The status aggregator with several replicas: concurrent writers, redeliveries and events out
//! of order still give exactly the right counts, in the JetStream KV store and in DynamoDB;
//! and the request record of the largest request stays small.

use std::collections::HashMap;

use lifeboat_aggregator::{Aggregator, AggregatorConfig, Store};
use lifeboat_common::bus::OutgoingMessage;
use lifeboat_common::subjects;
use lifeboat_proto as pb;
use lifeboat_tests::*;
use pb::TaskPhase::*;

const TASKS: usize = 30;

fn event(request_id: &str, task: usize, phase: pb::TaskPhase, attempt: u32) -> pb::StatusEvent {
    pb::StatusEvent {
        request_id: request_id.into(),
        set_name: if task % 2 == 0 { "even".into() } else { "odd".into() },
        task_id: format!("t{task:03}"),
        resource_type: pb::ResourceType::EbsVolume as i32,
        phase: phase as i32,
        attempt,
        // Every fifth task succeeds with something not carried over, every seventh fails.
        reason_code: match (phase, task % 5, task % 7) {
            (Succeeded, 0, _) => "SETTINGS_NOT_RESTORED".into(),
            (Failed, _, _) => "InvalidSnapshot.NotFound".into(),
            _ => String::new(),
        },
        message: format!("{phase:?} {attempt}"),
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    }
}

/// Every event of a request of [`TASKS`] tasks, each one twice, in a scrambled order (a fixed
/// permutation, so a failure can be replayed).
fn scrambled_events(request_id: &str) -> Vec<pb::StatusEvent> {
    let planned = pb::StatusEvent {
        request_id: request_id.into(),
        detail: Some(pb::status_event::Detail::Planned(pb::RestorePlanned {
            total_tasks: TASKS as u32,
            sets: vec![
                pb::SetPlan { set_name: "even".into(), ..Default::default() },
                pb::SetPlan { set_name: "odd".into(), ..Default::default() },
            ],
            ..Default::default()
        })),
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    };
    let mut events = vec![planned.clone(), planned];
    for task in 0..TASKS {
        let last = if task % 7 == 0 { Failed } else { Succeeded };
        for (phase, attempt) in [(Queued, 0), (Running, 1), (Waiting, 1), (Running, 2), (Waiting, 2), (last, 2)] {
            events.push(event(request_id, task, phase, attempt));
            events.push(event(request_id, task, phase, attempt));
        }
    }
    let mut order: Vec<usize> = (0..events.len()).collect();
    let mut seed = 0x2545_f491_u64;
    for i in (1..order.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    order.into_iter().map(|i| events[i].clone()).collect()
}

fn expected_counts() -> (u32, u32, u32) {
    let failed = (0..TASKS).filter(|t| t % 7 == 0).count() as u32;
    let warned = (0..TASKS).filter(|t| t % 5 == 0 && t % 7 != 0).count() as u32;
    (TASKS as u32 - failed, failed, warned)
}

async fn assert_exact(store: &Store, request_id: &str) {
    let summary = store.summary(request_id, 1000).await.unwrap().expect("the request is stored");
    let counts = summary.counts.unwrap();
    let (succeeded, failed, _) = expected_counts();
    assert_eq!(
        (counts.queued, counts.running, counts.waiting, counts.succeeded, counts.failed),
        (0, 0, 0, succeeded, failed),
        "{summary:#?}"
    );
    assert!(summary.r#final);
    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed);
    let sets: HashMap<_, _> = summary.sets.iter().map(|s| (s.set_name.clone(), s.counts.unwrap())).collect();
    assert_eq!(sets["even"].succeeded + sets["even"].failed, TASKS as u32 / 2);
    assert_eq!(sets["odd"].succeeded + sets["odd"].failed, TASKS as u32 / 2);
    assert_eq!(summary.tasks.len(), TASKS);
    for task in &summary.tasks {
        let number: usize = task.task_id[1..].parse().unwrap();
        let phase = if number % 7 == 0 { Failed } else { Succeeded };
        assert_eq!(task.phase, phase as i32, "{task:?}");
        assert_eq!(task.attempt, 2);
    }
    // The recorded events are numbered without gaps, and every task's phases only move forward.
    let events = store.events(request_id, 0).await.unwrap();
    assert!(events.iter().enumerate().all(|(i, e)| e.sequence == i as u64 + 1));
    let mut ranks: HashMap<String, u8> = HashMap::new();
    for recorded in &events {
        let event = recorded.event.as_ref().unwrap();
        if event.task_id.is_empty() {
            continue;
        }
        let rank = pb::TaskPhase::try_from(event.phase).unwrap().rank();
        let seen = ranks.entry(event.task_id.clone()).or_default();
        assert!(rank >= *seen, "task {} went back to {:?}", event.task_id, event.phase);
        *seen = rank;
    }
    // Duplicates were not recorded twice: at most one event per (task, phase, attempt).
    let mut distinct = std::collections::HashSet::new();
    for recorded in &events {
        let e = recorded.event.as_ref().unwrap();
        assert!(distinct.insert((e.task_id.clone(), e.phase, e.attempt, e.detail.is_some())), "recorded twice: {e:?}");
    }
}

/// Two stores (two replicas' connections) record the same scrambled events at the same time,
/// each in its own order; then two aggregators consume them from the bus, with redeliveries.
async fn replicas_count_exactly(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;

    // Straight at the store: every write races the other replica's.
    let (one, two) = (servers.store().await, servers.store().await);
    let events = scrambled_events("race-1");
    let mut reversed = events.clone();
    reversed.reverse();
    let record_all = |store: Store, events: Vec<pb::StatusEvent>| async move {
        for event in &events {
            store.record(event).await.expect("record");
        }
    };
    tokio::join!(record_all(one.clone(), events), record_all(two, reversed));
    assert_exact(&one, "race-1").await;

    // Through the bus: two aggregator replicas consume the same queue.
    let bus = servers.shared_bus().await;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(Aggregator::new(bus.clone(), servers.store().await, AggregatorConfig::default()));
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running: Vec<_> = replicas.iter().map(|r| tokio::spawn(r.clone().run(shutdown.clone()))).collect();
    let messages = scrambled_events("bus-1")
        .iter()
        .map(|e| OutgoingMessage::proto(subjects::status_subject(&e.request_id), e))
        .collect();
    bus.publish_all(messages).await.unwrap();
    let store = servers.store().await;
    for _ in 0..600 {
        if store.summary("bus-1", 0).await.unwrap().is_some_and(|s| s.r#final) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Let the remaining duplicates drain, then check.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_exact(&store, "bus-1").await;
    shutdown.cancel();
    for handle in running {
        handle.await.unwrap().unwrap();
    }
}

on_both_transports!(replicas_count_exactly);

/// The request record (one KV value, one DynamoDB item of at most 400 KB) of the largest
/// request accepted (100 sets with 256-byte names, 10,000 tasks in every phase) stays small:
/// it holds counts per set, not per task, and only the one change still to be applied (here
/// the task record of a QUEUED event, with the RestoreTask kept for retries).
#[test]
fn the_request_record_of_10000_tasks_in_100_sets_stays_below_64_kib() {
    use lifeboat_aggregator::RequestState;
    use prost::Message;

    let id = "req-largest";
    let set_name = |set: usize| format!("{set:03}-{}", "s".repeat(lifeboat_common::validate::MAX_STRING - 4));
    let plan = pb::RestorePlanned {
        total_tasks: 10_000,
        sets: (0..100).map(|set| pb::SetPlan { set_name: set_name(set), tasks: 100 }).collect(),
        request_digest: "d".repeat(64),
        ..Default::default()
    };
    let planned = pb::StatusEvent {
        request_id: id.into(),
        detail: Some(pb::status_event::Detail::Planned(plan)),
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    };
    let mut state = RequestState::new(id);
    state.apply(&planned, None);
    let phases = [Queued, Running, Waiting, Succeeded, Failed, Skipped, Cancelled];
    let mut last = None;
    for task in 0..10_000 {
        let backup_id = format!("snap-{task:017}");
        let mut event = event(id, task, phases[task % phases.len()], 3);
        event.set_name = set_name(task % 100);
        event.task_id = lifeboat_common::ids::task_id(id, &event.set_name, &backup_id);
        event.source_backup_id = backup_id.clone();
        event.task = Some(pb::RestoreTask {
            request_id: id.into(),
            task_id: event.task_id.clone(),
            set_name: event.set_name.clone(),
            resource_type: pb::ResourceType::EbsVolume as i32,
            backup: Some(pb::Backup {
                backup_id,
                source_resource_id: format!("vol-{task:017}"),
                tags: (0..10).map(|t| (format!("tag-{t}"), "v".repeat(64))).collect(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let change = state.apply(&event, None);
        let recorded = pb::RecordedEvent { sequence: task as u64 + 2, event: Some(event) };
        last = Some(pb::PendingChange { task: change.task, task_version: 0, event: Some(recorded) });
    }
    let ended = (0..10_000).filter(|task| phases[task % phases.len()].is_terminal()).count();
    assert_eq!(state.counts().terminal(), ended as u32);
    let size = state.to_stored(10_001, last.expect("a change")).encode_to_vec().len();
    println!("request record of 10,000 tasks in 100 sets: {size} bytes");
    assert!(size < 64 * 1024, "request record of 10,000 tasks in 100 sets: {size} bytes");
}
