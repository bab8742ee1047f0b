//! The scheduler: every tick, each rule's due times within its start window become backup runs,
//! exactly once per due time however many replicas tick and however often they restart. The
//! shared store holds one record per due id, created if absent: the replica whose create wins
//! publishes the run; everyone else, then and later, sees the record and does nothing. A winner
//! that dies before publishing leaves its record unpublished, and after [`TAKEOVER`] another
//! replica publishes instead; the run's request id comes from the due id, so even a run
//! published twice is planned once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use lifeboat_common::bus::{Bus, BusError, OutgoingMessage, Result};
use lifeboat_common::events::{accepted_event, Reporter};
use lifeboat_common::shared::key_part;
use lifeboat_common::subjects;
use lifeboat_plans::{due_between, Due, Plan, Rule};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the time comes from: the system's, or one a test moves by hand.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is set.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(at)))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long a due time's record may stay unpublished before another replica publishes it.
pub const TAKEOVER: TimeDelta = TimeDelta::seconds(120);

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// How often due times are looked for. A due time is found on the first tick at or after
    /// it, so this is the longest a run starts late.
    pub tick: Duration,
    /// Names this replica in the records it writes, for operators.
    pub replica: String,
    /// How often the retention sweep runs over every account and region the plans back up to
    /// (sources and copy destinations); None: never (`lifeboat backup sweep` by hand).
    pub sweep_every: Option<Duration>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".to_string());
        Self {
            tick: Duration::from_secs(30),
            replica: format!("{host}:{}", std::process::id()),
            sweep_every: Some(Duration::from_secs(3600)),
        }
    }
}

/// The record of a fired due time.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Fired {
    run_id: String,
    by: String,
    /// RFC 3339, by the scheduler's clock.
    at: String,
    published: bool,
}

/// Called with the plan, the rule's name and the run id of every run this replica publishes for
/// a rule with a drill: the drill restores what the run made, so it follows the run.
pub type OnPublished = Arc<dyn Fn(Plan, String, String) + Send + Sync>;

pub struct Scheduler {
    plans: Vec<Plan>,
    bus: Arc<dyn Bus>,
    reporter: Reporter,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    drills: Option<OnPublished>,
}

/// The shared-store key of a due time's record.
pub fn fired_key(due_id: &str) -> String {
    format!("schedule.fired.{}", key_part(due_id))
}

impl Scheduler {
    pub fn new(plans: Vec<Plan>, bus: Arc<dyn Bus>, clock: Arc<dyn Clock>, config: SchedulerConfig) -> Arc<Self> {
        Self::with_drills(plans, bus, clock, config, None)
    }

    /// A scheduler that hands every run of a rule with a drill to `drills` once published.
    pub fn with_drills(
        plans: Vec<Plan>,
        bus: Arc<dyn Bus>,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
        drills: Option<OnPublished>,
    ) -> Arc<Self> {
        let reporter = Reporter::new(bus.clone(), "scheduler");
        Arc::new(Self { plans, bus, reporter, clock, config, drills })
    }

    /// One pass over every rule: the due times in `(now - start window, now]` that no replica
    /// fired yet are published. Returns the run ids this replica published.
    pub async fn tick(&self) -> Result<Vec<String>> {
        let now = self.clock.now();
        let mut published = Vec::new();
        for plan in &self.plans {
            for rule in &plan.rules {
                // A continuous check not started by the next one is superseded by it.
                let dues = due_between(&plan.name, rule, now - rule.start_window, now);
                for due in dues.iter().filter(|due| now - due.at < lifeboat_plans::start_window(rule, due.at)) {
                    if let Some(run_id) = self.fire(plan, rule, due, now).await? {
                        published.push(run_id);
                    }
                }
            }
        }
        Ok(published)
    }

    /// Publishes the run of `due` if this replica is the one to: its create of the due time's
    /// record won, or the record's publisher has not published for [`TAKEOVER`].
    async fn fire(&self, plan: &Plan, rule: &Rule, due: &Due, now: DateTime<Utc>) -> Result<Option<String>> {
        let store = self.bus.shared();
        let key = fired_key(&due.id);
        let run = crate::run::backup_run(plan, rule, due.id.clone(), due.at, false);
        let request = crate::run::request(run, &self.config.replica);
        let mut record = Fired {
            run_id: request.request_id.clone(),
            by: self.config.replica.clone(),
            at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            published: false,
        };
        let encode = |record: &Fired| serde_json::to_vec(record).map(bytes::Bytes::from).map_err(store_error);
        let version = match store.put_if(&key, encode(&record)?, 0).await? {
            Some(version) => version,
            None => {
                let Some(found) = store.get(&key).await? else { return Ok(None) };
                let earlier: Fired = serde_json::from_slice(&found.value).map_err(store_error)?;
                let stale = DateTime::parse_from_rfc3339(&earlier.at).map_or(true, |at| now - at.to_utc() > TAKEOVER);
                if earlier.published || !stale {
                    return Ok(None);
                }
                warn!(due = %due.id, by = %earlier.by, "a due time was claimed but not published; publishing it");
                match store.put_if(&key, encode(&record)?, found.version).await? {
                    Some(version) => version,
                    None => return Ok(None),
                }
            }
        };
        let run_id = request.request_id.clone();
        // Recorded first, as the API and the CLI do, so the stall sweep gives it a verdict.
        self.reporter.report(accepted_event(&run_id, "scheduler")).await?;
        let message = OutgoingMessage::proto(subjects::RESTORE_REQUESTS, &request)
            .dedupe_id(run_id.clone())
            .header(subjects::HEADER_REQUEST_ID, run_id.clone());
        self.bus.publish(message).await?;
        record.published = true;
        if store.put_if(&key, encode(&record)?, version).await?.is_none() {
            // Another replica took over meanwhile; the run id makes its publish the same run.
            warn!(due = %due.id, "the due time's record changed while publishing");
        }
        info!(due = %due.id, run_id = %run_id, plan = %plan.name, rule = %rule.name, "backup run published");
        if let (Some(drills), Some(_)) = (&self.drills, &rule.drill) {
            drills(plan.clone(), rule.name.clone(), run_id.clone());
        }
        Ok(Some(run_id))
    }

    /// Every account and region the plans' points live in: each rule's, and its copies'.
    pub fn sweep_targets(&self) -> Vec<lifeboat_plans::sweep::Target> {
        let mut targets = std::collections::BTreeSet::new();
        for rule in self.plans.iter().flat_map(|p| &p.rules) {
            let accounts: Vec<String> =
                if rule.selection.accounts.is_empty() { vec![String::new()] } else { rule.selection.accounts.clone() };
            for account in &accounts {
                targets.extend(rule.selection.regions.iter().map(|r| (account.clone(), r.clone())));
                for copy in &rule.copy_to {
                    targets.insert((copy.account.clone().unwrap_or_else(|| account.clone()), copy.region.clone()));
                }
            }
        }
        targets.into_iter().map(|(account_id, region)| lifeboat_plans::sweep::Target { account_id, region }).collect()
    }

    /// The retention sweep over [`Self::sweep_targets`]: expired points go as their locks allow
    /// (never with the governance override), cold ones move to the archive tier.
    pub async fn sweep(&self, accounts: &lifeboat_common::aws::Accounts) -> lifeboat_plans::sweep::SweepReport {
        let options = lifeboat_plans::sweep::SweepOptions { targets: self.sweep_targets(), ..Default::default() };
        let report =
            lifeboat_plans::sweep::sweep(accounts, self.bus.shared().as_ref(), &options, self.clock.now()).await;
        let deleted =
            report.points.iter().filter(|p| matches!(p.outcome, lifeboat_plans::sweep::Outcome::Deleted { .. }));
        info!(
            points = report.points.len(),
            deleted = deleted.count(),
            failed = report.has_failures(),
            "retention sweep"
        );
        for failure in &report.failed_targets {
            warn!(account = %failure.target.account_id, region = %failure.target.region, error = %failure.error, "cannot sweep");
        }
        report
    }

    /// Ticks until `shutdown`, and sweeps every `sweep_every` with `accounts`. A failed tick (the
    /// bus away) is logged and tried again at the next.
    pub async fn run(
        self: Arc<Self>,
        accounts: Arc<lifeboat_common::aws::Accounts>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let rules: usize = self.plans.iter().map(|p| p.rules.len()).sum();
        info!(plans = self.plans.len(), rules, tick = ?self.config.tick, "scheduler started");
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            if let Err(e) = self.tick().await {
                warn!(error = %e, "a scheduler tick failed; trying again at the next");
            }
            if let Some(every) = self.config.sweep_every {
                if last_sweep.is_none_or(|at| at.elapsed() >= every) {
                    last_sweep = Some(tokio::time::Instant::now());
                    self.sweep(&accounts).await;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.config.tick) => {}
            }
        }
    }
}

fn store_error(e: serde_json::Error) -> BusError {
    BusError::Store(format!("a due time's record: {e}"))
}
