//! AWS access for every service: one `SdkConfig` per (account, region), reached by STS
//! AssumeRole when the account is not the caller's, and the classification of AWS errors into
//! retry / fail-the-task / reject. Every client built here records its calls and throttles
//! ([`AwsMetrics`]) and traces each operation as a span ([`AwsTracing`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ec2::config::retry::{RetryPartition, TokenBucket};
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::sync::{Mutex, OnceCell};

use crate::aws_trace::AwsTracing;
use crate::metrics::AwsMetrics;

/// Default name of the role Lifeboat assumes in every other account.
pub const DEFAULT_ROLE_NAME: &str = "LifeboatRestoreRole";

/// What to do about a failed AWS call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, a quota that frees up: try again later with backoff.
    Retryable,
    /// The task cannot succeed as asked (bad target, access denied, not found): fail it.
    TaskFailure,
}

/// A classified AWS error that keeps the AWS error code.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{operation} failed ({code}): {message}")]
pub struct AwsError {
    pub class: ErrorClass,
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    /// Set when a cap was full: the shell re-reads that cap's record (shared by every waiter
    /// in the process) before it steps the task again, instead of stepping it to find out.
    pub full_slot: Option<FullSlot>,
}

/// A cap that was full when a task asked for one of its slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullSlot {
    /// The cap's record in the shared store ([`crate::quota::Quotas::slot_key`]).
    pub key: String,
    pub limit: usize,
}

impl AwsError {
    pub fn task_failure(operation: &'static str, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { class: ErrorClass::TaskFailure, operation, code: code.into(), message: message.into(), full_slot: None }
    }

    pub fn retryable(operation: &'static str, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { class: ErrorClass::Retryable, operation, code: code.into(), message: message.into(), full_slot: None }
    }

    /// Retryable: every slot of the cap recorded at `slot_key` is taken.
    pub fn slot_full(
        operation: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
        slot_key: &str,
        limit: usize,
    ) -> Self {
        Self {
            full_slot: Some(FullSlot { key: slot_key.to_string(), limit }),
            ..Self::retryable(operation, code, message)
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::Retryable
    }
}

/// Error codes that mean "slow down" across AWS services.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestTimeout",
    "RequestTimeoutException",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Quotas on operations in flight: they free up as other operations finish.
const IN_FLIGHT_QUOTA_CODES: &[&str] = &[
    "ResourceLimitExceeded",
    "SnapshotCreationPerVolumeRateExceeded",
    "ConcurrentSnapshotLimitExceeded",
    "SnapshotQuotaExceeded",
    "IncorrectState",
];

const TRANSIENT_CODES: &[&str] =
    &["InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "InsufficientInstanceCapacity"];

/// Whether an AWS error code means "slow down" (counted in `lifeboat_aws_throttles_total`).
pub fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// Classifies by AWS error code and HTTP status.
pub fn classify_code(code: Option<&str>, status: u16) -> ErrorClass {
    let code = code.unwrap_or_default();
    if status >= 500
        || status == 429
        || THROTTLING_CODES.contains(&code)
        || IN_FLIGHT_QUOTA_CODES.contains(&code)
        || TRANSIENT_CODES.contains(&code)
    {
        ErrorClass::Retryable
    } else {
        ErrorClass::TaskFailure
    }
}

/// Classifies an SDK error from `operation`.
pub fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code();
            let message = context.err().message().unwrap_or_default().to_string();
            AwsError {
                class: classify_code(code, status),
                operation,
                code: code.map(str::to_string).unwrap_or_else(|| format!("HTTP{status}")),
                message,
                full_slot: None,
            }
        }
        SdkError::TimeoutError(_) => AwsError::retryable(operation, "Timeout", display_chain(&err)),
        SdkError::DispatchFailure(_) => AwsError::retryable(operation, "DispatchFailure", display_chain(&err)),
        SdkError::ResponseError(_) => AwsError::retryable(operation, "ResponseError", display_chain(&err)),
        SdkError::ConstructionFailure(_) => {
            AwsError::task_failure(operation, "ConstructionFailure", display_chain(&err))
        }
        _ => AwsError::retryable(operation, "Unknown", display_chain(&err)),
    }
}

fn display_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The standard credential chain and `AWS_ENDPOINT_URL`, so the same code runs against real
/// AWS and against moto. Unless `AWS_RETRY_MODE` says otherwise, the SDK retries in adaptive
/// mode: besides backing off, it rate-limits its own calls once AWS starts throttling them, per
/// retry partition (see [`retry_partition`]). Every call has a deadline ([`timeouts`]), so a
/// hung connection ends as a retryable `Timeout` instead of holding a message.
pub async fn load_base_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts());
    if std::env::var_os("AWS_RETRY_MODE").is_none() {
        loader = loader.retry_config(aws_config::retry::RetryConfig::adaptive().with_max_attempts(MAX_SDK_ATTEMPTS));
    }
    loader.load().await
}

/// Attempts the SDK makes itself before a call's error reaches Lifeboat's task-level retry.
pub const MAX_SDK_ATTEMPTS: u32 = 4;

/// Deadlines of every AWS call: connecting, one attempt, and the call with its SDK retries.
/// Generous for the slowest Describe pages; a task-level retry follows a timeout.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(60))
        .operation_timeout(Duration::from_secs(180))
        .build()
}

/// AWS throttles per account, region and API; clients of one account and region share their
/// retry tokens and adaptive rate limiter under this name, and no other clients do.
pub fn retry_partition_name(service: &str, account_id: &str, region: &str) -> String {
    format!("lifeboat-{service}-{account_id}-{region}")
}

/// The retry partition of one service, account and region, the same object for every client
/// of the process (a client is built per step). Its retry budget is sized for fan-out: the
/// SDK's default (500 tokens, 5 per retry, refilled only by successes) is spent by a hundred
/// tasks throttled at once, after which nothing in the account retries at all, timeouts and
/// 5xx included. Here a throttled retry costs one token and the budget refills with time, so a
/// burst of throttles cannot starve the other calls; Lifeboat's own shared quota buckets
/// ([`crate::quota`]) keep throttles rare in the first place.
pub fn retry_partition(service: &str, account_id: &str, region: &str) -> RetryPartition {
    static PARTITIONS: std::sync::LazyLock<std::sync::Mutex<HashMap<String, RetryPartition>>> =
        std::sync::LazyLock::new(Default::default);
    let name = retry_partition_name(service, account_id, region);
    let mut partitions = PARTITIONS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    partitions
        .entry(name.clone())
        .or_insert_with(|| {
            let budget = TokenBucket::builder()
                .capacity(RETRY_BUDGET)
                .throttling_retry_cost(1)
                .refill_rate(RETRY_BUDGET_REFILL_PER_SECOND)
                .build();
            RetryPartition::custom(name).token_bucket(budget).build()
        })
        .clone()
}

/// Retries a request that failed to go out on a pooled connection the server had already
/// given up on (hyper's `SendRequest` error: the request was never written, so sending it again
/// is safe). The SDK's own classifier retries only I/O errors and timeouts, and HTTP servers
/// with short keep-alives (moto's among them) produce this one under load.
#[derive(Debug, Default)]
pub struct ReusedConnection;

impl ClassifyRetry for ReusedConnection {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        match error.as_connector_error() {
            Some(e) if e.is_other() && display_chain(e).contains("SendRequest") => RetryAction::transient_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "ReusedConnection"
    }
}

/// Retry tokens per partition, and their refill per second.
pub const RETRY_BUDGET: usize = 500;
pub const RETRY_BUDGET_REFILL_PER_SECOND: f32 = 10.0;

/// A DynamoDB client in its account and region's retry partition.
pub fn dynamodb_client(config: &SdkConfig, account_id: &str, region: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(config)
        .retry_partition(retry_partition("dynamodb", account_id, region))
        .interceptor(AwsMetrics::new())
        .interceptor(AwsTracing::new())
        .retry_classifier(ReusedConnection)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An RDS client in its account and region's retry partition.
pub fn rds_client(config: &SdkConfig, account_id: &str, region: &str) -> aws_sdk_rds::Client {
    let config = aws_sdk_rds::config::Builder::from(config)
        .retry_partition(retry_partition("rds", account_id, region))
        .interceptor(AwsMetrics::new())
        .interceptor(AwsTracing::new())
        .retry_classifier(ReusedConnection)
        .build();
    aws_sdk_rds::Client::from_conf(config)
}

/// An EC2 client in its account and region's retry partition (EBS, AMIs and discovery use EC2).
pub fn ec2_client(config: &SdkConfig, account_id: &str, region: &str) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::config::Builder::from(config)
        .retry_partition(retry_partition("ec2", account_id, region))
        .interceptor(AwsMetrics::new())
        .interceptor(AwsTracing::new())
        .retry_classifier(ReusedConnection)
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// An SSM client in its account and region's retry partition (a backup's pre and post scripts
/// run on the instance through Run Command, [`crate::app_consistent`]).
pub fn ssm_client(config: &SdkConfig, account_id: &str, region: &str) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::config::Builder::from(config)
        .retry_partition(retry_partition("ssm", account_id, region))
        .interceptor(AwsMetrics::new())
        .interceptor(AwsTracing::new())
        .retry_classifier(ReusedConnection)
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// A KMS client in its account and region's retry partition (discovery asks who manages a key).
pub fn kms_client(config: &SdkConfig, account_id: &str, region: &str) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::config::Builder::from(config)
        .retry_partition(retry_partition("kms", account_id, region))
        .interceptor(AwsMetrics::new())
        .interceptor(AwsTracing::new())
        .retry_classifier(ReusedConnection)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// An STS client that records its calls like every other Lifeboat client.
pub fn sts_client(config: &SdkConfig) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(config)
            .interceptor(AwsMetrics::new())
            .interceptor(AwsTracing::new())
            .retry_classifier(ReusedConnection)
            .build(),
    )
}

/// (account id, region, role ARN or empty for the deployment's role name)
type AccountRegion = (String, String, String);

/// `SdkConfig`s per account and region, cached.
pub struct Accounts {
    base: SdkConfig,
    role_name: String,
    caller_account: OnceCell<String>,
    configs: Mutex<HashMap<AccountRegion, Arc<OnceCell<SdkConfig>>>>,
}

impl Accounts {
    pub fn new(base: SdkConfig, role_name: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            base,
            role_name: role_name.into(),
            caller_account: OnceCell::new(),
            configs: Mutex::new(HashMap::new()),
        })
    }

    pub fn base(&self) -> &SdkConfig {
        &self.base
    }

    /// The account of the credentials Lifeboat runs with (STS GetCallerIdentity).
    pub async fn caller_account(&self) -> Result<String, AwsError> {
        self.caller_account
            .get_or_try_init(|| async {
                let sts = sts_client(&self.base);
                let identity =
                    sts.get_caller_identity().send().await.map_err(|e| classify("sts:GetCallerIdentity", e))?;
                identity.account().map(str::to_string).ok_or_else(|| {
                    AwsError::task_failure(
                        "sts:GetCallerIdentity",
                        "MissingAccount",
                        "GetCallerIdentity returned no account",
                    )
                })
            })
            .await
            .cloned()
    }

    /// Resolves an empty account id to the caller's.
    pub async fn resolve_account(&self, account_id: &str) -> Result<String, AwsError> {
        if account_id.is_empty() {
            self.caller_account().await
        } else {
            Ok(account_id.to_string())
        }
    }

    /// Config for `account_id` (empty: the caller's) in `region`. Another account is reached by
    /// assuming `arn:aws:iam::<account>:role/<role_name>`. That role is tried once here, with the
    /// error classified like any AWS call: a denied role fails the task with STS's code,
    /// throttling is retried. Concurrent callers for other accounts do not wait on each other.
    pub async fn config_for(&self, account_id: &str, region: &str) -> Result<SdkConfig, AwsError> {
        self.config_as(account_id, region, "").await
    }

    /// Like [`Accounts::config_for`], but another account is reached through `role_arn` when
    /// one is given (a restore set's `target_role_arn`).
    pub async fn config_as(&self, account_id: &str, region: &str, role_arn: &str) -> Result<SdkConfig, AwsError> {
        let caller = self.caller_account().await?;
        let account = if account_id.is_empty() { caller.clone() } else { account_id.to_string() };
        let key = (account.clone(), region.to_string(), role_arn.to_string());
        let cell = self.configs.lock().await.entry(key).or_default().clone();
        cell.get_or_try_init(|| self.build_config(&caller, &account, region, role_arn)).await.cloned()
    }

    async fn build_config(
        &self,
        caller: &str,
        account: &str,
        region: &str,
        role_arn: &str,
    ) -> Result<SdkConfig, AwsError> {
        let regional = self.base.to_builder().region(Region::new(region.to_string())).build();
        if account == caller {
            return Ok(regional);
        }
        let role_arn = if role_arn.is_empty() {
            format!("arn:aws:iam::{account}:role/{}", self.role_name)
        } else {
            role_arn.to_string()
        };
        sts_client(&regional)
            .assume_role()
            .role_arn(&role_arn)
            .role_session_name(SESSION_NAME)
            .send()
            .await
            .map_err(|e| classify("sts:AssumeRole", e))?;
        // The provider keeps the credentials fresh from here on.
        let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .session_name(SESSION_NAME)
            .session_length(Duration::from_secs(3600))
            .region(Region::new(region.to_string()))
            .configure(&self.base)
            .build()
            .await;
        Ok(regional.to_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build())
    }
}

/// The session name on every assumed role, so CloudTrail shows what Lifeboat did.
const SESSION_NAME: &str = "lifeboat";

/// A lookup whose "not found" error (one of `codes`) means "absent" rather than failure.
pub fn absent_if_not_found<T>(result: Result<T, AwsError>, codes: &[&str]) -> Result<Option<T>, AwsError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(e) if codes.contains(&e.code.as_str()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Exponential backoff with a cap: attempt 1 waits `initial`, each next one twice as long.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    initial.saturating_mul(factor).min(max)
}

/// "Equal jitter": half of `delay` for sure, the other half at random, so that tasks throttled
/// together do not come back together.
pub fn jitter(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    delay / 2 + (delay / 2).mul_f64(unit)
}
