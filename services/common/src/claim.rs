//! Task claims: one delivery of a task takes its step at a time, across every replica. Two
//! deliveries of one task can meet in different processes (a message redelivered while its
//! first holder is slow, a duplicate publish): without a claim both would find nothing
//! recorded and both create, and the progress record's compare-and-set only tells the second
//! one afterwards, when a second volume or copy already exists.
//!
//! A claim is a record in the shared store (`claim.<task>.g<generation>`) naming its holder
//! and when it runs out; the holder renews it while its step runs, so a holder that died frees
//! the task within `ttl`, about when the bus redelivers its message.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::bus::{BusError, Result};
use crate::shared::SharedStore;

#[derive(Serialize, Deserialize)]
struct Record {
    holder: String,
    /// Unix milliseconds.
    until: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn encode(holder: &str, ttl: Duration) -> Result<bytes::Bytes> {
    let record = Record { holder: holder.to_string(), until: now_ms() + ttl.as_millis() as u64 };
    serde_json::to_vec(&record).map(Into::into).map_err(|e| BusError::Store(e.to_string()))
}

/// A held claim, renewed in the background until [`Claim::release`].
pub struct Claim {
    store: Arc<dyn SharedStore>,
    key: String,
    holder: String,
    version: Arc<Mutex<u64>>,
    renewal: JoinHandle<()>,
}

/// Claims `key` for `ttl` (renewed every third of it) unless a live holder has it: `None`
/// then, and the caller comes back later.
pub async fn acquire(store: Arc<dyn SharedStore>, key: String, ttl: Duration) -> Result<Option<Claim>> {
    let holder = uuid::Uuid::new_v4().simple().to_string();
    // Mostly there is no claim: one create. A lost race is another delivery claiming at the
    // same moment, and it has the task.
    let version = match store.put_if(&key, encode(&holder, ttl)?, 0).await? {
        Some(version) => Some(version),
        None => match store.get(&key).await? {
            None => None,
            Some(found) => {
                let live = serde_json::from_slice::<Record>(&found.value).is_ok_and(|r| r.until > now_ms());
                if live {
                    return Ok(None);
                }
                store.put_if(&key, encode(&holder, ttl)?, found.version).await?
            }
        },
    };
    let Some(version) = version else { return Ok(None) };
    let version = Arc::new(Mutex::new(version));
    let renewal = tokio::spawn(renew(store.clone(), key.clone(), holder.clone(), ttl, version.clone()));
    Ok(Some(Claim { store, key, holder, version, renewal }))
}

async fn renew(store: Arc<dyn SharedStore>, key: String, holder: String, ttl: Duration, version: Arc<Mutex<u64>>) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let mut held = version.lock().await;
        let renewed = match encode(&holder, ttl) {
            Ok(value) => store.put_if(&key, value, *held).await,
            Err(e) => Err(e),
        };
        match renewed {
            Ok(Some(next)) => *held = next,
            Ok(None) => {
                warn!(key = %key, "the task's claim was taken over while its step ran");
                return;
            }
            // Tried again at the next renewal; the claim lasts `ttl` from the last one.
            Err(e) => debug!(key = %key, error = %e, "cannot renew the task's claim"),
        }
    }
}

impl Claim {
    /// Gives the task up: deleted when it is still this holder's (a claim taken over after it
    /// ran out belongs to the new holder).
    pub async fn release(self) {
        self.renewal.abort();
        let _held = self.version.lock().await;
        let ours = match self.store.get(&self.key).await {
            Ok(Some(found)) => serde_json::from_slice::<Record>(&found.value).is_ok_and(|r| r.holder == self.holder),
            Ok(None) => false,
            Err(e) => {
                debug!(key = %self.key, error = %e, "cannot read the task's claim; it runs out by itself");
                false
            }
        };
        if ours {
            if let Err(e) = self.store.delete(&self.key).await {
                debug!(key = %self.key, error = %e, "cannot release the task's claim; it runs out by itself");
            }
        }
    }
}
