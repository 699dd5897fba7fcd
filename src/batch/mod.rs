//! The path from a request to the model, with dynamic batching.
//!
//! [`Batcher`] is the async handle the HTTP layer holds. It admits a request at the edge (a
//! bounded number of queued rows: a full queue is refused at once with 503, never left to grow
//! latency) and queues it as a [`Job`]. The queue task ([`queue`]) waits for an idle model worker
//! ([`worker`]), then coalesces compatible jobs along dimension 0: up to `--max-batch-size` rows,
//! waiting at most `--max-batch-delay` for more, and only for as many as recent load says are
//! coming ([`Demand`]). Every job is answered on its own `oneshot` with exactly its own rows
//! ([`assemble`]).
//!
//! Jobs whose client has gone are dropped before inference; jobs that waited longer than
//! `--request-timeout` are answered 504. Both are counted in `pinserve_rejected_total`.

pub mod assemble;
mod queue;
pub(crate) mod stats;
mod worker;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

pub(crate) use self::worker::{Observer, ScoredBatch, WorkerHandle};
use self::{
    assemble::{BatchKey, rows_of},
    stats::ModelStats,
};
use crate::{
    metrics::{BatchMetrics, ModelLabels, Rejection},
    model::{Model, ModelError, Signature, Tensor},
};

/// How requests are batched and admitted.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Rows per model call at most; a larger request runs alone.
    pub(crate) max_batch_size: usize,
    /// How long a free worker may wait for more rows to join its batch, counted from when it
    /// became free or the oldest request arrived, whichever is later; zero takes what is queued
    /// and never waits.
    pub(crate) max_batch_delay: Duration,
    /// Rows that may wait; beyond that, requests are refused at once.
    pub(crate) max_queue_rows: usize,
    /// How long a request may wait for a worker before it is answered 504.
    pub(crate) request_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_size: 32,
            max_batch_delay: Duration::from_millis(1),
            max_queue_rows: 4096,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a request got no answer from the model.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(
        "the inference queue is full ({queued} rows waiting, --max-queue-rows is {limit}); retry later"
    )]
    QueueFull { queued: usize, limit: usize },
    #[error("the request waited {waited:?} in the queue, longer than --request-timeout")]
    Timeout { waited: Duration },
    #[error("the inference workers have stopped")]
    Stopped,
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// One request on its way to the model.
pub(crate) struct Job {
    /// Inputs bound in signature order.
    pub(crate) inputs: Vec<Tensor>,
    /// Signature indices of the outputs to return.
    pub(crate) outputs: Vec<usize>,
    /// Rows the job stacks into a batch and gets back: dimension 0 of its inputs, maybe zero.
    pub(crate) rows: usize,
    pub(crate) key: BatchKey,
    pub(crate) enqueued: Instant,
    pub(crate) reply: oneshot::Sender<Result<Vec<Tensor>, BatchError>>,
    /// The request's span, entered again on the worker so its logs carry the request's fields.
    pub(crate) span: tracing::Span,
    /// The job's share of `--max-queue-rows`, given back when it leaves the queue.
    admission: Admission,
    /// Counts the job's rows as outstanding until it is answered and dropped.
    _outstanding: Outstanding,
}

/// What `rows` count for in admission, demand and batch sizes: at least one, since even an
/// empty request costs a model call. Never used to split outputs: a job gets back exactly its
/// own rows, zero included.
fn weight(rows: usize) -> usize {
    rows.max(1)
}

impl Job {
    /// A job for `inputs`, admitted with `admission`, its weight counted in `demand` until it is
    /// answered.
    fn new(
        inputs: Vec<Tensor>,
        outputs: Vec<usize>,
        reply: oneshot::Sender<Result<Vec<Tensor>, BatchError>>,
        admission: Admission,
        demand: &Arc<Demand>,
    ) -> Job {
        let rows = rows_of(&inputs);
        Job {
            key: BatchKey::of(&inputs, &outputs),
            inputs,
            outputs,
            rows,
            enqueued: Instant::now(),
            reply,
            span: tracing::Span::current(),
            admission,
            _outstanding: demand.track(weight(rows)),
        }
    }

    fn weight(&self) -> usize {
        weight(self.rows)
    }

    /// The job leaves the queue: its rows no longer count against admission.
    fn dequeue(&mut self) {
        self.admission.release();
    }

    /// Why the job should not run any more, if so: its client has gone, or it has waited
    /// `request_timeout`. Checked in the queue and again on the worker, since a client may leave
    /// and a deadline may pass in between.
    fn abandoned(&self, now: Instant, request_timeout: Duration) -> Option<Rejection> {
        if self.reply.is_closed() {
            Some(Rejection::ClientDisconnected)
        } else if now.saturating_duration_since(self.enqueued) >= request_timeout {
            Some(Rejection::Timeout)
        } else {
            None
        }
    }

    /// Counts the job as not run and answers it (504) if its client is still there.
    fn reject(self, reason: Rejection, now: Instant, metrics: &BatchMetrics) {
        metrics.rejected(reason);
        if reason == Rejection::Timeout {
            let waited = now.saturating_duration_since(self.enqueued);
            let _ = self.reply.send(Err(BatchError::Timeout { waited }));
        }
    }
}

/// Rows admitted into the queue, counted so that admission is a single atomic update.
struct Admission {
    queued: Arc<AtomicUsize>,
    rows: usize,
    metrics: Arc<BatchMetrics>,
}

impl Admission {
    fn release(&mut self) {
        let rows = std::mem::take(&mut self.rows);
        if rows > 0 {
            let left = self.queued.fetch_sub(rows, Ordering::AcqRel) - rows;
            self.metrics.queue_rows.set(left as f64);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.release();
    }
}

/// How many rows the next batch can expect. Clients mostly wait for an answer before they send
/// again, so the rows outstanding (queued or running) when a batch completes are about the rows
/// that come back for the next one. The queue task waits (at most `--max-batch-delay`) only for
/// that many: under load batches fill, and a client alone never waits for company.
#[derive(Default)]
pub(crate) struct Demand {
    outstanding: AtomicUsize,
    expected: AtomicUsize,
}

impl Demand {
    fn track(self: &Arc<Self>, rows: usize) -> Outstanding {
        self.outstanding.fetch_add(rows, Ordering::AcqRel);
        Outstanding {
            demand: Arc::clone(self),
            rows,
        }
    }

    /// Called as a batch completes, before its jobs are answered: a moving average that forgets
    /// a burst within a few batches.
    pub(crate) fn observe_completion(&self) {
        let outstanding = self.outstanding.load(Ordering::Acquire);
        let _ = self
            .expected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |expected| {
                // Rounding down, so one client alone brings it back to 1.
                Some((expected + outstanding) / 2)
            });
    }

    /// Rows the next batch can expect, across all workers.
    pub(crate) fn expected(&self) -> usize {
        self.expected.load(Ordering::Acquire)
    }
}

/// A job's rows counted in [`Demand`] until the job is answered and dropped.
struct Outstanding {
    demand: Arc<Demand>,
    rows: usize,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.demand
            .outstanding
            .fetch_sub(self.rows, Ordering::AcqRel);
    }
}

/// A cloneable handle that submits requests to the model's workers.
#[derive(Clone)]
pub struct Batcher {
    jobs: mpsc::UnboundedSender<Job>,
    signature: Arc<Signature>,
    /// `--max-queue-rows`.
    max_queue_rows: usize,
    queued: Arc<AtomicUsize>,
    demand: Arc<Demand>,
    metrics: Arc<BatchMetrics>,
    stats: Arc<ModelStats>,
}

impl Batcher {
    /// Moves each model instance onto a thread of its own and starts the queue. Everything stops
    /// once every handle is dropped and every queued request has been answered.
    pub fn start(
        models: Vec<Box<dyn Model>>,
        labels: &ModelLabels,
        config: BatchConfig,
    ) -> std::io::Result<(Batcher, WorkerHandle)> {
        Batcher::start_observed(models, labels, config, None)
    }

    /// [`Batcher::start`], with every scored batch handed to `observer` once it is answered.
    pub(crate) fn start_observed(
        models: Vec<Box<dyn Model>>,
        labels: &ModelLabels,
        config: BatchConfig,
        observer: Option<Arc<dyn Observer>>,
    ) -> std::io::Result<(Batcher, WorkerHandle)> {
        let signature = Arc::clone(models[0].signature());
        let metrics = Arc::new(labels.batch_metrics());
        let batchable = signature.is_batchable();
        if !batchable {
            tracing::info!(
                "batching is off for this model: not every input and output has a dynamic first dimension, so requests run one by one"
            );
        }
        let (jobs, queued_jobs) = mpsc::unbounded_channel();
        let (batches, queued_batches) = mpsc::unbounded_channel();
        let instances = models.len();
        // A permit per idle worker: a batch is formed only when a worker can run it at once, so
        // it holds everything that arrived while the workers were busy.
        let idle = Arc::new(tokio::sync::Semaphore::new(instances));
        let demand = Arc::new(Demand::default());
        let stats = Arc::new(ModelStats::default());
        let workers = worker::spawn(
            models,
            queued_batches,
            labels,
            worker::Shared {
                metrics: Arc::clone(&metrics),
                demand: Arc::clone(&demand),
                request_timeout: config.request_timeout,
                observer,
                stats: Arc::clone(&stats),
            },
        )?;
        let limits = queue::Limits {
            max_batch_size: config.max_batch_size.max(1),
            max_batch_delay: config.max_batch_delay,
            request_timeout: config.request_timeout,
            batchable,
            instances,
        };
        tokio::spawn(queue::run(
            queue::Channels {
                incoming: queued_jobs,
                batches,
                idle,
                demand: Arc::clone(&demand),
            },
            limits,
            Arc::clone(&metrics),
        ));
        let batcher = Batcher {
            jobs,
            signature,
            max_queue_rows: config.max_queue_rows,
            queued: Arc::new(AtomicUsize::new(0)),
            demand,
            metrics,
            stats,
        };
        Ok((batcher, workers))
    }

    pub(crate) fn signature(&self) -> &Arc<Signature> {
        &self.signature
    }

    /// The statistics extension's figures of what this batcher has run.
    pub(crate) fn stats(&self) -> &ModelStats {
        &self.stats
    }

    pub(crate) async fn infer(
        &self,
        inputs: Vec<Tensor>,
        outputs: Vec<usize>,
    ) -> Result<Vec<Tensor>, BatchError> {
        let submitted = Instant::now();
        let answer = self.submit(inputs, outputs).await;
        self.stats
            .record_request(answer.is_ok(), submitted.elapsed());
        answer
    }

    async fn submit(
        &self,
        inputs: Vec<Tensor>,
        outputs: Vec<usize>,
    ) -> Result<Vec<Tensor>, BatchError> {
        let admission = self.admit(weight(rows_of(&inputs)))?;
        let (reply, answer) = oneshot::channel();
        let job = Job::new(inputs, outputs, reply, admission, &self.demand);
        self.jobs.send(job).map_err(|_| BatchError::Stopped)?;
        answer.await.map_err(|_| BatchError::Stopped)?
    }

    /// Counts `rows` into the queue, or refuses them when they would exceed `--max-queue-rows`.
    /// A request larger than the whole queue is still admitted into an empty one, where it
    /// waits for nobody and runs alone.
    fn admit(&self, rows: usize) -> Result<Admission, BatchError> {
        let limit = self.max_queue_rows;
        let admitted = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + rows <= limit || queued == 0).then_some(queued + rows)
            });
        match admitted {
            Ok(before) => {
                self.metrics.queue_rows.set((before + rows) as f64);
                Ok(Admission {
                    queued: Arc::clone(&self.queued),
                    rows,
                    metrics: Arc::clone(&self.metrics),
                })
            }
            Err(queued) => {
                self.metrics.rejected(Rejection::QueueFull);
                Err(BatchError::QueueFull { queued, limit })
            }
        }
    }
}
