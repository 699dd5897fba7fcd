//! The queue task: gathers queued jobs into batches for the model workers.
//!
//! It waits for an idle worker first and only then decides what goes into the batch, so a batch
//! holds everything that arrived while the workers were busy. With a worker in hand it sends the
//! batch once the oldest job's compatible rows reach what recent load says to expect (see
//! [`Demand`]; a client alone never waits) or fill a batch, or `--max-batch-delay` has passed
//! since the worker became free (or the job arrived, if later), whichever comes first. Jobs whose client has gone are dropped; jobs that
//! waited past `--request-timeout` are answered 504. All timing uses tokio's clock, so the tests
//! drive it with paused time.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{
    sync::{
        OwnedSemaphorePermit, Semaphore,
        mpsc::{self, error::TryRecvError},
    },
    time::{Instant, sleep_until},
};

use super::{BatchError, Demand, Job, assemble::BatchKey};
use crate::metrics::BatchMetrics;

/// Far enough in the future to stand for "no deadline".
const NEVER: Duration = Duration::from_secs(24 * 3600);

pub(super) struct Limits {
    pub(crate) max_batch_size: usize,
    pub(crate) max_batch_delay: Duration,
    pub(crate) request_timeout: Duration,
    /// When false (some input or output has a fixed first dimension) every job runs alone.
    pub(crate) batchable: bool,
    /// Model workers sharing the expected rows.
    pub(crate) instances: usize,
}

/// Jobs that run in one model call, oldest first, with the idle-worker permit they took: the
/// worker gives it back by dropping the batch once every job is answered.
pub(super) struct Batch {
    pub(crate) jobs: Vec<Job>,
    pub(crate) idle: OwnedSemaphorePermit,
}

pub(super) struct Channels {
    pub(crate) incoming: mpsc::UnboundedReceiver<Job>,
    pub(crate) batches: mpsc::UnboundedSender<Batch>,
    /// One permit per idle worker.
    pub(crate) idle: Arc<Semaphore>,
    pub(crate) demand: Arc<Demand>,
}

pub(super) async fn run(channels: Channels, limits: Limits, metrics: Arc<BatchMetrics>) {
    let Channels {
        mut incoming,
        batches,
        idle,
        demand,
    } = channels;
    let mut pending = Pending::new(limits, metrics);
    let mut open = true;
    loop {
        if !open && pending.is_empty() {
            return;
        }
        let permit = tokio::select! {
            biased;
            permit = Arc::clone(&idle).acquire_owned(), if !pending.is_empty() => {
                permit.expect("the idle-worker semaphore is never closed")
            }
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
        let idle_since = Instant::now();
        let Some(jobs) = gather(&mut pending, &mut incoming, &mut open, &demand, idle_since).await
        else {
            return;
        };
        if let Err(mpsc::error::SendError(batch)) = batches.send(Batch { jobs, idle: permit }) {
            for job in batch.jobs {
                let _ = job.reply.send(Err(BatchError::Stopped));
            }
            return pending.fail_all();
        }
    }
}

/// With an idle worker in hand: waits until a batch is worth sending, then takes it.
async fn gather(
    pending: &mut Pending,
    incoming: &mut mpsc::UnboundedReceiver<Job>,
    open: &mut bool,
    demand: &Demand,
    idle_since: Instant,
) -> Option<Vec<Job>> {
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
        if !*open || pending.ready(now, demand.expected(), idle_since) {
            return Some(pending.take_batch());
        }
        tokio::select! {
            job = incoming.recv() => match job {
                Some(job) => pending.push(job),
                None => *open = false,
            },
            () = sleep_until(pending.fill_deadline(idle_since)) => {}
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
        *self.rows_by_key.entry(job.key.clone()).or_default() += job.weight();
        self.jobs.push_back(job);
    }

    fn remove(&mut self, index: usize) -> Job {
        let mut job = self.jobs.remove(index).expect("the index is in range");
        if let Some(rows) = self.rows_by_key.get_mut(&job.key) {
            *rows -= job.weight();
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

    /// `--max-batch-delay` after the oldest job could first have run: after it arrived and a
    /// worker was idle. Counting from arrival alone would send whatever queued while the workers
    /// were busy the moment one frees up, and closed-loop clients would then settle into
    /// cohorts that never share a batch (half-size batches at full load).
    fn fill_deadline(&self, idle_since: Instant) -> Instant {
        self.oldest().enqueued.max(idle_since) + self.limits.max_batch_delay
    }

    /// A batch is worth sending when the oldest job's compatible rows reach what this worker
    /// can expect (its share of `expected_rows`, at least one row) or fill a batch, or that job
    /// has waited long enough.
    fn ready(&self, now: Instant, expected_rows: usize, idle_since: Instant) -> bool {
        let oldest = self.oldest();
        let target = expected_rows
            .div_ceil(self.limits.instances.max(1))
            .clamp(1, self.limits.max_batch_size);
        !self.limits.batchable
            || self.rows_by_key.get(&oldest.key).copied().unwrap_or(0) >= target
            || now >= self.fill_deadline(idle_since)
    }

    /// Drops jobs whose client has gone, and answers those that waited too long.
    fn drop_gone(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.jobs.len() {
            match self.jobs[index].abandoned(now, self.limits.request_timeout) {
                Some(reason) => self.remove(index).reject(reason, now, &self.metrics),
                None => index += 1,
            }
        }
    }

    /// The oldest job and, when batching, the following jobs with its key that fit.
    fn take_batch(&mut self) -> Vec<Job> {
        let first = self.remove(0);
        let mut rows = first.weight();
        let mut jobs = vec![first];
        let mut index = 0;
        while self.limits.batchable && rows < self.limits.max_batch_size && index < self.jobs.len()
        {
            let candidate = &self.jobs[index];
            let weight = candidate.weight();
            if candidate.key == jobs[0].key && rows + weight <= self.limits.max_batch_size {
                rows += weight;
                jobs.push(self.remove(index));
            } else {
                index += 1;
            }
        }
        jobs
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
        batch::Admission,
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
        let admission = Admission {
            queued: Arc::new(AtomicUsize::new(rows)),
            rows,
            metrics: metrics(),
        };
        let job = Job::new(
            inputs,
            vec![0],
            reply,
            admission,
            &Arc::new(Demand::default()),
        );
        (job, answer)
    }

    struct Harness {
        jobs: mpsc::UnboundedSender<Job>,
        batches: mpsc::UnboundedReceiver<Batch>,
        demand: Arc<Demand>,
    }

    impl Harness {
        /// As if recent batches had completed with `rows` outstanding.
        fn expect(&self, rows: usize) {
            self.demand
                .expected
                .store(rows, std::sync::atomic::Ordering::Release);
        }

        /// The next batch; dropping it makes its worker idle again.
        async fn next(&mut self) -> Batch {
            self.batches.recv().await.unwrap()
        }
    }

    fn limits(max_batch_size: usize, delay_ms: u64, batchable: bool) -> Limits {
        Limits {
            max_batch_size,
            max_batch_delay: Duration::from_millis(delay_ms),
            request_timeout: Duration::from_secs(10),
            batchable,
            instances: 1,
        }
    }

    fn start_with(limits: Limits) -> Harness {
        let (jobs, incoming) = mpsc::unbounded_channel();
        let (batches, receiver) = mpsc::unbounded_channel();
        let demand = Arc::new(Demand::default());
        let channels = Channels {
            incoming,
            batches,
            idle: Arc::new(Semaphore::new(limits.instances)),
            demand: Arc::clone(&demand),
        };
        tokio::spawn(run(channels, limits, metrics()));
        Harness {
            jobs,
            batches: receiver,
            demand,
        }
    }

    /// A queue for one worker that has seen load enough to wait for a full batch.
    fn start(max_batch_size: usize, delay_ms: u64, batchable: bool) -> Harness {
        let harness = start_with(limits(max_batch_size, delay_ms, batchable));
        harness.expect(max_batch_size);
        harness
    }

    fn rows(batch: &Batch) -> Vec<usize> {
        batch.jobs.iter().map(|job| job.rows).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_client_never_waits() {
        let mut harness = start_with(limits(32, 5, true));
        for _ in 0..3 {
            let started = Instant::now();
            let (job, _answer) = job(1, 4);
            harness.jobs.send(job).unwrap();
            assert_eq!(rows(&harness.next().await), [1]);
            assert_eq!(started.elapsed(), Duration::ZERO, "nobody else is coming");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_a_request_waits_at_most_the_batch_delay() {
        let mut harness = start(32, 5, true);
        let started = Instant::now();
        let (job, _answer) = job(1, 4);
        harness.jobs.send(job).unwrap();
        assert_eq!(rows(&harness.next().await), [1]);
        assert_eq!(started.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_goes_as_soon_as_the_expected_rows_are_in() {
        let mut harness = start_with(limits(32, 5, true));
        harness.expect(6);
        let started = Instant::now();
        let mut answers = Vec::new();
        for rows in [1, 2, 3] {
            if rows > 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let (job, answer) = job(rows, 4);
            harness.jobs.send(job).unwrap();
            answers.push(answer);
        }
        assert_eq!(rows(&harness.next().await), [1, 2, 3]);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(2),
            "before the delay"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_expected_rows_are_shared_among_workers() {
        let mut harness = start_with(Limits {
            instances: 2,
            ..limits(32, 5, true)
        });
        harness.expect(4);
        let started = Instant::now();
        let mut answers = Vec::new();
        for _ in 0..2 {
            let (job, answer) = job(1, 4);
            harness.jobs.send(job).unwrap();
            answers.push(answer);
        }
        assert_eq!(rows(&harness.next().await), [1, 1]);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "half of 4 rows per worker"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expected_rows_follow_the_load_and_forget_a_burst() {
        let demand = Arc::new(Demand::default());
        let burst: Vec<_> = (0..64).map(|_| demand.track(1)).collect();
        demand.observe_completion();
        assert_eq!(demand.expected(), 32);
        drop(burst);
        let alone = demand.track(1);
        for _ in 0..5 {
            demand.observe_completion();
        }
        assert_eq!(demand.expected(), 1, "32, 16, 8, 4, 2, 1");
        drop(alone);
        assert_eq!(
            demand
                .outstanding
                .load(std::sync::atomic::Ordering::Acquire),
            0
        );
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
        let batch = harness.next().await;
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
        assert_eq!(rows(&harness.next().await), [2]);
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
        let first = harness.next().await;
        assert_eq!(rows(&first), [1, 2]);
        assert!(first.jobs.iter().all(|job| job.inputs[0].shape()[1] == 4));
        drop(first);
        let second = harness.next().await;
        assert_eq!(second.jobs[0].inputs[0].shape(), &[1, 8]);
    }

    /// Answers each row with the sum of its values, as a `[rows, 1]` output.
    struct RowSums(Arc<crate::model::Signature>);

    impl crate::model::Model for RowSums {
        fn signature(&self) -> &Arc<crate::model::Signature> {
            &self.0
        }

        fn run(
            &mut self,
            inputs: &[Tensor],
            _outputs: &[usize],
        ) -> Result<Vec<Tensor>, crate::model::ModelError> {
            let TensorData::Fp32(values) = inputs[0].data() else {
                unreachable!("the tests send FP32")
            };
            let sums: Vec<f32> = values
                .chunks(inputs[0].shape()[1])
                .map(|row| row.iter().sum())
                .collect();
            Ok(vec![
                Tensor::new(vec![sums.len(), 1], TensorData::Fp32(sums)).unwrap(),
            ])
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_request_shares_a_batch_without_failing_the_others() {
        let mut harness = start(32, 5, true);
        let (empty, _a) = job(0, 4);
        let (full, _b) = job(3, 4);
        harness.jobs.send(empty).unwrap();
        harness.jobs.send(full).unwrap();
        let mut batch = harness.next().await;
        assert_eq!(rows(&batch), [0, 3], "an empty request stacks no rows");
        let rows = rows(&batch);
        let mut model = RowSums(Arc::new(crate::model::Signature {
            inputs: Vec::new(),
            outputs: Vec::new(),
        }));
        let answers = super::super::worker::run_model(&mut model, &mut batch.jobs, &rows, None)
            .answers
            .expect("the batch's output splits into its jobs' rows");
        let shapes: Vec<&[usize]> = answers.iter().map(|answer| answer[0].shape()).collect();
        assert_eq!(shapes, [&[0, 1][..], &[3, 1]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_a_batch_runs_alone() {
        let mut harness = start(4, 2, true);
        let (small, _a) = job(1, 4);
        let (large, _b) = job(10, 4);
        harness.jobs.send(small).unwrap();
        harness.jobs.send(large).unwrap();
        let first = harness.next().await;
        assert_eq!(rows(&first), [1]);
        drop(first);
        assert_eq!(rows(&harness.next().await), [10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_without_a_batch_dimension_runs_requests_one_by_one() {
        let mut harness = start(32, 5, false);
        let started = Instant::now();
        let (first, _a) = job(1, 4);
        let (second, _b) = job(1, 4);
        harness.jobs.send(first).unwrap();
        harness.jobs.send(second).unwrap();
        let batch = harness.next().await;
        assert_eq!(rows(&batch), [1]);
        drop(batch);
        assert_eq!(rows(&harness.next().await), [1]);
        assert_eq!(started.elapsed(), Duration::ZERO, "nothing to wait for");
    }

    #[tokio::test(start_paused = true)]
    async fn while_the_workers_are_busy_everything_queued_joins_the_next_batch() {
        let mut harness = start(32, 1, true);
        let (first, _a) = job(1, 4);
        harness.jobs.send(first).unwrap();
        let running = harness.next().await;
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (job, answer) = job(1, 4);
            harness.jobs.send(job).unwrap();
            answers.push(answer);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert!(
            harness.batches.try_recv().is_err(),
            "no batch while the only worker is busy"
        );
        drop(running);
        assert_eq!(rows(&harness.next().await), [1, 1, 1, 1, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_worker_still_waits_for_the_expected_rows_so_cohorts_merge() {
        let mut harness = start(32, 2, true);
        harness.expect(4);
        let (first, _a) = job(1, 4);
        harness.jobs.send(first).unwrap();
        let running = harness.next().await;
        let (queued, _b) = job(1, 4);
        harness.jobs.send(queued).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(running);
        let freed = Instant::now();
        let mut answers = Vec::new();
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let (job, answer) = job(1, 4);
            harness.jobs.send(job).unwrap();
            answers.push(answer);
        }
        assert_eq!(
            rows(&harness.next().await),
            [1, 1, 1],
            "the rows that came back after the previous batch joined the one that waited"
        );
        assert_eq!(
            freed.elapsed(),
            Duration::from_millis(2),
            "at most the delay"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_idle_worker_gets_a_batch() {
        let mut harness = start_with(Limits {
            instances: 2,
            ..limits(2, 1, true)
        });
        let mut answers = Vec::new();
        for _ in 0..5 {
            let (job, answer) = job(1, 4);
            harness.jobs.send(job).unwrap();
            answers.push(answer);
        }
        let first = harness.next().await;
        let second = harness.next().await;
        assert_eq!((rows(&first), rows(&second)), (vec![1, 1], vec![1, 1]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(harness.batches.try_recv().is_err(), "both workers are busy");
        drop(first);
        assert_eq!(rows(&harness.next().await), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_wait_too_long_are_answered_504_and_gone_clients_are_dropped() {
        let mut harness = start_with(Limits {
            request_timeout: Duration::from_millis(100),
            ..limits(32, 1, true)
        });
        let (blocker, _a) = job(1, 4);
        harness.jobs.send(blocker).unwrap();
        let running = harness.next().await;
        let (patient, patient_answer) = job(1, 4);
        let (gone, gone_answer) = job(1, 4);
        harness.jobs.send(patient).unwrap();
        harness.jobs.send(gone).unwrap();
        drop(gone_answer);
        // The worker stays busy past the timeout: the queued request is answered 504 meanwhile.
        let answer = tokio::time::timeout(Duration::from_secs(1), patient_answer)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(answer, Err(BatchError::Timeout { .. })));
        drop(running);
        let (later, _later_answer) = job(2, 4);
        harness.jobs.send(later).unwrap();
        assert_eq!(
            rows(&harness.next().await),
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
        let batch = harness.batches.recv().await.unwrap();
        assert_eq!(rows(&batch), [3], "sent without waiting out the delay");
        drop(batch);
        assert!(
            harness.batches.recv().await.is_none(),
            "then the queue stops"
        );
    }
}
