//! A request's plan kept in the shared store before it is published, so that a redelivered
//! request republishes exactly the first plan instead of listing again: backups completed in
//! between must not change which tasks a request has.
//!
//! The plan (the planned event first, then one event per task or set outcome) is encoded as
//! length-delimited StatusEvents and cut into chunks `plan.<request-id>.<n>` of at most
//! [`CHUNK_BYTES`], since records are size-limited. The head `plan.<request-id>`, holding the
//! chunk count and a digest of the whole, is written last: without a head there is no plan.

use bytes::Bytes;
use lifeboat_common::bus::{BusError, Result};
use lifeboat_common::shared::{key_part, SharedStore};
use lifeboat_proto::StatusEvent;
use prost::Message;
use sha2::{Digest, Sha256};

/// Well under DynamoDB's 400 KB item and NATS's 1 MiB payload.
pub const CHUNK_BYTES: usize = 256 * 1024;

fn head_key(request_id: &str) -> String {
    format!("plan.{}", key_part(request_id))
}

fn chunk_key(request_id: &str, index: usize) -> String {
    format!("plan.{}.{index}", key_part(request_id))
}

fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores `plan` unless a plan of the request is stored already, and returns the stored one:
/// when two replicas plan the same request, both publish the plan whose head was written first.
pub async fn store(store: &dyn SharedStore, request_id: &str, plan: Vec<StatusEvent>) -> Result<Vec<StatusEvent>> {
    if let Some(stored) = load(store, request_id).await? {
        return Ok(stored);
    }
    let mut encoded = Vec::new();
    for event in &plan {
        event.encode_length_delimited(&mut encoded).map_err(|e| BusError::Store(format!("encode the plan: {e}")))?;
    }
    let chunks: Vec<&[u8]> = encoded.chunks(CHUNK_BYTES).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        let key = chunk_key(request_id, index);
        // A chunk left by an attempt that died before its head is overwritten.
        let expected = store.get(&key).await?.map_or(0, |c| c.version);
        if store.put_if(&key, Bytes::copy_from_slice(chunk), expected).await?.is_none() {
            return Err(BusError::Store(format!("{key}: written by another replica at the same time")));
        }
    }
    let head = format!("{} {}", chunks.len(), digest(&encoded));
    if store.put_if(&head_key(request_id), Bytes::from(head), 0).await?.is_none() {
        // Another replica's head won; its chunks may be ours or its own, the digest tells.
        return load(store, request_id)
            .await?
            .ok_or_else(|| BusError::Store(format!("{}: vanished after a lost race", head_key(request_id))));
    }
    Ok(plan)
}

/// The stored plan of a request, if its head was written.
pub async fn load(store: &dyn SharedStore, request_id: &str) -> Result<Option<Vec<StatusEvent>>> {
    let key = head_key(request_id);
    let Some(head) = store.get(&key).await? else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&head.value).to_string();
    let invalid = |what: &str| BusError::Store(format!("{key}: {what} ({head})"));
    let (count, expected) = head.split_once(' ').ok_or_else(|| invalid("not '<chunks> <digest>'"))?;
    let count: usize = count.parse().map_err(|_| invalid("bad chunk count"))?;
    let mut encoded = Vec::new();
    for index in 0..count {
        let chunk = store.get(&chunk_key(request_id, index)).await?.ok_or_else(|| invalid("a chunk is missing"))?;
        encoded.extend_from_slice(&chunk.value);
    }
    if digest(&encoded) != expected {
        return Err(invalid("chunks do not match the digest"));
    }
    let mut events = Vec::new();
    let mut rest = encoded.as_slice();
    while !rest.is_empty() {
        let event = StatusEvent::decode_length_delimited(&mut rest).map_err(|e| invalid(&e.to_string()))?;
        events.push(event);
    }
    Ok(Some(events))
}
