//! Clumio bulk restore input: converted field by field, and run to the same result as the
//! equivalent Lifeboat request.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use lifeboat_cli::{clumio, request_file};
use lifeboat_common::subjects::TAG_REQUEST_ID;
use lifeboat_proto as pb;
use lifeboat_tests::*;
use serde_json::json;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 15, 30, 0).unwrap()
}

fn point(set: &pb::RestoreSet) -> (i64, i32) {
    match &set.source.as_ref().unwrap().selection {
        Some(pb::source::Selection::PointInTime(p)) => (p.time.unwrap().seconds, p.direction),
        other => panic!("expected a point in time, got {other:?}"),
    }
}

fn convert(document: serde_json::Value) -> Result<pb::RestoreRequest, String> {
    clumio::convert(&document, "clumio-1".into(), now()).map_err(|e| e.to_string())
}

#[test]
fn restore_groups_convert_with_defaults_day_offsets_and_every_target() {
    let request = convert(json!({
        "clumio_token": "",
        "base_url": "us-west-2.api.clumio.com",
        "DefaultInput": {"source_account": "111222333444", "source_region": "us-east-1", "target_account": "222333444555", "target_region": "us-east-2"},
        "RestoreGroups": [
            {"ResourceType": "EC2", "search_direction": "after", "search_tag_key": "Name", "search_tag_value": "test22",
             "start_search_day_offset": 10, "end_search_day_offset": 0, "target_az": "us-east-2a",
             "target_key_pair_name": "key", "target_security_group_native_ids": ["sg-1", "sg-2"],
             "target_subnet_native_id": "subnet-1", "target_vpc_native_id": "vpc-1", "target_iam_instance_profile_name": ""},
            {"ResourceType": "EBS", "source_region": "[This field will follow default input]", "search_direction": "before",
             "end_search_day_offset": "2", "target_az": "us-east-2b", "target_iops": "", "target_volume_type": "",
             "target_kms_key_native_id": "key-1"},
            {"ResourceType": "DynamoDB", "search_direction": "before", "change_set_name": "br5", "target_region": "us-west-2"},
            {"ResourceType": "RDS", "target_subnet_group_name": "group-1", "target_rds_name": "orders-restored",
             "target_security_group_native_id": "sg-9"}
        ]
    }))
    .unwrap();
    assert_eq!(request.restore_sets.len(), 4);
    let [ec2, ebs, dynamodb, rds] = &request.restore_sets[..] else { unreachable!() };
    assert_eq!(ec2.name, "ec2-0");
    let source = ec2.source.as_ref().unwrap();
    assert_eq!(
        (source.account_id.as_str(), source.region.as_str()),
        ("111222333444", "us-east-1"),
        "from DefaultInput"
    );
    assert_eq!(source.tags.get("Name").map(String::as_str), Some("test22"));
    // after, 10 days: the oldest backup from midnight ten days ago.
    assert_eq!(
        point(ec2),
        (Utc.with_ymd_and_hms(2026, 11, 11, 0, 0, 0).unwrap().timestamp(), pb::SearchDirection::After as i32)
    );
    let target = ec2.target.as_ref().unwrap().ec2.as_ref().unwrap();
    assert_eq!(target.security_group_ids, ["sg-1", "sg-2"]);
    assert_eq!(
        (target.vpc_id.as_str(), target.subnet_id.as_str(), target.account_id.as_str()),
        ("vpc-1", "subnet-1", "222333444555")
    );

    // before, 2 days: the newest backup up to the end of the day two days ago.
    assert_eq!(
        point(ebs),
        (Utc.with_ymd_and_hms(2026, 11, 19, 23, 59, 59).unwrap().timestamp(), pb::SearchDirection::Before as i32)
    );
    assert_eq!(ebs.source.as_ref().unwrap().region, "us-east-1", "the placeholder follows DefaultInput");
    let target = ebs.target.as_ref().unwrap().ebs.as_ref().unwrap();
    assert_eq!(
        (target.availability_zone.as_str(), target.iops, target.kms_key_id.as_str()),
        ("us-east-2b", None, "key-1")
    );
    assert_eq!(ebs.resource_types, [pb::ResourceType::EbsVolume as i32]);

    let target = dynamodb.target.as_ref().unwrap().dynamodb.as_ref().unwrap();
    assert_eq!((target.name_suffix.as_str(), target.region.as_str()), ("br5", "us-west-2"), "a group's own value wins");
    let target = rds.target.as_ref().unwrap().rds.as_ref().unwrap();
    assert_eq!((target.db_subnet_group.as_str(), target.name.as_str()), ("group-1", "orders-restored"));
    assert_eq!(target.security_group_ids, ["sg-9"]);
}

#[test]
fn clumio_problems_are_reported_by_field() {
    let ebs = |extra: serde_json::Value| {
        let mut group = json!({"ResourceType": "EBS", "source_account": "111222333444", "source_region": "us-east-1",
                                "target_account": "111222333444", "target_region": "us-east-1", "target_az": "us-east-1a"});
        group.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        convert(json!({"RestoreGroups": [group]}))
    };
    assert!(ebs(json!({})).is_ok());
    assert!(ebs(json!({"target_az": ""}))
        .unwrap_err()
        .starts_with("RestoreGroups[0].target_az: is required to restore EBS"));
    assert!(ebs(json!({"target_color": "red"}))
        .unwrap_err()
        .starts_with("RestoreGroups[0].target_color: unknown field"));
    assert!(ebs(json!({"target_vpc_native_id": "vpc-1"})).unwrap_err().contains("does not apply to EBS"));
    assert!(ebs(json!({"target_iops": "lots"}))
        .unwrap_err()
        .starts_with("RestoreGroups[0].target_iops: 'lots' is not a whole number"));
    assert!(ebs(json!({"search_direction": "sideways"})).unwrap_err().starts_with("RestoreGroups[0].search_direction"));
    assert!(ebs(json!({"ResourceType": "Tape"})).unwrap_err().contains("unknown resource type 'Tape'"));
    assert!(ebs(json!({"ResourceType": "ProtectionGroup"})).unwrap_err().contains("not supported"));
    let rds = convert(json!({"RestoreGroups": [{"ResourceType": "RDS", "target_subnet_group_name": "g"}]}));
    assert!(rds.unwrap_err().starts_with("RestoreGroups[0].target_rds_name: is required to restore RDS"));
    let flat =
        convert(json!({"ResourceType": "DynamoDB", "source_account": "111222333444", "source_region": "us-east-1"}));
    assert!(flat.unwrap_err().starts_with("change_set_name: is required"), "the flat form names bare fields");
}

async fn a_clumio_request_restores_the_same_as_its_native_equivalent(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let mut volumes = Vec::new();
    for i in 0..2 {
        let volume = create_volume(&east, "us-east-1a", 8, &[("Dev", "Yes"), ("n", &i.to_string())]).await;
        create_snapshot(&east, &volume, &[("Dev", "Yes")]).await;
        volumes.push(volume);
    }
    // moto stamps whole seconds: the newer snapshots must be a second later to be newer.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut newest = BTreeSet::new();
    for volume in &volumes {
        newest.insert(create_snapshot(&east, volume, &[("Dev", "Yes")]).await);
    }
    let other = create_volume(&east, "us-east-1a", 8, &[("Dev", "No")]).await;
    create_snapshot(&east, &other, &[("Dev", "No")]).await;
    let ddb = aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1"));
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    ddb.create_table()
        .table_name("carts")
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .tags(aws_sdk_dynamodb::types::Tag::builder().key("Dev").value("Yes").build().unwrap())
        .send()
        .await
        .unwrap();
    let backup = ddb.create_backup().table_name("carts").backup_name("nightly").send().await.unwrap();
    let backup_arn = backup.backup_details().unwrap().backup_arn().to_string();
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;

    let clumio_json = json!({"RestoreGroups": [{
        "ResourceType": "EBS", "source_account": ACCOUNT, "source_region": "us-east-1",
        "search_direction": "before", "search_tag_key": "Dev", "search_tag_value": "Yes",
        "start_search_day_offset": 0, "end_search_day_offset": 0,
        "target_account": ACCOUNT, "target_region": "us-east-1", "target_az": "us-east-1b",
        "target_iops": "", "target_volume_type": "", "target_kms_key_native_id": ""
    }, {
        "ResourceType": "DynamoDB", "source_account": ACCOUNT, "source_region": "us-east-1",
        "search_direction": "before", "search_tag_key": "Dev", "search_tag_value": "Yes",
        "target_account": ACCOUNT, "target_region": "us-east-1", "change_set_name": "clumio"
    }]});
    let native_yaml = format!(
        "restore_sets:\n  - name: ebs-0\n    source: {{account_id: \"{ACCOUNT}\", region: us-east-1, tags: {{Dev: \"Yes\"}}}}\n    \
         resource_types: [ebs]\n    target: {{ebs: {{account_id: \"{ACCOUNT}\", region: us-east-1, availability_zone: us-east-1b}}}}\n  \
         - name: dynamodb-1\n    source: {{account_id: \"{ACCOUNT}\", region: us-east-1, tags: {{Dev: \"Yes\"}}}}\n    \
         resource_types: [dynamodb]\n    target: {{dynamodb: {{name_suffix: native}}}}\n"
    );
    let from_clumio = request_file::load("bulk.json", &clumio_json.to_string(), "from-clumio".into()).unwrap();
    let native = request_file::load("bulk.yaml", &native_yaml, "from-native".into()).unwrap();
    let mut restored = Vec::new();
    for request in [from_clumio, native] {
        client.submit(&request).await.unwrap();
        let summary = final_summary(&client, &request.request_id).await;
        assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
        let volumes = volumes_tagged(&east, TAG_REQUEST_ID, &request.request_id).await;
        let from: BTreeSet<String> = volumes.iter().map(|v| v.snapshot_id().unwrap().to_string()).collect();
        assert!(volumes.iter().all(|v| v.availability_zone() == Some("us-east-1b")));
        restored.push(from);
    }
    assert_eq!(restored[0], newest, "the newest Dev=Yes snapshot of every volume, not just the first");
    assert_eq!(restored[0], restored[1], "Clumio input and native input restore the same backups");
    for table in ["carts-clumio", "carts-native"] {
        let restored = ddb.describe_table().table_name(table).send().await.unwrap();
        assert_eq!(
            restored.table().unwrap().restore_summary().unwrap().source_backup_arn(),
            Some(backup_arn.as_str()),
            "{table}"
        );
    }
}

on_both_transports!(a_clumio_request_restores_the_same_as_its_native_equivalent,);
