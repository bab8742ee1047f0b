//! Benchmarks that print numbers (not timed tests), against real nats-server and moto_server:
//!
//! 1. fan-out: one request selecting 10,000 snapshots; time from submit until every
//!    RestoreTask is durably stored in the work stream.
//! 2. overhead: 200 EBS restores through Lifeboat (submit to final verdict) versus the same
//!    CreateVolume calls made directly with the same concurrency.
//!
//! 3. aggregation: status events recorded per second by the aggregator's store, JetStream KV
//!    and DynamoDB (moto), with one replica and with two racing for the same requests.
//!
//! `cargo run --release -p lifeboat-tests --bin lifeboat-bench [-- FANOUT_TASKS RESTORES EVENT_TASKS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lifeboat_common::subjects;
use lifeboat_proto as pb;
use lifeboat_tests::*;

/// Seeding and direct calls use the EBS service's default concurrency.
const CONCURRENCY: usize = 32;

/// Seeds `count` volumes with a snapshot each, tagged `bench=<tag>` unless `tag` is empty.
async fn seed(ec2: &aws_sdk_ec2::Client, count: usize, tag: &str) -> Vec<String> {
    let started = Instant::now();
    let snapshots: Vec<String> = futures::stream::iter(0..count)
        .map(|i| {
            let ec2 = ec2.clone();
            let tag = tag.to_string();
            async move {
                let tags: Vec<(&str, &str)> = if tag.is_empty() { vec![] } else { vec![("bench", tag.as_str())] };
                let volume = create_volume(&ec2, "us-east-1a", 1 + (i % 16) as i32, &tags).await;
                create_snapshot(&ec2, &volume, &tags).await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    eprintln!("  seeded {count} volumes and snapshots in {:.1}s", started.elapsed().as_secs_f64());
    snapshots
}

fn set(tag: &str) -> pb::RestoreSet {
    let tags: Vec<(&str, &str)> = if tag.is_empty() { vec![] } else { vec![("bench", tag)] };
    ebs_set(
        "bench",
        "us-east-1",
        &tags,
        None,
        pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() },
    )
}

async fn fan_out(tasks: usize) {
    println!("== fan-out: one request selecting {tasks} snapshots");
    let servers = Servers::start().await;
    let ec2 = servers.ec2("us-east-1");
    // Untagged: moto looks tags up by scanning every tag of the region for every snapshot, which
    // makes a tag-filtered DescribeSnapshots of 10,000 snapshots take many minutes there. The
    // set selects every snapshot of the region instead; real AWS filters tags server-side.
    seed(&ec2, tasks, "").await;

    // What discovery's own listing costs against moto, for reference.
    let listed = Instant::now();
    let found = lifeboat_discovery::ebs::list_snapshots(&ec2, ACCOUNT, "us-east-1", &Default::default()).await.unwrap();
    let listing = listed.elapsed();
    assert_eq!(found.len(), tasks);

    // Discovery alone: the tasks stay in the work stream, where they are counted.
    let _discovery =
        Running::start(&servers, ServiceSet { ebs: None, aggregator: false, ..ServiceSet::default() }).await;
    let bus = servers.bus().await;
    let client = lifeboat_cli::client::LifeboatClient::from_bus(bus.clone());
    let mut stream = bus.context().get_stream(subjects::WORK_STREAM).await.unwrap();
    let submitted = Instant::now();
    client.submit(&request("fanout", vec![set("")])).await.unwrap();
    let mut first_task = None;
    loop {
        let stored = stream.info().await.unwrap().state.messages as usize;
        if stored > 0 && first_task.is_none() {
            first_task = Some(submitted.elapsed());
        }
        if stored >= tasks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = submitted.elapsed();
    println!("  DescribeSnapshots of {tasks} snapshots from moto: {:.2}s", listing.as_secs_f64());
    println!("  submit -> first task stored:                 {:.2}s", first_task.unwrap_or_default().as_secs_f64());
    println!("  submit -> all {tasks} tasks durably enqueued:  {:.2}s", total.as_secs_f64());
    println!(
        "  publishing (tasks + QUEUED events) after listing: {:.0} tasks/s",
        tasks as f64 / (total.saturating_sub(listing)).as_secs_f64().max(0.001)
    );
    if let Some(peak) = peak_rss_mib() {
        println!("  peak RSS of this process (discovery runs in it): {peak:.0} MiB");
    }
}

/// The process's peak resident set (Linux `VmHWM`).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Each variant runs on its own fresh moto seeded the same way, so none pays for another's
/// resources (moto's tag filters get slower with every tag in the region).
async fn overhead(restores: usize) {
    println!("== overhead: {restores} EBS restores, Lifeboat versus the same calls made directly");

    // A: plain CreateVolume calls, the least any tool must do.
    let servers = Servers::start().await;
    let ec2 = servers.ec2("us-east-1");
    let snapshots = seed(&ec2, restores, "bench").await;
    let started = Instant::now();
    futures::stream::iter(snapshots)
        .map(|snapshot| {
            let ec2 = ec2.clone();
            async move { ec2.create_volume().availability_zone("us-east-1b").snapshot_id(snapshot).send().await.unwrap() }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let plain = started.elapsed();
    drop(servers);

    // B: Lifeboat's own AWS calls (tag lookup, tagged CreateVolume with ClientToken), called
    // directly: restore_step without bus, events or aggregation.
    let servers = Servers::start().await;
    let ec2 = servers.ec2("us-east-1");
    seed(&ec2, restores, "bench").await;
    let found =
        lifeboat_discovery::ebs::list_snapshots(&ec2, ACCOUNT, "us-east-1", &[("bench".into(), "bench".into())].into())
            .await
            .unwrap();
    let quotas = lifeboat_common::quota::QuotaConfig::parse("off").unwrap();
    let store = Arc::new(lifeboat_common::shared::MemoryStore::default());
    let limits = Arc::new(lifeboat_ebs::Context::new(store, quotas, Duration::from_millis(50)));
    let started = Instant::now();
    futures::stream::iter(found)
        .map(|(_, backup)| {
            let (ec2, limits) = (ec2.clone(), limits.clone());
            async move {
                let target = pb::EbsTarget {
                    account_id: ACCOUNT.into(),
                    region: "us-east-1".into(),
                    availability_zone: "us-east-1b".into(),
                    ..Default::default()
                };
                let task = pb::RestoreTask {
                    request_id: "direct".into(),
                    task_id: lifeboat_common::ids::task_id("direct", "bench", &backup.backup_id),
                    backup: Some(backup),
                    target: Some(pb::restore_task::Target::Ebs(target.clone())),
                    ..Default::default()
                };
                let clients = lifeboat_ebs::Clients { target: ec2.clone(), source: ec2 };
                let step = lifeboat_ebs::restore_step(&limits, &clients, &task, &target, 1, &mut Default::default())
                    .await
                    .unwrap();
                assert!(matches!(step, lifeboat_ebs::Step::Done { .. }), "{step:?}");
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let same_calls = started.elapsed();
    drop(servers);

    // C: the whole of Lifeboat, from submit to the final verdict.
    let servers = Servers::start().await;
    let ec2 = servers.ec2("us-east-1");
    seed(&ec2, restores, "bench").await;
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let started = Instant::now();
    client.submit(&request("overhead", vec![set("bench")])).await.unwrap();
    let summary = client.watch("overhead", Some(Duration::from_secs(600)), |_| {}).await.unwrap();
    let lifeboat = started.elapsed();
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
    assert_eq!(summary.counts.unwrap().succeeded as usize, restores);

    let per_task =
        |total: Duration, base: Duration| total.saturating_sub(base).as_secs_f64() * 1000.0 / restores as f64;
    println!("  A direct CreateVolume x{restores} ({CONCURRENCY} in flight):  {:.2}s", plain.as_secs_f64());
    println!("  B Lifeboat's AWS calls made directly:         {:.2}s", same_calls.as_secs_f64());
    println!("  C Lifeboat, submit -> COMPLETED verdict:      {:.2}s", lifeboat.as_secs_f64());
    println!("  per task, C - A (all of Lifeboat's cost):     {:.1} ms", per_task(lifeboat, plain));
    println!("  per task, C - B (bus, events, aggregation):   {:.1} ms", per_task(lifeboat, same_calls));
}

/// The events of `requests` requests of `tasks_each` tasks: a plan, then QUEUED, RUNNING and
/// SUCCEEDED per task.
fn request_events(requests: usize, tasks_each: usize) -> Vec<Vec<pb::StatusEvent>> {
    (0..requests)
        .map(|r| {
            let request_id = format!("agg-{r}");
            let planned = pb::StatusEvent {
                request_id: request_id.clone(),
                detail: Some(pb::status_event::Detail::Planned(pb::RestorePlanned {
                    total_tasks: tasks_each as u32,
                    ..Default::default()
                })),
                at: Some(lifeboat_common::time::now()),
                ..Default::default()
            };
            let mut events = vec![planned];
            for phase in [pb::TaskPhase::Queued, pb::TaskPhase::Running, pb::TaskPhase::Succeeded] {
                for t in 0..tasks_each {
                    events.push(pb::StatusEvent {
                        request_id: request_id.clone(),
                        set_name: "bench".into(),
                        task_id: format!("t-{t:05}"),
                        phase: phase as i32,
                        attempt: u32::from(phase != pb::TaskPhase::Queued),
                        at: Some(lifeboat_common::time::now()),
                        ..Default::default()
                    });
                }
            }
            events
        })
        .collect()
}

async fn aggregation(tasks: usize) {
    const REQUESTS: usize = 8;
    let tasks_each = (tasks / REQUESTS).max(1);
    println!("== aggregation: {REQUESTS} requests of {tasks_each} tasks, 3 events per task");
    for transport in [Transport::Nats, Transport::Sqs] {
        let store_name = if transport == Transport::Nats { "JetStream KV" } else { "DynamoDB (moto)" };
        for replicas in [1usize, 2] {
            let servers = Servers::start_with(transport).await;
            let mut stores = Vec::new();
            for _ in 0..replicas {
                stores.push(servers.store().await);
            }
            let requests = request_events(REQUESTS, tasks_each);
            let total: usize = requests.iter().map(Vec::len).sum();
            let started = Instant::now();
            // Every replica records every event (as with redeliveries to both), requests side by side.
            let work = stores.iter().flat_map(|store| {
                requests.iter().map(move |events| async move {
                    for event in events {
                        store.record(event).await.expect("record");
                    }
                })
            });
            futures::future::join_all(work).await;
            let elapsed = started.elapsed();
            let summary = stores[0].summary("agg-0", 0).await.unwrap().unwrap();
            assert_eq!(summary.counts.unwrap().succeeded as usize, tasks_each);
            println!(
                "  {store_name}, {replicas} replica(s) each given every event: {total} events recorded in {:.2}s, {:.0} events/s",
                elapsed.as_secs_f64(),
                total as f64 / elapsed.as_secs_f64()
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let fan_out_tasks = args.first().copied().unwrap_or(10_000);
    let restores = args.get(1).copied().unwrap_or(200);
    if fan_out_tasks > 0 {
        fan_out(fan_out_tasks).await;
    }
    if restores > 0 {
        overhead(restores).await;
    }
    aggregation(args.get(2).copied().unwrap_or(2000)).await;
}
