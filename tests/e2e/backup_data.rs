//! RDS and DynamoDB backups end to end: a DB instance and an Aurora cluster snapshotted and
//! copied to another region with their recovery point tags, a deleted instance failing with
//! AWS's code, an earlier delivery's snapshot adopted, someone else's of the task's name and a
//! copy that cannot be made failing (naming the point that exists), a backup's copy waiting for
//! the copy cap it shares with restores; a table backed up as `lifeboat-<task id>` with
//! point-in-time recovery turned on, its point tags in the shared store and the copies DynamoDB
//! cannot make named as a warning, a missing table, a run past its completion window and a task
//! without a region failing; each task delivered twice making one recovery point, and
//! DynamoDB's crash window (aws-smithy-mocks) finding the backup by its name.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::PointInTimeRecoveryStatus;
use aws_sdk_rds::types::Tag;
use lifeboat_common::backup::{self, PointTags, TAG_COPY_OF};
use lifeboat_common::bus::{Bus, OutgoingMessage};
use lifeboat_common::subjects::{self, TAG_TASK_ID};
use lifeboat_proto as pb;
use lifeboat_tests::*;

fn run(copy_to: &[&str]) -> pb::BackupRun {
    pb::BackupRun {
        plan: "prod".into(),
        rule: "nightly".into(),
        due_id: "prod/nightly/2026-12-03T01:00:00Z".into(),
        retention: Some(pb::Retention { days: 7, ..Default::default() }),
        copy_to: copy_to
            .iter()
            .map(|region| pb::CopyDestination {
                region: region.to_string(),
                retention: Some(pb::Retention { days: 30, ..Default::default() }),
                ..Default::default()
            })
            .collect(),
        tags: [("owner".to_string(), "platform".to_string())].into(),
        ..Default::default()
    }
}

fn job(run: &pb::BackupRun, resource_id: &str, tags: &[(&str, &str)]) -> pb::BackupTask {
    pb::BackupTask {
        run: Some(run.clone()),
        resource_id: resource_id.into(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        resource_tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

/// Publishes every task twice (distinct dedupe ids, so the bus does not drop the duplicate).
async fn publish_twice(bus: std::sync::Arc<dyn Bus>, kind: &str, tasks: &[pb::RestoreTask]) {
    for copy in ["first", "second"] {
        for task in tasks {
            let message = OutgoingMessage::proto(subjects::work_subject(kind), task)
                .dedupe_id(format!("{}-{copy}", task.task_id));
            bus.publish(message).await.unwrap();
        }
    }
}

fn rds_tags(tags: &[Tag]) -> HashMap<String, String> {
    tags.iter().map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())).collect()
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn task_of<'a>(summary: &'a pb::RequestSummary, task: &pb::RestoreTask) -> &'a pb::TaskState {
    summary.tasks.iter().find(|t| t.task_id == task.task_id).unwrap()
}

#[tokio::test]
async fn databases_and_clusters_are_snapshotted_and_copied_and_a_deleted_database_fails() {
    init_logging();
    let servers = Servers::start().await;
    let east = aws_sdk_rds::Client::new(&servers.aws("us-east-1"));
    let west = aws_sdk_rds::Client::new(&servers.aws("us-west-2"));
    east.create_db_instance()
        .db_instance_identifier("orders-db")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .tags(tag("app", "shop"))
        .send()
        .await
        .unwrap();
    east.create_db_cluster()
        .db_cluster_identifier("analytics")
        .engine("aurora-postgresql")
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .tags(tag("app", "shop"))
        .send()
        .await
        .unwrap();
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let bus = servers.shared_bus().await;

    let run = run(&["us-west-2"]);
    let run_id = backup::backup_run_id(&run.due_id);
    let app = [("app", "shop")];
    let instance = backup::task(&run_id, pb::ResourceType::RdsInstance, job(&run, "orders-db", &app));
    let cluster = backup::task(&run_id, pb::ResourceType::RdsCluster, job(&run, "analytics", &app));
    let gone = backup::task(&run_id, pb::ResourceType::RdsInstance, job(&run, "deleted-db", &app));
    report_planned(bus.clone(), &run_id, 3).await;
    publish_twice(bus.clone(), "rds", &[instance.clone(), cluster.clone(), gone.clone()]).await;
    let summary = final_summary(&servers.client().await, &run_id).await;

    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let failed = task_of(&summary, &gone);
    assert_eq!((failed.phase, failed.reason_code.as_str()), (pb::TaskPhase::Failed as i32, "DBInstanceNotFound"));
    work_drained(&servers, "rds").await;

    let id = lifeboat_rds::backup::snapshot_id(&instance);
    let done = task_of(&summary, &instance);
    assert_eq!(done.phase, pb::TaskPhase::Succeeded as i32, "{done:?}");
    let copy_arn = format!("arn:aws:rds:us-west-2:{ACCOUNT}:snapshot:{id}");
    assert_eq!(done.created_resource_ids, [id.clone(), copy_arn]);
    let points = east.describe_db_snapshots().db_instance_identifier("orders-db").send().await.unwrap();
    let ours: Vec<_> = points
        .db_snapshots()
        .iter()
        .filter(|s| rds_tags(s.tag_list()).get(TAG_TASK_ID) == Some(&instance.task_id))
        .collect();
    assert_eq!(ours.len(), 1, "one snapshot for a task delivered twice: {ours:?}");
    assert_eq!(ours[0].db_snapshot_identifier(), Some(id.as_str()));
    let tags = rds_tags(ours[0].tag_list());
    assert_eq!((tags["app"].as_str(), tags["owner"].as_str()), ("shop", "platform"));
    let point = PointTags::parse(&tags).expect("recovery point tags");
    assert_eq!((point.plan.as_str(), point.rule.as_str(), point.run.as_str()), ("prod", "nightly", run_id.as_str()));
    assert_eq!((point.resource_id.as_str(), point.retention.unwrap().days), ("orders-db", 7));
    let copies = west.describe_db_snapshots().db_snapshot_identifier(&id).send().await.unwrap();
    let copy = rds_tags(copies.db_snapshots()[0].tag_list());
    assert_eq!(copy.get(TAG_COPY_OF), Some(&id), "{copy:?}");
    assert_eq!(PointTags::parse(&copy).unwrap().retention.unwrap().days, 30);

    let done = task_of(&summary, &cluster);
    assert_eq!(done.phase, pb::TaskPhase::Succeeded as i32, "{done:?}");
    let id = lifeboat_rds::backup::snapshot_id(&cluster);
    let points = east.describe_db_cluster_snapshots().db_cluster_identifier("analytics").send().await.unwrap();
    let ours: Vec<_> = points
        .db_cluster_snapshots()
        .iter()
        .filter(|s| rds_tags(s.tag_list()).get(TAG_TASK_ID) == Some(&cluster.task_id))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].db_cluster_snapshot_identifier(), Some(id.as_str()));
    assert_eq!(PointTags::parse(&rds_tags(ours[0].tag_list())).unwrap().resource_id, "analytics");
    let copies = west.describe_db_cluster_snapshots().db_cluster_snapshot_identifier(&id).send().await.unwrap();
    let copy = rds_tags(copies.db_cluster_snapshots()[0].tag_list());
    assert_eq!(copy.get(TAG_COPY_OF), Some(&id), "{copy:?}");
    assert_eq!(copy.get("app").map(String::as_str), Some("shop"));
}

async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    fixtures::create_table(ddb, name, &[]).await;
}

#[tokio::test]
async fn a_table_is_backed_up_with_point_in_time_recovery_and_a_missing_or_late_one_fails() {
    init_logging();
    let servers = Servers::start().await;
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"));
    create_table(&ddb, "orders").await;
    create_table(&ddb, "late").await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let bus = servers.shared_bus().await;

    let mut run = run(&["us-west-2"]);
    run.options = Some(pb::BackupOptions { continuous: true, ..Default::default() });
    let run_id = backup::backup_run_id(&run.due_id);
    let table = backup::task(&run_id, pb::ResourceType::DynamodbTable, job(&run, "orders", &[("app", "shop")]));
    let missing = backup::task(&run_id, pb::ResourceType::DynamodbTable, job(&run, "dropped", &[]));
    let past = pb::BackupRun { complete_by: Some(ts(chrono::Utc::now() - chrono::TimeDelta::hours(1))), ..run.clone() };
    let late = backup::task(&run_id, pb::ResourceType::DynamodbTable, job(&past, "late", &[]));
    let nowhere = pb::BackupTask { region: String::new(), ..job(&run, "orders", &[]) };
    let nowhere = backup::task(&run_id, pb::ResourceType::DynamodbTable, nowhere);
    report_planned(bus.clone(), &run_id, 4).await;
    publish_twice(bus.clone(), "dynamodb", &[table.clone(), missing.clone(), late.clone(), nowhere.clone()]).await;
    let summary = final_summary(&servers.client().await, &run_id).await;

    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let failed = task_of(&summary, &missing);
    assert_eq!((failed.phase, failed.reason_code.as_str()), (pb::TaskPhase::Failed as i32, "TableNotFoundException"));
    let failed = task_of(&summary, &late);
    assert_eq!(failed.reason_code, backup::reason::COMPLETION_WINDOW_EXCEEDED, "{failed:?}");
    let invalid = task_of(&summary, &nowhere);
    assert_eq!(
        (invalid.reason_code.as_str(), invalid.message.as_str()),
        ("INVALID_TASK", "backup task without backup_task.region")
    );
    work_drained(&servers, "dynamodb").await;
    let late_backups = ddb.list_backups().table_name("late").send().await.unwrap();
    assert!(late_backups.backup_summaries().is_empty(), "nothing made past the window: {late_backups:?}");

    let done = task_of(&summary, &table);
    assert_eq!(
        (done.phase, done.reason_code.as_str()),
        (pb::TaskPhase::Succeeded as i32, backup::reason::BACKUP_WARNINGS)
    );
    assert!(done.message.contains("copies to us-west-2"), "the copy DynamoDB cannot make: {}", done.message);
    let backups = ddb.list_backups().table_name("orders").send().await.unwrap();
    let backups = backups.backup_summaries();
    assert_eq!(backups.len(), 1, "one backup for a task delivered twice: {backups:?}");
    assert_eq!(backups[0].backup_name(), Some(format!("lifeboat-{}", table.task_id).as_str()));
    let arn = backups[0].backup_arn().unwrap();
    assert_eq!(done.created_resource_ids, [arn]);
    let continuous = ddb.describe_continuous_backups().table_name("orders").send().await.unwrap();
    let pitr = continuous.continuous_backups_description().and_then(|c| c.point_in_time_recovery_description());
    assert_eq!(pitr.and_then(|p| p.point_in_time_recovery_status()), Some(&PointInTimeRecoveryStatus::Enabled));

    let tags = backup::load_point_tags(bus.shared().as_ref(), arn).await.unwrap().expect("point tags in the store");
    assert_eq!(tags.get("app").map(String::as_str), Some("shop"));
    let point = PointTags::parse(&tags).expect("recovery point tags");
    assert_eq!((point.plan.as_str(), point.task_id.as_str()), ("prod", table.task_id.as_str()));
    assert_eq!((point.resource_id.as_str(), point.retention.unwrap().days), ("orders", 7));
}

#[tokio::test]
async fn a_snapshot_left_by_an_earlier_delivery_is_adopted_and_a_copy_that_cannot_be_made_names_the_point() {
    init_logging();
    let servers = Servers::start().await;
    let east = aws_sdk_rds::Client::new(&servers.aws("us-east-1"));
    let west = aws_sdk_rds::Client::new(&servers.aws("us-west-2"));
    east.create_db_instance()
        .db_instance_identifier("ledger-db")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .send()
        .await
        .unwrap();
    let nightly = run(&["us-west-2"]);
    let run_id = backup::backup_run_id(&nightly.due_id);
    // Three rules of one run back up the same database: one task each.
    let adopted = backup::task(&run_id, pb::ResourceType::RdsInstance, job(&nightly, "ledger-db", &[]));
    let mut keyed = pb::BackupRun { rule: "hourly".into(), ..nightly.clone() };
    keyed.copy_to[0].kms_key_id = "1234abcd-12ab-34cd-56ef-1234567890ab".into();
    let unkeyed = backup::task(&run_id, pb::ResourceType::RdsInstance, job(&keyed, "ledger-db", &[]));
    let taken = pb::BackupRun { rule: "weekly".into(), ..nightly.clone() };
    let taken = backup::task(&run_id, pb::ResourceType::RdsInstance, job(&taken, "ledger-db", &[]));
    // An earlier delivery's snapshot (ours by its task tag), and someone else's of a task's name.
    let adopted_id = lifeboat_rds::backup::snapshot_id(&adopted);
    east.create_db_snapshot()
        .db_instance_identifier("ledger-db")
        .db_snapshot_identifier(&adopted_id)
        .tags(tag(TAG_TASK_ID, &adopted.task_id))
        .send()
        .await
        .unwrap();
    let taken_id = lifeboat_rds::backup::snapshot_id(&taken);
    east.create_db_snapshot()
        .db_instance_identifier("ledger-db")
        .db_snapshot_identifier(&taken_id)
        .send()
        .await
        .unwrap();

    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let bus = servers.shared_bus().await;
    report_planned(bus.clone(), &run_id, 3).await;
    publish_twice(bus.clone(), "rds", &[adopted.clone(), unkeyed.clone(), taken.clone()]).await;
    let summary = final_summary(&servers.client().await, &run_id).await;

    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let done = task_of(&summary, &adopted);
    assert_eq!(done.phase, pb::TaskPhase::Succeeded as i32, "{done:?}");
    assert_eq!(done.created_resource_ids[0], adopted_id);
    let copy = west.describe_db_snapshots().db_snapshot_identifier(&adopted_id).send().await.unwrap();
    assert_eq!(rds_tags(copy.db_snapshots()[0].tag_list()).get(TAG_COPY_OF), Some(&adopted_id));

    let failed = task_of(&summary, &unkeyed);
    assert_eq!((failed.phase, failed.reason_code.as_str()), (pb::TaskPhase::Failed as i32, "KMSKeyNotAccessibleFault"));
    let point = lifeboat_rds::backup::snapshot_id(&unkeyed);
    assert!(failed.message.contains(&format!("the recovery point {point} exists in us-east-1")), "{}", failed.message);
    let kept = east.describe_db_snapshots().db_snapshot_identifier(&point).send().await.unwrap();
    assert_eq!(kept.db_snapshots()[0].status(), Some("available"));

    let failed = task_of(&summary, &taken);
    assert_eq!(failed.reason_code, lifeboat_rds::TARGET_NAME_TAKEN, "{failed:?}");
    assert!(failed.message.contains(&taken_id), "{}", failed.message);
    assert!(west.describe_db_snapshots().db_snapshot_identifier(&taken_id).send().await.is_err(), "not copied");
}

/// DynamoDB's crash window: a redelivery without a progress record finds the backup an
/// earlier delivery made (by its name, through ListBackups) instead of making a second one.
#[tokio::test]
async fn a_redelivery_finds_the_backup_an_earlier_delivery_made_without_recording_it() {
    use aws_sdk_dynamodb::operation::describe_backup::DescribeBackupOutput;
    use aws_sdk_dynamodb::operation::list_backups::ListBackupsOutput;
    use aws_sdk_dynamodb::types::{BackupDescription, BackupDetails, BackupStatus, BackupSummary, BackupType};
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    const ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/backup/01-lost";
    let task = backup::task("r", pb::ResourceType::DynamodbTable, job(&run(&[]), "orders", &[]));
    let name = backup::dynamodb_backup_name(&task);
    let listed = name.clone();
    let list =
        mock!(Client::list_backups).match_requests(|r| r.table_name() == Some("orders")).then_output(move || {
            let other = BackupSummary::builder().backup_arn("arn:other").backup_name("nightly").build();
            let ours = BackupSummary::builder().backup_arn(ARN).backup_name(&listed).build();
            ListBackupsOutput::builder().backup_summaries(other).backup_summaries(ours).build()
        });
    let created_at = aws_smithy_types::DateTime::from_secs(1_790_000_000);
    let details = move || {
        BackupDetails::builder()
            .backup_arn(ARN)
            .backup_name("lifeboat")
            .backup_status(BackupStatus::Available)
            .backup_type(BackupType::User)
            .backup_creation_date_time(created_at)
            .build()
            .unwrap()
    };
    let describe =
        mock!(Client::describe_backup).match_requests(|r| r.backup_arn() == Some(ARN)).then_output(move || {
            DescribeBackupOutput::builder()
                .backup_description(BackupDescription::builder().backup_details(details()).build())
                .build()
        });
    let create = mock!(Client::create_backup).then_output(|| unreachable!("a second backup"));
    let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&list, &describe, &create]);
    let store = lifeboat_common::shared::MemoryStore::default();
    let mut progress = lifeboat_common::restore::Progress::default();

    let step = lifeboat_dynamodb::backup::backup_step(&ddb, &store, &task, 2, &mut progress).await.unwrap();

    assert_eq!(
        step,
        lifeboat_common::restore::Step::Done {
            message: format!("backup {name} of table orders is available"),
            created: vec![ARN.to_string()],
            warnings: Vec::new(),
        }
    );
    assert_eq!((list.num_calls(), create.num_calls()), (1, 0));
    assert_eq!(progress.id(backup::ROLE_POINT), Some(ARN));
    let tags = backup::load_point_tags(&store, ARN).await.unwrap().expect("the lost backup's tags, written now");
    let point = PointTags::parse(&tags).unwrap();
    assert_eq!(point.expires_at.map(|at| at.timestamp()), Some(1_790_000_000 + 7 * 86_400), "from its creation time");
}

#[tokio::test]
async fn a_backup_copy_waits_for_a_slot_of_the_copy_cap_it_shares_with_restores() {
    use lifeboat_common::quota::{self, Cap, QuotaConfig, Quotas};
    use lifeboat_common::restore::{Progress, Step};
    use lifeboat_common::shared::{MemoryStore, SharedStore};

    init_logging();
    let servers = Servers::start().await;
    let east = aws_sdk_rds::Client::new(&servers.aws("us-east-1"));
    east.create_db_instance()
        .db_instance_identifier("capped-db")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .send()
        .await
        .unwrap();
    let store: std::sync::Arc<dyn SharedStore> = std::sync::Arc::new(MemoryStore::default());
    let caps = QuotaConfig::parse("rds.copies=1").unwrap();
    let cx = lifeboat_rds::Context::new(store.clone(), caps.clone());
    let accounts =
        lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), lifeboat_common::aws::DEFAULT_ROLE_NAME);
    // A restore's copy to us-west-2 holds the only slot.
    let slot = Quotas::slot_key(Cap::RdsCopies, ACCOUNT, "us-west-2");
    let restore = "task.restore.g0";
    let quotas = Quotas::new(store.clone(), caps);
    assert!(quotas.acquire(&slot, Cap::RdsCopies, restore, std::time::Duration::from_secs(60)).await.unwrap());
    let task = backup::task("r", pb::ResourceType::RdsInstance, job(&run(&["us-west-2"]), "capped-db", &[]));
    let id = lifeboat_rds::backup::snapshot_id(&task);
    let mut progress = Progress::default();
    let step = lifeboat_rds::backup::step;

    let first = step(&accounts, &cx, &task, 1, &mut progress).await;
    assert!(matches!(first, Ok(Step::Waiting { .. })), "{first:?}");
    let full = step(&accounts, &cx, &task, 2, &mut progress).await.unwrap_err();
    assert_eq!((full.code.as_str(), full.is_retryable()), ("CopyLimitInFlight", true), "{full:?}");
    let west = aws_sdk_rds::Client::new(&servers.aws("us-west-2"));
    assert!(west.describe_db_snapshots().db_snapshot_identifier(&id).send().await.is_err(), "no copy yet");

    quota::release(store.as_ref(), &slot, restore).await.unwrap();
    let copying = step(&accounts, &cx, &task, 3, &mut progress).await;
    assert!(matches!(copying, Ok(Step::Waiting { .. })), "{copying:?}");
    assert_eq!(progress.slots, [slot.clone()], "the backup's copy holds the slot");
    let done = step(&accounts, &cx, &task, 4, &mut progress).await;
    let copy = format!("arn:aws:rds:us-west-2:{ACCOUNT}:snapshot:{id}");
    assert!(matches!(&done, Ok(Step::Done { created, .. }) if created == &[id.clone(), copy.clone()]), "{done:?}");
    assert!(progress.slots.is_empty());
    assert_eq!(quotas.held(&slot).await.unwrap(), 0, "given back once the copy is available");
}
