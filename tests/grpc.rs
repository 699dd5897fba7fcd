//! KServe V2 over gRPC (`--grpc-listen`) with the clients model teams already use, unchanged:
//! Triton's `tritonclient.grpc` and KServe's `InferenceGRPCClient` (tests/clients/grpc_clients.py)
//! on every golden case and datatype, with raw and typed contents; errors with their gRPC codes;
//! the standard health service following readiness; the request metrics; the message size limit;
//! and the drain on SIGTERM, where a call in flight finishes and new calls are refused.
//! tonic's own client (the health client, and the service's generated client) checks what the
//! Python clients cannot make happen.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{
    PipedRepository, Server, assert_outputs_match, golden, metrics::find_sample, wait_until,
};
use pinserve::protocol::grpc::pb::{
    ModelInferRequest, ModelInferResponse,
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor,
};
use prost::Message;
use serde_json::{Value, json};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const WAIT: Duration = Duration::from_secs(30);

fn run_client(server: &Server, client: &str, model: &str, requests: &[Value]) -> Value {
    let job = json!({
        "address": server.grpc_address().to_string(),
        "client": client,
        "model": model,
        "requests": requests,
    });
    common::run_client_script("grpc_clients.py", &job)
}

async fn channel(address: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
}

async fn inference_client(server: &Server) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel(server.grpc_address()).await.unwrap())
}

/// Every golden case through both clients: Triton's (raw contents) with outputs left to the
/// server and named, KServe's with raw and with typed contents.
async fn check_fixture(model: &str) {
    let server = Server::fixture(model, &[]).await;
    let golden = golden(model);
    let cases = golden["cases"].as_array().unwrap();
    for client in ["triton", "kserve"] {
        if client == "kserve" && model == "all_dtypes" {
            // KServe's client cannot build a BF16 tensor (its numpy conversion knows no
            // bfloat16), and all_dtypes needs one in every request.
            continue;
        }
        let mut requests = Vec::new();
        let mut expected = Vec::new();
        for case in cases {
            let names = common::output_names(case);
            for (raw, outputs) in [(true, Value::Null), (false, json!(names))] {
                requests.push(json!({
                    "inputs": case["request"]["inputs"],
                    "raw": raw,
                    "outputs": outputs,
                }));
                expected.push((case["name"].as_str().unwrap(), &case["outputs"]));
            }
        }
        let report = run_client(&server, client, model, &requests);
        assert_eq!(report["live"], true, "{client}");
        assert_eq!(report["ready"], true, "{client}");
        assert_eq!(report["model_ready"], true, "{client}");
        let answers = report["answers"].as_array().unwrap();
        assert_eq!(answers.len(), expected.len());
        for ((answer, (case, outputs)), request) in answers.iter().zip(&expected).zip(&requests) {
            let context = format!("{client} client, {model} {case} (raw {})", request["raw"]);
            assert_eq!(answer["id"], "grpc-client", "{context}: {answer}");
            assert_outputs_match(&answer["outputs"], outputs, &context);
        }
        if client == "triton" {
            check_metadata(model, &report, &golden);
            check_statistics(&report, requests.len());
        }
    }
}

fn check_metadata(model: &str, report: &Value, golden: &Value) {
    let metadata = &report["metadata"];
    assert_eq!(metadata["name"], model);
    assert_eq!(metadata["versions"], json!(["1"]));
    assert_eq!(metadata["platform"], "onnxruntime_onnx");
    let inputs: Vec<&Value> = metadata["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| &input["name"])
        .collect();
    for input in golden["cases"][0]["request"]["inputs"].as_array().unwrap() {
        assert!(inputs.contains(&&input["name"]), "{metadata}");
    }
    let server = &report["server_metadata"];
    assert_eq!(server["name"], "pinserve");
    assert!(
        server["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("statistics"))
    );
}

/// Triton's `get_inference_statistics` over gRPC: every call of this client counted once. (As
/// JSON, protobuf's uint64 fields are strings.)
fn check_statistics(report: &Value, answered: usize) {
    let stats = &report["statistics"]["model_stats"][0];
    let count = |path: &str| {
        stats["inference_stats"][path]["count"]
            .as_str()
            .map(str::to_owned)
    };
    for counted in ["success", "queue", "compute_infer"] {
        assert_eq!(
            count(counted),
            Some(answered.to_string()),
            "{counted}: {stats}"
        );
    }
    assert_eq!(count("fail"), None, "no failures: {stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_clients_run_the_tabular_model() {
    check_fixture("tabular_mlp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_clients_run_a_string_pipeline() {
    check_fixture("churn_pipeline").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_clients_send_every_datatype() {
    check_fixture("all_dtypes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_clients_run_models_with_fixed_batches_and_lookups() {
    check_fixture("fixed_batch").await;
    check_fixture("embedding_lookup").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_clients_run_a_zipmap_classifier() {
    check_fixture("zipmap_iris").await;
}

/// Triton's classification extension over gRPC (the client's `class_count`): each row's best
/// class is the predicted label; the plain ZipMap output carries its labels in its parameters.
#[tokio::test(flavor = "multi_thread")]
async fn triton_grpc_clients_ask_a_zipmap_for_its_top_classes() {
    let server = Server::fixture("zipmap_iris", &[]).await;
    let case = &golden("zipmap_iris")["cases"][2];
    let top_two = json!([{"name": "output_probability", "class_count": 2}, "output_label"]);
    let requests = [
        json!({"inputs": case["request"]["inputs"], "raw": true, "outputs": top_two}),
        json!({"inputs": case["request"]["inputs"], "raw": true, "outputs": null}),
    ];
    let report = run_client(&server, "triton", "zipmap_iris", &requests);
    let predicted = case["outputs"][0]["data"].as_array().unwrap();
    let answers = report["answers"].as_array().unwrap();
    let top = &answers[0]["outputs"][0];
    assert_eq!(top["datatype"], "BYTES", "{top}");
    assert_eq!(top["shape"], json!([16, 2]), "{top}");
    let best: Vec<&str> = top["data"]
        .as_array()
        .unwrap()
        .chunks(2)
        .map(|pair| pair[0].as_str().unwrap().rsplit(':').next().unwrap())
        .collect();
    assert_eq!(best, *predicted, "{top}");
    let probabilities = answers[1]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|output| output["name"] == "output_probability")
        .unwrap();
    assert_eq!(
        probabilities["class_labels"],
        r#"["setosa","versicolor","virginica"]"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_grpc_codes_that_name_the_problem() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let features = |width: usize| json!([{"name": "features", "shape": [1, width], "datatype": "FP32", "data": vec![0.5; width]}]);
    let requests = [
        json!({"inputs": features(3), "raw": true, "outputs": null}),
        json!({"inputs": features(32), "raw": true, "outputs": ["nope"]}),
        json!({"inputs": features(32), "raw": true, "outputs": null, "model": "other"}),
        json!({
            "inputs": [{"name": "features", "shape": [1, 32], "datatype": "INT64", "data": vec![1; 32]}],
            "raw": false,
            "outputs": null,
        }),
    ];
    let report = run_client(&server, "kserve", "tabular_mlp", &requests);
    let answers = report["answers"].as_array().unwrap();
    let expected = [
        ("INVALID_ARGUMENT", "input 'features'"),
        ("INVALID_ARGUMENT", "'nope'"),
        ("NOT_FOUND", "unknown model 'other'"),
        ("INVALID_ARGUMENT", "INT64"),
    ];
    for (answer, (code, names)) in answers.iter().zip(expected) {
        assert_eq!(answer["code"], code, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(names), "{message} should name {names}");
    }
    let triton = run_client(&server, "triton", "tabular_mlp", &requests[..1]);
    assert_eq!(
        triton["answers"][0]["code"], "StatusCode.INVALID_ARGUMENT",
        "{triton}"
    );

    let metrics = server.metrics().await;
    for (code, count) in [("200", None), ("400", Some(4.0)), ("404", Some(1.0))] {
        let labels = [
            ("model", "tabular_mlp"),
            ("version", "1"),
            ("route", "grpc/ModelInfer"),
            ("code", code),
        ];
        assert_eq!(
            find_sample(&metrics, "pinserve_requests_total", &labels),
            count,
            "{code} in {metrics}"
        );
    }
}

/// A typed-contents request tonic's client builds by hand: what the Python clients never send
/// (a field that does not match the datatype, raw contents for only some inputs).
#[tokio::test(flavor = "multi_thread")]
async fn malformed_contents_are_refused_with_invalid_argument() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let mut client = inference_client(&server).await;
    let input = |contents| InferInputTensor {
        name: "features".into(),
        datatype: "FP32".into(),
        shape: vec![1, 32],
        contents,
        ..InferInputTensor::default()
    };
    let wrong_field = ModelInferRequest {
        model_name: "tabular_mlp".into(),
        inputs: vec![input(Some(
            pinserve::protocol::grpc::pb::InferTensorContents {
                fp64_contents: vec![0.5; 32],
                ..Default::default()
            },
        ))],
        ..ModelInferRequest::default()
    };
    let status = client.model_infer(wrong_field).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("fp32_contents holds 0 values, but the shape holds 32"),
        "{status:?}"
    );
    let both = ModelInferRequest {
        model_name: "tabular_mlp".into(),
        inputs: vec![input(Some(Default::default()))],
        raw_input_contents: vec![vec![0; 128]],
        ..ModelInferRequest::default()
    };
    let status = client.model_infer(both).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("one or the other"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_larger_than_max_body_bytes_are_refused_before_they_are_read() {
    let server = Server::fixture("tabular_mlp", &["--max-body-bytes", "4096"]).await;
    let mut client = inference_client(&server).await;
    let rows = 64; // 64 rows of 32 floats: 8 KiB of raw contents
    let request = ModelInferRequest {
        model_name: "tabular_mlp".into(),
        inputs: vec![InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![rows, 32],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![vec![0; rows as usize * 32 * 4]],
        ..ModelInferRequest::default()
    };
    let status = client.model_infer(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("4096"), "{status:?}");
    let small = ModelInferRequest {
        raw_input_contents: vec![vec![0; 32 * 4]],
        inputs: vec![InferInputTensor {
            shape: vec![1, 32],
            ..request.inputs[0].clone()
        }],
        ..request
    };
    let answer = client.model_infer(small).await.unwrap().into_inner();
    assert_eq!(answer.outputs[0].shape, vec![1, 1]);
}

async fn health(address: SocketAddr, service: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = channel(address)
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let answer = HealthClient::new(channel).check(request).await?;
    Ok(answer.into_inner().status())
}

async fn health_becomes(address: SocketAddr, service: &str, wanted: ServingStatus) {
    let what = format!("health of '{service}' to become {wanted:?}");
    wait_until(
        &what,
        WAIT,
        Duration::from_millis(20),
        async || match health(address, service).await {
            Ok(status) if status == wanted => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

/// `grpc.health.v1` says what `/health` says, for the server and for the inference service:
/// NOT_SERVING while loading (when inference is UNAVAILABLE) and while draining, SERVING when
/// ready; unknown services are NOT_FOUND, as the health protocol requires.
#[tokio::test(flavor = "multi_thread")]
async fn the_health_service_follows_readiness() {
    let repository = PipedRepository::new();
    let server = repository.server(&["--drain-seconds", "60"]);
    let address = server.grpc_address();
    for service in ["", "inference.GRPCInferenceService"] {
        assert_eq!(
            health(address, service).await.unwrap(),
            ServingStatus::NotServing
        );
    }
    let mut client = inference_client(&server).await;
    let status = client.model_infer(one_row_request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "model 'tabular_mlp' version '1' is not ready: loading"
    );

    let writer = repository.release_model();
    server.wait_ready().await;
    writer.join().unwrap();
    health_becomes(address, "", ServingStatus::Serving).await;
    let unknown = health(address, "grpc.reflection.v1.ServerReflection").await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    server.signal("TERM");
    health_becomes(
        address,
        "inference.GRPCInferenceService",
        ServingStatus::NotServing,
    )
    .await;
    let answer = client.model_infer(one_row_request()).await.unwrap();
    assert_eq!(
        answer.into_inner().outputs[0].shape,
        vec![1, 1],
        "draining still serves"
    );
}

fn one_row_request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "tabular_mlp".into(),
        inputs: vec![InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![1, 32],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![0.5f32.to_le_bytes().repeat(32)],
        ..ModelInferRequest::default()
    }
}

/// A `ModelInfer` call whose message is half sent when SIGTERM arrives finishes once the rest
/// arrives, after the listener has closed; a new connection is then refused, which gRPC clients
/// see as UNAVAILABLE. Sent with h2 directly, so the test decides when each half goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_in_flight_at_sigterm_finishes_and_new_calls_are_unavailable() {
    let mut server = Server::fixture("tabular_mlp", &[]).await;
    let address = server.grpc_address();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping = connection.ping_pong().unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{address}/inference.GRPCInferenceService/ModelInfer"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    let mut message = vec![0];
    let encoded = one_row_request().encode_to_vec();
    message.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    message.extend_from_slice(&encoded);
    let (first, rest) = message.split_at(message.len() / 2);
    body.send_data(first.to_vec().into(), false).unwrap();
    // The server has read every frame before the pong.
    ping.ping(h2::Ping::opaque()).await.unwrap();

    server.signal("TERM");
    wait_until(
        "the gRPC listener to close",
        WAIT,
        Duration::from_millis(20),
        async || match tokio::net::TcpStream::connect(address).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_owned()),
        },
    )
    .await;
    body.send_data(rest.to_vec().into(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut answer = Vec::new();
    while let Some(chunk) = body.data().await {
        answer.extend_from_slice(&chunk.unwrap());
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    let answer = ModelInferResponse::decode(&answer[5..]).unwrap();
    assert_eq!(answer.outputs[0].shape, vec![1, 1]);

    let refused = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let status = GrpcInferenceServiceClient::new(refused)
        .model_infer(one_row_request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(server.wait_exit(WAIT).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_none_serves_http_only() {
    let server = Server::start_fixture("tabular_mlp", "1", &["--grpc-listen", "none"]);
    server.wait_ready().await;
    assert!(
        !server
            .logs()
            .iter()
            .any(|entry| entry["message"] == "listening" && entry["protocol"] == "grpc")
    );
}
