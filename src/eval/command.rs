//! `pinserve eval`: runs held-out data through the path that serves (the same fetch and
//! verification, the same ONNX Runtime session options, the batcher), computes the metrics with
//! bootstrap intervals, does the same for the baseline on the same rows, judges the gate, and
//! reports. A model that cannot be served cannot pass.

use std::{collections::BTreeMap, path::Path, time::Duration};

use tokio::time::Instant;

use super::{
    bootstrap::{self, BootstrapConfig, BootstrapError, Interval},
    data::{ColumnMapping, DataError, DataFile, Dataset},
    gate::{Gate, GateError},
    metrics::{Evaluation, MetricError, Predictions, Truth},
    report::{
        BaselineResult, DatasetSummary, Estimate, Findings, GateSummary, Interpretation, Latency,
        Report,
    },
    scoring::{self, ScoreError, Scorer},
    task::{self, TaskError, TaskPlan},
    writeback,
};
use crate::{
    batch::{BatchError, Batcher},
    config::{EvalConfig, FetchArgs},
    model::Tensor,
    promote::overlay::{Overlay, OverlayError},
    registry::{ModelArtifact, RegistryError, mlflow::write::WriteError},
};

/// Single-row requests timed for the latency figures.
const LATENCY_ROWS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("inference failed: {0}")]
    Inference(#[from] BatchError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error("{path}: {reason}")]
    Baseline { path: String, reason: String },
    #[error("the candidate is a {candidate} model and the baseline a {baseline} one")]
    TaskMismatch { candidate: String, baseline: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--log-to-mlflow: {0}")]
    WriteBack(String),
    #[error("MLflow: cannot {step}: {source}")]
    Mlflow {
        step: &'static str,
        #[source]
        source: WriteError,
    },
}

impl From<OverlayError> for EvalError {
    fn from(err: OverlayError) -> EvalError {
        EvalError::Baseline {
            path: "--baseline-from".to_owned(),
            reason: err.to_string(),
        }
    }
}

/// One model evaluated on the dataset.
pub(crate) struct ModelRun {
    pub(crate) artifact: ModelArtifact,
    pub(crate) plan: TaskPlan,
    pub(crate) evaluation: Evaluation,
    pub(crate) rows_per_second: f64,
    single_row: Vec<Duration>,
}

/// Evaluates, judges and reports; `Ok(false)` when the gate failed.
pub fn run(config: &EvalConfig) -> Result<bool, EvalError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pinserve-eval")
        .build()
        .map_err(|source| EvalError::Io {
            path: "the async runtime".to_owned(),
            source,
        })?;
    runtime.block_on(evaluate(config))
}

async fn evaluate(config: &EvalConfig) -> Result<bool, EvalError> {
    let gate = config.gate.as_deref().map(Gate::read).transpose()?;
    let baseline = baseline_source(config)?;
    let (data, _downloaded) = scoring::open_data(
        &config.scoring.data,
        config.scoring.data_sha256(),
        &config.scoring.cache_dir,
        &config.scoring.fetch,
    )
    .await?;
    let candidate = run_model(config, &data, &config.model, &config.scoring.fetch).await?;
    let baseline = match baseline {
        Some((uri, fetch)) => Some(run_model(config, &data, &uri, &fetch).await?),
        None => None,
    };
    let findings = findings(config, &candidate, baseline.as_ref())?;
    let gate = gate.unwrap_or_default();
    let rules = gate.judge(&findings)?;
    let passed = rules.iter().all(|rule| rule.passed);
    let report = Report {
        model: candidate.artifact.name.clone(),
        version: candidate.artifact.version.clone(),
        sha256: candidate
            .artifact
            .sha256
            .map(|digest| digest.to_string())
            .unwrap_or_default(),
        dataset: DatasetSummary {
            path: data.shown().to_owned(),
            sha256: data.sha256.clone(),
            rows: data.rows,
        },
        task: candidate.plan.task.as_str().to_owned(),
        interpretation: interpretation(&candidate.plan),
        evaluation: findings,
        gate: GateSummary { rules },
        passed,
    };
    write_reports(config, &report)?;
    print!("{}", report.to_table());
    if config.log_to_mlflow {
        writeback::log(config, &report).await?;
    }
    Ok(passed)
}

fn mapping(config: &EvalConfig) -> ColumnMapping {
    ColumnMapping {
        target: Some(config.target.clone()),
        feature_columns: (!config.scoring.feature_columns.is_empty())
            .then(|| config.scoring.feature_columns.clone()),
        ignore: Vec::new(),
    }
}

/// The baseline's reference and how to fetch it: `--baseline-uri`, or what `--baseline-from`'s
/// overlay pins (its digest, when pinned, verified as `fetch --model-sha256` would).
fn baseline_source(config: &EvalConfig) -> Result<Option<(String, FetchArgs)>, EvalError> {
    if let Some(uri) = &config.baseline_uri {
        return Ok(Some((uri.clone(), config.scoring.fetch.pinning(None))));
    }
    let Some(dir) = &config.baseline_from else {
        return Ok(None);
    };
    let path = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let overlay = Overlay::parse(text).map_err(|err| EvalError::Baseline {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    let digest = match &overlay.sha256 {
        Some(pin) if !pin.value().is_empty() => {
            Some(pin.value().parse().map_err(|err| EvalError::Baseline {
                path: path.display().to_string(),
                reason: format!("MODEL_SHA256 is not a digest: {err}"),
            })?)
        }
        _ => None,
    };
    let fetch = config.scoring.fetch.pinning(digest);
    let uri = format!(
        "models:/{}/{}",
        overlay.name.value(),
        overlay.version.value()
    );
    tracing::info!(%uri, overlay = %dir.display(), "baseline: the version the overlay pins");
    Ok(Some((uri, fetch)))
}

/// Fetches and loads `uri` as `serve` would, then runs the whole dataset through a batcher.
async fn run_model(
    config: &EvalConfig,
    data: &DataFile,
    uri: &str,
    fetch: &FetchArgs,
) -> Result<ModelRun, EvalError> {
    let reference = config.scoring.reference(uri)?;
    let artifact = scoring::obtain_model(&reference, &config.scoring.cache_dir, fetch).await?;
    let scorer = Scorer::start(
        &artifact,
        &config.scoring.runtime,
        config.scoring.instances,
        config.scoring.batch_size,
    )
    .await?;
    let plan = task::infer(
        &scorer.signature,
        &config
            .scoring
            .overrides(Some(config.positive_class.clone())),
    )?;
    let dataset = Dataset::for_model(data, &scorer.signature, &mapping(config))?;
    let started = Instant::now();
    let (predictions, truth) = predict_all(&scorer, &dataset, &plan).await?;
    let rows_per_second = truth.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let single_row = time_single_rows(&scorer.batcher, &dataset, &plan).await?;
    let evaluation = Evaluation::new(&plan, &predictions, &truth)?;
    tracing::info!(model = %artifact.name, version = %artifact.version, rows = truth.len(), rows_per_second, "evaluated");
    Ok(ModelRun {
        artifact,
        plan,
        evaluation,
        rows_per_second,
        single_row,
    })
}

/// Every batch through the batcher, keeping only what the metrics need.
async fn predict_all(
    scorer: &Scorer,
    dataset: &Dataset,
    plan: &TaskPlan,
) -> Result<(Predictions, Truth), EvalError> {
    let mut predictions = Predictions::new(plan);
    let mut truth = Truth::new(plan.task);
    scorer
        .score(
            dataset,
            &plan.outputs,
            |_| Ok(()),
            |outputs: Vec<Tensor>, target| -> Result<(), EvalError> {
                predictions.push(&outputs)?;
                // Eval's mapping always names a target; without one, the row counts differ
                // and the evaluation says so.
                if let Some(target) = target {
                    truth.push(target)?;
                }
                Ok(())
            },
        )
        .await?;
    Ok((predictions, truth))
}

/// The first rows sent one at a time, each timed from submission to answer.
async fn time_single_rows(
    batcher: &Batcher,
    dataset: &Dataset,
    plan: &TaskPlan,
) -> Result<Vec<Duration>, EvalError> {
    let mut times = Vec::with_capacity(LATENCY_ROWS);
    for batch in dataset.batches(1)?.take(LATENCY_ROWS) {
        let batch = batch?;
        let started = Instant::now();
        batcher.infer(batch.inputs, plan.outputs.clone()).await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// The candidate's metrics with intervals, the baseline's and the paired differences, latency.
fn findings(
    config: &EvalConfig,
    candidate: &ModelRun,
    baseline: Option<&ModelRun>,
) -> Result<Findings, EvalError> {
    let bootstrap = BootstrapConfig {
        resamples: config.bootstrap,
        confidence: config.confidence,
        seed: config.seed,
    };
    let metrics = estimates(&candidate.evaluation, &bootstrap)?;
    let baseline = match baseline {
        Some(baseline) => {
            if baseline.plan.task != candidate.plan.task {
                return Err(EvalError::TaskMismatch {
                    candidate: candidate.plan.task.as_str().to_owned(),
                    baseline: baseline.plan.task.as_str().to_owned(),
                });
            }
            let difference = if config.bootstrap == 0 {
                point_differences(&candidate.evaluation, &baseline.evaluation)
            } else {
                to_estimates(bootstrap::paired_difference(
                    &candidate.evaluation,
                    &baseline.evaluation,
                    &bootstrap,
                )?)
            };
            Some(BaselineResult {
                model: baseline.artifact.name.clone(),
                version: baseline.artifact.version.clone(),
                metrics: estimates(&baseline.evaluation, &bootstrap)?,
                difference,
            })
        }
        None => None,
    };
    Ok(Findings {
        metrics,
        baseline,
        latency: latency(candidate),
    })
}

fn estimates(
    evaluation: &Evaluation,
    bootstrap: &BootstrapConfig,
) -> Result<BTreeMap<String, Estimate>, EvalError> {
    if bootstrap.resamples == 0 {
        return Ok(evaluation
            .metrics()
            .into_iter()
            .map(|(name, value)| (name, Estimate { value, ci: None }))
            .collect());
    }
    Ok(to_estimates(bootstrap::intervals(evaluation, bootstrap)?))
}

fn point_differences(candidate: &Evaluation, baseline: &Evaluation) -> BTreeMap<String, Estimate> {
    let base = baseline.metrics();
    candidate
        .metrics()
        .into_iter()
        .filter_map(|(name, value)| {
            let other = *base.get(&name)?;
            Some((
                name,
                Estimate {
                    value: value - other,
                    ci: None,
                },
            ))
        })
        .collect()
}

fn to_estimates(intervals: BTreeMap<String, Interval>) -> BTreeMap<String, Estimate> {
    intervals
        .into_iter()
        .map(|(name, interval)| {
            let ci = Some((interval.low, interval.high)).filter(|_| interval.resamples > 0);
            (
                name,
                Estimate {
                    value: interval.estimate,
                    ci,
                },
            )
        })
        .collect()
}

fn latency(run: &ModelRun) -> Latency {
    let mut millis: Vec<f64> = run
        .single_row
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    millis.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        if millis.is_empty() {
            return 0.0;
        }
        let rank = ((p * millis.len() as f64).ceil() as usize).clamp(1, millis.len());
        millis[rank - 1]
    };
    Latency {
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        rows_per_second: run.rows_per_second,
    }
}

fn interpretation(plan: &TaskPlan) -> Interpretation {
    Interpretation {
        inferred: plan.inferred.task || plan.inferred.label_output || plan.inferred.score_output,
        label_output: plan.label_output.clone(),
        score_output: plan.score_output.clone(),
        positive_class: plan.positive_class.as_ref().map(ToString::to_string),
    }
}

fn write_reports(config: &EvalConfig, report: &Report) -> Result<(), EvalError> {
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| EvalError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    if let Some(path) = &config.report_json {
        write(path, report.to_json())?;
    }
    if let Some(path) = &config.report_md {
        write(path, report.to_markdown())?;
    }
    Ok(())
}
