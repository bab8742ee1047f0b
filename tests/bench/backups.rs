//! 8. backups: a backup plan's rule over N tagged volumes with a copy of every snapshot to
//!    another region, through discovery and the EBS service (default quotas, 20 copies in flight
//!    per destination), EC2 calls counted at a non-throttling proxy; against the same snapshots
//!    and copies made by a direct script (CreateSnapshot, then CopySnapshot, 20 copies at once).

use std::time::{Duration, Instant};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use futures::StreamExt;
use lifeboat_proto as pb;
use lifeboat_tests::throttle::{Limits, ThrottlingProxy};
use lifeboat_tests::*;

const PLAN: &str = r#"
name: bench
rules:
  - name: nightly
    schedule: "0 2 * * *"
    selection: {resource_types: [ebs], regions: [us-east-1], tags: {include: {bench: backup}}}
    retention: {days: 7}
    copy_to: [{region: us-west-2, retention: {days: 14}}]
"#;

/// What a plain script does: snapshot every volume, then copy every snapshot, 20 at a time.
async fn direct(servers: &Servers, volumes: &[String]) -> Result<Duration, String> {
    let (east, west) = (servers.ec2("us-east-1"), servers.ec2("us-west-2"));
    let started = Instant::now();
    let results: Vec<Result<(), String>> = futures::stream::iter(volumes.to_vec())
        .map(|volume| {
            let (east, west) = (east.clone(), west.clone());
            async move {
                let snapshot = east
                    .create_snapshot()
                    .volume_id(volume)
                    .send()
                    .await
                    .map_err(|e| e.code().unwrap_or("CreateSnapshot").to_string())?;
                west.copy_snapshot()
                    .source_region("us-east-1")
                    .source_snapshot_id(snapshot.snapshot_id().unwrap_or_default())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.code().unwrap_or("CopySnapshot").to_string())
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(started.elapsed())
    } else {
        Err(format!("{} failed, first {}", errors.len(), errors[0]))
    }
}

pub async fn backups(count: usize) {
    init_logging();
    println!("== backups: {count} volumes snapshotted and copied to us-west-2 by a plan's rule");
    let mut servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let volumes: Vec<String> = futures::stream::iter(0..count)
        .map(|i| {
            let east = east.clone();
            async move { create_volume(&east, "us-east-1a", 1 + (i % 16) as i32, &[("bench", "backup")]).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let floor = direct(&servers, &volumes).await;

    let proxy = ThrottlingProxy::start(&servers.moto_url, Limits::none()).await;
    let moto_url = std::mem::replace(&mut servers.moto_url, proxy.url.clone());
    // AWS's documented quotas unless LIFEBOAT_QUOTAS says otherwise, as `lifeboat serve` reads them.
    let quotas = lifeboat_common::quota::QuotaConfig::from_env().expect("LIFEBOAT_QUOTAS");
    let mut ebs = fast_ebs_config();
    ebs.service.quotas = quotas.clone();
    // A task waits for one of 20 copy slots while hundreds do: the tests' quick retries (at most
    // 0.5 s) would spend the consumer's 1,000 deliveries in minutes; these spend them in hours,
    // as the production policy (60 s) does in days.
    ebs.service.wait.retry_max = Duration::from_secs(5);
    ebs.service.consumer.max_deliveries = 10_000;
    let running = Running::start(&servers, ServiceSet { ebs: Some(ebs), ..ServiceSet::default() }).await;
    servers.moto_url = moto_url;
    let client = servers.client().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, PLAN).expect("write the plan");
    let requests = lifeboat_cli::backup::run_requests(file.to_str().unwrap(), None).expect("a run");
    let run_id = requests[0].request_id.clone();
    let started = Instant::now();
    client.submit(&requests[0]).await.expect("submit the run");
    let summary = client.watch(&run_id, Some(Duration::from_secs(3600)), |_| {}).await.expect("a verdict");
    let took = started.elapsed();
    running.stop().await;
    let succeeded = summary.counts.as_ref().map_or(0, |c| c.succeeded);
    let copies = snapshots_tagged(&servers.ec2("us-west-2"), "lifeboat:request-id", &run_id).await.len();
    println!("  verdict {:?}: {succeeded} backed up, {copies} copies in us-west-2", verdict(&summary));
    let mut reasons = std::collections::BTreeMap::new();
    for task in summary.tasks.iter().filter(|t| t.phase != pb::TaskPhase::Succeeded as i32) {
        *reasons.entry(task.reason_code.clone()).or_insert(0) += 1;
    }
    if !reasons.is_empty() {
        println!("  not backed up, by reason: {reasons:?}");
    }
    match floor {
        Ok(floor) => println!(
            "  wall time: direct script {:.1}s, Lifeboat {:.1}s ({:.2}x)",
            floor.as_secs_f64(),
            took.as_secs_f64(),
            took.as_secs_f64() / floor.as_secs_f64()
        ),
        Err(e) => println!("  wall time: Lifeboat {:.1}s; the direct script failed: {e}", took.as_secs_f64()),
    }
    // At EC2's documented rates (less Lifeboat's headroom), the snapshots and the copies (made
    // in another region, so at the same time) cannot go faster than this.
    let floor = |api: lifeboat_common::quota::Api| {
        let rate = quotas.rate("", api);
        rate.map_or(0.0, |r| (count as f64 - r.burst).max(0.0) / r.per_second)
    };
    let quota_floor =
        floor(lifeboat_common::quota::Api::CreateSnapshot).max(floor(lifeboat_common::quota::Api::Ec2Mutate));
    println!("  floor at the EC2 quotas (CreateSnapshot, CopySnapshot buckets): {quota_floor:.1}s");
    println!("  Lifeboat EC2 calls per volume: {:.2}", proxy.ec2_calls() as f64 / count as f64);
}
