//! A small HTTP/1.1 server that misbehaves on purpose, for the faults a real registry or object
//! store will not produce on demand: bodies cut off or stalled mid-way, 5xx and 429 answers,
//! ignored range requests, wrong bytes. Each path has a script of replies, one per request,
//! after which it answers normally; every request is recorded with its `Range` header.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The content (honouring a range request unless the route ignores ranges).
    Content,
    /// A status with a JSON body and extra headers.
    Status(u16, &'static str, Vec<(&'static str, &'static str)>),
    /// The right headers, then only this many body bytes, then the connection closes.
    DropAfter(usize),
    /// The right headers and this many body bytes, then silence for the duration.
    StallAfter(usize, Duration),
    /// The request is read and never answered (the connection stays open).
    Silent,
    /// A body without a length that never ends (until the client hangs up).
    Endless,
}

pub struct Route {
    content: Vec<u8>,
    content_type: &'static str,
    script: VecDeque<Reply>,
    honour_ranges: bool,
    /// The query string the route requires (as a presigned URL does); others are answered 403.
    required_query: Option<&'static str>,
}

impl Route {
    pub fn new(content: impl Into<Vec<u8>>) -> Route {
        Route {
            content: content.into(),
            content_type: "application/octet-stream",
            script: VecDeque::new(),
            honour_ranges: true,
            required_query: None,
        }
    }

    pub fn json(content: serde_json::Value) -> Route {
        Route {
            content_type: "application/json",
            ..Route::new(serde_json::to_vec(&content).unwrap())
        }
    }

    /// Replies for the first requests, in order.
    pub fn script(mut self, replies: impl IntoIterator<Item = Reply>) -> Route {
        self.script.extend(replies);
        self
    }

    pub fn ignoring_ranges(mut self) -> Route {
        self.honour_ranges = false;
        self
    }

    /// Answers only requests whose query string is exactly `query`, others 403.
    pub fn requiring_query(mut self, query: &'static str) -> Route {
        self.required_query = Some(query);
        self
    }

    /// Replies with `reply` to every request.
    pub fn always(self, reply: Reply) -> Route {
        self.script(std::iter::repeat_n(reply, 10_000))
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub range: Option<String>,
}

pub struct FaultyServer {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;

impl FaultyServer {
    pub async fn start(routes: impl IntoIterator<Item = (&'static str, Route)>) -> FaultyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let routes: Routes = Arc::new(Mutex::new(
            routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect(),
        ));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_one(stream, Arc::clone(&routes), Arc::clone(&log)));
            }
        });
        FaultyServer { address, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The `Range` headers of the GET requests for `path`, in order.
    pub fn ranges(&self, path: &str) -> Vec<Option<String>> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path == path)
            .map(|s| s.range)
            .collect()
    }
}

async fn serve_one(stream: TcpStream, routes: Routes, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        range: range.clone(),
    });
    let planned = {
        let mut routes = routes.lock().unwrap();
        routes.get_mut(&path).map(|route| {
            let reply = match route.required_query {
                Some(required) if query.as_deref() != Some(required) => {
                    Reply::Status(403, "{\"error\": \"the signature does not match\"}", vec![])
                }
                _ => route.script.pop_front().unwrap_or(Reply::Content),
            };
            (
                reply,
                route.content.clone(),
                route.content_type,
                route.honour_ranges,
            )
        })
    };
    let mut stream = reader.into_inner();
    let Some((reply, content, content_type, honour_ranges)) = planned else {
        let _ = write_status(
            &mut stream,
            404,
            "{\"error_code\": \"RESOURCE_DOES_NOT_EXIST\", \"message\": \"no such path\"}",
            &[],
        )
        .await;
        return;
    };
    let start = match (&range, honour_ranges) {
        (Some(range), true) => range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
            .min(content.len()),
        _ => 0,
    };
    let partial = start > 0;
    let body = &content[start..];
    let head = |status: &str| {
        let mut head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        if partial {
            head.push_str(&format!(
                "content-range: bytes {start}-{}/{}\r\n",
                content.len() - 1,
                content.len()
            ));
        }
        head + "\r\n"
    };
    let status = if partial {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let send_body = method != "HEAD";
    let result = match reply {
        Reply::Content => {
            async {
                stream.write_all(head(status).as_bytes()).await?;
                if send_body {
                    stream.write_all(body).await?;
                }
                Ok(())
            }
            .await
        }
        Reply::Status(code, json, headers) => write_status(&mut stream, code, json, &headers).await,
        Reply::DropAfter(bytes) => {
            async {
                stream.write_all(head(status).as_bytes()).await?;
                stream.write_all(&body[..bytes.min(body.len())]).await
            }
            .await
        }
        Reply::Silent => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Reply::Endless => write_endless(&mut stream, content_type, send_body).await,
        Reply::StallAfter(bytes, pause) => {
            async {
                stream.write_all(head(status).as_bytes()).await?;
                stream.write_all(&body[..bytes.min(body.len())]).await?;
                stream.flush().await?;
                tokio::time::sleep(pause).await;
                Ok(())
            }
            .await
        }
    };
    let _ = result;
    let _ = stream.shutdown().await;
}

async fn write_status(
    stream: &mut TcpStream,
    code: u16,
    json: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        json.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    stream
        .write_all(format!("{head}\r\n{json}").as_bytes())
        .await
}

/// Headers without a length, then (unless it is a HEAD request) zeros until the client hangs up.
async fn write_endless(
    stream: &mut TcpStream,
    content_type: &str,
    send_body: bool,
) -> std::io::Result<()> {
    let head =
        format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !send_body {
        return Ok(());
    }
    let chunk = vec![b'0'; 64 << 10];
    loop {
        stream.write_all(&chunk).await?;
    }
}

/// A server that accepts connections and never reads or answers anything on them.
pub struct SilentServer {
    pub address: SocketAddr,
}

impl SilentServer {
    pub async fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        SilentServer { address }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}
