//! The [`Bus`] over NATS JetStream: work-queue streams for requests and work, a limits stream
//! for events, durable pull consumers, `Nats-Msg-Id` dedupe and delayed naks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use async_trait::async_trait;
use futures::StreamExt;
use tracing::Instrument;

use crate::bus::{Bus, BusError, Delivery, OutgoingMessage, Queue, QueueOptions, Result, Settle, WorkSource};
use crate::{subjects, trace_context};

/// Publishes awaiting their storage acknowledgement at once in [`Bus::publish_all`].
const MAX_PUBLISHES_IN_FLIGHT: usize = 512;
/// Messages fetched per pull request; small so that fetched-but-waiting messages do not run
/// out their ack deadline in the client's buffer.
const PULL_BATCH: usize = 32;

/// How to reach NATS beyond its URL: credentials, TLS and the replication of what Lifeboat
/// creates. Read from the environment variables the `nats` CLI uses, so one set of settings
/// serves both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsSettings {
    /// `NATS_USER` and `NATS_PASSWORD`.
    pub user_password: Option<(String, String)>,
    /// `NATS_TOKEN`.
    pub token: Option<String>,
    /// `NATS_NKEY`: an nkey seed (`SU...`).
    pub nkey_seed: Option<String>,
    /// `NATS_CREDS`: a credentials file (JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// `NATS_CA`: CA certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// `NATS_CERT` and `NATS_KEY`: a client certificate and its key (PEM), for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// `NATS_TLS_REQUIRED=true`: refuse a connection without TLS (also implied by a `tls://` URL).
    pub require_tls: bool,
    /// `LIFEBOAT_NATS_REPLICAS`: replicas of every stream and bucket Lifeboat creates (1 on a
    /// single server, 3 in a cluster). Existing streams are updated to it.
    pub replicas: usize,
}

impl NatsSettings {
    pub fn from_env() -> std::result::Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let user_password = match (var("NATS_USER"), var("NATS_PASSWORD")) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => return Err("NATS_USER and NATS_PASSWORD must be given together".into()),
        };
        let client_cert = match (var("NATS_CERT"), var("NATS_KEY")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => return Err("NATS_CERT and NATS_KEY must be given together".into()),
        };
        let replicas = match var("LIFEBOAT_NATS_REPLICAS") {
            Some(value) => match value.parse::<usize>() {
                Ok(n @ 1..=5) => n,
                _ => return Err(format!("LIFEBOAT_NATS_REPLICAS: `{value}` is not 1 to 5")),
            },
            None => 1,
        };
        Ok(Self {
            user_password,
            token: var("NATS_TOKEN"),
            nkey_seed: var("NATS_NKEY"),
            creds_file: var("NATS_CREDS").map(PathBuf::from),
            ca_file: var("NATS_CA").map(PathBuf::from),
            client_cert,
            require_tls: var("NATS_TLS_REQUIRED").is_some_and(|v| v == "true" || v == "1"),
            replicas,
        })
    }

    async fn connect_options(&self) -> std::io::Result<async_nats::ConnectOptions> {
        let mut options = match &self.creds_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path).await?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.clone());
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.require_tls).name("lifeboat"))
    }
}

#[derive(Clone)]
pub struct JetStreamBus {
    client: async_nats::Client,
    context: jetstream::Context,
    replicas: usize,
    /// The bucket of cancelled requests, opened (or created) on first use.
    cancellations: std::sync::Arc<tokio::sync::OnceCell<jetstream::kv::Store>>,
    shared: std::sync::Arc<crate::shared::KvShared>,
}

impl JetStreamBus {
    /// Connects with the settings of the environment ([`NatsSettings::from_env`]) and makes
    /// sure every stream exists as configured.
    pub async fn connect(url: &str) -> Result<Self> {
        let settings =
            NatsSettings::from_env().map_err(|message| BusError::Connect { url: url.to_string(), message })?;
        Self::connect_with(url, &settings).await
    }

    pub async fn connect_with(url: &str, settings: &NatsSettings) -> Result<Self> {
        let failed = |message: String| BusError::Connect { url: url.to_string(), message };
        let options = settings.connect_options().await.map_err(|e| failed(format!("NATS_CREDS: {e}")))?;
        let client = options.connect(url).await.map_err(|e| failed(e.to_string()))?;
        Self::with_replicas(client, settings.replicas.max(1)).await
    }

    pub async fn from_client(client: async_nats::Client) -> Result<Self> {
        Self::with_replicas(client, 1).await
    }

    async fn with_replicas(client: async_nats::Client, replicas: usize) -> Result<Self> {
        let context = jetstream::new(client.clone());
        let shared = std::sync::Arc::new(crate::shared::KvShared::new(context.clone(), replicas));
        let bus = Self { client, context, replicas, cancellations: Default::default(), shared };
        bus.ensure_streams().await?;
        Ok(bus)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// Creates the streams if they are missing, and updates those whose configuration differs
    /// (replicas, subjects, ages) to Lifeboat's. Idempotent; safe from every service.
    pub async fn ensure_streams(&self) -> Result<()> {
        let stream = |name: &str, subject: String, retention, max_age, max_messages_per_subject| stream::Config {
            name: name.to_string(),
            subjects: vec![subject],
            retention,
            max_age,
            max_messages_per_subject,
            storage: stream::StorageType::File,
            duplicate_window: subjects::DUPLICATE_WINDOW,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let (work_queue, limits) = (stream::RetentionPolicy::WorkQueue, stream::RetentionPolicy::Limits);
        let streams = [
            stream(subjects::REQUESTS_STREAM, subjects::RESTORE_REQUESTS.to_string(), work_queue, Duration::ZERO, -1),
            stream(subjects::WORK_STREAM, format!("{}.>", subjects::WORK_PREFIX), work_queue, Duration::ZERO, -1),
            // Every status event is kept: it is the audit trail of a restore.
            stream(
                subjects::EVENTS_STREAM,
                format!("{}.>", subjects::STATUS_PREFIX),
                limits,
                subjects::EVENTS_MAX_AGE,
                -1,
            ),
            // Only the latest summary of each request is worth keeping.
            stream(
                subjects::SUMMARIES_STREAM,
                format!("{}.>", subjects::SUMMARY_PREFIX),
                limits,
                subjects::EVENTS_MAX_AGE,
                1,
            ),
            stream(
                subjects::DEADLETTER_STREAM,
                format!("{}.>", subjects::DEADLETTER_PREFIX),
                limits,
                subjects::EVENTS_MAX_AGE * 2,
                -1,
            ),
        ];
        for config in streams {
            let name = config.name.clone();
            self.context
                .create_or_update_stream(config)
                .await
                .map_err(|e| BusError::Setup { what: format!("stream {name}"), message: e.to_string() })?;
        }
        Ok(())
    }

    async fn cancellations(&self) -> Result<&jetstream::kv::Store> {
        self.cancellations
            .get_or_try_init(|| async {
                if let Ok(store) = self.context.get_key_value(subjects::CANCELLATIONS_BUCKET).await {
                    return Ok(store);
                }
                self.context
                    .create_key_value(jetstream::kv::Config {
                        bucket: subjects::CANCELLATIONS_BUCKET.to_string(),
                        description: "Lifeboat: cancelled restore requests".to_string(),
                        history: 1,
                        max_age: subjects::CANCELLATIONS_MAX_AGE,
                        storage: stream::StorageType::File,
                        num_replicas: self.replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| BusError::Setup { what: "the cancellations bucket".into(), message: e.to_string() })
            })
            .await
    }

    fn stream_of(queue: &Queue) -> &'static str {
        match queue {
            Queue::Requests => subjects::REQUESTS_STREAM,
            Queue::Work(_) => subjects::WORK_STREAM,
            Queue::StatusEvents => subjects::EVENTS_STREAM,
        }
    }

    async fn send(&self, message: OutgoingMessage) -> Result<jetstream::context::PublishAckFuture> {
        let mut publish = jetstream::message::PublishMessage::build().payload(message.payload);
        if let Some(id) = &message.dedupe_id {
            publish = publish.message_id(id);
        }
        for (name, value) in &message.headers {
            publish = publish.header(name.as_str(), value.as_str());
        }
        self.context
            .send_publish(message.subject.clone(), publish)
            .await
            .map_err(|e| BusError::Publish { subject: message.subject, message: e.to_string() })
    }

    /// Publishes awaiting at most [`MAX_PUBLISHES_IN_FLIGHT`] storage acknowledgements at once.
    async fn publish_pipelined(&self, messages: Vec<OutgoingMessage>) -> Result<()> {
        let mut in_flight = futures::stream::FuturesOrdered::new();
        for message in messages {
            if in_flight.len() >= MAX_PUBLISHES_IN_FLIGHT {
                if let Some(stored) = in_flight.next().await {
                    stored?;
                }
            }
            let subject = message.subject.clone();
            let ack = self.send(message).await?;
            in_flight.push_back(async move {
                ack.await.map(|_| ()).map_err(|e| BusError::Publish { subject, message: e.to_string() })
            });
        }
        while let Some(stored) = in_flight.next().await {
            stored?;
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for JetStreamBus {
    async fn publish(&self, mut message: OutgoingMessage) -> Result<()> {
        let span = trace_context::publish_span(trace_context::SYSTEM_NATS, std::slice::from_mut(&mut message));
        let subject = message.subject.clone();
        let published = async {
            self.send(message).await?.await.map_err(|e| BusError::Publish { subject, message: e.to_string() })?;
            Ok(())
        }
        .instrument(span.clone())
        .await;
        trace_context::record_result(&span, &published);
        published
    }

    async fn publish_all(&self, mut messages: Vec<OutgoingMessage>) -> Result<()> {
        let span = trace_context::publish_span(trace_context::SYSTEM_NATS, &mut messages);
        let published = self.publish_pipelined(messages).instrument(span.clone()).await;
        trace_context::record_result(&span, &published);
        published
    }

    async fn notify(&self, message: OutgoingMessage) -> Result<()> {
        self.publish(message).await
    }

    fn messaging_system(&self) -> &'static str {
        trace_context::SYSTEM_NATS
    }

    fn shared(&self) -> std::sync::Arc<dyn crate::shared::SharedStore> {
        self.shared.clone()
    }

    async fn set_cancelled(&self, request_id: &str, cancelled: bool) -> Result<()> {
        let bucket = self.cancellations().await?;
        let failed = |e: &dyn std::fmt::Display| BusError::Store(format!("cancellation of {request_id}: {e}"));
        if cancelled {
            bucket.put(request_id, bytes::Bytes::from_static(b"cancelled")).await.map_err(|e| failed(&e))?;
        } else {
            bucket.delete(request_id).await.map_err(|e| failed(&e))?;
        }
        Ok(())
    }

    async fn is_cancelled(&self, request_id: &str) -> Result<bool> {
        let entry = self
            .cancellations()
            .await?
            .entry(request_id)
            .await
            .map_err(|e| BusError::Store(format!("cancellation of {request_id}: {e}")))?;
        Ok(entry.is_some_and(|e| e.operation == jetstream::kv::Operation::Put))
    }

    async fn consume(&self, queue: &Queue, options: &QueueOptions) -> Result<Box<dyn WorkSource>> {
        let name = queue.consumer_name();
        let setup =
            |e: &dyn std::fmt::Display| BusError::Setup { what: format!("consumer {name}"), message: e.to_string() };
        let stream = self.context.get_stream(Self::stream_of(queue)).await.map_err(|e| setup(&e))?;
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: queue.filter_subject(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            // Lifeboat's consumer loop bounds deliveries itself and dead-letters.
            max_deliver: -1,
            max_ack_pending: options.max_ack_pending,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let messages = open_messages(&stream, &config).await.map_err(|e| setup(&e))?;
        Ok(Box::new(JetStreamSource { stream, config, messages }))
    }
}

/// Creates the durable consumer, or updates it when its configuration differs (a new ack
/// wait, say), and starts pulling from it.
async fn open_messages(stream: &stream::Stream, config: &pull::Config) -> std::result::Result<pull::Stream, String> {
    let consumer: jetstream::consumer::Consumer<pull::Config> =
        stream.create_consumer(config.clone()).await.map_err(|e| e.to_string())?;
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| e.to_string())
}

struct JetStreamSource {
    stream: stream::Stream,
    config: pull::Config,
    messages: pull::Stream,
}

impl JetStreamSource {
    /// After a pull error (the consumer deleted, heartbeats missed while the server restarted):
    /// the consumer is created again as configured and pulling resumes. Unacknowledged messages
    /// stay in the work-queue stream, so nothing is lost.
    async fn reopen(&mut self, cause: String) -> BusError {
        match open_messages(&self.stream, &self.config).await {
            Ok(messages) => {
                self.messages = messages;
                tracing::warn!(error = %cause, "pulling failed; consumer opened again");
                BusError::Receive(format!("{cause} (consumer opened again)"))
            }
            Err(e) => BusError::Receive(format!("{cause}; opening the consumer again failed: {e}")),
        }
    }
}

#[async_trait]
impl WorkSource for JetStreamSource {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let message = match self.messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Some(Err(self.reopen(e.to_string()).await)),
            None => return Some(Err(self.reopen("the pull stream ended".to_string()).await)),
        };
        let info = message.info().ok();
        let attempt = info.as_ref().map(|info| info.delivered.max(1) as u32).unwrap_or(1);
        let published_at = info.map(|info| std::time::SystemTime::from(info.published));
        let mut headers = BTreeMap::new();
        if let Some(map) = &message.headers {
            for (name, values) in map.iter() {
                if let Some(value) = values.first() {
                    headers.insert(name.to_string(), value.to_string());
                }
            }
        }
        let subject = message.subject.to_string();
        let payload = message.payload.clone();
        let delivery = Delivery::new(subject, payload, headers, attempt, Box::new(JetStreamSettle { message }));
        Some(Ok(delivery.published_at(published_at)))
    }
}

struct JetStreamSettle {
    message: jetstream::Message,
}

impl JetStreamSettle {
    async fn send(&self, kind: AckKind) -> Result<()> {
        self.message.ack_with(kind).await.map_err(|e| BusError::Ack(e.to_string()))
    }
}

#[async_trait]
impl Settle for JetStreamSettle {
    async fn ack(&self) -> Result<()> {
        // A double ack waits for the server's confirmation: "ack only after the effect is
        // durable" must hold for the ack itself too, or a crash right after could redeliver.
        self.message.double_ack().await.map_err(|e| BusError::Ack(e.to_string()))
    }

    async fn retry_after(&self, delay: Duration) -> Result<()> {
        self.send(AckKind::Nak(Some(delay))).await
    }

    async fn in_progress(&self) -> Result<()> {
        self.send(AckKind::Progress).await
    }

    async fn terminate(&self) -> Result<()> {
        self.send(AckKind::Term).await
    }
}
