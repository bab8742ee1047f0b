//! S3 end-to-end tests (s3_plans): being written.
