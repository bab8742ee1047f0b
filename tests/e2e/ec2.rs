//! EC2 restores end to end: instances launched from AMIs into the target subnet and security
//! groups, one left stopped, one in another region from a copied AMI.

use aws_sdk_ec2::types::{Filter, InstanceStateName, InstanceType, ResourceType, Tag, TagSpecification};
use lifeboat_common::subjects::TAG_REQUEST_ID;
use lifeboat_proto as pb;
use lifeboat_tests::*;

/// A VPC, subnet and security group in `region`: (subnet, security group).
async fn network(ec2: &aws_sdk_ec2::Client, zone: &str) -> (String, String) {
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet =
        ec2.create_subnet().vpc_id(&vpc_id).cidr_block("10.0.1.0/24").availability_zone(zone).send().await.unwrap();
    let group = ec2
        .create_security_group()
        .group_name("restored")
        .description("restored")
        .vpc_id(&vpc_id)
        .send()
        .await
        .unwrap();
    (subnet.subnet().unwrap().subnet_id().unwrap().to_string(), group.group_id().unwrap().to_string())
}

fn ec2_set(name: &str, target: pb::Ec2Target) -> pb::RestoreSet {
    let mut set = ebs_set(name, "us-east-1", &[("app", "web")], None, Default::default());
    set.resource_types = vec![pb::ResourceType::Ec2Instance as i32];
    set.target = Some(pb::Targets { ec2: Some(target), ..Default::default() });
    set
}

async fn instances_come_back_from_amis_in_their_subnet_stopped_on_request_and_across_regions(transport: Transport) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let east = servers.ec2("us-east-1");
    let west = servers.ec2("us-west-2");
    let (east_subnet, east_group) = network(&east, "us-east-1a").await;
    let (west_subnet, west_group) = network(&west, "us-west-2a").await;

    // The instance that was backed up, and its AMI (tagged like the instance).
    let base = east.describe_images().owners("amazon").send().await.unwrap();
    let base_image = base.images().first().unwrap().image_id().unwrap().to_string();
    let source = east
        .run_instances()
        .image_id(&base_image)
        .min_count(1)
        .max_count(1)
        .instance_type(InstanceType::T3Small)
        .subnet_id(&east_subnet)
        .send()
        .await
        .unwrap();
    let source_id = source.instances()[0].instance_id().unwrap().to_string();
    let web_tags = TagSpecification::builder()
        .resource_type(ResourceType::Image)
        .tags(Tag::builder().key("app").value("web").build())
        .tags(Tag::builder().key("Name").value("web-1").build())
        .build();
    let image = east
        .create_image()
        .instance_id(&source_id)
        .name("web-nightly")
        .tag_specifications(web_tags)
        .send()
        .await
        .unwrap();
    let image_id = image.image_id().unwrap().to_string();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let target = |subnet: &str, group: &str| pb::Ec2Target {
        subnet_id: subnet.into(),
        security_group_ids: vec![group.into()],
        tags: [("restored-by".to_string(), "lifeboat".to_string())].into(),
        ..Default::default()
    };
    let running = ec2_set("running", target(&east_subnet, &east_group));
    let stopped = ec2_set("stopped", pb::Ec2Target { leave_stopped: true, ..target(&east_subnet, &east_group) });
    let other_region =
        ec2_set("us-west-2", pb::Ec2Target { region: "us-west-2".into(), ..target(&west_subnet, &west_group) });
    client.submit(&request("ec2-1", vec![running, stopped, other_region])).await.unwrap();
    let summary = final_summary(&client, "ec2-1").await;

    assert_eq!(verdict(&summary), pb::Verdict::Completed, "{summary:#?}");
    assert_eq!(summary.counts.unwrap().succeeded, 3);
    assert!(summary.tasks.iter().all(|t| t.source_backup_id == image_id && t.source_resource_id == source_id));
    let by_request = Filter::builder().name(format!("tag:{TAG_REQUEST_ID}")).values("ec2-1").build();
    let instances = |ec2: aws_sdk_ec2::Client| {
        let filter = by_request.clone();
        async move {
            let found = ec2.describe_instances().filters(filter).send().await.unwrap();
            found.reservations().iter().flat_map(|r| r.instances().to_vec()).collect::<Vec<_>>()
        }
    };
    let east_instances = instances(east.clone()).await;
    assert_eq!(east_instances.len(), 2);
    for instance in &east_instances {
        assert_eq!(instance.image_id(), Some(image_id.as_str()));
        assert_eq!(instance.subnet_id(), Some(east_subnet.as_str()));
        assert_eq!(instance.instance_type(), Some(&InstanceType::T3Small), "the source instance's type");
        assert!(instance.security_groups().iter().any(|g| g.group_id() == Some(east_group.as_str())));
        let tags: std::collections::HashMap<_, _> =
            instance.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
        assert_eq!(tags.get("app"), Some(&"web"), "the AMI's tags: {tags:?}");
        assert_eq!(tags.get("restored-by"), Some(&"lifeboat"));
    }
    let states: std::collections::BTreeSet<_> =
        east_instances.iter().map(|i| i.state().unwrap().name().unwrap().clone()).collect();
    assert_eq!(states, [InstanceStateName::Running, InstanceStateName::Stopped].into_iter().collect());

    let west_instances = instances(west.clone()).await;
    assert_eq!(west_instances.len(), 1);
    let copied = west_instances[0].image_id().unwrap();
    assert_ne!(copied, image_id, "launched from a copy in us-west-2");
    let copy = west.describe_images().image_ids(copied).send().await.unwrap();
    assert!(copy.images()[0].name().unwrap().starts_with("lifeboat-"));
    let copy_tags: std::collections::HashMap<_, _> =
        copy.images()[0].tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
    assert_eq!(copy_tags.get("lifeboat:source-instance"), Some(&source_id.as_str()), "{copy_tags:?}");
    assert!(copy_tags.contains_key("lifeboat:restore-copy"));
    assert_eq!(west_instances[0].subnet_id(), Some(west_subnet.as_str()));
}

on_both_transports!(instances_come_back_from_amis_in_their_subnet_stopped_on_request_and_across_regions,);

async fn describe_one(ec2: &aws_sdk_ec2::Client, request_id: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    let by_request = Filter::builder().name(format!("tag:{TAG_REQUEST_ID}")).values(request_id).build();
    let found = ec2.describe_instances().filters(by_request).send().await.unwrap();
    found.reservations().iter().flat_map(|r| r.instances().to_vec()).collect()
}

async fn base_image(ec2: &aws_sdk_ec2::Client) -> String {
    let base = ec2.describe_images().owners("amazon").send().await.unwrap();
    base.images().first().unwrap().image_id().unwrap().to_string()
}

fn image_tags(pairs: &[(&str, &str)]) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Image);
    for (k, v) in pairs {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    spec.build()
}

#[tokio::test]
async fn an_instance_comes_back_with_its_sources_settings_and_network_and_names_what_it_cannot_carry() {
    use aws_sdk_ec2::types::{HttpTokensState, InstanceAttributeName, InstanceMetadataOptionsRequest};
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let west = servers.ec2("us-west-2");
    let (east_subnet, east_group) = network(&east, "us-east-1b").await;
    let (west_subnet, west_group) = network(&west, "us-west-2a").await;
    east.create_key_pair().key_name("ops-key").send().await.unwrap();
    let user_data = "IyEvYmluL3NoCmVjaG8gaGVsbG8K"; // #!/bin/sh\necho hello
    let source = east
        .run_instances()
        .image_id(base_image(&east).await)
        .min_count(1)
        .max_count(1)
        .instance_type(InstanceType::T3Small)
        .subnet_id(&east_subnet)
        .security_group_ids(&east_group)
        .key_name("ops-key")
        .user_data(user_data)
        .disable_api_termination(true)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_put_response_hop_limit(2)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Name").value("web-2").build())
                .tags(Tag::builder().key("owner").value("web-team").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let source_id = source.instances()[0].instance_id().unwrap().to_string();
    // moto ignores RunInstances' DisableApiTermination; set it the other way.
    east.modify_instance_attribute()
        .instance_id(&source_id)
        .disable_api_termination(aws_sdk_ec2::types::AttributeBooleanValue::builder().value(true).build())
        .send()
        .await
        .unwrap();
    east.create_image()
        .instance_id(&source_id)
        .name("web-2-nightly")
        .tag_specifications(image_tags(&[("app", "fidelity")]))
        .send()
        .await
        .unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let fidelity_set = |name: &str, target: pb::Ec2Target| {
        let mut set = ec2_set(name, target);
        set.source.as_mut().unwrap().tags = [("app".to_string(), "fidelity".to_string())].into();
        set
    };
    // Same account and region: subnet and groups inherited from the source instance.
    let inherit = fidelity_set("inherit", Default::default());
    let elsewhere = fidelity_set(
        "us-west-2",
        pb::Ec2Target {
            region: "us-west-2".into(),
            subnet_id: west_subnet.clone(),
            security_group_ids: vec![west_group.clone()],
            ..Default::default()
        },
    );
    client.submit(&request("ec2-fidelity", vec![inherit, elsewhere])).await.unwrap();
    let summary = final_summary(&client, "ec2-fidelity").await;
    assert_eq!(verdict(&summary), pb::Verdict::CompletedWithWarnings, "{summary:#?}");

    let restored = describe_one(&east, "ec2-fidelity").await;
    assert_eq!(restored.len(), 1);
    let instance = &restored[0];
    let id = instance.instance_id().unwrap();
    assert_eq!(instance.subnet_id(), Some(east_subnet.as_str()), "the source's subnet");
    assert!(instance.security_groups().iter().any(|g| g.group_id() == Some(east_group.as_str())), "its groups");
    assert_eq!(instance.placement().and_then(|p| p.availability_zone()), Some("us-east-1b"));
    assert_eq!(instance.instance_type(), Some(&InstanceType::T3Small));
    assert_eq!(instance.key_name(), Some("ops-key"));
    let metadata = instance.metadata_options().unwrap();
    assert_eq!(metadata.http_tokens(), Some(&HttpTokensState::Required), "metadata options");
    assert_eq!(metadata.http_put_response_hop_limit(), Some(2));
    let tags: std::collections::HashMap<_, _> =
        instance.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())).collect();
    assert_eq!(tags.get("owner"), Some(&"web-team"), "the source instance's tags: {tags:?}");
    assert_eq!(tags.get("Name"), Some(&"web-2"));
    let attribute =
        |name: InstanceAttributeName| east.describe_instance_attribute().instance_id(id).attribute(name).send();
    let data = attribute(InstanceAttributeName::UserData).await.unwrap();
    assert_eq!(data.user_data().and_then(|v| v.value()), Some(user_data), "user data");
    let protection = attribute(InstanceAttributeName::DisableApiTermination).await.unwrap();
    assert_eq!(protection.disable_api_termination().and_then(|v| v.value()), Some(true), "termination protection");
    let inherited = summary.tasks.iter().find(|t| t.set_name == "inherit").unwrap();
    assert_eq!((inherited.phase, inherited.reason_code.as_str()), (pb::TaskPhase::Succeeded as i32, ""));

    // In another region the key pair does not exist: restored, and the setting is named.
    let west_restored = describe_one(&west, "ec2-fidelity").await;
    assert_eq!(west_restored.len(), 1);
    assert_eq!(west_restored[0].key_name(), None);
    let warned = summary.tasks.iter().find(|t| t.set_name == "us-west-2").unwrap();
    assert_eq!((warned.phase, warned.reason_code.as_str()), (pb::TaskPhase::Succeeded as i32, "SETTINGS_NOT_RESTORED"));
    assert!(warned.message.contains("not restored: key_name (the source's key pair 'ops-key'"), "{}", warned.message);
    // The AMI copy made for it is not a backup of its own: a new plan finds the one AMI.
    let mut again = request("ec2-fidelity-again", vec![fidelity_set("again", Default::default())]);
    again.dry_run = true;
    client.submit(&again).await.unwrap();
    assert_eq!(final_summary(&client, "ec2-fidelity-again").await.tasks.len(), 1);
    // Termination protection of the restored instance is on: switch it off for moto's teardown.
    let _ = east
        .modify_instance_attribute()
        .instance_id(id)
        .disable_api_termination(aws_sdk_ec2::types::AttributeBooleanValue::builder().value(false).build())
        .send()
        .await;
}

#[tokio::test]
async fn an_ami_of_a_terminated_instance_is_restored_and_another_account_gets_its_snapshots_shared() {
    init_logging();
    let servers = Servers::start().await;
    let east = servers.ec2("us-east-1");
    let (east_subnet, east_group) = network(&east, "us-east-1a").await;
    let source = east
        .run_instances()
        .image_id(base_image(&east).await)
        .min_count(1)
        .max_count(1)
        .instance_type(InstanceType::T3Micro)
        .subnet_id(&east_subnet)
        .send()
        .await
        .unwrap();
    let source_id = source.instances()[0].instance_id().unwrap().to_string();
    let image = east
        .create_image()
        .instance_id(&source_id)
        .name("gone-nightly")
        .tag_specifications(image_tags(&[("app", "gone"), ("lifeboat:instance-type", "t3.micro")]))
        .send()
        .await
        .unwrap();
    let image_id = image.image_id().unwrap().to_string();
    east.terminate_instances().instance_ids(&source_id).send().await.unwrap();

    let _services = Running::start(&servers, ServiceSet::default()).await;
    let client = servers.client().await;
    let gone_set = |name: &str, target: pb::Ec2Target| {
        let mut set = ec2_set(name, target);
        set.source.as_mut().unwrap().tags = [("app".to_string(), "gone".to_string())].into();
        set
    };
    let same = gone_set(
        "same-account",
        pb::Ec2Target { subnet_id: east_subnet.clone(), security_group_ids: vec![east_group], ..Default::default() },
    );
    let other = gone_set(
        "other-account",
        pb::Ec2Target { account_id: "111111111111".into(), subnet_id: "subnet-12345678".into(), ..Default::default() },
    );
    // Without a subnet there is nothing to inherit from a terminated instance.
    let no_subnet = gone_set("no-subnet", Default::default());
    client.submit(&request("ec2-gone", vec![same, other, no_subnet])).await.unwrap();
    let summary = final_summary(&client, "ec2-gone").await;

    let restored = describe_one(&east, "ec2-gone").await;
    assert_eq!(restored.len(), 1, "{summary:#?}");
    assert_eq!(restored[0].image_id(), Some(image_id.as_str()));
    assert_eq!(restored[0].instance_type(), Some(&InstanceType::T3Micro));
    let task = summary.tasks.iter().find(|t| t.set_name == "same-account").unwrap();
    assert_eq!(task.phase, pb::TaskPhase::Succeeded as i32, "{task:#?}");
    assert_eq!(task.source_resource_id, source_id, "grouped by the terminated instance");
    let failed = summary.tasks.iter().find(|t| t.set_name == "no-subnet").unwrap();
    assert_eq!((failed.phase, failed.reason_code.as_str()), (pb::TaskPhase::Failed as i32, "SUBNET_UNKNOWN"));
    assert!(
        failed.message.contains("target.ec2.subnet_id") && failed.message.contains(&source_id),
        "{}",
        failed.message
    );

    // Another account: launch permission on the AMI, and create-volume permission on its
    // snapshots. (moto keeps AMIs per account, so the launch itself cannot succeed there.)
    let launch = east
        .describe_image_attribute()
        .image_id(&image_id)
        .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
        .send()
        .await
        .unwrap();
    assert!(launch.launch_permissions().iter().any(|p| p.user_id() == Some("111111111111")), "{launch:?}");
    let described = east.describe_images().image_ids(&image_id).send().await.unwrap();
    let snapshots: Vec<String> = described.images()[0]
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect();
    assert!(!snapshots.is_empty());
    for snapshot in snapshots {
        let shared = east
            .describe_snapshot_attribute()
            .snapshot_id(&snapshot)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .unwrap();
        assert!(
            shared.create_volume_permissions().iter().any(|p| p.user_id() == Some("111111111111")),
            "snapshot {snapshot} of the AMI shared: {shared:?}"
        );
    }
}
