//! Rollback and undelete sets: each source bucket checked for versioning, then fanned out per
//! prefix into tasks. (helper h3)

use lifeboat_common::aws::{Accounts, AwsError};
use lifeboat_proto::{RestoreRequest, RestoreSet, RestoreTask, Source};

/// The tasks of an in-place set, or the reason code and message it has none.
pub async fn plan(
    accounts: &Accounts,
    request: &RestoreRequest,
    set: &RestoreSet,
    source: &Source,
) -> Result<Result<Vec<RestoreTask>, (String, String)>, AwsError> {
    let _ = (accounts, request, set, source);
    Ok(Err(("S3_NOT_AVAILABLE".to_string(), "rollbacks are being built".to_string())))
}
