//! The input example an MLflow model was logged with (`MLmodel`'s `saved_input_example_info`),
//! which `serve` warms the model up with: values the model was trained on, where generated
//! zeros may be outside what it accepts. Its files are fetched and verified with the model's
//! others, so this reads them from the model's directory.
//!
//! MLflow 3 writes the example twice: `input_example.json` as given (a data frame in pandas'
//! `split` orient, an array, a dict of arrays) and `serving_input_example.json`, the same as a
//! request body for `/invocations`. The latter is used when present; models logged by MLflow 2
//! have only the former, which is wrapped into that body by its recorded type.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::mlmodel::{MlModel, MlModelError};
use crate::registry::{RelativePath, relpath::UnsafePath};

/// `saved_input_example_info` in `MLmodel`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ExampleInfo {
    #[serde(default)]
    artifact_path: Option<String>,
    #[serde(default)]
    serving_input_path: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    pandas_orient: Option<String>,
}

/// An input example as a JSON body of MLflow's scoring protocol, and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputExample {
    pub(crate) body: Vec<u8>,
    pub(crate) file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Invalid { path: PathBuf, source: MlModelError },
    /// A file `MLmodel` names that would be outside the model's directory.
    #[error("{}: {source}", path.display())]
    Unsafe { path: PathBuf, source: UnsafePath },
}

/// The input example of the MLflow model in `dir` (the directory holding its `MLmodel`), if it
/// has one pinserve can read. An example that `MLmodel` names but that is missing or unsafe is
/// an error: the model's files are incomplete.
pub(crate) fn read(dir: &Path) -> Result<Option<InputExample>, ExampleError> {
    let mlmodel_path = dir.join("MLmodel");
    let text = match std::fs::read_to_string(&mlmodel_path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ExampleError::Read {
                path: mlmodel_path,
                source,
            });
        }
    };
    let mlmodel = MlModel::parse(&text).map_err(|source| ExampleError::Invalid {
        path: mlmodel_path.clone(),
        source,
    })?;
    let Some(info) = mlmodel.input_example_info() else {
        return Ok(None);
    };
    if let Some(serving) = &info.serving_input_path {
        let file = confined(dir, &mlmodel_path, serving)?;
        return read_file(file, |body| body).map(Some);
    }
    let (Some(artifact), Some(field)) = (&info.artifact_path, info.serving_field()) else {
        tracing::warn!(kind = ?info.kind, "the MLflow input example is of a type pinserve cannot read; warming up with generated values");
        return Ok(None);
    };
    let file = confined(dir, &mlmodel_path, artifact)?;
    read_file(file, |example| {
        let mut body = format!("{{\"{field}\": ").into_bytes();
        body.extend_from_slice(&example);
        body.push(b'}');
        body
    })
    .map(Some)
}

impl ExampleInfo {
    /// The field of a serving input that holds an `input_example.json` of this type.
    fn serving_field(&self) -> Option<String> {
        match self.kind.as_deref() {
            Some("dataframe") => {
                let orient = self.pandas_orient.as_deref().unwrap_or("split");
                matches!(orient, "split" | "records").then(|| format!("dataframe_{orient}"))
            }
            Some("ndarray") => Some("inputs".to_owned()),
            _ => None,
        }
    }
}

/// A path `MLmodel` (at `mlmodel_path`) names, kept inside the model's directory.
fn confined(dir: &Path, mlmodel_path: &Path, named: &str) -> Result<PathBuf, ExampleError> {
    let relative = RelativePath::new(named).map_err(|source| ExampleError::Unsafe {
        path: mlmodel_path.to_owned(),
        source,
    })?;
    Ok(dir.join(relative.as_str()))
}

fn read_file(
    file: PathBuf,
    into_body: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> Result<InputExample, ExampleError> {
    match std::fs::read(&file) {
        Ok(content) => Ok(InputExample {
            body: into_body(content),
            file,
        }),
        Err(source) => Err(ExampleError::Read { path: file, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(mlmodel: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("MLmodel"), mlmodel).unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    const SERVING: &str = "saved_input_example_info:\n  artifact_path: input_example.json\n  serving_input_path: serving_input_example.json\n  type: ndarray\n";

    #[test]
    fn the_serving_input_is_used_as_it_is() {
        let dir = model_dir(
            SERVING,
            &[
                ("input_example.json", "[[1]]"),
                ("serving_input_example.json", r#"{"inputs": [[2]]}"#),
            ],
        );
        let example = read(dir.path()).unwrap().unwrap();
        assert_eq!(example.body, br#"{"inputs": [[2]]}"#);
        assert!(example.file.ends_with("serving_input_example.json"));
    }

    #[test]
    fn an_mlflow_2_example_is_wrapped_by_its_type() {
        let mlmodel = "saved_input_example_info:\n  artifact_path: input_example.json\n  type: dataframe\n  pandas_orient: split\n";
        let dir = model_dir(mlmodel, &[("input_example.json", r#"{"data": [[1]]}"#)]);
        let example = read(dir.path()).unwrap().unwrap();
        assert_eq!(example.body, br#"{"dataframe_split": {"data": [[1]]}}"#);
    }

    #[test]
    fn no_example_or_a_missing_one() {
        let dir = model_dir("flavors: {}\n", &[]);
        assert_eq!(read(dir.path()).unwrap(), None);
        assert_eq!(read(&dir.path().join("absent")).unwrap(), None);
        let dir = model_dir(SERVING, &[]);
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("serving_input_example.json"), "{err}");
        let escaping = SERVING.replace("serving_input_example.json", "../secret.json");
        let dir = model_dir(&escaping, &[]);
        assert!(read(dir.path()).unwrap_err().to_string().contains("unsafe"));
    }
}
