//! `POST /invocations`: MLflow's scoring protocol (`mlflow models serve`), decoded by
//! [`crate::protocol::mlflow`], submitted to the same batcher as every other route, and
//! answered (errors too) in the form MLflow's clients read.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::Response,
};

use super::{
    body::RequestBody,
    error::{ApiError, MlflowError},
    json_response, off_runtime,
    state::AppState,
};
use crate::{
    model::Signature,
    protocol::{
        RequestError,
        mlflow::{self, ScoringRequest},
        predict::Outputs,
    },
};

/// The bodies `/invocations` takes.
#[derive(Debug, Clone, Copy)]
enum Content {
    Json,
    Csv,
}

pub(crate) async fn invocations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<RequestBody, ApiError>,
) -> Result<Response, MlflowError> {
    let content = content_of(&headers)?;
    // The share of the body budget is held until the answer is ready.
    let RequestBody {
        bytes: body,
        share: _share,
    } = body?;
    let now = state.snapshot();
    let model = now.model()?;
    let signature = model.batcher.signature();
    let request = {
        let signature = Arc::clone(signature);
        off_runtime(body.len(), move || decode(content, &body, &signature)).await?
    };
    if request.ignored_params {
        tracing::debug!("params ignored: an ONNX model has no params schema (as in MLflow)");
    }
    let all_outputs = (0..signature.outputs.len()).collect();
    let tensors = model.batcher.infer(request.inputs, all_outputs).await?;
    let outputs = Outputs::all(signature, &tensors);
    let form = mlflow::answer_form(request.form, model.mlflow_signature.as_ref());
    Ok(json_response(mlflow::encode_response(form, &outputs)?))
}

fn decode(
    content: Content,
    body: &[u8],
    signature: &Signature,
) -> Result<ScoringRequest, RequestError> {
    match content {
        Content::Json => mlflow::decode_json(body, signature),
        Content::Csv => mlflow::decode_csv(body, signature),
    }
}

/// The body's type from `Content-Type`, as MLflow reads it: a media type and at most a UTF-8
/// `charset` parameter.
fn content_of(headers: &HeaderMap) -> Result<Content, ApiError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let refused = || ApiError::UnsupportedContentType {
        content_type: given.to_owned(),
    };
    let mut parts = given.split(';').map(str::trim);
    let content = match parts.next().map(str::to_ascii_lowercase).as_deref() {
        Some("application/json") => Content::Json,
        Some("text/csv") => Content::Csv,
        _ => return Err(refused()),
    };
    for parameter in parts.filter(|part| !part.is_empty()) {
        match parameter.split_once('=') {
            Some((name, value))
                if name.trim().eq_ignore_ascii_case("charset")
                    && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8") => {}
            _ => return Err(refused()),
        }
    }
    Ok(content)
}
