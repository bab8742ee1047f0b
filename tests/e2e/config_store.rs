//! The config export store against moto S3: a versioned bucket created in another region,
//! documents read back equal and verified, keys that sort by time with a `latest.json` pointer
//! and the checksum in the metadata, unchanged configurations not written again, exports chosen
//! by point in time, a tampered export refused, and SSE-KMS recorded on the objects.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use lifeboat_config::document::{ConfigDocument, Service};
use lifeboat_config::store::{self, Location, Stored};
use lifeboat_tests::*;
use serde_json::{json, Value};

const BUCKET_REGION: &str = "us-west-2";

fn location(bucket: &str) -> Location {
    Location {
        bucket: bucket.into(),
        region: BUCKET_REGION.into(),
        prefix: "lifeboat".into(),
        kms_key_id: String::new(),
    }
}

fn s3(servers: &Servers, location: &Location) -> aws_sdk_s3::Client {
    // The servers' us-east-1 config on purpose: the store's client moves it to the bucket's region.
    store::client(&servers.aws("us-east-1"), ACCOUNT, location)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 23, 30, 0).unwrap()
}

/// An ELBv2 configuration of us-east-1 with one load balancer listening on `port`.
fn elbv2_doc(at: DateTime<Utc>, port: u16) -> ConfigDocument {
    let config = json!({
        "load_balancers": [{
            "key": "web",
            "arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/50dc6c495c0c9188",
            "scheme": "internet-facing",
            "listeners": [{"key": format!("HTTP:{port}"), "port": port, "protocol": "HTTP"}]
        }],
        "target_groups": [{"key": "web-tg", "port": 8080, "protocol": "HTTP"}]
    });
    let counts = BTreeMap::from([("load_balancers".to_string(), 1), ("target_groups".to_string(), 1)]);
    ConfigDocument::new(Service::Elbv2, ACCOUNT, "us-east-1", at, counts, config)
}

/// Every key in the bucket, through every page.
async fn bucket_keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    let mut keys = Vec::new();
    while let Some(page) = pages.try_next().await.expect("list the bucket") {
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
    }
    keys
}

#[tokio::test]
async fn a_document_round_trips_through_a_bucket_in_another_region() {
    let servers = Servers::start().await;
    let location = location("config-exports");
    let s3 = s3(&servers, &location);
    store::ensure_bucket(&s3, &location).await.expect("create the bucket");
    store::ensure_bucket(&s3, &location).await.expect("adopt the existing bucket");

    let where_ = s3.get_bucket_location().bucket(&location.bucket).send().await.unwrap();
    assert_eq!(where_.location_constraint().map(|c| c.as_str()), Some(BUCKET_REGION));

    let doc = elbv2_doc(t0(), 80);
    let stored = store::put(&s3, &location, &doc).await.expect("put the document");
    let Stored::Written { key } = stored else { panic!("a first export is written: {stored:?}") };
    assert_eq!(
        key,
        format!("lifeboat/{ACCOUNT}/us-east-1/elbv2/2026/12/03/20261203T233000Z-{}.json", doc.short_checksum())
    );

    let back = store::get(&s3, &location, &key).await.expect("read the document back");
    assert_eq!(back, doc);
    back.verify().expect("the document read back verifies");

    let latest =
        store::latest(&s3, &location, ACCOUNT, "us-east-1", Service::Elbv2).await.unwrap().expect("a latest pointer");
    assert_eq!(
        (latest.key.as_str(), latest.checksum.as_str(), latest.exported_at),
        (key.as_str(), doc.checksum.as_str(), t0())
    );
    let mut keys = bucket_keys(&s3, &location.bucket).await;
    keys.sort();
    assert_eq!(keys, vec![key.clone(), format!("lifeboat/{ACCOUNT}/us-east-1/elbv2/latest.json")]);

    let head = s3.head_object().bucket(&location.bucket).key(&key).send().await.unwrap();
    let metadata = head.metadata().expect("object metadata");
    assert_eq!(metadata.get(store::CHECKSUM_METADATA), Some(&doc.checksum));
    assert_eq!(metadata.get(store::FORMAT_METADATA).map(String::as_str), Some(lifeboat_config::document::FORMAT));
    assert_eq!(head.content_type(), Some("application/json"));
    assert_eq!(head.server_side_encryption(), None, "no KMS key asked for");

    // The stored bytes are the document's JSON, readable without Lifeboat.
    let body = s3.get_object().bucket(&location.bucket).key(&key).send().await.unwrap().body.collect().await.unwrap();
    let json: Value = serde_json::from_slice(&body.into_bytes()).unwrap();
    assert_eq!(json["config"]["load_balancers"][0]["key"], json!("web"));
    assert_eq!(json["service"], json!("elbv2"));
}

#[tokio::test]
async fn an_unchanged_config_is_not_written_again_and_a_changed_one_moves_latest() {
    let servers = Servers::start().await;
    let location = location("config-history");
    let s3 = s3(&servers, &location);
    store::ensure_bucket(&s3, &location).await.unwrap();
    let latest = || store::latest(&s3, &location, ACCOUNT, "us-east-1", Service::Elbv2);

    let first = store::put(&s3, &location, &elbv2_doc(t0(), 80)).await.unwrap();
    assert!(matches!(first, Stored::Written { .. }), "{first:?}");
    let again = store::put(&s3, &location, &elbv2_doc(t0() + Duration::hours(1), 80)).await.unwrap();
    assert_eq!(again, Stored::Unchanged { key: first.key().to_string() });
    assert_eq!(bucket_keys(&s3, &location.bucket).await.len(), 2, "the export and latest.json, nothing more");
    assert_eq!(latest().await.unwrap().unwrap().key, first.key());

    let changed = elbv2_doc(t0() + Duration::hours(2), 443);
    let second = store::put(&s3, &location, &changed).await.unwrap();
    let Stored::Written { key: second_key } = &second else { panic!("a changed config is written: {second:?}") };
    assert_ne!(second_key, first.key());
    assert_eq!(bucket_keys(&s3, &location.bucket).await.len(), 3);
    let pointer = latest().await.unwrap().unwrap();
    assert_eq!((&pointer.key, &pointer.checksum), (second_key, &changed.checksum));
    // The bucket is versioned: the pointer's earlier version is still there. (The SDK cannot read
    // moto's GetBucketVersioning answer, whose root element is not VersioningConfiguration.)
    let latest_key = location.latest_key(ACCOUNT, "us-east-1", Service::Elbv2);
    let versions = s3.list_object_versions().bucket(&location.bucket).prefix(&latest_key).send().await.unwrap();
    assert_eq!(versions.versions().len(), 2, "{versions:?}");

    let entries = store::list(&s3, &location, ACCOUNT, "us-east-1", Service::Elbv2).await.unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec![first.key(), second_key.as_str()], "oldest first, latest.json left out");
    assert_eq!(entries[1].exported_at, t0() + Duration::hours(2));
    assert_eq!(entries[1].short_checksum, changed.short_checksum());
    assert!(store::list(&s3, &location, ACCOUNT, "us-west-1", Service::Elbv2).await.unwrap().is_empty());

    let chosen = |before: Option<DateTime<Utc>>, after: Option<DateTime<Utc>>| {
        store::choose(&entries, before, after).map(|e| e.key.clone())
    };
    assert_eq!(chosen(None, None).as_deref(), Some(second_key.as_str()), "newest without a point in time");
    assert_eq!(chosen(Some(t0() + Duration::hours(1)), None).as_deref(), Some(first.key()), "newest before");
    assert_eq!(chosen(None, Some(t0() + Duration::hours(1))).as_deref(), Some(second_key.as_str()), "oldest after");
    assert_eq!(chosen(Some(t0() - Duration::hours(1)), None), None, "nothing before the first export");

    // What was chosen reads back as the configuration exported then.
    let old = store::get(&s3, &location, first.key()).await.unwrap();
    assert_eq!(old.config["load_balancers"][0]["listeners"][0]["port"], json!(80));
}

#[tokio::test]
async fn a_tampered_export_fails_verification_naming_the_checksum() {
    let servers = Servers::start().await;
    let location = location("config-tampered");
    let s3 = s3(&servers, &location);
    store::ensure_bucket(&s3, &location).await.unwrap();
    let doc = elbv2_doc(t0(), 80);
    let key = store::put(&s3, &location, &doc).await.unwrap().key().to_string();

    let mut tampered = doc.clone();
    tampered.config["load_balancers"][0]["scheme"] = json!("internal");
    s3.put_object()
        .bucket(&location.bucket)
        .key(&key)
        .metadata(store::CHECKSUM_METADATA, &doc.checksum)
        .body(tampered.to_json_bytes().into())
        .send()
        .await
        .unwrap();

    let err = store::get(&s3, &location, &key).await.expect_err("a tampered document is refused");
    assert_eq!(err.code, "InvalidDocument");
    assert!(err.message.contains(&format!("s3://{}/{key}", location.bucket)), "{err}");
    assert!(
        err.message.contains(&format!("checksum: document says {} but its config hashes to sha256:", doc.checksum)),
        "{err}"
    );

    s3.put_object().bucket(&location.bucket).key(&key).body(b"{\"format\": 1}".to_vec().into()).send().await.unwrap();
    let err = store::get(&s3, &location, &key).await.expect_err("not a document");
    assert!(err.message.contains("not a Lifeboat config document"), "{err}");

    let missing = store::get(&s3, &location, "lifeboat/none.json").await.expect_err("a missing key");
    assert_eq!(missing.code, "NoSuchKey");
}

#[tokio::test]
async fn a_kms_key_is_recorded_as_sse_on_the_objects() {
    let servers = Servers::start().await;
    let kms = aws_sdk_kms::Client::new(&servers.aws(BUCKET_REGION));
    let key = kms.create_key().description("config exports").send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    let location = Location { kms_key_id: key_arn.clone(), prefix: String::new(), ..location("config-encrypted") };
    let s3 = s3(&servers, &location);
    store::ensure_bucket(&s3, &location).await.unwrap();

    let doc = elbv2_doc(t0(), 80);
    let stored = store::put(&s3, &location, &doc).await.unwrap();
    assert!(stored.key().starts_with(&format!("{ACCOUNT}/us-east-1/elbv2/")), "{stored:?}");
    for object in [stored.key().to_string(), location.latest_key(ACCOUNT, "us-east-1", Service::Elbv2)] {
        let head = s3.head_object().bucket(&location.bucket).key(&object).send().await.unwrap();
        assert_eq!(head.server_side_encryption(), Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms), "{object}");
        assert_eq!(head.ssekms_key_id(), Some(key_arn.as_str()), "{object}");
    }
    assert_eq!(store::get(&s3, &location, stored.key()).await.unwrap(), doc);
}

#[tokio::test]
async fn a_bucket_in_us_east_1_needs_no_location_constraint() {
    let servers = Servers::start().await;
    let location = Location { region: "us-east-1".into(), ..location("config-east") };
    let s3 = s3(&servers, &location);
    store::ensure_bucket(&s3, &location).await.expect("create the bucket in us-east-1");
    let where_ = s3.get_bucket_location().bucket(&location.bucket).send().await.unwrap();
    assert!(
        where_.location_constraint().is_none_or(|c| c.as_str().is_empty() || c.as_str() == "us-east-1"),
        "{where_:?}"
    );
    let route53 = ConfigDocument::new(
        Service::Route53,
        ACCOUNT,
        Service::GLOBAL,
        t0(),
        BTreeMap::new(),
        json!({"hosted_zones": []}),
    );
    let stored = store::put(&s3, &location, &route53).await.unwrap();
    assert!(stored.key().starts_with(&format!("lifeboat/{ACCOUNT}/global/route53/2026/12/03/")), "{stored:?}");
}

#[tokio::test]
async fn exports_within_one_second_list_the_latest_last() {
    let servers = Servers::start().await;
    let location = location("config-same-second");
    let s3 = s3(&servers, &location);
    store::ensure_bucket(&s3, &location).await.unwrap();
    // Keys are to the second; whichever checksum sorts first, the pointer decides.
    let mut written = Vec::new();
    for port in [80, 81, 82] {
        written.push(store::put(&s3, &location, &elbv2_doc(t0(), port)).await.unwrap().key().to_string());
    }
    let entries = store::list(&s3, &location, ACCOUNT, "us-east-1", Service::Elbv2).await.unwrap();
    assert_eq!(entries.len(), 3);
    let last = entries.last().unwrap();
    assert_eq!(last.key, written[2]);
    assert_eq!(last.checksum.as_deref(), Some(elbv2_doc(t0(), 82).checksum.as_str()));
    assert_eq!(store::choose(&entries, None, None).map(|e| e.key.as_str()), Some(written[2].as_str()));
}
