//! The path from a request to the model: [`Batcher`] is the async handle the HTTP layer holds;
//! it queues a [`Job`] for the worker thread that owns the model session, and each job is
//! answered on its own `oneshot` channel.
//!
//! Admission happens here, at the edge: the queue is bounded and a full queue is refused at
//! once (503 with `Retry-After`) rather than letting latency grow without bound.

mod worker;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use self::worker::WorkerHandle;
use crate::{
    metrics::ModelLabels,
    model::{Model, ModelError, Signature, Tensor},
};

/// Requests that may wait for the model before new ones are refused.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// One request on its way to the model.
pub struct Job {
    /// Inputs bound in signature order.
    pub inputs: Vec<Tensor>,
    /// Signature indices of the outputs to return.
    pub outputs: Vec<usize>,
    pub reply: oneshot::Sender<Result<Vec<Tensor>, ModelError>>,
    /// The request's span, entered again on the worker so its logs carry the request's fields.
    pub span: tracing::Span,
}

/// Why a request got no answer from the model.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the inference queue is full ({capacity} requests waiting); retry later")]
    QueueFull { capacity: usize },
    #[error("the inference worker has stopped")]
    Stopped,
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A cloneable handle that submits requests to the model's worker thread.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Job>,
    signature: Arc<Signature>,
}

impl Batcher {
    /// Moves the model onto its own thread and returns the handle that feeds it. The worker stops
    /// once every handle is dropped and the queue is empty, so queued requests are never lost.
    pub fn start(
        model: Box<dyn Model>,
        labels: &ModelLabels,
        queue_capacity: usize,
    ) -> std::io::Result<(Batcher, WorkerHandle)> {
        let (queue, jobs) = mpsc::channel(queue_capacity);
        let signature = Arc::clone(model.signature());
        let worker = worker::spawn(model, jobs, labels)?;
        Ok((Batcher { queue, signature }, worker))
    }

    pub fn signature(&self) -> &Arc<Signature> {
        &self.signature
    }

    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        outputs: Vec<usize>,
    ) -> Result<Vec<Tensor>, BatchError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            outputs,
            reply,
            span: tracing::Span::current(),
        };
        self.queue.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => BatchError::QueueFull {
                capacity: self.queue.max_capacity(),
            },
            mpsc::error::TrySendError::Closed(_) => BatchError::Stopped,
        })?;
        Ok(answer.await.map_err(|_| BatchError::Stopped)??)
    }
}
