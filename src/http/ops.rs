//! Endpoints for Kubernetes and Prometheus rather than for clients: health, liveness and
//! metrics. They are not counted in the request metrics, so probes answering 503 while the
//! model loads never count as errors against a canary.

use std::sync::Arc;

use axum::{
    extract::{OriginalUri, State},
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    JsonLine,
    error::ApiError,
    state::{AppState, Phase, Snapshot},
};

/// `GET /health`: 200 only once the model has loaded and answered its warm-up inference.
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let now = state.snapshot();
    let labels = now.labels();
    let mut body = json!({
        "status": now.phase.name(),
        "model": labels.model,
        "version": labels.version,
    });
    match (&now.phase, &now.model) {
        (Phase::Ready, Some(model)) => {
            body["device"] = json!(model.device.to_string());
            body["load_seconds"] = json!(model.load_seconds);
        }
        (Phase::Failed(error), _) => body["error"] = json!(error),
        _ => {}
    }
    (readiness_status(&now), JsonLine(body)).into_response()
}

/// 200 when ready, else 503: what every probe route answers.
fn readiness_status(now: &Snapshot) -> StatusCode {
    match now.is_ready() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `GET /livez`: the process runs and its HTTP stack answers.
pub(crate) async fn livez() -> Response {
    JsonLine(json!({ "status": "alive" })).into_response()
}

/// `GET /v2/health/live`.
pub(crate) async fn v2_live() -> Response {
    JsonLine(json!({ "live": true })).into_response()
}

/// `GET /v2/health/ready`: follows the same phase as `/health`.
pub(crate) async fn v2_ready(State(state): State<Arc<AppState>>) -> Response {
    let now = state.snapshot();
    let ready = now.is_ready();
    (readiness_status(&now), JsonLine(json!({ "ready": ready }))).into_response()
}

/// `GET /ping`: MLflow's (and SageMaker's) health check, answered as `mlflow models serve`
/// answers it once its model has loaded; 503 until then, following the same phase as `/health`.
pub(crate) async fn ping(State(state): State<Arc<AppState>>) -> Response {
    let status = readiness_status(&state.snapshot());
    (status, [(header::CONTENT_TYPE, "application/json")], "\n").into_response()
}

/// `GET /version`: pinserve's version, bare, as MLflow's `/version` answers with its own.
pub(crate) async fn version() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        env!("CARGO_PKG_VERSION"),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text exposition format.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.as_ref().map_or_else(String::new, |handle| {
        handle.run_upkeep();
        handle.render()
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

pub(crate) async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
