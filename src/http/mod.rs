//! HTTP: the route table and thin handlers (decode, submit to the batcher, encode). The only
//! status-code table is in [`error`].

pub(crate) mod body;
pub(crate) mod error;
mod inflate;
pub(crate) mod invocations;
pub(crate) mod limits;
pub(crate) mod observe;
pub(crate) mod ops;
pub(crate) mod predict;
pub(crate) mod server;
pub(crate) mod state;
pub(crate) mod v2;

use std::sync::Arc;

use axum::{
    Router,
    http::header,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};

pub(crate) use self::state::Snapshot;
pub use self::state::{AppState, ServingModel};

/// The v1 route: matchit cannot split `{name}:predict`, so the handler does.
pub(crate) const V1_PREDICT_ROUTE: &str = "/v1/models/{model_and_verb}";

/// The whole HTTP surface. API routes are measured; probe and scrape routes (readiness of the
/// server or the model, liveness, metrics, MLflow's `/ping` and `/version`) are not, so probes
/// answered 503 while a model loads never count as errors against a canary. Probe routes are also the only ones answered on
/// connections beyond `--max-connections` (see [`server::PROBE_RESERVE`]).
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v2", get(v2::server_metadata))
        .route("/v2/models/{name}", get(v2::model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(v2::model_metadata),
        )
        .route("/v2/models/stats", get(v2::server_stats))
        .route("/v2/models/{name}/stats", get(v2::model_stats))
        .route(
            "/v2/models/{name}/versions/{version}/stats",
            get(v2::model_stats),
        )
        .route("/v2/models/{name}/infer", post(v2::infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(v2::infer),
        )
        .route("/predict", post(predict::predict))
        .route(V1_PREDICT_ROUTE, post(predict::predict_v1))
        .route("/invocations", post(invocations::invocations))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            limits::limit_body_time,
        ))
        .route_layer(middleware::from_fn(limits::refuse_over_capacity))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            observe::record,
        ));
    let operations = Router::new()
        .route("/health", get(ops::health))
        .route("/livez", get(ops::livez))
        .route("/v2/health/live", get(ops::v2_live))
        .route("/v2/health/ready", get(ops::v2_ready))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(v2::model_ready),
        )
        .route("/metrics", get(ops::metrics))
        .route("/ping", get(ops::ping))
        .route("/version", get(ops::version));
    api.merge(operations)
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(state)
}

/// A response whose JSON body is already serialised; like every JSON body pinserve sends, it
/// ends with a newline, so `curl` output does not run into the shell prompt.
fn json_response(mut body: Vec<u8>) -> Response {
    body.push(b'\n');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `axum::Json`, with the body ending in a newline as [`json_response`]'s do.
pub(crate) struct JsonLine<T>(pub(crate) T);

impl<T: serde::Serialize> IntoResponse for JsonLine<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => json_response(body),
            Err(err) => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot serialise the response: {err}\n"),
            )
                .into_response(),
        }
    }
}

/// Decoding or encoding a body this large (in bytes) takes long enough to hold up the runtime's
/// few threads, and with them probes and small requests.
const OFF_RUNTIME_BYTES: usize = 256 << 10;

/// Runs CPU-bound work costing about `cost` bytes of body inline when small, or on the blocking
/// pool when large, so `/health` stays fast while big tensors are parsed.
pub(crate) async fn off_runtime<T: Send + 'static>(
    cost: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    if cost < OFF_RUNTIME_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
}
