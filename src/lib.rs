//! pinserve serves one pinned ONNX model version over HTTP.
//!
//! A request flows `http -> protocol -> batch -> model`:
//!
//! - [`http`] holds the route table and thin handlers. [`http::error`] is the one place errors
//!   become statuses (HTTP and gRPC); [`http::state`] holds the serving phase `/health` reports.
//!   `grpc` is the other transport: KServe V2's gRPC service and the gRPC health service, with
//!   handlers as thin, on the same connection handling, batcher and metrics.
//! - [`protocol`] decodes and encodes the wire formats (Open Inference Protocol v2, the
//!   `/predict` form and MLflow's `/invocations`) and checks each request against the model's
//!   signature.
//! - [`batch`] is the async handle that queues requests for the model's worker thread.
//! - [`model`] owns ONNX Runtime: loading the shared library, sessions, tensors, signatures.
//!
//! Around them, [`registry`] resolves a model reference to files on disk, [`app`] wires
//! everything and runs the lifecycle (bind, load, warm up, ready, drain, stop), [`config`]
//! parses the command line, and [`metrics`] declares every exported metric.
//!
//! The lifecycle commands call into the same code: [`register`] puts a model into the MLflow
//! Model Registry through [`registry`]'s MLflow client, [`eval`] scores held-out data through the
//! serving path and judges it, [`profile`] summarises training data for drift monitoring, and
//! [`promote`] is the GitOps side: it pins a model version and digest in a k8s/services overlay
//! and proposes it.

pub mod app;
pub mod batch;
pub mod config;
pub(crate) mod drift;
pub mod eval;
mod grpc;
pub mod http;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod profile;
pub mod promote;
pub mod protocol;
pub mod register;
pub mod registry;
pub mod shutdown;
pub mod signing;
pub mod telemetry;
