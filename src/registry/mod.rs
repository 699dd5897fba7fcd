//! Where model artifacts come from, as a pipeline of typed stages:
//!
//! ```text
//! &str ──reference──▶ ModelReference ──plan──▶ Plan ──fetch──▶ files, verified ──manifest──▶ Manifest
//! ```
//!
//! - [`reference`] parses what users write into a [`ModelReference`].
//! - [`plan`] resolves it (listing a local directory, an object store, an HTTP server, or the
//!   MLflow registry) into a [`Plan`]: the files of one model version, their sources and the
//!   digests they must have.
//! - [`fetch`] downloads a plan into a directory, verified, atomically and resumably.
//! - [`manifest`] records what was fetched, so later starts trust it instead of the network.
//!
//! [`obtain`] runs the stages for a command; `serve` fetches into a shared [`cache`], locked per
//! version and trimmed to its limits, least recently used first.

pub(crate) mod cache;
pub(crate) mod digest;
pub(crate) mod fetch;
pub(crate) mod local;
pub(crate) mod manifest;
pub(crate) mod mlflow;
pub(crate) mod obtain;
pub(crate) mod plan;
pub(crate) mod progress;
pub mod redact;
pub(crate) mod reference;
pub(crate) mod relpath;
pub(crate) mod retry;
pub(crate) mod signed;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod store;

use std::path::PathBuf;

/// Public because the library's commands (`app`, `config`, `eval`, ...) take and return them.
pub use self::{
    cache::{Cache, ClaimError},
    digest::{Digest, DigestError},
    fetch::{FetchError, FetchOptions},
    manifest::{Manifest, ManifestError, ManifestFile},
    mlflow::{ClientError, ExampleError, MlModelError, SignatureError, WriteError},
    plan::Resolver,
    reference::{Location, ModelReference, Selector},
    relpath::{RelativePath, UnsafePath},
    source::{RequestFailure, TransferError},
};
pub(crate) use self::{
    local::check_component,
    plan::{Expected, Plan, PlannedFile},
};

/// A model version resolved to a file on local disk, ready to load.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelArtifact {
    pub(crate) name: String,
    pub(crate) version: String,
    /// The version directory: the model file and every file that came with it are under it.
    pub(crate) dir: PathBuf,
    pub(crate) model_file: PathBuf,
    /// The model file's digest, verified against the expected one when there was one.
    pub(crate) sha256: Option<Digest>,
    /// The MLflow model signature, when the registry had one.
    pub(crate) signature: Option<serde_json::Value>,
    /// Who signed the version's files, once the signature has been verified.
    pub(crate) signed: Option<crate::signing::Signed>,
}

/// Why a model reference could not be resolved or fetched.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid model reference '{reference}': {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid model {what} '{value}': {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: no such file or directory (check the --model-uri path)")]
    NoSuchPath { path: String },
    #[error("model repository {root} does not exist (check --model-repository)")]
    NoRepository { root: String },
    #[error("model '{name}' is not in the model repository {root}; it holds: {available}")]
    UnknownModel {
        name: String,
        root: String,
        available: String,
    },
    #[error(
        "model '{name}' version '{version}' not found: nothing at {location}; its versions there: {available}"
    )]
    UnknownVersion {
        name: String,
        version: String,
        location: String,
        available: String,
    },
    #[error("model '{name}' version '{version}' not found: nothing at {location}")]
    NotFound {
        name: String,
        version: String,
        location: String,
    },
    #[error("cannot resolve {reference} in the MLflow registry at {registry}: {source}")]
    Registry {
        reference: String,
        registry: String,
        source: source::TransferError,
    },
    #[error("{location}: {source}")]
    Transfer {
        location: String,
        source: source::TransferError,
    },
    /// A `.sha256` sidecar that does not hold a digest.
    #[error("{location}: {source}")]
    Sidecar {
        location: String,
        source: digest::DigestError,
    },
    #[error(
        "{location}: no ONNX model (no model.onnx and not exactly one .onnx file, at the top or in a single version folder)"
    )]
    NoModelFile { location: String },
    /// Flags that do not name a model, or contradict each other.
    #[error("{0}")]
    Config(String),
    #[error("MLflow client: {0}")]
    MlflowClient(#[from] mlflow::ClientError),
    #[error("{location}: unsupported store {scheme}")]
    UnsupportedStore { location: String, scheme: String },
    #[error("{}: no pinserve.json; run `pinserve fetch --dest {}` first", dir.display(), dir.display())]
    NotFetched { dir: PathBuf },
    /// A blocking task (hashing the model files) panicked or was cancelled.
    #[error("{what} failed: {source}")]
    Task {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    /// An object store client could not be set up for a URL (the URL or the environment is
    /// wrong): object_store's parse or builder error.
    #[error("{location}: {source}")]
    Store {
        location: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Cache(#[from] cache::ClaimError),
    /// `--signature-public-key` or `--signature-certificate-chain` refused the version.
    #[error(transparent)]
    Signature(#[from] crate::signing::SigningError),
}

impl RegistryError {
    /// Wraps the failure of a blocking task doing `what`.
    pub(crate) fn task(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> RegistryError {
        move |source| RegistryError::Task { what, source }
    }
}
