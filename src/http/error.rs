//! The one table from errors to HTTP statuses and gRPC status codes. Every HTTP error answer is
//! JSON of the protocol's form, `{"error": "..."}` (MLflow's `{"error_code": "...", "message":
//! "..."}` on `/invocations`, see [`MlflowError`]), every gRPC one a status whose message is the
//! same text, and it names the problem; unexpected errors are logged here, once, where they
//! become a response.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::JsonLine;
use crate::{
    batch::BatchError,
    model::{InputError, ModelError},
    protocol::RequestError,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// `drained`: the rest of the body was read, so the connection can carry another request.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize, drained: bool },
    /// `drained` as for [`ApiError::PayloadTooLarge`].
    #[error(
        "the server already holds as many request bodies as --max-inflight-body-bytes ({budget} bytes) allows, and this one needs {needed} more bytes; retry later"
    )]
    BodyBudgetSpent {
        needed: usize,
        budget: usize,
        drained: bool,
    },
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error(
        "Content-Encoding '{encoding}' is not supported: send the body as gzip, deflate or identity"
    )]
    UnsupportedEncoding { encoding: String },
    #[error(
        "Content-Type '{content_type}' is not supported: send application/json or text/csv (UTF-8)"
    )]
    UnsupportedContentType { content_type: String },
    #[error(
        "the request body did not arrive within {}s (--body-read-timeout)",
        .limit.as_secs_f64()
    )]
    BodyTimeout { limit: std::time::Duration },
    #[error(
        "the server is at its limit of {limit} connections; only probes are answered on this one"
    )]
    ConnectionLimit { limit: usize },
    #[error("{}; this server serves {served}", describe_model(name, version.as_deref()))]
    ModelNotFound {
        name: String,
        version: Option<String>,
        served: String,
    },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("model '{model}' version '{version}' is not ready: {phase}")]
    NotReady {
        model: String,
        version: String,
        phase: &'static str,
    },
    /// The client's own deadline (gRPC's `grpc-timeout`) passed before the answer was ready.
    #[error("the request's deadline of {}s passed before the answer was ready", .limit.as_secs_f64())]
    Deadline { limit: std::time::Duration },
    #[error(transparent)]
    Batch(#[from] BatchError),
}

fn describe_model(name: &str, version: Option<&str>) -> String {
    match version {
        Some(version) => format!("unknown model '{name}' version '{version}'"),
        None => format!("unknown model '{name}'"),
    }
}

impl From<InputError> for ApiError {
    fn from(err: InputError) -> Self {
        ApiError::Request(RequestError::Input(err))
    }
}

/// Seconds a client should wait before retrying a request refused for load or loading.
const RETRY_AFTER_SECONDS: &str = "1";

impl ApiError {
    /// Records whether the rest of a refused body was read.
    pub(crate) fn drained(self, drained: bool) -> ApiError {
        match self {
            ApiError::PayloadTooLarge { limit, .. } => ApiError::PayloadTooLarge { limit, drained },
            ApiError::BodyBudgetSpent { needed, budget, .. } => ApiError::BodyBudgetSpent {
                needed,
                budget,
                drained,
            },
            other => other,
        }
    }

    /// Whether the connection can carry another request: not when a refused body was left
    /// unread.
    fn body_left_unread(&self) -> bool {
        matches!(
            self,
            ApiError::PayloadTooLarge { drained: false, .. }
                | ApiError::BodyBudgetSpent { drained: false, .. }
                | ApiError::BodyTimeout { .. }
                | ApiError::UnsupportedEncoding { .. }
        )
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Request(_) | ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedEncoding { .. } | ApiError::UnsupportedContentType { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ConnectionLimit { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ModelNotFound { .. } | ApiError::RouteNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotReady { .. } | ApiError::BodyBudgetSpent { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Batch(BatchError::QueueFull { .. } | BatchError::Stopped) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Batch(BatchError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Batch(BatchError::Model(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC column of the table: the code a `GRPCInferenceService` call fails with.
    fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            ApiError::Request(_) | ApiError::Body(_) => Code::InvalidArgument,
            ApiError::PayloadTooLarge { .. } => Code::ResourceExhausted,
            ApiError::UnsupportedEncoding { .. }
            | ApiError::UnsupportedContentType { .. }
            | ApiError::RouteNotFound { .. }
            | ApiError::MethodNotAllowed { .. } => Code::Unimplemented,
            ApiError::BodyTimeout { .. }
            | ApiError::Deadline { .. }
            | ApiError::Batch(BatchError::Timeout { .. }) => Code::DeadlineExceeded,
            ApiError::ModelNotFound { .. } => Code::NotFound,
            ApiError::Batch(BatchError::QueueFull { .. }) | ApiError::BodyBudgetSpent { .. } => {
                Code::ResourceExhausted
            }
            ApiError::NotReady { .. }
            | ApiError::ConnectionLimit { .. }
            | ApiError::Batch(BatchError::Stopped) => Code::Unavailable,
            ApiError::Batch(BatchError::Model(_)) => Code::Internal,
        }
    }

    fn retry_after(&self) -> bool {
        matches!(
            self,
            ApiError::NotReady { .. }
                | ApiError::ConnectionLimit { .. }
                | ApiError::BodyBudgetSpent { .. }
                | ApiError::Batch(BatchError::QueueFull { .. } | BatchError::Stopped)
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.to_string() });
        self.respond(body)
    }
}

/// An [`ApiError`] answered as MLflow's scoring server answers errors, so MLflow's clients
/// read it: the same status, with `{"error_code": ..., "message": ...}` for a body.
#[derive(Debug)]
pub(crate) struct MlflowError(pub(crate) ApiError);

impl<E: Into<ApiError>> From<E> for MlflowError {
    fn from(err: E) -> MlflowError {
        MlflowError(err.into())
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        let body = json!({
            "error_code": mlflow_error_code(self.0.status()),
            "message": self.0.to_string(),
        });
        self.0.respond(body)
    }
}

/// MLflow's name for a status (`mlflow.exceptions.HTTP_STATUS_TO_ERROR_CODE`); client errors
/// it has no name for are `BAD_REQUEST`.
fn mlflow_error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "ENDPOINT_NOT_FOUND",
        StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        StatusCode::SERVICE_UNAVAILABLE => "TEMPORARILY_UNAVAILABLE",
        StatusCode::GATEWAY_TIMEOUT => "DEADLINE_EXCEEDED",
        status if status.is_client_error() => "BAD_REQUEST",
        _ => "INTERNAL_ERROR",
    }
}

impl ApiError {
    /// The response with `body`, its status and headers from this table.
    fn respond(self, body: serde_json::Value) -> Response {
        let status = self.status();
        if let ApiError::Batch(BatchError::Model(err)) = &self {
            log_unexpected(err);
        }
        let mut response = (status, JsonLine(body)).into_response();
        if self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        if let ApiError::UnsupportedEncoding { .. } = self {
            // RFC 7694: the codings a request body may use.
            response.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("gzip, deflate"),
            );
        }
        if self.body_left_unread() {
            // The rest of the body was not read, so the connection cannot carry another request;
            // saying so keeps clients from reusing it and failing their next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        if let ApiError::Batch(BatchError::Model(model_error)) = &err {
            log_unexpected(model_error);
        }
        tonic::Status::new(err.grpc_code(), err.to_string())
    }
}

fn log_unexpected(err: &ModelError) {
    tracing::error!(error = %err, "inference failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_protocol() {
        let input = ApiError::from(InputError::DuplicateInput("x".into()));
        assert_eq!(input.status(), StatusCode::BAD_REQUEST);
        let cut_short = ApiError::PayloadTooLarge {
            limit: 1,
            drained: false,
        };
        assert_eq!(cut_short.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            cut_short.into_response().headers()[header::CONNECTION],
            "close"
        );
        let drained = ApiError::PayloadTooLarge {
            limit: 1,
            drained: true,
        };
        assert!(
            !drained
                .into_response()
                .headers()
                .contains_key(header::CONNECTION)
        );
        let queue_full = ApiError::Batch(BatchError::QueueFull {
            queued: 9,
            limit: 8,
        });
        assert_eq!(queue_full.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = queue_full.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let busy = ApiError::BodyBudgetSpent {
            needed: 1,
            budget: 1,
            drained: false,
        };
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = busy.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let failed = ApiError::Batch(BatchError::Model(ModelError::Inference("boom".into())));
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn mlflow_errors_keep_the_status_and_take_mlflows_shape() {
        let busy = MlflowError(ApiError::Batch(BatchError::QueueFull {
            queued: 9,
            limit: 8,
        }));
        let response = busy.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(mlflow_error_code(StatusCode::BAD_REQUEST), "BAD_REQUEST");
        assert_eq!(
            mlflow_error_code(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "BAD_REQUEST"
        );
        assert_eq!(
            mlflow_error_code(StatusCode::INTERNAL_SERVER_ERROR),
            "INTERNAL_ERROR"
        );
    }

    #[test]
    fn grpc_codes_follow_the_same_kinds() {
        use tonic::Code;
        let cases = [
            (
                ApiError::from(InputError::DuplicateInput("x".into())),
                Code::InvalidArgument,
            ),
            (
                ApiError::Batch(BatchError::QueueFull {
                    queued: 9,
                    limit: 8,
                }),
                Code::ResourceExhausted,
            ),
            (
                ApiError::NotReady {
                    model: "m".into(),
                    version: "1".into(),
                    phase: "loading",
                },
                Code::Unavailable,
            ),
            (ApiError::Batch(BatchError::Stopped), Code::Unavailable),
            (
                ApiError::Batch(BatchError::Timeout {
                    waited: std::time::Duration::from_secs(1),
                }),
                Code::DeadlineExceeded,
            ),
            (
                ApiError::ModelNotFound {
                    name: "m".into(),
                    version: None,
                    served: "'n' version '1'".into(),
                },
                Code::NotFound,
            ),
            (
                ApiError::Batch(BatchError::Model(ModelError::Inference("boom".into()))),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let message = err.to_string();
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn unknown_models_say_what_is_served() {
        let err = ApiError::ModelNotFound {
            name: "iris".into(),
            version: Some("2".into()),
            served: "'iris' version '1'".into(),
        };
        assert_eq!(
            err.to_string(),
            "unknown model 'iris' version '2'; this server serves 'iris' version '1'"
        );
    }
}
