//! Conversions between chrono times, protobuf timestamps and AWS `DateTime`s.

use chrono::{DateTime, TimeZone, Utc};
use lifeboat_proto::Timestamp;

pub fn now() -> Timestamp {
    to_timestamp(Utc::now())
}

pub fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(ts.seconds, ts.nanos.max(0) as u32).single()
}

pub fn from_aws(at: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(at.secs(), at.subsec_nanos()).single()
}

/// RFC 3339 with seconds, for tables and messages.
pub fn display(ts: Option<&Timestamp>) -> String {
    ts.and_then(from_timestamp).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
