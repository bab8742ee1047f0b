//! One service's live configuration as a document. (Contract stub: the core helper fills it in.)

use aws_config::SdkConfig;
use lifeboat_common::aws::AwsError;

use crate::document::{ConfigDocument, Service};

/// Reads `service`'s configuration in `account_id` and `region` (ignored for Route 53, whose
/// document has region [`Service::GLOBAL`]) with `config`'s credentials.
pub async fn export_document(
    _config: &SdkConfig,
    _account_id: &str,
    _region: &str,
    _service: Service,
) -> Result<ConfigDocument, AwsError> {
    Err(AwsError::task_failure("config:Export", "NotBuilt", "not built yet"))
}
