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
        .args(
            (!args.contains(&"--cache-dir"))
                .then(|| ["--cache-dir", cache.path().to_str().unwrap()])
                .into_iter()
                .flatten(),
        )
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

/// Sessions working in parallel answer batches out of order; eval must keep every row with
/// its target, in file order, or the seeded bootstrap intervals would move.
#[tokio::test(flavor = "multi_thread")]
async fn several_instances_score_the_same_rows_in_the_same_order() {
    let dir = fixtures().join("breast_cancer/1");
    let data = fixtures().join("breast_cancer/test.csv");
    let mut reports = Vec::new();
    for instances in ["1", "3"] {
        let args = [
            dir.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--target",
            "target",
            "--batch-size",
            "8",
            "--bootstrap",
            "200",
            "--instances",
            instances,
        ];
        let (output, report) = eval(&args, &[]).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        reports.push(report.expect("a JSON report"));
    }
    assert!(reports[0]["metrics"]["accuracy"]["ci"].is_array());
    assert_eq!(reports[0]["metrics"], reports[1]["metrics"]);
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

/// A directory served by Python's own `http.server` on a loopback port, stopped when dropped.
struct HttpDirectory {
    _server: tokio::process::Child,
    port: u16,
}

impl HttpDirectory {
    async fn serve(dir: &Path) -> HttpDirectory {
        use tokio::io::AsyncBufReadExt;
        let mut server = tokio::process::Command::new(common::fixture_python())
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python -m http.server starts");
        let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ...", once it listens.
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("http.server says where it listens");
        let port = line
            .split_whitespace()
            .skip_while(|word| *word != "port")
            .nth(1)
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        HttpDirectory {
            _server: server,
            port,
        }
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

/// Puts `bytes` at `key` in the test services' S3 bucket; returns its `s3://` URL.
async fn put_s3(key: &str, bytes: Vec<u8>) -> String {
    use common::services::{registered, var};
    use object_store::{ObjectStoreExt, aws::AmazonS3Builder};
    let bucket = registered()["s3"]["bucket"].as_str().unwrap().to_owned();
    let store = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(var("PINSERVE_TEST_S3_ENDPOINT"))
        .with_allow_http(true)
        .with_access_key_id(var("PINSERVE_TEST_S3_ACCESS_KEY_ID"))
        .with_secret_access_key(var("PINSERVE_TEST_S3_SECRET_ACCESS_KEY"))
        .with_region(var("PINSERVE_TEST_S3_REGION"))
        .build()
        .unwrap();
    store
        .put(&object_store::path::Path::from(key), bytes.into())
        .await
        .unwrap();
    format!("s3://{bucket}/{key}")
}

/// The report of evaluating `dir` on `data` (no bootstrap), which must pass.
async fn eval_on(dir: &Path, data: &str, env: &[(&str, String)]) -> Value {
    let args = [
        dir.to_str().unwrap(),
        "--data",
        data,
        "--target",
        "target",
        "--bootstrap",
        "0",
    ];
    let (output, report) = eval(&args, env).await;
    assert_eq!(output.status.code(), Some(0), "{data}: {}", stderr(&output));
    report.expect("a JSON report")
}

fn metric_values(report: &Value) -> Vec<(String, f64)> {
    report["metrics"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, estimate)| (name.clone(), estimate["value"].as_f64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn data_at_a_url_is_fetched_verified_and_named_in_the_report() {
    let dir = fixtures().join("breast_cancer/1");
    let local = fixtures().join("breast_cancer/test.csv");
    let digest = sha256_hex(&local);
    let read_locally = eval_on(&dir, local.to_str().unwrap(), &[]).await;

    let served = tempfile::tempdir().unwrap();
    std::fs::copy(&local, served.path().join("test.csv")).unwrap();
    std::fs::write(
        served.path().join("test.csv.sha256"),
        format!("{digest}  test.csv\n"),
    )
    .unwrap();
    let http = HttpDirectory::serve(served.path()).await;
    let s3 = put_s3(
        &format!("{}/test.csv", unique_name("eval-data")),
        std::fs::read(&local).unwrap(),
    )
    .await;
    for (url, env) in [
        (http.url("test.csv"), Vec::new()),
        (s3, common::services::s3_env()),
    ] {
        let report = eval_on(&dir, &url, &env).await;
        assert_eq!(report["dataset"]["path"], url.as_str());
        assert_eq!(report["dataset"]["sha256"], digest.as_str(), "{url}");
        assert_eq!(report["dataset"]["rows"], read_locally["dataset"]["rows"]);
        assert_eq!(
            metric_values(&report),
            metric_values(&read_locally),
            "{url}: the same rows as the local file"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn data_that_is_missing_or_not_the_pinned_bytes_is_refused_with_exit_1() {
    let dir = fixtures().join("breast_cancer/1");
    let local = fixtures().join("breast_cancer/test.csv");
    let served = tempfile::tempdir().unwrap();
    std::fs::copy(&local, served.path().join("tampered.csv")).unwrap();
    std::fs::copy(&local, served.path().join("unpinned.csv")).unwrap();
    let other = "0".repeat(64);
    std::fs::write(served.path().join("tampered.csv.sha256"), &other).unwrap();
    let http = HttpDirectory::serve(served.path()).await;
    let cache = tempfile::tempdir().unwrap();
    let cases = [
        (http.url("tampered.csv"), vec![], other.clone()),
        (http.url("absent.csv"), vec![], "absent.csv".to_owned()),
        (
            http.url("held-out.txt"),
            vec![],
            "unknown data format".to_owned(),
        ),
        (
            local.to_str().unwrap().to_owned(),
            vec!["--data-sha256", other.as_str()],
            "--data-sha256".to_owned(),
        ),
        (
            http.url("unpinned.csv"),
            vec!["--data-sha256", other.as_str()],
            "--data-sha256".to_owned(),
        ),
    ];
    for (data, extra, expected) in cases {
        let mut args = vec![
            dir.to_str().unwrap(),
            "--data",
            &data,
            "--target",
            "target",
            "--fetch-retries",
            "0",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ];
        args.extend(extra.iter().copied());
        let (output, report) = eval(&args, &[]).await;
        assert_eq!(output.status.code(), Some(1), "{data}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(&expected),
            "{data}: expected {expected:?} in {}",
            stderr(&output)
        );
        assert!(
            report.is_none(),
            "{data}: no report for data never evaluated"
        );
    }
    let left: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "downloads are removed: {left:?}");
}
