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
use lifeboat_common::restore::Progress;
use lifeboat_common::restore::{decide, WaitPolicy};
use lifeboat_common::Outcome;
use lifeboat_ebs::{restore_step, Clients, Context, Step};
use lifeboat_proto as pb;
use std::time::Duration;

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

/// A process's shared context over its own store, without token buckets (caps still hold).
fn ebs_context(quotas: &str) -> Context {
    let store = std::sync::Arc::new(lifeboat_common::shared::MemoryStore::default());
    Context::new(
        store,
        lifeboat_common::quota::QuotaConfig::parse(quotas).unwrap(),
        std::time::Duration::from_millis(10),
    )
}

async fn step(rules: &[&Rule]) -> Result<Step, lifeboat_common::aws::AwsError> {
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules);
    let (task, target) = task();
    let clients = Clients { target: ec2.clone(), source: ec2 };
    restore_step(&ebs_context("off"), &clients, &task, &target, 1, &mut Progress::default()).await
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
    assert_jittered(&first.outcome, config.retry_initial);
    let later = decide(Err(error), 4, &config, 100);
    assert_jittered(&later.outcome, config.retry_initial * 8);
    let last = decide(Err(lifeboat_common::aws::AwsError::retryable("x", "Throttling", "")), 30, &config, 100);
    assert_jittered(&last.outcome, config.retry_max);
}

/// A retry after throttling waits between half of `full` and `full` (the delay doubles per
/// attempt up to the cap; the jitter spreads tasks throttled together).
fn assert_jittered(outcome: &Outcome, full: Duration) {
    match outcome {
        Outcome::RetryAfter(delay) => {
            assert!(*delay >= full / 2 && *delay <= full, "{delay:?} is not within [{:?}, {full:?}]", full / 2)
        }
        other => panic!("expected a retry after about {full:?}, got {other:?}"),
    }
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
    use lifeboat_common::quota::{Cap, Quotas};

    let copy = mock!(Client::copy_snapshot).then_output(|| {
        aws_sdk_ec2::operation::copy_snapshot::CopySnapshotOutput::builder().snapshot_id("snap-copy").build()
    });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&copy]);
    let (task, mut target) = task();
    target.region = "us-west-2".into();
    target.availability_zone = "us-west-2a".into();
    // Twenty other tasks (of any replica: the cap is in the shared store) hold the region's slots.
    let store = std::sync::Arc::new(lifeboat_common::shared::MemoryStore::default());
    let quotas = Quotas::new(store.clone(), Default::default());
    let slot = Quotas::slot_key(Cap::SnapshotCopies, "123456789012", "us-west-2");
    for n in 0..20 {
        let lease = std::time::Duration::from_secs(60);
        assert!(quotas.acquire(&slot, Cap::SnapshotCopies, &format!("other-{n}"), lease).await.unwrap());
    }
    let context = Context::new(store, Default::default(), std::time::Duration::from_millis(10));
    let clients = Clients { target: ec2.clone(), source: ec2 };
    let mut progress = Progress::default();
    let error = restore_step(&context, &clients, &task, &target, 1, &mut progress).await.unwrap_err();
    assert_eq!((error.class, error.code.as_str()), (ErrorClass::Retryable, "CopyLimitInFlight"));
    assert_eq!(copy.num_calls(), 0, "no copy started beyond the limit");
    assert!(progress.slots.is_empty(), "{progress:?}");
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
    let clients = Clients { target: target_client, source };
    let step = restore_step(&ebs_context("off"), &clients, &task, &target, 1, &mut Progress::default()).await.unwrap();
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
    // The originals, by id in their region: one call for all of them.
    let originals = mock!(Client::describe_snapshots)
        .match_requests(|req| {
            req.filters().iter().any(|f| {
                f.name() == Some("snapshot-id")
                    && f.values() == ["snap-o1", "snap-o1-old", "snap-o2", "snap-o3"].map(String::from)
            })
        })
        .then_output(|| {
            let original = |id: &str, volume: &str| {
                Snapshot::builder()
                    .snapshot_id(id)
                    .volume_id(volume)
                    .start_time(aws_smithy_types::DateTime::from_secs(1_789_000_000))
                    .build()
            };
            DescribeSnapshotsOutput::builder()
                .snapshots(original("snap-o1", "vol-1"))
                .snapshots(original("snap-o1-old", "vol-1"))
                .snapshots(original("snap-o2", "vol-2"))
                .snapshots(original("snap-o3", "vol-3"))
                .build()
        });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&listing, &originals]);
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
    assert_eq!(originals.num_calls(), 1, "the originals looked up together, by id");
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

/// DynamoDB: backups of deleted tables, every backup type, pagination, and the settings a
/// backup reports, as AWS returns them (moto has no SYSTEM or AWS_BACKUP types, no pages).
mod dynamodb {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::operation::describe_backup::DescribeBackupOutput;
    use aws_sdk_dynamodb::operation::list_backups::{ListBackupsInput, ListBackupsOutput};
    use aws_sdk_dynamodb::operation::list_tables::ListTablesOutput;
    use aws_sdk_dynamodb::operation::list_tags_of_resource::ListTagsOfResourceOutput;
    use aws_sdk_dynamodb::types::{
        BackupDescription, BackupStatus, BackupSummary, BackupType, BackupTypeFilter, BillingMode, KeySchemaElement,
        KeyType, ProvisionedThroughput, SourceTableDetails, SourceTableFeatureDetails, SseDescription, SseType,
        StreamSpecification, StreamViewType, Tag, TimeToLiveDescription, TimeToLiveStatus,
    };
    use aws_sdk_dynamodb::Client;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use aws_smithy_types::DateTime;
    use lifeboat_discovery::select::TimeRule;
    use lifeboat_proto as pb;

    const NOW: i64 = 1_790_000_000;
    const SYSTEM_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/backup/01-system";
    const OLDER_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/backup/00-user";
    const LOGS_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/logs/backup/01-user";
    const RECOVERY_POINT_ARN: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/orders-eu/backup/01-awsbackup";
    const KEY_ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn summary(arn: &str, table: &str, kind: BackupType, age_secs: i64) -> BackupSummary {
        BackupSummary::builder()
            .backup_arn(arn)
            .table_name(table)
            .backup_type(kind)
            .backup_status(BackupStatus::Available)
            .backup_creation_date_time(DateTime::from_secs(NOW - age_secs))
            .backup_size_bytes(3 * (1 << 30) + 1)
            .build()
    }

    /// Two pages of region-wide backups, asked for every type up to NOW: `orders` (deleted) has a
    /// SYSTEM and an older user backup, `orders-eu` (deleted) an AWS Backup recovery point.
    fn pages() -> (Rule, Rule) {
        let region_wide = |req: &ListBackupsInput| {
            req.backup_type() == Some(&BackupTypeFilter::All)
                && req.table_name().is_none()
                && req.time_range_lower_bound().is_none()
                && req.time_range_upper_bound() == Some(&DateTime::from_secs(NOW + 1))
        };
        let first = mock!(Client::list_backups)
            .match_requests(move |req| region_wide(req) && req.exclusive_start_backup_arn().is_none())
            .then_output(|| {
                ListBackupsOutput::builder()
                    .backup_summaries(summary(SYSTEM_ARN, "orders", BackupType::System, 60))
                    .backup_summaries(summary(OLDER_ARN, "orders", BackupType::User, 86_400))
                    .backup_summaries(summary(LOGS_ARN, "logs", BackupType::User, 60))
                    .last_evaluated_backup_arn(LOGS_ARN)
                    .build()
            });
        let second = mock!(Client::list_backups)
            .match_requests(move |req| region_wide(req) && req.exclusive_start_backup_arn() == Some(LOGS_ARN))
            .then_output(|| {
                let creating = BackupSummary::builder()
                    .backup_arn("arn:aws:dynamodb:us-east-1:123456789012:table/orders-new/backup/02")
                    .table_name("orders-new")
                    .backup_status(BackupStatus::Creating)
                    .backup_creation_date_time(DateTime::from_secs(NOW - 5))
                    .build();
                ListBackupsOutput::builder()
                    .backup_summaries(summary(RECOVERY_POINT_ARN, "orders-eu", BackupType::AwsBackup, 120))
                    .backup_summaries(creating)
                    .build()
            });
        (first, second)
    }

    fn no_tables() -> Rule {
        mock!(Client::list_tables).then_output(|| ListTablesOutput::builder().build())
    }

    fn recovery_point_tags(tags: &'static [(&'static str, &'static str)]) -> Rule {
        mock!(Client::list_tags_of_resource)
            .match_requests(|req| req.resource_arn() == Some(RECOVERY_POINT_ARN))
            .then_output(move || {
                let tags = tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap());
                ListTagsOfResourceOutput::builder().set_tags(Some(tags.collect())).build()
            })
    }

    /// What DescribeBackup reports of the deleted `orders` table: on demand, TTL, a stream, a CMK.
    fn described_backups() -> Rule {
        mock!(Client::describe_backup).then_output(|| {
            let table = SourceTableDetails::builder()
                .table_name("orders")
                .table_id("0f0e-orders")
                .key_schema(KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build().unwrap())
                .table_creation_date_time(DateTime::from_secs(NOW - 1_000_000))
                .provisioned_throughput(
                    ProvisionedThroughput::builder().read_capacity_units(0).write_capacity_units(0).build().unwrap(),
                )
                .billing_mode(BillingMode::PayPerRequest)
                .build()
                .unwrap();
            let features = SourceTableFeatureDetails::builder()
                .time_to_live_description(
                    TimeToLiveDescription::builder()
                        .attribute_name("expires_at")
                        .time_to_live_status(TimeToLiveStatus::Enabled)
                        .build(),
                )
                .stream_description(
                    StreamSpecification::builder()
                        .stream_enabled(true)
                        .stream_view_type(StreamViewType::NewImage)
                        .build()
                        .unwrap(),
                )
                .sse_description(SseDescription::builder().sse_type(SseType::Kms).kms_master_key_arn(KEY_ARN).build())
                .build();
            DescribeBackupOutput::builder()
                .backup_description(
                    BackupDescription::builder()
                        .source_table_details(table)
                        .source_table_feature_details(features)
                        .build(),
                )
                .build()
        })
    }

    fn source(names: &[&str], tags: &[(&str, &str)]) -> pb::Source {
        pb::Source {
            region: "us-east-1".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    async fn selected(
        source: &pb::Source,
        recovery_point: &'static [(&'static str, &'static str)],
    ) -> Vec<(pb::Backup, String)> {
        let (first, second) = pages();
        let (tables, tags, described) = (no_tables(), recovery_point_tags(recovery_point), described_backups());
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&first, &second, &tables, &tags, &described]);
        let rule = TimeRule::Before(chrono::DateTime::from_timestamp(NOW, 0).unwrap());
        let found =
            lifeboat_discovery::dynamodb::backups(&ddb, source, rule, "123456789012", "us-east-1").await.unwrap();
        assert_eq!((first.num_calls(), second.num_calls()), (1, 1), "both pages, once each");
        found
    }

    fn settings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[tokio::test]
    async fn deleted_tables_are_found_in_every_backup_type_over_all_pages_with_their_settings() {
        let found = selected(&source(&["orders*"], &[]), &[("app", "shop")]).await;
        let ids: Vec<_> = found.iter().map(|(b, _)| (b.source_resource_id.as_str(), b.backup_id.as_str())).collect();
        assert_eq!(ids, [("orders", SYSTEM_ARN), ("orders-eu", RECOVERY_POINT_ARN)], "the newest of each; not logs");

        let (orders, why) = &found[0];
        assert_eq!(
            orders.settings,
            settings(&[
                ("table_deleted", "true"),
                ("billing_mode", "PAY_PER_REQUEST"),
                ("ttl_attribute", "expires_at"),
                ("stream_view_type", "NEW_IMAGE"),
                ("sse_kms_key_arn", KEY_ARN),
                // A SYSTEM backup is what DynamoDB keeps of a deleted table that had PITR on.
                ("point_in_time_recovery", "true"),
            ])
        );
        assert!((orders.encrypted, orders.kms_key_id.as_str()) == (true, KEY_ARN));
        assert_eq!(orders.size_gib, 4, "rounded up from the backup's size");
        assert!(orders.tags.is_empty());
        assert!(why.starts_with("newest of 2 at or before"), "{why}");
        assert!(why.ends_with("table orders no longer exists, restored from its SYSTEM backup"), "{why}");

        let (orders_eu, why) = &found[1];
        assert_eq!(orders_eu.tags, settings(&[("app", "shop")]), "the recovery point's tags");
        assert!(why.ends_with("restored from its AWS Backup recovery point (its backup's tags)"), "{why}");
    }

    #[tokio::test]
    async fn a_deleted_table_without_known_tags_is_selected_by_name_only() {
        // Tags and names: `orders` has no known tags, so its name decides; the recovery point of
        // `orders-eu` carries tags, and they do not match.
        let found = selected(&source(&["orders*"], &[("app", "shop")]), &[("app", "other")]).await;
        let ids: Vec<_> = found.iter().map(|(b, _)| b.source_resource_id.as_str()).collect();
        assert_eq!(ids, ["orders"]);
        assert!(found[0].1.ends_with("(selected by name only: its tags are not known)"), "{}", found[0].1);

        // Tags only: a deleted table is selected only where its backup's tags say so.
        let found = selected(&source(&[], &[("app", "shop")]), &[("app", "shop")]).await;
        let ids: Vec<_> = found.iter().map(|(b, _)| b.source_resource_id.as_str()).collect();
        assert_eq!(ids, ["orders-eu"]);
    }

    #[test]
    fn backups_are_listed_only_for_the_time_the_rule_can_pick_from() {
        use lifeboat_discovery::dynamodb::time_bounds;
        let at = |secs: i64| chrono::DateTime::from_timestamp(secs, 0).unwrap();
        // ListBackups' lower bound is inclusive, its upper bound exclusive.
        assert_eq!(time_bounds(TimeRule::Before(at(NOW))), (None, Some(at(NOW + 1))));
        assert_eq!(time_bounds(TimeRule::After(at(NOW))), (Some(at(NOW)), None));
        assert_eq!(time_bounds(TimeRule::Between(at(NOW), at(NOW + 60))), (Some(at(NOW)), Some(at(NOW + 61))));
        assert_eq!(time_bounds(TimeRule::Window(at(NOW), at(NOW + 60))), (Some(at(NOW)), Some(at(NOW + 61))));
        // The catalog's "everything": no bounds, and no overflow.
        let everything =
            TimeRule::Window(chrono::DateTime::<chrono::Utc>::MIN_UTC, chrono::DateTime::<chrono::Utc>::MAX_UTC);
        assert_eq!(time_bounds(everything), (None, None));
    }

    #[test]
    fn another_account_is_refused_with_what_to_do_instead() {
        use lifeboat_discovery::dynamodb::cross_account_check;
        assert!(cross_account_check("s", "123456789012", "123456789012", "").is_ok());
        let same_role = "arn:aws:iam::123456789012:role/Restore";
        assert!(cross_account_check("s", "123456789012", "123456789012", same_role).is_ok());
        let error = cross_account_check("dr", "123456789012", "210987654321", "").unwrap_err();
        assert_eq!((error.code.as_str(), error.class), ("CROSS_ACCOUNT_UNSUPPORTED", super::ErrorClass::TaskFailure));
        assert!(error.message.starts_with("set 'dr': DynamoDB cannot restore a backup of account 123456789012"));
        // A role in another account would land the table there too.
        let error =
            cross_account_check("dr", "123456789012", "123456789012", "arn:aws:iam::210987654321:role/R").unwrap_err();
        assert!(error.message.contains("into account 210987654321"), "{}", error.message);
    }

    fn restore_task(settings_: &[(&str, &str)], kms_key_id: &str) -> (pb::RestoreTask, pb::DynamoDbTarget) {
        let target = pb::DynamoDbTarget {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table_name: "orders-restored".into(),
            kms_key_id: kms_key_id.into(),
            ..Default::default()
        };
        let task = pb::RestoreTask {
            request_id: "r".into(),
            task_id: "t-ddb".into(),
            backup: Some(pb::Backup {
                backup_id: SYSTEM_ARN.into(),
                source_resource_id: "orders".into(),
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                settings: settings(settings_),
                ..Default::default()
            }),
            target: Some(pb::restore_task::Target::Dynamodb(target.clone())),
            ..Default::default()
        };
        (task, target)
    }

    fn gate() -> lifeboat_dynamodb::Gate {
        let store = std::sync::Arc::new(lifeboat_common::shared::MemoryStore::default());
        lifeboat_dynamodb::Gate::new(store, Default::default())
    }

    fn no_table_yet() -> Rule {
        mock!(Client::describe_table).then_error(|| {
            aws_sdk_dynamodb::operation::describe_table::DescribeTableError::generic(
                aws_smithy_types::error::ErrorMetadata::builder().code("ResourceNotFoundException").build(),
            )
        })
    }

    async fn restore_encrypted_with(settings_: &[(&str, &str)], target_key: &str, expected_key: &'static str) {
        use aws_sdk_dynamodb::operation::restore_table_from_backup::RestoreTableFromBackupOutput;
        let describe = no_table_yet();
        let restore = mock!(Client::restore_table_from_backup)
            .match_requests(move |req| {
                let sse = req.sse_specification_override();
                req.backup_arn() == Some(SYSTEM_ARN)
                    && sse.is_some_and(|s| {
                        s.enabled() == Some(true)
                            && s.sse_type() == Some(&SseType::Kms)
                            && s.kms_master_key_id() == Some(expected_key)
                    })
            })
            .then_output(|| RestoreTableFromBackupOutput::builder().build());
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &restore]);
        let (task, target) = restore_task(settings_, target_key);
        let step =
            lifeboat_dynamodb::restore_step(&ddb, &task, &target, &mut Default::default(), &gate()).await.unwrap();
        assert!(matches!(step, lifeboat_common::restore::Step::Waiting { .. }), "{step:?}");
        assert_eq!(restore.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_restore_is_encrypted_with_the_target_key_else_the_source_key() {
        restore_encrypted_with(&[("sse_kms_key_arn", KEY_ARN)], "alias/restores", "alias/restores").await;
        restore_encrypted_with(&[("sse_kms_key_arn", KEY_ARN)], "", KEY_ARN).await;
    }

    #[tokio::test]
    async fn the_settings_of_a_deleted_table_are_put_back_on_the_restored_one() {
        use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
        use aws_sdk_dynamodb::operation::describe_time_to_live::DescribeTimeToLiveOutput;
        use aws_sdk_dynamodb::operation::tag_resource::TagResourceOutput;
        use aws_sdk_dynamodb::operation::update_continuous_backups::UpdateContinuousBackupsOutput;
        use aws_sdk_dynamodb::operation::update_table::UpdateTableOutput;
        use aws_sdk_dynamodb::operation::update_time_to_live::UpdateTimeToLiveOutput;
        use aws_sdk_dynamodb::types::{BillingModeSummary, RestoreSummary, TableDescription, TableStatus};
        use lifeboat_common::restore::Step;

        let restored = |stream: bool| {
            let table = TableDescription::builder()
                .table_name("orders-restored")
                .table_arn("arn:aws:dynamodb:us-east-1:123456789012:table/orders-restored")
                .table_status(TableStatus::Active)
                .billing_mode_summary(BillingModeSummary::builder().billing_mode(BillingMode::PayPerRequest).build())
                .restore_summary(
                    RestoreSummary::builder()
                        .source_backup_arn(SYSTEM_ARN)
                        .restore_date_time(DateTime::from_secs(NOW))
                        .restore_in_progress(false)
                        .build()
                        .unwrap(),
                );
            let table = if stream {
                table.stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(true)
                        .stream_view_type(StreamViewType::NewImage)
                        .build()
                        .unwrap(),
                )
            } else {
                table
            };
            DescribeTableOutput::builder().table(table.build()).build()
        };
        let update_stream = mock!(Client::update_table)
            .match_requests(|req| {
                req.stream_specification().is_some_and(|s| s.stream_view_type() == Some(&StreamViewType::NewImage))
            })
            .then_output(|| UpdateTableOutput::builder().build());
        let ttl_off = mock!(Client::describe_time_to_live).then_output(|| DescribeTimeToLiveOutput::builder().build());
        let ttl_on = mock!(Client::update_time_to_live)
            .match_requests(|req| req.time_to_live_specification().is_some_and(|t| t.attribute_name() == "expires_at"))
            .then_output(|| UpdateTimeToLiveOutput::builder().build());
        let pitr =
            mock!(Client::update_continuous_backups).then_output(|| UpdateContinuousBackupsOutput::builder().build());
        let tag = mock!(Client::tag_resource).then_output(|| TagResourceOutput::builder().build());
        let (task, target) = restore_task(
            &[
                ("table_deleted", "true"),
                ("billing_mode", "PAY_PER_REQUEST"),
                ("ttl_attribute", "expires_at"),
                ("stream_view_type", "NEW_IMAGE"),
                ("point_in_time_recovery", "true"),
            ],
            "",
        );

        // First check: the stream is missing, one UpdateTable is started and the task waits.
        let describe = mock!(Client::describe_table).then_output(move || restored(false));
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &update_stream, &tag]);
        let step =
            lifeboat_dynamodb::restore_step(&ddb, &task, &target, &mut Default::default(), &gate()).await.unwrap();
        assert!(
            matches!(&step, Step::Waiting { what, .. } if what.ends_with("applying stream (NEW_IMAGE)")),
            "{step:?}"
        );
        assert_eq!((describe.num_calls(), update_stream.num_calls(), tag.num_calls()), (1, 1, 0));

        // Next check: the stream is there; TTL, PITR and tags are put back, and the one thing that
        // cannot be is named.
        let describe = mock!(Client::describe_table).then_output(move || restored(true));
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &ttl_off, &ttl_on, &pitr, &tag]);
        let step =
            lifeboat_dynamodb::restore_step(&ddb, &task, &target, &mut Default::default(), &gate()).await.unwrap();
        let Step::Done { warnings, .. } = step else { panic!("{step:?}") };
        assert_eq!(warnings, ["source tags (table orders no longer exists and its backup carries none)"]);
        assert_eq!((describe.num_calls(), ttl_on.num_calls(), pitr.num_calls(), tag.num_calls()), (1, 1, 1, 1));
    }

    #[tokio::test]
    async fn a_backup_of_another_account_is_not_restored() {
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&no_table_yet()]);
        let (task, mut target) = restore_task(&[], "");
        target.account_id = "210987654321".into();
        let step =
            lifeboat_dynamodb::restore_step(&ddb, &task, &target, &mut Default::default(), &gate()).await.unwrap();
        assert!(
            matches!(&step, lifeboat_common::restore::Step::Failed { code, .. } if code == "CROSS_ACCOUNT_UNSUPPORTED"),
            "{step:?}"
        );
    }
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
    use lifeboat_rds::{instance_step, Clients, Context, Step};

    const ARN: &str = "arn:aws:rds:us-east-1:123456789012:auto-backup:ab-orders";
    const DAY: i64 = 86_400;
    const NOW: i64 = 1_790_000_000;

    fn context() -> Context {
        let store = std::sync::Arc::new(lifeboat_common::shared::MemoryStore::default());
        Context::new(store, lifeboat_common::quota::QuotaConfig::default())
    }

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
        let step = instance_step(&context(), &clients, &task, &target, 1, &mut Default::default()).await.unwrap();
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
        let step = instance_step(&context(), &clients, &task, &target, 1, &mut Default::default()).await.unwrap();
        assert!(matches!(&step, Step::Waiting { created, .. } if created == &["ledger".to_string()]), "{step:?}");
        assert_eq!((share.num_calls(), restore.num_calls()), (1, 1), "shared from the source, restored in the target");
    }

    #[test]
    fn rds_targets_keep_the_source_name_elsewhere_stamp_window_backups_and_inherit_in_place() {
        use lifeboat_discovery::rds::{targets, ENCRYPTED_WITHOUT_TARGET_KEY};
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
        let planned = targets("s", "123456789012", "us-east-1", elsewhere.clone(), one).unwrap();
        assert_eq!(name_of(&planned[0]).name, "ledger", "another account keeps the source's identifier");

        let here =
            pb::RdsTarget { account_id: "123456789012".into(), region: "us-east-1".into(), ..Default::default() };
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

/// Who manages a backup's key decides whether another account can get it: KMS is asked once per
/// key; an AWS-managed key is refused at plan time without a target key, a customer managed one
/// is shared, and a key KMS will not describe is judged by its name.
#[tokio::test]
async fn kms_says_which_encrypted_backups_another_account_can_use() {
    use aws_sdk_kms::operation::describe_key::{DescribeKeyError, DescribeKeyOutput};
    use aws_sdk_kms::types::{KeyManagerType, KeyMetadata};
    let metadata = |id: &str, manager: KeyManagerType| {
        DescribeKeyOutput::builder()
            .key_metadata(KeyMetadata::builder().key_id(id).key_manager(manager).build().unwrap())
            .build()
    };
    let aws_key = "arn:aws:kms:us-east-1:123456789012:key/aws-owned-ebs";
    let customer_key = "arn:aws:kms:us-east-1:123456789012:key/customer";
    let gone_key = "arn:aws:kms:us-east-1:123456789012:key/gone";
    let aws_rule = mock!(aws_sdk_kms::Client::describe_key)
        .match_requests(move |r| r.key_id() == Some(aws_key))
        .then_output(move || metadata(aws_key, KeyManagerType::Aws));
    let customer_rule = mock!(aws_sdk_kms::Client::describe_key)
        .match_requests(move |r| r.key_id() == Some(customer_key))
        .then_output(move || metadata(customer_key, KeyManagerType::Customer));
    let gone_rule = mock!(aws_sdk_kms::Client::describe_key)
        .match_requests(move |r| r.key_id() == Some(gone_key))
        .then_error(|| {
            DescribeKeyError::NotFoundException(
                aws_sdk_kms::types::error::NotFoundException::builder().message("no such key").build(),
            )
        });
    let kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&aws_rule, &customer_rule, &gone_rule]);
    let snapshot = |id: &str, key: &str| pb::Backup {
        backup_id: id.into(),
        source_resource_id: format!("vol-{id}"),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        encrypted: !key.is_empty(),
        kms_key_id: key.into(),
        ..Default::default()
    };
    let mut backups = vec![
        snapshot("snap-a1", aws_key),
        snapshot("snap-a2", aws_key),
        snapshot("snap-c", customer_key),
        snapshot("snap-g", gone_key),
        snapshot("snap-plain", ""),
    ];
    lifeboat_discovery::keys::note_key_managers(&kms, backups.iter_mut().collect()).await.unwrap();
    assert_eq!(aws_rule.num_calls(), 1, "one DescribeKey per key");
    assert_eq!(customer_rule.num_calls(), 1);
    assert_eq!(gone_rule.num_calls(), 1);
    use lifeboat_discovery::keys::{is_aws_managed, is_customer_managed};
    assert!(is_aws_managed(&backups[0]) && is_aws_managed(&backups[1]));
    assert!(!is_aws_managed(&backups[2]) && is_customer_managed(&backups[2]));
    assert!(!is_aws_managed(&backups[3]) && !is_customer_managed(&backups[3]), "unknown: judged by its name");

    // Another account: the AWS-managed one is refused at plan time, the customer's is planned.
    let target = pb::EbsTarget {
        account_id: "111111111111".into(),
        region: "us-east-1".into(),
        availability_zone: "us-east-1a".into(),
        ..Default::default()
    };
    let refused = lifeboat_discovery::ebs::complete_target("web", &target, &backups[0]).unwrap_err();
    assert_eq!(refused.code, "ENCRYPTED_WITHOUT_TARGET_KEY");
    assert!(lifeboat_discovery::ebs::complete_target("web", &target, &backups[2]).is_ok());
}

/// A request that could not go out on a pooled connection the server had closed (hyper's
/// `SendRequest`, as moto produces under load) is retried; other connector errors are left to
/// the SDK's own classifiers.
#[test]
fn a_request_refused_by_a_stale_pooled_connection_is_retried() {
    use aws_smithy_runtime_api::client::interceptors::context::{Input, InterceptorContext};
    use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};
    use lifeboat_common::aws::ReusedConnection;

    let classify = |message: &str| {
        let mut context = InterceptorContext::new(Input::doesnt_matter());
        let source: Box<dyn std::error::Error + Send + Sync> = message.into();
        context.set_output_or_error(Err(OrchestratorError::connector(ConnectorError::other(source, None))));
        ReusedConnection.classify_retry(&context)
    };
    let stale = "client error (SendRequest): received unexpected message from connection";
    assert_eq!(classify(stale), RetryAction::transient_error());
    assert_eq!(classify("certificate verify failed"), RetryAction::NoActionIndicated);
}
