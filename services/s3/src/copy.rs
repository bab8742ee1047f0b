//! One object version copied from bucket to bucket, server side: CopyObject up to the
//! multipart threshold, UploadPartCopy in parts above it (S3 copies at most 5 GiB in one
//! CopyObject). Used by the vault backup (source to vault) and the restore (vault to target).

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective, ServerSideEncryption};
use futures::stream::{self, StreamExt, TryStreamExt};
use lifeboat_common::aws::{classify, AwsError};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::S3Config;

/// What S3 wants in `x-amz-copy-source`: everything but unreserved characters and `/` encoded.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// The object version to copy.
#[derive(Clone, Debug)]
pub struct CopyFrom<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// Empty or `null`: the current version (an unversioned bucket).
    pub version_id: &'a str,
    pub size: i64,
    /// Without a version id: the ETag the listing saw. S3 then refuses the copy
    /// (`PreconditionFailed`) if the object has been overwritten since, so that the bytes copied
    /// are the ones the index describes. Empty: no condition.
    pub etag: &'a str,
}

/// Where to write it.
#[derive(Clone, Debug)]
pub struct CopyTo<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// SSE-KMS with this key; empty: the bucket's default encryption.
    pub kms_key_id: &'a str,
}

/// `bucket/key[?versionId=v]`, encoded for `x-amz-copy-source`.
pub fn copy_source(from: &CopyFrom<'_>) -> String {
    let mut source = format!("{}/{}", from.bucket, utf8_percent_encode(from.key, COPY_SOURCE));
    if !from.version_id.is_empty() && from.version_id != "null" {
        source.push_str("?versionId=");
        source.push_str(&utf8_percent_encode(from.version_id, NON_ALPHANUMERIC).to_string());
    }
    source
}

/// The ETag condition of a copy of the current object of an unversioned bucket.
fn if_match(from: &CopyFrom<'_>) -> Option<String> {
    let current = from.version_id.is_empty() || from.version_id == "null";
    (current && !from.etag.is_empty()).then(|| format!("\"{}\"", from.etag.trim_matches('"')))
}

/// The byte ranges (inclusive, as `bytes=a-b`) of a `size`-byte object in `part_size` parts.
pub fn part_ranges(size: i64, part_size: u64) -> Vec<String> {
    let part = part_size.max(1) as i64;
    (0..size).step_by(part as usize).map(|start| format!("bytes={start}-{}", (start + part).min(size) - 1)).collect()
}

/// Copies `from` to `to` with `s3` (a client that can read the source and write the target,
/// in the target bucket's region). The object's metadata and content type come along.
pub async fn copy(
    s3: &aws_sdk_s3::Client,
    from: &CopyFrom<'_>,
    to: &CopyTo<'_>,
    config: &S3Config,
) -> Result<(), AwsError> {
    let source = copy_source(from);
    if (from.size as u64) <= config.multipart_threshold {
        let mut copy = s3
            .copy_object()
            .bucket(to.bucket)
            .key(to.key)
            .copy_source(&source)
            .set_copy_source_if_match(if_match(from))
            .metadata_directive(MetadataDirective::Copy);
        if !to.kms_key_id.is_empty() {
            copy = copy.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(to.kms_key_id);
        }
        copy.send().await.map_err(|e| classify("s3:CopyObject", e))?;
        return Ok(());
    }
    let head = s3.head_object().bucket(from.bucket).key(from.key);
    let head = if from.version_id.is_empty() || from.version_id == "null" {
        head.set_if_match(if_match(from))
    } else {
        head.version_id(from.version_id)
    };
    let head = head.send().await.map_err(|e| classify("s3:HeadObject", e))?;
    let mut create = s3
        .create_multipart_upload()
        .bucket(to.bucket)
        .key(to.key)
        .set_metadata(head.metadata().cloned())
        .set_content_type(head.content_type().map(str::to_string));
    if !to.kms_key_id.is_empty() {
        create = create.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(to.kms_key_id);
    }
    let upload = create.send().await.map_err(|e| classify("s3:CreateMultipartUpload", e))?;
    let upload_id = upload.upload_id().unwrap_or_default().to_string();
    let parts = stream::iter(part_ranges(from.size, config.part_size).into_iter().enumerate())
        .map(|(i, range)| {
            let number = i as i32 + 1;
            let (source, upload_id) = (&source, &upload_id);
            async move {
                let part = s3
                    .upload_part_copy()
                    .bucket(to.bucket)
                    .key(to.key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(source)
                    .set_copy_source_if_match(if_match(from))
                    .copy_source_range(range)
                    .send()
                    .await
                    .map_err(|e| classify("s3:UploadPartCopy", e))?;
                let etag = part.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default().to_string();
                Ok::<_, AwsError>(CompletedPart::builder().part_number(number).e_tag(etag).build())
            }
        })
        .buffered(config.copy_concurrency.clamp(1, 8))
        .try_collect::<Vec<_>>()
        .await;
    let parts = match parts {
        Ok(parts) => parts,
        Err(e) => {
            // Best effort: an abandoned upload's parts are billed until aborted.
            let _ = s3.abort_multipart_upload().bucket(to.bucket).key(to.key).upload_id(&upload_id).send().await;
            return Err(e);
        }
    };
    s3.complete_multipart_upload()
        .bucket(to.bucket)
        .key(to.key)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| classify("s3:CompleteMultipartUpload", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_encoded_and_name_their_version() {
        let from = CopyFrom { bucket: "b", key: "a dir/ü+x.txt", version_id: "v1", size: 1, etag: "\"e\"" };
        assert_eq!(copy_source(&from), "b/a%20dir/%C3%BC%2Bx.txt?versionId=v1");
        let current = CopyFrom { version_id: "null", ..from.clone() };
        assert_eq!(copy_source(&current), "b/a%20dir/%C3%BC%2Bx.txt");
    }

    #[test]
    fn parts_cover_the_object_exactly() {
        assert_eq!(part_ranges(10, 4), ["bytes=0-3", "bytes=4-7", "bytes=8-9"]);
        assert_eq!(part_ranges(8, 4), ["bytes=0-3", "bytes=4-7"]);
        assert!(part_ranges(0, 4).is_empty());
    }
}
