//! Warm-up from real data (`--warmup-data`, a V2 inference request body or a CSV file of rows, or
//! the input example an MLflow model version was logged with): the model is ready only after it
//! has answered that request, and a warm-up that fails is a load failure that `/health` explains,
//! naming the data. `embedding_lookup` version 2 has its table pruned to 95 ids, so generated
//! zeros warm it up fine while ids 95-99 make ONNX Runtime fail: which one it was warmed up with
//! shows.

mod common;

use std::path::Path;

use common::{
    Server,
    services::{mlflow_uri, serve_from_mlflow},
};
use serde_json::json;

fn warmup_file(dir: &Path, body: serde_json::Value) -> String {
    named_file(dir, "warmup.json", &body.to_string())
}

fn named_file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

fn ids(values: &[i64]) -> serde_json::Value {
    json!({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [values.len()], "data": values}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_is_warmed_up_with_the_given_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = warmup_file(dir.path(), ids(&[3, 42, 94]));
    let server = Server::start_fixture("embedding_lookup", "2", &["--warmup-data", &file]);
    server.wait_ready().await;
    let (status, answer) = server
        .post_json("/v2/models/embedding_lookup/infer", &ids(&[1]))
        .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_up_that_fails_fails_the_load_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    for (body, expected) in [
        // Zeros would have passed: the file's ids are what failed.
        (ids(&[3, 97]), "the warm-up inference failed"),
        (
            json!({"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [1], "data": [1]}]}),
            "--warmup-data",
        ),
    ] {
        let file = warmup_file(dir.path(), body);
        let server = Server::start_fixture("embedding_lookup", "2", &["--warmup-data", &file]);
        let health = server.wait_for_health("failed").await.to_string();
        assert!(health.contains(expected), "{health}");
    }
    let missing = dir.path().join("missing.json");
    let server = Server::start_fixture(
        "embedding_lookup",
        "1",
        &["--warmup-data", missing.to_str().unwrap()],
    );
    let health = server.wait_for_health("failed").await.to_string();
    assert!(health.contains("cannot read --warmup-data"), "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_file_of_rows_warms_the_model_up() {
    let dir = tempfile::tempdir().unwrap();
    let good = named_file(dir.path(), "rows.csv", "ids\n3\n42\n94\n");
    let server = Server::start_fixture("embedding_lookup", "2", &["--warmup-data", &good]);
    server.wait_ready().await;
    // Zeros would have passed: the rows are what failed, and /health names their file.
    let bad = named_file(dir.path(), "failing.CSV", "ids\n3\n97\n");
    let server = Server::start_fixture("embedding_lookup", "2", &["--warmup-data", &bad]);
    let health = server.wait_for_health("failed").await.to_string();
    assert!(health.contains("the warm-up inference failed"), "{health}");
    assert!(health.contains("failing.CSV"), "{health}");
    let words = named_file(dir.path(), "words.csv", "ids\nthree\n");
    let server = Server::start_fixture("embedding_lookup", "2", &["--warmup-data", &words]);
    let health = server.wait_for_health("failed").await.to_string();
    assert!(health.contains("column 'ids': 'three' is not"), "{health}");
}

/// `serve --model-uri models:/embedding-lookup/VERSION`, with `extra` arguments, not awaited.
fn serve_registered(version: &str, cache: &Path, extra: &[&str]) -> Server {
    let uri = format!("models:/embedding-lookup/{version}");
    let mut args = vec!["--model-uri", &uri, "--cache-dir", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start_with_env(&args, &[("MLFLOW_TRACKING_URI", mlflow_uri())])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mlflow_input_example_warms_the_model_up_unless_warmup_data_is_given() {
    // Version 1's example holds ids in range; version 2's holds id 97 (register_models.py).
    let (server, _cache) = serve_from_mlflow("models:/embedding-lookup/1").await;
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);
    let cache = tempfile::tempdir().unwrap();
    let server = serve_registered("2", cache.path(), &[]);
    let health = server.wait_for_health("failed").await.to_string();
    assert!(health.contains("the MLflow input example"), "{health}");
    assert!(health.contains("serving_input_example.json"), "{health}");
    assert!(health.contains("ONNX Runtime"), "{health}");
    let dir = tempfile::tempdir().unwrap();
    let rows = named_file(dir.path(), "rows.csv", "ids\n1\n2\n");
    let server = serve_registered("2", cache.path(), &["--warmup-data", &rows]);
    server.wait_ready().await;
}
