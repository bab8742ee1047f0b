//! The retention sweep (`lifeboat backup sweep`) and `lifeboat backup list`, run as a user runs
//! them, against recovery points made directly in moto with the tags a backup writes: expired,
//! not expired, locked (COMPLIANCE, GOVERNANCE with and without the override), keep-last-N sets
//! with a copy, a cold snapshot, and points that are not Lifeboat's (untagged, foreign tags, a
//! `lifeboat-` DynamoDB backup with no tags in the store). Exactly the right ones go, an AMI's
//! snapshots go with it, and nothing that is not Lifeboat's is touched.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Tag;
use chrono::{DateTime, TimeDelta, Utc};
use lifeboat_common::backup::{load_point_tags, recovery_point_tags, save_point_tags};
use lifeboat_proto::{BackupOptions, BackupRun, BackupTask, CopyDestination, RecoveryLock, ResourceType, Retention};
use lifeboat_tests::*;
use serde_json::Value;

const REGION: &str = "us-east-1";

/// How the rule that made a point was set.
#[derive(Clone, Default)]
struct Rule {
    retention: Retention,
    lock: Option<(&'static str, u32)>,
    cold_after_days: u32,
}

fn days(n: u32) -> Rule {
    Rule { retention: Retention { days: n, ..Default::default() }, ..Default::default() }
}

fn keep_daily(n: u32) -> Retention {
    Retention { keep_daily: n, time_zone: "UTC".into(), ..Default::default() }
}

/// The tags a backup of `resource` in run `run` made at `created` writes (or, with `copy`, its
/// copy's: the copy's retention and the point it is a copy of).
fn point_tags(
    run: &str,
    resource: &str,
    kind: ResourceType,
    rule: &Rule,
    created: DateTime<Utc>,
    copy: Option<(Retention, &str)>,
) -> Vec<(String, String)> {
    let backup_run = BackupRun {
        plan: "prod".into(),
        rule: "nightly".into(),
        retention: Some(rule.retention.clone()),
        lock: rule.lock.map(|(mode, min)| RecoveryLock {
            mode: mode.into(),
            min_retention_days: min,
            ..Default::default()
        }),
        options: Some(BackupOptions { cold_after_days: rule.cold_after_days, ..Default::default() }),
        ..Default::default()
    };
    let job = BackupTask {
        run: Some(backup_run),
        resource_id: resource.into(),
        account_id: ACCOUNT.into(),
        region: REGION.into(),
        ..Default::default()
    };
    let task = lifeboat_common::backup::task(run, kind, job);
    let destination = copy.as_ref().map(|(retention, _)| CopyDestination {
        region: REGION.into(),
        retention: Some(retention.clone()),
        ..Default::default()
    });
    let copy = destination.as_ref().zip(copy.as_ref()).map(|(destination, (_, source))| (destination, *source));
    recovery_point_tags(&task, created, copy).0
}

fn refs(tags: &[(String, String)]) -> Vec<(&str, &str)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn snapshot(ec2: &aws_sdk_ec2::Client, volume: &str, tags: &[(String, String)]) -> String {
    create_snapshot(ec2, volume, &refs(tags)).await
}

fn ec2_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// An AMI tagged as a point, its snapshots tagged the same (as the EC2 backup does); returns
/// the image id and its snapshot ids.
async fn image(ec2: &aws_sdk_ec2::Client, name: &str, tags: &[(String, String)]) -> (String, Vec<String>) {
    let image_id = create_tagged_image(ec2, name, &refs(tags)).await;
    let snapshots = image_snapshots(ec2, &image_id).await;
    if !tags.is_empty() {
        ec2.create_tags().set_resources(Some(snapshots.clone())).set_tags(Some(ec2_tags(tags))).send().await.unwrap();
    }
    (image_id, snapshots)
}

async fn image_snapshots(ec2: &aws_sdk_ec2::Client, image_id: &str) -> Vec<String> {
    let described = ec2.describe_images().image_ids(image_id).send().await.expect("describe image");
    let image = described.images().first().expect("the image");
    image.block_device_mappings().iter().filter_map(|m| m.ebs()?.snapshot_id()).map(str::to_string).collect()
}

async fn snapshot_tiers(ec2: &aws_sdk_ec2::Client) -> BTreeMap<String, String> {
    let described = ec2.describe_snapshots().owner_ids("self").send().await.expect("describe snapshots");
    described
        .snapshots()
        .iter()
        .map(|s| {
            let tier = s.storage_tier().map(|t| t.as_str().to_string()).unwrap_or_default();
            (s.snapshot_id().unwrap_or_default().to_string(), tier)
        })
        .collect()
}

async fn image_ids(ec2: &aws_sdk_ec2::Client) -> BTreeSet<String> {
    let described = ec2.describe_images().owners("self").send().await.expect("describe images");
    described.images().iter().filter_map(|i| i.image_id()).map(str::to_string).collect()
}

async fn rds_snapshot_ids(rds: &aws_sdk_rds::Client) -> BTreeSet<String> {
    let instances = rds.describe_db_snapshots().send().await.expect("describe DB snapshots");
    let clusters = rds.describe_db_cluster_snapshots().send().await.expect("describe DB cluster snapshots");
    let instance_ids = instances.db_snapshots().iter().filter_map(|s| s.db_snapshot_identifier());
    let cluster_ids = clusters.db_cluster_snapshots().iter().filter_map(|s| s.db_cluster_snapshot_identifier());
    instance_ids.chain(cluster_ids).map(str::to_string).collect()
}

async fn backup_names(ddb: &aws_sdk_dynamodb::Client) -> BTreeSet<String> {
    let listed = ddb.list_backups().send().await.expect("list backups");
    listed.backup_summaries().iter().filter_map(|b| b.backup_name()).map(str::to_string).collect()
}

async fn dynamodb_backup(ddb: &aws_sdk_dynamodb::Client, table: &str, name: &str) -> String {
    let created = ddb.create_backup().table_name(table).backup_name(name).send().await.expect("create backup");
    created.backup_details().expect("backup details").backup_arn().to_string()
}

/// `lifeboat ARGS...` against the test's moto and NATS: exit code, stdout, stderr.
async fn lifeboat(servers: &Servers, args: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(crate::traces::lifeboat_binary());
    for variable in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "OTEL_EXPORTER_OTLP_ENDPOINT", "LIFEBOAT_TRANSPORT"] {
        command.env_remove(variable);
    }
    let output = command
        .args(args)
        .env("AWS_ENDPOINT_URL", &servers.moto_url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("NATS_URL", &servers.nats_url)
        .env("OTEL_SDK_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run lifeboat");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).to_string();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

/// The outcome of each point a sweep's JSON report names, by point id.
fn outcomes(report: &Value) -> BTreeMap<String, (String, String)> {
    report["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            let id = p["id"].as_str().expect("id").to_string();
            let code = p["code"].as_str().unwrap_or_default().to_string();
            (id, (p["outcome"].as_str().expect("outcome").to_string(), code))
        })
        .collect()
}

fn named<'a>(ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    ids.into_iter().cloned().collect()
}

#[tokio::test]
async fn the_sweep_deletes_exactly_what_retention_and_locks_allow() {
    init_logging();
    let servers = Servers::start().await;
    let ec2 = servers.ec2(REGION);
    let rds = aws_sdk_rds::Client::new(&servers.aws(REGION));
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws(REGION));
    let store = servers.shared_bus().await.shared();
    let now = Utc::now();
    let ago = |d: i64| now - TimeDelta::days(d);
    let ebs = ResourceType::EbsVolume;

    // EBS snapshots of one volume, one per run.
    let volume = create_volume(&ec2, "us-east-1a", 8, &[]).await;
    let tags = |run: &str, rule: &Rule, created| point_tags(run, &volume, ebs, rule, created, None);
    let expired = snapshot(&ec2, &volume, &tags("r-expired", &days(1), ago(2))).await;
    let fresh = snapshot(&ec2, &volume, &tags("r-fresh", &days(30), now)).await;
    let compliance =
        snapshot(&ec2, &volume, &tags("r-compliance", &Rule { lock: Some(("COMPLIANCE", 5)), ..days(1) }, ago(2)))
            .await;
    let compliance_over =
        snapshot(&ec2, &volume, &tags("r-compliance-over", &Rule { lock: Some(("COMPLIANCE", 1)), ..days(1) }, ago(3)))
            .await;
    let governance =
        snapshot(&ec2, &volume, &tags("r-governance", &Rule { lock: Some(("GOVERNANCE", 5)), ..days(1) }, ago(2)))
            .await;
    let cold = snapshot(&ec2, &volume, &tags("r-cold", &Rule { cold_after_days: 1, ..days(30) }, ago(2))).await;
    // Not Lifeboat's: no tags, and a look-alike without `lifeboat:plan`.
    let untagged = snapshot(&ec2, &volume, &[]).await;
    let foreign_tags: Vec<(String, String)> =
        tags("r-foreign", &days(1), ago(2)).into_iter().filter(|(k, _)| k != "lifeboat:plan").collect();
    let foreign = snapshot(&ec2, &volume, &foreign_tags).await;

    // A keep-last-1 rule on another volume: three runs and, made first, a copy (copies are
    // counted on their own, so it stays although it is the oldest).
    let set_volume = create_volume(&ec2, "us-east-1a", 4, &[]).await;
    let keep = Rule { retention: keep_daily(1), ..Default::default() };
    let set_tags = |run: &str, copy| point_tags(run, &set_volume, ebs, &keep, now, copy);
    let copy = snapshot(&ec2, &set_volume, &set_tags("r-set-0", Some((keep_daily(1), "snap-source")))).await;
    tick().await;
    let set_old = snapshot(&ec2, &set_volume, &set_tags("r-set-1", None)).await;
    tick().await;
    let set_middle = snapshot(&ec2, &set_volume, &set_tags("r-set-2", None)).await;
    tick().await;
    let set_new = snapshot(&ec2, &set_volume, &set_tags("r-set-3", None)).await;

    // AMIs: one expired (its snapshots go with it), one not, one not Lifeboat's; and a
    // Lifeboat-tagged snapshot someone else's AMI still uses, whose deletion fails.
    let ec2_kind = ResourceType::Ec2Instance;
    let (ami_expired, ami_expired_snapshots) =
        image(&ec2, "lb-expired", &point_tags("r-ami-1", "i-1", ec2_kind, &days(1), ago(2), None)).await;
    let (ami_fresh, ami_fresh_snapshots) =
        image(&ec2, "lb-fresh", &point_tags("r-ami-2", "i-1", ec2_kind, &days(30), now, None)).await;
    let (ami_other, ami_other_snapshots) = image(&ec2, "not-lifeboat", &[]).await;
    let in_use = ami_other_snapshots[0].clone();
    let in_use_tags = point_tags("r-in-use", "vol-gone", ebs, &days(1), ago(2), None);
    ec2.create_tags().resources(&in_use).set_tags(Some(ec2_tags(&in_use_tags))).send().await.unwrap();

    // RDS snapshots of an instance and a cluster.
    rds.create_db_instance()
        .db_instance_identifier("orders")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .send()
        .await
        .unwrap();
    let rds_tags = |tags: Vec<(String, String)>| -> Vec<aws_sdk_rds::types::Tag> {
        tags.into_iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build()).collect()
    };
    let instance_kind = ResourceType::RdsInstance;
    for (id, tags) in [
        ("orders-expired", point_tags("r-db-1", "orders", instance_kind, &days(1), ago(2), None)),
        ("orders-fresh", point_tags("r-db-2", "orders", instance_kind, &days(30), now, None)),
        ("orders-manual", vec![("team".to_string(), "dba".to_string())]),
    ] {
        rds.create_db_snapshot()
            .db_instance_identifier("orders")
            .db_snapshot_identifier(id)
            .set_tags(Some(rds_tags(tags)))
            .send()
            .await
            .unwrap();
    }
    rds.create_db_cluster()
        .db_cluster_identifier("analytics")
        .engine("aurora-postgresql")
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .send()
        .await
        .unwrap();
    let cluster_kind = ResourceType::RdsCluster;
    for (id, tags) in [
        ("analytics-expired", point_tags("r-cl-1", "analytics", cluster_kind, &days(1), ago(2), None)),
        ("analytics-fresh", point_tags("r-cl-2", "analytics", cluster_kind, &days(30), now, None)),
    ] {
        rds.create_db_cluster_snapshot()
            .db_cluster_identifier("analytics")
            .db_cluster_snapshot_identifier(id)
            .set_tags(Some(rds_tags(tags)))
            .send()
            .await
            .unwrap();
    }

    // DynamoDB backups, their tags in the shared store; a `lifeboat-` one without any is not
    // a plan's.
    fixtures::create_table(&ddb, "carts", &[]).await;
    let table_kind = ResourceType::DynamodbTable;
    let ddb_expired = dynamodb_backup(&ddb, "carts", "lifeboat-t-expired").await;
    let ddb_fresh = dynamodb_backup(&ddb, "carts", "lifeboat-t-fresh").await;
    let ddb_stray = dynamodb_backup(&ddb, "carts", "lifeboat-t-stray").await;
    dynamodb_backup(&ddb, "carts", "carts-by-hand").await;
    let ddb_tags = |run: &str, rule: &Rule, created| point_tags(run, "carts", table_kind, rule, created, None);
    save_point_tags(store.as_ref(), &ddb_expired, &ddb_tags("r-t-1", &days(1), ago(2))).await.unwrap();
    save_point_tags(store.as_ref(), &ddb_fresh, &ddb_tags("r-t-2", &days(30), now)).await.unwrap();

    let tiers_before = snapshot_tiers(&ec2).await;
    let images_before = image_ids(&ec2).await;
    let db_before = rds_snapshot_ids(&rds).await;
    let backups_before = backup_names(&ddb).await;

    // A dry run reports and changes nothing.
    let (code, stdout, stderr) =
        lifeboat(&servers, &["backup", "sweep", "--region", REGION, "--dry-run", "--output", "json"]).await;
    assert_eq!(code, 0, "dry run: {stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("the dry run's JSON");
    assert_eq!(report["dryRun"], true);
    let dry = outcomes(&report);
    assert_eq!(dry[&expired].0, "deleted");
    assert_eq!(dry[&cold].0, "archived");
    assert_eq!(dry[&in_use].0, "deleted", "a dry run does not try");
    assert_eq!(snapshot_tiers(&ec2).await, tiers_before);
    assert_eq!(image_ids(&ec2).await, images_before);
    assert_eq!(rds_snapshot_ids(&rds).await, db_before);
    assert_eq!(backup_names(&ddb).await, backups_before);

    // The sweep.
    let (code, stdout, stderr) = lifeboat(&servers, &["backup", "sweep", "--region", REGION, "--output", "json"]).await;
    assert_eq!(code, 1, "one deletion fails, so the sweep exits 1: {stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("the sweep's JSON");
    assert_eq!(report["dryRun"], false);
    let swept = outcomes(&report);
    let with = |outcome: &str| -> BTreeSet<String> {
        swept.iter().filter(|(_, (o, _))| o == outcome).map(|(id, _)| id.clone()).collect()
    };
    assert_eq!(
        with("deleted"),
        named([
            &expired,
            &compliance_over,
            &set_old,
            &set_middle,
            &ami_expired,
            &"orders-expired".to_string(),
            &"analytics-expired".to_string(),
            &ddb_expired,
        ])
    );
    assert_eq!(with("refused"), named([&compliance, &governance]));
    assert_eq!(with("archived"), named([&cold]));
    assert_eq!(
        with("kept"),
        named([
            &fresh,
            &copy,
            &set_new,
            &ami_fresh,
            &"orders-fresh".to_string(),
            &"analytics-fresh".to_string(),
            &ddb_fresh,
        ])
    );
    assert_eq!(swept[&in_use], ("failed".to_string(), "InvalidSnapshot.InUse".to_string()));
    // What is not Lifeboat's is not even looked at.
    for id in [&untagged, &foreign, &ami_other, &"orders-manual".to_string(), &ddb_stray] {
        assert!(!swept.contains_key(id), "{id} is not Lifeboat's");
    }
    for id in ami_fresh_snapshots.iter().chain(&ami_expired_snapshots) {
        assert!(!swept.contains_key(id), "{id} lives and goes with its AMI");
    }

    // What moto holds now.
    let tiers = snapshot_tiers(&ec2).await;
    let gone: BTreeSet<String> = tiers_before.keys().filter(|id| !tiers.contains_key(*id)).cloned().collect();
    let mut expected_gone = named([&expired, &compliance_over, &set_old, &set_middle]);
    expected_gone.extend(ami_expired_snapshots.iter().cloned());
    assert_eq!(gone, expected_gone, "exactly these snapshots are gone, the expired AMI's with it");
    for id in [&fresh, &compliance, &governance, &copy, &set_new, &untagged, &foreign, &in_use] {
        assert_eq!(tiers[id], "standard", "{id} stays where it was");
    }
    assert_eq!(tiers[&cold], "archive");
    for id in &ami_fresh_snapshots {
        assert!(tiers.contains_key(id), "the kept AMI's snapshot {id} stays");
    }
    let images = image_ids(&ec2).await;
    assert!(!images.contains(&ami_expired));
    assert!(images.contains(&ami_fresh) && images.contains(&ami_other));
    let db = rds_snapshot_ids(&rds).await;
    assert!(!db.contains("orders-expired") && !db.contains("analytics-expired"));
    for id in ["orders-fresh", "orders-manual", "analytics-fresh"] {
        assert!(db.contains(id), "{id} stays");
    }
    let backups = backup_names(&ddb).await;
    assert_eq!(backups, named(&["carts-by-hand", "lifeboat-t-fresh", "lifeboat-t-stray"].map(String::from)));
    assert_eq!(load_point_tags(store.as_ref(), &ddb_expired).await.unwrap(), None, "its store record goes too");
    assert!(load_point_tags(store.as_ref(), &ddb_fresh).await.unwrap().is_some());

    // The governance override lets the GOVERNANCE point go; COMPLIANCE still holds.
    let (code, stdout, stderr) =
        lifeboat(&servers, &["backup", "sweep", "--region", REGION, "--override-governance"]).await;
    assert_eq!(code, 1, "the snapshot in use still fails: {stderr}");
    assert!(stdout.contains("under the governance override"), "{stdout}");
    assert!(stdout.contains("COMPLIANCE lock until"), "{stdout}");
    assert!(stderr.contains(&governance), "the override is logged naming the point: {stderr}");
    let tiers = snapshot_tiers(&ec2).await;
    assert!(!tiers.contains_key(&governance));
    assert!(tiers.contains_key(&compliance));

    // `backup list`: exactly Lifeboat's points that are left, as JSON and as a table.
    let (code, stdout, stderr) = lifeboat(&servers, &["backup", "list", "--output", "json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).expect("the list's JSON");
    let listed_ids: BTreeSet<String> =
        listed.as_array().expect("points").iter().map(|p| p["id"].as_str().expect("id").to_string()).collect();
    assert_eq!(
        listed_ids,
        named([
            &fresh,
            &compliance,
            &cold,
            &copy,
            &set_new,
            &in_use,
            &ami_fresh,
            &"orders-fresh".to_string(),
            &"analytics-fresh".to_string(),
            &ddb_fresh,
        ])
    );
    let cold_point = listed.as_array().unwrap().iter().find(|p| p["id"] == cold.as_str()).expect("the cold point");
    assert_eq!(cold_point["storageTier"], "archive");
    assert_eq!(cold_point["plan"], "prod");
    let ami_point = listed.as_array().unwrap().iter().find(|p| p["id"] == ami_fresh.as_str()).expect("the AMI");
    assert_eq!(ami_point["snapshotIds"], serde_json::json!(ami_fresh_snapshots));

    let (code, stdout, stderr) =
        lifeboat(&servers, &["backup", "list", "--region", REGION, "--resource", &set_volume]).await;
    assert_eq!(code, 0, "{stderr}");
    for header in ["resource", "type", "point", "region", "plan/rule", "created", "age", "expires", "lock"] {
        assert!(stdout.contains(header), "no {header} column: {stdout}");
    }
    assert!(stdout.contains(&copy) && stdout.contains(&set_new), "{stdout}");
    assert!(stdout.contains("prod/nightly") && stdout.contains("keep daily=1"), "{stdout}");
    assert!(!stdout.contains(&fresh), "only the resource's points: {stdout}");
    assert!(stdout.contains("2 recovery points"), "{stdout}");
    let (_, stdout, _) = lifeboat(&servers, &["backup", "list", "--resource", &volume]).await;
    assert!(stdout.contains("COMPLIANCE until"), "{stdout}");

    // Bad flags are named, and nothing is swept.
    let (code, _, stderr) = lifeboat(&servers, &["backup", "sweep", "--region", "moon-1"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("--region: 'moon-1' is not an AWS region name"), "{stderr}");
    let (code, _, stderr) = lifeboat(&servers, &["backup", "sweep", "--region", REGION, "--account", "12345"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("--account: '12345' is not a 12-digit AWS account id"), "{stderr}");
    assert!(snapshot_tiers(&ec2).await.contains_key(&compliance));
}
