//! The throttling proxy answers as EC2 does: a bucket's burst, then its refill rate, and beyond
//! them `RequestLimitExceeded` (HTTP 503), which the SDK's own retry classifiers call throttling.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryReason};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::{ErrorKind, RetryConfig};
use lifeboat_tests::throttle::{Family, Limits, Rate, ThrottlingProxy};
use lifeboat_tests::Servers;

/// What the SDK's retry classifiers made of each attempt.
#[derive(Clone, Debug, Default)]
struct Classified(Arc<Mutex<Vec<RetryAction>>>);

impl Intercept for Classified {
    fn name(&self) -> &'static str {
        "Classified"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // As the orchestrator runs them: in priority order, a later verdict refining an earlier one.
        let action = runtime_components
            .retry_classifiers()
            .map(|classifier| classifier.classify_retry(context.inner()))
            .filter(|action| *action != RetryAction::NoActionIndicated)
            .last()
            .unwrap_or(RetryAction::NoActionIndicated);
        self.0.lock().expect("classified").push(action);
        Ok(())
    }
}

/// An EC2 client through the proxy, without SDK retries so every throttle reaches the test.
fn client(servers: &Servers, proxy: &ThrottlingProxy, classified: &Classified) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::config::Builder::from(&servers.aws("us-east-1"))
        .endpoint_url(&proxy.url)
        .retry_config(RetryConfig::disabled())
        .interceptor(classified.clone())
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// A CreateVolume's volume id or error code.
async fn create(ec2: aws_sdk_ec2::Client) -> Result<String, String> {
    match ec2.create_volume().availability_zone("us-east-1a").size(1).send().await {
        Ok(created) => Ok(created.volume_id().unwrap_or_default().to_string()),
        Err(error) => Err(error.code().unwrap_or("no code").to_string()),
    }
}

#[tokio::test]
async fn the_proxy_throttles_create_volume_after_its_burst_and_refills_at_its_rate() {
    let servers = Servers::start().await;
    // EC2's buckets, with CreateVolume's shrunk to a burst of 10 refilled at 2/s, so the test
    // is short and a token refills only every 500 ms.
    let limits = Limits::ec2().with(Family::CreateVolume, Rate::new(10.0, 2.0));
    let proxy = ThrottlingProxy::start(&servers.moto_url, limits).await;
    let classified = Classified::default();
    let ec2 = client(&servers, &proxy, &classified);

    // Fourteen at once: the burst passes (a refilled token at most besides), the rest are
    // throttled as EC2 throttles. The proxy decides on arrival; moto may answer the admitted
    // calls much later, so the calls are counted at the proxy, and awaited only at the end.
    let started = Instant::now();
    let burst: Vec<_> = (0..14).map(|_| tokio::spawn(create(ec2.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_burst = proxy.count("CreateVolume");
    assert_eq!(after_burst.calls, 14);
    assert!((10..=11).contains(&after_burst.passed()), "{after_burst:?}");

    // Two seconds on, about four tokens have refilled (the burst's calls arrive over a few
    // hundred milliseconds, so three to six): those of eight pass, the rest are throttled.
    tokio::time::sleep_until((started + Duration::from_secs(2)).into()).await;
    let refill: Vec<_> = (0..8).map(|_| tokio::spawn(create(ec2.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refill_passed = proxy.count("CreateVolume").passed() - after_burst.passed();
    assert!((3..=6).contains(&refill_passed), "{refill_passed} passed after the refill");

    let mut answers = Vec::new();
    for call in burst.into_iter().chain(refill) {
        answers.push(call.await.expect("call"));
    }
    let throttled: Vec<&String> = answers.iter().filter_map(|answer| answer.as_ref().err()).collect();
    assert_eq!(throttled.len() as u64, proxy.count("CreateVolume").throttled);
    assert!(throttled.iter().all(|code| *code == "RequestLimitExceeded"), "{throttled:?}");
    let throttling = |action: &&RetryAction| {
        matches!(
            action,
            RetryAction::RetryIndicated(RetryReason::RetryableError { kind: ErrorKind::ThrottlingError, .. })
        )
    };
    let classified = classified.0.lock().expect("classified").clone();
    assert_eq!(
        classified.iter().filter(throttling).count(),
        throttled.len(),
        "the SDK calls it throttling: {classified:?}"
    );

    // Describe has a bucket of its own, untouched by CreateVolume's.
    let described = ec2.describe_volumes().send().await.expect("describe passes");
    let count = proxy.count("CreateVolume");
    assert_eq!(described.volumes().len() as u64, count.passed(), "only the admitted calls reached moto");
    assert_eq!(count.calls, 22);
    assert_eq!(proxy.count("DescribeVolumes").calls, 1);
    assert_eq!(proxy.ec2_calls(), 23);
}

#[tokio::test]
async fn the_sdk_retries_through_throttling_and_the_proxy_counts_every_attempt() {
    let servers = Servers::start().await;
    let limits = Limits::none().with(Family::CreateVolume, Rate::new(2.0, 2.0));
    let proxy = ThrottlingProxy::start(&servers.moto_url, limits).await;
    // The SDK's standard retries (three attempts with backoff) ride out a short throttle.
    let config = aws_sdk_ec2::config::Builder::from(&servers.aws("us-east-1"))
        .endpoint_url(&proxy.url)
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .build();
    let ec2 = aws_sdk_ec2::Client::from_conf(config);
    let created = futures::future::join_all((0..4).map(|_| create(ec2.clone()))).await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let count = proxy.count("CreateVolume");
    assert_eq!(count.passed(), 4);
    assert!(count.throttled >= 1, "two of four fit the burst: {count:?}");
    // No limits on the rest: moto's other answers pass unchanged.
    assert_eq!(lifeboat_tests::volumes_tagged(&ec2, "none", "none").await.len(), 0);
    assert_eq!(proxy.count("DescribeVolumes").throttled, 0);
}
