//! Recovery point tags: what a backup writes on its points and the sweep, `backup list` and
//! discovery read back.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use lifeboat_common::backup::*;
use lifeboat_common::subjects::TAG_TASK_ID;
use lifeboat_proto::{BackupOptions, BackupRun, BackupTask, CopyDestination, RecoveryLock, RestoreTask, Retention};

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn task() -> RestoreTask {
    let run = BackupRun {
        plan: "prod".into(),
        rule: "nightly".into(),
        retention: Some(Retention { days: 30, ..Default::default() }),
        lock: Some(RecoveryLock {
            mode: "COMPLIANCE".into(),
            min_retention_days: 7,
            max_retention_days: 90,
            ..Default::default()
        }),
        options: Some(BackupOptions { cold_after_days: 10, ..Default::default() }),
        tags: [("owner".to_string(), "platform".to_string())].into(),
        ..Default::default()
    };
    let resource_tags = [("env", "prod"), ("aws:cloudformation:stack-name", "x"), ("lifeboat:plan", "other")];
    RestoreTask {
        request_id: "prod-nightly-2026".into(),
        task_id: "t-1".into(),
        backup_task: Some(BackupTask {
            run: Some(run),
            resource_id: "vol-1".into(),
            resource_tags: resource_tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn run_ids_are_request_ids() {
    let id = backup_run_id("prod-nightly/nightly/2026-12-03T01:00:00Z");
    assert_eq!(id, "prod-nightly-nightly-2026-12-03T010000Z");
    let long = backup_run_id(&format!("{}/{}/2026-12-03T01:00:00Z", "p".repeat(50), "r".repeat(50)));
    assert!(lifeboat_common::ids::is_valid_request_id(&long), "{long}");
    assert_ne!(long, backup_run_id(&format!("{}/{}/2026-12-04T01:00:00Z", "p".repeat(50), "r".repeat(50))));
}

#[test]
fn points_describe_themselves() {
    let created = DateTime::parse_from_rfc3339("2026-12-03T01:00:00Z").unwrap().with_timezone(&Utc);
    let (tags, dropped) = recovery_point_tags(&task(), created, None);
    assert!(dropped.is_empty());
    let tags: HashMap<_, _> = tags.into_iter().collect();
    assert_eq!(tags["env"], "prod");
    assert_eq!(tags["owner"], "platform");
    assert!(!tags.contains_key("aws:cloudformation:stack-name"));
    let point = PointTags::parse(&tags).unwrap();
    assert_eq!((point.plan.as_str(), point.rule.as_str(), point.lock.as_str()), ("prod", "nightly", "COMPLIANCE"));
    assert_eq!(point.expires_at.map(rfc3339).as_deref(), Some("2027-01-02T01:00:00Z"));
    assert_eq!(point.lock_until.map(rfc3339).as_deref(), Some("2026-12-10T01:00:00Z"));
    assert_eq!(point.cold_at.map(rfc3339).as_deref(), Some("2026-12-13T01:00:00Z"));
    assert_eq!(point.resource_id, "vol-1");
    assert!(PointTags::parse(&HashMap::from([("env".to_string(), "prod".to_string())])).is_none());
}

#[test]
fn copies_carry_their_own_retention() {
    let created = DateTime::parse_from_rfc3339("2026-12-03T01:00:00Z").unwrap().with_timezone(&Utc);
    let destination = CopyDestination {
        region: "us-west-2".into(),
        retention: Some(Retention { keep_weekly: 4, time_zone: "Europe/Berlin".into(), ..Default::default() }),
        ..Default::default()
    };
    let (tags, _) = recovery_point_tags(&task(), created, Some((&destination, "snap-1")));
    let point = PointTags::parse(&tags.into_iter().collect()).unwrap();
    assert_eq!(point.copy_of.as_deref(), Some("snap-1"));
    assert_eq!(point.expires_at, None);
    assert_eq!(point.cold_at, None);
    assert_eq!(point.retention.unwrap().keep_weekly, 4);
}

#[test]
fn resource_tags_give_way_to_ours() {
    let mut task = task();
    let job = task.backup_task.as_mut().unwrap();
    job.resource_tags = (0..60).map(|i| (format!("k{i:02}"), "v".to_string())).collect();
    let (tags, dropped) = recovery_point_tags(&task, Utc::now(), None);
    assert_eq!(tags.len(), MAX_TAGS);
    assert!(tags.iter().any(|(k, _)| k == TAG_TASK_ID));
    assert_eq!(dropped.len(), 60 - (MAX_TAGS - 11));
}

#[test]
fn retention_values_round_trip() {
    for value in ["days=30", "daily=7,weekly=4,monthly=12,yearly=0@Europe/Berlin"] {
        assert_eq!(format_retention(&parse_retention(value).unwrap()), value);
    }
    for bad in ["days=0", "daily=0,weekly=0,monthly=0,yearly=0@UTC", "hourly=3@UTC", "forever"] {
        assert_eq!(parse_retention(bad), None, "{bad}");
    }
}
