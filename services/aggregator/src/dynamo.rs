//! [`Records`] in a DynamoDB table, for running without NATS.
//!
//! One partition per request (`pk` = request id) with sort keys `request`, `task#<id>` and
//! `event#<sequence>`; each item holds the protobuf `body`, its `version` (conditional writes)
//! and `expires_at` (the table's TTL attribute). Request items also carry `listing`/`listed`,
//! the keys of the `by_start` index that pages requests newest first; the index projects keys
//! only, so the frequent rewrites of a request's body do not rewrite the index.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use bytes::Bytes;
use lifeboat_common::bus::{BusError, Result};
use lifeboat_proto::StoredRequest;
use prost::Message;

use crate::store::{listing_key, Key, Records, Versioned, STATE_MAX_AGE};

/// The index listing requests by start time.
pub const LISTING_INDEX: &str = "by_start";
/// The `listing` value of every request item: the index's single partition.
const LISTING_PARTITION: &str = "requests";

pub struct DynamoRecords {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn store_error(e: impl std::fmt::Display) -> BusError {
    BusError::Store(e.to_string())
}

fn sdk_error<E>(e: aws_sdk_dynamodb::error::SdkError<E>) -> BusError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("").to_string();
    BusError::Store(format!("DynamoDB {code}: {}", aws_smithy_types::error::display::DisplayErrorContext(&e)))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn sort_key(key: Key<'_>) -> (String, String) {
    match key {
        Key::Request(request) => (request.to_string(), "request".to_string()),
        Key::Task(request, task) => (request.to_string(), format!("task#{task}")),
        Key::Event(request, sequence) => (request.to_string(), format!("event#{sequence:012}")),
    }
}

fn key_attributes(key: Key<'_>) -> HashMap<String, AttributeValue> {
    let (pk, sk) = sort_key(key);
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn body(item: &HashMap<String, AttributeValue>) -> Result<Bytes> {
    match item.get("body") {
        Some(AttributeValue::B(blob)) => Ok(Bytes::copy_from_slice(blob.as_ref())),
        _ => Err(BusError::Store("item without a binary body".into())),
    }
}

impl DynamoRecords {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Creates the table with its index and TTL if it does not exist (`lifeboat admin init`;
    /// deployments usually create it from the CloudFormation template instead).
    pub async fn create_table(&self) -> Result<()> {
        let exists = self.client.describe_table().table_name(&self.table).send().await;
        if exists.is_ok() {
            return Ok(());
        }
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(store_error)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(store_error)
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(LISTING_INDEX)
            .key_schema(key("listing", KeyType::Hash)?)
            .key_schema(key("listed", KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
            .build()
            .map_err(store_error)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .attribute_definitions(attribute("listing")?)
            .attribute_definitions(attribute("listed")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .global_secondary_indexes(index)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Another process created it first.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => return Ok(()),
            Err(e) => return Err(sdk_error(e)),
        }
        for _ in 0..120 {
            let table = self.client.describe_table().table_name(&self.table).send().await.map_err(sdk_error)?;
            if table.table().and_then(|t| t.table_status()) == Some(&aws_sdk_dynamodb::types::TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("expires_at")
            .build()
            .map_err(store_error)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    fn item(&self, key: Key<'_>, value: Bytes, version: u64) -> Result<HashMap<String, AttributeValue>> {
        let expires = SystemTime::now().checked_add(STATE_MAX_AGE).unwrap_or(SystemTime::now());
        let expires = expires.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut item = key_attributes(key);
        if let Key::Request(_) = key {
            let stored = StoredRequest::decode(value.as_ref()).map_err(store_error)?;
            item.insert("listing".into(), s(LISTING_PARTITION));
            item.insert("listed".into(), s(listing_key(&stored.summary.unwrap_or_default())));
        }
        item.insert("body".into(), AttributeValue::B(Blob::new(value.to_vec())));
        item.insert("version".into(), AttributeValue::N(version.to_string()));
        item.insert("expires_at".into(), AttributeValue::N(expires.to_string()));
        Ok(item)
    }

    /// Every item of a request whose sort key lies between `from` and `to`.
    async fn query_range(&self, request_id: &str, from: String, to: String) -> Result<Vec<Bytes>> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(request_id))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .into_paginator()
            .items()
            .send();
        let mut values = Vec::new();
        while let Some(item) = pages.next().await {
            values.push(body(&item.map_err(sdk_error)?)?);
        }
        Ok(values)
    }
}

#[async_trait]
impl Records for DynamoRecords {
    async fn get(&self, key: Key<'_>) -> Result<Option<Versioned>> {
        let found = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let Some(item) = found.item() else {
            return Ok(None);
        };
        let version = match item.get("version") {
            Some(AttributeValue::N(n)) => n.parse().map_err(store_error)?,
            _ => return Err(BusError::Store("item without a version".into())),
        };
        Ok(Some(Versioned { value: body(item)?, version }))
    }

    async fn put_if(&self, key: Key<'_>, value: Bytes, expected: u64) -> Result<Option<u64>> {
        let version = expected + 1;
        let mut put = self.client.put_item().table_name(&self.table).set_item(Some(self.item(key, value, version)?));
        put = if expected == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :expected")
                .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
        };
        match put.send().await {
            Ok(_) => Ok(Some(version)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn put(&self, key: Key<'_>, value: Bytes) -> Result<()> {
        let item = self.item(key, value, 1)?;
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item));
        match put.condition_expression("attribute_not_exists(pk)").send().await {
            Ok(_) => Ok(()),
            // Written already, with the same value.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn tasks(&self, request_id: &str) -> Result<Vec<Bytes>> {
        self.query_range(request_id, "task#".into(), "task#~".into()).await
    }

    async fn events(&self, request_id: &str, after: u64) -> Result<Vec<Bytes>> {
        self.query_range(request_id, format!("event#{:012}", after + 1), "event#~".into()).await
    }

    async fn requests(&self, limit: usize, after: Option<&str>) -> Result<(Vec<Bytes>, Option<String>)> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LISTING_INDEX)
            .scan_index_forward(false)
            .limit(limit as i32)
            .expression_attribute_values(":listing", s(LISTING_PARTITION));
        query = match after {
            Some(after) => query
                .key_condition_expression("listing = :listing AND listed < :after")
                .expression_attribute_values(":after", s(after)),
            None => query.key_condition_expression("listing = :listing"),
        };
        let page = query.send().await.map_err(sdk_error)?;
        let keys: Vec<(String, String)> = page
            .items()
            .iter()
            .filter_map(|item| match (item.get("pk"), item.get("listed")) {
                (Some(AttributeValue::S(pk)), Some(AttributeValue::S(listed))) => Some((pk.clone(), listed.clone())),
                _ => None,
            })
            .collect();
        if keys.is_empty() {
            return Ok((Vec::new(), None));
        }
        let wanted = KeysAndAttributes::builder()
            .set_keys(Some(keys.iter().map(|(pk, _)| key_attributes(Key::Request(pk))).collect()));
        let mut bodies: HashMap<String, Bytes> = HashMap::new();
        let mut request = Some(HashMap::from([(self.table.clone(), wanted.build().map_err(store_error)?)]));
        // BatchGetItem may return part of the keys; ask again for the rest.
        while let Some(items) = request.take().filter(|r| !r.is_empty()) {
            let got = self.client.batch_get_item().set_request_items(Some(items)).send().await.map_err(sdk_error)?;
            for item in got.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                if let Some(AttributeValue::S(pk)) = item.get("pk") {
                    bodies.insert(pk.clone(), body(item)?);
                }
            }
            request = got.unprocessed_keys().cloned();
        }
        let next = (keys.len() == limit && page.last_evaluated_key().is_some()).then(|| keys[keys.len() - 1].1.clone());
        Ok((keys.iter().filter_map(|(pk, _)| bodies.remove(pk)).collect(), next))
    }
}
