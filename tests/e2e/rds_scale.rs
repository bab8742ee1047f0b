//! RDS at scale and under races: several restores at once checked by batched Describe calls by
//! id, two RDS replicas staying under one shared copy cap together (against moto), and the
//! AlreadyExists answers of a concurrent duplicate adopted when the resource is the task's and a
//! clear TARGET_NAME_TAKEN when it is not (aws-smithy-mocks, which can answer that way).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_rds::operation::copy_db_snapshot::CopyDBSnapshotError;
use aws_sdk_rds::operation::copy_db_snapshot::CopyDbSnapshotOutput;
use aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput;
use aws_sdk_rds::operation::describe_db_snapshots::DescribeDbSnapshotsOutput;
use aws_sdk_rds::operation::restore_db_instance_from_db_snapshot::{
    RestoreDBInstanceFromDBSnapshotError, RestoreDbInstanceFromDbSnapshotOutput,
};
use aws_sdk_rds::types::{DbInstance, DbSnapshot, Tag};
use aws_sdk_rds::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::error::ErrorMetadata;
use lifeboat_common::quota::{Cap, QuotaConfig, Quotas};
use lifeboat_common::restore::{decide, Progress, WaitPolicy};
use lifeboat_common::shared::MemoryStore;
use lifeboat_proto as pb;
use lifeboat_rds::{instance_step, Clients, Context, Step, COPY, DB, TARGET_NAME_TAKEN};
use lifeboat_tests::*;

const ACCOUNT: &str = "123456789012";

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn rds_set(name: &str, region: &str, target: pb::RdsTarget) -> pb::RestoreSet {
    let mut set = ebs_set(name, "us-east-1", &[("app", "fleet")], None, Default::default());
    set.resource_types = vec![pb::ResourceType::RdsInstance as i32];
    set.target =
        Some(pb::Targets { rds: Some(pb::RdsTarget { region: region.into(), ..target }), ..Default::default() });
    set
}

/// `count` source databases tagged `app=fleet`, each with one manual snapshot.
async fn fleet(rds: &Client, count: usize) {
    for n in 0..count {
        let id = format!("fleet-{n}");
        rds.create_db_instance()
            .db_instance_identifier(&id)
            .engine("postgres")
            .db_instance_class("db.t3.micro")
            .allocated_storage(20)
            .master_username("admin")
            .master_user_password("correct-horse-battery")
            .tags(tag("app", "fleet"))
            .send()
            .await
            .unwrap();
        rds.create_db_snapshot()
            .db_instance_identifier(&id)
            .db_snapshot_identifier(format!("{id}-nightly"))
            .tags(tag("app", "fleet"))
            .send()
            .await
            .unwrap();
    }
}

/// How many instances of each name that starts with `prefix` exist.
async fn restored(rds: &Client, prefix: &str) -> std::collections::BTreeMap<String, usize> {
    let mut names = std::collections::BTreeMap::new();
    let all = rds.describe_db_instances().send().await.unwrap();
    for id in all.db_instances().iter().filter_map(|db| db.db_instance_identifier()) {
        if id.starts_with(prefix) {
            *names.entry(id.to_string()).or_default() += 1;
        }
    }
    names
}

/// A DB subnet group in `region`, which a restore into another region must name.
async fn subnet_group(servers: &Servers, region: &str, name: &str) {
    let ec2 = servers.ec2(region);
    let vpc = ec2.create_vpc().cidr_block("10.3.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.3.1.0/24", "a"), ("10.3.2.0/24", "b")] {
        let zone = format!("{region}{zone}");
        let subnet = ec2.create_subnet().vpc_id(&vpc_id).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let rds = Client::new(&servers.aws(region));
    rds.create_db_subnet_group()
        .db_subnet_group_name(name)
        .db_subnet_group_description("restores")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap();
}

fn rds_only(config: lifeboat_rds::RdsConfig, aggregator: bool) -> ServiceSet {
    ServiceSet {
        discovery: aggregator.then(|| fast_discovery_config(Default::default())),
        ebs: None,
        dynamodb: None,
        ec2: None,
        rds: Some(config),
        aggregator,
    }
}

fn fast_rds_config() -> lifeboat_rds::RdsConfig {
    lifeboat_rds::RdsConfig { service: fast_dynamodb_config().service }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_restores_at_once_are_checked_by_batched_describes_and_each_instance_exists_once() {
    init_logging();
    const COUNT: usize = 8;
    let servers = Servers::start().await;
    let rds = Client::new(&servers.aws("us-east-1"));
    fleet(&rds, COUNT).await;
    // The RDS service built here, so that its checks can be counted.
    let accounts =
        lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), lifeboat_common::aws::DEFAULT_ROLE_NAME);
    let service = lifeboat_rds::service(accounts, servers.shared_bus().await, fast_rds_config());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(service.clone().run(shutdown.clone()));
    let _others = Running::start(&servers, ServiceSet { rds: None, ..ServiceSet::default() }).await;

    let client = servers.client().await;
    let target = pb::RdsTarget { name: "back".into(), ..Default::default() };
    client.submit(&request("rds-fleet", vec![rds_set("fleet", "us-east-1", target)])).await.unwrap();
    let summary = final_summary(&client, "rds-fleet").await;
    assert!(matches!(verdict(&summary), pb::Verdict::Completed | pb::Verdict::CompletedWithWarnings), "{summary:#?}");
    assert_eq!(summary.tasks.len(), COUNT);

    let names = restored(&rds, "back-").await;
    assert_eq!(names.len(), COUNT, "{names:?}");
    assert!(names.values().all(|&n| n == 1), "each restored once: {names:?}");
    // Every task re-checks its instance at least once after the restore call; batched, the
    // tasks woken together share one DescribeDBInstances.
    let calls = service.restorer().context().checks.describe_calls();
    tracing::info!(tasks = COUNT, describe_calls = calls, "batched checks");
    assert!(calls < COUNT as u64, "{calls} Describe calls for {COUNT} tasks");
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

async fn two_rds_replicas_hold_at_most_the_shared_copy_cap(transport: Transport) {
    init_logging();
    const COUNT: usize = 4;
    let servers = Servers::start_with(transport).await;
    let rds = Client::new(&servers.aws("us-east-1"));
    fleet(&rds, COUNT).await;
    subnet_group(&servers, "us-west-2", "west-subnets").await;
    let mut config = fast_rds_config();
    config.service.quotas = QuotaConfig::parse("rds.copies=1").unwrap();
    let _one = Running::start(&servers, rds_only(config.clone(), true)).await;
    let _two = Running::start(&servers, rds_only(config, false)).await;

    // Watch the cap's record in the shared store while the copies to us-west-2 run.
    let watcher = Quotas::new(servers.shared_bus().await.shared(), QuotaConfig::default());
    let slot = Quotas::slot_key(Cap::RdsCopies, ACCOUNT, "us-west-2");
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    let watching = tokio::spawn(async move {
        loop {
            seen.fetch_max(watcher.held(&slot).await.unwrap(), Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let client = servers.client().await;
    let target = pb::RdsTarget { name: "west".into(), db_subnet_group: "west-subnets".into(), ..Default::default() };
    client.submit(&request("rds-copies", vec![rds_set("copies", "us-west-2", target)])).await.unwrap();
    let summary = final_summary(&client, "rds-copies").await;
    watching.abort();
    assert_eq!(most.load(Ordering::SeqCst), 1, "one copy slot at a time, across both replicas");
    assert!(matches!(verdict(&summary), pb::Verdict::Completed | pb::Verdict::CompletedWithWarnings), "{summary:#?}");
    let west = Client::new(&servers.aws("us-west-2"));
    assert_eq!(restored(&west, "west-").await.len(), COUNT);
    let copies = west.describe_db_snapshots().snapshot_type("manual").send().await.unwrap();
    let copies = copies
        .db_snapshots()
        .iter()
        .filter(|s| s.db_snapshot_identifier().is_some_and(|id| id.starts_with("lifeboat-")));
    assert_eq!(copies.count(), COUNT, "one copy per task");
    let held = Quotas::new(servers.shared_bus().await.shared(), QuotaConfig::default());
    assert_eq!(held.held(&Quotas::slot_key(Cap::RdsCopies, ACCOUNT, "us-west-2")).await.unwrap(), 0, "all given back");
}

on_both_transports!(two_rds_replicas_hold_at_most_the_shared_copy_cap);

fn task(region: &str) -> (pb::RestoreTask, pb::RdsTarget) {
    let target = pb::RdsTarget {
        account_id: ACCOUNT.into(),
        region: region.into(),
        name: "orders".into(),
        ..Default::default()
    };
    let task = pb::RestoreTask {
        request_id: "r".into(),
        task_id: "t-dup".into(),
        resource_type: pb::ResourceType::RdsInstance as i32,
        backup: Some(pb::Backup {
            backup_id: "orders-nightly".into(),
            source_resource_id: "orders".into(),
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            ..Default::default()
        }),
        target: Some(pb::restore_task::Target::Rds(target.clone())),
        ..Default::default()
    };
    (task, target)
}

fn context(caps: &str) -> Context {
    Context::new(Arc::new(MemoryStore::default()), QuotaConfig::parse(caps).unwrap())
}

fn owned_by(task_id: &str) -> Vec<Tag> {
    vec![tag(lifeboat_common::subjects::TAG_TASK_ID, task_id)]
}

fn restore_finds_the_name_taken() -> Rule {
    mock!(Client::restore_db_instance_from_db_snapshot).then_error(|| {
        RestoreDBInstanceFromDBSnapshotError::generic(
            ErrorMetadata::builder().code("DBInstanceAlreadyExists").message("DB instance already exists").build(),
        )
    })
}

fn instance_of(task_id: &'static str) -> Rule {
    mock!(Client::describe_db_instances)
        .match_requests(|req| {
            req.filters().iter().any(|f| f.name() == Some("db-instance-id") && f.values() == ["orders"])
        })
        .then_output(move || {
            DescribeDbInstancesOutput::builder()
                .db_instances(
                    DbInstance::builder()
                        .db_instance_identifier("orders")
                        .db_instance_status("available")
                        .set_tag_list(Some(owned_by(task_id)))
                        .build(),
                )
                .build()
        })
}

#[tokio::test]
async fn a_concurrent_duplicate_restore_is_adopted_and_succeeds() {
    let (task, target) = task("us-east-1");
    let (taken, ours) = (restore_finds_the_name_taken(), instance_of("t-dup"));
    let rds = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&taken, &ours]);
    let mut progress = Progress::default();
    let clients = Clients { target: rds, source: None };
    let step = instance_step(&context(""), &clients, &task, &target, 1, &mut progress).await;
    assert!(matches!(&step, Ok(Step::Done { created, .. }) if created == &["orders".to_string()]), "{step:?}");
    assert_eq!(decide(step, 1, &WaitPolicy::default(), 10).phase, pb::TaskPhase::Succeeded);
    assert_eq!(progress.id(DB), Some("orders"), "adopted and recorded");
    assert_eq!((taken.num_calls(), ours.num_calls()), (1, 1), "re-read once, by id");
}

#[tokio::test]
async fn someone_elses_database_of_the_target_name_fails_naming_it() {
    let (task, target) = task("us-east-1");
    let (taken, theirs) = (restore_finds_the_name_taken(), instance_of("t-someone-else"));
    let rds = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&taken, &theirs]);
    let mut progress = Progress::default();
    let clients = Clients { target: rds, source: None };
    let step = instance_step(&context(""), &clients, &task, &target, 1, &mut progress).await;
    let decision = decide(step, 1, &WaitPolicy::default(), 10);
    assert_eq!((decision.phase, decision.reason_code.as_str()), (pb::TaskPhase::Failed, TARGET_NAME_TAKEN));
    assert!(
        decision.message.contains("DB instance orders") && decision.message.contains("target.rds.name"),
        "{}",
        decision.message
    );
    assert_eq!(progress.id(DB), None, "not recorded as ours");
}

fn copy_of(task_id: &'static str, status: &'static str) -> Rule {
    mock!(Client::describe_db_snapshots)
        .match_requests(|req| {
            req.filters().iter().any(|f| f.name() == Some("db-snapshot-id") && f.values() == ["lifeboat-t-dup"])
        })
        .then_output(move || {
            DescribeDbSnapshotsOutput::builder()
                .db_snapshots(
                    DbSnapshot::builder()
                        .db_snapshot_identifier("lifeboat-t-dup")
                        .status(status)
                        .set_tag_list(Some(owned_by(task_id)))
                        .build(),
                )
                .build()
        })
}

/// A duplicate delivery's copy made first: adopted, its slot given back, the restore goes on.
#[tokio::test]
async fn a_copy_a_duplicate_made_first_is_adopted_and_its_slot_given_back() {
    let (task, target) = task("us-west-2");
    let taken = mock!(Client::copy_db_snapshot).then_error(|| {
        CopyDBSnapshotError::generic(ErrorMetadata::builder().code("DBSnapshotAlreadyExists").message("exists").build())
    });
    let ours = copy_of("t-dup", "available");
    let restore = mock!(Client::restore_db_instance_from_db_snapshot)
        .match_requests(|req| req.db_snapshot_identifier() == Some("lifeboat-t-dup"))
        .then_output(|| RestoreDbInstanceFromDbSnapshotOutput::builder().build());
    let rds = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&taken, &ours, &restore]);
    let mut progress = Progress::default();
    let clients = Clients { target: rds, source: None };
    let step = instance_step(&context(""), &clients, &task, &target, 1, &mut progress).await.unwrap();
    assert!(matches!(&step, Step::Waiting { .. }), "{step:?}");
    assert_eq!((progress.id(COPY), progress.id(DB)), (Some("lifeboat-t-dup"), Some("orders")));
    assert!(progress.slots.is_empty(), "the copy is done: {:?}", progress.slots);
    assert_eq!(restore.num_calls(), 1);
}

/// The cap counts copies of every replica sharing the store: a second task waits, retrying.
#[tokio::test]
async fn a_full_copy_cap_makes_the_next_copy_wait() {
    let cx = context("rds.copies=1");
    let copy = mock!(Client::copy_db_snapshot).then_output(|| CopyDbSnapshotOutput::builder().build());
    let rds = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&copy]);
    let clients = Clients { target: rds, source: None };
    let (first, target) = task("us-west-2");
    let mut first_progress = Progress::default();
    let step = instance_step(&cx, &clients, &first, &target, 1, &mut first_progress).await.unwrap();
    assert!(matches!(&step, Step::Waiting { created, .. } if created == &["lifeboat-t-dup".to_string()]), "{step:?}");
    assert_eq!(first_progress.slots, [Quotas::slot_key(Cap::RdsCopies, ACCOUNT, "us-west-2")]);
    let second = pb::RestoreTask { task_id: "t-second".into(), ..first };
    let error = instance_step(&cx, &clients, &second, &target, 1, &mut Progress::default()).await.unwrap_err();
    assert_eq!(error.code, "CopyLimitInFlight");
    assert!(error.is_retryable());
    assert_eq!(copy.num_calls(), 1);
}
