//! The real registries `tests/support/services.sh` starts (MLflow, MLflow with basic auth, moto
//! S3) and what it registered in them. `scripts/test.sh` starts them and exports their
//! addresses; a test run without them fails and says how to start them.

use std::{hash::BuildHasher, path::Path};

use serde_json::Value;

use super::{Server, pinserve_async};

pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the registries that scripts/test.sh starts \
             (or run `tests/support/services.sh start && source target/test-services/env`)"
        )
    })
}

pub fn mlflow_uri() -> String {
    var("PINSERVE_TEST_MLFLOW_URI")
}

/// The Python of `.venv-services`, where MLflow (its scoring server and client) is installed.
pub fn services_python() -> String {
    var("PINSERVE_TEST_SERVICES_PYTHON")
}

/// What register_models.py registered, with expected requests and outputs per model version.
pub fn registered() -> Value {
    let path = var("PINSERVE_TEST_SERVICES");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The expected request and outputs for `model/version` (e.g. `tabular-mlp/2`).
pub fn expected(key: &str) -> (Value, Value) {
    let registered = registered();
    let case = &registered["expected"][key];
    assert!(
        case.is_object(),
        "registered.json has no expected case {key}"
    );
    (case["request"].clone(), case["outputs"].clone())
}

/// `GET` an endpoint of the open MLflow server's REST API (`model-versions/get`, ...).
pub async fn mlflow_get(path: &str, query: &[(&str, &str)]) -> Value {
    let mut url = reqwest::Url::parse(&format!("{}/api/2.0/mlflow/{path}", mlflow_uri())).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    let response = reqwest::get(url).await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// A tag of a model version (or run) as MLflow's API returns it.
pub fn tag<'a>(entity: &'a Value, key: &str) -> Option<&'a str> {
    entity["tags"]
        .as_array()?
        .iter()
        .find(|tag| tag["key"] == key)
        .and_then(|tag| tag["value"].as_str())
}

/// A registered-model name no other test (or earlier run against the same server) uses.
pub fn unique_name(test: &str) -> String {
    // std seeds each RandomState from the operating system's randomness.
    let random = std::hash::RandomState::new().hash_one(test);
    format!("{test}-{}-{random:016x}", std::process::id())
}

/// Serves `uri` from the open MLflow server, fetching in-process into a fresh cache.
pub async fn serve_from_mlflow(uri: &str) -> (Server, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &[
            "--model-uri",
            uri,
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &[("MLFLOW_TRACKING_URI", mlflow_uri())],
    );
    server.wait_ready().await;
    (server, cache)
}

/// `pinserve register --model-file MODEL_FILE --name NAME EXTRA...` against the open MLflow
/// server; it must succeed and print only the new version, which is returned.
pub async fn register_version(model_file: &Path, name: &str, extra: &[&str]) -> String {
    let output = pinserve_async()
        .args(["register", "--model-file"])
        .arg(model_file)
        .args(["--name", name])
        .args(extra)
        .env("MLFLOW_TRACKING_URI", mlflow_uri())
        .output()
        .await
        .expect("pinserve register runs");
    assert!(output.status.success(), "{}", super::stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {stdout:?}");
    assert!(
        lines[0].parse::<u64>().is_ok(),
        "a version number: {stdout:?}"
    );
    lines[0].to_owned()
}

/// The environment that reaches the moto S3 server, as AWS's own variables and pinserve's
/// `--storage-endpoint` say it.
pub fn s3_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", var("PINSERVE_TEST_S3_ACCESS_KEY_ID")),
        (
            "AWS_SECRET_ACCESS_KEY",
            var("PINSERVE_TEST_S3_SECRET_ACCESS_KEY"),
        ),
        ("AWS_REGION", var("PINSERVE_TEST_S3_REGION")),
        (
            "PINSERVE_STORAGE_ENDPOINT",
            var("PINSERVE_TEST_S3_ENDPOINT"),
        ),
    ]
}
