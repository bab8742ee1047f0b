//! DynamoDB and EC2 at scale: two DynamoDB replicas over one bus stay under one shared cap on
//! restores in flight; a TableAlreadyExists answer adopts our own table and fails clearly on a
//! foreign one; several EC2 instances restored at once, each checked by its recorded id, and
//! ten waiting ones answered by one DescribeInstances.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifeboat_common::aws::{Accounts, DEFAULT_ROLE_NAME};
use lifeboat_common::quota::{QuotaConfig, Quotas};
use lifeboat_proto as pb;
use lifeboat_tests::*;

async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    fixtures::create_table(ddb, name, &[("app", "shop")]).await;
    ddb.create_backup().table_name(name).backup_name("nightly").send().await.expect("backup");
}

fn dynamodb_set() -> pb::RestoreSet {
    let mut set = ebs_set("tables", "us-east-1", &[("app", "shop")], None, Default::default());
    set.resource_types = vec![pb::ResourceType::DynamodbTable as i32];
    set.target = Some(pb::Targets {
        dynamodb: Some(pb::DynamoDbTarget { name_suffix: "restored".into(), ..Default::default() }),
        ..Default::default()
    });
    set
}

async fn two_replicas_restore_six_tables_under_a_cap_of_two(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"));
    for n in 0..6 {
        create_table(&ddb, &format!("orders-{n}")).await;
    }
    let mut config = fast_dynamodb_config();
    config.service.quotas = QuotaConfig::parse("dynamodb.restores=2").unwrap();
    let _services = Running::start(&servers, ServiceSet { dynamodb: Some(config.clone()), ..Default::default() }).await;
    // The second replica: its own connection to the same bus.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let accounts = Accounts::new(servers.aws("us-east-1"), DEFAULT_ROLE_NAME);
    let replica = lifeboat_dynamodb::service(accounts, servers.shared_bus().await, config.clone());
    tokio::spawn(replica.run(shutdown.clone()));

    // Watch the shared slot record while the restores run.
    let quotas = Quotas::new(servers.shared_bus().await.shared(), config.service.quotas.clone());
    let slot = lifeboat_dynamodb::Gate::slot_key(&pb::DynamoDbTarget {
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        ..Default::default()
    });
    let (most, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let watcher = {
        let (most, done, slot) = (most.clone(), done.clone(), slot.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(quotas.held(&slot).await.expect("held"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            quotas.held(&slot).await.expect("held")
        })
    };
    let client = servers.client().await;
    client.submit(&request("ddb-cap", vec![dynamodb_set()])).await.unwrap();
    let summary = final_summary(&client, "ddb-cap").await;
    done.store(true, Ordering::Relaxed);
    let held_after = watcher.await.unwrap();

    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.tasks.len(), 6);
    let most = most.load(Ordering::Relaxed);
    assert!(most <= 2, "{most} restores held slots at once under a cap of 2");
    assert_eq!(held_after, 0, "every slot given back once its table was ACTIVE");
    let tables = ddb.list_tables().send().await.unwrap();
    let restored: Vec<_> = tables.table_names().iter().filter(|n| n.ends_with("-restored")).collect();
    assert_eq!(restored.len(), 6, "each table restored once: {restored:?}");
    for name in restored {
        let table = ddb.describe_table().table_name(name).send().await.unwrap();
        assert_eq!(table.table().unwrap().table_status().map(|s| s.as_str()), Some("ACTIVE"), "{name}");
    }
}

/// TableAlreadyExists between our DescribeTable and our restore: a concurrent duplicate's
/// table is adopted, someone else's fails naming the table and the field that chose its name.
mod already_exists {
    use std::sync::Arc;

    use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
    use aws_sdk_dynamodb::operation::list_tags_of_resource::ListTagsOfResourceOutput;
    use aws_sdk_dynamodb::operation::restore_table_from_backup::RestoreTableFromBackupError;
    use aws_sdk_dynamodb::operation::tag_resource::TagResourceOutput;
    use aws_sdk_dynamodb::types::{RestoreSummary, TableDescription, TableStatus, Tag};
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use lifeboat_common::restore::{decide, Progress, Step, WaitPolicy};
    use lifeboat_proto as pb;

    const BACKUP: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/backup/01";
    const ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders-restored";

    fn task() -> (pb::RestoreTask, pb::DynamoDbTarget) {
        let target = pb::DynamoDbTarget {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table_name: "orders-restored".into(),
            ..Default::default()
        };
        let task = pb::RestoreTask {
            request_id: "r".into(),
            task_id: "t-ddb".into(),
            backup: Some(pb::Backup {
                backup_id: BACKUP.into(),
                source_resource_id: "orders".into(),
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                ..Default::default()
            }),
            target: Some(pb::restore_task::Target::Dynamodb(target.clone())),
            ..Default::default()
        };
        (task, target)
    }

    /// Absent at first, then there (restored from `source`) once the restore was refused.
    async fn step_after_already_exists(source: &'static str, tags: &'static [(&'static str, &'static str)]) -> Step {
        let table = move || {
            let summary = RestoreSummary::builder()
                .source_backup_arn(source)
                .restore_date_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
                .restore_in_progress(false)
                .build()
                .unwrap();
            let table = TableDescription::builder()
                .table_name("orders-restored")
                .table_arn(ARN)
                .table_status(TableStatus::Active)
                .restore_summary(summary)
                .build();
            DescribeTableOutput::builder().table(table).build()
        };
        let describe = mock!(Client::describe_table)
            .sequence()
            .error(|| DescribeTableError::generic(ErrorMetadata::builder().code("ResourceNotFoundException").build()))
            .output(table)
            .repeatedly()
            .build();
        let restore = mock!(Client::restore_table_from_backup).then_error(|| {
            RestoreTableFromBackupError::generic(
                ErrorMetadata::builder().code("TableAlreadyExistsException").message("Table already exists").build(),
            )
        });
        let listed = mock!(Client::list_tags_of_resource).then_output(move || {
            let tags = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap());
            ListTagsOfResourceOutput::builder().set_tags(Some(tags.collect())).build()
        });
        let tag = mock!(Client::tag_resource).then_output(|| TagResourceOutput::builder().build());
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &restore, &listed, &tag]);
        let gate =
            lifeboat_dynamodb::Gate::new(Arc::new(lifeboat_common::shared::MemoryStore::default()), Default::default());
        let (task, target) = task();
        let mut progress = Progress::default();
        let step = lifeboat_dynamodb::restore_step(&ddb, &task, &target, &mut progress, &gate).await.unwrap();
        assert_eq!(restore.num_calls(), 1, "restored once");
        if matches!(step, Step::Done { .. }) {
            assert_eq!(progress.id(lifeboat_dynamodb::TABLE), Some(ARN), "the adopted table is recorded");
            assert!(progress.slots.is_empty(), "its slot is given back once it is ACTIVE");
        }
        step
    }

    #[tokio::test]
    async fn our_table_restored_by_a_concurrent_duplicate_is_adopted() {
        let step = step_after_already_exists(BACKUP, &[]).await;
        let decision = decide(Ok(step), 1, &WaitPolicy::default(), 10);
        assert_eq!(decision.phase, pb::TaskPhase::Succeeded, "{decision:?}");
        assert_eq!(decision.created, [ARN]);
    }

    #[tokio::test]
    async fn our_tagged_table_is_adopted_whatever_its_summary_says() {
        let other = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/backup/02";
        let step = step_after_already_exists(other, &[("lifeboat:task-id", "t-ddb")]).await;
        assert!(matches!(step, Step::Done { .. }), "{step:?}");
    }

    #[tokio::test]
    async fn a_foreign_table_fails_naming_the_table_and_the_field() {
        let other = "arn:aws:dynamodb:us-east-1:123456789012:table/payments/backup/09";
        let step = step_after_already_exists(other, &[("owner", "someone-else")]).await;
        let decision = decide(Ok(step), 1, &WaitPolicy::default(), 10);
        assert_eq!(decision.phase, pb::TaskPhase::Failed);
        assert_eq!(decision.reason_code, "TargetTableExists");
        assert!(decision.message.contains("orders-restored"), "{}", decision.message);
        assert!(decision.message.contains("name_suffix"), "{}", decision.message);
    }
}

async fn several_instances_come_back_each_checked_by_its_recorded_id(transport: Transport) {
    use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
    init_logging();
    let servers = Servers::start_with(transport).await;
    let ec2 = servers.ec2("us-east-1");
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet =
        ec2.create_subnet().vpc_id(&vpc_id).cidr_block("10.0.1.0/24").availability_zone("us-east-1a").send().await;
    let subnet_id = subnet.unwrap().subnet().unwrap().subnet_id().unwrap().to_string();
    let base = ec2.describe_images().owners("amazon").send().await.unwrap();
    let base_image = base.images().first().unwrap().image_id().unwrap().to_string();
    for n in 0..5 {
        let source = ec2
            .run_instances()
            .image_id(&base_image)
            .min_count(1)
            .max_count(1)
            .instance_type(InstanceType::T3Micro)
            .subnet_id(&subnet_id)
            .send()
            .await
            .unwrap();
        let id = source.instances()[0].instance_id().unwrap().to_string();
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Image)
            .tags(Tag::builder().key("app").value("web").build())
            .build();
        ec2.create_image().instance_id(&id).name(format!("web-{n}")).tag_specifications(tags).send().await.unwrap();
    }

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let mut set = ebs_set("web", "us-east-1", &[("app", "web")], None, Default::default());
    set.resource_types = vec![pb::ResourceType::Ec2Instance as i32];
    let target = pb::Ec2Target { subnet_id: subnet_id.clone(), ..Default::default() };
    set.target = Some(pb::Targets { ec2: Some(target), ..Default::default() });
    client.submit(&request("ec2-many", vec![set])).await.unwrap();
    let summary = final_summary(&client, "ec2-many").await;

    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.tasks.len(), 5);
    let by_request = Filter::builder().name("tag:lifeboat:request-id").values("ec2-many").build();
    let found = ec2.describe_instances().filters(by_request).send().await.unwrap();
    let restored: Vec<_> = found.reservations().iter().flat_map(|r| r.instances()).collect();
    let tasks: std::collections::BTreeSet<_> = restored
        .iter()
        .filter_map(|i| i.tags().iter().find(|t| t.key() == Some("lifeboat:task-id")).and_then(|t| t.value()))
        .collect();
    assert_eq!((restored.len(), tasks.len()), (5, 5), "one instance per task");
    for task in &summary.tasks {
        let id = task.created_resource_ids.first().expect("created id");
        assert!(restored.iter().any(|i| i.instance_id() == Some(id.as_str())), "{id} reported and restored");
    }
}

on_both_transports!(
    two_replicas_restore_six_tables_under_a_cap_of_two,
    several_instances_come_back_each_checked_by_its_recorded_id
);

/// A task restoring AMI `ami-1` of us-east-1 as a t3.micro into `region`, and its target.
fn ec2_task(task_id: &str, region: &str) -> (pb::RestoreTask, pb::Ec2Target) {
    let target = pb::Ec2Target {
        account_id: ACCOUNT.into(),
        region: region.into(),
        subnet_id: "subnet-1".into(),
        instance_type: "t3.micro".into(),
        ..Default::default()
    };
    let backup = pb::Backup {
        backup_id: "ami-1".into(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        ..Default::default()
    };
    let task = pb::RestoreTask {
        request_id: "r".into(),
        task_id: task_id.into(),
        backup: Some(backup),
        target: Some(pb::restore_task::Target::Ec2(target.clone())),
        ..Default::default()
    };
    (task, target)
}

/// Ten waiting EC2 tasks of one account and region are answered by one DescribeInstances.
#[tokio::test]
async fn ten_waiting_instances_are_checked_with_one_describe() {
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{Instance, InstanceState, InstanceStateName, Reservation};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use lifeboat_common::restore::{Progress, Step};
    use lifeboat_ec2::{restore_step, Clients, Ec2Api, Scope, INSTANCE};

    let ids: Vec<String> = (0..10).map(|n| format!("i-{n:017}")).collect();
    let running = ids.clone();
    let describe = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("instance-id") && f.values().len() == 10))
        .then_output(move || {
            let instances = running.iter().map(|id| {
                Instance::builder()
                    .instance_id(id)
                    .state(InstanceState::builder().name(InstanceStateName::Running).build())
                    .build()
            });
            let reservation = Reservation::builder().set_instances(Some(instances.collect())).build();
            DescribeInstancesOutput::builder().reservations(reservation).build()
        });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
    let scope = Scope { ec2, account: "123456789012".into(), region: "us-east-1".into() };
    let clients = Arc::new(Clients { target: scope.clone(), source: scope });
    let api = Arc::new(Ec2Api::new(Arc::new(lifeboat_common::shared::MemoryStore::default()), Default::default()));
    let mut steps = tokio::task::JoinSet::new();
    for (n, id) in ids.iter().enumerate() {
        let (task, target) = ec2_task(&format!("t-{n}"), "us-east-1");
        let mut progress = Progress::default();
        progress.record(INSTANCE, id.clone());
        progress.recorded = true;
        let (clients, api) = (clients.clone(), api.clone());
        steps.spawn(async move { restore_step(&clients, &api, &task, &target, 5, &mut progress).await });
    }
    while let Some(step) = steps.join_next().await {
        let step = step.unwrap().expect("step");
        assert!(matches!(&step, Step::Done { message, .. } if message.ends_with("is running")), "{step:?}");
    }
    assert_eq!(describe.num_calls(), 1, "one batched DescribeInstances for ten tasks");
}

/// A delivery that finds the AMI copy recorded but no instance looks once by the task's tag
/// before launching: an earlier delivery may have launched it and died before recording it, and
/// not every endpoint honours the ClientToken (moto does not).
#[tokio::test]
async fn a_later_delivery_adopts_an_unrecorded_instance_instead_of_launching_another() {
    use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
    use aws_sdk_ec2::types::{Image, ImageState, Instance, InstanceState, InstanceStateName, Reservation};
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use lifeboat_common::restore::{Progress, Step};
    use lifeboat_ec2::{restore_step, Clients, Ec2Api, Scope, COPY, INSTANCE};

    let copy = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("image-id")))
        .then_output(|| {
            let image = Image::builder().image_id("ami-copy").state(ImageState::Available).build();
            DescribeImagesOutput::builder().images(image).build()
        });
    let tagged = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|req| {
            req.filters().iter().any(|f| f.name() == Some("tag:lifeboat:task-id") && f.values() == ["t-lost"])
        })
        .then_output(|| {
            let instance = Instance::builder()
                .instance_id("i-launched-before")
                .state(InstanceState::builder().name(InstanceStateName::Running).build())
                .build();
            DescribeInstancesOutput::builder().reservations(Reservation::builder().instances(instance).build()).build()
        });
    let run = mock!(aws_sdk_ec2::Client::run_instances)
        .then_output(|| aws_sdk_ec2::operation::run_instances::RunInstancesOutput::builder().build());
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&copy, &tagged, &run]);
    let target_scope = Scope { ec2: ec2.clone(), account: "123456789012".into(), region: "us-west-2".into() };
    let source_scope = Scope { ec2, account: "123456789012".into(), region: "us-east-1".into() };
    let clients = Clients { target: target_scope, source: source_scope };
    let api = Ec2Api::new(Arc::new(lifeboat_common::shared::MemoryStore::default()), Default::default());
    let (task, target) = ec2_task("t-lost", "us-west-2");
    let mut progress = Progress::default();
    progress.record(COPY, "ami-copy");
    progress.recorded = true;
    let step = restore_step(&clients, &api, &task, &target, 3, &mut progress).await.expect("step");
    assert!(matches!(&step, Step::Done { message, .. } if message.ends_with("is running")), "{step:?}");
    assert_eq!(run.num_calls(), 0, "the instance an earlier delivery launched is adopted, not launched again");
    assert_eq!(tagged.num_calls(), 1);
    assert_eq!(progress.id(INSTANCE), Some("i-launched-before"));
}
