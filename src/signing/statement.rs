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

/// Why a signed statement is not one pinserve can check a directory against.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("the statement: {0}")]
    Json(#[source] serde_json::Error),
    #[error("predicate type '{0}' (expected {PREDICATE_TYPE})")]
    PredicateType(String),
    #[error(
        "serialization '{method}' with '{hash}' (pinserve verifies the default, 'files' with 'sha256')"
    )]
    Serialization { method: String, hash: String },
    #[error("resource '{name}' has no SHA-256 digest (its algorithm is '{algorithm}')")]
    Algorithm { name: String, algorithm: String },
    #[error("resource '{name}' has no SHA-256 digest: {source}")]
    Digest {
        name: String,
        #[source]
        source: hex::FromHexError,
    },
    #[error("{0} subjects, expected one")]
    Subjects(usize),
    #[error("the subject's digest does not match its resources")]
    SubjectDigest,
}

impl Raw {
    /// `model_signing`'s predicate, serialized file by file with SHA-256 (its default; shards
    /// and other hashes are refused rather than half-checked).
    fn check_format(&self) -> Result<(), StatementError> {
        if self.predicate_type != PREDICATE_TYPE {
            return Err(StatementError::PredicateType(self.predicate_type.clone()));
        }
        let serialization = &self.predicate.serialization;
        let hash = serialization.hash_type.as_deref().unwrap_or("sha256");
        if serialization.method != "files" || hash != "sha256" {
            return Err(StatementError::Serialization {
                method: serialization.method.clone(),
                hash: hash.to_owned(),
            });
        }
        Ok(())
    }
}

impl Predicate {
    /// Each resource's digest by name, and the SHA-256 over all of them in order (what the
    /// subject's digest must be).
    fn digests(&self) -> Result<(BTreeMap<String, Digest>, [u8; 32]), StatementError> {
        let mut files = BTreeMap::new();
        let mut all = Sha256::new();
        for resource in &self.resources {
            let bytes = resource.sha256()?;
            all.update(bytes);
            files.insert(resource.name.clone(), Digest::from(bytes));
        }
        Ok((files, all.finalize().into()))
    }
}

impl Resource {
    /// The digest's bytes: exactly 64 hexadecimal digits, as `model_signing` writes them.
    fn sha256(&self) -> Result<[u8; 32], StatementError> {
        if self.algorithm != "sha256" {
            return Err(StatementError::Algorithm {
                name: self.name.clone(),
                algorithm: self.algorithm.clone(),
            });
        }
        let mut bytes = [0; 32];
        hex::decode_to_slice(&self.digest, &mut bytes).map_err(|source| {
            StatementError::Digest {
                name: self.name.clone(),
                source,
            }
        })?;
        Ok(bytes)
    }
}

/// What the signer vouched for.
#[derive(Debug)]
pub(crate) struct Statement {
    /// The SHA-256 over every file's digest, which names the signed file set.
    pub model_sha256: [u8; 32],
    files: BTreeMap<String, Digest>,
    ignored: Vec<String>,
}

impl Statement {
    pub(crate) fn parse(payload: &[u8]) -> Result<Statement, StatementError> {
        let raw: Raw = serde_json::from_slice(payload).map_err(StatementError::Json)?;
        raw.check_format()?;
        let [subject] = raw.subject.as_slice() else {
            return Err(StatementError::Subjects(raw.subject.len()));
        };
        let (files, model_sha256) = raw.predicate.digests()?;
        if subject.digest.get("sha256") != Some(&hex::encode(model_sha256)) {
            return Err(StatementError::SubjectDigest);
        }
        Ok(Statement {
            model_sha256,
            files,
            ignored: raw.predicate.serialization.ignore_paths,
        })
    }

    /// Compares `dir` with the statement: every signed file present with its digest, and no
    /// other file but those `skip` (pinserve's own) or the signer's ignore list names. A file
    /// whose digest is `known` (just computed by the caller) is not hashed again. The signed
    /// digests, by path, once they all match.
    pub(crate) fn check_dir(
        &self,
        dir: &Path,
        skip: impl Fn(&str) -> bool,
        known: &BTreeMap<String, Digest>,
    ) -> Result<BTreeMap<String, Digest>, SigningError> {
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
            let found = match known.get(name) {
                Some(digest) => *digest,
                None => Digest::of_file(path).map_err(|source| SigningError::Read {
                    path: path.clone(),
                    source,
                })?,
            };
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
            None => Ok(self.files.clone()),
        }
    }
}

/// Every file under `dir`, by its `/`-separated relative path. A symbolic link is listed as a
/// file and hashed through (ONNX Runtime follows it when it loads); a link to a directory then
/// fails to hash instead of being walked, so a link loop cannot make the walk endless.
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
            if entry.file_type().map_err(read)?.is_dir() {
                pending.push((entry.path(), format!("{name}/")));
            } else {
                files.insert(name, entry.path());
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement over `files` as `model_signing` writes it (`files`, SHA-256, its default
    /// ignore list), with the subject digest `subject` or the right one.
    fn statement(files: &[(&str, &[u8])], subject: Option<&str>) -> Vec<u8> {
        let mut all = Sha256::new();
        let resources: Vec<serde_json::Value> = files
            .iter()
            .map(|(name, bytes)| {
                let digest = Sha256::digest(bytes);
                all.update(digest);
                serde_json::json!({"name": name, "algorithm": "sha256", "digest": hex::encode(digest)})
            })
            .collect();
        let root = hex::encode(all.finalize());
        serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "model", "digest": {"sha256": subject.unwrap_or(&root)}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false,
                                  "ignore_paths": ["model.sig", ".git"]},
                "resources": resources
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_subject_digest_that_does_not_cover_the_resources_is_refused() {
        let files: &[(&str, &[u8])] = &[("model.onnx", b"graph")];
        assert!(Statement::parse(&statement(files, None)).is_ok());
        let wrong = "0".repeat(64);
        let err = Statement::parse(&statement(files, Some(&wrong))).unwrap_err();
        assert!(err.to_string().contains("subject"), "{err}");
    }

    #[test]
    fn the_signer_s_ignore_list_and_pinserve_s_files_are_not_model_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"graph").unwrap();
        std::fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        std::fs::write(dir.path().join(".git/objects/ab"), b"object").unwrap();
        std::fs::write(dir.path().join("pinserve.json"), b"{}").unwrap();
        let parsed = Statement::parse(&statement(&[("model.onnx", b"graph")], None)).unwrap();
        assert_eq!(
            parsed
                .check_dir(dir.path(), |name| name == "pinserve.json", &BTreeMap::new())
                .unwrap()
                .len(),
            1
        );
        let err = parsed
            .check_dir(dir.path(), |_| false, &BTreeMap::new())
            .unwrap_err();
        assert!(
            matches!(err, SigningError::Unsigned { ref file } if file.ends_with("pinserve.json")),
            "{err}"
        );
    }

    /// A digest the caller already computed is taken as the file's own: the file is not read
    /// again (here the known digest is not the file's, and that is what is compared).
    #[test]
    fn known_digests_are_not_computed_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"graph").unwrap();
        let parsed = Statement::parse(&statement(&[("model.onnx", b"graph")], None)).unwrap();
        let known = BTreeMap::from([("model.onnx".to_owned(), Digest::of_bytes(b"other"))]);
        let err = parsed.check_dir(dir.path(), |_| false, &known).unwrap_err();
        assert!(matches!(err, SigningError::Changed { .. }), "{err}");
        let known = BTreeMap::from([("model.onnx".to_owned(), Digest::of_bytes(b"graph"))]);
        let signed = parsed.check_dir(dir.path(), |_| false, &known).unwrap();
        assert_eq!(signed["model.onnx"], Digest::of_bytes(b"graph"));
    }

    #[test]
    fn a_link_to_a_directory_is_refused_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"graph").unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let parsed = Statement::parse(&statement(&[("model.onnx", b"graph")], None)).unwrap();
        let err = parsed
            .check_dir(dir.path(), |_| false, &BTreeMap::new())
            .unwrap_err();
        assert!(
            matches!(err, SigningError::Unsigned { ref file } if file.ends_with("loop")),
            "{err}"
        );
    }
}
