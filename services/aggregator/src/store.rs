//! Durable request state, safe with several aggregator replicas.
//!
//! A request is one request record (summary with counts, [`StoredRequest`]), one record per
//! task and one per recorded event. Every change is a conditional write of the request record
//! that also names the task and event writes completing it (`pending`); those are applied right
//! after, and again by whoever changes the request next. So replicas take turns per request
//! (the loser of a conditional write reloads and re-applies the event), a task's phase never
//! moves back, counts always match the tasks, and a replica dying between its writes loses
//! nothing. The protocol needs only per-record compare-and-set ([`Records`]), which both the
//! JetStream KV bucket ([`KvRecords`]) and DynamoDB ([`crate::dynamo::DynamoRecords`]) offer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::push, consumer::DeliverPolicy, kv};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use lifeboat_common::bus::{BusError, Result};
use lifeboat_common::restore::HEARTBEAT;
use lifeboat_common::subjects;
use lifeboat_proto::{
    PendingChange, RecordedEvent, RequestPage, RequestSummary, StatusEvent, StoredRequest, TaskState, Verdict,
};
use prost::Message;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::state::{repeats, sort_tasks, RequestState};

/// Requests are forgotten this long after their last change.
pub const STATE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Conditional writes lost to other replicas, counted per retry.
pub const STORE_CONFLICTS: &str = "lifeboat_store_conflicts_total";
/// How long one call keeps retrying lost conditional writes before it gives the event back
/// (the consumer redelivers it later): a delivery is never held for ever, and an event is
/// never acked unrecorded however many writes it loses.
const CONFLICT_BUDGET: Duration = Duration::from_secs(10);
/// The wait after the first lost write; it doubles up to [`MAX_CONFLICT_WAIT`], with jitter so
/// that replicas that lost together do not retry together.
const FIRST_CONFLICT_WAIT: Duration = Duration::from_millis(2);
const MAX_CONFLICT_WAIT: Duration = Duration::from_millis(200);
/// Local writers are serialised per request over this many locks, so one process does not
/// race itself; other replicas are handled by the conditional writes.
const LOCK_STRIPES: usize = 64;

/// `delay` spread over its upper half, so that waiters that started together wake apart.
pub fn jittered(delay: Duration) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let mixed = (u64::from(nanos) ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let half = delay / 2;
    half + Duration::from_nanos((mixed >> 11) % (half.as_nanos() as u64 + 1))
}

/// One record of a request.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    Request(&'a str),
    Task(&'a str, &'a str),
    Event(&'a str, u64),
}

/// A stored value and its version (increasing with every write; 0 means "no record").
#[derive(Clone, Debug)]
pub struct Versioned {
    pub value: Bytes,
    pub version: u64,
}

/// Event records pushed as they are written, from [`Records::watch_events`].
pub type EventRecords = BoxStream<'static, Result<Bytes>>;

/// Records with compare-and-set writes: what the store protocol needs from a database.
#[async_trait]
pub trait Records: Send + Sync + 'static {
    async fn get(&self, key: Key<'_>) -> Result<Option<Versioned>>;
    /// Writes if the record's version is `expected` (0: there is no record). `None` when
    /// another writer got there first.
    async fn put_if(&self, key: Key<'_>, value: Bytes, expected: u64) -> Result<Option<u64>>;
    /// Writes unless the record exists: for records everyone writes with the same value (an
    /// event at its sequence), so that completing a change again writes nothing, and a watch
    /// sees each record once.
    async fn put(&self, key: Key<'_>, value: Bytes) -> Result<()>;
    /// Every task record of a request.
    async fn tasks(&self, request_id: &str) -> Result<Vec<Bytes>>;
    /// The event records of a request with a sequence above `after`, in any order.
    async fn events(&self, request_id: &str, after: u64) -> Result<Vec<Bytes>>;
    /// The event records of a request with a sequence above `after`, then each one as it is
    /// written, for as long as the stream is held (readers still drop a record they have, in
    /// case a database repeats one). `None` where the database does not push writes:
    /// followers then query [`Records::events`] after their last event again, which costs as
    /// much as the new records where that is a key-range query (DynamoDB).
    async fn watch_events(&self, _request_id: &str, _after: u64) -> Result<Option<EventRecords>> {
        Ok(None)
    }
    /// Request records, newest first, from after the cursor; and the next page's cursor.
    async fn requests(&self, limit: usize, after: Option<&str>) -> Result<(Vec<Bytes>, Option<String>)>;
}

/// How requests are ordered in listings: by start time, then id; the page cursor.
pub fn listing_key(summary: &RequestSummary) -> String {
    let started = summary.started_at.unwrap_or_default();
    format!("{:012}.{:09}~{}", started.seconds.max(0), started.nanos.max(0), summary.request_id)
}

fn store_error(e: impl std::fmt::Display) -> BusError {
    BusError::Store(e.to_string())
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(store_error)
}

/// What recording an event changed.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The request after the event (no tasks).
    pub summary: RequestSummary,
    pub event: RecordedEvent,
    /// The task the event moved forward, and what it was before.
    pub task: Option<TaskState>,
    pub previous: Option<TaskState>,
}

/// The aggregator's state over any [`Records`].
#[derive(Clone)]
pub struct Store {
    records: Arc<dyn Records>,
    locks: Arc<Vec<Mutex<()>>>,
    /// How old a task's stored report time may get before a repeated re-check refreshes it.
    refresh_after: Duration,
}

impl Store {
    pub fn new(records: Arc<dyn Records>) -> Self {
        Self { records, locks: Arc::new((0..LOCK_STRIPES).map(|_| Mutex::new(())).collect()), refresh_after: HEARTBEAT }
    }

    /// Sets how old a task's report time may get before a re-check that changes nothing
    /// refreshes it: below the stall deadline, so that a task still being re-checked is never
    /// taken for stalled.
    pub fn refreshing_after(mut self, refresh_after: Duration) -> Self {
        self.refresh_after = refresh_after;
        self
    }

    fn lock_of(&self, request_id: &str) -> &Mutex<()> {
        let hash = request_id.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.locks[hash % self.locks.len()]
    }

    async fn request(&self, request_id: &str) -> Result<Option<(StoredRequest, u64)>> {
        match self.records.get(Key::Request(request_id)).await? {
            Some(stored) => Ok(Some((decode(&stored.value)?, stored.version))),
            None => Ok(None),
        }
    }

    /// Folds one event into its request. `None` if the event changed nothing (a duplicate, a
    /// late arrival, a repeated plan, a re-check that says what the last one said).
    pub async fn record(&self, event: &StatusEvent) -> Result<Option<Recorded>> {
        self.record_if(event, |_, _| true).await
    }

    /// [`Store::record`], if `still` holds for the request and the event's task as stored when
    /// the write is made: the stall sweep's compare-and-set, so that a task that reported
    /// after the sweep read it is not ended.
    pub async fn record_if(
        &self,
        event: &StatusEvent,
        still: impl Fn(&RequestState, Option<&TaskState>) -> bool,
    ) -> Result<Option<Recorded>> {
        let request_id = event.request_id.as_str();
        let _local = self.lock_of(request_id).lock().await;
        let started = tokio::time::Instant::now();
        let mut conflicts = 0u32;
        loop {
            let (stored, version) = match self.request(request_id).await? {
                Some(found) => found,
                None => (StoredRequest::default(), 0),
            };
            if let Some(pending) = &stored.pending {
                self.complete(request_id, pending).await?;
            }
            let known = match (&event.detail, event.task_id.as_str()) {
                (None, task_id) if !task_id.is_empty() => self.records.get(Key::Task(request_id, task_id)).await?,
                _ => None,
            };
            let known_task: Option<TaskState> = known.as_ref().map(|k| decode(&k.value)).transpose()?;
            let mut state =
                if version == 0 { RequestState::new(request_id) } else { RequestState::from_stored(&stored) };
            if !still(&state, known_task.as_ref()) {
                return Ok(None);
            }
            let change = state.apply(event, known_task.as_ref());
            if !change.any() {
                return Ok(None);
            }
            // A re-check that repeats the stored task only keeps the task's report time fresh
            // (for the stall sweep), and only once that time is old: no event is logged.
            let repeat = change.task.as_ref().zip(known_task.as_ref()).is_some_and(|(new, old)| repeats(new, old));
            if repeat && !self.is_stale(known_task.as_ref()) {
                return Ok(None);
            }
            let sequence = if repeat { stored.sequence } else { stored.sequence + 1 };
            let recorded = RecordedEvent { sequence, event: Some(event.clone()) };
            let pending = PendingChange {
                task: change.task.clone(),
                task_version: known.map(|k| k.version).unwrap_or(0),
                event: (!repeat).then(|| recorded.clone()),
            };
            let next = state.to_stored(sequence, pending.clone());
            if self.records.put_if(Key::Request(request_id), next.encode_to_vec().into(), version).await?.is_some() {
                self.complete(request_id, &pending).await?;
                if repeat {
                    return Ok(None);
                }
                let summary = state.summary();
                return Ok(Some(Recorded { summary, event: recorded, task: change.task, previous: known_task }));
            }
            // Another replica changed the request first: re-read and apply the event to that.
            conflicts += 1;
            metrics::counter!(STORE_CONFLICTS).increment(1);
            debug!(request_id, conflicts, "conditional write lost to another writer; retrying");
            if started.elapsed() >= CONFLICT_BUDGET {
                warn!(request_id, conflicts, "conditional writes keep losing; the event goes back for a later retry");
                return Err(BusError::Store(format!(
                    "request {request_id}: {conflicts} conflicting writes in {CONFLICT_BUDGET:?}"
                )));
            }
            let wait = lifeboat_common::aws::backoff(conflicts, FIRST_CONFLICT_WAIT, MAX_CONFLICT_WAIT);
            tokio::time::sleep(jittered(wait)).await;
        }
    }

    /// Whether a task's last stored report is older than the refresh age (or it has none).
    fn is_stale(&self, task: Option<&TaskState>) -> bool {
        let reported = task.and_then(|t| t.updated_at).map(|at| at.seconds).unwrap_or(0);
        let now = lifeboat_common::time::unix_now() as i64;
        now.saturating_sub(reported) >= self.refresh_after.as_secs() as i64
    }

    /// Applies the writes a request record announced. Idempotent: a task write that finds a
    /// newer version was already applied (task writes of a request happen in the order of its
    /// request record's versions).
    async fn complete(&self, request_id: &str, pending: &PendingChange) -> Result<()> {
        if let Some(task) = &pending.task {
            let key = Key::Task(request_id, &task.task_id);
            self.records.put_if(key, task.encode_to_vec().into(), pending.task_version).await?;
        }
        if let Some(event) = &pending.event {
            self.records.put(Key::Event(request_id, event.sequence), event.encode_to_vec().into()).await?;
        }
        Ok(())
    }

    /// The request's summary (no tasks) and the sequence of its last recorded event.
    pub async fn head(&self, request_id: &str) -> Result<Option<(RequestSummary, u64)>> {
        Ok(self
            .request(request_id)
            .await?
            .map(|(stored, _)| (RequestState::from_stored(&stored).summary(), stored.sequence)))
    }

    /// The request's summary, with up to `max_tasks` tasks (sorted by set and source), without
    /// the task bodies kept for retries.
    pub async fn summary(&self, request_id: &str, max_tasks: usize) -> Result<Option<RequestSummary>> {
        let Some((stored, _)) = self.request(request_id).await? else {
            return Ok(None);
        };
        let mut summary = RequestState::from_stored(&stored).summary();
        if max_tasks > 0 {
            let mut tasks = self.tasks_of(request_id, &stored).await?;
            tasks.iter_mut().for_each(|t| t.task = None);
            summary.tasks_truncated = tasks.len() > max_tasks;
            tasks.truncate(max_tasks);
            summary.tasks = tasks;
        }
        Ok(Some(summary))
    }

    /// The request's summary (no tasks) and every task with the RestoreTask it was queued with.
    pub async fn tasks(&self, request_id: &str) -> Result<Option<(RequestSummary, Vec<TaskState>)>> {
        let Some((stored, _)) = self.request(request_id).await? else {
            return Ok(None);
        };
        let tasks = self.tasks_of(request_id, &stored).await?;
        Ok(Some((RequestState::from_stored(&stored).summary(), tasks)))
    }

    async fn tasks_of(&self, request_id: &str, stored: &StoredRequest) -> Result<Vec<TaskState>> {
        let mut tasks = self
            .records
            .tasks(request_id)
            .await?
            .iter()
            .map(|bytes| decode::<TaskState>(bytes))
            .collect::<Result<Vec<_>>>()?;
        // The last change may not have reached its task record yet (its writer died).
        if let Some(pending) = stored.pending.as_ref().and_then(|p| p.task.as_ref()) {
            tasks.retain(|t| t.task_id != pending.task_id);
            tasks.push(pending.clone());
        }
        sort_tasks(&mut tasks);
        Ok(tasks)
    }

    /// The request's recorded events after sequence `after`, in order, with no gaps: an
    /// event whose record is not written yet ends the list, to be picked up by the next call.
    pub async fn events(&self, request_id: &str, after: u64) -> Result<Vec<RecordedEvent>> {
        let mut events = self
            .records
            .events(request_id, after)
            .await?
            .iter()
            .map(|b| decode::<RecordedEvent>(b))
            .collect::<Result<Vec<_>>>()?;
        if let Some((stored, _)) = self.request(request_id).await? {
            if let Some(event) = stored.pending.and_then(|p| p.event) {
                if event.sequence > after && !events.iter().any(|e| e.sequence == event.sequence) {
                    events.push(event);
                }
            }
        }
        events.sort_by_key(|e| e.sequence);
        let mut expected = after + 1;
        let gapless = events
            .into_iter()
            .take_while(|e| {
                let next = e.sequence == expected;
                expected += 1;
                next
            })
            .collect();
        Ok(gapless)
    }

    /// The request's event log from after sequence `after`, for one follower to read as it
    /// grows ([`EventLog::read`]).
    pub async fn follow(&self, request_id: &str, after: u64) -> Result<EventLog> {
        let watch = self.records.watch_events(request_id, after).await?;
        Ok(EventLog { store: self.clone(), request_id: request_id.to_string(), after, watch, ahead: BTreeMap::new() })
    }

    /// Requests, newest first, `limit` per page; with a filter, only those with that verdict
    /// (reading on through the store until the page is full or the store ends).
    pub async fn list(&self, limit: usize, after: Option<&str>, verdict: Option<Verdict>) -> Result<RequestPage> {
        let limit = limit.clamp(1, 1000);
        let mut requests = Vec::new();
        let mut cursor = after.map(str::to_string);
        loop {
            let (records, next) = self.records.requests(limit, cursor.as_deref()).await?;
            for (i, bytes) in records.iter().enumerate() {
                let summary = RequestState::from_stored(&decode::<StoredRequest>(bytes)?).summary();
                let key = listing_key(&summary);
                if verdict.is_none_or(|v| summary.verdict == v as i32) {
                    requests.push(summary);
                    if requests.len() == limit {
                        // More may follow: the caller asks again from here.
                        let more = next.is_some() || i + 1 < records.len();
                        return Ok(RequestPage { requests, next: if more { key } else { String::new() } });
                    }
                }
            }
            if next.is_none() || records.is_empty() {
                return Ok(RequestPage { requests, next: String::new() });
            }
            cursor = next;
        }
    }
}

/// One follower's reading of a request's event log while the request runs, with the order of
/// [`Store::events`] (by sequence, no gaps, the request record's pending event counts) and
/// each event handed out once. Where the records push their writes (a KV watch) every event
/// record is read once however long the log gets; elsewhere each read queries the records
/// after the last event handed out.
pub struct EventLog {
    store: Store,
    request_id: String,
    /// The sequence of the last event handed out.
    after: u64,
    watch: Option<EventRecords>,
    /// Events that arrived before one whose record is not written yet, kept until it is.
    ahead: BTreeMap<u64, RecordedEvent>,
}

/// Keeps an event for the reader of a log that has handed out every event up to `after`.
fn keep_ahead(ahead: &mut BTreeMap<u64, RecordedEvent>, after: u64, event: RecordedEvent) {
    if event.sequence > after {
        ahead.insert(event.sequence, event);
    }
}

impl EventLog {
    /// Whether new event records are pushed ([`EventLog::arrival`]); if not, the reader polls.
    pub fn is_pushed(&self) -> bool {
        self.watch.is_some()
    }

    /// The sequence of the last event handed out.
    pub fn last_sequence(&self) -> u64 {
        self.after
    }

    /// Waits for the next pushed event record and keeps it for [`EventLog::read`]; never
    /// returns for a log that is not pushed. Safe to cancel: a record received is kept.
    pub async fn arrival(&mut self) -> Result<()> {
        let Some(watch) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        match watch.next().await {
            Some(record) => {
                keep_ahead(&mut self.ahead, self.after, decode(&record?)?);
                Ok(())
            }
            None => Err(BusError::Store(format!("request {}: the event watch ended", self.request_id))),
        }
    }

    /// The events recorded after the ones already handed out, in order and without gaps (an
    /// event whose record is not written yet ends them, until it is), and the request's
    /// summary (no tasks) with the sequence of its last recorded event. Reads the request
    /// record once, and event records only if they are not pushed.
    pub async fn read(&mut self) -> Result<(Vec<RecordedEvent>, Option<(RequestSummary, u64)>)> {
        match self.watch.as_mut() {
            Some(watch) => {
                // What has arrived already; later records wake the reader through `arrival`.
                while let Some(received) = watch.next().now_or_never() {
                    let Some(record) = received else {
                        return Err(BusError::Store(format!("request {}: the event watch ended", self.request_id)));
                    };
                    keep_ahead(&mut self.ahead, self.after, decode(&record?)?);
                }
            }
            None => {
                for record in self.store.records.events(&self.request_id, self.after).await? {
                    keep_ahead(&mut self.ahead, self.after, decode(&record)?);
                }
            }
        }
        let head = match self.store.request(&self.request_id).await? {
            Some((stored, _)) => {
                if let Some(event) = stored.pending.as_ref().and_then(|p| p.event.clone()) {
                    keep_ahead(&mut self.ahead, self.after, event);
                }
                Some((RequestState::from_stored(&stored).summary(), stored.sequence))
            }
            None => None,
        };
        let mut events = Vec::new();
        while let Some(event) = self.ahead.remove(&(self.after + 1)) {
            self.after = event.sequence;
            events.push(event);
        }
        Ok((events, head))
    }
}

/// [`Records`] in a JetStream KV bucket: keys `<request>.request`, `<request>.task.<task>` and
/// `<request>.event.<sequence>`; versions are KV revisions.
pub struct KvRecords {
    client: async_nats::Client,
    store: kv::Store,
}

impl KvRecords {
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

    fn key(key: Key<'_>) -> String {
        match key {
            Key::Request(request) => format!("{request}.request"),
            Key::Task(request, task) => format!("{request}.task.{task}"),
            Key::Event(request, sequence) => format!("{request}.event.{sequence:012}"),
        }
    }

    /// The latest value of every key matching `filter` (a key pattern with wildcards), read
    /// through an ordered consumer, as `kv.keys()` does.
    async fn latest(&self, filter: &str) -> Result<Vec<Bytes>> {
        let consumer = self
            .store
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{}{filter}", self.store.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(store_error)?;
        let mut values = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(values);
        }
        let mut messages = consumer.messages().await.map_err(store_error)?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(store_error)?;
            let pending = message.info().map_err(store_error)?.pending;
            let deleted = message.headers.as_ref().and_then(|h| h.get("KV-Operation")).is_some();
            if !deleted {
                values.push(message.payload.clone());
            }
            if pending == 0 {
                break;
            }
        }
        Ok(values)
    }
}

#[async_trait]
impl Records for KvRecords {
    async fn get(&self, key: Key<'_>) -> Result<Option<Versioned>> {
        let entry = self.store.entry(Self::key(key)).await.map_err(store_error)?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| Versioned { value: e.value, version: e.revision }))
    }

    async fn put_if(&self, key: Key<'_>, value: Bytes, expected: u64) -> Result<Option<u64>> {
        let key = Self::key(key);
        if expected == 0 {
            return match self.store.create(&key, value).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(store_error(e)),
            };
        }
        match self.store.update(&key, value, expected).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn put(&self, key: Key<'_>, value: Bytes) -> Result<()> {
        match self.store.create(Self::key(key), value).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn tasks(&self, request_id: &str) -> Result<Vec<Bytes>> {
        self.latest(&format!("{request_id}.task.>")).await
    }

    async fn events(&self, request_id: &str, after: u64) -> Result<Vec<Bytes>> {
        // Event keys sort as numbers; a bucket stream is read whole either way.
        let all = self.latest(&format!("{request_id}.event.>")).await?;
        Ok(all
            .into_iter()
            .filter(|bytes| RecordedEvent::decode(bytes.as_ref()).map(|e| e.sequence > after).unwrap_or(true))
            .collect())
    }

    async fn watch_events(&self, request_id: &str, after: u64) -> Result<Option<EventRecords>> {
        // Keys cannot be filtered by number, so the watch starts at the request's first event
        // and drops those up to `after`: a resumed follower reads the earlier records once too.
        let watch = self.store.watch_with_history(format!("{request_id}.event.>")).await.map_err(store_error)?;
        let records = watch.filter_map(move |entry| async move {
            match entry {
                Err(e) => Some(Err(store_error(e))),
                Ok(entry) if entry.operation != kv::Operation::Put => None,
                Ok(entry) => {
                    let later = RecordedEvent::decode(entry.value.as_ref()).map(|e| e.sequence > after).unwrap_or(true);
                    later.then_some(Ok(entry.value))
                }
            }
        });
        Ok(Some(records.boxed()))
    }

    async fn requests(&self, limit: usize, after: Option<&str>) -> Result<(Vec<Bytes>, Option<String>)> {
        let mut listed = Vec::new();
        for bytes in self.latest("*.request").await? {
            let stored: StoredRequest = decode(&bytes)?;
            let key = listing_key(&stored.summary.unwrap_or_default());
            if after.is_none_or(|after| key.as_str() < after) {
                listed.push((key, bytes));
            }
        }
        listed.sort_by(|a, b| b.0.cmp(&a.0));
        let next = (listed.len() > limit).then(|| listed[limit - 1].0.clone());
        Ok((listed.into_iter().take(limit).map(|(_, bytes)| bytes).collect(), next))
    }
}
