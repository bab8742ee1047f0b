//! Keys of `Backup.settings`: the source settings discovery captures at planning time and the
//! restore services apply, one module per resource type, so both sides name them alike.

/// Who manages the KMS key of an encrypted backup: `AWS` (the default `aws/ebs`, `aws/rds`
/// keys, which cannot be shared with another account) or `CUSTOMER`; absent when not asked or
/// not known. Discovery asks KMS only for backups going to another account without a key.
pub const KMS_KEY_MANAGER: &str = "kms_key_manager";

/// EBS volumes (from the source volume, else the snapshot).
pub mod ebs {
    pub const VOLUME_TYPE: &str = "volume_type";
    pub const IOPS: &str = "iops";
    pub const THROUGHPUT: &str = "throughput";
    pub const ENCRYPTED: &str = "encrypted";
    pub const KMS_KEY_ID: &str = "kms_key_id";
    pub const AVAILABILITY_ZONE: &str = "availability_zone";
    pub const MULTI_ATTACH: &str = "multi_attach_enabled";
    /// The region of the source volume (for a copy in a DR region: the original's region).
    pub const SOURCE_REGION: &str = "source_region";
    /// `volume` when the tags below are the source volume's, `snapshot` when it is gone.
    pub const TAGS_FROM: &str = "tags_from";
    /// Prefix of the source volume's tags: `tag:<key>` = value.
    pub const TAG_PREFIX: &str = "tag:";
}

/// EC2 instances (from the source instance the AMI was made of).
pub mod ec2 {
    pub const INSTANCE_TYPE: &str = "instance_type";
    pub const SUBNET_ID: &str = "subnet_id";
    /// Comma-separated.
    pub const SECURITY_GROUP_IDS: &str = "security_group_ids";
    pub const AVAILABILITY_ZONE: &str = "availability_zone";
    pub const KEY_NAME: &str = "key_name";
    pub const IAM_INSTANCE_PROFILE_ARN: &str = "iam_instance_profile_arn";
    /// Base64, as DescribeInstanceAttribute returns it.
    pub const USER_DATA: &str = "user_data";
    pub const DISABLE_API_TERMINATION: &str = "disable_api_termination";
    pub const HTTP_TOKENS: &str = "metadata_http_tokens";
    pub const HTTP_ENDPOINT: &str = "metadata_http_endpoint";
    pub const HTTP_PUT_RESPONSE_HOP_LIMIT: &str = "metadata_http_put_response_hop_limit";
    pub const INSTANCE_METADATA_TAGS: &str = "metadata_instance_metadata_tags";
    pub const SOURCE_REGION: &str = "source_region";
    /// `instance` when the `tag:` entries are the source instance's.
    pub const TAGS_FROM: &str = "tags_from";
    pub const TAG_PREFIX: &str = "tag:";
}

/// DynamoDB tables (from the table, or the backup of a deleted one).
pub mod dynamodb {
    pub const TTL_ATTRIBUTE: &str = "ttl_attribute";
    pub const POINT_IN_TIME_RECOVERY: &str = "point_in_time_recovery";
    pub const STREAM_VIEW_TYPE: &str = "stream_view_type";
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    pub const BILLING_MODE: &str = "billing_mode";
    pub const DELETION_PROTECTION: &str = "deletion_protection";
    /// The KMS key the source was encrypted with (SSE type KMS).
    pub const SSE_KMS_KEY_ARN: &str = "sse_kms_key_arn";
    /// `true` when the source table no longer existed at planning time: the settings come from
    /// the backup, and the table's tags are known only if the backup carries them.
    pub const TABLE_DELETED: &str = "table_deleted";
}

/// RDS instances and Aurora clusters (from the snapshot and the source database).
pub mod rds {
    pub const ENGINE: &str = "engine";
    pub const ENGINE_VERSION: &str = "engine_version";
    /// `manual` or `automated`: automated snapshots cannot be shared and are copied first.
    pub const SNAPSHOT_TYPE: &str = "snapshot_type";
    /// The DB parameter group (for a cluster: its writer's).
    pub const DB_PARAMETER_GROUP: &str = "db_parameter_group";
    pub const DB_CLUSTER_PARAMETER_GROUP: &str = "db_cluster_parameter_group";
    pub const OPTION_GROUP: &str = "option_group";
    pub const MULTI_AZ: &str = "multi_az";
    pub const STORAGE_TYPE: &str = "storage_type";
    pub const IOPS: &str = "iops";
    pub const STORAGE_THROUGHPUT: &str = "storage_throughput";
    pub const PORT: &str = "port";
    pub const DELETION_PROTECTION: &str = "deletion_protection";
    pub const IAM_AUTH: &str = "iam_database_authentication";
    pub const COPY_TAGS_TO_SNAPSHOT: &str = "copy_tags_to_snapshot";
    pub const LOG_EXPORTS: &str = "cloudwatch_logs_exports";
    pub const INSTANCE_CLASS: &str = "instance_class";
    /// Aurora: the class of the source cluster's writer, so the restored cluster gets one.
    pub const WRITER_INSTANCE_CLASS: &str = "writer_instance_class";
    pub const DB_SUBNET_GROUP: &str = "db_subnet_group";
    pub const SECURITY_GROUP_IDS: &str = "security_group_ids";
    pub const AVAILABILITY_ZONE: &str = "availability_zone";
    /// Point in time of a deleted instance: its retained automated backups' ARN.
    pub const AUTOMATED_BACKUPS_ARN: &str = "automated_backups_arn";
}
