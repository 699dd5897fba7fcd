//! Limits the API routes apply to each request: the body must arrive within
//! `--body-read-timeout`, and a connection admitted beyond `--max-connections` (for probes only)
//! is refused API requests.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{Request, State},
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::oneshot;

use super::{error::ApiError, server::OverCapacity, state::AppState};

/// Answers 408 when the body has not arrived in full within the state's body read timeout of the
/// request's arrival. The clock stops once the body has been read (or dropped): inference may take
/// longer than that, a client that never finishes its body may not.
pub(crate) async fn limit_body_time(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(limit) = state.body_read_timeout else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let (request, read) = watched(parts, body);
    let expired = async move {
        tokio::select! {
            _ = read => std::future::pending::<()>().await,
            () = tokio::time::sleep(limit) => {}
        }
    };
    tokio::select! {
        response = next.run(request) => response,
        () = expired => ApiError::BodyTimeout { limit }.into_response(),
    }
}

/// The request with its body wrapped so that the returned receiver resolves once the body has
/// ended, failed or been dropped.
fn watched(parts: Parts, body: Body) -> (Request, oneshot::Receiver<()>) {
    let (done, read) = oneshot::channel();
    let body = Watched {
        inner: body,
        done: Some(done),
    };
    (Request::from_parts(parts, Body::new(body)), read)
}

/// A body that drops `done` when it ends, which is all the receiver waits for.
struct Watched {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.done = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Refuses API requests on a connection admitted from the probe reserve: 503, and the server
/// closes the connection after the answer.
pub(crate) async fn refuse_over_capacity(request: Request, next: Next) -> Response {
    match request.extensions().get::<OverCapacity>() {
        Some(over) => ApiError::ConnectionLimit { limit: over.limit }.into_response(),
        None => next.run(request).await,
    }
}
