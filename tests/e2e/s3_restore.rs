//! Restores from a protection group end to end over real nats-server and moto, with discovery,
//! the s3 service and the aggregator: a vault in us-west-2 holds the indexes and object copies
//! of a group of two buckets (seeded here as the vault backup writes them: copies at
//! `vault::object_key`, indexes with `vault::put_index`); restore sets write them into a bucket
//! of another account under target prefixes. The target bucket then holds exactly the expected
//! keys with exactly the backed-up bytes: the newest backup by default, the older index for an
//! earlier time, only the objects the prefix, storage-class and time filters select, an object
//! above the multipart threshold copied in parts. A second test: a missing target bucket fails
//! naming `target.s3.bucket`, no vault is `S3_NO_VAULT`, bad filters name their field, a group
//! never backed up is `NO_MATCHING_BACKUPS`, and an object whose vault copy is gone makes a
//! partial restore with an alert.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use lifeboat_common::aws::Accounts;
use lifeboat_common::validate::Policy;
use lifeboat_discovery::DiscoveryConfig;
use lifeboat_proto as pb;
use lifeboat_s3::vault::{self, Entry, Index};
use lifeboat_tests::*;
use serde_json::json;

pub(crate) const VAULT_BUCKET: &str = "lifeboat-s3-vault";
pub(crate) const VAULT_REGION: &str = "us-west-2";
const GROUP: &str = "web";
const TARGET_ACCOUNT: &str = "222222222222";
const TARGET_BUCKET: &str = "restored";

pub(crate) fn the_vault() -> pb::S3Vault {
    pb::S3Vault { bucket: VAULT_BUCKET.into(), region: VAULT_REGION.into(), prefix: "s3/".into(), ..Default::default() }
}

/// An S3 client for moto in `account` (empty: the tests' own) and `region`.
pub(crate) async fn s3_in(servers: &Servers, account: &str, region: &str) -> aws_sdk_s3::Client {
    let accounts = Accounts::new(servers.aws("us-east-1"), lifeboat_common::aws::DEFAULT_ROLE_NAME);
    let account = if account.is_empty() { ACCOUNT } else { account };
    let config = accounts.config_for(account, region).await.expect("a role in the account");
    lifeboat_config::clients::s3_client(&config, account, region)
}

pub(crate) async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str, region: &str) {
    let location =
        lifeboat_config::store::Location { bucket: bucket.into(), region: region.into(), ..Default::default() };
    lifeboat_config::store::ensure_bucket(s3, &location).await.expect("create the bucket");
}

/// Whole seconds (index keys and S3 times have no more).
pub(crate) fn seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(at.timestamp(), 0).unwrap()
}

/// One object version as a backup recorded it.
#[derive(Clone)]
pub(crate) struct Object {
    pub key: &'static str,
    pub version: &'static str,
    pub body: Vec<u8>,
    pub class: &'static str,
    pub modified: DateTime<Utc>,
    /// False: the index lists it but its copy is not in the vault.
    pub copied: bool,
}

pub(crate) fn object(key: &'static str, version: &'static str, body: &[u8], modified: DateTime<Utc>) -> Object {
    Object { key, version, body: body.to_vec(), class: "STANDARD", modified: seconds(modified), copied: true }
}

/// Copies `objects` into the vault (a version already there is left alone, as the backup does)
/// and writes the index of `bucket` in `group` at `at`; returns the index's key.
pub(crate) async fn seed_index(
    vault_s3: &aws_sdk_s3::Client,
    vault: &pb::S3Vault,
    group: &str,
    bucket: &str,
    at: DateTime<Utc>,
    objects: &[Object],
) -> String {
    let at = seconds(at);
    let run = format!("plan/rule/{}", at.to_rfc3339());
    let mut index = Index::new(group, bucket, ACCOUNT, "us-east-1", &run, at);
    for o in objects {
        let vault_key = vault::object_key(vault, group, bucket, o.version, "", o.key);
        let etag = if o.copied {
            let put = vault_s3
                .put_object()
                .bucket(&vault.bucket)
                .key(&vault_key)
                .body(o.body.clone().into())
                .send()
                .await
                .expect("copy an object into the vault");
            put.e_tag().unwrap_or_default().to_string()
        } else {
            "\"gone\"".to_string()
        };
        index.objects.push(Entry {
            key: o.key.to_string(),
            version_id: o.version.to_string(),
            etag,
            size: o.body.len() as i64,
            storage_class: o.class.to_string(),
            last_modified: o.modified,
            backed_up_at: at,
            vault_key,
        });
    }
    let key = vault::index_key(vault, group, bucket, at, &run);
    vault::put_index(vault_s3, vault, &key, &index).await.expect("write the index");
    key
}

/// Every object of `bucket` with its bytes.
pub(crate) async fn contents(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let listed = s3.list_objects_v2().bucket(bucket).send().await.expect("list the target bucket");
    for o in listed.contents() {
        let key = o.key().unwrap().to_string();
        let got = s3.get_object().bucket(bucket).key(&key).send().await.expect("get a restored object");
        found.insert(key, got.body.collect().await.unwrap().into_bytes().to_vec());
    }
    found
}

/// A restore set from `group` into `bucket` under `prefix`.
pub(crate) fn group_set(name: &str, selection: Option<pb::source::Selection>, target: pb::S3Target) -> pb::RestoreSet {
    pb::RestoreSet {
        name: name.to_string(),
        source: Some(pb::Source {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            selection,
            // No all_resources: the group names its buckets, so the blast-radius guard lets it by.
            ..Default::default()
        }),
        resource_types: vec![pb::ResourceType::S3Bucket as i32],
        target: Some(pb::Targets { s3: Some(target), ..Default::default() }),
        ..Default::default()
    }
}

fn target(prefix: &str, buckets: &[&str], filters: serde_json::Value) -> pb::S3Target {
    pb::S3Target {
        account_id: TARGET_ACCOUNT.into(),
        region: "us-east-1".into(),
        bucket: TARGET_BUCKET.into(),
        prefix: prefix.into(),
        protection_group: GROUP.into(),
        source_buckets: buckets.iter().map(|b| b.to_string()).collect(),
        object_filters_json: if filters.is_null() { String::new() } else { filters.to_string() },
        ..Default::default()
    }
}

/// Discovery with `vault` as the deployment's default, the s3 service and the aggregator.
pub(crate) async fn services_with_vault(servers: &Servers, vault: Option<pb::S3Vault>) -> Running {
    let discovery = DiscoveryConfig { s3_vault: vault, ..fast_discovery_config(Policy::default()) };
    let set =
        ServiceSet { discovery: Some(discovery), ebs: None, dynamodb: None, ec2: None, rds: None, aggregator: true };
    Running::start(servers, set).await.with_s3(servers, fast_s3_config()).await
}

fn phase(task: &pb::TaskState) -> pb::TaskPhase {
    pb::TaskPhase::try_from(task.phase).unwrap_or_default()
}

fn tasks_of<'a>(summary: &'a pb::RequestSummary, set: &str) -> Vec<&'a pb::TaskState> {
    summary.tasks.iter().filter(|t| t.set_name == set).collect()
}

/// 6 MiB and a bit: above the tests' 5 MiB multipart threshold, so copied in two parts.
fn big_body() -> Vec<u8> {
    (0..6 * 1024 * 1024 + 3).map(|i: u32| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_restores_to_a_target_prefix_as_of_its_backup_time_filtered() {
    init_logging();
    let servers = Servers::start().await;
    let vault = the_vault();
    let vault_s3 = s3_in(&servers, "", VAULT_REGION).await;
    vault::ensure_vault(&vault_s3, &vault).await.unwrap();
    let target_s3 = s3_in(&servers, TARGET_ACCOUNT, "us-east-1").await;
    create_bucket(&target_s3, TARGET_BUCKET, "us-east-1").await;

    let now = seconds(Utc::now());
    let (old_at, new_at) = (now - Duration::hours(2), now - Duration::hours(1));
    let a1 = object("a.txt", "a-v1", b"alpha, first", old_at - Duration::minutes(10));
    let mut b = object("b.txt", "b-v1", b"bravo", old_at - Duration::minutes(5));
    b.class = "STANDARD_IA";
    let a2 = object("a.txt", "a-v2", b"alpha, second", new_at - Duration::minutes(10));
    let d = object("c/d.txt", "d-v1", b"delta", new_at - Duration::minutes(5));
    let big = Object { key: "big.bin", version: "big-v1", body: big_body(), ..object("", "", b"", old_at) };
    let old_index = seed_index(&vault_s3, &vault, GROUP, "assets", old_at, &[a1.clone(), b.clone()]).await;
    let new_index =
        seed_index(&vault_s3, &vault, GROUP, "assets", new_at, &[a2.clone(), b.clone(), d.clone(), big.clone()]).await;
    let logs = object("logs/1.log", "l-v1", b"one line\n", new_at - Duration::minutes(1));
    seed_index(&vault_s3, &vault, GROUP, "logs", new_at, &[logs.clone()]).await;

    let _services = services_with_vault(&servers, Some(vault.clone())).await;
    let client = servers.client().await;
    // The time filter's window holds d (modified new_at - 5 min) and none of a2, b and big.
    let window = json!({
        "start_timestamp": (new_at - Duration::minutes(7)).to_rfc3339(),
        "end_timestamp": (new_at - Duration::minutes(2)).timestamp(),
        "latest_version_only": true,
    });
    let request = request(
        "s3-restore-1",
        vec![
            group_set("all", None, target("all/", &[], serde_json::Value::Null)),
            group_set(
                "older",
                before(old_at + Duration::minutes(30)),
                target("older/", &["assets"], serde_json::Value::Null),
            ),
            group_set("prefix", None, target("prefix/", &["assets"], json!({"prefix": "c/"}))),
            group_set("class", None, target("class/", &["assets"], json!({"storage_classes": ["standard_ia"]}))),
            group_set("time", None, target("time/", &["assets"], window)),
        ],
    );
    client.submit(&request).await.unwrap();
    let summary = final_summary(&client, &request.request_id).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");

    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut put = |prefix: &str, o: &Object| expected.insert(format!("{prefix}{}", o.key), o.body.clone());
    for o in [&a2, &b, &d, &big, &logs] {
        put("all/", o);
    }
    put("older/", &a1);
    put("older/", &b);
    put("prefix/", &d);
    put("class/", &b);
    put("time/", &d);
    let restored = contents(&target_s3, TARGET_BUCKET).await;
    let keys = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&restored), keys(&expected), "exactly the expected keys");
    for (key, body) in &expected {
        assert!(
            restored[key] == *body,
            "{key}: the backed-up bytes ({} bytes, got {})",
            body.len(),
            restored[key].len()
        );
    }

    // One task per bucket, each from the index its rule picked, saying what it restored.
    let all = tasks_of(&summary, "all");
    let sources: Vec<(&str, &str)> =
        all.iter().map(|t| (t.source_resource_id.as_str(), t.source_backup_id.as_str())).collect::<Vec<_>>();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(sources.contains(&("assets", new_index.as_str())), "{sources:?}");
    assert!(all.iter().all(|t| phase(t) == pb::TaskPhase::Succeeded), "{all:#?}");
    let older = tasks_of(&summary, "older");
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].source_backup_id, old_index, "an earlier time picks the older index");
    let bytes = a1.body.len() + b.body.len();
    assert_eq!(older[0].message, format!("2 objects, {bytes} bytes restored to s3://{TARGET_BUCKET}/older/"));
    assert_eq!(older[0].created_resource_ids, [format!("s3://{TARGET_BUCKET}/older/")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_target_bucket_no_vault_bad_filters_and_lost_copies_say_why() {
    init_logging();
    let servers = Servers::start().await;
    let vault = the_vault();
    let vault_s3 = s3_in(&servers, "", VAULT_REGION).await;
    vault::ensure_vault(&vault_s3, &vault).await.unwrap();
    let target_s3 = s3_in(&servers, TARGET_ACCOUNT, "us-east-1").await;
    create_bucket(&target_s3, TARGET_BUCKET, "us-east-1").await;
    let at = Utc::now() - Duration::hours(1);
    let kept = object("kept.txt", "k-v1", b"kept", at);
    let lost = Object { copied: false, ..object("lost.txt", "l-v1", b"lost", at) };
    seed_index(&vault_s3, &vault, GROUP, "assets", at, &[kept.clone(), lost]).await;

    // No default vault: the sets name theirs, or fail for want of one.
    let _services = services_with_vault(&servers, None).await;
    let client = servers.client().await;
    let named = |mut t: pb::S3Target| {
        t.vault_bucket = VAULT_BUCKET.into();
        t.vault_region = VAULT_REGION.into();
        t.vault_prefix = "s3/".into();
        t
    };
    let no_bucket =
        pb::S3Target { bucket: "no-such-bucket".into(), ..named(target("x/", &[], serde_json::Value::Null)) };
    let nothing = pb::S3Target {
        protection_group: "never-backed-up".into(),
        ..named(target("n/", &[], serde_json::Value::Null))
    };
    let request = request(
        "s3-restore-2",
        vec![
            group_set("partial", None, named(target("p/", &[], serde_json::Value::Null))),
            group_set("no-bucket", None, no_bucket),
            group_set("no-vault", None, target("v/", &[], serde_json::Value::Null)),
            group_set("bad-filters", None, named(target("f/", &[], json!({"prefix": "a", "colour": "red"})))),
            group_set("nothing", None, nothing),
        ],
    );
    client.submit(&request).await.unwrap();
    let summary = final_summary(&client, &request.request_id).await;
    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let one = |set: &str| {
        let tasks = tasks_of(&summary, set);
        assert_eq!(tasks.len(), 1, "{set}: {tasks:#?}");
        tasks[0].clone()
    };

    let partial = one("partial");
    assert_eq!((phase(&partial), partial.reason_code.as_str()), (pb::TaskPhase::Succeeded, "S3_PARTIAL_RESTORE"));
    let alert = partial.alert.clone().expect("an alert on the partial restore");
    assert_eq!((alert.code.as_str(), alert.count), ("S3_PARTIAL_RESTORE", 1), "{alert:?}");
    assert!(alert.summary.contains("lost.txt"), "{alert:?}");
    let restored = contents(&target_s3, TARGET_BUCKET).await;
    assert_eq!(restored, BTreeMap::from([("p/kept.txt".to_string(), kept.body.clone())]));

    let failed = |set: &str, code: &str, says: &str| {
        let task = one(set);
        assert_eq!((phase(&task), task.reason_code.as_str()), (pb::TaskPhase::Failed, code), "{set}: {task:#?}");
        assert!(task.message.contains(says), "{set}: {:?} names {says}", task.message);
    };
    failed("no-bucket", "TARGET_BUCKET_NOT_FOUND", "target.s3.bucket");
    failed("no-vault", "S3_NO_VAULT", "target.s3.vault_bucket");
    failed("bad-filters", "S3_INVALID_TARGET", "target.s3.object_filters_json.colour");
    failed("nothing", "NO_MATCHING_BACKUPS", "never-backed-up");
}
