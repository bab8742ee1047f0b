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
//! 4. restores: same-region volume restores, Lifeboat (quotas off) versus the direct-SDK floor
//!    (CreateVolume + waiter, 16 in flight) on the same moto and the same snapshots, EC2 calls
//!    counted at a non-throttling proxy.
//! 5. throttled: the same behind a proxy enforcing EC2's documented buckets, with one and three
//!    `ebs` replicas: CreateVolume rate achieved against the refill rate, share throttled.
//! 6. rss: resident memory of each service, every one a `lifeboat serve <service>` process
//!    (`$LIFEBOAT_BIN`, else the `lifeboat` built next to the bench), with 10,000 tasks in flight.
//! 7. chaos: the suite's chaos runs with N volumes, over both transports (see `chaos.rs`).
//! 8. backups: a plan's rule backing up and copying N volumes, against a direct script (see
//!    `backups.rs`).
//! 9. s3: a protection group's full and incremental backups to a vault in another region and
//!    its restore, against a direct copy script (see `s3.rs`).
//!
//! `cargo run --locked -p lifeboat-tests --bin lifeboat-bench -- <case> [N]`, case one of
//! fan-out, overhead, aggregation, restores, throttled, rss, chaos, backups, s3 or all (each at its
//! default N).

mod backups;
mod chaos;
mod s3;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use futures::StreamExt;
use lifeboat_common::quota::QuotaConfig;
use lifeboat_common::subjects;
use lifeboat_proto as pb;
use lifeboat_tests::chaos::{Fleet, Memory, Pid};
use lifeboat_tests::throttle::{Limits, ThrottlingProxy};
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

/// The direct-SDK floor runs as many calls at once as a user's threaded script would.
const DIRECT_CONCURRENCY: usize = 16;

/// How the direct script fared: its wall time and the errors that ended some of its restores.
struct Direct {
    took: Duration,
    errors: Vec<String>,
}

/// CreateVolume from each snapshot, then the SDK's VolumeAvailable waiter, 16 at a time, the
/// SDK's default retries: the least a tool must do, and what a user would write.
async fn direct_restores(ec2: &aws_sdk_ec2::Client, snapshots: &[String]) -> Direct {
    let started = Instant::now();
    let outcomes: Vec<Result<(), String>> = futures::stream::iter(snapshots.to_vec())
        .map(|snapshot| {
            let ec2 = ec2.clone();
            async move {
                let created = ec2
                    .create_volume()
                    .availability_zone("us-east-1b")
                    .snapshot_id(snapshot)
                    .send()
                    .await
                    .map_err(|e| e.code().unwrap_or("CreateVolume failed").to_string())?;
                let volume = created.volume_id().unwrap_or_default().to_string();
                ec2.wait_until_volume_available()
                    .volume_ids(volume)
                    .wait(Duration::from_secs(600))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("waiter: {e}"))
            }
        })
        .buffer_unordered(DIRECT_CONCURRENCY)
        .collect()
        .await;
    Direct { took: started.elapsed(), errors: outcomes.into_iter().filter_map(Result::err).collect() }
}

/// An EC2 client through `proxy`.
fn ec2_via(servers: &Servers, proxy: &ThrottlingProxy) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&servers.aws("us-east-1")).endpoint_url(&proxy.url).build(),
    )
}

/// Lifeboat's restore of every `bench`-tagged snapshot, its services reaching AWS through
/// `proxy`, with `replicas` EBS workers sharing one quota: submit to final verdict.
async fn lifeboat_restores(
    servers: &mut Servers,
    proxy: &ThrottlingProxy,
    request_id: &str,
    replicas: usize,
    quotas: &QuotaConfig,
) -> (Duration, pb::RequestSummary) {
    let mut ebs = fast_ebs_config();
    ebs.service.quotas = quotas.clone();
    let moto_url = std::mem::replace(&mut servers.moto_url, proxy.url.clone());
    let mut running =
        vec![Running::start(servers, ServiceSet { ebs: Some(ebs.clone()), ..ServiceSet::default() }).await];
    for _ in 1..replicas {
        let only_ebs = ServiceSet {
            discovery: None,
            ebs: Some(ebs.clone()),
            dynamodb: None,
            ec2: None,
            rds: None,
            aggregator: false,
        };
        running.push(Running::start(servers, only_ebs).await);
    }
    servers.moto_url = moto_url;
    let client = servers.client().await;
    let started = Instant::now();
    let mut request = request(request_id, vec![set("bench")]);
    // Past 1,000 tasks a request needs the operator's confirmation, as on the CLI.
    request.options.get_or_insert_with(Default::default).confirm_large = true;
    client.submit(&request).await.unwrap();
    let summary = client.watch(request_id, Some(Duration::from_secs(3600)), |_| {}).await.unwrap();
    let took = started.elapsed();
    for services in running {
        services.stop().await;
    }
    (took, summary)
}

fn succeeded(summary: &pb::RequestSummary) -> usize {
    summary.counts.as_ref().map_or(0, |c| c.succeeded as usize)
}

/// Calls per action at the proxy, the busiest first.
fn call_breakdown(proxy: &ThrottlingProxy) -> String {
    let mut counts: Vec<_> = proxy.ec2_counts().into_iter().collect();
    counts.sort_by_key(|(_, count)| std::cmp::Reverse(count.calls));
    counts.iter().map(|(action, count)| format!("{action} {}", count.calls)).collect::<Vec<_>>().join(", ")
}

async fn restores(count: usize) {
    println!("== restores: {count} same-region volume restores, direct-SDK floor versus Lifeboat (quotas off)");
    let mut servers = Servers::start().await;
    let snapshots = seed(&servers.ec2("us-east-1"), count, "bench").await;

    let proxy = ThrottlingProxy::start(&servers.moto_url, Limits::none()).await;
    let direct = direct_restores(&ec2_via(&servers, &proxy), &snapshots).await;
    assert!(direct.errors.is_empty(), "the direct script failed: {:?}", &direct.errors[..direct.errors.len().min(5)]);
    let direct_calls = proxy.ec2_calls();
    let direct_breakdown = call_breakdown(&proxy);
    drop(proxy);

    let proxy = ThrottlingProxy::start(&servers.moto_url, Limits::none()).await;
    let off = QuotaConfig::parse("off").expect("quotas off");
    let (lifeboat, summary) = lifeboat_restores(&mut servers, &proxy, "restores", 1, &off).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    assert_eq!(succeeded(&summary), count);
    let lifeboat_calls = proxy.ec2_calls();

    let per_volume = |calls: u64| calls as f64 / count as f64;
    println!("  {:<44} {:>10} {:>10}", "", "direct", "Lifeboat");
    println!("  {:<44} {:>9.1}s {:>9.1}s", "wall time", direct.took.as_secs_f64(), lifeboat.as_secs_f64());
    println!(
        "  {:<44} {:>10} {:>9.2}x",
        "Lifeboat / direct (target <= 1.5x)",
        "",
        lifeboat.as_secs_f64() / direct.took.as_secs_f64()
    );
    println!(
        "  {:<44} {:>10.2} {:>10.2}",
        "EC2 calls per volume (target <= 1.2)",
        per_volume(direct_calls),
        per_volume(lifeboat_calls)
    );
    println!("  direct calls:   {direct_breakdown}");
    println!("  Lifeboat calls: {}", call_breakdown(&proxy));
}

async fn throttled(count: usize) {
    let buckets = Limits::ec2();
    let (burst, refill) = (100.0, 5.0);
    println!("== throttled: {count} volume restores behind EC2's documented buckets (CreateVolume {burst} burst, {refill}/s)");
    let mut servers = Servers::start().await;
    let snapshots = seed(&servers.ec2("us-east-1"), count, "bench").await;
    // The least time any tool can take: the burst at once, the rest at the refill rate.
    let floor = (count as f64 - burst).max(0.0) / refill;
    println!("  floor (CreateVolume beyond the burst at {refill}/s): {floor:.1}s");

    let proxy = ThrottlingProxy::start(&servers.moto_url, buckets.clone()).await;
    let direct = direct_restores(&ec2_via(&servers, &proxy), &snapshots).await;
    let failed_codes: std::collections::BTreeSet<&str> = direct.errors.iter().map(String::as_str).collect();
    println!(
        "  direct script (SDK default retries): {:.1}s, {} of {count} restores failed {:?}; {} of {} CreateVolume calls throttled",
        direct.took.as_secs_f64(),
        direct.errors.len(),
        failed_codes,
        proxy.count("CreateVolume").throttled,
        proxy.count("CreateVolume").calls,
    );
    drop(proxy);

    for replicas in [1, 3] {
        // Lifeboat's own bucket (in the shared store, spent by the previous run) refills too.
        tokio::time::sleep(Duration::from_secs_f64(burst / refill)).await;
        let proxy = ThrottlingProxy::start(&servers.moto_url, buckets.clone()).await;
        let request_id = format!("throttled-{replicas}");
        let (took, summary) =
            lifeboat_restores(&mut servers, &proxy, &request_id, replicas, &QuotaConfig::default()).await;
        let create = proxy.count("CreateVolume");
        let (calls, throttles) = proxy.ec2_counts().values().fold((0, 0), |(c, t), n| (c + n.calls, t + n.throttled));
        // Volumes restored, not CreateVolume calls: a repeated call restores nothing more.
        let achieved = (succeeded(&summary) as f64 - burst).max(0.0) / took.as_secs_f64();
        println!(
            "  Lifeboat, {replicas} ebs replica(s): {:.1}s, {:?}, {} succeeded; CreateVolume beyond the burst at {achieved:.2}/s = {:.0}% of refill (target >= 95%); throttled {throttles} of {calls} EC2 calls = {:.2}% (target <= 1%), CreateVolume {} of {}",
            took.as_secs_f64(),
            verdict(&summary),
            succeeded(&summary),
            100.0 * achieved / refill,
            100.0 * throttles as f64 / calls.max(1) as f64,
            create.throttled,
            create.calls,
        );
        println!("    calls: {}", call_breakdown(&proxy));
    }
}

/// The services of `lifeboat serve`, each measured in a process of its own.
const SERVICES: &[&str] = &["discovery", "ebs", "dynamodb", "ec2", "rds", "aggregator"];

/// The `lifeboat` binary the services run from: `$LIFEBOAT_BIN`, else the one built next to
/// this bench (`target/<profile>/lifeboat`).
fn lifeboat_binary() -> PathBuf {
    let binary = std::env::var_os("LIFEBOAT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_exe().expect("the bench's own path").with_file_name("lifeboat"));
    assert!(
        binary.is_file(),
        "LIFEBOAT_BIN: no lifeboat binary at {} (cargo build --locked --workspace --tests --bins)",
        binary.display()
    );
    binary
}

/// Until every service answers its readiness probe (its bus and, for the aggregator, its store).
async fn wait_ready(fleet: &mut Fleet, ports: &[u16]) {
    for port in ports {
        let probe = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reqwest::get(&probe).await.is_ok_and(|r| r.status().is_success()) {
            fleet.assert_running();
            assert!(Instant::now() < deadline, "{probe} not ready within 60s:\n{}", fleet.logs_tail(20));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One service's process: resident before the submit, the samples of the steady window, and
/// its high-water mark before the submit (to tell a peak of its start-up from one of the work).
struct Sampled {
    pid: Pid,
    baseline: Memory,
    highest_sample_kib: u64,
    steady_kib: Vec<u64>,
}

impl Sampled {
    /// The kernel's high-water mark when it rose after the submit (a spike between samples
    /// counts), else the highest sample: start-up's own peak is not the work's.
    fn peak_kib(&self, now: Memory) -> u64 {
        if now.peak_rss_kib > self.baseline.peak_rss_kib {
            now.peak_rss_kib
        } else {
            self.highest_sample_kib
        }
    }

    /// The median of the steady window.
    fn steady_kib(&self) -> u64 {
        let mut samples = self.steady_kib.clone();
        samples.sort_unstable();
        samples.get(samples.len() / 2).copied().unwrap_or(self.baseline.rss_kib)
    }
}

/// Tasks planned and not final.
fn in_flight(summary: &pb::RequestSummary) -> usize {
    let counts = summary.counts.clone().unwrap_or_default();
    let ended = counts.succeeded + counts.failed + counts.skipped + counts.cancelled;
    summary.total_tasks.saturating_sub(ended) as usize
}

/// Sampled after every task is enqueued: this long, the last `STEADY_WINDOW` of it the steady state.
const IN_FLIGHT_FOR: Duration = Duration::from_secs(30);
const STEADY_WINDOW: Duration = Duration::from_secs(10);

/// Each service in a `lifeboat serve <service>` process of its own (the `lifeboat` binary of
/// `$LIFEBOAT_BIN`); behind EC2's buckets CreateVolume admits 5/s, so nearly all tasks stay in
/// flight (planned, queued, waiting their token) while every process's RSS is sampled.
async fn rss(tasks: usize) {
    println!("== rss: each service in its own process, {tasks} EBS tasks in flight");
    let mut servers = Servers::start().await;
    // Untagged, as in fan-out: moto's tag filters are too slow at this count.
    seed(&servers.ec2("us-east-1"), tasks, "").await;
    let proxy = ThrottlingProxy::start(&servers.moto_url, Limits::ec2()).await;
    let moto_url = std::mem::replace(&mut servers.moto_url, proxy.url.clone());
    let mut fleet = Fleet::new(lifeboat_binary(), &servers);
    servers.moto_url = moto_url;
    let ports: Vec<u16> =
        SERVICES.iter().map(|&service| if service == "aggregator" { servers.api_port } else { free_port() }).collect();
    let pids: Vec<Pid> =
        SERVICES.iter().zip(&ports).map(|(&service, &port)| fleet.spawn(service, service, Some(port), &[])).collect();
    wait_ready(&mut fleet, &ports).await;
    // Idle: connected, consumers pulling, nothing to do yet.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut sampled: Vec<Sampled> = pids
        .iter()
        .map(|&pid| {
            let baseline = fleet.memory(pid).expect("a running service");
            Sampled { pid, baseline, highest_sample_kib: baseline.rss_kib, steady_kib: Vec::new() }
        })
        .collect();

    let client = servers.client().await;
    let mut request = request("rss", vec![set("")]);
    // Past 1,000 tasks a request needs the operator's confirmation, as on the CLI.
    request.options.get_or_insert_with(Default::default).confirm_large = true;
    let started = Instant::now();
    client.submit(&request).await.unwrap();
    let bus = servers.bus().await;
    let mut stream = bus.context().get_stream(subjects::WORK_STREAM).await.unwrap();
    let mut enqueued_at = None;
    let mut in_flight_samples = Vec::new();
    while enqueued_at.is_none_or(|at: Instant| at.elapsed() < IN_FLIGHT_FOR) {
        fleet.assert_running();
        let steady = enqueued_at.is_some_and(|at: Instant| at.elapsed() >= IN_FLIGHT_FOR - STEADY_WINDOW);
        for process in &mut sampled {
            let rss = fleet.memory(process.pid).expect("a running service").rss_kib;
            process.highest_sample_kib = process.highest_sample_kib.max(rss);
            if steady {
                process.steady_kib.push(rss);
            }
        }
        if steady {
            if let Ok(Some(summary)) = client.status("rss", false).await.map(|reply| reply.summary) {
                in_flight_samples.push(in_flight(&summary));
            }
        }
        let stored = stream.info().await.unwrap().state.messages as usize;
        let created = proxy.count("CreateVolume").passed() as usize;
        if enqueued_at.is_none() && stored + created >= tasks {
            enqueued_at = Some(Instant::now());
            println!("  all {tasks} tasks enqueued {:.1}s after submit", started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            println!("  gave up waiting for the plan after 30 min ({stored} tasks stored)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    in_flight_samples.sort_unstable();
    let created = proxy.count("CreateVolume").passed() as usize;
    // A busy aggregator may answer no status query in the window; then every task whose volume
    // is not created yet counts as in flight.
    let (in_flight, counted_by) = match in_flight_samples.get(in_flight_samples.len() / 2) {
        Some(&median) => (median, format!("median of {} status replies", in_flight_samples.len())),
        None => (tasks.saturating_sub(created), "no status reply: tasks less volumes created".to_string()),
    };
    println!(
        "  steady state: the last {}s of {}s with the tasks in flight; {in_flight} of {tasks} in flight ({counted_by}), {created} volumes created",
        STEADY_WINDOW.as_secs(),
        IN_FLIGHT_FOR.as_secs(),
    );
    println!(
        "  {:<11} {:>8} {:>13} {:>10} {:>12} {:>30}",
        "service", "pid", "baseline MiB", "peak MiB", "steady MiB", "steady - baseline per 1,000"
    );
    for process in &sampled {
        let now = fleet.memory(process.pid).expect("a running service");
        let (baseline, steady) = (process.baseline.rss_kib, process.steady_kib());
        let per_thousand = mib(steady.saturating_sub(baseline)) * 1000.0 / in_flight.max(1) as f64;
        println!(
            "  {:<11} {:>8} {:>13.1} {:>10.1} {:>12.1} {:>26.2} MiB",
            fleet.name(process.pid),
            fleet.os_pid(process.pid).unwrap_or_default(),
            mib(baseline),
            mib(process.peak_kib(now)),
            mib(steady),
            per_thousand
        );
    }
    // Ended rather than left to the kill: its tasks not started end CANCELLED.
    let cancelled = Instant::now();
    client.cancel("rss", "benchmark finished").await.unwrap();
    match client.watch("rss", Some(Duration::from_secs(600)), |_| {}).await {
        Ok(summary) => {
            println!("  cancelled: {:?} {:.1}s later", verdict(&summary), cancelled.elapsed().as_secs_f64())
        }
        Err(e) => println!("  cancelled, no verdict within 600s: {e}"),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "all".into());
    let n = args.next().map(|n| n.parse::<usize>().expect("N is a count"));
    match case.as_str() {
        "fan-out" => fan_out(n.unwrap_or(10_000)).await,
        "overhead" => overhead(n.unwrap_or(200)).await,
        "aggregation" => aggregation(n.unwrap_or(2000)).await,
        "restores" => restores(n.unwrap_or(500)).await,
        "throttled" => throttled(n.unwrap_or(200)).await,
        "rss" => rss(n.unwrap_or(10_000)).await,
        "chaos" => chaos::chaos(n.unwrap_or(200)).await,
        "backups" => backups::backups(n.unwrap_or(1000)).await,
        "s3" => s3::s3_bench(n.unwrap_or(5000)).await,
        "all" => {
            fan_out(10_000).await;
            overhead(200).await;
            aggregation(2000).await;
            restores(500).await;
            restores(2000).await;
            throttled(200).await;
            rss(10_000).await;
            chaos::chaos(200).await;
            backups::backups(1000).await;
            s3::s3_bench(5000).await;
        }
        other => {
            eprintln!(
                "unknown case {other}: fan-out, overhead, aggregation, restores, throttled, rss, chaos, backups, s3 or all"
            );
            std::process::exit(2);
        }
    }
}
