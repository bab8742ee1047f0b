//! AWS quotas held by every replica together: token buckets per account, region and API family,
//! and concurrency caps (copies in flight, restores in flight), both kept in the bus's
//! [`SharedStore`] so that two or ten workers stay under the limits AWS enforces per account.
//!
//! A bucket is one record holding its "theoretical arrival time" (the generic cell rate
//! algorithm): taking a token moves it forward by one interval with compare-and-set, and a
//! caller that would exceed the burst sleeps until its token is due. A cap is one record listing
//! its holders (task keys) with a lease, so a holder that dies without releasing frees its slot
//! when the lease runs out, and a redelivered task finds the slot it already holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Mutex;
use tracing::debug;

use crate::bus::{BusError, Result};
use crate::shared::{key_part, update, SharedStore};

/// The API families AWS meters separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// EC2 non-mutating actions (Describe*): 100 burst, 20 per second.
    Ec2Describe,
    /// EC2 mutating actions (CreateTags, CopySnapshot, ModifySnapshotAttribute...): 50 burst, 5 per second.
    Ec2Mutate,
    /// CreateVolume: 100 burst, 5 per second.
    CreateVolume,
    /// CreateSnapshot(s): 100 burst, 5 per second.
    CreateSnapshot,
    /// CopyImage: 100 burst, 1 per second.
    CopyImage,
    /// RunInstances: 5 burst, 2 per second.
    RunInstances,
    /// Route 53: 5 requests per second per account.
    Route53,
    /// DynamoDB RestoreTableFromBackup / RestoreTableToPointInTime: 10 per second.
    DynamoDbRestore,
}

impl Api {
    pub const ALL: [Api; 8] = [
        Api::Ec2Describe,
        Api::Ec2Mutate,
        Api::CreateVolume,
        Api::CreateSnapshot,
        Api::CopyImage,
        Api::RunInstances,
        Api::Route53,
        Api::DynamoDbRestore,
    ];

    /// The name used in configuration and in store keys.
    pub fn name(self) -> &'static str {
        match self {
            Api::Ec2Describe => "ec2.describe",
            Api::Ec2Mutate => "ec2.mutate",
            Api::CreateVolume => "ec2.create-volume",
            Api::CreateSnapshot => "ec2.create-snapshot",
            Api::CopyImage => "ec2.copy-image",
            Api::RunInstances => "ec2.run-instances",
            Api::Route53 => "route53",
            Api::DynamoDbRestore => "dynamodb.restore",
        }
    }

    /// AWS's documented default for the family.
    pub fn default_rate(self) -> Rate {
        let rate = |burst, per_second| Rate { burst, per_second };
        match self {
            Api::Ec2Describe => rate(100.0, 20.0),
            Api::Ec2Mutate => rate(50.0, 5.0),
            Api::CreateVolume | Api::CreateSnapshot => rate(100.0, 5.0),
            Api::CopyImage => rate(100.0, 1.0),
            Api::RunInstances => rate(5.0, 2.0),
            Api::Route53 => rate(5.0, 5.0),
            Api::DynamoDbRestore => rate(10.0, 10.0),
        }
    }

    fn parse(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|api| api.name() == name)
    }
}

/// A token bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub burst: f64,
    pub per_second: f64,
}

impl Rate {
    /// AWS's bucket less a tenth of its burst: calls granted a token at the refill rate reach
    /// AWS a little bunched (handlers and connections add jitter), and other clients of the
    /// account spend the same bucket; the tokens left over absorb both, so the refill rate is
    /// kept without being throttled.
    pub fn with_headroom(self) -> Self {
        Self { burst: (self.burst * 0.9).floor().max(1.0), ..self }
    }
}

/// The concurrency caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cap {
    /// EBS snapshot copies in flight per destination region: 20.
    SnapshotCopies,
    /// RDS snapshot copies in flight per destination region: 20.
    RdsCopies,
    /// DynamoDB table restores in flight per account and region: 50.
    DynamoDbRestores,
}

impl Cap {
    pub const ALL: [Cap; 3] = [Cap::SnapshotCopies, Cap::RdsCopies, Cap::DynamoDbRestores];

    pub fn name(self) -> &'static str {
        match self {
            Cap::SnapshotCopies => "ebs.copies",
            Cap::RdsCopies => "rds.copies",
            Cap::DynamoDbRestores => "dynamodb.restores",
        }
    }

    pub fn default_limit(self) -> u32 {
        match self {
            Cap::SnapshotCopies | Cap::RdsCopies => 20,
            Cap::DynamoDbRestores => 50,
        }
    }

    fn parse(name: &str) -> Option<Cap> {
        Cap::ALL.into_iter().find(|cap| cap.name() == name)
    }
}

/// Rates and caps: AWS's defaults (less a tenth of the burst, see [`Rate::with_headroom`])
/// unless configured. Parsed from `LIFEBOAT_QUOTAS`, e.g.
/// `ec2.create-volume=200/10,111122223333:ec2.describe=400/40,ebs.copies=40`, or `off`
/// (no buckets at all: for emulators, which enforce nothing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuotaConfig {
    /// No token buckets (caps still hold).
    pub unlimited: bool,
    pub rates: BTreeMap<Api, Rate>,
    pub account_rates: BTreeMap<(String, Api), Rate>,
    pub caps: BTreeMap<Cap, u32>,
}

/// The environment variable [`QuotaConfig::from_env`] reads.
pub const QUOTAS_ENV: &str = "LIFEBOAT_QUOTAS";

impl QuotaConfig {
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        let mut config = QuotaConfig::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "off" {
                config.unlimited = true;
                continue;
            }
            let (name, value) =
                item.split_once('=').ok_or_else(|| format!("{QUOTAS_ENV}: `{item}` is not NAME=VALUE"))?;
            let (account, name) = match name.split_once(':') {
                Some((account, name)) => (Some(account.to_string()), name),
                None => (None, name),
            };
            if let Some(cap) = Cap::parse(name) {
                let limit = value.parse().map_err(|_| format!("{QUOTAS_ENV}: {name}: `{value}` is not a count"))?;
                config.caps.insert(cap, limit);
                continue;
            }
            let api = Api::parse(name).ok_or_else(|| {
                let known: Vec<_> =
                    Api::ALL.iter().map(|a| a.name()).chain(Cap::ALL.iter().map(|c| c.name())).collect();
                format!("{QUOTAS_ENV}: unknown quota `{name}` (known: {})", known.join(", "))
            })?;
            let rate =
                parse_rate(value).ok_or_else(|| format!("{QUOTAS_ENV}: {name}: `{value}` is not BURST/PER_SECOND"))?;
            match account {
                Some(account) => config.account_rates.insert((account, api), rate),
                None => config.rates.insert(api, rate),
            };
        }
        Ok(config)
    }

    /// From `LIFEBOAT_QUOTAS`, AWS's defaults when it is unset.
    pub fn from_env() -> std::result::Result<Self, String> {
        match std::env::var(QUOTAS_ENV) {
            Ok(spec) => Self::parse(&spec),
            Err(_) => Ok(Self::default()),
        }
    }

    /// The bucket of `api` in `account`; `None` when unlimited.
    pub fn rate(&self, account: &str, api: Api) -> Option<Rate> {
        if self.unlimited {
            return None;
        }
        let rate = self.account_rates.get(&(account.to_string(), api)).or_else(|| self.rates.get(&api));
        Some(rate.copied().unwrap_or_else(|| api.default_rate().with_headroom()))
    }

    pub fn limit(&self, cap: Cap) -> u32 {
        self.caps.get(&cap).copied().unwrap_or_else(|| cap.default_limit())
    }
}

fn parse_rate(value: &str) -> Option<Rate> {
    let (burst, per_second) = value.split_once('/')?;
    let rate = Rate { burst: burst.trim().parse().ok()?, per_second: per_second.trim().parse().ok()? };
    (rate.burst >= 1.0 && rate.per_second > 0.0).then_some(rate)
}

/// Lost compare-and-set races in a row before a take or an acquire gives up with an error.
const MAX_RACES: u32 = 100;

/// The quotas of every account Lifeboat works in, over a shared store.
pub struct Quotas {
    store: Arc<dyn SharedStore>,
    config: QuotaConfig,
    /// Takers of one bucket in this process queue here, so the store only sees other replicas race.
    local: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default()
}

impl Quotas {
    pub fn new(store: Arc<dyn SharedStore>, config: QuotaConfig) -> Arc<Self> {
        Arc::new(Self { store, config, local: Mutex::new(HashMap::new()) })
    }

    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// Takes one token of `api` in `account` and `region`, waiting until one is due. Store errors
    /// are returned (the caller retries later rather than call AWS unmetered).
    pub async fn take(&self, account: &str, region: &str, api: Api) -> Result<()> {
        let Some(rate) = self.config.rate(account, api) else {
            return Ok(());
        };
        let key = format!("quota.{}.{}.{}", key_part(account), key_part(region), key_part(api.name()));
        let local = self.local.lock().await.entry(key.clone()).or_default().clone();
        let _queue = local.lock().await;
        let interval = (1_000_000.0 / rate.per_second) as u64;
        let burst = (rate.burst * 1_000_000.0 / rate.per_second) as u64;
        for _ in 0..MAX_RACES {
            let current = self.store.get(&key).await?;
            let due: u64 =
                current.as_ref().and_then(|c| std::str::from_utf8(&c.value).ok()?.parse().ok()).unwrap_or_default();
            let now = now_micros();
            let next = due.max(now) + interval;
            let allowed_at = next.saturating_sub(burst);
            if allowed_at > now {
                let wait = Duration::from_micros(allowed_at - now);
                debug!(quota = %key, wait_ms = wait.as_millis() as u64, "waiting for a token");
                crate::metrics::quota_waited(api.name(), wait);
                tokio::time::sleep(wait).await;
                continue;
            }
            let expected = current.map(|c| c.version).unwrap_or(0);
            if self.store.put_if(&key, Bytes::from(next.to_string()), expected).await?.is_some() {
                return Ok(());
            }
        }
        Err(BusError::Store(format!("{key}: too many replicas racing for the bucket")))
    }

    /// The record of a cap in one scope (`<account>.<region>`).
    pub fn slot_key(cap: Cap, account: &str, region: &str) -> String {
        format!("slots.{}.{}.{}", key_part(cap.name()), key_part(account), key_part(region))
    }

    /// Takes a slot of `cap` for `holder` (a task key) for at most `lease`; true when taken or
    /// already held, false when the cap is full. A slot outlives its holder only by the lease.
    pub async fn acquire(&self, slot_key: &str, cap: Cap, holder: &str, lease: Duration) -> Result<bool> {
        let limit = self.config.limit(cap) as usize;
        let now = now_micros() / 1_000_000;
        let expires = now + lease.as_secs();
        update(self.store.as_ref(), slot_key, MAX_RACES, |current| {
            let mut holders = decode_holders(current);
            let before = holders.len();
            holders.retain(|_, until| *until > now);
            let pruned = holders.len() != before;
            if let Some(until) = holders.get_mut(holder) {
                *until = expires;
                return (Some(encode_holders(&holders)), true);
            }
            if holders.len() >= limit {
                return (pruned.then(|| encode_holders(&holders)), false);
            }
            holders.insert(holder.to_string(), expires);
            (Some(encode_holders(&holders)), true)
        })
        .await
    }

    /// How many slots of a cap are held now.
    pub async fn held(&self, slot_key: &str) -> Result<usize> {
        held(self.store.as_ref(), slot_key).await
    }
}

/// How many slots of the cap recorded at `slot_key` are held now (leases not run out).
pub async fn held(store: &dyn SharedStore, slot_key: &str) -> Result<usize> {
    let now = now_micros() / 1_000_000;
    let current = store.get(slot_key).await?;
    Ok(decode_holders(current.as_ref().map(|c| &c.value)).values().filter(|until| **until > now).count())
}

/// Gives a slot back (idempotent). A free function: the restore shell releases a finished task's
/// slots with only the store at hand.
pub async fn release(store: &dyn SharedStore, slot_key: &str, holder: &str) -> Result<()> {
    update(store, slot_key, MAX_RACES, |current| {
        let mut holders = decode_holders(current);
        let removed = holders.remove(holder).is_some();
        (removed.then(|| encode_holders(&holders)), ())
    })
    .await
}

fn decode_holders(value: Option<&Bytes>) -> BTreeMap<String, u64> {
    value.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default()
}

fn encode_holders(holders: &BTreeMap<String, u64>) -> Bytes {
    Bytes::from(serde_json::to_vec(holders).unwrap_or_default())
}
