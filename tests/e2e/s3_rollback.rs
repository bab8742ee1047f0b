//! `lifeboat s3 rollback` and `lifeboat s3 undelete` end to end, through the CLI binary over
//! real nats-server and moto, with discovery, the s3 service and the aggregator: a versioned
//! bucket with overwrites, new objects and deletes after a time is returned, object by object,
//! to its state at that time (new objects get a delete marker, their versions stay), and a
//! second rollback to a later time gives the state then (nothing was lost); a redelivered or
//! repeated rollback changes nothing. `--prefix` touches only its prefix, `--dry-run` nothing;
//! `undelete --since` removes the markers placed since. A bucket without versioning is refused
//! (S3_VERSIONING_DISABLED, named); an archived (GLACIER) version is reported not rollbackable, and an object above the
//! multipart threshold is copied back in parts.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, StorageClass, VersioningConfiguration};
use clap::Parser;
use lifeboat_cli::s3_cmd::S3Command;
use lifeboat_common::validate::Policy;
use lifeboat_proto as pb;
use lifeboat_tests::*;

const REGION: &str = "us-east-1";

fn s3_client(servers: &Servers) -> aws_sdk_s3::Client {
    lifeboat_config::clients::s3_client(&servers.aws(REGION), ACCOUNT, REGION)
}

/// Discovery, the aggregator and the s3 service.
async fn services(servers: &Servers) -> Running {
    let set = ServiceSet {
        discovery: Some(fast_discovery_config(Policy::default())),
        ebs: None,
        dynamodb: None,
        ec2: None,
        rds: None,
        aggregator: true,
    };
    Running::start(servers, set).await.with_s3(servers, fast_s3_config()).await
}

async fn bucket(s3: &aws_sdk_s3::Client, name: &str, versioned: bool) {
    s3.create_bucket().bucket(name).send().await.expect("create the bucket");
    if versioned {
        let enabled = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        s3.put_bucket_versioning().bucket(name).versioning_configuration(enabled).send().await.expect("versioning");
    }
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &str) {
    put_as(s3, bucket, key, body, StorageClass::Standard).await
}

async fn put_as(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &str, class: StorageClass) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .storage_class(class)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .expect("put the object");
}

async fn delete(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    s3.delete_object().bucket(bucket).key(key).send().await.expect("delete the object");
}

/// The key's current content; None when its current version is a delete marker (or it has none).
async fn current(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let object = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    let bytes = object.body.collect().await.expect("the object's body").into_bytes();
    Some(String::from_utf8(bytes.to_vec()).expect("text"))
}

/// How many versions and delete markers the key has.
async fn history(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (usize, usize) {
    let listed = s3.list_object_versions().bucket(bucket).prefix(key).send().await.expect("list versions");
    let versions = listed.versions().iter().filter(|v| v.key() == Some(key)).count();
    let markers = listed.delete_markers().iter().filter(|m| m.key() == Some(key)).count();
    (versions, markers)
}

/// Every key's current content, as a map (deleted keys absent).
async fn state(s3: &aws_sdk_s3::Client, bucket: &str, keys: &[&str]) -> Vec<(String, Option<String>)> {
    let mut state = Vec::new();
    for key in keys {
        state.push((key.to_string(), current(s3, bucket, key).await));
    }
    state
}

fn expected(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The CLI as users run it, waited for off the runtime's thread so the services keep running.
async fn lifeboat(servers: &Servers, args: &[&str]) -> std::process::Output {
    let mut command = crate::traces::lifeboat_command(servers);
    command.args(args);
    let output =
        tokio::task::spawn_blocking(move || command.output()).await.expect("the CLI's thread").expect("run lifeboat");
    eprintln!(
        "lifeboat {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `lifeboat s3 ARGS --request-id ID --watch` and returns its exit code and final summary.
async fn s3_command(servers: &Servers, id: &str, args: &[&str]) -> (Option<i32>, pb::RequestSummary) {
    let mut all = vec!["s3"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--region", REGION, "--request-id", id, "--watch", "--timeout", "60"]);
    let output = lifeboat(servers, &all).await;
    let summary = final_summary(&servers.client().await, id).await;
    (output.status.code(), summary)
}

fn task<'a>(summary: &'a pb::RequestSummary, backup_id: &str) -> &'a pb::TaskState {
    summary
        .tasks
        .iter()
        .find(|t| t.source_backup_id == backup_id)
        .unwrap_or_else(|| panic!("no task for {backup_id}: {summary:#?}"))
}

fn phase(task: &pb::TaskState) -> pb::TaskPhase {
    pb::TaskPhase::try_from(task.phase).unwrap_or_default()
}

const KEYS: &[&str] =
    &["a.txt", "b.txt", "gone.txt", "n.txt", "late.txt", "docs/c.txt", "docs/d.txt", "docs/new.txt", "docs/deep/e.txt"];

#[tokio::test]
async fn a_rollback_returns_every_object_to_its_state_at_the_time_and_a_second_one_to_a_later_time() {
    init_logging();
    let servers = Servers::start().await;
    let _running = services(&servers).await;
    let s3 = s3_client(&servers);
    let b = "photos";
    bucket(&s3, b, true).await;
    for (key, body) in [("a.txt", "a0"), ("b.txt", "b0"), ("gone.txt", "g0"), ("docs/c.txt", "c0")] {
        put(&s3, b, key, body).await;
    }
    put(&s3, b, "docs/d.txt", "d0").await;
    put(&s3, b, "docs/deep/e.txt", "e0").await;
    let t1 = tick().await;
    // After t1: overwrites, new objects, deletes.
    put(&s3, b, "a.txt", "a1").await;
    put(&s3, b, "docs/c.txt", "c1").await;
    put(&s3, b, "n.txt", "n1").await;
    put(&s3, b, "docs/new.txt", "new1").await;
    delete(&s3, b, "gone.txt").await;
    delete(&s3, b, "docs/d.txt").await;
    let t2 = tick().await;
    // After t2: more of them.
    put(&s3, b, "a.txt", "a2").await;
    put(&s3, b, "b.txt", "b2").await;
    put(&s3, b, "late.txt", "l2").await;
    delete(&s3, b, "docs/deep/e.txt").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let (code, summary) = s3_command(&servers, "rollback-t1", &["rollback", b, "--to", &rfc3339(t1)]).await;
    assert_eq!(code, Some(0), "{summary:#?}");
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    // One task per folder, one for the keys at the top.
    assert_eq!(summary.tasks.len(), 2, "{summary:#?}");
    let top = task(&summary, "s3://photos/?shallow");
    assert_eq!(top.message, "3 keys restored, 2 deleted, 0 undeleted, 0 unchanged", "{top:#?}");
    let docs = task(&summary, "s3://photos/docs/");
    assert_eq!(docs.message, "3 keys restored, 1 deleted, 0 undeleted, 0 unchanged", "{docs:#?}");
    assert_eq!(
        state(&s3, b, KEYS).await,
        expected(&[
            ("a.txt", Some("a0")),
            ("b.txt", Some("b0")),
            ("gone.txt", Some("g0")),
            ("n.txt", None),
            ("late.txt", None),
            ("docs/c.txt", Some("c0")),
            ("docs/d.txt", Some("d0")),
            ("docs/new.txt", None),
            ("docs/deep/e.txt", Some("e0")),
        ])
    );
    // The objects created after t1 are deleted with a marker: their versions are still there.
    assert_eq!(history(&s3, b, "n.txt").await, (1, 1));
    assert_eq!(history(&s3, b, "a.txt").await, (4, 0), "a0, a1, a2 and the copy of a0");

    // The same rollback again finds every key as it should be.
    let (code, again) = s3_command(&servers, "rollback-t1-again", &["rollback", b, "--to", &rfc3339(t1)]).await;
    assert_eq!(code, Some(0), "{again:#?}");
    assert_eq!(task(&again, "s3://photos/?shallow").message, "0 keys restored, 0 deleted, 0 undeleted, 5 unchanged");
    assert_eq!(task(&again, "s3://photos/docs/").message, "0 keys restored, 0 deleted, 0 undeleted, 4 unchanged");
    assert_eq!(history(&s3, b, "a.txt").await, (4, 0), "no second copy");

    // A second rollback, to t2 (after the first changes), gives the state then.
    let (code, later) = s3_command(&servers, "rollback-t2", &["rollback", b, "--to", &rfc3339(t2)]).await;
    assert_eq!(code, Some(0), "{later:#?}");
    assert_eq!(
        state(&s3, b, KEYS).await,
        expected(&[
            ("a.txt", Some("a1")),
            ("b.txt", Some("b0")),
            ("gone.txt", None),
            ("n.txt", Some("n1")),
            ("late.txt", None),
            ("docs/c.txt", Some("c1")),
            ("docs/d.txt", None),
            ("docs/new.txt", Some("new1")),
            ("docs/deep/e.txt", Some("e0")),
        ])
    );
    // a (a1), n (n1) and gone (deleted): late stays deleted, b stays b0.
    assert_eq!(task(&later, "s3://photos/?shallow").message, "2 keys restored, 1 deleted, 0 undeleted, 2 unchanged");
}

#[tokio::test]
async fn a_prefix_rollback_touches_only_its_prefix_a_dry_run_nothing_and_undelete_brings_keys_back() {
    init_logging();
    let servers = Servers::start().await;
    let _running = services(&servers).await;
    let s3 = s3_client(&servers);
    let b = "logs-bucket";
    bucket(&s3, b, true).await;
    for (key, body) in [("keep/x", "x0"), ("old/w", "w0"), ("logs/y", "y0"), ("logs/z", "z0")] {
        put(&s3, b, key, body).await;
    }
    let t1 = tick().await;
    put(&s3, b, "keep/x", "x1").await;
    put(&s3, b, "logs/y", "y1").await;
    delete(&s3, b, "logs/z").await;
    delete(&s3, b, "old/w").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let keys = ["keep/x", "old/w", "logs/y", "logs/z"];
    let after_changes = expected(&[("keep/x", Some("x1")), ("old/w", None), ("logs/y", Some("y1")), ("logs/z", None)]);
    assert_eq!(state(&s3, b, &keys).await, after_changes);

    // A dry run plans the prefix's one task and changes nothing.
    let (code, dry) =
        s3_command(&servers, "dry", &["rollback", b, "--to", &rfc3339(t1), "--prefix", "logs/", "--dry-run"]).await;
    assert_eq!(code, Some(0), "{dry:#?}");
    assert!(dry.dry_run, "{dry:#?}");
    assert_eq!(dry.tasks.len(), 1, "{dry:#?}");
    let planned = task(&dry, "s3://logs-bucket/logs/?shallow");
    assert_eq!(phase(planned), pb::TaskPhase::Planned, "{planned:#?}");
    assert!(
        planned.selection_reason.contains("rollback of the keys directly under s3://logs-bucket/logs/"),
        "{planned:#?}"
    );
    assert_eq!(state(&s3, b, &keys).await, after_changes);
    assert_eq!(history(&s3, b, "logs/y").await, (2, 0));

    // The prefix's rollback: logs/ back at t1, keep/ and old/ as they were.
    let (code, rolled) =
        s3_command(&servers, "prefix", &["rollback", b, "--to", &rfc3339(t1), "--prefix", "logs/"]).await;
    assert_eq!(code, Some(0), "{rolled:#?}");
    assert_eq!(
        state(&s3, b, &keys).await,
        expected(&[("keep/x", Some("x1")), ("old/w", None), ("logs/y", Some("y0")), ("logs/z", Some("z0"))])
    );

    // Deletes after t3, undeleted; old/w, deleted before t3, stays deleted.
    let t3 = tick().await;
    delete(&s3, b, "keep/x").await;
    delete(&s3, b, "logs/y").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, undeleted) = s3_command(&servers, "undelete", &["undelete", b, "--since", &rfc3339(t3)]).await;
    assert_eq!(code, Some(0), "{undeleted:#?}");
    assert_eq!(
        state(&s3, b, &keys).await,
        expected(&[("keep/x", Some("x1")), ("old/w", None), ("logs/y", Some("y0")), ("logs/z", Some("z0"))])
    );
    assert_eq!(history(&s3, b, "keep/x").await, (2, 0), "the marker is gone, both versions stay");
    let messages: Vec<&str> = undeleted.tasks.iter().map(|t| t.message.as_str()).collect();
    let keep = task(&undeleted, "s3://logs-bucket/keep/");
    assert!(keep.message.starts_with("0 keys restored, 0 deleted, 1 undeleted"), "{messages:?}");
}

#[tokio::test]
async fn an_unversioned_bucket_is_refused_and_an_archived_version_is_reported_not_rollbackable() {
    init_logging();
    let servers = Servers::start().await;
    let _running = services(&servers).await;
    let s3 = s3_client(&servers);
    bucket(&s3, "plain", false).await;
    put(&s3, "plain", "a.txt", "a0").await;
    let (code, refused) =
        s3_command(&servers, "plain", &["rollback", "plain", "--to", &rfc3339(chrono::Utc::now())]).await;
    assert_ne!(code, Some(0), "{refused:#?}");
    assert_eq!(verdict(&refused), pb::Verdict::Failed, "{refused:#?}");
    let set = refused.tasks.first().expect("the set's state");
    assert_eq!(set.reason_code, "S3_VERSIONING_DISABLED", "{refused:#?}");
    assert!(set.message.contains("bucket plain has no versioning"), "{}", set.message);
    assert_eq!(current(&s3, "plain", "a.txt").await.as_deref(), Some("a0"));

    let b = "cold";
    bucket(&s3, b, true).await;
    put_as(&s3, b, "frozen.txt", "f0", StorageClass::Glacier).await;
    put(&s3, b, "warm.txt", "w0").await;
    // Above the test threshold (5 MiB): copied back in parts.
    let big: String = (0..6 * 1024 * 1024 + 17).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    put(&s3, b, "big.txt", &big).await;
    let t1 = tick().await;
    put(&s3, b, "frozen.txt", "f1").await;
    put(&s3, b, "warm.txt", "w1").await;
    put(&s3, b, "big.txt", "small now").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, partial) = s3_command(&servers, "cold", &["rollback", b, "--to", &rfc3339(t1)]).await;
    let top = task(&partial, "s3://cold/?shallow");
    assert_eq!(phase(top), pb::TaskPhase::Succeeded, "{partial:#?} (exit {code:?})");
    assert_eq!(top.reason_code, "S3_NOT_ROLLBACKABLE", "{top:#?}");
    assert!(top.message.starts_with("2 keys restored, 0 deleted, 0 undeleted, 0 unchanged"), "{}", top.message);
    assert!(top.message.contains("frozen.txt: version") && top.message.contains("GLACIER"), "{}", top.message);
    let alert = top.alert.as_ref().expect("an alert on the task");
    assert_eq!((alert.code.as_str(), alert.count), ("S3_NOT_ROLLBACKABLE", 1), "{alert:#?}");
    assert_eq!(current(&s3, b, "warm.txt").await.as_deref(), Some("w0"));
    assert!(current(&s3, b, "big.txt").await == Some(big), "the large object's bytes are back");
    assert_eq!(current(&s3, b, "frozen.txt").await.as_deref(), Some("f1"), "left as it is");
}

#[derive(Parser)]
struct S3Cli {
    #[command(subcommand)]
    command: S3Command,
}

fn parse(args: &[&str]) -> S3Command {
    S3Cli::try_parse_from(std::iter::once("s3").chain(args.iter().copied())).expect("parses").command
}

#[test]
fn the_s3_commands_make_one_in_place_set_naming_the_bucket_time_and_prefix() {
    let command =
        parse(&["rollback", "photos", "--to", "2026-12-04T10:00:00Z", "--prefix", "2026/", "--region", "eu-west-1"]);
    let request = lifeboat_cli::s3_cmd::request(&command).expect("a request");
    let set = &request.restore_sets[0];
    assert_eq!(set.resource_types, [pb::ResourceType::S3Bucket as i32]);
    assert_eq!(set.source.as_ref().unwrap().names, ["photos"]);
    let target = set.target.as_ref().unwrap().s3.as_ref().unwrap();
    assert_eq!((target.bucket.as_str(), target.region.as_str()), ("photos", "eu-west-1"));
    let in_place = target.in_place.as_ref().unwrap();
    assert_eq!((in_place.mode.as_str(), in_place.prefix.as_str()), ("rollback", "2026/"));
    assert_eq!(in_place.at.as_ref().unwrap().seconds, 1_796_378_400);
    assert!(!request.dry_run && !command.follows());

    let command =
        parse(&["undelete", "photos", "--since", "2026-12-04T11:00:00+01:00", "--region", "eu-west-1", "--dry-run"]);
    let request = lifeboat_cli::s3_cmd::request(&command).expect("a request");
    let in_place = request.restore_sets[0].target.as_ref().unwrap().s3.as_ref().unwrap().in_place.clone().unwrap();
    assert_eq!(in_place.mode, "undelete");
    assert_eq!(in_place.at.unwrap().seconds, 1_796_378_400);
    assert!(request.dry_run && command.follows());

    let command = parse(&["rollback", "photos", "--to", "yesterday", "--region", "eu-west-1"]);
    let error = lifeboat_cli::s3_cmd::request(&command).unwrap_err().to_string();
    assert!(error.contains("--to yesterday") && error.contains("RFC 3339"), "{error}");
}
