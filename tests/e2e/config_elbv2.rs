//! ELBv2 configuration end to end against moto: an application load balancer with two HTTP
//! listeners and rules of every condition and action kind, a network load balancer with a TCP
//! listener, and three target groups with attributes, health checks and instance targets are
//! exported page by page and checked field by field; restored into another account and region
//! with mapped VPC, subnets, security group and instances, the export of the copy equals the
//! source apart from the mapped ids. A second run keeps everything, a changed rule and target
//! group differ (and are replaced with `replace`), a dry run changes nothing, and a restore
//! beside the source suffixes names, keeps unmapped targets in the same account and skips them
//! elsewhere and skips a name too long. A gateway load balancer round-trips too, after failing
//! alone (with the AWS error named) while its subnet was not mapped.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, ForwardActionConfig, HostHeaderConditionConfig,
    HttpHeaderConditionConfig, HttpRequestMethodConditionConfig, LoadBalancerAttribute, LoadBalancerSchemeEnum,
    LoadBalancerTypeEnum, Matcher, PathPatternConditionConfig, ProtocolEnum, QueryStringConditionConfig,
    QueryStringKeyValuePair, RedirectActionConfig, RedirectActionStatusCodeEnum, RuleCondition,
    SourceIpConditionConfig, Tag, TargetDescription, TargetGroupAttribute, TargetGroupStickinessConfig,
    TargetGroupTuple,
};
use aws_sdk_elasticloadbalancingv2::Client;
use lifeboat_config::changes::{ApplyOptions, ChangeKind, Mapping, RestoreReport};
use lifeboat_config::clients::elbv2_client;
use lifeboat_config::elbv2::{self, Elbv2Config};
use lifeboat_tests::*;

const OTHER: &str = "111111111111";

/// A VPC with a subnet in zones `a` and `b`, a security group and two running instances.
struct Network {
    vpc: String,
    subnets: [String; 2],
    group: String,
    instances: [String; 2],
}

async fn network(ec2: &aws_sdk_ec2::Client, region: &str) -> Network {
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.0.1.0/24", "a"), ("10.0.2.0/24", "b")] {
        let zone = format!("{region}{zone}");
        let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    let group = ec2.create_security_group().group_name("web").description("web").vpc_id(&vpc).send().await.unwrap();
    let group = group.group_id().unwrap().to_string();
    let images = ec2.describe_images().owners("amazon").send().await.unwrap();
    let image = images.images()[0].image_id().unwrap().to_string();
    let launched = ec2
        .run_instances()
        .image_id(image)
        .min_count(2)
        .max_count(2)
        .subnet_id(&subnets[0])
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = launched.instances().iter().map(|i| i.instance_id().unwrap().to_string()).collect();
    Network {
        vpc,
        subnets: [subnets[0].clone(), subnets[1].clone()],
        group,
        instances: [ids[0].clone(), ids[1].clone()],
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn forward(tg_arn: &str) -> Action {
    Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(tg_arn).build()
}

fn fixed(status: &str, content_type: &str, body: &str) -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::FixedResponse)
        .fixed_response_config(
            FixedResponseActionConfig::builder()
                .status_code(status)
                .content_type(content_type)
                .message_body(body)
                .build(),
        )
        .build()
}

async fn target_group(elb: &Client, name: &str, protocol: ProtocolEnum, port: i32, vpc: &str) -> String {
    let out = elb.create_target_group().name(name).protocol(protocol).port(port).vpc_id(vpc).send().await.unwrap();
    out.target_groups()[0].target_group_arn().unwrap().to_string()
}

/// The source configuration (see the module doc); returns the ARN of front's HTTP:80 listener.
async fn seed(elb: &Client, net: &Network) -> String {
    let web = elb
        .create_target_group()
        .name("web")
        .protocol(ProtocolEnum::Http)
        .port(80)
        .vpc_id(&net.vpc)
        .health_check_path("/health")
        .health_check_interval_seconds(15)
        .health_check_timeout_seconds(5)
        .healthy_threshold_count(3)
        .unhealthy_threshold_count(4)
        .matcher(Matcher::builder().http_code("200-299").build())
        .tags(tag("app", "shop"))
        .tags(tag("tier", "web"))
        .send()
        .await
        .unwrap();
    let web = web.target_groups()[0].target_group_arn().unwrap().to_string();
    elb.modify_target_group_attributes()
        .target_group_arn(&web)
        .attributes(TargetGroupAttribute::builder().key("deregistration_delay.timeout_seconds").value("30").build())
        .attributes(TargetGroupAttribute::builder().key("stickiness.enabled").value("true").build())
        .send()
        .await
        .unwrap();
    let api = target_group(elb, "api", ProtocolEnum::Http, 8080, &net.vpc).await;
    let tcp = target_group(elb, "edge-tcp", ProtocolEnum::Tcp, 443, &net.vpc).await;
    let [first, second] = &net.instances;
    elb.register_targets()
        .target_group_arn(&web)
        .targets(TargetDescription::builder().id(first).port(80).build())
        .targets(TargetDescription::builder().id(second).port(80).build())
        .send()
        .await
        .unwrap();
    elb.register_targets()
        .target_group_arn(&tcp)
        .targets(TargetDescription::builder().id(second).port(443).build())
        .send()
        .await
        .unwrap();

    let front = elb
        .create_load_balancer()
        .name("front")
        .r#type(LoadBalancerTypeEnum::Application)
        .scheme(LoadBalancerSchemeEnum::InternetFacing)
        .subnets(&net.subnets[0])
        .subnets(&net.subnets[1])
        .security_groups(&net.group)
        .tags(tag("app", "shop"))
        .send()
        .await
        .unwrap();
    let front = front.load_balancers()[0].load_balancer_arn().unwrap().to_string();
    elb.modify_load_balancer_attributes()
        .load_balancer_arn(&front)
        .attributes(LoadBalancerAttribute::builder().key("idle_timeout.timeout_seconds").value("120").build())
        .send()
        .await
        .unwrap();
    let http = elb
        .create_listener()
        .load_balancer_arn(&front)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(fixed("404", "text/plain", "not here"))
        .send()
        .await
        .unwrap();
    let front_http = http.listeners()[0].listener_arn().unwrap().to_string();
    elb.create_listener()
        .load_balancer_arn(&front)
        .protocol(ProtocolEnum::Http)
        .port(8080)
        .default_actions(forward(&api))
        .send()
        .await
        .unwrap();
    seed_rules(elb, &front_http, &web, &api).await;

    let edge = elb
        .create_load_balancer()
        .name("edge")
        .r#type(LoadBalancerTypeEnum::Network)
        .scheme(LoadBalancerSchemeEnum::Internal)
        .subnets(&net.subnets[0])
        .subnets(&net.subnets[1])
        .send()
        .await
        .unwrap();
    let edge = edge.load_balancers()[0].load_balancer_arn().unwrap().to_string();
    elb.create_listener()
        .load_balancer_arn(&edge)
        .protocol(ProtocolEnum::Tcp)
        .port(443)
        .default_actions(forward(&tcp))
        .send()
        .await
        .unwrap();
    front_http
}

/// Four rules on front's HTTP:80: a redirect, a weighted forward, a forward by host, and a fixed
/// response behind header, query string and source address conditions.
async fn seed_rules(elb: &Client, listener: &str, web: &str, api: &str) {
    let path = |p: &str| {
        RuleCondition::builder()
            .field("path-pattern")
            .path_pattern_config(PathPatternConditionConfig::builder().values(p).build())
            .build()
    };
    let redirect = Action::builder()
        .r#type(ActionTypeEnum::Redirect)
        .redirect_config(
            RedirectActionConfig::builder()
                .protocol("HTTPS")
                .port("443")
                .path("/new/#{path}")
                .status_code(RedirectActionStatusCodeEnum::Http301)
                .build(),
        )
        .build();
    elb.create_rule()
        .listener_arn(listener)
        .priority(5)
        .conditions(path("/old/*"))
        .actions(redirect)
        .send()
        .await
        .unwrap();
    let weighted = Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(
            ForwardActionConfig::builder()
                .target_groups(TargetGroupTuple::builder().target_group_arn(api).weight(80).build())
                .target_groups(TargetGroupTuple::builder().target_group_arn(web).weight(20).build())
                .target_group_stickiness_config(
                    TargetGroupStickinessConfig::builder().enabled(true).duration_seconds(300).build(),
                )
                .build(),
        )
        .build();
    let methods = RuleCondition::builder()
        .field("http-request-method")
        .http_request_method_config(HttpRequestMethodConditionConfig::builder().values("GET").values("POST").build())
        .build();
    elb.create_rule()
        .listener_arn(listener)
        .priority(10)
        .conditions(path("/api/*"))
        .conditions(methods)
        .actions(weighted)
        .send()
        .await
        .unwrap();
    elb.create_rule()
        .listener_arn(listener)
        .priority(20)
        .conditions(host("www.example.com"))
        .actions(forward(web))
        .send()
        .await
        .unwrap();
    let header = RuleCondition::builder()
        .field("http-header")
        .http_header_config(HttpHeaderConditionConfig::builder().http_header_name("X-Env").values("staging").build())
        .build();
    let query = RuleCondition::builder()
        .field("query-string")
        .query_string_config(
            QueryStringConditionConfig::builder()
                .values(QueryStringKeyValuePair::builder().key("debug").value("1").build())
                .build(),
        )
        .build();
    let source = RuleCondition::builder()
        .field("source-ip")
        .source_ip_config(SourceIpConditionConfig::builder().values("10.0.0.0/8").build())
        .build();
    elb.create_rule()
        .listener_arn(listener)
        .priority(30)
        .conditions(header)
        .conditions(query)
        .conditions(source)
        .actions(fixed("503", "application/json", "{\"down\":true}"))
        .send()
        .await
        .unwrap();
}

fn host(name: &str) -> RuleCondition {
    RuleCondition::builder()
        .field("host-header")
        .host_header_config(HostHeaderConditionConfig::builder().values(name).build())
        .build()
}

fn keys<T>(items: &[T], key: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| key(i).to_string()).collect()
}

/// The document as JSON without the fields a restore maps (what the diff compares by default).
fn without_mapped_fields(config: &Elbv2Config) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.retain(|k, _| !elbv2::MAPPED_FIELDS.contains(&k.as_str()));
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(config).unwrap();
    strip(&mut value);
    value
}

/// The source's targets as the mapping renames them (instance ids are keys, and no id of one
/// account names an instance in another).
fn with_targets_mapped(config: &Elbv2Config, targets: &BTreeMap<String, String>) -> Elbv2Config {
    let mut mapped = config.clone();
    for tg in &mut mapped.target_groups {
        for target in &mut tg.targets {
            if let Some(id) = targets.get(&target.id) {
                target.id = id.clone();
                target.key = format!("{id}:{}", target.port.unwrap_or_default());
            }
        }
        tg.targets.sort_by(|a, b| a.key.cmp(&b.key));
    }
    mapped
}

fn kinds(report: &RestoreReport) -> BTreeMap<ChangeKind, usize> {
    let mut kinds = BTreeMap::new();
    for change in &report.changes {
        *kinds.entry(change.kind).or_default() += 1;
    }
    kinds
}

fn change<'a>(report: &'a RestoreReport, resource: &str) -> &'a lifeboat_config::changes::Change {
    report
        .changes
        .iter()
        .find(|c| c.resource == resource)
        .unwrap_or_else(|| panic!("no change for {resource} in {:#?}", report.changes))
}

#[tokio::test]
async fn export_reads_every_page_and_every_field() {
    init_logging();
    let servers = Servers::start().await;
    let net = network(&servers.ec2("us-east-1"), "us-east-1").await;
    let elb = elbv2_client(&servers.aws("us-east-1"), ACCOUNT, "us-east-1");
    seed(&elb, &net).await;

    // One item per page: two pages of load balancers, five of front's HTTP:80 rules.
    let config = elbv2::export_with_page_size(&elb, 1).await.unwrap();
    assert_eq!(config, elbv2::export(&elb).await.unwrap(), "a page size changes nothing read");
    let counts = elbv2::counts(&config);
    let expected_counts = [("load_balancers", 2), ("listeners", 3), ("rules", 7), ("target_groups", 3), ("targets", 3)];
    assert_eq!(counts, expected_counts.into_iter().map(|(k, v)| (k.to_string(), v)).collect());

    assert_eq!(keys(&config.load_balancers, |l| &l.key), ["edge", "front"]);
    let front = &config.load_balancers[1];
    assert_eq!((front.name.as_str(), front.kind.as_str()), ("front", "application"));
    assert!(front.arn.contains(":loadbalancer/app/front/"), "{}", front.arn);
    assert_eq!(front.scheme.as_deref(), Some("internet-facing"));
    assert_eq!(front.ip_address_type.as_deref(), Some("ipv4"));
    assert_eq!(front.vpc_id.as_deref(), Some(net.vpc.as_str()));
    assert_eq!(keys(&front.availability_zones, |z| &z.key), ["a", "b"]);
    assert_eq!(keys(&front.availability_zones, |z| &z.zone_name), ["us-east-1a", "us-east-1b"]);
    let subnets: Vec<_> = front.availability_zones.iter().map(|z| z.subnet_id.clone().unwrap()).collect();
    assert_eq!(subnets, net.subnets);
    assert_eq!(front.security_groups, [net.group.clone()]);
    assert_eq!(front.attributes.get("idle_timeout.timeout_seconds").map(String::as_str), Some("120"));
    assert_eq!(front.tags, BTreeMap::from([("app".to_string(), "shop".to_string())]));
    assert!(front.dns_name.as_deref().is_some_and(|d| d.starts_with("front-")), "{:?}", front.dns_name);
    assert!(front.canonical_hosted_zone_id.is_some());
    assert_eq!(keys(&front.listeners, |l| &l.key), ["HTTP:80", "HTTP:8080"]);

    let http = &front.listeners[0];
    assert_eq!((http.protocol.as_deref(), http.port), (Some("HTTP"), Some(80)));
    assert_eq!(http.ssl_policy, None, "only secure listeners have a policy");
    assert!(http.certificates.is_empty());
    assert_eq!(http.default_actions.len(), 1);
    let not_here = http.default_actions[0].fixed_response_config.as_ref().unwrap();
    assert_eq!(
        (not_here.status_code.as_str(), not_here.content_type.as_deref(), not_here.message_body.as_deref()),
        ("404", Some("text/plain"), Some("not here"))
    );
    assert_eq!(keys(&http.rules, |r| &r.key), ["default", "priority 10", "priority 20", "priority 30", "priority 5"]);
    let rule = |key: &str| http.rules.iter().find(|r| r.key == key).unwrap();
    assert!(rule("default").is_default);
    assert_eq!(rule("default").actions, http.default_actions);

    let old = rule("priority 5");
    assert_eq!(old.priority, "5");
    assert_eq!(keys(&old.conditions, |c| &c.key), ["path-pattern"]);
    assert_eq!(old.conditions[0].path_pattern_config.as_ref().unwrap().values, ["/old/*"]);
    let redirect = old.actions[0].redirect_config.as_ref().unwrap();
    assert_eq!(old.actions[0].kind, "redirect");
    assert_eq!(
        (
            redirect.protocol.as_deref(),
            redirect.port.as_deref(),
            redirect.path.as_deref(),
            redirect.status_code.as_str()
        ),
        (Some("HTTPS"), Some("443"), Some("/new/#{path}"), "HTTP_301")
    );

    let api = rule("priority 10");
    assert_eq!(keys(&api.conditions, |c| &c.key), ["http-request-method", "path-pattern"]);
    assert_eq!(api.conditions[0].http_request_method_config.as_ref().unwrap().values, ["GET", "POST"]);
    let weighted = api.actions[0].forward_config.as_ref().unwrap();
    assert_eq!(api.actions[0].kind, "forward");
    let weights: Vec<_> = weighted.target_groups.iter().map(|t| (t.target_group.as_str(), t.weight)).collect();
    assert_eq!(weights, [("api", Some(80)), ("web", Some(20))]);
    assert!(weighted.target_groups[0].target_group_arn.contains(":targetgroup/api/"));
    let stickiness = weighted.stickiness.as_ref().unwrap();
    assert_eq!((stickiness.enabled, stickiness.duration_seconds), (true, Some(300)));

    let www = rule("priority 20");
    assert_eq!(www.conditions[0].host_header_config.as_ref().unwrap().values, ["www.example.com"]);
    assert_eq!(www.actions[0].target_group.as_deref(), Some("web"));
    assert!(www.actions[0].target_group_arn.as_deref().is_some_and(|a| a.contains(":targetgroup/web/")));

    let staging = rule("priority 30");
    assert_eq!(keys(&staging.conditions, |c| &c.key), ["http-header X-Env", "query-string debug=1", "source-ip"]);
    let header = staging.conditions[0].http_header_config.as_ref().unwrap();
    assert_eq!((header.http_header_name.as_str(), header.values.clone()), ("X-Env", vec!["staging".to_string()]));
    let pair = &staging.conditions[1].query_string_config.as_ref().unwrap().values[0];
    assert_eq!((pair.name.as_deref(), pair.value.as_str()), (Some("debug"), "1"));
    assert_eq!(staging.conditions[2].source_ip_config.as_ref().unwrap().values, ["10.0.0.0/8"]);
    assert_eq!(staging.actions[0].fixed_response_config.as_ref().unwrap().status_code, "503");

    let edge = &config.load_balancers[0];
    assert_eq!((edge.kind.as_str(), edge.scheme.as_deref()), ("network", Some("internal")));
    assert_eq!(keys(&edge.listeners, |l| &l.key), ["TCP:443"]);
    assert_eq!(edge.listeners[0].default_actions[0].target_group.as_deref(), Some("edge-tcp"));

    assert_eq!(keys(&config.target_groups, |t| &t.key), ["api", "edge-tcp", "web"]);
    let web = &config.target_groups[2];
    assert_eq!(
        (web.protocol.as_deref(), web.port, web.vpc_id.as_deref()),
        (Some("HTTP"), Some(80), Some(net.vpc.as_str()))
    );
    assert_eq!(web.target_type.as_deref(), Some("instance"));
    let hc = &web.health_check;
    assert_eq!(hc.path.as_deref(), Some("/health"));
    assert_eq!((hc.interval_seconds, hc.timeout_seconds), (Some(15), Some(5)));
    assert_eq!((hc.healthy_threshold_count, hc.unhealthy_threshold_count), (Some(3), Some(4)));
    assert_eq!(hc.matcher.as_ref().and_then(|m| m.http_code.as_deref()), Some("200-299"));
    assert_eq!(hc.enabled, Some(true));
    assert_eq!(web.attributes.get("deregistration_delay.timeout_seconds").map(String::as_str), Some("30"));
    assert_eq!(web.attributes.get("stickiness.enabled").map(String::as_str), Some("true"));
    assert_eq!(web.tags.len(), 2);
    let mut expected_targets: Vec<String> = net.instances.iter().map(|i| format!("{i}:80")).collect();
    expected_targets.sort();
    assert_eq!(keys(&web.targets, |t| &t.key), expected_targets);
    assert_eq!(web.load_balancers, ["front"]);
    assert_eq!(config.target_groups[1].load_balancers, ["edge"]);
    assert_eq!(config.target_groups[1].health_check.protocol.as_deref(), Some("TCP"));
}

#[tokio::test]
async fn restore_into_another_account_and_region_equals_the_source_then_keeps_differs_and_replaces() {
    init_logging();
    let servers = Servers::start().await;
    let source_net = network(&servers.ec2("us-east-1"), "us-east-1").await;
    let source_elb = elbv2_client(&servers.aws("us-east-1"), ACCOUNT, "us-east-1");
    seed(&source_elb, &source_net).await;
    let source = elbv2::export(&source_elb).await.unwrap();

    let accounts = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "LifeboatRestoreRole");
    let other = accounts.config_for(OTHER, "us-west-2").await.unwrap();
    let target_net = network(&lifeboat_common::aws::ec2_client(&other, OTHER, "us-west-2"), "us-west-2").await;
    let target_elb = elbv2_client(&other, OTHER, "us-west-2");
    let targets: BTreeMap<String, String> =
        source_net.instances.iter().cloned().zip(target_net.instances.iter().cloned()).collect();
    let options = ApplyOptions {
        region: "us-west-2".into(),
        mapping: Mapping {
            vpcs: BTreeMap::from([(source_net.vpc.clone(), target_net.vpc.clone())]),
            subnets: source_net.subnets.iter().cloned().zip(target_net.subnets.iter().cloned()).collect(),
            security_groups: BTreeMap::from([(source_net.group.clone(), target_net.group.clone())]),
            targets: targets.clone(),
            ..Mapping::default()
        },
        ..ApplyOptions::default()
    };

    // A dry run plans every item and creates none.
    let plan = elbv2::restore(&source, &target_elb, &ApplyOptions { dry_run: true, ..options.clone() }).await.unwrap();
    // 3 target groups, 3 targets, 2 load balancers, 3 listeners, 4 rules.
    assert_eq!(kinds(&plan), BTreeMap::from([(ChangeKind::Create, 15)]), "{:#?}", plan.changes);
    assert_eq!(elbv2::export(&target_elb).await.unwrap(), Elbv2Config::default(), "a dry run creates nothing");

    let restored = elbv2::restore(&source, &target_elb, &options).await.unwrap();
    assert_eq!(kinds(&restored), BTreeMap::from([(ChangeKind::Create, 15)]), "{:#?}", restored.changes);
    let copy = elbv2::export(&target_elb).await.unwrap();
    assert_eq!(
        without_mapped_fields(&copy),
        without_mapped_fields(&with_targets_mapped(&source, &targets)),
        "the copy equals the source apart from mapped ids"
    );
    let front = (&source.load_balancers[1], &copy.load_balancers[1]);
    assert_eq!(copy.load_balancers[1].availability_zones[0].subnet_id.as_ref(), Some(&target_net.subnets[0]));
    assert_eq!(copy.load_balancers[1].security_groups, [target_net.group.clone()]);
    assert_eq!(copy.target_groups[2].vpc_id.as_ref(), Some(&target_net.vpc));
    let (source_dns, copy_dns) = (front.0.dns_name.clone().unwrap(), front.1.dns_name.clone().unwrap());
    assert!(copy_dns.contains("us-west-2"), "{copy_dns}");
    assert_eq!(restored.ids.get(&source_dns), Some(&copy_dns), "the report maps DNS names for Route 53");
    assert_eq!(restored.ids.get(&front.0.arn), Some(&front.1.arn));
    assert_eq!(restored.ids.get(&source.target_groups[2].arn), Some(&copy.target_groups[2].arn));
    let zone = front.0.canonical_hosted_zone_id.clone().unwrap();
    assert_eq!(restored.ids.get(&zone), front.1.canonical_hosted_zone_id.as_ref());

    // Run again: everything is there and equal.
    let again = elbv2::restore(&source, &target_elb, &options).await.unwrap();
    assert_eq!(kinds(&again), BTreeMap::from([(ChangeKind::Keep, 15)]), "{:#?}", again.changes);
    assert_eq!(again.ids, restored.ids);

    // Someone changes a rule's host and a target group's attribute in the copy.
    let copy_http = &copy.load_balancers[1].listeners[0];
    let copy_rule = copy_http.rules.iter().find(|r| r.key == "priority 20").unwrap();
    target_elb.modify_rule().rule_arn(&copy_rule.arn).conditions(host("shop.example.com")).send().await.unwrap();
    let copy_web = &copy.target_groups[2];
    target_elb
        .modify_target_group_attributes()
        .target_group_arn(&copy_web.arn)
        .attributes(TargetGroupAttribute::builder().key("deregistration_delay.timeout_seconds").value("99").build())
        .send()
        .await
        .unwrap();
    let changed = elbv2::export(&target_elb).await.unwrap();

    let differs = elbv2::restore(&source, &target_elb, &options).await.unwrap();
    assert_eq!(kinds(&differs), BTreeMap::from([(ChangeKind::Keep, 13), (ChangeKind::Differs, 2)]));
    let rule_change = change(&differs, "rule front HTTP:80 priority 20");
    assert_eq!(rule_change.kind, ChangeKind::Differs);
    assert!(rule_change.detail.contains("conditions"), "{}", rule_change.detail);
    let tg_change = change(&differs, "target group web");
    assert_eq!(tg_change.kind, ChangeKind::Differs);
    assert!(tg_change.detail.contains("attributes"), "{}", tg_change.detail);
    assert_eq!(elbv2::export(&target_elb).await.unwrap(), changed, "differing items are left alone");

    let replace = ApplyOptions { replace: true, ..options.clone() };
    let dry = elbv2::restore(&source, &target_elb, &ApplyOptions { dry_run: true, ..replace.clone() }).await.unwrap();
    assert_eq!(kinds(&dry), BTreeMap::from([(ChangeKind::Keep, 13), (ChangeKind::Replace, 2)]));
    assert_eq!(elbv2::export(&target_elb).await.unwrap(), changed, "a dry run replaces nothing");

    let replaced = elbv2::restore(&source, &target_elb, &replace).await.unwrap();
    assert_eq!(kinds(&replaced), BTreeMap::from([(ChangeKind::Keep, 13), (ChangeKind::Replace, 2)]));
    assert_eq!(change(&replaced, "rule front HTTP:80 priority 20").kind, ChangeKind::Replace);
    let fixed = elbv2::export(&target_elb).await.unwrap();
    assert_eq!(without_mapped_fields(&fixed), without_mapped_fields(&with_targets_mapped(&source, &targets)));
    let last = elbv2::restore(&source, &target_elb, &options).await.unwrap();
    assert_eq!(kinds(&last), BTreeMap::from([(ChangeKind::Keep, 15)]), "{:#?}", last.changes);
}

#[tokio::test]
async fn restore_beside_the_source_suffixes_names_keeps_targets_in_their_account_and_skips_them_elsewhere() {
    init_logging();
    let servers = Servers::start().await;
    let net = network(&servers.ec2("us-east-1"), "us-east-1").await;
    let elb = elbv2_client(&servers.aws("us-east-1"), ACCOUNT, "us-east-1");
    let front_http = seed(&elb, &net).await;
    // A target group whose name leaves no room for a suffix, behind one rule.
    let long_name = "target-group-with-a-long-name-x";
    let long = target_group(&elb, long_name, ProtocolEnum::Http, 80, &net.vpc).await;
    elb.create_rule()
        .listener_arn(&front_http)
        .priority(40)
        .conditions(host("long.example.com"))
        .actions(forward(&long))
        .send()
        .await
        .unwrap();
    let source = elbv2::export(&elb).await.unwrap();

    let options = ApplyOptions { region: "us-east-1".into(), name_suffix: "-dr".into(), ..ApplyOptions::default() };
    let report = elbv2::restore(&source, &elb, &options).await.unwrap();
    let skipped = change(&report, &format!("target group {long_name}-dr"));
    assert_eq!(skipped.kind, ChangeKind::Skip);
    assert!(skipped.detail.contains("32"), "{}", skipped.detail);
    assert!(report.warnings.iter().any(|w| w.contains(long_name)), "{:?}", report.warnings);
    assert_eq!(change(&report, "rule front-dr HTTP:80 priority 40").kind, ChangeKind::Skip);
    assert_eq!(change(&report, "load balancer front-dr").kind, ChangeKind::Create);
    let after = elbv2::export(&elb).await.unwrap();
    assert_eq!(keys(&after.load_balancers, |l| &l.key), ["edge", "edge-dr", "front", "front-dr"]);
    let web_dr = after.target_groups.iter().find(|t| t.name == "web-dr").unwrap();
    let web = after.target_groups.iter().find(|t| t.name == "web").unwrap();
    assert_eq!(web_dr.targets, web.targets, "the same account and region: the same instances");
    assert_eq!(web_dr.load_balancers, ["front-dr"]);
    let front_dr = after.load_balancers.iter().find(|l| l.name == "front-dr").unwrap();
    let www = front_dr.listeners[0].rules.iter().find(|r| r.key == "priority 20").unwrap();
    assert_eq!(www.actions[0].target_group.as_deref(), Some("web-dr"));
    assert_eq!(www.actions[0].target_group_arn.as_ref(), Some(&web_dr.arn));
    assert!(front_dr.listeners[0].rules.iter().all(|r| r.key != "priority 40"));

    // Into another region of the same account, with the network mapped but not the instances.
    let west_net = network(&servers.ec2("us-west-2"), "us-west-2").await;
    let west = elbv2_client(&servers.aws("us-west-2"), ACCOUNT, "us-west-2");
    let mapping = Mapping {
        vpcs: BTreeMap::from([(net.vpc.clone(), west_net.vpc.clone())]),
        subnets: net.subnets.iter().cloned().zip(west_net.subnets.iter().cloned()).collect(),
        security_groups: BTreeMap::from([(net.group.clone(), west_net.group.clone())]),
        ..Mapping::default()
    };
    let options = ApplyOptions { region: "us-west-2".into(), mapping, ..ApplyOptions::default() };
    let report = elbv2::restore(&source, &west, &options).await.unwrap();
    let target = change(&report, &format!("target web {}:80", net.instances[0]));
    assert_eq!(target.kind, ChangeKind::Skip);
    assert!(target.detail.contains("mapping.targets"), "{}", target.detail);
    assert_eq!(report.count(ChangeKind::Skip), 3, "{:#?}", report.changes);
    let copy = elbv2::export(&west).await.unwrap();
    assert!(copy.target_groups.iter().all(|t| t.targets.is_empty()));
    assert_eq!(copy.load_balancers.len(), 2);
}

#[tokio::test]
async fn a_gateway_load_balancer_and_its_geneve_target_group_round_trip_into_another_region() {
    init_logging();
    let servers = Servers::start().await;
    let net = network(&servers.ec2("us-east-1"), "us-east-1").await;
    let elb = elbv2_client(&servers.aws("us-east-1"), ACCOUNT, "us-east-1");
    let appliances = target_group(&elb, "appliances", ProtocolEnum::Geneve, 6081, &net.vpc).await;
    let gateway = elb
        .create_load_balancer()
        .name("inspect")
        .r#type(LoadBalancerTypeEnum::Gateway)
        .subnets(&net.subnets[0])
        .send()
        .await
        .unwrap();
    let gateway = gateway.load_balancers()[0].load_balancer_arn().unwrap().to_string();
    elb.create_listener().load_balancer_arn(&gateway).default_actions(forward(&appliances)).send().await.unwrap();
    let source = elbv2::export(&elb).await.unwrap();
    assert_eq!(source.load_balancers[0].kind, "gateway");
    assert_eq!(keys(&source.load_balancers[0].listeners, |l| &l.key), ["gateway"]);
    assert_eq!(source.target_groups[0].protocol.as_deref(), Some("GENEVE"));

    let west_net = network(&servers.ec2("us-west-2"), "us-west-2").await;
    let west = elbv2_client(&servers.aws("us-west-2"), ACCOUNT, "us-west-2");
    let vpc_only = Mapping { vpcs: BTreeMap::from([(net.vpc.clone(), west_net.vpc.clone())]), ..Mapping::default() };
    let options = ApplyOptions { region: "us-west-2".into(), mapping: vpc_only.clone(), ..ApplyOptions::default() };

    // Without its subnet mapped, the load balancer fails alone, naming the AWS error.
    let report = elbv2::restore(&source, &west, &options).await.unwrap();
    assert_eq!(change(&report, "target group appliances").kind, ChangeKind::Create);
    let failed = change(&report, "load balancer inspect");
    assert_eq!(failed.kind, ChangeKind::Skip);
    assert!(failed.detail.contains("CreateLoadBalancer") && failed.detail.contains("subnet"), "{}", failed.detail);
    assert!(report.warnings.iter().any(|w| w.contains("load balancer inspect")), "{:?}", report.warnings);
    assert!(elbv2::export(&west).await.unwrap().load_balancers.is_empty());

    let mapping =
        Mapping { subnets: BTreeMap::from([(net.subnets[0].clone(), west_net.subnets[0].clone())]), ..vpc_only };
    let options = ApplyOptions { region: "us-west-2".into(), mapping, ..ApplyOptions::default() };
    let report = elbv2::restore(&source, &west, &options).await.unwrap();
    let expected = BTreeMap::from([(ChangeKind::Keep, 1), (ChangeKind::Create, 2)]);
    assert_eq!(kinds(&report), expected, "{:#?}", report.changes);
    let copy = elbv2::export(&west).await.unwrap();
    assert_eq!(without_mapped_fields(&copy), without_mapped_fields(&source));
    let again = elbv2::restore(&source, &west, &options).await.unwrap();
    assert_eq!(kinds(&again), BTreeMap::from([(ChangeKind::Keep, 3)]), "{:#?}", again.changes);
}
