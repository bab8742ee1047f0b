//! The logic behind the services, without servers: backup selection, validation, the
//! aggregator's verdicts under duplicates and reordering, and request files.

use std::collections::HashMap;

use chrono::{TimeZone, Utc};
use lifeboat_aggregator::RequestState;
use lifeboat_cli::request_file;
use lifeboat_common::validate::{validate_request, Policy};
use lifeboat_discovery::select::{pick, Candidate, TimeRule};
use lifeboat_proto as pb;
use lifeboat_tests::{ebs_set, request};

fn at(minute: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, minute, 0).unwrap()
}

fn candidate(id: &str, volume: &str, minute: u32) -> Candidate {
    Candidate { backup_id: id.into(), source_resource_id: volume.into(), created_at: at(minute), tags: HashMap::new() }
}

fn picked(candidates: &[Candidate], rule: TimeRule) -> Vec<&str> {
    pick(candidates, rule).into_iter().map(|(i, _)| candidates[i].backup_id.as_str()).collect()
}

#[test]
fn selection_picks_per_volume_on_the_right_side_of_the_point_in_time() {
    let snapshots = [
        candidate("a1", "vol-a", 0),
        candidate("a2", "vol-a", 10),
        candidate("a3", "vol-a", 20),
        candidate("b1", "vol-b", 5),
        candidate("b2", "vol-b", 30),
        candidate("c1", "vol-c", 40),
    ];
    assert_eq!(picked(&snapshots, TimeRule::Before(at(15))), ["a2", "b1"], "newest at or before, per volume");
    assert_eq!(picked(&snapshots, TimeRule::Before(at(10))), ["a2", "b1"], "at counts as before");
    assert_eq!(picked(&snapshots, TimeRule::After(at(15))), ["a3", "b2", "c1"], "oldest at or after, per volume");
    assert_eq!(picked(&snapshots, TimeRule::After(at(41))), Vec::<&str>::new());
    assert_eq!(picked(&snapshots, TimeRule::Window(at(5), at(20))), ["a2", "a3", "b1"], "every snapshot in the window");
    let why = pick(&snapshots, TimeRule::Before(at(15)));
    assert_eq!(why[0].1, "newest of 3 at or before 2026-11-20T12:15:00Z");
    let why = pick(&snapshots, TimeRule::Window(at(5), at(20)));
    assert_eq!(why[0].1, "in window 2026-11-20T12:05:00Z .. 2026-11-20T12:20:00Z");
}

#[test]
fn selection_breaks_ties_deterministically() {
    let snapshots = [candidate("snap-2", "vol-a", 10), candidate("snap-1", "vol-a", 10)];
    assert_eq!(picked(&snapshots, TimeRule::Before(at(10))), ["snap-2"]);
    assert_eq!(picked(&snapshots, TimeRule::After(at(10))), ["snap-1"]);
}

fn target(zone: &str) -> pb::EbsTarget {
    pb::EbsTarget { availability_zone: zone.into(), ..Default::default() }
}

fn fields(result: Result<(), Vec<pb::FieldError>>) -> Vec<String> {
    result.err().unwrap_or_default().into_iter().map(|e| e.field).collect()
}

#[test]
fn validation_names_every_bad_field() {
    let policy = Policy::default();
    assert!(validate_request(
        &request("ok", vec![ebs_set("s", "us-east-1", &[], None, target("us-east-1a"))]),
        &policy
    )
    .is_ok());

    let mut bad_target = target("us-west-2a");
    bad_target.volume_type = "gp9".into();
    bad_target.iops = Some(3000);
    bad_target.account_id = "12345".into();
    bad_target.tags.insert("aws:reserved".into(), "x".into());
    let mut req = request(
        "has space",
        vec![
            ebs_set("s", "us-east-1", &[], None, bad_target),
            ebs_set("s", "us-east-1", &[], None, target("us-east-1a")),
        ],
    );
    req.restore_sets[1].source.as_mut().unwrap().selection =
        Some(pb::source::Selection::PointInTime(pb::PointInTime {
            time: None,
            direction: pb::SearchDirection::Unspecified as i32,
            until: None,
        }));
    let found = fields(validate_request(&req, &policy));
    for expected in [
        "request_id",
        "restore_sets[0].target.ebs.availability_zone",
        "restore_sets[0].target.ebs.volume_type",
        "restore_sets[0].target.ebs.iops",
        "restore_sets[0].target.ebs.account_id",
        "restore_sets[0].target.ebs.tags",
        "restore_sets[1].name",
        "restore_sets[1].source.point_in_time.time",
        "restore_sets[1].source.point_in_time.direction",
    ] {
        assert!(found.iter().any(|f| f == expected), "{expected} not in {found:?}");
    }

    let mut missing_target = ebs_set("s", "us-east-1", &[], None, target("us-east-1a"));
    missing_target.target = None;
    assert_eq!(fields(validate_request(&request("r", vec![missing_target]), &policy)), ["restore_sets[0].target.ebs"]);
    assert_eq!(fields(validate_request(&request("r", vec![]), &policy)), ["restore_sets"]);
}

fn task_event(task: &str, set: &str, phase: pb::TaskPhase, attempt: u32) -> pb::StatusEvent {
    pb::StatusEvent {
        request_id: "r".into(),
        task_id: task.into(),
        set_name: set.into(),
        phase: phase as i32,
        attempt,
        ..Default::default()
    }
}

fn planned(total: u32) -> pb::StatusEvent {
    pb::StatusEvent {
        request_id: "r".into(),
        detail: Some(pb::status_event::Detail::Planned(pb::RestorePlanned {
            total_tasks: total,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A request folded in memory, as the store does record by record.
struct Fold {
    state: RequestState,
    tasks: HashMap<String, pb::TaskState>,
}

impl Fold {
    fn new() -> Self {
        Self { state: RequestState::new("r"), tasks: HashMap::new() }
    }

    fn apply(&mut self, event: &pb::StatusEvent) {
        if let Some(task) = self.state.apply(event, self.tasks.get(&event.task_id)).task {
            self.tasks.insert(task.task_id.clone(), task);
        }
    }

    fn is_final(&self) -> bool {
        self.state.is_final()
    }

    fn verdict(&self) -> pb::Verdict {
        self.state.verdict()
    }
}

#[test]
fn aggregator_counts_survive_duplicates_and_reordering() {
    use pb::TaskPhase::*;
    let mut state = Fold::new();
    // Events arrive before the plan, out of order and twice.
    state.apply(&task_event("t1", "a", Running, 1));
    state.apply(&task_event("t1", "a", Queued, 0));
    assert!(!state.is_final());
    state.apply(&planned(3));
    state.apply(&task_event("t1", "a", Succeeded, 2));
    state.apply(&task_event("t1", "a", Waiting, 1));
    state.apply(&task_event("t1", "a", Succeeded, 2));
    state.apply(&task_event("t2", "a", Waiting, 1));
    state.apply(&task_event("t2", "a", Running, 2));
    assert_eq!(state.verdict(), pb::Verdict::InProgress);
    state.apply(&task_event("t2", "a", Succeeded, 3));
    state.apply(&task_event("t3", "b", Failed, 1));
    state.apply(&task_event("t3", "b", Succeeded, 2));
    let summary = state.state.summary();
    let counts = summary.counts.unwrap();
    assert_eq!((counts.queued, counts.running, counts.waiting, counts.succeeded, counts.failed), (0, 0, 0, 2, 1));
    assert!(summary.r#final);
    assert_eq!(state.verdict(), pb::Verdict::PartiallyFailed, "a terminal phase never changes");
    let sets: HashMap<_, _> = summary.sets.iter().map(|s| (s.set_name.clone(), s.counts.unwrap())).collect();
    assert_eq!(sets["a"].succeeded, 2);
    assert_eq!(sets["b"].failed, 1);
    assert_eq!(state.tasks.len(), 3);
    assert_eq!(state.tasks["t3"].phase, Failed as i32);

    // Rebuilt from its stored record, the state is the same.
    let rebuilt = RequestState::from_stored(&state.state.to_stored(1, Default::default()));
    assert_eq!(rebuilt.summary(), summary);
}

#[test]
fn verdicts_never_call_a_failure_success() {
    use pb::TaskPhase::*;
    let verdict = |phases: &[pb::TaskPhase], warning: bool| {
        let mut state = Fold::new();
        state.apply(&planned(phases.len() as u32));
        for (i, &phase) in phases.iter().enumerate() {
            let mut event = task_event(&format!("t{i}"), "s", phase, 1);
            if warning && phase == Succeeded {
                event.reason_code = "TTL_NOT_RESTORED".into();
            }
            state.apply(&event);
        }
        state.verdict()
    };
    assert_eq!(verdict(&[Succeeded, Succeeded], false), pb::Verdict::Completed);
    assert_eq!(verdict(&[Succeeded, Succeeded], true), pb::Verdict::CompletedWithWarnings);
    assert_eq!(verdict(&[Succeeded, Skipped], false), pb::Verdict::CompletedWithWarnings);
    assert_eq!(verdict(&[Succeeded, Failed], false), pb::Verdict::PartiallyFailed);
    assert_eq!(verdict(&[Failed, Failed], false), pb::Verdict::Failed);
    assert_eq!(verdict(&[Skipped], false), pb::Verdict::Failed);
    assert_eq!(verdict(&[Succeeded, Running], false), pb::Verdict::InProgress);
    let mut rejected = Fold::new();
    rejected.apply(&pb::StatusEvent {
        request_id: "r".into(),
        detail: Some(pb::status_event::Detail::Rejected(Default::default())),
        ..Default::default()
    });
    assert_eq!(rejected.verdict(), pb::Verdict::Rejected);
}

#[test]
fn request_files_convert_and_name_their_bad_fields() {
    let yaml = r#"
request_id: file-1
restore_sets:
  - name: web
    source:
      account_id: "123456789012"
      region: us-east-1
      tags: {app: web}
      point_in_time: {time: "2026-11-20T12:00:00Z", direction: after}
    resource_types: [ebs]
    target:
      ebs: {region: us-west-2, availability_zone: us-west-2a, volume_type: gp3, iops: 3000, tags: {a: b}}
"#;
    let request = request_file::parse("r.yaml", yaml).unwrap().into_request("unused".into()).unwrap();
    assert_eq!(request.request_id, "file-1");
    let set = &request.restore_sets[0];
    assert_eq!(set.resource_types, vec![pb::ResourceType::EbsVolume as i32]);
    let Some(pb::source::Selection::PointInTime(point)) = &set.source.as_ref().unwrap().selection else {
        panic!("point in time")
    };
    assert_eq!(point.direction, pb::SearchDirection::After as i32);
    assert_eq!(point.time.unwrap().seconds, at(0).timestamp());
    let ebs = set.target.as_ref().unwrap().ebs.as_ref().unwrap();
    assert_eq!((ebs.region.as_str(), ebs.iops), ("us-west-2", Some(3000)));
    assert!(validate_request(&request, &Policy::default()).is_ok());

    let json = r#"{"restore_sets": [{"name": "x", "source": {"region": "us-east-1", "window": {"start": "yesterday", "end": "2026-11-20T12:00:00Z"}}, "resource_types": ["ebs"]}]}"#;
    let error = request_file::parse("r.json", json).unwrap().into_request("gen".into()).unwrap_err();
    assert!(error.to_string().starts_with("restore_sets[0].source.window.start:"), "{error}");

    let error =
        request_file::parse("r.yaml", "restore_sets: [{name: x, source: {region: us-east-1}, resource_types: [tape]}]")
            .unwrap()
            .into_request("g".into())
            .unwrap_err();
    assert!(
        error.to_string().starts_with("restore_sets[0].resource_types[0]: unknown resource type 'tape'"),
        "{error}"
    );

    let error = request_file::parse("r.yaml", "restore_sets: []\nsurprise: 1").unwrap_err();
    assert!(error.to_string().contains("unknown field `surprise`"), "{error}");
}

#[test]
fn tables_show_the_resource_part_of_arns() {
    use lifeboat_cli::render::short_id;
    assert_eq!(short_id("arn:aws:dynamodb:us-east-1:123456789012:table/orders-restored"), "table/orders-restored");
    assert_eq!(short_id("arn:aws:dynamodb:us-east-1:123456789012:table/orders/backup/0179-51f"), "backup/0179-51f");
    assert_eq!(short_id("vol-0123"), "vol-0123");
}

#[test]
fn validation_names_bad_fields_of_every_target_type() {
    let with = |kind: pb::ResourceType, targets: pb::Targets, pitr: bool| {
        let mut set = ebs_set("s", "us-east-1", &[], None, target("us-east-1a"));
        set.resource_types = vec![kind as i32];
        set.target = Some(targets);
        set.source.as_mut().unwrap().point_in_time_recovery = pitr;
        fields(validate_request(&request("r", vec![set]), &Policy::default()))
    };
    let ec2 = pb::Ec2Target {
        availability_zone: "us-west-2a".into(),
        security_group_ids: vec!["default".into()],
        ..Default::default()
    };
    let found = with(pb::ResourceType::Ec2Instance, pb::Targets { ec2: Some(ec2), ..Default::default() }, true);
    for expected in [
        "restore_sets[0].source.point_in_time_recovery",
        "restore_sets[0].source.point_in_time_recovery",
        "restore_sets[0].target.ec2.availability_zone",
        "restore_sets[0].target.ec2.security_group_ids[0]",
    ] {
        assert!(found.iter().any(|f| f == expected), "{expected} not in {found:?}");
    }
    let rds = pb::RdsTarget { name: "9-bad--name".into(), account_id: "1234".into(), ..Default::default() };
    let found = with(pb::ResourceType::RdsCluster, pb::Targets { rds: Some(rds), ..Default::default() }, false);
    assert_eq!(
        found,
        [
            "restore_sets[0].target.rds.account_id",
            "restore_sets[0].target.rds.db_subnet_group",
            "restore_sets[0].target.rds.name"
        ]
    );
    let dynamodb = pb::DynamoDbTarget { region: "nowhere".into(), table_name: "bad name".into(), ..Default::default() };
    let found =
        with(pb::ResourceType::DynamodbTable, pb::Targets { dynamodb: Some(dynamodb), ..Default::default() }, false);
    assert_eq!(found, ["restore_sets[0].target.dynamodb.region", "restore_sets[0].target.dynamodb.table_name"]);
    // Point-in-time recovery needs a time to recover to.
    let ok_table = pb::DynamoDbTarget { name_suffix: "x".into(), ..Default::default() };
    let found =
        with(pb::ResourceType::DynamodbTable, pb::Targets { dynamodb: Some(ok_table), ..Default::default() }, true);
    assert_eq!(found, ["restore_sets[0].source.point_in_time_recovery"]);
}

#[test]
fn a_wait_longer_than_the_deliveries_ends_as_wait_timeout_not_a_dead_letter() {
    use lifeboat_common::restore::{decide, ServiceConfig, Step};
    let config = ServiceConfig::default();
    let deliveries = config.consumer.max_deliveries;
    assert_eq!(config.max_wait_checks(0), config.wait.max_wait_checks, "the default when the request says nothing");
    assert_eq!(config.max_wait_checks(5), 5);
    // A request asking for more checks than the consumer delivers is held below the deliveries.
    let held = config.max_wait_checks(deliveries * 10);
    assert_eq!(held, deliveries - 1);
    let waiting = || Ok(Step::Waiting { what: "copy pending".into(), created: vec!["snap-copy".into()] });
    let last = decide(waiting(), held, &config.wait, held);
    assert_eq!((last.phase, last.reason_code.as_str()), (pb::TaskPhase::Failed, "WAIT_TIMEOUT"));
    assert_eq!(last.created, vec!["snap-copy".to_string()], "the verdict names what it was waiting for");
    assert!(!decide(waiting(), held - 1, &config.wait, held).phase.is_terminal());
}
