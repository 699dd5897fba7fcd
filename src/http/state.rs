//! What the HTTP layer shares between requests: the model identity, the serving phase that
//! `/health` reports, and (once loaded) the batcher that reaches the model.

use std::sync::{OnceLock, RwLock};

use metrics_exporter_prometheus::PrometheusHandle;

use super::error::ApiError;
use crate::{batch::Batcher, metrics::ModelLabels, model::Device};

/// Where the server is in its life; `/health` and the v2 ready endpoints report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Loading the model and running the warm-up inference.
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
}

pub struct AppState {
    pub labels: ModelLabels,
    pub max_body_bytes: usize,
    pub metrics: Option<PrometheusHandle>,
    phase: RwLock<Phase>,
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
            labels,
            max_body_bytes,
            metrics,
            phase: RwLock::new(Phase::Loading),
            model: OnceLock::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_phase(&self, phase: Phase) {
        self.labels.set_ready(phase == Phase::Ready);
        *self
            .phase
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = phase;
    }

    /// Publishes the loaded model and turns ready, unless shutdown has already begun.
    pub fn set_ready(&self, model: ServingModel) {
        self.labels
            .set_loaded(&model.device.to_string(), model.load_seconds);
        if self.model.set(model).is_err() {
            return;
        }
        let mut phase = self
            .phase
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *phase == Phase::Loading {
            *phase = Phase::Ready;
            self.labels.set_ready(true);
        }
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
            (phase, _) => Err(ApiError::NotReady {
                model: self.labels.model.clone(),
                version: self.labels.version.clone(),
                phase: phase.name(),
            }),
        }
    }

    pub fn loaded_model(&self) -> Option<&ServingModel> {
        self.model.get()
    }

    /// Checks that a request addresses the model served here (any version when none is named).
    pub fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
        let version_matches = version.is_none_or(|v| v == self.labels.version);
        if name == self.labels.model && version_matches {
            return Ok(());
        }
        Err(ApiError::ModelNotFound {
            name: name.to_owned(),
            version: version.map(str::to_owned),
            served: format!("'{}' version '{}'", self.labels.model, self.labels.version),
        })
    }
}
