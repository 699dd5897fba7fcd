//! Warm-up from real data (`--warmup-data`, a V2 inference request body): the model is ready only
//! after it has answered that request, and a warm-up that fails is a load failure that
//! `/health` explains. `embedding_lookup` version 2 has its table pruned to 95 ids, so generated
//! zeros warm it up fine while ids 95-99 make ONNX Runtime fail: which one it was warmed up with
//! shows.

mod common;

use std::path::Path;

use common::Server;
use serde_json::json;

fn warmup_file(dir: &Path, body: serde_json::Value) -> String {
    let path = dir.join("warmup.json");
    std::fs::write(&path, body.to_string()).unwrap();
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
