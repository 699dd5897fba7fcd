//! Model repositories on local disk, laid out `ROOT/NAME/VERSION/model.onnx` as Triton and
//! TF Serving lay them out.

use std::path::{Component, Path};

use super::{ModelArtifact, RegistryError};

/// The model file's name inside a version directory.
pub const MODEL_FILE: &str = "model.onnx";

/// Resolves `name` and `version` under `repository`. Both must be single path components, so a
/// reference can never point outside the repository.
pub fn locate(
    repository: &Path,
    name: &str,
    version: &str,
) -> Result<ModelArtifact, RegistryError> {
    check_component("name", name)?;
    check_component("version", version)?;
    let model_file = repository.join(name).join(version).join(MODEL_FILE);
    // Anything readable but a directory: a regular file, a symlink (Kubernetes volumes are full
    // of them) or a pipe a sidecar streams the model through.
    if !model_file.exists() || model_file.is_dir() {
        return Err(RegistryError::NotFound {
            name: name.to_owned(),
            version: version.to_owned(),
            path: model_file,
        });
    }
    Ok(ModelArtifact {
        name: name.to_owned(),
        version: version.to_owned(),
        model_file,
    })
}

fn check_component(what: &'static str, value: &str) -> Result<(), RegistryError> {
    let invalid = |reason| RegistryError::InvalidReference {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut components = Path::new(value).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) if !value.contains(['/', '\\']) => Ok(()),
        _ => Err(invalid(
            "it must be a single directory name, without '/' or '..'",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_model_file_of_a_version() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("iris/3");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MODEL_FILE), b"onnx").unwrap();
        let artifact = locate(root.path(), "iris", "3").unwrap();
        assert_eq!(artifact.model_file, dir.join(MODEL_FILE));
    }

    #[test]
    fn a_missing_version_names_the_path_it_looked_for() {
        let root = tempfile::tempdir().unwrap();
        let err = locate(root.path(), "iris", "4").unwrap_err().to_string();
        assert!(err.contains("iris/4/model.onnx"), "{err}");
    }

    #[test]
    fn references_cannot_escape_the_repository() {
        let root = tempfile::tempdir().unwrap();
        for (name, version) in [
            ("..", "1"),
            ("a/b", "1"),
            ("iris", "../1"),
            ("", "1"),
            ("iris", "/etc"),
            ("iris", "."),
        ] {
            let err = locate(root.path(), name, version).unwrap_err();
            assert!(
                matches!(err, RegistryError::InvalidReference { .. }),
                "{name}/{version}: {err}"
            );
        }
    }
}
