//! Triton's own HTTP client (`tritonclient.http`, tests/clients/triton_http.py) against pinserve:
//! health, metadata and inference for every golden case, with binary tensors (the client's
//! default), with JSON, with outputs left to the server, and with request and response bodies
//! compressed (`request_compression_algorithm`, `response_compression_algorithm`: gzip and
//! deflate). Triton users switch to pinserve without changing their client code.

mod common;

use common::{Server, assert_outputs_match, golden};
use serde_json::{Value, json};

fn run_client(server: &Server, model: &str, requests: &[Value]) -> Value {
    let job = json!({"url": server.address.to_string(), "model": model, "requests": requests});
    common::run_client_script("triton_http.py", &job)
}

/// For each golden case: binary inputs with outputs left to the server, JSON inputs and outputs,
/// binary inputs and outputs named explicitly, and the first and last of these again with both
/// bodies compressed, with gzip and with deflate.
async fn check_fixture(model: &str) {
    let server = Server::fixture(model, &[]).await;
    let golden = golden(model);
    let cases = golden["cases"].as_array().unwrap();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for case in cases {
        let inputs = &case["request"]["inputs"];
        let names = common::output_names(case);
        for (binary_inputs, binary_outputs, outputs, compression) in [
            (true, true, Value::Null, Value::Null),
            (false, false, json!(names), Value::Null),
            (true, true, json!(names), Value::Null),
            (true, true, Value::Null, json!(["gzip", "gzip"])),
            (false, false, json!(names), json!(["deflate", "deflate"])),
            (true, true, json!(names), json!(["gzip", "deflate"])),
        ] {
            requests.push(json!({
                "inputs": inputs,
                "binary_inputs": binary_inputs,
                "binary_outputs": binary_outputs,
                "outputs": outputs,
                "compression": compression,
            }));
            expected.push((case["name"].as_str().unwrap(), &case["outputs"]));
        }
    }
    let report = run_client(&server, model, &requests);
    assert_eq!(report["live"], true);
    assert_eq!(report["ready"], true);
    assert_eq!(report["model_ready"], true);
    assert_eq!(report["metadata"]["name"], model);
    assert!(
        report["server_metadata"]["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    let answers = report["answers"].as_array().unwrap();
    assert_eq!(answers.len(), expected.len());
    for ((answer, (case, outputs)), request) in answers.iter().zip(&expected).zip(&requests) {
        let context = format!(
            "{model} {case} (binary inputs {}, binary outputs {}, compression {})",
            request["binary_inputs"], request["binary_outputs"], request["compression"]
        );
        assert_eq!(answer["id"], "triton-client", "{context}: {answer}");
        assert_outputs_match(&answer["outputs"], outputs, &context);
    }
    check_statistics(model, &report, &requests);
}

/// The statistics extension, read with the client's `get_inference_statistics` after the
/// requests above: every request counted once as a success, queued and inferred, and every row
/// in `inference_count`; model calls no more than requests, each counted under its batch size.
fn check_statistics(model: &str, report: &Value, requests: &[Value]) {
    assert!(
        report["server_metadata"]["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("statistics"))
    );
    let stats = &report["statistics"]["model_stats"][0];
    assert_eq!(stats["name"], model, "{stats}");
    assert_eq!(stats["version"], "1");
    let count = |path: &str| stats["inference_stats"][path]["count"].as_u64().unwrap();
    let answered = requests.len() as u64;
    for counted in [
        "success",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
    ] {
        assert_eq!(count(counted), answered, "{counted}: {stats}");
    }
    assert_eq!(count("fail"), 0, "{stats}");
    assert!(
        stats["inference_stats"]["compute_infer"]["ns"]
            .as_u64()
            .unwrap()
            > 0
    );
    let rows: u64 = requests
        .iter()
        .map(|request| request["inputs"][0]["shape"][0].as_u64().unwrap())
        .sum();
    assert_eq!(stats["inference_count"].as_u64().unwrap(), rows, "{stats}");
    let executions = stats["execution_count"].as_u64().unwrap();
    assert!((1..=answered).contains(&executions), "{stats}");
    let per_size: u64 = stats["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|size| size["compute_infer"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(per_size, executions, "{stats}");
    assert!(stats["last_inference"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn triton_clients_run_the_tabular_model() {
    check_fixture("tabular_mlp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn triton_clients_run_a_string_pipeline() {
    check_fixture("churn_pipeline").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn triton_clients_send_every_datatype() {
    check_fixture("all_dtypes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn triton_clients_see_bad_requests_as_errors() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let wrong_width = json!({
        "inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
        "binary_inputs": true,
        "binary_outputs": true,
        "outputs": null,
    });
    let report = run_client(&server, "tabular_mlp", &[wrong_width]);
    let answer = &report["answers"][0];
    assert_eq!(answer["status"], "400", "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("input 'features'"), "{error}");
}
