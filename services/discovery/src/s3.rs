//! S3 restore sets (`lifeboat.work.s3`): a set whose target has `in_place` rolls its source
//! buckets back or undeletes in them ([`crate::s3_inplace`]); any other restores a protection
//! group's objects from the vault, one task per source bucket, from the index the set's time
//! rule picks. (helper h2)

use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_proto::{RestoreRequest, RestoreSet, RestoreTask, S3Vault, Source};

use crate::select::TimeRule;

/// The tasks of an S3 set, or the reason code and message it has none.
pub async fn plan(
    accounts: &Accounts,
    default_vault: Option<&S3Vault>,
    request: &RestoreRequest,
    set: &RestoreSet,
    source: &Source,
    rule: TimeRule,
) -> Result<Result<Vec<RestoreTask>, (String, String)>, AwsError> {
    let in_place = set.target.as_ref().and_then(|t| t.s3.as_ref()).and_then(|s3| s3.in_place.as_ref());
    if in_place.is_some() {
        return crate::s3_inplace::plan(accounts, request, set, source).await;
    }
    let _ = (default_vault, rule);
    Ok(Err(("S3_NOT_AVAILABLE".to_string(), "restores from protection groups are being built".to_string())))
}
