//! A small record store with compare-and-set, shared by every replica of every service: the
//! JetStream KV bucket `lifeboat_shared` on NATS, items of the DynamoDB state table with SQS.
//!
//! What must hold across processes lives here rather than in memory: a task's progress (the
//! ids it created), the token buckets of AWS quotas and the slots of concurrency caps
//! ([`crate::quota`]), and a request's stored plan. Records are small (well under DynamoDB's
//! 400 KB item limit); keys use only `[A-Za-z0-9_=/.-]` (see [`key_part`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;

use crate::bus::{BusError, Result};

/// The JetStream KV bucket of shared records.
pub const SHARED_BUCKET: &str = "lifeboat_shared";
/// Records not written for this long are forgotten.
pub const SHARED_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A stored value and its version (increasing with every write; 0 means "no record").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub version: u64,
}

#[async_trait]
pub trait SharedStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Versioned>>;
    /// Writes if the record's version is `expected` (0: there is no record) and returns the new
    /// version; `None` when another writer got there first.
    async fn put_if(&self, key: &str, value: Bytes, expected: u64) -> Result<Option<u64>>;
    async fn delete(&self, key: &str) -> Result<()>;
}

/// Escapes one part of a key: characters outside `[A-Za-z0-9_-]` become `=XX` (hex), so ids
/// holding `:` or `/` (ARNs) still make valid, distinct keys. Join parts with `.`.
pub fn key_part(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => out.push(byte as char),
            other => out.push_str(&format!("={other:02X}")),
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Reads a record, lets `change` edit it (`None` for no record), and writes it back with
/// compare-and-set, re-reading after a lost race. `change` returns what to write (`None`:
/// write nothing) and a result. Gives up with an error after `attempts` lost races.
pub async fn update<T>(
    store: &dyn SharedStore,
    key: &str,
    attempts: u32,
    mut change: impl FnMut(Option<&Bytes>) -> (Option<Bytes>, T),
) -> Result<T> {
    for _ in 0..attempts.max(1) {
        let current = store.get(key).await?;
        let (write, result) = change(current.as_ref().map(|c| &c.value));
        let Some(value) = write else {
            return Ok(result);
        };
        let expected = current.map(|c| c.version).unwrap_or(0);
        if store.put_if(key, value, expected).await?.is_some() {
            return Ok(result);
        }
    }
    Err(BusError::Store(format!("{key}: too many concurrent writers")))
}

/// Records in this process only: for tests, and for transports without a shared store (every
/// replica then keeps its own, which is what "process memory" meant before).
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, Versioned>>,
}

impl MemoryStore {
    /// One store per process, so that every bus without its own shares it.
    pub fn process() -> Arc<MemoryStore> {
        static STORE: OnceLock<Arc<MemoryStore>> = OnceLock::new();
        STORE.get_or_init(Default::default).clone()
    }
}

#[async_trait]
impl SharedStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        Ok(self.records.lock().expect("memory store lock").get(key).cloned())
    }

    async fn put_if(&self, key: &str, value: Bytes, expected: u64) -> Result<Option<u64>> {
        let mut records = self.records.lock().expect("memory store lock");
        let current = records.get(key).map(|r| r.version).unwrap_or(0);
        if current != expected {
            return Ok(None);
        }
        records.insert(key.to_string(), Versioned { value, version: current + 1 });
        Ok(Some(current + 1))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.records.lock().expect("memory store lock").remove(key);
        Ok(())
    }
}

/// The JetStream KV bucket [`SHARED_BUCKET`], opened (or created) on first use.
#[derive(Clone)]
pub struct KvShared {
    context: jetstream::Context,
    replicas: usize,
    bucket: Arc<tokio::sync::OnceCell<kv::Store>>,
}

impl KvShared {
    pub fn new(context: jetstream::Context, replicas: usize) -> Self {
        Self { context, replicas: replicas.max(1), bucket: Default::default() }
    }

    async fn bucket(&self) -> Result<&kv::Store> {
        self.bucket
            .get_or_try_init(|| async {
                if let Ok(store) = self.context.get_key_value(SHARED_BUCKET).await {
                    return Ok(store);
                }
                self.context
                    .create_key_value(kv::Config {
                        bucket: SHARED_BUCKET.to_string(),
                        description: "Lifeboat: task progress, quota buckets, concurrency slots, plans".to_string(),
                        history: 1,
                        max_age: SHARED_MAX_AGE,
                        num_replicas: self.replicas,
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| BusError::Setup {
                        what: format!("the {SHARED_BUCKET} bucket"),
                        message: e.to_string(),
                    })
            })
            .await
    }
}

fn store_error(key: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Store(format!("{key}: {e}"))
}

#[async_trait]
impl SharedStore for KvShared {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let entry = self.bucket().await?.entry(key).await.map_err(|e| store_error(key, e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| Versioned { value: e.value, version: e.revision }))
    }

    async fn put_if(&self, key: &str, value: Bytes, expected: u64) -> Result<Option<u64>> {
        let bucket = self.bucket().await?;
        if expected == 0 {
            return match bucket.create(key, value).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(store_error(key, e)),
            };
        }
        match bucket.update(key, value, expected).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(store_error(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.bucket().await?.delete(key).await.map_err(|e| store_error(key, e))
    }
}
