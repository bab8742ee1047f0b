//! S3 protection in backup plans, over real nats-server and moto: a plan with a protection group
//! of two buckets and a vault validates (`lifeboat backup plan validate`), and `lifeboat backup
//! run` makes a run that discovery plans into one S3 backup task per bucket, each carrying the
//! group and the vault to the s3 service; broken plans are refused with every field named; a
//! continuous rule is due every 15 minutes (time set by the test), its checks carry the
//! continuous settings and its cron due time is a full run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lifeboat_common::bus::Queue;
use lifeboat_proto as pb;
use lifeboat_scheduler::{ManualClock, Scheduler, SchedulerConfig};
use lifeboat_tests::*;

const PLAN: &str = r#"
name: shop-s3
protection_groups:
  - name: assets
    buckets:
      - {bucket: shop-images, region: us-east-1}
      - {bucket: shop-docs, region: eu-west-1}
    filter: {prefixes: [public/], exclude_prefixes: [public/tmp/], storage_classes: [STANDARD, GLACIER_IR]}
vault: {bucket: shop-vault, region: us-west-2, prefix: lifeboat/}
rules:
  - name: buckets
    schedule: "0 1 * * *"
    selection: {resource_types: [s3], protection_groups: [assets]}
    retention: {days: 30}
    continuous: {check_minutes: 15}
"#;

const BROKEN_PLAN: &str = r#"
name: broken-s3
protection_groups:
  - name: assets
    buckets:
      - {bucket: shop-images, region: us-east-1}
      - {bucket: Shop_Docs, region: eu-west-1, account_id: "12345"}
    filter: {storage_classes: [STANDARD, FROZEN]}
  - name: logs
    buckets: [{bucket: shop-logs, region: us-east-1}]
rules:
  - name: nightly
    schedule: "0 1 * * *"
    selection: {resource_types: [s3], protection_groups: [assets, archive]}
    retention: {days: 7}
  - name: logs
    schedule: "0 2 * * *"
    selection: {resource_types: [s3], protection_groups: [logs]}
    retention: {days: 7}
    vault: {bucket: shop-vault, region: us-east-1}
    continuous: {check_minutes: 1}
"#;

fn lifeboat(servers: &Servers, args: &[&str]) -> std::process::Output {
    crate::traces::lifeboat_command(servers).args(args).output().expect("run lifeboat")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
}

/// Discovery and the aggregator only: the tasks stay queued for an s3 service, where the test
/// reads them.
fn discovery_only() -> ServiceSet {
    ServiceSet { ebs: None, dynamodb: None, ec2: None, rds: None, ..ServiceSet::default() }
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

/// The tasks queued for the s3 service so far.
async fn s3_tasks(servers: &Servers) -> Vec<pb::RestoreTask> {
    queued(servers, &Queue::Work("s3".into()))
        .await
        .iter()
        .map(|m| <pb::RestoreTask as prost::Message>::decode(m.payload.as_ref()).expect("a task"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plans_protection_group_of_two_buckets_runs_as_one_s3_backup_task_per_bucket() {
    init_logging();
    let servers = Servers::start().await;
    let _running = Running::start(&servers, discovery_only()).await;
    let client = servers.client().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let plan = dir.path().join("shop-s3.yaml");
    std::fs::write(&plan, PLAN).expect("write the plan");
    let plan = plan.to_str().expect("utf-8 path");

    let output = lifeboat(&servers, &["backup", "plan", "validate", plan]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("plan shop-s3 is valid: 1 rule, next due 20"), "{stdout}");
    // The next due time is a continuous check, on a quarter hour.
    let next = stdout.trim_end().trim_end_matches(" (buckets)").rsplit(' ').next().expect("a time");
    let minute: u32 = next[14..16].parse().expect("the minute of the next due time");
    assert!(minute % 15 == 0 && next.ends_with(":00Z"), "{stdout}");

    let output = lifeboat(&servers, &["backup", "run", plan, "--output", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let run_id = printed["run_id"].as_str().expect("a run id").to_string();
    assert!(run_id.starts_with("shop-s3-buckets-manual-"), "{run_id}");

    let summary = planned(&client, &run_id).await;
    assert_eq!(summary.total_tasks, 2, "{summary:?}");
    let mut buckets: Vec<&str> = summary.tasks.iter().map(|t| t.source_resource_id.as_str()).collect();
    buckets.sort();
    assert_eq!(buckets, ["shop-docs", "shop-images"]);
    for task in &summary.tasks {
        assert_eq!(task.resource_type, pb::ResourceType::S3Bucket as i32, "{task:?}");
        assert_eq!(task.set_name, "buckets");
        assert_eq!(pb::TaskPhase::try_from(task.phase), Ok(pb::TaskPhase::Queued), "{task:?}");
    }

    // What the s3 service is handed: per bucket its region and group, and the run's vault.
    let tasks = s3_tasks(&servers).await;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let mut seen = BTreeSet::new();
    for task in &tasks {
        assert_eq!(task.request_id, run_id);
        let job = task.backup_task.as_ref().expect("a backup task");
        assert_eq!(job.protection_group, "assets");
        let region = if job.resource_id == "shop-images" { "us-east-1" } else { "eu-west-1" };
        assert_eq!(job.region, region, "{job:?}");
        assert_eq!(job.account_id.len(), 12, "the account resolved: {job:?}");
        let run = job.run.as_ref().expect("the run");
        let vault = run.vault.as_ref().expect("the vault");
        assert_eq!(
            (vault.bucket.as_str(), vault.region.as_str(), vault.prefix.as_str()),
            ("shop-vault", "us-west-2", "lifeboat/")
        );
        assert_eq!(run.protection_groups.len(), 1);
        let group = &run.protection_groups[0];
        assert_eq!(group.buckets.len(), 2);
        let filter = group.filter.as_ref().expect("the group's filter");
        assert_eq!(filter.prefixes, ["public/"]);
        assert_eq!(filter.exclude_prefixes, ["public/tmp/"]);
        assert_eq!(filter.storage_classes, ["STANDARD", "GLACIER_IR"]);
        let selection = run.selection.as_ref().expect("the selection");
        assert_eq!(selection.resource_types, [pb::ResourceType::S3Bucket as i32]);
        assert_eq!(selection.protection_groups, ["assets"]);
        assert_eq!(run.continuous, None, "a run asked for by hand is a full run");
        assert!(seen.insert(task.task_id.clone()), "one task per bucket: {}", task.task_id);
    }
}

#[tokio::test]
async fn broken_s3_plans_are_refused_with_every_field_named() {
    init_logging();
    let servers = Servers::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, BROKEN_PLAN).expect("write the plan");
    let path = path.to_str().expect("utf-8 path");

    let output = lifeboat(&servers, &["backup", "plan", "validate", path]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let fields: Vec<&str> = stderr.lines().filter_map(|line| line.split(": ").next()).collect();
    assert_eq!(
        fields,
        [
            "protection_groups[0].buckets[1].bucket",
            "protection_groups[0].buckets[1].account_id",
            "protection_groups[0].filter.storage_classes[1]",
            "rules[0].selection.protection_groups[1]",
            "rules[0].vault",
            "rules[1].continuous.check_minutes",
            "rules[1].vault.region",
        ],
        "{stderr}"
    );
    for expected in [
        "`archive` is not a protection group of the plan (its protection_groups: assets, logs)",
        "rules[0].vault: required with s3",
        "`us-east-1` is the region of bucket `shop-logs` (group `logs`) in the same account",
        "`FROZEN` is not an S3 storage class",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }

    // Nothing is submitted for a broken plan.
    let output = lifeboat(&servers, &["backup", "run", path]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("rules[0].vault"), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_continuous_rule_is_checked_every_15_minutes_between_its_full_runs() {
    init_logging();
    let servers = Servers::start().await;
    let _running = Running::start(&servers, discovery_only()).await;
    let client = servers.client().await;
    let plan = lifeboat_plans::load("shop-s3.yaml", PLAN).expect("a valid plan");
    let clock = ManualClock::new(at("2026-12-03T10:00:20Z"));
    let config = SchedulerConfig { tick: Duration::from_secs(3600), replica: "a".into(), sweep_every: None };
    let bus: Arc<dyn lifeboat_common::Bus> = servers.bus_address().connect().await;
    let scheduler = Scheduler::new(vec![plan], bus, clock.clone(), config);

    let mut fired = Vec::new();
    for (now, expected) in [
        ("2026-12-03T10:00:20Z", vec!["shop-s3-buckets-2026-12-03T100000Z"]),
        // Between checks nothing is due, and a due time fires once.
        ("2026-12-03T10:07:00Z", vec![]),
        ("2026-12-03T10:15:05Z", vec!["shop-s3-buckets-2026-12-03T101500Z"]),
        ("2026-12-03T10:16:00Z", vec![]),
        // 10:30 was missed: the 10:45 check, due since, supersedes it.
        ("2026-12-03T10:50:00Z", vec!["shop-s3-buckets-2026-12-03T104500Z"]),
        // The cron's due time is the full run (00:45's check is superseded by it).
        ("2026-12-04T01:00:10Z", vec!["shop-s3-buckets-2026-12-04T010000Z"]),
    ] {
        clock.set(at(now));
        let published = scheduler.tick().await.expect("tick");
        assert_eq!(published, expected, "at {now}");
        fired.extend(published);
    }

    for run_id in &fired {
        let summary = planned(&client, run_id).await;
        assert_eq!(summary.total_tasks, 2, "{run_id}: {summary:?}");
    }
    let tasks = s3_tasks(&servers).await;
    assert_eq!(tasks.len(), 8, "four runs of two buckets");
    for task in &tasks {
        let run = task.backup_task.as_ref().and_then(|job| job.run.as_ref()).expect("a run");
        if task.request_id.ends_with("T010000Z") {
            assert_eq!(run.continuous, None, "the full run syncs whatever is pending");
        } else {
            let expected =
                pb::ContinuousBackup { enabled: true, check_minutes: 15, min_updates: 32, max_interval_minutes: 60 };
            assert_eq!(run.continuous, Some(expected), "{}: a check carries its thresholds", task.request_id);
        }
    }
}

const ROUND_TRIP_PLAN: &str = r#"
name: shop-objects
protection_groups:
  - name: shop
    buckets:
      - {bucket: shop-orders, region: us-east-1}
      - {bucket: shop-media, region: us-east-1}
vault: {bucket: shop-objects-vault, region: us-west-2, prefix: vault/}
rules:
  - name: objects
    schedule: "0 1 * * *"
    selection: {resource_types: [s3], protection_groups: [shop]}
    retention: {days: 30}
"#;

/// What a bucket holds under `prefix`: key (without the prefix) to bytes.
async fn contents(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        for object in page.expect("list the bucket").contents() {
            let key = object.key().expect("a key");
            let got = s3.get_object().bucket(bucket).key(key).send().await.expect("get the object");
            let bytes = got.body.collect().await.expect("read the object").into_bytes().to_vec();
            found.insert(key.strip_prefix(prefix).unwrap_or(key).to_string(), bytes);
        }
    }
    found
}

async fn put_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    let body = aws_sdk_s3::primitives::ByteStream::from(body);
    s3.put_object().bucket(bucket).key(key).body(body).send().await.expect("put the object");
}

/// The whole path a user takes: a plan's group of two buckets backed up by `lifeboat backup
/// run`, changed, backed up again (incrementally), then restored from the vault as of the first
/// backup into a target bucket under a prefix: exactly the objects of that time, byte for byte,
/// and from the second backup exactly the changed state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plans_group_is_backed_up_and_restored_to_a_target_bucket_and_prefix_as_of_each_backup() {
    init_logging();
    let servers = Servers::start().await;
    let _running = Running::start(&servers, discovery_only()).await.with_s3(&servers, fast_s3_config()).await;
    let client = servers.client().await;
    let s3 = lifeboat_config::clients::s3_client(&servers.aws("us-east-1"), ACCOUNT, "us-east-1");
    for bucket in ["shop-orders", "shop-media", "shop-restored"] {
        s3.create_bucket().bucket(bucket).send().await.expect("create the bucket");
    }
    let big: Vec<u8> = (0..6 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    put_object(&s3, "shop-orders", "2026/12/order-1.json", b"{\"order\":1}".to_vec()).await;
    put_object(&s3, "shop-orders", "2026/12/order-2.json", b"{\"order\":2}".to_vec()).await;
    put_object(&s3, "shop-media", "img/logo.png", big.clone()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let plan = dir.path().join("shop-objects.yaml");
    std::fs::write(&plan, ROUND_TRIP_PLAN).expect("write the plan");
    let plan = plan.to_str().expect("utf-8 path");

    let backup = |label: &'static str| {
        let client = &client;
        async move {
            let requests = lifeboat_cli::backup::run_requests(plan, Some("objects")).expect("a valid run");
            client.submit(&requests[0]).await.expect("submit the run");
            let summary = final_summary(client, &requests[0].request_id).await;
            assert_eq!(verdict(&summary), pb::Verdict::Completed, "{label}: {summary:?}");
            assert_eq!(summary.tasks.len(), 2, "{label}: {summary:?}");
            summary
        }
    };
    backup("first").await;
    let first_done = Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_object(&s3, "shop-orders", "2026/12/order-2.json", b"{\"order\":2,\"paid\":true}".to_vec()).await;
    put_object(&s3, "shop-orders", "2026/12/order-3.json", b"{\"order\":3}".to_vec()).await;
    s3.delete_object().bucket("shop-orders").key("2026/12/order-1.json").send().await.expect("delete");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    backup("second").await;

    let restore = |request: pb::RestoreRequest| {
        let client = &client;
        async move {
            client.submit(&request).await.expect("submit the restore");
            let summary = final_summary(client, &request.request_id).await;
            assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
            assert_eq!(summary.tasks.len(), 2, "one task per bucket: {summary:?}");
        }
    };
    // As of the first backup, written as a request file would say it.
    let file = format!(
        r#"
restore_sets:
  - name: objects
    source: {{region: us-east-1, point_in_time: {{time: "{}", direction: before}}}}
    resource_types: [s3]
    target:
      s3:
        bucket: shop-restored
        prefix: as-of-first/
        protection_group: shop
        vault_bucket: shop-objects-vault
        vault_region: us-west-2
        vault_prefix: vault/
"#,
        first_done.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let request = lifeboat_cli::request_file::load("restore.yaml", &file, "restore-first".into()).expect("a request");
    let target = request.restore_sets[0].target.as_ref().and_then(|t| t.s3.as_ref()).expect("target.s3");
    assert_eq!((target.protection_group.as_str(), target.vault_prefix.as_str()), ("shop", "vault/"));
    restore(request).await;
    // The newest backup (the second), with the seed's latest-version filter.
    let set = pb::RestoreSet {
        name: "objects".into(),
        source: Some(pb::Source { region: "us-east-1".into(), ..Default::default() }),
        resource_types: vec![pb::ResourceType::S3Bucket as i32],
        target: Some(pb::Targets {
            s3: Some(pb::S3Target {
                bucket: "shop-restored".into(),
                prefix: "latest/".into(),
                protection_group: "shop".into(),
                object_filters_json: r#"{"latest_version_only": true}"#.into(),
                vault_bucket: "shop-objects-vault".into(),
                vault_region: "us-west-2".into(),
                vault_prefix: "vault/".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let request = pb::RestoreRequest {
        request_id: "restore-latest".into(),
        restore_sets: vec![set],
        submitted_at: Some(ts(Utc::now())),
        ..Default::default()
    };
    restore(request).await;

    let as_of_first = contents(&s3, "shop-restored", "as-of-first/").await;
    let expected_first: BTreeMap<String, Vec<u8>> = [
        ("2026/12/order-1.json".to_string(), b"{\"order\":1}".to_vec()),
        ("2026/12/order-2.json".to_string(), b"{\"order\":2}".to_vec()),
        ("img/logo.png".to_string(), big.clone()),
    ]
    .into_iter()
    .collect();
    assert_eq!(as_of_first.keys().collect::<Vec<_>>(), expected_first.keys().collect::<Vec<_>>());
    assert!(as_of_first == expected_first, "the bytes as of the first backup");
    let latest = contents(&s3, "shop-restored", "latest/").await;
    let expected_latest: BTreeMap<String, Vec<u8>> = [
        ("2026/12/order-2.json".to_string(), b"{\"order\":2,\"paid\":true}".to_vec()),
        ("2026/12/order-3.json".to_string(), b"{\"order\":3}".to_vec()),
        ("img/logo.png".to_string(), big),
    ]
    .into_iter()
    .collect();
    assert_eq!(latest.keys().collect::<Vec<_>>(), expected_latest.keys().collect::<Vec<_>>());
    assert!(latest == expected_latest, "the bytes as of the second backup");
}
