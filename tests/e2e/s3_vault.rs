//! S3 end-to-end tests (s3_vault): being written.
