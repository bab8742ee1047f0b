//! Limits on input: too many sets are refused by the count, and a rejection with hundreds of
//! problems carries the first ones and how many more there are.

use lifeboat_common::validate::{validate_request, Policy, MAX_SETS};
use lifeboat_discovery::service::MAX_REJECTION_ERRORS;
use lifeboat_proto as pb;
use lifeboat_tests::*;

fn set(index: usize) -> pb::RestoreSet {
    let target = pb::EbsTarget { availability_zone: "us-east-1b".into(), ..Default::default() };
    ebs_set(&format!("set-{index}"), "us-east-1", &[("app", "caps")], None, target)
}

#[test]
fn a_request_with_more_sets_than_the_cap_is_refused_naming_restore_sets() {
    let fits = request("caps-fit", (0..MAX_SETS).map(set).collect());
    assert_eq!(validate_request(&fits, &Policy::default()), Ok(()));
    let over = request("caps-over", (0..=MAX_SETS).map(set).collect());
    let errors = validate_request(&over, &Policy::default()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "restore_sets");
    assert!(errors[0].message.contains("101"), "{}", errors[0].message);
}

#[test]
fn too_many_tags_and_long_strings_are_refused_by_field() {
    let mut wide = set(0);
    let source = wide.source.as_mut().unwrap();
    source.tags = (0..51).map(|i| (format!("k{i}"), "v".to_string())).collect();
    source.names = vec!["n".repeat(300)];
    let errors = validate_request(&request("caps-tags", vec![wide]), &Policy::default()).unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"restore_sets[0].source.tags"), "{errors:?}");
    assert!(fields.contains(&"restore_sets[0].source.names[0]"), "{errors:?}");
    let mut huge = request("caps-max-tasks", vec![set(0)]);
    huge.options = Some(pb::RestoreOptions { max_tasks: u32::MAX, ..Default::default() });
    let errors = validate_request(&huge, &Policy::default()).unwrap_err();
    assert_eq!(errors[0].field, "options.max_tasks");
}

async fn a_rejection_with_500_errors_carries_the_first_20_and_a_count(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    // 100 sets, each with five bad fields.
    let sets = (0..MAX_SETS)
        .map(|index| {
            let mut bad = set(index);
            bad.resource_types = vec![42, 43, 44, 45, 46];
            bad
        })
        .collect();
    client.submit(&request("caps-500", sets)).await.unwrap();
    let summary = final_summary(&client, "caps-500").await;
    assert_eq!(verdict(&summary), pb::Verdict::Rejected, "{summary:#?}");
    let rejected = summary.rejection.expect("a rejected summary says why");
    assert_eq!(rejected.errors.len(), MAX_REJECTION_ERRORS + 1);
    assert_eq!(rejected.field, "restore_sets[0].resource_types[0]");
    assert!(rejected.errors[..MAX_REJECTION_ERRORS].iter().all(|e| e.field.starts_with("restore_sets[")));
    assert_eq!(rejected.errors[MAX_REJECTION_ERRORS].message, "and 480 more");
}

#[tokio::test]
async fn a_large_rejection_is_capped_over_nats() {
    a_rejection_with_500_errors_carries_the_first_20_and_a_count(Transport::Nats).await;
}
