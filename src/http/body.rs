//! The request body extractor: buffers the body up to `--max-body-bytes`. A larger body is
//! answered 413, but only after reading (and discarding) a bounded amount of what the client is
//! still sending: closing a socket with unread data makes the kernel send a reset, which can
//! destroy the 413 before the client has read it.
//!
//! The buffer grows as bytes arrive rather than being reserved from `Content-Length`: a header
//! costs the server nothing until its body does, so connections that declare large bodies and
//! send none cannot exhaust the address space.
//!
//! Every body also takes a share of the [`BodyBudget`] (`--max-inflight-body-bytes`) before it
//! is buffered, and holds it until its request is answered: decoding multiplies a body's size,
//! so the budget, not the number of connections, bounds the memory requests take.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
    http::{HeaderMap, header},
};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    error::ApiError,
    inflate::{Coding, InflateError, Inflater},
    state::AppState,
};
use crate::metrics::Rejection;

/// How much of an oversized body is read and thrown away so the client sees the 413.
const DISCARD_BYTES: usize = 16 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);
/// The first allocation for a body; it then doubles as bytes arrive.
const INITIAL_CAPACITY: usize = 16 << 10;
/// Without `--max-inflight-body-bytes`, this many bodies of the largest size fit at once.
const DEFAULT_INFLIGHT_BODIES: usize = 2;
/// The budget counts in KiB, so that one semaphore acquisition (a `u32`) covers any body.
const UNIT: usize = 1 << 10;

/// Bytes of request bodies held at once, from before they are buffered until their request is
/// answered.
pub(crate) struct BodyBudget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

impl BodyBudget {
    /// `configured` bytes, else [`DEFAULT_INFLIGHT_BODIES`] bodies of `max_body_bytes`; never
    /// less than one such body, which could otherwise never be accepted. Counted in whole
    /// [`UNIT`]s, rounded up, as each body's share is: N bodies of the largest size always fit
    /// in a budget of N times it.
    pub(crate) fn new(max_body_bytes: usize, configured: Option<usize>) -> BodyBudget {
        let largest = max_body_bytes.div_ceil(UNIT);
        let units = match configured {
            Some(bytes) if bytes.div_ceil(UNIT) < largest => {
                tracing::warn!(
                    configured = bytes,
                    max_body_bytes,
                    "--max-inflight-body-bytes is below --max-body-bytes; raised to it"
                );
                largest
            }
            Some(bytes) => bytes.div_ceil(UNIT),
            None => largest.saturating_mul(DEFAULT_INFLIGHT_BODIES),
        }
        .min(Semaphore::MAX_PERMITS);
        BodyBudget {
            permits: Arc::new(Semaphore::new(units)),
            bytes: configured.map_or(units * UNIT, |bytes| bytes.max(max_body_bytes)),
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds `bytes` to `share`, or says why not: the budget is spent.
    fn grow(&self, share: &mut BudgetShare, bytes: usize) -> Result<(), ApiError> {
        let permit = u32::try_from(bytes.div_ceil(UNIT))
            .ok()
            .and_then(|units| Arc::clone(&self.permits).try_acquire_many_owned(units).ok())
            .ok_or(ApiError::BodyBudgetSpent {
                needed: bytes,
                budget: self.bytes,
                drained: false,
            })?;
        match &mut share.0 {
            Some(held) => held.merge(permit),
            None => share.0 = Some(permit),
        }
        Ok(())
    }
}

/// A request's part of the [`BodyBudget`], given back when it is dropped.
#[derive(Default)]
pub(crate) struct BudgetShare(Option<OwnedSemaphorePermit>);

impl BudgetShare {
    fn bytes(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |permit| permit.num_permits() * UNIT)
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        if self.bytes() >= TRIM_AFTER_BYTES {
            release_freed_memory();
        }
    }
}

/// A request whose body was at least this large has just freed many times that in decoded
/// tensors and answers.
const TRIM_AFTER_BYTES: usize = 8 << 20;

/// Gives memory that large requests freed back to the system. glibc's allocator keeps it
/// otherwise: after a large block is freed it raises its threshold for serving blocks from
/// fresh mappings, so the next large tensors land in arenas that never shrink, and a pod that
/// once decoded a few large bodies keeps their peak as its resident size. Run on the blocking
/// pool, at most one at a time, since trimming walks every arena.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Trims asked for since the running one started; zero when none runs.
        static WANTED: AtomicUsize = AtomicUsize::new(0);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if WANTED.fetch_add(1, Ordering::AcqRel) > 0 {
            return;
        }
        runtime.spawn_blocking(|| {
            loop {
                let seen = WANTED.load(Ordering::Acquire);
                // SAFETY: malloc_trim only gives free memory back; it has no preconditions.
                unsafe { libc::malloc_trim(0) };
                let done = WANTED.compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Acquire);
                if done.is_ok() {
                    break;
                }
            }
        });
    }
}

/// The whole body, and its share of the budget: handlers keep `share` until they answer.
pub(crate) struct RequestBody {
    pub(crate) bytes: Bytes,
    pub(crate) share: BudgetShare,
}

impl FromRequest<Arc<AppState>> for RequestBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let limit = state.max_body_bytes;
        let coding = Coding::of(request.headers())?;
        let declared = declared_length(request.headers());
        let body = request.into_body();
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(body, limit).await);
        }
        let mut share = BudgetShare::default();
        if let Err(err) = state.body_budget.grow(&mut share, declared.unwrap_or(0)) {
            return Err(budget_spent(body, state, err).await);
        }
        read(body, state, Sink::new(coding, declared, limit), share).await
    }
}

/// Where a body's bytes go as they arrive: into its buffer as they are, or inflated.
enum Sink {
    /// `ceiling`: the declared length, else the limit (see [`make_room`]).
    Plain {
        buffer: Vec<u8>,
        ceiling: usize,
    },
    Inflated(Box<Inflater>),
}

impl Sink {
    fn new(coding: Coding, declared: Option<usize>, limit: usize) -> Sink {
        match Inflater::new(coding, limit) {
            Some(inflater) => Sink::Inflated(Box::new(inflater)),
            None => Sink::Plain {
                buffer: Vec::new(),
                ceiling: declared.unwrap_or(limit),
            },
        }
    }

    fn push(&mut self, data: &[u8], limit: usize) -> Result<(), InflateError> {
        match self {
            Sink::Plain { buffer, ceiling } => {
                if buffer.len() + data.len() > limit {
                    return Err(InflateError::TooLarge);
                }
                make_room(buffer, data.len(), *ceiling);
                buffer.extend_from_slice(data);
                Ok(())
            }
            Sink::Inflated(inflater) => inflater.push(data),
        }
    }

    /// Bytes held for the body so far: what it takes of the budget.
    fn capacity(&self) -> usize {
        match self {
            Sink::Plain { buffer, .. } => buffer.capacity(),
            Sink::Inflated(inflater) => inflater.capacity(),
        }
    }

    fn finish(self) -> Result<Vec<u8>, InflateError> {
        match self {
            Sink::Plain { buffer, .. } => Ok(buffer),
            Sink::Inflated(inflater) => (*inflater).finish(),
        }
    }
}

/// Buffers the body (inflated, when it is compressed), growing its share of the budget as the
/// buffer grows; the limit and the budget count the bytes the handlers will read.
async fn read(
    mut body: Body,
    state: &AppState,
    mut sink: Sink,
    mut share: BudgetShare,
) -> Result<RequestBody, ApiError> {
    let limit = state.max_body_bytes;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| ApiError::Body(err.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match sink.push(&data, limit) {
            Ok(()) => {}
            Err(InflateError::TooLarge) => return Err(too_large(body, limit).await),
            Err(InflateError::Invalid(reason)) => return Err(ApiError::Body(reason)),
        }
        let unshared = sink.capacity().saturating_sub(share.bytes());
        if unshared > 0
            && let Err(err) = state.body_budget.grow(&mut share, unshared)
        {
            return Err(budget_spent(body, state, err).await);
        }
    }
    match sink.finish() {
        Ok(bytes) => Ok(RequestBody {
            bytes: Bytes::from(bytes),
            share,
        }),
        // The compressed body ended; what it inflated to at the end was too much.
        Err(InflateError::TooLarge) => Err(ApiError::PayloadTooLarge {
            limit,
            drained: true,
        }),
        Err(InflateError::Invalid(reason)) => Err(ApiError::Body(reason)),
    }
}

/// Makes room for `incoming` more bytes, doubling the capacity so a body costs few copies, but
/// not past `ceiling` (the declared length, else the limit): a body that arrives as declared
/// ends in a buffer of exactly its size.
pub(super) fn make_room(buffer: &mut Vec<u8>, incoming: usize, ceiling: usize) {
    let needed = buffer.len() + incoming;
    if needed <= buffer.capacity() {
        return;
    }
    let target = (buffer.capacity() * 2)
        .max(INITIAL_CAPACITY)
        .min(ceiling)
        .max(needed);
    buffer.reserve_exact(target - buffer.len());
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Answers `err` after discarding what the client is still sending, up to `bytes` within
/// `time`, and notes whether the rest of the body was read.
async fn refuse(body: Body, err: ApiError, bytes: usize, time: Duration) -> ApiError {
    let drained = tokio::time::timeout(time, discard(body, bytes))
        .await
        .unwrap_or(false);
    err.drained(drained)
}

/// An oversized body may never end, so only a bounded part of it is read.
async fn too_large(body: Body, limit: usize) -> ApiError {
    let err = ApiError::PayloadTooLarge {
        limit,
        drained: false,
    };
    refuse(body, err, DISCARD_BYTES, DISCARD_TIME).await
}

/// A body refused for the budget is within the body limit: it is read to its end and dropped as
/// it arrives (costing no memory), so the client reads its 503 and may retry on the same
/// connection rather than seeing its upload reset.
async fn budget_spent(body: Body, state: &AppState, err: ApiError) -> ApiError {
    state
        .snapshot()
        .labels()
        .count_rejected(Rejection::BodyBudget);
    let time = state.body_read_timeout.unwrap_or(DISCARD_TIME);
    refuse(body, err, state.max_body_bytes, time).await
}

/// Reads the rest of the body; `true` if it ended within `bytes`.
async fn discard(mut body: Body, bytes: usize) -> bool {
    let mut discarded = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        discarded += frame.data_ref().map_or(0, Bytes::len);
        if discarded > bytes {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_grows_with_the_bytes_up_to_the_declared_length() {
        let declared = 100_000;
        let mut buffer = Vec::new();
        make_room(&mut buffer, 10, declared);
        assert_eq!(
            buffer.capacity(),
            INITIAL_CAPACITY,
            "not the declared length"
        );
        let mut capacities = Vec::new();
        while buffer.len() < declared {
            let chunk = (declared - buffer.len()).min(7_000);
            make_room(&mut buffer, chunk, declared);
            buffer.resize(buffer.len() + chunk, 0);
            capacities.push(buffer.capacity());
        }
        capacities.dedup();
        assert_eq!(capacities, [16 << 10, 32 << 10, 64 << 10, declared]);
    }

    #[test]
    fn shares_of_the_budget_are_given_back_when_dropped() {
        let budget = BodyBudget::new(4 << 10, Some(8 << 10));
        let mut first = BudgetShare::default();
        budget.grow(&mut first, 3 << 10).unwrap();
        budget.grow(&mut first, 1).unwrap();
        assert_eq!(first.bytes(), 4 << 10, "counted in whole KiB");
        let mut second = BudgetShare::default();
        let spent = budget.grow(&mut second, 5 << 10).unwrap_err();
        assert!(matches!(spent, ApiError::BodyBudgetSpent { .. }), "{spent}");
        drop(first);
        budget.grow(&mut second, 5 << 10).unwrap();
        assert_eq!(
            BodyBudget::new(4 << 10, Some(1)).bytes(),
            4 << 10,
            "one largest body always fits"
        );
        assert_eq!(BodyBudget::new(4 << 10, None).bytes(), 8 << 10);
    }

    #[test]
    fn the_default_budget_takes_two_of_the_largest_bodies_whatever_their_size() {
        for largest in [1, 1000, 1025, (64 << 20) - 1, 67_108_603] {
            let budget = BodyBudget::new(largest, None);
            let mut first = BudgetShare::default();
            let mut second = BudgetShare::default();
            budget.grow(&mut first, largest).unwrap();
            budget.grow(&mut second, largest).unwrap();
            assert!(budget.grow(&mut BudgetShare::default(), 1).is_err());
            let alone = BodyBudget::new(largest, Some(largest));
            alone.grow(&mut BudgetShare::default(), largest).unwrap();
        }
    }
}
