//! The operator's commands end to end: retry re-runs exactly the failed tasks (same task ids,
//! a new generation) and recomputes the verdict; cancel ends the tasks not started CANCELLED;
//! list filters by state; a reused request id with another body is refused (409).

use std::time::Duration;

use aws_sdk_dynamodb::Client as Ddb;
use lifeboat_proto as pb;
use lifeboat_tests::*;
use serde_json::Value;

async fn create_table(ddb: &Ddb, name: &str, tags: &[(&str, &str)]) {
    fixtures::create_table(ddb, name, tags).await;
}

fn dynamodb_set(name: &str, tags: &[(&str, &str)], suffix: &str) -> pb::RestoreSet {
    let mut set = ebs_set(name, "us-east-1", tags, None, Default::default());
    set.resource_types = vec![pb::ResourceType::DynamodbTable as i32];
    set.target = Some(pb::Targets {
        dynamodb: Some(pb::DynamoDbTarget { name_suffix: suffix.into(), ..Default::default() }),
        ..Default::default()
    });
    set
}

/// The status, until `done` holds (the aggregator may not have recorded everything yet).
async fn status_until(
    client: &lifeboat_cli::client::Client,
    request_id: &str,
    done: impl Fn(&pb::RequestSummary) -> bool,
) -> pb::RequestSummary {
    for _ in 0..300 {
        if let Ok(reply) = client.status(request_id, true).await {
            if let Some(summary) = reply.summary.filter(|s| done(s)) {
                return summary;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{request_id} did not reach the expected state within 30s");
}

async fn retry_restores_exactly_the_failed_tasks_and_recomputes_the_verdict(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let ddb = Ddb::new(&servers.aws("us-east-1"));
    let mut backups = std::collections::HashMap::new();
    for name in ["orders", "users", "items"] {
        create_table(&ddb, name, &[("app", "shop")]).await;
        let backup = ddb.create_backup().table_name(name).backup_name("nightly").send().await.unwrap();
        backups.insert(name, backup.backup_details().unwrap().backup_arn().to_string());
    }
    // Someone's tables hold the names two of the restores want.
    for blocker in ["orders-restored", "users-restored"] {
        create_table(&ddb, blocker, &[("owner", "someone-else")]).await;
    }
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    client.submit(&request("retry-1", vec![dynamodb_set("tables", &[("app", "shop")], "restored")])).await.unwrap();
    let first = final_summary(&client, "retry-1").await;
    assert_eq!(verdict(&first), pb::Verdict::PartiallyFailed, "{first:#?}");
    let failed: Vec<&pb::TaskState> = first.tasks.iter().filter(|t| t.phase == pb::TaskPhase::Failed as i32).collect();
    assert_eq!(failed.len(), 2, "{first:#?}");
    assert!(failed.iter().all(|t| t.reason_code == "TargetTableExists"), "{failed:?}");
    let items_created = ddb.describe_table().table_name("items-restored").send().await.unwrap();
    let items_created_at = items_created.table().unwrap().creation_date_time().cloned();
    let succeeded = first.tasks.iter().find(|t| t.phase == pb::TaskPhase::Succeeded as i32).unwrap().clone();

    // Retrying a request that has nothing failed in a set it does not have is refused clearly.
    let refused = client.retry("retry-1", &["nope".to_string()]).await.unwrap_err();
    assert!(refused.to_string().contains("no set 'nope'"), "{refused}");

    for blocker in ["orders-restored", "users-restored"] {
        ddb.delete_table().table_name(blocker).send().await.unwrap();
    }
    let reply = client.retry("retry-1", &[]).await.expect("retry");
    let mut retried = reply.task_ids.clone();
    retried.sort();
    let mut expected: Vec<String> = failed.iter().map(|t| t.task_id.clone()).collect();
    expected.sort();
    assert_eq!(retried, expected, "exactly the failed tasks, under their own ids");
    let reopened = reply.summary.unwrap();
    assert!(!reopened.r#final, "the request runs again: {reopened:#?}");
    assert_eq!(verdict(&reopened), pb::Verdict::InProgress);

    let second = status_until(&client, "retry-1", |s| s.r#final).await;
    assert_eq!(verdict(&second), pb::Verdict::Completed, "{second:#?}");
    assert_eq!(second.counts.unwrap().succeeded, 3);
    assert_eq!(second.retries, 1);
    for name in ["orders", "users"] {
        let table = ddb.describe_table().table_name(format!("{name}-restored")).send().await.expect("restored now");
        let from = table.table().unwrap().restore_summary().and_then(|r| r.source_backup_arn().map(str::to_string));
        assert_eq!(from.as_deref(), Some(backups[name].as_str()), "{name} restored from its backup");
        let task = second.tasks.iter().find(|t| t.source_resource_id.ends_with(name)).unwrap();
        assert_eq!(task.generation, 1, "{task:?}");
        assert_eq!(task.phase, pb::TaskPhase::Succeeded as i32);
    }
    // What had succeeded was left alone: same task state, same table.
    let items = second.tasks.iter().find(|t| t.task_id == succeeded.task_id).unwrap();
    assert_eq!(items.generation, 0);
    assert_eq!(items.updated_at, succeeded.updated_at, "the succeeded task got no new event");
    let items_now = ddb.describe_table().table_name("items-restored").send().await.unwrap();
    assert_eq!(items_now.table().unwrap().creation_date_time().cloned(), items_created_at);
    let events = servers.store().await.events("retry-1", 0).await.unwrap();
    assert!(
        !events.iter().any(|r| {
            let e = r.event.as_ref().unwrap();
            e.task_id == succeeded.task_id && e.generation > 0
        }),
        "no retry of the succeeded task"
    );

    // Nothing failed any more: a second retry has nothing to do.
    let nothing = client.retry("retry-1", &[]).await.unwrap_err();
    assert!(nothing.to_string().contains("409"), "{nothing}");
}

async fn cancel_ends_the_tasks_not_started_cancelled(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    for i in 0..6 {
        let volume = create_volume(&east, "us-east-1a", 2, &[("app", "cancel"), ("Name", &format!("v{i}"))]).await;
        create_snapshot(&east, &volume, &[("app", "cancel")]).await;
    }
    // The EBS service is down: every task waits QUEUED on its work queue.
    let without_ebs = ServiceSet { ebs: None, ..ServiceSet::default() };
    let _services = Running::start(&servers, without_ebs).await;
    let client = servers.client().await;
    let target = pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() };
    let set = ebs_set("all", "us-east-1", &[("app", "cancel")], None, target);
    client.submit(&request("cancel-1", vec![set])).await.unwrap();
    let queued = status_until(&client, "cancel-1", |s| s.counts.is_some_and(|c| c.queued == 6)).await;
    assert_eq!(queued.total_tasks, 6);

    let reply = client.cancel("cancel-1", "wrong snapshot date").await.expect("cancel");
    let cancelled = reply.summary.unwrap();
    assert!(cancelled.cancelled && !cancelled.r#final, "{cancelled:#?}");

    // The service comes up and finds every task's request cancelled before starting it.
    let ebs_only = ServiceSet {
        discovery: None,
        ebs: Some(fast_ebs_config()),
        dynamodb: None,
        ec2: None,
        rds: None,
        aggregator: false,
    };
    let _ebs = Running::start(&servers, ebs_only).await;
    let summary = final_summary(&client, "cancel-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Cancelled, "{summary:#?}");
    let counts = summary.counts.unwrap();
    assert_eq!(counts.cancelled, 6, "{counts:?}");
    assert_eq!(counts.running + counts.waiting + counts.queued, 0, "no task left running");
    assert!(summary.tasks.iter().all(|t| t.reason_code == "REQUEST_CANCELLED"), "{:?}", summary.tasks);
    assert!(volumes_tagged(&east, "lifeboat:request-id", "cancel-1").await.is_empty(), "nothing was created");
    work_drained(&servers, "ebs").await;

    // A finished request cannot be cancelled.
    let again = client.cancel("cancel-1", "").await.unwrap_err();
    assert!(again.to_string().contains("409") && again.to_string().contains("already finished"), "{again}");
    let unknown = client.cancel("nobody", "").await.unwrap_err();
    assert!(unknown.to_string().contains("404"), "{unknown}");
}

async fn list_filters_by_state_and_a_reused_id_with_another_body_is_refused(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let volume = create_volume(&east, "us-east-1a", 3, &[("app", "list")]).await;
    create_snapshot(&east, &volume, &[("app", "list")]).await;
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let target = pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() };
    let done = request("list-done", vec![ebs_set("all", "us-east-1", &[("app", "list")], None, target.clone())]);
    client.submit(&done).await.unwrap();
    assert_eq!(verdict(&final_summary(&client, "list-done").await), pb::Verdict::Completed);
    // Nothing matches: nothing restored, FAILED.
    let nothing = request("list-failed", vec![ebs_set("none", "us-east-1", &[("app", "none")], None, target.clone())]);
    client.submit(&nothing).await.unwrap();
    assert_eq!(verdict(&final_summary(&client, "list-failed").await), pb::Verdict::Failed);

    let ids = |page: pb::RequestPage| page.requests.into_iter().map(|r| r.request_id).collect::<Vec<_>>();
    assert_eq!(ids(client.list("", 10).await.unwrap()), ["list-failed", "list-done"], "newest first");
    assert_eq!(ids(client.list("completed", 10).await.unwrap()), ["list-done"]);
    assert_eq!(ids(client.list("failed", 10).await.unwrap()), ["list-failed"]);
    assert!(ids(client.list("running", 10).await.unwrap()).is_empty());
    assert_eq!(ids(client.list("", 1).await.unwrap()), ["list-failed"]);
    let bad = client.list("sleeping", 10).await.unwrap_err();
    assert!(bad.to_string().contains("400"), "{bad}");
    let planned = client.list("completed", 10).await.unwrap().requests.remove(0);
    assert_eq!(planned.total_size_gib, 3, "the plan's size is kept: {planned:#?}");

    // The same body again is a no-op; another body under the same id is refused.
    client.submit(&done).await.expect("the same request again");
    let mut other = done.clone();
    other.restore_sets[0].name = "renamed".into();
    let refused = client.submit(&other).await.unwrap_err();
    assert!(refused.to_string().contains("already used by a different request"), "{refused}");
    let http = reqwest::Client::new();
    let body = serde_json::to_value(&other).unwrap();
    let response = http.post(format!("{}/v1/requests", servers.api_url())).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("list-done"), "{error}");
    let page: Value =
        http.get(format!("{}/v1/requests?state=failed", servers.api_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["requests"].as_array().unwrap().len(), 1, "{page}");
    // Still the first request, untouched.
    let summary = client.status("list-done", true).await.unwrap().summary.unwrap();
    assert_eq!(summary.sets[0].set_name, "all");
}

on_both_transports!(
    retry_restores_exactly_the_failed_tasks_and_recomputes_the_verdict,
    cancel_ends_the_tasks_not_started_cancelled,
    list_filters_by_state_and_a_reused_id_with_another_body_is_refused,
);

fn event(task_id: &str, phase: pb::TaskPhase, attempt: u32, generation: u32) -> pb::StatusEvent {
    pb::StatusEvent {
        request_id: "r".into(),
        set_name: "s".into(),
        task_id: task_id.into(),
        phase: phase as i32,
        attempt,
        generation,
        at: Some(lifeboat_common::time::now()),
        ..Default::default()
    }
}

#[test]
fn a_retry_generation_supersedes_the_old_run_and_old_runs_change_nothing() {
    use lifeboat_aggregator::state::next_task;
    use pb::TaskPhase::*;
    let failed = next_task(None, &event("t", Failed, 1, 0)).unwrap();
    // Within a generation a terminal phase is final.
    assert!(next_task(Some(&failed), &event("t", Running, 2, 0)).is_none());
    // A retry moves it back to QUEUED, with the attempt count starting over.
    let queued = next_task(Some(&failed), &event("t", Queued, 0, 1)).unwrap();
    assert_eq!((queued.phase, queued.generation, queued.attempt), (Queued as i32, 1, 0));
    // Late events of the first run are ignored.
    assert!(next_task(Some(&queued), &event("t", Succeeded, 3, 0)).is_none());
    let done = next_task(Some(&queued), &event("t", Succeeded, 1, 1)).unwrap();
    assert_eq!(done.phase, Succeeded as i32);

    // The request: IN_PROGRESS again while the retried task runs, then recomputed.
    let mut state = lifeboat_aggregator::RequestState::new("r");
    let planned = pb::StatusEvent {
        request_id: "r".into(),
        detail: Some(pb::status_event::Detail::Planned(pb::RestorePlanned { total_tasks: 1, ..Default::default() })),
        ..Default::default()
    };
    state.apply(&planned, None);
    let first = state.apply(&event("t", Failed, 1, 0), None).task.unwrap();
    assert_eq!(state.verdict(), pb::Verdict::Failed);
    assert!(state.meta.finished_at.is_some());
    let again = state.apply(&event("t", Queued, 0, 1), Some(&first)).task.unwrap();
    assert_eq!(state.verdict(), pb::Verdict::InProgress);
    assert!(state.meta.finished_at.is_none(), "not finished while the retry runs");
    state.apply(&event("t", Succeeded, 1, 1), Some(&again));
    assert_eq!(state.verdict(), pb::Verdict::Completed);
    assert_eq!(state.summary().retries, 1);
}

#[test]
fn a_cancelled_request_ends_cancelled_and_a_finished_one_cannot_be() {
    let mut state = lifeboat_aggregator::RequestState::new("r");
    let planned = pb::StatusEvent {
        request_id: "r".into(),
        detail: Some(pb::status_event::Detail::Planned(pb::RestorePlanned { total_tasks: 2, ..Default::default() })),
        ..Default::default()
    };
    state.apply(&planned, None);
    state.apply(&event("a", pb::TaskPhase::Succeeded, 1, 0), None);
    let cancel = pb::StatusEvent { request_id: "r".into(), cancelled: Some(Default::default()), ..Default::default() };
    assert!(state.apply(&cancel, None).meta);
    assert_eq!(state.verdict(), pb::Verdict::InProgress, "until the last task has ended");
    state.apply(&event("b", pb::TaskPhase::Cancelled, 1, 0), None);
    assert_eq!(state.verdict(), pb::Verdict::Cancelled);
    // Once finished, a cancel changes nothing.
    let mut done = lifeboat_aggregator::RequestState::new("d");
    done.apply(&planned, None);
    done.apply(&event("a", pb::TaskPhase::Succeeded, 1, 0), None);
    done.apply(&event("b", pb::TaskPhase::Succeeded, 1, 0), None);
    assert!(!done.apply(&cancel, None).any());
    assert_eq!(done.verdict(), pb::Verdict::Completed);
}

#[test]
fn states_parse_and_lists_and_plans_render() {
    use lifeboat_aggregator::operator::parse_state;
    assert_eq!(parse_state("running").unwrap(), Some(pb::Verdict::InProgress));
    assert_eq!(parse_state("partially-failed").unwrap(), Some(pb::Verdict::PartiallyFailed));
    assert_eq!(parse_state("COMPLETED_WITH_WARNINGS").unwrap(), Some(pb::Verdict::CompletedWithWarnings));
    assert_eq!(parse_state("").unwrap(), None);
    assert!(parse_state("sleeping").is_err());

    use lifeboat_cli::render;
    assert_eq!(render::human_duration(40), "40 s");
    assert_eq!(render::human_duration(25 * 60), "25 min");
    assert_eq!(render::human_duration(3600 + 5 * 60), "1 h 5 min");
    let now = std::time::SystemTime::now();
    let started = lifeboat_common::time::to_timestamp(chrono::Utc::now() - chrono::Duration::minutes(12));
    let summary = pb::RequestSummary {
        request_id: "r-1".into(),
        verdict: pb::Verdict::PartiallyFailed as i32,
        r#final: true,
        planned: true,
        total_tasks: 3,
        total_size_gib: 120,
        estimated_seconds: 1500,
        counts: Some(pb::PhaseCounts { succeeded: 2, failed: 1, ..Default::default() }),
        started_at: Some(started),
        ..Default::default()
    };
    assert_eq!(render::plan_line(&summary).as_deref(), Some("120 GiB, about 25 min"));
    let table = render::list_table(std::slice::from_ref(&summary), now);
    assert!(table.contains("PARTIALLY_FAILED") && table.contains("succeeded 2 · failed 1"), "{table}");
    assert!(table.contains("120 GiB") && table.contains("12m"), "{table}");
    println!("{table}{}", render::table(&summary));
    assert!(render::table(&summary).contains("plan: 3 tasks, 120 GiB, about 25 min"));
    let json = render::list_json(std::slice::from_ref(&summary));
    assert_eq!(json[0]["total_size_gib"], 120);
}
