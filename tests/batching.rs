//! Dynamic batching over real HTTP: under concurrency every request gets exactly its own rows
//! back, for every fixture and datatype; admission refuses at the edge; slow queues answer 504;
//! requests whose client has gone are dropped before inference and counted.

mod common;

use std::time::Duration;

use common::{
    STARTUP_TIMEOUT, Server, assert_outputs_match, golden,
    metrics::{find_sample, sample_value},
    tabular_request, wait_until,
};
use futures_util::future::join_all;
use serde_json::{Value, json};

/// Rows `start..start + count` of a flat tensor of shape `[rows, ...]`.
fn slice_rows(tensor: &Value, start: usize, count: usize) -> Value {
    let shape: Vec<usize> = tensor["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let stride: usize = shape[1..].iter().product();
    let data =
        tensor["data"].as_array().unwrap()[start * stride..(start + count) * stride].to_vec();
    let mut part = tensor.clone();
    part["shape"][0] = json!(count);
    part["data"] = Value::Array(data);
    part
}

/// Sends the golden 64-row case as many small concurrent requests (1 to 3 rows each) and checks
/// each answer against its own rows of the golden outputs.
async fn check_concurrent_rows(model: &str) {
    let server = Server::fixture(
        model,
        &["--max-batch-size", "16", "--max-batch-delay", "5ms"],
    )
    .await;
    let golden = golden(model);
    let case = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "batch_64")
        .unwrap();
    let (inputs, outputs) = (
        case["request"]["inputs"].as_array().unwrap(),
        case["outputs"].as_array().unwrap(),
    );
    let mut parts = Vec::new();
    let mut start = 0;
    while start < 64 {
        let count = [1, 2, 3][parts.len() % 3].min(64 - start);
        parts.push((start, count));
        start += count;
    }
    let path = format!("/v2/models/{model}/infer");
    let requests = parts.iter().map(|&(start, count)| {
        let request = json!({
            "id": format!("rows-{start}"),
            "inputs": inputs.iter().map(|input| slice_rows(input, start, count)).collect::<Vec<_>>(),
        });
        let server = &server;
        let path = &path;
        async move { (start, count, server.post_json(path, &request).await) }
    });
    for (start, count, (status, body)) in join_all(requests).await {
        assert_eq!(
            status,
            200,
            "{model} rows {start}..{}: {body}",
            start + count
        );
        assert_eq!(body["id"], format!("rows-{start}"));
        let expected: Vec<Value> = outputs
            .iter()
            .map(|output| slice_rows(output, start, count))
            .collect();
        assert_outputs_match(
            &body["outputs"],
            &Value::Array(expected),
            &format!("{model} rows {start}.."),
        );
    }
    let metrics = server.metrics().await;
    let calls = sample_value(&metrics, "pinserve_batch_size_count", &version_1(model));
    let rows = sample_value(&metrics, "pinserve_batch_size_sum", &version_1(model));
    assert_eq!(rows, 64.0, "every row went through ONNX Runtime once");
    assert!(
        calls < parts.len() as f64,
        "{} requests in {calls} calls: some were batched",
        parts.len()
    );
}

/// The labels of version 1 of `model`.
fn version_1(model: &str) -> [(&str, &str); 2] {
    [("model", model), ("version", "1")]
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tabular_requests_get_their_own_rows() {
    check_concurrent_rows("tabular_mlp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_classifier_requests_get_their_own_rows() {
    check_concurrent_rows("breast_cancer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_string_pipeline_requests_get_their_own_rows() {
    check_concurrent_rows("churn_pipeline").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_of_every_datatype_get_their_own_rows() {
    check_concurrent_rows("all_dtypes").await;
}

/// A request that needs a long ONNX Runtime call: compute_mlp on many rows. With one intra-op
/// thread, 1024 rows are about 19 GFLOP, far longer than the timeouts these tests use.
fn heavy_request(rows: usize) -> Value {
    json!({"inputs": [{"name": "x", "shape": [rows, 512], "datatype": "FP32", "data": vec![0.01; rows * 512]}]})
}

/// One single-threaded instance that never waits to fill a batch.
const SLOW_WORKER: [&str; 4] = ["--max-batch-delay", "0", "--intra-op-threads", "1"];

/// Runs `then` while the single worker is busy with a 1024-row call, started before `then` is.
async fn behind_a_long_call<F: std::future::Future>(server: &Server, then: F) -> F::Output {
    let path = "/v2/models/compute_mlp/infer";
    let long = heavy_request(1024);
    let (first, output) = tokio::join!(server.post_json(path, &long), async {
        wait_for_first_batch(server).await;
        then.await
    });
    assert_eq!(first.0, 200, "{}", first.1);
    output
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    let [model, version] = version_1("compute_mlp");
    let labels = [model, version, ("reason", reason)];
    find_sample(metrics, "pinserve_rejected_total", &labels).unwrap_or(0.0)
}

/// Waits until the worker has started the first batch, so later requests queue behind it
/// whatever the time their bodies take to encode and decode. Checked often, so that a quick
/// first batch is still seen running.
async fn wait_for_first_batch(server: &Server) {
    let labels = version_1("compute_mlp");
    wait_until(
        "the first batch to start",
        STARTUP_TIMEOUT,
        Duration::from_millis(2),
        async || match find_sample(
            &server.metrics().await,
            "pinserve_batch_size_count",
            &labels,
        ) {
            Some(count) if count > 0.0 => Ok(()),
            other => Err(format!("batches: {other:?}")),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_is_refused_at_once_with_retry_after() {
    // Batches of 4 rows at most and room for 10 queued rows: behind the long call, two small
    // requests wait in the queue and the rest are refused.
    let mut args = SLOW_WORKER.to_vec();
    args.extend(["--max-batch-size", "4", "--max-queue-rows", "10"]);
    let server = Server::fixture("compute_mlp", &args).await;
    let client = server.client();
    let url = server.url("/v2/models/compute_mlp/infer");
    let body = serde_json::to_vec(&heavy_request(4)).unwrap();
    let sends = (0..8).map(|_| client.post(&url).body(body.clone()).send());
    let responses = behind_a_long_call(&server, join_all(sends)).await;
    let responses: Vec<_> = responses.into_iter().map(Result::unwrap).collect();
    let refused: Vec<_> = responses.iter().filter(|r| r.status() == 503).collect();
    assert!(
        !refused.is_empty(),
        "10 queued rows cannot hold eight 4-row requests"
    );
    assert_eq!(refused[0].headers()["retry-after"], "1");
    assert!(
        responses
            .iter()
            .all(|r| r.status() == 200 || r.status() == 503)
    );
    let metrics = server.metrics().await;
    let rejected = rejected(&metrics, "queue_full");
    assert_eq!(rejected, refused.len() as f64);
    assert_eq!(
        server.get("/health").await.0,
        200,
        "health stays ready under load"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_that_wait_past_the_timeout_get_504() {
    let mut args = SLOW_WORKER.to_vec();
    args.extend(["--max-batch-size", "1024", "--request-timeout", "50ms"]);
    let server = Server::fixture("compute_mlp", &args).await;
    let quick = heavy_request(1);
    let second = behind_a_long_call(
        &server,
        server.post_json("/v2/models/compute_mlp/infer", &quick),
    )
    .await;
    assert_eq!(second.0, 504, "{}", second.1);
    assert!(
        second.1["error"]
            .as_str()
            .unwrap()
            .contains("--request-timeout"),
        "{}",
        second.1
    );
    let metrics = server.metrics().await;
    assert_eq!(rejected(&metrics, "timeout"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_whose_client_left_are_dropped_before_inference() {
    let mut args = SLOW_WORKER.to_vec();
    args.extend(["--max-batch-size", "1024"]);
    let server = Server::fixture("compute_mlp", &args).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let url = server.url("/v2/models/compute_mlp/infer");
    // Built inside the block: reqwest's timeout starts when the request is built.
    let abandoned = behind_a_long_call(&server, async {
        impatient.post(&url).json(&heavy_request(8)).send().await
    })
    .await;
    assert!(abandoned.unwrap_err().is_timeout());
    let client_closed = [("route", "/v2/models/{name}/infer"), ("code", "499")];
    let metrics = server
        .metrics_when(|text| {
            rejected(text, "client_disconnected") > 0.0
                && find_sample(text, "pinserve_requests_total", &client_closed).is_some()
        })
        .await;
    assert_eq!(rejected(&metrics, "client_disconnected"), 1.0);
    assert_eq!(
        sample_value(
            &metrics,
            "pinserve_batch_size_sum",
            &version_1("compute_mlp")
        ),
        1024.0,
        "the abandoned request never reached ONNX Runtime"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_with_a_fixed_batch_dimension_runs_requests_one_by_one() {
    let server = Server::fixture("fixed_batch", &["--max-batch-delay", "5ms"]).await;
    let request = tabular_request();
    let answers =
        join_all((0..8).map(|_| server.post_json("/v2/models/fixed_batch/infer", &request))).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    let metrics = server.metrics().await;
    assert_eq!(
        sample_value(
            &metrics,
            "pinserve_batch_size_count",
            &version_1("fixed_batch")
        ),
        8.0
    );
    assert!(server.logs().iter().any(|entry| {
        entry["message"]
            .as_str()
            .is_some_and(|m| m.contains("batching is off"))
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn several_instances_serve_the_same_answers() {
    let server = Server::fixture(
        "tabular_mlp",
        &["--instances", "2", "--max-batch-delay", "0"],
    )
    .await;
    let case = &golden("tabular_mlp")["cases"][1];
    let answers = join_all(
        (0..16).map(|_| server.post_json("/v2/models/tabular_mlp/infer", &case["request"])),
    )
    .await;
    for (status, body) in answers {
        assert_eq!(status, 200);
        assert_outputs_match(
            &body["outputs"],
            &case["outputs"],
            "tabular_mlp on two instances",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_requests_batched_with_others_fail_nobody() {
    let server = Server::fixture("tabular_mlp", &["--max-batch-delay", "20ms"]).await;
    let path = "/v2/models/tabular_mlp/infer";
    let request = |rows: usize| json!({"inputs": [{"name": "features", "shape": [rows, 32], "datatype": "FP32", "data": vec![0.5; rows * 32]}]});
    for round in 0..4 {
        let requests = (0..16).map(|i| {
            let rows = if i % 4 == 0 { 0 } else { 1 };
            let body = request(rows);
            let server = &server;
            async move { (rows, server.post_json(path, &body).await) }
        });
        for (rows, (status, body)) in join_all(requests).await {
            assert_eq!(status, 200, "round {round}, {rows} rows: {body}");
            assert_eq!(body["outputs"][0]["shape"][0], rows, "{body}");
        }
    }
    let metrics = server.metrics().await;
    assert!(!metrics.contains(r#"code="500""#), "{metrics}");
}
