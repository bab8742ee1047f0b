//! How the SQS bus names its queues and how it receives: [`SqsConfig`], with defaults for AWS
//! and an environment mapping for services and the CLI.

use std::collections::BTreeMap;
use std::time::Duration;

use lifeboat_common::bus::BusError;

/// Every environment variable the configuration reads starts with this.
pub const ENV_PREFIX: &str = "LIFEBOAT_SQS_";
/// `LIFEBOAT_SQS_QUEUE_<LOGICAL_NAME>=<name or URL>`: `LIFEBOAT_SQS_QUEUE_WORK_EBS_DLQ` overrides
/// the queue `work-ebs-dlq`.
pub const ENV_QUEUE_OVERRIDE_PREFIX: &str = "LIFEBOAT_SQS_QUEUE_";

/// The most SQS allows in a redrive policy.
pub const MAX_RECEIVE_COUNT_LIMIT: u32 = 1000;
/// The longest long poll SQS allows.
pub const MAX_WAIT_TIME: Duration = Duration::from_secs(20);
/// The most messages one ReceiveMessage returns.
pub const MAX_RECEIVE_BATCH: i32 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsConfig {
    /// Put before every logical queue name: `lifeboat-` gives `lifeboat-requests.fifo`. One
    /// prefix per installation lets several share an account and region.
    pub queue_prefix: String,
    /// Queue names or URLs by logical name (`requests`, `requests-dlq`, `requests-redrive`,
    /// `work-ebs`, `work-ebs-dlq`, `work-ebs-redrive`, `status-events`...), for queues a deploy
    /// template named.
    /// A name or URL ending in `.fifo` is used as a FIFO queue, anything else as a standard one.
    pub queue_overrides: BTreeMap<String, String>,
    /// Receives after which SQS moves a message to the redrive queue. At most 1000 (the SQS
    /// limit), and at least the consumer loop's `max_deliveries`, so that the loop sees the last
    /// delivery and dead-letters it with its own reason; the redrive policy is only the backstop
    /// for messages whose handler never returns (a crash loop), which the consumer then reads
    /// from the redrive queue and dead-letters with a FAILED report.
    pub max_receive_count: u32,
    /// Long-poll wait of one ReceiveMessage (at most 20 s): an empty queue costs a request per
    /// wait, not a busy loop.
    pub wait_time: Duration,
    /// The queues' own visibility timeout, for receivers other than Lifeboat's consumer (which
    /// sets `QueueOptions::ack_wait` on every receive).
    pub visibility_timeout: Duration,
    /// Messages asked for per ReceiveMessage (1 to 10). Received messages wait in the source's
    /// buffer until the consumer loop has a free handler, while their visibility timeout runs.
    pub receive_batch: i32,
    /// Create a missing queue (and its dead-letter and redrive queues) on first use instead of failing.
    /// Meant for development against moto or LocalStack; in AWS the deploy template or
    /// `SqsBus::init_queues` creates them, and services need no `sqs:CreateQueue` permission.
    pub create_queues: bool,
    /// The DynamoDB table holding the aggregator's state, where a cancelled request is marked
    /// (item `pk` = request id, `sk` = `cancelled`) for every resource service to see.
    pub state_table: String,
    /// Server-side encryption of every queue Lifeboat creates: with this KMS key (id, ARN or
    /// alias) when given, else with SQS-managed keys (SSE-SQS). Messages hold restore targets
    /// and tags, so they are never stored in the clear.
    pub kms_key_id: Option<String>,
}

impl Default for SqsConfig {
    fn default() -> Self {
        Self {
            queue_prefix: "lifeboat-".to_string(),
            queue_overrides: BTreeMap::new(),
            max_receive_count: MAX_RECEIVE_COUNT_LIMIT,
            wait_time: MAX_WAIT_TIME,
            visibility_timeout: Duration::from_secs(30),
            receive_batch: MAX_RECEIVE_BATCH,
            create_queues: false,
            state_table: "lifeboat-state".to_string(),
            kms_key_id: None,
        }
    }
}

impl SqsConfig {
    /// The defaults, changed by `LIFEBOAT_SQS_*` variables of this process.
    pub fn from_env() -> Result<Self, BusError> {
        Self::from_vars(std::env::vars())
    }

    /// The defaults changed by these variables (tests pass their own):
    /// `LIFEBOAT_SQS_PREFIX`, `LIFEBOAT_SQS_MAX_RECEIVE_COUNT`, `LIFEBOAT_SQS_WAIT_SECONDS`,
    /// `LIFEBOAT_SQS_VISIBILITY_SECONDS`, `LIFEBOAT_SQS_RECEIVE_BATCH`,
    /// `LIFEBOAT_SQS_STATE_TABLE`, `LIFEBOAT_SQS_KMS_KEY_ID`, `LIFEBOAT_SQS_CREATE_QUEUES` (`true`/`false`) and `LIFEBOAT_SQS_QUEUE_<NAME>`, where
    /// `<NAME>` is the logical queue name in upper case with `_` for `-`.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, BusError> {
        let mut config = Self::default();
        for (name, value) in vars {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            let invalid = |expected: &str| BusError::Setup {
                what: name.clone(),
                message: format!("{value:?} is not {expected}"),
            };
            let seconds = || value.trim().parse::<u64>().map(Duration::from_secs).map_err(|_| invalid("whole seconds"));
            match key {
                "PREFIX" => config.queue_prefix = value.clone(),
                "MAX_RECEIVE_COUNT" => {
                    config.max_receive_count = value.trim().parse().map_err(|_| invalid("a count"))?;
                }
                "WAIT_SECONDS" => config.wait_time = seconds()?,
                "VISIBILITY_SECONDS" => config.visibility_timeout = seconds()?,
                "RECEIVE_BATCH" => config.receive_batch = value.trim().parse().map_err(|_| invalid("a count"))?,
                "STATE_TABLE" => config.state_table = value.clone(),
                "KMS_KEY_ID" => config.kms_key_id = Some(value.clone()).filter(|v| !v.trim().is_empty()),
                "CREATE_QUEUES" => {
                    config.create_queues = match value.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" | "" => false,
                        _ => return Err(invalid("true or false")),
                    }
                }
                _ => {
                    if let Some(logical) = name.strip_prefix(ENV_QUEUE_OVERRIDE_PREFIX) {
                        let logical = logical.to_ascii_lowercase().replace('_', "-");
                        config.queue_overrides.insert(logical, value.clone());
                    }
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings SQS would reject later, with the setting's name.
    pub fn validate(&self) -> Result<(), BusError> {
        let setup = |what: &str, message: String| Err(BusError::Setup { what: what.to_string(), message });
        if !(1..=MAX_RECEIVE_COUNT_LIMIT).contains(&self.max_receive_count) {
            return setup(
                "max_receive_count",
                format!("{} is outside 1..={MAX_RECEIVE_COUNT_LIMIT}, the range SQS allows", self.max_receive_count),
            );
        }
        if self.wait_time > MAX_WAIT_TIME {
            return setup("wait_time", format!("{:?} is longer than the 20 s SQS allows", self.wait_time));
        }
        if !(1..=MAX_RECEIVE_BATCH).contains(&self.receive_batch) {
            return setup("receive_batch", format!("{} is outside 1..=10", self.receive_batch));
        }
        Ok(())
    }
}
