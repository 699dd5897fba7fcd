//! Where model artifacts come from. A reference ([`reference`]) is resolved into a [`Plan`]
//! ([`resolve`]): the files of one model version, their sources (local disk, an object store,
//! the MLflow Model Registry) and the digests they must have. [`fetch`] then downloads a plan
//! into a directory, verified, atomically and resumably, and records it in a manifest
//! ([`manifest`]) that later starts trust instead of the network. `serve` fetches into a shared
//! [`cache`], locked per version and trimmed to its limits, least recently used first.

pub mod cache;
pub mod digest;
pub mod fetch;
pub mod local;
pub mod manifest;
pub mod mlflow;
pub mod obtain;
pub mod progress;
pub mod redact;
pub mod reference;
pub mod relpath;
pub mod resolve;
pub mod retry;
pub(crate) mod signed;
pub mod sink;
pub mod source;
pub mod store;

use std::path::PathBuf;

pub(crate) use self::local::check_component;
pub use self::{
    digest::Digest,
    fetch::{FetchError, FetchOptions},
    manifest::Manifest,
    reference::{Location, ModelReference, Selector},
    relpath::RelativePath,
    resolve::Resolver,
    source::FileSource,
};

/// A model version resolved to a file on local disk, ready to load.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelArtifact {
    pub name: String,
    pub version: String,
    /// The version directory: the model file and every file that came with it are under it.
    pub dir: PathBuf,
    pub model_file: PathBuf,
    /// The model file's digest, verified against the expected one when there was one.
    pub sha256: Option<Digest>,
    /// The MLflow model signature, when the registry had one.
    pub signature: Option<serde_json::Value>,
    /// Who signed the version's files, once the signature has been verified.
    pub signed: Option<crate::signing::Signed>,
}

/// A digest a file must have, and who said so (for the error message when it does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub digest: Digest,
    pub origin: String,
}

/// One file of a model version.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub path: RelativePath,
    pub source: FileSource,
    pub size: Option<u64>,
    pub expected: Option<Expected>,
}

/// The files of one resolved model version.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// The resolved version (an alias or stage resolves to a number).
    pub version: String,
    /// What was asked for, credentials redacted.
    pub reference: String,
    /// Where the files come from, credentials redacted.
    pub source: String,
    pub model_file: RelativePath,
    pub files: Vec<PlannedFile>,
    pub signature: Option<serde_json::Value>,
    /// The directory holding the files when they are on local disk already.
    pub local_dir: Option<PathBuf>,
}

impl Plan {
    pub fn total_size(&self) -> u64 {
        self.files.iter().filter_map(|file| file.size).sum()
    }
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
    #[error("cannot resolve {reference} in the MLflow registry at {registry}: {message}")]
    Registry {
        reference: String,
        registry: String,
        message: String,
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
    #[error("{0}")]
    Config(String),
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
