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
    assert_eq!(west_instances[0].subnet_id(), Some(west_subnet.as_str()));
}

on_both_transports!(instances_come_back_from_amis_in_their_subnet_stopped_on_request_and_across_regions,);
