//! Durable request state: a JetStream KV bucket with one key per request (`<id>.meta`) and one
//! per task (`<id>.task.<task_id>`), so a write touches one small value however large the
//! request is.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::push, consumer::DeliverPolicy, kv};
use async_trait::async_trait;
use futures::StreamExt;
use lifeboat_common::bus::{BusError, Result};
use lifeboat_common::subjects;
use lifeboat_proto::{RequestSummary, TaskState};
use prost::Message;

/// Requests are forgotten this long after their last change.
pub const STATE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The stored meta and tasks of a request; `None` if nothing is stored.
    async fn load(&self, request_id: &str) -> Result<Option<(RequestSummary, Vec<TaskState>)>>;
    async fn put_meta(&self, meta: &RequestSummary) -> Result<()>;
    async fn put_task(&self, request_id: &str, task: &TaskState) -> Result<()>;
}

pub struct KvStore {
    client: async_nats::Client,
    store: kv::Store,
}

fn store_error(e: impl std::fmt::Display) -> BusError {
    BusError::Store(e.to_string())
}

impl KvStore {
    pub async fn open(client: async_nats::Client) -> Result<Self> {
        let context = jetstream::new(client.clone());
        let store = match context.get_key_value(subjects::STATE_BUCKET).await {
            Ok(store) => store,
            Err(_) => context
                .create_key_value(kv::Config {
                    bucket: subjects::STATE_BUCKET.to_string(),
                    description: "Lifeboat restore request state".to_string(),
                    history: 1,
                    max_age: STATE_MAX_AGE,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(store_error)?,
        };
        Ok(Self { client, store })
    }
}

#[async_trait]
impl StateStore for KvStore {
    async fn load(&self, request_id: &str) -> Result<Option<(RequestSummary, Vec<TaskState>)>> {
        // The latest value of every key of the request, read through an ordered consumer (what
        // `kv.keys()` does, narrowed to this request's keys).
        let consumer = self
            .store
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{}{request_id}.>", self.store.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(store_error)?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(None);
        }
        let mut messages = consumer.messages().await.map_err(store_error)?;
        let mut meta = RequestSummary { request_id: request_id.to_string(), ..Default::default() };
        let mut tasks = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(store_error)?;
            let pending = message.info().map_err(store_error)?.pending;
            let key = message.subject.as_str().strip_prefix(self.store.prefix.as_str()).unwrap_or_default();
            let deleted = message.headers.as_ref().and_then(|h| h.get("KV-Operation")).is_some();
            if !deleted {
                if key.ends_with(".meta") {
                    meta = RequestSummary::decode(message.payload.as_ref()).map_err(store_error)?;
                } else {
                    tasks.push(TaskState::decode(message.payload.as_ref()).map_err(store_error)?);
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(Some((meta, tasks)))
    }

    async fn put_meta(&self, meta: &RequestSummary) -> Result<()> {
        self.store.put(format!("{}.meta", meta.request_id), meta.encode_to_vec().into()).await.map_err(store_error)?;
        Ok(())
    }

    async fn put_task(&self, request_id: &str, task: &TaskState) -> Result<()> {
        self.store
            .put(format!("{request_id}.task.{}", task.task_id), task.encode_to_vec().into())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
