//! The MLflow Model Registry over its REST API, authenticated as MLflow's own clients are:
//! `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (HTTP Basic, preferred when both are
//! set), else `MLFLOW_TRACKING_TOKEN` (Bearer); `MLFLOW_TRACKING_INSECURE_TLS` and
//! `MLFLOW_TRACKING_SERVER_CERT_PATH` for TLS.
//!
//! Resolution: a version, alias or stage becomes a model version; its download URI
//! (`mlflow-artifacts:/...` on a server that proxies artifacts, or an object-store URL) is listed
//! recursively so the whole model directory is fetched (ONNX external-data files included), and
//! the `MLmodel` file names the model file and carries the signature. An MLflow 3 logged model
//! (`models:/m-ID`) is looked up by id (`logged-models/{id}`) and its `artifact_uri` is listed
//! the same way.
//!
//! By concern: [`client`] (HTTP, auth, TLS, retried JSON reads), [`lookup`] (versions, aliases,
//! stages, logged models), [`artifacts`] (the artifact proxy), [`mlmodel`] and [`signature`]
//! (the `MLmodel` file, typed), [`example`] (the input example), [`write`] (what `register`
//! and `eval` change in the registry).

mod artifacts;
mod client;
pub(crate) mod example;
mod lookup;
mod mlmodel;
mod signature;
pub(crate) mod write;

pub(crate) use client::{METADATA_TIMEOUT, MlflowClient};
pub(crate) use lookup::{ModelVersion, Tag};
pub(crate) use mlmodel::MlModel;
pub(crate) use signature::check_signature;
/// Public (through `registry`) because `app::LoadError` and `RegistryError` carry them.
pub use {
    client::ClientError, example::ExampleError, mlmodel::MlModelError, signature::SignatureError,
    write::WriteError,
};
