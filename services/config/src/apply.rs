//! Restores documents into a target account and region, in the order their references need:
//! load balancers first, then Route 53, whose alias records point at the restored load
//! balancers' DNS names and canonical hosted zone ids (which differ from the source's).

use aws_config::SdkConfig;
use lifeboat_common::aws::AwsError;
use serde::de::DeserializeOwned;

use crate::changes::{ApplyOptions, RestoreReport};
use crate::document::{ConfigDocument, Service};
use crate::{clients, elbv2, route53};

/// Restores `docs` into `account_id` and `region` with `target_config`'s credentials: every
/// ELBv2 document first, then the source-to-target ids its report names are added to the alias
/// mappings, then every Route 53 document. With `options.dry_run` nothing changes and the
/// report is the plan. An AWS error stops the restore (it is idempotent: a retry keeps what
/// this one created).
pub async fn restore_documents(
    target_config: &SdkConfig,
    account_id: &str,
    region: &str,
    docs: &[ConfigDocument],
    options: &ApplyOptions,
) -> Result<RestoreReport, AwsError> {
    let mut options = ApplyOptions { region: region.to_string(), ..options.clone() };
    let mut report = RestoreReport::default();
    for doc in docs.iter().filter(|d| d.service == Service::Elbv2) {
        let config: elbv2::Elbv2Config = parse(doc)?;
        let client = clients::elbv2_client(target_config, account_id, region);
        let restored = elbv2::restore(&config, &client, &options).await?;
        add_alias_ids(&mut options, &restored);
        report.extend(restored);
    }
    for doc in docs.iter().filter(|d| d.service == Service::Route53) {
        let config: route53::Route53Config = parse(doc)?;
        let client = clients::route53_client(target_config, account_id);
        report.extend(route53::restore(&config, &client, &options).await?);
    }
    Ok(report)
}

/// The ELBv2 restore's ids (DNS names, canonical hosted zone ids and ARNs, source to target) as
/// alias targets: a lookup is by the exact source value, so ids of other kinds never match.
fn add_alias_ids(options: &mut ApplyOptions, restored: &RestoreReport) {
    for (from, to) in &restored.ids {
        options.mapping.alias_dns_names.insert(from.clone(), to.clone());
        options.mapping.alias_zone_ids.insert(from.clone(), to.clone());
    }
}

/// A document's configuration as its service's type; the error names the document.
fn parse<T: DeserializeOwned>(doc: &ConfigDocument) -> Result<T, AwsError> {
    serde_json::from_value(doc.config.clone()).map_err(|e| {
        AwsError::task_failure(
            "config:Restore",
            "InvalidDocument",
            format!("{} document of {}/{}: config: {e}", doc.service.as_str(), doc.account_id, doc.region),
        )
    })
}
