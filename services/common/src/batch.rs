//! Batched status checks: every task of a process waiting on a resource in the same account
//! and region is answered by one Describe call by ids, instead of one call per task.
//!
//! A caller asks for one id; the first caller of a group opens a batch that collects ids for a
//! short window (or until the API's page size is reached), then one fetch answers them all.
//! Ids the fetch did not return come back as `None` (the resource does not exist, or not yet).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::aws::AwsError;

type Answer<V> = Result<Option<V>, AwsError>;
type Fetched<V> = Pin<Box<dyn Future<Output = Result<HashMap<String, V>, AwsError>> + Send>>;
type Fetch<C, V> = dyn Fn(C, Vec<String>) -> Fetched<V> + Send + Sync;

struct Open<C, V> {
    batch: u64,
    context: C,
    waiters: HashMap<String, Vec<oneshot::Sender<Answer<V>>>>,
}

/// Coalesces lookups by id per group (account and region) into batched fetches.
pub struct Batcher<C, V> {
    window: Duration,
    max_ids: usize,
    fetch: Arc<Fetch<C, V>>,
    open: Arc<Mutex<HashMap<String, Open<C, V>>>>,
    batches: std::sync::atomic::AtomicU64,
}

impl<C, V> Batcher<C, V>
where
    C: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    /// `fetch(context, ids)` describes up to `max_ids` resources in one call and returns those
    /// found by id. `context` is the group's client, as the batch's first caller gave it.
    pub fn new<F, Fut>(window: Duration, max_ids: usize, fetch: F) -> Self
    where
        F: Fn(C, Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<String, V>, AwsError>> + Send + 'static,
    {
        let fetch: Arc<Fetch<C, V>> = Arc::new(move |context, ids| Box::pin(fetch(context, ids)));
        Self { window, max_ids: max_ids.max(1), fetch, open: Arc::default(), batches: Default::default() }
    }

    /// The resource `id` of `group`, from the next batch of that group.
    pub async fn get(&self, group: &str, context: C, id: &str) -> Answer<V> {
        let (sender, receiver) = oneshot::channel();
        let full = {
            let mut open = self.open.lock().expect("batcher lock");
            let batch = match open.get_mut(group) {
                Some(batch) => batch,
                None => {
                    let number = self.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    open.insert(group.to_string(), Open { batch: number, context, waiters: HashMap::new() });
                    self.flush_later(group.to_string(), number);
                    open.get_mut(group).expect("just inserted")
                }
            };
            batch.waiters.entry(id.to_string()).or_default().push(sender);
            (batch.waiters.len() >= self.max_ids).then(|| open.remove(group)).flatten()
        };
        if let Some(batch) = full {
            tokio::spawn(flush(self.fetch.clone(), batch));
        }
        receiver.await.unwrap_or_else(|_| {
            Err(AwsError::retryable("batch", "BatchDropped", "the batched status check did not answer"))
        })
    }

    fn flush_later(&self, group: String, number: u64) {
        let (open, fetch, window) = (self.open.clone(), self.fetch.clone(), self.window);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            let batch = {
                let mut open = open.lock().expect("batcher lock");
                match open.get(&group) {
                    Some(batch) if batch.batch == number => open.remove(&group),
                    _ => None,
                }
            };
            if let Some(batch) = batch {
                flush(fetch, batch).await;
            }
        });
    }
}

async fn flush<C, V: Clone>(fetch: Arc<Fetch<C, V>>, batch: Open<C, V>) {
    let ids: Vec<String> = batch.waiters.keys().cloned().collect();
    let answer = fetch(batch.context, ids).await;
    for (id, waiters) in batch.waiters {
        for waiter in waiters {
            let _ = waiter.send(match &answer {
                Ok(found) => Ok(found.get(&id).cloned()),
                Err(e) => Err(e.clone()),
            });
        }
    }
}

/// One page of a Describe call: the resources it returned, by id, and the token of the next
/// page (`None` or empty when it was the last).
pub type Page<V> = (Vec<(String, V)>, Option<String>);

/// Reads a paged Describe to the end: `page(token)` fetches one page (taking its quota token
/// first), starting without a token. For the fetch of a [`Batcher`].
pub async fn all_pages<V, P, Fut>(mut page: P) -> Result<HashMap<String, V>, AwsError>
where
    P: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<V>, AwsError>>,
{
    let mut found = HashMap::new();
    let mut token = None;
    loop {
        let (items, next) = page(token).await?;
        found.extend(items);
        token = next.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(found);
        }
    }
}
