//! Subjects, stream, consumer and bucket names, headers and limits, in one place.

use std::borrow::Cow;
use std::time::Duration;

/// Clients publish RestoreRequests here.
pub const RESTORE_REQUESTS: &str = "lifeboat.restore.requests";
/// `lifeboat.work.<kind>`: one subject per resource service.
pub const WORK_PREFIX: &str = "lifeboat.work";
/// `lifeboat.events.status.<request_id>`: every StatusEvent.
pub const STATUS_PREFIX: &str = "lifeboat.events.status";
/// `lifeboat.events.summary.<request_id>`: RequestSummary after every change.
pub const SUMMARY_PREFIX: &str = "lifeboat.events.summary";
/// `lifeboat.deadletter.<queue>`: messages that could not be processed, with the reason.
pub const DEADLETTER_PREFIX: &str = "lifeboat.deadletter";
/// Request/reply: StatusQuery -> StatusReply.
pub const STATUS_QUERY: &str = "lifeboat.status.query";
/// Request/reply with the aggregator: ListQuery -> OperatorReply (a page of requests).
pub const LIST_QUERY: &str = "lifeboat.status.list";
/// Request/reply: RetryQuery -> OperatorReply (`lifeboat restore retry`).
pub const RETRY_QUERY: &str = "lifeboat.status.retry";
/// Request/reply: CancelQuery -> OperatorReply (`lifeboat restore cancel`).
pub const CANCEL_QUERY: &str = "lifeboat.status.cancel";

pub const REQUESTS_STREAM: &str = "LIFEBOAT_REQUESTS";
pub const WORK_STREAM: &str = "LIFEBOAT_WORK";
pub const EVENTS_STREAM: &str = "LIFEBOAT_EVENTS";
/// The latest RequestSummary of every request.
pub const SUMMARIES_STREAM: &str = "LIFEBOAT_SUMMARIES";
pub const DEADLETTER_STREAM: &str = "LIFEBOAT_DEADLETTER";
/// JetStream KV bucket with the aggregator's per-request state.
pub const STATE_BUCKET: &str = "lifeboat_restores";
/// JetStream KV bucket of cancelled requests (key: request id), read by the restore shell.
pub const CANCELLATIONS_BUCKET: &str = "lifeboat_cancellations";
/// Cancellation marks are kept as long as request state.
pub const CANCELLATIONS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The sort key of a request's cancellation item in the DynamoDB state table (SQS transport).
pub const CANCELLED_SORT_KEY: &str = "cancelled";

/// Set by clients on published requests so that even an undecodable request can be answered.
pub const HEADER_REQUEST_ID: &str = "Lifeboat-Request-Id";
/// Set by discovery on work messages, so that even an undecodable task can be reported.
pub const HEADER_TASK_ID: &str = "Lifeboat-Task-Id";
/// On dead-lettered messages: why, and from which subject.
pub const HEADER_DEADLETTER_REASON: &str = "Lifeboat-Deadletter-Reason";
pub const HEADER_DEADLETTER_SUBJECT: &str = "Lifeboat-Deadletter-Subject";

/// JetStream dedupe window for `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Status events and summaries are kept this long.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// AWS allows 20 concurrent cross-region snapshot copies per destination region.
pub const MAX_SNAPSHOT_COPIES_PER_REGION: usize = 20;

/// Tags Lifeboat puts on everything it creates; the task-id tag is the idempotency key.
pub const TAG_TASK_ID: &str = "lifeboat:task-id";
pub const TAG_REQUEST_ID: &str = "lifeboat:request-id";
pub const TAG_SOURCE_BACKUP: &str = "lifeboat:source-backup-id";
pub const TAG_SOURCE_RESOURCE: &str = "lifeboat:source-resource-id";
/// On a snapshot or AMI copy (Lifeboat's restore-time copies, and its backups): the volume or
/// instance it protects, so that discovery groups a copy with its source (AWS gives copied
/// snapshots the VolumeId `vol-ffffffff`, and AMI copies no SourceInstanceId).
pub const TAG_SOURCE_VOLUME: &str = "lifeboat:source-volume";
pub const TAG_SOURCE_INSTANCE: &str = "lifeboat:source-instance";
/// On every copy Lifeboat makes while restoring (value: the task id): never selected as a
/// backup of its own.
pub const TAG_RESTORE_COPY: &str = "lifeboat:restore-copy";
/// AWS Backup's tag on its recovery points: the ARN of the protected resource.
pub const TAG_AWS_BACKUP_SOURCE: &str = "aws:backup:source-resource";

/// The dedupe id of a task's work message: the task id for its first run, and with the
/// generation for a retry (the first run's id would still be deduplicated for minutes).
pub fn work_dedupe_id(task_id: &str, generation: u32) -> String {
    if generation == 0 {
        task_id.to_string()
    } else {
        format!("{task_id}.g{generation}")
    }
}

pub fn work_subject(kind: &str) -> String {
    format!("{WORK_PREFIX}.{kind}")
}

pub fn status_subject(request_id: &str) -> String {
    format!("{STATUS_PREFIX}.{request_id}")
}

pub fn summary_subject(request_id: &str) -> String {
    format!("{SUMMARY_PREFIX}.{request_id}")
}

/// The family a subject belongs to, for span names: a per-request subject with `{request_id}`
/// in place of the id (`lifeboat.events.status.{request_id}`), any other as it is.
pub fn template(subject: &str) -> Cow<'_, str> {
    for prefix in [STATUS_PREFIX, SUMMARY_PREFIX] {
        if subject.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('.')).is_some_and(|id| !id.is_empty()) {
            return Cow::Owned(format!("{prefix}.{{request_id}}"));
        }
    }
    Cow::Borrowed(subject)
}
