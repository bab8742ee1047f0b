//! Route 53: every hosted zone with its records and the health checks, exported and restored.
//!
//! The export reads every list to its end (zones, record sets, health checks, query logging
//! configurations) into plain serde types whose collections carry a `key` that is stable across
//! accounts, so that a restored copy compares equal to its source apart from [`MAPPED_FIELDS`].
//! The restore is re-runnable: it looks for what exists first (zones by name, health checks by
//! key, records by name, type and set identifier) and only creates what is missing.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_route53::types::{
    self as sdk, ChangeAction, HealthCheckRegion, HealthCheckType, InsufficientDataHealthStatus, ResettableElementName,
    ResourceRecordSetFailover, ResourceRecordSetRegion, RrType, TagResourceType, VpcRegion,
};
use futures::{StreamExt, TryStreamExt};
use lifeboat_common::aws::{absent_if_not_found, classify, AwsError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::changes::{ApplyOptions, ChangeKind, Mapping, RestoreReport};

/// Fields whose values are ids that differ between a configuration and its restored copy; the
/// diff leaves them out unless asked to compare them.
///
/// - `id`: zone, health check and query logging configuration ids (Route 53 assigns them).
/// - `caller_reference`: the restore derives its own, so a retry is idempotent.
/// - `health_check_id`, `child_health_checks`: ids of health checks; the records and calculated
///   checks also name them by key (`health_check`, `child_health_check_keys`), which is compared.
/// - `vpc_id`: private zones' VPCs, mapped by [`Mapping::vpcs`].
/// - `hosted_zone_id`, `dns_name`: alias targets, which point at load balancers whose DNS names
///   and canonical zone ids change when they are restored (and at zones whose ids change).
/// - `assigned_records`: the values of a zone's own NS and SOA, which Route 53 assigns per zone.
/// - `cloudwatch_log_group_arn`: query logging's log group, an ARN in the zone's account.
pub const MAPPED_FIELDS: &[&str] = &[
    "id",
    "caller_reference",
    "health_check_id",
    "child_health_checks",
    "vpc_id",
    "hosted_zone_id",
    "dns_name",
    "assigned_records",
    "cloudwatch_log_group_arn",
];

/// Route 53's largest page of record sets (and what [`export`] asks for).
pub const DEFAULT_PAGE_SIZE: i32 = 300;
/// Route 53 takes at most this many changes in one `ChangeResourceRecordSets` call...
pub const MAX_CHANGES_PER_BATCH: usize = 100;
/// ...and at most this many `ResourceRecord` elements (an UPSERT's count twice)...
const MAX_RECORDS_PER_BATCH: usize = 1000;
/// ...and at most this many characters of record values (an UPSERT's count twice).
const MAX_VALUE_CHARS_PER_BATCH: usize = 32_000;
/// `ListTagsForResources` and `ChangeTagsForResource` take at most 10 ids or tags.
const TAGS_PER_CALL: usize = 10;
/// Zones read at once during an export.
const ZONES_IN_FLIGHT: usize = 4;
/// Codes with which GetDNSSEC says "not here" (private zones, emulators without DNSSEC).
const DNSSEC_ABSENT: &[&str] =
    &["InvalidArgument", "InvalidInput", "NotFound", "HTTP404", "UnsupportedOperation", "NotImplemented", "HTTP501"];
/// Health check fields UpdateHealthCheck cannot change.
const NOT_UPDATABLE: &[&str] = &["type", "request_interval", "measure_latency", "routing_control_arn"];
/// Codes with which CreateQueryLoggingConfig says the log group cannot be used from here.
const LOG_GROUP_UNUSABLE: &[&str] =
    &["NoSuchCloudWatchLogsLogGroup", "InvalidInput", "InsufficientCloudWatchLogsResourcePolicy"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Route53Config {
    pub hosted_zones: Vec<HostedZone>,
    pub health_checks: Vec<HealthCheck>,
}

/// A hosted zone with everything needed to rebuild it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostedZone {
    /// `<name>|public` or `<name>|private`.
    pub key: String,
    /// Without the `/hostedzone/` prefix, as alias targets name zones.
    pub id: String,
    pub name: String,
    pub private: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub caller_reference: String,
    /// A private zone's VPC associations.
    pub vpcs: Vec<ZoneVpc>,
    /// DNSSEC's `ServeSignature` (`SIGNING`, `NOT_SIGNING`...) of a public zone, when Route 53
    /// answers GetDNSSEC for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnssec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_logging: Option<QueryLogging>,
    pub tags: BTreeMap<String, String>,
    pub record_sets: Vec<RecordSet>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default)]
pub struct ZoneVpc {
    /// The VPC's region, or `<region>|<vpc id>` when the zone has several VPCs in that region
    /// (the region alone stays equal when a restore maps the VPC id).
    pub key: String,
    pub region: String,
    pub vpc_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryLogging {
    pub id: String,
    pub cloudwatch_log_group_arn: String,
}

/// One record set, of any routing policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecordSet {
    /// `<name>|<type>|<set identifier or "">`.
    pub key: String,
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Latency routing's region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo_location: Option<GeoLocation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multi_value_answer: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    pub resource_records: Vec<String>,
    /// The values of the zone's own NS and SOA: Route 53 assigns them to each zone, so they are
    /// kept apart from `resource_records` (and never restored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assigned_records: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_target: Option<AliasTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_id: Option<String>,
    /// The key of the health check `health_check_id` names (absent when it is not exported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeoLocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continent_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdivision_code: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AliasTarget {
    pub dns_name: String,
    pub hosted_zone_id: String,
    pub evaluate_target_health: bool,
}

/// A health check's configuration (its status is volatile and not exported).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    /// `<type>|<fqdn or ip>|<port>|<path>`; a calculated check's is `CALCULATED|<child keys>`.
    /// Equal ones get `|#2`, `|#3`... in the order of their configuration.
    pub key: String,
    pub id: String,
    pub caller_reference: String,
    #[serde(rename = "type")]
    pub check_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fully_qualified_domain_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_string: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_interval: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measure_latency: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inverted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_threshold: Option<i32>,
    /// A calculated check's children, by id...
    pub child_health_checks: Vec<String>,
    /// ...and by key.
    pub child_health_check_keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_sni: Option<bool>,
    pub regions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insufficient_data_health_status: Option<String>,
    /// The CloudWatch alarm a `CLOUDWATCH_METRIC` check follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarm_identifier: Option<AlarmIdentifier>,
    /// The Application Recovery Controller routing control of a `RECOVERY_CONTROL` check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_control_arn: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlarmIdentifier {
    pub region: String,
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

/// Reads the whole Route 53 configuration of the client's account, every list to its end.
pub async fn export(client: &aws_sdk_route53::Client) -> Result<Route53Config, AwsError> {
    export_with_page_size(client, DEFAULT_PAGE_SIZE).await
}

/// [`export`] with pages of at most `max_items` zones, record sets and health checks (small
/// pages show that every list is read to its end).
pub async fn export_with_page_size(
    client: &aws_sdk_route53::Client,
    max_items: i32,
) -> Result<Route53Config, AwsError> {
    let health_checks = export_health_checks(client, max_items).await?;
    let check_keys: BTreeMap<String, String> =
        health_checks.iter().map(|check| (check.id.clone(), check.key.clone())).collect();
    let query_logging = list_query_logging(client).await?;
    let summaries = list_zones(client, max_items).await?;
    let ids: Vec<String> = summaries.iter().map(|zone| bare_zone_id(zone.id())).collect();
    let tags = list_tags(client, TagResourceType::Hostedzone, &ids).await?;
    // The futures are made first: a stream mapping each borrowed zone to one is not `Send`
    // (the compiler cannot prove it for every lifetime), and a service's step must be.
    let exports: Vec<_> = summaries.iter().map(|zone| export_zone(client, zone, &check_keys, max_items)).collect();
    let mut hosted_zones: Vec<HostedZone> =
        futures::stream::iter(exports).buffered(ZONES_IN_FLIGHT).try_collect().await?;
    for zone in &mut hosted_zones {
        zone.tags = tags.get(&zone.id).cloned().unwrap_or_default();
        zone.query_logging = query_logging.get(&zone.id).cloned();
    }
    hosted_zones.sort_by_cached_key(|zone| (zone.key.clone(), zone_contents(zone)));
    disambiguate_zones(&mut hosted_zones);
    Ok(Route53Config { hosted_zones, health_checks })
}

/// How many of each kind the configuration holds (`hosted_zones`, `record_sets`, `health_checks`).
pub fn counts(config: &Route53Config) -> BTreeMap<String, usize> {
    BTreeMap::from([
        ("hosted_zones".to_string(), config.hosted_zones.len()),
        ("record_sets".to_string(), config.hosted_zones.iter().map(|zone| zone.record_sets.len()).sum()),
        ("health_checks".to_string(), config.health_checks.len()),
    ])
}

async fn list_zones(client: &aws_sdk_route53::Client, max_items: i32) -> Result<Vec<sdk::HostedZone>, AwsError> {
    let mut pages = client.list_hosted_zones().max_items(max_items).into_paginator().send();
    let mut zones = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("route53:ListHostedZones", e))?;
        zones.extend(page.hosted_zones().iter().cloned());
    }
    Ok(zones)
}

async fn export_zone(
    client: &aws_sdk_route53::Client,
    zone: &sdk::HostedZone,
    check_keys: &BTreeMap<String, String>,
    max_items: i32,
) -> Result<HostedZone, AwsError> {
    let id = bare_zone_id(zone.id());
    let private = zone.config().is_some_and(|config| config.private_zone());
    let vpcs = if private { zone_vpcs(client, &id).await? } else { Vec::new() };
    let dnssec = if private { None } else { dnssec_status(client, &id).await? };
    let mut record_sets = list_record_sets(client, &id, zone.name(), check_keys, max_items).await?;
    record_sets.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(HostedZone {
        key: zone_key(zone.name(), private),
        id,
        name: zone.name().to_string(),
        private,
        comment: zone.config().and_then(|config| config.comment()).map(str::to_string),
        caller_reference: zone.caller_reference().to_string(),
        vpcs,
        dnssec,
        query_logging: None,
        tags: BTreeMap::new(),
        record_sets,
    })
}

/// What orders zones of one name independently of ids: their comment and records' keys.
fn zone_contents(zone: &HostedZone) -> (Option<String>, Vec<String>) {
    (zone.comment.clone(), zone.record_sets.iter().map(|r| r.key.clone()).collect())
}

/// Private zones may share a name (in different VPCs): the second one's key gets `|#2`, and so
/// on, in the order of [`zone_contents`].
fn disambiguate_zones(zones: &mut [HostedZone]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for zone in zones.iter_mut() {
        let n = seen.entry(zone.key.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            zone.key = format!("{}|#{n}", zone.key);
        }
    }
}

/// A private zone's VPCs (ListHostedZones does not show them), keyed by region.
async fn zone_vpcs(client: &aws_sdk_route53::Client, zone_id: &str) -> Result<Vec<ZoneVpc>, AwsError> {
    let found = client.get_hosted_zone().id(zone_id).send().await.map_err(|e| classify("route53:GetHostedZone", e))?;
    let pairs: BTreeSet<(String, String)> = found
        .vpcs()
        .iter()
        .map(|vpc| {
            (
                vpc.vpc_region().map(|r| r.as_str().to_string()).unwrap_or_default(),
                vpc.vpc_id().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Ok(keyed_vpcs(pairs))
}

fn keyed_vpcs(pairs: BTreeSet<(String, String)>) -> Vec<ZoneVpc> {
    let in_region = |region: &str| pairs.iter().filter(|(r, _)| r == region).count();
    let mut vpcs: Vec<ZoneVpc> = pairs
        .iter()
        .map(|(region, vpc_id)| ZoneVpc {
            key: if in_region(region) > 1 { format!("{region}|{vpc_id}") } else { region.clone() },
            region: region.clone(),
            vpc_id: vpc_id.clone(),
        })
        .collect();
    vpcs.sort();
    vpcs
}

async fn dnssec_status(client: &aws_sdk_route53::Client, zone_id: &str) -> Result<Option<String>, AwsError> {
    let result = client.get_dnssec().hosted_zone_id(zone_id).send().await.map_err(|e| classify("route53:GetDNSSEC", e));
    let found = absent_if_not_found(result, DNSSEC_ABSENT)?;
    Ok(found.and_then(|out| out.status().and_then(|s| s.serve_signature()).map(str::to_string)))
}

/// Every query logging configuration, by bare zone id. Listed once for the account and matched
/// here, since a zone filter is one call per zone (and emulators filter it differently).
async fn list_query_logging(client: &aws_sdk_route53::Client) -> Result<BTreeMap<String, QueryLogging>, AwsError> {
    let mut pages = client.list_query_logging_configs().into_paginator().send();
    let mut configs = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("route53:ListQueryLoggingConfigs", e))?;
        for config in page.query_logging_configs() {
            configs.insert(
                bare_zone_id(config.hosted_zone_id()),
                QueryLogging {
                    id: config.id().to_string(),
                    cloudwatch_log_group_arn: config.cloud_watch_logs_log_group_arn().to_string(),
                },
            );
        }
    }
    Ok(configs)
}

/// Tags of `ids`, ten per call.
async fn list_tags(
    client: &aws_sdk_route53::Client,
    resource_type: TagResourceType,
    ids: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
    let mut tags = BTreeMap::new();
    for chunk in ids.chunks(TAGS_PER_CALL) {
        let out = client
            .list_tags_for_resources()
            .resource_type(resource_type.clone())
            .set_resource_ids(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| classify("route53:ListTagsForResources", e))?;
        for set in out.resource_tag_sets() {
            let of_resource: BTreeMap<String, String> = set
                .tags()
                .iter()
                .filter_map(|tag| Some((tag.key()?.to_string(), tag.value().unwrap_or_default().to_string())))
                .collect();
            tags.insert(set.resource_id().unwrap_or_default().to_string(), of_resource);
        }
    }
    Ok(tags)
}

/// Every record set of a zone, following NextRecordName/Type/Identifier to the end. A record
/// seen on an earlier page is not taken twice (a service that pages by name and type alone
/// repeats the records of a weighted set split across pages).
async fn list_record_sets(
    client: &aws_sdk_route53::Client,
    zone_id: &str,
    zone_name: &str,
    check_keys: &BTreeMap<String, String>,
    max_items: i32,
) -> Result<Vec<RecordSet>, AwsError> {
    let mut records: BTreeMap<String, RecordSet> = BTreeMap::new();
    let mut start: Option<(String, RrType, Option<String>)> = None;
    loop {
        let out = client
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .max_items(max_items)
            .set_start_record_name(start.as_ref().map(|s| s.0.clone()))
            .set_start_record_type(start.as_ref().map(|s| s.1.clone()))
            .set_start_record_identifier(start.as_ref().and_then(|s| s.2.clone()))
            .send()
            .await
            .map_err(|e| classify("route53:ListResourceRecordSets", e))?;
        let before = records.len();
        for record in out.resource_record_sets() {
            let record = record_from_sdk(record, zone_name, check_keys);
            records.entry(record.key.clone()).or_insert(record);
        }
        if !out.is_truncated() {
            break;
        }
        let next = match (out.next_record_name(), out.next_record_type()) {
            (Some(name), Some(record_type)) => {
                (name.to_string(), record_type.clone(), out.next_record_identifier().map(str::to_string))
            }
            _ => break,
        };
        if records.len() == before && start.as_ref() == Some(&next) {
            return Err(AwsError::task_failure(
                "route53:ListResourceRecordSets",
                "PaginationStuck",
                format!("zone {zone_id}: the page after {} {} repeats itself", next.0, next.1.as_str()),
            ));
        }
        start = Some(next);
    }
    Ok(records.into_values().collect())
}

fn record_from_sdk(
    record: &sdk::ResourceRecordSet,
    zone_name: &str,
    check_keys: &BTreeMap<String, String>,
) -> RecordSet {
    let record_type = record.r#type().as_str().to_string();
    let values: Vec<String> = record.resource_records().iter().map(|r| r.value().to_string()).collect();
    let assigned = is_zone_apex_assigned(record.name(), &record_type, zone_name);
    let health_check_id = record.health_check_id().map(str::to_string);
    RecordSet {
        key: record_key(record.name(), &record_type, record.set_identifier()),
        name: record.name().to_string(),
        record_type,
        set_identifier: record.set_identifier().map(str::to_string),
        weight: record.weight(),
        region: record.region().map(|r| r.as_str().to_string()),
        failover: record.failover().map(|f| f.as_str().to_string()),
        geo_location: record.geo_location().map(|geo| GeoLocation {
            continent_code: geo.continent_code().map(str::to_string),
            country_code: geo.country_code().map(str::to_string),
            subdivision_code: geo.subdivision_code().map(str::to_string),
        }),
        multi_value_answer: record.multi_value_answer(),
        ttl: record.ttl(),
        resource_records: if assigned { Vec::new() } else { values.clone() },
        assigned_records: if assigned { values } else { Vec::new() },
        alias_target: record.alias_target().map(|alias| AliasTarget {
            dns_name: alias.dns_name().to_string(),
            hosted_zone_id: alias.hosted_zone_id().to_string(),
            evaluate_target_health: alias.evaluate_target_health(),
        }),
        health_check: health_check_id.as_ref().and_then(|id| check_keys.get(id).cloned()),
        health_check_id,
    }
}

/// Every health check with its tags, keyed (see [`HealthCheck::key`]) and sorted by key.
async fn export_health_checks(client: &aws_sdk_route53::Client, max_items: i32) -> Result<Vec<HealthCheck>, AwsError> {
    let mut pages = client.list_health_checks().max_items(max_items).into_paginator().send();
    let mut checks = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("route53:ListHealthChecks", e))?;
        checks.extend(page.health_checks().iter().map(check_from_sdk));
    }
    let ids: Vec<String> = checks.iter().map(|check| check.id.clone()).collect();
    let mut tags = list_tags(client, TagResourceType::Healthcheck, &ids).await?;
    for check in &mut checks {
        check.tags = tags.remove(&check.id).unwrap_or_default();
    }
    assign_check_keys(&mut checks);
    checks.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(checks)
}

fn check_from_sdk(check: &sdk::HealthCheck) -> HealthCheck {
    let mut exported = HealthCheck {
        id: check.id().to_string(),
        caller_reference: check.caller_reference().to_string(),
        ..HealthCheck::default()
    };
    let Some(config) = check.health_check_config() else { return exported };
    exported.check_type = config.r#type().as_str().to_string();
    exported.ip_address = config.ip_address().map(str::to_string);
    exported.port = config.port();
    exported.resource_path = config.resource_path().map(str::to_string);
    exported.fully_qualified_domain_name = config.fully_qualified_domain_name().map(str::to_string);
    exported.search_string = config.search_string().map(str::to_string);
    exported.request_interval = config.request_interval();
    exported.failure_threshold = config.failure_threshold();
    exported.measure_latency = config.measure_latency();
    exported.inverted = config.inverted();
    exported.disabled = config.disabled();
    exported.health_threshold = config.health_threshold();
    exported.child_health_checks = config.child_health_checks().to_vec();
    exported.enable_sni = config.enable_sni();
    exported.regions = config.regions().iter().map(|r| r.as_str().to_string()).collect();
    exported.regions.sort();
    exported.insufficient_data_health_status = config.insufficient_data_health_status().map(|s| s.as_str().to_string());
    exported.alarm_identifier = config
        .alarm_identifier()
        .map(|alarm| AlarmIdentifier { region: alarm.region().as_str().to_string(), name: alarm.name().to_string() });
    exported.routing_control_arn = config.routing_control_arn().map(str::to_string);
    exported
}

/// Keys the checks: plain ones by what they probe, calculated ones by their children's keys,
/// equal keys told apart by their configuration's order.
fn assign_check_keys(checks: &mut [HealthCheck]) {
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for check in checks.iter_mut().filter(|c| c.check_type != "CALCULATED") {
        let alarm = check.alarm_identifier.as_ref().map(|a| format!("{}/{}", a.region, a.name));
        let probed = check
            .fully_qualified_domain_name
            .clone()
            .or(check.ip_address.clone())
            .or(alarm)
            .or(check.routing_control_arn.clone())
            .unwrap_or_default();
        check.key = format!(
            "{}|{}|{}|{}",
            check.check_type,
            probed,
            check.port.map(|p| p.to_string()).unwrap_or_default(),
            check.resource_path.as_deref().unwrap_or_default(),
        );
    }
    disambiguate(checks.iter_mut().filter(|c| c.check_type != "CALCULATED").collect());
    for check in checks.iter().filter(|c| c.check_type != "CALCULATED") {
        keys.insert(check.id.clone(), check.key.clone());
    }
    for check in checks.iter_mut().filter(|c| c.check_type == "CALCULATED") {
        let mut children: Vec<String> =
            check.child_health_checks.iter().map(|id| keys.get(id).cloned().unwrap_or_else(|| id.clone())).collect();
        children.sort();
        check.child_health_check_keys = children;
        check.key = format!("CALCULATED|{}", check.child_health_check_keys.join(","));
    }
    disambiguate(checks.iter_mut().filter(|c| c.check_type == "CALCULATED").collect());
}

fn disambiguate(mut checks: Vec<&mut HealthCheck>) {
    checks.sort_by_key(|check| (check.key.clone(), comparable_json(check)));
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for check in checks {
        let n = seen.entry(check.key.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            check.key = format!("{}|#{n}", check.key);
        }
    }
}

fn comparable_json(check: &HealthCheck) -> String {
    serde_json::to_string(&comparable_check(check)).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// Re-creates `config` in the client's account (idempotent; see [`ApplyOptions`]). Health
/// checks first (records name them), then zones, then each zone's records in batches of at
/// most [`MAX_CHANGES_PER_BATCH`]. The report's `ids` map source zone and health check ids to
/// the target's.
pub async fn restore(
    config: &Route53Config,
    client: &aws_sdk_route53::Client,
    options: &ApplyOptions,
) -> Result<RestoreReport, AwsError> {
    let mut report = RestoreReport::default();
    let check_ids = restore_health_checks(config, client, options, &mut report).await?;
    let target_logging = list_query_logging(client).await?;
    let mut zone_ids: BTreeMap<String, String> = BTreeMap::new();
    let mut targets: Vec<Option<String>> = Vec::new();
    for zone in &config.hosted_zones {
        let target = restore_zone(zone, client, options, &target_logging, &mut report).await?;
        if let Some(target_id) = &target {
            zone_ids.insert(zone.id.clone(), target_id.clone());
        }
        targets.push(target);
    }
    report.ids.extend(zone_ids.clone());
    let ids = RecordIds { checks: &check_ids, zones: &zone_ids, mapping: &options.mapping };
    for (zone, target) in config.hosted_zones.iter().zip(&targets) {
        restore_records(zone, target.as_deref(), &ids, client, options, &mut report).await?;
    }
    Ok(report)
}

/// The ids a record's copy needs: health checks and zones restored in this run, and the
/// caller's mapping of alias targets.
struct RecordIds<'a> {
    checks: &'a BTreeMap<String, String>,
    zones: &'a BTreeMap<String, String>,
    mapping: &'a Mapping,
}

/// Health checks by key: equal ones kept, new ones created with a caller reference derived from
/// the key (so a retried create is answered with the same check). Returns source id → target id.
async fn restore_health_checks(
    config: &Route53Config,
    client: &aws_sdk_route53::Client,
    options: &ApplyOptions,
    report: &mut RestoreReport,
) -> Result<BTreeMap<String, String>, AwsError> {
    let existing: BTreeMap<String, HealthCheck> =
        export_health_checks(client, DEFAULT_PAGE_SIZE).await?.into_iter().map(|c| (c.key.clone(), c)).collect();
    let mut ids = BTreeMap::new();
    // Calculated checks name their children, which must exist first.
    let ordered = config
        .health_checks
        .iter()
        .filter(|c| c.check_type != "CALCULATED")
        .chain(config.health_checks.iter().filter(|c| c.check_type == "CALCULATED"));
    for check in ordered {
        let mut desired = check.clone();
        desired.child_health_checks =
            check.child_health_checks.iter().map(|id| ids.get(id).cloned().unwrap_or_else(|| id.clone())).collect();
        let resource = format!("health check {}", check.key);
        let target_id = match existing.get(&check.key) {
            Some(found) => update_health_check(&desired, found, client, options, &resource, report).await?,
            None if options.dry_run => {
                report.push(ChangeKind::Create, resource, "would be created");
                None
            }
            None => {
                let id = create_health_check(&desired, client).await?;
                report.push(ChangeKind::Create, resource, format!("created {id}"));
                Some(id)
            }
        };
        if let Some(target_id) = target_id {
            ids.insert(check.id.clone(), target_id);
        }
    }
    report.ids.extend(ids.clone());
    Ok(ids)
}

/// An existing check with the source's key: kept when equal, else left (or with `replace`
/// updated; the interval, latency measurement and type cannot be updated).
async fn update_health_check(
    desired: &HealthCheck,
    found: &HealthCheck,
    client: &aws_sdk_route53::Client,
    options: &ApplyOptions,
    resource: &str,
    report: &mut RestoreReport,
) -> Result<Option<String>, AwsError> {
    let differing = differing_fields(&comparable_check(desired), &comparable_check(found));
    if differing.is_empty() {
        report.push(ChangeKind::Keep, resource, format!("equal to {}", found.id));
        return Ok(Some(found.id.clone()));
    }
    let fixed: Vec<&String> = differing.iter().filter(|f| NOT_UPDATABLE.contains(&f.as_str())).collect();
    let detail = format!("{} differs in {}", found.id, differing.join(", "));
    if !options.replace || !fixed.is_empty() {
        let why = if fixed.is_empty() { detail } else { format!("{detail} (not updatable in place)") };
        report.push(ChangeKind::Differs, resource, why);
        return Ok(Some(found.id.clone()));
    }
    if !options.dry_run {
        send_health_check_update(desired, found, client).await?;
        replace_tags(client, TagResourceType::Healthcheck, &found.id, &desired.tags, &found.tags).await?;
    }
    report.push(ChangeKind::Replace, resource, detail);
    Ok(Some(found.id.clone()))
}

async fn send_health_check_update(
    desired: &HealthCheck,
    found: &HealthCheck,
    client: &aws_sdk_route53::Client,
) -> Result<(), AwsError> {
    let mut resets = Vec::new();
    if desired.resource_path.is_none() && found.resource_path.is_some() {
        resets.push(ResettableElementName::ResourcePath);
    }
    if desired.fully_qualified_domain_name.is_none() && found.fully_qualified_domain_name.is_some() {
        resets.push(ResettableElementName::FullyQualifiedDomainName);
    }
    if desired.regions.is_empty() && !found.regions.is_empty() {
        resets.push(ResettableElementName::Regions);
    }
    if desired.child_health_checks.is_empty() && !found.child_health_checks.is_empty() {
        resets.push(ResettableElementName::ChildHealthChecks);
    }
    client
        .update_health_check()
        .health_check_id(&found.id)
        .set_ip_address(desired.ip_address.clone())
        .set_port(desired.port)
        .set_resource_path(desired.resource_path.clone())
        .set_fully_qualified_domain_name(desired.fully_qualified_domain_name.clone())
        .set_search_string(desired.search_string.clone())
        .set_failure_threshold(desired.failure_threshold)
        .set_inverted(desired.inverted)
        .set_disabled(desired.disabled)
        .set_health_threshold(desired.health_threshold)
        .set_child_health_checks(non_empty(&desired.child_health_checks))
        .set_enable_sni(desired.enable_sni)
        .set_regions(
            non_empty(&desired.regions).map(|r| r.iter().map(|r| HealthCheckRegion::from(r.as_str())).collect()),
        )
        .set_insufficient_data_health_status(
            desired.insufficient_data_health_status.as_deref().map(InsufficientDataHealthStatus::from),
        )
        .set_alarm_identifier(alarm_identifier(desired)?)
        .set_reset_elements(non_empty(&resets))
        .send()
        .await
        .map_err(|e| named(classify("route53:UpdateHealthCheck", e), &format!("health check {}", desired.key)))?;
    Ok(())
}

async fn create_health_check(desired: &HealthCheck, client: &aws_sdk_route53::Client) -> Result<String, AwsError> {
    let caller_reference = format!("lifeboat-{}", short_hash(&[&desired.key]));
    let config = health_check_config(desired)?;
    let result = client
        .create_health_check()
        .caller_reference(&caller_reference)
        .health_check_config(config)
        .send()
        .await
        .map_err(|e| named(classify("route53:CreateHealthCheck", e), &format!("health check {}", desired.key)));
    let id = match result {
        Ok(out) => out.health_check().map(|c| c.id().to_string()).ok_or_else(|| {
            AwsError::task_failure("route53:CreateHealthCheck", "MissingHealthCheck", "no health check in the answer")
        })?,
        // A create retried after its answer was lost: the check is there, under our reference.
        Err(e) if e.code == "HealthCheckAlreadyExists" => {
            adopt_health_check(client, &caller_reference).await?.ok_or(e)?
        }
        Err(e) => return Err(e),
    };
    replace_tags(client, TagResourceType::Healthcheck, &id, &desired.tags, &BTreeMap::new()).await?;
    Ok(id)
}

async fn adopt_health_check(
    client: &aws_sdk_route53::Client,
    caller_reference: &str,
) -> Result<Option<String>, AwsError> {
    let checks = export_health_checks(client, DEFAULT_PAGE_SIZE).await?;
    Ok(checks.into_iter().find(|c| c.caller_reference == caller_reference).map(|c| c.id))
}

fn health_check_config(check: &HealthCheck) -> Result<sdk::HealthCheckConfig, AwsError> {
    sdk::HealthCheckConfig::builder()
        .r#type(HealthCheckType::from(check.check_type.as_str()))
        .set_ip_address(check.ip_address.clone())
        .set_port(check.port)
        .set_resource_path(check.resource_path.clone())
        .set_fully_qualified_domain_name(check.fully_qualified_domain_name.clone())
        .set_search_string(check.search_string.clone())
        .set_request_interval(check.request_interval)
        .set_failure_threshold(check.failure_threshold)
        .set_measure_latency(check.measure_latency)
        .set_inverted(check.inverted)
        .set_disabled(check.disabled)
        .set_health_threshold(check.health_threshold)
        .set_child_health_checks(non_empty(&check.child_health_checks))
        .set_enable_sni(check.enable_sni)
        .set_regions(non_empty(&check.regions).map(|r| r.iter().map(|r| HealthCheckRegion::from(r.as_str())).collect()))
        .set_insufficient_data_health_status(
            check.insufficient_data_health_status.as_deref().map(InsufficientDataHealthStatus::from),
        )
        .set_alarm_identifier(alarm_identifier(check)?)
        .set_routing_control_arn(check.routing_control_arn.clone())
        .build()
        .map_err(|e| {
            AwsError::task_failure(
                "route53:CreateHealthCheck",
                "InvalidHealthCheck",
                format!("health check {}: {e}", check.key),
            )
        })
}

fn alarm_identifier(check: &HealthCheck) -> Result<Option<sdk::AlarmIdentifier>, AwsError> {
    let Some(alarm) = &check.alarm_identifier else { return Ok(None) };
    sdk::AlarmIdentifier::builder()
        .region(sdk::CloudWatchRegion::from(alarm.region.as_str()))
        .name(&alarm.name)
        .build()
        .map(Some)
        .map_err(|e| {
            AwsError::task_failure(
                "route53:CreateHealthCheck",
                "InvalidHealthCheck",
                format!("health check {}: {e}", check.key),
            )
        })
}

/// A zone found in the target, as far as a restore compares it.
struct TargetZone {
    id: String,
    comment: Option<String>,
    vpcs: BTreeSet<(String, String)>,
    tags: BTreeMap<String, String>,
}

/// The zone itself (comment, VPCs, tags, query logging): found by name and kind, created when
/// missing. Returns the target zone's id (none in a dry run that would create it).
async fn restore_zone(
    zone: &HostedZone,
    client: &aws_sdk_route53::Client,
    options: &ApplyOptions,
    target_logging: &BTreeMap<String, QueryLogging>,
    report: &mut RestoreReport,
) -> Result<Option<String>, AwsError> {
    let resource = format!("zone {}", zone.key);
    let desired_vpcs = mapped_vpcs(zone, options);
    let target_id = match find_zone(client, zone, &desired_vpcs).await? {
        Some(found) => {
            update_zone(zone, &found, &desired_vpcs, client, options, &resource, report).await?;
            Some(found.id)
        }
        None if options.dry_run => {
            report.push(ChangeKind::Create, &resource, "would be created");
            None
        }
        None => {
            let id = create_zone(zone, &desired_vpcs, client).await?;
            report.push(ChangeKind::Create, &resource, format!("created {id}"));
            Some(id)
        }
    };
    if zone.dnssec.as_deref() == Some("SIGNING") {
        report.push(
            ChangeKind::Skip,
            format!("dnssec {}", zone.key),
            "DNSSEC signing needs a key-signing key (KMS) in the target: create one and enable signing",
        );
    }
    if let Some(logging) = &zone.query_logging {
        let existing = target_id.as_ref().and_then(|id| target_logging.get(id));
        restore_query_logging(zone, logging, target_id.as_deref(), existing, client, options, report).await?;
    }
    Ok(target_id)
}

/// The source's VPCs as the target should have them: a mapped VPC in the target region, an
/// unmapped one where it is.
fn mapped_vpcs(zone: &HostedZone, options: &ApplyOptions) -> BTreeSet<(String, String)> {
    zone.vpcs
        .iter()
        .map(|vpc| {
            let mapped = options.mapping.vpcs.contains_key(&vpc.vpc_id);
            let region = if mapped && !options.region.is_empty() { options.region.clone() } else { vpc.region.clone() };
            (region, options.mapping.vpc(&vpc.vpc_id).to_string())
        })
        .collect()
}

/// The target's zone of this name and kind (of several private ones, one sharing a VPC).
async fn find_zone(
    client: &aws_sdk_route53::Client,
    zone: &HostedZone,
    desired_vpcs: &BTreeSet<(String, String)>,
) -> Result<Option<TargetZone>, AwsError> {
    let mut candidates = Vec::new();
    for found in zones_named(client, &zone.name).await? {
        if found.config().is_some_and(|c| c.private_zone()) != zone.private {
            continue;
        }
        let id = bare_zone_id(found.id());
        let vpcs = if zone.private { zone_vpcs(client, &id).await? } else { Vec::new() };
        let vpcs: BTreeSet<(String, String)> = vpcs.into_iter().map(|v| (v.region, v.vpc_id)).collect();
        candidates.push(TargetZone {
            comment: found.config().and_then(|c| c.comment()).map(str::to_string),
            id,
            vpcs,
            tags: BTreeMap::new(),
        });
    }
    // Private zones of one name are told apart by their VPCs: one sharing none is another zone.
    let sharing = candidates.iter().position(|c| !c.vpcs.is_disjoint(desired_vpcs));
    let position = match sharing {
        Some(position) => position,
        None if zone.private && !desired_vpcs.is_empty() => return Ok(None),
        None if candidates.is_empty() => return Ok(None),
        None => 0,
    };
    let mut chosen = candidates.swap_remove(position);
    chosen.tags = list_tags(client, TagResourceType::Hostedzone, std::slice::from_ref(&chosen.id))
        .await?
        .remove(&chosen.id)
        .unwrap_or_default();
    Ok(Some(chosen))
}

/// Zones named exactly `name` (ListHostedZonesByName starts at the name and goes on in order).
async fn zones_named(client: &aws_sdk_route53::Client, name: &str) -> Result<Vec<sdk::HostedZone>, AwsError> {
    let mut zones = Vec::new();
    let mut next_id: Option<String> = None;
    loop {
        let out = client
            .list_hosted_zones_by_name()
            .dns_name(name)
            .set_hosted_zone_id(next_id.clone())
            .send()
            .await
            .map_err(|e| classify("route53:ListHostedZonesByName", e))?;
        let mut past = false;
        for found in out.hosted_zones() {
            if bare_dns(found.name()) == bare_dns(name) {
                zones.push(found.clone());
            } else {
                past = true;
            }
        }
        let same_name = out.next_dns_name().is_some_and(|next| bare_dns(next) == bare_dns(name));
        if past || !out.is_truncated() || !same_name {
            return Ok(zones);
        }
        next_id = out.next_hosted_zone_id().map(str::to_string);
    }
}

async fn update_zone(
    zone: &HostedZone,
    found: &TargetZone,
    desired_vpcs: &BTreeSet<(String, String)>,
    client: &aws_sdk_route53::Client,
    options: &ApplyOptions,
    resource: &str,
    report: &mut RestoreReport,
) -> Result<(), AwsError> {
    let mut differing = Vec::new();
    if zone.comment.as_deref().unwrap_or_default() != found.comment.as_deref().unwrap_or_default() {
        differing.push("comment");
    }
    if *desired_vpcs != found.vpcs {
        differing.push("vpcs");
    }
    if zone.tags != found.tags {
        differing.push("tags");
    }
    if differing.is_empty() {
        report.push(ChangeKind::Keep, resource, format!("equal to {}", found.id));
        return Ok(());
    }
    let detail = format!("{} differs in {}", found.id, differing.join(", "));
    if !options.replace {
        report.push(ChangeKind::Differs, resource, detail);
        return Ok(());
    }
    if !options.dry_run {
        if differing.contains(&"comment") {
            client
                .update_hosted_zone_comment()
                .id(&found.id)
                .comment(zone.comment.clone().unwrap_or_default())
                .send()
                .await
                .map_err(|e| named(classify("route53:UpdateHostedZoneComment", e), resource))?;
        }
        for (region, vpc_id) in desired_vpcs.difference(&found.vpcs) {
            associate_vpc(client, &found.id, region, vpc_id, resource).await?;
        }
        for (region, vpc_id) in found.vpcs.difference(desired_vpcs) {
            client
                .disassociate_vpc_from_hosted_zone()
                .hosted_zone_id(&found.id)
                .vpc(vpc(region, vpc_id))
                .send()
                .await
                .map_err(|e| named(classify("route53:DisassociateVPCFromHostedZone", e), resource))?;
        }
        replace_tags(client, TagResourceType::Hostedzone, &found.id, &zone.tags, &found.tags).await?;
    }
    report.push(ChangeKind::Replace, resource, detail);
    Ok(())
}

/// Creates the zone (a private one with its first VPC), then associates the other VPCs and tags
/// it. The caller reference comes from the zone's key and source id, so a create retried after
/// a lost answer is refused as a duplicate, and the zone it made is then found by name.
async fn create_zone(
    zone: &HostedZone,
    desired_vpcs: &BTreeSet<(String, String)>,
    client: &aws_sdk_route53::Client,
) -> Result<String, AwsError> {
    let resource = format!("zone {}", zone.key);
    let mut vpcs = desired_vpcs.iter();
    let first = if zone.private { vpcs.next() } else { None };
    let result = client
        .create_hosted_zone()
        .name(&zone.name)
        .caller_reference(format!("lifeboat-{}", short_hash(&[&zone.key, &zone.id])))
        .hosted_zone_config(
            sdk::HostedZoneConfig::builder().set_comment(zone.comment.clone()).private_zone(zone.private).build(),
        )
        .set_vpc(first.map(|(region, vpc_id)| vpc(region, vpc_id)))
        .send()
        .await
        .map_err(|e| named(classify("route53:CreateHostedZone", e), &resource));
    let id = match result {
        Ok(out) => out.hosted_zone().map(|z| bare_zone_id(z.id())).ok_or_else(|| {
            AwsError::task_failure("route53:CreateHostedZone", "MissingHostedZone", "no hosted zone in the answer")
        })?,
        Err(e) if e.code == "HostedZoneAlreadyExists" => find_zone(client, zone, desired_vpcs).await?.ok_or(e)?.id,
        Err(e) => return Err(e),
    };
    for (region, vpc_id) in vpcs {
        associate_vpc(client, &id, region, vpc_id, &resource).await?;
    }
    replace_tags(client, TagResourceType::Hostedzone, &id, &zone.tags, &BTreeMap::new()).await?;
    Ok(id)
}

async fn associate_vpc(
    client: &aws_sdk_route53::Client,
    zone_id: &str,
    region: &str,
    vpc_id: &str,
    resource: &str,
) -> Result<(), AwsError> {
    client
        .associate_vpc_with_hosted_zone()
        .hosted_zone_id(zone_id)
        .vpc(vpc(region, vpc_id))
        .send()
        .await
        .map_err(|e| named(classify("route53:AssociateVPCWithHostedZone", e), &format!("{resource} vpc {vpc_id}")))?;
    Ok(())
}

fn vpc(region: &str, vpc_id: &str) -> sdk::Vpc {
    sdk::Vpc::builder().vpc_region(VpcRegion::from(region)).vpc_id(vpc_id).build()
}

/// Query logging into the source's log group. Route 53 wants the group in the zone's own
/// account (us-east-1), so across accounts this is skipped with the reason, never fatal.
async fn restore_query_logging(
    zone: &HostedZone,
    logging: &QueryLogging,
    target_id: Option<&str>,
    existing: Option<&QueryLogging>,
    client: &aws_sdk_route53::Client,
    options: &ApplyOptions,
    report: &mut RestoreReport,
) -> Result<(), AwsError> {
    let resource = format!("query logging {}", zone.key);
    let wanted = &logging.cloudwatch_log_group_arn;
    match existing {
        Some(found) if &found.cloudwatch_log_group_arn == wanted => {
            report.push(ChangeKind::Keep, resource, format!("logs to {wanted}"));
            return Ok(());
        }
        Some(found) if !options.replace => {
            report.push(ChangeKind::Differs, resource, format!("logs to {}", found.cloudwatch_log_group_arn));
            return Ok(());
        }
        _ => {}
    }
    let kind = if existing.is_some() { ChangeKind::Replace } else { ChangeKind::Create };
    let Some(target_id) = target_id.filter(|_| !options.dry_run) else {
        report.push(kind, resource, format!("would log to {wanted}"));
        return Ok(());
    };
    if let Some(found) = existing {
        client
            .delete_query_logging_config()
            .id(&found.id)
            .send()
            .await
            .map_err(|e| named(classify("route53:DeleteQueryLoggingConfig", e), &resource))?;
    }
    let result = client
        .create_query_logging_config()
        .hosted_zone_id(target_id)
        .cloud_watch_logs_log_group_arn(wanted)
        .send()
        .await
        .map_err(|e| named(classify("route53:CreateQueryLoggingConfig", e), &resource));
    match result {
        Ok(_) => report.push(kind, resource, format!("logs to {wanted}")),
        Err(e) if LOG_GROUP_UNUSABLE.contains(&e.code.as_str()) => report.push(
            ChangeKind::Skip,
            resource,
            format!("log group {wanted} is not usable from the target account ({}): create one there", e.code),
        ),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// A planned change of one record.
struct Planned {
    kind: ChangeKind,
    resource: String,
    detail: String,
    change: Option<sdk::Change>,
}

/// The zone's records against the target zone's: equal kept, different left (or UPSERT with
/// `replace`), missing created; the zone's own NS and SOA skipped. Records that are not aliases
/// go first, so that aliases to records of the same zone find them.
async fn restore_records(
    zone: &HostedZone,
    target_id: Option<&str>,
    ids: &RecordIds<'_>,
    client: &aws_sdk_route53::Client,
    options: &ApplyOptions,
    report: &mut RestoreReport,
) -> Result<(), AwsError> {
    let existing: BTreeMap<String, RecordSet> = match target_id {
        Some(id) => list_record_sets(client, id, &zone.name, &BTreeMap::new(), DEFAULT_PAGE_SIZE)
            .await?
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect(),
        None => BTreeMap::new(),
    };
    let ordered = zone
        .record_sets
        .iter()
        .filter(|r| r.alias_target.is_none())
        .chain(zone.record_sets.iter().filter(|r| r.alias_target.is_some()));
    let mut planned = Vec::new();
    for record in ordered {
        planned.push(plan_record(zone, record, existing.get(&record.key), ids, options)?);
    }
    let changes: Vec<sdk::Change> = planned.iter().filter_map(|p| p.change.clone()).collect();
    let batches = batches(changes);
    let total = batches.len();
    if let (Some(target_id), false) = (target_id, options.dry_run) {
        for batch in &batches {
            send_batch(client, target_id, &zone.key, batch.clone()).await?;
        }
    }
    let mut batch_of = batches.iter().enumerate().flat_map(|(n, batch)| std::iter::repeat_n(n + 1, batch.len()));
    for plan in planned {
        let batch = if plan.change.is_some() { batch_of.next() } else { None };
        let detail = match batch {
            Some(n) => format!("{} (batch {n} of {total})", plan.detail),
            None => plan.detail,
        };
        report.push(plan.kind, plan.resource, detail);
    }
    Ok(())
}

fn plan_record(
    zone: &HostedZone,
    record: &RecordSet,
    existing: Option<&RecordSet>,
    ids: &RecordIds<'_>,
    options: &ApplyOptions,
) -> Result<Planned, AwsError> {
    let resource = format!("record {}", record.key);
    let planned = |kind, detail: String, change| Planned { kind, resource: resource.clone(), detail, change };
    if is_zone_apex_assigned(&record.name, &record.record_type, &zone.name) {
        return Ok(planned(ChangeKind::Skip, "the zone's own NS and SOA are Route 53's".to_string(), None));
    }
    let desired = mapped_record(record, ids);
    let Some(found) = existing else {
        let change = record_change(ChangeAction::Create, &desired)?;
        return Ok(planned(ChangeKind::Create, "created".to_string(), Some(change)));
    };
    let differing = differing_fields(&comparable_record(&desired), &comparable_record(found));
    if differing.is_empty() {
        return Ok(planned(ChangeKind::Keep, "equal".to_string(), None));
    }
    let detail = format!("differs in {}", differing.join(", "));
    if !options.replace {
        return Ok(planned(ChangeKind::Differs, detail, None));
    }
    let change = record_change(ChangeAction::Upsert, &desired)?;
    Ok(planned(ChangeKind::Replace, detail, Some(change)))
}

/// The record as the target should have it: health check and alias target ids of the target.
fn mapped_record(record: &RecordSet, ids: &RecordIds<'_>) -> RecordSet {
    let mut desired = record.clone();
    desired.health_check_id =
        record.health_check_id.as_ref().map(|id| ids.checks.get(id).cloned().unwrap_or_else(|| id.clone()));
    desired.alias_target = record.alias_target.as_ref().map(|alias| AliasTarget {
        dns_name: ids.mapping.alias_dns_name(&alias.dns_name),
        hosted_zone_id: ids
            .zones
            .get(&alias.hosted_zone_id)
            .cloned()
            .unwrap_or_else(|| ids.mapping.alias_zone_id(&alias.hosted_zone_id).to_string()),
        evaluate_target_health: alias.evaluate_target_health,
    });
    desired
}

fn record_change(action: ChangeAction, record: &RecordSet) -> Result<sdk::Change, AwsError> {
    let invalid = |e: aws_sdk_route53::error::BuildError| {
        AwsError::task_failure(
            "route53:ChangeResourceRecordSets",
            "InvalidRecord",
            format!("record {}: {e}", record.key),
        )
    };
    let values = record
        .resource_records
        .iter()
        .map(|value| sdk::ResourceRecord::builder().value(value).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let alias = match &record.alias_target {
        Some(alias) => Some(
            sdk::AliasTarget::builder()
                .dns_name(&alias.dns_name)
                .hosted_zone_id(&alias.hosted_zone_id)
                .evaluate_target_health(alias.evaluate_target_health)
                .build()
                .map_err(invalid)?,
        ),
        None => None,
    };
    let geo = record.geo_location.as_ref().map(|geo| {
        sdk::GeoLocation::builder()
            .set_continent_code(geo.continent_code.clone())
            .set_country_code(geo.country_code.clone())
            .set_subdivision_code(geo.subdivision_code.clone())
            .build()
    });
    let record_set = sdk::ResourceRecordSet::builder()
        .name(&record.name)
        .r#type(RrType::from(record.record_type.as_str()))
        .set_set_identifier(record.set_identifier.clone())
        .set_weight(record.weight)
        .set_region(record.region.as_deref().map(ResourceRecordSetRegion::from))
        .set_failover(record.failover.as_deref().map(ResourceRecordSetFailover::from))
        .set_geo_location(geo)
        .set_multi_value_answer(record.multi_value_answer)
        .set_ttl(record.ttl)
        .set_resource_records(non_empty(&values))
        .set_alias_target(alias)
        .set_health_check_id(record.health_check_id.clone())
        .build()
        .map_err(invalid)?;
    sdk::Change::builder().action(action).resource_record_set(record_set).build().map_err(invalid)
}

/// Changes in order, cut into batches Route 53 accepts: at most [`MAX_CHANGES_PER_BATCH`]
/// changes, 1,000 record values and 32,000 characters of them (an UPSERT's count twice).
pub fn batches(changes: Vec<sdk::Change>) -> Vec<Vec<sdk::Change>> {
    let mut batches: Vec<Vec<sdk::Change>> = Vec::new();
    let (mut records, mut chars) = (0, 0);
    for change in changes {
        let weight = if change.action() == &ChangeAction::Upsert { 2 } else { 1 };
        let values = change.resource_record_set().map(|r| r.resource_records()).unwrap_or_default();
        let (n, c) = (values.len() * weight, values.iter().map(|v| v.value().len()).sum::<usize>() * weight);
        let full = batches.last().is_none_or(|batch| {
            batch.len() >= MAX_CHANGES_PER_BATCH
                || records + n > MAX_RECORDS_PER_BATCH
                || chars + c > MAX_VALUE_CHARS_PER_BATCH
        });
        if full {
            batches.push(Vec::new());
            (records, chars) = (0, 0);
        }
        records += n;
        chars += c;
        if let Some(batch) = batches.last_mut() {
            batch.push(change);
        }
    }
    batches
}

async fn send_batch(
    client: &aws_sdk_route53::Client,
    zone_id: &str,
    zone_key: &str,
    batch: Vec<sdk::Change>,
) -> Result<(), AwsError> {
    let change_batch =
        sdk::ChangeBatch::builder().set_changes(Some(batch)).comment("lifeboat config restore").build().map_err(
            |e| AwsError::task_failure("route53:ChangeResourceRecordSets", "InvalidChangeBatch", e.to_string()),
        )?;
    client
        .change_resource_record_sets()
        .hosted_zone_id(zone_id)
        .change_batch(change_batch)
        .send()
        .await
        .map_err(|e| named(classify("route53:ChangeResourceRecordSets", e), &format!("zone {zone_key}")))?;
    Ok(())
}

/// Makes `existing` tags of a resource into `desired` (ten per call, as Route 53 takes them).
async fn replace_tags(
    client: &aws_sdk_route53::Client,
    resource_type: TagResourceType,
    id: &str,
    desired: &BTreeMap<String, String>,
    existing: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    let add: Vec<sdk::Tag> = desired
        .iter()
        .filter(|(k, v)| existing.get(*k) != Some(*v))
        .map(|(k, v)| sdk::Tag::builder().key(k).value(v).build())
        .collect();
    let remove: Vec<String> = existing.keys().filter(|k| !desired.contains_key(*k)).cloned().collect();
    let calls = add.len().div_ceil(TAGS_PER_CALL).max(remove.len().div_ceil(TAGS_PER_CALL));
    for n in 0..calls {
        let window = |len: usize| (n * TAGS_PER_CALL).min(len)..((n + 1) * TAGS_PER_CALL).min(len);
        client
            .change_tags_for_resource()
            .resource_type(resource_type.clone())
            .resource_id(id)
            .set_add_tags(non_empty(&add[window(add.len())]))
            .set_remove_tag_keys(non_empty(&remove[window(remove.len())]))
            .send()
            .await
            .map_err(|e| {
                named(classify("route53:ChangeTagsForResource", e), &format!("{} {id}", resource_type.as_str()))
            })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Keys and comparisons
// ---------------------------------------------------------------------------------------------

pub fn zone_key(name: &str, private: bool) -> String {
    format!("{name}|{}", if private { "private" } else { "public" })
}

pub fn record_key(name: &str, record_type: &str, set_identifier: Option<&str>) -> String {
    format!("{name}|{record_type}|{}", set_identifier.unwrap_or_default())
}

fn is_zone_apex_assigned(name: &str, record_type: &str, zone_name: &str) -> bool {
    (record_type == "NS" || record_type == "SOA") && bare_dns(name) == bare_dns(zone_name)
}

fn bare_zone_id(id: &str) -> String {
    id.trim_start_matches("/hostedzone/").to_string()
}

/// DNS names compare without case and without the trailing dot.
fn bare_dns(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// What two checks with the same key must share to be equal: everything but ids.
fn comparable_check(check: &HealthCheck) -> HealthCheck {
    HealthCheck { id: String::new(), caller_reference: String::new(), child_health_checks: Vec::new(), ..check.clone() }
}

/// What two records with the same key must share to be equal, with `health_check_id` already
/// the target's: names without case or trailing dot, values in any order.
fn comparable_record(record: &RecordSet) -> RecordSet {
    let mut comparable = record.clone();
    comparable.name = bare_dns(&record.name);
    comparable.health_check = None;
    comparable.resource_records.sort();
    if let Some(alias) = &mut comparable.alias_target {
        alias.dns_name = bare_dns(&alias.dns_name);
    }
    comparable
}

/// The top-level fields in which `a` and `b` differ, for a report's detail.
fn differing_fields<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    let (a, b) = (serde_json::to_value(a).unwrap_or_default(), serde_json::to_value(b).unwrap_or_default());
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return if a == b { Vec::new() } else { vec!["value".to_string()] };
    };
    let fields: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    fields.into_iter().filter(|f| a.get(*f) != b.get(*f)).cloned().collect()
}

fn short_hash(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\n").as_bytes());
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// The error with the resource it concerns in front of its message.
fn named(mut error: AwsError, resource: &str) -> AwsError {
    error.message = format!("{resource}: {}", error.message);
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(action: ChangeAction, values: usize) -> sdk::Change {
        let record = RecordSet {
            key: "a.example.com.|TXT|".into(),
            name: "a.example.com.".into(),
            record_type: "TXT".into(),
            ttl: Some(60),
            resource_records: (0..values).map(|n| format!("\"v{n}\"")).collect(),
            ..RecordSet::default()
        };
        record_change(action, &record).expect("a valid record")
    }

    #[test]
    fn batches_hold_at_most_a_hundred_changes() {
        let sizes: Vec<usize> =
            batches((0..250).map(|_| change(ChangeAction::Create, 1)).collect()).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn batches_count_upserted_values_twice() {
        // 60 UPSERTs of 10 values are 1,200 elements: more than one batch takes.
        let sizes: Vec<usize> =
            batches((0..60).map(|_| change(ChangeAction::Upsert, 10)).collect()).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![50, 10]);
    }

    #[test]
    fn health_check_keys_tell_equal_checks_apart() {
        let check = |id: &str, search: &str| HealthCheck {
            id: id.into(),
            check_type: "HTTP_STR_MATCH".into(),
            ip_address: Some("192.0.2.1".into()),
            port: Some(80),
            resource_path: Some("/health".into()),
            search_string: Some(search.into()),
            ..HealthCheck::default()
        };
        let mut checks = vec![
            check("b", "ok"),
            check("a", "fine"),
            HealthCheck {
                id: "c".into(),
                check_type: "CALCULATED".into(),
                child_health_checks: vec!["a".into(), "b".into()],
                ..HealthCheck::default()
            },
        ];
        assign_check_keys(&mut checks);
        let keys: Vec<&str> = checks.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "HTTP_STR_MATCH|192.0.2.1|80|/health|#2",
                "HTTP_STR_MATCH|192.0.2.1|80|/health",
                "CALCULATED|HTTP_STR_MATCH|192.0.2.1|80|/health,HTTP_STR_MATCH|192.0.2.1|80|/health|#2",
            ]
        );
    }

    #[test]
    fn alarm_checks_are_keyed_by_their_alarm_and_restored_with_it() {
        let mut checks = vec![HealthCheck {
            id: "a".into(),
            check_type: "CLOUDWATCH_METRIC".into(),
            alarm_identifier: Some(AlarmIdentifier { region: "us-east-1".into(), name: "api-errors".into() }),
            insufficient_data_health_status: Some("LastKnownStatus".into()),
            ..HealthCheck::default()
        }];
        assign_check_keys(&mut checks);
        assert_eq!(checks[0].key, "CLOUDWATCH_METRIC|us-east-1/api-errors||");
        let config = health_check_config(&checks[0]).expect("a config");
        let alarm = config.alarm_identifier().expect("the alarm");
        assert_eq!((alarm.region().as_str(), alarm.name()), ("us-east-1", "api-errors"));
    }

    #[test]
    fn records_compare_without_case_trailing_dot_or_value_order() {
        let record = RecordSet {
            name: "WWW.example.com.".into(),
            resource_records: vec!["b".into(), "a".into()],
            ..RecordSet::default()
        };
        let other = RecordSet {
            name: "www.example.com".into(),
            resource_records: vec!["a".into(), "b".into()],
            ..record.clone()
        };
        assert!(differing_fields(&comparable_record(&record), &comparable_record(&other)).is_empty());
    }
}

#[cfg(test)]
mod send {
    /// A service's step runs the export on the runtime's threads: its future must be `Send`.
    #[allow(dead_code)]
    fn export_is_send(client: &aws_sdk_route53::Client) {
        fn send<T: Send>(_: T) {}
        send(super::export(client));
    }
}
