//! Where exports live in S3: one object per export under a key that sorts by time, a
//! `latest.json` pointer per account, region and service, and the checksum in the object's
//! metadata, so an unchanged configuration is not written again and a reader can tell a document
//! that was altered after it was written.
//!
//! Layout (see the contract):
//! `<prefix><account>/<region>/<service>/<YYYY>/<MM>/<DD>/<YYYYMMDDTHHMMSSZ>-<12 hex>.json` and
//! `<prefix><account>/<region>/<service>/latest.json`.
//!
//! Every function takes an S3 client in the bucket's region ([`client`] builds one).

use aws_config::SdkConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, ServerSideEncryption,
    VersioningConfiguration,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use lifeboat_common::aws::{absent_if_not_found, classify, AwsError};
use serde::{Deserialize, Serialize};

use crate::document::{ConfigDocument, Service};

/// Object metadata holding the document's checksum (S3 sends it as `x-amz-meta-lifeboat-checksum`).
pub const CHECKSUM_METADATA: &str = "lifeboat-checksum";
/// Object metadata holding the document's format.
pub const FORMAT_METADATA: &str = "lifeboat-format";
/// The pointer to the newest export of an account, region and service.
pub const LATEST: &str = "latest.json";

const KEY_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const NOT_FOUND: &[&str] = &["NotFound", "NoSuchKey", "NoSuchBucket", "HTTP404"];

/// Where exports are written: a bucket (in another region than what it backs up), a key prefix
/// and an optional KMS key for SSE-KMS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Location {
    pub bucket: String,
    /// The bucket's region (the S3 client must be in it).
    pub region: String,
    /// Prepended to every key; a `/` is added when it does not end with one. Empty: none.
    pub prefix: String,
    /// KMS key id, ARN or alias for SSE-KMS. Empty: the bucket's default encryption.
    pub kms_key_id: String,
}

impl Location {
    /// The prefix as keys start with it: empty, or ending with `/`.
    pub fn key_prefix(&self) -> String {
        if self.prefix.is_empty() || self.prefix.ends_with('/') {
            self.prefix.clone()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// `<prefix><account>/<region>/<service>/`: every export of one configuration.
    pub fn service_prefix(&self, account_id: &str, region: &str, service: Service) -> String {
        format!("{}{account_id}/{region}/{}/", self.key_prefix(), service.as_str())
    }

    /// The key `doc` is stored under: its export time, then the start of its checksum (two
    /// exports in the same second with different configurations get different keys).
    pub fn document_key(&self, doc: &ConfigDocument) -> String {
        let at = doc.exported_at;
        format!(
            "{}{}/{}-{}.json",
            self.service_prefix(&doc.account_id, &doc.region, doc.service),
            at.format("%Y/%m/%d"),
            at.format(KEY_TIME_FORMAT),
            doc.short_checksum()
        )
    }

    pub fn latest_key(&self, account_id: &str, region: &str, service: Service) -> String {
        format!("{}{LATEST}", self.service_prefix(account_id, region, service))
    }

    /// `s3://bucket/key`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// An S3 client in `location`'s bucket region (whatever region `config` is in: the bucket is in
/// another region than the configuration it holds).
pub fn client(config: &SdkConfig, account_id: &str, location: &Location) -> aws_sdk_s3::Client {
    let regional = config.to_builder().region(aws_config::Region::new(location.region.clone())).build();
    crate::clients::s3_client(&regional, account_id, &location.region)
}

/// What [`put`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "stored")]
pub enum Stored {
    /// A new object at `key`; `latest.json` points at it.
    Written { key: String },
    /// The latest export has the same checksum: nothing written; `key` is that export's.
    Unchanged { key: String },
}

impl Stored {
    pub fn key(&self) -> &str {
        match self {
            Stored::Written { key } | Stored::Unchanged { key } => key,
        }
    }

    pub fn is_unchanged(&self) -> bool {
        matches!(self, Stored::Unchanged { .. })
    }
}

/// The content of `latest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestPointer {
    pub key: String,
    pub checksum: String,
    pub exported_at: DateTime<Utc>,
}

/// One stored export, as its key describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEntry {
    pub key: String,
    /// From the key (to the second).
    pub exported_at: DateTime<Utc>,
    /// The first 12 hex digits of the checksum, from the key.
    pub short_checksum: String,
    /// The full checksum when known (listing shows only keys; the object's metadata has it).
    pub checksum: Option<String>,
    pub size: i64,
}

impl ExportEntry {
    /// The entry a key under `service_prefix` describes; `None` for `latest.json` and for
    /// objects that are not exports (anything else someone put there).
    pub fn from_key(service_prefix: &str, key: &str, size: i64) -> Option<Self> {
        let rest = key.strip_prefix(service_prefix)?;
        let file = rest.rsplit('/').next()?;
        let stem = file.strip_suffix(".json")?;
        let (stamp, short) = stem.split_once('-')?;
        let at = NaiveDateTime::parse_from_str(stamp, KEY_TIME_FORMAT).ok()?.and_utc();
        if short.is_empty()
            || !short.bytes().all(|b| b.is_ascii_hexdigit())
            || rest != format!("{}/{file}", at.format("%Y/%m/%d"))
        {
            return None;
        }
        Some(Self { key: key.to_string(), exported_at: at, short_checksum: short.to_string(), checksum: None, size })
    }
}

/// Creates `location`'s bucket in its region when it does not exist (adopting one this account
/// already owns) and makes sure versioning is enabled, so an overwritten or deleted export can
/// still be recovered.
pub async fn ensure_bucket(s3: &aws_sdk_s3::Client, location: &Location) -> Result<(), AwsError> {
    let head = s3.head_bucket().bucket(&location.bucket).send().await.map_err(|e| classify("s3:HeadBucket", e));
    if absent_if_not_found(head, NOT_FOUND)?.is_none() {
        create_bucket(s3, location).await?;
    }
    enable_versioning(s3, &location.bucket).await
}

async fn create_bucket(s3: &aws_sdk_s3::Client, location: &Location) -> Result<(), AwsError> {
    let mut create = s3.create_bucket().bucket(&location.bucket);
    // us-east-1 is the default and refuses to be named as a location constraint.
    if !location.region.is_empty() && location.region != "us-east-1" {
        let constraint = BucketLocationConstraint::from(location.region.as_str());
        create = create
            .create_bucket_configuration(CreateBucketConfiguration::builder().location_constraint(constraint).build());
    }
    match create.send().await.map_err(|e| classify("s3:CreateBucket", e)) {
        Err(e) if e.code == "BucketAlreadyOwnedByYou" => Ok(()),
        Err(e) => Err(e),
        Ok(_) => {
            tracing::info!(bucket = %location.bucket, region = %location.region, "created the config export bucket");
            Ok(())
        }
    }
}

async fn enable_versioning(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), AwsError> {
    // An unreadable answer is not fatal: moto answers an unversioned bucket with a root element
    // the SDK does not parse. Enabling again is harmless, and its error is the one that counts.
    match s3.get_bucket_versioning().bucket(bucket).send().await {
        Ok(current) if current.status() == Some(&BucketVersioningStatus::Enabled) => return Ok(()),
        Ok(_) => {}
        Err(e) => tracing::debug!(bucket, error = %classify("s3:GetBucketVersioning", e), "enabling versioning anyway"),
    }
    let enabled = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(enabled)
        .send()
        .await
        .map_err(|e| classify("s3:PutBucketVersioning", e))?;
    Ok(())
}

/// Stores `doc` (which must carry its checksum, as [`ConfigDocument::new`] makes it) unless the
/// latest export of its account, region and service has the same checksum and still exists.
/// The document is written before the pointer, so `latest.json` never names a missing object.
pub async fn put(s3: &aws_sdk_s3::Client, location: &Location, doc: &ConfigDocument) -> Result<Stored, AwsError> {
    let latest_key = location.latest_key(&doc.account_id, &doc.region, doc.service);
    let previous = match latest(s3, location, &doc.account_id, &doc.region, doc.service).await {
        Err(e) if e.code == "InvalidLatestPointer" => {
            tracing::warn!(error = %e, "replacing an unreadable latest pointer");
            None
        }
        other => other?,
    };
    if let Some(previous) = previous.filter(|p| p.checksum == doc.checksum) {
        if exists(s3, &location.bucket, &previous.key).await? {
            return Ok(Stored::Unchanged { key: previous.key });
        }
    }
    let key = location.document_key(doc);
    let put = s3
        .put_object()
        .bucket(&location.bucket)
        .key(&key)
        .content_type("application/json")
        .metadata(CHECKSUM_METADATA, &doc.checksum)
        .metadata(FORMAT_METADATA, &doc.format)
        .body(ByteStream::from(doc.to_json_bytes()));
    encrypted(put, location).send().await.map_err(|e| classify("s3:PutObject", e))?;
    let pointer = LatestPointer { key: key.clone(), checksum: doc.checksum.clone(), exported_at: doc.exported_at };
    let pointer_bytes = serde_json::to_vec_pretty(&pointer).unwrap_or_default();
    let put = s3
        .put_object()
        .bucket(&location.bucket)
        .key(&latest_key)
        .content_type("application/json")
        .body(ByteStream::from(pointer_bytes));
    encrypted(put, location).send().await.map_err(|e| classify("s3:PutObject", e))?;
    Ok(Stored::Written { key })
}

fn encrypted(
    put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    location: &Location,
) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
    if location.kms_key_id.is_empty() {
        put
    } else {
        put.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(&location.kms_key_id)
    }
}

async fn exists(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<bool, AwsError> {
    let head = s3.head_object().bucket(bucket).key(key).send().await.map_err(|e| classify("s3:HeadObject", e));
    Ok(absent_if_not_found(head, NOT_FOUND)?.is_some())
}

/// The `latest.json` pointer of `account_id`, `region` and `service`; `None` before the first
/// export. An unreadable pointer is an `InvalidLatestPointer` error naming the object.
pub async fn latest(
    s3: &aws_sdk_s3::Client,
    location: &Location,
    account_id: &str,
    region: &str,
    service: Service,
) -> Result<Option<LatestPointer>, AwsError> {
    let key = location.latest_key(account_id, region, service);
    let Some(bytes) = read_object(s3, &location.bucket, &key).await?.map(|(bytes, _)| bytes) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        AwsError::task_failure("s3:GetObject", "InvalidLatestPointer", format!("{}: {e}", location.url(&key)))
    })
}

/// Every export of `account_id`, `region` and `service`, oldest first (every page of the listing;
/// `latest.json` and objects that are not exports left out).
pub async fn list(
    s3: &aws_sdk_s3::Client,
    location: &Location,
    account_id: &str,
    region: &str,
    service: Service,
) -> Result<Vec<ExportEntry>, AwsError> {
    let prefix = location.service_prefix(account_id, region, service);
    let mut pages = s3.list_objects_v2().bucket(&location.bucket).prefix(&prefix).into_paginator().send();
    let mut entries = Vec::new();
    while let Some(page) = pages.try_next().await.map_err(|e| classify("s3:ListObjectsV2", e))? {
        entries.extend(
            page.contents()
                .iter()
                .filter_map(|object| ExportEntry::from_key(&prefix, object.key()?, object.size().unwrap_or_default())),
        );
    }
    order(&mut entries, None);
    if entries.windows(2).any(|pair| pair[0].exported_at == pair[1].exported_at) {
        // Keys are to the second: within one, only the pointer knows which export came last.
        let pointer = match latest(s3, location, account_id, region, service).await {
            Err(e) if e.code == "InvalidLatestPointer" => None,
            other => other?,
        };
        if let Some(pointer) = pointer {
            if let Some(entry) = entries.iter_mut().find(|e| e.key == pointer.key) {
                entry.checksum = Some(pointer.checksum.clone());
            }
            order(&mut entries, Some(&pointer.key));
        }
    }
    Ok(entries)
}

/// Oldest first; within one second (the keys' resolution) the latest export last, then by key.
fn order(entries: &mut [ExportEntry], latest_key: Option<&str>) {
    entries.sort_by(|a, b| {
        let rank = |e: &ExportEntry| (e.exported_at, Some(e.key.as_str()) == latest_key);
        rank(a).cmp(&rank(b)).then_with(|| a.key.cmp(&b.key))
    });
}

/// The stored document at `key`, verified: an object that is not a document of a known format,
/// or whose config does not hash to its checksum (or to its metadata's), is an `InvalidDocument`
/// error naming the object and the field.
pub async fn get(s3: &aws_sdk_s3::Client, location: &Location, key: &str) -> Result<ConfigDocument, AwsError> {
    let invalid = |why: String| {
        AwsError::task_failure("s3:GetObject", "InvalidDocument", format!("{}: {why}", location.url(key)))
    };
    let (bytes, metadata_checksum) = read_object(s3, &location.bucket, key).await?.ok_or_else(|| {
        AwsError::task_failure("s3:GetObject", "NoSuchKey", format!("{} does not exist", location.url(key)))
    })?;
    let doc = ConfigDocument::from_slice(&bytes).map_err(invalid)?;
    doc.verify().map_err(invalid)?;
    if let Some(stored) = metadata_checksum.filter(|c| *c != doc.checksum) {
        return Err(invalid(format!(
            "checksum: document says {} but the object's {CHECKSUM_METADATA} metadata says {stored}",
            doc.checksum
        )));
    }
    Ok(doc)
}

/// An object's bytes and its checksum metadata; `None` when it does not exist.
async fn read_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, Option<String>)>, AwsError> {
    let got = s3.get_object().bucket(bucket).key(key).send().await.map_err(|e| classify("s3:GetObject", e));
    let Some(output) = absent_if_not_found(got, NOT_FOUND)? else {
        return Ok(None);
    };
    let checksum = output.metadata().and_then(|m| m.get(CHECKSUM_METADATA)).cloned();
    let body = output
        .body
        .collect()
        .await
        .map_err(|e| AwsError::retryable("s3:GetObject", "ResponseError", format!("s3://{bucket}/{key}: {e}")))?;
    Ok(Some((body.into_bytes().to_vec(), checksum)))
}

/// The export a point in time selects, as restore requests' `before`/`after` mean it: the newest
/// at or before `before`; the oldest at or after `after`; with both, the oldest in
/// `[after, before]`; with neither, the newest. `entries` in any order, but exports within one
/// second (the keys' resolution) in the order [`list`] gives them.
pub fn choose(
    entries: &[ExportEntry],
    before: Option<DateTime<Utc>>,
    after: Option<DateTime<Utc>>,
) -> Option<&ExportEntry> {
    let candidates = entries
        .iter()
        .filter(|e| before.is_none_or(|b| e.exported_at <= b))
        .filter(|e| after.is_none_or(|a| e.exported_at >= a));
    // On equal times `max_by_key` takes the last and `min_by_key` the first: list's order.
    if after.is_some() {
        candidates.min_by_key(|e| e.exported_at)
    } else {
        candidates.max_by_key(|e| e.exported_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use std::collections::BTreeMap;

    fn location(prefix: &str) -> Location {
        Location {
            bucket: "exports".into(),
            region: "us-west-2".into(),
            prefix: prefix.into(),
            kms_key_id: String::new(),
        }
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 7, 9, 5, 1).unwrap()
    }

    fn doc(at: DateTime<Utc>, value: i64) -> ConfigDocument {
        let config = serde_json::json!({"hosted_zones": [{"key": "a.|public", "n": value}]});
        ConfigDocument::new(Service::Route53, "111122223333", Service::GLOBAL, at, BTreeMap::new(), config)
    }

    #[test]
    fn keys_follow_the_layout() {
        let d = doc(t0(), 1);
        let key = location("lifeboat").document_key(&d);
        assert_eq!(
            key,
            format!("lifeboat/111122223333/global/route53/2026/03/07/20260307T090501Z-{}.json", d.short_checksum())
        );
        assert_eq!(location("").latest_key("1", "eu-west-1", Service::Elbv2), "1/eu-west-1/elbv2/latest.json");
        assert_eq!(location("a/b/").latest_key("1", "global", Service::Route53), "a/b/1/global/route53/latest.json");
    }

    #[test]
    fn keys_sort_by_time() {
        let loc = location("p/");
        let mut keys: Vec<String> = [40, 0, 86_400 * 40, 3_600, 86_400 * 400]
            .into_iter()
            .map(|s| loc.document_key(&doc(t0() + Duration::seconds(s), s)))
            .collect();
        let times: Vec<DateTime<Utc>> = {
            keys.sort();
            let prefix = loc.service_prefix("111122223333", "global", Service::Route53);
            keys.iter().map(|k| ExportEntry::from_key(&prefix, k, 0).unwrap().exported_at).collect()
        };
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted);
    }

    #[test]
    fn entries_come_from_export_keys_only() {
        let loc = location("p");
        let d = doc(t0(), 1);
        let prefix = loc.service_prefix(&d.account_id, &d.region, d.service);
        let entry = ExportEntry::from_key(&prefix, &loc.document_key(&d), 12).unwrap();
        assert_eq!(entry.exported_at, t0());
        assert_eq!(entry.short_checksum, d.short_checksum());
        assert_eq!(entry.size, 12);
        assert_eq!(ExportEntry::from_key(&prefix, &loc.latest_key(&d.account_id, &d.region, d.service), 1), None);
        for other in [
            "notes.txt",
            "2026/03/07/readme.json",
            "2026/03/08/20260307T090501Z-abc.json",
            "2026/03/07/20260307T090501Z-xyz.json",
        ] {
            assert_eq!(ExportEntry::from_key(&prefix, &format!("{prefix}{other}"), 1), None, "{other}");
        }
        assert_eq!(ExportEntry::from_key("q/", &loc.document_key(&d), 1), None);
    }

    fn entries(offsets_hours: &[i64]) -> Vec<ExportEntry> {
        let loc = location("");
        let d = doc(t0(), 0);
        let prefix = loc.service_prefix(&d.account_id, &d.region, d.service);
        offsets_hours
            .iter()
            .map(|h| {
                ExportEntry::from_key(&prefix, &loc.document_key(&doc(t0() + Duration::hours(*h), *h)), 0).unwrap()
            })
            .collect()
    }

    fn hour(entry: Option<&ExportEntry>) -> Option<i64> {
        entry.map(|e| (e.exported_at - t0()).num_hours())
    }

    #[test]
    fn choose_picks_like_a_point_in_time() {
        // Unsorted on purpose, and more than one listing page's worth.
        let mut offsets: Vec<i64> = (0..1_500).map(|i| (i * 7) % 1_500 * 2).collect();
        offsets.dedup();
        let all = entries(&offsets);
        let at = |h: i64| Some(t0() + Duration::hours(h));
        assert_eq!(hour(choose(&all, None, None)), Some(2_998));
        assert_eq!(hour(choose(&all, at(11), None)), Some(10), "newest at or before");
        assert_eq!(hour(choose(&all, at(10), None)), Some(10), "at counts as before");
        assert_eq!(hour(choose(&all, None, at(11))), Some(12), "oldest at or after");
        assert_eq!(hour(choose(&all, None, at(12))), Some(12), "at counts as after");
        assert_eq!(hour(choose(&all, at(30), at(11))), Some(12), "oldest in the window");
        assert_eq!(hour(choose(&all, at(-1), None)), None, "nothing before the first");
        assert_eq!(hour(choose(&all, None, at(2_999))), None, "nothing after the last");
        assert_eq!(hour(choose(&all, at(13), at(13))), None, "an empty window");
        assert_eq!(hour(choose(&[], None, None)), None);
    }

    #[test]
    fn within_one_second_the_latest_export_sorts_last() {
        let loc = location("");
        let prefix = loc.service_prefix("111122223333", "global", Service::Route53);
        let mut same_second: Vec<ExportEntry> =
            (0..4).map(|v| ExportEntry::from_key(&prefix, &loc.document_key(&doc(t0(), v)), 0).unwrap()).collect();
        // The pointer names the one whose key sorts first within the second.
        let newest = same_second.iter().map(|e| e.key.clone()).min().unwrap();
        let earlier =
            ExportEntry::from_key(&prefix, &loc.document_key(&doc(t0() - Duration::seconds(1), 9)), 0).unwrap();
        same_second.push(earlier.clone());
        order(&mut same_second, Some(&newest));
        assert_eq!(same_second[0], earlier);
        assert_eq!(same_second.last().unwrap().key, newest);
        assert_eq!(choose(&same_second, None, None).map(|e| e.key.as_str()), Some(newest.as_str()));
    }

    #[test]
    fn stored_says_where() {
        let written = Stored::Written { key: "k".into() };
        assert_eq!(written.key(), "k");
        assert!(!written.is_unchanged());
        assert!(Stored::Unchanged { key: "k".into() }.is_unchanged());
    }
}
