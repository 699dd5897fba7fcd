//! Every class of bad input gets the documented status and a JSON error naming the problem, and
//! leaves the server ready.

mod common;

use common::{Server, metrics::find_sample};
use futures_util::stream;
use serde_json::{Value, json};

fn input(name: &str, datatype: &str, shape: Value, data: Value) -> Value {
    json!({"name": name, "datatype": datatype, "shape": shape, "data": data})
}

fn infer(inputs: Vec<Value>) -> Value {
    json!({ "inputs": inputs })
}

fn churn_inputs(rows: usize) -> Vec<Value> {
    vec![
        input(
            "plan",
            "BYTES",
            json!([rows, 1]),
            json!(vec!["basic"; rows]),
        ),
        input("region", "BYTES", json!([rows, 1]), json!(vec!["eu"; rows])),
        input(
            "tenure_months",
            "FP32",
            json!([rows, 1]),
            json!(vec![12.0; rows]),
        ),
        input(
            "monthly_charges",
            "FP32",
            json!([rows, 1]),
            json!(vec![70.5; rows]),
        ),
    ]
}

/// Posts `body` and checks the status and that the error mentions every fragment.
async fn expect_error(
    server: &Server,
    path: &str,
    body: impl Into<reqwest::Body>,
    status: u16,
    fragments: &[&str],
) {
    let (got, answer) = server.post_bytes(path, body).await;
    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {answer}"));
    assert_eq!(got, status, "{error}");
    for fragment in fragments {
        assert!(
            error.contains(fragment),
            "{error:?} does not mention {fragment:?}"
        );
    }
}

async fn expect_json_error(
    server: &Server,
    path: &str,
    body: &Value,
    status: u16,
    fragments: &[&str],
) {
    expect_error(
        server,
        path,
        serde_json::to_vec(body).unwrap(),
        status,
        fragments,
    )
    .await;
}

/// How many `/v2/models/{name}/infer` requests were answered with `code`.
fn infer_answers(metrics: &str, code: &str) -> Option<f64> {
    let labels = [("route", "/v2/models/{name}/infer"), ("code", code)];
    find_sample(metrics, "pinserve_requests_total", &labels)
}

async fn assert_still_ready(server: &Server) {
    assert_eq!(server.get("/health").await.0, 200);
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let path = "/v2/models/tabular_mlp/infer";
    for (body, fragment) in [
        ("", "malformed request body"),
        ("{", "malformed request body"),
        ("[1, 2]", "malformed request body"),
        ("{\"inputs\": {}}", "malformed request body"),
        ("{\"inputs\": [{\"name\": \"features\"}]}", "missing field"),
        ("\u{0}\u{1}binary", "malformed request body"),
    ] {
        expect_error(&server, path, body, 400, &[fragment]).await;
    }
    expect_error(
        &server,
        path,
        vec![0xff, 0xfe, b'{'],
        400,
        &["malformed request body"],
    )
    .await;
    assert_still_ready(&server).await;
}

#[tokio::test]
async fn inputs_that_do_not_fit_the_signature_are_400_and_named() {
    let server = Server::fixture("breast_cancer", &[]).await;
    let path = "/v2/models/breast_cancer/infer";
    let row = || json!(vec![1.0; 30]);
    let cases = [
        (
            infer(vec![input("features", "FP32", json!([1, 30]), row())]),
            vec!["unknown input 'features'", "'input'"],
        ),
        (
            infer(vec![]),
            vec!["missing input 'input'", "FP32", "[-1, 30]"],
        ),
        (
            infer(vec![
                input("input", "FP32", json!([1, 30]), row()),
                input("input", "FP32", json!([1, 30]), row()),
            ]),
            vec!["input 'input' is given more than once"],
        ),
        (
            infer(vec![input("input", "FP64", json!([1, 30]), row())]),
            vec!["input 'input'", "datatype FP64", "FP32"],
        ),
        (
            infer(vec![input("input", "FLOAT32", json!([1, 30]), row())]),
            vec!["input 'input'", "unknown datatype 'FLOAT32'"],
        ),
        (
            infer(vec![input(
                "input",
                "FP32",
                json!([1, 31]),
                json!(vec![1.0; 31]),
            )]),
            vec!["input 'input'", "dimension 1 must be 30"],
        ),
        (
            infer(vec![input("input", "FP32", json!([30]), row())]),
            vec!["input 'input'", "expected rank 2, got rank 1"],
        ),
        (
            infer(vec![input("input", "FP32", json!([-1, 30]), row())]),
            vec!["input 'input'", "negative dimension"],
        ),
        (
            infer(vec![input("input", "FP32", json!([2, 30]), row())]),
            vec!["input 'input'", "holds 60 values, but 30 were given"],
        ),
        (
            infer(vec![input(
                "input",
                "FP32",
                json!([1, 30]),
                json!(vec!["x"; 30]),
            )]),
            vec!["input 'input'", "invalid type: string", "FP32"],
        ),
        (
            infer(vec![input(
                "input",
                "FP32",
                json!([1, 30]),
                json!(vec![Value::Null; 30]),
            )]),
            vec!["input 'input'", "null"],
        ),
        (
            infer(vec![input(
                "input",
                "FP32",
                json!([1, 30]),
                json!(vec![1e40; 30]),
            )]),
            vec!["input 'input'", "out of range"],
        ),
    ];
    for (body, fragments) in cases {
        expect_json_error(&server, path, &body, 400, &fragments).await;
    }
    let mut unknown_output = infer(vec![input("input", "FP32", json!([1, 30]), row())]);
    unknown_output["outputs"] = json!([{"name": "score"}]);
    expect_json_error(
        &server,
        path,
        &unknown_output,
        400,
        &["unknown output 'score'", "'label', 'probabilities'"],
    )
    .await;
    assert_still_ready(&server).await;
}

#[tokio::test]
async fn integer_and_string_inputs_are_checked_value_by_value() {
    let server = Server::fixture("all_dtypes", &[]).await;
    let path = "/v2/models/all_dtypes/infer";
    let body = |name: &str, datatype: &str, data: Value| {
        let mut inputs: Vec<Value> = [
            ("x_fp32", "FP32", json!([0, 0, 0])),
            ("x_fp64", "FP64", json!([0, 0, 0])),
            ("x_fp16", "FP16", json!([0, 0, 0])),
            ("x_bf16", "BF16", json!([0, 0, 0])),
            ("x_int8", "INT8", json!([0, 0, 0])),
            ("x_int16", "INT16", json!([0, 0, 0])),
            ("x_int32", "INT32", json!([0, 0, 0])),
            ("x_int64", "INT64", json!([0, 0, 0])),
            ("x_uint8", "UINT8", json!([0, 0, 0])),
            ("x_uint16", "UINT16", json!([0, 0, 0])),
            ("x_uint32", "UINT32", json!([0, 0, 0])),
            ("x_uint64", "UINT64", json!([0, 0, 0])),
            ("x_bool", "BOOL", json!([true, false, true])),
            ("x_bytes", "BYTES", json!(["a", "b", "c"])),
        ]
        .into_iter()
        .filter(|(input_name, _, _)| *input_name != name)
        .map(|(input_name, dt, d)| input(input_name, dt, json!([1, 3]), d))
        .collect();
        inputs.push(input(name, datatype, json!([1, 3]), data));
        infer(inputs)
    };
    let cases = [
        (
            body("x_int8", "INT8", json!([1, 300, 2])),
            vec!["input 'x_int8'", "out of range"],
        ),
        (
            body("x_int64", "INT64", json!([1, 1.5, 2])),
            vec!["input 'x_int64'", "expected an INT64 integer"],
        ),
        (
            body("x_uint8", "UINT8", json!([1, -1, 2])),
            vec!["input 'x_uint8'", "out of range"],
        ),
        (
            body("x_bool", "BOOL", json!([1, 0, 1])),
            vec!["input 'x_bool'", "expected a BOOL"],
        ),
        (
            body("x_bytes", "BYTES", json!([1, 2, 3])),
            vec!["input 'x_bytes'", "expected a BYTES value"],
        ),
        (
            body("x_bytes", "BYTES", json!(["a", "b\u{0}c", "d"])),
            vec!["input 'x_bytes'", "NUL"],
        ),
        (
            body("x_fp16", "FP16", json!([1, 70000, 2])),
            vec!["input 'x_fp16'", "out of range"],
        ),
    ];
    for (request, fragments) in cases {
        expect_json_error(&server, path, &request, 400, &fragments).await;
    }
    let (status, _) = server
        .post_json(path, &body("x_bool", "BOOL", json!([true, false, false])))
        .await;
    assert_eq!(status, 200, "the baseline request is valid");
    assert_still_ready(&server).await;
}

#[tokio::test]
async fn inputs_must_agree_on_the_batch_dimension() {
    let server = Server::fixture("churn_pipeline", &[]).await;
    let mut inputs = churn_inputs(2);
    inputs[1] = input("region", "BYTES", json!([1, 1]), json!(["eu"]));
    expect_json_error(
        &server,
        "/v2/models/churn_pipeline/infer",
        &infer(inputs),
        400,
        &["inputs 'plan' and 'region' disagree on dimension 'batch (dimension 0)': 2 vs 1"],
    )
    .await;
    let mut missing = churn_inputs(1);
    missing.remove(1);
    expect_json_error(
        &server,
        "/v2/models/churn_pipeline/infer",
        &infer(missing),
        400,
        &["missing input 'region'"],
    )
    .await;
    assert_eq!(
        server
            .post_json("/v2/models/churn_pipeline/infer", &infer(churn_inputs(3)))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_fixed_batch_dimension_is_enforced() {
    let server = Server::fixture("fixed_batch", &[]).await;
    let two_rows = infer(vec![input(
        "features",
        "FP32",
        json!([2, 32]),
        json!(vec![0.5; 64]),
    )]);
    expect_json_error(
        &server,
        "/v2/models/fixed_batch/infer",
        &two_rows,
        400,
        &["input 'features'", "dimension 0 must be 1"],
    )
    .await;
    let rows = json!({"instances": [vec![0.5; 32], vec![0.5; 32]]});
    expect_json_error(&server, "/predict", &rows, 400, &["dimension 0 must be 1"]).await;
    let one_row = json!({"instances": [vec![0.5; 32]]});
    assert_eq!(server.post_json("/predict", &one_row).await.0, 200);
}

#[tokio::test]
async fn predict_bodies_are_checked_too() {
    let server = Server::fixture("churn_pipeline", &[]).await;
    let row = json!({"plan": ["basic"], "region": ["eu"], "tenure_months": [3.0], "monthly_charges": [20.0]});
    let cases = [
        (json!({}), vec!["\"instances\""]),
        (json!({"instances": []}), vec!["empty"]),
        (json!({"instances": [row], "inputs": {}}), vec!["not both"]),
        (
            json!({"instances": [[1.0]]}),
            vec!["object keyed by input name"],
        ),
        (
            json!({"instances": [{"plan": ["basic"]}]}),
            vec!["missing input 'region'"],
        ),
        (
            json!({"instances": [row, {"plan": ["x"]}]}),
            vec!["instance 1"],
        ),
        (
            json!({"instances": [{"plan": ["basic"], "region": [["eu"]], "tenure_months": [3.0], "monthly_charges": [20.0]}]}),
            vec!["input 'region'", "rank"],
        ),
        (
            json!({"instances": [{"plan": [1], "region": ["eu"], "tenure_months": [3.0], "monthly_charges": [20.0]}]}),
            vec!["input 'plan'", "BYTES"],
        ),
        (
            json!({"inputs": [1, 2]}),
            vec!["object keyed by input name"],
        ),
    ];
    for (body, fragments) in cases {
        expect_json_error(&server, "/predict", &body, 400, &fragments).await;
    }
    let tabular = Server::fixture("tabular_mlp", &[]).await;
    let ragged = json!({"instances": [vec![0.5; 32], vec![0.5; 31]]});
    expect_json_error(
        &tabular,
        "/predict",
        &ragged,
        400,
        &["input 'features'", "ragged"],
    )
    .await;
    assert_still_ready(&server).await;
}

#[tokio::test]
async fn an_empty_outputs_list_and_an_overlong_id_are_400_not_model_failures() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let path = "/v2/models/tabular_mlp/infer";
    let features = input("features", "FP32", json!([1, 32]), json!(vec![0.5; 32]));
    let no_outputs = json!({"inputs": [features.clone()], "outputs": []});
    expect_json_error(&server, path, &no_outputs, 400, &["\"outputs\" is empty"]).await;
    let long_id = json!({"id": "x".repeat(1025), "inputs": [features.clone()]});
    expect_json_error(&server, path, &long_id, 400, &["\"id\" is 1025 bytes long"]).await;
    let ok_id = json!({"id": "x".repeat(1024), "inputs": [features]});
    let (status, body) = server.post_json(path, &ok_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"].as_str().map(str::len), Some(1024));
    let metrics = server.metrics().await;
    assert!(!metrics.contains(r#"code="500""#), "{metrics}");
    assert_eq!(infer_answers(&metrics, "400"), Some(2.0), "{metrics}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_with_or_without_a_length() {
    let server = Server::fixture("tabular_mlp", &["--max-body-bytes", "4096"]).await;
    let big = infer(vec![input(
        "features",
        "FP32",
        json!([64, 32]),
        json!(vec![0.123_456_7; 64 * 32]),
    )]);
    let bytes = serde_json::to_vec(&big).unwrap();
    assert!(bytes.len() > 4096);
    for path in ["/v2/models/tabular_mlp/infer", "/predict"] {
        expect_error(
            &server,
            path,
            bytes.clone(),
            413,
            &["exceeds the limit of 4096 bytes"],
        )
        .await;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(1000).map(|c| Ok(c.to_vec())).collect();
        let streamed = reqwest::Body::wrap_stream(stream::iter(chunks));
        expect_error(&server, path, streamed, 413, &["exceeds the limit"]).await;
    }
    let small = infer(vec![input(
        "features",
        "FP32",
        json!([1, 32]),
        json!(vec![0.5; 32]),
    )]);
    assert_eq!(
        server
            .post_json("/v2/models/tabular_mlp/infer", &small)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn an_onnx_runtime_failure_is_500_with_its_message() {
    let server = Server::fixture("embedding_lookup", &[]).await;
    let out_of_vocabulary = infer(vec![input("ids", "INT64", json!([2]), json!([3, 500]))]);
    expect_json_error(
        &server,
        "/v2/models/embedding_lookup/infer",
        &out_of_vocabulary,
        500,
        &["ONNX Runtime failed", "Gather", "idx=500"],
    )
    .await;
    assert_still_ready(&server).await;
    let valid = infer(vec![input("ids", "INT64", json!([2]), json!([3, 99]))]);
    assert_eq!(
        server
            .post_json("/v2/models/embedding_lookup/infer", &valid)
            .await
            .0,
        200
    );
    let metrics = server.metrics().await;
    assert_eq!(infer_answers(&metrics, "500"), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn requests_for_other_models_or_versions_are_404() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let body = infer(vec![input(
        "features",
        "FP32",
        json!([1, 32]),
        json!(vec![0.5; 32]),
    )]);
    expect_json_error(
        &server,
        "/v2/models/iris/infer",
        &body,
        404,
        &["unknown model 'iris'", "'tabular_mlp' version '1'"],
    )
    .await;
    expect_json_error(
        &server,
        "/v2/models/tabular_mlp/versions/2/infer",
        &body,
        404,
        &["unknown model 'tabular_mlp' version '2'"],
    )
    .await;
}
