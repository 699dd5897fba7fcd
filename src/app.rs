//! Wiring and lifecycle: bind, serve (`/health` says loading), load and warm up the model off
//! the async runtime, turn ready, and on shutdown drain, stop accepting, let in-flight requests
//! finish within a grace period and stop the model worker after its queue is empty.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{
    net::TcpListener,
    sync::oneshot,
    task::JoinHandle,
    time::{Instant, timeout, timeout_at},
};

use crate::{
    batch::{Batcher, Observer, WorkerHandle},
    config::{FetchArgs, FetchConfig, ServeConfig},
    drift::Monitor,
    grpc,
    http::{
        self, AppState, ServingModel,
        server::{self, Stages},
    },
    metrics::ModelLabels,
    model::{self, Model, ModelError, OnnxModel, SessionOptions, Signature, Tensor},
    profile::{self, ProfileError, ReferenceProfile},
    protocol,
    registry::{
        Digest, Manifest, ModelArtifact, ModelReference, RegistryError, cache::Cache, mlflow,
        obtain,
    },
};

/// How long a failed load stays visible on `/health` before the process exits non-zero, so a
/// person or probe can read why before Kubernetes restarts the container.
const FAILED_EXIT_DELAY: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid model configuration")]
    Config(#[source] RegistryError),
    #[error("HTTP server")]
    Io(#[from] std::io::Error),
    #[error("cannot listen on {address}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("the model failed to load")]
    Load(#[from] LoadError),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Signature(#[from] mlflow::SignatureError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("cannot start the drift monitor: {0}")]
    Drift(std::io::Error),
    #[error("cannot start the loader thread: {0}")]
    Thread(std::io::Error),
    #[error("the loader thread panicked")]
    Panicked,
    #[error("cannot read --warmup-data {}: {source}", path.display())]
    WarmUpData {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the MLflow input example: {0}")]
    InputExample(#[from] mlflow::example::ExampleError),
    /// `data`: what the model was warmed up with.
    #[error("the warm-up inference failed ({data}): {message}")]
    WarmUp { data: String, message: String },
}

/// The sockets `serve` answers on, bound before anything else happens so that probes get
/// answers (503 while loading) rather than refused connections.
pub struct Listeners {
    pub(crate) http: TcpListener,
    /// `None` with `--grpc-listen none`.
    pub(crate) grpc: Option<TcpListener>,
}

impl Listeners {
    /// Binds `--listen` and `--grpc-listen`.
    pub async fn bind(config: &ServeConfig) -> Result<Listeners, AppError> {
        let http = bind(&config.listen).await?;
        let grpc = match config.grpc_listen() {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        Ok(Listeners { http, grpc })
    }
}

async fn bind(address: &str) -> Result<TcpListener, AppError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| AppError::Bind {
            address: address.to_owned(),
            source,
        })
}

/// Serves until `shutdown` resolves, then drains and stops. Returns an error, after
/// [`FAILED_EXIT_DELAY`], if the model cannot be loaded.
pub async fn run(
    config: ServeConfig,
    listeners: Listeners,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let source = ServeSource::from_config(&config).map_err(AppError::Config)?;
    let state = Arc::new(
        AppState::new(source.initial_labels(), config.max_body_bytes, metrics)
            .with_body_read_timeout(config.connections.body_read_timeout)
            .with_body_budget(config.max_inflight_body_bytes),
    );
    let stages = Stages::default();
    let server = serve(listeners, &state, &config, &stages)?;

    tokio::pin!(shutdown);
    let loaded = tokio::select! {
        loaded = load(&config, &source, &state) => Some(loaded),
        () = &mut shutdown => None,
    };
    let worker = match loaded {
        Some(Ok(loaded)) => {
            let worker = publish(&state, loaded, &config)?;
            shutdown.await;
            Some(worker)
        }
        Some(Err(err)) => {
            report_failure(&state, &err, shutdown).await;
            stages.close.cancel();
            if timeout(Duration::from_secs(1), server).await.is_err() {
                stages.abort.cancel();
            }
            return Err(err.into());
        }
        None => None,
    };
    drain_and_stop(state, server, stages, worker, &config).await
}

/// Serves HTTP, and gRPC when it has a listener, in one task that ends when both servers have.
fn serve(
    listeners: Listeners,
    state: &Arc<AppState>,
    config: &ServeConfig,
    stages: &Stages,
) -> Result<JoinHandle<()>, AppError> {
    let limits = config.connections.limits();
    server::raise_open_file_limit(limits.max_connections);
    let grpc = match listeners.grpc {
        Some(listener) => {
            let address = listener.local_addr()?;
            tracing::info!(%address, protocol = "grpc", "listening");
            let router = grpc::router(Arc::clone(state));
            Some(server::serve(
                listener,
                router,
                limits.clone(),
                stages.clone(),
            ))
        }
        None => None,
    };
    let address = listeners.http.local_addr()?;
    let router = http::router(Arc::clone(state));
    let http = server::serve(listeners.http, router, limits, stages.clone());
    tracing::info!(%address, protocol = "http", "listening");
    Ok(tokio::spawn(async move {
        match grpc {
            Some(grpc) => drop(tokio::join!(http, grpc)),
            None => http.await,
        }
    }))
}

/// Shows the failure on `/health` for [`FAILED_EXIT_DELAY`] (or until a shutdown signal).
async fn report_failure(state: &AppState, err: &LoadError, shutdown: impl Future<Output = ()>) {
    let error = crate::registry::redact::error_chain(err);
    tracing::error!(%error, delay = ?FAILED_EXIT_DELAY, "model failed to load; exiting");
    state.set_failed(error);
    tokio::select! {
        () = tokio::time::sleep(FAILED_EXIT_DELAY) => {}
        () = shutdown => {}
    }
}

/// What `serve` loads: a directory `pinserve fetch` filled, or a reference it resolves itself.
enum ServeSource {
    Fetched(PathBuf),
    Reference(ModelReference),
}

impl ServeSource {
    fn from_config(config: &ServeConfig) -> Result<ServeSource, RegistryError> {
        match &config.model_dir {
            Some(dir) => Ok(ServeSource::Fetched(dir.clone())),
            None => config.source.reference().map(ServeSource::Reference),
        }
    }

    /// The identity to report until the model is resolved: the version stays empty until an
    /// alias or stage has been resolved.
    fn initial_labels(&self) -> ModelLabels {
        match self {
            ServeSource::Fetched(dir) => match Manifest::read(dir) {
                Ok(Some(manifest)) => ModelLabels {
                    model: manifest.model,
                    version: manifest.version,
                },
                _ => ModelLabels {
                    model: String::new(),
                    version: String::new(),
                },
            },
            ServeSource::Reference(reference) => ModelLabels {
                model: reference.name().to_owned(),
                version: reference.pinned_version().unwrap_or_default().to_owned(),
            },
        }
    }
}

struct Loaded {
    /// One session per `--instances`.
    models: Vec<OnnxModel>,
    artifact: ModelArtifact,
    /// The reference profile drift is monitored against, checked against the model.
    profile: Option<ReferenceProfile>,
    load_seconds: f64,
}

/// Gets the model's files (fetching them if they are remote), then loads and warms it up.
async fn load(
    config: &ServeConfig,
    source: &ServeSource,
    state: &AppState,
) -> Result<Loaded, LoadError> {
    let artifact = match source {
        ServeSource::Fetched(dir) => {
            let signing = config.fetch.signing.policy().map_err(RegistryError::from)?;
            obtain::from_fetched(dir, config.fetch.model_sha256(), signing.as_ref()).await?
        }
        ServeSource::Reference(reference) => {
            obtain_artifact(reference, &config.cache(), &config.fetch).await?
        }
    };
    state.identify(ModelLabels {
        model: artifact.name.clone(),
        version: artifact.version.clone(),
    });
    let started = Instant::now();
    let digest = digest_alongside(&artifact);
    let options = config.runtime.session_options(config.batching.instances);
    let warm_up = WarmUp::choose(config, &artifact)?;
    let models = load_sessions(&artifact, &options, config.batching.instances, &warm_up).await?;
    let profile = reference_profile(config, &artifact, models[0].signature())?;
    let mut artifact = artifact;
    if let Some(digest) = digest {
        artifact.sha256 = digest.await.ok().flatten();
    }
    Ok(Loaded {
        models,
        artifact,
        profile,
        load_seconds: started.elapsed().as_secs_f64(),
    })
}

/// `--reference-profile`, else `reference.json` beside the model file (where `fetch` puts the
/// version's profile), checked against the model: a profile that does not fit it fails the load.
fn reference_profile(
    config: &ServeConfig,
    artifact: &ModelArtifact,
    signature: &Signature,
) -> Result<Option<ReferenceProfile>, LoadError> {
    let beside = artifact.model_file.with_file_name(profile::FILE_NAME);
    let path = match &config.drift.reference_profile {
        Some(path) => path.clone(),
        None if beside.is_file() => beside,
        None => return Ok(None),
    };
    let profile = ReferenceProfile::read(&path)?;
    profile.check_against(signature)?;
    tracing::info!(
        profile = %path.display(),
        features = profile.features.len(),
        outputs = profile.predictions.len(),
        "drift monitoring against the reference profile"
    );
    Ok(Some(profile))
}

/// The model's files, fetched into `cache` (and verified, signature included) unless a
/// verified copy is there, as `serve --model-uri` gets them.
pub(crate) async fn obtain_artifact(
    reference: &ModelReference,
    cache: &Cache,
    fetch: &FetchArgs,
) -> Result<ModelArtifact, RegistryError> {
    obtain::for_serving(reference, cache, &fetch.resolver(), &fetch.options()?).await
}

/// What a model is warmed up with before it is ready: generated values, or a sample of real
/// ones, which models that refuse arbitrary inputs (ids that must be in range) need.
#[derive(Debug, Clone, Default)]
pub(crate) enum WarmUp {
    /// Zeros (empty strings) of the signature's shapes, dynamic dimensions 1.
    #[default]
    Generated,
    Sample(Arc<Sample>),
}

/// Real inputs to warm up with, as a request body, and where they came from.
#[derive(Debug)]
pub(crate) struct Sample {
    format: SampleFormat,
    body: Vec<u8>,
    source: String,
}

#[derive(Debug, Clone, Copy)]
enum SampleFormat {
    /// A V2 inference request body.
    V2,
    /// Rows of a CSV file, bound as `/invocations` binds `text/csv`.
    Csv,
    /// An MLflow serving input, as `/invocations` takes JSON.
    MlflowJson,
}

impl WarmUp {
    /// `--warmup-data`, read now (a missing file is a load error, not a surprise at warm-up);
    /// else the MLflow input example fetched with the model; else generated values.
    fn choose(config: &ServeConfig, artifact: &ModelArtifact) -> Result<WarmUp, LoadError> {
        if let Some(path) = &config.warmup_data {
            let body = std::fs::read(path).map_err(|source| LoadError::WarmUpData {
                path: path.clone(),
                source,
            })?;
            let format = if is_csv(path) {
                SampleFormat::Csv
            } else {
                SampleFormat::V2
            };
            let source = format!("--warmup-data {}", path.display());
            return Ok(WarmUp::sample(format, body, source));
        }
        let dir = artifact
            .model_file
            .parent()
            .unwrap_or(std::path::Path::new("."));
        Ok(match mlflow::example::read(dir)? {
            Some(example) => {
                let source = format!("the MLflow input example {}", example.file.display());
                let file = example.file.display();
                tracing::info!(%file, "warming up with the MLflow input example");
                WarmUp::sample(SampleFormat::MlflowJson, example.body, source)
            }
            None => WarmUp::Generated,
        })
    }

    fn sample(format: SampleFormat, body: Vec<u8>, source: String) -> WarmUp {
        WarmUp::Sample(Arc::new(Sample {
            format,
            body,
            source,
        }))
    }

    /// What the warm-up used, for the message when it fails.
    fn source(&self) -> &str {
        match self {
            WarmUp::Generated => "generated values",
            WarmUp::Sample(sample) => &sample.source,
        }
    }

    fn inputs(&self, signature: &Signature) -> Result<Vec<Tensor>, String> {
        let WarmUp::Sample(sample) = self else {
            return Ok(signature.warmup_inputs());
        };
        let body = &sample.body;
        match sample.format {
            SampleFormat::V2 => {
                protocol::v2::decode_request(body, None, signature).map(|request| request.inputs)
            }
            SampleFormat::Csv => {
                protocol::mlflow::decode_csv(body, signature).map(|request| request.inputs)
            }
            SampleFormat::MlflowJson => {
                protocol::mlflow::decode_json(body, signature).map(|request| request.inputs)
            }
        }
        .map_err(|err| err.to_string())
    }
}

/// `--warmup-data` is read as CSV when its name ends in `.csv` (any case), else as a V2
/// request body: the extension says what the file is, as it does to every other tool.
fn is_csv(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"))
}

/// `instances` sessions of the model, each loaded and warmed up on a thread of its own, with
/// the MLmodel's signature (if any) checked against the graph: exactly what `serve` runs.
pub(crate) async fn load_sessions(
    artifact: &ModelArtifact,
    options: &SessionOptions,
    instances: u16,
    warm_up: &WarmUp,
) -> Result<Vec<OnnxModel>, LoadError> {
    let loads =
        (0..instances).map(|_| load_on_thread(artifact.clone(), options.clone(), warm_up.clone()));
    futures_util::future::try_join_all(loads).await
}

/// Hashes a model file nobody vouched for (for `pinserve_model_info`) while it loads. Only a
/// regular file: a pipe (a sidecar streaming the model in) can be read once, by ONNX Runtime.
fn digest_alongside(artifact: &ModelArtifact) -> Option<tokio::task::JoinHandle<Option<Digest>>> {
    let path = artifact.model_file.clone();
    let regular = std::fs::metadata(&path).is_ok_and(|meta| meta.is_file());
    (artifact.sha256.is_none() && regular)
        .then(|| tokio::task::spawn_blocking(move || Digest::of_file(&path).ok()))
}

/// Loads and warms up the model on a thread of its own: session creation can take seconds of
/// CPU, and a plain thread (unlike `spawn_blocking`) never holds up process exit.
async fn load_on_thread(
    artifact: ModelArtifact,
    options: SessionOptions,
    warm_up: WarmUp,
) -> Result<OnnxModel, LoadError> {
    let (reply, loaded) = oneshot::channel();
    std::thread::Builder::new()
        .name("pinserve-loader".to_owned())
        .spawn(move || {
            tracing::info!(file = %artifact.model_file.display(), "loading model");
            let result = model::load_and_warm_up(&artifact.model_file, &options, |signature| {
                warm_up.inputs(signature)
            })
            .map_err(|err| match err {
                ModelError::WarmUp(message) => LoadError::WarmUp {
                    data: warm_up.source().to_owned(),
                    message,
                },
                other => LoadError::from(other),
            })
            .and_then(|model| match &artifact.signature {
                Some(signature) => mlflow::check_signature(signature, model.signature())
                    .map(|()| model)
                    .map_err(LoadError::Signature),
                None => Ok(model),
            });
            let _ = reply.send(result);
        })
        .map_err(LoadError::Thread)?;
    loaded.await.map_err(|_| LoadError::Panicked)?
}

fn publish(
    state: &AppState,
    loaded: Loaded,
    config: &ServeConfig,
) -> Result<WorkerHandle, AppError> {
    let labels = state.snapshot().labels().clone();
    let monitor = match &loaded.profile {
        Some(profile) => {
            let signature = loaded.models[0].signature();
            let monitor = Monitor::start(profile, signature, &labels, config.drift.config())
                .map_err(LoadError::Drift)?;
            Some(Arc::new(monitor) as Arc<dyn Observer>)
        }
        None => None,
    };
    let models = loaded
        .models
        .into_iter()
        .map(|model| Box::new(model) as Box<dyn Model>)
        .collect();
    let (batcher, worker) =
        Batcher::start_observed(models, &labels, config.batching.batch_config(), monitor)?;
    let device = config.runtime.device;
    let sha256 = loaded.artifact.sha256;
    tracing::info!(
        load_seconds = loaded.load_seconds,
        %device,
        sha256 = sha256.map(|digest| digest.to_string()).unwrap_or_default(),
        "model loaded and warmed up; ready"
    );
    state.set_ready(ServingModel {
        batcher,
        device,
        load_seconds: loaded.load_seconds,
        sha256,
        mlflow_signature: loaded.artifact.signature,
        signed: loaded.artifact.signed,
    });
    Ok(worker)
}

/// `pinserve fetch`: resolve, download and verify into `--dest`.
pub async fn fetch(config: &FetchConfig) -> Result<Manifest, RegistryError> {
    let reference = config.source.reference()?;
    obtain::into_directory(
        &reference,
        &config.dest,
        &config.fetch.resolver(),
        &config.fetch.options()?,
    )
    .await
}

/// Once the grace period has cut requests off, the time the model worker gets to see its queue
/// close and stop (its threads wake up; a call already running is not waited for beyond it).
const WORKER_STOP_MARGIN: Duration = Duration::from_secs(1);

/// Drains, then gives in-flight requests and the model worker one grace period between them:
/// when it ends, every connection still open is dropped (which releases the batcher) and the
/// worker gets what is left of the same period plus [`WORKER_STOP_MARGIN`], so shutdown never
/// outlasts drain plus grace plus that second.
async fn drain_and_stop(
    state: Arc<AppState>,
    mut server: JoinHandle<()>,
    stages: Stages,
    worker: Option<WorkerHandle>,
    config: &ServeConfig,
) -> Result<(), AppError> {
    state.begin_draining();
    stages.drain.cancel();
    tracing::info!(
        drain_seconds = config.drain_seconds,
        "shutting down: not ready, still serving"
    );
    tokio::time::sleep(config.drain()).await;
    let deadline = Instant::now() + config.shutdown_grace();
    stages.close.cancel();
    // The connections hold the only other references to the batcher; once they are done, the
    // worker sees its queue close and stops after answering what is queued.
    drop(state);
    tracing::info!("listener closed; finishing in-flight requests");
    let served = match timeout_at(deadline, &mut server).await {
        Ok(served) => served,
        Err(_) => {
            tracing::warn!(
                grace_seconds = config.shutdown_grace_seconds,
                "requests still in flight after the grace period; closing them"
            );
            stages.abort.cancel();
            server.await
        }
    };
    if let Err(join_error) = served {
        tracing::error!(error = %join_error, "the HTTP server task failed");
    }
    if let Some(worker) = worker
        && timeout_at(
            deadline.max(Instant::now()) + WORKER_STOP_MARGIN,
            worker.finished(),
        )
        .await
        .is_err()
    {
        tracing::warn!("the model worker did not finish within the grace period");
    }
    tracing::info!("shutdown complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn serve_config(drain_seconds: &str, grace_seconds: &str) -> ServeConfig {
        let cli = Cli::try_parse_from([
            "pinserve",
            "serve",
            "--model-dir",
            "model",
            "--drain-seconds",
            drain_seconds,
            "--shutdown-grace-seconds",
            grace_seconds,
        ])
        .unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("not serve")
        };
        *config
    }

    /// Runs [`drain_and_stop`] with a server task that ends once the listener is closed, or
    /// never (a request that never finishes); returns the stages to watch.
    fn stop(config: ServeConfig, server_finishes: bool) -> Stages {
        let state = Arc::new(AppState::new(
            ModelLabels {
                model: "m".into(),
                version: "1".into(),
            },
            1 << 10,
            None,
        ));
        let stages = Stages::default();
        let watched = stages.clone();
        let close = stages.close.clone();
        let server = tokio::spawn(async move {
            close.cancelled().await;
            if !server_finishes {
                std::future::pending::<()>().await;
            }
        });
        tokio::spawn(async move { drain_and_stop(state, server, stages, None, &config).await });
        watched
    }

    #[tokio::test(start_paused = true)]
    async fn the_listener_closes_when_the_drain_period_ends() {
        let began = Instant::now();
        let stages = stop(serve_config("2", "30"), true);
        stages.drain.cancelled().await;
        assert!(!stages.close.is_cancelled());
        stages.close.cancelled().await;
        assert_eq!(began.elapsed(), Duration::from_secs(2), "--drain-seconds");
        assert!(!stages.abort.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_still_running_after_the_grace_period_are_dropped() {
        let began = Instant::now();
        let stages = stop(serve_config("2", "5"), false);
        stages.abort.cancelled().await;
        assert_eq!(
            began.elapsed(),
            Duration::from_secs(7),
            "--drain-seconds then --shutdown-grace-seconds"
        );
    }
}
