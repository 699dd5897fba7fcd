//! The in-toto statement `model_signing` signs (predicate `https://model_signing/signature/v1.0`,
//! serialization method `files`): one resource per file of the model directory, named by its
//! `/`-separated path and hashed with SHA-256, and a subject whose digest is the SHA-256 of
//! those digests in order. The directory must hold exactly those files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::SigningError;
use crate::registry::Digest;

const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    subject: Vec<Subject>,
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Debug, Deserialize)]
struct Subject {
    digest: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Predicate {
    serialization: Serialization,
    resources: Vec<Resource>,
}

#[derive(Debug, Deserialize)]
struct Serialization {
    method: String,
    #[serde(default)]
    hash_type: Option<String>,
    #[serde(default)]
    ignore_paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Resource {
    name: String,
    algorithm: String,
    digest: String,
}

/// What the signer vouched for.
#[derive(Debug)]
pub(crate) struct Statement {
    /// The SHA-256 over every file's digest, which names the signed file set.
    pub model_digest: String,
    files: BTreeMap<String, Digest>,
    ignored: Vec<String>,
}

impl Statement {
    pub(crate) fn parse(payload: &[u8]) -> Result<Statement, String> {
        let raw: Raw =
            serde_json::from_slice(payload).map_err(|err| format!("the statement: {err}"))?;
        if raw.predicate_type != PREDICATE_TYPE {
            return Err(format!(
                "predicate type '{}' (expected {PREDICATE_TYPE})",
                raw.predicate_type
            ));
        }
        let serialization = &raw.predicate.serialization;
        let hash = serialization.hash_type.as_deref().unwrap_or("sha256");
        if serialization.method != "files" || hash != "sha256" {
            return Err(format!(
                "serialization '{}' with '{hash}' (pinserve verifies the default, 'files' with 'sha256')",
                serialization.method
            ));
        }
        let [subject] = raw.subject.as_slice() else {
            return Err(format!("{} subjects, expected one", raw.subject.len()));
        };
        let mut files = BTreeMap::new();
        let mut all = Sha256::new();
        for resource in &raw.predicate.resources {
            let sha256 = (resource.algorithm == "sha256")
                .then(|| hex::decode(&resource.digest).ok())
                .flatten();
            let digest: Digest = sha256
                .and_then(|bytes| {
                    all.update(&bytes);
                    resource.digest.parse().ok()
                })
                .ok_or_else(|| format!("resource '{}' has no SHA-256 digest", resource.name))?;
            files.insert(resource.name.clone(), digest);
        }
        let model_digest = hex::encode(all.finalize());
        if subject.digest.get("sha256") != Some(&model_digest) {
            return Err("the subject's digest does not match its resources".to_owned());
        }
        Ok(Statement {
            model_digest,
            files,
            ignored: serialization.ignore_paths.clone(),
        })
    }

    /// Compares `dir` with the statement: every signed file present with its digest, and no
    /// other file but those `skip` (pinserve's own) or the signer's ignore list names.
    pub(crate) fn check_dir(
        &self,
        dir: &Path,
        skip: impl Fn(&str) -> bool,
    ) -> Result<usize, SigningError> {
        let found = list_files(dir)?;
        let ignored = |name: &str| {
            skip(name)
                || self
                    .ignored
                    .iter()
                    .any(|path| name == path || name.starts_with(&format!("{path}/")))
        };
        for (name, path) in found.iter().filter(|(name, _)| !ignored(name)) {
            let Some(expected) = self.files.get(name) else {
                return Err(SigningError::Unsigned { file: path.clone() });
            };
            let found = Digest::of_file(path).map_err(|source| SigningError::Read {
                path: path.clone(),
                source,
            })?;
            if found != *expected {
                return Err(SigningError::Changed {
                    file: path.clone(),
                    expected: *expected,
                    found,
                });
            }
        }
        match self.files.keys().find(|name| !found.contains_key(*name)) {
            Some(name) => Err(SigningError::MissingFile {
                file: dir.join(name),
            }),
            None => Ok(self.files.len()),
        }
    }
}

/// Every file under `dir`, by its `/`-separated relative path. Symbolic links are followed,
/// as ONNX Runtime follows them when it loads.
fn list_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>, SigningError> {
    let mut files = BTreeMap::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = pending.pop() {
        let read = |source| SigningError::Read {
            path: path.clone(),
            source,
        };
        for entry in std::fs::read_dir(&path).map_err(read)? {
            let entry = entry.map_err(read)?;
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if std::fs::metadata(entry.path()).map_err(read)?.is_dir() {
                pending.push((entry.path(), format!("{name}/")));
            } else {
                files.insert(name, entry.path());
            }
        }
    }
    Ok(files)
}
