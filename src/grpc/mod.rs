//! gRPC: KServe V2's `GRPCInferenceService` ([`service`]) and the standard `grpc.health.v1`
//! service ([`health`]), on a listener of their own (`--grpc-listen`). They are served by the
//! same connection handling as HTTP ([`crate::http::server`]): the same limits, and the same
//! shutdown stages, so in-flight calls finish and new ones are refused once the listener closes.
//! Calls go through the same protocol checks, batcher, error table and request metrics.

mod health;
mod service;

use std::sync::Arc;

use axum::Router;
use tonic::service::Routes;

use crate::{
    http::AppState, protocol::grpc::pb::grpc_inference_service_server::GrpcInferenceServiceServer,
};

pub(crate) use self::health::follow_phase;

/// The gRPC services as one router for [`crate::http::server::serve`]. Messages up to
/// `--max-body-bytes` are accepted; larger ones are refused with `OUT_OF_RANGE` by tonic's codec
/// before they are buffered whole.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let max_message_bytes = state.max_body_bytes;
    let inference = GrpcInferenceServiceServer::new(service::Inference::new(Arc::clone(&state)))
        .max_decoding_message_size(max_message_bytes);
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(follow_phase(state, reporter));
    Routes::new(inference)
        .add_service(health)
        .into_axum_router()
}
