//! The request body extractor: buffers the body up to `--max-body-bytes` and turns axum's
//! rejections into the protocol's JSON errors (413 for size, 400 otherwise).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};

use super::{error::ApiError, state::AppState};

pub struct RequestBody(pub Bytes);

impl FromRequest<Arc<AppState>> for RequestBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(RequestBody)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit: state.max_body_bytes,
                    }
                } else {
                    ApiError::Body(rejection.body_text())
                }
            })
    }
}
