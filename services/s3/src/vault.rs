//! The vault: the secondary copy of protection groups' objects, and the index of what was
//! backed up at which time.
//!
//! Layout under the vault's prefix, per group and source bucket (bucket names are global):
//! ```text
//! <prefix><group>/<bucket>/data/<version>/<key>     one copy per backed-up object version
//! <prefix><group>/<bucket>/index/<YYYYMMDDTHHMMSSZ>-<run>.json   the bucket as of that backup
//! <prefix><group>/<bucket>/index/<...>.skipped.csv  the objects that backup could not copy
//! ```
//! `<version>` is the source's version id, or `e-<etag>` for an object of an unversioned bucket
//! (version id `null`), so a version is copied once whatever the number of runs. Each index
//! lists every object of the bucket at its backup time (carried over from the previous index
//! when unchanged), the deletions seen since the previous index, and the skipped objects; the
//! index keys sort by time.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use chrono::{DateTime, NaiveDateTime, Utc};
use lifeboat_common::aws::{absent_if_not_found, classify, AwsError};
use lifeboat_proto::S3Vault;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `format` of every index document.
pub const INDEX_FORMAT: &str = "lifeboat.s3.index/v1";
const KEY_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const NOT_FOUND: &[&str] = &["NotFound", "NoSuchKey", "NoSuchBucket", "HTTP404"];

/// A bucket of a group as of one backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub format: String,
    pub group: String,
    pub bucket: String,
    pub account_id: String,
    pub region: String,
    /// The backup run (its due id) that wrote the index.
    pub run: String,
    pub backed_up_at: DateTime<Utc>,
    /// Every object of the bucket (that the group's filter selects) at `backed_up_at`, by key.
    pub objects: Vec<Entry>,
    /// Objects of the previous index no longer in the bucket.
    #[serde(default)]
    pub deleted: Vec<Deleted>,
    /// Objects this backup could not copy, with why: a partial backup when not empty.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// The index this one was made incrementally from.
    #[serde(default)]
    pub previous: Option<String>,
}

/// One backed-up object version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    /// The source's version id (`null` for an unversioned bucket).
    pub version_id: String,
    pub etag: String,
    pub size: i64,
    pub storage_class: String,
    pub last_modified: DateTime<Utc>,
    /// When this version was first copied to the vault.
    pub backed_up_at: DateTime<Utc>,
    /// Its copy in the vault bucket.
    pub vault_key: String,
}

/// An object the previous index had and this backup did not find.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub key: String,
    pub version_id: String,
    /// The backup that first missed it.
    pub detected_at: DateTime<Utc>,
}

/// An object that could not be backed up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub key: String,
    pub version_id: String,
    pub size: i64,
    pub storage_class: String,
    /// `AccessDenied`, `ARCHIVED_STORAGE_CLASS`...
    pub code: String,
    pub reason: String,
}

/// The columns of a `.skipped.csv` (and of the object lines of `lifeboat backup report --csv`).
pub const SKIPPED_HEADER: &str = "bucket,key,version_id,size,storage_class,code,reason";

impl Index {
    pub fn new(group: &str, bucket: &str, account_id: &str, region: &str, run: &str, at: DateTime<Utc>) -> Self {
        Self {
            format: INDEX_FORMAT.to_string(),
            group: group.to_string(),
            bucket: bucket.to_string(),
            account_id: account_id.to_string(),
            region: region.to_string(),
            run: run.to_string(),
            backed_up_at: at,
            objects: Vec::new(),
            deleted: Vec::new(),
            skipped: Vec::new(),
            previous: None,
        }
    }

    /// The skipped objects as CSV (with the header).
    pub fn skipped_csv(&self) -> String {
        let mut out = format!("{SKIPPED_HEADER}\n");
        for s in &self.skipped {
            let size = s.size.to_string();
            let fields = [&self.bucket, &s.key, &s.version_id, &size, &s.storage_class, &s.code, &s.reason];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        out
    }
}

/// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// `<prefix><group>/`.
pub fn group_base(vault: &S3Vault, group: &str) -> String {
    format!("{}{group}/", vault.prefix)
}

/// `<prefix><group>/<bucket>/`.
pub fn bucket_base(vault: &S3Vault, group: &str, bucket: &str) -> String {
    format!("{}{bucket}/", group_base(vault, group))
}

/// `<base>index/<time>-<first 8 hex digits of the run's sha256>.json`.
pub fn index_key(vault: &S3Vault, group: &str, bucket: &str, at: DateTime<Utc>, run: &str) -> String {
    let digest = Sha256::digest(run.as_bytes());
    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}index/{}-{short}.json", bucket_base(vault, group, bucket), at.format(KEY_TIME_FORMAT))
}

/// The CSV of the objects an index's backup skipped, beside the index.
pub fn skipped_key(index_key: &str) -> String {
    format!("{}.skipped.csv", index_key.strip_suffix(".json").unwrap_or(index_key))
}

/// Where a backup too large for one step keeps what it has copied so far, beside its index
/// (not an index: `list_indexes` does not see it). Deleted once the index is written.
pub fn checkpoint_key(index_key: &str) -> String {
    format!("{}.partial.json", index_key.strip_suffix(".json").unwrap_or(index_key))
}

/// The version part of a vault key: the version id, or `e-<etag>` without one.
pub fn version_token(version_id: &str, etag: &str) -> String {
    if version_id.is_empty() || version_id == "null" {
        format!("e-{}", etag.trim_matches('"'))
    } else {
        version_id.to_string()
    }
}

/// Where a version of `key` is copied in the vault.
pub fn object_key(vault: &S3Vault, group: &str, bucket: &str, version_id: &str, etag: &str, key: &str) -> String {
    format!("{}data/{}/{key}", bucket_base(vault, group, bucket), version_token(version_id, etag))
}

/// `s3://bucket/key`.
pub fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// `s3://bucket/key` split; `None` for anything else.
pub fn parse_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("s3://")?.split_once('/')
}

/// One index in a listing, as its key describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub key: String,
    pub backed_up_at: DateTime<Utc>,
}

impl IndexEntry {
    /// The entry an index key describes; `None` for anything else under `index/`.
    pub fn from_key(key: &str) -> Option<Self> {
        let (_, file) = key.rsplit_once("/index/")?;
        let stem = file.strip_suffix(".json")?;
        let (stamp, short) = stem.split_once('-')?;
        let at = NaiveDateTime::parse_from_str(stamp, KEY_TIME_FORMAT).ok()?.and_utc();
        (!short.is_empty() && short.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self { key: key.to_string(), backed_up_at: at })
    }
}

/// The indexes of `bucket` in `group`, oldest first (none: never backed up).
pub async fn list_indexes(
    s3: &aws_sdk_s3::Client,
    vault: &S3Vault,
    group: &str,
    bucket: &str,
) -> Result<Vec<IndexEntry>, AwsError> {
    let prefix = format!("{}index/", bucket_base(vault, group, bucket));
    let mut found = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(&vault.bucket).prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("s3:ListObjectsV2", e))?;
        found.extend(page.contents().iter().filter_map(|o| IndexEntry::from_key(o.key()?)));
    }
    found.sort_by(|a, b| (a.backed_up_at, &a.key).cmp(&(b.backed_up_at, &b.key)));
    Ok(found)
}

/// The source buckets that have indexes in `group`, sorted.
pub async fn list_group_buckets(
    s3: &aws_sdk_s3::Client,
    vault: &S3Vault,
    group: &str,
) -> Result<Vec<String>, AwsError> {
    let base = group_base(vault, group);
    let mut buckets = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(&vault.bucket).prefix(&base).delimiter("/").into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("s3:ListObjectsV2", e))?;
        for common in page.common_prefixes() {
            if let Some(name) = common.prefix().and_then(|p| p.strip_prefix(&base)).and_then(|p| p.strip_suffix('/')) {
                buckets.push(name.to_string());
            }
        }
    }
    buckets.sort();
    Ok(buckets)
}

/// The newest index at or before `before` and at or after `after` (either bound optional).
pub fn choose(
    entries: &[IndexEntry],
    before: Option<DateTime<Utc>>,
    after: Option<DateTime<Utc>>,
) -> Option<&IndexEntry> {
    entries
        .iter()
        .filter(|e| before.is_none_or(|b| e.backed_up_at <= b) && after.is_none_or(|a| e.backed_up_at >= a))
        .max_by(|a, b| (a.backed_up_at, &a.key).cmp(&(b.backed_up_at, &b.key)))
}

/// The index at `key`; `None` if there is none. An index that does not parse is an
/// `InvalidIndex` error naming it.
pub async fn get_index(s3: &aws_sdk_s3::Client, vault: &S3Vault, key: &str) -> Result<Option<Index>, AwsError> {
    let got = s3.get_object().bucket(&vault.bucket).key(key).send().await.map_err(|e| classify("s3:GetObject", e));
    let Some(output) = absent_if_not_found(got, NOT_FOUND)? else {
        return Ok(None);
    };
    let bytes = output
        .body
        .collect()
        .await
        .map_err(|e| AwsError::task_failure("s3:GetObject", "ReadFailed", e.to_string()))?
        .into_bytes();
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
        AwsError::task_failure("s3:GetObject", "InvalidIndex", format!("{}: {e}", url(&vault.bucket, key)))
    })?;
    if index.format != INDEX_FORMAT {
        let message = format!("{} has format {:?}, not {INDEX_FORMAT}", url(&vault.bucket, key), index.format);
        return Err(AwsError::task_failure("s3:GetObject", "InvalidIndex", message));
    }
    Ok(Some(index))
}

/// Writes `index` at `key`, and its skipped objects' CSV beside it when there are any.
pub async fn put_index(s3: &aws_sdk_s3::Client, vault: &S3Vault, key: &str, index: &Index) -> Result<(), AwsError> {
    let body = serde_json::to_vec(index).unwrap_or_default();
    if !index.skipped.is_empty() {
        put(s3, vault, &skipped_key(key), "text/csv", index.skipped_csv().into_bytes()).await?;
    }
    put(s3, vault, key, "application/json", body).await
}

async fn put(
    s3: &aws_sdk_s3::Client,
    vault: &S3Vault,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(), AwsError> {
    let mut put =
        s3.put_object().bucket(&vault.bucket).key(key).content_type(content_type).body(ByteStream::from(body));
    if !vault.kms_key_id.is_empty() {
        put = put.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(&vault.kms_key_id);
    }
    put.send().await.map_err(|e| classify("s3:PutObject", e))?;
    Ok(())
}

/// The deployment's default vault, for restores that do not name one: `LIFEBOAT_S3_VAULT_BUCKET`
/// and `LIFEBOAT_S3_VAULT_REGION` (both required), `LIFEBOAT_S3_VAULT_PREFIX`,
/// `LIFEBOAT_S3_VAULT_ACCOUNT`.
pub fn from_env() -> Option<S3Vault> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let vault = S3Vault {
        bucket: var("LIFEBOAT_S3_VAULT_BUCKET"),
        region: var("LIFEBOAT_S3_VAULT_REGION"),
        prefix: var("LIFEBOAT_S3_VAULT_PREFIX"),
        account_id: var("LIFEBOAT_S3_VAULT_ACCOUNT"),
        kms_key_id: String::new(),
    };
    (!vault.bucket.is_empty() && !vault.region.is_empty()).then_some(vault)
}

/// Creates the vault bucket in its region when it does not exist, with versioning on.
pub async fn ensure_vault(s3: &aws_sdk_s3::Client, vault: &S3Vault) -> Result<(), AwsError> {
    let location = lifeboat_config::store::Location {
        bucket: vault.bucket.clone(),
        region: vault.region.clone(),
        prefix: vault.prefix.clone(),
        kms_key_id: vault.kms_key_id.clone(),
    };
    lifeboat_config::store::ensure_bucket(s3, &location).await
}

/// When the object at `key` in the vault was written (its LastModified as listed); `None` if
/// there is none.
pub async fn written_at(
    s3: &aws_sdk_s3::Client,
    vault: &S3Vault,
    key: &str,
) -> Result<Option<DateTime<Utc>>, AwsError> {
    let page = s3
        .list_objects_v2()
        .bucket(&vault.bucket)
        .prefix(key)
        .max_keys(1)
        .send()
        .await
        .map_err(|e| classify("s3:ListObjectsV2", e))?;
    let found = page.contents().iter().find(|o| o.key() == Some(key));
    Ok(found.and_then(|o| o.last_modified()).and_then(lifeboat_common::time::from_aws))
}

/// The text at `s3://bucket/key` (a partial backup's `.skipped.csv`), read with `config`'s
/// credentials in the bucket's own region (GetBucketLocation first: the CLI does not know it).
pub async fn fetch_text(config: &aws_config::SdkConfig, s3_url: &str) -> Result<String, AwsError> {
    let Some((bucket, key)) = parse_url(s3_url) else {
        return Err(AwsError::task_failure("s3:GetObject", "InvalidUrl", format!("{s3_url:?} is not s3://bucket/key")));
    };
    let home = config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".to_string());
    let s3 = lifeboat_config::clients::s3_client(config, "", &home);
    let location =
        s3.get_bucket_location().bucket(bucket).send().await.map_err(|e| classify("s3:GetBucketLocation", e))?;
    let region = match location.location_constraint().map(|c| c.as_str()) {
        None | Some("") => "us-east-1".to_string(),
        Some("EU") => "eu-west-1".to_string(),
        Some(region) => region.to_string(),
    };
    let s3 = if region == home { s3 } else { lifeboat_config::clients::s3_client(config, "", &region) };
    let output = s3.get_object().bucket(bucket).key(key).send().await.map_err(|e| classify("s3:GetObject", e))?;
    let bytes = output
        .body
        .collect()
        .await
        .map_err(|e| AwsError::task_failure("s3:GetObject", "ReadFailed", e.to_string()))?
        .into_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> S3Vault {
        S3Vault { bucket: "vault".into(), region: "us-west-2".into(), prefix: "s3/".into(), ..Default::default() }
    }

    #[test]
    fn index_keys_sort_by_time_and_describe_themselves() {
        let at: DateTime<Utc> = "2026-12-05T10:15:00Z".parse().unwrap();
        let key = index_key(&vault(), "web", "assets", at, "plan/rule/2026-12-05T10:15:00Z");
        assert!(key.starts_with("s3/web/assets/index/20261205T101500Z-"), "{key}");
        assert_eq!(IndexEntry::from_key(&key), Some(IndexEntry { key: key.clone(), backed_up_at: at }));
        assert_eq!(IndexEntry::from_key(&skipped_key(&key)), None);
        assert_eq!(IndexEntry::from_key(&checkpoint_key(&key)), None);
        assert!(skipped_key(&key).ends_with(".skipped.csv"));
        let later = index_key(&vault(), "web", "assets", at + chrono::TimeDelta::minutes(15), "x");
        assert!(later > key);
    }

    #[test]
    fn a_version_is_stored_by_its_id_or_without_one_by_its_etag() {
        assert_eq!(object_key(&vault(), "web", "assets", "v1", "\"abc\"", "a/b.txt"), "s3/web/assets/data/v1/a/b.txt");
        assert_eq!(object_key(&vault(), "web", "assets", "null", "\"abc\"", "a.txt"), "s3/web/assets/data/e-abc/a.txt");
    }

    #[test]
    fn choose_takes_the_newest_within_the_bounds() {
        let entry = |at: &str| IndexEntry { key: at.to_string(), backed_up_at: at.parse().unwrap() };
        let all = [entry("2026-12-01T00:00:00Z"), entry("2026-12-02T00:00:00Z"), entry("2026-12-03T00:00:00Z")];
        assert_eq!(choose(&all, None, None), Some(&all[2]));
        assert_eq!(choose(&all, Some("2026-12-02T12:00:00Z".parse().unwrap()), None), Some(&all[1]));
        assert_eq!(choose(&all, None, Some("2026-12-04T00:00:00Z".parse().unwrap())), None);
    }

    #[test]
    fn skipped_objects_are_csv_with_quoted_fields() {
        let mut index = Index::new("web", "assets", "1", "us-east-1", "run", Utc::now());
        index.skipped.push(Skipped {
            key: "a,b".into(),
            version_id: "v1".into(),
            size: 3,
            storage_class: "GLACIER".into(),
            code: "ARCHIVED_STORAGE_CLASS".into(),
            reason: "needs a restore".into(),
        });
        assert_eq!(
            index.skipped_csv(),
            format!("{SKIPPED_HEADER}\nassets,\"a,b\",v1,3,GLACIER,ARCHIVED_STORAGE_CLASS,needs a restore\n")
        );
    }
}
