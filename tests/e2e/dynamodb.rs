//! DynamoDB restores end to end: from a backup and by point-in-time recovery, with the settings
//! a DynamoDB restore drops put back, and a target name that is taken; deleted tables found by
//! their backups and selected by name patterns; a cross-account set refused at plan time.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    ScalarAttributeType, StreamSpecification, StreamViewType, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;
use lifeboat_proto as pb;
use lifeboat_tests::*;

/// A table like a production one: tagged, with TTL, point-in-time recovery, a stream, an item.
async fn create_table(ddb: &Client, name: &str, tags: &[(&str, &str)]) -> String {
    let table = ddb
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap()).collect()))
        .send()
        .await
        .expect("create table");
    ddb.update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().enabled(true).attribute_name("expires_at").build().unwrap(),
        )
        .send()
        .await
        .expect("enable TTL");
    ddb.update_continuous_backups()
        .table_name(name)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder().point_in_time_recovery_enabled(true).build().unwrap(),
        )
        .send()
        .await
        .expect("enable PITR");
    ddb.put_item()
        .table_name(name)
        .item("id", AttributeValue::S("order-1".into()))
        .item("total", AttributeValue::N("42".into()))
        .send()
        .await
        .expect("put item");
    table.table_description().unwrap().table_arn().unwrap().to_string()
}

fn dynamodb_set(name: &str, tags: &[(&str, &str)], suffix: &str) -> pb::RestoreSet {
    let mut set = ebs_set(name, "us-east-1", tags, None, Default::default());
    set.resource_types = vec![pb::ResourceType::DynamodbTable as i32];
    set.target = Some(pb::Targets {
        dynamodb: Some(pb::DynamoDbTarget {
            name_suffix: suffix.into(),
            tags: [("restored-by".to_string(), "lifeboat".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    set
}

async fn tags_of_table(ddb: &Client, arn: &str) -> std::collections::HashMap<String, String> {
    let tags = ddb.list_tags_of_resource().resource_arn(arn).send().await.unwrap();
    tags.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

/// What a user checks on a restored table: it is there, from the right source, with its data
/// and every setting of the source.
async fn assert_restored_like_the_source(ddb: &Client, name: &str, request_id: &str) {
    let table = ddb.describe_table().table_name(name).send().await.expect("restored table exists");
    let table = table.table().unwrap();
    let arn = table.table_arn().unwrap();
    let tags = tags_of_table(ddb, arn).await;
    assert_eq!(tags.get("app").map(String::as_str), Some("shop"), "source tags: {tags:?}");
    assert_eq!(tags.get("team").map(String::as_str), Some("payments"));
    assert_eq!(tags.get("restored-by").map(String::as_str), Some("lifeboat"));
    assert_eq!(tags.get("lifeboat:request-id").map(String::as_str), Some(request_id));
    let ttl = ddb.describe_time_to_live().table_name(name).send().await.unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    let pitr = ddb.describe_continuous_backups().table_name(name).send().await.unwrap();
    let pitr = pitr.continuous_backups_description().unwrap().point_in_time_recovery_description().unwrap();
    assert_eq!(pitr.point_in_time_recovery_status().map(|s| s.as_str()), Some("ENABLED"));
    let stream = table.stream_specification().expect("stream restored");
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type(), Some(&StreamViewType::NewAndOldImages));
    let items = ddb.scan().table_name(name).send().await.unwrap();
    assert_eq!(items.count(), 1, "the data came back");
}

async fn a_table_comes_back_from_its_backup_with_tags_ttl_pitr_and_stream(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let ddb = Client::new(&servers.aws("us-east-1"));
    create_table(&ddb, "orders", &[("app", "shop"), ("team", "payments")]).await;
    let backup = ddb.create_backup().table_name("orders").backup_name("nightly").send().await.unwrap();
    let backup_arn = backup.backup_details().unwrap().backup_arn().to_string();
    create_table(&ddb, "logs", &[("app", "other")]).await;
    ddb.create_backup().table_name("logs").backup_name("nightly").send().await.unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    client.submit(&request("ddb-1", vec![dynamodb_set("tables", &[("app", "shop")], "restored")])).await.unwrap();
    let summary = final_summary(&client, "ddb-1").await;

    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.tasks.len(), 1, "only the table with app=shop");
    assert_eq!(summary.tasks[0].source_backup_id, backup_arn);
    assert_restored_like_the_source(&ddb, "orders-restored", "ddb-1").await;
    let restored = ddb.describe_table().table_name("orders-restored").send().await.unwrap();
    assert_eq!(restored.table().unwrap().restore_summary().unwrap().source_backup_arn(), Some(backup_arn.as_str()));
    assert!(ddb.describe_table().table_name("logs-restored").send().await.is_err(), "logs was not selected");
}

async fn point_in_time_recovery_restores_the_table_state_and_a_taken_name_fails_clearly(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let ddb = Client::new(&servers.aws("us-east-1"));
    let source_arn = create_table(&ddb, "orders", &[("app", "shop"), ("team", "payments")]).await;
    ddb.create_backup().table_name("orders").backup_name("nightly").send().await.unwrap();
    // Someone else's table already has the name the second set would restore to.
    create_table(&ddb, "orders-taken", &[("owner", "someone-else")]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let mut pitr = dynamodb_set("pitr", &[("app", "shop")], "pitr");
    let source = pitr.source.as_mut().unwrap();
    source.point_in_time_recovery = true;
    source.selection = before(chrono::Utc::now());
    let taken = dynamodb_set("taken", &[("app", "shop")], "taken");
    client.submit(&request("ddb-pitr", vec![pitr, taken])).await.unwrap();
    let summary = final_summary(&client, "ddb-pitr").await;

    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let task = |set: &str| summary.tasks.iter().find(|t| t.set_name == set).unwrap().clone();
    assert_eq!(task("pitr").phase, pb::TaskPhase::Succeeded as i32);
    assert!(
        task("pitr").selection_reason.starts_with("point-in-time recovery to"),
        "{}",
        task("pitr").selection_reason
    );
    let restored = ddb.describe_table().table_name("orders-pitr").send().await.unwrap();
    assert_eq!(restored.table().unwrap().restore_summary().unwrap().source_table_arn(), Some(source_arn.as_str()));
    assert_restored_like_the_source(&ddb, "orders-pitr", "ddb-pitr").await;
    // The taken name: a clear failure with a code, and the other table left alone.
    let failed = task("taken");
    assert_eq!(failed.phase, pb::TaskPhase::Failed as i32);
    assert_eq!(failed.reason_code, "TargetTableExists", "{failed:?}");
    let theirs = ddb.describe_table().table_name("orders-taken").send().await.unwrap();
    let tags = tags_of_table(&ddb, theirs.table().unwrap().table_arn().unwrap()).await;
    assert!(!tags.contains_key("lifeboat:request-id"), "someone else's table is not touched: {tags:?}");
}

/// A set restoring the tables whose names match `names`.
fn dynamodb_names_set(name: &str, names: &[&str], tags: &[(&str, &str)], suffix: &str) -> pb::RestoreSet {
    let mut set = dynamodb_set(name, tags, suffix);
    let source = set.source.as_mut().unwrap();
    source.names = names.iter().map(|n| n.to_string()).collect();
    source.all_resources = false;
    set
}

async fn a_deleted_table_comes_back_from_its_backup_selected_by_name(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let ddb = Client::new(&servers.aws("us-east-1"));
    // The incident: `orders` was backed up, then deleted.
    create_table(&ddb, "orders", &[("app", "shop"), ("team", "payments")]).await;
    ddb.put_item()
        .table_name("orders")
        .item("id", AttributeValue::S("order-2".into()))
        .send()
        .await
        .expect("second item");
    let backup = ddb.create_backup().table_name("orders").backup_name("before-incident").send().await.unwrap();
    let deleted_backup_arn = backup.backup_details().unwrap().backup_arn().to_string();
    ddb.delete_table().table_name("orders").send().await.expect("delete the table");
    // Still there: another `orders*` table, and tables the patterns do not name.
    create_table(&ddb, "orders-eu", &[("app", "shop"), ("team", "payments")]).await;
    ddb.create_backup().table_name("orders-eu").backup_name("nightly").send().await.unwrap();
    create_table(&ddb, "logs", &[("app", "shop")]).await;
    ddb.create_backup().table_name("logs").backup_name("nightly").send().await.unwrap();
    create_table(&ddb, "archive", &[]).await;
    ddb.create_backup().table_name("archive").backup_name("last").send().await.unwrap();
    ddb.delete_table().table_name("archive").send().await.unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let sets = vec![
        dynamodb_names_set("by-pattern", &["orders*"], &[], "restored"),
        // Tags and a name: the deleted table's tags are unknown, so its name decides.
        dynamodb_names_set("by-name-and-tags", &["orders"], &[("app", "shop")], "named"),
        // Tags only: a deleted table without known tags cannot be told apart, so only existing ones.
        dynamodb_names_set("by-tags", &[], &[("app", "shop"), ("team", "payments")], "tagged"),
    ];
    client.submit(&request("ddb-deleted", sets)).await.unwrap();
    let summary = final_summary(&client, "ddb-deleted").await;

    assert_eq!(verdict(&summary), pb::Verdict::CompletedWithWarnings, "{summary:#?}");
    let mut restored: Vec<(&str, &str)> =
        summary.tasks.iter().map(|t| (t.set_name.as_str(), t.source_resource_id.as_str())).collect();
    restored.sort();
    assert_eq!(
        restored,
        [
            ("by-name-and-tags", "orders"),
            ("by-pattern", "orders"),
            ("by-pattern", "orders-eu"),
            ("by-tags", "orders-eu")
        ]
    );
    for task in &summary.tasks {
        assert_eq!(task.phase, pb::TaskPhase::Succeeded as i32, "{task:?}");
    }
    let task = |set: &str, table: &str| {
        summary.tasks.iter().find(|t| t.set_name == set && t.source_resource_id == table).unwrap().clone()
    };

    // The deleted table: back from its backup, with its data and what its backup says about it.
    let deleted = task("by-pattern", "orders");
    assert_eq!(deleted.source_backup_id, deleted_backup_arn);
    assert!(
        deleted.selection_reason.contains("table orders no longer exists, restored from its on-demand backup"),
        "{}",
        deleted.selection_reason
    );
    let table = ddb.describe_table().table_name("orders-restored").send().await.expect("the deleted table is back");
    let table = table.table().unwrap();
    assert_eq!(table.restore_summary().unwrap().source_backup_arn(), Some(deleted_backup_arn.as_str()));
    // moto's DescribeBackup reports no SourceTableFeatureDetails (TTL, stream, SSE) and no billing
    // mode, so here there is nothing more to re-apply; the mocks tests cover what AWS reports.
    assert_eq!(ddb.scan().table_name("orders-restored").send().await.unwrap().count(), 2, "both items came back");
    let tags = tags_of_table(&ddb, table.table_arn().unwrap()).await;
    assert_eq!(tags.get("restored-by").map(String::as_str), Some("lifeboat"));
    assert_eq!(tags.get("lifeboat:source-resource-id").map(String::as_str), Some("orders"), "{tags:?}");
    // The one thing a user must know: the source's tags did not come back.
    assert_eq!(deleted.reason_code, "SETTINGS_NOT_RESTORED", "{deleted:?}");
    assert!(
        deleted
            .message
            .contains("not restored: source tags (table orders no longer exists and its backup carries none)"),
        "{}",
        deleted.message
    );

    let by_name = task("by-name-and-tags", "orders");
    assert!(by_name.selection_reason.contains("selected by name only: its tags are not known"), "{by_name:?}");
    assert!(ddb.describe_table().table_name("orders-named").send().await.is_ok());

    // The existing table: restored like any other, every setting of the source put back.
    let existing = task("by-pattern", "orders-eu");
    assert_eq!(existing.reason_code, "", "{existing:?}");
    assert!(!existing.selection_reason.contains("no longer exists"), "{}", existing.selection_reason);
    assert_restored_like_the_source(&ddb, "orders-eu-restored", "ddb-deleted").await;
    assert!(ddb.describe_table().table_name("orders-eu-tagged").send().await.is_ok());
    for absent in ["orders-tagged", "logs-restored", "archive-restored", "logs-tagged"] {
        assert!(ddb.describe_table().table_name(absent).send().await.is_err(), "{absent} was not selected");
    }
}

async fn a_cross_account_set_fails_at_plan_time_saying_what_to_do(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let ddb = Client::new(&servers.aws("us-east-1"));
    create_table(&ddb, "orders", &[("app", "shop")]).await;
    ddb.create_backup().table_name("orders").backup_name("nightly").send().await.unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let mut other_account = dynamodb_names_set("to-dr-account", &["orders"], &[], "dr");
    other_account.target.as_mut().unwrap().dynamodb.as_mut().unwrap().account_id = "210987654321".into();
    let same_account = dynamodb_names_set("in-place", &["orders"], &[], "copy");
    client.submit(&request("ddb-xacct", vec![other_account, same_account])).await.unwrap();
    let summary = final_summary(&client, "ddb-xacct").await;

    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let refused = summary.tasks.iter().find(|t| t.set_name == "to-dr-account").unwrap();
    assert_eq!(refused.phase, pb::TaskPhase::Failed as i32);
    assert_eq!(refused.reason_code, "CROSS_ACCOUNT_UNSUPPORTED", "{refused:?}");
    for needle in ["set 'to-dr-account'", "into account 210987654321", "AWS Backup"] {
        assert!(refused.message.contains(needle), "{needle}: {}", refused.message);
    }
    let done = summary.tasks.iter().find(|t| t.set_name == "in-place").unwrap();
    assert_eq!(done.phase, pb::TaskPhase::Succeeded as i32, "{done:?}");
    assert!(ddb.describe_table().table_name("orders-copy").send().await.is_ok());
    assert!(ddb.describe_table().table_name("orders-dr").send().await.is_err(), "nothing restored for the DR set");
}

on_both_transports!(
    a_table_comes_back_from_its_backup_with_tags_ttl_pitr_and_stream,
    point_in_time_recovery_restores_the_table_state_and_a_taken_name_fails_clearly,
    a_deleted_table_comes_back_from_its_backup_selected_by_name,
    a_cross_account_set_fails_at_plan_time_saying_what_to_do,
);
