//! Request metrics and spans for the API routes. The route label is the route template, never
//! the raw path, so a scan of random URLs cannot explode the number of series.

use std::sync::Arc;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use tokio::time::Instant;
use tracing::Instrument;

use super::state::AppState;

/// The status recorded for requests whose client went away before the answer (nginx's 499),
/// so abandoned requests still show in the latency and error series.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The v1 route matches `{name}:predict` as one path segment; its label spells that out.
fn route_label(matched: Option<&str>) -> &str {
    match matched {
        Some(super::V1_PREDICT_ROUTE) => "/v1/models/{name}:predict",
        Some(route) => route,
        None => "unmatched",
    }
}

/// Records the request when dropped, so an abandoned request is counted too. The gRPC service
/// records its calls with it as well, under the status an HTTP answer would have had.
pub(crate) struct Observation<'a> {
    state: &'a AppState,
    route: &'a str,
    started: Instant,
    pub(crate) status: u16,
}

impl<'a> Observation<'a> {
    /// Starts timing a request; until `status` is set, it counts as abandoned.
    pub(crate) fn start(state: &'a AppState, route: &'a str) -> Observation<'a> {
        Observation {
            state,
            route,
            started: Instant::now(),
            status: CLIENT_CLOSED_REQUEST,
        }
    }
}

impl Drop for Observation<'_> {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.state.record_request(self.route, self.status, seconds);
    }
}

pub(crate) async fn record(
    State(state): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_label(matched.as_ref().map(MatchedPath::as_str));
    let span = tracing::debug_span!("request", method = %request.method(), route);
    let mut observation = Observation::start(&state, route);
    let response = async {
        let response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span)
    .await;
    observation.status = response.status().as_u16();
    response
}
