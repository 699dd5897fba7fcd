//! The manifest stage: a fetched [`Plan`](super::Plan)'s files in, a [`Manifest`] out, written
//! into and read back from the directory (errors: [`ManifestError`]).
//!
//! `pinserve.json`, written last into a fetched model directory: what was fetched, from where,
//! and every file's size and digest. Its presence means the directory is complete; `serve
//! --model-dir` trusts nothing else, and a restarted fetch reuses the directory only if every
//! file still matches it.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{digest::Digest, relpath::RelativePath};

pub(crate) const MANIFEST_FILE: &str = "pinserve.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub(crate) format: u32,
    /// Public, as `files` is, for the summary `pinserve fetch` prints.
    pub model: String,
    pub version: String,
    /// What was asked for (e.g. `models:/fraud@champion`), credentials redacted.
    pub(crate) reference: String,
    /// Where the bytes came from, credentials redacted.
    pub(crate) source: String,
    /// The file ONNX Runtime loads, relative to the directory.
    pub(crate) model_file: RelativePath,
    /// RFC 3339, UTC.
    pub(crate) resolved_at: String,
    pub files: Vec<ManifestFile>,
    /// The MLflow model signature, when the registry had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signature: Option<serde_json::Value>,
    /// Who signed the files, as verified by this process against its signing policy; never
    /// written, since only a verification made now can vouch for the files now.
    #[serde(skip)]
    pub(crate) signed: Option<crate::signing::Signed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub(crate) path: RelativePath,
    pub size: u64,
    pub(crate) sha256: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a pinserve manifest: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: not a pinserve manifest: format {found} is not {FORMAT}", path.display())]
    Format { path: PathBuf, found: u32 },
    #[error(
        "{}: not a pinserve manifest: the model file '{model_file}' is not among its files",
        path.display()
    )]
    NoModelFile {
        path: PathBuf,
        model_file: RelativePath,
    },
    #[error("{path}: expected {expected} bytes, found {found}")]
    Size {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error("{path}: sha256 {found} does not match the manifest's {expected}")]
    Digest {
        path: String,
        expected: Digest,
        found: Digest,
    },
}

impl Manifest {
    #[allow(
        clippy::disallowed_methods,
        reason = "the manifest records when it was resolved"
    )]
    pub(crate) fn new(
        model: String,
        version: String,
        reference: String,
        source: String,
        model_file: RelativePath,
    ) -> Manifest {
        Manifest {
            format: FORMAT,
            model,
            version,
            reference,
            source,
            model_file,
            resolved_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            files: Vec::new(),
            signature: None,
            signed: None,
        }
    }

    /// Reads `DIR/pinserve.json`; `Ok(None)` when there is none.
    pub(crate) fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ManifestError::Io { path, source }),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|source| ManifestError::Parse {
                path: path.clone(),
                source,
            })?;
        manifest.check_model_file(path)?;
        Ok(Some(manifest))
    }

    /// Paths were checked as they were read; what is left is the format and the model file.
    fn check_model_file(&self, path: PathBuf) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format {
                path,
                found: self.format,
            });
        }
        if !self.files.iter().any(|file| file.path == self.model_file) {
            return Err(ManifestError::NoModelFile {
                path,
                model_file: self.model_file.clone(),
            });
        }
        Ok(())
    }

    /// Writes `DIR/pinserve.json` atomically: a temporary file, fsynced, renamed, and the
    /// directory fsynced so the rename itself survives a crash.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let temporary = dir.join(format!(".pinserve-partial-{MANIFEST_FILE}"));
        let io = |source| ManifestError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).expect("serialising to memory does not fail");
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)?;
        sync_dir(dir).map_err(io)
    }

    /// Checks that every file exists with its recorded size; with `hash`, also its digest.
    pub(crate) fn verify(&self, dir: &Path, hash: bool) -> Result<(), ManifestError> {
        for file in &self.files {
            let path = file.path.under(dir);
            let io = |source| ManifestError::Io {
                path: path.clone(),
                source,
            };
            let found = std::fs::symlink_metadata(&path).map_err(io)?.len();
            if found != file.size {
                return Err(ManifestError::Size {
                    path: file.path.to_string(),
                    expected: file.size,
                    found,
                });
            }
            if hash {
                let found = Digest::of_file(&path).map_err(io)?;
                if found != file.sha256 {
                    return Err(ManifestError::Digest {
                        path: file.path.to_string(),
                        expected: file.sha256,
                        found,
                    });
                }
            }
        }
        Ok(())
    }

    pub(crate) fn model_file_digest(&self) -> Option<Digest> {
        self.files
            .iter()
            .find(|file| file.path == self.model_file)
            .map(|file| file.sha256)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(dir: &Path, content: &[u8]) -> Manifest {
        std::fs::write(dir.join("model.onnx"), content).unwrap();
        let mut manifest = Manifest::new(
            "m".into(),
            "1".into(),
            "models:/m/1".into(),
            "here".into(),
            RelativePath::new("model.onnx").unwrap(),
        );
        manifest.files.push(ManifestFile {
            path: RelativePath::new("model.onnx").unwrap(),
            size: content.len() as u64,
            sha256: Digest::of_bytes(content),
        });
        manifest
    }

    #[test]
    fn round_trips_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = manifest_for(dir.path(), b"weights");
        manifest.write(dir.path()).unwrap();
        let read = Manifest::read(dir.path()).unwrap().unwrap();
        assert_eq!(read, manifest);
        read.verify(dir.path(), true).unwrap();
        assert_eq!(read.model_file_digest(), Some(Digest::of_bytes(b"weights")));
    }

    #[test]
    fn detects_truncated_and_altered_files() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = manifest_for(dir.path(), b"weights");
        std::fs::write(dir.path().join("model.onnx"), b"weight").unwrap();
        assert!(matches!(
            manifest.verify(dir.path(), false),
            Err(ManifestError::Size { .. })
        ));
        std::fs::write(dir.path().join("model.onnx"), b"WEIGHTS").unwrap();
        assert!(
            manifest.verify(dir.path(), false).is_ok(),
            "sizes alone cannot see it"
        );
        assert!(matches!(
            manifest.verify(dir.path(), true),
            Err(ManifestError::Digest { .. })
        ));
    }

    #[test]
    fn refuses_manifests_with_unsafe_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = serde_json::to_value(manifest_for(dir.path(), b"x")).unwrap();
        manifest["files"][0]["path"] = "../outside".into();
        manifest["model_file"] = "../outside".into();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unsafe artifact path"), "{err}");
    }

    #[test]
    fn refuses_other_formats_and_a_model_file_it_does_not_list() {
        let dir = tempfile::tempdir().unwrap();
        let written = serde_json::to_value(manifest_for(dir.path(), b"x")).unwrap();
        let refusal = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut manifest = written.clone();
            change(&mut manifest);
            let text = serde_json::to_vec(&manifest).unwrap();
            std::fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
            Manifest::read(dir.path()).unwrap_err()
        };
        let err = refusal(&|manifest| manifest["format"] = 2.into());
        assert!(
            matches!(err, ManifestError::Format { found: 2, .. }),
            "{err}"
        );
        let err = refusal(&|manifest| manifest["model_file"] = "other.onnx".into());
        assert!(
            err.to_string()
                .ends_with("the model file 'other.onnx' is not among its files"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_manifest_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::read(dir.path()).unwrap().is_none());
    }
}
