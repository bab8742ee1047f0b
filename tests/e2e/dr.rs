//! Disaster recovery and fidelity for EBS, end to end in moto: a DR region holding copies of
//! many volumes' snapshots restores each volume from the copy of its own source; a deleted
//! volume comes back from its snapshot; a restored volume keeps its source's type, IOPS,
//! throughput, encryption, zone and tags; a cross-account restore of a snapshot encrypted with
//! the AWS-managed key fails at plan time.

use std::collections::HashMap;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification, VolumeType};
use lifeboat_common::subjects::TAG_REQUEST_ID;
use lifeboat_proto as pb;
use lifeboat_tests::*;

fn tags(pairs: &[(&str, &str)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Snapshot);
    for (k, v) in pairs {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    spec.build()
}

/// A cross-region copy as AWS makes it: the description names the original and its region.
async fn copy_to(dest: &aws_sdk_ec2::Client, from_region: &str, snapshot_id: &str, pairs: &[(&str, &str)]) -> String {
    dest.copy_snapshot()
        .source_region(from_region)
        .source_snapshot_id(snapshot_id)
        .description(format!("[Copied {snapshot_id} from {from_region}]"))
        .tag_specifications(tags(pairs))
        .send()
        .await
        .expect("copy snapshot")
        .snapshot_id()
        .expect("copy id")
        .to_string()
}

fn set_names(summary: &pb::RequestSummary, set: &str) -> Vec<pb::TaskState> {
    summary.tasks.iter().filter(|t| t.set_name == set).cloned().collect()
}

#[tokio::test]
async fn a_dr_region_restores_every_volume_from_the_copy_of_its_own_source() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let west = servers.ec2("us-west-2");
    // 20 volumes, each snapshotted in us-east-1 and the snapshot copied to us-west-2.
    let mut copy_of_volume = HashMap::new();
    for i in 0..20 {
        let index = i.to_string();
        let owner = format!("team-{i}");
        let volume = create_volume(&east, "us-east-1a", 1 + i, &[("index", &index), ("owner", &owner)]).await;
        let snapshot = create_snapshot(&east, &volume, &[("app", "dr"), ("index", &index)]).await;
        let copy = copy_to(&west, "us-east-1", &snapshot, &[("app", "dr"), ("index", &index)]).await;
        copy_of_volume.insert(index, (volume, copy));
    }
    let point = tick().await;
    // A later copy of volume 0 must not be picked by a `before` restore.
    let late_original = create_snapshot(&east, &copy_of_volume["0"].0, &[("app", "dr"), ("index", "0")]).await;
    copy_to(&west, "us-east-1", &late_original, &[("app", "dr"), ("index", "0")]).await;

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let set = ebs_set(
        "dr",
        "us-west-2",
        &[("app", "dr")],
        before(point),
        pb::EbsTarget { availability_zone: "us-west-2b".into(), ..Default::default() },
    );
    client.submit(&request("dr-1", vec![set])).await.unwrap();
    let summary = final_summary(&client, "dr-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.tasks.len(), 20, "one task per source volume, not one per region");

    let restored = volumes_tagged(&west, TAG_REQUEST_ID, "dr-1").await;
    assert_eq!(restored.len(), 20);
    for volume in &restored {
        let tags = tags_of(volume);
        let index = tags.get("index").expect("the source's tags").clone();
        let (source_volume, copy) = &copy_of_volume[&index];
        assert_eq!(volume.snapshot_id(), Some(copy.as_str()), "volume {index} from the copy of its own source");
        assert_eq!(tags.get("owner"), Some(&format!("team-{index}")), "the source volume's tags");
        assert_eq!(volume.size(), Some(1 + index.parse::<i32>().unwrap()));
        let task = summary.tasks.iter().find(|t| t.source_backup_id == *copy).expect("a task per copy");
        assert_eq!(&task.source_resource_id, source_volume, "grouped by the source volume");
    }

    // A second restore: the copies made while restoring are not backups of their own.
    let again = ebs_set(
        "dr",
        "us-west-2",
        &[("app", "dr")],
        None,
        pb::EbsTarget { availability_zone: "us-west-2b".into(), ..Default::default() },
    );
    let mut dry = request("dr-2", vec![again]);
    dry.dry_run = true;
    client.submit(&dry).await.unwrap();
    let planned = final_summary(&client, "dr-2").await;
    assert_eq!(planned.tasks.len(), 20, "{:#?}", planned.tasks);
}

#[tokio::test]
async fn a_deleted_volume_comes_back_from_its_snapshot_and_an_unknown_zone_fails_the_set() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let gone = create_volume(&east, "us-east-1a", 3, &[("app", "gone")]).await;
    let snapshot = create_snapshot(&east, &gone, &[("app", "gone"), ("Name", "gone-1")]).await;
    east.delete_volume().volume_id(&gone).send().await.unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let with_zone = ebs_set(
        "with-zone",
        "us-east-1",
        &[("app", "gone")],
        None,
        pb::EbsTarget { availability_zone: "us-east-1d".into(), ..Default::default() },
    );
    let without_zone = ebs_set("without-zone", "us-east-1", &[("app", "gone")], None, Default::default());
    client.submit(&request("gone-1", vec![with_zone, without_zone])).await.unwrap();
    let summary = final_summary(&client, "gone-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");

    let restored = volumes_tagged(&east, TAG_REQUEST_ID, "gone-1").await;
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].snapshot_id(), Some(snapshot.as_str()));
    assert_eq!(restored[0].availability_zone(), Some("us-east-1d"));
    assert_eq!(tags_of(&restored[0]).get("Name").map(String::as_str), Some("gone-1"), "the snapshot's tags");
    let restored_task = &set_names(&summary, "with-zone")[0];
    assert_eq!(restored_task.source_resource_id, gone);

    let failed = &set_names(&summary, "without-zone")[0];
    assert_eq!(failed.phase, pb::TaskPhase::Failed as i32);
    assert_eq!(failed.reason_code, "AVAILABILITY_ZONE_UNKNOWN");
    assert!(
        failed.message.contains("target.ebs.availability_zone") && failed.message.contains(&gone),
        "{}",
        failed.message
    );
}

#[tokio::test]
async fn a_restored_volume_keeps_its_sources_settings_tags_and_zone() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let source = east
        .create_volume()
        .availability_zone("us-east-1c")
        .size(10)
        .volume_type(VolumeType::Gp3)
        .iops(4000)
        .throughput(300)
        .encrypted(true)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Volume)
                .tags(Tag::builder().key("Name").value("orders-data").build())
                .tags(Tag::builder().key("owner").value("orders").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let source_id = source.volume_id().unwrap().to_string();
    let source_key = source.kms_key_id().unwrap().to_string();
    create_snapshot(&east, &source_id, &[("app", "orders")]).await;
    // An io1 source restored as gp2 on request: its IOPS cannot be carried over, and say so.
    let fast = east
        .create_volume()
        .availability_zone("us-east-1b")
        .size(4)
        .volume_type(VolumeType::Io1)
        .iops(2000)
        .send()
        .await
        .unwrap();
    create_snapshot(&east, fast.volume_id().unwrap(), &[("app", "fast")]).await;

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let inherit = ebs_set("inherit", "us-east-1", &[("app", "orders")], None, Default::default());
    let override_type = ebs_set(
        "as-gp2",
        "us-east-1",
        &[("app", "fast")],
        None,
        pb::EbsTarget { volume_type: "gp2".into(), ..Default::default() },
    );
    client.submit(&request("fidelity-1", vec![inherit, override_type])).await.unwrap();
    let summary = final_summary(&client, "fidelity-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::CompletedWithWarnings, "{summary:#?}");

    let restored = volumes_tagged(&east, TAG_REQUEST_ID, "fidelity-1").await;
    let inherited = restored.iter().find(|v| v.size() == Some(10)).expect("the gp3 volume");
    assert_eq!(inherited.volume_type(), Some(&VolumeType::Gp3), "type");
    assert_eq!(inherited.iops(), Some(4000), "iops");
    assert_eq!(inherited.throughput(), Some(300), "throughput");
    assert_eq!(inherited.encrypted(), Some(true), "encryption");
    assert_eq!(inherited.kms_key_id(), Some(source_key.as_str()), "the source's key");
    assert_eq!(inherited.availability_zone(), Some("us-east-1c"), "the source volume's zone");
    let tags = tags_of(inherited);
    assert_eq!(tags.get("owner").map(String::as_str), Some("orders"), "the source volume's tags: {tags:?}");
    assert_eq!(tags.get("Name").map(String::as_str), Some("orders-data"));
    let task = &set_names(&summary, "inherit")[0];
    assert_eq!((task.phase, task.reason_code.as_str()), (pb::TaskPhase::Succeeded as i32, ""));
    assert_eq!(task.target.as_ref().unwrap().availability_zone, "us-east-1c");

    let gp2 = restored.iter().find(|v| v.size() == Some(4)).expect("the former io1 volume");
    assert_eq!(gp2.volume_type(), Some(&VolumeType::Gp2));
    assert_eq!(gp2.availability_zone(), Some("us-east-1b"));
    let warned = &set_names(&summary, "as-gp2")[0];
    assert_eq!(warned.phase, pb::TaskPhase::Succeeded as i32);
    assert_eq!(warned.reason_code, "SETTINGS_NOT_RESTORED");
    assert!(warned.message.contains("not restored: iops (the source's 2000 on gp2"), "{}", warned.message);
}

#[tokio::test]
async fn another_account_cannot_restore_a_snapshot_under_the_aws_managed_key_without_a_key_of_its_own() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let volume = east.create_volume().availability_zone("us-east-1a").size(2).encrypted(true).send().await.unwrap();
    let snapshot = create_snapshot(&east, volume.volume_id().unwrap(), &[("app", "secret")]).await;

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let set = ebs_set(
        "to-other",
        "us-east-1",
        &[("app", "secret")],
        None,
        pb::EbsTarget {
            account_id: "111111111111".into(),
            availability_zone: "us-east-1a".into(),
            ..Default::default()
        },
    );
    client.submit(&request("secret-1", vec![set])).await.unwrap();
    let summary = final_summary(&client, "secret-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Failed, "{summary:#?}");
    let failed = &summary.tasks[0];
    assert_eq!((failed.set_name.as_str(), failed.reason_code.as_str()), ("to-other", "ENCRYPTED_WITHOUT_TARGET_KEY"));
    assert!(
        failed.message.contains(&snapshot) && failed.message.contains("target.ebs.kms_key_id"),
        "{}",
        failed.message
    );
    let other = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "LifeboatRestoreRole");
    let other_ec2 = aws_sdk_ec2::Client::new(&other.config_for("111111111111", "us-east-1").await.unwrap());
    assert!(volumes_tagged(&other_ec2, TAG_REQUEST_ID, "secret-1").await.is_empty(), "nothing was created");
}
