//! ELBv2: every load balancer with its attributes, listeners and rules, and every target group
//! with its attributes, health check and targets, exported and restored.
//!
//! Export reads every list to its end (the SDK paginators follow `NextMarker`) into plain serde
//! types whose collections are keyed by identities that hold across accounts and regions (names,
//! `<protocol>:<port>`, `priority <n>`), never by ARNs. Restore re-creates target groups first,
//! then load balancers, listeners and rules in priority order, pointing actions at the restored
//! target groups; an equal existing item is kept, a different one left or replaced. A terminal
//! AWS error skips only its target group or load balancer (named in the report and warnings);
//! a retryable one ends the restore, which is re-runnable.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_elasticloadbalancingv2 as elbv2;
use aws_sdk_elasticloadbalancingv2::types as sdk;
use elbv2::Client;
use lifeboat_common::aws::{classify, AwsError};
use serde::{Deserialize, Serialize};

use crate::changes::{ApplyOptions, ChangeKind, RestoreReport};

/// Fields whose values are ids that differ between a configuration and its restored copy; the
/// diff leaves them out unless asked to compare them. Zone names follow the mapped subnets (a
/// restore into another region lands in its zones); the keys of availability zones are the zone
/// letters, so they still match.
pub const MAPPED_FIELDS: &[&str] = &[
    "arn",
    "target_group_arn",
    "certificate_arn",
    "dns_name",
    "canonical_hosted_zone_id",
    "vpc_id",
    "subnet_id",
    "zone_name",
    "security_groups",
    "allocation_id",
];

/// The largest page every ELBv2 Describe call accepts.
pub const MAX_PAGE_SIZE: i32 = 400;
/// DescribeTags takes at most this many ARNs.
const TAGS_BATCH: usize = 20;
/// Load balancer and target group names are at most this long.
const MAX_NAME_LEN: usize = 32;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Elbv2Config {
    pub load_balancers: Vec<LoadBalancer>,
    pub target_groups: Vec<TargetGroup>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadBalancer {
    /// The name.
    pub key: String,
    pub arn: String,
    pub name: String,
    /// `application`, `network` or `gateway`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    pub availability_zones: Vec<AvailabilityZone>,
    pub security_groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_hosted_zone_id: Option<String>,
    pub listeners: Vec<Listener>,
}

/// A subnet of a load balancer, with the fixed addresses a network load balancer has there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AvailabilityZone {
    /// The zone's letter (`a` of `us-east-1a`): the same zone letter in another region matches.
    pub key: String,
    pub zone_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outpost_id: Option<String>,
    /// An Elastic IP of an internet-facing network load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<String>,
    /// The fixed private address of an internal network load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_ipv4_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Listener {
    /// `<protocol>:<port>`, or `gateway` for a gateway load balancer's single listener.
    pub key: String,
    pub arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Only for HTTPS and TLS listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_policy: Option<String>,
    pub certificates: Vec<Certificate>,
    pub alpn_policy: Vec<String>,
    pub default_actions: Vec<Action>,
    /// Every rule, the default one (`default`) included.
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Certificate {
    /// `default` for the listener's default certificate, else the certificate's ARN.
    pub key: String,
    pub certificate_arn: String,
    pub is_default: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rule {
    /// `priority <n>`, or `default`.
    pub key: String,
    pub arn: String,
    /// A number, or `default`.
    pub priority: String,
    pub is_default: bool,
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Condition {
    /// The field, with the header name for `http-header` and the pairs for `query-string` (the
    /// two fields a rule may hold more than once).
    pub key: String,
    pub field: String,
    /// The legacy form of `host-header` and `path-pattern` values.
    pub values: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_header_config: Option<Values>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_pattern_config: Option<Values>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_header_config: Option<HttpHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_string_config: Option<QueryString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_request_method_config: Option<Values>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip_config: Option<Values>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Values {
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpHeader {
    pub http_header_name: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryString {
    pub values: Vec<QueryStringPair>,
}

/// One `name=value` of a query-string condition (AWS calls the name `Key`; here `key` is the
/// element's identity, `name=value`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryStringPair {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Action {
    /// `<order, 5 digits> <type>` (the position when the order is not set), so keys sort in the
    /// order the actions run.
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    /// The name of the target group a `forward` action sends to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_config: Option<ForwardConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_config: Option<RedirectConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_response_config: Option<FixedResponseConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticate_oidc_config: Option<AuthenticateOidcConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticate_cognito_config: Option<AuthenticateCognitoConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForwardConfig {
    pub target_groups: Vec<WeightedTargetGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<Stickiness>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WeightedTargetGroup {
    /// The target group's name.
    pub key: String,
    pub target_group: String,
    pub target_group_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stickiness {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedirectConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub status_code: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FixedResponseConfig {
    pub status_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_body: Option<String>,
}

/// An OIDC login before the next action. ELBv2 never returns the client secret, so a restore
/// cannot re-create it (the rule or listener is skipped, saying so).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthenticateOidcConfig {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub user_info_endpoint: String,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_cookie_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_unauthenticated_request: Option<String>,
    pub authentication_request_extra_params: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthenticateCognitoConfig {
    pub user_pool_arn: String,
    pub user_pool_client_id: String,
    pub user_pool_domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_cookie_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_unauthenticated_request: Option<String>,
    pub authentication_request_extra_params: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetGroup {
    /// The name.
    pub key: String,
    pub arn: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address_type: Option<String>,
    pub health_check: HealthCheck,
    pub attributes: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub targets: Vec<Target>,
    /// Names of the load balancers whose listeners or rules forward here.
    pub load_balancers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_threshold_count: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold_count: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matcher: Option<Matcher>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Matcher {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_code: Option<String>,
}

/// A registered target (its health is volatile and not exported).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Target {
    /// `<id>:<port>`.
    pub key: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
}

impl Target {
    fn key_of(id: &str, port: Option<i32>) -> String {
        format!("{id}:{}", port.map(|p| p.to_string()).unwrap_or_default())
    }
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

/// Reads the whole ELBv2 configuration of the client's account and region, every list to its end.
pub async fn export(client: &Client) -> Result<Elbv2Config, AwsError> {
    export_with_page_size(client, MAX_PAGE_SIZE).await
}

/// [`export`] with `page_size` items per Describe page (tests use 1 to prove every list is read
/// to its end).
pub async fn export_with_page_size(client: &Client, page_size: i32) -> Result<Elbv2Config, AwsError> {
    let region = client.config().region().map(|r| r.to_string()).unwrap_or_default();
    let sdk_lbs = client
        .describe_load_balancers()
        .page_size(page_size)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("elasticloadbalancing:DescribeLoadBalancers", e))?;
    let sdk_tgs = client
        .describe_target_groups()
        .page_size(page_size)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("elasticloadbalancing:DescribeTargetGroups", e))?;
    let tg_names: BTreeMap<String, String> = sdk_tgs
        .iter()
        .filter_map(|tg| Some((tg.target_group_arn()?.to_string(), tg.target_group_name()?.to_string())))
        .collect();
    let lb_names: BTreeMap<String, String> = sdk_lbs
        .iter()
        .filter_map(|lb| Some((lb.load_balancer_arn()?.to_string(), lb.load_balancer_name()?.to_string())))
        .collect();
    let arns: Vec<String> = lb_names.keys().chain(tg_names.keys()).cloned().collect();
    let mut tags = describe_tags(client, &arns).await?;

    let mut load_balancers = Vec::with_capacity(sdk_lbs.len());
    for lb in &sdk_lbs {
        let mut exported = export_load_balancer(lb, &region);
        exported.attributes = load_balancer_attributes(client, &exported.arn).await?;
        exported.tags = tags.remove(&exported.arn).unwrap_or_default();
        exported.listeners = export_listeners(client, &exported.arn, page_size, &tg_names).await?;
        load_balancers.push(exported);
    }
    let mut target_groups = Vec::with_capacity(sdk_tgs.len());
    for tg in &sdk_tgs {
        let mut exported = export_target_group(tg, &lb_names);
        exported.attributes = target_group_attributes(client, &exported.arn).await?;
        exported.tags = tags.remove(&exported.arn).unwrap_or_default();
        exported.targets = export_targets(client, &exported.arn).await?;
        target_groups.push(exported);
    }
    load_balancers.sort_by(|a, b| a.key.cmp(&b.key));
    target_groups.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Elbv2Config { load_balancers, target_groups })
}

/// Tags of every ARN, [`TAGS_BATCH`] ARNs per call.
async fn describe_tags(
    client: &Client,
    arns: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
    let mut tags = BTreeMap::new();
    for batch in arns.chunks(TAGS_BATCH) {
        let out = client
            .describe_tags()
            .set_resource_arns(Some(batch.to_vec()))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:DescribeTags", e))?;
        for description in out.tag_descriptions() {
            let Some(arn) = description.resource_arn() else { continue };
            let pairs = description
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                .collect();
            tags.insert(arn.to_string(), pairs);
        }
    }
    Ok(tags)
}

/// `a` of `us-east-1a` in `us-east-1`; the whole name when it is not the region's.
fn zone_key(zone_name: &str, region: &str) -> String {
    match zone_name.strip_prefix(region) {
        Some(rest) if !region.is_empty() && !rest.is_empty() => rest.to_string(),
        _ => zone_name.to_string(),
    }
}

fn export_load_balancer(lb: &sdk::LoadBalancer, region: &str) -> LoadBalancer {
    let name = lb.load_balancer_name().unwrap_or_default().to_string();
    let mut zones: Vec<AvailabilityZone> = lb
        .availability_zones()
        .iter()
        .map(|zone| {
            let zone_name = zone.zone_name().unwrap_or_default().to_string();
            let address = zone.load_balancer_addresses().first();
            AvailabilityZone {
                key: zone_key(&zone_name, region),
                zone_name,
                subnet_id: zone.subnet_id().map(str::to_string),
                outpost_id: zone.outpost_id().map(str::to_string),
                allocation_id: address.and_then(|a| a.allocation_id()).map(str::to_string),
                private_ipv4_address: address.and_then(|a| a.private_ipv4_address()).map(str::to_string),
                ipv6_address: address.and_then(|a| a.ipv6_address()).map(str::to_string),
            }
        })
        .collect();
    zones.sort_by(|a, b| a.key.cmp(&b.key));
    let mut security_groups = lb.security_groups().to_vec();
    security_groups.sort();
    LoadBalancer {
        key: name.clone(),
        arn: lb.load_balancer_arn().unwrap_or_default().to_string(),
        name,
        kind: lb.r#type().map(|t| t.as_str().to_string()).unwrap_or_else(|| "application".to_string()),
        scheme: lb.scheme().map(|s| s.as_str().to_string()),
        ip_address_type: lb.ip_address_type().map(|t| t.as_str().to_string()),
        vpc_id: lb.vpc_id().map(str::to_string),
        availability_zones: zones,
        security_groups,
        attributes: BTreeMap::new(),
        tags: BTreeMap::new(),
        dns_name: lb.dns_name().map(str::to_string),
        canonical_hosted_zone_id: lb.canonical_hosted_zone_id().map(str::to_string),
        listeners: Vec::new(),
    }
}

async fn load_balancer_attributes(client: &Client, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let out = client
        .describe_load_balancer_attributes()
        .load_balancer_arn(arn)
        .send()
        .await
        .map_err(|e| classify("elasticloadbalancing:DescribeLoadBalancerAttributes", e))?;
    Ok(out
        .attributes()
        .iter()
        .filter_map(|a| Some((a.key()?.to_string(), a.value().unwrap_or_default().to_string())))
        .collect())
}

async fn target_group_attributes(client: &Client, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let out = client
        .describe_target_group_attributes()
        .target_group_arn(arn)
        .send()
        .await
        .map_err(|e| classify("elasticloadbalancing:DescribeTargetGroupAttributes", e))?;
    Ok(out
        .attributes()
        .iter()
        .filter_map(|a| Some((a.key()?.to_string(), a.value().unwrap_or_default().to_string())))
        .collect())
}

fn listener_key(protocol: Option<&str>, port: Option<i32>) -> String {
    match (protocol, port) {
        (Some(protocol), Some(port)) => format!("{protocol}:{port}"),
        (None, None) => "gateway".to_string(),
        (protocol, port) => {
            format!("{}:{}", protocol.unwrap_or_default(), port.map(|p| p.to_string()).unwrap_or_default())
        }
    }
}

/// Whether a listener of `protocol` holds certificates and a security policy.
fn is_secure(protocol: Option<&str>) -> bool {
    matches!(protocol, Some("HTTPS") | Some("TLS"))
}

async fn export_listeners(
    client: &Client,
    lb_arn: &str,
    page_size: i32,
    tg_names: &BTreeMap<String, String>,
) -> Result<Vec<Listener>, AwsError> {
    let sdk_listeners = client
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .page_size(page_size)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("elasticloadbalancing:DescribeListeners", e))?;
    let mut listeners = Vec::with_capacity(sdk_listeners.len());
    for listener in &sdk_listeners {
        // A gateway listener has neither (moto sends an empty protocol).
        let protocol = listener.protocol().map(|p| p.as_str().to_string()).filter(|p| !p.is_empty());
        let arn = listener.listener_arn().unwrap_or_default().to_string();
        let secure = is_secure(protocol.as_deref());
        let certificates = if secure { export_certificates(client, &arn, page_size).await? } else { Vec::new() };
        let rules = export_rules(client, &arn, page_size, tg_names).await?;
        listeners.push(Listener {
            key: listener_key(protocol.as_deref(), listener.port()),
            arn,
            port: listener.port(),
            protocol,
            ssl_policy: if secure { listener.ssl_policy().map(str::to_string) } else { None },
            certificates,
            alpn_policy: listener.alpn_policy().to_vec(),
            default_actions: export_actions(listener.default_actions(), tg_names),
            rules,
        });
    }
    listeners.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(listeners)
}

async fn export_certificates(
    client: &Client,
    listener_arn: &str,
    page_size: i32,
) -> Result<Vec<Certificate>, AwsError> {
    let sdk_certificates = client
        .describe_listener_certificates()
        .listener_arn(listener_arn)
        .page_size(page_size)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("elasticloadbalancing:DescribeListenerCertificates", e))?;
    let mut certificates: Vec<Certificate> = sdk_certificates
        .iter()
        .filter_map(|c| {
            let arn = c.certificate_arn()?.to_string();
            let is_default = c.is_default().unwrap_or(false);
            let key = if is_default { "default".to_string() } else { arn.clone() };
            Some(Certificate { key, certificate_arn: arn, is_default })
        })
        .collect();
    certificates.sort_by(|a, b| a.key.cmp(&b.key));
    certificates.dedup_by(|a, b| a.key == b.key);
    Ok(certificates)
}

async fn export_rules(
    client: &Client,
    listener_arn: &str,
    page_size: i32,
    tg_names: &BTreeMap<String, String>,
) -> Result<Vec<Rule>, AwsError> {
    let sdk_rules = client
        .describe_rules()
        .listener_arn(listener_arn)
        .page_size(page_size)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("elasticloadbalancing:DescribeRules", e))?;
    let mut rules: Vec<Rule> = sdk_rules
        .iter()
        .map(|rule| {
            let is_default = rule.is_default().unwrap_or(false);
            let priority = rule.priority().unwrap_or("default").to_string();
            let key = if is_default || priority == "default" {
                "default".to_string()
            } else {
                format!("priority {priority}")
            };
            let mut conditions: Vec<Condition> = rule.conditions().iter().map(export_condition).collect();
            conditions.sort_by(|a, b| a.key.cmp(&b.key));
            Rule {
                key,
                arn: rule.rule_arn().unwrap_or_default().to_string(),
                priority,
                is_default,
                conditions,
                actions: export_actions(rule.actions(), tg_names),
            }
        })
        .collect();
    rules.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(rules)
}

fn values(list: &[String]) -> Values {
    Values { values: list.to_vec() }
}

fn export_condition(condition: &sdk::RuleCondition) -> Condition {
    let field = condition.field().unwrap_or_default().to_string();
    let http_header_config = condition.http_header_config().map(|h| HttpHeader {
        http_header_name: h.http_header_name().unwrap_or_default().to_string(),
        values: h.values().to_vec(),
    });
    let query_string_config = condition.query_string_config().map(|q| QueryString {
        values: q
            .values()
            .iter()
            .map(|pair| {
                let name = pair.key().map(str::to_string);
                let value = pair.value().unwrap_or_default().to_string();
                QueryStringPair { key: format!("{}={value}", name.as_deref().unwrap_or_default()), name, value }
            })
            .collect(),
    });
    let key = match (&http_header_config, &query_string_config) {
        (Some(header), _) if field == "http-header" => format!("http-header {}", header.http_header_name),
        (_, Some(query)) if field == "query-string" => {
            let pairs: Vec<&str> = query.values.iter().map(|p| p.key.as_str()).collect();
            format!("query-string {}", pairs.join("&"))
        }
        _ => field.clone(),
    };
    Condition {
        key,
        field,
        values: condition.values().to_vec(),
        host_header_config: condition.host_header_config().map(|c| values(c.values())),
        path_pattern_config: condition.path_pattern_config().map(|c| values(c.values())),
        http_header_config,
        query_string_config,
        http_request_method_config: condition.http_request_method_config().map(|c| values(c.values())),
        source_ip_config: condition.source_ip_config().map(|c| values(c.values())),
    }
}

fn export_actions(actions: &[sdk::Action], tg_names: &BTreeMap<String, String>) -> Vec<Action> {
    let mut exported: Vec<Action> =
        actions.iter().enumerate().map(|(index, action)| export_action(index, action, tg_names)).collect();
    exported.sort_by(|a, b| a.key.cmp(&b.key));
    exported
}

fn export_action(index: usize, action: &sdk::Action, tg_names: &BTreeMap<String, String>) -> Action {
    let kind = action.r#type().map(|t| t.as_str().to_string()).unwrap_or_default();
    let position = action.order().map(i64::from).unwrap_or(index as i64 + 1);
    let name_of = |arn: &str| tg_names.get(arn).cloned().unwrap_or_else(|| arn.to_string());
    Action {
        key: format!("{position:05} {kind}"),
        kind,
        order: action.order(),
        target_group: action.target_group_arn().map(name_of),
        target_group_arn: action.target_group_arn().map(str::to_string),
        forward_config: action.forward_config().map(|f| {
            let mut target_groups: Vec<WeightedTargetGroup> = f
                .target_groups()
                .iter()
                .map(|t| {
                    let arn = t.target_group_arn().unwrap_or_default().to_string();
                    let name = name_of(&arn);
                    WeightedTargetGroup {
                        key: name.clone(),
                        target_group: name,
                        target_group_arn: arn,
                        weight: t.weight(),
                    }
                })
                .collect();
            target_groups.sort_by(|a, b| a.key.cmp(&b.key));
            ForwardConfig {
                target_groups,
                stickiness: f.target_group_stickiness_config().map(|s| Stickiness {
                    enabled: s.enabled().unwrap_or(false),
                    duration_seconds: s.duration_seconds(),
                }),
            }
        }),
        redirect_config: action.redirect_config().map(|r| RedirectConfig {
            protocol: r.protocol().map(str::to_string),
            port: r.port().map(str::to_string),
            host: r.host().map(str::to_string),
            path: r.path().map(str::to_string),
            query: r.query().map(str::to_string),
            status_code: r.status_code().map(|s| s.as_str().to_string()).unwrap_or_default(),
        }),
        fixed_response_config: action.fixed_response_config().map(|f| FixedResponseConfig {
            status_code: f.status_code().unwrap_or_default().to_string(),
            content_type: f.content_type().map(str::to_string),
            message_body: f.message_body().map(str::to_string),
        }),
        authenticate_oidc_config: action.authenticate_oidc_config().map(|o| AuthenticateOidcConfig {
            issuer: o.issuer().unwrap_or_default().to_string(),
            authorization_endpoint: o.authorization_endpoint().unwrap_or_default().to_string(),
            token_endpoint: o.token_endpoint().unwrap_or_default().to_string(),
            user_info_endpoint: o.user_info_endpoint().unwrap_or_default().to_string(),
            client_id: o.client_id().unwrap_or_default().to_string(),
            session_cookie_name: o.session_cookie_name().map(str::to_string),
            scope: o.scope().map(str::to_string),
            session_timeout: o.session_timeout(),
            on_unauthenticated_request: o.on_unauthenticated_request().map(|b| b.as_str().to_string()),
            authentication_request_extra_params: sorted(o.authentication_request_extra_params()),
        }),
        authenticate_cognito_config: action.authenticate_cognito_config().map(|c| AuthenticateCognitoConfig {
            user_pool_arn: c.user_pool_arn().unwrap_or_default().to_string(),
            user_pool_client_id: c.user_pool_client_id().unwrap_or_default().to_string(),
            user_pool_domain: c.user_pool_domain().unwrap_or_default().to_string(),
            session_cookie_name: c.session_cookie_name().map(str::to_string),
            scope: c.scope().map(str::to_string),
            session_timeout: c.session_timeout(),
            on_unauthenticated_request: c.on_unauthenticated_request().map(|b| b.as_str().to_string()),
            authentication_request_extra_params: sorted(c.authentication_request_extra_params()),
        }),
    }
}

fn sorted(map: Option<&std::collections::HashMap<String, String>>) -> BTreeMap<String, String> {
    map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

fn export_target_group(tg: &sdk::TargetGroup, lb_names: &BTreeMap<String, String>) -> TargetGroup {
    let name = tg.target_group_name().unwrap_or_default().to_string();
    let load_balancers: BTreeSet<String> =
        tg.load_balancer_arns().iter().map(|arn| lb_names.get(arn).cloned().unwrap_or_else(|| arn.clone())).collect();
    TargetGroup {
        key: name.clone(),
        arn: tg.target_group_arn().unwrap_or_default().to_string(),
        name,
        protocol: tg.protocol().map(|p| p.as_str().to_string()),
        protocol_version: tg.protocol_version().map(str::to_string),
        port: tg.port(),
        vpc_id: tg.vpc_id().map(str::to_string),
        target_type: tg.target_type().map(|t| t.as_str().to_string()),
        ip_address_type: tg.ip_address_type().map(|t| t.as_str().to_string()),
        health_check: HealthCheck {
            enabled: tg.health_check_enabled(),
            protocol: tg.health_check_protocol().map(|p| p.as_str().to_string()),
            port: tg.health_check_port().map(str::to_string),
            path: tg.health_check_path().map(str::to_string),
            interval_seconds: tg.health_check_interval_seconds(),
            timeout_seconds: tg.health_check_timeout_seconds(),
            healthy_threshold_count: tg.healthy_threshold_count(),
            unhealthy_threshold_count: tg.unhealthy_threshold_count(),
            matcher: tg.matcher().map(|m| Matcher {
                http_code: m.http_code().map(str::to_string),
                grpc_code: m.grpc_code().map(str::to_string),
            }),
        },
        attributes: BTreeMap::new(),
        tags: BTreeMap::new(),
        targets: Vec::new(),
        load_balancers: load_balancers.into_iter().collect(),
    }
}

/// The registered targets; those being deregistered (`draining`) are on their way out.
async fn export_targets(client: &Client, tg_arn: &str) -> Result<Vec<Target>, AwsError> {
    let out = client
        .describe_target_health()
        .target_group_arn(tg_arn)
        .send()
        .await
        .map_err(|e| classify("elasticloadbalancing:DescribeTargetHealth", e))?;
    let mut targets: Vec<Target> = out
        .target_health_descriptions()
        .iter()
        .filter(|d| d.target_health().and_then(|h| h.state()).map(|s| s.as_str() != "draining").unwrap_or(true))
        .filter_map(|d| {
            let target = d.target()?;
            let id = target.id()?.to_string();
            Some(Target {
                key: Target::key_of(&id, target.port()),
                id,
                port: target.port(),
                availability_zone: target.availability_zone().map(str::to_string),
            })
        })
        .collect();
    targets.sort_by(|a, b| a.key.cmp(&b.key));
    targets.dedup_by(|a, b| a.key == b.key);
    Ok(targets)
}

/// How many of each kind (`load_balancers`, `listeners`, `rules`, `target_groups`, `targets`).
pub fn counts(config: &Elbv2Config) -> BTreeMap<String, usize> {
    let listeners = config.load_balancers.iter().flat_map(|lb| &lb.listeners);
    let (listener_count, rule_count) = listeners.fold((0, 0), |(l, r), listener| (l + 1, r + listener.rules.len()));
    BTreeMap::from([
        ("load_balancers".to_string(), config.load_balancers.len()),
        ("listeners".to_string(), listener_count),
        ("rules".to_string(), rule_count),
        ("target_groups".to_string(), config.target_groups.len()),
        ("targets".to_string(), config.target_groups.iter().map(|tg| tg.targets.len()).sum()),
    ])
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// Re-creates `config` in the client's account and region (idempotent; see [`ApplyOptions`]).
/// The report's `ids` map each source load balancer's DNS name and canonical hosted zone id to
/// its restored copy's, for the alias records of a Route 53 restore that follows.
pub async fn restore(config: &Elbv2Config, client: &Client, options: &ApplyOptions) -> Result<RestoreReport, AwsError> {
    let existing = export(client).await?;
    let region = if options.region.is_empty() {
        client.config().region().map(|r| r.to_string()).unwrap_or_default()
    } else {
        options.region.clone()
    };
    let target_account = existing
        .load_balancers
        .iter()
        .map(|lb| &lb.arn)
        .chain(existing.target_groups.iter().map(|tg| &tg.arn))
        .find_map(|arn| arn_part(arn, 4).map(str::to_string));
    let mut restorer = Restorer {
        client,
        options,
        existing,
        report: RestoreReport::default(),
        target_groups: BTreeMap::new(),
        target_region: region,
        target_account,
    };
    for tg in &config.target_groups {
        let result = restorer.target_group(tg).await;
        let name = restorer.suffixed(&tg.name);
        if let Some(reason) = restorer.failed(format!("target group {name}"), result)? {
            restorer.target_groups.insert(name, Restored::Skipped(reason));
        }
    }
    for lb in &config.load_balancers {
        let result = restorer.load_balancer(lb).await;
        restorer.failed(format!("load balancer {}", restorer.suffixed(&lb.name)), result)?;
    }
    Ok(restorer.report)
}

/// The `n`th `:`-separated part of an ARN (3: region, 4: account).
fn arn_part(arn: &str, n: usize) -> Option<&str> {
    arn.split(':').nth(n).filter(|part| !part.is_empty())
}

/// Where a source target group is in the target.
#[derive(Clone, Debug)]
enum Restored {
    /// Exists (or was just created) with this ARN.
    At(String),
    /// Would be created (dry run).
    Planned,
    /// Not restored, for this reason.
    Skipped(String),
}

struct Restorer<'a> {
    client: &'a Client,
    options: &'a ApplyOptions,
    /// The target's configuration before the restore.
    existing: Elbv2Config,
    report: RestoreReport,
    /// Target group name in the target (suffixed) to where it is there.
    target_groups: BTreeMap<String, Restored>,
    target_region: String,
    /// The target's account, from an ARN seen there (unknown until one is).
    target_account: Option<String>,
}

/// The differing top-level fields of two items, for a `Differs` detail.
fn differing_fields<T: Serialize>(expected: &T, actual: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(expected), serde_json::to_value(actual))
    else {
        return vec!["(unreadable)".to_string()];
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// Fails an item (not the whole restore) for a name AWS would refuse.
fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        Err(format!(
            "{kind} name {name:?} is {} characters (with the name suffix); AWS allows at most {MAX_NAME_LEN}",
            name.len()
        ))
    } else {
        Ok(())
    }
}

fn tags_of(tags: &BTreeMap<String, String>) -> Vec<sdk::Tag> {
    tags.iter().map(|(k, v)| sdk::Tag::builder().key(k).value(v).build()).collect()
}

impl Restorer<'_> {
    fn suffixed(&self, name: &str) -> String {
        format!("{name}{}", self.options.name_suffix)
    }

    /// One item's terminal AWS error (an unmapped subnet, a refused setting) skips that item,
    /// saying why, and the restore goes on; a retryable one ends the restore, to be run again
    /// (it is idempotent). Returns the reason of a skip.
    fn failed(&mut self, resource: String, result: Result<(), AwsError>) -> Result<Option<String>, AwsError> {
        match result {
            Ok(()) => Ok(None),
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => {
                let reason = format!("failed: {e}");
                self.report.warnings.push(format!("{resource} {reason}"));
                self.report.push(ChangeKind::Skip, resource, reason.clone());
                Ok(Some(reason))
            }
        }
    }

    fn note_account(&mut self, arn: &str) {
        if self.target_account.is_none() {
            self.target_account = arn_part(arn, 4).map(str::to_string);
        }
    }

    fn id(&mut self, from: &str, to: &str) {
        if !from.is_empty() && !to.is_empty() {
            self.report.ids.insert(from.to_string(), to.to_string());
        }
    }

    // --- target groups ------------------------------------------------------------------------

    /// The target group as it should be in the target: suffixed name, mapped VPC, no ids.
    fn expected_target_group(&self, tg: &TargetGroup) -> TargetGroup {
        let name = self.suffixed(&tg.name);
        TargetGroup {
            key: name.clone(),
            arn: String::new(),
            name,
            vpc_id: tg.vpc_id.as_deref().map(|v| self.options.mapping.vpc(v).to_string()),
            targets: Vec::new(),
            load_balancers: Vec::new(),
            ..tg.clone()
        }
    }

    fn comparable_target_group(tg: &TargetGroup) -> TargetGroup {
        TargetGroup { arn: String::new(), targets: Vec::new(), load_balancers: Vec::new(), ..tg.clone() }
    }

    async fn target_group(&mut self, source: &TargetGroup) -> Result<(), AwsError> {
        let expected = self.expected_target_group(source);
        let resource = format!("target group {}", expected.name);
        if let Err(reason) = check_name("target group", &expected.name) {
            self.report.warnings.push(reason.clone());
            self.report.push(ChangeKind::Skip, resource, reason.clone());
            self.target_groups.insert(expected.name.clone(), Restored::Skipped(reason));
            return Ok(());
        }
        let current = self.existing.target_groups.iter().find(|t| t.name == expected.name).cloned();
        let (arn, registered) = match current {
            None if self.options.dry_run => {
                self.report.push(ChangeKind::Create, resource, "would create");
                self.target_groups.insert(expected.name.clone(), Restored::Planned);
                (None, Vec::new())
            }
            None => {
                let arn = self.create_target_group(&expected).await?;
                self.report.push(ChangeKind::Create, resource, arn.clone());
                (Some(arn), Vec::new())
            }
            Some(current) => {
                let actual = Self::comparable_target_group(&current);
                if actual == expected {
                    self.report.push(ChangeKind::Keep, resource, current.arn.clone());
                } else {
                    self.differing_target_group(&expected, &current, resource).await?;
                }
                (Some(current.arn.clone()), current.targets.clone())
            }
        };
        if let Some(arn) = &arn {
            self.note_account(arn);
            self.id(&source.arn, arn);
            self.target_groups.insert(expected.name.clone(), Restored::At(arn.clone()));
        }
        self.targets(source, &expected.name, arn.as_deref(), &registered).await
    }

    async fn differing_target_group(
        &mut self,
        expected: &TargetGroup,
        current: &TargetGroup,
        resource: String,
    ) -> Result<(), AwsError> {
        let fields = differing_fields(expected, &Self::comparable_target_group(current));
        let detail = format!("differs in {}", fields.join(", "));
        if !self.options.replace {
            self.report.push(ChangeKind::Differs, resource, detail);
            return Ok(());
        }
        let immutable = ["protocol", "protocol_version", "port", "vpc_id", "target_type", "ip_address_type"];
        if fields.iter().any(|f| immutable.contains(&f.as_str())) {
            let reason = format!(
                "{detail}; these cannot be changed in place and the group may be in use: delete it to restore it"
            );
            self.report.push(ChangeKind::Differs, resource, reason);
            return Ok(());
        }
        if !self.options.dry_run {
            self.modify_target_group(expected, current).await?;
        }
        self.report.push(ChangeKind::Replace, resource, detail);
        Ok(())
    }

    async fn create_target_group(&self, tg: &TargetGroup) -> Result<String, AwsError> {
        let hc = &tg.health_check;
        let out = self
            .client
            .create_target_group()
            .name(&tg.name)
            .set_protocol(tg.protocol.as_deref().map(sdk::ProtocolEnum::from))
            .set_protocol_version(tg.protocol_version.clone())
            .set_port(tg.port)
            .set_vpc_id(tg.vpc_id.clone())
            .set_target_type(tg.target_type.as_deref().map(sdk::TargetTypeEnum::from))
            .set_ip_address_type(tg.ip_address_type.as_deref().map(sdk::TargetGroupIpAddressTypeEnum::from))
            .set_health_check_enabled(hc.enabled)
            .set_health_check_protocol(hc.protocol.as_deref().map(sdk::ProtocolEnum::from))
            .set_health_check_port(hc.port.clone())
            .set_health_check_path(hc.path.clone())
            .set_health_check_interval_seconds(hc.interval_seconds)
            .set_health_check_timeout_seconds(hc.timeout_seconds)
            .set_healthy_threshold_count(hc.healthy_threshold_count)
            .set_unhealthy_threshold_count(hc.unhealthy_threshold_count)
            .set_matcher(hc.matcher.as_ref().map(sdk_matcher))
            .set_tags(Some(tags_of(&tg.tags)).filter(|t| !t.is_empty()))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:CreateTargetGroup", e))?;
        let arn = out
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .ok_or_else(|| {
                AwsError::task_failure(
                    "elasticloadbalancing:CreateTargetGroup",
                    "MissingArn",
                    format!("CreateTargetGroup of {} returned no target group ARN", tg.name),
                )
            })?
            .to_string();
        let fresh = target_group_attributes(self.client, &arn).await?;
        self.modify_target_group_attributes(&arn, &tg.attributes, &fresh).await?;
        Ok(arn)
    }

    async fn modify_target_group_attributes(
        &self,
        arn: &str,
        wanted: &BTreeMap<String, String>,
        current: &BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        let changed: Vec<sdk::TargetGroupAttribute> = wanted
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| sdk::TargetGroupAttribute::builder().key(k).value(v).build())
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        self.client
            .modify_target_group_attributes()
            .target_group_arn(arn)
            .set_attributes(Some(changed))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:ModifyTargetGroupAttributes", e))?;
        Ok(())
    }

    async fn modify_target_group(&self, tg: &TargetGroup, current: &TargetGroup) -> Result<(), AwsError> {
        let hc = &tg.health_check;
        if *hc != current.health_check {
            self.client
                .modify_target_group()
                .target_group_arn(&current.arn)
                .set_health_check_enabled(hc.enabled)
                .set_health_check_protocol(hc.protocol.as_deref().map(sdk::ProtocolEnum::from))
                .set_health_check_port(hc.port.clone())
                .set_health_check_path(hc.path.clone())
                .set_health_check_interval_seconds(hc.interval_seconds)
                .set_health_check_timeout_seconds(hc.timeout_seconds)
                .set_healthy_threshold_count(hc.healthy_threshold_count)
                .set_unhealthy_threshold_count(hc.unhealthy_threshold_count)
                .set_matcher(hc.matcher.as_ref().map(sdk_matcher))
                .send()
                .await
                .map_err(|e| classify("elasticloadbalancing:ModifyTargetGroup", e))?;
        }
        self.modify_target_group_attributes(&current.arn, &tg.attributes, &current.attributes).await?;
        self.replace_tags(&current.arn, &tg.tags, &current.tags).await
    }

    /// Makes `arn`'s tags `wanted`: adds and changes, then removes the others.
    async fn replace_tags(
        &self,
        arn: &str,
        wanted: &BTreeMap<String, String>,
        current: &BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        let changed: BTreeMap<String, String> =
            wanted.iter().filter(|(k, v)| current.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if !changed.is_empty() {
            self.client
                .add_tags()
                .resource_arns(arn)
                .set_tags(Some(tags_of(&changed)))
                .send()
                .await
                .map_err(|e| classify("elasticloadbalancing:AddTags", e))?;
        }
        let extra: Vec<String> = current.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        if !extra.is_empty() {
            self.client
                .remove_tags()
                .resource_arns(arn)
                .set_tag_keys(Some(extra))
                .send()
                .await
                .map_err(|e| classify("elasticloadbalancing:RemoveTags", e))?;
        }
        Ok(())
    }

    /// Whether an unmapped target id still names the same thing in the target: instance ids,
    /// Lambda and load balancer ARNs exist only in their own account and region; IP addresses
    /// are addresses in the (mapped) VPC and are kept.
    fn target_stays_valid(&self, source_tg_arn: &str, target_type: Option<&str>) -> bool {
        if matches!(target_type, Some("ip")) {
            return true;
        }
        let same_region = arn_part(source_tg_arn, 3).is_none_or(|r| r == self.target_region);
        let same_account = match (&self.target_account, arn_part(source_tg_arn, 4)) {
            (Some(target), Some(source)) => target == source,
            _ => true,
        };
        same_region && same_account
    }

    async fn targets(
        &mut self,
        source: &TargetGroup,
        name: &str,
        arn: Option<&str>,
        registered: &[Target],
    ) -> Result<(), AwsError> {
        let mut to_register = Vec::new();
        for target in &source.targets {
            let mapped = self.options.mapping.target(&target.id).to_string();
            let key = Target::key_of(&mapped, target.port);
            let resource = format!("target {name} {key}");
            if mapped == target.id && !self.target_stays_valid(&source.arn, source.target_type.as_deref()) {
                let reason = format!(
                    "{} names a target only in the source account and region; map it (mapping.targets) to restore it",
                    target.id
                );
                self.report.push(ChangeKind::Skip, resource, reason);
            } else if registered.iter().any(|t| t.key == key) {
                self.report.push(ChangeKind::Keep, resource, "registered");
            } else {
                let detail = if self.options.dry_run { "would register" } else { "registered" };
                self.report.push(ChangeKind::Create, resource, detail);
                to_register.push(
                    sdk::TargetDescription::builder()
                        .id(mapped)
                        .set_port(target.port)
                        .set_availability_zone(target.availability_zone.clone())
                        .build(),
                );
            }
        }
        let Some(arn) = arn.filter(|_| !self.options.dry_run && !to_register.is_empty()) else {
            return Ok(());
        };
        self.client
            .register_targets()
            .target_group_arn(arn)
            .set_targets(Some(to_register))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:RegisterTargets", e))?;
        Ok(())
    }

    // --- load balancers -----------------------------------------------------------------------

    /// The load balancer as it should be in the target (without listeners and ids).
    fn expected_load_balancer(&self, lb: &LoadBalancer) -> LoadBalancer {
        let name = self.suffixed(&lb.name);
        let mapping = &self.options.mapping;
        let same_region = arn_part(&lb.arn, 3).is_none_or(|r| r == self.target_region);
        let zones = lb
            .availability_zones
            .iter()
            .map(|zone| AvailabilityZone {
                subnet_id: zone.subnet_id.as_deref().map(|s| mapping.subnet(s).to_string()),
                // An Elastic IP belongs to its region.
                allocation_id: zone.allocation_id.clone().filter(|_| same_region),
                ..zone.clone()
            })
            .collect();
        let mut security_groups: Vec<String> =
            lb.security_groups.iter().map(|sg| mapping.security_group(sg).to_string()).collect();
        security_groups.sort();
        LoadBalancer {
            key: name.clone(),
            name,
            vpc_id: lb.vpc_id.as_deref().map(|v| mapping.vpc(v).to_string()),
            availability_zones: zones,
            security_groups,
            listeners: Vec::new(),
            ..lb.clone()
        }
    }

    /// What must be equal: the subnets (whose zones follow from them) but neither zone names nor
    /// ids, nor the VPC (the subnets' VPC).
    fn comparable_load_balancer(lb: &LoadBalancer) -> LoadBalancer {
        let mut zones: Vec<AvailabilityZone> = lb
            .availability_zones
            .iter()
            .map(|z| AvailabilityZone { key: String::new(), zone_name: String::new(), ..z.clone() })
            .collect();
        zones.sort_by(|a, b| a.subnet_id.cmp(&b.subnet_id));
        LoadBalancer {
            arn: String::new(),
            dns_name: None,
            canonical_hosted_zone_id: None,
            vpc_id: None,
            availability_zones: zones,
            listeners: Vec::new(),
            ..lb.clone()
        }
    }

    async fn load_balancer(&mut self, source: &LoadBalancer) -> Result<(), AwsError> {
        let expected = self.expected_load_balancer(source);
        let resource = format!("load balancer {}", expected.name);
        if let Err(reason) = check_name("load balancer", &expected.name) {
            self.report.warnings.push(reason.clone());
            self.report.push(ChangeKind::Skip, resource, reason.clone());
            self.skip_listeners(source, &expected.name, &format!("its load balancer is skipped: {reason}"));
            return Ok(());
        }
        let current = self.existing.load_balancers.iter().find(|l| l.name == expected.name).cloned();
        let target = match current {
            None if self.options.dry_run => {
                self.report.push(ChangeKind::Create, resource, "would create");
                None
            }
            None => {
                let created = self.create_load_balancer(&expected).await?;
                self.report.push(ChangeKind::Create, resource, created.arn.clone());
                Some(created)
            }
            Some(current) => self.existing_load_balancer(&expected, current, resource).await?,
        };
        let Some(target) = target else {
            for listener in &source.listeners {
                self.listener(&expected.name, None, listener).await?;
            }
            return Ok(());
        };
        self.note_account(&target.arn);
        self.id(&source.arn, &target.arn);
        if let (Some(from), Some(to)) = (&source.dns_name, &target.dns_name) {
            self.id(from, to);
        }
        if let (Some(from), Some(to)) = (&source.canonical_hosted_zone_id, &target.canonical_hosted_zone_id) {
            self.id(from, to);
        }
        for listener in &source.listeners {
            self.listener(&expected.name, Some(&target), listener).await?;
        }
        Ok(())
    }

    /// An existing load balancer of the same name: kept, left differing, modified, or (type or
    /// scheme changed, which no call can change) deleted and created again.
    async fn existing_load_balancer(
        &mut self,
        expected: &LoadBalancer,
        current: LoadBalancer,
        resource: String,
    ) -> Result<Option<LoadBalancer>, AwsError> {
        let wanted = Self::comparable_load_balancer(expected);
        let actual = Self::comparable_load_balancer(&current);
        if wanted == actual {
            self.report.push(ChangeKind::Keep, resource, current.arn.clone());
            return Ok(Some(current));
        }
        let fields = differing_fields(&wanted, &actual);
        let detail = format!("differs in {}", fields.join(", "));
        if !self.options.replace {
            self.report.push(ChangeKind::Differs, resource, detail);
            return Ok(Some(current));
        }
        let recreate = fields.iter().any(|f| f == "type" || f == "scheme");
        self.report.push(
            ChangeKind::Replace,
            resource,
            if recreate { format!("{detail}: deleted and created again") } else { detail },
        );
        if self.options.dry_run {
            return Ok(if recreate { None } else { Some(current) });
        }
        if recreate {
            self.client
                .delete_load_balancer()
                .load_balancer_arn(&current.arn)
                .send()
                .await
                .map_err(|e| classify("elasticloadbalancing:DeleteLoadBalancer", e))?;
            return self.create_load_balancer(expected).await.map(Some);
        }
        self.modify_load_balancer(expected, &current).await?;
        Ok(Some(current))
    }

    fn subnet_mappings(lb: &LoadBalancer) -> Option<Vec<sdk::SubnetMapping>> {
        let fixed = lb
            .availability_zones
            .iter()
            .any(|z| z.allocation_id.is_some() || z.private_ipv4_address.is_some() || z.ipv6_address.is_some());
        fixed.then(|| {
            lb.availability_zones
                .iter()
                .map(|z| {
                    sdk::SubnetMapping::builder()
                        .set_subnet_id(z.subnet_id.clone())
                        .set_allocation_id(z.allocation_id.clone())
                        .set_private_ipv4_address(z.private_ipv4_address.clone())
                        .set_ipv6_address(z.ipv6_address.clone())
                        .build()
                })
                .collect()
        })
    }

    fn subnets(lb: &LoadBalancer) -> Vec<String> {
        lb.availability_zones.iter().filter_map(|z| z.subnet_id.clone()).collect()
    }

    async fn create_load_balancer(&mut self, lb: &LoadBalancer) -> Result<LoadBalancer, AwsError> {
        let mappings = Self::subnet_mappings(lb);
        let subnets = if mappings.is_some() { None } else { Some(Self::subnets(lb)) };
        let out = self
            .client
            .create_load_balancer()
            .name(&lb.name)
            .r#type(sdk::LoadBalancerTypeEnum::from(lb.kind.as_str()))
            .set_scheme(lb.scheme.as_deref().map(sdk::LoadBalancerSchemeEnum::from))
            .set_ip_address_type(lb.ip_address_type.as_deref().map(sdk::IpAddressType::from))
            .set_subnets(subnets)
            .set_subnet_mappings(mappings)
            .set_security_groups(Some(lb.security_groups.clone()).filter(|s| !s.is_empty()))
            .set_tags(Some(tags_of(&lb.tags)).filter(|t| !t.is_empty()))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:CreateLoadBalancer", e))?;
        let created = out.load_balancers().first().ok_or_else(|| {
            AwsError::task_failure(
                "elasticloadbalancing:CreateLoadBalancer",
                "MissingLoadBalancer",
                format!("CreateLoadBalancer of {} returned no load balancer", lb.name),
            )
        })?;
        let mut restored = export_load_balancer(created, &self.target_region);
        let fresh = load_balancer_attributes(self.client, &restored.arn).await?;
        self.modify_load_balancer_attributes(&restored.arn, &lb.attributes, &fresh).await?;
        restored.attributes = lb.attributes.clone();
        Ok(restored)
    }

    async fn modify_load_balancer_attributes(
        &self,
        arn: &str,
        wanted: &BTreeMap<String, String>,
        current: &BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        let changed: Vec<sdk::LoadBalancerAttribute> = wanted
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .map(|(k, v)| sdk::LoadBalancerAttribute::builder().key(k).value(v).build())
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        self.client
            .modify_load_balancer_attributes()
            .load_balancer_arn(arn)
            .set_attributes(Some(changed))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:ModifyLoadBalancerAttributes", e))?;
        Ok(())
    }

    async fn modify_load_balancer(&self, lb: &LoadBalancer, current: &LoadBalancer) -> Result<(), AwsError> {
        let arn = &current.arn;
        let mut wanted_subnets = Self::subnets(lb);
        let mut current_subnets = Self::subnets(current);
        wanted_subnets.sort();
        current_subnets.sort();
        if wanted_subnets != current_subnets {
            self.client
                .set_subnets()
                .load_balancer_arn(arn)
                .set_subnets(Some(wanted_subnets).filter(|_| Self::subnet_mappings(lb).is_none()))
                .set_subnet_mappings(Self::subnet_mappings(lb))
                .send()
                .await
                .map_err(|e| classify("elasticloadbalancing:SetSubnets", e))?;
        }
        if lb.security_groups != current.security_groups {
            self.client
                .set_security_groups()
                .load_balancer_arn(arn)
                .set_security_groups(Some(lb.security_groups.clone()))
                .send()
                .await
                .map_err(|e| classify("elasticloadbalancing:SetSecurityGroups", e))?;
        }
        if let Some(ip_type) = lb.ip_address_type.as_deref().filter(|t| Some(*t) != current.ip_address_type.as_deref())
        {
            self.client
                .set_ip_address_type()
                .load_balancer_arn(arn)
                .ip_address_type(sdk::IpAddressType::from(ip_type))
                .send()
                .await
                .map_err(|e| classify("elasticloadbalancing:SetIpAddressType", e))?;
        }
        self.modify_load_balancer_attributes(arn, &lb.attributes, &current.attributes).await?;
        self.replace_tags(arn, &lb.tags, &current.tags).await
    }

    // --- listeners and rules ------------------------------------------------------------------

    fn skip_listeners(&mut self, lb: &LoadBalancer, lb_name: &str, reason: &str) {
        for listener in &lb.listeners {
            self.report.push(ChangeKind::Skip, format!("listener {lb_name} {}", listener.key), reason);
            for rule in listener.rules.iter().filter(|r| !r.is_default) {
                self.report.push(ChangeKind::Skip, format!("rule {lb_name} {} {}", listener.key, rule.key), reason);
            }
        }
    }

    /// The action as it should be in the target: its target groups by their restored names.
    fn expected_action(&self, action: &Action) -> Action {
        let forward_config = action.forward_config.as_ref().map(|f| ForwardConfig {
            target_groups: f
                .target_groups
                .iter()
                .map(|t| {
                    let name = self.suffixed(&t.target_group);
                    WeightedTargetGroup { key: name.clone(), target_group: name, ..t.clone() }
                })
                .collect(),
            stickiness: f.stickiness.clone(),
        });
        Action {
            target_group: action.target_group.as_deref().map(|n| self.suffixed(n)),
            forward_config,
            ..action.clone()
        }
    }

    fn comparable_actions(actions: &[Action]) -> Vec<Action> {
        actions
            .iter()
            .map(|a| Action {
                target_group_arn: None,
                forward_config: a.forward_config.as_ref().map(|f| ForwardConfig {
                    target_groups: f
                        .target_groups
                        .iter()
                        .map(|t| WeightedTargetGroup { target_group_arn: String::new(), ..t.clone() })
                        .collect(),
                    stickiness: f.stickiness.clone(),
                }),
                ..a.clone()
            })
            .collect()
    }

    /// Why `actions` cannot be restored (a target group skipped, a secret ELBv2 never returns).
    fn unrestorable(&self, actions: &[Action]) -> Option<String> {
        for action in actions {
            if action.authenticate_oidc_config.is_some() {
                return Some("an authenticate-oidc action needs its client secret, which ELBv2 does not export".into());
            }
            let names = action
                .target_group
                .iter()
                .chain(action.forward_config.iter().flat_map(|f| f.target_groups.iter().map(|t| &t.target_group)));
            for name in names {
                let name = self.suffixed(name);
                if let Some(Restored::Skipped(reason)) = self.target_groups.get(&name) {
                    return Some(format!("target group {name} is skipped: {reason}"));
                }
            }
        }
        None
    }

    /// The target ARN of a target group by its name in the target; one not in the document is
    /// used by its source ARN.
    fn target_group_arn(&self, name: &str, source_arn: &str) -> Result<String, AwsError> {
        match self.target_groups.get(name) {
            Some(Restored::At(arn)) => Ok(arn.clone()),
            Some(Restored::Planned) | Some(Restored::Skipped(_)) => Err(AwsError::task_failure(
                "elasticloadbalancing:CreateListener",
                "TargetGroupNotRestored",
                format!("target group {name} has no ARN in the target"),
            )),
            None => Ok(source_arn.to_string()),
        }
    }

    fn sdk_actions(&self, actions: &[Action]) -> Result<Vec<sdk::Action>, AwsError> {
        actions.iter().map(|a| self.sdk_action(a)).collect()
    }

    fn sdk_action(&self, action: &Action) -> Result<sdk::Action, AwsError> {
        let target_group_arn = match (&action.target_group, &action.target_group_arn) {
            (Some(name), arn) => Some(self.target_group_arn(name, arn.as_deref().unwrap_or_default())?),
            (None, arn) => arn.clone(),
        };
        let forward_config = match &action.forward_config {
            None => None,
            Some(f) => {
                let mut tuples = Vec::new();
                for t in &f.target_groups {
                    tuples.push(
                        sdk::TargetGroupTuple::builder()
                            .target_group_arn(self.target_group_arn(&t.target_group, &t.target_group_arn)?)
                            .set_weight(t.weight)
                            .build(),
                    );
                }
                let stickiness = f.stickiness.as_ref().map(|s| {
                    sdk::TargetGroupStickinessConfig::builder()
                        .enabled(s.enabled)
                        .set_duration_seconds(s.duration_seconds)
                        .build()
                });
                Some(
                    sdk::ForwardActionConfig::builder()
                        .set_target_groups(Some(tuples))
                        .set_target_group_stickiness_config(stickiness)
                        .build(),
                )
            }
        };
        Ok(sdk::Action::builder()
            .r#type(sdk::ActionTypeEnum::from(action.kind.as_str()))
            .set_order(action.order)
            .set_target_group_arn(target_group_arn)
            .set_forward_config(forward_config)
            .set_redirect_config(action.redirect_config.as_ref().map(|r| {
                sdk::RedirectActionConfig::builder()
                    .set_protocol(r.protocol.clone())
                    .set_port(r.port.clone())
                    .set_host(r.host.clone())
                    .set_path(r.path.clone())
                    .set_query(r.query.clone())
                    .status_code(sdk::RedirectActionStatusCodeEnum::from(r.status_code.as_str()))
                    .build()
            }))
            .set_fixed_response_config(action.fixed_response_config.as_ref().map(|f| {
                sdk::FixedResponseActionConfig::builder()
                    .status_code(&f.status_code)
                    .set_content_type(f.content_type.clone())
                    .set_message_body(f.message_body.clone())
                    .build()
            }))
            .set_authenticate_cognito_config(action.authenticate_cognito_config.as_ref().map(|c| {
                sdk::AuthenticateCognitoActionConfig::builder()
                    .user_pool_arn(&c.user_pool_arn)
                    .user_pool_client_id(&c.user_pool_client_id)
                    .user_pool_domain(&c.user_pool_domain)
                    .set_session_cookie_name(c.session_cookie_name.clone())
                    .set_scope(c.scope.clone())
                    .set_session_timeout(c.session_timeout)
                    .set_on_unauthenticated_request(
                        c.on_unauthenticated_request
                            .as_deref()
                            .map(sdk::AuthenticateCognitoActionConditionalBehaviorEnum::from),
                    )
                    .set_authentication_request_extra_params(
                        Some(c.authentication_request_extra_params.clone().into_iter().collect())
                            .filter(|m: &std::collections::HashMap<String, String>| !m.is_empty()),
                    )
                    .build()
            }))
            .build())
    }

    /// The listener as it should be in the target (without its rules and ids).
    fn expected_listener(&self, listener: &Listener) -> Listener {
        Listener {
            arn: String::new(),
            certificates: listener
                .certificates
                .iter()
                .map(|c| {
                    let arn = self.options.mapping.certificate(&c.certificate_arn).to_string();
                    let key = if c.is_default { "default".to_string() } else { arn.clone() };
                    Certificate { key, certificate_arn: arn, is_default: c.is_default }
                })
                .collect(),
            default_actions: listener.default_actions.iter().map(|a| self.expected_action(a)).collect(),
            rules: Vec::new(),
            ..listener.clone()
        }
    }

    fn comparable_listener(listener: &Listener) -> Listener {
        Listener {
            arn: String::new(),
            default_actions: Self::comparable_actions(&listener.default_actions),
            rules: Vec::new(),
            ..listener.clone()
        }
    }

    async fn listener(&mut self, lb_name: &str, lb: Option<&LoadBalancer>, source: &Listener) -> Result<(), AwsError> {
        let expected = self.expected_listener(source);
        let resource = format!("listener {lb_name} {}", source.key);
        if let Some(reason) = self.unrestorable(&source.default_actions) {
            self.report.push(ChangeKind::Skip, resource, reason.clone());
            for rule in source.rules.iter().filter(|r| !r.is_default) {
                let detail = format!("its listener is skipped: {reason}");
                self.report.push(ChangeKind::Skip, format!("rule {lb_name} {} {}", source.key, rule.key), detail);
            }
            return Ok(());
        }
        let current = lb.and_then(|lb| {
            self.existing
                .load_balancers
                .iter()
                .find(|l| l.arn == lb.arn)
                .and_then(|l| l.listeners.iter().find(|x| x.key == source.key))
                .cloned()
        });
        let target = match (lb, current) {
            (Some(lb), None) if !self.options.dry_run => {
                let arn = self.create_listener(&lb.arn, &expected).await?;
                self.report.push(ChangeKind::Create, resource, arn.clone());
                Some(Listener { arn, ..Listener::default() })
            }
            (_, None) => {
                self.report.push(ChangeKind::Create, resource, "would create");
                None
            }
            (_, Some(current)) => {
                self.existing_listener(&expected, &current, resource).await?;
                Some(current)
            }
        };
        if let Some(target) = &target {
            self.id(&source.arn, &target.arn);
        }
        let mut rules: Vec<&Rule> = source.rules.iter().filter(|r| !r.is_default).collect();
        rules.sort_by_key(|r| r.priority.parse::<i64>().unwrap_or(i64::MAX));
        for rule in rules {
            self.rule(lb_name, &source.key, target.as_ref(), rule).await?;
        }
        Ok(())
    }

    async fn existing_listener(
        &mut self,
        expected: &Listener,
        current: &Listener,
        resource: String,
    ) -> Result<(), AwsError> {
        let actual = Self::comparable_listener(current);
        let wanted = Self::comparable_listener(expected);
        if wanted == actual {
            self.report.push(ChangeKind::Keep, resource, current.arn.clone());
            return Ok(());
        }
        let detail = format!("differs in {}", differing_fields(&wanted, &actual).join(", "));
        if !self.options.replace {
            self.report.push(ChangeKind::Differs, resource, detail);
            return Ok(());
        }
        if !self.options.dry_run {
            self.modify_listener(expected, current).await?;
        }
        self.report.push(ChangeKind::Replace, resource, detail);
        Ok(())
    }

    fn default_certificate(listener: &Listener) -> Option<Vec<sdk::Certificate>> {
        listener
            .certificates
            .iter()
            .find(|c| c.is_default)
            .map(|c| vec![sdk::Certificate::builder().certificate_arn(&c.certificate_arn).build()])
    }

    async fn create_listener(&self, lb_arn: &str, listener: &Listener) -> Result<String, AwsError> {
        let secure = is_secure(listener.protocol.as_deref());
        let out = self
            .client
            .create_listener()
            .load_balancer_arn(lb_arn)
            .set_protocol(listener.protocol.as_deref().map(sdk::ProtocolEnum::from))
            .set_port(listener.port)
            .set_ssl_policy(listener.ssl_policy.clone().filter(|_| secure))
            .set_certificates(Self::default_certificate(listener))
            .set_alpn_policy(Some(listener.alpn_policy.clone()).filter(|a| !a.is_empty()))
            .set_default_actions(Some(self.sdk_actions(&listener.default_actions)?))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:CreateListener", e))?;
        let arn = out
            .listeners()
            .first()
            .and_then(|l| l.listener_arn())
            .ok_or_else(|| {
                AwsError::task_failure(
                    "elasticloadbalancing:CreateListener",
                    "MissingArn",
                    format!("CreateListener {} returned no listener ARN", listener.key),
                )
            })?
            .to_string();
        self.add_certificates(&arn, listener, &[]).await?;
        Ok(arn)
    }

    /// Adds the non-default certificates `current` lacks.
    async fn add_certificates(&self, arn: &str, listener: &Listener, current: &[Certificate]) -> Result<(), AwsError> {
        let missing: Vec<sdk::Certificate> = listener
            .certificates
            .iter()
            .filter(|c| !c.is_default && !current.iter().any(|x| x.certificate_arn == c.certificate_arn))
            .map(|c| sdk::Certificate::builder().certificate_arn(&c.certificate_arn).build())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.client
            .add_listener_certificates()
            .listener_arn(arn)
            .set_certificates(Some(missing))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:AddListenerCertificates", e))?;
        Ok(())
    }

    async fn modify_listener(&self, listener: &Listener, current: &Listener) -> Result<(), AwsError> {
        let secure = is_secure(listener.protocol.as_deref());
        self.client
            .modify_listener()
            .listener_arn(&current.arn)
            .set_protocol(listener.protocol.as_deref().map(sdk::ProtocolEnum::from))
            .set_port(listener.port)
            .set_ssl_policy(listener.ssl_policy.clone().filter(|_| secure))
            .set_certificates(Self::default_certificate(listener))
            .set_alpn_policy(Some(listener.alpn_policy.clone()).filter(|a| !a.is_empty()))
            .set_default_actions(Some(self.sdk_actions(&listener.default_actions)?))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:ModifyListener", e))?;
        self.add_certificates(&current.arn, listener, &current.certificates).await
    }

    fn expected_rule(&self, rule: &Rule) -> Rule {
        Rule {
            arn: String::new(),
            actions: rule.actions.iter().map(|a| self.expected_action(a)).collect(),
            ..rule.clone()
        }
    }

    fn comparable_rule(rule: &Rule) -> Rule {
        Rule { arn: String::new(), actions: Self::comparable_actions(&rule.actions), ..rule.clone() }
    }

    async fn rule(
        &mut self,
        lb_name: &str,
        listener_key: &str,
        listener: Option<&Listener>,
        source: &Rule,
    ) -> Result<(), AwsError> {
        let resource = format!("rule {lb_name} {listener_key} {}", source.key);
        if let Some(reason) = self.unrestorable(&source.actions) {
            self.report.push(ChangeKind::Skip, resource, reason);
            return Ok(());
        }
        let expected = self.expected_rule(source);
        let current = listener.and_then(|l| {
            self.existing
                .load_balancers
                .iter()
                .flat_map(|lb| &lb.listeners)
                .find(|x| x.arn == l.arn)
                .and_then(|x| x.rules.iter().find(|r| r.key == source.key))
                .cloned()
        });
        match (listener, current) {
            (Some(listener), None) if !self.options.dry_run => {
                let arn = self.create_rule(&listener.arn, &expected).await?;
                self.id(&source.arn, &arn);
                self.report.push(ChangeKind::Create, resource, arn);
            }
            (_, None) => self.report.push(ChangeKind::Create, resource, "would create"),
            (_, Some(current)) => {
                self.id(&source.arn, &current.arn);
                let wanted = Self::comparable_rule(&expected);
                let actual = Self::comparable_rule(&current);
                if wanted == actual {
                    self.report.push(ChangeKind::Keep, resource, current.arn.clone());
                    return Ok(());
                }
                let detail = format!("differs in {}", differing_fields(&wanted, &actual).join(", "));
                if !self.options.replace {
                    self.report.push(ChangeKind::Differs, resource, detail);
                    return Ok(());
                }
                if !self.options.dry_run {
                    self.client
                        .modify_rule()
                        .rule_arn(&current.arn)
                        .set_conditions(Some(expected.conditions.iter().map(sdk_condition).collect()))
                        .set_actions(Some(self.sdk_actions(&expected.actions)?))
                        .send()
                        .await
                        .map_err(|e| classify("elasticloadbalancing:ModifyRule", e))?;
                }
                self.report.push(ChangeKind::Replace, resource, detail);
            }
        }
        Ok(())
    }

    async fn create_rule(&self, listener_arn: &str, rule: &Rule) -> Result<String, AwsError> {
        let priority = rule.priority.parse::<i32>().map_err(|_| {
            AwsError::task_failure(
                "elasticloadbalancing:CreateRule",
                "InvalidPriority",
                format!("rule {} has priority {:?}, not a number", rule.key, rule.priority),
            )
        })?;
        let out = self
            .client
            .create_rule()
            .listener_arn(listener_arn)
            .priority(priority)
            .set_conditions(Some(rule.conditions.iter().map(sdk_condition).collect()))
            .set_actions(Some(self.sdk_actions(&rule.actions)?))
            .send()
            .await
            .map_err(|e| classify("elasticloadbalancing:CreateRule", e))?;
        Ok(out.rules().first().and_then(|r| r.rule_arn()).unwrap_or_default().to_string())
    }
}

fn sdk_matcher(m: &Matcher) -> sdk::Matcher {
    sdk::Matcher::builder().set_http_code(m.http_code.clone()).set_grpc_code(m.grpc_code.clone()).build()
}

/// A condition as CreateRule takes it: the `*_config` form when there is one (AWS and moto
/// refuse `Values` beside a config), else the legacy `Values`.
fn sdk_condition(condition: &Condition) -> sdk::RuleCondition {
    let has_config = condition.host_header_config.is_some()
        || condition.path_pattern_config.is_some()
        || condition.http_header_config.is_some()
        || condition.query_string_config.is_some()
        || condition.http_request_method_config.is_some()
        || condition.source_ip_config.is_some();
    sdk::RuleCondition::builder()
        .field(&condition.field)
        .set_values(Some(condition.values.clone()).filter(|v| !has_config && !v.is_empty()))
        .set_host_header_config(
            condition
                .host_header_config
                .as_ref()
                .map(|c| sdk::HostHeaderConditionConfig::builder().set_values(Some(c.values.clone())).build()),
        )
        .set_path_pattern_config(
            condition
                .path_pattern_config
                .as_ref()
                .map(|c| sdk::PathPatternConditionConfig::builder().set_values(Some(c.values.clone())).build()),
        )
        .set_http_header_config(condition.http_header_config.as_ref().map(|h| {
            sdk::HttpHeaderConditionConfig::builder()
                .http_header_name(&h.http_header_name)
                .set_values(Some(h.values.clone()))
                .build()
        }))
        .set_query_string_config(condition.query_string_config.as_ref().map(|q| {
            sdk::QueryStringConditionConfig::builder()
                .set_values(Some(
                    q.values
                        .iter()
                        .map(|p| {
                            sdk::QueryStringKeyValuePair::builder().set_key(p.name.clone()).value(&p.value).build()
                        })
                        .collect(),
                ))
                .build()
        }))
        .set_http_request_method_config(
            condition
                .http_request_method_config
                .as_ref()
                .map(|c| sdk::HttpRequestMethodConditionConfig::builder().set_values(Some(c.values.clone())).build()),
        )
        .set_source_ip_config(
            condition
                .source_ip_config
                .as_ref()
                .map(|c| sdk::SourceIpConditionConfig::builder().set_values(Some(c.values.clone())).build()),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_keys_are_the_zone_letter_in_its_region() {
        assert_eq!(zone_key("us-east-1a", "us-east-1"), "a");
        assert_eq!(zone_key("us-west-2-lax-1a", "us-west-2"), "-lax-1a");
        assert_eq!(zone_key("eu-west-1b", "us-east-1"), "eu-west-1b");
        assert_eq!(zone_key("us-east-1a", ""), "us-east-1a");
    }

    #[test]
    fn listener_keys_name_protocol_and_port() {
        assert_eq!(listener_key(Some("HTTPS"), Some(443)), "HTTPS:443");
        assert_eq!(listener_key(None, None), "gateway");
    }

    #[test]
    fn names_longer_than_aws_allows_fail_the_item() {
        assert!(check_name("target group", &"x".repeat(32)).is_ok());
        let error = check_name("target group", &"x".repeat(33)).unwrap_err();
        assert!(error.contains("33 characters"), "{error}");
    }

    #[test]
    fn conditions_with_a_config_send_no_legacy_values() {
        let condition = Condition {
            key: "host-header".into(),
            field: "host-header".into(),
            values: vec!["www.example.com".into()],
            host_header_config: Some(Values { values: vec!["www.example.com".into()] }),
            ..Condition::default()
        };
        let sdk = sdk_condition(&condition);
        assert!(sdk.values().is_empty());
        assert_eq!(sdk.host_header_config().map(|c| c.values().to_vec()), Some(vec!["www.example.com".to_string()]));
    }

    #[test]
    fn documents_round_trip_through_json() {
        let config = Elbv2Config {
            load_balancers: vec![LoadBalancer { key: "front".into(), name: "front".into(), ..Default::default() }],
            target_groups: vec![TargetGroup { key: "web".into(), name: "web".into(), ..Default::default() }],
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["load_balancers"][0]["type"], "");
        let back: Elbv2Config = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }
}
