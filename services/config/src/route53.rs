//! Route 53: every hosted zone with its records and the health checks, exported and restored.
//! (Contract stub: the route53 helper replaces the types and bodies, keeping the signatures.)

use std::collections::BTreeMap;

use lifeboat_common::aws::AwsError;
use serde::{Deserialize, Serialize};

use crate::changes::{ApplyOptions, RestoreReport};

/// Fields whose values are ids that differ between a configuration and its restored copy; the
/// diff leaves them out unless asked to compare them.
pub const MAPPED_FIELDS: &[&str] = &["id"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Route53Config {
    pub hosted_zones: Vec<serde_json::Value>,
    pub health_checks: Vec<serde_json::Value>,
}

/// Reads the whole Route 53 configuration of the client's account, every list to its end.
pub async fn export(_client: &aws_sdk_route53::Client) -> Result<Route53Config, AwsError> {
    Err(AwsError::task_failure("route53:ListHostedZones", "NotBuilt", "not built yet"))
}

/// How many of each kind the configuration holds (`hosted_zones`, `record_sets`, `health_checks`).
pub fn counts(config: &Route53Config) -> BTreeMap<String, usize> {
    BTreeMap::from([
        ("hosted_zones".to_string(), config.hosted_zones.len()),
        ("health_checks".to_string(), config.health_checks.len()),
    ])
}

/// Re-creates `config` in the client's account (idempotent; see [`ApplyOptions`]).
pub async fn restore(
    _config: &Route53Config,
    _client: &aws_sdk_route53::Client,
    _options: &ApplyOptions,
) -> Result<RestoreReport, AwsError> {
    Err(AwsError::task_failure("route53:CreateHostedZone", "NotBuilt", "not built yet"))
}
