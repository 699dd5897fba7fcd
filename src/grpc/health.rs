//! `grpc.health.v1.Health`, following the serving phase, so Kubernetes `grpc:` probes see what
//! `/health` says: SERVING only when ready (not while loading, failed or draining).

use std::sync::Arc;

use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{http::AppState, protocol::grpc::pb::grpc_inference_service_server::SERVICE_NAME};

/// Sets the status of the server as a whole (the empty service name) and of the inference
/// service on every phase change, until the state is gone.
pub(crate) async fn follow_phase(state: Arc<AppState>, reporter: HealthReporter) {
    let mut changes = state.watch();
    drop(state);
    loop {
        let status = match changes.borrow_and_update().is_ready() {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        for service in ["", SERVICE_NAME] {
            reporter.set_service_status(service, status).await;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
