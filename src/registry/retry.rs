//! One retry policy for every network call of a fetch: exponential backoff with jitter (from
//! `backon`), a server's `Retry-After` honoured, final errors never retried.

use std::{future::Future, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::{redact::error_chain, source::TransferError};

#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub(crate) retries: usize,
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
}

impl RetryPolicy {
    pub(crate) fn new(retries: usize) -> RetryPolicy {
        RetryPolicy {
            retries,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }

    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_jitter()
            .build()
    }

    /// The wait before the next attempt, or `None` when the retries are spent. A server's
    /// `Retry-After` is respected, up to the policy's longest delay.
    pub(crate) fn next_delay(
        &self,
        delays: &mut impl Iterator<Item = Duration>,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let backoff = delays.next()?;
        Some(retry_after.map_or(backoff, |asked| {
            asked.clamp(backoff, self.max_delay.max(backoff))
        }))
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the retries run out.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut attempt: F,
) -> Result<T, TransferError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TransferError>>,
{
    let mut delays = policy.delays();
    loop {
        match attempt().await {
            Err(err) if err.is_transient() => {
                let Some(delay) = policy.next_delay(&mut delays, err.retry_after()) else {
                    return Err(gave_up(err, policy));
                };
                tracing::warn!(what, error = %error_chain(&err), retry_in = ?delay, "retrying");
                tokio::time::sleep(delay).await;
            }
            result => return result,
        }
    }
}

pub(crate) fn gave_up(last: TransferError, policy: &RetryPolicy) -> TransferError {
    TransferError::GaveUp {
        last: Box::new(last),
        retries: policy.retries,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn fast(retries: usize) -> RetryPolicy {
        RetryPolicy {
            retries,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_then_succeeds() {
        let calls = AtomicUsize::new(0);
        let result = with_retries(&fast(3), "test", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(TransferError::transient("503")),
                _ => Ok(42),
            }
        })
        .await;
        assert_eq!(result.unwrap(), 42);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_retries() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = with_retries(&fast(2), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(TransferError::transient("503"))
        })
        .await;
        assert!(
            result
                .unwrap_err()
                .to_string()
                .contains("gave up after 2 retries")
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_final_errors() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = with_retries(&fast(5), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(TransferError::Fatal("404".into()))
        })
        .await;
        assert!(matches!(result, Err(TransferError::Fatal(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let policy = fast(3);
        let mut delays = [Duration::from_millis(2)].into_iter();
        let asked = Some(Duration::from_millis(4));
        assert_eq!(
            policy.next_delay(&mut delays, asked),
            Some(Duration::from_millis(4))
        );
        let mut delays = [Duration::from_millis(2)].into_iter();
        let too_long = Some(Duration::from_secs(3600));
        assert_eq!(
            policy.next_delay(&mut delays, too_long),
            Some(Duration::from_millis(5))
        );
        assert_eq!(policy.next_delay(&mut std::iter::empty(), asked), None);
    }
}
