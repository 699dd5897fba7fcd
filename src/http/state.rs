//! What the HTTP and gRPC layers share between requests: one value, [`Serving`], that says
//! where the server is in its life, whom it serves and (once loaded) the model, published
//! through a watch channel. Every reader takes one [`Snapshot`] and answers from it alone, so
//! no answer mixes two moments, and [`Snapshot::is_ready`] is the one readiness decision that
//! `/health`, the v2 ready routes, `/ping`, the gRPC health service and `pinserve_ready` follow.

use std::{sync::Arc, time::Duration};

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
pub(crate) enum Phase {
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
    pub(crate) fn name(&self) -> &'static str {
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

/// Whom the server serves: the labels every metric and answer carries, and the request series
/// recorded under them. Until an alias or stage is resolved the version may be empty; then it
/// is replaced, whole.
pub(crate) struct Identity {
    pub(crate) labels: ModelLabels,
    requests: RequestSeries,
}

impl Identity {
    fn new(labels: ModelLabels) -> Identity {
        Identity {
            requests: RequestSeries::new(labels.clone()),
            labels,
        }
    }
}

/// The server at one moment.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) phase: Phase,
    pub(crate) identity: Arc<Identity>,
    /// Set once the model has loaded; kept while draining, which still serves.
    pub(crate) model: Option<Arc<ServingModel>>,
}

impl Snapshot {
    /// Ready: loaded, warmed up, and not shutting down.
    pub(crate) fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    pub(crate) fn labels(&self) -> &ModelLabels {
        &self.identity.labels
    }

    /// The model, if it takes requests: ready, or draining after having been ready.
    pub(crate) fn model(&self) -> Result<&Arc<ServingModel>, ApiError> {
        match (&self.phase, &self.model) {
            (Phase::Ready | Phase::Draining, Some(model)) => Ok(model),
            (phase, _) => Err(ApiError::NotReady {
                model: self.labels().model.clone(),
                version: self.labels().version.clone(),
                phase: phase.name(),
            }),
        }
    }

    /// Checks that a request addresses the model served here (any version when none is named).
    pub(crate) fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
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

pub struct AppState {
    pub(crate) max_body_bytes: usize,
    /// `--body-read-timeout`; `None` reads bodies for as long as they take.
    pub(crate) body_read_timeout: Option<Duration>,
    pub(crate) body_budget: BodyBudget,
    pub(crate) metrics: Option<PrometheusHandle>,
    /// Every change is one `send`, so readers see the phase, identity and model together.
    serving: watch::Sender<Snapshot>,
}

impl AppState {
    pub fn new(
        labels: ModelLabels,
        max_body_bytes: usize,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        labels.set_ready(false);
        let loading = Snapshot {
            phase: Phase::Loading,
            identity: Arc::new(Identity::new(labels)),
            model: None,
        };
        AppState {
            max_body_bytes,
            body_read_timeout: None,
            body_budget: BodyBudget::new(max_body_bytes, None),
            metrics,
            serving: watch::Sender::new(loading),
        }
    }

    /// Requests' bodies must arrive within `limit` (see [`super::limits::limit_body_time`]).
    pub(crate) fn with_body_read_timeout(self, limit: Duration) -> AppState {
        AppState {
            body_read_timeout: Some(limit),
            ..self
        }
    }

    /// Sets `--max-inflight-body-bytes` (else the default derived from the body limit).
    pub(crate) fn with_body_budget(mut self, configured: Option<usize>) -> AppState {
        self.body_budget = BodyBudget::new(self.max_body_bytes, configured);
        self
    }

    /// The server now: a cheap copy (three reference counts), consistent in itself.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.serving.borrow().clone()
    }

    /// The server now and every change from here on.
    pub(crate) fn watch(&self) -> watch::Receiver<Snapshot> {
        self.serving.subscribe()
    }

    /// Records the resolved identity (an alias resolved to its version).
    pub(crate) fn identify(&self, labels: ModelLabels) {
        labels.set_ready(false);
        self.serving
            .send_modify(|now| now.identity = Arc::new(Identity::new(labels)));
    }

    /// Records an answered (or abandoned) API request under the current identity.
    pub(crate) fn record_request(&self, route: &str, code: u16, seconds: f64) {
        self.serving
            .borrow()
            .identity
            .requests
            .record(route, code, seconds);
    }

    /// Publishes the loaded model and turns ready, unless shutdown has already begun.
    pub fn set_ready(&self, model: ServingModel) {
        let digest = model
            .sha256
            .map(|digest| digest.to_string())
            .unwrap_or_default();
        let model = Arc::new(model);
        let signer = model
            .signed
            .as_ref()
            .map_or("", |signed| signed.signer.as_str());
        self.serving.send_modify(|now| {
            now.labels().set_loaded(
                &model.device.to_string(),
                &digest,
                signer,
                model.load_seconds,
            );
            now.model = Some(Arc::clone(&model));
            if now.phase == Phase::Loading {
                now.phase = Phase::Ready;
            }
            now.labels().set_ready(now.is_ready());
        });
    }

    pub(crate) fn set_failed(&self, error: String) {
        self.set_phase(Phase::Failed(error));
    }

    pub(crate) fn begin_draining(&self) {
        self.set_phase(Phase::Draining);
    }

    fn set_phase(&self, phase: Phase) {
        self.serving.send_modify(|now| {
            now.phase = phase;
            now.labels().set_ready(now.is_ready());
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        batch::BatchConfig,
        model::{Model, ModelError, Signature, Tensor, signature::examples::two_inputs},
    };

    /// Never asked to run: these tests only publish a model.
    struct Idle(Arc<Signature>);

    impl Model for Idle {
        fn signature(&self) -> &Arc<Signature> {
            &self.0
        }

        fn run(&mut self, _: &[Tensor], _: &[usize]) -> Result<Vec<Tensor>, ModelError> {
            unreachable!("no request reaches it")
        }
    }

    fn labels(version: &str) -> ModelLabels {
        ModelLabels {
            model: "churn".into(),
            version: version.into(),
        }
    }

    fn loaded() -> ServingModel {
        let config = BatchConfig {
            max_batch_size: 8,
            max_batch_delay: Duration::ZERO,
            max_queue_rows: 8,
            request_timeout: Duration::from_secs(1),
        };
        let model = Box::new(Idle(Arc::new(two_inputs()))) as Box<dyn Model>;
        let (batcher, _worker) = Batcher::start(vec![model], &labels("3"), config).unwrap();
        ServingModel {
            batcher,
            device: Device::Cpu,
            load_seconds: 0.5,
            sha256: None,
            mlflow_signature: None,
            signed: None,
        }
    }

    #[tokio::test]
    async fn a_snapshot_keeps_its_moment_while_the_server_moves_on() {
        let state = AppState::new(labels(""), 1024, None);
        let loading = state.snapshot();
        state.identify(labels("3"));
        state.set_ready(loaded());
        assert_eq!(loading.phase, Phase::Loading);
        assert_eq!(loading.labels().version, "");
        assert!(loading.model().is_err());
        let ready = state.snapshot();
        assert!(ready.is_ready());
        assert_eq!(ready.labels().version, "3");
        assert!(ready.model().is_ok());
        assert!(ready.check_model("churn", Some("3")).is_ok());
        assert!(ready.check_model("churn", Some("2")).is_err());
    }

    #[tokio::test]
    async fn draining_serves_the_model_but_is_not_ready_and_never_turns_ready_again() {
        let state = AppState::new(labels("3"), 1024, None);
        let mut changes = state.watch();
        state.begin_draining();
        assert!(changes.has_changed().unwrap());
        assert!(!changes.borrow_and_update().is_ready());
        state.set_ready(loaded());
        let now = state.snapshot();
        assert_eq!(now.phase, Phase::Draining);
        assert!(!now.is_ready());
        assert!(now.model().is_ok(), "draining still answers requests");
    }

    #[test]
    fn a_failed_load_answers_not_ready_naming_the_phase() {
        let state = AppState::new(labels("3"), 1024, None);
        state.set_failed("no such file".into());
        let err = state.snapshot().model().err().unwrap();
        assert_eq!(
            err.to_string(),
            "model 'churn' version '3' is not ready: failed"
        );
    }
}
