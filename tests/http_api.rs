//! Every endpoint over real HTTP: Open Inference Protocol v2, `/predict`, health and metrics.

mod common;

use std::process::Command;

use common::{Server, golden, metrics::find_sample};
use serde_json::{Value, json};

fn tabular_request(rows: usize) -> Value {
    let data: Vec<f32> = (0..rows * 32).map(|i| (i % 7) as f32 * 0.25).collect();
    json!({"id": "req-7", "inputs": [{"name": "features", "shape": [rows, 32], "datatype": "FP32", "data": data}]})
}

#[tokio::test]
async fn server_metadata_and_health_endpoints() {
    let server = Server::fixture("tabular_mlp", &[]).await;

    let (status, body) = server.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "pinserve");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["extensions"].is_array());

    assert_eq!(
        server.get("/v2/health/live").await,
        (200, json!({"live": true}))
    );
    assert_eq!(
        server.get("/v2/health/ready").await,
        (200, json!({"ready": true}))
    );
    assert_eq!(server.get("/livez").await.0, 200);

    let (status, health) = server.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ready");
    assert_eq!(health["model"], "tabular_mlp");
    assert_eq!(health["version"], "1");
    assert_eq!(health["device"], "cpu");
    assert!(health["load_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn model_metadata_and_readiness() {
    let server = Server::fixture("churn_pipeline", &[]).await;
    let expected = json!({
        "name": "churn_pipeline",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "plan", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "region", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "tenure_months", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "monthly_charges", "datatype": "FP32", "shape": [-1, 1]},
        ],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ],
    });
    assert_eq!(
        server.get("/v2/models/churn_pipeline").await,
        (200, expected.clone())
    );
    assert_eq!(
        server.get("/v2/models/churn_pipeline/versions/1").await,
        (200, expected)
    );

    for path in [
        "/v2/models/churn_pipeline/ready",
        "/v2/models/churn_pipeline/versions/1/ready",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!((status, &body["ready"]), (200, &json!(true)), "{path}");
    }
    for path in [
        "/v2/models/iris",
        "/v2/models/churn_pipeline/versions/2",
        "/v2/models/iris/ready",
        "/v2/models/churn_pipeline/versions/2/ready",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("unknown model"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn infer_returns_only_the_requested_outputs_in_order() {
    let server = Server::fixture("breast_cancer", &[]).await;
    let mut request = golden("breast_cancer")["cases"][1]["request"].clone();
    request["outputs"] = json!([{"name": "probabilities"}, {"name": "label"}]);
    let (status, body) = server
        .post_json("/v2/models/breast_cancer/infer", &request)
        .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["probabilities", "label"]);

    request["outputs"] = json!([{"name": "label"}]);
    let (_, body) = server
        .post_json("/v2/models/breast_cancer/infer", &request)
        .await;
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(body["outputs"][0]["name"], "label");
}

#[tokio::test]
async fn infer_accepts_nested_data_and_parameters() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let flat = tabular_request(2);
    let rows: Vec<Value> = flat["inputs"][0]["data"]
        .as_array()
        .unwrap()
        .chunks(32)
        .map(|row| Value::Array(row.to_vec()))
        .collect();
    let mut nested = flat.clone();
    nested["inputs"][0]["data"] = Value::Array(rows);
    nested["parameters"] = json!({"priority": 1});
    nested["inputs"][0]["parameters"] = json!({"binary_data": false});
    let (_, flat_answer) = server
        .post_json("/v2/models/tabular_mlp/infer", &flat)
        .await;
    let (status, nested_answer) = server
        .post_json("/v2/models/tabular_mlp/infer", &nested)
        .await;
    assert_eq!(status, 200, "{nested_answer}");
    assert_eq!(flat_answer["outputs"], nested_answer["outputs"]);
    assert_eq!(nested_answer["id"], "req-7");
}

#[tokio::test]
async fn predict_answers_rows_for_instances_and_columns_for_inputs() {
    let server = Server::fixture("churn_pipeline", &[]).await;
    let case = &golden("churn_pipeline")["cases"][1];
    let inputs = case["request"]["inputs"].as_array().unwrap();
    let rows = inputs[0]["shape"][0].as_u64().unwrap() as usize;
    let instances: Vec<Value> = (0..rows)
        .map(|row| {
            inputs
                .iter()
                .map(|input| {
                    (
                        input["name"].as_str().unwrap().to_owned(),
                        json!([input["data"][row]]),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    let expected_labels = &case["outputs"][0]["data"];

    for path in ["/predict", "/v1/models/churn_pipeline:predict"] {
        let (status, body) = server
            .post_json(path, &json!({ "instances": instances }))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        let predictions = body["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), rows);
        for (row, prediction) in predictions.iter().enumerate() {
            assert_eq!(
                prediction["label"], expected_labels[row],
                "{path} row {row}"
            );
            assert_eq!(prediction["probabilities"].as_array().unwrap().len(), 2);
        }
    }

    let columns: serde_json::Map<String, Value> = inputs
        .iter()
        .map(|input| {
            let column: Vec<Value> = input["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| json!([v]))
                .collect();
            (
                input["name"].as_str().unwrap().to_owned(),
                Value::Array(column),
            )
        })
        .collect();
    let (status, body) = server
        .post_json("/predict", &json!({ "inputs": columns }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(&body["outputs"]["label"], expected_labels);
    assert_eq!(
        body["outputs"]["probabilities"].as_array().unwrap().len(),
        rows
    );

    let (status, body) = server
        .post_json("/v1/models/iris:predict", &json!({"instances": instances}))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server
        .post_json("/v1/models/churn_pipeline:explain", &json!({}))
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn predict_rows_for_a_single_input_model() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let request = tabular_request(3);
    let data = request["inputs"][0]["data"].as_array().unwrap();
    let instances: Vec<&[Value]> = data.chunks(32).collect();
    let (_, v2) = server
        .post_json("/v2/models/tabular_mlp/infer", &request)
        .await;
    let (status, body) = server
        .post_json("/predict", &json!({ "instances": instances }))
        .await;
    assert_eq!(status, 200, "{body}");
    let expected: Vec<Value> = v2["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p]))
        .collect();
    assert_eq!(body["predictions"], Value::Array(expected));
}

/// `curl` output ends on a line of its own: every JSON body, answer or error, ends with a
/// newline (a binary-extension answer does not: its JSON part has a declared length).
#[tokio::test]
async fn json_bodies_end_with_a_newline() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let get = |path: &'static str| server.client().get(server.url(path)).send();
    let post =
        |path: &'static str, body: Value| server.client().post(server.url(path)).json(&body).send();
    let predict = json!({"instances": [vec![0.5; 32]]});
    let responses = [
        get("/v2").await,
        get("/v2/models/tabular_mlp").await,
        get("/v2/models/tabular_mlp/ready").await,
        get("/v2/health/ready").await,
        get("/health").await,
        get("/livez").await,
        get("/no/such/route").await,
        post("/v2/models/tabular_mlp/infer", tabular_request(2)).await,
        post("/v2/models/tabular_mlp/infer", json!({"inputs": []})).await,
        post("/predict", predict).await,
    ];
    for response in responses {
        let response = response.unwrap();
        let (status, url) = (response.status(), response.url().clone());
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
        let body = response.bytes().await.unwrap();
        assert_eq!(content_type, "application/json", "{url}");
        assert!(
            body.ends_with(b"}\n"),
            "{status} {url}: {:?}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice::<Value>(&body).expect("still JSON");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let (status, body) = server.get("/v3/anything").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no route for GET /v3/anything");
    let (status, body) = server.get("/v2/models/tabular_mlp/infer").await;
    assert_eq!(status, 405);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("method GET is not allowed"),
        "{body}"
    );
    let (status, _) = server.post_json("/health", &json!({})).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn metrics_carry_model_version_route_template_and_code() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    for _ in 0..3 {
        let (status, _) = server
            .post_json("/v2/models/tabular_mlp/infer", &tabular_request(1))
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = server
        .post_bytes("/v2/models/tabular_mlp/versions/1/infer", "{")
        .await;
    assert_eq!(status, 400);
    let (status, _) = server
        .post_json("/v2/models/nope/infer", &tabular_request(1))
        .await;
    assert_eq!(status, 404);
    server.get("/health").await;
    server.get("/v2/health/ready").await;
    server.get("/v2/models/tabular_mlp/ready").await;
    let text = server.metrics().await;

    let version = [("model", "tabular_mlp"), ("version", "1")];
    let requests = |route: &str, code: &str| {
        let labels = [version[0], version[1], ("route", route), ("code", code)];
        find_sample(&text, "pinserve_requests_total", &labels)
    };
    let infer = "/v2/models/{name}/infer";
    assert_eq!(requests(infer, "200"), Some(3.0), "{text}");
    let versioned = "/v2/models/{name}/versions/{version}/infer";
    assert_eq!(requests(versioned, "400"), Some(1.0), "{text}");
    assert_eq!(requests(infer, "404"), Some(1.0), "{text}");
    for edge in ["0.0005", "0.5"] {
        let labels = [
            version[0],
            version[1],
            ("route", infer),
            ("code", "200"),
            ("le", edge),
        ];
        let bucket = find_sample(&text, "pinserve_request_duration_seconds_bucket", &labels);
        assert!(bucket.is_some(), "missing the {edge} bucket");
    }
    assert_eq!(
        find_sample(&text, "pinserve_inference_duration_seconds_count", &version),
        Some(3.0),
        "one inference per successful request; the warm-up is not counted"
    );
    let model = std::fs::read(common::fixtures().join("tabular_mlp/1/model.onnx")).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&model));
    let info = [
        version[0],
        version[1],
        ("device", "cpu"),
        ("sha256", &digest),
        ("signer", ""),
    ];
    assert_eq!(find_sample(&text, "pinserve_model_info", &info), Some(1.0));
    assert_eq!(find_sample(&text, "pinserve_ready", &version), Some(1.0));
    assert!(find_sample(&text, "pinserve_model_load_seconds", &version).is_some());
    for name in [
        "pinserve_request_duration_seconds",
        "pinserve_requests_total",
        "pinserve_inference_duration_seconds",
        "pinserve_model_load_seconds",
        "pinserve_model_info",
        "pinserve_ready",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no help text for {name}"
        );
    }
    assert!(
        !text.contains("/v2/models/nope"),
        "raw paths never become labels"
    );
    assert!(
        !text.contains("route=\"/health\"") && !text.contains("/ready\""),
        "probes are not counted"
    );
}

/// Prometheus's own linter accepts the exposition (promtool from Debian's `prometheus`).
#[tokio::test]
async fn metrics_pass_promtool() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    server
        .post_json("/v2/models/tabular_mlp/infer", &tabular_request(1))
        .await;
    let text = server.metrics().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("cannot run sh");
    assert!(
        output.status.success(),
        "promtool check metrics failed (install it with `apt-get install prometheus`; scripts/test.sh does):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
