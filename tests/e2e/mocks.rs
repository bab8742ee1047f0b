//! Error paths moto cannot produce, against the real SDK client types with aws-smithy-mocks:
//! throttling and 5xx are retried with backoff, access denied fails the task with its code,
//! and the ClientToken is the task id.

use aws_sdk_ec2::operation::create_volume::{CreateVolumeError, CreateVolumeOutput};
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesOutput;
use aws_sdk_ec2::types::VolumeState;
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::ErrorMetadata;
use lifeboat_common::aws::ErrorClass;
use lifeboat_common::restore::{decide, WaitPolicy};
use lifeboat_common::Outcome;
use lifeboat_ebs::restore::Limits;
use lifeboat_ebs::{restore_step, Clients, Step};
use lifeboat_proto as pb;

fn task() -> (pb::RestoreTask, pb::EbsTarget) {
    let target = pb::EbsTarget {
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        availability_zone: "us-east-1a".into(),
        ..Default::default()
    };
    let task = pb::RestoreTask {
        request_id: "r".into(),
        task_id: "t-mocked".into(),
        backup: Some(pb::Backup {
            backup_id: "snap-1".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            ..Default::default()
        }),
        target: Some(pb::restore_task::Target::Ebs(target.clone())),
        ..Default::default()
    };
    (task, target)
}

fn no_volume_yet() -> Rule {
    mock!(Client::describe_volumes).then_output(|| DescribeVolumesOutput::builder().build())
}

fn create_fails_with(code: &'static str) -> Rule {
    mock!(Client::create_volume).then_error(move || {
        CreateVolumeError::generic(ErrorMetadata::builder().code(code).message(format!("mocked {code}")).build())
    })
}

async fn step(rules: &[&Rule]) -> Result<Step, lifeboat_common::aws::AwsError> {
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules);
    let (task, target) = task();
    restore_step(&Clients { target: ec2.clone(), source: ec2 }, &task, &target, &Limits::new(20)).await
}

#[tokio::test]
async fn throttling_is_retried_with_backoff() {
    let describe = no_volume_yet();
    let create = create_fails_with("RequestLimitExceeded");
    let error = step(&[&describe, &create]).await.unwrap_err();
    assert_eq!(error.class, ErrorClass::Retryable);
    assert_eq!(error.code, "RequestLimitExceeded");
    assert_eq!(error.operation, "ec2:CreateVolume");

    let config = WaitPolicy::default();
    let first = decide(Err(error.clone()), 1, &config, 100);
    assert_eq!(first.phase, pb::TaskPhase::Waiting);
    assert_eq!(first.reason_code, "RequestLimitExceeded");
    assert_eq!(first.outcome, Outcome::RetryAfter(config.retry_initial));
    let later = decide(Err(error), 4, &config, 100);
    assert_eq!(later.outcome, Outcome::RetryAfter(config.retry_initial * 8), "the delay doubles per attempt");
    assert_eq!(
        decide(Err(lifeboat_common::aws::AwsError::retryable("x", "Throttling", "")), 30, &config, 100).outcome,
        Outcome::RetryAfter(config.retry_max)
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let describe = no_volume_yet();
    let create = mock!(Client::create_volume).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(StatusCode::try_from(503).unwrap(), SdkBody::from("<Response><Errors><Error><Code>Unavailable</Code><Message>try later</Message></Error></Errors></Response>"))
    });
    let error = step(&[&describe, &create]).await.unwrap_err();
    assert_eq!(error.class, ErrorClass::Retryable, "{error:?}");
}

#[tokio::test]
async fn access_denied_fails_the_task_with_the_aws_code() {
    let describe = no_volume_yet();
    let create = create_fails_with("UnauthorizedOperation");
    let error = step(&[&describe, &create]).await.unwrap_err();
    assert_eq!(error.class, ErrorClass::TaskFailure);
    let decision = decide(Err(error), 1, &WaitPolicy::default(), 100);
    assert_eq!(decision.phase, pb::TaskPhase::Failed);
    assert_eq!(decision.reason_code, "UnauthorizedOperation");
    assert!(decision.message.contains("mocked UnauthorizedOperation"));
    assert_eq!(decision.outcome, Outcome::Done, "a failed task is settled, not retried");

    let describe = no_volume_yet();
    let not_found = create_fails_with("InvalidSnapshot.NotFound");
    assert_eq!(step(&[&describe, &not_found]).await.unwrap_err().class, ErrorClass::TaskFailure);
}

#[tokio::test]
async fn create_volume_uses_the_task_id_as_client_token_and_then_waits() {
    let describe = no_volume_yet();
    let create = mock!(Client::create_volume)
        .match_requests(|req| {
            req.client_token() == Some("t-mocked")
                && req.snapshot_id() == Some("snap-1")
                && req.availability_zone() == Some("us-east-1a")
        })
        .then_output(|| CreateVolumeOutput::builder().volume_id("vol-new").state(VolumeState::Creating).build());
    let result = step(&[&describe, &create]).await.unwrap();
    assert_eq!(create.num_calls(), 1);
    assert!(matches!(&result, Step::Waiting { created, .. } if created == &vec!["vol-new".to_string()]), "{result:?}");
    let config = WaitPolicy::default();
    assert_eq!(decide(Ok(result.clone()), 1, &config, 100).outcome, Outcome::RetryAfter(config.check_initial));
    let timed_out = decide(Ok(result), 100, &config, 100);
    assert_eq!((timed_out.phase, timed_out.reason_code.as_str()), (pb::TaskPhase::Failed, "WAIT_TIMEOUT"));
}

#[tokio::test]
async fn cross_region_copies_wait_for_a_slot_when_twenty_are_in_flight() {
    use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
    use aws_sdk_ec2::types::{Snapshot, SnapshotState};

    let describe = no_volume_yet();
    let no_copy_yet = mock!(Client::describe_snapshots)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("tag:lifeboat:task-id")))
        .then_output(|| DescribeSnapshotsOutput::builder().build());
    let twenty_pending = mock!(Client::describe_snapshots)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("status")))
        .then_output(|| {
            let pending = (0..20)
                .map(|i| Snapshot::builder().snapshot_id(format!("snap-{i}")).state(SnapshotState::Pending).build());
            DescribeSnapshotsOutput::builder().set_snapshots(Some(pending.collect())).build()
        });
    let copy = mock!(Client::copy_snapshot).then_output(|| {
        aws_sdk_ec2::operation::copy_snapshot::CopySnapshotOutput::builder().snapshot_id("snap-copy").build()
    });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe, &no_copy_yet, &twenty_pending, &copy]);
    let (task, mut target) = task();
    target.region = "us-west-2".into();
    target.availability_zone = "us-west-2a".into();
    let error = restore_step(&Clients { target: ec2.clone(), source: ec2 }, &task, &target, &Limits::new(20))
        .await
        .unwrap_err();
    assert_eq!((error.class, error.code.as_str()), (ErrorClass::Retryable, "CopyLimitInFlight"));
    assert_eq!(copy.num_calls(), 0, "no copy started beyond the limit");
    let decision = decide(Err(error), 1, &WaitPolicy::default(), 100);
    assert_eq!(decision.phase, pb::TaskPhase::Waiting, "the task waits for a slot, it does not fail");
}

#[tokio::test]
async fn discovery_lists_every_page_with_server_side_filters() {
    use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
    use aws_sdk_ec2::types::{Snapshot, Tag};

    let snapshot = |id: &str, volume: &str| {
        Snapshot::builder()
            .snapshot_id(id)
            .volume_id(volume)
            .owner_id("123456789012")
            .start_time(aws_smithy_types::DateTime::from_secs(1_790_000_000))
            .tags(Tag::builder().key("app").value("web").build())
            .build()
    };
    let filtered = |req: &aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsInput| {
        let filter = |name: &str, value: &str| {
            req.filters().iter().any(|f| f.name() == Some(name) && f.values() == [value.to_string()])
        };
        filter("tag:app", "web") && filter("status", "completed") && req.owner_ids() == ["123456789012".to_string()]
    };
    let first_page = mock!(Client::describe_snapshots)
        .match_requests(move |req| filtered(req) && req.next_token().is_none())
        .then_output(move || {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot("snap-1", "vol-1"))
                .snapshots(snapshot("snap-2", "vol-2"))
                .next_token("page-2")
                .build()
        });
    let second_page = mock!(Client::describe_snapshots)
        .match_requests(move |req| filtered(req) && req.next_token() == Some("page-2"))
        .then_output(move || DescribeSnapshotsOutput::builder().snapshots(snapshot("snap-3", "vol-3")).build());
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&first_page, &second_page]);
    let tags = [("app".to_string(), "web".to_string())].into();
    let found = lifeboat_discovery::ebs::list_snapshots(&ec2, "123456789012", "us-east-1", &tags).await.unwrap();
    let ids: Vec<_> = found.iter().map(|(c, _)| c.backup_id.as_str()).collect();
    assert_eq!(ids, ["snap-1", "snap-2", "snap-3"]);
    assert_eq!((first_page.num_calls(), second_page.num_calls()), (1, 1));
    assert_eq!(found[2].1.source_resource_id, "vol-3");
    assert_eq!(found[2].1.tags.get("app").map(String::as_str), Some("web"));
}

#[tokio::test]
async fn another_target_account_gets_the_snapshot_shared_and_an_encrypted_volume() {
    use aws_sdk_ec2::operation::modify_snapshot_attribute::ModifySnapshotAttributeOutput;

    let describe = no_volume_yet();
    let share = mock!(Client::modify_snapshot_attribute)
        .match_requests(|req| {
            req.snapshot_id() == Some("snap-1")
                && req
                    .create_volume_permission()
                    .map(|p| p.add().iter().any(|perm| perm.user_id() == Some("210987654321")))
                    .unwrap_or(false)
        })
        .then_output(|| ModifySnapshotAttributeOutput::builder().build());
    let create = mock!(Client::create_volume)
        .match_requests(|req| req.encrypted() == Some(true) && req.kms_key_id() == Some("alias/restores"))
        .then_output(|| CreateVolumeOutput::builder().volume_id("vol-x").state(VolumeState::Available).build());
    let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&share]);
    let target_client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe, &create]);
    let (task, mut target) = task();
    target.account_id = "210987654321".into();
    target.kms_key_id = "alias/restores".into();
    let step =
        restore_step(&Clients { target: target_client, source }, &task, &target, &Limits::new(20)).await.unwrap();
    let done =
        Step::Done { message: "volume vol-x is available".into(), created: vec!["vol-x".into()], warnings: vec![] };
    assert_eq!(step, done);
    assert_eq!((share.num_calls(), create.num_calls()), (1, 1));
}

#[test]
fn settings_that_could_not_be_restored_are_a_warning_not_a_failure() {
    let step =
        Step::Done { message: "table t is active".into(), created: vec!["t".into()], warnings: vec!["TTL".into()] };
    let decision = decide(Ok(step), 1, &WaitPolicy::default(), 100);
    assert_eq!(decision.phase, pb::TaskPhase::Succeeded);
    assert_eq!(decision.reason_code, "SETTINGS_NOT_RESTORED");
    assert!(decision.message.ends_with("not restored: TTL"), "{}", decision.message);
}

/// RDS paths moto 5.2.5 does not serve: its automated backups have no ARN or restore window
/// and its point-in-time restore needs a live source; it cannot restore from another account's
/// shared snapshot.
mod rds {
    use aws_sdk_rds::operation::describe_db_instance_automated_backups::DescribeDbInstanceAutomatedBackupsOutput;
    use aws_sdk_rds::operation::describe_db_instances::{DescribeDBInstancesError, DescribeDbInstancesOutput};
    use aws_sdk_rds::operation::describe_db_parameter_groups::DescribeDbParameterGroupsOutput;
    use aws_sdk_rds::operation::modify_db_snapshot_attribute::ModifyDbSnapshotAttributeOutput;
    use aws_sdk_rds::operation::restore_db_instance_from_db_snapshot::RestoreDbInstanceFromDbSnapshotOutput;
    use aws_sdk_rds::operation::restore_db_instance_to_point_in_time::RestoreDbInstanceToPointInTimeOutput;
    use aws_sdk_rds::types::{DbInstance, DbInstanceAutomatedBackup, DbParameterGroup, RestoreWindow, Tag};
    use aws_sdk_rds::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use aws_smithy_types::DateTime;
    use chrono::TimeZone;
    use lifeboat_discovery::rds::{instance_window, point_in_time, restore_time, Selection};
    use lifeboat_proto as pb;
    use lifeboat_rds::{instance_step, Clients, Limits, Step};

    const ARN: &str = "arn:aws:rds:us-east-1:123456789012:auto-backup:ab-orders";
    const DAY: i64 = 86_400;
    const NOW: i64 = 1_790_000_000;

    fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.timestamp_opt(secs, 0).unwrap()
    }

    fn not_found() -> DescribeDBInstancesError {
        DescribeDBInstancesError::generic(ErrorMetadata::builder().code("DBInstanceNotFound").message("gone").build())
    }

    #[tokio::test]
    async fn rds_a_deleted_instance_is_restored_to_a_point_in_time_from_its_retained_automated_backups() {
        let retained = mock!(Client::describe_db_instance_automated_backups).then_output(|| {
            DescribeDbInstanceAutomatedBackupsOutput::builder()
                .db_instance_automated_backups(
                    DbInstanceAutomatedBackup::builder()
                        .db_instance_identifier("orders")
                        .db_instance_automated_backups_arn(ARN)
                        .status("retained")
                        .engine("postgres")
                        .port(5433)
                        .restore_window(
                            RestoreWindow::builder()
                                .earliest_time(DateTime::from_secs(NOW - 3 * DAY))
                                .latest_time(DateTime::from_secs(NOW - DAY))
                                .build(),
                        )
                        .tag_list(Tag::builder().key("app").value("shop").build())
                        .build(),
                )
                .build()
        });
        let none_live = mock!(Client::describe_db_instances)
            .match_requests(|req| req.db_instance_identifier().is_none())
            .then_output(|| DescribeDbInstancesOutput::builder().build());
        let rds = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&retained, &none_live]);
        let tags = [("app".to_string(), "shop".to_string())].into();
        let names = vec!["ord*".to_string()];
        let selection = Selection { tags: &tags, names: &names };
        let kind = pb::ResourceType::RdsInstance;
        let found = point_in_time(&rds, kind, "123456789012", "us-east-1", &selection, at(NOW - 2 * DAY), false, None)
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let (backup, why) = found[0].clone();
        assert_eq!((backup.backup_id.as_str(), backup.source_resource_id.as_str()), (ARN, "orders"));
        assert_eq!(backup.restore_time.as_ref().map(|t| t.seconds), Some(NOW - 2 * DAY));
        assert!(why.contains("deleted instance"), "{why}");
        // Outside the retained window: nothing.
        let late = point_in_time(&rds, kind, "123456789012", "us-east-1", &selection, at(NOW), true, None);
        assert!(late.await.unwrap().is_empty());

        let absent = mock!(Client::describe_db_instances).then_error(not_found);
        let restore = mock!(Client::restore_db_instance_to_point_in_time)
            .match_requests(|req| {
                req.source_db_instance_automated_backups_arn() == Some(ARN)
                    && req.source_db_instance_identifier().is_none()
                    && req.target_db_instance_identifier() == Some("orders-restored")
                    && req.restore_time().map(|t| t.secs()) == Some(NOW - 2 * DAY)
                    && req.port() == Some(5433)
                    && req.db_subnet_group_name() == Some("subnets")
            })
            .then_output(|| RestoreDbInstanceToPointInTimeOutput::builder().build());
        let target_client = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&absent, &restore]);
        let target = pb::RdsTarget {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            name: "orders-restored".into(),
            db_subnet_group: "subnets".into(),
            ..Default::default()
        };
        let task = pb::RestoreTask {
            task_id: "t-pitr".into(),
            resource_type: kind as i32,
            backup: Some(backup),
            target: Some(pb::restore_task::Target::Rds(target.clone())),
            ..Default::default()
        };
        let clients = Clients { target: target_client, source: None };
        let step = instance_step(&clients, &task, &target, &Limits::new(20)).await.unwrap();
        assert!(
            matches!(&step, Step::Waiting { created, .. } if created == &["orders-restored".to_string()]),
            "{step:?}"
        );
        assert_eq!(restore.num_calls(), 1);
    }

    #[test]
    fn rds_the_restorable_window_comes_from_automated_backups_or_the_retention_period() {
        let created = NOW - 30 * DAY;
        let db = |retention: i32, created: i64| {
            DbInstance::builder()
                .db_instance_identifier("orders")
                .backup_retention_period(retention)
                .instance_create_time(DateTime::from_secs(created))
                .latest_restorable_time(DateTime::from_secs(NOW))
                .build()
        };
        // Retention, not the creation time, bounds the window of an old instance.
        assert_eq!(instance_window(&db(7, created), None), (Some(at(NOW - 7 * DAY)), Some(at(NOW))));
        // A young instance cannot be restored to before it existed.
        assert_eq!(instance_window(&db(7, NOW - DAY), None), (Some(at(NOW - DAY)), Some(at(NOW))));
        // RDS's own restore window wins when it reports one.
        let automated = DbInstanceAutomatedBackup::builder()
            .restore_window(RestoreWindow::builder().earliest_time(DateTime::from_secs(NOW - 5 * DAY)).build())
            .build();
        assert_eq!(instance_window(&db(7, created), Some(&automated)), (Some(at(NOW - 5 * DAY)), Some(at(NOW))));
        // BEFORE takes the latest restorable time at or before the point, AFTER the earliest at or
        // after it, bounded by `until`.
        let (earliest, latest) = (at(NOW - 7 * DAY), at(NOW));
        assert_eq!(restore_time(earliest, latest, at(NOW + DAY), false, None), Some(latest));
        assert_eq!(restore_time(earliest, latest, at(NOW - 9 * DAY), true, None), Some(earliest));
        assert_eq!(restore_time(earliest, latest, at(NOW - 9 * DAY), true, Some(at(NOW - 8 * DAY))), None);
        assert_eq!(restore_time(earliest, latest, at(NOW - 9 * DAY), false, None), None);
    }

    #[tokio::test]
    async fn rds_another_account_restores_from_the_shared_snapshot_arn_with_the_source_settings() {
        let absent = mock!(Client::describe_db_instances).then_error(not_found);
        let group_exists = mock!(Client::describe_db_parameter_groups)
            .match_requests(|req| req.db_parameter_group_name() == Some("ledger-params"))
            .then_output(|| {
                DescribeDbParameterGroupsOutput::builder()
                    .db_parameter_groups(DbParameterGroup::builder().db_parameter_group_name("ledger-params").build())
                    .build()
            });
        let restore = mock!(Client::restore_db_instance_from_db_snapshot)
            .match_requests(|req| {
                req.db_snapshot_identifier() == Some("arn:aws:rds:us-east-1:123456789012:snapshot:ledger-nightly")
                    && req.db_instance_identifier() == Some("ledger")
                    && req.db_parameter_group_name() == Some("ledger-params")
                    && req.multi_az() == Some(false)
                    && req.port() == Some(6000)
                    && req.storage_type() == Some("io1")
                    && req.iops() == Some(1000)
                    && req.deletion_protection() == Some(true)
                    && req.enable_iam_database_authentication() == Some(true)
                    && req.copy_tags_to_snapshot() == Some(true)
                    && req.enable_cloudwatch_logs_exports() == ["postgresql".to_string()]
                    && req.db_subnet_group_name() == Some("other-subnets")
            })
            .then_output(|| RestoreDbInstanceFromDbSnapshotOutput::builder().build());
        let share = mock!(Client::modify_db_snapshot_attribute)
            .match_requests(|req| {
                req.db_snapshot_identifier() == Some("ledger-nightly")
                    && req.attribute_name() == Some("restore")
                    && req.values_to_add() == ["111111111111".to_string()]
            })
            .then_output(|| ModifyDbSnapshotAttributeOutput::builder().build());
        let target_client = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&absent, &group_exists, &restore]);
        let source_client = mock_client!(aws_sdk_rds, RuleMode::MatchAny, [&share]);
        let settings = [
            ("snapshot_type", "manual"),
            ("db_parameter_group", "ledger-params"),
            ("multi_az", "true"),
            ("port", "5433"),
            ("storage_type", "io1"),
            ("iops", "1000"),
            ("deletion_protection", "true"),
            ("iam_database_authentication", "true"),
            ("copy_tags_to_snapshot", "true"),
            ("cloudwatch_logs_exports", "postgresql"),
        ];
        let backup = pb::Backup {
            backup_id: "ledger-nightly".into(),
            source_resource_id: "ledger".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        // Discovery keeps the source's identifier in another account; multi_az and port overridden.
        let target = pb::RdsTarget {
            account_id: "111111111111".into(),
            region: "us-east-1".into(),
            name: "ledger".into(),
            db_subnet_group: "other-subnets".into(),
            multi_az: Some(false),
            port: Some(6000),
            ..Default::default()
        };
        let task = pb::RestoreTask {
            task_id: "t-shared".into(),
            resource_type: pb::ResourceType::RdsInstance as i32,
            backup: Some(backup),
            target: Some(pb::restore_task::Target::Rds(target.clone())),
            ..Default::default()
        };
        let clients = Clients { target: target_client, source: Some(source_client) };
        let step = instance_step(&clients, &task, &target, &Limits::new(20)).await.unwrap();
        assert!(matches!(&step, Step::Waiting { created, .. } if created == &["ledger".to_string()]), "{step:?}");
        assert_eq!((share.num_calls(), restore.num_calls()), (1, 1), "shared from the source, restored in the target");
    }

    #[test]
    fn rds_targets_keep_the_source_name_elsewhere_stamp_window_backups_and_inherit_in_place() {
        use lifeboat_discovery::rds::{targets, ENCRYPTED_WITHOUT_TARGET_KEY, RDS_NAME_REQUIRED};
        let backup = |id: &str, secs: i64, encrypted: bool| pb::Backup {
            backup_id: id.into(),
            source_resource_id: "ledger".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            created_at: Some(pb::Timestamp { seconds: secs, nanos: 0 }),
            encrypted,
            settings: [("db_subnet_group", "db-subnets"), ("security_group_ids", "sg-1,sg-2")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let name_of = |planned: &(pb::Backup, pb::restore_task::Target, String)| match &planned.1 {
            pb::restore_task::Target::Rds(target) => target.clone(),
            other => panic!("{other:?}"),
        };
        let elsewhere = pb::RdsTarget {
            account_id: "111111111111".into(),
            region: "us-east-1".into(),
            db_subnet_group: "other".into(),
            ..Default::default()
        };
        let one = vec![(backup("ledger-nightly", NOW, false), String::new())];
        let planned = targets("s", "123456789012", "us-east-1", elsewhere.clone(), one.clone()).unwrap();
        assert_eq!(name_of(&planned[0]).name, "ledger", "another account keeps the source's identifier");

        let here =
            pb::RdsTarget { account_id: "123456789012".into(), region: "us-east-1".into(), ..Default::default() };
        let refused = targets("s", "123456789012", "us-east-1", here.clone(), one).unwrap_err();
        assert_eq!(refused.code, RDS_NAME_REQUIRED);

        let two = vec![(backup("a", NOW, false), String::new()), (backup("b", NOW + 3600, false), String::new())];
        let named = pb::RdsTarget { name: "ledger-restored".into(), ..here };
        let planned = targets("s", "123456789012", "us-east-1", named, two).unwrap();
        let names: Vec<String> = planned.iter().map(|p| name_of(p).name).collect();
        assert_eq!(names, ["ledger-restored-20260921141320", "ledger-restored-20260921151320"]);
        let target = name_of(&planned[0]);
        assert_eq!(target.db_subnet_group, "db-subnets", "the source's subnet group in its own account and region");
        assert_eq!(target.security_group_ids, ["sg-1", "sg-2"]);

        let encrypted = vec![(backup("vault-nightly", NOW, true), String::new())];
        let refused = targets("vault", "123456789012", "us-east-1", elsewhere, encrypted).unwrap_err();
        assert_eq!(refused.code, ENCRYPTED_WITHOUT_TARGET_KEY);
        assert!(refused.message.contains("set 'vault'"), "{}", refused.message);
    }
}
