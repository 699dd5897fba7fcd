//! The request body extractor: buffers the body up to `--max-body-bytes`. A larger body is
//! answered 413, but only after reading (and discarding) a bounded amount of what the client is
//! still sending: closing a socket with unread data makes the kernel send a reset, which can
//! destroy the 413 before the client has read it.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
    http::{HeaderMap, header},
};
use bytes::BytesMut;
use http_body_util::BodyExt;

use super::{error::ApiError, state::AppState};

/// How much of an oversized body is read and thrown away so the client sees the 413.
const DISCARD_BYTES: usize = 16 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);

pub struct RequestBody(pub Bytes);

impl FromRequest<Arc<AppState>> for RequestBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let limit = state.max_body_bytes;
        let declared = declared_length(request.headers());
        let mut body = request.into_body();
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(body, limit).await);
        }
        let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| ApiError::Body(err.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buffer.len() + data.len() > limit {
                return Err(too_large(body, limit).await);
            }
            buffer.extend_from_slice(&data);
        }
        Ok(RequestBody(buffer.freeze()))
    }
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

async fn too_large(body: Body, limit: usize) -> ApiError {
    let drained = tokio::time::timeout(DISCARD_TIME, discard(body))
        .await
        .unwrap_or(false);
    ApiError::PayloadTooLarge { limit, drained }
}

/// Reads the rest of the body; `true` if it ended within [`DISCARD_BYTES`].
async fn discard(mut body: Body) -> bool {
    let mut discarded = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        discarded += frame.data_ref().map_or(0, Bytes::len);
        if discarded > DISCARD_BYTES {
            return false;
        }
    }
    true
}
