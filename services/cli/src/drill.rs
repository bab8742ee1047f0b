//! `lifeboat drill run` (a rule's restore drill, to the end, in this process), `lifeboat drill
//! report` (a stored drill's outcome per resource) and `lifeboat drill sweep` (what crashed
//! drills left in an account and region).

use std::time::Duration;

use clap::Subcommand;
use lifeboat_aggregator::store::Store;
use lifeboat_common::aws::{load_base_config, Accounts, DEFAULT_ROLE_NAME};
use lifeboat_common::bus::BusError;
use lifeboat_proto::{RequestSummary, StatusEvent};
use lifeboat_scheduler::drill::{stored_report, sweep_leftovers, DrillConfig, DrillReport, Drills, Follow};

use crate::client::Client;
use crate::serve::{StateStore, Transport};

#[derive(Subcommand)]
pub enum DrillCommand {
    /// Restore the latest recovery points of a rule's drill into its target, validate and time
    /// them, delete them; prints the report. Exit 0 only if every resource was validated and
    /// torn down.
    Run {
        /// The plan file.
        plan: String,
        #[arg(long)]
        rule: String,
        /// Seconds to wait for the restore's verdict.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// The role assumed in another account.
        #[arg(long, env = "LIFEBOAT_ROLE_NAME", default_value = DEFAULT_ROLE_NAME)]
        role_name: String,
    },
    /// A drill's report: per resource, restored in N s, validated, torn down.
    Report { drill_id: String },
    /// Delete every resource a drill left (tagged `lifeboat:request-id=drill-*`) in a region.
    Sweep {
        #[arg(long)]
        region: String,
        /// Default: the caller's account.
        #[arg(long, default_value = "")]
        account: String,
        /// The role assumed in another account.
        #[arg(long, env = "LIFEBOAT_ROLE_NAME", default_value = DEFAULT_ROLE_NAME)]
        role_name: String,
    },
}

/// Where the drill's request goes and its outcome comes from.
pub struct Connection {
    pub transport: Transport,
    pub state: StateStore,
    pub client: Client,
}

/// A drill's outcome as the status API and the aggregator's records give it.
pub struct StoreFollow {
    pub client: Client,
    pub store: Store,
}

impl Follow for StoreFollow {
    async fn final_summary(&self, request_id: &str, timeout: Duration) -> Result<RequestSummary, BusError> {
        self.client.watch(request_id, Some(timeout), |_| {}).await
    }

    async fn events(&self, request_id: &str) -> Result<Vec<StatusEvent>, BusError> {
        let recorded = self.store.events(request_id, 0).await?;
        Ok(recorded.into_iter().filter_map(|r| r.event).collect())
    }
}

/// A drill's outcome from the aggregator's records alone, polled: what the scheduler service
/// follows its drills with (it has no status client of its own, on either transport).
#[derive(Clone)]
pub struct RecordsFollow {
    pub store: Store,
}

/// How often [`RecordsFollow`] reads a request's summary while it waits for the verdict.
const POLL: Duration = Duration::from_secs(2);

impl Follow for RecordsFollow {
    async fn final_summary(&self, request_id: &str, timeout: Duration) -> Result<RequestSummary, BusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(summary) = self.store.summary(request_id, usize::MAX).await? {
                if summary.r#final {
                    return Ok(summary);
                }
            }
            if tokio::time::Instant::now() + POLL > deadline {
                return Err(BusError::Receive(format!("no verdict for {request_id} within {}s", timeout.as_secs())));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn events(&self, request_id: &str) -> Result<Vec<StatusEvent>, BusError> {
        let recorded = self.store.events(request_id, 0).await?;
        Ok(recorded.into_iter().filter_map(|r| r.event).collect())
    }
}

/// The scheduler's drill hook: after each published run of a rule with a drill, waits for the
/// run's verdict, then runs the drill in the background and logs its outcome.
pub fn scheduled_drills(
    bus: std::sync::Arc<dyn lifeboat_common::Bus>,
    accounts: std::sync::Arc<Accounts>,
    store: Store,
) -> lifeboat_scheduler::scheduler::OnPublished {
    let follow = RecordsFollow { store };
    let drills = std::sync::Arc::new(Drills::new(bus, accounts, follow.clone(), DrillConfig::default()));
    std::sync::Arc::new(move |plan, rule, run_id| {
        let (drills, follow) = (drills.clone(), follow.clone());
        tokio::spawn(async move {
            let timeout = DrillConfig::default().verdict_timeout;
            if let Err(e) = follow.final_summary(&run_id, timeout).await {
                tracing::warn!(run_id, error = %e, "the run has no verdict; its drill does not run");
                return;
            }
            match drills.run(&plan, &rule).await {
                Ok(report) => tracing::info!(
                    drill_id = %report.drill_id,
                    passed = report.passed(),
                    "restore drill of {}/{rule} done",
                    plan.name
                ),
                Err(e) => tracing::warn!(plan = %plan.name, rule, error = %e, "restore drill failed"),
            }
        });
    })
}

/// Runs the command; the exit code is 0, or 1 when a drill did not pass.
pub async fn run(command: &DrillCommand, connection: Connection, json_output: bool) -> anyhow::Result<i32> {
    let aws = load_base_config().await;
    match command {
        DrillCommand::Run { plan, rule, timeout, role_name } => {
            let plan = crate::backup::load_plan(plan)?;
            let connected = connection.transport.connect(&aws).await?;
            let store = connection.state.open(&connected, &aws).await?;
            let follow = StoreFollow { client: connection.client, store };
            let config = DrillConfig { verdict_timeout: Duration::from_secs(*timeout), ..Default::default() };
            let drills = Drills::new(connected.bus, Accounts::new(aws, role_name.clone()), follow, config);
            let report = drills.run(&plan, rule).await?;
            print_report(&report, json_output)?;
            Ok(if report.passed() { 0 } else { 1 })
        }
        DrillCommand::Report { drill_id } => {
            let connected = connection.transport.connect(&aws).await?;
            let Some(report) = stored_report(connected.bus.shared().as_ref(), drill_id).await? else {
                anyhow::bail!("no drill {drill_id}");
            };
            print_report(&report, json_output)?;
            Ok(if report.passed() { 0 } else { 1 })
        }
        DrillCommand::Sweep { region, account, role_name } => {
            let accounts = Accounts::new(aws, role_name.clone());
            let deleted = sweep_leftovers(&accounts, account, region).await?;
            if json_output {
                println!("{}", serde_json::to_string_pretty(&deleted)?);
            } else if deleted.is_empty() {
                println!("no drill leftovers in {region}");
            } else {
                println!("deleted {} drill leftovers in {region}: {}", deleted.len(), deleted.join(", "));
            }
            Ok(0)
        }
    }
}

fn print_report(report: &DrillReport, json_output: bool) -> anyhow::Result<()> {
    if json_output {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", render(report));
    }
    Ok(())
}

/// The report as text: a line for the drill, one per resource.
pub fn render(report: &DrillReport) -> String {
    let target = format!("{}/{} ({})", report.target_account, report.target_region, report.target_subnet);
    let mut out = format!(
        "drill {} of {}/{} into {target}: restore {}, {}\n",
        report.drill_id,
        report.plan,
        report.rule,
        report.verdict,
        if report.passed() { "passed" } else { "FAILED" }
    );
    for resource in &report.resources {
        let restored = match resource.restore_seconds {
            Some(seconds) => format!("restored in {seconds:.1} s"),
            None => "not restored".to_string(),
        };
        let validated = if resource.validated {
            "validated".to_string()
        } else {
            format!("NOT validated ({})", resource.validation)
        };
        let torn_down = if resource.torn_down {
            "torn down".to_string()
        } else if report.finished_at.is_empty() {
            "not torn down yet".to_string()
        } else {
            format!("NOT torn down ({})", resource.teardown)
        };
        out.push_str(&format!(
            "  {} {} from {}: {restored}, {validated}, {torn_down}\n",
            resource.resource_type, resource.source_resource_id, resource.backup_id
        ));
    }
    out
}
