//! Bulk EBS restores end to end: discovery, the EBS service and the aggregator in moto, over
//! NATS JetStream and over moto's SQS.

use std::collections::{BTreeSet, HashMap};

use lifeboat_common::subjects::{TAG_REQUEST_ID, TAG_SOURCE_BACKUP, TAG_TASK_ID};
use lifeboat_proto as pb;
use lifeboat_tests::*;

async fn bulk_restore_picks_before_and_after_every_volume_and_crosses_regions(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let west = servers.ec2("us-west-2");

    // Two web volumes snapshotted on both sides of T, one unrelated volume, one db volume in us-west-2.
    let web_tags = [("app", "web"), ("env", "prod")];
    let web_a = create_volume(&east, "us-east-1a", 8, &[("app", "web"), ("env", "prod"), ("Name", "web-a")]).await;
    let web_b = create_volume(&east, "us-east-1a", 9, &[("app", "web"), ("env", "prod"), ("Name", "web-b")]).await;
    let other = create_volume(&east, "us-east-1a", 5, &[("app", "web"), ("env", "dev")]).await;
    let db = create_volume(&west, "us-west-2a", 20, &[("app", "db")]).await;
    let old_a =
        create_snapshot(&east, &web_a, &[("app", "web"), ("env", "prod"), ("Name", "web-a"), ("cost-center", "42")])
            .await;
    let old_b = create_snapshot(&east, &web_b, &[("app", "web"), ("env", "prod"), ("Name", "web-b")]).await;
    let _dev = create_snapshot(&east, &other, &[("app", "web"), ("env", "dev")]).await;
    let point = tick().await;
    let new_a = create_snapshot(&east, &web_a, &web_tags).await;
    let new_b = create_snapshot(&east, &web_b, &web_tags).await;
    let db_snap = create_snapshot(&west, &db, &[("app", "db"), ("Name", "db-1")]).await;

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let extra: HashMap<String, String> = [("restored-by".to_string(), "lifeboat".to_string())].into();
    let request = request(
        "bulk-1",
        vec![
            ebs_set(
                "before",
                "us-east-1",
                &web_tags,
                before(point),
                pb::EbsTarget {
                    availability_zone: "us-east-1b".into(),
                    volume_type: "gp3".into(),
                    iops: Some(4000),
                    throughput: Some(250),
                    tags: extra.clone(),
                    ..Default::default()
                },
            ),
            ebs_set(
                "after",
                "us-east-1",
                &web_tags,
                after(point),
                pb::EbsTarget { availability_zone: "us-east-1c".into(), ..Default::default() },
            ),
            ebs_set(
                "cross-region",
                "us-west-2",
                &[("app", "db")],
                None,
                pb::EbsTarget {
                    region: "us-east-1".into(),
                    availability_zone: "us-east-1a".into(),
                    volume_type: "io2".into(),
                    iops: Some(5000),
                    ..Default::default()
                },
            ),
        ],
    );
    client.submit(&request).await.unwrap();
    let summary = final_summary(&client, "bulk-1").await;

    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.total_tasks, 5);
    let counts = summary.counts.unwrap();
    assert_eq!((counts.succeeded, counts.failed, counts.skipped), (5, 0, 0));
    let per_set: HashMap<_, _> =
        summary.sets.iter().map(|s| (s.set_name.as_str(), s.counts.unwrap().succeeded)).collect();
    assert_eq!(per_set, HashMap::from([("before", 2), ("after", 2), ("cross-region", 1)]));
    assert_eq!(summary.tasks.len(), 5);
    assert!(summary
        .tasks
        .iter()
        .all(|t| t.phase == pb::TaskPhase::Succeeded as i32 && !t.created_resource_ids.is_empty()));

    // What exists in moto: BEFORE restored the old snapshots, AFTER the new ones.
    let restored = volumes_tagged(&east, TAG_REQUEST_ID, "bulk-1").await;
    assert_eq!(restored.len(), 5, "every matching volume restored, all into us-east-1");
    let from = |zone: &str| {
        restored
            .iter()
            .filter(|v| v.availability_zone() == Some(zone))
            .map(|v| v.snapshot_id().unwrap().to_string())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(from("us-east-1b"), BTreeSet::from([old_a.clone(), old_b.clone()]));
    assert_eq!(from("us-east-1c"), BTreeSet::from([new_a.clone(), new_b.clone()]));
    let cross: Vec<_> = volumes_tagged(&east, TAG_SOURCE_BACKUP, &db_snap).await;
    assert_eq!(cross.len(), 1, "one cross-region volume");
    let cross = &cross[0];
    assert_eq!(cross.availability_zone(), Some("us-east-1a"));
    assert_ne!(cross.snapshot_id(), Some(db_snap.as_str()), "created from a copy in the target region");
    assert_eq!(cross.volume_type().map(|t| t.as_str()), Some("io2"));
    assert_eq!(cross.iops(), Some(5000));
    assert_eq!(tags_of(cross).get("Name").map(String::as_str), Some("db-1"));
    // The copy says which volume it protects and that it is a restore copy, not a backup.
    let copies = snapshots_tagged(&east, TAG_REQUEST_ID, "bulk-1").await;
    assert_eq!(copies.len(), 1);
    let copy_tags: HashMap<_, _> =
        copies[0].tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
    assert_eq!(copy_tags.get("lifeboat:source-volume"), Some(&db.as_str()));
    assert!(copy_tags.contains_key("lifeboat:restore-copy"), "{copy_tags:?}");

    // Settings and tags on the restored volumes: source snapshot tags, Lifeboat's, the set's extra.
    let restored_a = restored.iter().find(|v| v.snapshot_id() == Some(old_a.as_str())).unwrap();
    assert_eq!(restored_a.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(restored_a.iops(), Some(4000));
    assert_eq!(restored_a.throughput(), Some(250));
    let tags = tags_of(restored_a);
    assert_eq!(tags.get("Name").map(String::as_str), Some("web-a"));
    assert_eq!(tags.get("cost-center").map(String::as_str), Some("42"));
    assert_eq!(tags.get("restored-by").map(String::as_str), Some("lifeboat"));
    assert_eq!(tags.get(TAG_REQUEST_ID).map(String::as_str), Some("bulk-1"));
    assert_eq!(tags.get(TAG_SOURCE_BACKUP), Some(&old_a));
    let task = summary.tasks.iter().find(|t| t.source_backup_id == old_a).unwrap();
    assert_eq!(tags.get(TAG_TASK_ID), Some(&task.task_id));
    assert!(task.created_resource_ids.contains(&restored_a.volume_id().unwrap().to_string()));

    // The last summary stays retrievable, for clients that come late.
    let last = late_summary(&servers, "bulk-1").await;
    assert!(last.r#final);
    assert_eq!(verdict(&last), pb::Verdict::Completed);

    // Nothing was restored from the dev volume, and nothing landed in us-west-2.
    assert!(restored.iter().all(|v| tags_of(v).get("env").map(String::as_str) != Some("dev")));
    assert!(volumes_tagged(&west, TAG_REQUEST_ID, "bulk-1").await.is_empty());
}

async fn dry_run_plans_every_backup_and_creates_nothing(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let volume = create_volume(&east, "us-east-1a", 8, &[("team", "payments")]).await;
    let first = create_snapshot(&east, &volume, &[("team", "payments")]).await;
    let start = tick().await;
    let second = create_snapshot(&east, &volume, &[("team", "payments")]).await;
    let third = create_snapshot(&east, &volume, &[("team", "payments")]).await;
    let end = tick().await;
    let _late = create_snapshot(&east, &volume, &[("team", "payments")]).await;

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let window = Some(pb::source::Selection::Window(pb::TimeWindow { start: Some(ts(start)), end: Some(ts(end)) }));
    let mut request = request(
        "plan-1",
        vec![
            ebs_set(
                "window",
                "us-east-1",
                &[("team", "payments")],
                window,
                pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() },
            ),
            ebs_set(
                "oldest",
                "us-east-1",
                &[("team", "payments")],
                before(start),
                pb::EbsTarget { availability_zone: "us-east-1d".into(), ..Default::default() },
            ),
        ],
    );
    request.dry_run = true;
    client.submit(&request).await.unwrap();
    let summary = final_summary(&client, "plan-1").await;

    assert!(summary.dry_run);
    assert_eq!(verdict(&summary), pb::Verdict::Completed);
    assert_eq!(summary.counts.unwrap().planned, 3);
    let planned = |set: &str| {
        summary.tasks.iter().filter(|t| t.set_name == set).map(|t| t.source_backup_id.clone()).collect::<BTreeSet<_>>()
    };
    assert_eq!(planned("window"), BTreeSet::from([second, third]), "every snapshot inside the window");
    assert_eq!(planned("oldest"), BTreeSet::from([first]));
    let task = summary.tasks.iter().find(|t| t.set_name == "oldest").unwrap();
    assert_eq!(task.phase, pb::TaskPhase::Planned as i32);
    assert_eq!(task.target.as_ref().unwrap().availability_zone, "us-east-1d");
    assert!(task.selection_reason.starts_with("newest of 4 at or before"), "{}", task.selection_reason);
    assert!(volumes_tagged(&east, TAG_REQUEST_ID, "plan-1").await.is_empty(), "a dry run creates nothing");

    // What `lifeboat restore submit --dry-run` prints: the plan table, then the verdict.
    let table = lifeboat_cli::render::table(&summary);
    assert!(table.contains(&task.source_backup_id) && table.contains("us-east-1d"), "{table}");
    assert!(table.ends_with("request plan-1: COMPLETED (dry run: nothing was created)\n"), "{table}");
    let json = lifeboat_cli::render::summary_json(&summary);
    assert_eq!(json["verdict"], "COMPLETED");
    assert_eq!(json["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(lifeboat_cli::render::exit_code(verdict(&summary)), 0);
}

async fn restores_in_another_account_through_assume_role(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let other = "111111111111";
    let accounts = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "LifeboatRestoreRole");
    let other_ec2 = aws_sdk_ec2::Client::new(&accounts.config_for(other, "us-east-1").await.unwrap());
    let own_ec2 = servers.ec2("us-east-1");
    let theirs = create_volume(&other_ec2, "us-east-1a", 8, &[("team", "search")]).await;
    let their_snapshot = create_snapshot(&other_ec2, &theirs, &[("team", "search")]).await;
    // The same tags in the caller's own account must not be picked for a set naming the other one.
    let ours = create_volume(&own_ec2, "us-east-1a", 8, &[("team", "search")]).await;
    create_snapshot(&own_ec2, &ours, &[("team", "search")]).await;

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let mut set = ebs_set(
        "other-account",
        "us-east-1",
        &[("team", "search")],
        None,
        pb::EbsTarget { availability_zone: "us-east-1d".into(), ..Default::default() },
    );
    set.source.as_mut().unwrap().account_id = other.into();
    client.submit(&request("assume-1", vec![set])).await.unwrap();
    let summary = final_summary(&client, "assume-1").await;

    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.tasks.len(), 1);
    assert_eq!(summary.tasks[0].source_backup_id, their_snapshot);
    assert_eq!(summary.tasks[0].target.as_ref().unwrap().account_id, other);
    let restored = volumes_tagged(&other_ec2, TAG_REQUEST_ID, "assume-1").await;
    assert_eq!(restored.len(), 1, "restored in the other account");
    assert_eq!(restored[0].snapshot_id(), Some(their_snapshot.as_str()));
    assert!(volumes_tagged(&own_ec2, TAG_REQUEST_ID, "assume-1").await.is_empty(), "nothing in the caller's account");
}

on_both_transports!(
    bulk_restore_picks_before_and_after_every_volume_and_crosses_regions,
    dry_run_plans_every_backup_and_creates_nothing,
    restores_in_another_account_through_assume_role,
);
