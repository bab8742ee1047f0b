//! Test support: real `nats-server` and `moto_server` on free loopback ports (killed on drop),
//! Lifeboat services built in-process against them over either transport (NATS JetStream, or
//! moto's SQS with the DynamoDB state store), and helpers to seed and inspect moto.

pub mod fixtures;
pub mod throttle;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_ec2::types::{Filter, ResourceType as Ec2ResourceType, Tag, TagSpecification, Volume};
use base64::Engine;
use lifeboat_aggregator::{api, Aggregator, AggregatorConfig, DynamoRecords, KvRecords, Store};
use lifeboat_cli::client::{ApiClient, Client, LifeboatClient};
use lifeboat_common::aws::Accounts;
use lifeboat_common::bus::{Bus, OutgoingMessage, Queue, QueueOptions};
use lifeboat_common::jetstream::JetStreamBus;
use lifeboat_common::restore::WaitPolicy;
use lifeboat_common::subjects;
use lifeboat_common::validate::Policy;
use lifeboat_common::ConsumerOptions;
use lifeboat_discovery::{Discovery, DiscoveryConfig};
use lifeboat_ebs::EbsConfig;
use lifeboat_proto as pb;
use lifeboat_sqs::{QueueKey, SqsBus};
use tokio_util::sync::CancellationToken;

pub mod chaos;
pub mod chaos_run;

/// The account moto serves for the test credentials.
pub const ACCOUNT: &str = "123456789012";
/// The aggregator's DynamoDB table when the transport is SQS.
pub const STATE_TABLE: &str = "lifeboat-state";

/// The bus a test runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// NATS JetStream, with the JetStream KV state store; clients talk NATS.
    Nats,
    /// moto's SQS, with the DynamoDB state store in moto; clients talk to the HTTP API.
    Sqs,
}

/// Runs each named `async fn(Transport)` as two tests, `nats::<name>` and `sqs::<name>`, so the
/// same assertions hold over both transports.
#[macro_export]
macro_rules! on_both_transports {
    ($($test:ident),* $(,)?) => {
        mod nats {
            $(#[tokio::test]
            async fn $test() {
                super::$test($crate::Transport::Nats).await
            })*
        }
        mod sqs {
            $(#[tokio::test]
            async fn $test() {
                super::$test($crate::Transport::Sqs).await
            })*
        }
    };
}

/// A server binary: `$LIFEBOAT_<NAME>` if set, else the project's `.venv/bin`, else `PATH`.
pub fn server_binary(name: &str, env: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

async fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on port {port} within 15s");
}

/// A running nats-server (JetStream) and moto_server, stopped when dropped.
pub struct Servers {
    nats: Child,
    moto: Child,
    pub nats_url: String,
    pub moto_url: String,
    pub transport: Transport,
    /// Where [`Running`] serves the aggregator's HTTP API (and health and metrics).
    pub api_port: u16,
    _dir: tempfile::TempDir,
}

impl Servers {
    /// The servers for a NATS test.
    pub async fn start() -> Self {
        Self::start_with(Transport::Nats).await
    }

    /// The servers, and for SQS the queues and the state table in moto.
    pub async fn start_with(transport: Transport) -> Self {
        let mut servers = Self::start_servers().await;
        servers.transport = transport;
        if transport == Transport::Sqs {
            servers.sqs().init_queues(lifeboat_cli::serve::WORK_KINDS).await.expect("create the SQS queues");
            let table = DynamoRecords::new(aws_sdk_dynamodb::Client::new(&servers.aws("us-east-1")), STATE_TABLE);
            table.create_table().await.expect("create the state table");
        }
        servers
    }

    async fn start_servers() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (nats_port, moto_port) = (free_port(), free_port());
        let mut nats = Command::new(server_binary("nats-server", "LIFEBOAT_NATS_SERVER"))
            .args(["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string(), "-sd"])
            .arg(dir.path().join("jetstream"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server: run scripts/setup.sh to install it into .venv");
        let mut moto = Command::new(server_binary("moto_server", "LIFEBOAT_MOTO_SERVER"))
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server: run scripts/setup.sh to install it into .venv");
        wait_for_port(nats_port, "nats-server", &mut nats).await;
        wait_for_port(moto_port, "moto_server", &mut moto).await;
        Self {
            nats,
            moto,
            nats_url: format!("nats://127.0.0.1:{nats_port}"),
            moto_url: format!("http://127.0.0.1:{moto_port}"),
            transport: Transport::Nats,
            api_port: free_port(),
            _dir: dir,
        }
    }

    /// The SQS bus settings of the tests: short long polls, a small redrive count.
    pub fn sqs_config(&self) -> lifeboat_sqs::SqsConfig {
        lifeboat_sqs::SqsConfig {
            wait_time: Duration::from_secs(1),
            max_receive_count: 1000,
            ..lifeboat_sqs::SqsConfig::default()
        }
    }

    pub fn sqs(&self) -> lifeboat_sqs::SqsBus {
        lifeboat_sqs::SqsBus::new(&self.aws("us-east-1"), self.sqs_config()).expect("SQS bus")
    }

    /// The bus of this test's transport.
    pub async fn shared_bus(&self) -> Arc<dyn Bus> {
        self.bus_address().connect().await
    }

    /// What it takes to connect to this test's bus from another runtime.
    pub fn bus_address(&self) -> BusAddress {
        BusAddress {
            transport: self.transport,
            nats_url: self.nats_url.clone(),
            aws: self.aws("us-east-1"),
            sqs: self.sqs_config(),
        }
    }

    /// The aggregator's state store of this test's transport.
    pub async fn store(&self) -> Store {
        match self.transport {
            Transport::Nats => Store::new(Arc::new(
                KvRecords::open(self.bus().await.client().clone()).await.expect("open the state bucket"),
            )),
            Transport::Sqs => Store::new(Arc::new(DynamoRecords::new(
                aws_sdk_dynamodb::Client::new(&self.aws("us-east-1")),
                STATE_TABLE,
            ))),
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// An SDK config for moto in `region`, with the credentials moto maps to [`ACCOUNT`].
    pub fn aws(&self, region: &str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.moto_url)
            .time_source(aws_smithy_async::time::SharedTimeSource::default())
            .sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep().expect("tokio sleep"))
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "tests",
            )))
            .build()
    }

    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.aws(region))
    }

    pub async fn bus(&self) -> JetStreamBus {
        JetStreamBus::connect(&self.nats_url).await.expect("connect to nats")
    }

    /// A client as users have it: NATS for the NATS transport, the HTTP API for SQS.
    pub async fn client(&self) -> Client {
        match self.transport {
            Transport::Nats => Client::Nats(LifeboatClient::from_bus(self.bus().await)),
            Transport::Sqs => Client::Api(ApiClient::new(&self.api_url()).expect("API client")),
        }
    }
}

/// Where a test's bus is, for services run on a runtime of their own (and killed with it, the
/// way a process dies): connected there, their connections die with it too.
#[derive(Clone)]
pub struct BusAddress {
    transport: Transport,
    nats_url: String,
    aws: SdkConfig,
    sqs: lifeboat_sqs::SqsConfig,
}

impl BusAddress {
    pub async fn connect(&self) -> Arc<dyn Bus> {
        match self.transport {
            Transport::Nats => Arc::new(JetStreamBus::connect(&self.nats_url).await.expect("connect to nats")),
            Transport::Sqs => Arc::new(SqsBus::new(&self.aws, self.sqs.clone()).expect("SQS bus")),
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in [&mut self.nats, &mut self.moto] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Settings that make the services quick against moto, where everything is created at once.
pub fn fast_ebs_config() -> EbsConfig {
    let mut config = EbsConfig::default();
    config.service.wait = WaitPolicy {
        check_initial: Duration::from_millis(100),
        check_max: Duration::from_millis(500),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        ..WaitPolicy::default()
    };
    config
}

pub fn fast_dynamodb_config() -> lifeboat_dynamodb::DynamoDbConfig {
    let mut config = lifeboat_dynamodb::DynamoDbConfig::default();
    config.service.wait = fast_ebs_config().service.wait;
    config
}

pub fn fast_discovery_config(policy: Policy) -> DiscoveryConfig {
    DiscoveryConfig {
        policy,
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        ..DiscoveryConfig::default()
    }
}

/// The config service (Route 53 and ELBv2 exports and restores) with the fast waits.
/// The s3 service with fast re-checks, and objects over 5 MiB (S3's smallest part) copied in
/// 5 MiB parts so that tests exercise multipart copies with small objects.
pub fn fast_s3_config() -> lifeboat_s3::S3Config {
    lifeboat_s3::S3Config {
        service: fast_dynamodb_config().service,
        multipart_threshold: 5 * 1024 * 1024,
        part_size: 5 * 1024 * 1024,
        ..Default::default()
    }
}

pub fn fast_config_config() -> lifeboat_config::service::ConfigServiceConfig {
    lifeboat_config::service::ConfigServiceConfig { service: fast_dynamodb_config().service }
}

/// Which services to run, and how. The config service is not a field (a field would be one
/// more to spell out in every test's literal set): start it with [`Running::with_config`].
pub struct ServiceSet {
    pub discovery: Option<DiscoveryConfig>,
    pub ebs: Option<EbsConfig>,
    pub dynamodb: Option<lifeboat_dynamodb::DynamoDbConfig>,
    pub ec2: Option<lifeboat_ec2::Ec2Config>,
    pub rds: Option<lifeboat_rds::RdsConfig>,
    pub aggregator: bool,
}

impl ServiceSet {
    /// Only the aggregator: for tests that run a service of their own over another bus.
    pub fn aggregator_only() -> Self {
        Self { discovery: None, ebs: None, dynamodb: None, ec2: None, rds: None, aggregator: true }
    }
}

/// The EBS service (fast settings) over `bus`, until the returned token is cancelled.
pub fn ebs_service(servers: &Servers, bus: Arc<dyn Bus>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let accounts = Accounts::new(servers.aws("us-east-1"), "role");
    let service = lifeboat_ebs::service(accounts, bus, fast_ebs_config());
    let shutdown = CancellationToken::new();
    let run = service.run(shutdown.clone());
    (shutdown, tokio::spawn(async move { run.await.expect("ebs service") }))
}

impl Default for ServiceSet {
    fn default() -> Self {
        Self {
            discovery: Some(fast_discovery_config(Policy::default())),
            ebs: Some(fast_ebs_config()),
            dynamodb: Some(fast_dynamodb_config()),
            ec2: Some(lifeboat_ec2::Ec2Config { service: fast_dynamodb_config().service }),
            rds: Some(lifeboat_rds::RdsConfig { service: fast_dynamodb_config().service, ..Default::default() }),
            aggregator: true,
        }
    }
}

/// Services running in this process until dropped or stopped.
pub struct Running {
    shutdown: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn start(servers: &Servers, set: ServiceSet) -> Self {
        let shared = servers.shared_bus().await;
        let accounts = Accounts::new(servers.aws("us-east-1"), lifeboat_common::aws::DEFAULT_ROLE_NAME);
        let shutdown = CancellationToken::new();
        let mut handles = Vec::new();
        let spawn = |f: std::pin::Pin<
            Box<dyn std::future::Future<Output = lifeboat_common::bus::Result<()>> + Send>,
        >| { tokio::spawn(async move { f.await.expect("service failed") }) };
        if let Some(config) = set.discovery {
            handles
                .push(spawn(Box::pin(Discovery::new(accounts.clone(), shared.clone(), config).run(shutdown.clone()))));
        }
        if let Some(config) = set.ebs {
            handles.push(spawn(Box::pin(
                lifeboat_ebs::service(accounts.clone(), shared.clone(), config).run(shutdown.clone()),
            )));
        }
        if let Some(config) = set.dynamodb {
            handles.push(spawn(Box::pin(
                lifeboat_dynamodb::service(accounts.clone(), shared.clone(), config).run(shutdown.clone()),
            )));
        }
        if let Some(config) = set.ec2 {
            handles.push(spawn(Box::pin(
                lifeboat_ec2::service(accounts.clone(), shared.clone(), config).run(shutdown.clone()),
            )));
        }
        if let Some(config) = set.rds {
            handles.push(spawn(Box::pin(
                lifeboat_rds::service(accounts.clone(), shared.clone(), config).run(shutdown.clone()),
            )));
        }
        if set.aggregator {
            let aggregator = Aggregator::new(shared.clone(), servers.store().await, AggregatorConfig::default());
            if servers.transport == Transport::Nats {
                let client = servers.bus().await.client().clone();
                handles.push(spawn(Box::pin(aggregator.clone().serve_queries(client, shutdown.clone()))));
            }
            let router = lifeboat_common::http::router(
                lifeboat_common::http::Health::new(),
                lifeboat_common::metrics::install(),
            )
            .merge(api::router(aggregator.clone()));
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], servers.api_port));
            let http = lifeboat_common::http::serve(addr, router, shutdown.clone()).await.expect("serve the API");
            handles.push(tokio::spawn(async move { http.wait().await.expect("API server") }));
            handles.push(spawn(Box::pin(aggregator.run(shutdown.clone()))));
        }
        Self { shutdown, handles }
    }

    /// Also runs the config service, with the same accounts (moto's credentials) and bus.
    pub async fn with_config(
        mut self,
        servers: &Servers,
        config: lifeboat_config::service::ConfigServiceConfig,
    ) -> Self {
        let accounts = Accounts::new(servers.aws("us-east-1"), lifeboat_common::aws::DEFAULT_ROLE_NAME);
        let service = lifeboat_config::service::service(accounts, servers.shared_bus().await, config);
        let run = service.run(self.shutdown.clone());
        self.handles.push(tokio::spawn(async move { run.await.expect("config service failed") }));
        self
    }

    /// Also runs the s3 service with `config`.
    pub async fn with_s3(mut self, servers: &Servers, config: lifeboat_s3::S3Config) -> Self {
        let accounts = Accounts::new(servers.aws("us-east-1"), lifeboat_common::aws::DEFAULT_ROLE_NAME);
        let service = lifeboat_s3::service(accounts, servers.shared_bus().await, config);
        let run = service.run(self.shutdown.clone());
        self.handles.push(tokio::spawn(async move { run.await.expect("s3 service failed") }));
        self
    }

    /// Graceful stop: in-flight messages are settled.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for handle in std::mem::take(&mut self.handles) {
            let _ = handle.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An EBS consumer options set with a short ack deadline, so a crashed worker's message returns fast.
pub fn short_ack_wait(mut config: EbsConfig, ack_wait: Duration) -> EbsConfig {
    config.service.consumer =
        ConsumerOptions { queue: QueueOptions { ack_wait, ..QueueOptions::default() }, ..config.service.consumer };
    config
}

fn tag_spec(kind: Ec2ResourceType, tags: &[(&str, &str)]) -> Option<Vec<TagSpecification>> {
    (!tags.is_empty()).then(|| {
        vec![TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect()))
            .build()]
    })
}

pub async fn create_volume(ec2: &aws_sdk_ec2::Client, zone: &str, size: i32, tags: &[(&str, &str)]) -> String {
    ec2.create_volume()
        .availability_zone(zone)
        .size(size)
        .set_tag_specifications(tag_spec(Ec2ResourceType::Volume, tags))
        .send()
        .await
        .expect("create volume")
        .volume_id()
        .expect("volume id")
        .to_string()
}

pub async fn create_snapshot(ec2: &aws_sdk_ec2::Client, volume_id: &str, tags: &[(&str, &str)]) -> String {
    ec2.create_snapshot()
        .volume_id(volume_id)
        .set_tag_specifications(tag_spec(Ec2ResourceType::Snapshot, tags))
        .send()
        .await
        .expect("create snapshot")
        .snapshot_id()
        .expect("snapshot id")
        .to_string()
}

/// Snapshots carrying `tag:key=value`.
pub async fn snapshots_tagged(ec2: &aws_sdk_ec2::Client, key: &str, value: &str) -> Vec<aws_sdk_ec2::types::Snapshot> {
    ec2.describe_snapshots()
        .filters(Filter::builder().name(format!("tag:{key}")).values(value).build())
        .send()
        .await
        .expect("describe snapshots")
        .snapshots()
        .to_vec()
}

/// Volumes carrying `tag:key=value`.
pub async fn volumes_tagged(ec2: &aws_sdk_ec2::Client, key: &str, value: &str) -> Vec<Volume> {
    ec2.describe_volumes()
        .filters(Filter::builder().name(format!("tag:{key}")).values(value).build())
        .send()
        .await
        .expect("describe volumes")
        .volumes()
        .to_vec()
}

pub fn tags_of(volume: &Volume) -> HashMap<String, String> {
    volume
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
        .collect()
}

/// moto stamps snapshots with the current second; this puts a clear second between two sides.
pub async fn tick() -> chrono::DateTime<chrono::Utc> {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    at
}

pub fn ts(at: chrono::DateTime<chrono::Utc>) -> lifeboat_proto::Timestamp {
    lifeboat_common::time::to_timestamp(at)
}

/// An EBS restore set.
pub fn ebs_set(
    name: &str,
    region: &str,
    tags: &[(&str, &str)],
    selection: Option<pb::source::Selection>,
    target: pb::EbsTarget,
) -> pb::RestoreSet {
    pb::RestoreSet {
        name: name.to_string(),
        source: Some(pb::Source {
            account_id: String::new(),
            region: region.to_string(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            selection,
            point_in_time_recovery: false,
            // Tests name their tags; a set without them restores everything, as asked.
            all_resources: tags.is_empty(),
            ..Default::default()
        }),
        resource_types: vec![pb::ResourceType::EbsVolume as i32],
        target: Some(pb::Targets { ebs: Some(target), ..Default::default() }),
        ..Default::default()
    }
}

pub fn before(at: chrono::DateTime<chrono::Utc>) -> Option<pb::source::Selection> {
    Some(pb::source::Selection::PointInTime(pb::PointInTime {
        time: Some(ts(at)),
        direction: pb::SearchDirection::Before as i32,
        until: None,
    }))
}

pub fn after(at: chrono::DateTime<chrono::Utc>) -> Option<pb::source::Selection> {
    Some(pb::source::Selection::PointInTime(pb::PointInTime {
        time: Some(ts(at)),
        direction: pb::SearchDirection::After as i32,
        until: None,
    }))
}

pub fn request(id: &str, sets: Vec<pb::RestoreSet>) -> pb::RestoreRequest {
    pb::RestoreRequest {
        request_id: id.to_string(),
        restore_sets: sets,
        submitted_at: Some(lifeboat_common::time::now()),
        ..Default::default()
    }
}

/// Publishes the plan of `request_id` as discovery would, for tests that publish tasks directly.
pub async fn report_planned(bus: Arc<dyn Bus>, request_id: &str, total_tasks: u32) {
    let planned = pb::RestorePlanned { total_tasks, ..Default::default() };
    lifeboat_common::events::Reporter::new(bus, "test")
        .report(pb::StatusEvent {
            request_id: request_id.into(),
            detail: Some(pb::status_event::Detail::Planned(planned)),
            ..Default::default()
        })
        .await
        .expect("publish the plan");
}

/// Waits for the final summary (with tasks) of `request_id`.
pub async fn final_summary(client: &Client, request_id: &str) -> pb::RequestSummary {
    client.watch(request_id, Some(Duration::from_secs(60)), |_| {}).await.expect("final summary within 60s")
}

pub fn verdict(summary: &pb::RequestSummary) -> pb::Verdict {
    pb::Verdict::try_from(summary.verdict).unwrap_or_default()
}

/// Waits until every message of the `kind` work queue has been handled and settled: nothing
/// pending or unacknowledged on its JetStream consumer, nothing visible, in flight or delayed in
/// its SQS queue.
pub async fn work_drained(servers: &Servers, kind: &str) {
    work_drained_within(servers, kind, Duration::from_secs(20)).await
}

/// [`work_drained`], waiting up to `within` (a killed worker's messages come back only after
/// the ack deadline).
pub async fn work_drained_within(servers: &Servers, kind: &str, within: Duration) {
    let queue = Queue::Work(kind.to_string());
    for _ in 0..within.as_millis() / 100 {
        let drained = match servers.transport {
            Transport::Nats => {
                let stream =
                    servers.bus().await.context().get_stream(subjects::WORK_STREAM).await.expect("work stream");
                let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer(&queue.consumer_name()).await.expect("consumer");
                let info = consumer.info().await.expect("consumer info");
                info.num_pending == 0 && info.num_ack_pending == 0
            }
            Transport::Sqs => servers.sqs().depth(&QueueKey::main(&queue)).await.expect("queue depth").total() == 0,
        };
        if drained {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("work queue {kind} not drained within {within:?}");
}

/// A message as a queue holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub subject: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Stored {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Why it was dead-lettered (`CODE: reason`), if the consumer loop put it there.
    pub fn reason(&self) -> Option<&str> {
        self.header(subjects::HEADER_DEADLETTER_REASON)
    }

    /// The same message again, under another dedupe id.
    pub fn republish(&self, dedupe_id: impl Into<String>) -> OutgoingMessage {
        let message = OutgoingMessage::new(self.subject.clone(), self.payload.clone()).dedupe_id(dedupe_id);
        self.headers.iter().fold(message, |message, (name, value)| message.header(name.clone(), value.clone()))
    }
}

/// What `queue` holds now, without taking it off: the messages its JetStream stream stores
/// under its subject, or everything its SQS queue holds. On SQS this receives the messages and
/// makes them visible again at once, so each one's next delivery counts one attempt more.
pub async fn queued(servers: &Servers, queue: &Queue) -> Vec<Stored> {
    match servers.transport {
        Transport::Nats => {
            let stream = match queue {
                Queue::Requests => subjects::REQUESTS_STREAM,
                Queue::Work(_) => subjects::WORK_STREAM,
                Queue::StatusEvents => subjects::EVENTS_STREAM,
            };
            let status_prefix = format!("{}.", subjects::STATUS_PREFIX);
            stored_in_stream(&servers.bus().await, stream, |subject| match queue {
                Queue::StatusEvents => subject.starts_with(&status_prefix),
                _ => subject == queue.filter_subject(),
            })
            .await
        }
        Transport::Sqs => peek_sqs(&servers.sqs(), &QueueKey::main(queue)).await,
    }
}

/// How many messages `queue` holds, without receiving any.
pub async fn queued_count(servers: &Servers, queue: &Queue) -> u64 {
    match servers.transport {
        Transport::Nats => queued(servers, queue).await.len() as u64,
        Transport::Sqs => servers.sqs().depth(&QueueKey::main(queue)).await.expect("queue depth").total(),
    }
}

/// Everything dead-lettered from `queue` so far, oldest first on NATS: the messages of the
/// LIFEBOAT_DEADLETTER stream under `lifeboat.deadletter.<consumer>`, or those of the SQS queue's
/// dead-letter queue (the consumer's own dead letters, and what it took from the `-redrive`
/// queue SQS's redrive policy moves messages to, each with its reason).
pub async fn dead_letters(servers: &Servers, queue: &Queue) -> Vec<Stored> {
    match servers.transport {
        Transport::Nats => {
            let subject = queue.deadletter_subject();
            stored_in_stream(&servers.bus().await, subjects::DEADLETTER_STREAM, |s| s == subject).await
        }
        Transport::Sqs => peek_sqs(&servers.sqs(), &QueueKey::dead_letter(queue)).await,
    }
}

async fn stored_in_stream(bus: &JetStreamBus, stream: &str, wanted: impl Fn(&str) -> bool) -> Vec<Stored> {
    let mut stream = bus.context().get_stream(stream).await.expect("stream exists");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut stored = Vec::new();
    if state.messages == 0 {
        return stored;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        // A work queue's acknowledged messages are gone: their sequences are holes.
        let Ok(message) = stream.get_raw_message(sequence).await else { continue };
        if !wanted(&message.subject) {
            continue;
        }
        let mut headers = BTreeMap::new();
        // JetStream's own (`Nats-Msg-Id`...) are not the message's headers.
        for (name, values) in message.headers.iter().filter(|(name, _)| !name.to_string().starts_with("Nats-")) {
            if let Some(value) = values.first() {
                headers.insert(name.to_string(), value.to_string());
            }
        }
        stored.push(Stored { subject: message.subject.to_string(), payload: message.payload.to_vec(), headers });
    }
    stored
}

/// Receives everything `key`'s queue holds, then makes it visible again.
async fn peek_sqs(bus: &SqsBus, key: &QueueKey) -> Vec<Stored> {
    let url = bus.url(key).await.expect("queue url");
    let (mut stored, mut receipts) = (Vec::new(), Vec::new());
    loop {
        let received = bus
            .client()
            .receive_message()
            .queue_url(url.as_ref())
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .visibility_timeout(30)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if received.is_empty() {
            break;
        }
        for message in received {
            receipts.extend(message.receipt_handle().map(str::to_string));
            stored.push(decode_sqs(&message, key));
        }
    }
    for receipt in receipts {
        bus.client()
            .change_message_visibility()
            .queue_url(url.as_ref())
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .expect("make visible again");
    }
    stored
}

/// A received SQS message as Lifeboat sent it: base64 body, subject and headers as attributes
/// (some of them packed as JSON in one).
fn decode_sqs(message: &aws_sdk_sqs::types::Message, key: &QueueKey) -> Stored {
    let body = message.body().unwrap_or_default();
    let payload = match body {
        "=" => Vec::new(),
        body => base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_else(|_| body.as_bytes().to_vec()),
    };
    let (mut subject, mut headers) = (key.default_subject(), BTreeMap::new());
    for (name, value) in message.message_attributes().into_iter().flatten() {
        let Some(text) = value.string_value() else { continue };
        match name.as_str() {
            lifeboat_sqs::SUBJECT_ATTRIBUTE => subject = text.to_string(),
            lifeboat_sqs::HEADERS_ATTRIBUTE => {
                headers.extend(serde_json::from_str::<BTreeMap<String, String>>(text).expect("packed headers"))
            }
            _ => {
                headers.insert(name.clone(), text.to_string());
            }
        }
    }
    Stored { subject, payload, headers }
}

/// The final summary a client that comes late still gets: the last one kept on the summaries
/// stream (NATS), or what the status API answers from the state store (SQS has no fan-out).
pub async fn late_summary(servers: &Servers, request_id: &str) -> pb::RequestSummary {
    match servers.transport {
        Transport::Nats => {
            let bus = servers.bus().await;
            let stream = bus.context().get_stream(subjects::SUMMARIES_STREAM).await.expect("summaries stream");
            let stored = stream
                .get_last_raw_message_by_subject(&subjects::summary_subject(request_id))
                .await
                .expect("a stored summary");
            <pb::RequestSummary as prost::Message>::decode(stored.payload.as_ref()).expect("a summary")
        }
        Transport::Sqs => {
            let reply = servers.client().await.status(request_id, false).await.expect("status");
            assert!(reply.found, "{request_id} is known to the status API");
            reply.summary.expect("a summary")
        }
    }
}

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// The published files under `tests/fixtures/<folder>`, as (file name, text), sorted by name.
pub fn fixtures(folder: &str, extension: &str) -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(folder);
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("fixture entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path.file_name().expect("file name").to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
}

/// An AMI of a fresh instance (in the region's default VPC), the image tagged with `tags`.
pub async fn create_tagged_image(ec2: &aws_sdk_ec2::Client, name: &str, tags: &[(&str, &str)]) -> String {
    let base = ec2.describe_images().owners("amazon").send().await.expect("describe base images");
    let base_image = base.images().first().and_then(|i| i.image_id()).expect("a base image").to_string();
    let launched = ec2
        .run_instances()
        .image_id(base_image)
        .min_count(1)
        .max_count(1)
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .send()
        .await
        .expect("run an instance to image");
    let instance_id = launched.instances().first().and_then(|i| i.instance_id()).expect("instance id").to_string();
    ec2.create_image()
        .instance_id(instance_id)
        .name(name)
        .set_tag_specifications(tag_spec(Ec2ResourceType::Image, tags))
        .send()
        .await
        .expect("create image")
        .image_id()
        .expect("image id")
        .to_string()
}
