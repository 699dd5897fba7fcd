//! Wiring and lifecycle: bind, serve (`/health` says loading), load and warm up the model off
//! the async runtime, turn ready, and on shutdown drain, stop accepting, let in-flight requests
//! finish within a grace period and stop the model worker after its queue is empty.

use std::{future::Future, sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle, time::timeout};
use tokio_util::sync::CancellationToken;

use crate::{
    batch::{Batcher, DEFAULT_QUEUE_CAPACITY, WorkerHandle},
    config::ServeConfig,
    http::{self, AppState, ServingModel},
    metrics::ModelLabels,
    model::{self, ModelError, OnnxModel},
    registry::{self, RegistryError},
};

/// How long a failed load stays visible on `/health` before the process exits non-zero, so a
/// person or probe can read why before Kubernetes restarts the container.
pub const FAILED_EXIT_DELAY: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("HTTP server")]
    Io(#[from] std::io::Error),
    #[error("the model failed to load")]
    Load(#[from] LoadError),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot start the loader thread: {0}")]
    Thread(std::io::Error),
    #[error("the loader thread panicked")]
    Panicked,
}

/// Serves until `shutdown` resolves, then drains and stops. Returns an error, after
/// [`FAILED_EXIT_DELAY`], if the model cannot be loaded.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let labels = ModelLabels {
        model: config.model_name.clone(),
        version: config.model_version.clone(),
    };
    let state = Arc::new(AppState::new(labels, config.max_body_bytes, metrics));
    let address = listener.local_addr()?;
    let stop_accepting = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        http::router(Arc::clone(&state)),
        stop_accepting.clone(),
    ));
    tracing::info!(%address, "listening");

    tokio::pin!(shutdown);
    let loaded = tokio::select! {
        loaded = load(&config) => Some(loaded),
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
            stop_accepting.cancel();
            let _ = timeout(Duration::from_secs(1), server).await;
            return Err(err.into());
        }
        None => None,
    };
    drain_and_stop(state, server, stop_accepting, worker, &config).await
}

/// Shows the failure on `/health` for [`FAILED_EXIT_DELAY`] (or until a shutdown signal).
async fn report_failure(state: &AppState, err: &LoadError, shutdown: impl Future<Output = ()>) {
    tracing::error!(error = %err, delay = ?FAILED_EXIT_DELAY, "model failed to load; exiting");
    state.set_failed(err.to_string());
    tokio::select! {
        () = tokio::time::sleep(FAILED_EXIT_DELAY) => {}
        () = shutdown => {}
    }
}

async fn serve(
    listener: TcpListener,
    router: axum::Router,
    stop_accepting: CancellationToken,
) -> std::io::Result<()> {
    // Small request/response pairs must not wait on Nagle's algorithm.
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(stop_accepting.cancelled_owned())
        .await
}

struct Loaded {
    model: OnnxModel,
    load_seconds: f64,
}

/// Resolves, loads and warms up the model on a thread of its own: session creation can take
/// seconds of CPU, and a plain thread (unlike `spawn_blocking`) never holds up process exit.
async fn load(config: &ServeConfig) -> Result<Loaded, LoadError> {
    let repository = config.model_repository.clone();
    let (name, version) = (config.model_name.clone(), config.model_version.clone());
    let options = config.runtime.session_options();
    let (reply, loaded) = oneshot::channel();
    let started = std::time::Instant::now();
    std::thread::Builder::new()
        .name("pinserve-loader".to_owned())
        .spawn(move || {
            let result = registry::locate(&repository, &name, &version)
                .map_err(LoadError::from)
                .and_then(|artifact| {
                    tracing::info!(file = %artifact.model_file.display(), "loading model");
                    Ok(model::load_and_warm_up(&artifact.model_file, &options)?)
                });
            let _ = reply.send(result);
        })
        .map_err(LoadError::Thread)?;
    let model = loaded.await.map_err(|_| LoadError::Panicked)??;
    Ok(Loaded {
        model,
        load_seconds: started.elapsed().as_secs_f64(),
    })
}

fn publish(
    state: &AppState,
    loaded: Loaded,
    config: &ServeConfig,
) -> Result<WorkerHandle, AppError> {
    let (batcher, worker) = Batcher::start(
        Box::new(loaded.model),
        &state.labels,
        DEFAULT_QUEUE_CAPACITY,
    )?;
    let device = config.runtime.device;
    tracing::info!(load_seconds = loaded.load_seconds, %device, "model loaded and warmed up; ready");
    state.set_ready(ServingModel {
        batcher,
        device,
        load_seconds: loaded.load_seconds,
    });
    Ok(worker)
}

async fn drain_and_stop(
    state: Arc<AppState>,
    mut server: JoinHandle<std::io::Result<()>>,
    stop_accepting: CancellationToken,
    worker: Option<WorkerHandle>,
    config: &ServeConfig,
) -> Result<(), AppError> {
    state.begin_draining();
    tracing::info!(
        drain_seconds = config.drain_seconds,
        "shutting down: not ready, still serving"
    );
    tokio::time::sleep(config.drain()).await;
    stop_accepting.cancel();
    // The router holds the only other references to the batcher; once the server is done, the
    // worker sees its queue close and stops after answering what is queued.
    drop(state);
    tracing::info!("listener closed; finishing in-flight requests");
    let grace = config.shutdown_grace();
    match timeout(grace, &mut server).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join_error)) => tracing::error!(error = %join_error, "the HTTP server task failed"),
        Err(_) => {
            tracing::warn!(
                grace_seconds = config.shutdown_grace_seconds,
                "requests still in flight after the grace period; closing them"
            );
            server.abort();
        }
    }
    if let Some(worker) = worker
        && timeout(grace, worker.finished()).await.is_err()
    {
        tracing::warn!("the model worker did not finish within the grace period");
    }
    tracing::info!("shutdown complete");
    Ok(())
}
