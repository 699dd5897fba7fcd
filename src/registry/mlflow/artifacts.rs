//! The tracking server's artifact proxy (`mlflow-artifacts:/`): recursive listings of a model's
//! directory, and the download source of each file.

use serde::Deserialize;

use super::client::MlflowClient;
use crate::registry::{
    relpath::RelativePath,
    source::{FileSource, TransferError},
};

pub(super) const ARTIFACTS_API: &str = "api/2.0/mlflow-artifacts/artifacts";

/// One file in an artifact listing, its path relative to the listed directory's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArtifactFile {
    pub(crate) path: String,
    pub(crate) size: Option<u64>,
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    files: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    path: String,
    #[serde(default)]
    is_dir: bool,
    #[serde(default)]
    file_size: Option<u64>,
}

impl MlflowClient {
    /// Lists every file below an artifact path of the proxied artifact store, recursively.
    pub(crate) async fn list_artifacts(
        &self,
        root: &str,
    ) -> Result<Vec<ArtifactFile>, TransferError> {
        let mut files = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(relative) = pending.pop() {
            let path = join_artifact_path(root, &relative);
            let listing: Listing = self.get_json(ARTIFACTS_API, &[("path", &path)]).await?;
            for entry in listing.files {
                let child = child_path(&relative, &entry.path)?;
                if entry.is_dir {
                    pending.push(child);
                } else {
                    files.push(ArtifactFile {
                        path: child,
                        size: entry.file_size,
                    });
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// The download source of one proxied artifact.
    pub(crate) fn artifact_source(&self, root: &str, relative: &str) -> FileSource {
        let mut url = self.endpoint(ARTIFACTS_API);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(
                join_artifact_path(root, relative)
                    .split('/')
                    .filter(|s| !s.is_empty()),
            );
        }
        FileSource::Http {
            client: self.http.clone(),
            url,
        }
    }
}

fn join_artifact_path(parent: &str, child: &str) -> String {
    match (parent.trim_end_matches('/'), child.trim_start_matches('/')) {
        ("", child) => child.to_owned(),
        (parent, "") => parent.to_owned(),
        (parent, child) => format!("{parent}/{child}"),
    }
}

/// A listing entry's path below the directory listed at `parent`. Entries are named relative
/// to the listed directory (or, by some servers, from the root); anything that would climb out
/// (`..`, absolute paths) is refused rather than cleaned up.
fn child_path(parent: &str, entry: &str) -> Result<String, TransferError> {
    let below = if parent.is_empty() {
        entry
    } else {
        entry.strip_prefix(&format!("{parent}/")).unwrap_or(entry)
    };
    let below = RelativePath::new(below)?;
    Ok(join_artifact_path(parent, below.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_entries_stay_below_the_listed_directory() {
        assert_eq!(child_path("", "model.onnx").unwrap(), "model.onnx");
        assert_eq!(child_path("data", "data/w.bin").unwrap(), "data/w.bin");
        assert_eq!(child_path("data", "w.bin").unwrap(), "data/w.bin");
        for hostile in ["../escaped", "/etc/passwd", "data/../../x", ""] {
            assert!(child_path("data", hostile).is_err(), "{hostile}");
        }
        assert_eq!(
            join_artifact_path("/1/models/m-1/artifacts/", ""),
            "/1/models/m-1/artifacts"
        );
    }
}
