//! A data file through the serving path: the model's sessions built from the same flags as
//! `serve` builds them, a batcher in front of them, and every batch of the file sent through it
//! in order. `eval` and `profile` both score their data here, so neither has an inference path
//! of its own.

use std::time::Duration;

use futures_util::{StreamExt, stream::FuturesOrdered};

use super::data::{Batch, DataError, Dataset, Target};
use crate::{
    app::{self, LoadError},
    batch::{BatchConfig, BatchError, Batcher, WorkerHandle},
    config::RuntimeArgs,
    metrics::ModelLabels,
    model::{Model, Signature, Tensor},
    registry::ModelArtifact,
};

/// Requests kept waiting in the batcher's queue beyond one per instance, so that a worker that
/// finishes finds its next batch there, however long the submitting task takes to be scheduled
/// (on a machine whose cores are all busy reading and inferring, that can be a millisecond).
const QUEUED: usize = 2;
/// Batches read ahead of inference.
const READ_AHEAD: usize = 4;

/// The loaded model behind its batcher.
pub(crate) struct Scorer {
    pub batcher: Batcher,
    pub signature: Signature,
    instances: usize,
    batch_size: usize,
    _workers: WorkerHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("the model cannot be served: {0}")]
    Load(#[from] LoadError),
    #[error("cannot start the model workers: {0}")]
    Workers(#[source] std::io::Error),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("inference failed: {0}")]
    Inference(#[from] BatchError),
}

impl Scorer {
    /// `instances` sessions of `artifact` built from `runtime` as `serve` builds them, behind a
    /// batcher that runs requests of up to `batch_size` rows and never refuses or times out one.
    pub async fn start(
        artifact: &ModelArtifact,
        runtime: &RuntimeArgs,
        instances: u16,
        batch_size: usize,
    ) -> Result<Scorer, ScoreError> {
        let options = runtime.session_options(instances);
        let models = app::load_sessions(artifact, &options, instances).await?;
        let signature = models[0].signature().as_ref().clone();
        let labels = ModelLabels {
            model: artifact.name.clone(),
            version: artifact.version.clone(),
        };
        let batch_size = batch_size.max(1);
        let batch_config = BatchConfig {
            max_batch_size: batch_size,
            max_queue_rows: usize::MAX,
            request_timeout: Duration::from_secs(24 * 3600),
            ..BatchConfig::default()
        };
        let models = models
            .into_iter()
            .map(|m| Box::new(m) as Box<dyn Model>)
            .collect();
        let (batcher, workers) =
            Batcher::start(models, &labels, batch_config).map_err(ScoreError::Workers)?;
        Ok(Scorer {
            batcher,
            signature,
            instances: usize::from(instances),
            batch_size,
            _workers: workers,
        })
    }

    /// Every batch of `dataset` through the batcher, asking for `outputs`. The file is read and
    /// converted on a thread of its own while earlier batches run; `read` sees each batch
    /// before it is sent, `answered` gets its outputs and target, in file order.
    pub async fn score<E>(
        &self,
        dataset: &Dataset,
        outputs: &[usize],
        mut read: impl FnMut(&Batch) -> Result<(), E>,
        mut answered: impl FnMut(Vec<Tensor>, Option<Target>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<ScoreError>,
    {
        let mut batches = read_ahead(dataset.clone(), self.batch_size);
        let mut running = FuturesOrdered::new();
        let in_flight = self.instances + QUEUED;
        loop {
            while running.len() < in_flight {
                let Some(batch) = batches.recv().await else {
                    break;
                };
                let batch = batch.map_err(ScoreError::from)?;
                read(&batch)?;
                let outputs = outputs.to_vec();
                running.push_back(async move {
                    let answer = self.batcher.infer(batch.inputs, outputs).await;
                    (answer, batch.target)
                });
            }
            let Some((answer, target)) = running.next().await else {
                return Ok(());
            };
            answered(answer.map_err(ScoreError::from)?, target)?;
        }
    }
}

/// The dataset's batches, read on a thread of its own, at most [`READ_AHEAD`] ahead.
fn read_ahead(
    dataset: Dataset,
    batch_size: usize,
) -> tokio::sync::mpsc::Receiver<Result<Batch, DataError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(READ_AHEAD);
    std::thread::spawn(move || {
        let batches = match dataset.batches(batch_size) {
            Ok(batches) => batches,
            Err(err) => {
                let _ = sender.blocking_send(Err(err));
                return;
            }
        };
        for batch in batches {
            // The receiver is gone when inference failed; stop reading.
            if sender.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    receiver
}
