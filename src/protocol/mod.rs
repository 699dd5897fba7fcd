//! Wire formats: the Open Inference Protocol v2 over HTTP ([`v2`]) and gRPC ([`grpc`]), the TF
//! Serving / KServe V1 form of `/predict` ([`predict`]) and MLflow's scoring protocol of
//! `/invocations` ([`mlflow`]). Decoders check every request against the model's signature, so
//! what reaches the batcher is always well-formed.

pub mod binary;
pub(crate) mod classes;
pub mod grpc;
pub(crate) mod json;
pub(crate) mod mlflow;
pub(crate) mod predict;
pub mod v2;

use crate::model::InputError;

/// A request body that cannot become model inputs.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request body: {0}")]
    Malformed(String),
    #[error(transparent)]
    Input(#[from] InputError),
    /// The outputs cannot be answered in the form the request asked for.
    #[error("{0}")]
    UnsupportedForm(String),
}

impl RequestError {
    fn malformed(err: impl std::fmt::Display) -> RequestError {
        RequestError::Malformed(err.to_string())
    }
}
