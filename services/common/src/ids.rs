//! Request and task identifiers.

use sha2::{Digest, Sha256};

/// The longest request id accepted; it appears in subjects, KV keys and tags.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Request ids become NATS subject tokens and KV keys, so only `[A-Za-z0-9_-]` is allowed.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Deterministic task id: the same request, set and backup always give the same id, so a
/// replanned request (after a crash of discovery) re-publishes identical tasks, and the id can
/// serve as the EC2 ClientToken (at most 64 ASCII characters).
pub fn task_id(request_id: &str, set_name: &str, backup_id: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [request_id, set_name, backup_id] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("t-{hex}")
}

/// A task id for a set that produced no work (no matching backups, or discovery failed for it),
/// so that the set still shows up in the status with its reason.
pub fn set_task_id(request_id: &str, set_name: &str) -> String {
    task_id(request_id, set_name, "")
}

/// A fresh request id for a request submitted without one.
pub fn new_request_id() -> String {
    format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// What a request asks for, as a short stable digest: the request without its submission time
/// and submitter (a resubmitted file gets new ones), in the canonical JSON mapping with sorted
/// keys (prost's maps have no stable order). Equal digests mean "the same request again"; a
/// different digest under a known id is a conflict, refused at the edges (HTTP 409, the CLI).
pub fn request_digest(request: &lifeboat_proto::RestoreRequest) -> String {
    let mut request = request.clone();
    request.submitted_at = None;
    request.requested_by.clear();
    let canonical = serde_json::to_value(&request).map(|v| v.to_string()).unwrap_or_default();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
