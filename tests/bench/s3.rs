//! 9. s3: a protection group of one bucket with N small objects (versioned) backed up to a vault
//!    in another region by a plan's rule, through discovery and the s3 service; against a direct
//!    script doing the same copies (ListObjectVersions, then CopyObject 16 at a time, the s3
//!    service's default `copy_concurrency`). Then 1 % of the objects change and the rule runs
//!    again (incremental), and the group is restored from the vault to a target bucket.

use std::time::{Duration, Instant};

use aws_sdk_s3::types::VersioningConfiguration;
use aws_sdk_s3::types::{BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration};
use futures::StreamExt;
use lifeboat_proto as pb;
use lifeboat_tests::*;

const COPIES: usize = 16;

const PLAN: &str = r#"
name: bench-s3
protection_groups:
  - name: bench
    buckets: [{bucket: bench-source, region: us-east-1}]
vault: {bucket: bench-vault, region: us-west-2, prefix: vault/}
rules:
  - name: objects
    schedule: "0 1 * * *"
    selection: {resource_types: [s3], protection_groups: [bench]}
    retention: {days: 30}
"#;

fn s3(servers: &Servers, region: &str) -> aws_sdk_s3::Client {
    lifeboat_config::clients::s3_client(&servers.aws(region), ACCOUNT, region)
}

async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str, region: &str) {
    let mut create = client.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build(),
        );
    }
    create.send().await.expect("create the bucket");
}

async fn put_all(client: &aws_sdk_s3::Client, keys: impl Iterator<Item = String>, body: &'static [u8]) {
    futures::stream::iter(keys)
        .map(|key| {
            let client = client.clone();
            async move {
                client
                    .put_object()
                    .bucket("bench-source")
                    .key(key)
                    .body(body.to_vec().into())
                    .send()
                    .await
                    .expect("put")
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

fn key(i: usize) -> String {
    format!("data/{:02}/object-{i:06}.json", i % 100)
}

/// What a plain script does: list every version, copy each current one to the other region.
async fn direct(east: &aws_sdk_s3::Client, west: &aws_sdk_s3::Client) -> (Duration, usize) {
    let started = Instant::now();
    let mut current = Vec::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = east
            .list_object_versions()
            .bucket("bench-source")
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .expect("list versions");
        for version in page.versions() {
            if version.is_latest() == Some(true) {
                current.push((version.key().unwrap_or_default().to_string(), version.version_id().map(str::to_string)));
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
    let copied = futures::stream::iter(current)
        .map(|(key, version)| {
            let west = west.clone();
            async move {
                let source = match version {
                    Some(v) => format!("bench-source/{key}?versionId={v}"),
                    None => format!("bench-source/{key}"),
                };
                west.copy_object().bucket("bench-direct").key(key).copy_source(source).send().await.expect("copy")
            }
        })
        .buffer_unordered(COPIES)
        .collect::<Vec<_>>()
        .await
        .len();
    (started.elapsed(), copied)
}

async fn watch(client: &lifeboat_cli::client::Client, request_id: &str) -> pb::RequestSummary {
    client.watch(request_id, Some(Duration::from_secs(3600)), |_| {}).await.expect("a verdict within an hour")
}

fn message_of(summary: &pb::RequestSummary) -> String {
    summary.tasks.first().map(|t| t.message.clone()).unwrap_or_default()
}

pub async fn s3_bench(count: usize) {
    init_logging();
    println!("== s3: a protection group of one bucket with {count} objects, vault in us-west-2");
    let servers = Servers::start().await;
    let (east, west) = (s3(&servers, "us-east-1"), s3(&servers, "us-west-2"));
    create_bucket(&east, "bench-source", "us-east-1").await;
    east.put_bucket_versioning()
        .bucket("bench-source")
        .versioning_configuration(VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build())
        .send()
        .await
        .expect("versioning");
    create_bucket(&west, "bench-direct", "us-west-2").await;
    create_bucket(&east, "bench-restored", "us-east-1").await;
    let seeded = Instant::now();
    put_all(&east, (0..count).map(key), b"{\"payload\":\"0123456789abcdef0123456789abcdef\"}").await;
    println!("  seeded {count} objects in {:.1}s", seeded.elapsed().as_secs_f64());

    let (floor, copied) = direct(&east, &west).await;
    println!("  direct script: {copied} objects listed and copied in {:.1}s", floor.as_secs_f64());

    let services = ServiceSet { ebs: None, dynamodb: None, ec2: None, rds: None, ..ServiceSet::default() };
    let running = Running::start(&servers, services).await.with_s3(&servers, fast_s3_config()).await;
    let client = servers.client().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("bench-s3.yaml");
    std::fs::write(&file, PLAN).expect("write the plan");
    let plan = file.to_str().expect("a UTF-8 path").to_string();
    let run = |label: &'static str| {
        let (client, plan) = (&client, plan.clone());
        async move {
            let requests = lifeboat_cli::backup::run_requests(&plan, Some("objects")).expect("a run");
            let started = Instant::now();
            client.submit(&requests[0]).await.expect("submit the run");
            let summary = watch(client, &requests[0].request_id).await;
            let took = started.elapsed();
            println!(
                "  Lifeboat {label}: {:?} in {:.1}s: {}",
                verdict(&summary),
                took.as_secs_f64(),
                message_of(&summary)
            );
            took
        }
    };
    let full = run("full backup").await;
    println!("  full backup against the direct script: {:.2}x", full.as_secs_f64() / floor.as_secs_f64());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let changed = (count / 100).max(1);
    put_all(&east, (0..changed).map(|i| key(i * 100)), b"{\"payload\":\"changed\"}").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let incremental = run("incremental backup").await;
    println!(
        "  incremental ({changed} changed): {:.1}s, {:.0}% of the full backup",
        incremental.as_secs_f64(),
        100.0 * incremental.as_secs_f64() / full.as_secs_f64()
    );

    let set = pb::RestoreSet {
        name: "objects".into(),
        source: Some(pb::Source { region: "us-east-1".into(), ..Default::default() }),
        resource_types: vec![pb::ResourceType::S3Bucket as i32],
        target: Some(pb::Targets {
            s3: Some(pb::S3Target {
                bucket: "bench-restored".into(),
                prefix: "restored/".into(),
                protection_group: "bench".into(),
                vault_bucket: "bench-vault".into(),
                vault_region: "us-west-2".into(),
                vault_prefix: "vault/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let request = pb::RestoreRequest {
        request_id: "bench-s3-restore".into(),
        restore_sets: vec![set],
        submitted_at: Some(ts(chrono::Utc::now())),
        ..Default::default()
    };
    let started = Instant::now();
    client.submit(&request).await.expect("submit the restore");
    let summary = watch(&client, &request.request_id).await;
    let took = started.elapsed();
    let mut restored = 0;
    let mut pages = east.list_objects_v2().bucket("bench-restored").prefix("restored/").into_paginator().send();
    while let Some(page) = pages.next().await {
        restored += page.expect("list the target").contents().len();
    }
    println!(
        "  Lifeboat restore: {:?} in {:.1}s ({:.0} objects/s), {restored} objects in the target: {}",
        verdict(&summary),
        took.as_secs_f64(),
        restored as f64 / took.as_secs_f64(),
        message_of(&summary)
    );
    running.stop().await;
}
