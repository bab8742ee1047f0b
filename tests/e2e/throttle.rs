//! The throttling proxy answers as EC2 does: a bucket's burst, then its refill rate, and beyond
//! them `RequestLimitExceeded` (HTTP 503), which the SDK's own retry classifiers call throttling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::retries::classifiers::{RetryAction, RetryReason};
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
        let action = runtime_components
            .retry_classifiers()
            .map(|classifier| classifier.classify_retry(context.inner()))
            .find(|action| *action != RetryAction::NoActionIndicated)
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

async fn create(ec2: &aws_sdk_ec2::Client) -> Result<String, String> {
    match ec2.create_volume().availability_zone("us-east-1a").size(1).send().await {
        Ok(created) => Ok(created.volume_id().unwrap_or_default().to_string()),
        Err(error) => Err(error.code().unwrap_or("no code").to_string()),
    }
}

#[tokio::test]
async fn the_proxy_throttles_create_volume_after_its_burst_and_refills_at_its_rate() {
    let servers = Servers::start().await;
    // EC2's buckets, with CreateVolume's burst 100 shrunk to 10 to keep the test short.
    let limits = Limits::ec2().with(Family::CreateVolume, Rate::new(10.0, 5.0));
    let proxy = ThrottlingProxy::start(&servers.moto_url, limits).await;
    let classified = Classified::default();
    let ec2 = client(&servers, &proxy, &classified);

    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(create(&ec2).await);
    }
    assert!(answers[..10].iter().all(Result::is_ok), "the burst passes: {answers:?}");
    assert_eq!(answers[10..], [Err("RequestLimitExceeded".into()), Err("RequestLimitExceeded".into())]);
    let throttles = classified.0.lock().expect("classified")[10..].to_vec();
    assert!(
        throttles.iter().all(|action| matches!(
            action,
            RetryAction::RetryIndicated(RetryReason::RetryableError { kind: ErrorKind::ThrottlingError, .. })
        )),
        "the SDK calls RequestLimitExceeded throttling: {throttles:?}"
    );

    // One second refills five tokens: five pass, the sixth is throttled.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut refilled = Vec::new();
    for _ in 0..6 {
        refilled.push(create(&ec2).await.is_ok());
    }
    assert_eq!(refilled, [true, true, true, true, true, false]);

    // Describe has a bucket of its own, untouched by CreateVolume's.
    let described = ec2.describe_volumes().send().await.expect("describe passes");
    assert_eq!(described.volumes().len(), 15, "only the admitted calls reached moto");
    let count = proxy.count("CreateVolume");
    assert_eq!((count.calls, count.throttled, count.passed()), (18, 3, 15));
    assert_eq!(proxy.count("DescribeVolumes").calls, 1);
    assert_eq!(proxy.ec2_calls(), 19);
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
    let created = futures::future::join_all((0..4).map(|_| create(&ec2))).await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let count = proxy.count("CreateVolume");
    assert_eq!(count.passed(), 4);
    assert!(count.throttled >= 1, "two of four fit the burst: {count:?}");
    // No limits on the rest: moto's other answers pass unchanged.
    assert_eq!(lifeboat_tests::volumes_tagged(&ec2, "none", "none").await.len(), 0);
    assert_eq!(proxy.count("DescribeVolumes").throttled, 0);
}
