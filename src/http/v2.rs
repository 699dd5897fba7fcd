//! Open Inference Protocol v2 handlers: decode, submit to the batcher, encode.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    body::RequestBody,
    error::ApiError,
    json_response,
    state::{AppState, Phase},
};
use crate::protocol::v2::{self, ModelMetadata, ServerMetadata};

/// `{name}` and, on the versioned routes, `{version}`.
#[derive(Deserialize)]
pub struct ModelPath {
    name: String,
    version: Option<String>,
}

pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata::current())
}

pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Response, ApiError> {
    state.check_model(&path.name, path.version.as_deref())?;
    let model = state.serving_model()?;
    let labels = state.labels();
    let metadata = ModelMetadata::new(&labels.model, &labels.version, model.batcher.signature())
        .with_mlflow_signature(model.mlflow_signature.as_ref());
    Ok(Json(metadata).into_response())
}

pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
) -> Result<Response, ApiError> {
    state.check_model(&path.name, path.version.as_deref())?;
    let ready = state.phase() == Phase::Ready;
    let labels = state.labels();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "name": labels.model, "version": labels.version, "ready": ready });
    Ok((status, Json(body)).into_response())
}

pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(path): Path<ModelPath>,
    RequestBody(body): RequestBody,
) -> Result<Response, ApiError> {
    state.check_model(&path.name, path.version.as_deref())?;
    let model = state.serving_model()?;
    let signature = model.batcher.signature();
    let request = v2::decode_request(&body, signature)?;
    let outputs = model
        .batcher
        .infer(request.inputs, request.outputs.clone())
        .await?;
    let labels = state.labels();
    let body = v2::encode_response(
        (&labels.model, &labels.version),
        request.id.as_deref(),
        signature,
        &request.outputs,
        &outputs,
    );
    Ok(json_response(body))
}
