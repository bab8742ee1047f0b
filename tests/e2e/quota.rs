//! Quotas shared by replicas: two processes' worth of [`Quotas`] over one store stay under one
//! token bucket and one concurrency cap together, on the JetStream KV bucket and on the
//! DynamoDB state table; and the batched status checks answer many callers with one fetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_common::batch::Batcher;
use lifeboat_common::quota::{Api, Cap, QuotaConfig, Quotas};
use lifeboat_common::shared::SharedStore;
use lifeboat_tests::{Servers, Transport};

/// Two replicas' stores: separate connections to the same bus.
async fn two_stores(servers: &Servers) -> (Arc<dyn SharedStore>, Arc<dyn SharedStore>) {
    (servers.shared_bus().await.shared(), servers.shared_bus().await.shared())
}

async fn two_replicas_share_one_bucket(transport: Transport) {
    let servers = Servers::start_with(transport).await;
    let (a, b) = two_stores(&servers).await;
    // A bucket of 5 refilled at 10/s: 25 tokens take at least (25 - 5) / 10 = 2 s however
    // many takers there are.
    let config = QuotaConfig::parse("ec2.create-volume=5/10").expect("quota spec");
    let replicas = [Quotas::new(a, config.clone()), Quotas::new(b, config)];
    let started = Instant::now();
    let mut takers = tokio::task::JoinSet::new();
    for n in 0..25 {
        let quotas = replicas[n % 2].clone();
        takers.spawn(async move { quotas.take("123456789012", "us-east-1", Api::CreateVolume).await });
    }
    while let Some(taken) = takers.join_next().await {
        taken.expect("taker").expect("token");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "25 tokens of a 5-burst 10/s bucket in {took:?}");
    assert!(took < Duration::from_secs(6), "the bucket is slower than its rate: {took:?}");
    // Another account's bucket is its own: its burst is there at once.
    let started = Instant::now();
    for _ in 0..5 {
        replicas[0].take("210987654321", "us-east-1", Api::CreateVolume).await.expect("token");
    }
    assert!(started.elapsed() < Duration::from_millis(500), "another account waited {:?}", started.elapsed());
}

async fn two_replicas_share_one_cap(transport: Transport) {
    let servers = Servers::start_with(transport).await;
    let (a, b) = two_stores(&servers).await;
    let config = QuotaConfig::parse("ebs.copies=3").expect("quota spec");
    let (one, two) = (Quotas::new(a.clone(), config.clone()), Quotas::new(b, config));
    let key = Quotas::slot_key(Cap::SnapshotCopies, "123456789012", "us-west-2");
    let lease = Duration::from_secs(3600);
    let mut taken = Vec::new();
    for n in 0..5 {
        let quotas = if n % 2 == 0 { &one } else { &two };
        taken.push(quotas.acquire(&key, Cap::SnapshotCopies, &format!("task-{n}"), lease).await.expect("acquire"));
    }
    assert_eq!(taken, [true, true, true, false, false], "three slots across both replicas");
    // A holder asking again (a redelivery) keeps its slot rather than take a second.
    assert!(two.acquire(&key, Cap::SnapshotCopies, "task-1", lease).await.expect("acquire"));
    assert_eq!(one.held(&key).await.expect("held"), 3);
    lifeboat_common::quota::release(a.as_ref(), &key, "task-0").await.expect("release");
    assert!(two.acquire(&key, Cap::SnapshotCopies, "task-3", lease).await.expect("acquire"), "a freed slot is taken");
    assert!(!one.acquire(&key, Cap::SnapshotCopies, "task-4", lease).await.expect("acquire"));
    // A holder that died without releasing frees its slot when its lease runs out.
    let other = Quotas::slot_key(Cap::SnapshotCopies, "123456789012", "eu-west-1");
    // Leases count in whole seconds: 4 s leaves the next three calls (DynamoDB on SQS, slow on a
    // loaded machine) at least 3 s to see it still held.
    assert!(one.acquire(&other, Cap::SnapshotCopies, "dead", Duration::from_secs(4)).await.expect("acquire"));
    for n in 0..2 {
        assert!(one.acquire(&other, Cap::SnapshotCopies, &format!("live-{n}"), lease).await.expect("acquire"));
    }
    assert!(!one.acquire(&other, Cap::SnapshotCopies, "late", lease).await.expect("acquire"));
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert!(one.acquire(&other, Cap::SnapshotCopies, "late", lease).await.expect("acquire"), "the lease ran out");
}

mod nats {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_stay_under_one_token_bucket() {
        two_replicas_share_one_bucket(Transport::Nats).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_hold_at_most_the_cap_and_dead_holders_expire() {
        two_replicas_share_one_cap(Transport::Nats).await;
    }
}

mod sqs {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_stay_under_one_token_bucket() {
        two_replicas_share_one_bucket(Transport::Sqs).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_hold_at_most_the_cap_and_dead_holders_expire() {
        two_replicas_share_one_cap(Transport::Sqs).await;
    }
}

#[test]
fn quota_specs_are_parsed_and_errors_name_the_quota() {
    let config = QuotaConfig::parse("ec2.describe=200/40, 111122223333:ec2.create-volume=10/1,rds.copies=5").unwrap();
    assert_eq!(config.rate("999999999999", Api::Ec2Describe).map(|r| (r.burst, r.per_second)), Some((200.0, 40.0)));
    assert_eq!(config.rate("111122223333", Api::CreateVolume).map(|r| (r.burst, r.per_second)), Some((10.0, 1.0)));
    // Unnamed families keep AWS's documented rates, with a tenth of the burst left over.
    assert_eq!(config.rate("111122223333", Api::RunInstances).map(|r| (r.burst, r.per_second)), Some((4.0, 2.0)));
    assert_eq!(config.rate("999999999999", Api::CreateVolume).map(|r| (r.burst, r.per_second)), Some((90.0, 5.0)));
    assert_eq!(config.limit(Cap::RdsCopies), 5);
    assert_eq!(config.limit(Cap::DynamoDbRestores), 50);
    assert_eq!(QuotaConfig::parse("off").unwrap().rate("1", Api::CreateVolume), None);
    let error = QuotaConfig::parse("ec2.create-volumes=1/1").unwrap_err();
    assert!(error.contains("ec2.create-volumes") && error.contains("ec2.create-volume,"), "{error}");
    let error = QuotaConfig::parse("ec2.describe=fast").unwrap_err();
    assert!(error.contains("ec2.describe") && error.contains("BURST/PER_SECOND"), "{error}");
}

#[tokio::test]
async fn concurrent_checks_of_one_group_share_one_fetch() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let batcher = Arc::new(Batcher::new(Duration::from_millis(50), 200, move |region: String, ids: Vec<String>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            // Odd ids do not exist.
            Ok(ids
                .into_iter()
                .filter(|id| id.trim_start_matches("vol-").parse::<u32>().is_ok_and(|n| n % 2 == 0))
                .map(|id| (id.clone(), format!("{region}/{id}")))
                .collect::<HashMap<_, _>>())
        }
    }));
    let mut checks = tokio::task::JoinSet::new();
    for n in 0..450u32 {
        let batcher = batcher.clone();
        checks.spawn(async move {
            let answer = batcher.get("us-east-1", "us-east-1".to_string(), &format!("vol-{n}")).await;
            (n, answer.expect("fetched"))
        });
    }
    while let Some(checked) = checks.join_next().await {
        let (n, found) = checked.expect("check");
        assert_eq!(found, (n % 2 == 0).then(|| format!("us-east-1/vol-{n}")));
    }
    // 450 ids at 200 per call: three fetches, not 450.
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
}
