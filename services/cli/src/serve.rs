//! `lifeboat serve`: runs one, several or all services in this process until a shutdown signal.

use std::sync::Arc;

use anyhow::Context;
use lifeboat_aggregator::{Aggregator, AggregatorConfig, KvStore};
use lifeboat_common::aws::{load_base_config, Accounts};
use lifeboat_common::bus::Bus;
use lifeboat_common::jetstream::JetStreamBus;
use lifeboat_common::validate::Policy;
use lifeboat_discovery::{Discovery, DiscoveryConfig};
use lifeboat_dynamodb::DynamoDbConfig;
use lifeboat_ebs::EbsConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    All,
    Discovery,
    Ebs,
    Dynamodb,
    Ec2,
    Rds,
    Aggregator,
}

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub nats_url: String,
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
    pub aggregator: AggregatorConfig,
}

impl ServeOptions {
    pub fn new(nats_url: impl Into<String>, services: Vec<ServiceName>) -> Self {
        Self {
            nats_url: nats_url.into(),
            services,
            role_name: lifeboat_common::aws::DEFAULT_ROLE_NAME.to_string(),
            allowed_accounts: Vec::new(),
            discovery: DiscoveryConfig::default(),
            ebs: EbsConfig::default(),
            dynamodb: DynamoDbConfig::default(),
            ec2: lifeboat_ec2::Ec2Config::default(),
            rds: lifeboat_rds::RdsConfig::default(),
            aggregator: AggregatorConfig::default(),
        }
    }

    fn wants(&self, service: ServiceName) -> bool {
        self.services.iter().any(|&s| s == service || s == ServiceName::All)
    }
}

/// Connects, then runs the chosen services until `shutdown` is cancelled; in-flight messages
/// are settled before returning.
pub async fn serve(mut options: ServeOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = JetStreamBus::connect(&options.nats_url).await.context("connecting to NATS")?;
    let shared_bus: Arc<dyn Bus> = Arc::new(bus.clone());
    let accounts = Accounts::new(load_base_config().await, options.role_name.clone());
    options.discovery.policy =
        Policy { allowed_accounts: options.allowed_accounts.clone(), ..options.discovery.policy.clone() };
    let mut running = JoinSet::new();
    if options.wants(ServiceName::Discovery) {
        let service = Discovery::new(accounts.clone(), shared_bus.clone(), options.discovery.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Ebs) {
        let service = lifeboat_ebs::service(accounts.clone(), shared_bus.clone(), options.ebs.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Dynamodb) {
        let service = lifeboat_dynamodb::service(accounts.clone(), shared_bus.clone(), options.dynamodb.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Ec2) {
        let service = lifeboat_ec2::service(accounts.clone(), shared_bus.clone(), options.ec2.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Rds) {
        let service = lifeboat_rds::service(accounts.clone(), shared_bus.clone(), options.rds.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    if options.wants(ServiceName::Aggregator) {
        let store = Arc::new(KvStore::open(bus.client().clone()).await.context("opening the state bucket")?);
        let service = Aggregator::new(shared_bus.clone(), store, bus.client().clone(), options.aggregator.clone());
        running.spawn(service.run(shutdown.clone()));
    }
    info!(services = ?options.services, nats = %options.nats_url, "lifeboat services running");
    let mut first_error = None;
    while let Some(finished) = running.join_next().await {
        let result = finished.context("service task panicked").and_then(|r| r.context("service failed"));
        if let Err(e) = result {
            // One service down takes the process down, so a supervisor restarts it whole.
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
