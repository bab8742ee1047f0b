//! The SDK clients of the config service, in their account and region's retry partition and
//! with the same metrics, tracing and retry classification as every other Lifeboat client.

use aws_config::SdkConfig;
use lifeboat_common::aws::{retry_partition, ReusedConnection};
use lifeboat_common::aws_trace::AwsTracing;
use lifeboat_common::metrics::AwsMetrics;

/// A Route 53 client (a global service: its calls go to us-east-1 whatever `region` says).
pub fn route53_client(config: &SdkConfig, account_id: &str) -> aws_sdk_route53::Client {
    let config = aws_sdk_route53::config::Builder::from(config)
        .region(aws_config::Region::new("us-east-1"))
        .retry_partition(retry_partition("route53", account_id, "global"))
        .interceptor(AwsMetrics::new())
        .interceptor(AwsTracing::new())
        .retry_classifier(ReusedConnection)
        .build();
    aws_sdk_route53::Client::from_conf(config)
}

/// An ELBv2 client in `account_id` and `region`.
pub fn elbv2_client(config: &SdkConfig, account_id: &str, region: &str) -> aws_sdk_elasticloadbalancingv2::Client {
    let config = aws_sdk_elasticloadbalancingv2::config::Builder::from(config)
        .retry_partition(retry_partition("elbv2", account_id, region))
        .interceptor(AwsMetrics::new())
        .interceptor(AwsTracing::new())
        .retry_classifier(ReusedConnection)
        .build();
    aws_sdk_elasticloadbalancingv2::Client::from_conf(config)
}

/// An S3 client in `account_id` and `region`. Against an endpoint override (moto, MinIO,
/// LocalStack) buckets are addressed by path, since `bucket.127.0.0.1` does not resolve.
pub fn s3_client(config: &SdkConfig, account_id: &str, region: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(config.endpoint_url().is_some())
        .retry_partition(retry_partition("s3", account_id, region))
        .interceptor(AwsMetrics::new())
        .interceptor(AwsTracing::new())
        .retry_classifier(ReusedConnection)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
