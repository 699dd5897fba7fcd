//! The `GRPCInferenceService` handlers: as thin as the HTTP ones (check, decode, submit to the
//! batcher, encode), and measured the same way, under the route `grpc/<Method>` with the status
//! an HTTP answer would have had, so the canary's error-rate and latency queries cover gRPC too.

use std::{future::Future, sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    http::{
        AppState, Snapshot, error::ApiError, observe::Observation, off_runtime,
        server::OverCapacity,
    },
    protocol::{
        grpc::{
            self,
            pb::{
                ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
                ModelReadyRequest, ModelReadyResponse, ModelStatisticsRequest,
                ModelStatisticsResponse, ServerLiveRequest, ServerLiveResponse,
                ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
                ServerReadyResponse, grpc_inference_service_server::GrpcInferenceService,
            },
        },
        v2::{ModelMetadata, ServerMetadata},
    },
};

pub(crate) struct Inference {
    state: Arc<AppState>,
}

impl Inference {
    pub(crate) fn new(state: Arc<AppState>) -> Inference {
        Inference { state }
    }

    /// Runs an API call: refused on connections admitted beyond `--max-connections` (as HTTP
    /// API requests are), cut off at the client's `grpc-timeout`, and recorded in the request
    /// metrics under `route`.
    async fn observed<T, R>(
        &self,
        route: &'static str,
        request: &Request<R>,
        call: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Response<T>, Status> {
        let mut observation = Observation::start(&self.state, route);
        let span = tracing::debug_span!("request", route);
        let result = async {
            if let Some(OverCapacity { limit }) = request.extensions().get() {
                return Err(ApiError::ConnectionLimit { limit: *limit });
            }
            match deadline(request) {
                Some(limit) => tokio::time::timeout(limit, call)
                    .await
                    .unwrap_or(Err(ApiError::Deadline { limit })),
                None => call.await,
            }
        }
        .instrument(span)
        .await;
        observation.status = match &result {
            Ok(_) => 200,
            Err(err) => err.status().as_u16(),
        };
        result.map(Response::new).map_err(Status::from)
    }

    /// The server now, checked to serve the model a call names: an empty version means any
    /// version, as on the REST routes without `/versions/{v}`.
    fn addressed(&self, name: &str, version: &str) -> Result<Snapshot, ApiError> {
        let now = self.state.snapshot();
        now.check_model(name, (!version.is_empty()).then_some(version))?;
        Ok(now)
    }

    async fn infer(&self, request: ModelInferRequest) -> Result<ModelInferResponse, ApiError> {
        let now = self.addressed(&request.model_name, &request.model_version)?;
        let model = now.model()?;
        let signature = Arc::clone(model.batcher.signature());
        let cost = request.raw_input_contents.iter().map(Vec::len).sum();
        let mut request = {
            let signature = Arc::clone(&signature);
            off_runtime(cost, move || grpc::decode_request(request, &signature)).await?
        };
        let inputs = std::mem::take(&mut request.inputs);
        let outputs = model.batcher.infer(inputs, request.outputs.clone()).await?;
        let labels = now.labels();
        Ok(grpc::encode_response(
            (&labels.model, &labels.version),
            &request,
            &signature,
            &outputs,
        ))
    }

    fn metadata(&self, request: &ModelMetadataRequest) -> Result<ModelMetadataResponse, ApiError> {
        let now = self.addressed(&request.name, &request.version)?;
        let model = now.model()?;
        let labels = now.labels();
        let metadata =
            ModelMetadata::new(&labels.model, &labels.version, model.batcher.signature());
        Ok(metadata.into())
    }

    fn statistics(
        &self,
        request: &ModelStatisticsRequest,
    ) -> Result<ModelStatisticsResponse, ApiError> {
        let now = match request.name.as_str() {
            "" => self.state.snapshot(),
            name => self.addressed(name, &request.version)?,
        };
        let model = now.model()?;
        let labels = now.labels();
        let report = model.batcher.stats().report(&labels.model, &labels.version);
        Ok(ModelStatisticsResponse {
            model_stats: vec![report.into()],
        })
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.state.snapshot().is_ready();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.get_ref();
        let ready = self.addressed(&request.name, &request.version)?.is_ready();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let metadata = async { Ok(ServerMetadata::current().into()) };
        self.observed("grpc/ServerMetadata", &request, metadata)
            .await
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let metadata = async { self.metadata(request.get_ref()) };
        self.observed("grpc/ModelMetadata", &request, metadata)
            .await
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let head = Request::from_parts(metadata, extensions, ());
        self.observed("grpc/ModelInfer", &head, self.infer(message))
            .await
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let statistics = async { self.statistics(request.get_ref()) };
        self.observed("grpc/ModelStatistics", &request, statistics)
            .await
    }
}

/// The client's deadline from the `grpc-timeout` header: up to eight digits and a unit (`H`,
/// `M`, `S`, `m`, `u` or `n`). A malformed value is ignored, as no deadline.
fn deadline<R>(request: &Request<R>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_timeout(value)
}

fn parse_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ModelLabels;

    fn service() -> Inference {
        let labels = ModelLabels {
            model: "m".into(),
            version: "1".into(),
        };
        Inference::new(Arc::new(AppState::new(labels, 1024, None)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_clients_deadline_ends_with_deadline_exceeded() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "250m".parse().unwrap());
        let never = std::future::pending::<Result<(), ApiError>>();
        let status = service()
            .observed("grpc/ModelInfer", &request, never)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "the request's deadline of 0.25s passed before the answer was ready"
        );
    }

    #[tokio::test]
    async fn calls_on_connections_beyond_the_limit_are_unavailable() {
        let mut request = Request::new(());
        request.extensions_mut().insert(OverCapacity { limit: 3 });
        let status = service()
            .observed("grpc/ModelInfer", &request, async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("limit of 3 connections"));
    }

    #[test]
    fn grpc_timeouts_are_read_in_their_units() {
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for malformed in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(malformed), None, "{malformed}");
        }
    }
}
