//! The pure core of `pinserve eval`: held-out data in, metrics with confidence intervals out.
//! Nothing here runs the model; the command feeds each batch through the batcher itself:
//!
//! ```text
//! let plan = task::infer(&signature, &overrides)?;             // which outputs, which task
//! let dataset = data::Dataset::open(path, &signature, &mapping)?;   // checks columns, hashes
//! let (mut truth, mut predictions) = (Truth::new(plan.task), Predictions::new(&plan));
//! for batch in dataset.batches(rows)? {
//!     let batch = batch?;                                       // inputs in signature order
//!     let outputs = batcher.infer(batch.inputs, plan.outputs.clone()).await?;
//!     predictions.push(&outputs)?;
//!     truth.push(batch.target)?;
//! }
//! let evaluation = Evaluation::new(&plan, &predictions, &truth)?;
//! let with_ci = bootstrap::intervals(&evaluation, &BootstrapConfig::default())?;
//! let versus = bootstrap::paired_difference(&evaluation, &baseline_evaluation, &config)?;
//! ```
//!
//! - [`data`] streams CSV or Parquet in record batches and maps columns to model inputs as a
//!   columnar `/predict` request does.
//! - [`task`] tells classification from regression by the output signature.
//! - [`metrics`] collects predictions and computes scikit-learn's metrics.
//! - [`bootstrap`] adds percentile intervals, and the paired interval of a difference.

pub mod bootstrap;
pub mod command;
pub mod data;
pub mod gate;
pub(crate) mod label;
pub(crate) mod metrics;
pub(crate) mod report;
pub(crate) mod scoring;
pub mod task;
mod writeback;

pub use self::{
    label::Label,
    metrics::{Evaluation, Predictions, Truth},
    task::{Task, TaskPlan},
};
