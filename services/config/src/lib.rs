//! The `config` service: Route 53 and ELBv2 configuration exported to a versioned JSON document
//! in S3 (in another region), diffed against the live configuration or another export, and
//! restored into a target account and region.
//!
//! - [`route53`] and [`elbv2`] read a whole configuration (every list paginated to the end) into
//!   plain serde types, and re-create one into a target ([`changes`] holds what both share).
//! - [`document`] is the self-describing envelope, [`store`] its S3 layout with a `latest`
//!   pointer and checksum, [`diff`] the field-by-field comparison.
//! - [`export`] reads one service's live configuration into a document, [`apply`] restores
//!   documents in order (load balancers before the alias records that point at them).
//! - [`service`] runs exports and restores as tasks of `lifeboat.work.config`.

pub mod apply;
pub mod changes;
pub mod clients;
pub mod diff;
pub mod document;
pub mod elbv2;
pub mod export;
pub mod route53;
pub mod service;
pub mod store;
