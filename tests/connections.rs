//! Connection handling over raw TCP on loopback: header, body and idle timeouts, the connection
//! cap with probes still answered, HTTP/2's limits, and listening on a host name.

mod common;

use std::time::Duration;

use common::{
    Server,
    metrics::find_sample,
    raw_http::{Answer, CLOSE_GUARD, get, parse_answer, read_answer, read_until_closed},
    tabular_request, wait_until,
};
use futures_util::future::join_all;
use tokio::{io::AsyncWriteExt, net::TcpStream};

const INFER: &str = "/v2/models/tabular_mlp/infer";
const INFER_ROUTE: &str = "/v2/models/{name}/infer";

/// Connections admitted beyond `--max-connections` for probes (`PROBE_RESERVE` in the server).
const PROBE_RESERVE: usize = 32;

async fn tabular_server(extra: &[&str]) -> Server {
    Server::fixture("tabular_mlp", extra).await
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.address).await.unwrap()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_closed_after_the_header_timeout() {
    let server = tabular_server(&["--header-read-timeout", "1s", "--idle-timeout", "10m"]).await;
    let mut slowloris = connect(&server).await;
    slowloris
        .write_all(b"POST /v2/models/tabular_mlp/infer HTTP/1.1\r\nhost: pinserve\r\ncontent-le")
        .await
        .unwrap();
    let sent = read_until_closed(&mut slowloris).await;
    if !sent.is_empty() {
        assert_eq!(parse_answer(&sent).map(|a| a.status), Some(408));
    }
    assert_eq!(get(&mut connect(&server).await, "/livez").await.status, 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408_and_the_connection_closed() {
    let server = tabular_server(&["--body-read-timeout", "1s"]).await;
    let mut slow = connect(&server).await;
    let head = format!(
        "POST {INFER} HTTP/1.1\r\nhost: pinserve\r\ncontent-type: application/json\r\n\
         content-length: 2000\r\n\r\n{{\"inputs\": ["
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut slow).await;
    assert_eq!(answer.status, 408);
    assert_eq!(answer.header("connection"), Some("close"));
    let error = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("--body-read-timeout"), "{error}");
    read_until_closed(&mut slow).await;
    let metrics = server.metrics().await;
    let labels = [("route", INFER_ROUTE), ("code", "408")];
    assert_eq!(
        find_sample(&metrics, "pinserve_requests_total", &labels),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = tabular_server(&["--idle-timeout", "1s", "--header-read-timeout", "10m"]).await;
    let mut silent = connect(&server).await;
    assert!(read_until_closed(&mut silent).await.is_empty());

    let mut keep_alive = connect(&server).await;
    let answer = get(&mut keep_alive, "/livez").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), None, "kept alive");
    assert!(read_until_closed(&mut keep_alive).await.is_empty());
}

#[tokio::test]
async fn health_answers_while_the_connection_cap_is_reached() {
    let server = tabular_server(&["--max-connections", "2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&server).await;
        assert_eq!(get(&mut stream, "/livez").await.status, 200);
        held.push(stream);
    }

    let mut probe = connect(&server).await;
    let health = get(&mut probe, "/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ready");
    assert_eq!(health.header("connection"), Some("close"));
    read_until_closed(&mut probe).await;

    let refused = infer_over_new_connection(&server).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("connection"), Some("close"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    let error = refused.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("limit of 2 connections"), "{error}");

    // Idle connections parked beyond the cap fill the probe reserve only briefly.
    let parked: Vec<_> = join_all((0..PROBE_RESERVE + 8).map(|_| connect(&server))).await;
    wait_until(
        "probes to be let in again",
        CLOSE_GUARD,
        Duration::from_millis(20),
        async || match get_over_new_connection(&server, "/health").await {
            Some(200) => Ok(()),
            other => Err(format!("/health answered {other:?}")),
        },
    )
    .await;
    drop(parked);

    drop(held);
    wait_until(
        "inference to be admitted again",
        CLOSE_GUARD,
        Duration::from_millis(20),
        async || {
            let answer = infer_over_new_connection(&server).await;
            match answer.status {
                200 => Ok(()),
                503 => Err(format!("{:?}", answer.json())),
                other => panic!("answered {other}: {:?}", answer.json()),
            }
        },
    )
    .await;
}

/// The status of a GET on a new connection, or `None` if the connection was closed unanswered.
async fn get_over_new_connection(server: &Server, path: &str) -> Option<u16> {
    let mut stream = connect(server).await;
    let request = format!("GET {path} HTTP/1.1\r\nhost: pinserve\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    parse_answer(&read_until_closed(&mut stream).await).map(|answer| answer.status)
}

async fn infer_over_new_connection(server: &Server) -> Answer {
    let body = tabular_request().to_string();
    let request = format!(
        "POST {INFER} HTTP/1.1\r\nhost: pinserve\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect(server).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut stream).await
}

#[tokio::test]
async fn http2_cleartext_is_served_with_the_configured_stream_limit() {
    let server = tabular_server(&["--http2-max-concurrent-streams", "7"]).await;
    let (mut client, mut connection) = h2::client::handshake(connect(&server).await).await.unwrap();
    let request = http::Request::get(server.url("/health")).body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::select! {
        response = response => response.unwrap(),
        ended = &mut connection => panic!("the connection ended: {ended:?}"),
    };
    assert_eq!(response.status(), 200);
    assert_eq!(connection.max_concurrent_send_streams(), 7);
}

#[tokio::test]
async fn listen_accepts_a_host_name() {
    let server = Server::start_fixture("tabular_mlp", "1", &["--listen", "localhost:0"]);
    assert!(server.address.ip().is_loopback(), "{}", server.address);
    server.wait_ready().await;
}
