//! A backup plan's rule run from the real `lifeboat` binary over real nats-server and moto, end
//! to end: `backup run` publishes the run, discovery selects the tagged volumes, the EBS service
//! snapshots them and copies the snapshots to the DR region with the plan's tags; one volume
//! deleted after selection makes the run PARTIALLY_FAILED, and `backup report --csv` names it
//! with its reason; a restore request then restores from the recovery point.

use std::collections::HashMap;
use std::time::Duration;

use lifeboat_proto as pb;
use lifeboat_tests::*;

const PLAN: &str = r#"
name: shop
lock: {mode: GOVERNANCE, min_retention_days: 1, max_retention_days: 30}
tags: {owner: sre}
rules:
  - name: nightly
    schedule: "0 2 * * *"
    selection:
      resource_types: [ebs]
      regions: [us-east-1]
      tags: {include: {app: shop}, exclude: {backup: skip}}
    retention: {days: 7}
    copy_to:
      - {region: us-west-2, retention: {days: 14}}
"#;

fn lifeboat(servers: &Servers, args: &[&str]) -> std::process::Output {
    crate::traces::lifeboat_command(servers).args(args).output().expect("run lifeboat")
}

fn snapshot_tags(snapshot: &aws_sdk_ec2::types::Snapshot) -> HashMap<String, String> {
    snapshot.tags().iter().map(|t| (t.key().unwrap_or_default().into(), t.value().unwrap_or_default().into())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_run_backs_up_copies_reports_its_failures_and_restores() {
    init_logging();
    let servers = Servers::start().await;
    let (east, west) = (servers.ec2("us-east-1"), servers.ec2("us-west-2"));
    let kept = create_volume(&east, "us-east-1a", 8, &[("app", "shop"), ("Name", "shop-data")]).await;
    let doomed = create_volume(&east, "us-east-1a", 4, &[("app", "shop")]).await;
    create_volume(&east, "us-east-1a", 4, &[("app", "shop"), ("backup", "skip")]).await;
    create_volume(&east, "us-east-1a", 4, &[("app", "other")]).await;
    // Discovery plans the run before any EBS service runs, so a volume can go in between.
    let without_ebs = ServiceSet { ebs: None, ..ServiceSet::default() };
    let _running = Running::start(&servers, without_ebs).await;
    let client = servers.client().await;

    let dir = tempfile::tempdir().expect("a temp dir");
    let plan = dir.path().join("shop.yaml");
    std::fs::write(&plan, PLAN).expect("write the plan");
    let output =
        lifeboat(&servers, &["backup", "run", plan.to_str().unwrap(), "--rule", "nightly", "--output", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let run_id = printed["run_id"].as_str().expect("a run id").to_string();
    assert!(run_id.starts_with("shop-nightly-manual-"), "{run_id}");

    let mut planned = None;
    for _ in 0..200 {
        let reply = client.status(&run_id, true).await.expect("status");
        if reply.summary.as_ref().is_some_and(|s| s.planned && s.tasks.len() as u32 == s.total_tasks) {
            planned = reply.summary;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let planned = planned.expect("the run is planned");
    let mut selected: Vec<&str> = planned.tasks.iter().map(|t| t.source_resource_id.as_str()).collect();
    selected.sort();
    let mut expected = vec![kept.as_str(), doomed.as_str()];
    expected.sort();
    assert_eq!(selected, expected, "the include tag selects, the exclude tag leaves out");

    east.delete_volume().volume_id(&doomed).send().await.expect("delete a selected volume");
    let (stop_ebs, ebs) = ebs_service(&servers, servers.shared_bus().await);
    let summary = final_summary(&client, &run_id).await;
    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:?}");

    // The recovery point and its copy, tagged to describe themselves.
    let points = snapshots_tagged(&east, "lifeboat:request-id", &run_id).await;
    assert_eq!(points.len(), 1, "one point: the deleted volume has none");
    let point = &points[0];
    assert_eq!(point.volume_id(), Some(kept.as_str()));
    let tags = snapshot_tags(point);
    for (key, value) in [
        ("lifeboat:plan", "shop"),
        ("lifeboat:rule", "nightly"),
        ("lifeboat:lock", "GOVERNANCE"),
        ("lifeboat:retention", "days=7"),
        ("app", "shop"),
        ("Name", "shop-data"),
        ("owner", "sre"),
    ] {
        assert_eq!(tags.get(key).map(String::as_str), Some(value), "{key} on the point: {tags:?}");
    }
    assert!(tags.contains_key("lifeboat:expires-at") && tags.contains_key("lifeboat:lock-until"), "{tags:?}");
    let copies = snapshots_tagged(&west, "lifeboat:request-id", &run_id).await;
    assert_eq!(copies.len(), 1, "one copy in the DR region");
    let copy_tags = snapshot_tags(&copies[0]);
    assert_eq!(copy_tags.get("lifeboat:copy-of"), point.snapshot_id().map(str::to_string).as_ref());
    assert_eq!(copy_tags.get("lifeboat:retention").map(String::as_str), Some("days=14"));
    assert_eq!(copy_tags.get("lifeboat:source-volume"), Some(&kept));

    // The report names the resource that was not backed up, and why.
    let output = lifeboat(&servers, &["backup", "report", &run_id, "--csv"]);
    assert_eq!(output.status.code(), Some(3), "PARTIALLY_FAILED exits 3");
    let csv = String::from_utf8_lossy(&output.stdout).to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert_eq!(lines[0], lifeboat_cli::backup::REPORT_HEADER);
    assert!(lines[1].starts_with(&format!("ebs,{doomed},")), "{csv}");
    assert!(lines[1].contains(",failed,InvalidVolume.NotFound,"), "{csv}");

    // A restore finds the recovery point as the volume's backup.
    let set = ebs_set(
        "shop",
        "us-east-1",
        &[("app", "shop")],
        None,
        pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() },
    );
    client.submit(&request("restore-shop", vec![set])).await.expect("submit the restore");
    let restored = final_summary(&client, "restore-shop").await;
    assert_eq!(verdict(&restored), pb::Verdict::Completed, "{restored:?}");
    assert_eq!(restored.tasks.len(), 1);
    assert_eq!(restored.tasks[0].source_backup_id, point.snapshot_id().unwrap_or_default());
    let volumes = volumes_tagged(&east, "lifeboat:request-id", "restore-shop").await;
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].size(), Some(8));
    stop_ebs.cancel();
    let _ = ebs.await;

    // Eight days on, the scheduler's retention sweep deletes the point (kept 7 days) and keeps
    // the copy (kept 14), and never touches a snapshot that is not Lifeboat's.
    let foreign = create_snapshot(&east, &kept, &[("app", "shop")]).await;
    let plan = lifeboat_cli::backup::load_plan(plan.to_str().unwrap()).expect("the plan");
    let clock = lifeboat_scheduler::ManualClock::new(chrono::Utc::now() + chrono::TimeDelta::days(8));
    let config = lifeboat_scheduler::SchedulerConfig { sweep_every: None, ..Default::default() };
    let scheduler = lifeboat_scheduler::Scheduler::new(vec![plan], servers.shared_bus().await, clock, config);
    let accounts = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "role");
    let report = scheduler.sweep(&accounts).await;
    assert!(!report.has_failures(), "{report:?}");
    assert!(snapshots_tagged(&east, "lifeboat:request-id", &run_id).await.is_empty(), "the expired point is gone");
    assert_eq!(snapshots_tagged(&west, "lifeboat:request-id", &run_id).await.len(), 1, "the copy is kept");
    let left = east.describe_snapshots().snapshot_ids(&foreign).send().await.expect("describe");
    assert_eq!(left.snapshots().len(), 1, "a snapshot Lifeboat did not make stays");
}
