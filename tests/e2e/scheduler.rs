//! The scheduler over real nats-server and moto, with time set by the test: two replicas ticking
//! at the same due time publish one run, a restarted replica publishes nothing again, the next
//! due time is one more run, and a due time claimed by a replica that died before publishing is
//! published by another after the takeover delay. Discovery plans each run into one backup task
//! per tagged volume.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lifeboat_common::bus::Queue;
use lifeboat_proto as pb;
use lifeboat_scheduler::scheduler::fired_key;
use lifeboat_scheduler::{ManualClock, Scheduler, SchedulerConfig};
use lifeboat_tests::*;

const PLAN: &str = r#"
name: sched
rules:
  - name: hourly
    schedule: "0 * * * *"
    start_window: 1h
    selection:
      resource_types: [ebs]
      regions: [us-east-1]
      tags: {include: {backup: hourly}}
    retention: {days: 7}
"#;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
}

fn replica(bus: Arc<dyn lifeboat_common::Bus>, clock: Arc<ManualClock>, name: &str) -> Arc<Scheduler> {
    let plan = lifeboat_plans::load("sched.yaml", PLAN).expect("a valid plan");
    let config = SchedulerConfig { tick: Duration::from_secs(3600), replica: name.to_string(), sweep_every: None };
    Scheduler::new(vec![plan], bus, clock, config)
}

/// Waits until discovery has planned `run_id`.
async fn planned(client: &lifeboat_cli::client::Client, run_id: &str) -> pb::RequestSummary {
    for _ in 0..200 {
        if let Ok(reply) = client.status(run_id, true).await {
            let summary = reply.summary.unwrap_or_default();
            if reply.found && summary.planned && summary.tasks.len() as u32 == summary.total_tasks {
                return summary;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run_id} was not planned within 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_due_time_fires_once_across_replicas_and_restarts() {
    init_logging();
    let servers = Servers::start().await;
    let ec2 = servers.ec2("us-east-1");
    for _ in 0..2 {
        create_volume(&ec2, "us-east-1a", 4, &[("backup", "hourly")]).await;
    }
    create_volume(&ec2, "us-east-1a", 4, &[("backup", "never")]).await;
    let set = ServiceSet { ebs: None, dynamodb: None, ec2: None, rds: None, ..ServiceSet::default() };
    let _running = Running::start(&servers, set).await;
    let client = servers.client().await;

    let clock = ManualClock::new(at("2026-12-03T10:00:30Z"));
    let (bus_a, bus_b) = (servers.bus_address().connect().await, servers.bus_address().connect().await);
    let (a, b) = (replica(bus_a.clone(), clock.clone(), "a"), replica(bus_b, clock.clone(), "b"));
    let (from_a, from_b) = tokio::join!(a.tick(), b.tick());
    let first: Vec<String> = [from_a.expect("tick a"), from_b.expect("tick b")].concat();
    assert_eq!(first, vec!["sched-hourly-2026-12-03T100000Z".to_string()], "one run for 10:00 from two replicas");

    // A replica started afresh, still within the start window, finds the due time fired.
    clock.set(at("2026-12-03T10:05:00Z"));
    let restarted = replica(servers.bus_address().connect().await, clock.clone(), "a-restarted");
    assert!(restarted.tick().await.expect("tick").is_empty(), "nothing fires twice after a restart");

    clock.set(at("2026-12-03T11:00:10Z"));
    let (from_a, from_b) = tokio::join!(restarted.tick(), b.tick());
    let second: Vec<String> = [from_a.expect("tick a"), from_b.expect("tick b")].concat();
    assert_eq!(second, vec!["sched-hourly-2026-12-03T110000Z".to_string()]);

    // 12:00 was claimed by a replica that died before publishing it.
    let dead = serde_json::json!({"run_id": "sched-hourly-2026-12-03T120000Z", "by": "dead", "at": "2026-12-03T12:00:00Z", "published": false});
    let store = bus_a.shared();
    let key = fired_key("sched/hourly/2026-12-03T12:00:00Z");
    store.put_if(&key, serde_json::to_vec(&dead).unwrap().into(), 0).await.expect("store").expect("created");
    clock.set(at("2026-12-03T12:01:00Z"));
    assert!(a.tick().await.expect("tick").is_empty(), "a fresh claim is left to its replica");
    clock.set(at("2026-12-03T12:03:00Z"));
    assert_eq!(a.tick().await.expect("tick"), vec!["sched-hourly-2026-12-03T120000Z".to_string()]);
    assert!(b.tick().await.expect("tick").is_empty());

    // Each run is planned into one backup task per tagged volume, and nothing more is queued.
    for run_id in
        ["sched-hourly-2026-12-03T100000Z", "sched-hourly-2026-12-03T110000Z", "sched-hourly-2026-12-03T120000Z"]
    {
        let summary = planned(&client, run_id).await;
        assert_eq!(summary.total_tasks, 2, "{run_id}: {summary:?}");
        for task in &summary.tasks {
            assert_eq!(task.set_name, "hourly");
            assert_eq!(task.resource_type, pb::ResourceType::EbsVolume as i32);
            assert!(task.source_resource_id.starts_with("vol-"), "{task:?}");
        }
    }
    let queued = queued(&servers, &Queue::Work("ebs".into())).await;
    assert_eq!(queued.len(), 6, "three runs of two volumes");
    let runs: std::collections::BTreeSet<_> = queued
        .iter()
        .map(|m| {
            let task = <pb::RestoreTask as prost::Message>::decode(m.payload.as_ref()).expect("a task");
            let job = task.backup_task.expect("a backup task");
            assert_eq!(job.run.as_ref().map(|r| r.plan.as_str()), Some("sched"));
            task.request_id
        })
        .collect();
    assert_eq!(runs.len(), 3);
}

#[tokio::test]
async fn a_run_message_that_breaks_the_rules_is_rejected_by_field() {
    init_logging();
    let servers = Servers::start().await;
    let _running = Running::start(
        &servers,
        ServiceSet { ebs: None, dynamodb: None, ec2: None, rds: None, ..ServiceSet::default() },
    )
    .await;
    let client = servers.client().await;
    let run = pb::BackupRun {
        plan: "p".into(),
        rule: "r".into(),
        due_id: "p/r/2026-12-03T01:00:00Z".into(),
        selection: Some(pb::BackupSelection {
            resource_types: vec![pb::ResourceType::S3Bucket as i32],
            regions: vec!["us-east-1".into()],
            include_tags: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        }),
        retention: Some(pb::Retention { days: 3, ..Default::default() }),
        lock: Some(pb::RecoveryLock {
            mode: "COMPLIANCE".into(),
            min_retention_days: 7,
            max_retention_days: 0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let request =
        pb::RestoreRequest { request_id: "p-r-2026-12-03T010000Z".into(), backup_run: Some(run), ..Default::default() };
    client.submit(&request).await.expect("submit");
    let summary = final_summary(&client, "p-r-2026-12-03T010000Z").await;
    assert_eq!(verdict(&summary), pb::Verdict::Rejected);
    let rejection = summary.rejection.expect("a rejection");
    let fields: Vec<&str> =
        std::iter::once(rejection.field.as_str()).chain(rejection.errors.iter().map(|e| e.field.as_str())).collect();
    // S3_BUCKET backs up protection groups, and the run names none (nor a vault).
    assert!(fields.contains(&"backup_run.protection_groups"), "{fields:?}");
    assert!(fields.contains(&"backup_run.vault"), "{fields:?}");
    assert!(fields.contains(&"backup_run.retention.days"), "{fields:?}");
}

#[tokio::test]
async fn a_rule_with_a_drill_hands_each_published_run_to_its_drill_once() {
    init_logging();
    let servers = Servers::start().await;
    let drilled = format!(
        "{PLAN}    drill: {{resources: 1, target: {{account: \"123456789012\", region: us-east-1, subnet: subnet-1}}}}\n"
    );
    let plan = lifeboat_plans::load("sched.yaml", &drilled).expect("a valid plan");
    let handed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = handed.clone();
    let hook: lifeboat_scheduler::scheduler::OnPublished =
        Arc::new(move |plan, rule, run_id| seen.lock().unwrap().push(format!("{}/{rule}/{run_id}", plan.name)));
    let clock = ManualClock::new(at("2026-12-03T10:00:30Z"));
    let config = SchedulerConfig { tick: Duration::from_secs(3600), replica: "a".into(), sweep_every: None };
    let bus = servers.bus_address().connect().await;
    let scheduler = Scheduler::with_drills(vec![plan.clone()], bus.clone(), clock.clone(), config.clone(), Some(hook));
    let other = Scheduler::new(vec![plan], bus, clock, config);
    assert_eq!(other.tick().await.expect("tick"), vec!["sched-hourly-2026-12-03T100000Z".to_string()]);
    assert!(scheduler.tick().await.expect("tick").is_empty());
    assert!(handed.lock().unwrap().is_empty(), "the run was another replica's");
    let clock_later = ManualClock::new(at("2026-12-03T11:00:05Z"));
    let config = SchedulerConfig { tick: Duration::from_secs(3600), replica: "a".into(), sweep_every: None };
    let plan = lifeboat_plans::load("sched.yaml", &drilled).expect("a valid plan");
    let seen = handed.clone();
    let hook: lifeboat_scheduler::scheduler::OnPublished =
        Arc::new(move |plan, rule, run_id| seen.lock().unwrap().push(format!("{}/{rule}/{run_id}", plan.name)));
    let later =
        Scheduler::with_drills(vec![plan], servers.bus_address().connect().await, clock_later, config, Some(hook));
    later.tick().await.expect("tick");
    later.tick().await.expect("tick");
    assert_eq!(*handed.lock().unwrap(), vec!["sched/hourly/sched-hourly-2026-12-03T110000Z".to_string()]);
}
