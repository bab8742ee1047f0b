//! Clumio bulk restore input: Clumio's own published examples accepted unchanged (the files in
//! tests/fixtures/clumio), converted field by field, planned group by group by the real
//! services, and run to the same result as the equivalent Lifeboat request.

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
    let p = point_in_time(set);
    (p.time.unwrap().seconds, p.direction)
}

fn point_in_time(set: &pb::RestoreSet) -> pb::PointInTime {
    match &set.source.as_ref().unwrap().selection {
        Some(pb::source::Selection::PointInTime(p)) => *p,
        other => panic!("expected a point in time, got {other:?}"),
    }
}

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap().timestamp()
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
    // after, start 10 end 0: the oldest backup after midnight ten days ago, up to tonight.
    assert_eq!(point(ec2), (utc(2026, 11, 11, 0, 0, 1), pb::SearchDirection::After as i32));
    assert_eq!(point_in_time(ec2).until.map(|t| t.seconds), Some(utc(2026, 11, 21, 23, 59, 59)));
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
    assert!(ebs(json!({"start_search_day_offset": "soon"}))
        .unwrap_err()
        .starts_with("RestoreGroups[0].start_search_day_offset: 'soon' is not a whole number"));
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
    fixtures::create_table(&ddb, "carts", &[("Dev", "Yes")]).await;
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

/// Clumio's published example inputs, every version (tests/fixtures/clumio/PROVENANCE.md).
fn published_examples() -> Vec<(String, String)> {
    let files = fixtures("clumio", "json");
    assert!(files.len() >= 12, "the published examples are in tests/fixtures/clumio");
    files
}

fn load_example(name: &str, text: &str) -> pb::RestoreRequest {
    let id = format!("clumio-{}", &name[..18]);
    request_file::load(name, text, id).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn set<'a>(request: &'a pb::RestoreRequest, name: &str) -> &'a pb::RestoreSet {
    request.restore_sets.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no set {name}"))
}

#[test]
fn every_published_clumio_example_converts_unchanged() {
    let midnight = |days: i64| (Utc::now().date_naive() - chrono::Duration::days(days)).and_hms_opt(0, 0, 0).unwrap();
    let seconds = |days: i64, h: i64| (midnight(days).and_utc() + chrono::Duration::seconds(h)).timestamp();
    for (name, text) in published_examples() {
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        let request = load_example(&name, &text);
        let groups = match document.get("RestoreGroups") {
            Some(groups) => groups.as_array().unwrap().clone(),
            None => vec![document.clone()],
        };
        assert_eq!(request.restore_sets.len(), groups.len(), "{name}: one set per group");
        for (set, group) in request.restore_sets.iter().zip(&groups) {
            let (start, end) = (group["start_search_day_offset"].as_i64(), group["end_search_day_offset"].as_i64());
            let (start, end) = (start.unwrap(), end.unwrap());
            let p = point_in_time(set);
            let got = (p.time.unwrap().seconds, p.until.map(|t| t.seconds));
            if p.direction == pb::SearchDirection::After as i32 {
                // start < time <= end; most examples have start 0 and end 10, which Clumio
                // answers with nothing: read as "after today 00:00, no upper bound".
                let until = (end <= start).then(|| seconds(end, 86_399));
                assert_eq!(got, (seconds(start, 1), until), "{name} {}", set.name);
            } else {
                assert_eq!(got, (seconds(end, 86_399), None), "{name} {}", set.name);
            }
            assert!(!set.source.as_ref().unwrap().all_resources, "never implied");
        }
    }

    let files = published_examples();
    let text = |prefix: &str| files.iter().find(|(n, _)| n.starts_with(prefix)).unwrap().clone();

    // The first published file: one EC2 group at the top level, with no ResourceType.
    let (name, flat) = text("2024-09-25_f09f5b5");
    let request = load_example(&name, &flat);
    let ec2 = set(&request, "ec2-0");
    assert_eq!(ec2.resource_types, [pb::ResourceType::Ec2Instance as i32]);
    assert_eq!(ec2.target_role_arn, "arn:aws:iam::323724565630:role/323724565630-admin-role");
    let source = ec2.source.as_ref().unwrap();
    assert_eq!((source.account_id.as_str(), source.region.as_str()), ("323724565630", "us-east-2"));
    let target = ec2.target.as_ref().unwrap().ec2.as_ref().unwrap();
    assert_eq!((target.region.as_str(), target.availability_zone.as_str()), ("us-east-1", "us-east-1a"));

    // The current example (main): every field of every type.
    let (name, current) = text("2025-07-11_5bf24e3");
    let request = load_example(&name, &current);
    let names: Vec<&str> = request.restore_sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ec2-0", "ebs-1", "dynamodb-2", "protectiongroup-3", "rds-4"]);
    let ec2 = set(&request, "ec2-0");
    assert!(ec2.source.as_ref().unwrap().names.is_empty(), "a Clumio asset id selects nothing in AWS");
    let target = ec2.target.as_ref().unwrap().ec2.as_ref().unwrap();
    assert_eq!(target.security_group_ids, ["sg-0546facc66de12222"]);
    assert_eq!(target.key_pair_name, "zxxz-111222333444-ec2-key");
    assert!(target.leave_stopped, "should_power_on: false");
    assert_eq!(target.tags.get("key1").map(String::as_str), Some("value1"));
    let ebs = set(&request, "ebs-1").target.as_ref().unwrap().ebs.as_ref().unwrap();
    assert_eq!(
        (ebs.account_id.as_str(), ebs.region.as_str(), ebs.availability_zone.as_str(), ebs.iops),
        ("222333444555", "us-east-2", "us-east-2b", None)
    );
    assert_eq!((ebs.volume_type.as_str(), ebs.kms_key_id.as_str()), ("", "70720655-f8e5-4a73-9137-d6dc8a66543"));
    let dynamodb = set(&request, "dynamodb-2");
    assert!(dynamodb.source.as_ref().unwrap().tags.is_empty(), "search_tag_key \"\" means no tag");
    let pg = set(&request, "protectiongroup-3");
    assert_eq!(pg.resource_types, [pb::ResourceType::S3Bucket as i32]);
    let s3 = pg.target.as_ref().unwrap().s3.as_ref().unwrap();
    assert_eq!(
        (s3.account_id.as_str(), s3.region.as_str(), s3.bucket.as_str(), s3.prefix.as_str()),
        ("222333444555", "us-east-1", "bucket-name-3", "prefix/"),
        "the source region when no target_region is given"
    );
    assert_eq!(
        (s3.protection_group.as_str(), &s3.source_buckets[..]),
        ("protection-group-1", &["bucket-name-1".to_string(), "bucket-name-2".to_string()][..])
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&s3.object_filters_json).unwrap(),
        json!({"latest_version_only": true})
    );
    let rds = set(&request, "rds-4").target.as_ref().unwrap().rds.as_ref().unwrap();
    assert_eq!(
        (rds.account_id.as_str(), rds.name.as_str()),
        ("222333444555", ""),
        "another account keeps the source's name"
    );
    assert_eq!(rds.tags.get("key1").map(String::as_str), Some("value1"));
}

#[test]
fn default_input_is_flat_or_keyed_by_resource_type_and_group_values_win() {
    let request = convert(json!({
        "DefaultInput": {
            "source_account": "111222333444", "source_region": "us-east-1",
            "EBS": {"target_aws_az": "us-east-1c", "target_volume_type": "gp3", "source_region": "us-west-2"},
            "RDS": {"target_subnet_group_name": "restores", "target_rds_name": "orders-copy"}
        },
        "RestoreGroups": [
            {"ResourceType": "EBS", "source_region": "", "target_volume_type": "[This field will follow default input]"},
            {"ResourceType": "EBS", "target_aws_az": "us-west-2a", "target_volume_type": "io2", "target_iops": 3000},
            {"ResourceType": "RDS", "target_rds_name": ""},
            {"ResourceType": "DynamoDB", "change_set_name": "br5"}
        ]
    }))
    .unwrap();
    let [first, second, rds, dynamodb] = &request.restore_sets[..] else { panic!("four sets") };
    let target = first.target.as_ref().unwrap().ebs.as_ref().unwrap();
    assert_eq!((target.availability_zone.as_str(), target.volume_type.as_str()), ("us-east-1c", "gp3"));
    assert_eq!(first.source.as_ref().unwrap().region, "us-west-2", "the type's default before the flat one");
    assert_eq!(first.source.as_ref().unwrap().account_id, "111222333444", "the flat default");
    let target = second.target.as_ref().unwrap().ebs.as_ref().unwrap();
    assert_eq!(
        (target.availability_zone.as_str(), target.volume_type.as_str(), target.iops),
        ("us-west-2a", "io2", Some(3000)),
        "the group's own values win"
    );
    let target = rds.target.as_ref().unwrap().rds.as_ref().unwrap();
    assert_eq!((target.db_subnet_group.as_str(), target.name.as_str()), ("restores", "orders-copy"));
    assert_eq!(dynamodb.source.as_ref().unwrap().region, "us-east-1", "no DynamoDB section: the flat default");

    // Empty in the group and in its default: an error naming the field, as Clumio's validate_input.
    let empty_in_both = convert(json!({
        "DefaultInput": {"EBS": {"target_volume_type": ""}},
        "RestoreGroups": [{"ResourceType": "EBS", "target_az": "us-east-1a", "target_volume_type": ""}]
    }));
    assert!(empty_in_both
        .unwrap_err()
        .starts_with("RestoreGroups[0].target_volume_type: is empty here and in DefaultInput.EBS"),);
    let flat_empty = convert(json!({
        "DefaultInput": {"target_region": ""},
        "RestoreGroups": [{"ResourceType": "DynamoDB", "change_set_name": "x", "target_region": ""}]
    }));
    assert!(flat_empty.unwrap_err().starts_with("RestoreGroups[0].target_region: is empty here and in DefaultInput"));
    // Fields of the type's section are checked like a group's.
    let misplaced = convert(json!({"DefaultInput": {"EBS": {"change_set_name": "x"}}, "RestoreGroups": []}));
    assert!(misplaced.unwrap_err().starts_with("DefaultInput.EBS.change_set_name: does not apply to EBS"));
    let not_object = convert(json!({"DefaultInput": {"RDS": "all"}, "RestoreGroups": []}));
    assert!(not_object.unwrap_err().starts_with("DefaultInput.RDS: must be an object"));
}

fn ebs_group(extra: serde_json::Value) -> Result<pb::RestoreRequest, String> {
    let mut group = json!({"ResourceType": "EBS", "source_account": "111222333444", "source_region": "us-east-1",
                           "target_account": "111222333444", "target_region": "us-east-1"});
    group.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    convert(json!({"RestoreGroups": [group]}))
}

fn zone_of(request: &pb::RestoreRequest) -> String {
    request.restore_sets[0].target.as_ref().unwrap().ebs.as_ref().unwrap().availability_zone.clone()
}

#[test]
fn the_zone_is_target_aws_az_or_target_az() {
    assert_eq!(zone_of(&ebs_group(json!({"target_aws_az": "us-east-1d"})).unwrap()), "us-east-1d", "the README's name");
    assert_eq!(zone_of(&ebs_group(json!({"target_az": "us-east-1e"})).unwrap()), "us-east-1e", "the code's name");
    let both = ebs_group(json!({"target_aws_az": "us-east-1d", "target_az": "us-east-1d"})).unwrap();
    assert_eq!(zone_of(&both), "us-east-1d");
    let differ = ebs_group(json!({"target_aws_az": "us-east-1d", "target_az": "us-east-1e"}));
    assert!(differ.unwrap_err().starts_with("RestoreGroups[0].target_az: 'us-east-1e' differs from target_aws_az"));
    let neither = ebs_group(json!({}));
    assert!(neither.unwrap_err().starts_with("RestoreGroups[0].target_aws_az: is required to restore EBS"));
    let ec2 = convert(json!({"RestoreGroups": [{"ResourceType": "EC2", "target_aws_az": "us-east-1a",
        "target_vpc_native_id": "vpc-1", "target_subnet_native_id": "subnet-1"}]}))
    .unwrap();
    assert_eq!(ec2.restore_sets[0].target.as_ref().unwrap().ec2.as_ref().unwrap().availability_zone, "us-east-1a");
}

#[test]
fn target_role_arn_is_the_role_assumed_in_the_target_account_and_clumio_settings_are_ignored() {
    let request = convert(json!({
        "bear": "token", "clumio_token": "token", "debug": 99, "base_url": "us-west-2.api.clumio.com",
        "RestoreGroups": [{"ResourceType": "DynamoDB", "source_account": "111222333444", "source_region": "us-east-1",
            "target_account": "222333444555", "change_set_name": "br5",
            "target_role_arn": "arn:aws:iam::222333444555:role/restorer"}]
    }))
    .unwrap();
    assert_eq!(request.restore_sets[0].target_role_arn, "arn:aws:iam::222333444555:role/restorer");
    let no_role = ebs_group(json!({"target_az": "us-east-1a"})).unwrap();
    assert_eq!(no_role.restore_sets[0].target_role_arn, "", "the deployment's role name");
    let bad = ebs_group(json!({"target_az": "us-east-1a", "target_role_arn": "restorer"}));
    assert!(bad.unwrap_err().starts_with("RestoreGroups[0].target_role_arn: 'restorer' is not a role ARN"));
}

#[test]
fn empty_optional_fields_are_not_given() {
    let request = ebs_group(json!({"target_az": "us-east-1a", "target_iops": "", "target_kms_key_native_id": "",
        "search_tag_key": "", "search_tag_value": "", "target_volume_type": "", "target_volume_tags": []}))
    .unwrap();
    let set = &request.restore_sets[0];
    let target = set.target.as_ref().unwrap().ebs.as_ref().unwrap();
    assert_eq!((target.iops, target.kms_key_id.as_str(), target.tags.len()), (None, "", 0));
    assert!(set.source.as_ref().unwrap().tags.is_empty());
    assert!(!set.source.as_ref().unwrap().all_resources, "no tags: planned, but a real run needs --all-resources");
}

#[test]
fn day_offsets_must_be_whole_days_back_and_are_reported_by_field() {
    for field in ["start_search_day_offset", "end_search_day_offset"] {
        for direction in ["before", "after"] {
            let negative = ebs_group(json!({"target_az": "us-east-1a", "search_direction": direction, field: -1}));
            let message = negative.unwrap_err();
            assert!(message.starts_with(&format!("RestoreGroups[0].{field}: -1 is negative")), "{message}");
            let text = ebs_group(json!({"target_az": "us-east-1a", "search_direction": direction, field: "-3"}));
            assert!(text.unwrap_err().starts_with(&format!("RestoreGroups[0].{field}: -3 is negative")));
            let word = ebs_group(json!({"target_az": "us-east-1a", "search_direction": direction, field: "ten"}));
            assert!(word.unwrap_err().starts_with(&format!("RestoreGroups[0].{field}: 'ten' is not a whole number")));
            let fraction = ebs_group(json!({"target_az": "us-east-1a", "search_direction": direction, field: 1.5}));
            assert!(fraction.unwrap_err().starts_with(&format!("RestoreGroups[0].{field}: 1.5 is not a whole number")));
        }
    }
}

#[test]
fn after_and_before_search_as_clumio_does() {
    let group = |direction: &str, start: serde_json::Value, end: serde_json::Value| {
        let request = ebs_group(json!({"target_az": "us-east-1a", "search_direction": direction,
            "start_search_day_offset": start, "end_search_day_offset": end}))
        .unwrap();
        let p = point_in_time(&request.restore_sets[0]);
        (p.time.unwrap().seconds, p.direction, p.until.map(|t| t.seconds))
    };
    let after = pb::SearchDirection::After as i32;
    let before = pb::SearchDirection::Before as i32;
    // Clumio: start_timestamp > 2026-11-19T00:00:00Z and <= 2026-11-20T23:59:59Z, oldest first.
    assert_eq!(
        group("after", json!(2), json!(1)),
        (utc(2026, 11, 19, 0, 0, 1), after, Some(utc(2026, 11, 20, 23, 59, 59)))
    );
    // The same day: all of it.
    assert_eq!(
        group("after", json!("0"), json!("0")),
        (utc(2026, 11, 21, 0, 0, 1), after, Some(utc(2026, 11, 21, 23, 59, 59)))
    );
    // An end before the start (the published examples) has no upper bound.
    assert_eq!(group("after", json!(0), json!(10)), (utc(2026, 11, 21, 0, 0, 1), after, None));
    // before: start_timestamp <= 23:59:59 end days ago, newest first; the start is not used.
    assert_eq!(group("before", json!(5), json!(1)), (utc(2026, 11, 20, 23, 59, 59), before, None));
    // No search_direction: the newest up to tonight.
    assert_eq!(group("", json!(0), json!(0)), (utc(2026, 11, 21, 23, 59, 59), before, None));
    // Missing offsets take Clumio's defaults: EBS from yesterday, to tonight.
    let request = ebs_group(json!({"target_az": "us-east-1a", "search_direction": "after"})).unwrap();
    let p = point_in_time(&request.restore_sets[0]);
    assert_eq!(
        (p.time.unwrap().seconds, p.until.map(|t| t.seconds)),
        (utc(2026, 11, 20, 0, 0, 1), Some(utc(2026, 11, 21, 23, 59, 59)))
    );
}

#[test]
fn target_rds_name_is_required_only_in_the_source_account() {
    let rds = |source: &str, target: &str, name: &str| {
        convert(
            json!({"RestoreGroups": [{"ResourceType": "RDS", "source_account": source, "source_region": "us-east-2",
            "target_account": target, "target_region": "us-east-1", "target_subnet_group_name": "restores",
            "target_rds_name": name}]}),
        )
    };
    let other = rds("333444555666", "222333444555", "").unwrap();
    assert_eq!(
        other.restore_sets[0].target.as_ref().unwrap().rds.as_ref().unwrap().name,
        "",
        "the source's name is kept"
    );
    let named = rds("333444555666", "222333444555", "orders-dr").unwrap();
    assert_eq!(named.restore_sets[0].target.as_ref().unwrap().rds.as_ref().unwrap().name, "orders-dr");
    for (source, target) in [("333444555666", "333444555666"), ("333444555666", ""), ("", "")] {
        let same = rds(source, target, "").unwrap_err();
        assert!(
            same.starts_with("RestoreGroups[0].target_rds_name: is required to restore RDS in the source account"),
            "{source}/{target}: {same}"
        );
    }
}

#[test]
fn protection_groups_need_a_name_and_a_target_bucket() {
    let pg = |extra: serde_json::Value| {
        let mut group = json!({"ResourceType": "ProtectionGroup", "source_account": "111222333444",
            "source_region": "us-east-1", "search_pg_name": "pg-1", "target_bucket": "restored",
            "target_region": "us-west-2"});
        group.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        convert(json!({"RestoreGroups": [group]}))
    };
    let request = pg(json!({"search_object_filters": {"prefix_filters": [{"prefix": "a/"}]}})).unwrap();
    let s3 = request.restore_sets[0].target.as_ref().unwrap().s3.as_ref().unwrap();
    assert_eq!(
        (s3.region.as_str(), s3.object_filters_json.as_str()),
        ("us-west-2", r#"{"prefix_filters":[{"prefix":"a/"}]}"#)
    );
    assert!(s3.source_buckets.is_empty());
    assert!(pg(json!({"search_pg_name": ""})).unwrap_err().starts_with("RestoreGroups[0].search_pg_name: is required"));
    assert!(pg(json!({"target_bucket": ""})).unwrap_err().starts_with("RestoreGroups[0].target_bucket: is required"));
    assert!(pg(json!({"target_az": "us-east-1a"})).unwrap_err().contains("does not apply to ProtectionGroup"));
}

/// Seeds moto with what Clumio's examples search for, in their accounts and regions, and
/// returns the backup ids a dry run must pick per (set name, file prefix).
struct ExampleBackups {
    ami_111: String,
    ami_323: String,
    snapshot_222: String,
    snapshot_720: String,
    ddb_backup_111: String,
}

async fn seed_the_examples(servers: &Servers) -> ExampleBackups {
    let accounts = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "ClumioExampleSeeder");
    let config = |account: &'static str, region: &'static str| {
        let accounts = accounts.clone();
        async move { accounts.config_for(account, region).await.expect("assume a role into the example account") }
    };
    // EC2: AMIs tagged Name=test22 in 111222333444/us-east-1 and (the flat file) 323724565630/us-east-2.
    let east_111 = config("111222333444", "us-east-1").await;
    let ec2_111 = lifeboat_common::aws::ec2_client(&east_111, "111222333444", "us-east-1");
    let ami_111 = create_tagged_image(&ec2_111, "test22-nightly", &[("Name", "test22")]).await;
    create_tagged_image(&ec2_111, "other-nightly", &[("Name", "other")]).await;
    let east2_323 = config("323724565630", "us-east-2").await;
    let ec2_323 = lifeboat_common::aws::ec2_client(&east2_323, "323724565630", "us-east-2");
    let ami_323 = create_tagged_image(&ec2_323, "test22-nightly", &[("Name", "test22")]).await;

    // EBS: a snapshot tagged Dev=Yes in 222333444555/us-east-1 (and one that is not).
    let east_222 = config("222333444555", "us-east-1").await;
    let ec2_222 = lifeboat_common::aws::ec2_client(&east_222, "222333444555", "us-east-1");
    let volume = create_volume(&ec2_222, "us-east-1a", 8, &[("Dev", "Yes")]).await;
    let snapshot_222 = create_snapshot(&ec2_222, &volume, &[("Dev", "Yes")]).await;
    let other = create_volume(&ec2_222, "us-east-1a", 8, &[("Dev", "No")]).await;
    create_snapshot(&ec2_222, &other, &[("Dev", "No")]).await;
    // The newest example's EBS group: 720489691371/us-west-2, aws-compliance-restored=restored.
    let west_720 = config("720489691371", "us-west-2").await;
    let ec2_720 = lifeboat_common::aws::ec2_client(&west_720, "720489691371", "us-west-2");
    let tag = [("aws-compliance-restored", "restored")];
    let volume = create_volume(&ec2_720, "us-west-2a", 8, &tag).await;
    let snapshot_720 = create_snapshot(&ec2_720, &volume, &tag).await;

    // DynamoDB: a table with a backup in 111222333444/us-east-1.
    let ddb = aws_sdk_dynamodb::Client::new(&east_111);
    fixtures::create_table(&ddb, "orders", &[]).await;
    let backup = ddb.create_backup().table_name("orders").backup_name("nightly").send().await.unwrap();
    let ddb_backup_111 = backup.backup_details().unwrap().backup_arn().to_string();

    // RDS: a DB snapshot in 333444555666/us-east-2.
    let east2_333 = config("333444555666", "us-east-2").await;
    let rds = aws_sdk_rds::Client::new(&east2_333);
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
    rds.create_db_snapshot()
        .db_instance_identifier("billing")
        .db_snapshot_identifier("billing-nightly")
        .send()
        .await
        .unwrap();
    ExampleBackups { ami_111, ami_323, snapshot_222, snapshot_720, ddb_backup_111 }
}

/// The examples' protection group `protection-group-1` in the default vault: for each of its
/// buckets an older index and a newer one (an hour ago, before the end of today that the
/// examples' `before` searches to), each with its objects' copies. Returns (bucket, newer index).
async fn seed_the_protection_group(servers: &Servers) -> Vec<(String, String)> {
    use crate::s3_restore::{object, seed_index, the_vault, VAULT_REGION};
    let vault = the_vault();
    let vault_s3 = crate::s3_restore::s3_in(servers, "", VAULT_REGION).await;
    lifeboat_s3::vault::ensure_vault(&vault_s3, &vault).await.unwrap();
    // Within today (UTC) whatever the time of day the tests run at: both before now.
    let now = Utc::now();
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let (older, newer) = (midnight + (now - midnight) / 3, midnight + (now - midnight) * 2 / 3);
    let mut found = Vec::new();
    for (bucket, key) in [("bucket-name-1", "first.txt"), ("bucket-name-2", "second.txt")] {
        let first = [object(key, "v1", bucket.as_bytes(), older)];
        seed_index(&vault_s3, &vault, "protection-group-1", bucket, older, &first).await;
        let second = [object(key, "v2", format!("{bucket}, later").as_bytes(), newer)];
        found.push((
            bucket.to_string(),
            seed_index(&vault_s3, &vault, "protection-group-1", bucket, newer, &second).await,
        ));
    }
    found
}

/// A published example's ProtectionGroup group, run for real: both named buckets' newest
/// backups land in the target account's bucket under the target prefix.
#[tokio::test(flavor = "multi_thread")]
async fn a_clumio_protection_group_restores_into_its_target_bucket_and_prefix() {
    use crate::s3_restore::{contents, create_bucket, s3_in};
    init_logging();
    let servers = Servers::start().await;
    let indexes = seed_the_protection_group(&servers).await;
    let target = s3_in(&servers, "222333444555", "us-east-1").await;
    create_bucket(&target, "bucket-name-3", "us-east-1").await;
    let (name, text) = published_examples()
        .into_iter()
        .find(|(name, _)| name.starts_with("2025-06-18_5662c99"))
        .expect("the example of 2025-06-18");
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    let group = document["RestoreGroups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["ResourceType"] == "ProtectionGroup")
        .expect("a ProtectionGroup group")
        .clone();
    assert_eq!(group["search_object_filters"], json!({"latest_version_only": true}), "{name}");
    let request = clumio::convert(&json!({"RestoreGroups": [group]}), "clumio-pg-1".into(), Utc::now())
        .map_err(|e| e.to_string())
        .unwrap();
    // The group names its buckets: the blast-radius guard does not ask for --all-resources.
    assert!(!request.restore_sets[0].source.as_ref().unwrap().all_resources);

    let _services = crate::s3_restore::services_with_vault(&servers, Some(crate::s3_restore::the_vault())).await;
    let client = servers.client().await;
    client.submit(&request).await.unwrap();
    let summary = final_summary(&client, &request.request_id).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    let picked: BTreeSet<(String, String)> =
        summary.tasks.iter().map(|t| (t.source_resource_id.clone(), t.source_backup_id.clone())).collect();
    assert_eq!(picked, indexes.into_iter().collect::<BTreeSet<_>>(), "each bucket's newest index");
    let restored = contents(&target, "bucket-name-3").await;
    let expected = [
        ("prefix/first.txt".to_string(), b"bucket-name-1, later".to_vec()),
        ("prefix/second.txt".to_string(), b"bucket-name-2, later".to_vec()),
    ];
    assert_eq!(restored, std::collections::BTreeMap::from(expected), "the newer versions, under the target prefix");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_published_clumio_example_is_planned_group_by_group_in_a_dry_run() {
    init_logging();
    let servers = Servers::start().await;
    let backups = seed_the_examples(&servers).await;
    let group_indexes = seed_the_protection_group(&servers).await;
    // The protection groups restore from the deployment's default vault (the runbooks name none).
    let discovery = lifeboat_discovery::DiscoveryConfig {
        s3_vault: Some(crate::s3_restore::the_vault()),
        ..fast_discovery_config(lifeboat_common::validate::Policy::default())
    };
    let planning = ServiceSet {
        discovery: Some(discovery),
        ebs: None,
        dynamodb: None,
        ec2: None,
        rds: None,
        ..ServiceSet::default()
    };
    let _services = Running::start(&servers, planning).await;
    let client = servers.client().await;

    for (name, text) in published_examples() {
        let mut request = load_example(&name, &text);
        request.dry_run = true;
        client.submit(&request).await.unwrap();
        let summary = final_summary(&client, &request.request_id).await;
        assert!(summary.rejection.is_none(), "{name}: the runbook is accepted as it is: {summary:#?}");
        assert!(summary.dry_run, "{name}");
        for set in &request.restore_sets {
            let tasks: Vec<&pb::TaskState> = summary.tasks.iter().filter(|t| t.set_name == set.name).collect();
            assert!(!tasks.is_empty(), "{name}: set {} is accounted for in the plan: {summary:#?}", set.name);
            let phase = |t: &pb::TaskState| pb::TaskPhase::try_from(t.phase).unwrap_or_default();
            for task in &tasks {
                assert!(
                    phase(task) == pb::TaskPhase::Planned || !task.reason_code.is_empty(),
                    "{name}: set {} is planned or says why not: {task:#?}",
                    set.name
                );
            }
            let planned: BTreeSet<&str> = tasks
                .iter()
                .filter(|t| phase(t) == pb::TaskPhase::Planned)
                .map(|t| t.source_backup_id.as_str())
                .collect();
            let source = set.source.as_ref().unwrap();
            let expected = match (set.resource_types[0], source.account_id.as_str()) {
                (t, "111222333444") if t == pb::ResourceType::Ec2Instance as i32 => Some(&backups.ami_111),
                (t, "323724565630") if t == pb::ResourceType::Ec2Instance as i32 => Some(&backups.ami_323),
                (t, "222333444555") if t == pb::ResourceType::EbsVolume as i32 => Some(&backups.snapshot_222),
                (t, "720489691371") if t == pb::ResourceType::EbsVolume as i32 => Some(&backups.snapshot_720),
                (t, _) if t == pb::ResourceType::RdsInstance as i32 => {
                    // The oldest snapshot of the one database (moto also takes an automated one).
                    let databases: Vec<&str> = tasks
                        .iter()
                        .filter(|t| phase(t) == pb::TaskPhase::Planned)
                        .map(|t| t.source_resource_id.as_str())
                        .collect();
                    assert_eq!(databases, ["billing"], "{name}: set {}: {summary:#?}", set.name);
                    None
                }
                (t, _) if t == pb::ResourceType::S3Bucket as i32 => {
                    // One task per named bucket, from its newest index before the end of today.
                    let buckets: BTreeSet<(&str, &str)> = tasks
                        .iter()
                        .filter(|t| phase(t) == pb::TaskPhase::Planned)
                        .map(|t| (t.source_resource_id.as_str(), t.source_backup_id.as_str()))
                        .collect();
                    let expected: BTreeSet<(&str, &str)> =
                        group_indexes.iter().map(|(b, i)| (b.as_str(), i.as_str())).collect();
                    assert_eq!(buckets, expected, "{name}: the protection group: {summary:#?}");
                    None
                }
                // DynamoDB into another account: whatever discovery plans, or says why not.
                _ => {
                    if !planned.is_empty() {
                        assert_eq!(planned, BTreeSet::from([backups.ddb_backup_111.as_str()]), "{name}: {}", set.name);
                    }
                    None
                }
            };
            if let Some(expected) = expected {
                assert_eq!(planned, BTreeSet::from([expected.as_str()]), "{name}: set {}: {summary:#?}", set.name);
            }
        }
        // A plan, not a rejection; a set discovery refuses (e.g. DynamoDB into another account)
        // is a failed entry with its reason, which makes the verdict PartiallyFailed.
        let verdict = verdict(&summary);
        let refused = summary.tasks.iter().any(|t| t.phase == pb::TaskPhase::Failed as i32);
        if refused {
            assert_eq!(verdict, pb::Verdict::PartiallyFailed, "{name}: {summary:#?}");
        } else {
            assert!(
                matches!(verdict, pb::Verdict::Completed | pb::Verdict::CompletedWithWarnings),
                "{name}: a plan, not a failure: {verdict:?} {summary:#?}"
            );
        }
    }
}

#[test]
fn search_ids_select_by_aws_id_and_ec2_power_follows_should_power_on() {
    let names = |mut fields: serde_json::Value| {
        fields.as_object_mut().unwrap().insert("target_az".into(), json!("us-east-1a"));
        let request = ebs_group(fields).unwrap();
        request.restore_sets[0].source.as_ref().unwrap().names.clone()
    };
    assert_eq!(names(json!({"search_volume_id": "vol-0abc"})), ["vol-0abc"]);
    assert!(names(json!({"search_volume_id": "abb2e20f-1234-11ef-9866-7205609e0abc"})).is_empty(), "a Clumio asset id");
    assert!(names(json!({})).is_empty());
    let ec2 = |extra: serde_json::Value| {
        let mut group = json!({"ResourceType": "EC2", "target_az": "us-east-1a", "target_vpc_native_id": "vpc-1",
            "target_subnet_native_id": "subnet-1", "target_ami_native_id": "ami-1", "target_eni_cfg_from_backup": true,
            "target_instance_tags": [{"key": "team", "value": "web"}],
            "target_volume_tags": [{"key": "team", "value": "disks"}, {"key": "kind", "value": "root"}]});
        group.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let request = convert(json!({"RestoreGroups": [group]})).unwrap();
        request.restore_sets[0].target.as_ref().unwrap().ec2.as_ref().unwrap().clone()
    };
    assert!(!ec2(json!({})).leave_stopped, "runbooks from before should_power_on started their instances");
    assert!(ec2(json!({"should_power_on": false})).leave_stopped);
    assert!(!ec2(json!({"should_power_on": true})).leave_stopped);
    let tags = ec2(json!({})).tags;
    assert_eq!((tags["team"].as_str(), tags["kind"].as_str()), ("web", "root"), "instance tags win a clash");
    assert_eq!(ec2(json!({"search_instance_id": "i-0123"})).subnet_id, "subnet-1");
}
