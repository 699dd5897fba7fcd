//! Where model artifacts come from: a reference (repository, name, version) resolved to files
//! on local disk that the model layer can load. Model repositories on disk are resolved by
//! [`local`]; registries and object stores fetch into the same shape.

pub mod local;

use std::path::PathBuf;

pub use self::local::locate;

/// A model version resolved to a file on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelArtifact {
    pub name: String,
    pub version: String,
    pub model_file: PathBuf,
}

/// Why a model reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid model {what} '{value}': {reason}")]
    InvalidReference {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("model '{name}' version '{version}' not found: {} does not exist", path.display())]
    NotFound {
        name: String,
        version: String,
        path: PathBuf,
    },
}
