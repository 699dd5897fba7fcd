//! A data file through the serving path: the model's sessions built from the same flags as
//! `serve` builds them, a batcher in front of them, and every batch of the file sent through it
//! in order. `eval` and `profile` both score their data here, so neither has an inference path
//! of its own.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::{StreamExt, stream::FuturesOrdered};

use super::{
    data::{Batch, DataError, DataFile, Dataset, Format, Target},
    task::{Overrides, Task},
};
use crate::{
    app::{self, LoadError},
    batch::{BatchConfig, BatchError, Batcher, WorkerHandle},
    config::{EvalTask, FetchArgs, RuntimeArgs, ScoringArgs},
    metrics::ModelLabels,
    model::{Model, Signature, Tensor},
    registry::{
        Digest, Location, ModelArtifact, ModelReference, RegistryError, cache::Cache, obtain,
    },
};

impl ScoringArgs {
    /// The task and outputs the flags fix; the rest is inferred from the model's outputs.
    pub(crate) fn overrides(&self, positive_class: Option<String>) -> Overrides {
        Overrides {
            task: self.task.map(|task| match task {
                EvalTask::Classification => Task::Classification,
                EvalTask::Regression => Task::Regression,
            }),
            label_output: self.label_output.clone(),
            score_output: self.score_output.clone(),
            positive_class,
            classes: None,
        }
    }
}

/// Requests kept waiting in the batcher's queue beyond one per instance, so that a worker that
/// finishes finds its next batch there, however long the submitting task takes to be scheduled
/// (on a machine whose cores are all busy reading and inferring, that can be a millisecond).
const QUEUED: usize = 2;
/// Batches read ahead of inference.
const READ_AHEAD: usize = 4;

/// The loaded model behind its batcher.
pub(crate) struct Scorer {
    pub(crate) batcher: Batcher,
    pub(crate) signature: Signature,
    instances: usize,
    batch_size: usize,
    _workers: WorkerHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the model cannot be served: {0}")]
    Load(#[from] LoadError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: sha256 {found}, but --data-sha256 expects {expected}")]
    DataDigest {
        path: String,
        expected: Digest,
        found: String,
    },
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
    pub(crate) async fn start(
        artifact: &ModelArtifact,
        runtime: &RuntimeArgs,
        instances: u16,
        batch_size: usize,
    ) -> Result<Scorer, ScoreError> {
        let options = runtime.session_options(instances);
        let models =
            app::load_sessions(artifact, &options, instances, &app::WarmUp::Generated).await?;
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
    pub(crate) async fn score<E>(
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

/// `data` read once: where it is on local disk; at a URL downloaded and verified as a model is,
/// into a directory below `cache_dir` that goes when the returned guard is dropped. Hashed and
/// counted, and refused unless its digest is `expected` when that is given.
pub(crate) async fn open_data(
    data: &str,
    expected: Option<Digest>,
    cache_dir: &Path,
    fetch: &FetchArgs,
) -> Result<(DataFile, Option<tempfile::TempDir>), ScoreError> {
    let location = Location::parse(data)?;
    let shown = location.to_string();
    let (local, downloaded) = match location {
        Location::Local(path) => (path, None),
        Location::Remote(url) => {
            let (path, dir) = download(&url, &shown, cache_dir, fetch).await?;
            (path, Some(dir))
        }
    };
    let file = DataFile::read_as(&local, &shown)?;
    if let Some(expected) = expected
        && file.sha256 != expected.to_string()
    {
        return Err(ScoreError::DataDigest {
            path: shown,
            expected,
            found: file.sha256,
        });
    }
    Ok((file, downloaded))
}

async fn download(
    url: &url::Url,
    shown: &str,
    cache_dir: &Path,
    fetch: &FetchArgs,
) -> Result<(PathBuf, tempfile::TempDir), ScoreError> {
    // Before downloading what could not be read anyway.
    let name = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    Format::of(Path::new(name), shown)?;
    let io = |source| ScoreError::Io {
        path: cache_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(cache_dir).map_err(io)?;
    let dir = tempfile::Builder::new()
        .prefix(".eval-data-")
        .tempdir_in(cache_dir)
        .map_err(io)?;
    let options = fetch.transfer_options();
    let path = obtain::file_into(url, dir.path(), &fetch.resolver(), &options).await?;
    Ok((path, dir))
}

/// The model `reference` names, fetched and verified as `serve` fetches it, with the digest of
/// its file (hashed here when no registry or sidecar vouched for it, so a report still names the
/// exact bytes used).
pub(crate) async fn obtain_model(
    reference: &ModelReference,
    cache_dir: &Path,
    fetch: &FetchArgs,
) -> Result<ModelArtifact, ScoreError> {
    let cache = Cache::unbounded(cache_dir);
    let mut artifact = app::obtain_artifact(reference, &cache, fetch).await?;
    if artifact.sha256.is_none() {
        let digest = Digest::of_file(&artifact.model_file).map_err(|source| ScoreError::Io {
            path: artifact.model_file.display().to_string(),
            source,
        })?;
        artifact.sha256 = Some(digest);
    }
    Ok(artifact)
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
