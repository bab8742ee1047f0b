//! The status aggregator: folds every StatusEvent into a per-request state kept durably in a
//! JetStream KV bucket, publishes a RequestSummary on each change and answers status queries.

pub mod service;
pub mod state;
pub mod store;

pub use service::{Aggregator, AggregatorConfig};
pub use state::RequestState;
pub use store::{KvStore, StateStore};
