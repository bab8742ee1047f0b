//! Vault retention: after a bucket's backup, the indexes of that bucket that the rule's
//! retention no longer keeps (and its lock lets go) are deleted, with every vault copy that
//! only they reference. A copy any kept index still lists stays, however old.
//!
//! The vault is versioned, so deleting means deleting the versions (a plain delete would
//! only add a delete marker and keep paying for the bytes). Copies go before their index: a
//! crash between leaves the expired index, and the next backup finishes the job.

use std::collections::{BTreeSet, HashSet};

use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use chrono::{DateTime, Utc};
use lifeboat_common::aws::{classify, AwsError, ErrorClass};
use lifeboat_proto::{RecoveryLock, Retention, S3Vault};

use crate::vault;

/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// What one expiry pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Indexes (backups) deleted.
    pub indexes: usize,
    /// Vault copies deleted (objects only expired indexes referenced).
    pub objects: usize,
    /// Expired indexes the rule's lock keeps for now.
    pub held: usize,
}

impl Expired {
    /// The note added to the backup's message; empty when nothing expired or was held.
    pub fn note(&self) -> String {
        let mut parts = Vec::new();
        if self.indexes > 0 {
            parts.push(format!("{} expired backups deleted ({} vault objects)", self.indexes, self.objects));
        }
        if self.held > 0 {
            parts.push(format!("{} expired backups kept by the lock", self.held));
        }
        parts.join(", ")
    }
}

/// Applies `retention` and `lock` to the indexes of `bucket` in `group` at `now`.
pub async fn expire(
    s3: &aws_sdk_s3::Client,
    vault: &S3Vault,
    group: &str,
    bucket: &str,
    retention: &Retention,
    lock: Option<&RecoveryLock>,
    now: DateTime<Utc>,
) -> Result<Expired, AwsError> {
    let entries = vault::list_indexes(s3, vault, group, bucket).await?;
    let points: Vec<(String, DateTime<Utc>)> = entries.iter().map(|e| (e.key.clone(), e.backed_up_at)).collect();
    let (expired, held) = lifeboat_plans::retention::expired_points(retention, lock, &points, now);
    let mut outcome = Expired { held: held.len(), ..Expired::default() };
    if expired.is_empty() {
        return Ok(outcome);
    }
    let expired: BTreeSet<String> = expired.into_iter().collect();
    let mut kept_copies: HashSet<String> = HashSet::new();
    for entry in entries.iter().filter(|e| !expired.contains(&e.key)) {
        if let Some(index) = vault::get_index(s3, vault, &entry.key).await? {
            kept_copies.extend(index.objects.into_iter().map(|o| o.vault_key));
        }
    }
    let mut doomed_copies: BTreeSet<String> = BTreeSet::new();
    for key in &expired {
        if let Some(index) = vault::get_index(s3, vault, key).await? {
            doomed_copies.extend(index.objects.into_iter().map(|o| o.vault_key).filter(|k| !kept_copies.contains(k)));
        }
    }
    let base = vault::bucket_base(vault, group, bucket);
    outcome.objects = delete_every_version(s3, &vault.bucket, &format!("{base}data/"), &doomed_copies).await?;
    let index_files: BTreeSet<String> =
        expired.iter().flat_map(|key| [key.clone(), vault::skipped_key(key), vault::checkpoint_key(key)]).collect();
    delete_every_version(s3, &vault.bucket, &format!("{base}index/"), &index_files).await?;
    outcome.indexes = expired.len();
    Ok(outcome)
}

/// Deletes every version (and delete marker) of `keys` under `prefix`, listed once; returns
/// how many of `keys` had any. Keys already gone are no error.
async fn delete_every_version(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    keys: &BTreeSet<String>,
) -> Result<usize, AwsError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut versions: Vec<(String, String)> = Vec::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| classify("s3:ListObjectVersions", e))?;
        let listed = page
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(page.delete_markers().iter().map(|m| (m.key(), m.version_id())));
        for (key, version) in listed {
            if let (Some(key), Some(version)) = (key, version) {
                if keys.contains(key) {
                    versions.push((key.to_string(), version.to_string()));
                }
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
        if key_marker.is_none() {
            break;
        }
    }
    let found: HashSet<&str> = versions.iter().map(|(key, _)| key.as_str()).collect();
    let found = found.len();
    for batch in versions.chunks(DELETE_BATCH) {
        delete_batch(s3, bucket, batch).await?;
    }
    Ok(found)
}

async fn delete_batch(s3: &aws_sdk_s3::Client, bucket: &str, batch: &[(String, String)]) -> Result<(), AwsError> {
    let built = |e: aws_smithy_types::error::operation::BuildError| {
        AwsError::task_failure("s3:DeleteObjects", "INVALID_TASK", e.to_string())
    };
    let objects = batch
        .iter()
        .map(|(key, version)| ObjectIdentifier::builder().key(key).version_id(version).build().map_err(built))
        .collect::<Result<Vec<_>, _>>()?;
    let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(built)?;
    let output =
        s3.delete_objects().bucket(bucket).delete(delete).send().await.map_err(|e| classify("s3:DeleteObjects", e))?;
    if let Some(error) = output.errors().first() {
        let code = error.code().unwrap_or("DeleteObjects");
        let message = format!("{}: {}", error.key().unwrap_or_default(), error.message().unwrap_or_default());
        return Err(match lifeboat_common::aws::classify_code(Some(code), 0) {
            ErrorClass::Retryable => AwsError::retryable("s3:DeleteObjects", code, message),
            _ => AwsError::task_failure("s3:DeleteObjects", code, message),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
    use aws_sdk_s3::operation::get_object::GetObjectOutput;
    use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{Object, ObjectVersion};
    use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
    use chrono::TimeDelta;

    use super::*;
    use crate::vault::{Entry, Index};

    fn vault() -> S3Vault {
        S3Vault { bucket: "v".into(), region: "us-west-2".into(), prefix: "s3/".into(), ..Default::default() }
    }

    fn now() -> DateTime<Utc> {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    /// An old index listing `old.txt` and a new one listing nothing, and the versions of the
    /// old one's copy; DeleteObjects answers with `code` for its first key.
    fn world(code: &'static str) -> [Rule; 5] {
        let (old_at, new_at) = (now() - TimeDelta::days(40), now() - TimeDelta::days(1));
        let old_key = vault::index_key(&vault(), "g", "b", old_at, "old");
        let new_key = vault::index_key(&vault(), "g", "b", new_at, "new");
        let mut old = Index::new("g", "b", "", "us-east-1", "old", old_at);
        old.objects.push(Entry {
            key: "old.txt".into(),
            version_id: "v1".into(),
            etag: "\"e\"".into(),
            size: 1,
            storage_class: "STANDARD".into(),
            last_modified: old_at,
            backed_up_at: old_at,
            vault_key: "s3/g/b/data/v1/old.txt".into(),
        });
        let new = Index::new("g", "b", "", "us-east-1", "new", new_at);
        let (listed_old, listed_new) = (old_key.clone(), new_key.clone());
        let listed = mock!(aws_sdk_s3::Client::list_objects_v2).then_output(move || {
            ListObjectsV2Output::builder()
                .contents(Object::builder().key(&listed_old).build())
                .contents(Object::builder().key(&listed_new).build())
                .build()
        });
        let read_old = mock!(aws_sdk_s3::Client::get_object)
            .match_requests(move |r| r.key() == Some(old_key.as_str()))
            .then_output(move || {
                GetObjectOutput::builder().body(ByteStream::from(serde_json::to_vec(&old).unwrap())).build()
            });
        let read_new = mock!(aws_sdk_s3::Client::get_object)
            .match_requests(move |r| r.key() == Some(new_key.as_str()))
            .then_output(move || {
                GetObjectOutput::builder().body(ByteStream::from(serde_json::to_vec(&new).unwrap())).build()
            });
        let versions = mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| {
            ListObjectVersionsOutput::builder()
                .versions(ObjectVersion::builder().key("s3/g/b/data/v1/old.txt").version_id("x1").build())
                .is_truncated(false)
                .build()
        });
        let deleted = mock!(aws_sdk_s3::Client::delete_objects).then_output(move || {
            let error =
                aws_sdk_s3::types::Error::builder().key("s3/g/b/data/v1/old.txt").code(code).message("no").build();
            DeleteObjectsOutput::builder().errors(error).build()
        });
        [listed, read_old, read_new, versions, deleted]
    }

    fn days(days: u32) -> Retention {
        Retention { days, ..Default::default() }
    }

    #[tokio::test]
    async fn a_delete_s3_refuses_is_the_backups_error_and_throttling_is_retried() {
        let [a, b, c, d, e] = world("AccessDenied");
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&a, &b, &c, &d, &e]);
        let error = expire(&s3, &vault(), "g", "b", &days(30), None, now()).await.unwrap_err();
        assert!(!error.is_retryable() && error.code == "AccessDenied", "{error:?}");
        assert!(error.message.contains("old.txt"), "{error:?}");

        let [a, b, c, d, e] = world("SlowDown");
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&a, &b, &c, &d, &e]);
        let error = expire(&s3, &vault(), "g", "b", &days(30), None, now()).await.unwrap_err();
        assert!(error.is_retryable() && error.code == "SlowDown", "{error:?}");
    }

    #[tokio::test]
    async fn nothing_past_its_retention_deletes_nothing() {
        let [a, b, c, d, e] = world("AccessDenied");
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&a, &b, &c, &d, &e]);
        let kept = expire(&s3, &vault(), "g", "b", &days(60), None, now()).await.expect("no deletes");
        assert_eq!(kept, Expired::default());
        assert_eq!(e.num_calls(), 0, "no DeleteObjects");
    }

    #[test]
    fn the_note_says_what_went_and_what_the_lock_held() {
        assert_eq!(Expired::default().note(), "");
        let both = Expired { indexes: 2, objects: 5, held: 1 };
        assert_eq!(both.note(), "2 expired backups deleted (5 vault objects), 1 expired backups kept by the lock");
    }
}
