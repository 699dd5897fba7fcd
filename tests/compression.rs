//! Compressed bodies over real HTTP: requests with `Content-Encoding: gzip` or `deflate` are
//! answered as their plain form is; answers are compressed only for clients that send
//! `Accept-Encoding`; a coding pinserve cannot undo is 415 naming it, a body that is not what it
//! claims 400; and a gzip bomb is refused with 413 after at most `--max-body-bytes` of it has
//! been inflated, never inflated whole. (Triton's own client, with both algorithms on both
//! sides, is in tests/triton_client.rs.)

mod common;

use std::io::{Read, Write};

use common::{Server, status_kib};
use flate2::{
    Compression,
    read::{GzDecoder, ZlibDecoder},
    write::{GzEncoder, ZlibEncoder},
};
use serde_json::{Value, json};

const INFER: &str = "/v2/models/tabular_mlp/infer";

fn request() -> Value {
    json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 32],
                       "data": (0..64).map(|i| f64::from(i) / 64.0).collect::<Vec<_>>()}]})
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// HTTP's `deflate` is the zlib format (RFC 9110), as Triton's client and curl send it.
fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn read_all(mut reader: impl Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    bytes
}

struct Answer {
    status: u16,
    encoding: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

async fn post(server: &Server, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
    let mut request = server
        .client()
        .post(server.url(INFER))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let headers = response.headers().clone();
    Answer {
        status: response.status().as_u16(),
        encoding: headers
            .get("content-encoding")
            .map(|value| value.to_str().unwrap().to_owned()),
        body: response.bytes().await.unwrap().to_vec(),
        headers,
    }
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_requests_are_answered_as_their_plain_form() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let plain = serde_json::to_vec(&request()).unwrap();
    let expected = post(&server, plain.clone(), &[]).await;
    assert_eq!(expected.status, 200);
    assert_eq!(
        expected.encoding, None,
        "nobody asked for a compressed answer"
    );
    for (encoding, body) in [("gzip", gzip(&plain)), ("deflate", deflate(&plain))] {
        let answer = post(&server, body, &[("content-encoding", encoding)]).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(json_of(&answer.body), json_of(&expected.body), "{encoding}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_compressed_for_clients_that_ask() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let plain = serde_json::to_vec(&request()).unwrap();
    let expected = json_of(&post(&server, plain.clone(), &[]).await.body);
    let inflate_gzip = |bytes: &[u8]| read_all(GzDecoder::new(bytes));
    let inflate_deflate = |bytes: &[u8]| read_all(ZlibDecoder::new(bytes));
    for (accepted, decode) in [
        ("gzip", &inflate_gzip as &dyn Fn(&[u8]) -> Vec<u8>),
        ("deflate", &inflate_deflate),
    ] {
        let answer = post(&server, plain.clone(), &[("accept-encoding", accepted)]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.encoding.as_deref(), Some(accepted));
        assert_eq!(json_of(&decode(&answer.body)), expected, "{accepted}");
    }

    // Binary outputs: the JSON part's length still counts the uncompressed bytes, which is what
    // the client splits once it has inflated the body.
    let mut binary = request();
    binary["parameters"] = json!({"binary_data_output": true});
    let answer = post(
        &server,
        serde_json::to_vec(&binary).unwrap(),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(answer.encoding.as_deref(), Some("gzip"));
    let length: usize = answer.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = inflate_gzip(&answer.body);
    let header = json_of(&body[..length]);
    let floats: Vec<f32> = body[length..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8);
    let json_floats: Vec<f32> = expected["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats, json_floats);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_that_cannot_be_inflated_are_refused_with_the_reason() {
    let server = Server::fixture("tabular_mlp", &[]).await;
    let plain = serde_json::to_vec(&request()).unwrap();

    let answer = post(&server, plain.clone(), &[("content-encoding", "br")]).await;
    assert_eq!(answer.status, 415);
    let error = json_of(&answer.body)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("'br'") && error.contains("gzip"), "{error}");
    assert_eq!(answer.headers["accept-encoding"], "gzip, deflate");

    let answer = post(
        &server,
        plain.clone(),
        &[("content-encoding", "gzip, deflate")],
    )
    .await;
    assert_eq!(answer.status, 415, "layered codings are not undone");

    let answer = post(&server, plain, &[("content-encoding", "gzip")]).await;
    assert_eq!(answer.status, 400);
    let error = json_of(&answer.body)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("gzip header"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_is_refused_without_being_inflated_whole() {
    const LIMIT: usize = 1 << 20;
    const EXPANDED: usize = 256 << 20;
    let server = Server::fixture("tabular_mlp", &["--max-body-bytes", &LIMIT.to_string()]).await;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..EXPANDED / zeros.len() {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(
        bomb.len() < LIMIT,
        "the bomb itself fits the limit: {}",
        bomb.len()
    );

    let before = status_kib(server.pid(), "VmHWM:");
    let answer = post(&server, bomb, &[("content-encoding", "gzip")]).await;
    assert_eq!(answer.status, 413);
    let error = json_of(&answer.body)["error"].as_str().unwrap().to_owned();
    assert!(error.contains(&LIMIT.to_string()), "{error}");
    let grown = status_kib(server.pid(), "VmHWM:").saturating_sub(before);
    assert!(
        grown < (EXPANDED as u64 >> 10) / 8,
        "the server's peak memory grew by {grown} KiB for a body that inflates to {} KiB",
        EXPANDED >> 10
    );
    // The server still answers.
    let plain = serde_json::to_vec(&request()).unwrap();
    assert_eq!(post(&server, plain, &[]).await.status, 200);
}
