//! Route 53 configuration against moto: an export reads every page of zones, records and health
//! checks; a restore into a second account re-creates them (equal apart from the mapped ids),
//! is re-runnable, leaves or replaces what differs, changes nothing when dry, and sends records
//! in batches of at most 100 changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsInput;
use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, GeoLocation, HealthCheckConfig, HealthCheckType, HostedZoneConfig,
    ResourceRecord, ResourceRecordSet, ResourceRecordSetFailover, ResourceRecordSetRegion, RrType, Tag,
    TagResourceType, Vpc, VpcRegion,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_types::config_bag::ConfigBag;
use lifeboat_config::changes::{ApplyOptions, ChangeKind, Mapping, RestoreReport};
use lifeboat_config::clients::route53_client;
use lifeboat_config::route53::{self, HostedZone, RecordSet, Route53Config, ZoneVpc, MAPPED_FIELDS};
use lifeboat_tests::{Servers, ACCOUNT};
use serde_json::Value;

/// The account restores go to (moto keeps accounts apart by the assumed role's credentials).
const TARGET_ACCOUNT: &str = "222233334444";
/// A load balancer an alias record points at, and its restored copy.
const LB_DNS: &str = "app-lb-123.us-east-1.elb.amazonaws.com.";
const LB_ZONE: &str = "Z35SXDOTRQ7X7K";
const RESTORED_LB_DNS: &str = "app-lb-456.us-west-2.elb.amazonaws.com.";
const RESTORED_LB_ZONE: &str = "Z1H1FL5HABSF5";
/// Plain A records of the public zone: more than two pages of 50.
const HOSTS: usize = 120;

/// Clients of both accounts, and the target's VPC that the source's maps to.
struct Accounts {
    source: aws_sdk_route53::Client,
    target: aws_sdk_route53::Client,
    target_vpc: String,
}

async fn accounts(servers: &Servers) -> Accounts {
    let base = servers.aws("us-east-1");
    let roles = lifeboat_common::aws::Accounts::new(base.clone(), lifeboat_common::aws::DEFAULT_ROLE_NAME);
    let target_config = roles.config_for(TARGET_ACCOUNT, "us-east-1").await.expect("assume a role into the target");
    let target_vpc = create_vpc(&aws_sdk_ec2::Client::new(&target_config)).await;
    Accounts {
        source: route53_client(&base, ACCOUNT),
        target: route53_client(&target_config, TARGET_ACCOUNT),
        target_vpc,
    }
}

async fn create_vpc(ec2: &aws_sdk_ec2::Client) -> String {
    let vpc = ec2.create_vpc().cidr_block("10.20.0.0/16").send().await.expect("create a VPC");
    vpc.vpc().and_then(|v| v.vpc_id()).expect("a VPC id").to_string()
}

fn record(
    name: &str,
    record_type: RrType,
    values: &[&str],
) -> aws_sdk_route53::types::builders::ResourceRecordSetBuilder {
    let values = values.iter().map(|v| ResourceRecord::builder().value(*v).build().expect("a value")).collect();
    ResourceRecordSet::builder().name(name).r#type(record_type).ttl(300).set_resource_records(Some(values))
}

fn create(record: aws_sdk_route53::types::builders::ResourceRecordSetBuilder) -> Change {
    Change::builder()
        .action(ChangeAction::Create)
        .resource_record_set(record.build().expect("a record set"))
        .build()
        .expect("a change")
}

async fn change(client: &aws_sdk_route53::Client, zone_id: &str, changes: Vec<Change>) {
    for chunk in changes.chunks(100) {
        client
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(ChangeBatch::builder().set_changes(Some(chunk.to_vec())).build().expect("a batch"))
            .send()
            .await
            .expect("change record sets");
    }
}

async fn create_zone(client: &aws_sdk_route53::Client, name: &str, comment: &str, vpc: Option<&str>) -> String {
    let zone = client
        .create_hosted_zone()
        .name(name)
        .caller_reference(format!("test-{name}"))
        .hosted_zone_config(HostedZoneConfig::builder().comment(comment).private_zone(vpc.is_some()).build())
        .set_vpc(vpc.map(|id| Vpc::builder().vpc_id(id).vpc_region(VpcRegion::UsEast1).build()))
        .send()
        .await
        .expect("create a hosted zone");
    zone.hosted_zone().expect("a zone").id().trim_start_matches("/hostedzone/").to_string()
}

async fn tag(client: &aws_sdk_route53::Client, resource_type: TagResourceType, id: &str, key: &str, value: &str) {
    client
        .change_tags_for_resource()
        .resource_type(resource_type)
        .resource_id(id)
        .add_tags(Tag::builder().key(key).value(value).build())
        .send()
        .await
        .expect("tag a resource");
}

async fn health_check(client: &aws_sdk_route53::Client, reference: &str, config: HealthCheckConfig) -> String {
    let check = client
        .create_health_check()
        .caller_reference(reference)
        .health_check_config(config)
        .send()
        .await
        .expect("create a health check");
    check.health_check().expect("a health check").id().to_string()
}

/// The source account: two health checks; a public zone with [`HOSTS`] A records, weighted,
/// failover, latency, geolocation, multivalue, TXT and alias records; a private zone with a VPC.
/// Returns the public zone's id and the VPC's.
async fn source_configuration(servers: &Servers, client: &aws_sdk_route53::Client) -> (String, String) {
    let http = health_check(
        client,
        "web",
        HealthCheckConfig::builder()
            .r#type(HealthCheckType::Http)
            .ip_address("192.0.2.10")
            .port(80)
            .resource_path("/health")
            .request_interval(30)
            .failure_threshold(2)
            .build()
            .expect("a health check config"),
    )
    .await;
    tag(client, TagResourceType::Healthcheck, &http, "team", "web").await;
    health_check(
        client,
        "origin",
        HealthCheckConfig::builder()
            .r#type(HealthCheckType::Https)
            .fully_qualified_domain_name("origin.example.com")
            .port(443)
            .resource_path("/")
            .enable_sni(true)
            .build()
            .expect("a health check config"),
    )
    .await;

    let zone = create_zone(client, "example.com", "the public front door", None).await;
    tag(client, TagResourceType::Hostedzone, &zone, "env", "prod").await;
    let mut changes: Vec<Change> = (0..HOSTS)
        .map(|n| {
            create(record(
                &format!("host-{n:03}.example.com."),
                RrType::A,
                &[&format!("10.0.{}.{}", n / 200, n % 200 + 1)],
            ))
        })
        .collect();
    changes.extend([
        create(
            record("www.example.com.", RrType::A, &["192.0.2.1"])
                .set_identifier("blue")
                .weight(70)
                .health_check_id(&http),
        ),
        create(record("www.example.com.", RrType::A, &["192.0.2.2"]).set_identifier("green").weight(30)),
        create(
            record("api.example.com.", RrType::A, &["192.0.2.3"])
                .set_identifier("primary")
                .failover(ResourceRecordSetFailover::Primary)
                .health_check_id(&http),
        ),
        create(
            record("api.example.com.", RrType::A, &["192.0.2.4"])
                .set_identifier("secondary")
                .failover(ResourceRecordSetFailover::Secondary),
        ),
        create(
            record("lat.example.com.", RrType::A, &["192.0.2.5"])
                .set_identifier("use1")
                .region(ResourceRecordSetRegion::UsEast1),
        ),
        create(
            record("geo.example.com.", RrType::A, &["192.0.2.6"])
                .set_identifier("europe")
                .geo_location(GeoLocation::builder().continent_code("EU").build()),
        ),
        create(record("mv.example.com.", RrType::A, &["192.0.2.7"]).set_identifier("mv-1").multi_value_answer(true)),
        create(record("txt.example.com.", RrType::Txt, &["\"v=spf1 -all\"", "\"hello\""])),
        create(record("mail.example.com.", RrType::Mx, &["10 mx1.example.com.", "20 mx2.example.com."])),
        create(
            ResourceRecordSet::builder().name("app.example.com.").r#type(RrType::A).alias_target(
                AliasTarget::builder()
                    .dns_name("host-001.example.com.")
                    .hosted_zone_id(&zone)
                    .evaluate_target_health(false)
                    .build()
                    .expect("an alias"),
            ),
        ),
        create(
            ResourceRecordSet::builder().name("lb.example.com.").r#type(RrType::A).alias_target(
                AliasTarget::builder()
                    .dns_name(LB_DNS)
                    .hosted_zone_id(LB_ZONE)
                    .evaluate_target_health(true)
                    .build()
                    .expect("an alias"),
            ),
        ),
    ]);
    change(client, &zone, changes).await;

    let vpc = create_vpc(&servers.ec2("us-east-1")).await;
    let private = create_zone(client, "internal.example", "inside", Some(&vpc)).await;
    change(client, &private, vec![create(record("db.internal.example.", RrType::Cname, &["db-1.internal.example."]))])
        .await;
    (zone, vpc)
}

/// Records the public zone holds: the hosts, 11 more, and the zone's own NS and SOA.
const PUBLIC_RECORDS: usize = HOSTS + 11 + 2;

fn zone<'a>(config: &'a Route53Config, key: &str) -> &'a HostedZone {
    config.hosted_zones.iter().find(|z| z.key == key).unwrap_or_else(|| panic!("zone {key} exported"))
}

fn record_of<'a>(zone: &'a HostedZone, key: &str) -> &'a RecordSet {
    zone.record_sets.iter().find(|r| r.key == key).unwrap_or_else(|| panic!("record {key} in {}", zone.key))
}

/// The configuration as the diff compares it: without the fields that name ids.
fn without_mapped_fields(config: &Route53Config) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|field, _| !MAPPED_FIELDS.contains(&field.as_str()));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(config).expect("a JSON configuration");
    strip(&mut value);
    value
}

fn options(source_vpc: &str, target_vpc: &str) -> ApplyOptions {
    ApplyOptions {
        region: "us-east-1".into(),
        mapping: Mapping {
            vpcs: BTreeMap::from([(source_vpc.to_string(), target_vpc.to_string())]),
            alias_dns_names: BTreeMap::from([(LB_DNS.to_string(), RESTORED_LB_DNS.to_string())]),
            alias_zone_ids: BTreeMap::from([(LB_ZONE.to_string(), RESTORED_LB_ZONE.to_string())]),
            ..Mapping::default()
        },
        ..ApplyOptions::default()
    }
}

fn kinds(report: &RestoreReport) -> BTreeMap<ChangeKind, usize> {
    let mut kinds = BTreeMap::new();
    for change in &report.changes {
        *kinds.entry(change.kind).or_default() += 1;
    }
    kinds
}

#[tokio::test]
async fn export_reads_every_page_and_every_routing_policy() {
    let servers = Servers::start().await;
    let accounts = accounts(&servers).await;
    let (zone_id, vpc) = source_configuration(&servers, &accounts.source).await;

    let config = route53::export_with_page_size(&accounts.source, 50).await.expect("export");

    let counts = route53::counts(&config);
    assert_eq!(counts["hosted_zones"], 2);
    assert_eq!(counts["health_checks"], 2);
    assert_eq!(counts["record_sets"], PUBLIC_RECORDS + 3, "every page of the public zone, and the private zone's 3");
    let keys: Vec<&str> = config.hosted_zones.iter().map(|z| z.key.as_str()).collect();
    assert_eq!(keys, vec!["example.com.|public", "internal.example.|private"]);

    let web = config.health_checks.iter().find(|c| c.key == "HTTP|192.0.2.10|80|/health").expect("the HTTP check");
    assert_eq!((web.request_interval, web.failure_threshold), (Some(30), Some(2)));
    assert_eq!(web.tags, BTreeMap::from([("team".to_string(), "web".to_string())]));
    let origin =
        config.health_checks.iter().find(|c| c.key == "HTTPS|origin.example.com|443|/").expect("the HTTPS check");
    assert_eq!(origin.enable_sni, Some(true));

    let public = zone(&config, "example.com.|public");
    assert_eq!((public.id.as_str(), public.private), (zone_id.as_str(), false));
    assert_eq!(public.comment.as_deref(), Some("the public front door"));
    assert_eq!(public.tags, BTreeMap::from([("env".to_string(), "prod".to_string())]));
    assert_eq!(public.record_sets.len(), PUBLIC_RECORDS);
    let sorted: Vec<&String> = public.record_sets.iter().map(|r| &r.key).collect();
    assert!(sorted.windows(2).all(|w| w[0] < w[1]), "records sorted by key, none twice");
    for n in 0..HOSTS {
        let host = record_of(public, &format!("host-{n:03}.example.com.|A|"));
        assert_eq!(host.resource_records, vec![format!("10.0.{}.{}", n / 200, n % 200 + 1)]);
        assert_eq!(host.ttl, Some(300));
    }

    let blue = record_of(public, "www.example.com.|A|blue");
    assert_eq!((blue.set_identifier.as_deref(), blue.weight), (Some("blue"), Some(70)));
    assert_eq!(blue.health_check_id.as_deref(), Some(web.id.as_str()));
    assert_eq!(blue.health_check.as_deref(), Some(web.key.as_str()), "the record names its health check by key");
    assert_eq!(record_of(public, "www.example.com.|A|green").weight, Some(30));
    let primary = record_of(public, "api.example.com.|A|primary");
    assert_eq!(
        (primary.failover.as_deref(), primary.health_check.as_deref()),
        (Some("PRIMARY"), Some(web.key.as_str()))
    );
    assert_eq!(record_of(public, "api.example.com.|A|secondary").failover.as_deref(), Some("SECONDARY"));
    assert_eq!(record_of(public, "lat.example.com.|A|use1").region.as_deref(), Some("us-east-1"));
    let geo = record_of(public, "geo.example.com.|A|europe").geo_location.clone().expect("a geolocation");
    assert_eq!(geo.continent_code.as_deref(), Some("EU"));
    assert_eq!(record_of(public, "mv.example.com.|A|mv-1").multi_value_answer, Some(true));
    assert_eq!(record_of(public, "txt.example.com.|TXT|").resource_records, vec!["\"v=spf1 -all\"", "\"hello\""]);
    let app = record_of(public, "app.example.com.|A|").alias_target.clone().expect("an alias");
    assert_eq!((app.dns_name.as_str(), app.hosted_zone_id.as_str()), ("host-001.example.com.", zone_id.as_str()));
    let lb = record_of(public, "lb.example.com.|A|").alias_target.clone().expect("an alias");
    assert_eq!((lb.dns_name.as_str(), lb.hosted_zone_id.as_str(), lb.evaluate_target_health), (LB_DNS, LB_ZONE, true));
    let ns = record_of(public, "example.com.|NS|");
    assert!(
        ns.resource_records.is_empty() && !ns.assigned_records.is_empty(),
        "the zone's own NS is Route 53's: {ns:?}"
    );

    let private = zone(&config, "internal.example.|private");
    assert!(private.private);
    assert_eq!(private.vpcs, vec![ZoneVpc { key: "us-east-1".into(), region: "us-east-1".into(), vpc_id: vpc }]);
    assert_eq!(record_of(private, "db.internal.example.|CNAME|").resource_records, vec!["db-1.internal.example."]);
    assert_eq!(private.dnssec, None, "no DNSSEC for private zones");

    let again = route53::export(&accounts.source).await.expect("export with Route 53's page size");
    assert_eq!(again, config, "the page size changes nothing");
}

#[tokio::test]
async fn restore_into_another_account_is_equal_rerunnable_and_dry_runs_read_only() {
    let servers = Servers::start().await;
    let accounts = accounts(&servers).await;
    let (_, source_vpc) = source_configuration(&servers, &accounts.source).await;
    let source = route53::export_with_page_size(&accounts.source, 50).await.expect("export the source");
    let options = options(&source_vpc, &accounts.target_vpc);

    // A dry run plans everything and creates nothing.
    let dry = ApplyOptions { dry_run: true, ..options.clone() };
    let planned = route53::restore(&source, &accounts.target, &dry).await.expect("dry run");
    let empty = route53::export(&accounts.target).await.expect("export the target");
    assert!(empty.hosted_zones.is_empty() && empty.health_checks.is_empty(), "a dry run changes nothing: {empty:?}");

    let report = route53::restore(&source, &accounts.target, &options).await.expect("restore");
    let restorable = PUBLIC_RECORDS + 3 - 4;
    assert_eq!(
        kinds(&report),
        BTreeMap::from([(ChangeKind::Create, 2 + 2 + restorable), (ChangeKind::Skip, 4)]),
        "{:#?}",
        report.changes
    );
    assert_eq!(kinds(&planned), kinds(&report), "the dry run planned what the restore did");
    assert!(report
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Skip)
        .all(|c| c.resource.contains("|NS|") || c.resource.contains("|SOA|")));

    let target = route53::export_with_page_size(&accounts.target, 50).await.expect("export the target");
    assert_eq!(without_mapped_fields(&target), without_mapped_fields(&source), "equal apart from the mapped ids");
    let public = zone(&target, "example.com.|public");
    let source_public = zone(&source, "example.com.|public");
    assert_eq!(report.ids.get(&source_public.id), Some(&public.id), "the report maps the zone's id");
    assert_ne!(public.id, source_public.id);
    let lb = record_of(public, "lb.example.com.|A|").alias_target.clone().expect("an alias");
    assert_eq!((lb.dns_name.as_str(), lb.hosted_zone_id.as_str()), (RESTORED_LB_DNS, RESTORED_LB_ZONE));
    let app = record_of(public, "app.example.com.|A|").alias_target.clone().expect("an alias");
    assert_eq!(app.hosted_zone_id, public.id, "an alias into its own zone points at the restored zone");
    let web = target.health_checks.iter().find(|c| c.key == "HTTP|192.0.2.10|80|/health").expect("the HTTP check");
    let source_web = source.health_checks.iter().find(|c| c.key == web.key).expect("the source's HTTP check");
    assert_eq!(report.ids.get(&source_web.id), Some(&web.id), "the report maps the health check's id");
    assert_eq!(record_of(public, "www.example.com.|A|blue").health_check_id.as_deref(), Some(web.id.as_str()));
    let private = zone(&target, "internal.example.|private");
    assert_eq!(private.vpcs.iter().map(|v| v.vpc_id.as_str()).collect::<Vec<_>>(), vec![accounts.target_vpc.as_str()]);

    // Again: everything is there and equal.
    let rerun = route53::restore(&source, &accounts.target, &options).await.expect("restore again");
    assert_eq!(kinds(&rerun), BTreeMap::from([(ChangeKind::Keep, 2 + 2 + restorable), (ChangeKind::Skip, 4)]));
    assert_eq!(route53::export_with_page_size(&accounts.target, 50).await.expect("export"), target, "nothing new");

    // Someone changes a record in the target: left alone without `replace`...
    let txt = record("txt.example.com.", RrType::Txt, &["\"changed\""]).build().expect("a record set");
    let upsert = Change::builder().action(ChangeAction::Upsert).resource_record_set(txt).build().expect("a change");
    change(&accounts.target, &public.id, vec![upsert]).await;
    let changed = route53::export(&accounts.target).await.expect("export the changed target");
    let differs = route53::restore(&source, &accounts.target, &options).await.expect("restore without replace");
    let differing: Vec<&str> =
        differs.changes.iter().filter(|c| c.kind == ChangeKind::Differs).map(|c| c.resource.as_str()).collect();
    assert_eq!(differing, vec!["record txt.example.com.|TXT|"]);
    assert_eq!(route53::export(&accounts.target).await.expect("export"), changed, "left alone");

    // ...a dry run with `replace` says it would replace it and changes nothing...
    let replace = ApplyOptions { replace: true, ..options.clone() };
    let dry_replace = ApplyOptions { dry_run: true, ..replace.clone() };
    let would = route53::restore(&source, &accounts.target, &dry_replace).await.expect("dry run with replace");
    assert_eq!(would.count(ChangeKind::Replace), 1);
    assert_eq!(route53::export(&accounts.target).await.expect("export"), changed, "a dry run changes nothing");

    // ...and with `replace` it is replaced, and the target is the source again.
    let replaced = route53::restore(&source, &accounts.target, &replace).await.expect("restore with replace");
    let replacing: Vec<&str> =
        replaced.changes.iter().filter(|c| c.kind == ChangeKind::Replace).map(|c| c.resource.as_str()).collect();
    assert_eq!(replacing, vec!["record txt.example.com.|TXT|"]);
    let restored = route53::export(&accounts.target).await.expect("export the replaced target");
    assert_eq!(without_mapped_fields(&restored), without_mapped_fields(&source));
}

#[tokio::test]
async fn a_changed_zone_and_health_check_differ_and_are_replaced_with_replace() {
    let servers = Servers::start().await;
    let accounts = accounts(&servers).await;
    let (_, source_vpc) = source_configuration(&servers, &accounts.source).await;
    let source = route53::export(&accounts.source).await.expect("export the source");
    let options = options(&source_vpc, &accounts.target_vpc);
    route53::restore(&source, &accounts.target, &options).await.expect("restore");

    // In the target, someone edits the public zone's comment and tags and the HTTP check.
    let restored = route53::export(&accounts.target).await.expect("export the target");
    let public = zone(&restored, "example.com.|public");
    accounts.target.update_hosted_zone_comment().id(&public.id).comment("edited").send().await.expect("comment");
    tag(&accounts.target, TagResourceType::Hostedzone, &public.id, "env", "staging").await;
    let web = restored.health_checks.iter().find(|c| c.key == "HTTP|192.0.2.10|80|/health").expect("the HTTP check");
    accounts.target.update_health_check().health_check_id(&web.id).failure_threshold(5).send().await.expect("update");

    let report = route53::restore(&source, &accounts.target, &options).await.expect("restore without replace");
    let differing: Vec<(&str, &str)> = report
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Differs)
        .map(|c| (c.resource.as_str(), c.detail.as_str()))
        .collect();
    assert_eq!(
        differing,
        vec![
            ("health check HTTP|192.0.2.10|80|/health", format!("{} differs in failure_threshold", web.id).as_str()),
            ("zone example.com.|public", format!("{} differs in comment, tags", public.id).as_str()),
        ]
    );

    let replace = ApplyOptions { replace: true, ..options.clone() };
    let replaced = route53::restore(&source, &accounts.target, &replace).await.expect("restore with replace");
    assert_eq!(replaced.count(ChangeKind::Replace), 2, "{:#?}", replaced.changes);
    let target = route53::export(&accounts.target).await.expect("export the replaced target");
    assert_eq!(without_mapped_fields(&target), without_mapped_fields(&source), "the source's again");
    assert_eq!(zone(&target, "example.com.|public").id, public.id, "replaced in place, same zone");
}

#[tokio::test]
async fn private_zones_of_one_name_are_told_apart_by_their_vpcs() {
    let servers = Servers::start().await;
    let accounts = accounts(&servers).await;
    let ec2 = servers.ec2("us-east-1");
    let (east, west) = (create_vpc(&ec2).await, create_vpc(&ec2).await);
    let first = create_zone(&accounts.source, "corp.internal", "first", Some(&east)).await;
    change(&accounts.source, &first, vec![create(record("a.corp.internal.", RrType::A, &["10.0.0.1"]))]).await;
    let second = create_zone(&accounts.source, "corp.internal", "second", Some(&west)).await;
    change(&accounts.source, &second, vec![create(record("b.corp.internal.", RrType::A, &["10.0.0.2"]))]).await;
    let source = route53::export(&accounts.source).await.expect("export");
    let keys: Vec<(&str, &str)> =
        source.hosted_zones.iter().map(|z| (z.key.as_str(), z.comment.as_deref().unwrap_or_default())).collect();
    assert_eq!(keys, vec![("corp.internal.|private", "first"), ("corp.internal.|private|#2", "second")]);

    let target_config = lifeboat_common::aws::Accounts::new(servers.aws("us-east-1"), "role")
        .config_for(TARGET_ACCOUNT, "us-east-1")
        .await
        .expect("assume a role into the target");
    let other_vpc = create_vpc(&aws_sdk_ec2::Client::new(&target_config)).await;
    let mut options = options(&east, &accounts.target_vpc);
    options.mapping.vpcs.insert(west.clone(), other_vpc.clone());
    let report = route53::restore(&source, &accounts.target, &options).await.expect("restore");
    assert_eq!(report.count(ChangeKind::Create), 4, "two zones and their records: {:#?}", report.changes);
    let target = route53::export(&accounts.target).await.expect("export the target");
    assert_eq!(without_mapped_fields(&target), without_mapped_fields(&source));
    assert_eq!(zone(&target, "corp.internal.|private|#2").vpcs[0].vpc_id, other_vpc, "in its mapped VPC");
    let rerun = route53::restore(&source, &accounts.target, &options).await.expect("restore again");
    assert_eq!(rerun.count(ChangeKind::Keep), 4, "{:#?}", rerun.changes);
}

/// Counts the changes of every ChangeResourceRecordSets call a client makes.
#[derive(Clone, Debug, Default)]
struct ChangeBatches(Arc<Mutex<Vec<usize>>>);

impl Intercept for ChangeBatches {
    fn name(&self) -> &'static str {
        "ChangeBatches"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<ChangeResourceRecordSetsInput>() {
            let changes = input.change_batch().map(|batch| batch.changes().len()).unwrap_or_default();
            self.0.lock().expect("batches").push(changes);
        }
        Ok(())
    }
}

#[tokio::test]
async fn restore_sends_records_in_batches_of_at_most_a_hundred() {
    let servers = Servers::start().await;
    let accounts = accounts(&servers).await;
    let zone_id = create_zone(&accounts.source, "many.example", "many records", None).await;
    let changes = (0..250)
        .map(|n| create(record(&format!("r{n:03}.many.example."), RrType::A, &[&format!("10.1.0.{}", n % 250 + 1)])));
    change(&accounts.source, &zone_id, changes.collect()).await;
    let source = route53::export(&accounts.source).await.expect("export");
    assert_eq!(route53::counts(&source)["record_sets"], 252);

    let batches = ChangeBatches::default();
    let counted =
        aws_sdk_route53::Client::from_conf(accounts.target.config().to_builder().interceptor(batches.clone()).build());
    let report = route53::restore(&source, &counted, &ApplyOptions::default()).await.expect("restore");

    let sizes = batches.0.lock().expect("batches").clone();
    assert!(sizes.len() >= 3, "250 records need 3 calls at least: {sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 100), "at most 100 changes a call: {sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 250);
    assert_eq!(report.count(ChangeKind::Create), 1 + 250);
    assert!(report.changes.iter().any(|c| c.detail.ends_with("(batch 3 of 3)")), "the report names the batches");
    let target = route53::export(&accounts.target).await.expect("export the target");
    assert_eq!(without_mapped_fields(&target), without_mapped_fields(&source));
}

/// Creates a CloudWatch Logs group in moto's default account ([`ACCOUNT`]), which the tests
/// crate has no SDK for: one JSON call, signed as moto reads it (not checked).
async fn create_log_group(servers: &Servers, name: &str) -> String {
    let response = reqwest::Client::new()
        .post(&servers.moto_url)
        .header("X-Amz-Target", "Logs_20140328.CreateLogGroup")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/logs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(serde_json::json!({ "logGroupName": name }).to_string())
        .send()
        .await
        .expect("create a log group");
    assert!(response.status().is_success(), "create the log group: {}", response.text().await.unwrap_or_default());
    format!("arn:aws:logs:us-east-1:{ACCOUNT}:log-group:{name}:*")
}

#[tokio::test]
async fn query_logging_is_exported_kept_in_its_account_and_skipped_in_another() {
    let servers = Servers::start().await;
    let accounts = accounts(&servers).await;
    let zone_id = create_zone(&accounts.source, "logged.example", "with query logs", None).await;
    let group = create_log_group(&servers, "/aws/route53/logged.example").await;
    accounts
        .source
        .create_query_logging_config()
        .hosted_zone_id(&zone_id)
        .cloud_watch_logs_log_group_arn(&group)
        .send()
        .await
        .expect("create the query logging configuration");
    let other = create_zone(&accounts.source, "quiet.example", "without", None).await;

    let source = route53::export(&accounts.source).await.expect("export");
    let logged = zone(&source, "logged.example.|public");
    assert_eq!(logged.query_logging.as_ref().map(|q| q.cloudwatch_log_group_arn.as_str()), Some(group.as_str()));
    assert_eq!(zone(&source, "quiet.example.|public").query_logging, None, "only the zone it logs ({other})");

    // Into its own account: the zone, its records and its query logging are all there already.
    let same = route53::restore(&source, &accounts.source, &ApplyOptions::default()).await.expect("restore in place");
    assert_eq!(kinds(&same), BTreeMap::from([(ChangeKind::Keep, 3), (ChangeKind::Skip, 4)]), "{:#?}", same.changes);
    assert!(same
        .changes
        .iter()
        .any(|c| c.resource == "query logging logged.example.|public" && c.kind == ChangeKind::Keep));

    // Into another account the source's log group cannot be used: skipped, saying why.
    let report = route53::restore(&source, &accounts.target, &ApplyOptions::default()).await.expect("restore");
    let logging = report
        .changes
        .iter()
        .find(|c| c.resource == "query logging logged.example.|public")
        .expect("query logging in the report");
    assert_eq!(logging.kind, ChangeKind::Skip, "{logging:?}");
    assert!(logging.detail.contains(&group), "{}", logging.detail);
    let target = route53::export(&accounts.target).await.expect("export the target");
    assert_eq!(target.hosted_zones.len(), 2, "the zones are restored all the same");
}

/// What moto cannot show, against the real SDK client with aws-smithy-mocks: Route 53's own
/// record paging by identifier, a create whose answer was lost, and how errors are classified.
mod mocked {
    use std::sync::{Arc, Mutex};

    use aws_sdk_route53::operation::create_health_check::CreateHealthCheckError;
    use aws_sdk_route53::operation::get_dnssec::GetDNSSECError;
    use aws_sdk_route53::operation::list_health_checks::{ListHealthChecksError, ListHealthChecksOutput};
    use aws_sdk_route53::operation::list_hosted_zones::ListHostedZonesOutput;
    use aws_sdk_route53::operation::list_query_logging_configs::ListQueryLoggingConfigsOutput;
    use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
    use aws_sdk_route53::operation::list_tags_for_resources::ListTagsForResourcesOutput;
    use aws_sdk_route53::types::{
        HealthCheck, HealthCheckConfig, HealthCheckType, HostedZone, HostedZoneConfig, ResourceRecord,
        ResourceRecordSet, RrType,
    };
    use aws_sdk_route53::Client;
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;
    use lifeboat_common::aws::ErrorClass;
    use lifeboat_config::changes::{ApplyOptions, ChangeKind};
    use lifeboat_config::route53::{self, Route53Config};

    fn no_health_checks() -> Rule {
        mock!(Client::list_health_checks).then_output(|| {
            ListHealthChecksOutput::builder()
                .set_health_checks(Some(Vec::new()))
                .marker("")
                .is_truncated(false)
                .max_items(100)
                .build()
                .expect("a listing")
        })
    }

    fn no_query_logging() -> Rule {
        mock!(Client::list_query_logging_configs).then_output(|| {
            ListQueryLoggingConfigsOutput::builder()
                .set_query_logging_configs(Some(Vec::new()))
                .build()
                .expect("a listing")
        })
    }

    fn no_tags() -> Rule {
        mock!(Client::list_tags_for_resources).then_output(|| {
            ListTagsForResourcesOutput::builder().set_resource_tag_sets(Some(Vec::new())).build().expect("a listing")
        })
    }

    fn weighted(set_identifier: &str, value: &str) -> ResourceRecordSet {
        ResourceRecordSet::builder()
            .name("www.example.com.")
            .r#type(RrType::A)
            .set_identifier(set_identifier)
            .weight(50)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value(value).build().expect("a value"))
            .build()
            .expect("a record set")
    }

    #[tokio::test]
    async fn export_pages_a_weighted_set_by_its_next_record_identifier() {
        let zones = mock!(Client::list_hosted_zones).then_output(|| {
            let zone = HostedZone::builder()
                .id("/hostedzone/Z0MOCKED")
                .name("example.com.")
                .caller_reference("mocked")
                .config(HostedZoneConfig::builder().private_zone(false).build())
                .build()
                .expect("a zone");
            ListHostedZonesOutput::builder()
                .hosted_zones(zone)
                .marker("")
                .is_truncated(false)
                .max_items(100)
                .build()
                .expect("a listing")
        });
        let dnssec = mock!(Client::get_dnssec).then_error(|| {
            GetDNSSECError::generic(ErrorMetadata::builder().code("InvalidArgument").message("no DNSSEC").build())
        });
        let first = mock!(Client::list_resource_record_sets)
            .match_requests(|req| req.hosted_zone_id() == Some("Z0MOCKED") && req.start_record_name().is_none())
            .then_output(|| {
                ListResourceRecordSetsOutput::builder()
                    .resource_record_sets(weighted("blue", "192.0.2.1"))
                    .is_truncated(true)
                    .next_record_name("www.example.com.")
                    .next_record_type(RrType::A)
                    .next_record_identifier("green")
                    .max_items(1)
                    .build()
                    .expect("a page")
            });
        let second = mock!(Client::list_resource_record_sets)
            .match_requests(|req| {
                req.start_record_name() == Some("www.example.com.")
                    && req.start_record_type() == Some(&RrType::A)
                    && req.start_record_identifier() == Some("green")
            })
            .then_output(|| {
                ListResourceRecordSetsOutput::builder()
                    .resource_record_sets(weighted("green", "192.0.2.2"))
                    .is_truncated(false)
                    .max_items(1)
                    .build()
                    .expect("a page")
            });
        let rules = [&no_health_checks(), &no_query_logging(), &no_tags(), &zones, &dnssec, &first, &second];
        let client = mock_client!(aws_sdk_route53, RuleMode::MatchAny, rules);

        let config = route53::export_with_page_size(&client, 1).await.expect("export");

        let zone = &config.hosted_zones[0];
        assert_eq!((zone.id.as_str(), zone.dnssec.as_deref()), ("Z0MOCKED", None), "InvalidArgument: no DNSSEC");
        let keys: Vec<&str> = zone.record_sets.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, vec!["www.example.com.|A|blue", "www.example.com.|A|green"]);
        assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
    }

    fn config_with_a_health_check() -> Route53Config {
        Route53Config {
            health_checks: vec![route53::HealthCheck {
                key: "HTTP|192.0.2.10|80|/health".into(),
                id: "source-check".into(),
                check_type: "HTTP".into(),
                ip_address: Some("192.0.2.10".into()),
                port: Some(80),
                resource_path: Some("/health".into()),
                ..route53::HealthCheck::default()
            }],
            ..Route53Config::default()
        }
    }

    #[tokio::test]
    async fn a_health_check_whose_create_answer_was_lost_is_adopted() {
        // The first create went through but its answer was lost: the retry is refused as a
        // duplicate, and the check is then found under the restore's caller reference.
        let reference = Arc::new(Mutex::new(String::new()));
        let seen = reference.clone();
        let create = mock!(Client::create_health_check)
            .match_requests(move |req| {
                *seen.lock().expect("reference") = req.caller_reference().unwrap_or_default().to_string();
                true
            })
            .then_error(|| {
                CreateHealthCheckError::generic(
                    ErrorMetadata::builder().code("HealthCheckAlreadyExists").message("exists").build(),
                )
            });
        let found = reference.clone();
        let listing = mock!(Client::list_health_checks)
            .sequence()
            .output(|| {
                ListHealthChecksOutput::builder()
                    .set_health_checks(Some(Vec::new()))
                    .marker("")
                    .is_truncated(false)
                    .max_items(100)
                    .build()
                    .expect("a listing")
            })
            .output(move || {
                let check = HealthCheck::builder()
                    .id("adopted-check")
                    .caller_reference(found.lock().expect("reference").clone())
                    .health_check_config(
                        HealthCheckConfig::builder()
                            .r#type(HealthCheckType::Http)
                            .ip_address("192.0.2.10")
                            .port(80)
                            .resource_path("/health")
                            .build()
                            .expect("a config"),
                    )
                    .health_check_version(1)
                    .build()
                    .expect("a health check");
                ListHealthChecksOutput::builder()
                    .health_checks(check)
                    .marker("")
                    .is_truncated(false)
                    .max_items(100)
                    .build()
                    .expect("a listing")
            })
            .build();
        let rules = [&create, &listing, &no_tags(), &no_query_logging()];
        let client = mock_client!(aws_sdk_route53, RuleMode::MatchAny, rules);

        let report =
            route53::restore(&config_with_a_health_check(), &client, &ApplyOptions::default()).await.expect("restore");

        assert_eq!(report.ids.get("source-check").map(String::as_str), Some("adopted-check"));
        assert_eq!(report.count(ChangeKind::Create), 1);
        assert!(reference.lock().expect("reference").starts_with("lifeboat-"), "a caller reference from the key");
    }

    #[tokio::test]
    async fn throttling_is_retryable_and_access_denied_fails_with_its_code() {
        let error = |code: &'static str| {
            mock!(Client::list_health_checks).then_error(move || {
                ListHealthChecksError::generic(
                    ErrorMetadata::builder().code(code).message(format!("mocked {code}")).build(),
                )
            })
        };
        let throttled = error("Throttling");
        let client = mock_client!(aws_sdk_route53, RuleMode::MatchAny, [&throttled], |conf| conf
            .retry_config(aws_sdk_route53::config::retry::RetryConfig::disabled()));
        let failed = route53::export(&client).await.expect_err("throttled");
        assert_eq!((failed.class, failed.code.as_str()), (ErrorClass::Retryable, "Throttling"));

        let denied = error("AccessDenied");
        let client = mock_client!(aws_sdk_route53, RuleMode::MatchAny, [&denied]);
        let failed = route53::export(&client).await.expect_err("denied");
        assert_eq!(
            (failed.class, failed.code.as_str(), failed.operation),
            (ErrorClass::TaskFailure, "AccessDenied", "route53:ListHealthChecks")
        );
    }
}
