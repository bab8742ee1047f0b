//! `lifeboat`: submit, watch and inspect bulk restores; check backup plans; run the services.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lifeboat_cli::client::{ApiClient, Client, LifeboatClient};
use lifeboat_cli::render::{self, Progress};
use lifeboat_cli::request_file;
use lifeboat_cli::serve::{serve, ServeOptions, ServiceName, StateStore, Transport};
use lifeboat_common::validate::{validate_request, Policy};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod backup_cmd;

#[derive(Parser)]
#[command(name = "lifeboat", version, about = "Bulk restores of AWS resources across accounts and regions")]
struct Cli {
    /// The bus: NATS JetStream, or Amazon SQS (queues named by LIFEBOAT_SQS_* variables).
    #[arg(long, global = true, value_enum, env = "LIFEBOAT_TRANSPORT", default_value_t = TransportKind::Nats)]
    transport: TransportKind,
    /// NATS server with JetStream.
    #[arg(long, global = true, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The status aggregator's HTTP API (e.g. http://127.0.0.1:8080). When set, `restore`
    /// commands go through it instead of NATS; with the SQS transport it is required.
    #[arg(long, global = true, env = "LIFEBOAT_API_URL")]
    api_url: Option<String>,
    /// Where the aggregator keeps request state (default: kv with NATS, dynamodb with SQS).
    #[arg(long, global = true, value_enum, env = "LIFEBOAT_STATE_STORE")]
    state_store: Option<StateStoreKind>,
    /// The DynamoDB table of the dynamodb state store.
    #[arg(long, global = true, env = "LIFEBOAT_STATE_TABLE", default_value = "lifeboat-state")]
    state_table: String,
    /// How results are printed.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// AWS profile for the services (else AWS_PROFILE and the rest of the standard chain).
    #[arg(long, global = true)]
    aws_profile: Option<String>,
    /// Default AWS region of the caller (else AWS_REGION).
    #[arg(long, global = true)]
    aws_region: Option<String>,
    /// Another AWS endpoint, such as a local emulator (else AWS_ENDPOINT_URL).
    #[arg(long, global = true)]
    aws_endpoint_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TransportKind {
    Nats,
    Sqs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StateStoreKind {
    Kv,
    Dynamodb,
}

impl Cli {
    fn transport(&self) -> anyhow::Result<Transport> {
        Ok(match self.transport {
            TransportKind::Nats => Transport::Nats { url: self.nats_url.clone() },
            TransportKind::Sqs => {
                let mut config = lifeboat_sqs::SqsConfig::from_env()?;
                // Cancellation marks live beside the aggregator's records.
                config.state_table = self.state_table.clone();
                Transport::Sqs(config)
            }
        })
    }

    fn state_store(&self) -> StateStore {
        match (self.state_store, self.transport) {
            (Some(StateStoreKind::Kv), _) | (None, TransportKind::Nats) => StateStore::Kv,
            (Some(StateStoreKind::Dynamodb), _) | (None, TransportKind::Sqs) => {
                StateStore::DynamoDb { table: self.state_table.clone() }
            }
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        match (&self.api_url, self.transport) {
            (Some(url), _) => Ok(Client::Api(ApiClient::new(url)?)),
            (None, TransportKind::Nats) => {
                Ok(Client::Nats(LifeboatClient::connect(&self.nats_url).await.context("connecting to NATS")?))
            }
            (None, TransportKind::Sqs) => {
                anyhow::bail!("with the SQS transport, restore commands need --api-url (the aggregator's HTTP API)")
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 if a service answers its readiness probe, else 1 (for container health checks,
    /// where the image has no curl).
    Probe {
        #[arg(default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
    },
    /// Set up the queues and tables of an installation.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Submit, follow and inspect restore requests.
    Restore {
        #[command(subcommand)]
        command: RestoreCommand,
    },
    /// Backup plans: what to back up, when, and how long to keep it.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// The catalog: what can be restored, per resource.
    Backups {
        #[command(subcommand)]
        command: lifeboat_cli::catalog::BackupsCommand,
    },
    /// Route 53 and ELBv2 configuration: export to S3, diff, restore.
    Config {
        #[command(subcommand)]
        command: lifeboat_cli::config_cmd::ConfigCommand,
    },
    /// Versioned S3 buckets changed in place: rollback to a time, undelete since a time.
    S3 {
        #[command(subcommand)]
        command: lifeboat_cli::s3_cmd::S3Command,
    },
    /// Restore drills: restore a rule's latest recovery points, validate, time, tear down.
    Drill {
        #[command(subcommand)]
        command: lifeboat_cli::drill::DrillCommand,
    },
    /// Run services (all of them, or some) in this process.
    Serve {
        #[arg(value_enum, required = true)]
        services: Vec<ServiceName>,
        /// Health (/healthz, /readyz), metrics (/metrics) and, with the aggregator, the status
        /// API (/v1/requests); `none` to serve no HTTP.
        #[arg(long, env = "LIFEBOAT_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: String,
        /// Role assumed in accounts other than the caller's.
        #[arg(long, env = "LIFEBOAT_ROLE_NAME", default_value = lifeboat_common::aws::DEFAULT_ROLE_NAME)]
        role_name: String,
        /// Comma-separated account ids requests may name; empty allows any.
        #[arg(long, env = "LIFEBOAT_ALLOWED_ACCOUNTS", value_delimiter = ',')]
        allowed_accounts: Vec<String>,
        /// Seconds before the first re-check of a volume or copy being created.
        #[arg(long, env = "LIFEBOAT_CHECK_INTERVAL", default_value_t = 2.0)]
        check_interval: f64,
        /// Seconds a message's handler may run before it is abandoned and the message retried
        /// (a hung AWS call cannot hold a message forever); keep it above the AWS operation
        /// timeout (180 s).
        #[arg(long, env = "LIFEBOAT_HANDLER_TIMEOUT", default_value_t = 300)]
        handler_timeout: u64,
        /// Backup plan files, or directories of them, that the scheduler runs (comma-separated).
        #[arg(long, env = "LIFEBOAT_PLANS", value_delimiter = ',')]
        plans: Vec<String>,
        /// Seconds between the scheduler's looks for due rules.
        #[arg(long, env = "LIFEBOAT_SCHEDULER_TICK", default_value_t = 30)]
        scheduler_tick: u64,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Backup plan files.
    Plan {
        #[command(subcommand)]
        command: PlanCommand,
    },
    /// Run a plan's rule now (every rule without --rule), besides its schedule; prints the run
    /// ids, or with --watch follows them to their verdicts.
    Run {
        /// The plan file.
        plan: String,
        #[arg(long)]
        rule: Option<String>,
        #[arg(long)]
        watch: bool,
        /// Seconds to wait for a verdict with --watch.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// A backup run's outcome per resource; with --csv, the resources not backed up and why.
    Report {
        run_id: String,
        #[arg(long)]
        csv: bool,
    },
    /// Lifeboat's recovery points in one or more regions, as their tags describe them.
    List(backup_cmd::ListArgs),
    /// Delete the recovery points whose retention is over (as their locks allow) and move cold
    /// EBS snapshots to the archive tier.
    Sweep(backup_cmd::SweepArgs),
}

#[derive(Subcommand)]
enum PlanCommand {
    /// Check a plan file (YAML or JSON): every error by field, exit 1 if there is any (2 if the
    /// file cannot be read); else the next due time.
    Validate { file: String },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the SQS queues (with dead-letter queues and redrive policies) and the DynamoDB
    /// state table, when not using deploy/cloudformation.yaml. Idempotent.
    Init,
}

#[derive(Clone, Subcommand)]
enum RestoreCommand {
    /// Submit a request from a YAML or JSON file.
    Submit {
        file: String,
        /// Only plan: show what would be restored, from which backup, to where.
        #[arg(long)]
        dry_run: bool,
        /// Follow the request until it finishes.
        #[arg(long)]
        watch: bool,
        /// Use this request id instead of the file's or a generated one.
        #[arg(long)]
        request_id: Option<String>,
        /// Give up watching after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Run even if the request plans more tasks than its `max_tasks` (default 1,000).
        #[arg(long)]
        confirm_large: bool,
        /// Let sets without tags or names restore every resource of their account and region.
        #[arg(long)]
        all_resources: bool,
    },
    /// Requests, newest first, with verdict, counts and age.
    List {
        /// Only requests in this state: running, completed, completed_with_warnings,
        /// partially_failed, failed, rejected or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Re-run the failed (and cancelled) tasks of a finished request, under the same task ids:
    /// nothing that succeeded is restored again, and the verdict is recomputed.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["failed", "set"])))]
    Retry {
        request_id: String,
        /// Every failed or cancelled task.
        #[arg(long)]
        failed: bool,
        /// Only the failed or cancelled tasks of this set (repeatable).
        #[arg(long = "set", value_name = "NAME")]
        set: Vec<String>,
        /// Follow the request until it finishes again.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Cancel a running request: no new task starts; tasks not started end CANCELLED, started
    /// ones run to their end; the verdict is CANCELLED.
    Cancel {
        request_id: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Follow the request until its last task has ended.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Follow a request with a progress bar; end with its tasks and verdict.
    Watch {
        request_id: String,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Show a request's current status and tasks.
    Status { request_id: String },
}

impl Cli {
    /// The `service.name` of this process's spans unless `OTEL_SERVICE_NAME` names one:
    /// `lifeboat-ebs` for `lifeboat serve ebs`, `lifeboat` for anything else (several services
    /// in one process tell theirs apart by the `lifeboat.service` span attribute).
    fn service_name(&self) -> String {
        match &self.command {
            Command::Serve { services, .. } if services.len() == 1 && services[0] != ServiceName::All => {
                let name = services[0].to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
                format!("{}-{name}", lifeboat_common::telemetry::DEFAULT_SERVICE_NAME)
            }
            _ => lifeboat_common::telemetry::DEFAULT_SERVICE_NAME.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = lifeboat_common::telemetry::init_as(&cli.service_name());
    // The AWS flags become the standard variables the SDK reads, set before any thread starts.
    for (variable, value) in [
        ("AWS_PROFILE", &cli.aws_profile),
        ("AWS_REGION", &cli.aws_region),
        ("AWS_ENDPOINT_URL", &cli.aws_endpoint_url),
    ] {
        if let Some(value) = value {
            std::env::set_var(variable, value);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Spans end when the tasks holding them are dropped with the runtime; then they are exported.
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Backup { command: BackupCommand::Plan { command: PlanCommand::Validate { file } } } => {
            Ok(validate_plan(file, cli.output))
        }
        Command::Backup { command: BackupCommand::Run { plan, rule, watch, timeout } } => {
            let requests = lifeboat_cli::backup::run_requests(plan, rule.as_deref())?;
            let client = cli.client().await?;
            let mut worst = 0;
            for request in &requests {
                client.submit(request).await?;
                if cli.output == Output::Text {
                    let run = request.backup_run.clone().unwrap_or_default();
                    eprintln!("submitted backup run {} ({}/{})", request.request_id, run.plan, run.rule);
                }
                if *watch {
                    worst = worst.max(follow(&client, &request.request_id, *timeout, cli.output).await?);
                } else if cli.output == Output::Json {
                    println!("{}", serde_json::json!({"run_id": request.request_id}));
                } else {
                    println!("{}", request.request_id);
                }
            }
            Ok(worst)
        }
        Command::Backup { command: BackupCommand::Report { run_id, csv } } => {
            let reply = cli.client().await?.status(run_id, true).await?;
            if !reply.found {
                anyhow::bail!(
                    "no backup run {run_id}{}",
                    if reply.error.is_empty() { String::new() } else { format!(": {}", reply.error) }
                );
            }
            let summary = reply.summary.unwrap_or_default();
            match (csv, cli.output) {
                (true, _) => print!("{}", lifeboat_cli::backup::report_csv_fetched(&summary).await),
                (false, Output::Json) => println!("{}", serde_json::to_string_pretty(&render::summary_json(&summary))?),
                (false, Output::Text) => print!("{}", render::table(&summary)),
            }
            Ok(render::exit_code(render::verdict(&summary)))
        }
        Command::Backup { command: BackupCommand::List(args) } => {
            backup_cmd::list(args, &cli.transport()?, cli.output == Output::Json).await
        }
        Command::Backup { command: BackupCommand::Sweep(args) } => {
            backup_cmd::sweep(args, &cli.transport()?, cli.output == Output::Json).await
        }
        Command::Backups { command: lifeboat_cli::catalog::BackupsCommand::List(args) } => {
            lifeboat_cli::catalog::run(args, cli.output == Output::Json).await
        }
        Command::Config { command } => run_config(&cli, command).await,
        Command::S3 { command } => {
            let request = lifeboat_cli::s3_cmd::request(command)?;
            let client = cli.client().await?;
            client.submit(&request).await?;
            if cli.output == Output::Text {
                let dry = if request.dry_run { " (dry run)" } else { "" };
                eprintln!("submitted {}{dry}", request.request_id);
            }
            if command.follows() {
                return follow(&client, &request.request_id, command.bucket_args().timeout, cli.output).await;
            }
            match cli.output {
                Output::Json => println!("{}", serde_json::json!({"request_id": request.request_id})),
                Output::Text => println!("{}", request.request_id),
            }
            Ok(0)
        }
        Command::Drill { command } => {
            let connection = lifeboat_cli::drill::Connection {
                transport: cli.transport()?,
                state: cli.state_store(),
                client: cli.client().await?,
            };
            lifeboat_cli::drill::run(command, connection, cli.output == Output::Json).await
        }
        Command::Probe { url } => {
            let response = reqwest::get(url.as_str()).await.with_context(|| format!("GET {url}"))?;
            let ready = response.status().is_success();
            println!("{}", response.text().await.unwrap_or_default());
            Ok(if ready { 0 } else { 1 })
        }
        Command::Admin { command: AdminCommand::Init } => {
            for created in lifeboat_cli::serve::init(&cli.transport()?, &cli.state_store()).await? {
                println!("ready: {created}");
            }
            Ok(0)
        }
        Command::Serve {
            services,
            http_addr,
            role_name,
            allowed_accounts,
            check_interval,
            handler_timeout,
            plans,
            scheduler_tick,
        } => {
            let mut options = ServeOptions::new(cli.transport()?, services.clone());
            options.plans = lifeboat_cli::backup::load_plans(plans)?;
            options.scheduler.tick = Duration::from_secs((*scheduler_tick).max(1));
            options.state = cli.state_store();
            options.http_addr = match http_addr.as_str() {
                "none" | "" => None,
                addr => Some(addr.parse().with_context(|| format!("--http-addr {addr}: not an address:port"))?),
            };
            let check_interval = *check_interval;
            let (role_name, allowed_accounts) = (role_name.clone(), allowed_accounts.clone());
            options.role_name = role_name;
            options.allowed_accounts = allowed_accounts.into_iter().filter(|a| !a.is_empty()).collect();
            options.ebs.service.wait.check_initial = Duration::from_secs_f64(check_interval.max(0.05));
            options.dynamodb.service.wait.check_initial = options.ebs.service.wait.check_initial;
            options.ec2.service.wait.check_initial = options.ebs.service.wait.check_initial;
            options.rds.service.wait.check_initial = options.ebs.service.wait.check_initial;
            options.config.service.wait.check_initial = options.ebs.service.wait.check_initial;
            options.s3.service.wait.check_initial = options.ebs.service.wait.check_initial;
            options.discovery.s3_vault = lifeboat_s3::vault::from_env();
            let quotas = lifeboat_common::quota::QuotaConfig::from_env().map_err(anyhow::Error::msg)?;
            for service in [
                &mut options.ebs.service,
                &mut options.dynamodb.service,
                &mut options.ec2.service,
                &mut options.rds.service,
                &mut options.config.service,
                &mut options.s3.service,
            ] {
                service.quotas = quotas.clone();
            }
            options.set_handler_timeout(Duration::from_secs((*handler_timeout).max(1)));
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            serve(options, shutdown).await?;
            Ok(0)
        }
        Command::Restore { command } => {
            let client = cli.client().await?;
            match command.clone() {
                RestoreCommand::Submit { file, dry_run, watch, request_id, timeout, confirm_large, all_resources } => {
                    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
                    let generated = lifeboat_common::ids::new_request_id();
                    let mut request = request_file::load(&file, &text, generated)?;
                    if let Some(id) = request_id {
                        request.request_id = id;
                    }
                    request.dry_run |= dry_run;
                    if confirm_large {
                        request.options.get_or_insert_with(Default::default).confirm_large = true;
                    }
                    if all_resources {
                        for source in request.restore_sets.iter_mut().filter_map(|set| set.source.as_mut()) {
                            if source.tags.is_empty() && source.names.is_empty() {
                                source.all_resources = true;
                            }
                        }
                    }
                    // The same checks discovery makes, before anything is published.
                    if let Err(errors) = validate_request(&request, &Policy::default()) {
                        for error in &errors {
                            eprintln!("invalid request: {}: {}", error.field, error.message);
                        }
                        return Ok(render::exit_code(lifeboat_proto::Verdict::Rejected));
                    }
                    // The root of the request's trace; discovery's work continues it.
                    let span = tracing::info_span!(
                        "lifeboat.submit",
                        lifeboat.service = "cli",
                        lifeboat.request_id = %request.request_id,
                        lifeboat.restore_sets = request.restore_sets.len(),
                        trace_id = tracing::field::Empty,
                    );
                    lifeboat_common::telemetry::record_trace_id(&span);
                    client.submit(&request).instrument(span.clone()).await?;
                    if cli.output == Output::Text {
                        let trace = lifeboat_common::telemetry::trace_id(&span)
                            .map(|id| format!(", trace {id}"))
                            .unwrap_or_default();
                        eprintln!(
                            "submitted {} ({} restore sets{}{trace})",
                            request.request_id,
                            request.restore_sets.len(),
                            if request.dry_run { ", dry run" } else { "" }
                        );
                    }
                    drop(span);
                    // A dry run is only useful with its plan, so it is always followed.
                    if watch || request.dry_run {
                        follow(&client, &request.request_id, timeout, cli.output).await
                    } else {
                        if cli.output == Output::Json {
                            println!("{}", serde_json::json!({"request_id": request.request_id}));
                        } else {
                            println!("{}", request.request_id);
                        }
                        Ok(0)
                    }
                }
                RestoreCommand::List { state, limit } => {
                    let page = client.list(state.as_deref().unwrap_or(""), limit).await?;
                    match cli.output {
                        Output::Json => {
                            println!("{}", serde_json::to_string_pretty(&render::list_json(&page.requests))?)
                        }
                        Output::Text => print!("{}", render::list_table(&page.requests, std::time::SystemTime::now())),
                    }
                    Ok(0)
                }
                RestoreCommand::Retry { request_id, failed: _, set, watch, timeout } => {
                    let reply = client.retry(&request_id, &set).await?;
                    if cli.output == Output::Text {
                        eprintln!("retrying {} tasks of {request_id}", reply.task_ids.len());
                    }
                    if watch {
                        return follow(&client, &request_id, timeout, cli.output).await;
                    }
                    match cli.output {
                        Output::Json => println!(
                            "{}",
                            serde_json::json!({"request_id": request_id, "retried_task_ids": reply.task_ids})
                        ),
                        Output::Text => println!("{request_id}"),
                    }
                    Ok(0)
                }
                RestoreCommand::Cancel { request_id, reason, watch, timeout } => {
                    let reply = client.cancel(&request_id, &reason).await?;
                    if cli.output == Output::Text {
                        eprintln!(
                            "cancelled {request_id}: tasks not started end CANCELLED, started ones run to their end"
                        );
                    }
                    if watch {
                        return follow(&client, &request_id, timeout, cli.output).await;
                    }
                    let summary = reply.summary.unwrap_or_default();
                    match cli.output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&render::summary_json(&summary))?),
                        Output::Text => {
                            println!("{request_id}: {}", render::counts_line(&summary.counts.unwrap_or_default()))
                        }
                    }
                    Ok(0)
                }
                RestoreCommand::Watch { request_id, timeout } => {
                    follow(&client, &request_id, timeout, cli.output).await
                }
                RestoreCommand::Status { request_id } => {
                    let reply = client.status(&request_id, true).await?;
                    if !reply.error.is_empty() && !reply.found {
                        anyhow::bail!("{}", reply.error);
                    }
                    let summary = reply.summary.unwrap_or_default();
                    match cli.output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&render::summary_json(&summary))?),
                        Output::Text => print!("{}", render::table(&summary)),
                    }
                    Ok(if summary.r#final { render::exit_code(render::verdict(&summary)) } else { 0 })
                }
            }
        }
    }
}

/// `lifeboat config`: exports and restores go through the bus (and are followed like other
/// runs); diffs and dry runs are read in-process.
async fn run_config(cli: &Cli, command: &lifeboat_cli::config_cmd::ConfigCommand) -> anyhow::Result<i32> {
    use lifeboat_cli::config_cmd::{self, ConfigCommand};
    let json = cli.output == Output::Json;
    let request = match command {
        ConfigCommand::Diff(args) => return config_cmd::diff(args).await,
        ConfigCommand::Restore(args) if args.dry_run => return config_cmd::dry_run(args, json).await,
        ConfigCommand::Export(args) => config_cmd::export_request(args, chrono::Utc::now())?,
        ConfigCommand::Restore(args) => config_cmd::restore_request(args)?,
    };
    let (watch, timeout) = match command {
        ConfigCommand::Export(args) => (args.watch, args.timeout),
        ConfigCommand::Restore(args) => (true, args.timeout),
        ConfigCommand::Diff(_) => (false, None),
    };
    let client = cli.client().await?;
    client.submit(&request).await?;
    if cli.output == Output::Text {
        let what = if request.backup_run.is_some() { "config export run" } else { "config restore" };
        eprintln!("submitted {what} {}", request.request_id);
    }
    if watch {
        return follow(&client, &request.request_id, timeout, cli.output).await;
    }
    if json {
        println!("{}", serde_json::json!({"run_id": request.request_id}));
    } else {
        println!("{}", request.request_id);
    }
    Ok(0)
}

/// `backup plan validate`: errors as `FIELD: message` on stderr like a rejected restore
/// request's, or as JSON on stdout with `--output json`.
fn validate_plan(file: &str, output: Output) -> i32 {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: reading {file}: {e}");
            return 2;
        }
    };
    let errors = match lifeboat_plans::load(file, &text) {
        Ok(plan) => {
            let now = chrono::Utc::now();
            let next = plan.next_due(now);
            match output {
                Output::Json => {
                    let next_due = next.map(|(rule, at)| {
                        serde_json::json!({
                            "rule": rule.name,
                            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            "id": lifeboat_plans::due_id(&plan.name, &rule.name, at),
                        })
                    });
                    let rules: Vec<&str> = plan.rules.iter().map(|rule| rule.name.as_str()).collect();
                    println!(
                        "{}",
                        serde_json::json!({"valid": true, "plan": plan.name, "rules": rules, "next_due": next_due})
                    );
                }
                Output::Text => {
                    let count = plan.rules.len();
                    let next = next.map_or("never".to_string(), |(rule, at)| {
                        format!("{} ({})", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), rule.name)
                    });
                    let plural = if count == 1 { "" } else { "s" };
                    println!("plan {} is valid: {count} rule{plural}, next due {next}", plan.name);
                }
            }
            return 0;
        }
        Err(lifeboat_plans::LoadError::Syntax { path, message }) => {
            vec![lifeboat_plans::FieldError { field: path, message }]
        }
        Err(lifeboat_plans::LoadError::Invalid(errors)) => errors,
    };
    match output {
        Output::Json => println!("{}", serde_json::json!({"valid": false, "errors": errors})),
        Output::Text => {
            for error in &errors {
                eprintln!("{error}");
            }
        }
    }
    1
}

async fn follow(client: &Client, request_id: &str, timeout: Option<u64>, output: Output) -> anyhow::Result<i32> {
    let mut progress = (output == Output::Text).then(|| Progress::new(request_id));
    let summary = client
        .watch(request_id, timeout.map(Duration::from_secs), |summary| {
            if let Some(progress) = progress.as_mut() {
                progress.update(summary);
            }
        })
        .await;
    if let Some(progress) = &progress {
        progress.finish();
    }
    let summary = summary?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&render::summary_json(&summary))?),
        Output::Text => print!("{}", render::table(&summary)),
    }
    Ok(render::exit_code(render::verdict(&summary)))
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
