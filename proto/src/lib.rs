//! The protobuf contract between Lifeboat services, generated from `proto/lifeboat/v1`, with
//! the canonical JSON mapping of every message.

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/lifeboat.v1.rs"));
    // The canonical protobuf JSON mapping (camelCase fields, enum names, RFC 3339 times), used
    // by the HTTP API.
    include!(concat!(env!("OUT_DIR"), "/lifeboat.v1.serde.rs"));
}

/// `google.protobuf.Timestamp`, with its JSON mapping.
pub use pbjson_types::Timestamp;

pub use v1::*;

impl ResourceType {
    /// The work subject suffix (`lifeboat.work.<kind>`) of the service that restores this type.
    pub fn work_kind(self) -> Option<&'static str> {
        match self {
            ResourceType::EbsVolume | ResourceType::EbsVolumeSet => Some("ebs"),
            ResourceType::RdsInstance | ResourceType::RdsCluster => Some("rds"),
            ResourceType::DynamodbTable => Some("dynamodb"),
            ResourceType::Ec2Instance => Some("ec2"),
            ResourceType::S3Bucket => Some("s3"),
            ResourceType::Route53Zone | ResourceType::Elbv2LoadBalancer => Some("config"),
            ResourceType::Unspecified => None,
        }
    }

    /// Short lowercase name used in files, tables and the CLI (`ebs`, `rds-instance`...).
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Unspecified => "unspecified",
            ResourceType::EbsVolume => "ebs",
            ResourceType::RdsInstance => "rds-instance",
            ResourceType::RdsCluster => "rds-cluster",
            ResourceType::DynamodbTable => "dynamodb",
            ResourceType::Ec2Instance => "ec2",
            ResourceType::S3Bucket => "s3",
            ResourceType::Route53Zone => "route53",
            ResourceType::Elbv2LoadBalancer => "elbv2",
            ResourceType::EbsVolumeSet => "ebs-volume-set",
        }
    }

    pub fn from_short_name(name: &str) -> Option<Self> {
        [
            ResourceType::EbsVolume,
            ResourceType::RdsInstance,
            ResourceType::RdsCluster,
            ResourceType::DynamodbTable,
            ResourceType::Ec2Instance,
            ResourceType::S3Bucket,
            ResourceType::Route53Zone,
            ResourceType::Elbv2LoadBalancer,
            ResourceType::EbsVolumeSet,
        ]
        .into_iter()
        .find(|t| t.short_name() == name)
    }
}

impl TaskPhase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Skipped | TaskPhase::Planned | TaskPhase::Cancelled
        )
    }

    /// Phases only move forward; a redelivered or reordered event with a lower rank is ignored.
    /// RUNNING and WAITING share a rank because a re-check may move between them.
    pub fn rank(self) -> u8 {
        match self {
            TaskPhase::Unspecified => 0,
            TaskPhase::Queued => 1,
            TaskPhase::Running | TaskPhase::Waiting => 2,
            TaskPhase::Planned
            | TaskPhase::Succeeded
            | TaskPhase::Failed
            | TaskPhase::Skipped
            | TaskPhase::Cancelled => 3,
        }
    }

    pub fn short_name(self) -> &'static str {
        match self {
            TaskPhase::Unspecified => "unspecified",
            TaskPhase::Planned => "planned",
            TaskPhase::Queued => "queued",
            TaskPhase::Running => "running",
            TaskPhase::Waiting => "waiting",
            TaskPhase::Succeeded => "succeeded",
            TaskPhase::Failed => "failed",
            TaskPhase::Skipped => "skipped",
            TaskPhase::Cancelled => "cancelled",
        }
    }
}

impl Verdict {
    pub fn short_name(self) -> &'static str {
        match self {
            Verdict::Unspecified => "unspecified",
            Verdict::InProgress => "IN_PROGRESS",
            Verdict::Completed => "COMPLETED",
            Verdict::CompletedWithWarnings => "COMPLETED_WITH_WARNINGS",
            Verdict::PartiallyFailed => "PARTIALLY_FAILED",
            Verdict::Failed => "FAILED",
            Verdict::Rejected => "REJECTED",
            Verdict::Cancelled => "CANCELLED",
        }
    }
}

impl PhaseCounts {
    pub fn add(&mut self, phase: TaskPhase) {
        match phase {
            TaskPhase::Unspecified => {}
            TaskPhase::Planned => self.planned += 1,
            TaskPhase::Queued => self.queued += 1,
            TaskPhase::Running => self.running += 1,
            TaskPhase::Waiting => self.waiting += 1,
            TaskPhase::Succeeded => self.succeeded += 1,
            TaskPhase::Failed => self.failed += 1,
            TaskPhase::Skipped => self.skipped += 1,
            TaskPhase::Cancelled => self.cancelled += 1,
        }
    }

    pub fn terminal(&self) -> u32 {
        self.planned + self.succeeded + self.failed + self.skipped + self.cancelled
    }
}
