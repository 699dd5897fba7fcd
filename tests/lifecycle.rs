//! The health state machine (loading, ready, failed, draining) and shutdown, against the real
//! binary and real signals.

mod common;

use std::time::Duration;

use common::{
    PipedRepository, Server, find_log,
    metrics::find_sample,
    raw_http::{parse_answer, read_until_closed, reading_body},
    tabular_request, wait_until,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What pinserve logs once SIGTERM has turned it to draining, and once the drain period is over.
const DRAINING: &str = "shutting down: not ready, still serving";
const LISTENER_CLOSED: &str = "listener closed; finishing in-flight requests";

/// A bound on a failure (a server that never exits), not a measurement.
const EXIT_GUARD: Duration = Duration::from_secs(30);

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
    assert_eq!(ready(&server).await, Some(0.0));

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
    assert_eq!(ready(&server).await, Some(1.0));
    // /health can turn 200 before the log collector has read the line that says so.
    server
        .wait_for_log("model loaded and warmed up; ready")
        .await;
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

    let exit = server.wait_exit(EXIT_GUARD).await;
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
    assert_eq!(server.wait_exit(EXIT_GUARD).await.code(), Some(1));
}

/// Draining starts as the signal is handled: health has turned by the time pinserve logs that it
/// is shutting down, and the listener keeps serving new connections while the drain period runs
/// (60 s here, so that it cannot end during the test).
#[tokio::test]
async fn sigterm_turns_health_to_draining_and_keeps_serving() {
    let mut server = Server::fixture("tabular_mlp", &["--drain-seconds", "60"]).await;
    server.signal("TERM");
    let logged = server.wait_for_log(DRAINING).await;
    assert_eq!(logged["drain_seconds"], 60);
    let (status, health) = server.get("/health").await;
    assert_eq!(status, 503);
    assert_eq!(health["status"], "draining", "health turns at once");
    assert_eq!(health["model"], "tabular_mlp");
    assert_eq!(
        server.get("/v2/health/ready").await,
        (503, json!({"ready": false}))
    );
    let fresh = reqwest::Client::new();
    let response = fresh
        .post(server.url("/v2/models/tabular_mlp/infer"))
        .json(&tabular_request())
        .send()
        .await
        .expect("a new connection is accepted while draining");
    assert_eq!(
        response.status(),
        200,
        "requests are still served while draining: {:?}",
        response.text().await
    );
    assert!(server.running(), "pinserve exited during the drain period");
    assert_eq!(find_log(&server.logs(), LISTENER_CLOSED), None);
}

/// Requests whose bodies are still arriving when the listener closes all get their answers, and
/// pinserve then exits 0. Each request is sent by hand: its head, then half its body once the
/// server has started reading it (its `100 Continue`), then the rest only after the drain period
/// is over and new connections are refused.
#[tokio::test]
async fn requests_in_flight_when_sigterm_arrives_all_complete() {
    let mut server = Server::fixture("tabular_mlp", &["--drain-seconds", "1"]).await;
    let body = serde_json::to_vec(&tabular_request()).unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut requests = Vec::new();
    for _ in 0..8 {
        let path = "/v2/models/tabular_mlp/infer";
        let mut stream = reading_body(server.address, path, body.len()).await;
        stream.write_all(head).await.unwrap();
        requests.push(stream);
    }
    server.signal("TERM");
    wait_until(
        "the listener to close",
        EXIT_GUARD,
        Duration::from_millis(20),
        async || match tokio::net::TcpStream::connect(server.address).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_owned()),
        },
    )
    .await;

    for mut stream in requests {
        stream.write_all(tail).await.unwrap();
        let received = read_until_closed(&mut stream).await;
        let answer = parse_answer(&received).expect("an in-flight request was dropped");
        assert_eq!(
            answer.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&received)
        );
        assert_eq!(answer.json()["outputs"][0]["shape"], json!([1, 1]));
    }
    assert_eq!(server.wait_exit(EXIT_GUARD).await.code(), Some(0));
    let logs = server.logs();
    let position = |message: &str| logs.iter().position(|e| e["message"] == message);
    let order = [DRAINING, LISTENER_CLOSED, "shutdown complete"].map(position);
    assert!(
        order.iter().all(Option::is_some) && order.is_sorted(),
        "drain, close, then exit: {logs:?}"
    );
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut server = Server::fixture("tabular_mlp", &["--drain-seconds", "60"]).await;
    server.signal("TERM");
    server.wait_for_health("draining").await;
    server.signal("INT");
    let exit = server.wait_exit(EXIT_GUARD).await;
    assert_eq!(exit.code(), Some(130));
}

#[tokio::test]
async fn sigterm_while_loading_exits_cleanly() {
    let repository = PipedRepository::new();
    let mut server = repository.server(&[]);
    assert_eq!(server.get("/health").await.1["status"], "loading");
    server.signal("TERM");
    let exit = server.wait_exit(EXIT_GUARD).await;
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

    let exit = server.wait_exit(EXIT_GUARD).await;
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
    wait_until(
        "the request to reach ONNX Runtime",
        EXIT_GUARD,
        Duration::from_millis(10),
        async || {
            let text = server.metrics().await;
            let labels = [("model", "embedding_lookup"), ("version", "3")];
            match find_sample(&text, "pinserve_queue_duration_seconds_count", &labels) {
                Some(1.0) => Ok(()),
                other => Err(format!("queued requests timed: {other:?}")),
            }
        },
    )
    .await;
    server.signal("TERM");
    server.wait_for_health("draining").await;
    server.signal("TERM");

    assert_eq!(server.wait_exit(EXIT_GUARD).await.code(), Some(130));
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

/// tabular_mlp's `pinserve_ready`.
async fn ready(server: &Server) -> Option<f64> {
    let version = [("model", "tabular_mlp"), ("version", "1")];
    find_sample(&server.metrics().await, "pinserve_ready", &version)
}

async fn livez(server: &Server) -> reqwest::Response {
    server
        .client()
        .get(server.url("/livez"))
        .send()
        .await
        .unwrap()
}
