//! The MLflow REST calls that change the registry: runs, logged models, artifacts uploaded
//! through the tracking server's artifact proxy, registered models and their versions. Used by
//! `pinserve register` (and by `eval --log-to-mlflow`), in the order MLflow 3's own client makes
//! them, so that what pinserve registers reads back in MLflow's UI and clients like their own.
//!
//! Calls that create something are sent once (a retried `runs/create` would make two runs);
//! idempotent ones (uploads, updates, reads) are retried as the fetcher's reads are.

use std::sync::Arc;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    artifacts::ARTIFACTS_API,
    client::{ANSWER_LIMIT, ErrorBody, METADATA_TIMEOUT, MISSING, MlflowClient, answer},
};
use crate::registry::{
    redact::redact_url,
    retry::with_retries,
    source::{TransferError, check_status, describe_reqwest, within},
};

/// MLflow's error code for a name that is taken (an experiment, a registered model).
pub(crate) const ALREADY_EXISTS: &str = "RESOURCE_ALREADY_EXISTS";
/// The URI scheme of artifacts the tracking server proxies (`mlflow server --serve-artifacts`,
/// the default since MLflow 2).
const PROXIED_ARTIFACTS: &str = "mlflow-artifacts:/";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The server answered, and refused: its error code and message.
    #[error("{endpoint}: {status} {code}: {message}")]
    Refused {
        endpoint: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(
        "the tracking server stores artifacts at {uri}, which pinserve cannot upload to: it \
         uploads through the server's artifact proxy (mlflow-artifacts:/, what `mlflow server` \
         does unless started with --no-serve-artifacts)"
    )]
    ArtifactsNotProxied { uri: String },
}

impl WriteError {
    /// The MLflow error code of a refusal.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            WriteError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A tag as MLflow's API writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct KeyValue {
    pub(crate) key: String,
    pub(crate) value: String,
}

impl KeyValue {
    pub(crate) fn new(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A run: its id, and where its artifacts go.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) run_id: String,
    pub(crate) artifact_uri: String,
}

/// A logged model: an artifact directory of its own (`models:/<model_id>`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedModel {
    pub(crate) model_id: String,
    pub(crate) artifact_uri: String,
}

impl MlflowClient {
    /// Sends `body` to a JSON endpoint and returns the answer; retried only if `idempotent`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Value, WriteError> {
        let mut url = self.endpoint(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let send = || async {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .timeout(METADATA_TIMEOUT);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = within(self.stall, async {
                request
                    .send()
                    .await
                    .map_err(|err| describe_reqwest(&url, err))
            })
            .await?;
            read_answer(path, response, self.stall).await
        };
        if !idempotent {
            return send().await.map_err(Answer::into_error);
        }
        // A refusal ends the retries with the server's answer; only transfer trouble is retried.
        with_retries(&self.retry, path, || async {
            match send().await {
                Ok(value) => Ok(Ok(value)),
                Err(Answer::Refused(err)) => Ok(Err(err)),
                Err(Answer::Transfer(err)) => Err(err),
            }
        })
        .await?
    }

    /// `GET`, with query parameters.
    pub(crate) async fn get_value(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, WriteError> {
        self.call(Method::GET, path, query, None, true).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, WriteError> {
        self.call(Method::POST, path, &[], Some(body), false).await
    }

    pub(crate) async fn post_idempotent(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<Value, WriteError> {
        self.call(Method::POST, path, &[], Some(body), true).await
    }

    pub(crate) async fn patch(&self, path: &str, body: &Value) -> Result<Value, WriteError> {
        self.call(Method::PATCH, path, &[], Some(body), true).await
    }

    /// The id of experiment `name`, created if it does not exist yet.
    pub(crate) async fn experiment_id(&self, name: &str) -> Result<String, WriteError> {
        let found = self
            .get_value(
                "api/2.0/mlflow/experiments/get-by-name",
                &[("experiment_name", name)],
            )
            .await;
        match found {
            Ok(answer) => Ok(string_at(&answer, &["experiment", "experiment_id"])),
            Err(err) if err.code() == Some(MISSING) => {
                let created = self
                    .post(
                        "api/2.0/mlflow/experiments/create",
                        &json!({ "name": name }),
                    )
                    .await?;
                Ok(string_at(&created, &["experiment_id"]))
            }
            Err(err) => Err(err),
        }
    }

    /// Records a dataset as a run's input, as `mlflow.log_input` does: named after its file,
    /// with its digest and where it was read from; `context` is MLflow's `training`,
    /// `evaluation`, ...
    pub(crate) async fn log_dataset_input(
        &self,
        run_id: &str,
        path: &str,
        sha256_hex: &str,
        context: &str,
    ) -> Result<(), WriteError> {
        let name = std::path::Path::new(path)
            .file_name()
            .map_or(path.to_owned(), |name| name.to_string_lossy().into_owned());
        let body = json!({
            "run_id": run_id,
            "datasets": [{
                "tags": [{"key": "mlflow.data.context", "value": context}],
                "dataset": {
                    "name": name,
                    // MLflow's stores keep at most 36 characters of a dataset digest.
                    "digest": &sha256_hex[..sha256_hex.len().min(36)],
                    "source_type": "local",
                    "source": json!({ "uri": path }).to_string(),
                },
            }],
        });
        self.post_idempotent("api/2.0/mlflow/runs/log-inputs", &body)
            .await
            .map(drop)
    }

    /// Starts a run in `experiment_id` with `tags` (plus the user, as MLflow's client adds it).
    pub(crate) async fn start_run(
        &self,
        experiment_id: &str,
        mut tags: Vec<KeyValue>,
    ) -> Result<Run, WriteError> {
        if let Ok(user) = std::env::var("USER") {
            tags.push(KeyValue::new("mlflow.user", user));
        }
        let body =
            json!({ "experiment_id": experiment_id, "start_time": now_millis(), "tags": tags });
        let created = self.post("api/2.0/mlflow/runs/create", &body).await?;
        Ok(Run {
            run_id: string_at(&created, &["run", "info", "run_id"]),
            artifact_uri: string_at(&created, &["run", "info", "artifact_uri"]),
        })
    }

    /// Ends a run with `status` (`FINISHED`, `FAILED`).
    pub(crate) async fn end_run(&self, run_id: &str, status: &str) -> Result<(), WriteError> {
        let body = json!({ "run_id": run_id, "status": status, "end_time": now_millis() });
        self.post_idempotent("api/2.0/mlflow/runs/update", &body)
            .await
            .map(drop)
    }

    /// Uploads `bytes` as `relative` under a proxied artifact root (`mlflow-artifacts:/...`).
    pub(crate) async fn upload_artifact(
        &self,
        artifact_uri: &str,
        relative: &str,
        bytes: bytes::Bytes,
    ) -> Result<(), WriteError> {
        let Some(root) = artifact_uri.strip_prefix(PROXIED_ARTIFACTS) else {
            return Err(WriteError::ArtifactsNotProxied {
                uri: artifact_uri.to_owned(),
            });
        };
        let path = format!(
            "{ARTIFACTS_API}/{}/{relative}",
            root.trim_start_matches('/').trim_end_matches('/')
        );
        let url = self.endpoint(&path);
        with_retries(&self.retry, &path, || async {
            let request = self
                .http
                .put(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone())
                .send();
            let response = within(self.stall, async {
                request.await.map_err(|err| describe_reqwest(&url, err))
            })
            .await?;
            // A refusal ends the retries with the server's answer, kept typed.
            match read_answer(&path, response, self.stall).await {
                Ok(_) => Ok(Ok(())),
                Err(Answer::Refused(refused)) => Ok(Err(refused)),
                Err(Answer::Transfer(err)) => Err(err),
            }
        })
        .await?
    }
}

/// An answer that is not a success: a refusal to report as is, or trouble worth retrying.
enum Answer {
    Refused(WriteError),
    Transfer(TransferError),
}

impl Answer {
    fn into_error(self) -> WriteError {
        match self {
            Answer::Refused(err) => err,
            Answer::Transfer(err) => err.into(),
        }
    }
}

impl From<TransferError> for Answer {
    fn from(err: TransferError) -> Answer {
        Answer::Transfer(err)
    }
}

/// The answer's JSON; 5xx and 429 are transient, other errors refusals with MLflow's code.
async fn read_answer(
    path: &str,
    response: reqwest::Response,
    stall: std::time::Duration,
) -> Result<Value, Answer> {
    if let Some(err) = check_status(response.url(), &response)
        .err()
        .filter(TransferError::is_transient)
    {
        return Err(err.into());
    }
    let status = response.status();
    let shown = redact_url(response.url());
    let body = answer(response)
        .read_limited(ANSWER_LIMIT, stall, &shown)
        .await?;
    if !status.is_success() {
        let error: ErrorBody = serde_json::from_slice(&body).unwrap_or(ErrorBody {
            error_code: String::new(),
            message: String::from_utf8_lossy(&body).into_owned(),
        });
        return Err(Answer::Refused(WriteError::Refused {
            endpoint: path.to_owned(),
            status: status.as_u16(),
            code: error.error_code,
            message: error.message,
        }));
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|err| {
        TransferError::Unreadable {
            url: shown,
            transient: false,
            source: Arc::new(err),
        }
        .into()
    })
}

/// The string at `path` in an answer, empty when absent (the caller's next call then fails
/// with MLflow's own message).
pub(crate) fn string_at(value: &Value, path: &[&str]) -> String {
    path.iter()
        .fold(value, |value, key| &value[key])
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Milliseconds since the Unix epoch, MLflow's timestamps.
#[allow(clippy::disallowed_methods, reason = "MLflow records dates")]
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
