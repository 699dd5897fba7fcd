//! `pinserve register`: puts an ONNX model produced by training code in any language into the
//! MLflow Model Registry through MLflow's REST API, as MLflow 3's Python client does (a run, a
//! logged model whose artifacts go through the tracking server's artifact proxy, then a model
//! version), without MLflow's Python package. The version is tagged with the model file's
//! `sha256`, which `pinserve fetch` and `serve` verify, so what is registered is what serves.
//!
//! The model is loaded into ONNX Runtime first, as `serve` loads it: a model that cannot be
//! served is not registered, and the signature written to `MLmodel` is the graph's own.

mod external_data;
mod mlmodel;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::json;

pub(crate) use self::external_data::ExternalDataError;
use self::mlmodel::LoggedModelFacts;
use crate::{
    config::RegisterConfig,
    model::{Model, ModelError, OnnxModel, SessionOptions, Signature},
    profile::{self, ProfileError, ReferenceProfile},
    registry::{
        RegistryError,
        digest::Digest,
        mlflow::{
            MlflowClient,
            write::{ALREADY_EXISTS, KeyValue, LoggedModel, WriteError, string_at},
        },
        retry::RetryPolicy,
        source::TransferError,
    },
};

/// The tag `pinserve fetch` verifies a version's model file against.
const SHA256_TAG: &str = "sha256";
/// Retries of idempotent calls and uploads.
const RETRIES: usize = 3;
/// How long an upload or answer may stall before it is retried.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    ExternalData(#[from] ExternalDataError),
    #[error("--reference-profile: {0}")]
    Profile(#[from] ProfileError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("MLflow at {tracking}: cannot {step}: {source}")]
    Mlflow {
        tracking: String,
        step: &'static str,
        #[source]
        source: WriteError,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// What is registered, gathered and checked before anything is sent.
struct Prepared {
    directory: PathBuf,
    /// The model file's name, then its external-data files, relative to `directory`.
    files: Vec<String>,
    size: u64,
    sha256: Digest,
    signature: Signature,
    dataset: Option<(String, Digest)>,
    reference_profile: Option<bytes::Bytes>,
}

/// Registers the model and returns the new version's number.
pub fn run(config: &RegisterConfig) -> Result<String, RegisterError> {
    let prepared = prepare(config)?;
    let tracking = config.tracking_uri()?;
    let client = MlflowClient::from_env(tracking, RetryPolicy::new(RETRIES), STALL)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegisterError::Runtime)?;
    runtime.block_on(register(&client, config, &prepared))
}

fn prepare(config: &RegisterConfig) -> Result<Prepared, RegisterError> {
    let model_file = &config.model_file;
    let options = SessionOptions {
        library: config.onnxruntime_lib.clone(),
        intra_op_threads: 1,
        ..SessionOptions::default()
    };
    let signature = OnnxModel::load(model_file, &options)?
        .signature()
        .as_ref()
        .clone();
    let name = model_file
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| {
            RegisterError::Config(format!("{}: not a file name", model_file.display()))
        })?;
    let directory = model_file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut files = vec![name.to_owned()];
    files.extend(external_data::external_files(model_file)?);
    let mut size = 0;
    for file in &files {
        size += std::fs::metadata(directory.join(file))
            .map_err(io_error(&directory.join(file)))?
            .len();
    }
    let dataset = read_dataset(config)?;
    let reference_profile = read_profile(config, &signature)?;
    Ok(Prepared {
        sha256: Digest::of_file(model_file).map_err(io_error(model_file))?,
        directory,
        files,
        size,
        signature,
        dataset,
        reference_profile,
    })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RegisterError {
    let path = path.display().to_string();
    move |source| RegisterError::Io { path, source }
}

/// The training dataset's absolute path and digest.
fn read_dataset(config: &RegisterConfig) -> Result<Option<(String, Digest)>, RegisterError> {
    let Some(path) = &config.dataset else {
        return Ok(None);
    };
    let absolute = std::path::absolute(path).map_err(io_error(path))?;
    let digest = Digest::of_file(path).map_err(io_error(path))?;
    Ok(Some((absolute.display().to_string(), digest)))
}

/// `--reference-profile`'s bytes, once they have been read as a profile of this model: a
/// profile serving would refuse is refused before anything is registered.
fn read_profile(
    config: &RegisterConfig,
    signature: &Signature,
) -> Result<Option<bytes::Bytes>, RegisterError> {
    let Some(path) = &config.reference_profile else {
        return Ok(None);
    };
    ReferenceProfile::read(path)?.check_against(signature)?;
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    Ok(Some(bytes.into()))
}

/// The calls, in the order MLflow's client makes them. A failure after the run exists marks it
/// FAILED, so the tracking UI shows an attempt that did not finish rather than one running.
async fn register(
    client: &MlflowClient,
    config: &RegisterConfig,
    prepared: &Prepared,
) -> Result<String, RegisterError> {
    let step = |step| failed(client, step);
    let experiment = config.experiment_name();
    let experiment_id = client
        .experiment_id(&experiment)
        .await
        .map_err(step("find or create the experiment"))?;
    let run_id = create_run(client, &experiment_id, config, prepared)
        .await
        .map_err(step("create a run"))?;
    let outcome = log_and_register(client, config, prepared, &experiment_id, &run_id).await;
    let status = if outcome.is_ok() {
        "FINISHED"
    } else {
        "FAILED"
    };
    let ended = client.end_run(&run_id, status).await;
    let version = outcome?;
    ended.map_err(step("end the run"))?;
    Ok(version)
}

async fn log_and_register(
    client: &MlflowClient,
    config: &RegisterConfig,
    prepared: &Prepared,
    experiment_id: &str,
    run_id: &str,
) -> Result<String, RegisterError> {
    let step = |step| failed(client, step);
    let model = create_logged_model(client, experiment_id, run_id)
        .await
        .map_err(step("create the logged model"))?;
    let uploaded = upload(client, &model, run_id, prepared).await;
    let status = if uploaded.is_ok() {
        "LOGGED_MODEL_READY"
    } else {
        "LOGGED_MODEL_UPLOAD_FAILED"
    };
    let finalized = finalize(client, &model.model_id, status).await;
    uploaded.map_err(step("upload the model's artifacts"))?;
    finalized.map_err(step("finalize the logged model"))?;
    ensure_registered_model(client, &config.name)
        .await
        .map_err(step("create the registered model"))?;
    let version = create_version(client, config, prepared, &model, run_id)
        .await
        .map_err(step("create the model version"))?;
    if let Some(alias) = &config.alias {
        set_alias(client, &config.name, alias, &version)
            .await
            .map_err(step("set the alias"))?;
    }
    Ok(version)
}

/// Names the step that failed and the server it failed on.
fn failed(client: &MlflowClient, step: &'static str) -> impl FnOnce(WriteError) -> RegisterError {
    let tracking = client.tracking().to_string();
    move |source| RegisterError::Mlflow {
        tracking,
        step,
        source,
    }
}

async fn create_run(
    client: &MlflowClient,
    experiment_id: &str,
    config: &RegisterConfig,
    prepared: &Prepared,
) -> Result<String, WriteError> {
    let tags = vec![
        KeyValue::new("mlflow.source.name", "pinserve register"),
        KeyValue::new("mlflow.source.type", "LOCAL"),
        KeyValue::new("mlflow.runName", format!("register-{}", config.name)),
    ];
    let run = client.start_run(experiment_id, tags).await?;
    if let Some((path, digest)) = &prepared.dataset {
        client
            .log_dataset_input(&run.run_id, path, &digest.to_string(), "training")
            .await?;
    }
    Ok(run.run_id)
}

async fn create_logged_model(
    client: &MlflowClient,
    experiment_id: &str,
    run_id: &str,
) -> Result<LoggedModel, WriteError> {
    let body = json!({
        "experiment_id": experiment_id,
        "name": "model",
        "source_run_id": run_id,
        "tags": [{"key": "mlflow.source.name", "value": "pinserve register"}],
    });
    let created = client.post("api/2.0/mlflow/logged-models", &body).await?;
    let info = &created["model"]["info"];
    let model: LoggedModel = serde_json::from_value(info.clone()).map_err(|err| {
        WriteError::Transfer(TransferError::Unreadable {
            url: "logged-models".to_owned(),
            transient: false,
            source: Arc::new(err),
        })
    })?;
    let outputs = json!({ "run_id": run_id, "models": [{"model_id": model.model_id, "step": 0}] });
    client
        .post_idempotent("api/2.0/mlflow/runs/outputs", &outputs)
        .await?;
    Ok(model)
}

/// The model file, its external data, `MLmodel`, `requirements.txt` and the reference profile.
async fn upload(
    client: &MlflowClient,
    model: &LoggedModel,
    run_id: &str,
    prepared: &Prepared,
) -> Result<(), WriteError> {
    for file in &prepared.files {
        let path = prepared.directory.join(file);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|err| WriteError::Transfer(TransferError::local(&path, err)))?;
        tracing::info!(file = %file, bytes = bytes.len(), "uploading");
        client
            .upload_artifact(&model.artifact_uri, file, bytes.into())
            .await?;
    }
    let facts = LoggedModelFacts {
        artifact_uri: &model.artifact_uri,
        model_id: &model.model_id,
        run_id,
        data: &prepared.files[0],
        size: prepared.size,
    };
    let mlmodel = mlmodel::render(&facts, &prepared.signature);
    client
        .upload_artifact(&model.artifact_uri, "MLmodel", mlmodel.into())
        .await?;
    client
        .upload_artifact(
            &model.artifact_uri,
            "requirements.txt",
            requirements().into(),
        )
        .await?;
    if let Some(profile) = &prepared.reference_profile {
        client
            .upload_artifact(&model.artifact_uri, profile::FILE_NAME, profile.clone())
            .await?;
    }
    Ok(())
}

/// What `mlflow.pyfunc.load_model` needs to run the model in Python.
fn requirements() -> String {
    format!(
        "mlflow\nonnx\nonnxruntime=={}\n",
        crate::model::runtime::ONNXRUNTIME_VERSION
    )
}

async fn finalize(client: &MlflowClient, model_id: &str, status: &str) -> Result<(), WriteError> {
    let body = json!({ "model_id": model_id, "status": status });
    client
        .patch(&format!("api/2.0/mlflow/logged-models/{model_id}"), &body)
        .await
        .map(drop)
}

async fn ensure_registered_model(client: &MlflowClient, name: &str) -> Result<(), WriteError> {
    match client
        .post(
            "api/2.0/mlflow/registered-models/create",
            &json!({ "name": name }),
        )
        .await
    {
        Err(err) if err.code() == Some(ALREADY_EXISTS) => Ok(()),
        other => other.map(drop),
    }
}

async fn create_version(
    client: &MlflowClient,
    config: &RegisterConfig,
    prepared: &Prepared,
    model: &LoggedModel,
    run_id: &str,
) -> Result<String, WriteError> {
    let body = json!({
        "name": config.name,
        "source": format!("models:/{}", model.model_id),
        "model_id": model.model_id,
        "run_id": run_id,
        "tags": version_tags(config, prepared),
    });
    let created = client
        .post("api/2.0/mlflow/model-versions/create", &body)
        .await?;
    Ok(string_at(&created, &["model_version", "version"]))
}

/// The digest `fetch` verifies, the training data, the profile and the user's own tags.
fn version_tags(config: &RegisterConfig, prepared: &Prepared) -> Vec<KeyValue> {
    let mut tags = vec![KeyValue::new(SHA256_TAG, prepared.sha256.to_string())];
    if let Some((path, digest)) = &prepared.dataset {
        tags.push(KeyValue::new("pinserve.dataset.path", path.clone()));
        tags.push(KeyValue::new("pinserve.dataset.sha256", digest.to_string()));
    }
    if prepared.reference_profile.is_some() {
        tags.push(KeyValue::new(
            "pinserve.reference_profile",
            profile::FILE_NAME,
        ));
    }
    tags.extend(
        config
            .tags
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    tags
}

async fn set_alias(
    client: &MlflowClient,
    name: &str,
    alias: &str,
    version: &str,
) -> Result<(), WriteError> {
    let body = json!({ "name": name, "alias": alias, "version": version });
    client
        .post_idempotent("api/2.0/mlflow/registered-models/alias", &body)
        .await
        .map(drop)
}
