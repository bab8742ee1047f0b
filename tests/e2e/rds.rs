//! RDS restores end to end: a DB instance from its snapshot, an Aurora cluster from its cluster
//! snapshot with a writer, a DB instance to a point in time, and a set whose DB subnet group
//! does not exist failing with the AWS code while the others complete; a window of two
//! snapshots restoring two databases with the source's settings, a setting that cannot be
//! applied named as a warning, a cluster getting its source writer's class, and a snapshot
//! shared with another account (moto's limits are covered by `mocks::rds`).

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

/// A source database with settings a restore does not carry over by itself.
async fn database_with_settings(rds: &Client, id: &str, parameter_group: &str) {
    rds.create_db_parameter_group()
        .db_parameter_group_name(parameter_group)
        .db_parameter_group_family("postgres13")
        .description("tuned")
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(100)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .backup_retention_period(7)
        .db_subnet_group_name("restore-subnets")
        .db_parameter_group_name(parameter_group)
        .multi_az(true)
        .port(5433)
        .storage_type("io1")
        .iops(1000)
        .enable_iam_database_authentication(true)
        .copy_tags_to_snapshot(true)
        .enable_cloudwatch_logs_exports("postgresql")
        .tags(tag("app", "ledger"))
        .send()
        .await
        .unwrap();
}

async fn subnet_group(servers: &Servers, rds: &Client) {
    let ec2 = servers.ec2("us-east-1");
    let vpc = ec2.create_vpc().cidr_block("10.2.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.2.1.0/24", "us-east-1a"), ("10.2.2.0/24", "us-east-1b")] {
        let subnet = ec2.create_subnet().vpc_id(&vpc_id).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    rds.create_db_subnet_group()
        .db_subnet_group_name("restore-subnets")
        .db_subnet_group_description("restores")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap();
}

fn window(start: chrono::DateTime<chrono::Utc>, end: chrono::DateTime<chrono::Utc>) -> Option<pb::source::Selection> {
    Some(pb::source::Selection::Window(pb::TimeWindow { start: Some(ts(start)), end: Some(ts(end)) }))
}

#[tokio::test]
async fn a_window_of_two_snapshots_restores_two_databases_with_distinct_names_and_the_source_settings() {
    init_logging();
    let servers = Servers::start().await;
    let rds = Client::new(&servers.aws("us-east-1"));
    subnet_group(&servers, &rds).await;
    database_with_settings(&rds, "ledger", "ledger-params").await;
    let start = tick().await;
    for id in ["ledger-monday", "ledger-tuesday"] {
        rds.create_db_snapshot()
            .db_instance_identifier("ledger")
            .db_snapshot_identifier(id)
            .tags(tag("app", "ledger"))
            .send()
            .await
            .unwrap();
        tick().await;
    }
    let end = chrono::Utc::now();
    database_with_settings(&rds, "audit", "audit-params").await;
    rds.create_db_snapshot()
        .db_instance_identifier("audit")
        .db_snapshot_identifier("audit-nightly")
        .tags(tag("app", "ledger"))
        .send()
        .await
        .unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    // No subnet group given: the source's account and region inherit the source's.
    let target = |name: &str| pb::RdsTarget { name: name.into(), ..Default::default() };
    let mut set = rds_set("ledger", pb::ResourceType::RdsInstance, target("ledger-restored"));
    let source = set.source.as_mut().unwrap();
    source.tags = [("app".to_string(), "ledger".to_string())].into();
    source.names = vec!["ledger".into()];
    source.selection = window(start, end);
    client.submit(&request("rds-window", vec![set])).await.unwrap();
    let summary = final_summary(&client, "rds-window").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.tasks.len(), 2, "{summary:#?}");
    let mut names: Vec<String> = summary.tasks.iter().flat_map(|t| t.created_resource_ids.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 2, "one database per snapshot: {names:?}");
    for name in &names {
        assert!(name.starts_with("ledger-restored-2"), "{name} is ledger-restored-<yyyymmddhhmmss>");
        let restored = rds.describe_db_instances().db_instance_identifier(name).send().await.unwrap();
        let db = &restored.db_instances()[0];
        // Field by field, what moto reflects on a restored instance.
        let group = db.db_parameter_groups().first().and_then(|g| g.db_parameter_group_name());
        assert_eq!(group, Some("ledger-params"), "{name}");
        assert_eq!(db.db_subnet_group().and_then(|g| g.db_subnet_group_name()), Some("restore-subnets"));
        assert_eq!(db.multi_az(), Some(true));
        assert_eq!(db.endpoint().and_then(|e| e.port()), Some(5433));
        assert_eq!(db.storage_type(), Some("io1"));
        assert_eq!(db.iops(), Some(1000));
        assert_eq!(db.iam_database_authentication_enabled(), Some(true));
        assert_eq!(db.copy_tags_to_snapshot(), Some(true));
        assert_eq!(db.enabled_cloudwatch_logs_exports(), ["postgresql".to_string()]);
    }

    // The same restore in the source's account without a name is refused, naming the field.
    let mut unnamed = rds_set("unnamed", pb::ResourceType::RdsInstance, target(""));
    unnamed.source.as_mut().unwrap().names = vec!["ledger".into()];
    client.submit(&request("rds-unnamed", vec![unnamed])).await.unwrap();
    let refused = final_summary(&client, "rds-unnamed").await;
    assert_eq!(verdict(&refused), pb::Verdict::Rejected);
    let rejection = refused.rejection.unwrap_or_default();
    assert!(rejection.errors.iter().any(|e| e.field == "restore_sets[0].target.rds.name"), "{rejection:?}");

    // A setting that cannot be applied is a named warning: restored in us-west-2 (from a copy
    // of the snapshot), where the source's parameter group does not exist.
    let west = Client::new(&servers.aws("us-west-2"));
    let west_ec2 = servers.ec2("us-west-2");
    let vpc = west_ec2.create_vpc().cidr_block("10.3.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.3.1.0/24", "us-west-2a"), ("10.3.2.0/24", "us-west-2b")] {
        let subnet =
            west_ec2.create_subnet().vpc_id(&vpc_id).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    west.create_db_subnet_group()
        .db_subnet_group_name("west-subnets")
        .db_subnet_group_description("restores")
        .set_subnet_ids(Some(subnets))
        .send()
        .await
        .unwrap();
    let west_target = pb::RdsTarget {
        region: "us-west-2".into(),
        db_subnet_group: "west-subnets".into(),
        ..target("audit-restored")
    };
    let mut audit = rds_set("audit", pb::ResourceType::RdsInstance, west_target);
    let source = audit.source.as_mut().unwrap();
    source.tags = [("app".to_string(), "ledger".to_string())].into();
    source.names = vec!["audit".into()];
    client.submit(&request("rds-audit", vec![audit])).await.unwrap();
    let summary = final_summary(&client, "rds-audit").await;
    assert_eq!(verdict(&summary), pb::Verdict::CompletedWithWarnings, "{summary:#?}");
    let task = &summary.tasks[0];
    assert_eq!(task.phase, pb::TaskPhase::Succeeded as i32);
    assert_eq!(task.reason_code, "SETTINGS_NOT_RESTORED");
    assert!(task.message.contains("db_parameter_group (audit-params"), "{}", task.message);
    let restored = west.describe_db_instances().db_instance_identifier("audit-restored").send().await.unwrap();
    let db = &restored.db_instances()[0];
    assert_eq!(db.multi_az(), Some(true), "the other settings are applied");
    assert_eq!(db.endpoint().and_then(|e| e.port()), Some(5433));

    // Lifeboat's own copy in us-west-2 is tagged as such and never planned as a backup of its own.
    let copies = west.describe_db_snapshots().snapshot_type("manual").send().await.unwrap();
    let copy =
        copies.db_snapshots().iter().find(|s| s.db_snapshot_identifier().is_some_and(|id| id.starts_with("lifeboat-")));
    let copy = copy.expect("the cross-region copy");
    assert!(copy.tag_list().iter().any(|t| t.key() == Some(lifeboat_rds::TAG_RESTORE_COPY)), "{copy:?}");
    let mut again = rds_set("again", pb::ResourceType::RdsInstance, target("audit-again"));
    let source = again.source.as_mut().unwrap();
    source.region = "us-west-2".into();
    source.tags.clear();
    source.names = vec!["audit".into()];
    let mut plan = request("rds-copies", vec![again]);
    plan.dry_run = true;
    client.submit(&plan).await.unwrap();
    let planned = final_summary(&client, "rds-copies").await;
    assert_eq!(planned.tasks[0].reason_code, "NO_MATCHING_BACKUPS", "{planned:#?}");
}

const OTHER: &str = "111111111111";

#[tokio::test]
async fn another_account_gets_the_snapshot_shared_and_encrypted_ones_need_a_key() {
    init_logging();
    let servers = Servers::start().await;
    let rds = Client::new(&servers.aws("us-east-1"));
    subnet_group(&servers, &rds).await;
    database_with_settings(&rds, "ledger", "ledger-params").await;
    rds.create_db_snapshot()
        .db_instance_identifier("ledger")
        .db_snapshot_identifier("ledger-nightly")
        .tags(tag("app", "ledger"))
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier("vault")
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .storage_encrypted(true)
        .tags(tag("app", "vault"))
        .send()
        .await
        .unwrap();
    rds.create_db_snapshot()
        .db_instance_identifier("vault")
        .db_snapshot_identifier("vault-nightly")
        .tags(tag("app", "vault"))
        .send()
        .await
        .unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let elsewhere =
        pb::RdsTarget { account_id: OTHER.into(), db_subnet_group: "other-subnets".into(), ..Default::default() };
    let mut ledger = rds_set("ledger", pb::ResourceType::RdsInstance, elsewhere.clone());
    let source = ledger.source.as_mut().unwrap();
    source.tags = [("app".to_string(), "ledger".to_string())].into();
    source.names = vec!["ledger".into()];
    let mut vault = rds_set("vault", pb::ResourceType::RdsInstance, elsewhere);
    let source = vault.source.as_mut().unwrap();
    source.tags = [("app".to_string(), "vault".to_string())].into();
    let mut plan = request("rds-other-plan", vec![ledger.clone(), vault]);
    plan.dry_run = true;
    client.submit(&plan).await.unwrap();
    let planned = final_summary(&client, "rds-other-plan").await;
    let vault = planned.tasks.iter().find(|t| t.set_name == "vault").unwrap();
    assert_eq!(
        (vault.phase, vault.reason_code.as_str()),
        (pb::TaskPhase::Failed as i32, "ENCRYPTED_WITHOUT_TARGET_KEY")
    );
    assert!(vault.message.contains("set 'vault'"), "{}", vault.message);

    client.submit(&request("rds-other", vec![ledger])).await.unwrap();
    let summary = final_summary(&client, "rds-other").await;
    let attributes =
        rds.describe_db_snapshot_attributes().db_snapshot_identifier("ledger-nightly").send().await.unwrap();
    let restore = attributes.db_snapshot_attributes_result().unwrap().db_snapshot_attributes();
    let shared_with = restore.iter().find(|a| a.attribute_name() == Some("restore")).unwrap().attribute_values();
    assert_eq!(shared_with, [OTHER.to_string()], "shared with the target account");
    let accounts = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "LifeboatRestoreRole");
    let other = Client::new(&accounts.config_for(OTHER, "us-east-1").await.unwrap());
    let visible = other.describe_db_snapshots().snapshot_type("shared").send().await.unwrap();
    assert!(
        visible
            .db_snapshots()
            .iter()
            .any(|s| s.db_snapshot_arn().is_some_and(|a| a.ends_with(":snapshot:ledger-nightly"))),
        "the target account sees the shared snapshot"
    );
    // No target name in another account: the source's identifier is kept
    // (`mocks::rds::rds_targets_keep_the_source_name_elsewhere_stamp_window_backups_and_inherit_in_place`).
    // moto 5.2.5 cannot restore from another account's snapshot ARN (it looks the name up in the
    // caller's own account), so the task ends there; the same step against the real SDK types
    // is `mocks::rds_another_account_restores_from_the_shared_snapshot_arn`.
    let task = &summary.tasks[0];
    assert_eq!(task.source_backup_id, "ledger-nightly");
    assert_eq!(task.reason_code, "DBSnapshotNotFound", "moto's limit, see above: {task:?}");
    assert!(task.message.contains("ledger-nightly"), "{}", task.message);
}

#[tokio::test]
async fn an_aurora_cluster_comes_back_with_a_writer_of_the_source_writers_class_and_its_settings() {
    init_logging();
    let servers = Servers::start().await;
    let rds = Client::new(&servers.aws("us-east-1"));
    subnet_group(&servers, &rds).await;
    rds.create_db_cluster_parameter_group()
        .db_cluster_parameter_group_name("reports-cluster-params")
        .db_parameter_group_family("aurora-postgresql13")
        .description("tuned")
        .send()
        .await
        .unwrap();
    rds.create_db_cluster()
        .db_cluster_identifier("reports")
        .engine("aurora-postgresql")
        .master_username("admin")
        .master_user_password("correct-horse-battery")
        .db_subnet_group_name("restore-subnets")
        .db_cluster_parameter_group_name("reports-cluster-params")
        .port(5440)
        .enable_iam_database_authentication(true)
        .copy_tags_to_snapshot(true)
        .enable_cloudwatch_logs_exports("postgresql")
        .tags(tag("app", "reports"))
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier("reports-1")
        .db_cluster_identifier("reports")
        .engine("aurora-postgresql")
        .db_instance_class("db.r6g.xlarge")
        .send()
        .await
        .unwrap();
    rds.create_db_cluster_snapshot()
        .db_cluster_identifier("reports")
        .db_cluster_snapshot_identifier("reports-nightly")
        .tags(tag("app", "reports"))
        .send()
        .await
        .unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    // No instance class and no subnet group: the source writer's class, the source's group.
    let target = pb::RdsTarget { name: "reports-restored".into(), ..Default::default() };
    let mut set = rds_set("reports", pb::ResourceType::RdsCluster, target);
    let source = set.source.as_mut().unwrap();
    source.tags = [("app".to_string(), "reports".to_string())].into();
    source.names = vec!["reports".into()];
    client.submit(&request("rds-cluster", vec![set])).await.unwrap();
    let summary = final_summary(&client, "rds-cluster").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.tasks[0].created_resource_ids, ["reports-restored", "reports-restored-writer"]);
    let clusters = rds.describe_db_clusters().db_cluster_identifier("reports-restored").send().await.unwrap();
    let cluster = &clusters.db_clusters()[0];
    assert_eq!(cluster.db_cluster_parameter_group(), Some("reports-cluster-params"));
    assert_eq!(cluster.db_subnet_group(), Some("restore-subnets"));
    assert_eq!(cluster.port(), Some(5440));
    assert_eq!(cluster.iam_database_authentication_enabled(), Some(true));
    assert_eq!(cluster.copy_tags_to_snapshot(), Some(true));
    assert_eq!(cluster.enabled_cloudwatch_logs_exports(), ["postgresql".to_string()]);
    let writer = rds.describe_db_instances().db_instance_identifier("reports-restored-writer").send().await.unwrap();
    assert_eq!(writer.db_instances()[0].db_instance_class(), Some("db.r6g.xlarge"));
}
