//! What the HTTP layer shares between requests: the model identity, the serving phase that
//! `/health` reports, and (once loaded) the batcher that reaches the model.

use std::{
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use super::{body::BodyBudget, error::ApiError};
use crate::{
    batch::Batcher,
    metrics::{ModelLabels, RequestSeries},
    model::Device,
    registry::Digest,
    signing::Signed,
};

/// Where the server is in its life; `/health` and the v2 ready endpoints report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Fetching (when the model comes from a registry), loading the model and running the
    /// warm-up inference.
    Loading,
    Ready,
    /// Loading failed; the process exits shortly so that the pod restarts.
    Failed(String),
    /// Shutting down: still answering requests, but reporting not-ready so traffic moves away.
    Draining,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Loading => "loading",
            Phase::Ready => "ready",
            Phase::Failed(_) => "failed",
            Phase::Draining => "draining",
        }
    }
}

/// The loaded model, as requests reach it.
pub struct ServingModel {
    pub batcher: Batcher,
    pub device: Device,
    pub load_seconds: f64,
    /// The model file's digest, verified when an expected one was known.
    pub sha256: Option<Digest>,
    /// The MLflow signature from the model's MLmodel file, when it came from MLflow.
    pub mlflow_signature: Option<serde_json::Value>,
    /// Who signed the model's files, when `--signature-*` had the signature verified.
    pub signed: Option<Signed>,
}

pub struct AppState {
    pub max_body_bytes: usize,
    /// `--body-read-timeout`; `None` reads bodies for as long as they take.
    pub body_read_timeout: Option<Duration>,
    pub body_budget: BodyBudget,
    pub metrics: Option<PrometheusHandle>,
    /// Until an alias or stage is resolved the version may be unknown; then it is replaced.
    labels: RwLock<Arc<ModelLabels>>,
    requests: RwLock<Arc<RequestSeries>>,
    /// A watch channel, so that the gRPC health service can follow changes as they happen.
    phase: watch::Sender<Phase>,
    model: OnceLock<ServingModel>,
}

impl AppState {
    pub fn new(
        labels: ModelLabels,
        max_body_bytes: usize,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        labels.set_ready(false);
        AppState {
            max_body_bytes,
            body_read_timeout: None,
            body_budget: BodyBudget::new(max_body_bytes, None),
            metrics,
            requests: RwLock::new(Arc::new(RequestSeries::new(labels.clone()))),
            labels: RwLock::new(Arc::new(labels)),
            phase: watch::Sender::new(Phase::Loading),
            model: OnceLock::new(),
        }
    }

    /// Requests' bodies must arrive within `limit` (see [`super::limits::limit_body_time`]).
    pub fn with_body_read_timeout(self, limit: Duration) -> AppState {
        AppState {
            body_read_timeout: Some(limit),
            ..self
        }
    }

    /// Sets `--max-inflight-body-bytes` (else the default derived from the body limit).
    pub fn with_body_budget(mut self, configured: Option<usize>) -> AppState {
        self.body_budget = BodyBudget::new(self.max_body_bytes, configured);
        self
    }

    /// The model name and version every metric and answer carries.
    pub fn labels(&self) -> Arc<ModelLabels> {
        Arc::clone(
            &self
                .labels
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Records the resolved identity (an alias resolved to its version).
    pub fn identify(&self, labels: ModelLabels) {
        labels.set_ready(false);
        *self
            .requests
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(RequestSeries::new(labels.clone()));
        *self
            .labels
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(labels);
    }

    /// Records an answered (or abandoned) API request under the current model identity.
    pub fn record_request(&self, route: &str, code: u16, seconds: f64) {
        self.requests
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(route, code, seconds);
    }

    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// The phase now and every change from here on.
    pub fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    fn set_phase(&self, phase: Phase) {
        self.labels().set_ready(phase == Phase::Ready);
        self.phase.send_replace(phase);
    }

    /// Publishes the loaded model and turns ready, unless shutdown has already begun.
    pub fn set_ready(&self, model: ServingModel) {
        let labels = self.labels();
        let digest = model
            .sha256
            .map(|digest| digest.to_string())
            .unwrap_or_default();
        let signer = model
            .signed
            .as_ref()
            .map_or("", |signed| signed.signer.as_str());
        labels.set_loaded(
            &model.device.to_string(),
            &digest,
            signer,
            model.load_seconds,
        );
        if self.model.set(model).is_err() {
            return;
        }
        self.phase.send_if_modified(|phase| {
            let turned_ready = *phase == Phase::Loading;
            if turned_ready {
                *phase = Phase::Ready;
                labels.set_ready(true);
            }
            turned_ready
        });
    }

    pub fn set_failed(&self, error: String) {
        self.set_phase(Phase::Failed(error));
    }

    pub fn begin_draining(&self) {
        self.set_phase(Phase::Draining);
    }

    /// The model, if it can take requests: ready, or draining after having been ready.
    pub fn serving_model(&self) -> Result<&ServingModel, ApiError> {
        match (self.phase(), self.model.get()) {
            (Phase::Ready | Phase::Draining, Some(model)) => Ok(model),
            (phase, _) => {
                let labels = self.labels();
                Err(ApiError::NotReady {
                    model: labels.model.clone(),
                    version: labels.version.clone(),
                    phase: phase.name(),
                })
            }
        }
    }

    pub fn loaded_model(&self) -> Option<&ServingModel> {
        self.model.get()
    }

    /// Checks that a request addresses the model served here (any version when none is named).
    pub fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
        let labels = self.labels();
        let version_matches = version.is_none_or(|v| v == labels.version);
        if name == labels.model && version_matches {
            return Ok(());
        }
        Err(ApiError::ModelNotFound {
            name: name.to_owned(),
            version: version.map(str::to_owned),
            served: format!("'{}' version '{}'", labels.model, labels.version),
        })
    }
}
