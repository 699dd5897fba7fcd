//! The thread that owns a model session and runs the queued jobs.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    thread::JoinHandle,
    time::Instant,
};

use metrics::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::Job;
use crate::{
    metrics::ModelLabels,
    model::{Model, ModelError},
};

/// Lets the application wait for the worker to finish the queue during shutdown.
pub struct WorkerHandle {
    thread: JoinHandle<()>,
    finished: oneshot::Receiver<()>,
}

impl WorkerHandle {
    /// Resolves once the worker has answered every queued job and released the model.
    pub async fn finished(self) {
        // An error means the thread ended without signalling (it panicked); either way it is done.
        let _ = self.finished.await;
        let _ = self.thread.join();
    }
}

pub(super) fn spawn(
    mut model: Box<dyn Model>,
    mut jobs: mpsc::Receiver<Job>,
    labels: &ModelLabels,
) -> std::io::Result<WorkerHandle> {
    let inference_duration = labels.inference_duration();
    let (done, finished) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("pinserve-model".to_owned())
        .spawn(move || {
            while let Some(job) = jobs.blocking_recv() {
                run_job(model.as_mut(), job, &inference_duration);
            }
            drop(model);
            let _ = done.send(());
        })?;
    Ok(WorkerHandle { thread, finished })
}

fn run_job(model: &mut dyn Model, job: Job, inference_duration: &Histogram) {
    let _entered = job.span.enter();
    if job.reply.is_closed() {
        tracing::debug!("skipping a request whose client has gone");
        return;
    }
    let started = Instant::now();
    // A panic must cost one request, not the worker every later request depends on.
    let result = catch_unwind(AssertUnwindSafe(|| model.run(job.inputs, &job.outputs)))
        .unwrap_or_else(|_| {
            Err(ModelError::Inference(
                "the model panicked during inference".to_owned(),
            ))
        });
    inference_duration.record(started.elapsed().as_secs_f64());
    let _ = job.reply.send(result);
}
