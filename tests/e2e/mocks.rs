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

/// On AWS a copy made by CopySnapshot carries the VolumeId `vol-ffffffff`; discovery follows
/// its description back to the original (looked up by id in its region) to group it.
#[tokio::test]
async fn copies_with_the_placeholder_volume_id_are_grouped_by_their_original_volume() {
    use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
    use aws_sdk_ec2::types::{Snapshot, Tag};

    let snapshot = |id: &str, volume: &str, description: &str, at: i64| {
        Snapshot::builder()
            .snapshot_id(id)
            .volume_id(volume)
            .owner_id("123456789012")
            .description(description)
            .start_time(aws_smithy_types::DateTime::from_secs(at))
            .tags(Tag::builder().key("app").value("web").build())
            .build()
    };
    // In the DR region: three copies of three volumes' snapshots, one older copy of the first,
    // and a copy Lifeboat made while restoring (never a backup of its own).
    let listing = mock!(Client::describe_snapshots)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("status")))
        .then_output(move || {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot("snap-c1", "vol-ffffffff", "[Copied snap-o1 from us-east-1]", 1_790_000_100))
                .snapshots(snapshot(
                    "snap-c1-old",
                    "vol-ffffffff",
                    "[Copied snap-o1-old from us-east-1]",
                    1_790_000_000,
                ))
                .snapshots(snapshot("snap-c2", "vol-ffffffff", "[Copied snap-o2 from us-east-1]", 1_790_000_100))
                .snapshots(snapshot("snap-c3", "vol-ffffffff", "[Copied snap-o3 from us-east-1]", 1_790_000_100))
                .snapshots(
                    Snapshot::builder()
                        .snapshot_id("snap-restore-copy")
                        .volume_id("vol-ffffffff")
                        .owner_id("123456789012")
                        .start_time(aws_smithy_types::DateTime::from_secs(1_790_000_200))
                        .tags(Tag::builder().key("app").value("web").build())
                        .tags(Tag::builder().key("lifeboat:restore-copy").value("t-1").build())
                        .build(),
                )
                .build()
        });
    // The originals, by id in their region.
    let originals = mock!(Client::describe_snapshots)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("snapshot-id")))
        .then_output(|| DescribeSnapshotsOutput::builder().build())
        .clone();
    let original = |id: &'static str, volume: &'static str| {
        mock!(Client::describe_snapshots)
            .match_requests(move |req| {
                req.filters().iter().any(|f| f.name() == Some("snapshot-id") && f.values() == [id.to_string()])
            })
            .then_output(move || {
                DescribeSnapshotsOutput::builder()
                    .snapshots(
                        Snapshot::builder()
                            .snapshot_id(id)
                            .volume_id(volume)
                            .start_time(aws_smithy_types::DateTime::from_secs(1_789_000_000))
                            .build(),
                    )
                    .build()
            })
    };
    let (o1, o1_old, o2, o3) = (
        original("snap-o1", "vol-1"),
        original("snap-o1-old", "vol-1"),
        original("snap-o2", "vol-2"),
        original("snap-o3", "vol-3"),
    );
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&listing, &o1, &o1_old, &o2, &o3, &originals]);
    let tags = [("app".to_string(), "web".to_string())].into();
    let found = lifeboat_discovery::ebs::list_snapshots(&ec2, "123456789012", "us-west-2", &tags).await.unwrap();
    let candidates: Vec<_> = found.iter().map(|(c, _)| c.clone()).collect();
    assert!(candidates.iter().all(|c| c.backup_id != "snap-restore-copy"), "a restore copy is not a backup");
    let picked = lifeboat_discovery::select::pick(
        &candidates,
        lifeboat_discovery::select::TimeRule::Before(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
    );
    let groups: Vec<(String, String)> =
        picked.iter().map(|(i, _)| (found[*i].1.source_resource_id.clone(), found[*i].1.backup_id.clone())).collect();
    assert_eq!(
        groups,
        [
            ("vol-1".to_string(), "snap-c1".to_string()),
            ("vol-2".to_string(), "snap-c2".to_string()),
            ("vol-3".to_string(), "snap-c3".to_string())
        ],
        "three sources, three groups, each the newest copy of its own source"
    );
    assert_eq!(found[0].1.settings.get("source_region").map(String::as_str), Some("us-east-1"));
    assert_eq!(o1.num_calls(), 1, "each original looked up once, by id");
}

/// AMI copies carry no SourceInstanceId on AWS; discovery follows SourceImageId and
/// SourceImageRegion to the original (by id) to group a copy with the instance it came from,
/// and never selects an AMI Lifeboat copied while restoring.
#[tokio::test]
async fn ami_copies_are_grouped_by_the_instance_of_their_source_image() {
    use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
    use aws_sdk_ec2::types::{Image, ImageState, Tag};

    let copy = |id: &str, source_image: &str| {
        Image::builder()
            .image_id(id)
            .owner_id("123456789012")
            .state(ImageState::Available)
            .creation_date("2026-11-01T00:00:00.000Z")
            .source_image_id(source_image)
            .source_image_region("us-east-1")
            .tags(Tag::builder().key("app").value("web").build())
            .build()
    };
    let listing = mock!(Client::describe_images)
        .match_requests(|req| req.filters().iter().any(|f| f.name() == Some("state")))
        .then_output(move || {
            DescribeImagesOutput::builder()
                .images(copy("ami-c1", "ami-o1"))
                .images(copy("ami-c2", "ami-o2"))
                .images(
                    Image::builder()
                        .image_id("ami-restore-copy")
                        .owner_id("123456789012")
                        .state(ImageState::Available)
                        .creation_date("2026-11-02T00:00:00.000Z")
                        .tags(Tag::builder().key("app").value("web").build())
                        .tags(Tag::builder().key("lifeboat:restore-copy").value("t-1").build())
                        .tags(Tag::builder().key("lifeboat:source-instance").value("i-1").build())
                        .build(),
                )
                .build()
        });
    let original = |id: &'static str, instance: &'static str| {
        mock!(Client::describe_images)
            .match_requests(move |req| {
                req.filters().iter().any(|f| f.name() == Some("image-id") && f.values() == [id.to_string()])
            })
            .then_output(move || {
                DescribeImagesOutput::builder()
                    .images(Image::builder().image_id(id).source_instance_id(instance).build())
                    .build()
            })
    };
    let (o1, o2) = (original("ami-o1", "i-1"), original("ami-o2", "i-2"));
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&listing, &o1, &o2]);
    let tags = [("app".to_string(), "web".to_string())].into();
    let found = lifeboat_discovery::ami::list_images(&ec2, "123456789012", "us-west-2", &tags).await.unwrap();
    let groups: Vec<(&str, &str)> =
        found.iter().map(|(_, b)| (b.backup_id.as_str(), b.source_resource_id.as_str())).collect();
    assert_eq!(groups, [("ami-c1", "i-1"), ("ami-c2", "i-2")]);
    assert_eq!(found[0].1.settings.get("source_region").map(String::as_str), Some("us-east-1"));
}

/// An AMI whose snapshots are under the AWS-managed key cannot go to another account without a
/// key of its own: the set fails at plan time, naming it (moto's AMIs are never encrypted).
#[test]
fn an_encrypted_ami_for_another_account_needs_a_target_key() {
    let backup = pb::Backup {
        backup_id: "ami-1".into(),
        source_resource_id: "i-1".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        encrypted: true,
        kms_key_id: "arn:aws:kms:us-east-1:123456789012:alias/aws/ebs".into(),
        ..Default::default()
    };
    let target = pb::Ec2Target {
        account_id: "210987654321".into(),
        region: "us-east-1".into(),
        subnet_id: "subnet-1".into(),
        ..Default::default()
    };
    let error = lifeboat_discovery::ami::complete_target("web", &target, &backup).unwrap_err();
    assert_eq!((error.class, error.code.as_str()), (ErrorClass::TaskFailure, "ENCRYPTED_WITHOUT_TARGET_KEY"));
    assert!(error.to_string().contains("set 'web'") && error.to_string().contains("target.ec2.kms_key_id"), "{error}");
    let with_key = pb::Ec2Target { kms_key_id: "alias/restores".into(), ..target };
    assert!(lifeboat_discovery::ami::complete_target("web", &with_key, &backup).is_ok());
}
