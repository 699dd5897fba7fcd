//! Which of a version's files ONNX Runtime loads.

use super::listing::Found;
use crate::registry::relpath::RelativePath;

/// The file a model repository version directory serves when no MLmodel names another.
pub(super) const DEFAULT_MODEL_FILE: &str = "model.onnx";

/// The file ONNX Runtime loads: the one MLmodel names, else `model.onnx`, else the only
/// top-level `.onnx` file, else the same within a single version folder.
pub(super) fn choose_model_file(files: &[Found], named: Option<&str>) -> Option<RelativePath> {
    if let Some(named) = named {
        return exists(files, named);
    }
    exists(files, DEFAULT_MODEL_FILE)
        .or_else(|| only_onnx_in(files, ""))
        .or_else(|| in_single_folder(files))
}

fn exists(files: &[Found], name: &str) -> Option<RelativePath> {
    files
        .iter()
        .find(|file| file.path.as_str() == name)
        .map(|file| file.path.clone())
}

/// The only `.onnx` file directly in `folder` (`""` or ending in `/`).
fn only_onnx_in(files: &[Found], folder: &str) -> Option<RelativePath> {
    let mut models = files.iter().filter(|file| {
        let path = file.path.as_str();
        path.ends_with(".onnx")
            && path
                .strip_prefix(folder)
                .is_some_and(|rest| !rest.contains('/'))
    });
    match (models.next(), models.next()) {
        (Some(only), None) => Some(only.path.clone()),
        _ => None,
    }
}

/// A single version folder (`1/model.onnx`), as KServe's storage initializer and Triton's
/// repositories lay a model out, when nothing is at the top.
fn in_single_folder(files: &[Found]) -> Option<RelativePath> {
    let mut folders = files
        .iter()
        .filter_map(|file| file.path.as_str().split_once('/').map(|(dir, _)| dir));
    let folder = folders.next()?;
    if folders.any(|other| other != folder) {
        return None;
    }
    let prefix = format!("{folder}/");
    exists(files, &format!("{prefix}{DEFAULT_MODEL_FILE}")).or_else(|| only_onnx_in(files, &prefix))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::registry::plan::listing::local_found;

    fn found(paths: &[&str]) -> Vec<Found> {
        paths
            .iter()
            .map(|path| local_found(path, PathBuf::from(path), Some(1)).unwrap())
            .collect()
    }

    #[test]
    fn the_model_file_is_found_at_the_top_or_in_a_single_version_folder() {
        let chosen = |paths: &[&str]| {
            choose_model_file(&found(paths), None).map(|path| path.as_str().to_owned())
        };
        assert_eq!(
            chosen(&["model.onnx", "other.onnx"]).as_deref(),
            Some("model.onnx")
        );
        assert_eq!(
            chosen(&["net.onnx", "net.bin"]).as_deref(),
            Some("net.onnx")
        );
        assert_eq!(chosen(&["a.onnx", "b.onnx"]), None);
        // KServe's /mnt/models and Triton's repositories: one version folder.
        assert_eq!(
            chosen(&["1/model.onnx", "1/weights.bin"]).as_deref(),
            Some("1/model.onnx")
        );
        assert_eq!(
            chosen(&["README", "3/net.onnx"]).as_deref(),
            Some("3/net.onnx")
        );
        assert_eq!(chosen(&["1/model.onnx", "2/model.onnx"]), None);
        assert_eq!(chosen(&["1/a.onnx", "1/b.onnx"]), None);
        assert_eq!(chosen(&["1/sub/model.onnx"]), None);
        assert_eq!(
            chosen(&["data/weights.bin", "model.onnx"]).as_deref(),
            Some("model.onnx")
        );
    }
}
