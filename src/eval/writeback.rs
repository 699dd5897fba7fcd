//! `eval --log-to-mlflow`: the evaluation as an MLflow run (metrics, the dataset as its input
//! with its digest, the reports as artifacts) and, on the candidate's model version, tags that
//! say whether it passed and why; a failed gate is recorded too, so the registry shows why a
//! version was never promoted.

use serde_json::json;

use super::{command::EvalError, report::Report};
use crate::{
    config::EvalConfig,
    registry::{
        mlflow::{
            MlflowClient,
            write::{KeyValue, WriteError, now_millis},
        },
        retry::RetryPolicy,
    },
};

/// The tags written on the candidate's model version.
const PASSED_TAG: &str = "pinserve.eval.passed";
const RUN_TAG: &str = "pinserve.eval.run_id";
const DATASET_TAG: &str = "pinserve.eval.dataset_sha256";

pub(crate) async fn log(config: &EvalConfig, report: &Report) -> Result<(), EvalError> {
    let tracking = config.scoring.tracking_uri()?.ok_or_else(|| {
        EvalError::WriteBack("say where: --registry-uri URL or MLFLOW_TRACKING_URI".to_owned())
    })?;
    let client = MlflowClient::from_env(
        tracking,
        RetryPolicy::new(config.scoring.fetch.fetch_retries),
        config.scoring.fetch.fetch_stall_timeout,
    )?;
    let step = |step: &'static str| move |source: WriteError| EvalError::Mlflow { step, source };
    let version = [
        ("name", report.model.as_str()),
        ("version", report.version.as_str()),
    ];
    client
        .get_value("api/2.0/mlflow/model-versions/get", &version)
        .await
        .map_err(|err| {
            EvalError::WriteBack(format!(
                "the candidate, {} version {}, is not a version in the Model Registry there: {err}",
                report.model, report.version
            ))
        })?;
    let experiment_id = client
        .experiment_id(&config.experiment)
        .await
        .map_err(step("find or create the experiment"))?;
    let tags = vec![
        KeyValue::new(
            "mlflow.runName",
            format!("eval-{}-v{}", report.model, report.version),
        ),
        KeyValue::new("mlflow.source.name", "pinserve eval"),
        KeyValue::new("mlflow.source.type", "LOCAL"),
        KeyValue::new(PASSED_TAG, report.passed.to_string()),
    ];
    let run = client
        .start_run(&experiment_id, tags)
        .await
        .map_err(step("create a run"))?;
    let logged = log_run(&client, &run.run_id, &run.artifact_uri, report).await;
    let status = if logged.is_ok() { "FINISHED" } else { "FAILED" };
    let ended = client.end_run(&run.run_id, status).await;
    logged.map_err(step("log the evaluation"))?;
    ended.map_err(step("end the run"))?;
    tag_version(&client, report, &run.run_id)
        .await
        .map_err(step("tag the model version"))
}

async fn log_run(
    client: &MlflowClient,
    run_id: &str,
    artifact_uri: &str,
    report: &Report,
) -> Result<(), WriteError> {
    let timestamp = now_millis();
    let metrics: Vec<_> = run_metrics(report)
        .into_iter()
        .map(|(key, value)| json!({"key": key, "value": value, "timestamp": timestamp, "step": 0}))
        .collect();
    let params = [
        ("model", report.model.clone()),
        ("version", report.version.clone()),
        ("model_sha256", report.sha256.clone()),
        ("task", report.task.clone()),
    ];
    let params: Vec<_> = params
        .iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    // MLflow takes at most 1000 metrics per call.
    for chunk in metrics.chunks(1000) {
        let body = json!({ "run_id": run_id, "metrics": chunk, "params": [], "tags": [] });
        client
            .post_idempotent("api/2.0/mlflow/runs/log-batch", &body)
            .await?;
    }
    let body = json!({ "run_id": run_id, "metrics": [], "params": params, "tags": [] });
    client
        .post_idempotent("api/2.0/mlflow/runs/log-batch", &body)
        .await?;
    client
        .log_dataset_input(
            run_id,
            &report.dataset.path,
            &report.dataset.sha256,
            "evaluation",
        )
        .await?;
    client
        .upload_artifact(artifact_uri, "eval_report.json", report.to_json().into())
        .await?;
    client
        .upload_artifact(artifact_uri, "eval_report.md", report.to_markdown().into())
        .await
}

/// Each metric, its interval's ends, the baseline's value and the difference, and latency.
fn run_metrics(report: &Report) -> Vec<(String, f64)> {
    let findings = &report.evaluation;
    let mut metrics = Vec::new();
    for (name, estimate) in &findings.metrics {
        metrics.push((name.clone(), estimate.value));
        if let Some((low, high)) = estimate.ci {
            metrics.push((format!("{name}_ci_low"), low));
            metrics.push((format!("{name}_ci_high"), high));
        }
    }
    if let Some(baseline) = &findings.baseline {
        for (name, estimate) in &baseline.metrics {
            metrics.push((format!("baseline_{name}"), estimate.value));
        }
        for (name, estimate) in &baseline.difference {
            metrics.push((format!("difference_{name}"), estimate.value));
        }
    }
    metrics.push(("latency_p50_ms".to_owned(), findings.latency.p50_ms));
    metrics.push(("latency_p99_ms".to_owned(), findings.latency.p99_ms));
    metrics.push((
        "rows_per_second".to_owned(),
        findings.latency.rows_per_second,
    ));
    metrics.push(("passed".to_owned(), f64::from(u8::from(report.passed))));
    metrics
}

async fn tag_version(
    client: &MlflowClient,
    report: &Report,
    run_id: &str,
) -> Result<(), WriteError> {
    let mut tags = vec![
        (PASSED_TAG.to_owned(), report.passed.to_string()),
        (RUN_TAG.to_owned(), run_id.to_owned()),
        (DATASET_TAG.to_owned(), report.dataset.sha256.clone()),
    ];
    for (name, estimate) in &report.evaluation.metrics {
        tags.push((format!("pinserve.eval.{name}"), estimate.value.to_string()));
    }
    for (key, value) in tags {
        let body = json!({
            "name": report.model,
            "version": report.version,
            "key": key,
            "value": value,
        });
        client
            .post_idempotent("api/2.0/mlflow/model-versions/set-tag", &body)
            .await?;
    }
    Ok(())
}
