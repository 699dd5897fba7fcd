//! Open Inference Protocol v2 handlers: decode, submit to the batcher, encode.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    JsonLine,
    body::RequestBody,
    error::ApiError,
    json_response, off_runtime,
    state::{AppState, Snapshot},
};
use crate::protocol::{
    RequestError,
    v2::{self, ModelMetadata, ServerMetadata},
};

/// `{name}` and, on the versioned routes, `{version}`.
#[derive(Deserialize)]
pub(crate) struct ModelPath {
    name: String,
    version: Option<String>,
}

/// The server now, checked to serve the model the path names.
fn addressed(state: &AppState, path: &ModelPath) -> Result<Snapshot, ApiError> {
    let now = state.snapshot();
    now.check_model(&path.name, path.version.as_deref())?;
    Ok(now)
}

pub(crate) async fn server_metadata() -> Response {
    JsonLine(ServerMetadata::current()).into_response()
}

pub(crate) async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Response, ApiError> {
    let now = addressed(&state, &path)?;
    let model = now.model()?;
    let labels = now.labels();
    let metadata = ModelMetadata::new(&labels.model, &labels.version, model.batcher.signature())
        .with_mlflow_signature(model.mlflow_signature.as_ref())
        .with_model_signature(model.signed.as_ref());
    Ok(JsonLine(metadata).into_response())
}

/// The statistics extension (Triton's format): the served model's figures.
pub(crate) async fn model_stats(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Response, ApiError> {
    stats(&addressed(&state, &path)?)
}

/// The statistics extension for every model: pinserve serves one.
pub(crate) async fn server_stats(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    stats(&state.snapshot())
}

fn stats(now: &Snapshot) -> Result<Response, ApiError> {
    let model = now.model()?;
    let labels = now.labels();
    let report = model.batcher.stats().report(&labels.model, &labels.version);
    Ok(JsonLine(json!({ "model_stats": [report] })).into_response())
}

pub(crate) async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Response, ApiError> {
    let now = addressed(&state, &path)?;
    let ready = now.is_ready();
    let labels = now.labels();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "name": labels.model, "version": labels.version, "ready": ready });
    Ok((status, JsonLine(body)).into_response())
}

pub(crate) async fn infer(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    body: RequestBody,
) -> Result<Response, ApiError> {
    // The share of the body budget is held until the answer is ready.
    let RequestBody {
        bytes: body,
        share: _share,
    } = body;
    let now = addressed(&state, &path)?;
    let model = now.model()?;
    let json_length = inference_header_length(&headers)?;
    let signature = Arc::clone(model.batcher.signature());
    let mut request = {
        let signature = Arc::clone(&signature);
        off_runtime(body.len(), move || {
            v2::decode_request(&body, json_length, &signature)
        })
        .await?
    };
    let inputs = std::mem::take(&mut request.inputs);
    let outputs = model.batcher.infer(inputs, request.outputs.clone()).await?;
    // The identity travels to the blocking pool with the work.
    let labels = Arc::clone(&now.identity);
    let cost = outputs
        .iter()
        .map(|tensor| tensor.data().len())
        .sum::<usize>()
        * 8;
    let encoded = off_runtime(cost, move || {
        v2::encode_response(
            (&labels.labels.model, &labels.labels.version),
            &request,
            &signature,
            &outputs,
        )
    })
    .await;
    Ok(match encoded.json_length {
        None => json_response(encoded.body),
        Some(length) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    HeaderName::from_static(v2::INFERENCE_HEADER_CONTENT_LENGTH),
                    HeaderValue::from(length),
                ),
            ],
            encoded.body,
        )
            .into_response(),
    })
}

/// The binary tensor data extension's header, when the request has one.
fn inference_header_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(v2::INFERENCE_HEADER_CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::Request(RequestError::Malformed(format!(
                "the {} header must be a byte count, not {value:?}",
                v2::INFERENCE_HEADER_CONTENT_LENGTH
            )))
        })
}
