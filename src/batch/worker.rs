//! The threads that own the model sessions (one per `--instances`), each taking the next batch,
//! stacking its jobs' inputs, running the model once and answering every job with its rows.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use metrics::Histogram;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    BatchError, Demand, Job,
    assemble::{concat, split},
    queue::Batch,
    stats::{CallTimes, ModelStats},
};
use crate::{
    metrics::{BatchMetrics, ModelLabels},
    model::{Model, ModelError, Tensor},
};

/// Lets the application wait for the workers to finish during shutdown.
pub struct WorkerHandle {
    threads: Vec<JoinHandle<()>>,
    finished: Vec<oneshot::Receiver<()>>,
}

impl WorkerHandle {
    /// Resolves once every worker has answered every batch and released its model.
    pub(crate) async fn finished(self) {
        for finished in self.finished {
            // An error means the thread ended without signalling (it panicked); it is done.
            let _ = finished.await;
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// What every worker shares.
pub(super) struct Shared {
    pub(crate) metrics: Arc<BatchMetrics>,
    pub(crate) demand: Arc<Demand>,
    pub(crate) request_timeout: Duration,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    pub(crate) stats: Arc<ModelStats>,
}

/// Sees every scored batch once its requests have been answered (drift monitoring). It is
/// called on the worker thread, so it must hand the batch off without blocking.
pub(crate) trait Observer: Send + Sync + 'static {
    /// Signature indices of the outputs it reads, from those a batch computed.
    fn outputs(&self) -> &[usize];

    fn observe(&self, batch: ScoredBatch);
}

/// A scored batch, as an [`Observer`] sees it.
pub(crate) struct ScoredBatch {
    /// The batch's inputs, in signature order.
    pub(crate) inputs: Vec<Tensor>,
    /// The outputs the observer reads that the batch computed, with their signature indices.
    pub(crate) outputs: Vec<(usize, Tensor)>,
}

/// A batch's answers, and what the observer is given once they are sent.
pub(super) struct Scored {
    pub(crate) answers: Result<Vec<Vec<Tensor>>, ModelError>,
    observed: Option<ScoredBatch>,
    times: CallTimes,
}

pub(super) fn spawn(
    models: Vec<Box<dyn Model>>,
    batches: mpsc::UnboundedReceiver<Batch>,
    labels: &ModelLabels,
    shared: Shared,
) -> std::io::Result<WorkerHandle> {
    let batches = Arc::new(Mutex::new(batches));
    let shared = Arc::new(shared);
    let mut handle = WorkerHandle {
        threads: Vec::new(),
        finished: Vec::new(),
    };
    for (index, mut model) in models.into_iter().enumerate() {
        let batches = Arc::clone(&batches);
        let shared = Arc::clone(&shared);
        let inference_duration = labels.inference_duration();
        let (done, finished) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("pinserve-model-{index}"))
            .spawn(move || {
                while let Some(batch) = next_batch(&batches) {
                    let Batch { jobs, idle } = batch;
                    let jobs = still_wanted(jobs, shared.request_timeout, &shared.metrics);
                    if !jobs.is_empty() {
                        run_batch(model.as_mut(), jobs, &inference_duration, &shared);
                    }
                    // Idle again: the queue task may form the next batch for this worker.
                    drop(idle);
                }
                drop(model);
                let _ = done.send(());
            })?;
        handle.threads.push(thread);
        handle.finished.push(finished);
    }
    Ok(handle)
}

/// Waits for the next batch; workers take turns at the shared receiver.
fn next_batch(batches: &Mutex<mpsc::UnboundedReceiver<Batch>>) -> Option<Batch> {
    batches
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .blocking_recv()
}

/// Between the queue and the worker a client may leave and a deadline may pass: such jobs are
/// dropped or answered 504 exactly as they would have been in the queue.
fn still_wanted(jobs: Vec<Job>, request_timeout: Duration, metrics: &BatchMetrics) -> Vec<Job> {
    let now = Instant::now();
    jobs.into_iter()
        .filter_map(|job| match job.abandoned(now, request_timeout) {
            Some(reason) => {
                job.reject(reason, now, metrics);
                None
            }
            None => Some(job),
        })
        .collect()
}

fn run_batch(
    model: &mut dyn Model,
    mut jobs: Vec<Job>,
    inference_duration: &Histogram,
    shared: &Shared,
) {
    let metrics = &shared.metrics;
    for job in &jobs {
        let waited = job.enqueued.elapsed();
        metrics.queue_duration.record(waited.as_secs_f64());
        shared.stats.record_queue(waited);
    }
    let rows: Vec<usize> = jobs.iter().map(|job| job.rows).collect();
    metrics.batch_size.record(rows.iter().sum::<usize>() as f64);
    let span = jobs[0].span.clone();
    let _entered = span.enter();
    let started = Instant::now();
    let observed = shared.observer.as_ref().map(|o| o.outputs());
    let Scored {
        answers,
        observed,
        times,
    } = run_model(model, &mut jobs, &rows, observed);
    inference_duration.record(started.elapsed().as_secs_f64());
    if answers.is_ok() {
        shared
            .stats
            .record_call(jobs.len(), rows.iter().sum(), times);
    }
    shared.demand.observe_completion();
    reply(jobs, answers);
    if let (Some(observer), Some(batch)) = (&shared.observer, observed) {
        observer.observe(batch);
    }
}

/// One model call for the whole batch (the inputs stacked when there are several jobs). With an
/// observer, the batch's inputs and the outputs in `observed` (signature indices) are kept for
/// it; without one, the inputs are freed as soon as the call returns. A panic must cost this
/// batch, not the worker every later request depends on.
pub(super) fn run_model(
    model: &mut dyn Model,
    jobs: &mut [Job],
    rows: &[usize],
    observed: Option<&[usize]>,
) -> Scored {
    let outputs = jobs[0].outputs.clone();
    let mut times = CallTimes::default();
    let scored = catch_unwind(AssertUnwindSafe(|| {
        let started = Instant::now();
        let inputs = match jobs {
            [job] => std::mem::take(&mut job.inputs),
            _ => concat(
                &jobs
                    .iter()
                    .map(|job| job.inputs.as_slice())
                    .collect::<Vec<_>>(),
            ),
        };
        let stacked = Instant::now();
        times.input = stacked - started;
        let answer = model.run(&inputs, &outputs)?;
        let inferred = Instant::now();
        times.infer = inferred - stacked;
        let kept = observed.map(|observed| ScoredBatch {
            outputs: outputs
                .iter()
                .zip(&answer)
                .filter(|(index, _)| observed.contains(index))
                .map(|(&index, tensor)| (index, tensor.clone()))
                .collect(),
            inputs,
        });
        let answers = match jobs {
            [_] => vec![answer],
            _ => split(answer, rows)?,
        };
        times.output = inferred.elapsed();
        Ok((answers, kept))
    }));
    let (answers, observed) = match scored {
        Ok(Ok((answers, observed))) => (Ok(answers), observed),
        Ok(Err(err)) => (Err(err), None),
        Err(_) => (
            Err(ModelError::Inference(
                "the model panicked during inference".to_owned(),
            )),
            None,
        ),
    };
    Scored {
        answers,
        observed,
        times,
    }
}

fn reply(jobs: Vec<Job>, answers: Result<Vec<Vec<Tensor>>, ModelError>) {
    match answers {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                let _ = job.reply.send(Ok(answer));
            }
        }
        Err(err) => {
            for job in jobs {
                let _ = job.reply.send(Err(BatchError::Model(err.clone())));
            }
        }
    }
}
