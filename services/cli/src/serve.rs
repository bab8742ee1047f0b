//! `lifeboat serve`: runs one, several or all services in this process until a shutdown
//! signal, on the bus chosen by configuration, with health, metrics and (with the aggregator)
//! the status API on one HTTP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lifeboat_aggregator::{api, Aggregator, AggregatorConfig, DynamoRecords, KvRecords, Records, Store};
use lifeboat_common::aws::{load_base_config, Accounts};
use lifeboat_common::bus::Bus;
use lifeboat_common::http::Health;
use lifeboat_common::jetstream::JetStreamBus;
use lifeboat_common::validate::Policy;
use lifeboat_common::ConsumerOptions;
use lifeboat_discovery::{Discovery, DiscoveryConfig};
use lifeboat_dynamodb::DynamoDbConfig;
use lifeboat_ebs::EbsConfig;
use lifeboat_sqs::{SqsBus, SqsConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The kinds of work queues, one per resource service.
pub const WORK_KINDS: &[&str] = &["ebs", "dynamodb", "ec2", "rds", "config", "s3"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    All,
    Discovery,
    Ebs,
    Dynamodb,
    Ec2,
    Rds,
    Aggregator,
    /// Route 53 and ELBv2 configuration exports and restores (`lifeboat.work.config`).
    Config,
    /// S3 protection groups to the vault, rollbacks, undeletes and restores (`lifeboat.work.s3`).
    S3,
    /// Turns the `--plans` rules into backup runs when they are due.
    Scheduler,
}

/// Which bus the services talk over.
#[derive(Clone, Debug)]
pub enum Transport {
    Nats { url: String },
    Sqs(SqsConfig),
}

/// Where the aggregator keeps request state.
#[derive(Clone, Debug)]
pub enum StateStore {
    /// The JetStream KV bucket (NATS transport only).
    Kv,
    /// A DynamoDB table (see `deploy/cloudformation.yaml`).
    DynamoDb { table: String },
}

/// A connected bus, and the NATS connection behind it if there is one.
pub struct Connected {
    pub bus: Arc<dyn Bus>,
    pub nats: Option<async_nats::Client>,
}

impl Transport {
    pub async fn connect(&self, aws: &aws_config::SdkConfig) -> anyhow::Result<Connected> {
        Ok(match self {
            Transport::Nats { url } => {
                let bus = JetStreamBus::connect(url).await.with_context(|| format!("connecting to NATS at {url}"))?;
                Connected { nats: Some(bus.client().clone()), bus: Arc::new(bus) }
            }
            Transport::Sqs(config) => {
                let bus = SqsBus::new(aws, config.clone()).context("setting up the SQS bus")?;
                Connected { bus: Arc::new(bus), nats: None }
            }
        })
    }
}

impl StateStore {
    pub async fn open(&self, connected: &Connected, aws: &aws_config::SdkConfig) -> anyhow::Result<Store> {
        let records: Arc<dyn Records> = match self {
            StateStore::Kv => {
                let client = connected.nats.clone().context("the KV state store needs the NATS transport")?;
                Arc::new(KvRecords::open(client).await.context("opening the state bucket")?)
            }
            StateStore::DynamoDb { table } => Arc::new(DynamoRecords::new(state_table_client(aws), table)),
        };
        Ok(Store::new(records))
    }
}

/// The state table's client, counted in the AWS call metrics and traced like every other.
fn state_table_client(aws: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(aws)
        .interceptor(lifeboat_common::metrics::AwsMetrics::new())
        .interceptor(lifeboat_common::aws_trace::AwsTracing::new())
        .retry_classifier(lifeboat_common::aws::ReusedConnection);
    aws_sdk_dynamodb::Client::from_conf(config.build())
}

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub transport: Transport,
    pub state: StateStore,
    /// Health, readiness, metrics and (with the aggregator) the status API.
    pub http_addr: Option<SocketAddr>,
    pub services: Vec<ServiceName>,
    /// Role assumed in accounts other than the caller's.
    pub role_name: String,
    /// When not empty, requests naming other accounts are rejected.
    pub allowed_accounts: Vec<String>,
    pub discovery: DiscoveryConfig,
    pub ebs: EbsConfig,
    pub dynamodb: DynamoDbConfig,
    pub ec2: lifeboat_ec2::Ec2Config,
    pub rds: lifeboat_rds::RdsConfig,
    pub config: lifeboat_config::service::ConfigServiceConfig,
    pub s3: lifeboat_s3::S3Config,
    pub aggregator: AggregatorConfig,
    /// The backup plans the scheduler runs.
    pub plans: Vec<lifeboat_plans::Plan>,
    pub scheduler: lifeboat_scheduler::SchedulerConfig,
}

impl ServeOptions {
    pub fn new(transport: Transport, services: Vec<ServiceName>) -> Self {
        let state = match transport {
            Transport::Nats { .. } => StateStore::Kv,
            Transport::Sqs(_) => StateStore::DynamoDb { table: "lifeboat-state".to_string() },
        };
        Self {
            transport,
            state,
            http_addr: None,
            services,
            role_name: lifeboat_common::aws::DEFAULT_ROLE_NAME.to_string(),
            allowed_accounts: Vec::new(),
            discovery: DiscoveryConfig::default(),
            ebs: EbsConfig::default(),
            dynamodb: DynamoDbConfig::default(),
            ec2: lifeboat_ec2::Ec2Config::default(),
            rds: lifeboat_rds::RdsConfig::default(),
            config: lifeboat_config::service::ConfigServiceConfig::default(),
            s3: lifeboat_s3::S3Config::default(),
            aggregator: AggregatorConfig::from_env(),
            plans: Vec::new(),
            scheduler: lifeboat_scheduler::SchedulerConfig::default(),
        }
    }

    fn wants(&self, service: ServiceName) -> bool {
        self.services.iter().any(|&s| s == service || s == ServiceName::All)
    }

    fn consumers(&mut self) -> [&mut ConsumerOptions; 8] {
        [
            &mut self.discovery.consumer,
            &mut self.ebs.service.consumer,
            &mut self.dynamodb.service.consumer,
            &mut self.ec2.service.consumer,
            &mut self.rds.service.consumer,
            &mut self.config.service.consumer,
            &mut self.s3.service.consumer,
            &mut self.aggregator.consumer,
        ]
    }

    /// Every consumer reports its readiness to `health`.
    fn report_to(&mut self, health: &Health) {
        for consumer in self.consumers() {
            consumer.health = Some(health.clone());
        }
    }

    /// How long any handler may run before its delivery is abandoned and retried.
    pub fn set_handler_timeout(&mut self, timeout: Duration) {
        for consumer in self.consumers() {
            consumer.handler_timeout = timeout;
        }
    }
}

/// Connects, then runs the chosen services until `shutdown` is cancelled; in-flight messages
/// are settled before returning.
pub async fn serve(mut options: ServeOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let aws = load_base_config().await;
    let metrics = lifeboat_common::metrics::install();
    let health = Health::new();
    options.report_to(&health);
    let connected = options.transport.connect(&aws).await?;
    let bus = connected.bus.clone();
    let accounts = Accounts::new(aws.clone(), options.role_name.clone());
    options.discovery.policy =
        Policy { allowed_accounts: options.allowed_accounts.clone(), ..options.discovery.policy.clone() };
    // A deployment runs the config service beside the others (`all`, or its own process in
    // compose), so discovery accepts configuration restores wherever it runs.
    options.discovery.policy = options.discovery.policy.clone().with_config_types();
    let mut running = JoinSet::new();
    if options.wants(ServiceName::Discovery) {
        let service = Discovery::new(accounts.clone(), bus.clone(), options.discovery.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Ebs) {
        let service = lifeboat_ebs::service(accounts.clone(), bus.clone(), options.ebs.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Dynamodb) {
        let service = lifeboat_dynamodb::service(accounts.clone(), bus.clone(), options.dynamodb.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Ec2) {
        let service = lifeboat_ec2::service(accounts.clone(), bus.clone(), options.ec2.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Rds) {
        let service = lifeboat_rds::service(accounts.clone(), bus.clone(), options.rds.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Config) {
        let service = lifeboat_config::service::service(accounts.clone(), bus.clone(), options.config.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::S3) {
        let service = lifeboat_s3::service(accounts.clone(), bus.clone(), options.s3.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    let mut router = lifeboat_common::http::router(health.clone(), metrics);
    if options.wants(ServiceName::Scheduler) {
        if options.plans.is_empty() {
            // `all` without plans: nothing is scheduled. Asked for by name, that is a mistake.
            anyhow::ensure!(
                options.services.contains(&ServiceName::All),
                "the scheduler needs backup plans: --plans FILE_OR_DIR (LIFEBOAT_PLANS)"
            );
        } else {
            let clock = Arc::new(lifeboat_scheduler::SystemClock);
            let drilled = options.plans.iter().flat_map(|p| &p.rules).any(|r| r.drill.is_some());
            let drills = if drilled {
                let store = options.state.open(&connected, &aws).await?;
                Some(crate::drill::scheduled_drills(bus.clone(), accounts.clone(), store))
            } else {
                None
            };
            let (plans, config) = (options.plans.clone(), options.scheduler.clone());
            let scheduler = lifeboat_scheduler::Scheduler::with_drills(plans, bus.clone(), clock, config, drills);
            running.spawn(scheduler.run(accounts.clone(), shutdown.clone()));
        }
    }
    if options.wants(ServiceName::Aggregator) {
        let store = options.state.open(&connected, &aws).await?;
        let aggregator = Aggregator::new(bus.clone(), store, options.aggregator.clone());
        router = router.merge(api::router(aggregator.clone()));
        if let Some(client) = connected.nats.clone() {
            running.spawn(aggregator.clone().serve_queries(client, shutdown.clone()));
        }
        running.spawn(aggregator.run(shutdown.clone()));
    }
    let http = match options.http_addr {
        Some(addr) => Some(lifeboat_common::http::serve(addr, router, shutdown.clone()).await?),
        None => None,
    };
    info!(services = ?options.services, transport = ?options.transport, http = ?http.as_ref().map(|h| h.local_addr()), "lifeboat services running");
    let mut first_error = None;
    while let Some(finished) = running.join_next().await {
        let result = finished.context("service task panicked").and_then(|r| r.context("service failed"));
        if let Err(e) = result {
            // One service down takes the process down, so a supervisor restarts it whole.
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    if let Some(http) = http {
        http.wait().await?;
    }
    first_error.map_or(Ok(()), Err)
}

/// `lifeboat admin init`: creates the SQS queues (with their dead-letter queues and redrive
/// policies) and the DynamoDB state table, for installations not using the deploy template.
pub async fn init(transport: &Transport, state: &StateStore) -> anyhow::Result<Vec<String>> {
    let aws = load_base_config().await;
    let mut created = Vec::new();
    if let Transport::Sqs(config) = transport {
        let bus = SqsBus::new(&aws, config.clone()).context("setting up the SQS bus")?;
        bus.init_queues(WORK_KINDS).await.context("creating the SQS queues")?;
        created.push(format!("SQS queues with prefix '{}' and their dead-letter queues", config.queue_prefix));
    }
    if let StateStore::DynamoDb { table } = state {
        DynamoRecords::new(state_table_client(&aws), table).create_table().await.context("creating the state table")?;
        created.push(format!("DynamoDB table {table} (TTL on expires_at)"));
    }
    Ok(created)
}
