//! Who manages a backup's KMS key. A backup encrypted with an AWS-managed key (`aws/ebs`,
//! `aws/rds`) cannot be shared with another account, so a cross-account restore of it needs a
//! key of the target's; one under a customer managed key can be shared (its key policy decides).
//! Asked of KMS (DescribeKey, once per key) only for backups that go to another account without
//! a target key, and recorded in `Backup.settings` for the plan-time check.

use std::collections::HashMap;

use aws_sdk_kms::types::KeyManagerType;
use lifeboat_common::aws::{classify, AwsError};
use lifeboat_common::settings::KMS_KEY_MANAGER;
use lifeboat_proto::Backup;

/// Records `KMS_KEY_MANAGER` on every encrypted backup whose key KMS describes. A key KMS will
/// not describe (deleted, or no permission) stays unknown; a retryable error is returned.
pub async fn note_key_managers<'a>(kms: &aws_sdk_kms::Client, backups: Vec<&'a mut Backup>) -> Result<(), AwsError> {
    let mut known: HashMap<String, Option<&'static str>> = HashMap::new();
    for backup in backups {
        if !backup.encrypted || backup.kms_key_id.is_empty() {
            continue;
        }
        let manager = match known.get(&backup.kms_key_id) {
            Some(manager) => *manager,
            None => {
                let manager = match kms.describe_key().key_id(&backup.kms_key_id).send().await {
                    Ok(output) => match output.key_metadata().and_then(|m| m.key_manager()) {
                        Some(KeyManagerType::Aws) => Some("AWS"),
                        Some(KeyManagerType::Customer) => Some("CUSTOMER"),
                        _ => None,
                    },
                    Err(e) => {
                        let error = classify("kms:DescribeKey", e);
                        if error.is_retryable() {
                            return Err(error);
                        }
                        None
                    }
                };
                known.insert(backup.kms_key_id.clone(), manager);
                manager
            }
        };
        if let Some(manager) = manager {
            backup.settings.insert(KMS_KEY_MANAGER.to_string(), manager.to_string());
        }
    }
    Ok(())
}

/// True when the backup's key cannot be shared with another account: KMS says AWS manages it,
/// or it is named as an AWS-managed alias, or (moto) an encrypted backup names no key at all.
pub fn is_aws_managed(backup: &Backup) -> bool {
    match backup.settings.get(KMS_KEY_MANAGER).map(String::as_str) {
        Some("AWS") => true,
        Some(_) => false,
        None => backup.kms_key_id.is_empty() || backup.kms_key_id.contains("alias/aws/"),
    }
}

/// True only when KMS said the key is the customer's (shareable under its key policy).
pub fn is_customer_managed(backup: &Backup) -> bool {
    backup.settings.get(KMS_KEY_MANAGER).is_some_and(|m| m == "CUSTOMER")
}
