//! The status aggregator: records every StatusEvent in a store shared by its replicas
//! (JetStream KV or DynamoDB), announces a RequestSummary on each change, and serves status
//! queries (NATS) and the HTTP API with a live event stream, and runs the operator's list,
//! retry and cancel.

pub mod api;
pub mod dynamo;
pub mod operator;
pub mod service;
pub mod stall;
pub mod state;
pub mod store;

pub use dynamo::DynamoRecords;
pub use service::{Aggregator, AggregatorConfig};
pub use state::RequestState;
pub use store::{KvRecords, Records, Store};
