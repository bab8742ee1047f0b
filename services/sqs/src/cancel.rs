//! Cancellation marks in the DynamoDB state table: the SQS transport's counterpart of the
//! JetStream cancellations bucket. One item per cancelled request, beside the aggregator's
//! records of it (`pk` = request id, `sk` = `cancelled`), expiring with them.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use lifeboat_common::bus::{BusError, Result};
use lifeboat_common::subjects;

fn key(request_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(request_id.to_string())),
        ("sk".to_string(), AttributeValue::S(subjects::CANCELLED_SORT_KEY.to_string())),
    ])
}

fn store_error<E>(table: &str, e: aws_sdk_dynamodb::error::SdkError<E>) -> BusError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    BusError::Store(format!("cancellations in {table}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e)))
}

pub async fn set(client: &Client, table: &str, request_id: &str, cancelled: bool) -> Result<()> {
    let expires = SystemTime::now()
        .checked_add(subjects::CANCELLATIONS_MAX_AGE)
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut item = key(request_id);
    item.insert("cancelled".into(), AttributeValue::Bool(cancelled));
    item.insert("expires_at".into(), AttributeValue::N(expires.to_string()));
    client.put_item().table_name(table).set_item(Some(item)).send().await.map_err(|e| store_error(table, e))?;
    Ok(())
}

/// Whether the request is marked cancelled. A missing table has no marks.
pub async fn get(client: &Client, table: &str, request_id: &str) -> Result<bool> {
    let found = client.get_item().table_name(table).set_key(Some(key(request_id))).consistent_read(true).send().await;
    match found {
        Ok(found) => {
            Ok(found.item().and_then(|i| i.get("cancelled")).is_some_and(|v| matches!(v, AttributeValue::Bool(true))))
        }
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(false),
        Err(e) => Err(store_error(table, e)),
    }
}
