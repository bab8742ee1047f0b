//! The config service end to end over real nats-server and moto, with discovery and the
//! aggregator: a plan rule with route53 and elbv2 exports a source account's front door (two
//! zones, one with weighted and alias records, the other with more records than one list page;
//! an application load balancer with a listener rule and a network load balancer, each with its
//! target group) to a bucket in another region; a second run writes nothing; a changed record shows in
//! `lifeboat config diff`; a restore request into a second account re-creates it, and the
//! target's live configuration diffs empty against the export. A second test denies ELBv2
//! (a proxy in front of moto answers AccessDenied): the run is PARTIALLY_FAILED, naming it.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerTypeEnum, PathPatternConditionConfig, ProtocolEnum, RuleCondition,
};
use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lifeboat_common::aws::Accounts;
use lifeboat_common::validate::Policy;
use lifeboat_config::document::Service;
use lifeboat_config::store::{self, Location};
use lifeboat_proto as pb;
use lifeboat_tests::*;

const BUCKET: &str = "lifeboat-config-exports";
const BUCKET_REGION: &str = "us-west-2";
const PREFIX: &str = "exports/";
const REGION: &str = "us-east-1";
const TARGET_ACCOUNT: &str = "111111111111";

const PLAN: &str = r#"
name: frontdoor
rules:
  - name: config
    schedule: "0 3 * * *"
    selection:
      resource_types: [route53, elbv2]
      regions: [us-east-1]
    config_export: {bucket: lifeboat-config-exports, region: us-west-2, prefix: exports/}
"#;

/// What the source's front door is made of, for mappings and assertions.
struct FrontDoor {
    vpc: String,
    subnets: Vec<String>,
    security_group: String,
    zone_id: String,
}

/// The CLI as users run it: over NATS, or through the aggregator's API with SQS. Waited for
/// off the runtime's thread, so the in-process services keep running meanwhile.
async fn lifeboat(servers: &Servers, args: &[&str]) -> std::process::Output {
    let mut command = crate::traces::lifeboat_command(servers);
    if servers.transport == Transport::Sqs {
        command.env("LIFEBOAT_API_URL", servers.api_url());
    }
    command.args(args).env("AWS_REGION", REGION);
    tokio::task::spawn_blocking(move || command.output()).await.expect("the CLI's thread").expect("run lifeboat")
}

/// A VPC with subnets in two zones and a security group, in `aws`'s account.
async fn network(aws: &SdkConfig) -> (String, Vec<String>, String) {
    let ec2 = aws_sdk_ec2::Client::new(aws);
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap();
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
    let mut subnets = Vec::new();
    for (zone, cidr) in [("us-east-1a", "10.0.1.0/24"), ("us-east-1b", "10.0.2.0/24")] {
        let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
        subnets.push(subnet.subnet().and_then(|s| s.subnet_id()).unwrap().to_string());
    }
    let group = ec2.create_security_group().group_name("web").description("web").vpc_id(&vpc).send().await.unwrap();
    (vpc, subnets, group.group_id().unwrap().to_string())
}

/// The source account's front door: a load balancer with an HTTP listener forwarding to a
/// target group, and a zone with a simple, two weighted and an alias record.
async fn front_door(aws: &SdkConfig) -> FrontDoor {
    let (vpc, subnets, security_group) = network(aws).await;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(aws);
    let group = elb
        .create_target_group()
        .name("web-tg")
        .protocol(ProtocolEnum::Http)
        .port(80)
        .vpc_id(&vpc)
        .health_check_path("/health")
        .send()
        .await
        .unwrap();
    let group_arn = group.target_groups()[0].target_group_arn().unwrap().to_string();
    let lb = elb
        .create_load_balancer()
        .name("web-lb")
        .set_subnets(Some(subnets.clone()))
        .security_groups(&security_group)
        .send()
        .await
        .unwrap();
    let lb = &lb.load_balancers()[0];
    let forward = Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&group_arn).build();
    let listener = elb
        .create_listener()
        .load_balancer_arn(lb.load_balancer_arn().unwrap())
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(forward.clone())
        .send()
        .await
        .unwrap();
    let api_paths = RuleCondition::builder()
        .field("path-pattern")
        .path_pattern_config(PathPatternConditionConfig::builder().values("/api/*").build())
        .build();
    elb.create_rule()
        .listener_arn(listener.listeners()[0].listener_arn().unwrap())
        .priority(10)
        .conditions(api_paths)
        .actions(forward)
        .send()
        .await
        .unwrap();
    network_load_balancer(&elb, &vpc, &subnets).await;
    let route53 = aws_sdk_route53::Client::new(aws);
    let zone = route53.create_hosted_zone().name("example.com").caller_reference("front-door").send().await.unwrap();
    let zone_id = zone.hosted_zone().unwrap().id().trim_start_matches("/hostedzone/").to_string();
    let alias = AliasTarget::builder()
        .dns_name(lb.dns_name().unwrap())
        .hosted_zone_id(lb.canonical_hosted_zone_id().unwrap())
        .evaluate_target_health(false)
        .build()
        .unwrap();
    let records = vec![
        a_record("www.example.com", "192.0.2.10", None),
        a_record("api.example.com", "192.0.2.20", Some(("blue", 70))),
        a_record("api.example.com", "192.0.2.21", Some(("green", 30))),
        ResourceRecordSet::builder().name("app.example.com").r#type(RrType::A).alias_target(alias).build().unwrap(),
    ];
    change(&route53, &zone_id, ChangeAction::Create, records).await;
    // More records than one ListResourceRecordSets page of the export.
    let shop = route53.create_hosted_zone().name("shop.example.org").caller_reference("shop").send().await.unwrap();
    let shop_id = shop.hosted_zone().unwrap().id().trim_start_matches("/hostedzone/").to_string();
    let hosts = (0..SHOP_HOSTS).map(|i| a_record(&format!("host-{i:03}.shop.example.org"), "192.0.2.30", None));
    change(&route53, &shop_id, ChangeAction::Create, hosts.collect()).await;
    FrontDoor { vpc, subnets, security_group, zone_id }
}

/// Hosts in the second zone: more than one page of the export's ListResourceRecordSets.
const SHOP_HOSTS: usize = lifeboat_config::route53::DEFAULT_PAGE_SIZE as usize + 20;

/// A network load balancer with a TCP listener forwarding to its own target group.
async fn network_load_balancer(elb: &aws_sdk_elasticloadbalancingv2::Client, vpc: &str, subnets: &[String]) {
    let group = elb
        .create_target_group()
        .name("tcp-tg")
        .protocol(ProtocolEnum::Tcp)
        .port(443)
        .vpc_id(vpc)
        .send()
        .await
        .unwrap();
    let group_arn = group.target_groups()[0].target_group_arn().unwrap().to_string();
    let lb = elb
        .create_load_balancer()
        .name("tcp-lb")
        .r#type(LoadBalancerTypeEnum::Network)
        .set_subnets(Some(subnets.to_vec()))
        .send()
        .await
        .unwrap();
    let forward = Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&group_arn).build();
    elb.create_listener()
        .load_balancer_arn(lb.load_balancers()[0].load_balancer_arn().unwrap())
        .protocol(ProtocolEnum::Tcp)
        .port(443)
        .default_actions(forward)
        .send()
        .await
        .unwrap();
}

fn a_record(name: &str, ip: &str, weighted: Option<(&str, i64)>) -> ResourceRecordSet {
    let mut record = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::A)
        .ttl(300)
        .resource_records(ResourceRecord::builder().value(ip).build().unwrap());
    if let Some((id, weight)) = weighted {
        record = record.set_identifier(id).weight(weight);
    }
    record.build().unwrap()
}

async fn change(
    route53: &aws_sdk_route53::Client,
    zone_id: &str,
    action: ChangeAction,
    records: Vec<ResourceRecordSet>,
) {
    let changes = records
        .into_iter()
        .map(|record| Change::builder().action(action.clone()).resource_record_set(record).build().unwrap())
        .collect();
    let batch = ChangeBatch::builder().set_changes(Some(changes)).build().unwrap();
    route53.change_resource_record_sets().hosted_zone_id(zone_id).change_batch(batch).send().await.unwrap();
}

fn location() -> Location {
    Location { bucket: BUCKET.into(), region: BUCKET_REGION.into(), prefix: PREFIX.into(), kms_key_id: String::new() }
}

/// Every object in the export bucket, by key.
async fn objects(servers: &Servers) -> Vec<String> {
    let s3 = store::client(&servers.aws(BUCKET_REGION), ACCOUNT, &location());
    let listed = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    let mut keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
    keys.sort();
    keys
}

/// Runs the plan's rule now and waits for its verdict.
async fn run_plan(client: &lifeboat_cli::client::Client, plan: &std::path::Path) -> pb::RequestSummary {
    let requests = lifeboat_cli::backup::run_requests(plan.to_str().unwrap(), Some("config")).expect("a valid run");
    assert_eq!(requests.len(), 1);
    client.submit(&requests[0]).await.expect("submit the run");
    final_summary(client, &requests[0].request_id).await
}

fn services_with_discovery() -> ServiceSet {
    ServiceSet {
        discovery: Some(fast_discovery_config(Policy::default().with_config_types())),
        ebs: None,
        dynamodb: None,
        ec2: None,
        rds: None,
        aggregator: true,
    }
}

on_both_transports!(
    a_plan_exports_to_another_region_once_and_restores_into_another_account_without_differences,
    access_denied_on_elbv2_fails_its_export_and_the_run_names_it
);

async fn a_plan_exports_to_another_region_once_and_restores_into_another_account_without_differences(
    transport: Transport,
) {
    init_logging();
    let servers = Servers::start_with(transport).await;
    let source = servers.aws(REGION);
    let door = front_door(&source).await;
    let running = Running::start(&servers, services_with_discovery()).await;
    let _running = running.with_config(&servers, fast_config_config()).await;
    let client = servers.client().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("frontdoor.yaml");
    std::fs::write(&plan, PLAN).unwrap();

    // The first run writes one document per service and its latest pointer.
    let first = run_plan(&client, &plan).await;
    assert_eq!(verdict(&first), pb::Verdict::Completed, "{first:#?}");
    assert_eq!(first.tasks.len(), 2, "route53 once for the account, elbv2 for us-east-1: {first:#?}");
    let written = objects(&servers).await;
    for (region, service) in [("global", "route53"), ("us-east-1", "elbv2")] {
        let under = format!("{PREFIX}{ACCOUNT}/{region}/{service}/");
        assert!(written.contains(&format!("{under}latest.json")), "{written:?}");
        let documents: Vec<&String> =
            written.iter().filter(|k| k.starts_with(&under) && !k.ends_with("latest.json")).collect();
        assert_eq!(documents.len(), 1, "{written:?}");
        let task = first.tasks.iter().find(|t| t.source_resource_id == service).expect("a task per service");
        assert!(task.message.contains(documents[0].as_str()), "{}", task.message);
    }
    let s3 = store::client(&servers.aws(BUCKET_REGION), ACCOUNT, &location());
    let pointer = store::latest(&s3, &location(), ACCOUNT, "global", Service::Route53).await.unwrap().unwrap();
    let exported = store::get(&s3, &location(), &pointer.key).await.unwrap();
    assert_eq!(exported.counts.get("hosted_zones"), Some(&2), "{:?}", exported.counts);
    // Both zones' NS and SOA, the first zone's four records, and every host of the second.
    assert_eq!(exported.counts.get("record_sets"), Some(&(2 * 2 + 4 + SHOP_HOSTS)), "{:?}", exported.counts);
    let pointer = store::latest(&s3, &location(), ACCOUNT, REGION, Service::Elbv2).await.unwrap().unwrap();
    let balancers = store::get(&s3, &location(), &pointer.key).await.unwrap();
    let counted = |kind: &str| balancers.counts.get(kind).copied();
    assert_eq!(
        (counted("load_balancers"), counted("listeners"), counted("target_groups")),
        (Some(2), Some(2), Some(2)),
        "{:?}",
        balancers.counts
    );
    let rules = serde_json::to_string(&balancers.config).unwrap();
    assert!(rules.contains("/api/*") && rules.contains("tcp-lb") && rules.contains("\"network\""), "{rules}");
    let records = serde_json::to_string(&exported.config).unwrap();
    for wanted in ["www.example.com.", "api.example.com.", "blue", "green", "app.example.com."] {
        assert!(records.contains(wanted), "{wanted} not in {records}");
    }

    // Unchanged: a second run (the plan's, then one asked for with `config export`) writes
    // nothing and says so.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = run_plan(&client, &plan).await;
    assert_eq!(verdict(&second), pb::Verdict::Completed, "{second:#?}");
    assert!(second.tasks.iter().all(|t| t.message.contains("unchanged")), "{second:#?}");
    let bucket = ["--bucket", BUCKET, "--bucket-region", BUCKET_REGION, "--prefix", PREFIX];
    let export =
        [&["--output", "json", "config", "export", "--account", ACCOUNT, "--region", REGION, "--watch"][..], &bucket]
            .concat();
    let exported_again = lifeboat(&servers, &export).await;
    let printed = String::from_utf8_lossy(&exported_again.stdout);
    assert!(exported_again.status.success(), "{printed}{}", String::from_utf8_lossy(&exported_again.stderr));
    assert_eq!(printed.matches("unchanged since s3://").count(), 2, "{printed}");
    assert_eq!(objects(&servers).await, written, "no new object");

    // A changed record shows in the CLI's diff of the latest export against the live zone.
    let route53 = aws_sdk_route53::Client::new(&source);
    change(&route53, &door.zone_id, ChangeAction::Upsert, vec![a_record("www.example.com", "192.0.2.99", None)]).await;
    let args = ["--bucket", BUCKET, "--bucket-region", BUCKET_REGION, "--prefix", PREFIX, "--account", ACCOUNT];
    let diff =
        lifeboat(&servers, &[&["config", "diff"][..], &args, &["--region", REGION, "--service", "route53"]].concat())
            .await;
    let printed = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(3), "{printed}{}", String::from_utf8_lossy(&diff.stderr));
    assert!(printed.contains("www.example.com.") && printed.contains("192.0.2.99"), "{printed}");
    // Put it back, so the export is what the restore below must reproduce.
    change(&route53, &door.zone_id, ChangeAction::Upsert, vec![a_record("www.example.com", "192.0.2.10", None)]).await;

    // Restore into another account, its subnets and security group mapped.
    let accounts = Accounts::new(servers.aws(REGION), lifeboat_common::aws::DEFAULT_ROLE_NAME);
    let target = accounts.config_for(TARGET_ACCOUNT, REGION).await.unwrap();
    let (target_vpc, target_subnets, target_group) = network(&target).await;
    let mut maps = vec![format!("{}={target_vpc}", door.vpc)];
    maps.extend(door.subnets.iter().zip(&target_subnets).map(|(from, to)| format!("{from}={to}")));
    let restore = lifeboat_cli::config_cmd::RestoreArgs {
        bucket: lifeboat_cli::config_cmd::BucketArgs {
            bucket: BUCKET.into(),
            bucket_region: BUCKET_REGION.into(),
            prefix: PREFIX.into(),
        },
        account: ACCOUNT.into(),
        region: REGION.into(),
        services: vec!["route53".into(), "elbv2".into()],
        to_account: Some(TARGET_ACCOUNT.into()),
        to_region: Some(REGION.into()),
        map_subnet: maps[1..].to_vec(),
        map_sg: vec![format!("{}={target_group}", door.security_group)],
        map_vpc: vec![maps[0].clone()],
        map_certificate: Vec::new(),
        map_target: Vec::new(),
        name_suffix: String::new(),
        replace: false,
        dry_run: false,
        before: None,
        request_id: Some("config-restore-1".into()),
        timeout: None,
        role_name: lifeboat_common::aws::DEFAULT_ROLE_NAME.into(),
    };
    // A dry run prints the plan and creates nothing.
    let mut dry = [&["config", "restore", "--dry-run"][..], &args, &["--region", REGION]].concat();
    dry.extend(["--to-account", TARGET_ACCOUNT]);
    let flags: Vec<String> = restore
        .map_subnet
        .iter()
        .map(|m| format!("--map-subnet={m}"))
        .chain(restore.map_sg.iter().map(|m| format!("--map-sg={m}")))
        .chain(restore.map_vpc.iter().map(|m| format!("--map-vpc={m}")))
        .collect();
    dry.extend(flags.iter().map(String::as_str));
    let planned = lifeboat(&servers, &dry).await;
    let printed = String::from_utf8_lossy(&planned.stdout);
    assert!(planned.status.success(), "{printed}{}", String::from_utf8_lossy(&planned.stderr));
    assert!(printed.contains("create") && printed.contains("web-lb") && printed.contains("example.com"), "{printed}");
    let target_route53 = aws_sdk_route53::Client::new(&target);
    let zones = target_route53.list_hosted_zones().send().await.unwrap();
    assert!(zones.hosted_zones().is_empty(), "a dry run creates nothing: {zones:?}");

    let request = lifeboat_cli::config_cmd::restore_request(&restore).expect("a valid restore");
    client.submit(&request).await.unwrap();
    let restored = final_summary(&client, "config-restore-1").await;
    assert_eq!(verdict(&restored), pb::Verdict::Completed, "{restored:#?}");
    assert_eq!(restored.tasks.len(), 1, "one task restores both: {restored:#?}");
    assert!(restored.tasks[0].message.contains("created"), "{}", restored.tasks[0].message);

    // The target's live configuration is the export's, mapped ids aside.
    for service in [Service::Elbv2, Service::Route53] {
        let region = if service == Service::Route53 { "global" } else { REGION };
        let pointer = store::latest(&s3, &location(), ACCOUNT, region, service).await.unwrap().unwrap();
        let exported = store::get(&s3, &location(), &pointer.key).await.unwrap();
        let live = lifeboat_config::export::export_document(&target, TARGET_ACCOUNT, REGION, service).await.unwrap();
        let differences = lifeboat_config::diff::diff_documents(&exported, &live, false);
        assert!(differences.is_empty(), "{service:?}: {}", lifeboat_config::diff::render_text(&differences));
    }
}

/// A proxy in front of moto that answers every ELBv2 call with AccessDenied, as AWS answers a
/// role without `elasticloadbalancing:Describe*`; everything else is forwarded.
struct DenyingProxy {
    url: String,
    shutdown: tokio_util::sync::CancellationToken,
}

impl DenyingProxy {
    async fn start(moto_url: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let state = Arc::new((moto_url.to_string(), reqwest::Client::new()));
        let router = axum::Router::new().fallback(deny_elbv2).with_state(state);
        let stop = shutdown.clone();
        tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await });
        Self { url, shutdown }
    }
}

impl Drop for DenyingProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn deny_elbv2(State(state): State<Arc<(String, reqwest::Client)>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let scope = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if scope.contains("/elasticloadbalancing/") {
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not \
                    authorized to perform: elasticloadbalancing:DescribeLoadBalancers</Message></Error>\
                    <RequestId>denied</RequestId></ErrorResponse>";
        return (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "text/xml")], body).into_response();
    }
    let Ok(body) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let (moto_url, http) = (&state.0, &state.1);
    let sent = http.request(parts.method, format!("{moto_url}{path}")).headers(headers).body(body).send().await;
    let Ok(answer) = sent else { return StatusCode::BAD_GATEWAY.into_response() };
    let (status, mut headers) = (answer.status(), answer.headers().clone());
    let Ok(bytes) = answer.bytes().await else { return StatusCode::BAD_GATEWAY.into_response() };
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    let mut response = Response::new(axum::body::Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// No service: for [`Running::with_config`] alone.
fn nothing() -> ServiceSet {
    ServiceSet { discovery: None, ebs: None, dynamodb: None, ec2: None, rds: None, aggregator: false }
}

async fn access_denied_on_elbv2_fails_its_export_and_the_run_names_it(transport: Transport) {
    init_logging();
    let mut servers = Servers::start_with(transport).await;
    front_door(&servers.aws(REGION)).await;
    let _running = Running::start(&servers, services_with_discovery()).await;
    // Only the config service goes through the proxy.
    let proxy = DenyingProxy::start(&servers.moto_url).await;
    let moto_url = std::mem::replace(&mut servers.moto_url, proxy.url.clone());
    let denied = Running::start(&servers, nothing()).await;
    let denied = denied.with_config(&servers, fast_config_config()).await;
    servers.moto_url = moto_url;
    let client = servers.client().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("frontdoor.yaml");
    std::fs::write(&plan, PLAN).unwrap();

    let summary = run_plan(&client, &plan).await;
    assert_eq!(verdict(&summary), pb::Verdict::PartiallyFailed, "{summary:#?}");
    let failed: Vec<&pb::TaskState> =
        summary.tasks.iter().filter(|t| t.phase == pb::TaskPhase::Failed as i32).collect();
    assert_eq!(failed.len(), 1, "{summary:#?}");
    assert_eq!(failed[0].source_resource_id, "elbv2");
    assert_eq!(failed[0].reason_code, "AccessDenied", "{:#?}", failed[0]);
    let written = objects(&servers).await;
    assert!(written.iter().any(|k| k.contains("/global/route53/")), "route53 is exported: {written:?}");
    assert!(!written.iter().any(|k| k.contains("/elbv2/")), "{written:?}");
    denied.stop().await;
}

fn field_errors(request: &pb::RestoreRequest) -> Vec<String> {
    let errors = lifeboat_common::validate::validate_request(request, &Policy::default().with_config_types())
        .expect_err("invalid");
    let mut fields: Vec<String> = errors.into_iter().map(|e| e.field).collect();
    fields.sort();
    fields
}

#[test]
fn configuration_runs_and_restores_are_checked_by_field() {
    let run = pb::BackupRun {
        plan: "p".into(),
        rule: "r".into(),
        due_id: "p/r/manual-x".into(),
        selection: Some(pb::BackupSelection {
            resource_types: vec![pb::ResourceType::Route53Zone as i32],
            regions: vec![REGION.into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let request = |run: pb::BackupRun| pb::RestoreRequest {
        request_id: lifeboat_common::backup::backup_run_id(&run.due_id),
        backup_run: Some(run),
        ..Default::default()
    };
    // No tags, retention or copies needed; the bucket is.
    assert_eq!(field_errors(&request(run.clone())), ["backup_run.config_export"]);
    let in_region = pb::ConfigExport { bucket: BUCKET.into(), region: REGION.into(), ..Default::default() };
    let same_region = pb::BackupRun { config_export: Some(in_region), ..run.clone() };
    assert_eq!(field_errors(&request(same_region)), ["backup_run.config_export.region"]);
    let elsewhere = pb::ConfigExport { bucket: BUCKET.into(), region: BUCKET_REGION.into(), ..Default::default() };
    let good = pb::BackupRun { config_export: Some(elsewhere), ..run };
    assert!(lifeboat_common::validate::validate_request(&request(good), &Policy::default()).is_ok());

    let set = |target: Option<pb::ConfigTarget>, types: Vec<pb::ResourceType>| pb::RestoreRequest {
        request_id: "r1".into(),
        restore_sets: vec![pb::RestoreSet {
            name: "s".into(),
            source: Some(pb::Source { account_id: ACCOUNT.into(), region: REGION.into(), ..Default::default() }),
            resource_types: types.into_iter().map(|t| t as i32).collect(),
            target: Some(pb::Targets { config: target, ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let both = vec![pb::ResourceType::Route53Zone, pb::ResourceType::Elbv2LoadBalancer];
    assert_eq!(
        field_errors(&set(None, both.clone())),
        ["restore_sets[0].target.config", "restore_sets[0].target.config"]
    );
    let no_bucket = pb::ConfigTarget { account_id: "12345".into(), ..Default::default() };
    assert_eq!(
        field_errors(&set(Some(no_bucket), vec![pb::ResourceType::Route53Zone])),
        [
            "restore_sets[0].target.config.account_id",
            "restore_sets[0].target.config.bucket",
            "restore_sets[0].target.config.bucket_region"
        ]
    );
    let complete =
        pb::ConfigTarget { bucket: BUCKET.into(), bucket_region: BUCKET_REGION.into(), ..Default::default() };
    let mixed = vec![pb::ResourceType::Route53Zone, pb::ResourceType::DynamodbTable];
    assert!(field_errors(&set(Some(complete.clone()), mixed)).contains(&"restore_sets[0].resource_types".to_string()));
    let policy = Policy::default().with_config_types();
    assert!(lifeboat_common::validate::validate_request(&set(Some(complete), both), &policy).is_ok());
}

#[test]
fn a_request_file_names_the_exports_and_the_mappings_under_target_config() {
    let text = r#"
restore_sets:
  - name: frontdoor
    source: {account_id: "123456789012", region: us-east-1}
    resource_types: [route53, elbv2]
    target:
      config:
        account_id: "111111111111"
        region: us-east-2
        bucket: lifeboat-config-exports
        bucket_region: us-west-2
        prefix: exports/
        subnet_map: {subnet-a: subnet-b}
        security_group_map: {sg-a: sg-b}
        replace: true
"#;
    let request = lifeboat_cli::request_file::load("dr.yaml", text, "dr-1".into()).expect("a valid file");
    let target = request.restore_sets[0].target.clone().unwrap().config.expect("a config target");
    assert_eq!((target.bucket.as_str(), target.bucket_region.as_str()), (BUCKET, BUCKET_REGION));
    assert_eq!(target.subnet_map.get("subnet-a").map(String::as_str), Some("subnet-b"));
    assert!(target.replace);
    let policy = Policy::default().with_config_types();
    assert!(lifeboat_common::validate::validate_request(&request, &policy).is_ok());
}

#[test]
fn a_scheduled_run_of_a_config_rule_carries_its_types_and_bucket() {
    let plan = lifeboat_plans::load("frontdoor.yaml", PLAN).expect("a valid plan");
    let now = chrono::Utc::now();
    let due_id = lifeboat_plans::due_id(&plan.name, &plan.rules[0].name, now);
    let run = lifeboat_scheduler::run::backup_run(&plan, &plan.rules[0], due_id, now, false);
    let kinds = run.selection.as_ref().map(|s| s.resource_types.clone()).unwrap_or_default();
    assert_eq!(kinds, [pb::ResourceType::Route53Zone as i32, pb::ResourceType::Elbv2LoadBalancer as i32]);
    let export = run.config_export.clone().expect("the rule's bucket");
    assert_eq!(
        (export.bucket.as_str(), export.region.as_str(), export.prefix.as_str()),
        (BUCKET, BUCKET_REGION, PREFIX)
    );
    let request = lifeboat_scheduler::run::request(run, "scheduler");
    assert!(lifeboat_common::validate::validate_request(&request, &Policy::default()).is_ok());
}
