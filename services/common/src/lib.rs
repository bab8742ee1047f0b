//! Shared by every Lifeboat service: the bus (trait, JetStream implementation, consumer loop),
//! AWS clients per account and region, error classes, request validation, ids, telemetry (logs,
//! and traces that follow a request across the bus), and the health and metrics endpoints.

pub mod app_consistent;
pub mod aws;
pub mod aws_trace;
pub mod backup;
pub mod batch;
pub mod bus;
pub mod claim;
pub mod consumer;
pub mod events;
pub mod http;
pub mod ids;
pub mod jetstream;
pub mod metrics;
pub mod quota;
pub mod restore;
pub mod settings;
pub mod shared;
pub mod subjects;
pub mod telemetry;
pub mod time;
pub mod trace_context;
pub mod validate;

pub use bus::{Bus, BusError, Delivery, OutgoingMessage, Queue};
pub use consumer::{run_consumer, ConsumerOptions, Handler, Outcome};
