//! EC2 backups end to end: an AMI of each selected instance (without a reboot on request),
//! tagged as a recovery point on the image and its snapshots, copied to another region; an
//! instance deleted since selection; a task delivered twice. Cross-account copies, which moto
//! cannot make (its CopyImage reads the source from the destination's account), against mocks.

use std::collections::HashMap;

use aws_sdk_ec2::types::{Image, InstanceType};
use lifeboat_common::backup::{self, copy_role, PointTags, ROLE_POINT};
use lifeboat_common::bus::OutgoingMessage;
use lifeboat_common::subjects::{self, TAG_SOURCE_INSTANCE, TAG_TASK_ID};
use lifeboat_proto as pb;
use lifeboat_tests::*;

async fn launch(ec2: &aws_sdk_ec2::Client) -> String {
    let base = ec2.describe_images().owners("amazon").send().await.unwrap();
    let base_image = base.images().first().unwrap().image_id().unwrap().to_string();
    let launched = ec2
        .run_instances()
        .image_id(base_image)
        .min_count(1)
        .max_count(1)
        .instance_type(InstanceType::T3Micro)
        .send()
        .await
        .unwrap();
    launched.instances()[0].instance_id().unwrap().to_string()
}

fn run(copy_to: Vec<pb::CopyDestination>) -> pb::BackupRun {
    pb::BackupRun {
        plan: "prod".into(),
        rule: "nightly".into(),
        due_id: "prod/nightly/2026-12-03T01:00:00Z".into(),
        retention: Some(pb::Retention { days: 7, ..Default::default() }),
        copy_to,
        options: Some(pb::BackupOptions { no_reboot: true, ..Default::default() }),
        tags: [("owner".to_string(), "platform".to_string())].into(),
        ..Default::default()
    }
}

fn instance_task(request_id: &str, run: &pb::BackupRun, instance_id: &str) -> pb::RestoreTask {
    let job = pb::BackupTask {
        run: Some(run.clone()),
        resource_id: instance_id.into(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        resource_tags: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    };
    backup::task(request_id, pb::ResourceType::Ec2Instance, job)
}

/// The plan (one task per task id), then each delivery under its own dedupe id.
async fn publish(servers: &Servers, request_id: &str, tasks: &[(&pb::RestoreTask, &str)]) {
    let bus = servers.shared_bus().await;
    let planned: std::collections::BTreeSet<_> = tasks.iter().map(|(task, _)| &task.task_id).collect();
    report_planned(bus.clone(), request_id, planned.len() as u32).await;
    for (task, dedupe_id) in tasks {
        bus.publish(OutgoingMessage::proto(subjects::work_subject("ec2"), *task).dedupe_id(*dedupe_id)).await.unwrap();
    }
}

fn tags_of(image: &Image) -> HashMap<String, String> {
    image.tags().iter().map(|t| (t.key().unwrap_or_default().into(), t.value().unwrap_or_default().into())).collect()
}

async fn images_of_task(ec2: &aws_sdk_ec2::Client, task_id: &str) -> Vec<Image> {
    let filter = aws_sdk_ec2::types::Filter::builder().name(format!("tag:{TAG_TASK_ID}")).values(task_id).build();
    ec2.describe_images().owners("self").filters(filter).send().await.unwrap().images().to_vec()
}

#[tokio::test]
async fn an_instance_is_backed_up_as_a_tagged_ami_and_copied_to_another_region() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let west = servers.ec2("us-west-2");
    let instance_id = launch(&east).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let copy_to = pb::CopyDestination {
        region: "us-west-2".into(),
        retention: Some(pb::Retention { days: 30, ..Default::default() }),
        ..Default::default()
    };
    let run = run(vec![copy_to]);
    let task = instance_task("bk-ec2-1", &run, &instance_id);
    publish(&servers, "bk-ec2-1", &[(&task, "bk-ec2-1")]).await;
    let summary = final_summary(&servers.client().await, "bk-ec2-1").await;

    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    let created = &summary.tasks[0].created_resource_ids;
    assert_eq!(created.len(), 2, "the AMI and its copy: {created:?}");
    let (ami, copy) = (&created[0], &created[1]);

    let image = east.describe_images().image_ids(ami).send().await.unwrap().images()[0].clone();
    assert_eq!(image.name(), Some(format!("lifeboat-{}", task.task_id).as_str()));
    let tags = tags_of(&image);
    assert_eq!(tags.get(TAG_SOURCE_INSTANCE), Some(&instance_id), "{tags:?}");
    assert_eq!((tags["app"].as_str(), tags["owner"].as_str()), ("web", "platform"), "resource and plan tags");
    let point = PointTags::parse(&tags).expect("the AMI describes itself");
    assert_eq!((point.plan.as_str(), point.rule.as_str()), ("prod", "nightly"));
    assert_eq!((point.task_id.as_str(), point.resource_id.as_str()), (task.task_id.as_str(), instance_id.as_str()));
    assert_eq!(point.retention.as_ref().map(|r| r.days), Some(7));
    assert!(point.expires_at.is_some() && point.copy_of.is_none(), "{point:?}");
    let snapshots: Vec<String> = image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect();
    assert!(!snapshots.is_empty(), "{image:?}");
    let described = east.describe_snapshots().set_snapshot_ids(Some(snapshots)).send().await.unwrap();
    for snapshot in described.snapshots() {
        let snapshot_tags: HashMap<_, _> =
            snapshot.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
        assert_eq!(snapshot_tags.get(TAG_TASK_ID), Some(&task.task_id.as_str()), "the AMI's tags: {snapshot_tags:?}");
        assert_eq!(snapshot_tags.get("lifeboat:plan"), Some(&"prod"));
    }

    let copied = west.describe_images().image_ids(copy).send().await.unwrap().images()[0].clone();
    let copy_tags = tags_of(&copied);
    assert_eq!(copy_tags.get(TAG_SOURCE_INSTANCE), Some(&instance_id), "{copy_tags:?}");
    let copy_point = PointTags::parse(&copy_tags).expect("the copy describes itself");
    assert_eq!(copy_point.copy_of.as_deref(), Some(ami.as_str()));
    assert_eq!(copy_point.retention.map(|r| r.days), Some(30), "the destination's retention");
    assert_eq!(images_of_task(&west, &task.task_id).await.len(), 1);
    assert_eq!(images_of_task(&east, &task.task_id).await.len(), 1, "one AMI in the source region");
}

#[tokio::test]
async fn an_instance_deleted_since_selection_fails_its_task_with_the_aws_code() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let instance_id = launch(&east).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let run = run(Vec::new());
    let kept = instance_task("bk-ec2-2", &run, &instance_id);
    let gone = instance_task("bk-ec2-2", &run, "i-0123456789abcdef0");
    publish(&servers, "bk-ec2-2", &[(&kept, "kept"), (&gone, "gone")]).await;
    let summary = final_summary(&servers.client().await, "bk-ec2-2").await;

    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let state = |task: &pb::RestoreTask| summary.tasks.iter().find(|t| t.task_id == task.task_id).unwrap().clone();
    let failed = state(&gone);
    assert_eq!(failed.phase(), pb::TaskPhase::Failed);
    assert_eq!(failed.reason_code, "InvalidInstanceID.NotFound", "{failed:?}");
    assert!(failed.created_resource_ids.is_empty());
    assert_eq!(state(&kept).phase(), pb::TaskPhase::Succeeded);
    assert!(images_of_task(&east, &gone.task_id).await.is_empty());
    assert_eq!(images_of_task(&east, &kept.task_id).await.len(), 1);
}

#[tokio::test]
async fn a_backup_task_delivered_twice_creates_one_ami() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let instance_id = launch(&east).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let task = instance_task("bk-ec2-3", &run(Vec::new()), &instance_id);
    // Distinct dedupe ids, so that the bus's dedupe does not hide the duplicate.
    publish(&servers, "bk-ec2-3", &[(&task, "first"), (&task, "second")]).await;
    let summary = final_summary(&servers.client().await, "bk-ec2-3").await;

    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    work_drained(&servers, "ec2").await;
    let images = images_of_task(&east, &task.task_id).await;
    assert_eq!(images.len(), 1, "one AMI for one task: {images:?}");
    assert_eq!(summary.tasks[0].created_resource_ids, vec![images[0].image_id().unwrap().to_string()]);
}

mod mocked {
    use super::*;
    use aws_sdk_ec2::operation::copy_image::CopyImageOutput;
    use aws_sdk_ec2::operation::create_image::CreateImageOutput;
    use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
    use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
    use aws_sdk_ec2::operation::modify_image_attribute::ModifyImageAttributeOutput;
    use aws_sdk_ec2::operation::modify_snapshot_attribute::ModifySnapshotAttributeOutput;
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, ImageState, ResourceType};
    use aws_sdk_ec2::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use lifeboat_common::restore::{Progress, Step};
    use lifeboat_ec2::backup::{step, BackupClients};
    use lifeboat_ec2::{Ec2Api, Scope};

    const OTHER: &str = "210987654321";

    fn api() -> Ec2Api {
        let store = std::sync::Arc::new(lifeboat_common::shared::MemoryStore::default());
        Ec2Api::new(store, lifeboat_common::quota::QuotaConfig::parse("off").unwrap())
    }

    fn scope(ec2: Client, account: &str, region: &str) -> Scope {
        Scope { ec2, account: account.into(), region: region.into() }
    }

    #[tokio::test]
    async fn the_ami_is_taken_without_a_reboot_and_tagged_as_the_recovery_point() {
        let create = mock!(Client::create_image)
            .match_requests(|req| {
                let image_tags =
                    req.tag_specifications().iter().find(|s| s.resource_type() == Some(&ResourceType::Image));
                let tagged = |key: &str| image_tags.is_some_and(|s| s.tags().iter().any(|t| t.key() == Some(key)));
                req.no_reboot() == Some(true)
                    && req.instance_id() == Some("i-1")
                    && tagged(TAG_TASK_ID)
                    && tagged(TAG_SOURCE_INSTANCE)
                    && tagged("lifeboat:expires-at")
            })
            .then_output(|| CreateImageOutput::builder().image_id("ami-point").build());
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&create]);
        let task = instance_task("bk-mocked", &run(Vec::new()), "i-1");
        let clients = BackupClients { source: scope(ec2, ACCOUNT, "us-east-1"), copies: Vec::new(), scripts: None };
        let mut progress = Progress::default();
        let result = step(&clients, &api(), &task, 1, &mut progress).await.unwrap();
        assert!(
            matches!(&result, Step::Waiting { created, .. } if created == &["ami-point".to_string()]),
            "{result:?}"
        );
        assert_eq!(progress.id(ROLE_POINT), Some("ami-point"), "recorded at once");
        assert_eq!(create.num_calls(), 1);
    }

    #[tokio::test]
    async fn another_account_gets_the_ami_shared_then_copies_it_with_its_key() {
        let point = || {
            Image::builder()
                .image_id("ami-point")
                .state(ImageState::Available)
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name("/dev/xvda")
                        .ebs(EbsBlockDevice::builder().snapshot_id("snap-1").build())
                        .build(),
                )
                .tags(aws_sdk_ec2::types::Tag::builder().key(TAG_TASK_ID).value("t").build())
                .build()
        };
        let describe = mock!(Client::describe_images)
            .sequence()
            .output(move || DescribeImagesOutput::builder().images(point()).build())
            .repeatedly()
            .build();
        let tag_snapshots = mock!(Client::create_tags)
            .match_requests(|req| req.resources() == ["snap-1".to_string()])
            .then_output(|| CreateTagsOutput::builder().build());
        let launch = mock!(Client::modify_image_attribute)
            .match_requests(|req| {
                req.image_id() == Some("ami-point")
                    && req.launch_permission().is_some_and(|p| p.add().iter().any(|perm| perm.user_id() == Some(OTHER)))
            })
            .then_output(|| ModifyImageAttributeOutput::builder().build());
        let volumes = mock!(Client::modify_snapshot_attribute)
            .match_requests(|req| req.snapshot_id() == Some("snap-1") && req.user_ids() == [OTHER.to_string()])
            .then_output(|| ModifySnapshotAttributeOutput::builder().build());
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe, &tag_snapshots, &launch, &volumes]);

        let not_copied_yet = mock!(Client::describe_images).then_output(|| DescribeImagesOutput::builder().build());
        let copy = mock!(Client::copy_image)
            .match_requests(|req| {
                req.source_image_id() == Some("ami-point")
                    && req.source_region() == Some("us-east-1")
                    && req.encrypted() == Some(true)
                    && req.kms_key_id() == Some("alias/vault")
                    && req.client_token().is_some_and(|t| !t.is_empty() && t.len() <= 64)
            })
            .then_output(|| CopyImageOutput::builder().image_id("ami-copy").build());
        let tag_copy = mock!(Client::create_tags)
            .match_requests(|req| req.resources() == ["ami-copy".to_string()])
            .then_output(|| CreateTagsOutput::builder().build());
        let vault = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&not_copied_yet, &copy, &tag_copy]);

        let destination = pb::CopyDestination {
            region: "eu-west-1".into(),
            account_id: OTHER.into(),
            kms_key_id: "alias/vault".into(),
            ..Default::default()
        };
        let task = instance_task("bk-mocked", &run(vec![destination.clone()]), "i-1");
        let clients = BackupClients {
            source: scope(source, ACCOUNT, "us-east-1"),
            copies: vec![scope(vault, OTHER, "eu-west-1")],
            scripts: None,
        };
        let mut progress = Progress { recorded: true, ..Default::default() };
        progress.record(ROLE_POINT, "ami-point");
        let result = step(&clients, &api(), &task, 2, &mut progress).await.unwrap();
        let created = vec!["ami-point".to_string(), "ami-copy".to_string()];
        assert!(matches!(&result, Step::Waiting { created: c, .. } if c == &created), "{result:?}");
        assert_eq!(progress.id(&copy_role(&destination, ACCOUNT)), Some("ami-copy"));
        assert_eq!((launch.num_calls(), volumes.num_calls()), (1, 1), "shared before the copy");
        assert_eq!((copy.num_calls(), tag_copy.num_calls(), tag_snapshots.num_calls()), (1, 1, 1));
    }

    fn available(id: &str) -> Image {
        Image::builder().image_id(id).name("lifeboat-t").state(ImageState::Available).build()
    }

    #[tokio::test]
    async fn nothing_is_created_once_the_completion_window_has_ended() {
        let create =
            mock!(Client::create_image).then_output(|| CreateImageOutput::builder().image_id("ami-late").build());
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&create]);
        let mut late = run(Vec::new());
        late.complete_by = Some(ts(chrono::Utc::now() - chrono::TimeDelta::minutes(1)));
        let task = instance_task("bk-mocked", &late, "i-1");
        let clients = BackupClients { source: scope(ec2, ACCOUNT, "us-east-1"), copies: Vec::new(), scripts: None };
        let result = step(&clients, &api(), &task, 1, &mut Progress::default()).await.unwrap();
        assert!(
            matches!(&result, Step::Failed { code, .. } if code == backup::reason::COMPLETION_WINDOW_EXCEEDED),
            "{result:?}"
        );
        assert_eq!(create.num_calls(), 0);
    }

    #[tokio::test]
    async fn a_later_delivery_adopts_the_ami_an_earlier_one_created_without_recording_it() {
        let by_name = mock!(Client::describe_images)
            .match_requests(|req| {
                req.owners() == ["self".to_string()]
                    && req
                        .filters()
                        .iter()
                        .any(|f| f.name() == Some("name") && f.values()[0].starts_with("lifeboat-t-"))
            })
            .then_output(|| DescribeImagesOutput::builder().images(available("ami-lost")).build());
        let create =
            mock!(Client::create_image).then_output(|| CreateImageOutput::builder().image_id("ami-twice").build());
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&by_name, &create]);
        let task = instance_task("bk-mocked", &run(Vec::new()), "i-1");
        let clients = BackupClients { source: scope(ec2, ACCOUNT, "us-east-1"), copies: Vec::new(), scripts: None };
        let mut progress = Progress::default();
        let result = step(&clients, &api(), &task, 2, &mut progress).await.unwrap();
        assert!(matches!(&result, Step::Done { created, .. } if created == &["ami-lost".to_string()]), "{result:?}");
        assert_eq!(progress.id(ROLE_POINT), Some("ami-lost"));
        assert_eq!(create.num_calls(), 0, "no second AMI");
    }

    #[tokio::test]
    async fn a_taken_name_is_our_own_ami_and_is_adopted() {
        use aws_sdk_ec2::operation::create_image::CreateImageError;
        use aws_smithy_types::error::ErrorMetadata;
        let taken = mock!(Client::create_image).then_error(|| {
            CreateImageError::generic(
                ErrorMetadata::builder().code("InvalidAMIName.Duplicate").message("in use").build(),
            )
        });
        let by_name = mock!(Client::describe_images)
            .then_output(|| DescribeImagesOutput::builder().images(available("ami-ours")).build());
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&taken, &by_name]);
        let task = instance_task("bk-mocked", &run(Vec::new()), "i-1");
        let clients = BackupClients { source: scope(ec2, ACCOUNT, "us-east-1"), copies: Vec::new(), scripts: None };
        let mut progress = Progress::default();
        let result = step(&clients, &api(), &task, 1, &mut progress).await.unwrap();
        assert!(matches!(&result, Step::Waiting { created, .. } if created == &["ami-ours".to_string()]), "{result:?}");
        assert_eq!(progress.id(ROLE_POINT), Some("ami-ours"));
    }

    #[tokio::test]
    async fn a_copy_that_cannot_be_made_fails_the_task_and_names_the_ami_that_exists() {
        use aws_sdk_ec2::operation::copy_image::CopyImageError;
        use aws_smithy_types::error::ErrorMetadata;
        let point = mock!(Client::describe_images)
            .then_output(|| DescribeImagesOutput::builder().images(available("ami-point")).build());
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&point]);
        let none = mock!(Client::describe_images).then_output(|| DescribeImagesOutput::builder().build());
        let refused = mock!(Client::copy_image).then_error(|| {
            CopyImageError::generic(
                ErrorMetadata::builder().code("InvalidRequest").message("KMS key not usable").build(),
            )
        });
        let west = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&none, &refused]);
        let destination = pb::CopyDestination { region: "us-west-2".into(), ..Default::default() };
        let task = instance_task("bk-mocked", &run(vec![destination]), "i-1");
        let clients = BackupClients {
            source: scope(source, ACCOUNT, "us-east-1"),
            copies: vec![scope(west, ACCOUNT, "us-west-2")],
            scripts: None,
        };
        let mut progress = Progress { recorded: true, ..Default::default() };
        progress.record(ROLE_POINT, "ami-point");
        let result = step(&clients, &api(), &task, 2, &mut progress).await.unwrap();
        let Step::Failed { code, message } = &result else { panic!("{result:?}") };
        assert_eq!(code, "InvalidRequest");
        assert!(message.contains("ami-point") && message.contains("us-west-2"), "{message}");
    }
}
