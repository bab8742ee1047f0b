//! ELBv2: every load balancer with its attributes, listeners and rules, and every target group
//! with its attributes, health check and targets, exported and restored.
//! (Contract stub: the elbv2 helper replaces the types and bodies, keeping the signatures.)

use std::collections::BTreeMap;

use lifeboat_common::aws::AwsError;
use serde::{Deserialize, Serialize};

use crate::changes::{ApplyOptions, RestoreReport};

/// Fields whose values are ids that differ between a configuration and its restored copy; the
/// diff leaves them out unless asked to compare them.
pub const MAPPED_FIELDS: &[&str] = &["arn"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Elbv2Config {
    pub load_balancers: Vec<serde_json::Value>,
    pub target_groups: Vec<serde_json::Value>,
}

/// Reads the whole ELBv2 configuration of the client's account and region, every list to its end.
pub async fn export(_client: &aws_sdk_elasticloadbalancingv2::Client) -> Result<Elbv2Config, AwsError> {
    Err(AwsError::task_failure("elasticloadbalancing:DescribeLoadBalancers", "NotBuilt", "not built yet"))
}

/// How many of each kind (`load_balancers`, `listeners`, `rules`, `target_groups`, `targets`).
pub fn counts(config: &Elbv2Config) -> BTreeMap<String, usize> {
    BTreeMap::from([
        ("load_balancers".to_string(), config.load_balancers.len()),
        ("target_groups".to_string(), config.target_groups.len()),
    ])
}

/// Re-creates `config` in the client's account and region (idempotent; see [`ApplyOptions`]).
/// The report's `ids` map each source load balancer's DNS name and canonical hosted zone id to
/// its restored copy's, for the alias records of a Route 53 restore that follows.
pub async fn restore(
    _config: &Elbv2Config,
    _client: &aws_sdk_elasticloadbalancingv2::Client,
    _options: &ApplyOptions,
) -> Result<RestoreReport, AwsError> {
    Err(AwsError::task_failure("elasticloadbalancing:CreateLoadBalancer", "NotBuilt", "not built yet"))
}
