//! The binary tensor data extension over real HTTP: every golden case of every fixture sent with
//! its inputs as binary data and its outputs asked for as binary data, decoded here by an
//! encoder written independently of pinserve's, and compared with the golden outputs; mixed
//! JSON and binary requests; and malformed binary requests answered 400 with the reason.

mod common;

use common::{Server, assert_outputs_match, golden};
use half::{bf16, f16};
use serde_json::{Value, json};

const HEADER: &str = "inference-header-content-length";

fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        scalar => out.push(scalar.clone()),
    }
}

/// A tensor's JSON data in the extension's layout (little-endian, BYTES length-prefixed).
fn to_binary(datatype: &str, data: &Value) -> Vec<u8> {
    let mut values = Vec::new();
    flatten(data, &mut values);
    let mut out = Vec::new();
    for value in &values {
        let float = || value.as_f64().unwrap();
        let int = || value.as_i64().unwrap();
        match datatype {
            "FP32" => out.extend((float() as f32).to_le_bytes()),
            "FP64" => out.extend(float().to_le_bytes()),
            "FP16" => out.extend(f16::from_f64(float()).to_le_bytes()),
            "BF16" => out.extend(bf16::from_f64(float()).to_le_bytes()),
            "INT8" => out.extend((int() as i8).to_le_bytes()),
            "INT16" => out.extend((int() as i16).to_le_bytes()),
            "INT32" => out.extend((int() as i32).to_le_bytes()),
            "INT64" => out.extend(int().to_le_bytes()),
            "UINT8" => out.extend((value.as_u64().unwrap() as u8).to_le_bytes()),
            "UINT16" => out.extend((value.as_u64().unwrap() as u16).to_le_bytes()),
            "UINT32" => out.extend((value.as_u64().unwrap() as u32).to_le_bytes()),
            "UINT64" => out.extend(value.as_u64().unwrap().to_le_bytes()),
            "BOOL" => out.push(u8::from(value.as_bool().unwrap())),
            "BYTES" => {
                let text = value.as_str().unwrap().as_bytes();
                out.extend((text.len() as u32).to_le_bytes());
                out.extend(text);
            }
            other => panic!("no binary layout for {other}"),
        }
    }
    out
}

/// The extension's bytes back to JSON values, for comparison with golden outputs.
fn from_binary(datatype: &str, mut bytes: &[u8]) -> Value {
    fn take<const N: usize>(bytes: &mut &[u8]) -> [u8; N] {
        let (head, rest) = bytes.split_first_chunk::<N>().unwrap();
        *bytes = rest;
        *head
    }
    let mut values = Vec::new();
    while !bytes.is_empty() {
        let bytes = &mut bytes;
        values.push(match datatype {
            "FP32" => json!(f32::from_le_bytes(take(bytes))),
            "FP64" => json!(f64::from_le_bytes(take(bytes))),
            "FP16" => json!(f16::from_le_bytes(take(bytes)).to_f64()),
            "BF16" => json!(bf16::from_le_bytes(take(bytes)).to_f64()),
            "INT8" => json!(i8::from_le_bytes(take(bytes))),
            "INT16" => json!(i16::from_le_bytes(take(bytes))),
            "INT32" => json!(i32::from_le_bytes(take(bytes))),
            "INT64" => json!(i64::from_le_bytes(take(bytes))),
            "UINT8" => json!(u8::from_le_bytes(take(bytes))),
            "UINT16" => json!(u16::from_le_bytes(take(bytes))),
            "UINT32" => json!(u32::from_le_bytes(take(bytes))),
            "UINT64" => json!(u64::from_le_bytes(take(bytes))),
            "BOOL" => match take::<1>(bytes) {
                [0] => json!(false),
                [1] => json!(true),
                other => panic!("BOOL byte {other:?}"),
            },
            "BYTES" => {
                let length = u32::from_le_bytes(take(bytes)) as usize;
                let (text, rest) = bytes.split_at(length);
                *bytes = rest;
                json!(std::str::from_utf8(text).unwrap())
            }
            other => panic!("no binary layout for {other}"),
        });
    }
    Value::Array(values)
}

/// Builds a request whose inputs named in `binary_inputs` travel as binary data.
fn binary_request(request: &Value, binary_inputs: &[&str], extra: Value) -> (Vec<u8>, usize) {
    let mut header = request.clone();
    let mut binary = Vec::new();
    for input in header["inputs"].as_array_mut().unwrap() {
        if !binary_inputs.contains(&input["name"].as_str().unwrap()) {
            continue;
        }
        let bytes = to_binary(input["datatype"].as_str().unwrap(), &input["data"]);
        input.as_object_mut().unwrap().remove("data");
        input["parameters"] = json!({"binary_data_size": bytes.len()});
        binary.extend(bytes);
    }
    for (key, value) in extra.as_object().unwrap() {
        header[key] = value.clone();
    }
    let mut body = serde_json::to_vec(&header).unwrap();
    let length = body.len();
    body.extend(binary);
    (body, length)
}

struct BinaryAnswer {
    status: u16,
    content_type: String,
    header: Value,
    outputs: Value,
}

async fn post_binary(server: &Server, path: &str, body: Vec<u8>, length: usize) -> BinaryAnswer {
    let response = server
        .client()
        .post(server.url(path))
        .header(HEADER, length)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let json_length = response
        .headers()
        .get(HEADER)
        .map(|value| value.to_str().unwrap().parse::<usize>().unwrap());
    let bytes = response.bytes().await.unwrap();
    let (json_part, mut binary) = bytes.split_at(json_length.unwrap_or(bytes.len()));
    let header: Value = serde_json::from_slice(json_part).unwrap();
    let mut outputs = header["outputs"].clone();
    for output in outputs.as_array_mut().into_iter().flatten() {
        let Some(size) = output["parameters"]["binary_data_size"].as_u64() else {
            continue;
        };
        let (data, rest) = binary.split_at(size as usize);
        binary = rest;
        output["data"] = from_binary(output["datatype"].as_str().unwrap(), data);
        output.as_object_mut().unwrap().remove("parameters");
    }
    assert!(binary.is_empty(), "binary data left over after the outputs");
    BinaryAnswer {
        status,
        content_type,
        header,
        outputs,
    }
}

/// Every case, with every input and output binary, and again with only the first input binary
/// and JSON outputs.
async fn check_fixture(model: &str) {
    let server = Server::fixture(model, &[]).await;
    let path = format!("/v2/models/{model}/infer");
    for case in golden(model)["cases"].as_array().unwrap() {
        let context = format!("{model} {}", case["name"]);
        let request = &case["request"];
        let names: Vec<&str> = request["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|input| input["name"].as_str().unwrap())
            .collect();
        let all_binary = json!({"parameters": {"binary_data_output": true}});
        let (body, length) = binary_request(request, &names, all_binary);
        let answer = post_binary(&server, &path, body, length).await;
        assert_eq!(answer.status, 200, "{context}: {}", answer.header);
        assert_eq!(answer.content_type, "application/octet-stream", "{context}");
        assert_outputs_match(&answer.outputs, &case["outputs"], &context);

        let (body, length) = binary_request(request, &names[..1], json!({}));
        let answer = post_binary(&server, &path, body, length).await;
        assert_eq!(answer.status, 200, "{context}: {}", answer.header);
        assert_eq!(answer.content_type, "application/json", "{context}");
        assert_outputs_match(&answer.outputs, &case["outputs"], &context);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_datatype_travels_as_binary_data() {
    check_fixture("all_dtypes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn string_pipelines_take_binary_bytes_tensors() {
    check_fixture("churn_pipeline").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn classifiers_answer_binary_requests() {
    check_fixture("breast_cancer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_can_be_chosen_one_by_one() {
    let server = Server::fixture("breast_cancer", &[]).await;
    let case = &golden("breast_cancer")["cases"][1];
    let outputs = json!([
        {"name": "probabilities", "parameters": {"binary_data": true}},
        {"name": "label", "parameters": {"binary_data": false}},
    ]);
    let (body, length) = binary_request(&case["request"], &["input"], json!({"outputs": outputs}));
    let answer = post_binary(&server, "/v2/models/breast_cancer/infer", body, length).await;
    assert_eq!(answer.status, 200, "{}", answer.header);
    let header_outputs = answer.header["outputs"].as_array().unwrap();
    assert!(header_outputs[0]["data"].is_null());
    assert!(header_outputs[0]["parameters"]["binary_data_size"].is_u64());
    assert!(header_outputs[1]["data"].is_array());
    let want = &case["outputs"];
    let expected = json!([want[1], want[0]]);
    assert_outputs_match(&answer.outputs, &expected, "reordered outputs");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_binary_requests_get_400_with_the_reason() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let path = "/v2/models/tabular_mlp/infer";
    let request = &golden("tabular_mlp")["cases"][0]["request"];
    let (body, length) = binary_request(request, &["features"], json!({}));

    let mut truncated = body.clone();
    truncated.pop();
    let answer = post_binary(&server, path, truncated, length).await;
    assert_eq!(answer.status, 400);
    let error = answer.header["error"].as_str().unwrap();
    assert!(error.contains("input 'features'"), "{error}");
    assert!(error.contains("binary_data_size 128"), "{error}");

    let mut extended = body.clone();
    extended.extend([0; 4]);
    let answer = post_binary(&server, path, extended, length).await;
    assert_eq!(answer.status, 400);
    let error = answer.header["error"].as_str().unwrap();
    assert!(error.contains("132 bytes of binary data"), "{error}");

    let answer = post_binary(&server, path, body.clone(), body.len() + 1).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.header["error"]
            .as_str()
            .unwrap()
            .contains("header says"),
        "{}",
        answer.header
    );

    let response = server
        .client()
        .post(server.url(path))
        .header(HEADER, "lots")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("must be a byte count"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_announces_the_extension() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let (status, metadata) = server.get("/v2").await;
    assert_eq!(status, 200);
    assert!(
        metadata["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
}
