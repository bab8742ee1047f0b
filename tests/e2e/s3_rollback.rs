//! S3 end-to-end tests (s3_rollback): being written.
