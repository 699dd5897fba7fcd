//! Every metric pinserve exports: names, labels, help text and buckets, declared once.
//!
//! The names and labels are a contract: canary analyses (Argo Rollouts `AnalysisTemplate`s),
//! dashboards and alerts query them. Change them only with a migration note.

use std::{collections::HashMap, sync::RwLock};

use metrics::{
    Counter, Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

const REQUEST_DURATION: &str = "pinserve_request_duration_seconds";
const REQUESTS_TOTAL: &str = "pinserve_requests_total";
const INFERENCE_DURATION: &str = "pinserve_inference_duration_seconds";
const MODEL_LOAD_SECONDS: &str = "pinserve_model_load_seconds";
const MODEL_INFO: &str = "pinserve_model_info";
const READY: &str = "pinserve_ready";
const QUEUE_DURATION: &str = "pinserve_queue_duration_seconds";
const BATCH_SIZE: &str = "pinserve_batch_size";
const QUEUE_ROWS: &str = "pinserve_queue_rows";
const REJECTED: &str = "pinserve_rejected_total";
const FETCH_BYTES: &str = "pinserve_fetch_bytes_total";
const FETCH_DURATION: &str = "pinserve_fetch_duration_seconds";
const FEATURE_PSI: &str = "pinserve_feature_psi";
const FEATURE_OUT_OF_RANGE: &str = "pinserve_feature_out_of_range_total";
const FEATURE_MISSING: &str = "pinserve_feature_missing_total";
const FEATURE_UNSEEN_CATEGORY: &str = "pinserve_feature_unseen_category_total";
const PREDICTION_PSI: &str = "pinserve_prediction_psi";
const PREDICTION_CLASS: &str = "pinserve_prediction_class_total";
/// `pinserve_prediction_value`'s buckets, count and sum, recorded as counters (and a gauge for
/// the sum): its bucket edges are the reference profile's, known only once the model is
/// loaded, after the recorder's histogram buckets have been fixed.
const PREDICTION_VALUE_BUCKET: &str = "pinserve_prediction_value_bucket";
const PREDICTION_VALUE_COUNT: &str = "pinserve_prediction_value_count";
const PREDICTION_VALUE_SUM: &str = "pinserve_prediction_value_sum";
const DRIFT_SKIPPED: &str = "pinserve_drift_skipped_batches_total";
const DRIFT_ROWS: &str = "pinserve_drift_rows_total";
const DRIFT_WINDOW_ROWS: &str = "pinserve_drift_window_rows";
const CACHE_EVICTIONS: &str = "pinserve_cache_evictions_total";
const CACHE_EVICTED_BYTES: &str = "pinserve_cache_evicted_bytes_total";

/// The `class` label of predicted classes the reference profile does not list.
const OTHER_CLASS: &str = "(other)";

/// Latency buckets: fine below a millisecond (tabular models answer in tens of microseconds)
/// and with an edge exactly at 0.5 s, the p99 threshold canary analyses use.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0,
];

/// Fetch durations: from a cached hit (well under a second) to multi-gigabyte downloads.
const FETCH_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Rows per model call: powers of two up to well past any sensible `--max-batch-size`.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every histogram and its buckets (a histogram without buckets would be exported as a summary,
/// which cannot be aggregated across pods).
const HISTOGRAMS: &[(&str, &[f64])] = &[
    (REQUEST_DURATION, LATENCY_BUCKETS),
    (INFERENCE_DURATION, LATENCY_BUCKETS),
    (QUEUE_DURATION, LATENCY_BUCKETS),
    (BATCH_SIZE, BATCH_SIZE_BUCKETS),
    (FETCH_DURATION, FETCH_BUCKETS),
];

/// Builds the Prometheus recorder with pinserve's buckets and installs it as the process's
/// global recorder. Call once, before any metric is recorded.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let builder =
        HISTOGRAMS
            .iter()
            .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
                builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
            })?;
    let handle = builder.install_recorder()?;
    describe();
    Ok(handle)
}

/// Drains histogram samples into their buckets periodically, so memory stays bounded between
/// scrapes (the recorder leaves this to its owner when it runs no HTTP listener of its own).
pub async fn run_upkeep(handle: PrometheusHandle) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        interval.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request received to response written, by model, version, route template and HTTP status code."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        "Requests answered, by model, version, route template and HTTP status code."
    );
    describe_histogram!(
        INFERENCE_DURATION,
        Unit::Seconds,
        "Time spent inside ONNX Runtime per inference call."
    );
    describe_gauge!(
        MODEL_LOAD_SECONDS,
        Unit::Seconds,
        "Seconds it took to load the model and run the warm-up inference."
    );
    describe_gauge!(
        MODEL_INFO,
        "Always 1; labels say which model version is served on which device, the model file's sha256, and who signed the model's files (empty unless a signature was verified)."
    );
    describe_histogram!(
        QUEUE_DURATION,
        Unit::Seconds,
        "Time a request waited in the queue before its batch reached ONNX Runtime."
    );
    describe_histogram!(
        BATCH_SIZE,
        "Rows per ONNX Runtime call, after dynamic batching."
    );
    describe_gauge!(
        QUEUE_ROWS,
        "Rows waiting in the queue; admission refuses requests beyond --max-queue-rows."
    );
    describe_counter!(
        REJECTED,
        "Requests not run, by reason: queue_full (503), timeout (504), client_disconnected, body_budget (503)."
    );
    describe_counter!(
        FETCH_BYTES,
        Unit::Bytes,
        "Bytes of model files received from a registry or object store."
    );
    describe_histogram!(
        FETCH_DURATION,
        Unit::Seconds,
        "Time to resolve, download and verify a model version, by outcome (ok or error)."
    );
    describe_gauge!(
        FEATURE_PSI,
        "Population stability index of a feature over the last --drift-window rows against the reference profile (0.1 moderate, 0.2 significant drift)."
    );
    describe_counter!(
        FEATURE_OUT_OF_RANGE,
        "Values of a numeric feature outside the reference profile's minimum and maximum."
    );
    describe_counter!(
        FEATURE_MISSING,
        "Missing values of a feature: NaN, or an empty string for a categorical one."
    );
    describe_counter!(
        FEATURE_UNSEEN_CATEGORY,
        "Values of a categorical feature that the reference profile does not list."
    );
    describe_gauge!(
        PREDICTION_PSI,
        "Population stability index of an output's predictions over the last --drift-window rows against the reference profile."
    );
    describe_counter!(
        PREDICTION_CLASS,
        "Rows predicted as each class, by output; classes the profile does not list are (other)."
    );
    describe_counter!(
        PREDICTION_VALUE_BUCKET,
        "Predicted scores at most le, by output (a histogram whose buckets are the reference profile's bin edges)."
    );
    describe_counter!(
        PREDICTION_VALUE_COUNT,
        "Predicted scores counted, by output."
    );
    describe_gauge!(
        PREDICTION_VALUE_SUM,
        "Sum of the predicted scores, by output."
    );
    describe_counter!(
        DRIFT_SKIPPED,
        "Scored batches left out of drift monitoring because the drift thread was behind."
    );
    describe_counter!(
        DRIFT_ROWS,
        "Rows drift monitoring has looked at (after --drift-sample-rate): the denominator of the feature counters."
    );
    describe_gauge!(
        DRIFT_WINDOW_ROWS,
        "Rows in the window the PSI gauges are computed over; a PSI over few rows is noisy."
    );
    describe_counter!(
        CACHE_EVICTIONS,
        "Model versions this process evicted from --cache-dir (least recently used first) to keep within --cache-max-versions and --cache-max-bytes."
    );
    describe_counter!(
        CACHE_EVICTED_BYTES,
        Unit::Bytes,
        "Bytes of the model versions this process evicted from --cache-dir."
    );
    describe_gauge!(
        READY,
        "1 when the model is loaded, warmed up and serving; 0 while loading, after a failure and while draining."
    );
}

/// One version evicted from the cache. No model labels: the evicted version is not the one
/// served, and the log line names it.
pub(crate) fn record_eviction(bytes: u64) {
    metrics::counter!(CACHE_EVICTIONS).increment(1);
    metrics::counter!(CACHE_EVICTED_BYTES).increment(bytes);
}

/// The labels that identify the model version being served; every series carries them so that
/// a canary's series can be told apart from the stable version's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLabels {
    pub model: String,
    pub version: String,
}

impl ModelLabels {
    fn pairs(&self) -> [(&'static str, String); 2] {
        [
            ("model", self.model.clone()),
            ("version", self.version.clone()),
        ]
    }

    fn request_handles(&self, route: &str, code: u16) -> RequestHandles {
        let labels = [
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("route", route.to_owned()),
            ("code", code.to_string()),
        ];
        RequestHandles {
            duration: metrics::histogram!(REQUEST_DURATION, &labels),
            total: metrics::counter!(REQUESTS_TOTAL, &labels),
        }
    }

    pub(crate) fn inference_duration(&self) -> Histogram {
        metrics::histogram!(INFERENCE_DURATION, &self.pairs())
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        metrics::gauge!(READY, &self.pairs()).set(if ready { 1.0 } else { 0.0 });
    }

    /// `sha256` is the model file's digest (empty when it was not computed); `signer` who
    /// signed the model's files (empty when no signature was verified).
    pub(crate) fn set_loaded(&self, device: &str, sha256: &str, signer: &str, load_seconds: f64) {
        metrics::gauge!(MODEL_LOAD_SECONDS, &self.pairs()).set(load_seconds);
        let info = [
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("device", device.to_owned()),
            ("sha256", sha256.to_owned()),
            ("signer", signer.to_owned()),
        ];
        metrics::gauge!(MODEL_INFO, &info).set(1.0);
    }

    pub(crate) fn batch_metrics(&self) -> BatchMetrics {
        BatchMetrics {
            queue_duration: metrics::histogram!(QUEUE_DURATION, &self.pairs()),
            batch_size: metrics::histogram!(BATCH_SIZE, &self.pairs()),
            queue_rows: metrics::gauge!(QUEUE_ROWS, &self.pairs()),
            rejected: Rejection::ALL.map(|reason| self.rejected(reason)),
        }
    }

    fn rejected(&self, reason: Rejection) -> Counter {
        let labels = [
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("reason", reason.label().to_owned()),
        ];
        metrics::counter!(REJECTED, &labels)
    }

    /// Counts a request refused before it reached the batcher (which holds its own handles).
    pub(crate) fn count_rejected(&self, reason: Rejection) {
        self.rejected(reason).increment(1);
    }

    pub(crate) fn fetch_bytes(&self) -> metrics::Counter {
        metrics::counter!(FETCH_BYTES, &self.pairs())
    }

    /// The drift series of one feature (`feature` is its name in the reference profile), its
    /// PSI only when it is `binned`.
    pub(crate) fn feature_metrics(&self, feature: &str, binned: bool) -> FeatureMetrics {
        let labels = [
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("feature", feature.to_owned()),
        ];
        FeatureMetrics {
            psi: binned.then(|| metrics::gauge!(FEATURE_PSI, &labels)),
            out_of_range: metrics::counter!(FEATURE_OUT_OF_RANGE, &labels),
            missing: metrics::counter!(FEATURE_MISSING, &labels),
            unseen_category: metrics::counter!(FEATURE_UNSEEN_CATEGORY, &labels),
        }
    }

    /// The prediction series of one output, whose values fall in `bins`.
    pub(crate) fn prediction_metrics(
        &self,
        output: &str,
        bins: &PredictionBins<'_>,
    ) -> PredictionMetrics {
        let labels = |extra: Option<(&'static str, String)>| {
            let mut labels = vec![
                ("model", self.model.clone()),
                ("version", self.version.clone()),
                ("output", output.to_owned()),
            ];
            labels.extend(extra);
            labels
        };
        let series = match bins {
            PredictionBins::Classes(classes) => PredictionSeries::Classes(
                classes
                    .iter()
                    .map(|class| (*class).to_owned())
                    .chain([OTHER_CLASS.to_owned()])
                    .map(|class| {
                        metrics::counter!(PREDICTION_CLASS, &labels(Some(("class", class))))
                    })
                    .collect(),
            ),
            PredictionBins::Scores(edges) => PredictionSeries::Scores {
                buckets: edges
                    .iter()
                    .map(|&edge| (edge, edge.to_string()))
                    .chain([(f64::INFINITY, "+Inf".to_owned())])
                    .map(|(edge, le)| {
                        (
                            edge,
                            metrics::counter!(PREDICTION_VALUE_BUCKET, &labels(Some(("le", le)))),
                        )
                    })
                    .collect(),
                count: metrics::counter!(PREDICTION_VALUE_COUNT, &labels(None)),
                sum: metrics::gauge!(PREDICTION_VALUE_SUM, &labels(None)),
            },
        };
        PredictionMetrics {
            psi: metrics::gauge!(PREDICTION_PSI, &labels(None)),
            series,
        }
    }

    pub(crate) fn drift_skipped(&self) -> Counter {
        metrics::counter!(DRIFT_SKIPPED, &self.pairs())
    }

    pub(crate) fn drift_rows(&self) -> Counter {
        metrics::counter!(DRIFT_ROWS, &self.pairs())
    }

    pub(crate) fn drift_window_rows(&self) -> Gauge {
        metrics::gauge!(DRIFT_WINDOW_ROWS, &self.pairs())
    }

    pub(crate) fn record_fetch(&self, seconds: f64, outcome: &'static str) {
        let labels = [
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("outcome", outcome.to_owned()),
        ];
        metrics::histogram!(FETCH_DURATION, &labels).record(seconds);
    }
}

/// One feature's drift series.
#[derive(Clone)]
pub(crate) struct FeatureMetrics {
    pub(crate) psi: Option<Gauge>,
    pub(crate) out_of_range: Counter,
    pub(crate) missing: Counter,
    pub(crate) unseen_category: Counter,
}

/// What an output's predictions are counted in: its classes, or the edges of its score bins.
pub(crate) enum PredictionBins<'a> {
    Classes(Vec<&'a str>),
    Scores(&'a [f64]),
}

/// One output's prediction series.
pub(crate) struct PredictionMetrics {
    pub(crate) psi: Gauge,
    series: PredictionSeries,
}

enum PredictionSeries {
    /// Per listed class, then (other).
    Classes(Vec<Counter>),
    /// Cumulative buckets (edge, then +Inf), count and sum.
    Scores {
        buckets: Vec<(f64, Counter)>,
        count: Counter,
        sum: Gauge,
    },
}

impl PredictionMetrics {
    /// Counts one prediction: a class by its bin (the last is (other)), a score by its value.
    pub(crate) fn count(&self, bin: usize, value: Option<f64>) {
        match &self.series {
            PredictionSeries::Classes(classes) => {
                if let Some(counter) = classes.get(bin) {
                    counter.increment(1);
                }
            }
            PredictionSeries::Scores {
                buckets,
                count,
                sum,
            } => {
                let Some(value) = value else {
                    return;
                };
                for (edge, counter) in buckets {
                    if value <= *edge {
                        counter.increment(1);
                    }
                }
                count.increment(1);
                sum.increment(value);
            }
        }
    }
}

/// Why a request was not run: the `reason` label of `pinserve_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Refused at admission with 503: `--max-queue-rows` were already waiting.
    QueueFull,
    /// Answered 504: it waited longer than `--request-timeout`.
    Timeout,
    /// Dropped before inference: its client had gone.
    ClientDisconnected,
    /// Refused with 503 before its body was read: `--max-inflight-body-bytes` were held.
    BodyBudget,
}

impl Rejection {
    const ALL: [Rejection; 4] = [
        Rejection::QueueFull,
        Rejection::Timeout,
        Rejection::ClientDisconnected,
        Rejection::BodyBudget,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue_full",
            Rejection::Timeout => "timeout",
            Rejection::ClientDisconnected => "client_disconnected",
            Rejection::BodyBudget => "body_budget",
        }
    }
}

/// The batcher's metrics, registered once per model version, so that recording is an atomic
/// update even on the rejection path, which runs hottest when the server is overloaded.
pub(crate) struct BatchMetrics {
    pub(crate) queue_duration: Histogram,
    pub(crate) batch_size: Histogram,
    pub(crate) queue_rows: Gauge,
    /// Indexed like [`Rejection::ALL`].
    rejected: [Counter; 4],
}

impl BatchMetrics {
    /// Counts a request that was not run.
    pub(crate) fn rejected(&self, reason: Rejection) {
        self.rejected[reason as usize].increment(1);
    }
}

/// The request series of one model version. Each (route, status) pair is looked up in the
/// registry once; after that a request is recorded with two atomic updates instead of four label
/// strings and two registry lookups, a measurable share of a small request's CPU. Routes are
/// route templates and statuses the few pinserve answers, so the map stays small.
pub(crate) struct RequestSeries {
    labels: ModelLabels,
    by_status: RwLock<HashMap<u16, HashMap<Box<str>, RequestHandles>>>,
}

struct RequestHandles {
    duration: Histogram,
    total: Counter,
}

impl RequestSeries {
    pub(crate) fn new(labels: ModelLabels) -> RequestSeries {
        RequestSeries {
            labels,
            by_status: RwLock::default(),
        }
    }

    pub(crate) fn record(&self, route: &str, code: u16, seconds: f64) {
        {
            let by_status = self
                .by_status
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(handles) = by_status.get(&code).and_then(|routes| routes.get(route)) {
                handles.duration.record(seconds);
                handles.total.increment(1);
                return;
            }
        }
        let handles = self.labels.request_handles(route, code);
        handles.duration.record(seconds);
        handles.total.increment(1);
        self.by_status
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(code)
            .or_default()
            .insert(route.into(), handles);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_resolve_sub_millisecond_and_have_an_edge_at_half_a_second() {
        assert!(LATENCY_BUCKETS.iter().filter(|&&b| b < 0.001).count() >= 2);
        assert!(LATENCY_BUCKETS.contains(&0.5));
        assert!(LATENCY_BUCKETS.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
