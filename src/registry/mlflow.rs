//! The MLflow Model Registry over its REST API, authenticated as MLflow's own clients are:
//! `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (HTTP Basic, preferred when both are
//! set), else `MLFLOW_TRACKING_TOKEN` (Bearer); `MLFLOW_TRACKING_INSECURE_TLS` and
//! `MLFLOW_TRACKING_SERVER_CERT_PATH` for TLS.
//!
//! Resolution: a version, alias or stage becomes a model version; its download URI
//! (`mlflow-artifacts:/...` on a server that proxies artifacts, or an object-store URL) is listed
//! recursively so the whole model directory is fetched (ONNX external-data files included), and
//! the `MLmodel` file names the model file and carries the signature. An MLflow 3 logged model
//! (`models:/m-ID`) is looked up by id (`logged-models/{id}`) and its `artifact_uri` is listed
//! the same way.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::model::{DataType, Signature, TensorSpec};

use super::{
    RegistryError,
    redact::redact_url,
    reference::Selector,
    relpath::RelativePath,
    resolve::sort_versions,
    retry::{RetryPolicy, with_retries},
    source::{FileSource, Opened, TransferError, check_status, describe_reqwest, within},
};

pub mod example;
pub mod write;

/// Metadata calls are small; a registry that does not answer one in this time is down.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// MLflow's error code for a model or version that does not exist.
const MISSING: &str = "RESOURCE_DOES_NOT_EXIST";
/// The largest API answer read: a listing of tens of thousands of files fits; a registry that
/// sends more is broken or hostile, and is not allowed to fill the fetcher's memory.
const ANSWER_LIMIT: usize = 16 << 20;
/// An error answer is a code and a message.
const ERROR_LIMIT: usize = 64 << 10;

pub struct MlflowClient {
    http: reqwest::Client,
    tracking: Url,
    retry: RetryPolicy,
    /// `--fetch-stall-timeout`: how long an answer may keep pinserve waiting for its next bytes.
    stall: Duration,
}

/// A registered model version, as `model-versions/get` returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl ModelVersion {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|tag| tag.key == key)
            .map(|tag| tag.value.as_str())
    }
}

/// An MLflow 3 logged model, as `logged-models/{id}` returns its `info`.
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedModel {
    pub model_id: String,
    pub name: String,
    pub artifact_uri: String,
    /// `LOGGED_MODEL_READY` once its artifacts are complete.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// A logged model's status once its artifacts are all uploaded.
const LOGGED_MODEL_READY: &str = "LOGGED_MODEL_READY";

/// One file in an artifact listing, its path relative to the listed directory's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    pub path: String,
    pub size: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

impl MlflowClient {
    /// A client for the tracking server at `tracking`, with MLflow's auth and TLS variables.
    pub fn from_env(
        tracking: Url,
        retry: RetryPolicy,
        stall: Duration,
    ) -> Result<MlflowClient, RegistryError> {
        let config_error =
            |reason: String| RegistryError::Config(format!("MLflow client: {reason}"));
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .default_headers(auth_headers(&tracking).map_err(config_error)?);
        if env_flag("MLFLOW_TRACKING_INSECURE_TLS") {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(path) =
            std::env::var_os("MLFLOW_TRACKING_SERVER_CERT_PATH").filter(|p| !p.is_empty())
        {
            let pem = std::fs::read(&path)
                .map_err(|err| config_error(format!("{}: {err}", path.display())))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|err| config_error(err.to_string()))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|err| config_error(err.to_string()))?;
        let mut tracking = tracking;
        let _ = tracking.set_username("");
        let _ = tracking.set_password(None);
        Ok(MlflowClient {
            http,
            tracking,
            retry,
            stall,
        })
    }

    pub fn tracking(&self) -> &Url {
        &self.tracking
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.tracking.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{path}"));
        url
    }

    /// GETs a JSON API endpoint, retrying transient failures; MLflow's error bodies become
    /// messages naming the registry and the `error_code`.
    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, TransferError> {
        let mut url = self.endpoint(path);
        url.query_pairs_mut().extend_pairs(query);
        with_retries(&self.retry, path, || async {
            let request = self.http.get(url.clone()).timeout(METADATA_TIMEOUT).send();
            let response = within(self.stall, async {
                request.await.map_err(|err| describe_reqwest(&url, &err))
            })
            .await?;
            if let Err(err) = check_status(&url, &response) {
                return Err(with_mlflow_error(err, response).await);
            }
            let shown = redact_url(&url);
            let body = answer(response)
                .read_limited(ANSWER_LIMIT, self.stall, &shown)
                .await?;
            serde_json::from_slice(&body).map_err(|err| {
                TransferError::transient(format!("{shown}: unreadable answer: {err}"))
            })
        })
        .await
    }

    /// The model version a selector names.
    pub async fn resolve(
        &self,
        name: &str,
        selector: &Selector,
    ) -> Result<ModelVersion, TransferError> {
        #[derive(Deserialize)]
        struct One {
            model_version: ModelVersion,
        }
        #[derive(Deserialize)]
        struct Many {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        match selector {
            Selector::Version(version) => self.version(name, version).await,
            Selector::Alias(alias) => {
                let one: One = self
                    .get_json(
                        "api/2.0/mlflow/registered-models/alias",
                        &[("name", name), ("alias", alias)],
                    )
                    .await?;
                Ok(one.model_version)
            }
            Selector::Stage(stage) => {
                let mut query = vec![("name", name)];
                if !stage.eq_ignore_ascii_case("latest") {
                    query.push(("stages", stage.as_str()));
                }
                let many: Many = self
                    .get_json(
                        "api/2.0/mlflow/registered-models/get-latest-versions",
                        &query,
                    )
                    .await?;
                many.model_versions
                    .into_iter()
                    .max_by_key(|version| version.version.parse::<u64>().unwrap_or(0))
                    .ok_or_else(|| {
                        TransferError::Fatal(format!(
                            "model '{name}' has no version in stage '{stage}'"
                        ))
                    })
            }
        }
    }

    /// A version by number; one that does not exist is reported with those that do.
    async fn version(&self, name: &str, version: &str) -> Result<ModelVersion, TransferError> {
        #[derive(Deserialize)]
        struct One {
            model_version: ModelVersion,
        }
        let found = self
            .get_json::<One>(
                "api/2.0/mlflow/model-versions/get",
                &[("name", name), ("version", version)],
            )
            .await;
        match found {
            Ok(one) => Ok(one.model_version),
            Err(TransferError::Fatal(message)) if message.contains(MISSING) => Err(
                TransferError::Fatal(format!("{message}; {}", self.versions_of(name).await)),
            ),
            Err(err) => Err(err),
        }
    }

    /// The versions of `name` the registry holds (MLflow's search of model versions), said for
    /// an error message; a registry that cannot tell is said to, without failing.
    async fn versions_of(&self, name: &str) -> String {
        #[derive(Deserialize)]
        struct Found {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let found = self
            .get_json::<Found>(
                "api/2.0/mlflow/model-versions/search",
                &[("filter", &filter), ("max_results", "1000")],
            )
            .await;
        let mut versions: Vec<String> = match found {
            Ok(found) => found
                .model_versions
                .into_iter()
                .map(|v| v.version)
                .collect(),
            Err(err) => return format!("its versions could not be listed: {err}"),
        };
        if versions.is_empty() {
            return format!("the registry has no versions of a model named '{name}'");
        }
        sort_versions(&mut versions);
        format!("the versions of '{name}' are: {}", versions.join(", "))
    }

    /// The logged model `model_id`. One still uploading (or failed) is refused: its artifacts
    /// may be incomplete, and a copy taken now would be cached as if it were the model.
    pub async fn logged_model(&self, model_id: &str) -> Result<LoggedModel, TransferError> {
        #[derive(Deserialize)]
        struct Answer {
            model: Model,
        }
        #[derive(Deserialize)]
        struct Model {
            info: LoggedModel,
        }
        // The id is `m-` and alphanumerics (checked when the reference was parsed): a segment.
        let path = format!("api/2.0/mlflow/logged-models/{model_id}");
        let answer: Answer = self.get_json(&path, &[]).await?;
        let logged = answer.model.info;
        if !logged.status.is_empty() && logged.status != LOGGED_MODEL_READY {
            return Err(TransferError::Fatal(format!(
                "logged model {model_id} is {}, not {LOGGED_MODEL_READY}: its artifacts may be incomplete",
                logged.status
            )));
        }
        Ok(logged)
    }

    /// Where the version's files are: `mlflow-artifacts:/...` or an object-store URL.
    pub async fn download_uri(&self, name: &str, version: &str) -> Result<String, TransferError> {
        #[derive(Deserialize)]
        struct DownloadUri {
            artifact_uri: String,
        }
        let answer: DownloadUri = self
            .get_json(
                "api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", name), ("version", version)],
            )
            .await?;
        Ok(answer.artifact_uri)
    }

    /// Lists every file below an artifact path of the proxied artifact store, recursively.
    pub async fn list_artifacts(&self, root: &str) -> Result<Vec<ArtifactFile>, TransferError> {
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
        let mut files = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(relative) = pending.pop() {
            let path = join_artifact_path(root, &relative);
            let listing: Listing = self
                .get_json("api/2.0/mlflow-artifacts/artifacts", &[("path", &path)])
                .await?;
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
    pub fn artifact_source(&self, root: &str, relative: &str) -> FileSource {
        let mut url = self.endpoint("api/2.0/mlflow-artifacts/artifacts");
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
    let below = RelativePath::new(below).map_err(|err| TransferError::Fatal(err.to_string()))?;
    Ok(join_artifact_path(parent, below.as_str()))
}

/// An API answer's body, as a read that can be bounded.
fn answer(response: reqwest::Response) -> Opened {
    Opened {
        offset: 0,
        length: response.content_length(),
        bytes: response
            .bytes_stream()
            .map_err(|err| TransferError::transient(format!("the answer broke off: {err}")))
            .boxed(),
    }
}

/// Adds MLflow's error code and message to a refusal, e.g. `RESOURCE_DOES_NOT_EXIST`.
async fn with_mlflow_error(err: TransferError, response: reqwest::Response) -> TransferError {
    let Ok(body) = answer(response)
        .read_limited(ERROR_LIMIT, METADATA_TIMEOUT, &"the error answer")
        .await
    else {
        return err;
    };
    let Ok(body) = serde_json::from_slice::<ErrorBody>(&body) else {
        return err;
    };
    let detail = format!("{}: {}", body.error_code, body.message);
    match err {
        TransferError::Fatal(message) => TransferError::Fatal(format!("{message}: {detail}")),
        TransferError::Transient {
            message,
            retry_after,
        } => TransferError::Transient {
            message: format!("{message}: {detail}"),
            retry_after,
        },
        typed => typed,
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .is_ok_and(|value| matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Basic auth from MLflow's variables (or the tracking URL's userinfo), else a bearer token.
fn auth_headers(tracking: &Url) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    let basic = match (
        non_empty_env("MLFLOW_TRACKING_USERNAME"),
        non_empty_env("MLFLOW_TRACKING_PASSWORD"),
    ) {
        (Some(user), Some(password)) => Some((user, password)),
        _ if !tracking.username().is_empty() => Some((
            tracking.username().to_owned(),
            tracking.password().unwrap_or_default().to_owned(),
        )),
        _ => None,
    };
    let value = match (basic, non_empty_env("MLFLOW_TRACKING_TOKEN")) {
        (Some((user, password)), _) => {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {encoded}"))
        }
        (None, Some(token)) => Some(format!("Bearer {token}")),
        (None, None) => None,
    };
    if let Some(value) = value {
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "credentials contain invalid characters".to_owned())?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

/// The parts of an `MLmodel` file pinserve uses.
#[derive(Debug, Default, Deserialize)]
pub struct MlModel {
    #[serde(default)]
    flavors: Flavors,
    #[serde(default)]
    signature: Option<RawSignature>,
    #[serde(default)]
    saved_input_example_info: Option<example::ExampleInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct Flavors {
    #[serde(default)]
    onnx: Option<OnnxFlavor>,
}

#[derive(Debug, Deserialize)]
struct OnnxFlavor {
    data: String,
}

/// MLflow stores each half of the signature as a JSON string inside the YAML.
#[derive(Debug, Deserialize)]
struct RawSignature {
    #[serde(default)]
    inputs: Option<String>,
    #[serde(default)]
    outputs: Option<String>,
}

impl MlModel {
    pub fn parse(text: &str) -> Result<MlModel, String> {
        serde_saphyr::from_str(text).map_err(|err| format!("cannot read MLmodel: {err}"))
    }

    /// The file the `onnx` flavor names, if the model has that flavor.
    pub fn onnx_data(&self) -> Option<&str> {
        self.flavors
            .onnx
            .as_ref()
            .map(|flavor| flavor.data.as_str())
    }

    /// Where the version's input example is, if it was logged with one.
    pub(crate) fn input_example_info(&self) -> Option<&example::ExampleInfo> {
        self.saved_input_example_info.as_ref()
    }

    /// The signature as JSON: `{"inputs": [...], "outputs": [...]}`.
    pub fn signature(&self) -> Result<Option<Value>, String> {
        let Some(raw) = &self.signature else {
            return Ok(None);
        };
        let parse = |half: &Option<String>| -> Result<Value, String> {
            half.as_deref()
                .map_or(Ok(Value::Null), serde_json::from_str)
                .map_err(|err| format!("the MLmodel signature is not valid JSON: {err}"))
        };
        Ok(Some(
            serde_json::json!({ "inputs": parse(&raw.inputs)?, "outputs": parse(&raw.outputs)? }),
        ))
    }
}

/// Checks that an MLflow signature (`{"inputs": [...], "outputs": [...]}`) agrees with the
/// graph: the same tensor names and, for tensor-based signatures, the same element types and
/// compatible shapes. A disagreement means the registry describes some other model.
pub fn check_signature(mlflow: &Value, graph: &Signature) -> Result<(), String> {
    check_half(&mlflow["inputs"], &graph.inputs, "input")?;
    check_half(&mlflow["outputs"], &graph.outputs, "output")
}

fn check_half(specs: &Value, graph: &[TensorSpec], role: &str) -> Result<(), String> {
    let Some(specs) = specs.as_array() else {
        return Ok(());
    };
    // What MLflow writes when it cannot infer a schema, as for a ZipMap's list of dicts.
    if specs
        .iter()
        .all(|spec| spec["type"] == "any" && spec.get("name").is_none())
    {
        return Ok(());
    }
    let names: Vec<&str> = graph.iter().map(|spec| spec.name.as_str()).collect();
    let mismatch =
        |detail: String| format!("the MLflow signature disagrees with the ONNX graph: {detail}");
    let all_named = specs.iter().all(|spec| spec["name"].is_string());
    if all_named {
        let mut declared: Vec<&str> = specs
            .iter()
            .filter_map(|spec| spec["name"].as_str())
            .collect();
        let mut actual = names.clone();
        declared.sort_unstable();
        actual.sort_unstable();
        if declared != actual {
            return Err(mismatch(format!(
                "its {role}s are {declared:?}, the graph's are {actual:?}"
            )));
        }
    } else if specs.len() != graph.len() {
        return Err(mismatch(format!(
            "it has {} {role}s, the graph has {}",
            specs.len(),
            graph.len()
        )));
    }
    for (position, spec) in specs.iter().enumerate() {
        let tensor = match spec["name"].as_str() {
            Some(name) if all_named => graph.iter().find(|t| t.name == name),
            _ => graph.get(position),
        };
        let (Some(tensor), Some(tensor_spec)) = (tensor, spec.get("tensor-spec")) else {
            continue;
        };
        // The graph's ZipMap is served as a matrix; MLflow describes the maps, if anything.
        if tensor.class_labels.is_some() {
            continue;
        }
        check_tensor(tensor_spec, tensor)
            .map_err(|detail| mismatch(format!("{role} '{}': {detail}", tensor.name)))?;
    }
    Ok(())
}

fn check_tensor(spec: &Value, tensor: &TensorSpec) -> Result<(), String> {
    if let Some(dtype) = spec["dtype"].as_str()
        && let Some(datatype) = numpy_datatype(dtype)
        && datatype != tensor.datatype
    {
        return Err(format!("dtype {dtype} against {}", tensor.datatype));
    }
    let Some(shape) = spec["shape"].as_array() else {
        return Ok(());
    };
    let graph_shape = tensor.protocol_shape();
    let declared: Vec<i64> = shape.iter().filter_map(Value::as_i64).collect();
    let compatible = declared.len() == graph_shape.len()
        && declared
            .iter()
            .zip(&graph_shape)
            .all(|(&a, &b)| a < 0 || b < 0 || a == b);
    if compatible {
        Ok(())
    } else {
        Err(format!("shape {declared:?} against {graph_shape:?}"))
    }
}

/// NumPy dtype names as MLflow writes them in tensor specs.
fn numpy_datatype(dtype: &str) -> Option<DataType> {
    Some(match dtype {
        "bool" => DataType::Bool,
        "uint8" => DataType::Uint8,
        "uint16" => DataType::Uint16,
        "uint32" => DataType::Uint32,
        "uint64" => DataType::Uint64,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float16" => DataType::Fp16,
        "float32" => DataType::Fp32,
        "float64" => DataType::Fp64,
        "str" | "object" | "bytes" => DataType::Bytes,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClassLabels, DataType, Dim, signature::examples::two_inputs};

    #[test]
    fn signatures_that_match_the_graph_pass() {
        let signature = serde_json::json!({
            "inputs": [
                {"type": "tensor", "name": "tenure", "tensor-spec": {"dtype": "float32", "shape": [-1, 1]}},
                {"type": "tensor", "name": "plan", "tensor-spec": {"dtype": "str", "shape": [-1, 1]}},
            ],
            "outputs": [
                {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
                {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}},
            ],
        });
        check_signature(&signature, &two_inputs()).unwrap();
        let columns = serde_json::json!({"inputs": [{"type": "string", "name": "plan"}, {"type": "double", "name": "tenure"}], "outputs": null});
        check_signature(&columns, &two_inputs()).unwrap();
    }

    #[test]
    fn signatures_of_another_model_are_refused() {
        let wrong_names =
            serde_json::json!({"inputs": [{"type": "double", "name": "age"}], "outputs": null});
        let err = check_signature(&wrong_names, &two_inputs()).unwrap_err();
        assert!(err.contains("[\"age\"]"), "{err}");
        let wrong_dtype = serde_json::json!({"inputs": [
            {"type": "tensor", "name": "tenure", "tensor-spec": {"dtype": "float64", "shape": [-1, 1]}},
            {"type": "tensor", "name": "plan", "tensor-spec": {"dtype": "str", "shape": [-1, 1]}},
        ]});
        assert!(
            check_signature(&wrong_dtype, &two_inputs())
                .unwrap_err()
                .contains("dtype float64 against FP32")
        );
        let wrong_shape = serde_json::json!({"outputs": [
            {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
            {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}},
        ]});
        assert!(
            check_signature(&wrong_shape, &two_inputs())
                .unwrap_err()
                .contains("shape [-1, 3] against [-1, 2]")
        );
    }

    #[test]
    fn a_zipmap_classifier_passes_with_what_mlflow_infers_for_it() {
        let zipmap = Signature {
            inputs: two_inputs().inputs,
            outputs: vec![
                TensorSpec::new("output_label", DataType::Int64, vec![Dim::Dynamic(None)]),
                TensorSpec::zipmap("output_probability", ClassLabels::Int64(vec![0, 1])),
            ],
        };
        let uninferred = serde_json::json!({"outputs": [{"type": "any", "required": true}]});
        check_signature(&uninferred, &zipmap).unwrap();
        let maps = serde_json::json!({"outputs": [
            {"type": "tensor", "name": "output_label", "tensor-spec": {"dtype": "int64", "shape": [-1]}},
            {"type": "tensor", "name": "output_probability", "tensor-spec": {"dtype": "object", "shape": [-1]}},
        ]});
        check_signature(&maps, &zipmap).unwrap();
        let too_few = serde_json::json!({"outputs": [{"type": "long"}]});
        assert!(check_signature(&too_few, &zipmap).is_err());
    }

    const MLMODEL: &str = r#"artifact_path: model
flavors:
  onnx:
    code: null
    data: model.onnx
    onnx_version: 1.23.2
    providers:
    - CUDAExecutionProvider
    - CPUExecutionProvider
  python_function:
    data: model.onnx
    env:
      conda: conda.yaml
    loader_module: mlflow.onnx
    python_version: 3.11.7
mlflow_version: 3.18.0
model_id: m-0123
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 32]}, "name": "features"}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1]}}]'
  params: null
"#;

    #[test]
    fn reads_the_onnx_flavor_and_the_signature() {
        let mlmodel = MlModel::parse(MLMODEL).unwrap();
        assert_eq!(mlmodel.onnx_data(), Some("model.onnx"));
        let signature = mlmodel.signature().unwrap().unwrap();
        assert_eq!(signature["inputs"][0]["name"], "features");
        assert_eq!(
            signature["outputs"][0]["tensor-spec"]["shape"],
            serde_json::json!([-1, 1])
        );
    }

    #[test]
    fn a_model_without_the_onnx_flavor_has_no_data() {
        let mlmodel =
            MlModel::parse("flavors:\n  sklearn:\n    pickled_model: model.pkl\n").unwrap();
        assert_eq!(mlmodel.onnx_data(), None);
        assert!(mlmodel.signature().unwrap().is_none());
    }

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

    #[test]
    fn basic_auth_wins_over_a_token_and_userinfo_counts_as_basic() {
        let tracking = Url::parse("https://alice:pw@mlflow.example").unwrap();
        let headers = auth_headers(&tracking).unwrap();
        let value = headers[AUTHORIZATION].to_str().unwrap();
        assert_eq!(
            value,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:pw")
            )
        );
        assert!(headers[AUTHORIZATION].is_sensitive());
    }
}
