//! One service's live configuration as a document: read with the service's own export (every
//! list to its end), counted, and wrapped with its checksum.

use aws_config::SdkConfig;
use chrono::Utc;
use lifeboat_common::aws::AwsError;
use serde::Serialize;

use crate::clients;
use crate::document::{ConfigDocument, Service};

/// Reads `service`'s configuration in `account_id` and `region` (ignored for Route 53, whose
/// document has region [`Service::GLOBAL`]) with `config`'s credentials.
pub async fn export_document(
    config: &SdkConfig,
    account_id: &str,
    region: &str,
    service: Service,
) -> Result<ConfigDocument, AwsError> {
    match service {
        Service::Route53 => {
            let client = clients::route53_client(config, account_id);
            let exported = crate::route53::export(&client).await?;
            let counts = crate::route53::counts(&exported);
            document(service, account_id, Service::GLOBAL, counts, &exported)
        }
        Service::Elbv2 => {
            let client = clients::elbv2_client(config, account_id, region);
            let exported = crate::elbv2::export(&client).await?;
            let counts = crate::elbv2::counts(&exported);
            document(service, account_id, region, counts, &exported)
        }
    }
}

fn document(
    service: Service,
    account_id: &str,
    region: &str,
    counts: std::collections::BTreeMap<String, usize>,
    exported: &impl Serialize,
) -> Result<ConfigDocument, AwsError> {
    let value = serde_json::to_value(exported).map_err(|e| {
        AwsError::task_failure(
            "config:Export",
            "SerializeFailed",
            format!("{service} configuration of {account_id}: {e}"),
        )
    })?;
    Ok(ConfigDocument::new(service, account_id, region, Utc::now(), counts, value))
}
