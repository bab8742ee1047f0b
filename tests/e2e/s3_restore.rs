//! S3 end-to-end tests (s3_restore): being written.
