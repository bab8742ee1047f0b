//! The `lifeboat` command as a library: request files, the client side of the bus (submit,
//! status, watch), rendering, and running the services.

pub mod api_client;
pub mod backup;
pub mod catalog;
pub mod client;
pub mod clumio;
pub mod config_cmd;
pub mod drill;
pub mod render;
pub mod request_file;
pub mod s3_cmd;
pub mod serve;
