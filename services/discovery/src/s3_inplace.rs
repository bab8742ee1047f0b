//! Rollback and undelete sets: each source bucket checked for versioning, then fanned out per
//! prefix into tasks. (helper h3)
//!
//! A set names its buckets in `source.names` (or, without names, `target.s3.bucket`). Each
//! bucket must keep versions (versioning enabled, or suspended with versions kept from before):
//! a rollback brings old versions back, and without them there is nothing to bring back. The
//! keys under `in_place.prefix` are split one level down: one task per common prefix (`a/`,
//! `b/`...) and one for the keys directly under the prefix, so a large bucket rolls back in
//! parallel and a redelivered task re-lists only its part.

use aws_sdk_s3::types::BucketVersioningStatus;
use lifeboat_common::aws::{classify, Accounts, AwsError};
use lifeboat_proto::{
    restore_task, Backup, ResourceType, RestoreRequest, RestoreSet, RestoreTask, S3InPlace, S3Target, Source,
};

use crate::service::restore_task;

/// Reason code of a set naming a bucket without versioning.
pub const S3_VERSIONING_DISABLED: &str = "S3_VERSIONING_DISABLED";
/// Reason code of a set whose in-place settings are not usable.
const INVALID_REQUEST: &str = "INVALID_REQUEST";

/// The tasks of an in-place set, or the reason code and message it has none.
pub async fn plan(
    accounts: &Accounts,
    request: &RestoreRequest,
    set: &RestoreSet,
    source: &Source,
) -> Result<Result<Vec<RestoreTask>, (String, String)>, AwsError> {
    let target = set.target.as_ref().and_then(|t| t.s3.clone()).unwrap_or_default();
    let in_place = target.in_place.clone().unwrap_or_default();
    let invalid = |field: &str, message: String| Ok(Err((INVALID_REQUEST.to_string(), format!("{field}: {message}"))));
    let Some(mode) = lifeboat_s3::rollback::Mode::parse(&in_place.mode) else {
        let message = format!("{:?} is neither \"rollback\" nor \"undelete\"", in_place.mode);
        return invalid("target.s3.in_place.mode", message);
    };
    let Some(at) = in_place.at.as_ref().and_then(lifeboat_common::time::from_timestamp) else {
        return invalid("target.s3.in_place.at", "is required: the time to roll back to (or undelete since)".into());
    };
    let buckets: Vec<String> = if source.names.is_empty() { vec![target.bucket.clone()] } else { source.names.clone() };
    if let Some(name) = buckets.iter().find(|b| b.is_empty() || b.contains('*')) {
        return invalid("source.names", format!("'{name}' is not a bucket name (rollbacks name their buckets)"));
    }
    let account_id = accounts
        .resolve_account(if target.account_id.is_empty() { &source.account_id } else { &target.account_id })
        .await?;
    let region = if target.region.is_empty() { source.region.clone() } else { target.region.clone() };
    let config = accounts.config_as(&account_id, &region, &set.target_role_arn).await?;
    let s3 = lifeboat_config::clients::s3_client(&config, &account_id, &region);
    let when = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut tasks = Vec::new();
    for bucket in &buckets {
        if let Err(refused) = versioned(&s3, bucket, &region).await? {
            return Ok(Err(refused));
        }
        for (prefix, shallow) in parts(&s3, bucket, &in_place.prefix).await? {
            let part = format!("s3://{bucket}/{prefix}");
            let backup = Backup {
                // The part is the task's identity: a replanned set gets the same task ids.
                backup_id: if shallow { format!("{part}?shallow") } else { part.clone() },
                resource_type: ResourceType::S3Bucket as i32,
                source_resource_id: bucket.clone(),
                account_id: account_id.clone(),
                region: region.clone(),
                created_at: in_place.at,
                ..Default::default()
            };
            let what = if shallow { format!("the keys directly under {part}") } else { part.clone() };
            let why = match mode {
                lifeboat_s3::rollback::Mode::Rollback => format!("rollback of {what} to its state at {when}"),
                lifeboat_s3::rollback::Mode::Undelete => format!("undelete of {what}: delete markers since {when}"),
            };
            let task_target = S3Target {
                account_id: account_id.clone(),
                region: region.clone(),
                bucket: bucket.clone(),
                in_place: Some(S3InPlace { prefix, shallow, ..in_place.clone() }),
                ..target.clone()
            };
            tasks.push(restore_task(
                request,
                set,
                ResourceType::S3Bucket as i32,
                backup,
                restore_task::Target::S3(task_target),
                why,
            ));
        }
    }
    Ok(Ok(tasks))
}

/// Whether `bucket` keeps versions: enabled, or suspended with versions from before (a
/// suspended bucket whose every version is `null` never had any).
async fn versioned(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
) -> Result<Result<(), (String, String)>, AwsError> {
    let status = match s3.get_bucket_versioning().bucket(bucket).send().await {
        Ok(versioning) => versioning.status().cloned(),
        Err(e) => match status_of_unparsed(&e) {
            Some(status) => status,
            None => {
                let e = classify("s3:GetBucketVersioning", e);
                if e.code == "NoSuchBucket" {
                    return Ok(Err((e.code, format!("bucket {bucket} does not exist in {region}"))));
                }
                return Err(e);
            }
        },
    };
    let refused = || {
        Ok(Err((
            S3_VERSIONING_DISABLED.to_string(),
            format!("bucket {bucket} has no versioning: a rollback needs the old versions"),
        )))
    };
    match status.as_ref() {
        Some(BucketVersioningStatus::Enabled) => Ok(Ok(())),
        Some(BucketVersioningStatus::Suspended) => {
            let listed = s3
                .list_object_versions()
                .bucket(bucket)
                .max_keys(1000)
                .send()
                .await
                .map_err(|e| classify("s3:ListObjectVersions", e))?;
            let real = |id: Option<&str>| id.is_some_and(|id| id != "null");
            if listed.versions().iter().any(|v| real(v.version_id()))
                || listed.delete_markers().iter().any(|m| real(m.version_id()))
            {
                Ok(Ok(()))
            } else {
                refused()
            }
        }
        _ => refused(),
    }
}

/// The status of a GetBucketVersioning answer the SDK could not parse: moto (5.x) names its
/// root `GetBucketVersioningResponse` where S3 says `VersioningConfiguration`; the `Status`
/// element is the same. None for any other error; Some(None) for a bucket never versioned.
fn status_of_unparsed<E>(
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Option<Option<BucketVersioningStatus>> {
    let raw = error.raw_response()?;
    if raw.status().as_u16() != 200 {
        return None;
    }
    let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
    if !body.contains("GetBucketVersioningResponse") {
        return None;
    }
    let status = body.split_once("<Status>").and_then(|(_, rest)| rest.split_once("</Status>")).map(|(s, _)| s);
    Some(status.map(BucketVersioningStatus::from))
}

/// The parts of `bucket` under `prefix`, one level down: each common prefix (deep), then the
/// keys directly under `prefix` (shallow). Listed from the versions, so a folder whose keys are
/// all deleted (only delete markers left) is a part too.
async fn parts(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<(String, bool)>, AwsError> {
    let mut parts = Vec::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
            .map_err(|e| classify("s3:ListObjectVersions", e))?;
        for common in page.common_prefixes() {
            if let Some(common) = common.prefix() {
                if !parts.iter().any(|(p, _)| p == common) {
                    parts.push((common.to_string(), false));
                }
            }
        }
        if !page.is_truncated().unwrap_or(false) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
        if key_marker.is_none() {
            break;
        }
    }
    parts.sort();
    parts.push((prefix.to_string(), true));
    Ok(parts)
}
