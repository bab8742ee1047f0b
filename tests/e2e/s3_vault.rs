//! The S3 vault backup end to end over real nats-server and moto: a protection group of two
//! buckets in us-east-1 (one versioned, one not) backed up to a vault bucket in us-west-2, every
//! task delivered twice; the objects and their bytes in the vault, under the vault's own KMS key (an
//! object over the 5 MiB threshold copied in parts) and an index per bucket; a second run after an overwrite, a new
//! object and a delete copies only those two versions and records the deletion. An archived
//! object (GLACIER: moto cannot deny one object) makes a partial backup (a restored one is copied): SUCCEEDED with
//! S3_PARTIAL_BACKUP, an alert whose report in the vault names the key, and `lifeboat backup
//! report RUN --csv` listing it. Continuous backup with controlled due times: 33 updates sync at
//! the next check, 5 updates wait (Done, saying why, no index) until the hour has passed.
//! (AccessDenied on one object and throttled copies: aws-smithy-mocks unit tests in
//! services/s3/src/backup.rs.)
//!
//! The tasks are the ones discovery makes (`lifeboat_discovery::s3_backup::backup_tasks`),
//! published straight to the s3 work queue: request validation does not let S3_BUCKET runs
//! through discovery yet.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, GlacierJobParameters, RestoreRequest, ServerSideEncryption, StorageClass, Tier,
    VersioningConfiguration,
};
use chrono::{DateTime, Duration, DurationRound, Utc};
use lifeboat_common::aws::{Accounts, DEFAULT_ROLE_NAME};
use lifeboat_common::bus::{Bus, OutgoingMessage};
use lifeboat_common::subjects;
use lifeboat_proto as pb;
use lifeboat_s3::vault::{self, Index, SKIPPED_HEADER};
use lifeboat_tests::*;

const SOURCE_REGION: &str = "us-east-1";
const VAULT_REGION: &str = "us-west-2";

fn s3(servers: &Servers, region: &str) -> aws_sdk_s3::Client {
    lifeboat_config::clients::s3_client(&servers.aws(region), ACCOUNT, region)
}

fn the_vault(bucket: &str) -> pb::S3Vault {
    pb::S3Vault { bucket: bucket.into(), region: VAULT_REGION.into(), prefix: "s3/".into(), ..Default::default() }
}

async fn bucket(s3: &aws_sdk_s3::Client, name: &str, versioned: bool) {
    s3.create_bucket().bucket(name).send().await.expect("create the bucket");
    if versioned {
        let on = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        s3.put_bucket_versioning().bucket(name).versioning_configuration(on).send().await.expect("versioning");
    }
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
    let body: Vec<u8> = body.into();
    s3.put_object().bucket(bucket).key(key).body(ByteStream::from(body)).send().await.expect("put the object");
}

async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let object = s3.get_object().bucket(bucket).key(key).send().await.unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    object.body.collect().await.expect("read the object").into_bytes().to_vec()
}

/// Every key of the bucket under `prefix`.
async fn keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        keys.extend(page.expect("list the vault").contents().iter().filter_map(|o| o.key().map(str::to_string)));
    }
    keys
}

async fn index_count(vault_s3: &aws_sdk_s3::Client, vault: &pb::S3Vault) -> usize {
    index_keys(&keys(vault_s3, &vault.bucket, "").await).len()
}

fn data_keys(all: &[String]) -> Vec<&String> {
    all.iter().filter(|k| k.contains("/data/")).collect()
}

fn index_keys(all: &[String]) -> Vec<&String> {
    all.iter().filter(|k| k.ends_with(".json") && k.contains("/index/")).collect()
}

fn group(name: &str, buckets: &[&str], filter: Option<pb::ObjectFilter>) -> pb::ProtectionGroup {
    pb::ProtectionGroup {
        name: name.into(),
        buckets: buckets
            .iter()
            .map(|b| pb::GroupBucket { bucket: b.to_string(), region: SOURCE_REGION.into(), ..Default::default() })
            .collect(),
        filter,
    }
}

fn run(
    at: DateTime<Utc>,
    groups: Vec<pb::ProtectionGroup>,
    vault: pb::S3Vault,
    continuous: Option<pb::ContinuousBackup>,
) -> pb::BackupRun {
    pb::BackupRun {
        plan: "objects".into(),
        rule: "vault".into(),
        due_id: format!("objects/vault/{}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        due_at: Some(ts(at)),
        selection: Some(pb::BackupSelection {
            resource_types: vec![pb::ResourceType::S3Bucket as i32],
            regions: vec![SOURCE_REGION.into()],
            protection_groups: groups.iter().map(|g| g.name.clone()).collect(),
            ..Default::default()
        }),
        protection_groups: groups,
        vault: Some(vault),
        continuous,
        ..Default::default()
    }
}

/// Publishes discovery's tasks of `run` (each twice, as a redelivery would) and waits for the
/// run's final summary.
async fn back_up(servers: &Servers, bus: Arc<dyn Bus>, run: &pb::BackupRun) -> pb::RequestSummary {
    let run_id = lifeboat_common::backup::backup_run_id(&run.due_id);
    let accounts = Accounts::new(servers.aws(SOURCE_REGION), DEFAULT_ROLE_NAME);
    let tasks = lifeboat_discovery::s3_backup::backup_tasks(&accounts, &run_id, run).await.expect("the tasks");
    report_planned(bus.clone(), &run_id, tasks.len() as u32).await;
    for copy in ["first", "second"] {
        for task in &tasks {
            let message = OutgoingMessage::proto(subjects::work_subject("s3"), task)
                .dedupe_id(format!("{}-{copy}", task.task_id));
            bus.publish(message).await.expect("publish the task");
        }
    }
    final_summary(&servers.client().await, &run_id).await
}

fn task<'a>(summary: &'a pb::RequestSummary, bucket: &str) -> &'a pb::TaskState {
    summary.tasks.iter().find(|t| t.source_resource_id == bucket).unwrap_or_else(|| panic!("no task of {bucket}"))
}

/// The index a task wrote (its one created url).
async fn index_of(vault_s3: &aws_sdk_s3::Client, vault: &pb::S3Vault, task: &pb::TaskState) -> (String, Index) {
    assert_eq!(task.created_resource_ids.len(), 1, "{task:?}");
    let (bucket, key) = vault::parse_url(&task.created_resource_ids[0]).expect("an s3 url");
    assert_eq!(bucket, vault.bucket);
    let index = vault::get_index(vault_s3, vault, key).await.expect("read the index").expect("the index exists");
    (key.to_string(), index)
}

fn now() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::seconds(1)).unwrap()
}

fn succeeded(task: &pb::TaskState) {
    assert_eq!(task.phase, pb::TaskPhase::Succeeded as i32, "{task:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_is_copied_to_the_vault_and_then_incrementally() {
    init_logging();
    let servers = Servers::start().await;
    let source = s3(&servers, SOURCE_REGION);
    let vault_s3 = s3(&servers, VAULT_REGION);
    bucket(&source, "photos", true).await;
    bucket(&source, "docs", false).await;
    let big: Vec<u8> = (0..6 * 1024 * 1024 + 123).map(|i| (i % 251) as u8).collect();
    put(&source, "photos", "a.txt", "apple").await;
    put(&source, "photos", "b.txt", "banana").await;
    put(&source, "photos", "raw/big.bin", big.clone()).await;
    put(&source, "docs", "x.txt", "xylophone").await;
    put(&source, "docs", "y.txt", "yak").await;
    put(&source, "docs", "tmp/scratch.txt", "left out by the filter").await;
    let _running =
        Running::start(&servers, ServiceSet::aggregator_only()).await.with_s3(&servers, fast_s3_config()).await;
    let bus = servers.shared_bus().await;
    let kms = aws_sdk_kms::Client::new(&servers.aws(VAULT_REGION));
    let key = kms.create_key().description("the vault's own key").send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    let vault = pb::S3Vault { kms_key_id: key_arn.clone(), ..the_vault("lifeboat-vault") };
    let filter = pb::ObjectFilter { exclude_prefixes: vec!["tmp/".into()], ..Default::default() };
    let groups = vec![group("web", &["photos", "docs"], Some(filter))];
    let t0 = now() - Duration::minutes(30);

    let first = back_up(&servers, bus.clone(), &run(t0, groups.clone(), vault.clone(), None)).await;
    assert_eq!(verdict(&first), pb::Verdict::Completed, "{first:#?}");
    let photos = task(&first, "photos");
    succeeded(photos);
    let size = 5 + 6 + big.len();
    assert_eq!(photos.message, format!("3 objects (3 copied, {size} bytes), 0 deletions recorded"));
    succeeded(task(&first, "docs"));
    assert_eq!(task(&first, "docs").message, "2 objects (2 copied, 12 bytes), 0 deletions recorded");
    work_drained(&servers, "s3").await;

    let all = keys(&vault_s3, &vault.bucket, "s3/web/").await;
    assert_eq!(data_keys(&all).len(), 5, "one copy per object, for tasks delivered twice: {all:#?}");
    assert_eq!(index_keys(&all).len(), 2, "an index per bucket: {all:#?}");
    let (_, photos_index) = index_of(&vault_s3, &vault, photos).await;
    assert_eq!(photos_index.backed_up_at, t0);
    assert_eq!(photos_index.objects.len(), 3);
    for entry in &photos_index.objects {
        assert!(entry.vault_key.starts_with("s3/web/photos/data/"), "{entry:?}");
        assert_eq!(entry.backed_up_at, t0);
        let copied = get(&vault_s3, &vault.bucket, &entry.vault_key).await;
        let original = get(&source, "photos", &entry.key).await;
        assert_eq!(copied.len(), original.len(), "{}", entry.key);
        assert!(copied == original, "{} copied byte for byte", entry.key);
        let head = vault_s3.head_object().bucket(&vault.bucket).key(&entry.vault_key).send().await.unwrap();
        assert_eq!(head.server_side_encryption(), Some(&ServerSideEncryption::AwsKms), "{}", entry.key);
        assert_eq!(head.ssekms_key_id(), Some(key_arn.as_str()), "{}", entry.key);
        // Over the 5 MiB threshold, in two 5 MiB parts: a multipart ETag.
        let parts = if entry.key == "raw/big.bin" { "-2\"" } else { "" };
        assert_eq!(head.e_tag().unwrap_or_default().ends_with("-2\""), !parts.is_empty(), "{head:?}");
    }
    for index in index_keys(&all) {
        let head = vault_s3.head_object().bucket(&vault.bucket).key(index).send().await.unwrap();
        assert_eq!(head.ssekms_key_id(), Some(key_arn.as_str()), "{index}");
    }
    let big_entry = photos_index.objects.iter().find(|e| e.key == "raw/big.bin").unwrap();
    assert_eq!(big_entry.size as usize, big.len());
    assert!(big_entry.version_id != "null" && !big_entry.version_id.is_empty(), "{big_entry:?}");
    let (_, docs_index) = index_of(&vault_s3, &vault, task(&first, "docs")).await;
    let docs_keys: Vec<&str> = docs_index.objects.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(docs_keys, ["x.txt", "y.txt"], "tmp/ is excluded");
    assert!(docs_index.objects.iter().all(|e| e.version_id == "null" && e.vault_key.contains("/data/e-")));

    // An overwrite and a new object in photos, a delete in docs.
    put(&source, "photos", "a.txt", "apricot").await;
    put(&source, "photos", "c.txt", "cherry").await;
    source.delete_object().bucket("docs").key("y.txt").send().await.unwrap();
    let t1 = now();
    let second = back_up(&servers, bus.clone(), &run(t1, groups.clone(), vault.clone(), None)).await;
    assert_eq!(verdict(&second), pb::Verdict::Completed, "{second:#?}");
    assert_eq!(task(&second, "photos").message, "4 objects (2 copied, 13 bytes), 0 deletions recorded");
    assert_eq!(task(&second, "docs").message, "1 objects (0 copied, 0 bytes), 1 deletions recorded");
    let all = keys(&vault_s3, &vault.bucket, "s3/web/").await;
    assert_eq!(data_keys(&all).len(), 7, "only the overwrite and the new object were copied: {all:#?}");
    assert_eq!(index_keys(&all).len(), 4);

    let (first_photos_key, _) = index_of(&vault_s3, &vault, photos).await;
    let (_, photos_index) = index_of(&vault_s3, &vault, task(&second, "photos")).await;
    assert_eq!(photos_index.previous.as_deref(), Some(first_photos_key.as_str()));
    let by_key = |key: &str| photos_index.objects.iter().find(|e| e.key == key).unwrap().clone();
    assert_eq!(by_key("b.txt").backed_up_at, t0, "carried over");
    assert_eq!(by_key("raw/big.bin").backed_up_at, t0, "carried over");
    assert_eq!(by_key("a.txt").backed_up_at, t1, "the overwrite is copied");
    assert_eq!(get(&vault_s3, &vault.bucket, &by_key("a.txt").vault_key).await, b"apricot");
    assert_eq!(get(&vault_s3, &vault.bucket, &by_key("c.txt").vault_key).await, b"cherry");
    let (_, docs_index) = index_of(&vault_s3, &vault, task(&second, "docs")).await;
    assert_eq!(docs_index.deleted.len(), 1, "{docs_index:?}");
    assert_eq!((docs_index.deleted[0].key.as_str(), docs_index.deleted[0].detected_at), ("y.txt", t1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archived_object_makes_a_partial_backup_reported_with_the_object() {
    init_logging();
    let servers = Servers::start().await;
    let source = s3(&servers, SOURCE_REGION);
    let vault_s3 = s3(&servers, VAULT_REGION);
    bucket(&source, "logs", true).await;
    put(&source, "logs", "today.log", "fresh").await;
    source
        .put_object()
        .bucket("logs")
        .key("2019/old.log")
        .storage_class(StorageClass::Glacier)
        .body(ByteStream::from_static(b"frozen"))
        .send()
        .await
        .expect("put the archived object");
    source
        .put_object()
        .bucket("logs")
        .key("2020/thawed.log")
        .storage_class(StorageClass::Glacier)
        .body(ByteStream::from_static(b"thawed"))
        .send()
        .await
        .expect("put the other archived object");
    let restore = RestoreRequest::builder()
        .days(1)
        .glacier_job_parameters(GlacierJobParameters::builder().tier(Tier::Standard).build().unwrap())
        .build();
    source.restore_object().bucket("logs").key("2020/thawed.log").restore_request(restore).send().await.unwrap();
    let _running =
        Running::start(&servers, ServiceSet::aggregator_only()).await.with_s3(&servers, fast_s3_config()).await;
    let bus = servers.shared_bus().await;
    let vault = the_vault("lifeboat-vault-logs");
    let backup_run = run(now(), vec![group("audit", &["logs"], None)], vault.clone(), None);
    let summary = back_up(&servers, bus, &backup_run).await;

    let logs = task(&summary, "logs");
    succeeded(logs);
    assert_eq!(logs.reason_code, "S3_PARTIAL_BACKUP", "{logs:?}");
    assert!(logs.message.contains("1 objects of s3://logs not backed up (2019/old.log)"), "{}", logs.message);
    let alert = logs.alert.clone().expect("an alert on the task");
    assert_eq!((alert.code.as_str(), alert.severity.as_str(), alert.count), ("S3_PARTIAL_BACKUP", "warning", 1));
    let (index_key, index) = index_of(&vault_s3, &vault, logs).await;
    assert_eq!(alert.report_url, vault::url(&vault.bucket, &vault::skipped_key(&index_key)));
    let backed_up: Vec<&str> = index.objects.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(backed_up, ["2020/thawed.log", "today.log"], "the readable and the restored objects are backed up");
    let thawed = &index.objects[0];
    assert_eq!(get(&vault_s3, &vault.bucket, &thawed.vault_key).await, b"thawed");
    assert_eq!(index.skipped.len(), 1);
    assert_eq!(index.skipped[0].code, "ARCHIVED_STORAGE_CLASS");
    let (_, csv_key) = vault::parse_url(&alert.report_url).unwrap();
    let csv = String::from_utf8(get(&vault_s3, &vault.bucket, csv_key).await).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], SKIPPED_HEADER);
    assert!(lines[1].starts_with("logs,2019/old.log,"), "{csv}");
    assert!(lines[1].contains(",GLACIER,ARCHIVED_STORAGE_CLASS,"), "{csv}");

    // The run's report names the bucket, then the object.
    let run_id = lifeboat_common::backup::backup_run_id(&backup_run.due_id);
    let mut command = crate::traces::lifeboat_command(&servers);
    command.args(["backup", "report", &run_id, "--csv"]);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run lifeboat");
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], lifeboat_cli::backup::REPORT_HEADER, "{report}\n{stderr}");
    assert!(lines[1].contains(",logs,") && lines[1].contains(",S3_PARTIAL_BACKUP,"), "{report}\n{stderr}");
    assert!(lines.contains(&SKIPPED_HEADER), "{report}\n{stderr}");
    assert!(
        lines.iter().any(|l| l.starts_with("logs,2019/old.log,") && l.contains("ARCHIVED_STORAGE_CLASS")),
        "{report}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn continuous_backup_syncs_above_32_updates_or_after_an_hour() {
    init_logging();
    let servers = Servers::start().await;
    let source = s3(&servers, SOURCE_REGION);
    let vault_s3 = s3(&servers, VAULT_REGION);
    bucket(&source, "events", true).await;
    for i in 0..3 {
        put(&source, "events", &format!("seed-{i}"), "seed").await;
    }
    let _running =
        Running::start(&servers, ServiceSet::aggregator_only()).await.with_s3(&servers, fast_s3_config()).await;
    let bus = servers.shared_bus().await;
    let vault = the_vault("lifeboat-vault-events");
    let groups = vec![group("stream", &["events"], None)];
    let continuous = Some(pb::ContinuousBackup { enabled: true, ..Default::default() });
    let check = |at: DateTime<Utc>| run(at, groups.clone(), vault.clone(), continuous.clone());
    let t0 = now();

    // The first check seeds the vault.
    let seeded = back_up(&servers, bus.clone(), &check(t0)).await;
    assert_eq!(task(&seeded, "events").message, "3 objects (3 copied, 12 bytes), 0 deletions recorded");
    assert_eq!(index_count(&vault_s3, &vault).await, 1);

    // 33 updates: the next check (15 minutes on) syncs.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for i in 0..33 {
        put(&source, "events", &format!("e-{i}"), "x").await;
    }
    let synced = back_up(&servers, bus.clone(), &check(t0 + Duration::minutes(15))).await;
    let events = task(&synced, "events");
    succeeded(events);
    assert_eq!(events.message, "36 objects (33 copied, 33 bytes), 0 deletions recorded");
    assert_eq!(index_count(&vault_s3, &vault).await, 2);

    // 5 updates wait at the next checks...
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for i in 0..5 {
        put(&source, "events", &format!("e-{i}"), "yy").await;
    }
    for minutes in [30, 45] {
        let waiting = back_up(&servers, bus.clone(), &check(t0 + Duration::minutes(minutes))).await;
        let events = task(&waiting, "events");
        succeeded(events);
        assert!(events.message.starts_with("no sync due: 5 updates pending"), "{}", events.message);
        assert!(events.created_resource_ids.is_empty(), "{events:?}");
        assert_eq!(index_count(&vault_s3, &vault).await, 2, "no index at +{minutes} min");
    }
    // ...until an hour has passed since the last sync.
    let hour = back_up(&servers, bus.clone(), &check(t0 + Duration::minutes(76))).await;
    let events = task(&hour, "events");
    succeeded(events);
    assert_eq!(events.message, "36 objects (5 copied, 10 bytes), 0 deletions recorded");
    assert_eq!(index_count(&vault_s3, &vault).await, 3);
}

fn task_state(id: &str, phase: pb::TaskPhase, alert: Option<pb::Alert>) -> pb::TaskState {
    pb::TaskState {
        task_id: id.into(),
        resource_type: pb::ResourceType::S3Bucket as i32,
        phase: phase as i32,
        source_resource_id: format!("bucket-{id}"),
        reason_code: if alert.is_some() { "S3_PARTIAL_BACKUP".into() } else { String::new() },
        alert,
        ..Default::default()
    }
}

fn alert(url: &str) -> pb::Alert {
    pb::Alert { code: "S3_PARTIAL_BACKUP".into(), count: 1, report_url: url.into(), ..Default::default() }
}

#[test]
fn the_report_lists_partial_tasks_and_then_their_objects() {
    use lifeboat_cli::backup::{object_report_urls, report_csv_with_objects, REPORT_HEADER};
    let summary = pb::RequestSummary {
        tasks: vec![
            task_state("ok", pb::TaskPhase::Succeeded, None),
            task_state("part", pb::TaskPhase::Succeeded, Some(alert("s3://vault/a.skipped.csv"))),
        ],
        ..Default::default()
    };
    assert_eq!(object_report_urls(&summary), ["s3://vault/a.skipped.csv"]);
    let fetched = format!("{SKIPPED_HEADER}\nbucket-part,cold/x,v1,3,GLACIER,ARCHIVED_STORAGE_CLASS,in GLACIER\n");
    let csv = report_csv_with_objects(&summary, &[fetched]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert_eq!(lines[0], REPORT_HEADER);
    assert!(lines[1].contains(",bucket-part,") && lines[1].contains(",S3_PARTIAL_BACKUP,"), "{csv}");
    assert_eq!(lines[2], "");
    assert_eq!(lines[3], SKIPPED_HEADER);
    assert_eq!(lines[4], "bucket-part,cold/x,v1,3,GLACIER,ARCHIVED_STORAGE_CLASS,in GLACIER");

    let complete =
        pb::RequestSummary { tasks: vec![task_state("ok", pb::TaskPhase::Succeeded, None)], ..Default::default() };
    assert!(object_report_urls(&complete).is_empty());
    assert_eq!(report_csv_with_objects(&complete, &[]), format!("{REPORT_HEADER}\n"));
}

/// The versions under `prefix` in the vault, delete markers included.
async fn versions(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = s3.list_object_versions().bucket(bucket).prefix(prefix).send().await.expect("list versions");
    let mut keys: Vec<String> = listed.versions().iter().filter_map(|v| v.key().map(str::to_string)).collect();
    keys.extend(listed.delete_markers().iter().filter_map(|m| m.key().map(str::to_string)));
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_backups_leave_the_vault_with_the_copies_only_they_list_unless_the_lock_holds_them() {
    init_logging();
    let servers = Servers::start().await;
    let source = s3(&servers, SOURCE_REGION);
    let vault_s3 = s3(&servers, VAULT_REGION);
    for name in ["ledger", "journal"] {
        bucket(&source, name, true).await;
        put(&source, name, "a.txt", "one").await;
        put(&source, name, "b.txt", "bee").await;
    }
    let _running =
        Running::start(&servers, ServiceSet::aggregator_only()).await.with_s3(&servers, fast_s3_config()).await;
    let bus = servers.shared_bus().await;
    let vault = the_vault("lifeboat-vault-expiry");
    let retention = Some(pb::Retention { days: 30, ..Default::default() });
    let kept_run = |at: DateTime<Utc>, name: &str, lock: Option<pb::RecoveryLock>| pb::BackupRun {
        retention: retention.clone(),
        lock,
        ..run(at, vec![group(name, &[name], None)], vault.clone(), None)
    };
    let (old, recent) = (now() - Duration::days(40), now() - Duration::days(1));

    // ledger: no lock. The 40-day-old backup outlives its 30 days once a newer one exists.
    let first = back_up(&servers, bus.clone(), &kept_run(old, "ledger", None)).await;
    assert_eq!(
        task(&first, "ledger").message,
        "2 objects (2 copied, 6 bytes), 0 deletions recorded",
        "the newest stays"
    );
    let (first_key, _) = index_of(&vault_s3, &vault, task(&first, "ledger")).await;
    put(&source, "ledger", "a.txt", "two").await;
    let second = back_up(&servers, bus.clone(), &kept_run(recent, "ledger", None)).await;
    assert_eq!(verdict(&second), pb::Verdict::Completed, "{second:#?}");
    assert_eq!(
        task(&second, "ledger").message,
        "2 objects (1 copied, 3 bytes), 0 deletions recorded; 1 expired backups deleted (1 vault objects)"
    );
    let (second_key, second_index) = index_of(&vault_s3, &vault, task(&second, "ledger")).await;
    let base = "s3/ledger/ledger/";
    let indexes = versions(&vault_s3, &vault.bucket, &format!("{base}index/")).await;
    assert_eq!(indexes, [second_key.clone()], "the expired index is gone, every version of it");
    assert!(!indexes.contains(&first_key));
    let mut listed: Vec<String> = second_index.objects.iter().map(|e| e.vault_key.clone()).collect();
    listed.sort();
    assert_eq!(
        versions(&vault_s3, &vault.bucket, &format!("{base}data/")).await,
        listed,
        "the old a.txt went with its backup; b.txt, which the newer backup still lists, stayed"
    );
    let b = second_index.objects.iter().find(|e| e.key == "b.txt").expect("b.txt");
    assert_eq!(get(&vault_s3, &vault.bucket, &b.vault_key).await, b"bee");

    // journal: a COMPLIANCE lock of 45 days holds the expired backup. (Runs a minute apart
    // from ledger's: a run's id comes from its due time.)
    let (old, recent) = (old - Duration::minutes(1), recent - Duration::minutes(1));
    let lock = Some(pb::RecoveryLock { mode: "COMPLIANCE".into(), min_retention_days: 45, ..Default::default() });
    back_up(&servers, bus.clone(), &kept_run(old, "journal", lock.clone())).await;
    put(&source, "journal", "a.txt", "two").await;
    let held = back_up(&servers, bus.clone(), &kept_run(recent, "journal", lock)).await;
    assert_eq!(
        task(&held, "journal").message,
        "2 objects (1 copied, 3 bytes), 0 deletions recorded; 1 expired backups kept by the lock"
    );
    assert_eq!(versions(&vault_s3, &vault.bucket, "s3/journal/journal/index/").await.len(), 2);
    assert_eq!(versions(&vault_s3, &vault.bucket, "s3/journal/journal/data/").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bucket_larger_than_one_step_is_copied_over_several_steps_into_one_index() {
    init_logging();
    let servers = Servers::start().await;
    let source = s3(&servers, SOURCE_REGION);
    let vault_s3 = s3(&servers, VAULT_REGION);
    bucket(&source, "archive", true).await;
    for i in 0..25 {
        put(&source, "archive", &format!("doc-{i:02}.txt"), format!("document {i:02}")).await;
    }
    let config = lifeboat_s3::S3Config { copies_per_step: 10, ..fast_s3_config() };
    let _running = Running::start(&servers, ServiceSet::aggregator_only()).await.with_s3(&servers, config).await;
    let bus = servers.shared_bus().await;
    let vault = the_vault("lifeboat-vault-steps");
    let backup_run = run(now(), vec![group("big", &["archive"], None)], vault.clone(), None);

    let summary = back_up(&servers, bus.clone(), &backup_run).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    let archive = task(&summary, "archive");
    assert_eq!(archive.message, "25 objects (25 copied, 275 bytes), 0 deletions recorded");
    let (_, index) = index_of(&vault_s3, &vault, archive).await;
    assert_eq!(index.objects.len(), 25);
    for entry in &index.objects {
        let n = &entry.key["doc-".len().."doc-".len() + 2];
        assert_eq!(get(&vault_s3, &vault.bucket, &entry.vault_key).await, format!("document {n}").into_bytes());
    }
    let all = keys(&vault_s3, &vault.bucket, "").await;
    assert_eq!(data_keys(&all).len(), 25, "each object copied once over the steps: {all:#?}");
    assert!(!all.iter().any(|k| k.ends_with(".partial.json")), "the checkpoint is gone: {all:#?}");
    let events = servers.store().await.events(&summary.request_id, 0).await.expect("the events");
    let steps: Vec<String> = events
        .into_iter()
        .filter_map(|r| r.event)
        .filter(|e| e.phase == pb::TaskPhase::Waiting as i32 && e.message.contains("so far"))
        .map(|e| e.message)
        .collect();
    // (The event log need not keep every WAITING report of a task: the first is asserted.)
    assert_eq!(steps.first().map(String::as_str), Some("10 objects copied to the vault so far, 15 to go"));
}
