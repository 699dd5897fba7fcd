//! The figures of the V2 statistics extension, in Triton's terms, kept by the batcher as it works
//! (beside the Prometheus metrics, from the same measurements): per request, its outcome and time
//! in the batcher, its time in the queue, and the model call it was part of (preparing the
//! inputs, inference, splitting the outputs); per model call, its rows; and per batch size, the
//! calls of that size.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

/// A count and a cumulative duration, as Triton reports them.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    fn add(&self, count: u64, each: Duration) {
        self.count.fetch_add(count, Ordering::Relaxed);
        self.ns
            .fetch_add(count.saturating_mul(nanos(each)), Ordering::Relaxed);
    }

    fn read(&self) -> Duration2 {
        Duration2 {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// What one model call took: stacking the requests' inputs, running the model, splitting the
/// outputs back into answers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallTimes {
    pub(crate) input: Duration,
    pub(crate) infer: Duration,
    pub(crate) output: Duration,
}

/// The running figures of the served model.
#[derive(Debug, Default)]
pub(crate) struct ModelStats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_input: Tally,
    compute_infer: Tally,
    compute_output: Tally,
    /// Rows inferred.
    inference_count: AtomicU64,
    /// Model calls.
    execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last model call's end.
    last_inference: AtomicU64,
    /// Per batch size (rows in the call): the calls of that size.
    batches: Mutex<BTreeMap<usize, [Duration2; 3]>>,
}

impl ModelStats {
    /// A request the batcher answered, successfully or not, `elapsed` after it was submitted.
    pub(crate) fn record_request(&self, succeeded: bool, elapsed: Duration) {
        let tally = if succeeded { &self.success } else { &self.fail };
        tally.add(1, elapsed);
    }

    pub(crate) fn record_queue(&self, waited: Duration) {
        self.queue.add(1, waited);
    }

    /// One model call of `rows` rows for `requests` requests, each of which waited for all of it.
    pub(crate) fn record_call(&self, requests: usize, rows: usize, times: CallTimes) {
        let requests = requests as u64;
        self.compute_input.add(requests, times.input);
        self.compute_infer.add(requests, times.infer);
        self.compute_output.add(requests, times.output);
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        #[allow(
            clippy::disallowed_methods,
            reason = "Triton reports the last inference as a date"
        )]
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        self.last_inference.fetch_max(now, Ordering::Relaxed);
        let mut batches = self
            .batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = batches.entry(rows).or_default();
        for (stat, took) in entry
            .iter_mut()
            .zip([times.input, times.infer, times.output])
        {
            stat.count += 1;
            stat.ns = stat.ns.saturating_add(nanos(took));
        }
    }

    /// The figures now, in the extension's JSON shape for model `name` version `version`.
    pub(crate) fn report(&self, name: &str, version: &str) -> ModelStatsReport {
        let batches = self
            .batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ModelStatsReport {
            name: name.to_owned(),
            version: version.to_owned(),
            last_inference: self.last_inference.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            inference_stats: InferenceStats {
                success: self.success.read(),
                fail: self.fail.read(),
                queue: self.queue.read(),
                compute_input: self.compute_input.read(),
                compute_infer: self.compute_infer.read(),
                compute_output: self.compute_output.read(),
                cache_hit: Duration2::default(),
                cache_miss: Duration2::default(),
            },
            batch_stats: batches
                .iter()
                .map(|(&batch_size, [input, infer, output])| BatchStats {
                    batch_size,
                    compute_input: *input,
                    compute_infer: *infer,
                    compute_output: *output,
                })
                .collect(),
            memory_usage: Vec::new(),
        }
    }
}

/// `{"count", "ns"}`: Triton's StatisticDuration.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub(crate) struct Duration2 {
    pub(crate) count: u64,
    pub(crate) ns: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct InferenceStats {
    pub(crate) success: Duration2,
    pub(crate) fail: Duration2,
    pub(crate) queue: Duration2,
    pub(crate) compute_input: Duration2,
    pub(crate) compute_infer: Duration2,
    pub(crate) compute_output: Duration2,
    /// pinserve has no response cache: always zero, present because clients read it.
    pub(crate) cache_hit: Duration2,
    pub(crate) cache_miss: Duration2,
}

#[derive(Debug, Serialize)]
pub(crate) struct BatchStats {
    pub(crate) batch_size: usize,
    pub(crate) compute_input: Duration2,
    pub(crate) compute_infer: Duration2,
    pub(crate) compute_output: Duration2,
}

/// One entry of `model_stats`, as Triton's `ModelStatistics`.
#[derive(Debug, Serialize)]
pub(crate) struct ModelStatsReport {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) last_inference: u64,
    pub(crate) inference_count: u64,
    pub(crate) execution_count: u64,
    pub(crate) inference_stats: InferenceStats,
    pub(crate) batch_stats: Vec<BatchStats>,
    memory_usage: Vec<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_per_request_per_row_and_per_batch_size() {
        let stats = ModelStats::default();
        let ms = Duration::from_millis;
        stats.record_queue(ms(1));
        stats.record_queue(ms(3));
        stats.record_call(
            2,
            5,
            CallTimes {
                input: ms(1),
                infer: ms(10),
                output: ms(2),
            },
        );
        stats.record_request(true, ms(14));
        stats.record_request(false, ms(20));
        let report = stats.report("m", "1");
        assert_eq!(report.inference_count, 5);
        assert_eq!(report.execution_count, 1);
        let inference = &report.inference_stats;
        assert_eq!(
            inference.queue,
            Duration2 {
                count: 2,
                ns: 4_000_000
            }
        );
        assert_eq!(
            inference.compute_infer,
            Duration2 {
                count: 2,
                ns: 20_000_000
            }
        );
        assert_eq!(inference.success.count, 1);
        assert_eq!(inference.fail.count, 1);
        assert_eq!(report.batch_stats.len(), 1);
        assert_eq!(report.batch_stats[0].batch_size, 5);
        assert_eq!(
            report.batch_stats[0].compute_infer,
            Duration2 {
                count: 1,
                ns: 10_000_000
            }
        );
        assert!(report.last_inference > 0);
    }
}
