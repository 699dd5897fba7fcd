//! HTTP/1.1 spoken by hand over a TCP stream, for tests that decide when each byte goes (a head
//! without its body, half a body) or read what the server does with the connection afterwards.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long a test waits for the server to answer or close a connection before it fails: a
/// bound on a failure, far above the limits the tests configure, never a measurement.
pub const CLOSE_GUARD: Duration = Duration::from_secs(30);

pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Reads until the server closes the connection (a reset counts); returns what it sent first.
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(CLOSE_GUARD, async {
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    received
}

/// Reads one response (headers and a Content-Length body), leaving the connection open.
pub async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let n = tokio::time::timeout(CLOSE_GUARD, stream.read(&mut buffer))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed before a full answer: {received:?}");
        received.extend_from_slice(&buffer[..n]);
        if let Some(answer) = parse_answer(&received) {
            return answer;
        }
    }
}

/// The response in `received`, once its head and Content-Length body have all arrived.
pub fn parse_answer(received: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(received).unwrap() else {
        return None;
    };
    let headers: HashMap<String, String> = response
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).into_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    let length: usize = headers["content-length"].parse().unwrap();
    (received.len() >= head + length).then(|| Answer {
        status: response.code.unwrap(),
        body: received[head..head + length].to_vec(),
        headers,
    })
}

pub async fn get(stream: &mut TcpStream, path: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nhost: pinserve\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_answer(stream).await
}

/// A connection whose JSON request to `path` declares `length` bytes of body, none sent yet,
/// and that the server has started to read: it asks `Expect: 100-continue`, and the server says
/// continue only once its handler reads the body, so the answer is the condition to wait for.
pub async fn reading_body(address: SocketAddr, path: &str, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: pinserve\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\nexpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let expected = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut answer = vec![0; expected.len()];
    tokio::time::timeout(CLOSE_GUARD, stream.read_exact(&mut answer))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert_eq!(answer, expected, "{}", String::from_utf8_lossy(&answer));
    stream
}
