//! The plan stage: a [`ModelReference`] in, a [`Plan`] out — the files of one model version,
//! where each comes from, and the digest each must have. Nothing is downloaded here except small
//! metadata (listings, the `MLmodel` file, `.sha256` sidecars).
//!
//! By concern: [`listing`] (what files a location holds: local disk, an object store, plain
//! HTTP), [`sidecar`] (a file's `.sha256` sidecar: probed, paired, read), [`model_file`] (which
//! file ONNX Runtime loads), [`repository`] (model repositories and version directories named
//! directly), [`mlflow`] (registered model versions and logged models).

mod listing;
mod mlflow;
mod model_file;
mod repository;
mod sidecar;

use std::{path::PathBuf, time::Duration};

use self::listing::Found;
use super::{
    RegistryError,
    digest::Digest,
    reference::ModelReference,
    relpath::RelativePath,
    retry::{RetryPolicy, with_retries},
    source::{FileSource, TransferError, within},
    store::StoreOptions,
};

/// Where a digest given on the command line is said to come from.
pub(crate) const PINNED_ORIGIN: &str = "--model-sha256";
/// Sidecars and MLmodel files are tiny; anything larger is not what it claims to be.
const SMALL_FILE_LIMIT: usize = 1 << 20;

pub struct Resolver {
    pub(crate) retry: RetryPolicy,
    pub(crate) store: StoreOptions,
    /// `--model-sha256`: the model file's digest as the manifest pins it.
    pub(crate) model_sha256: Option<Digest>,
    /// `--fetch-stall-timeout`: how long a metadata request may wait for its next bytes.
    pub(crate) stall_timeout: Duration,
}

/// A digest a file must have, and who said so (for the error message when it does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) digest: Digest,
    pub(crate) origin: String,
}

/// One file of a model version.
#[derive(Debug, Clone)]
pub(crate) struct PlannedFile {
    pub(crate) path: RelativePath,
    pub(crate) source: FileSource,
    pub(crate) size: Option<u64>,
    pub(crate) expected: Option<Expected>,
}

/// The files of one resolved model version.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) name: String,
    /// The resolved version (an alias or stage resolves to a number).
    pub(crate) version: String,
    /// What was asked for, credentials redacted.
    pub(crate) reference: String,
    /// Where the files come from, credentials redacted.
    pub(crate) source: String,
    pub(crate) model_file: RelativePath,
    pub(crate) files: Vec<PlannedFile>,
    pub(crate) signature: Option<serde_json::Value>,
    /// The directory holding the files when they are on local disk already.
    pub(crate) local_dir: Option<PathBuf>,
}

impl Resolver {
    pub(crate) async fn plan(&self, reference: &ModelReference) -> Result<Plan, RegistryError> {
        let mut plan = match reference {
            ModelReference::Repository {
                root,
                name,
                version,
            } => self.plan_repository(root, name, version).await?,
            ModelReference::Direct {
                location,
                name,
                version,
            } => self.plan_direct(location, name, version).await?,
            ModelReference::Registry {
                tracking,
                name,
                selector,
            } => {
                self.plan_registry(reference, tracking, name, selector)
                    .await?
            }
            ModelReference::LoggedModel { tracking, model_id } => {
                self.plan_logged_model(reference, tracking, model_id)
                    .await?
            }
        };
        plan.reference = reference.cache_key();
        if let Some(digest) = self.model_sha256 {
            plan.expect_model_digest(digest, PINNED_ORIGIN);
        }
        Ok(plan)
    }

    /// Reads a small file (sidecar, MLmodel) whole, as text, up to [`SMALL_FILE_LIMIT`].
    async fn read_small(&self, source: &FileSource) -> Result<String, TransferError> {
        let stall = self.stall_timeout;
        with_retries(&self.retry, "read", || async {
            let opened = within(stall, source.open(0)).await?;
            let bytes = opened.read_limited(SMALL_FILE_LIMIT, stall, source).await?;
            String::from_utf8(bytes).map_err(|err| TransferError::NotText {
                shown: source.to_string(),
                source: Box::new(err),
            })
        })
        .await
    }
}

impl Plan {
    pub(crate) fn total_size(&self) -> u64 {
        self.files.iter().filter_map(|file| file.size).sum()
    }

    fn expect_digest(&mut self, target: &RelativePath, digest: Digest, origin: &str) {
        if let Some(file) = self.files.iter_mut().find(|file| &file.path == target) {
            file.expected = Some(Expected {
                digest,
                origin: origin.to_owned(),
            });
        }
    }

    fn expect_model_digest(&mut self, digest: Digest, origin: &str) {
        let model_file = self.model_file.clone();
        self.expect_digest(&model_file, digest, origin);
    }
}

impl From<Found> for PlannedFile {
    fn from(found: Found) -> PlannedFile {
        PlannedFile {
            path: found.path,
            source: found.source,
            size: found.size,
            expected: None,
        }
    }
}

/// A resolver that plans local files only: no retries, no store settings.
#[cfg(test)]
fn local_resolver() -> Resolver {
    Resolver {
        retry: RetryPolicy::new(0),
        store: StoreOptions::default(),
        model_sha256: None,
        stall_timeout: Duration::from_secs(5),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::reference::Location;

    #[tokio::test]
    async fn the_pinned_digest_wins_over_a_sidecar() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("model.onnx"), b"graph").unwrap();
        std::fs::write(
            root.path().join("model.onnx.sha256"),
            Digest::of_bytes(b"other").to_string(),
        )
        .unwrap();
        let mut resolver = local_resolver();
        resolver.model_sha256 = Some(Digest::of_bytes(b"graph"));
        let reference = ModelReference::Direct {
            location: Location::Local(root.path().join("model.onnx")),
            name: "m".into(),
            version: "1".into(),
        };
        let plan = resolver.plan(&reference).await.unwrap();
        let expected = plan.files[0].expected.as_ref().unwrap();
        assert_eq!(
            (expected.digest, expected.origin.as_str()),
            (Digest::of_bytes(b"graph"), "--model-sha256")
        );
    }
}
