//! One request with all four resource types across two accounts (the second reached through
//! AssumeRole) and two regions: planned by a dry run, then restored with every task delivered
//! twice, and each resource created exactly once.

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType as Ec2ResourceType, Tag, TagSpecification};
use lifeboat_common::bus::Queue;
use lifeboat_common::subjects::TAG_REQUEST_ID;
use lifeboat_proto as pb;
use lifeboat_tests::*;

const OTHER: &str = "111111111111";

fn set(name: &str, region: &str, account: &str, kind: pb::ResourceType, targets: pb::Targets) -> pb::RestoreSet {
    let mut set = ebs_set(name, region, &[("tier", "gold")], None, Default::default());
    set.source.as_mut().unwrap().account_id = account.into();
    set.resource_types = vec![kind as i32];
    set.target = Some(targets);
    set
}

async fn every_type_across_accounts_and_regions_planned_then_restored_once_despite_duplicates(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let accounts = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "LifeboatRestoreRole");
    let other_west = accounts.config_for(OTHER, "us-west-2").await.unwrap();

    // Caller's account, us-east-1: an EBS snapshot and a DynamoDB backup.
    let east = servers.ec2("us-east-1");
    let volume = create_volume(&east, "us-east-1a", 8, &[("tier", "gold")]).await;
    create_snapshot(&east, &volume, &[("tier", "gold")]).await;
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"));
    fixtures::create_table(&ddb, "ledger", &[("tier", "gold")]).await;
    ddb.create_backup().table_name("ledger").backup_name("nightly").send().await.unwrap();

    // The other account, us-west-2: an AMI of an instance and a DB snapshot.
    let west = lifeboat_common::aws::ec2_client(&other_west, OTHER, "us-west-2");
    let vpc = west.create_vpc().cidr_block("10.2.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.2.1.0/24", "us-west-2a"), ("10.2.2.0/24", "us-west-2b")] {
        let subnet =
            west.create_subnet().vpc_id(&vpc_id).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let base = west.describe_images().owners("amazon").send().await.unwrap();
    let base_image = base.images()[0].image_id().unwrap().to_string();
    let source = west
        .run_instances()
        .image_id(&base_image)
        .min_count(1)
        .max_count(1)
        .instance_type(InstanceType::T3Micro)
        .subnet_id(&subnets[0])
        .send()
        .await
        .unwrap();
    let gold = TagSpecification::builder()
        .resource_type(Ec2ResourceType::Image)
        .tags(Tag::builder().key("tier").value("gold").build())
        .build();
    west.create_image()
        .instance_id(source.instances()[0].instance_id().unwrap())
        .name("app")
        .tag_specifications(gold)
        .send()
        .await
        .unwrap();
    let rds = aws_sdk_rds::Client::new(&other_west);
    rds.create_db_subnet_group()
        .db_subnet_group_name("restores")
        .db_subnet_group_description("restores")
        .set_subnet_ids(Some(subnets.clone()))
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier("billing")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .send()
        .await
        .unwrap();
    let gold_tag = aws_sdk_rds::types::Tag::builder().key("tier").value("gold").build();
    rds.create_db_snapshot()
        .db_instance_identifier("billing")
        .db_snapshot_identifier("billing-nightly")
        .tags(gold_tag)
        .send()
        .await
        .unwrap();

    let sets = |suffix: &str| {
        vec![
            set(
                "volumes",
                "us-east-1",
                "",
                pb::ResourceType::EbsVolume,
                pb::Targets {
                    ebs: Some(pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() }),
                    ..Default::default()
                },
            ),
            set(
                "tables",
                "us-east-1",
                "",
                pb::ResourceType::DynamodbTable,
                pb::Targets {
                    dynamodb: Some(pb::DynamoDbTarget { name_suffix: suffix.into(), ..Default::default() }),
                    ..Default::default()
                },
            ),
            set(
                "instances",
                "us-west-2",
                OTHER,
                pb::ResourceType::Ec2Instance,
                pb::Targets {
                    ec2: Some(pb::Ec2Target { subnet_id: subnets[1].clone(), ..Default::default() }),
                    ..Default::default()
                },
            ),
            set(
                "databases",
                "us-west-2",
                OTHER,
                pb::ResourceType::RdsInstance,
                pb::Targets {
                    rds: Some(pb::RdsTarget {
                        db_subnet_group: "restores".into(),
                        name: format!("billing-{suffix}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ]
    };

    // The dry run plans one restore per type and creates nothing.
    let aggregator_and_discovery =
        ServiceSet { ebs: None, dynamodb: None, ec2: None, rds: None, ..ServiceSet::default() };
    let planning = Running::start(&servers, aggregator_and_discovery).await;
    let client = servers.client().await;
    let mut plan = request("all-plan", sets("plan"));
    plan.dry_run = true;
    client.submit(&plan).await.unwrap();
    let planned = final_summary(&client, "all-plan").await;
    assert_eq!(verdict(&planned), pb::Verdict::Completed, "{planned:#?}");
    assert_eq!(planned.counts.unwrap().planned, 4);
    let kinds: std::collections::BTreeSet<i32> = planned.tasks.iter().map(|t| t.resource_type).collect();
    assert_eq!(kinds.len(), 4, "one plan entry per type");
    assert!(ddb.describe_table().table_name("ledger-plan").send().await.is_err());
    assert!(rds.describe_db_instances().db_instance_identifier("billing-plan").send().await.is_err());

    // The real request: planned while no resource service runs, then every task published again.
    client.submit(&request("all-1", sets("copy"))).await.unwrap();
    let kinds = ["ebs", "dynamodb", "ec2", "rds"].map(|kind| Queue::Work(kind.to_string()));
    let mut stored = 0;
    for _ in 0..100 {
        stored = 0;
        for kind in &kinds {
            stored += queued_count(&servers, kind).await;
        }
        if stored == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 4, "four tasks queued");
    let mut queued_tasks = Vec::new();
    for kind in &kinds {
        queued_tasks.extend(queued(&servers, kind).await);
    }
    let bus = servers.shared_bus().await;
    let duplicates = queued_tasks.iter().enumerate().map(|(i, task)| task.republish(format!("again-{i}"))).collect();
    bus.publish_all(duplicates).await.unwrap();
    planning.stop().await;
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let summary = final_summary(&client, "all-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.counts.unwrap().succeeded, 4);
    for kind in ["ebs", "dynamodb", "ec2", "rds"] {
        work_drained(&servers, kind).await;
    }

    // Exactly one of each, where it belongs.
    assert_eq!(volumes_tagged(&east, TAG_REQUEST_ID, "all-1").await.len(), 1, "one volume");
    let tables = ddb.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names().iter().filter(|n| n.starts_with("ledger-")).count(), 1, "one table");
    let by_request = Filter::builder().name(format!("tag:{TAG_REQUEST_ID}")).values("all-1").build();
    let instances = west.describe_instances().filters(by_request).send().await.unwrap();
    let launched: Vec<_> = instances.reservations().iter().flat_map(|r| r.instances()).collect();
    assert_eq!(launched.len(), 1, "one instance, in the other account");
    assert_eq!(launched[0].subnet_id(), Some(subnets[1].as_str()));
    let databases = rds.describe_db_instances().send().await.unwrap();
    let restored: Vec<_> =
        databases.db_instances().iter().filter(|d| d.db_instance_identifier() == Some("billing-copy")).collect();
    assert_eq!(restored.len(), 1, "one database, in the other account");
}

on_both_transports!(every_type_across_accounts_and_regions_planned_then_restored_once_despite_duplicates,);
