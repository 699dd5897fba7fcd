//! The JSON report `pinserve eval` writes, as far as promotion reads it: which model version was
//! evaluated, its digest, and whether it passed. Its other fields are shown in the commit
//! message and pull request, not interpreted.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::registry::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read the report {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "the report {} is for model {model} version {version}, not for {wanted_model} version \
         {wanted_version}",
        path.display()
    )]
    OtherVersion {
        path: PathBuf,
        model: String,
        version: String,
        wanted_model: String,
        wanted_version: String,
    },
    #[error("the report {} says the evaluation did not pass; refusing to promote", path.display())]
    NotPassed { path: PathBuf },
}

#[derive(Debug, Deserialize)]
struct Fields {
    model: String,
    version: Value,
    #[serde(default)]
    sha256: Option<Digest>,
    passed: bool,
    #[serde(flatten)]
    others: Map<String, Value>,
}

#[derive(Debug)]
pub(crate) struct Report {
    path: PathBuf,
    fields: Fields,
}

impl Report {
    pub(crate) fn read(path: &Path) -> Result<Report, ReportError> {
        let unreadable = |reason: String| ReportError::Unreadable {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read(path).map_err(|err| unreadable(err.to_string()))?;
        let fields: Fields =
            serde_json::from_slice(&text).map_err(|err| unreadable(err.to_string()))?;
        if !(fields.version.is_string() || fields.version.is_number()) {
            return Err(unreadable(
                "`version` is neither a string nor a number".to_owned(),
            ));
        }
        Ok(Report {
            path: path.to_owned(),
            fields,
        })
    }

    fn version(&self) -> String {
        match &self.fields.version {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn sha256(&self) -> Option<Digest> {
        self.fields.sha256
    }

    /// The report must be for this model version, and must have passed.
    pub(crate) fn check(&self, model: &str, version: &str) -> Result<(), ReportError> {
        if self.fields.model != model || self.version() != version {
            return Err(ReportError::OtherVersion {
                path: self.path.clone(),
                model: self.fields.model.clone(),
                version: self.version(),
                wanted_model: model.to_owned(),
                wanted_version: version.to_owned(),
            });
        }
        if !self.fields.passed {
            return Err(ReportError::NotPassed {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// A few lines for a commit message: the verdict, then the report's other scalar fields and
    /// those of its objects one level down (metrics, thresholds), as `key: value`.
    pub(crate) fn summary(&self) -> String {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let mut lines = vec![format!("Evaluation ({name}): passed")];
        for (key, value) in &self.fields.others {
            match value {
                Value::Object(inner) => lines.extend(
                    inner
                        .iter()
                        .filter(|(_, v)| is_scalar(v))
                        .map(|(k, v)| format!("  {key}.{k}: {}", show(v))),
                ),
                value if is_scalar(value) => lines.push(format!("  {key}: {}", show(value))),
                _ => {}
            }
        }
        lines.join("\n")
    }
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn show(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: Value) -> (tempfile::TempDir, Result<Report, ReportError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.json");
        std::fs::write(&path, json.to_string()).unwrap();
        let report = Report::read(&path);
        (dir, report)
    }

    #[test]
    fn checks_model_version_and_verdict() {
        let (_dir, ok) = report(serde_json::json!({
            "model": "fraud", "version": 9, "sha256": null, "passed": true,
            "metrics": {"accuracy": 0.93, "curve": [1, 2]}, "dataset": "holdout",
        }));
        let ok = ok.unwrap();
        ok.check("fraud", "9").unwrap();
        assert!(matches!(
            ok.check("fraud", "8"),
            Err(ReportError::OtherVersion { .. })
        ));
        assert_eq!(
            ok.summary(),
            "Evaluation (eval.json): passed\n  dataset: holdout\n  metrics.accuracy: 0.93"
        );
        let (_dir, failed) = report(serde_json::json!({
            "model": "fraud", "version": "9", "passed": false,
        }));
        let err = failed.unwrap().check("fraud", "9").unwrap_err();
        assert!(err.to_string().contains("did not pass"), "{err}");
        let (_dir, broken) = report(serde_json::json!({"model": "fraud", "passed": true}));
        assert!(matches!(broken, Err(ReportError::Unreadable { .. })));
    }
}
