//! Paths of downloaded files, confined to the destination directory. Every path that comes from
//! a listing (an object store, MLflow's artifact API, a manifest) goes through [`RelativePath`],
//! so `..`, absolute paths and names pinserve reserves for itself never reach the filesystem.

use std::{
    fmt,
    path::{Component, Path, PathBuf},
};

/// Names pinserve writes itself; a listing may not use them.
pub(crate) const RESERVED_PREFIX: &str = ".pinserve";

/// Serialised as its text; deserialising refuses what [`RelativePath::new`] refuses, so a
/// manifest cannot name a file outside its directory.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct RelativePath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsafe artifact path '{path}': {reason}")]
pub struct UnsafePath {
    pub(crate) path: String,
    pub(crate) reason: &'static str,
}

impl RelativePath {
    pub(crate) fn new(path: &str) -> Result<RelativePath, UnsafePath> {
        let unsafe_path = |reason| UnsafePath {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() {
            return Err(unsafe_path("it is empty"));
        }
        if path.contains('\\') || path.contains('\0') {
            return Err(unsafe_path("it contains a backslash or NUL"));
        }
        if path == super::manifest::MANIFEST_FILE {
            return Err(unsafe_path("it would overwrite pinserve's manifest"));
        }
        if path.starts_with('/') {
            return Err(unsafe_path("it is absolute"));
        }
        for component in Path::new(path).components() {
            match component {
                Component::Normal(name) if !name.to_string_lossy().starts_with(RESERVED_PREFIX) => {
                }
                Component::Normal(_) => {
                    return Err(unsafe_path("names starting with .pinserve are reserved"));
                }
                Component::ParentDir => {
                    return Err(unsafe_path("it leaves the destination with '..'"));
                }
                Component::CurDir => return Err(unsafe_path("it contains '.'")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(unsafe_path("it is absolute"));
                }
            }
        }
        Ok(RelativePath(path.trim_end_matches('/').to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn under(&self, dir: &Path) -> PathBuf {
        dir.join(&self.0)
    }
}

impl TryFrom<String> for RelativePath {
    type Error = UnsafePath;

    fn try_from(path: String) -> Result<RelativePath, UnsafePath> {
        RelativePath::new(&path)
    }
}

impl From<RelativePath> for String {
    fn from(path: RelativePath) -> String {
        path.0
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_relative_paths() {
        assert_eq!(
            RelativePath::new("model.onnx").unwrap().as_str(),
            "model.onnx"
        );
        assert_eq!(
            RelativePath::new("data/weights.bin").unwrap().as_str(),
            "data/weights.bin"
        );
    }

    #[test]
    fn refuses_paths_that_escape_or_collide() {
        for path in [
            "../etc/passwd",
            "data/../../x",
            "/etc/passwd",
            "",
            "./model.onnx",
            "a\\b",
            ".pinserve.json",
            "data/.pinserve-partial",
            "nul\0byte",
        ] {
            assert!(RelativePath::new(path).is_err(), "{path:?} was accepted");
        }
    }
}
