//! `pinserve eval` end to end: metrics equal to scikit-learn's for a binary and a multiclass
//! classifier, a regressor and a pipeline with string inputs (through the same fetch, session
//! and batcher as serving); a better version passes and a worse one fails against the version
//! a real overlay pins, with the documented exit codes; `--log-to-mlflow` is read back through
//! the real MLflow server's API.

mod common;

use std::{ffi::OsStr, path::Path, process::Output};

use common::{
    fixtures,
    services::{mlflow_get, mlflow_uri, register_version, tag, unique_name},
    stderr,
};
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run_python(args: &[&str]) -> Vec<u8> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    common::run_fixture_python(&args)
}

/// scikit-learn's metrics on ONNX Runtime's (Python) predictions for `model` on `data`.
fn sklearn_metrics(model: &Path, data: &Path, task: &str) -> Value {
    let script = repo().join("tests/eval/sklearn_reference.py");
    let stdout = run_python(&[
        script.to_str().unwrap(),
        "evaluate",
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        "target",
        task,
    ]);
    serde_json::from_slice(&stdout).unwrap()
}

async fn eval(args: &[&str], env: &[(&str, String)]) -> (Output, Option<Value>) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let output = common::pinserve_async()
        .arg("eval")
        .args(args)
        .args(["--report-json", report.path().to_str().unwrap()])
        .args(["--cache-dir", cache.path().to_str().unwrap()])
        .env_remove("MLFLOW_TRACKING_URI")
        .envs(env.iter().map(|(name, value)| (name, value)))
        .output()
        .await
        .expect("pinserve eval runs");
    let text = std::fs::read_to_string(report.path()).unwrap_or_default();
    (output, serde_json::from_str(&text).ok())
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn assert_metrics_equal(report: &Value, sklearn: &Value, what: &str) {
    let sklearn = sklearn.as_object().unwrap();
    let ours = report["metrics"].as_object().unwrap();
    let mut names: Vec<&String> = sklearn.keys().collect();
    names.sort();
    let mut ours_names: Vec<&String> = ours.keys().collect();
    ours_names.sort();
    assert_eq!(ours_names, names, "{what}: the same metrics");
    for (name, expected) in sklearn {
        let expected = expected.as_f64().unwrap();
        let got = ours[name]["value"].as_f64().unwrap();
        assert!(
            (got - expected).abs() <= 1e-6,
            "{what} {name}: pinserve {got}, scikit-learn {expected}"
        );
    }
}

/// Evaluates `model` (a version directory) on `data` without a gate, and compares with sklearn.
async fn check_against_sklearn(dir: &Path, data: &Path, task: &str, extra: &[&str]) {
    let mut args = vec![
        dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--target",
        "target",
        "--bootstrap",
        "200",
    ];
    args.extend_from_slice(extra);
    let (output, report) = eval(&args, &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = report.expect("a JSON report");
    assert_eq!(report["task"], task);
    assert_eq!(
        report["sha256"],
        sha256_hex(&dir.join("model.onnx")),
        "the bytes evaluated"
    );
    assert_eq!(report["passed"], true, "no gate: passed");
    let sklearn = sklearn_metrics(&dir.join("model.onnx"), data, task);
    assert_metrics_equal(&report, &sklearn, dir.to_str().unwrap());
    let accuracy_or_r2 = if task == "regression" {
        "r2"
    } else {
        "accuracy"
    };
    let estimate = &report["metrics"][accuracy_or_r2];
    let (low, high) = (
        estimate["ci"][0].as_f64().unwrap(),
        estimate["ci"][1].as_f64().unwrap(),
    );
    let value = estimate["value"].as_f64().unwrap();
    assert!(low <= value && value <= high, "{estimate}");
    assert!(report["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        report["dataset"]["rows"].as_u64().unwrap() as usize,
        std::fs::read_to_string(data).unwrap().lines().count() - 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_classifier_metrics_equal_sklearns() {
    let dir = fixtures().join("breast_cancer/1");
    let data = fixtures().join("breast_cancer/test.csv");
    check_against_sklearn(&dir, &data, "classification", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn string_pipeline_metrics_equal_sklearns() {
    let dir = fixtures().join("churn_pipeline/1");
    let data = fixtures().join("eval-data/churn.csv");
    check_against_sklearn(&dir, &data, "classification", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn multiclass_and_regression_metrics_equal_sklearns() {
    let work = tempfile::tempdir().unwrap();
    let script = repo().join("tests/eval/sklearn_models.py");
    for (kind, task) in [("iris", "classification"), ("diabetes", "regression")] {
        let dir = work.path().join(kind).join("1");
        run_python(&[script.to_str().unwrap(), kind, dir.to_str().unwrap()]);
        let data = dir.join("test.csv");
        check_against_sklearn(&dir, &data, task, &[]).await;
    }
}

/// A copy of a real service overlay pinning `name` version `version` with the digest of
/// `model_file`, which `eval` verifies the baseline against.
fn overlay_pinning(name: &str, version: &str, model_file: &Path) -> tempfile::TempDir {
    let path = repo().join("k8s/services/fraud-detection/staging/kustomization.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let pinned = sha256_hex(&fixtures().join("tabular_mlp/1/model.onnx"));
    let digest = sha256_hex(model_file);
    assert!(text.contains(&pinned), "the overlay pins a digest");
    let text = text
        .replace("value: fraud-detection\n", &format!("value: {name}\n"))
        .replace("value: \"8\"\n", &format!("value: \"{version}\"\n"))
        .replace(&pinned, &digest);
    assert!(text.contains(name), "the overlay pins the model by name");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), text).unwrap();
    dir
}

const GATE: &str = "metrics:\n  accuracy: {threshold: 0.9, min_absolute_change: 0.0}\n  log_loss: {min_absolute_change: 0.0}\n";

/// Version 1 (the fixture) is better than version 2 (trained on a dozen rows): judged against
/// what the overlay pins, the better one passes with exit 0 and the worse one fails with 3, and
/// both outcomes are written back to MLflow.
#[tokio::test(flavor = "multi_thread")]
async fn a_better_version_passes_and_a_worse_one_is_stopped() {
    let name = unique_name("eval-gate");
    let weaker = tempfile::tempdir().unwrap();
    let weaker_file = weaker.path().join("model.onnx");
    let script = repo().join("tests/eval/weaker_breast_cancer.py");
    run_python(&[script.to_str().unwrap(), weaker_file.to_str().unwrap()]);
    let better_file = fixtures().join("breast_cancer/1/model.onnx");
    assert_eq!(register_version(&better_file, &name, &[]).await, "1");
    assert_eq!(register_version(&weaker_file, &name, &[]).await, "2");
    let gate = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(gate.path(), GATE).unwrap();
    let data = fixtures().join("breast_cancer/test.csv");
    let tracking = [("MLFLOW_TRACKING_URI", mlflow_uri())];

    for (candidate, baseline, code) in [("1", "2", 0), ("2", "1", 3)] {
        let baseline_file = if baseline == "1" {
            &better_file
        } else {
            &weaker_file
        };
        let overlay = overlay_pinning(&name, baseline, baseline_file);
        let markdown = tempfile::NamedTempFile::new().unwrap();
        let uri = format!("models:/{name}/{candidate}");
        let args = [
            uri.as_str(),
            "--data",
            data.to_str().unwrap(),
            "--target",
            "target",
            "--baseline-from",
            overlay.path().to_str().unwrap(),
            "--gate",
            gate.path().to_str().unwrap(),
            "--report-md",
            markdown.path().to_str().unwrap(),
            "--log-to-mlflow",
        ];
        let (output, report) = eval(&args, &tracking).await;
        assert_eq!(
            output.status.code(),
            Some(code),
            "v{candidate}: {}",
            stderr(&output)
        );
        let report = report.expect("a JSON report");
        assert_eq!(report["passed"], code == 0);
        assert_eq!(report["version"], candidate);
        assert_eq!(report["baseline"]["version"], baseline);
        let difference = report["baseline"]["difference"]["accuracy"]["value"]
            .as_f64()
            .unwrap();
        assert_eq!(difference > 0.0, code == 0, "{}", report["baseline"]);
        let rules = report["gate"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3, "{rules:?}");
        let markdown = std::fs::read_to_string(markdown.path()).unwrap();
        let verdict = if code == 0 { "passed" } else { "FAILED" };
        assert!(
            markdown.contains(&format!("version {candidate}: {verdict}")),
            "{markdown}"
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("accuracy"));

        let answer = mlflow_get(
            "model-versions/get",
            &[("name", name.as_str()), ("version", candidate)],
        )
        .await;
        let version = &answer["model_version"];
        assert_eq!(
            tag(version, "pinserve.eval.passed"),
            Some(if code == 0 { "true" } else { "false" })
        );
        assert_eq!(
            tag(version, "pinserve.eval.dataset_sha256"),
            report["dataset"]["sha256"].as_str()
        );
        let accuracy: f64 = tag(version, "pinserve.eval.accuracy")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            accuracy,
            report["metrics"]["accuracy"]["value"].as_f64().unwrap()
        );
        let run_id = tag(version, "pinserve.eval.run_id").unwrap();
        let run = mlflow_get("runs/get", &[("run_id", run_id)]).await;
        let metrics = run["run"]["data"]["metrics"].as_array().unwrap();
        assert!(
            metrics.iter().any(|m| m["key"] == "accuracy"),
            "{metrics:?}"
        );
        assert!(metrics.iter().any(|m| m["key"] == "difference_accuracy"));
        let input = &run["run"]["inputs"]["dataset_inputs"][0]["dataset"];
        assert_eq!(
            input["digest"],
            &report["dataset"]["sha256"].as_str().unwrap()[..36]
        );
    }
}

#[tokio::test]
async fn bad_data_gates_and_baselines_are_errors_with_exit_1() {
    let dir = fixtures().join("breast_cancer/1");
    let data = fixtures().join("breast_cancer/test.csv");
    let gate = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        gate.path(),
        "metrics:\n  accuracy: {min_absolute_change: 0.0}\n",
    )
    .unwrap();
    let typo = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(typo.path(), "metrics:\n  accuracy: {treshold: 0.9}\n").unwrap();
    let no_overlay = tempfile::tempdir().unwrap();
    let cases: [(Vec<&str>, &str); 5] = [
        (vec!["--target", "no_such_column"], "no_such_column"),
        (
            vec![
                "--target",
                "target",
                "--gate",
                gate.path().to_str().unwrap(),
            ],
            "no baseline was given",
        ),
        (
            vec![
                "--target",
                "target",
                "--gate",
                typo.path().to_str().unwrap(),
            ],
            "treshold",
        ),
        (
            vec![
                "--target",
                "target",
                "--baseline-from",
                no_overlay.path().to_str().unwrap(),
            ],
            "kustomization.yaml",
        ),
        (
            vec!["--target", "target", "--baseline-uri", "/no/such/model/dir"],
            "/no/such/model/dir",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec![dir.to_str().unwrap(), "--data", data.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let (output, _) = eval(&args, &[]).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{extra:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{extra:?}: expected {expected:?} in {}",
            stderr(&output)
        );
    }
    let (output, _) = eval(&[dir.to_str().unwrap(), "--target", "target"], &[]).await;
    assert_eq!(output.status.code(), Some(2), "usage: {}", stderr(&output));
}
