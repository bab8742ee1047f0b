//! The catalog (`lifeboat backups list`) against a seeded world in moto: it lists exactly the
//! restorable backups of the selection, in the source region and the DR region, with copies
//! and sizes, the backups of a deleted volume, a table's point-in-time window, and nothing
//! that is not a backup of the selection (other tags, Lifeboat's own restore-time copies).

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::PointInTimeRecoverySpecification;
use aws_sdk_ec2::types::{ResourceType as Ec2ResourceType, TagSpecification};
use lifeboat_discovery::catalog::{self, Query};
use lifeboat_proto as pb;
use lifeboat_tests::*;

const WEB: &[(&str, &str)] = &[("app", "web")];

async fn table_with_backup(ddb: &aws_sdk_dynamodb::Client, name: &str, tags: &[(&str, &str)]) -> String {
    fixtures::create_table(ddb, name, tags).await;
    ddb.update_continuous_backups()
        .table_name(name)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder().point_in_time_recovery_enabled(true).build().unwrap(),
        )
        .send()
        .await
        .expect("enable PITR");
    let backup = ddb.create_backup().table_name(name).backup_name(format!("{name}-b1")).send().await.unwrap();
    backup.backup_details().unwrap().backup_arn().to_string()
}

#[tokio::test]
async fn backups_list_shows_exactly_the_restorable_backups() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let west = servers.ec2("us-west-2");

    // Two volumes of the app with backups; one of them is deleted afterwards.
    let kept = create_volume(&east, "us-east-1a", 8, WEB).await;
    let kept_old = create_snapshot(&east, &kept, WEB).await;
    let kept_new = create_snapshot(&east, &kept, WEB).await;
    let deleted = create_volume(&east, "us-east-1b", 4, WEB).await;
    let deleted_snapshot = create_snapshot(&east, &deleted, WEB).await;
    east.delete_volume().volume_id(&deleted).send().await.unwrap();
    // Another app's volume: not in the selection.
    let other = create_volume(&east, "us-east-1a", 2, &[("app", "billing")]).await;
    create_snapshot(&east, &other, &[("app", "billing")]).await;
    // The DR region: a copy of the kept volume's newest snapshot, as a DR copy job makes it.
    let copy = west
        .copy_snapshot()
        .source_region("us-east-1")
        .source_snapshot_id(&kept_new)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(Ec2ResourceType::Snapshot)
                .tags(aws_sdk_ec2::types::Tag::builder().key("app").value("web").build())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    // A copy Lifeboat made while restoring: never a backup of its own.
    let restore_copy = west
        .copy_snapshot()
        .source_region("us-east-1")
        .source_snapshot_id(&kept_old)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(Ec2ResourceType::Snapshot)
                .tags(aws_sdk_ec2::types::Tag::builder().key("app").value("web").build())
                .tags(aws_sdk_ec2::types::Tag::builder().key("lifeboat:task-id").value("t-0123456789ab").build())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    // A table of the app with an on-demand backup and point-in-time recovery.
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"));
    let table_backup = table_with_backup(&ddb, "orders", WEB).await;
    table_with_backup(&ddb, "invoices", &[("app", "billing")]).await;

    let accounts = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "LifeboatRestoreRole");
    let query = Query {
        source: pb::Source {
            region: "us-east-1".into(),
            tags: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        },
        resource_types: vec![pb::ResourceType::EbsVolume, pb::ResourceType::DynamodbTable],
        copy_regions: vec!["us-west-2".into()],
    };
    let entries = catalog::list(&accounts, &query).await.expect("catalog");

    let backups: BTreeSet<(String, String, String)> = entries
        .iter()
        .filter(|e| e.kind == "backup")
        .map(|e| (e.resource_type.clone(), e.region.clone(), e.backup_id.clone()))
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("ebs", "us-east-1", kept_old.as_str()),
        ("ebs", "us-east-1", kept_new.as_str()),
        ("ebs", "us-east-1", deleted_snapshot.as_str()),
        ("ebs", "us-west-2", copy.as_str()),
        ("dynamodb", "us-east-1", table_backup.as_str()),
    ]
    .into_iter()
    .map(|(t, r, b)| (t.to_string(), r.to_string(), b.to_string()))
    .collect();
    assert_eq!(backups, expected, "exactly the restorable backups (not {restore_copy}, not other apps')");

    // Per resource: the kept volume's backups show the DR copy's region, the deleted one's none.
    let kept_entry = entries.iter().find(|e| e.backup_id == kept_new).unwrap();
    assert_eq!(kept_entry.source_resource_id, kept);
    assert_eq!(kept_entry.copies_in, vec!["us-west-2".to_string()]);
    assert_eq!(kept_entry.size_gib, 8);
    let deleted_entry = entries.iter().find(|e| e.backup_id == deleted_snapshot).unwrap();
    assert_eq!(deleted_entry.source_resource_id, deleted);
    assert!(deleted_entry.copies_in.is_empty());
    assert!(entries.iter().all(|e| e.created_at.is_some()), "every entry has a time");
    // The table's point-in-time window.
    let continuous: Vec<_> = entries.iter().filter(|e| e.kind == "continuous").collect();
    assert_eq!(continuous.len(), 1, "{continuous:?}");
    assert_eq!(continuous[0].source_resource_id, "orders");
    assert!(continuous[0].note.contains("restorable"), "{}", continuous[0].note);

    // The same through the command a user types, as JSON.
    let output = tokio::process::Command::new(crate::traces::lifeboat_binary())
        .args(["backups", "list", "--source", "us-east-1", "--tag", "app=web", "--type", "ebs"])
        .args(["--copies-in", "us-west-2", "--output", "json"])
        .env_remove("AWS_PROFILE")
        .env("AWS_ENDPOINT_URL", &servers.moto_url)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .await
        .expect("run lifeboat backups list");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON list");
    let ids: BTreeSet<String> = listed.iter().map(|e| e["backupId"].as_str().unwrap().to_string()).collect();
    let ebs: BTreeSet<String> = expected.iter().filter(|(t, _, _)| t == "ebs").map(|(_, _, b)| b.clone()).collect();
    assert_eq!(ids, ebs);
    let kept_json = listed.iter().find(|e| e["backupId"] == kept_new.as_str()).unwrap();
    assert_eq!(kept_json["copiesIn"], serde_json::json!(["us-west-2"]));
    assert_eq!(kept_json["sizeGib"], 8);
}
