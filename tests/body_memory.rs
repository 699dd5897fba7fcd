//! Request bodies cost memory only as their bytes arrive, and the bytes held at once are bounded
//! by `--max-inflight-body-bytes`.

mod common;

use std::process::Command;

use common::{Server, metrics::sample_value, raw_http::reading_body, status_kib};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A connection that has sent a request's head declaring `length` bytes of body, and no body.
async fn header_only(server: &Server, path: &str, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: pinserve\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The process's address space, in bytes.
fn address_space(pid: u32) -> u64 {
    status_kib(pid, "VmSize:") << 10
}

/// Limits the running server's address space to what it uses now plus `headroom` bytes.
fn limit_address_space(server: &Server, headroom: u64) {
    let limit = address_space(server.pid()) + headroom;
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", server.pid()))
        .arg(format!("--as={limit}"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_lengths_reserve_nothing_before_their_bytes_arrive() {
    // A budget too large to matter: this is about what a declared length costs by itself.
    let server = Server::fixture(
        "tabular_mlp",
        &["--max-inflight-body-bytes", "100000000000"],
    )
    .await;
    // 512 MiB to spare, while 100 connections declare the 64 MiB limit each.
    limit_address_space(&server, 512 << 20);
    let mut connections = Vec::new();
    for _ in 0..100 {
        connections.push(header_only(&server, "/predict", 64 << 20).await);
    }
    assert_eq!(server.get("/health").await.0, 200);
    for mut connection in connections {
        // The body ends early: the 400 shows the server read this request, and is still alive.
        connection.shutdown().await.unwrap();
        let mut answer = String::new();
        connection.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_eq!(server.get("/health").await.0, 200);
}

/// A `/predict` body of exactly `size` bytes (padded with spaces), valid for tabular_mlp.
fn predict_body(size: usize) -> Vec<u8> {
    let mut body = format!("{{\"instances\": [{:?}]}}", vec![0.5f32; 32]).into_bytes();
    assert!(body.len() <= size);
    body.resize(size, b' ');
    body
}

/// Posts `body` to `/predict`; the answer must be one, not a reset upload.
async fn post_predict(server: &Server, body: &[u8]) -> reqwest::Response {
    server
        .client()
        .post(server.url("/predict"))
        .body(body.to_vec())
        .send()
        .await
        .expect("the upload was reset instead of answered")
}

fn rejected_for_budget(text: &str) -> f64 {
    sample_value(
        text,
        "pinserve_rejected_total",
        &[
            ("model", "tabular_mlp"),
            ("version", "1"),
            ("reason", "body_budget"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_body_budget_answers_503_until_it_is_given_back() {
    let budget = 1 << 20;
    let server = Server::fixture(
        "tabular_mlp",
        &[
            "--max-body-bytes",
            "1048576",
            "--max-inflight-body-bytes",
            "1048576",
        ],
    )
    .await;
    assert_eq!(
        rejected_for_budget(&server.metrics().await),
        0.0,
        "registered at 0"
    );
    let body = predict_body(budget);
    let small = predict_body(200);
    // Until the holder's share is taken, a small request is still served.
    assert_eq!(post_predict(&server, &small).await.status(), 200);
    let mut holder = reading_body(server.address, "/predict", budget).await;
    holder.write_all(&body[..budget / 2]).await.unwrap();
    let refused = post_predict(&server, &small).await;
    assert_eq!(
        refused.status(),
        503,
        "a half-sent body holds its share of the budget"
    );
    assert_eq!(refused.headers()["retry-after"], "1");
    let error: serde_json::Value = refused.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("--max-inflight-body-bytes (1048576 bytes)"),
        "{error}"
    );
    let chunked =
        reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
            small.clone(),
        )]));
    assert_eq!(
        server.post_bytes("/predict", chunked).await.0,
        503,
        "without a length too"
    );
    assert_eq!(server.get("/health").await.0, 200, "probes are not bodies");
    holder.write_all(&body[budget / 2..]).await.unwrap();
    let mut answer = vec![0; 12];
    holder.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, b"HTTP/1.1 200", "the held request is answered");
    let (status, answer) = server.post_bytes("/predict", small).await;
    assert_eq!(status, 200, "the budget is given back: {answer}");
    assert!(rejected_for_budget(&server.metrics().await) >= 2.0);
}

/// A body refused for the budget is within the limit, so it is read (and dropped) to its end:
/// a client uploading a large body sees the 503 and keeps its connection, rather than having
/// its upload reset half-way.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_body_refused_for_the_budget_still_reads_its_answer() {
    let limit = 32 << 20;
    let limit_flag = limit.to_string();
    let server = Server::fixture(
        "tabular_mlp",
        &[
            "--max-body-bytes",
            &limit_flag,
            "--max-inflight-body-bytes",
            &limit_flag,
        ],
    )
    .await;
    // The declared length takes the whole budget at once.
    let _holder = reading_body(server.address, "/predict", limit).await;
    let body = predict_body(limit);
    let refused = post_predict(&server, &body).await;
    assert_eq!(refused.status(), 503, "the holder takes the whole budget");
    assert!(
        refused.headers().get("connection").is_none(),
        "the connection stays usable: {:?}",
        refused.headers()
    );
    let error: serde_json::Value = refused.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("--max-inflight-body-bytes"),
        "{error}"
    );
}
