//! `/predict` and `/v1/models/{name}:predict` handlers.

use std::sync::Arc;

use axum::{
    extract::{OriginalUri, Path, State},
    http::Method,
    response::Response,
};

use super::{
    body::RequestBody,
    error::ApiError,
    json_response, off_runtime,
    state::{AppState, Snapshot},
};
use crate::protocol::predict::{self, Outputs};

pub(crate) async fn predict(
    State(state): State<Arc<AppState>>,
    body: RequestBody,
) -> Result<Response, ApiError> {
    run(state.snapshot(), body).await
}

/// The route captures `{name}:predict` as one segment; anything else there is not a route.
pub(crate) async fn predict_v1(
    State(state): State<Arc<AppState>>,
    Path(segment): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    body: RequestBody,
) -> Result<Response, ApiError> {
    let name = segment
        .strip_suffix(":predict")
        .ok_or_else(|| ApiError::RouteNotFound {
            method: method.to_string(),
            path: uri.path().to_owned(),
        })?;
    let now = state.snapshot();
    now.check_model(name, None)?;
    run(now, body).await
}

async fn run(now: Snapshot, body: RequestBody) -> Result<Response, ApiError> {
    // The share of the body budget is held until the answer is ready.
    let RequestBody {
        bytes: body,
        share: _share,
    } = body;
    let model = now.model()?;
    let signature = model.batcher.signature();
    let request = {
        let signature = Arc::clone(signature);
        off_runtime(body.len(), move || {
            predict::decode_request(&body, &signature)
        })
        .await?
    };
    let all_outputs = (0..signature.outputs.len()).collect();
    let tensors = model.batcher.infer(request.inputs, all_outputs).await?;
    let outputs = Outputs::all(signature, &tensors);
    Ok(json_response(predict::encode_response(
        request.form,
        &outputs,
    )?))
}
