//! The health state machine (loading, ready, failed, draining) and shutdown, against the real
//! binary and real signals.

mod common;

use std::time::{Duration, Instant};

use common::{PipedRepository, Server, find_log};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tabular_request() -> Value {
    json!({"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": vec![0.5; 32]}]})
}

#[tokio::test]
async fn probes_see_loading_until_the_model_has_loaded_and_warmed_up() {
    let repository = PipedRepository::new();
    let server = repository.server(&[]);

    let (status, health) = server.get("/health").await;
    assert_eq!(status, 503, "the listener is up before the model: {health}");
    assert_eq!(
        health,
        json!({"status": "loading", "model": "tabular_mlp", "version": "1"})
    );
    assert_eq!(
        server.get("/v2/health/ready").await,
        (503, json!({"ready": false}))
    );
    assert_eq!(server.get("/v2/health/live").await.0, 200);
    assert_eq!(server.get("/livez").await.0, 200);
    let (status, body) = server.get("/v2/models/tabular_mlp/ready").await;
    assert_eq!((status, &body["ready"]), (503, &json!(false)));
    let (status, body) = server.get("/v2/models/tabular_mlp").await;
    assert_eq!(status, 503, "{body}");

    let response = server
        .client()
        .post(server.url("/v2/models/tabular_mlp/infer"))
        .json(&tabular_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"],
        "model 'tabular_mlp' version '1' is not ready: loading"
    );
    assert!(
        server
            .metrics()
            .await
            .contains(r#"pinserve_ready{model="tabular_mlp",version="1"} 0"#)
    );

    let writer = repository.release_model();
    server.wait_ready().await;
    writer.join().unwrap();
    assert_eq!(
        server
            .post_json("/v2/models/tabular_mlp/infer", &tabular_request())
            .await
            .0,
        200
    );
    assert!(
        server
            .metrics()
            .await
            .contains(r#"pinserve_ready{model="tabular_mlp",version="1"} 1"#)
    );
    let logs = server.logs();
    let listening = logs
        .iter()
        .position(|e| e["message"] == "listening")
        .unwrap();
    let ready = logs
        .iter()
        .position(|e| e["message"] == "model loaded and warmed up; ready")
        .unwrap();
    assert!(listening < ready);
}

#[tokio::test]
async fn a_model_that_cannot_load_reports_failed_then_exits_non_zero() {
    let mut server = Server::start_fixture("broken", "1", &[]);
    let health = server.wait_for_health("failed").await;
    let error = health["error"].as_str().unwrap();
    assert!(
        error.contains("broken/1/model.onnx") && error.contains("Protobuf parsing failed"),
        "{error}"
    );
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 503);
    assert_eq!(server.get("/v2/health/ready").await.0, 503);
    let (status, body) = server
        .post_json("/v2/models/broken/infer", &tabular_request())
        .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (503, "model 'broken' version '1' is not ready: failed")
    );

    let exit = server.wait_exit(Duration::from_secs(20));
    assert_eq!(
        exit.code(),
        Some(1),
        "a failed load exits non-zero so the pod restarts"
    );
    let logs = server.logs();
    let logged = find_log(&logs, "model failed to load; exiting").expect("the failure is logged");
    assert_eq!(logged["level"], "ERROR");
}

#[tokio::test]
async fn a_missing_version_fails_and_names_the_path() {
    let mut server = Server::start_fixture("tabular_mlp", "9", &[]);
    let health = server.wait_for_health("failed").await;
    let error = health["error"].as_str().unwrap();
    assert!(
        error.contains("version '9' not found") && error.contains("tabular_mlp/9"),
        "{health}"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(20)).code(), Some(1));
}

#[tokio::test]
async fn sigterm_turns_health_to_draining_keeps_serving_then_exits_zero() {
    let mut server = Server::fixture("tabular_mlp", &["--drain-seconds", "2"]).await;
    server.signal("TERM");
    let signalled = Instant::now();
    let health = server.wait_for_health("draining").await;
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "health turns at once"
    );
    assert_eq!(health["model"], "tabular_mlp");
    assert_eq!(server.get("/health").await.0, 503);
    assert_eq!(
        server.get("/v2/health/ready").await,
        (503, json!({"ready": false}))
    );
    let (status, body) = server
        .post_json("/v2/models/tabular_mlp/infer", &tabular_request())
        .await;
    assert_eq!(
        status, 200,
        "requests are still served while draining: {body}"
    );

    let exit = server.wait_exit(Duration::from_secs(20));
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "kept serving for --drain-seconds"
    );
    assert_eq!(exit.code(), Some(0));
    assert!(find_log(&server.logs(), "shutdown complete").is_some());
}

/// Requests whose bodies are still arriving when the listener closes all get their answers.
#[tokio::test]
async fn requests_in_flight_when_sigterm_arrives_all_complete() {
    let mut server = Server::fixture("tabular_mlp", &["--drain-seconds", "1"]).await;
    let body = serde_json::to_vec(&tabular_request()).unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let chunks = vec![head.to_vec(), tail.to_vec()];
            // The second half arrives after SIGTERM and after the listener has closed.
            let slow = stream::iter(chunks)
                .enumerate()
                .then(|(index, chunk)| async move {
                    if index == 1 {
                        tokio::time::sleep(Duration::from_millis(4000)).await;
                    }
                    Ok::<_, std::io::Error>(chunk)
                });
            let request = server
                .client()
                .post(server.url("/v2/models/tabular_mlp/infer"))
                .body(reqwest::Body::wrap_stream(slow))
                .send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let refused = reqwest::Client::new()
        .get(server.url("/livez"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "new connections are refused once the drain period is over"
    );

    for request in requests {
        let response = request
            .await
            .unwrap()
            .expect("an in-flight request was dropped");
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["outputs"][0]["shape"], json!([1, 1]));
    }
    assert_eq!(server.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut server = Server::fixture("tabular_mlp", &["--drain-seconds", "60"]).await;
    server.signal("TERM");
    server.wait_for_health("draining").await;
    server.signal("INT");
    let exit = server.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(130));
}

#[tokio::test]
async fn sigterm_while_loading_exits_cleanly() {
    let repository = PipedRepository::new();
    let mut server = repository.server(&[]);
    assert_eq!(server.get("/health").await.1["status"], "loading");
    server.signal("TERM");
    let exit = server.wait_exit(Duration::from_secs(20));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        exit.code(),
        Some(0),
        "signal {:?}; logs {:?}",
        exit.signal(),
        server.logs()
    );
}

/// A request whose body never completes holds its connection, but not shutdown: when the grace
/// period ends it is dropped, and the model worker stops within the same period instead of
/// waiting a second one for the batcher that connection held.
#[tokio::test]
async fn a_stuck_request_cannot_extend_shutdown_past_drain_plus_grace() {
    let mut server = Server::fixture(
        "tabular_mlp",
        &["--drain-seconds", "1", "--shutdown-grace-seconds", "1"],
    )
    .await;
    let mut stuck = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let head = "POST /v2/models/tabular_mlp/infer HTTP/1.1\r\nhost: pinserve\r\n\
                content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"inputs\": [";
    stuck.write_all(head.as_bytes()).await.unwrap();
    server.signal("TERM");

    let exit = server.wait_exit(Duration::from_secs(30));
    assert_eq!(exit.code(), Some(0));
    let mut answer = Vec::new();
    let _ = stuck.read_to_end(&mut answer).await;
    assert!(
        answer.is_empty(),
        "the stuck request was answered: {answer:?}"
    );
    let logs = server.logs();
    let position = |message: &str| logs.iter().position(|e| e["message"] == message);
    let cut_off = position("requests still in flight after the grace period; closing them");
    let complete = position("shutdown complete");
    assert!(
        cut_off.is_some() && cut_off < complete,
        "the grace period ended the stuck request, then shutdown completed: {logs:?}"
    );
    assert_eq!(
        position("the model worker did not finish within the grace period"),
        None,
        "the worker stopped within the one grace period"
    );
}

/// The second signal ends the process at once without running ONNX Runtime's destructors under
/// a running inference: the in-flight client sees its connection closed, not a 500.
#[tokio::test]
async fn a_second_signal_during_inference_exits_130_without_an_answer() {
    let mut server = Server::start_fixture("embedding_lookup", "3", &["--drain-seconds", "60"]);
    server.wait_ready().await;
    let request = server
        .client()
        .post(server.url("/v2/models/embedding_lookup/infer"))
        .json(&json!({"inputs": [{"name": "ids", "shape": [1], "datatype": "INT64", "data": [3]}]}))
        .send();
    let request = tokio::spawn(request);
    let in_inference =
        r#"pinserve_queue_duration_seconds_count{model="embedding_lookup",version="3"} 1"#;
    while !server.metrics().await.contains(in_inference) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.signal("TERM");
    server.wait_for_health("draining").await;
    server.signal("TERM");

    assert_eq!(server.wait_exit(Duration::from_secs(20)).code(), Some(130));
    match request.await.unwrap() {
        Err(err) => assert!(!err.is_timeout(), "{err}"),
        Ok(response) => panic!(
            "the in-flight request was answered {}: {:?}",
            response.status(),
            response.text().await
        ),
    }
}

/// Once draining starts, answers tell keep-alive clients to leave before the listener closes:
/// HTTP/1 with `Connection: close`, HTTP/2 with GOAWAY after the answer.
#[tokio::test]
async fn keep_alive_clients_are_told_to_leave_while_draining() {
    let server = Server::fixture("tabular_mlp", &["--drain-seconds", "60"]).await;
    let before = livez(&server).await;
    assert_eq!(before.headers().get("connection"), None);
    let tcp = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (mut http2, mut connection) = h2::client::handshake(tcp).await.unwrap();

    server.signal("TERM");
    server.wait_for_health("draining").await;
    let (status, body) = server
        .post_json("/v2/models/tabular_mlp/infer", &tabular_request())
        .await;
    assert_eq!(status, 200, "{body}");
    let during = livez(&server).await;
    assert_eq!(during.status(), 200);
    assert_eq!(during.headers()["connection"], "close");

    let request = http::Request::get(server.url("/livez")).body(()).unwrap();
    let (response, _) = http2.send_request(request, true).unwrap();
    let (response, ended) = tokio::join!(
        response,
        tokio::time::timeout(Duration::from_secs(30), &mut connection)
    );
    assert_eq!(response.unwrap().status(), 200);
    assert!(
        ended.is_ok(),
        "GOAWAY ends the HTTP/2 connection after the answer: {ended:?}"
    );
}

async fn livez(server: &Server) -> reqwest::Response {
    server
        .client()
        .get(server.url("/livez"))
        .send()
        .await
        .unwrap()
}
