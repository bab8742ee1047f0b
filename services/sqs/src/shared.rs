//! The shared store ([`SharedStore`]) in the DynamoDB state table: the SQS transport's
//! counterpart of the JetStream KV bucket. One item per record (`pk` = `shared#<key>`, `sk` =
//! `shared`), with a `version` for compare-and-set and an `expires_at` for the table's TTL.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use bytes::Bytes;
use lifeboat_common::bus::{BusError, Result};
use lifeboat_common::shared::{SharedStore, Versioned, SHARED_MAX_AGE};

const SORT_KEY: &str = "shared";

pub struct DynamoShared {
    client: Client,
    table: String,
}

impl DynamoShared {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    fn key(key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_string(), AttributeValue::S(format!("shared#{key}"))),
            ("sk".to_string(), AttributeValue::S(SORT_KEY.to_string())),
        ])
    }

    fn error<E>(&self, key: &str, e: aws_sdk_dynamodb::error::SdkError<E>) -> BusError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        BusError::Store(format!(
            "{key} in {}: {}",
            self.table,
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        ))
    }
}

#[async_trait]
impl SharedStore for DynamoShared {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let found = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        let Some(item) = found.item() else {
            return Ok(None);
        };
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => n.parse().map_err(|e| BusError::Store(format!("{key}: version {n}: {e}")))?,
            _ => return Err(BusError::Store(format!("{key}: item without a version"))),
        };
        let value = match item.get("body") {
            Some(AttributeValue::B(blob)) => Bytes::copy_from_slice(blob.as_ref()),
            _ => return Err(BusError::Store(format!("{key}: item without a body"))),
        };
        Ok(Some(Versioned { value, version }))
    }

    async fn put_if(&self, key: &str, value: Bytes, expected: u64) -> Result<Option<u64>> {
        let version = expected + 1;
        let expires = SystemTime::now()
            .checked_add(SHARED_MAX_AGE)
            .unwrap_or_else(SystemTime::now)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut item = Self::key(key);
        item.insert("body".into(), AttributeValue::B(Blob::new(value.to_vec())));
        item.insert("version".into(), AttributeValue::N(version.to_string()));
        item.insert("expires_at".into(), AttributeValue::N(expires.to_string()));
        let mut put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        put = if expected == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
        };
        match put.send().await {
            Ok(_) => Ok(Some(version)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }
}
