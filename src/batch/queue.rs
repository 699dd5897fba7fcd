//! The queue task: gathers queued jobs into batches for the model workers.
//!
//! It waits for a free worker slot first and only then decides what goes into the batch, so a
//! batch holds everything that arrived while the workers were busy. With a slot in hand it waits
//! until the oldest job's compatible rows fill a batch or that job has waited
//! `--max-batch-delay`, whichever comes first. Jobs whose client has gone are dropped; jobs that
//! waited past `--request-timeout` are answered 504. All timing uses tokio's clock, so the
//! tests drive it with paused time.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{
    sync::mpsc::{self, error::TryRecvError},
    time::{Instant, sleep_until},
};

use super::{BatchError, Job, assemble::BatchKey};
use crate::metrics::BatchMetrics;

/// Far enough in the future to stand for "no deadline".
const NEVER: Duration = Duration::from_secs(24 * 3600);

pub(super) struct Limits {
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    pub request_timeout: Duration,
    /// When false (some input or output has a fixed first dimension) every job runs alone.
    pub batchable: bool,
}

/// Jobs that run in one model call, oldest first.
pub(super) struct Batch {
    pub jobs: Vec<Job>,
}

pub(super) async fn run(
    mut incoming: mpsc::UnboundedReceiver<Job>,
    batches: mpsc::Sender<Batch>,
    limits: Limits,
    metrics: Arc<BatchMetrics>,
) {
    let mut pending = Pending::new(limits, metrics);
    let mut open = true;
    loop {
        if !open && pending.is_empty() {
            return;
        }
        let permit = tokio::select! {
            biased;
            permit = batches.reserve(), if !pending.is_empty() => match permit {
                Ok(permit) => permit,
                Err(_) => return pending.fail_all(),
            },
            job = incoming.recv(), if open => {
                match job {
                    Some(job) => pending.push(job),
                    None => open = false,
                }
                continue;
            }
            () = sleep_until(pending.next_expiry()), if !pending.is_empty() => {
                pending.drop_gone(Instant::now());
                continue;
            }
        };
        let Some(batch) = gather(&mut pending, &mut incoming, &mut open).await else {
            return;
        };
        permit.send(batch);
    }
}

/// With a worker slot in hand: waits until a batch is worth sending, then takes it.
async fn gather(
    pending: &mut Pending,
    incoming: &mut mpsc::UnboundedReceiver<Job>,
    open: &mut bool,
) -> Option<Batch> {
    loop {
        while *open {
            match incoming.try_recv() {
                Ok(job) => pending.push(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => *open = false,
            }
        }
        let now = Instant::now();
        pending.drop_gone(now);
        if pending.is_empty() {
            if !*open {
                return None;
            }
            match incoming.recv().await {
                Some(job) => pending.push(job),
                None => *open = false,
            }
            continue;
        }
        if !*open || pending.ready(now) {
            return Some(pending.take_batch());
        }
        tokio::select! {
            job = incoming.recv() => match job {
                Some(job) => pending.push(job),
                None => *open = false,
            },
            () = sleep_until(pending.fill_deadline()) => {}
        }
    }
}

/// The queued jobs in arrival order, with their rows counted per batch key.
struct Pending {
    jobs: std::collections::VecDeque<Job>,
    rows_by_key: HashMap<BatchKey, usize>,
    limits: Limits,
    metrics: Arc<BatchMetrics>,
}

impl Pending {
    fn new(limits: Limits, metrics: Arc<BatchMetrics>) -> Pending {
        Pending {
            jobs: std::collections::VecDeque::new(),
            rows_by_key: HashMap::new(),
            limits,
            metrics,
        }
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn push(&mut self, job: Job) {
        *self.rows_by_key.entry(job.key.clone()).or_default() += job.rows;
        self.jobs.push_back(job);
    }

    fn remove(&mut self, index: usize) -> Job {
        let mut job = self.jobs.remove(index).expect("the index is in range");
        if let Some(rows) = self.rows_by_key.get_mut(&job.key) {
            *rows -= job.rows;
            if *rows == 0 {
                self.rows_by_key.remove(&job.key);
            }
        }
        job.dequeue();
        job
    }

    fn oldest(&self) -> &Job {
        self.jobs.front().expect("checked non-empty")
    }

    /// When the oldest job will have waited `--request-timeout`. `select!` evaluates the
    /// futures of disabled branches too, so an empty queue gives a time that never comes.
    fn next_expiry(&self) -> Instant {
        match self.jobs.front() {
            Some(oldest) => oldest.enqueued + self.limits.request_timeout,
            None => Instant::now() + NEVER,
        }
    }

    /// When the oldest job will have waited `--max-batch-delay`.
    fn fill_deadline(&self) -> Instant {
        self.oldest().enqueued + self.limits.max_batch_delay
    }

    /// A batch is worth sending when the oldest job's compatible rows fill it, or that job has
    /// waited long enough.
    fn ready(&self, now: Instant) -> bool {
        let oldest = self.oldest();
        !self.limits.batchable
            || self.rows_by_key.get(&oldest.key).copied().unwrap_or(0) >= self.limits.max_batch_size
            || now >= self.fill_deadline()
    }

    /// Drops jobs whose client has gone, and answers those that waited too long.
    fn drop_gone(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.jobs.len() {
            let job = &self.jobs[index];
            let waited = now.saturating_duration_since(job.enqueued);
            if job.reply.is_closed() {
                self.remove(index);
                self.metrics.rejected("client_disconnected");
            } else if waited >= self.limits.request_timeout {
                let job = self.remove(index);
                self.metrics.rejected("timeout");
                let _ = job.reply.send(Err(BatchError::Timeout { waited }));
            } else {
                index += 1;
            }
        }
    }

    /// The oldest job and, when batching, the following jobs with its key that fit.
    fn take_batch(&mut self) -> Batch {
        let first = self.remove(0);
        let mut rows = first.rows;
        let mut jobs = vec![first];
        let mut index = 0;
        while self.limits.batchable && rows < self.limits.max_batch_size && index < self.jobs.len()
        {
            let candidate = &self.jobs[index];
            if candidate.key == jobs[0].key && rows + candidate.rows <= self.limits.max_batch_size {
                rows += candidate.rows;
                jobs.push(self.remove(index));
            } else {
                index += 1;
            }
        }
        Batch { jobs }
    }

    /// The workers are gone: nothing queued can be answered.
    fn fail_all(&mut self) {
        while !self.jobs.is_empty() {
            let job = self.remove(0);
            let _ = job.reply.send(Err(BatchError::Stopped));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;
    use crate::{
        batch::{Admission, assemble::rows_of},
        metrics::ModelLabels,
        model::{Tensor, TensorData},
    };

    fn metrics() -> Arc<BatchMetrics> {
        Arc::new(
            ModelLabels {
                model: "m".into(),
                version: "1".into(),
            }
            .batch_metrics(),
        )
    }

    fn job(
        rows: usize,
        columns: usize,
    ) -> (Job, oneshot::Receiver<Result<Vec<Tensor>, BatchError>>) {
        let inputs = vec![
            Tensor::new(
                vec![rows, columns],
                TensorData::Fp32(vec![0.0; rows * columns]),
            )
            .unwrap(),
        ];
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key: BatchKey::of(&inputs, &[0]),
            rows: rows_of(&inputs),
            inputs,
            outputs: vec![0],
            enqueued: Instant::now(),
            reply,
            span: tracing::Span::none(),
            admission: Admission {
                queued: Arc::new(AtomicUsize::new(rows)),
                rows,
                metrics: metrics(),
            },
        };
        (job, answer)
    }

    struct Harness {
        jobs: mpsc::UnboundedSender<Job>,
        batches: mpsc::Receiver<Batch>,
    }

    fn start(max_batch_size: usize, delay_ms: u64, batchable: bool) -> Harness {
        let (jobs, incoming) = mpsc::unbounded_channel();
        let (sender, batches) = mpsc::channel(1);
        let limits = Limits {
            max_batch_size,
            max_batch_delay: Duration::from_millis(delay_ms),
            request_timeout: Duration::from_secs(10),
            batchable,
        };
        tokio::spawn(run(incoming, sender, limits, metrics()));
        Harness { jobs, batches }
    }

    fn rows(batch: &Batch) -> Vec<usize> {
        batch.jobs.iter().map(|job| job.rows).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_waits_exactly_the_batch_delay() {
        let mut harness = start(32, 5, true);
        let started = Instant::now();
        let (job, _answer) = job(1, 4);
        harness.jobs.send(job).unwrap();
        let batch = harness.batches.recv().await.unwrap();
        assert_eq!(rows(&batch), [1]);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_arriving_within_the_delay_share_a_batch() {
        let mut harness = start(32, 5, true);
        let mut answers = Vec::new();
        for rows in [1, 2, 3] {
            let (job, answer) = job(rows, 4);
            harness.jobs.send(job).unwrap();
            answers.push(answer);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let batch = harness.batches.recv().await.unwrap();
        assert_eq!(rows(&batch), [1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once() {
        let mut harness = start(4, 1000, true);
        let started = Instant::now();
        let (first, _a) = job(3, 4);
        let (second, _b) = job(1, 4);
        let (third, _c) = job(2, 4);
        for job in [first, second, third] {
            harness.jobs.send(job).unwrap();
        }
        let batch = harness.batches.recv().await.unwrap();
        assert_eq!(rows(&batch), [3, 1]);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no waiting once the batch is full"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_delay_takes_what_is_queued_without_waiting() {
        let mut harness = start(32, 0, true);
        let started = Instant::now();
        let (job, _answer) = job(2, 4);
        harness.jobs.send(job).unwrap();
        assert_eq!(rows(&harness.batches.recv().await.unwrap()), [2]);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn different_inner_shapes_never_share_a_batch_and_the_oldest_goes_first() {
        let mut harness = start(32, 2, true);
        let (narrow, _a) = job(1, 4);
        let (wide, _b) = job(1, 8);
        let (narrow_again, _c) = job(2, 4);
        for job in [narrow, wide, narrow_again] {
            harness.jobs.send(job).unwrap();
        }
        let first = harness.batches.recv().await.unwrap();
        assert_eq!(rows(&first), [1, 2]);
        assert!(first.jobs.iter().all(|job| job.inputs[0].shape()[1] == 4));
        let second = harness.batches.recv().await.unwrap();
        assert_eq!(second.jobs[0].inputs[0].shape(), &[1, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_a_batch_runs_alone() {
        let mut harness = start(4, 2, true);
        let (small, _a) = job(1, 4);
        let (large, _b) = job(10, 4);
        harness.jobs.send(small).unwrap();
        harness.jobs.send(large).unwrap();
        assert_eq!(rows(&harness.batches.recv().await.unwrap()), [1]);
        assert_eq!(rows(&harness.batches.recv().await.unwrap()), [10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_without_a_batch_dimension_runs_requests_one_by_one() {
        let mut harness = start(32, 5, false);
        let started = Instant::now();
        let (first, _a) = job(1, 4);
        let (second, _b) = job(1, 4);
        harness.jobs.send(first).unwrap();
        harness.jobs.send(second).unwrap();
        assert_eq!(rows(&harness.batches.recv().await.unwrap()), [1]);
        assert_eq!(rows(&harness.batches.recv().await.unwrap()), [1]);
        assert_eq!(started.elapsed(), Duration::ZERO, "nothing to wait for");
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_workers_are_busy_everything_queued_joins_the_next_batch() {
        let mut harness = start(32, 1, true);
        let (first, _a) = job(1, 4);
        harness.jobs.send(first).unwrap();
        // The first batch fills the slot; nobody takes it yet (the worker is "busy").
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (job, answer) = job(1, 4);
            harness.jobs.send(job).unwrap();
            answers.push(answer);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert_eq!(rows(&harness.batches.recv().await.unwrap()), [1]);
        assert_eq!(
            rows(&harness.batches.recv().await.unwrap()),
            [1, 1, 1, 1, 1]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_wait_too_long_are_answered_504_and_gone_clients_are_dropped() {
        let (jobs, incoming) = mpsc::unbounded_channel();
        let (sender, mut batches) = mpsc::channel(1);
        let limits = Limits {
            max_batch_size: 32,
            max_batch_delay: Duration::from_millis(1),
            request_timeout: Duration::from_millis(100),
            batchable: true,
        };
        tokio::spawn(run(incoming, sender, limits, metrics()));
        let (blocker, _a) = job(1, 4);
        jobs.send(blocker).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (patient, patient_answer) = job(1, 4);
        let (gone, gone_answer) = job(1, 4);
        jobs.send(patient).unwrap();
        jobs.send(gone).unwrap();
        drop(gone_answer);
        // The slot stays full past the timeout: the queued request is answered 504 meanwhile.
        let answer = tokio::time::timeout(Duration::from_secs(1), patient_answer)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(answer, Err(BatchError::Timeout { .. })));
        assert_eq!(rows(&batches.recv().await.unwrap()), [1]);
        let (later, _later_answer) = job(2, 4);
        jobs.send(later).unwrap();
        assert_eq!(
            rows(&batches.recv().await.unwrap()),
            [2],
            "the gone client's job never ran"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closing_the_queue_still_answers_what_is_queued() {
        let mut harness = start(32, 1000, true);
        let (job, _answer) = job(3, 4);
        harness.jobs.send(job).unwrap();
        drop(harness.jobs);
        assert_eq!(
            rows(&harness.batches.recv().await.unwrap()),
            [3],
            "sent without waiting out the delay"
        );
        assert!(
            harness.batches.recv().await.is_none(),
            "then the queue stops"
        );
    }
}
