//! Application-consistent backups: the plan's pre and post scripts run on the instance through
//! SSM Run Command around an instance's volume-set snapshots and its AMI (against moto, which
//! runs every command successfully), and, against mocks, a pre script that fails (crash-consistent
//! snapshots with a warning, the post script still sent), one SSM refuses, and redeliveries
//! that never send a command twice.

use std::collections::HashMap;

use lifeboat_common::app_consistent::{self, TAG_CONSISTENCY};
use lifeboat_common::backup;
use lifeboat_common::bus::OutgoingMessage;
use lifeboat_common::subjects::{self, TAG_TASK_ID};
use lifeboat_proto as pb;
use lifeboat_tests::*;

const PRE: &str = "sync && fsfreeze -f /data";
const POST: &str = "fsfreeze -u /data";

fn run() -> pb::BackupRun {
    pb::BackupRun {
        plan: "prod".into(),
        rule: "nightly".into(),
        due_id: "prod/nightly/2026-12-03T01:00:00Z".into(),
        retention: Some(pb::Retention { days: 7, ..Default::default() }),
        options: Some(pb::BackupOptions {
            no_reboot: true,
            pre_script: PRE.into(),
            post_script: POST.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn task_of(request_id: &str, resource_type: pb::ResourceType, instance: &str) -> pb::RestoreTask {
    let job = pb::BackupTask {
        run: Some(run()),
        resource_id: instance.into(),
        account_id: ACCOUNT.into(),
        region: "us-east-1".into(),
        ..Default::default()
    };
    backup::task(request_id, resource_type, job)
}

async fn launch(ec2: &aws_sdk_ec2::Client) -> String {
    let base = ec2.describe_images().owners("amazon").send().await.unwrap();
    let image = base.images().first().and_then(|i| i.image_id()).unwrap().to_string();
    let launched = ec2
        .run_instances()
        .image_id(image)
        .min_count(1)
        .max_count(1)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .placement(aws_sdk_ec2::types::Placement::builder().availability_zone("us-east-1a").build())
        .send()
        .await
        .unwrap();
    launched.instances()[0].instance_id().unwrap().to_string()
}

/// Plans one task and publishes it twice under two dedupe ids (a duplicate delivery), then
/// waits for the verdict.
async fn back_up_twice(servers: &Servers, work: &str, task: &pb::RestoreTask) -> pb::RequestSummary {
    let bus = servers.shared_bus().await;
    report_planned(bus.clone(), &task.request_id, 1).await;
    for dedupe_id in ["first", "second"] {
        let message = OutgoingMessage::proto(subjects::work_subject(work), task)
            .dedupe_id(format!("{}-{dedupe_id}", task.task_id));
        bus.publish(message).await.expect("publish the task");
    }
    final_summary(&servers.client().await, &task.request_id).await
}

/// The scripts SSM ran on `instance`, by command comment.
async fn commands_on(servers: &Servers, instance: &str) -> HashMap<String, Vec<String>> {
    let ssm = aws_sdk_ssm::Client::new(&servers.aws("us-east-1"));
    let listed = ssm.list_commands().instance_id(instance).send().await.expect("ListCommands");
    listed
        .commands()
        .iter()
        .map(|c| {
            assert_eq!(c.document_name(), Some(app_consistent::DOCUMENT));
            let scripts = c.parameters().and_then(|p| p.get("commands")).cloned().unwrap_or_default();
            (c.comment().unwrap_or_default().to_string(), scripts)
        })
        .collect()
}

fn expected_commands(task: &pb::RestoreTask) -> HashMap<String, Vec<String>> {
    [
        (app_consistent::comment(task, app_consistent::Phase::Pre), vec![PRE.to_string()]),
        (app_consistent::comment(task, app_consistent::Phase::Post), vec![POST.to_string()]),
    ]
    .into()
}

#[tokio::test]
async fn an_instances_volume_set_is_snapshotted_between_its_pre_and_post_scripts() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let instance = launch(&east).await;
    let data = create_volume(&east, "us-east-1a", 20, &[]).await;
    east.attach_volume().volume_id(&data).instance_id(&instance).device("/dev/sdf").send().await.unwrap();
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let task = task_of("backup-app-set", pb::ResourceType::EbsVolumeSet, &instance);

    let summary = back_up_twice(&servers, "ebs", &task).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");
    let state = summary.tasks.iter().find(|t| t.task_id == task.task_id).unwrap();
    assert_eq!(state.reason_code, "", "no warnings: {}", state.message);
    assert!(state.message.contains("application-consistent"), "{}", state.message);

    let points = snapshots_tagged(&east, TAG_TASK_ID, &task.task_id).await;
    assert_eq!(points.len(), 2, "one snapshot per volume, once: {points:?}");
    for point in &points {
        let consistency = point.tags().iter().find(|t| t.key() == Some(TAG_CONSISTENCY)).and_then(|t| t.value());
        assert_eq!(consistency, Some("application"), "{point:?}");
    }
    assert_eq!(commands_on(&servers, &instance).await, expected_commands(&task), "each script sent once");
}

#[tokio::test]
async fn an_ami_is_taken_between_its_pre_and_post_scripts() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let instance = launch(&east).await;
    let _services = Running::start(&servers, ServiceSet { discovery: None, ..ServiceSet::default() }).await;
    let task = task_of("backup-app-ami", pb::ResourceType::Ec2Instance, &instance);

    let summary = back_up_twice(&servers, "ec2", &task).await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:?}");

    let filter = aws_sdk_ec2::types::Filter::builder().name(format!("tag:{TAG_TASK_ID}")).values(&task.task_id).build();
    let images = east.describe_images().owners("self").filters(filter).send().await.unwrap().images().to_vec();
    assert_eq!(images.len(), 1, "one AMI: {images:?}");
    let consistency = images[0].tags().iter().find(|t| t.key() == Some(TAG_CONSISTENCY)).and_then(|t| t.value());
    assert_eq!(consistency, Some("application"));
    assert_eq!(commands_on(&servers, &instance).await, expected_commands(&task), "each script sent once");
}

mod mocked {
    use aws_sdk_ec2::operation::create_snapshots::CreateSnapshotsOutput;
    use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
    use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
    use aws_sdk_ec2::types::{Snapshot, SnapshotInfo, SnapshotState, Tag};
    use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
    use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
    use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
    use aws_sdk_ssm::types::{Command, CommandInvocationStatus};
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use lifeboat_common::app_consistent::{Phase, Scripts};
    use lifeboat_common::restore::{Progress, Step};
    use lifeboat_common::subjects::TAG_SOURCE_VOLUME;
    use lifeboat_ebs::backup::{step, Clients};
    use lifeboat_ebs::Context;

    use super::*;

    fn context() -> Context {
        let store = std::sync::Arc::new(lifeboat_common::shared::MemoryStore::default());
        let quotas = lifeboat_common::quota::QuotaConfig::parse("off").unwrap();
        Context::new(store, quotas, std::time::Duration::from_millis(10))
    }

    fn sends(script: &'static str, command_id: &'static str) -> Rule {
        mock!(aws_sdk_ssm::Client::send_command)
            .match_requests(move |req| {
                req.parameters().and_then(|p| p.get("commands")).is_some_and(|c| c == &vec![script.to_string()])
                    && req.instance_ids() == ["i-1".to_string()]
            })
            .then_output(move || {
                SendCommandOutput::builder().command(Command::builder().command_id(command_id).build()).build()
            })
    }

    fn invocation(command_id: &'static str, status: CommandInvocationStatus, stderr: &'static str) -> Rule {
        mock!(aws_sdk_ssm::Client::get_command_invocation)
            .match_requests(move |req| req.command_id() == Some(command_id))
            .then_output(move || {
                let code = if status == CommandInvocationStatus::Success { 0 } else { 1 };
                GetCommandInvocationOutput::builder()
                    .command_id(command_id)
                    .status(status.clone())
                    .response_code(code)
                    .standard_error_content(stderr)
                    .build()
            })
    }

    fn no_commands() -> Rule {
        mock!(aws_sdk_ssm::Client::list_commands).then_output(|| ListCommandsOutput::builder().build())
    }

    /// An instance with one volume, whose CreateSnapshots must carry `consistency`.
    fn instance_snapshots(consistency: &'static str) -> (Rule, Vec<Rule>) {
        let create = mock!(aws_sdk_ec2::Client::create_snapshots)
            .match_requests(move |req| {
                req.tag_specifications()
                    .iter()
                    .flat_map(|s| s.tags())
                    .any(|t| t.key() == Some(TAG_CONSISTENCY) && t.value() == Some(consistency))
            })
            .then_output(|| {
                CreateSnapshotsOutput::builder()
                    .snapshots(SnapshotInfo::builder().snapshot_id("snap-a").volume_id("vol-a").build())
                    .build()
            });
        let no_lost_points = mock!(aws_sdk_ec2::Client::describe_snapshots)
            .match_requests(|req| req.filters().iter().any(|f| f.name() == Some(&format!("tag:{TAG_TASK_ID}"))))
            .then_output(|| DescribeSnapshotsOutput::builder().build());
        let tagged = mock!(aws_sdk_ec2::Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
        let completed = mock!(aws_sdk_ec2::Client::describe_snapshots).then_output(|| {
            let tag = Tag::builder().key(TAG_SOURCE_VOLUME).value("vol-a").build();
            let snapshot =
                Snapshot::builder().snapshot_id("snap-a").volume_id("vol-a").state(SnapshotState::Completed).tags(tag);
            DescribeSnapshotsOutput::builder().snapshots(snapshot.build()).build()
        });
        (create.clone(), vec![no_lost_points, create, tagged, completed])
    }

    fn set_task() -> pb::RestoreTask {
        task_of("app-mocked", pb::ResourceType::EbsVolumeSet, "i-1")
    }

    #[tokio::test]
    async fn a_pre_script_that_fails_gives_crash_consistent_snapshots_a_warning_and_still_a_thaw() {
        let task = set_task();
        let (pre, post) = (sends(PRE, "cmd-pre"), sends(POST, "cmd-post"));
        let pre_failed =
            invocation("cmd-pre", CommandInvocationStatus::Failed, "fsfreeze: /data: Device or resource busy\n");
        let post_ran = invocation("cmd-post", CommandInvocationStatus::Success, "");
        let listed = no_commands();
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&pre, &post, &pre_failed, &post_ran, &listed]);
        let (create, ec2_rules) = instance_snapshots("crash");
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &ec2_rules);
        let clients = Clients {
            source,
            destinations: Vec::new(),
            scripts: Scripts::new(ssm, task.backup_task.as_ref().unwrap()),
        };
        let context = context();
        let mut progress = Progress::default();

        let first = step(&context, &clients, &task, 1, &mut progress).await.unwrap();
        assert!(matches!(&first, Step::Waiting { what, .. } if what.contains("pre script")), "{first:?}");
        assert_eq!(progress.id(Phase::Pre.role()), Some("cmd-pre"));
        let second = step(&context, &clients, &task, 2, &mut progress).await.unwrap();
        assert!(matches!(&second, Step::Waiting { created, .. } if created == &["snap-a"]), "{second:?}");
        assert_eq!(create.num_calls(), 1, "the snapshots are taken anyway, tagged crash");
        assert_eq!(progress.id(Phase::Post.role()), Some("cmd-post"), "the post script is sent after them");

        match step(&context, &clients, &task, 3, &mut progress).await.unwrap() {
            Step::Done { message, created, warnings } => {
                assert_eq!(created, vec!["snap-a".to_string()]);
                assert!(message.ends_with("(crash-consistent)"), "{message}");
                assert_eq!(warnings.len(), 1, "{warnings:?}");
                let warning = &warnings[0];
                assert!(
                    warning.contains("pre script failed on i-1 (command cmd-pre: Failed, exit code 1)"),
                    "{warning}"
                );
                assert!(warning.contains("Device or resource busy"), "{warning}");
                assert!(warning.ends_with("backed up crash-consistent"), "{warning}");
            }
            other => panic!("not done: {other:?}"),
        }
        assert_eq!((pre.num_calls(), post.num_calls()), (1, 1), "each script sent once");
    }

    #[tokio::test]
    async fn a_pre_script_ssm_refuses_gives_crash_consistent_snapshots_and_no_post_script() {
        let task = set_task();
        let refused = mock!(aws_sdk_ssm::Client::send_command).then_error(|| {
            SendCommandError::generic(
                ErrorMetadata::builder()
                    .code("InvalidInstanceId")
                    .message("Instances [[i-1]] not in a valid state")
                    .build(),
            )
        });
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&refused]);
        let (create, ec2_rules) = instance_snapshots("crash");
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &ec2_rules);
        let clients = Clients {
            source,
            destinations: Vec::new(),
            scripts: Scripts::new(ssm, task.backup_task.as_ref().unwrap()),
        };
        let context = context();
        let mut progress = Progress::default();

        let first = step(&context, &clients, &task, 1, &mut progress).await.unwrap();
        assert!(matches!(&first, Step::Waiting { created, .. } if created == &["snap-a"]), "{first:?}");
        assert_eq!(create.num_calls(), 1);
        match step(&context, &clients, &task, 2, &mut progress).await.unwrap() {
            Step::Done { warnings, .. } => {
                assert_eq!(warnings.len(), 1, "{warnings:?}");
                assert!(
                    warnings[0].starts_with("SSM refused the pre script on i-1 (InvalidInstanceId"),
                    "{warnings:?}"
                );
            }
            other => panic!("not done: {other:?}"),
        }
        assert_eq!(refused.num_calls(), 1, "refused once, not sent again, and no post script");
    }

    #[tokio::test]
    async fn a_recorded_command_is_checked_not_sent_again() {
        let task = set_task();
        let pre = sends(PRE, "cmd-pre");
        let running = invocation("cmd-pre", CommandInvocationStatus::InProgress, "");
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&pre, &running]);
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [] as [&Rule; 0]);
        let clients = Clients {
            source,
            destinations: Vec::new(),
            scripts: Scripts::new(ssm, task.backup_task.as_ref().unwrap()),
        };
        let context = context();
        let mut progress = Progress::default();

        for attempt in 1..=3 {
            let waiting = step(&context, &clients, &task, attempt, &mut progress).await.unwrap();
            assert!(matches!(&waiting, Step::Waiting { what, .. } if what.contains("cmd-pre")), "{waiting:?}");
        }
        assert_eq!(pre.num_calls(), 1, "sent once");
        assert_eq!(running.num_calls(), 2, "then checked by id");
    }

    #[tokio::test]
    async fn a_redelivery_without_a_record_adopts_the_command_it_finds() {
        let task = set_task();
        let comment = app_consistent::comment(&task, Phase::Pre);
        let found = mock!(aws_sdk_ssm::Client::list_commands)
            .match_requests(|req| req.instance_id() == Some("i-1"))
            .then_output(move || {
                let other = Command::builder().command_id("cmd-other").comment("someone else's").build();
                let ours = Command::builder().command_id("cmd-lost").comment(&comment).build();
                ListCommandsOutput::builder().commands(other).commands(ours).build()
            });
        let send = sends(PRE, "cmd-second");
        let running = invocation("cmd-lost", CommandInvocationStatus::Pending, "");
        let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&found, &send, &running]);
        let source = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [] as [&Rule; 0]);
        let clients = Clients {
            source,
            destinations: Vec::new(),
            scripts: Scripts::new(ssm, task.backup_task.as_ref().unwrap()),
        };
        let mut progress = Progress::default();

        let waiting = step(&context(), &clients, &task, 2, &mut progress).await.unwrap();
        assert!(matches!(&waiting, Step::Waiting { what, .. } if what.contains("cmd-lost")), "{waiting:?}");
        assert_eq!(progress.id(Phase::Pre.role()), Some("cmd-lost"));
        assert_eq!(send.num_calls(), 0, "no second pre script");
    }
}
