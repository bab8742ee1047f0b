//! RDS restores end to end: a DB instance from its snapshot, an Aurora cluster from its cluster
//! snapshot with a writer, a DB instance to a point in time, and a set whose DB subnet group
//! does not exist failing with the AWS code while the others complete.

use aws_sdk_rds::types::Tag;
use aws_sdk_rds::Client;
use lifeboat_proto as pb;
use lifeboat_tests::*;

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn rds_set(name: &str, kind: pb::ResourceType, target: pb::RdsTarget) -> pb::RestoreSet {
    let mut set = ebs_set(name, "us-east-1", &[("app", "shop")], None, Default::default());
    set.resource_types = vec![kind as i32];
    set.target = Some(pb::Targets { rds: Some(target), ..Default::default() });
    set
}

async fn databases_and_clusters_come_back_and_a_missing_subnet_group_fails_only_its_set(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let ec2 = servers.ec2("us-east-1");
    let rds = Client::new(&servers.aws("us-east-1"));
    let vpc = ec2.create_vpc().cidr_block("10.1.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.1.1.0/24", "us-east-1a"), ("10.1.2.0/24", "us-east-1b")] {
        let subnet = ec2.create_subnet().vpc_id(&vpc_id).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let group = ec2.create_security_group().group_name("db").description("db").vpc_id(&vpc_id).send().await.unwrap();
    let security_group = group.group_id().unwrap().to_string();
    rds.create_db_subnet_group()
        .db_subnet_group_name("restore-subnets")
        .db_subnet_group_description("restores")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap();

    rds.create_db_instance()
        .db_instance_identifier("orders-db")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .backup_retention_period(7)
        .tags(tag("app", "shop"))
        .send()
        .await
        .unwrap();
    rds.create_db_snapshot()
        .db_instance_identifier("orders-db")
        .db_snapshot_identifier("orders-nightly")
        .tags(tag("app", "shop"))
        .tags(tag("team", "payments"))
        .send()
        .await
        .unwrap();
    rds.create_db_cluster()
        .db_cluster_identifier("analytics")
        .engine("aurora-postgresql")
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .tags(tag("app", "shop"))
        .send()
        .await
        .unwrap();
    rds.create_db_cluster_snapshot()
        .db_cluster_identifier("analytics")
        .db_cluster_snapshot_identifier("analytics-nightly")
        .tags(tag("app", "shop"))
        .send()
        .await
        .unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let target = |name: &str| pb::RdsTarget {
        db_subnet_group: "restore-subnets".into(),
        name: name.into(),
        security_group_ids: vec![security_group.clone()],
        tags: [("restored-by".to_string(), "lifeboat".to_string())].into(),
        ..Default::default()
    };
    let instance = rds_set("instance", pb::ResourceType::RdsInstance, target("orders-restored"));
    let cluster = rds_set(
        "cluster",
        pb::ResourceType::RdsCluster,
        pb::RdsTarget { instance_class: "db.r6g.large".into(), ..target("analytics-restored") },
    );
    let mut pitr = rds_set("pitr", pb::ResourceType::RdsInstance, target("orders-pitr"));
    let source = pitr.source.as_mut().unwrap();
    source.point_in_time_recovery = true;
    source.selection = before(chrono::Utc::now());
    let broken = rds_set(
        "broken",
        pb::ResourceType::RdsInstance,
        pb::RdsTarget { db_subnet_group: "does-not-exist".into(), ..target("orders-broken") },
    );
    client.submit(&request("rds-1", vec![instance, cluster, pitr, broken])).await.unwrap();
    let summary = final_summary(&client, "rds-1").await;

    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let task = |set: &str| summary.tasks.iter().find(|t| t.set_name == set).unwrap().clone();
    for set in ["instance", "cluster", "pitr"] {
        assert_eq!(task(set).phase, pb::TaskPhase::Succeeded as i32, "{:?}", task(set));
    }
    let broken = task("broken");
    assert_eq!(broken.phase, pb::TaskPhase::Failed as i32);
    assert_eq!(broken.reason_code, "DBSubnetGroupNotFoundFault", "{broken:?}");

    let restored = rds.describe_db_instances().db_instance_identifier("orders-restored").send().await.unwrap();
    let restored = &restored.db_instances()[0];
    assert_eq!(restored.db_subnet_group().and_then(|g| g.db_subnet_group_name()), Some("restore-subnets"));
    assert!(restored.vpc_security_groups().iter().any(|g| g.vpc_security_group_id() == Some(security_group.as_str())));
    let tags: std::collections::HashMap<_, _> =
        restored.tag_list().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
    assert_eq!(tags.get("team"), Some(&"payments"), "the snapshot's tags: {tags:?}");
    assert_eq!(tags.get("restored-by"), Some(&"lifeboat"));
    assert_eq!(task("instance").source_backup_id, "orders-nightly");

    let cluster = rds.describe_db_clusters().db_cluster_identifier("analytics-restored").send().await.unwrap();
    assert_eq!(cluster.db_clusters()[0].engine(), Some("aurora-postgresql"));
    let writer = rds.describe_db_instances().db_instance_identifier("analytics-restored-writer").send().await.unwrap();
    assert_eq!(writer.db_instances()[0].db_cluster_identifier(), Some("analytics-restored"));
    assert_eq!(task("cluster").created_resource_ids, ["analytics-restored", "analytics-restored-writer"]);

    let pitr = rds.describe_db_instances().db_instance_identifier("orders-pitr").send().await.unwrap();
    assert_eq!(pitr.db_instances()[0].engine(), Some("postgres"));
    assert!(task("pitr").selection_reason.starts_with("point-in-time recovery to"));
    assert!(rds.describe_db_instances().db_instance_identifier("orders-broken").send().await.is_err());
}

on_both_transports!(databases_and_clusters_come_back_and_a_missing_subnet_group_fails_only_its_set,);
