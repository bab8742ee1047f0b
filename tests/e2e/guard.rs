//! The blast-radius guard and the selection rules a restore set adds: a set without tags or
//! names is planned but refused without `all_resources`, a request over `max_tasks` needs
//! `confirm_large`, `after` with `until` takes the oldest backup inside [after, until], and
//! `names` selects volumes by id. Every refusal names the field and creates nothing.

use lifeboat_common::subjects::TAG_REQUEST_ID;
use lifeboat_proto as pb;
use lifeboat_tests::*;

fn target() -> pb::EbsTarget {
    pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() }
}

/// A set with no tags and no names: the whole region.
fn everything_set(name: &str, all_resources: bool) -> pb::RestoreSet {
    let mut set = ebs_set(name, "us-east-1", &[], None, target());
    set.source.as_mut().unwrap().all_resources = all_resources;
    set
}

async fn a_set_without_tags_is_planned_but_refused_without_all_resources(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    for size in [4, 5, 6] {
        let volume = create_volume(&east, "us-east-1a", size, &[("team", "any")]).await;
        create_snapshot(&east, &volume, &[]).await;
    }
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;

    // The dry run shows what the set would restore.
    let mut plan = request("guard-plan", vec![everything_set("all", false)]);
    plan.dry_run = true;
    client.submit(&plan).await.unwrap();
    let planned = final_summary(&client, "guard-plan").await;
    assert_eq!(verdict(&planned), pb::Verdict::Completed, "{planned:#?}");
    assert_eq!(planned.counts.unwrap().planned, 3);

    // For real, it is refused, naming the field and the count, and nothing is created.
    client.submit(&request("guard-run", vec![everything_set("all", false)])).await.unwrap();
    let refused = final_summary(&client, "guard-run").await;
    assert_eq!(verdict(&refused), pb::Verdict::Rejected, "{refused:#?}");
    let rejection = refused.rejection.clone().unwrap();
    assert_eq!(rejection.field, "restore_sets[0].source.all_resources");
    assert!(rejection.message.contains("3 backups"), "{}", rejection.message);
    assert!(volumes_tagged(&east, TAG_REQUEST_ID, "guard-run").await.is_empty());

    // With all_resources it runs.
    client.submit(&request("guard-all", vec![everything_set("all", true)])).await.unwrap();
    let restored = final_summary(&client, "guard-all").await;
    assert_eq!(verdict(&restored), pb::Verdict::Completed, "{restored:#?}");
    assert_eq!(volumes_tagged(&east, TAG_REQUEST_ID, "guard-all").await.len(), 3);
}

async fn a_request_over_max_tasks_needs_confirm_large(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    for _ in 0..3 {
        let volume = create_volume(&east, "us-east-1a", 1, &[("team", "big")]).await;
        create_snapshot(&east, &volume, &[("team", "big")]).await;
    }
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let set = || ebs_set("big", "us-east-1", &[("team", "big")], None, target());

    let mut large = request("large-1", vec![set()]);
    large.options.get_or_insert_with(Default::default).max_tasks = 2;
    client.submit(&large).await.unwrap();
    let refused = final_summary(&client, "large-1").await;
    assert_eq!(verdict(&refused), pb::Verdict::Rejected, "{refused:#?}");
    assert_eq!(refused.rejection.as_ref().unwrap().field, "options.max_tasks");
    assert!(volumes_tagged(&east, TAG_REQUEST_ID, "large-1").await.is_empty());

    let mut confirmed = request("large-2", vec![set()]);
    let options = confirmed.options.get_or_insert_with(Default::default);
    options.max_tasks = 2;
    options.confirm_large = true;
    client.submit(&confirmed).await.unwrap();
    let restored = final_summary(&client, "large-2").await;
    assert_eq!(verdict(&restored), pb::Verdict::Completed, "{restored:#?}");
    assert_eq!(volumes_tagged(&east, TAG_REQUEST_ID, "large-2").await.len(), 3);
}

async fn after_until_takes_the_oldest_inside_and_names_select_by_id(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let tags = [("team", "window")];
    let first = create_volume(&east, "us-east-1a", 2, &tags).await;
    let second = create_volume(&east, "us-east-1a", 3, &tags).await;
    let _too_early = create_snapshot(&east, &first, &tags).await;
    let after = tick().await;
    let inside = create_snapshot(&east, &first, &tags).await;
    // Snapshot times have whole seconds: the later one must be a second later.
    tick().await;
    let later_inside = create_snapshot(&east, &first, &tags).await;
    let until = tick().await;
    let _too_late = create_snapshot(&east, &first, &tags).await;
    let _second_late = create_snapshot(&east, &second, &tags).await;

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let mut set = ebs_set("bounded", "us-east-1", &tags, None, target());
    let source = set.source.as_mut().unwrap();
    source.selection = Some(pb::source::Selection::PointInTime(pb::PointInTime {
        time: Some(ts(after)),
        direction: pb::SearchDirection::After as i32,
        until: Some(ts(until)),
    }));
    let mut request = request("until-1", vec![set]);
    request.dry_run = true;
    client.submit(&request).await.unwrap();
    let summary = final_summary(&client, "until-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    // The second volume has no snapshot inside the bounds: not picked.
    let picked: Vec<_> = summary.tasks.iter().map(|t| t.source_backup_id.clone()).collect();
    assert_eq!(picked, vec![inside.clone()], "the oldest inside [after, until], not {later_inside}");

    // `names` picks volumes by id (here with a wildcard), without tags.
    let mut by_name = ebs_set("by-name", "us-east-1", &[], None, target());
    let source = by_name.source.as_mut().unwrap();
    source.all_resources = false;
    source.names = vec![format!("{}*", &second[..second.len() - 2])];
    let mut request = request_of("names-1", by_name);
    request.dry_run = true;
    client.submit(&request).await.unwrap();
    let summary = final_summary(&client, "names-1").await;
    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    let sources: Vec<_> = summary.tasks.iter().map(|t| t.source_resource_id.clone()).collect();
    assert_eq!(sources, vec![second.clone()]);

    // `until` before the point is refused by field.
    let mut inverted = ebs_set("inverted", "us-east-1", &tags, None, target());
    inverted.source.as_mut().unwrap().selection = Some(pb::source::Selection::PointInTime(pb::PointInTime {
        time: Some(ts(until)),
        direction: pb::SearchDirection::After as i32,
        until: Some(ts(after)),
    }));
    client.submit(&request_of("until-2", inverted)).await.unwrap();
    let refused = final_summary(&client, "until-2").await;
    assert_eq!(verdict(&refused), pb::Verdict::Rejected);
    assert_eq!(refused.rejection.unwrap().field, "restore_sets[0].source.point_in_time.until");
}

fn request_of(id: &str, set: pb::RestoreSet) -> pb::RestoreRequest {
    request(id, vec![set])
}

on_both_transports!(
    a_set_without_tags_is_planned_but_refused_without_all_resources,
    a_request_over_max_tasks_needs_confirm_large,
    after_until_takes_the_oldest_inside_and_names_select_by_id,
);
